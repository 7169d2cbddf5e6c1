#!/usr/bin/env bash
# The test command: fetches the external test data (ONNX node tests, onnxruntime references
# for MiniLM int8) into ~/.cache/kiln, then runs formatting, lint and every test, and prints
# the conformance and real-model figures.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-llvm.sh
./scripts/fetch-test-data.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
echo "== figures =="
cargo test --quiet --test conformance --test models -- --nocapture 2>&1 \
  | grep -E "ONNX node tests|all node tests|compiled path|max abs error|x dtype|x [a-z]"

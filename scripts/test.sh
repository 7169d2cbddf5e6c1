#!/usr/bin/env bash
# The test command: fetches the external test data (ONNX node tests, onnxruntime references
# for MiniLM int8) into ~/.cache/kiln, then runs formatting, lint and every test (the Rust
# workspace's, then the Python package's with pytest, after `pip install ./python`), and prints
# the conformance and real-model figures.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-llvm.sh
./scripts/fetch-test-data.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
python3 -m pip install --quiet ./python pytest
python3 -m pytest -q python/tests
echo "== figures =="
cargo test --quiet --test conformance --test models -- --nocapture 2>&1 \
  | grep -E "ONNX node tests|all node tests|compiled path|max abs error|x dtype|x [a-z]"

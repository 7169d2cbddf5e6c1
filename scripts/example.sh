#!/usr/bin/env bash
# The main job on a bundled example: build kiln, describe the GPT-2 fixture, compile it ahead
# of time into out/gpt2-aot (kernels.so, model.kg + weights.bin, model.h), run the artefact
# and write its logits to out/gpt2/output.npy; then install the Python package and run the same
# model from numpy (python/examples/run_gpt2.py).
set -euo pipefail
cd "$(dirname "$0")/.."
model=tests/models/gpt2
./scripts/install-llvm.sh
cargo build --release --quiet
./target/release/kiln inspect "$model/model.onnx"
./target/release/kiln compile "$model/model.onnx" -o out/gpt2-aot
./target/release/kiln run out/gpt2-aot \
  --input input_ids="$model/io/b1_s16.input_ids.npy" \
  --input attention_mask="$model/io/b1_s16.attention_mask.npy" \
  --output-dir out/gpt2
python3 -m pip install --quiet --disable-pip-version-check ./python
python3 python/examples/run_gpt2.py "$model"

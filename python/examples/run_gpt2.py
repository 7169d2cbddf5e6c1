"""Compiles a reference model with kiln from Python, runs it on its bundled inputs and
compares the result with torch's output saved beside them.

    python3 python/examples/run_gpt2.py tests/models/gpt2
"""

import pathlib
import sys

import numpy as np

import kiln

model_dir = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "tests/models/gpt2")
model = kiln.compile(model_dir / "model.onnx", backend="llvm")
print(model)
io = model_dir / "io"
feeds = {name: np.load(io / f"b1_s16.{name}.npy") for name in ("input_ids", "attention_mask")}
(logits,) = model.run(feeds).values()
expected = np.load(io / "b1_s16.output.npy")
error = float(np.abs(logits - expected).max())
print(f"output {logits.dtype}{list(logits.shape)}: max abs error against torch {error:.2e}")
sys.exit(0 if error <= 1e-4 else 1)

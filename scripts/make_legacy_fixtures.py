#!/usr/bin/env python3
"""Exports the tiny reference models of tests/models with torch's legacy (TorchScript) ONNX
exporter, the form older tooling and many published models are in, next to the dynamo export
each already has: `tests/models/<name>/model.legacy.onnx`.

Run once by hand (needs torch and transformers; CI does not run it):

    python3 scripts/make_legacy_fixtures.py [NAME ...]     # default: all six below

Each model is loaded from its `config.json` + `model.safetensors` with eager attention (the
attention code older transformers versions had: `MatMul(Q, Kᵀ) / √d + mask → Softmax →
MatMul(·, V)`), wrapped as the dynamo exports are (inputs `input_ids`, `attention_mask` int64,
dynamic `batch` and `seq`; one output `output`), exported at opset 14 with `dynamo=False`, and
checked: onnxruntime must reproduce the fixture's reference outputs (`io/<case>.output.npy`,
torch's) within 1e-4 on both cases, so the same references serve both exports.

`bert` also gets `model.pooled.legacy.onnx`: the encoder followed by sentence-transformers'
pooling (mean over the unmasked positions, `sum(h · mask, 1) / clamp(sum(mask, 1), 1e-9)`,
then `F.normalize`, which exports a `ReduceL2`), output `sentence_embedding`, with torch's
outputs in `io/<case>.sentence_embedding.npy`.
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import transformers
from make_fixtures import Wrapper

ROOT = Path(__file__).resolve().parent.parent / "tests" / "models"
DEFAULT = ["bert", "distilbert", "llama", "gpt2", "gptneox", "phi"]
OPSET = 14


class Pooled(torch.nn.Module):
    """An encoder with sentence-transformers' mean pooling and L2 normalisation."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        h = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).expand(h.size()).float()
        mean = torch.sum(h * m, 1) / torch.clamp(m.sum(1), min=1e-9)
        return torch.nn.functional.normalize(mean, p=2, dim=1)


def export(name, pooled=False):
    out = ROOT / name
    config = transformers.AutoConfig.from_pretrained(out)
    causal = not any(a in ("BertModel", "DistilBertModel") for a in config.architectures)
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    model = auto.from_pretrained(out, attn_implementation="eager").eval()
    wrapper = (Pooled(model) if pooled else Wrapper(model, causal)).eval()
    load = lambda case, n: np.load(out / "io" / f"{case}.{n}.npy")
    ids, mask = torch.from_numpy(load("b2_s33", "input_ids")), torch.from_numpy(load("b2_s33", "attention_mask"))
    path = out / ("model.pooled.legacy.onnx" if pooled else "model.legacy.onnx")
    output = "sentence_embedding" if pooled else "output"
    if pooled:
        for case in ["b1_s16", "b2_s33"]:
            feeds = [torch.from_numpy(load(case, n)) for n in ("input_ids", "attention_mask")]
            with torch.no_grad():
                np.save(out / "io" / f"{case}.{output}.npy", wrapper(*feeds).numpy())
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (ids, mask),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["input_ids", "attention_mask"],
            output_names=[output],
            dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
        )
    session = onnxruntime.InferenceSession(str(path))
    for case in ["b1_s16", "b2_s33"]:
        feeds = {"input_ids": load(case, "input_ids"), "attention_mask": load(case, "attention_mask")}
        (y,) = session.run(None, feeds)
        err = float(np.abs(y - load(case, output)).max())
        assert err <= 1e-4, f"{name} {case}: onnxruntime differs from torch by {err}"
        print(f"{name} {case}: onnxruntime on the legacy export within {err:.2e} of torch")
    print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    for name in sys.argv[1:] or DEFAULT:
        export(name)
        if name == "bert":
            export(name, pooled=True)

#!/usr/bin/env python3
"""Makes the tiny gptneox, phi and distilbert reference models in tests/models.

Run once by hand (needs torch and transformers; CI does not run it):

    python3 scripts/make_fixtures.py [NAME ...]     # default: every model below, then llama-variants

Each model gets, like the older fixtures (see tests/models/README.md): config.json and
model.safetensors (save_pretrained), model.onnx (torch's dynamo exporter, opset 18, dynamic
`batch` and `seq`, inputs `input_ids` / `attention_mask` int64, output `output`), and
io/<case>.{input_ids,attention_mask,output}.npy for `b1_s16` and `b2_s33` (batch 2, the last
5 positions of row 2 padded) with torch's outputs. Weights are random (seed 1234), and
LayerNorm weights and all biases are perturbed too, so that no parameter is at its default.

Config variants (VARIANTS: another activation, the sequential GPT-NeoX residual) reuse the same
weights; torch's `b2_s33` output of each is io/b2_s33.<variant>.output.npy, and
io/variants.json maps each variant to the config.json keys it overrides. `llama-variants`
adds such variants (the gated MLP with other activations) to the existing llama fixture,
loading its weights and leaving its other files as they are.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent / "tests" / "models"
SEED = 1234

MODELS = {
    "gptneox": (
        transformers.GPTNeoXConfig,
        transformers.GPTNeoXForCausalLM,
        dict(
            vocab_size=320,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            hidden_act="gelu",
            max_position_embeddings=128,
            rotary_pct=0.25,
            rotary_emb_base=10000,
            use_parallel_residual=True,
            attention_bias=True,
            tie_word_embeddings=False,
        ),
    ),
    "phi": (
        transformers.PhiConfig,
        transformers.PhiForCausalLM,
        dict(
            vocab_size=320,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            hidden_act="gelu_new",
            max_position_embeddings=128,
            partial_rotary_factor=0.5,
            tie_word_embeddings=False,
        ),
    ),
    "distilbert": (
        transformers.DistilBertConfig,
        transformers.DistilBertModel,
        dict(
            vocab_size=320,
            dim=64,
            n_layers=2,
            n_heads=4,
            hidden_dim=128,
            activation="gelu",
            max_position_embeddings=128,
            sinusoidal_pos_embds=True,
        ),
    ),
}


VARIANTS = {
    "gptneox": {
        "relu": {"hidden_act": "relu"},
        "gelu_pytorch_tanh": {"hidden_act": "gelu_pytorch_tanh"},
        "sequential": {"use_parallel_residual": False},
    },
    "phi": {
        "quick_gelu": {"hidden_act": "quick_gelu"},
        "silu": {"hidden_act": "silu"},
    },
    "distilbert": {
        "relu": {"activation": "relu"},
    },
    "llama": {
        "relu": {"hidden_act": "relu"},
        "gelu": {"hidden_act": "gelu"},
    },
}


class Wrapper(torch.nn.Module):
    """The model with a single output: logits for the causal models, last_hidden_state else."""

    def __init__(self, model, causal):
        super().__init__()
        self.model, self.causal = model, causal

    def forward(self, input_ids, attention_mask):
        if self.causal:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def cases(vocab):
    rng = np.random.default_rng(SEED)
    b1 = rng.integers(0, vocab, size=(1, 16), dtype=np.int64)
    b2 = rng.integers(0, vocab, size=(2, 33), dtype=np.int64)
    mask2 = np.ones((2, 33), dtype=np.int64)
    mask2[1, -5:] = 0
    return {"b1_s16": (b1, np.ones((1, 16), dtype=np.int64)), "b2_s33": (b2, mask2)}


def make(name):
    config_cls, model_cls, kwargs = MODELS[name]
    torch.manual_seed(SEED)
    config = config_cls(**kwargs)
    config._attn_implementation = "eager"
    model = model_cls(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname.lower():
                p.add_(torch.randn_like(p) * 0.1)
            elif pname.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.02)
    out = ROOT / name
    shutil.rmtree(out, ignore_errors=True)
    (out / "io").mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    wrapper = Wrapper(model, name != "distilbert").eval()
    for case, (ids, mask) in cases(kwargs["vocab_size"]).items():
        with torch.no_grad():
            y = wrapper(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        np.save(out / "io" / f"{case}.input_ids.npy", ids)
        np.save(out / "io" / f"{case}.attention_mask.npy", mask)
        np.save(out / "io" / f"{case}.output.npy", y.astype(np.float32))
    ids, mask = cases(kwargs["vocab_size"])["b2_s33"]
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    torch.onnx.export(
        wrapper,
        (torch.from_numpy(ids), torch.from_numpy(mask)),
        str(out / "model.onnx"),
        dynamo=True,
        opset_version=18,
        input_names=["input_ids", "attention_mask"],
        output_names=["output"],
        dynamic_shapes={
            "input_ids": {0: batch, 1: seq},
            "attention_mask": {0: batch, 1: seq},
        },
        external_data=False,
    )
    check_onnx(out, name)
    (out / "generation_config.json").unlink(missing_ok=True)
    (out / "model.safetensors").chmod(0o644)
    save_variants(name, config_cls, model_cls, kwargs, model, out)


def save_variants(name, config_cls, model_cls, kwargs, model, out):
    """torch's b2_s33 output of each of the model's config variants, on the same weights."""
    ids = np.load(out / "io" / "b2_s33.input_ids.npy")
    mask = np.load(out / "io" / "b2_s33.attention_mask.npy")
    variants = VARIANTS.get(name, {})
    for variant, overrides in variants.items():
        vconfig = config_cls(**{**kwargs, **overrides})
        vconfig._attn_implementation = "eager"
        vmodel = model_cls(vconfig).eval()
        vmodel.load_state_dict(model.state_dict())
        with torch.no_grad():
            y = Wrapper(vmodel, name != "distilbert")(torch.from_numpy(ids), torch.from_numpy(mask))
        np.save(out / "io" / f"b2_s33.{variant}.output.npy", y.numpy().astype(np.float32))
    if variants:
        with open(out / "io" / "variants.json", "w") as f:
            json.dump(variants, f, indent=2, sort_keys=True)
            f.write("\n")
    with open(out / "config.json") as f:
        print(name, json.load(f)["architectures"], sorted(p.name for p in out.iterdir()))


def check_onnx(out, name):
    """onnxruntime must reproduce torch's outputs within 1e-4 on both cases."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    for case in ["b1_s16", "b2_s33"]:
        load = lambda n: np.load(out / "io" / f"{case}.{n}.npy")
        (y,) = session.run(None, {"input_ids": load("input_ids"), "attention_mask": load("attention_mask")})
        err = float(np.abs(y - load("output")).max())
        print(f"{name} {case}: onnxruntime max abs error {err:.2e}")
        assert err <= 1e-4, (name, case, err)


def llama_variants():
    """Variants of the existing llama fixture (its weights and inputs as they are)."""
    out = ROOT / "llama"
    with open(out / "config.json") as f:
        kwargs = json.load(f)
    model = transformers.LlamaForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    ids = torch.from_numpy(np.load(out / "io" / "b2_s33.input_ids.npy"))
    mask = torch.from_numpy(np.load(out / "io" / "b2_s33.attention_mask.npy"))
    with torch.no_grad():
        y = Wrapper(model, True)(ids, mask).numpy()
    err = float(np.abs(y - np.load(out / "io" / "b2_s33.output.npy")).max())
    assert err <= 1e-5, ("llama weights do not reproduce the fixture", err)
    save_variants("llama", transformers.LlamaConfig, transformers.LlamaForCausalLM, kwargs, model, out)


if __name__ == "__main__":
    for name in sys.argv[1:] or [*MODELS, "llama-variants"]:
        llama_variants() if name == "llama-variants" else make(name)

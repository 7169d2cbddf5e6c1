#!/usr/bin/env python3
"""Makes the tiny sliding-window checkpoints in tests/models: `mistral` (a window of 8 on every
layer) and `qwen2` (`use_sliding_window` with `max_window_layers` 1: layer 0 full, layer 1 a
window of 8), each with torch's logits for a 24-token prompt (3 windows) in one prefill and
token by token with transformers' KV cache.

Run once by hand (needs torch and transformers; CI does not run it):

    python3 scripts/make_window_fixtures.py

Writes config.json and model.safetensors (save_pretrained, f32, random weights, seed 1234),
io/b1_s24.input_ids.npy, io/b1_s24.logits.npy (prefill, [1, 24, vocab]) and
io/b1_s24.decode_logits.npy (step t fed token t after a cache of t tokens, [24, vocab]).
"""

from pathlib import Path

import numpy as np
import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent / "tests" / "models"
COMMON = dict(
    vocab_size=320,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    max_position_embeddings=128,
    rope_theta=10000.0,
    sliding_window=8,
    tie_word_embeddings=False,
)
MODELS = {
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, {}),
    "qwen2": (
        transformers.Qwen2Config,
        transformers.Qwen2ForCausalLM,
        dict(use_sliding_window=True, max_window_layers=1),
    ),
}


def main():
    for name, (config_class, model_class, extra) in MODELS.items():
        torch.manual_seed(1234)
        config = config_class(**COMMON, **extra, attn_implementation="eager")
        model = model_class(config).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        out = ROOT / name
        model.save_pretrained(out, safe_serialization=True)
        io = out / "io"
        io.mkdir(parents=True, exist_ok=True)
        ids = torch.randint(0, COMMON["vocab_size"], (1, 24), generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            prefill = model(ids, attention_mask=torch.ones_like(ids)).logits
            cache, steps = None, []
            for t in range(ids.shape[1]):
                step = model(
                    ids[:, t : t + 1],
                    attention_mask=torch.ones(1, t + 1, dtype=torch.long),
                    past_key_values=cache,
                    use_cache=True,
                )
                cache = step.past_key_values
                steps.append(step.logits[0, 0])
        np.save(io / "b1_s24.input_ids.npy", ids.numpy().astype(np.int64))
        np.save(io / "b1_s24.logits.npy", prefill.numpy().astype(np.float32))
        np.save(io / "b1_s24.decode_logits.npy", torch.stack(steps).numpy().astype(np.float32))
        # The window must matter: full attention gives other logits at the last position.
        full = config_class(**{**COMMON, **extra, "sliding_window": None}, attn_implementation="eager")
        if name == "qwen2":
            full.use_sliding_window = False
        full_model = model_class(full).eval()
        full_model.load_state_dict(model.state_dict())
        with torch.no_grad():
            unwindowed = full_model(ids).logits
        gap = (unwindowed - prefill).abs().max().item()
        print(f"{name}: {out}, max |windowed - full| logit {gap:.3g}")


if __name__ == "__main__":
    main()

"""Writes a random-weight LLaMA-architecture checkpoint (config.json + model.safetensors) with
SmolLM2-135M's shape: 30 layers, hidden 576, 9 heads, 3 kv heads, FFN 1536, vocab 49152, tied
embeddings. With --tiny, the same 30 layers, heads and kernels at hidden 72, FFN 192 and vocab
512 (about 5 MB of weights, which stay in the cache: a decode step of it is the fixed cost of
the big one's kernel steps). Usage: python3 bench/make_checkpoint.py OUT_DIR [--tiny]"""

import json
import os
import struct
import sys

import numpy as np

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
    "intermediate_size": 1536, "vocab_size": 49152, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": True,
    "hidden_act": "silu", "torch_dtype": "float32",
}


TINY = {"hidden_size": 72, "intermediate_size": 192, "vocab_size": 512}


def tensors(config):
    rng = np.random.default_rng(0)
    h, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv, d = config["num_key_value_heads"], h // config["num_attention_heads"]
    w = lambda *shape: (rng.standard_normal(shape, dtype=np.float32) * 0.02)
    yield "model.embed_tokens.weight", w(v, h)
    for l in range(30):
        p = f"model.layers.{l}"
        yield f"{p}.input_layernorm.weight", np.ones(h, np.float32)
        yield f"{p}.post_attention_layernorm.weight", np.ones(h, np.float32)
        yield f"{p}.self_attn.q_proj.weight", w(9 * d, h)
        yield f"{p}.self_attn.k_proj.weight", w(kv * d, h)
        yield f"{p}.self_attn.v_proj.weight", w(kv * d, h)
        yield f"{p}.self_attn.o_proj.weight", w(h, 9 * d)
        yield f"{p}.mlp.gate_proj.weight", w(f, h)
        yield f"{p}.mlp.up_proj.weight", w(f, h)
        yield f"{p}.mlp.down_proj.weight", w(h, f)
    yield "model.norm.weight", np.ones(h, np.float32)


def main(out, tiny):
    config = {**CONFIG, **(TINY if tiny else {})}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(config, fh)
    items = list(tensors(config))
    header, offset = {}, 0
    for name, t in items:
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for _, t in items:
            fh.write(t.tobytes())


if __name__ == "__main__":
    main(sys.argv[1], "--tiny" in sys.argv[2:])

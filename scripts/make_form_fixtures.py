#!/usr/bin/env python3
"""Writes small torch-free fixtures of the attention forms older exports use, one attention
block each, to tests/models/forms/ (run by hand; needs numpy, onnx and onnxruntime):

    python3 scripts/make_form_fixtures.py

Every model has inputs `x` f32[batch, seq, 32] and `attention_mask` i64[batch, seq] (T5's also
`position_bias` f32[1, 4, seq, seq]) and output `y` f32[batch, seq, 32]: Q, K and V projections
(with biases), heads split by a `Reshape` whose shape is built from `Shape`/`Gather`/
`Unsqueeze`/`Concat`, `Softmax` attention with an additive mask made in the graph, the heads
merged the same way and an output projection. The forms:

- `bert_div`: older transformers BERT: `MatMul(Q, Kᵀ) / √d`, mask `(1 − mask) · −10000` through
  `Unsqueeze`/`Cast`/`Sub`/`Mul`;
- `bert_min`: the same with the mask times `finfo(f32).min`;
- `bert_scaled_q`: Q multiplied by `1/√d` before `MatMul(Q, Kᵀ)` (no division after);
- `bert_scaled_k`: K multiplied by `1/√d` before it is transposed;
- `t5`: no scale at all, and the position bias added to the mask (T5's encoder attention).

Weights are random (seed 1234). `<form>.io/<case>.{x,attention_mask,position_bias}.npy` are the
inputs of cases `b1_s16` and `b2_s33` (the last 5 positions of batch row 2 padded) and
`<form>.io/<case>.y.npy` onnxruntime's outputs.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

OUT = Path(__file__).resolve().parent.parent / "tests" / "models" / "forms"
HIDDEN, HEADS = 32, 4
HEAD = HIDDEN // HEADS
FINFO_MIN = float(np.finfo(np.float32).min)


class Builder:
    def __init__(self, rng):
        self.nodes, self.inits, self.rng, self.n = [], [], rng, 0

    def const(self, value, dtype=np.float32):
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind, inputs, **attrs):
        self.n += 1
        out = f"{kind.lower()}{self.n}"
        self.nodes.append(helper.make_node(kind, inputs, [out], name=f"{kind}_{self.n}", **attrs))
        return out

    def linear(self, x):
        w = self.const(self.rng.standard_normal((HIDDEN, HIDDEN)) * 0.2)
        b = self.const(self.rng.standard_normal(HIDDEN) * 0.05)
        return self.op("Add", [self.op("MatMul", [x, w]), b])

    def dim(self, x, axis):
        """Dim `axis` of `x` as a 1-element i64 tensor, the way torch.onnx writes `x.size(i)`."""
        shape = self.op("Shape", [x])
        return self.op("Unsqueeze", [self.op("Gather", [shape, self.const(axis, np.int64)], axis=0), self.const([0], np.int64)])

    def heads(self, t, b, s):
        shape = self.op("Concat", [b, s, self.const([HEADS], np.int64), self.const([HEAD], np.int64)], axis=0)
        return self.op("Transpose", [self.op("Reshape", [t, shape])], perm=[0, 2, 1, 3])


def model(form):
    rng = np.random.default_rng(1234)
    g = Builder(rng)
    b, s = g.dim("x", 0), g.dim("x", 1)
    q, k, v = (g.heads(g.linear("x"), b, s) for _ in range(3))
    if form == "bert_scaled_q":
        q = g.op("Mul", [q, g.const(1 / np.sqrt(HEAD))])
    if form == "bert_scaled_k":
        k = g.op("Mul", [k, g.const(1 / np.sqrt(HEAD))])
    scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
    if form in ("bert_div", "bert_min"):
        scores = g.op("Div", [scores, g.const(np.sqrt(HEAD))])
    ext = g.op("Unsqueeze", [g.op("Unsqueeze", ["attention_mask", g.const([1], np.int64)]), g.const([2], np.int64)])
    ext = g.op("Cast", [ext], to=TensorProto.FLOAT)
    ext = g.op("Mul", [g.op("Sub", [g.const(1.0), ext]), g.const(FINFO_MIN if form == "bert_min" else -10000.0)])
    if form == "t5":
        ext = g.op("Add", ["position_bias", ext])
    probs = g.op("Softmax", [g.op("Add", [scores, ext])], axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    merged = g.op("Reshape", [ctx, g.op("Concat", [b, s, g.const([HIDDEN], np.int64)], axis=0)])
    y = g.linear(merged)
    g.nodes.append(helper.make_node("Identity", [y], ["y"], name="output"))
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
    ]
    if form == "t5":
        inputs.append(helper.make_tensor_value_info("position_bias", TensorProto.FLOAT, [1, HEADS, "seq", "seq"]))
    graph = helper.make_graph(
        g.nodes, form, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", HIDDEN])], g.inits
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def cases(form):
    rng = np.random.default_rng(7)
    out = {}
    for case, (batch, seq) in {"b1_s16": (1, 16), "b2_s33": (2, 33)}.items():
        mask = np.ones((batch, seq), np.int64)
        if batch == 2:
            mask[1, -5:] = 0
        feeds = {"x": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32), "attention_mask": mask}
        if form == "t5":
            feeds["position_bias"] = (rng.standard_normal((1, HEADS, seq, seq)) * 0.5).astype(np.float32)
        out[case] = feeds
    return out


def main():
    for form in ["bert_div", "bert_min", "bert_scaled_q", "bert_scaled_k", "t5"]:
        m = model(form)
        OUT.mkdir(parents=True, exist_ok=True)
        path = OUT / f"{form}.onnx"
        onnx.save(m, path)
        io = OUT / f"{form}.io"
        io.mkdir(exist_ok=True)
        session = onnxruntime.InferenceSession(str(path))
        for case, feeds in cases(form).items():
            (y,) = session.run(None, feeds)
            for name, value in {**feeds, "y": y}.items():
                np.save(io / f"{case}.{name}.npy", value)
        print(f"wrote {path} and {io}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write ONNX `Attention` test cases whose expected outputs come from `onnx.reference` (the
installed onnx, 1.23 or later: opset 25's windows and its fully-masked-row rule).

Usage: attention_cases.py OUT_DIR [COUNT]

Each case is a directory in the ONNX backend node-test layout (model.onnx and
test_data_set_0/input_N.pb, output_N.pb), so `tests/conformance.rs` runs it as it runs the
node tests. The cases are drawn with a fixed seed over what opsets 23-25 define: 3-D and 4-D
inputs, grouped-query heads, bool and additive masks of rank 1 to 4 (some shorter than the
keys, some with fully masked rows), an internal cache (past_key / past_value), an external
cache (nonpad_kv_seqlen, with causal offsets that may leave rows empty), left / right windows,
softcap, scale and every qk_matmul_output_mode. Needs numpy and onnx.
"""

import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator


def draw_case(rng):
    """One case: the node's attributes and its inputs by name (None: left out)."""
    rank = int(rng.choice([3, 4]))
    batch = int(rng.integers(1, 3))
    kv_heads = int(rng.choice([1, 2]))
    q_heads = kv_heads * int(rng.choice([1, 2, 3]))
    head, v_head = int(rng.choice([4, 8])), int(rng.choice([4, 8]))
    q_len = int(rng.integers(1, 7))
    cache = rng.choice(["none", "none", "past", "nonpad"])
    kv_len = q_len if cache != "nonpad" else q_len + int(rng.integers(0, 6))
    if rng.random() < 0.3:
        kv_len = int(rng.integers(1, 9))
    past_len = int(rng.integers(1, 6)) if cache == "past" else 0
    total = past_len + kv_len
    attrs = {}
    causal = rng.random() < 0.5
    if causal:
        attrs["is_causal"] = 1
    if rng.random() < 0.45:
        attrs["left_window_size"] = int(rng.choice([-1, 0, 1, 2, 4]))
    if rng.random() < 0.3 and not causal:
        attrs["right_window_size"] = int(rng.choice([-1, 0, 1, 3]))
    if rng.random() < 0.2:
        attrs["scale"] = float(rng.choice([0.1, 0.5, 1.0]))
    if rng.random() < 0.2:
        attrs["softcap"] = float(rng.choice([1.0, 5.0]))
    mode = int(rng.choice([0, 0, 1, 2, 3]))
    if mode == 0 and "softcap" in attrs:
        # The spec's mode 0 is the raw product; the 1.23 reference returns it soft-capped.
        mode = 1
    if mode:
        attrs["qk_matmul_output_mode"] = mode
    if rank == 3:
        attrs["q_num_heads"], attrs["kv_num_heads"] = q_heads, kv_heads

    def tensor(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    if rank == 4:
        q = tensor(batch, q_heads, q_len, head)
        k = tensor(batch, kv_heads, kv_len, head)
        v = tensor(batch, kv_heads, kv_len, v_head)
    else:
        q = tensor(batch, q_len, q_heads * head)
        k = tensor(batch, kv_len, kv_heads * head)
        v = tensor(batch, kv_len, kv_heads * v_head)
    inputs = {"Q": q, "K": k, "V": v, "attn_mask": None, "past_key": None, "past_value": None,
              "nonpad_kv_seqlen": None}
    if rng.random() < 0.55:
        # The 1.23 reference takes the causal mask's query count from the mask's shape, so with
        # is_causal it cannot broadcast a mask over the queries (rank 1, or a query dim of 1:
        # every query would get query 0's causal row); those masks are drawn without causal.
        mask_rank = int(rng.integers(2 if causal else 1, 5))
        full = [batch, q_heads, q_len, total]
        shape = [d if rng.random() < 0.5 else 1 for d in full[4 - mask_rank:-1]]
        if causal:
            shape[-1] = q_len
        last = total if rng.random() < 0.8 else int(rng.integers(1, total + 1))
        shape.append(last)
        if rng.random() < 0.5:
            mask = rng.random(shape) < 0.7
            if rng.random() < 0.4 and len(shape) >= 2:
                mask[..., 0, :] = False  # a fully masked query row
        else:
            mask = np.where(rng.random(shape) < 0.8, rng.standard_normal(shape), -np.inf)
            mask = mask.astype(np.float32)
        inputs["attn_mask"] = mask
    if cache == "past":
        inputs["past_key"] = tensor(batch, kv_heads, past_len, head)
        inputs["past_value"] = tensor(batch, kv_heads, past_len, v_head)
    if cache == "nonpad":
        inputs["nonpad_kv_seqlen"] = rng.integers(0, kv_len + 1, size=batch).astype(np.int64)
    return attrs, inputs, mode, cache == "past"


def write_case(dir_, attrs, inputs, mode, has_past):
    names = ["Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"]
    node_inputs = [n if inputs[n] is not None else "" for n in names]
    while node_inputs[-1] == "":
        node_inputs.pop()
    outputs = ["Y"]
    if has_past or mode:
        outputs += ["present_key", "present_value"]
    if mode:
        outputs.append("qk_matmul_output")
    node = helper.make_node("Attention", node_inputs, outputs, **attrs)
    dtype = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.bool_): TensorProto.BOOL,
             np.dtype(np.int64): TensorProto.INT64}
    graph_inputs = [
        helper.make_tensor_value_info(n, dtype[inputs[n].dtype], inputs[n].shape)
        for n in node_inputs if n
    ]
    graph_outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    graph = helper.make_graph([node], "attention", graph_inputs, graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    feeds = {n: inputs[n] for n in node_inputs if n}
    results = ReferenceEvaluator(model).run(None, feeds)
    os.makedirs(os.path.join(dir_, "test_data_set_0"))
    onnx.save(model, os.path.join(dir_, "model.onnx"))
    for i, n in enumerate(n for n in node_inputs if n):
        with open(os.path.join(dir_, "test_data_set_0", f"input_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(feeds[n], n).SerializeToString())
    for i, (n, value) in enumerate(zip(outputs, results)):
        with open(os.path.join(dir_, "test_data_set_0", f"output_{i}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(np.asarray(value, np.float32), n).SerializeToString())


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: attention_cases.py OUT_DIR [COUNT]")
    out, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 300
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(2026)
    kinds = {"window": 0, "nonpad": 0}
    for n in range(count):
        attrs, inputs, mode, has_past = draw_case(rng)
        kinds["window"] += any(attrs.get(w, -1) != -1 for w in ("left_window_size", "right_window_size"))
        kinds["nonpad"] += inputs["nonpad_kv_seqlen"] is not None
        write_case(os.path.join(out, f"attention_{n:03d}"), attrs, inputs, mode, has_past)
    print(f"wrote {count} Attention cases (onnx {onnx.__version__} reference) to {out}: "
          + ", ".join(f"{v} with {k}" for k, v in kinds.items()))


if __name__ == "__main__":
    main()

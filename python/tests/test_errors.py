"""Bad input raises a KilnError subclass naming the input and the problem, and never takes
the interpreter down; the model is usable afterwards."""

import numpy as np
import pytest

import kiln
from conftest import MODELS, TOLERANCE, case, max_abs

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


@pytest.fixture(scope="module")
def gpt2():
    return kiln.compile(MODELS / "gpt2" / "model.onnx", threads=1)


def fixed_model(path, op="Relu", domain=""):
    """An ONNX model of one `op` on a fixed-shape f32 input `x` [2, 3]."""
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    imports = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=imports), str(path))
    return path


def raises(kind, call, *fragments):
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for f in fragments:
        assert f in message, message
    return message


def test_feed_errors_name_the_input(gpt2):
    feeds, expected = case("gpt2", "b2_s33")
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    bad = kiln.BadInputError
    raises(bad, lambda: gpt2.run({"input_ids": ids.astype(np.int32), "attention_mask": mask}),
           "`input_ids`", "int32", "int64")
    raises(bad, lambda: gpt2.run({"input_ids": ids[None], "attention_mask": mask}),
           "`input_ids`", "rank 3", "rank 2")
    raises(bad, lambda: gpt2.run({"input_ids": ids, "attention_mask": mask[:, :5]}),
           "`attention_mask`", "seq")
    raises(bad, lambda: gpt2.run({"input_ids": ids}), "missing input `attention_mask`")
    raises(bad, lambda: gpt2.run({**feeds, "token_type_ids": ids}), "unknown input `token_type_ids`")
    raises(bad, lambda: gpt2.run({"input_ids": ids.tolist(), "attention_mask": mask}),
           "`input_ids`", "not a numpy array")
    raises(bad, lambda: gpt2.run(feeds, ["logits"]), "unknown output `logits`", "output")
    raises(bad, lambda: kiln.InferenceSession(MODELS / "gpt2" / "model.onnx").run(["nope"], feeds),
           "unknown output `nope`")
    # Every error is a KilnError, and the model still runs.
    assert issubclass(bad, kiln.KilnError)
    assert max_abs(gpt2.run(feeds)["output"], expected) <= TOLERANCE


def test_token_out_of_range_is_an_error(gpt2):
    feeds, _ = case("gpt2", "b1_s16")
    ids = feeds["input_ids"].copy()
    ids[0, 3] = 10**6
    raises(kiln.BadInputError, lambda: gpt2.run({**feeds, "input_ids": ids}), "`input_ids`", "1000000", "out of range")


def test_fixed_dims_are_checked(tmp_path):
    model = kiln.compile(fixed_model(tmp_path / "relu.onnx"), threads=1)
    assert model.inputs[0].shape == (2, 3)
    x = np.array([[-1, 2, -3], [4, -5, 6]], dtype=np.float32)
    np.testing.assert_array_equal(model.run({"x": x})["y"], np.maximum(x, 0))
    raises(kiln.BadInputError, lambda: model.run({"x": np.zeros((2, 4), np.float32)}),
           "`x`", "dimension 1 is 4", "declares 3")


def test_bad_models(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07 this is not a protobuf \xff\xff\xff")
    raises(kiln.BadModelError, lambda: kiln.compile(garbage), "garbage.onnx")
    raises(kiln.BadModelError, lambda: kiln.compile(tmp_path / "missing.onnx"), "missing.onnx")
    unknown = fixed_model(tmp_path / "custom.onnx", op="Frobnicate", domain="com.example")
    raises(kiln.UnsupportedOpError, lambda: kiln.compile(unknown), "Frobnicate")
    raises(kiln.BadInputError, lambda: kiln.compile(MODELS / "gpt2" / "model.onnx", backend="tvm"),
           "tvm")
    raises(kiln.BadInputError, lambda: kiln.compile(MODELS / "gpt2" / "model.onnx", entry="decode"),
           "decode")
    raises(kiln.BadModelError, lambda: kiln.load(tmp_path), str(tmp_path))
    with pytest.raises(NotImplementedError):
        kiln.compile(MODELS / "gpt2" / "model.onnx", quantize="int4")


def test_state_buffers_must_be_writable_and_contiguous():
    model = kiln.compile(MODELS / "llama", threads=1)
    feeds, _ = case("llama", "b1_s16")
    caches = {i.name: np.zeros((1, 2, 16, 16), np.float32)
              for i in model.inputs if i.name.startswith("cache_")}
    frozen = {**caches, "cache_key.0": caches["cache_key.0"].copy()}
    frozen["cache_key.0"].setflags(write=False)
    raises(kiln.BadInputError, lambda: model.run_in_place(feeds, frozen), "`cache_key.0`", "read-only")
    strided = {**caches, "cache_value.1": np.zeros((1, 2, 16, 32), np.float32)[..., ::2]}
    raises(kiln.BadInputError, lambda: model.run_in_place(feeds, strided),
           "`cache_value.1`", "C-contiguous")
    shared = {**caches, "cache_value.0": caches["cache_key.0"]}
    raises(kiln.BadInputError, lambda: model.run_in_place(feeds, shared), "share memory")
    missing = {k: v for k, v in caches.items() if k != "cache_key.1"}
    raises(kiln.BadInputError, lambda: model.run_in_place(feeds, missing), "`cache_key.1`")
    raises(kiln.BadInputError, lambda: model.run_in_place(feeds, {**caches, "cache": caches["cache_key.1"]}),
           "`cache` is not a state")
    # A state written over an input the run reads: its mask inside the key cache's bytes.
    buffer = np.zeros(1 * 2 * 16 * 16 * 4, np.uint8)
    overlapping_mask = buffer[:128].view(np.int64).reshape(1, 16)
    overlapping_mask[:] = 1
    overlapping = {**caches, "cache_key.0": buffer.view(np.float32).reshape(1, 2, 16, 16)}
    raises(kiln.BadInputError,
           lambda: model.run_in_place({**feeds, "attention_mask": overlapping_mask}, overlapping),
           "`cache_key.0`", "`attention_mask`")
    small = {**caches, "cache_key.0": np.zeros((1, 2, 8, 16), np.float32)}
    raises(kiln.BadInputError, lambda: model.run_in_place(feeds, small), "cache_key.0")


def test_bad_rules(tmp_path):
    model = MODELS / "gpt2" / "model.onnx"
    raises(kiln.KilnError, lambda: kiln.optimize(model, rules=["rule broken (exact):\n (Mul ?x"]),
           "<rules[0]>")
    silu = "rule silu (exact):\n (Mul ?x (Sigmoid ?x)) => (Silu ?x)\n"
    raises(kiln.KilnError, lambda: kiln.optimize(model, rules=[silu]), "`silu` is already defined")
    raises(kiln.KilnError, lambda: kiln.rules_check([tmp_path / "none.rules"]), "none.rules")
    raises(kiln.KilnError, lambda: kiln.optimize(model, rules=[3]), "rules[0]")

"""Every reference model through ``kiln.compile(...).run``, ``InferenceSession`` and the
checkpoint path, against torch's outputs; artefacts written and loaded back."""

import numpy as np
import pytest

import kiln
from conftest import CASES, FIXTURES, MODELS, TOLERANCE, case, max_abs


@pytest.mark.parametrize("backend", ["llvm", "cranelift"])
@pytest.mark.parametrize("name", FIXTURES)
def test_compile_run_matches_reference(name, backend):
    model = kiln.compile(MODELS / name / "model.onnx", backend=backend, threads=1)
    assert model.backend == backend
    assert [i.name for i in model.inputs] == ["input_ids", "attention_mask"]
    assert [o.name for o in model.outputs] == ["output"]
    for case_name in CASES:
        feeds, expected = case(name, case_name)
        outputs = model.run(feeds)
        assert list(outputs) == ["output"]
        assert outputs["output"].dtype == np.float32
        error = max_abs(outputs["output"], expected)
        assert error <= TOLERANCE, f"{name} {case_name}: max abs error {error}"


@pytest.mark.parametrize("name", FIXTURES)
def test_inference_session_matches_reference(name):
    options = kiln.SessionOptions()
    options.intra_op_num_threads = 2
    session = kiln.InferenceSession(
        str(MODELS / name / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    inputs = session.get_inputs()
    assert [(i.name, i.type, i.shape) for i in inputs] == [
        ("input_ids", "tensor(int64)", ["batch", "seq"]),
        ("attention_mask", "tensor(int64)", ["batch", "seq"]),
    ]
    assert [o.name for o in session.get_outputs()] == ["output"]
    assert session.get_outputs()[0].type == "tensor(float)"
    for case_name in CASES:
        feeds, expected = case(name, case_name)
        for names in (None, [], ["output"]):
            (output,) = session.run(names, feeds)
            assert max_abs(output, expected) <= TOLERANCE


def test_inference_session_from_bytes():
    data = (MODELS / "bert" / "model.onnx").read_bytes()
    session = kiln.InferenceSession(data)
    feeds, expected = case("bert", "b2_s33")
    assert max_abs(session.run(None, feeds)[0], expected) <= TOLERANCE


def test_onnxruntime_agrees():
    ort = pytest.importorskip("onnxruntime")
    path = str(MODELS / "gpt2" / "model.onnx")
    feeds, _ = case("gpt2", "b2_s33")
    theirs = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    ours = kiln.InferenceSession(path).run(None, feeds)
    assert len(ours) == len(theirs) == 1
    assert max_abs(ours[0], theirs[0]) <= TOLERANCE


def test_strided_and_read_only_inputs_give_the_same_outputs():
    model = kiln.compile(MODELS / "bert" / "model.onnx", threads=1)
    feeds, expected = case("bert", "b2_s33")
    # Every other column of a wider array: a strided view, not C-contiguous.
    wide = {k: np.repeat(v, 2, axis=1)[:, ::2] for k, v in feeds.items()}
    assert not wide["input_ids"].flags.c_contiguous
    frozen = {k: v.copy() for k, v in feeds.items()}
    for v in frozen.values():
        v.setflags(write=False)
    # Misaligned: int64 elements one byte into a buffer (numpy allows it; kiln copies them).
    misaligned = {}
    for k, v in feeds.items():
        raw = np.zeros(v.nbytes + 1, np.uint8)
        raw[1:] = v.view(np.uint8).ravel()
        misaligned[k] = np.frombuffer(raw.data, dtype=np.int64, offset=1).reshape(v.shape)
        assert not misaligned[k].flags.aligned
    for given in (wide, frozen, misaligned):
        assert max_abs(model.run(given)["output"], expected) <= TOLERANCE


def test_inputs_are_read_in_place_and_left_unchanged():
    model = kiln.compile(MODELS / "gpt2" / "model.onnx", threads=1)
    feeds, expected = case("gpt2", "b2_s33")
    kept = {k: v.copy() for k, v in feeds.items()}
    for _ in range(3):
        assert max_abs(model.run(feeds)["output"], expected) <= TOLERANCE
    for k, v in feeds.items():
        np.testing.assert_array_equal(v, kept[k])


@pytest.mark.parametrize("name", ["bert", "llama"])
def test_compile_to_and_load(tmp_path, name):
    model = kiln.compile(MODELS / name / "model.onnx", threads=1)
    model.compile_to(tmp_path / "artefact")
    loaded = kiln.load(tmp_path / "artefact", threads=1)
    again = kiln.compile(tmp_path / "artefact")  # an artefact given to compile is loaded
    feeds, expected = case(name, "b2_s33")
    first = model.run(feeds)["output"]
    assert max_abs(first, expected) <= TOLERANCE
    np.testing.assert_array_equal(loaded.run(feeds)["output"], first)
    np.testing.assert_array_equal(again.run(feeds)["output"], first)
    loaded.compile_to(tmp_path / "copy")
    np.testing.assert_array_equal(kiln.load(tmp_path / "copy").run(feeds)["output"], first)


def zero_caches(model, batch, capacity):
    """Zeroed KV-cache arrays of `capacity` positions for every state input of `model`."""
    caches = {}
    for info in model.inputs:
        if info.name.startswith("cache_"):
            shape = [batch if d == "batch" else capacity if d == "capacity" else d
                     for d in info.shape]
            caches[info.name] = np.zeros(shape, dtype=info.dtype)
    return caches


def test_checkpoint_prefill_then_decode_in_place():
    checkpoint = MODELS / "llama"
    feeds, expected = case("llama", "b1_s16")
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    prefill = kiln.compile(checkpoint, threads=1)
    decode = kiln.compile(checkpoint, entry="decode", threads=1)
    caches = zero_caches(prefill, batch=1, capacity=32)
    assert len(caches) == 4
    # The whole prompt at once: the logits match torch's.
    out = prefill.run_in_place(feeds, {k: v.copy() for k, v in caches.items()})
    assert list(out) == ["logits"]
    assert max_abs(out["logits"], expected) <= TOLERANCE
    # 15 tokens, then the 16th decoded against the cache the prefill left in place.
    prefill.run_in_place({"input_ids": ids[:, :15], "attention_mask": mask[:, :15]}, caches)
    assert np.abs(caches["cache_key.0"][:, :, :15]).max() > 0
    assert np.abs(caches["cache_key.0"][:, :, 15:]).max() == 0
    step = decode.run_in_place({"input_ids": ids[:, 15:], "attention_mask": mask}, caches)
    assert max_abs(step["logits"][:, 0], expected[:, 15]) <= TOLERANCE
    assert np.abs(caches["cache_key.0"][:, :, 15]).max() > 0


def test_checkpoint_run_returns_new_states():
    model = kiln.compile(MODELS / "llama", threads=1)
    feeds, expected = case("llama", "b1_s16")
    caches = zero_caches(model, batch=1, capacity=16)
    outputs = model.run({**feeds, **caches})
    assert set(outputs) == {"logits", *caches}
    assert max_abs(outputs["logits"], expected) <= TOLERANCE
    # The caller's arrays were not written: run() updates copies.
    assert all(np.abs(v).max() == 0 for v in caches.values())
    assert np.abs(outputs["cache_value.1"]).max() > 0

"""Shared fixtures of the Python package's tests: the repo's reference models and a private
plan cache, so that the tests neither read nor fill the user's."""

import os
import pathlib
import tempfile

import numpy as np
import pytest

MODELS = pathlib.Path(__file__).resolve().parents[2] / "tests" / "models"
# The reference models of ../shared/models, copied into the repo, and their cases.
FIXTURES = ["bert", "gpt2", "llama"]
CASES = ["b1_s16", "b2_s33"]
# onnxruntime reproduces torch's outputs of the fixtures to within this bound (max abs).
TOLERANCE = 1e-4


@pytest.fixture(autouse=True, scope="session")
def private_plan_cache():
    """Points kiln's plan cache at a directory of this test session."""
    with tempfile.TemporaryDirectory(prefix="kiln-pytest-cache-") as tmp:
        old = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = tmp
        yield tmp
        if old is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = old


def case(name, case_name):
    """The inputs of a fixture's case and torch's output for them."""
    io = MODELS / name / "io"
    feeds = {
        "input_ids": np.load(io / f"{case_name}.input_ids.npy"),
        "attention_mask": np.load(io / f"{case_name}.attention_mask.npy"),
    }
    return feeds, np.load(io / f"{case_name}.output.npy")


def max_abs(actual, expected):
    """The largest absolute difference; infinite when shapes differ or a NaN appears."""
    if actual.shape != expected.shape:
        return float("inf")
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    return float(np.nan_to_num(diff, nan=np.inf).max())

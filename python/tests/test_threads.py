"""One model run from several Python threads at once gives each the outputs of a run alone."""

import threading

import numpy as np

import kiln
from conftest import MODELS, case


def test_two_python_threads_run_one_model():
    model = kiln.compile(MODELS / "bert" / "model.onnx", threads=2)
    cases = [case("bert", c)[0] for c in ("b1_s16", "b2_s33")]
    alone = [model.run(feeds)["output"] for feeds in cases]
    failures = []

    def worker(index):
        feeds = cases[index]
        for _ in range(20):
            out = model.run(feeds)["output"]
            if not np.array_equal(out, alone[index]):
                failures.append(index)

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1, 0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_kernels_run_without_the_gil():
    """While one thread runs the model, another Python thread keeps running."""
    model = kiln.compile(MODELS / "llama" / "model.onnx", threads=1)
    feeds = case("llama", "b2_s33")[0]
    done = threading.Event()
    ticks = []

    def runner():
        for _ in range(30):
            model.run(feeds)
        done.set()

    def counter():
        while not done.is_set():
            ticks.append(1)

    threads = [threading.Thread(target=runner), threading.Thread(target=counter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # With the GIL held through each run, the counter would only run between runs (about 30
    # switches); released, it runs through them.
    assert len(ticks) > 1000, len(ticks)

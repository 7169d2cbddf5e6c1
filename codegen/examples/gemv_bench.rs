//! Memory-bound GEMV (decode) throughput of the GEMM template with a constant B, against a
//! read-bandwidth probe timed in the same run.
//!
//! `cargo run --release -p kiln-codegen [--features llvm] --example gemv_bench [llvm]
//! [name=value ...]`: `llvm` compiles with the LLVM backend (vectors as wide as this CPU has,
//! unless `lanes=` says otherwise); `shapes=576x192,576x49152` and `rows=1,8` keep only these
//! K×N shapes and M, `probe=0` skips the probes; the other arguments set schedule parameters.
//! Arguments `b.name=value` make a second schedule B (the first with these changes, keeping
//! the weights' layout) compared with the first, A, in the same process on the same weights:
//! their passes alternate, and the line gives both medians and the median ratio of the paired
//! passes (B's GB/s over A's). Separate runs, or even two sets of copies in one run, differ
//! by up to 35% with the same kernel on this VM (the physical pages behind the copies), so
//! only kernels compared on the same memory tell small gains apart.
//!
//! It prints, at 1 and 2 threads:
//! - the probe: the template's own 1×4096 @ 4096×65536 GEMV (1 GiB of weights, best run),
//!   of which the percentages are (the machine's plain read bandwidth, a sum over 1 GiB, is
//!   `cargo run --release -p kiln-rt --example read_bandwidth`);
//! - for each decode shape of a SmolLM2-135M-shaped model (K→N: 576→576 q/o, 576→192 k/v,
//!   576→1536 gate/up, 1536→576 down, 576→49152 lm head) and M = 1, 4, 8, the GB/s at which
//!   the weights stream. Each shape rotates through enough distinct copies of its weights
//!   (≥ 256 MiB in all) that every call reads its B from DRAM, as in a real decode step;
//!   one timed run is a pass over every copy, and the figures are the median and (in
//!   brackets) the best of the runs;
//! - the fixed cost of one kernel step (a 1×16×16 product, called repeatedly).
//!
//! The machine is shared: run it a few times and compare medians (and the best runs, which
//! show the undisturbed speed when another process competes for the cores).

use kiln_codegen::templates::gemm::{matmul, ConstantB, Epilogue, MatMulSpec};
use kiln_codegen::templates::{Arg, Built};
use kiln_codegen::{Backend, Schedule};
use kiln_ir::interp::Bindings;
use kiln_ir::Dim;
use kiln_rt::native::NativeKernel;
use kiln_rt::plan::{Binding, KernelStep};
use std::time::Instant;

/// K×N of the decode GEMVs.
const SHAPES: [(usize, usize); 5] = [
    (576, 576),
    (576, 192),
    (576, 1536),
    (1536, 576),
    (576, 49152),
];
/// Rows of A.
const ROWS: [usize; 3] = [1, 4, 8];
/// The least bytes of weights one shape rotates through.
const WORKING_SET: usize = 256 << 20;
/// Timed passes (after one warm-up pass).
const RUNS: usize = 15;

fn main() -> Result<(), String> {
    let (backend, schedule, only) = parse_args()?;
    println!("{}, schedule: {schedule:?}", backend.name());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .map_err(|e| e.to_string())?;
    let mut probe = [f64::NAN; 2];
    if only.probe {
        let big = Gemv::new(1, 4096, 65536, 1, &[&schedule], &backend)?;
        probe = [1, 2].map(|threads| big.rate(&pool, threads).1);
        println!(
            "probe, template GEMV 1x4096x65536 (1 GiB, best run; the 100% below): 1 thread {:.1} GB/s | 2 threads {:.1} GB/s",
            probe[0], probe[1],
        );
    }
    for (k, n) in SHAPES {
        if !only.shapes.is_empty() && !only.shapes.contains(&(k, n)) {
            continue;
        }
        let copies = WORKING_SET.div_ceil(k * n * 4).max(2);
        for m in ROWS {
            if !only.rows.is_empty() && !only.rows.contains(&m) {
                continue;
            }
            let schedules: Vec<&Schedule> = [Some(&schedule), only.versus.as_ref()]
                .into_iter()
                .flatten()
                .collect();
            let gemv = Gemv::new(m, k, n, copies, &schedules, &backend)?;
            let bytes = (k * n * 4) as f64;
            if only.versus.is_some() {
                let show = |threads: usize| {
                    let (a, b, ratio) = gemv.versus(&pool, threads);
                    format!("A {a:.1} GB/s, B {b:.1} GB/s, B/A {ratio:.3}")
                };
                println!("{m}x{k}x{n}: 1 thread {} | 2 threads {}", show(1), show(2));
                continue;
            }
            let show = |threads: usize| {
                let (median, best) = gemv.rate(&pool, threads);
                let share = |rate: f64| 100.0 * rate / probe[threads - 1];
                format!(
                    "{median:.1} GB/s {:.0}% {:.1} us [best {best:.1} GB/s {:.0}%]",
                    share(median),
                    bytes / median / 1e3,
                    share(best)
                )
            };
            println!(
                "{m}x{k}x{n} ({copies} copies, {:.2} MB each): 1 thread {} | 2 threads {}",
                bytes / 1e6,
                show(1),
                show(2)
            );
        }
    }
    let tiny = Gemv::new(1, 16, 16, 1, &[&schedule], &backend)?;
    let cost = [1, 2].map(|threads| tiny.call_cost(&pool, threads));
    println!(
        "fixed cost of a kernel step (1x16x16): 1 thread {:.2} us | 2 threads {:.2} us",
        cost[0], cost[1]
    );
    Ok(())
}

/// Which measurements to make.
struct Only {
    /// K×N shapes (empty: all).
    shapes: Vec<(usize, usize)>,
    /// Rows of A (empty: all).
    rows: Vec<usize>,
    /// Whether to run the probes.
    probe: bool,
    /// The schedule compared with the first (`b.name=value` arguments).
    versus: Option<Schedule>,
}

/// The backend (`llvm`, else Cranelift), the schedule given as `name=value` arguments
/// (`lanes` defaults to the backend's widest vector) and the `shapes=`, `rows=`, `probe=`
/// filters.
fn parse_args() -> Result<(Backend, Schedule, Only), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let llvm = args.iter().any(|a| a == "llvm");
    let backend = kiln_codegen::backend(if llvm { "llvm" } else { "cranelift" })?;
    let mut schedule = Schedule::default().with("lanes", i64::from(backend.lanes()));
    let mut only = Only {
        shapes: vec![],
        rows: vec![],
        probe: true,
        versus: None,
    };
    let mut changes = vec![];
    let number = |v: &str| v.parse::<usize>().map_err(|e| format!("`{v}`: {e}"));
    for arg in args.iter().filter(|a| *a != "llvm") {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("expected llvm or name=value, got `{arg}`"))?;
        match name {
            "shapes" => {
                for shape in value.split(',') {
                    let (k, n) = shape
                        .split_once('x')
                        .ok_or_else(|| format!("expected KxN, got `{shape}`"))?;
                    only.shapes.push((number(k)?, number(n)?));
                }
            }
            "rows" => only.rows = value.split(',').map(number).collect::<Result<_, _>>()?,
            "probe" => only.probe = value != "0",
            _ if name.starts_with("b.") => {
                let value: i64 = value.parse().map_err(|e| format!("`{arg}`: {e}"))?;
                changes.push((name[2..].to_string(), value));
            }
            _ => {
                let value = value.parse().map_err(|e| format!("`{arg}`: {e}"))?;
                schedule = schedule.with(name, value);
            }
        }
    }
    if !changes.is_empty() {
        let b = changes
            .iter()
            .fold(schedule.clone(), |s, (name, value)| s.with(name, *value));
        println!("B schedule: {b:?}");
        only.versus = Some(b);
    }
    Ok((backend, schedule, only))
}

/// One GEMV shape: its compiled kernel, and `copies` built products (each with its own packed
/// weights) sharing A and Y.
struct Gemv {
    /// The kernel and step of each schedule (all read the weights in one layout).
    kernels: Vec<(NativeKernel, KernelStep)>,
    /// The buffer pointers (addresses) of each copy's step.
    pointers: Vec<Vec<Option<usize>>>,
    weight_bytes: usize,
    _built: Vec<Built>,
    _a: Vec<f32>,
    _y: Vec<f32>,
}

impl Gemv {
    fn new(
        m: usize,
        k: usize,
        n: usize,
        copies: usize,
        schedules: &[&Schedule],
        backend: &Backend,
    ) -> Result<Gemv, String> {
        let mut a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
        let mut y = vec![0f32; m * n];
        let weights: Vec<f32> = (0..k * n)
            .map(|i| (i % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let weights = ConstantB::f32(&weights);
        let spec = |b_constant| MatMulSpec {
            a: vec![Dim::from(m), Dim::from(k)],
            b: vec![Dim::from(k), Dim::from(n)],
            b_constant: Some(b_constant),
            epilogue: Epilogue::default(),
        };
        let layout = |b: &Built| -> Vec<String> {
            b.args
                .iter()
                .map(|a| match a {
                    Arg::Constant(c) => c.layout.clone(),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        let mut built = Vec::with_capacity(copies);
        for _ in 0..copies {
            // A fresh source each time, so that every copy packs its own weights.
            let b_constant = ConstantB {
                bytes: bytes::Bytes::copy_from_slice(&weights.bytes),
                transposed: false,
            };
            built.push(matmul(&spec(b_constant), schedules[0])?);
        }
        let mut kernels = vec![];
        for (i, schedule) in schedules.iter().enumerate() {
            let other;
            let b = if i == 0 {
                &built[0]
            } else {
                other = matmul(&spec(weights.clone()), schedule)?;
                if layout(&other) != layout(&built[0]) {
                    return Err(format!("{schedule:?} changes the weights' layout"));
                }
                &other
            };
            let kernel = backend
                .compile_all(std::slice::from_ref(&b.kernel))?
                .remove(0);
            kernels.push((kernel, b.step(0, |_| Binding::Read(0), "gemv")));
        }
        drop(weights);
        let (a_ptr, y_ptr) = (a.as_mut_ptr() as usize, y.as_mut_ptr() as usize);
        let pointers = built
            .iter()
            .map(|b| {
                b.args
                    .iter()
                    .map(|arg| match arg {
                        Arg::Input(0) => Some(a_ptr),
                        Arg::Output(0) => Some(y_ptr),
                        Arg::Constant(c) => Some(c.bytes.get().as_ptr() as usize),
                        Arg::Scratch(_) => None,
                        other => panic!("unexpected argument {other:?}"),
                    })
                    .collect()
            })
            .collect();
        Ok(Gemv {
            kernels,
            pointers,
            weight_bytes: k * n * 4,
            _built: built,
            _a: a,
            _y: y,
        })
    }

    /// One call of copy `i` on `chunks` chunks with the first schedule.
    fn call(&self, i: usize, chunks: usize) {
        self.call_with(0, i, chunks)
    }

    /// One call of copy `i` on `chunks` chunks with schedule `s`.
    fn call_with(&self, s: usize, i: usize, chunks: usize) {
        let (kernel, step) = &self.kernels[s];
        let pointers: Vec<Option<*mut u8>> = self.pointers[i]
            .iter()
            .map(|p| p.map(|p| p as *mut u8))
            .collect();
        // SAFETY: A holds M×K and Y M×N elements, and the constants are the built ones, the
        // shapes the template was built for.
        unsafe {
            step.launch(kernel, &pointers, &Bindings::default(), chunks)
                .expect("launch")
        }
    }

    /// GB/s of weights over passes through every copy on `threads`: the median and the best
    /// of [`RUNS`].
    fn rate(&self, pool: &rayon::ThreadPool, threads: usize) -> (f64, f64) {
        let pass = || {
            let start = Instant::now();
            for i in 0..self.pointers.len() {
                self.call(i, threads);
            }
            start.elapsed().as_secs_f64()
        };
        let mut times: Vec<f64> = (0..RUNS + 1)
            .map(|_| {
                if threads > 1 {
                    pool.install(pass)
                } else {
                    pass()
                }
            })
            .skip(1)
            .collect();
        times.sort_by(f64::total_cmp);
        let bytes = (self.weight_bytes * self.pointers.len()) as f64;
        (bytes / times[RUNS / 2] / 1e9, bytes / times[0] / 1e9)
    }

    /// The median GB/s of schedules A and B over alternating passes through every copy on
    /// `threads`, and the median of the paired ratios (B's GB/s over A's).
    fn versus(&self, pool: &rayon::ThreadPool, threads: usize) -> (f64, f64, f64) {
        let pass = |s: usize| {
            let start = Instant::now();
            for i in 0..self.pointers.len() {
                self.call_with(s, i, threads);
            }
            start.elapsed().as_secs_f64()
        };
        let timed = |s| {
            if threads > 1 {
                pool.install(|| pass(s))
            } else {
                pass(s)
            }
        };
        let (mut a, mut b, mut ratio) = (vec![], vec![], vec![]);
        for round in 0..=2 * RUNS {
            let (ta, tb) = if round % 2 == 0 {
                (timed(0), timed(1))
            } else {
                let tb = timed(1);
                (timed(0), tb)
            };
            if round > 0 {
                a.push(ta);
                b.push(tb);
                ratio.push(ta / tb);
            }
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let bytes = (self.weight_bytes * self.pointers.len()) as f64 / 1e9;
        (bytes / median(a), bytes / median(b), median(ratio))
    }

    /// Microseconds per call of copy 0 on `threads` (median of 7 batches of 2000 calls).
    fn call_cost(&self, pool: &rayon::ThreadPool, threads: usize) -> f64 {
        let batch = || {
            let start = Instant::now();
            for _ in 0..2000 {
                self.call(0, threads);
            }
            start.elapsed().as_secs_f64() / 2000.0 * 1e6
        };
        let mut times: Vec<f64> = (0..7)
            .map(|_| {
                if threads > 1 {
                    pool.install(batch)
                } else {
                    batch()
                }
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[3]
    }
}

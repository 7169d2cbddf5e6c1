//! Throughput of the GEMM template: B constant (packed at build time) on one thread and on
//! two, and B a group input (read in place) on one thread.
//!
//! `cargo run --release -p kiln-codegen [--features llvm] --example gemm_bench [llvm]
//! [name=value ...]`: `llvm` compiles with the LLVM backend (vectors as wide as this CPU has,
//! unless `lanes=` says otherwise) instead of Cranelift; the other arguments set schedule
//! parameters (`mr=8 unroll=4`). For each M×K×N shape it prints the
//! median (and best) time of 11 timed runs after 2 warm-up runs, and the GFLOP/s (2·M·K·N
//! flops per run). The machine is shared: run it a few times and take the best medians.

use kiln_codegen::templates::gemm::{matmul, ConstantB, Epilogue, MatMulSpec};
use kiln_codegen::templates::Built;
use kiln_codegen::{Backend, Schedule};
use kiln_ir::interp::Bindings;
use kiln_ir::Dim;
use kiln_rt::native::NativeKernel;
use std::time::Instant;

/// M×K×N: decoding (M = 1, 7), then the prefill shapes of the acceptance figures.
const SHAPES: [(usize, usize, usize); 6] = [
    (1, 768, 2304),
    (7, 768, 768),
    (128, 384, 1536),
    (128, 1536, 384),
    (512, 768, 768),
    (1024, 1024, 1024),
];
const RUNS: usize = 11;

fn main() -> Result<(), String> {
    let (backend, schedule) = parse_args()?;
    println!("{}, schedule: {schedule:?}", backend.name());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .map_err(|e| e.to_string())?;
    for (m, k, n) in SHAPES {
        let mut a = values(m * k, 2);
        let mut b = values(k * n, 1);
        let mut y = vec![0f32; m * n];
        let spec = |b_constant| MatMulSpec {
            a: vec![Dim::from(m), Dim::from(k)],
            b: vec![Dim::from(k), Dim::from(n)],
            b_constant,
            epilogue: Epilogue::default(),
        };
        let packed = Bench::new(&spec(Some(ConstantB::f32(&b))), &schedule, &backend)?;
        let direct = Bench::new(&spec(None), &schedule, &backend)?;
        // Addresses, so that the two-thread run may capture them.
        let buffers = [a.as_mut_ptr(), b.as_mut_ptr(), y.as_mut_ptr()].map(|p| p as usize);
        let one = packed.time(buffers, 1)?;
        let two = pool.install(|| packed.time(buffers, 2))?;
        let input = direct.time(buffers, 1)?;
        let flops = 2.0 * (m * k * n) as f64;
        let show = |(median, best): (f64, f64)| {
            let gflops = |ms: f64| flops / ms / 1e6;
            format!(
                "{median:.3} ms {:.1} GFLOP/s (best {:.1})",
                gflops(median),
                gflops(best)
            )
        };
        println!(
            "{m}x{k}x{n}: constant B, 1 thread {} | 2 threads {} | input B, 1 thread {}",
            show(one),
            show(two),
            show(input)
        );
    }
    Ok(())
}

/// `len` values in [-0.5, 0.5).
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// The backend (`llvm`, else Cranelift) and the schedule given as `name=value` arguments;
/// `lanes` defaults to the backend's widest vector.
fn parse_args() -> Result<(Backend, Schedule), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let llvm = args.iter().any(|a| a == "llvm");
    let backend = kiln_codegen::backend(if llvm { "llvm" } else { "cranelift" })?;
    let base = Schedule::default().with("lanes", i64::from(backend.lanes()));
    let schedule = args
        .iter()
        .filter(|a| *a != "llvm")
        .try_fold(base, |s, arg| {
            let (name, value) = arg
                .split_once('=')
                .ok_or_else(|| format!("expected llvm or name=value, got `{arg}`"))?;
            let value = value.parse().map_err(|e| format!("`{arg}`: {e}"))?;
            Ok::<_, String>(s.with(name, value))
        })?;
    Ok((backend, schedule))
}

/// A built and compiled product.
struct Bench {
    built: Built,
    kernel: NativeKernel,
}

impl Bench {
    fn new(spec: &MatMulSpec, schedule: &Schedule, backend: &Backend) -> Result<Bench, String> {
        let built = matmul(spec, schedule)?;
        let kernel = backend
            .compile_all(std::slice::from_ref(&built.kernel))?
            .remove(0);
        Ok(Bench { built, kernel })
    }

    /// The median and the best time in ms of [`RUNS`] calls (after two warm-up calls) on the
    /// `[a, b, y]` buffers (addresses) with the parallel axis in `chunks`.
    fn time(&self, buffers: [usize; 3], chunks: usize) -> Result<(f64, f64), String> {
        let [a, b, y] = buffers.map(|p| p as *mut u8);
        let bindings = Bindings::default();
        let mut times = Vec::with_capacity(RUNS);
        for run in 0..RUNS + 2 {
            let start = Instant::now();
            // SAFETY: A holds M×K, B K×N and Y M×N elements, the shapes the template was
            // built for.
            unsafe {
                self.built
                    .call(&self.kernel, &[a, b], &[y], &bindings, chunks)?
            };
            if run >= 2 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        Ok((times[RUNS / 2], times[0]))
    }
}

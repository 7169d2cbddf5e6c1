//! Times the row-reduction kernels (Softmax and LayerNorm) on transformer-sized rows against a
//! plain Rust loop: `cargo run --release -p kiln-codegen --example rows_bench`.

use kiln_codegen::cranelift::compile;
use kiln_codegen::templates::rows::{rows, RowInput, RowOp, RowSpec};
use kiln_codegen::Schedule;
use kiln_ir::interp::Bindings;
use kiln_ir::Dim;
use std::time::Instant;

/// Best wall time of `f` in microseconds over enough runs to take about 0.2 s (the minimum is
/// the least disturbed by other load on the machine).
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    f();
    let once = start.elapsed().as_secs_f64().max(1e-7);
    let runs = ((0.2 / once) as usize).clamp(5, 5000);
    let times: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.into_iter().fold(f64::INFINITY, f64::min)
}

/// Plain Rust softmax over rows of `cols` (the compiler's auto-vectorisation, libm exp).
fn rust_softmax(x: &[f32], y: &mut [f32], cols: usize) {
    for (xr, yr) in x.chunks(cols).zip(y.chunks_mut(cols)) {
        let max = xr.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0;
        for (o, &v) in yr.iter_mut().zip(xr) {
            *o = (v - max).exp();
            sum += *o;
        }
        let inv = 1.0 / sum;
        yr.iter_mut().for_each(|o| *o *= inv);
    }
}

/// Plain Rust two-pass LayerNorm over rows of `cols`.
fn rust_layer_norm(x: &[f32], g: &[f32], b: &[f32], y: &mut [f32], cols: usize) {
    for (xr, yr) in x.chunks(cols).zip(y.chunks_mut(cols)) {
        let mean = xr.iter().sum::<f32>() / cols as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
        let inv = 1.0 / (var + 1e-5).sqrt();
        for (c, (o, &v)) in yr.iter_mut().zip(xr).enumerate() {
            *o = (v - mean) * inv * g[c] + b[c];
        }
    }
}

fn main() {
    for (rows_n, cols) in [(128 * 12, 128), (128, 768)] {
        let n = rows_n * cols;
        let mut x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let mut g: Vec<f32> = (0..cols).map(|i| 1.0 + i as f32 / cols as f32).collect();
        let mut b: Vec<f32> = (0..cols).map(|i| i as f32 / cols as f32).collect();
        let mut y = vec![0f32; n];
        let shape = vec![Dim::sym("rows"), Dim::known(cols as i64)];
        let bindings: Bindings = [("rows".to_string(), rows_n as i64)].into();
        for (label, op) in [
            ("softmax", RowOp::Softmax),
            ("layernorm", RowOp::LayerNorm { epsilon: 1e-5 }),
        ] {
            let param = || Some(RowInput::new(vec![Dim::known(cols as i64)]));
            let inputs = match op {
                RowOp::Softmax => vec![Some(RowInput::new(shape.clone()))],
                _ => vec![Some(RowInput::new(shape.clone())), param(), param()],
            };
            let spec = RowSpec {
                op,
                inputs,
                axis: 1,
                sum_output: false,
            };
            let ptrs: Vec<*mut u8> = vec![
                x.as_mut_ptr().cast(),
                g.as_mut_ptr().cast(),
                b.as_mut_ptr().cast(),
            ];
            let out = [y.as_mut_ptr().cast::<u8>()];
            for (sched_label, schedule) in [
                ("unroll1", Schedule::default().with("unroll", 1)),
                ("unroll2", Schedule::default().with("unroll", 2)),
                ("unroll4", Schedule::default().with("unroll", 4)),
                ("scalar", Schedule::default().with("lanes", 1)),
            ] {
                let built = rows(&spec, &schedule).unwrap();
                let kernel = compile(&built.kernel).unwrap();
                for chunks in [1, 2] {
                    let us = time(|| {
                        // SAFETY: the buffers have the shapes the spec declares.
                        unsafe { built.call(&kernel, &ptrs, &out, &bindings, chunks) }.unwrap()
                    });
                    let gbs = (2 * n * 4) as f64 / us / 1e3;
                    println!("[{rows_n}, {cols}] {label:9} {sched_label:7} {chunks} thread(s): {us:8.1} us ({gbs:.1} GB/s in+out)");
                }
            }
            let us = time(|| match op {
                RowOp::Softmax => rust_softmax(&x, &mut y, cols),
                _ => rust_layer_norm(&x, &g, &b, &mut y, cols),
            });
            println!("[{rows_n}, {cols}] {label:9} plain Rust 1 thread(s): {us:8.1} us");
        }
    }
}

//! The machine's DRAM read bandwidth, the yardstick of memory-bound benchmarks: the sum of a
//! 1 GiB f32 buffer (far above any L3), on 1 and on 2 threads (each summing half), the median
//! of 7 timed passes after one warm-up.
//!
//! `cargo run --release -p kiln-rt --example read_bandwidth` prints one line per thread
//! count: `PROBE threads=1 gb_per_s=31.2`.

use std::time::Instant;

const BYTES: usize = 1 << 30;
const PASSES: usize = 7;

fn main() {
    let data: Vec<f32> = (0..BYTES / 4).map(|i| (i % 7) as f32).collect();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a thread pool");
        let mut seconds = vec![];
        let mut total = 0f32;
        for pass in 0..=PASSES {
            let start = Instant::now();
            let sum = pool.install(|| sum_parallel(&data, threads));
            if pass > 0 {
                seconds.push(start.elapsed().as_secs_f64());
            }
            total += sum;
        }
        seconds.sort_by(f64::total_cmp);
        let median = seconds[seconds.len() / 2];
        // The sum is printed so that the passes cannot be optimised away.
        println!(
            "PROBE threads={threads} gb_per_s={:.2} checksum={total}",
            BYTES as f64 / median / 1e9
        );
    }
}

/// The sum of `data` in `parts` contiguous parts, one rayon task each.
fn sum_parallel(data: &[f32], parts: usize) -> f32 {
    let chunk = data.len().div_ceil(parts);
    let mut sums = vec![0f32; parts];
    rayon::scope(|s| {
        for (part, out) in data.chunks(chunk).zip(sums.iter_mut()) {
            s.spawn(move |_| *out = sum(part));
        }
    });
    sums.iter().sum()
}

/// A sum in 16 independent lanes, which the compiler vectorises.
fn sum(data: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut blocks = data.chunks_exact(16);
    for block in &mut blocks {
        for (l, x) in lanes.iter_mut().zip(block) {
            *l += x;
        }
    }
    lanes.iter().sum::<f32>() + blocks.remainder().iter().sum::<f32>()
}

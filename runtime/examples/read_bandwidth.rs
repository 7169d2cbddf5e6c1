//! The machine's DRAM read bandwidth, the yardstick of memory-bound benchmarks: the sum of a
//! 1 GiB f32 buffer (far above any L3; in 512-bit vectors where the CPU has AVX-512), on 1
//! and on 2 threads (each summing half), the median of 7 timed passes after one warm-up.
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

/// A sum of `data`: with AVX-512 where the CPU has it (4 chains of 16 lanes), else 32
/// independent lanes that the compiler vectorises.
fn sum(data: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { sum_avx512(data) };
    }
    let mut acc = [0f32; 32];
    let chunks = data.chunks_exact(32);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (a, x) in acc.iter_mut().zip(chunk) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// [`sum`] in 512-bit vectors: 4 chains of 16 lanes, 256 bytes per iteration.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_avx512(data: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 4];
    let chunks = data.chunks_exact(64);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: the chunk holds 64 elements, 16 from 16 * j.
            *a = _mm512_add_ps(*a, unsafe { _mm512_loadu_ps(chunk.as_ptr().add(16 * j)) });
        }
    }
    let total = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(total) + rest
}

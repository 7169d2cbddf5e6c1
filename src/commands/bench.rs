//! `kiln bench`: latency of the compiled model (median and min after warm-up), compile time
//! and peak memory; for a model with states (a decode entry point's KV cache, updated in
//! place), tokens per second and the rate at which a run reads its weights and caches.

use crate::compiled::{BackendArg, CacheArgs};
use crate::inputs::{random_feeds, read_feeds, RandomSizes};
use clap::Args;
use kiln::pipeline::Program;
use kiln_rt::StateBuffer;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `kiln bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// The model (.onnx file, Hugging Face checkpoint or artefact directory).
    model: PathBuf,
    /// An input as NAME=FILE.npy (repeat); inputs not given are random.
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Sequence length of random inputs.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// KV cache length of random inputs (decode entry points: a symbol named `past`; a cache's
    /// `capacity` is `past + seq`).
    #[arg(long, default_value_t = 16)]
    past: usize,
    /// Batch size of random inputs.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Threads for the compiled kernels.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    #[command(flatten)]
    code: BackendArg,
    /// Compile the graph as exported, without the rewrite rules (to measure what fusion buys).
    #[arg(long)]
    unfused: bool,
    /// Also time each step: the median time per group kind over the runs (BENCH keys
    /// `KIND_ms`) and the slowest steps of the last run.
    #[arg(long)]
    profile: bool,
    /// Timed runs (after 3 warm-up runs).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    #[command(flatten)]
    cache: CacheArgs,
}

impl BenchArgs {
    /// The sizes of random inputs.
    fn sizes(&self) -> RandomSizes {
        RandomSizes {
            batch: self.batch,
            seq: self.seq,
            past: self.past,
        }
    }
}

/// Times the compiled model and prints the figures (one `key=value` line for scripts too).
pub fn bench(args: &BenchArgs) -> Result<(), String> {
    let pipeline = args.cache.pipeline(
        args.code.backend.clone(),
        args.threads as usize,
        !args.unfused,
    );
    let program = pipeline.open(&args.model)?;
    let mut feeds = read_feeds(&args.inputs)?;
    let inputs: Vec<&kiln_ir::Value> = program.inputs().collect();
    random_feeds(&inputs, &mut feeds, args.sizes(), 1)?;
    // States are lent to every run, as a decode loop lends its KV cache: each run writes its
    // new rows into them, nothing is copied.
    let plan = program.plan();
    let mut states: Vec<(String, kiln_ir::Tensor)> = plan
        .states()
        .iter()
        .filter_map(|&(i, _)| {
            let name = &plan.values[plan.inputs[i]].name;
            feeds.remove_entry(name)
        })
        .collect();
    let state_bytes: usize = states.iter().map(|(_, t)| t.len() * t.dtype().size()).sum();
    let mut run = || {
        let mut lent = states
            .iter_mut()
            .map(|(name, t)| (name.clone(), StateBuffer::of_tensor(t)))
            .collect();
        program
            .run_in_place(&feeds, &mut lent)
            .map_err(|e| format!("{}: {e}", args.model.display()))
    };
    let mut stats = Default::default();
    for _ in 0..3 {
        stats = run()?.1;
    }
    let mut times = Vec::with_capacity(args.runs as usize);
    let mut kinds: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..args.runs {
        let start = Instant::now();
        stats = run()?.1;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        if args.profile {
            for (kind, s) in time_by_kind(&program, &stats.step_seconds) {
                kinds.entry(kind).or_default().push(s * 1e3);
            }
        }
    }
    // Per kind, the median over the runs (milliseconds).
    let kinds: BTreeMap<String, f64> = kinds
        .into_iter()
        .map(|(kind, mut ms)| {
            ms.sort_by(f64::total_cmp);
            (kind, ms[ms.len() / 2])
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let min = times[0];
    let c = program.stats();
    println!(
        "{}: batch {} seq {} threads {}: median {median:.3} ms, min {min:.3} ms over {} runs",
        args.model.display(),
        args.batch,
        args.seq,
        args.threads,
        args.runs
    );
    println!(
        "compile {:.3} s ({} kernels, {} interpreted nodes); arena peak {:.2} MiB of {:.2} MiB intermediates; peak RSS {}",
        c.seconds,
        c.kernels,
        c.interpreted,
        stats.arena_peak as f64 / 1048576.0,
        stats.arena_total as f64 / 1048576.0,
        peak_rss().map_or("unknown".into(), |kb| format!("{:.1} MiB", kb as f64 / 1024.0))
    );
    let weight_bytes = streamed_constant_bytes(plan);
    let read = weight_bytes as f64 + state_bytes as f64;
    let rates = match state_bytes {
        0 => String::new(),
        _ => {
            let tokens = (args.batch * args.seq) as f64 / (median / 1e3);
            println!(
                "{tokens:.1} tokens/s; {:.1} GB/s read: {:.1} MiB of weights (gathered tables aside) and {:.1} MiB of caches per run",
                read / (median / 1e3) / 1e9,
                weight_bytes as f64 / 1048576.0,
                state_bytes as f64 / 1048576.0
            );
            format!(
                " tokens_per_s={tokens:.2} read_gb_per_s={:.3} weight_bytes={weight_bytes} state_bytes={state_bytes}",
                read / (median / 1e3) / 1e9
            )
        }
    };
    let mut by_kind = String::new();
    if args.profile {
        print_profile(&program, &stats.step_seconds, &kinds);
        for (kind, ms) in &kinds {
            by_kind += &format!(" {kind}_ms={ms:.4}");
        }
        let interp = kinds.get("interp").copied().unwrap_or(0.0);
        let share = 100.0 * interp / median;
        println!("interpreter: {interp:.3} ms of the {median:.3} ms median run ({share:.1}%)");
        by_kind += &format!(" interp_share_pct={share:.2}");
    }
    println!(
        "BENCH median_ms={median:.4} min_ms={min:.4} compile_s={:.4} arena_peak_bytes={} arena_total_bytes={}{rates}{by_kind}",
        c.seconds, stats.arena_peak, stats.arena_total
    );
    Ok(())
}

/// The bytes of the constants a run reads whole: all but the tables that gathers index (an
/// embedding, of which a run reads one row per token).
fn streamed_constant_bytes(plan: &kiln_rt::plan::Plan) -> u64 {
    use kiln_rt::plan::{Binding, Step};
    let mut indexed = std::collections::HashSet::new();
    for step in &plan.steps {
        let Step::Kernel(k) = step else { continue };
        if k.index_check.is_none() {
            continue;
        }
        for arg in &k.args {
            match arg {
                Binding::Constant(c) => {
                    indexed.insert(*c);
                }
                Binding::Read(v) => {
                    let c = plan.constants.iter().position(|c| c.value == Some(*v));
                    indexed.extend(c);
                }
                _ => {}
            }
        }
    }
    let all = plan.constants.iter().enumerate();
    all.filter(|(c, _)| !indexed.contains(c))
        .map(|(_, c)| c.bytes)
        .sum()
}

/// The process's peak resident memory in KiB (Linux), if known.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The seconds of one run's steps summed by the kind of their group (`interp` for the
/// interpreter's).
fn time_by_kind(program: &Program, seconds: &[f64]) -> BTreeMap<String, f64> {
    let mut by_kind = BTreeMap::new();
    for (r, s) in program.reports().iter().zip(seconds) {
        *by_kind.entry(step_kind(r).to_string()).or_default() += s;
    }
    by_kind
}

/// The kind a step is reported as.
fn step_kind(r: &kiln_rt::plan::Report) -> &str {
    if r.fallback.is_some() {
        "interp"
    } else {
        r.kind.as_str()
    }
}

/// The time per group kind (`kinds`: medians over the runs, in ms) and the 15 slowest steps
/// of the last run.
fn print_profile(program: &Program, seconds: &[f64], kinds: &BTreeMap<String, f64>) {
    let reports = program.reports();
    println!("time by kind (median of the runs):");
    for (kind, ms) in kinds {
        println!("  {kind:<12} {ms:>9.3} ms");
    }
    let mut order: Vec<usize> = (0..seconds.len().min(reports.len())).collect();
    order.sort_by(|&a, &b| seconds[b].total_cmp(&seconds[a]));
    println!("slowest steps (last run):");
    for &i in order.iter().take(15) {
        let r = &reports[i];
        let kind = step_kind(r);
        println!(
            "  {:>9.3} ms  {kind:<12} {}",
            seconds[i] * 1e3,
            r.nodes.join(" + ")
        );
    }
}

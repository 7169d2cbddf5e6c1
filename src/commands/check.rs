//! `kiln check`: runs the compiled model and the reference interpreter on the same inputs
//! (given .npy files, random ones, or both) and compares every output.

use crate::compiled::{BackendArg, CacheArgs};
use crate::inputs::{random_feeds, read_feeds, RandomSizes};
use clap::Args;
use kiln::pipeline::{entry_name, load_model, Entry};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `kiln check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The model (.onnx file, Hugging Face checkpoint or artefact directory).
    model: PathBuf,
    /// An input as NAME=FILE.npy (repeat); inputs not given are random.
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Sequence length of random inputs.
    #[arg(long, default_value_t = 16)]
    seq: usize,
    /// KV cache length of random inputs (decode entry points: a symbol named `past`).
    #[arg(long, default_value_t = 16)]
    past: usize,
    /// Batch size of random inputs.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Random input sets to try (besides the given inputs, if all are given).
    #[arg(long, default_value_t = 2)]
    trials: u64,
    /// Largest accepted `|compiled - reference| / max(1, |reference|)`.
    #[arg(long, default_value_t = 1e-4)]
    tolerance: f64,
    /// Threads for the compiled kernels.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    #[command(flatten)]
    code: BackendArg,
    /// The model an artefact was compiled from, whose interpreter run is the reference
    /// (required when MODEL is an artefact: an artefact holds a compiled plan, not a graph).
    #[arg(long, value_name = "MODEL")]
    reference: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
}

impl CheckArgs {
    /// The sizes of random inputs.
    fn sizes(&self) -> RandomSizes {
        RandomSizes {
            batch: self.batch,
            seq: self.seq,
            past: self.past,
        }
    }
}

/// Compares the compiled model with the interpreter; exit 1 when an output is over tolerance.
pub fn check(args: &CheckArgs) -> Result<ExitCode, String> {
    let pipeline = args
        .cache
        .pipeline(args.code.backend.clone(), args.threads as usize, true);
    let (graph, program) = match (&args.reference, kiln_rt::artifact::is_artifact(&args.model)) {
        (Some(reference), true) => (
            reference_graph(reference, &args.model)?,
            pipeline.open(&args.model)?,
        ),
        (None, true) => {
            return Err(format!(
                "{}: an artefact holds a compiled plan, not a graph; give the model it was compiled from with --reference MODEL",
                args.model.display()
            ))
        }
        (Some(_), false) => {
            return Err(format!(
                "{}: --reference is for checking an artefact against the model it was compiled from",
                args.model.display()
            ))
        }
        (None, false) => {
            let graph = load_model(&args.model)?;
            let program = pipeline
                .compile(&graph)
                .map_err(|e| format!("{}: {e}", args.model.display()))?;
            (graph, program)
        }
    };
    let given = read_feeds(&args.inputs)?;
    let stats = program.stats();
    // The report is printed once every trial has run, so that an error leaves stdout empty.
    let mut report = vec![format!(
        "{}: {} kernels, {} interpreted nodes, {} views, compiled in {:.3} s",
        args.model.display(),
        stats.kernels,
        stats.interpreted,
        stats.views,
        stats.seconds
    )];
    let mut worst = 0f64;
    for trial in 0..args.trials.max(1) {
        let mut feeds = given.clone();
        let inputs: Vec<&kiln_ir::Value> = graph.inputs().map(|v| graph.value(v)).collect();
        random_feeds(&inputs, &mut feeds, args.sizes(), trial + 1)?;
        let want = kiln_ir::interp::run(&graph, &feeds)
            .map_err(|e| format!("{}: interpreter: {e}", args.model.display()))?;
        let (got, _) = program
            .run(&feeds)
            .map_err(|e| format!("{}: {e}", args.model.display()))?;
        for ((name, w), (_, g)) in want.iter().zip(&got) {
            if w.shape() != g.shape() || w.dtype() != g.dtype() {
                return Err(format!(
                    "{}: output `{name}` is {}{:?} compiled but {}{:?} on the interpreter",
                    args.model.display(),
                    g.dtype(),
                    g.shape(),
                    w.dtype(),
                    w.shape()
                ));
            }
            let err = w
                .to_f64_array()
                .iter()
                .zip(g.to_f64_array().iter())
                .map(|(w, g)| {
                    if w == g {
                        0.0
                    } else {
                        (w - g).abs() / w.abs().max(1.0)
                    }
                })
                .fold(
                    0f64,
                    |a, b| if b.is_nan() { f64::INFINITY } else { a.max(b) },
                );
            report.push(format!(
                "trial {trial}: {name} {:?} max error {err:.3e}",
                g.shape()
            ));
            worst = worst.max(err);
        }
        if given.len() == graph.inputs().count() {
            break;
        }
    }
    let ok = worst <= args.tolerance;
    for line in report {
        println!("{line}");
    }
    println!(
        "{}: max error {worst:.3e} (tolerance {:.1e})",
        if ok { "ok" } else { "FAILED" },
        args.tolerance
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The graph `artifact` was compiled from: the model at `reference`, or, for a causal
/// checkpoint, its entry point that the artefact's directory is named after (`decode`,
/// else `prefill`).
fn reference_graph(reference: &Path, artifact: &Path) -> Result<kiln_ir::Graph, String> {
    if reference.is_dir() {
        let hf = kiln_frontends::hf::HfModel::open(reference)?;
        if hf.is_causal() {
            let entry = match artifact.file_name() {
                Some(n) if n == entry_name(Entry::Decode) => Entry::Decode,
                _ => Entry::Prefill,
            };
            return hf.graph(entry);
        }
    }
    load_model(reference)
}

//! `kiln compile`: compile a model ahead of time into an artefact directory (shared library of
//! kernels, graph, weights, C header) that `kiln run` and the C API load with no JIT.

use crate::compiled::BackendArg;
use crate::generation::model_files::GENERATION_FILES;
use clap::Args;
use kiln::pipeline::{entry_name, load_model, ArtifactSummary, Options, Pipeline};
use kiln_frontends::hf::{Entry, HfModel};
use kiln_ir::Graph;
use std::path::{Path, PathBuf};

/// Arguments of `kiln compile`.
#[derive(Args)]
pub struct CompileArgs {
    /// The model (.onnx file or Hugging Face checkpoint directory).
    model: PathBuf,
    /// The artefact directory to write. A causal checkpoint gets two artefacts, one per entry
    /// point, OUTPUT/prefill and OUTPUT/decode, that share OUTPUT/weights.bin, and a copy of
    /// its config.json (for `kiln generate OUTPUT`).
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Compile the graph as exported, without the rewrite rules.
    #[arg(long)]
    unfused: bool,
    #[command(flatten)]
    code: BackendArg,
}

/// Compiles the model (each entry point of a causal checkpoint, sharing one weights file)
/// into artefacts.
pub fn compile(args: &CompileArgs) -> Result<(), String> {
    let entries: Vec<(Graph, &str)> = match causal_checkpoint(&args.model)? {
        Some(hf) => vec![
            (hf.graph(Entry::Prefill)?, entry_name(Entry::Prefill)),
            (hf.graph(Entry::Decode)?, entry_name(Entry::Decode)),
        ],
        None => vec![(load_model(&args.model)?, "")],
    };
    let entries: Vec<(&Graph, &str)> = entries.iter().map(|(g, n)| (g, *n)).collect();
    let options = Options {
        threads: 1,
        backend: args.code.backend.clone(),
    };
    let summaries = Pipeline::new(options)
        .fused(!args.unfused)
        .write_artifacts(&entries, &args.output)
        .map_err(|e| format!("{}: {e}", args.model.display()))?;
    if entries.len() > 1 {
        // `kiln generate` reads the model's configuration, tokenizer and chat template next
        // to its entry points.
        for name in GENERATION_FILES {
            let (from, to) = (args.model.join(name), args.output.join(name));
            if from.is_file() {
                std::fs::copy(&from, &to).map_err(|e| format!("{}: {e}", to.display()))?;
            }
        }
    }
    for ((_, name), summary) in entries.iter().zip(&summaries) {
        match *name {
            "" => report(&args.output, summary),
            _ => report(&args.output.join(name), summary),
        }
    }
    if let Some(s) = summaries.first() {
        println!(
            "{}: kernels.so {:.1} KiB (code generated and linked in {:.2} s), weights.bin \
             {:.1} MiB",
            args.output.display(),
            s.library_bytes as f64 / 1024.0,
            s.compile_seconds,
            s.weights_bytes as f64 / (1024.0 * 1024.0),
        );
    }
    Ok(())
}

/// The checkpoint at `path` if it is a causal language model (two entry points).
fn causal_checkpoint(path: &Path) -> Result<Option<HfModel>, String> {
    if !path.is_dir() || kiln_rt::artifact::is_artifact(path) {
        return Ok(None);
    }
    let hf = HfModel::open(path)?;
    Ok(hf.is_causal().then_some(hf))
}

fn report(dir: &Path, s: &ArtifactSummary) {
    println!(
        "{}: {} kernel steps ({} distinct kernels), {} nodes on the interpreter; lowered in \
         {:.2} s, weights written in {:.2} s",
        dir.display(),
        s.kernels,
        s.distinct_kernels,
        s.interpreted,
        s.lowering_seconds,
        s.weights_seconds,
    );
}

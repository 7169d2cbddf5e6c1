//! `kiln compile`: compile a model ahead of time into an artefact directory (shared library of
//! kernels, graph, weights, C header) that `kiln run` and the C API load with no JIT.

use crate::compiled::optimized;
use crate::model;
use clap::Args;
use kiln_codegen::runtime::artifact::{write_artifact, ArtifactSummary};
use kiln_frontends::hf::{Entry, HfModel};
use kiln_ir::Graph;
use std::path::{Path, PathBuf};

/// Arguments of `kiln compile`.
#[derive(Args)]
pub struct CompileArgs {
    /// The model (.onnx file or Hugging Face checkpoint directory).
    model: PathBuf,
    /// The artefact directory to write. A causal checkpoint gets two artefacts, one per entry
    /// point: OUTPUT/prefill and OUTPUT/decode.
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// Compile the graph as exported, without the rewrite rules.
    #[arg(long)]
    unfused: bool,
}

/// Compiles the model (each entry point of a causal checkpoint) into artefacts.
pub fn compile(args: &CompileArgs) -> Result<(), String> {
    let entries: Vec<(Graph, PathBuf)> = match causal_checkpoint(&args.model)? {
        Some(hf) => vec![
            (hf.graph(Entry::Prefill)?, args.output.join("prefill")),
            (hf.graph(Entry::Decode)?, args.output.join("decode")),
        ],
        None => vec![(model::load(&args.model)?, args.output.clone())],
    };
    for (graph, dir) in entries {
        let graph = if args.unfused {
            graph
        } else {
            optimized(&graph, &args.model)?
        };
        let summary = write_artifact(&graph, &dir)?;
        report(&dir, &summary);
    }
    Ok(())
}

/// The checkpoint at `path` if it is a causal language model (two entry points).
fn causal_checkpoint(path: &Path) -> Result<Option<HfModel>, String> {
    if !path.is_dir() || kiln_codegen::runtime::artifact::is_artifact(path) {
        return Ok(None);
    }
    let hf = HfModel::open(path)?;
    Ok(hf.is_causal().then_some(hf))
}

fn report(dir: &Path, s: &ArtifactSummary) {
    println!(
        "{}: {} kernel steps ({} distinct kernels, kernels.so {:.1} KiB), {} nodes on the \
         interpreter, weights.bin {:.1} MiB, {:.2} s",
        dir.display(),
        s.kernels,
        s.distinct_kernels,
        s.library_bytes as f64 / 1024.0,
        s.interpreted,
        s.weights_bytes as f64 / (1024.0 * 1024.0),
        s.seconds
    );
}

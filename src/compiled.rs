//! The compiled path shared by `run`, `check`, `bench` and `compile`: load, optimise with the
//! built-in rules, then group, lower and compile; or load an ahead-of-time artefact.

use crate::model;
use kiln_codegen::runtime::artifact::is_artifact;
use kiln_codegen::runtime::{Options, Program};
use kiln_ir::Graph;
use kiln_passes::optimize::{optimize, Limits};
use kiln_passes::rules::builtin_rules;
use std::path::Path;

/// The model at `path`, optimised and compiled for `threads` threads.
pub fn compile(path: &Path, threads: usize) -> Result<Program, String> {
    compile_with(path, threads, true)
}

/// The model at `path` compiled for `threads` threads, optimised by the rewrite rules first
/// or (for comparisons) as it was exported. An artefact of `kiln compile` is loaded as it is
/// (already optimised and compiled).
pub fn compile_with(path: &Path, threads: usize, fuse: bool) -> Result<Program, String> {
    let options = Options { threads };
    if is_artifact(path) {
        return Program::load(path, &options);
    }
    let graph = model::load(path)?;
    let graph = if fuse {
        optimized(&graph, path)?
    } else {
        graph
    };
    Program::compile(&graph, &options).map_err(|e| format!("{}: {e}", path.display()))
}

/// `graph` (loaded from `path`) optimised with the built-in rules.
pub fn optimized(graph: &Graph, path: &Path) -> Result<Graph, String> {
    Ok(optimize(graph, &builtin_rules(), &Limits::default())
        .map_err(|e| format!("{}: {e}", path.display()))?
        .0)
}

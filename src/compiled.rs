//! The compiled path shared by `run`, `check` and `bench`: load, optimise with the built-in
//! rules, then group, lower and JIT-compile.

use crate::model;
use kiln_codegen::runtime::{Options, Program};
use kiln_passes::optimize::{optimize, Limits};
use kiln_passes::rules::builtin_rules;
use std::path::Path;

/// The model at `path`, optimised and compiled for `threads` threads.
pub fn compile(path: &Path, threads: usize) -> Result<Program, String> {
    compile_with(path, threads, true)
}

/// The model at `path` compiled for `threads` threads, optimised by the rewrite rules first
/// or (for comparisons) as it was exported.
pub fn compile_with(path: &Path, threads: usize, fuse: bool) -> Result<Program, String> {
    let graph = model::load(path)?;
    let optimized = if fuse {
        optimize(&graph, &builtin_rules(), &Limits::default())
            .map_err(|e| format!("{}: {e}", path.display()))?
            .0
    } else {
        graph
    };
    Program::compile(&optimized, &Options { threads })
        .map_err(|e| format!("{}: {e}", path.display()))
}

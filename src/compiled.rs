//! The compiled path shared by `run`, `check`, `bench` and `compile`: load, optimise with the
//! built-in rules, then group, lower and compile; or load an ahead-of-time artefact.

use crate::model;
use kiln_codegen::runtime::artifact::is_artifact;
use kiln_codegen::runtime::{Options, Program};
use kiln_codegen::Backend;
use kiln_ir::Graph;
use kiln_passes::optimize::{optimize, Limits};
use kiln_passes::rules::builtin_rules;
use std::path::Path;

/// The code generators the command line offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CodeGen {
    /// Cranelift: compiles fast; 128-bit vectors.
    Cranelift,
    /// LLVM: compiles slower; vectors as wide as this CPU has (512-bit with AVX-512).
    Llvm,
}

impl CodeGen {
    /// The backend this names, for this CPU.
    pub fn backend(self) -> Backend {
        match self {
            CodeGen::Cranelift => Backend::Cranelift,
            CodeGen::Llvm => Backend::llvm(),
        }
    }
}

/// The model at `path`, optimised and compiled with `options`.
pub fn compile(path: &Path, options: &Options) -> Result<Program, String> {
    compile_with(path, options, true)
}

/// The model at `path` compiled with `options`, optimised by the rewrite rules first or (for
/// comparisons) as it was exported. An artefact of `kiln compile` is loaded as it is (already
/// optimised and compiled, by the backend that compiled it).
pub fn compile_with(path: &Path, options: &Options, fuse: bool) -> Result<Program, String> {
    if is_artifact(path) {
        return Program::load(path, options);
    }
    let graph = model::load(path)?;
    let graph = if fuse {
        optimized(&graph, path)?
    } else {
        graph
    };
    Program::compile(&graph, options).map_err(|e| format!("{}: {e}", path.display()))
}

/// `graph` (loaded from `path`) optimised with the built-in rules.
pub fn optimized(graph: &Graph, path: &Path) -> Result<Graph, String> {
    Ok(optimize(graph, &builtin_rules(), &Limits::default())
        .map_err(|e| format!("{}: {e}", path.display()))?
        .0)
}

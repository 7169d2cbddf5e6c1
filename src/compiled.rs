//! The command line's compile options — `--backend NAME`, parsed against the code generators
//! of [`kiln_codegen::backends`] (and `interp` where a command can run the reference
//! interpreter), and `--no-cache` — turned into the library's [`Pipeline`].

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use kiln::cache::PlanCache;
use kiln::pipeline::{Options, Pipeline};
use kiln_codegen::Backend;

/// The name `--backend` gives the reference interpreter.
const INTERP: &str = "interp";

/// What runs a model: kernels compiled by a backend, or the reference interpreter.
#[derive(Clone, Debug)]
pub enum Engine {
    /// Kernels compiled by this backend.
    Compiled(Backend),
    /// The reference interpreter.
    Interp,
}

impl Engine {
    /// The pipeline of a compiled backend with `threads` threads; None for the interpreter.
    pub fn pipeline(&self, threads: u16, cache: CacheArgs) -> Option<Pipeline> {
        match self {
            Engine::Compiled(backend) => {
                Some(cache.pipeline(backend.clone(), threads as usize, true))
            }
            Engine::Interp => None,
        }
    }
}

/// The values `--backend` takes, with their `--help` lines: the backends of this build, and
/// the interpreter if `interp`.
fn possible_values(interp: bool) -> Vec<PossibleValue> {
    let mut values: Vec<PossibleValue> = kiln_codegen::backends()
        .iter()
        .map(|b| PossibleValue::new(b.name()).help(b.description()))
        .collect();
    if interp {
        values.push(PossibleValue::new(INTERP).help("The reference interpreter"));
    }
    values
}

/// `--backend NAME` of the commands that compile: a backend of this build.
#[derive(clap::Args, Clone, Debug)]
pub struct BackendArg {
    /// The code generator of the kernels (an artefact runs with the one that compiled it).
    #[arg(
        long,
        value_name = "NAME",
        value_parser = backend_parser(),
        default_value = Backend::default().name()
    )]
    pub backend: Backend,
}

/// `--backend NAME` of the commands that can also run the reference interpreter.
#[derive(clap::Args, Clone, Debug)]
pub struct EngineArg {
    /// Where to run: kernels compiled by a backend, or the reference interpreter (`interp`).
    #[arg(
        long = "backend",
        value_name = "NAME",
        value_parser = engine_parser(),
        default_value = Backend::default().name()
    )]
    pub engine: Engine,
}

/// The parser of `--backend NAME` for commands that compile: a backend of this build.
fn backend_parser() -> impl TypedValueParser<Value = Backend> {
    PossibleValuesParser::new(possible_values(false)).try_map(|name| kiln_codegen::backend(&name))
}

/// The parser of `--backend NAME` for commands that can also run the reference interpreter
/// (`interp`).
fn engine_parser() -> impl TypedValueParser<Value = Engine> {
    PossibleValuesParser::new(possible_values(true)).try_map(|name| match name.as_str() {
        INTERP => Ok(Engine::Interp),
        _ => kiln_codegen::backend(&name).map(Engine::Compiled),
    })
}

/// `--no-cache`, shared by the commands that compile a model to run it.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct CacheArgs {
    /// Compile the model anew, neither reading nor filling the plan cache
    /// (`$XDG_CACHE_HOME/kiln/plans`; see `kiln cache`).
    #[arg(long)]
    pub no_cache: bool,
}

impl CacheArgs {
    /// The pipeline of a command: `backend` on `threads` threads, optimising unless `fuse`
    /// is false, with the user's plan cache unless `--no-cache`.
    pub fn pipeline(self, backend: Backend, threads: usize, fuse: bool) -> Pipeline {
        let cache = match self.no_cache {
            true => None,
            false => PlanCache::user(),
        };
        Pipeline::new(Options { threads, backend })
            .fused(fuse)
            .cached(cache)
    }
}

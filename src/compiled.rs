//! The command line's compile options — the code generators it offers and `--no-cache` —
//! turned into the library's [`Pipeline`].

use kiln::cache::PlanCache;
use kiln::pipeline::{Options, Pipeline};
use kiln_codegen::Backend;

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

//! From a graph to a runnable [`Program`]: [`lowering`] turns the graph into a
//! [`kiln_rt::plan::Plan`] (kernel groups lowered by the templates, the rest on the
//! reference interpreter); [`compile`] compiles its kernels in memory (JIT) and
//! [`artifact`] ahead of time into an artefact directory that
//! [`kiln_rt::artifact::load`] runs without a compiler.
//!
//! ```
//! use kiln_codegen::plan::{compile, Options};
//! let graph = kiln_ir::text::parse(
//!     "kiln graph v1\ninput %x: f32[n]\n%y: f32[n] = Relu(%x)\noutput y = %y\n",
//! )
//! .unwrap();
//! let program = compile(&graph, &Options::default()).unwrap();
//! assert_eq!(program.stats().kernels, 1);
//! ```

pub mod artifact;
mod fold;
pub mod group;
mod legalize;
mod lower;
pub mod lowering;

use crate::Backend;
pub use fold::fold_constants;
use kiln_ir::Graph;
use kiln_rt::weights::Weights;
use kiln_rt::Program;
use std::time::Instant;

/// How to compile and run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Threads for parallel loops (1 = run on the calling thread).
    pub threads: usize,
    /// The code generator of the kernels.
    pub backend: Backend,
}

impl Default for Options {
    /// One thread, Cranelift.
    fn default() -> Options {
        Options {
            threads: 1,
            backend: Backend::Cranelift,
        }
    }
}

/// Compiles `graph` into a program whose kernels are compiled in memory by
/// `options.backend`.
pub fn compile(graph: &Graph, options: &Options) -> Result<Program, String> {
    let start = Instant::now();
    let lowered = lowering::lower_graph(graph, options.backend)?;
    let kernels = options.backend.compile_all(&lowered.kernels)?;
    let weights = Weights::in_memory(lowered.constants);
    // SAFETY: the kernels were compiled from the plan's own KIR, in its order.
    unsafe {
        Program::new(
            lowered.plan,
            weights,
            kernels,
            options.threads,
            start.elapsed().as_secs_f64(),
        )
    }
}

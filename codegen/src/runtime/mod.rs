//! The runtime: compiles a graph into a [`Program`] (kernel groups lowered by the templates
//! and JIT-compiled, the rest on the reference interpreter) and runs it; or compiles it ahead
//! of time into an [`artifact`] directory that [`Program::load`] runs without a JIT.
//!
//! A program is compiled once and serves every binding of the model's symbolic dims: kernel
//! sizes are evaluated from the bound symbols at each run. Intermediates that kernels produce
//! live in one arena, planned by liveness for the run's sizes ([`memory`]); reshapes are
//! views; weights are read in place from the (memory-mapped) model unless a template packs
//! them; parallel loops run on a rayon pool of the requested size.

pub mod artifact;
mod fold;
pub mod group;
mod legalize;
mod lower;
pub mod memory;
mod program;

pub use fold::fold_constants;
pub use program::{CompileStats, GroupReport, Options, Program, RunStats};

//! kiln-rt (the runtime): runs compiled models. A [`plan::Plan`] is a compiled model as data; a
//! [`Program`] is a plan with its weights and its kernels' code, ready to run; an
//! [`artifact`] directory stores a plan, loaded by memory-mapping its weights and looking its
//! kernels up by symbol. This crate knows nothing of templates or code generators, so the C
//! API (`libkiln_runtime`) that links it carries no compiler.
//!
//! ```no_run
//! use std::collections::HashMap;
//! let program = kiln_rt::artifact::load("out/minilm".as_ref(), 2).unwrap();
//! let feeds = HashMap::new(); // input name -> kiln_ir::Tensor
//! let (outputs, _stats) = program.run(&feeds).unwrap();
//! # let _ = outputs;
//! ```

mod arena;
pub mod artifact;
pub mod cpu;
mod launch;
pub mod memory;
pub mod native;
pub mod plan;
mod program;
mod sizes;
pub mod weights;

pub use program::{Input, InputBytes, Program, RunStats, StateBuffer};

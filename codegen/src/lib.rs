//! kiln-codegen: kernel IR ([`kir`]), intrinsics ([`intrinsics`]), schedules ([`Schedule`]),
//! kernel templates ([`templates`]), the backends ([`cranelift`], and `llvm` with the cargo
//! feature of that name, each a [`CodeGenerator`]; [`Backend`] is the one chosen, and
//! [`backends`] lists those this build has), and [`plan`]: lowering a graph into the
//! runtime's plan and compiling its kernels, in memory or into an artefact. A template builds
//! KIR for an op or fused op, its shapes and a schedule; a backend lowers KIR to native code.
//! Every template is tested against the reference interpreter.

mod backend;
pub mod cranelift;
pub mod intrinsics;
pub mod kir;
#[cfg(feature = "llvm")]
pub mod llvm;
mod native;
pub mod plan;
pub mod schedule;
pub mod templates;

pub use backend::{backend, backends, Backend, CodeGenerator, CpuLevel};
pub use schedule::{Heuristic, Param, Schedule, ScheduleRequest, ScheduleSource, Space};

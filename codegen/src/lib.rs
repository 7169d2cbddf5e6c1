//! kiln-codegen: kernel IR ([`kir`]), intrinsics ([`intrinsics`]), schedules ([`Schedule`]),
//! kernel templates ([`templates`]), the backends ([`cranelift`], and `llvm` with the cargo
//! feature of that name; [`Backend`] chooses) and the native kernels they make ([`native`]).
//! A template builds KIR for an op or fused op, its shapes and a schedule; a backend lowers
//! KIR to native code. Every template is tested against the reference interpreter.

mod backend;
pub mod cranelift;
pub mod intrinsics;
pub mod kir;
#[cfg(feature = "llvm")]
pub mod llvm;
pub mod native;
pub mod runtime;
mod schedule;
pub mod templates;

pub use backend::{Backend, CpuLevel};
pub use schedule::Schedule;

//! kiln-codegen: kernel IR ([`kir`]), intrinsics ([`intrinsics`]), schedules ([`Schedule`]),
//! kernel templates ([`templates`]) backends ([`cranelift`]) and the native kernels they make ([`native`]). A template builds KIR for an
//! op or fused op, its shapes and a schedule; a backend lowers KIR to native code. Every
//! template is tested against the reference interpreter.

pub mod cranelift;
pub mod intrinsics;
pub mod kir;
#[cfg(feature = "llvm")]
pub mod llvm;
pub mod native;
pub mod runtime;
mod schedule;
pub mod templates;

pub use schedule::Schedule;

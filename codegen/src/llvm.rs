//! The LLVM backend (placeholder until the helper's file lands).
#![allow(missing_docs, clippy::missing_errors_doc)]
use crate::kir::Kernel;
use crate::native::NativeKernel;
pub fn compile_all(_: &[Kernel], _: &str) -> Result<Vec<NativeKernel>, String> {
    Err("llvm: not yet".into())
}
pub fn emit_object(_: &[Kernel], _: &str) -> Result<Vec<u8>, String> {
    Err("llvm: not yet".into())
}

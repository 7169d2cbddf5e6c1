//! The LLVM backend (being written).

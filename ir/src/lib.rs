//! kiln-ir: the graph IR every other kiln crate builds on.
//!
//! - [`DType`], [`Dim`] (symbolic dims), [`TensorData`] (stored bytes) and [`Tensor`] (owned values);
//! - [`Activation`]: the activations GEMM epilogues fuse, with their reference semantics;
//! - [`Graph`] of [`Node`]s performing [`Op`]s, with shape and dtype inference ([`infer`]);
//! - [`interp`]: the reference interpreter, the oracle every optimised path is tested against;
//! - [`text`] and [`json`]: a readable text form that round-trips, and a serde JSON form;
//! - [`npy`]: reading and writing `.npy` files.

pub mod activation;
pub mod attr;
pub mod data;
pub mod dim;
pub mod dot;
pub mod dtype;
pub mod facts;
pub mod fold;
pub mod graph;
pub mod host;
pub mod infer;
pub mod interp;
pub mod json;
pub mod npy;
pub mod op;
pub mod tensor;
pub mod text;

pub use activation::Activation;
pub use attr::{Attr, Attrs};
pub use data::TensorData;
pub use dim::Dim;
pub use dtype::DType;
pub use graph::{Graph, Node, NodeId, NodeKind, Shape, Value, ValueId, ValueType};
pub use op::{Op, OpKind};
pub use tensor::{Element, Tensor};

//! kiln-frontends: read models from disk into a [`kiln_ir::Graph`].
//!
//! - [`onnx`]: ONNX model files (opsets 13 to 25), with external data and shape folding.

pub mod onnx;

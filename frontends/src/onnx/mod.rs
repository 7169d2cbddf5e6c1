//! The ONNX frontend: decode a model file (protobuf, memory-mapped), read its initializers by
//! reference, import its nodes into the IR op set, and fold shape computations.

mod import;
pub mod proto;
pub mod schema;
pub mod tensor;

pub use import::import_model;

use kiln_ir::Graph;
use std::path::Path;

/// Loads an ONNX model file into a graph. Errors are one line starting with the path.
pub fn load_model(path: &Path) -> Result<Graph, String> {
    let model = tensor::load_model_proto(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    import_model(&model, dir).map_err(|e| format!("{}: {e}", path.display()))
}

//! Loading a model from a path, whatever its format.

use kiln_ir::Graph;
use std::path::Path;

/// Loads the model at `path` (an `.onnx` file) into a graph.
pub fn load(path: &Path) -> Result<Graph, String> {
    if path.is_dir() {
        return Err(format!(
            "{}: is a directory; expected an .onnx model file",
            path.display()
        ));
    }
    kiln_frontends::onnx::load_model(path)
}

//! Loading a model from a path, whatever its format.

use kiln_ir::Graph;
use std::path::Path;

/// Loads the model at `path` into a graph: an `.onnx` file, or a Hugging Face checkpoint
/// directory (config.json + safetensors; its prefill graph).
pub fn load(path: &Path) -> Result<Graph, String> {
    if path.is_dir() {
        return kiln_frontends::hf::load_checkpoint(path);
    }
    kiln_frontends::onnx::load_model(path)
}

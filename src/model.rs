//! Loading a model from a path, whatever its format.

use kiln_ir::Graph;
use std::path::Path;

/// Loads the model at `path` into a graph: an `.onnx` file, a Hugging Face checkpoint
/// directory (config.json + safetensors; its prefill graph), or an artefact directory of
/// `kiln compile` (its optimised graph).
pub fn load(path: &Path) -> Result<Graph, String> {
    if kiln_codegen::runtime::artifact::is_artifact(path) {
        return kiln_codegen::runtime::artifact::load_graph(path);
    }
    if path.is_dir() {
        return kiln_frontends::hf::load_checkpoint(path);
    }
    kiln_frontends::onnx::load_model(path)
}

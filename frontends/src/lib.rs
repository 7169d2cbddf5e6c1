//! kiln-frontends: read models from disk into a [`kiln_ir::Graph`].
//!
//! - [`onnx`]: ONNX model files, with external data and shape folding;
//! - [`hf`]: Hugging Face checkpoints (config.json + safetensors) for BERT, GPT-2 and LLaMA.

pub mod hf;
pub mod onnx;

//! Hugging Face checkpoints: `config.json` plus `model.safetensors` (or shards) in a
//! directory, built into the IR with fused ops emitted directly, since the architecture is
//! known (FusedAttention / Attention with a KV cache, LayerNorm, RMSNorm, GELU, SwiGLU, RoPE).

mod bert;
mod builder;
pub mod causal;
pub mod checkpoint;
pub mod config;

pub use causal::Entry;

use checkpoint::Checkpoint;
use config::{read_config, Architecture, HfConfig};
use kiln_ir::Graph;
use std::path::Path;

/// A checkpoint directory, opened.
pub struct HfModel {
    /// The parsed `config.json`.
    pub config: HfConfig,
    checkpoint: Checkpoint,
}

impl HfModel {
    /// Reads `dir/config.json` and opens the weights. Errors name the file and the problem.
    pub fn open(dir: &Path) -> Result<HfModel, String> {
        let config = read_config(dir)?;
        let checkpoint = Checkpoint::open(dir)?;
        Ok(HfModel { config, checkpoint })
    }

    /// True for the causal language models (which have a decode entry point).
    pub fn is_causal(&self) -> bool {
        self.config.architecture.is_causal()
    }

    /// The graph of one entry point; the encoders have only the prefill form.
    pub fn graph(&self, entry: Entry) -> Result<Graph, String> {
        let mut b = builder::Builder::new(&self.checkpoint);
        let architecture = self.config.architecture;
        if architecture.is_causal() {
            causal::build(&mut b, &self.config, entry)?;
        } else if entry == Entry::Decode {
            return Err(format!(
                "{} is an encoder and has no decode entry point",
                self.config.architecture_name
            ));
        } else {
            // Task heads wrap the body in `bert.` / `distilbert.`.
            let body = if architecture == Architecture::Bert {
                "bert."
            } else {
                "distilbert."
            };
            let wrapped = format!("{body}embeddings.word_embeddings.weight");
            let prefix = if self.checkpoint.contains(&wrapped) {
                body
            } else {
                ""
            };
            bert::build(&mut b, &self.config, prefix)?;
        }
        Ok(b.graph)
    }
}

/// Loads the prefill graph of the checkpoint in `dir` (the form `kiln run` and friends use).
pub fn load_checkpoint(dir: &Path) -> Result<Graph, String> {
    HfModel::open(dir)?
        .graph(Entry::Prefill)
        .map_err(|e| format!("{}: {e}", dir.display()))
}

//! kiln-frontends: read models from disk into a [`kiln_ir::Graph`].
//!
//! - [`onnx`]: ONNX model files, with external data and shape folding;
//! - [`hf`]: Hugging Face checkpoints (config.json + safetensors) for BERT, GPT-2 and LLaMA.

pub mod hf;
pub mod onnx;

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        /// A new directory whose name contains `tag`, the process id and a counter.
        pub fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("kiln-frontends-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// The directory.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

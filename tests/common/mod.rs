//! Helpers shared by the integration tests: where test data lives and how outputs are compared.

#![allow(dead_code)] // each test binary uses its own subset

pub mod cli;
pub mod panics;

use kiln_ir::Tensor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The cache that `scripts/fetch-test-data.sh` fills (`KILN_TEST_DATA`, default `~/.cache/kiln`).
pub fn test_data_dir() -> PathBuf {
    match std::env::var_os("KILN_TEST_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/kiln"),
    }
}

/// A directory of fetched test data, or a panic telling how to fetch it.
pub fn require_test_data(sub: &str) -> PathBuf {
    let dir = test_data_dir().join(sub);
    assert!(
        dir.exists(),
        "{} is missing: run scripts/fetch-test-data.sh first",
        dir.display()
    );
    dir
}

/// The attention forms of older exports in `tests/models/forms`
/// (`scripts/make_form_fixtures.py`): each form's name and its inputs.
pub const ATTENTION_FORMS: [(&str, &[&str]); 5] = [
    ("bert_div", &["x", "attention_mask"]),
    ("bert_min", &["x", "attention_mask"]),
    ("bert_scaled_q", &["x", "attention_mask"]),
    ("bert_scaled_k", &["x", "attention_mask"]),
    ("t5", &["x", "attention_mask", "position_bias"]),
];

/// The repo's copy of a reference model (tests/models/<name>).
pub fn model_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name)
}

/// Largest absolute difference between two tensors of equal shape (as f64); an error if
/// dtypes or shapes differ. Equal values (infinities, and NaN against NaN) differ by 0; a NaN
/// against a number differs by infinity, so a NaN output never passes a tolerance.
pub fn max_abs_diff(actual: &Tensor, expected: &Tensor) -> Result<f64, String> {
    if actual.dtype() != expected.dtype() || actual.shape() != expected.shape() {
        return Err(format!(
            "got {}{:?}, expected {}{:?}",
            actual.dtype(),
            actual.shape(),
            expected.dtype(),
            expected.shape()
        ));
    }
    let (a, e) = (actual.to_f64_array(), expected.to_f64_array());
    Ok(a.iter()
        .zip(e.iter())
        .map(|(x, y)| match (x.is_nan(), y.is_nan()) {
            (true, true) => 0.0,
            (true, false) | (false, true) => f64::INFINITY,
            _ if x == y => 0.0,
            _ => (x - y).abs(),
        })
        .fold(0.0, f64::max))
}

/// A fresh, empty directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory whose name contains `tag`, the process id and a counter.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kiln-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `graph` optimised with the built-in rules, as `kiln run` and `kiln compile` do by default.
pub fn optimized(graph: &kiln_ir::Graph) -> Result<kiln_ir::Graph, String> {
    kiln::pipeline::Pipeline::new(Default::default()).optimise(graph)
}

/// Compile options: `threads` threads, kernels from `backend`.
pub fn options(threads: usize, backend: kiln_codegen::Backend) -> kiln::pipeline::Options {
    kiln::pipeline::Options { threads, backend }
}

/// Runs `graph` the way `kiln run` does: optimised with the built-in rules, then compiled
/// (kernels, interpreter fallbacks) with `options`.
pub fn run_compiled(
    graph: &kiln_ir::Graph,
    feeds: &std::collections::HashMap<String, Tensor>,
    options: &kiln::pipeline::Options,
) -> Result<Vec<(String, Tensor)>, String> {
    let program = kiln::pipeline::Pipeline::new(options.clone()).compile(graph)?;
    program
        .run(feeds)
        .map(|(outputs, _)| outputs)
        .map_err(|e| e.to_string())
}

/// `graph` optimised and compiled ahead of time by `options.backend` into an artefact (as
/// `kiln compile` does) in a temporary directory, then loaded from it.
pub fn load_ahead_of_time(
    graph: &kiln_ir::Graph,
    options: &kiln::pipeline::Options,
) -> Result<kiln::pipeline::Program, String> {
    let dir = TempDir::new("artifact");
    kiln::pipeline::Pipeline::new(options.clone()).write_artifacts(&[(graph, "")], dir.path())?;
    kiln_rt::artifact::load(dir.path(), options.threads)
}

/// Zeroed states of `graph` (inputs named like outputs: a causal checkpoint's KV cache) for
/// `batch` rows and `capacity` positions, in input order.
pub fn empty_states(
    graph: &kiln_ir::Graph,
    batch: usize,
    capacity: usize,
) -> Vec<(String, Tensor)> {
    let bindings = [
        ("batch".to_string(), batch as i64),
        ("capacity".to_string(), capacity as i64),
    ]
    .into();
    graph
        .states()
        .map(|v| graph.value(v))
        .map(|v| {
            let shape: Vec<usize> =
                v.ty.shape
                    .iter()
                    .map(|d| d.eval(&bindings).unwrap() as usize)
                    .collect();
            let n = shape.iter().product();
            (
                v.name.clone(),
                Tensor::from_vec(&shape, vec![0f32; n]).unwrap(),
            )
        })
        .collect()
}

/// `feeds` with zeroed states for every state of `graph` they lack, as large as
/// `input_ids` (batch rows, a position per token).
pub fn with_empty_states(
    graph: &kiln_ir::Graph,
    feeds: &std::collections::HashMap<String, Tensor>,
) -> std::collections::HashMap<String, Tensor> {
    let mut feeds = feeds.clone();
    if let Some(ids) = feeds.get("input_ids") {
        let (batch, seq) = (ids.shape()[0], ids.shape()[1]);
        for (name, t) in empty_states(graph, batch, seq) {
            feeds.entry(name).or_insert(t);
        }
    }
    feeds
}

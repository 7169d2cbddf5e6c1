//! The pipeline: load a model ([`load_model`]), optimise it with the rewrite rules, lower it
//! into a plan and compile its kernels ([`Pipeline::compile`]), in memory or — with a
//! [`PlanCache`] — as an artefact kept for the next run; or load an artefact of
//! `kiln compile` ([`Pipeline::open`]). Every front door of kiln goes through here, so a model
//! is compiled the same way whichever one it came in by.
//!
//! ```
//! use kiln::pipeline::{Options, Pipeline};
//! let graph = kiln_ir::text::parse(
//!     "kiln graph v1\ninput %x: f32[n]\n%y: f32[n] = Relu(%x)\noutput y = %y\n",
//! )
//! .unwrap();
//! let program = Pipeline::new(Options::default()).compile(&graph).unwrap();
//! let x = kiln_ir::Tensor::from_vec(&[3], vec![-1.0f32, 0.5, 2.0]).unwrap();
//! let feeds = std::collections::HashMap::from([("x".to_string(), x)]);
//! let (outputs, _) = program.run(&feeds).unwrap();
//! assert_eq!(outputs[0].1.to_f32_array().as_slice().unwrap(), &[0.0, 0.5, 2.0]);
//! ```

use crate::cache::PlanCache;
pub use kiln_codegen::plan::artifact::ArtifactSummary;
pub use kiln_codegen::plan::Options;
pub use kiln_frontends::hf::Entry;
use kiln_ir::{Graph, NodeKind};
use kiln_passes::optimize::{optimize, Limits};
use kiln_passes::rules::builtin_rules;
pub use kiln_rt::Program;
use std::hash::Hasher;
use std::path::Path;

/// A private directory under the system's temporary directory, removed when dropped (what
/// was mapped from it stays valid).
struct Scratch(std::path::PathBuf);

impl Scratch {
    /// A new scratch directory, or None when none can be made.
    fn new() -> Option<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("kiln-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).ok().map(|()| Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How models are compiled: the backend and threads, whether the rewrite rules run, and
/// whether compiled plans are cached.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// Backend and threads.
    pub options: Options,
    /// Whether the built-in rewrite rules optimise the graph first (off: compile it as
    /// exported, for comparisons).
    pub fuse: bool,
    /// Where compiled plans are kept between runs (None: compile every time).
    pub cache: Option<PlanCache>,
}

impl Pipeline {
    /// A pipeline that optimises and compiles with `options`, caching nothing.
    pub fn new(options: Options) -> Pipeline {
        Pipeline {
            options,
            fuse: true,
            cache: None,
        }
    }

    /// This pipeline, optimising (`true`) or compiling graphs as exported.
    pub fn fused(mut self, fuse: bool) -> Pipeline {
        self.fuse = fuse;
        self
    }

    /// This pipeline, keeping compiled plans in `cache`.
    pub fn cached(mut self, cache: Option<PlanCache>) -> Pipeline {
        self.cache = cache;
        self
    }

    /// `graph` as the pipeline compiles it: optimised by the built-in rules, or as it is.
    pub fn optimise(&self, graph: &Graph) -> Result<Graph, String> {
        if !self.fuse {
            return Ok(graph.clone());
        }
        Ok(optimize(graph, &builtin_rules(), &Limits::default())?.0)
    }

    /// `graph` optimised, lowered and compiled; from the cache when it holds this graph
    /// compiled with these options by this kiln for this CPU.
    pub fn compile(&self, graph: &Graph) -> Result<Program, String> {
        Ok(self.compile_entries(&[(graph, "")])?.remove(0))
    }

    /// The entry points of one model (`(graph, name)`: prefill and decode) compiled as
    /// [`Pipeline::compile`] does, holding the constants they share once (in memory, or in
    /// one cached weights file).
    pub fn compile_entries(&self, entries: &[(&Graph, &str)]) -> Result<Vec<Program>, String> {
        if let Some(cache) = &self.cache {
            let mut content = xxhash_rust::xxh3::Xxh3::new();
            for (graph, name) in entries {
                content.update(name.as_bytes());
                content.update(&graph_fingerprint(graph).to_le_bytes());
            }
            let key = self.cache_key(content.digest128())?;
            let names: Vec<&str> = entries.iter().map(|(_, n)| *n).collect();
            let write = |dir: &Path| self.write_artifacts(entries, dir).map(|_| ());
            if let Some(programs) = cache.get_or_build(&key, write, |d| self.load(d, &names))? {
                return Ok(programs);
            }
        }
        self.compile_in_memory(entries)
    }

    /// The entry points `entries` of the Hugging Face checkpoint in `dir` (prefill, decode),
    /// compiled. With a cache, the key is the checkpoint's files (config and weights), so a
    /// cached model is loaded without building its graphs or reading its weights into memory.
    pub fn compile_checkpoint(
        &self,
        dir: &Path,
        entries: &[Entry],
    ) -> Result<Vec<Program>, String> {
        let names: Vec<&str> = entries.iter().map(|e| entry_name(*e)).collect();
        let graphs = || -> Result<Vec<Graph>, String> {
            let model = kiln_frontends::hf::HfModel::open(dir)?;
            entries.iter().map(|e| model.graph(*e)).collect()
        };
        if let Some(cache) = &self.cache {
            let mut content = xxhash_rust::xxh3::Xxh3::new();
            content.update(names.join(",").as_bytes());
            content.update(&checkpoint_fingerprint(dir)?.to_le_bytes());
            let key = self.cache_key(content.digest128())?;
            let write = |out: &Path| {
                let graphs = graphs()?;
                let list: Vec<(&Graph, &str)> =
                    graphs.iter().zip(&names).map(|(g, n)| (g, *n)).collect();
                self.write_artifacts(&list, out).map(|_| ())
            };
            if let Some(programs) = cache.get_or_build(&key, write, |d| self.load(d, &names))? {
                return Ok(programs);
            }
        }
        let graphs = graphs()?;
        let list: Vec<(&Graph, &str)> = graphs.iter().zip(&names).map(|(g, n)| (g, *n)).collect();
        // Without a cache, a checkpoint still goes through artefacts, in a private scratch
        // directory removed once they are mapped: the packed weights are streamed to a file
        // and mapped, not held in memory beside the checkpoint's.
        if let Some(scratch) = Scratch::new() {
            match self.write_artifacts(&list, &scratch.0) {
                Ok(_) => {
                    drop(list);
                    drop(graphs);
                    return self.load(&scratch.0, &names);
                }
                // The scratch directory's own files failed (a full disk): compile in memory.
                Err(e) if e.contains(&*scratch.0.to_string_lossy()) => {}
                Err(e) => return Err(e),
            }
        }
        self.compile_in_memory(&list)
    }

    /// The artefacts `names` under `dir`, loaded.
    fn load(&self, dir: &Path, names: &[&str]) -> Result<Vec<Program>, String> {
        names
            .iter()
            .map(|name| kiln_rt::artifact::load(&dir.join(name), self.options.threads))
            .collect()
    }

    /// `entries` optimised and compiled in memory, sharing their constants.
    fn compile_in_memory(&self, entries: &[(&Graph, &str)]) -> Result<Vec<Program>, String> {
        let optimised = entries
            .iter()
            .map(|(g, _)| self.optimise(g))
            .collect::<Result<Vec<_>, String>>()?;
        let graphs: Vec<&Graph> = optimised.iter().collect();
        kiln_codegen::plan::compile_entries(&graphs, &self.options)
    }

    /// The program of the model at `path`: an artefact of `kiln compile` loaded as it is
    /// (already optimised and compiled, by the backend that compiled it), anything else
    /// loaded with [`load_model`] and compiled.
    pub fn open(&self, path: &Path) -> Result<Program, String> {
        if kiln_rt::artifact::is_artifact(path) {
            return kiln_rt::artifact::load(path, self.options.threads);
        }
        let graph = load_model(path)?;
        self.compile(&graph)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Optimises each entry point of a model and compiles it ahead of time into the named
    /// subdirectory of `root` (`""`: `root` itself); they share `root/weights.bin`.
    pub fn write_artifacts(
        &self,
        entries: &[(&Graph, &str)],
        root: &Path,
    ) -> Result<Vec<ArtifactSummary>, String> {
        let optimised = entries
            .iter()
            .map(|(g, name)| Ok((self.optimise(g)?, *name)))
            .collect::<Result<Vec<_>, String>>()?;
        let entries: Vec<(&Graph, &str)> = optimised.iter().map(|(g, n)| (g, *n)).collect();
        kiln_codegen::plan::artifact::write_artifacts(&entries, root, &self.options.backend)
    }

    /// The cache key of a model whose content hashes to `content` compiled by this pipeline:
    /// the content, the options that change the compiled code, this kiln's build and this
    /// CPU's features.
    fn cache_key(&self, content: u128) -> Result<String, String> {
        let target = self.options.backend.target()?;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&content.to_le_bytes());
        let options = format!(
            "fuse={} backend={} cpu={} features={} build={}",
            self.fuse,
            target.backend,
            target.cpu,
            target.features.join(","),
            crate::cache::build_id()
        );
        h.update(options.as_bytes());
        Ok(format!("{:032x}", h.digest128()))
    }
}

/// A hash of everything a graph computes: its nodes, their ops and attributes, the types of
/// their values, and the bytes of its constants.
pub fn graph_fingerprint(graph: &Graph) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for n in graph.node_ids() {
        let node = graph.node(n);
        let kind = match &node.kind {
            NodeKind::Input => "input".to_string(),
            NodeKind::Op(op) => format!("{op:?}"),
            NodeKind::Constant(data) => {
                let bytes = xxhash_rust::xxh3::xxh3_128(data.bytes());
                format!("const {} {:?} {bytes:032x}", data.dtype(), data.shape())
            }
        };
        let line = format!(
            "{n:?} {} {kind} {:?} {:?}\n",
            node.name, node.inputs, node.outputs
        );
        h.write(line.as_bytes());
    }
    h.write(format!("{:?}", graph.outputs()).as_bytes());
    h.digest128()
}

/// The directory name of an entry point's artefact.
pub fn entry_name(entry: Entry) -> &'static str {
    match entry {
        Entry::Prefill => "prefill",
        Entry::Decode => "decode",
    }
}

/// A hash of the files a Hugging Face checkpoint is read from (every `.json` and
/// `.safetensors` file of `dir`: names, sizes and bytes), streamed, so the weights are read
/// but not kept in memory.
pub fn checkpoint_fingerprint(dir: &Path) -> Result<u128, String> {
    let list = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<std::path::PathBuf> = list
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "json" || x == "safetensors")
        })
        .collect();
    files.sort();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    for path in files {
        use std::io::Read;
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut file = std::fs::File::open(&path).map_err(err)?;
        h.update(path.file_name().map_or(&[][..], |n| n.as_encoded_bytes()));
        h.update(&file.metadata().map_err(err)?.len().to_le_bytes());
        loop {
            let n = file.read(&mut buffer).map_err(err)?;
            if n == 0 {
                break;
            }
            h.update(&buffer[..n]);
        }
    }
    Ok(h.digest128())
}

/// Loads the model at `path` into a graph: an `.onnx` file, or a Hugging Face checkpoint
/// directory (config.json + safetensors; its prefill graph). An artefact holds a compiled
/// plan, not a graph: it is run with [`Pipeline::open`].
pub fn load_model(path: &Path) -> Result<Graph, String> {
    if kiln_rt::artifact::is_artifact(path) {
        return Err(format!(
            "{}: an artefact of `kiln compile` holds a compiled plan, not a graph; give the model it was compiled from",
            path.display()
        ));
    }
    if path.is_dir() {
        return kiln_frontends::hf::load_checkpoint(path);
    }
    kiln_frontends::onnx::load_model(path)
}

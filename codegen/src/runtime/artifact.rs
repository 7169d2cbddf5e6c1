//! Ahead-of-time artefacts: [`write_artifact`] compiles a graph's kernels into a shared
//! library and stores it with the graph and its weights; [`Program::load`] runs the artefact
//! with no JIT compilation, and so does the C API (`kiln.h`) that links to it.
//!
//! An artefact is a directory:
//! - `kernels.so`: the distinct kernels as native code for the compiling CPU, each exported
//!   under its name with the [`crate::native`] kernel ABI;
//! - `model.kg`: the graph after constant folding and legalisation, in the IR's text form,
//!   whose large constants are `weights[OFFSET]` references into
//! - `weights.bin`: the constants' bytes, 64-byte aligned, each stored once, memory-mapped
//!   when loaded; the artefacts of one model's entry points (prefill and decode) share one,
//!   in their parent directory ([`write_artifacts`]);
//! - `model.h`: a C header naming the model's inputs and outputs, in the order the C API
//!   takes and returns them;
//! - `manifest.txt`: the format version, where the weights file is (relative to the
//!   artefact), the size and checksum (XXH3-128) of the library, the graph and the weights,
//!   the backend that compiled the kernels, the CPU features the code needs, and each
//!   kernel's name and fingerprint (a hash of its KIR). Loading checks every file against its
//!   checksum before reading it (a truncated or corrupted `kernels.so` is never opened, a
//!   changed graph or weights file never runs), lowers the graph again for that backend and
//!   checks that it yields exactly these kernels, so a library can never be called with
//!   buffers laid out for other code. Loading needs no backend.

use super::program::{kernel_key, Lowering};
use super::{Options, Program};
use crate::kir::Kernel;
use crate::native::{link_shared, load_library};
use crate::{Backend, CpuLevel};
use kiln_ir::text::{self, WeightsBlob};
use kiln_ir::Graph;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

/// The first line of every manifest; bumped whenever the artefact layout changes.
const MANIFEST_HEADER: &str = "kiln artifact v2";
/// The file names inside an artefact directory.
const LIBRARY: &str = "kernels.so";
const GRAPH: &str = "model.kg";
const WEIGHTS: &str = "weights.bin";
const HEADER: &str = "model.h";
const MANIFEST: &str = "manifest.txt";

/// What [`write_artifact`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactSummary {
    /// Kernel steps of the program.
    pub kernels: usize,
    /// Distinct kernels in the shared library.
    pub distinct_kernels: usize,
    /// Nodes that will run on the interpreter (the runtime library includes it).
    pub interpreted: usize,
    /// Bytes of `kernels.so`.
    pub library_bytes: u64,
    /// Bytes of the weights file (shared by the entry points written together).
    pub weights_bytes: u64,
    /// Wall time of lowering, code generation and linking, in seconds.
    pub seconds: f64,
}

/// Whether `dir` holds an artefact (has a manifest).
pub fn is_artifact(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

/// Compiles `graph` ahead of time with `backend` into the artefact directory `dir` (created if
/// missing; files of an earlier artefact are replaced). Linking the shared library needs a C
/// compiler: `$CC`, else `cc`.
pub fn write_artifact(
    graph: &Graph,
    dir: &Path,
    backend: Backend,
) -> Result<ArtifactSummary, String> {
    Ok(write_artifacts(&[(graph, "")], dir, backend)?.remove(0))
}

/// Compiles several graphs of one model (its entry points) into artefacts in the named
/// subdirectories of `root` (`""` for `root` itself) that share one weights file,
/// `root/weights.bin`, in which every distinct constant is stored once.
pub fn write_artifacts(
    entries: &[(&Graph, &str)],
    root: &Path,
    backend: Backend,
) -> Result<Vec<ArtifactSummary>, String> {
    let mut blob = WeightsBlob::default();
    let mut summaries = vec![];
    // Manifests are written last: they hold the checksum of the weights file all share.
    let mut manifests = vec![];
    for &(graph, name) in entries {
        let start = Instant::now();
        let (dir, weights) = match name {
            "" => (root.to_path_buf(), WEIGHTS.to_string()),
            _ => (root.join(name), format!("../{WEIGHTS}")),
        };
        let lowering = Lowering::new(graph, backend);
        let (kernels, _) = lowering.distinct_kernels();
        let object = backend.emit_object(&kernels)?;
        let io = |file: &str, e: std::io::Error| format!("{}: {e}", dir.join(file).display());
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()))?;
        let object_path = dir.join("kernels.o");
        std::fs::write(&object_path, object).map_err(|e| io("kernels.o", e))?;
        let linked = link_shared(&object_path, &dir.join(LIBRARY));
        let _ = std::fs::remove_file(&object_path);
        linked?;
        let graph_text = text::print_with_weights(&lowering.graph, &mut blob);
        std::fs::write(dir.join(GRAPH), &graph_text).map_err(|e| io(GRAPH, e))?;
        std::fs::write(dir.join(HEADER), c_header(&lowering.graph)).map_err(|e| io(HEADER, e))?;
        let library = std::fs::read(dir.join(LIBRARY)).map_err(|e| io(LIBRARY, e))?;
        let files = vec![
            (LIBRARY.to_string(), Checksum::of(&library)),
            (GRAPH.to_string(), Checksum::of(graph_text.as_bytes())),
        ];
        let text = manifest(&kernels, &weights, backend)?;
        manifests.push((dir.clone(), text, files, weights));
        let stats = lowering.stats();
        summaries.push(ArtifactSummary {
            kernels: stats.kernels,
            distinct_kernels: kernels.len(),
            interpreted: stats.interpreted,
            library_bytes: library.len() as u64,
            weights_bytes: blob.bytes().len() as u64,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let path = root.join(WEIGHTS);
    std::fs::write(&path, blob.bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    let weights_sum = Checksum::of(blob.bytes());
    for (dir, mut text, mut files, weights) in manifests {
        files.push((weights, weights_sum));
        for (file, sum) in files {
            let _ = writeln!(text, "file {file} {} {:032x}", sum.bytes, sum.hash);
        }
        let path = dir.join(MANIFEST);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for s in &mut summaries {
        s.weights_bytes = blob.bytes().len() as u64;
    }
    Ok(summaries)
}

/// The size and XXH3-128 hash of a file's bytes, as a manifest records them.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Checksum {
    bytes: u64,
    hash: u128,
}

impl Checksum {
    fn of(data: &[u8]) -> Checksum {
        Checksum {
            bytes: data.len() as u64,
            hash: xxhash_rust::xxh3::xxh3_128(data),
        }
    }
}

/// A 64-bit FNV-1a hash: a fingerprint of a kernel's KIR that is stable across builds.
fn fingerprint(kernel: &Kernel) -> u64 {
    kernel_key(kernel)
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// The manifest text: header, the weights file, the backend, the CPU features the code needs,
/// one line per kernel.
fn manifest(kernels: &[Kernel], weights: &str, backend: Backend) -> Result<String, String> {
    let mut out = format!("{MANIFEST_HEADER}\nweights {weights}\n");
    let _ = match backend {
        Backend::Cranelift => writeln!(out, "backend cranelift"),
        Backend::Llvm(level) => writeln!(out, "backend llvm {}", level.name()),
    };
    let _ = writeln!(out, "features {}", backend.features()?.join(" "));
    for k in kernels {
        let _ = writeln!(out, "kernel {} {:016x}", k.name, fingerprint(k));
    }
    Ok(out)
}

/// A manifest, read.
struct Manifest {
    /// The weights file, relative to the artefact directory.
    weights: String,
    /// The backend that compiled the kernels (Cranelift when the manifest does not say).
    backend: Backend,
    /// The CPU features the kernels need.
    features: Vec<String>,
    /// Each kernel's name and fingerprint, in library order.
    kernels: Vec<(String, String)>,
    /// The checksum of each file the artefact reads (library, graph, weights), by its path
    /// relative to the artefact directory.
    files: HashMap<String, Checksum>,
}

impl Manifest {
    /// The bytes of `file` (relative to `dir`), checked against the manifest's checksum; the
    /// file is memory-mapped, not read.
    fn checked_file(&self, dir: &Path, file: &str) -> Result<bytes::Bytes, String> {
        let path = dir.join(file);
        let Some(want) = self.files.get(file) else {
            return Err(format!(
                "{}: records no checksum of `{file}`",
                dir.join(MANIFEST).display()
            ));
        };
        let bytes = map_file(&path)?;
        let have = Checksum::of(&bytes);
        if have.bytes != want.bytes {
            return Err(format!(
                "{}: {} bytes, but the manifest records {} (truncated or replaced?)",
                path.display(),
                have.bytes,
                want.bytes
            ));
        }
        if have.hash != want.hash {
            return Err(format!(
                "{}: the checksum differs from the manifest's (the file is corrupted)",
                path.display()
            ));
        }
        Ok(bytes)
    }
}

/// Reads and parses the manifest in `dir`.
fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join(MANIFEST);
    let err = |msg: String| format!("{}: {msg}", path.display());
    let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
    let mut lines = text.lines();
    if lines.next() != Some(MANIFEST_HEADER) {
        return Err(err(format!(
            "not a `{MANIFEST_HEADER}` manifest (an artefact of another kiln version?)"
        )));
    }
    let mut manifest = Manifest {
        weights: String::new(),
        backend: Backend::Cranelift,
        features: vec![],
        kernels: vec![],
        files: HashMap::new(),
    };
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["weights", file] => manifest.weights = file.to_string(),
            ["backend", "cranelift"] => manifest.backend = Backend::Cranelift,
            ["backend", "llvm", level] => {
                let level = CpuLevel::parse(level)
                    .ok_or_else(|| err(format!("unknown CPU level `{level}`")))?;
                manifest.backend = Backend::Llvm(level);
            }
            ["features", needed @ ..] => {
                manifest.features = needed.iter().map(|f| f.to_string()).collect()
            }
            ["kernel", name, hash] => manifest.kernels.push((name.to_string(), hash.to_string())),
            ["file", file, bytes, hash] => {
                let sum = bytes
                    .parse()
                    .ok()
                    .zip(u128::from_str_radix(hash, 16).ok())
                    .map(|(bytes, hash)| Checksum { bytes, hash })
                    .ok_or_else(|| err(format!("unreadable checksum line `{line}`")))?;
                if manifest.files.insert(file.to_string(), sum).is_some() {
                    return Err(err(format!("two checksums of `{file}`")));
                }
            }
            [] => {}
            _ => return Err(err(format!("unreadable line `{line}`"))),
        }
    }
    if manifest.weights.is_empty() {
        return Err(err("names no weights file".into()));
    }
    Ok(manifest)
}

/// Checks a manifest against the host CPU and the kernels the graph lowers to.
fn check_manifest(manifest: &Manifest, kernels: &[Kernel], path: &Path) -> Result<(), String> {
    let err = |msg: String| format!("{}: {msg}", path.display());
    if let Some(missing) = manifest.backend.missing_feature(&manifest.features)? {
        return Err(err(format!(
            "the kernels need CPU feature `{missing}`, which this CPU lacks"
        )));
    }
    let expected: Vec<(String, String)> = kernels
        .iter()
        .map(|k| (k.name.clone(), format!("{:016x}", fingerprint(k))))
        .collect();
    if manifest.kernels != expected {
        return Err(err(format!(
            "the library holds {} kernels that differ from the {} this kiln lowers the graph \
             to (compiled by another kiln version?); run `kiln compile` again",
            manifest.kernels.len(),
            expected.len()
        )));
    }
    Ok(())
}

impl Program {
    /// Loads the artefact that [`write_artifact`] wrote to `dir`: reads the graph and its
    /// memory-mapped weights, lowers it again for the backend that compiled it
    /// (deterministically, packing weights) and binds the kernels of `kernels.so` instead of
    /// compiling them. `options.backend` is not used.
    pub fn load(dir: &Path, options: &Options) -> Result<Program, String> {
        let start = Instant::now();
        let manifest = read_manifest(dir)?;
        let graph = graph_of(dir, &manifest)?;
        let lowering = Lowering::new(&graph, manifest.backend);
        let (kernels, index) = lowering.distinct_kernels();
        check_manifest(&manifest, &kernels, &dir.join(MANIFEST))?;
        // The library's bytes are the ones written with the manifest (never open a truncated
        // or corrupted library: its code would run).
        manifest.checked_file(dir, LIBRARY)?;
        // SAFETY: the manifest proves the library was compiled from these kernels' KIR, and
        // its checksum that the file is the one linked then.
        let compiled = unsafe { load_library(&dir.join(LIBRARY), &kernels)? };
        Program::assemble(lowering, compiled, &index, options, start)
    }
}

/// The graph of the artefact in `dir` (after folding and legalisation), its weights
/// memory-mapped.
pub fn load_graph(dir: &Path) -> Result<Graph, String> {
    graph_of(dir, &read_manifest(dir)?)
}

/// The graph of the artefact in `dir`, whose manifest is `manifest`.
fn graph_of(dir: &Path, manifest: &Manifest) -> Result<Graph, String> {
    let weights = manifest.checked_file(dir, &manifest.weights)?;
    let path = dir.join(GRAPH);
    let text = manifest.checked_file(dir, GRAPH)?;
    let text = std::str::from_utf8(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    text::parse_with_weights(text, weights).map_err(|e| format!("{}: {e}", path.display()))
}

/// The bytes of a file, memory-mapped (an empty file maps to no bytes).
fn map_file(path: &Path) -> Result<bytes::Bytes, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        return Ok(bytes::Bytes::new());
    }
    // SAFETY: the artefact's files are not modified while a program uses them (documented).
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(bytes::Bytes::from_owner(map))
}

/// A C identifier made from a tensor name.
fn c_identifier(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if id.starts_with(|c: char| c.is_ascii_digit()) {
        id.insert(0, '_');
    }
    id
}

/// The model's C header: the number, order, names and types of inputs and outputs.
fn c_header(graph: &Graph) -> String {
    let mut out = String::from(
        "/* Generated by `kiln compile`: the inputs and outputs of this model, in the order\n \
         * kiln_run takes and returns them. The API is in kiln.h; link with -lkiln_runtime. */\n\
         #ifndef KILN_MODEL_H\n#define KILN_MODEL_H\n\n#include \"kiln.h\"\n\n",
    );
    let inputs: Vec<(String, _)> = graph
        .inputs()
        .map(|v| (graph.value(v).name.clone(), v))
        .collect();
    for (what, list) in [("INPUT", inputs), ("OUTPUT", graph.outputs().to_vec())] {
        let _ = writeln!(out, "#define KILN_MODEL_{what}S {}", list.len());
        for (i, (name, v)) in list.iter().enumerate() {
            let ty = &graph.value(*v).ty;
            let dims: Vec<String> = ty.shape.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                out,
                "#define KILN_MODEL_{what}_{} {i} /* \"{}\": {}[{}] */",
                c_identifier(name),
                name.replace("*/", "* /"),
                ty.dtype,
                dims.join(", ")
            );
        }
        out.push('\n');
    }
    out.push_str("#endif\n");
    out
}

//! Ahead-of-time artefacts: directories that hold a compiled [`Plan`] and everything it needs,
//! written by code generation through [`ArtifactWriter`] and loaded by [`load`] — which reads
//! the plan, memory-maps the weights and looks the kernels up by symbol; nothing is lowered,
//! folded or packed at load.
//!
//! An artefact is a directory:
//! - `plan.json`: the [`Plan`] (steps, kernel symbols and schedules, bindings, constants'
//!   offsets and layouts), with its format version;
//! - `kernels.so`: the distinct kernels as native code, each exported under its symbol with
//!   the [`crate::native`] kernel ABI; the artefacts of one model's entry points share one,
//!   in their parent directory, as they share the weights;
//! - `weights.bin`: the constants' bytes exactly as the kernels read them (packed panels
//!   included), 64-byte aligned, each distinct content stored once, memory-mapped when
//!   loaded; the artefacts of one model's entry points (prefill and decode) share one, in
//!   their parent directory;
//! - `model.h`: a C header naming the model's inputs and outputs, in the order the C API
//!   takes and returns them;
//! - `manifest.txt`: the artefact format, where the weights file and the library are
//!   (relative to the artefact), and the size and XXH3-128 checksum of the plan, the library and the weights.
//!   Loading checks every file against its checksum before using it, so a truncated or
//!   corrupted `kernels.so` is never opened and changed weights never run.

use crate::native::load_library;
use crate::plan::Plan;
use crate::weights::{Checksum, Weights, WeightsWriter};
use crate::Program;
use bytes::Bytes;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

/// The first line of every manifest; bumped whenever the artefact layout changes.
const MANIFEST_HEADER: &str = "kiln artifact v4";
/// The file names inside an artefact directory.
pub const LIBRARY: &str = "kernels.so";
const PLAN: &str = "plan.json";
const WEIGHTS: &str = "weights.bin";
const HEADER: &str = "model.h";
const MANIFEST: &str = "manifest.txt";

/// Whether `dir` holds an artefact (has a manifest).
pub fn is_artifact(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

/// Loads the artefact in `dir` to run on `threads` threads: checks the manifest's checksums,
/// reads the plan, checks that this CPU has the features its code needs, memory-maps the
/// weights and binds the kernels of `kernels.so` by symbol.
pub fn load(dir: &Path, threads: usize) -> Result<Program, String> {
    let start = Instant::now();
    let manifest = read_manifest(dir)?;
    let plan_path = dir.join(PLAN);
    let plan_text = manifest.checked_file(dir, PLAN)?;
    let plan_text =
        std::str::from_utf8(&plan_text).map_err(|e| format!("{}: {e}", plan_path.display()))?;
    let plan = Plan::from_json(plan_text).map_err(|e| format!("{}: {e}", plan_path.display()))?;
    crate::cpu::check(&plan.target.features).map_err(|e| format!("{}: {e}", dir.display()))?;
    let weights_path = dir.join(&manifest.weights);
    let weights = manifest.checked_shared_file(dir, &manifest.weights)?;
    let weights = Weights::from_file(&weights, &plan.constants, &weights_path)?;
    // Never open a library whose bytes are not the ones written with the manifest: its code
    // would run.
    manifest.checked_file(dir, &manifest.library)?;
    // SAFETY: the manifest proves the library is the one linked with this plan, whose
    // kernel list names its symbols and their argument counts.
    let kernels = unsafe { load_library(&dir.join(&manifest.library), &plan.kernels)? };
    // SAFETY: as above: the kernels are the plan's, in its order.
    unsafe {
        Program::new(
            plan,
            weights,
            kernels,
            threads,
            start.elapsed().as_secs_f64(),
        )
    }
    .map_err(|e| format!("{}: {e}", plan_path.display()))
}

/// Writes the artefacts of one model's entry points, which share one weights file.
///
/// The caller links the kernels of every entry point into one library,
/// [`ArtifactWriter::library`]. For each entry point: [`ArtifactWriter::store`] stores each
/// of its constants (one at a time, so that they need not all be in memory);
/// [`ArtifactWriter::add`] then writes the plan and the header; [`ArtifactWriter::finish`] writes the manifests, which hold the
/// checksum of the weights file they all share.
pub struct ArtifactWriter {
    root: PathBuf,
    weights: WeightsWriter,
    /// The artefacts added, for their manifests.
    pending: Vec<Pending>,
}

/// An artefact whose manifest is still to write.
struct Pending {
    dir: PathBuf,
    /// Where the shared files (weights, library) are, relative to `dir`: `""` or `"../"`.
    root: &'static str,
    /// Its own files with their checksums.
    files: Vec<(String, Checksum)>,
}

impl ArtifactWriter {
    /// A writer of artefacts under `root` (created if missing; the weights file is
    /// `root/weights.bin`).
    pub fn create(root: &Path) -> Result<ArtifactWriter, String> {
        std::fs::create_dir_all(root)
            .map_err(|e| format!("{}: cannot create the directory: {e}", root.display()))?;
        Ok(ArtifactWriter {
            root: root.to_path_buf(),
            weights: WeightsWriter::create(&root.join(WEIGHTS))?,
            pending: vec![],
        })
    }

    /// Where the caller links the kernels of every entry point, before
    /// [`ArtifactWriter::finish`].
    pub fn library(&self) -> PathBuf {
        self.root.join(LIBRARY)
    }

    /// The directory of the entry point `name` (`""`: the root itself), created.
    pub fn directory(&self, name: &str) -> Result<PathBuf, String> {
        let dir = match name {
            "" => self.root.clone(),
            _ => self.root.join(name),
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()))?;
        Ok(dir)
    }

    /// Stores the bytes of a constant in the shared weights file (once: equal bytes stored
    /// before are not stored again) and returns their offset in it.
    pub fn store(&mut self, bytes: &[u8]) -> Result<u64, String> {
        self.weights.insert(bytes)
    }

    /// Adds the entry point `name` whose constants are stored (their offsets set in `plan`):
    /// writes the plan and the C header.
    pub fn add(&mut self, name: &str, plan: &Plan) -> Result<(), String> {
        let dir = self.directory(name)?;
        let io = |file: &str, e: std::io::Error| format!("{}: {e}", dir.join(file).display());
        let text = plan.to_json();
        std::fs::write(dir.join(PLAN), &text).map_err(|e| io(PLAN, e))?;
        std::fs::write(dir.join(HEADER), c_header(plan)).map_err(|e| io(HEADER, e))?;
        self.pending.push(Pending {
            dir,
            root: if name.is_empty() { "" } else { "../" },
            files: vec![(PLAN.to_string(), Checksum::of(text.as_bytes()))],
        });
        Ok(())
    }

    /// Finishes the weights file and writes every manifest; returns the weights file's size.
    pub fn finish(self) -> Result<u64, String> {
        let path = self.library();
        let sum = self.weights.finish()?;
        let library = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let library_sum = Checksum::of(&library);
        for Pending {
            dir,
            root,
            mut files,
        } in self.pending
        {
            let (weights, library) = (format!("{root}{WEIGHTS}"), format!("{root}{LIBRARY}"));
            let mut text = format!("{MANIFEST_HEADER}\nweights {weights}\nlibrary {library}\n");
            files.push((weights, sum));
            files.push((library, library_sum));
            for (file, sum) in files {
                let _ = writeln!(text, "file {file} {} {:032x}", sum.bytes, sum.hash);
            }
            let path = dir.join(MANIFEST);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(sum.bytes)
    }
}

/// A manifest, read.
struct Manifest {
    /// The weights file, relative to the artefact directory.
    weights: String,
    /// The kernels' library, relative to the artefact directory.
    library: String,
    /// The checksum of each file the artefact reads (library, plan, weights), by its path
    /// relative to the artefact directory.
    files: HashMap<String, Checksum>,
}

impl Manifest {
    /// [`Manifest::checked_file`] for a file that several artefacts share (the weights of a
    /// model's entry points): while one loaded program holds it, loading another artefact
    /// that names the same unchanged file maps it once and checks it once.
    fn checked_shared_file(&self, dir: &Path, file: &str) -> Result<Bytes, String> {
        type Key = (PathBuf, u64, std::time::SystemTime);
        static SHARED: Mutex<Vec<(Key, Checksum, Weak<memmap2::Mmap>)>> = Mutex::new(vec![]);
        let path = dir.join(file);
        let identity = std::fs::canonicalize(&path)
            .ok()
            .zip(std::fs::metadata(&path).ok());
        let Some((canonical, meta)) = identity else {
            return self.checked_file(dir, file);
        };
        let Ok(modified) = meta.modified() else {
            return self.checked_file(dir, file);
        };
        let key = (canonical, meta.len(), modified);
        let want = self.files.get(file).copied();
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        shared.retain(|(_, _, map)| map.strong_count() > 0);
        let found = shared
            .iter()
            .find(|(k, sum, _)| *k == key && Some(*sum) == want)
            .and_then(|(_, _, map)| map.upgrade());
        if let Some(map) = found {
            return Ok(Bytes::from_owner(SharedMap(map)));
        }
        let (bytes, map) = map_shared(&path)?;
        self.check(&path, file, &bytes)?;
        if let (Some(map), Some(sum)) = (map, want) {
            shared.push((key, sum, Arc::downgrade(&map)));
        }
        Ok(bytes)
    }

    /// Checks `bytes`, the contents of `file` at `path`, against the manifest's checksum.
    fn check(&self, path: &Path, file: &str, bytes: &[u8]) -> Result<(), String> {
        let Some(want) = self.files.get(file) else {
            return Err(format!(
                "{}: records no checksum of `{file}`",
                path.parent().unwrap_or(path).join(MANIFEST).display()
            ));
        };
        if bytes.len() as u64 != want.bytes {
            return Err(format!(
                "{}: {} bytes, but the manifest records {} (truncated or replaced?)",
                path.display(),
                bytes.len(),
                want.bytes
            ));
        }
        if Checksum::of(bytes).hash != want.hash {
            return Err(format!(
                "{}: the checksum differs from the manifest's (the file is corrupted)",
                path.display()
            ));
        }
        Ok(())
    }

    /// The bytes of `file` (relative to `dir`), checked against the manifest's checksum; the
    /// file is memory-mapped, not read.
    fn checked_file(&self, dir: &Path, file: &str) -> Result<Bytes, String> {
        let path = dir.join(file);
        if !self.files.contains_key(file) {
            return Err(format!(
                "{}: records no checksum of `{file}`",
                dir.join(MANIFEST).display()
            ));
        }
        let (bytes, _) = map_shared(&path)?;
        self.check(&path, file, &bytes)?;
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
            "not a `{MANIFEST_HEADER}` manifest (an artefact of another kiln version?); run `kiln compile` again"
        )));
    }
    let mut manifest = Manifest {
        weights: String::new(),
        library: String::new(),
        files: HashMap::new(),
    };
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["weights", file] => manifest.weights = file.to_string(),
            ["library", file] => manifest.library = file.to_string(),
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
    if manifest.library.is_empty() {
        return Err(err("names no kernel library".into()));
    }
    Ok(manifest)
}

/// A memory map that several byte handles share.
struct SharedMap(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for SharedMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The bytes of a file, memory-mapped, and the map (None for an empty file, which maps to no
/// bytes).
fn map_shared(path: &Path) -> Result<(Bytes, Option<Arc<memmap2::Mmap>>), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if file.metadata().map(|m| m.len()).unwrap_or(0) == 0 {
        return Ok((Bytes::new(), None));
    }
    // SAFETY: the artefact's files are not modified while a program uses them (documented).
    let map =
        unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{}: {e}", path.display()))?;
    let map = Arc::new(map);
    Ok((Bytes::from_owner(SharedMap(map.clone())), Some(map)))
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
fn c_header(plan: &Plan) -> String {
    let mut out = String::from(
        "/* Generated by `kiln compile`: the inputs and outputs of this model, in the order\n \
         * kiln_run takes and returns them. The API is in kiln.h; link with -lkiln_runtime. */\n\
         #ifndef KILN_MODEL_H\n#define KILN_MODEL_H\n\n#include \"kiln.h\"\n\n",
    );
    let inputs: Vec<(String, usize)> = plan
        .inputs
        .iter()
        .map(|&v| (plan.values[v].name.clone(), v))
        .collect();
    for (what, list) in [("INPUT", inputs), ("OUTPUT", plan.outputs.clone())] {
        let _ = writeln!(out, "#define KILN_MODEL_{what}S {}", list.len());
        for (i, (name, v)) in list.iter().enumerate() {
            let ty = &plan.values[*v].ty;
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

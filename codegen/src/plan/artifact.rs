//! Writing ahead-of-time artefacts: [`write_artifacts`] lowers each entry point of a model,
//! compiles its kernels into a shared library and stores the plan with its constants through
//! [`kiln_rt::artifact::ArtifactWriter`], which owns the artefact's format.

use super::lowering::{distinct_kernels, lower_entries};
use crate::native::link_shared;
use crate::templates::ConstantIdentity;
use crate::{Backend, ScheduleSource};
use kiln_ir::Graph;
use kiln_rt::artifact::ArtifactWriter;
use std::collections::hash_map::{Entry, HashMap};
use std::path::Path;
use std::time::Instant;

/// What [`write_artifact`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactSummary {
    /// Kernel steps of the program.
    pub kernels: usize,
    /// Distinct kernels in the shared library.
    pub distinct_kernels: usize,
    /// Nodes that will run on the interpreter (the runtime library includes it).
    pub interpreted: usize,
    /// Bytes of `kernels.so` (shared by the entry points written together, as the weights).
    pub library_bytes: u64,
    /// Bytes of the weights file (shared by the entry points written together).
    pub weights_bytes: u64,
    /// Wall time of lowering all the entry points written together (each on its own
    /// thread), in seconds.
    pub lowering_seconds: f64,
    /// Wall time of generating and linking the code of all the entry points written
    /// together (their equal kernels are compiled once), in seconds.
    pub compile_seconds: f64,
    /// Wall time of making and writing this entry point's constants that earlier entry
    /// points did not write, in seconds.
    pub weights_seconds: f64,
}

/// Compiles `graph` ahead of time with `backend` into the artefact directory `dir` (created if
/// missing; files of an earlier artefact are replaced). Linking the shared library needs a C
/// compiler: `$CC`, else `cc`.
pub fn write_artifact(
    graph: &Graph,
    dir: &Path,
    backend: &Backend,
) -> Result<ArtifactSummary, String> {
    Ok(write_artifacts(&[(graph, "")], dir, backend)?.remove(0))
}

/// Compiles several graphs of one model (its entry points) into artefacts in the named
/// subdirectories of `root` (`""` for `root` itself) that share one weights file,
/// `root/weights.bin`, in which every distinct constant is stored once, and one library,
/// `root/kernels.so`, in which every distinct kernel is compiled once.
pub fn write_artifacts(
    entries: &[(&Graph, &str)],
    root: &Path,
    backend: &Backend,
) -> Result<Vec<ArtifactSummary>, String> {
    write_artifacts_with(entries, root, backend, &crate::Heuristic)
}

/// [`write_artifacts`] with each kernel's schedule from `source`.
pub fn write_artifacts_with(
    entries: &[(&Graph, &str)],
    root: &Path,
    backend: &Backend,
    source: &dyn ScheduleSource,
) -> Result<Vec<ArtifactSummary>, String> {
    let mut writer = ArtifactWriter::create(root)?;
    let start = Instant::now();
    let graphs: Vec<&Graph> = entries.iter().map(|(g, _)| *g).collect();
    let lowered = lower_entries(&graphs, backend, source)?;
    let lowering_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let (kernels, _) = distinct_kernels(&lowered)?;
    let library = writer.library();
    link_shared(backend.emit_objects(&kernels)?, root, &library)?;
    let compile_seconds = start.elapsed().as_secs_f64();
    let library_bytes = std::fs::metadata(&library).map(|m| m.len()).unwrap_or(0);
    // Where each constant made from a source (a packed weight) is stored already, so that
    // the entry points that share it make it once.
    let mut stored: HashMap<ConstantIdentity, u64> = HashMap::new();
    let mut summaries = vec![];
    for (&(_, name), mut lowered) in entries.iter().zip(lowered) {
        let start = Instant::now();
        for (c, bytes) in lowered.plan.constants.iter_mut().zip(&lowered.constants) {
            if !bytes.is_made() {
                c.offset = writer.store(bytes.get())?;
                continue;
            }
            c.offset = match stored.entry(bytes.identity()) {
                Entry::Occupied(e) => *e.get(),
                Entry::Vacant(e) => *e.insert(bytes.with(|b| writer.store(b))?),
            };
        }
        writer.add(name, &lowered.plan)?;
        let stats = &lowered.plan.stats;
        summaries.push(ArtifactSummary {
            kernels: stats.kernels,
            distinct_kernels: stats.distinct_kernels,
            interpreted: stats.interpreted,
            library_bytes,
            weights_bytes: 0,
            lowering_seconds,
            compile_seconds,
            weights_seconds: start.elapsed().as_secs_f64(),
        });
    }
    let weights_bytes = writer.finish()?;
    for s in &mut summaries {
        s.weights_bytes = weights_bytes;
    }
    Ok(summaries)
}

//! Writing ahead-of-time artefacts: [`write_artifacts`] lowers each entry point of a model,
//! compiles its kernels into a shared library and stores the plan with its constants through
//! [`kiln_rt::artifact::ArtifactWriter`], which owns the artefact's format.

use super::lowering::lower_graph;
use crate::native::link_shared;
use crate::{Backend, ScheduleSource};
use kiln_ir::Graph;
use kiln_rt::artifact::{ArtifactWriter, LIBRARY};
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
    /// Bytes of `kernels.so`.
    pub library_bytes: u64,
    /// Bytes of the weights file (shared by the entry points written together).
    pub weights_bytes: u64,
    /// Wall time of lowering, code generation and linking, in seconds.
    pub seconds: f64,
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
/// `root/weights.bin`, in which every distinct constant is stored once.
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
    let mut summaries = vec![];
    for &(graph, name) in entries {
        let start = Instant::now();
        let mut lowered = lower_graph(graph, backend, source)?;
        let dir = writer.directory(name)?;
        let object = backend.emit_object(&lowered.kernels)?;
        let object_path = dir.join("kernels.o");
        std::fs::write(&object_path, object)
            .map_err(|e| format!("{}: {e}", object_path.display()))?;
        let library = dir.join(LIBRARY);
        let linked = link_shared(&object_path, &library);
        let _ = std::fs::remove_file(&object_path);
        linked?;
        writer.add(name, &mut lowered.plan, &lowered.constants)?;
        let stats = &lowered.plan.stats;
        summaries.push(ArtifactSummary {
            kernels: stats.kernels,
            distinct_kernels: stats.distinct_kernels,
            interpreted: stats.interpreted,
            library_bytes: std::fs::metadata(&library).map(|m| m.len()).unwrap_or(0),
            weights_bytes: 0,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let weights_bytes = writer.finish()?;
    for s in &mut summaries {
        s.weights_bytes = weights_bytes;
    }
    Ok(summaries)
}

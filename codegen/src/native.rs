//! Native code for kernels at compile time: linking an object into a shared library and
//! loading it back ([`load_kernels`]), which the LLVM JIT and `kiln compile` share. The kernel
//! ABI and the loaded kernels themselves are the runtime's ([`kiln_rt::native`]).

use crate::kir::Kernel;
#[cfg(feature = "llvm")]
use kiln_rt::native::{load_library, NativeKernel};
use kiln_rt::plan::KernelInfo;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the runtime needs to find and call `kernel`: its symbol and argument counts (the
/// template, schedule and fingerprint are left for the caller to fill in).
pub(crate) fn symbol_of(kernel: &Kernel) -> KernelInfo {
    KernelInfo {
        symbol: kernel.name.clone(),
        template: String::new(),
        template_version: 0,
        buffers: kernel.buffers,
        sizes: kernel.sizes,
        schedule: Default::default(),
        schedule_source: String::new(),
        fingerprint: String::new(),
    }
}

/// Loads the shared library at `path` and finds each of `kernels` in it by name.
///
/// # Safety
/// The library must have been linked from an object the backends emitted for these very
/// kernels (same KIR under the same names).
#[cfg(feature = "llvm")]
pub(crate) unsafe fn load_kernels(
    path: &Path,
    kernels: &[Kernel],
) -> Result<Vec<NativeKernel>, String> {
    let symbols: Vec<KernelInfo> = kernels.iter().map(symbol_of).collect();
    // SAFETY: the caller's contract.
    unsafe { load_library(path, &symbols) }
}

/// Links relocatable objects (a backend's `emit_objects`) into a shared library with the
/// system C compiler (`$CC`, else `cc`); the objects are written to `dir` for the linker
/// and removed after.
pub(crate) fn link_shared(objects: Vec<Vec<u8>>, dir: &Path, library: &Path) -> Result<(), String> {
    let mut paths = vec![];
    let mut written = Ok(());
    for (i, object) in objects.into_iter().enumerate() {
        let path = dir.join(format!("kernels{i}.o"));
        written = std::fs::write(&path, object)
            .map_err(|e| format!("{}: cannot write: {e}", path.display()));
        paths.push(path);
        if written.is_err() {
            break;
        }
    }
    let linked = written.and_then(|()| link_files(&paths, library));
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    linked
}

/// Links the object files at `objects` into a shared library.
fn link_files(objects: &[PathBuf], library: &Path) -> Result<(), String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(library)
        .args(objects)
        .output()
        .map_err(|e| {
            format!(
                "linking {} needs a C compiler (`{cc}`): {e}",
                library.display()
            )
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "linking {} with `{cc}` failed: {}",
            library.display(),
            stderr.lines().next().unwrap_or("(no message)")
        ));
    }
    Ok(())
}

//! [`NativeKernel`]: a kernel as machine code in memory, whether the Cranelift JIT just made it
//! or it was loaded from an ahead-of-time compiled shared library ([`load_library`]).
//!
//! Every kernel has one ABI, `extern "C" fn(buffers: *const *mut u8, sizes: *const i64)`:
//! the buffer pointers and the size arguments are passed as arrays, so one function-pointer
//! type serves every kernel.

use crate::kir::Kernel;
use std::any::Any;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// The signature every kernel is compiled with.
pub(crate) type KernelFn = unsafe extern "C" fn(*const *mut u8, *const i64);

/// Whatever keeps a kernel's code mapped (a JIT module, a loaded library).
pub(crate) type CodeOwner = Arc<dyn Any + Send + Sync>;

/// A compiled kernel; cheap to clone, callable from any thread.
#[derive(Clone)]
pub struct NativeKernel {
    _code: CodeOwner,
    function: KernelFn,
    buffers: usize,
    sizes: usize,
}

impl NativeKernel {
    /// A kernel whose code `code` keeps alive.
    ///
    /// # Safety
    /// `function` must be the code of `kernel`, compiled with the [`KernelFn`] ABI, and stay
    /// valid while `code` lives.
    pub(crate) unsafe fn new(code: CodeOwner, function: KernelFn, kernel: &Kernel) -> NativeKernel {
        NativeKernel {
            _code: code,
            function,
            buffers: kernel.buffers,
            sizes: kernel.sizes,
        }
    }

    /// Calls the kernel.
    ///
    /// # Safety
    /// `buffers` and `sizes` must have the kernel's counts (checked), and every buffer must be
    /// valid for every index the kernel reads or writes with these sizes.
    pub unsafe fn call(&self, buffers: &[*mut u8], sizes: &[i64]) {
        assert_eq!(buffers.len(), self.buffers, "buffer count");
        assert_eq!(sizes.len(), self.sizes, "size count");
        // SAFETY: the caller guarantees the buffers cover the kernel's accesses.
        unsafe { (self.function)(buffers.as_ptr(), sizes.as_ptr()) }
    }
}

/// Loads the shared library at `path` and finds each of `kernels` in it by name.
///
/// # Safety
/// The library must have been built by [`crate::cranelift::emit_object`] from these very
/// kernels (same KIR under the same names): a symbol of another signature or another body is
/// undefined behaviour when called. Loading runs the library's initialisers.
pub unsafe fn load_library(path: &Path, kernels: &[Kernel]) -> Result<Vec<NativeKernel>, String> {
    // SAFETY: the caller vouches for the library (it holds kernels only, no initialisers).
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("{}: cannot load: {e}", path.display()))?;
    let library: CodeOwner = Arc::new(library);
    let lib = library
        .downcast_ref::<libloading::Library>()
        .expect("just made");
    kernels
        .iter()
        .map(|k| {
            // SAFETY: the caller guarantees the symbol is this kernel with the kernel ABI.
            let function = unsafe { lib.get::<KernelFn>(k.name.as_bytes()) }
                .map_err(|e| format!("{}: kernel `{}`: {e}", path.display(), k.name))?;
            // SAFETY: as above; the library stays loaded while `library` lives.
            Ok(unsafe { NativeKernel::new(library.clone(), *function, k) })
        })
        .collect()
}

/// Links a relocatable object into a shared library with the system C compiler
/// (`$CC`, else `cc`).
pub(crate) fn link_shared(object: &Path, library: &Path) -> Result<(), String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .arg("-shared")
        .arg("-o")
        .arg(library)
        .arg(object)
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

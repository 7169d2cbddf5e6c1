//! [`NativeKernel`]: a kernel as machine code in memory, whether a JIT just made it or it was
//! loaded from an artefact's shared library ([`load_library`]).
//!
//! Every kernel has one ABI, `extern "C" fn(buffers: *const *mut u8, sizes: *const i64)`:
//! the buffer pointers and the size arguments are passed as arrays, so one function-pointer
//! type serves every kernel.

use crate::plan::KernelInfo;
use std::any::Any;
use std::path::Path;
use std::sync::Arc;

/// The signature every kernel is compiled with.
pub type KernelFn = unsafe extern "C" fn(*const *mut u8, *const i64);

/// Whatever keeps a kernel's code mapped (a JIT module, a loaded library).
pub type CodeOwner = Arc<dyn Any + Send + Sync>;

/// A compiled kernel; cheap to clone, callable from any thread.
#[derive(Clone)]
pub struct NativeKernel {
    _code: CodeOwner,
    function: KernelFn,
    buffers: usize,
    sizes: usize,
}

impl NativeKernel {
    /// A kernel taking `buffers` pointers and `sizes` size arguments, whose code `code` keeps
    /// alive.
    ///
    /// # Safety
    /// `function` must be a kernel compiled with the [`KernelFn`] ABI that reads exactly
    /// these counts, and stay valid while `code` lives.
    pub unsafe fn new(
        code: CodeOwner,
        function: KernelFn,
        buffers: usize,
        sizes: usize,
    ) -> NativeKernel {
        NativeKernel {
            _code: code,
            function,
            buffers,
            sizes,
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

/// Loads the shared library at `path` and finds each of `kernels` in it by its symbol.
///
/// # Safety
/// The library must have been built for these very kernels (the symbols are kernels of the
/// [`KernelFn`] ABI with the declared counts): a symbol of another signature or another body
/// is undefined behaviour when called. Loading runs the library's initialisers.
pub unsafe fn load_library(
    path: &Path,
    kernels: &[KernelInfo],
) -> Result<Vec<NativeKernel>, String> {
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
            let function = unsafe { lib.get::<KernelFn>(k.symbol.as_bytes()) }
                .map_err(|_| format!("{}: has no kernel `{}`", path.display(), k.symbol))?;
            // SAFETY: as above; the library stays loaded while `library` lives.
            Ok(unsafe { NativeKernel::new(library.clone(), *function, k.buffers, k.sizes) })
        })
        .collect()
}

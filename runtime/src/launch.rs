//! Calling one kernel step: its sizes evaluated from the bound symbols, its scratch space
//! allocated, and its parallel axis split into ranges run on the current rayon pool.

use crate::native::NativeKernel;
use crate::plan::{Binding, KernelStep};
use kiln_ir::interp::Bindings;
use kiln_ir::Dim;

/// A raw pointer that may cross to the worker threads of one call.
#[derive(Clone, Copy)]
struct SendPtr(*mut u8);
// SAFETY: the kernels' parallel iterations write disjoint memory (the templates' contract),
// and the buffers outlive the scoped threads that use them.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl KernelStep {
    /// Runs `kernel` with `pointers` bound to its buffers (one per [`KernelStep::args`]; `None`
    /// for scratch buffers, which this call allocates), `bindings` giving the symbols, the
    /// parallel axis split into at most `chunks` ranges run on the current rayon pool.
    ///
    /// # Safety
    /// `kernel` must be the step's kernel, and every pointer valid for the buffer the kernel
    /// expects at these sizes; outputs must not alias inputs unless the kernel allows it.
    pub unsafe fn launch(
        &self,
        kernel: &NativeKernel,
        pointers: &[Option<*mut u8>],
        bindings: &Bindings,
        chunks: usize,
    ) -> Result<(), String> {
        let eval = |d: &Dim| {
            d.eval(bindings)
                .filter(|v| *v >= 0)
                .ok_or_else(|| format!("node {}: kernel size `{d}` is not bound", self.node))
        };
        let sizes: Vec<i64> = self.sizes.iter().map(eval).collect::<Result<_, _>>()?;
        let extent = eval(&self.parallel)?;
        if pointers.len() != self.args.len() {
            return Err(format!(
                "node {}: {} buffers for a kernel of {}",
                self.node,
                pointers.len(),
                self.args.len()
            ));
        }
        let mut scratch: Vec<Vec<f32>> = vec![];
        let mut buffers = Vec::with_capacity(self.args.len());
        for (arg, p) in self.args.iter().zip(pointers) {
            let p = match (arg, p) {
                (Binding::Scratch(d), _) => {
                    scratch.push(vec![0.0; eval(d)? as usize]);
                    scratch.last_mut().expect("just pushed").as_mut_ptr().cast()
                }
                (_, Some(p)) => *p,
                (_, None) => return Err(format!("node {}: a buffer is not bound", self.node)),
            };
            buffers.push(SendPtr(p));
        }
        let chunks = (chunks.max(1) as i64).min(extent.max(1));
        let run = |lo: i64, hi: i64| {
            let mut args = vec![lo, hi];
            args.extend_from_slice(&sizes);
            let raw: Vec<*mut u8> = buffers.iter().map(|p| p.0).collect();
            // SAFETY: the caller guarantees the buffers; ranges are disjoint.
            unsafe { kernel.call(&raw, &args) };
        };
        if chunks <= 1 {
            run(0, extent);
        } else {
            let bounds: Vec<i64> = (0..=chunks).map(|c| extent * c / chunks).collect();
            rayon::scope(|s| {
                for w in bounds.windows(2) {
                    let (lo, hi) = (w[0], w[1]);
                    let run = &run;
                    s.spawn(move |_| run(lo, hi));
                }
            });
        }
        Ok(())
    }
}

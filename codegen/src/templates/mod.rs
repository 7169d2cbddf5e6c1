//! Kernel templates: functions that build KIR for an op or a fused group of ops, its shapes
//! (as [`Dim`]s, so symbolic batch and sequence sizes stay kernel arguments) and a
//! [`crate::Schedule`].
//!
//! Every template returns a [`Built`] kernel. Conventions shared by all of them:
//! - the kernel's size parameters 0 and 1 are the `[lo, hi)` range of its parallel axis
//!   (extent [`Built::parallel`]); the runtime splits that range across threads, so the
//!   iterations of the parallel axis must write disjoint memory;
//! - size parameters 2.. are [`Built::sizes`], evaluated from the bound symbols at run time;
//! - each kernel buffer is bound as [`Built::args`] says: a group input or output (dense,
//!   row-major; f32, or i64 for indices), a constant prepared at compile time (packed
//!   weights), or scratch space.

mod activation;
pub mod attention;
pub mod elementwise;
pub mod gemm;
pub mod movement;
pub mod rows;

use crate::kir::{Index, Kernel};
use crate::native::NativeKernel;
use kiln_ir::interp::Bindings;
use kiln_ir::Dim;
use std::sync::Arc;

/// Where one kernel buffer comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// Input `i` of the group.
    Input(usize),
    /// Output `i` of the group.
    Output(usize),
    /// Data prepared at compile time (pre-packed weights, folded constants), as f32.
    Constant(Arc<[f32]>),
    /// Zeroed scratch space of this many f32 elements, private to one call.
    Scratch(Dim),
}

/// A kernel built by a template, with how to call it.
#[derive(Clone, Debug, PartialEq)]
pub struct Built {
    /// The KIR.
    pub kernel: Kernel,
    /// What each kernel buffer is bound to, in buffer order.
    pub args: Vec<Arg>,
    /// Size parameters 2.. of the kernel, as polynomials in the model's symbols.
    pub sizes: Vec<Dim>,
    /// Extent of the parallel axis (size parameters 0 and 1 are a sub-range of `0..parallel`).
    pub parallel: Dim,
}

/// The size parameters of a kernel being built: each distinct non-constant dim is one size
/// parameter, numbered from 2 (after the parallel range).
#[derive(Default)]
pub(crate) struct Sizes(Vec<Dim>);

impl Sizes {
    /// How many size parameters there are besides the parallel range.
    pub(crate) fn count(&self) -> usize {
        self.0.len()
    }

    /// The dims of the size parameters, in parameter order (for [`Built::sizes`]).
    pub(crate) fn into_dims(self) -> Vec<Dim> {
        self.0
    }

    /// The index expression of `d`: a constant, or its size parameter.
    pub(crate) fn index(&mut self, d: &Dim) -> Index {
        if let Some(v) = d.as_known() {
            return Index::Const(v);
        }
        let pos = self.0.iter().position(|x| x == d).unwrap_or_else(|| {
            self.0.push(d.clone());
            self.0.len() - 1
        });
        Index::Size(2 + pos)
    }

    /// The index expression of the product of `dims`.
    pub(crate) fn product(&mut self, dims: &[Dim]) -> Index {
        self.index(&elementwise::product(dims))
    }
}

/// A raw pointer that may cross to the worker threads of one call.
#[derive(Clone, Copy)]
struct SendPtr(*mut u8);
// SAFETY: the kernels' parallel iterations write disjoint memory (the template contract), and
// the buffers outlive the scoped threads that use them.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl Built {
    /// Runs the compiled `kernel` of this template on `inputs` and `outputs` (pointers to
    /// dense buffers of the shapes the template was built for, with `bindings` giving the
    /// symbols), splitting the parallel axis into at most `chunks` ranges run on the current
    /// rayon pool.
    ///
    /// # Safety
    /// Every pointer must be valid for the buffer the template expects at these sizes, and
    /// outputs must not alias inputs unless the template allows it.
    pub unsafe fn call(
        &self,
        kernel: &NativeKernel,
        inputs: &[*mut u8],
        outputs: &[*mut u8],
        bindings: &Bindings,
        chunks: usize,
    ) -> Result<(), String> {
        let eval = |d: &Dim| {
            d.eval(bindings)
                .filter(|v| *v >= 0)
                .ok_or_else(|| format!("kernel `{}`: size `{d}` is not bound", self.kernel.name))
        };
        let sizes: Vec<i64> = self.sizes.iter().map(eval).collect::<Result<_, _>>()?;
        let extent = eval(&self.parallel)?;
        let mut scratch: Vec<Vec<f32>> = vec![];
        for arg in &self.args {
            if let Arg::Scratch(d) = arg {
                scratch.push(vec![0.0; eval(d)? as usize]);
            }
        }
        let mut scratch_iter = scratch.iter_mut();
        let mut pointers = Vec::with_capacity(self.args.len());
        for arg in &self.args {
            let p = match arg {
                Arg::Input(i) => *inputs.get(*i).ok_or("missing input buffer")?,
                Arg::Output(i) => *outputs.get(*i).ok_or("missing output buffer")?,
                Arg::Constant(data) => data.as_ptr() as *mut u8,
                Arg::Scratch(_) => scratch_iter
                    .next()
                    .expect("one scratch vector per scratch arg")
                    .as_mut_ptr()
                    .cast(),
            };
            pointers.push(SendPtr(p));
        }
        let chunks = (chunks.max(1) as i64).min(extent.max(1));
        let run = |lo: i64, hi: i64| {
            let mut args = vec![lo, hi];
            args.extend_from_slice(&sizes);
            let raw: Vec<*mut u8> = pointers.iter().map(|p| p.0).collect();
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

/// Helpers for the templates' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Built;
    use crate::kir::Kernel;
    use crate::native::NativeKernel;
    use kiln_ir::interp::Bindings;
    use kiln_ir::{DType, Tensor};

    /// Compiles `built` and runs it on `inputs` (f32 tensors, or i64 for index inputs),
    /// producing f32 outputs of `output_shapes`, with the parallel axis split into `chunks`
    /// ranges. Outputs start as NaN so that an element the kernel forgets shows up.
    pub fn run(
        built: &Built,
        inputs: &[Tensor],
        output_shapes: &[Vec<usize>],
        bindings: &Bindings,
        chunks: usize,
    ) -> Vec<Tensor> {
        let kernel = compile(&built.kernel);
        let mut f32_inputs: Vec<Vec<f32>> = vec![];
        let mut i64_inputs: Vec<Vec<i64>> = vec![];
        for t in inputs {
            match t.dtype() {
                DType::I64 => i64_inputs.push(t.to_i64_vec()),
                _ => f32_inputs.push(t.to_f32_array().iter().copied().collect()),
            }
        }
        let (mut fi, mut ii) = (f32_inputs.iter_mut(), i64_inputs.iter_mut());
        let input_ptrs: Vec<*mut u8> = inputs
            .iter()
            .map(|t| match t.dtype() {
                DType::I64 => ii.next().unwrap().as_mut_ptr().cast(),
                _ => fi.next().unwrap().as_mut_ptr().cast(),
            })
            .collect();
        let mut outputs: Vec<Vec<f32>> = output_shapes
            .iter()
            .map(|s| vec![f32::NAN; s.iter().product()])
            .collect();
        let output_ptrs: Vec<*mut u8> = outputs.iter_mut().map(|o| o.as_mut_ptr().cast()).collect();
        // SAFETY: the buffers have the shapes the test built the template for.
        unsafe { built.call(&kernel, &input_ptrs, &output_ptrs, bindings, chunks) }
            .expect("sizes bound");
        outputs
            .into_iter()
            .zip(output_shapes)
            .map(|(o, s)| Tensor::from_vec(s, o).unwrap())
            .collect()
    }

    /// Compiles `kernel` with Cranelift, or with LLVM when it has vectors wider than
    /// Cranelift's 4 lanes.
    fn compile(kernel: &Kernel) -> NativeKernel {
        if kernel.widest_lanes() <= 4 {
            return crate::cranelift::compile(kernel).expect("compiles");
        }
        let backend = crate::Backend::llvm();
        backend
            .compile_all(std::slice::from_ref(kernel))
            .expect("compiles")
            .remove(0)
    }
}

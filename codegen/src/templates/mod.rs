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
use bytes::Bytes;
use kiln_ir::interp::Bindings;
use kiln_ir::{DType, Dim};
use kiln_rt::native::NativeKernel;
use kiln_rt::plan::{Binding, KernelStep, DENSE};
use std::sync::Arc;

/// Where one kernel buffer comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// Input `i` of the group.
    Input(usize),
    /// Output `i` of the group.
    Output(usize),
    /// Data prepared at compile time (pre-packed weights, folded constants), stored in the
    /// plan's weights as the kernel reads it.
    Constant(ConstantData),
    /// Zeroed scratch space of this many f32 elements, private to one call.
    Scratch(Dim),
}

/// The bytes of a constant a template prepared, with what the plan records of them: dtype,
/// layout tag and shape ([`kiln_rt::plan::Constant`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ConstantData {
    /// Element type.
    pub dtype: DType,
    /// Layout tag: [`kiln_rt::plan::DENSE`], or the packing's name (`gemm.b_panels`).
    pub layout: String,
    /// The stored shape (for a packing, the shape it packs).
    pub shape: Vec<usize>,
    /// The bytes, little-endian.
    pub bytes: Bytes,
}

impl ConstantData {
    /// f32 values as they are (`layout` dense) or as a packing named `layout` arranged them;
    /// `shape` is what they pack. The values are not copied.
    pub fn f32(layout: &str, shape: Vec<usize>, values: Arc<[f32]>) -> ConstantData {
        /// f32 values seen as their bytes.
        struct F32Bytes(Arc<[f32]>);
        impl AsRef<[u8]> for F32Bytes {
            fn as_ref(&self) -> &[u8] {
                bytemuck::cast_slice(&self.0)
            }
        }
        ConstantData {
            dtype: DType::F32,
            layout: layout.to_string(),
            shape,
            bytes: Bytes::from_owner(F32Bytes(values)),
        }
    }

    /// Dense row-major f32 values of one dimension.
    pub fn dense_f32(values: Arc<[f32]>) -> ConstantData {
        ConstantData::f32(DENSE, vec![values.len()], values)
    }
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

impl Built {
    /// The plan step that calls this kernel (the plan's kernel `kernel`), with each buffer
    /// bound as `bind` says (scratch space stays scratch); `node` is named in errors.
    pub fn step(
        &self,
        kernel: usize,
        mut bind: impl FnMut(&Arg) -> Binding,
        node: &str,
    ) -> KernelStep {
        KernelStep {
            kernel,
            args: self
                .args
                .iter()
                .map(|a| match a {
                    Arg::Scratch(d) => Binding::Scratch(d.clone()),
                    other => bind(other),
                })
                .collect(),
            sizes: self.sizes.clone(),
            parallel: self.parallel.clone(),
            index_check: None,
            node: node.to_string(),
        }
    }

    /// Runs the compiled `kernel` of this template on `inputs` and `outputs` (pointers to
    /// dense buffers of the shapes the template was built for, with `bindings` giving the
    /// symbols), splitting the parallel axis into at most `chunks` ranges run on the current
    /// rayon pool: the template alone, outside any plan (tests and benchmarks).
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
        let mut pointers = Vec::with_capacity(self.args.len());
        for a in &self.args {
            pointers.push(match a {
                Arg::Input(i) => Some(*inputs.get(*i).ok_or("missing input buffer")?),
                Arg::Output(i) => Some(*outputs.get(*i).ok_or("missing output buffer")?),
                Arg::Constant(c) => Some(c.bytes.as_ptr() as *mut u8),
                Arg::Scratch(_) => None,
            });
        }
        let step = self.step(0, |_| Binding::Read(0), &self.kernel.name);
        // SAFETY: the caller's contract.
        unsafe { step.launch(kernel, &pointers, bindings, chunks) }
    }
}

/// Helpers for the templates' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Built;
    use crate::kir::Kernel;
    use kiln_ir::interp::Bindings;
    use kiln_ir::{DType, Tensor};
    use kiln_rt::native::NativeKernel;

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
        crate::backend("llvm")
            .and_then(|llvm| llvm.compile_all(std::slice::from_ref(kernel)))
            .expect("compiles")
            .remove(0)
    }
}

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
pub mod decode_attention;
pub mod elementwise;
pub mod gemm;
pub mod indices;
pub mod movement;
pub mod rows;

use crate::kir::{Index, Kernel};
use bytes::Bytes;
use kiln_ir::interp::Bindings;
use kiln_ir::{DType, Dim};
use kiln_rt::native::NativeKernel;
use kiln_rt::plan::{Binding, KernelStep, DENSE};
use std::sync::{Arc, OnceLock};

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

/// A constant a template prepared, with what the plan records of it: dtype, layout tag and
/// shape ([`kiln_rt::plan::Constant`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ConstantData {
    /// Element type.
    pub dtype: DType,
    /// Layout tag: [`kiln_rt::plan::DENSE`], or the packing's name (`gemm.b_panels`).
    pub layout: String,
    /// The stored shape (for a packing, the shape it packs).
    pub shape: Vec<usize>,
    /// The bytes, little-endian.
    pub bytes: ConstantBytes,
}

impl ConstantData {
    /// f32 values as they are (`layout` dense) or as a packing named `layout` arranged them;
    /// `shape` is what they pack. The values are not copied.
    pub fn f32(layout: &str, shape: Vec<usize>, values: Arc<[f32]>) -> ConstantData {
        ConstantData {
            dtype: DType::F32,
            layout: layout.to_string(),
            shape,
            bytes: ConstantBytes::held(f32_bytes(values)),
        }
    }

    /// Dense row-major f32 values of one dimension.
    pub fn dense_f32(values: Arc<[f32]>) -> ConstantData {
        ConstantData::f32(DENSE, vec![values.len()], values)
    }
}

/// f32 values seen as their little-endian bytes, without a copy.
pub fn f32_bytes<V: AsRef<[f32]> + Send + 'static>(values: V) -> Bytes {
    /// The owner of the values, lending them as bytes.
    struct F32Bytes<V>(V);
    impl<V: AsRef<[f32]>> AsRef<[u8]> for F32Bytes<V> {
        fn as_ref(&self) -> &[u8] {
            bytemuck::cast_slice(self.0.as_ref())
        }
    }
    Bytes::from_owner(F32Bytes(values))
}

/// The bytes of a constant: held, or made on demand from a source (a weight's packing).
///
/// Lowering a model packs nothing: a packing is made when the plan's weights are written
/// (one at a time, each dropped once written, so a model's packed weights are never all in
/// memory at once) or when a JIT-compiled program first needs them (once however many
/// kernels and entry points share the value: clones share what was made).
///
/// ```
/// use bytes::Bytes;
/// use kiln_codegen::templates::ConstantBytes;
/// let source = Bytes::from_static(&[1, 2, 3, 4]);
/// let reversed = ConstantBytes::made(source, "reversed", 4, |b| b.iter().rev().copied().collect::<Vec<u8>>().into());
/// assert_eq!(reversed.len(), 4);
/// assert_eq!(reversed.with(|b| b.to_vec()), [4, 3, 2, 1]);
/// assert_eq!(&reversed.get()[..], [4, 3, 2, 1]);
/// ```
#[derive(Clone)]
pub struct ConstantBytes(Arc<Source>);

/// Where [`ConstantBytes`] come from.
enum Source {
    Held(Bytes),
    Made {
        from: Bytes,
        recipe: String,
        len: usize,
        make: MakeBytes,
        made: OnceLock<Bytes>,
    },
}

/// How made bytes are made from their source.
type MakeBytes = Box<dyn Fn(&[u8]) -> Bytes + Send + Sync>;

/// What makes two [`ConstantBytes`] equal without making them: the content of held bytes;
/// the source (its address and length) and the recipe of made ones.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConstantIdentity {
    /// Held bytes with this 128-bit content hash and length.
    Content(u128, usize),
    /// Bytes made by `recipe` from the source at this address of this length.
    Made(usize, usize, String),
}

impl ConstantBytes {
    /// Bytes held as they are.
    pub fn held(bytes: Bytes) -> ConstantBytes {
        ConstantBytes(Arc::new(Source::Held(bytes)))
    }

    /// `len` bytes that `make` makes from `from` when they are needed; `recipe` names what
    /// `make` does (with every parameter it depends on), so that equal recipes of one source
    /// are made once.
    pub fn made(
        from: Bytes,
        recipe: &str,
        len: usize,
        make: impl Fn(&[u8]) -> Bytes + Send + Sync + 'static,
    ) -> ConstantBytes {
        ConstantBytes(Arc::new(Source::Made {
            from,
            recipe: recipe.to_string(),
            len,
            make: Box::new(make),
            made: OnceLock::new(),
        }))
    }

    /// The number of bytes.
    pub fn len(&self) -> usize {
        match &*self.0 {
            Source::Held(b) => b.len(),
            Source::Made { len, .. } => *len,
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, made (and kept, for every clone) if they are not yet.
    ///
    /// # Panics
    /// If the recipe makes another number of bytes than it promised (a template's defect).
    pub fn get(&self) -> &Bytes {
        match &*self.0 {
            Source::Held(b) => b,
            Source::Made {
                from, make, made, ..
            } => made.get_or_init(|| self.checked(make(from))),
        }
    }

    /// `f` of the bytes, made for this call only if they are not made yet (so that writing a
    /// model's weights holds one packing at a time).
    pub fn with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match &*self.0 {
            Source::Held(b) => f(b),
            Source::Made {
                from, make, made, ..
            } => match made.get() {
                Some(b) => f(b),
                None => f(&self.checked(make(from))),
            },
        }
    }

    /// Whether the bytes are made from a source (rather than held).
    pub fn is_made(&self) -> bool {
        matches!(&*self.0, Source::Made { .. })
    }

    /// What makes these bytes equal to others, without making them.
    pub fn identity(&self) -> ConstantIdentity {
        match &*self.0 {
            Source::Held(b) => ConstantIdentity::Content(xxhash_rust::xxh3::xxh3_128(b), b.len()),
            Source::Made { from, recipe, .. } => {
                ConstantIdentity::Made(from.as_ptr() as usize, from.len(), recipe.clone())
            }
        }
    }

    fn checked(&self, bytes: Bytes) -> Bytes {
        assert_eq!(
            bytes.len(),
            self.len(),
            "a constant's recipe made the wrong size"
        );
        bytes
    }
}

impl std::fmt::Debug for ConstantBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::Held(b) => write!(f, "{} bytes", b.len()),
            Source::Made { recipe, len, .. } => write!(f, "{len} bytes made by {recipe}"),
        }
    }
}

impl PartialEq for ConstantBytes {
    /// Equal bytes (made, if they must be, to compare them).
    fn eq(&self, other: &ConstantBytes) -> bool {
        self.identity() == other.identity() || self.get() == other.get()
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
                Arg::Constant(c) => Some(c.bytes.get().as_ptr() as *mut u8),
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
    use kiln_ir::{DType, Tensor, TensorData};
    use kiln_rt::native::NativeKernel;

    /// Compiles `built` and runs it on `inputs` (tensors of the dtypes the kernel reads),
    /// producing f32 outputs of `output_shapes`, with the parallel axis split into `chunks`
    /// ranges. Outputs start as NaN so that an element the kernel forgets shows up.
    pub fn run(
        built: &Built,
        inputs: &[Tensor],
        output_shapes: &[Vec<usize>],
        bindings: &Bindings,
        chunks: usize,
    ) -> Vec<Tensor> {
        let outputs = output_shapes
            .iter()
            .map(|s| Tensor::from_vec(s, vec![f32::NAN; s.iter().product()]).unwrap())
            .collect();
        run_updating(built, inputs, outputs, bindings, chunks)
    }

    /// [`run`] with the outputs' buffers holding `outputs` before the call (their dtypes are
    /// the ones the kernel writes): for kernels that update a buffer in place, and for
    /// outputs of other dtypes than f32.
    pub fn run_updating(
        built: &Built,
        inputs: &[Tensor],
        outputs: Vec<Tensor>,
        bindings: &Bindings,
        chunks: usize,
    ) -> Vec<Tensor> {
        let kernel = compile(&built.kernel);
        run_compiled(built, &kernel, inputs, outputs, bindings, chunks)
    }

    /// [`run_updating`] with every backend this build has (Cranelift only for kernels of at
    /// most its 4 lanes), asserting that they agree exactly; returns the outputs.
    pub fn run_on_every_backend(
        built: &Built,
        inputs: &[Tensor],
        outputs: Vec<Tensor>,
        bindings: &Bindings,
        chunks: usize,
    ) -> Vec<Tensor> {
        let mut results = vec![];
        for generator in crate::backends() {
            let backend = generator.name();
            if backend == "cranelift" && built.kernel.widest_lanes() > 4 {
                continue;
            }
            let kernel = generator
                .compile_all(std::slice::from_ref(&built.kernel))
                .expect("compiles")
                .remove(0);
            let got = run_compiled(built, &kernel, inputs, outputs.clone(), bindings, chunks);
            results.push((backend, got));
        }
        let (first, want) = results.first().cloned().expect("a backend");
        for (backend, got) in &results[1..] {
            assert_eq!(got, &want, "{backend} and {first} disagree");
        }
        want
    }

    fn run_compiled(
        built: &Built,
        kernel: &NativeKernel,
        inputs: &[Tensor],
        outputs: Vec<Tensor>,
        bindings: &Bindings,
        chunks: usize,
    ) -> Vec<Tensor> {
        let mut inputs: Vec<Buffer> = inputs.iter().map(Buffer::of).collect();
        let mut outputs: Vec<Buffer> = outputs.iter().map(Buffer::of).collect();
        let input_ptrs: Vec<*mut u8> = inputs.iter_mut().map(Buffer::ptr).collect();
        let output_ptrs: Vec<*mut u8> = outputs.iter_mut().map(Buffer::ptr).collect();
        // SAFETY: the buffers have the shapes the test built the template for.
        unsafe { built.call(kernel, &input_ptrs, &output_ptrs, bindings, chunks) }
            .expect("sizes bound");
        outputs.iter().map(Buffer::tensor).collect()
    }

    /// A tensor's row-major bytes in 8-byte aligned memory, for a kernel to read or write.
    struct Buffer {
        words: Vec<u64>,
        dtype: DType,
        shape: Vec<usize>,
        bytes: usize,
    }

    impl Buffer {
        fn of(t: &Tensor) -> Buffer {
            let data = t.to_data();
            let bytes = data.bytes();
            let mut words = vec![0u64; bytes.len().div_ceil(8) + 1];
            bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
            Buffer {
                words,
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
                bytes: bytes.len(),
            }
        }

        fn ptr(&mut self) -> *mut u8 {
            self.words.as_mut_ptr().cast()
        }

        fn tensor(&self) -> Tensor {
            let bytes = &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.bytes];
            let data = TensorData::new(self.dtype, self.shape.clone(), bytes.to_vec().into());
            Tensor::from_data(&data.unwrap())
        }
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

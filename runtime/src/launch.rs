//! Calling one kernel step: its sizes taken from the run's ([`crate::sizes`]), its scratch
//! space allocated, and its parallel axis split into ranges run on the current rayon pool.
//!
//! A decode step launches hundreds of kernels of a few microseconds each, so the fixed cost
//! of a launch matters: the sizes and buffer pointers live on the stack (no allocation for
//! kernels of up to [`INLINE`] of each), scratch space is reused from a per-thread pool (still
//! zeroed for each call), and two ranges are run by one `rayon::join` (this thread runs the
//! first, another the second if it steals it) rather than by jobs spawned into a scope.

use crate::native::NativeKernel;
use crate::plan::{Binding, KernelStep};
use crate::sizes::{KernelSizes, SizeId, SizeTable, Sizes};
use kiln_ir::interp::Bindings;
use std::cell::RefCell;

/// Buffers and sizes a launch keeps on the stack; kernels with more use the heap.
const INLINE: usize = 24;

/// The most f32 elements of scratch space a thread keeps between calls (16 MiB); larger
/// buffers are freed after their call.
const KEEP_SCRATCH: usize = 4 << 20;

thread_local! {
    /// Scratch buffers kept for this thread's next launches.
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A raw pointer that may cross to the worker threads of one call.
#[derive(Clone, Copy)]
struct SendPtr(*mut u8);
// SAFETY: the kernels' parallel iterations write disjoint memory (the templates' contract),
// and the buffers outlive the scoped threads that use them.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// A slice of up to [`INLINE`] values on the stack, or on the heap beyond.
enum Small<T: Copy> {
    Inline([T; INLINE], usize),
    Heap(Vec<T>),
}

impl<T: Copy> Small<T> {
    fn new(fill: T, capacity: usize) -> Small<T> {
        if capacity <= INLINE {
            Small::Inline([fill; INLINE], 0)
        } else {
            Small::Heap(Vec::with_capacity(capacity))
        }
    }

    fn push(&mut self, v: T) {
        match self {
            Small::Inline(values, len) if *len < INLINE => {
                values[*len] = v;
                *len += 1;
            }
            Small::Inline(values, len) => {
                let mut heap = values[..*len].to_vec();
                heap.push(v);
                *self = Small::Heap(heap);
            }
            Small::Heap(values) => values.push(v),
        }
    }

    fn as_slice(&self) -> &[T] {
        match self {
            Small::Inline(values, len) => &values[..*len],
            Small::Heap(values) => values,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        match self {
            Small::Inline(values, len) => &mut values[..*len],
            Small::Heap(values) => values,
        }
    }
}

/// Zeroed scratch buffers for one call, taken from this thread's pool and given back (the
/// small ones) when dropped.
struct ScratchSpace(Vec<Vec<f32>>);

impl ScratchSpace {
    /// A zeroed buffer of `len` elements that lives as long as `self`.
    fn buffer(&mut self, len: usize) -> *mut u8 {
        let reused = (len <= KEEP_SCRATCH)
            .then(|| SCRATCH.with(|pool| pool.borrow_mut().pop()))
            .flatten();
        let buffer = match reused {
            Some(mut b) => {
                b.clear();
                b.resize(len, 0.0);
                b
            }
            None => vec![0.0; len],
        };
        self.0.push(buffer);
        self.0.last_mut().expect("just pushed").as_mut_ptr().cast()
    }
}

impl Drop for ScratchSpace {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        SCRATCH.with(|pool| {
            let mut pool = pool.borrow_mut();
            for b in self.0.drain(..) {
                if b.capacity() <= KEEP_SCRATCH && pool.len() < 8 {
                    pool.push(b);
                }
            }
        });
    }
}

impl KernelStep {
    /// Runs `kernel` with `pointers` bound to its buffers (one per [`KernelStep::args`]; `None`
    /// for scratch buffers, which this call allocates), `bindings` giving the symbols, the
    /// parallel axis split into at most `chunks` ranges run on the current rayon pool: the
    /// step alone, outside a program (which evaluates its steps' sizes once per run).
    ///
    /// # Safety
    /// As for [`KernelStep::launch_sized`].
    pub unsafe fn launch(
        &self,
        kernel: &NativeKernel,
        pointers: &[Option<*mut u8>],
        bindings: &Bindings,
        chunks: usize,
    ) -> Result<(), String> {
        let table = SizeTable::of_step(self);
        let sizes = table.kernel(0).expect("the table of one kernel step");
        // SAFETY: the caller's contract.
        unsafe { self.launch_sized(kernel, pointers, sizes, &table.evaluate(bindings), chunks) }
    }

    /// As [`KernelStep::launch`], with the step's sizes (`step`, in the table of `run`) taken
    /// from the run's.
    ///
    /// # Safety
    /// `kernel` must be the step's kernel, and every pointer valid for the buffer the kernel
    /// expects at these sizes; outputs must not alias inputs unless the kernel allows it.
    pub(crate) unsafe fn launch_sized(
        &self,
        kernel: &NativeKernel,
        pointers: &[Option<*mut u8>],
        step: &KernelSizes,
        run: &Sizes,
        chunks: usize,
    ) -> Result<(), String> {
        let eval = |d: SizeId| {
            run.value(d).filter(|v| *v >= 0).ok_or_else(|| {
                let d = run.table().dim(d);
                format!("node {}: kernel size `{d}` is not bound", self.node)
            })
        };
        // Size arguments 0 and 1 are the range, set per chunk.
        let mut sizes = Small::new(0i64, 2 + step.sizes.len());
        sizes.push(0);
        sizes.push(0);
        for &d in &step.sizes {
            sizes.push(eval(d)?);
        }
        let extent = eval(step.parallel)?;
        if pointers.len() != self.args.len() {
            return Err(format!(
                "node {}: {} buffers for a kernel of {}",
                self.node,
                pointers.len(),
                self.args.len()
            ));
        }
        let mut scratch = ScratchSpace(vec![]);
        let mut buffers = Small::new(SendPtr(std::ptr::null_mut()), self.args.len());
        for ((arg, p), len) in self.args.iter().zip(pointers).zip(&step.scratch) {
            let p = match (arg, p, len) {
                (Binding::Scratch(_), _, Some(len)) => scratch.buffer(eval(*len)? as usize),
                (_, Some(p), _) => *p,
                _ => return Err(format!("node {}: a buffer is not bound", self.node)),
            };
            buffers.push(SendPtr(p));
        }
        let chunks = (chunks.max(1) as i64).min(extent.max(1));
        let run = |lo: i64, hi: i64| {
            let mut args = match &sizes {
                Small::Inline(values, len) => Small::Inline(*values, *len),
                Small::Heap(values) => Small::Heap(values.clone()),
            };
            let range = args.as_mut_slice();
            (range[0], range[1]) = (lo, hi);
            let mut raw = Small::new(std::ptr::null_mut(), buffers.as_slice().len());
            for p in buffers.as_slice() {
                raw.push(p.0);
            }
            // SAFETY: the caller guarantees the buffers; ranges are disjoint.
            unsafe { kernel.call(raw.as_slice(), args.as_slice()) };
        };
        run_chunks(&run, extent, 0, chunks, chunks);
        Ok(())
    }
}

/// Kernels that read and write fewer bytes than this run on one thread: handing half of the
/// work to another thread costs about a microsecond, which a kernel this small (a decode
/// step's norms, rotations, cache writes and softmax combines) does not repay.
const SERIAL_BELOW_BYTES: usize = 64 << 10;

/// The ranges to split a kernel that touches `bytes` bytes into, on `threads` threads.
pub(crate) fn chunks_for(bytes: usize, threads: usize) -> usize {
    match bytes < SERIAL_BELOW_BYTES {
        true => 1,
        false => threads,
    }
}

/// Runs chunks `[first, first + count)` of `total`, chunk `c` covering `[extent * c / total,
/// extent * (c + 1) / total)`: one here, more split in two halves by `rayon::join` (this
/// thread runs the first half; another thread of the current pool may steal the second).
fn run_chunks(run: &(impl Fn(i64, i64) + Sync), extent: i64, first: i64, count: i64, total: i64) {
    let bound = |c: i64| extent * c / total;
    if count <= 1 {
        run(bound(first), bound(first + count));
        return;
    }
    let half = count / 2;
    rayon::join(
        || run_chunks(run, extent, first, half, total),
        || run_chunks(run, extent, first + half, count - half, total),
    );
}

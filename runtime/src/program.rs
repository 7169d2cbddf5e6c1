//! [`Program`]: a [`Plan`] with its weights and its kernels' code, ready to run, and its
//! execution.
//!
//! A program serves every binding of the model's symbolic dims: kernel sizes are evaluated
//! from the bound symbols at each run. Intermediates that kernels produce live in one arena,
//! planned by liveness for the run's sizes ([`crate::memory`]); reshapes are views;
//! constants are read in place from the weights (memory-mapped for artefacts); parallel
//! loops run on a rayon pool of the requested size.

use crate::arena::{Arena, ArenaValues};
use crate::launch::chunks_for;
use crate::native::NativeKernel;
use crate::plan::{
    describe, Binding, CompileStats, IndexCheck, InterpStep, KernelStep, Plan, Report, Step,
    ValueIndex,
};
use crate::sizes::{SizeId, SizeTable, Sizes};
use crate::weights::Weights;
use kiln_ir::interp::{
    bind_given_shapes, check_declared, check_results_fit, eval_op, Bindings, RunError,
};
use kiln_ir::{DType, Tensor, TensorData, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// Figures of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunStats {
    /// Bytes of the arena holding the kernels' intermediates (the peak).
    pub arena_peak: usize,
    /// Bytes those intermediates would take without sharing memory.
    pub arena_total: usize,
    /// Wall time of each step, in seconds, in the order of [`Program::reports`].
    pub step_seconds: Vec<f64>,
}

/// A buffer the caller lends a run for a state input (a KV cache): its dtype, shape and
/// bytes, row-major. The run writes the state's new value into it, in place.
pub struct StateBuffer<'a> {
    dtype: DType,
    shape: Vec<usize>,
    bytes: &'a mut [u8],
}

impl<'a> StateBuffer<'a> {
    /// A state of `dtype` and `shape` in `bytes`; an error unless they hold exactly that many
    /// elements, aligned for the dtype.
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: &'a mut [u8]) -> Result<Self, String> {
        check_bytes("a state buffer", dtype, &shape, bytes)?;
        Ok(StateBuffer {
            dtype,
            shape,
            bytes,
        })
    }

    /// The buffer of `tensor` (made row-major first if it is not).
    pub fn of_tensor(tensor: &'a mut Tensor) -> StateBuffer<'a> {
        if !kiln_ir::with_array!(&*tensor, a => a.is_standard_layout()) {
            *tensor = standard(tensor.clone());
        }
        let (dtype, shape) = (tensor.dtype(), tensor.shape().to_vec());
        let bytes = kiln_ir::with_array!(tensor, a => {
            let n = std::mem::size_of_val(a.as_slice_mut().expect("row-major"));
            // SAFETY: the tensor's elements, `n` bytes, borrowed mutably for 'a.
            unsafe { std::slice::from_raw_parts_mut(a.as_mut_ptr().cast::<u8>(), n) }
        });
        StateBuffer {
            dtype,
            shape,
            bytes,
        }
    }
}

/// Checks that `bytes` (described as `what` in errors) hold exactly the elements of `dtype`
/// and `shape`, aligned for the dtype (an empty buffer may sit anywhere).
fn check_bytes(what: &str, dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<(), String> {
    if kiln_ir::host::bytes_of(shape, dtype.size()) != Some(bytes.len()) {
        return Err(format!(
            "{what} of {} bytes for {dtype}{shape:?}",
            bytes.len()
        ));
    }
    if !bytes.is_empty() && bytes.as_ptr().align_offset(dtype.size()) != 0 {
        return Err(format!("{what} not aligned for {dtype}"));
    }
    Ok(())
}

/// An input of a run, held by the caller and read in place: a tensor, or the row-major bytes
/// of an array the caller owns ([`InputBytes`]: a numpy array's, a C caller's).
pub enum Input<'a> {
    /// A tensor (copied first only if it is not row-major).
    Tensor(&'a Tensor),
    /// Row-major bytes of a dtype and shape.
    Bytes(InputBytes<'a>),
}

/// The row-major bytes of an input of `dtype` and `shape`, borrowed for a run and never
/// copied unless an interpreter step reads them.
#[derive(Clone, Debug)]
pub struct InputBytes<'a> {
    dtype: DType,
    shape: Vec<usize>,
    bytes: &'a [u8],
}

impl<'a> InputBytes<'a> {
    /// An input of `dtype` and `shape` in `bytes`; an error unless they hold exactly that many
    /// elements, aligned for the dtype.
    ///
    /// ```
    /// use kiln_ir::DType;
    /// let data = [1.0f32, 2.0, 3.0];
    /// let bytes: &[u8] = bytemuck::cast_slice(&data);
    /// assert!(kiln_rt::InputBytes::new(DType::F32, vec![3], bytes).is_ok());
    /// assert!(kiln_rt::InputBytes::new(DType::F32, vec![4], bytes).is_err());
    /// ```
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: &'a [u8]) -> Result<Self, String> {
        check_bytes("input bytes", dtype, &shape, bytes)?;
        Ok(InputBytes {
            dtype,
            shape,
            bytes,
        })
    }
}

impl Input<'_> {
    fn dtype(&self) -> DType {
        match self {
            Input::Tensor(t) => t.dtype(),
            Input::Bytes(b) => b.dtype,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Input::Tensor(t) => t.shape(),
            Input::Bytes(b) => &b.shape,
        }
    }
}

/// A compiled model, ready to run; runs of one program may come from several threads (they
/// take turns on its arena).
pub struct Program {
    plan: Plan,
    weights: Weights,
    kernels: Vec<NativeKernel>,
    /// Constants the interpreter read, as tensors (made on first use).
    constant_tensors: Vec<OnceLock<Arc<Tensor>>>,
    stats: CompileStats,
    pool: Option<rayon::ThreadPool>,
    threads: usize,
    /// The plan's size expressions, evaluated once per run.
    sizes: SizeTable,
    /// The values that live in the arena, and when.
    arena_values: ArenaValues,
    arena: Mutex<Arena>,
}

/// Where a value lives during a run.
#[derive(Clone)]
enum Slot<'a> {
    /// In the arena, at this byte offset.
    Arena(usize),
    /// In a tensor the run made (interpreter results, inputs that needed a dense copy).
    Owned(Arc<Tensor>),
    /// In a tensor the caller holds (an input): never copied.
    Held(&'a Tensor),
    /// In bytes the caller holds (an input): never copied.
    Lent(&'a InputBytes<'a>),
    /// In the caller's buffer of state `i` (a KV cache), written in place.
    State(usize),
    /// A constant of the plan, in the weights.
    Constant(usize),
}

#[derive(Clone)]
struct Live<'a> {
    slot: Slot<'a>,
    shape: Vec<usize>,
}

impl Program {
    /// A program of `plan`, whose constants are `weights` and whose kernels (in
    /// [`Plan::kernels`] order) are `kernels`, run on `threads` threads; `seconds` is the time
    /// it took to make (compile or load), for [`Program::stats`].
    ///
    /// # Safety
    /// Each of `kernels` must be the code of the plan's kernel of the same index, compiled
    /// for the buffers and sizes its steps bind: the plan's steps call them with no other
    /// check.
    pub unsafe fn new(
        plan: Plan,
        weights: Weights,
        kernels: Vec<NativeKernel>,
        threads: usize,
        seconds: f64,
    ) -> Result<Program, String> {
        plan.validate()?;
        if kernels.len() != plan.kernels.len() {
            return Err(format!(
                "{} kernels for a plan of {}",
                kernels.len(),
                plan.kernels.len()
            ));
        }
        if weights.len() != plan.constants.len() {
            return Err(format!(
                "{} constants for a plan of {}",
                weights.len(),
                plan.constants.len()
            ));
        }
        for (i, c) in plan.constants.iter().enumerate() {
            if weights.get(i).len() as u64 != c.bytes {
                return Err(format!(
                    "constant {i} has {} bytes, the plan says {}",
                    weights.get(i).len(),
                    c.bytes
                ));
            }
        }
        let threads = threads.max(1);
        let pool = match threads {
            1 => None,
            _ => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| format!("thread pool: {e}"))?,
            ),
        };
        let stats = CompileStats {
            seconds,
            ..plan.stats.clone()
        };
        Ok(Program {
            constant_tensors: plan.constants.iter().map(|_| OnceLock::new()).collect(),
            sizes: SizeTable::of(&plan),
            arena_values: ArenaValues::of(&plan),
            plan,
            weights,
            kernels,
            stats,
            pool,
            threads,
            arena: Default::default(),
        })
    }

    /// The plan this program runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// How each step was compiled, in execution order.
    pub fn reports(&self) -> &[Report] {
        &self.plan.reports
    }

    /// Figures of the compilation (or, for a loaded artefact, of loading it).
    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// The model's inputs, in declaration order.
    pub fn inputs(&self) -> impl Iterator<Item = &Value> {
        self.plan.inputs.iter().map(|&v| &self.plan.values[v])
    }

    /// The model's outputs (name, declared value), in declaration order.
    pub fn outputs(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.plan
            .outputs
            .iter()
            .map(|(name, v)| (name.as_str(), &self.plan.values[*v]))
    }

    /// Runs the program on `feeds` (input name to value); returns the outputs in declaration
    /// order and the run's memory figures. States ([`Plan::states`]) are read from `feeds` and
    /// their new values returned as outputs, like any other: the run updates copies.
    pub fn run(
        &self,
        feeds: &HashMap<String, Tensor>,
    ) -> Result<(Vec<(String, Tensor)>, RunStats), RunError> {
        self.run_inputs(&tensor_inputs(feeds))
    }

    /// [`Program::run`] on inputs the caller holds as tensors or as bytes ([`Input`]), read
    /// in place (the states are copied, as there).
    pub fn run_inputs(
        &self,
        feeds: &HashMap<&str, Input>,
    ) -> Result<(Vec<(String, Tensor)>, RunStats), RunError> {
        let states = self.plan.states();
        let mut copies: Vec<(usize, String, Tensor)> = Vec::with_capacity(states.len());
        for &(i, o) in &states {
            let name = &self.plan.values[self.plan.inputs[i]].name;
            let copy = match feeds.get(name.as_str()) {
                Some(Input::Tensor(t)) => standard((*t).clone()),
                Some(Input::Bytes(b)) => tensor_of_bytes(b.bytes, b.dtype, &b.shape, &b.shape),
                None => return Err(RunError(format!("missing input `{name}`"))),
            };
            copies.push((o, name.clone(), copy));
        }
        let mut lent: HashMap<String, StateBuffer> = copies
            .iter_mut()
            .map(|(_, name, t)| (name.clone(), StateBuffer::of_tensor(t)))
            .collect();
        let (mut outputs, stats) = self.run_inputs_in_place(feeds, &mut lent)?;
        drop(lent);
        for (o, name, t) in copies {
            outputs.insert(o.min(outputs.len()), (name, t));
        }
        Ok((outputs, stats))
    }

    /// Runs the program on `feeds` with the states ([`Plan::states`]) in `states` (input
    /// name to the caller's buffer): each state's new value is written into its buffer, in
    /// place, so a KV cache is never copied. Returns the other outputs in declaration order
    /// and the run's memory figures. A state missing from `states` is an error; one given
    /// only in `feeds` is not updated.
    pub fn run_in_place(
        &self,
        feeds: &HashMap<String, Tensor>,
        states: &mut HashMap<String, StateBuffer>,
    ) -> Result<(Vec<(String, Tensor)>, RunStats), RunError> {
        self.run_inputs_in_place(&tensor_inputs(feeds), states)
    }

    /// [`Program::run_in_place`] on inputs the caller holds as tensors or as bytes
    /// ([`Input`]), read in place.
    pub fn run_inputs_in_place(
        &self,
        feeds: &HashMap<&str, Input>,
        states: &mut HashMap<String, StateBuffer>,
    ) -> Result<(Vec<(String, Tensor)>, RunStats), RunError> {
        // Runs of one program take turns on its arena. The turn is taken here, on the calling
        // thread, before entering the pool: a pool thread that waited for it inside the pool
        // could be one that already holds it for another run, having picked up this run's
        // job while waiting for its own kernels (rayon's work stealing), and deadlock.
        let mut arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        let arena = &mut *arena;
        match &self.pool {
            Some(pool) => pool.install(|| self.run_here(feeds, states, arena)),
            None => self.run_here(feeds, states, arena),
        }
    }

    fn run_here<'f>(
        &self,
        feeds: &'f HashMap<&str, Input<'f>>,
        lent: &mut HashMap<String, StateBuffer>,
        arena: &mut Arena,
    ) -> Result<(Vec<(String, Tensor)>, RunStats), RunError> {
        let plan = &self.plan;
        let inputs: Vec<&Value> = self.inputs().collect();
        let states = plan.states();
        // The states' buffers, by their position in `states`.
        let mut buffers: Vec<(*mut u8, &[usize], DType)> = Vec::with_capacity(states.len());
        let mut by_name: HashMap<&str, &mut StateBuffer> =
            lent.iter_mut().map(|(k, b)| (k.as_str(), b)).collect();
        for &(i, _) in &states {
            let value = inputs[i];
            let b = by_name
                .remove(value.name.as_str())
                .ok_or_else(|| RunError(format!("missing the buffer of state `{}`", value.name)))?;
            if b.dtype != value.ty.dtype {
                return Err(RunError(format!(
                    "state `{}` is {} but the model declares {}",
                    value.name, b.dtype, value.ty.dtype
                )));
            }
            buffers.push((b.bytes.as_mut_ptr(), &b.shape[..], b.dtype));
        }
        let mut given: HashMap<&str, (DType, &[usize])> = feeds
            .iter()
            .map(|(name, t)| (*name, (t.dtype(), t.shape())))
            .collect();
        for (&(i, _), &(_, shape, dtype)) in states.iter().zip(&buffers) {
            given.insert(inputs[i].name.as_str(), (dtype, shape));
        }
        let bindings = bind_given_shapes(&inputs, &given)?;
        let sizes = self.sizes.evaluate(&bindings);
        // The arena is reused across runs.
        let (arena_peak, arena_total) = arena.prepare(&self.arena_values, plan, &sizes)?;
        let mut stats = RunStats {
            arena_peak,
            arena_total,
            step_seconds: Vec::with_capacity(plan.steps.len()),
        };
        let base = arena.base();
        let mut live: Vec<Option<Live>> = vec![None; plan.values.len()];
        for (s, &(i, _)) in states.iter().enumerate() {
            let shape = buffers[s].1.to_vec();
            live[plan.inputs[i]] = Some(Live {
                slot: Slot::State(s),
                shape,
            });
        }
        for (input, &v) in inputs.iter().zip(&plan.inputs) {
            if live[v].is_some() {
                continue;
            }
            let given = feeds
                .get(input.name.as_str())
                .ok_or_else(|| RunError(format!("missing input `{}`", input.name)))?;
            let slot = match given {
                Input::Tensor(t) if kiln_ir::with_array!(t, a => a.is_standard_layout()) => {
                    Slot::Held(t)
                }
                Input::Tensor(t) => Slot::Owned(Arc::new(standard((*t).clone()))),
                Input::Bytes(b) => Slot::Lent(b),
            };
            let shape = given.shape().to_vec();
            live[v] = Some(Live { slot, shape });
        }
        for (c, constant) in plan.constants.iter().enumerate() {
            if let Some(v) = constant.value {
                let shape = constant.shape.clone();
                live[v] = Some(Live {
                    slot: Slot::Constant(c),
                    shape,
                });
            }
        }
        for (s, step) in plan.steps.iter().enumerate() {
            let started = Instant::now();
            match step {
                Step::View {
                    input,
                    output,
                    node,
                } => {
                    let shape = self.concrete(*output, &sizes)?;
                    let from = self.live_value(&live, *input, node)?;
                    let have: usize = from.shape.iter().product();
                    let want: usize = shape.iter().product();
                    if have != want {
                        return Err(RunError(format!(
                            "node {node}: cannot reshape `{}` of shape {:?} ({have} elements) to {shape:?} ({want} elements)",
                            plan.values[*input].name,
                            from.shape
                        )));
                    }
                    let slot = from.slot.clone();
                    live[*output] = Some(Live { slot, shape });
                }
                Step::Interp(step) => self.interpret(step, &bindings, base, &buffers, &mut live)?,
                Step::Kernel(step) => {
                    let at = Placement {
                        arena,
                        base,
                        states: &buffers,
                    };
                    self.launch(s, step, &sizes, &bindings, &at, &mut live)?
                }
            }
            stats.step_seconds.push(started.elapsed().as_secs_f64());
        }
        let mut outputs = Vec::with_capacity(plan.outputs.len());
        for (o, (name, v)) in plan.outputs.iter().enumerate() {
            let l = live[*v]
                .as_ref()
                .ok_or_else(|| RunError(format!("output `{name}` was never computed")))?;
            match states.iter().position(|&(_, so)| so == o) {
                None => outputs.push((name.clone(), self.materialise(*v, l, base, &buffers))),
                Some(s) if matches!(l.slot, Slot::State(at) if at == s) => {}
                Some(s) => self.write_back(*v, l, base, &buffers, s)?,
            }
        }
        Ok((outputs, stats))
    }

    /// Runs kernel step `s`.
    fn launch<'a>(
        &self,
        s: usize,
        step: &KernelStep,
        sizes: &Sizes,
        bindings: &Bindings,
        at: &Placement,
        live: &mut [Option<Live<'a>>],
    ) -> Result<(), RunError> {
        let (base, states) = (at.base, at.states);
        let step_sizes = self
            .sizes
            .kernel(s)
            .ok_or_else(|| RunError(format!("node {}: step {s} has no kernel sizes", step.node)))?;
        if let (Some(check), Some(ranges)) = (&step.index_check, &step_sizes.index_ranges) {
            let l = self.live_value(live, check.value, &step.node)?;
            self.check_indices(check, ranges, l, (base, states), sizes, bindings)
                .map_err(|e| RunError(format!("node {}: {}", step.node, e.0)))?;
        }
        let plan = &self.plan;
        let mut pointers = Vec::with_capacity(step.args.len());
        // The bytes the kernel reads and writes whole (not the buffers it updates in part).
        let mut bytes = 0usize;
        for arg in &step.args {
            pointers.push(match arg {
                Binding::Read(v) => {
                    let l = self.live_value(live, *v, &step.node)?;
                    let elements = l.shape.iter().product::<usize>();
                    bytes = bytes.saturating_add(elements * plan.values[*v].ty.dtype.size());
                    if Some(elements) != sizes.elements(*v) {
                        let want = self.concrete(*v, sizes)?;
                        return Err(RunError(format!(
                            "node {}: its input `{}` is {:?} but the compiled kernel expects {want:?}",
                            step.node, plan.values[*v].name, l.shape
                        )));
                    }
                    Some(self.pointer(l, base, states))
                }
                Binding::Write(v) => {
                    let shape = self.concrete(*v, sizes)?;
                    let elements = shape.iter().product::<usize>();
                    bytes = bytes.saturating_add(elements * plan.values[*v].ty.dtype.size());
                    let offset = at.arena.offset(&self.arena_values, *v).ok_or_else(|| {
                        RunError(format!(
                            "node {}: no arena slot was planned for `{}`",
                            step.node, plan.values[*v].name
                        ))
                    })?;
                    let l = Live {
                        slot: Slot::Arena(offset),
                        shape,
                    };
                    let p = self.pointer(&l, base, states);
                    live[*v] = Some(l);
                    Some(p)
                }
                Binding::Update { input, output } => {
                    let l = self.live_value(live, *input, &step.node)?.clone();
                    if !matches!(l.slot, Slot::Arena(_) | Slot::State(_)) {
                        return Err(RunError(format!(
                            "node {}: `{}` is updated in place but is not a buffer the run may write",
                            step.node, plan.values[*input].name
                        )));
                    }
                    let want = self.concrete(*output, sizes)?;
                    if l.shape != want {
                        return Err(RunError(format!(
                            "node {}: `{}` is {:?} but the compiled kernel updates {want:?}",
                            step.node, plan.values[*input].name, l.shape
                        )));
                    }
                    let p = self.pointer(&l, base, states);
                    live[*output] = Some(l);
                    Some(p)
                }
                Binding::Constant(c) => {
                    let weights = self.weights.get(*c);
                    bytes = bytes.saturating_add(weights.len());
                    Some(weights.as_ptr() as *mut u8)
                }
                Binding::Scratch(_) => None,
            });
        }
        let chunks = match &self.pool {
            Some(_) => chunks_for(bytes, self.threads),
            None => 1,
        };
        // SAFETY: every buffer was checked against (or allocated for) the shapes the kernel
        // was built for, evaluated with these bindings; the kernel is the plan's.
        unsafe {
            step.launch_sized(
                &self.kernels[step.kernel],
                &pointers,
                step_sizes,
                sizes,
                chunks,
            )
        }
        .map_err(RunError)
    }

    /// Runs one node on the interpreter.
    fn interpret<'a>(
        &self,
        step: &InterpStep,
        bindings: &Bindings,
        base: *mut u8,
        states: &States,
        live: &mut [Option<Live<'a>>],
    ) -> Result<(), RunError> {
        let plan = &self.plan;
        let op = &step.op;
        let label = format!("node `{}` ({})", step.node, op.kind);
        let mut args: Vec<Option<Cow<Tensor>>> = Vec::with_capacity(step.inputs.len());
        for v in &step.inputs {
            args.push(match v {
                Some(v) => {
                    let l = self.live_value(live, *v, &step.node)?;
                    Some(self.as_tensor(*v, l, base, states))
                }
                None => None,
            });
        }
        let refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_deref()).collect();
        let declared = step.outputs.iter().map(|&v| &plan.values[v]);
        check_results_fit(&label, declared, bindings)?;
        let results =
            eval_op(op, &refs, bindings).map_err(|e| RunError(format!("{label}: {e}")))?;
        if results.len() < step.outputs.len() {
            return Err(RunError(format!(
                "{label}: produced {} outputs, {} declared",
                results.len(),
                step.outputs.len()
            )));
        }
        drop(args);
        for (&v, t) in step.outputs.iter().zip(results) {
            let declared = &plan.values[v];
            check_declared(&t, declared, bindings)
                .map_err(|e| RunError(format!("{label}: output `{}` {e}", declared.name)))?;
            live[v] = Some(Live {
                shape: t.shape().to_vec(),
                slot: Slot::Owned(Arc::new(standard(t))),
            });
        }
        Ok(())
    }

    /// The live value `v` that the step of node `user` reads; an error naming both when no
    /// earlier step produced it (a defect of the plan, reported instead of a panic).
    fn live_value<'l, 'a>(
        &self,
        live: &'l [Option<Live<'a>>],
        v: ValueIndex,
        user: &str,
    ) -> Result<&'l Live<'a>, RunError> {
        live[v].as_ref().ok_or_else(|| {
            RunError(format!(
                "node {user}: its input `{}` was not computed by any earlier step",
                self.plan.values[v].name
            ))
        })
    }

    /// The concrete shape of `v` in this run.
    fn concrete(&self, v: ValueIndex, sizes: &Sizes) -> Result<Vec<usize>, RunError> {
        sizes.shape(v).ok_or_else(|| {
            RunError(format!(
                "value `{}`: its shape is not determined by the inputs",
                self.plan.values[v].name
            ))
        })
    }

    /// The data pointer of a live value.
    fn pointer(&self, l: &Live, base: *mut u8, states: &States) -> *mut u8 {
        if l.shape.contains(&0) {
            return EMPTY.as_ptr() as *mut u8;
        }
        match &l.slot {
            Slot::Owned(t) => kiln_ir::with_array!(&**t, a => a.as_ptr() as *mut u8),
            Slot::Held(t) => kiln_ir::with_array!(t, a => a.as_ptr() as *mut u8),
            Slot::Lent(b) => b.bytes.as_ptr() as *mut u8,
            Slot::Constant(c) => self.weights.get(*c).as_ptr() as *mut u8,
            Slot::State(s) => states[*s].0,
            // SAFETY: the offset lies inside the arena (planned from the same sizes).
            Slot::Arena(o) => unsafe { base.add(*o) },
        }
    }

    /// Constant `c` as a tensor (made once).
    fn constant_tensor(&self, c: usize) -> &Arc<Tensor> {
        self.constant_tensors[c].get_or_init(|| {
            let info = &self.plan.constants[c];
            let data = TensorData::new(info.dtype, info.shape.clone(), self.weights.get(c).clone())
                .expect("dense constants were validated against their shape");
            Arc::new(Tensor::from_data(&data))
        })
    }

    /// A live value as a tensor for the interpreter (borrowed when it already is one).
    fn as_tensor<'s>(
        &'s self,
        v: ValueIndex,
        l: &'s Live,
        base: *mut u8,
        states: &States,
    ) -> Cow<'s, Tensor> {
        let held: Option<&Tensor> = match &l.slot {
            Slot::Owned(t) => Some(t),
            Slot::Held(t) => Some(t),
            Slot::Constant(c) => Some(self.constant_tensor(*c)),
            Slot::Arena(_) | Slot::State(_) | Slot::Lent(_) => None,
        };
        match held {
            Some(t) if t.shape() == l.shape.as_slice() => Cow::Borrowed(t),
            _ => Cow::Owned(self.materialise(v, l, base, states)),
        }
    }

    /// A copy of a live value as a tensor.
    fn materialise(&self, v: ValueIndex, l: &Live, base: *mut u8, states: &States) -> Tensor {
        let reshaped = |t: &Tensor| t.reshape(&l.shape).expect("views keep the element count");
        match &l.slot {
            Slot::Owned(t) => reshaped(t),
            Slot::Held(t) => reshaped(t),
            Slot::Constant(c) => reshaped(self.constant_tensor(*c)),
            Slot::Arena(o) => {
                let dtype = self.plan.values[v].ty.dtype;
                let n = l.shape.iter().product::<usize>() * dtype.size();
                // SAFETY: kernels wrote `n` bytes of `dtype` elements at this arena offset.
                let data = unsafe { std::slice::from_raw_parts(base.add(*o), n) };
                tensor_of_bytes(data, dtype, &l.shape, &l.shape)
            }
            Slot::State(s) => {
                let (p, shape, dtype) = states[*s];
                let bytes = kiln_ir::host::bytes_of(shape, dtype.size()).unwrap_or_default();
                // SAFETY: the lent buffer holds `bytes` bytes (checked by `StateBuffer`).
                let data = unsafe { std::slice::from_raw_parts(p, bytes) };
                tensor_of_bytes(data, dtype, shape, &l.shape)
            }
            Slot::Lent(b) => tensor_of_bytes(b.bytes, b.dtype, &b.shape, &l.shape),
        }
    }

    /// Writes the value `v` (live in `l`, not in the buffer of state `s`) into that buffer:
    /// a state's new value that a step did not write in place (the interpreter's).
    fn write_back(
        &self,
        v: ValueIndex,
        l: &Live,
        base: *mut u8,
        states: &States,
        s: usize,
    ) -> Result<(), RunError> {
        let (p, shape, dtype) = states[s];
        let name = &self.plan.values[v].name;
        if l.shape != shape || self.plan.values[v].ty.dtype != dtype {
            return Err(RunError(format!(
                "state `{name}`: its new value is {:?}, its buffer {dtype}{shape:?}",
                l.shape
            )));
        }
        let t = self.materialise(v, l, base, states);
        let n = kiln_ir::host::bytes_of(shape, dtype.size()).unwrap_or_default();
        kiln_ir::with_array!(&t, a => {
            let src = a.as_slice().expect("materialised row-major");
            // SAFETY: both hold `n` bytes of `shape` in `dtype`; the tensor is a copy.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().cast::<u8>(), p, n) };
        });
        Ok(())
    }

    /// Checks the i64 indices a kernel reads against their range (a sequence longer than the
    /// position table, an id outside the vocabulary, a cache write beyond its capacity).
    fn check_indices(
        &self,
        check: &IndexCheck,
        ranges: &[(SizeId, SizeId)],
        l: &Live,
        (base, states): (*mut u8, &States),
        sizes: &Sizes,
        bindings: &Bindings,
    ) -> Result<(), RunError> {
        if self.plan.values[check.value].ty.dtype != DType::I64 {
            return Ok(());
        }
        // Wherever the indices live (an input, a constant, a kernel's result in the arena),
        // they are dense i64s of the live shape.
        let bytes = l.shape.iter().product::<usize>() * 8;
        let p = self.pointer(l, base, states);
        // SAFETY: the live value holds `bytes` bytes at `p` (it is bound to kernels as such).
        let indices: Vec<i64> =
            bytemuck::pod_collect_to_vec(unsafe { std::slice::from_raw_parts(p, bytes) });
        let name = self.source_name(check.value);
        let eval = |d: SizeId| {
            sizes
                .value(d)
                .ok_or_else(|| RunError(format!("`{name}`: the range of its indices is not bound")))
        };
        let ranges: Vec<(i64, i64)> = ranges
            .iter()
            .map(|&(low, high)| Ok((eval(low)?, eval(high)?)))
            .collect::<Result<_, RunError>>()?;
        let bad = indices.iter().enumerate().find_map(|(i, &index)| {
            let (low, high) = ranges[i % ranges.len()];
            (index < low || index >= high).then_some((index, low, high))
        });
        match bad {
            Some((bad, low, high)) => Err(RunError(format!(
                "`{name}`: index {bad} is out of range for {} (the range here is {low}..{high})",
                describe(&check.what, bindings)
            ))),
            None => Ok(()),
        }
    }
}

impl Program {
    /// The name errors give value `v`: the model input it is a view of (a reshape of
    /// `input_ids`, say), else its own.
    fn source_name(&self, v: ValueIndex) -> &str {
        let mut value = v;
        while let Some(input) = self.plan.steps.iter().find_map(|s| match s {
            Step::View { input, output, .. } if *output == value => Some(*input),
            _ => None,
        }) {
            value = input;
        }
        let name = |v: ValueIndex| self.plan.values[v].name.as_str();
        match self.plan.inputs.contains(&value) {
            true => name(value),
            false => name(v),
        }
    }
}

/// The buffers of a run's states: pointer, shape and dtype, by their position in
/// [`Plan::states`].
type States<'b> = [(*mut u8, &'b [usize], DType)];

/// Where a run's buffers are: its arena (prepared for the run) at `base`, and its states.
struct Placement<'r> {
    arena: &'r Arena,
    base: *mut u8,
    states: &'r States<'r>,
}

/// Tensors fed by name as a run's inputs.
fn tensor_inputs(feeds: &HashMap<String, Tensor>) -> HashMap<&str, Input<'_>> {
    feeds
        .iter()
        .map(|(name, t)| (name.as_str(), Input::Tensor(t)))
        .collect()
}

/// A copy of row-major `bytes` of `dtype` and `shape` as a tensor of shape `view` (the same
/// element count).
fn tensor_of_bytes(bytes: &[u8], dtype: DType, shape: &[usize], view: &[usize]) -> Tensor {
    let data = TensorData::new(dtype, shape.to_vec(), bytes::Bytes::copy_from_slice(bytes))
        .expect("lent bytes hold their shape (checked when lent)");
    Tensor::from_data(&data)
        .reshape(view)
        .expect("views keep the element count")
}

/// `t` in row-major standard layout (kernels read dense buffers).
fn standard(t: Tensor) -> Tensor {
    kiln_ir::map_array!(t, a => if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() })
}

/// Zeroed memory that empty buffers point to, so that no kernel ever sees a dangling pointer
/// (loads from read-only buffers may be hoisted out of loops that run zero times).
static EMPTY: [u64; 8] = [0; 8];

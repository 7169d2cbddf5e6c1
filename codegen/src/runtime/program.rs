//! [`Program`]: a graph compiled into steps (JIT kernels, views, interpreter fallbacks), and
//! its execution.

use super::group::{group, Group, GroupKind};
use super::lower::{lower, Lowered};
use super::memory::{plan, Lifetime};
use crate::kir::Kernel;
use crate::native::NativeKernel;
use crate::templates::{Arg, Built};
use crate::{Backend, Schedule};
use kiln_ir::interp::{bind_symbols, check_outputs_fit, eval_op, Bindings, RunError};
use kiln_ir::{DType, Graph, NodeId, NodeKind, Tensor, ValueId};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// How to compile and run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Threads for parallel loops (1 = run on the calling thread).
    pub threads: usize,
    /// The code generator of the kernels.
    pub backend: Backend,
}

impl Default for Options {
    /// One thread, Cranelift.
    fn default() -> Options {
        Options {
            threads: 1,
            backend: Backend::Cranelift,
        }
    }
}

/// How one group was compiled, for `kiln explain`.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupReport {
    /// What the group is.
    pub kind: GroupKind,
    /// Its nodes, as `name (Op)`.
    pub nodes: Vec<String>,
    /// Why it runs on the interpreter instead of a kernel (None for kernels and views).
    pub fallback: Option<String>,
}

/// Figures of a compilation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompileStats {
    /// Kernel steps.
    pub kernels: usize,
    /// Distinct kernels JIT-compiled for them (groups of equal shapes share one).
    pub distinct_kernels: usize,
    /// Nodes run by the reference interpreter.
    pub interpreted: usize,
    /// Reshapes turned into views.
    pub views: usize,
    /// Ops on constants evaluated at compile time.
    pub folded: usize,
    /// Wall time of grouping, lowering and JIT compilation, in seconds.
    pub seconds: f64,
}

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

enum Step {
    Kernel {
        kernel: usize,
        lowered: Box<Lowered>,
        /// The group's last node, named in run-time errors.
        node: NodeId,
    },
    View {
        input: ValueId,
        output: ValueId,
    },
    Interp {
        node: NodeId,
    },
}

/// A compiled model.
pub struct Program {
    graph: Graph,
    steps: Vec<Step>,
    kernels: Vec<NativeKernel>,
    constants: HashMap<ValueId, Arc<Tensor>>,
    reports: Vec<GroupReport>,
    stats: CompileStats,
    pool: Option<rayon::ThreadPool>,
    threads: usize,
    arena: std::sync::Mutex<Vec<f32>>,
}

/// Where a value lives during a run.
#[derive(Clone)]
enum Slot<'a> {
    /// In the arena, at this byte offset.
    Arena(usize),
    /// In a tensor the run made (interpreter results, inputs that needed a dense copy).
    Owned(Arc<Tensor>),
    /// In a tensor the caller or the program holds (inputs, constants): never copied.
    Held(&'a Tensor),
}

impl Slot<'_> {
    /// The tensor holding the value, unless it is in the arena.
    fn tensor(&self) -> Option<&Tensor> {
        match self {
            Slot::Arena(_) => None,
            Slot::Owned(t) => Some(t),
            Slot::Held(t) => Some(t),
        }
    }
}

struct Live<'a> {
    slot: Slot<'a>,
    shape: Vec<usize>,
}

fn node_label(graph: &Graph, n: NodeId) -> String {
    let node = graph.node(n);
    match node.op() {
        Some(op) => format!("{} ({})", node.name, op.kind),
        None => node.name.clone(),
    }
}

/// A graph grouped and lowered by the templates, before its kernels are compiled.
pub(super) struct Lowering {
    /// The graph after constant folding and legalisation (what the steps refer to).
    pub(super) graph: Graph,
    steps: Vec<Step>,
    reports: Vec<GroupReport>,
    builts: Vec<Built>,
    stats: CompileStats,
}

impl Lowering {
    /// Folds constants, legalises, groups `graph` and lowers each group with its template; a
    /// group no template accepts runs node by node on the interpreter. Deterministic: the same
    /// graph always gives the same kernels in the same order. The templates use vectors as
    /// wide as `backend` has.
    pub(super) fn new(graph: &Graph, backend: Backend) -> Lowering {
        let schedule = Schedule::default().with("lanes", i64::from(backend.lanes()));
        let mut graph = graph.clone();
        let folded = super::fold_constants(&mut graph);
        super::legalize::forward_present_cache(&mut graph);
        super::legalize::additive_masks(&mut graph);
        let mut steps = vec![];
        let mut reports = vec![];
        let mut builts: Vec<Built> = vec![];
        let mut stats = CompileStats {
            folded,
            ..CompileStats::default()
        };
        for g in group(&graph) {
            match g.kind {
                GroupKind::Interpreter => {
                    reports.push(GroupReport {
                        kind: g.kind,
                        nodes: vec![node_label(&graph, g.nodes[0])],
                        fallback: Some("no kernel template for this op".into()),
                    });
                    steps.push(Step::Interp { node: g.nodes[0] });
                }
                GroupKind::View if view_allowed(&graph, &g) => {
                    stats.views += 1;
                    reports.push(GroupReport {
                        kind: g.kind,
                        nodes: vec![node_label(&graph, g.nodes[0])],
                        fallback: None,
                    });
                    steps.push(Step::View {
                        input: graph.node(g.nodes[0]).inputs[0].expect("views have an input"),
                        output: ValueId {
                            node: g.nodes[0],
                            output: 0,
                        },
                    });
                }
                _ => {
                    let out = (&mut steps, &mut reports, &mut builts);
                    Program::lower_group(&graph, &g, &schedule, out)
                }
            }
        }
        stats.kernels = builts.len();
        stats.interpreted = steps
            .iter()
            .filter(|s| matches!(s, Step::Interp { .. }))
            .count();
        Lowering {
            graph,
            steps,
            reports,
            builts,
            stats,
        }
    }

    /// Figures of the lowering (kernel steps, interpreted nodes, views, folded ops).
    pub(super) fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// The distinct kernels to compile, named `k{i}_{template}`, and for each kernel step the
    /// index of its kernel among them. Groups with the same shapes (one per layer) build the
    /// same KIR and differ only in their constants: each distinct kernel is compiled once.
    pub(super) fn distinct_kernels(&self) -> (Vec<Kernel>, Vec<usize>) {
        let mut unique: HashMap<String, usize> = HashMap::new();
        let mut kernels = vec![];
        let mut index = Vec::with_capacity(self.builts.len());
        for b in &self.builts {
            let i = *unique.entry(kernel_key(&b.kernel)).or_insert_with(|| {
                let mut k = b.kernel.clone();
                k.name = format!("k{}_{}", kernels.len(), k.name);
                kernels.push(k);
                kernels.len() - 1
            });
            index.push(i);
        }
        (kernels, index)
    }
}

/// What makes two kernels the same code: everything but their name.
pub(super) fn kernel_key(k: &Kernel) -> String {
    format!("{:?}", (&k.body, k.buffers, k.sizes, &k.vars))
}

impl Program {
    /// Compiles `graph`: groups it, lowers each group with its template and JIT-compiles the
    /// kernels; a group no template accepts runs node by node on the interpreter.
    pub fn compile(graph: &Graph, options: &Options) -> Result<Program, String> {
        let start = Instant::now();
        let lowering = Lowering::new(graph, options.backend);
        let (kernels, index) = lowering.distinct_kernels();
        let compiled = options.backend.compile_all(&kernels)?;
        Program::assemble(lowering, compiled, &index, options, start)
    }

    /// A program from a lowering and its distinct compiled kernels (`index` maps each kernel
    /// step to one of them, as [`Lowering::distinct_kernels`] made it).
    pub(super) fn assemble(
        lowering: Lowering,
        compiled: Vec<NativeKernel>,
        index: &[usize],
        options: &Options,
        start: Instant,
    ) -> Result<Program, String> {
        let Lowering {
            graph,
            steps,
            reports,
            mut stats,
            ..
        } = lowering;
        let kernels: Vec<NativeKernel> = index.iter().map(|&i| compiled[i].clone()).collect();
        stats.distinct_kernels = compiled.len();
        // Constants that steps read from the graph (packed weights are not among them).
        let mut read: Vec<ValueId> = graph.outputs().iter().map(|(_, v)| *v).collect();
        for step in &steps {
            match step {
                Step::Kernel { lowered, .. } => read.extend(lowered.inputs.iter().flatten()),
                Step::View { input, .. } => read.push(*input),
                Step::Interp { node } => read.extend(graph.node(*node).inputs.iter().flatten()),
            }
        }
        let mut constants = HashMap::new();
        for v in read {
            if let NodeKind::Constant(data) = &graph.node(v.node).kind {
                constants
                    .entry(v)
                    .or_insert_with(|| Arc::new(Tensor::from_data(data)));
            }
        }
        let threads = options.threads.max(1);
        let pool = if threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| format!("thread pool: {e}"))?,
            )
        } else {
            None
        };
        stats.seconds = start.elapsed().as_secs_f64();
        Ok(Program {
            graph,
            steps,
            kernels,
            constants,
            reports,
            stats,
            pool,
            threads,
            arena: Default::default(),
        })
    }

    /// Lowers one group to its kernels (one, or a few run in turn), or, if its template
    /// declines, each of its nodes on its own (an elementwise node as its own kernel, anything
    /// else on the interpreter).
    fn lower_group(
        graph: &Graph,
        g: &Group,
        schedule: &Schedule,
        (steps, reports, builts): (&mut Vec<Step>, &mut Vec<GroupReport>, &mut Vec<Built>),
    ) {
        let nodes: Vec<String> = g.nodes.iter().map(|&n| node_label(graph, n)).collect();
        let lowered = lower(graph, g, schedule).and_then(|list| {
            let unbound = list.iter().any(|l| {
                l.built.args.iter().any(|a| match a {
                    Arg::Input(i) => l.inputs.get(*i).is_none_or(|v| v.is_none()),
                    Arg::Output(i) => l.outputs.get(*i).is_none_or(|v| v.is_none()),
                    _ => false,
                })
            });
            if unbound {
                return Err("the template reads or writes a buffer the graph does not bind".into());
            }
            Ok(list)
        });
        match lowered {
            Ok(list) => {
                let last = list.len() - 1;
                for (i, lowered) in list.into_iter().enumerate() {
                    // Kernels before the group's main one (a KV cache's present key and
                    // value) are reported as the data movement they are.
                    let (kind, nodes) = match i == last {
                        true => (g.kind, nodes.clone()),
                        false => (
                            GroupKind::Movement,
                            vec![format!("{} (cache concatenation)", nodes[0])],
                        ),
                    };
                    reports.push(GroupReport {
                        kind,
                        nodes,
                        fallback: None,
                    });
                    steps.push(Step::Kernel {
                        kernel: builts.len(),
                        lowered: Box::new(lowered.clone()),
                        node: *g.nodes.last().expect("groups are not empty"),
                    });
                    builts.push(lowered.built);
                }
            }
            Err(_) if g.nodes.len() > 1 => {
                for &n in &g.nodes {
                    let single = super::group::single(graph, n);
                    Self::lower_group(graph, &single, schedule, (steps, reports, builts));
                }
            }
            Err(reason) => {
                reports.push(GroupReport {
                    kind: GroupKind::Interpreter,
                    nodes,
                    fallback: Some(reason),
                });
                steps.push(Step::Interp { node: g.nodes[0] });
            }
        }
    }

    /// How each group was compiled, in execution order.
    pub fn reports(&self) -> &[GroupReport] {
        &self.reports
    }

    /// Figures of the compilation.
    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// The graph this program computes.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs the program on `feeds` (input name to value); returns the outputs in declaration
    /// order and the run's memory figures.
    pub fn run(
        &self,
        feeds: &HashMap<String, Tensor>,
    ) -> Result<(Vec<(String, Tensor)>, RunStats), RunError> {
        match &self.pool {
            Some(pool) => pool.install(|| self.run_here(feeds)),
            None => self.run_here(feeds),
        }
    }

    fn run_here(
        &self,
        feeds: &HashMap<String, Tensor>,
    ) -> Result<(Vec<(String, Tensor)>, RunStats), RunError> {
        let graph = &self.graph;
        let bindings = bind_symbols(graph, feeds)?;
        let (offsets, stats) = self.plan_arena(&bindings)?;
        // The arena is reused across runs (runs of one program take turns).
        let mut arena = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        if arena.len() < stats.arena_peak / 4 + 16 {
            let what = "the run's intermediates (the arena)";
            kiln_ir::host::check_fits(Some(stats.arena_peak), what).map_err(RunError)?;
            // Written, not just reserved (`vec![0.0; n]` maps untouched pages), so that the
            // memory checks of later allocations see the arena as taken.
            arena.clear();
            arena.shrink_to_fit();
            arena.resize(stats.arena_peak / 4 + 16, 0.0);
        }
        let shift = arena.as_ptr().align_offset(64);
        // SAFETY: `shift` < 16 elements and the arena has 16 spare elements.
        let base = unsafe { arena.as_mut_ptr().add(shift) }.cast::<u8>();
        let mut live: HashMap<ValueId, Live> = HashMap::new();
        for v in graph.inputs() {
            let name = &graph.value(v).name;
            let t = feeds
                .get(name)
                .ok_or_else(|| RunError(format!("missing input `{name}`")))?;
            let dense = kiln_ir::with_array!(t, a => a.is_standard_layout());
            let slot = if dense {
                Slot::Held(t)
            } else {
                Slot::Owned(Arc::new(standard(t.clone())))
            };
            live.insert(
                v,
                Live {
                    shape: t.shape().to_vec(),
                    slot,
                },
            );
        }
        for (v, t) in &self.constants {
            live.insert(
                *v,
                Live {
                    shape: t.shape().to_vec(),
                    slot: Slot::Held(t),
                },
            );
        }
        let mut stats = stats;
        for step in &self.steps {
            let started = Instant::now();
            match step {
                Step::View { input, output } => {
                    let shape = concrete(graph, *output, &bindings)?;
                    let from = live_value(graph, &live, *input, output.node)?;
                    let have: usize = from.shape.iter().product();
                    let want: usize = shape.iter().product();
                    if have != want {
                        return Err(RunError(format!(
                            "node {}: cannot reshape `{}` of shape {:?} ({have} elements) to {shape:?} ({want} elements)",
                            node_label(graph, output.node),
                            graph.value(*input).name,
                            from.shape
                        )));
                    }
                    let slot = from.slot.clone();
                    live.insert(*output, Live { slot, shape });
                }
                Step::Interp { node } => self.interpret(*node, &bindings, base, &mut live)?,
                Step::Kernel {
                    kernel,
                    lowered,
                    node,
                } => {
                    let mut inputs = vec![];
                    for (i, v) in lowered.inputs.iter().enumerate() {
                        let Some(v) = v else {
                            inputs.push(std::ptr::null_mut());
                            continue;
                        };
                        let l = live_value(graph, &live, *v, *node)?;
                        let want = concrete(graph, *v, &bindings)?;
                        if l.shape.iter().product::<usize>() != want.iter().product::<usize>() {
                            return Err(RunError(format!(
                                "value `{}` is {:?} but the compiled kernel expects {want:?}",
                                graph.value(*v).name,
                                l.shape
                            )));
                        }
                        if let Some((_, bound)) = lowered.index_check.filter(|&(at, _)| at == i) {
                            check_indices(graph, *v, l, bound)?;
                        }
                        inputs.push(pointer(l, base));
                    }
                    let mut outputs = vec![];
                    for v in &lowered.outputs {
                        let Some(v) = v else {
                            outputs.push(std::ptr::null_mut());
                            continue;
                        };
                        let shape = concrete(graph, *v, &bindings)?;
                        let offset = offsets.get(v).ok_or_else(|| {
                            RunError(format!(
                                "node {}: no arena slot was planned for `{}`",
                                node_label(graph, *node),
                                graph.value(*v).name
                            ))
                        })?;
                        let slot = Slot::Arena(*offset);
                        let l = Live { slot, shape };
                        outputs.push(pointer(&l, base));
                        live.insert(*v, l);
                    }
                    let chunks = if self.pool.is_some() { self.threads } else { 1 };
                    // SAFETY: every buffer was checked against (or allocated for) the shapes
                    // the template was built for, evaluated with these bindings.
                    unsafe {
                        lowered.built.call(
                            &self.kernels[*kernel],
                            &inputs,
                            &outputs,
                            &bindings,
                            chunks,
                        )
                    }
                    .map_err(RunError)?;
                }
            }
            stats.step_seconds.push(started.elapsed().as_secs_f64());
        }
        let outputs = graph
            .outputs()
            .iter()
            .map(|(name, v)| {
                let l = live
                    .get(v)
                    .ok_or_else(|| RunError(format!("output `{name}` was never computed")))?;
                Ok((name.clone(), materialise(graph, *v, l, base)))
            })
            .collect::<Result<_, RunError>>()?;
        Ok((outputs, stats))
    }

    /// Runs one node on the interpreter.
    fn interpret(
        &self,
        n: NodeId,
        bindings: &Bindings,
        base: *mut u8,
        live: &mut HashMap<ValueId, Live<'_>>,
    ) -> Result<(), RunError> {
        let graph = &self.graph;
        let node = graph.node(n);
        let op = node
            .op()
            .ok_or_else(|| RunError(format!("node `{}` is not an op", node.name)))?;
        let mut args: Vec<Option<Cow<Tensor>>> = Vec::with_capacity(node.inputs.len());
        for v in &node.inputs {
            args.push(match v {
                Some(v) => Some(as_tensor(graph, *v, live_value(graph, live, *v, n)?, base)),
                None => None,
            });
        }
        let refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_deref()).collect();
        check_outputs_fit(node, bindings)?;
        let results = eval_op(op, &refs, bindings)
            .map_err(|e| RunError(format!("node `{}` ({}): {e}", node.name, op.kind)))?;
        if results.len() < node.outputs.len() {
            return Err(RunError(format!(
                "node `{}` ({}): produced {} outputs, {} declared",
                node.name,
                op.kind,
                results.len(),
                node.outputs.len()
            )));
        }
        for (output, t) in results.into_iter().take(node.outputs.len()).enumerate() {
            let declared = &node.outputs[output].ty;
            if t.dtype() != declared.dtype || t.shape().len() != declared.shape.len() {
                return Err(RunError(format!(
                    "node `{}` ({}): output `{}` is {}{:?}, inferred as {}",
                    node.name,
                    op.kind,
                    node.outputs[output].name,
                    t.dtype(),
                    t.shape(),
                    declared.dtype
                )));
            }
            let l = Live {
                shape: t.shape().to_vec(),
                slot: Slot::Owned(Arc::new(standard(t))),
            };
            live.insert(ValueId { node: n, output }, l);
        }
        Ok(())
    }

    /// Places every kernel-produced value in the arena by liveness, for these bindings.
    fn plan_arena(
        &self,
        bindings: &Bindings,
    ) -> Result<(HashMap<ValueId, usize>, RunStats), RunError> {
        let graph = &self.graph;
        // Views share their input's buffer: resolve each value to the value that owns it.
        let mut owner: HashMap<ValueId, ValueId> = HashMap::new();
        let mut lifetimes: Vec<(ValueId, Lifetime)> = vec![];
        let mut index: HashMap<ValueId, usize> = HashMap::new();
        let root = |owner: &HashMap<ValueId, ValueId>, v: ValueId| *owner.get(&v).unwrap_or(&v);
        let touch = |v: ValueId,
                     step: usize,
                     index: &HashMap<ValueId, usize>,
                     lifetimes: &mut Vec<(ValueId, Lifetime)>| {
            if let Some(&i) = index.get(&v) {
                lifetimes[i].1.last = lifetimes[i].1.last.max(step);
            }
        };
        for (s, step) in self.steps.iter().enumerate() {
            match step {
                Step::View { input, output } => {
                    let r = root(&owner, *input);
                    owner.insert(*output, r);
                    touch(r, s, &index, &mut lifetimes);
                }
                Step::Interp { node } => {
                    for v in graph.node(*node).inputs.iter().flatten() {
                        touch(root(&owner, *v), s, &index, &mut lifetimes);
                    }
                }
                Step::Kernel { lowered, .. } => {
                    for v in lowered.inputs.iter().flatten() {
                        touch(root(&owner, *v), s, &index, &mut lifetimes);
                    }
                    for v in lowered.outputs.iter().flatten() {
                        let shape = concrete(graph, *v, bindings)?;
                        let bytes = kiln_ir::host::bytes_of(&shape, 4);
                        let what = format!("value `{}` {shape:?}", graph.value(*v).name);
                        kiln_ir::host::check_fits(bytes, &what).map_err(RunError)?;
                        let bytes = bytes.unwrap_or_default();
                        index.insert(*v, lifetimes.len());
                        lifetimes.push((
                            *v,
                            Lifetime {
                                bytes,
                                first: s,
                                last: s,
                            },
                        ));
                    }
                }
            }
        }
        let end = self.steps.len();
        for (_, v) in graph.outputs() {
            touch(root(&owner, *v), end, &index, &mut lifetimes);
        }
        let buffers: Vec<Lifetime> = lifetimes.iter().map(|(_, l)| *l).collect();
        let p = plan(&buffers);
        let offsets = lifetimes
            .iter()
            .zip(&p.offsets)
            .map(|((v, _), &o)| (*v, o))
            .collect();
        Ok((
            offsets,
            RunStats {
                arena_peak: p.peak,
                arena_total: p.total,
                step_seconds: Vec::with_capacity(self.steps.len()),
            },
        ))
    }
}

/// The live value `v` that the step of node `user` reads; an error naming both when no earlier
/// step produced it (a lowering defect, reported instead of a panic).
fn live_value<'l, 'a>(
    graph: &Graph,
    live: &'l HashMap<ValueId, Live<'a>>,
    v: ValueId,
    user: NodeId,
) -> Result<&'l Live<'a>, RunError> {
    live.get(&v).ok_or_else(|| {
        RunError(format!(
            "node {}: its input `{}` was not computed by any earlier step",
            node_label(graph, user),
            graph.value(v).name
        ))
    })
}

/// Whether a reshape can be a view: every buffer is dense, so it can whenever the runtime
/// can compute the output shape from the bound symbols.
fn view_allowed(graph: &Graph, g: &Group) -> bool {
    let out = &graph.node(g.nodes[0]).outputs[0].ty.shape;
    !out.iter().any(|d| d.is_unknown())
}

/// The concrete shape of `v` under `bindings`.
fn concrete(graph: &Graph, v: ValueId, bindings: &Bindings) -> Result<Vec<usize>, RunError> {
    let value = graph.value(v);
    value
        .ty
        .shape
        .iter()
        .map(|d| d.eval(bindings).and_then(|x| usize::try_from(x).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| {
            RunError(format!(
                "value `{}`: its shape is not determined by the inputs",
                value.name
            ))
        })
}

/// `t` in row-major standard layout (kernels read dense buffers).
fn standard(t: Tensor) -> Tensor {
    kiln_ir::map_array!(t, a => if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() })
}

/// Zeroed memory that empty buffers point to, so that no kernel ever sees a dangling pointer
/// (loads from read-only buffers may be hoisted out of loops that run zero times).
static EMPTY: [u64; 8] = [0; 8];

/// The data pointer of a live value.
fn pointer(l: &Live, base: *mut u8) -> *mut u8 {
    if l.shape.contains(&0) {
        return EMPTY.as_ptr() as *mut u8;
    }
    match l.slot.tensor() {
        Some(t) => kiln_ir::with_array!(t, a => a.as_ptr() as *mut u8),
        None => match l.slot {
            // SAFETY: the offset lies inside the arena (planned from the same sizes).
            Slot::Arena(o) => unsafe { base.add(o) },
            _ => unreachable!("only arena values have no tensor"),
        },
    }
}

/// A live value as a tensor for the interpreter (borrowed when it already is one).
fn as_tensor<'a>(graph: &Graph, v: ValueId, l: &'a Live, base: *mut u8) -> Cow<'a, Tensor> {
    match l.slot.tensor() {
        Some(t) if t.shape() == l.shape.as_slice() => Cow::Borrowed(t),
        _ => Cow::Owned(materialise(graph, v, l, base)),
    }
}

/// A copy of a live value as a tensor.
fn materialise(graph: &Graph, v: ValueId, l: &Live, base: *mut u8) -> Tensor {
    match &l.slot {
        Slot::Owned(t) => t.reshape(&l.shape).expect("views keep the element count"),
        Slot::Held(t) => t.reshape(&l.shape).expect("views keep the element count"),
        Slot::Arena(o) => {
            debug_assert_eq!(graph.value(v).ty.dtype, DType::F32);
            let n = l.shape.iter().product();
            // SAFETY: kernels wrote `n` f32 elements at this arena offset.
            let data = unsafe { std::slice::from_raw_parts(base.add(*o).cast::<f32>(), n) };
            Tensor::from_vec(&l.shape, data.to_vec()).expect("element count matches the shape")
        }
    }
}

/// Checks the i64 indices of a gather kernel against the table length `bound` (a sequence
/// longer than the position table, an id outside the vocabulary).
fn check_indices(graph: &Graph, v: ValueId, l: &Live, bound: i64) -> Result<(), RunError> {
    let Some(Tensor::I64(a)) = l.slot.tensor() else {
        return Ok(());
    };
    match a.iter().find(|&&i| i < -bound || i >= bound) {
        Some(bad) => Err(RunError(format!(
            "`{}`: index {bad} is out of range for a table of {bound} rows",
            graph.value(v).name
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{interp, text};

    #[test]
    fn a_reshape_to_the_wrong_element_count_is_an_error_as_on_the_interpreter() {
        // The target shape is a constant that fits only when seq = 7.
        let graph = text::parse(
            "kiln graph v1
input %x: f32[seq, 8]
const %shape: i64[2] = [7, 8]
%y: f32[7, 8] = Reshape(%x, %shape)  @\"reshape\"
%z: f32[7, 8] = Relu(%y)  @\"relu\"
output z = %z
",
        )
        .unwrap();
        let program = Program::compile(&graph, &Options::default()).unwrap();
        for seq in [7, 5, 0] {
            let x = Tensor::from_vec(&[seq, 8], vec![1.0f32; seq * 8]).unwrap();
            let feeds = HashMap::from([("x".to_string(), x)]);
            let compiled = program.run(&feeds).map(|(out, _)| out);
            let interpreted = interp::run(&graph, &feeds);
            assert_eq!(compiled.is_ok(), interpreted.is_ok(), "seq {seq}");
            if seq != 7 {
                let err = compiled.err().unwrap().0;
                assert!(
                    err.starts_with("node reshape (Reshape): cannot reshape"),
                    "{err}"
                );
            }
        }
    }
}

//! Lowering a graph into a [`Plan`]: folds constants, legalises, groups the graph and lowers
//! each group with its template ([`super::lower`]); a group no template accepts runs node by
//! node on the interpreter. The result is the plan, the bytes of the constants it reads and
//! the KIR of its distinct kernels.

use super::group::{group, single, Group, GroupKind};
use super::lower::{decodes, lower, Lowered};
use crate::kir::Kernel;
use crate::schedule::{ScheduleRequest, ScheduleSource, Space};
use crate::templates::{
    attention, decode_attention, elementwise, gemm, movement, rows, Arg, ConstantBytes,
    ConstantIdentity,
};
use crate::{Backend, Schedule};
use kiln_ir::infer::fmt_shape;
use kiln_ir::{Graph, NodeId, NodeKind, Value, ValueId};
use kiln_rt::plan::{
    Binding, CompileStats, Constant, IndexCheck, InterpStep, KernelInfo, Plan, Report, Step,
    ValueIndex, DENSE,
};
use std::collections::{HashMap, HashSet};

/// A plan with what it needs besides itself.
pub struct LoweredPlan {
    /// The plan.
    pub plan: Plan,
    /// The bytes of each of its constants, in [`Plan::constants`] order (packings not yet
    /// made: see [`ConstantBytes`]).
    pub constants: Vec<ConstantBytes>,
    /// The KIR of each of its kernels, in [`Plan::kernels`] order, named by its symbol.
    pub kernels: Vec<Kernel>,
}

/// Constants by [`ConstantIdentity`], shared by the plans of one model's entry points
/// (prefill and decode read the same weights), so that equal bytes are held in memory, and
/// each packing made, once.
#[derive(Default)]
struct ConstantPool {
    stored: HashMap<ConstantIdentity, ConstantBytes>,
}

impl ConstantPool {
    /// `bytes`, or equal bytes the pool already holds (then `bytes` is dropped).
    fn share(&mut self, bytes: ConstantBytes) -> ConstantBytes {
        self.stored.entry(bytes.identity()).or_insert(bytes).clone()
    }
}

/// The graph-side record of one step.
enum GraphStep {
    /// A kernel call; `kernel` is the index of its code in the [`KernelTable`] (the KIR in
    /// `lowered` is left without a body).
    Kernel {
        lowered: Box<Lowered>,
        node: NodeId,
        kernel: usize,
    },
    View {
        input: ValueId,
        output: ValueId,
    },
    Interp {
        node: NodeId,
    },
}

impl GraphStep {
    /// The values the step reads and those it writes.
    fn values(&self, graph: &Graph) -> (Vec<ValueId>, Vec<ValueId>) {
        match self {
            GraphStep::Kernel { lowered, .. } => (
                lowered.inputs.iter().flatten().copied().collect(),
                lowered.outputs.iter().flatten().copied().collect(),
            ),
            GraphStep::View { input, output } => (vec![*input], vec![*output]),
            GraphStep::Interp { node } => {
                let n = graph.node(*node);
                let outputs = (0..n.outputs.len()).map(|output| ValueId {
                    node: *node,
                    output,
                });
                (
                    n.inputs.iter().flatten().copied().collect(),
                    outputs.collect(),
                )
            }
        }
    }
}

/// `planned` without the steps whose results nothing reads: a weight's `Transpose`, say,
/// when its GEMM packs the stored matrix instead.
fn without_dead_steps(graph: &Graph, planned: Vec<Planned>) -> Vec<Planned> {
    let mut live: HashSet<ValueId> = graph.outputs().iter().map(|(_, v)| *v).collect();
    let mut kept = vec![];
    for p in planned.into_iter().rev() {
        let (reads, writes) = p.step.values(graph);
        if writes.iter().any(|v| live.contains(v)) {
            live.extend(reads);
            kept.push(p);
        }
    }
    kept.reverse();
    kept
}

/// A step with how it was compiled.
struct Planned {
    step: GraphStep,
    kind: GroupKind,
    nodes: Vec<String>,
    fallback: Option<String>,
    /// For kernel steps: the template, its version, the schedule and where it came from.
    schedule: Option<Chosen>,
}

/// The schedule of one kernel and where it came from.
#[derive(Clone)]
struct Chosen {
    template: String,
    version: u32,
    schedule: Schedule,
    source: String,
}

impl Chosen {
    /// The default schedule of the template for `kind` at the backend's `lanes`.
    fn defaults(kind: GroupKind, lanes: u8) -> Result<Chosen, String> {
        let space = space_of(kind).ok_or_else(|| format!("no {} template", kind.name()))?;
        Ok(Chosen {
            template: space.template.into(),
            version: space.version,
            schedule: space.defaults(lanes)?,
            source: "heuristic".into(),
        })
    }
}

/// The declared parameters of the template that lowers group `g`, if it has one.
fn space_for(graph: &Graph, g: &Group) -> Option<Space> {
    match g.kind {
        GroupKind::Attention if decodes(graph, g) => Some(decode_attention::space()),
        kind => space_of(kind),
    }
}

/// The declared parameters of the template that lowers groups of `kind`, if it has one
/// (attention: the flash kernel's, see [`space_for`]).
fn space_of(kind: GroupKind) -> Option<Space> {
    match kind {
        GroupKind::MatMul => Some(gemm::space()),
        GroupKind::Rows => Some(rows::space()),
        GroupKind::Attention => Some(attention::space()),
        GroupKind::Elementwise => Some(elementwise::space()),
        GroupKind::Movement => Some(movement::space()),
        _ => None,
    }
}

/// The schedule of group `g`: what `source` gives for its template and shapes, resolved by
/// the template's declared parameters (an invalid value is an error naming the parameter
/// and the group's node).
fn choose(
    graph: &Graph,
    g: &Group,
    lanes: u8,
    source: &dyn ScheduleSource,
) -> Result<Chosen, String> {
    let space = space_for(graph, g).ok_or_else(|| format!("no {} template", g.kind.name()))?;
    let shape = |v: &ValueId| fmt_shape(&graph.value(*v).ty.shape);
    let shapes = format!(
        "{} -> {}",
        g.inputs.iter().map(shape).collect::<Vec<_>>().join(", "),
        g.outputs.iter().map(shape).collect::<Vec<_>>().join(", ")
    );
    let request = ScheduleRequest {
        template: space.template,
        shapes: &shapes,
        lanes,
    };
    let (requested, source) = source
        .schedule(&request)
        .unwrap_or_else(|| (Schedule::default(), "heuristic".into()));
    let requested = requested.with("lanes", i64::from(lanes));
    let node = node_label(graph, *g.nodes.last().expect("groups are not empty"));
    let schedule = space
        .resolve(&requested)
        .map_err(|e| format!("node {node}: {e} (from {source})"))?;
    Ok(Chosen {
        template: space.template.into(),
        version: space.version,
        schedule,
        source,
    })
}

fn node_label(graph: &Graph, n: NodeId) -> String {
    let node = graph.node(n);
    match node.op() {
        Some(op) => format!("{} ({})", node.name, op.kind),
        None => node.name.clone(),
    }
}

/// Lowers `graph` for `backend` into a plan, each kernel with the schedule `source` gives
/// for it. Deterministic: the same graph and schedules always give the same plan, the same
/// kernels in the same order. The templates use vectors as wide as `backend` has.
pub fn lower_graph(
    graph: &Graph,
    backend: &Backend,
    source: &dyn ScheduleSource,
) -> Result<LoweredPlan, String> {
    Ok(lower_entries(&[graph], backend, source)?.remove(0))
}

/// The entry points of one model (prefill and decode) lowered as [`lower_graph`] does, each on
/// its own thread, then their constants shared ([`ConstantPool`]): each distinct constant is
/// held, and each packing made, once for all of them.
pub fn lower_entries(
    graphs: &[&Graph],
    backend: &Backend,
    source: &dyn ScheduleSource,
) -> Result<Vec<LoweredPlan>, String> {
    let lowered = match graphs {
        [graph] => vec![lower_one(graph, backend, source)],
        _ => lower_on_threads(graphs, backend, source),
    };
    let mut pool = ConstantPool::default();
    lowered
        .into_iter()
        .map(|plan| {
            let mut plan = plan?;
            plan.constants = plan.constants.into_iter().map(|c| pool.share(c)).collect();
            Ok(plan)
        })
        .collect()
}

/// Each of `graphs` lowered on a thread of its own.
fn lower_on_threads(
    graphs: &[&Graph],
    backend: &Backend,
    source: &dyn ScheduleSource,
) -> Vec<Result<LoweredPlan, String>> {
    std::thread::scope(|scope| {
        let jobs: Vec<_> = graphs
            .iter()
            .map(|g| {
                // The stack of the main thread: lowering recurses through a graph's ops.
                std::thread::Builder::new()
                    .stack_size(8 << 20)
                    .spawn_scoped(scope, move || lower_one(g, backend, source))
            })
            .collect();
        jobs.into_iter()
            .map(|job| match job {
                Ok(job) => job
                    .join()
                    .unwrap_or_else(|_| Err("lowering panicked".to_string())),
                Err(e) => Err(format!("cannot start a lowering thread: {e}")),
            })
            .collect()
    })
}

/// One graph lowered, its constants not yet shared ([`lower_entries`] shares them).
fn lower_one(
    graph: &Graph,
    backend: &Backend,
    source: &dyn ScheduleSource,
) -> Result<LoweredPlan, String> {
    let lanes = backend.lanes();
    let mut graph = graph.clone();
    let folded = super::fold_constants(&mut graph);
    super::legalize::forward_present_cache(&mut graph);
    super::legalize::additive_masks(&mut graph);
    let mut planned = vec![];
    let mut table = KernelTable::default();
    for g in group(&graph) {
        match g.kind {
            GroupKind::Interpreter => planned.push(Planned {
                step: GraphStep::Interp { node: g.nodes[0] },
                kind: g.kind,
                nodes: vec![node_label(&graph, g.nodes[0])],
                fallback: Some("no kernel template for this op".into()),
                schedule: None,
            }),
            GroupKind::View if view_allowed(&graph, &g) => planned.push(Planned {
                step: GraphStep::View {
                    input: graph.node(g.nodes[0]).inputs[0].ok_or("a view without input")?,
                    output: ValueId {
                        node: g.nodes[0],
                        output: 0,
                    },
                },
                kind: g.kind,
                nodes: vec![node_label(&graph, g.nodes[0])],
                fallback: None,
                schedule: None,
            }),
            _ => lower_group(&graph, &g, lanes, source, &mut table, &mut planned)?,
        }
    }
    let planned = without_dead_steps(&graph, planned);
    let mut builder = PlanBuilder::new(&graph, backend, table)?;
    builder.plan.stats.folded = folded;
    for p in planned {
        builder.add(p)?;
    }
    Ok(builder.finish())
}

/// Lowers one group to its kernels (one, or a few run in turn), or, if its template
/// declines, each of its nodes on its own (an elementwise node as its own kernel, anything
/// else on the interpreter).
fn lower_group(
    graph: &Graph,
    g: &Group,
    lanes: u8,
    source: &dyn ScheduleSource,
    table: &mut KernelTable,
    planned: &mut Vec<Planned>,
) -> Result<(), String> {
    let nodes: Vec<String> = g.nodes.iter().map(|&n| node_label(graph, n)).collect();
    if space_of(g.kind).is_none() {
        // A view whose shape is only known at run time, say: no template makes it a kernel.
        for &n in &g.nodes {
            planned.push(Planned {
                step: GraphStep::Interp { node: n },
                kind: GroupKind::Interpreter,
                nodes: vec![node_label(graph, n)],
                fallback: Some(format!("no {} template", g.kind.name())),
                schedule: None,
            });
        }
        return Ok(());
    }
    let chosen = choose(graph, g, lanes, source)?;
    let lowered = lower(graph, g, &chosen.schedule).and_then(|list| {
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
            for mut lowered in list {
                // Kernels besides the group's main one are reported as what they are: a KV
                // cache's concatenations as data movement, the combine of a split attention
                // as part of its template.
                let (kind, nodes, schedule) = match lowered.helper {
                    None => (g.kind, nodes.clone(), chosen.clone()),
                    Some((kind, what)) => (
                        kind,
                        vec![format!("{} ({what})", nodes[0])],
                        match kind == g.kind {
                            true => chosen.clone(),
                            false => Chosen::defaults(kind, lanes)?,
                        },
                    ),
                };
                let kernel = table.intern(&mut lowered.built.kernel);
                planned.push(Planned {
                    step: GraphStep::Kernel {
                        lowered: Box::new(lowered),
                        node: *g.nodes.last().expect("groups are not empty"),
                        kernel,
                    },
                    kind,
                    nodes,
                    fallback: None,
                    schedule: Some(schedule),
                });
            }
        }
        Err(_) if g.nodes.len() > 1 => {
            for &n in &g.nodes {
                lower_group(graph, &single(graph, n), lanes, source, table, planned)?;
            }
        }
        Err(reason) => planned.push(Planned {
            step: GraphStep::Interp { node: g.nodes[0] },
            kind: GroupKind::Interpreter,
            nodes,
            fallback: Some(reason),
            schedule: None,
        }),
    }
    Ok(())
}

/// Whether a reshape can be a view: every buffer is dense, so it can whenever the runtime
/// can compute the output shape from the bound symbols.
fn view_allowed(graph: &Graph, g: &Group) -> bool {
    let out = &graph.node(g.nodes[0]).outputs[0].ty.shape;
    // A view is of output 0 (a Dropout's mask, if read, needs the interpreter).
    !out.iter().any(|d| d.is_unknown()) && g.outputs.iter().all(|v| v.output == 0)
}

/// The distinct kernels of one lowering, by their code: each kernel step keeps an index here
/// rather than its own copy of the KIR (a model's 1,200 steps may call 18 kernels).
#[derive(Default)]
struct KernelTable {
    /// Each kernel with the fingerprint of its code.
    kernels: Vec<(Kernel, String)>,
    by_key: HashMap<String, usize>,
}

impl KernelTable {
    /// The index of `kernel`'s code, added on first sight; `kernel` is left without a body.
    fn intern(&mut self, kernel: &mut Kernel) -> usize {
        let key = kernel_key(kernel);
        let body = std::mem::take(&mut kernel.body);
        if let Some(&i) = self.by_key.get(&key) {
            return i;
        }
        let fingerprint = fingerprint(&key);
        let code = Kernel {
            body,
            ..kernel.clone()
        };
        self.kernels.push((code, fingerprint));
        self.by_key.insert(key, self.kernels.len() - 1);
        self.kernels.len() - 1
    }
}

/// What makes two kernels the same code: everything but their name.
fn kernel_key(k: &Kernel) -> String {
    format!("{:?}", (&k.body, k.buffers, k.sizes, &k.vars))
}

/// A 64-bit FNV-1a hash of a kernel's key ([`kernel_key`]): a fingerprint stable across
/// builds.
fn fingerprint(key: &str) -> String {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The distinct kernels of plans lowered together (a model's entry points), and for each plan
/// where each of its kernels is among them. A kernel's symbol holds the fingerprint of its
/// code, so kernels with one symbol are one kernel, compiled once for all the plans (two
/// kernels of different code under one symbol, a fingerprint collision, are an error).
pub fn distinct_kernels(plans: &[LoweredPlan]) -> Result<(Vec<Kernel>, Vec<Vec<usize>>), String> {
    let mut all: Vec<Kernel> = vec![];
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut uses = vec![];
    for p in plans {
        let mut used = vec![];
        for k in &p.kernels {
            let i = *index.entry(k.name.as_str()).or_insert_with(|| {
                all.push(k.clone());
                all.len() - 1
            });
            if all[i] != *k {
                return Err(format!(
                    "two kernels of different code are named `{}`",
                    k.name
                ));
            }
            used.push(i);
        }
        uses.push(used);
    }
    Ok((all, uses))
}

/// Numbers the graph's values, constants and kernels as the plan does.
struct PlanBuilder<'g> {
    graph: &'g Graph,
    plan: Plan,
    constants: Vec<ConstantBytes>,
    kernels: Vec<Kernel>,
    values: HashMap<ValueId, ValueIndex>,
    /// The values kernels pass to each other that the graph does not have ([`Lowered::temps`]).
    temps: HashMap<ValueId, Value>,
    /// The kernels the steps call, and the plan's index of those it has added.
    table: KernelTable,
    in_plan: HashMap<usize, usize>,
}

impl<'g> PlanBuilder<'g> {
    fn new(graph: &'g Graph, backend: &Backend, table: KernelTable) -> Result<Self, String> {
        let mut b = PlanBuilder {
            graph,
            plan: Plan {
                target: backend.target()?,
                ..Plan::default()
            },
            constants: vec![],
            kernels: vec![],
            values: HashMap::new(),
            temps: HashMap::new(),
            table,
            in_plan: HashMap::new(),
        };
        for v in graph.inputs() {
            let i = b.value(v);
            b.plan.inputs.push(i);
        }
        for (name, v) in graph.outputs() {
            let i = b.value(*v);
            b.plan.outputs.push((name.clone(), i));
        }
        Ok(b)
    }

    /// The plan's index of graph value `v`, added (a constant with its bytes) on first use.
    fn value(&mut self, v: ValueId) -> ValueIndex {
        if let Some(&i) = self.values.get(&v) {
            return i;
        }
        let i = self.plan.values.len();
        let value = match self.temps.get(&v) {
            Some(temp) => temp.clone(),
            None => self.graph.value(v).clone(),
        };
        self.plan.values.push(value);
        self.values.insert(v, i);
        if let NodeKind::Constant(data) = &self.graph.node(v.node).kind {
            self.plan.constants.push(Constant {
                dtype: data.dtype(),
                shape: data.shape().to_vec(),
                layout: DENSE.into(),
                value: Some(i),
                offset: 0,
                bytes: data.bytes().len() as u64,
            });
            self.constants
                .push(ConstantBytes::held(data.bytes().clone()));
        }
        i
    }

    /// The plan's kernel of the table's kernel `id` (built with `chosen`), added on first
    /// use; its symbol is the fingerprint of its code and its name.
    fn kernel(&mut self, id: usize, chosen: &Chosen) -> usize {
        if let Some(&k) = self.in_plan.get(&id) {
            return k;
        }
        let k = self.kernels.len();
        let (code, fingerprint) = &self.table.kernels[id];
        let mut named = code.clone();
        named.name = format!("k{fingerprint}_{}", code.name);
        let schedule = chosen.schedule.params();
        self.plan.kernels.push(KernelInfo {
            template: chosen.template.clone(),
            template_version: chosen.version,
            schedule: schedule
                .map(|(n, v)| (format!("{}.{n}", chosen.template), v))
                .collect(),
            schedule_source: chosen.source.clone(),
            fingerprint: fingerprint.clone(),
            ..crate::native::symbol_of(&named)
        });
        self.kernels.push(named);
        self.in_plan.insert(id, k);
        k
    }

    fn add(&mut self, p: Planned) -> Result<(), String> {
        let graph = self.graph;
        let (step, kernel) = match p.step {
            GraphStep::Interp { node } => {
                let n = graph.node(node);
                let op = n
                    .op()
                    .ok_or_else(|| format!("node `{}` is not an op", n.name))?;
                let inputs = n.inputs.iter().map(|v| v.map(|v| self.value(v))).collect();
                let outputs = (0..n.outputs.len())
                    .map(|output| self.value(ValueId { node, output }))
                    .collect();
                let step = InterpStep {
                    node: n.name.clone(),
                    op: op.clone(),
                    inputs,
                    outputs,
                };
                (Step::Interp(step), None)
            }
            GraphStep::View { input, output } => {
                let step = Step::View {
                    input: self.value(input),
                    output: self.value(output),
                    node: node_label(graph, output.node),
                };
                (step, None)
            }
            GraphStep::Kernel {
                lowered,
                node,
                kernel,
            } => {
                let chosen = p.schedule.as_ref().expect("kernel steps have a schedule");
                self.temps.extend(lowered.temps.iter().cloned());
                let kernel = self.kernel(kernel, chosen);
                let bound = |v: Option<ValueId>| v.expect("checked: every buffer is bound");
                let mut step = lowered.built.step(
                    kernel,
                    |arg| match arg {
                        Arg::Input(i) => Binding::Read(self.value(bound(lowered.inputs[*i]))),
                        Arg::Output(i) => match lowered.in_place {
                            Some((o, input)) if o == *i => Binding::Update {
                                input: self.value(bound(lowered.inputs[input])),
                                output: self.value(bound(lowered.outputs[*i])),
                            },
                            _ => Binding::Write(self.value(bound(lowered.outputs[*i]))),
                        },
                        Arg::Constant(data) => {
                            self.plan.constants.push(Constant {
                                dtype: data.dtype,
                                shape: data.shape.clone(),
                                layout: data.layout.clone(),
                                value: None,
                                offset: 0,
                                bytes: data.bytes.len() as u64,
                            });
                            self.constants.push(data.bytes.clone());
                            Binding::Constant(self.constants.len() - 1)
                        }
                        Arg::Scratch(_) => unreachable!("scratch stays scratch"),
                    },
                    &node_label(graph, node),
                );
                step.index_check = lowered.index_check.as_ref().map(|c| IndexCheck {
                    value: self.value(bound(lowered.inputs[c.input])),
                    ranges: c.ranges.clone(),
                    what: c.what.clone(),
                });
                (Step::Kernel(step), Some(kernel))
            }
        };
        self.plan.steps.push(step);
        self.plan.reports.push(Report {
            kind: p.kind.name().into(),
            nodes: p.nodes,
            fallback: p.fallback,
            kernel,
        });
        Ok(())
    }

    fn finish(mut self) -> LoweredPlan {
        let steps = &self.plan.steps;
        self.plan.stats = CompileStats {
            kernels: steps
                .iter()
                .filter(|s| matches!(s, Step::Kernel(_)))
                .count(),
            distinct_kernels: self.kernels.len(),
            interpreted: steps
                .iter()
                .filter(|s| matches!(s, Step::Interp(_)))
                .count(),
            views: steps
                .iter()
                .filter(|s| matches!(s, Step::View { .. }))
                .count(),
            ..self.plan.stats
        };
        LoweredPlan {
            plan: self.plan,
            constants: self.constants,
            kernels: self.kernels,
        }
    }
}

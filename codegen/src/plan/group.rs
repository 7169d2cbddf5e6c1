//! Kernel grouping: cuts an (optimised) graph into the units that become one kernel each, as
//! TVM's FuseOps does. A GEMM absorbs the bias add, activation and residual add that follow
//! it into its epilogue; trees of elementwise ops become one pass; norms, softmax, attention,
//! gathers and layout ops are one kernel each; reshapes are views of their input; everything
//! else runs on the reference interpreter.
//!
//! Grouping only looks at the graph; whether a group's template accepts its shapes is decided
//! when it is lowered, and a group that no template accepts falls back node by node.

use kiln_ir::facts::{facts, OpClass};
use kiln_ir::{Activation, DType, Graph, NodeId, NodeKind, OpKind, ValueId};
use std::collections::{HashMap, HashSet};

/// What a group becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupKind {
    /// MatMul / Gemm / FusedMatMul with its epilogue.
    MatMul,
    /// A tree of elementwise ops.
    Elementwise,
    /// Softmax, a normalisation or a reduction over the last axes.
    Rows,
    /// FusedAttention (and ONNX Attention without a KV cache).
    Attention,
    /// Gather, Transpose, Concat, Slice, Split or RopeRotateHalf.
    Movement,
    /// A reshape: the output is a view of the input's buffer.
    View,
    /// A node the reference interpreter runs.
    Interpreter,
}

impl GroupKind {
    /// Short name for `kiln explain`.
    pub fn name(self) -> &'static str {
        match self {
            GroupKind::MatMul => "gemm",
            GroupKind::Elementwise => "elementwise",
            GroupKind::Rows => "rows",
            GroupKind::Attention => "attention",
            GroupKind::Movement => "movement",
            GroupKind::View => "view",
            GroupKind::Interpreter => "interp",
        }
    }
}

/// A set of nodes that becomes one kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// What it becomes.
    pub kind: GroupKind,
    /// Its nodes in topological order (for `MatMul`, the GEMM first, then its epilogue ops).
    pub nodes: Vec<NodeId>,
    /// The values it reads that other nodes produce, in order of first use.
    pub inputs: Vec<ValueId>,
    /// The values it produces that are read outside it (or are graph outputs).
    pub outputs: Vec<ValueId>,
}

/// Elementwise ops an elementwise kernel can contain (a condition only inside a `Where`).
pub fn is_elementwise(kind: OpKind) -> bool {
    matches!(facts(kind).class, OpClass::Elementwise | OpClass::Condition)
}

/// Whether `node` is an activation a GEMM epilogue applies (the IR's [`Activation`] set,
/// identity aside).
fn is_activation(node: &kiln_ir::Node) -> bool {
    let act = node.op().map(Activation::of_op);
    matches!(act, Some(Ok(Some(a))) if a != Activation::None)
}

/// The group kind of a node on its own: its op's class in the op table.
fn kind_of(graph: &Graph, node: NodeId) -> GroupKind {
    let Some(op) = graph.node(node).op() else {
        return GroupKind::Interpreter;
    };
    match facts(op.kind).class {
        OpClass::MatMul => GroupKind::MatMul,
        OpClass::Elementwise | OpClass::Condition => GroupKind::Elementwise,
        OpClass::Rows => GroupKind::Rows,
        OpClass::Attention => GroupKind::Attention,
        OpClass::Movement => GroupKind::Movement,
        OpClass::View => GroupKind::View,
        OpClass::Interpreted => GroupKind::Interpreter,
    }
}

/// The graph's consumers of each value (node and port), plus whether it is a graph output.
pub(crate) struct Uses {
    readers: HashMap<ValueId, Vec<NodeId>>,
    outputs: HashSet<ValueId>,
}

impl Uses {
    /// Indexes the uses of every value of `graph`.
    pub(crate) fn of(graph: &Graph) -> Uses {
        let mut readers: HashMap<ValueId, Vec<NodeId>> = HashMap::new();
        for n in graph.topo_order() {
            for v in graph.node(n).inputs.iter().flatten() {
                readers.entry(*v).or_default().push(n);
            }
        }
        let outputs = graph.outputs().iter().map(|(_, v)| *v).collect();
        Uses { readers, outputs }
    }

    /// The nodes that read `v` (once per input port).
    pub(crate) fn readers(&self, v: ValueId) -> &[NodeId] {
        self.readers.get(&v).map_or(&[], |r| r.as_slice())
    }

    /// Whether `v` is a graph output.
    pub(crate) fn is_output(&self, v: ValueId) -> bool {
        self.outputs.contains(&v)
    }

    /// The single node reading `v`, if exactly one node reads it once and it is not a graph
    /// output (so it can be fused away).
    fn sole_reader(&self, v: ValueId) -> Option<NodeId> {
        match self.readers(v) {
            [n] if !self.is_output(v) => Some(*n),
            _ => None,
        }
    }
}

/// Whether every value `node` produces is f32 (the kernels' element type).
fn produces_f32(graph: &Graph, node: NodeId) -> bool {
    graph
        .node(node)
        .outputs
        .iter()
        .all(|v| v.ty.dtype == DType::F32)
}

/// Cuts `graph` into groups, in an order that respects dependencies.
pub fn group(graph: &Graph) -> Vec<Group> {
    let uses = Uses::of(graph);
    let order = graph.topo_order();
    let position: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut owner: HashMap<NodeId, usize> = HashMap::new();
    let mut members: Vec<(GroupKind, Vec<NodeId>)> = vec![];
    let out = |n: NodeId| ValueId { node: n, output: 0 };
    let op_kind = |n: NodeId| graph.node(n).op().map(|o| o.kind);

    // GEMMs absorb `+ bias`, an activation and `+ residual` that follow them, in that order.
    for &n in &order {
        if kind_of(graph, n) != GroupKind::MatMul || !produces_f32(graph, n) {
            continue;
        }
        let mut nodes = vec![n];
        let fused = graph.node(n).op().map(|o| o.attrs.str("activation"));
        let mut stage = match fused.map(|a| a.and_then(Activation::parse)) {
            Some(Ok(a)) if a != Activation::None => 2,
            _ if op_kind(n) == Some(OpKind::FusedMatMul) && graph.node(n).inputs.len() > 2 => 1,
            _ => 0,
        };
        while let Some(next) = uses.sole_reader(out(*nodes.last().expect("non-empty"))) {
            // A residual add of two GEMMs' results belongs to the first GEMM that reaches it
            // (parallel attention + MLP blocks: GPT-NeoX, Phi); the other ends before it.
            if owner.contains_key(&next) {
                break;
            }
            let Some(kind) = op_kind(next) else { break };
            let step = match kind {
                OpKind::Add if stage == 0 && is_bias(graph, next) => 1,
                _ if stage <= 1
                    && is_activation(graph.node(next))
                    && graph.node(next).inputs.len() == 1 =>
                {
                    2
                }
                OpKind::Add if stage <= 2 && same_shape_operands(graph, next) => 3,
                _ => break,
            };
            stage = step;
            nodes.push(next);
            if stage == 3 {
                break;
            }
        }
        for &m in &nodes {
            owner.insert(m, members.len());
        }
        members.push((GroupKind::MatMul, nodes));
    }

    // Elementwise trees: a node whose only reader is an elementwise group joins it; a
    // comparison of f32 values joins only the group of the `Where` that reads it (the kernel
    // computes it inline as the condition; compared integers are stored as bools).
    for &n in order.iter().rev() {
        let condition = op_kind(n).is_some_and(|k| facts(k).class == OpClass::Condition)
            && graph
                .node(n)
                .inputs
                .iter()
                .flatten()
                .any(|v| graph.value(*v).ty.dtype == DType::F32);
        if owner.contains_key(&n) || kind_of(graph, n) != GroupKind::Elementwise {
            continue;
        }
        let reader = uses.sole_reader(out(n));
        if condition && reader.and_then(op_kind) != Some(OpKind::Where) {
            continue;
        }
        let joined = reader.and_then(|r| {
            owner
                .get(&r)
                .copied()
                .filter(|&g| members[g].0 == GroupKind::Elementwise)
        });
        if condition && joined.is_none() {
            continue;
        }
        let g = joined.unwrap_or_else(|| {
            members.push((GroupKind::Elementwise, vec![]));
            members.len() - 1
        });
        members[g].1.push(n);
        owner.insert(n, g);
    }

    for &n in &order {
        if owner.contains_key(&n) || !matches!(graph.node(n).kind, NodeKind::Op(_)) {
            continue;
        }
        let kind = match kind_of(graph, n) {
            GroupKind::Elementwise | GroupKind::MatMul => GroupKind::Interpreter,
            k => k,
        };
        owner.insert(n, members.len());
        members.push((kind, vec![n]));
    }

    let mut groups: Vec<Group> = members
        .into_iter()
        .map(|(kind, mut nodes)| {
            if kind != GroupKind::MatMul {
                nodes.sort_by_key(|n| position[n]);
            }
            let (inputs, outputs) = boundary(graph, &uses, &nodes);
            Group {
                kind,
                nodes,
                inputs,
                outputs,
            }
        })
        .collect();
    groups.sort_by_key(|g| g.nodes.iter().map(|n| position[n]).max());
    groups
}

/// The group of one node on its own (used when a larger group's template declines).
pub fn single(graph: &Graph, node: NodeId) -> Group {
    let uses = Uses::of(graph);
    let (inputs, outputs) = boundary(graph, &uses, &[node]);
    Group {
        kind: kind_of(graph, node),
        nodes: vec![node],
        inputs,
        outputs,
    }
}

/// Whether `add` adds a constant vector of the other operand's last-dim length (a bias).
fn is_bias(graph: &Graph, add: NodeId) -> bool {
    let node = graph.node(add);
    let [Some(_), Some(b)] = node.inputs[..] else {
        return false;
    };
    let bias = graph.value(b);
    let last = node.outputs[0].ty.shape.last().cloned();
    matches!(graph.node(b.node).kind, NodeKind::Constant(_))
        && bias.ty.shape.len() == 1
        && Some(bias.ty.shape[0].clone()) == last
        && bias.ty.dtype == DType::F32
}

/// Whether both operands of a binary op have the output's shape (a residual add).
fn same_shape_operands(graph: &Graph, node: NodeId) -> bool {
    let n = graph.node(node);
    let shape = &n.outputs[0].ty.shape;
    n.inputs.len() == 2
        && n.inputs
            .iter()
            .all(|v| v.is_some_and(|v| &graph.value(v).ty.shape == shape))
}

/// The values a set of nodes reads from outside and the values it produces for outside.
fn boundary(graph: &Graph, uses: &Uses, nodes: &[NodeId]) -> (Vec<ValueId>, Vec<ValueId>) {
    let inside: HashSet<NodeId> = nodes.iter().copied().collect();
    let mut inputs = vec![];
    let mut outputs = vec![];
    for &n in nodes {
        for v in graph.node(n).inputs.iter().flatten() {
            if !inside.contains(&v.node) && !inputs.contains(v) {
                inputs.push(*v);
            }
        }
        for output in 0..graph.node(n).outputs.len() {
            let v = ValueId { node: n, output };
            let read_outside = uses.readers(v).iter().any(|r| !inside.contains(r));
            if read_outside || uses.is_output(v) {
                outputs.push(v);
            }
        }
    }
    (inputs, outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{compile, Options};
    use kiln_ir::{interp, text, Tensor};

    /// A parallel residual block (GPT-NeoX, Phi): `attn(x) + mlp(x)`, two GEMMs whose results
    /// one `Add` sums.
    const PARALLEL: &str = "kiln graph v1
input %x: f32[seq, 8]
input %wa: f32[8, 8]
input %wm: f32[8, 8]
%a: f32[seq, 8] = MatMul(%x, %wa)  @\"attn\"
%m: f32[seq, 8] = MatMul(%x, %wm)  @\"mlp\"
%y: f32[seq, 8] = Add(%m, %a)  @\"residual\"
output y = %y
";

    #[test]
    fn a_residual_add_of_two_gemms_belongs_to_one_group() {
        let graph = text::parse(PARALLEL).unwrap();
        let groups = group(&graph);
        let mut seen = HashSet::new();
        for g in &groups {
            for n in &g.nodes {
                assert!(seen.insert(*n), "{} is in two groups", graph.node(*n).name);
            }
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn a_parallel_residual_block_runs_compiled_as_interpreted() {
        let graph = text::parse(PARALLEL).unwrap();
        let value = |n: usize, seed: f32| -> Vec<f32> {
            (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
        };
        let feeds: HashMap<String, Tensor> = [
            ("x", vec![5, 8], value(40, 1.0)),
            ("wa", vec![8, 8], value(64, 2.0)),
            ("wm", vec![8, 8], value(64, 3.0)),
        ]
        .into_iter()
        .map(|(n, s, d)| (n.to_string(), Tensor::from_vec(&s, d).unwrap()))
        .collect();
        let expected = interp::run(&graph, &feeds).unwrap();
        let program = compile(&graph, &Options::default()).unwrap();
        let (actual, _) = program.run(&feeds).unwrap();
        let (Tensor::F32(e), Tensor::F32(a)) = (&expected[0].1, &actual[0].1) else {
            panic!("f32 outputs");
        };
        assert_eq!(e.shape(), a.shape());
        for (x, y) in e.iter().zip(a.iter()) {
            assert!((x - y).abs() <= 1e-5, "{x} vs {y}");
        }
    }
}

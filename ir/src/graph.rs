//! The graph: a petgraph DAG of input, constant and op nodes whose edges carry values
//! from an output port of one node to an input port of another.

use crate::data::TensorData;
use crate::infer::infer_op;
use crate::op::{Op, OpKind};
use crate::{DType, Dim};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A shape whose dims may be symbolic.
pub type Shape = Vec<Dim>;

/// Identifies a node of a [`Graph`].
pub type NodeId = NodeIndex;

/// Identifies a value: output `output` of node `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId {
    /// The producing node.
    pub node: NodeId,
    /// Which of its outputs.
    pub output: usize,
}

/// What is statically known about a value: dtype, symbolic shape and, for small integer
/// tensors derived from shapes or constants, the symbolic element values (row-major).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueType {
    /// Element type.
    pub dtype: DType,
    /// Shape, possibly symbolic.
    pub shape: Shape,
    /// Element values when known symbolically (small int tensors only).
    #[serde(skip)]
    pub sym: Option<Vec<Dim>>,
}

impl ValueType {
    /// A type with no known element values.
    pub fn new(dtype: DType, shape: Shape) -> ValueType {
        ValueType {
            dtype,
            shape,
            sym: None,
        }
    }

    /// The shape as concrete sizes, if no dim is symbolic.
    pub fn concrete_shape(&self) -> Option<Vec<usize>> {
        self.shape
            .iter()
            .map(|d| d.as_known().and_then(|v| usize::try_from(v).ok()))
            .collect()
    }
}

/// A named value produced by a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Value {
    /// Unique name within the graph.
    pub name: String,
    /// Its type.
    #[serde(flatten)]
    pub ty: ValueType,
}

/// What a node is.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A graph input, fed at run time.
    Input,
    /// A constant (a weight), held by reference.
    Constant(TensorData),
    /// An operation on the node's inputs.
    Op(Op),
}

/// A node: its kind, its input values (absent optional inputs are `None`) and its outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Name, for error messages and the text form (from the model file where it has one).
    pub name: String,
    /// Input, constant or op.
    pub kind: NodeKind,
    /// The values consumed, by input port.
    pub inputs: Vec<Option<ValueId>>,
    /// The values produced, by output port.
    pub outputs: Vec<Value>,
}

impl Node {
    /// The op, if this is an op node.
    pub fn op(&self) -> Option<&Op> {
        match &self.kind {
            NodeKind::Op(op) => Some(op),
            _ => None,
        }
    }
}

/// A tensor graph with named inputs and outputs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    dag: StableDiGraph<Node, usize>,
    inputs: Vec<NodeId>,
    outputs: Vec<(String, ValueId)>,
    names: HashMap<String, ValueId>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a graph input.
    pub fn add_input(&mut self, name: &str, dtype: DType, shape: Shape) -> Result<ValueId, String> {
        let value = Value {
            name: name.to_string(),
            ty: ValueType::new(dtype, shape),
        };
        let id = self.insert(name, NodeKind::Input, vec![], vec![value])?;
        self.inputs.push(id.node);
        Ok(id)
    }

    /// Adds a constant. Small integer constants record their values for shape inference.
    pub fn add_constant(&mut self, name: &str, data: TensorData) -> Result<ValueId, String> {
        let ty = crate::infer::constant_type(&data);
        let value = Value {
            name: name.to_string(),
            ty,
        };
        self.insert(name, NodeKind::Constant(data), vec![], vec![value])
    }

    /// Adds an op node, inferring its output types; `outputs` names its results.
    /// The error names the node.
    pub fn add_op(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        outputs: &[String],
    ) -> Result<Vec<ValueId>, String> {
        let input_types: Vec<Option<&ValueType>> = inputs
            .iter()
            .map(|i| i.map(|v| &self.value(v).ty))
            .collect();
        let types = infer_op(&op, &input_types, outputs.len())
            .map_err(|e| format!("node `{name}` ({}): {e}", op.kind))?;
        let values = outputs
            .iter()
            .zip(types)
            .map(|(n, ty)| Value {
                name: n.clone(),
                ty,
            })
            .collect();
        let first = self.insert(name, NodeKind::Op(op), inputs, values)?;
        Ok((0..outputs.len())
            .map(|output| ValueId {
                node: first.node,
                output,
            })
            .collect())
    }

    fn insert(
        &mut self,
        name: &str,
        kind: NodeKind,
        inputs: Vec<Option<ValueId>>,
        outputs: Vec<Value>,
    ) -> Result<ValueId, String> {
        for (i, v) in outputs.iter().enumerate() {
            if self.names.contains_key(&v.name) || outputs[..i].iter().any(|o| o.name == v.name) {
                return Err(format!(
                    "node `{name}`: value `{}` is defined twice",
                    v.name
                ));
            }
        }
        let out_names: Vec<String> = outputs.iter().map(|v| v.name.clone()).collect();
        let node = self.dag.add_node(Node {
            name: name.to_string(),
            kind,
            inputs: inputs.clone(),
            outputs,
        });
        for (port, input) in inputs.iter().enumerate() {
            if let Some(src) = input {
                self.dag.add_edge(src.node, node, port);
            }
        }
        for (output, n) in out_names.into_iter().enumerate() {
            self.names.insert(n, ValueId { node, output });
        }
        Ok(ValueId { node, output: 0 })
    }

    /// Declares the graph outputs, in order, by name.
    pub fn set_outputs(&mut self, outputs: Vec<(String, ValueId)>) {
        self.outputs = outputs;
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.dag[id]
    }

    /// The value with this id.
    pub fn value(&self, id: ValueId) -> &Value {
        &self.dag[id.node].outputs[id.output]
    }

    /// Looks a value up by name.
    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }

    /// The input nodes, in declaration order.
    pub fn inputs(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs.iter().map(|&node| ValueId { node, output: 0 })
    }

    /// The outputs: (name, value), in declaration order.
    pub fn outputs(&self) -> &[(String, ValueId)] {
        &self.outputs
    }

    /// The states: inputs that an output of the same name gives the new value of (a causal
    /// model's KV cache), in input order. Compiled plans keep the same rule
    /// (`kiln_rt::plan::Plan::states`).
    pub fn states(&self) -> impl Iterator<Item = ValueId> + '_ {
        self.inputs().filter(|&v| {
            let name = &self.value(v).name;
            self.outputs.iter().any(|(n, _)| n == name)
        })
    }

    /// All node ids, in insertion order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.dag.node_indices()
    }

    /// Node ids in a topological order (producers before consumers, ties by insertion order).
    pub fn topo_order(&self) -> Vec<NodeId> {
        let mut indegree: HashMap<NodeId, usize> = self
            .dag
            .node_indices()
            .map(|n| (n, self.dag.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: std::collections::BTreeSet<NodeId> = indegree
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| n)
            .collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.dag.edges_directed(n, Direction::Outgoing) {
                let d = indegree
                    .get_mut(&e.target())
                    .expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        order
    }

    /// The nodes that consume `node`'s outputs, with the input port they read.
    pub fn users(&self, node: NodeId) -> Vec<(NodeId, usize)> {
        self.dag
            .edges_directed(node, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect()
    }

    /// Makes every consumer of `old` (and any graph output that is `old`) use `new` instead;
    /// the node producing `new` keeps its own inputs (so `new` may be computed from `old`).
    pub fn replace_uses(&mut self, old: ValueId, new: ValueId) {
        let uses: Vec<(NodeId, usize)> = self
            .users(old.node)
            .into_iter()
            .filter(|&(user, port)| user != new.node && self.dag[user].inputs[port] == Some(old))
            .collect();
        for (user, port) in uses {
            let edge = self
                .dag
                .edges_directed(user, Direction::Incoming)
                .find(|e| e.source() == old.node && *e.weight() == port)
                .map(|e| e.id())
                .expect("input edges mirror node inputs");
            self.dag.remove_edge(edge);
            self.dag.add_edge(new.node, user, port);
            self.dag[user].inputs[port] = Some(new);
        }
        for out in &mut self.outputs {
            if out.1 == old {
                out.1 = new;
            }
        }
    }

    /// Removes every node that no graph output depends on (inputs are kept).
    pub fn remove_dead_nodes(&mut self) {
        let mut live: HashSet<NodeId> = self.inputs.iter().copied().collect();
        let mut stack: Vec<NodeId> = self.outputs.iter().map(|o| o.1.node).collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.dag[n].inputs.iter().flatten().map(|v| v.node));
            }
        }
        let dead: Vec<NodeId> = self
            .dag
            .node_indices()
            .filter(|n| !live.contains(n))
            .collect();
        for n in dead {
            if let Some(node) = self.dag.remove_node(n) {
                for v in node.outputs {
                    self.names.remove(&v.name);
                }
            }
        }
    }

    /// How many op nodes of each kind the graph has.
    pub fn op_histogram(&self) -> BTreeMap<OpKind, usize> {
        let mut h = BTreeMap::new();
        for n in self.dag.node_weights() {
            if let NodeKind::Op(op) = &n.kind {
                *h.entry(op.kind).or_insert(0) += 1;
            }
        }
        h
    }

    /// Total elements and bytes of all constants.
    pub fn parameter_totals(&self) -> (usize, usize) {
        self.dag
            .node_weights()
            .filter_map(|n| match &n.kind {
                NodeKind::Constant(d) => Some((d.len(), d.bytes().len())),
                _ => None,
            })
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }
}

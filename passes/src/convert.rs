//! Conversion between the IR graph and the e-graph: a graph is added node by node (inputs and
//! constants as leaves, weights by reference), and an extraction (one chosen e-node per needed
//! e-class) is rebuilt into a graph that keeps the input and output names.

use crate::analysis::{KilnAnalysis, KilnEGraph};
use crate::lang::{Node, OpNode};
use egg::{Id, Language};
use kiln_ir::{Graph, NodeKind, ValueId};
use std::collections::HashMap;

/// A graph loaded into an e-graph.
pub struct Loaded {
    /// The e-graph, with the graph's constants and inputs in its analysis.
    pub egraph: KilnEGraph,
    /// Graph outputs: name and e-class.
    pub outputs: Vec<(String, Id)>,
    /// Input names, in order.
    pub inputs: Vec<String>,
    /// The original value names with their e-classes, in graph order (when rebuilding, a class
    /// takes the first name that maps to it, so merged classes are named deterministically).
    pub names: Vec<(Id, String)>,
}

/// Adds every node of `graph` to a new e-graph.
pub fn graph_to_egraph(graph: &Graph) -> Loaded {
    let mut egraph = KilnEGraph::new(KilnAnalysis::default());
    let mut ids: HashMap<ValueId, Id> = HashMap::new();
    let mut names = vec![];
    let mut inputs = vec![];
    for n in graph.topo_order() {
        let node = graph.node(n);
        let first = match &node.kind {
            NodeKind::Input => {
                let v = &node.outputs[0];
                egraph.analysis.inputs.insert(v.name.clone(), v.ty.clone());
                inputs.push(v.name.clone());
                egraph.add(Node::Input(v.name.as_str().into()))
            }
            NodeKind::Constant(data) => {
                let leaf = egraph
                    .analysis
                    .add_constant(&node.outputs[0].name, data.clone());
                egraph.add(leaf)
            }
            NodeKind::Op(op) => {
                let args = node
                    .inputs
                    .iter()
                    .map(|i| match i {
                        Some(v) => ids[v],
                        None => egraph.add(Node::Absent),
                    })
                    .collect();
                egraph.add(Node::Op(OpNode::new(op.clone()), args))
            }
        };
        for (output, v) in node.outputs.iter().enumerate() {
            let id = if output == 0 {
                first
            } else {
                egraph.add(Node::Get(output as u32, [first]))
            };
            ids.insert(ValueId { node: n, output }, id);
            names.push((id, v.name.clone()));
        }
    }
    let outputs = graph
        .outputs()
        .iter()
        .map(|(name, v)| (name.clone(), ids[v]))
        .collect();
    egraph.rebuild();
    Loaded {
        egraph,
        outputs,
        inputs,
        names,
    }
}

/// Rebuilds a graph from the chosen e-node of each needed class (`choice` is keyed by
/// canonical class id). Values keep their original names where a class had one.
pub fn egraph_to_graph(loaded: &Loaded, choice: &HashMap<Id, Node>) -> Result<Graph, String> {
    let egraph = &loaded.egraph;
    let mut graph = Graph::new();
    let mut built: HashMap<Id, ValueId> = HashMap::new();
    let mut names: HashMap<Id, &String> = HashMap::new();
    for (id, n) in &loaded.names {
        names.entry(egraph.find(*id)).or_insert(n);
    }
    for name in &loaded.inputs {
        let ty = &egraph.analysis.inputs[name];
        let v = graph.add_input(name, ty.dtype, ty.shape.clone())?;
        built.insert(
            egraph.find(
                egraph
                    .lookup(Node::Input(name.as_str().into()))
                    .expect("inputs were added"),
            ),
            v,
        );
    }
    let mut counter = 0usize;
    let mut fresh = |graph: &Graph, base: &str| loop {
        counter += 1;
        let candidate = format!("{base}_{counter}");
        if graph.value_by_name(&candidate).is_none() {
            return candidate;
        }
    };
    // Iterative post-order over the chosen nodes, from the outputs.
    let mut stack: Vec<(Id, bool)> = loaded
        .outputs
        .iter()
        .rev()
        .map(|(_, id)| (egraph.find(*id), false))
        .collect();
    while let Some((class, expanded)) = stack.pop() {
        if built.contains_key(&class) {
            continue;
        }
        let node = choice
            .get(&class)
            .ok_or_else(|| format!("no e-node chosen for class {class}"))?;
        if !expanded {
            stack.push((class, true));
            for c in node.children() {
                let c = egraph.find(*c);
                if !built.contains_key(&c) && !matches!(choice.get(&c), Some(Node::Absent)) {
                    stack.push((c, false));
                }
            }
            continue;
        }
        let name = match names.get(&class) {
            Some(n) if graph.value_by_name(n).is_none() => (*n).clone(),
            _ => fresh(&graph, &node_base_name(node)),
        };
        let value = match node {
            Node::Input(_) => unreachable!("inputs are built first"),
            Node::Absent => continue,
            Node::Const(c) => {
                let (_, data) = &egraph.analysis.constants[*c as usize];
                graph.add_constant(&name, data.clone())?
            }
            Node::Op(op, args) => {
                let inputs: Vec<Option<ValueId>> = args
                    .iter()
                    .map(|a| built.get(&egraph.find(*a)).copied())
                    .collect();
                let n_out = max_output_used(loaded, choice, class) + 1;
                let mut outs = vec![name.clone()];
                for i in 1..n_out {
                    outs.push(fresh(&graph, &format!("{name}:{i}")));
                }
                graph.add_op(&name, (*op.op).clone(), inputs, &outs)?[0]
            }
            Node::Get(i, [x]) => {
                let base = built[&egraph.find(*x)];
                ValueId {
                    node: base.node,
                    output: *i as usize,
                }
            }
        };
        built.insert(class, value);
    }
    graph.set_outputs(
        loaded
            .outputs
            .iter()
            .map(|(n, id)| (n.clone(), built[&egraph.find(*id)]))
            .collect(),
    );
    Ok(graph)
}

fn node_base_name(node: &Node) -> String {
    match node {
        Node::Op(op, _) => op.op.kind.name().to_string(),
        _ => "value".into(),
    }
}

/// The highest output index of `class`'s op that a chosen `Get` node reads (0 if none).
fn max_output_used(loaded: &Loaded, choice: &HashMap<Id, Node>, class: Id) -> usize {
    choice
        .values()
        .filter_map(|n| match n {
            Node::Get(i, [x]) if loaded.egraph.find(*x) == class => Some(*i as usize),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

//! Compile-time evaluation of constant subgraphs: every op whose inputs are all constants is
//! run once on the reference interpreter and replaced by its result. This turns weight
//! dequantisation chains (int8 weights `Cast` and scaled) and weight transposes into plain f32
//! weights that the GEMM template can pre-pack.

use kiln_ir::interp::{eval_op, Bindings};
use kiln_ir::{Graph, NodeKind, Tensor, ValueId};

/// Results larger than this many elements stay computed at run time.
const MAX_FOLDED_ELEMENTS: usize = 1 << 26;

/// Folds every op of `graph` whose inputs are all constants; returns how many were folded.
/// An op the interpreter rejects is left in place (its error then surfaces at run time,
/// naming the node).
pub fn fold_constants(graph: &mut Graph) -> usize {
    let mut folded = 0;
    for n in graph.topo_order() {
        let node = graph.node(n);
        let Some(op) = node.op() else { continue };
        let mut args = vec![];
        let mut all_constant = true;
        for input in &node.inputs {
            match input.map(|v| &graph.node(v.node).kind) {
                None => args.push(None),
                Some(NodeKind::Constant(data)) => args.push(Some(Tensor::from_data(data))),
                Some(_) => {
                    all_constant = false;
                    break;
                }
            }
        }
        if !all_constant || node.inputs.is_empty() {
            continue;
        }
        let refs: Vec<Option<&Tensor>> = args.iter().map(|a| a.as_ref()).collect();
        let Ok(results) = eval_op(op, &refs, &Bindings::new()) else {
            continue;
        };
        if results.len() < node.outputs.len()
            || results.iter().any(|t| t.len() > MAX_FOLDED_ELEMENTS)
        {
            continue;
        }
        let names: Vec<String> = node.outputs.iter().map(|v| v.name.clone()).collect();
        for (output, (t, name)) in results.into_iter().zip(names).enumerate() {
            let Ok(c) = graph.add_constant(&format!("{name}.folded"), t.to_data()) else {
                continue;
            };
            graph.replace_uses(ValueId { node: n, output }, c);
        }
        folded += 1;
    }
    graph.remove_dead_nodes();
    folded
}

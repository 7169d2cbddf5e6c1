//! Compile-time evaluation of constant subgraphs: every op whose inputs are all constants is
//! run once on the reference interpreter and replaced by its result. This turns weight
//! dequantisation chains (int8 weights `Cast` and scaled) and weight transposes into plain f32
//! weights that the GEMM template can pre-pack. A transposed constant matrix that only GEMMs
//! read as their B stays as it is: the GEMM packs it from the stored layout
//! ([`transposed_matrix`]), so that no transposed copy of a model's weights is made.

use kiln_ir::interp::{eval_op, Bindings};
use kiln_ir::{Graph, NodeId, NodeKind, OpKind, Tensor, ValueId};

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
        if !all_constant || node.inputs.is_empty() || packed_as_stored(graph, n) {
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

/// The matrix that node `n` transposes, if it is a `Transpose` of a 2-D value (perm `[1, 0]`,
/// or none).
pub(super) fn transposed_matrix(graph: &Graph, n: NodeId) -> Option<ValueId> {
    let node = graph.node(n);
    let op = node.op().filter(|op| op.kind == OpKind::Transpose)?;
    let input = node.inputs.first().copied().flatten()?;
    if graph.value(input).ty.shape.len() != 2 {
        return None;
    }
    match op.attrs.get("perm") {
        None => Some(input),
        Some(_) => (op.attrs.ints("perm").ok()? == [1, 0]).then_some(input),
    }
}

/// Whether node `n` transposes a matrix that only GEMMs read, as their B: they pack it from
/// its stored layout, so folding it would only copy it.
fn packed_as_stored(graph: &Graph, n: NodeId) -> bool {
    let gemm_b = |(user, port): (NodeId, usize)| {
        port == 1
            && graph.node(user).op().is_some_and(|op| {
                matches!(op.kind, OpKind::MatMul | OpKind::FusedMatMul | OpKind::Gemm)
            })
    };
    let users = graph.users(n);
    transposed_matrix(graph, n).is_some()
        && !users.is_empty()
        && users.into_iter().all(gemm_b)
        && !graph.outputs().iter().any(|(_, v)| v.node == n)
}

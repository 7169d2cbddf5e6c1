//! Folding of shape computations: every integer value whose elements shape inference knows
//! (a chain of Shape, Gather, Unsqueeze, Concat, arithmetic, ... over input shapes) is replaced
//! by a constant when fully known, or by one `SymbolicDims` node when it depends on symbolic
//! dims, so Reshape and Expand targets keep their symbolic shapes and the chains disappear.

use crate::graph::{Graph, NodeKind, ValueId};
use crate::op::{Op, OpKind};
use crate::{Attr, Attrs, DType, Dim, Tensor};

/// Replaces shape computations by constants or `SymbolicDims` nodes and removes dead nodes.
pub fn fold_shape_computations(graph: &mut Graph) {
    for n in graph.topo_order() {
        let node = graph.node(n);
        let NodeKind::Op(op) = &node.kind else {
            continue;
        };
        if op.kind == OpKind::SymbolicDims || graph.users(n).is_empty() && !is_output(graph, n) {
            continue;
        }
        let name = node.name.clone();
        for (output, value) in node.outputs.clone().into_iter().enumerate() {
            let Some(sym) = &value.ty.sym else { continue };
            let Some(shape) = value.ty.concrete_shape() else {
                continue;
            };
            if shape.len() > 1 {
                continue;
            }
            let folded_name = format!("{}:folded", value.name);
            let known: Option<Vec<i64>> = sym.iter().map(Dim::as_known).collect();
            let new = match known {
                Some(values) => {
                    let t = Tensor::from_vec(&shape, values)
                        .expect("sym values match the shape")
                        .cast(value.ty.dtype);
                    graph.add_constant(&folded_name, t.to_data())
                }
                None if value.ty.dtype == DType::I64 => {
                    let mut attrs = Attrs::default();
                    attrs.set("dims", Attr::Dims(sym.clone()));
                    if shape.is_empty() {
                        attrs.set("scalar", Attr::Int(1));
                    }
                    let op = Op::new(OpKind::SymbolicDims, attrs);
                    graph
                        .add_op(&format!("{name}/dims"), op, vec![], &[folded_name])
                        .map(|v| v[0])
                }
                None => continue,
            };
            let new = new.expect("a fresh name derived from a unique value name");
            graph.replace_uses(ValueId { node: n, output }, new);
        }
    }
    graph.remove_dead_nodes();
}

fn is_output(graph: &Graph, n: crate::NodeId) -> bool {
    graph.outputs().iter().any(|(_, v)| v.node == n)
}

//! Rewrites that put attention in the form the attention kernel takes:
//! - ONNX `Attention` without a past cache returns K and V themselves as `present_key` /
//!   `present_value`, so readers of those outputs are pointed at K and V, and the op keeps
//!   only its attention output;
//! - a bool mask (true = attend) becomes the equivalent additive mask `Where(m, 0, -inf)`,
//!   computed once for all the attention ops that share it.

use kiln_ir::{DType, Graph, Op, OpKind, Tensor, ValueId};

/// Rewires the present-cache outputs of every 4-D `Attention` node without past inputs to
/// its K and V inputs; returns how many nodes were rewired.
pub fn forward_present_cache(graph: &mut Graph) -> usize {
    let mut rewired = 0;
    for n in graph.topo_order() {
        let node = graph.node(n);
        let Some(op) = node.op() else { continue };
        let no_past = node.inputs.len() <= 4 || node.inputs[4..].iter().all(Option::is_none);
        if op.kind != OpKind::Attention || !no_past || node.outputs.len() < 2 {
            continue;
        }
        let [Some(_), Some(k), Some(v)] = node.inputs[..3] else {
            continue;
        };
        let four_d = [k, v].iter().all(|x| graph.value(*x).ty.shape.len() == 4);
        if !four_d {
            continue;
        }
        let outputs = node.outputs.len();
        for (output, input) in [(1, k), (2, v)] {
            if output < outputs {
                graph.replace_uses(ValueId { node: n, output }, input);
            }
        }
        rewired += 1;
    }
    rewired
}

/// Replaces every bool mask that only attention ops read by `Where(mask, 0, -inf)`; returns
/// how many masks were converted.
pub fn additive_masks(graph: &mut Graph) -> usize {
    let is_attention = |g: &Graph, n| {
        matches!(
            g.node(n).op().map(|o| o.kind),
            Some(OpKind::Attention | OpKind::FusedAttention)
        )
    };
    let mut masks: Vec<ValueId> = vec![];
    for n in graph.topo_order() {
        if !is_attention(graph, n) {
            continue;
        }
        let Some(Some(m)) = graph.node(n).inputs.get(3).copied() else {
            continue;
        };
        let only_attention = graph
            .users(m.node)
            .iter()
            .filter(|(u, port)| graph.node(*u).inputs[*port] == Some(m))
            .all(|(u, port)| *port == 3 && is_attention(graph, *u));
        if graph.value(m).ty.dtype == DType::Bool && only_attention && !masks.contains(&m) {
            masks.push(m);
        }
    }
    let mut converted = 0;
    for m in masks {
        let name = graph.value(m).name.clone();
        let constant = |g: &mut Graph, suffix: &str, v: f32| {
            g.add_constant(&format!("{name}.{suffix}"), Tensor::scalar(v).to_data())
        };
        let (Ok(zero), Ok(neg)) = (
            constant(graph, "attend", 0.0),
            constant(graph, "masked", f32::NEG_INFINITY),
        ) else {
            continue;
        };
        let Ok(additive) = graph.add_op(
            &format!("{name}.additive"),
            Op::plain(OpKind::Where),
            vec![Some(m), Some(zero), Some(neg)],
            &[format!("{name}.additive")],
        ) else {
            continue;
        };
        graph.replace_uses(m, additive[0]);
        converted += 1;
    }
    converted
}

//! Graphviz rendering of a graph: one box per op (kind and output shape), ellipses for
//! inputs, constants omitted (their consumers list them in the tooltip).

use crate::graph::{Graph, NodeKind};
use crate::infer::fmt_shape;
use std::fmt::Write;

/// The graph in Graphviz `dot` syntax.
pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::from(
        "digraph kiln {\n  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n",
    );
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    for id in graph.topo_order() {
        let node = graph.node(id);
        let ty = node
            .outputs
            .first()
            .map(|v| format!("{}{}", v.ty.dtype, fmt_shape(&v.ty.shape)))
            .unwrap_or_default();
        match &node.kind {
            NodeKind::Constant(_) => continue,
            NodeKind::Input => {
                let _ = writeln!(
                    out,
                    "  n{} [shape=ellipse, label=\"{}\\n{}\"];",
                    id.index(),
                    esc(&node.name),
                    esc(&ty)
                );
            }
            NodeKind::Op(op) => {
                let fused = if op.kind.is_kiln_internal() {
                    ", style=filled, fillcolor=\"#ffe0b0\""
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  n{} [shape=box{fused}, label=\"{}\\n{}\"];",
                    id.index(),
                    op.kind,
                    esc(&ty)
                );
                for input in node.inputs.iter().flatten() {
                    if !matches!(graph.node(input.node).kind, NodeKind::Constant(_)) {
                        let _ = writeln!(out, "  n{} -> n{};", input.node.index(), id.index());
                    }
                }
            }
        }
    }
    for (name, v) in graph.outputs() {
        let _ = writeln!(
            out,
            "  \"out:{0}\" [shape=ellipse, label=\"{0}\"];\n  n{1} -> \"out:{0}\";",
            esc(name),
            v.node.index()
        );
    }
    out.push_str("}\n");
    out
}

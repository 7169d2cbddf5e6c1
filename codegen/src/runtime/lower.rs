//! Lowering: turns a kernel group into a template instance ([`Built`]) with the graph values
//! bound to the kernel's inputs and outputs. An error says why no template takes the group;
//! the group then runs on the interpreter and `kiln explain` shows the reason.

use super::group::{Group, GroupKind};
use crate::templates::Built;
use kiln_ir::{Graph, ValueId};

/// A group lowered to a kernel.
#[derive(Clone, Debug)]
pub(super) struct Lowered {
    /// The template instance.
    pub built: Built,
    /// The graph values bound to the template's inputs, in its order.
    pub inputs: Vec<ValueId>,
    /// The graph values bound to its outputs.
    pub outputs: Vec<ValueId>,
    /// For gathers: which input holds indices, and the table length they must stay below.
    pub index_check: Option<(usize, i64)>,
}

/// Lowers `group` with the template for its kind.
pub(super) fn lower(graph: &Graph, group: &Group) -> Result<Lowered, String> {
    let _ = graph;
    Err(format!("no {} template yet", group.kind.name()))
}

#[allow(dead_code)]
fn _kinds(k: GroupKind) -> GroupKind {
    k
}

//! Right-hand sides: templates instantiated into the e-graph once a rule's conditions hold.
//! A new node is merged only if its inferred type equals the type of the class it joins, so a
//! rule applied where shapes do not fit changes nothing.

use super::condition::Condition;
use super::{AttrBinding, Rule};
use crate::analysis::{KilnAnalysis, KilnEGraph};
use crate::lang::{Node, OpNode};
use egg::{Applier, Id, PatternAst, Subst, Symbol, Var};
use kiln_ir::{Attr, Attrs, Op, OpKind};
use std::collections::HashMap;

/// A right-side template.
#[derive(Clone, Debug, PartialEq)]
pub enum Template {
    /// A class bound on the left.
    Var(Var),
    /// An absent optional input.
    Absent,
    /// An op: literal attributes, attributes taken from bound one-element constants, inputs.
    Op {
        /// The op kind.
        kind: OpKind,
        /// Attributes written literally.
        attrs: Attrs,
        /// Attributes computed from bound one-element constants: (attribute, variables whose
        /// values are multiplied, e.g. `scale=?s*?s`).
        attr_vars: Vec<(String, Vec<Var>)>,
        /// The inputs.
        args: Vec<Template>,
    },
    /// Output `i` of a multi-output template.
    Get(u32, Box<Template>),
}

impl Template {
    /// Every variable the template reads.
    pub fn vars(&self) -> Vec<Var> {
        match self {
            Template::Var(v) => vec![*v],
            Template::Absent => vec![],
            Template::Op {
                attr_vars, args, ..
            } => attr_vars
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .chain(args.iter().flat_map(Template::vars))
                .collect(),
            Template::Get(_, t) => t.vars(),
        }
    }
}

/// Applies one rule's right side(s) where its conditions hold.
pub struct RuleApplier {
    rhs: Vec<(Option<Var>, Template)>,
    conditions: Vec<Condition>,
    /// Per left part: its binding and its attribute bindings.
    attr_bindings: Vec<(Option<Var>, Vec<AttrBinding>)>,
}

impl RuleApplier {
    /// The applier of `rule`.
    pub fn new(rule: &Rule) -> RuleApplier {
        let rhs = rule
            .rhs
            .iter()
            .map(|(b, t)| {
                (
                    b.as_ref()
                        .map(|v| v.parse().expect("bindings were validated by the parser")),
                    t.clone(),
                )
            })
            .collect();
        let attr_bindings = rule
            .lhs
            .iter()
            .zip(&rule.attr_bindings)
            .map(|((b, _), a)| {
                (
                    b.as_ref()
                        .map(|v| v.parse().expect("bindings were validated by the parser")),
                    a.clone(),
                )
            })
            .collect();
        RuleApplier {
            rhs,
            conditions: rule.conditions.clone(),
            attr_bindings,
        }
    }
}

/// Whether some `Get` node reads an output other than the first of `class`'s op.
fn has_extra_outputs_read(egraph: &KilnEGraph, class: Id) -> bool {
    let class = egraph.find(class);
    egraph[class].parents().any(|p| {
        egraph[p]
            .nodes
            .iter()
            .any(|n| matches!(n, Node::Get(i, [x]) if *i > 0 && egraph.find(*x) == class))
    })
}

impl Applier<Node, KilnAnalysis> for RuleApplier {
    fn apply_one(
        &self,
        egraph: &mut KilnEGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<Node>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        if !self.conditions.iter().all(|c| c.holds(egraph, subst)) {
            return vec![];
        }
        let mut attrs = HashMap::new();
        for (part, bindings) in &self.attr_bindings {
            let class = part.map_or(eclass, |v| subst[v]);
            for b in bindings {
                let Some(value) = bound_attr(egraph, class, b, subst) else {
                    return vec![];
                };
                attrs.insert(b.var, value);
            }
        }
        // Instantiate everything first, so a multi-pattern rule applies all parts or none.
        let mut merges = vec![];
        for (binding, template) in &self.rhs {
            let target = binding.map_or(eclass, |v| subst[v]);
            if self.rhs.len() == 1 && has_extra_outputs_read(egraph, target) {
                // Replacing a multi-output op by one value would lose its other outputs
                // (multi-pattern rules build multi-output ops and read them through `Get`).
                return vec![];
            }
            let Some(new) = instantiate(egraph, template, subst, &attrs) else {
                return vec![];
            };
            let (want, got) = (egraph[target].data.ty(), egraph[new].data.ty());
            if want.is_none()
                || want.map(|t| (&t.shape, t.dtype)) != got.map(|t| (&t.shape, t.dtype))
            {
                return vec![];
            }
            merges.push((target, new));
        }
        merges
            .into_iter()
            .filter_map(|(target, new)| egraph.union(target, new).then_some(target))
            .collect()
    }

    /// The pattern variables the right side reads (attribute-bound variables are resolved
    /// from the matched e-node, not from the search, so they are left out).
    fn vars(&self) -> Vec<Var> {
        let attr_bound: Vec<Var> = self
            .attr_bindings
            .iter()
            .flat_map(|(_, b)| b.iter().map(|a| a.var))
            .collect();
        self.rhs
            .iter()
            .flat_map(|(_, t)| t.vars())
            .filter(|v| !attr_bound.contains(v))
            .collect()
    }
}

/// The attribute a template computes from one-element constants `(value, is_float)`: their
/// product, a float if any factor is.
pub(crate) fn product_attr(factors: &[(f64, bool)]) -> Attr {
    let product: f64 = factors.iter().map(|(v, _)| v).product();
    if factors.iter().any(|(_, float)| *float) {
        Attr::Float(product as f32)
    } else {
        Attr::Int(product as i64)
    }
}

/// Constants a rule may create by folding (elements): a concatenation of projection weights.
const MAX_FOLDED_ELEMENTS: usize = 1 << 24;

/// If every input of `op` is a constant, evaluates it on the interpreter and adds the result as
/// a new constant (so, say, the Q, K and V weights a merge rule concatenates are concatenated
/// once, at compile time).
fn fold_constants(egraph: &mut KilnEGraph, op: &Op, ids: &[Id]) -> Option<Id> {
    let key = (
        crate::lang::op_token(op),
        ids.iter().map(|i| egraph.find(*i)).collect::<Vec<_>>(),
    );
    if let Some(id) = egraph.analysis.folded.get(&key) {
        return Some(*id);
    }
    let tensors = ids
        .iter()
        .map(|id| {
            egraph[*id].nodes.iter().find_map(|n| match n {
                Node::Const(c) => Some(kiln_ir::Tensor::from_data(
                    &egraph.analysis.constants[*c as usize].1,
                )),
                _ => None,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let inputs: Vec<Option<&kiln_ir::Tensor>> = tensors.iter().map(Some).collect();
    let mut outputs = kiln_ir::interp::eval_op(op, &inputs, &Default::default()).ok()?;
    if outputs.len() != 1 || outputs[0].len() > MAX_FOLDED_ELEMENTS {
        return None;
    }
    let name = format!("{}_folded_{}", op.kind, egraph.analysis.constants.len());
    let leaf = egraph
        .analysis
        .add_constant(&name, outputs.remove(0).to_data());
    let id = egraph.add(leaf);
    egraph.analysis.folded.insert(key, id);
    Some(id)
}

/// The value of a bound attribute: from the first op e-node in `class` of the binding's kind
/// whose variable inputs are the classes `subst` binds.
fn bound_attr(egraph: &KilnEGraph, class: Id, b: &AttrBinding, subst: &Subst) -> Option<Attr> {
    egraph[class].nodes.iter().find_map(|n| match n {
        Node::Op(op, args) if op.op.kind == b.kind && args.len() == b.children.len() => {
            let inputs_match = args
                .iter()
                .zip(&b.children)
                .all(|(a, v)| v.is_none_or(|v| egraph.find(*a) == egraph.find(subst[v])));
            if inputs_match {
                op.op.attrs.get(&b.key).cloned()
            } else {
                None
            }
        }
        _ => None,
    })
}

/// Adds a template's nodes; `None` if an attribute variable is not a one-element constant or
/// a node is ill-typed.
fn instantiate(
    egraph: &mut KilnEGraph,
    t: &Template,
    subst: &Subst,
    bound: &HashMap<Var, Attr>,
) -> Option<Id> {
    match t {
        Template::Var(v) => Some(subst[*v]),
        Template::Absent => Some(egraph.add(Node::Absent)),
        Template::Get(i, inner) => {
            let x = instantiate(egraph, inner, subst, bound)?;
            Some(egraph.add(Node::Get(*i, [x])))
        }
        Template::Op {
            kind,
            attrs,
            attr_vars,
            args,
        } => {
            let mut all = attrs.clone();
            for (key, vars) in attr_vars {
                if let [var] = vars.as_slice() {
                    if let Some(a) = bound.get(var) {
                        all.set(key, a.clone());
                        continue;
                    }
                }
                let factors = vars
                    .iter()
                    .map(|var| {
                        let data = &egraph[subst[*var]].data;
                        let [value] = data.value.as_deref()? else {
                            return None;
                        };
                        Some((*value, data.ty()?.dtype.is_float()))
                    })
                    .collect::<Option<Vec<_>>>()?;
                all.set(key, product_attr(&factors));
            }
            let ids = args
                .iter()
                .map(|a| instantiate(egraph, a, subst, bound))
                .collect::<Option<Vec<Id>>>()?;
            let op = Op::new(*kind, all);
            if let Some(folded) = fold_constants(egraph, &op, &ids) {
                return Some(folded);
            }
            let id = egraph.add(Node::Op(OpNode::new(op), ids));
            egraph[id].data.ty().is_some().then_some(id)
        }
    }
}

//! Rule checking by random testing: an exact single-pattern rule's left side is instantiated
//! as a concrete [`kiln_ir::Graph`], its right side is built in the same graph from the same
//! variable values, and both are evaluated on the reference interpreter with seeded random
//! inputs and compared (tolerance 1e-4, relative plus absolute).
//!
//! Each variable becomes a graph input, or a constant when a condition says `const ?v`
//! (`const ?v = N` gives the scalar `N`; number literals are such variables). Shapes come from
//! a small set of templates over a random base shape `[b, h, s, d]` (`[b,h,s,d]`, `[b,h,d,s]`,
//! `[b,h,s,s]`, `[d]`, `[s]`, `[s,d]`, `[d,s]`, `[]`): the first assignment for which both sides
//! type-check, the left pattern matches the loaded e-graph and every condition holds (checked
//! with the real [`Condition::holds`]) is used. Rules whose variables feed shape inputs
//! (`Reshape`, `Expand`, `Slice`, ...), multi-pattern rules, rules with `Get` nodes and
//! approximate rules are reported as [`CheckOutcome::Skipped`].

use crate::convert::graph_to_egraph;
use crate::lang::Node;
use crate::rules::apply::Template;
use crate::rules::condition::Condition;
use crate::rules::{Exactness, Rule};
use egg::{ENodeOrVar, Id, Searcher, Var};
use kiln_ir::{interp, DType, Dim, Graph, Op, OpKind, Tensor, ValueId};
use std::collections::HashMap;

/// The result of checking one rule.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckOutcome {
    /// Both sides agreed on every trial.
    Passed {
        /// How many random trials ran.
        trials: usize,
    },
    /// The sides differ: the variable shapes and values and both outputs.
    Failed {
        /// A readable counterexample.
        counterexample: String,
    },
    /// The rule could not be instantiated.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// A tiny seeded xorshift64* generator (deterministic; no dependencies).
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value, zero included).
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A float uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    /// An integer uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// What a variable is bound to in one candidate assignment.
#[derive(Clone, Debug)]
enum Binding {
    Input(Vec<usize>),
    Const(Tensor),
}

/// Input slots that carry shapes, axes or indices rather than data.
fn is_shape_slot(kind: OpKind, slot: usize) -> bool {
    use OpKind::*;
    slot >= 1
        && matches!(
            kind,
            Reshape | Expand | Slice | Tile | Unsqueeze | Squeeze | ReduceMean | ReduceSum
        )
        || matches!(kind, ConstantOfShape)
}

/// Why `rule` cannot be checked, if it cannot.
fn skip_reason(rule: &Rule) -> Option<String> {
    if rule.exactness != Exactness::Exact {
        return Some("approximate rule".into());
    }
    if rule.lhs.len() != 1 || rule.lhs[0].0.is_some() || rule.rhs.len() != 1 {
        return Some("multi-pattern rule".into());
    }
    let ast = rule.lhs[0].1.ast.as_ref();
    for node in ast {
        match node {
            ENodeOrVar::ENode(Node::Op(op, kids)) => {
                for (slot, k) in kids.iter().enumerate() {
                    if is_shape_slot(op.op.kind, slot)
                        && matches!(ast[usize::from(*k)], ENodeOrVar::Var(_))
                    {
                        return Some(format!(
                            "a variable feeds shape input {slot} of {}",
                            op.op.kind
                        ));
                    }
                }
            }
            ENodeOrVar::ENode(Node::Get(..)) => return Some("Get in the left side".into()),
            ENodeOrVar::ENode(Node::Input(_) | Node::Const(_)) => {
                return Some("graph leaves in the left side".into())
            }
            _ => {}
        }
    }
    None
}

/// The variables of the left pattern, in first-occurrence order.
fn pattern_vars(rule: &Rule) -> Vec<Var> {
    let mut vars = vec![];
    for node in rule.lhs[0].1.ast.as_ref() {
        if let ENodeOrVar::Var(v) = node {
            if !vars.contains(v) {
                vars.push(*v);
            }
        }
    }
    vars
}

/// Every choice for one variable, preferred first.
fn choices(rule: &Rule, v: Var, base: [usize; 4], rng: &mut XorShift) -> Vec<Binding> {
    let [b, h, s, d] = base;
    let conds: Vec<&Condition> = rule
        .conditions
        .iter()
        .filter(|c| c.vars().first() == Some(&v))
        .collect();
    let is_const = conds
        .iter()
        .any(|c| matches!(c, Condition::IsConst(_) | Condition::ConstEq(..)));
    let scalar = conds.iter().any(|c| matches!(c, Condition::Scalar(_)));
    let rank = conds.iter().find_map(|c| match c {
        Condition::Rank(_, r) => Some(*r),
        _ => None,
    });
    let shapes: Vec<Vec<usize>> = if scalar {
        vec![vec![], vec![1]]
    } else {
        vec![
            vec![b, h, s, d],
            vec![b, h, d, s],
            vec![b, h, s, s],
            vec![d],
            vec![s],
            vec![s, d],
            vec![d, s],
            vec![],
        ]
    };
    let shapes: Vec<Vec<usize>> = shapes
        .into_iter()
        .filter(|sh| rank.is_none_or(|r| sh.len() == r))
        .collect();
    let value = conds.iter().find_map(|c| match c {
        Condition::ConstEq(_, n) => Some(*n),
        _ => None,
    });
    if let Some(n) = value {
        return vec![
            Binding::Const(Tensor::scalar(n as f32)),
            Binding::Const(Tensor::scalar(n != 0.0)),
            Binding::Const(Tensor::scalar(n as i64)),
        ];
    }
    if is_const {
        return shapes
            .iter()
            .map(|sh| Binding::Const(random_tensor(sh, rng, 0.05, 1.0)))
            .collect();
    }
    shapes.into_iter().map(Binding::Input).collect()
}

fn random_tensor(shape: &[usize], rng: &mut XorShift, lo: f32, hi: f32) -> Tensor {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.uniform(lo, hi)).collect();
    Tensor::from_vec(shape, data).expect("sizes agree")
}

fn var_name(v: Var) -> String {
    format!("v_{}", v.to_string().trim_start_matches('?'))
}

/// A built candidate: the graph, the two roots and the feeds.
struct Built {
    graph: Graph,
    lhs: ValueId,
    rhs: ValueId,
}

/// Builds the left and right sides for one assignment; `None` if either does not type-check.
fn build(rule: &Rule, vars: &[(Var, Binding)]) -> Option<Built> {
    let mut graph = Graph::new();
    let mut env: HashMap<Var, ValueId> = HashMap::new();
    for (v, b) in vars {
        let id = match b {
            Binding::Input(shape) => graph
                .add_input(
                    &var_name(*v),
                    DType::F32,
                    shape.iter().map(|&d| Dim::known(d as i64)).collect(),
                )
                .ok()?,
            Binding::Const(t) => graph.add_constant(&var_name(*v), t.to_data()).ok()?,
        };
        env.insert(*v, id);
    }
    let ast = rule.lhs[0].1.ast.as_ref();
    let mut ids: Vec<Option<ValueId>> = Vec::with_capacity(ast.len());
    for (i, node) in ast.iter().enumerate() {
        let id = match node {
            ENodeOrVar::Var(v) => Some(env[v]),
            ENodeOrVar::ENode(Node::Absent) => None,
            ENodeOrVar::ENode(Node::Op(op, kids)) => {
                let inputs = kids.iter().map(|k| ids[usize::from(*k)]).collect();
                let op = Op::new(op.op.kind, op.op.attrs.clone());
                Some(
                    graph
                        .add_op(&format!("l{i}"), op, inputs, &[format!("l{i}")])
                        .ok()?[0],
                )
            }
            _ => return None,
        };
        ids.push(id);
    }
    let lhs = (*ids.last()?)?;
    let consts: HashMap<Var, &Tensor> = vars
        .iter()
        .filter_map(|(v, b)| match b {
            Binding::Const(t) => Some((*v, t)),
            Binding::Input(_) => None,
        })
        .collect();
    let mut counter = 0;
    let rhs = build_template(&mut graph, &rule.rhs[0].1, &env, &consts, &mut counter)??;
    let (lt, rt) = (&graph.value(lhs).ty, &graph.value(rhs).ty);
    if lt.shape != rt.shape || lt.dtype != rt.dtype {
        return None;
    }
    Some(Built { graph, lhs, rhs })
}

/// Adds a right-side template; the inner option is an absent input.
fn build_template(
    graph: &mut Graph,
    t: &Template,
    env: &HashMap<Var, ValueId>,
    consts: &HashMap<Var, &Tensor>,
    counter: &mut usize,
) -> Option<Option<ValueId>> {
    match t {
        Template::Var(v) => Some(Some(*env.get(v)?)),
        Template::Absent => Some(None),
        Template::Get(..) => None,
        Template::Op {
            kind,
            attrs,
            attr_vars,
            args,
        } => {
            let mut all = attrs.clone();
            for (key, vs) in attr_vars {
                let factors = vs
                    .iter()
                    .map(|v| {
                        let t = consts.get(v)?;
                        let value =
                            (t.len() == 1).then(|| t.to_f64_array().iter().next().copied())??;
                        Some((value, t.dtype().is_float()))
                    })
                    .collect::<Option<Vec<_>>>()?;
                all.set(key, crate::rules::apply::product_attr(&factors));
            }
            let mut inputs = vec![];
            for a in args {
                inputs.push(build_template(graph, a, env, consts, counter)?);
            }
            *counter += 1;
            let name = format!("r{counter}");
            let op = Op::new(*kind, all);
            Some(Some(
                graph
                    .add_op(&name, op, inputs, std::slice::from_ref(&name))
                    .ok()?[0],
            ))
        }
    }
}

/// Whether the left pattern matches the built left side with every condition holding.
fn pattern_applies(rule: &Rule, built: &Built) -> bool {
    let mut g = built.graph.clone();
    g.set_outputs(vec![("lhs".into(), built.lhs)]);
    let loaded = graph_to_egraph(&g);
    let root: Id = loaded.outputs[0].1;
    let Some(matches) = rule.lhs[0].1.search_eclass(&loaded.egraph, root) else {
        return false;
    };
    matches
        .substs
        .iter()
        .any(|s| rule.conditions.iter().all(|c| c.holds(&loaded.egraph, s)))
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-4 + 1e-4 * b.abs()
}

fn show(t: &Tensor) -> String {
    let vals: Vec<String> = t
        .to_f64_array()
        .iter()
        .take(12)
        .map(|v| format!("{v:.5}"))
        .collect();
    let more = if t.len() > 12 { ", ..." } else { "" };
    format!("{:?} [{}{more}]", t.shape(), vals.join(", "))
}

/// Checks one rule on `trials` random assignments (see the module docs).
///
/// `Err` only for interpreter failures on a well-typed instantiation.
pub fn check_rule(rule: &Rule, seed: u64, trials: usize) -> Result<CheckOutcome, String> {
    if let Some(reason) = skip_reason(rule) {
        return Ok(CheckOutcome::Skipped { reason });
    }
    let vars = pattern_vars(rule);
    let mut rng = XorShift::new(seed ^ rule.name.len() as u64);
    let mut found_any = false;
    for trial in 0..trials.max(1) {
        // Small shapes first, so counterexamples are small; s != d where possible.
        let base = if trial == 0 {
            [1, 1, 3, 2]
        } else {
            [
                rng.range(1, 2),
                rng.range(1, 3),
                rng.range(1, 5),
                2 * rng.range(1, 3),
            ]
        };
        let options: Vec<Vec<Binding>> = vars
            .iter()
            .map(|v| choices(rule, *v, base, &mut rng))
            .collect();
        if options.iter().any(Vec::is_empty) {
            return Ok(CheckOutcome::Skipped {
                reason: "no shape template satisfies the rank conditions".into(),
            });
        }
        let mut idx = vec![0usize; vars.len()];
        let mut built = None;
        for _ in 0..20_000 {
            let assignment: Vec<(Var, Binding)> = vars
                .iter()
                .zip(&idx)
                .zip(&options)
                .map(|((v, &i), o)| (*v, o[i].clone()))
                .collect();
            if let Some(b) = build(rule, &assignment) {
                if pattern_applies(rule, &b) {
                    built = Some((b, assignment));
                    break;
                }
            }
            // Odometer step.
            let mut k = 0;
            loop {
                if k == idx.len() {
                    break;
                }
                idx[k] += 1;
                if idx[k] < options[k].len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
            if k == idx.len() {
                break;
            }
        }
        let Some((mut b, assignment)) = built else {
            continue;
        };
        found_any = true;
        let mut feeds = HashMap::new();
        for (v, binding) in &assignment {
            if let Binding::Input(shape) = binding {
                feeds.insert(var_name(*v), random_tensor(shape, &mut rng, -2.0, 2.0));
            }
        }
        b.graph
            .set_outputs(vec![("lhs".into(), b.lhs), ("rhs".into(), b.rhs)]);
        let out = interp::run(&b.graph, &feeds).map_err(|e| format!("{}: {e:?}", rule.name))?;
        let (l, r) = (&out[0].1, &out[1].1);
        let ok = l.shape() == r.shape()
            && l.to_f64_array()
                .iter()
                .zip(r.to_f64_array().iter())
                .all(|(a, b)| close(*a, *b));
        if !ok {
            let mut text = String::new();
            for (v, binding) in &assignment {
                let value = match binding {
                    Binding::Input(_) => feeds[&var_name(*v)].clone(),
                    Binding::Const(t) => t.clone(),
                };
                let kind = if matches!(binding, Binding::Const(_)) {
                    "const"
                } else {
                    "input"
                };
                text.push_str(&format!("{v} ({kind}) = {}\n", show(&value)));
            }
            text.push_str(&format!("lhs {} = {}\n", rule.lhs_text, show(l)));
            text.push_str(&format!("rhs {} = {}", rule.rhs_text, show(r)));
            return Ok(CheckOutcome::Failed {
                counterexample: text,
            });
        }
    }
    if !found_any {
        return Ok(CheckOutcome::Skipped {
            reason: "no shape assignment makes both sides type-check with the conditions holding"
                .into(),
        });
    }
    Ok(CheckOutcome::Passed { trials })
}

/// Checks every rule; interpreter errors become `Skipped` with the error as the reason.
pub fn check_rules(rules: &[Rule], seed: u64, trials: usize) -> Vec<(String, CheckOutcome)> {
    rules
        .iter()
        .map(|r| {
            let outcome = check_rule(r, seed, trials).unwrap_or_else(|e| CheckOutcome::Skipped {
                reason: format!("interpreter error: {e}"),
            });
            (r.name.clone(), outcome)
        })
        .collect()
}

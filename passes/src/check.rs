//! Rule checking by random testing: an exact single-pattern rule's left side is instantiated
//! as a concrete [`kiln_ir::Graph`], its right side is built in the same graph from the same
//! variable values, and both are evaluated on the reference interpreter with seeded random
//! inputs and compared (tolerance 1e-4, relative plus absolute).
//!
//! Each variable becomes a graph input, or a constant when a condition says `const ?v`
//! (`const ?v = N` gives the scalar `N`; number literals are such variables). An input is f32
//! unless a `dtype ?v = T` condition names its type or it is read as a bool (a `Where`
//! condition, an operand of `Not`, `And`, `Or`, `Xor`), when it holds random booleans. An
//! attribute a left-side op leaves free (`key=*`, or one without a default that the pattern does
//! not name) is tried at its default and at values of its type (every dtype for `to`), and an
//! attribute bound to a variable (`epsilon=?eps`) passes its value to the right side. Shapes come from
//! a small set of templates over a random base shape `[b, h, s, d]` (`[b,h,s,d]`, `[b,h,d,s]`,
//! `[b,h,s,s]`, `[d]`, `[s]`, `[s,d]`, `[d,s]`, `[]`): the first assignment for which both sides
//! type-check, the left pattern matches the loaded e-graph and every condition holds (checked
//! with the real [`Condition::holds`]) is used; after the first trial the candidates are tried
//! from a random starting point, so trials cover different shapes and attribute values (trial 1
//! uses equal dims, where most attribute values type-check). Rules
//! whose variables feed shape inputs (`Reshape`, `Expand`, `Slice`, ...), multi-pattern rules,
//! rules with `Get` nodes, approximate rules, and rules no candidate instantiates are reported
//! as [`CheckOutcome::Unchecked`] with the reason: they are not known to be right.

use crate::convert::graph_to_egraph;
use crate::lang::Node;
use crate::rules::apply::Template;
use crate::rules::condition::Condition;
use crate::rules::schema::{attributes, AttrType};
use crate::rules::{Exactness, Rule};
use egg::{ENodeOrVar, Id, Searcher, Var};
use kiln_ir::{interp, Attr, DType, Dim, Graph, Op, OpKind, Tensor, ValueId};
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
    /// The rule could not be checked (so it is not known to be right).
    Unchecked {
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
    Input(Vec<usize>, DType),
    Const(Tensor),
}

/// One candidate of an assignment: a variable's binding, or the value of a free attribute
/// (`None`: the op's default, or absent).
#[derive(Clone, Debug)]
enum Choice {
    Var(Var, Binding),
    Attr(usize, String, Option<Attr>),
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

/// The dtype of input variable `v`: from a `dtype ?v = T` condition, bool where an op reads it
/// as a condition or a logical operand, else f32.
fn var_dtype(rule: &Rule, v: Var) -> DType {
    if let Some(t) = rule.conditions.iter().find_map(|c| match c {
        Condition::DType(x, t) if *x == v => Some(*t),
        _ => None,
    }) {
        return t;
    }
    let ast = rule.lhs[0].1.ast.as_ref();
    let read_as_bool = ast.iter().any(|node| match node {
        ENodeOrVar::ENode(Node::Op(op, kids)) => kids.iter().enumerate().any(|(slot, k)| {
            matches!(ast[usize::from(*k)], ENodeOrVar::Var(x) if x == v)
                && (op.op.kind == OpKind::Where && slot == 0
                    || matches!(
                        op.op.kind,
                        OpKind::Not | OpKind::And | OpKind::Or | OpKind::Xor
                    ))
        }),
        _ => false,
    });
    if read_as_bool {
        DType::Bool
    } else {
        DType::F32
    }
}

/// Values tried for an attribute of type `ty` that a pattern leaves free (after the default).
fn attr_candidates(ty: AttrType) -> Vec<Attr> {
    match ty {
        AttrType::Int => vec![Attr::Int(0), Attr::Int(1), Attr::Int(-1)],
        AttrType::Float => vec![Attr::Float(0.5), Attr::Float(2.0)],
        AttrType::DType => DType::ALL
            .iter()
            .map(|d| Attr::Str(d.name().into()))
            .collect(),
        AttrType::Word(words) => words.iter().map(|w| Attr::Str(w.to_string())).collect(),
        AttrType::Ints => [
            &[-1][..],
            &[0],
            &[1, 0],
            &[0, 2, 1, 3],
            &[0, 1, 3, 2],
            &[0, 2, 3, 1],
            &[0, 3, 1, 2],
        ]
        .iter()
        .map(|v| Attr::Ints(v.to_vec()))
        .collect(),
        AttrType::Str | AttrType::Dims | AttrType::Tensor => vec![],
    }
}

/// The free attributes of the left side's ops: (node index, attribute, candidates).
fn free_attrs(rule: &Rule) -> Vec<(usize, String, Vec<Option<Attr>>)> {
    let mut out = vec![];
    for (i, node) in rule.lhs[0].1.ast.as_ref().iter().enumerate() {
        if let ENodeOrVar::ENode(Node::Op(op, _)) = node {
            for (key, ty) in attributes(op.op.kind) {
                if op.op.attrs.get(key).is_none() {
                    let values = std::iter::once(None)
                        .chain(attr_candidates(*ty).into_iter().map(Some))
                        .collect();
                    out.push((i, key.to_string(), values));
                }
            }
        }
    }
    out
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
    let dtype = var_dtype(rule, v);
    if is_const {
        return shapes
            .iter()
            .map(|sh| Binding::Const(random_tensor(sh, dtype, rng, 0.05, 1.0)))
            .collect();
    }
    shapes
        .into_iter()
        .map(|sh| Binding::Input(sh, dtype))
        .collect()
}

/// Random values in `[lo, hi)` as `dtype`: integers rounded down, booleans half true.
fn random_tensor(shape: &[usize], dtype: DType, rng: &mut XorShift, lo: f32, hi: f32) -> Tensor {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| match dtype {
            DType::Bool => (rng.next_u64() & 1) as f32,
            d if d.is_int() => rng.uniform(lo, hi).floor(),
            _ => rng.uniform(lo, hi),
        })
        .collect();
    Tensor::from_vec(shape, data)
        .expect("sizes agree")
        .cast(dtype)
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
fn build(rule: &Rule, assignment: &[Choice]) -> Option<Built> {
    let mut graph = Graph::new();
    let mut env: HashMap<Var, ValueId> = HashMap::new();
    let mut consts: HashMap<Var, &Tensor> = HashMap::new();
    let mut free: HashMap<(usize, &str), &Attr> = HashMap::new();
    for choice in assignment {
        let (v, id) = match choice {
            Choice::Var(v, Binding::Input(shape, dtype)) => (
                v,
                graph
                    .add_input(
                        &var_name(*v),
                        *dtype,
                        shape.iter().map(|&d| Dim::known(d as i64)).collect(),
                    )
                    .ok()?,
            ),
            Choice::Var(v, Binding::Const(t)) => {
                consts.insert(*v, t);
                (v, graph.add_constant(&var_name(*v), t.to_data()).ok()?)
            }
            Choice::Attr(node, key, value) => {
                if let Some(value) = value {
                    free.insert((*node, key.as_str()), value);
                }
                continue;
            }
        };
        env.insert(*v, id);
    }
    let ast = rule.lhs[0].1.ast.as_ref();
    let mut ids: Vec<Option<ValueId>> = Vec::with_capacity(ast.len());
    let mut root_attrs = kiln_ir::Attrs::default();
    for (i, node) in ast.iter().enumerate() {
        let id = match node {
            ENodeOrVar::Var(v) => Some(env[v]),
            ENodeOrVar::ENode(Node::Absent) => None,
            ENodeOrVar::ENode(Node::Op(op, kids)) => {
                let inputs = kids.iter().map(|k| ids[usize::from(*k)]).collect();
                let mut op = Op::new(op.op.kind, op.op.attrs.clone());
                for ((node, key), value) in &free {
                    if *node == i {
                        op.attrs.set(key, (*value).clone());
                    }
                }
                if i + 1 == ast.len() {
                    root_attrs = op.attrs.clone();
                }
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
    // Attributes of the outermost op bound to variables (`epsilon=?eps`).
    let bound: HashMap<Var, Attr> = rule.attr_bindings[0]
        .iter()
        .map(|b| Some((b.var, root_attrs.get(&b.key)?.clone())))
        .collect::<Option<_>>()?;
    let sides = Sides {
        env: &env,
        consts: &consts,
        bound: &bound,
    };
    let mut counter = 0;
    let rhs = build_template(&mut graph, &rule.rhs[0].1, &sides, &mut counter)??;
    let (lt, rt) = (&graph.value(lhs).ty, &graph.value(rhs).ty);
    if lt.shape != rt.shape || lt.dtype != rt.dtype {
        return None;
    }
    Some(Built { graph, lhs, rhs })
}

/// What a right side reads: the values of the variables, the constants among them, and the
/// attributes bound to variables.
struct Sides<'a> {
    env: &'a HashMap<Var, ValueId>,
    consts: &'a HashMap<Var, &'a Tensor>,
    bound: &'a HashMap<Var, Attr>,
}

/// Adds a right-side template; the inner option is an absent input.
fn build_template(
    graph: &mut Graph,
    t: &Template,
    sides: &Sides,
    counter: &mut usize,
) -> Option<Option<ValueId>> {
    match t {
        Template::Var(v) => Some(Some(*sides.env.get(v)?)),
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
                if let [v] = vs.as_slice() {
                    if let Some(a) = sides.bound.get(v) {
                        all.set(key, a.clone());
                        continue;
                    }
                }
                let factors = vs
                    .iter()
                    .map(|v| {
                        let t = sides.consts.get(v)?;
                        let value =
                            (t.len() == 1).then(|| t.to_f64_array().iter().next().copied())??;
                        Some((value, t.dtype().is_float()))
                    })
                    .collect::<Option<Vec<_>>>()?;
                all.set(key, crate::rules::apply::product_attr(&factors));
            }
            let mut inputs = vec![];
            for a in args {
                inputs.push(build_template(graph, a, sides, counter)?);
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

/// The most candidate assignments tried per trial.
const MAX_ASSIGNMENTS: usize = 20_000;

/// Checks one rule on `trials` random assignments (see the module docs).
///
/// `Err` only for interpreter failures on a well-typed instantiation.
pub fn check_rule(rule: &Rule, seed: u64, trials: usize) -> Result<CheckOutcome, String> {
    if let Some(reason) = skip_reason(rule) {
        return Ok(CheckOutcome::Unchecked { reason });
    }
    let vars = pattern_vars(rule);
    let free = free_attrs(rule);
    let mut rng = XorShift::new(seed ^ rule.name.len() as u64);
    let mut found_any = false;
    for trial in 0..trials.max(1) {
        // Small shapes first, so counterexamples are small; s != d where possible, except in
        // trial 1, whose equal dims let free attributes (`perm=*`) keep shapes and type-check.
        let base = if trial == 0 {
            [1, 1, 3, 2]
        } else if trial == 1 {
            [1, 2, 2, 2]
        } else {
            [
                rng.range(1, 2),
                rng.range(1, 3),
                rng.range(1, 5),
                2 * rng.range(1, 3),
            ]
        };
        let mut options: Vec<Vec<Choice>> = vars
            .iter()
            .map(|v| {
                choices(rule, *v, base, &mut rng)
                    .into_iter()
                    .map(|b| Choice::Var(*v, b))
                    .collect()
            })
            .chain(free.iter().map(|(node, key, values)| {
                values
                    .iter()
                    .map(|a| Choice::Attr(*node, key.clone(), a.clone()))
                    .collect()
            }))
            .collect();
        if options.iter().any(Vec::is_empty) {
            return Ok(CheckOutcome::Unchecked {
                reason: "no shape template satisfies the rank conditions".into(),
            });
        }
        if trial > 0 {
            for o in &mut options {
                let k = rng.range(0, o.len() - 1);
                o.rotate_left(k);
            }
        }
        let mut idx = vec![0usize; options.len()];
        let mut built = None;
        for _ in 0..MAX_ASSIGNMENTS {
            let assignment: Vec<Choice> = idx
                .iter()
                .zip(&options)
                .map(|(&i, o)| o[i].clone())
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
        for choice in &assignment {
            if let Choice::Var(v, Binding::Input(shape, dtype)) = choice {
                feeds.insert(
                    var_name(*v),
                    random_tensor(shape, *dtype, &mut rng, -2.0, 2.0),
                );
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
            let ast = rule.lhs[0].1.ast.as_ref();
            for choice in &assignment {
                match choice {
                    Choice::Var(v, Binding::Input(..)) => {
                        text.push_str(&format!("{v} (input) = {}\n", show(&feeds[&var_name(*v)])))
                    }
                    Choice::Var(v, Binding::Const(t)) => {
                        text.push_str(&format!("{v} (const) = {}\n", show(t)))
                    }
                    Choice::Attr(node, key, Some(value)) => text.push_str(&format!(
                        "{} attribute {key} = {}\n",
                        ast[*node],
                        crate::lang::attr_token(value)
                    )),
                    Choice::Attr(_, _, None) => {}
                }
            }
            text.push_str(&format!("lhs {} = {}\n", rule.lhs_text, show(l)));
            text.push_str(&format!("rhs {} = {}", rule.rhs_text, show(r)));
            return Ok(CheckOutcome::Failed {
                counterexample: text,
            });
        }
    }
    if !found_any {
        return Ok(CheckOutcome::Unchecked {
            reason: "no shape assignment makes both sides type-check with the conditions holding"
                .into(),
        });
    }
    Ok(CheckOutcome::Passed { trials })
}

/// Checks every rule; interpreter errors become `Unchecked` with the error as the reason.
pub fn check_rules(rules: &[Rule], seed: u64, trials: usize) -> Vec<(String, CheckOutcome)> {
    rules
        .iter()
        .map(|r| {
            let outcome = check_rule(r, seed, trials).unwrap_or_else(|e| CheckOutcome::Unchecked {
                reason: format!("interpreter error: {e}"),
            });
            (r.name.clone(), outcome)
        })
        .collect()
}

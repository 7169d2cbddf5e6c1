//! DAG-aware extraction: one e-node per needed e-class, chosen to minimise the roofline cost
//! ([`crate::cost`]) of the graph it rebuilds, counting every shared value once.
//!
//! egg's tree extractor costs a class as its node plus the sum of its children's costs, so a
//! subterm used twice is paid twice and a fused op that shares its inputs looks worse than it
//! is. [`extract`] implements the greedy DAG algorithm of extraction-gym's `greedy-dag`: the
//! cost of a candidate node is its own cost plus the union, *by class*, of its children's cost
//! sets (the classes their choices reach), each class counted once. Classes are relaxed with a
//! worklist keyed by parents until a fixpoint; each picks the candidate with the smallest
//! union total, ties going to the smallest [`Node`] (its `Ord`). Cost sets are bitsets over
//! the classes, numbered in the order they first become extractable (roughly topological), so
//! unions are word-wise ORs and a set is paid only for the bits a candidate adds to its
//! largest child's set.
//!
//! Rules the choice obeys:
//! - an e-node in an ill-typed class (empty analysis `types`), an op whose shape inference
//!   fails on its children's types, or an e-node with an ill-typed child is never chosen
//!   (absent optional inputs are fine);
//! - a node is a candidate only once all its children have a choice, and never if its own
//!   class is in its children's cost sets, so the result is acyclic; it is checked from the
//!   roots, and a cyclic result falls back to tree costs (acyclic by construction) or errs;
//! - when the result reads output `i >= 1` of a class `x` through `Get(i, x)`, `x` must choose
//!   an op with at least `i + 1` outputs whose output `i` has the type the class records, so a
//!   Split or LayerNormalization whose extra outputs are used is never replaced by a
//!   single-output decomposition. These constraints are added lazily: extract, find the `Get`s
//!   the result reads whose class chose an op without that output, constrain those classes, and
//!   extract again until none remain.
//!
//! The same e-graph always gives the same extraction: classes are visited in an order derived
//! from sorted ids, and every tie is broken by `Node` order.

use crate::analysis::KilnEGraph;
use crate::cost::{op_cost, Target};
use crate::lang::Node;
use egg::{Id, Language};
use kiln_ir::infer::infer_outputs;
use kiln_ir::{Op, OpKind, ValueType};
use std::collections::{HashMap, HashSet, VecDeque};

/// The result of [`extract`].
#[derive(Clone, Debug)]
pub struct Extraction {
    /// The chosen e-node of every class the roots need, keyed by canonical class id; its
    /// children are canonical too. Absent optional inputs are included (as [`Node::Absent`]).
    pub choice: HashMap<Id, Node>,
    /// The cost of the extracted graph in seconds ([`total_cost`]: each class once).
    pub cost: f64,
    /// The cost of the greedy solve's graph, before the local search improved it.
    pub greedy_cost: f64,
    /// Moves the local search kept (each lowered the cost).
    pub moves: usize,
}

/// The own cost of one e-node, in seconds: [`op_cost`] for an op (inputs typed by its children's
/// analysis types, outputs by shape inference), 0 for inputs, constants, absent inputs and
/// `Get` projections. `outputs_used` is how many of an op's outputs are written (at least 1;
/// a Split always writes all of them). `None` if the op's shape inference fails.
pub fn node_cost(
    egraph: &KilnEGraph,
    node: &Node,
    outputs_used: usize,
    target: &Target,
    bindings: &HashMap<String, i64>,
) -> Option<f64> {
    match node {
        Node::Op(op, args) => {
            let inputs: Vec<Option<&ValueType>> =
                args.iter().map(|a| egraph[*a].data.ty()).collect();
            let outputs = infer_outputs(&op.op, &inputs).ok()?;
            Some(own_op_cost(
                target,
                &op.op,
                &inputs,
                &outputs,
                outputs_used,
                bindings,
            ))
        }
        _ => Some(0.0),
    }
}

/// [`op_cost`] writing the first `outputs_used` outputs (all of them for Split); never NaN.
fn own_op_cost(
    target: &Target,
    op: &Op,
    inputs: &[Option<&ValueType>],
    outputs: &[ValueType],
    outputs_used: usize,
    bindings: &HashMap<String, i64>,
) -> f64 {
    let n = if op.kind == OpKind::Split {
        outputs.len()
    } else {
        outputs_used.clamp(1, outputs.len().max(1))
    };
    let cost = op_cost(
        target,
        op,
        inputs,
        &outputs[..n.min(outputs.len())],
        bindings,
    );
    if cost.is_nan() {
        f64::INFINITY
    } else {
        cost
    }
}

/// The cost in seconds of the graph `choice` describes, from `roots`: the sum of
/// [`node_cost`] over every class reachable through the chosen nodes, each counted once (an
/// op writes as many outputs as the chosen `Get`s read). `choice` is keyed by canonical class
/// id. Infinite if a reachable class has no choice. Ops whose inference fails are costed with
/// their class's recorded types, so any graph loaded by [`crate::convert`] can be costed.
pub fn total_cost(
    egraph: &KilnEGraph,
    choice: &HashMap<Id, Node>,
    roots: &[Id],
    target: &Target,
    bindings: &HashMap<String, i64>,
) -> f64 {
    let mut seen: HashSet<Id> = HashSet::new();
    let mut reached: Vec<(Id, &Node)> = vec![];
    let mut stack: Vec<Id> = roots.iter().map(|r| egraph.find(*r)).collect();
    while let Some(c) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        let Some(node) = choice.get(&c) else {
            return f64::INFINITY;
        };
        reached.push((c, node));
        stack.extend(node.children().iter().map(|x| egraph.find(*x)));
    }
    let mut used: HashMap<Id, usize> = HashMap::new();
    for (_, node) in &reached {
        if let Node::Get(i, [x]) = node {
            let e = used.entry(egraph.find(*x)).or_insert(1);
            *e = (*e).max(*i as usize + 1);
        }
    }
    reached
        .iter()
        .map(|(c, node)| match node {
            Node::Op(op, args) => {
                let inputs: Vec<Option<&ValueType>> =
                    args.iter().map(|a| egraph[*a].data.ty()).collect();
                let outputs = infer_outputs(&op.op, &inputs)
                    .unwrap_or_else(|_| egraph[*c].data.types.clone());
                own_op_cost(
                    target,
                    &op.op,
                    &inputs,
                    &outputs,
                    used.get(c).copied().unwrap_or(1),
                    bindings,
                )
            }
            _ => 0.0,
        })
        .sum()
}

/// The smallest e-node of every class, keyed by canonical id (children canonical). On an
/// e-graph fresh from [`crate::convert::graph_to_egraph`] (one node per class) this is the
/// loaded graph itself, so [`total_cost`] of it is the cost before rewriting.
pub fn first_node_choice(egraph: &KilnEGraph) -> HashMap<Id, Node> {
    egraph
        .classes()
        .filter_map(|c| {
            let node = c.nodes.iter().min()?;
            Some((c.id, node.clone().map_children(|x| egraph.find(x))))
        })
        .collect()
}

/// Extracts the cheapest acyclic, well-typed graph computing `roots` (see the module docs).
/// Errors if some root (or a class it needs) has no well-typed, acyclic choice.
pub fn extract(
    egraph: &KilnEGraph,
    roots: &[Id],
    target: &Target,
    bindings: &HashMap<String, i64>,
) -> Result<Extraction, String> {
    let mut problem = Problem::build(egraph, target, bindings);
    let roots_idx: Vec<u32> = roots
        .iter()
        .map(|r| {
            let id = egraph.find(*r);
            problem
                .index
                .get(&id)
                .copied()
                .ok_or_else(|| format!("root {r} is not an e-class"))
        })
        .collect::<Result<_, _>>()?;
    let mut mode = Mode::Dag;
    // Each round either ends or adds at least one constraint, of which there are finitely many.
    for _round in 0..10_000 {
        let state = problem.solve(mode);
        let reached = match problem.walk(&state.choice, &roots_idx) {
            Ok(reached) => reached,
            Err(_) if mode == Mode::Dag => {
                // Stale cost sets can hide a cycle; tree costs strictly grow along chosen edges.
                mode = Mode::Tree;
                continue;
            }
            Err(WalkError::Missing(c)) => {
                return Err(format!(
                    "no well-typed, acyclic e-node can be extracted for e-class {}",
                    problem.ids[c as usize]
                ))
            }
            Err(WalkError::Cycle(c)) => {
                return Err(format!(
                    "extraction is cyclic through e-class {}",
                    problem.ids[c as usize]
                ))
            }
        };
        // The outputs each class must provide to the Gets the result reads.
        let mut reads: Vec<(u32, u32)> = vec![];
        let mut violated = false;
        for &c in &reached {
            let cand = &problem.cands[c as usize][state.choice[c as usize] as usize];
            if let Node::Get(i, _) = cand.node {
                let x = cand.children[0];
                reads.push((x, *i));
                violated |= !problem.satisfies(x, state.choice[x as usize], *i);
            }
        }
        if violated {
            for (x, i) in reads {
                problem.require(x, i);
            }
            continue;
        }
        let mut chosen = state.choice;
        let greedy_cost = problem
            .evaluate(&chosen, &roots_idx)
            .map_or(f64::INFINITY, |(cost, _)| cost);
        let (reached, moves) = problem.refine(&mut chosen, &roots_idx, reached);
        let choice: HashMap<Id, Node> = reached
            .iter()
            .map(|&c| {
                let node = problem.cands[c as usize][chosen[c as usize] as usize].node;
                (
                    problem.ids[c as usize],
                    node.clone().map_children(|x| egraph.find(x)),
                )
            })
            .collect();
        let cost = total_cost(egraph, &choice, roots, target, bindings);
        return Ok(Extraction {
            choice,
            cost,
            greedy_cost,
            moves,
        });
    }
    Err("extraction did not settle the multi-output constraints".into())
}

/// How a candidate's cost combines its children's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Own cost plus the cost of the union of the children's cost sets (shared classes once).
    Dag,
    /// Own cost plus the sum of the children's costs (egg's tree cost; the fallback).
    Tree,
}

/// No choice yet.
const NONE: u32 = u32::MAX;

/// One choosable e-node.
struct Cand<'a> {
    node: &'a Node,
    /// Children as class indices, in input order.
    children: Vec<u32>,
    /// Distinct children, sorted.
    distinct: Vec<u32>,
    /// Inferred output types (ops only).
    outputs: Vec<ValueType>,
    /// Own cost in seconds, for the outputs the class currently must provide.
    own: f64,
    /// Whether it provides the outputs the class's `Get` readers need.
    allowed: bool,
}

/// The e-graph as extraction sees it: classes by dense index, their candidates, parents.
struct Problem<'a> {
    egraph: &'a KilnEGraph,
    target: &'a Target,
    bindings: &'a HashMap<String, i64>,
    /// Class index to canonical id (ascending ids).
    ids: Vec<Id>,
    index: HashMap<Id, u32>,
    /// Candidates per class, sorted by `Node` order.
    cands: Vec<Vec<Cand<'a>>>,
    /// Classes with a candidate reading each class (sorted, distinct).
    parents: Vec<Vec<u32>>,
    /// Bit position of each class in cost sets: the order classes become extractable.
    rank: Vec<u32>,
    /// Class index at each bit position.
    by_rank: Vec<u32>,
    /// Output indices (>= 1) that `Get`s read from each class (sorted, distinct).
    required: Vec<Vec<u32>>,
}

/// Per-solve results.
struct State {
    /// Chosen candidate per class, or [`NONE`].
    choice: Vec<u32>,
    /// Cost of each class's choice (own plus its cost set).
    total: Vec<f64>,
    /// Own cost of the choice, indexed by rank.
    own_by_rank: Vec<f64>,
    /// Cost set (bitset over ranks, no trailing zero words) of each class's choice.
    sets: Vec<Vec<u64>>,
}

enum WalkError {
    Missing(u32),
    Cycle(u32),
}

impl<'a> Problem<'a> {
    fn build(
        egraph: &'a KilnEGraph,
        target: &'a Target,
        bindings: &'a HashMap<String, i64>,
    ) -> Problem<'a> {
        let mut ids: Vec<Id> = egraph.classes().map(|c| c.id).collect();
        ids.sort_unstable();
        let index: HashMap<Id, u32> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect();
        let absent: Vec<bool> = ids
            .iter()
            .map(|id| egraph[*id].nodes.iter().any(|n| matches!(n, Node::Absent)))
            .collect();
        let typed = |i: u32| absent[i as usize] || !egraph[ids[i as usize]].data.types.is_empty();
        let mut cands: Vec<Vec<Cand<'a>>> = Vec::with_capacity(ids.len());
        for (ci, id) in ids.iter().enumerate() {
            let class = &egraph[*id];
            let mut nodes: Vec<&'a Node> = class.nodes.iter().collect();
            nodes.sort();
            nodes.dedup();
            let mut list = vec![];
            for node in nodes {
                let children: Vec<u32> = node
                    .children()
                    .iter()
                    .map(|c| index[&egraph.find(*c)])
                    .collect();
                let ok = match node {
                    Node::Absent => true,
                    _ if !typed(ci as u32) || absent[ci] => false,
                    Node::Get(i, _) => {
                        egraph[ids[children[0] as usize]].data.types.len() > *i as usize
                    }
                    _ => children.iter().all(|&c| typed(c)),
                };
                if !ok {
                    continue;
                }
                let outputs = match node {
                    Node::Op(op, args) => {
                        let inputs: Vec<Option<&ValueType>> =
                            args.iter().map(|a| egraph[*a].data.ty()).collect();
                        match infer_outputs(&op.op, &inputs) {
                            Ok(outs) if compatible(&outs[0], &class.data.types[0]) => outs,
                            _ => continue,
                        }
                    }
                    _ => vec![],
                };
                let mut distinct = children.clone();
                distinct.sort_unstable();
                distinct.dedup();
                list.push(Cand {
                    node,
                    children,
                    distinct,
                    outputs,
                    own: 0.0,
                    allowed: true,
                });
            }
            cands.push(list);
        }
        let n = ids.len();
        let mut parents: Vec<Vec<u32>> = vec![vec![]; n];
        for (c, list) in cands.iter().enumerate() {
            for cand in list {
                for &d in &cand.distinct {
                    parents[d as usize].push(c as u32);
                }
            }
        }
        for p in &mut parents {
            p.sort_unstable();
            p.dedup();
        }
        let mut problem = Problem {
            egraph,
            target,
            bindings,
            ids,
            index,
            cands,
            parents,
            rank: vec![],
            by_rank: vec![],
            required: vec![vec![]; n],
        };
        for c in 0..n as u32 {
            problem.update_costs(c);
        }
        problem.rank_classes();
        problem
    }

    /// Numbers the classes in the order a bottom-up sweep can first extract them (classes it
    /// never reaches last), so cost sets are dense in their low bits.
    fn rank_classes(&mut self) {
        let n = self.ids.len();
        let mut missing: Vec<Vec<u32>> = self
            .cands
            .iter()
            .map(|l| l.iter().map(|c| c.distinct.len() as u32).collect())
            .collect();
        let mut users: Vec<Vec<(u32, u32)>> = vec![vec![]; n];
        for (c, list) in self.cands.iter().enumerate() {
            for (k, cand) in list.iter().enumerate() {
                for &d in &cand.distinct {
                    users[d as usize].push((c as u32, k as u32));
                }
            }
        }
        let mut ready: Vec<bool> = self
            .cands
            .iter()
            .map(|l| l.iter().any(|k| k.distinct.is_empty()))
            .collect();
        let mut queue: VecDeque<u32> = (0..n as u32).filter(|&c| ready[c as usize]).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(c) = queue.pop_front() {
            order.push(c);
            for &(p, k) in &users[c as usize] {
                let m = &mut missing[p as usize][k as usize];
                *m -= 1;
                if *m == 0 && !ready[p as usize] {
                    ready[p as usize] = true;
                    queue.push_back(p);
                }
            }
        }
        order.extend((0..n as u32).filter(|&c| !ready[c as usize]));
        self.rank = vec![0; n];
        for (r, &c) in order.iter().enumerate() {
            self.rank[c as usize] = r as u32;
        }
        self.by_rank = order;
    }

    /// Recomputes the own costs and `allowed` flags of class `c`'s candidates.
    fn update_costs(&mut self, c: u32) {
        let egraph = self.egraph;
        let n_out = self.required[c as usize]
            .last()
            .map_or(1, |&i| i as usize + 1);
        let mut allowed = vec![];
        for k in 0..self.cands[c as usize].len() {
            allowed.push(
                self.required[c as usize]
                    .iter()
                    .all(|&i| self.satisfies(c, k as u32, i)),
            );
        }
        for (cand, ok) in self.cands[c as usize].iter_mut().zip(allowed) {
            cand.allowed = ok;
            cand.own = match cand.node {
                Node::Op(op, args) => {
                    let inputs: Vec<Option<&ValueType>> =
                        args.iter().map(|a| egraph[*a].data.ty()).collect();
                    own_op_cost(
                        self.target,
                        &op.op,
                        &inputs,
                        &cand.outputs,
                        n_out,
                        self.bindings,
                    )
                }
                _ => 0.0,
            };
        }
    }

    /// True if candidate `k` of class `x` provides output `i` with the type `Get(i, x)` has.
    fn satisfies(&self, x: u32, k: u32, i: u32) -> bool {
        if i == 0 {
            return true;
        }
        let Some(cand) = self.cands[x as usize].get(k as usize) else {
            return false;
        };
        let want = self.egraph[self.ids[x as usize]].data.types.get(i as usize);
        matches!(cand.node, Node::Op(..))
            && match (cand.outputs.get(i as usize), want) {
                (Some(have), Some(want)) => have.dtype == want.dtype && have.shape == want.shape,
                _ => false,
            }
    }

    /// Requires class `x` to provide output `i` to a `Get`.
    fn require(&mut self, x: u32, i: u32) {
        let req = &mut self.required[x as usize];
        if i == 0 || req.contains(&i) {
            return;
        }
        req.push(i);
        req.sort_unstable();
        self.update_costs(x);
    }

    /// Relaxes every class to a fixpoint (or a work budget) with a parent-keyed worklist.
    fn solve(&self, mode: Mode) -> State {
        let n = self.ids.len();
        let mut st = State {
            choice: vec![NONE; n],
            total: vec![f64::INFINITY; n],
            own_by_rank: vec![0.0; n],
            sets: vec![vec![]; n],
        };
        let mut queue: VecDeque<u32> = self.by_rank.iter().copied().collect();
        let mut queued = vec![true; n];
        // Acyclic e-graphs settle in about one visit per class; cycles can make the greedy
        // choice oscillate, so the work is bounded (the result is verified anyway).
        let mut budget = 64usize.saturating_mul(n).saturating_add(1024);
        let (mut buf, mut best_buf): (Vec<u64>, Vec<u64>) = (vec![], vec![]);
        while let Some(c) = queue.pop_front() {
            queued[c as usize] = false;
            if budget == 0 {
                break;
            }
            budget -= 1;
            let bit = self.rank[c as usize] as usize;
            let mut best: Option<(f64, u32)> = None;
            for (k, cand) in self.cands[c as usize].iter().enumerate() {
                if !cand.allowed || cand.distinct.iter().any(|&d| st.choice[d as usize] == NONE) {
                    continue;
                }
                // The union of the children's cost sets, starting from the largest one.
                let base = cand
                    .distinct
                    .iter()
                    .copied()
                    .max_by_key(|&d| st.sets[d as usize].len());
                buf.clear();
                if let Some(b) = base {
                    buf.extend_from_slice(&st.sets[b as usize]);
                }
                for &d in &cand.distinct {
                    if Some(d) != base {
                        or_into(&mut buf, &st.sets[d as usize]);
                    }
                }
                if test_bit(&buf, bit) {
                    continue; // a child reaches this class: choosing the node would be a cycle
                }
                let total = cand.own
                    + match (mode, base) {
                        (_, None) => 0.0,
                        (Mode::Dag, Some(b)) => {
                            st.total[b as usize]
                                + sum_new_bits(&buf, &st.sets[b as usize], &st.own_by_rank)
                        }
                        (Mode::Tree, Some(_)) => cand
                            .children
                            .iter()
                            .map(|&d| st.total[d as usize])
                            .sum::<f64>(),
                    };
                if best.is_none_or(|(t, _)| total < t) {
                    best = Some((total, k as u32));
                    std::mem::swap(&mut buf, &mut best_buf);
                }
            }
            let Some((total, k)) = best else { continue };
            set_bit(&mut best_buf, bit);
            if st.choice[c as usize] == k
                && st.total[c as usize] == total
                && st.sets[c as usize] == best_buf
            {
                continue;
            }
            st.choice[c as usize] = k;
            st.total[c as usize] = total;
            st.own_by_rank[bit] = self.cands[c as usize][k as usize].own;
            std::mem::swap(&mut st.sets[c as usize], &mut best_buf);
            for &p in &self.parents[c as usize] {
                if !queued[p as usize] {
                    queued[p as usize] = true;
                    queue.push_back(p);
                }
            }
        }
        st
    }

    /// The classes the roots reach through the choices, children before parents; errs on a
    /// class without a choice or a cycle.
    fn walk(&self, choice: &[u32], roots: &[u32]) -> Result<Vec<u32>, WalkError> {
        // 0 unvisited, 1 on the stack, 2 done.
        let mut color = vec![0u8; self.ids.len()];
        let mut order = vec![];
        for &root in roots {
            if color[root as usize] == 2 {
                continue;
            }
            let mut stack: Vec<(u32, usize)> = vec![(root, 0)];
            color[root as usize] = 1;
            while let Some(&(c, next)) = stack.last() {
                let k = choice[c as usize];
                if k == NONE {
                    return Err(WalkError::Missing(c));
                }
                let children = &self.cands[c as usize][k as usize].distinct;
                if let Some(&d) = children.get(next) {
                    if let Some(top) = stack.last_mut() {
                        top.1 += 1;
                    }
                    match color[d as usize] {
                        0 => {
                            color[d as usize] = 1;
                            stack.push((d, 0));
                        }
                        1 => return Err(WalkError::Cycle(d)),
                        _ => {}
                    }
                } else {
                    color[c as usize] = 2;
                    order.push(c);
                    stack.pop();
                }
            }
        }
        Ok(order)
    }
}

/// Passes of [`Problem::refine`] over the extracted classes at most.
const REFINE_PASSES: usize = 4;

/// Whether a cost is lower than another beyond rounding (a relative 1e-9), so the local
/// search never cycles between equal choices.
fn better(cost: f64, than: f64) -> bool {
    cost < than - 1e-9 * than.abs()
}

impl Problem<'_> {
    /// The cost of the graph `choice` describes from `roots`, each reached class once, and the
    /// classes reached (children first); None if it is cyclic, misses a choice, or reads an
    /// output through a `Get` that its class's choice does not provide.
    fn evaluate(&self, choice: &[u32], roots: &[u32]) -> Option<(f64, Vec<u32>)> {
        let reached = self.walk(choice, roots).ok()?;
        let mut cost = 0.0;
        for &c in &reached {
            let cand = &self.cands[c as usize][choice[c as usize] as usize];
            if let Node::Get(i, _) = cand.node {
                let x = cand.children[0];
                if !self.satisfies(x, choice[x as usize], *i) {
                    return None;
                }
            }
            cost += cand.own;
        }
        Some((cost, reached))
    }

    /// Improves an extraction by local search on the whole graph's cost, which the greedy
    /// solve cannot see: it costs a class by the classes *its* choice reaches, so a fused node
    /// that re-reads inputs another consumer needs anyway (`SkipRMSNorm(a, b)` beside the
    /// `a + b` the residual stream keeps) looks cheaper than the node that reuses the shared
    /// value (`RMSNorm(a + b)`), and a merged projection looks dearer than each projection
    /// alone until all its readers switch to it.
    ///
    /// A move sets one reached class to another of its candidates, then switches each reached
    /// class that has a candidate reading the moved class or a class the move newly reaches
    /// (`Get(1, Split(merged MatMul))` once the first projection's class chose the `Split`) to
    /// that candidate wherever this lowers the cost; a move is kept when the
    /// graph's cost drops. Passes over the reached classes (children first, candidates in
    /// `Node` order) repeat until one keeps no move, at most [`REFINE_PASSES`] times, so the
    /// result is deterministic and never costs more than the greedy one. Returns the classes
    /// the final choice reaches and the number of moves kept.
    fn refine(&self, choice: &mut [u32], roots: &[u32], reached: Vec<u32>) -> (Vec<u32>, usize) {
        let Some((mut best, mut reached)) = self.evaluate(choice, roots) else {
            return (reached, 0);
        };
        let mut moves = 0;
        let mut in_reached = self.membership(&reached);
        for _pass in 0..REFINE_PASSES {
            let mut kept = false;
            for c in reached.clone() {
                if !in_reached[c as usize] {
                    continue;
                }
                let current = choice[c as usize];
                for k in 0..self.cands[c as usize].len() as u32 {
                    if k == current || !self.choosable(choice, c, k) {
                        continue;
                    }
                    let mut trial = choice.to_vec();
                    trial[c as usize] = k;
                    let Some(moved) = self.evaluate(&trial, roots) else {
                        continue;
                    };
                    let (trial, (cost, now)) =
                        self.switch_readers(c, trial, moved, &in_reached, roots);
                    if better(cost, best) {
                        choice.copy_from_slice(&trial);
                        (best, reached) = (cost, now);
                        in_reached = self.membership(&reached);
                        kept = true;
                        moves += 1;
                        break;
                    }
                }
            }
            if !kept {
                break;
            }
        }
        (reached, moves)
    }

    /// The second half of a move of class `c` (see [`Problem::refine`]): switches each class
    /// `trial` reaches that has a candidate reading `c` or a class the move newly reaches (not
    /// in `before`) to that candidate wherever this lowers the cost. `evaluated` is `trial`'s
    /// cost and reached classes; returns the improved choice with its own.
    fn switch_readers(
        &self,
        c: u32,
        mut trial: Vec<u32>,
        evaluated: (f64, Vec<u32>),
        before: &[bool],
        roots: &[u32],
    ) -> (Vec<u32>, (f64, Vec<u32>)) {
        let (mut cost, mut now) = evaluated;
        let mut in_now = self.membership(&now);
        // The moved class (a Split now providing the merged outputs) and the classes the move
        // newly reaches.
        let new: Vec<u32> = std::iter::once(c)
            .chain(now.iter().copied().filter(|&n| !before[n as usize]))
            .collect();
        for n in new {
            for &p in &self.parents[n as usize] {
                if p == c || !in_now[p as usize] {
                    continue;
                }
                for kk in 0..self.cands[p as usize].len() as u32 {
                    let reads = self.cands[p as usize][kk as usize].distinct.contains(&n);
                    if !reads || trial[p as usize] == kk || !self.choosable(&trial, p, kk) {
                        continue;
                    }
                    let mut next = trial.clone();
                    next[p as usize] = kk;
                    if let Some((c2, r2)) = self.evaluate(&next, roots) {
                        if better(c2, cost) {
                            in_now = self.membership(&r2);
                            (trial, cost, now) = (next, c2, r2);
                        }
                    }
                }
            }
        }
        (trial, (cost, now))
    }

    /// Which classes `classes` holds, as a flag per class index.
    fn membership(&self, classes: &[u32]) -> Vec<bool> {
        let mut member = vec![false; self.ids.len()];
        for &c in classes {
            member[c as usize] = true;
        }
        member
    }

    /// Whether candidate `k` of class `c` may be chosen given `choice`: it provides the outputs
    /// the class's `Get` readers need and all its children have a choice.
    fn choosable(&self, choice: &[u32], c: u32, k: u32) -> bool {
        let cand = &self.cands[c as usize][k as usize];
        cand.allowed && cand.distinct.iter().all(|&d| choice[d as usize] != NONE)
    }
}

/// False if `have` (a node's inferred type) contradicts `want` (its class's type): another
/// dtype or rank, or a dim both know as different numbers. Symbolic dims are not compared,
/// since inference through a rewrite may know less than the class.
fn compatible(have: &ValueType, want: &ValueType) -> bool {
    have.dtype == want.dtype
        && have.shape.len() == want.shape.len()
        && have
            .shape
            .iter()
            .zip(&want.shape)
            .all(|(a, b)| match (a.as_known(), b.as_known()) {
                (Some(x), Some(y)) => x == y,
                _ => true,
            })
}

fn or_into(dst: &mut Vec<u64>, src: &[u64]) {
    if src.len() > dst.len() {
        dst.resize(src.len(), 0);
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d |= *s;
    }
}

fn test_bit(set: &[u64], bit: usize) -> bool {
    set.get(bit / 64)
        .is_some_and(|w| (w >> (bit % 64)) & 1 == 1)
}

fn set_bit(set: &mut Vec<u64>, bit: usize) {
    if set.len() <= bit / 64 {
        set.resize(bit / 64 + 1, 0);
    }
    set[bit / 64] |= 1 << (bit % 64);
}

/// The own costs of the classes in `union` but not in `base` (a subset of it).
fn sum_new_bits(union: &[u64], base: &[u64], own_by_rank: &[f64]) -> f64 {
    let mut sum = 0.0;
    for (w, &word) in union.iter().enumerate() {
        let mut word = word & !base.get(w).copied().unwrap_or(0);
        while word != 0 {
            let b = word.trailing_zeros() as usize;
            sum += own_by_rank[w * 64 + b];
            word &= word - 1;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::KilnAnalysis;
    use crate::convert::{egraph_to_graph, graph_to_egraph};
    use crate::cost::default_bindings;
    use crate::lang::OpNode;
    use kiln_ir::{Attr, Attrs, DType, Dim, Graph, Tensor};

    fn f32s(shape: &[i64]) -> ValueType {
        ValueType::new(DType::F32, shape.iter().map(|&d| Dim::known(d)).collect())
    }

    fn egraph(inputs: &[(&str, ValueType)]) -> (KilnEGraph, Vec<Id>) {
        let mut eg = KilnEGraph::new(KilnAnalysis::default());
        for (name, ty) in inputs {
            eg.analysis.inputs.insert(name.to_string(), ty.clone());
        }
        let ids = inputs
            .iter()
            .map(|(name, _)| eg.add(Node::Input((*name).into())))
            .collect();
        (eg, ids)
    }

    fn op(eg: &mut KilnEGraph, kind: OpKind, args: &[Id]) -> Id {
        op_with(eg, Op::plain(kind), args)
    }

    fn op_with(eg: &mut KilnEGraph, op: Op, args: &[Id]) -> Id {
        eg.add(Node::Op(OpNode::new(op), args.to_vec()))
    }

    fn chain(eg: &mut KilnEGraph, kind: OpKind, x: Id, n: usize) -> Id {
        (0..n).fold(x, |acc, _| op(eg, kind, &[acc]))
    }

    /// Every op costs 1 s: extraction minimises the number of kernels.
    fn per_kernel() -> Target {
        Target {
            peak_flops: 1e300,
            bandwidth_bytes: 1e300,
            launch_overhead_s: 1.0,
        }
    }

    fn chosen_kind(eg: &KilnEGraph, ex: &Extraction, class: Id) -> Option<OpKind> {
        match &ex.choice[&eg.find(class)] {
            Node::Op(op, _) => Some(op.op.kind),
            _ => None,
        }
    }

    /// The extraction as sorted text, to compare runs byte for byte.
    fn fingerprint(ex: &Extraction) -> String {
        let mut rows: Vec<String> = ex
            .choice
            .iter()
            .map(|(id, n)| format!("{id}={n}{:?}", n.children()))
            .collect();
        rows.sort();
        format!("{}|{}", rows.join(";"), ex.cost.to_bits())
    }

    /// Costs are bytes moved (1 B/s, no launch cost): extraction minimises memory traffic.
    fn per_byte() -> Target {
        Target {
            peak_flops: 1e300,
            bandwidth_bytes: 1.0,
            launch_overhead_s: 0.0,
        }
    }

    #[test]
    fn a_fused_op_that_rereads_a_value_another_consumer_keeps_loses_to_reusing_it() {
        // n = Neg(x + y) or, fused, Mul(x, y) (a stand-in for SkipRMSNorm(x, y)); the sum is
        // also a root (the residual stream). Per class the fused node looks cheaper (192 B
        // against 128 B plus the sum's 192 B), but the sum is written anyway.
        let (mut eg, v) = egraph(&[("x", f32s(&[4, 4])), ("y", f32s(&[4, 4]))]);
        let sum = op(&mut eg, OpKind::Add, &[v[0], v[1]]);
        let n = op(&mut eg, OpKind::Neg, &[sum]);
        let fused = op(&mut eg, OpKind::Mul, &[v[0], v[1]]);
        eg.union(n, fused);
        eg.rebuild();
        let ex = extract(&eg, &[n, sum], &per_byte(), &default_bindings()).unwrap();
        assert_eq!(chosen_kind(&eg, &ex, n), Some(OpKind::Neg));
        // Add 3 × 64 B, Neg 2 × 64 B; the greedy solve's Mul + Add move 6 × 64 B.
        assert_eq!(ex.cost, 320.0);
        assert_eq!(ex.greedy_cost, 384.0);
        assert_eq!(ex.moves, 1);
        assert_eq!(
            ex.cost,
            total_cost(&eg, &ex.choice, &[n, sum], &per_byte(), &default_bindings())
        );
    }

    #[test]
    fn projections_switch_to_a_merged_product_together() {
        // p_i = Neg(x_i) or Get(i, Split(Concat(x_1, x_2, x_3))) (a stand-in for the
        // Split of a merged projection): with a launch cost per op, three Negs cost 3 and the
        // merged form 2, but only once all three readers take it.
        let (mut eg, v) = egraph(&[
            ("a", f32s(&[4, 4])),
            ("b", f32s(&[4, 4])),
            ("c", f32s(&[4, 4])),
        ]);
        let mut axis = Attrs::default();
        axis.set("axis", Attr::Int(1));
        let concat = op_with(&mut eg, Op::new(OpKind::Concat, axis.clone()), &v);
        let mut thirds = axis;
        thirds.set("num_outputs", Attr::Int(3));
        let split = op_with(&mut eg, Op::new(OpKind::Split, thirds), &[concat]);
        let mut roots = vec![];
        for (i, &x) in v.iter().enumerate() {
            let p = op(&mut eg, OpKind::Neg, &[x]);
            let merged = if i == 0 {
                split
            } else {
                eg.add(Node::Get(i as u32, [split]))
            };
            eg.union(p, merged);
            roots.push(p);
        }
        eg.rebuild();
        let ex = extract(&eg, &roots, &per_kernel(), &default_bindings()).unwrap();
        assert_eq!(chosen_kind(&eg, &ex, roots[0]), Some(OpKind::Split));
        assert!(matches!(ex.choice[&eg.find(roots[1])], Node::Get(1, _)));
        assert!(matches!(ex.choice[&eg.find(roots[2])], Node::Get(2, _)));
        assert_eq!(ex.cost, 2.0);
    }

    #[test]
    fn a_shared_subterm_is_counted_once() {
        let (mut eg, v) = egraph(&[("x", f32s(&[4, 4])), ("y", f32s(&[4, 4]))]);
        let m = op(&mut eg, OpKind::Mul, &[v[0], v[1]]);
        let e = op(&mut eg, OpKind::Exp, &[m]);
        let t = op(&mut eg, OpKind::Tanh, &[m]);
        let q = op(&mut eg, OpKind::Add, &[e, t]);
        eg.rebuild();
        let ex = extract(&eg, &[q], &per_kernel(), &default_bindings()).unwrap();
        assert_eq!(ex.choice.len(), 6);
        assert!((ex.cost - 4.0).abs() < 1e-9, "{}", ex.cost);
        assert_eq!(
            ex.cost,
            total_cost(&eg, &ex.choice, &[q], &per_kernel(), &default_bindings())
        );
        // With the real target too, the cost is the sum of each op's cost once.
        let t = Target::default();
        let b = default_bindings();
        let ex = extract(&eg, &[q, m], &t, &b).unwrap();
        let each: f64 = [m, e, t_id(&eg, m), q]
            .iter()
            .map(|c| node_cost(&eg, &ex.choice[&eg.find(*c)], 1, &t, &b).unwrap())
            .sum();
        assert!((ex.cost - each).abs() < 1e-15, "{} vs {each}", ex.cost);

        fn t_id(eg: &KilnEGraph, m: Id) -> Id {
            eg.lookup(Node::Op(OpNode::new(Op::plain(OpKind::Tanh)), vec![m]))
                .unwrap()
        }
    }

    /// Class `q` holds (a) three ops sharing `m` (6 kernels as a DAG, 8 as a tree) and (b) a
    /// chain of 7 Relus: DAG extraction picks (a), tree extraction (b).
    fn sharing_vs_chain() -> (KilnEGraph, Id) {
        let (mut eg, v) = egraph(&[("x", f32s(&[4, 4])), ("y", f32s(&[4, 4]))]);
        let m = op(&mut eg, OpKind::Mul, &[v[0], v[1]]);
        let e = op(&mut eg, OpKind::Exp, &[m]);
        let t = op(&mut eg, OpKind::Tanh, &[m]);
        let s = op(&mut eg, OpKind::Sin, &[m]);
        let a = op(&mut eg, OpKind::Add, &[e, t]);
        let q1 = op(&mut eg, OpKind::Add, &[a, s]);
        let q2 = chain(&mut eg, OpKind::Relu, v[0], 7);
        eg.union(q1, q2);
        eg.rebuild();
        (eg, q1)
    }

    #[test]
    fn dag_costs_prefer_sharing_that_tree_costs_double_count() {
        let (eg, q) = sharing_vs_chain();
        let (target, b) = (per_kernel(), default_bindings());
        let ex = extract(&eg, &[q], &target, &b).unwrap();
        assert_eq!(chosen_kind(&eg, &ex, q), Some(OpKind::Add));
        assert!((ex.cost - 6.0).abs() < 1e-9, "{}", ex.cost);
        let problem = Problem::build(&eg, &target, &b);
        let tree = problem.solve(Mode::Tree);
        let qi = problem.index[&eg.find(q)] as usize;
        let tree_pick = problem.cands[qi][tree.choice[qi] as usize].node;
        assert!(matches!(tree_pick, Node::Op(op, _) if op.op.kind == OpKind::Relu));
        assert!((tree.total[qi] - 7.0).abs() < 1e-9);
    }

    #[test]
    fn the_cheaper_alternative_wins() {
        // Gelu(x) against its erf decomposition x * 0.5 * (1 + erf(x / sqrt 2)).
        let (mut eg, v) = egraph(&[("x", f32s(&[1, 128, 768]))]);
        let x = v[0];
        let constant = |eg: &mut KilnEGraph, name: &str, value: f32| {
            let leaf = eg
                .analysis
                .add_constant(name, Tensor::scalar(value).to_data());
            eg.add(leaf)
        };
        let (half, one, sqrt2) = (
            constant(&mut eg, "half", 0.5),
            constant(&mut eg, "one", 1.0),
            constant(&mut eg, "sqrt2", 2f32.sqrt()),
        );
        let d = op(&mut eg, OpKind::Div, &[x, sqrt2]);
        let erf = op(&mut eg, OpKind::Erf, &[d]);
        let p = op(&mut eg, OpKind::Add, &[erf, one]);
        let h = op(&mut eg, OpKind::Mul, &[x, half]);
        let slow = op(&mut eg, OpKind::Mul, &[h, p]);
        let gelu = op(&mut eg, OpKind::Gelu, &[x]);
        let (t, b) = (Target::default(), default_bindings());
        eg.rebuild();
        let before = extract(&eg, &[slow], &t, &b).unwrap();
        assert_eq!(chosen_kind(&eg, &before, slow), Some(OpKind::Mul));
        eg.union(slow, gelu);
        eg.rebuild();
        let ex = extract(&eg, &[slow], &t, &b).unwrap();
        assert_eq!(chosen_kind(&eg, &ex, slow), Some(OpKind::Gelu));
        assert_eq!(ex.choice.len(), 2, "only Gelu and x remain");
        let gelu_cost = node_cost(&eg, &ex.choice[&eg.find(gelu)], 1, &t, &b).unwrap();
        assert_eq!(ex.cost, gelu_cost);
        assert!(
            ex.cost < before.cost / 4.0,
            "{} vs {}",
            ex.cost,
            before.cost
        );
    }

    fn split_graph() -> (KilnEGraph, Id, Id) {
        let (mut eg, v) = egraph(&[("x", f32s(&[128, 128])), ("y", f32s(&[128, 64]))]);
        let mut attrs = Attrs::default();
        attrs.set("axis", Attr::Int(1));
        attrs.set("split", Attr::Ints(vec![64, 64]));
        let s = op_with(&mut eg, Op::new(OpKind::Split, attrs), &[v[0]]);
        let g1 = eg.add(Node::Get(1, [s]));
        // A cheaper single-output stand-in for output 0 (as a bad rewrite might produce).
        let view = op(&mut eg, OpKind::Identity, &[v[1]]);
        eg.union(s, view);
        eg.rebuild();
        (eg, s, g1)
    }

    #[test]
    fn a_used_extra_output_keeps_the_multi_output_op() {
        let (eg, s, g1) = split_graph();
        let (t, b) = (Target::default(), default_bindings());
        let only_first = extract(&eg, &[s], &t, &b).unwrap();
        assert_eq!(chosen_kind(&eg, &only_first, s), Some(OpKind::Identity));
        let both = extract(&eg, &[s, g1], &t, &b).unwrap();
        assert_eq!(chosen_kind(&eg, &both, s), Some(OpKind::Split));
        assert!(matches!(both.choice[&eg.find(g1)], Node::Get(1, _)));
        assert_eq!(both.choice.len(), 3);
        // A Split is costed as a view (its parts are read in place): launch overhead only.
        let split_cost = node_cost(&eg, &both.choice[&eg.find(s)], 1, &t, &b).unwrap();
        assert_eq!(both.cost, split_cost);
        assert_eq!(split_cost, t.seconds(0.0, 0.0));
        // Only the Get makes the constraint: reading g1 alone still needs the Split.
        let second = extract(&eg, &[g1], &t, &b).unwrap();
        assert_eq!(chosen_kind(&eg, &second, s), Some(OpKind::Split));
    }

    #[test]
    fn layer_norm_statistics_keep_the_layer_norm() {
        let (mut eg, v) = egraph(&[
            ("x", f32s(&[2, 8, 16])),
            ("s", f32s(&[16])),
            ("y", f32s(&[2, 8, 16])),
        ]);
        let absent = eg.add(Node::Absent);
        let ln = op(&mut eg, OpKind::LayerNormalization, &[v[0], v[1], absent]);
        let mean = eg.add(Node::Get(1, [ln]));
        let cheap = op(&mut eg, OpKind::Identity, &[v[2]]);
        eg.union(ln, cheap);
        eg.rebuild();
        let (t, b) = (Target::default(), default_bindings());
        assert_eq!(
            chosen_kind(&eg, &extract(&eg, &[ln], &t, &b).unwrap(), ln),
            Some(OpKind::Identity)
        );
        let ex = extract(&eg, &[ln, mean], &t, &b).unwrap();
        assert_eq!(chosen_kind(&eg, &ex, ln), Some(OpKind::LayerNormalization));
        assert_eq!(
            ex.choice[&eg.find(absent)],
            Node::Absent,
            "absent inputs are part of the choice"
        );
    }

    #[test]
    fn extraction_is_deterministic() {
        let runs: Vec<String> = (0..3)
            .map(|_| {
                let (eg, q) = sharing_vs_chain();
                fingerprint(&extract(&eg, &[q], &Target::default(), &default_bindings()).unwrap())
            })
            .collect();
        assert_eq!(runs[0], runs[1]);
        assert_eq!(runs[1], runs[2]);
        let (eg, s, g1) = split_graph();
        let a = extract(&eg, &[g1, s], &Target::default(), &HashMap::new()).unwrap();
        let b = extract(&eg, &[g1, s], &Target::default(), &HashMap::new()).unwrap();
        assert_eq!(fingerprint(&a), fingerprint(&b));
    }

    #[test]
    fn ties_go_to_the_smallest_node() {
        let (mut eg, v) = egraph(&[("x", f32s(&[4]))]);
        let a = op(&mut eg, OpKind::Relu, &[v[0]]);
        let b = op(&mut eg, OpKind::Neg, &[v[0]]);
        eg.union(a, b);
        eg.rebuild();
        let ex = extract(&eg, &[a], &per_kernel(), &default_bindings()).unwrap();
        // Both cost one kernel; Neg sorts before Relu (OpKind order).
        assert_eq!(chosen_kind(&eg, &ex, a), Some(OpKind::Neg));
    }

    #[test]
    fn ill_typed_nodes_are_never_chosen() {
        let (mut eg, v) = egraph(&[("x", f32s(&[4, 8])), ("w", f32s(&[3, 5]))]);
        let good = op(&mut eg, OpKind::Relu, &[v[0]]);
        // An ill-typed class (its only node fails inference) ...
        let bad = op(&mut eg, OpKind::MatMul, &[v[0], v[1]]);
        assert!(eg[bad].data.types.is_empty());
        // ... a cheap view of it, a node that fails inference itself and a node of another
        // shape, all merged into the well-typed class.
        let view_of_bad = op(&mut eg, OpKind::Identity, &[bad]);
        let bad_itself = op(&mut eg, OpKind::Add, &[v[0], v[1]]);
        let wrong_shape = op(&mut eg, OpKind::Transpose, &[v[1]]);
        eg.union(good, view_of_bad);
        eg.union(good, bad_itself);
        eg.union(good, wrong_shape);
        eg.rebuild();
        assert_eq!(eg[good].data.types, vec![f32s(&[4, 8])]);
        let t = Target::default().with_launch_overhead(0.0);
        let ex = extract(&eg, &[good], &t, &default_bindings()).unwrap();
        assert_eq!(chosen_kind(&eg, &ex, good), Some(OpKind::Relu));
        let err = extract(&eg, &[bad], &t, &default_bindings()).unwrap_err();
        assert!(err.contains("no well-typed"), "{err}");
    }

    #[test]
    fn cycles_in_the_egraph_are_never_extracted() {
        // x = Neg(Neg(x)) and x = Identity(x).
        let (mut eg, v) = egraph(&[("x", f32s(&[4]))]);
        let x = v[0];
        let n1 = op(&mut eg, OpKind::Neg, &[x]);
        let n2 = op(&mut eg, OpKind::Neg, &[n1]);
        let same = op(&mut eg, OpKind::Identity, &[x]);
        eg.union(n2, x);
        eg.union(same, x);
        eg.rebuild();
        let target = Target::default().with_launch_overhead(0.0);
        let ex = extract(&eg, &[n1, x], &target, &default_bindings()).unwrap();
        assert!(matches!(ex.choice[&eg.find(x)], Node::Input(_)));
        assert_eq!(chosen_kind(&eg, &ex, n1), Some(OpKind::Neg));
        assert_eq!(ex.choice.len(), 2);
        // A class whose only node reads itself has no extraction.
        let (mut eg, v) = egraph(&[("x", f32s(&[4]))]);
        let r = op(&mut eg, OpKind::Relu, &[v[0]]);
        let rr = op(&mut eg, OpKind::Relu, &[r]);
        let loop_node = op(&mut eg, OpKind::Neg, &[rr]);
        eg.union(rr, loop_node);
        eg.rebuild();
        let ex = extract(&eg, &[rr], &target, &default_bindings()).unwrap();
        assert_eq!(chosen_kind(&eg, &ex, rr), Some(OpKind::Relu));
    }

    #[test]
    fn round_trips_a_graph_through_convert() {
        let mut g = Graph::new();
        let x = g
            .add_input(
                "x",
                DType::F32,
                vec![Dim::sym("batch"), Dim::sym("seq"), Dim::known(64)],
            )
            .unwrap();
        let s = g
            .add_constant(
                "s",
                Tensor::from_vec(&[64], vec![1f32; 64]).unwrap().to_data(),
            )
            .unwrap();
        let outs = g
            .add_op(
                "ln",
                Op::plain(OpKind::LayerNormalization),
                vec![Some(x), Some(s)],
                &["y".into(), "mean".into()],
            )
            .unwrap();
        let e = g
            .add_op(
                "e",
                Op::plain(OpKind::Exp),
                vec![Some(outs[0])],
                &["e".into()],
            )
            .unwrap();
        let sum = g
            .add_op(
                "sum",
                Op::plain(OpKind::Add),
                vec![Some(e[0]), Some(outs[0])],
                &["sum".into()],
            )
            .unwrap();
        g.set_outputs(vec![("sum".into(), sum[0]), ("mean".into(), outs[1])]);
        let loaded = graph_to_egraph(&g);
        let roots: Vec<Id> = loaded.outputs.iter().map(|(_, id)| *id).collect();
        let (t, b) = (Target::default(), default_bindings());
        let before = total_cost(
            &loaded.egraph,
            &first_node_choice(&loaded.egraph),
            &roots,
            &t,
            &b,
        );
        let ex = extract(&loaded.egraph, &roots, &t, &b).unwrap();
        assert_eq!(ex.cost, before, "nothing to improve");
        let rebuilt = egraph_to_graph(&loaded, &ex.choice).unwrap();
        assert_eq!(rebuilt.op_histogram(), g.op_histogram());
        assert_eq!(
            ex.cost,
            total_cost(&loaded.egraph, &ex.choice, &roots, &t, &b)
        );
        assert!(ex.cost > 3.0 * t.launch_overhead_s);
    }

    #[test]
    fn twenty_thousand_nodes_extract_quickly() {
        // A deep residual stack: every layer has a Gelu with its decomposition and a
        // LayerNormalization with its decomposition merged in, so classes have alternatives,
        // cost sets grow to the whole graph, and the residual shares subterms.
        let (mut eg, v) = egraph(&[("x", f32s(&[1, 128, 64]))]);
        let leaf = eg.analysis.add_constant(
            "w",
            Tensor::from_vec(&[64], vec![0.5f32; 64]).unwrap().to_data(),
        );
        let w = eg.add(leaf);
        let mut axes = Attrs::default();
        axes.set("axes", Attr::Ints(vec![-1]));
        let mean_op = Op::new(OpKind::ReduceMean, axes);
        let mut h = v[0];
        let mut layers = 0;
        while eg.total_size() < 20_000 {
            let a = op(&mut eg, OpKind::Mul, &[h, w]);
            let g = op(&mut eg, OpKind::Gelu, &[a]);
            let t = op(&mut eg, OpKind::Tanh, &[a]);
            let m = op(&mut eg, OpKind::Mul, &[a, t]);
            let slow = op(&mut eg, OpKind::Add, &[m, a]);
            eg.union(g, slow);
            let r = op(&mut eg, OpKind::Add, &[g, h]);
            let ln = op(&mut eg, OpKind::LayerNormalization, &[r, w]);
            let mu = op_with(&mut eg, mean_op.clone(), &[r]);
            let c = op(&mut eg, OpKind::Sub, &[r, mu]);
            let c2 = op(&mut eg, OpKind::Mul, &[c, c]);
            let var = op_with(&mut eg, mean_op.clone(), &[c2]);
            let sd = op(&mut eg, OpKind::Sqrt, &[var]);
            let n = op(&mut eg, OpKind::Div, &[c, sd]);
            let y = op(&mut eg, OpKind::Mul, &[n, w]);
            eg.union(ln, y);
            h = ln;
            layers += 1;
        }
        eg.rebuild();
        let start = std::time::Instant::now();
        let ex = extract(&eg, &[h], &Target::default(), &default_bindings()).unwrap();
        let elapsed = start.elapsed();
        eprintln!(
            "{} nodes, {} classes, {layers} layers: extracted {} classes in {elapsed:?}",
            eg.total_size(),
            eg.number_of_classes(),
            ex.choice.len()
        );
        // Gelu and LayerNormalization win every layer: 4 classes per layer plus x and w.
        assert_eq!(ex.choice.len(), 4 * layers + 2);
        assert!(elapsed.as_secs_f64() < 5.0, "{elapsed:?}");
    }
}

//! The optimisation driver: load a graph into an e-graph, saturate it with rules under node,
//! iteration and time limits (egg's backoff scheduler), extract the cheapest graph, and report
//! what happened.

use crate::convert::{egraph_to_graph, graph_to_egraph};
use crate::cost::{default_bindings, Target};
use crate::extract::{extract, total_cost};
use crate::lang::Node;
use crate::rules::Rule;
use egg::{BackoffScheduler, Id, Language, Runner};
use kiln_ir::{Graph, OpKind};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Bounds on one saturation run.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Stop once the e-graph has this many e-nodes.
    pub node_limit: usize,
    /// Stop after this many iterations.
    pub iter_limit: usize,
    /// Stop after this long (a safety net; the node and iteration limits keep runs deterministic).
    pub time_limit: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            node_limit: 50_000,
            iter_limit: 12,
            time_limit: Duration::from_secs(5),
        }
    }
}

/// What an optimisation did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// How many times each rule was applied.
    pub rules_fired: BTreeMap<String, usize>,
    /// Op histogram of the input graph.
    pub ops_before: BTreeMap<OpKind, usize>,
    /// Op histogram of the optimised graph.
    pub ops_after: BTreeMap<OpKind, usize>,
    /// E-nodes and e-classes when saturation stopped.
    pub egraph_nodes: usize,
    /// E-classes when saturation stopped.
    pub egraph_classes: usize,
    /// Iterations run.
    pub iterations: usize,
    /// Why saturation stopped.
    pub stop_reason: String,
    /// Time spent saturating.
    pub saturate_time: Duration,
    /// Time spent extracting and rebuilding.
    pub extract_time: Duration,
    /// Estimated cost (seconds, roofline at batch 1, seq 128) of the input graph.
    pub cost_before: f64,
    /// Estimated cost of the optimised graph.
    pub cost_after: f64,
    /// Estimated cost of the greedy extraction, before its local search.
    pub cost_greedy: f64,
    /// Moves the extraction's local search kept.
    pub extraction_moves: usize,
}

/// Optimises `graph` with `rules`; the result computes the same outputs under the same names.
pub fn optimize(graph: &Graph, rules: &[Rule], limits: &Limits) -> Result<(Graph, Report), String> {
    let rewrites = rules
        .iter()
        .map(Rule::rewrite)
        .collect::<Result<Vec<_>, String>>()?;
    let mut loaded = graph_to_egraph(graph);
    let target = Target::default();
    let bindings = default_bindings();
    let roots: Vec<Id> = loaded.outputs.iter().map(|(_, id)| *id).collect();
    let original: HashMap<Id, Node> = loaded
        .egraph
        .classes()
        .map(|c| {
            (
                c.id,
                c.nodes[0].clone().map_children(|ch| loaded.egraph.find(ch)),
            )
        })
        .collect();
    let cost_before = total_cost(&loaded.egraph, &original, &roots, &target, &bindings);

    let start = Instant::now();
    let egraph = std::mem::take(&mut loaded.egraph);
    let runner = Runner::default()
        .with_egraph(egraph)
        .with_node_limit(limits.node_limit)
        .with_iter_limit(limits.iter_limit)
        .with_time_limit(limits.time_limit)
        .with_scheduler(BackoffScheduler::default())
        .run(&rewrites);
    let saturate_time = start.elapsed();
    let mut rules_fired = BTreeMap::new();
    for it in &runner.iterations {
        for (name, n) in &it.applied {
            *rules_fired.entry(name.to_string()).or_insert(0) += n;
        }
    }
    let stop_reason = format!(
        "{:?}",
        runner
            .stop_reason
            .as_ref()
            .expect("a finished run has a stop reason")
    );
    let iterations = runner.iterations.len();
    loaded.egraph = runner.egraph;

    let start = Instant::now();
    let roots: Vec<Id> = roots.iter().map(|r| loaded.egraph.find(*r)).collect();
    let extraction = extract(&loaded.egraph, &roots, &target, &bindings)?;
    let optimized = egraph_to_graph(&loaded, &extraction.choice)?;
    let report = Report {
        rules_fired,
        ops_before: graph.op_histogram(),
        ops_after: optimized.op_histogram(),
        egraph_nodes: loaded.egraph.total_number_of_nodes(),
        egraph_classes: loaded.egraph.number_of_classes(),
        iterations,
        stop_reason,
        saturate_time,
        extract_time: start.elapsed(),
        cost_before,
        cost_after: extraction.cost,
        cost_greedy: extraction.greedy_cost,
        extraction_moves: extraction.moves,
    };
    Ok((optimized, report))
}

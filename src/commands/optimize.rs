//! `kiln optimize` and `kiln explain`: run the equality-saturation passes on a model.

use crate::compiled::BackendArg;
use clap::Args;
use kiln::pipeline::load_model;
use kiln_codegen::Backend;
use kiln_ir::OpKind;
use kiln_passes::optimize::{optimize, Limits, Report};
use kiln_passes::rules::{load_rule_file, Rule};
use std::path::PathBuf;

/// Options shared by `optimize` and `explain`.
#[derive(Args)]
pub struct PassArgs {
    /// The model (.onnx file or Hugging Face checkpoint directory).
    model: PathBuf,
    /// An extra rule file (repeatable); its rules are added to the built-in ones.
    #[arg(long = "rules", value_name = "FILE")]
    rules: Vec<PathBuf>,
    /// Use only the rules given with --rules.
    #[arg(long)]
    no_builtin: bool,
}

/// Arguments of `kiln optimize`.
#[derive(Args)]
pub struct OptimizeArgs {
    #[command(flatten)]
    pass: PassArgs,
    /// Where to write the optimised graph (the IR's text form).
    #[arg(long, short = 'o')]
    output: PathBuf,
}

/// Arguments of `kiln explain`.
#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pass: PassArgs,
    /// Also write the optimised graph as Graphviz to this file.
    #[arg(long, value_name = "FILE")]
    dot: Option<PathBuf>,
    #[command(flatten)]
    code: BackendArg,
}

fn rules(args: &PassArgs) -> Result<Vec<Rule>, String> {
    let mut extra = vec![];
    for file in &args.rules {
        extra.extend(load_rule_file(file)?);
    }
    kiln::rule_set::rule_set(!args.no_builtin, extra)
}

fn run(args: &PassArgs) -> Result<(kiln_ir::Graph, kiln_ir::Graph, Report), String> {
    let rules = rules(args)?;
    let graph = load_model(&args.model)?;
    let (optimized, report) = optimize(&graph, &rules, &Limits::default())
        .map_err(|e| format!("{}: {e}", args.model.display()))?;
    Ok((graph, optimized, report))
}

/// Optimises the model and writes the result in the IR's text form.
pub fn optimize_cmd(args: &OptimizeArgs) -> Result<(), String> {
    let (_, optimized, report) = run(&args.pass)?;
    std::fs::write(&args.output, kiln_ir::text::print(&optimized))
        .map_err(|e| format!("{}: {e}", args.output.display()))?;
    println!(
        "wrote {} ({} ops; estimated cost {:.3} ms -> {:.3} ms)",
        args.output.display(),
        report.ops_after.values().sum::<usize>(),
        report.cost_before * 1e3,
        report.cost_after * 1e3
    );
    Ok(())
}

/// The fused ops `explain` reports, with the op each one replaces (for found / present).
const FUSIONS: &[(OpKind, &str)] = &[
    (OpKind::FusedAttention, "attention blocks (Softmax present)"),
    (OpKind::FusedMatMul, "matmul epilogues"),
    (OpKind::Gelu, "GELU"),
    (OpKind::LayerNormalization, "LayerNorm"),
    (OpKind::RMSNormalization, "RMSNorm"),
    (OpKind::SkipLayerNormalization, "residual + LayerNorm"),
    (
        OpKind::SkipSimplifiedLayerNormalization,
        "residual + RMSNorm",
    ),
    (OpKind::Silu, "SiLU"),
    (OpKind::SwiGlu, "SwiGLU"),
    (OpKind::RopeRotateHalf, "RoPE (rotate-half)"),
    (OpKind::RotaryEmbedding, "RoPE (ONNX RotaryEmbedding)"),
];

/// Prints what the passes did to the model; for an artefact, the steps of its plan.
pub fn explain(args: &ExplainArgs) -> Result<(), String> {
    if kiln_rt::artifact::is_artifact(&args.pass.model) {
        let program = kiln_rt::artifact::load(&args.pass.model, 1)?;
        print_plan(program.plan());
        return Ok(());
    }
    let (_, optimized, report) = run(&args.pass)?;
    println!("rules fired:");
    if report.rules_fired.is_empty() {
        println!("  (none)");
    }
    for (rule, n) in &report.rules_fired {
        println!("  {rule:<32} {n}");
    }
    println!("fused ops in the optimised graph:");
    for (kind, what) in FUSIONS {
        let n = report.ops_after.get(kind).copied().unwrap_or(0);
        if n > 0 {
            println!("  {:<24} {n:>4}   {what}", kind.name());
        }
    }
    println!(
        "softmax blocks left: {}",
        report.ops_after.get(&OpKind::Softmax).copied().unwrap_or(0)
    );
    println!("ops before -> after (and the kernel class of each, from the op table):");
    let kinds: std::collections::BTreeSet<&OpKind> = report
        .ops_before
        .keys()
        .chain(report.ops_after.keys())
        .collect();
    for k in kinds {
        let (b, a) = (
            report.ops_before.get(k).copied().unwrap_or(0),
            report.ops_after.get(k).copied().unwrap_or(0),
        );
        let class = kiln_ir::facts::facts(*k).class.name();
        println!("  {:<32} {b:>5} -> {a:<5}  {class}", k.name());
    }
    println!(
        "e-graph: {} e-nodes in {} e-classes after {} iterations ({})",
        report.egraph_nodes, report.egraph_classes, report.iterations, report.stop_reason
    );
    println!(
        "time: saturation {:.2} ms, extraction {:.2} ms",
        report.saturate_time.as_secs_f64() * 1e3,
        report.extract_time.as_secs_f64() * 1e3
    );
    println!(
        "estimated cost (roofline, batch 1, seq 128): {:.3} ms -> {:.3} ms ({:.2}x)",
        report.cost_before * 1e3,
        report.cost_after * 1e3,
        report.cost_before / report.cost_after.max(f64::MIN_POSITIVE)
    );
    println!(
        "extraction objective: {:.1} µs from the greedy solve, {:.1} µs after {} local moves",
        report.cost_greedy * 1e6,
        report.cost_after * 1e6,
        report.extraction_moves
    );
    print_kernels(&optimized, &args.code.backend)?;
    if let Some(dot) = &args.dot {
        std::fs::write(dot, kiln_ir::dot::to_dot(&optimized))
            .map_err(|e| format!("{}: {e}", dot.display()))?;
        println!("wrote {}", dot.display());
    }
    Ok(())
}

/// Prints the steps of the optimised graph's plan for `backend`: one line per kernel (its
/// kind, ops, and schedule with where it came from), view or interpreter fallback (with the
/// reason no template took it).
fn print_kernels(optimized: &kiln_ir::Graph, backend: &Backend) -> Result<(), String> {
    print_plan(
        &kiln_codegen::plan::lowering::lower_graph(optimized, backend, &kiln_codegen::Heuristic)?
            .plan,
    );
    Ok(())
}

/// Prints a plan's steps: one line per kernel (its kind, ops, and schedule with where it came
/// from), view or interpreter fallback (with the reason no template took it).
fn print_plan(plan: &kiln_rt::plan::Plan) {
    let backend = &plan.target.backend;
    let stats = &plan.stats;
    println!(
        "kernels ({backend}): {} kernels ({} distinct), {} views, {} nodes on the interpreter, {} ops folded at compile time",
        stats.kernels, stats.distinct_kernels, stats.views, stats.interpreted, stats.folded
    );
    for r in &plan.reports {
        let nodes = r.nodes.join(" + ");
        match (&r.fallback, r.kernel.map(|k| &plan.kernels[k])) {
            (Some(why), _) => println!("  interp       {nodes}   [{why}]"),
            (None, Some(k)) => {
                let schedule: Vec<String> =
                    k.schedule.iter().map(|(n, v)| format!("{n}={v}")).collect();
                println!(
                    "  {:<12} {nodes}   [{} {} ({})]",
                    r.kind,
                    k.symbol,
                    schedule.join(" "),
                    k.schedule_source
                )
            }
            (None, None) => println!("  {:<12} {nodes}", r.kind),
        }
    }
}

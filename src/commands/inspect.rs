//! `kiln inspect`: describe a model without running it.

use clap::Args;
use kiln_ir::infer::fmt_shape;
use std::path::PathBuf;

/// Arguments of `kiln inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// The model (.onnx file or Hugging Face checkpoint directory).
    model: PathBuf,
}

/// Prints inputs, outputs, the op histogram and the parameter totals; for an artefact, what
/// its plan holds.
pub fn inspect(args: &InspectArgs) -> Result<(), String> {
    if kiln_rt::artifact::is_artifact(&args.model) {
        let program = kiln_rt::artifact::load(&args.model, 1)?;
        print_plan(&args.model, program.plan());
        return Ok(());
    }
    let graph = kiln::pipeline::load_model(&args.model)?;
    println!("model: {}", args.model.display());
    println!("inputs:");
    for v in graph.inputs() {
        let v = graph.value(v);
        println!("  {}: {}{}", v.name, v.ty.dtype, fmt_shape(&v.ty.shape));
    }
    println!("outputs:");
    for (name, v) in graph.outputs() {
        let ty = &graph.value(*v).ty;
        println!("  {name}: {}{}", ty.dtype, fmt_shape(&ty.shape));
    }
    let histogram = graph.op_histogram();
    println!("ops ({} nodes):", histogram.values().sum::<usize>());
    for (kind, count) in histogram {
        println!("  {kind:<32} {count}");
    }
    let (params, bytes) = graph.parameter_totals();
    println!("parameters: {params} ({bytes} bytes)");
    Ok(())
}

/// Describes an artefact's plan: its ports, target, steps by kind and constants by layout.
fn print_plan(dir: &std::path::Path, plan: &kiln_rt::plan::Plan) {
    println!("artefact: {}", dir.display());
    let target = &plan.target;
    println!(
        "target: {} {} (needs {})",
        target.backend,
        target.cpu,
        target.features.join(" ")
    );
    println!("inputs:");
    for &v in &plan.inputs {
        let v = &plan.values[v];
        println!("  {}: {}{}", v.name, v.ty.dtype, fmt_shape(&v.ty.shape));
    }
    println!("outputs:");
    for (name, v) in &plan.outputs {
        let ty = &plan.values[*v].ty;
        println!("  {name}: {}{}", ty.dtype, fmt_shape(&ty.shape));
    }
    let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &plan.reports {
        *kinds.entry(r.kind.as_str()).or_default() += 1;
    }
    println!(
        "steps ({}; {} distinct kernels):",
        plan.steps.len(),
        plan.kernels.len()
    );
    for (kind, n) in kinds {
        println!("  {kind:<32} {n}");
    }
    let mut layouts: std::collections::BTreeMap<(String, String), (usize, u64)> =
        Default::default();
    for c in &plan.constants {
        let e = layouts
            .entry((c.dtype.to_string(), c.layout.clone()))
            .or_default();
        e.0 += 1;
        e.1 += c.bytes;
    }
    println!("constants:");
    for ((dtype, layout), (n, bytes)) in layouts {
        println!("  {dtype} {layout:<28} {n:>5} ({bytes} bytes)");
    }
}

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

/// Prints inputs, outputs, the op histogram and the parameter totals.
pub fn inspect(args: &InspectArgs) -> Result<(), String> {
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

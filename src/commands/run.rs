//! `kiln run`: run a model on given .npy inputs, compiled or on the interpreter, and write its
//! outputs.

use crate::compiled::{CacheArgs, EngineArg};
use crate::inputs::read_feeds;
use clap::Args;
use kiln::pipeline::load_model;
use kiln_ir::{npy, Tensor};
use std::path::PathBuf;

/// Arguments of `kiln run`.
#[derive(Args)]
pub struct RunArgs {
    /// The model (.onnx file or Hugging Face checkpoint directory).
    model: PathBuf,
    /// An input as NAME=FILE.npy (repeat for each input).
    #[arg(long = "input", short = 'i', value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Directory to write `<output name>.npy` files into.
    #[arg(long, short = 'o', default_value = "out")]
    output_dir: PathBuf,
    #[command(flatten)]
    engine: EngineArg,
    /// Threads for the compiled kernels' parallel loops.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    #[command(flatten)]
    cache: CacheArgs,
}

/// Runs the model on the chosen backend and writes every output.
pub fn run(args: &RunArgs) -> Result<(), String> {
    let feeds = read_feeds(&args.inputs)?;
    let outputs = match args.engine.engine.pipeline(args.threads, args.cache) {
        None => kiln_ir::interp::run(&load_model(&args.model)?, &feeds),
        Some(pipeline) => pipeline
            .open(&args.model)?
            .run(&feeds)
            .map(|(outputs, _)| outputs),
    }
    .map_err(|e| format!("{}: {e}", args.model.display()))?;
    std::fs::create_dir_all(&args.output_dir).map_err(|e| {
        format!(
            "{}: cannot create directory: {e}",
            args.output_dir.display()
        )
    })?;
    for (name, tensor) in &outputs {
        let path = args.output_dir.join(format!("{}.npy", file_stem(name)));
        npy::write_npy(&path, tensor)?;
        println!(
            "{name}: {} {:?} {}  -> {}",
            tensor.dtype(),
            tensor.shape(),
            summary(tensor),
            path.display()
        );
    }
    Ok(())
}

/// An output name made safe as a file name.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `min/mean/max` of a tensor, for a quick look at an output.
fn summary(t: &Tensor) -> String {
    let v = t.to_f64_array();
    if v.is_empty() {
        return "(empty)".into();
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    format!("min {min:.6} mean {mean:.6} max {max:.6}")
}

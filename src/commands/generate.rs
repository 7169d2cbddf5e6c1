//! `kiln generate`: greedy generation from a causal checkpoint — one prefill over the prompt,
//! then one decode step per new token with the KV cache, compiled or on the reference
//! interpreter; or from the artefacts `kiln compile` made of such a checkpoint (no JIT).

use super::run::Backend;
use clap::Args;
use kiln_codegen::runtime::artifact::{is_artifact, load_graph};
use kiln_codegen::runtime::Program;
use kiln_frontends::hf::config::{read_config, HfConfig};
use kiln_frontends::hf::{Entry, HfModel};
use kiln_ir::{interp, Graph, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Arguments of `kiln generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// The checkpoint directory (config.json + model.safetensors), or the directory
    /// `kiln compile` wrote for one (prefill/, decode/, config.json).
    checkpoint: PathBuf,
    /// The prompt as comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    prompt_ids: Vec<i64>,
    /// How many tokens to generate.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// Where to run: kernels compiled by Cranelift or LLVM, or the reference interpreter.
    #[arg(long, value_enum, default_value_t = Backend::Cranelift)]
    backend: Backend,
    /// Threads for the compiled kernels' parallel loops.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
}

/// One entry point of the model, ready to run on the chosen backend.
enum Runner {
    Interp(Graph),
    Compiled(Box<Program>),
}

impl Runner {
    fn new(graph: Graph, args: &GenerateArgs) -> Result<Runner, String> {
        Ok(match args.backend.options(args.threads) {
            None => Runner::Interp(graph),
            Some(options) => Runner::Compiled(Box::new(Program::compile(&graph, &options)?)),
        })
    }

    /// The entry point compiled ahead of time into the artefact `dir`.
    fn load(dir: &Path, args: &GenerateArgs) -> Result<Runner, String> {
        Ok(match args.backend.options(args.threads) {
            None => Runner::Interp(load_graph(dir)?),
            Some(options) => Runner::Compiled(Box::new(Program::load(dir, &options)?)),
        })
    }

    fn run(&self, inputs: &HashMap<String, Tensor>) -> Result<Vec<(String, Tensor)>, String> {
        match self {
            Runner::Interp(g) => interp::run(g, inputs),
            Runner::Compiled(p) => p.run(inputs).map(|(out, _)| out),
        }
        .map_err(|e| e.to_string())
    }
}

/// Whether `dir` holds the artefacts `kiln compile` made of a causal checkpoint.
fn compiled_ahead(dir: &Path) -> bool {
    is_artifact(&dir.join("prefill")) && is_artifact(&dir.join("decode"))
}

/// The configuration of a causal model (checked to be one).
fn causal_config(dir: &Path) -> Result<HfConfig, String> {
    let config = if compiled_ahead(dir) {
        read_config(dir)?
    } else {
        HfModel::open(dir)?.config
    };
    if !config.architecture.is_causal() {
        return Err(format!(
            "{}: {} is not a causal language model",
            dir.display(),
            config.architecture_name
        ));
    }
    Ok(config)
}

/// The prefill and decode entry points: built from the checkpoint, or loaded from the
/// artefacts of one.
fn entry_points(args: &GenerateArgs) -> Result<(Runner, Runner), String> {
    let dir = &args.checkpoint;
    if compiled_ahead(dir) {
        let prefill = Runner::load(&dir.join("prefill"), args)?;
        return Ok((prefill, Runner::load(&dir.join("decode"), args)?));
    }
    let model = HfModel::open(dir)?;
    let prefill = Runner::new(model.graph(Entry::Prefill)?, args)?;
    Ok((prefill, Runner::new(model.graph(Entry::Decode)?, args)?))
}

/// The id with the largest logit in the last position.
fn argmax_last(logits: &Tensor) -> i64 {
    let a = logits.to_f32_array();
    let vocab = *a.shape().last().expect("logits have a vocab axis");
    let last: Vec<f32> = a.iter().copied().skip(a.len() - vocab).collect();
    let mut best = 0;
    for (i, v) in last.iter().enumerate() {
        if *v > last[best] {
            best = i;
        }
    }
    best as i64
}

/// Runs prefill then decode and prints the prompt and generated ids.
pub fn generate(args: &GenerateArgs) -> Result<(), String> {
    let config = causal_config(&args.checkpoint)?;
    let vocab = config.vocab_size as i64;
    if let Some(bad) = args.prompt_ids.iter().find(|&&t| t < 0 || t >= vocab) {
        return Err(format!(
            "--prompt-ids: token {bad} is outside the vocabulary (0..{vocab})"
        ));
    }
    if args.prompt_ids.is_empty() {
        return Err("--prompt-ids: give at least one token".into());
    }
    let context = config.max_positions;
    let total = args.prompt_ids.len().checked_add(args.max_new_tokens);
    if total.is_none_or(|total| total > context) {
        return Err(format!(
            "--max-new-tokens {}: the prompt's {} tokens plus the new ones exceed the model's \
             {context} positions",
            args.max_new_tokens,
            args.prompt_ids.len()
        ));
    }
    let compile_start = std::time::Instant::now();
    let (prefill, decode) = entry_points(args)?;
    let compile_time = compile_start.elapsed();
    let mut tokens = args.prompt_ids.clone();
    let n = tokens.len();
    let row = |ids: &[i64]| Tensor::from_vec(&[1, ids.len()], ids.to_vec()).expect("one row");
    let mut inputs = HashMap::from([
        ("input_ids".to_string(), row(&tokens)),
        ("attention_mask".to_string(), row(&vec![1; n])),
    ]);
    let start = std::time::Instant::now();
    let mut out = prefill.run(&inputs)?;
    let prefill_time = start.elapsed();
    let start = std::time::Instant::now();
    let mut steps = 0usize;
    for _ in 0..args.max_new_tokens {
        let next = argmax_last(&out[0].1);
        tokens.push(next);
        if tokens.len() == n + args.max_new_tokens {
            break;
        }
        inputs = HashMap::from([
            ("input_ids".to_string(), row(&[next])),
            ("attention_mask".to_string(), row(&vec![1; tokens.len()])),
        ]);
        for (name, value) in out.drain(1..) {
            inputs.insert(name.replacen("present", "past", 1), value);
        }
        out = decode.run(&inputs)?;
        steps += 1;
    }
    let decode_time = start.elapsed();
    let show = |ids: &[i64]| {
        ids.iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!("prompt: {}", show(&tokens[..n]));
    println!("generated: {}", show(&tokens[n..]));
    let backend = match args.backend.options(args.threads) {
        None => "reference interpreter".to_string(),
        Some(options) => format!(
            "{} thread(s), {} in {:.3} s",
            args.threads,
            match compiled_ahead(&args.checkpoint) {
                true => "ahead-of-time kernels loaded".to_string(),
                false => format!("compiled by {}", options.backend.name()),
            },
            compile_time.as_secs_f64()
        ),
    };
    println!(
        "prefill: {:.1} ms for {n} tokens ({backend})",
        prefill_time.as_secs_f64() * 1e3
    );
    if steps > 0 {
        println!(
            "decode: {:.2} tokens/s over {steps} steps",
            steps as f64 / decode_time.as_secs_f64()
        );
    }
    Ok(())
}

//! `kiln generate`: greedy generation from a causal checkpoint — one prefill over the prompt,
//! then one decode step per new token with the KV cache, on the reference interpreter.

use clap::Args;
use kiln_frontends::hf::{Entry, HfModel};
use kiln_ir::{interp, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

/// Arguments of `kiln generate`.
#[derive(Args)]
pub struct GenerateArgs {
    /// The checkpoint directory (config.json + model.safetensors).
    checkpoint: PathBuf,
    /// The prompt as comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true)]
    prompt_ids: Vec<i64>,
    /// How many tokens to generate.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
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
    let model = HfModel::open(&args.checkpoint)?;
    if !model.is_causal() {
        return Err(format!(
            "{}: {} is not a causal language model",
            args.checkpoint.display(),
            model.config.architecture_name
        ));
    }
    let vocab = model.config.vocab_size as i64;
    if let Some(bad) = args.prompt_ids.iter().find(|&&t| t < 0 || t >= vocab) {
        return Err(format!(
            "--prompt-ids: token {bad} is outside the vocabulary (0..{vocab})"
        ));
    }
    let context = model.config.max_positions;
    if args.prompt_ids.len() + args.max_new_tokens > context {
        return Err(format!(
            "prompt plus new tokens ({}) exceed the model's {context} positions",
            args.prompt_ids.len() + args.max_new_tokens
        ));
    }
    let prefill = model.graph(Entry::Prefill)?;
    let decode = model.graph(Entry::Decode)?;
    let mut tokens = args.prompt_ids.clone();
    let n = tokens.len();
    let row = |ids: &[i64]| Tensor::from_vec(&[1, ids.len()], ids.to_vec()).expect("one row");
    let mut inputs = HashMap::from([
        ("input_ids".to_string(), row(&tokens)),
        ("attention_mask".to_string(), row(&vec![1; n])),
    ]);
    let start = std::time::Instant::now();
    let mut out = interp::run(&prefill, &inputs).map_err(|e| e.to_string())?;
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
        out = interp::run(&decode, &inputs).map_err(|e| e.to_string())?;
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
    println!(
        "prefill: {:.1} ms for {n} tokens (reference interpreter)",
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

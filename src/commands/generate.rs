//! `kiln generate`: text (or token ids) in, text out, from a causal checkpoint or the artefacts
//! `kiln compile` made of one. The prompt is encoded by the checkpoint's tokenizer (through its
//! chat template with `--chat`), decoded with the KV cache by the compiled kernels or the
//! reference interpreter, and the new text is streamed to stdout as it is decoded; timings go
//! to stderr. See [`crate::generation`] for the parts.

use crate::compiled::{Engine, EngineArg};
use crate::generation::chat::{ChatTemplate, Message};
use crate::generation::model_files::SpecialIds;
use crate::generation::sampling::{Sampler, Sampling};
use crate::generation::session::{self, compiled_ahead, EntryPoints, Limits, Output, Timings};
use crate::generation::text::{TextStream, TextTokenizer};
use clap::Args;
use kiln_frontends::hf::config::{read_config, Architecture, HfConfig};
use kiln_frontends::hf::HfModel;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `kiln generate`.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["prompt", "prompt_file", "prompt_ids", "prompts_file"]))]
pub struct GenerateArgs {
    /// The checkpoint directory (config.json + model.safetensors, and tokenizer.json for text),
    /// or the directory `kiln compile` wrote for one.
    checkpoint: PathBuf,
    /// The prompt as text, encoded by the checkpoint's tokenizer.json.
    #[arg(long)]
    prompt: Option<String>,
    /// A file whose whole content is the prompt.
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// The prompt as comma-separated token ids; the output is printed as ids.
    #[arg(long, value_delimiter = ',', conflicts_with = "chat")]
    prompt_ids: Option<Vec<i64>>,
    /// A file of prompts, one per line, decoded together as one batch.
    #[arg(long)]
    prompts_file: Option<PathBuf>,
    /// Apply the checkpoint's chat template: the prompt is the user's message.
    #[arg(long)]
    chat: bool,
    /// With --chat, the system message.
    #[arg(long)]
    system: Option<String>,
    /// The most tokens to generate for each prompt [default: 128, or up to the context].
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Stop a prompt's output where this text appears (repeatable); the text is excluded. A
    /// special token (`<|im_end|>`) stops when it is generated.
    #[arg(long)]
    stop: Vec<String>,
    /// Do not stop at the model's end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// 0 is greedy decoding; above 0, tokens are drawn from the logits divided by it.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    temperature: f64,
    /// When drawing: keep only the K most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// When drawing: keep the most likely tokens whose probabilities sum to P, in (0, 1].
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    top_p: f64,
    /// When drawing: drop tokens less likely than P times the most likely one, in [0, 1].
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    min_p: f64,
    /// Above 1, make tokens already seen less likely (greedy too).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    repetition_penalty: f64,
    /// The seed of the draws: the same seed gives the same tokens [default: from the clock,
    /// printed on stderr].
    #[arg(long)]
    seed: Option<u64>,
    /// Write one JSON record per prompt (text, ids, timings) to stdout instead of the text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArg,
    /// Threads for the compiled kernels' parallel loops.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    #[command(flatten)]
    cache: crate::compiled::CacheArgs,
}

/// The tokens generated when no --max-new-tokens is given (fewer if the context ends first).
const DEFAULT_NEW_TOKENS: usize = 128;

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

/// The prompts to generate for: as text (None for `--prompt-ids`), and as ids.
struct Prompts {
    texts: Vec<Option<String>>,
    ids: Vec<Vec<i64>>,
}

impl Prompts {
    fn read(args: &GenerateArgs, tokenizer: Option<&TextTokenizer>) -> Result<Prompts, String> {
        if let Some(ids) = &args.prompt_ids {
            return Ok(Prompts {
                texts: vec![None],
                ids: vec![ids.clone()],
            });
        }
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let texts: Vec<String> = if let Some(text) = &args.prompt {
            vec![text.clone()]
        } else if let Some(path) = &args.prompt_file {
            vec![read(path)?]
        } else {
            let path = args
                .prompts_file
                .as_ref()
                .expect("clap requires one prompt source");
            let text = read(path)?;
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if let Some(n) = lines.iter().position(|l| l.trim().is_empty()) {
                return Err(format!("{}: line {} is empty", path.display(), n + 1));
            }
            if lines.is_empty() {
                return Err(format!("{}: holds no prompt", path.display()));
            }
            lines
        };
        let tokenizer = tokenizer.ok_or_else(|| {
            let missing = TextTokenizer::missing(&args.checkpoint, "a text prompt");
            format!("{missing} (give token ids with --prompt-ids)")
        })?;
        let template = args
            .chat
            .then(|| ChatTemplate::open(&args.checkpoint))
            .transpose()?;
        let ids = texts
            .iter()
            .map(|text| match &template {
                // The rendered template holds the special tokens itself, as transformers'
                // apply_chat_template encodes it.
                Some(template) => {
                    let mut messages = Vec::new();
                    if let Some(system) = &args.system {
                        messages.push(Message {
                            role: "system",
                            content: system,
                        });
                    }
                    messages.push(Message {
                        role: "user",
                        content: text,
                    });
                    tokenizer.encode(&template.render(&messages)?, false)
                }
                None => tokenizer.encode(text, true),
            })
            .collect::<Result<_, String>>()?;
        Ok(Prompts {
            texts: texts.into_iter().map(Some).collect(),
            ids,
        })
    }

    /// Refuses empty prompts, ids outside the vocabulary, and prompts with no room to
    /// generate in the model's context; returns the number of new tokens to generate.
    fn check(&self, args: &GenerateArgs, config: &HfConfig) -> Result<usize, String> {
        let vocab = config.vocab_size as i64;
        let context = config.max_positions;
        let source = match args.prompt_ids {
            Some(_) => "--prompt-ids",
            None => "the prompt",
        };
        for ids in &self.ids {
            if ids.is_empty() {
                return Err(format!("{source}: give at least one token"));
            }
            if let Some(bad) = ids.iter().find(|&&t| t < 0 || t >= vocab) {
                return Err(format!(
                    "{source}: token {bad} is outside the vocabulary (0..{vocab})"
                ));
            }
        }
        // Shorter prompts of a batch are padded to the longest.
        let longest = self.ids.iter().map(Vec::len).max().unwrap_or(0);
        if longest >= context {
            return Err(format!(
                "{source}: {longest} tokens leave no room in the model's {context} positions"
            ));
        }
        match args.max_new_tokens {
            None => Ok(DEFAULT_NEW_TOKENS.min(context - longest)),
            Some(n) if longest.checked_add(n).is_some_and(|total| total <= context) => Ok(n),
            Some(n) => Err(format!(
                "--max-new-tokens {n}: the prompt's {longest} tokens plus the new ones exceed the \
                 model's {context} positions"
            )),
        }
    }
}

/// The settings of the sampler, checked; the seed drawn from the clock when none is given
/// (and printed with the timings, so that the run can be repeated).
fn sampling(args: &GenerateArgs) -> Result<Sampling, String> {
    let drawn_seed = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    let settings = Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty,
        seed: 0,
    };
    settings.check()?;
    if !settings.draws() {
        let drawing_only = [
            ("--top-k", args.top_k.is_some()),
            ("--top-p", args.top_p != 1.0),
            ("--min-p", args.min_p != 0.0),
        ];
        if let Some((option, _)) = drawing_only.iter().find(|(_, given)| *given) {
            return Err(format!(
                "{option} shapes the draws, which need --temperature above 0 (greedy now)"
            ));
        }
    }
    let seed = match (args.seed, settings.draws()) {
        (Some(seed), _) => seed,
        (None, true) => drawn_seed(),
        (None, false) => 0,
    };
    Ok(Sampling { seed, ..settings })
}

/// Generates for every prompt and prints the text (or ids), then the timings on stderr.
pub fn generate(args: &GenerateArgs) -> Result<(), String> {
    let dir = &args.checkpoint;
    let config = causal_config(dir)?;
    if args.system.is_some() && !args.chat {
        return Err("--system is the chat's system message: give --chat too".into());
    }
    let settings = sampling(args)?;
    let tokenizer = TextTokenizer::open(dir)?;
    let special = SpecialIds::read(dir, config.vocab_size)?;
    if tokenizer.is_none() && !args.stop.is_empty() {
        return Err(TextTokenizer::missing(dir, "--stop"));
    }
    let prompts = Prompts::read(args, tokenizer.as_ref())?;
    let max_new_tokens = prompts.check(args, &config)?;
    let pipeline = args.engine.engine.pipeline(args.threads, args.cache);
    let compile_start = Instant::now();
    let model = EntryPoints::open(dir, pipeline.as_ref())?;
    let compile_time = compile_start.elapsed();
    let end_ids = if args.ignore_eos {
        &[][..]
    } else {
        &special.eos[..]
    };
    let limits = Limits {
        end_ids,
        max_new_tokens,
        pad: special.pad,
    };
    let stop_ids: Vec<i64> = match &tokenizer {
        Some(tokenizer) => args
            .stop
            .iter()
            .filter_map(|s| tokenizer.special_token_id(s))
            .collect(),
        None => Vec::new(),
    };
    // Text is streamed to stdout as it is decoded for a single prompt given as text.
    let streaming = !args.json && prompts.ids.len() == 1 && prompts.texts[0].is_some();
    let mut streams: Vec<TextStream> = prompts
        .ids
        .iter()
        .map(|_| TextStream::new(&args.stop))
        .collect();
    let mut outputs: Vec<Option<Output>> = vec![None; prompts.ids.len()];
    let mut stdout = std::io::stdout().lock();
    let absolute_positions = config.architecture == Architecture::Gpt2;
    let mut batch_timings = Vec::new();
    for rows in session::batches(&prompts.ids, absolute_positions) {
        let batch: Vec<Vec<i64>> = rows.iter().map(|&r| prompts.ids[r].clone()).collect();
        let mut samplers: Vec<Sampler> = rows.iter().map(|_| Sampler::new(&settings)).collect();
        let mut generated: Vec<Vec<i64>> = vec![Vec::new(); rows.len()];
        let mut on_token = |row: usize, id: i64| -> Result<bool, String> {
            generated[row].push(id);
            if stop_ids.contains(&id) {
                return Ok(false);
            }
            let (Some(tokenizer), false) = (&tokenizer, args.stop.is_empty() && !streaming) else {
                return Ok(true);
            };
            let stream = &mut streams[rows[row]];
            let piece = stream.push(&tokenizer.decode(&generated[row], true)?);
            if streaming {
                write!(stdout, "{piece}")
                    .and_then(|()| stdout.flush())
                    .map_err(|e| e.to_string())?;
            }
            Ok(!stream.stopped())
        };
        let (out, timings) =
            session::generate(&model, &batch, &mut samplers, &limits, &mut on_token)?;
        for (row, output) in rows.iter().zip(out) {
            outputs[*row] = Some(output);
        }
        batch_timings.push((rows, timings));
    }
    let outputs: Vec<Output> = outputs
        .into_iter()
        .map(|o| o.expect("every row ran"))
        .collect();
    let texts: Vec<Option<String>> = match &tokenizer {
        None => vec![None; outputs.len()],
        Some(tokenizer) => outputs
            .iter()
            .zip(&mut streams)
            .map(|(output, stream)| {
                if stream.stopped() {
                    return Ok(Some(stream.text().to_string()));
                }
                tokenizer.decode(&output.ids, true).map(Some)
            })
            .collect::<Result<_, String>>()?,
    };
    // The rows decoded together with `row`, and their timings.
    let batch_of = |row: usize| {
        batch_timings
            .iter()
            .find(|(rows, _)| rows.contains(&row))
            .expect("every row is in a batch")
    };
    if args.json {
        for (row, output) in outputs.iter().enumerate() {
            let (batch, t) = batch_of(row);
            let record = serde_json::json!({
                "prompt": prompts.texts[row],
                "prompt_ids": prompts.ids[row],
                "text": texts[row],
                "ids": output.ids,
                "finish": output.finish.name(),
                "timings": {
                    "compile_s": compile_time.as_secs_f64(),
                    "time_to_first_token_ms": t.first_token.as_secs_f64() * 1e3,
                    "prefill_tokens_per_s": rate(t.prompt_tokens, t.prefill),
                    "decode_tokens_per_s": rate(t.decode_tokens, t.decode),
                    "batch": batch.len(),
                },
            });
            writeln!(stdout, "{record}").map_err(|e| e.to_string())?;
        }
    } else if args.prompt_ids.is_some() {
        let show = |ids: &[i64]| ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        writeln!(stdout, "prompt: {}", show(&prompts.ids[0])).map_err(|e| e.to_string())?;
        writeln!(stdout, "generated: {}", show(&outputs[0].ids)).map_err(|e| e.to_string())?;
    } else if streaming {
        writeln!(stdout, "{}", streams[0].finish()).map_err(|e| e.to_string())?;
    } else {
        for (row, text) in texts.iter().enumerate() {
            let prompt = prompts.texts[row].as_deref().unwrap_or_default();
            writeln!(stdout, "=== prompt {}: {prompt}", row + 1).map_err(|e| e.to_string())?;
            writeln!(stdout, "{}", text.as_deref().unwrap_or_default())
                .map_err(|e| e.to_string())?;
        }
    }
    if settings.draws() && args.seed.is_none() {
        eprintln!("seed: {} (give --seed to repeat this run)", settings.seed);
    }
    report_timings(args, &batch_timings, compile_time);
    Ok(())
}

/// Tokens per second, 0 when nothing was timed.
fn rate(tokens: usize, time: std::time::Duration) -> f64 {
    match time.as_secs_f64() {
        t if t > 0.0 => tokens as f64 / t,
        _ => 0.0,
    }
}

/// The timings of every batch on stderr.
fn report_timings(
    args: &GenerateArgs,
    batches: &[(Vec<usize>, Timings)],
    compile_time: std::time::Duration,
) {
    let backend = match &args.engine.engine {
        Engine::Interp => "reference interpreter".to_string(),
        Engine::Compiled(backend) => format!(
            "{}, {} thread(s), {} in {:.3} s",
            backend.name(),
            args.threads,
            match compiled_ahead(&args.checkpoint) {
                true => "ahead-of-time kernels loaded",
                false => "compiled",
            },
            compile_time.as_secs_f64()
        ),
    };
    for (rows, t) in batches {
        let of = match batches.len() {
            1 if rows.len() == 1 => String::new(),
            _ => format!(
                " (prompts {})",
                rows.iter()
                    .map(|r| (r + 1).to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        eprintln!(
            "prefill{of}: {:.1} ms for {} tokens, {:.1} tokens/s ({backend})",
            t.prefill.as_secs_f64() * 1e3,
            t.prompt_tokens,
            rate(t.prompt_tokens, t.prefill)
        );
        eprintln!(
            "first token{of}: {:.1} ms",
            t.first_token.as_secs_f64() * 1e3
        );
        if t.decode_tokens > 0 {
            eprintln!(
                "decode{of}: {:.2} tokens/s over {} tokens",
                rate(t.decode_tokens, t.decode),
                t.decode_tokens
            );
        }
    }
}

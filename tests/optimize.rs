//! The built-in rules on real models: every attention block becomes one FusedAttention, every
//! decomposed norm and activation is recognised, and the optimised graph still matches the
//! reference outputs within 1e-4 on the interpreter. Each fixture is checked in both export
//! forms it ships: torch's dynamo export (`model.onnx`) and its legacy TorchScript export
//! (`model.legacy.onnx`, `scripts/make_legacy_fixtures.py`).

mod common;

use kiln_frontends::onnx::load_model;
use kiln_ir::{interp, npy::read_npy, Graph, OpKind, Tensor};
use kiln_passes::optimize::{optimize, Limits};
use kiln_passes::rules::builtin_rules;
use std::collections::HashMap;
use std::path::Path;

fn run_case(graph: &Graph, dir: &Path, case: &str, inputs: &[&str]) -> Tensor {
    let feeds: HashMap<String, Tensor> = inputs
        .iter()
        .map(|n| {
            (
                n.to_string(),
                read_npy(&dir.join(format!("{case}.{n}.npy"))).unwrap(),
            )
        })
        .collect();
    interp::run(graph, &feeds).unwrap().remove(0).1
}

/// Optimises `model`, checks outputs on every case, and returns the histograms before/after.
fn check(
    model: &Path,
    dir: &Path,
    cases: &[&str],
    inputs: &[&str],
    output: &str,
) -> (Graph, Graph) {
    let graph = load_model(model).unwrap();
    let (optimized, report) = optimize(&graph, &builtin_rules(), &Limits::default()).unwrap();
    let seconds = (report.saturate_time + report.extract_time).as_secs_f64();
    println!(
        "{}: rules {:?}; {} e-nodes; saturate+extract {:.1} ms; est. cost {:.3} -> {:.3} ms",
        model.display(),
        report.rules_fired,
        report.egraph_nodes,
        seconds * 1e3,
        report.cost_before * 1e3,
        report.cost_after * 1e3
    );
    assert!(report.cost_after <= report.cost_before);
    for case in cases {
        let expected = read_npy(&dir.join(format!("{case}.{output}.npy"))).unwrap();
        let err =
            common::max_abs_diff(&run_case(&optimized, dir, case, inputs), &expected).unwrap();
        println!("  {case}: optimised max abs error {err:.3e}");
        assert!(err <= 1e-4, "{case}: {err}");
    }
    (graph, optimized)
}

fn count(g: &Graph, kind: OpKind) -> usize {
    g.op_histogram().get(&kind).copied().unwrap_or(0)
}

/// The input lists of `g`'s ops of `kind`, the first `n` inputs of each, sorted.
fn operands(g: &Graph, kind: OpKind, n: usize) -> Vec<Vec<Option<kiln_ir::ValueId>>> {
    g.topo_order()
        .into_iter()
        .map(|id| g.node(id))
        .filter(|node| node.op().is_some_and(|op| op.kind == kind))
        .map(|node| {
            let mut inputs: Vec<_> = node.inputs.iter().take(n).copied().collect();
            inputs.sort();
            inputs
        })
        .collect()
}

/// No `Add` of `g` adds what one of its residual norms (`norm`) adds: the norm's sum output
/// is the residual stream, not a second kernel beside it.
fn no_add_beside_skip_norms(g: &Graph, norm: OpKind) {
    let adds = operands(g, OpKind::Add, 2);
    for inputs in operands(g, norm, 2) {
        assert!(!adds.contains(&inputs), "an Add beside a {norm}");
    }
}

/// The export forms of a fixture: torch's dynamo exporter and its legacy one.
const EXPORTS: [&str; 2] = ["model.onnx", "model.legacy.onnx"];

/// The fixture `name` in its `export` form, before and after optimisation.
fn fixture(name: &str, export: &str) -> (Graph, Graph) {
    let dir = common::model_dir(name);
    check(
        &dir.join(export),
        &dir.join("io"),
        &["b1_s16", "b2_s33"],
        &["input_ids", "attention_mask"],
        "output",
    )
}

#[test]
fn bert_attention_and_gelu_fuse() {
    for export in EXPORTS {
        bert_family_fuses("bert", export);
    }
}

#[test]
fn distilbert_attention_and_gelu_fuse() {
    for export in EXPORTS {
        bert_family_fuses("distilbert", export);
    }
}

fn bert_family_fuses(name: &str, export: &str) {
    let (before, after) = fixture(name, export);
    assert_eq!(
        count(&after, OpKind::FusedAttention),
        count(&before, OpKind::Softmax)
    );
    assert_eq!(
        count(&after, OpKind::Softmax) + count(&after, OpKind::Erf),
        0
    );
    // The legacy export (opset 14) writes each LayerNorm out, with two ReduceMeans.
    let norms =
        count(&after, OpKind::LayerNormalization) + count(&after, OpKind::SkipLayerNormalization);
    let decomposed = count(&before, OpKind::ReduceMean) / 2;
    assert_eq!(
        norms,
        count(&before, OpKind::LayerNormalization) + decomposed
    );
    assert_eq!(count(&after, OpKind::ReduceMean), 0, "{name} {export}");
    assert!(
        count(&after, OpKind::SkipLayerNormalization) >= 4,
        "residual adds fuse into the norms"
    );
    no_add_beside_skip_norms(&after, OpKind::SkipLayerNormalization);
    // Q, K and V of a layer read one input: extraction takes the merged projection.
    assert_eq!(
        count(&after, OpKind::Split),
        count(&after, OpKind::FusedAttention),
        "{name} {export}"
    );
}

#[test]
fn gpt2_attention_and_gelu_tanh_fuse() {
    for export in EXPORTS {
        gpt2_fuses(export);
    }
}

fn gpt2_fuses(export: &str) {
    let (before, after) = fixture("gpt2", export);
    assert_eq!(
        count(&after, OpKind::FusedAttention),
        count(&before, OpKind::Softmax)
    );
    assert_eq!(
        count(&after, OpKind::Tanh) + count(&after, OpKind::Softmax),
        0
    );
    assert!(
        count(&after, OpKind::SkipLayerNormalization) >= 4,
        "residual adds fuse into the norms"
    );
    assert_eq!(count(&after, OpKind::Gelu), count(&before, OpKind::Tanh));
    assert!(
        count(&after, OpKind::SkipLayerNormalization) >= 4,
        "residual adds fuse into the norms"
    );
}

#[test]
fn llama_attention_rmsnorm_swiglu_rope_fuse() {
    for export in EXPORTS {
        llama_fuses(export);
    }
}

fn llama_fuses(export: &str) {
    let (before, after) = fixture("llama", export);
    assert_eq!(
        count(&after, OpKind::FusedAttention),
        count(&before, OpKind::Softmax)
    );
    let norms = count(&after, OpKind::RMSNormalization)
        + count(&after, OpKind::SkipSimplifiedLayerNormalization);
    assert_eq!(norms, count(&before, OpKind::ReduceMean));
    assert!(
        count(&after, OpKind::SkipSimplifiedLayerNormalization) >= 4,
        "residual adds fuse into the norms"
    );
    no_add_beside_skip_norms(&after, OpKind::SkipSimplifiedLayerNormalization);
    assert_eq!(
        count(&after, OpKind::SwiGlu),
        count(&before, OpKind::Sigmoid)
    );
    assert_eq!(
        count(&after, OpKind::RopeRotateHalf),
        count(&before, OpKind::Neg)
    );
    for kind in [
        OpKind::Softmax,
        OpKind::Sigmoid,
        OpKind::Sqrt,
        OpKind::Pow,
        OpKind::Neg,
    ] {
        assert_eq!(count(&after, kind), 0, "{kind} left");
    }
}

/// Every fixture's legacy export fuses into the same ops as its dynamo export, and no
/// decomposed softmax, norm, activation or rotation is left in either.
#[test]
fn legacy_exports_fuse_as_dynamo_exports_do() {
    let fused = [
        OpKind::FusedAttention,
        OpKind::FusedMatMul,
        OpKind::Gelu,
        OpKind::SwiGlu,
        OpKind::LayerNormalization,
        OpKind::SkipLayerNormalization,
        OpKind::RMSNormalization,
        OpKind::SkipSimplifiedLayerNormalization,
        OpKind::RopeRotateHalf,
    ];
    let left = [
        OpKind::Softmax,
        OpKind::Erf,
        OpKind::Tanh,
        OpKind::Pow,
        OpKind::Sqrt,
        OpKind::ReduceMean,
        OpKind::Neg,
        OpKind::Sigmoid,
    ];
    for name in ["bert", "distilbert", "llama", "gpt2", "gptneox", "phi"] {
        let [dynamo, legacy] = EXPORTS.map(|export| fixture(name, export).1);
        for kind in fused {
            let (d, l) = (count(&dynamo, kind), count(&legacy, kind));
            assert_eq!(
                d, l,
                "{name}: {kind} {d} in the dynamo export, {l} in the legacy one"
            );
        }
        for kind in left {
            assert_eq!(
                count(&legacy, kind),
                0,
                "{name}: {kind} left in the legacy export"
            );
        }
    }
}

/// Attention forms of older exports (`scripts/make_form_fixtures.py`): `Div` by √d, the mask
/// times -10000 or `finfo.min`, Q or K scaled before `Q Kᵀ`, and T5's unscaled attention with a
/// position bias in the mask. Each is one block and fuses into one FusedAttention.
#[test]
fn older_attention_forms_fuse() {
    let forms = common::model_dir("forms");
    for (form, inputs) in common::ATTENTION_FORMS {
        let model = forms.join(format!("{form}.onnx"));
        let io = forms.join(format!("{form}.io"));
        let (_, after) = check(&model, &io, &["b1_s16", "b2_s33"], inputs, "y");
        assert_eq!(count(&after, OpKind::FusedAttention), 1, "{form}");
        assert_eq!(count(&after, OpKind::Softmax), 0, "{form}");
    }
}

#[test]
fn minilm_int8_attention_and_gelu_fuse() {
    let dir = common::require_test_data("minilm");
    let model = std::fs::read_to_string(dir.join("model_path.txt")).unwrap();
    let (before, after) = check(
        Path::new(model.trim()),
        &dir,
        &["b1_s128", "b2_s37"],
        &["input_ids", "attention_mask", "token_type_ids"],
        "last_hidden_state",
    );
    assert_eq!(
        count(&after, OpKind::FusedAttention),
        count(&before, OpKind::Softmax)
    );
    assert_eq!(
        count(&after, OpKind::Softmax) + count(&after, OpKind::Erf),
        0
    );
}

#[test]
fn optimisation_is_deterministic() {
    let graph = load_model(&common::model_dir("llama").join("model.onnx")).unwrap();
    let rules = builtin_rules();
    let a = kiln_ir::text::print(&optimize(&graph, &rules, &Limits::default()).unwrap().0);
    let b = kiln_ir::text::print(&optimize(&graph, &rules, &Limits::default()).unwrap().0);
    assert_eq!(a, b);
}

#[test]
fn projection_merge_fires_and_keeps_values() {
    let mut graph = Graph::new();
    let x = graph
        .add_input(
            "x",
            kiln_ir::DType::F32,
            vec![2i64.into(), 5i64.into(), 8i64.into()],
        )
        .unwrap();
    let mut outputs = vec![];
    for (i, name) in ["q", "k", "v"].into_iter().enumerate() {
        let values = (0..64)
            .map(|j| ((j * 7 + i * 13) % 17) as f32 / 17.0 - 0.5)
            .collect();
        let w = Tensor::from_vec(&[8, 8], values).unwrap();
        let w = graph
            .add_constant(&format!("w{name}"), w.to_data())
            .unwrap();
        let y = graph
            .add_op(
                name,
                kiln_ir::Op::plain(OpKind::MatMul),
                vec![Some(x), Some(w)],
                &[name.to_string()],
            )
            .unwrap();
        outputs.push((name.to_string(), y[0]));
    }
    graph.set_outputs(outputs);
    let rules: Vec<_> = builtin_rules()
        .into_iter()
        .filter(|r| r.name == "merge-projections")
        .collect();
    let (optimized, report) = optimize(&graph, &rules, &Limits::default()).unwrap();
    assert_eq!(
        report.rules_fired.get("merge-projections"),
        Some(&3),
        "one match, three unions"
    );
    let x = Tensor::from_vec(
        &[2, 5, 8],
        (0..80).map(|i| (i as f32 * 0.37).sin()).collect(),
    )
    .unwrap();
    let feeds = HashMap::from([("x".to_string(), x)]);
    assert_eq!(
        count(&optimized, OpKind::MatMul),
        1,
        "the merged product is extracted"
    );
    assert_eq!(count(&optimized, OpKind::Split), 1);
    assert_eq!(
        interp::run(&optimized, &feeds).unwrap(),
        interp::run(&graph, &feeds).unwrap()
    );
}

/// Every built-in rule is either proved on random inputs by `kiln rules check` or fires on a
/// model whose optimised outputs the tests above compare with the references.
#[test]
fn every_builtin_rule_is_covered() {
    use kiln_passes::check::{check_rules, CheckOutcome};
    let rules = builtin_rules();
    let mut covered: std::collections::BTreeSet<String> = check_rules(&rules, 0x5eed, 5)
        .into_iter()
        .filter(|(_, o)| matches!(o, CheckOutcome::Passed { .. }))
        .map(|(n, _)| n)
        .collect();
    let mut models: Vec<std::path::PathBuf> = ["bert", "gpt2", "llama"]
        .iter()
        .map(|m| common::model_dir(m).join("model.onnx"))
        .collect();
    let minilm = common::require_test_data("minilm").join("model_path.txt");
    models.push(std::fs::read_to_string(minilm).unwrap().trim().into());
    for model in models {
        let graph = load_model(&model).unwrap();
        let (_, report) = optimize(&graph, &rules, &Limits::default()).unwrap();
        covered.extend(report.rules_fired.into_keys());
    }
    // Rules the checker cannot instantiate (a Cast needs its target type; Reshape needs shape
    // constants), exercised on a small graph whose outputs are compared here.
    let small = kiln_ir::text::parse(concat!(
        "kiln graph v1\n",
        "input %x: f32[2, 6]\ninput %h: f16[3]\ninput %b: bf16[3]\ninput %i: i32[3]\n",
        "input %m: i64[2, 1]\n",
        "const %s1: i64[2] = [3, 4]\nconst %s2: i64[1] = [12]\nconst %s3: i64[2] = [2, 6]\n",
        "%me = Expand(%m, %s3)\n%mf = Cast[to=\"f32\"](%me)\n",
        "%c = Cast[to=\"f32\"](%x)\n%r1 = Reshape[allowzero=0](%c, %s1)\n",
        "%r2 = Reshape[allowzero=1](%r1, %s2)\n",
        "%h1 = Cast[to=\"f32\"](%h)\n%h2 = Cast[to=\"f16\"](%h1)\n",
        "%b1 = Cast[to=\"f32\"](%b)\n%b2 = Cast[to=\"bf16\"](%b1)\n",
        "%i1 = Cast[to=\"i64\"](%i)\n%i2 = Cast[to=\"i32\"](%i1)\n",
        "output y = %r2\noutput h = %h2\noutput b = %b2\noutput i = %i2\noutput m = %mf\n",
    ))
    .unwrap();
    let (optimized, report) = optimize(&small, &rules, &Limits::default()).unwrap();
    let feeds = HashMap::from([
        (
            "x".to_string(),
            Tensor::from_vec(&[2, 6], (0..12).map(|i| i as f32 - 5.5).collect()).unwrap(),
        ),
        (
            "h".to_string(),
            Tensor::from_vec(&[3], vec![0.5f32, -2.25, 7.0])
                .unwrap()
                .cast(kiln_ir::DType::F16),
        ),
        (
            "b".to_string(),
            Tensor::from_vec(&[3], vec![0.5f32, -2.25, 7.0])
                .unwrap()
                .cast(kiln_ir::DType::BF16),
        ),
        (
            "i".to_string(),
            Tensor::from_vec(&[3], vec![1i32, -7, 1 << 30]).unwrap(),
        ),
        (
            "m".to_string(),
            Tensor::from_vec(&[2, 1], vec![1i64, 0]).unwrap(),
        ),
    ]);
    assert_eq!(
        interp::run(&optimized, &feeds).unwrap(),
        interp::run(&small, &feeds).unwrap()
    );
    // Softmax written out, on a graph whose outputs are compared.
    let softmax = kiln_ir::text::parse(concat!(
        "kiln graph v1\ninput %x: f32[2, 5]\nconst %axes: i64[1] = [-1]\n",
        "%e = Exp(%x)\n%s = ReduceSum[axes=[-1]](%e)\n%y = Div(%e, %s)\noutput y = %y\n",
    ))
    .unwrap();
    let (soft_opt, soft_report) = optimize(&softmax, &rules, &Limits::default()).unwrap();
    let feeds = HashMap::from([(
        "x".to_string(),
        Tensor::from_vec(&[2, 5], (0..10).map(|i| i as f32 * 0.3).collect()).unwrap(),
    )]);
    let (got, want) = (
        interp::run(&soft_opt, &feeds).unwrap(),
        interp::run(&softmax, &feeds).unwrap(),
    );
    assert!(common::max_abs_diff(&got[0].1, &want[0].1).unwrap() <= 1e-6);
    assert!(soft_opt.op_histogram().contains_key(&OpKind::Softmax));
    covered.extend(soft_report.rules_fired.into_keys());
    covered.extend(report.rules_fired.into_keys());
    let missing: Vec<&str> = rules
        .iter()
        .map(|r| r.name.as_str())
        .filter(|n| !covered.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "rules neither checked nor exercised: {missing:?}"
    );
}

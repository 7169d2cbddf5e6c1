//! The ONNX backend node tests (from the onnx==1.22.0 wheel, fetched by
//! `scripts/fetch-test-data.sh`) for every op kiln imports, run on the reference interpreter.
//!
//! The op set's tests that use element types outside kiln's dtype set (f64, float8, int2/int4,
//! i16, u16, u32, u64, strings, ...) or non-tensor values are counted apart: the 95% target is
//! over the tests on kiln's dtypes, and both figures are printed.
//!
//! Every test that passes on the interpreter must also pass on the compiled path (optimised,
//! kernels with interpreter fallbacks), with kernels from Cranelift and from LLVM.
//!
//! `tests/conformance/allowlist.txt` names the tests expected to pass; every other test of the
//! op set must be listed with a reason in `tests/conformance/excluded.txt`. The test fails if an
//! allow-listed test fails, if a test of the op set is in neither list, or if fewer than 95% pass.
//! Set `KILN_CONFORMANCE_BLESS=1` to rewrite the allow-list from the passing tests (and append
//! newly failing tests to the exclusions with their error as a provisional reason).

mod common;

use kiln_frontends::onnx::load_model;
use kiln_frontends::onnx::proto::{type_proto, ModelProto, ValueInfoProto};
use kiln_frontends::onnx::tensor::{dtype_from_onnx, load_model_proto, read_tensor_pb};
use kiln_ir::Tensor;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The ONNX op types kiln imports (the op set whose node tests count).
const OP_SET: &[&str] = &[
    "MatMul",
    "Gemm",
    "Einsum",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Neg",
    "Abs",
    "Exp",
    "Log",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Gelu",
    "Softmax",
    "LogSoftmax",
    "LayerNormalization",
    "RMSNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "Transpose",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Concat",
    "Split",
    "Slice",
    "Gather",
    "GatherElements",
    "GatherND",
    "TensorScatter",
    "Expand",
    "Tile",
    "Where",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "IsNaN",
    "Cast",
    "CastLike",
    "Shape",
    "Size",
    "ConstantOfShape",
    "Constant",
    "Range",
    "Trilu",
    "CumSum",
    "Identity",
    "Dropout",
    "Attention",
    "RotaryEmbedding",
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "Max",
    "Min",
    "Mod",
    "Sin",
    "Cos",
    "Floor",
    "Ceil",
    "Round",
    "Clip",
    "Sum",
];

fn lists_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// The op a node test exercises (the single node of its non-expanded model), and whether the
/// test stays within kiln's dtypes.
fn classify_test(node_dir: &Path, test: &str) -> Option<(String, bool)> {
    let base = test.strip_suffix("_expanded").unwrap_or(test);
    let model = load_model_proto(&node_dir.join(base).join("model.onnx")).ok()?;
    let op = match model.graph.as_ref()?.node.as_slice() {
        [n] => n.op_type.clone()?,
        _ => return None,
    };
    Some((op, kiln_dtypes_only(&model)))
}

/// True if every graph input and output is a tensor of a kiln dtype and every dtype named by a
/// node attribute (`to`, `output_dtype`, a tensor value) is one too.
fn kiln_dtypes_only(model: &ModelProto) -> bool {
    let Some(g) = &model.graph else { return false };
    let supported = |code: i32| dtype_from_onnx(code).is_ok();
    let io_ok = |vi: &ValueInfoProto| match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => supported(t.elem_type.unwrap_or(0)),
        _ => false,
    };
    let attrs_ok = g
        .node
        .iter()
        .flat_map(|n| &n.attribute)
        .all(|a| match a.name.as_deref() {
            Some("to" | "output_dtype") => a.i.is_none_or(|c| c == 0 || supported(c as i32)),
            _ => {
                a.t.as_ref()
                    .is_none_or(|t| supported(t.data_type.unwrap_or(0)))
            }
        });
    g.input.iter().all(io_ok)
        && g.output.iter().all(io_ok)
        && attrs_ok
        && g.initializer
            .iter()
            .all(|t| supported(t.data_type.unwrap_or(0)))
}

/// How a conformance test is run.
#[derive(Clone)]
enum Backend {
    Interpreter,
    Compiled(kiln_codegen::Backend),
}

/// Runs one test directory on `backend`; `Err` says why it failed.
fn run_test(dir: &Path, backend: Backend) -> Result<(), String> {
    let graph = load_model(&dir.join("model.onnx"))?;
    let input_names: Vec<String> = graph
        .inputs()
        .map(|v| graph.value(v).name.clone())
        .collect();
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    for set in sets {
        let mut feeds = HashMap::new();
        for i in 0.. {
            let p = set.join(format!("input_{i}.pb"));
            if !p.exists() {
                break;
            }
            let (name, t) = read_tensor_pb(&p)?;
            let name = if name.is_empty() {
                input_names.get(i).cloned().unwrap_or_default()
            } else {
                name
            };
            feeds.insert(name, t);
        }
        // Inputs a test file omits are optional inputs the model declares but does not need.
        let outputs = match &backend {
            Backend::Interpreter => {
                kiln_ir::interp::run(&graph, &feeds).map_err(|e| e.to_string())?
            }
            Backend::Compiled(backend) => {
                common::run_compiled(&graph, &feeds, &common::options(1, backend.clone()))?
            }
        };
        for (j, (name, actual)) in outputs.iter().enumerate() {
            let (_, expected) = read_tensor_pb(&set.join(format!("output_{j}.pb")))?;
            compare(actual, &expected).map_err(|e| format!("output `{name}`: {e}"))?;
        }
    }
    Ok(())
}

/// ONNX backend-test tolerance: |a - e| <= 1e-7 + 1e-3 * |e| (rtol widened for f16/bf16);
/// NaN matches NaN, integers and bools must be equal.
fn compare(actual: &Tensor, expected: &Tensor) -> Result<(), String> {
    common::max_abs_diff(actual, expected)?;
    let rtol = match expected.dtype() {
        kiln_ir::DType::F16 | kiln_ir::DType::BF16 => 1e-2,
        _ => 1e-3,
    };
    let (a, e) = (actual.to_f64_array(), expected.to_f64_array());
    for (i, (x, y)) in a.iter().zip(e.iter()).enumerate() {
        let ok = (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-7 + rtol * y.abs();
        if !ok {
            return Err(format!("element {i} is {x}, expected {y}"));
        }
    }
    Ok(())
}

fn read_list(name: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(lists_dir().join(name)).unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((t, reason)) => (t.to_string(), reason.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

#[test]
fn onnx_node_tests() {
    let node_dir = common::require_test_data("onnx-1.22.0/node");
    let mut tests: Vec<String> = std::fs::read_dir(&node_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    tests.sort();
    let mut results: BTreeMap<String, Result<(), String>> = BTreeMap::new();
    let mut foreign_dtype: BTreeSet<String> = BTreeSet::new();
    let mut compiled_failures: Vec<String> = vec![];
    for test in &tests {
        let Some((op, in_scope)) = classify_test(&node_dir, test) else {
            continue;
        };
        if !OP_SET.contains(&op.as_str()) {
            continue;
        }
        if !in_scope {
            foreign_dtype.insert(test.clone());
        }
        let dir = node_dir.join(test);
        let outcome = std::panic::catch_unwind(|| run_test(&dir, Backend::Interpreter))
            .unwrap_or_else(|_| Err("panicked".to_string()));
        if outcome.is_ok() {
            for backend in [
                kiln_codegen::Backend::cranelift(),
                kiln_codegen::Backend::llvm(),
            ] {
                let run = || run_test(&dir, Backend::Compiled(backend.clone()));
                let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
                    .unwrap_or_else(|_| Err("panicked".to_string()));
                if let Err(e) = compiled {
                    compiled_failures.push(format!("{test} ({}): {e}", backend.name()));
                }
            }
        }
        results.insert(test.clone(), outcome);
    }
    let passed: BTreeSet<&String> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(t, _)| t)
        .collect();
    let allow = read_list("allowlist.txt");
    let excluded = read_list("excluded.txt");

    if std::env::var_os("KILN_CONFORMANCE_BLESS").is_some() {
        let allow_text: String = passed.iter().map(|t| format!("{t}\n")).collect();
        std::fs::write(lists_dir().join("allowlist.txt"), allow_text).unwrap();
        let mut ex: BTreeMap<String, String> = excluded.clone();
        ex.retain(|t, _| results.get(t).is_some_and(|r| r.is_err()));
        for (t, r) in &results {
            if let Err(e) = r {
                ex.entry(t.clone()).or_insert_with(|| e.replace('\n', " "));
            }
        }
        let ex_text: String = ex.iter().map(|(t, r)| format!("{t}  {r}\n")).collect();
        std::fs::write(lists_dir().join("excluded.txt"), ex_text).unwrap();
    }

    let total = results.len();
    let in_scope = total - foreign_dtype.len();
    let passed_in_scope = passed
        .iter()
        .filter(|t| !foreign_dtype.contains(**t))
        .count();
    let pct = 100.0 * passed_in_scope as f64 / in_scope.max(1) as f64;
    println!(
        "ONNX node tests of kiln's op set on kiln's dtypes: {passed_in_scope} of {in_scope} pass ({pct:.1}%)"
    );
    println!(
        "all node tests of the op set: {} of {total} pass ({:.1}%); {} use dtypes outside kiln's set",
        passed.len(),
        100.0 * passed.len() as f64 / total.max(1) as f64,
        foreign_dtype.len()
    );
    let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (t, r) in &excluded {
        by_reason.entry(r.as_str()).or_default().push(t.as_str());
    }
    println!("excluded ({}), by reason:", excluded.len());
    for (reason, ts) in &by_reason {
        println!("  {} x {reason}", ts.len());
    }

    println!(
        "compiled path (optimised, Cranelift and LLVM kernels with interpreter fallback): {} of {} runs of the passing tests also pass",
        2 * passed.len() - compiled_failures.len(),
        2 * passed.len()
    );
    let mut problems: Vec<String> = compiled_failures
        .iter()
        .map(|f| format!("compiled path: {f}"))
        .collect();
    for t in allow.keys() {
        match results.get(t) {
            Some(Ok(())) => {}
            Some(Err(e)) => problems.push(format!("{t}: allow-listed but fails: {e}")),
            None => problems.push(format!(
                "{t}: allow-listed but not found among the op set's tests"
            )),
        }
    }
    for (t, r) in &results {
        if !allow.contains_key(t) && !excluded.contains_key(t) {
            problems.push(format!(
                "{t}: in neither list ({})",
                r.as_ref().err().map_or("passes", |e| e.as_str())
            ));
        }
        if r.is_ok() && excluded.contains_key(t) {
            println!("note: {t} is excluded but passes; move it to the allow-list");
        }
    }
    for p in &problems {
        println!("{p}");
    }
    assert!(
        problems.is_empty(),
        "{} conformance problems (listed above)",
        problems.len()
    );
    assert!(
        pct >= 95.0,
        "only {pct:.1}% of the op set's node tests pass (target 95%)"
    );
}

/// `Attention` cases drawn by `scripts/attention_cases.py` over what opsets 23–25 define
/// (windows, external caches with causal offsets, fully masked rows, every mask rank, softcap,
/// every `qk_matmul_output_mode`), with the outputs of the `onnx.reference` that
/// `fetch-test-data.sh` installs: every one passes on the interpreter and on the compiled path
/// of both backends (whose kernels run causal left windows and leave right windows and
/// external caches to the interpreter).
#[test]
fn generated_attention_cases_match_the_onnx_reference() {
    let cases = test_dirs(&common::require_test_data("attention-cases"));
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let (runs, failures) = run_on_every_runner(&cases);
    println!(
        "generated Attention cases: {} of {runs} runs pass ({} cases x {} runners)",
        runs - failures.len(),
        cases.len(),
        RUNNERS.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Attention attribute values outside the specification, and an external cache longer than
/// the keys, are one-line errors naming the node, exit 2.
#[test]
fn attention_values_outside_the_specification_are_errors() {
    use common::cli::{failure, kiln};
    use kiln_frontends::onnx::proto::AttributeProto;
    use prost::Message;
    let root = common::require_test_data("attention-cases");
    let dir = common::TempDir::new("attention-bad");
    // A window of -2, and an output mode that does not exist.
    for (name, value) in [("left_window_size", -2), ("qk_matmul_output_mode", 7)] {
        let mut model = ModelProto::decode(
            std::fs::read(root.join("attention_000/model.onnx"))
                .unwrap()
                .as_slice(),
        )
        .unwrap();
        let node = &mut model.graph.as_mut().unwrap().node[0];
        node.name = Some("attn".into());
        node.attribute.retain(|a| a.name.as_deref() != Some(name));
        node.attribute.push(AttributeProto {
            name: Some(name.into()),
            i: Some(value),
            r#type: Some(2), // INT
            ..Default::default()
        });
        let path = dir.join(&format!("{name}.onnx"));
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        failure(
            &kiln(&["check", path.to_str().unwrap()]),
            &["`attn`", name, &value.to_string()],
        );
    }
    // nonpad_kv_seqlen beyond the keys.
    let case = (0..300)
        .map(|n| root.join(format!("attention_{n:03}")))
        .find(|c| {
            let model = load_model_proto(&c.join("model.onnx")).unwrap();
            model
                .graph
                .unwrap()
                .input
                .iter()
                .any(|i| i.name() == "nonpad_kv_seqlen")
        })
        .expect("a case with an external cache");
    let mut args = vec![
        "run".to_string(),
        case.join("model.onnx").display().to_string(),
    ];
    for i in 0.. {
        let pb = case.join(format!("test_data_set_0/input_{i}.pb"));
        if !pb.exists() {
            break;
        }
        let (name, mut tensor) = read_tensor_pb(&pb).unwrap();
        if name == "nonpad_kv_seqlen" {
            let too_long: Vec<i64> = tensor.to_i64_vec().iter().map(|_| 1000).collect();
            tensor = Tensor::from_vec(tensor.shape(), too_long).unwrap();
        }
        let npy = dir.join(&format!("{name}.npy"));
        kiln_ir::npy::write_npy(&npy, &tensor).unwrap();
        args.extend(["--input".into(), format!("{name}={}", npy.display())]);
    }
    args.extend(["--output-dir".into(), dir.join("out").display().to_string()]);
    failure(&kiln(&args), &["Attention", "nonpad_kv_seqlen[0] is 1000"]);
}

/// The node tests that the installed onnx's case generators write for the ops whose
/// specification changed after the 1.22 data (`scripts/onnx_node_cases.py`, run by
/// `fetch-test-data.sh`): `Attention` (windows, external caches, fully masked rows),
/// `RMSNormalization`, `RotaryEmbedding`, and opset 28's `Cast`, `QuantizeLinear`,
/// `DequantizeLinear`, `Mod` (floats without `fmod`) and `Einsum`. Every one on kiln's dtypes
/// passes on the interpreter and on the compiled path of both backends.
#[test]
fn newest_node_tests_of_the_changed_ops_pass() {
    let mut tests = test_dirs(&common::require_test_data("onnx-node-latest"));
    let all = tests.len();
    tests.retain(|t| kiln_dtypes_only(&load_model_proto(&t.join("model.onnx")).unwrap()));
    assert!(tests.len() >= 100, "{} tests", tests.len());
    let (runs, failures) = run_on_every_runner(&tests);
    println!(
        "newest node tests of the changed ops: {} of {runs} runs pass ({} tests on kiln's dtypes x \
         {} runners; {} more use other dtypes)",
        runs - failures.len(),
        tests.len(),
        RUNNERS.len(),
        all - tests.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The runners every generated test runs on: the interpreter and both compiled backends.
const RUNNERS: [fn() -> Backend; 3] = [
    || Backend::Interpreter,
    || Backend::Compiled(kiln_codegen::Backend::cranelift()),
    || Backend::Compiled(kiln_codegen::Backend::llvm()),
];

/// The test directories under `root`, sorted.
fn test_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// Runs every test of `tests` on every runner: the number of runs, and one line per failed
/// run (a panic counts as a failure).
fn run_on_every_runner(tests: &[PathBuf]) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    for test in tests {
        for (r, runner) in RUNNERS.iter().enumerate() {
            let outcome = std::panic::catch_unwind(|| run_test(test, runner()))
                .unwrap_or_else(|_| Err("panicked".into()));
            if let Err(e) = outcome {
                let name = test.file_name().unwrap().to_string_lossy();
                failures.push(format!("{name} (runner {r}): {e}"));
            }
        }
    }
    (tests.len() * RUNNERS.len(), failures)
}

/// The importer's declarations (`kiln_frontends::onnx::schema`) against the ONNX specification,
/// for every op of the op set at every opset 1–28 that defines it (`scripts/onnx_schemas.py`
/// dumps the installed onnx's schemas): an attribute the specification does not define at that
/// opset is refused; one it defines is either read (declared with the specification's type) or
/// refused with an error naming it, never ignored; more inputs than the specification allows are
/// refused.
#[test]
fn importer_declarations_follow_the_onnx_specification() {
    use kiln_frontends::onnx::schema::check_node;
    use kiln_ir::{Attr, Attrs};
    let path = common::require_test_data("onnx-schemas.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let dummy = |ty: &str| match ty {
        "INT" => Some(Attr::Int(0)),
        "FLOAT" => Some(Attr::Float(0.0)),
        "STRING" => Some(Attr::Str(String::new())),
        "INTS" => Some(Attr::Ints(vec![])),
        "FLOATS" => Some(Attr::Floats(vec![])),
        "TENSOR" => Some(Attr::Tensor(Tensor::scalar(0f32).to_data())),
        _ => None, // graphs, sparse tensors, type protos: no kiln op takes them
    };
    let (mut problems, mut read, mut refused, mut checked) = (vec![], 0, 0, 0);
    for op in OP_SET {
        let Some(versions) = json["ops"][op].as_object() else {
            continue; // not a default-domain op
        };
        let mut every_attr = BTreeMap::new();
        for spec in versions.values() {
            for (name, ty) in spec["attrs"].as_object().unwrap() {
                every_attr.insert(name.clone(), ty.as_str().unwrap().to_string());
            }
        }
        for (opset, spec) in versions {
            let opset: i64 = opset.parse().unwrap();
            // A variadic op has no upper bound (`null`).
            let lo = spec["min_inputs"].as_u64().unwrap() as usize;
            let hi = spec["max_inputs"].as_u64().map(|h| h as usize);
            let defined = spec["attrs"].as_object().unwrap();
            let required: Vec<(&str, Attr)> = spec["required"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| {
                    let n = n.as_str().unwrap();
                    Some((n, dummy(defined[n].as_str().unwrap())?))
                })
                .collect();
            // Input counts kiln accepts with the required attributes; none: kiln has no entry
            // for this opset (the importer reports the op unsupported there).
            let base = Attrs::from_pairs(&required);
            let bogus = Attrs::from_pairs(&[("kiln_audit_bogus", Attr::Int(0))]);
            if check_node("", op, opset, lo, &bogus).is_ok() {
                continue;
            }
            let most = hi.unwrap_or(lo + 8);
            let Some(n) = (0..=most + 1).find(|&n| check_node("", op, opset, n, &base).is_ok())
            else {
                continue;
            };
            checked += 1;
            if let Some(hi) = hi {
                if n > hi || check_node("", op, opset, hi + 1, &base).is_ok() {
                    problems.push(format!(
                        "{op}-{opset}: accepts more than the {hi} inputs it has"
                    ));
                }
            }
            for (name, ty) in &every_attr {
                if required.iter().any(|(r, _)| r == name) {
                    continue;
                }
                let Some(value) = dummy(ty) else { continue };
                let mut attrs = base.clone();
                attrs.set(name, value);
                let outcome = check_node("", op, opset, n, &attrs);
                match (defined.contains_key(name), outcome) {
                    (true, Ok(())) => read += 1,
                    (_, Err(e)) if e.contains(&format!("`{name}` is not one kiln's")) => {
                        refused += 1
                    }
                    (false, Ok(())) => problems.push(format!(
                        "{op}-{opset}: accepts `{name}`, which opset {opset} does not define"
                    )),
                    (_, Err(e)) => problems.push(format!("{op}-{opset}: `{name}` ({ty}): {e}")),
                }
            }
        }
    }
    println!(
        "importer declarations: {checked} op versions checked against onnx's schemas; \
         {read} attributes read, {refused} refused by name"
    );
    assert!(checked > 100, "{checked}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

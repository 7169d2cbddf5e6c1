//! End-to-end tests of the `kiln` binary (run as a subprocess, as a user would).
//!
//! They prove that:
//! - `kiln run` on the bert reference model writes `output.npy` matching the torch reference
//!   within 1e-4 and prints the output's name, dtype and shape;
//! - `kiln inspect` prints the inputs with their symbolic shapes (`i64[batch, seq]`), the op
//!   histogram and a parameter count consistent with the model's weights;
//! - `--help` works for the binary and for every subcommand it lists;
//! - every kind of bad input (corrupted or garbage model files, inconsistent initializers,
//!   broken external data, invalid declared dims, unsupported ops, wrong or conflicting `.npy`
//!   inputs, bad command-line specs) exits with code 2 and prints exactly one line on stderr,
//!   `error: ...`, naming the file, tensor, input or node at fault and the problem, never a
//!   panic.
//!
//! Corrupted models are derived from `tests/models/bert/model.onnx` at test time (by editing the
//! decoded proto with prost and re-encoding it) in temporary directories.

mod common;

use common::cli::{failure, kiln, success, text};
use common::TempDir;

use kiln_frontends::onnx::proto::tensor_proto::DataLocation;
use kiln_frontends::onnx::proto::tensor_shape_proto::dimension;
use kiln_frontends::onnx::proto::{type_proto, ModelProto, StringStringEntryProto, TensorProto};
use kiln_ir::npy::{read_npy, write_npy};
use kiln_ir::Tensor;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// ---------------------------------------------------------------------------------------------
// Helpers.

fn bert() -> PathBuf {
    common::model_dir("bert").join("model.onnx")
}

fn bert_io(case: &str, what: &str) -> PathBuf {
    common::model_dir("bert").join(format!("io/{case}.{what}.npy"))
}

/// `--input` arguments feeding bert's `b1_s16` fixtures.
fn bert_inputs() -> Vec<String> {
    ["input_ids", "attention_mask"]
        .iter()
        .flat_map(|n| {
            [
                "--input".to_string(),
                format!("{n}={}", bert_io("b1_s16", n).display()),
            ]
        })
        .collect()
}

/// `kiln run MODEL <inputs> --output-dir DIR/out`.
fn run_model(model: &Path, inputs: &[String], dir: &TempDir) -> Output {
    let mut args = vec!["run".to_string(), model.display().to_string()];
    args.extend(inputs.iter().cloned());
    args.extend(["--output-dir".into(), dir.join("out").display().to_string()]);
    kiln(&args)
}

fn bert_proto() -> ModelProto {
    ModelProto::decode(std::fs::read(bert()).unwrap().as_slice()).unwrap()
}

/// Writes bert, edited by `edit`, as `dir/model.onnx`.
fn edited_bert(dir: &TempDir, edit: impl FnOnce(&mut ModelProto)) -> PathBuf {
    let mut model = bert_proto();
    edit(&mut model);
    let path = dir.join("model.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    path
}

fn initializer<'a>(model: &'a mut ModelProto, name: &str) -> &'a mut TensorProto {
    model
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("bert has an initializer `{name}`"))
}

/// Sets dim `i` of graph input `name`'s declared shape.
fn set_input_dim(model: &mut ModelProto, name: &str, i: usize, value: i64) {
    let input = model
        .graph
        .as_mut()
        .unwrap()
        .input
        .iter_mut()
        .find(|v| v.name.as_deref() == Some(name))
        .unwrap();
    let Some(type_proto::Value::TensorType(t)) =
        input.r#type.as_mut().and_then(|t| t.value.as_mut())
    else {
        panic!("input `{name}` is a tensor");
    };
    t.shape.as_mut().unwrap().dim[i].value = Some(dimension::Value::DimValue(value));
}

fn entry(key: &str, value: &str) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value.into()),
    }
}

/// Moves initializer `name`'s data to an external file `weights.bin` (not written here).
fn make_external(model: &mut ModelProto, name: &str) -> usize {
    let t = initializer(model, name);
    let len = t.raw_data.take().unwrap().len();
    t.data_location = Some(DataLocation::External as i32);
    t.external_data = vec![
        entry("location", "weights.bin"),
        entry("offset", "0"),
        entry("length", &len.to_string()),
    ];
    len
}

/// Writes `t` as `dir/name` and returns the path.
fn npy(dir: &TempDir, name: &str, t: &Tensor) -> PathBuf {
    let path = dir.join(name);
    write_npy(&path, t).unwrap();
    path
}

fn ids(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_vec(shape, (0..n as i64).map(|i| 1 + i % 900).collect()).unwrap()
}

fn mask(shape: &[usize]) -> Tensor {
    Tensor::from_vec(shape, vec![1i64; shape.iter().product()]).unwrap()
}

fn input_args(pairs: &[(&str, &Path)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(n, p)| ["--input".to_string(), format!("{n}={}", p.display())])
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Working commands.

#[test]
fn run_bert_matches_the_reference() {
    for case in ["b1_s16", "b2_s33"] {
        let dir = TempDir::new("run");
        let inputs = input_args(&[
            ("input_ids", &bert_io(case, "input_ids")),
            ("attention_mask", &bert_io(case, "attention_mask")),
        ]);
        let stdout = success(&run_model(&bert(), &inputs, &dir));
        let written = dir.join("out/output.npy");
        let actual = read_npy(&written).unwrap();
        let expected = read_npy(&bert_io(case, "output")).unwrap();
        let diff = common::max_abs_diff(&actual, &expected).unwrap();
        assert!(diff <= 1e-4, "{case}: max abs diff {diff}");
        // One line per output: name, dtype, shape, summary and where it went.
        let shape = format!("{:?}", expected.shape());
        let line = stdout
            .lines()
            .find(|l| l.starts_with("output: "))
            .unwrap_or_else(|| panic!("no `output:` line in {stdout}"));
        assert!(line.contains("f32") && line.contains(&shape), "{line}");
        assert!(line.contains(&written.display().to_string()), "{line}");
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
    }
}

#[test]
fn inspect_bert() {
    let stdout = success(&kiln(&["inspect".as_ref(), bert().as_os_str()]));
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    for expected in [
        "input_ids: i64[batch, seq]",
        "attention_mask: i64[batch, seq]",
        "output: f32[batch, seq, 64]",
    ] {
        assert!(lines.contains(&expected), "`{expected}` in:\n{stdout}");
    }
    // The histogram: "ops (N nodes):" then one "Kind count" line per kind, summing to N.
    let at = lines
        .iter()
        .position(|l| l.starts_with("ops ("))
        .expect("an ops line");
    let total: usize = lines[at]
        .trim_start_matches("ops (")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut histogram = std::collections::HashMap::new();
    for l in &lines[at + 1..] {
        let mut parts = l.split_whitespace();
        let (Some(kind), Some(count), None) = (parts.next(), parts.next(), parts.next()) else {
            break;
        };
        let Ok(count) = count.parse::<usize>() else {
            break;
        };
        histogram.insert(kind.to_string(), count);
    }
    assert_eq!(histogram.values().sum::<usize>(), total, "{stdout}");
    // bert: 2 layers of 4 attention + 2 feed-forward matmuls, 2 softmaxes, 5 layer norms.
    for (kind, count) in [
        ("MatMul", 16),
        ("Softmax", 2),
        ("LayerNormalization", 5),
        ("Erf", 2),
    ] {
        assert_eq!(histogram.get(kind), Some(&count), "{kind} in:\n{stdout}");
    }
    // "parameters: N (B bytes)": every stored weight, and no more than the file's initializers.
    let params = lines
        .iter()
        .find_map(|l| l.strip_prefix("parameters: "))
        .expect("a parameters line");
    let (count, bytes) = params.split_once(" (").unwrap();
    let count: usize = count.parse().unwrap();
    let bytes: usize = bytes.trim_end_matches(" bytes)").parse().unwrap();
    let sizes: Vec<(i32, usize)> = bert_proto()
        .graph
        .unwrap()
        .initializer
        .iter()
        .map(|t| {
            let n = t.dims.iter().product::<i64>() as usize;
            (t.data_type.unwrap(), n)
        })
        .collect();
    let initializers: usize = sizes.iter().map(|(_, n)| n).sum();
    // The f32 weight matrices, embeddings and norms (shape folding may drop small constants).
    let weights: usize = sizes
        .iter()
        .filter(|&&(dtype, n)| dtype == 1 && n >= 64)
        .map(|(_, n)| n)
        .sum();
    assert!(weights > 130_000, "{weights}");
    assert!(
        (weights..=initializers).contains(&count),
        "{count} parameters, expected {weights} to {initializers}"
    );
    assert!(bytes >= 4 * weights, "{bytes} bytes for {count} parameters");
}

#[test]
fn help_works_for_every_subcommand() {
    let top = success(&kiln(&["--help"]));
    assert!(top.contains("Usage: kiln"), "{top}");
    // The subcommands listed under "Commands:" (clap's own `help` included).
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for expected in ["run", "inspect", "help"] {
        assert!(commands.contains(&expected), "{commands:?} in:\n{top}");
    }
    for cmd in commands {
        if cmd == "help" {
            // clap's own `help` takes no `--help`; `kiln help` alone prints the top-level help.
            assert_eq!(success(&kiln(&["help"])), top);
            continue;
        }
        let out = success(&kiln(&[cmd, "--help"]));
        assert!(out.contains(&format!("Usage: kiln {cmd}")), "{cmd}:\n{out}");
        assert_eq!(
            success(&kiln(&[cmd, "-h"])).lines().next(),
            out.lines().next()
        );
        let via_help = success(&kiln(&["help", cmd]));
        assert_eq!(
            via_help, out,
            "`kiln help {cmd}` and `kiln {cmd} --help` differ"
        );
    }
    let run = success(&kiln(&["run", "--help"]));
    for flag in ["--input", "--output-dir", "NAME=FILE.npy"] {
        assert!(run.contains(flag), "{flag} in:\n{run}");
    }
    let version = success(&kiln(&["--version"]));
    assert!(version.starts_with("kiln "), "{version}");
}

/// `--backend` takes the names of the backends this build has, each listed with its line in
/// `--help`, plus `interp` where the command can run the reference interpreter; a wrong name
/// is a usage error that lists them.
#[test]
fn backends_are_listed_in_help_and_checked() {
    let backends = kiln_codegen::backends();
    for (cmd, interp) in [
        ("run", true),
        ("generate", true),
        ("compile", false),
        ("bench", false),
        ("check", false),
        ("explain", false),
    ] {
        let help = success(&kiln(&[cmd, "--help"]));
        assert!(help.contains("--backend <NAME>"), "{cmd}:\n{help}");
        assert!(help.contains("[default: cranelift]"), "{cmd}:\n{help}");
        // clap lists each as `- NAME:  DESCRIPTION`, the descriptions aligned.
        let listed = |name: &str| {
            help.lines().find_map(|l| {
                let rest = l.trim().strip_prefix("- ")?.strip_prefix(name)?;
                Some(rest.strip_prefix(':')?.trim().to_string())
            })
        };
        for b in &backends {
            let description = listed(b.name());
            assert_eq!(
                description.as_deref(),
                Some(b.description()),
                "{cmd}:\n{help}"
            );
        }
        assert_eq!(listed("interp").is_some(), interp, "{cmd}:\n{help}");
        let out = kiln(&[cmd, "model.onnx", "--backend", "frob"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        let mut names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
        if interp {
            names.push("interp");
        }
        let listed = format!("[possible values: {}]", names.join(", "));
        assert!(stderr.contains("'frob'"), "{cmd}: {stderr}");
        assert!(stderr.contains(&listed), "{listed} in {cmd}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{cmd}: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// Bad model files: each is reported by both `inspect` and `run`.

/// Checks that `inspect` and `run` (with valid inputs) both fail on `model` with one line
/// naming the model file and containing `needles`.
fn bad_model(model: &Path, dir: &TempDir, needles: &[&str]) -> String {
    let path = model.display().to_string();
    let mut all = vec![path.as_str()];
    all.extend(needles);
    let line = failure(&kiln(&["inspect".as_ref(), model.as_os_str()]), &all);
    failure(&run_model(model, &bert_inputs(), dir), &all);
    assert!(
        !dir.join("out").exists(),
        "no output directory for a failed run"
    );
    line
}

#[test]
fn truncated_protobuf() {
    let dir = TempDir::new("truncated");
    let bytes = std::fs::read(bert()).unwrap();
    let path = dir.join("model.onnx");
    // Cut in a node, in an initializer's data and in the trailing opset entries; then empty.
    for cut in [1000, bytes.len() / 2, bytes.len() - 3] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        bad_model(&path, &dir, &["not a valid ONNX model", "truncated"]);
    }
    std::fs::write(&path, b"").unwrap();
    bad_model(&path, &dir, &["not a valid ONNX model", "empty"]);
}

#[test]
fn garbage_bytes() {
    let dir = TempDir::new("garbage");
    let path = dir.join("model.onnx");
    // Deterministic noise (an LCG), then text that is not protobuf at all.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    std::fs::write(&path, noise).unwrap();
    bad_model(&path, &dir, &["not a valid ONNX model"]);
    std::fs::write(&path, "{\"this is\": \"json, not an ONNX model\"}\n").unwrap();
    bad_model(&path, &dir, &["not a valid ONNX model"]);
}

#[test]
fn initializer_data_length_disagrees_with_dims() {
    let dir = TempDir::new("init-len");
    // val_71 is a 64x64 f32 weight (16384 bytes); claim 64x65.
    let model = edited_bert(&dir, |m| initializer(m, "val_71").dims = vec![64, 65]);
    bad_model(
        &model,
        &dir,
        &[
            "tensor `val_71`",
            "16384 bytes of data",
            "f32[64, 65]",
            "16640",
        ],
    );
}

#[test]
fn external_data_file_is_missing() {
    let dir = TempDir::new("ext-missing");
    let model = edited_bert(&dir, |m| {
        make_external(m, "val_71");
    });
    bad_model(
        &model,
        &dir,
        &[
            "tensor `val_71`",
            "cannot read external data file",
            "weights.bin",
        ],
    );
}

#[test]
fn external_data_file_is_too_short() {
    let dir = TempDir::new("ext-short");
    let mut len = 0;
    let model = edited_bert(&dir, |m| len = make_external(m, "val_71"));
    std::fs::write(dir.join("weights.bin"), vec![0u8; len / 2]).unwrap();
    bad_model(
        &model,
        &dir,
        &[
            "tensor `val_71`",
            "past the end of `weights.bin`",
            &format!("length {len}"),
            &format!("({} bytes)", len / 2),
        ],
    );
    // With the whole file, it loads.
    std::fs::write(dir.join("weights.bin"), vec![0u8; len]).unwrap();
    success(&kiln(&["inspect".as_ref(), model.as_os_str()]));
}

#[test]
fn invalid_dims_in_an_input_declared_shape() {
    for (dim, shown) in [(-3, "-3"), (1 << 50, "1125899906842624")] {
        let dir = TempDir::new("input-dim");
        let model = edited_bert(&dir, |m| set_input_dim(m, "input_ids", 1, dim));
        bad_model(
            &model,
            &dir,
            &["input `input_ids`", "dim 1", shown, "not a valid size"],
        );
    }
}

#[test]
fn invalid_dims_in_an_initializer() {
    let dir = TempDir::new("init-dim");
    let model = edited_bert(&dir, |m| initializer(m, "val_71").dims = vec![-64, -64]);
    bad_model(&model, &dir, &["tensor `val_71`", "negative dimension -64"]);
    // 2^50 x 64 f32s: a size that fits in memory arithmetic but not in the file.
    let model = edited_bert(&dir, |m| initializer(m, "val_71").dims = vec![1 << 50, 64]);
    bad_model(
        &model,
        &dir,
        &[
            "tensor `val_71`",
            "f32[1125899906842624, 64]",
            "16384 bytes",
        ],
    );
    // 2^50 x 2^50: the byte count itself overflows.
    let model = edited_bert(&dir, |m| {
        initializer(m, "val_71").dims = vec![1 << 50, 1 << 50]
    });
    bad_model(&model, &dir, &["tensor `val_71`", "too large"]);
}

#[test]
fn unsupported_op() {
    let dir = TempDir::new("op");
    let mut node_name = String::new();
    let model = edited_bert(&dir, |m| {
        let node = m
            .graph
            .as_mut()
            .unwrap()
            .node
            .iter_mut()
            .find(|n| n.op_type.as_deref() == Some("Softmax"))
            .unwrap();
        node.op_type = Some("FooBar".into());
        node_name = node.name.clone().unwrap();
    });
    bad_model(
        &model,
        &dir,
        &[
            "op `FooBar`",
            &format!("node `{node_name}`"),
            "opset 18",
            "not supported",
        ],
    );
}

#[test]
fn model_path_problems() {
    let dir = TempDir::new("paths");
    let missing = dir.join("no-such-model.onnx");
    let line = failure(
        &kiln(&["inspect".as_ref(), missing.as_os_str()]),
        &[&missing.display().to_string()],
    );
    assert!(
        line.contains("No such file") || line.contains("not found"),
        "{line}"
    );
    failure(
        &run_model(&missing, &bert_inputs(), &dir),
        &[&missing.display().to_string()],
    );
    failure(
        &kiln(&["inspect".as_ref(), dir.path().as_os_str()]),
        &[&dir.path().display().to_string(), "config.json"],
    );
}

// ---------------------------------------------------------------------------------------------
// Bad inputs to `kiln run` (on the valid bert model).

#[test]
fn input_with_the_wrong_dtype() {
    let dir = TempDir::new("dtype");
    let f = Tensor::from_vec(&[1, 16], vec![1.0f32; 16]).unwrap();
    let inputs = input_args(&[
        ("input_ids", &npy(&dir, "ids.npy", &f)),
        ("attention_mask", &bert_io("b1_s16", "attention_mask")),
    ]);
    failure(
        &run_model(&bert(), &inputs, &dir),
        &["model.onnx", "input `input_ids`", "is f32", "expects i64"],
    );
}

/// An id beyond the vocabulary names the model input it came in by, not the value the
/// embedding reads (GPT-2's export reshapes `input_ids` into a view named `view` first).
#[test]
fn token_id_beyond_the_vocabulary() {
    let dir = TempDir::new("vocab");
    let gpt2 = common::model_dir("gpt2").join("model.onnx");
    let mut big = ids(&[1, 16]);
    if let Tensor::I64(a) = &mut big {
        a[[0, 3]] = 1_000_000;
    }
    let inputs = input_args(&[
        ("input_ids", &npy(&dir, "ids.npy", &big)),
        ("attention_mask", &npy(&dir, "mask.npy", &mask(&[1, 16]))),
    ]);
    for backend in kiln_codegen::backends() {
        let mut args = inputs.clone();
        args.extend([
            "--backend".into(),
            backend.name().into(),
            "--no-cache".into(),
        ]);
        failure(
            &run_model(&gpt2, &args, &dir),
            &["`input_ids`", "index 1000000 is out of range"],
        );
    }
}

#[test]
fn input_with_the_wrong_rank() {
    let dir = TempDir::new("rank");
    let inputs = input_args(&[
        ("input_ids", &npy(&dir, "ids.npy", &ids(&[16]))),
        ("attention_mask", &bert_io("b1_s16", "attention_mask")),
    ]);
    failure(
        &run_model(&bert(), &inputs, &dir),
        &["input `input_ids`", "shape [16]", "[batch, seq]"],
    );
}

#[test]
fn inputs_binding_a_symbol_to_two_sizes() {
    let dir = TempDir::new("symbol");
    let inputs = input_args(&[
        ("input_ids", &npy(&dir, "ids.npy", &ids(&[1, 16]))),
        ("attention_mask", &npy(&dir, "mask.npy", &mask(&[1, 17]))),
    ]);
    failure(
        &run_model(&bert(), &inputs, &dir),
        &[
            "input `attention_mask`",
            "`seq` to 17",
            "input `input_ids`",
            "16",
        ],
    );
}

#[test]
fn missing_input() {
    let dir = TempDir::new("missing");
    let inputs = input_args(&[("input_ids", &bert_io("b1_s16", "input_ids"))]);
    failure(
        &run_model(&bert(), &inputs, &dir),
        &["missing input `attention_mask`"],
    );
}

#[test]
fn unknown_input_name() {
    let dir = TempDir::new("unknown");
    let mut inputs = bert_inputs();
    inputs.extend(input_args(&[(
        "token_type_ids",
        &bert_io("b1_s16", "input_ids"),
    )]));
    failure(
        &run_model(&bert(), &inputs, &dir),
        &[
            "input `token_type_ids` is not an input of the model",
            "input_ids",
            "attention_mask",
        ],
    );
}

#[test]
fn malformed_input_spec() {
    let dir = TempDir::new("spec");
    let mut inputs = bert_inputs();
    inputs.extend(["--input".to_string(), "input_ids".to_string()]);
    failure(
        &run_model(&bert(), &inputs, &dir),
        &["--input `input_ids`", "expected NAME=FILE.npy"],
    );
}

#[test]
fn input_given_twice() {
    let dir = TempDir::new("twice");
    let mut inputs = bert_inputs();
    inputs.extend(input_args(&[(
        "input_ids",
        &bert_io("b1_s16", "input_ids"),
    )]));
    failure(
        &run_model(&bert(), &inputs, &dir),
        &["--input `input_ids`", "twice"],
    );
}

#[test]
fn input_npy_problems() {
    let dir = TempDir::new("npy");
    let missing = dir.join("missing.npy");
    let garbage = dir.join("garbage.npy");
    std::fs::write(&garbage, b"\x93NUMPY\x01\x00\xff\xff{'descr'").unwrap();
    let truncated = dir.join("truncated.npy");
    let ok = std::fs::read(bert_io("b1_s16", "input_ids")).unwrap();
    std::fs::write(&truncated, &ok[..ok.len() - 5]).unwrap();
    for (path, problem) in [
        (&missing, "No such file"),
        (&garbage, "header length"),
        (&truncated, "bytes of data follow"),
    ] {
        let inputs = input_args(&[
            ("input_ids", path),
            ("attention_mask", &bert_io("b1_s16", "attention_mask")),
        ]);
        failure(
            &run_model(&bert(), &inputs, &dir),
            &[&path.display().to_string(), problem],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Command-line usage errors (reported by clap).

/// Usage errors exit with code 2 and start with an `error:` line naming the problem.
#[test]
fn usage_errors() {
    for (args, problem) in [
        (&["run"][..], "<MODEL>"),
        (&["frobnicate"][..], "'frobnicate'"),
        (&["run", "model.onnx", "--bogus"][..], "'--bogus'"),
        (&[][..], "Usage"),
    ] {
        let out = kiln(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.contains(problem), "{args:?}: {stderr}");
        if !args.is_empty() {
            assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        }
    }
}

/// The one-line contract of `main.rs` ("every error is printed as one line on stderr") holds
/// for usage errors too, which clap would print over several lines.
#[test]
fn usage_errors_are_one_line() {
    for args in [
        &["run"][..],
        &["frobnicate"][..],
        &["run", "m.onnx", "--bogus"][..],
    ] {
        failure(&kiln(args), &[]);
    }
}

/// A bad rule file is one line naming the file and line, exit 2; a wrong rule makes
/// `kiln rules check` exit 1 with a counterexample; `optimize` and `explain` work.
#[test]
fn rule_files_and_pass_commands() {
    let dir = TempDir::new("rules");
    let model = common::model_dir("bert").join("model.onnx");
    let cases = [
        (
            "syntax",
            "rule a (exact):\n  (Neg ?x\n  => (Neg ?x)\n",
            "syntax.rules:2:",
        ),
        (
            "unknown-op",
            "rule a (exact):\n  (Neg ?x)\n  => (Frob ?x)\n",
            "unknown op `Frob`",
        ),
        (
            "unbound",
            "rule a (exact):\n  (Neg ?x)\n  => (Neg ?y)\n",
            "`?y` on the right side is not bound",
        ),
        (
            "condition",
            "rule a (exact):\n  (Neg ?x) => (Neg ?x)\n  where float ?z\n",
            "condition on `?z`",
        ),
    ];
    for (name, body, needle) in cases {
        let file = dir.join(&format!("{name}.rules"));
        std::fs::write(&file, body).unwrap();
        let path = file.to_str().unwrap();
        failure(
            &kiln(&["explain", model.to_str().unwrap(), "--rules", path]),
            &[needle],
        );
        failure(&kiln(&["rules", "check", path]), &[needle]);
    }
    let wrong = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("passes/tests/fixtures/wrong.rules");
    let out = kiln(&["rules", "check", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("WRONG    wrong-sub"),
        "{}",
        text(&out.stdout)
    );
    let explained = success(&kiln(&[
        "explain",
        model.to_str().unwrap(),
        "--dot",
        dir.join("g.dot").to_str().unwrap(),
    ]));
    assert!(explained.contains("FusedAttention"), "{explained}");
    assert!(std::fs::read_to_string(dir.join("g.dot"))
        .unwrap()
        .starts_with("digraph kiln"));
    let out_file = dir.join("bert.kiln");
    success(&kiln(&[
        "optimize",
        model.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]));
    let optimized = kiln_ir::text::parse(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert!(optimized
        .op_histogram()
        .contains_key(&kiln_ir::OpKind::FusedAttention));
}

/// Hugging Face checkpoint directories: bad config.json, an unsupported architecture, a
/// safetensors header that lies and a tensor of the wrong shape are one-line errors naming the
/// file (and tensor), exit 2; a good checkpoint runs and generates.
#[test]
fn checkpoint_directories() {
    let src = common::model_dir("llama");
    let llama = src.to_str().unwrap();
    let out = success(&kiln(&[
        "generate",
        llama,
        "--prompt-ids",
        "1,5,9",
        "--max-new-tokens",
        "3",
    ]));
    assert!(out.contains("generated: "), "{out}");
    let fresh = |tag: &str| {
        let dir = TempDir::new(tag);
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        dir
    };
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let edit_config = |tag: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let dir = fresh(tag);
        let mut c = config.clone();
        f(&mut c);
        std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
        dir
    };
    let missing = edit_config("missing", &|c| {
        c.as_object_mut().unwrap().remove("hidden_size");
    });
    failure(
        &kiln(&["inspect", missing.path().to_str().unwrap()]),
        &["config.json", "hidden_size"],
    );
    let arch = edit_config("arch", &|c| {
        c["architectures"] = serde_json::json!(["FooForBar"])
    });
    failure(
        &kiln(&["inspect", arch.path().to_str().unwrap()]),
        &["FooForBar", "LlamaForCausalLM"],
    );
    let shape = edit_config("shape", &|c| {
        c["intermediate_size"] = serde_json::json!(173)
    });
    failure(
        &kiln(&["inspect", shape.path().to_str().unwrap()]),
        &["model.safetensors", "mlp", "173"],
    );
    // A header whose first tensor claims data past the end of the file.
    let lie = fresh("lie");
    let mut bytes = std::fs::read(lie.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let lied = header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[99999990,", 1);
    assert_ne!(lied, header, "the fixture header has a tensor at offset 0");
    let mut rebuilt = (lied.len() as u64).to_le_bytes().to_vec();
    rebuilt.extend_from_slice(lied.as_bytes());
    rebuilt.extend_from_slice(&bytes.split_off(8 + n));
    std::fs::write(lie.join("model.safetensors"), rebuilt).unwrap();
    let message = failure(
        &kiln(&["inspect", lie.path().to_str().unwrap()]),
        &["model.safetensors"],
    );
    assert!(
        message.contains("99999990") || message.contains("outside"),
        "{message}"
    );
    let bert = common::model_dir("bert");
    failure(
        &kiln(&["generate", bert.to_str().unwrap(), "--prompt-ids", "1,2"]),
        &["not a causal language model"],
    );
}

// ---------------------------------------------------------------------------------------------
// The compiled path: `check`, `bench`, backends, and inputs the compiled model must reject.

#[test]
fn check_and_bench_run_the_compiled_model() {
    let out = success(&kiln(&["check", bert().to_str().unwrap(), "--seq", "7"]));
    assert!(out.contains("ok: max error"), "{out}");
    assert!(out.contains("kernels"), "{out}");
    let out = success(&kiln(&[
        "bench",
        bert().to_str().unwrap(),
        "--seq",
        "16",
        "--runs",
        "2",
        "--threads",
        "2",
    ]));
    assert!(out.contains("BENCH median_ms="), "{out}");
    assert!(out.contains("arena peak"), "{out}");
}

#[test]
fn every_backend_writes_the_same_outputs() {
    let inputs = bert_inputs();
    let mut results = vec![];
    for backend in ["interp", "cranelift", "llvm"] {
        let dir = TempDir::new(backend);
        let mut args: Vec<String> = vec!["run".into(), bert().display().to_string()];
        args.extend(inputs.iter().cloned());
        args.extend(["--backend".into(), backend.into(), "-o".into()]);
        args.push(dir.join("out").display().to_string());
        success(&kiln(&args));
        results.push(read_npy(&dir.join("out/output.npy")).unwrap());
    }
    for compiled in &results[1..] {
        let err = common::max_abs_diff(compiled, &results[0]).unwrap();
        assert!(
            err <= 1e-4,
            "compiled and interpreted outputs differ by {err}"
        );
    }
}

#[test]
fn llvm_artifacts_record_their_cpu_level() {
    let dir = TempDir::new("aot-llvm");
    let artifact = dir.join("bert");
    let artifact_arg = artifact.to_str().unwrap();
    let model = bert();
    let args = ["compile", model.to_str().unwrap(), "-o", artifact_arg];
    success(&kiln(&[&args[..], &["--backend", "llvm"]].concat()));
    let plan = std::fs::read_to_string(artifact.join("plan.json")).unwrap();
    let level = kiln_codegen::CpuLevel::host();
    let features: Vec<String> = level
        .features()
        .iter()
        .map(|f| format!("\"{f}\""))
        .collect();
    let target = format!(
        "\"target\":{{\"backend\":\"llvm\",\"cpu\":\"{}\",\"features\":[{}]}}",
        level.name(),
        features.join(",")
    );
    assert!(plan.contains(&target), "{target} is not in the plan");
    success(&run_model(&artifact, &bert_inputs(), &dir));
    let got = read_npy(&dir.join("out/output.npy")).unwrap();
    let want = read_npy(&bert_io("b1_s16", "output")).unwrap();
    let err = common::max_abs_diff(&got, &want).unwrap();
    assert!(err <= 1e-4, "LLVM artefact output differs by {err}");
    let out = success(&kiln(&[
        "check",
        artifact_arg,
        "--seq",
        "5",
        "--batch",
        "3",
        "--reference",
        model.to_str().unwrap(),
    ]));
    assert!(out.contains("ok: max error"), "{out}");
}

#[test]
fn a_sequence_longer_than_the_position_table_is_rejected() {
    for backend in ["cranelift", "interp"] {
        let dir = TempDir::new("long");
        let inputs = input_args(&[
            ("input_ids", &npy(&dir, "ids.npy", &ids(&[1, 200]))),
            ("attention_mask", &npy(&dir, "mask.npy", &mask(&[1, 200]))),
        ]);
        let mut args: Vec<String> = vec!["run".into(), bert().display().to_string()];
        args.extend(inputs);
        args.extend(["--backend".into(), backend.into()]);
        args.extend(["-o".into(), dir.join("out").display().to_string()]);
        // The interpreter names the Slice whose output is short, the compiled path the
        // slice's end checked before its kernel runs.
        failure(&kiln(&args), &["model.onnx", "node ", "slic", "128"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Ahead-of-time artefacts: `kiln compile`, then `run` / `check` / `inspect` on the artefact.

#[test]
fn compiled_artifacts_run_and_reject_tampering() {
    let dir = TempDir::new("aot");
    let artifact = dir.join("bert");
    let out = success(&kiln(&[
        "compile",
        bert().to_str().unwrap(),
        "-o",
        artifact.to_str().unwrap(),
    ]));
    assert!(out.contains("kernel steps"), "{out}");
    for file in [
        "kernels.so",
        "plan.json",
        "weights.bin",
        "model.h",
        "manifest.txt",
    ] {
        assert!(artifact.join(file).is_file(), "{file} is missing");
    }
    let header = std::fs::read_to_string(artifact.join("model.h")).unwrap();
    assert!(
        header.contains("#define KILN_MODEL_INPUT_input_ids 0"),
        "{header}"
    );
    success(&run_model(&artifact, &bert_inputs(), &dir));
    let got = read_npy(&dir.join("out/output.npy")).unwrap();
    let want = read_npy(&bert_io("b1_s16", "output")).unwrap();
    let err = common::max_abs_diff(&got, &want).unwrap();
    assert!(err <= 1e-4, "artefact output differs by {err}");
    let bert_model = bert();
    let bert_model = bert_model.to_str().unwrap();
    let reference = ["--reference", bert_model];
    let out = success(&kiln(
        &[
            &["check", artifact.to_str().unwrap(), "--seq", "5"],
            &reference[..],
        ]
        .concat(),
    ));
    assert!(out.contains("ok: max error"), "{out}");
    // An artefact holds no graph: the interpreter's reference must be named.
    failure(
        &kiln(&["check", artifact.to_str().unwrap()]),
        &["bert", "--reference"],
    );
    let out = success(&kiln(&["inspect", artifact.to_str().unwrap()]));
    assert!(out.contains("input_ids: i64[batch, seq]"), "{out}");
    assert!(out.contains("gemm.b_panels"), "{out}");

    // A causal checkpoint gets one artefact per entry point.
    let llama = dir.join("llama");
    let llama_dir = common::model_dir("llama");
    success(&kiln(&[
        "compile",
        llama_dir.to_str().unwrap(),
        "-o",
        llama.to_str().unwrap(),
    ]));
    assert!(llama.join("kernels.so").is_file(), "one kernel library");
    assert!(!llama.join("prefill/kernels.so").exists());
    assert!(llama.join("decode/model.h").is_file());
    assert!(llama.join("weights.bin").is_file(), "one weights file");
    assert!(!llama.join("prefill/weights.bin").exists());
    let prompt = ids(&[1, 5]);
    // The KV cache (2 layers, 2 KV heads of 16) is a state: given, and written back as an
    // output of the same name.
    let cache = Tensor::from_vec(&[1, 2, 8, 16], vec![0f32; 256]).unwrap();
    let cache = npy(&dir, "cache.npy", &cache);
    let names = [
        "cache_key.0",
        "cache_value.0",
        "cache_key.1",
        "cache_value.1",
    ];
    let mut pairs = vec![
        ("input_ids", npy(&dir, "prompt.npy", &prompt)),
        (
            "attention_mask",
            npy(&dir, "prompt_mask.npy", &mask(&[1, 5])),
        ),
    ];
    pairs.extend(names.iter().map(|n| (*n, cache.clone())));
    let pairs: Vec<(&str, &Path)> = pairs.iter().map(|(n, p)| (*n, p.as_path())).collect();
    let out = success(&run_model(
        &llama.join("prefill"),
        &input_args(&pairs),
        &dir,
    ));
    assert!(out.contains("cache_key.1"), "{out}");
    // A cache too small for the prompt is an error naming it.
    let small = Tensor::from_vec(&[1, 2, 4, 16], vec![0f32; 128]).unwrap();
    let small = npy(&dir, "small.npy", &small);
    let mut pairs = pairs.clone();
    for pair in &mut pairs[2..] {
        pair.1 = &small;
    }
    let out = run_model(&llama.join("prefill"), &input_args(&pairs), &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("into the cache `cache_"), "{err}");
    // Its sizes are this run's, not the symbols'.
    assert!(err.contains("(5 rows) into the cache"), "{err}");
    assert!(err.contains("(4 rows)"), "{err}");
    // Greedy generation from the artefacts gives the tokens generation from the checkpoint
    // gives.
    let generate = |model: &str| {
        let args = [
            "generate",
            model,
            "--prompt-ids",
            "1,5,9",
            "--max-new-tokens",
            "6",
        ];
        let out = success(&kiln(&args));
        let line = out.lines().find(|l| l.starts_with("generated: ")).unwrap();
        line.to_string()
    };
    assert_eq!(
        generate(llama.to_str().unwrap()),
        generate(llama_dir.to_str().unwrap())
    );
    // The decode entry point, compiled (attention after a KV cache included), against the
    // interpreter on random inputs with a cache of 7 positions (updated in place, so of
    // capacity 8).
    let decode = llama.join("decode");
    let decode = decode.to_str().unwrap();
    let llama_reference = ["--reference", llama_dir.to_str().unwrap()];
    let out = success(&kiln(
        &[
            &["check", decode, "--seq", "1", "--past", "7"],
            &llama_reference[..],
        ]
        .concat(),
    ));
    assert!(out.contains("ok: max error"), "{out}");
    assert!(out.contains("cache_key.0 [2, 2, 8, 16]"), "{out}");
    let out = success(&kiln(&["explain", decode]));
    assert!(!out.contains("attention with a KV cache"), "{out}");

    // No C compiler to link with, or one that fails: one line naming the library.
    for cc in ["/nonexistent/cc", "false"] {
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["compile", bert().to_str().unwrap(), "-o"])
            .arg(dir.join("no-cc"))
            .env("CC", cc)
            .output()
            .unwrap();
        failure(&out, &["kernels.so", cc]);
    }

    // Tampering: every damaged artefact is refused with one line naming the file.
    let damaged = |tag: &str, file: &str, edit: &dyn Fn(Vec<u8>) -> Vec<u8>| {
        let copy = dir.join(tag);
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(&artifact).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
        let bytes = std::fs::read(copy.join(file)).unwrap();
        std::fs::write(copy.join(file), edit(bytes)).unwrap();
        run_model(&copy, &bert_inputs(), &dir)
    };
    // An edit of the plan that keeps the manifest's checksum true (a hand edit resealed).
    let resealed = |tag: &str, edit: &dyn Fn(String) -> String| {
        let copy = dir.join(tag);
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(&artifact).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
        let plan = edit(std::fs::read_to_string(copy.join("plan.json")).unwrap());
        std::fs::write(copy.join("plan.json"), &plan).unwrap();
        let hash = xxhash_rust::xxh3::xxh3_128(plan.as_bytes());
        let manifest: Vec<String> = std::fs::read_to_string(copy.join("manifest.txt"))
            .unwrap()
            .lines()
            .map(|l| match l.starts_with("file plan.json ") {
                true => format!("file plan.json {} {hash:032x}", plan.len()),
                false => l.to_string(),
            })
            .collect();
        std::fs::write(copy.join("manifest.txt"), manifest.join("\n") + "\n").unwrap();
        run_model(&copy, &bert_inputs(), &dir)
    };
    let flip = |at: usize| {
        move |mut b: Vec<u8>| {
            let i = at.min(b.len() - 1);
            b[i] ^= 0x10;
            b
        }
    };
    failure(
        &resealed("format", &|p| {
            let current = format!("\"format\":{},", kiln_rt::plan::FORMAT_VERSION);
            p.replacen(&current, "\"format\":99,", 1)
        }),
        &["plan.json", "format 99", "kiln compile"],
    );
    failure(
        &resealed("symbol", &|p| {
            p.replacen("\"symbol\":\"k", "\"symbol\":\"gone_k", 1)
        }),
        &["kernels.so", "has no kernel `gone_"],
    );
    failure(
        &resealed("cpu", &|p| {
            p.replacen("\"features\":[", "\"features\":[\"quantum_fpu\",", 1)
        }),
        &["quantum_fpu"],
    );
    failure(
        &resealed("constant", &|p| {
            p.replacen("\"offset\":0,", "\"offset\":99999999999,", 1)
        }),
        &["weights.bin", "constant"],
    );
    failure(
        &damaged("header", "manifest.txt", &|_| b"something else\n".to_vec()),
        &["manifest.txt", "kiln artifact v4"],
    );
    // Truncated or bit-flipped files are refused by their checksums before they are read
    // (a damaged library is never opened: its code would run).
    failure(
        &damaged("weights", "weights.bin", &|b| b[..b.len() / 2].to_vec()),
        &["weights.bin", "bytes, but the manifest records"],
    );
    failure(
        &damaged("weights-flip", "weights.bin", &flip(100)),
        &["weights.bin", "checksum differs"],
    );
    failure(
        &damaged("plan", "plan.json", &|b| b[..b.len() / 3].to_vec()),
        &["plan.json", "bytes, but the manifest records"],
    );
    failure(
        &damaged("plan-edit", "plan.json", &flip(200)),
        &["plan.json", "checksum differs"],
    );
    failure(
        &damaged("library", "kernels.so", &|b| b[..64].to_vec()),
        &["kernels.so", "bytes, but the manifest records"],
    );
    for at in [0, 4096, 20_000] {
        failure(
            &damaged(&format!("library-flip-{at}"), "kernels.so", &flip(at)),
            &["kernels.so", "checksum differs"],
        );
    }
    failure(
        &damaged("no-checksum", "manifest.txt", &|b| {
            let text = String::from_utf8(b).unwrap();
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("file kernels.so"))
                .collect();
            (kept.join("\n") + "\n").into_bytes()
        }),
        &["manifest.txt", "no checksum of `kernels.so`"],
    );
}

/// Requests too large for this machine, or counts that overflow, are one-line errors, never
/// an abort in the allocator or an endless loop.
#[test]
fn huge_requests_are_errors() {
    let bert = bert();
    let bert = bert.to_str().unwrap();
    // 10^10 token ids: 74.5 GiB of random input.
    failure(
        &kiln(&["check", bert, "--batch", "100000", "--seq", "100000"]),
        &["input_ids", "needs", "GiB", "available"],
    );
    let llama = common::model_dir("llama");
    let llama = llama.to_str().unwrap();
    // prompt + n would wrap around to 1 with unchecked arithmetic, and decode forever.
    for n in ["18446744073709551613", "18446744073709551615"] {
        failure(
            &kiln(&[
                "generate",
                llama,
                "--prompt-ids",
                "1,2,3",
                "--max-new-tokens",
                n,
            ]),
            &["--max-new-tokens", "positions"],
        );
    }
}

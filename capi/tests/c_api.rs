//! The C API end to end: artefacts of the reference models (GPT-2 from ONNX, LLaMA from its
//! Hugging Face checkpoint, prefill and decode), optimised as `kiln compile` does, run by a C
//! program (`tests/c/run_model.c`) compiled with `cc` against `kiln.h` and the artefact's
//! `model.h` and linked to `libkiln_runtime.so`; the outputs match the reference outputs. Bad
//! calls (wrong rank, dtype, count, dims, NULL pointers, a missing artefact) fail with a
//! status and a one-line message, from C and through the same functions called from Rust.

use kiln::pipeline::{Options, Pipeline};
use kiln_frontends::hf::{Entry, HfModel};
use kiln_ir::npy::read_npy;
use kiln_ir::{Graph, Tensor, TensorData};
use kiln_runtime::*;
use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The workspace's reference models.
fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/models")
        .join(name)
}

/// A reference input or output of a model.
fn io(model: &str, case: &str, name: &str) -> Tensor {
    read_npy(&model_dir(model).join(format!("io/{case}.{name}.npy"))).unwrap()
}

/// Scratch space for this test binary's artefacts and runs.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kiln-capi")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The directory holding `libkiln_runtime.so`, which cargo built (as the cdylib half of this
/// package's library) before this test binary, which links the rlib half. The test binary
/// is in `target/<profile>/deps`; the library is there or uplifted to its parent.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let found = [deps, deps.parent().unwrap()]
        .into_iter()
        .find(|d| d.join("libkiln_runtime.so").is_file())
        .unwrap_or_else(|| panic!("no libkiln_runtime.so in or above {}", deps.display()))
        .to_path_buf();
    found
}

/// An artefact of a reference model with the C program built against its `model.h`.
struct Artefact {
    dir: PathBuf,
    exe: PathBuf,
    /// Input names in `model.h` order.
    inputs: Vec<String>,
    /// Output names in `model.h` order.
    outputs: Vec<String>,
}

impl Artefact {
    /// Optimises `graph` as `kiln compile` does, writes its artefact to scratch `name` and
    /// compiles the C program against it.
    fn new(name: &str, graph: &Graph) -> Artefact {
        let dir = scratch(name);
        Pipeline::new(Options::default())
            .write_artifacts(&[(graph, "")], &dir)
            .unwrap();
        let header = std::fs::read_to_string(dir.join("model.h")).unwrap();
        let exe = dir.join("run_model");
        let lib = library_dir();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = Command::new(&cc)
            .args(["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-o"])
            .arg(&exe)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/run_model.c"))
            .arg(format!("-I{}/include", env!("CARGO_MANIFEST_DIR")))
            .arg(format!("-I{}", dir.display()))
            .arg(format!("-L{}", lib.display()))
            .arg("-lkiln_runtime")
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .output()
            .unwrap_or_else(|e| panic!("running `{cc}`: {e}"));
        assert!(
            out.status.success(),
            "compiling run_model.c for {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Artefact {
            inputs: header_names(&header, "INPUT"),
            outputs: header_names(&header, "OUTPUT"),
            dir,
            exe,
        }
    }

    /// Runs the C program on `inputs` (by name); the outputs in order, or the C program's
    /// stderr if it failed.
    fn run(&self, inputs: &[(&str, Tensor)]) -> Result<Vec<(String, Tensor)>, String> {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let work = scratch(&format!("runs/{}", RUNS.fetch_add(1, Ordering::Relaxed)));
        let mut args = vec![];
        for name in &self.inputs {
            let t = &inputs.iter().find(|(n, _)| n == name).unwrap().1;
            let file = work.join(format!("{name}.bin"));
            std::fs::write(&file, t.to_data().bytes()).unwrap();
            let dims: Vec<String> = t.shape().iter().map(|d| d.to_string()).collect();
            args.push(file.into_os_string());
            args.push(dims.join(",").into());
        }
        self.run_args(&self.dir, &work, &args)
    }

    /// Runs the C program with raw arguments after the artefact and output directories.
    fn run_args(
        &self,
        dir: &Path,
        work: &Path,
        args: &[std::ffi::OsString],
    ) -> Result<Vec<(String, Tensor)>, String> {
        let out = Command::new(&self.exe)
            .arg(dir)
            .arg(work)
            .args(args)
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(String::from_utf8(out.stderr).unwrap());
        }
        let stdout = String::from_utf8(out.stdout).unwrap();
        let (declared, produced): (Vec<&str>, Vec<&str>) =
            stdout.lines().partition(|l| l.starts_with("input "));
        let declared: Vec<&str> = declared
            .iter()
            .map(|l| l.split(' ').nth(1).unwrap())
            .collect();
        assert_eq!(declared, self.inputs);
        let results: Vec<(String, Tensor)> = produced
            .into_iter()
            .enumerate()
            .map(|(i, line)| {
                let words: Vec<&str> = line.split(' ').collect();
                let ["output", name, dtype, dims @ ..] = words.as_slice() else {
                    panic!("unexpected line `{line}`")
                };
                let dtype = dtype_of_code(dtype.parse().unwrap()).unwrap();
                let shape = dims.iter().map(|d| d.parse().unwrap()).collect();
                let bytes = std::fs::read(work.join(format!("output{i}.bin"))).unwrap();
                let data = TensorData::new(dtype, shape, bytes.into()).unwrap();
                (name.to_string(), Tensor::from_data(&data))
            })
            .collect();
        let names: Vec<&String> = results.iter().map(|(n, _)| n).collect();
        assert_eq!(names, self.outputs.iter().collect::<Vec<_>>());
        Ok(results)
    }
}

/// The quoted names of `model.h`'s `KILN_MODEL_<what>_<id> <index>` lines, checking that the
/// indices count up from 0 and that `KILN_MODEL_<what>S` is their number.
fn header_names(header: &str, what: &str) -> Vec<String> {
    let prefix = format!("#define KILN_MODEL_{what}_");
    let names: Vec<String> = header
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .enumerate()
        .map(|(i, l)| {
            let index = l.split_whitespace().nth(2).unwrap();
            assert_eq!(index, i.to_string(), "{l}");
            l.split('"').nth(1).unwrap().to_string()
        })
        .collect();
    let count = format!("#define KILN_MODEL_{what}S {}", names.len());
    assert!(
        header.lines().any(|l| l == count),
        "no `{count}` in model.h"
    );
    names
}

fn gpt2() -> &'static Artefact {
    static A: OnceLock<Artefact> = OnceLock::new();
    A.get_or_init(|| {
        let graph = kiln_frontends::onnx::load_model(&model_dir("gpt2").join("model.onnx"));
        Artefact::new("gpt2", &graph.unwrap())
    })
}

fn llama(entry: Entry) -> &'static Artefact {
    static PREFILL: OnceLock<Artefact> = OnceLock::new();
    static DECODE: OnceLock<Artefact> = OnceLock::new();
    let (cell, name) = match entry {
        Entry::Prefill => (&PREFILL, "llama/prefill"),
        Entry::Decode => (&DECODE, "llama/decode"),
    };
    cell.get_or_init(|| {
        let hf = HfModel::open(&model_dir("llama")).unwrap();
        Artefact::new(name, &hf.graph(entry).unwrap())
    })
}

/// Largest absolute difference between two f32 tensors of the same shape.
fn max_abs_diff(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.shape(), want.shape());
    let (got, want) = (got.to_f32_array(), want.to_f32_array());
    got.iter()
        .zip(want.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

#[test]
fn c_program_reproduces_the_reference_outputs() {
    for (model, artefact) in [("gpt2", gpt2()), ("llama", llama(Entry::Prefill))] {
        for case in ["b1_s16", "b2_s33"] {
            let ids = io(model, case, "input_ids");
            // llama's prefill writes its KV cache (batch, 2 KV heads of 16) in place.
            let (batch, seq) = (ids.shape()[0], ids.shape()[1]);
            let empty = Tensor::from_vec(&[batch, 2, seq, 16], vec![0f32; batch * seq * 32]);
            let mut inputs = vec![
                ("input_ids", ids),
                ("attention_mask", io(model, case, "attention_mask")),
            ];
            for name in artefact.inputs.iter().filter(|n| n.starts_with("cache_")) {
                inputs.push((name.as_str(), empty.clone().unwrap()));
            }
            let out = artefact.run(&inputs).unwrap();
            let err = max_abs_diff(&out[0].1, &io(model, case, "output"));
            println!("{model} {case} (C API): max abs error {err:.3e}");
            assert!(err <= 1e-4, "{model} {case}: {err}");
        }
    }
}

/// Prefill on the first tokens, then decode the rest one at a time, feeding each step's KV
/// cache (the outputs `cache_*`, the new values of the inputs of the same names) back as the
/// next step's, all through C.
#[test]
fn c_program_decodes_with_the_kv_cache() {
    let (prefill, decode) = (llama(Entry::Prefill), llama(Entry::Decode));
    let ids = io("llama", "b1_s16", "input_ids").to_i64_array();
    let want = io("llama", "b1_s16", "output").to_f32_array();
    let n = ids.shape()[1];
    let tokens =
        |a: usize, b: usize| Tensor::I64(ids.slice(ndarray::s![.., a..b]).to_owned().into_dyn());
    let ones = |len: usize| Tensor::from_vec(&[1, len], vec![1i64; len]).unwrap();
    let logits_error = |logits: &Tensor, from: usize, to: usize| {
        let want = Tensor::F32(
            want.slice(ndarray::s![.., from..to, ..])
                .to_owned()
                .into_dyn(),
        );
        max_abs_diff(logits, &want)
    };
    let t = 12;
    // A zeroed cache of capacity n: batch 1, 2 KV heads of 16 (the fixture's).
    let empty = Tensor::from_vec(&[1, 2, n, 16], vec![0f32; 2 * n * 16]).unwrap();
    let names: Vec<&String> = prefill
        .inputs
        .iter()
        .filter(|name| name.starts_with("cache_"))
        .collect();
    assert!(!names.is_empty(), "{:?}", prefill.inputs);
    let mut inputs = vec![("input_ids", tokens(0, t)), ("attention_mask", ones(t))];
    inputs.extend(names.iter().map(|name| (name.as_str(), empty.clone())));
    let mut out = prefill.run(&inputs).unwrap();
    let mut worst = logits_error(&out[0].1, 0, t);
    for pos in t..n {
        let mut inputs = vec![
            ("input_ids", tokens(pos, pos + 1)),
            ("attention_mask", ones(pos + 1)),
        ];
        let names: Vec<String> = out[1..].iter().map(|(name, _)| name.clone()).collect();
        inputs.extend(
            names
                .iter()
                .map(String::as_str)
                .zip(out.drain(1..).map(|(_, t)| t)),
        );
        out = decode.run(&inputs).unwrap();
        worst = worst.max(logits_error(&out[0].1, pos, pos + 1));
    }
    println!(
        "llama prefill {t} + decode {} steps (C API): max abs error {worst:.3e}",
        n - t
    );
    assert!(worst <= 1e-4, "{worst}");
}

#[test]
fn c_program_reports_bad_inputs_and_missing_artefacts() {
    let artefact = gpt2();
    let work = scratch("bad");
    // What the C program prints of the inputs before it runs the model.
    let out = Command::new(&artefact.exe)
        .arg(&artefact.dir)
        .arg(&work)
        .args(["/no/such/file", "1", "/no/such/file", "1"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "input input_ids 7 -1 -1\ninput attention_mask 7 -1 -1\n"
    );
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "error: cannot read an input file\n"
    );
    let ids = work.join("ids.bin");
    std::fs::write(&ids, vec![0u8; 16 * 8]).unwrap();
    // input_ids of rank 1 instead of [batch, seq].
    let args: Vec<std::ffi::OsString> = vec![
        ids.clone().into(),
        "16".into(),
        ids.clone().into(),
        "1,16".into(),
    ];
    let err = artefact.run_args(&artefact.dir, &work, &args).unwrap_err();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: input `input_ids` has rank 1 but the model expects rank 2"),
        "{err}"
    );
    // A directory with no artefact.
    let missing = work.join("no-such-artefact");
    let err = artefact.run_args(&missing, &work, &args).unwrap_err();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains(&format!("{}", missing.join("manifest.txt").display())),
        "{err}"
    );
}

/// An error buffer and what was written to it.
struct ErrorBuf([c_char; 256]);

impl ErrorBuf {
    fn new() -> ErrorBuf {
        ErrorBuf([0x55; 256])
    }
    fn ptr(&mut self) -> *mut c_char {
        self.0.as_mut_ptr()
    }
    fn text(&self) -> String {
        // SAFETY: the API NUL-terminates whatever it writes within the buffer.
        unsafe { CStr::from_ptr(self.0.as_ptr()) }
            .to_str()
            .unwrap()
            .to_string()
    }
}

/// A C tensor viewing `shape` and `data`.
fn view<T>(dtype: i32, shape: &[i64], data: &[T]) -> kiln_tensor {
    kiln_tensor {
        dtype,
        rank: shape.len(),
        shape: shape.as_ptr(),
        data: data.as_ptr().cast(),
    }
}

/// Loads the GPT-2 artefact through the C entry points.
fn load_gpt2() -> *mut kiln_model {
    let dir = CString::new(gpt2().dir.to_str().unwrap()).unwrap();
    let mut e = ErrorBuf::new();
    // SAFETY: valid string and buffer.
    let model = unsafe { kiln_load(dir.as_ptr(), 1, e.ptr(), 256) };
    assert!(!model.is_null(), "{}", e.text());
    model
}

#[test]
fn model_metadata_matches_the_header() {
    let model = load_gpt2();
    let artefact = gpt2();
    // SAFETY (this block): `model` is live until freed at the end.
    unsafe {
        assert_eq!(kiln_input_count(model), artefact.inputs.len());
        assert_eq!(kiln_output_count(model), artefact.outputs.len());
        for (i, name) in artefact.inputs.iter().enumerate() {
            assert_eq!(
                CStr::from_ptr(kiln_input_name(model, i)).to_str(),
                Ok(&**name)
            );
            assert_eq!(kiln_input_dtype(model, i), KILN_I64);
            assert_eq!(kiln_input_rank(model, i), 2);
            // [batch, seq]: both symbolic.
            assert_eq!(kiln_input_dim(model, i, 0), -1);
            assert_eq!(kiln_input_dim(model, i, 1), -1);
        }
        for (i, name) in artefact.outputs.iter().enumerate() {
            assert_eq!(
                CStr::from_ptr(kiln_output_name(model, i)).to_str(),
                Ok(&**name)
            );
        }
        let n = artefact.inputs.len();
        assert!(kiln_input_name(model, n).is_null());
        assert!(kiln_output_name(model, artefact.outputs.len()).is_null());
        assert_eq!(kiln_input_dtype(model, n), 0);
        assert_eq!(kiln_input_rank(model, n), 0);
        assert_eq!(kiln_input_dim(model, 0, 2), -1);
        assert_eq!(kiln_input_count(ptr::null()), 0);
        assert!(kiln_input_name(ptr::null(), 0).is_null());
        kiln_free(model);
        kiln_free(ptr::null_mut());
    }
    assert_eq!(kiln_dtype_size(KILN_I64), 8);
    assert_eq!(kiln_dtype_size(KILN_BF16), 2);
    assert_eq!(kiln_dtype_size(0), 0);
}

#[test]
fn run_from_rust_matches_the_reference_and_outputs_are_owned() {
    let model = load_gpt2();
    let (ids, mask) = (
        io("gpt2", "b1_s16", "input_ids"),
        io("gpt2", "b1_s16", "attention_mask"),
    );
    let (ids_v, mask_v) = (ids.to_i64_vec(), mask.to_i64_vec());
    let shape = [1i64, 16];
    let inputs = [
        view(KILN_I64, &shape, &ids_v),
        view(KILN_I64, &shape, &mask_v),
    ];
    let mut outputs = ptr::null_mut();
    let mut e = ErrorBuf::new();
    // SAFETY (this block): valid pointers; the outputs are used after the model is freed,
    // which the API allows.
    unsafe {
        let status = kiln_run(model, inputs.as_ptr(), 2, &mut outputs, e.ptr(), 256);
        assert_eq!(status, 0, "{}", e.text());
        kiln_free(model);
        assert_eq!(kiln_outputs_count(outputs), 1);
        assert!(kiln_outputs_get(outputs, 1).is_null());
        let t = &*kiln_outputs_get(outputs, 0);
        assert_eq!(t.dtype, KILN_F32);
        let shape: Vec<usize> = std::slice::from_raw_parts(t.shape, t.rank)
            .iter()
            .map(|&d| d as usize)
            .collect();
        let len = shape.iter().product();
        let data = std::slice::from_raw_parts(t.data.cast::<f32>(), len).to_vec();
        let got = Tensor::from_vec(&shape, data).unwrap();
        let err = max_abs_diff(&got, &io("gpt2", "b1_s16", "output"));
        assert!(err <= 1e-4, "{err}");
        kiln_outputs_free(outputs);
        kiln_outputs_free(ptr::null_mut());
        assert_eq!(kiln_outputs_count(ptr::null()), 0);
        assert!(kiln_outputs_get(ptr::null(), 0).is_null());
    }
}

#[test]
fn one_model_runs_on_several_threads_at_once() {
    let model = load_gpt2() as usize;
    let case = |case: &str| {
        let ids = io("gpt2", case, "input_ids");
        let shape: Vec<i64> = ids.shape().iter().map(|&d| d as i64).collect();
        (
            shape,
            ids.to_i64_vec(),
            io("gpt2", case, "attention_mask").to_i64_vec(),
        )
    };
    let runs: Vec<_> = ["b1_s16", "b2_s33", "b1_s16", "b2_s33"]
        .into_iter()
        .map(|name| {
            let (shape, ids, mask) = case(name);
            std::thread::spawn(move || {
                let inputs = [view(KILN_I64, &shape, &ids), view(KILN_I64, &shape, &mask)];
                let (mut outputs, mut e) = (ptr::null_mut(), ErrorBuf::new());
                // SAFETY: the model outlives the threads (joined before it is freed); the
                // inputs and outputs are valid.
                unsafe {
                    let model = model as *const kiln_model;
                    let status = kiln_run(model, inputs.as_ptr(), 2, &mut outputs, e.ptr(), 256);
                    assert_eq!(status, 0, "{}", e.text());
                    let t = &*kiln_outputs_get(outputs, 0);
                    let dims = std::slice::from_raw_parts(t.shape, t.rank);
                    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
                    let len = shape.iter().product();
                    let data = std::slice::from_raw_parts(t.data.cast::<f32>(), len).to_vec();
                    kiln_outputs_free(outputs);
                    let err = max_abs_diff(
                        &Tensor::from_vec(&shape, data).unwrap(),
                        &io("gpt2", name, "output"),
                    );
                    assert!(err <= 1e-4, "{name}: {err}");
                }
            })
        })
        .collect();
    for run in runs {
        run.join().unwrap();
    }
    // SAFETY: every run has finished.
    unsafe { kiln_free(model as *mut kiln_model) };
}

#[test]
fn bad_runs_fail_with_a_message_naming_the_problem() {
    let model = load_gpt2();
    let ids = vec![1i64; 16];
    let (s16, s15, neg, r1) = ([1i64, 16], [1i64, 15], [1i64, -16], [16i64]);
    let ids32 = vec![1i32; 16];
    let good = view(KILN_I64, &s16, &ids);
    let null_shape = kiln_tensor {
        shape: ptr::null(),
        ..good
    };
    let null_data = kiln_tensor {
        data: ptr::null(),
        ..good
    };
    let cases: Vec<(Vec<kiln_tensor>, &str)> = vec![
        (
            vec![good],
            "1 inputs given but the model takes 2 (input_ids, attention_mask)",
        ),
        (
            vec![view(KILN_I32, &s16, &ids32), good],
            "input `input_ids` is i32 but the model expects i64",
        ),
        (
            vec![good, view(99, &s16, &ids)],
            "input `attention_mask`: 99 is not a kiln_dtype",
        ),
        (
            vec![view(KILN_I64, &r1, &ids), good],
            "input `input_ids` has rank 1 but the model expects rank 2 ([batch, seq])",
        ),
        (
            vec![good, view(KILN_I64, &neg, &ids)],
            "input `attention_mask` has a negative dim: [1, -16]",
        ),
        (vec![null_shape, good], "input `input_ids`: shape is NULL"),
        (
            vec![good, null_data],
            "input `attention_mask`: data is NULL",
        ),
        (
            vec![good, view(KILN_I64, &s15, &ids)],
            "input `attention_mask` binds `seq` to 15 but input `input_ids` bound it to 16",
        ),
    ];
    // SAFETY (this block): every pointer is valid or NULL as each case states.
    unsafe {
        for (inputs, want) in cases {
            let mut e = ErrorBuf::new();
            let mut outputs = ptr::dangling_mut::<kiln_outputs>();
            let status = kiln_run(
                model,
                inputs.as_ptr(),
                inputs.len(),
                &mut outputs,
                e.ptr(),
                256,
            );
            assert_ne!(status, 0, "{want}");
            assert!(outputs.is_null(), "{want}");
            assert_eq!(e.text(), want);
        }
        let mut outputs = ptr::null_mut();
        let mut e = ErrorBuf::new();
        let status = kiln_run(model, ptr::null(), 2, &mut outputs, e.ptr(), 256);
        assert_ne!(status, 0);
        assert_eq!(e.text(), "inputs is NULL");
        let inputs = [good, good];
        let status = kiln_run(model, inputs.as_ptr(), 2, ptr::null_mut(), e.ptr(), 256);
        assert_ne!(status, 0);
        assert_eq!(e.text(), "outputs is NULL");
        let status = kiln_run(ptr::null(), inputs.as_ptr(), 2, &mut outputs, e.ptr(), 256);
        assert_ne!(status, 0);
        assert_eq!(e.text(), "model is NULL");
        // No error buffer: the status alone.
        let status = kiln_run(model, ptr::null(), 2, &mut outputs, ptr::null_mut(), 0);
        assert_ne!(status, 0);
        // A small buffer gets a truncated, NUL-terminated message and nothing past it.
        let mut e = ErrorBuf::new();
        let status = kiln_run(model, ptr::null(), 2, &mut outputs, e.ptr(), 6);
        assert_ne!(status, 0);
        assert_eq!(e.text(), "input");
        assert_eq!(e.0[6], 0x55);
        kiln_free(model);
    }
}

#[test]
fn load_failures_name_the_problem() {
    let missing = scratch("missing-artefact");
    let dir = CString::new(missing.to_str().unwrap()).unwrap();
    // SAFETY (this block): valid strings and buffers, or NULL where the case says so.
    unsafe {
        let mut e = ErrorBuf::new();
        assert!(kiln_load(dir.as_ptr(), 1, e.ptr(), 256).is_null());
        let manifest = missing.join("manifest.txt");
        assert!(
            e.text().starts_with(&format!("{}: ", manifest.display())),
            "{}",
            e.text()
        );
        let mut e = ErrorBuf::new();
        assert!(kiln_load(ptr::null(), 1, e.ptr(), 256).is_null());
        assert_eq!(e.text(), "artifact_dir is NULL");
        let gpt2 = CString::new(gpt2().dir.to_str().unwrap()).unwrap();
        let mut e = ErrorBuf::new();
        assert!(kiln_load(gpt2.as_ptr(), -2, e.ptr(), 256).is_null());
        assert_eq!(e.text(), "threads is -2; it must be 0 (every core) or more");
        assert!(kiln_load(dir.as_ptr(), 1, ptr::null_mut(), 0).is_null());
        // threads 0 means every core.
        let model = kiln_load(gpt2.as_ptr(), 0, e.ptr(), 256);
        assert!(!model.is_null(), "{}", e.text());
        kiln_free(model);
    }
}

#[test]
fn the_runtime_library_holds_no_compiler() {
    let lib = std::fs::read(library_dir().join("libkiln_runtime.so")).unwrap();
    let has = |needle: &str| lib.windows(needle.len()).any(|w| w == needle.as_bytes());
    // Symbol names are there to read (an absent name below means absent code).
    assert!(
        has("kiln_rt"),
        "libkiln_runtime.so has no symbol names to check"
    );
    for part in [
        "kiln_codegen",
        "cranelift",
        "inkwell",
        "kiln_passes",
        "kiln_frontends",
    ] {
        assert!(!has(part), "libkiln_runtime.so contains `{part}`");
    }
}

/// Loads the artefact in `dir` through the C entry points.
fn load(dir: &Path) -> *mut kiln_model {
    let dir = CString::new(dir.to_str().unwrap()).unwrap();
    let mut e = ErrorBuf::new();
    // SAFETY: valid string and buffer.
    let model = unsafe { kiln_load(dir.as_ptr(), 1, e.ptr(), 256) };
    assert!(!model.is_null(), "{}", e.text());
    model
}

/// Runs `model` in place on ids and a mask of `columns` ones, with `cache` (one buffer per
/// state input, in input order, of `capacity` positions) lent: the logits, or the error.
fn run_in_place(
    model: *const kiln_model,
    names: &[String],
    ids: &[i64],
    columns: usize,
    cache: &mut [Vec<f32>],
    capacity: usize,
) -> Result<Tensor, String> {
    let ids_shape = [1i64, ids.len() as i64];
    let mask = vec![1i64; columns];
    let mask_shape = [1i64, columns as i64];
    let cache_shape = [1i64, 2, capacity as i64, 16];
    let mut states = cache.iter_mut();
    let inputs: Vec<kiln_tensor> = names
        .iter()
        .map(|name| match name.as_str() {
            "input_ids" => view(KILN_I64, &ids_shape, ids),
            "attention_mask" => view(KILN_I64, &mask_shape, &mask),
            _ => view(KILN_F32, &cache_shape, states.next().unwrap()),
        })
        .collect();
    let mut outputs = ptr::null_mut();
    let mut e = ErrorBuf::new();
    // SAFETY (this block): valid pointers; each state's buffer is writable and lent only here.
    unsafe {
        let status = kiln_run_in_place(
            model,
            inputs.as_ptr(),
            inputs.len(),
            &mut outputs,
            e.ptr(),
            256,
        );
        if status != 0 {
            assert!(outputs.is_null());
            return Err(e.text());
        }
        assert_eq!(
            kiln_outputs_count(outputs),
            1,
            "only the logits: states stay put"
        );
        let t = &*kiln_outputs_get(outputs, 0);
        let shape: Vec<usize> = std::slice::from_raw_parts(t.shape, t.rank)
            .iter()
            .map(|&d| d as usize)
            .collect();
        let len = shape.iter().product();
        let data = std::slice::from_raw_parts(t.data.cast::<f32>(), len).to_vec();
        kiln_outputs_free(outputs);
        Ok(Tensor::from_vec(&shape, data).unwrap())
    }
}

/// Prefill and token-by-token decode through `kiln_run_in_place` with one KV cache the
/// caller allocated once: the logits match the reference, the cache is never returned, and
/// a cache too small for the run, or a state with no data, is an error status and message.
#[test]
fn the_kv_cache_is_updated_in_place_through_c() {
    let (prefill, decode) = (llama(Entry::Prefill), llama(Entry::Decode));
    let (p, d) = (load(&prefill.dir), load(&decode.dir));
    let ids = io("llama", "b1_s16", "input_ids").to_i64_vec();
    let want = io("llama", "b1_s16", "output").to_f32_array();
    let n = ids.len();
    let states: Vec<usize> = (0..prefill.inputs.len())
        // SAFETY: a live model.
        .filter(|&i| unsafe { kiln_input_is_state(p, i) } == 1)
        .collect();
    assert_eq!(
        states.len(),
        prefill.inputs.len() - 2,
        "{:?}",
        prefill.inputs
    );
    // SAFETY: NULL and out-of-range arguments are allowed.
    unsafe {
        assert_eq!(kiln_input_is_state(p, 0), 0);
        assert_eq!(kiln_input_is_state(p, prefill.inputs.len()), 0);
        assert_eq!(kiln_input_is_state(ptr::null(), 2), 0);
    }
    let capacity = n + 3;
    let mut cache = vec![vec![0f32; 2 * capacity * 16]; states.len()];
    let t = 9;
    let logits = run_in_place(p, &prefill.inputs, &ids[..t], t, &mut cache, capacity).unwrap();
    let mut worst = 0f32;
    let mut check = |logits: &Tensor, at: std::ops::Range<usize>| {
        let want = Tensor::F32(want.slice(ndarray::s![.., at, ..]).to_owned().into_dyn());
        worst = worst.max(max_abs_diff(logits, &want));
    };
    check(&logits, 0..t);
    for pos in t..n {
        let step = run_in_place(
            d,
            &decode.inputs,
            &ids[pos..pos + 1],
            pos + 1,
            &mut cache,
            capacity,
        )
        .unwrap();
        check(&step, pos..pos + 1);
    }
    println!("llama in place (C API): max abs error {worst:.3e}");
    assert!(worst <= 1e-4, "{worst}");
    // A decode step past the capacity: 2 new tokens after `capacity - 1`.
    let err = run_in_place(
        d,
        &decode.inputs,
        &ids[..2],
        capacity + 1,
        &mut cache,
        capacity,
    )
    .unwrap_err();
    assert!(err.contains("into the cache `cache_"), "{err}");
    let small = run_in_place(p, &prefill.inputs, &ids, n, &mut cache, n - 1);
    assert!(small.is_err(), "a prefill longer than the cache ran");
    // A state with no data.
    let cache_shape = [1i64, 2, capacity as i64, 16];
    let ids_shape = [1i64, 1];
    let mask = [1i64];
    let mut inputs: Vec<kiln_tensor> = prefill
        .inputs
        .iter()
        .map(|_| view(KILN_F32, &cache_shape, &[0f32; 0]))
        .collect();
    inputs[0] = view(KILN_I64, &ids_shape, &ids[..1]);
    inputs[1] = view(KILN_I64, &ids_shape, &mask);
    inputs[2].data = ptr::null();
    let mut outputs = ptr::null_mut();
    let mut e = ErrorBuf::new();
    // SAFETY: valid pointers but for the NULL data, which the API reports.
    let status =
        unsafe { kiln_run_in_place(p, inputs.as_ptr(), inputs.len(), &mut outputs, e.ptr(), 256) };
    assert_ne!(status, 0);
    assert!(e.text().contains("data is NULL"), "{}", e.text());
    // SAFETY: live models.
    unsafe {
        kiln_free(p);
        kiln_free(d);
    }
}

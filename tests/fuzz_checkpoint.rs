//! Fuzzing the Hugging Face checkpoint reader: mutated `model.safetensors` headers and
//! mutated `config.json` files of the six fixtures (`tests/models`), with an oracle for every
//! variant kiln accepts.
//!
//! - **Headers** ([`HEADER_CASES`] variants): the 8-byte length field (off by one and more,
//!   zero, huge), bytes of the JSON text (overwritten, inserted, deleted, with and without the
//!   length following), and fields re-serialised with the right length: data offsets, shapes,
//!   dtypes, names, removed or extra entries, `__metadata__`, whitespace and padding. An
//!   independent validator written here from the safetensors format ([`spec`]) decides each
//!   variant: invalid ones must be refused with one line naming the file; valid ones must be
//!   accepted, every tensor must read back as exactly the bytes the header describes, and a
//!   variant describing exactly the original tensors must give the fixture's reference output.
//! - **Configs** ([`CONFIG_CASES`] variants): values of the keys kiln reads (numbers, strings,
//!   booleans, null, lists, objects), removed keys, architectures and `model_type`s (supported
//!   and not), activations (supported and not), RoPE parameters, and keys kiln ignores. Loading
//!   and building must give `Ok` or a one-line error; a variant whose parsed config equals the
//!   original's (every ignored-key edit must be one) must give the reference output; any other
//!   accepted variant must run on the interpreter, and (the first [`MAX_COMPILES`] distinct
//!   configs) give, compiled by Cranelift, what the interpreter gives within 1e-4.
//!
//! Deterministic (ChaCha with a fixed seed). `KILN_FUZZ_EXPLORE=N` runs N times as many cases
//! from another seed and lists every distinct failure instead of stopping at the first, as in
//! `tests/robustness.rs`. Per-kind counts and the time are printed with `--nocapture`.

mod common;

use common::TempDir;
use kiln_frontends::hf::checkpoint::Checkpoint;
use kiln_frontends::hf::config::HfConfig;
use kiln_frontends::hf::{Entry, HfModel};
use kiln_ir::npy::read_npy;
use kiln_ir::{interp, Tensor};
use proptest::prelude::Rng as _;
use proptest::test_runner::{RngAlgorithm, TestRng};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

/// Mutated safetensors headers per run (times `KILN_FUZZ_EXPLORE`).
const HEADER_CASES: usize = 3_000;
/// Mutated configs per run (times `KILN_FUZZ_EXPLORE`).
const CONFIG_CASES: usize = 1_500;
const _: () = assert!(HEADER_CASES + CONFIG_CASES >= 2_000);
/// Distinct accepted config variants compiled and compared with the interpreter.
const MAX_COMPILES: usize = 24;
/// The fixtures mutated.
const MODELS: [&str; 6] = ["distilbert", "gptneox", "phi", "llama", "bert", "gpt2"];

/// The random source: ChaCha from a fixed seed.
struct Rng(TestRng);

impl Rng {
    fn new(tag: &str, scale: usize) -> Rng {
        let mut seed = [0x4bu8; 32];
        for (i, b) in tag.bytes().enumerate() {
            seed[i % 32] ^= b;
        }
        seed[31] ^= (scale - 1) as u8;
        Rng(TestRng::from_seed(RngAlgorithm::ChaCha, &seed))
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// `KILN_FUZZ_EXPLORE`: `None` stops at the first failure; `Some(n)` runs n times the cases and
/// lists all failures.
fn explore() -> Option<usize> {
    std::env::var("KILN_FUZZ_EXPLORE")
        .ok()
        .map(|v| v.parse().unwrap_or(1).max(1))
}

/// Failures of one run, grouped by message (with `quoted` names elided).
#[derive(Default)]
struct Failures {
    explore: bool,
    found: BTreeMap<String, (usize, String)>,
}

impl Failures {
    fn record(&mut self, what: &str, msg: String) {
        if !self.explore {
            panic!("{what}: {msg}");
        }
        let key: String = msg
            .split('`')
            .enumerate()
            .map(|(i, p)| if i % 2 == 0 { p } else { "_" })
            .collect::<Vec<_>>()
            .join("`");
        self.found.entry(key).or_insert((0, what.to_string())).0 += 1;
    }

    fn check(self, tag: &str) {
        for (key, (n, first)) in &self.found {
            println!("{tag}: {n} x {key}\n    first: {first}");
        }
        assert!(
            self.found.is_empty(),
            "{tag}: {} distinct failures",
            self.found.len()
        );
    }
}

thread_local! {
    /// True while [`catching`] runs on this thread.
    static CATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err("panic: message")`; such panics are not printed (panics
/// elsewhere, the tests' own assertions, go to the default hook).
fn catching<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(std::cell::Cell::get) {
                default(info);
            }
        }));
    });
    CATCHING.with(|c| c.set(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(false));
    r.map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("panic: {msg}")
    })
}

/// An error message is acceptable: one non-empty line.
fn one_line(msg: &str) -> Result<(), String> {
    if msg.is_empty() || msg.contains(['\n', '\r']) {
        return Err(format!("error is not one line: {msg:?}"));
    }
    Ok(())
}

/// The `b1_s16` inputs and torch's output of a fixture.
fn reference(model: &str) -> (HashMap<String, Tensor>, Tensor) {
    let io = common::model_dir(model).join("io");
    let load = |n: &str| read_npy(&io.join(format!("b1_s16.{n}.npy"))).unwrap();
    let feeds = ["input_ids", "attention_mask"]
        .into_iter()
        .map(|n| (n.to_string(), load(n)))
        .collect();
    (feeds, load("output"))
}

/// The first output of `graph` on the interpreter.
fn interpret(graph: &kiln_ir::Graph, feeds: &HashMap<String, Tensor>) -> Result<Tensor, String> {
    let feeds = common::with_empty_states(graph, feeds);
    let mut out = interp::run(graph, &feeds).map_err(|e| e.to_string())?;
    Ok(out.swap_remove(0).1)
}

// ---------------------------------------------------------------------------------------------
// The safetensors format, written from its specification (independently of kiln's reader).

/// One tensor as a header describes it.
#[derive(Clone, Debug, PartialEq)]
struct Described {
    dtype: String,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    range: (usize, usize),
}

/// The format's checks: an 8-byte little-endian header length `n` (at most 100 MB, `8 + n`
/// within the file), `n` bytes of UTF-8 JSON that begin with `{` and form an object whose
/// `__metadata__` (optional) maps strings to strings and whose other entries each hold a known
/// `dtype`, a `shape` of non-negative integers and `data_offsets` `[begin, end]` with
/// `end - begin` = elements × dtype size; sorted by offsets, the tensors tile the data exactly,
/// from 0 to the end of the file.
fn spec(bytes: &[u8]) -> Result<BTreeMap<String, Described>, String> {
    let size = |dtype: &str| -> Option<usize> {
        Some(match dtype {
            "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 1,
            "I16" | "U16" | "F16" | "BF16" => 2,
            "I32" | "U32" | "F32" => 4,
            "I64" | "U64" | "F64" | "C64" => 8,
            _ => return None,
        })
    };
    let n = u64::from_le_bytes(bytes.get(..8).ok_or("short")?.try_into().unwrap());
    if n > 100_000_000 {
        return Err("header too large".into());
    }
    let stop = 8usize.checked_add(n as usize).ok_or("overflow")?;
    if stop > bytes.len() {
        return Err("header length past the end".into());
    }
    let text = std::str::from_utf8(&bytes[8..stop]).map_err(|_| "not UTF-8")?;
    if !text.starts_with('{') {
        return Err("header does not start with {".into());
    }
    let header: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let header = header.as_object().ok_or("not an object")?;
    let data_len = bytes.len() - stop;
    let mut out = BTreeMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            let ok = info
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                return Err("bad metadata".into());
            }
            continue;
        }
        let info = info.as_object().ok_or("entry not an object")?;
        let dtype = info.get("dtype").and_then(Value::as_str).ok_or("dtype")?;
        let width = size(dtype).ok_or("unknown dtype")?;
        let shape: Vec<usize> = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or("shape")?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or("shape values")?;
        let offsets = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .ok_or("data_offsets")?;
        let begin = offsets[0].as_u64().ok_or("offset")? as usize;
        let end = offsets[1].as_u64().ok_or("offset")? as usize;
        let mut elements = 1usize;
        for &d in &shape {
            elements = elements.checked_mul(d).ok_or("shape overflow")?;
        }
        let nbytes = elements.checked_mul(width).ok_or("size overflow")?;
        if end < begin || end - begin != nbytes {
            return Err("offsets disagree with dtype and shape".into());
        }
        let described = Described {
            dtype: dtype.into(),
            shape,
            range: (begin, end),
        };
        out.insert(name.clone(), described);
    }
    let mut ranges: Vec<(usize, usize)> = out.values().map(|d| d.range).collect();
    ranges.sort_unstable();
    let mut at = 0;
    for (begin, end) in ranges {
        if begin != at {
            return Err("gap or overlap".into());
        }
        at = end;
    }
    if at != data_len {
        return Err("tensors do not end at the end of the file".into());
    }
    for d in out.values_mut() {
        d.range = (d.range.0 + stop, d.range.1 + stop);
    }
    Ok(out)
}

/// An IEEE half-precision value as f32, decoded by hand.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let (exp, frac) = ((h >> 10) & 0x1f, (h & 0x3ff) as f32);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e as i32 - 15),
    }
}

/// The little-endian f32 bytes kiln should return for a tensor's raw bytes (F32, F16, BF16),
/// or `None` for a dtype kiln does not read as f32.
fn decode(dtype: &str, raw: &[u8]) -> Option<Vec<u8>> {
    let halves = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    let f32s: Vec<f32> = match dtype {
        "F32" => return Some(raw.to_vec()),
        "F16" => halves.map(f16_to_f32).collect(),
        "BF16" => halves.map(|b| f32::from_bits((b as u32) << 16)).collect(),
        _ => return None,
    };
    Some(f32s.iter().flat_map(|x| x.to_le_bytes()).collect())
}

// ---------------------------------------------------------------------------------------------
// Header mutations.

/// A safetensors file split into its header JSON and data.
struct StFile {
    header: Map<String, Value>,
    data: Vec<u8>,
}

impl StFile {
    fn parse(bytes: &[u8]) -> StFile {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        StFile {
            header,
            data: bytes[8 + n..].to_vec(),
        }
    }

    /// The file with this header text and the right length.
    fn with_text(&self, text: &[u8]) -> Vec<u8> {
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(text);
        out.extend_from_slice(&self.data);
        out
    }

    fn tensor_names(&self) -> Vec<String> {
        self.header
            .keys()
            .filter(|k| *k != "__metadata__")
            .cloned()
            .collect()
    }
}

/// A header-level value to put somewhere: integers at the edges, other JSON types.
fn odd_value(rng: &mut Rng) -> Value {
    match rng.below(10) {
        0 => json!(-1),
        1 => json!(u64::MAX),
        2 => json!(1u64 << 40),
        3 => json!(2.0),
        4 => json!("4"),
        5 => Value::Null,
        6 => json!([]),
        7 => json!({}),
        8 => json!(true),
        _ => json!(rng.below(100)),
    }
}

/// One mutation of `file`'s bytes (`orig`); returns its kind and the new file.
fn mutate_header(rng: &mut Rng, orig: &[u8], st: &StFile) -> (&'static str, Vec<u8>) {
    let n = u64::from_le_bytes(orig[..8].try_into().unwrap());
    let names = st.tensor_names();
    let name = rng.pick(&names).clone();
    let mut header = st.header.clone();
    let reserialise = |h: &Map<String, Value>| st.with_text(&serde_json::to_vec(h).unwrap());
    match rng.below(11) {
        0 => {
            let len = match rng.below(6) {
                0 => n.wrapping_add(1 + rng.below(8) as u64),
                1 => n.wrapping_sub(1 + rng.below(8) as u64),
                2 => 0,
                3 => u64::MAX - rng.below(16) as u64,
                4 => orig.len() as u64 - 8,
                _ => rng.0.next_u64() % (orig.len() as u64 + 64),
            };
            let mut out = orig.to_vec();
            out[..8].copy_from_slice(&len.to_le_bytes());
            ("length field", out)
        }
        1 => {
            let mut out = orig.to_vec();
            let at = 8 + rng.below(n as usize);
            let chars = b"{}[]\",:0123456789- eE.\\aF";
            out[at] = if rng.chance(50) {
                *rng.pick(chars)
            } else {
                rng.below(256) as u8
            };
            ("header byte", out)
        }
        2 => {
            let mut text = orig[8..8 + n as usize].to_vec();
            let at = rng.below(text.len());
            if rng.chance(50) {
                text.insert(at, *rng.pick(b" {}\",:01"));
            } else {
                text.remove(at);
            }
            let mut out = st.with_text(&text);
            if rng.chance(30) {
                out[..8].copy_from_slice(&n.to_le_bytes()); // the length not following
            }
            ("header insert/delete", out)
        }
        3 => {
            let entry = header[&name].as_object_mut().unwrap();
            let offsets = entry["data_offsets"].as_array_mut().unwrap();
            let (b, e) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
            match rng.below(6) {
                0 => offsets[rng.below(2)] = json!((b as i64 + rng.below(9) as i64 - 4).max(0)),
                1 => *offsets = vec![json!(e), json!(b)],
                2 => *offsets = vec![json!(b + 1), json!(e + 1)],
                3 => offsets.push(json!(e)),
                4 => offsets[rng.below(2)] = odd_value(rng),
                _ => {
                    // Swap ranges with another tensor.
                    let other = rng.pick(&names).clone();
                    let theirs = header[&other]["data_offsets"].clone();
                    let mine = header[&name]["data_offsets"].clone();
                    header[&name]["data_offsets"] = theirs;
                    header[&other]["data_offsets"] = mine;
                }
            }
            ("data_offsets", reserialise(&header))
        }
        4 => {
            let shape = header[&name]["shape"].as_array_mut().unwrap();
            match rng.below(6) {
                0 if shape.len() >= 2 => shape.swap(0, 1),
                1 => shape.push(json!(1)),
                2 => shape.insert(0, json!(1)),
                3 if !shape.is_empty() => {
                    let i = rng.below(shape.len());
                    shape[i] = json!(shape[i].as_u64().unwrap() as i64 + rng.below(3) as i64 - 1);
                }
                4 if !shape.is_empty() => {
                    let i = rng.below(shape.len());
                    shape[i] = odd_value(rng);
                }
                _ => {
                    shape.pop();
                }
            }
            ("shape", reserialise(&header))
        }
        5 => {
            let dtypes = [
                "F32", "F16", "BF16", "I32", "U32", "F64", "I64", "U8", "BOOL", "f32", "Q4", "F4",
                "",
            ];
            header[&name]["dtype"] = if rng.chance(90) {
                json!(rng.pick(&dtypes))
            } else {
                odd_value(rng)
            };
            ("dtype", reserialise(&header))
        }
        6 => {
            let entry = header.remove(&name).unwrap();
            let new = match rng.below(4) {
                0 => rng.pick(&names).clone(),
                1 => format!("{name}.x"),
                2 => name.to_uppercase(),
                _ => "__metadata__".into(),
            };
            header.insert(new, entry);
            ("name", reserialise(&header))
        }
        7 => {
            match rng.below(4) {
                0 => {
                    header.remove(&name);
                }
                1 => {
                    header[&name]["extra"] = odd_value(rng);
                }
                2 => {
                    header[&name] = odd_value(rng);
                }
                _ => {
                    let key = rng.pick(&["dtype", "shape", "data_offsets"]);
                    header[&name].as_object_mut().unwrap().remove(*key);
                }
            }
            ("entry", reserialise(&header))
        }
        8 => {
            header.insert(
                "__metadata__".into(),
                match rng.below(4) {
                    0 => json!({"format": "pt", "note": "fuzz"}),
                    1 => json!({}),
                    2 => json!({"n": rng.below(5)}),
                    _ => odd_value(rng),
                },
            );
            ("__metadata__", reserialise(&header))
        }
        9 => {
            // Same tensors, other text: pretty-printed, padded with spaces, or leading space.
            let mut text = if rng.chance(50) {
                serde_json::to_vec_pretty(&header).unwrap()
            } else {
                serde_json::to_vec(&header).unwrap()
            };
            match rng.below(3) {
                0 => text.extend(std::iter::repeat_n(b' ', rng.below(9))),
                1 => text.insert(0, b' '),
                _ => text.extend_from_slice(b"\n\t"),
            }
            ("whitespace", st.with_text(&text))
        }
        _ => {
            let mut out = orig.to_vec();
            if rng.chance(50) {
                out.truncate(orig.len() - 1 - rng.below(64));
            } else {
                out.extend(std::iter::repeat_n(0u8, 1 + rng.below(8)));
            }
            ("file length", out)
        }
    }
}

/// Checks one header variant against [`spec`]; `Ok(true)` if it describes exactly the
/// original tensors (which the caller then runs).
fn check_header(
    dir: &Path,
    bytes: &[u8],
    original: &BTreeMap<String, (Vec<usize>, Vec<u8>)>,
) -> Result<bool, String> {
    let file = dir.join("model.safetensors");
    std::fs::write(&file, bytes).unwrap();
    let verdict = spec(bytes);
    let opened = catching(|| Checkpoint::open(dir))?;
    let described = match (verdict, opened) {
        (Err(_), Err(e)) => {
            one_line(&e)?;
            if !e.contains("model.safetensors") {
                return Err(format!("error does not name the file: {e}"));
            }
            return Ok(false);
        }
        (Err(why), Ok(_)) => return Err(format!("accepted a file the format refuses ({why})")),
        (Ok(_), Err(e)) => return Err(format!("refused a valid file: {e}")),
        (Ok(described), Ok(ck)) => {
            let names: Vec<&str> = described.keys().map(String::as_str).collect();
            if ck.names() != names {
                return Err(format!(
                    "tensor names {:?}, header has {names:?}",
                    ck.names()
                ));
            }
            for (name, d) in &described {
                if ck.dtype(name) != Some(d.dtype.as_str()) || ck.shape(name) != Some(&d.shape) {
                    return Err(format!("tensor `{name}`: dtype or shape differs"));
                }
                let raw = &bytes[d.range.0..d.range.1];
                match (decode(&d.dtype, raw), catching(|| ck.tensor(name))?) {
                    (Some(want), Ok(t)) if t.bytes()[..] == want[..] => {}
                    (Some(_), Ok(_)) => return Err(format!("tensor `{name}` reads other bytes")),
                    (Some(_), Err(e)) => return Err(format!("tensor `{name}` unreadable: {e}")),
                    (None, Ok(_)) => return Err(format!("tensor `{name}` read as f32")),
                    (None, Err(e)) => one_line(&e)?,
                }
            }
            described
        }
    };
    let same = described.len() == original.len()
        && described.iter().all(|(name, d)| {
            let raw = &bytes[d.range.0..d.range.1];
            d.dtype == "F32"
                && original
                    .get(name)
                    .is_some_and(|(shape, data)| *shape == d.shape && data[..] == raw[..])
        });
    if !same {
        // Other tensors: building may fail, but only with one line.
        let built = catching(|| HfModel::open(dir).and_then(|m| m.graph(Entry::Prefill)))?;
        if let Err(e) = built {
            one_line(&e)?;
        }
    }
    Ok(same)
}

#[test]
fn mutated_safetensors_headers() {
    let scale = explore().unwrap_or(1);
    let mut rng = Rng::new("safetensors-header", scale);
    let mut failures = Failures {
        explore: explore().is_some(),
        ..Default::default()
    };
    let start = Instant::now();
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let dirs: Vec<TempDir> = MODELS
        .iter()
        .map(|m| TempDir::new(&format!("fuzz-{m}")))
        .collect();
    let mut corpus = vec![];
    for (model, dir) in MODELS.iter().zip(&dirs) {
        let src = common::model_dir(model);
        std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
        let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
        let st = StFile::parse(&bytes);
        let described = spec(&bytes).expect("the fixture is valid");
        let original: BTreeMap<String, (Vec<usize>, Vec<u8>)> = described
            .iter()
            .map(|(n, d)| {
                let data = bytes[d.range.0..d.range.1].to_vec();
                (n.clone(), (d.shape.clone(), data))
            })
            .collect();
        corpus.push((*model, dir, bytes, st, original, reference(model)));
    }
    let mut runs = 0;
    for case in 0..HEADER_CASES * scale {
        let (model, dir, bytes, st, original, (feeds, want)) = &corpus[case % corpus.len()];
        let (kind, variant) = mutate_header(&mut rng, bytes, st);
        let what = format!("{model} {kind} variant #{case}");
        let outcome = check_header(dir.path(), &variant, original).and_then(|same| {
            if !same {
                return Ok(if spec(&variant).is_ok() {
                    "valid, other tensors"
                } else {
                    "refused"
                });
            }
            runs += 1;
            let graph = HfModel::open(dir.path())?.graph(Entry::Prefill)?;
            let got = interpret(&graph, feeds)?;
            let err = common::max_abs_diff(&got, want)?;
            if err > 1e-4 {
                return Err(format!("same tensors, output off by {err}"));
            }
            Ok("same tensors, reference output")
        });
        match outcome {
            Ok(verdict) => *counts.entry((kind, verdict)).or_default() += 1,
            Err(e) => {
                let path =
                    std::env::temp_dir().join(format!("kiln-fuzz-{model}-{case}.safetensors"));
                std::fs::write(&path, &variant).unwrap();
                failures.record(&format!("{what} (saved as {})", path.display()), e);
            }
        }
    }
    for ((kind, verdict), n) in &counts {
        println!("header {kind:22} {verdict:32} {n}");
    }
    println!(
        "{} header variants ({runs} run on the interpreter) in {:.1} s",
        HEADER_CASES * scale,
        start.elapsed().as_secs_f64()
    );
    failures.check("safetensors headers");
}

// ---------------------------------------------------------------------------------------------
// Config mutations.

/// Keys kiln reads (for some architecture); mutations of their values.
const KNOWN: &[&str] = &[
    "hidden_size",
    "n_embd",
    "dim",
    "num_hidden_layers",
    "n_layer",
    "n_layers",
    "num_attention_heads",
    "n_head",
    "n_heads",
    "num_key_value_heads",
    "head_dim",
    "intermediate_size",
    "n_inner",
    "hidden_dim",
    "vocab_size",
    "max_position_embeddings",
    "n_positions",
    "layer_norm_eps",
    "layer_norm_epsilon",
    "rms_norm_eps",
    "hidden_act",
    "activation_function",
    "activation",
    "type_vocab_size",
    "tie_word_embeddings",
    "attention_bias",
    "use_parallel_residual",
    "rotary_pct",
    "partial_rotary_factor",
    "rotary_emb_base",
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "qk_layernorm",
    "dtype",
    "torch_dtype",
    "architectures",
    "model_type",
];

/// Keys kiln ignores: editing them must not change the parsed config.
const IGNORED: &[&str] = &[
    "transformers_version",
    "initializer_range",
    "use_cache",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "attention_dropout",
    "hidden_dropout",
    "dropout",
    "resid_pdrop",
    "classifier_dropout",
    "sinusoidal_pos_embds",
    "kiln_fuzz_unknown_key",
];

const ACTIVATION_NAMES: &[&str] = &[
    "gelu",
    "gelu_new",
    "gelu_pytorch_tanh",
    "relu",
    "silu",
    "swish",
    "quick_gelu",
    "foo",
    "",
    "gelu_fast",
    "tanh",
    "GELU",
    "relu6",
    "mish",
];

const ARCHITECTURE_NAMES: &[&str] = &[
    "BertModel",
    "BertForMaskedLM",
    "DistilBertModel",
    "DistilBertForMaskedLM",
    "GPT2LMHeadModel",
    "GPTNeoXForCausalLM",
    "PhiForCausalLM",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen2ForCausalLM",
    "T5Model",
    "FooForBar",
    "",
];

/// A value for a config key.
fn config_value(rng: &mut Rng, old: Option<&Value>) -> Value {
    let n = old.and_then(Value::as_f64).unwrap_or(64.0);
    match rng.below(16) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(n as i64 + 1),
        3 => json!((n as i64 - 1).max(0)),
        4 => json!(n * 2.0),
        5 => json!(n / 2.0),
        6 => json!(1u64 << 40),
        7 => json!(u64::MAX),
        8 => json!(1e30),
        9 => json!(format!("{n}")),
        10 => Value::Null,
        11 => json!(rng.chance(50)),
        12 => json!([n]),
        13 => json!({"rope_type": rng.pick(&["default", "linear", "dynamic", "yarn"]),
                     "factor": rng.pick(&[0.5, 1.0, 2.0]),
                     "rope_theta": rng.pick(&[10.0, 10000.0]),
                     "partial_rotary_factor": rng.pick(&[0.25, 0.5, 1.0, 0.3])}),
        14 => json!(rng.pick(ACTIVATION_NAMES)),
        _ => json!(*rng.pick(&[0.25, 0.5, 1.0, 1e-5, 1e-12, 7.0])),
    }
}

/// One mutation of a config object; returns its kind.
fn mutate_config(rng: &mut Rng, config: &mut Map<String, Value>) -> &'static str {
    let present: Vec<String> = KNOWN
        .iter()
        .filter(|k| config.contains_key(**k))
        .map(|k| k.to_string())
        .collect();
    match rng.below(8) {
        0 | 1 => {
            let key = rng.pick(&present).clone();
            let v = config_value(rng, config.get(&key));
            config.insert(key, v);
            "known value"
        }
        2 => {
            let key = rng.pick(KNOWN).to_string();
            let v = config_value(rng, config.get(&key));
            config.insert(key, v);
            "known key set"
        }
        3 => {
            let key = rng.pick(&present).clone();
            config.remove(&key);
            "removed key"
        }
        4 => {
            let arch = rng.pick(ARCHITECTURE_NAMES);
            match rng.below(3) {
                0 => config.insert("architectures".into(), json!([arch])),
                1 => config.insert("architectures".into(), odd_architectures(rng)),
                _ => {
                    config.remove("architectures");
                    let types = [
                        "bert",
                        "distilbert",
                        "gpt2",
                        "gpt_neox",
                        "phi",
                        "llama",
                        "t5",
                    ];
                    config.insert("model_type".into(), json!(rng.pick(&types)))
                }
            };
            "architecture"
        }
        5 => {
            let keys = ["hidden_act", "activation_function", "activation"];
            let key = keys
                .iter()
                .find(|k| config.contains_key(**k))
                .unwrap_or(&"hidden_act");
            config.insert(key.to_string(), json!(rng.pick(ACTIVATION_NAMES)));
            "activation"
        }
        6 => {
            let mut params = config
                .get("rope_parameters")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let key = rng.pick(&["rope_type", "rope_theta", "partial_rotary_factor", "factor"]);
            let v = config_value(rng, params.get(*key));
            params.insert(key.to_string(), v);
            config.insert("rope_parameters".into(), Value::Object(params));
            "rope_parameters"
        }
        _ => {
            let key = rng.pick(IGNORED).to_string();
            let v = config_value(rng, config.get(&key));
            config.insert(key, v);
            "ignored key"
        }
    }
}

fn odd_architectures(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!([]),
        1 => json!("GPT2LMHeadModel"),
        2 => json!([1]),
        _ => json!(["PhiForCausalLM", "GPT2LMHeadModel"]),
    }
}

/// What the compiled graph gives on `feeds` against the interpreter's `want`.
fn compiled_matches(
    graph: &kiln_ir::Graph,
    feeds: &HashMap<String, Tensor>,
    want: &Tensor,
) -> Result<(), String> {
    let options = common::options(1, kiln_codegen::Backend::cranelift());
    let feeds = common::with_empty_states(graph, feeds);
    let out = common::run_compiled(graph, &feeds, &options)?;
    let err = common::max_abs_diff(&out[0].1, want)?;
    if err > 1e-4 {
        return Err(format!("compiled differs from the interpreter by {err}"));
    }
    Ok(())
}

/// Checks one config variant; returns the verdict for the counts.
fn check_config(
    dir: &Path,
    kind: &str,
    base: &HfConfig,
    feeds: &HashMap<String, Tensor>,
    want: &Tensor,
    compiled: &mut Vec<String>,
) -> Result<&'static str, String> {
    let model = match catching(|| HfModel::open(dir))? {
        Ok(m) => m,
        Err(e) => {
            one_line(&e)?;
            if !e.contains(&dir.display().to_string()) {
                return Err(format!("error does not name the file: {e}"));
            }
            return Ok("refused");
        }
    };
    let same = model.config == *base;
    if kind == "ignored key" && !same {
        return Err(format!(
            "an ignored key changed the config: {:?}",
            model.config
        ));
    }
    let graph = match catching(|| model.graph(Entry::Prefill))? {
        Ok(g) => g,
        Err(e) if !same => {
            one_line(&e)?;
            return Ok("refused when built");
        }
        Err(e) => return Err(format!("the original config, refused: {e}")),
    };
    if model.is_causal() {
        if let Err(e) = catching(|| model.graph(Entry::Decode))? {
            one_line(&e)?;
        }
    }
    let got = match catching(|| interpret(&graph, feeds))? {
        Ok(t) => t,
        Err(e) if !same => {
            one_line(&e)?;
            return Ok("refused when run");
        }
        Err(e) => return Err(format!("the original config failed to run: {e}")),
    };
    if same {
        let err = common::max_abs_diff(&got, want)?;
        if err > 1e-4 {
            return Err(format!("same config, output off by {err}"));
        }
        return Ok("same config, reference output");
    }
    let key = format!("{:?}", model.config);
    if compiled.len() < MAX_COMPILES && !compiled.contains(&key) {
        compiled.push(key);
        catching(|| compiled_matches(&graph, feeds, &got))??;
        return Ok("other config, compiled = interpreted");
    }
    Ok("other config, interpreted")
}

#[test]
fn mutated_configs() {
    let scale = explore().unwrap_or(1);
    let mut rng = Rng::new("hf-config", scale);
    let mut failures = Failures {
        explore: explore().is_some(),
        ..Default::default()
    };
    let start = Instant::now();
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut corpus = vec![];
    for model in MODELS {
        let src = common::model_dir(model);
        let dir = TempDir::new(&format!("fuzz-config-{model}"));
        let weights = src.join("model.safetensors");
        if std::fs::hard_link(&weights, dir.join("model.safetensors")).is_err() {
            std::fs::copy(&weights, dir.join("model.safetensors")).unwrap();
        }
        let text = std::fs::read_to_string(src.join("config.json")).unwrap();
        let config: Map<String, Value> = serde_json::from_str(&text).unwrap();
        let base = HfModel::open(&src).unwrap().config;
        corpus.push((model, dir, config, base, reference(model)));
    }
    let mut compiled = vec![];
    for case in 0..CONFIG_CASES * scale {
        let (model, dir, config, base, (feeds, want)) = &corpus[case % corpus.len()];
        let mut variant = config.clone();
        let mut kind = mutate_config(&mut rng, &mut variant);
        if rng.chance(20) {
            let second = mutate_config(&mut rng, &mut variant);
            if kind != second || kind != "ignored key" {
                kind = "two edits";
            }
        }
        let text = serde_json::to_string_pretty(&variant).unwrap();
        std::fs::write(dir.join("config.json"), &text).unwrap();
        match check_config(dir.path(), kind, base, feeds, want, &mut compiled) {
            Ok(verdict) => *counts.entry((kind, verdict)).or_default() += 1,
            Err(e) => failures.record(&format!("{model} {kind} #{case}: {text}"), e),
        }
    }
    for ((kind, verdict), n) in &counts {
        println!("config {kind:16} {verdict:40} {n}");
    }
    println!(
        "{} config variants ({} compiled) in {:.1} s",
        CONFIG_CASES * scale,
        compiled.len(),
        start.elapsed().as_secs_f64()
    );
    failures.check("configs");
}

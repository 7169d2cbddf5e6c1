//! Robustness of the model and tensor readers against corrupted files, and of the answers
//! they lead to.
//!
//! Deterministic (fixed-seed ChaCha, no failure persistence) proptest runs mutate the real
//! reference files and feed every variant to kiln's readers, proving that malformed input gives
//! an error, never a panic, a hang, a huge allocation or a silently wrong answer:
//!
//! - **ONNX, byte level** (10,000 variants): `kiln_frontends::onnx::load_model` on a temp file,
//!   and `import_model` on the proto whenever prost decodes the bytes (the two must agree, and
//!   their errors must be one line). The corpora are the real `bert` model (mutations biased
//!   towards its non-weight bytes) and compact but equivalent copies of `bert` and `llama` built
//!   here with prost: node metadata stripped and every initializer over 256 bytes moved to an
//!   external `weights.bin`, so that mutations hit graph structure, small constants and external
//!   data entries rather than weights, and a load costs well under a millisecond.
//! - **ONNX, field level** (5,000 variants): edits of decoded compact models (dims, element
//!   types, shape constants, external data entries, declared input dims, attributes, wiring, op
//!   types, opset, dropped or swapped nodes), re-encoded and checked the same way.
//! - Every model variant that loads is inspected (what `kiln inspect` computes) and run on the
//!   interpreter with the `b1_s16` fixture inputs; the run must return `Ok` or a one-line `Err`.
//!   A variant whose inferred shapes exceed `interp::MAX_ELEMENTS` somewhere must be refused by
//!   the interpreter; one under that limit but over 2^28 elements is not run (too big for a
//!   test). The test binary refuses any single allocation over 1 GiB.
//! - **Answers of accepted ONNX variants** ([`Oracle`]): a variant whose imported graph is the
//!   original's (same text form and constant bytes) must give the fixture's reference output
//!   within 1e-4; any other variant the interpreter runs is, when its graph falls in a fixed
//!   share (by a hash of its text form; `KILN_FUZZ_COMPILE_ALL=1` takes every one), also
//!   optimised and compiled with Cranelift, as `kiln run` does, and run on the same inputs: the
//!   outputs must agree within 1e-4 (relative above 1; NaN only with NaN), or the compiled path
//!   must refuse with a one-line error (see [`Oracle`] for the answers counted apart). A weight
//!   corpus (bytes of the real bert's initializers flipped or overwritten) adds variants that
//!   nearly all load. About 2,000 answers are checked a run; each corpus asserts a minimum.
//! - **.npy** (12,000 variants): `kiln_ir::npy::parse_npy` on mutated fixture inputs/outputs and
//!   on generated files of every supported dtype, Fortran order and header versions 1 to 3. A
//!   parsed tensor must re-serialise to a file that parses back to the same bytes; mutated `bert`
//!   inputs that still parse are fed to the model on the interpreter and on the compiled path
//!   (compiled once): the two must agree within 1e-4 or both refuse with one-line errors (the
//!   compiled path may also refuse alone; answering what the interpreter refuses is a failure).
//!   At least 2,000 such answers are checked a run.
//!
//! Byte mutations: truncation at a random point, bit flips, overwrites with random bytes,
//! printable text, protobuf tags or varints of extreme values (negative, 2^40, 2^50,
//! `i64::MAX`), inserted and deleted byte ranges, and splices from the same or another file.
//!
//! Also here: the fixtures at batch 0 and sequence length 0 (interpreter against compiled), and
//! gpt2 with a Reshape target of the wrong element count (refused at import when provable, at
//! run time otherwise).
//!
//! A failure reports the panic location, the shrunk input, what it changed in the model, and
//! a saved copy of the failing file with the `kiln run` command reproducing it. Per-corpus
//! counts (cases, rejected, accepted, answer-checked, disagreements) and timings are printed
//! with `cargo test --test robustness -- --nocapture`; `KILN_FUZZ_EXPLORE=1` lists every
//! distinct failure instead of stopping at the first (see [`fuzz`]), and `KILN_FUZZ_EXPLORE=N`
//! runs N times as many cases.

mod common;

use common::TempDir;

use kiln_codegen::Backend;
use kiln_frontends::onnx::proto::tensor_proto::DataLocation;
use kiln_frontends::onnx::proto::tensor_shape_proto::dimension;
use kiln_frontends::onnx::proto::{type_proto, ModelProto, StringStringEntryProto, TensorProto};
use kiln_frontends::onnx::{import_model, load_model};
use kiln_ir::infer::fmt_shape;
use kiln_ir::npy::{npy_bytes, parse_npy};
use kiln_ir::text::{print_with_weights, WeightsBlob};
use kiln_ir::{Graph, Tensor};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use prost::bytes::Bytes;
use prost::Message;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::time::Instant;

/// Variants per ONNX corpus; together at least 10,000.
const BERT_EXTERNAL_CASES: u32 = 5_000;
const LLAMA_EXTERNAL_CASES: u32 = 3_000;
const BERT_FULL_CASES: u32 = 2_000;
const NPY_CASES: u32 = 12_000;
/// The fewest mutated bert inputs whose answers (or errors) are compared on both paths.
const NPY_MIN_CHECKED: usize = 2_000;
/// Field-level edits of decoded models (in addition to the byte-level variants).
const BERT_EDIT_CASES: u32 = 3_000;
const LLAMA_EDIT_CASES: u32 = 2_000;
const _: () = assert!(BERT_EXTERNAL_CASES + LLAMA_EXTERNAL_CASES + BERT_FULL_CASES >= 10_000);
/// Per ONNX corpus: compile one distinct variant graph in this many (see [`Oracle`]), and the
/// fewest answers the corpus must check. The minimums leave room for changes elsewhere (rules,
/// kernels) that make a few more variants refused; a run checks about 2,000 answers.
const BERT_EXTERNAL_COMPILE: (u64, usize) = (1, 280);
const LLAMA_EXTERNAL_COMPILE: (u64, usize) = (1, 120);
const BERT_FULL_COMPILE: (u64, usize) = (1, 290);
const BERT_EDIT_COMPILE: (u64, usize) = (1, 250);
/// Weight mutations of the real bert model (every one compiled).
const BERT_WEIGHT_CASES: u32 = 650;
const BERT_WEIGHT_COMPILE: (u64, usize) = (1, 500);
const LLAMA_EDIT_COMPILE: (u64, usize) = (1, 160);
const _: () = assert!(
    BERT_EXTERNAL_COMPILE.1
        + LLAMA_EXTERNAL_COMPILE.1
        + BERT_FULL_COMPILE.1
        + BERT_EDIT_COMPILE.1
        + LLAMA_EDIT_COMPILE.1
        + BERT_WEIGHT_COMPILE.1
        >= 1_600
);

/// Initializers larger than this many bytes go to `weights.bin` in the compact models.
const EXTERNAL_THRESHOLD: usize = 256;

// ---------------------------------------------------------------------------------------------
// Scaffolding: an allocation cap, temp dirs, fixtures, the runner.

/// The system allocator, refusing any single allocation over 1 GiB (no legitimate one in these
/// tests comes close). A library bug that sizes a buffer from corrupted input then aborts the
/// test at once with `memory allocation of N bytes failed` (a backtrace with
/// `RUST_BACKTRACE=1`), instead of thrashing or being killed by the OOM killer.
///
/// Values whose size is known before running are checked first (see [`predicted_huge_value`]);
/// this cap catches the rest, including sizes the interpreter allows (up to
/// `interp::MAX_ELEMENTS`, 4 GiB of f32) that only become known at run time.
struct CappedAlloc;

const ALLOC_CAP: usize = 1 << 30;

// SAFETY: forwards to `System`, or reports failure (null) as `GlobalAlloc` allows.
unsafe impl std::alloc::GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            return std::ptr::null_mut();
        }
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP {
            return std::ptr::null_mut();
        }
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        if new > ALLOC_CAP {
            return std::ptr::null_mut();
        }
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: CappedAlloc = CappedAlloc;

/// Runs `test` on `cases` values of `strategy` with a fixed ChaCha seed derived from `tag`, so
/// every run tries the same variants.
///
/// A panic inside `test` becomes a failure naming the panic's location; proptest shrinks the
/// failing input, and the test fails with the minimal input and `explain(minimal input)` (which
/// saves a reproduction file and says how to run it).
///
/// With `KILN_FUZZ_EXPLORE=1` the run does not stop at the first failure: every case runs, and
/// the distinct failures are listed at the end (with a count and the first input that hit
/// each), which is quicker when several bugs are open at once. `KILN_FUZZ_EXPLORE=N` for N > 1
/// also runs N times as many cases from another seed.
fn fuzz<S: Strategy>(
    tag: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
    explain: impl Fn(&S::Value) -> String,
) -> Failures {
    let explore: Option<u32> = std::env::var("KILN_FUZZ_EXPLORE")
        .ok()
        .map(|v| v.parse().unwrap_or(1));
    let scale = explore.unwrap_or(1).max(1);
    let config = Config {
        cases: cases * scale,
        rng_algorithm: RngAlgorithm::ChaCha,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut seed = [0x6bu8; 32];
    for (i, b) in tag.bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    seed[31] ^= (scale - 1) as u8;
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let run_case = |value: S::Value| -> Result<(), TestCaseError> {
        match common::panics::catching(|| test(value)) {
            Ok(result) => result,
            Err(panic) => Err(TestCaseError::fail(format!("panic at {panic}"))),
        }
    };
    if explore.is_none() {
        match runner.run(&strategy, run_case) {
            Ok(()) => {}
            Err(TestError::Fail(reason, value)) => panic!(
                "{tag}: {reason}\nminimal failing input: {value:?}\n{}",
                explain(&value)
            ),
            Err(e) => panic!("{tag}: {e}"),
        }
        return Failures(0);
    }
    let found: RefCell<BTreeMap<String, (usize, String)>> = RefCell::default();
    let result = runner.run(&strategy, |value| {
        let shown = format!("{value:?}");
        // If the process aborts (allocation failure), this names the culprit.
        let last = std::env::temp_dir().join(format!("kiln-fuzz-last-{tag}.txt"));
        std::fs::write(last, &shown).unwrap();
        if let Err(e) = run_case(value) {
            // Grouped by message without the `quoted` names.
            let key = e
                .to_string()
                .split('`')
                .enumerate()
                .map(|(i, p)| if i % 2 == 0 { p } else { "_" })
                .collect::<Vec<_>>()
                .join("`");
            found.borrow_mut().entry(key).or_insert((0, shown)).0 += 1;
        }
        Ok(())
    });
    result.unwrap();
    let found = found.into_inner();
    for (key, (n, first)) in &found {
        println!("{tag}: {n} x {key}\n    first input: {first}");
    }
    Failures(found.len())
}

/// How many distinct failures an exploring run found (always 0 otherwise: failures panic).
#[must_use = "check it after printing the run's statistics"]
struct Failures(usize);

impl Failures {
    fn check(self, tag: &str) {
        assert_eq!(
            self.0, 0,
            "{tag}: {} distinct failures (listed above)",
            self.0
        );
    }
}

/// Fails the case unless `msg` is a non-empty single line.
fn one_line(what: &str, msg: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !msg.is_empty() && !msg.contains(['\n', '\r']),
        "{what}: error is not one line: {msg:?}"
    );
    Ok(())
}

/// True if some identifier in the model (a node, value, tensor, op or attribute name, a domain
/// or an external data entry) contains a line break.
///
/// Known issue (reported, not fixed here): the importer and the interpreter quote such names
/// verbatim, so errors about them span several lines. The one-line check is skipped for these
/// models (and the number of such cases printed); every other error must be one line.
fn has_multiline_names(model: &ModelProto) -> bool {
    let bad = |s: &str| s.contains(['\n', '\r']);
    let opt = |s: &Option<String>| s.as_deref().is_some_and(bad);
    let Some(g) = &model.graph else {
        return false;
    };
    model.opset_import.iter().any(|o| opt(&o.domain))
        || g.node.iter().any(|n| {
            opt(&n.name)
                || opt(&n.op_type)
                || opt(&n.domain)
                || n.input.iter().chain(&n.output).any(|s| bad(s))
                || n.attribute.iter().any(|a| {
                    opt(&a.name) || a.t.as_ref().is_some_and(|t| opt(&t.name))
                })
        })
        || g.initializer.iter().any(|t| {
            opt(&t.name)
                || t
                    .external_data
                    .iter()
                    .any(|e| opt(&e.key) || opt(&e.value))
        })
        || g.input.iter().chain(&g.output).any(|v| {
            opt(&v.name)
                || matches!(
                    v.r#type.as_ref().and_then(|t| t.value.as_ref()),
                    Some(type_proto::Value::TensorType(t)) if t.shape.iter().flat_map(|s| &s.dim).any(|d| {
                        matches!(&d.value, Some(dimension::Value::DimParam(p)) if bad(p))
                    })
                )
        })
}

/// The `b1_s16` fixture inputs of a reference model.
fn fixture_feeds(model: &str) -> HashMap<String, Tensor> {
    let io = common::model_dir(model).join("io");
    ["input_ids", "attention_mask"]
        .into_iter()
        .map(|n| {
            let t = kiln_ir::npy::read_npy(&io.join(format!("b1_s16.{n}.npy"))).unwrap();
            (n.to_string(), t)
        })
        .collect()
}

fn expected_output(model: &str) -> Tensor {
    let io = common::model_dir(model).join("io");
    kiln_ir::npy::read_npy(&io.join("b1_s16.output.npy")).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Mutations.

/// A position in the file being mutated: anywhere (`hot == false`) or inside the corpus'
/// "hot" ranges (structure rather than weight bytes).
#[derive(Clone, Debug)]
struct Pos {
    hot: bool,
    index: Index,
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Cut the file at a point.
    Truncate(Pos),
    /// Flip one bit.
    Flip(Pos, u8),
    /// Overwrite bytes in place.
    Overwrite(Pos, Vec<u8>),
    /// Insert bytes.
    Insert(Pos, Vec<u8>),
    /// Delete a range.
    Delete(Pos, usize),
    /// Copy `len` bytes from `from` in the donor file (or this file) to `at`, replacing or
    /// inserting.
    Splice {
        at: Pos,
        from: Index,
        len: usize,
        donor: bool,
        replace: bool,
    },
}

/// Varints that make protobuf integers extreme: 0, small, 2^31, 2^32 - 1, 2^40, 2^50,
/// `i64::MAX`, -1, -2, -(2^50).
const EXTREME_INTS: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    1 << 31,
    (1 << 32) - 1,
    1 << 40,
    1 << 50,
    i64::MAX as u64,
    u64::MAX,
    -2i64 as u64,
    -(1i64 << 50) as u64,
];

/// Bytes that are common protobuf tags (field 1 to 8, varint or length-delimited) and edges.
const TAG_BYTES: &[u8] = &[
    0x00, 0x01, 0x08, 0x0a, 0x10, 0x12, 0x1a, 0x22, 0x2a, 0x3a, 0x42, 0x7f, 0x80, 0xff,
];

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn pos(hot: f64) -> impl Strategy<Value = Pos> {
    (prop::bool::weighted(hot), any::<Index>()).prop_map(|(hot, index)| Pos { hot, index })
}

fn some_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 1..8),
        select(EXTREME_INTS).prop_map(varint),
        vec(select(TAG_BYTES), 1..4),
        // Printable ASCII keeps strings valid UTF-8: names change instead of decoding failing.
        vec(0x20u8..0x7f, 1..8),
    ]
}

/// One mutation; positions fall in the corpus' hot ranges with probability `hot`.
fn mutation(hot: f64) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => pos(hot).prop_map(Mutation::Truncate),
        3 => (pos(hot), 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        3 => (pos(hot), some_bytes()).prop_map(|(p, b)| Mutation::Overwrite(p, b)),
        2 => (pos(hot), some_bytes()).prop_map(|(p, b)| Mutation::Insert(p, b)),
        2 => (pos(hot), 1usize..64).prop_map(|(p, n)| Mutation::Delete(p, n)),
        1 => (pos(hot), any::<Index>(), 1usize..256, any::<bool>(), any::<bool>()).prop_map(
            |(at, from, len, donor, replace)| Mutation::Splice { at, from, len, donor, replace }
        ),
    ]
}

/// One to three mutations.
fn mutations(hot: f64) -> impl Strategy<Value = Vec<Mutation>> {
    vec(mutation(hot), 1..4)
}

/// A list of one range.
fn ranges(r: Range<usize>) -> Vec<Range<usize>> {
    std::iter::once(r).collect()
}

/// A file to mutate, the ranges mutations prefer, and a donor for splices.
struct Corpus {
    bytes: Vec<u8>,
    hot: Vec<Range<usize>>,
    donor: Vec<u8>,
}

impl Corpus {
    /// A byte offset in `buf` (of length `len`) for `p`; `len` itself is allowed (the end).
    fn at(&self, p: &Pos, len: usize) -> usize {
        let hot_len: usize = self.hot.iter().map(|r| r.len()).sum();
        let i = if p.hot && hot_len > 0 {
            let mut k = p.index.index(hot_len);
            let mut at = 0;
            for r in &self.hot {
                if k < r.len() {
                    at = r.start + k;
                    break;
                }
                k -= r.len();
            }
            at
        } else {
            p.index.index(len + 1)
        };
        i.min(len)
    }

    fn apply(&self, ms: &[Mutation]) -> Vec<u8> {
        let mut b = self.bytes.clone();
        for m in ms {
            match m {
                Mutation::Truncate(p) => {
                    let at = self.at(p, b.len());
                    b.truncate(at);
                }
                Mutation::Flip(p, bit) => {
                    let at = self.at(p, b.len());
                    if let Some(x) = b.get_mut(at) {
                        *x ^= 1 << bit;
                    }
                }
                Mutation::Overwrite(p, with) => {
                    let at = self.at(p, b.len());
                    for (i, &x) in with.iter().enumerate() {
                        if let Some(y) = b.get_mut(at + i) {
                            *y = x;
                        }
                    }
                }
                Mutation::Insert(p, bytes) => {
                    let at = self.at(p, b.len());
                    b.splice(at..at, bytes.iter().copied());
                }
                Mutation::Delete(p, n) => {
                    let at = self.at(p, b.len());
                    b.drain(at..(at + n).min(b.len()));
                }
                Mutation::Splice {
                    at,
                    from,
                    len,
                    donor,
                    replace,
                } => {
                    let src = if *donor { &self.donor } else { &self.bytes };
                    if src.is_empty() {
                        continue;
                    }
                    let start = from.index(src.len());
                    let piece = src[start..(start + len).min(src.len())].to_vec();
                    let at = self.at(at, b.len());
                    let end = if *replace {
                        (at + piece.len()).min(b.len())
                    } else {
                        at
                    };
                    b.splice(at..end, piece);
                }
            }
        }
        b
    }
}

// ---------------------------------------------------------------------------------------------
// ONNX corpora.

/// The byte ranges of `model_bytes` that are not initializer `raw_data` (found by decoding from
/// a shared buffer, whose `raw_data` fields are views into it).
fn structure_ranges(model_bytes: &[u8]) -> Vec<Range<usize>> {
    let buf = Bytes::copy_from_slice(model_bytes);
    let base = buf.as_ptr() as usize;
    let model = ModelProto::decode(buf.clone()).unwrap();
    let mut weights: Vec<Range<usize>> = model
        .graph
        .iter()
        .flat_map(|g| &g.initializer)
        .filter_map(|t| t.raw_data.as_ref())
        .filter(|r| !r.is_empty())
        .map(|r| {
            let start = r.as_ptr() as usize - base;
            start..start + r.len()
        })
        .collect();
    weights.sort_by_key(|r| r.start);
    let mut hot = vec![];
    let mut at = 0;
    for w in weights {
        if w.start > at {
            hot.push(at..w.start);
        }
        at = at.max(w.end);
    }
    hot.push(at..model_bytes.len());
    hot
}

fn entry(key: &str, value: String) -> StringStringEntryProto {
    StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value),
    }
}

/// A compact, equivalent copy of a reference model: node metadata and doc strings stripped,
/// every initializer over [`EXTERNAL_THRESHOLD`] bytes moved to `weights.bin` in `dir`.
/// Returns the encoded model.
fn compact_model(name: &str, dir: &Path) -> Vec<u8> {
    let bytes = std::fs::read(common::model_dir(name).join("model.onnx")).unwrap();
    let mut model = ModelProto::decode(Bytes::from(bytes)).unwrap();
    let graph = model.graph.as_mut().unwrap();
    for node in &mut graph.node {
        node.metadata_props.clear();
        node.doc_string = None;
    }
    graph.value_info.clear();
    let mut weights = vec![];
    for init in &mut graph.initializer {
        let Some(raw) = init.raw_data.take_if(|r| r.len() > EXTERNAL_THRESHOLD) else {
            continue;
        };
        // 64-byte aligned, as exporters write it.
        weights.resize(weights.len().next_multiple_of(64), 0);
        init.data_location = Some(DataLocation::External as i32);
        init.external_data = vec![
            entry("location", "weights.bin".into()),
            entry("offset", weights.len().to_string()),
            entry("length", raw.len().to_string()),
        ];
        weights.extend_from_slice(&raw);
    }
    std::fs::write(dir.join("weights.bin"), weights).unwrap();
    model.encode_to_vec()
}

#[derive(Default)]
struct Counts {
    tried: Cell<usize>,
    decoded: Cell<usize>,
    loaded: Cell<usize>,
    ran_ok: Cell<usize>,
    ran_err: Cell<usize>,
    multiline_names: Cell<usize>,
    too_big: Cell<usize>,
    /// Variants whose imported graph is the original's, checked against the reference output.
    same_graph: Cell<usize>,
    /// Variants whose interpreter outputs were compared with the compiled path's.
    compared: Cell<usize>,
    /// Distinct graphs compiled (equal graphs share one compilation).
    compiled: Cell<usize>,
    /// Variants the compiled path refused (with a one-line error) after the interpreter ran them.
    compiled_err: Cell<usize>,
    /// Answers that disagreed with their oracle (each one also fails the case).
    disagreements: Cell<usize>,
    /// Compiled answers that differ from the interpreter's in a variant with more float
    /// constants beyond [`F32_RANGE_LIMIT`] than the original, not disagreements ([`Oracle`]).
    beyond_f32: Cell<usize>,
}

fn bump(c: &Cell<usize>) {
    c.set(c.get() + 1);
}

/// What `kiln inspect` computes, which must not panic on any loaded graph.
fn inspect(g: &Graph) {
    for v in g.inputs() {
        let _ = fmt_shape(&g.value(v).ty.shape);
    }
    for (_, v) in g.outputs() {
        let _ = fmt_shape(&g.value(*v).ty.shape);
    }
    let _ = g.op_histogram();
    let _ = g.parameter_totals();
}

/// Values larger than this many elements are not computed in these tests: no legitimate one
/// comes close, and the allocation cap ([`CappedAlloc`]) is 1 GiB.
const HUGE_ELEMENTS: i64 = 1 << 28;

/// The largest value a node of `graph` would produce for `feeds`, as far as it is known before
/// running: statically inferred output shapes evaluated for the inputs, and the lengths of
/// `Range` nodes whose arguments are known symbolically. Returns the element count (saturated)
/// and a description, if some value exceeds [`HUGE_ELEMENTS`].
fn predicted_huge_value(graph: &Graph, feeds: &HashMap<String, Tensor>) -> Option<(f64, String)> {
    let bindings = kiln_ir::interp::bind_symbols(graph, feeds).ok()?;
    for id in graph.node_ids() {
        let node = graph.node(id);
        let Some(op) = node.op() else { continue };
        if op.kind == kiln_ir::OpKind::Range {
            let arg = |i: usize| -> Option<i64> {
                let v = graph.value((*node.inputs.get(i)?)?);
                v.ty.sym.as_ref()?.first()?.eval(&bindings)
            };
            if let (Some(start), Some(limit), Some(delta)) = (arg(0), arg(1), arg(2)) {
                let n = ((limit as f64 - start as f64) / delta as f64).ceil();
                if delta != 0 && n > HUGE_ELEMENTS as f64 {
                    let what = format!(
                        "Range({start}, {limit}, {delta}) in node `{}` has {n:.0} elements",
                        node.name
                    );
                    return Some((n, what));
                }
            }
        }
        for v in &node.outputs {
            let n =
                v.ty.shape
                    .iter()
                    .map(|d| d.eval(&bindings))
                    .try_fold(1i64, |acc, d| Some(acc.saturating_mul(d?.max(0))));
            if let Some(n) = n.filter(|&n| n > HUGE_ELEMENTS) {
                let what = format!(
                    "output `{}` of node `{}` ({}) has {n} elements",
                    v.name, node.name, op.kind
                );
                return Some((n as f64, what));
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Answer oracles.

/// How far two computations of one output may differ: `|a - b| <= TOLERANCE * max(1, |b|)`
/// (absolute for the fixtures' values, relative for the huge ones mutated weights can give).
const TOLERANCE: f64 = 1e-4;

/// Checks that `got` has the names, dtypes and shapes of `want` and elements within
/// [`TOLERANCE`]; NaN matches only NaN, an infinity only itself.
fn compare_outputs(got: &[(String, Tensor)], want: &[(String, Tensor)]) -> Result<(), String> {
    let names = |o: &[(String, Tensor)]| o.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if names(got) != names(want) {
        return Err(format!(
            "outputs {:?}, expected {:?}",
            names(got),
            names(want)
        ));
    }
    for ((name, a), (_, b)) in got.iter().zip(want) {
        if a.dtype() != b.dtype() || a.shape() != b.shape() {
            return Err(format!(
                "output `{name}` is {}{:?}, expected {}{:?}",
                a.dtype(),
                a.shape(),
                b.dtype(),
                b.shape()
            ));
        }
        let (x, y) = (a.to_f64_array(), b.to_f64_array());
        for (i, (&p, &q)) in x.iter().zip(y.iter()).enumerate() {
            let close = if p.is_nan() || q.is_nan() {
                p.is_nan() && q.is_nan()
            } else {
                p == q || (p - q).abs() <= TOLERANCE * q.abs().max(1.0)
            };
            if !close {
                return Err(format!(
                    "output `{name}` element {i} (of {}) is {p}, expected {q}",
                    x.len()
                ));
            }
        }
    }
    Ok(())
}

/// A graph's text form with its constants' bytes: equal for two graphs exactly when they
/// compute the same thing the same way (names included).
fn printed(graph: &Graph) -> (String, Vec<u8>) {
    let mut weights = WeightsBlob::default();
    let text = print_with_weights(graph, &mut weights);
    (text, weights.bytes().to_vec())
}

/// A float constant larger in magnitude than this (or NaN) puts a variant beyond what f32
/// arithmetic computes reliably: its squares overflow f32 (as in a LayerNorm's variance) or
/// cancel catastrophically, while the interpreter accumulates in f64.
const F32_RANGE_LIMIT: f64 = 1e9;

/// How many elements of `graph`'s float constants are beyond [`F32_RANGE_LIMIT`] (or NaN).
/// Models have a few on purpose (attention masks filled with f32's lowest value).
fn extreme_constants(graph: &Graph) -> usize {
    graph
        .node_ids()
        .map(|id| match &graph.node(id).kind {
            kiln_ir::NodeKind::Constant(data) if data.dtype().is_float() => Tensor::from_data(data)
                .to_f64_array()
                .iter()
                .filter(|v| v.is_nan() || v.abs() > F32_RANGE_LIMIT)
                .count(),
            _ => 0,
        })
        .sum()
}

fn hash_of(p: &(String, Vec<u8>)) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.hash(&mut h);
    h.finish()
}

/// A run's named outputs.
type Outputs = Vec<(String, Tensor)>;

/// What an accepted model variant's answer is checked against:
///
/// - a variant that imports to exactly the original graph (see [`printed`]) must give the
///   fixture's reference output (within [`TOLERANCE`]);
/// - any other variant that runs on the interpreter is also compiled (optimised with the
///   built-in rules, Cranelift kernels, as `kiln run` does) and run on the same inputs, when its
///   graph falls in the compiled share (see [`Oracle::selected`]): the compiled path must agree
///   with the interpreter, or refuse with a one-line error. A compiled answer that differs in a
///   variant with more float constants beyond [`F32_RANGE_LIMIT`] than the original (a mutated
///   weight of 1e36, say) is counted apart: f32 kernels cannot match the interpreter's f64
///   accumulation there.
struct Oracle {
    original: (String, Vec<u8>),
    /// [`extreme_constants`] of the original graph.
    original_extremes: usize,
    reference: Vec<(String, Tensor)>,
    /// One graph in this many (by a hash of its text form, so a fixed subset) is compiled.
    compile_one_in: u64,
    /// Compiled outcomes by graph hash: equal graphs on the same inputs give the same answer.
    compiled: RefCell<HashMap<u64, Result<Outputs, String>>>,
}

impl Oracle {
    /// The oracle for variants of `original`, a graph of fixture `model`.
    fn new(original: &Graph, model: &str, compile_one_in: u64) -> Oracle {
        let name = original.outputs()[0].0.clone();
        Oracle {
            original: printed(original),
            original_extremes: extreme_constants(original),
            reference: vec![(name, expected_output(model))],
            compile_one_in: compile_one_in.max(1),
            compiled: RefCell::default(),
        }
    }

    /// True if a graph with this text-form hash is in the compiled share: with
    /// `KILN_FUZZ_COMPILE_ALL` set, every graph is.
    fn selected(&self, hash: u64) -> bool {
        std::env::var_os("KILN_FUZZ_COMPILE_ALL").is_some()
            || (hash >> 7).is_multiple_of(self.compile_one_in)
    }

    /// Checks an accepted variant's interpreter result (see the type's doc).
    fn check(
        &self,
        graph: &Graph,
        feeds: &HashMap<String, Tensor>,
        interp: &Result<Vec<(String, Tensor)>, kiln_ir::interp::RunError>,
        counts: &Counts,
        check_lines: bool,
    ) -> Result<(), TestCaseError> {
        let disagree = |msg: String| {
            bump(&counts.disagreements);
            Err(TestCaseError::fail(msg))
        };
        let p = printed(graph);
        if p == self.original {
            bump(&counts.same_graph);
            return match interp {
                Err(e) => disagree(format!(
                    "the variant imports to the original graph, which the interpreter refuses: {e}"
                )),
                Ok(outputs) => match compare_outputs(outputs, &self.reference) {
                    Ok(()) => Ok(()),
                    Err(e) => disagree(format!(
                        "the variant imports to the original graph but differs from the reference: {e}"
                    )),
                },
            };
        }
        let Ok(outputs) = interp else {
            return Ok(());
        };
        let hash = hash_of(&p);
        if !self.selected(hash) {
            return Ok(());
        }
        let compiled = self
            .compiled
            .borrow_mut()
            .entry(hash)
            .or_insert_with(|| {
                bump(&counts.compiled);
                common::run_compiled(graph, feeds, &common::options(1, Backend::cranelift()))
            })
            .clone();
        match compiled {
            Ok(c) => match compare_outputs(&c, outputs) {
                Ok(()) => {
                    bump(&counts.compared);
                    Ok(())
                }
                Err(_) if extreme_constants(graph) > self.original_extremes => {
                    bump(&counts.beyond_f32);
                    Ok(())
                }
                Err(e) => disagree(format!(
                    "the compiled path disagrees with the interpreter: {e}"
                )),
            },
            Err(e) => {
                bump(&counts.compiled_err);
                if check_lines {
                    one_line("compiled path", &e)?;
                }
                Ok(())
            }
        }
    }
}

/// Loads one variant from a file and from its decoded proto, checks the two agree, runs it on
/// the interpreter if it loads, and checks an answer against the oracle.
fn check_model_variant(
    bytes: Vec<u8>,
    dir: &Path,
    feeds: &HashMap<String, Tensor>,
    counts: &Counts,
    oracle: &Oracle,
) -> Result<(), TestCaseError> {
    bump(&counts.tried);
    let path = dir.join("variant.onnx");
    // A new file each time: the previous variant's mapping must never see its file change.
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, &bytes).unwrap();
    if std::env::var_os("KILN_FUZZ_EXPLORE").is_some() {
        // Left behind if the process aborts: the variant that did it.
        std::fs::write(dir.join("last.onnx"), &bytes).unwrap();
    }
    let loaded = load_model(&path);
    let _ = std::fs::remove_file(&path);
    let mut check_lines = true;
    match ModelProto::decode(Bytes::from(bytes)) {
        Ok(model) => {
            bump(&counts.decoded);
            if has_multiline_names(&model) {
                bump(&counts.multiline_names);
                check_lines = false;
            }
            let imported = import_model(&model, dir);
            match (&loaded, &imported) {
                (Ok(_), Ok(_)) => {}
                (Err(l), Err(i)) => {
                    if check_lines {
                        one_line("import_model", i)?;
                    }
                    prop_assert!(
                        model.graph.is_none() || l.ends_with(i.as_str()),
                        "load_model: {l}\nimport_model: {i}"
                    );
                }
                (l, i) => prop_assert!(
                    false,
                    "load_model and import_model disagree: {:?} vs {:?}",
                    l.as_ref().err(),
                    i.as_ref().err()
                ),
            }
        }
        Err(_) => prop_assert!(loaded.is_err(), "load_model accepted undecodable bytes"),
    }
    match loaded {
        Err(e) => {
            if check_lines {
                one_line("load_model", &e)?;
            }
            prop_assert!(e.starts_with(&path.display().to_string()), "{e}");
        }
        Ok(graph) => {
            bump(&counts.loaded);
            inspect(&graph);
            if let Some((n, what)) = predicted_huge_value(&graph, feeds) {
                if n > kiln_ir::interp::MAX_ELEMENTS as f64 {
                    // The interpreter must refuse it before allocating (interp::MAX_ELEMENTS).
                    let refused = kiln_ir::interp::run(&graph, feeds).is_err();
                    prop_assert!(refused, "{what}: the interpreter accepted it");
                    bump(&counts.ran_err);
                } else {
                    // Within kiln's limit but too big to compute here.
                    bump(&counts.too_big);
                }
                return Ok(());
            }
            let interp = kiln_ir::interp::run(&graph, feeds);
            match &interp {
                Ok(_) => bump(&counts.ran_ok),
                Err(e) => {
                    bump(&counts.ran_err);
                    if check_lines {
                        one_line("interp::run", &e.0)?;
                    }
                }
            }
            oracle.check(&graph, feeds, &interp, counts, check_lines)?;
        }
    }
    Ok(())
}

/// Prints a corpus' counts on one line: cases, rejected, accepted, answer-checked (against
/// the reference or the compiled path) and disagreements, then the details.
fn print_counts(tag: &str, what: &str, counts: &Counts, elapsed: std::time::Duration) {
    let (tried, loaded) = (counts.tried.get(), counts.loaded.get());
    println!(
        "{tag}: {tried} cases ({what}) in {elapsed:.1?}: {} rejected, {loaded} accepted, {} \
         answer-checked ({} against the reference, {} against the compiled path), {} \
         disagreements; {} decoded ({} with line breaks in names), {} ran Ok, {} ran Err, {} \
         too big to run, {} distinct graphs compiled, {} refused by the compiled path, {} \
         compiled answers beyond f32 range",
        tried - loaded,
        counts.same_graph.get() + counts.compared.get(),
        counts.same_graph.get(),
        counts.compared.get(),
        counts.disagreements.get(),
        counts.decoded.get(),
        counts.multiline_names.get(),
        counts.ran_ok.get(),
        counts.ran_err.get(),
        counts.too_big.get(),
        counts.compiled.get(),
        counts.compiled_err.get(),
        counts.beyond_f32.get(),
    );
}

fn fuzz_model(
    tag: &str,
    cases: u32,
    corpus: &Corpus,
    dir: &Path,
    model: &str,
    oracle: &Oracle,
    min_checked: usize,
) {
    let feeds = fixture_feeds(model);
    let counts = Counts::default();
    let start = Instant::now();
    let failures = fuzz(
        tag,
        cases,
        mutations(0.75),
        |ms| check_model_variant(corpus.apply(&ms), dir, &feeds, &counts, oracle),
        |ms| save_model_repro(tag, &corpus.apply(ms), &corpus.bytes, dir, model),
    );
    let what = format!("variants of a {}-byte model", corpus.bytes.len());
    print_counts(tag, &what, &counts, start.elapsed());
    failures.check(tag);
    assert!(counts.tried.get() >= cases as usize);
    assert!(counts.loaded.get() > 0, "{tag}: no variant loaded at all");
    check_enough_answers(tag, &counts, min_checked);
}

/// Fails unless at least `min` answers were checked.
fn check_enough_answers(tag: &str, counts: &Counts, min: usize) {
    let checked = counts.same_graph.get() + counts.compared.get();
    assert!(
        checked >= min,
        "{tag}: only {checked} answers checked, fewer than {min}"
    );
}

/// Saves a failing model variant (with the external weights it refers to) where it outlives
/// the test, and says how to reproduce the failure and what differs from the original model.
fn save_model_repro(tag: &str, bytes: &[u8], original: &[u8], dir: &Path, model: &str) -> String {
    let out = std::env::temp_dir().join(format!("kiln-fuzz-{tag}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    if dir.join("weights.bin").exists() {
        std::fs::copy(dir.join("weights.bin"), out.join("weights.bin")).unwrap();
    }
    let path = out.join("model.onnx");
    std::fs::write(&path, bytes).unwrap();
    let io = common::model_dir(model).join("io");
    let mut text = format!(
        "the minimal failing model is saved as {0}; reproduce with\n  \
         cargo run -- run {0} -i input_ids={1}/b1_s16.input_ids.npy \
         -i attention_mask={1}/b1_s16.attention_mask.npy -o {2}",
        path.display(),
        io.display(),
        out.join("out").display()
    );
    let decode = |b: &[u8]| ModelProto::decode(b).ok();
    if let (Some(a), Some(b)) = (decode(original), decode(bytes)) {
        text.push_str("\nchanges from the original model:");
        for change in model_changes(&a, &b) {
            text.push_str("\n  ");
            text.push_str(&change);
        }
    }
    text
}

/// What differs between two versions of a model, one line per item.
fn model_changes(a: &ModelProto, b: &ModelProto) -> Vec<String> {
    let mut out = vec![];
    if a.opset_import != b.opset_import {
        out.push(format!(
            "opsets {:?} -> {:?}",
            a.opset_import.iter().map(|o| o.version).collect::<Vec<_>>(),
            b.opset_import.iter().map(|o| o.version).collect::<Vec<_>>()
        ));
    }
    let (Some(ga), Some(gb)) = (&a.graph, &b.graph) else {
        out.push("the graph is gone".into());
        return out;
    };
    let short = |s: String| -> String {
        if s.len() > 300 {
            format!("{}...", s.chars().take(300).collect::<String>())
        } else {
            s
        }
    };
    let mut list = |what: &str, x: Vec<String>, y: Vec<String>, name: &dyn Fn(usize) -> String| {
        if x.len() != y.len() {
            out.push(format!("{} {what}s (was {})", y.len(), x.len()));
        }
        for (i, (x, y)) in x.iter().zip(&y).enumerate() {
            if x != y {
                out.push(short(format!("{what} {}: {x}  ->  {y}", name(i))));
            }
        }
    };
    let node = |n: &kiln_frontends::onnx::proto::NodeProto| {
        let attrs: Vec<String> = n
            .attribute
            .iter()
            .map(|a| {
                let name = a.name.clone().unwrap_or_default();
                match (a.i, a.ints.is_empty()) {
                    (Some(i), _) => format!("{name}={i}"),
                    (None, false) => format!("{name}={:?}", a.ints),
                    _ => name,
                }
            })
            .collect();
        format!(
            "{}{:?} -> {:?} [{}]",
            n.op_type.as_deref().unwrap_or(""),
            n.input,
            n.output,
            attrs.join(", ")
        )
    };
    list(
        "node",
        ga.node.iter().map(node).collect(),
        gb.node.iter().map(node).collect(),
        &|i| format!("`{}`", gb.node[i].name.as_deref().unwrap_or("")),
    );
    let tensor = |t: &TensorProto| {
        let raw = t.raw_data.as_ref().map(|r| {
            let shown: Vec<u8> = r.iter().copied().take(16).collect();
            format!(" raw {} bytes {shown:?}", r.len())
        });
        let ext: Vec<String> = t
            .external_data
            .iter()
            .map(|e| {
                format!(
                    "{}={}",
                    e.key.as_deref().unwrap_or(""),
                    e.value.as_deref().unwrap_or("")
                )
            })
            .collect();
        format!(
            "`{}` type {} dims {:?}{} {}",
            t.name.as_deref().unwrap_or(""),
            t.data_type.unwrap_or(0),
            t.dims,
            raw.unwrap_or_default(),
            ext.join(" ")
        )
    };
    list(
        "initializer",
        ga.initializer.iter().map(tensor).collect(),
        gb.initializer.iter().map(tensor).collect(),
        &|i| i.to_string(),
    );
    let value = |v: &kiln_frontends::onnx::proto::ValueInfoProto| {
        let ty = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => {
                let dims: Vec<String> = t
                    .shape
                    .iter()
                    .flat_map(|s| &s.dim)
                    .map(|d| match &d.value {
                        Some(dimension::Value::DimValue(v)) => v.to_string(),
                        Some(dimension::Value::DimParam(p)) => format!("{p:?}"),
                        None => "?".into(),
                    })
                    .collect();
                format!("type {} [{}]", t.elem_type.unwrap_or(0), dims.join(", "))
            }
            other => format!("{other:?}"),
        };
        format!("`{}` {ty}", v.name.as_deref().unwrap_or(""))
    };
    list(
        "input",
        ga.input.iter().map(value).collect(),
        gb.input.iter().map(value).collect(),
        &|i| i.to_string(),
    );
    list(
        "output",
        ga.output.iter().map(value).collect(),
        gb.output.iter().map(value).collect(),
        &|i| i.to_string(),
    );
    if out.is_empty() {
        out.push("none in the graph's nodes, initializers, inputs and outputs".into());
    }
    out
}

/// Builds the compact copy of `model`, checks it still reproduces the reference output, and
/// returns it as a corpus (all bytes hot) with the oracle for its variants (compiling one graph
/// in `compile_one_in`).
fn compact_corpus(model: &str, donor: &str, dir: &Path, compile_one_in: u64) -> (Corpus, Oracle) {
    let bytes = compact_model(model, dir);
    let path = dir.join("compact.onnx");
    std::fs::write(&path, &bytes).unwrap();
    let graph = load_model(&path).unwrap();
    let out = kiln_ir::interp::run(&graph, &fixture_feeds(model)).unwrap();
    let diff = common::max_abs_diff(&out[0].1, &expected_output(model)).unwrap();
    assert!(
        diff < 1e-4,
        "compact {model} differs from the reference by {diff}"
    );
    let oracle = Oracle::new(&graph, model, compile_one_in);
    drop(graph);
    std::fs::remove_file(&path).unwrap();
    let corpus = Corpus {
        hot: ranges(0..bytes.len()),
        bytes,
        donor: std::fs::read(common::model_dir(donor).join("model.onnx")).unwrap(),
    };
    (corpus, oracle)
}

#[test]
fn mutated_compact_bert_models_never_panic() {
    let dir = TempDir::new("bert-external");
    let (corpus, oracle) = compact_corpus("bert", "llama", dir.path(), BERT_EXTERNAL_COMPILE.0);
    fuzz_model(
        "bert-external",
        BERT_EXTERNAL_CASES,
        &corpus,
        dir.path(),
        "bert",
        &oracle,
        BERT_EXTERNAL_COMPILE.1,
    );
}

#[test]
fn mutated_compact_llama_models_never_panic() {
    let dir = TempDir::new("llama-external");
    let (corpus, oracle) = compact_corpus("llama", "bert", dir.path(), LLAMA_EXTERNAL_COMPILE.0);
    fuzz_model(
        "llama-external",
        LLAMA_EXTERNAL_CASES,
        &corpus,
        dir.path(),
        "llama",
        &oracle,
        LLAMA_EXTERNAL_COMPILE.1,
    );
}

#[test]
fn mutated_full_bert_models_never_panic() {
    let dir = TempDir::new("bert-full");
    let path = common::model_dir("bert").join("model.onnx");
    let bytes = std::fs::read(&path).unwrap();
    let oracle = Oracle::new(&load_model(&path).unwrap(), "bert", BERT_FULL_COMPILE.0);
    let corpus = Corpus {
        hot: structure_ranges(&bytes),
        bytes,
        donor: std::fs::read(common::model_dir("gpt2").join("model.onnx")).unwrap(),
    };
    fuzz_model(
        "bert-full",
        BERT_FULL_CASES,
        &corpus,
        dir.path(),
        "bert",
        &oracle,
        BERT_FULL_COMPILE.1,
    );
}

/// The byte ranges of `model_bytes` that are initializer `raw_data` (the gaps between
/// [`structure_ranges`]).
fn weight_ranges(model_bytes: &[u8]) -> Vec<Range<usize>> {
    let mut weights = vec![];
    let mut at = 0;
    for r in structure_ranges(model_bytes) {
        if r.start > at {
            weights.push(at..r.start);
        }
        at = r.end;
    }
    weights
}

/// One to three bit flips or overwrites inside the corpus' hot ranges (the file keeps its size).
fn in_place_mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (pos(1.0), 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (pos(1.0), some_bytes()).prop_map(|(p, b)| Mutation::Overwrite(p, b)),
    ];
    vec(one, 1..4)
}

/// Weight bytes of the real bert model flipped or overwritten: nearly every variant loads and
/// runs, so this corpus mostly checks the compiled path's answers against the interpreter's.
#[test]
fn bert_models_with_mutated_weights_compile_to_the_interpreters_answers() {
    let tag = "bert-weights";
    let dir = TempDir::new(tag);
    let path = common::model_dir("bert").join("model.onnx");
    let bytes = std::fs::read(&path).unwrap();
    let oracle = Oracle::new(&load_model(&path).unwrap(), "bert", BERT_WEIGHT_COMPILE.0);
    let corpus = Corpus {
        hot: weight_ranges(&bytes),
        bytes,
        donor: vec![],
    };
    let feeds = fixture_feeds("bert");
    let counts = Counts::default();
    let start = Instant::now();
    let failures = fuzz(
        tag,
        BERT_WEIGHT_CASES,
        in_place_mutations(),
        |ms| check_model_variant(corpus.apply(&ms), dir.path(), &feeds, &counts, &oracle),
        |ms| save_model_repro(tag, &corpus.apply(ms), &corpus.bytes, dir.path(), "bert"),
    );
    let what = format!("weight mutations of a {}-byte model", corpus.bytes.len());
    print_counts(tag, &what, &counts, start.elapsed());
    failures.check(tag);
    check_enough_answers(tag, &counts, BERT_WEIGHT_COMPILE.1);
}

// ---------------------------------------------------------------------------------------------
// .npy files.

/// A hand-written `.npy` file: `header` is the dict text, padded and terminated here.
fn npy_file(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let len_bytes = if version == 1 { 2 } else { 4 };
    let mut h = header.to_string();
    let unpadded = 6 + 2 + len_bytes + h.len() + 1;
    h.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    h.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend([version, 0]);
    if version == 1 {
        out.extend((h.len() as u16).to_le_bytes());
    } else {
        out.extend((h.len() as u32).to_le_bytes());
    }
    out.extend(h.as_bytes());
    out.extend(data);
    out
}

/// The .npy corpus: every fixture file of the three models, plus generated files of each
/// supported dtype and layout. The second field names the bert input a file can be fed as.
fn npy_corpus() -> Vec<(Vec<u8>, Option<&'static str>)> {
    let mut files = vec![];
    for model in ["bert", "gpt2", "llama"] {
        for case in ["b1_s16", "b2_s33"] {
            for what in ["input_ids", "attention_mask", "output"] {
                let path = common::model_dir(model).join(format!("io/{case}.{what}.npy"));
                let feed = match (model, case, what) {
                    ("bert", "b1_s16", "input_ids") => Some("input_ids"),
                    ("bert", "b1_s16", "attention_mask") => Some("attention_mask"),
                    _ => None,
                };
                files.push((std::fs::read(path).unwrap(), feed));
            }
        }
    }
    let generated = [
        Tensor::from_vec(&[2, 3], vec![1.5f32, -2.0, 0.0, 3.25, f32::MAX, -0.5]),
        Tensor::from_vec(&[2, 2], vec![-1i8, 2, -128, 127]),
        Tensor::from_vec(&[4], vec![0u8, 1, 200, 255]),
        Tensor::from_vec(&[1, 2, 2], vec![i32::MIN, -1, 0, i32::MAX]),
        Tensor::from_vec(&[], vec![42i64]),
        Tensor::from_vec(&[0, 5], Vec::<i64>::new()),
        Tensor::from_vec(&[2, 3], vec![true, false, true, true, false, false]),
    ];
    for t in generated {
        files.push((npy_bytes(&t.unwrap()).unwrap(), None));
    }
    let f32s: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    files.push((
        npy_file(
            1,
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
            &f32s,
        ),
        None,
    ));
    // f16 1.0, 65504 (max), -1.0, NaN.
    let f16s: Vec<u8> = [0x3c00u16, 0x7bff, 0xbc00, 0x7e00]
        .iter()
        .flat_map(|b| b.to_le_bytes())
        .collect();
    files.push((
        npy_file(
            1,
            "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }",
            &f16s,
        ),
        None,
    ));
    files.push((
        npy_file(
            2,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }",
            &f32s,
        ),
        None,
    ));
    files.push((
        npy_file(
            3,
            "{\"descr\": \"<i8\", \"fortran_order\": False, \"shape\": (1L,)}",
            &7i64.to_le_bytes(),
        ),
        None,
    ));
    for (bytes, _) in &files {
        parse_npy(bytes).expect("every unmutated .npy in the corpus parses");
    }
    files
}

/// Where the data of a valid .npy file starts (the header is the hot range).
fn npy_data_start(bytes: &[u8]) -> usize {
    let (len_at, len_bytes) = if bytes[6] == 1 { (8, 2) } else { (8, 4) };
    let len = bytes[len_at..len_at + len_bytes]
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | b as usize);
    len_at + len_bytes + len
}

#[test]
fn mutated_npy_files_never_panic() {
    let files = npy_corpus();
    let corpora: Vec<(Corpus, Option<&str>)> = files
        .iter()
        .enumerate()
        .map(|(i, (bytes, feed))| {
            // Mutations of the files fed to bert favour the data (the token ids and mask), which
            // keeps most of them parsing, so that their answers can be checked.
            let hot = match feed {
                Some(_) => npy_data_start(bytes)..bytes.len(),
                None => 0..npy_data_start(bytes),
            };
            let corpus = Corpus {
                hot: ranges(hot),
                bytes: bytes.clone(),
                donor: files[(i + 1) % files.len()].0.clone(),
            };
            (corpus, *feed)
        })
        .collect();
    let all: Vec<usize> = (0..corpora.len()).collect();
    let feedable: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| corpora[i].1.is_some())
        .collect();
    let bert = load_model(&common::model_dir("bert").join("model.onnx")).unwrap();
    let compiled = kiln_codegen::plan::compile(
        &common::optimized(&bert).unwrap(),
        &common::options(1, Backend::cranelift()),
    )
    .unwrap();
    let feeds = fixture_feeds("bert");
    let (tried, parsed, fed, fed_ok) = (Cell::new(0), Cell::new(0), Cell::new(0), Cell::new(0));
    let (checked, compiled_err, disagreements) = (Cell::new(0), Cell::new(0), Cell::new(0));
    let start = Instant::now();
    let failures = fuzz(
        "npy",
        NPY_CASES,
        (
            prop::bool::weighted(0.4),
            any::<Index>(),
            mutations(0.5),
            prop::bool::weighted(0.8),
            in_place_mutations(),
        ),
        |(bert_input, which, ms, in_place, flips)| {
            bump(&tried);
            // 40% of the cases mutate a bert input, to feed the model what still parses; most of
            // those flip or overwrite bytes of its data, which keeps the file parsing.
            let pool = if bert_input { &feedable } else { &all };
            let (corpus, feed) = &corpora[pool[which.index(pool.len())]];
            let bytes = corpus.apply(if bert_input && in_place { &flips } else { &ms });
            let t = match parse_npy(&bytes) {
                Ok(t) => t,
                Err(e) => return one_line("parse_npy", &e),
            };
            bump(&parsed);
            prop_assert_eq!(t.len(), t.shape().iter().product::<usize>());
            // A valid tensor: it serialises, and the file parses back to the same bytes.
            let again = npy_bytes(&t).map_err(TestCaseError::fail)?;
            let back = parse_npy(&again).map_err(TestCaseError::fail)?;
            prop_assert_eq!(npy_bytes(&back).map_err(TestCaseError::fail)?, again);
            if let Some(name) = feed {
                bump(&fed);
                let mut feeds = feeds.clone();
                feeds.insert(name.to_string(), t);
                let interp = kiln_ir::interp::run(&bert, &feeds);
                let fast = compiled
                    .run(&feeds)
                    .map(|(outputs, _)| outputs)
                    .map_err(|e| e.to_string());
                let disagree = |msg: String| {
                    bump(&disagreements);
                    Err(TestCaseError::fail(msg))
                };
                match (interp, fast) {
                    (Ok(want), Ok(got)) => {
                        bump(&fed_ok);
                        bump(&checked);
                        if let Err(e) = compare_outputs(&got, &want) {
                            return disagree(format!(
                                "the compiled path disagrees with the interpreter: {e}"
                            ));
                        }
                    }
                    (Ok(_), Err(e)) => {
                        bump(&fed_ok);
                        bump(&compiled_err);
                        one_line("compiled run", &e)?;
                    }
                    (Err(e), Ok(_)) => {
                        return disagree(format!(
                            "the compiled path answers what the interpreter refuses: {e}"
                        ))
                    }
                    (Err(e), Err(f)) => {
                        bump(&checked);
                        one_line("interp::run", &e.0)?;
                        one_line("compiled run", &f)?;
                    }
                }
            }
            Ok(())
        },
        |(bert_input, which, ms, in_place, flips)| {
            let pool = if *bert_input { &feedable } else { &all };
            let (corpus, feed) = &corpora[pool[which.index(pool.len())]];
            let path = std::env::temp_dir().join("kiln-fuzz-npy-minimal.npy");
            let applied = if *bert_input && *in_place { flips } else { ms };
            std::fs::write(&path, corpus.apply(applied)).unwrap();
            format!(
                "the minimal failing file is saved as {}{}",
                path.display(),
                feed.map(|f| format!(" (fed to bert as `{f}`)"))
                    .unwrap_or_default()
            )
        },
    );
    println!(
        "npy: {} cases (variants of {} files) in {:.1?}: {} rejected, {} accepted, {} \
         answer-checked (interpreter against the compiled path), {} disagreements; {} fed to \
         bert: {} ran Ok on the interpreter, {} ran Err, {} refused by the compiled path only",
        tried.get(),
        corpora.len(),
        start.elapsed(),
        tried.get() - parsed.get(),
        parsed.get(),
        checked.get(),
        disagreements.get(),
        fed.get(),
        fed_ok.get(),
        fed.get() - fed_ok.get(),
        compiled_err.get(),
    );
    failures.check("npy");
    assert!(tried.get() >= NPY_CASES as usize);
    assert!(parsed.get() > 0 && fed.get() > 0);
    assert!(
        checked.get() >= NPY_MIN_CHECKED,
        "npy: only {} answers checked, fewer than {NPY_MIN_CHECKED}",
        checked.get()
    );
}

// ---------------------------------------------------------------------------------------------
// Field-level mutations of decoded models.

/// Integers that stress dims, axes, sizes and offsets.
fn extreme_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        -3i64..=3,
        select(
            &[
                -1i64,
                -64,
                15,
                16,
                17,
                63,
                64,
                65,
                128,
                1000,
                1 << 31,
                1 << 32,
                1 << 40,
                (1 << 40) + 1,
                1 << 50,
                i64::MAX,
                i64::MIN,
                i64::MIN + 1,
            ][..]
        ),
    ]
}

/// A change to one field of a decoded model. Indices pick an element of the relevant list.
#[derive(Clone, Debug)]
enum Edit {
    /// Set (or append) one dim of an initializer.
    InitDim(Index, Index, i64),
    /// Replace all dims of an initializer.
    InitDims(Index, Vec<i64>),
    /// Change an initializer's element type code.
    InitType(Index, i32),
    /// Overwrite one element of a small int64 initializer's inline data (shape constants).
    InitValue(Index, Index, i64),
    /// Set an external data entry (`location`, `offset` or `length`) of an initializer.
    External(Index, Index, String),
    /// Drop an initializer.
    DropInit(Index),
    /// Set one declared dim of a graph input (a value, a parameter name, or unset).
    InputDim(Index, Index, Option<i64>, Option<String>),
    /// Change a graph input's element type.
    InputType(Index, i32),
    /// Set an int attribute (or one element of an ints attribute) of a node.
    AttrInt(Index, Index, Index, i64),
    /// Drop an attribute of a node.
    DropAttr(Index, Index),
    /// Wire a node input to another value (any name in the model, empty or unknown).
    Rewire(Index, Index, Index),
    /// Append an input to a node.
    ExtraInput(Index, Index),
    /// Drop a node's last input or output.
    DropInput(Index),
    DropOutput(Index),
    /// Give a node the op type of another node (or a few others).
    OpType(Index, Index),
    /// Remove a node, or swap two.
    DropNode(Index),
    SwapNodes(Index, Index),
    /// Set the default-domain opset version.
    Opset(i64),
    /// Point a graph output at another value.
    Output(Index, Index),
}

const OTHER_OPS: &[&str] = &[
    "FooBar",
    "",
    "Attention",
    "RotaryEmbedding",
    "Einsum",
    "Split",
    "Tile",
    "TopK",
    "Constant",
    "Sum",
    "Max",
    "CastLike",
    "Dropout",
];

fn edit() -> impl Strategy<Value = Edit> {
    let i = any::<Index>;
    let code = prop_oneof![0i32..=26, Just(-1), Just(1000)];
    prop_oneof![
        3 => (i(), i(), extreme_i64()).prop_map(|(a, b, v)| Edit::InitDim(a, b, v)),
        1 => (i(), vec(extreme_i64(), 0..4)).prop_map(|(a, d)| Edit::InitDims(a, d)),
        1 => (i(), code.clone()).prop_map(|(a, c)| Edit::InitType(a, c)),
        4 => (i(), i(), extreme_i64()).prop_map(|(a, b, v)| Edit::InitValue(a, b, v)),
        2 => (i(), i(), prop_oneof![
            extreme_i64().prop_map(|v| v.to_string()),
            select(&["weights.bin", "missing.bin", "../weights.bin", "/etc/passwd", "", ".", "x"][..])
                .prop_map(String::from),
        ]).prop_map(|(a, b, v)| Edit::External(a, b, v)),
        1 => i().prop_map(Edit::DropInit),
        2 => (i(), i(), proptest::option::of(extreme_i64()), proptest::option::of(select(&["batch", "seq", "", "n"][..]).prop_map(String::from)))
            .prop_map(|(a, b, v, p)| Edit::InputDim(a, b, v, p)),
        1 => (i(), code).prop_map(|(a, c)| Edit::InputType(a, c)),
        4 => (i(), i(), i(), extreme_i64()).prop_map(|(a, b, c, v)| Edit::AttrInt(a, b, c, v)),
        1 => (i(), i()).prop_map(|(a, b)| Edit::DropAttr(a, b)),
        3 => (i(), i(), i()).prop_map(|(a, b, c)| Edit::Rewire(a, b, c)),
        1 => (i(), i()).prop_map(|(a, b)| Edit::ExtraInput(a, b)),
        1 => i().prop_map(Edit::DropInput),
        1 => i().prop_map(Edit::DropOutput),
        2 => (i(), i()).prop_map(|(a, b)| Edit::OpType(a, b)),
        1 => i().prop_map(Edit::DropNode),
        1 => (i(), i()).prop_map(|(a, b)| Edit::SwapNodes(a, b)),
        1 => prop_oneof![-1i64..=27, Just(100)].prop_map(Edit::Opset),
        1 => (i(), i()).prop_map(|(a, b)| Edit::Output(a, b)),
    ]
}

/// `list[index]`, if the list is not empty.
fn pick<'a, T>(list: &'a mut [T], index: &Index) -> Option<&'a mut T> {
    if list.is_empty() {
        None
    } else {
        let n = index.index(list.len());
        list.get_mut(n)
    }
}

/// Every value name in the graph, plus an empty and an unknown one.
fn value_names(g: &kiln_frontends::onnx::proto::GraphProto) -> Vec<String> {
    let mut names: Vec<String> = g
        .input
        .iter()
        .filter_map(|v| v.name.clone())
        .chain(g.initializer.iter().filter_map(|t| t.name.clone()))
        .chain(g.node.iter().flat_map(|n| n.output.iter().cloned()))
        .collect();
    names.push(String::new());
    names.push("no_such_value".into());
    names
}

fn apply_edit(model: &mut ModelProto, e: &Edit) {
    let g = model.graph.as_mut().unwrap();
    let names = value_names(g);
    let name = |i: &Index| names[i.index(names.len())].clone();
    match e {
        Edit::InitDim(t, d, v) => {
            if let Some(t) = pick(&mut g.initializer, t) {
                match pick(&mut t.dims, d) {
                    Some(x) => *x = *v,
                    None => t.dims.push(*v),
                }
            }
        }
        Edit::InitDims(t, dims) => {
            if let Some(t) = pick(&mut g.initializer, t) {
                t.dims = dims.clone();
            }
        }
        Edit::InitType(t, c) => {
            if let Some(t) = pick(&mut g.initializer, t) {
                t.data_type = Some(*c);
            }
        }
        Edit::InitValue(t, k, v) => {
            let mut small: Vec<_> = g
                .initializer
                .iter_mut()
                .filter(|t| t.data_type == Some(7) && t.raw_data.is_some())
                .collect();
            if let Some(t) = pick(&mut small, t) {
                let mut raw = t.raw_data.take().unwrap().to_vec();
                let n = raw.len() / 8;
                if n > 0 {
                    let at = k.index(n) * 8;
                    raw[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
                t.raw_data = Some(raw.into());
            }
        }
        Edit::External(t, k, v) => {
            let mut ext: Vec<_> = g
                .initializer
                .iter_mut()
                .filter(|t| !t.external_data.is_empty())
                .collect();
            if let Some(t) = pick(&mut ext, t) {
                if let Some(entry) = pick(&mut t.external_data, k) {
                    entry.value = Some(v.clone());
                }
            }
        }
        Edit::DropInit(t) => {
            if !g.initializer.is_empty() {
                let n = t.index(g.initializer.len());
                g.initializer.remove(n);
            }
        }
        Edit::InputDim(v, d, value, param) => {
            if let Some(Some(type_proto::Value::TensorType(t))) = pick(&mut g.input, v)
                .and_then(|v| v.r#type.as_mut())
                .map(|t| t.value.as_mut())
            {
                if let Some(dim) = t.shape.as_mut().and_then(|s| pick(&mut s.dim, d)) {
                    dim.value = match (value, param) {
                        (Some(v), _) => Some(dimension::Value::DimValue(*v)),
                        (None, Some(p)) => Some(dimension::Value::DimParam(p.clone())),
                        (None, None) => None,
                    };
                }
            }
        }
        Edit::InputType(v, c) => {
            if let Some(Some(type_proto::Value::TensorType(t))) = pick(&mut g.input, v)
                .and_then(|v| v.r#type.as_mut())
                .map(|t| t.value.as_mut())
            {
                t.elem_type = Some(*c);
            }
        }
        Edit::AttrInt(n, a, k, v) => {
            if let Some(a) = pick(&mut g.node, n).and_then(|n| pick(&mut n.attribute, a)) {
                if a.i.is_some() {
                    a.i = Some(*v);
                } else if let Some(x) = pick(&mut a.ints, k) {
                    *x = *v;
                }
            }
        }
        Edit::DropAttr(n, a) => {
            if let Some(n) = pick(&mut g.node, n) {
                if !n.attribute.is_empty() {
                    let k = a.index(n.attribute.len());
                    n.attribute.remove(k);
                }
            }
        }
        Edit::Rewire(n, k, v) => {
            if let Some(slot) = pick(&mut g.node, n).and_then(|n| pick(&mut n.input, k)) {
                *slot = name(v);
            }
        }
        Edit::ExtraInput(n, v) => {
            if let Some(n) = pick(&mut g.node, n) {
                n.input.push(name(v));
            }
        }
        Edit::DropInput(n) => {
            if let Some(n) = pick(&mut g.node, n) {
                n.input.pop();
            }
        }
        Edit::DropOutput(n) => {
            if let Some(n) = pick(&mut g.node, n) {
                n.output.pop();
            }
        }
        Edit::OpType(n, o) => {
            let mut ops: Vec<String> = g.node.iter().filter_map(|n| n.op_type.clone()).collect();
            ops.extend(OTHER_OPS.iter().map(|s| s.to_string()));
            let op = ops[o.index(ops.len())].clone();
            if let Some(n) = pick(&mut g.node, n) {
                n.op_type = Some(op);
            }
        }
        Edit::DropNode(n) => {
            if !g.node.is_empty() {
                let k = n.index(g.node.len());
                g.node.remove(k);
            }
        }
        Edit::SwapNodes(a, b) => {
            if !g.node.is_empty() {
                let (a, b) = (a.index(g.node.len()), b.index(g.node.len()));
                g.node.swap(a, b);
            }
        }
        Edit::Opset(v) => {
            for o in &mut model.opset_import {
                if o.domain.as_deref().unwrap_or("").is_empty() {
                    o.version = Some(*v);
                }
            }
        }
        Edit::Output(o, v) => {
            let v = name(v);
            if let Some(o) = pick(&mut g.output, o) {
                o.name = Some(v);
            }
        }
    }
}

fn fuzz_model_edits(
    tag: &str,
    cases: u32,
    model: &str,
    (compile_one_in, min_checked): (u64, usize),
) {
    let dir = TempDir::new(tag);
    let bytes = compact_model(model, dir.path());
    let original = ModelProto::decode(Bytes::from(bytes.clone())).unwrap();
    let oracle = Oracle::new(
        &import_model(&original, dir.path()).unwrap(),
        model,
        compile_one_in,
    );
    let feeds = fixture_feeds(model);
    let counts = Counts::default();
    let start = Instant::now();
    let edited = |edits: &[Edit]| {
        let mut m = original.clone();
        for e in edits {
            apply_edit(&mut m, e);
        }
        m.encode_to_vec()
    };
    let failures = fuzz(
        tag,
        cases,
        vec(edit(), 1..4),
        |edits| check_model_variant(edited(&edits), dir.path(), &feeds, &counts, &oracle),
        |edits| save_model_repro(tag, &edited(edits), &bytes, dir.path(), model),
    );
    print_counts(
        tag,
        &format!("edited variants of {model}"),
        &counts,
        start.elapsed(),
    );
    failures.check(tag);
    assert!(counts.tried.get() >= cases as usize);
    check_enough_answers(tag, &counts, min_checked);
}

#[test]
fn edited_bert_models_never_panic() {
    fuzz_model_edits("bert-edits", BERT_EDIT_CASES, "bert", BERT_EDIT_COMPILE);
}

#[test]
fn edited_llama_models_never_panic() {
    fuzz_model_edits("llama-edits", LLAMA_EDIT_CASES, "llama", LLAMA_EDIT_COMPILE);
}

// ---------------------------------------------------------------------------------------------
// Empty inputs and wrong Reshape targets in the fixtures.

/// `input_ids` (all token 1) and `attention_mask` (all ones) of shape `[batch, seq]`.
fn token_feeds(batch: usize, seq: usize) -> HashMap<String, Tensor> {
    ["input_ids", "attention_mask"]
        .into_iter()
        .map(|n| {
            let t = Tensor::from_vec(&[batch, seq], vec![1i64; batch * seq]).unwrap();
            (n.to_string(), t)
        })
        .collect()
}

/// Batch 0 and sequence length 0 are valid inputs (onnxruntime runs them): the interpreter and
/// the compiled path must both give the empty output of the right shape.
#[test]
fn fixtures_run_with_seq_0_and_batch_0() {
    for model in ["bert", "gpt2", "llama"] {
        let graph = load_model(&common::model_dir(model).join("model.onnx")).unwrap();
        let width = *expected_output(model).shape().last().unwrap();
        for (batch, seq) in [(1, 0), (2, 0), (0, 16), (0, 0)] {
            let feeds = token_feeds(batch, seq);
            let what = format!("{model} at batch {batch}, seq {seq}");
            let interp = kiln_ir::interp::run(&graph, &feeds)
                .unwrap_or_else(|e| panic!("{what}, interpreter: {e}"));
            assert_eq!(interp[0].1.shape(), &[batch, seq, width], "{what}");
            let compiled =
                common::run_compiled(&graph, &feeds, &common::options(1, Backend::cranelift()))
                    .unwrap_or_else(|e| panic!("{what}, compiled: {e}"));
            compare_outputs(&compiled, &interp).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}

/// gpt2 with its `[-1, 64]` Reshape target (`val_76`, used first by node `node_view_2`)
/// replaced by `target`, and its inputs' dims fixed to `[1, 16]` if `fixed`.
fn gpt2_with_reshape_target(target: [i64; 2], fixed: bool) -> ModelProto {
    let bytes = std::fs::read(common::model_dir("gpt2").join("model.onnx")).unwrap();
    let mut model = ModelProto::decode(Bytes::from(bytes)).unwrap();
    let g = model.graph.as_mut().unwrap();
    let init = g
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some("val_76"))
        .unwrap();
    let raw: Vec<u8> = target.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(init.raw_data.as_ref().unwrap().len(), raw.len());
    init.raw_data = Some(raw.into());
    if fixed {
        for vi in &mut g.input {
            let Some(type_proto::Value::TensorType(t)) =
                vi.r#type.as_mut().and_then(|t| t.value.as_mut())
            else {
                unreachable!("gpt2's inputs are tensors")
            };
            for (d, v) in t.shape.as_mut().unwrap().dim.iter_mut().zip([1, 16]) {
                d.value = Some(dimension::Value::DimValue(v));
            }
        }
    }
    model
}

/// A Reshape whose target has the wrong element count is refused at import when that is
/// provable from the (fixed) input dims, and at run time by the interpreter otherwise; the
/// error names the node.
#[test]
fn gpt2_reshape_with_a_wrong_element_count_is_refused() {
    let dir = common::model_dir("gpt2");
    for target in [[7, 64], [0, 64]] {
        let fixed = gpt2_with_reshape_target(target, true);
        let e = import_model(&fixed, &dir).unwrap_err();
        assert!(
            e.starts_with("node `node_view_2` (Reshape): ") && e.contains("cannot reshape"),
            "{target:?}: {e}"
        );
        // With symbolic batch and seq the counts may match (batch * seq = 7, or seq = 1), so
        // the model imports, and a run whose counts differ fails naming the node.
        let graph = import_model(&gpt2_with_reshape_target(target, false), &dir).unwrap();
        let e = kiln_ir::interp::run(&graph, &fixture_feeds("gpt2")).unwrap_err();
        assert!(
            e.0.starts_with("node `node_view_2` (Reshape): "),
            "{target:?}: {e}"
        );
        if target == [7, 64] {
            // batch 1 and seq 7 is a valid run of that model.
            let out = kiln_ir::interp::run(&graph, &token_feeds(1, 7)).unwrap();
            assert_eq!(out[0].1.shape()[..2], [1, 7]);
        }
    }
}

/// Found by the fuzz suite (`bert-edits`): bert with the mask's `Unsqueeze` axis (`val_46`,
/// node `node_unsqueeze_11`) moved from 2 to 3 is a valid model whose mask, `[batch, 1, seq, 1]`,
/// broadcasts over the keys. The attention rules fused it into a FusedAttention, whose mask
/// must cover every key (a shorter one masks the rest), and the answer moved by about 0.08;
/// the rules now require the mask to be as long as the keys.
#[test]
fn bert_with_a_moved_mask_axis_optimises_to_the_same_answer() {
    let bytes = std::fs::read(common::model_dir("bert").join("model.onnx")).unwrap();
    let mut model = ModelProto::decode(Bytes::from(bytes)).unwrap();
    let init = model
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.name.as_deref() == Some("val_46"))
        .unwrap();
    assert_eq!(init.raw_data.as_deref(), Some(&2i64.to_le_bytes()[..]));
    init.raw_data = Some(Bytes::copy_from_slice(&3i64.to_le_bytes()));
    let graph = import_model(&model, &common::model_dir("bert")).unwrap();
    let feeds = fixture_feeds("bert");
    let interp = kiln_ir::interp::run(&graph, &feeds).unwrap();
    let options = common::options(1, Backend::cranelift());
    let unoptimised = kiln_codegen::plan::compile(&graph, &options)
        .unwrap()
        .run(&feeds)
        .unwrap()
        .0;
    compare_outputs(&unoptimised, &interp).unwrap();
    let optimised = common::run_compiled(&graph, &feeds, &options).unwrap();
    compare_outputs(&optimised, &interp).unwrap();
}

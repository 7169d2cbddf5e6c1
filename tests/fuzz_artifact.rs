//! A fixed-seed fuzz suite for the artefact reader (`kiln_rt::artifact::load`): every case
//! damages one file of a real artefact (the `bert` fixture compiled ahead of time) and loads
//! and runs it, and **an accepted case is checked for its answer**:
//!
//! - **as written** (the manifest untouched): truncations, bit flips, overwrites, insertions
//!   and deletions of `kernels.so`, `plan.json`, `weights.bin` and `manifest.txt`, and edits of
//!   the manifest's words. A damaged library, plan or weights file must be refused by its
//!   checksum (a library is never opened); a manifest edit must be refused, or, if it still
//!   says the same thing (e.g. other white space), give exactly the reference outputs.
//! - **resealed**: `weights.bin` damaged in place (its length kept: one weight set to another
//!   plausible value, bit flips, overwrites) and the manifest's checksum of it recomputed, as a
//!   buggy writer or a hand edit would leave them, so the damage reaches the kernels. Such a
//!   case must be refused with one line, or run to completion with outputs of the reference's
//!   shapes. (The weights hold the kernels' packed panels, which no graph describes, so there
//!   is no interpreter oracle for a changed weight; what is checked is that reading damaged
//!   weights never crashes, never reads outside the file, and never returns malformed
//!   outputs.)
//!
//! Every error must be one non-empty line and no case may panic. `KILN_FUZZ_CASES=N` sets the
//! number of cases (default 2,000); counts per kind are printed with `--nocapture`.

mod common;

use common::{max_abs_diff, TempDir};
use kiln_ir::{npy::read_npy, Tensor};
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

const FILES: [&str; 4] = ["kernels.so", "plan.json", "weights.bin", "manifest.txt"];

/// The number of cases: `KILN_FUZZ_CASES`, else 2,000.
fn cases() -> u64 {
    std::env::var("KILN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// The bert fixture's `b2_s33` inputs.
fn feeds() -> HashMap<String, Tensor> {
    let io = common::model_dir("bert").join("io");
    ["input_ids", "attention_mask"]
        .iter()
        .map(|n| {
            let t = read_npy(&io.join(format!("b2_s33.{n}.npy"))).unwrap();
            (n.to_string(), t)
        })
        .collect()
}

/// A random number below `n` (n > 0).
fn below(rng: &mut TestRng, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// One byte-level damage of `bytes`, and its name.
fn damage(rng: &mut TestRng, bytes: &[u8]) -> (Vec<u8>, &'static str) {
    let mut b = bytes.to_vec();
    let at = below(rng, b.len().max(1));
    let kind = match below(rng, 6) {
        0 => {
            b.truncate(at);
            "truncated"
        }
        1 => {
            if let Some(x) = b.get_mut(at) {
                *x ^= 1 << below(rng, 8);
            }
            "bit flip"
        }
        2 => {
            for i in at..(at + 1 + below(rng, 8)).min(b.len()) {
                b[i] = rng.next_u64() as u8;
            }
            "overwrite"
        }
        3 => {
            let n = 1 + below(rng, 16);
            let junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            b.splice(at..at, junk);
            "insertion"
        }
        4 => {
            let end = (at + 1 + below(rng, 16)).min(b.len());
            b.drain(at..end);
            "deletion"
        }
        _ => {
            // A digit changed: offsets, dims, sizes and attributes of the text files.
            let digits: Vec<usize> = (0..b.len()).filter(|&i| b[i].is_ascii_digit()).collect();
            if let Some(&i) = digits.get(below(rng, digits.len().max(1))) {
                b[i] = b'0' + below(rng, 10) as u8;
            }
            "digit"
        }
    };
    (b, kind)
}

/// `weights` with one aligned f32 replaced by a plausible weight in [-4, 4).
fn new_weight(rng: &mut TestRng, weights: &[u8]) -> Vec<u8> {
    let mut b = weights.to_vec();
    let at = below(rng, b.len() / 4) * 4;
    let value = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0;
    b[at..at + 4].copy_from_slice(&value.to_le_bytes());
    b
}

/// The manifest with its checksum line of `file` recomputed for `bytes` (the format of
/// `manifest.txt`: `file NAME BYTES XXH3-128`).
fn reseal(manifest: &str, file: &str, bytes: &[u8]) -> String {
    let hash = xxhash_rust::xxh3::xxh3_128(bytes);
    manifest
        .lines()
        .map(
            |l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["file", name, ..] if *name == file => {
                    format!("file {file} {} {hash:032x}", bytes.len())
                }
                _ => l.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Fails unless `msg` is one non-empty line.
fn one_line(what: &str, msg: &str) {
    assert!(
        !msg.trim().is_empty() && !msg.contains('\n'),
        "{what}: the error is not one line: {msg:?}"
    );
}

/// Loads and runs the artefact in `dir`: `Err` (checked to be one line) or the outputs.
fn load_and_run(dir: &Path, feeds: &HashMap<String, Tensor>, what: &str) -> Option<Vec<Tensor>> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let program = kiln_rt::artifact::load(dir, 1)?;
        let (outputs, _) = program.run(feeds).map_err(|e| e.to_string())?;
        Ok::<_, String>(outputs.into_iter().map(|(_, t)| t).collect())
    }));
    match result {
        Err(_) => panic!("{what}: loading or running panicked"),
        Ok(Err(e)) => {
            one_line(what, &e);
            None
        }
        Ok(Ok(outputs)) => Some(outputs),
    }
}

/// Asserts that `actual` equals `expected` within 1e-4 (NaN only against NaN).
fn assert_same(actual: &[Tensor], expected: &[Tensor], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}");
    for (a, e) in actual.iter().zip(expected) {
        let diff = max_abs_diff(a, e).unwrap_or_else(|err| panic!("{what}: {err}"));
        assert!(
            diff <= 1e-4,
            "{what}: an accepted artefact answers differently ({diff:e})"
        );
    }
}

/// How a case treats the manifest, as its counts are printed.
fn mode(resealed: bool) -> &'static str {
    match resealed {
        true => "resealed",
        false => "as written",
    }
}

#[test]
fn damaged_artifacts_are_refused_or_give_the_right_answer() {
    let dir = TempDir::new("fuzz-artifact");
    let graph =
        kiln_frontends::onnx::load_model(&common::model_dir("bert").join("model.onnx")).unwrap();
    let options = common::options(1, kiln_codegen::Backend::cranelift());
    kiln::pipeline::Pipeline::new(options)
        .write_artifacts(&[(&graph, "")], dir.path())
        .unwrap();
    let feeds = feeds();
    let reference = load_and_run(dir.path(), &feeds, "the undamaged artefact").unwrap();
    let torch = read_npy(&common::model_dir("bert").join("io/b2_s33.output.npy")).unwrap();
    assert!(max_abs_diff(&reference[0], &torch).unwrap() <= 1e-4);
    let originals: Vec<Vec<u8>> = FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    let manifest = String::from_utf8(originals[3].clone()).unwrap();

    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    // (mode, file, outcome) -> count
    let mut counts: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    let total = cases();
    for case in 0..total {
        let resealed = case % 2 == 1;
        let file = match resealed {
            true => "weights.bin",
            false => FILES[below(&mut rng, 4)],
        };
        let index = FILES.iter().position(|f| *f == file).unwrap();
        let (damaged, kind) = loop {
            let (damaged, kind) = match resealed && below(&mut rng, 2) == 0 {
                true => (new_weight(&mut rng, &originals[index]), "weight value"),
                false => damage(&mut rng, &originals[index]),
            };
            // Resealed damage keeps the file's length, so that it reaches the kernels.
            if !resealed || damaged.len() == originals[index].len() {
                break (damaged, kind);
            }
        };
        let what = format!("case {case}: {kind} of {file} (resealed: {resealed})");
        std::fs::write(dir.join(file), &damaged).unwrap();
        if resealed {
            std::fs::write(dir.join("manifest.txt"), reseal(&manifest, file, &damaged)).unwrap();
        }
        if std::env::var("KILN_FUZZ_KEEP").is_ok_and(|c| c == case.to_string()) {
            let keep = std::env::temp_dir().join("kiln-fuzz-artifact-case");
            let _ = std::fs::remove_dir_all(&keep);
            std::fs::create_dir_all(&keep).unwrap();
            for f in FILES {
                std::fs::copy(dir.join(f), keep.join(f)).unwrap();
            }
            eprintln!("{what}: kept in {}", keep.display());
        }
        let outcome = match load_and_run(dir.path(), &feeds, &what) {
            None => "refused",
            Some(outputs) if damaged == originals[index] => {
                assert_same(&outputs, &reference, &what);
                "unchanged"
            }
            Some(outputs) if resealed => {
                assert_eq!(outputs.len(), reference.len(), "{what}");
                for (o, r) in outputs.iter().zip(&reference) {
                    assert_eq!(o.shape(), r.shape(), "{what}: output shape");
                    assert_eq!(o.dtype(), r.dtype(), "{what}: output dtype");
                }
                "ran on damaged weights"
            }
            Some(outputs) => {
                assert!(
                    file == "manifest.txt",
                    "{what}: a damaged file was accepted despite its checksum"
                );
                assert_same(&outputs, &reference, &what);
                "accepted, answer checked"
            }
        };
        *counts.entry((mode(resealed), file, outcome)).or_default() += 1;
        for (f, bytes) in FILES.iter().zip(&originals) {
            std::fs::write(dir.join(f), bytes).unwrap();
        }
    }
    println!("artefact fuzz: {total} cases");
    for ((mode, file, outcome), n) in &counts {
        println!("  {mode:>10} {file:<12} {outcome:<26} {n}");
    }
    let ran: u64 = counts
        .iter()
        .filter(|((m, _, o), _)| *m == "resealed" && o.starts_with("ran"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        ran > 0,
        "no resealed case ran, so no damage reached the kernels"
    );
}

//! The plan cache, used as a user would through the `kiln` binary: a second run loads what the
//! first compiled and gives the same answer; a damaged entry is discarded and rebuilt with one
//! warning line; a cache that cannot be written is skipped with one warning line; two
//! processes filling one entry at once both succeed and leave one good entry; `kiln cache
//! stats|clear` report and empty it. Every run's output is checked against bert's torch
//! reference, not only its exit code.

mod common;

use common::{max_abs_diff, TempDir};
use kiln_ir::npy::read_npy;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bert_io(case: &str, what: &str) -> PathBuf {
    common::model_dir("bert").join(format!("io/{case}.{what}.npy"))
}

/// `kiln ARGS` with the plan cache under `cache_home`.
fn kiln(cache_home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("XDG_CACHE_HOME", cache_home)
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

/// `kiln run` of bert on its `b1_s16` inputs into `out`, checked to succeed with the torch
/// reference's answer; returns stderr.
fn run_bert(cache_home: &Path, out: &Path) -> String {
    let model = common::model_dir("bert").join("model.onnx");
    let inputs: Vec<String> = ["input_ids", "attention_mask"]
        .iter()
        .map(|n| format!("{n}={}", bert_io("b1_s16", n).display()))
        .collect();
    let output = kiln(
        cache_home,
        &[
            "run",
            model.to_str().unwrap(),
            "--input",
            &inputs[0],
            "--input",
            &inputs[1],
            "--output-dir",
            out.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "kiln run failed: {stderr}");
    let got = read_npy(&out.join("output.npy")).unwrap();
    let want = read_npy(&bert_io("b1_s16", "output")).unwrap();
    assert!(max_abs_diff(&got, &want).unwrap() <= 1e-4);
    stderr
}

/// The entries of the plan cache under `cache_home`.
fn entries(cache_home: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(cache_home.join("kiln/plans")) {
        Ok(list) => list.flatten().map(|e| e.path()).collect(),
        Err(_) => vec![],
    }
}

#[test]
fn a_second_run_loads_the_plan_the_first_compiled() {
    let dir = TempDir::new("cache-hit");
    let home = dir.join("home");
    assert_eq!(run_bert(&home, &dir.join("a")), "");
    let first = entries(&home);
    assert_eq!(first.len(), 1, "one entry: {first:?}");
    let manifest = std::fs::metadata(first[0].join("manifest.txt")).unwrap();
    assert_eq!(run_bert(&home, &dir.join("b")), "");
    // The entry was read, not written again.
    let again = std::fs::metadata(first[0].join("manifest.txt")).unwrap();
    assert_eq!(manifest.modified().unwrap(), again.modified().unwrap());
    let stats = kiln(&home, &["cache", "stats"]);
    let stats = String::from_utf8_lossy(&stats.stdout).into_owned();
    assert!(stats.contains("1 compiled models"), "{stats}");
    let cleared = kiln(&home, &["cache", "clear"]);
    assert!(cleared.status.success());
    assert!(entries(&home).is_empty());
    // --no-cache neither reads nor fills it.
    let model = common::model_dir("bert").join("model.onnx");
    let out = kiln(
        &home,
        &[
            "bench",
            model.to_str().unwrap(),
            "--runs",
            "1",
            "--no-cache",
        ],
    );
    assert!(out.status.success());
    assert!(entries(&home).is_empty());
}

#[test]
fn a_damaged_entry_is_rebuilt_with_one_warning() {
    let dir = TempDir::new("cache-damaged");
    let home = dir.join("home");
    run_bert(&home, &dir.join("a"));
    let entry = entries(&home).remove(0);
    for (file, keep) in [("weights.bin", 100), ("plan.json", 10), ("kernels.so", 64)] {
        let bytes = std::fs::read(entry.join(file)).unwrap();
        std::fs::write(entry.join(file), &bytes[..keep]).unwrap();
        let stderr = run_bert(&home, &dir.join("b"));
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("kiln: warning: discarding the cached plan")
                && stderr.contains(file),
            "{stderr}"
        );
        // Rebuilt: the next run loads it without a word.
        assert_eq!(run_bert(&home, &dir.join("c")), "");
    }
}

#[test]
fn a_cache_that_cannot_be_written_is_skipped_with_one_warning() {
    let dir = TempDir::new("cache-unwritable");
    // The cache's parent is a file: no directory can be made there.
    let home = dir.join("home");
    std::fs::write(&home, b"not a directory").unwrap();
    let stderr = run_bert(&home, &dir.join("a"));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot write the plan cache"), "{stderr}");
}

#[test]
fn two_processes_filling_one_entry_both_succeed() {
    let dir = TempDir::new("cache-race");
    let home = dir.join("home");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run_bert(&home, &dir.join("a")));
        let b = s.spawn(|| run_bert(&home, &dir.join("b")));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!((a.as_str(), b.as_str()), ("", ""));
    let left = entries(&home);
    assert_eq!(
        left.len(),
        1,
        "one entry and no temporary directories: {left:?}"
    );
    assert_eq!(run_bert(&home, &dir.join("c")), "");
}

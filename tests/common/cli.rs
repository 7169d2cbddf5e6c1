//! Running the `kiln` binary as a user would, and the contracts of its exit codes and output.

use std::process::{Command, Output};

/// The plan cache of the tests' kiln runs: under the build's scratch directory, never the
/// user's.
pub const TEST_CACHE_HOME: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/xdg-cache");

/// Runs the kiln binary with `args` (its plan cache under [`TEST_CACHE_HOME`]).
pub fn kiln<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("XDG_CACHE_HOME", TEST_CACHE_HOME)
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

/// Bytes of a child's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a successful run and returns its stdout.
pub fn success(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Asserts the failure contract: exit code 2, nothing on stdout, and exactly one line on
/// stderr, `error: ...`, containing every one of `needles` and no panic. Returns the line.
pub fn failure(out: &Output, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit code 2\nstdout: {}\nstderr: {stderr}",
        text(&out.stdout)
    );
    assert!(
        !stderr.contains("panicked"),
        "the binary panicked: {stderr}"
    );
    assert!(
        stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
        "stderr is not exactly one line: {stderr:?}"
    );
    let line = stderr.trim_end().to_string();
    assert!(line.starts_with("error: "), "{line}");
    for needle in needles {
        assert!(line.contains(needle), "`{needle}` is missing from: {line}");
    }
    assert!(
        out.stdout.is_empty(),
        "unexpected stdout: {}",
        text(&out.stdout)
    );
    line
}

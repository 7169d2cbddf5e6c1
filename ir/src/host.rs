//! What the host machine can hold: sizes are checked against its available memory before a
//! large buffer is allocated, so that a huge (but valid) request is an error that says how
//! much it needs instead of an abort in the allocator or a visit from the out-of-memory killer.
//!
//! ```
//! use kiln_ir::host::check_fits;
//! assert!(check_fits(Some(1 << 20), "a 1 MiB buffer").is_ok());
//! let err = check_fits(Some(usize::MAX), "the arena").unwrap_err();
//! assert!(err.starts_with("the arena needs "), "{err}");
//! assert!(check_fits(None, "the arena").unwrap_err().contains("more bytes than"));
//! ```

/// Requests below this many bytes are not checked (reading the memory figures costs a few
/// microseconds; a small buffer cannot matter).
const CHECKED_FROM: usize = 64 << 20;

/// Bytes of memory available to new allocations now (`MemAvailable` of `/proc/meminfo`), or
/// `None` where it cannot be read (then only sizes that overflow are refused).
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Errors unless `bytes` (None: a size that overflowed while being computed) fit in the
/// memory available now; `what` names the buffer in the message, e.g.
/// `the arena needs 74.5 GiB, more than the 21.3 GiB of memory available`.
pub fn check_fits(bytes: Option<usize>, what: &str) -> Result<(), String> {
    let gib = |b: f64| b / f64::from(1u32 << 30);
    let Some(bytes) = bytes else {
        return Err(format!(
            "{what} needs more bytes than a {}-bit address space holds",
            usize::BITS
        ));
    };
    if bytes < CHECKED_FROM {
        return Ok(());
    }
    match available_memory() {
        Some(free) if bytes as u64 > free => Err(format!(
            "{what} needs {:.1} GiB, more than the {:.1} GiB of memory available",
            gib(bytes as f64),
            gib(free as f64)
        )),
        _ => Ok(()),
    }
}

/// The bytes of a tensor of `shape` whose elements take `size` bytes each, `None` on overflow.
pub fn bytes_of(shape: &[usize], size: usize) -> Option<usize> {
    shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d))
}

//! [`PlanCache`]: compiled plans kept between runs, so that `kiln run|bench|check|generate`
//! compile a model once. An entry is an artefact directory (plan, kernels, weights) named by
//! its key — a hash of the model's content, the options that change the compiled code, this
//! kiln's build and this CPU's features — under `$XDG_CACHE_HOME/kiln/plans` (else
//! `~/.cache/kiln/plans`).
//!
//! An entry is written into a private temporary directory and renamed into place, so two
//! processes filling the same entry at once never see half of one (the second rename loses
//! and uses the winner's). An entry that does not load (truncated, foreign, of another
//! format) is discarded and rebuilt with one warning line; a cache that cannot be written
//! (read-only, full) is skipped with one warning line, and the model is compiled in memory.

use std::path::{Path, PathBuf};

/// A directory of cached plans.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanCache {
    dir: PathBuf,
}

/// What a cache holds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CacheStats {
    /// Entries (compiled models).
    pub entries: usize,
    /// Bytes of every file in the cache.
    pub bytes: u64,
}

impl PlanCache {
    /// The cache in `dir` (created when first written).
    pub fn at(dir: &Path) -> PlanCache {
        PlanCache {
            dir: dir.to_path_buf(),
        }
    }

    /// The user's cache: `$XDG_CACHE_HOME/kiln/plans`, else `$HOME/.cache/kiln/plans`; None
    /// when neither variable is set.
    pub fn user() -> Option<PlanCache> {
        let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
        };
        Some(PlanCache::at(&base.join("kiln").join("plans")))
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `load` makes of entry `key`; on a miss, `write` writes the artefacts into the
    /// entry's directory first. `Ok(None)` when the cache cannot be used (it says why on
    /// stderr) and the caller should compile in memory; an error of `write` that is not about
    /// the cache's own files is returned as it is.
    pub fn get_or_build<T>(
        &self,
        key: &str,
        write: impl FnOnce(&Path) -> Result<(), String>,
        load: impl Fn(&Path) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        let entry = self.dir.join(key);
        if entry.exists() {
            match load(&entry) {
                Ok(loaded) => return Ok(Some(loaded)),
                Err(e) => {
                    warn(&format!(
                        "discarding the cached plan {} ({e}); compiling again",
                        entry.display()
                    ));
                    let _ = std::fs::remove_dir_all(&entry);
                }
            }
        }
        let unique = format!(
            "{key}.tmp-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let temp = self.dir.join(unique);
        if let Err(e) = std::fs::create_dir_all(&temp) {
            warn(&format!(
                "cannot write the plan cache {} ({e}); compiling in memory",
                self.dir.display()
            ));
            return Ok(None);
        }
        if let Err(e) = write(&temp) {
            let _ = std::fs::remove_dir_all(&temp);
            if e.contains(&*temp.to_string_lossy()) {
                warn(&format!(
                    "cannot write the plan cache ({e}); compiling in memory"
                ));
                return Ok(None);
            }
            return Err(e);
        }
        if std::fs::rename(&temp, &entry).is_err() {
            // Another process filled the entry first: use its plan.
            let _ = std::fs::remove_dir_all(&temp);
        }
        match load(&entry) {
            Ok(loaded) => Ok(Some(loaded)),
            Err(e) => {
                warn(&format!(
                    "the plan just cached does not load ({e}); compiling in memory"
                ));
                Ok(None)
            }
        }
    }

    /// What the cache holds.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        let Ok(list) = std::fs::read_dir(&self.dir) else {
            return stats;
        };
        for entry in list.flatten() {
            stats.entries += 1;
            stats.bytes += tree_bytes(&entry.path());
        }
        stats
    }

    /// Removes every entry; returns what the cache held.
    pub fn clear(&self) -> Result<CacheStats, String> {
        let stats = self.stats();
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(stats),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(stats),
            Err(e) => Err(format!("{}: {e}", self.dir.display())),
        }
    }
}

/// The bytes of the files under `path`.
fn tree_bytes(path: &Path) -> u64 {
    match std::fs::read_dir(path) {
        Ok(list) => list.flatten().map(|e| tree_bytes(&e.path())).sum(),
        Err(_) => std::fs::metadata(path).map_or(0, |m| m.len()),
    }
}

/// One warning line on stderr.
fn warn(message: &str) {
    eprintln!("kiln: warning: {}", message.replace('\n', " "));
}

/// This kiln's build: its version and the size and modification time of the running
/// executable, so that a rebuilt kiln never reuses plans an older build compiled.
pub fn build_id() -> String {
    let exe = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}-{modified}", m.len())
        })
        .unwrap_or_default();
    format!("{} {exe}", env!("CARGO_PKG_VERSION"))
}

//! [`Weights`]: the bytes of a plan's constants, one [`Bytes`] handle per constant — slices of
//! a memory-mapped `weights.bin`, or memory the compiler filled — and [`WeightsWriter`], which
//! writes them into a weights file: 64-byte aligned, each distinct content stored once
//! however many constants (of however many plans) hold it, with the file's checksum computed
//! as it is written.

use crate::plan::Constant;
use bytes::Bytes;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// The alignment of every constant in a weights file.
pub const ALIGN: u64 = 64;

/// The constants of one program, in [`crate::plan::Plan::constants`] order.
#[derive(Clone, Debug, Default)]
pub struct Weights {
    parts: Vec<Bytes>,
}

impl Weights {
    /// Weights held in memory, one part per constant.
    pub fn in_memory(parts: Vec<Bytes>) -> Weights {
        Weights { parts }
    }

    /// The constants of a plan, sliced (not copied) out of the bytes of its weights file; an
    /// error naming `path` if a constant lies outside the file.
    pub fn from_file(file: &Bytes, constants: &[Constant], path: &Path) -> Result<Weights, String> {
        let parts = constants
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let end = c.offset.checked_add(c.bytes);
                match end {
                    Some(end) if end <= file.len() as u64 => {
                        Ok(file.slice(c.offset as usize..end as usize))
                    }
                    _ => Err(format!(
                        "{}: constant {i} lies at bytes {}..{} of a {}-byte file",
                        path.display(),
                        c.offset,
                        c.offset.saturating_add(c.bytes),
                        file.len()
                    )),
                }
            })
            .collect::<Result<_, String>>()?;
        Ok(Weights { parts })
    }

    /// The bytes of constant `i`.
    pub fn get(&self, i: usize) -> &Bytes {
        &self.parts[i]
    }

    /// How many constants there are.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// The size and XXH3-128 hash of a file's bytes, as an artefact's manifest records them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksum {
    /// Length in bytes.
    pub bytes: u64,
    /// XXH3-128 of the bytes.
    pub hash: u128,
}

impl Checksum {
    /// The checksum of `data`.
    pub fn of(data: &[u8]) -> Checksum {
        Checksum {
            bytes: data.len() as u64,
            hash: xxhash_rust::xxh3::xxh3_128(data),
        }
    }
}

/// Writes constants into a weights file.
pub struct WeightsWriter {
    out: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
    len: u64,
    hasher: xxhash_rust::xxh3::Xxh3,
    /// Where each distinct content already is, by its hash and length.
    stored: HashMap<(u128, u64), u64>,
}

impl WeightsWriter {
    /// A writer of a new weights file at `path` (replacing any file there).
    pub fn create(path: &Path) -> Result<WeightsWriter, String> {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(WeightsWriter {
            out: std::io::BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            len: 0,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            stored: HashMap::new(),
        })
    }

    /// Stores `data` (unless equal bytes are stored already) and returns its offset.
    pub fn insert(&mut self, data: &[u8]) -> Result<u64, String> {
        let key = (xxhash_rust::xxh3::xxh3_128(data), data.len() as u64);
        if let Some(&offset) = self.stored.get(&key) {
            return Ok(offset);
        }
        let pad = self.len.next_multiple_of(ALIGN) - self.len;
        self.write(&vec![0u8; pad as usize])?;
        let offset = self.len;
        self.write(data)?;
        self.stored.insert(key, offset);
        Ok(offset)
    }

    fn write(&mut self, data: &[u8]) -> Result<(), String> {
        self.out
            .write_all(data)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    /// Flushes the file and returns its checksum.
    pub fn finish(mut self) -> Result<Checksum, String> {
        self.out
            .flush()
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(Checksum {
            bytes: self.len,
            hash: self.hasher.digest128(),
        })
    }
}

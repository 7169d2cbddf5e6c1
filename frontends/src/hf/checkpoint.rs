//! Memory-mapped safetensors checkpoints, single-file or sharded.
//!
//! A safetensors file is an 8-byte little-endian header length `N`, `N` bytes of JSON
//! (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`), then the
//! tensor data; offsets are relative to the start of the data. [`Checkpoint::open`] maps every
//! file once and validates all headers up front, so later reads cannot fail on layout. F32
//! tensors are returned as zero-copy views of the mapping; F16 and BF16 are converted to f32.

use bytes::Bytes;
use kiln_ir::{DType, TensorData};
use memmap2::Mmap;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The single-file checkpoint name.
const SINGLE: &str = "model.safetensors";
/// The sharded checkpoint index name.
const INDEX: &str = "model.safetensors.index.json";
/// The largest header the safetensors format allows (100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// One memory-mapped safetensors file.
struct Shard {
    /// The file, for error messages.
    path: PathBuf,
    /// The whole mapping.
    bytes: Bytes,
}

/// Where one tensor lives.
struct Entry {
    /// Index into the checkpoint's shard list.
    shard: usize,
    /// The safetensors dtype name (`F32`, `BF16`, ...).
    dtype: String,
    /// The shape.
    shape: Vec<usize>,
    /// Absolute byte range in the shard file.
    start: usize,
    /// End of the byte range (exclusive).
    end: usize,
}

/// An opened, validated safetensors checkpoint (`model.safetensors`, or shards listed by
/// `model.safetensors.index.json`), each file memory-mapped once.
pub struct Checkpoint {
    /// `model.safetensors` or the index file: named in errors about missing tensors.
    source: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Checkpoint({}, {} tensors in {} file(s))",
            self.source.display(),
            self.tensors.len(),
            self.shards.len()
        )
    }
}

/// Bytes per element of a safetensors dtype, or `None` if unknown.
fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" | "C64" => 8,
        _ => return None,
    })
}

impl Checkpoint {
    /// Opens `{dir}/model.safetensors`, or the shards named by
    /// `{dir}/model.safetensors.index.json`, validating every header.
    ///
    /// Validation follows the safetensors reference implementation. Errors are one line naming
    /// the file (and the tensor, where there is one): a header length past the end of the file
    /// or over 100 MB, a header that does not begin with `{` or is not a JSON object (`__metadata__`, if present, must map
    /// strings to strings), data offsets outside the data area or reversed, a byte size that
    /// disagrees with dtype and shape, an unknown dtype, tensors whose sorted byte ranges do
    /// not cover the data area exactly (overlaps, gaps, bytes before the first or after the
    /// last), a missing shard file, or an index naming a tensor its shard lacks.
    pub fn open(dir: &Path) -> Result<Checkpoint, String> {
        let single = dir.join(SINGLE);
        if single.is_file() {
            let (shard, entries) = read_shard(&single)?;
            let tensors = entries
                .into_iter()
                .map(|(name, mut e)| {
                    e.shard = 0;
                    (name, e)
                })
                .collect();
            return Ok(Checkpoint {
                source: single,
                shards: vec![shard],
                tensors,
            });
        }
        let index = dir.join(INDEX);
        if !index.is_file() {
            return Err(format!(
                "{}: no {SINGLE} or {INDEX} in this directory",
                dir.display()
            ));
        }
        open_sharded(dir, &index)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// True if the checkpoint holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The stored shape of `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|e| e.shape.as_slice())
    }

    /// The stored safetensors dtype of `name` (`F32`, `F16`, `BF16`, ...), if present.
    pub fn dtype(&self, name: &str) -> Option<&str> {
        self.tensors.get(name).map(|e| e.dtype.as_str())
    }

    /// The file named in errors: `model.safetensors` or `model.safetensors.index.json`.
    pub fn path(&self) -> &Path {
        &self.source
    }

    /// The tensor `name` as f32: F32 is a zero-copy view of the mapping, F16 and BF16 are
    /// converted; other dtypes and missing tensors are errors naming the file and tensor.
    pub fn tensor(&self, name: &str) -> Result<TensorData, String> {
        let entry = self.tensors.get(name).ok_or_else(|| {
            format!(
                "{}: no tensor `{name}` in the checkpoint",
                self.source.display()
            )
        })?;
        let shard = &self.shards[entry.shard];
        let raw = shard.bytes.slice(entry.start..entry.end);
        let bytes = match entry.dtype.as_str() {
            "F32" => raw,
            "F16" => convert(&raw, |b| half::f16::from_le_bytes(b).to_f32()),
            "BF16" => convert(&raw, |b| half::bf16::from_le_bytes(b).to_f32()),
            other => {
                return Err(format!(
                    "{}: tensor `{name}` has dtype {other}; only F32, F16 and BF16 can be read \
                     as f32",
                    shard.path.display()
                ))
            }
        };
        TensorData::new(DType::F32, entry.shape.clone(), bytes)
            .map_err(|e| format!("{}: tensor `{name}`: {e}", shard.path.display()))
    }

    /// [`Checkpoint::tensor`] with a check that the stored shape is `shape` (the shape the
    /// config implies).
    pub fn expect(&self, name: &str, shape: &[usize]) -> Result<TensorData, String> {
        let entry = self.tensors.get(name).ok_or_else(|| {
            format!(
                "{}: missing tensor `{name}` (expected shape {shape:?})",
                self.source.display()
            )
        })?;
        if entry.shape != shape {
            return Err(format!(
                "{}: tensor `{name}` has shape {:?} but the config implies {shape:?}",
                self.shards[entry.shard].path.display(),
                entry.shape
            ));
        }
        self.tensor(name)
    }
}

/// Converts 2-byte little-endian floats to f32 little-endian bytes.
fn convert(raw: &[u8], f: impl Fn([u8; 2]) -> f32) -> Bytes {
    let mut out = Vec::with_capacity(raw.len() * 2);
    for c in raw.chunks_exact(2) {
        out.extend_from_slice(&f([c[0], c[1]]).to_le_bytes());
    }
    Bytes::from(out)
}

/// Opens a sharded checkpoint from its index.
fn open_sharded(dir: &Path, index: &Path) -> Result<Checkpoint, String> {
    let ip = index.display();
    let text = std::fs::read_to_string(index).map_err(|e| format!("{ip}: {e}"))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{ip}: invalid JSON: {e}"))?;
    let map = value
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{ip}: missing object `weight_map`"))?;
    let mut shards: Vec<Shard> = Vec::new();
    let mut shard_entries: Vec<BTreeMap<String, Entry>> = Vec::new();
    let mut by_file: BTreeMap<String, usize> = BTreeMap::new();
    let mut tensors = BTreeMap::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| format!("{ip}: tensor `{name}` maps to {file}, not a file name"))?;
        let escapes = Path::new(file)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if escapes || file.is_empty() {
            return Err(format!(
                "{ip}: tensor `{name}` maps to `{file}`, which is not a file in the checkpoint \
                 directory"
            ));
        }
        let idx = match by_file.get(file) {
            Some(&i) => i,
            None => {
                let path = dir.join(file);
                if !path.is_file() {
                    return Err(format!(
                        "{ip}: shard `{file}` (holding tensor `{name}`) is missing"
                    ));
                }
                let (shard, entries) = read_shard(&path)?;
                shards.push(shard);
                shard_entries.push(entries);
                by_file.insert(file.to_string(), shards.len() - 1);
                shards.len() - 1
            }
        };
        let mut entry = shard_entries[idx].remove(name).ok_or_else(|| {
            format!(
                "{ip}: tensor `{name}` is mapped to `{file}`, which does not contain it ({})",
                shards[idx].path.display()
            )
        })?;
        entry.shard = idx;
        tensors.insert(name.clone(), entry);
    }
    Ok(Checkpoint {
        source: index.to_path_buf(),
        shards,
        tensors,
    })
}

/// Maps one safetensors file and validates its header.
fn read_shard(path: &Path) -> Result<(Shard, BTreeMap<String, Entry>), String> {
    let p = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("{p}: {e}"))?;
    let len = file.metadata().map_err(|e| format!("{p}: {e}"))?.len();
    if len < 8 {
        return Err(format!(
            "{p}: {len} bytes is too short for a safetensors header"
        ));
    }
    // SAFETY: the mapping is read-only; like every mmap-based loader we assume the file is
    // not truncated or rewritten while the checkpoint is in use.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| format!("{p}: cannot map: {e}"))?;
    let bytes = Bytes::from_owner(mmap);
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if header_len > MAX_HEADER {
        return Err(format!(
            "{p}: header length {header_len} is over the format's limit of {MAX_HEADER} bytes"
        ));
    }
    if header_len > len - 8 {
        return Err(format!(
            "{p}: header length {header_len} runs past the end of the file ({len} bytes)"
        ));
    }
    let data_start = 8 + header_len as usize;
    let data_len = bytes.len() - data_start;
    if bytes[8..data_start].first() != Some(&b'{') {
        return Err(format!("{p}: header does not begin with `{{`"));
    }
    let header: Value = serde_json::from_slice(&bytes[8..data_start])
        .map_err(|e| format!("{p}: header is not valid JSON: {e}"))?;
    let header = header
        .as_object()
        .ok_or_else(|| format!("{p}: header is not a JSON object"))?;
    let mut entries = BTreeMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            let strings = info
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !strings {
                return Err(format!(
                    "{p}: `__metadata__` must be an object of strings, got {info}"
                ));
            }
            continue;
        }
        let entry = parse_entry(path, name, info, data_start, data_len)?;
        entries.insert(name.clone(), entry);
    }
    check_coverage(path, &entries, data_start, data_len)?;
    Ok((
        Shard {
            path: path.to_path_buf(),
            bytes,
        },
        entries,
    ))
}

/// Validates one header entry.
fn parse_entry(
    path: &Path,
    name: &str,
    info: &Value,
    data_start: usize,
    data_len: usize,
) -> Result<Entry, String> {
    let p = path.display();
    let bad = |what: &str| format!("{p}: tensor `{name}`: {what}");
    let info: &Map<String, Value> = info
        .as_object()
        .ok_or_else(|| bad("header entry is not an object"))?;
    let dtype = info
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing string `dtype`"))?;
    let size = dtype_size(dtype).ok_or_else(|| bad(&format!("unknown dtype `{dtype}`")))?;
    let shape = info
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing list `shape`"))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| bad("`shape` must hold non-negative integers"))?;
    let offsets = info
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
        .ok_or_else(|| bad("`data_offsets` must be two non-negative integers"))?;
    let (begin, end) = offsets;
    if begin > end {
        return Err(bad(&format!(
            "data_offsets [{begin}, {end}] begin after they end"
        )));
    }
    if end > data_len as u64 {
        return Err(bad(&format!(
            "data_offsets [{begin}, {end}] lie outside the data area ({data_len} bytes)"
        )));
    }
    let expected = kiln_ir::data::element_count(&shape)
        .and_then(|n| n.checked_mul(size))
        .ok_or_else(|| bad(&format!("shape {shape:?} is too large")))?;
    if (end - begin) as usize != expected {
        return Err(bad(&format!(
            "{} bytes of data but {dtype}{shape:?} needs {expected}",
            end - begin
        )));
    }
    Ok(Entry {
        shard: 0,
        dtype: dtype.to_string(),
        shape,
        start: data_start + begin as usize,
        end: data_start + end as usize,
    })
}

/// Checks, as the safetensors reference implementation does, that the tensors' byte ranges,
/// sorted, tile the data area exactly: the first begins at its start, each begins where the
/// previous one ends (no gap, no overlap), and the last ends at the end of the file.
fn check_coverage(
    path: &Path,
    entries: &BTreeMap<String, Entry>,
    data_start: usize,
    data_len: usize,
) -> Result<(), String> {
    let p = path.display();
    let mut ranges: Vec<(usize, usize, &str)> = entries
        .iter()
        .map(|(n, e)| (e.start - data_start, e.end - data_start, n.as_str()))
        .collect();
    ranges.sort_unstable();
    let mut at = 0;
    let mut previous: Option<&str> = None;
    for &(begin, end, name) in &ranges {
        match previous {
            _ if begin == at => {}
            Some(prev) if begin < at => {
                return Err(format!(
                    "{p}: tensors `{prev}` and `{name}` overlap in the data area (`{name}` \
                     begins at byte {begin}, `{prev}` ends at {at})"
                ))
            }
            Some(prev) => {
                return Err(format!(
                    "{p}: tensor `{name}`: bytes {at}..{begin} of the data area, between \
                     `{prev}` and it, belong to no tensor"
                ))
            }
            None => {
                return Err(format!(
                    "{p}: tensor `{name}`: bytes 0..{begin} of the data area, before its first \
                     tensor, belong to no tensor"
                ))
            }
        }
        at = end;
        previous = Some(name);
    }
    if at != data_len {
        let last = match previous {
            Some(name) => format!("the last tensor, `{name}`, ends"),
            None => "there are no tensors, so the data ends".into(),
        };
        return Err(format!(
            "{p}: {last} at byte {at} of the data area, but the file has {data_len} bytes of data \
             after the header (is the header length right?)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/models")).join(name)
    }

    use crate::test_util::TempDir;

    /// A safetensors file from a raw header and data.
    fn raw_file(header: &Value, data: &[u8]) -> Vec<u8> {
        let h = serde_json::to_vec(header).unwrap();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out
    }

    /// A well-formed safetensors file holding `tensors` back to back.
    fn st_file(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let mut header = Map::new();
        header.insert("__metadata__".into(), json!({"format": "pt"}));
        let mut data = Vec::new();
        for (name, dtype, shape, bytes) in tensors {
            let begin = data.len();
            data.extend_from_slice(bytes);
            header.insert(
                name.to_string(),
                json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
            );
        }
        raw_file(&Value::Object(header), &data)
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn as_f32(t: &TensorData) -> Vec<f32> {
        t.bytes()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    /// Asserts `t` points inside the mapping of the checkpoint's first shard.
    fn assert_zero_copy(ck: &Checkpoint, t: &TensorData) {
        let map = &ck.shards[0].bytes;
        let (lo, hi) = (map.as_ptr() as usize, map.as_ptr() as usize + map.len());
        let p = t.bytes().as_ptr() as usize;
        assert!(
            lo <= p && p + t.bytes().len() <= hi,
            "tensor is not a view of the map"
        );
    }

    #[test]
    fn fixtures_open() {
        let ck = Checkpoint::open(&fixture("llama")).unwrap();
        assert_eq!(ck.names().len(), 21);
        assert!(ck.names().windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            ck.shape("model.layers.0.self_attn.k_proj.weight"),
            Some(&[32, 64][..])
        );
        let t = ck
            .expect("model.layers.1.mlp.down_proj.weight", &[64, 172])
            .unwrap();
        assert_eq!(t.dtype(), DType::F32);
        assert_zero_copy(&ck, &t);
        assert!(ck.contains("lm_head.weight"));

        let ck = Checkpoint::open(&fixture("gpt2")).unwrap();
        assert_eq!(
            ck.shape("transformer.h.0.attn.c_attn.weight"),
            Some(&[64, 192][..])
        );
        let t = ck.expect("transformer.wte.weight", &[1000, 64]).unwrap();
        assert_zero_copy(&ck, &t);
        assert!(!ck.contains("lm_head.weight"));

        let ck = Checkpoint::open(&fixture("bert")).unwrap();
        assert_eq!(ck.dtype("pooler.dense.weight"), Some("F32"));
        let t = ck
            .expect("encoder.layer.0.intermediate.dense.weight", &[128, 64])
            .unwrap();
        assert_zero_copy(&ck, &t);
        assert!(as_f32(&t).iter().all(|x| x.is_finite()));
    }

    #[test]
    fn expect_errors() {
        let ck = Checkpoint::open(&fixture("llama")).unwrap();
        let e = ck.expect("model.norm.weight", &[65]).unwrap_err();
        assert!(
            e.ends_with(
                "model.safetensors: tensor `model.norm.weight` has shape [64] but the config \
                 implies [65]"
            ),
            "{e}"
        );
        let e = ck.expect("nope", &[1]).unwrap_err();
        assert!(
            e.contains("model.safetensors: missing tensor `nope`"),
            "{e}"
        );
        let e = ck.tensor("nope").unwrap_err();
        assert!(e.contains("`nope`"), "{e}");
    }

    #[test]
    fn sharded_with_f16_and_bf16() {
        let dir = TempDir::new("sharded");
        let vals = [1.0f32, -2.5, 0.375, 65504.0];
        let f16: Vec<u8> = vals
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = vals
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        let a = st_file(&[
            ("a.f16", "F16", vec![2, 2], f16),
            ("a.f32", "F32", vec![3], f32_bytes(&[1.0, 2.0, 3.0])),
        ]);
        let b = st_file(&[
            ("b.bf16", "BF16", vec![4], bf16),
            ("b.i64", "I64", vec![1], 7i64.to_le_bytes().to_vec()),
        ]);
        std::fs::write(dir.path().join("model-00001-of-00002.safetensors"), a).unwrap();
        std::fs::write(dir.path().join("model-00002-of-00002.safetensors"), b).unwrap();
        let index = json!({"metadata": {}, "weight_map": {
            "a.f16": "model-00001-of-00002.safetensors",
            "a.f32": "model-00001-of-00002.safetensors",
            "b.bf16": "model-00002-of-00002.safetensors",
            "b.i64": "model-00002-of-00002.safetensors",
        }});
        std::fs::write(dir.path().join(INDEX), index.to_string()).unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ck.shards.len(), 2);
        assert_eq!(ck.names(), ["a.f16", "a.f32", "b.bf16", "b.i64"]);
        let t = ck.expect("a.f16", &[2, 2]).unwrap();
        assert_eq!(t.dtype(), DType::F32);
        assert_eq!(as_f32(&t), vals);
        let t = ck.tensor("b.bf16").unwrap();
        assert_eq!(as_f32(&t), [1.0, -2.5, 0.375, 65536.0]);
        let t = ck.tensor("a.f32").unwrap();
        assert_eq!(as_f32(&t), [1.0, 2.0, 3.0]);
        assert_zero_copy(&ck, &t);
        let e = ck.tensor("b.i64").unwrap_err();
        assert!(
            e.contains("model-00002-of-00002.safetensors: tensor `b.i64` has dtype I64"),
            "{e}"
        );

        // An index naming a tensor its shard lacks, and a missing shard.
        let index = json!({"weight_map": {"ghost": "model-00001-of-00002.safetensors"}});
        std::fs::write(dir.path().join(INDEX), index.to_string()).unwrap();
        let e = Checkpoint::open(dir.path()).unwrap_err();
        assert!(e.contains(INDEX) && e.contains("`ghost`"), "{e}");
        assert!(e.contains("does not contain it"), "{e}");
        let index = json!({"weight_map": {"x": "model-00009-of-00009.safetensors"}});
        std::fs::write(dir.path().join(INDEX), index.to_string()).unwrap();
        let e = Checkpoint::open(dir.path()).unwrap_err();
        assert!(
            e.contains("model-00009-of-00009.safetensors") && e.contains("missing"),
            "{e}"
        );
        let index = json!({"weight_map": {"x": "../evil.safetensors"}});
        std::fs::write(dir.path().join(INDEX), index.to_string()).unwrap();
        assert!(Checkpoint::open(dir.path()).is_err());
    }

    /// Writes `bytes` as `model.safetensors` and returns the open error.
    fn open_err(bytes: &[u8]) -> String {
        let dir = TempDir::new("bad");
        std::fs::write(dir.path().join(SINGLE), bytes).unwrap();
        let e = Checkpoint::open(dir.path()).unwrap_err();
        assert!(e.contains(SINGLE), "{e}");
        assert!(!e.contains('\n'), "{e}");
        e
    }

    #[test]
    fn corrupt_files_are_errors() {
        let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
        let entry = |dtype: &str, shape: &[usize], b: u64, e: u64| json!({"dtype": dtype, "shape": shape, "data_offsets": [b, e]});

        let e = open_err(&[1, 2, 3]);
        assert!(e.contains("too short"), "{e}");

        let mut bytes = 1000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let e = open_err(&bytes);
        assert!(e.contains("header length 1000 runs past the end"), "{e}");

        let mut bytes = 5u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{oops");
        let e = open_err(&bytes);
        assert!(e.contains("header is not valid JSON"), "{e}");
        let mut bytes = 0u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let e = open_err(&bytes);
        assert!(e.contains("header does not begin with `{`"), "{e}");

        let e = open_err(&raw_file(&json!({"w": entry("F32", &[4], 0, 20)}), &data));
        assert!(
            e.contains("tensor `w`") && e.contains("outside the data area"),
            "{e}"
        );

        let e = open_err(&raw_file(&json!({"w": entry("F32", &[0], 8, 4)}), &data));
        assert!(
            e.contains("tensor `w`") && e.contains("begin after they end"),
            "{e}"
        );

        let e = open_err(&raw_file(
            &json!({"a": entry("F32", &[3], 0, 12), "b": entry("F32", &[2], 8, 16)}),
            &data,
        ));
        assert!(e.contains("`a` and `b` overlap"), "{e}");

        let e = open_err(&raw_file(&json!({"w": entry("F32", &[3], 0, 16)}), &data));
        assert!(
            e.contains("tensor `w`") && e.contains("16 bytes of data"),
            "{e}"
        );

        let e = open_err(&raw_file(&json!({"w": entry("Q4", &[4], 0, 16)}), &data));
        assert!(
            e.contains("tensor `w`") && e.contains("unknown dtype `Q4`"),
            "{e}"
        );

        let e = open_err(&raw_file(
            &json!({"w": {"dtype": "F32", "shape": [4]}}),
            &data,
        ));
        assert!(
            e.contains("tensor `w`") && e.contains("data_offsets"),
            "{e}"
        );

        let e = open_err(&raw_file(
            &json!({"w": entry("F32", &[usize::MAX, 4], 0, 16)}),
            &data,
        ));
        assert!(e.contains("tensor `w`") && e.contains("too large"), "{e}");

        let dir = TempDir::new("empty");
        let e = Checkpoint::open(dir.path()).unwrap_err();
        assert!(e.contains(SINGLE) && e.contains(INDEX), "{e}");
    }

    /// A header length one less than the real one (the header padded with a space, as
    /// transformers writes it) used to be accepted with every tensor read one byte off.
    #[test]
    fn header_length_must_be_exact() {
        let good = std::fs::read(fixture("llama").join(SINGLE)).unwrap();
        let n = u64::from_le_bytes(good[..8].try_into().unwrap());
        assert_eq!(
            good[8 + n as usize - 1],
            b' ',
            "the fixture's header is space-padded"
        );
        for delta in [-1i64, 1] {
            let mut bytes = good.clone();
            bytes[..8].copy_from_slice(&((n as i64 + delta) as u64).to_le_bytes());
            let e = open_err(&bytes);
            if delta < 0 {
                assert!(
                    e.contains("the last tensor, `") && e.contains("is the header length right"),
                    "{e}"
                );
            } else {
                assert!(e.contains("header is not valid JSON"), "{e}");
            }
        }
        // A header padded with spaces by hand, and the right length, is fine.
        let data = f32_bytes(&[1.0, 2.0]);
        let mut h = serde_json::to_vec(
            &json!({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}),
        )
        .unwrap();
        h.extend_from_slice(b"   ");
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&h);
        bytes.extend_from_slice(&data);
        let dir = TempDir::new("padded");
        std::fs::write(dir.path().join(SINGLE), &bytes).unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(as_f32(&ck.tensor("w").unwrap()), [1.0, 2.0]);
        // One byte shorter: the last byte of data belongs to no tensor.
        bytes[..8].copy_from_slice(&(h.len() as u64 - 1).to_le_bytes());
        let e = open_err(&bytes);
        assert!(
            e.contains("`w`, ends at byte 8") && e.contains("9 bytes of data"),
            "{e}"
        );
    }

    #[test]
    fn tensors_must_tile_the_data_area() {
        let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
        let entry = |shape: &[usize], b: u64, e: u64| json!({"dtype": "F32", "shape": shape, "data_offsets": [b, e]});
        // A gap between two tensors.
        let e = open_err(&raw_file(
            &json!({"a": entry(&[1], 0, 4), "b": entry(&[2], 8, 16)}),
            &data,
        ));
        assert!(
            e.contains("tensor `b`: bytes 4..8 of the data area, between `a` and it"),
            "{e}"
        );
        // Bytes before the first tensor.
        let e = open_err(&raw_file(&json!({"a": entry(&[3], 4, 16)}), &data));
        assert!(
            e.contains("tensor `a`: bytes 0..4 of the data area, before its first"),
            "{e}"
        );
        // Bytes after the last tensor.
        let e = open_err(&raw_file(&json!({"a": entry(&[3], 0, 12)}), &data));
        assert!(
            e.contains("the last tensor, `a`, ends at byte 12") && e.contains("16 bytes"),
            "{e}"
        );
        // Data but no tensors.
        let e = open_err(&raw_file(&json!({"__metadata__": {"format": "pt"}}), &data));
        assert!(e.contains("there are no tensors"), "{e}");
        // Overlap, also by a zero-size tensor's neighbour.
        let e = open_err(&raw_file(
            &json!({"a": entry(&[2], 0, 8), "b": entry(&[3], 4, 16)}),
            &data,
        ));
        assert!(e.contains("tensors `a` and `b` overlap"), "{e}");
        // Zero-size tensors anywhere in the tiling, and no data at all, are fine.
        let dir = TempDir::new("tiled");
        let file = raw_file(
            &json!({"z": entry(&[0], 8, 8), "a": entry(&[2], 0, 8), "b": entry(&[2], 8, 16),
                    "e": entry(&[0, 3], 16, 16)}),
            &data,
        );
        std::fs::write(dir.path().join(SINGLE), file).unwrap();
        let ck = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(as_f32(&ck.tensor("b").unwrap()), [3.0, 4.0]);
        std::fs::write(dir.path().join(SINGLE), raw_file(&json!({}), &[])).unwrap();
        assert!(Checkpoint::open(dir.path()).unwrap().names().is_empty());
    }

    #[test]
    fn metadata_and_header_limits() {
        let data = f32_bytes(&[1.0]);
        let w = json!({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]});
        let e = open_err(&raw_file(&json!({"__metadata__": {"n": 1}, "w": w}), &data));
        assert!(
            e.contains("`__metadata__` must be an object of strings"),
            "{e}"
        );
        let e = open_err(&raw_file(&json!({"__metadata__": [], "w": w}), &data));
        assert!(e.contains("`__metadata__`"), "{e}");
        let mut bytes = (MAX_HEADER + 1).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let e = open_err(&bytes);
        assert!(e.contains("over the format's limit"), "{e}");
        let e = open_err(&raw_file(&json!([w]), &data));
        assert!(e.contains("header does not begin with `{`"), "{e}");
        let mut h = b" ".to_vec();
        h.extend_from_slice(&serde_json::to_vec(&json!({"w": w})).unwrap());
        let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&h);
        bytes.extend_from_slice(&data);
        let e = open_err(&bytes);
        assert!(e.contains("header does not begin with `{`"), "{e}");
        let e = open_err(&raw_file(
            &json!({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, u64::MAX]}}),
            &data,
        ));
        assert!(
            e.contains("tensor `w`") && e.contains("outside the data area"),
            "{e}"
        );
    }

    /// The real all-MiniLM-L6-v2 checkpoint, when `KILN_MINILM_DIR` points at it.
    #[test]
    fn minilm_if_available() {
        let Some(dir) = std::env::var_os("KILN_MINILM_DIR") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let cfg = crate::hf::config::read_config(&dir).unwrap();
        assert_eq!(
            (cfg.hidden_size, cfg.num_layers, cfg.num_heads),
            (384, 6, 12)
        );
        assert_eq!(cfg.dtype, "float32");
        let ck = Checkpoint::open(&dir).unwrap();
        let t = ck
            .expect("embeddings.word_embeddings.weight", &[30522, 384])
            .unwrap();
        assert_zero_copy(&ck, &t);
    }
}

//! Reading ONNX tensors: element types, `TensorProto` payloads (raw, typed and external data),
//! standalone `.pb` tensor files and memory-mapped model files.
//!
//! Weight bytes are never copied when they don't have to be: a model is decoded from a
//! memory map wrapped as [`Bytes`], so `raw_data` is a view into the mapping, and external data
//! files are mapped once each (see [`ExternalDataCache`]) and sliced per tensor. Typed fields
//! (`float_data`, `int32_data`, `int64_data`) are converted into fresh little-endian bytes.
//!
//! Every function here validates its input (negative or overflowing dims, data lengths, external
//! paths and ranges) and reports problems as one-line `String` errors naming the tensor; none of
//! them panics on malformed input.

use super::proto::tensor_proto::{DataLocation, DataType};
use super::proto::{ModelProto, TensorProto};
use bytes::Bytes;
use kiln_ir::{DType, Tensor, TensorData};
use memmap2::Mmap;
use prost::Message;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

/// Converts an ONNX `TensorProto.DataType` code to a kiln [`DType`].
///
/// Supported: FLOAT (1), UINT8 (2), INT8 (3), INT32 (6), INT64 (7), BOOL (9), FLOAT16 (10) and
/// BFLOAT16 (16). Anything else is an error naming the ONNX type, e.g.
/// `DOUBLE (11) is not supported`.
pub fn dtype_from_onnx(elem_type: i32) -> Result<DType, String> {
    match DataType::try_from(elem_type) {
        Ok(DataType::Float) => Ok(DType::F32),
        Ok(DataType::Uint8) => Ok(DType::U8),
        Ok(DataType::Int8) => Ok(DType::I8),
        Ok(DataType::Int32) => Ok(DType::I32),
        Ok(DataType::Int64) => Ok(DType::I64),
        Ok(DataType::Bool) => Ok(DType::Bool),
        Ok(DataType::Float16) => Ok(DType::F16),
        Ok(DataType::Bfloat16) => Ok(DType::BF16),
        Ok(other) => Err(format!(
            "{} ({elem_type}) is not supported",
            other.as_str_name()
        )),
        Err(_) => Err(format!(
            "unknown ONNX element type {elem_type} is not supported"
        )),
    }
}

/// Converts a kiln [`DType`] to its ONNX `TensorProto.DataType` code (the inverse of
/// [`dtype_from_onnx`]).
pub fn dtype_to_onnx(dtype: DType) -> i32 {
    let t = match dtype {
        DType::F32 => DataType::Float,
        DType::F16 => DataType::Float16,
        DType::BF16 => DataType::Bfloat16,
        DType::I8 => DataType::Int8,
        DType::U8 => DataType::Uint8,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
        DType::Bool => DataType::Bool,
    };
    t as i32
}

/// Memory-maps a whole file as [`Bytes`] (slices of it are zero-copy views into the mapping).
fn map_file(path: &Path) -> std::io::Result<Bytes> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        // Mapping an empty file fails on some platforms; there is nothing to share anyway.
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only. As with any memory-mapped model loader, the file must not
    // be truncated or modified by another process while the returned bytes are alive.
    let mmap = unsafe { Mmap::map(&file)? };
    Ok(Bytes::from_owner(mmap))
}

/// The external data files of one model, each memory-mapped at most once.
///
/// ONNX models larger than 2 GiB keep their weights outside the protobuf, in files named by a
/// path relative to the model's directory; many initializers usually share one file. The cache
/// maps each file on first use and hands out zero-copy [`Bytes`] slices of it.
#[derive(Debug)]
pub struct ExternalDataCache {
    dir: PathBuf,
    files: HashMap<PathBuf, Bytes>,
}

impl ExternalDataCache {
    /// A cache resolving external data locations against `model_dir`.
    pub fn new(model_dir: impl Into<PathBuf>) -> ExternalDataCache {
        ExternalDataCache {
            dir: model_dir.into(),
            files: HashMap::new(),
        }
    }

    /// A cache for the model file at `model_path` (locations resolve against its directory).
    pub fn for_model(model_path: &Path) -> ExternalDataCache {
        let dir = model_path.parent().unwrap_or(Path::new(""));
        ExternalDataCache::new(dir)
    }

    /// The directory external data locations are resolved against.
    pub fn model_dir(&self) -> &Path {
        &self.dir
    }

    /// The number of distinct files mapped so far.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True if no file has been mapped yet.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The whole contents of the external data file at `location` (relative to the model
    /// directory), mapping it on first use.
    ///
    /// `location` must be a relative path that stays inside the model directory: absolute paths
    /// and `..` components are rejected. Errors do not name the tensor; callers add that.
    pub fn file(&mut self, location: &str) -> Result<Bytes, String> {
        let rel = checked_relative_path(location)?;
        if let Some(b) = self.files.get(&rel) {
            return Ok(b.clone());
        }
        let full = self.dir.join(&rel);
        let bytes = map_file(&full).map_err(|e| {
            format!(
                "cannot read external data file {}: {e}",
                escape_controls(&full.display().to_string())
            )
        })?;
        self.files.insert(rel, bytes.clone());
        Ok(bytes)
    }
}

/// Checks that an external data `location` is a non-empty relative path without `..`, and
/// returns it normalised (without `.` components).
fn checked_relative_path(location: &str) -> Result<PathBuf, String> {
    let shown = escape_controls(location);
    let mut out = PathBuf::new();
    for c in Path::new(location).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "external data location `{shown}` leaves the model directory"
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "external data location `{shown}` must be a relative path"
                ))
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("external data location `{shown}` names no file"));
    }
    Ok(out)
}

/// `s` with control characters (line breaks, tabs, ...) escaped as in Rust literals, so that
/// names and paths taken from a model file cannot split a one-line error message.
fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// How a tensor is named in error messages.
fn label(t: &TensorProto) -> String {
    match t.name.as_deref() {
        Some(n) if !n.is_empty() => format!("tensor `{}`", escape_controls(n)),
        _ => "unnamed tensor".to_string(),
    }
}

/// Formats a dtype and shape as `f32[3, 4]`.
fn type_str(dtype: DType, shape: &[usize]) -> String {
    format!("{dtype}{shape:?}")
}

/// Reads a `TensorProto` into [`TensorData`].
///
/// The payload may be `raw_data` (returned as a zero-copy slice of the decoded buffer), a typed
/// field (`float_data` for f32; `int32_data` for i8, u8, i32, bool, f16 and bf16, the 16-bit
/// float bits in the low half of each value; `int64_data` for i64), or external data
/// (`data_location = EXTERNAL` with `location`, `offset` and `length` entries, resolved through
/// `external`, which maps each file once). Segmented tensors and element types kiln does not
/// support are errors.
///
/// Dims must be non-negative, their product must not overflow, and the amount of data must
/// match exactly, e.g. ``tensor `w`: 10 bytes of data but f32[3, 4] needs 48``. All errors are
/// one line and name the tensor. Nothing is allocated from the dims before they have been
/// checked against the data actually present.
pub fn tensor_from_proto(
    t: &TensorProto,
    external: &mut ExternalDataCache,
) -> Result<TensorData, String> {
    let what = label(t);
    let fail = |msg: String| format!("{what}: {msg}");

    if t.segment.is_some() {
        return Err(fail("segmented tensors are not supported".into()));
    }
    let dtype = dtype_from_onnx(t.data_type.unwrap_or(0)).map_err(fail)?;
    let mut shape = Vec::with_capacity(t.dims.len().min(64));
    for &d in &t.dims {
        let d = usize::try_from(d)
            .map_err(|_| fail(format!("negative dimension {d} in dims {:?}", t.dims)))?;
        shape.push(d);
    }
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()).map(|bytes| (n, bytes)));
    let Some((count, nbytes)) = count else {
        return Err(fail(format!("{} is too large", type_str(dtype, &shape))));
    };
    let check_bytes = |have: usize| {
        if have == nbytes {
            Ok(())
        } else {
            Err(fail(format!(
                "{have} bytes of data but {} needs {nbytes}",
                type_str(dtype, &shape)
            )))
        }
    };

    let external_location = t.data_location == Some(DataLocation::External as i32);
    let bytes = if external_location {
        let b = external_bytes(t, external).map_err(fail)?;
        check_bytes(b.len())?;
        b
    } else if let Some(raw) = &t.raw_data {
        check_bytes(raw.len())?;
        raw.clone()
    } else {
        typed_bytes(t, dtype, count).map_err(|msg| {
            fail(format!(
                "{msg} but {} needs {count}",
                type_str(dtype, &shape)
            ))
        })?
    };
    let bytes = if dtype == DType::Bool {
        normalize_bools(bytes)
    } else {
        bytes
    };
    TensorData::new(dtype, shape, bytes).map_err(fail)
}

/// The external data range of `t`, as a slice of its (cached) memory-mapped file.
fn external_bytes(t: &TensorProto, cache: &mut ExternalDataCache) -> Result<Bytes, String> {
    let mut location = None;
    let mut offset = None;
    let mut length = None;
    for entry in &t.external_data {
        let value = entry.value.as_deref().unwrap_or("");
        let parse = |key: &str| {
            value.trim().parse::<u64>().map_err(|_| {
                format!(
                    "external data {key} `{}` is not a non-negative integer",
                    escape_controls(value)
                )
            })
        };
        match entry.key.as_deref().unwrap_or("") {
            "location" => location = Some(value),
            "offset" => offset = Some(parse("offset")?),
            "length" => length = Some(parse("length")?),
            _ => {} // `checksum` and unknown keys are ignored.
        }
    }
    let location = location.ok_or("external data has no `location` entry")?;
    let file = cache.file(location)?;
    let size = file.len() as u64;
    let offset = offset.unwrap_or(0);
    let end = match length {
        Some(len) => offset.checked_add(len),
        None => Some(size.max(offset)),
    };
    match end {
        Some(end) if offset <= size && end <= size => {
            // Both fit in usize because they are at most the mapped file's length.
            Ok(file.slice(offset as usize..end as usize))
        }
        _ => Err(format!(
            "external data range offset {offset}{} is past the end of `{}` ({size} bytes)",
            length.map(|l| format!(" length {l}")).unwrap_or_default(),
            escape_controls(location)
        )),
    }
}

/// Converts the typed field for `dtype` into little-endian bytes, checking it holds exactly
/// `count` values. On mismatch returns e.g. `3 values in float_data` (the caller adds what was
/// needed).
fn typed_bytes(t: &TensorProto, dtype: DType, count: usize) -> Result<Bytes, String> {
    let fields: [(&str, usize); 3] = [
        ("float_data", t.float_data.len()),
        ("int32_data", t.int32_data.len()),
        ("int64_data", t.int64_data.len()),
    ];
    let expected_field = match dtype {
        DType::F32 => "float_data",
        DType::I64 => "int64_data",
        _ => "int32_data",
    };
    // Data in a field that doesn't belong to the dtype is a malformed tensor, not "no data".
    for (name, len) in fields {
        if name != expected_field && len > 0 {
            return Err(format!(
                "{len} values in {name}, which {dtype} does not use,"
            ));
        }
    }
    let extra = [
        ("string_data", t.string_data.len()),
        ("double_data", t.double_data.len()),
        ("uint64_data", t.uint64_data.len()),
    ];
    for (name, len) in extra {
        if len > 0 {
            return Err(format!(
                "{len} values in {name}, which {dtype} does not use,"
            ));
        }
    }
    let have = fields
        .iter()
        .find(|(n, _)| *n == expected_field)
        .map_or(0, |&(_, len)| len);
    if have != count {
        return Err(format!("{have} values in {expected_field}"));
    }
    // `count` equals the length of a field already in memory, so these allocations are bounded
    // by the input.
    let bytes: Vec<u8> = match dtype {
        DType::F32 => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::I64 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::I32 => t.int32_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 | DType::BF16 => t
            .int32_data
            .iter()
            .flat_map(|&v| (v as u16).to_le_bytes())
            .collect(),
        DType::I8 => t.int32_data.iter().map(|&v| v as i8 as u8).collect(),
        DType::U8 => t.int32_data.iter().map(|&v| v as u8).collect(),
        DType::Bool => t.int32_data.iter().map(|&v| u8::from(v != 0)).collect(),
    };
    Ok(Bytes::from(bytes))
}

/// Booleans are stored one byte each as 0 or 1; maps any non-zero byte to 1 (copying only if
/// some byte needs it).
fn normalize_bools(bytes: Bytes) -> Bytes {
    if bytes.iter().all(|&b| b <= 1) {
        bytes
    } else {
        Bytes::from(bytes.iter().map(|&b| u8::from(b != 0)).collect::<Vec<u8>>())
    }
}

/// Stores `data` as a `TensorProto` named `name`, with the bytes in `raw_data` (shared, not
/// copied). The inverse of [`tensor_from_proto`] for in-memory data; useful for writing test
/// models and `.pb` files.
pub fn tensor_to_proto(name: &str, data: &TensorData) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: data.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype_to_onnx(data.dtype())),
        raw_data: Some(data.bytes().clone()),
        ..TensorProto::default()
    }
}

/// Reads a file holding one serialized `TensorProto` (the ONNX backend-test format of
/// `input_0.pb` / `output_0.pb`) and returns the tensor's name (empty if it has none) and value.
///
/// External data, if any, is resolved relative to the file's directory. Errors are prefixed with
/// the path.
pub fn read_tensor_pb(path: &Path) -> Result<(String, Tensor), String> {
    let fail = |msg: String| format!("{}: {msg}", path.display());
    let buf = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let proto = TensorProto::decode(Bytes::from(buf))
        .map_err(|e| fail(format!("not a valid ONNX TensorProto: {e}")))?;
    let mut external = ExternalDataCache::for_model(path);
    let data = tensor_from_proto(&proto, &mut external).map_err(fail)?;
    Ok((proto.name.unwrap_or_default(), Tensor::from_data(&data)))
}

/// Decodes a `ModelProto` from `bytes`; `bytes` fields of the result share `bytes`' buffer.
fn decode_model(bytes: Bytes) -> Result<ModelProto, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let model = ModelProto::decode(bytes)
        .map_err(|e| format!("{e} (the file is truncated, corrupt or not ONNX)"))?;
    if model.graph.is_none() {
        return Err("it has no graph".into());
    }
    Ok(model)
}

/// Loads an ONNX model file.
///
/// The file is memory-mapped and decoded from [`Bytes::from_owner`] of the mapping, so the
/// `raw_data` of initializers references the mapping instead of being copied. External data is
/// not read here: resolve it per tensor with [`tensor_from_proto`] and an
/// [`ExternalDataCache::for_model`] of the same path.
///
/// Errors are prefixed with the path: a missing or unreadable file gives the I/O error, and
/// bytes that don't decode (or decode to a model without a graph) give
/// `{path}: not a valid ONNX model: {reason}`.
pub fn load_model_proto(path: &Path) -> Result<ModelProto, String> {
    let bytes = map_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    decode_model(bytes).map_err(|e| format!("{}: not a valid ONNX model: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::proto::{GraphProto, StringStringEntryProto};
    use super::*;

    use crate::test_util::TempDir;

    fn proto(name: &str, dtype: DType, dims: &[i64]) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            data_type: Some(dtype_to_onnx(dtype)),
            dims: dims.to_vec(),
            ..TensorProto::default()
        }
    }

    fn raw(name: &str, dtype: DType, dims: &[i64], bytes: &[u8]) -> TensorProto {
        TensorProto {
            raw_data: Some(Bytes::copy_from_slice(bytes)),
            ..proto(name, dtype, dims)
        }
    }

    fn no_external() -> ExternalDataCache {
        ExternalDataCache::new("/nonexistent-kiln-model-dir")
    }

    fn read(t: &TensorProto) -> Result<TensorData, String> {
        tensor_from_proto(t, &mut no_external())
    }

    fn entry(key: &str, value: &str) -> StringStringEntryProto {
        StringStringEntryProto {
            key: Some(key.into()),
            value: Some(value.into()),
        }
    }

    fn external(name: &str, dtype: DType, dims: &[i64], entries: &[(&str, &str)]) -> TensorProto {
        TensorProto {
            data_location: Some(DataLocation::External as i32),
            external_data: entries.iter().map(|(k, v)| entry(k, v)).collect(),
            ..proto(name, dtype, dims)
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn dtype_codes_round_trip() {
        for d in DType::ALL {
            assert_eq!(dtype_from_onnx(dtype_to_onnx(d)), Ok(d));
        }
        let expected = [
            (1, DType::F32),
            (2, DType::U8),
            (3, DType::I8),
            (6, DType::I32),
            (7, DType::I64),
            (9, DType::Bool),
            (10, DType::F16),
            (16, DType::BF16),
        ];
        for (code, d) in expected {
            assert_eq!(dtype_from_onnx(code), Ok(d));
            assert_eq!(dtype_to_onnx(d), code);
        }
    }

    #[test]
    fn unsupported_dtypes_are_named() {
        assert_eq!(
            dtype_from_onnx(11).unwrap_err(),
            "DOUBLE (11) is not supported"
        );
        assert_eq!(
            dtype_from_onnx(8).unwrap_err(),
            "STRING (8) is not supported"
        );
        assert_eq!(
            dtype_from_onnx(0).unwrap_err(),
            "UNDEFINED (0) is not supported"
        );
        assert_eq!(
            dtype_from_onnx(1000).unwrap_err(),
            "unknown ONNX element type 1000 is not supported"
        );
        let t = raw("d", DType::F32, &[1], &[0; 8]);
        let t = TensorProto {
            data_type: Some(11),
            ..t
        };
        assert_eq!(
            read(&t).unwrap_err(),
            "tensor `d`: DOUBLE (11) is not supported"
        );
    }

    /// For every dtype: the typed encoding and the raw encoding decode to the same bytes.
    #[test]
    fn raw_and_typed_encodings_agree() {
        // (dtype, typed proto, expected little-endian bytes)
        let f32s = [1.5f32, -2.0, 0.0, f32::MAX];
        let cases: Vec<(DType, TensorProto, Vec<u8>)> = vec![
            (
                DType::F32,
                TensorProto {
                    float_data: f32s.to_vec(),
                    ..proto("t", DType::F32, &[2, 2])
                },
                f32s.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                DType::U8,
                TensorProto {
                    int32_data: vec![0, 200, 255, 7],
                    ..proto("t", DType::U8, &[2, 2])
                },
                vec![0, 200, 255, 7],
            ),
            (
                DType::I8,
                TensorProto {
                    int32_data: vec![-1, 2, -128, 127],
                    ..proto("t", DType::I8, &[2, 2])
                },
                vec![0xff, 2, 0x80, 0x7f],
            ),
            (
                DType::I32,
                TensorProto {
                    int32_data: vec![-1, i32::MAX, 0, 5],
                    ..proto("t", DType::I32, &[2, 2])
                },
                [-1i32, i32::MAX, 0, 5]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            (
                DType::I64,
                TensorProto {
                    int64_data: vec![-1, 1 << 40, i64::MIN, 3],
                    ..proto("t", DType::I64, &[2, 2])
                },
                [-1i64, 1 << 40, i64::MIN, 3]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            (
                DType::Bool,
                TensorProto {
                    int32_data: vec![1, 0, 0, 1],
                    ..proto("t", DType::Bool, &[2, 2])
                },
                vec![1, 0, 0, 1],
            ),
            (
                // 1.0, -2.0, +inf, 0.5 as f16 bits.
                DType::F16,
                TensorProto {
                    int32_data: vec![0x3c00, 0xc000, 0x7c00, 0x3800],
                    ..proto("t", DType::F16, &[2, 2])
                },
                [0x3c00u16, 0xc000, 0x7c00, 0x3800]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            (
                // 1.0, -2.0, +inf, 0.5 as bf16 bits.
                DType::BF16,
                TensorProto {
                    int32_data: vec![0x3f80, 0xc000, 0x7f80, 0x3f00],
                    ..proto("t", DType::BF16, &[2, 2])
                },
                [0x3f80u16, 0xc000, 0x7f80, 0x3f00]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
        ];
        for (dtype, typed, bytes) in cases {
            let from_typed = read(&typed).unwrap_or_else(|e| panic!("{dtype}: {e}"));
            assert_eq!(from_typed.dtype(), dtype);
            assert_eq!(from_typed.shape(), &[2, 2]);
            assert_eq!(from_typed.bytes().as_ref(), bytes.as_slice(), "{dtype}");

            let buf = Bytes::from(bytes.clone());
            let raw_proto = TensorProto {
                raw_data: Some(buf.clone()),
                ..proto("t", dtype, &[2, 2])
            };
            let from_raw = read(&raw_proto).unwrap();
            assert_eq!(from_raw, from_typed, "{dtype}");
            // Zero-copy: the tensor's bytes are the raw_data buffer itself.
            assert_eq!(from_raw.bytes().as_ptr(), buf.as_ptr(), "{dtype}");

            // Round trip through tensor_to_proto and a serialized buffer.
            let encoded = tensor_to_proto("t", &from_raw).encode_to_vec();
            let decoded = TensorProto::decode(Bytes::from(encoded)).unwrap();
            assert_eq!(read(&decoded).unwrap(), from_typed, "{dtype}");
        }
    }

    #[test]
    fn f16_bits_use_only_the_low_half() {
        let t = TensorProto {
            int32_data: vec![0x7fff_3c00],
            ..proto("h", DType::F16, &[1])
        };
        assert_eq!(read(&t).unwrap().bytes().as_ref(), &[0x00, 0x3c]);
    }

    #[test]
    fn scalars_and_empty_tensors() {
        let s = TensorProto {
            int64_data: vec![42],
            ..proto("s", DType::I64, &[])
        };
        let d = read(&s).unwrap();
        assert_eq!(d.shape(), &[] as &[usize]);
        assert_eq!(Tensor::from_data(&d), Tensor::scalar(42i64));

        let e = proto("e", DType::F32, &[0, 5]);
        let d = read(&e).unwrap();
        assert_eq!(d.shape(), &[0, 5]);
        assert!(d.is_empty());
    }

    #[test]
    fn raw_bools_are_normalized() {
        let t = raw("b", DType::Bool, &[3], &[0, 7, 1]);
        assert_eq!(read(&t).unwrap().bytes().as_ref(), &[0, 1, 1]);
    }

    #[test]
    fn length_mismatches_are_errors() {
        let t = raw("w", DType::F32, &[3, 4], &[0; 10]);
        assert_eq!(
            read(&t).unwrap_err(),
            "tensor `w`: 10 bytes of data but f32[3, 4] needs 48"
        );
        let t = TensorProto {
            float_data: vec![1.0; 11],
            ..proto("w", DType::F32, &[3, 4])
        };
        assert_eq!(
            read(&t).unwrap_err(),
            "tensor `w`: 11 values in float_data but f32[3, 4] needs 12"
        );
        // No data at all for a non-empty tensor.
        let t = proto("w", DType::I64, &[2]);
        assert_eq!(
            read(&t).unwrap_err(),
            "tensor `w`: 0 values in int64_data but i64[2] needs 2"
        );
        // Data in the wrong typed field.
        let t = TensorProto {
            int64_data: vec![1, 2],
            ..proto("w", DType::F32, &[2])
        };
        let e = read(&t).unwrap_err();
        assert!(e.starts_with("tensor `w`: 2 values in int64_data"), "{e}");
        // Unnamed tensors still get a useful label.
        let t = TensorProto {
            name: None,
            ..raw("", DType::U8, &[2], &[1])
        };
        assert_eq!(
            read(&t).unwrap_err(),
            "unnamed tensor: 1 bytes of data but u8[2] needs 2"
        );
    }

    #[test]
    fn bad_dims_are_errors() {
        let t = raw("n", DType::F32, &[2, -1], &[0; 8]);
        assert_eq!(
            read(&t).unwrap_err(),
            "tensor `n`: negative dimension -1 in dims [2, -1]"
        );
        // Overflowing element count: an error, and nothing is allocated for it.
        let t = raw("big", DType::F32, &[i64::MAX, i64::MAX], &[0; 4]);
        let e = read(&t).unwrap_err();
        assert!(
            e.starts_with("tensor `big`: f32[") && e.ends_with("is too large"),
            "{e}"
        );
        // Element count fits but the byte count doesn't.
        let n = (usize::MAX / 2) as i64;
        let e = read(&raw("big", DType::I64, &[n], &[])).unwrap_err();
        assert!(e.ends_with("is too large"), "{e}");
        // A huge but representable shape with typed data: checked against the data present.
        let t = TensorProto {
            float_data: vec![1.0],
            ..proto("huge", DType::F32, &[1 << 40])
        };
        let e = read(&t).unwrap_err();
        assert!(e.contains("1 values in float_data"), "{e}");
    }

    #[test]
    fn segments_are_rejected() {
        let t = TensorProto {
            segment: Some(super::super::proto::tensor_proto::Segment {
                begin: Some(0),
                end: Some(1),
            }),
            ..raw("seg", DType::U8, &[1], &[1])
        };
        assert_eq!(
            read(&t).unwrap_err(),
            "tensor `seg`: segmented tensors are not supported"
        );
    }

    /// Bytes produced by `onnx` 1.22 (`numpy_helper.from_array` / `helper.make_tensor`).
    #[test]
    fn decodes_tensors_serialized_by_onnx() {
        let decode = |h: &str| read(&TensorProto::decode(Bytes::from(hex(h))).unwrap());

        // from_array(np.array([[1.5, -2, 3], [4, 5, 6.25]], np.float32), name="x"): raw_data
        let x = decode("0802080310014201784a180000c03f000000c000004040000080400000a0400000c840");
        let want = Tensor::from_vec(&[2, 3], vec![1.5f32, -2.0, 3.0, 4.0, 5.0, 6.25]).unwrap();
        assert_eq!(Tensor::from_data(&x.unwrap()), want);

        // make_tensor("y", INT64, [3], [1, -2, 1 << 40], raw=False): int64_data
        let y = decode("080310073a1101feffffffffffffffff01808080808020420179").unwrap();
        assert_eq!(
            Tensor::from_data(&y),
            Tensor::from_vec(&[3], vec![1i64, -2, 1 << 40]).unwrap()
        );

        // make_tensor("h", FLOAT16, [2], [1.0, -2.0], raw=False): int32_data [15360, 49152]
        let h = decode("0802100a2a058078808003420168").unwrap();
        assert_eq!(h.dtype(), DType::F16);
        assert_eq!(h.bytes().as_ref(), &[0x00, 0x3c, 0x00, 0xc0]);
        assert_eq!(
            Tensor::from_data(&h)
                .to_f32_array()
                .iter()
                .copied()
                .collect::<Vec<f32>>(),
            vec![1.0, -2.0]
        );

        // make_tensor("b", BOOL, [3], [True, False, True], raw=False)
        let b = decode("080310092a03010001420162").unwrap();
        assert_eq!(
            Tensor::from_data(&b),
            Tensor::from_vec(&[3], vec![true, false, true]).unwrap()
        );

        // make_tensor("i8", INT8, [3], [-1, 2, -128], raw=False): sign-extended int32_data
        let i = decode("080310032a15ffffffffffffffffff010280ffffffffffffffff0142026938").unwrap();
        assert_eq!(
            Tensor::from_data(&i),
            Tensor::from_vec(&[3], vec![-1i8, 2, -128]).unwrap()
        );

        // make_tensor("bf", BFLOAT16, [2], [1.0, -2.0], raw=False): int32_data [16256, 49152]
        let bf = decode("080210102a05807f80800342026266").unwrap();
        assert_eq!(bf.dtype(), DType::BF16);
        assert_eq!(
            Tensor::from_data(&bf)
                .to_f32_array()
                .iter()
                .copied()
                .collect::<Vec<f32>>(),
            vec![1.0, -2.0]
        );
    }

    #[test]
    fn external_data() {
        let dir = TempDir::new("ext");
        // 4 bytes of padding, then 3 f32s, then 2 i64s.
        let mut file = vec![0xaa; 4];
        for v in [1.0f32, 2.0, 3.0] {
            file.extend(v.to_le_bytes());
        }
        for v in [7i64, -8] {
            file.extend(v.to_le_bytes());
        }
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/weights.bin"), &file).unwrap();

        let mut cache = ExternalDataCache::for_model(&dir.path().join("model.onnx"));
        assert_eq!(cache.model_dir(), dir.path());
        let a = external(
            "a",
            DType::F32,
            &[3],
            &[
                ("location", "sub/weights.bin"),
                ("offset", "4"),
                ("length", "12"),
            ],
        );
        let a = tensor_from_proto(&a, &mut cache).unwrap();
        assert_eq!(
            Tensor::from_data(&a),
            Tensor::from_vec(&[3], vec![1.0f32, 2.0, 3.0]).unwrap()
        );
        // No length: the rest of the file. `./` prefix: the same file, still mapped once.
        let b = external(
            "b",
            DType::I64,
            &[2],
            &[
                ("location", "./sub/weights.bin"),
                ("offset", "16"),
                ("checksum", "x"),
            ],
        );
        let b = tensor_from_proto(&b, &mut cache).unwrap();
        assert_eq!(
            Tensor::from_data(&b),
            Tensor::from_vec(&[2], vec![7i64, -8]).unwrap()
        );
        assert_eq!(cache.len(), 1);
        // Both are views into the same mapping.
        assert_eq!(
            b.bytes().as_ptr() as usize - a.bytes().as_ptr() as usize,
            12
        );

        // Length that doesn't match the dims.
        let t = external(
            "c",
            DType::F32,
            &[2],
            &[
                ("location", "sub/weights.bin"),
                ("offset", "4"),
                ("length", "12"),
            ],
        );
        assert_eq!(
            tensor_from_proto(&t, &mut cache).unwrap_err(),
            "tensor `c`: 12 bytes of data but f32[2] needs 8"
        );

        // Range past the end of the file (via length, and via offset).
        for (offset, length) in [("20", "16"), ("40", "4"), ("18446744073709551615", "2")] {
            let t = external(
                "d",
                DType::U8,
                &[4],
                &[
                    ("location", "sub/weights.bin"),
                    ("offset", offset),
                    ("length", length),
                ],
            );
            let e = tensor_from_proto(&t, &mut cache).unwrap_err();
            assert!(
                e.starts_with("tensor `d`: external data range offset")
                    && e.contains("past the end"),
                "{e}"
            );
        }
        let t = external(
            "d",
            DType::U8,
            &[1],
            &[("location", "sub/weights.bin"), ("offset", "99")],
        );
        let e = tensor_from_proto(&t, &mut cache).unwrap_err();
        assert_eq!(
            e,
            "tensor `d`: external data range offset 99 is past the end of `sub/weights.bin` (32 bytes)"
        );

        // Missing file.
        let t = external("m", DType::U8, &[1], &[("location", "missing.bin")]);
        let e = tensor_from_proto(&t, &mut cache).unwrap_err();
        assert!(
            e.starts_with("tensor `m`: cannot read external data file")
                && e.contains("missing.bin"),
            "{e}"
        );

        // Paths leaving the model directory.
        std::fs::write(dir.path().join("sub/inner.onnx"), b"").unwrap();
        let mut inner = ExternalDataCache::for_model(&dir.path().join("sub/inner.onnx"));
        for loc in ["../sub/weights.bin", "sub/../../x.bin"] {
            let t = external("p", DType::U8, &[1], &[("location", loc)]);
            assert_eq!(
                tensor_from_proto(&t, &mut inner).unwrap_err(),
                format!("tensor `p`: external data location `{loc}` leaves the model directory")
            );
        }
        let abs = dir.path().join("sub/weights.bin");
        let t = external("p", DType::U8, &[1], &[("location", abs.to_str().unwrap())]);
        let e = tensor_from_proto(&t, &mut inner).unwrap_err();
        assert!(e.ends_with("must be a relative path"), "{e}");
        assert!(inner.is_empty());

        // Missing location and malformed numbers.
        let t = external("q", DType::U8, &[1], &[("offset", "0")]);
        assert_eq!(
            tensor_from_proto(&t, &mut cache).unwrap_err(),
            "tensor `q`: external data has no `location` entry"
        );
        let t = external(
            "q",
            DType::U8,
            &[1],
            &[("location", "sub/weights.bin"), ("offset", "-1")],
        );
        assert_eq!(
            tensor_from_proto(&t, &mut cache).unwrap_err(),
            "tensor `q`: external data offset `-1` is not a non-negative integer"
        );
        let t = external("q", DType::U8, &[1], &[("location", "")]);
        assert!(tensor_from_proto(&t, &mut cache)
            .unwrap_err()
            .contains("names no file"));
    }

    #[test]
    fn names_from_the_file_cannot_split_an_error() {
        let t = raw("a\nb\r", DType::F32, &[2], &[0; 3]);
        assert_eq!(
            read(&t).unwrap_err(),
            "tensor `a\\nb\\r`: 3 bytes of data but f32[2] needs 8"
        );
        for (key, value) in [("location", "x\n/../y"), ("offset", "1\nx")] {
            let t = TensorProto {
                data_location: Some(DataLocation::External as i32),
                external_data: vec![entry("location", "w.bin"), entry(key, value)],
                ..proto("e", DType::U8, &[1])
            };
            let e = read(&t).unwrap_err();
            assert!(!e.contains('\n') && e.contains("\\n"), "{e}");
        }
    }

    #[test]
    fn external_empty_file() {
        let dir = TempDir::new("empty");
        std::fs::write(dir.path().join("empty.bin"), b"").unwrap();
        let mut cache = ExternalDataCache::new(dir.path());
        let t = external("e", DType::F32, &[0], &[("location", "empty.bin")]);
        assert!(tensor_from_proto(&t, &mut cache).unwrap().is_empty());
        let t = external("e", DType::F32, &[1], &[("location", "empty.bin")]);
        assert_eq!(
            tensor_from_proto(&t, &mut cache).unwrap_err(),
            "tensor `e`: 0 bytes of data but f32[1] needs 4"
        );
    }

    #[test]
    fn tensor_pb_files() {
        let dir = TempDir::new("pb");
        let data = Tensor::from_vec(&[2, 2], vec![1i32, -2, 3, -4])
            .unwrap()
            .to_data();
        let path = dir.path().join("input_0.pb");
        std::fs::write(&path, tensor_to_proto("input", &data).encode_to_vec()).unwrap();
        let (name, t) = read_tensor_pb(&path).unwrap();
        assert_eq!(name, "input");
        assert_eq!(t, Tensor::from_data(&data));

        // The float tensor onnx's numpy_helper.from_array writes.
        let path = dir.path().join("output_0.pb");
        std::fs::write(
            &path,
            hex("0802080310014201784a180000c03f000000c000004040000080400000a0400000c840"),
        )
        .unwrap();
        let (name, t) = read_tensor_pb(&path).unwrap();
        assert_eq!(name, "x");
        assert_eq!(t.shape(), &[2, 3]);

        // Invalid contents are errors prefixed with the path.
        let p = path.display().to_string();
        let bad = dir.path().join("bad.pb");
        std::fs::write(&bad, [0xff; 7]).unwrap();
        let e = read_tensor_pb(&bad).unwrap_err();
        assert!(
            e.starts_with(&format!("{}: not a valid ONNX TensorProto:", bad.display())),
            "{e}"
        );
        let encoded = tensor_to_proto("input", &data).encode_to_vec();
        std::fs::write(&path, &encoded[..encoded.len() - 3]).unwrap();
        let e = read_tensor_pb(&path).unwrap_err();
        assert!(
            e.starts_with(&format!("{p}: not a valid ONNX TensorProto:")),
            "{e}"
        );
        let short = TensorProto {
            raw_data: Some(Bytes::from_static(&[1, 2, 3])),
            ..proto("s", DType::I32, &[1])
        };
        std::fs::write(&path, short.encode_to_vec()).unwrap();
        assert_eq!(
            read_tensor_pb(&path).unwrap_err(),
            format!("{p}: tensor `s`: 3 bytes of data but i32[1] needs 4")
        );
        let missing = dir.path().join("nope.pb");
        let e = read_tensor_pb(&missing).unwrap_err();
        assert!(e.starts_with(&format!("{}: ", missing.display())), "{e}");
    }

    fn model_with_initializer(data: &TensorData) -> ModelProto {
        ModelProto {
            ir_version: Some(10),
            graph: Some(GraphProto {
                name: Some("g".into()),
                initializer: vec![tensor_to_proto("w", data)],
                ..GraphProto::default()
            }),
            ..ModelProto::default()
        }
    }

    #[test]
    fn decoding_a_model_is_zero_copy() {
        let data = Tensor::from_vec(&[64], (0..64).map(|i| i as f32).collect())
            .unwrap()
            .to_data();
        let buf = Bytes::from(model_with_initializer(&data).encode_to_vec());
        let model = decode_model(buf.clone()).unwrap();
        let init = &model.graph.as_ref().unwrap().initializer[0];
        let raw = init.raw_data.as_ref().unwrap();
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        assert!(range.contains(&(raw.as_ptr() as usize)));
        let t = tensor_from_proto(init, &mut no_external()).unwrap();
        assert_eq!(t.bytes().as_ptr(), raw.as_ptr());
        assert_eq!(t, data);
    }

    #[test]
    fn model_files() {
        let dir = TempDir::new("model");
        let data = Tensor::from_vec(&[3], vec![1i64, 2, 3]).unwrap().to_data();
        let path = dir.path().join("model.onnx");
        std::fs::write(&path, model_with_initializer(&data).encode_to_vec()).unwrap();
        let model = load_model_proto(&path).unwrap();
        assert_eq!(model.ir_version, Some(10));
        let init = &model.graph.as_ref().unwrap().initializer[0];
        let mut cache = ExternalDataCache::for_model(&path);
        assert_eq!(tensor_from_proto(init, &mut cache).unwrap(), data);

        let p = path.display().to_string();
        // Truncated.
        let encoded = model_with_initializer(&data).encode_to_vec();
        std::fs::write(&path, &encoded[..encoded.len() - 5]).unwrap();
        let e = load_model_proto(&path).unwrap_err();
        assert!(
            e.starts_with(&format!("{p}: not a valid ONNX model: ")),
            "{e}"
        );
        // Garbage.
        std::fs::write(&path, b"\xff\xff\xff\xff garbage, not protobuf").unwrap();
        let e = load_model_proto(&path).unwrap_err();
        assert!(
            e.starts_with(&format!("{p}: not a valid ONNX model: ")),
            "{e}"
        );
        // Empty, and a valid message without a graph.
        std::fs::write(&path, b"").unwrap();
        assert_eq!(
            load_model_proto(&path).unwrap_err(),
            format!("{p}: not a valid ONNX model: the file is empty")
        );
        std::fs::write(
            &path,
            ModelProto {
                ir_version: Some(9),
                ..ModelProto::default()
            }
            .encode_to_vec(),
        )
        .unwrap();
        assert_eq!(
            load_model_proto(&path).unwrap_err(),
            format!("{p}: not a valid ONNX model: it has no graph")
        );
        // Missing.
        let missing = dir.path().join("missing.onnx");
        let e = load_model_proto(&missing).unwrap_err();
        assert!(e.starts_with(&format!("{}: ", missing.display())), "{e}");
    }

    #[test]
    fn every_prefix_of_a_model_is_handled() {
        let data = Tensor::from_vec(&[2, 3], vec![1.0f32; 6])
            .unwrap()
            .to_data();
        let encoded = model_with_initializer(&data).encode_to_vec();
        for n in 0..encoded.len() {
            // Each prefix either fails to decode or decodes to something we can inspect safely.
            if let Ok(m) = decode_model(Bytes::copy_from_slice(&encoded[..n])) {
                for init in &m.graph.unwrap().initializer {
                    let _ = tensor_from_proto(init, &mut no_external());
                }
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary bytes never make decoding or tensor reading panic.
            #[test]
            fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
                if let Ok(t) = TensorProto::decode(Bytes::from(buf.clone())) {
                    let _ = tensor_from_proto(&t, &mut no_external());
                }
                let _ = decode_model(Bytes::from(buf));
            }

            /// Arbitrary dims, dtype codes and payloads give a result consistent with the dims.
            #[test]
            fn arbitrary_tensors_never_panic(
                dims in proptest::collection::vec(prop_oneof![-2i64..6, any::<i64>()], 0..5),
                code in 0i32..30,
                raw in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
                int32 in proptest::collection::vec(any::<i32>(), 0..8),
            ) {
                let t = TensorProto {
                    name: Some("p".into()),
                    dims: dims.clone(),
                    data_type: Some(code),
                    raw_data: raw.map(Bytes::from),
                    int32_data: int32,
                    ..TensorProto::default()
                };
                match tensor_from_proto(&t, &mut no_external()) {
                    Ok(d) => {
                        let shape: Vec<i64> = d.shape().iter().map(|&x| x as i64).collect();
                        prop_assert_eq!(shape, dims);
                        prop_assert_eq!(d.bytes().len(), d.len() * d.dtype().size());
                    }
                    Err(e) => {
                        prop_assert!(e.starts_with("tensor `p`: "));
                        prop_assert!(!e.contains('\n'));
                    }
                }
            }
        }
    }
}

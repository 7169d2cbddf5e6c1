//! Stored tensor bytes: the form in which constants (weights) live in a graph.
//!
//! The bytes are a [`Bytes`] handle, so a weight read from a memory-mapped file stays a view
//! into that mapping: cloning a graph or a constant never copies weight data.

use crate::DType;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A dense, row-major, little-endian tensor held as raw bytes.
#[derive(Clone, PartialEq)]
pub struct TensorData {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Bytes,
}

impl TensorData {
    /// Wraps `bytes` as a tensor, checking that their length matches dtype and shape.
    pub fn new(dtype: DType, shape: Vec<usize>, bytes: Bytes) -> Result<TensorData, String> {
        let count = element_count(&shape).ok_or_else(|| format!("shape {shape:?} is too large"))?;
        let expected = count
            .checked_mul(dtype.size())
            .ok_or_else(|| format!("shape {shape:?} is too large"))?;
        if bytes.len() != expected {
            return Err(format!(
                "{} bytes of data for {dtype}{shape:?}, which needs {expected}",
                bytes.len()
            ));
        }
        Ok(TensorData {
            dtype,
            shape,
            bytes,
        })
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The concrete shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True if the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The raw little-endian bytes (a cheap handle, possibly into a memory map).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

/// The product of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl std::fmt::Debug for TensorData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TensorData({}{:?}, {} bytes)",
            self.dtype,
            self.shape,
            self.bytes.len()
        )
    }
}

#[derive(Serialize, Deserialize)]
struct TensorDataRepr {
    dtype: DType,
    shape: Vec<usize>,
    /// Base64 of the raw little-endian bytes.
    data: String,
}

impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TensorDataRepr {
            dtype: self.dtype,
            shape: self.shape.clone(),
            data: base64::engine::general_purpose::STANDARD.encode(&self.bytes),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TensorData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TensorData, D::Error> {
        let r = TensorDataRepr::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(r.data)
            .map_err(serde::de::Error::custom)?;
        TensorData::new(r.dtype, r.shape, Bytes::from(bytes)).map_err(serde::de::Error::custom)
    }
}

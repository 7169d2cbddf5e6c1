//! Rust types for the ONNX protobuf schema, generated at build time by `prost-build` from the
//! vendored `proto/onnx.proto` (ONNX 1.22.0).
//!
//! `bytes` fields such as [`TensorProto::raw_data`] are [`bytes::Bytes`], so a model decoded
//! from a memory-mapped `Bytes` buffer references the mapping rather than copying weights.

// prost copies the proto comments verbatim; some of their indentation upsets this doc lint.
#![allow(clippy::doc_overindented_list_items)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));

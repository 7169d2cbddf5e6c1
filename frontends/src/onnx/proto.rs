//! Rust types for the ONNX protobuf schema, generated at build time by `prost-build` from the
//! vendored `proto/onnx.proto` (ONNX 1.22.0).
//!
//! `bytes` fields such as [`TensorProto::raw_data`] are [`bytes::Bytes`], so a model decoded
//! from a memory-mapped `Bytes` buffer references the mapping rather than copying weights.

// prost copies the proto's comments verbatim: some of them are indented in a way clippy's doc
// lint dislikes, and fields the proto leaves uncommented get no docs (relevant if the crate
// enables `missing_docs`).
#![allow(clippy::doc_overindented_list_items, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));

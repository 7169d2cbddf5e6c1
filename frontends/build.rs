//! Build script for kiln-frontends: compiles the vendored `proto/onnx.proto` into Rust types.
//!
//! The proto is parsed by `protox` (pure Rust, so no system `protoc` is needed) into a
//! `FileDescriptorSet`, from which `prost-build` generates `$OUT_DIR/onnx.rs`. Every `bytes`
//! field is generated as `bytes::Bytes`, so decoding a model from a `Bytes` buffer (for example
//! a memory map) leaves `raw_data` as a zero-copy view into that buffer.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let proto_dir = manifest_dir.join("proto");
    let proto = proto_dir.join("onnx.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-changed=build.rs");

    let fds = match protox::compile([&proto], [&proto_dir]) {
        Ok(fds) => fds,
        Err(e) => panic!("failed to parse {}: {e}", proto.display()),
    };
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    if let Err(e) = config.compile_fds(fds) {
        panic!("failed to generate Rust code for {}: {e}", proto.display());
    }
}

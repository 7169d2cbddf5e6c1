//! kiln-codegen: kernel IR ([`kir`]), kernel templates ([`templates`]) and backends
//! ([`cranelift`]). A template builds KIR for an op or fused op and its shapes; a backend
//! lowers KIR to native code. Every template is tested against the reference interpreter.

pub mod cranelift;
pub mod kir;
pub mod templates;

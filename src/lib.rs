//! kiln as a library: [`pipeline`] composes the frontends, the rewrite rules, code generation
//! and the runtime into the one path (load → optimise → lower → compile → plan) that the
//! command line, the C API's tests, the tests and the benchmarks all take; [`cache`] keeps
//! compiled plans between runs; [`rule_set`] assembles the rules a model is optimised with.

pub mod cache;
pub mod pipeline;
pub mod rule_set;

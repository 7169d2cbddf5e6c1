//! kiln-passes: graph rewriting by equality saturation.
//!
//! A [`kiln_ir::Graph`] is loaded into an [`egg`] e-graph ([`convert`]) over the IR's ops
//! ([`lang`]) with an analysis of types and small constants ([`analysis`]); rewrite rules
//! parsed from `.rules` text files ([`rules`]) saturate it, and a DAG-aware, cost-based
//! extraction ([`extract`], [`cost`]) rebuilds the optimised graph.

pub mod analysis;
pub mod check;
pub mod convert;
pub mod cost;
pub mod extract;
pub mod lang;
pub mod optimize;
pub mod rules;

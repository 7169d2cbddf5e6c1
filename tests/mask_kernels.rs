//! The integer and boolean kernels that build attention masks and position ids (comparisons,
//! And, Where on bools, Cast, Range, SymbolicDims, gathers and movement of any dtype): small
//! graphs in the IR's text form, compiled by every backend with no interpreter step, agree
//! with the interpreter, and indices that a kernel computed are checked like any others.

mod common;

use kiln::pipeline::Pipeline;
use kiln_ir::{interp, text, Tensor};
use std::collections::HashMap;

/// A causal mask and a padding mask from `attention_mask` [batch, seq], as torch's dynamo
/// export builds them: positions from Range over the sequence, `j <= i`, the padding gathered
/// per key, the And of both, then 0 or the most negative f32.
const MASK: &str = "kiln graph v1
input %attention_mask: i64[batch, seq]
const %zero: i64[] = [0]
const %one: i64[] = [1]
const %low: f32[] = [-3.4028235e38]
const %none: f32[] = [0.0]
%s: i64[] = SymbolicDims[dims=dims[seq], scalar=1]()
%pos: i64[seq] = Range(%zero, %s, %one)
%row: i64[seq, 1] = Unsqueeze[axes=[1]](%pos)
%causal: bool[seq, seq] = LessOrEqual(%pos, %row)
%padding: bool[batch, seq] = Cast[to=\"bool\"](%attention_mask)
%keys: bool[batch, 1, 1, seq] = Unsqueeze[axes=[1, 2]](%padding)
%both: bool[batch, 1, seq, seq] = And(%causal, %keys)
%mask: f32[batch, 1, seq, seq] = Where(%both, %none, %low)
%shape: i64[4] = SymbolicDims[dims=dims[batch, 1, seq, seq]]()
%wide: bool[batch, 1, seq, seq] = Expand(%keys, %shape)
%flags: f32[batch, 1, seq, seq] = Cast[to=\"f32\"](%wide)
output mask = %mask
output flags = %flags
output positions = %pos
";

/// A gather whose indices a kernel computes (`ids + shift`): an index past the table must be
/// refused on every path, as the interpreter refuses it.
const SHIFTED_GATHER: &str = "kiln graph v1
input %ids: i64[n, 2]
input %table: f32[4, 3]
const %shift: i64[] = [1]
%shifted: i64[n, 2] = Add(%ids, %shift)
%picked: f32[n] = GatherND[batch_dims=0](%table, %shifted)
%rows: f32[n, 2] = GatherElements[axis=0](%table, %shifted)
output picked = %picked
output rows = %rows
";

fn feeds(pairs: &[(&str, Tensor)]) -> HashMap<String, Tensor> {
    pairs
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect()
}

#[test]
fn a_mask_builder_compiles_to_kernels_that_agree_with_the_interpreter() {
    let graph = text::parse(MASK).unwrap();
    let mask = Tensor::from_vec(&[2, 5], vec![1i64, 1, 1, 0, 0, 1, 1, 1, 1, 1]).unwrap();
    let inputs = feeds(&[("attention_mask", mask)]);
    let want = interp::run(&graph, &inputs).unwrap();
    for backend in kiln_codegen::backends() {
        let options = common::options(1, backend.clone());
        let program = Pipeline::new(options).compile(&graph).unwrap();
        let interpreted: Vec<_> = program
            .reports()
            .iter()
            .filter(|r| r.kind == "interp")
            .collect();
        assert!(
            interpreted.is_empty(),
            "{}: {interpreted:?}",
            backend.name()
        );
        let (got, _) = program.run(&inputs).unwrap();
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            assert_eq!(g, w, "{}: output {name}", backend.name());
        }
    }
}

#[test]
fn indices_a_kernel_computed_are_checked() {
    let graph = text::parse(SHIFTED_GATHER).unwrap();
    let table = Tensor::from_vec(&[4, 3], (0..12).map(|v| v as f32).collect()).unwrap();
    let good = Tensor::from_vec(&[2, 2], vec![0i64, 1, 2, -3]).unwrap();
    // After the shift, 3 + 1 = 4 is past the 4 rows of the table.
    let bad = Tensor::from_vec(&[2, 2], vec![0i64, 1, 3, 0]).unwrap();
    let good_feeds = feeds(&[("ids", good), ("table", table.clone())]);
    let bad_feeds = feeds(&[("ids", bad), ("table", table)]);
    let want = interp::run(&graph, &good_feeds).unwrap();
    assert!(interp::run(&graph, &bad_feeds).is_err());
    for backend in kiln_codegen::backends() {
        let options = common::options(1, backend.clone());
        let program = Pipeline::new(options).compile(&graph).unwrap();
        let kernels = program.reports().iter().filter(|r| r.kind == "movement");
        assert_eq!(
            kernels.count(),
            2,
            "{}: both gathers are kernels",
            backend.name()
        );
        let (got, _) = program.run(&good_feeds).unwrap();
        for ((name, g), (_, w)) in got.iter().zip(&want) {
            assert_eq!(g, w, "{}: output {name}", backend.name());
        }
        let err = program.run(&bad_feeds).unwrap_err().to_string();
        assert!(
            err.contains("`shifted`") && err.contains("index 4 is out of range"),
            "{}: {err}",
            backend.name()
        );
    }
}

//! The reference interpreter: a plain, obviously-correct implementation of every op, and a
//! graph runner on top of it. It is the oracle that every optimised path is tested against, so
//! clarity beats speed; floats of every width are computed in f32 and rounded back.

mod elementwise;
mod fused;
mod linalg;
mod movement;
mod nn;
mod quant;
mod reduce;
mod runner;

pub use runner::{bind_symbols, check_outputs_fit, run, RunError};

use crate::op::{Op, OpKind};
use crate::{DType, Tensor};
use ndarray::ArrayD;
use std::collections::HashMap;

/// Symbol values of one run (`batch` = 2, `seq` = 16, ...), bound from the input shapes.
pub type Bindings = HashMap<String, i64>;

type Res<T> = Result<T, String>;

/// Evaluates one op on concrete inputs (`None` for an absent optional input).
/// `symbols` gives the values of symbolic dims, needed by `SymbolicDims`.
pub fn eval_op(op: &Op, inputs: &[Option<&Tensor>], symbols: &Bindings) -> Res<Vec<Tensor>> {
    use OpKind::*;
    if let (Some(key), Some(list)) = (op.kind.list_input_attr(), opt_input(inputs, 1)) {
        let mut with_attr = op.clone();
        with_attr
            .attrs
            .set(key, crate::Attr::Ints(list.to_i64_vec()));
        return eval_op(&with_attr, &inputs[..1], symbols);
    }
    match op.kind {
        Neg | Abs | Sqrt | Reciprocal | Exp | Log | Erf | Tanh | Sigmoid | Relu | Sin | Cos
        | Floor | Ceil | Round | Gelu | Not | IsNaN | Identity | Clip | Dropout | Cast | Add
        | Sub | Mul | Div | Pow | Max | Min | Mod | Equal | Less | Greater | LessOrEqual
        | GreaterOrEqual | And | Or | Xor | Where => elementwise::eval(op, inputs),
        MatMul | Gemm | Einsum | MatMulInteger => linalg::eval(op, inputs),
        Softmax
        | LogSoftmax
        | LayerNormalization
        | RMSNormalization
        | SimplifiedLayerNormalization
        | SkipLayerNormalization
        | SkipSimplifiedLayerNormalization
        | Attention
        | RotaryEmbedding => nn::eval(op, inputs),
        ReduceMean | ReduceSum | ReduceMax | ReduceMin | CumSum => reduce::eval(op, inputs),
        Transpose | Reshape | Flatten | Squeeze | Unsqueeze | Concat | Split | Slice | Gather
        | GatherElements | GatherND | Expand | Tile | Trilu | Shape | Size | ConstantOfShape
        | Range | SymbolicDims => movement::eval(op, inputs, symbols),
        QuantizeLinear | DequantizeLinear | DynamicQuantizeLinear => quant::eval(op, inputs),
        FusedAttention | Silu | SwiGlu | FusedMatMul | RopeRotateHalf => {
            fused::eval(op, inputs, symbols)
        }
    }
}

/// The most elements one tensor may have (2^30, 4 GiB of f32): ops whose output size comes
/// from data (Range, ConstantOfShape, Expand, Tile) check it before allocating.
pub const MAX_ELEMENTS: usize = 1 << 30;

/// Errors if a tensor of `shape` would exceed [`MAX_ELEMENTS`].
fn check_size(shape: &[usize]) -> Res<()> {
    match crate::data::element_count(shape) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(format!(
            "output shape {shape:?} exceeds kiln's limit of {MAX_ELEMENTS} elements"
        )),
    }
}

/// Input `i`, or an error naming it.
fn input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Res<&'a Tensor> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} is missing"))
}

/// Input `i` if present.
fn opt_input<'a>(inputs: &[Option<&'a Tensor>], i: usize) -> Option<&'a Tensor> {
    inputs.get(i).copied().flatten()
}

/// Input `i` as f32 values, checking that it is a float tensor.
fn float_input(inputs: &[Option<&Tensor>], i: usize) -> Res<ArrayD<f32>> {
    let t = input(inputs, i)?;
    if !t.dtype().is_float() {
        return Err(format!(
            "input {i} is {} but must be a float type",
            t.dtype()
        ));
    }
    Ok(t.to_f32_array())
}

/// Rounds f32 results back to the float dtype `dtype`.
fn from_f32(dtype: DType, a: ArrayD<f32>) -> Tensor {
    match dtype {
        DType::F32 => Tensor::F32(a),
        other => Tensor::F32(a).cast(other),
    }
}

/// Deterministic pseudo-random test values in `[lo, hi)` (an LCG), shared by the op tests.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    const A: u64 = 6364136223846793005;
    const C: u64 = 1442695040888963407;
    let mut s = seed.wrapping_mul(A).wrapping_add(C);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(A).wrapping_add(C);
            lo + ((s >> 40) as f32 / (1u64 << 24) as f32) * (hi - lo)
        })
        .collect()
}

/// Test helper: evaluates a single-output op and checks its result against shape inference
/// (the declared types of a graph come from inference, so the two must agree).
#[cfg(test)]
pub(crate) fn eval_checked(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    use crate::graph::ValueType;
    let mut out = eval_op(op, inputs, &Bindings::new())?;
    assert_eq!(out.len(), 1);
    let out = out.remove(0);
    let types: Vec<Option<ValueType>> = inputs
        .iter()
        .map(|t| {
            t.map(|t| {
                ValueType::new(
                    t.dtype(),
                    t.shape().iter().map(|&d| crate::Dim::from(d)).collect(),
                )
            })
        })
        .collect();
    let refs: Vec<Option<&ValueType>> = types.iter().map(|t| t.as_ref()).collect();
    let inferred = crate::infer::infer_op(op, &refs, 1)
        .expect("inference accepts what eval accepts")
        .remove(0);
    assert_eq!(inferred.dtype, out.dtype(), "dtype differs from inference");
    assert_eq!(
        inferred.concrete_shape().as_deref(),
        Some(out.shape()),
        "shape differs from inference"
    );
    Ok(out)
}

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

pub use runner::{
    bind_given_shapes, bind_input_symbols, bind_symbols, check_declared, check_outputs_fit,
    check_results_fit, run, RunError,
};

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
        | GatherElements | GatherND | TensorScatter | Expand | Tile | Trilu | Shape | Size
        | ConstantOfShape | Range | SymbolicDims => movement::eval(op, inputs, symbols),
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

/// Empty tensors (a 0-length dim, as batch 0 or seq 0 give) flow through every op as ONNX
/// specifies: each case is checked against shape inference, and the
/// values that an empty input still determines (reduction identities, products over K = 0) are
/// checked too.
#[cfg(test)]
mod empty_tensor_tests {
    use super::*;
    use crate::{Attr, Attrs};

    fn f32s(shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(shape, test_values(n, 7, -1.0, 1.0)).unwrap()
    }

    fn i64s(shape: &[usize], v: Vec<i64>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    fn op(kind: OpKind, attrs: &[(&str, Attr)]) -> Op {
        Op::new(kind, Attrs::from_pairs(attrs))
    }

    /// Output 0 of `op`, checked against shape inference on the inputs' types (with the values
    /// of small integer inputs, as constants have them) wherever inference resolves the shape.
    fn run(op: &Op, inputs: &[&Tensor]) -> Tensor {
        let args: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        let out = eval_op(op, &args, &Bindings::new())
            .unwrap_or_else(|e| panic!("{}: {e}", op.kind))
            .remove(0);
        let types: Vec<Option<crate::graph::ValueType>> = inputs
            .iter()
            .map(|t| Some(crate::infer::constant_type(&t.to_data())))
            .collect();
        let refs: Vec<Option<&crate::graph::ValueType>> =
            types.iter().map(|t| t.as_ref()).collect();
        let inferred = crate::infer::infer_op(op, &refs, 1)
            .unwrap_or_else(|e| panic!("{}: inference: {e}", op.kind))
            .remove(0);
        assert_eq!(inferred.dtype, out.dtype(), "{}", op.kind);
        if let Some(shape) = inferred.concrete_shape() {
            assert_eq!(
                shape,
                out.shape(),
                "{}: shape differs from inference",
                op.kind
            );
        }
        out
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.to_f32_array().iter().copied().collect()
    }

    #[test]
    fn elementwise_and_movement_ops_keep_empty_shapes() {
        use OpKind::*;
        let (e, axis) = (f32s(&[0, 3]), Tensor::scalar(0i64));
        let cases: Vec<(Op, Vec<&Tensor>, Vec<usize>)> = vec![
            (op(Relu, &[]), vec![&e], vec![0, 3]),
            (op(Gelu, &[]), vec![&e], vec![0, 3]),
            (
                op(Cast, &[("to", Attr::Str("i64".into()))]),
                vec![&e],
                vec![0, 3],
            ),
            (op(Transpose, &[]), vec![&e], vec![3, 0]),
            (op(Flatten, &[]), vec![&e], vec![0, 3]),
            (
                op(Unsqueeze, &[("axes", Attr::Ints(vec![0]))]),
                vec![&e],
                vec![1, 0, 3],
            ),
            (op(Softmax, &[]), vec![&e], vec![0, 3]),
            (
                op(LogSoftmax, &[("axis", Attr::Int(0))]),
                vec![&e],
                vec![0, 3],
            ),
            (op(CumSum, &[]), vec![&e, &axis], vec![0, 3]),
            (op(Trilu, &[]), vec![&e], vec![0, 3]),
            (op(Silu, &[]), vec![&e], vec![0, 3]),
        ];
        for (op, inputs, shape) in cases {
            assert_eq!(run(&op, &inputs).shape(), &shape[..], "{}", op.kind);
        }
    }

    #[test]
    fn broadcasting_concat_gather_slice_and_shapes_with_empty_tensors() {
        use OpKind::*;
        let (e, row) = (f32s(&[0, 3]), f32s(&[1, 3]));
        assert_eq!(run(&op(Add, &[]), &[&e, &row]).shape(), &[0, 3]);
        assert_eq!(
            run(&op(Mul, &[]), &[&f32s(&[2, 0]), &f32s(&[2, 1])]).shape(),
            &[2, 0]
        );
        let cond = Tensor::from_vec(&[0, 1], Vec::<bool>::new()).unwrap();
        assert_eq!(run(&op(Where, &[]), &[&cond, &row, &row]).shape(), &[0, 3]);
        let two = f32s(&[2, 3]);
        let cat = run(&op(Concat, &[("axis", Attr::Int(0))]), &[&e, &two, &e]);
        assert_eq!(values(&cat), values(&two));
        // Gathering no rows, and gathering from an empty axis with no indices.
        let none = i64s(&[0], vec![]);
        assert_eq!(run(&op(Gather, &[]), &[&two, &none]).shape(), &[0, 3]);
        assert_eq!(run(&op(Gather, &[]), &[&e, &none]).shape(), &[0, 3]);
        let ids = i64s(&[1, 0], vec![]);
        assert_eq!(run(&op(Gather, &[]), &[&two, &ids]).shape(), &[1, 0, 3]);
        let (s, en, ax) = (
            i64s(&[1], vec![1]),
            i64s(&[1], vec![1]),
            i64s(&[1], vec![1]),
        );
        assert_eq!(run(&op(Slice, &[]), &[&two, &s, &en, &ax]).shape(), &[2, 0]);
        let target = i64s(&[2], vec![0, 3]);
        assert_eq!(run(&op(Expand, &[]), &[&row, &target]).shape(), &[0, 3]);
        let to = i64s(&[2], vec![-1, 6]);
        assert_eq!(run(&op(Reshape, &[]), &[&e, &to]).shape(), &[0, 6]);
        let reps = i64s(&[2], vec![0, 2]);
        assert_eq!(run(&op(Tile, &[]), &[&two, &reps]).shape(), &[0, 6]);
        let split = run(&op(Split, &[("split", Attr::Ints(vec![0, 2]))]), &[&two]);
        assert_eq!(split.shape(), &[0, 3]);
        assert_eq!(run(&op(Shape, &[]), &[&e]).to_i64_vec(), vec![0, 3]);
        assert_eq!(run(&op(Size, &[]), &[&e]).to_i64_vec(), vec![0]);
        let zero = i64s(&[], vec![0]);
        let range = run(&op(Range, &[]), &[&zero, &zero, &i64s(&[], vec![1])]);
        assert_eq!(range.shape(), &[0]);
        let shape = i64s(&[2], vec![4, 0]);
        assert_eq!(run(&op(ConstantOfShape, &[]), &[&shape]).shape(), &[4, 0]);
    }

    #[test]
    fn reductions_over_an_empty_axis_give_the_identity() {
        use OpKind::*;
        let x = f32s(&[2, 0]);
        let over = |kind| {
            let a = [("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))];
            values(&run(&op(kind, &a), &[&x]))
        };
        assert_eq!(over(ReduceSum), vec![0.0, 0.0]);
        assert_eq!(over(ReduceMax), vec![f32::NEG_INFINITY; 2]);
        assert_eq!(over(ReduceMin), vec![f32::INFINITY; 2]);
        assert!(over(ReduceMean).iter().all(|v| v.is_nan()));
        // Reducing the non-empty axis of an empty tensor gives an empty tensor.
        let a = [("axes", Attr::Ints(vec![0])), ("keepdims", Attr::Int(1))];
        assert_eq!(run(&op(ReduceSum, &a), &[&x]).shape(), &[1, 0]);
    }

    #[test]
    fn products_over_an_empty_inner_dim_are_zeros() {
        use OpKind::*;
        let (a, b) = (f32s(&[2, 0]), f32s(&[0, 3]));
        let y = run(&op(MatMul, &[]), &[&a, &b]);
        assert_eq!((y.shape(), values(&y)), (&[2, 3][..], vec![0.0; 6]));
        assert_eq!(
            run(&op(MatMul, &[]), &[&b, &f32s(&[3, 4])]).shape(),
            &[0, 4]
        );
        let c = f32s(&[2, 3]);
        let y = run(&op(Gemm, &[("beta", Attr::Float(2.0))]), &[&a, &b, &c]);
        let doubled: Vec<f32> = values(&c).iter().map(|v| v * 2.0).collect();
        assert_eq!(values(&y), doubled);
        let y = run(&op(FusedMatMul, &[]), &[&a, &b, &f32s(&[3])]);
        assert_eq!(values(&y), values(&f32s(&[3])).repeat(2));
        let y = run(
            &op(Einsum, &[("equation", Attr::Str("ik,kj->ij".into()))]),
            &[&a, &b],
        );
        assert_eq!(values(&y), vec![0.0; 6]);
    }

    #[test]
    fn normalisations_and_attention_accept_empty_batches_and_sequences() {
        use OpKind::*;
        let scale = f32s(&[4]);
        let y = run(
            &op(LayerNormalization, &[]),
            &[&f32s(&[0, 4]), &scale, &scale],
        );
        assert_eq!(y.shape(), &[0, 4]);
        let y = run(&op(RMSNormalization, &[]), &[&f32s(&[2, 0, 4]), &scale]);
        assert_eq!(y.shape(), &[2, 0, 4]);
        // Normalising over an empty axis: an empty result.
        let y = run(&op(LayerNormalization, &[]), &[&f32s(&[3, 0]), &f32s(&[0])]);
        assert_eq!(y.shape(), &[3, 0]);
        let q = f32s(&[1, 2, 0, 4]);
        let kv = f32s(&[1, 2, 5, 4]);
        assert_eq!(
            run(&op(Attention, &[]), &[&q, &kv, &kv]).shape(),
            &[1, 2, 0, 4]
        );
        let causal = [("is_causal", Attr::Int(1))];
        assert_eq!(
            run(&op(FusedAttention, &causal), &[&q, &q, &q]).shape(),
            &[1, 2, 0, 4]
        );
        // No keys at all: softmax over an empty axis, then a product over K = 0.
        let (q, none) = (f32s(&[1, 2, 3, 4]), f32s(&[1, 2, 0, 4]));
        let y = run(&op(Attention, &[]), &[&q, &none, &none]);
        assert_eq!(y.shape(), &[1, 2, 3, 4]);
    }
}

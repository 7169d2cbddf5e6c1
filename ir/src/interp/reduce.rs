//! Reductions: `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin` and `CumSum`.
//!
//! Float inputs of every width are read as f32; sums (and so means and cumulative sums) are
//! accumulated in f64 and rounded once to f32 and then to the input dtype, so the oracle is at
//! least as accurate as any f32 kernel it checks. Integer reductions are exact: sums wrap to the
//! dtype like numpy, means truncate toward zero (numpy's `mean(dtype=int)`). `ReduceMax` and
//! `ReduceMin` also take bool (any / all) and propagate NaN.
//!
//! Reducing over an empty set gives the ONNX identities: 0 for sums, NaN for float means (0 for
//! integer means), -inf / +inf for float max / min and the dtype's minimum / maximum for integers.

use super::*;
use crate::infer::{norm_axis, reduce_axes};
use ndarray::{Axis, IxDyn};

/// Evaluates `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin` or `CumSum`.
pub(super) fn eval(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let out = match op.kind {
        OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax | OpKind::ReduceMin => reduce(op, x)?,
        OpKind::CumSum => cumsum(op, inputs)?,
        other => return Err(format!("{other} is not a reduction")),
    };
    Ok(vec![out])
}

/// A `Reduce*` op: the axes come from attribute `axes` through [`reduce_axes`].
fn reduce(op: &Op, x: &Tensor) -> Res<Tensor> {
    let Some(axes) = reduce_axes(&op.attrs, x.shape().len())? else {
        return Ok(x.clone());
    };
    let keepdims = op.attrs.int("keepdims")? != 0;
    let dtype = x.dtype();
    let kind = op.kind;
    if dtype.is_float() {
        let a = x.to_f32_array();
        let y = match kind {
            OpKind::ReduceSum => reduce_lanes(&a, &axes, keepdims, |v| v.iter().map(|&x| x as f64).sum::<f64>() as f32),
            OpKind::ReduceMean => reduce_lanes(&a, &axes, keepdims, |v| {
                (v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64) as f32
            }),
            OpKind::ReduceMax => reduce_lanes(&a, &axes, keepdims, |v| {
                v.iter().fold(f32::NEG_INFINITY, |m, &x| if x.is_nan() || m.is_nan() { f32::NAN } else { m.max(x) })
            }),
            _ => reduce_lanes(&a, &axes, keepdims, |v| {
                v.iter().fold(f32::INFINITY, |m, &x| if x.is_nan() || m.is_nan() { f32::NAN } else { m.min(x) })
            }),
        };
        Ok(from_f32(dtype, y))
    } else if dtype.is_int() || dtype == DType::Bool && matches!(kind, OpKind::ReduceMax | OpKind::ReduceMin) {
        let (lowest, highest) = int_range(dtype);
        let a = x.to_i64_array();
        let y = match kind {
            OpKind::ReduceSum => reduce_lanes(&a, &axes, keepdims, |v| v.iter().fold(0i64, |s, &x| s.wrapping_add(x))),
            OpKind::ReduceMean => reduce_lanes(&a, &axes, keepdims, |v| {
                // Exact: the i128 sum cannot overflow, and `/` truncates toward zero.
                let sum: i128 = v.iter().map(|&x| x as i128).sum();
                if v.is_empty() {
                    0
                } else {
                    (sum / v.len() as i128) as i64
                }
            }),
            OpKind::ReduceMax => reduce_lanes(&a, &axes, keepdims, |v| v.iter().copied().fold(lowest, i64::max)),
            _ => reduce_lanes(&a, &axes, keepdims, |v| v.iter().copied().fold(highest, i64::min)),
        };
        Ok(Tensor::I64(y).cast(dtype))
    } else {
        Err(format!("{kind} does not support {dtype}"))
    }
}

/// The smallest and largest values of an integer (or bool) dtype, as i64.
fn int_range(dtype: DType) -> (i64, i64) {
    match dtype {
        DType::I8 => (i8::MIN as i64, i8::MAX as i64),
        DType::U8 => (0, u8::MAX as i64),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::Bool => (0, 1),
        _ => (i64::MIN, i64::MAX),
    }
}

/// Applies `f` to the elements of each reduction lane: the elements sharing the indices of the
/// axes not in `axes` (sorted, distinct, in range). The reduced axes are dropped, or kept with
/// size 1 when `keepdims`.
fn reduce_lanes<T: Clone, U>(a: &ArrayD<T>, axes: &[usize], keepdims: bool, f: impl Fn(&[T]) -> U) -> ArrayD<U> {
    let shape = a.shape();
    let kept: Vec<usize> = (0..shape.len()).filter(|i| !axes.contains(i)).collect();
    // Move the reduced axes last, so that each lane is a contiguous run of the copied elements.
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let data: Vec<T> = a.view().permuted_axes(perm).iter().cloned().collect();
    let lane: usize = axes.iter().map(|&i| shape[i]).product();
    let lanes: usize = kept.iter().map(|&i| shape[i]).product();
    let out: Vec<U> = (0..lanes).map(|l| f(&data[l * lane..(l + 1) * lane])).collect();
    let out_shape: Vec<usize> = (0..shape.len())
        .filter_map(|i| match (axes.contains(&i), keepdims) {
            (false, _) => Some(shape[i]),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(&out_shape), out).expect("one value per lane")
}

/// `CumSum` of input 0 along the axis in input 1 (a 0-D or one-element integer tensor), with
/// attributes `exclusive` (each sum leaves out its own element) and `reverse` (sums run from the
/// end).
fn cumsum(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let x = input(inputs, 0)?;
    let axis_t = input(inputs, 1)?;
    if !axis_t.dtype().is_int() {
        return Err(format!("the axis input is {} but must be an integer", axis_t.dtype()));
    }
    let axis = match axis_t.to_i64_vec()[..] {
        [a] => a,
        _ => return Err(format!("the axis input must have one element, got shape {:?}", axis_t.shape())),
    };
    if x.shape().is_empty() {
        return Err("CumSum input must have rank at least 1".into());
    }
    let axis = norm_axis(axis, x.shape().len())?;
    let exclusive = op.attrs.int("exclusive")? != 0;
    let reverse = op.attrs.int("reverse")? != 0;
    let dtype = x.dtype();
    if dtype.is_float() {
        let mut a = x.to_f32_array().mapv(|v| v as f64);
        cumsum_lanes(&mut a, axis, exclusive, reverse, |s, v| s + v);
        Ok(from_f32(dtype, a.mapv(|v| v as f32)))
    } else if dtype.is_int() {
        let mut a = x.to_i64_array();
        cumsum_lanes(&mut a, axis, exclusive, reverse, i64::wrapping_add);
        Ok(Tensor::I64(a).cast(dtype))
    } else {
        Err(format!("CumSum does not support {dtype}"))
    }
}

/// Replaces each lane along `axis` by its running sums (in place).
fn cumsum_lanes<T: Copy + Default>(a: &mut ArrayD<T>, axis: usize, exclusive: bool, reverse: bool, add: impl Fn(T, T) -> T) {
    for mut lane in a.lanes_mut(Axis(axis)) {
        let n = lane.len();
        let mut sum = T::default();
        for j in 0..n {
            let i = if reverse { n - 1 - j } else { j };
            let v = lane[i];
            if exclusive {
                lane[i] = sum;
                sum = add(sum, v);
            } else {
                sum = add(sum, v);
                lane[i] = sum;
            }
        }
    }
}

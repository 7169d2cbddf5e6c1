//! Linear quantisation: QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear (ONNX opset 23
//! semantics for the integer types the IR has: u8, i8, and i32).
//!
//! Scales and zero points are per tensor (one element), per axis (1-D along attribute `axis`) or
//! blocked (the shape of x with dim `axis` divided into blocks of `block_size`). Rounding is half
//! to even and results saturate to the output type's range, as in ONNX.

use super::*;
use crate::infer::norm_axis;
use ndarray::IxDyn;

pub(super) fn eval(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Vec<Tensor>> {
    match op.kind {
        OpKind::QuantizeLinear => quantize(op, inputs),
        OpKind::DequantizeLinear => dequantize(op, inputs),
        OpKind::DynamicQuantizeLinear => dynamic_quantize(inputs),
        _ => Err(format!("{} is not a quantisation op", op.kind)),
    }
}

/// Which element of a scale / zero point applies to each element of x (by row-major index).
enum Granularity {
    /// One value for the whole tensor.
    PerTensor,
    /// One value per index along the axis: `inner` is the element count after the axis.
    PerAxis { dim: usize, inner: usize },
    /// One value per block of `block` indices along the axis (`blocks` per axis).
    Blocked { dim: usize, inner: usize, block: usize, blocks: usize },
}

impl Granularity {
    /// The granularity of a parameter of shape `p` applied to x of shape `x`.
    fn new(p: &[usize], x: &[usize], axis: i64, block_size: i64) -> Res<Granularity> {
        if p.iter().product::<usize>() == 1 {
            return Ok(Granularity::PerTensor);
        }
        let axis = norm_axis(axis, x.len())?;
        let (dim, inner) = (x[axis], x[axis + 1..].iter().product());
        match block_size {
            0 if p == [dim] => Ok(Granularity::PerAxis { dim, inner }),
            0 => Err(format!("scale of shape {p:?} is neither a scalar nor a vector of length {dim} (axis {axis} of {x:?})")),
            b if b > 0 => {
                let block = b as usize;
                let blocks = dim.div_ceil(block);
                let mut want = x.to_vec();
                want[axis] = blocks;
                if p != want.as_slice() {
                    return Err(format!("blocked scale must have shape {want:?} (block size {block} on axis {axis}), got {p:?}"));
                }
                Ok(Granularity::Blocked { dim, inner, block, blocks })
            }
            b => Err(format!("block_size {b} must not be negative")),
        }
    }

    /// The parameter index for element `i` of x.
    fn index(&self, i: usize) -> usize {
        match *self {
            Granularity::PerTensor => 0,
            Granularity::PerAxis { dim, inner } => (i / inner) % dim,
            Granularity::Blocked { dim, inner, block, blocks } => {
                let (outer, along, within) = (i / (dim * inner), (i / inner) % dim, i % inner);
                (outer * blocks + along / block) * inner + within
            }
        }
    }
}

/// The scale and optional zero point, checked to have the same shape.
fn params(op: &Op, inputs: &[Option<&Tensor>], x: &[usize]) -> Res<(Granularity, ArrayD<f64>, Option<ArrayD<i64>>)> {
    let scale = input(inputs, 1)?;
    let zero = opt_input(inputs, 2);
    if let Some(z) = zero {
        if z.shape() != scale.shape() {
            return Err(format!("zero point shape {:?} differs from scale shape {:?}", z.shape(), scale.shape()));
        }
    }
    let g = Granularity::new(scale.shape(), x, op.attrs.int("axis")?, op.attrs.int("block_size")?)?;
    Ok((g, as_row_major(scale.to_f64_array()), zero.map(|z| as_row_major(z.to_i64_array()))))
}

/// The array in row-major layout, so that `as_slice` succeeds.
fn as_row_major<T: Clone>(a: ArrayD<T>) -> ArrayD<T> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

/// The inclusive range of a quantised integer type.
fn int_range(dtype: DType) -> Res<(i64, i64)> {
    match dtype {
        DType::U8 => Ok((0, 255)),
        DType::I8 => Ok((-128, 127)),
        DType::I32 => Ok((i32::MIN as i64, i32::MAX as i64)),
        other => Err(format!("quantised type {other} is not supported (u8, i8 or i32)")),
    }
}

/// `x / scale` rounded half to even. As in the ONNX reference, the division happens in the
/// promoted type of x and the scale: f16 or bf16 when both are, f64 when x is an integer, else f32.
/// NaN quantises to 0 (then the zero point is added); infinities saturate.
fn divide_round(x: f64, scale: f64, x_type: DType, scale_type: DType) -> i64 {
    let q = x / scale;
    let q = match (x_type, scale_type) {
        (DType::F16, DType::F16) => half::f16::from_f64(q).to_f64(),
        (DType::BF16, DType::BF16) => half::bf16::from_f64(q).to_f64(),
        (t, _) if t.is_int() => q,
        _ => q as f32 as f64,
    };
    if q.is_nan() {
        0
    } else {
        q.round_ties_even() as i64
    }
}

/// QuantizeLinear: `y = saturate(round(x / y_scale) + y_zero_point)`. The output type is the zero
/// point's, else attribute `output_dtype`, else u8. `saturate` only concerns float8 outputs.
fn quantize(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let scale = input(inputs, 1)?;
    if !(x.dtype().is_float() || x.dtype() == DType::I32) {
        return Err(format!("x is {} but must be a float type or i32", x.dtype()));
    }
    if !(scale.dtype().is_float() || scale.dtype() == DType::I32) {
        return Err(format!("y_scale is {} but must be a float type or i32", scale.dtype()));
    }
    let attr_dtype: Option<DType> = match op.attrs.get("output_dtype") {
        Some(_) => Some(op.attrs.str("output_dtype")?.parse()?),
        None => None,
    };
    let out = match (opt_input(inputs, 2), attr_dtype) {
        (Some(z), Some(d)) if z.dtype() != d => {
            return Err(format!("output_dtype {d} differs from the zero point type {}", z.dtype()))
        }
        (Some(z), _) => z.dtype(),
        (None, Some(d)) => d,
        (None, None) => DType::U8,
    };
    let (lo, hi) = int_range(out)?;
    let (g, scales, zeros) = params(op, inputs, x.shape())?;
    let scales = scales.as_slice().ok_or("scale is not contiguous")?;
    let zeros = zeros.as_ref().map(|z| z.as_slice().ok_or("zero point is not contiguous")).transpose()?;
    let q: Vec<i64> = x
        .to_f64_array()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let p = g.index(i);
            let zero = zeros.map_or(0, |z| z[p]);
            divide_round(v, scales[p], x.dtype(), scale.dtype()).saturating_add(zero).clamp(lo, hi)
        })
        .collect();
    let q = ArrayD::from_shape_vec(IxDyn(x.shape()), q).map_err(|e| e.to_string())?;
    Ok(vec![Tensor::I64(q).cast(out)])
}

/// DequantizeLinear: `y = (x - x_zero_point) * x_scale`, computed in f32 and rounded to the
/// scale's type (the output type; attribute `output_dtype` may only repeat it).
fn dequantize(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let scale = input(inputs, 1)?;
    int_range(x.dtype())?;
    if !scale.dtype().is_float() {
        return Err(format!("x_scale is {} but must be a float type", scale.dtype()));
    }
    if let Some(z) = opt_input(inputs, 2) {
        if z.dtype() != x.dtype() {
            return Err(format!("zero point is {} but x is {}", z.dtype(), x.dtype()));
        }
    }
    if op.attrs.get("output_dtype").is_some() {
        let d: DType = op.attrs.str("output_dtype")?.parse()?;
        if d != scale.dtype() {
            return Err(format!("output_dtype {d} differs from the scale type {} (not supported)", scale.dtype()));
        }
    }
    let (g, scales, zeros) = params(op, inputs, x.shape())?;
    let scales = scales.as_slice().ok_or("scale is not contiguous")?;
    let zeros = zeros.as_ref().map(|z| z.as_slice().ok_or("zero point is not contiguous")).transpose()?;
    let y: Vec<f32> = x
        .to_i64_array()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let p = g.index(i);
            let zero = zeros.map_or(0.0, |z| z[p] as f32);
            (v as f32 - zero) * scales[p] as f32
        })
        .collect();
    let y = ArrayD::from_shape_vec(IxDyn(x.shape()), y).map_err(|e| e.to_string())?;
    Ok(vec![from_f32(scale.dtype(), y)])
}

/// DynamicQuantizeLinear, exactly the ONNX formula in f32: the range `[min(0, min x), max(0, max x)]`
/// gives `scale = range / 255` (1/255 for an all-zero range) and
/// `zero_point = round(clamp(-min / scale, 0, 255))`; then `y = clamp(round(x / scale) + zero_point, 0, 255)`.
/// Outputs y (u8), y_scale (f32 scalar) and y_zero_point (u8 scalar). NaN elements are ignored
/// for the range and quantise to the zero point.
fn dynamic_quantize(inputs: &[Option<&Tensor>]) -> Res<Vec<Tensor>> {
    let x = float_input(inputs, 0)?;
    let max = x.iter().fold(0.0f32, |m, &v| m.max(v));
    let min = x.iter().fold(0.0f32, |m, &v| m.min(v));
    let scale = (if max == min { 1.0 } else { max - min }) / 255.0f32;
    let zero = (0.0f32 - min / scale).clamp(0.0, 255.0).round_ties_even();
    let y = x.mapv(|v| {
        let q = (v / scale).round_ties_even() + zero;
        if q.is_nan() {
            zero as u8
        } else {
            q.clamp(0.0, 255.0) as u8
        }
    });
    Ok(vec![Tensor::U8(y), Tensor::scalar(scale), Tensor::scalar(zero as u8)])
}

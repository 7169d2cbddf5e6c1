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
    Blocked {
        dim: usize,
        inner: usize,
        block: usize,
        blocks: usize,
    },
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
            Granularity::Blocked {
                dim,
                inner,
                block,
                blocks,
            } => {
                let (outer, along, within) = (i / (dim * inner), (i / inner) % dim, i % inner);
                (outer * blocks + along / block) * inner + within
            }
        }
    }
}

/// The scale and optional zero point, checked to have the same shape.
fn params(
    op: &Op,
    inputs: &[Option<&Tensor>],
    x: &[usize],
) -> Res<(Granularity, Vec<f64>, Option<Vec<i64>>)> {
    let scale = input(inputs, 1)?;
    let zero = opt_input(inputs, 2);
    if let Some(z) = zero {
        if z.shape() != scale.shape() {
            return Err(format!(
                "zero point shape {:?} differs from scale shape {:?}",
                z.shape(),
                scale.shape()
            ));
        }
    }
    let g = Granularity::new(
        scale.shape(),
        x,
        op.attrs.int("axis")?,
        op.attrs.int("block_size")?,
    )?;
    // Row-major element order (the order `Granularity::index` counts in).
    Ok((
        g,
        scale.to_f64_array().iter().copied().collect(),
        zero.map(|z| z.to_i64_vec()),
    ))
}

/// The inclusive range of a quantised integer type.
fn int_range(dtype: DType) -> Res<(i64, i64)> {
    match dtype {
        DType::U8 => Ok((0, 255)),
        DType::I8 => Ok((-128, 127)),
        DType::I32 => Ok((i32::MIN as i64, i32::MAX as i64)),
        other => Err(format!(
            "quantised type {other} is not supported (u8, i8 or i32)"
        )),
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
        return Err(format!(
            "x is {} but must be a float type or i32",
            x.dtype()
        ));
    }
    if !(scale.dtype().is_float() || scale.dtype() == DType::I32) {
        return Err(format!(
            "y_scale is {} but must be a float type or i32",
            scale.dtype()
        ));
    }
    let attr_dtype: Option<DType> = match op.attrs.get("output_dtype") {
        Some(_) => Some(op.attrs.str("output_dtype")?.parse()?),
        None => None,
    };
    let out = match (opt_input(inputs, 2), attr_dtype) {
        (Some(z), Some(d)) if z.dtype() != d => {
            return Err(format!(
                "output_dtype {d} differs from the zero point type {}",
                z.dtype()
            ))
        }
        (Some(z), _) => z.dtype(),
        (None, Some(d)) => d,
        (None, None) => DType::U8,
    };
    let (lo, hi) = int_range(out)?;
    let (g, scales, zeros) = params(op, inputs, x.shape())?;
    let zeros = zeros.as_deref();
    let q: Vec<i64> = x
        .to_f64_array()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let p = g.index(i);
            let zero = zeros.map_or(0, |z| z[p]);
            divide_round(v, scales[p], x.dtype(), scale.dtype())
                .saturating_add(zero)
                .clamp(lo, hi)
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
        return Err(format!(
            "x_scale is {} but must be a float type",
            scale.dtype()
        ));
    }
    if let Some(z) = opt_input(inputs, 2) {
        if z.dtype() != x.dtype() {
            return Err(format!(
                "zero point is {} but x is {}",
                z.dtype(),
                x.dtype()
            ));
        }
    }
    if op.attrs.get("output_dtype").is_some() {
        let d: DType = op.attrs.str("output_dtype")?.parse()?;
        if d != scale.dtype() {
            return Err(format!(
                "output_dtype {d} differs from the scale type {} (not supported)",
                scale.dtype()
            ));
        }
    }
    let (g, scales, zeros) = params(op, inputs, x.shape())?;
    let zeros = zeros.as_deref();
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
    Ok(vec![
        Tensor::U8(y),
        Tensor::scalar(scale),
        Tensor::scalar(zero as u8),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attr, Attrs};
    use half::f16;

    fn op(kind: OpKind, attrs: &[(&str, Attr)]) -> Op {
        Op::new(kind, Attrs::from_pairs(attrs))
    }

    fn t<T: crate::Element>(shape: &[usize], data: &[T]) -> Tensor {
        Tensor::from_vec(shape, data.to_vec()).unwrap()
    }

    fn run(op: &Op, inputs: &[Option<&Tensor>]) -> Vec<Tensor> {
        eval(op, inputs).unwrap()
    }

    const X: [f32; 12] = [
        -2.5, -0.5, 0.5, 1.5, 2.5, 300.0, -300.0, 0.49, 7.0, -7.5, 3.3, -1.0,
    ];

    #[test]
    fn quantize_per_tensor_rounds_half_to_even_and_saturates() {
        let x = t(&[3, 4], &X);
        let y = run(
            &op(OpKind::QuantizeLinear, &[]),
            &[
                Some(&x),
                Some(&Tensor::scalar(0.5f32)),
                Some(&Tensor::scalar(10u8)),
            ],
        );
        assert_eq!(
            y[0],
            t(&[3, 4], &[5u8, 9, 11, 13, 15, 255, 0, 11, 24, 0, 17, 8])
        );
        // No zero point: u8 with zero point 0.
        let y = run(
            &op(OpKind::QuantizeLinear, &[]),
            &[
                Some(&t(&[4], &[0.5f32, 1.5, 2.5, -1.0])),
                Some(&Tensor::scalar(1.0f32)),
            ],
        );
        assert_eq!(y[0], t(&[4], &[0u8, 2, 2, 0]));
    }

    #[test]
    fn quantize_per_axis_and_blocked_match_onnx_reference() {
        let x = t(&[3, 4], &X);
        let per_axis = op(OpKind::QuantizeLinear, &[("axis", Attr::Int(0))]);
        let y = run(
            &per_axis,
            &[
                Some(&x),
                Some(&t(&[3], &[0.5f32, 1.0, 2.0])),
                Some(&t(&[3], &[0i8, -3, 5])),
            ],
        );
        assert_eq!(
            y[0],
            t(&[3, 4], &[-5i8, -1, 1, 3, -1, 127, -128, -3, 9, 1, 7, 5])
        );
        // Blocks of 3 along axis 1 (4 columns: the last block is partial).
        let blocked = op(
            OpKind::QuantizeLinear,
            &[("axis", Attr::Int(1)), ("block_size", Attr::Int(3))],
        );
        let scale = t(&[3, 2], &[0.5f32, 2.0, 1.0, 4.0, 0.25, 3.0]);
        let zero = t(&[3, 2], &[1i8, -1, 0, 2, -5, 5]);
        let y = run(&blocked, &[Some(&x), Some(&scale), Some(&zero)]);
        assert_eq!(
            y[0],
            t(&[3, 4], &[-4i8, 0, 2, 0, 2, 127, -128, 2, 23, -35, 8, 5])
        );
        // Scale shapes that match no granularity are errors.
        assert!(eval(&per_axis, &[Some(&x), Some(&t(&[4], &[1.0f32; 4]))]).is_err());
        assert!(eval(&blocked, &[Some(&x), Some(&t(&[3, 1], &[1.0f32; 3]))]).is_err());
        assert!(eval(&blocked, &[Some(&x), Some(&t(&[3, 3], &[1.0f32; 9]))]).is_err());
        let negative = op(OpKind::QuantizeLinear, &[("block_size", Attr::Int(-1))]);
        assert!(eval(&negative, &[Some(&x), Some(&scale)]).is_err());
        assert!(eval(
            &per_axis,
            &[
                Some(&x),
                Some(&t(&[3], &[1.0f32; 3])),
                Some(&t(&[1], &[0u8]))
            ]
        )
        .is_err());
    }

    #[test]
    fn quantize_output_type_comes_from_zero_point_or_attribute() {
        let x = t(&[3, 4], &X);
        let scale = Tensor::scalar(0.5f32);
        let i8_out = op(
            OpKind::QuantizeLinear,
            &[("output_dtype", Attr::Str("i8".into()))],
        );
        let y = run(&i8_out, &[Some(&x), Some(&scale)]);
        assert_eq!(
            y[0],
            t(&[3, 4], &[-5i8, -1, 1, 3, 5, 127, -128, 1, 14, -15, 7, -2])
        );
        let y = run(
            &op(OpKind::QuantizeLinear, &[]),
            &[Some(&x), Some(&scale), Some(&Tensor::scalar(-7i32))],
        );
        assert_eq!(
            y[0],
            t(
                &[3, 4],
                &[-12i32, -8, -6, -4, -2, 593, -607, -6, 7, -22, 0, -9]
            )
        );
        assert!(
            eval(
                &i8_out,
                &[Some(&x), Some(&scale), Some(&Tensor::scalar(0u8))]
            )
            .is_err(),
            "conflicting types"
        );
        let i64_out = op(
            OpKind::QuantizeLinear,
            &[("output_dtype", Attr::Str("i64".into()))],
        );
        assert!(eval(&i64_out, &[Some(&x), Some(&scale)]).is_err());
        assert!(eval(
            &op(OpKind::QuantizeLinear, &[]),
            &[Some(&t(&[1], &[1i64])), Some(&scale)]
        )
        .is_err());
    }

    #[test]
    fn quantize_f16_divides_in_f16_and_saturates_infinities() {
        let x = t(&[4], &[0.1f32, 0.2, 1000.3, -3.7]).cast(DType::F16);
        let scale = Tensor::scalar(f16::from_f32(0.3));
        let y = run(
            &op(OpKind::QuantizeLinear, &[]),
            &[Some(&x), Some(&scale), Some(&Tensor::scalar(0i8))],
        );
        assert_eq!(y[0], t(&[4], &[0i8, 1, 127, -12]));
        let x = t(&[3], &[f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
        let y = run(
            &op(OpKind::QuantizeLinear, &[]),
            &[
                Some(&x),
                Some(&Tensor::scalar(1.0f32)),
                Some(&Tensor::scalar(3i8)),
            ],
        );
        assert_eq!(y[0], t(&[3], &[127i8, -128, 3]));
    }

    #[test]
    fn dequantize_matches_onnx_reference() {
        let per_axis = op(OpKind::DequantizeLinear, &[("axis", Attr::Int(0))]);
        let x = t(&[2, 3], &[0u8, 255, 128, 3, 7, 100]);
        let y = run(
            &per_axis,
            &[
                Some(&x),
                Some(&t(&[2], &[0.5f32, 0.25])),
                Some(&t(&[2], &[128u8, 3])),
            ],
        );
        assert_eq!(y[0], t(&[2, 3], &[-64.0f32, 63.5, 0.0, 0.0, 1.0, 24.25]));
        // i32 input, no zero point: computed in f32 like the reference.
        let x = t(&[4], &[-5i32, 0, 7, 123456789]);
        let y = run(
            &op(OpKind::DequantizeLinear, &[]),
            &[Some(&x), Some(&Tensor::scalar(0.1f32))],
        );
        assert_eq!(y[0], t(&[4], &[-0.5f32, 0.0, 0.7, 12345679.0]));
        // Blocked, with an f16 scale giving an f16 output.
        let blocked = op(
            OpKind::DequantizeLinear,
            &[("axis", Attr::Int(1)), ("block_size", Attr::Int(3))],
        );
        let x = t(&[1, 5], &[-128i8, 127, 0, 5, -6]);
        let scale = t(&[1, 2], &[0.5f32, 0.25]).cast(DType::F16);
        let y = run(
            &blocked,
            &[Some(&x), Some(&scale), Some(&t(&[1, 2], &[1i8, -2]))],
        );
        assert_eq!(
            y[0],
            t(&[1, 5], &[-64.5f32, 63.0, -0.5, 1.75, -1.0]).cast(DType::F16)
        );
    }

    #[test]
    fn dequantize_inverts_quantize_within_half_a_step() {
        let x = t(
            &[2, 3, 4],
            &(0..24)
                .map(|i| (i as f32 * 0.77).sin() * 2.5)
                .collect::<Vec<_>>(),
        );
        let scale = t(&[3], &[0.05f32, 0.02, 0.1]);
        let zero = t(&[3], &[-3i8, 0, 7]);
        let axis = [("axis", Attr::Int(1))];
        let q = run(
            &op(OpKind::QuantizeLinear, &axis),
            &[Some(&x), Some(&scale), Some(&zero)],
        );
        let y = run(
            &op(OpKind::DequantizeLinear, &axis),
            &[Some(&q[0]), Some(&scale), Some(&zero)],
        );
        let (xa, ya) = (x.to_f32_array(), y[0].to_f32_array());
        for ((idx, a), b) in xa.indexed_iter().zip(ya.iter()) {
            let step = [0.05f32, 0.02, 0.1][idx[1]];
            assert!((a - b).abs() <= step / 2.0 + 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn dequantize_rejects_bad_inputs() {
        let x = t(&[2], &[1u8, 2]);
        let scale = Tensor::scalar(0.5f32);
        let dq = op(OpKind::DequantizeLinear, &[]);
        assert!(
            eval(&dq, &[Some(&x), Some(&scale), Some(&Tensor::scalar(1i8))]).is_err(),
            "zero point type"
        );
        assert!(
            eval(&dq, &[Some(&t(&[2], &[1.0f32, 2.0])), Some(&scale)]).is_err(),
            "float x"
        );
        assert!(
            eval(&dq, &[Some(&x), Some(&Tensor::scalar(1i32))]).is_err(),
            "integer scale"
        );
        assert!(
            eval(&dq, &[Some(&x), Some(&t(&[3], &[1.0f32; 3]))]).is_err(),
            "axis 1 of a 1-D input"
        );
        let f16_out = op(
            OpKind::DequantizeLinear,
            &[("output_dtype", Attr::Str("f16".into()))],
        );
        assert!(eval(&f16_out, &[Some(&x), Some(&scale)]).is_err());
    }

    #[test]
    fn dynamic_quantize_matches_onnx_reference() {
        let dq = op(OpKind::DynamicQuantizeLinear, &[]);
        let cases: [(&[f32], &[u8], f32, u8); 4] = [
            (
                &[1.0, 2.5, -3.1, 0.4, 0.0, 10.2],
                &[78, 107, 0, 67, 59, 255],
                0.05215686,
                59,
            ),
            (&[-1.0, -2.0, -0.3], &[128, 0, 217], 0.007843138, 255),
            (&[0.0, 0.0, 0.0], &[0, 0, 0], 0.003921569, 0),
            (&[0.2, 5.1, 0.7], &[10, 255, 35], 0.02, 0),
        ];
        for (x, y, scale, zero) in cases {
            let out = run(&dq, &[Some(&t(&[x.len()], x))]);
            assert_eq!(out[0], t(&[y.len()], y));
            assert_eq!(out[1], Tensor::scalar(scale));
            assert_eq!(out[2], Tensor::scalar(zero));
        }
        // The backend test's 2-D input keeps its shape.
        let out = run(
            &dq,
            &[Some(&t(&[2, 3], &[1.0f32, 2.5, -3.1, 0.4, 0.0, 10.2]))],
        );
        assert_eq!(out[0].shape(), &[2, 3]);
        assert!(eval(&dq, &[Some(&t(&[1], &[1u8]))]).is_err());
    }
}

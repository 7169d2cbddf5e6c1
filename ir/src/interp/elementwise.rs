//! Elementwise ops: unary math, casts, and binary / ternary ops with ONNX (numpy) broadcasting.

use super::*;
use crate::tensor::Element;
use crate::Activation;
use ndarray::{IxDyn, Zip};

pub(super) fn eval(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Vec<Tensor>> {
    use OpKind::*;
    let x = input(inputs, 0)?;
    let out = match op.kind {
        Identity => x.clone(),
        Dropout => {
            return Ok(vec![
                x.clone(),
                Tensor::Bool(ArrayD::from_elem(IxDyn(x.shape()), true)),
            ])
        }
        Cast => x.cast(op.attrs.str("to")?.parse()?),
        Not => Tensor::Bool(bool_input(x)?.mapv(|v| !v)),
        IsNaN => Tensor::Bool(float_input(inputs, 0)?.mapv(f32::is_nan)),
        Neg | Abs | Relu if x.dtype().is_int() => {
            let f = match op.kind {
                Neg => |v: i64| v.wrapping_neg(),
                Abs => |v: i64| v.wrapping_abs(),
                _ => |v: i64| v.max(0),
            };
            Tensor::I64(x.to_i64_array().mapv(f)).cast(x.dtype())
        }
        Tanh | Sigmoid | Relu | Gelu => {
            let act = Activation::of_op(op)?.expect("an activation op");
            activation(act, x)?
        }
        Neg | Abs | Sqrt | Reciprocal | Exp | Log | Erf | Sin | Cos | Floor | Ceil | Round => {
            from_f32(x.dtype(), float_input(inputs, 0)?.mapv(unary_fn(op.kind)))
        }
        Where => where_op(inputs)?,
        Clip => clip(inputs)?,
        _ => binary(op, x, input(inputs, 1)?)?,
    };
    Ok(vec![out])
}

fn unary_fn(kind: OpKind) -> fn(f32) -> f32 {
    use OpKind::*;
    match kind {
        Neg => |v| -v,
        Abs => f32::abs,
        Sqrt => f32::sqrt,
        Reciprocal => |v| 1.0 / v,
        Exp => f32::exp,
        Log => f32::ln,
        Erf => libm::erff,
        Sin => f32::sin,
        Cos => f32::cos,
        Floor => f32::floor,
        Ceil => f32::ceil,
        Round => f32::round_ties_even,
        _ => unreachable!("only called for unary float ops"),
    }
}

/// `act` applied to each element of the float tensor `x` ([`Activation::apply`]), rounded
/// back to `x`'s dtype.
pub(super) fn activation(act: Activation, x: &Tensor) -> Res<Tensor> {
    let values = float_input(&[Some(x)], 0)?;
    Ok(from_f32(x.dtype(), values.mapv(|v| act.apply(v))))
}

fn bool_input(t: &Tensor) -> Res<&ArrayD<bool>> {
    bool::view(t).ok_or_else(|| format!("expected a bool tensor, got {}", t.dtype()))
}

/// The broadcast of concrete shapes, or an error naming them.
pub(super) fn broadcast_shape(shapes: &[&[usize]]) -> Res<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[rank - s.len() + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(format!("shapes {shapes:?} cannot be broadcast"));
            }
        }
    }
    Ok(out)
}

/// Applies `f` to two arrays broadcast together.
fn zip2<A: Clone, B: Clone, C>(
    a: &ArrayD<A>,
    b: &ArrayD<B>,
    f: impl Fn(A, B) -> C,
) -> Res<ArrayD<C>> {
    let shape = IxDyn(&broadcast_shape(&[a.shape(), b.shape()])?);
    let (av, bv) = (
        a.broadcast(shape.clone()).expect("checked"),
        b.broadcast(shape).expect("checked"),
    );
    Ok(Zip::from(&av)
        .and(&bv)
        .map_collect(|x, y| f(x.clone(), y.clone())))
}

fn binary(op: &Op, x: &Tensor, y: &Tensor) -> Res<Tensor> {
    use OpKind::*;
    if op.kind != Pow && x.dtype() != y.dtype() {
        return Err(format!(
            "inputs have different dtypes {} and {}",
            x.dtype(),
            y.dtype()
        ));
    }
    let dtype = x.dtype();
    match op.kind {
        And | Or | Xor => {
            let (a, b) = (bool_input(x)?, bool_input(y)?);
            let f: fn(bool, bool) -> bool = match op.kind {
                And => |p, q| p && q,
                Or => |p, q| p || q,
                _ => |p, q| p != q,
            };
            Ok(Tensor::Bool(zip2(a, b, f)?))
        }
        Equal | Less | Greater | LessOrEqual | GreaterOrEqual => {
            let f: fn(f64, f64) -> bool = match op.kind {
                Equal => |p, q| p == q,
                Less => |p, q| p < q,
                Greater => |p, q| p > q,
                LessOrEqual => |p, q| p <= q,
                _ => |p, q| p >= q,
            };
            if dtype == DType::I64 {
                // Compare i64 exactly (f64 loses precision past 2^53).
                let (a, b) = (x.to_i64_array(), y.to_i64_array());
                return Ok(Tensor::Bool(zip2(&a, &b, |p, q| {
                    compare_i64(op.kind, p, q)
                })?));
            }
            Ok(Tensor::Bool(zip2(&x.to_f64_array(), &y.to_f64_array(), f)?))
        }
        _ if dtype.is_float() => {
            let (a, b) = (x.to_f32_array(), y.to_f32_array());
            let fmod = op.attrs.get("fmod").is_some() && op.attrs.int("fmod")? != 0;
            let f: fn(f32, f32) -> f32 = match op.kind {
                Add => |p, q| p + q,
                Sub => |p, q| p - q,
                Mul => |p, q| p * q,
                Div => |p, q| p / q,
                Pow => f32::powf,
                Max => |p: f32, q: f32| {
                    if p.is_nan() || q.is_nan() {
                        f32::NAN
                    } else {
                        p.max(q)
                    }
                },
                Min => |p: f32, q: f32| {
                    if p.is_nan() || q.is_nan() {
                        f32::NAN
                    } else {
                        p.min(q)
                    }
                },
                Mod if fmod => |p: f32, q: f32| p % q,
                Mod => floor_mod,
                _ => return Err(format!("{} is not defined on {dtype}", op.kind)),
            };
            Ok(from_f32(dtype, zip2(&a, &b, f)?))
        }
        _ if dtype.is_int() => {
            let (a, b) = (x.to_i64_array(), y.to_i64_array());
            let fmod = op.attrs.get("fmod").is_some() && op.attrs.int("fmod")? != 0;
            let result = match op.kind {
                Add => zip2(&a, &b, i64::wrapping_add)?,
                Sub => zip2(&a, &b, i64::wrapping_sub)?,
                Mul => zip2(&a, &b, i64::wrapping_mul)?,
                Div => {
                    if b.iter().any(|&v| v == 0) {
                        return Err("integer division by zero".into());
                    }
                    zip2(&a, &b, i64::wrapping_div)?
                }
                Mod => {
                    if b.iter().any(|&v| v == 0) {
                        return Err("integer modulo by zero".into());
                    }
                    if fmod {
                        zip2(&a, &b, i64::wrapping_rem)?
                    } else {
                        zip2(&a, &b, |p, q| ((p % q) + q) % q)?
                    }
                }
                Pow => zip2(&a, &b, |p, q| {
                    if q < 0 {
                        0
                    } else {
                        p.wrapping_pow(q.min(u32::MAX as i64) as u32)
                    }
                })?,
                Max => zip2(&a, &b, i64::max)?,
                Min => zip2(&a, &b, i64::min)?,
                _ => return Err(format!("{} is not defined on {dtype}", op.kind)),
            };
            Ok(Tensor::I64(result).cast(dtype))
        }
        _ => Err(format!("{} is not defined on {dtype}", op.kind)),
    }
}

fn compare_i64(kind: OpKind, p: i64, q: i64) -> bool {
    match kind {
        OpKind::Equal => p == q,
        OpKind::Less => p < q,
        OpKind::Greater => p > q,
        OpKind::LessOrEqual => p <= q,
        _ => p >= q,
    }
}

fn where_op(inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let cond = bool_input(input(inputs, 0)?)?;
    let (x, y) = (input(inputs, 1)?, input(inputs, 2)?);
    if x.dtype() != y.dtype() {
        return Err(format!(
            "inputs have different dtypes {} and {}",
            x.dtype(),
            y.dtype()
        ));
    }
    crate::with_dtype!(x.dtype(), T => {
        let (a, b) = (T::view(x).expect("dtype checked"), T::view(y).expect("dtype checked"));
        let shape = IxDyn(&broadcast_shape(&[cond.shape(), a.shape(), b.shape()])?);
        let (c, a, b) = (cond.broadcast(shape.clone()).expect("checked"), a.broadcast(shape.clone()).expect("checked"), b.broadcast(shape).expect("checked"));
        Ok(T::wrap(Zip::from(&c).and(&a).and(&b).map_collect(|&c, &a, &b| if c { a } else { b })))
    })
}

/// Clamps to the optional scalar bounds in inputs 1 and 2 (compared in f64, exact for the
/// integer types kiln holds but i64 beyond 2^53).
fn clip(inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let x = input(inputs, 0)?;
    let bound = |i: usize| -> Res<Option<f64>> {
        match opt_input(inputs, i) {
            None => Ok(None),
            Some(t) if t.len() == 1 => Ok(t.to_f64_array().iter().next().copied()),
            Some(t) => Err(format!(
                "bound {i} must be a scalar, got shape {:?}",
                t.shape()
            )),
        }
    };
    let (lo, hi) = (bound(1)?, bound(2)?);
    if x.dtype() == DType::I64 {
        let (lo, hi) = (lo.map(|v| v as i64), hi.map(|v| v as i64));
        return Ok(Tensor::I64(x.to_i64_array().mapv(|v| {
            v.max(lo.unwrap_or(i64::MIN)).min(hi.unwrap_or(i64::MAX))
        })));
    }
    let clipped = x.to_f64_array().mapv(|v| {
        let v = lo.map_or(v, |l| if v < l { l } else { v });
        hi.map_or(v, |h| if v > h { h } else { v })
    });
    Ok(Tensor::from_f64_array(x.dtype(), clipped))
}

/// `Mod` with `fmod = 0` on floats (opset 28): `a - floor(a / b) * b`, the sign of `b`, with the
/// specification's special cases — a zero result takes `b`'s sign, an infinite `a` or a zero
/// `b` gives NaN, and an infinite `b` gives `a` when the signs agree, else `b`.
fn floor_mod(a: f32, b: f32) -> f32 {
    let r = a % b;
    if r == 0.0 {
        0f32.copysign(b)
    } else if (r < 0.0) != (b < 0.0) {
        r + b
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::floor_mod;

    #[test]
    fn float_mod_without_fmod_is_pythons_and_follows_the_special_cases() {
        let inf = f32::INFINITY;
        for (a, b, want) in [
            (5.5, 2.0, 1.5),
            (-5.5, 2.0, 0.5),
            (5.5, -2.0, -0.5),
            (-5.5, -2.0, -1.5),
            (3.0, inf, 3.0),
            (-3.0, inf, inf),
            (3.0, -inf, -inf),
        ] {
            assert_eq!(floor_mod(a, b), want, "{a} mod {b}");
        }
        // A zero result takes the divisor's sign.
        assert!(floor_mod(0.0, -3.0).is_sign_negative());
        assert!(floor_mod(-0.0, 3.0).is_sign_positive());
        assert!(floor_mod(4.0, -2.0).is_sign_negative());
        for (a, b) in [(inf, 2.0), (3.0, 0.0), (f32::NAN, 1.0), (1.0, f32::NAN)] {
            assert!(floor_mod(a, b).is_nan(), "{a} mod {b}");
        }
    }
}

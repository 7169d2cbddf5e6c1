//! kiln's fused ops, evaluated as the compositions of plain ops that define them, so a
//! rewrite into a fused op is checked against exactly the graph it replaced. Activations
//! (Silu, SwiGlu's gate, FusedMatMul's `activation`) are [`Activation::apply`], which the
//! plain Relu, Gelu, Sigmoid and Tanh ops compute too; Silu's plain form `x * Sigmoid(x)`
//! agrees except at `-inf`, where the product is NaN and Silu its limit, -0.

use super::*;
use crate::{Activation, Attr, Attrs};

pub(super) fn eval(op: &Op, inputs: &[Option<&Tensor>], symbols: &Bindings) -> Res<Vec<Tensor>> {
    let plain = |kind: OpKind, args: &[Option<&Tensor>]| -> Res<Tensor> {
        Ok(eval_op(&Op::plain(kind), args, symbols)?.remove(0))
    };
    let out = match op.kind {
        OpKind::FusedAttention => {
            let mut attrs = Attrs::default();
            for key in ["scale", "is_causal"] {
                if let Some(v) = op.attrs.get(key) {
                    attrs.set(key, v.clone());
                }
            }
            let args: Vec<Option<&Tensor>> = (0..4).map(|i| opt_input(inputs, i)).collect();
            eval_op(&Op::new(OpKind::Attention, attrs), &args, symbols)?.remove(0)
        }
        OpKind::Silu => elementwise::activation(Activation::Silu, input(inputs, 0)?)?,
        OpKind::SwiGlu => {
            let gate = elementwise::activation(Activation::Silu, input(inputs, 0)?)?;
            plain(OpKind::Mul, &[Some(&gate), Some(input(inputs, 1)?)])?
        }
        OpKind::FusedMatMul => {
            let mut y = plain(OpKind::MatMul, &inputs[..2])?;
            if let Some(bias) = opt_input(inputs, 2) {
                y = plain(OpKind::Add, &[Some(&y), Some(bias)])?;
            }
            let act = Activation::parse(op.attrs.str("activation")?)?;
            elementwise::activation(act, &y)?
        }
        OpKind::RopeRotateHalf => rope_rotate_half(inputs, symbols)?,
        _ => unreachable!("dispatched by eval_op"),
    };
    Ok(vec![out])
}

fn rope_rotate_half(inputs: &[Option<&Tensor>], symbols: &Bindings) -> Res<Tensor> {
    let x = input(inputs, 0)?;
    let d = *x.shape().last().ok_or("x must have rank at least 1")?;
    if d % 2 != 0 {
        return Err(format!("the last dim ({d}) must be even"));
    }
    let run = |kind: OpKind, attrs: Attrs, args: &[Option<&Tensor>]| -> Res<Vec<Tensor>> {
        eval_op(&Op::new(kind, attrs), args, symbols)
    };
    let mut split = Attrs::default();
    split.set("axis", Attr::Int(-1));
    split.set("split", Attr::Ints(vec![d as i64 / 2, d as i64 / 2]));
    let halves = run(OpKind::Split, split, &[Some(x)])?;
    let neg = run(OpKind::Neg, Attrs::default(), &[Some(&halves[1])])?.remove(0);
    let mut cat = Attrs::default();
    cat.set("axis", Attr::Int(-1));
    let rotated = run(OpKind::Concat, cat, &[Some(&neg), Some(&halves[0])])?.remove(0);
    let a = run(
        OpKind::Mul,
        Attrs::default(),
        &[Some(x), Some(input(inputs, 1)?)],
    )?
    .remove(0);
    let b = run(
        OpKind::Mul,
        Attrs::default(),
        &[Some(&rotated), Some(input(inputs, 2)?)],
    )?
    .remove(0);
    Ok(run(OpKind::Add, Attrs::default(), &[Some(&a), Some(&b)])?.remove(0))
}

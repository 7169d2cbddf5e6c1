//! Kernel templates: functions that build KIR for an op or a fused group of ops.
//!
//! This first template fuses a tree of same-shape elementwise ops into one loop (inputs are
//! read once, intermediates live in registers). Broadcasting, vector widths, GEMM, row
//! reductions and attention come as further templates.

use crate::kir::{Binary, Index, Kernel, Stmt, Unary, Value};
use kiln_ir::OpKind;

/// An elementwise expression over a kernel's inputs, in IR op terms.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Input buffer `i`.
    Input(usize),
    /// A constant.
    Const(f32),
    /// An IR op applied to sub-expressions.
    Op(OpKind, Vec<Expr>),
}

/// A kernel computing `expr` elementwise over `inputs` f32 buffers of equal length into an
/// output buffer (the last buffer); size parameter 0 is the element count. With `lanes` 4 the
/// main loop runs on f32x4 vectors and a scalar loop finishes the last `n % 4` elements.
/// Errors name the op that has no elementwise lowering yet.
pub fn elementwise(name: &str, expr: &Expr, inputs: usize, lanes: u8) -> Result<Kernel, String> {
    if !matches!(lanes, 1 | 4) {
        return Err(format!("vector width {lanes} is not supported (1 or 4)"));
    }
    let n = Index::Size(0);
    let width = Index::Const(lanes as i64);
    // Whole vectors: chunks 0..n/lanes, element index chunk*lanes.
    let chunks = n.clone() / width.clone();
    let first = Index::Loop(0) * width.clone();
    let mut body = vec![Stmt::Loop {
        start: Index::Const(0),
        end: chunks.clone(),
        body: vec![Stmt::Store {
            buffer: inputs,
            index: first.clone(),
            value: lower(expr, inputs, &first)?,
            lanes,
        }],
    }];
    if lanes > 1 {
        body.push(Stmt::Loop {
            start: chunks * width,
            end: n,
            body: vec![Stmt::Store {
                buffer: inputs,
                index: Index::Loop(0),
                value: lower(expr, inputs, &Index::Loop(0))?,
                lanes: 1,
            }],
        });
    }
    Ok(Kernel {
        name: name.to_string(),
        buffers: inputs + 1,
        sizes: 1,
        vars: vec![],
        body,
    })
}

/// The KIR value of `expr` with every input read at `at`.
fn lower(expr: &Expr, inputs: usize, at: &Index) -> Result<Value, String> {
    Ok(match expr {
        Expr::Input(i) if *i < inputs => Value::Load(*i, at.clone()),
        Expr::Input(i) => return Err(format!("input {i} does not exist ({inputs} inputs)")),
        Expr::Const(c) => Value::Const(*c),
        Expr::Op(kind, args) => {
            let args = args
                .iter()
                .map(|a| lower(a, inputs, at))
                .collect::<Result<Vec<_>, _>>()?;
            let unary = |op| -> Result<Value, String> {
                match args.as_slice() {
                    [x] => Ok(Value::Unary(op, Box::new(x.clone()))),
                    _ => Err(format!("{kind} takes one input")),
                }
            };
            let binary = |op| -> Result<Value, String> {
                match args.as_slice() {
                    [x, y] => Ok(Value::Binary(op, Box::new(x.clone()), Box::new(y.clone()))),
                    _ => Err(format!("{kind} takes two inputs")),
                }
            };
            match kind {
                OpKind::Neg => unary(Unary::Neg)?,
                OpKind::Abs => unary(Unary::Abs)?,
                OpKind::Sqrt => unary(Unary::Sqrt)?,
                OpKind::Add => binary(Binary::Add)?,
                OpKind::Sub => binary(Binary::Sub)?,
                OpKind::Mul => binary(Binary::Mul)?,
                OpKind::Div => binary(Binary::Div)?,
                OpKind::Max => binary(Binary::Max)?,
                OpKind::Min => binary(Binary::Min)?,
                other => return Err(format!("{other} has no elementwise kernel yet")),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cranelift::compile;
    use kiln_ir::interp::eval_op;
    use kiln_ir::{Op, Tensor};

    /// The expression on the reference interpreter, op by op.
    fn interpret(expr: &Expr, inputs: &[Tensor]) -> Tensor {
        match expr {
            Expr::Input(i) => inputs[*i].clone(),
            Expr::Const(c) => Tensor::scalar(*c),
            Expr::Op(kind, args) => {
                let args: Vec<Tensor> = args.iter().map(|a| interpret(a, inputs)).collect();
                let refs: Vec<Option<&Tensor>> = args.iter().map(Some).collect();
                eval_op(&Op::plain(*kind), &refs, &Default::default())
                    .unwrap()
                    .remove(0)
            }
        }
    }

    fn op(kind: OpKind, args: Vec<Expr>) -> Expr {
        Expr::Op(kind, args)
    }

    #[test]
    fn fused_elementwise_chain_matches_the_interpreter() {
        use Expr::Input;
        // (a*b + c) / max(a, |c|) - sqrt(|b|) + min(-a, 0.5)
        let expr = op(
            OpKind::Add,
            vec![
                op(
                    OpKind::Sub,
                    vec![
                        op(
                            OpKind::Div,
                            vec![
                                op(
                                    OpKind::Add,
                                    vec![op(OpKind::Mul, vec![Input(0), Input(1)]), Input(2)],
                                ),
                                op(OpKind::Max, vec![Input(0), op(OpKind::Abs, vec![Input(2)])]),
                            ],
                        ),
                        op(OpKind::Sqrt, vec![op(OpKind::Abs, vec![Input(1)])]),
                    ],
                ),
                op(
                    OpKind::Min,
                    vec![op(OpKind::Neg, vec![Input(0)]), Expr::Const(0.5)],
                ),
            ],
        );
        for lanes in [1, 4] {
            let kernel = compile(&elementwise("chain", &expr, 3, lanes).unwrap()).unwrap();
            for n in [0usize, 1, 3, 4, 5, 7, 1000, 1001] {
                let data: Vec<Vec<f32>> = (0..3)
                    .map(|k| {
                        (0..n)
                            .map(|i| ((i * 7 + k * 13) % 23) as f32 / 7.0 - 1.3)
                            .collect()
                    })
                    .collect();
                let inputs: Vec<Tensor> = data
                    .iter()
                    .map(|d| Tensor::from_vec(&[n], d.clone()).unwrap())
                    .collect();
                let want = interpret(&expr, &inputs).to_f32_array();
                let mut out = vec![0f32; n];
                let mut bufs = data.clone();
                let mut ptrs: Vec<*mut u8> =
                    bufs.iter_mut().map(|b| b.as_mut_ptr().cast()).collect();
                ptrs.push(out.as_mut_ptr().cast());
                // SAFETY: every buffer holds `n` elements, the kernel touches indices 0..n.
                unsafe { kernel.call(&ptrs, &[n as i64]) };
                for (g, w) in out.iter().zip(want.iter()) {
                    assert!(
                        (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                        "lanes={lanes} n={n}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn ops_without_a_kernel_are_reported() {
        let e = elementwise("k", &op(OpKind::Erf, vec![Expr::Input(0)]), 1, 4).unwrap_err();
        assert!(e.contains("Erf"), "{e}");
        assert!(elementwise("k", &Expr::Input(2), 1, 1).is_err());
        assert!(elementwise("k", &Expr::Input(0), 1, 8).is_err());
    }
}

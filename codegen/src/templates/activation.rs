//! The kernel IR of an [`Activation`], shared by the GEMM epilogue and the elementwise
//! template: [`Value`] implements [`Arithmetic`], so a kernel evaluates the formula the
//! interpreter does ([`Activation::formula`], zero tails included), with the intrinsics'
//! approximations of erf, tanh and sigmoid. ReLU is the select `x < 0 ? 0 : x`, which keeps
//! NaN and -0.0 on every backend (an ordered compare, false for NaN), where `Binary::Max`
//! would turn -0.0 into +0.0.

use crate::kir::{Compare, Unary, Value};
use kiln_ir::activation::Arithmetic;
use kiln_ir::Activation;

/// KIR values, the transcendental functions being [`Unary`]'s approximations.
impl Arithmetic for Value {
    fn constant(c: f32) -> Value {
        Value::Const(c)
    }
    fn erf(self) -> Value {
        self.unary(Unary::Erf)
    }
    fn tanh(self) -> Value {
        self.unary(Unary::Tanh)
    }
    fn sigmoid(self) -> Value {
        self.unary(Unary::Sigmoid)
    }
    fn select_below(self, bound: f32, then: Value, otherwise: Value) -> Value {
        Value::select(Compare::Lt, self, Value::Const(bound), then, otherwise)
    }
}

/// `act(x)` in KIR. `x` is repeated in the result, so it should be a variable, a load or a
/// constant rather than an expression to compute.
pub(crate) fn activation(act: Activation, x: Value) -> Value {
    act.formula(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::elementwise::{elementwise, Expr};
    use crate::templates::gemm::{matmul, ConstantB, Epilogue, MatMulSpec};
    use crate::templates::Built;
    use crate::{Backend, Schedule};
    use kiln_ir::interp::{eval_op, Bindings};
    use kiln_ir::{Attr, Attrs, Dim, Op, OpKind, Tensor};

    /// The special values, and finite ones around the zero tails and the clamps of `e^x`.
    const INPUTS: [f32; 18] = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        1e-30,
        3.0,
        -3.0,
        1e4,
        -1e4,
        -12.0,
        -20.0,
        88.5,
        -88.5,
        -105.0,
        -1e30,
        f32::MAX,
        f32::MIN,
    ];

    /// Compiles `built` with `backend` and runs it on f32 `inputs`, giving `len` outputs.
    fn run(backend: &Backend, built: &Built, inputs: &[Vec<f32>], len: usize) -> Vec<f32> {
        let kernel = backend
            .compile_all(std::slice::from_ref(&built.kernel))
            .expect("compiles")
            .remove(0);
        let mut inputs = inputs.to_vec();
        let input_ptrs: Vec<*mut u8> = inputs.iter_mut().map(|v| v.as_mut_ptr().cast()).collect();
        let mut out = vec![f32::NAN; len];
        let outputs = [out.as_mut_ptr().cast()];
        // SAFETY: the buffers have the shapes the kernel was built for.
        unsafe { built.call(&kernel, &input_ptrs, &outputs, &Bindings::default(), 1) }
            .expect("sizes bound");
        out
    }

    fn eval(op: &Op, inputs: &[&Tensor]) -> Vec<f32> {
        let args: Vec<Option<&Tensor>> = inputs.iter().copied().map(Some).collect();
        let out = eval_op(op, &args, &Bindings::default()).unwrap().remove(0);
        out.to_f32_array().iter().copied().collect()
    }

    /// Whether `got` agrees with `want` = `act(x)`: NaN with any NaN; bit for bit for None
    /// and ReLU (no approximation) and at non-finite `x` (the limits are selected or exact);
    /// otherwise within 1e-6 relative to max(1, |want|), the intrinsics' absolute errors
    /// (≤ 5e-7) scaled by the formulas.
    fn agrees(act: Activation, x: f32, got: f32, want: f32) -> bool {
        if got.is_nan() || want.is_nan() {
            return got.is_nan() && want.is_nan();
        }
        if matches!(act, Activation::None | Activation::Relu) || !x.is_finite() {
            return got.to_bits() == want.to_bits();
        }
        (got - want).abs() <= 1e-6 * want.abs().max(1.0)
    }

    /// For every activation and input: the interpreter's op and FusedMatMul equal
    /// [`Activation::apply`] bit for bit, and the elementwise kernel and the GEMM epilogue
    /// agree with it on every backend. The GEMM computes `x * 1` from a zeroed accumulator,
    /// so its epilogue (and FusedMatMul's) sees `x + 0`: `-0.0` arrives as `+0.0`.
    #[test]
    fn every_path_computes_the_reference_at_special_values() {
        let xs = INPUTS.to_vec();
        let n = xs.len();
        // The elementwise kernel's input: every value in vector lanes and in the scalar tail.
        let tiled: Vec<f32> = xs.iter().copied().cycle().take(3 * n + 2).collect();
        let x = Tensor::from_vec(&[n], xs.clone()).unwrap();
        let column = Tensor::from_vec(&[n, 1], xs.clone()).unwrap();
        for act in Activation::ALL {
            let want: Vec<f32> = xs.iter().map(|&x| act.apply(x)).collect();
            let want_gemm: Vec<f32> = xs.iter().map(|&x| act.apply(x + 0.0)).collect();
            let bits = |v: &[f32]| -> Vec<Option<u32>> {
                v.iter()
                    .map(|x| (!x.is_nan()).then(|| x.to_bits()))
                    .collect()
            };
            assert_eq!(
                bits(&eval(&act.op(), &[&x])),
                bits(&want),
                "{act:?}: the op"
            );
            let attrs = Attrs::from_pairs(&[("activation", Attr::Str(act.name().into()))]);
            let fused = Op::new(OpKind::FusedMatMul, attrs);
            let one = Tensor::from_vec(&[1, 1], vec![1f32]).unwrap();
            assert_eq!(
                bits(&eval(&fused, &[&column, &one])),
                bits(&want_gemm),
                "{act:?}: FusedMatMul"
            );

            let expr = Expr::Op(act.op(), vec![Expr::Input(0)]);
            let shape = vec![Dim::from(tiled.len())];
            let shapes = std::slice::from_ref(&shape);
            let built = elementwise("act", &expr, shapes, &shape, &Schedule::default()).unwrap();
            // Every backend of this build: Cranelift, and LLVM when it is built.
            for backend in crate::backends() {
                let got = run(&backend, &built, std::slice::from_ref(&tiled), tiled.len());
                for (i, &g) in got.iter().enumerate() {
                    let (x, w) = (xs[i % n], want[i % n]);
                    assert!(
                        agrees(act, x, g, w),
                        "{act:?} elementwise on {}: f({x}) = {g}, want {w}",
                        backend.name()
                    );
                }

                // Y = A B with A the inputs as a column and B a row of ones: every column of
                // Y is the inputs, in vector panels and in single columns.
                let cols = 2 * usize::from(backend.lanes()) + 3;
                let spec = MatMulSpec {
                    a: vec![Dim::from(n), Dim::known(1)],
                    b: vec![Dim::known(1), Dim::from(cols)],
                    b_constant: Some(ConstantB::f32(&vec![1.0; cols])),
                    epilogue: Epilogue {
                        activation: act,
                        ..Epilogue::default()
                    },
                };
                let schedule = Schedule::default().with("lanes", backend.lanes().into());
                let built = matmul(&spec, &schedule).unwrap();
                let got = run(&backend, &built, &[xs.clone(), vec![]], n * cols);
                for (i, &g) in got.iter().enumerate() {
                    let (x, w) = (xs[i / cols] + 0.0, want_gemm[i / cols]);
                    assert!(
                        agrees(act, x, g, w),
                        "{act:?} GEMM epilogue on {}: f({x}) = {g}, want {w}",
                        backend.name()
                    );
                }
            }
        }
    }
}

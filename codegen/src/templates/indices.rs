//! Templates that write integer sequences rather than move data: `SymbolicDims` (the values of
//! a shape's dims, which the runtime binds from the inputs) and integer `Range` (position ids,
//! the aranges masks are built from). Both write i64 (or i32) elements one at a time.

use super::elementwise::{finish, wrap_to};
use super::{Arg, Built, Sizes};
use crate::kir::{Index, Int, Stmt};
use kiln_ir::{DType, Dim};

/// A kernel writing the values of `dims` (polynomials of the model's symbols, or constants
/// such as a reshape's `-1`) as i64 elements: ONNX `Shape` of a symbolic shape, as the IR's
/// `SymbolicDims` keeps it. One call writes them all.
///
/// Buffers: the output (i64, `dims.len()` elements, or one for a scalar).
///
/// ```
/// use kiln_codegen::templates::indices::symbolic_dims;
/// use kiln_ir::Dim;
/// let built = symbolic_dims("dims", &[Dim::sym("batch"), Dim::known(-1), Dim::known(64)]);
/// assert_eq!(built.sizes, vec![Dim::sym("batch")]);
/// ```
pub fn symbolic_dims(name: &str, dims: &[Dim]) -> Built {
    let mut sizes = Sizes::default();
    let stores = dims
        .iter()
        .enumerate()
        .map(|(k, d)| Stmt::store_int(Int::I64, 0, Index::Const(k as i64), sizes.index(d)))
        .collect();
    // One parallel iteration writes every element.
    let body = vec![Stmt::for_range(Index::Size(0), Index::Size(1), stores)];
    finish(
        name,
        vec![Arg::Output(0)],
        vec![],
        body,
        sizes,
        Dim::known(1),
    )
}

/// A kernel for integer `Range`: `out[i] = start + i * delta` for `i` in `0..len` (`len` is
/// the output's inferred length), wrapping as the interpreter's cast to `dtype` does. `start`
/// and `delta` are read from their one-element buffers; the limit only sets the length.
///
/// Buffers: start (group input 0), delta (group input 2), the output (`dtype`, i64 or i32).
pub fn range(name: &str, len: &Dim, dtype: DType) -> Result<Built, String> {
    let int = match dtype {
        DType::I64 => Int::I64,
        DType::I32 => Int::I32,
        other => return Err(format!("a Range of {other} (integer ranges only)")),
    };
    let i = Index::Loop(0);
    let start = Index::load_as(int, 0, Index::Const(0));
    let delta = Index::load_as(int, 1, Index::Const(0));
    let value = wrap_to(int, start + i.clone() * delta);
    let store = Stmt::store_int(int, 2, i, value);
    let body = vec![Stmt::for_range(Index::Size(0), Index::Size(1), vec![store])];
    let args = vec![Arg::Input(0), Arg::Input(2), Arg::Output(0)];
    Ok(finish(
        name,
        args,
        vec![],
        body,
        Sizes::default(),
        len.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::elementwise::tests::reference;
    use crate::templates::testing::run_on_every_backend;
    use kiln_ir::interp::Bindings;
    use kiln_ir::{Attr, Attrs, Op, OpKind, Tensor};

    #[test]
    fn symbolic_dims_are_the_bound_values() {
        let dims = [
            Dim::sym("b"),
            Dim::known(-1),
            &Dim::sym("s") * &Dim::known(3),
        ];
        let built = symbolic_dims("d", &dims);
        let b = Bindings::from([("b".to_string(), 2), ("s".to_string(), 7)]);
        let blank = Tensor::zeros(DType::I64, &[3]);
        let got = run_on_every_backend(&built, &[], vec![blank], &b, 1);
        let op = Op::new(
            OpKind::SymbolicDims,
            Attrs::from_pairs(&[("dims", Attr::Dims(dims.to_vec()))]),
        );
        let want = kiln_ir::interp::eval_op(&op, &[], &b).unwrap().remove(0);
        assert_eq!(got[0], want);
        assert_eq!(got[0].to_i64_vec(), vec![2, -1, 21]);
    }

    #[test]
    fn ranges_match_the_interpreter() {
        let cases: [(i64, i64, i64, DType); 6] = [
            (0, 17, 1, DType::I64),
            (5, -4, -3, DType::I64),
            (-2, 40, 7, DType::I32),
            (i64::MAX - 5, i64::MAX, 2, DType::I64),
            (2147483640, 2147483647 + 20, 4, DType::I64),
            (0, 0, 1, DType::I64),
        ];
        for (start, limit, delta, dtype) in cases {
            let scalar = |v: i64| Tensor::scalar(v).cast(dtype);
            let inputs = [scalar(start), scalar(limit), scalar(delta)];
            let want = reference(
                &Op::plain(OpKind::Range),
                &inputs.iter().collect::<Vec<_>>(),
                0,
            );
            let len = Dim::known(want.len() as i64);
            let built = range("r", &len, dtype).unwrap();
            for chunks in [1, 3] {
                let blank = Tensor::zeros(dtype, want.shape());
                let got =
                    run_on_every_backend(&built, &inputs, vec![blank], &Bindings::new(), chunks);
                assert_eq!(got[0], want, "range({start}, {limit}, {delta}) of {dtype}");
            }
        }
        assert!(range("r", &Dim::known(3), DType::F32).is_err());
    }
}

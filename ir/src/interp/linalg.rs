//! Linear algebra: `MatMul`, `Gemm`, `Einsum` and `MatMulInteger`.
//!
//! Every product is a GEMM on 2-D views, one per batch matrix ([`batched_matmul`]): for floats
//! ndarray's `general_mat_mul`, backed by the matrixmultiply crate, so strided, transposed and
//! broadcast operands are multiplied in place.
//! Float inputs of every width are multiplied in f32 and rounded back to their dtype. Integer
//! `MatMul`, `Gemm` and `Einsum` are exact: they are computed in i64 with wrapping arithmetic and
//! wrapped to the input dtype, which is what numpy (the ONNX reference) gives. `MatMulInteger`
//! uses an f64 GEMM, which is exact for 8-bit operands (every partial sum stays far below 2^53).
//!
//! `Einsum` handles any number of operands, repeated labels within an operand (diagonals),
//! ellipses, size-1 broadcasting of labels and implicit outputs: diagonals are taken first, then
//! the operands are contracted left to right, each pairwise contraction being a batched matmul
//! (so `bhqd,bhkd->bhqk`, `bij,bjk->bik` or `ij,jk` are single GEMMs per batch matrix).

use super::*;
use crate::infer::{broadcast_shapes, matmul_shape, parse_einsum};
use crate::{Dim, Element};
use ndarray::linalg::general_mat_mul;
use ndarray::{
    Array2, Array3, ArrayView2, ArrayViewD, ArrayViewMut2, Axis, Dimension, Ix2, IxDyn, Zip,
};
use std::collections::{BTreeMap, BTreeSet};

/// Evaluates `MatMul`, `Gemm`, `Einsum` or `MatMulInteger`.
pub(super) fn eval(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Vec<Tensor>> {
    let out = match op.kind {
        OpKind::MatMul => matmul(inputs)?,
        OpKind::Gemm => gemm(op, inputs)?,
        OpKind::Einsum => einsum(op.attrs.str("equation")?, inputs)?,
        OpKind::MatMulInteger => matmul_integer(inputs)?,
        other => return Err(format!("{other} is not a linear-algebra op")),
    };
    Ok(vec![out])
}

/// An element type products are accumulated in: f32 (floats), f64 (`MatMulInteger`) or i64
/// (exact integers, wrapping on overflow like numpy).
trait Scalar: Copy + PartialEq + 'static {
    const ZERO: Self;
    /// `self + other`.
    fn add(self, other: Self) -> Self;
    /// `c = a · b` for matrices of matching shapes.
    fn gemm(a: ArrayView2<Self>, b: ArrayView2<Self>, c: ArrayViewMut2<Self>);
}

impl Scalar for f32 {
    const ZERO: f32 = 0.0;
    fn add(self, other: f32) -> f32 {
        self + other
    }
    fn gemm(a: ArrayView2<f32>, b: ArrayView2<f32>, mut c: ArrayViewMut2<f32>) {
        general_mat_mul(1.0, &a, &b, 0.0, &mut c);
    }
}

impl Scalar for f64 {
    const ZERO: f64 = 0.0;
    fn add(self, other: f64) -> f64 {
        self + other
    }
    fn gemm(a: ArrayView2<f64>, b: ArrayView2<f64>, mut c: ArrayViewMut2<f64>) {
        general_mat_mul(1.0, &a, &b, 0.0, &mut c);
    }
}

impl Scalar for i64 {
    const ZERO: i64 = 0;
    fn add(self, other: i64) -> i64 {
        self.wrapping_add(other)
    }
    fn gemm(a: ArrayView2<i64>, b: ArrayView2<i64>, mut c: ArrayViewMut2<i64>) {
        c.fill(0);
        for (a_row, mut c_row) in a.rows().into_iter().zip(c.rows_mut()) {
            for (&x, b_row) in a_row.iter().zip(b.rows()) {
                Zip::from(&mut c_row)
                    .and(&b_row)
                    .for_each(|c, &y| *c = c.wrapping_add(x.wrapping_mul(y)));
            }
        }
    }
}

/// Multiplies stacks of matrices: `a` is `[batch.., m, k]` and `b` is `[batch.., k, n]` with the
/// same batch dims (either may be a broadcast view); the result is `[batch.., m, n]`.
/// The caller has checked the shapes.
fn batched_matmul<T: Scalar>(a: ArrayViewD<T>, b: ArrayViewD<T>) -> ArrayD<T> {
    let r = a.ndim();
    debug_assert!(r >= 2 && b.ndim() == r && a.shape()[..r - 2] == b.shape()[..r - 2]);
    let batch = &a.shape()[..r - 2];
    let (m, n) = (a.shape()[r - 2], b.shape()[r - 1]);
    let count: usize = batch.iter().product();
    let mut out = Array3::from_elem((count, m, n), T::ZERO);
    for (idx, c) in ndarray::indices(batch)
        .into_iter()
        .zip(out.outer_iter_mut())
    {
        T::gemm(matrix_at(&a, idx.slice()), matrix_at(&b, idx.slice()), c);
    }
    let mut shape = batch.to_vec();
    shape.extend([m, n]);
    out.into_shape_with_order(IxDyn(&shape))
        .expect("element count is unchanged")
}

/// The matrix at batch index `idx` of a `[batch.., rows, cols]` view.
fn matrix_at<'a, T>(v: &ArrayViewD<'a, T>, idx: &[usize]) -> ArrayView2<'a, T> {
    let mut m = v.clone();
    for &i in idx {
        m = m.index_axis_move(Axis(0), i);
    }
    m.into_dimensionality::<Ix2>()
        .expect("two axes are left after the batch axes")
}

/// Concrete dims as symbolic ones, to reuse the shape rules of `crate::infer`.
fn to_dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::known(d as i64)).collect()
}

/// Symbolic dims that must all be known (as they are when computed from concrete ones).
fn to_usize(shape: &[Dim]) -> Res<Vec<usize>> {
    shape
        .iter()
        .map(|d| {
            d.as_known()
                .map(|v| v as usize)
                .ok_or_else(|| format!("dim {d} is not concrete"))
        })
        .collect()
}

/// The numpy broadcast of concrete shapes (an error if they are incompatible).
fn broadcast(shapes: &[&[usize]]) -> Res<Vec<usize>> {
    let dims: Vec<Vec<Dim>> = shapes.iter().map(|s| to_dims(s)).collect();
    to_usize(&broadcast_shapes(&dims.iter().collect::<Vec<_>>())?)
}

/// numpy `matmul`: 1-D operands are promoted to a row (left) or column (right) vector and the
/// added dim removed from the result; batch dims broadcast.
fn matmul_arrays<T: Scalar>(a: &ArrayD<T>, b: &ArrayD<T>) -> Res<ArrayD<T>> {
    let out_shape = to_usize(&matmul_shape(&to_dims(a.shape()), &to_dims(b.shape()))?)?;
    let a2 = if a.ndim() == 1 {
        a.view().insert_axis(Axis(0))
    } else {
        a.view()
    };
    let b2 = if b.ndim() == 1 {
        b.view().insert_axis(Axis(1))
    } else {
        b.view()
    };
    let (ra, rb) = (a2.ndim(), b2.ndim());
    let batch = broadcast(&[&a2.shape()[..ra - 2], &b2.shape()[..rb - 2]])?;
    let full = |v: &ArrayViewD<'_, T>| -> Vec<usize> {
        batch
            .iter()
            .chain(&v.shape()[v.ndim() - 2..])
            .copied()
            .collect()
    };
    let no_fit =
        |v: &ArrayViewD<'_, T>| format!("cannot broadcast {:?} to batch {batch:?}", v.shape());
    let a3 = a2.broadcast(full(&a2)).ok_or_else(|| no_fit(&a2))?;
    let b3 = b2.broadcast(full(&b2)).ok_or_else(|| no_fit(&b2))?;
    let product = batched_matmul(a3, b3);
    Ok(product
        .into_shape_with_order(IxDyn(&out_shape))
        .expect("matmul_shape drops only size-1 dims"))
}

/// The common dtype of inputs `0..n`, or an error naming the first that differs.
fn same_dtype(inputs: &[Option<&Tensor>], n: usize) -> Res<DType> {
    let first = input(inputs, 0)?.dtype();
    for i in 1..n {
        let d = input(inputs, i)?.dtype();
        if d != first {
            return Err(format!("input {i} is {d} but input 0 is {first}"));
        }
    }
    Ok(first)
}

/// Input `i` as exact i64 values.
fn int_input(inputs: &[Option<&Tensor>], i: usize) -> Res<ArrayD<i64>> {
    Ok(input(inputs, i)?.to_i64_array())
}

/// `MatMul`: floats in f32, integers exactly (wrapping to the dtype like numpy).
fn matmul(inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let dtype = same_dtype(inputs, 2)?;
    if dtype.is_float() {
        let y = matmul_arrays(&float_input(inputs, 0)?, &float_input(inputs, 1)?)?;
        Ok(from_f32(dtype, y))
    } else if dtype.is_int() {
        let y = matmul_arrays(&int_input(inputs, 0)?, &int_input(inputs, 1)?)?;
        Ok(Tensor::I64(y).cast(dtype))
    } else {
        Err(format!("MatMul does not support {dtype}"))
    }
}

/// `Gemm`: `alpha * op(A) · op(B) + beta * C` with A and B 2-D and C (optional, ignored when
/// `beta` is 0) unidirectionally broadcast to `[M, N]`.
fn gemm(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let a = &op.attrs;
    let (alpha, beta) = (a.float("alpha")?, a.float("beta")?);
    let (trans_a, trans_b) = (a.int("transA")? != 0, a.int("transB")? != 0);
    let dtype = same_dtype(inputs, 2)?;
    let c = opt_input(inputs, 2).filter(|_| beta != 0.0);
    if let Some(c) = c {
        if c.dtype() != dtype {
            return Err(format!("input 2 is {} but input 0 is {dtype}", c.dtype()));
        }
    }
    // Validate the shapes and find [M, N] before converting anything.
    let (sa, sb) = (input(inputs, 0)?.shape(), input(inputs, 1)?.shape());
    if sa.len() != 2 || sb.len() != 2 {
        return Err(format!("Gemm inputs must be 2-D, got {sa:?} and {sb:?}"));
    }
    let (m, k1) = if trans_a {
        (sa[1], sa[0])
    } else {
        (sa[0], sa[1])
    };
    let (k2, n) = if trans_b {
        (sb[1], sb[0])
    } else {
        (sb[0], sb[1])
    };
    if k1 != k2 {
        return Err(format!("Gemm inner dimensions differ: {k1} and {k2}"));
    }
    if let Some(c) = c {
        if c.shape().len() > 2 || broadcast(&[c.shape(), &[m, n]])? != [m, n] {
            return Err(format!(
                "C of shape {:?} cannot be broadcast to [{m}, {n}]",
                c.shape()
            ));
        }
    }
    if dtype.is_float() {
        let x = op_matrix(float_input(inputs, 0)?, trans_a);
        let mut y = matrix_product(x.view(), op_matrix(float_input(inputs, 1)?, trans_b).view());
        y *= alpha;
        if let Some(c) = c {
            y.scaled_add(beta, &c.to_f32_array());
        }
        Ok(from_f32(dtype, y.into_dyn()))
    } else if dtype.is_int() {
        let x = op_matrix(int_input(inputs, 0)?, trans_a);
        let ab = matrix_product(x.view(), op_matrix(int_input(inputs, 1)?, trans_b).view());
        let c = match c {
            Some(c) => c
                .to_i64_array()
                .broadcast((m, n))
                .expect("checked above")
                .to_owned(),
            None => Array2::zeros((m, n)),
        };
        // numpy computes `dot(A, B) * alpha + C * beta` in f64 and truncates back to the dtype;
        // with alpha = 1 and beta = 1 (or no C) that is the exact integer sum.
        let exact = alpha == 1.0 && (beta == 1.0 || beta == 0.0);
        let y = Zip::from(&ab).and(&c).map_collect(|&p, &c| {
            if exact {
                p.wrapping_add(c)
            } else {
                i64::from_f64(p as f64 * alpha as f64 + c as f64 * beta as f64)
            }
        });
        Ok(Tensor::I64(y.into_dyn()).cast(dtype))
    } else {
        Err(format!("Gemm does not support {dtype}"))
    }
}

/// A checked 2-D array as a matrix, transposed if asked.
fn op_matrix<T>(x: ArrayD<T>, transpose: bool) -> Array2<T> {
    let x = x.into_dimensionality::<Ix2>().expect("checked 2-D");
    if transpose {
        x.reversed_axes()
    } else {
        x
    }
}

/// The matrix product `x · y` (shapes checked by the caller).
fn matrix_product<T: Scalar>(x: ArrayView2<T>, y: ArrayView2<T>) -> Array2<T> {
    let mut c = Array2::from_elem((x.nrows(), y.ncols()), T::ZERO);
    T::gemm(x, y, c.view_mut());
    c
}

/// `MatMulInteger`: `(A - a_zero_point) · (B - b_zero_point)` in i32, with A and B u8 or i8.
/// A zero point is a scalar (per tensor), a vector (per row of A / per column of B), or an N-D
/// tensor broadcasting to its input (`[.., M, 1]` for A, `[.., 1, N]` for B).
fn matmul_integer(inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let shifted = |i: usize, zp_index: usize| -> Res<ArrayD<f64>> {
        let t = input(inputs, i)?;
        if !matches!(t.dtype(), DType::U8 | DType::I8) {
            return Err(format!(
                "input {i} is {} but MatMulInteger needs u8 or i8",
                t.dtype()
            ));
        }
        let x = t.to_f64_array();
        let Some(zp) = opt_input(inputs, zp_index) else {
            return Ok(x);
        };
        if zp.dtype() != t.dtype() {
            return Err(format!(
                "input {zp_index} is {} but input {i} is {}",
                zp.dtype(),
                t.dtype()
            ));
        }
        let mut z = zp.to_f64_array();
        if i == 0 && z.ndim() == 1 && z.len() > 1 && x.ndim() >= 2 {
            // A per-row zero point of A: one value per row, so a column vector.
            z = z.insert_axis(Axis(1));
        }
        let z = z.broadcast(x.shape()).ok_or_else(|| {
            format!(
                "zero point of shape {:?} does not fit input {i} of shape {:?}",
                zp.shape(),
                t.shape()
            )
        })?;
        Ok(x - &z)
    };
    let y = matmul_arrays(&shifted(0, 2)?, &shifted(1, 3)?)?;
    // Exact in f64; wrap to i32 like an i32 accumulator would.
    Ok(Tensor::I32(y.mapv(|v| v as i64 as i32)))
}

/// `Einsum` over any number of same-dtype inputs.
fn einsum(equation: &str, inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let n = inputs.len();
    if n == 0 {
        return Err("Einsum needs at least one input".into());
    }
    let dtype = same_dtype(inputs, n)?;
    if dtype.is_float() {
        let arrays: Vec<ArrayD<f32>> =
            (0..n).map(|i| float_input(inputs, i)).collect::<Res<_>>()?;
        Ok(from_f32(dtype, einsum_arrays(equation, arrays)?))
    } else if dtype.is_int() {
        let arrays: Vec<ArrayD<i64>> = (0..n).map(|i| int_input(inputs, i)).collect::<Res<_>>()?;
        Ok(Tensor::I64(einsum_arrays(equation, arrays)?).cast(dtype))
    } else {
        Err(format!("Einsum does not support {dtype}"))
    }
}

/// An einsum operand: an array and the label of each of its axes.
struct Labelled<T> {
    array: ArrayD<T>,
    labels: Vec<char>,
}

/// The label standing for the `i`-th ellipsis dim (a private-use character, never a letter).
fn ellipsis_label(i: usize) -> char {
    char::from_u32(0xE000 + i as u32).expect("a valid private-use code point")
}

fn fmt_labels(labels: &[char]) -> String {
    labels
        .iter()
        .map(|&c| if c.is_ascii_alphabetic() { c } else { '.' })
        .collect()
}

/// numpy `einsum` with the equation parsed by [`parse_einsum`].
fn einsum_arrays<T: Scalar>(equation: &str, arrays: Vec<ArrayD<T>>) -> Res<ArrayD<T>> {
    let (terms, out) = parse_einsum(equation, arrays.len())?;

    // Replace each ellipsis by labels of its own: the ellipsis dims of all operands are
    // right-aligned and broadcast together.
    let mut ell_rank = 0;
    let mut any_ellipsis_dims = false;
    for (i, (term, a)) in terms.iter().zip(&arrays).enumerate() {
        let named = term.iter().filter(|&&c| c != '.').count();
        let has_ellipsis = term.contains(&'.');
        if a.ndim() < named || (!has_ellipsis && a.ndim() != named) {
            let term: String = term
                .iter()
                .map(|&c| {
                    if c == '.' {
                        "...".into()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            return Err(format!(
                "einsum term `{term}` does not match input {i} of rank {}",
                a.ndim()
            ));
        }
        ell_rank = ell_rank.max(a.ndim() - named);
        any_ellipsis_dims |= a.ndim() > named;
    }
    let expand = |term: &[char], len: usize| -> Vec<char> {
        term.iter()
            .flat_map(|&c| {
                if c == '.' {
                    (ell_rank - len..ell_rank).map(ellipsis_label).collect()
                } else {
                    vec![c]
                }
            })
            .collect()
    };
    if !out.contains(&'.') && any_ellipsis_dims {
        return Err(format!(
            "einsum `{equation}`: the output needs `...` for the inputs' ellipsis dims"
        ));
    }
    let out = expand(&out, ell_rank);
    let mut operands: Vec<Labelled<T>> = terms
        .iter()
        .zip(arrays)
        .map(|(term, array)| {
            let named = term.iter().filter(|&&c| c != '.').count();
            let labels = expand(term, array.ndim() - named);
            take_diagonals(Labelled { array, labels })
        })
        .collect::<Res<_>>()?;

    // Each label has one size; size 1 broadcasts against any other size.
    let mut sizes: BTreeMap<char, usize> = BTreeMap::new();
    for op in &operands {
        for (&c, &d) in op.labels.iter().zip(op.array.shape()) {
            match sizes.get(&c) {
                Some(&s) if s != 1 && d != 1 && s != d => {
                    return Err(format!(
                        "einsum label `{}` has sizes {s} and {d}",
                        fmt_labels(&[c])
                    ));
                }
                Some(&s) if s != 1 => {}
                _ => {
                    sizes.insert(c, d);
                }
            }
        }
    }
    for op in &mut operands {
        let shape: Vec<usize> = op.labels.iter().map(|c| sizes[c]).collect();
        if op.array.shape() != shape.as_slice() {
            op.array = op
                .array
                .broadcast(shape)
                .expect("only size-1 dims differ")
                .to_owned();
        }
    }

    // Check the output labels.
    for (i, c) in out.iter().enumerate() {
        if out[..i].contains(c) {
            return Err(format!(
                "einsum `{equation}`: output label `{c}` is repeated"
            ));
        }
        if !sizes.contains_key(c) {
            return Err(format!(
                "einsum `{equation}`: output label `{c}` is not an input label"
            ));
        }
    }

    // Contract left to right, keeping the labels a later operand or the output still needs.
    let mut rest = operands.into_iter();
    let mut acc = rest.next().expect("at least one operand");
    let later: Vec<Labelled<T>> = rest.collect();
    for (i, next) in later.iter().enumerate() {
        let keep: BTreeSet<char> = out
            .iter()
            .chain(later[i + 1..].iter().flat_map(|o| &o.labels))
            .copied()
            .collect();
        acc = contract_pair(&acc, next, &keep);
    }
    let acc = sum_out(acc, &out.iter().copied().collect());
    let perm: Vec<usize> = out
        .iter()
        .map(|c| acc.labels.iter().position(|l| l == c).expect("kept"))
        .collect();
    Ok(acc
        .array
        .permuted_axes(perm)
        .as_standard_layout()
        .into_owned())
}

/// Replaces repeated labels of one operand by their diagonal (`ii->i`); their sizes must agree.
fn take_diagonals<T: Scalar>(op: Labelled<T>) -> Res<Labelled<T>> {
    let mut labels: Vec<char> = vec![];
    let mut shape: Vec<usize> = vec![];
    for (&c, &d) in op.labels.iter().zip(op.array.shape()) {
        match labels.iter().position(|&l| l == c) {
            Some(p) if shape[p] != d => {
                return Err(format!(
                    "einsum label `{}` has sizes {} and {d} in one input",
                    fmt_labels(&[c]),
                    shape[p]
                ));
            }
            Some(_) => {}
            None => {
                labels.push(c);
                shape.push(d);
            }
        }
    }
    if labels.len() == op.labels.len() {
        return Ok(op);
    }
    // Source axis k reads the index of its label in the result.
    let source: Vec<usize> = op
        .labels
        .iter()
        .map(|c| labels.iter().position(|l| l == c).expect("collected"))
        .collect();
    let array = ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
        let at: Vec<usize> = source.iter().map(|&p| idx[p]).collect();
        op.array[IxDyn(&at)]
    });
    Ok(Labelled { array, labels })
}

/// Sums over every axis whose label is not in `keep`.
fn sum_out<T: Scalar>(op: Labelled<T>, keep: &BTreeSet<char>) -> Labelled<T> {
    let Labelled {
        mut array,
        mut labels,
    } = op;
    for ax in (0..labels.len()).rev() {
        if !keep.contains(&labels[ax]) {
            array = array.fold_axis(Axis(ax), T::ZERO, |&s, &v| s.add(v));
            labels.remove(ax);
        }
    }
    Labelled { array, labels }
}

/// Contracts two operands as one batched matmul, keeping the labels in `keep`:
/// labels in both that are kept are batch dims, labels in both that are not are summed (the
/// GEMM's inner dim), and the labels of only one operand become its rows or columns.
fn contract_pair<T: Scalar>(
    x: &Labelled<T>,
    y: &Labelled<T>,
    keep: &BTreeSet<char>,
) -> Labelled<T> {
    let needed_by = |other: &Labelled<T>| -> BTreeSet<char> {
        keep.iter().chain(&other.labels).copied().collect()
    };
    let x = sum_out(
        Labelled {
            array: x.array.clone(),
            labels: x.labels.clone(),
        },
        &needed_by(y),
    );
    let y = sum_out(
        Labelled {
            array: y.array.clone(),
            labels: y.labels.clone(),
        },
        &needed_by(&x),
    );
    let in_y = |c: &char| y.labels.contains(c);
    let batch: Vec<char> = x
        .labels
        .iter()
        .copied()
        .filter(|c| in_y(c) && keep.contains(c))
        .collect();
    let inner: Vec<char> = x
        .labels
        .iter()
        .copied()
        .filter(|c| in_y(c) && !keep.contains(c))
        .collect();
    let rows: Vec<char> = x.labels.iter().copied().filter(|c| !in_y(c)).collect();
    let cols: Vec<char> = y
        .labels
        .iter()
        .copied()
        .filter(|c| !x.labels.contains(c))
        .collect();

    // Views `[batch.., rows, inner]` and `[batch.., inner, cols]` (copied only when the grouped
    // axes cannot be merged in place).
    let size_of = |op: &Labelled<T>, c: char| {
        op.array.shape()[op.labels.iter().position(|&l| l == c).expect("own label")]
    };
    let grouped = |op: &Labelled<T>, first: &[char], second: &[char]| {
        let order: Vec<char> = batch.iter().chain(first).chain(second).copied().collect();
        let perm: Vec<usize> = order
            .iter()
            .map(|c| op.labels.iter().position(|l| l == c).expect("own label"))
            .collect();
        let mut shape: Vec<usize> = batch.iter().map(|&c| size_of(op, c)).collect();
        shape.push(first.iter().map(|&c| size_of(op, c)).product());
        shape.push(second.iter().map(|&c| size_of(op, c)).product());
        (perm, shape)
    };
    let ((x_perm, x_shape), (y_perm, y_shape)) =
        (grouped(&x, &rows, &inner), grouped(&y, &inner, &cols));
    let (xv, yv) = (
        x.array.view().permuted_axes(x_perm),
        y.array.view().permuted_axes(y_perm),
    );
    let xm = xv.to_shape(x_shape).expect("element count is unchanged");
    let ym = yv.to_shape(y_shape).expect("element count is unchanged");
    let product = batched_matmul(xm.view(), ym.view());

    let shape: Vec<usize> = batch
        .iter()
        .map(|&c| size_of(&x, c))
        .chain(rows.iter().map(|&c| size_of(&x, c)))
        .chain(cols.iter().map(|&c| size_of(&y, c)))
        .collect();
    let array = product
        .into_shape_with_order(IxDyn(&shape))
        .expect("element count is unchanged");
    let labels = batch.iter().chain(&rows).chain(&cols).copied().collect();
    Labelled { array, labels }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attr, Attrs};
    use half::f16;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        crate::interp::test_values(n, seed, -1.0, 1.0)
    }

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        Tensor::from_vec(shape, values(shape.iter().product(), seed)).unwrap()
    }

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape, v.to_vec()).unwrap()
    }

    fn attrs(list: &[(&str, Attr)]) -> Attrs {
        let mut a = Attrs::default();
        for (k, v) in list {
            a.set(k, v.clone());
        }
        a
    }

    fn equation(eq: &str) -> Attrs {
        attrs(&[("equation", Attr::Str(eq.into()))])
    }

    /// Runs one op and checks its output against shape inference.
    fn run(kind: OpKind, a: Attrs, inputs: &[Option<&Tensor>]) -> Res<Tensor> {
        crate::interp::eval_checked(&Op::new(kind, a), inputs)
    }

    fn run2(kind: OpKind, a: Attrs, x: &Tensor, y: &Tensor) -> Res<Tensor> {
        run(kind, a, &[Some(x), Some(y)])
    }

    fn assert_close(got: &Tensor, shape: &[usize], want: &[f32]) {
        assert_eq!(got.shape(), shape);
        let got = got.to_f32_array();
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "element {i}: got {g}, want {w}"
            );
        }
    }

    fn assert_same(got: &Tensor, want: &Tensor) {
        assert_eq!(got.dtype(), want.dtype());
        assert_close(got, want.shape(), want.to_f32_array().as_slice().unwrap());
    }

    /// numpy matmul by the definition: every output element is a dot product over k, with the
    /// batch indices right-aligned and size-1 batch dims broadcast.
    fn naive_matmul(a: &Tensor, b: &Tensor) -> Tensor {
        let (a, b) = (a.to_f64_array(), b.to_f64_array());
        let (a_vec, b_vec) = (a.ndim() == 1, b.ndim() == 1);
        let a = if a.ndim() == 1 {
            a.insert_axis(Axis(0))
        } else {
            a
        };
        let b = if b.ndim() == 1 {
            b.insert_axis(Axis(1))
        } else {
            b
        };
        let (ra, rb) = (a.ndim(), b.ndim());
        let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
        let batch = broadcast(&[&a.shape()[..ra - 2], &b.shape()[..rb - 2]]).unwrap();
        let pick = |shape: &[usize], idx: &[usize]| -> Vec<usize> {
            let off = idx.len() - shape.len();
            shape
                .iter()
                .enumerate()
                .map(|(i, &d)| if d == 1 { 0 } else { idx[off + i] })
                .collect()
        };
        let mut out_shape = batch.clone();
        out_shape.extend([m, n]);
        let out = ArrayD::from_shape_fn(IxDyn(&out_shape), |idx| {
            let idx = idx.slice();
            let (bi, i, j) = (&idx[..batch.len()], idx[batch.len()], idx[batch.len() + 1]);
            let mut ai = pick(&a.shape()[..ra - 2], bi);
            let mut bj = pick(&b.shape()[..rb - 2], bi);
            ai.extend([i, 0]);
            bj.extend([0, j]);
            (0..k)
                .map(|p| {
                    ai[ra - 1] = p;
                    bj[rb - 2] = p;
                    a[IxDyn(&ai)] * b[IxDyn(&bj)]
                })
                .sum::<f64>()
        });
        // Drop the dims the promotion of 1-D operands added.
        let r = out.ndim();
        let out = if b_vec {
            out.index_axis_move(Axis(r - 1), 0)
        } else {
            out
        };
        let out = if a_vec {
            out.index_axis_move(Axis(r - 2), 0)
        } else {
            out
        };
        Tensor::F32(out.mapv(|v| v as f32))
    }

    /// einsum by the definition: loop over every assignment of every label (letters only, explicit
    /// output), multiplying the operands' elements (size-1 dims broadcast) into the output.
    fn naive_einsum(eq: &str, inputs: &[&Tensor]) -> Tensor {
        let (lhs, rhs) = eq.split_once("->").unwrap();
        let terms: Vec<Vec<char>> = lhs.split(',').map(|t| t.chars().collect()).collect();
        let out: Vec<char> = rhs.chars().collect();
        let arrays: Vec<ArrayD<f64>> = inputs.iter().map(|t| t.to_f64_array()).collect();
        let mut sizes: BTreeMap<char, usize> = BTreeMap::new();
        for (t, a) in terms.iter().zip(&arrays) {
            for (&c, &d) in t.iter().zip(a.shape()) {
                let s = sizes.entry(c).or_insert(d);
                *s = (*s).max(d);
            }
        }
        let labels: Vec<char> = sizes.keys().copied().collect();
        let dims: Vec<usize> = sizes.values().copied().collect();
        let out_shape: Vec<usize> = out.iter().map(|c| sizes[c]).collect();
        let mut result = ArrayD::<f64>::zeros(IxDyn(&out_shape));
        for assignment in ndarray::indices(IxDyn(&dims)) {
            let value_of = |c: &char| assignment[labels.iter().position(|l| l == c).unwrap()];
            let mut p = 1.0;
            for (t, a) in terms.iter().zip(&arrays) {
                let idx: Vec<usize> = t
                    .iter()
                    .zip(a.shape())
                    .map(|(c, &d)| if d == 1 { 0 } else { value_of(c) })
                    .collect();
                p *= a[IxDyn(&idx)];
            }
            let o: Vec<usize> = out.iter().map(value_of).collect();
            result[IxDyn(&o)] += p;
        }
        Tensor::F32(result.mapv(|v| v as f32))
    }

    #[test]
    fn matmul_2d_literal() {
        let a = f32s(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let b = f32s(&[3, 2], &[7., 8., 9., 10., 11., 12.]);
        let y = run2(OpKind::MatMul, Attrs::default(), &a, &b).unwrap();
        assert_close(&y, &[2, 2], &[58., 64., 139., 154.]);
    }

    #[test]
    fn matmul_vector_operands() {
        let v = f32s(&[3], &[1., 2., 3.]);
        let a = f32s(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let b = f32s(&[3, 2], &[7., 8., 9., 10., 11., 12.]);
        let mm = |x: &Tensor, y: &Tensor| run2(OpKind::MatMul, Attrs::default(), x, y).unwrap();
        assert_close(&mm(&v, &v), &[], &[14.]);
        assert_close(&mm(&v, &b), &[2], &[58., 64.]);
        assert_close(&mm(&a, &v), &[2], &[14., 32.]);
        let a3 = f32s(&[2, 3, 4], &(0..24).map(|i| i as f32).collect::<Vec<_>>());
        let w = f32s(&[4], &[1., -1., 2., 0.5]);
        assert_close(&mm(&a3, &w), &[2, 3], &[4.5, 14.5, 24.5, 34.5, 44.5, 54.5]);
        let b3 = f32s(&[2, 4, 3], &(0..24).map(|i| i as f32).collect::<Vec<_>>());
        assert_close(&mm(&w, &b3), &[2, 3], &[13.5, 16.0, 18.5, 43.5, 46.0, 48.5]);
    }

    #[test]
    fn matmul_batches_match_naive() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[2, 1, 3, 4], &[5, 4, 2]),
            (&[1, 12, 7, 8], &[1, 12, 8, 5]),
            (&[3, 4], &[2, 4, 6]),
            (&[2, 3, 5, 4], &[4, 3]),
            (&[6], &[3, 6, 2]),
            (&[2, 3, 6], &[6]),
            (&[2, 3, 0], &[0, 4]),
            (&[0, 3, 4], &[4, 2]),
            (&[1, 3, 4], &[1, 4, 0]),
        ];
        for (i, (sa, sb)) in cases.iter().enumerate() {
            let (a, b) = (rand(sa, 2 * i as u64), rand(sb, 2 * i as u64 + 1));
            let y = run2(OpKind::MatMul, Attrs::default(), &a, &b).unwrap();
            assert_same(&y, &naive_matmul(&a, &b));
        }
    }

    #[test]
    fn matmul_narrow_floats_round_back() {
        let a = Tensor::F32(
            ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![1.5, 2.0, -3.0, 0.25]).unwrap(),
        );
        let b = Tensor::F32(ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![2.0, 4.0]).unwrap());
        for dtype in [DType::F16, DType::BF16] {
            let y = run2(
                OpKind::MatMul,
                Attrs::default(),
                &a.cast(dtype),
                &b.cast(dtype),
            )
            .unwrap();
            assert_eq!(y.dtype(), dtype);
            assert_close(&y, &[2, 1], &[11.0, -5.0]);
        }
        // The f32 sum 1 + 2^-11 is rounded once, to the nearest f16 (ties to even: 1).
        let a = Tensor::F16(
            ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![f16::ONE, f16::from_f32(1.0 / 2048.0)])
                .unwrap(),
        );
        let b = Tensor::F16(ArrayD::from_elem(IxDyn(&[2, 1]), f16::ONE));
        let y = run2(OpKind::MatMul, Attrs::default(), &a, &b).unwrap();
        assert_eq!(y, Tensor::F16(ArrayD::from_elem(IxDyn(&[1, 1]), f16::ONE)));
    }

    #[test]
    fn matmul_integers_are_exact_and_wrap() {
        let big = 3_000_000_007i64;
        let a = Tensor::from_vec(&[1, 2], vec![big, 1]).unwrap();
        let b = Tensor::from_vec(&[2, 1], vec![1_000_003i64, -5]).unwrap();
        let y = run2(OpKind::MatMul, Attrs::default(), &a, &b).unwrap();
        assert_eq!(
            y,
            Tensor::from_vec(&[1, 1], vec![big * 1_000_003 - 5]).unwrap()
        );
        // i32 overflows wrap like numpy: 2^30 * 2 + 2^30 * 2 = 2^32 = 0 (mod 2^32).
        let a = Tensor::from_vec(&[1, 2], vec![1i32 << 30, 1 << 30]).unwrap();
        let b = Tensor::from_vec(&[2], vec![2i32, 2]).unwrap();
        let y = run2(OpKind::MatMul, Attrs::default(), &a, &b).unwrap();
        assert_eq!(y, Tensor::from_vec(&[1], vec![0i32]).unwrap());
    }

    #[test]
    fn matmul_rejects_bad_inputs() {
        let mm = |x: &Tensor, y: &Tensor| eval(&Op::plain(OpKind::MatMul), &[Some(x), Some(y)]);
        assert!(mm(&rand(&[2, 3], 0), &rand(&[4, 2], 1))
            .unwrap_err()
            .contains("inner"));
        assert!(mm(&rand(&[2, 3, 4], 0), &rand(&[3, 4, 5], 1))
            .unwrap_err()
            .contains("broadcast"));
        assert!(mm(&rand(&[], 0), &rand(&[3], 1)).is_err());
        assert!(mm(&rand(&[3], 0), &rand(&[3], 1).cast(DType::F16))
            .unwrap_err()
            .contains("f16"));
        let t = Tensor::from_vec(&[1, 1], vec![true]).unwrap();
        assert!(mm(&t, &t).is_err());
        assert!(eval(&Op::plain(OpKind::MatMul), &[Some(&t)])
            .unwrap_err()
            .contains("missing"));
    }

    /// Gemm by the definition, C broadcast by hand.
    fn naive_gemm(
        a: &Tensor,
        b: &Tensor,
        c: Option<&Tensor>,
        alpha: f32,
        beta: f32,
        ta: bool,
        tb: bool,
    ) -> Tensor {
        let t = |x: &Tensor, yes: bool| {
            let x = x.to_f32_array();
            let x = if yes { x.reversed_axes() } else { x };
            Tensor::F32(x.as_standard_layout().into_owned())
        };
        let ab = naive_matmul(&t(a, ta), &t(b, tb)).to_f32_array();
        let (m, n) = (ab.shape()[0], ab.shape()[1]);
        let c = c.map(|c| {
            c.to_f32_array()
                .broadcast(IxDyn(&[m, n]))
                .unwrap()
                .to_owned()
        });
        let y = ArrayD::from_shape_fn(IxDyn(&[m, n]), |i| {
            alpha * ab[&i] + c.as_ref().map_or(0.0, |c| beta * c[&i])
        });
        Tensor::F32(y)
    }

    #[test]
    fn gemm_transposes_and_bias_shapes_match_naive() {
        let (m, k, n) = (3, 4, 5);
        let biases: Vec<Option<Tensor>> = vec![
            None,
            Some(rand(&[], 10)),
            Some(rand(&[1], 11)),
            Some(rand(&[n], 12)),
            Some(rand(&[m, 1], 13)),
            Some(rand(&[1, n], 14)),
            Some(rand(&[m, n], 15)),
        ];
        for ta in [false, true] {
            for tb in [false, true] {
                let a = rand(&if ta { [k, m] } else { [m, k] }, 1);
                let b = rand(&if tb { [n, k] } else { [k, n] }, 2);
                for c in &biases {
                    for (alpha, beta) in [(1.0, 1.0), (0.5, -2.0)] {
                        let at = attrs(&[
                            ("alpha", Attr::Float(alpha)),
                            ("beta", Attr::Float(beta)),
                            ("transA", Attr::Int(ta as i64)),
                            ("transB", Attr::Int(tb as i64)),
                        ]);
                        let y = run(OpKind::Gemm, at, &[Some(&a), Some(&b), c.as_ref()]).unwrap();
                        assert_same(&y, &naive_gemm(&a, &b, c.as_ref(), alpha, beta, ta, tb));
                    }
                }
            }
        }
    }

    #[test]
    fn gemm_edge_cases() {
        let a = f32s(&[1, 2], &[1., 2.]);
        let b = f32s(&[2, 1], &[3., 4.]);
        // beta = 0 ignores C entirely, even NaN.
        let c = f32s(&[1], &[f32::NAN]);
        let y = run(
            OpKind::Gemm,
            attrs(&[("beta", Attr::Float(0.0))]),
            &[Some(&a), Some(&b), Some(&c)],
        )
        .unwrap();
        assert_close(&y, &[1, 1], &[11.]);
        // f16 in, f16 out.
        let y = run(
            OpKind::Gemm,
            Attrs::default(),
            &[Some(&a.cast(DType::F16)), Some(&b.cast(DType::F16))],
        )
        .unwrap();
        assert_eq!(y, f32s(&[1, 1], &[11.]).cast(DType::F16));
        // Integers: exact with alpha = beta = 1, numpy's truncated f64 otherwise.
        let ai = Tensor::from_vec(&[2, 2], vec![1i32, 2, 3, 4]).unwrap();
        let bi = Tensor::from_vec(&[2, 2], vec![5i32, 6, 7, 8]).unwrap();
        let ci = Tensor::from_vec(&[2], vec![1i32, -1]).unwrap();
        let y = run(
            OpKind::Gemm,
            Attrs::default(),
            &[Some(&ai), Some(&bi), Some(&ci)],
        )
        .unwrap();
        assert_eq!(
            y,
            Tensor::from_vec(&[2, 2], vec![20i32, 21, 44, 49]).unwrap()
        );
        let scaled = attrs(&[("alpha", Attr::Float(0.5)), ("beta", Attr::Float(1.5))]);
        let y = run(OpKind::Gemm, scaled, &[Some(&ai), Some(&bi), Some(&ci)]).unwrap();
        assert_eq!(
            y,
            Tensor::from_vec(&[2, 2], vec![11i32, 9, 23, 23]).unwrap()
        );
    }

    #[test]
    fn gemm_rejects_bad_inputs() {
        let gemm = |a: &Tensor, b: &Tensor, c: Option<&Tensor>| {
            eval(&Op::plain(OpKind::Gemm), &[Some(a), Some(b), c])
        };
        let (a, b) = (rand(&[3, 4], 0), rand(&[4, 5], 1));
        assert!(gemm(&a, &rand(&[3, 5], 1), None)
            .unwrap_err()
            .contains("inner"));
        assert!(gemm(&rand(&[2, 3, 4], 0), &b, None)
            .unwrap_err()
            .contains("2-D"));
        assert!(gemm(&a, &b, Some(&rand(&[4], 2)))
            .unwrap_err()
            .contains("broadcast"));
        assert!(gemm(&a, &b, Some(&rand(&[6, 5], 2))).is_err());
        assert!(gemm(&a, &b, Some(&rand(&[1, 3, 5], 2))).is_err());
        assert!(gemm(&a, &b, Some(&rand(&[5], 2).cast(DType::F16)))
            .unwrap_err()
            .contains("f16"));
    }

    #[test]
    fn einsum_matches_naive_loops() {
        let cases: &[(&str, &[&[usize]])] = &[
            ("bhqd,bhkd->bhqk", &[&[2, 3, 4, 5], &[2, 3, 6, 5]]),
            ("bhqk,bhkd->bhqd", &[&[2, 3, 4, 6], &[2, 3, 6, 5]]),
            ("bij,bjk->bik", &[&[3, 4, 5], &[3, 5, 2]]),
            ("ij,jk->ik", &[&[4, 5], &[5, 3]]),
            ("ij,kj->ki", &[&[4, 5], &[3, 5]]),
            ("i,i->", &[&[7], &[7]]),
            ("i,j->ij", &[&[3], &[4]]),
            ("ij,ij->ij", &[&[3, 4], &[3, 4]]),
            ("ab,ab->a", &[&[3, 4], &[3, 4]]),
            ("ii->i", &[&[4, 4]]),
            ("ii->", &[&[4, 4]]),
            ("iij,jk->ik", &[&[3, 3, 4], &[4, 2]]),
            ("bii->bi", &[&[2, 3, 3]]),
            ("ijk->kji", &[&[2, 3, 4]]),
            ("ijk->", &[&[2, 3, 4]]),
            ("ijk->j", &[&[2, 3, 4]]),
            ("ij,jk,kl->il", &[&[2, 3], &[3, 4], &[4, 5]]),
            ("ab,bc,ca->", &[&[2, 3], &[3, 4], &[4, 2]]),
            ("abc,cd,da->bd", &[&[2, 3, 4], &[4, 5], &[5, 2]]),
            ("ij,jk->ik", &[&[2, 1], &[3, 4]]),
            ("bij,bjk->bik", &[&[1, 2, 3], &[4, 3, 2]]),
            ("ij,jk->ijk", &[&[2, 3], &[3, 4]]),
            ("i,i,i->i", &[&[5], &[5], &[5]]),
            ("ij,jk->ik", &[&[2, 0], &[0, 3]]),
            ("ij,jk->ik", &[&[0, 2], &[2, 3]]),
            ("ij->ji", &[&[0, 3]]),
        ];
        for (i, (eq, shapes)) in cases.iter().enumerate() {
            let ts: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(j, s)| rand(s, (10 * i + j) as u64))
                .collect();
            let refs: Vec<Option<&Tensor>> = ts.iter().map(Some).collect();
            let y =
                run(OpKind::Einsum, equation(eq), &refs).unwrap_or_else(|e| panic!("{eq}: {e}"));
            assert_same(&y, &naive_einsum(eq, &ts.iter().collect::<Vec<_>>()));
        }
    }

    #[test]
    fn einsum_agrees_with_matmul() {
        let (q, k) = (rand(&[2, 4, 16, 8], 1), rand(&[2, 4, 16, 8], 2));
        let kt = Tensor::F32(
            k.to_f32_array()
                .permuted_axes(vec![0, 1, 3, 2])
                .as_standard_layout()
                .into_owned(),
        );
        let y = run2(OpKind::Einsum, equation("bhqd,bhkd->bhqk"), &q, &k).unwrap();
        assert_same(
            &y,
            &run2(OpKind::MatMul, Attrs::default(), &q, &kt).unwrap(),
        );
        // Ellipsis batch dims broadcast like matmul's.
        let (a, b) = (rand(&[2, 1, 3, 4], 3), rand(&[5, 4, 2], 4));
        let mm = run2(OpKind::MatMul, Attrs::default(), &a, &b).unwrap();
        assert_same(
            &run2(OpKind::Einsum, equation("...ij,...jk->...ik"), &a, &b).unwrap(),
            &mm,
        );
        assert_same(
            &run2(OpKind::Einsum, equation("...ij,...jk"), &a, &b).unwrap(),
            &mm,
        );
        let (a, b) = (rand(&[6, 5], 5), rand(&[5, 7], 6));
        let mm = run2(OpKind::MatMul, Attrs::default(), &a, &b).unwrap();
        assert_same(
            &run2(OpKind::Einsum, equation("ij,jk"), &a, &b).unwrap(),
            &mm,
        );
    }

    #[test]
    fn einsum_ellipsis_and_implicit_output() {
        let x = rand(&[2, 3, 4, 4], 1);
        let y = run(OpKind::Einsum, equation("...ii->...i"), &[Some(&x)]).unwrap();
        assert_same(&y, &naive_einsum("abii->abi", &[&x]));
        let y = run(OpKind::Einsum, equation("i...->..."), &[Some(&x)]).unwrap();
        assert_same(&y, &naive_einsum("iabc->abc", &[&x]));
        // Ellipses of different ranks right-align and broadcast.
        let (a, b) = (f32s(&[2, 1], &[1., 2.]), f32s(&[3], &[10., 20., 30.]));
        let y = run2(OpKind::Einsum, equation("...,..."), &a, &b).unwrap();
        assert_close(&y, &[2, 3], &[10., 20., 30., 20., 40., 60.]);
        // Implicit output: the labels used once, in alphabetical order.
        let x = rand(&[2, 3], 2);
        assert_same(
            &run(OpKind::Einsum, equation("ji"), &[Some(&x)]).unwrap(),
            &naive_einsum("ji->ij", &[&x]),
        );
        assert_same(
            &run(OpKind::Einsum, equation("ij"), &[Some(&x)]).unwrap(),
            &x,
        );
        let y = run(OpKind::Einsum, equation("ii"), &[Some(&rand(&[3, 3], 4))]).unwrap();
        assert_eq!(y.shape(), &[] as &[usize]);
        // White space is ignored.
        let y = run2(
            OpKind::Einsum,
            equation(" ij , jk -> ik "),
            &rand(&[2, 3], 5),
            &rand(&[3, 4], 6),
        )
        .unwrap();
        assert_eq!(y.shape(), &[2, 4]);
    }

    #[test]
    fn einsum_integers_and_narrow_floats() {
        let a = Tensor::from_vec(&[2, 3], (0..6i64).collect()).unwrap();
        let y = run2(OpKind::Einsum, equation("ij,ij->i"), &a, &a).unwrap();
        assert_eq!(y, Tensor::from_vec(&[2], vec![5i64, 50]).unwrap());
        let a8 = a.cast(DType::I8);
        let y = run2(OpKind::Einsum, equation("ij,ij->i"), &a8, &a8).unwrap();
        assert_eq!(y, Tensor::from_vec(&[2], vec![5i8, 50]).unwrap());
        let h = a.cast(DType::F16);
        let y = run2(OpKind::Einsum, equation("ij,kj->ik"), &h, &h).unwrap();
        assert_eq!(y.dtype(), DType::F16);
        assert_close(&y, &[2, 2], &[5., 14., 14., 50.]);
    }

    #[test]
    fn einsum_rejects_bad_equations() {
        let (x, y) = (rand(&[2, 3], 0), rand(&[3, 4], 1));
        let e = |eq: &str, ins: &[&Tensor]| {
            let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| Some(*t)).collect();
            eval(&Op::new(OpKind::Einsum, equation(eq)), &refs).unwrap_err()
        };
        assert!(e("ij->ij", &[&x, &y]).contains("terms"));
        assert!(e("ijk->i", &[&x]).contains("rank"));
        assert!(e("ij,kj->ik", &[&x, &y]).contains("sizes"));
        assert!(e("ii->i", &[&x]).contains("sizes"));
        assert!(e("ij->ii", &[&x]).contains("repeated"));
        assert!(e("ij->k", &[&x]).contains("not an input label"));
        assert!(e("...j->j", &[&x]).contains("..."));
        assert!(e("i1->i", &[&x]).contains("bad"));
        assert!(eval(&Op::new(OpKind::Einsum, equation("")), &[]).is_err());
        assert!(eval(&Op::plain(OpKind::Einsum), &[Some(&x)])
            .unwrap_err()
            .contains("equation"));
    }

    /// MatMulInteger by the definition, in i64.
    fn naive_matmul_integer(a: &Tensor, b: &Tensor, za: &[i64], zb: &[i64]) -> Tensor {
        let (a, b) = (a.to_i64_array(), b.to_i64_array());
        let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
        let zr = |i: usize| za[if za.len() == 1 { 0 } else { i }];
        let zc = |j: usize| zb[if zb.len() == 1 { 0 } else { j }];
        let y = ArrayD::from_shape_fn(IxDyn(&[m, n]), |i| {
            (0..k)
                .map(|p| (a[[i[0], p]] - zr(i[0])) * (b[[p, i[1]]] - zc(i[1])))
                .sum::<i64>() as i32
        });
        Tensor::I32(y)
    }

    #[test]
    fn matmul_integer_onnx_example() {
        let a = Tensor::from_vec(&[4, 3], vec![11u8, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0]).unwrap();
        let b = Tensor::from_vec(&[3, 2], vec![1u8, 4, 2, 5, 3, 6]).unwrap();
        let (za, zb) = (
            Tensor::from_vec(&[1], vec![12u8]).unwrap(),
            Tensor::from_vec(&[1], vec![0u8]).unwrap(),
        );
        let y = run(
            OpKind::MatMulInteger,
            Attrs::default(),
            &[Some(&a), Some(&b), Some(&za), Some(&zb)],
        )
        .unwrap();
        assert_eq!(
            y,
            Tensor::from_vec(&[4, 2], vec![-38i32, -83, -44, -98, -50, -113, -56, -128]).unwrap()
        );
    }

    #[test]
    fn matmul_integer_zero_points_match_naive() {
        let bytes = |n: usize, seed: u64| {
            values(n, seed)
                .iter()
                .map(|v| ((v + 1.0) * 127.9) as u8)
                .collect::<Vec<u8>>()
        };
        let (m, k, n) = (3, 70, 4);
        let a = Tensor::from_vec(&[m, k], bytes(m * k, 1)).unwrap();
        let b = Tensor::from_vec(&[k, n], bytes(k * n, 2)).unwrap();
        let b_i8 = b.to_i64_array().mapv(|v| (v - 128) as i8);
        let b_i8 = Tensor::I8(b_i8);
        let mi =
            |ins: &[Option<&Tensor>]| run(OpKind::MatMulInteger, Attrs::default(), ins).unwrap();
        let u8s = |shape: &[usize], v: &[u8]| Tensor::from_vec(shape, v.to_vec()).unwrap();
        // No zero points.
        assert_eq!(
            mi(&[Some(&a), Some(&b)]),
            naive_matmul_integer(&a, &b, &[0], &[0])
        );
        // Scalar, per-row (A) and per-column (B) zero points; mixed u8 x i8.
        let za = u8s(&[], &[200]);
        let zb = u8s(&[n], &[0, 255, 128, 7]);
        assert_eq!(
            mi(&[Some(&a), Some(&b), Some(&za), Some(&zb)]),
            naive_matmul_integer(&a, &b, &[200], &[0, 255, 128, 7])
        );
        let za_rows = u8s(&[m], &[1, 128, 255]);
        assert_eq!(
            mi(&[Some(&a), Some(&b), Some(&za_rows), None]),
            naive_matmul_integer(&a, &b, &[1, 128, 255], &[0])
        );
        let za_nd = u8s(&[m, 1], &[1, 128, 255]);
        let zb_nd = u8s(&[1, n], &[0, 255, 128, 7]);
        assert_eq!(
            mi(&[Some(&a), Some(&b), Some(&za_nd), Some(&zb_nd)]),
            naive_matmul_integer(&a, &b, &[1, 128, 255], &[0, 255, 128, 7])
        );
        let zb_i8 = Tensor::from_vec(&[1], vec![-3i8]).unwrap();
        assert_eq!(
            mi(&[Some(&a), Some(&b_i8), None, Some(&zb_i8)]),
            naive_matmul_integer(&a, &b_i8, &[0], &[-3])
        );
        // Batched, with a 1-D right operand.
        let a3 = Tensor::from_vec(&[2, 2, 3], bytes(12, 3)).unwrap();
        let v = Tensor::from_vec(&[3], bytes(3, 4)).unwrap();
        let y = mi(&[Some(&a3), Some(&v)]);
        let want = naive_matmul(&a3.cast(DType::F32), &v.cast(DType::F32)).cast(DType::I32);
        assert_eq!(y, want);
    }

    #[test]
    fn matmul_integer_rejects_bad_inputs() {
        let a = Tensor::from_vec(&[2, 3], vec![1u8; 6]).unwrap();
        let b = Tensor::from_vec(&[3, 2], vec![1u8; 6]).unwrap();
        let mi =
            |ins: &[Option<&Tensor>]| eval(&Op::plain(OpKind::MatMulInteger), ins).unwrap_err();
        assert!(mi(&[Some(&a.cast(DType::F32)), Some(&b)]).contains("u8 or i8"));
        assert!(mi(&[Some(&a), Some(&b), Some(&Tensor::scalar(1i8))]).contains("i8"));
        assert!(mi(&[
            Some(&a),
            Some(&b),
            Some(&Tensor::from_vec(&[3], vec![1u8; 3]).unwrap())
        ])
        .contains("zero point"));
        assert!(mi(&[
            Some(&a),
            Some(&b),
            None,
            Some(&Tensor::from_vec(&[3], vec![1u8; 3]).unwrap())
        ])
        .contains("zero point"));
        assert!(mi(&[Some(&a), Some(&a)]).contains("inner"));
    }
}

//! Linear algebra: `MatMul`, `Gemm`, `Einsum` and `MatMulInteger`.
//!
//! Every product goes through one kernel, [`batched_matmul`]: a stack of 2-D matrix products,
//! each a real GEMM (ndarray's `general_mat_mul`, backed by the matrixmultiply crate) for floats.
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
use ndarray::{Array2, Array3, ArrayView2, ArrayViewD, ArrayViewMut2, Axis, Dimension, Ix2, IxDyn, Zip};
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
                Zip::from(&mut c_row).and(&b_row).for_each(|c, &y| *c = c.wrapping_add(x.wrapping_mul(y)));
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
    for (idx, c) in ndarray::indices(batch).into_iter().zip(out.outer_iter_mut()) {
        T::gemm(matrix_at(&a, idx.slice()), matrix_at(&b, idx.slice()), c);
    }
    let mut shape = batch.to_vec();
    shape.extend([m, n]);
    out.into_shape_with_order(IxDyn(&shape)).expect("element count is unchanged")
}

/// The matrix at batch index `idx` of a `[batch.., rows, cols]` view.
fn matrix_at<'a, T>(v: &ArrayViewD<'a, T>, idx: &[usize]) -> ArrayView2<'a, T> {
    let mut m = v.clone();
    for &i in idx {
        m = m.index_axis_move(Axis(0), i);
    }
    m.into_dimensionality::<Ix2>().expect("two axes are left after the batch axes")
}

/// Concrete dims as symbolic ones, to reuse the shape rules of `crate::infer`.
fn to_dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::known(d as i64)).collect()
}

/// Symbolic dims that must all be known (as they are when computed from concrete ones).
fn to_usize(shape: &[Dim]) -> Res<Vec<usize>> {
    shape
        .iter()
        .map(|d| d.as_known().map(|v| v as usize).ok_or_else(|| format!("dim {d} is not concrete")))
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
    let a2 = if a.ndim() == 1 { a.view().insert_axis(Axis(0)) } else { a.view() };
    let b2 = if b.ndim() == 1 { b.view().insert_axis(Axis(1)) } else { b.view() };
    let (ra, rb) = (a2.ndim(), b2.ndim());
    let batch = broadcast(&[&a2.shape()[..ra - 2], &b2.shape()[..rb - 2]])?;
    let full = |v: &ArrayViewD<'_, T>| -> Vec<usize> {
        batch.iter().chain(&v.shape()[v.ndim() - 2..]).copied().collect()
    };
    let no_fit = |v: &ArrayViewD<'_, T>| format!("cannot broadcast {:?} to batch {batch:?}", v.shape());
    let a3 = a2.broadcast(full(&a2)).ok_or_else(|| no_fit(&a2))?;
    let b3 = b2.broadcast(full(&b2)).ok_or_else(|| no_fit(&b2))?;
    let product = batched_matmul(a3, b3);
    Ok(product.into_shape_with_order(IxDyn(&out_shape)).expect("matmul_shape drops only size-1 dims"))
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
    let (m, k1) = if trans_a { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let (k2, n) = if trans_b { (sb[1], sb[0]) } else { (sb[0], sb[1]) };
    if k1 != k2 {
        return Err(format!("Gemm inner dimensions differ: {k1} and {k2}"));
    }
    if let Some(c) = c {
        if c.shape().len() > 2 || broadcast(&[c.shape(), &[m, n]])? != [m, n] {
            return Err(format!("C of shape {:?} cannot be broadcast to [{m}, {n}]", c.shape()));
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
            Some(c) => c.to_i64_array().broadcast((m, n)).expect("checked above").to_owned(),
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
            return Err(format!("input {i} is {} but MatMulInteger needs u8 or i8", t.dtype()));
        }
        let x = t.to_f64_array();
        let Some(zp) = opt_input(inputs, zp_index) else {
            return Ok(x);
        };
        if zp.dtype() != t.dtype() {
            return Err(format!("input {zp_index} is {} but input {i} is {}", zp.dtype(), t.dtype()));
        }
        let mut z = zp.to_f64_array();
        if i == 0 && z.ndim() == 1 && z.len() > 1 && x.ndim() >= 2 {
            // A per-row zero point of A: one value per row, so a column vector.
            z = z.insert_axis(Axis(1));
        }
        let z = z.broadcast(x.shape()).ok_or_else(|| {
            format!("zero point of shape {:?} does not fit input {i} of shape {:?}", zp.shape(), t.shape())
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
        let arrays: Vec<ArrayD<f32>> = (0..n).map(|i| float_input(inputs, i)).collect::<Res<_>>()?;
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
    labels.iter().map(|&c| if c.is_ascii_alphabetic() { c } else { '.' }).collect()
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
            let term: String = term.iter().map(|&c| if c == '.' { "...".into() } else { c.to_string() }).collect();
            return Err(format!("einsum term `{term}` does not match input {i} of rank {}", a.ndim()));
        }
        ell_rank = ell_rank.max(a.ndim() - named);
        any_ellipsis_dims |= a.ndim() > named;
    }
    let expand = |term: &[char], len: usize| -> Vec<char> {
        term.iter()
            .flat_map(|&c| if c == '.' { (ell_rank - len..ell_rank).map(ellipsis_label).collect() } else { vec![c] })
            .collect()
    };
    if !out.contains(&'.') && any_ellipsis_dims {
        return Err(format!("einsum `{equation}`: the output needs `...` for the inputs' ellipsis dims"));
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
                    return Err(format!("einsum label `{}` has sizes {s} and {d}", fmt_labels(&[c])));
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
            op.array = op.array.broadcast(shape).expect("only size-1 dims differ").to_owned();
        }
    }

    // Check the output labels.
    for (i, c) in out.iter().enumerate() {
        if out[..i].contains(c) {
            return Err(format!("einsum `{equation}`: output label `{c}` is repeated"));
        }
        if !sizes.contains_key(c) {
            return Err(format!("einsum `{equation}`: output label `{c}` is not an input label"));
        }
    }

    // Contract left to right, keeping the labels a later operand or the output still needs.
    let mut rest = operands.into_iter();
    let mut acc = rest.next().expect("at least one operand");
    let later: Vec<Labelled<T>> = rest.collect();
    for (i, next) in later.iter().enumerate() {
        let keep: BTreeSet<char> = out.iter().chain(later[i + 1..].iter().flat_map(|o| &o.labels)).copied().collect();
        acc = contract_pair(&acc, next, &keep);
    }
    let acc = sum_out(acc, &out.iter().copied().collect());
    let perm: Vec<usize> = out.iter().map(|c| acc.labels.iter().position(|l| l == c).expect("kept")).collect();
    Ok(acc.array.permuted_axes(perm).as_standard_layout().into_owned())
}

/// Replaces repeated labels of one operand by their diagonal (`ii->i`); their sizes must agree.
fn take_diagonals<T: Scalar>(op: Labelled<T>) -> Res<Labelled<T>> {
    let mut labels: Vec<char> = vec![];
    let mut shape: Vec<usize> = vec![];
    for (&c, &d) in op.labels.iter().zip(op.array.shape()) {
        match labels.iter().position(|&l| l == c) {
            Some(p) if shape[p] != d => {
                return Err(format!("einsum label `{}` has sizes {} and {d} in one input", fmt_labels(&[c]), shape[p]));
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
    let source: Vec<usize> = op.labels.iter().map(|c| labels.iter().position(|l| l == c).expect("collected")).collect();
    let array = ArrayD::from_shape_fn(IxDyn(&shape), |idx| {
        let at: Vec<usize> = source.iter().map(|&p| idx[p]).collect();
        op.array[IxDyn(&at)]
    });
    Ok(Labelled { array, labels })
}

/// Sums over every axis whose label is not in `keep`.
fn sum_out<T: Scalar>(op: Labelled<T>, keep: &BTreeSet<char>) -> Labelled<T> {
    let Labelled { mut array, mut labels } = op;
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
fn contract_pair<T: Scalar>(x: &Labelled<T>, y: &Labelled<T>, keep: &BTreeSet<char>) -> Labelled<T> {
    let needed_by = |other: &Labelled<T>| -> BTreeSet<char> { keep.iter().chain(&other.labels).copied().collect() };
    let x = sum_out(Labelled { array: x.array.clone(), labels: x.labels.clone() }, &needed_by(y));
    let y = sum_out(Labelled { array: y.array.clone(), labels: y.labels.clone() }, &needed_by(&x));
    let in_y = |c: &char| y.labels.contains(c);
    let batch: Vec<char> = x.labels.iter().copied().filter(|c| in_y(c) && keep.contains(c)).collect();
    let inner: Vec<char> = x.labels.iter().copied().filter(|c| in_y(c) && !keep.contains(c)).collect();
    let rows: Vec<char> = x.labels.iter().copied().filter(|c| !in_y(c)).collect();
    let cols: Vec<char> = y.labels.iter().copied().filter(|c| !x.labels.contains(c)).collect();

    // Views `[batch.., rows, inner]` and `[batch.., inner, cols]` (copied only when the grouped
    // axes cannot be merged in place).
    let size_of = |op: &Labelled<T>, c: char| op.array.shape()[op.labels.iter().position(|&l| l == c).expect("own label")];
    let grouped = |op: &Labelled<T>, first: &[char], second: &[char]| {
        let order: Vec<char> = batch.iter().chain(first).chain(second).copied().collect();
        let perm: Vec<usize> = order.iter().map(|c| op.labels.iter().position(|l| l == c).expect("own label")).collect();
        let mut shape: Vec<usize> = batch.iter().map(|&c| size_of(op, c)).collect();
        shape.push(first.iter().map(|&c| size_of(op, c)).product());
        shape.push(second.iter().map(|&c| size_of(op, c)).product());
        (perm, shape)
    };
    let ((x_perm, x_shape), (y_perm, y_shape)) = (grouped(&x, &rows, &inner), grouped(&y, &inner, &cols));
    let (xv, yv) = (x.array.view().permuted_axes(x_perm), y.array.view().permuted_axes(y_perm));
    let xm = xv.to_shape(x_shape).expect("element count is unchanged");
    let ym = yv.to_shape(y_shape).expect("element count is unchanged");
    let product = batched_matmul(xm.view(), ym.view());

    let shape: Vec<usize> = batch
        .iter()
        .map(|&c| size_of(&x, c))
        .chain(rows.iter().map(|&c| size_of(&x, c)))
        .chain(cols.iter().map(|&c| size_of(&y, c)))
        .collect();
    let array = product.into_shape_with_order(IxDyn(&shape)).expect("element count is unchanged");
    let labels = batch.iter().chain(&rows).chain(&cols).copied().collect();
    Labelled { array, labels }
}
include!("/tmp/kiln_nt/nt.rs");

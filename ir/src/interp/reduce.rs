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
        OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax | OpKind::ReduceMin => {
            reduce(op, x)?
        }
        OpKind::CumSum => cumsum(op, inputs)?,
        other => return Err(format!("{other} is not a reduction")),
    };
    Ok(vec![out])
}

/// A `Reduce*` op: the axes come from attribute `axes` through [`reduce_axes`].
fn reduce(op: &Op, x: &Tensor) -> Res<Tensor> {
    let rank = x.shape().len();
    let Some(axes) = reduce_axes(&op.attrs, rank)? else {
        return Ok(x.clone());
    };
    // `norm_axis` accepts axis 0 of a rank-0 tensor, which has no axis to reduce.
    let axes: Vec<usize> = axes.into_iter().filter(|&a| a < rank).collect();
    let keepdims = op.attrs.int("keepdims")? != 0;
    let dtype = x.dtype();
    let kind = op.kind;
    if dtype.is_float() {
        let a = x.to_f32_array();
        let y = match kind {
            OpKind::ReduceSum => reduce_lanes(&a, &axes, keepdims, |v| {
                v.iter().map(|&x| x as f64).sum::<f64>() as f32
            }),
            OpKind::ReduceMean => reduce_lanes(&a, &axes, keepdims, |v| {
                (v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64) as f32
            }),
            OpKind::ReduceMax => reduce_lanes(&a, &axes, keepdims, |v| {
                v.iter().fold(f32::NEG_INFINITY, |m, &x| {
                    if x.is_nan() || m.is_nan() {
                        f32::NAN
                    } else {
                        m.max(x)
                    }
                })
            }),
            _ => reduce_lanes(&a, &axes, keepdims, |v| {
                v.iter().fold(f32::INFINITY, |m, &x| {
                    if x.is_nan() || m.is_nan() {
                        f32::NAN
                    } else {
                        m.min(x)
                    }
                })
            }),
        };
        Ok(from_f32(dtype, y))
    } else if dtype.is_int()
        || dtype == DType::Bool && matches!(kind, OpKind::ReduceMax | OpKind::ReduceMin)
    {
        let (lowest, highest) = int_range(dtype);
        let a = x.to_i64_array();
        let y = match kind {
            OpKind::ReduceSum => reduce_lanes(&a, &axes, keepdims, |v| {
                v.iter().fold(0i64, |s, &x| s.wrapping_add(x))
            }),
            OpKind::ReduceMean => reduce_lanes(&a, &axes, keepdims, |v| {
                // Exact: the i128 sum cannot overflow, and `/` truncates toward zero.
                let sum: i128 = v.iter().map(|&x| x as i128).sum();
                if v.is_empty() {
                    0
                } else {
                    (sum / v.len() as i128) as i64
                }
            }),
            OpKind::ReduceMax => reduce_lanes(&a, &axes, keepdims, |v| {
                v.iter().copied().fold(lowest, i64::max)
            }),
            _ => reduce_lanes(&a, &axes, keepdims, |v| {
                v.iter().copied().fold(highest, i64::min)
            }),
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
fn reduce_lanes<T: Clone, U>(
    a: &ArrayD<T>,
    axes: &[usize],
    keepdims: bool,
    f: impl Fn(&[T]) -> U,
) -> ArrayD<U> {
    let shape = a.shape();
    let kept: Vec<usize> = (0..shape.len()).filter(|i| !axes.contains(i)).collect();
    // Move the reduced axes last, so that each lane is a contiguous run of the copied elements.
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let data: Vec<T> = a.view().permuted_axes(perm).iter().cloned().collect();
    let lane: usize = axes.iter().map(|&i| shape[i]).product();
    let lanes: usize = kept.iter().map(|&i| shape[i]).product();
    let out: Vec<U> = (0..lanes)
        .map(|l| f(&data[l * lane..(l + 1) * lane]))
        .collect();
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
        return Err(format!(
            "the axis input is {} but must be an integer",
            axis_t.dtype()
        ));
    }
    let axis = match axis_t.to_i64_vec()[..] {
        [a] => a,
        _ => {
            return Err(format!(
                "the axis input must have one element, got shape {:?}",
                axis_t.shape()
            ))
        }
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
fn cumsum_lanes<T: Copy + Default>(
    a: &mut ArrayD<T>,
    axis: usize,
    exclusive: bool,
    reverse: bool,
    add: impl Fn(T, T) -> T,
) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attr, Attrs};

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        crate::interp::test_values(n, seed, -1.0, 1.0)
    }

    fn attrs(list: &[(&str, Attr)]) -> Attrs {
        let mut a = Attrs::default();
        for (k, v) in list {
            a.set(k, v.clone());
        }
        a
    }

    fn axes_attrs(axes: &[i64], keepdims: bool) -> Attrs {
        attrs(&[
            ("axes", Attr::Ints(axes.to_vec())),
            ("keepdims", Attr::Int(keepdims as i64)),
        ])
    }

    /// Runs one op and checks its output against shape inference.
    fn run(kind: OpKind, a: Attrs, inputs: &[Option<&Tensor>]) -> Res<Tensor> {
        crate::interp::eval_checked(&Op::new(kind, a), inputs)
    }

    fn run1(kind: OpKind, a: Attrs, x: &Tensor) -> Tensor {
        run(kind, a, &[Some(x)]).unwrap()
    }

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape, v.to_vec()).unwrap()
    }

    fn assert_close(got: &Tensor, shape: &[usize], want: &[f32]) {
        assert_eq!(got.shape(), shape);
        let got = got.to_f32_array();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let ok = (g - w).abs() <= 1e-5 * (1.0 + w.abs()) || g.is_nan() && w.is_nan() || g == w;
            assert!(ok, "element {i}: got {g}, want {w}");
        }
    }

    /// The ONNX documentation's example data, shape [3, 2, 2].
    fn example() -> Tensor {
        f32s(
            &[3, 2, 2],
            &[5., 1., 20., 2., 30., 1., 40., 2., 55., 1., 60., 2.],
        )
    }

    #[test]
    fn reductions_match_numpy_on_the_onnx_example() {
        use OpKind::*;
        // (op, over axis 1 with keepdims, over axes [0, 2] without, over everything); from numpy.
        let cases: [(OpKind, [f32; 6], [f32; 2], f32); 4] = [
            (ReduceSum, [25., 3., 70., 3., 115., 3.], [93., 126.], 219.),
            (
                ReduceMean,
                [12.5, 1.5, 35., 1.5, 57.5, 1.5],
                [15.5, 21.],
                18.25,
            ),
            (ReduceMax, [20., 2., 40., 2., 60., 2.], [55., 60.], 60.),
            (ReduceMin, [5., 1., 30., 1., 55., 1.], [1., 2.], 1.),
        ];
        for (kind, axis1, axes02, all) in cases {
            assert_close(
                &run1(kind, axes_attrs(&[1], true), &example()),
                &[3, 1, 2],
                &axis1,
            );
            assert_close(
                &run1(kind, axes_attrs(&[-3, 2], false), &example()),
                &[2],
                &axes02,
            );
            assert_close(
                &run1(kind, Attrs::default(), &example()),
                &[1, 1, 1],
                &[all],
            );
            assert_close(
                &run1(kind, attrs(&[("keepdims", Attr::Int(0))]), &example()),
                &[],
                &[all],
            );
        }
    }

    /// A reduction by the definition: every output element folds the input elements whose
    /// indices agree with it on the kept axes.
    fn naive_reduce(kind: OpKind, x: &ArrayD<f64>, axes: &[usize], keepdims: bool) -> ArrayD<f64> {
        let kept_shape: Vec<usize> = (0..x.ndim())
            .map(|i| if axes.contains(&i) { 1 } else { x.shape()[i] })
            .collect();
        let y = ArrayD::from_shape_fn(IxDyn(&kept_shape), |o| {
            let lane: Vec<f64> = x
                .indexed_iter()
                .filter(|(i, _)| (0..x.ndim()).all(|d| axes.contains(&d) || i[d] == o[d]))
                .map(|(_, &v)| v)
                .collect();
            match kind {
                OpKind::ReduceSum => lane.iter().sum(),
                OpKind::ReduceMean => lane.iter().sum::<f64>() / lane.len() as f64,
                OpKind::ReduceMax => lane.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                _ => lane.iter().copied().fold(f64::INFINITY, f64::min),
            }
        });
        if keepdims {
            return y;
        }
        let shape: Vec<usize> = (0..x.ndim())
            .filter(|i| !axes.contains(i))
            .map(|i| x.shape()[i])
            .collect();
        y.into_shape_with_order(IxDyn(&shape)).unwrap()
    }

    #[test]
    fn every_axis_subset_matches_naive() {
        let shape = [2, 3, 4];
        let floats = Tensor::from_vec(&shape, values(24, 7)).unwrap();
        let ints = Tensor::from_vec(
            &shape,
            values(24, 8).iter().map(|v| (v * 1000.0) as i64).collect(),
        )
        .unwrap();
        // Small enough that u8 sums do not wrap.
        let bytes = Tensor::from_vec(
            &shape,
            values(24, 9)
                .iter()
                .map(|v| ((v + 1.0) * 5.0) as u8)
                .collect(),
        )
        .unwrap();
        for kind in [
            OpKind::ReduceSum,
            OpKind::ReduceMean,
            OpKind::ReduceMax,
            OpKind::ReduceMin,
        ] {
            for mask in 0..8usize {
                let axes: Vec<usize> = (0..3).filter(|i| mask & (1 << i) != 0).collect();
                // Absent axes mean all axes; negative axes count from the end.
                let attr_axes: Vec<i64> = axes
                    .iter()
                    .map(|&a| a as i64 - if a % 2 == 0 { 3 } else { 0 })
                    .collect();
                let reduced = if axes.is_empty() {
                    vec![0, 1, 2]
                } else {
                    axes.clone()
                };
                for keepdims in [false, true] {
                    for x in [&floats, &ints, &bytes] {
                        let a = if axes.is_empty() {
                            attrs(&[("keepdims", Attr::Int(keepdims as i64))])
                        } else {
                            axes_attrs(&attr_axes, keepdims)
                        };
                        let y = run1(kind, a, x);
                        assert_eq!(y.dtype(), x.dtype());
                        let want = naive_reduce(kind, &x.to_f64_array(), &reduced, keepdims);
                        // Integer means truncate toward zero.
                        let want = if x.dtype().is_int() {
                            want.mapv(f64::trunc)
                        } else {
                            want
                        };
                        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
                        let shape = naive_reduce(kind, &x.to_f64_array(), &reduced, keepdims)
                            .shape()
                            .to_vec();
                        assert_close(&y, &shape, &want);
                    }
                }
            }
        }
    }

    #[test]
    fn axes_attribute_edge_cases() {
        let x = example();
        // noop_with_empty_axes: no axes means no reduction.
        let noop = attrs(&[("noop_with_empty_axes", Attr::Int(1))]);
        assert_eq!(run1(OpKind::ReduceSum, noop.clone(), &x), x);
        let mut empty = noop;
        empty.set("axes", Attr::Ints(vec![]));
        assert_eq!(run1(OpKind::ReduceMax, empty, &x), x);
        // An empty axes list without it means all axes; repeated axes count once.
        assert_close(
            &run1(OpKind::ReduceSum, axes_attrs(&[], false), &x),
            &[],
            &[219.],
        );
        assert_close(
            &run1(OpKind::ReduceSum, axes_attrs(&[1, -2], false), &x),
            &[3, 2],
            &[25., 3., 70., 3., 115., 3.],
        );
        // A rank-0 input reduces to itself.
        assert_close(
            &run1(
                OpKind::ReduceMean,
                Attrs::default(),
                &Tensor::scalar(2.5f32),
            ),
            &[],
            &[2.5],
        );
        let err = eval(
            &Op::new(OpKind::ReduceSum, axes_attrs(&[3], true)),
            &[Some(&x)],
        )
        .unwrap_err();
        assert!(err.contains("out of range"), "{err}");
    }

    #[test]
    fn empty_sets_reduce_to_identities() {
        let x = Tensor::zeros(DType::F32, &[2, 0, 3]);
        let over = |kind, x: &Tensor| run1(kind, axes_attrs(&[1], true), x);
        let inf = f32::INFINITY;
        assert_close(&over(OpKind::ReduceSum, &x), &[2, 1, 3], &[0.; 6]);
        assert_close(&over(OpKind::ReduceMean, &x), &[2, 1, 3], &[f32::NAN; 6]);
        assert_close(&over(OpKind::ReduceMax, &x), &[2, 1, 3], &[-inf; 6]);
        assert_close(&over(OpKind::ReduceMin, &x), &[2, 1, 3], &[inf; 6]);
        let i8s = x.cast(DType::I8);
        assert_eq!(
            over(OpKind::ReduceMax, &i8s),
            Tensor::from_vec(&[2, 1, 3], vec![i8::MIN; 6]).unwrap()
        );
        assert_eq!(
            over(OpKind::ReduceMin, &i8s),
            Tensor::from_vec(&[2, 1, 3], vec![i8::MAX; 6]).unwrap()
        );
        assert_eq!(
            over(OpKind::ReduceMax, &x.cast(DType::U8)),
            Tensor::from_vec(&[2, 1, 3], vec![0u8; 6]).unwrap()
        );
        assert_eq!(
            over(OpKind::ReduceSum, &x.cast(DType::I64)),
            Tensor::from_vec(&[2, 1, 3], vec![0i64; 6]).unwrap()
        );
        let bools = x.cast(DType::Bool);
        assert_eq!(
            over(OpKind::ReduceMax, &bools),
            Tensor::from_vec(&[2, 1, 3], vec![false; 6]).unwrap()
        );
        assert_eq!(
            over(OpKind::ReduceMin, &bools),
            Tensor::from_vec(&[2, 1, 3], vec![true; 6]).unwrap()
        );
        // Reducing a non-empty axis of an empty tensor gives an empty result.
        assert_eq!(
            run1(OpKind::ReduceSum, axes_attrs(&[2], true), &x).shape(),
            &[2, 0, 1]
        );
    }

    #[test]
    fn dtypes_nan_and_integer_semantics() {
        // Narrow floats are reduced in f32 and rounded back.
        let h = example().cast(DType::F16);
        let y = run1(OpKind::ReduceMean, axes_attrs(&[0, 2], false), &h);
        assert_eq!(y, f32s(&[2], &[15.5, 21.]).cast(DType::F16));
        let y = run1(
            OpKind::ReduceSum,
            Attrs::default(),
            &example().cast(DType::BF16),
        );
        assert_eq!(y, f32s(&[1, 1, 1], &[219.]).cast(DType::BF16));
        // NaN propagates through max and min.
        let x = f32s(&[3], &[1., f32::NAN, 3.]);
        assert!(run1(OpKind::ReduceMax, Attrs::default(), &x).to_f32_array()[[0]].is_nan());
        assert!(run1(OpKind::ReduceMin, Attrs::default(), &x).to_f32_array()[[0]].is_nan());
        // Integer means truncate toward zero; sums wrap to the dtype.
        let i = Tensor::from_vec(&[2], vec![-3i32, -4]).unwrap();
        assert_eq!(
            run1(OpKind::ReduceMean, Attrs::default(), &i),
            Tensor::from_vec(&[1], vec![-3i32]).unwrap()
        );
        let u = Tensor::from_vec(&[2], vec![200u8, 100]).unwrap();
        assert_eq!(
            run1(OpKind::ReduceSum, Attrs::default(), &u),
            Tensor::from_vec(&[1], vec![44u8]).unwrap()
        );
        assert_eq!(
            run1(OpKind::ReduceMean, Attrs::default(), &u),
            Tensor::from_vec(&[1], vec![150u8]).unwrap()
        );
        let big = Tensor::from_vec(&[2], vec![i64::MAX, i64::MAX - 2]).unwrap();
        assert_eq!(
            run1(OpKind::ReduceMean, Attrs::default(), &big),
            Tensor::from_vec(&[1], vec![i64::MAX - 1]).unwrap()
        );
        // Bool max / min are any / all; bool sums are rejected.
        let b = Tensor::from_vec(&[2, 2], vec![true, false, false, false]).unwrap();
        let any = run1(OpKind::ReduceMax, axes_attrs(&[1], false), &b);
        assert_eq!(any, Tensor::from_vec(&[2], vec![true, false]).unwrap());
        let all = run1(OpKind::ReduceMin, axes_attrs(&[0], false), &b);
        assert_eq!(all, Tensor::from_vec(&[2], vec![false, false]).unwrap());
        assert!(eval(&Op::plain(OpKind::ReduceSum), &[Some(&b)])
            .unwrap_err()
            .contains("bool"));
    }

    fn cumsum(x: &Tensor, axis: &Tensor, exclusive: bool, reverse: bool) -> Res<Tensor> {
        let a = attrs(&[
            ("exclusive", Attr::Int(exclusive as i64)),
            ("reverse", Attr::Int(reverse as i64)),
        ]);
        run(OpKind::CumSum, a, &[Some(x), Some(axis)])
    }

    #[test]
    fn cumsum_matches_the_onnx_examples() {
        let x = f32s(&[5], &[1., 2., 3., 4., 5.]);
        let zero = Tensor::scalar(0i32);
        assert_close(
            &cumsum(&x, &zero, false, false).unwrap(),
            &[5],
            &[1., 3., 6., 10., 15.],
        );
        assert_close(
            &cumsum(&x, &zero, true, false).unwrap(),
            &[5],
            &[0., 1., 3., 6., 10.],
        );
        assert_close(
            &cumsum(&x, &zero, false, true).unwrap(),
            &[5],
            &[15., 14., 12., 9., 5.],
        );
        assert_close(
            &cumsum(&x, &zero, true, true).unwrap(),
            &[5],
            &[14., 12., 9., 5., 0.],
        );
        let m = f32s(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        assert_close(
            &cumsum(&m, &zero, false, false).unwrap(),
            &[2, 3],
            &[1., 2., 3., 5., 7., 9.],
        );
        let rows = [1., 3., 6., 4., 9., 15.];
        assert_close(
            &cumsum(&m, &Tensor::scalar(1i64), false, false).unwrap(),
            &[2, 3],
            &rows,
        );
        assert_close(
            &cumsum(
                &m,
                &Tensor::from_vec(&[1], vec![-1i32]).unwrap(),
                false,
                false,
            )
            .unwrap(),
            &[2, 3],
            &rows,
        );
        let ints = Tensor::from_vec(&[5], vec![1i32, 2, 3, 4, 5]).unwrap();
        assert_eq!(
            cumsum(&ints, &zero, true, false).unwrap(),
            Tensor::from_vec(&[5], vec![0i32, 1, 3, 6, 10]).unwrap()
        );
        let y = cumsum(&m.cast(DType::F16), &zero, false, false).unwrap();
        assert_eq!(y, f32s(&[2, 3], &[1., 2., 3., 5., 7., 9.]).cast(DType::F16));
        let u = Tensor::from_vec(&[2], vec![200u8, 100]).unwrap();
        assert_eq!(
            cumsum(&u, &zero, false, false).unwrap(),
            Tensor::from_vec(&[2], vec![200u8, 44]).unwrap()
        );
    }

    #[test]
    fn cumsum_every_axis_matches_naive() {
        let shape = [3, 4, 5];
        let x = Tensor::from_vec(&shape, values(60, 3)).unwrap();
        let xs = x.to_f64_array();
        for axis in 0..3 {
            for exclusive in [false, true] {
                for reverse in [false, true] {
                    let y = cumsum(&x, &Tensor::scalar(axis as i64), exclusive, reverse).unwrap();
                    let want = ArrayD::from_shape_fn(IxDyn(&shape), |i| {
                        let mut j = i.clone();
                        (0..shape[axis])
                            .filter(|&k| match (reverse, exclusive) {
                                (false, false) => k <= i[axis],
                                (false, true) => k < i[axis],
                                (true, false) => k >= i[axis],
                                (true, true) => k > i[axis],
                            })
                            .map(|k| {
                                j[axis] = k;
                                xs[&j]
                            })
                            .sum::<f64>() as f32
                    });
                    assert_close(&y, &shape, want.as_slice().unwrap());
                }
            }
        }
    }

    #[test]
    fn cumsum_rejects_bad_inputs() {
        let x = f32s(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let c = |x: &Tensor, axis: &Tensor| {
            eval(&Op::plain(OpKind::CumSum), &[Some(x), Some(axis)]).unwrap_err()
        };
        assert!(c(&x, &Tensor::scalar(2i64)).contains("out of range"));
        assert!(c(&x, &Tensor::scalar(-3i64)).contains("out of range"));
        assert!(c(&x, &Tensor::scalar(0.0f32)).contains("integer"));
        assert!(c(&x, &Tensor::from_vec(&[2], vec![0i64, 1]).unwrap()).contains("one element"));
        assert!(c(&Tensor::scalar(1.0f32), &Tensor::scalar(0i64)).contains("rank"));
        assert!(c(&x.cast(DType::Bool), &Tensor::scalar(0i64)).contains("bool"));
        assert!(eval(&Op::plain(OpKind::CumSum), &[Some(&x)])
            .unwrap_err()
            .contains("missing"));
    }
}

//! Data movement and shape ops: transpose, reshapes, concat / split / slice, gathers, expand,
//! tile, triangle masks, and the ops that produce shapes and ranges.
//!
//! Where an op's output shape is a pure function of input shapes and small integer inputs,
//! it is computed by the shape inference in [`crate::infer`] so the two cannot disagree.

use super::elementwise::broadcast_shape;
use super::*;
use crate::graph::ValueType;
use crate::infer::{
    infer_op, norm_axis, scatter_axis, slice_bounds, slice_indices, transpose_perm,
};
use crate::tensor::Element;
use crate::{with_array, with_dtype, Dim};
use ndarray::{Axis, IxDyn};

pub(super) fn eval(op: &Op, inputs: &[Option<&Tensor>], symbols: &Bindings) -> Res<Vec<Tensor>> {
    use OpKind::*;
    let a = &op.attrs;
    let out = match op.kind {
        Reshape | Flatten | Squeeze | Unsqueeze => {
            let shape = inferred_shape(op, inputs)?;
            input(inputs, 0)?.reshape(&shape)?
        }
        Transpose => {
            let x = input(inputs, 0)?;
            let perm = transpose_perm(a, x.shape().len())?;
            crate::map_array!(x, v => v.view().permuted_axes(IxDyn(&perm)).as_standard_layout().into_owned())
        }
        Concat => concat(a.int("axis")?, inputs)?,
        Split => return split(op, inputs),
        Slice => slice(inputs)?,
        Gather => gather(a.int("axis")?, input(inputs, 0)?, input(inputs, 1)?)?,
        GatherElements => gather_elements(a.int("axis")?, input(inputs, 0)?, input(inputs, 1)?)?,
        GatherND => gather_nd(
            usize::try_from(a.int("batch_dims")?).map_err(|_| "batch_dims must be non-negative")?,
            input(inputs, 0)?,
            input(inputs, 1)?,
        )?,
        Expand => {
            let x = input(inputs, 0)?;
            let target = shape_values(input(inputs, 1)?)?;
            let shape = broadcast_shape(&[x.shape(), &target])?;
            check_size(&shape)?;
            let shape = IxDyn(&shape);
            crate::map_array!(x, v => v.broadcast(shape.clone()).expect("broadcast checked").to_owned())
        }
        TensorScatter => tensor_scatter(a, inputs)?,
        Tile => tile(input(inputs, 0)?, input(inputs, 1)?)?,
        Trilu => trilu(a.int("upper")? != 0, inputs)?,
        Shape | Size => {
            let x = input(inputs, 0)?;
            let ty = concrete_type(x);
            let sym = infer_op(op, &[Some(&ty)], 1)?.remove(0);
            let values: Vec<i64> = sym
                .sym
                .expect("Shape and Size infer their values")
                .iter()
                .map(|d| d.as_known().expect("concrete"))
                .collect();
            if op.kind == Size {
                Tensor::scalar(values[0])
            } else {
                Tensor::from_vec(&[values.len()], values)?
            }
        }
        ConstantOfShape => {
            let shape = shape_values(input(inputs, 0)?)?;
            check_size(&shape)?;
            let value = Tensor::from_data(a.tensor("value")?);
            if value.len() != 1 {
                return Err("value must have exactly one element".into());
            }
            crate::map_array!(&value, v => ArrayD::from_elem(IxDyn(&shape), *v.iter().next().expect("one element")))
        }
        Range => range(inputs)?,
        SymbolicDims => {
            let dims = a.dims("dims")?;
            let values: Vec<i64> = dims
                .iter()
                .map(|d| {
                    d.eval(symbols)
                        .ok_or_else(|| format!("dim `{d}` has an unbound symbol"))
                })
                .collect::<Res<_>>()?;
            let scalar = a.get("scalar").is_some() && a.int("scalar")? != 0;
            if scalar {
                Tensor::scalar(values[0])
            } else {
                Tensor::from_vec(&[values.len()], values)?
            }
        }
        _ => unreachable!("dispatched by eval_op"),
    };
    Ok(vec![out])
}

/// The static type of a concrete tensor, with its values when it is a small integer vector.
fn concrete_type(t: &Tensor) -> ValueType {
    let shape = t.shape().iter().map(|&d| Dim::from(d)).collect();
    let small_int = t.dtype().is_int()
        && t.shape().len() <= 1
        && t.len() <= crate::infer::MAX_SYMBOLIC_ELEMENTS;
    let sym = small_int.then(|| t.to_i64_vec().into_iter().map(Dim::known).collect());
    ValueType {
        dtype: t.dtype(),
        shape,
        sym,
    }
}

/// The concrete output shape of a shape-only op, computed by shape inference.
fn inferred_shape(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Vec<usize>> {
    let types: Vec<Option<ValueType>> = inputs.iter().map(|t| t.map(concrete_type)).collect();
    let refs: Vec<Option<&ValueType>> = types.iter().map(Option::as_ref).collect();
    let ty = infer_op(op, &refs, 1)?.remove(0);
    ty.concrete_shape()
        .ok_or_else(|| "could not resolve the output shape".to_string())
}

/// A shape given as a 1-D integer tensor; negative sizes are an error.
fn shape_values(t: &Tensor) -> Res<Vec<usize>> {
    if t.shape().len() != 1 {
        return Err(format!(
            "shape must be a 1-D tensor, got shape {:?}",
            t.shape()
        ));
    }
    t.to_i64_vec()
        .into_iter()
        .map(|v| usize::try_from(v).map_err(|_| format!("negative dim {v} in shape")))
        .collect()
}

fn all_of<'a, T: Element>(inputs: &[Option<&'a Tensor>]) -> Res<Vec<ndarray::ArrayViewD<'a, T>>> {
    (0..inputs.len())
        .map(|i| {
            let t = input(inputs, i)?;
            T::view(t)
                .map(|a| a.view())
                .ok_or_else(|| format!("input {i} is {} but input 0 is {}", t.dtype(), T::DTYPE))
        })
        .collect()
}

fn concat(axis: i64, inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let first = input(inputs, 0)?;
    let axis = norm_axis(axis, first.shape().len())?;
    with_dtype!(first.dtype(), T => {
        let views = all_of::<T>(inputs)?;
        ndarray::concatenate(Axis(axis), &views).map(T::wrap).map_err(|e| format!("cannot concatenate: {e}"))
    })
}

fn split(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let axis = norm_axis(op.attrs.int("axis")?, x.shape().len())?;
    let n = match op.attrs.opt_ints("split")? {
        Some(sizes) => sizes.len(),
        None => op.attrs.int("num_outputs")? as usize,
    };
    let types = infer_op(op, &[Some(&concrete_type(x))], n)?;
    let sizes: Vec<usize> = types
        .iter()
        .map(|t| t.concrete_shape().expect("concrete input")[axis])
        .collect();
    if sizes.iter().sum::<usize>() != x.shape()[axis] {
        return Err(format!(
            "split sizes {sizes:?} do not add up to dim {}",
            x.shape()[axis]
        ));
    }
    let mut start = 0;
    Ok(sizes
        .into_iter()
        .map(|s| {
            let part = with_array!(x, v => crate::tensor::Element::wrap(v.slice_axis(Axis(axis), (start..start + s).into()).to_owned()));
            start += s;
            part
        })
        .collect())
}

fn slice(inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let x = input(inputs, 0)?;
    let rank = x.shape().len();
    let starts = input(inputs, 1)?.to_i64_vec();
    let ends = input(inputs, 2)?.to_i64_vec();
    let axes = opt_input(inputs, 3)
        .map(Tensor::to_i64_vec)
        .unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = opt_input(inputs, 4)
        .map(Tensor::to_i64_vec)
        .unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have the same length".into());
    }
    if rank == 0 {
        return Err("cannot slice a scalar".into());
    }
    let mut out = x.clone();
    for k in 0..starts.len() {
        let ax = norm_axis(axes[k], rank)?;
        if steps[k] == 0 {
            return Err("slice step cannot be 0".into());
        }
        let dim = x.shape()[ax] as i64;
        let (lo, hi) = slice_bounds(dim, starts[k], ends[k], steps[k]);
        let idx = slice_indices(lo, hi, steps[k]);
        out = crate::map_array!(&out, v => v.select(Axis(ax), &idx));
    }
    Ok(out)
}

/// Integer indices normalised against `dim` (negative counts from the end), bounds-checked.
fn indices(t: &Tensor, dim: usize) -> Res<Vec<usize>> {
    if !t.dtype().is_int() {
        return Err(format!("indices must be integers, got {}", t.dtype()));
    }
    t.to_i64_vec()
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            if (0..dim as i64).contains(&j) {
                Ok(j as usize)
            } else {
                Err(format!(
                    "index {i} is out of bounds for a dim of size {dim}"
                ))
            }
        })
        .collect()
}

fn gather(axis: i64, x: &Tensor, idx: &Tensor) -> Res<Tensor> {
    let axis = norm_axis(axis, x.shape().len())?;
    let flat = indices(idx, x.shape()[axis])?;
    let shape: Vec<usize> = x.shape()[..axis]
        .iter()
        .chain(idx.shape())
        .chain(&x.shape()[axis + 1..])
        .copied()
        .collect();
    crate::map_array!(x, v => v.select(Axis(axis), &flat)).reshape(&shape)
}

fn gather_elements(axis: i64, x: &Tensor, idx: &Tensor) -> Res<Tensor> {
    let rank = x.shape().len();
    let axis = norm_axis(axis, rank)?;
    if idx.shape().len() != rank {
        return Err("indices must have the same rank as data".into());
    }
    let flat = indices(idx, x.shape()[axis])?;
    let ishape = idx.shape().to_vec();
    with_dtype!(x.dtype(), T => {
        let data = T::view(x).expect("dtype matched");
        let mut out = Vec::with_capacity(flat.len());
        let mut pos = vec![0usize; rank];
        for &i in &flat {
            let mut at = pos.clone();
            at[axis] = i;
            out.push(*data.get(IxDyn(&at)).ok_or_else(|| format!("index {at:?} is outside data {:?}", x.shape()))?);
            // Advance the row-major position over the indices' shape.
            for d in (0..rank).rev() {
                pos[d] += 1;
                if pos[d] < ishape[d] {
                    break;
                }
                pos[d] = 0;
            }
        }
        Tensor::from_vec(&ishape, out)
    })
}

/// ONNX TensorScatter: the cache with each batch item's update written along the sequence
/// axis from its write index (modulo the axis in `circular` mode). In `linear` mode an index
/// whose update does not fit the cache is an error, never a write outside it.
fn tensor_scatter(a: &crate::Attrs, inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let (cache, update) = (input(inputs, 0)?, input(inputs, 1)?);
    let (cs, us) = (cache.shape(), update.shape());
    let axis = scatter_axis(a, cs.len())?;
    let fits = us.len() == cs.len() && (0..cs.len()).all(|i| i == axis || us[i] == cs[i]);
    if cache.dtype() != update.dtype() || !fits || us[axis] > cs[axis] {
        return Err(format!(
            "update {}{us:?} does not fit the cache {}{cs:?} along axis {axis}",
            update.dtype(),
            cache.dtype()
        ));
    }
    let (batch, capacity, rows) = (cs[0], cs[axis], us[axis]);
    let starts: Vec<i64> = match opt_input(inputs, 2) {
        Some(w) if w.dtype().is_int() && w.shape() == [batch] => w.to_i64_vec(),
        Some(w) => {
            return Err(format!(
                "write_indices must be an integer vector of length {batch}, got {:?}",
                w.shape()
            ))
        }
        None => vec![0; batch],
    };
    let circular = match a.str("mode")? {
        "linear" => false,
        "circular" => true,
        other => return Err(format!("mode `{other}` is not `linear` or `circular`")),
    };
    for (b, &start) in starts.iter().enumerate() {
        let end = start.checked_add(rows as i64);
        if !circular && (start < 0 || end.is_none_or(|e| e > capacity as i64)) {
            return Err(format!(
                "write_indices[{b}] is {start}: {rows} rows from it do not fit a cache of {capacity}"
            ));
        }
        if circular && capacity == 0 && rows > 0 {
            return Err("a circular write into a cache of length 0".into());
        }
    }
    let inner: usize = cs[axis + 1..].iter().product();
    let outer: usize = cs[1..axis].iter().product();
    with_dtype!(cache.dtype(), T => {
        let mut out: Vec<T> = T::view(cache).expect("dtype matched").iter().copied().collect();
        let new = T::view(update).expect("dtype matched");
        let new: Vec<T> = new.iter().copied().collect();
        for (b, &start) in starts.iter().enumerate() {
            for o in 0..outer {
                let item = b * outer + o;
                for r in 0..rows {
                    let at = (start + r as i64).rem_euclid(capacity.max(1) as i64) as usize;
                    let (src, dst) = ((item * rows + r) * inner, (item * capacity + at) * inner);
                    out[dst..dst + inner].copy_from_slice(&new[src..src + inner]);
                }
            }
        }
        Tensor::from_vec(cs, out)
    })
}

fn gather_nd(batch_dims: usize, x: &Tensor, idx: &Tensor) -> Res<Tensor> {
    let (xs, is) = (x.shape(), idx.shape());
    let last = *is.last().ok_or("indices must have rank at least 1")?;
    if batch_dims
        .checked_add(last)
        .is_none_or(|end| end > xs.len())
        || batch_dims >= is.len()
        || xs[..batch_dims] != is[..batch_dims]
    {
        return Err(format!(
            "indices {is:?} do not fit data {xs:?} with batch_dims {batch_dims}"
        ));
    }
    let slice_shape = &xs[batch_dims + last..];
    let slice_len: usize = slice_shape.iter().product();
    let batch: usize = xs[..batch_dims].iter().product();
    let per_batch_x: usize = xs[batch_dims..].iter().product();
    let tuples_per_batch: usize = is[batch_dims..is.len() - 1].iter().product();
    let ivals = idx.to_i64_vec();
    let out_shape: Vec<usize> = is[..is.len() - 1]
        .iter()
        .chain(slice_shape)
        .copied()
        .collect();
    with_dtype!(x.dtype(), T => {
        let data: Vec<T> = T::view(x).expect("dtype matched").iter().copied().collect();
        let mut out = Vec::with_capacity(batch * tuples_per_batch * slice_len);
        for b in 0..batch {
            for t in 0..tuples_per_batch {
                let tuple = &ivals[(b * tuples_per_batch + t) * last..][..last];
                let mut offset = 0usize;
                for (k, &i) in tuple.iter().enumerate() {
                    let dim = xs[batch_dims + k];
                    let j = if i < 0 { i + dim as i64 } else { i };
                    if !(0..dim as i64).contains(&j) {
                        return Err(format!("index {i} is out of bounds for a dim of size {dim}"));
                    }
                    offset = offset * dim + j as usize;
                }
                let start = b * per_batch_x + offset * slice_len;
                out.extend_from_slice(&data[start..start + slice_len]);
            }
        }
        Tensor::from_vec(&out_shape, out)
    })
}

fn tile(x: &Tensor, repeats: &Tensor) -> Res<Tensor> {
    let reps = repeats.to_i64_vec();
    if reps.len() != x.shape().len() || reps.iter().any(|&r| r < 0) {
        return Err(format!("repeats {reps:?} do not fit shape {:?}", x.shape()));
    }
    let tiled: Vec<usize> = x
        .shape()
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.saturating_mul(r as usize))
        .collect();
    check_size(&tiled)?;
    let mut out = x.clone();
    for (ax, &r) in reps.iter().enumerate() {
        let d = x.shape()[ax];
        let idx: Vec<usize> = (0..r as usize).flat_map(|_| 0..d).collect();
        out = crate::map_array!(&out, v => v.select(Axis(ax), &idx));
    }
    Ok(out)
}

fn trilu(upper: bool, inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let x = input(inputs, 0)?;
    let k = opt_input(inputs, 1)
        .map(|t| t.to_i64_vec().first().copied().unwrap_or(0))
        .unwrap_or(0);
    let rank = x.shape().len();
    if rank < 2 {
        return Err("Trilu needs rank at least 2".into());
    }
    Ok(crate::map_array!(x, v => {
        let mut o = v.clone();
        for (pos, e) in o.indexed_iter_mut() {
            let (i, j) = (pos[rank - 2] as i64, pos[rank - 1] as i64);
            let keep = if upper { j - i >= k } else { j - i <= k };
            if !keep {
                *e = Default::default();
            }
        }
        o
    }))
}

fn range(inputs: &[Option<&Tensor>]) -> Res<Tensor> {
    let (s, l, d) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
    for t in [s, l, d] {
        if t.len() != 1 {
            return Err("start, limit and delta must be scalars".into());
        }
    }
    let dtype = s.dtype();
    if dtype.is_int() {
        let (s, l, d) = (s.to_i64_vec()[0], l.to_i64_vec()[0], d.to_i64_vec()[0]);
        if d == 0 {
            return Err("delta cannot be 0".into());
        }
        let n = ((l as f64 - s as f64) / d as f64).ceil().max(0.0);
        check_size(&[n.min(usize::MAX as f64) as usize])?;
        let n = n as usize;
        let v: Vec<i64> = (0..n as i128)
            .map(|i| (s as i128 + i * d as i128) as i64)
            .collect();
        return Ok(Tensor::from_vec(&[n], v)?.cast(dtype));
    }
    let (s, l, d) = (
        s.to_f64_array()[[]],
        l.to_f64_array()[[]],
        d.to_f64_array()[[]],
    );
    if d == 0.0 {
        return Err("delta cannot be 0".into());
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if !n.is_finite() {
        return Err("the range is infinite".into());
    }
    check_size(&[n.min(usize::MAX as f64) as usize])?;
    let n = n as usize;
    let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
    Ok(Tensor::from_f64_array(
        dtype,
        ArrayD::from_shape_vec(IxDyn(&[n]), v).expect("length n"),
    ))
}

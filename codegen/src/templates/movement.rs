//! Data-movement templates: gather (embedding lookup), transpose, concat, split, slice,
//! expand (broadcast) and the in-place cache write of `TensorScatter`.
//! Each moves elements of its dtype between dense row-major buffers; contiguous runs of 4-byte
//! elements (f32, i32) are copied as f32 vectors of the schedule's `lanes` (`unroll` per
//! iteration) with a scalar tail, other dtypes one element at a time, a transpose
//! that moves the last axis goes by square tiles of `tile` elements, and shapes may hold
//! symbolic dims (runtime sizes).

use super::elementwise::{
    add, bind, check_dims, copy_run, finish, mul, nest, product, row_major_offset, sub, sum,
    vector_params, vector_run, Vectors,
};
use super::Sizes;
use super::{Arg, Built};
use crate::kir::{Index, Stmt};
use crate::schedule::{Param, Schedule, Space};
use kiln_ir::infer::{norm_axis, slice_bounds};
use kiln_ir::{DType, Dim};

/// The parameters of the movement templates: how contiguous runs are vectorised
/// (`movement.lanes`, `movement.unroll`) and the side of a transpose's tiles
/// (`movement.tile`).
///
/// ```
/// use kiln_codegen::templates::movement;
/// use kiln_codegen::Schedule;
/// let s = movement::space().resolve(&Schedule::default()).unwrap();
/// assert_eq!(s.value("tile"), 16);
/// assert!(movement::space().resolve(&Schedule::default().with("tile", 5)).is_err());
/// ```
pub fn space() -> Space {
    let mut params = vector_params();
    params.push(Param {
        name: "tile",
        doc: "side of the square tiles a transpose that moves the last axis copies by",
        values: |_| vec![4, 8, 16, 32, 64],
        default: |_| 16,
    });
    Space {
        template: "movement",
        version: 1,
        params,
    }
}

/// A kernel for `Gather` along `axis` of f32 data (`data_shape`) by i64 indices
/// (`indices_shape`, any rank): output `data[..axis] ++ indices ++ data[axis + 1..]`.
/// Negative indices count from the end as in ONNX; indices outside `[-n, n)` are clamped into
/// it so the kernel never reads outside the data (the runtime validates token ids separately,
/// as the interpreter rejects them).
///
/// Buffers: data (group input 0; a constant table, such as an embedding, is bound as it is
/// stored), indices (group input 1, i64), output.
pub fn gather(
    name: &str,
    data_shape: &[Dim],
    indices_shape: &[Dim],
    axis: i64,
    dtype: DType,
    schedule: &Schedule,
) -> Result<Built, String> {
    let run = gather_run(schedule, dtype, data_shape, indices_shape)?;
    let axis = norm_axis(axis, data_shape.len())?;
    let n = &data_shape[axis];
    nonempty(std::slice::from_ref(n))?;
    let outer = [product(&data_shape[..axis]), product(indices_shape)];
    let inner = product(&data_shape[axis + 1..]);
    let mut sizes = Sizes::default();
    let (body, parallel) = nest(&mut sizes, &outer, |sizes, coords, depth| {
        let (row, index) = (&coords[0], &coords[1]);
        let (n, len) = (sizes.index(n), sizes.index(&inner));
        let picked = wrap(Index::load(1, index.clone()), &n);
        let src = mul(add(mul(row.clone(), n), picked), len.clone());
        let all = [outer[0].clone(), outer[1].clone(), inner.clone()];
        let dst = row_major_offset(sizes, &all, coords);
        let copy = copy_run(depth + 1, (2, &dst), (0, &Index::Loop(depth)), &len, run)?;
        Ok(vec![bind(src, copy)])
    })?;
    let args = vec![Arg::Input(0), Arg::Input(1), Arg::Output(0)];
    Ok(finish(name, args, vec![], body, sizes, parallel))
}

/// The copies of a gather of `dtype` elements as `schedule` asks, once both shapes' dims are
/// known to be bound.
fn gather_run(
    schedule: &Schedule,
    dtype: DType,
    data_shape: &[Dim],
    indices_shape: &[Dim],
) -> Result<Vectors, String> {
    check_dims(data_shape)?;
    check_dims(indices_shape)?;
    Ok(Vectors::of(&space().resolve(schedule)?).moving(dtype))
}

/// Errors if a gathered axis is statically empty (no index is valid on it).
fn nonempty(axes: &[Dim]) -> Result<(), String> {
    match axes.iter().any(|d| d.is(0)) {
        true => Err("cannot gather from an empty axis".into()),
        false => Ok(()),
    }
}

/// A kernel for `GatherElements` along `axis`: the output has the indices' shape (same rank
/// as the data, each dim at most the data's) and takes `data[.., indices[p], ..]` at each
/// position `p`, the index replacing the coordinate along `axis`. Indices are wrapped and
/// clamped as [`gather`]'s are; the runtime checks them first.
///
/// Buffers: data (group input 0), indices (group input 1, i64), output.
pub fn gather_elements(
    name: &str,
    data_shape: &[Dim],
    indices_shape: &[Dim],
    axis: i64,
    dtype: DType,
    schedule: &Schedule,
) -> Result<Built, String> {
    let run = gather_run(schedule, dtype, data_shape, indices_shape)?;
    let rank = data_shape.len();
    if indices_shape.len() != rank || rank == 0 {
        return Err(format!(
            "indices {indices_shape:?} must have the rank of data {data_shape:?} (at least 1)"
        ));
    }
    let axis = norm_axis(axis, rank)?;
    nonempty(&data_shape[axis..=axis])?;
    let (outer, last) = indices_shape.split_at(rank - 1);
    let mut sizes = Sizes::default();
    let (body, parallel) = nest(&mut sizes, outer, |sizes, coords, depth| {
        let j = Index::Loop(depth);
        let mut at: Vec<Index> = coords.to_vec();
        at.push(j.clone());
        let dst = add(row_major_offset(sizes, indices_shape, coords), j);
        let n = sizes.index(&data_shape[axis]);
        at[axis] = wrap(Index::load(1, dst.clone()), &n);
        let src = sum(at
            .iter()
            .enumerate()
            .map(|(a, c)| mul(c.clone(), sizes.product(&data_shape[a + 1..]))));
        let copy = run.copy((2, dst), (0, src), 1);
        Ok(vec![Stmt::for_range(
            Index::Const(0),
            sizes.index(&last[0]),
            vec![copy],
        )])
    })?;
    let args = vec![Arg::Input(0), Arg::Input(1), Arg::Output(0)];
    Ok(finish(name, args, vec![], body, sizes, parallel))
}

/// A kernel for `GatherND` with `batch_dims` 0: each index tuple (the indices' last axis, of
/// static length `k`) picks `data[i0, .., ik-1]`, a slice of `data_shape[k..]`; the output
/// is `indices_shape[..-1] ++ data_shape[k..]`. Each component is wrapped and clamped to its
/// axis as [`gather`]'s indices are; the runtime checks them first.
///
/// Buffers: data (group input 0), indices (group input 1, i64), output.
pub fn gather_nd(
    name: &str,
    data_shape: &[Dim],
    indices_shape: &[Dim],
    dtype: DType,
    schedule: &Schedule,
) -> Result<Built, String> {
    let run = gather_run(schedule, dtype, data_shape, indices_shape)?;
    let (last, tuples) = indices_shape
        .split_last()
        .ok_or("indices must have rank at least 1")?;
    let k = last
        .as_known()
        .and_then(|k| usize::try_from(k).ok())
        .filter(|&k| k <= data_shape.len())
        .ok_or_else(|| format!("index tuples of {last} components for data {data_shape:?}"))?;
    nonempty(&data_shape[..k])?;
    let slice = product(&data_shape[k..]);
    let mut sizes = Sizes::default();
    let (body, parallel) = nest(&mut sizes, &[product(tuples)], |sizes, coords, depth| {
        let t = &coords[0];
        let src = sum((0..k).map(|c| {
            let component = Index::load(
                1,
                add(
                    mul(t.clone(), Index::Const(k as i64)),
                    Index::Const(c as i64),
                ),
            );
            let n = sizes.index(&data_shape[c]);
            mul(wrap(component, &n), sizes.product(&data_shape[c + 1..]))
        }));
        let len = sizes.index(&slice);
        let dst = mul(t.clone(), len.clone());
        let copy = copy_run(depth + 1, (2, &dst), (0, &Index::Loop(depth)), &len, run)?;
        Ok(vec![bind(src, copy)])
    })?;
    let args = vec![Arg::Input(0), Arg::Input(1), Arg::Output(0)];
    Ok(finish(name, args, vec![], body, sizes, parallel))
}

/// How a [`tensor_scatter`] places a batch item's rows: from its write index on, or from it
/// modulo the cache's length (ONNX TensorScatter's `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScatterMode {
    /// Rows `start..start + rows`; the start is clamped so that they fit the cache.
    Linear,
    /// Rows `(start + r) % capacity`.
    Circular,
}

/// A kernel for ONNX `TensorScatter`: writes each batch item's `update` rows (`update_shape`,
/// the cache's shape but `rows` along `axis`) into the cache (`cache_shape`) from the item's
/// write index along `axis`, in place: the cache buffer is the kernel's output and holds the
/// cache before the call, and only the updated rows are written. `indexed` says whether
/// there is a write-index input (i64 `[batch]`); without one every item writes from 0.
/// Linear starts are clamped to `[0, capacity - rows]` and circular ones must be non-negative,
/// so no write leaves the cache; the runtime checks the indices against that range first, as
/// the interpreter rejects them.
///
/// Buffers: update (group input 1), write indices (group input 2, if `indexed`), cache
/// (output 0, updated in place).
pub fn tensor_scatter(
    name: &str,
    cache_shape: &[Dim],
    update_shape: &[Dim],
    axis: usize,
    indexed: bool,
    mode: ScatterMode,
    schedule: &Schedule,
) -> Result<Built, String> {
    let run = Vectors::of(&space().resolve(schedule)?);
    check_dims(cache_shape)?;
    check_dims(update_shape)?;
    let rank = cache_shape.len();
    if axis == 0 || axis >= rank || update_shape.len() != rank {
        return Err(format!("a cache write along axis {axis} of rank {rank}"));
    }
    let outer = [
        cache_shape[0].clone(),
        product(&cache_shape[1..axis]),
        update_shape[axis].clone(),
    ];
    let inner = product(&cache_shape[axis + 1..]);
    let capacity = &cache_shape[axis];
    let cache = if indexed { 2 } else { 1 };
    let mut sizes = Sizes::default();
    let (body, parallel) = nest(&mut sizes, &outer, |sizes, coords, depth| {
        let (b, o, r) = (&coords[0], &coords[1], &coords[2]);
        let (cap, rows, len) = (
            sizes.index(capacity),
            sizes.index(&outer[2]),
            sizes.index(&inner),
        );
        let items = sizes.index(&outer[1]);
        let start = match indexed {
            true => Index::load(1, b.clone()),
            false => Index::Const(0),
        };
        let at = match mode {
            ScatterMode::Linear => {
                let last = sub(cap.clone(), rows.clone()).max(0.into());
                start.max(0.into()).min(last) + r.clone()
            }
            ScatterMode::Circular => (start.max(0.into()) + r.clone()) % cap.clone().max(1.into()),
        };
        let item = add(mul(b.clone(), items), o.clone());
        let src = mul(add(mul(item.clone(), rows), r.clone()), len.clone());
        let dst = mul(add(mul(item, cap), at), len.clone());
        let copy = copy_run(
            depth + 1,
            (cache, &Index::Loop(depth)),
            (0, &src),
            &len,
            run,
        )?;
        Ok(vec![bind(dst, copy)])
    })?;
    let mut args = vec![Arg::Input(1)];
    if indexed {
        args.push(Arg::Input(2));
    }
    args.push(Arg::Output(0));
    Ok(finish(name, args, vec![], body, sizes, parallel))
}

/// Index `i` of an axis of `n` elements: clamped to `[-n, n - 1]`, then `+ n` if negative.
fn wrap(i: Index, n: &Index) -> Index {
    let lowest = sub(Index::Const(0), n.clone());
    let clamped = i.max(lowest).min(sub(n.clone(), Index::Const(1)));
    // 1 when negative, else 0.
    let negative = sub(Index::Const(0), clamped.clone())
        .max(0.into())
        .min(1.into());
    clamped + mul(n.clone(), negative)
}

/// A kernel for `Transpose` of an input of `shape` by `perm` (output axis `k` is input axis
/// `perm[k]`), rank at most 6. Unit axes are dropped and axes that stay neighbours are
/// merged first; then a copy that keeps the last axis moves vector rows, and one that moves
/// it goes by 16×16 tiles so that reads and writes both stay in cache.
///
/// Buffers: input, output.
pub fn transpose(
    name: &str,
    shape: &[Dim],
    perm: &[usize],
    dtype: DType,
    schedule: &Schedule,
) -> Result<Built, String> {
    let schedule = space().resolve(schedule)?;
    let run = Vectors::of(&schedule).moving(dtype);
    check_dims(shape)?;
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if sorted != (0..shape.len()).collect::<Vec<_>>() {
        return Err(format!(
            "perm {perm:?} is not a permutation of rank {}",
            shape.len()
        ));
    }
    if shape.len() > 6 {
        return Err(format!("transpose of rank {} (at most 6)", shape.len()));
    }
    let (dims, perm) = simplify_transpose(shape, perm);
    let rank = dims.len();
    let mut sizes = Sizes::default();
    let args = vec![Arg::Input(0), Arg::Output(0)];
    if perm.iter().enumerate().all(|(k, &a)| k == a) {
        let (body, parallel) = flat_copy(&product(&dims), &Index::Const(0), run)?;
        return Ok(finish(name, args, vec![], body, sizes, parallel));
    }
    let out: Vec<Dim> = perm.iter().map(|&a| dims[a].clone()).collect();
    let in_stride = |sizes: &mut Sizes, a: usize| sizes.product(&dims[a + 1..]);
    let (body, parallel) = if perm[rank - 1] == rank - 1 {
        // Rows of the last axis stay contiguous: copy them as vectors.
        nest(&mut sizes, &out[..rank - 1], |sizes, coords, depth| {
            let src = sum(coords
                .iter()
                .zip(&perm)
                .map(|(c, &a)| mul(c.clone(), in_stride(sizes, a))));
            let dst = row_major_offset(sizes, &out, coords);
            copy_run(
                depth,
                (1, &dst),
                (0, &src),
                &sizes.index(&dims[rank - 1]),
                run,
            )
        })?
    } else {
        let q = perm
            .iter()
            .position(|&a| a == rank - 1)
            .expect("a permutation");
        let tile = TileCopy {
            run,
            side: schedule.value("tile"),
            a: sizes.index(&out[rank - 1]),
            a_stride: in_stride(&mut sizes, perm[rank - 1]),
            b_stride: sizes.product(&out[q + 1..]),
        };
        let batch: Vec<usize> = (0..rank - 1).filter(|&k| k != q).collect();
        if batch.is_empty() {
            // A plain 2-D transpose: the parallel axis is the rows of the output.
            let body = tile.stmts(
                0,
                &Index::Const(0),
                &Index::Const(0),
                (Index::Size(0), Index::Size(1)),
            );
            (body, out[q].clone())
        } else {
            let batch_dims: Vec<Dim> = batch.iter().map(|&k| out[k].clone()).collect();
            nest(&mut sizes, &batch_dims, |sizes, coords, depth| {
                let (mut src, mut dst) = (vec![], vec![]);
                for (c, &k) in coords.iter().zip(&batch) {
                    src.push(mul(c.clone(), in_stride(sizes, perm[k])));
                    dst.push(mul(c.clone(), sizes.product(&out[k + 1..])));
                }
                let rows = (Index::Const(0), sizes.index(&out[q]));
                Ok(tile.stmts(depth, &sum(src), &sum(dst), rows))
            })?
        }
    };
    Ok(finish(name, args, vec![], body, sizes, parallel))
}

/// `shape` and `perm` without unit axes and with runs of axes that stay neighbours merged.
fn simplify_transpose(shape: &[Dim], perm: &[usize]) -> (Vec<Dim>, Vec<usize>) {
    let kept: Vec<usize> = (0..shape.len()).filter(|&a| !shape[a].is(1)).collect();
    let renumber = |a: usize| kept.iter().position(|&k| k == a);
    let perm: Vec<usize> = perm.iter().filter_map(|&a| renumber(a)).collect();
    // Runs of consecutive input axes, in output order.
    let mut runs: Vec<Vec<usize>> = vec![];
    for &a in &perm {
        match runs.last_mut() {
            Some(run) if run.last() == Some(&(a.wrapping_sub(1))) => run.push(a),
            _ => runs.push(vec![a]),
        }
    }
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&r| runs[r][0]);
    let dims = order
        .iter()
        .map(|&r| {
            let axes: Vec<Dim> = runs[r].iter().map(|&a| shape[kept[a]].clone()).collect();
            product(&axes)
        })
        .collect();
    let perm = (0..runs.len())
        .map(|r| {
            order
                .iter()
                .position(|&o| o == r)
                .expect("every run is ordered")
        })
        .collect();
    (dims, perm)
}

/// The inner two axes of a transpose that moves the last axis: output rows `b` (input axis
/// last, stride 1 in the input) by output columns `a` (stride 1 in the output), copied by
/// tiles.
struct TileCopy {
    /// What an element copy moves.
    run: Vectors,
    /// Side of a tile, in elements.
    side: i64,
    /// Output columns (the extent of the input axis that becomes the last).
    a: Index,
    /// Input stride of a column.
    a_stride: Index,
    /// Output stride of a row.
    b_stride: Index,
}

impl TileCopy {
    /// Copies rows `rows.0..rows.1` from input base `src` to output base `dst` by tiles,
    /// with loops from `depth`.
    fn stmts(&self, depth: usize, src: &Index, dst: &Index, rows: (Index, Index)) -> Vec<Stmt> {
        let (t, bt, at, b, a) = (
            Index::Const(self.side),
            Index::Loop(depth),
            Index::Loop(depth + 1),
            Index::Loop(depth + 2),
            Index::Loop(depth + 3),
        );
        let (lo, hi) = rows;
        let ceil = |n: Index| (n + (self.side - 1).into()) / t.clone();
        let b0 = lo.clone() + bt * t.clone();
        let a0 = at * t.clone();
        let from = add(
            src.clone(),
            b.clone() + mul(a.clone(), self.a_stride.clone()),
        );
        let to = add(dst.clone(), mul(b, self.b_stride.clone()) + a);
        let store = self.run.copy((1, to), (0, from), 1);
        let columns = Stmt::for_range(
            a0.clone(),
            (a0 + t.clone()).min(self.a.clone()),
            vec![store],
        );
        let rows = Stmt::for_range(b0.clone(), (b0 + t.clone()).min(hi.clone()), vec![columns]);
        let column_tiles = Stmt::for_range(0.into(), ceil(self.a.clone()), vec![rows]);
        vec![Stmt::for_range(
            0.into(),
            ceil(sub(hi, lo)),
            vec![column_tiles],
        )]
    }
}

/// A copy of `len` elements from input offset `src` to the output, parallel over elements
/// (buffers 0 and 1); returns the body and the parallel extent.
fn flat_copy(len: &Dim, src: &Index, run: Vectors) -> Result<(Vec<Stmt>, Dim), String> {
    let body = vector_run(0, &Index::Size(0), &Index::Size(1), run, |j, lanes| {
        Ok(vec![run.copy(
            (1, j.clone()),
            (0, add(src.clone(), j)),
            lanes,
        )])
    })?;
    Ok((body, len.clone()))
}

/// A kernel for `Concat` of inputs of `input_shapes` along `axis`: every other dim must match
/// (checked when known; input 0's dims are used).
///
/// Buffers: the inputs in order, then the output.
pub fn concat(
    name: &str,
    input_shapes: &[Vec<Dim>],
    axis: i64,
    dtype: DType,
    schedule: &Schedule,
) -> Result<Built, String> {
    let run = Vectors::of(&space().resolve(schedule)?).moving(dtype);
    let first = input_shapes
        .first()
        .ok_or("Concat needs at least one input")?;
    let axis = norm_axis(axis, first.len())?;
    for shape in input_shapes {
        check_dims(shape)?;
        let same = shape.len() == first.len()
            && shape.iter().zip(first).enumerate().all(|(a, (d, e))| {
                a == axis || d == e || d.as_known().is_none() || e.as_known().is_none()
            });
        if !same {
            return Err(format!(
                "shapes {first:?} and {shape:?} do not concatenate on axis {axis}"
            ));
        }
    }
    let parts: Vec<Dim> = input_shapes.iter().map(|s| product(&s[axis..])).collect();
    let args = (0..parts.len())
        .map(Arg::Input)
        .chain([Arg::Output(0)])
        .collect();
    segments(name, &product(&first[..axis]), &parts, true, args, run)
}

/// A kernel for `Split` of an input of `shape` along `axis` into parts of `split` elements
/// along it (they must add up to the dim, as polynomials when symbolic).
///
/// Buffers: the input, then the outputs in order.
pub fn split(
    name: &str,
    shape: &[Dim],
    axis: i64,
    split: &[Dim],
    dtype: DType,
    schedule: &Schedule,
) -> Result<Built, String> {
    let run = Vectors::of(&space().resolve(schedule)?).moving(dtype);
    check_dims(shape)?;
    let axis = norm_axis(axis, shape.len())?;
    if total(split) != shape[axis] {
        return Err(format!(
            "split sizes {split:?} do not add up to dim {}",
            shape[axis]
        ));
    }
    let after = product(&shape[axis + 1..]);
    let parts: Vec<Dim> = split.iter().map(|s| s * &after).collect();
    let args = [Arg::Input(0)]
        .into_iter()
        .chain((0..parts.len()).map(Arg::Output))
        .collect();
    segments(name, &product(&shape[..axis]), &parts, false, args, run)
}

/// The sum of `dims`.
fn total(dims: &[Dim]) -> Dim {
    dims.iter().fold(Dim::known(0), |acc, d| &acc + d)
}

/// Concat (`joined`: parts are buffers 0..n, the whole buffer n) or split (the whole is
/// buffer 0, parts 1..=n): each of `outer` rows of the whole is the parts' rows of `parts`
/// elements, in order.
fn segments(
    name: &str,
    outer: &Dim,
    parts: &[Dim],
    joined: bool,
    args: Vec<Arg>,
    run: Vectors,
) -> Result<Built, String> {
    let whole_buffer = if joined { parts.len() } else { 0 };
    let part_buffer = |i: usize| if joined { i } else { i + 1 };
    let offsets: Vec<Dim> = (0..parts.len()).map(|i| total(&parts[..i])).collect();
    let row = total(parts);
    let mut sizes = Sizes::default();
    // (whole buffer index, part buffer index) as (dst, src) or (src, dst).
    let copy = |depth: usize, whole: &Index, part: &Index, i: usize, len: &Index| {
        let (w, p) = ((whole_buffer, whole), (part_buffer(i), part));
        if joined {
            copy_run(depth, w, p, len, run)
        } else {
            copy_run(depth, p, w, len, run)
        }
    };
    let (body, parallel) = if outer.is(1) {
        // One row: parallel over its elements; each part copies its share of the range.
        let mut body = vec![];
        for (i, (part, offset)) in parts.iter().zip(&offsets).enumerate() {
            let (offset, len) = (sizes.index(offset), sizes.index(part));
            let start = Index::Size(0).max(offset.clone());
            let end = Index::Size(1)
                .min(add(offset.clone(), len))
                .max(start.clone());
            body.extend(vector_run(0, &start, &end, run, |j, lanes| {
                let (w, p) = (j.clone(), sub(j, offset.clone()));
                let (dst, src) = if joined {
                    ((whole_buffer, w), (part_buffer(i), p))
                } else {
                    ((part_buffer(i), p), (whole_buffer, w))
                };
                Ok(vec![run.copy(dst, src, lanes)])
            })?);
        }
        (body, row)
    } else {
        nest(
            &mut sizes,
            std::slice::from_ref(outer),
            |sizes, coords, depth| {
                let (r, row) = (&coords[0], sizes.index(&row));
                let mut body = vec![];
                for (i, (part, offset)) in parts.iter().zip(&offsets).enumerate() {
                    let len = sizes.index(part);
                    let whole = add(mul(r.clone(), row.clone()), sizes.index(offset));
                    body.extend(copy(depth, &whole, &mul(r.clone(), len.clone()), i, &len)?);
                }
                Ok(body)
            },
        )?
    };
    Ok(finish(name, args, vec![], body, sizes, parallel))
}

/// The constant bounds of a `Slice` (its inputs 1 to 4).
#[derive(Clone, Copy, Debug)]
pub struct SliceBounds<'a> {
    /// First index per sliced axis (negative counts from the end).
    pub starts: &'a [i64],
    /// One past the last index per sliced axis (negative counts from the end; clamped). A
    /// symbolic end (a sequence length) is taken as it is: the caller checks at run time that
    /// it lies between the axis's start and its dim, which the kernel cannot.
    pub ends: &'a [Dim],
    /// The sliced axes (default `0..starts.len()`).
    pub axes: Option<&'a [i64]>,
    /// Steps (only 1 is supported).
    pub steps: Option<&'a [i64]>,
}

/// A kernel for `Slice` of an input of `shape` by `bounds` (ONNX rules: negative counts from
/// the end, clamped), steps all 1; sliced axes must have static dims.
///
/// Buffers: input, output.
pub fn slice(
    name: &str,
    shape: &[Dim],
    bounds: SliceBounds,
    dtype: DType,
    schedule: &Schedule,
) -> Result<Built, String> {
    let SliceBounds {
        starts,
        ends,
        axes,
        steps,
    } = bounds;
    let run = Vectors::of(&space().resolve(schedule)?).moving(dtype);
    check_dims(shape)?;
    let default_axes: Vec<i64> = (0..starts.len() as i64).collect();
    let axes = axes.unwrap_or(&default_axes);
    if ends.len() != starts.len() || axes.len() != starts.len() {
        return Err("starts, ends and axes must have the same length".into());
    }
    if let Some(step) = steps.into_iter().flatten().find(|&&s| s != 1) {
        return Err(format!("slice step {step} (only 1 is supported)"));
    }
    // Per axis: (output extent, input extent, first index).
    let mut spans: Vec<Span> = shape
        .iter()
        .map(|d| (d.clone(), d.clone(), Dim::known(0)))
        .collect();
    let mut sliced = vec![false; shape.len()];
    for ((&start, end), &axis) in starts.iter().zip(ends).zip(axes) {
        let a = norm_axis(axis, shape.len())?;
        let dim = shape[a]
            .as_known()
            .ok_or_else(|| format!("slicing the symbolic axis {a} ({})", shape[a]))?;
        if std::mem::replace(&mut sliced[a], true) {
            return Err(format!("axis {a} is sliced twice"));
        }
        spans[a] = match end.as_known() {
            Some(end) => {
                let (lo, hi) = slice_bounds(dim, start, end, 1);
                let extent = Dim::known((hi - lo).max(0));
                (extent, Dim::known(dim), Dim::known(lo))
            }
            None => {
                let lo = first_index(dim, start);
                (end - &Dim::known(lo), Dim::known(dim), Dim::known(lo))
            }
        };
    }
    let spans = merge_spans(spans);
    let (last, outer) = spans.split_last().ok_or("cannot slice a scalar")?;
    let mut sizes = Sizes::default();
    let args = vec![Arg::Input(0), Arg::Output(0)];
    let (body, parallel) = if outer.is_empty() {
        let src = sizes.index(&last.2);
        flat_copy(&last.0, &src, run)?
    } else {
        let out_dims: Vec<Dim> = spans.iter().map(|s| s.0.clone()).collect();
        nest(
            &mut sizes,
            &out_dims[..outer.len()],
            |sizes, coords, depth| {
                let src = sum(spans.iter().enumerate().map(|(a, (_, _, lo))| {
                    let after: Vec<Dim> = spans[a + 1..].iter().map(|s| s.1.clone()).collect();
                    let at = add(
                        coords.get(a).cloned().unwrap_or(Index::Const(0)),
                        sizes.index(lo),
                    );
                    mul(at, sizes.product(&after))
                }));
                let dst = row_major_offset(sizes, &out_dims, coords);
                copy_run(depth, (1, &dst), (0, &src), &sizes.index(&last.0), run)
            },
        )?
    };
    Ok(finish(name, args, vec![], body, sizes, parallel))
}

/// The first index a slice starting at `start` takes on an axis of `dim` (ONNX rules).
fn first_index(dim: i64, start: i64) -> i64 {
    slice_bounds(dim, start, dim, 1).0
}

/// The ranges `[low, high)` the values of `bounds.ends` must lie in for [`slice`]'s kernel to
/// be right, in the order of the ends: a symbolic end between its axis's first index and its
/// dim (it is taken as it is), a known one anything (it is clamped when compiling). For a
/// check at run time ([`kiln_rt::plan::IndexCheck`]).
pub fn slice_end_ranges(shape: &[Dim], bounds: SliceBounds) -> Result<Vec<(Dim, Dim)>, String> {
    let default_axes: Vec<i64> = (0..bounds.starts.len() as i64).collect();
    let axes = bounds.axes.unwrap_or(&default_axes);
    let mut ranges = vec![];
    for ((&start, end), &axis) in bounds.starts.iter().zip(bounds.ends).zip(axes) {
        let a = norm_axis(axis, shape.len())?;
        let dim = shape[a]
            .as_known()
            .ok_or_else(|| format!("slicing the symbolic axis {a} ({})", shape[a]))?;
        ranges.push(match end.as_known() {
            Some(_) => (Dim::known(i64::MIN), Dim::known(i64::MAX)),
            None => (Dim::known(first_index(dim, start)), Dim::known(dim + 1)),
        });
    }
    Ok(ranges)
}

/// A kernel for `Expand`: `input` (shape `input`, right-aligned to `output` as in numpy)
/// broadcast to `output`. Each axis either keeps its extent or is 1 in the input (a symbolic
/// input dim must equal the output's: it could be 1 at run time, which the kernel cannot
/// tell). Rows along the last axis are copied as vectors, or, where the input's last dim is
/// 1, filled with its one value.
///
/// Buffers: input (group input 0), output.
pub fn expand(
    name: &str,
    input: &[Dim],
    output: &[Dim],
    dtype: DType,
    schedule: &Schedule,
) -> Result<Built, String> {
    let run = Vectors::of(&space().resolve(schedule)?).moving(dtype);
    check_dims(input)?;
    check_dims(output)?;
    if input.len() > output.len() {
        return Err(format!("{input:?} has more dims than {output:?}"));
    }
    let mut aligned = vec![Dim::known(1); output.len() - input.len()];
    aligned.extend(input.iter().cloned());
    // Per axis: whether the input repeats along it (its dim is 1, the output's not).
    let mut repeated = vec![];
    for (a, (i, o)) in aligned.iter().zip(output).enumerate() {
        match (i == o, i.is(1)) {
            (true, _) => repeated.push(false),
            (false, true) => repeated.push(true),
            (false, false) => {
                return Err(format!(
                    "axis {a} of {input:?} neither matches {output:?} nor is 1"
                ))
            }
        }
    }
    let (last, outer) = output.split_last().ok_or("cannot expand a scalar")?;
    let mut sizes = Sizes::default();
    let args = vec![Arg::Input(0), Arg::Output(0)];
    let (body, parallel) = nest(&mut sizes, outer, |sizes, coords, depth| {
        let src = sum(coords.iter().enumerate().map(|(a, c)| {
            let stride = sizes.product(&aligned[a + 1..]);
            match repeated[a] {
                true => Index::Const(0),
                false => mul(c.clone(), stride),
            }
        }));
        let dst = row_major_offset(sizes, output, coords);
        let len = sizes.index(last);
        match repeated[output.len() - 1] {
            false => copy_run(depth, (1, &dst), (0, &src), &len, run),
            true => {
                let j = Index::Loop(depth);
                let fill = run.copy((1, add(dst, j)), (0, src), 1);
                Ok(vec![Stmt::for_range(Index::Const(0), len, vec![fill])])
            }
        }
    })?;
    Ok(finish(name, args, vec![], body, sizes, parallel))
}

/// One axis of a slice: output extent, input extent, first index taken.
type Span = (Dim, Dim, Dim);

/// Merges each axis into the next when the next is not sliced (rows of the pair are then
/// one contiguous run in both input and output).
fn merge_spans(spans: Vec<Span>) -> Vec<Span> {
    let mut merged: Vec<Span> = vec![];
    for span in spans.into_iter().rev() {
        match merged.last_mut() {
            Some(next) if next.2.is(0) && next.0 == next.1 => {
                let inner = next.1.clone();
                *next = (&span.0 * &inner, &span.1 * &inner, &span.2 * &inner);
            }
            _ => merged.push(span),
        }
    }
    merged.reverse();
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::elementwise::tests::{
        assert_close, concrete, dims, reference, typed_tensor, vector_schedules, Rng, DIMS,
    };
    use crate::templates::testing::{run, run_on_every_backend, run_updating};
    use kiln_ir::interp::Bindings;
    use kiln_ir::{Attr, Attrs, Op, OpKind, Tensor};

    fn with(kind: OpKind, attrs: &[(&str, Attr)]) -> Op {
        Op::new(kind, Attrs::from_pairs(attrs))
    }

    /// One of the vectorisations tests build with, and a transpose tile side.
    fn any_schedule(rng: &mut Rng) -> Schedule {
        let tile = rng.pick(&[4, 16, 32]);
        rng.pick(&vector_schedules()).with("tile", tile)
    }

    /// The dtypes the movement tests move: 4-byte elements go as f32 vectors, the others one
    /// element at a time.
    const MOVED: [DType; 5] = [DType::F32, DType::I64, DType::Bool, DType::F16, DType::I32];

    /// Runs `built` (one output) with chunks 1 and 3 on every backend and asserts it moved
    /// exactly `want`'s elements.
    fn check_moved(built: &Built, inputs: &[Tensor], want: &Tensor, b: &Bindings, what: &str) {
        for chunks in [1, 3] {
            let blank = Tensor::zeros(want.dtype(), want.shape());
            let got = run_on_every_backend(built, inputs, vec![blank], b, chunks);
            assert_eq!(got[0], *want, "{what}, chunks {chunks}");
        }
    }

    fn ints(values: &[i64]) -> Tensor {
        Tensor::from_vec(&[values.len()], values.to_vec()).unwrap()
    }

    /// A random static shape of `rank` dims, each symbolic (`{prefix}{axis}`, bound in `b`)
    /// with probability 1/3.
    fn random_shape(rng: &mut Rng, rank: usize, prefix: &str, b: &mut Bindings) -> Vec<Dim> {
        (0..rank)
            .map(|a| {
                let d = rng.pick(&DIMS);
                if rng.below(3) == 0 {
                    let name = format!("{prefix}{a}");
                    b.insert(name.clone(), d as i64);
                    Dim::sym(&name)
                } else {
                    Dim::from(d)
                }
            })
            .collect()
    }

    #[test]
    fn gather_matches_the_interpreter() {
        let mut rng = Rng::new(10);
        for _ in 0..40 {
            let mut b = Bindings::new();
            let rank = 1 + rng.below(3);
            let mut data = random_shape(&mut rng, rank, "d", &mut b);
            let axis = rng.below(rank);
            // The gathered axis is static (a vocabulary); indices may be symbolic.
            data[axis] = Dim::from(rng.pick(&DIMS));
            let index_rank = rng.below(3);
            let indices = random_shape(&mut rng, index_rank, "i", &mut b);
            let n = data[axis].as_known().unwrap();
            let dtype = rng.pick(&MOVED);
            let table = typed_tensor(&mut rng, dtype, &concrete(&data, &b));
            let idx_shape = concrete(&indices, &b);
            let ids: Vec<i64> = (0..idx_shape.iter().product::<usize>())
                .map(|_| rng.below(2 * n as usize) as i64 - n)
                .collect();
            let ids = Tensor::from_vec(&idx_shape, ids).unwrap();
            let op = with(OpKind::Gather, &[("axis", Attr::Int(axis as i64))]);
            let want = reference(&op, &[&table, &ids], 0);
            let schedule = any_schedule(&mut rng);
            let what = format!(
                "gather {dtype} {data:?} by {indices:?} on axis {axis}, {b:?}, {schedule:?}"
            );
            let built = gather("g", &data, &indices, axis as i64, dtype, &schedule).expect(&what);
            check_moved(&built, &[table, ids], &want, &b, &what);
        }
    }

    /// `n` random valid indices into an axis of `dim` (negative ones count from the end).
    fn valid_indices(rng: &mut Rng, shape: &[usize], dim: &[i64]) -> Tensor {
        let n: usize = shape.iter().product();
        let ids = (0..n)
            .map(|i| {
                let d = dim[i % dim.len()];
                rng.below(2 * d as usize) as i64 - d
            })
            .collect();
        Tensor::from_vec(shape, ids).unwrap()
    }

    #[test]
    fn gather_elements_matches_the_interpreter() {
        let mut rng = Rng::new(17);
        for _ in 0..40 {
            let mut b = Bindings::new();
            let rank = 1 + rng.below(3);
            let data = random_shape(&mut rng, rank, "d", &mut b);
            let axis = rng.below(rank);
            // The indices: each dim at most the data's (static), any size along the axis.
            let indices: Vec<Dim> = (0..rank)
                .map(|a| match a == axis {
                    true => Dim::from(rng.pick(&DIMS)),
                    false => data[a].clone(),
                })
                .collect();
            let dtype = rng.pick(&MOVED);
            let table = typed_tensor(&mut rng, dtype, &concrete(&data, &b));
            let n = concrete(&data, &b)[axis] as i64;
            let ids = valid_indices(&mut rng, &concrete(&indices, &b), &[n]);
            let op = with(OpKind::GatherElements, &[("axis", Attr::Int(axis as i64))]);
            let want = reference(&op, &[&table, &ids], 0);
            let schedule = any_schedule(&mut rng);
            let what = format!("gather_elements {dtype} {data:?} by {indices:?} on {axis}, {b:?}");
            let built =
                gather_elements("g", &data, &indices, axis as i64, dtype, &schedule).expect(&what);
            check_moved(&built, &[table, ids], &want, &b, &what);
        }
        let d = Schedule::default();
        assert!(gather_elements("g", &dims(&[3, 4]), &dims(&[3]), 0, DType::F32, &d).is_err());
    }

    #[test]
    fn gather_nd_matches_the_interpreter() {
        let mut rng = Rng::new(18);
        for _ in 0..40 {
            let mut b = Bindings::new();
            let rank = 1 + rng.below(3);
            let data = random_shape(&mut rng, rank, "d", &mut b);
            let k = 1 + rng.below(rank);
            let tuple_rank = rng.below(3);
            let mut indices = random_shape(&mut rng, tuple_rank, "i", &mut b);
            indices.push(Dim::known(k as i64));
            let dtype = rng.pick(&MOVED);
            let table = typed_tensor(&mut rng, dtype, &concrete(&data, &b));
            let dims_k: Vec<i64> = concrete(&data, &b)[..k].iter().map(|&d| d as i64).collect();
            let ids = valid_indices(&mut rng, &concrete(&indices, &b), &dims_k);
            let op = with(OpKind::GatherND, &[("batch_dims", Attr::Int(0))]);
            let want = reference(&op, &[&table, &ids], 0);
            let schedule = any_schedule(&mut rng);
            let what = format!("gather_nd {dtype} {data:?} by {indices:?}, {b:?}, {schedule:?}");
            let built = gather_nd("g", &data, &indices, dtype, &schedule).expect(&what);
            check_moved(&built, &[table, ids], &want, &b, &what);
        }
        let d = Schedule::default();
        assert!(gather_nd("g", &dims(&[3]), &dims(&[2, 2]), DType::F32, &d).is_err());
        assert!(gather_nd("g", &dims(&[3]), &[Dim::sym("k")], DType::F32, &d).is_err());
    }

    #[test]
    fn gather_clamps_out_of_range_indices() {
        let mut rng = Rng::new(11);
        let table = rng.tensor(&[4, 5]);
        let ids = Tensor::from_vec(&[4], vec![9i64, -7, -1, 2]).unwrap();
        let d = Schedule::default();
        let built = gather("g", &dims(&[4, 5]), &dims(&[4]), 0, DType::F32, &d).unwrap();
        let got = run(
            &built,
            &[table.clone(), ids],
            &[vec![4, 5]],
            &Bindings::new(),
            1,
        );
        let rows = [3i64, 0, 3, 2];
        let want = reference(
            &with(OpKind::Gather, &[("axis", Attr::Int(0))]),
            &[&table, &ints(&rows)],
            0,
        );
        assert_close(&got[0], &want, "clamped gather");
        assert!(gather("g", &dims(&[0, 5]), &dims(&[4]), 0, DType::F32, &d).is_err());
        assert!(gather("g", &dims(&[4, 5]), &dims(&[4]), 2, DType::F32, &d).is_err());
    }

    #[test]
    fn cache_writes_match_the_interpreter_and_touch_only_their_rows() {
        let mut rng = Rng::new(31);
        for _ in 0..40 {
            let mut b = Bindings::new();
            let rank = 2 + rng.below(3);
            let mut cache = random_shape(&mut rng, rank, "c", &mut b);
            let axis = 1 + rng.below(rank - 1);
            let capacity = concrete(&cache, &b)[axis];
            let rows = rng.below(capacity + 1);
            let mut update = cache.clone();
            update[axis] = Dim::from(rows);
            // A symbolic capacity stays symbolic; the update's rows are known or a symbol.
            if rng.below(2) == 0 {
                update[axis] = Dim::sym("r");
                b.insert("r".into(), rows as i64);
            }
            cache[0] = Dim::from(concrete(&cache, &b)[0]);
            let circular = rng.below(3) == 0;
            let indexed = circular || rng.below(4) != 0;
            let batch = concrete(&cache, &b)[0];
            let starts: Vec<i64> = (0..batch)
                .map(|_| match circular {
                    true => rng.below(2 * capacity + 1) as i64,
                    false => rng.below(capacity - rows + 1) as i64,
                })
                .collect();
            let old = rng.tensor(&concrete(&cache, &b));
            let new = rng.tensor(&concrete(&update, &b));
            let mode = if circular { "circular" } else { "linear" };
            let op = with(
                OpKind::TensorScatter,
                &[
                    ("axis", Attr::Int(axis as i64)),
                    ("mode", Attr::Str(mode.into())),
                ],
            );
            let mut inputs = vec![old.clone(), new];
            if indexed {
                inputs.push(ints(&starts));
            }
            let refs: Vec<&Tensor> = inputs.iter().collect();
            let want = reference(&op, &refs, 0);
            let schedule = any_schedule(&mut rng);
            let what = format!("{mode} write of {update:?} into {cache:?} at {starts:?} on axis {axis}, {b:?}, {schedule:?}");
            let mode = match circular {
                true => ScatterMode::Circular,
                false => ScatterMode::Linear,
            };
            let built =
                tensor_scatter("w", &cache, &update, axis, indexed, mode, &schedule).expect(&what);
            for chunks in [1, 3] {
                let got = run_updating(&built, &inputs, vec![old.clone()], &b, chunks);
                assert_close(&got[0], &want, &what);
            }
        }
    }

    #[test]
    fn linear_cache_writes_clamp_their_start_into_the_cache() {
        let mut rng = Rng::new(32);
        let old = rng.tensor(&[1, 6, 2]);
        let new = rng.tensor(&[1, 2, 2]);
        let d = Schedule::default();
        let built = tensor_scatter(
            "w",
            &dims(&[1, 6, 2]),
            &dims(&[1, 2, 2]),
            1,
            true,
            ScatterMode::Linear,
            &d,
        )
        .unwrap();
        let at = |start: i64| {
            let inputs = [old.clone(), new.clone(), ints(&[start])];
            run_updating(&built, &inputs, vec![old.clone()], &Bindings::new(), 1).remove(0)
        };
        assert_close(&at(9), &at(4), "a start past the end writes the last rows");
        assert_close(&at(-3), &at(0), "a negative start writes the first rows");
        assert!(tensor_scatter(
            "w",
            &dims(&[2, 3]),
            &dims(&[2, 3]),
            0,
            true,
            ScatterMode::Linear,
            &d
        )
        .is_err());
    }

    /// A random permutation of `0..n`.
    fn permutation(rng: &mut Rng, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, rng.below(i + 1));
        }
        p
    }

    fn check_transpose(rng: &mut Rng, shape: &[Dim], perm: &[usize], b: &Bindings) {
        let schedule = any_schedule(rng);
        let dtype = rng.pick(&MOVED);
        let what = format!("transpose {dtype} {shape:?} by {perm:?}, {b:?}, {schedule:?}");
        let built = transpose("t", shape, perm, dtype, &schedule).expect(&what);
        let x = typed_tensor(rng, dtype, &concrete(shape, b));
        let p: Vec<i64> = perm.iter().map(|&a| a as i64).collect();
        let want = reference(
            &with(OpKind::Transpose, &[("perm", Attr::Ints(p))]),
            &[&x],
            0,
        );
        check_moved(&built, &[x], &want, b, &what);
    }

    #[test]
    fn transpose_matches_the_interpreter() {
        let mut rng = Rng::new(12);
        for _ in 0..60 {
            let mut b = Bindings::new();
            let rank = 1 + rng.below(4);
            let shape = random_shape(&mut rng, rank, "t", &mut b);
            let perm = permutation(&mut rng, rank);
            check_transpose(&mut rng, &shape, &perm, &b);
        }
        // Named layouts: heads split, K^T, a large 2-D transpose, rank 6.
        let none = Bindings::new();
        check_transpose(&mut rng, &dims(&[2, 5, 3, 4]), &[0, 2, 1, 3], &none);
        check_transpose(&mut rng, &dims(&[2, 3, 17, 5]), &[0, 1, 3, 2], &none);
        check_transpose(&mut rng, &dims(&[37, 45]), &[1, 0], &none);
        check_transpose(
            &mut rng,
            &dims(&[2, 3, 1, 4, 5, 3]),
            &[5, 3, 1, 0, 2, 4],
            &none,
        );
        let s = Dim::sym("s");
        for sv in [1, 3, 33] {
            let b = Bindings::from([("s".to_string(), sv)]);
            let shape = [
                Dim::from(2usize),
                s.clone(),
                Dim::from(3usize),
                Dim::from(4usize),
            ];
            check_transpose(&mut rng, &shape, &[0, 2, 3, 1], &b);
            check_transpose(&mut rng, &[s.clone(), Dim::from(17usize)], &[1, 0], &b);
        }
        let d = Schedule::default();
        assert!(transpose("t", &dims(&[2, 3]), &[0, 0], DType::F32, &d).is_err());
        assert!(transpose("t", &dims(&[1; 7]), &[0, 1, 2, 3, 4, 5, 6], DType::F32, &d).is_err());
        let e =
            transpose("t", &dims(&[2, 3]), &[1, 0], DType::F32, &d.with("tile", 3)).unwrap_err();
        assert!(e.contains("movement.tile = 3"), "{e}");
    }

    #[test]
    fn concat_matches_the_interpreter() {
        let mut rng = Rng::new(13);
        for _ in 0..40 {
            let mut b = Bindings::new();
            let rank = 1 + rng.below(4);
            let base = random_shape(&mut rng, rank, "c", &mut b);
            let axis = rng.below(rank);
            let shapes: Vec<Vec<Dim>> = (0..1 + rng.below(3))
                .map(|i| {
                    let mut s = base.clone();
                    if rng.below(3) == 0 {
                        let name = format!("a{i}");
                        b.insert(name.clone(), rng.pick(&DIMS) as i64);
                        s[axis] = Dim::sym(&name);
                    } else {
                        s[axis] = Dim::from(rng.pick(&DIMS));
                    }
                    s
                })
                .collect();
            let schedule = any_schedule(&mut rng);
            let dtype = rng.pick(&MOVED);
            let what = format!("concat {dtype} {shapes:?} on axis {axis}, {b:?}, {schedule:?}");
            let axis_from_end = axis as i64 - rank as i64;
            let built = concat("c", &shapes, axis_from_end, dtype, &schedule).expect(&what);
            let inputs: Vec<Tensor> = shapes
                .iter()
                .map(|s| typed_tensor(&mut rng, dtype, &concrete(s, &b)))
                .collect();
            let op = with(OpKind::Concat, &[("axis", Attr::Int(axis as i64))]);
            let want = reference(&op, &inputs.iter().collect::<Vec<_>>(), 0);
            check_moved(&built, &inputs, &want, &b, &what);
        }
        let d = Schedule::default();
        assert!(concat("c", &[dims(&[2, 3]), dims(&[3, 3])], 1, DType::F32, &d).is_err());
        assert!(concat("c", &[dims(&[2, 3]), dims(&[2])], 0, DType::F32, &d).is_err());
        assert!(concat("c", &[], 0, DType::F32, &d).is_err());
    }

    #[test]
    fn split_matches_the_interpreter() {
        let mut rng = Rng::new(14);
        for _ in 0..40 {
            let mut b = Bindings::new();
            let rank = 1 + rng.below(4);
            let mut shape = random_shape(&mut rng, rank, "p", &mut b);
            let axis = rng.below(rank);
            let parts: Vec<Dim> = (0..1 + rng.below(3))
                .map(|i| {
                    if rng.below(3) == 0 {
                        let name = format!("q{i}");
                        b.insert(name.clone(), rng.pick(&DIMS) as i64);
                        Dim::sym(&name)
                    } else {
                        Dim::from(rng.pick(&DIMS))
                    }
                })
                .collect();
            shape[axis] = total(&parts);
            let schedule = any_schedule(&mut rng);
            let what =
                format!("split {shape:?} on axis {axis} into {parts:?}, {b:?}, {schedule:?}");
            let dtype = rng.pick(&MOVED);
            let built = split("s", &shape, axis as i64, &parts, dtype, &schedule).expect(&what);
            let x = typed_tensor(&mut rng, dtype, &concrete(&shape, &b));
            let sizes: Vec<i64> = parts.iter().map(|d| d.eval(&b).unwrap()).collect();
            let op = with(
                OpKind::Split,
                &[
                    ("axis", Attr::Int(axis as i64)),
                    ("split", Attr::Ints(sizes)),
                ],
            );
            let args = [Some(&x)];
            let want = kiln_ir::interp::eval_op(&op, &args, &Bindings::new()).unwrap();
            for chunks in [1, 3] {
                let blanks = want
                    .iter()
                    .map(|w| Tensor::zeros(dtype, w.shape()))
                    .collect();
                let got =
                    run_on_every_backend(&built, std::slice::from_ref(&x), blanks, &b, chunks);
                assert_eq!(got, want, "{what} ({dtype}), chunks {chunks}");
            }
        }
        let d = Schedule::default();
        assert!(split("s", &dims(&[2, 5]), 1, &dims(&[2, 2]), DType::F32, &d).is_err());
    }

    #[test]
    fn expand_matches_the_interpreter() {
        let mut rng = Rng::new(16);
        for _ in 0..60 {
            let mut b = Bindings::new();
            let rank = 1 + rng.below(4);
            let output = random_shape(&mut rng, rank, "e", &mut b);
            // The input: a suffix of the output's dims, each kept or 1.
            let dropped = rng.below(rank);
            let input: Vec<Dim> = output[dropped..]
                .iter()
                .map(|d| match rng.below(2) {
                    0 => Dim::known(1),
                    _ => d.clone(),
                })
                .collect();
            let schedule = any_schedule(&mut rng);
            let dtype = rng.pick(&MOVED);
            let what = format!("expand {dtype} {input:?} to {output:?}, {b:?}, {schedule:?}");
            let built = expand("e", &input, &output, dtype, &schedule).expect(&what);
            let x = typed_tensor(&mut rng, dtype, &concrete(&input, &b));
            let shape: Vec<i64> = concrete(&output, &b).iter().map(|&d| d as i64).collect();
            let want = reference(&Op::plain(OpKind::Expand), &[&x, &ints(&shape)], 0);
            check_moved(&built, &[x], &want, &b, &what);
        }
        let d = Schedule::default();
        let (s, t) = (Dim::sym("s"), Dim::sym("t"));
        assert!(
            expand("e", std::slice::from_ref(&s), &[t], DType::F32, &d).is_err(),
            "s may be 1 at run time"
        );
        assert!(expand("e", &[Dim::known(2)], &[Dim::known(3)], DType::F32, &d).is_err());
        assert!(expand("e", &[s.clone(), s.clone()], &[s], DType::F32, &d).is_err());
    }

    #[test]
    fn slice_matches_the_interpreter() {
        let mut rng = Rng::new(15);
        for _ in 0..60 {
            let mut b = Bindings::new();
            let rank = 1 + rng.below(4);
            let mut shape = random_shape(&mut rng, rank, "l", &mut b);
            let axes: Vec<usize> = permutation(&mut rng, rank)[..1 + rng.below(rank)].to_vec();
            let (mut starts, mut ends) = (vec![], vec![]);
            for &a in &axes {
                let d = rng.pick(&DIMS) as i64;
                shape[a] = Dim::known(d);
                b.remove(&format!("l{a}"));
                starts.push(rng.below(2 * d as usize + 3) as i64 - d - 1);
                ends.push(rng.below(2 * d as usize + 3) as i64 - d + 1);
            }
            let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
            let schedule = any_schedule(&mut rng);
            let what =
                format!("slice {shape:?} [{starts:?}, {ends:?}) on {axes:?}, {b:?}, {schedule:?}");
            let dtype = rng.pick(&MOVED);
            let end_dims: Vec<Dim> = ends.iter().map(|&e| Dim::known(e)).collect();
            let bounds = SliceBounds {
                starts: &starts,
                ends: &end_dims,
                axes: Some(&axes),
                steps: None,
            };
            let built = slice("l", &shape, bounds, dtype, &schedule).expect(&what);
            let x = typed_tensor(&mut rng, dtype, &concrete(&shape, &b));
            let op = Op::plain(OpKind::Slice);
            let want = reference(&op, &[&x, &ints(&starts), &ints(&ends), &ints(&axes)], 0);
            check_moved(&built, &[x], &want, &b, &what);
        }
        // A symbolic end (a sequence length) on a static axis: [2, 8] from 2 to `s`.
        for sv in [2, 5, 8] {
            let b = Bindings::from([("s".to_string(), sv)]);
            let dtype = rng.pick(&MOVED);
            let bounds = SliceBounds {
                starts: &[2],
                ends: &[Dim::sym("s")],
                axes: Some(&[1]),
                steps: None,
            };
            let shape = dims(&[2, 8]);
            let built = slice("l", &shape, bounds, dtype, &any_schedule(&mut rng)).unwrap();
            let x = typed_tensor(&mut rng, dtype, &[2, 8]);
            let op = Op::plain(OpKind::Slice);
            let want = reference(&op, &[&x, &ints(&[2]), &ints(&[sv]), &ints(&[1])], 0);
            check_moved(
                &built,
                &[x],
                &want,
                &b,
                &format!("slice [2, 8] to s = {sv}"),
            );
        }
        let s = [Dim::sym("s"), Dim::from(8usize)];
        let d = Schedule::default();
        let refused = |shape: &[Dim], starts, ends: &[i64], axes, steps| {
            let ends: Vec<Dim> = ends.iter().map(|&e| Dim::known(e)).collect();
            let bounds = SliceBounds {
                starts,
                ends: &ends,
                axes,
                steps,
            };
            slice("l", shape, bounds, DType::F32, &d).is_err()
        };
        assert!(refused(&s, &[0], &[2], None, None));
        assert!(refused(&s, &[0], &[2], Some(&[1]), Some(&[2])));
        assert!(refused(&s, &[0, 1], &[2, 3], Some(&[1, 1]), None));
        assert!(refused(&[], &[], &[], None, None));
    }
}

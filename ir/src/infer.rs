//! Shape and dtype inference: the static type of every op's outputs from its inputs' types.
//!
//! Besides dtype and symbolic shape, inference tracks the symbolic *values* of small integer
//! tensors (shape vectors built by Shape, Gather, Concat, arithmetic, ...), so that Reshape and
//! Expand targets computed from input shapes keep their symbolic dims.

use crate::attr::Attrs;
use crate::data::TensorData;
use crate::graph::{Shape, ValueType};
use crate::op::{Op, OpKind};
use crate::tensor::Tensor;
use crate::{DType, Dim};

/// The largest tensor rank kiln accepts.
pub const MAX_RANK: usize = 64;

/// Integer tensors with at most this many elements carry symbolic values.
pub const MAX_SYMBOLIC_ELEMENTS: usize = 64;

type Res<T> = Result<T, String>;

/// The type of a constant, with its values when it is a small integer tensor.
pub fn constant_type(data: &TensorData) -> ValueType {
    let shape = data.shape().iter().map(|&d| Dim::from(d)).collect();
    let sym =
        (data.dtype().is_int() && data.len() <= MAX_SYMBOLIC_ELEMENTS && data.shape().len() <= 1)
            .then(|| {
                Tensor::from_data(data)
                    .to_i64_vec()
                    .into_iter()
                    .map(Dim::known)
                    .collect()
            });
    ValueType {
        dtype: data.dtype(),
        shape,
        sym,
    }
}

/// Normalises a possibly negative `axis` for a tensor of rank `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Res<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r {
        return Err(format!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// Broadcasts symbolic shapes with ONNX (numpy) multidirectional rules.
pub fn broadcast_shapes(shapes: &[&Shape]) -> Res<Shape> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![Dim::known(1); rank];
    for s in shapes {
        let offset = rank - s.len();
        for (i, d) in s.iter().enumerate() {
            let cur = &out[offset + i];
            out[offset + i] = if d.is(1) || d == cur {
                cur.clone()
            } else if cur.is(1) {
                d.clone()
            } else if d.as_known().is_some() && cur.as_known().is_some() {
                return Err(format!("shapes {} cannot be broadcast", fmt_shapes(shapes)));
            } else if d.as_known().is_some() || cur.is_unknown() {
                // A symbolic size broadcast against a fixed one must equal it at run time.
                d.clone()
            } else {
                cur.clone()
            };
        }
    }
    Ok(out)
}

fn fmt_shapes(shapes: &[&Shape]) -> String {
    shapes
        .iter()
        .map(|s| fmt_shape(s))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Formats a shape as `[batch, seq, 64]`.
pub fn fmt_shape(s: &[Dim]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Infers the output types of `op` applied to inputs of the given types (`None` for an absent
/// optional input); `n_outputs` is how many outputs the node declares.
pub fn infer_op(op: &Op, inputs: &[Option<&ValueType>], n_outputs: usize) -> Res<Vec<ValueType>> {
    let mut out = infer_outputs(op, inputs)?;
    if n_outputs > out.len() {
        return Err(format!(
            "declares {n_outputs} outputs but has at most {}",
            out.len()
        ));
    }
    out.truncate(n_outputs);
    Ok(out)
}

fn input<'a>(inputs: &[Option<&'a ValueType>], i: usize) -> Res<&'a ValueType> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} is missing"))
}

fn opt_input<'a>(inputs: &[Option<&'a ValueType>], i: usize) -> Option<&'a ValueType> {
    inputs.get(i).copied().flatten()
}

fn same_dtype(inputs: &[Option<&ValueType>], idx: &[usize]) -> Res<DType> {
    let Some(&first_index) = idx.first() else {
        return Err("no inputs".into());
    };
    let first = input(inputs, first_index)?.dtype;
    for &i in &idx[1..] {
        let d = input(inputs, i)?.dtype;
        if d != first {
            return Err(format!(
                "input {i} is {d} but input {first_index} is {first}"
            ));
        }
    }
    Ok(first)
}

/// Like [`same_dtype`], skipping absent optional inputs.
fn same_dtype_present(inputs: &[Option<&ValueType>], idx: &[usize]) -> Res<DType> {
    let present: Vec<usize> = idx
        .iter()
        .copied()
        .filter(|&i| opt_input(inputs, i).is_some())
        .collect();
    same_dtype(inputs, &present)
}

fn float_input<'a>(inputs: &[Option<&'a ValueType>], i: usize) -> Res<&'a ValueType> {
    let t = input(inputs, i)?;
    if !t.dtype.is_float() {
        return Err(format!("input {i} is {} but must be a float type", t.dtype));
    }
    Ok(t)
}

fn vt(dtype: DType, shape: Shape) -> ValueType {
    ValueType::new(dtype, shape)
}

/// The symbolic values of input `i`, if known.
fn sym_of<'a>(inputs: &[Option<&'a ValueType>], i: usize) -> Option<&'a [Dim]> {
    opt_input(inputs, i).and_then(|t| t.sym.as_deref())
}

/// The constant integer values of input `i`, if fully known.
fn const_ints(inputs: &[Option<&ValueType>], i: usize) -> Option<Vec<i64>> {
    sym_of(inputs, i)?.iter().map(Dim::as_known).collect()
}

fn with_sym(mut t: ValueType, sym: Option<Vec<Dim>>) -> ValueType {
    if (t.dtype.is_int() || t.dtype == DType::Bool)
        && sym
            .as_ref()
            .is_some_and(|s| s.len() <= MAX_SYMBOLIC_ELEMENTS)
    {
        t.sym = sym;
    }
    t
}

fn unknown_shape(rank: usize) -> Shape {
    vec![Dim::unknown(); rank]
}

/// A shape read from the values of a 1-D shape tensor input.
fn shape_from_input(inputs: &[Option<&ValueType>], i: usize) -> Res<Shape> {
    let t = input(inputs, i)?;
    if let Some(s) = &t.sym {
        return Ok(s.clone());
    }
    match t.shape.as_slice() {
        [n] => match n.as_known() {
            Some(n) if (0..=MAX_RANK as i64).contains(&n) => Ok(unknown_shape(n as usize)),
            Some(n) => Err(format!(
                "shape input has {n} elements; ranks above {MAX_RANK} are not supported"
            )),
            None => Err("shape input has unknown length".into()),
        },
        _ => Err(format!(
            "shape input must be 1-D, got {}",
            fmt_shape(&t.shape)
        )),
    }
}

/// The sequence axis of a TensorScatter on a cache of `rank` dims: attribute `axis`, which
/// may not be the batch axis 0.
pub fn scatter_axis(a: &Attrs, rank: usize) -> Res<usize> {
    if rank < 2 {
        return Err(format!(
            "a cache of rank {rank}; TensorScatter needs rank 2 or more"
        ));
    }
    match norm_axis(a.int("axis")?, rank)? {
        0 => Err("axis cannot be 0, the batch axis".into()),
        axis => Ok(axis),
    }
}

/// Infers the types of every output `op` can have (optional outputs included).
pub fn infer_outputs(op: &Op, inputs: &[Option<&ValueType>]) -> Res<Vec<ValueType>> {
    use OpKind::*;
    if let (Some(key), Some(list)) = (op.kind.list_input_attr(), opt_input(inputs, 1)) {
        return match const_ints(inputs, 1) {
            Some(values) => {
                let mut with_attr = op.clone();
                with_attr.attrs.set(key, crate::Attr::Ints(values));
                infer_outputs(&with_attr, &inputs[..1])
            }
            None => runtime_list_types(op, input(inputs, 0)?, list),
        };
    }
    let a = &op.attrs;
    let one = |t: ValueType| Ok(vec![t]);
    match op.kind {
        Neg | Abs | Sqrt | Reciprocal | Exp | Log | Erf | Tanh | Sigmoid | Relu | Sin | Cos
        | Floor | Ceil | Round | Gelu => {
            let x = input(inputs, 0)?;
            let sym = (op.kind == Neg)
                .then(|| {
                    x.sym
                        .as_ref()
                        .map(|s| s.iter().map(|d| &Dim::known(0) - d).collect())
                })
                .flatten();
            one(with_sym(vt(x.dtype, x.shape.clone()), sym))
        }
        Identity => one(input(inputs, 0)?.clone()),
        Clip => one(vt(
            same_dtype_present(inputs, &[0, 1, 2])?,
            input(inputs, 0)?.shape.clone(),
        )),
        Dropout => {
            let x = input(inputs, 0)?;
            Ok(vec![x.clone(), vt(DType::Bool, x.shape.clone())])
        }
        Not | IsNaN => one(vt(DType::Bool, input(inputs, 0)?.shape.clone())),
        Cast => {
            let x = input(inputs, 0)?;
            let to: DType = a.str("to")?.parse()?;
            let sym = if to.is_int() { x.sym.clone() } else { None };
            one(with_sym(vt(to, x.shape.clone()), sym))
        }
        Add | Sub | Mul | Div | Pow | Max | Min | Mod => {
            let dtype = if op.kind == Pow {
                input(inputs, 0)?.dtype
            } else {
                same_dtype(inputs, &[0, 1])?
            };
            let shape = broadcast_shapes(&[&input(inputs, 0)?.shape, &input(inputs, 1)?.shape])?;
            let sym = binary_sym(op.kind, sym_of(inputs, 0), sym_of(inputs, 1));
            one(with_sym(vt(dtype, shape), sym))
        }
        Equal | Less | Greater | LessOrEqual | GreaterOrEqual | And | Or | Xor => {
            same_dtype(inputs, &[0, 1])?;
            let shape = broadcast_shapes(&[&input(inputs, 0)?.shape, &input(inputs, 1)?.shape])?;
            let sym = compare_sym(op.kind, sym_of(inputs, 0), sym_of(inputs, 1));
            one(with_sym(vt(DType::Bool, shape), sym))
        }
        Where => {
            if input(inputs, 0)?.dtype != DType::Bool {
                return Err("condition must be bool".into());
            }
            let dtype = same_dtype(inputs, &[1, 2])?;
            let shape = broadcast_shapes(&[
                &input(inputs, 0)?.shape,
                &input(inputs, 1)?.shape,
                &input(inputs, 2)?.shape,
            ])?;
            let sym = where_sym(sym_of(inputs, 0), sym_of(inputs, 1), sym_of(inputs, 2));
            one(with_sym(vt(dtype, shape), sym))
        }
        MatMul | MatMulInteger => {
            let (x, y) = (input(inputs, 0)?, input(inputs, 1)?);
            let dtype = if op.kind == MatMul {
                same_dtype(inputs, &[0, 1])?
            } else {
                DType::I32
            };
            one(vt(dtype, matmul_shape(&x.shape, &y.shape)?))
        }
        Gemm => {
            let dtype = same_dtype(inputs, &[0, 1])?;
            let (x, y) = (&input(inputs, 0)?.shape, &input(inputs, 1)?.shape);
            if x.len() != 2 || y.len() != 2 {
                return Err("Gemm inputs must be 2-D".into());
            }
            let (m, k1) = if a.int("transA")? != 0 {
                (&x[1], &x[0])
            } else {
                (&x[0], &x[1])
            };
            let (k2, n) = if a.int("transB")? != 0 {
                (&y[1], &y[0])
            } else {
                (&y[0], &y[1])
            };
            check_same_dim(k1, k2, "inner dimensions")?;
            one(vt(dtype, vec![m.clone(), n.clone()]))
        }
        Einsum => {
            let n = inputs.len();
            let dtype = same_dtype(inputs, &(0..n).collect::<Vec<_>>())?;
            let shapes: Vec<&Vec<Dim>> = (0..n)
                .map(|i| input(inputs, i).map(|t| &t.shape))
                .collect::<Res<_>>()?;
            one(vt(dtype, einsum_shape(a.str("equation")?, &shapes)?))
        }
        Softmax | LogSoftmax | RotaryEmbedding => {
            let x = float_input(inputs, 0)?;
            if op.kind != RotaryEmbedding {
                norm_axis(a.int("axis")?, x.shape.len())?;
            }
            one(x.clone())
        }
        LayerNormalization | RMSNormalization | SimplifiedLayerNormalization => {
            let x = float_input(inputs, 0)?;
            let axis = norm_axis(a.int("axis")?, x.shape.len())?;
            let mut stat = x.shape.clone();
            stat[axis..].fill(Dim::known(1));
            let extra = if op.kind == LayerNormalization { 2 } else { 1 };
            let mut out = vec![vt(x.dtype, x.shape.clone())];
            out.extend(std::iter::repeat_n(vt(DType::F32, stat), extra));
            Ok(out)
        }
        SkipLayerNormalization | SkipSimplifiedLayerNormalization => {
            let x = float_input(inputs, 0)?;
            same_dtype(inputs, &[0, 1])?;
            let mut stat = x.shape.clone();
            if let Some(last) = stat.last_mut() {
                *last = Dim::known(1);
            }
            Ok(vec![
                vt(x.dtype, x.shape.clone()),
                vt(DType::F32, stat.clone()),
                vt(DType::F32, stat),
                vt(x.dtype, x.shape.clone()),
            ])
        }
        ReduceMean | ReduceSum | ReduceMax | ReduceMin => {
            let x = input(inputs, 0)?;
            one(vt(x.dtype, reduce_shape(a, &x.shape)?))
        }
        CumSum | Trilu => one(vt(input(inputs, 0)?.dtype, input(inputs, 0)?.shape.clone())),
        Transpose => {
            let x = input(inputs, 0)?;
            let perm = transpose_perm(a, x.shape.len())?;
            one(vt(
                x.dtype,
                perm.iter().map(|&p| x.shape[p].clone()).collect(),
            ))
        }
        Reshape => {
            let x = input(inputs, 0)?;
            let target = shape_from_input(inputs, 1)?;
            let shape = reshape_shape(&x.shape, &target, a.int("allowzero")? != 0)?;
            one(with_sym(vt(x.dtype, shape), x.sym.clone()))
        }
        Flatten => {
            let x = input(inputs, 0)?;
            let axis = if a.int("axis")? == x.shape.len() as i64 {
                x.shape.len()
            } else {
                norm_axis(a.int("axis")?, x.shape.len())?
            };
            let prod = |s: &[Dim]| s.iter().fold(Dim::known(1), |acc, d| &acc * d);
            one(vt(
                x.dtype,
                vec![prod(&x.shape[..axis]), prod(&x.shape[axis..])],
            ))
        }
        Squeeze => {
            let x = input(inputs, 0)?;
            let axes: Vec<usize> = match a.opt_ints("axes")? {
                Some(ax) => ax
                    .iter()
                    .map(|&v| norm_axis(v, x.shape.len()))
                    .collect::<Res<_>>()?,
                None => (0..x.shape.len()).filter(|&i| x.shape[i].is(1)).collect(),
            };
            for &i in &axes {
                if x.shape[i].as_known().is_some_and(|v| v != 1) {
                    return Err(format!("cannot squeeze axis {i} of size {}", x.shape[i]));
                }
            }
            let shape = (0..x.shape.len())
                .filter(|i| !axes.contains(i))
                .map(|i| x.shape[i].clone())
                .collect();
            one(with_sym(vt(x.dtype, shape), x.sym.clone()))
        }
        Unsqueeze => {
            let x = input(inputs, 0)?;
            let rank = x.shape.len() + a.ints("axes")?.len();
            let mut axes: Vec<usize> = a
                .ints("axes")?
                .iter()
                .map(|&v| norm_axis(v, rank))
                .collect::<Res<_>>()?;
            axes.sort_unstable();
            if axes.windows(2).any(|w| w[0] == w[1]) {
                return Err("repeated axis".into());
            }
            let mut rest = x.shape.iter();
            let shape = (0..rank)
                .map(|i| {
                    if axes.contains(&i) {
                        Dim::known(1)
                    } else {
                        rest.next().cloned().unwrap_or_default()
                    }
                })
                .collect();
            one(with_sym(vt(x.dtype, shape), x.sym.clone()))
        }
        Concat => concat_type(a, inputs).map(|t| vec![t]),
        Split => split_types(a, inputs),
        Slice => slice_type(inputs).map(|t| vec![t]),
        Gather => {
            let (x, idx) = (input(inputs, 0)?, input(inputs, 1)?);
            if x.shape.is_empty() {
                return Err("cannot gather from a scalar".into());
            }
            if !idx.dtype.is_int() {
                return Err("indices must be integers".into());
            }
            let axis = norm_axis(a.int("axis")?, x.shape.len())?;
            let shape: Vec<Dim> = x.shape[..axis]
                .iter()
                .chain(&idx.shape)
                .chain(&x.shape[axis + 1..])
                .cloned()
                .collect();
            let sym = match (&x.sym, const_ints(inputs, 1)) {
                (Some(s), Some(ix)) if x.shape.len() == 1 => ix
                    .iter()
                    .map(|&i| {
                        s.get(if i < 0 {
                            (i + s.len() as i64) as usize
                        } else {
                            i as usize
                        })
                        .cloned()
                    })
                    .collect(),
                _ => None,
            };
            one(with_sym(vt(x.dtype, shape), sym))
        }
        GatherElements => one(vt(input(inputs, 0)?.dtype, input(inputs, 1)?.shape.clone())),
        GatherND => {
            let (x, idx) = (input(inputs, 0)?, input(inputs, 1)?);
            let b = usize::try_from(a.int("batch_dims")?)
                .map_err(|_| "batch_dims must be non-negative")?;
            let last = idx
                .shape
                .last()
                .and_then(Dim::as_known)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or("indices need a known, non-negative last dim")?;
            if b.checked_add(last).is_none_or(|end| end > x.shape.len()) {
                return Err("indices do not fit the data rank".into());
            }
            let shape = idx.shape[..idx.shape.len() - 1]
                .iter()
                .chain(&x.shape[b + last..])
                .cloned()
                .collect();
            one(vt(x.dtype, shape))
        }
        TensorScatter => {
            let (cache, update) = (input(inputs, 0)?, input(inputs, 1)?);
            let axis = scatter_axis(a, cache.shape.len())?;
            if update.dtype != cache.dtype {
                return Err(format!(
                    "update is {} but the cache is {}",
                    update.dtype, cache.dtype
                ));
            }
            let differs = update.shape.len() != cache.shape.len()
                || (0..cache.shape.len())
                    .any(|i| i != axis && provably_different(&update.shape[i], &cache.shape[i]));
            if differs {
                return Err(format!(
                    "update {} does not match the cache {} outside axis {axis}",
                    fmt_shape(&update.shape),
                    fmt_shape(&cache.shape)
                ));
            }
            if let Some(w) = opt_input(inputs, 2) {
                if !w.dtype.is_int() || w.shape.len() != 1 {
                    return Err("write_indices must be an integer vector of length batch".into());
                }
            }
            match a.str("mode")? {
                "linear" | "circular" => one(vt(cache.dtype, cache.shape.clone())),
                other => Err(format!("mode `{other}` is not `linear` or `circular`")),
            }
        }
        Expand => {
            let x = input(inputs, 0)?;
            let target = shape_from_input(inputs, 1)?;
            one(with_sym(
                vt(x.dtype, broadcast_shapes(&[&x.shape, &target])?),
                None,
            ))
        }
        Tile => {
            let x = input(inputs, 0)?;
            let shape = match sym_of(inputs, 1) {
                Some(r) if r.len() == x.shape.len() => {
                    x.shape.iter().zip(r).map(|(d, r)| d * r).collect()
                }
                _ => unknown_shape(x.shape.len()),
            };
            one(vt(x.dtype, shape))
        }
        Shape => {
            let x = input(inputs, 0)?;
            let r = x.shape.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clamp(a.int("start")?);
            let end = match a.get("end") {
                Some(_) => clamp(a.int("end")?),
                None => r as usize,
            };
            let dims: Vec<Dim> = x.shape[start..end.max(start)].to_vec();
            one(with_sym(
                vt(DType::I64, vec![Dim::from(dims.len())]),
                Some(dims),
            ))
        }
        Size => {
            let x = input(inputs, 0)?;
            let n = x.shape.iter().fold(Dim::known(1), |acc, d| &acc * d);
            one(with_sym(vt(DType::I64, vec![]), Some(vec![n])))
        }
        ConstantOfShape => {
            let value = a.tensor("value")?;
            let shape = shape_from_input(inputs, 0)?;
            let sym = match (
                value.dtype().is_int(),
                shape.iter().map(Dim::as_known).collect::<Option<Vec<_>>>(),
            ) {
                (true, Some(s)) if s.len() <= 1 => {
                    let v = Tensor::from_data(value)
                        .to_i64_vec()
                        .first()
                        .copied()
                        .unwrap_or(0);
                    Some(vec![
                        Dim::known(v);
                        s.iter().product::<i64>().max(0) as usize
                    ])
                }
                _ => None,
            };
            one(with_sym(vt(value.dtype(), shape), sym))
        }
        Range => {
            let dtype = same_dtype(inputs, &[0, 1, 2])?;
            let len = match (sym_of(inputs, 0), sym_of(inputs, 1), sym_of(inputs, 2)) {
                (Some([s]), Some([l]), Some([d])) => {
                    match (s.as_known(), l.as_known(), d.as_known()) {
                        (Some(s), Some(l), Some(d)) if d != 0 => {
                            Dim::known(((l as f64 - s as f64) / d as f64).ceil().max(0.0) as i64)
                        }
                        _ if d.is(1) => l - s,
                        _ => Dim::unknown(),
                    }
                }
                _ => Dim::unknown(),
            };
            one(vt(dtype, vec![len]))
        }
        SymbolicDims => {
            let dims = a.dims("dims")?.to_vec();
            let shape = if a.get("scalar").is_some() && a.int("scalar")? != 0 {
                vec![]
            } else {
                vec![Dim::from(dims.len())]
            };
            one(with_sym(vt(DType::I64, shape), Some(dims)))
        }
        Attention => attention_types(a, inputs),
        FusedAttention => {
            for i in 0..3 {
                if float_input(inputs, i)?.shape.len() != 4 {
                    return Err(format!("input {i} must be 4-D [batch, heads, seq, head]"));
                }
            }
            Ok(attention_types(a, inputs)?.into_iter().take(1).collect())
        }
        Silu | RopeRotateHalf => one(float_input(inputs, 0)?.clone()),
        SwiGlu => {
            let dtype = same_dtype(inputs, &[0, 1])?;
            one(vt(
                dtype,
                broadcast_shapes(&[&input(inputs, 0)?.shape, &input(inputs, 1)?.shape])?,
            ))
        }
        FusedMatMul => {
            let dtype = same_dtype_present(inputs, &[0, 1, 2])?;
            let mut shape = matmul_shape(&input(inputs, 0)?.shape, &input(inputs, 1)?.shape)?;
            if let Some(bias) = opt_input(inputs, 2) {
                shape = broadcast_shapes(&[&shape, &bias.shape])?;
            }
            one(vt(dtype, shape))
        }
        QuantizeLinear => {
            let x = input(inputs, 0)?;
            let dtype = match (opt_input(inputs, 2), a.get("output_dtype")) {
                (Some(z), _) => z.dtype,
                (None, Some(_)) => a.str("output_dtype")?.parse()?,
                (None, None) => DType::U8,
            };
            one(vt(dtype, x.shape.clone()))
        }
        DequantizeLinear => one(vt(input(inputs, 1)?.dtype, input(inputs, 0)?.shape.clone())),
        DynamicQuantizeLinear => {
            let x = float_input(inputs, 0)?;
            Ok(vec![
                vt(DType::U8, x.shape.clone()),
                vt(DType::F32, vec![]),
                vt(DType::U8, vec![]),
            ])
        }
    }
}

/// Output types when the axes or split sizes arrive only at run time: the rank follows from
/// the list's length, the sizes are unknown.
fn runtime_list_types(op: &Op, x: &ValueType, list: &ValueType) -> Res<Vec<ValueType>> {
    use OpKind::*;
    let n = match list.shape.as_slice() {
        [n] => n.as_known().ok_or("the axes input has unknown length")? as usize,
        _ => return Err("the axes or split input must be 1-D".into()),
    };
    let rank = x.shape.len();
    let out_rank = match op.kind {
        Unsqueeze => rank + n,
        Squeeze => rank.checked_sub(n).ok_or("more axes than dims")?,
        Split => {
            let axis = norm_axis(op.attrs.int("axis")?, rank)?;
            let mut shape = x.shape.clone();
            shape[axis] = Dim::unknown();
            return Ok(vec![vt(x.dtype, shape); n]);
        }
        _ if op.attrs.int("keepdims")? != 0 => rank,
        _ if n == 0 => {
            return Err(
                "reducing over a run-time empty axes list without keepdims has an unknown rank"
                    .into(),
            )
        }
        _ => rank.checked_sub(n).ok_or("more axes than dims")?,
    };
    Ok(vec![vt(x.dtype, unknown_shape(out_rank))])
}

fn check_same_dim(x: &Dim, y: &Dim, what: &str) -> Res<()> {
    match (x.as_known(), y.as_known()) {
        (Some(p), Some(q)) if p != q => Err(format!("{what} differ: {p} and {q}")),
        _ => Ok(()),
    }
}

/// Applies `f` elementwise with numpy broadcasting of a one-element side.
fn zip_sym(
    x: Option<&[Dim]>,
    y: Option<&[Dim]>,
    f: impl Fn(&Dim, &Dim) -> Option<Dim>,
) -> Option<Vec<Dim>> {
    let (x, y) = (x?, y?);
    let n = x.len().max(y.len());
    if !(x.len() == n || x.len() == 1) || !(y.len() == n || y.len() == 1) {
        return None;
    }
    (0..n)
        .map(|i| f(&x[i % x.len()], &y[i % y.len()]))
        .collect()
}

fn binary_sym(kind: OpKind, x: Option<&[Dim]>, y: Option<&[Dim]>) -> Option<Vec<Dim>> {
    zip_sym(x, y, |p, q| match kind {
        OpKind::Add => Some(p + q),
        OpKind::Sub => Some(p - q),
        OpKind::Mul => Some(p * q),
        OpKind::Div => match (p.as_known(), q.as_known()) {
            (Some(a), Some(b)) if b != 0 => Some(Dim::known(a / b)),
            _ => p.div_exact(q),
        },
        OpKind::Max | OpKind::Min => {
            let (a, b) = (p.as_known()?, q.as_known()?);
            Some(Dim::known(if kind == OpKind::Max {
                a.max(b)
            } else {
                a.min(b)
            }))
        }
        _ => None,
    })
}

/// Comparisons that can be decided statically: constants, or a (non-negative) size against a negative constant.
fn compare_sym(kind: OpKind, x: Option<&[Dim]>, y: Option<&[Dim]>) -> Option<Vec<Dim>> {
    zip_sym(x, y, |p, q| {
        let known = match (p.as_known(), q.as_known()) {
            (Some(a), Some(b)) => Some((a, b)),
            _ => None,
        };
        let result = match (kind, known) {
            (OpKind::Equal, Some((a, b))) => a == b,
            (OpKind::Equal, None) if p == q => true,
            (OpKind::Equal, None) => {
                let negative_const = |d: &Dim| d.as_known().is_some_and(|v| v < 0);
                if negative_const(p) || negative_const(q) {
                    false
                } else {
                    return None;
                }
            }
            (OpKind::Less, Some((a, b))) => a < b,
            (OpKind::Greater, Some((a, b))) => a > b,
            (OpKind::LessOrEqual, Some((a, b))) => a <= b,
            (OpKind::GreaterOrEqual, Some((a, b))) => a >= b,
            (OpKind::And, Some((a, b))) => a != 0 && b != 0,
            (OpKind::Or, Some((a, b))) => a != 0 || b != 0,
            _ => return None,
        };
        Some(Dim::known(result as i64))
    })
}

fn where_sym(c: Option<&[Dim]>, x: Option<&[Dim]>, y: Option<&[Dim]>) -> Option<Vec<Dim>> {
    let (c, x, y) = (c?, x?, y?);
    let n = c.len().max(x.len()).max(y.len());
    if [c.len(), x.len(), y.len()]
        .iter()
        .any(|&l| l != n && l != 1)
    {
        return None;
    }
    (0..n)
        .map(|i| {
            let cond = c[i % c.len()].as_known()?;
            Some(if cond != 0 {
                x[i % x.len()].clone()
            } else {
                y[i % y.len()].clone()
            })
        })
        .collect()
}

/// The output shape of numpy `matmul`.
pub fn matmul_shape(x: &Shape, y: &Shape) -> Res<Shape> {
    if x.is_empty() || y.is_empty() {
        return Err("matmul inputs must have rank at least 1".into());
    }
    let xs: Shape = if x.len() == 1 {
        vec![Dim::known(1), x[0].clone()]
    } else {
        x.clone()
    };
    let ys: Shape = if y.len() == 1 {
        vec![y[0].clone(), Dim::known(1)]
    } else {
        y.clone()
    };
    let (m, k1) = (&xs[xs.len() - 2], &xs[xs.len() - 1]);
    let (k2, n) = (&ys[ys.len() - 2], &ys[ys.len() - 1]);
    check_same_dim(k1, k2, "matmul inner dimensions")?;
    let batch = broadcast_shapes(&[&xs[..xs.len() - 2].to_vec(), &ys[..ys.len() - 2].to_vec()])?;
    let mut out = batch;
    if x.len() > 1 {
        out.push(m.clone());
    }
    if y.len() > 1 {
        out.push(n.clone());
    }
    Ok(out)
}

/// Parses an einsum equation into per-input label lists (with `.` standing for an ellipsis)
/// and the output labels (implicit output: labels seen once, sorted, after the ellipsis).
pub fn parse_einsum(equation: &str, n_inputs: usize) -> Res<(Vec<Vec<char>>, Vec<char>)> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let labels = |s: &str| -> Res<Vec<char>> {
        let s = s.replace("...", ".");
        if s.chars().any(|c| !(c.is_ascii_alphabetic() || c == '.')) || s.matches('.').count() > 1 {
            return Err(format!("bad einsum term `{s}` in `{equation}`"));
        }
        Ok(s.chars().collect())
    };
    let terms: Vec<Vec<char>> = lhs.split(',').map(labels).collect::<Res<_>>()?;
    if terms.len() != n_inputs {
        return Err(format!(
            "einsum `{equation}` has {} terms for {n_inputs} inputs",
            terms.len()
        ));
    }
    let out = match rhs {
        Some(r) => labels(&r)?,
        None => {
            let mut counts = std::collections::BTreeMap::new();
            for c in terms.iter().flatten().filter(|c| **c != '.') {
                *counts.entry(*c).or_insert(0) += 1;
            }
            let mut o: Vec<char> = if terms.iter().any(|t| t.contains(&'.')) {
                vec!['.']
            } else {
                vec![]
            };
            o.extend(counts.into_iter().filter(|(_, n)| *n == 1).map(|(c, _)| c));
            o
        }
    };
    Ok((terms, out))
}

fn einsum_shape(equation: &str, shapes: &[&Shape]) -> Res<Shape> {
    let (terms, out) = parse_einsum(equation, shapes.len())?;
    let mut sizes: std::collections::HashMap<char, Dim> = Default::default();
    let mut ellipsis: Vec<&Shape> = vec![];
    let mut owned = vec![];
    for (t, s) in terms.iter().zip(shapes) {
        let named = t.iter().filter(|c| **c != '.').count();
        if s.len() < named || (!t.contains(&'.') && s.len() != named) {
            return Err(format!(
                "einsum term `{}` does not match rank {}",
                t.iter().collect::<String>(),
                s.len()
            ));
        }
        let ell_len = s.len() - named;
        let mut pos = 0;
        for c in t {
            if *c == '.' {
                owned.push(s[pos..pos + ell_len].to_vec());
                pos += ell_len;
            } else {
                let d = &s[pos];
                match sizes.get(c) {
                    Some(prev) if !prev.is(1) && !d.is(1) => {
                        check_same_dim(prev, d, "einsum label sizes")?
                    }
                    Some(prev) if !prev.is(1) => {}
                    _ => {
                        sizes.insert(*c, d.clone());
                    }
                }
                pos += 1;
            }
        }
    }
    ellipsis.extend(owned.iter());
    let ell = broadcast_shapes(&ellipsis)?;
    let mut shape = vec![];
    for c in out {
        if c == '.' {
            shape.extend(ell.iter().cloned());
        } else {
            shape.push(
                sizes
                    .get(&c)
                    .cloned()
                    .ok_or_else(|| format!("output label `{c}` is not an input label"))?,
            );
        }
    }
    Ok(shape)
}

/// The reduced axes of a Reduce* op (sorted), or `None` for a no-op reduction.
pub fn reduce_axes(a: &Attrs, rank: usize) -> Res<Option<Vec<usize>>> {
    match a.opt_ints("axes")? {
        Some(ax) if !ax.is_empty() => {
            let mut v: Vec<usize> = ax.iter().map(|&x| norm_axis(x, rank)).collect::<Res<_>>()?;
            v.sort_unstable();
            v.dedup();
            Ok(Some(v))
        }
        _ if a.int("noop_with_empty_axes")? != 0 => Ok(None),
        _ => Ok(Some((0..rank).collect())),
    }
}

fn reduce_shape(a: &Attrs, shape: &Shape) -> Res<Shape> {
    let Some(axes) = reduce_axes(a, shape.len())? else {
        return Ok(shape.clone());
    };
    let keep = a.int("keepdims")? != 0;
    Ok(shape
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match (axes.contains(&i), keep) {
            (false, _) => Some(d.clone()),
            (true, true) => Some(Dim::known(1)),
            (true, false) => None,
        })
        .collect())
}

/// The permutation of a Transpose (reversed axes when the attribute is absent), validated.
pub fn transpose_perm(a: &Attrs, rank: usize) -> Res<Vec<usize>> {
    let perm: Vec<usize> = match a.opt_ints("perm")? {
        Some(p) => p.iter().map(|&v| norm_axis(v, rank)).collect::<Res<_>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..rank).collect::<Vec<_>>() {
        return Err(format!("perm {perm:?} is not a permutation of rank {rank}"));
    }
    Ok(perm)
}

/// Resolves a Reshape target (0 copies the input dim unless `allowzero`, -1 is inferred).
pub fn reshape_shape(input: &Shape, target: &Shape, allowzero: bool) -> Res<Shape> {
    let mut out: Shape = target
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if d.is(0) && !allowzero {
                input.get(i).cloned().ok_or_else(|| {
                    format!("target dim {i} is 0 but the input has rank {}", input.len())
                })
            } else {
                Ok(d.clone())
            }
        })
        .collect::<Res<_>>()?;
    let infer: Vec<usize> = (0..out.len()).filter(|&i| out[i].is(-1)).collect();
    if infer.len() > 1 {
        return Err("more than one -1 in the target shape".into());
    }
    if let Some(d) = out.iter().find(|d| d.as_known().is_some_and(|v| v < -1)) {
        return Err(format!("negative dim {d} in the target shape"));
    }
    let total = input.iter().fold(Dim::known(1), |acc, d| &acc * d);
    if let Some(&i) = infer.first() {
        let rest = out
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .fold(Dim::known(1), |acc, (_, d)| &acc * d);
        out[i] = if total.is_unknown() || rest.is_unknown() {
            Dim::unknown()
        } else {
            total.div_exact(&rest).ok_or_else(|| {
                format!(
                    "cannot reshape {} into {}",
                    fmt_shape(input),
                    fmt_shape(target)
                )
            })?
        };
    } else {
        let prod = out.iter().fold(Dim::known(1), |acc, d| &acc * d);
        if provably_different(&prod, &total) {
            return Err(format!(
                "cannot reshape {} ({total} elements) into {} ({prod} elements)",
                fmt_shape(input),
                fmt_shape(target)
            ));
        }
    }
    Ok(out)
}

/// True if dims `a` and `b` differ whatever sizes their symbols take: their difference is a
/// non-zero constant, or its constant term is not a multiple of the gcd of its other
/// coefficients (so `64*batch*seq` and `448` may be equal, `64*batch*seq` and `441` never).
pub fn provably_different(a: &Dim, b: &Dim) -> bool {
    let d = a - b;
    if d.is_unknown() {
        return false;
    }
    if let Some(v) = d.as_known() {
        return v != 0;
    }
    let symbols: Vec<String> = d.symbols().iter().map(|s| s.to_string()).collect();
    let at = |value: &dyn Fn(usize) -> i64| {
        let bindings = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), value(i)))
            .collect();
        d.eval(&bindings)
    };
    let Some(constant) = at(&|_| 0) else {
        return false;
    };
    let rest = &d - &Dim::known(constant);
    // Every value of `rest` is a multiple of the gcd of its coefficients, so the gcd of a few
    // of its values is too; the coefficients' gcd is that value's largest divisor that divides
    // every coefficient (which `div_exact` decides exactly).
    let mut values = 0u64;
    for k in 0..=symbols.len() {
        let Some(v) = at(&|i| if i == k { 2 } else { 1 }) else {
            return false;
        };
        values = gcd(values, v.wrapping_sub(constant).unsigned_abs());
    }
    if values == 0 || values > 1 << 40 {
        return false;
    }
    let divides_rest = |g: u64| rest.div_exact(&Dim::known(g as i64)).is_some();
    let mut best = 1;
    let mut i = 1;
    while i * i <= values {
        if values.is_multiple_of(i) {
            for g in [i, values / i] {
                if g > best && divides_rest(g) {
                    best = g;
                }
            }
        }
        i += 1;
    }
    !constant.unsigned_abs().is_multiple_of(best)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn concat_type(a: &Attrs, inputs: &[Option<&ValueType>]) -> Res<ValueType> {
    let n = inputs.len();
    if n == 0 {
        return Err("Concat needs at least one input".into());
    }
    let dtype = same_dtype(inputs, &(0..n).collect::<Vec<_>>())?;
    let first = input(inputs, 0)?;
    if first.shape.is_empty() {
        return Err("cannot concatenate scalars".into());
    }
    let axis = norm_axis(a.int("axis")?, first.shape.len())?;
    let mut shape = first.shape.clone();
    shape[axis] = Dim::known(0);
    let mut sym = Some(vec![]);
    for i in 0..n {
        let t = input(inputs, i)?;
        if t.shape.len() != shape.len() {
            return Err(format!(
                "input {i} has rank {} but input 0 has rank {}",
                t.shape.len(),
                shape.len()
            ));
        }
        shape[axis] = &shape[axis] + &t.shape[axis];
        sym = match (sym, &t.sym) {
            (Some(mut acc), Some(s)) if t.shape.len() == 1 => {
                acc.extend(s.iter().cloned());
                Some(acc)
            }
            _ => None,
        };
    }
    Ok(with_sym(vt(dtype, shape), sym))
}

fn split_types(a: &Attrs, inputs: &[Option<&ValueType>]) -> Res<Vec<ValueType>> {
    let x = input(inputs, 0)?;
    let axis = norm_axis(a.int("axis")?, x.shape.len())?;
    let sizes: Vec<Dim> = match a.opt_ints("split")? {
        Some(s) => s.iter().map(|&v| Dim::known(v)).collect(),
        None => {
            let n = a.int("num_outputs")?;
            let d = &x.shape[axis];
            match d.as_known() {
                Some(total) => {
                    let chunk = (total + n - 1) / n;
                    (0..n)
                        .map(|i| Dim::known(chunk.min(total - i * chunk).max(0)))
                        .collect()
                }
                None => vec![d.div_exact(&Dim::known(n)).unwrap_or_else(Dim::unknown); n as usize],
            }
        }
    };
    Ok(sizes
        .into_iter()
        .map(|s| {
            let mut shape = x.shape.clone();
            shape[axis] = s;
            vt(x.dtype, shape)
        })
        .collect())
}

fn slice_type(inputs: &[Option<&ValueType>]) -> Res<ValueType> {
    let x = input(inputs, 0)?;
    let rank = x.shape.len();
    let starts = sym_of(inputs, 1);
    let ends = sym_of(inputs, 2);
    let n = input(inputs, 1)?.shape.first().and_then(Dim::as_known);
    let axes: Option<Vec<i64>> = match opt_input(inputs, 3) {
        Some(_) => const_ints(inputs, 3),
        None => n.map(|n| (0..n).collect()),
    };
    let steps: Option<Vec<i64>> = match opt_input(inputs, 4) {
        Some(_) => const_ints(inputs, 4),
        None => n.map(|n| vec![1; n as usize]),
    };
    let (Some(starts), Some(ends), Some(axes), Some(steps)) = (starts, ends, axes, steps) else {
        // Which axes change is unknown: every dim may.
        return Ok(vt(x.dtype, unknown_shape(rank)));
    };
    let n = starts.len();
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err("starts, ends, axes and steps must have the same length".into());
    }
    if rank == 0 {
        return Err("cannot slice a scalar".into());
    }
    let mut shape = x.shape.clone();
    let mut sym = x.sym.clone();
    for (k, &ax) in axes.iter().enumerate() {
        let ax = norm_axis(ax, rank)?;
        let step = steps[k];
        if step == 0 {
            return Err("slice step cannot be 0".into());
        }
        let dim = &x.shape[ax];
        let (s, e) = (&starts[k], &ends[k]);
        match (dim.as_known(), s.as_known(), e.as_known()) {
            (Some(d), Some(s), Some(e)) => {
                let (lo, hi) = slice_bounds(d, s, e, step);
                let taken = slice_indices(lo, hi, step);
                shape[ax] = Dim::from(taken.len());
                if let (Some(vals), 1) = (&sym, rank) {
                    sym = Some(taken.iter().map(|&i| vals[i].clone()).collect());
                }
            }
            (None, Some(0), Some(e)) if step == 1 && e >= i32::MAX as i64 => {}
            (None, Some(s), Some(e)) if step == 1 && s >= 0 && e >= i32::MAX as i64 => {
                shape[ax] = dim - &Dim::known(s);
                sym = None;
            }
            (_, Some(0), None) if step == 1 => {
                // Slicing [0, e) of a symbolic dim: e itself when e <= dim (as exports use it).
                shape[ax] = e.clone();
                sym = None;
            }
            _ => {
                shape[ax] = Dim::unknown();
                sym = None;
            }
        }
    }
    Ok(with_sym(vt(x.dtype, shape), sym))
}

/// The indices a slice takes from clamped bounds `[lo, hi)` (see [`slice_bounds`]) by `step`,
/// computed without overflow for any step.
pub fn slice_indices(lo: i64, hi: i64, step: i64) -> Vec<usize> {
    let (lo, hi, step) = (lo as i128, hi as i128, step as i128);
    let len = if step > 0 {
        (hi - lo + step - 1).div_euclid(step)
    } else {
        (lo - hi - step - 1).div_euclid(-step)
    };
    (0..len.max(0)).map(|i| (lo + i * step) as usize).collect()
}

/// Clamped slice bounds `[lo, hi)` (for negative steps, `lo` is the first index taken).
pub fn slice_bounds(dim: i64, start: i64, end: i64, step: i64) -> (i64, i64) {
    let adj = |v: i64| if v < 0 { v + dim } else { v };
    if step > 0 {
        (adj(start).clamp(0, dim), adj(end).clamp(0, dim))
    } else {
        (adj(start).clamp(-1, dim - 1), adj(end).clamp(-1, dim - 1))
    }
}

fn attention_types(a: &Attrs, inputs: &[Option<&ValueType>]) -> Res<Vec<ValueType>> {
    let (q, k, v) = (
        float_input(inputs, 0)?,
        float_input(inputs, 1)?,
        float_input(inputs, 2)?,
    );
    let rank = q.shape.len();
    if rank != 3 && rank != 4 || k.shape.len() != rank || v.shape.len() != rank {
        return Err("Q, K and V must all be 3-D or all 4-D".into());
    }
    // Normalise to [batch, heads, seq, head_size].
    let heads4 = |t: &ValueType, heads_attr: &str| -> Res<Shape> {
        if rank == 4 {
            return Ok(t.shape.clone());
        }
        let h = a.int(heads_attr)?;
        let e = t.shape[2]
            .div_exact(&Dim::known(h))
            .unwrap_or_else(Dim::unknown);
        Ok(vec![
            t.shape[0].clone(),
            Dim::known(h),
            t.shape[1].clone(),
            e,
        ])
    };
    let (q4, k4, v4) = (
        heads4(q, "q_num_heads")?,
        heads4(k, "kv_num_heads")?,
        heads4(v, "kv_num_heads")?,
    );
    let past_len = opt_input(inputs, 4)
        .map(|p| p.shape[2].clone())
        .unwrap_or_default();
    let total = &past_len + &k4[2];
    let y = if rank == 4 {
        vec![q4[0].clone(), q4[1].clone(), q4[2].clone(), v4[3].clone()]
    } else {
        vec![q.shape[0].clone(), q.shape[1].clone(), &q4[1] * &v4[3]]
    };
    Ok(vec![
        vt(q.dtype, y),
        vt(
            k.dtype,
            vec![k4[0].clone(), k4[1].clone(), total.clone(), k4[3].clone()],
        ),
        vt(
            v.dtype,
            vec![v4[0].clone(), v4[1].clone(), total.clone(), v4[3].clone()],
        ),
        vt(
            q.dtype,
            vec![q4[0].clone(), q4[1].clone(), q4[2].clone(), total],
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::{provably_different, reshape_shape};
    use crate::{interp, text, Dim};
    use std::collections::HashMap;

    fn dims(s: &[&str]) -> Vec<Dim> {
        s.iter().map(|d| d.parse().unwrap()).collect()
    }

    #[test]
    fn dims_are_provably_different_only_when_no_sizes_make_them_equal() {
        let d = |s: &str| s.parse::<Dim>().unwrap();
        assert!(provably_different(&d("448"), &d("1024")));
        assert!(!provably_different(&d("448"), &d("448")));
        // 64*b*s = 448 at b*s = 7; 64*b*s = 441 never; 64*b = 64*b*s at s = 1 or b = 0.
        assert!(!provably_different(&d("64*batch*seq"), &d("448")));
        assert!(provably_different(&d("64*batch*seq"), &d("441")));
        assert!(!provably_different(&d("64*batch"), &d("64*batch*seq")));
        assert!(provably_different(&d("6*seq+4*batch"), &d("7")));
        assert!(!provably_different(&d("6*seq+4*batch"), &d("10")));
        assert!(provably_different(&d("2*seq+1"), &d("2*seq")));
        assert!(!provably_different(&d("?"), &d("3")));
    }

    #[test]
    fn reshape_targets_with_provably_wrong_counts_are_refused() {
        let input = dims(&["batch", "seq", "64"]);
        assert!(reshape_shape(&input, &dims(&["7", "64"]), false).is_ok());
        assert!(reshape_shape(&input, &dims(&["0", "64"]), false).is_ok());
        let e = reshape_shape(&input, &dims(&["7", "63"]), false).unwrap_err();
        assert_eq!(
            e,
            "cannot reshape [batch, seq, 64] (64*batch*seq elements) into [7, 63] (441 elements)"
        );
        let fixed = dims(&["1", "16", "64"]);
        assert!(reshape_shape(&fixed, &dims(&["7", "64"]), false).is_err());
        assert!(reshape_shape(&fixed, &dims(&["0", "64"]), false).is_err());
        // Empty tensors reshape to any target with a zero in it.
        let empty = dims(&["0", "4"]);
        assert!(reshape_shape(&empty, &dims(&["0", "7"]), true).is_ok());
        assert!(reshape_shape(&empty, &dims(&["1", "7"]), true).is_err());
    }

    /// Graphs found by fuzzing that once panicked in inference or the interpreter: each must
    /// now parse and run to a value or fail with an error.
    #[test]
    fn extreme_slices_ranges_and_scalars_do_not_panic() {
        let cases = [
            "const %x: f32[4] = [1.0, 2.0, 3.0, 4.0]\nconst %s: i64[1] = [0]\nconst %e: i64[1] = [4]\n\
             const %a: i64[1] = [0]\nconst %k: i64[1] = [9223372036854775807]\n%y = Slice(%x, %s, %e, %a, %k)\noutput y = %y",
            "const %x: f32[4] = [1.0, 2.0, 3.0, 4.0]\nconst %s: i64[1] = [3]\nconst %e: i64[1] = [-9223372036854775808]\n\
             const %a: i64[1] = [0]\nconst %k: i64[1] = [-9223372036854775808]\n%y = Slice(%x, %s, %e, %a, %k)\noutput y = %y",
            "const %x: f32[] = [1.0]\nconst %i: i64[] = [0]\n%y = Gather[axis=0](%x, %i)\noutput y = %y",
            "const %x: f32[] = [1.0]\n%y = Concat[axis=0](%x, %x)\noutput y = %y",
            "const %s: i64[] = [-9223372036854775808]\nconst %l: i64[] = [9223372036854775807]\n\
             const %d: i64[] = [1099511627776]\n%y = Range(%s, %l, %d)\noutput y = %y",
        ];
        for body in cases {
            let source = format!("kiln graph v1\n{body}\n");
            if let Ok(graph) = text::parse(&source) {
                let _ = interp::run(&graph, &HashMap::new());
            }
        }
    }
}

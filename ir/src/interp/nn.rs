//! Softmax, the normalisations and the fused transformer ops (Attention, RotaryEmbedding).
//!
//! Inputs of every float width are read as f32 and the results rounded back to the input dtype;
//! reductions (means, variances, softmax denominators, dot products) and transcendental functions
//! are evaluated in f64, so the oracle is at least as accurate as any f32 implementation.
//! Semantics follow the ONNX operators (Softmax/LogSoftmax opset 13, LayerNormalization 17,
//! RMSNormalization, Attention and RotaryEmbedding 23, with the ONNX Python reference
//! implementation settling what the spec text leaves open) and onnxruntime's contrib ops
//! (SimplifiedLayerNormalization, SkipLayerNormalization, SkipSimplifiedLayerNormalization).

use super::*;
use crate::infer::norm_axis;
use ndarray::{Axis, IxDyn};

pub(super) fn eval(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Vec<Tensor>> {
    use OpKind::*;
    let a = &op.attrs;
    match op.kind {
        Softmax => softmax(inputs, a.int("axis")?, false),
        LogSoftmax => softmax(inputs, a.int("axis")?, true),
        LayerNormalization => layer_norm(inputs, a.int("axis")?, a.float("epsilon")?, true),
        RMSNormalization | SimplifiedLayerNormalization => {
            layer_norm(inputs, a.int("axis")?, a.float("epsilon")?, false)
        }
        SkipLayerNormalization => skip_layer_norm(inputs, a.float("epsilon")?, true),
        SkipSimplifiedLayerNormalization => skip_layer_norm(inputs, a.float("epsilon")?, false),
        Attention => attention(op, inputs),
        RotaryEmbedding => rotary_embedding(op, inputs),
        _ => Err(format!(
            "{} is not a normalisation or attention op",
            op.kind
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax

/// Softmax (or log-softmax) along one axis, stabilised by subtracting the lane maximum.
/// A lane that is entirely -inf gives NaN, as in ONNX.
fn softmax(inputs: &[Option<&Tensor>], axis: i64, log: bool) -> Res<Vec<Tensor>> {
    let dtype = input(inputs, 0)?.dtype();
    let mut x = float_input(inputs, 0)?;
    if x.ndim() == 0 {
        return Err("softmax input must have rank at least 1".into());
    }
    let axis = norm_axis(axis, x.ndim())?;
    for mut lane in x.lanes_mut(Axis(axis)) {
        let max = lane.fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let sum: f64 = lane.iter().map(|&v| (v as f64 - max).exp()).sum();
        if log {
            let log_sum = sum.ln();
            lane.mapv_inplace(|v| (v as f64 - max - log_sum) as f32);
        } else {
            lane.mapv_inplace(|v| ((v as f64 - max).exp() / sum) as f32);
        }
    }
    Ok(vec![from_f32(dtype, x)])
}

// ---------------------------------------------------------------------------------------------
// Normalisations

/// A scale or bias input of a normalisation over the axes `[axis, rank)` of X, unidirectionally
/// broadcast to X. X is viewed as a matrix of `rows` x `cols` (outer x normalised elements); the
/// parameter value at row `r`, column `c` is `data[r * row_stride + c]`, where `row_stride` is 0
/// when the parameter only varies over the normalised axes (the usual case).
struct Param {
    data: Vec<f32>,
    row_stride: usize,
}

impl Param {
    fn new(p: &ArrayD<f32>, x_shape: &[usize], axis: usize, what: &str) -> Res<Param> {
        let err = || {
            format!(
                "{what} of shape {:?} does not broadcast to {:?}",
                p.shape(),
                x_shape
            )
        };
        let inner = &x_shape[axis..];
        let lead = p.ndim().saturating_sub(inner.len());
        if p.ndim() <= x_shape.len() && p.shape()[..lead].iter().all(|&d| d == 1) {
            let mut v = p.view();
            for _ in 0..lead {
                v = v.index_axis_move(Axis(0), 0);
            }
            let data = v
                .broadcast(IxDyn(inner))
                .ok_or_else(err)?
                .iter()
                .copied()
                .collect();
            return Ok(Param {
                data,
                row_stride: 0,
            });
        }
        let data = p
            .broadcast(IxDyn(x_shape))
            .ok_or_else(err)?
            .iter()
            .copied()
            .collect();
        Ok(Param {
            data,
            row_stride: inner.iter().product(),
        })
    }

    fn at(&self, row: usize, col: usize) -> f64 {
        self.data[row * self.row_stride + col] as f64
    }
}

/// The per-row results of [`normalize`].
struct Normalized {
    y: Vec<f32>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

/// Normalises each of the `rows` rows of the row-major matrix `x` (`cols` elements per row):
/// `y = (x - mean) * inv_std * scale + bias` with `inv_std = 1 / sqrt(var + eps)` (LayerNorm),
/// or, when `center` is false, `y = x * inv_std * scale + bias` with
/// `inv_std = 1 / sqrt(mean(x^2) + eps)` (RMSNorm; `mean` is then all zeros). An empty row
/// (`cols` 0) has NaN statistics, as numpy's mean of nothing.
fn normalize(
    x: &[f32],
    rows: usize,
    cols: usize,
    center: bool,
    eps: f32,
    scale: &Param,
    bias: Option<&Param>,
) -> Normalized {
    let mut out = Normalized {
        y: Vec::with_capacity(x.len()),
        mean: vec![],
        inv_std: vec![],
    };
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mean = if center {
            row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64
        } else {
            0.0
        };
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
        let inv_std = 1.0 / (var + eps as f64).sqrt();
        out.y.extend(row.iter().enumerate().map(|(c, &v)| {
            let b = bias.map_or(0.0, |b| b.at(r, c));
            ((v as f64 - mean) * inv_std * scale.at(r, c) + b) as f32
        }));
        out.mean.push(mean as f32);
        out.inv_std.push(inv_std as f32);
    }
    out
}

/// LayerNormalization (`center`; inputs X, Scale, B?; outputs Y, Mean, InvStdDev) or
/// RMSNormalization / SimplifiedLayerNormalization (inputs X, scale; outputs Y, InvStdDev).
/// Statistics are f32 with the normalised axes kept as size 1.
fn layer_norm(inputs: &[Option<&Tensor>], axis: i64, eps: f32, center: bool) -> Res<Vec<Tensor>> {
    let dtype = input(inputs, 0)?.dtype();
    let x = float_input(inputs, 0)?;
    if x.ndim() == 0 {
        return Err("normalisation input must have rank at least 1".into());
    }
    let shape = x.shape().to_vec();
    let axis = norm_axis(axis, shape.len())?;
    let scale = Param::new(&float_input(inputs, 1)?, &shape, axis, "scale")?;
    let bias = match (center, opt_input(inputs, 2)) {
        (true, Some(_)) => Some(Param::new(&float_input(inputs, 2)?, &shape, axis, "bias")?),
        _ => None,
    };
    let data: Vec<f32> = x.iter().copied().collect();
    let n = normalize(
        &data,
        shape[..axis].iter().product(),
        shape[axis..].iter().product(),
        center,
        eps,
        &scale,
        bias.as_ref(),
    );
    let mut stat_shape = shape.clone();
    stat_shape[axis..].fill(1);
    let y = from_f32(dtype, array(&shape, n.y)?);
    let inv_std = Tensor::F32(array(&stat_shape, n.inv_std)?);
    Ok(if center {
        vec![y, Tensor::F32(array(&stat_shape, n.mean)?), inv_std]
    } else {
        vec![y, inv_std]
    })
}

/// onnxruntime's SkipLayerNormalization (`center`; inputs input, skip, gamma, beta?, bias?) and
/// SkipSimplifiedLayerNormalization (inputs input, skip, gamma, bias?): normalises
/// `s = input + skip (+ bias)` over the last axis. Outputs output, mean (zeros when not
/// centred), inv_std_var, and `s` itself.
fn skip_layer_norm(inputs: &[Option<&Tensor>], eps: f32, center: bool) -> Res<Vec<Tensor>> {
    let dtype = input(inputs, 0)?.dtype();
    let x = float_input(inputs, 0)?;
    if x.ndim() == 0 {
        return Err("input must have rank at least 1".into());
    }
    let shape = x.shape().to_vec();
    let axis = shape.len() - 1;
    let skip = float_input(inputs, 1)?;
    let skip = skip.broadcast(IxDyn(&shape)).ok_or_else(|| {
        format!(
            "skip of shape {:?} does not broadcast to {:?}",
            skip.shape(),
            shape
        )
    })?;
    let mut sum = x + &skip;
    let (beta_idx, bias_idx) = if center { (Some(3), 4) } else { (None, 3) };
    if opt_input(inputs, bias_idx).is_some() {
        let bias = float_input(inputs, bias_idx)?;
        let bias = bias.broadcast(IxDyn(&shape)).ok_or_else(|| {
            format!(
                "bias of shape {:?} does not broadcast to {:?}",
                bias.shape(),
                shape
            )
        })?;
        sum += &bias;
    }
    let gamma = Param::new(&float_input(inputs, 2)?, &shape, axis, "gamma")?;
    let beta = match beta_idx.filter(|&i| opt_input(inputs, i).is_some()) {
        Some(i) => Some(Param::new(&float_input(inputs, i)?, &shape, axis, "beta")?),
        None => None,
    };
    let data: Vec<f32> = sum.iter().copied().collect();
    let n = normalize(
        &data,
        shape[..axis].iter().product(),
        shape[axis],
        center,
        eps,
        &gamma,
        beta.as_ref(),
    );
    let mut stat_shape = shape.clone();
    stat_shape[axis] = 1;
    Ok(vec![
        from_f32(dtype, array(&shape, n.y)?),
        Tensor::F32(array(&stat_shape, n.mean)?),
        Tensor::F32(array(&stat_shape, n.inv_std)?),
        from_f32(dtype, sum),
    ])
}

/// A row-major f32 array.
fn array(shape: &[usize], data: Vec<f32>) -> Res<ArrayD<f32>> {
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| format!("shape {shape:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Attention

/// A 4-D tensor `[batch, heads, seq, head_size]` as row-major values.
struct Heads {
    data: Vec<f64>,
    dims: [usize; 4],
}

impl Heads {
    /// Reads a 4-D input, or a 3-D `[batch, seq, heads * head_size]` input split into `heads`.
    fn new(x: &ArrayD<f32>, heads: Option<usize>, what: &str) -> Res<Heads> {
        let s = x.shape();
        let dims = match (s, heads) {
            (&[b, h, n, e], _) => [b, h, n, e],
            (&[b, n, hidden], Some(h)) => {
                if h == 0 || hidden % h != 0 {
                    return Err(format!(
                        "{what} hidden size {hidden} is not a multiple of {h} heads"
                    ));
                }
                let e = hidden / h;
                let x4 = x
                    .to_shape(IxDyn(&[b, n, h, e]))
                    .map_err(|e| e.to_string())?;
                let data = x4
                    .view()
                    .permuted_axes(IxDyn(&[0, 2, 1, 3]))
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                return Ok(Heads {
                    data,
                    dims: [b, h, n, e],
                });
            }
            _ => return Err(format!("{what} has shape {s:?}; expected rank 3 or 4")),
        };
        Ok(Heads {
            data: x.iter().map(|&v| v as f64).collect(),
            dims,
        })
    }

    /// Row `(b, h, n)`: one head vector.
    fn row(&self, b: usize, h: usize, n: usize) -> &[f64] {
        let [_, heads, seq, e] = self.dims;
        let start = ((b * heads + h) * seq + n) * e;
        &self.data[start..start + e]
    }

    /// `past` followed by `self` along the sequence axis.
    fn after(self, past: Option<Heads>, what: &str) -> Res<Heads> {
        let Some(past) = past else { return Ok(self) };
        let ([b, h, n, e], [pb, ph, pn, pe]) = (self.dims, past.dims);
        if (b, h, e) != (pb, ph, pe) {
            return Err(format!(
                "past_{what} has shape {:?} but {what} has {:?}",
                past.dims, self.dims
            ));
        }
        let mut data = Vec::with_capacity(past.data.len() + self.data.len());
        for bi in 0..b {
            for hi in 0..h {
                for ni in 0..pn {
                    data.extend_from_slice(past.row(bi, hi, ni));
                }
                for ni in 0..n {
                    data.extend_from_slice(self.row(bi, hi, ni));
                }
            }
        }
        Ok(Heads {
            data,
            dims: [b, h, pn + n, e],
        })
    }

    /// Back to a tensor of `dtype` with shape `dims`.
    fn into_tensor(self, dtype: DType) -> Res<Tensor> {
        Ok(from_f32(
            dtype,
            array(
                &self.dims,
                self.data.into_iter().map(|v| v as f32).collect(),
            )?,
        ))
    }
}

/// An additive attention bias broadcast over `[batch, q_heads, q_seq, total_seq]`: stored as
/// `[b, h, n, total]` with `b`, `h` and `n` either 1 (broadcast) or full size.
struct Bias {
    data: Vec<f64>,
    dims: [usize; 4],
}

impl Bias {
    /// The ONNX `attn_mask`: bool (true = attend) or added to the scores; rank 1 to 4, right-aligned
    /// to `[batch, q_heads, q_seq, total]`. A last dim shorter than `total` is padded with -inf
    /// (false), as in the ONNX reference implementation.
    fn new(mask: &Tensor, full: [usize; 4]) -> Res<Bias> {
        let s = mask.shape();
        if s.is_empty() || s.len() > 4 {
            return Err(format!("attn_mask has shape {s:?}; expected rank 1 to 4"));
        }
        let mut dims = [1; 4];
        dims[4 - s.len()..].copy_from_slice(s);
        let total = full[3];
        for i in 0..3 {
            if dims[i] != 1 && dims[i] != full[i] {
                return Err(format!(
                    "attn_mask of shape {s:?} does not broadcast to {full:?}"
                ));
            }
        }
        if dims[3] > total {
            return Err(format!(
                "attn_mask of shape {s:?} is longer than the {total} keys"
            ));
        }
        let values: Vec<f64> = match mask {
            Tensor::Bool(m) => m
                .iter()
                .map(|&v| if v { 0.0 } else { f64::NEG_INFINITY })
                .collect(),
            other => other.to_f64_array().iter().copied().collect(),
        };
        let (rows, width) = (dims[..3].iter().product::<usize>(), dims[3]);
        let mut data = Vec::with_capacity(rows * total);
        for r in 0..rows {
            data.extend_from_slice(&values[r * width..(r + 1) * width]);
            data.resize((r + 1) * total, f64::NEG_INFINITY);
        }
        Ok(Bias {
            data,
            dims: [dims[0], dims[1], dims[2], total],
        })
    }

    fn row(&self, b: usize, h: usize, n: usize) -> &[f64] {
        let pick = |i: usize, d: usize| if d == 1 { 0 } else { i };
        let [db, dh, dn, total] = self.dims;
        let start = ((pick(b, db) * dh + pick(h, dh)) * dn + pick(n, dn)) * total;
        &self.data[start..start + total]
    }
}

/// A head count attribute, if present.
fn opt_heads(a: &crate::Attrs, name: &str) -> Res<Option<usize>> {
    match a.get(name) {
        None => Ok(None),
        Some(_) => match a.int(name)? {
            h if h > 0 => Ok(Some(h as usize)),
            h => Err(format!("attribute `{name}` is {h} but must be positive")),
        },
    }
}

/// ONNX Attention as opsets 23–25 define it (opset 24's `nonpad_kv_seqlen` input 6, opset 25's
/// windows), checked against `onnx.reference` 1.23. Outputs Y, present_key, present_value and
/// qk_matmul_output.
fn attention(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Vec<Tensor>> {
    let a = &op.attrs;
    let (qt, kt, vt) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
    let rank = qt.shape().len();
    if !(rank == 3 || rank == 4) || kt.shape().len() != rank || vt.shape().len() != rank {
        return Err("Q, K and V must all be 3-D or all 4-D".into());
    }
    let (q_heads, kv_heads) = (opt_heads(a, "q_num_heads")?, opt_heads(a, "kv_num_heads")?);
    if rank == 3 && (q_heads.is_none() || kv_heads.is_none()) {
        return Err("3-D inputs need attributes q_num_heads and kv_num_heads".into());
    }
    let q = Heads::new(&float_input(inputs, 0)?, q_heads, "Q")?;
    let past_key = opt_input(inputs, 4)
        .map(|_| float_input(inputs, 4))
        .transpose()?;
    let past_value = opt_input(inputs, 5)
        .map(|_| float_input(inputs, 5))
        .transpose()?;
    if past_key.is_some() != past_value.is_some() {
        return Err("past_key and past_value must be given together".into());
    }
    let past = |p: Option<ArrayD<f32>>, what: &str| match p {
        Some(p) if p.ndim() == 4 => Heads::new(&p, None, what).map(Some),
        Some(p) => Err(format!("{what} has shape {:?}; expected rank 4", p.shape())),
        None => Ok(None),
    };
    let past_len = past_key
        .as_ref()
        .map_or(0, |p| p.shape().get(2).copied().unwrap_or(0));
    let k = Heads::new(&float_input(inputs, 1)?, kv_heads, "K")?
        .after(past(past_key, "past_key")?, "key")?;
    let v = Heads::new(&float_input(inputs, 2)?, kv_heads, "V")?
        .after(past(past_value, "past_value")?, "value")?;

    let [batch, hq, sq, e] = q.dims;
    let [kb, hkv, total, ke] = k.dims;
    let [vb, vh, vn, ev] = v.dims;
    if kb != batch || vb != batch {
        return Err(format!("batch sizes differ: Q {batch}, K {kb}, V {vb}"));
    }
    if ke != e {
        return Err(format!("Q head size {e} differs from K head size {ke}"));
    }
    if (vh, vn) != (hkv, total) {
        return Err(format!(
            "V has {vh} heads and {vn} positions but K has {hkv} and {total}"
        ));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(format!(
            "{hq} query heads are not a multiple of {hkv} key/value heads"
        ));
    }
    if q_heads.is_some_and(|h| h != hq) || kv_heads.is_some_and(|h| h != hkv) {
        return Err(format!(
            "head attributes do not match the 4-D inputs ({hq} and {hkv} heads)"
        ));
    }
    let group = hq / hkv;

    let scale = match a.get("scale") {
        Some(_) => a.float("scale")? as f64,
        None => 1.0 / (e as f64).sqrt(),
    };
    if scale.is_nan() || scale < 0.0 {
        return Err(format!(
            "scale {scale} must be non-negative (Q and K are scaled by its square root)"
        ));
    }
    let root_scale = scale.sqrt();
    let softcap = a.float("softcap")? as f64;
    let causal = a.int("is_causal")? != 0;
    let mode = a.int("qk_matmul_output_mode")?;
    if !(0..=3).contains(&mode) {
        return Err(format!("qk_matmul_output_mode {mode} is not 0, 1, 2 or 3"));
    }
    let full = [batch, hq, sq, total];
    let mask = opt_input(inputs, 3)
        .map(|m| Bias::new(m, full))
        .transpose()?;
    let nonpad: Option<Vec<i64>> = match opt_input(inputs, 6) {
        Some(t) if t.dtype().is_int() && t.shape() == [batch] => Some(t.to_i64_vec()),
        Some(t) => {
            return Err(format!(
                "nonpad_kv_seqlen must be an integer vector of length {batch}, got {:?}",
                t.shape()
            ))
        }
        None => None,
    };
    if let Some(n) = &nonpad {
        if opt_input(inputs, 4).is_some() {
            return Err("nonpad_kv_seqlen cannot be combined with past_key / past_value".into());
        }
        if let Some((b, len)) = n
            .iter()
            .enumerate()
            .find(|(_, &len)| len < 0 || len as usize > total)
        {
            return Err(format!(
                "nonpad_kv_seqlen[{b}] is {len}, outside 0..={total} (the number of keys)"
            ));
        }
    }
    let window = |name: &str| -> Res<Option<i64>> {
        match a.int(name)? {
            -1 => Ok(None),
            w if w >= 0 => Ok(Some(w)),
            w => Err(format!("{name} {w} must be -1 (unbounded) or at least 0")),
        }
    };
    let (left, right) = (window("left_window_size")?, window("right_window_size")?);
    // The keys query `i` of batch `b` may see, apart from the mask. Its absolute position is
    // `i + offset`, the offset being the keys before the query block: the internal cache's
    // length, or with `nonpad_kv_seqlen` (an external cache) `nonpad[b] - sq`, or 0. Causal
    // masking and the windows are aligned to that position; a negative offset may leave a
    // row no key.
    let allowed = |b: usize, i: usize, j: usize| -> bool {
        let offset = match &nonpad {
            Some(n) => n[b] - sq as i64,
            None => past_len as i64,
        };
        let (position, j) = (i as i64 + offset, j as i64);
        !(causal && j > position
            || left.is_some_and(|w| position - j > w)
            || right.is_some_and(|w| j - position > w)
            || nonpad.as_ref().is_some_and(|n| j >= n[b]))
    };

    let mut y = vec![0.0f32; batch * hq * sq * ev];
    let mut qk_out = Vec::with_capacity(batch * hq * sq * total);
    let mut scores = vec![0.0f64; total];
    let mut acc = vec![0.0f64; ev];
    for b in 0..batch {
        for h in 0..hq {
            let kvh = h / group;
            for i in 0..sq {
                let qrow = q.row(b, h, i);
                let bias = mask.as_ref().map(|m| m.row(b, h, i));
                // A row whose every key is disallowed (by the mask, causality, the windows
                // or the padding) attends to nothing: its probabilities and output are 0, as
                // the ONNX reference decides on the bias, not on the (possibly NaN) scores.
                let empty = (0..total)
                    .all(|j| !allowed(b, i, j) || bias.is_some_and(|m| m[j] == f64::NEG_INFINITY));
                for (j, s) in scores.iter_mut().enumerate() {
                    let krow = k.row(b, kvh, j);
                    let raw: f64 = qrow
                        .iter()
                        .zip(krow)
                        .map(|(x, y)| (x * root_scale) * (y * root_scale))
                        .sum();
                    let capped = if softcap > 0.0 {
                        softcap * (raw / softcap).tanh()
                    } else {
                        raw
                    };
                    let biased = match allowed(b, i, j) {
                        true => capped + bias.map_or(0.0, |m| m[j]),
                        false => f64::NEG_INFINITY,
                    };
                    match mode {
                        0 => qk_out.push(raw as f32),
                        1 => qk_out.push(capped as f32),
                        2 => qk_out.push(biased as f32),
                        _ => {}
                    }
                    *s = biased;
                }
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                scores.iter_mut().for_each(|s| *s = (*s - max).exp());
                if empty {
                    scores.fill(0.0);
                }
                let sum: f64 = scores.iter().sum();
                let sum = if empty { 1.0 } else { sum };
                acc.fill(0.0);
                for (j, s) in scores.iter_mut().enumerate() {
                    *s /= sum;
                    for (o, &vv) in acc.iter_mut().zip(v.row(b, kvh, j)) {
                        *o += *s * vv;
                    }
                }
                if mode == 3 {
                    qk_out.extend(scores.iter().map(|&p| p as f32));
                }
                let start = if rank == 4 {
                    ((b * hq + h) * sq + i) * ev
                } else {
                    ((b * sq + i) * hq + h) * ev
                };
                y[start..start + ev]
                    .iter_mut()
                    .zip(&acc)
                    .for_each(|(o, &v)| *o = v as f32);
            }
        }
    }
    let y_shape: Vec<usize> = if rank == 4 {
        vec![batch, hq, sq, ev]
    } else {
        vec![batch, sq, hq * ev]
    };
    Ok(vec![
        from_f32(qt.dtype(), array(&y_shape, y)?),
        k.into_tensor(kt.dtype())?,
        v.into_tensor(vt.dtype())?,
        from_f32(qt.dtype(), array(&full, qk_out)?),
    ])
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding

/// ONNX RotaryEmbedding (opset 23): X is `[batch, heads, seq, head_size]`, or
/// `[batch, seq, heads * head_size]` with attribute `num_heads`. The caches are
/// `[max_position, rotary_dim / 2]` indexed by position_ids `[batch, seq]`, or, without
/// position_ids, `[batch, seq, rotary_dim / 2]` (batch and seq may be 1 and broadcast).
/// The first `rotary_embedding_dim` (0 = all) elements of each head are rotated, as pairs
/// `(k, k + dim/2)`, or `(2k, 2k + 1)` when `interleaved`; the rest pass through.
fn rotary_embedding(op: &Op, inputs: &[Option<&Tensor>]) -> Res<Vec<Tensor>> {
    let a = &op.attrs;
    let dtype = input(inputs, 0)?.dtype();
    let x = float_input(inputs, 0)?;
    let (batch, heads, seq, head_size) = match *x.shape() {
        [b, h, s, d] => (b, h, s, d),
        [b, s, hidden] => {
            let h = match a.get("num_heads") {
                Some(_) => a.int("num_heads")?,
                None => return Err("3-D input needs attribute num_heads".into()),
            };
            if h <= 0 || hidden % h as usize != 0 {
                return Err(format!(
                    "hidden size {hidden} is not a multiple of num_heads {h}"
                ));
            }
            (b, h as usize, s, hidden / h as usize)
        }
        _ => {
            return Err(format!(
                "input has shape {:?}; expected rank 3 or 4",
                x.shape()
            ))
        }
    };
    let rot = match a.int("rotary_embedding_dim")? {
        0 => head_size,
        d if d > 0 && d as usize <= head_size && d % 2 == 0 => d as usize,
        d => {
            return Err(format!(
                "rotary_embedding_dim {d} must be even and at most the head size {head_size}"
            ))
        }
    };
    if rot % 2 != 0 {
        return Err(format!("head size {head_size} must be even"));
    }
    let half = rot / 2;
    let (cos, sin) = (float_input(inputs, 1)?, float_input(inputs, 2)?);
    if cos.shape() != sin.shape() {
        return Err(format!(
            "cos_cache {:?} and sin_cache {:?} differ in shape",
            cos.shape(),
            sin.shape()
        ));
    }
    if cos.shape().last() != Some(&half) {
        return Err(format!(
            "cache shape {:?} must end in rotary_dim / 2 = {half}",
            cos.shape()
        ));
    }
    let pick = |i: usize, d: usize| if d == 1 { 0 } else { i };
    // The cache row used at (batch b, position s).
    let cache_rows: Vec<usize> = match opt_input(inputs, 3) {
        Some(p) => {
            let (pb, ps) = match *p.shape() {
                [pb, ps]
                    if p.dtype().is_int() && (pb == 1 || pb == batch) && (ps == 1 || ps == seq) =>
                {
                    (pb, ps)
                }
                _ => {
                    return Err(format!(
                        "position_ids must be integers of shape [{batch}, {seq}], got {:?}",
                        p.shape()
                    ))
                }
            };
            let max_pos = match *cos.shape() {
                [m, _] => m,
                _ => {
                    return Err(format!(
                        "with position_ids the caches must be 2-D, got {:?}",
                        cos.shape()
                    ))
                }
            };
            let ids = p.to_i64_vec();
            let mut rows = Vec::with_capacity(batch * seq);
            for b in 0..batch {
                for s in 0..seq {
                    let id = ids[pick(b, pb) * ps + pick(s, ps)];
                    if id < 0 || id as usize >= max_pos {
                        return Err(format!(
                            "position id {id} is out of range for a cache of {max_pos} positions"
                        ));
                    }
                    rows.push(id as usize);
                }
            }
            rows
        }
        None => match *cos.shape() {
            [cb, cs, _] if (cb == 1 || cb == batch) && (cs == 1 || cs == seq) => (0..batch)
                .flat_map(|b| (0..seq).map(move |s| pick(b, cb) * cs + pick(s, cs)))
                .collect(),
            _ => {
                return Err(format!(
                    "without position_ids the caches must be [{batch}, {seq}, {half}], got {:?}",
                    cos.shape()
                ))
            }
        },
    };
    let cos: Vec<f32> = cos.iter().copied().collect();
    let sin: Vec<f32> = sin.iter().copied().collect();
    let interleaved = a.int("interleaved")? != 0;
    let mut out: Vec<f32> = x.iter().copied().collect();
    for b in 0..batch {
        for s in 0..seq {
            let row = cache_rows[b * seq + s] * half;
            for h in 0..heads {
                let base = if x.ndim() == 4 {
                    ((b * heads + h) * seq + s) * head_size
                } else {
                    ((b * seq + s) * heads + h) * head_size
                };
                for k in 0..half {
                    let (i1, i2) = if interleaved {
                        (base + 2 * k, base + 2 * k + 1)
                    } else {
                        (base + k, base + k + half)
                    };
                    let (c, sn) = (cos[row + k] as f64, sin[row + k] as f64);
                    let (x1, x2) = (out[i1] as f64, out[i2] as f64);
                    out[i1] = (c * x1 - sn * x2) as f32;
                    out[i2] = (sn * x1 + c * x2) as f32;
                }
            }
        }
    }
    Ok(vec![from_f32(dtype, array(x.shape(), out)?)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attr, Attrs};
    use half::f16;

    fn op(kind: OpKind, attrs: &[(&str, Attr)]) -> Op {
        Op::new(kind, Attrs::from_pairs(attrs))
    }

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor::from_vec(shape, data.to_vec()).unwrap()
    }

    fn vals(t: &Tensor) -> Vec<f32> {
        t.to_f32_array().iter().copied().collect()
    }

    /// Deterministic pseudo-random values in [-2, 2).
    fn pseudo(n: usize, seed: u64) -> Vec<f32> {
        crate::interp::test_values(n, seed, -2.0, 2.0)
    }

    fn assert_close(got: &Tensor, want: &[f32], tol: f32) {
        let g = vals(got);
        assert_eq!(g.len(), want.len(), "length: got {g:?}");
        for (i, (a, b)) in g.iter().zip(want).enumerate() {
            let ok = a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol * (1.0 + b.abs());
            assert!(
                ok,
                "element {i}: got {a}, want {b}\ngot  {g:?}\nwant {want:?}"
            );
        }
    }

    fn run(op: &Op, inputs: &[Option<&Tensor>]) -> Vec<Tensor> {
        eval(op, inputs).unwrap()
    }

    // ---- Softmax

    #[test]
    fn softmax_matches_onnx_reference() {
        let x = t(&[2, 3], &[0.5, -1.25, 2.0, 3.0, 0.0, -0.75]);
        let axis0 = op(OpKind::Softmax, &[("axis", Attr::Int(0))]);
        assert_close(
            &run(&axis0, &[Some(&x)])[0],
            &[
                0.07585818,
                0.22270013,
                0.93991333,
                0.9241418,
                0.7772999,
                0.060086653,
            ],
            1e-6,
        );
        let last = op(OpKind::Softmax, &[]);
        assert_close(
            &run(&last, &[Some(&x)])[0],
            &[
                0.17682017,
                0.03072674,
                0.7924531,
                0.93170184,
                0.0463867,
                0.021911526,
            ],
            1e-6,
        );
        let log = op(OpKind::LogSoftmax, &[]);
        assert_close(
            &run(&log, &[Some(&x)])[0],
            &[
                -1.732622,
                -3.482622,
                -0.23262194,
                -0.07074243,
                -3.0707426,
                -3.8207426,
            ],
            1e-6,
        );
    }

    #[test]
    fn softmax_lanes_sum_to_one_on_every_axis() {
        let x = t(&[2, 3, 4], &pseudo(24, 1));
        for axis in -3..3 {
            let y = &run(
                &op(OpKind::Softmax, &[("axis", Attr::Int(axis))]),
                &[Some(&x)],
            )[0];
            let sums = y.to_f32_array().sum_axis(Axis(norm_axis(axis, 3).unwrap()));
            assert!(
                sums.iter().all(|s| (s - 1.0).abs() < 1e-6),
                "axis {axis}: {sums:?}"
            );
            let ly = &run(
                &op(OpKind::LogSoftmax, &[("axis", Attr::Int(axis))]),
                &[Some(&x)],
            )[0];
            assert_close(
                &Tensor::F32(ly.to_f32_array().mapv(f32::exp)),
                &vals(y),
                1e-6,
            );
        }
    }

    #[test]
    fn softmax_is_stable_for_large_inputs() {
        let x = t(&[3], &[1000.0, 1001.0, 1002.0]);
        assert_close(
            &run(&op(OpKind::Softmax, &[]), &[Some(&x)])[0],
            &[0.09003057, 0.24472847, 0.66524096],
            1e-6,
        );
        assert_close(
            &run(&op(OpKind::LogSoftmax, &[]), &[Some(&x)])[0],
            &[-2.407606, -1.4076059, -0.4076059],
            1e-6,
        );
    }

    #[test]
    fn softmax_keeps_dtype_and_rejects_bad_axes() {
        let x = Tensor::F32(ndarray::arr1(&[1.0f32, 2.0]).into_dyn()).cast(DType::F16);
        let y = &run(&op(OpKind::Softmax, &[]), &[Some(&x)])[0];
        assert_eq!(y.dtype(), DType::F16);
        assert!(eval(&op(OpKind::Softmax, &[("axis", Attr::Int(1))]), &[Some(&x)]).is_err());
        assert!(eval(&op(OpKind::Softmax, &[]), &[Some(&Tensor::scalar(1.0f32))]).is_err());
        assert!(eval(
            &op(OpKind::Softmax, &[]),
            &[Some(&Tensor::scalar(1i64).reshape(&[1]).unwrap())]
        )
        .is_err());
    }

    // ---- Normalisations

    const LN_X: [f32; 12] = [
        0.5, -1.25, 2.0, 3.0, 0.0, -0.75, 1.5, 2.5, -0.5, 0.25, -2.0, 1.0,
    ];

    #[test]
    fn layer_norm_matches_onnx_reference() {
        // Axis 1 of a rank-3 input, with a 2-D scale and bias.
        let x = t(&[2, 2, 3], &LN_X);
        let scale = t(&[2, 3], &[1.0, 0.5, -1.0, 2.0, 1.5, 0.25]);
        let bias = t(&[2, 3], &[0.1, -0.2, 0.3, 0.0, 0.5, -0.5]);
        let ln = op(OpKind::LayerNormalization, &[("axis", Attr::Int(1))]);
        let out = run(&ln, &[Some(&x), Some(&scale), Some(&bias)]);
        assert_eq!(out.len(), 3);
        let y = [
            0.044098444,
            -0.81491727,
            -0.6503268,
            3.2422912,
            -0.086966515,
            -0.7236063,
            0.8201873,
            0.50578356,
            0.96257234,
            -0.2880749,
            -2.0494628,
            -0.40637565,
        ];
        assert_close(&out[0], &y, 1e-5);
        assert_eq!(
            (out[1].dtype(), out[1].shape()),
            (DType::F32, &[2, 1, 1][..])
        );
        assert_eq!(
            (out[2].dtype(), out[2].shape()),
            (DType::F32, &[2, 1, 1][..])
        );
        assert_close(&out[1], &[0.5833333, 0.45833334], 1e-6);
        assert_close(&out[2], &[0.67081887, 0.6913798], 1e-6);
    }

    #[test]
    fn layer_norm_standardises_rows() {
        let x = t(
            &[4, 16],
            &pseudo(64, 2)
                .iter()
                .map(|v| v * 3.0 + 1.0)
                .collect::<Vec<_>>(),
        );
        let ones = t(&[16], &[1.0; 16]);
        let out = run(
            &op(OpKind::LayerNormalization, &[("epsilon", Attr::Float(0.0))]),
            &[Some(&x), Some(&ones)],
        );
        for row in out[0].to_f32_array().rows() {
            let mean = row.mean().unwrap();
            let var = row.mapv(|v| (v - mean) * (v - mean)).mean().unwrap();
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "mean {mean} var {var}"
            );
        }
        // Y = (X - Mean) * InvStdDev.
        let (xa, mean, inv) = (
            x.to_f32_array(),
            out[1].to_f32_array(),
            out[2].to_f32_array(),
        );
        let y = (&xa - &mean) * &inv;
        assert_close(&out[0], &y.iter().copied().collect::<Vec<_>>(), 1e-5);
    }

    #[test]
    fn layer_norm_f16_rounds_y_but_not_statistics() {
        let x = t(&[2, 3], &LN_X[..6]).cast(DType::F16);
        let scale = t(&[3], &[1.0, 1.0, 1.0]).cast(DType::F16);
        let out = run(
            &op(OpKind::LayerNormalization, &[]),
            &[Some(&x), Some(&scale)],
        );
        assert_eq!(out[0].dtype(), DType::F16);
        assert_eq!(out[1].dtype(), DType::F32);
        // The f16 result is the f32 computation (on the same f16 inputs) rounded once.
        let wide = run(
            &op(OpKind::LayerNormalization, &[]),
            &[Some(&x.cast(DType::F32)), Some(&scale.cast(DType::F32))],
        );
        let Tensor::F16(y) = &out[0] else {
            unreachable!()
        };
        let rounded: Vec<f16> = wide[0]
            .to_f32_array()
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), rounded);
        assert_eq!(out[1], wide[1]);
        assert_eq!(out[2], wide[2]);
    }

    #[test]
    fn rms_norm_matches_onnx_reference() {
        let x = t(&[2, 2, 3], &LN_X);
        let scale = t(&[3], &[1.0, 0.5, -1.0]);
        let y = [
            0.3592097,
            -0.4490121,
            -1.4368387,
            1.6803335,
            0.0,
            0.42008337,
            0.8783085,
            0.7319238,
            0.29276952,
            0.19244951,
            -0.76979804,
            -0.76979804,
        ];
        for kind in [
            OpKind::RMSNormalization,
            OpKind::SimplifiedLayerNormalization,
        ] {
            let out = run(&op(kind, &[]), &[Some(&x), Some(&scale)]);
            assert_close(&out[0], &y, 1e-5);
            assert_eq!(
                (out[1].dtype(), out[1].shape()),
                (DType::F32, &[2, 2, 1][..])
            );
        }
    }

    #[test]
    fn rms_norm_over_several_axes_gives_unit_mean_square() {
        let x = t(&[2, 3, 4], &pseudo(24, 3));
        let out = run(
            &op(
                OpKind::RMSNormalization,
                &[("axis", Attr::Int(1)), ("epsilon", Attr::Float(0.0))],
            ),
            &[Some(&x), Some(&Tensor::scalar(1.0f32))],
        );
        assert_eq!(out[1].shape(), &[2, 1, 1]);
        for b in 0..2 {
            let ms = out[0]
                .to_f32_array()
                .index_axis(Axis(0), b)
                .mapv(|v| v * v)
                .mean()
                .unwrap();
            assert!((ms - 1.0).abs() < 1e-5, "{ms}");
        }
    }

    #[test]
    fn normalisation_rejects_bad_shapes() {
        let x = t(&[2, 3], &LN_X[..6]);
        let ln = op(OpKind::LayerNormalization, &[]);
        assert!(eval(&ln, &[Some(&x), Some(&t(&[2], &[1.0, 1.0]))]).is_err());
        assert!(eval(&ln, &[Some(&x), Some(&t(&[1, 1, 3], &[1.0; 3]))]).is_err());
        assert!(eval(
            &op(OpKind::LayerNormalization, &[("axis", Attr::Int(2))]),
            &[Some(&x), Some(&t(&[3], &[1.0; 3]))]
        )
        .is_err());
        assert!(eval(&ln, &[Some(&x)]).is_err());
        let ints = Tensor::from_vec(&[3], vec![1i64, 2, 3]).unwrap();
        assert!(eval(&ln, &[Some(&ints), Some(&t(&[3], &[1.0; 3]))]).is_err());
    }

    #[test]
    fn skip_layer_norm_matches_layer_norm_of_the_sum() {
        let x = t(&[1, 2, 3], &[0.5, -1.25, 2.0, 3.0, 0.0, -0.75]);
        let skip = t(&[2, 3], &[0.25, 0.5, -1.0, 1.0, -2.0, 0.5]);
        let gamma = t(&[3], &[1.0, 0.5, -1.0]);
        let beta = t(&[3], &[0.1, -0.2, 0.3]);
        let bias = t(&[3], &[0.0, 0.25, -0.5]);
        let skip_ln = op(
            OpKind::SkipLayerNormalization,
            &[("epsilon", Attr::Float(1e-5))],
        );
        let out = run(
            &skip_ln,
            &[
                Some(&x),
                Some(&skip),
                Some(&gamma),
                Some(&beta),
                Some(&bias),
            ],
        );
        assert_eq!(out.len(), 4);
        assert_close(
            &out[0],
            &[
                1.0258042,
                -0.89435315,
                -0.16290209,
                1.4953554,
                -0.6485071,
                0.7983412,
            ],
            1e-5,
        );
        assert_close(&out[1], &[0.25, 0.5], 1e-6);
        assert_close(&out[2], &[1.8516084, 0.39867297], 1e-6);
        assert_close(&out[3], &[0.75, -0.5, 0.5, 4.0, -1.75, -0.75], 0.0);
        assert_eq!(out[1].shape(), &[1, 2, 1]);
        assert_eq!(out[3].shape(), &[1, 2, 3]);

        let simplified = op(
            OpKind::SkipSimplifiedLayerNormalization,
            &[("epsilon", Attr::Float(1e-5))],
        );
        let out = run(
            &simplified,
            &[Some(&x), Some(&skip), Some(&gamma), Some(&bias)],
        );
        assert_close(
            &out[0],
            &[
                1.2602342,
                -0.42007807,
                -0.84015614,
                1.5639234,
                -0.34210825,
                0.29323563,
            ],
            1e-5,
        );
        assert_close(&out[1], &[0.0, 0.0], 0.0);
        assert_close(&out[2], &[1.6803124, 0.39098084], 1e-6);
        assert_close(&out[3], &[0.75, -0.5, 0.5, 4.0, -1.75, -0.75], 0.0);

        // Without bias and beta the sum is just input + skip.
        let out = run(&skip_ln, &[Some(&x), Some(&skip), Some(&gamma)]);
        assert_close(&out[3], &[0.75, -0.75, 1.0, 4.0, -2.0, -0.25], 0.0);
        assert!(eval(
            &skip_ln,
            &[Some(&x), Some(&t(&[3, 3], &[0.0; 9])), Some(&gamma)]
        )
        .is_err());
        assert!(eval(
            &skip_ln,
            &[Some(&x), Some(&skip), Some(&t(&[2], &[1.0; 2]))]
        )
        .is_err());
    }

    // ---- Attention

    fn attention_op(attrs: &[(&str, Attr)]) -> Op {
        op(OpKind::Attention, attrs)
    }

    /// `[b, h, s, e]` -> `[b, s, h * e]`.
    fn to_3d(x: &Tensor) -> Tensor {
        let a = x.to_f32_array();
        let &[b, h, s, e] = a.shape() else { panic!() };
        let v: Vec<f32> = a
            .view()
            .permuted_axes(IxDyn(&[0, 2, 1, 3]))
            .iter()
            .copied()
            .collect();
        t(&[b, s, h * e], &v)
    }

    /// Repeats each head of `[b, h, s, e]` `reps` times: `[h0, h0, h1, h1, ...]`.
    fn repeat_heads(x: &Tensor, reps: usize) -> Tensor {
        let a = x.to_f32_array();
        let &[b, h, s, e] = a.shape() else { panic!() };
        let mut v = vec![];
        for bi in 0..b {
            for hi in 0..h {
                for _ in 0..reps {
                    v.extend(a.slice(ndarray::s![bi, hi, .., ..]).iter().copied());
                }
            }
        }
        t(&[b, h * reps, s, e], &v)
    }

    fn rows(x: &Tensor, n: usize) -> Vec<Vec<f32>> {
        vals(x).chunks(n).map(|c| c.to_vec()).collect()
    }

    #[test]
    fn attention_matches_onnx_reference_with_float_mask() {
        let q = t(
            &[1, 2, 3, 4],
            &[
                0.13, -0.13, 0.64, 0.1, -0.54, 0.36, 1.3, 0.95, -0.7, -1.27, -0.62, 0.04, -2.33,
                -0.22, -1.25, -0.73, -0.54, -0.32, 0.41, 1.04, -0.13, 1.37, -0.67, 0.35,
            ],
        );
        let k = t(
            &[1, 2, 4, 4],
            &[
                0.9, 0.09, -0.74, -0.92, -0.46, 0.22, -1.01, -0.21, -0.16, 0.54, 0.21, 0.36, -0.65,
                -0.13, 0.78, 1.49, -1.26, 1.51, 1.35, 0.78, 0.26, -0.31, 1.46, 1.96, 1.8, 1.32,
                0.36, -1.21, 0.0, 0.66, -1.29, 0.4,
            ],
        );
        let v = t(
            &[1, 2, 4, 2],
            &[
                0.43, 0.7, -1.18, -0.66, -0.44, -1.17, 1.74, -0.5, 0.33, -0.26, 1.58, 1.32, 0.63,
                -2.2, 0.05, 0.68,
            ],
        );
        let mask = t(
            &[3, 4],
            &[
                0.0,
                0.0,
                -1.0,
                0.0,
                0.0,
                f32::NEG_INFINITY,
                0.0,
                0.0,
                0.5,
                0.0,
                0.0,
                0.0,
            ],
        );
        let out = run(
            &attention_op(&[]),
            &[Some(&q), Some(&k), Some(&v), Some(&mask)],
        );
        assert_eq!(out.len(), 4);
        let y = [
            0.52842623,
            -0.3164647,
            1.0805928,
            -0.61481005,
            0.12360822,
            -0.28575635,
            0.23532371,
            0.31557426,
            0.2840973,
            -0.18619865,
            0.4008617,
            -0.2050068,
        ];
        assert_close(&out[0], &y, 1e-5);
        assert_eq!(out[0].shape(), &[1, 2, 3, 2]);
        let qk = [
            -0.23015, -0.3779, 0.0397, 0.2903, -1.1448, -0.59245, 0.4479, 1.36685, -0.16115,
            0.3302, -0.3448, 0.09805, 0.17335, -1.8967, -2.02555, 0.58765, 0.78095, 1.2979,
            -1.2526, -0.16205, 0.8005, -0.37535, 0.45485, 0.95425,
        ];
        assert_close(&out[3], &qk, 1e-5);
        // Without past, present_key / present_value are K and V.
        assert_eq!(out[1], k);
        assert_eq!(out[2], v);
    }

    #[test]
    fn attention_matches_onnx_reference_3d_gqa_past_causal_softcap() {
        let q = t(
            &[1, 2, 4],
            &[1.0, -0.62, 1.82, -1.32, -0.66, 0.94, 0.05, 2.0],
        );
        let k = t(&[1, 2, 2], &[0.19, -0.63, -0.38, -1.09]);
        let v = t(&[1, 2, 3], &[-1.28, 0.63, 0.58, 1.29, -0.75, 1.69]);
        let past_k = t(&[1, 1, 1, 2], &[-0.29, 1.57]);
        let past_v = t(&[1, 1, 1, 3], &[-0.43, -0.74, 0.25]);
        let attrs = [
            ("is_causal", Attr::Int(1)),
            ("q_num_heads", Attr::Int(2)),
            ("kv_num_heads", Attr::Int(1)),
            ("scale", Attr::Float(0.8)),
            ("softcap", Attr::Float(1.5)),
            ("qk_matmul_output_mode", Attr::Int(2)),
        ];
        let out = run(
            &attention_op(&attrs),
            &[
                Some(&q),
                Some(&k),
                Some(&v),
                None,
                Some(&past_k),
                Some(&past_v),
            ],
        );
        let y = [
            -1.1024122,
            0.3437703,
            0.51105416,
            -1.1920027,
            0.48816904,
            0.5458363,
            -0.31476334,
            -0.5452557,
            0.495591,
            -0.3996087,
            -0.6202871,
            0.3669274,
        ];
        assert_close(&out[0], &y, 1e-5);
        assert_eq!(out[0].shape(), &[1, 2, 6]);
        assert_close(&out[1], &[-0.29, 1.57, 0.19, -0.63, -0.38, -1.09], 0.0);
        assert_eq!(out[1].shape(), &[1, 1, 3, 2]);
        assert_close(
            &out[2],
            &[-0.43, -0.74, 0.25, -1.28, 0.63, 0.58, 1.29, -0.75, 1.69],
            0.0,
        );
        let ninf = f32::NEG_INFINITY;
        let qk = [
            -0.88122404,
            0.45018256,
            ninf,
            1.0664778,
            -0.547601,
            -0.5861358,
            -1.3236885,
            0.8349551,
            ninf,
            1.3967175,
            -0.8744385,
            -1.2377516,
        ];
        assert_close(&out[3], &qk, 1e-5);
        assert_eq!(out[3].shape(), &[1, 2, 2, 3]);
    }

    #[test]
    fn attention_with_one_key_returns_v() {
        let q = t(&[2, 3, 4, 5], &pseudo(120, 4));
        let k = t(&[2, 3, 1, 5], &pseudo(30, 5));
        let v = t(&[2, 3, 1, 2], &pseudo(12, 6));
        let y = &run(&attention_op(&[]), &[Some(&q), Some(&k), Some(&v)])[0];
        let want: Vec<f32> = vals(&v).chunks(2).flat_map(|row| row.repeat(4)).collect();
        assert_close(y, &want, 1e-6);
    }

    #[test]
    fn a_fully_masked_query_row_gives_zeros() {
        // Left padding: query 0 of batch 1 may see only key 0, which the mask hides.
        let q = t(&[2, 1, 3, 2], &pseudo(12, 4));
        let k = t(&[2, 1, 3, 2], &pseudo(12, 5));
        let v = t(&[2, 1, 3, 2], &pseudo(12, 6));
        let mask =
            Tensor::from_vec(&[2, 1, 1, 3], vec![true, true, true, false, true, true]).unwrap();
        let causal = attention_op(&[
            ("is_causal", Attr::Int(1)),
            ("qk_matmul_output_mode", Attr::Int(3)),
        ]);
        let out = run(&causal, &[Some(&q), Some(&k), Some(&v), Some(&mask)]);
        let (y, p) = (rows(&out[0], 2), rows(&out[3], 3));
        assert_eq!(y[3], vec![0.0, 0.0], "the empty row's output");
        assert_eq!(p[3], vec![0.0, 0.0, 0.0], "the empty row's probabilities");
        // Query 1 of batch 1 sees key 1 only.
        assert_close(&t(&[2], &y[4]), &rows(&v, 2)[4], 1e-6);
        assert!(out[0].to_f32_array().iter().all(|x| x.is_finite()));
    }

    #[test]
    fn causal_attention_only_sees_earlier_positions() {
        let q = t(&[1, 2, 4, 3], &pseudo(24, 7));
        let k = t(&[1, 2, 4, 3], &pseudo(24, 8));
        let v = t(&[1, 2, 4, 3], &pseudo(24, 9));
        let causal = attention_op(&[("is_causal", Attr::Int(1))]);
        let y = &run(&causal, &[Some(&q), Some(&k), Some(&v)])[0];
        // Position 0 attends only to key 0.
        let (yr, vr) = (rows(y, 3), rows(&v, 3));
        assert_close(&t(&[3], &yr[0]), &vr[0], 1e-6);
        assert_close(&t(&[3], &yr[4]), &vr[4], 1e-6);
        // Changing the last key and value changes nothing before the last position.
        let mut k2 = vals(&k);
        let mut v2 = vals(&v);
        for h in 0..2 {
            for i in 9..12 {
                k2[h * 12 + i] += 5.0;
                v2[h * 12 + i] -= 3.0;
            }
        }
        let y2 = &run(
            &causal,
            &[
                Some(&q),
                Some(&t(&[1, 2, 4, 3], &k2)),
                Some(&t(&[1, 2, 4, 3], &v2)),
            ],
        )[0];
        let (a, b) = (rows(y, 3), rows(y2, 3));
        for r in [0, 1, 2, 4, 5, 6] {
            assert_eq!(a[r], b[r], "row {r}");
        }
        assert_ne!(a[3], b[3]);
        // Causal equals a lower-triangular float mask.
        let mut tri = vec![0.0; 16];
        for i in 0..4 {
            for j in i + 1..4 {
                tri[i * 4 + j] = f32::NEG_INFINITY;
            }
        }
        let masked = &run(
            &attention_op(&[]),
            &[Some(&q), Some(&k), Some(&v), Some(&t(&[4, 4], &tri))],
        )[0];
        assert_close(y, &vals(masked), 1e-6);
    }

    #[test]
    fn causal_attention_with_past_offsets_the_diagonal() {
        // One new query after 2 past positions sees all 3 keys: same as no mask.
        let q = t(&[1, 1, 1, 2], &[0.3, -0.7]);
        let k = t(&[1, 1, 1, 2], &[1.0, 0.5]);
        let v = t(&[1, 1, 1, 2], &[2.0, -1.0]);
        let pk = t(&[1, 1, 2, 2], &[0.1, 0.2, -0.3, 0.4]);
        let pv = t(&[1, 1, 2, 2], &[1.0, 1.5, -2.0, 0.0]);
        let inputs = [Some(&q), Some(&k), Some(&v), None, Some(&pk), Some(&pv)];
        let causal = run(&attention_op(&[("is_causal", Attr::Int(1))]), &inputs);
        let plain = run(&attention_op(&[]), &inputs);
        assert_eq!(causal[0], plain[0]);
        assert_eq!(causal[1].shape(), &[1, 1, 3, 2]);
    }

    #[test]
    fn gqa_equals_mha_with_repeated_kv_heads() {
        let q = t(&[2, 4, 3, 4], &pseudo(96, 10));
        let k = t(&[2, 2, 5, 4], &pseudo(80, 11));
        let v = t(&[2, 2, 5, 3], &pseudo(60, 12));
        let gqa = run(
            &attention_op(&[("qk_matmul_output_mode", Attr::Int(3))]),
            &[Some(&q), Some(&k), Some(&v)],
        );
        let (k2, v2) = (repeat_heads(&k, 2), repeat_heads(&v, 2));
        let mha = run(
            &attention_op(&[("qk_matmul_output_mode", Attr::Int(3))]),
            &[Some(&q), Some(&k2), Some(&v2)],
        );
        assert_close(&gqa[0], &vals(&mha[0]), 1e-6);
        assert_close(&gqa[3], &vals(&mha[3]), 1e-6);
        assert_eq!(gqa[1], k);
        // Multi-query: one KV head.
        let k1 = t(&[2, 1, 5, 4], &pseudo(40, 13));
        let v1 = t(&[2, 1, 5, 3], &pseudo(30, 14));
        let mqa = run(&attention_op(&[]), &[Some(&q), Some(&k1), Some(&v1)]);
        let mha = run(
            &attention_op(&[]),
            &[
                Some(&q),
                Some(&repeat_heads(&k1, 4)),
                Some(&repeat_heads(&v1, 4)),
            ],
        );
        assert_close(&mqa[0], &vals(&mha[0]), 1e-6);
    }

    #[test]
    fn attention_3d_equals_4d() {
        let q = t(&[2, 4, 3, 2], &pseudo(48, 15));
        let k = t(&[2, 2, 5, 2], &pseudo(40, 16));
        let v = t(&[2, 2, 5, 3], &pseudo(60, 17));
        let y4 = run(
            &attention_op(&[("is_causal", Attr::Int(1))]),
            &[Some(&q), Some(&k), Some(&v)],
        );
        let heads = [
            ("is_causal", Attr::Int(1)),
            ("q_num_heads", Attr::Int(4)),
            ("kv_num_heads", Attr::Int(2)),
        ];
        let y3 = run(
            &attention_op(&heads),
            &[Some(&to_3d(&q)), Some(&to_3d(&k)), Some(&to_3d(&v))],
        );
        assert_eq!(y3[0].shape(), &[2, 3, 12]);
        assert_close(&y3[0], &vals(&to_3d(&y4[0])), 1e-6);
        assert_eq!(y3[1], y4[1]);
        assert_eq!(y3[2], y4[2]);
    }

    #[test]
    fn attention_masks() {
        let q = t(&[1, 2, 3, 2], &pseudo(12, 18));
        let k = t(&[1, 2, 4, 2], &pseudo(16, 19));
        let v = t(&[1, 2, 4, 2], &pseudo(16, 20));
        let attend = [
            true, false, true, true, true, true, false, false, false, true, true, true,
        ];
        let bool_mask = Tensor::from_vec(&[3, 4], attend.to_vec()).unwrap();
        let float: Vec<f32> = attend
            .iter()
            .map(|&a| if a { 0.0 } else { f32::NEG_INFINITY })
            .collect();
        let float_mask = t(&[3, 4], &float);
        let plain = attention_op(&[]);
        let run_mask =
            |o: &Op, m: &Tensor| run(o, &[Some(&q), Some(&k), Some(&v), Some(m)]).swap_remove(0);
        let by_bool = run_mask(&plain, &bool_mask);
        assert_close(&by_bool, &vals(&run_mask(&plain, &float_mask)), 0.0);
        // A 4-D mask broadcast over heads gives the same result.
        assert_eq!(
            run_mask(&plain, &float_mask.reshape(&[1, 1, 3, 4]).unwrap()),
            by_bool
        );
        // A mask shorter than the keys is padded with -inf (false).
        let short = t(&[3, 3], &[0.0, 0.5, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0, -2.0]);
        let padded = t(
            &[3, 4],
            &[
                0.0,
                0.5,
                -1.0,
                f32::NEG_INFINITY,
                0.0,
                0.0,
                0.0,
                f32::NEG_INFINITY,
                1.0,
                0.0,
                -2.0,
                f32::NEG_INFINITY,
            ],
        );
        assert_eq!(run_mask(&plain, &short), run_mask(&plain, &padded));
        // A bool mask combines with is_causal: both must allow a position.
        let causal = attention_op(&[("is_causal", Attr::Int(1))]);
        let mut both = float.clone();
        for i in 0..3 {
            for j in i + 1..4 {
                both[i * 4 + j] = f32::NEG_INFINITY;
            }
        }
        assert_close(
            &run_mask(&causal, &bool_mask),
            &vals(&run_mask(&plain, &t(&[3, 4], &both))),
            0.0,
        );
        // A fully masked row gives 0, as in the ONNX reference (onnx 1.23's; 1.22's gave NaN).
        let none = Tensor::from_vec(&[4], vec![false; 4]).unwrap();
        assert!(vals(&run_mask(&plain, &none)).iter().all(|&v| v == 0.0));
        // Masks that do not broadcast are errors.
        assert!(eval(
            &plain,
            &[Some(&q), Some(&k), Some(&v), Some(&t(&[2, 4], &[0.0; 8]))]
        )
        .is_err());
        assert!(eval(
            &plain,
            &[Some(&q), Some(&k), Some(&v), Some(&t(&[3, 5], &[0.0; 15]))]
        )
        .is_err());
        assert!(eval(
            &plain,
            &[
                Some(&q),
                Some(&k),
                Some(&v),
                Some(&t(&[1, 1, 1, 3, 4], &[0.0; 12]))
            ]
        )
        .is_err());
    }

    #[test]
    fn attention_qk_matmul_output_modes() {
        let q = t(&[1, 1, 2, 2], &[1.0, 2.0, -1.0, 0.5]);
        let k = t(&[1, 1, 3, 2], &[0.5, 1.0, 2.0, -1.0, 0.0, 3.0]);
        let v = t(&[1, 1, 3, 1], &[1.0, 2.0, 3.0]);
        let mask = t(&[3], &[0.0, -1.0, 0.5]);
        let s = 0.5f32; // scale
        let raw: Vec<f32> = [[1.0f32, 2.0], [-1.0, 0.5]]
            .iter()
            .flat_map(|qr| {
                [[0.5f32, 1.0], [2.0, -1.0], [0.0, 3.0]]
                    .map(|kr| (qr[0] * kr[0] + qr[1] * kr[1]) * s)
            })
            .collect();
        let capped: Vec<f32> = raw.iter().map(|x| 2.0 * (x / 2.0).tanh()).collect();
        let biased: Vec<f32> = capped
            .iter()
            .zip([0.0, -1.0, 0.5].iter().cycle())
            .map(|(x, m)| x + m)
            .collect();
        let qk = |mode: i64| {
            let attrs = [
                ("scale", Attr::Float(s)),
                ("softcap", Attr::Float(2.0)),
                ("qk_matmul_output_mode", Attr::Int(mode)),
            ];
            run(
                &attention_op(&attrs),
                &[Some(&q), Some(&k), Some(&v), Some(&mask)],
            )
            .swap_remove(3)
        };
        assert_close(&qk(0), &raw, 1e-6);
        assert_close(&qk(1), &capped, 1e-6);
        assert_close(&qk(2), &biased, 1e-6);
        let probs = qk(3);
        for row in rows(&probs, 3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let e: Vec<f32> = biased[..3].iter().map(|x| x.exp()).collect();
        let z: f32 = e.iter().sum();
        assert_close(
            &t(&[3], &rows(&probs, 3)[0]),
            &e.iter().map(|x| x / z).collect::<Vec<_>>(),
            1e-6,
        );
        let bad = attention_op(&[("qk_matmul_output_mode", Attr::Int(4))]);
        assert!(eval(&bad, &[Some(&q), Some(&k), Some(&v)]).is_err());
    }

    #[test]
    fn attention_f16_keeps_input_dtypes() {
        let q = t(&[1, 1, 2, 2], &[1.0, 2.0, -1.0, 0.5]).cast(DType::F16);
        let k = t(&[1, 1, 3, 2], &[0.5, 1.0, 2.0, -1.0, 0.0, 3.0]).cast(DType::F16);
        let v = t(&[1, 1, 3, 1], &[1.0, 2.0, 3.0]).cast(DType::F16);
        let out = run(&attention_op(&[]), &[Some(&q), Some(&k), Some(&v)]);
        assert!(out.iter().all(|o| o.dtype() == DType::F16));
        let f32_out = run(
            &attention_op(&[]),
            &[
                Some(&q.cast(DType::F32)),
                Some(&k.cast(DType::F32)),
                Some(&v.cast(DType::F32)),
            ],
        );
        assert_close(&out[0], &vals(&f32_out[0]), 1e-3);
    }

    #[test]
    fn attention_rejects_bad_inputs() {
        let q = t(&[1, 4, 2, 2], &pseudo(16, 21));
        let k = t(&[1, 3, 2, 2], &pseudo(12, 22));
        let v = t(&[1, 3, 2, 2], &pseudo(12, 22));
        let plain = attention_op(&[]);
        assert!(
            eval(&plain, &[Some(&q), Some(&k), Some(&v)]).is_err(),
            "4 heads over 3 KV heads"
        );
        let k2 = t(&[1, 2, 2, 3], &pseudo(12, 22));
        assert!(
            eval(
                &plain,
                &[Some(&q), Some(&k2), Some(&t(&[1, 2, 2, 2], &[0.0; 8]))]
            )
            .is_err(),
            "head sizes differ"
        );
        let q3 = t(&[1, 2, 8], &pseudo(16, 23));
        assert!(
            eval(&plain, &[Some(&q3), Some(&q3), Some(&q3)]).is_err(),
            "3-D without head counts"
        );
        let heads = attention_op(&[
            ("q_num_heads", Attr::Int(3)),
            ("kv_num_heads", Attr::Int(2)),
        ]);
        assert!(
            eval(&heads, &[Some(&q3), Some(&q3), Some(&q3)]).is_err(),
            "8 not divisible by 3"
        );
        let kv = t(&[1, 2, 2, 2], &pseudo(8, 24));
        let past = t(&[1, 2, 1, 2], &[0.0; 4]);
        assert!(
            eval(&plain, &[Some(&q), Some(&kv), Some(&kv), None, Some(&past)]).is_err(),
            "past_key alone"
        );
        let neg = attention_op(&[("scale", Attr::Float(-1.0))]);
        assert!(eval(&neg, &[Some(&q), Some(&kv), Some(&kv)]).is_err());
        assert!(eval(&plain, &[Some(&q), Some(&kv)]).is_err());
    }

    // ---- RotaryEmbedding

    #[test]
    fn rotary_matches_onnx_reference_interleaved_with_positions() {
        let x = t(
            &[1, 2, 2, 4],
            &[
                1.03, 0.16, -0.59, -1.34, -1.4, 0.5, 0.99, -0.16, -1.07, 0.87, -1.28, -0.71, 0.62,
                -2.25, 0.39, -0.58,
            ],
        );
        let cos = t(&[3, 2], &[1.0, 0.765, 0.17, -0.505, -0.942, -0.936]);
        let sin = t(&[3, 2], &[0.0, 0.644, 0.985, 0.863, 0.335, -0.351]);
        let pos = Tensor::from_vec(&[1, 2], vec![2i64, 0]).unwrap();
        let rope = op(OpKind::RotaryEmbedding, &[("interleaved", Attr::Int(1))]);
        let y = &run(&rope, &[Some(&x), Some(&cos), Some(&sin), Some(&pos)])[0];
        let want = [
            -1.02386, 0.19433, 0.0819, 1.46133, -1.4, 0.5, 0.86039, 0.51516, 0.71649, -1.17799,
            0.94887, 1.11384, 0.62, -2.25, 0.67187, -0.19254,
        ];
        assert_close(y, &want, 1e-5);
    }

    #[test]
    fn rotary_matches_onnx_reference_3d_partial_without_positions() {
        let x = t(
            &[1, 2, 12],
            &[
                0.11, -0.08, 0.2, 0.69, -0.76, 1.42, 0.73, 0.84, 1.16, 0.79, 0.84, 0.08, -1.43,
                -0.14, -0.77, -1.42, 0.26, -0.57, -1.03, -1.04, 0.27, 0.36, 1.32, -0.01,
            ],
        );
        let cos = t(&[1, 2, 2], &[1.0, 0.955, 0.825, 0.622]);
        let sin = t(&[1, 2, 2], &[0.0, 0.296, 0.565, 0.783]);
        let rope = op(
            OpKind::RotaryEmbedding,
            &[
                ("num_heads", Attr::Int(2)),
                ("rotary_embedding_dim", Attr::Int(4)),
            ],
        );
        let y = &run(&rope, &[Some(&x), Some(&cos), Some(&sin)])[0];
        let want = [
            0.11, -0.28064, 0.2, 0.63527, -0.76, 1.42, 0.73, 0.56836, 1.16, 1.00309, 0.84, 0.08,
            -0.7447, 1.02478, -1.4432, -0.99286, 0.26, -0.57, -1.0023, -0.92876, -0.3592, -0.5904,
            1.32, -0.01,
        ];
        assert_close(y, &want, 1e-5);
    }

    #[test]
    fn rotary_rotates_pairs_by_the_cached_angle() {
        let x = t(&[2, 3, 2, 8], &pseudo(96, 25));
        let angles: Vec<f32> = (0..5 * 4).map(|i| i as f32 * 0.37).collect();
        let cos = t(&[5, 4], &angles.iter().map(|a| a.cos()).collect::<Vec<_>>());
        let sin = t(&[5, 4], &angles.iter().map(|a| a.sin()).collect::<Vec<_>>());
        // Position 0 has angle 0 everywhere in row 0: identity.
        let zeros = Tensor::from_vec(&[2, 2], vec![0i64; 4]).unwrap();
        let rope = op(OpKind::RotaryEmbedding, &[]);
        let y = &run(&rope, &[Some(&x), Some(&cos), Some(&sin), Some(&zeros)])[0];
        let row0 = &angles[..4];
        assert_eq!(row0[0], 0.0);
        let (xr, yr) = (rows(&x, 8), rows(y, 8));
        for (a, b) in xr.iter().zip(&yr) {
            assert!((a[0] - b[0]).abs() < 1e-6 && (a[4] - b[4]).abs() < 1e-6);
        }
        // Rotation preserves the norm of each (k, k + 4) pair.
        let pos = Tensor::from_vec(&[2, 2], vec![3i64, 1, 4, 2]).unwrap();
        let y = &run(&rope, &[Some(&x), Some(&cos), Some(&sin), Some(&pos)])[0];
        for (a, b) in rows(&x, 8).iter().zip(rows(y, 8)) {
            for k in 0..4 {
                let (na, nb) = (a[k].hypot(a[k + 4]), b[k].hypot(b[k + 4]));
                assert!((na - nb).abs() < 1e-5, "{na} {nb}");
            }
        }
    }

    #[test]
    fn rotary_rejects_bad_inputs() {
        let x = t(&[1, 1, 2, 4], &pseudo(8, 26));
        let cache = t(&[4, 2], &[0.5; 8]);
        let rope = op(OpKind::RotaryEmbedding, &[]);
        let pos = |ids: Vec<i64>| Tensor::from_vec(&[1, 2], ids).unwrap();
        assert!(
            eval(
                &rope,
                &[Some(&x), Some(&cache), Some(&cache), Some(&pos(vec![0, 4]))]
            )
            .is_err(),
            "position out of range"
        );
        assert!(
            eval(
                &rope,
                &[
                    Some(&x),
                    Some(&cache),
                    Some(&cache),
                    Some(&pos(vec![-1, 0]))
                ]
            )
            .is_err(),
            "negative position"
        );
        assert!(
            eval(&rope, &[Some(&x), Some(&cache), Some(&cache)]).is_err(),
            "2-D cache without positions"
        );
        let odd = op(
            OpKind::RotaryEmbedding,
            &[("rotary_embedding_dim", Attr::Int(3))],
        );
        assert!(eval(
            &odd,
            &[Some(&x), Some(&cache), Some(&cache), Some(&pos(vec![0, 1]))]
        )
        .is_err());
        let wide = t(&[4, 3], &[0.5; 12]);
        assert!(
            eval(
                &rope,
                &[Some(&x), Some(&wide), Some(&wide), Some(&pos(vec![0, 1]))]
            )
            .is_err(),
            "cache width"
        );
        let x3 = t(&[1, 2, 4], &pseudo(8, 27));
        assert!(
            eval(
                &rope,
                &[
                    Some(&x3),
                    Some(&cache),
                    Some(&cache),
                    Some(&pos(vec![0, 1]))
                ]
            )
            .is_err(),
            "3-D without num_heads"
        );
    }
}

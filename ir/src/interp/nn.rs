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
        _ => Err(format!("{} is not a normalisation or attention op", op.kind)),
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
        let err = || format!("{what} of shape {:?} does not broadcast to {:?}", p.shape(), x_shape);
        let inner = &x_shape[axis..];
        let lead = p.ndim().saturating_sub(inner.len());
        if p.ndim() <= x_shape.len() && p.shape()[..lead].iter().all(|&d| d == 1) {
            let mut v = p.view();
            for _ in 0..lead {
                v = v.index_axis_move(Axis(0), 0);
            }
            let data = v.broadcast(IxDyn(inner)).ok_or_else(err)?.iter().copied().collect();
            return Ok(Param { data, row_stride: 0 });
        }
        let data = p.broadcast(IxDyn(x_shape)).ok_or_else(err)?.iter().copied().collect();
        Ok(Param { data, row_stride: inner.iter().product() })
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

/// Normalises each row of the row-major matrix `x` (`cols` elements per row):
/// `y = (x - mean) * inv_std * scale + bias` with `inv_std = 1 / sqrt(var + eps)` (LayerNorm),
/// or, when `center` is false, `y = x * inv_std * scale + bias` with
/// `inv_std = 1 / sqrt(mean(x^2) + eps)` (RMSNorm; `mean` is then all zeros).
fn normalize(x: &[f32], cols: usize, center: bool, eps: f32, scale: &Param, bias: Option<&Param>) -> Normalized {
    let rows = if cols == 0 { 0 } else { x.len() / cols };
    let mut out = Normalized { y: Vec::with_capacity(x.len()), mean: vec![], inv_std: vec![] };
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mean = if center { row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64 } else { 0.0 };
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
    let n = normalize(&data, shape[axis..].iter().product(), center, eps, &scale, bias.as_ref());
    let mut stat_shape = shape.clone();
    stat_shape[axis..].fill(1);
    let y = from_f32(dtype, array(&shape, n.y)?);
    let inv_std = Tensor::F32(array(&stat_shape, n.inv_std)?);
    Ok(if center { vec![y, Tensor::F32(array(&stat_shape, n.mean)?), inv_std] } else { vec![y, inv_std] })
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
    let skip = skip
        .broadcast(IxDyn(&shape))
        .ok_or_else(|| format!("skip of shape {:?} does not broadcast to {:?}", skip.shape(), shape))?;
    let mut sum = x + &skip;
    let (beta_idx, bias_idx) = if center { (Some(3), 4) } else { (None, 3) };
    if opt_input(inputs, bias_idx).is_some() {
        let bias = float_input(inputs, bias_idx)?;
        let bias = bias
            .broadcast(IxDyn(&shape))
            .ok_or_else(|| format!("bias of shape {:?} does not broadcast to {:?}", bias.shape(), shape))?;
        sum += &bias;
    }
    let gamma = Param::new(&float_input(inputs, 2)?, &shape, axis, "gamma")?;
    let beta = match beta_idx.filter(|&i| opt_input(inputs, i).is_some()) {
        Some(i) => Some(Param::new(&float_input(inputs, i)?, &shape, axis, "beta")?),
        None => None,
    };
    let data: Vec<f32> = sum.iter().copied().collect();
    let n = normalize(&data, shape[axis], center, eps, &gamma, beta.as_ref());
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
                    return Err(format!("{what} hidden size {hidden} is not a multiple of {h} heads"));
                }
                let e = hidden / h;
                let x4 = x.to_shape(IxDyn(&[b, n, h, e])).map_err(|e| e.to_string())?;
                let data = x4.view().permuted_axes(IxDyn(&[0, 2, 1, 3])).iter().map(|&v| v as f64).collect();
                return Ok(Heads { data, dims: [b, h, n, e] });
            }
            _ => return Err(format!("{what} has shape {s:?}; expected rank 3 or 4")),
        };
        Ok(Heads { data: x.iter().map(|&v| v as f64).collect(), dims })
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
            return Err(format!("past_{what} has shape {:?} but {what} has {:?}", past.dims, self.dims));
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
        Ok(Heads { data, dims: [b, h, pn + n, e] })
    }

    /// Back to a tensor of `dtype` with shape `dims`.
    fn into_tensor(self, dtype: DType) -> Res<Tensor> {
        Ok(from_f32(dtype, array(&self.dims, self.data.into_iter().map(|v| v as f32).collect())?))
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
                return Err(format!("attn_mask of shape {s:?} does not broadcast to {full:?}"));
            }
        }
        if dims[3] > total {
            return Err(format!("attn_mask of shape {s:?} is longer than the {total} keys"));
        }
        let values: Vec<f64> = match mask {
            Tensor::Bool(m) => m.iter().map(|&v| if v { 0.0 } else { f64::NEG_INFINITY }).collect(),
            other => other.to_f64_array().iter().copied().collect(),
        };
        let (rows, width) = (dims[..3].iter().product::<usize>(), dims[3]);
        let mut data = Vec::with_capacity(rows * total);
        for r in 0..rows {
            data.extend_from_slice(&values[r * width..(r + 1) * width]);
            data.resize((r + 1) * total, f64::NEG_INFINITY);
        }
        Ok(Bias { data, dims: [dims[0], dims[1], dims[2], total] })
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

/// ONNX Attention (opset 23, plus opset 24's `nonpad_kv_seqlen` input 6). Outputs Y,
/// present_key, present_value and qk_matmul_output.
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
    let past_key = opt_input(inputs, 4).map(|_| float_input(inputs, 4)).transpose()?;
    let past_value = opt_input(inputs, 5).map(|_| float_input(inputs, 5)).transpose()?;
    if past_key.is_some() != past_value.is_some() {
        return Err("past_key and past_value must be given together".into());
    }
    let past = |p: Option<ArrayD<f32>>, what: &str| match p {
        Some(p) if p.ndim() == 4 => Heads::new(&p, None, what).map(Some),
        Some(p) => Err(format!("{what} has shape {:?}; expected rank 4", p.shape())),
        None => Ok(None),
    };
    let past_len = past_key.as_ref().map_or(0, |p| p.shape().get(2).copied().unwrap_or(0));
    let k = Heads::new(&float_input(inputs, 1)?, kv_heads, "K")?.after(past(past_key, "past_key")?, "key")?;
    let v = Heads::new(&float_input(inputs, 2)?, kv_heads, "V")?.after(past(past_value, "past_value")?, "value")?;

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
        return Err(format!("V has {vh} heads and {vn} positions but K has {hkv} and {total}"));
    }
    if hkv == 0 || hq % hkv != 0 {
        return Err(format!("{hq} query heads are not a multiple of {hkv} key/value heads"));
    }
    if q_heads.is_some_and(|h| h != hq) || kv_heads.is_some_and(|h| h != hkv) {
        return Err(format!("head attributes do not match the 4-D inputs ({hq} and {hkv} heads)"));
    }
    let group = hq / hkv;

    let scale = match a.get("scale") {
        Some(_) => a.float("scale")? as f64,
        None => 1.0 / (e as f64).sqrt(),
    };
    if scale.is_nan() || scale < 0.0 {
        return Err(format!("scale {scale} must be non-negative (Q and K are scaled by its square root)"));
    }
    let root_scale = scale.sqrt();
    let softcap = a.float("softcap")? as f64;
    let causal = a.int("is_causal")? != 0;
    let mode = a.int("qk_matmul_output_mode")?;
    if !(0..=3).contains(&mode) {
        return Err(format!("qk_matmul_output_mode {mode} is not 0, 1, 2 or 3"));
    }
    let full = [batch, hq, sq, total];
    let mask = opt_input(inputs, 3).map(|m| Bias::new(m, full)).transpose()?;
    let nonpad: Option<Vec<i64>> = match opt_input(inputs, 6) {
        Some(t) if t.dtype().is_int() && t.shape() == [batch] => Some(t.to_i64_vec()),
        Some(t) => return Err(format!("nonpad_kv_seqlen must be an integer vector of length {batch}, got {:?}", t.shape())),
        None => None,
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
                for (j, s) in scores.iter_mut().enumerate() {
                    let krow = k.row(b, kvh, j);
                    let raw: f64 = qrow.iter().zip(krow).map(|(x, y)| (x * root_scale) * (y * root_scale)).sum();
                    let capped = if softcap > 0.0 { softcap * (raw / softcap).tanh() } else { raw };
                    let mut biased = capped + bias.map_or(0.0, |m| m[j]);
                    if causal && j > i + past_len || nonpad.as_ref().is_some_and(|n| j as i64 >= n[b]) {
                        biased = f64::NEG_INFINITY;
                    }
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
                let sum: f64 = scores.iter().sum();
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
                let start = if rank == 4 { ((b * hq + h) * sq + i) * ev } else { ((b * sq + i) * hq + h) * ev };
                y[start..start + ev].iter_mut().zip(&acc).for_each(|(o, &v)| *o = v as f32);
            }
        }
    }
    let y_shape: Vec<usize> = if rank == 4 { vec![batch, hq, sq, ev] } else { vec![batch, sq, hq * ev] };
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
                return Err(format!("hidden size {hidden} is not a multiple of num_heads {h}"));
            }
            (b, h as usize, s, hidden / h as usize)
        }
        _ => return Err(format!("input has shape {:?}; expected rank 3 or 4", x.shape())),
    };
    let rot = match a.int("rotary_embedding_dim")? {
        0 => head_size,
        d if d > 0 && d as usize <= head_size && d % 2 == 0 => d as usize,
        d => return Err(format!("rotary_embedding_dim {d} must be even and at most the head size {head_size}")),
    };
    if rot % 2 != 0 {
        return Err(format!("head size {head_size} must be even"));
    }
    let half = rot / 2;
    let (cos, sin) = (float_input(inputs, 1)?, float_input(inputs, 2)?);
    if cos.shape() != sin.shape() {
        return Err(format!("cos_cache {:?} and sin_cache {:?} differ in shape", cos.shape(), sin.shape()));
    }
    if cos.shape().last() != Some(&half) {
        return Err(format!("cache shape {:?} must end in rotary_dim / 2 = {half}", cos.shape()));
    }
    let pick = |i: usize, d: usize| if d == 1 { 0 } else { i };
    // The cache row used at (batch b, position s).
    let cache_rows: Vec<usize> = match opt_input(inputs, 3) {
        Some(p) => {
            let (pb, ps) = match *p.shape() {
                [pb, ps] if p.dtype().is_int() && (pb == 1 || pb == batch) && (ps == 1 || ps == seq) => (pb, ps),
                _ => return Err(format!("position_ids must be integers of shape [{batch}, {seq}], got {:?}", p.shape())),
            };
            let max_pos = match *cos.shape() {
                [m, _] => m,
                _ => return Err(format!("with position_ids the caches must be 2-D, got {:?}", cos.shape())),
            };
            let ids = p.to_i64_vec();
            let mut rows = Vec::with_capacity(batch * seq);
            for b in 0..batch {
                for s in 0..seq {
                    let id = ids[pick(b, pb) * ps + pick(s, ps)];
                    if id < 0 || id as usize >= max_pos {
                        return Err(format!("position id {id} is out of range for a cache of {max_pos} positions"));
                    }
                    rows.push(id as usize);
                }
            }
            rows
        }
        None => match *cos.shape() {
            [cb, cs, _] if (cb == 1 || cb == batch) && (cs == 1 || cs == seq) => {
                (0..batch).flat_map(|b| (0..seq).map(move |s| pick(b, cb) * cs + pick(s, cs))).collect()
            }
            _ => return Err(format!("without position_ids the caches must be [{batch}, {seq}, {half}], got {:?}", cos.shape())),
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
                let base = if x.ndim() == 4 { ((b * heads + h) * seq + s) * head_size } else { ((b * seq + s) * heads + h) * head_size };
                for k in 0..half {
                    let (i1, i2) = if interleaved { (base + 2 * k, base + 2 * k + 1) } else { (base + k, base + k + half) };
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
mod onnx_conformance_tmp {
    use crate::interp::{eval_op, Bindings};
    use crate::{Attrs, DType, Op, Tensor};
    use serde_json::Value;

    fn tensor(v: &Value) -> Tensor {
        let dtype: DType = v["dtype"].as_str().unwrap().parse().unwrap();
        let shape: Vec<usize> = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let data: Vec<f64> = v["data"].as_array().unwrap().iter().map(|d| d.as_f64().unwrap_or_else(|| d.as_str().unwrap().parse().unwrap())).collect();
        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), data).unwrap();
        Tensor::from_f64_array(dtype, a)
    }

    #[test]
    #[ignore]
    fn onnx_backend_cases() {
        let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string("/tmp/kiln_conf/cases.json").unwrap()).unwrap();
        let mut failures = 0;
        for c in &cases {
            let name = c["name"].as_str().unwrap();
            let attrs: Attrs = serde_json::from_value(c["attrs"].clone()).unwrap();
            let op = Op::new(c["op"].as_str().unwrap().parse().unwrap(), attrs);
            let ins: Vec<Option<Tensor>> = c["inputs"].as_array().unwrap().iter().map(|v| (!v.is_null()).then(|| tensor(v))).collect();
            let refs: Vec<Option<&Tensor>> = ins.iter().map(|t| t.as_ref()).collect();
            let got = match eval_op(&op, &refs, &Bindings::new()) {
                Ok(g) => g,
                Err(e) => {
                    println!("FAIL {name}: error {e}");
                    failures += 1;
                    continue;
                }
            };
            let mut ok = true;
            for (k, want) in c["outputs"].as_array().unwrap().iter().enumerate() {
                if want.is_null() {
                    continue;
                }
                let want = tensor(want);
                let g = &got[k];
                if g.dtype() != want.dtype() || g.shape() != want.shape() {
                    println!("FAIL {name} out {k}: {} {:?} vs {} {:?}", g.dtype(), g.shape(), want.dtype(), want.shape());
                    ok = false;
                    continue;
                }
                let (gv, wv) = (g.to_f64_array(), want.to_f64_array());
                let mut worst = 0.0f64;
                for (a, b) in gv.iter().zip(wv.iter()) {
                    let bad = if a.is_nan() || b.is_nan() { if a.is_nan() == b.is_nan() { 0.0 } else { f64::INFINITY } } else if a == b { 0.0 } else { (a - b).abs() / (1e-5 + 1e-3 * b.abs()) };
                    worst = worst.max(bad);
                }
                if worst > 1.0 {
                    println!("FAIL {name} out {k}: worst {worst}");
                    ok = false;
                }
            }
            if ok {
                println!("ok {name}");
            } else {
                failures += 1;
            }
        }
        assert_eq!(failures, 0, "{failures} of {} cases failed", cases.len());
    }
}

//! A roofline cost model for ops, used to pick between equivalent e-nodes.
//!
//! An op launched as one kernel takes
//!
//! ```text
//! seconds = max(flops / peak_flops, bytes / bandwidth_bytes) + launch_overhead_s
//! ```
//!
//! where `flops` is the arithmetic it performs ([`op_flops`]) and `bytes` the memory traffic
//! ([`op_bytes`]): by default every input is read once and every output written once, so an op
//! that never materialises an intermediate (a fused attention never writes its score matrix) is
//! cheaper than the chain of ops it replaces, and every extra kernel pays the launch overhead.
//! Graph inputs and constants cost nothing by themselves; the bytes of a constant weight count
//! when an op reads it.
//!
//! Shapes are symbolic, so sizes are evaluated with representative *bindings* of the symbols
//! ([`dim_size`]): a symbol bound in the map takes that value; an unbound one takes
//! [`default_symbol_value`] (1 for batch-like names, 128 for everything else, `?` included).

use kiln_ir::facts::{facts, OpClass, Traffic};
use kiln_ir::{Activation, Dim, Op, OpKind, ValueType};
use std::collections::HashMap;

/// The machine an extraction optimises for: a single roofline and a per-kernel overhead.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Target {
    /// Peak arithmetic throughput, in FLOP/s.
    pub peak_flops: f64,
    /// Sustained memory bandwidth, in bytes/s.
    pub bandwidth_bytes: f64,
    /// Fixed cost of launching one kernel (call, loop setup, cache warm-up), in seconds.
    pub launch_overhead_s: f64,
}

impl Target {
    /// One AMD Zen 4 core: ~100 GFLOP/s fp32 peak (two 256-bit FMA pipes at ~3 GHz), ~20 GB/s
    /// of single-core memory bandwidth, ~0.2 µs per kernel launch.
    pub const ZEN4_ONE_CORE: Target = Target {
        peak_flops: 100e9,
        bandwidth_bytes: 20e9,
        launch_overhead_s: 2e-7,
    };

    /// The default target with measured peak FLOP/s and bandwidth (bytes/s) substituted; a
    /// figure that is not a positive finite number keeps the default. The launch overhead stays
    /// the default one.
    pub fn with_measured(peak_flops: f64, bandwidth_bytes: f64) -> Target {
        let pick = |v: f64, default: f64| if v.is_finite() && v > 0.0 { v } else { default };
        let d = Target::default();
        Target {
            peak_flops: pick(peak_flops, d.peak_flops),
            bandwidth_bytes: pick(bandwidth_bytes, d.bandwidth_bytes),
            launch_overhead_s: d.launch_overhead_s,
        }
    }

    /// This target with another per-kernel launch overhead (seconds; negative becomes 0).
    pub fn with_launch_overhead(self, launch_overhead_s: f64) -> Target {
        Target {
            launch_overhead_s: launch_overhead_s.max(0.0),
            ..self
        }
    }

    /// The roofline time of one kernel: `max(flops / peak, bytes / bandwidth) + overhead`.
    pub fn seconds(&self, flops: f64, bytes: f64) -> f64 {
        (flops / self.peak_flops).max(bytes / self.bandwidth_bytes) + self.launch_overhead_s
    }
}

impl Default for Target {
    /// [`Target::ZEN4_ONE_CORE`]: the machine kiln is developed on.
    fn default() -> Target {
        Target::ZEN4_ONE_CORE
    }
}

/// The value an unbound symbol takes when costing: 1 for batch-like names (any name containing
/// `batch`, case-insensitive), 128 for every other symbol, including the unknown size `?`.
pub fn default_symbol_value(name: &str) -> i64 {
    if name.to_ascii_lowercase().contains("batch") {
        1
    } else {
        128
    }
}

/// Representative bindings for costing: `batch` = 1, `seq` = 128, `?` = 128. Symbols missing
/// from any bindings map fall back to [`default_symbol_value`], so an empty map works as well.
pub fn default_bindings() -> HashMap<String, i64> {
    HashMap::from([
        ("batch".to_string(), 1),
        ("seq".to_string(), 128),
        ("?".to_string(), 128),
    ])
}

/// The size of `d` with its symbols bound by `bindings` (unbound ones by
/// [`default_symbol_value`]); negative sizes count as 0, and an overflowing polynomial as 128.
pub fn dim_size(d: &Dim, bindings: &HashMap<String, i64>) -> f64 {
    if let Some(v) = d.as_known() {
        return v.max(0) as f64;
    }
    let value = d.eval(bindings).or_else(|| {
        let full: HashMap<String, i64> = d
            .symbols()
            .into_iter()
            .map(|s| {
                let v = bindings
                    .get(s)
                    .copied()
                    .unwrap_or_else(|| default_symbol_value(s));
                (s.to_string(), v)
            })
            .collect();
        d.eval(&full)
    });
    value.map_or(128.0, |v| v.max(0) as f64)
}

/// The element count of a value of type `ty` (the product of its dim sizes; 1 for a scalar).
pub fn num_elements(ty: &ValueType, bindings: &HashMap<String, i64>) -> f64 {
    ty.shape.iter().map(|d| dim_size(d, bindings)).product()
}

/// The bytes of a value of type `ty`: elements times `dtype.size()`.
pub fn value_bytes(ty: &ValueType, bindings: &HashMap<String, i64>) -> f64 {
    num_elements(ty, bindings) * ty.dtype.size() as f64
}

/// The floating-point (or integer) operations `op` performs. `inputs` are the input types
/// (`None` for an absent optional input or an unknown type), `outputs` the output types.
///
/// - MatMul, MatMulInteger: `2 * M * N * K * batch`, i.e. `2 * elements(Y) * K` with `K` the last
///   dim of A.
/// - Gemm: `2 * M * N * K`, plus `M * N` for the scaled bias when C is present.
/// - FusedMatMul: the MatMul's `2 * elements(Y) * K`, plus per output element 1 for the bias
///   and the count of the activation's own op ([`Activation::op`]: none 0, relu 1, gelu,
///   gelu_tanh, sigmoid and tanh 10, silu 11); its bytes are A, B, bias and Y only, as the
///   pre-activation result is never written.
/// - Einsum: `2 *` the product of the sizes of all distinct labels (and of the broadcast `...`
///   dims); a single-operand Einsum (a transpose, trace or sum) counts 1 per label combination.
/// - Attention ([`OpClass::Attention`]): `2 * B * Sq * Skv * H * (Dqk + Dv)` for `Q K^T` and `P V`
///   (`4 * B * H * Sq * Skv * D` when the head sizes agree), plus 5 per score for the softmax,
///   the same arithmetic as the unfused chain; `Skv` includes a past key cache.
/// - Reductions (ReduceMean/Sum/Max/Min): 1 per *input* element.
/// - Elementwise and row-wise ops: the op table's count per output element
///   ([`kiln_ir::facts::OpFacts::flops_per_element`]): 1 for cheap arithmetic, comparisons and
///   logic, 2 for Clip, 4 for Div/Reciprocal/Sqrt/Mod, ~10 for transcendentals, 5-9 for
///   softmax and the norms, 11 for Silu, 12 for SwiGlu, 3 for the rotary embeddings.
/// - Data movement (Transpose, Concat, Split, Slice, Gather*, Expand, Tile, Cast, ...) and views
///   (Reshape, Squeeze, Unsqueeze, Flatten, Identity, Dropout): 0.
pub fn op_flops(
    op: &Op,
    inputs: &[Option<&ValueType>],
    outputs: &[ValueType],
    bindings: &HashMap<String, i64>,
) -> f64 {
    use OpKind::*;
    let size = |d: &Dim| dim_size(d, bindings);
    let input = |i: usize| inputs.get(i).copied().flatten();
    let out_elems = outputs.first().map_or(0.0, |t| num_elements(t, bindings));
    if facts(op.kind).class == OpClass::Attention {
        return attention_flops(op, inputs, bindings).unwrap_or(out_elems);
    }
    match op.kind {
        MatMul | MatMulInteger => match input(0).and_then(|a| a.shape.last()) {
            Some(k) => 2.0 * out_elems * size(k),
            None => out_elems,
        },
        FusedMatMul => {
            let k = input(0).and_then(|a| a.shape.last()).map_or(0.0, size);
            let bias = if input(2).is_some() { 1.0 } else { 0.0 };
            // The activation costs what its own elementwise op does.
            let act = op
                .attrs
                .str("activation")
                .and_then(Activation::parse)
                .map_or(0.0, |a| facts(a.op().kind).flops_per_element);
            out_elems * (2.0 * k + bias + act)
        }
        Gemm => {
            let k = input(0).and_then(|a| {
                let trans = op.attrs.int("transA").unwrap_or(0) != 0;
                match a.shape.as_slice() {
                    [m, k] => Some(if trans { m } else { k }),
                    _ => None,
                }
            });
            let bias = if input(2).is_some() { out_elems } else { 0.0 };
            k.map_or(out_elems, |k| 2.0 * out_elems * size(k)) + bias
        }
        Einsum => einsum_flops(op, inputs, bindings).unwrap_or(2.0 * out_elems),
        ReduceMean | ReduceSum | ReduceMax | ReduceMin => {
            input(0).map_or(out_elems, |x| num_elements(x, bindings))
        }
        kind => facts(kind).flops_per_element * out_elems,
    }
}

/// Flops of attention: `2 * B * Sq * Skv * (H * Dqk + H * Dv) + 5 * B * H * Sq * Skv`.
fn attention_flops(
    op: &Op,
    inputs: &[Option<&ValueType>],
    bindings: &HashMap<String, i64>,
) -> Option<f64> {
    let size = |d: &Dim| dim_size(d, bindings);
    let input = |i: usize| inputs.get(i).copied().flatten();
    let (q, k, v) = (input(0)?, input(1)?, input(2)?);
    let past = input(4).and_then(|p| p.shape.get(2)).map_or(0.0, size);
    match (q.shape.as_slice(), k.shape.as_slice(), v.shape.as_slice()) {
        // [B, H, S, D]
        ([b, h, sq, dqk], [_, _, skv, _], [_, _, _, dv]) => {
            let (b, h, sq, skv) = (size(b), size(h), size(sq), size(skv) + past);
            Some(2.0 * b * h * sq * skv * (size(dqk) + size(dv)) + 5.0 * b * h * sq * skv)
        }
        // [B, S, H * D], heads in attributes (grouped-query: V's heads repeat q/kv times).
        ([b, sq, hd_q], [_, skv, _], [_, _, hd_v]) => {
            let hq = op.attrs.int("q_num_heads").unwrap_or(1).max(1) as f64;
            let hkv = op.attrs.int("kv_num_heads").map_or(hq, |h| h.max(1) as f64);
            let (b, sq, skv) = (size(b), size(sq), size(skv) + past);
            let pv = size(hd_v) * hq / hkv;
            Some(2.0 * b * sq * skv * (size(hd_q) + pv) + 5.0 * b * hq * sq * skv)
        }
        _ => None,
    }
}

/// Flops of Einsum: `2 *` (1 * for one operand) the product of all distinct label sizes and
/// the broadcast ellipsis dims. `None` if the equation does not parse against the shapes.
fn einsum_flops(
    op: &Op,
    inputs: &[Option<&ValueType>],
    bindings: &HashMap<String, i64>,
) -> Option<f64> {
    let equation: String = op
        .attrs
        .str("equation")
        .ok()?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let lhs = equation.split("->").next()?;
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != inputs.len() {
        return None;
    }
    let mut labels: HashMap<char, f64> = HashMap::new();
    let mut ellipsis: Vec<f64> = vec![];
    for (term, ty) in terms.iter().zip(inputs) {
        let ty = (*ty)?;
        let named: Vec<char> = term.chars().filter(|c| c.is_ascii_alphabetic()).collect();
        let ell = ty.shape.len().checked_sub(named.len())?;
        let mut dims = ty.shape.iter();
        let mut seen_ellipsis = false;
        for c in term.chars() {
            if c == '.' {
                if !seen_ellipsis {
                    seen_ellipsis = true;
                    let sizes: Vec<f64> = dims
                        .by_ref()
                        .take(ell)
                        .map(|d| dim_size(d, bindings))
                        .collect();
                    // Right-aligned broadcast with the ellipsis dims seen so far.
                    if sizes.len() > ellipsis.len() {
                        let pad = sizes.len() - ellipsis.len();
                        ellipsis.splice(0..0, std::iter::repeat_n(1.0, pad));
                    }
                    let offset = ellipsis.len() - sizes.len();
                    for (i, s) in sizes.into_iter().enumerate() {
                        ellipsis[offset + i] = ellipsis[offset + i].max(s);
                    }
                }
            } else if c.is_ascii_alphabetic() {
                let s = dim_size(dims.next()?, bindings);
                let entry = labels.entry(c).or_insert(s);
                *entry = entry.max(s);
            }
        }
    }
    let product = labels.values().product::<f64>() * ellipsis.iter().product::<f64>();
    Some(if inputs.len() >= 2 {
        2.0 * product
    } else {
        product
    })
}

/// The bytes `op` moves to and from memory, each input read once and each output written once,
/// with these exceptions:
///
/// - views ([`Traffic::Free`], which also counts Split, read in place): 0, they only relabel their input's buffer;
/// - Shape and Size read only their input's metadata: output bytes only;
/// - Slice, Gather, GatherElements, GatherND read only the part of input 0 they copy: twice the
///   output bytes plus the index inputs (an embedding lookup does not stream the whole table);
/// - attention ([`Traffic::FirstOutput`]): Q, K, V, mask and any past key/value read, and output 0 (Y)
///   written; it never materialises the `B * H * Sq * Skv` score matrix, and extra outputs
///   passed in `outputs` are not counted.
///
/// Constant weights are inputs like any other, so their bytes count when an op reads them.
pub fn op_bytes(
    op: &Op,
    inputs: &[Option<&ValueType>],
    outputs: &[ValueType],
    bindings: &HashMap<String, i64>,
) -> f64 {
    let bytes = |t: &ValueType| value_bytes(t, bindings);
    let read = |from: usize| {
        inputs
            .iter()
            .skip(from)
            .flatten()
            .map(|t| bytes(t))
            .sum::<f64>()
    };
    let written: f64 = outputs.iter().map(bytes).sum();
    match facts(op.kind).traffic {
        Traffic::Free => 0.0,
        Traffic::Written => written,
        Traffic::Gathered => 2.0 * written + read(1),
        Traffic::FirstOutput => read(0) + outputs.first().map_or(0.0, bytes),
        Traffic::Streamed => read(0) + written,
    }
}

/// The roofline time of `op` in seconds: `max(flops / peak, bytes / bandwidth) + overhead`,
/// with [`op_flops`] and [`op_bytes`]. `inputs` are the input types (`None` for absent optional
/// inputs), `outputs` the types of the outputs the op writes (callers pass only the outputs
/// that are used, except for Split, which writes all of them), and `bindings` size the
/// symbolic dims ([`dim_size`]).
pub fn op_cost(
    target: &Target,
    op: &Op,
    inputs: &[Option<&ValueType>],
    outputs: &[ValueType],
    bindings: &HashMap<String, i64>,
) -> f64 {
    target.seconds(
        op_flops(op, inputs, outputs, bindings),
        op_bytes(op, inputs, outputs, bindings),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::infer::infer_outputs;
    use kiln_ir::{Attr, Attrs, DType};

    fn ty(dtype: DType, shape: &[&str]) -> ValueType {
        ValueType::new(dtype, shape.iter().map(|d| d.parse().unwrap()).collect())
    }

    fn f32s(shape: &[&str]) -> ValueType {
        ty(DType::F32, shape)
    }

    fn cost_of(target: &Target, op: &Op, inputs: &[&ValueType]) -> (f64, f64, f64) {
        let ins: Vec<Option<&ValueType>> = inputs.iter().map(|t| Some(*t)).collect();
        let outs = infer_outputs(op, &ins).unwrap();
        let b = default_bindings();
        let outs = &outs[..1];
        (
            op_flops(op, &ins, outs, &b),
            op_bytes(op, &ins, outs, &b),
            op_cost(target, op, &ins, outs, &b),
        )
    }

    #[test]
    fn bindings_default_batch_to_one_and_the_rest_to_128() {
        let empty = HashMap::new();
        assert_eq!(dim_size(&"batch*seq".parse().unwrap(), &empty), 128.0);
        assert_eq!(dim_size(&Dim::unknown(), &empty), 128.0);
        assert_eq!(dim_size(&"2*seq+1".parse().unwrap(), &empty), 257.0);
        assert_eq!(dim_size(&Dim::known(7), &empty), 7.0);
        let b = HashMap::from([("seq".to_string(), 10)]);
        assert_eq!(dim_size(&"batch*seq".parse().unwrap(), &b), 10.0);
        assert_eq!(dim_size(&"past+seq".parse().unwrap(), &b), 138.0);
        assert_eq!(
            value_bytes(&f32s(&["batch", "seq", "4"]), &default_bindings()),
            2048.0
        );
    }

    #[test]
    fn target_defaults_and_measured_figures() {
        let t = Target::default();
        assert_eq!(t, Target::ZEN4_ONE_CORE);
        assert_eq!(
            (t.peak_flops, t.bandwidth_bytes, t.launch_overhead_s),
            (100e9, 20e9, 2e-7)
        );
        let m = Target::with_measured(50e9, 0.0);
        assert_eq!(
            (m.peak_flops, m.bandwidth_bytes, m.launch_overhead_s),
            (50e9, 20e9, 2e-7)
        );
        assert_eq!(t.with_launch_overhead(0.0).seconds(100e9, 0.0), 1.0);
        assert_eq!(t.seconds(0.0, 20e9), 1.0 + 2e-7);
    }

    #[test]
    fn matmul_is_2mnk_and_compute_bound_when_large() {
        let t = Target::default();
        let a = f32s(&["batch", "seq", "768"]);
        let w = f32s(&["768", "768"]);
        let (flops, bytes, secs) = cost_of(&t, &Op::plain(OpKind::MatMul), &[&a, &w]);
        assert_eq!(flops, 2.0 * 128.0 * 768.0 * 768.0);
        // Reads A and the weight, writes Y.
        assert_eq!(bytes, 4.0 * (128.0 * 768.0 * 2.0 + 768.0 * 768.0));
        assert_eq!(secs, (flops / 100e9).max(bytes / 20e9) + 2e-7);
        let mut attrs = Attrs::default();
        attrs.set("transA", Attr::Int(1));
        let (flops, _, _) = cost_of(
            &t,
            &Op::new(OpKind::Gemm, attrs),
            &[&f32s(&["64", "32"]), &f32s(&["64", "16"])],
        );
        assert_eq!(flops, 2.0 * 32.0 * 16.0 * 64.0);
    }

    #[test]
    fn einsum_counts_every_distinct_label() {
        let mut attrs = Attrs::default();
        attrs.set("equation", Attr::Str("bhqd,bhkd->bhqk".into()));
        let q = f32s(&["1", "12", "128", "64"]);
        let (flops, _, _) = cost_of(
            &Target::default(),
            &Op::new(OpKind::Einsum, attrs),
            &[&q, &q],
        );
        assert_eq!(flops, 2.0 * 12.0 * 128.0 * 128.0 * 64.0);
        let mut attrs = Attrs::default();
        attrs.set("equation", Attr::Str("...ij,...jk".into()));
        let (flops, _, _) = cost_of(
            &Target::default(),
            &Op::new(OpKind::Einsum, attrs),
            &[&f32s(&["3", "4", "5"]), &f32s(&["5", "6"])],
        );
        assert_eq!(flops, 2.0 * 3.0 * 4.0 * 5.0 * 6.0);
    }

    #[test]
    fn elementwise_reductions_and_views() {
        let t = Target::default();
        let x = f32s(&["batch", "seq", "64"]);
        let n = 128.0 * 64.0;
        let (f, b, _) = cost_of(&t, &Op::plain(OpKind::Add), &[&x, &x]);
        assert_eq!((f, b), (n, 3.0 * 4.0 * n));
        let (f, b, _) = cost_of(&t, &Op::plain(OpKind::Gelu), &[&x]);
        assert_eq!(
            (f, b),
            (10.0 * n, 2.0 * 4.0 * n),
            "x read once, y written once"
        );
        let mut attrs = Attrs::default();
        attrs.set("axes", Attr::Ints(vec![-1]));
        let (f, b, _) = cost_of(&t, &Op::new(OpKind::ReduceSum, attrs), &[&x]);
        assert_eq!((f, b), (n, 4.0 * (n + 128.0)));
        let shape = ValueType {
            sym: Some(vec![Dim::known(128), Dim::known(64)]),
            ..ty(DType::I64, &["2"])
        };
        let (f, b, s) = cost_of(&t, &Op::plain(OpKind::Reshape), &[&x, &shape]);
        assert_eq!((f, b, s), (0.0, 0.0, 2e-7), "views cost only the launch");
        let (f, b, _) = cost_of(&t, &Op::plain(OpKind::Transpose), &[&x]);
        assert_eq!((f, b), (0.0, 2.0 * 4.0 * n));
    }

    #[test]
    fn fused_attention_beats_the_unfused_chain() {
        let t = Target::default();
        let b = default_bindings();
        let q = f32s(&["batch", "12", "seq", "64"]);
        let kt = f32s(&["batch", "12", "64", "seq"]);
        let (attn_flops, attn_bytes, fused) =
            cost_of(&t, &Op::plain(OpKind::Attention), &[&q, &q, &q]);
        let scores = 12.0 * 128.0 * 128.0;
        assert_eq!(attn_flops, 4.0 * scores * 64.0 + 5.0 * scores);
        assert_eq!(
            attn_bytes,
            4.0 * 4.0 * 12.0 * 128.0 * 64.0,
            "Q, K, V and Y only"
        );
        // MatMul(Q, K^T) -> Softmax -> MatMul(P, V), each writing and rereading the scores.
        let mm = |x: &ValueType, y: &ValueType| {
            let out = infer_outputs(&Op::plain(OpKind::MatMul), &[Some(x), Some(y)]).unwrap();
            (
                op_cost(
                    &t,
                    &Op::plain(OpKind::MatMul),
                    &[Some(x), Some(y)],
                    &out,
                    &b,
                ),
                out[0].clone(),
            )
        };
        let (c1, s) = mm(&q, &kt);
        let c2 = op_cost(
            &t,
            &Op::plain(OpKind::Softmax),
            &[Some(&s)],
            std::slice::from_ref(&s),
            &b,
        );
        let (c3, y) = mm(&s, &q);
        assert_eq!(y.shape, q.shape);
        assert!(
            fused < c1 + c2 + c3,
            "fused {fused} vs unfused {}",
            c1 + c2 + c3
        );
        // The 3-D form with heads in attributes costs the same arithmetic.
        let mut attrs = Attrs::default();
        attrs.set("q_num_heads", Attr::Int(12));
        attrs.set("kv_num_heads", Attr::Int(12));
        let q3 = f32s(&["batch", "seq", "768"]);
        let (f3, b3, _) = cost_of(&t, &Op::new(OpKind::Attention, attrs), &[&q3, &q3, &q3]);
        assert_eq!((f3, b3), (attn_flops, attn_bytes));
    }

    #[test]
    fn fused_ops_cost_their_arithmetic_without_intermediates() {
        let t = Target::default();
        let b = default_bindings();
        let a = f32s(&["batch", "seq", "768"]);
        let w = f32s(&["768", "3072"]);
        let bias = f32s(&["3072"]);
        let mut attrs = Attrs::default();
        attrs.set("activation", Attr::Str("gelu".into()));
        let fused = Op::new(OpKind::FusedMatMul, attrs);
        let (f, by, c) = cost_of(&t, &fused, &[&a, &w, &bias]);
        let n = 128.0 * 3072.0;
        assert_eq!(f, n * (2.0 * 768.0 + 1.0 + 10.0));
        assert_eq!(by, 4.0 * (128.0 * 768.0 + 768.0 * 3072.0 + 3072.0 + n));
        // MatMul, Add, Gelu: each writes and rereads the [seq, 3072] intermediate.
        let (_, _, c1) = cost_of(&t, &Op::plain(OpKind::MatMul), &[&a, &w]);
        let y = f32s(&["batch", "seq", "3072"]);
        let (_, _, c2) = cost_of(&t, &Op::plain(OpKind::Add), &[&y, &bias]);
        let (_, _, c3) = cost_of(&t, &Op::plain(OpKind::Gelu), &[&y]);
        assert!(c < c1 + c2 + c3, "{c} vs {}", c1 + c2 + c3);
        // FusedAttention costs like Attention.
        let q = f32s(&["batch", "12", "seq", "64"]);
        let ins = [Some(&q), Some(&q), Some(&q)];
        let fa = Op::plain(OpKind::FusedAttention);
        let outs = infer_outputs(&fa, &ins).unwrap();
        let at = Op::plain(OpKind::Attention);
        let at_outs = infer_outputs(&at, &ins).unwrap();
        assert_eq!(
            op_cost(&t, &fa, &ins, &outs, &b),
            op_cost(&t, &at, &ins, &at_outs, &b)
        );
        let (f, _, _) = cost_of(&t, &Op::plain(OpKind::Silu), &[&y]);
        assert_eq!(f, 11.0 * n);
    }

    #[test]
    fn gathers_read_only_what_they_copy() {
        let t = Target::default();
        let table = f32s(&["30522", "768"]);
        let ids = ty(DType::I64, &["batch", "seq"]);
        let (_, b, _) = cost_of(&t, &Op::plain(OpKind::Gather), &[&table, &ids]);
        assert_eq!(b, 2.0 * 4.0 * 128.0 * 768.0 + 8.0 * 128.0);
        let (f, b, _) = cost_of(&t, &Op::plain(OpKind::Shape), &[&table]);
        assert_eq!((f, b), (0.0, 16.0));
    }
}

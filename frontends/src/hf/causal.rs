//! The causal language models, GPT-2, LLaMA (with Mistral and Qwen2), GPT-NeoX and Phi, in two
//! entry points, prefill (the prompt) and decode (tokens after it), both `input_ids`,
//! `attention_mask` and the KV cache → `logits` and the cache.
//!
//! The cache is a state, updated in place: inputs `cache_key.{l}` / `cache_value.{l}` of
//! shape `[batch, kv_heads, capacity, head_dim]`, preallocated by the caller for as many
//! positions as it will ever hold, and outputs of the same names, their new values. Each entry
//! point writes its new keys and values into them with `TensorScatter` (ONNX opset 24) at the
//! cache's length — 0 for prefill; for decode `past`, which the mask's `past + seq` columns
//! give — so nothing already in the cache is copied. Prefill's attention reads its own keys;
//! decode's reads the cache, filled to `past + seq` (`nonpad_kv_seqlen`, so the rows beyond
//! are never read). A cache whose capacity is under `past + seq` is an error naming it.

use super::builder::Builder;
use super::config::{Architecture, HfConfig, RopeScaling};
use kiln_ir::{Attr, DType, Dim, OpKind, Tensor, ValueId};

/// Which graph to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The whole prompt at once; no cache in.
    Prefill,
    /// New tokens after a cache of `past` positions.
    Decode,
}

type Res<T> = Result<T, String>;

struct Io {
    ids: ValueId,
    mask: ValueId,
    /// Each layer's key and value cache.
    caches: Vec<(ValueId, ValueId)>,
    /// Where the new keys go in each batch item's cache, `[batch]`.
    write_at: ValueId,
    /// For decode, the keys each batch item's cache then holds, `[batch]`.
    lengths: Option<ValueId>,
    past_len: Dim,
}

/// What one layer's attention needs of the cache.
#[derive(Clone, Copy)]
struct Cache {
    key: ValueId,
    value: ValueId,
    write_at: ValueId,
    lengths: Option<ValueId>,
}

impl Io {
    fn cache(&self, layer: usize) -> Cache {
        let (key, value) = self.caches[layer];
        Cache {
            key,
            value,
            write_at: self.write_at,
            lengths: self.lengths,
        }
    }
}

fn inputs(b: &mut Builder, c: &HfConfig, entry: Entry) -> Res<Io> {
    let (batch, seq, past) = (Dim::sym("batch"), Dim::sym("seq"), Dim::sym("past"));
    let ids = b
        .graph
        .add_input("input_ids", DType::I64, vec![batch.clone(), seq.clone()])?;
    let past_len = if entry == Entry::Decode {
        past
    } else {
        Dim::known(0)
    };
    let mask = b.graph.add_input(
        "attention_mask",
        DType::I64,
        vec![batch.clone(), &past_len + &seq],
    )?;
    let mut caches = vec![];
    let shape = vec![
        batch.clone(),
        Dim::from(c.num_kv_heads),
        Dim::sym("capacity"),
        Dim::from(c.head_dim),
    ];
    for l in 0..c.num_layers {
        let k = b
            .graph
            .add_input(&format!("cache_key.{l}"), DType::F32, shape.clone())?;
        let v = b
            .graph
            .add_input(&format!("cache_value.{l}"), DType::F32, shape.clone())?;
        caches.push((k, v));
    }
    let per_item = |b: &mut Builder, d: &Dim| {
        let value = b.dims(std::slice::from_ref(d))?;
        let items = b.dims(std::slice::from_ref(&batch))?;
        b.op(OpKind::Expand, &[], &[value, items])
    };
    let write_at = per_item(b, &past_len)?;
    let lengths = match entry {
        Entry::Decode => Some(per_item(b, &(&past_len + &seq))?),
        Entry::Prefill => None,
    };
    Ok(Io {
        ids,
        mask,
        caches,
        write_at,
        lengths,
        past_len,
    })
}

/// Causal attention, within a sliding `window` of positions if the layer has one, after
/// writing the new keys and values into the cache: returns the output `[batch, heads, seq,
/// d]` and the cache's new key and value.
fn attend(
    b: &mut Builder,
    [q, k, v]: [ValueId; 3],
    mask: ValueId,
    cache: Cache,
    d: usize,
    window: Option<usize>,
) -> Res<[ValueId; 3]> {
    let key = b.op(OpKind::TensorScatter, &[], &[cache.key, k, cache.write_at])?;
    let value = b.op(
        OpKind::TensorScatter,
        &[],
        &[cache.value, v, cache.write_at],
    )?;
    let scale = Attr::Float(1.0 / (d as f32).sqrt());
    let mut attrs = vec![("is_causal", Attr::Int(1)), ("scale", scale)];
    // A window of W positions: the query and the W - 1 keys before it.
    if let Some(w) = window {
        attrs.push(("left_window_size", Attr::Int(w as i64 - 1)));
    }
    let (keys, values) = match cache.lengths {
        Some(_) => (key, value),
        None => (k, v),
    };
    let inputs = [Some(q), Some(keys), Some(values), Some(mask), None, None];
    let mut inputs = inputs.to_vec();
    inputs.extend(cache.lengths.map(Some));
    let y = b.ops(OpKind::Attention, &attrs, &inputs, 1)?[0];
    Ok([y, key, value])
}

/// Builds the graph of a causal model.
pub(crate) fn build(b: &mut Builder, c: &HfConfig, entry: Entry) -> Res<()> {
    let io = inputs(b, c, entry)?;
    match c.architecture {
        Architecture::Gpt2 => gpt2(b, c, io),
        Architecture::Llama => llama(b, c, io),
        Architecture::GptNeoX => gpt_neox(b, c, io),
        Architecture::Phi => phi(b, c, io),
        Architecture::Bert | Architecture::DistilBert => Err(format!(
            "{} is not a causal language model",
            c.architecture_name
        )),
    }
}

fn finish(b: &mut Builder, logits: ValueId, presents: Vec<(ValueId, ValueId)>) {
    let mut outputs = vec![("logits".to_string(), logits)];
    for (l, (k, v)) in presents.into_iter().enumerate() {
        outputs.push((format!("cache_key.{l}"), k));
        outputs.push((format!("cache_value.{l}"), v));
    }
    b.graph.set_outputs(outputs);
}

fn gpt2(b: &mut Builder, c: &HfConfig, io: Io) -> Res<()> {
    let (h, heads, d) = (c.hidden_size, c.num_heads, c.head_dim);
    let wte = b.weight("transformer.wte.weight", &[c.vocab_size, h])?;
    let wpe = b.weight("transformer.wpe.weight", &[c.max_positions, h])?;
    let tokens = b.op(OpKind::Gather, &[], &[wte, io.ids])?;
    let positions = b.positions(&io.past_len)?;
    let pos = b.op(OpKind::Gather, &[], &[wpe, positions])?;
    let mut x = b.op(OpKind::Add, &[], &[tokens, pos])?;
    let mask = b.padding_mask(io.mask)?;
    let mut presents = vec![];
    for l in 0..c.num_layers {
        let p = format!("transformer.h.{l}");
        let a = b.layer_norm(x, &format!("{p}.ln_1"), h, c.norm_eps)?;
        let qkv = b.conv1d(a, &format!("{p}.attn.c_attn"), h, 3 * h)?;
        let parts = b.ops(
            OpKind::Split,
            &[("axis", Attr::Int(-1)), ("num_outputs", Attr::Int(3))],
            &[Some(qkv)],
            3,
        )?;
        let (q, k, v) = (
            b.split_heads(parts[0], heads, d)?,
            b.split_heads(parts[1], heads, d)?,
            b.split_heads(parts[2], heads, d)?,
        );
        let [y, pk, pv] = attend(b, [q, k, v], mask, io.cache(l), d, None)?;
        presents.push((pk, pv));
        let y = b.merge_heads(y, h)?;
        let y = b.conv1d(y, &format!("{p}.attn.c_proj"), h, h)?;
        x = b.op(OpKind::Add, &[], &[x, y])?;
        let m = b.layer_norm(x, &format!("{p}.ln_2"), h, c.norm_eps)?;
        let m = b.conv1d(m, &format!("{p}.mlp.c_fc"), h, c.intermediate_size)?;
        let m = b.activation(m, c.activation)?;
        let m = b.conv1d(m, &format!("{p}.mlp.c_proj"), c.intermediate_size, h)?;
        x = b.op(OpKind::Add, &[], &[x, m])?;
    }
    let x = b.layer_norm(x, "transformer.ln_f", h, c.norm_eps)?;
    let logits = lm_head(b, x, "transformer.wte.weight", "lm_head", false, c)?;
    finish(b, logits, presents);
    Ok(())
}

/// Logits `x @ W^T (+ head.bias)`, with `W` the token embedding when the head is tied, else
/// `{head}.weight`.
fn lm_head(
    b: &mut Builder,
    x: ValueId,
    embedding: &str,
    head: &str,
    bias: bool,
    c: &HfConfig,
) -> Res<ValueId> {
    let (v, h) = (c.vocab_size, c.hidden_size);
    if !c.tie_word_embeddings {
        return b.linear(x, head, h, v, bias);
    }
    let w = b.weight(embedding, &[v, h])?;
    let wt = b.op(OpKind::Transpose, &[("perm", Attr::Ints(vec![1, 0]))], &[w])?;
    let logits = b.op(OpKind::MatMul, &[], &[x, wt])?;
    if !bias {
        return Ok(logits);
    }
    let bias = b.weight(&format!("{head}.bias"), &[v])?;
    b.op(OpKind::Add, &[], &[logits, bias])
}

/// RoPE on `x` `[batch, heads, seq, head_dim]`: the first `rotary_dim` dims of each head are
/// rotated (rotate-half), the rest pass through.
fn rope(b: &mut Builder, c: &HfConfig, x: ValueId, cos: ValueId, sin: ValueId) -> Res<ValueId> {
    let (r, d) = (c.rotary_dim, c.head_dim);
    if r == d {
        return b.op(OpKind::RopeRotateHalf, &[], &[x, cos, sin]);
    }
    let parts = b.ops(
        OpKind::Split,
        &[
            ("axis", Attr::Int(-1)),
            ("split", Attr::Ints(vec![r as i64, (d - r) as i64])),
        ],
        &[Some(x)],
        2,
    )?;
    let rotated = b.op(OpKind::RopeRotateHalf, &[], &[parts[0], cos, sin])?;
    b.op(
        OpKind::Concat,
        &[("axis", Attr::Int(-1))],
        &[rotated, parts[1]],
    )
}

/// RoPE tables `cos`, `sin` of shape `[seq, rotary_dim]` for the positions, with the configured
/// scaling (linear: positions divided by the factor; dynamic NTK: the base grows with the total
/// length once it passes the original maximum).
fn rope_tables(b: &mut Builder, c: &HfConfig, past: &Dim) -> Res<(ValueId, ValueId)> {
    let d = c.rotary_dim;
    let half = d / 2;
    let exponents: Vec<f32> = (0..half).map(|i| -(2.0 * i as f32) / d as f32).collect();
    let inv_freq = match c.rope_scaling {
        RopeScaling::Dynamic {
            factor,
            original_max_positions,
        } => {
            let total = b.dim_scalar(&(past + &Dim::sym("seq")))?;
            let total = b.op(OpKind::Cast, &[("to", Attr::Str("f32".into()))], &[total])?;
            let scaled = b.scalar(factor / original_max_positions as f32)?;
            let t = b.op(OpKind::Mul, &[], &[total, scaled])?;
            let shift = b.scalar(factor - 1.0)?;
            let t = b.op(OpKind::Sub, &[], &[t, shift])?;
            let one = b.scalar(1.0)?;
            let t = b.op(OpKind::Max, &[], &[t, one])?;
            let power = b.scalar(d as f32 / (d as f32 - 2.0))?;
            let t = b.op(OpKind::Pow, &[], &[t, power])?;
            let theta = b.scalar(c.rope_theta)?;
            let base = b.op(OpKind::Mul, &[], &[t, theta])?;
            let exps = b.constant("rope_exponents", Tensor::from_vec(&[half], exponents)?)?;
            b.op(OpKind::Pow, &[], &[base, exps])?
        }
        RopeScaling::None | RopeScaling::Linear { .. } => {
            let factor = match c.rope_scaling {
                RopeScaling::Linear { factor } => factor,
                _ => 1.0,
            };
            let values: Vec<f32> = exponents
                .iter()
                .map(|e| (c.rope_theta as f64).powf(*e as f64) as f32 / factor)
                .collect();
            b.constant("rope_inv_freq", Tensor::from_vec(&[half], values)?)?
        }
    };
    let positions = b.positions(past)?;
    let positions = b.op(
        OpKind::Cast,
        &[("to", Attr::Str("f32".into()))],
        &[positions],
    )?;
    let positions = b.op(
        OpKind::Unsqueeze,
        &[("axes", Attr::Ints(vec![1]))],
        &[positions],
    )?;
    let freqs = b.op(OpKind::Mul, &[], &[positions, inv_freq])?;
    let emb = b.op(OpKind::Concat, &[("axis", Attr::Int(-1))], &[freqs, freqs])?;
    Ok((
        b.op(OpKind::Cos, &[], &[emb])?,
        b.op(OpKind::Sin, &[], &[emb])?,
    ))
}

/// The attention sublayer of LLaMA-style and Phi blocks: separate `q_proj`, `k_proj` and
/// `v_proj` projections under `prefix`, RoPE on the queries and keys, attention (after the KV
/// cache, if any) and the output projection `out` (its name under `prefix`, and whether it
/// has a bias).
struct RotaryAttention {
    prefix: String,
    qkv_bias: bool,
    out: (&'static str, bool),
    /// The layer's sliding window (Mistral, Qwen2), if it has one.
    window: Option<usize>,
}

impl RotaryAttention {
    /// The sublayer's output for the normalised input `a`, and the present key and value.
    fn build(
        &self,
        b: &mut Builder,
        c: &HfConfig,
        a: ValueId,
        (cos, sin): (ValueId, ValueId),
        mask: ValueId,
        cache: Cache,
    ) -> Res<(ValueId, (ValueId, ValueId))> {
        let (h, heads, kv, d) = (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim);
        let p = &self.prefix;
        let q = b.linear(a, &format!("{p}.q_proj"), h, heads * d, self.qkv_bias)?;
        let k = b.linear(a, &format!("{p}.k_proj"), h, kv * d, self.qkv_bias)?;
        let v = b.linear(a, &format!("{p}.v_proj"), h, kv * d, self.qkv_bias)?;
        let q = b.split_heads(q, heads, d)?;
        let q = rope(b, c, q, cos, sin)?;
        let k = b.split_heads(k, kv, d)?;
        let k = rope(b, c, k, cos, sin)?;
        let v = b.split_heads(v, kv, d)?;
        let [y, pk, pv] = attend(b, [q, k, v], mask, cache, d, self.window)?;
        let y = b.merge_heads(y, heads * d)?;
        let (name, bias) = self.out;
        let y = b.linear(y, &format!("{p}.{name}"), heads * d, h, bias)?;
        Ok((y, (pk, pv)))
    }
}

fn llama(b: &mut Builder, c: &HfConfig, io: Io) -> Res<()> {
    let (h, heads, d) = (c.hidden_size, c.num_heads, c.head_dim);
    let embed = b.weight("model.embed_tokens.weight", &[c.vocab_size, h])?;
    let mut x = b.op(OpKind::Gather, &[], &[embed, io.ids])?;
    // The first query projection confirms `head_dim` before the RoPE tables it sizes.
    b.weight("model.layers.0.self_attn.q_proj.weight", &[heads * d, h])?;
    let (cos, sin) = rope_tables(b, c, &io.past_len)?;
    let mask = b.padding_mask(io.mask)?;
    let mut presents = vec![];
    for l in 0..c.num_layers {
        let p = format!("model.layers.{l}");
        let a = b.rms_norm(x, &format!("{p}.input_layernorm.weight"), h, c.norm_eps)?;
        let attention = RotaryAttention {
            prefix: format!("{p}.self_attn"),
            qkv_bias: c.qkv_bias,
            out: ("o_proj", false),
            window: c.sliding_windows.get(l).copied().flatten(),
        };
        let (y, present) = attention.build(b, c, a, (cos, sin), mask, io.cache(l))?;
        presents.push(present);
        x = b.op(OpKind::Add, &[], &[x, y])?;
        let m = b.rms_norm(
            x,
            &format!("{p}.post_attention_layernorm.weight"),
            h,
            c.norm_eps,
        )?;
        let gate = b.linear(
            m,
            &format!("{p}.mlp.gate_proj"),
            h,
            c.intermediate_size,
            false,
        )?;
        let up = b.linear(
            m,
            &format!("{p}.mlp.up_proj"),
            h,
            c.intermediate_size,
            false,
        )?;
        let m = b.gated(gate, up, c.activation)?;
        let m = b.linear(
            m,
            &format!("{p}.mlp.down_proj"),
            c.intermediate_size,
            h,
            false,
        )?;
        x = b.op(OpKind::Add, &[], &[x, m])?;
    }
    let x = b.rms_norm(x, "model.norm.weight", h, c.norm_eps)?;
    let logits = lm_head(b, x, "model.embed_tokens.weight", "lm_head", false, c)?;
    finish(b, logits, presents);
    Ok(())
}

fn gpt_neox(b: &mut Builder, c: &HfConfig, io: Io) -> Res<()> {
    let (h, heads, d) = (c.hidden_size, c.num_heads, c.head_dim);
    let embed = b.weight("gpt_neox.embed_in.weight", &[c.vocab_size, h])?;
    let mut x = b.op(OpKind::Gather, &[], &[embed, io.ids])?;
    let (cos, sin) = rope_tables(b, c, &io.past_len)?;
    let mask = b.padding_mask(io.mask)?;
    let mut presents = vec![];
    for l in 0..c.num_layers {
        let p = format!("gpt_neox.layers.{l}");
        let a = b.layer_norm(x, &format!("{p}.input_layernorm"), h, c.norm_eps)?;
        let qkv = b.linear(
            a,
            &format!("{p}.attention.query_key_value"),
            h,
            3 * h,
            c.qkv_bias,
        )?;
        // The fused projection is laid out per head: [q_h, k_h, v_h] for each head h.
        let qkv = b.split_heads(qkv, heads, 3 * d)?;
        let parts = b.ops(
            OpKind::Split,
            &[("axis", Attr::Int(-1)), ("num_outputs", Attr::Int(3))],
            &[Some(qkv)],
            3,
        )?;
        let q = rope(b, c, parts[0], cos, sin)?;
        let k = rope(b, c, parts[1], cos, sin)?;
        let [y, pk, pv] = attend(b, [q, k, parts[2]], mask, io.cache(l), d, None)?;
        presents.push((pk, pv));
        let y = b.merge_heads(y, h)?;
        let y = b.linear(y, &format!("{p}.attention.dense"), h, h, c.qkv_bias)?;
        let (up, down) = (
            format!("{p}.mlp.dense_h_to_4h"),
            format!("{p}.mlp.dense_4h_to_h"),
        );
        let norm = format!("{p}.post_attention_layernorm");
        let inner = c.intermediate_size;
        if c.parallel_residual {
            let m = b.layer_norm(x, &norm, h, c.norm_eps)?;
            let m = b.mlp(m, &up, &down, h, inner, c.activation)?;
            let y = b.op(OpKind::Add, &[], &[m, y])?;
            x = b.op(OpKind::Add, &[], &[y, x])?;
        } else {
            x = b.op(OpKind::Add, &[], &[y, x])?;
            let m = b.layer_norm(x, &norm, h, c.norm_eps)?;
            let m = b.mlp(m, &up, &down, h, inner, c.activation)?;
            x = b.op(OpKind::Add, &[], &[m, x])?;
        }
    }
    let x = b.layer_norm(x, "gpt_neox.final_layer_norm", h, c.norm_eps)?;
    let logits = lm_head(b, x, "gpt_neox.embed_in.weight", "embed_out", false, c)?;
    finish(b, logits, presents);
    Ok(())
}

fn phi(b: &mut Builder, c: &HfConfig, io: Io) -> Res<()> {
    let (h, heads, d) = (c.hidden_size, c.num_heads, c.head_dim);
    let embed = b.weight("model.embed_tokens.weight", &[c.vocab_size, h])?;
    let mut x = b.op(OpKind::Gather, &[], &[embed, io.ids])?;
    // The first query projection confirms `head_dim` before the RoPE tables it sizes.
    b.weight("model.layers.0.self_attn.q_proj.weight", &[heads * d, h])?;
    let (cos, sin) = rope_tables(b, c, &io.past_len)?;
    let mask = b.padding_mask(io.mask)?;
    let mut presents = vec![];
    for l in 0..c.num_layers {
        let p = format!("model.layers.{l}");
        let a = b.layer_norm(x, &format!("{p}.input_layernorm"), h, c.norm_eps)?;
        let attention = RotaryAttention {
            prefix: format!("{p}.self_attn"),
            qkv_bias: true,
            out: ("dense", true),
            window: None,
        };
        let (y, present) = attention.build(b, c, a, (cos, sin), mask, io.cache(l))?;
        presents.push(present);
        // Attention and MLP both read the one LayerNorm's output.
        let m = b.mlp(
            a,
            &format!("{p}.mlp.fc1"),
            &format!("{p}.mlp.fc2"),
            h,
            c.intermediate_size,
            c.activation,
        )?;
        let y = b.op(OpKind::Add, &[], &[y, m])?;
        x = b.op(OpKind::Add, &[], &[y, x])?;
    }
    let x = b.layer_norm(x, "model.final_layernorm", h, c.norm_eps)?;
    let logits = lm_head(b, x, "model.embed_tokens.weight", "lm_head", true, c)?;
    finish(b, logits, presents);
    Ok(())
}

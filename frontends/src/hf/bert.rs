//! BertModel (and the bert family's body): embeddings, post-norm encoder layers with fused
//! attention; output `last_hidden_state`.

use super::builder::Builder;
use super::config::HfConfig;
use kiln_ir::{Attr, DType, Dim, OpKind, Tensor};

/// Builds the encoder; `prefix` is `bert.` for task heads that wrap the body, else empty.
pub(crate) fn build(b: &mut Builder, c: &HfConfig, prefix: &str) -> Result<(), String> {
    let (h, heads) = (c.hidden_size, c.num_heads);
    let d = h / heads;
    let tokens = vec![Dim::sym("batch"), Dim::sym("seq")];
    let ids = b.graph.add_input("input_ids", DType::I64, tokens.clone())?;
    let mask_in = b.graph.add_input("attention_mask", DType::I64, tokens)?;
    let e = format!("{prefix}embeddings");
    let word = b.weight(&format!("{e}.word_embeddings.weight"), &[c.vocab_size, h])?;
    let position = b.weight(
        &format!("{e}.position_embeddings.weight"),
        &[c.max_positions, h],
    )?;
    let token_type = b.weight(
        &format!("{e}.token_type_embeddings.weight"),
        &[c.type_vocab_size, h],
    )?;
    let words = b.op(OpKind::Gather, &[], &[word, ids])?;
    let positions = b.positions(&Dim::known(0))?;
    let pos = b.op(OpKind::Gather, &[], &[position, positions])?;
    // token_type_ids are all zero (not an input): row 0 of the table.
    let zero = b.constant("type_id", Tensor::scalar(0i64))?;
    let types = b.op(OpKind::Gather, &[], &[token_type, zero])?;
    let x = b.op(OpKind::Add, &[], &[words, pos])?;
    let x = b.op(OpKind::Add, &[], &[x, types])?;
    let mut x = b.layer_norm(x, &format!("{e}.LayerNorm"), h, c.norm_eps)?;
    let mask = b.padding_mask(mask_in)?;
    let approximate = if c.hidden_act == "gelu" {
        "none"
    } else {
        "tanh"
    };
    for l in 0..c.num_layers {
        let p = format!("{prefix}encoder.layer.{l}");
        let mut qkv = vec![];
        for part in ["query", "key", "value"] {
            let y = b.linear(x, &format!("{p}.attention.self.{part}"), h, h, true)?;
            qkv.push(b.split_heads(y, heads, d)?);
        }
        let scale = Attr::Float(1.0 / (d as f32).sqrt());
        let a = b.op(
            OpKind::FusedAttention,
            &[("scale", scale)],
            &[qkv[0], qkv[1], qkv[2], mask],
        )?;
        let a = b.merge_heads(a, h)?;
        let a = b.linear(a, &format!("{p}.attention.output.dense"), h, h, true)?;
        let a = b.op(OpKind::Add, &[], &[a, x])?;
        x = b.layer_norm(a, &format!("{p}.attention.output.LayerNorm"), h, c.norm_eps)?;
        let f = b.linear(
            x,
            &format!("{p}.intermediate.dense"),
            h,
            c.intermediate_size,
            true,
        )?;
        let f = b.op(
            OpKind::Gelu,
            &[("approximate", Attr::Str(approximate.into()))],
            &[f],
        )?;
        let f = b.linear(
            f,
            &format!("{p}.output.dense"),
            c.intermediate_size,
            h,
            true,
        )?;
        let f = b.op(OpKind::Add, &[], &[f, x])?;
        x = b.layer_norm(f, &format!("{p}.output.LayerNorm"), h, c.norm_eps)?;
    }
    b.graph.set_outputs(vec![("last_hidden_state".into(), x)]);
    Ok(())
}

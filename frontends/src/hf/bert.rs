//! The post-norm encoders, BertModel (and the BERT family's body) and DistilBertModel (BERT
//! with other tensor names and no token types): embeddings, encoder layers with fused
//! attention; output `last_hidden_state`.

use super::builder::Builder;
use super::config::{Architecture, HfConfig};
use kiln_ir::{Attr, DType, Dim, OpKind, Tensor};

/// Where an encoder's tensors live, relative to the model prefix.
struct Names {
    /// The token-type embedding table, if the model has one.
    token_types: Option<&'static str>,
    /// The layer list (`{layers}.{l}.…`).
    layers: &'static str,
    /// The query, key and value projections.
    qkv: [&'static str; 3],
    /// The attention output projection.
    attention_out: &'static str,
    /// The LayerNorm after attention.
    attention_norm: &'static str,
    /// The MLP's first and second linear layers.
    mlp: [&'static str; 2],
    /// The LayerNorm after the MLP.
    output_norm: &'static str,
}

const BERT: Names = Names {
    token_types: Some("embeddings.token_type_embeddings.weight"),
    layers: "encoder.layer",
    qkv: [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
    ],
    attention_out: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    mlp: ["intermediate.dense", "output.dense"],
    output_norm: "output.LayerNorm",
};

const DISTILBERT: Names = Names {
    token_types: None,
    layers: "transformer.layer",
    qkv: ["attention.q_lin", "attention.k_lin", "attention.v_lin"],
    attention_out: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    mlp: ["ffn.lin1", "ffn.lin2"],
    output_norm: "output_layer_norm",
};

/// Builds the encoder; `prefix` is `bert.` or `distilbert.` for task heads that wrap the body,
/// else empty.
pub(crate) fn build(b: &mut Builder, c: &HfConfig, prefix: &str) -> Result<(), String> {
    let names = if c.architecture == Architecture::DistilBert {
        &DISTILBERT
    } else {
        &BERT
    };
    let (h, heads) = (c.hidden_size, c.num_heads);
    let d = h / heads;
    let tokens = vec![Dim::sym("batch"), Dim::sym("seq")];
    let ids = b.graph.add_input("input_ids", DType::I64, tokens.clone())?;
    let mask_in = b.graph.add_input("attention_mask", DType::I64, tokens)?;
    let word = b.weight(
        &format!("{prefix}embeddings.word_embeddings.weight"),
        &[c.vocab_size, h],
    )?;
    let position = b.weight(
        &format!("{prefix}embeddings.position_embeddings.weight"),
        &[c.max_positions, h],
    )?;
    let words = b.op(OpKind::Gather, &[], &[word, ids])?;
    let positions = b.positions(&Dim::known(0))?;
    let pos = b.op(OpKind::Gather, &[], &[position, positions])?;
    let mut x = b.op(OpKind::Add, &[], &[words, pos])?;
    if let Some(table) = names.token_types {
        let token_type = b.weight(&format!("{prefix}{table}"), &[c.type_vocab_size, h])?;
        // token_type_ids are all zero (not an input): row 0 of the table.
        let zero = b.constant("type_id", Tensor::scalar(0i64))?;
        let types = b.op(OpKind::Gather, &[], &[token_type, zero])?;
        x = b.op(OpKind::Add, &[], &[x, types])?;
    }
    let mut x = b.layer_norm(x, &format!("{prefix}embeddings.LayerNorm"), h, c.norm_eps)?;
    let mask = b.padding_mask(mask_in)?;
    for l in 0..c.num_layers {
        let p = format!("{prefix}{}.{l}", names.layers);
        let mut qkv = vec![];
        for part in names.qkv {
            let y = b.linear(x, &format!("{p}.{part}"), h, h, true)?;
            qkv.push(b.split_heads(y, heads, d)?);
        }
        let scale = Attr::Float(1.0 / (d as f32).sqrt());
        let a = b.op(
            OpKind::FusedAttention,
            &[("scale", scale)],
            &[qkv[0], qkv[1], qkv[2], mask],
        )?;
        let a = b.merge_heads(a, h)?;
        let a = b.linear(a, &format!("{p}.{}", names.attention_out), h, h, true)?;
        let a = b.op(OpKind::Add, &[], &[a, x])?;
        x = b.layer_norm(a, &format!("{p}.{}", names.attention_norm), h, c.norm_eps)?;
        let [up, down] = names.mlp.map(|n| format!("{p}.{n}"));
        let f = b.mlp(x, &up, &down, h, c.intermediate_size, c.activation)?;
        let f = b.op(OpKind::Add, &[], &[f, x])?;
        x = b.layer_norm(f, &format!("{p}.{}", names.output_norm), h, c.norm_eps)?;
    }
    b.graph.set_outputs(vec![("last_hidden_state".into(), x)]);
    Ok(())
}

//! A small helper for building IR graphs from checkpoint weights: unique names, ops with
//! inferred types, weights read once, and the reshapes and linear layers transformer blocks use.

use super::checkpoint::Checkpoint;
use super::config::Activation;
use kiln_ir::{Attr, Attrs, DType, Dim, Graph, Op, OpKind, Tensor, ValueId};
use std::collections::HashMap;

type Res<T> = Result<T, String>;

/// Builds one graph; weights come from `ckpt`.
pub(crate) struct Builder<'a> {
    pub graph: Graph,
    ckpt: &'a Checkpoint,
    weights: HashMap<String, ValueId>,
    counter: usize,
}

impl<'a> Builder<'a> {
    pub fn new(ckpt: &'a Checkpoint) -> Builder<'a> {
        Builder {
            graph: Graph::new(),
            ckpt,
            weights: HashMap::new(),
            counter: 0,
        }
    }

    fn fresh(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}_{}", self.counter)
    }

    /// An op with `n` outputs.
    pub fn ops(
        &mut self,
        kind: OpKind,
        a: &[(&str, Attr)],
        inputs: &[Option<ValueId>],
        n: usize,
    ) -> Res<Vec<ValueId>> {
        let name = self.fresh(kind.name());
        let outs: Vec<String> = (0..n)
            .map(|i| {
                if i == 0 {
                    name.clone()
                } else {
                    format!("{name}:{i}")
                }
            })
            .collect();
        self.graph.add_op(
            &name,
            Op::new(kind, Attrs::from_pairs(a)),
            inputs.to_vec(),
            &outs,
        )
    }

    /// A single-output op on present inputs.
    pub fn op(&mut self, kind: OpKind, a: &[(&str, Attr)], inputs: &[ValueId]) -> Res<ValueId> {
        let inputs: Vec<Option<ValueId>> = inputs.iter().copied().map(Some).collect();
        Ok(self.ops(kind, a, &inputs, 1)?[0])
    }

    /// A weight of the expected shape, added once however often it is used (tied embeddings).
    pub fn weight(&mut self, name: &str, shape: &[usize]) -> Res<ValueId> {
        if let Some(v) = self.weights.get(name) {
            return Ok(*v);
        }
        let data = self.ckpt.expect(name, shape)?;
        let v = self.graph.add_constant(name, data)?;
        self.weights.insert(name.to_string(), v);
        Ok(v)
    }

    /// A constant tensor made here.
    pub fn constant(&mut self, base: &str, t: Tensor) -> Res<ValueId> {
        let name = self.fresh(base);
        self.graph.add_constant(&name, t.to_data())
    }

    /// An f32 scalar constant.
    pub fn scalar(&mut self, v: f32) -> Res<ValueId> {
        self.constant("scalar", Tensor::scalar(v))
    }

    /// An i64 vector whose elements are dim expressions, evaluated when the graph runs.
    pub fn dims(&mut self, dims: &[Dim]) -> Res<ValueId> {
        self.op(
            OpKind::SymbolicDims,
            &[("dims", Attr::Dims(dims.to_vec()))],
            &[],
        )
    }

    /// An i64 scalar dim expression.
    pub fn dim_scalar(&mut self, dim: &Dim) -> Res<ValueId> {
        self.op(
            OpKind::SymbolicDims,
            &[
                ("dims", Attr::Dims(vec![dim.clone()])),
                ("scalar", Attr::Int(1)),
            ],
            &[],
        )
    }

    /// `x @ W^T (+ b)` for a torch `nn.Linear` weight stored `[out, in]`.
    pub fn linear(
        &mut self,
        x: ValueId,
        prefix: &str,
        input: usize,
        output: usize,
        bias: bool,
    ) -> Res<ValueId> {
        let w = self.weight(&format!("{prefix}.weight"), &[output, input])?;
        let wt = self.op(OpKind::Transpose, &[("perm", Attr::Ints(vec![1, 0]))], &[w])?;
        let y = self.op(OpKind::MatMul, &[], &[x, wt])?;
        self.bias(y, prefix, output, bias)
    }

    /// `x @ W (+ b)` for a GPT-2 `Conv1D` weight stored `[in, out]`.
    pub fn conv1d(
        &mut self,
        x: ValueId,
        prefix: &str,
        input: usize,
        output: usize,
    ) -> Res<ValueId> {
        let w = self.weight(&format!("{prefix}.weight"), &[input, output])?;
        let y = self.op(OpKind::MatMul, &[], &[x, w])?;
        self.bias(y, prefix, output, true)
    }

    fn bias(&mut self, y: ValueId, prefix: &str, output: usize, bias: bool) -> Res<ValueId> {
        if !bias {
            return Ok(y);
        }
        let b = self.weight(&format!("{prefix}.bias"), &[output])?;
        self.op(OpKind::Add, &[], &[y, b])
    }

    /// The activation `act` applied to `x`: the one place that maps a config's activation
    /// name to IR ops, for every architecture.
    pub fn activation(&mut self, x: ValueId, act: Activation) -> Res<ValueId> {
        let gelu = |approximate: &str| ("approximate", Attr::Str(approximate.into()));
        match act {
            Activation::Gelu => self.op(OpKind::Gelu, &[gelu("none")], &[x]),
            Activation::GeluTanh => self.op(OpKind::Gelu, &[gelu("tanh")], &[x]),
            Activation::Relu => self.op(OpKind::Relu, &[], &[x]),
            Activation::Silu => self.op(OpKind::Silu, &[], &[x]),
            Activation::QuickGelu => {
                let k = self.scalar(1.702)?;
                let kx = self.op(OpKind::Mul, &[], &[x, k])?;
                let s = self.op(OpKind::Sigmoid, &[], &[kx])?;
                self.op(OpKind::Mul, &[], &[x, s])
            }
        }
    }

    /// The gated MLP product `act(gate) * up` (SwiGLU for SiLU, as one fused op).
    pub fn gated(&mut self, gate: ValueId, up: ValueId, act: Activation) -> Res<ValueId> {
        if act == Activation::Silu {
            return self.op(OpKind::SwiGlu, &[], &[gate, up]);
        }
        let g = self.activation(gate, act)?;
        self.op(OpKind::Mul, &[], &[g, up])
    }

    /// The two-layer MLP `down(act(up(x)))` of `nn.Linear` layers with biases.
    pub fn mlp(
        &mut self,
        x: ValueId,
        up: &str,
        down: &str,
        width: usize,
        inner: usize,
        act: Activation,
    ) -> Res<ValueId> {
        let y = self.linear(x, up, width, inner, true)?;
        let y = self.activation(y, act)?;
        self.linear(y, down, inner, width, true)
    }

    /// LayerNorm over the last axis with weight and bias.
    pub fn layer_norm(&mut self, x: ValueId, prefix: &str, size: usize, eps: f32) -> Res<ValueId> {
        let (w, b) = (
            self.weight(&format!("{prefix}.weight"), &[size])?,
            self.weight(&format!("{prefix}.bias"), &[size])?,
        );
        self.op(
            OpKind::LayerNormalization,
            &[("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))],
            &[x, w, b],
        )
    }

    /// RMSNorm over the last axis.
    pub fn rms_norm(&mut self, x: ValueId, name: &str, size: usize, eps: f32) -> Res<ValueId> {
        let w = self.weight(name, &[size])?;
        self.op(
            OpKind::RMSNormalization,
            &[("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))],
            &[x, w],
        )
    }

    /// `[batch, seq, heads*d]` to `[batch, heads, seq, d]`.
    pub fn split_heads(&mut self, x: ValueId, heads: usize, d: usize) -> Res<ValueId> {
        let shape = self.dims(&[
            Dim::sym("batch"),
            Dim::sym("seq"),
            Dim::from(heads),
            Dim::from(d),
        ])?;
        let r = self.op(OpKind::Reshape, &[], &[x, shape])?;
        self.op(
            OpKind::Transpose,
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
            &[r],
        )
    }

    /// `[batch, heads, seq, d]` to `[batch, seq, heads*d]`.
    pub fn merge_heads(&mut self, x: ValueId, width: usize) -> Res<ValueId> {
        let t = self.op(
            OpKind::Transpose,
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
            &[x],
        )?;
        let shape = self.dims(&[Dim::sym("batch"), Dim::sym("seq"), Dim::from(width)])?;
        self.op(OpKind::Reshape, &[], &[t, shape])
    }

    /// The padding mask `[batch, 1, 1, keys]` (true = attend) from an i64 attention_mask input.
    pub fn padding_mask(&mut self, attention_mask: ValueId) -> Res<ValueId> {
        let b = self.op(
            OpKind::Cast,
            &[("to", Attr::Str(DType::Bool.name().into()))],
            &[attention_mask],
        )?;
        self.op(OpKind::Unsqueeze, &[("axes", Attr::Ints(vec![1, 2]))], &[b])
    }

    /// Positions `past .. past + seq` as i64.
    pub fn positions(&mut self, past: &Dim) -> Res<ValueId> {
        let start = self.dim_scalar(past)?;
        let end = self.dim_scalar(&(past + &Dim::sym("seq")))?;
        let one = self.constant("one", Tensor::scalar(1i64))?;
        self.op(OpKind::Range, &[], &[start, end, one])
    }
}

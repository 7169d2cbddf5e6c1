//! The op set: every operation a graph node can perform, with its ONNX-compatible default
//! attributes. Semantics follow the ONNX operator of the same name (opsets 13 to 23) unless the
//! doc comment says otherwise; inputs that ONNX allows to be attributes or tensors are normalised
//! by the frontends as documented here.

use crate::attr::{Attr, Attrs};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! op_kinds {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// The kind of operation a node performs.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum OpKind {
            $($(#[$doc])* $name,)*
        }

        impl OpKind {
            /// Every op kind.
            pub const ALL: &'static [OpKind] = &[$(OpKind::$name,)*];

            /// The op's name, as in ONNX and the text form.
            pub fn name(self) -> &'static str {
                match self { $(OpKind::$name => stringify!($name),)* }
            }
        }
    };
}

op_kinds! {
    // Elementwise unary.
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// Square root.
    Sqrt,
    /// `1 / x`.
    Reciprocal,
    /// `e^x`.
    Exp,
    /// Natural logarithm.
    Log,
    /// The error function.
    Erf,
    /// Hyperbolic tangent.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `x < 0 ? 0 : x` ([`crate::Activation::Relu`]: NaN stays NaN).
    Relu,
    /// Sine.
    Sin,
    /// Cosine.
    Cos,
    /// Round toward negative infinity.
    Floor,
    /// Round toward positive infinity.
    Ceil,
    /// Round to nearest, ties to even.
    Round,
    /// GELU; attribute `approximate` is `"none"` (erf form) or `"tanh"`.
    Gelu,
    /// Logical not.
    Not,
    /// True where the input is NaN.
    IsNaN,
    /// Returns its input.
    Identity,
    /// Clamps input 0 to [input 1, input 2] (either bound optional).
    Clip,
    /// Inference-mode dropout: output 0 is the input, optional output 1 an all-true mask.
    Dropout,
    /// Converts to the dtype named by attribute `to` (a [`crate::DType`] name).
    Cast,
    // Elementwise binary, with ONNX multidirectional broadcasting.
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b` (integer division truncates).
    Div,
    /// `a ^ b`.
    Pow,
    /// Elementwise maximum of two inputs (variadic ONNX `Max` is imported as a chain).
    Max,
    /// Elementwise minimum of two inputs.
    Min,
    /// Remainder; attribute `fmod` 1 gives C fmod, 0 the sign of the divisor.
    Mod,
    /// `a == b`.
    Equal,
    /// `a < b`.
    Less,
    /// `a > b`.
    Greater,
    /// `a <= b`.
    LessOrEqual,
    /// `a >= b`.
    GreaterOrEqual,
    /// Logical and.
    And,
    /// Logical or.
    Or,
    /// Logical xor.
    Xor,
    /// `cond ? x : y`.
    Where,
    // Linear algebra.
    /// numpy `matmul`.
    MatMul,
    /// `alpha * op(A) * op(B) + beta * C`; attributes `alpha`, `beta`, `transA`, `transB`.
    Gemm,
    /// Einstein summation over attribute `equation`.
    Einsum,
    /// Integer matmul of (A - a_zero_point) and (B - b_zero_point), giving i32.
    MatMulInteger,
    // Normalisations and softmax.
    /// Softmax along attribute `axis`.
    Softmax,
    /// Log-softmax along attribute `axis`.
    LogSoftmax,
    /// LayerNorm over the axes from `axis` on; inputs X, scale, bias?; outputs Y, mean?, inv_std_dev?.
    LayerNormalization,
    /// RMSNorm over the axes from `axis` on; inputs X, scale.
    RMSNormalization,
    /// onnxruntime's RMSNorm (contrib op): inputs X, scale; outputs Y, inv_std_var?.
    SimplifiedLayerNormalization,
    /// onnxruntime's fused residual + LayerNorm: inputs input, skip, gamma, beta?, bias?;
    /// outputs output, mean?, inv_std_var?, input_skip_bias_sum?.
    SkipLayerNormalization,
    /// onnxruntime's fused residual + RMSNorm: inputs input, skip, gamma, bias?;
    /// outputs output, mean?, inv_std_var?, input_skip_bias_sum?.
    SkipSimplifiedLayerNormalization,
    // Reductions: attribute `axes` (absent means all, or none with `noop_with_empty_axes`), `keepdims`.
    /// Mean over `axes`.
    ReduceMean,
    /// Sum over `axes`.
    ReduceSum,
    /// Maximum over `axes`.
    ReduceMax,
    /// Minimum over `axes`.
    ReduceMin,
    /// Cumulative sum along the axis given by input 1; attributes `exclusive`, `reverse`.
    CumSum,
    // Data movement.
    /// Permutes axes by attribute `perm`.
    Transpose,
    /// Reshapes input 0 to the shape in input 1 (0 copies a dim unless `allowzero`, -1 infers one).
    Reshape,
    /// Reshapes to 2-D at attribute `axis`.
    Flatten,
    /// Removes the size-1 axes in attribute `axes` (all size-1 axes when absent).
    Squeeze,
    /// Inserts size-1 axes at the positions in attribute `axes`.
    Unsqueeze,
    /// Concatenates the inputs along attribute `axis`.
    Concat,
    /// Splits along `axis` into the sizes of attribute `split` (equal parts when absent).
    Split,
    /// Slices input 0 with inputs starts, ends, axes?, steps?.
    Slice,
    /// Gathers along attribute `axis` by the indices in input 1.
    Gather,
    /// Gathers elements along attribute `axis` (`torch.gather`).
    GatherElements,
    /// Gathers slices by index tuples; attribute `batch_dims`.
    GatherND,
    /// ONNX TensorScatter (opset 24), a KV cache's update: inputs past_cache, update,
    /// write_indices? (`[batch]`, 0 when absent); the output is past_cache with each batch
    /// item's update written at its index along attribute `axis` (default -2), wrapping round
    /// the axis when `mode` is `circular` (default `linear`).
    TensorScatter,
    /// Broadcasts input 0 to the shape in input 1.
    Expand,
    /// Repeats input 0 by the counts in input 1.
    Tile,
    /// Upper or lower triangle (attribute `upper`) with diagonal offset input 1.
    Trilu,
    // Shapes and constants.
    /// The shape of its input as i64, from attribute `start` to `end`.
    Shape,
    /// The element count of its input as an i64 scalar.
    Size,
    /// A tensor of the shape in input 0 filled with attribute `value` (a one-element tensor).
    ConstantOfShape,
    /// `[start, limit)` by `delta`, from three scalar inputs.
    Range,
    /// An i64 vector whose elements are the dim expressions in attribute `dims`, evaluated with
    /// the run's symbol bindings: what a folded shape computation (Shape, Gather, Concat, ...) becomes.
    SymbolicDims,
    // Fused transformer ops.
    /// ONNX Attention (opsets 23–25): inputs Q, K, V, attn_mask?, past_key?, past_value?,
    /// nonpad_kv_seqlen?; outputs Y, present_key?, present_value?, qk_matmul_output?;
    /// opset 25's `left_window_size` / `right_window_size` (-1: unbounded) bound the keys a
    /// query sees around its position.
    Attention,
    /// ONNX RotaryEmbedding (opset 23): inputs X, cos_cache, sin_cache, position_ids?.
    RotaryEmbedding,
    // kiln's fused ops, produced by the rewrite passes. Each is defined as the composition of
    // the plain ops named in its doc, and the interpreter evaluates it exactly so.
    /// Attention on `[batch, heads, seq, head]` tensors: inputs Q, K, V, additive or bool mask?;
    /// attributes `scale`, `is_causal`; grouped-query when K/V have fewer heads. Equals ONNX
    /// `Attention` on 4-D inputs, output 0.
    FusedAttention,
    /// `x * sigmoid(x)`, with the limit -0 at `-inf` ([`crate::Activation::Silu`]).
    Silu,
    /// `silu(gate) * up`: inputs gate, up.
    SwiGlu,
    /// `activation(a @ b + bias)`: inputs a, b, bias?; attribute `activation` is the name of a
    /// [`crate::Activation`]: `none`, `relu`, `gelu`, `gelu_tanh`, `silu`, `sigmoid` or `tanh`.
    FusedMatMul,
    /// Rotary embedding, rotate-half form: `x * cos + concat(-x2, x1) * sin` where x1, x2 are
    /// the halves of the last axis; inputs x, cos, sin (broadcast to x).
    RopeRotateHalf,
    // Quantisation.
    /// `saturate(round(x / scale) + zero_point)`; attributes `axis`, `block_size`, `output_dtype`.
    QuantizeLinear,
    /// `(x - zero_point) * scale`; attributes `axis`, `block_size`.
    DequantizeLinear,
    /// u8 quantisation with a scale and zero point computed from the input's range.
    DynamicQuantizeLinear,
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OpKind {
    type Err = String;
    fn from_str(s: &str) -> Result<OpKind, String> {
        OpKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown op `{s}`"))
    }
}

impl OpKind {
    /// True for ops that only kiln's passes and folding create (no model file has them).
    pub fn is_kiln_internal(self) -> bool {
        use OpKind::*;
        matches!(
            self,
            SymbolicDims | FusedAttention | Silu | SwiGlu | FusedMatMul | RopeRotateHalf
        )
    }

    /// For ops whose list parameter (reduction or squeeze axes, split sizes) may be given as
    /// input 1 at run time instead of as an attribute: the attribute's name. Frontends turn a
    /// constant input 1 into the attribute; a non-constant one stays an input.
    pub fn list_input_attr(self) -> Option<&'static str> {
        use OpKind::*;
        match self {
            ReduceMean | ReduceSum | ReduceMax | ReduceMin | Squeeze | Unsqueeze => Some("axes"),
            Split => Some("split"),
            _ => None,
        }
    }

    /// The attributes an op has when none is given (ONNX defaults). Frontends and the text
    /// parser fill these in, so evaluators can read every attribute strictly.
    pub fn default_attrs(self) -> Attrs {
        use OpKind::*;
        let int = |name: &str, v: i64| (name.to_string(), Attr::Int(v));
        let float = |name: &str, v: f32| (name.to_string(), Attr::Float(v));
        let list: Vec<(String, Attr)> = match self {
            Gelu => vec![("approximate".into(), Attr::Str("none".into()))],
            Mod => vec![int("fmod", 0)],
            Gemm => vec![
                float("alpha", 1.0),
                float("beta", 1.0),
                int("transA", 0),
                int("transB", 0),
            ],
            Softmax | LogSoftmax => vec![int("axis", -1)],
            LayerNormalization | RMSNormalization | SimplifiedLayerNormalization => {
                vec![int("axis", -1), float("epsilon", 1e-5)]
            }
            SkipLayerNormalization | SkipSimplifiedLayerNormalization => {
                vec![float("epsilon", 1e-12)]
            }
            ReduceMean | ReduceSum | ReduceMax | ReduceMin => {
                vec![int("keepdims", 1), int("noop_with_empty_axes", 0)]
            }
            CumSum => vec![int("exclusive", 0), int("reverse", 0)],
            Reshape => vec![int("allowzero", 0)],
            Flatten => vec![int("axis", 1)],
            Concat | Split | Gather | GatherElements => vec![int("axis", 0)],
            GatherND => vec![int("batch_dims", 0)],
            TensorScatter => vec![int("axis", -2), ("mode".into(), Attr::Str("linear".into()))],
            Trilu => vec![int("upper", 1)],
            Shape => vec![int("start", 0)],
            ConstantOfShape => vec![(
                "value".into(),
                Attr::Tensor(
                    crate::Tensor::from_vec(&[1], vec![0f32])
                        .expect("one element")
                        .to_data(),
                ),
            )],
            Attention => vec![
                int("is_causal", 0),
                int("left_window_size", -1),
                int("right_window_size", -1),
                int("qk_matmul_output_mode", 0),
                float("softcap", 0.0),
                int("softmax_precision", 0),
            ],
            RotaryEmbedding => vec![int("interleaved", 0), int("rotary_embedding_dim", 0)],
            FusedAttention => vec![int("is_causal", 0)],
            FusedMatMul => vec![("activation".into(), Attr::Str("none".into()))],
            QuantizeLinear => vec![int("axis", 1), int("block_size", 0), int("saturate", 1)],
            DequantizeLinear => vec![int("axis", 1), int("block_size", 0)],
            _ => vec![],
        };
        Attrs(list.into_iter().collect())
    }
}

/// An operation: its kind and attributes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// What the node computes.
    pub kind: OpKind,
    /// Its parameters; every default of [`OpKind::default_attrs`] is present.
    pub attrs: Attrs,
}

impl Op {
    /// An op with default attributes overridden by `attrs`.
    pub fn new(kind: OpKind, attrs: Attrs) -> Op {
        let mut all = kind.default_attrs();
        all.0.extend(attrs.0);
        Op { kind, attrs: all }
    }

    /// An op with only its default attributes.
    pub fn plain(kind: OpKind) -> Op {
        Op::new(kind, Attrs::default())
    }
}

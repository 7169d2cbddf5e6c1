//! What a rule may write for each op: how many inputs it takes and which attributes it has, with
//! the kind of value each attribute holds. These facts restate the op set's documentation
//! ([`kiln_ir::OpKind`]: inputs and attributes per op) plus the ONNX attributes the importer
//! copies onto nodes; the matches are exhaustive, so a new op kind must be described here.

use kiln_ir::{Activation, Attr, DType, OpKind};

/// The kind of value an attribute holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrType {
    /// An integer (`axis=-1`, `transA=0`).
    Int,
    /// A float; an integer literal is read as a float (`alpha=1` is `1.0`).
    Float,
    /// Any string (`equation=str:...`).
    Str,
    /// A dtype name (`to=f16`).
    DType,
    /// One of a fixed set of words (`approximate=tanh`).
    Word(&'static [&'static str]),
    /// A list of integers (`perm=[0,2,1,3]`).
    Ints,
    /// A list of symbolic dims (`dims[batch,seq]`).
    Dims,
    /// A one-element tensor (`tensor:f32:1:0000803f`).
    Tensor,
}

impl AttrType {
    /// What a value of this type looks like, for error messages.
    pub fn describe(self) -> String {
        match self {
            AttrType::Int => "an integer".into(),
            AttrType::Float => "a float".into(),
            AttrType::Str => "a string".into(),
            AttrType::DType => "a dtype name (f32, f16, i64, ...)".into(),
            AttrType::Word(words) => format!("one of {}", words.join(", ")),
            AttrType::Ints => "a list of integers like [0,1]".into(),
            AttrType::Dims => "a list of dims like dims[batch,1]".into(),
            AttrType::Tensor => "a tensor like tensor:f32:1:0000803f".into(),
        }
    }

    /// `value` as this type (an int becomes a float for a float attribute), or `None` if it
    /// has another type.
    pub fn accept(self, value: Attr) -> Option<Attr> {
        match (self, value) {
            (AttrType::Int, v @ Attr::Int(_)) => Some(v),
            (AttrType::Float, v @ Attr::Float(_)) => Some(v),
            (AttrType::Float, Attr::Int(i)) => Some(Attr::Float(i as f32)),
            (AttrType::Str, v @ Attr::Str(_)) => Some(v),
            (AttrType::DType, Attr::Str(s)) => s.parse::<DType>().is_ok().then_some(Attr::Str(s)),
            (AttrType::Word(words), Attr::Str(s)) => {
                words.contains(&s.as_str()).then_some(Attr::Str(s))
            }
            (AttrType::Ints, v @ Attr::Ints(_)) => Some(v),
            (AttrType::Dims, v @ Attr::Dims(_)) => Some(v),
            (AttrType::Tensor, v @ Attr::Tensor(_)) => Some(v),
            _ => None,
        }
    }
}

/// The number of inputs an op takes: at least `.0`, at most `.1` (`None`: any number).
/// Absent optional inputs (`_`) count.
pub fn input_range(kind: OpKind) -> (usize, Option<usize>) {
    use OpKind::*;
    let n = |lo: usize, hi: usize| (lo, Some(hi));
    match kind {
        Neg
        | Abs
        | Sqrt
        | Reciprocal
        | Exp
        | Log
        | Erf
        | Tanh
        | Sigmoid
        | Relu
        | Sin
        | Cos
        | Floor
        | Ceil
        | Round
        | Gelu
        | Not
        | IsNaN
        | Identity
        | Cast
        | Softmax
        | LogSoftmax
        | Transpose
        | Flatten
        | Shape
        | Size
        | ConstantOfShape
        | Silu
        | DynamicQuantizeLinear => n(1, 1),
        Dropout => n(1, 1),
        Clip => n(1, 3),
        Add
        | Sub
        | Mul
        | Div
        | Pow
        | Max
        | Min
        | Mod
        | Equal
        | Less
        | Greater
        | LessOrEqual
        | GreaterOrEqual
        | And
        | Or
        | Xor
        | MatMul
        | RMSNormalization
        | SimplifiedLayerNormalization
        | CumSum
        | Reshape
        | Gather
        | GatherElements
        | GatherND
        | Expand
        | Tile
        | SwiGlu => n(2, 2),
        Where | Range | RopeRotateHalf => n(3, 3),
        TensorScatter => n(2, 3),
        Gemm | LayerNormalization | FusedMatMul | QuantizeLinear | DequantizeLinear => n(2, 3),
        MatMulInteger => n(2, 4),
        Einsum | Concat => (1, None),
        SkipLayerNormalization => n(3, 5),
        SkipSimplifiedLayerNormalization => n(3, 4),
        ReduceMean | ReduceSum | ReduceMax | ReduceMin | Squeeze | Unsqueeze | Split | Trilu => {
            n(1, 2)
        }
        Slice => n(3, 5),
        SymbolicDims => n(0, 0),
        Attention => n(3, 6),
        RotaryEmbedding | FusedAttention => n(3, 4),
    }
}

/// The attributes an op has, with their types.
pub fn attributes(kind: OpKind) -> &'static [(&'static str, AttrType)] {
    use AttrType::*;
    use OpKind::*;
    const REDUCE: &[(&str, AttrType)] = &[
        ("axes", Ints),
        ("keepdims", Int),
        ("noop_with_empty_axes", Int),
    ];
    const NORM: &[(&str, AttrType)] = &[("axis", Int), ("epsilon", Float)];
    const AXIS: &[(&str, AttrType)] = &[("axis", Int)];
    match kind {
        Neg
        | Abs
        | Sqrt
        | Reciprocal
        | Exp
        | Log
        | Erf
        | Tanh
        | Sigmoid
        | Relu
        | Sin
        | Cos
        | Floor
        | Ceil
        | Round
        | Not
        | IsNaN
        | Identity
        | Clip
        | Add
        | Sub
        | Mul
        | Div
        | Pow
        | Max
        | Min
        | Equal
        | Less
        | Greater
        | LessOrEqual
        | GreaterOrEqual
        | And
        | Or
        | Xor
        | Where
        | MatMul
        | MatMulInteger
        | Expand
        | Tile
        | Size
        | Range
        | Silu
        | SwiGlu
        | RopeRotateHalf
        | DynamicQuantizeLinear
        | Dropout
        | Slice => &[],
        Gelu => &[("approximate", Word(&["none", "tanh"]))],
        Cast => &[("to", DType)],
        Mod => &[("fmod", Int)],
        Gemm => &[
            ("alpha", Float),
            ("beta", Float),
            ("transA", Int),
            ("transB", Int),
        ],
        Einsum => &[("equation", Str)],
        Softmax | LogSoftmax | Flatten | Concat | Gather | GatherElements => AXIS,
        LayerNormalization | RMSNormalization | SimplifiedLayerNormalization => NORM,
        SkipLayerNormalization | SkipSimplifiedLayerNormalization => &[("epsilon", Float)],
        ReduceMean | ReduceSum | ReduceMax | ReduceMin => REDUCE,
        CumSum => &[("exclusive", Int), ("reverse", Int)],
        Transpose => &[("perm", Ints)],
        Reshape => &[("allowzero", Int)],
        Squeeze | Unsqueeze => &[("axes", Ints)],
        Split => &[("axis", Int), ("num_outputs", Int), ("split", Ints)],
        GatherND => &[("batch_dims", Int)],
        TensorScatter => &[("axis", Int), ("mode", Str)],
        Trilu => &[("upper", Int)],
        Shape => &[("start", Int), ("end", Int)],
        ConstantOfShape => &[("value", Tensor)],
        SymbolicDims => &[("dims", Dims), ("scalar", Int)],
        Attention => &[
            ("is_causal", Int),
            ("left_window_size", Int),
            ("right_window_size", Int),
            ("kv_num_heads", Int),
            ("q_num_heads", Int),
            ("qk_matmul_output_mode", Int),
            ("scale", Float),
            ("softcap", Float),
            ("softmax_precision", Int),
        ],
        RotaryEmbedding => &[
            ("interleaved", Int),
            ("num_heads", Int),
            ("rotary_embedding_dim", Int),
        ],
        FusedAttention => &[("scale", Float), ("is_causal", Int)],
        FusedMatMul => &[("activation", Word(&Activation::NAMES))],
        QuantizeLinear => &[
            ("axis", Int),
            ("block_size", Int),
            ("output_dtype", DType),
            ("saturate", Int),
        ],
        DequantizeLinear => &[("axis", Int), ("block_size", Int)],
    }
}

/// The type of attribute `key` of `kind`, or an error naming the attributes it has.
pub fn attr_type(kind: OpKind, key: &str) -> Result<AttrType, String> {
    if key.is_empty() {
        return Err(format!("empty attribute name in a {kind} attribute list"));
    }
    let attrs = attributes(kind);
    attrs
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = attrs.iter().map(|(k, _)| *k).collect();
            if names.is_empty() {
                format!("{kind} has no attribute `{key}` (it has none)")
            } else {
                format!(
                    "{kind} has no attribute `{key}` (it has {})",
                    names.join(", ")
                )
            }
        })
}

/// Checks that `kind` takes `n` inputs.
pub fn check_arity(kind: OpKind, n: usize) -> Result<(), String> {
    let (lo, hi) = input_range(kind);
    if n >= lo && hi.is_none_or(|hi| n <= hi) {
        return Ok(());
    }
    let takes = match hi {
        None => format!("at least {lo}"),
        Some(hi) if hi == lo => format!("{lo}"),
        Some(hi) => format!("{lo} to {hi}"),
    };
    let plural = if takes == "1" { "" } else { "s" };
    Err(format!("{kind} takes {takes} input{plural}, found {n}"))
}

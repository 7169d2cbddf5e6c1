//! What the importer accepts of each ONNX op at a given opset: how many inputs it takes and
//! which attributes, of which types, it reads (and which of them are required). Every node is
//! checked against its op's entry before it is lowered, so an input kiln would drop, an
//! attribute it would ignore or misread, or a missing required attribute is an import error
//! instead of a silently different model. The entries follow the ONNX operator specs (and
//! onnxruntime's contrib ops for domain `com.microsoft`), restricted to the forms kiln implements.

use kiln_ir::{Attr, Attrs};
use std::ops::RangeInclusive;

/// The type an attribute must have (the `AttributeProto` type, as it arrives in [`Attr`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Int,
    Float,
    Str,
    Ints,
    Floats,
    Tensor,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Int => "INT",
            Ty::Float => "FLOAT",
            Ty::Str => "STRING",
            Ty::Ints => "INTS",
            Ty::Floats => "FLOATS",
            Ty::Tensor => "TENSOR",
        }
    }

    fn of(a: &Attr) -> &'static str {
        match a {
            Attr::Int(_) => "INT",
            Attr::Float(_) => "FLOAT",
            Attr::Str(_) => "STRING",
            Attr::Ints(_) => "INTS",
            Attr::Floats(_) => "FLOATS",
            Attr::Tensor(_) => "TENSOR",
            Attr::Dims(_) => "DIMS",
        }
    }
}

/// One attribute an op reads.
#[derive(Clone, Copy, Debug)]
struct AttrSpec {
    name: &'static str,
    ty: Ty,
    required: bool,
}

const fn opt(name: &'static str, ty: Ty) -> AttrSpec {
    AttrSpec {
        name,
        ty,
        required: false,
    }
}

const fn req(name: &'static str, ty: Ty) -> AttrSpec {
    AttrSpec {
        name,
        ty,
        required: true,
    }
}

/// Variadic ops take any number of inputs (at least the range's start).
const MANY: usize = usize::MAX;

/// The inputs and attributes of one op at one opset.
struct Schema {
    inputs: RangeInclusive<usize>,
    attrs: Vec<AttrSpec>,
}

fn schema(inputs: RangeInclusive<usize>, attrs: &[AttrSpec]) -> Schema {
    Schema {
        inputs,
        attrs: attrs.to_vec(),
    }
}

/// The entry for `op_type` in `domain` at default-domain opset `opset`, or `None` for an op the
/// importer does not know (reported separately as unsupported).
fn lookup(domain: &str, op_type: &str, opset: i64) -> Option<Schema> {
    use Ty::*;
    let since = |v: i64, spec: AttrSpec| (opset >= v).then_some(spec);
    let with = |inputs: RangeInclusive<usize>, attrs: &[Option<AttrSpec>]| Schema {
        inputs,
        attrs: attrs.iter().flatten().copied().collect(),
    };
    Some(match (domain, op_type) {
        ("" | "ai.onnx", op) => match op {
            "Neg"
            | "Abs"
            | "Sqrt"
            | "Reciprocal"
            | "Exp"
            | "Log"
            | "Erf"
            | "Tanh"
            | "Sigmoid"
            | "Relu"
            | "Sin"
            | "Cos"
            | "Floor"
            | "Ceil"
            | "Round"
            | "Not"
            | "IsNaN"
            | "Identity"
            | "Size"
            | "DynamicQuantizeLinear" => schema(1..=1, &[]),
            // Exactly one of the value attributes (checked when the constant is made).
            "Constant" => with(
                0..=0,
                &[
                    Some(opt("value", Tensor)),
                    since(12, opt("value_float", Float)),
                    since(12, opt("value_floats", Floats)),
                    since(12, opt("value_int", Int)),
                    since(12, opt("value_ints", Ints)),
                ],
            ),
            "Gelu" => schema(1..=1, &[opt("approximate", Str)]),
            // Before opset 11 the bounds were attributes, which kiln does not implement.
            "Clip" if opset >= 11 => schema(1..=3, &[]),
            "Clip" => schema(1..=1, &[]),
            "Dropout" if opset >= 12 => schema(1..=3, &[opt("seed", Int)]),
            "Dropout" => schema(1..=1, &[opt("ratio", Float)]),
            "Cast" => with(
                1..=1,
                &[
                    Some(req("to", Int)),
                    since(19, opt("saturate", Int)),
                    since(24, opt("round_mode", Str)),
                ],
            ),
            "CastLike" => with(
                2..=2,
                &[
                    since(19, opt("saturate", Int)),
                    since(24, opt("round_mode", Str)),
                ],
            ),
            "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Equal" | "Less" | "Greater"
            | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor" | "MatMul" | "Expand"
            | "Tile" => schema(2..=2, &[]),
            "Gather" | "GatherElements" => schema(2..=2, &[opt("axis", Int)]),
            "Mod" => schema(2..=2, &[opt("fmod", Int)]),
            "Max" | "Min" | "Sum" => schema(1..=MANY, &[]),
            "Where" => schema(3..=3, &[]),
            "Range" => with(3..=3, &[since(27, opt("stash_type", Int))]),
            "Gemm" => schema(
                if opset >= 11 { 2..=3 } else { 3..=3 },
                &[
                    opt("alpha", Float),
                    opt("beta", Float),
                    opt("transA", Int),
                    opt("transB", Int),
                ],
            ),
            "Einsum" => schema(1..=MANY, &[req("equation", Str)]),
            "MatMulInteger" => schema(2..=4, &[]),
            "Softmax" | "LogSoftmax" | "Flatten" => schema(1..=1, &[opt("axis", Int)]),
            "LayerNormalization" => schema(
                2..=3,
                &[
                    opt("axis", Int),
                    opt("epsilon", Float),
                    opt("stash_type", Int),
                ],
            ),
            "RMSNormalization" | "SimplifiedLayerNormalization" => schema(
                2..=2,
                &[
                    opt("axis", Int),
                    opt("epsilon", Float),
                    opt("stash_type", Int),
                ],
            ),
            // ReduceSum took its axes as an input from opset 13, the others from opset 18.
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceSumSquare"
            | "ReduceL2" => {
                if opset >= if op == "ReduceSum" { 13 } else { 18 } {
                    schema(
                        1..=2,
                        &[opt("keepdims", Int), opt("noop_with_empty_axes", Int)],
                    )
                } else {
                    schema(1..=1, &[opt("axes", Ints), opt("keepdims", Int)])
                }
            }
            "CumSum" => schema(2..=2, &[opt("exclusive", Int), opt("reverse", Int)]),
            "Transpose" => schema(1..=1, &[opt("perm", Ints)]),
            "Reshape" if opset >= 5 => with(2..=2, &[since(14, opt("allowzero", Int))]),
            // Before opset 5 the shape was an attribute, which kiln does not implement: its
            // `shape` attribute is refused by name.
            "Reshape" => schema(1..=1, &[]),
            "Squeeze" if opset >= 13 => schema(1..=2, &[]),
            "Squeeze" => schema(1..=1, &[opt("axes", Ints)]),
            "Unsqueeze" if opset >= 13 => schema(2..=2, &[]),
            "Unsqueeze" => schema(1..=1, &[req("axes", Ints)]),
            "Concat" => schema(1..=MANY, &[req("axis", Int)]),
            "Split" if opset >= 18 => schema(1..=2, &[opt("axis", Int), opt("num_outputs", Int)]),
            "Split" if opset >= 13 => schema(1..=2, &[opt("axis", Int)]),
            "Split" => schema(1..=1, &[opt("axis", Int), opt("split", Ints)]),
            // Before opset 10 the bounds were attributes, which kiln does not implement.
            "Slice" => schema(3..=5, &[]),
            "GatherND" => with(2..=2, &[since(12, opt("batch_dims", Int))]),
            "TensorScatter" if opset >= 24 => schema(2..=3, &[opt("axis", Int), opt("mode", Str)]),
            "Trilu" => schema(1..=2, &[opt("upper", Int)]),
            "Shape" => with(
                1..=1,
                &[since(15, opt("start", Int)), since(15, opt("end", Int))],
            ),
            "ConstantOfShape" => schema(1..=1, &[opt("value", Tensor)]),
            "Attention" => with(
                if opset >= 24 { 3..=7 } else { 3..=6 },
                &[
                    Some(opt("is_causal", Int)),
                    Some(opt("kv_num_heads", Int)),
                    Some(opt("q_num_heads", Int)),
                    Some(opt("qk_matmul_output_mode", Int)),
                    Some(opt("scale", Float)),
                    Some(opt("softcap", Float)),
                    Some(opt("softmax_precision", Int)),
                    since(25, opt("left_window_size", Int)),
                    since(25, opt("right_window_size", Int)),
                ],
            ),
            "RotaryEmbedding" => schema(
                3..=4,
                &[
                    opt("interleaved", Int),
                    opt("num_heads", Int),
                    opt("rotary_embedding_dim", Int),
                ],
            ),
            "QuantizeLinear" => with(
                2..=3,
                &[
                    since(13, opt("axis", Int)),
                    since(19, opt("saturate", Int)),
                    since(21, opt("block_size", Int)),
                    since(21, opt("output_dtype", Int)),
                ],
            ),
            "DequantizeLinear" => with(
                2..=3,
                &[
                    since(13, opt("axis", Int)),
                    since(21, opt("block_size", Int)),
                ],
            ),
            _ => return None,
        },
        ("com.microsoft", "Gelu") => schema(1..=1, &[]),
        ("com.microsoft", "FastGelu") => schema(1..=2, &[]),
        ("com.microsoft", "SkipLayerNormalization") => schema(3..=5, &[opt("epsilon", Float)]),
        ("com.microsoft", "SkipSimplifiedLayerNormalization") => {
            schema(3..=4, &[opt("epsilon", Float)])
        }
        ("com.microsoft", "SimplifiedLayerNormalization") => schema(
            2..=2,
            &[
                opt("axis", Int),
                opt("epsilon", Float),
                opt("stash_type", Int),
            ],
        ),
        _ => return None,
    })
}

/// Checks a node of `op_type` in `domain` with `n_inputs` inputs (trailing empty names, which
/// ONNX uses for absent optional inputs, not counted) and attributes `attrs` against what kiln
/// implements at `opset`. An op without an entry passes (the importer reports it as unsupported).
pub fn check_node(
    domain: &str,
    op_type: &str,
    opset: i64,
    n_inputs: usize,
    attrs: &Attrs,
) -> Result<(), String> {
    let Some(s) = lookup(domain, op_type, opset) else {
        return Ok(());
    };
    let (lo, hi) = (*s.inputs.start(), *s.inputs.end());
    if n_inputs < lo {
        let at_least = if hi > lo { "at least " } else { "" };
        return Err(format!(
            "has {n_inputs} inputs but {op_type} takes {at_least}{lo} (opset {opset})"
        ));
    }
    if n_inputs > hi {
        let at_most = if hi > lo { "at most " } else { "" };
        return Err(format!(
            "has {n_inputs} inputs but {op_type} takes {at_most}{hi} (opset {opset})"
        ));
    }
    for (name, value) in &attrs.0 {
        let Some(spec) = s.attrs.iter().find(|a| a.name == name) else {
            return Err(format!(
                "attribute `{name}` is not one kiln's {op_type} takes at opset {opset}"
            ));
        };
        if Ty::of(value) != spec.ty.name() {
            return Err(format!(
                "attribute `{name}` is {} but must be {}",
                Ty::of(value),
                spec.ty.name()
            ));
        }
    }
    if let Some(missing) = s
        .attrs
        .iter()
        .find(|a| a.required && attrs.get(a.name).is_none())
    {
        return Err(format!("required attribute `{}` is missing", missing.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, Attr)]) -> Attrs {
        Attrs::from_pairs(pairs)
    }

    #[test]
    fn input_counts_follow_the_opset() {
        let none = Attrs::default();
        assert!(check_node("", "Add", 18, 2, &none).is_ok());
        let e = check_node("", "Add", 18, 3, &none).unwrap_err();
        assert_eq!(e, "has 3 inputs but Add takes 2 (opset 18)");
        // Squeeze took its axes as an input only from opset 13.
        assert!(check_node("", "Squeeze", 13, 2, &none).is_ok());
        assert!(check_node("", "Squeeze", 11, 2, &none).is_err());
        let e = check_node("", "Gemm", 9, 2, &none).unwrap_err();
        assert_eq!(e, "has 2 inputs but Gemm takes 3 (opset 9)");
        assert!(check_node("", "Gemm", 13, 2, &none).is_ok());
        let e = check_node("", "Slice", 13, 6, &none).unwrap_err();
        assert_eq!(e, "has 6 inputs but Slice takes at most 5 (opset 13)");
        assert!(check_node("", "Concat", 13, 9, &attrs(&[("axis", Attr::Int(0))])).is_ok());
        let e = check_node("com.microsoft", "SkipLayerNormalization", 13, 6, &none).unwrap_err();
        assert!(e.contains("at most 5"), "{e}");
    }

    #[test]
    fn attributes_are_checked_by_name_type_and_presence() {
        let e = check_node("", "Concat", 13, 2, &Attrs::default()).unwrap_err();
        assert_eq!(e, "required attribute `axis` is missing");
        let e = check_node("", "Concat", 13, 2, &attrs(&[("axis", Attr::Float(1.0))])).unwrap_err();
        assert_eq!(e, "attribute `axis` is FLOAT but must be INT");
        let e =
            check_node("", "Cast", 13, 1, &attrs(&[("to", Attr::Str("1".into()))])).unwrap_err();
        assert_eq!(e, "attribute `to` is STRING but must be INT");
        let e = check_node("", "Relu", 13, 1, &attrs(&[("alpha", Attr::Float(0.1))])).unwrap_err();
        assert_eq!(
            e,
            "attribute `alpha` is not one kiln's Relu takes at opset 13"
        );
        // Attributes that appear only in later opsets are unknown before.
        let shape_start = attrs(&[("start", Attr::Int(1))]);
        assert!(check_node("", "Shape", 15, 1, &shape_start).is_ok());
        assert!(check_node("", "Shape", 13, 1, &shape_start).is_err());
        // Unknown ops are left to the importer's own error.
        assert!(check_node("", "FooBar", 13, 7, &Attrs::default()).is_ok());
    }
}

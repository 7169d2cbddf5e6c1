//! Facts about each op that the back half decides by, in one table ([`facts`]): which kind of
//! kernel computes it ([`OpClass`]), its arithmetic per output element and the memory traffic
//! it causes ([`Traffic`]). Kernel grouping (codegen) reads the class, the roofline cost model
//! (passes) reads the arithmetic and traffic, and `kiln explain` prints the class, so the three
//! cannot disagree about what an op is.
//!
//! ```
//! use kiln_ir::facts::{facts, OpClass, Traffic};
//! use kiln_ir::OpKind;
//! assert_eq!(facts(OpKind::Gelu).class, OpClass::Elementwise);
//! assert_eq!(facts(OpKind::ReduceMean).class, OpClass::Rows);
//! assert_eq!(facts(OpKind::Reshape).traffic, Traffic::Free);
//! assert!(facts(OpKind::Erf).flops_per_element > facts(OpKind::Add).flops_per_element);
//! ```

use crate::OpKind;

/// The kind of kernel that computes an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// A matrix product: a GEMM kernel, with the elementwise ops after it as its epilogue.
    MatMul,
    /// An elementwise op: fused with its elementwise neighbours into one loop.
    Elementwise,
    /// A comparison: of f32 values, an elementwise kernel computes it only as a `Where`
    /// condition (its bool result is never stored); of integers, it is an elementwise op whose
    /// bool result may be stored.
    Condition,
    /// Softmax, a normalisation or a reduction: a kernel over rows.
    Rows,
    /// Attention that never materialises its score matrix.
    Attention,
    /// Data movement: gathers, transposes, concatenation, slices, splits and the rotate-half
    /// rotary embedding; and the integer sequences of `Range` and `SymbolicDims`.
    Movement,
    /// A reshape: its output is its input's buffer under another shape.
    View,
    /// No kernel template: the reference interpreter runs it.
    Interpreted,
}

impl OpClass {
    /// Its name in `kiln explain`.
    pub fn name(self) -> &'static str {
        match self {
            OpClass::MatMul => "gemm",
            OpClass::Elementwise => "elementwise",
            OpClass::Condition => "condition",
            OpClass::Rows => "rows",
            OpClass::Attention => "attention",
            OpClass::Movement => "movement",
            OpClass::View => "view",
            OpClass::Interpreted => "interp",
        }
    }
}

/// The memory an op reads and writes, as the cost model counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// None: a view of its input (and Split, whose parts consumers read in place as strided
    /// views; after a merged QKV projection they feed head transposes, which copy anyway).
    Free,
    /// Only its output is written (shape metadata).
    Written,
    /// It reads only what it copies: twice its output, plus its index inputs (input 1 on).
    Gathered,
    /// Its inputs and output 0; any further outputs (attention's present key and value) are
    /// not counted.
    FirstOutput,
    /// Every input read, every output written.
    Streamed,
}

/// What the back half knows about one op kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpFacts {
    /// The kernel that computes it.
    pub class: OpClass,
    /// Arithmetic per output element, for ops whose work is proportional to their output
    /// (the cost model counts matrix products, attention, einsums and reductions by their
    /// own formulas).
    pub flops_per_element: f64,
    /// The memory it reads and writes.
    pub traffic: Traffic,
}

/// The facts of `kind`.
pub fn facts(kind: OpKind) -> OpFacts {
    OpFacts {
        class: class(kind),
        flops_per_element: flops_per_element(kind),
        traffic: traffic(kind),
    }
}

fn class(kind: OpKind) -> OpClass {
    use OpKind::*;
    match kind {
        MatMul | Gemm | FusedMatMul => OpClass::MatMul,
        Add | Sub | Mul | Div | Max | Min | Neg | Abs | Sqrt | Reciprocal | Exp | Erf | Tanh
        | Sigmoid | Relu | Floor | Ceil | Silu | Gelu | Pow | SwiGlu | Clip | Where | And | Or
        | Xor | Not | Cast => OpClass::Elementwise,
        IsNaN | Equal | Less | LessOrEqual | Greater | GreaterOrEqual => OpClass::Condition,
        Softmax
        | LogSoftmax
        | LayerNormalization
        | RMSNormalization
        | SimplifiedLayerNormalization
        | SkipLayerNormalization
        | SkipSimplifiedLayerNormalization
        | ReduceSum
        | ReduceMean
        | ReduceMax
        | ReduceMin => OpClass::Rows,
        Attention | FusedAttention => OpClass::Attention,
        Gather | GatherElements | GatherND | Transpose | Concat | Slice | Split | Expand
        | TensorScatter | RopeRotateHalf | Range | SymbolicDims => OpClass::Movement,
        Reshape | Flatten | Squeeze | Unsqueeze | Identity | Dropout => OpClass::View,
        _ => OpClass::Interpreted,
    }
}

fn flops_per_element(kind: OpKind) -> f64 {
    use OpKind::*;
    match kind {
        // Pure data movement and metadata.
        Identity | Dropout | Cast | Transpose | Reshape | Flatten | Squeeze | Unsqueeze
        | Concat | Split | Slice | Gather | GatherElements | GatherND | TensorScatter | Expand
        | Tile | Trilu | Shape | Size | ConstantOfShape | Range | SymbolicDims => 0.0,
        // Cheap elementwise arithmetic, comparisons and logic.
        Neg | Abs | Relu | Floor | Ceil | Round | Not | IsNaN | Add | Sub | Mul | Max | Min
        | Equal | Less | Greater | LessOrEqual | GreaterOrEqual | And | Or | Xor | Where
        | CumSum => 1.0,
        Clip => 2.0,
        // Division and square roots take several cycles per element.
        Div | Reciprocal | Sqrt | Mod => 4.0,
        // Transcendentals: a polynomial approximation each.
        Exp | Log | Erf | Tanh | Sigmoid | Sin | Cos | Pow | Gelu => 10.0,
        // Row-wise: max, exp, sum, divide (+ log).
        Softmax => 5.0,
        LogSoftmax => 6.0,
        // Mean, variance, normalise, scale, shift.
        LayerNormalization => 8.0,
        RMSNormalization | SimplifiedLayerNormalization => 6.0,
        SkipLayerNormalization => 9.0,
        SkipSimplifiedLayerNormalization => 7.0,
        // x * sigmoid(x); silu(gate) * up.
        Silu => 11.0,
        SwiGlu => 12.0,
        // x * cos + rotate_half(x) * sin.
        RotaryEmbedding | RopeRotateHalf => 3.0,
        QuantizeLinear => 3.0,
        DequantizeLinear => 2.0,
        DynamicQuantizeLinear => 5.0,
        // Anything new: assume a cheap elementwise op.
        _ => 1.0,
    }
}

fn traffic(kind: OpKind) -> Traffic {
    use OpKind::*;
    match kind {
        Reshape | Squeeze | Unsqueeze | Flatten | Identity | Dropout | Split => Traffic::Free,
        Shape | Size => Traffic::Written,
        Slice | Gather | GatherElements | GatherND => Traffic::Gathered,
        Attention | FusedAttention => Traffic::FirstOutput,
        _ => Traffic::Streamed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_free_and_kernels_that_move_data_cost_their_bytes() {
        for &kind in OpKind::ALL {
            let f = facts(kind);
            if f.class == OpClass::View {
                assert_eq!(f.traffic, Traffic::Free, "{kind}");
                assert_eq!(f.flops_per_element, 0.0, "{kind}");
            }
            if f.class == OpClass::Movement {
                assert_eq!(
                    f.flops_per_element,
                    f64::from(kind == OpKind::RopeRotateHalf) * 3.0
                );
            }
        }
        assert_eq!(facts(OpKind::Split).traffic, Traffic::Free);
        assert_eq!(facts(OpKind::Concat).traffic, Traffic::Streamed);
        assert_eq!(facts(OpKind::Einsum).class, OpClass::Interpreted);
    }
}

//! KIR, the kernel IR: loop nests over typed buffers with scalar arithmetic. Kernel templates
//! build KIR; backends (Cranelift now, LLVM later) lower the same KIR to machine code.
//!
//! This first cut covers f32 buffers, counted loops, index arithmetic over loop variables and
//! size parameters, and elementwise arithmetic; vector widths, reductions and intrinsics come
//! with the templates that need them.

/// A kernel: a function of buffer pointers and i64 sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Symbol name of the compiled function.
    pub name: String,
    /// How many f32 buffers it takes (parameters 0..buffers, as pointers).
    pub buffers: usize,
    /// How many i64 size parameters follow the buffers.
    pub sizes: usize,
    /// The statements of its body.
    pub body: Vec<Stmt>,
}

/// An index expression (i64).
#[derive(Clone, Debug, PartialEq)]
pub enum Index {
    /// A constant.
    Const(i64),
    /// Size parameter `i`.
    Size(usize),
    /// The counter of loop `i` (loops are numbered by nesting depth from the outside, 0-based).
    Loop(usize),
    /// Sum.
    Add(Box<Index>, Box<Index>),
    /// Product.
    Mul(Box<Index>, Box<Index>),
}

/// An f32 value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A constant.
    Const(f32),
    /// `buffer[index]`.
    Load(usize, Index),
    /// A unary operation.
    Unary(Unary, Box<Value>),
    /// A binary operation.
    Binary(Binary, Box<Value>, Box<Value>),
}

/// Unary operations that lower to single machine instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// Square root.
    Sqrt,
}

/// Binary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
    /// IEEE maximum (`max(a, b)`; NaN if either is NaN).
    Max,
    /// IEEE minimum.
    Min,
}

/// A statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `for loop_var in 0..extent { body }`.
    Loop {
        /// Trip count.
        extent: Index,
        /// Loop body.
        body: Vec<Stmt>,
    },
    /// `buffer[index] = value`.
    Store {
        /// Destination buffer.
        buffer: usize,
        /// Element index.
        index: Index,
        /// Stored value.
        value: Value,
    },
}

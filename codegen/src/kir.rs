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
    /// Quotient rounded down (operands are non-negative).
    Div(Box<Index>, Box<Index>),
}

impl std::ops::Add for Index {
    type Output = Index;
    fn add(self, rhs: Index) -> Index {
        Index::Add(Box::new(self), Box::new(rhs))
    }
}

impl std::ops::Mul for Index {
    type Output = Index;
    fn mul(self, rhs: Index) -> Index {
        Index::Mul(Box::new(self), Box::new(rhs))
    }
}

impl std::ops::Div for Index {
    type Output = Index;
    /// Rounded down (operands are non-negative).
    fn div(self, rhs: Index) -> Index {
        Index::Div(Box::new(self), Box::new(rhs))
    }
}

/// An f32 value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A constant.
    Const(f32),
    /// `buffer[index]` (with `lanes` > 1, the `lanes` consecutive elements from `index`).
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
    /// `for loop_var in start..end { body }`.
    Loop {
        /// First value of the counter.
        start: Index,
        /// One past the last value.
        end: Index,
        /// Loop body.
        body: Vec<Stmt>,
    },
    /// `buffer[index..index + lanes] = value`, the value computed `lanes` elements at a time
    /// (1 = scalar; 4 = f32x4, the widest vector Cranelift has on x86-64).
    Store {
        /// Destination buffer.
        buffer: usize,
        /// Element index of the first lane.
        index: Index,
        /// Stored value.
        value: Value,
        /// Elements per operation: 1 or 4.
        lanes: u8,
    },
}

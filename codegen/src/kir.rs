//! KIR, the kernel IR: loop nests over buffers with scalar and vector f32 arithmetic,
//! variables (accumulators), horizontal reductions and intrinsics. Kernel templates build KIR;
//! the backends ([`crate::cranelift`], [`crate::llvm`]) lower the same KIR to machine code.
//!
//! A vector has 4, 8 or 16 lanes ([`LANES`]); Cranelift lowers 4 (its x86-64 vectors are
//! 128-bit), LLVM every width. [`crate::CodeGenerator::lanes`] tells a template the widest one.
//!
//! Typing is by context: a [`Value`] is computed at the width of the statement that uses it
//! (a store's `lanes`, a variable's declared lanes); [`Value::Splat`] and [`Value::Reduce`]
//! cross between scalar and vector. Buffers are untyped pointers: [`Value::Load`] reads f32
//! elements; [`Index::Load`] reads integer elements of an [`Int`] type (i64 indices, bool
//! masks) and [`Stmt::StoreInt`] writes them, one at a time.

/// The vector widths KIR has, in f32 lanes (1 is a scalar).
pub const LANES: [u8; 4] = [1, 4, 8, 16];

/// A kernel: a function of buffer pointers and i64 sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Symbol name of the compiled function.
    pub name: String,
    /// How many buffers it takes (parameters 0..buffers, as pointers).
    pub buffers: usize,
    /// How many i64 size parameters follow the buffers.
    pub sizes: usize,
    /// The lanes (one of [`LANES`]) of each variable; variable `i` is [`Value::Var`]`(i)`.
    pub vars: Vec<u8>,
    /// The statements of its body.
    pub body: Vec<Stmt>,
}

impl Kernel {
    /// Whether the kernel stores to each of its buffers (the others are read-only during a
    /// call, which backends may rely on).
    pub fn stored_buffers(&self) -> Vec<bool> {
        let mut stored = vec![false; self.buffers];
        visit_stores(&self.body, &mut |buffer, _| {
            if let Some(b) = stored.get_mut(buffer) {
                *b = true;
            }
        });
        stored
    }

    /// The lanes of its widest vector (variable or store); 1 for a scalar kernel.
    pub fn widest_lanes(&self) -> u8 {
        let mut widest = self.vars.iter().copied().max().unwrap_or(1);
        visit_stores(&self.body, &mut |_, lanes| widest = widest.max(lanes));
        widest
    }
}

/// Calls `f(buffer, lanes)` for every store in `stmts`, nested ones included.
fn visit_stores(stmts: &[Stmt], f: &mut impl FnMut(usize, u8)) {
    for s in stmts {
        match s {
            Stmt::Store { buffer, lanes, .. } => f(*buffer, *lanes),
            Stmt::StoreInt { buffer, .. } => f(*buffer, 1),
            Stmt::Loop { body, .. } => visit_stores(body, f),
            Stmt::If {
                then, otherwise, ..
            } => {
                visit_stores(then, f);
                visit_stores(otherwise, f);
            }
            Stmt::Set { .. } | Stmt::Prefetch { .. } => {}
        }
    }
}

/// The integer element types a buffer may hold for [`Index::Load`] and [`Stmt::StoreInt`]
/// (a bool is a `U8` of 0 or 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int {
    /// 64-bit signed.
    I64,
    /// 32-bit signed.
    I32,
    /// 16-bit signed (f16 and bf16 bits, moved).
    I16,
    /// 8-bit signed.
    I8,
    /// 8-bit unsigned (and bool).
    U8,
}

impl Int {
    /// Bytes per element.
    pub fn bytes(self) -> i64 {
        match self {
            Int::I64 => 8,
            Int::I32 => 4,
            Int::I16 => 2,
            Int::I8 | Int::U8 => 1,
        }
    }

    /// Whether a load sign-extends (else it zero-extends) to i64.
    pub fn signed(self) -> bool {
        self != Int::U8
    }
}

/// An index expression (i64). Arithmetic wraps on overflow.
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
    /// Difference.
    Sub(Box<Index>, Box<Index>),
    /// Product.
    Mul(Box<Index>, Box<Index>),
    /// Quotient rounded down (operands are non-negative).
    Div(Box<Index>, Box<Index>),
    /// Remainder (operands are non-negative).
    Rem(Box<Index>, Box<Index>),
    /// The smaller of two indices.
    Min(Box<Index>, Box<Index>),
    /// The larger of two indices.
    Max(Box<Index>, Box<Index>),
    /// The element `buffer[index]` of the given type, extended to i64 (gather indices, token
    /// ids, masks).
    Load(Int, usize, Box<Index>),
    /// `if a <cmp> b { then } else { otherwise }` (signed), as `[a, b, then, otherwise]`.
    Select(Compare, Box<[Index; 4]>),
}

impl Index {
    /// The smaller of `self` and `other`.
    pub fn min(self, other: Index) -> Index {
        Index::Min(Box::new(self), Box::new(other))
    }

    /// The larger of `self` and `other`.
    pub fn max(self, other: Index) -> Index {
        Index::Max(Box::new(self), Box::new(other))
    }

    /// The i64 element `buffer[index]`.
    pub fn load(buffer: usize, index: Index) -> Index {
        Index::Load(Int::I64, buffer, Box::new(index))
    }

    /// The `int` element `buffer[index]`, extended to i64.
    pub fn load_as(int: Int, buffer: usize, index: Index) -> Index {
        Index::Load(int, buffer, Box::new(index))
    }

    /// `if a <cmp> b { then } else { otherwise }` (signed).
    pub fn select(cmp: Compare, a: Index, b: Index, then: Index, otherwise: Index) -> Index {
        Index::Select(cmp, Box::new([a, b, then, otherwise]))
    }
}

impl From<i64> for Index {
    fn from(c: i64) -> Index {
        Index::Const(c)
    }
}

impl std::ops::Add for Index {
    type Output = Index;
    fn add(self, rhs: Index) -> Index {
        Index::Add(Box::new(self), Box::new(rhs))
    }
}

impl std::ops::Sub for Index {
    type Output = Index;
    fn sub(self, rhs: Index) -> Index {
        Index::Sub(Box::new(self), Box::new(rhs))
    }
}

impl std::ops::Mul for Index {
    type Output = Index;
    fn mul(self, rhs: Index) -> Index {
        Index::Mul(Box::new(self), Box::new(rhs))
    }
}

impl std::ops::Rem for Index {
    type Output = Index;
    /// Remainder (operands are non-negative).
    fn rem(self, rhs: Index) -> Index {
        Index::Rem(Box::new(self), Box::new(rhs))
    }
}

impl std::ops::Div for Index {
    type Output = Index;
    /// Rounded down (operands are non-negative).
    fn div(self, rhs: Index) -> Index {
        Index::Div(Box::new(self), Box::new(rhs))
    }
}

/// An f32 value, scalar or vector depending on where it is used.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A constant (splatted when used as a vector).
    Const(f32),
    /// `buffer[index]` (as a vector of `n` lanes, the `n` consecutive elements from `index`).
    Load(usize, Index),
    /// Variable `i`; it must be used at its declared width.
    Var(usize),
    /// A scalar value broadcast to every lane (identity when used as a scalar).
    Splat(Box<Value>),
    /// Horizontal reduction with `Add`, `Max` or `Min` of a value computed at the given
    /// width (4, 8 or 16 lanes) to a scalar.
    Reduce(Binary, u8, Box<Value>),
    /// An index converted to f32 (positions in masks and rotary tables, integer casts): to f64,
    /// then rounded to f32, as the interpreter's `Cast` does.
    FromIndex(Index),
    /// A unary operation.
    Unary(Unary, Box<Value>),
    /// A binary operation.
    Binary(Binary, Box<Value>, Box<Value>),
    /// `a * b + c`, fused (one rounding) where the target has FMA.
    Fma(Box<Value>, Box<Value>, Box<Value>),
    /// Lanewise `if a <cmp> b { then } else { otherwise }`.
    Select(Compare, Box<[Value; 4]>),
}

impl Value {
    /// `buffer[index]`.
    pub fn load(buffer: usize, index: Index) -> Value {
        Value::Load(buffer, index)
    }

    /// `op(self)`.
    pub fn unary(self, op: Unary) -> Value {
        Value::Unary(op, Box::new(self))
    }

    /// `op(self, rhs)`.
    pub fn binary(self, op: Binary, rhs: Value) -> Value {
        Value::Binary(op, Box::new(self), Box::new(rhs))
    }

    /// `self * b + c`.
    pub fn fma(self, b: Value, c: Value) -> Value {
        Value::Fma(Box::new(self), Box::new(b), Box::new(c))
    }

    /// `self` broadcast to every lane.
    pub fn splat(self) -> Value {
        Value::Splat(Box::new(self))
    }

    /// The horizontal `op` (`Add`, `Max`, `Min`) of `self` computed at `lanes` lanes.
    pub fn reduce(self, op: Binary, lanes: u8) -> Value {
        Value::Reduce(op, lanes, Box::new(self))
    }

    /// Lanewise `if a <cmp> b { then } else { otherwise }`.
    pub fn select(cmp: Compare, a: Value, b: Value, then: Value, otherwise: Value) -> Value {
        Value::Select(cmp, Box::new([a, b, then, otherwise]))
    }
}

macro_rules! value_ops {
    ($($trait:ident $method:ident $op:ident),*) => {$(
        impl std::ops::$trait for Value {
            type Output = Value;
            fn $method(self, rhs: Value) -> Value {
                self.binary(Binary::$op, rhs)
            }
        }
    )*};
}
value_ops!(Add add Add, Sub sub Sub, Mul mul Mul, Div div Div);

/// Unary operations. The transcendental ones are the polynomial approximations of
/// [`crate::intrinsics`], inlined by every backend (no libm calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    /// `-x`.
    Neg,
    /// `|x|`.
    Abs,
    /// Square root (one instruction).
    Sqrt,
    /// `1 / sqrt(x)`.
    Rsqrt,
    /// Rounded towards negative infinity.
    Floor,
    /// `e^x`.
    Exp,
    /// The error function.
    Erf,
    /// Hyperbolic tangent.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
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
    /// Maximum (NaN if either is NaN).
    Max,
    /// Minimum (NaN if either is NaN).
    Min,
    /// The magnitude of `a` with the sign of `b`.
    CopySign,
}

/// Comparisons for [`Value::Select`] and [`Stmt::If`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `==`.
    Eq,
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
    /// (1 = scalar).
    Store {
        /// Destination buffer.
        buffer: usize,
        /// Element index of the first lane.
        index: Index,
        /// Stored value.
        value: Value,
        /// Elements per operation: one of [`LANES`].
        lanes: u8,
    },
    /// `buffer[index] = value` for an integer buffer: the value truncated to the element type
    /// (one element at a time).
    StoreInt {
        /// The element type of the buffer.
        int: Int,
        /// Destination buffer.
        buffer: usize,
        /// Element index.
        index: Index,
        /// Stored value.
        value: Index,
    },
    /// `var = value`, computed at the variable's width.
    Set {
        /// The variable.
        var: usize,
        /// Its new value.
        value: Value,
    },
    /// `if lhs <cmp> rhs { then } else { otherwise }` on indices.
    If {
        /// Left operand.
        lhs: Index,
        /// The comparison.
        cmp: Compare,
        /// Right operand.
        rhs: Index,
        /// Taken when the comparison holds.
        then: Vec<Stmt>,
        /// Taken otherwise.
        otherwise: Vec<Stmt>,
    },
    /// A hint that the cache line holding `buffer[index]` will be read soon (a software
    /// prefetch into every cache level). It never faults and has no effect on the results,
    /// so `index` may lie outside the buffer; a backend may ignore it (Cranelift does).
    Prefetch {
        /// The buffer.
        buffer: usize,
        /// Element index (f32 elements) of the address.
        index: Index,
    },
}

impl Stmt {
    /// `for loop_var in start..end { body }`.
    pub fn for_range(start: Index, end: Index, body: Vec<Stmt>) -> Stmt {
        Stmt::Loop { start, end, body }
    }

    /// `var = value`.
    pub fn set(var: usize, value: Value) -> Stmt {
        Stmt::Set { var, value }
    }

    /// A store of one `int` element.
    pub fn store_int(int: Int, buffer: usize, index: Index, value: Index) -> Stmt {
        Stmt::StoreInt {
            int,
            buffer,
            index,
            value,
        }
    }

    /// A store of `lanes` elements.
    pub fn store(buffer: usize, index: Index, value: Value, lanes: u8) -> Stmt {
        Stmt::Store {
            buffer,
            index,
            value,
            lanes,
        }
    }
}

//! Elementwise templates: a tree of elementwise IR ops ([`Expr`]) over inputs broadcast (numpy
//! rules) to one output, fused into one loop nest (inputs are read once, intermediates stay in
//! registers), and the rotate-half rotary embedding ([`rope_rotate_half`]), elementwise but for
//! a half swap along the last axis.
//!
//! Layout: output axes of static size 1 are dropped, and neighbouring axes along which every
//! input is alike (varies along both, or is broadcast along both) are merged, so the common
//! cases (same shapes, `[rows, cols] + [cols]`, `[C, H, W] * [C, 1, 1]`) become one or two
//! loops. The innermost merged axis runs on vectors of the schedule's `lanes`, `unroll` of
//! them per iteration ([`Vectors`]), then single vectors and a scalar tail: an input that
//! varies along it is loaded a vector at a time, one broadcast along it is splatted.
//! The parallel axis is the flattened element count when one axis is left (each thread's
//! range runs in vectors from its first element, with its own tail), else the outer loops
//! (their first two axes flattened when the first is not known to be large).
//!
//! The loop helpers here (`Sizes`, `nest`, `vector_run`, ...) are shared with the
//! movement templates.

use super::activation::activation;
use super::{Arg, Built, Sizes};
use crate::kir::{Binary, Compare, Index, Int, Kernel, Stmt, Unary, Value};
use crate::schedule::{lanes_or_scalar, range, Param, Schedule, Space};
use kiln_ir::{Activation, DType, Dim, Op, OpKind};

/// The parameters of the elementwise template (`elementwise.lanes`, `elementwise.unroll`):
/// how its innermost run is vectorised ([`Vectors`]).
///
/// ```
/// use kiln_codegen::templates::elementwise;
/// use kiln_codegen::Schedule;
/// let s = elementwise::space().resolve(&Schedule::default().with("lanes", 16)).unwrap();
/// assert_eq!((s.value("lanes"), s.value("unroll")), (16, 1));
/// ```
pub fn space() -> Space {
    Space {
        template: "elementwise",
        version: 1,
        params: vector_params(),
    }
}

/// The parameters of a vectorised run, shared by the elementwise and movement templates.
pub(crate) fn vector_params() -> Vec<Param> {
    vec![
        lanes_or_scalar(),
        Param {
            name: "unroll",
            doc: "vectors per iteration of the innermost run",
            values: |_| range(1, 4),
            default: |_| 1,
        },
    ]
}

/// How a run of contiguous positions is vectorised: `unroll` vectors of `lanes` per
/// iteration, then single vectors, then a scalar tail; and what a copy moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Vectors {
    /// f32 lanes per vector (1: scalar).
    pub lanes: u8,
    /// Vectors per iteration of the main loop.
    pub unroll: u8,
    /// The elements a copy moves: `None` for 4-byte elements (f32, or i32 bits, moved as
    /// f32 vectors), else an integer type moved one element at a time.
    pub int: Option<Int>,
}

impl Vectors {
    /// The vectorisation `schedule` (resolved by a space of [`vector_params`]) asks for.
    pub(crate) fn of(schedule: &Schedule) -> Vectors {
        Vectors {
            lanes: schedule.value("lanes") as u8,
            unroll: schedule.value("unroll") as u8,
            int: None,
        }
    }

    /// One element at a time, with no unrolling.
    pub(crate) fn scalar() -> Vectors {
        Vectors {
            lanes: 1,
            unroll: 1,
            int: None,
        }
    }

    /// This vectorisation for copies of `dtype` elements: as it is for 4-byte elements (their
    /// bits move as f32), one element at a time for the others.
    pub(crate) fn moving(self, dtype: DType) -> Vectors {
        let int = match dtype.size() {
            4 => return self,
            8 => Int::I64,
            2 => Int::I16,
            _ => Int::U8,
        };
        Vectors {
            int: Some(int),
            ..Vectors::scalar()
        }
    }

    /// `dst[at..at + lanes] = src[from..from + lanes]` of the elements it moves.
    pub(crate) fn copy(self, dst: (usize, Index), src: (usize, Index), lanes: u8) -> Stmt {
        match self.int {
            None => Stmt::store(dst.0, dst.1, Value::load(src.0, src.1), lanes),
            Some(int) => Stmt::store_int(int, dst.0, dst.1, Index::load_as(int, src.0, src.1)),
        }
    }
}

/// An elementwise expression over a kernel's inputs, in IR op terms.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Input `i` of the group, broadcast to the output shape.
    Input(usize),
    /// A constant (a folded scalar constant input).
    Const(f32),
    /// An IR op (with its attributes, e.g. Gelu's `approximate`) applied to sub-expressions.
    Op(Op, Vec<Expr>),
}

impl Expr {
    /// `kind`, with its default attributes, applied to `args`.
    pub fn op(kind: OpKind, args: Vec<Expr>) -> Expr {
        Expr::Op(Op::plain(kind), args)
    }
}

/// A kernel computing `expr` over f32 inputs of `input_shapes` (input `i` of the group is
/// `Expr::Input(i)`), broadcast with numpy rules to the f32 `output_shape`: an input dim
/// statically 1 (or a missing leading axis) broadcasts, any other dim must be the output's
/// (the same polynomial: a symbolic dim that is not the output's could be 1 at run time, and
/// is an error).
///
/// Ops: Identity, Neg, Abs, Sqrt, Reciprocal, Exp, Erf, Tanh, Sigmoid, Relu, Floor, Ceil,
/// Silu, Gelu (`approximate` none or tanh), Add, Sub, Mul, Div, Max, Min, SwiGlu, Pow with a
/// constant exponent in {0, ±0.5, ±1, 2, 3}, Clip (bounds are operands, e.g. constants;
/// pass `-inf` for an absent lower bound), and Where whose condition is computed in the
/// kernel: IsNaN, Equal, Less, LessOrEqual, Greater or GreaterOrEqual of f32 expressions
/// (the conditions are not values of their own). Anything else is an error naming the op.
/// The activations (Relu, Gelu, Silu, Sigmoid, Tanh, and SwiGlu's gate) are
/// [`Activation::formula`]'s, so their NaN and ±inf values are the interpreter's.
///
/// Its schedule is [`space`]'s.
///
/// Buffers: the inputs in order, then the output (f32, dense, row-major).
pub fn elementwise(
    name: &str,
    expr: &Expr,
    input_shapes: &[Vec<Dim>],
    output_shape: &[Dim],
    schedule: &Schedule,
) -> Result<Built, String> {
    let dtypes = vec![DType::F32; input_shapes.len()];
    typed_elementwise(
        name,
        expr,
        input_shapes,
        &dtypes,
        output_shape,
        DType::F32,
        schedule,
    )
}

/// [`elementwise`] over inputs and an output of any of the dtypes f32, i64, i32, i8, u8 and
/// bool (`input_dtypes[i]` is input `i`'s). Besides the f32 ops, the integer and boolean ops
/// that build attention masks and position ids: the comparisons Equal, Less, LessOrEqual,
/// Greater, GreaterOrEqual of integers (stored as bool), And, Or, Xor and Not of bools, Where
/// with a bool condition (and branches of one dtype), Add, Sub, Mul, Max, Min, Neg, Abs and
/// Identity of integers (wrapping, as the interpreter does), and Cast from bool or an integer
/// to bool, an integer or f32 (an integer through f64, as the interpreter rounds). A kernel
/// that reads or writes anything but f32 runs one element at a time (the integer arithmetic
/// is scalar), so the vector lanes of the schedule apply only to all-f32 kernels.
///
/// ```
/// use kiln_codegen::templates::elementwise::{typed_elementwise, Expr};
/// use kiln_codegen::Schedule;
/// use kiln_ir::{DType, Dim, OpKind};
/// // The causal mask `j <= i` of two position vectors, stored as bool.
/// let le = Expr::op(OpKind::LessOrEqual, vec![Expr::Input(0), Expr::Input(1)]);
/// let (row, col) = (vec![Dim::sym("s"), Dim::known(1)], vec![Dim::sym("s")]);
/// let out = [Dim::sym("s"), Dim::sym("s")];
/// let dtypes = [DType::I64, DType::I64];
/// let built = typed_elementwise("mask", &le, &[col, row], &dtypes, &out, DType::Bool,
///     &Schedule::default()).unwrap();
/// assert_eq!(built.kernel.buffers, 3);
/// ```
pub fn typed_elementwise(
    name: &str,
    expr: &Expr,
    input_shapes: &[Vec<Dim>],
    input_dtypes: &[DType],
    output_shape: &[Dim],
    output_dtype: DType,
    schedule: &Schedule,
) -> Result<Built, String> {
    let mut run = Vectors::of(&space().resolve(schedule)?);
    for shape in input_shapes.iter().map(Vec::as_slice).chain([output_shape]) {
        check_dims(shape)?;
    }
    check_inputs(expr, input_shapes.len())?;
    if input_dtypes.len() != input_shapes.len() {
        return Err(format!(
            "{} input dtypes for {} inputs",
            input_dtypes.len(),
            input_shapes.len()
        ));
    }
    if input_dtypes
        .iter()
        .chain([&output_dtype])
        .any(|&d| d != DType::F32)
    {
        run = Vectors::scalar();
    }
    let types = Types {
        inputs: input_dtypes,
        output: output_dtype,
    };
    let layout = Layout::new(input_shapes, output_shape, false)?;
    let output = input_shapes.len();
    let mut sizes = Sizes::default();
    let mut vars = vec![];
    let (body, parallel) = match layout.dims.as_slice() {
        [] | [_] => {
            // One merged axis: every input varies along all of it or is a broadcast scalar,
            // so the parallel range is a range of elements.
            let n = layout.dims.first().cloned().unwrap_or(Dim::known(1));
            let rows = Rows {
                bases: vec![Index::Const(0); output],
                varies: layout
                    .full
                    .iter()
                    .map(|f| f.first() == Some(&true))
                    .collect(),
            };
            let body = vector_run(0, &Index::Size(0), &Index::Size(1), run, |j, lanes| {
                rows.store(expr, &types, &Index::Const(0), &j, lanes, &mut vars)
            })?;
            (body, n)
        }
        [outer @ .., inner] => nest(&mut sizes, outer, |sizes, coords, depth| {
            let rows = layout.rows(sizes, coords);
            let out_base = row_major_offset(sizes, &layout.dims, coords);
            let end = sizes.index(inner);
            vector_run(depth, &Index::Const(0), &end, run, |j, lanes| {
                rows.store(expr, &types, &out_base, &j, lanes, &mut vars)
            })
        })?,
    };
    let args = (0..output)
        .map(Arg::Input)
        .chain([Arg::Output(0)])
        .collect();
    Ok(finish(name, args, vars, body, sizes, parallel))
}

/// A kernel for `RopeRotateHalf`: `y = x * cos + rotate_half(x) * sin`, where
/// `rotate_half(x)` is `concat(-x2, x1)` of the two halves of the last axis, and `cos`, `sin`
/// broadcast to `x` (e.g. `[S, D]` or `[B, 1, S, D]` tables for `[B, H, S, D]` activations).
/// The last dim must be even (statically, or a symbolic multiple of 2). Its schedule is the
/// movement template's ([`super::movement::space`]), as it moves halves.
///
/// Buffers: x, cos, sin, then y (x's shape).
pub fn rope_rotate_half(
    name: &str,
    x: &[Dim],
    cos: &[Dim],
    sin: &[Dim],
    schedule: &Schedule,
) -> Result<Built, String> {
    let run = Vectors::of(&super::movement::space().resolve(schedule)?);
    for shape in [x, cos, sin] {
        check_dims(shape)?;
    }
    let last = x.last().ok_or("x must have rank at least 1")?;
    let half = last
        .div_exact(&Dim::known(2))
        .ok_or_else(|| format!("the last dim ({last}) must be even"))?;
    let layout = Layout::new(&[x.to_vec(), cos.to_vec(), sin.to_vec()], x, true)?;
    let (_, outer) = layout.dims.split_last().expect("the last axis is kept");
    let mut sizes = Sizes::default();
    let (body, parallel) = nest(&mut sizes, outer, |sizes, coords, depth| {
        let rows = layout.rows(sizes, coords);
        let out_base = row_major_offset(sizes, &layout.dims, coords);
        let (half, end) = (sizes.index(&half), sizes.index(last));
        // First half: x1 * cos - x2 * sin; second half: x2 * cos + x1 * sin.
        let mut body = vec![];
        for (start, stop, other, negate) in [
            (Index::Const(0), half.clone(), half.clone(), true),
            (half.clone(), end, sub(Index::Const(0), half), false),
        ] {
            body.extend(vector_run(depth, &start, &stop, run, |j, lanes| {
                let mut rotated = rows.load(0, &add(j.clone(), other.clone()));
                if negate {
                    rotated = rotated.unary(Unary::Neg);
                }
                let value = rows.load(0, &j) * rows.load(1, &j) + rotated * rows.load(2, &j);
                Ok(vec![Stmt::store(3, add(out_base.clone(), j), value, lanes)])
            })?);
        }
        Ok(body)
    })?;
    let args = vec![Arg::Input(0), Arg::Input(1), Arg::Input(2), Arg::Output(0)];
    Ok(finish(name, args, vec![], body, sizes, parallel))
}

/// Errors if a dim is unknown (`?`): its size could not be bound at run time.
pub(crate) fn check_dims(shape: &[Dim]) -> Result<(), String> {
    match shape.iter().find(|d| d.is_unknown()) {
        Some(d) => Err(format!("dim `{d}` of shape {shape:?} is unknown")),
        None => Ok(()),
    }
}

/// Errors if `expr` reads an input that does not exist.
fn check_inputs(expr: &Expr, inputs: usize) -> Result<(), String> {
    match expr {
        Expr::Input(i) if *i >= inputs => {
            Err(format!("input {i} does not exist ({inputs} inputs)"))
        }
        Expr::Op(_, args) => args.iter().try_for_each(|a| check_inputs(a, inputs)),
        _ => Ok(()),
    }
}

/// The output axes after dropping unit axes and merging alike neighbours.
struct Layout {
    /// Extents of the merged axes.
    dims: Vec<Dim>,
    /// For each input, whether it varies along each merged axis (false: broadcast).
    full: Vec<Vec<bool>>,
}

impl Layout {
    /// The layout of `inputs` broadcast to `output`; with `keep_last`, the last axis is kept
    /// on its own (never dropped or merged).
    fn new(inputs: &[Vec<Dim>], output: &[Dim], keep_last: bool) -> Result<Layout, String> {
        let rank = output.len();
        let mut layout = Layout {
            dims: vec![],
            full: vec![vec![]; inputs.len()],
        };
        for (axis, out) in output.iter().enumerate() {
            let flags = inputs
                .iter()
                .map(|shape| varies(shape, axis, output))
                .collect::<Result<Vec<bool>, String>>()?;
            let kept = keep_last && axis + 1 == rank;
            if out.is(1) && !kept {
                continue;
            }
            let alike = layout
                .full
                .iter()
                .zip(&flags)
                .all(|(f, g)| f.last() == Some(g));
            match layout.dims.pop() {
                Some(d) if alike && !kept => layout.dims.push(&d * out),
                previous => {
                    layout.dims.extend(previous);
                    layout.dims.push(out.clone());
                    for (f, g) in layout.full.iter_mut().zip(flags) {
                        f.push(g);
                    }
                }
            }
        }
        Ok(layout)
    }

    /// The inputs' row bases at output coordinates `coords` of the outer merged axes.
    fn rows(&self, sizes: &mut Sizes, coords: &[Index]) -> Rows {
        let bases = self
            .full
            .iter()
            .map(|full| {
                let terms = coords.iter().enumerate().filter(|(a, _)| full[*a]);
                sum(terms.map(|(a, c)| {
                    let after: Vec<Dim> = (a + 1..self.dims.len())
                        .filter(|&e| full[e])
                        .map(|e| self.dims[e].clone())
                        .collect();
                    mul(c.clone(), sizes.product(&after))
                }))
            })
            .collect();
        let varies = self.full.iter().map(|f| f.last() == Some(&true)).collect();
        Rows { bases, varies }
    }
}

/// Whether the input of `shape` varies along output axis `axis` (false: broadcast).
fn varies(shape: &[Dim], axis: usize, output: &[Dim]) -> Result<bool, String> {
    let offset = output.len().checked_sub(shape.len()).ok_or_else(|| {
        format!("input shape {shape:?} has a higher rank than the output {output:?}")
    })?;
    let Some(d) = axis.checked_sub(offset).map(|a| &shape[a]) else {
        return Ok(false);
    };
    let out = &output[axis];
    match d.as_known() {
        Some(1) => Ok(false),
        // A dim that differs from the output's (`batch` against `seq`) might be 1 at run
        // time, and the kernel could not tell whether to broadcast it.
        _ if d != out => Err(format!(
            "input shape {shape:?} does not broadcast to {output:?} (dim {d} against {out})"
        )),
        _ => Ok(true),
    }
}

/// Where each input's current row starts and whether it varies along the row.
struct Rows {
    bases: Vec<Index>,
    varies: Vec<bool>,
}

impl Rows {
    /// Input `i` at position `j` of the row (a splat of its row base if broadcast along it).
    fn load(&self, i: usize, j: &Index) -> Value {
        if self.varies[i] {
            Value::load(i, add(self.bases[i].clone(), j.clone()))
        } else {
            Value::load(i, self.bases[i].clone()).splat()
        }
    }

    /// Input `i`, integer elements of `int`, at position `j` of the row (scalar).
    fn load_int(&self, i: usize, int: Int, j: &Index) -> Index {
        match self.varies[i] {
            true => Index::load_as(int, i, add(self.bases[i].clone(), j.clone())),
            false => Index::load_as(int, i, self.bases[i].clone()),
        }
    }

    /// Statements storing `lanes` elements of `expr` at position `j` of the output row that
    /// starts at `out_base` (the output buffer follows the inputs).
    fn store(
        &self,
        expr: &Expr,
        types: &Types,
        out_base: &Index,
        j: &Index,
        lanes: u8,
        vars: &mut Vec<u8>,
    ) -> Result<Vec<Stmt>, String> {
        let mut lower = Lowering {
            vars,
            lanes,
            stmts: vec![],
            load: &|i| self.load(i, j),
            load_int: &|i, int| self.load_int(i, int, j),
            dtypes: types.inputs,
        };
        let value = lower.scalar(expr)?;
        let mut stmts = lower.stmts;
        let (output, at) = (types.inputs.len(), add(out_base.clone(), j.clone()));
        stmts.push(match (types.output, value) {
            (DType::F32, Scalar::F32(v)) => Stmt::store(output, at, v, lanes),
            (DType::F32, Scalar::Int(_)) => {
                return Err("the f32 output is computed as an integer".into())
            }
            (dtype, Scalar::Int(v)) => Stmt::store_int(int_of(dtype)?, output, at, v),
            (dtype, Scalar::F32(_)) => {
                return Err(format!("the {dtype} output is computed as f32"))
            }
        });
        Ok(stmts)
    }
}

/// The dtypes of a typed elementwise kernel's inputs and output.
struct Types<'a> {
    inputs: &'a [DType],
    output: DType,
}

/// The KIR integer type of elements of `dtype` (bool is a byte of 0 or 1).
fn int_of(dtype: DType) -> Result<Int, String> {
    Ok(match dtype {
        DType::I64 => Int::I64,
        DType::I32 => Int::I32,
        DType::I8 => Int::I8,
        DType::U8 | DType::Bool => Int::U8,
        other => return Err(format!("{other} has no elementwise kernel")),
    })
}

/// A computed operand: an f32 value, or an integer (a bool is 0 or 1) as an index.
enum Scalar {
    F32(Value),
    Int(Index),
}

impl Scalar {
    /// The f32 value, or an error if it is an integer.
    fn f32(self) -> Result<Value, String> {
        match self {
            Scalar::F32(v) => Ok(v),
            Scalar::Int(_) => Err("an integer operand of an f32 op".into()),
        }
    }

    /// The integer, or an error if it is f32.
    fn int(self) -> Result<Index, String> {
        match self {
            Scalar::Int(i) => Ok(i),
            Scalar::F32(_) => Err("an f32 operand of an integer op".into()),
        }
    }
}

/// The dtype of `expr`'s value, given the dtypes of the inputs.
fn dtype_of(expr: &Expr, inputs: &[DType]) -> Result<DType, String> {
    match expr {
        Expr::Input(i) => inputs
            .get(*i)
            .copied()
            .ok_or_else(|| format!("input {i} does not exist")),
        Expr::Const(_) => Ok(DType::F32),
        Expr::Op(op, args) => op_dtype(op, args, inputs),
    }
}

/// The dtype of `op` applied to `args`, given the dtypes of the inputs.
fn op_dtype(op: &Op, args: &[Expr], inputs: &[DType]) -> Result<DType, String> {
    use OpKind::*;
    Ok(match op.kind {
        Equal | Less | LessOrEqual | Greater | GreaterOrEqual | IsNaN | And | Or | Xor | Not => {
            DType::Bool
        }
        Cast => op.attrs.str("to")?.parse()?,
        Where => dtype_of(args.get(1).ok_or("Where needs 3 inputs")?, inputs)?,
        _ => dtype_of(
            args.first()
                .ok_or_else(|| format!("{} has no inputs", op.kind))?,
            inputs,
        )?,
    })
}

/// `x` wrapped to the range of `int`, as a cast to it wraps (two's complement).
pub(crate) fn wrap_to(int: Int, x: Index) -> Index {
    let (modulus, low) = match int {
        Int::I64 => return x,
        Int::I32 => (1i64 << 32, -(1i64 << 31)),
        Int::I16 => (1 << 16, -(1 << 15)),
        Int::I8 => (256, -128),
        Int::U8 => (256, 0),
    };
    // ((x - low) mod m + m) mod m + low, with `%` the truncating remainder.
    let m = Index::Const(modulus);
    let r = (sub(x, Index::Const(low)) % m.clone() + m.clone()) % m;
    add(r, Index::Const(low))
}

/// Lowers an [`Expr`] to a KIR value at one width; operands used more than once are computed
/// once into variables (set by `stmts`, which run before the value is used).
struct Lowering<'a> {
    vars: &'a mut Vec<u8>,
    lanes: u8,
    stmts: Vec<Stmt>,
    load: &'a dyn Fn(usize) -> Value,
    load_int: &'a dyn Fn(usize, Int) -> Index,
    dtypes: &'a [DType],
}

impl Lowering<'_> {
    /// The f32 value of `expr`.
    fn expr(&mut self, expr: &Expr) -> Result<Value, String> {
        self.scalar(expr)?.f32()
    }

    /// The value of `expr`, f32 or integer as its dtype is.
    fn scalar(&mut self, expr: &Expr) -> Result<Scalar, String> {
        match expr {
            Expr::Input(i) => Ok(match self.dtypes.get(*i).copied().unwrap_or(DType::F32) {
                DType::F32 => Scalar::F32((self.load)(*i)),
                dtype => Scalar::Int((self.load_int)(*i, int_of(dtype)?)),
            }),
            Expr::Const(c) => Ok(Scalar::F32(Value::Const(*c))),
            Expr::Op(op, args) if self.is_f32_op(op, args)? => Ok(Scalar::F32(self.op(op, args)?)),
            Expr::Op(op, args) => self.typed_op(op, args),
        }
    }

    /// Whether `op` of `args` is an f32 op of f32 operands (a `Where` whose condition is a
    /// comparison of f32 expressions included), which [`Lowering::op`] computes.
    fn is_f32_op(&self, op: &Op, args: &[Expr]) -> Result<bool, String> {
        let f32 = |e: &Expr| dtype_of(e, self.dtypes).map(|d| d == DType::F32);
        let result = op_dtype(op, args, self.dtypes)?;
        if result != DType::F32 {
            return Ok(false);
        }
        if op.kind == OpKind::Cast {
            return Ok(false);
        }
        for (k, a) in args.iter().enumerate() {
            let inline_condition = op.kind == OpKind::Where
                && k == 0
                && matches!(a, Expr::Op(c, operands)
                    if kiln_ir::facts::facts(c.kind).class == kiln_ir::facts::OpClass::Condition
                        && operands.iter().all(|o| f32(o).unwrap_or(false)));
            if !inline_condition && !f32(a)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The integer, boolean and casting ops (see [`typed_elementwise`]).
    fn typed_op(&mut self, op: &Op, args: &[Expr]) -> Result<Scalar, String> {
        use OpKind::*;
        let kind = op.kind;
        let dtype = |e: &Expr| dtype_of(e, self.dtypes);
        let arity = |n: usize| -> Result<(), String> {
            match args.len() == n {
                true => Ok(()),
                false => Err(format!("{kind} takes {n} inputs, got {}", args.len())),
            }
        };
        let result = op_dtype(op, args, self.dtypes)?;
        let one = || Index::Const(1);
        let zero = || Index::Const(0);
        Ok(match kind {
            Cast => {
                arity(1)?;
                let from = dtype(&args[0])?;
                let x = self.scalar(&args[0])?;
                match (from, result) {
                    (a, b) if a == b => x,
                    (DType::F32, _) => return Err(format!("a cast of f32 to {result}")),
                    (_, DType::F32) => Scalar::F32(Value::FromIndex(x.int()?)),
                    (_, DType::Bool) => {
                        Scalar::Int(Index::select(Compare::Eq, x.int()?, zero(), zero(), one()))
                    }
                    (_, to) => Scalar::Int(wrap_to(int_of(to)?, x.int()?)),
                }
            }
            Not | And | Or | Xor => {
                for a in args {
                    if dtype(a)? != DType::Bool {
                        return Err(format!("{kind} of {}", dtype(a)?));
                    }
                }
                let mut v = vec![];
                for a in args {
                    v.push(self.scalar(a)?.int()?);
                }
                match (kind, v.as_slice()) {
                    (Not, [x]) => Scalar::Int(one() - x.clone()),
                    (And, [x, y]) => Scalar::Int(x.clone().min(y.clone())),
                    (Or, [x, y]) => Scalar::Int(x.clone().max(y.clone())),
                    (Xor, [x, y]) => Scalar::Int(Index::select(
                        Compare::Eq,
                        x.clone(),
                        y.clone(),
                        zero(),
                        one(),
                    )),
                    _ => {
                        return Err(format!(
                            "{kind} takes {} inputs",
                            if kind == Not { 1 } else { 2 }
                        ))
                    }
                }
            }
            Equal | Less | LessOrEqual | Greater | GreaterOrEqual => {
                arity(2)?;
                let (da, db) = (dtype(&args[0])?, dtype(&args[1])?);
                if da != db || da == DType::F32 || !(da.is_int() || da == DType::Bool) {
                    return Err(format!("{kind} of {da} and {db} stored as bool"));
                }
                let (x, y) = (self.scalar(&args[0])?.int()?, self.scalar(&args[1])?.int()?);
                let (cmp, a, b) = match kind {
                    Equal => (Compare::Eq, x, y),
                    Less => (Compare::Lt, x, y),
                    LessOrEqual => (Compare::Le, x, y),
                    Greater => (Compare::Lt, y, x),
                    _ => (Compare::Le, y, x),
                };
                Scalar::Int(Index::select(cmp, a, b, one(), zero()))
            }
            Where => {
                arity(3)?;
                if dtype(&args[0])? != DType::Bool || dtype(&args[1])? != dtype(&args[2])? {
                    return Err("Where needs a bool condition and branches of one dtype".into());
                }
                let c = self.scalar(&args[0])?.int()?;
                match (self.scalar(&args[1])?, self.scalar(&args[2])?) {
                    (Scalar::Int(then), Scalar::Int(otherwise)) => {
                        Scalar::Int(Index::select(Compare::Eq, c, zero(), otherwise, then))
                    }
                    (then, otherwise) => Scalar::F32(Value::select(
                        Compare::Eq,
                        Value::FromIndex(c),
                        Value::Const(0.0),
                        otherwise.f32()?,
                        then.f32()?,
                    )),
                }
            }
            Identity | Neg | Abs | Add | Sub | Mul | Max | Min => {
                let int = int_of(result).ok().filter(|_| result != DType::Bool);
                let int = int.ok_or_else(|| format!("{kind} of {result}"))?;
                let mut v = vec![];
                for a in args {
                    if dtype(a)? != result {
                        return Err(format!("{kind} of {} and {result}", dtype(a)?));
                    }
                    v.push(self.scalar(a)?.int()?);
                }
                let y = match (kind, v.as_slice()) {
                    (Identity, [x]) => x.clone(),
                    (Neg, [x]) => zero() - x.clone(),
                    (Abs, [x]) => Index::select(
                        Compare::Lt,
                        x.clone(),
                        zero(),
                        zero() - x.clone(),
                        x.clone(),
                    ),
                    (Add, [x, y]) => x.clone() + y.clone(),
                    (Sub, [x, y]) => x.clone() - y.clone(),
                    (Mul, [x, y]) => x.clone() * y.clone(),
                    (Max, [x, y]) => x.clone().max(y.clone()),
                    (Min, [x, y]) => x.clone().min(y.clone()),
                    _ => {
                        return Err(format!(
                            "{kind} takes {} inputs, got {}",
                            if matches!(kind, Identity | Neg | Abs) {
                                1
                            } else {
                                2
                            },
                            v.len()
                        ))
                    }
                };
                Scalar::Int(wrap_to(int, y))
            }
            other => return Err(format!("{other} of {result} has no elementwise kernel")),
        })
    }

    /// `v`, or a variable holding it when it is not a cheap load or constant.
    fn shared(&mut self, v: Value) -> Value {
        let cheap = match &v {
            Value::Load(..) | Value::Const(_) | Value::Var(_) => true,
            Value::Splat(x) => matches!(**x, Value::Load(..)),
            _ => false,
        };
        if cheap {
            return v;
        }
        self.vars.push(self.lanes);
        let var = self.vars.len() - 1;
        self.stmts.push(Stmt::set(var, v));
        Value::Var(var)
    }

    /// The value of argument `i` of `args`, checking that there are `n` arguments.
    fn args(&mut self, kind: OpKind, args: &[Expr], n: usize) -> Result<Vec<Value>, String> {
        if args.len() != n {
            return Err(format!("{kind} takes {n} inputs, got {}", args.len()));
        }
        args.iter().map(|a| self.expr(a)).collect()
    }

    fn op(&mut self, op: &Op, args: &[Expr]) -> Result<Value, String> {
        use OpKind::*;
        let kind = op.kind;
        let unary = |l: &mut Self, f: Unary| -> Result<Value, String> {
            Ok(l.args(kind, args, 1)?.remove(0).unary(f))
        };
        Ok(match kind {
            Identity => self.args(kind, args, 1)?.remove(0),
            Neg => unary(self, Unary::Neg)?,
            Abs => unary(self, Unary::Abs)?,
            Sqrt => unary(self, Unary::Sqrt)?,
            Exp => unary(self, Unary::Exp)?,
            Erf => unary(self, Unary::Erf)?,
            Floor => unary(self, Unary::Floor)?,
            Ceil => unary(self, Unary::Neg)?
                .unary(Unary::Floor)
                .unary(Unary::Neg),
            Reciprocal => Value::Const(1.0) / self.args(kind, args, 1)?.remove(0),
            Add | Sub | Mul | Div | Max | Min => {
                let [a, b]: [Value; 2] = self.args(kind, args, 2)?.try_into().expect("two");
                match kind {
                    Add => a + b,
                    Sub => a - b,
                    Mul => a * b,
                    Div => a / b,
                    Max => a.binary(Binary::Max, b),
                    _ => a.binary(Binary::Min, b),
                }
            }
            SwiGlu => {
                let [gate, up]: [Value; 2] = self.args(kind, args, 2)?.try_into().expect("two");
                self.activation(Activation::Silu, gate) * up
            }
            Pow => self.pow(args)?,
            Clip => self.clip(args)?,
            Where => self.select(args)?,
            other => {
                let act = Activation::of_op(op)?
                    .ok_or_else(|| format!("{other} has no elementwise kernel"))?;
                let x = self.args(kind, args, 1)?.remove(0);
                self.activation(act, x)
            }
        })
    }

    /// `act(x)`, with `x` in a variable unless it is cheap to repeat.
    fn activation(&mut self, act: Activation, x: Value) -> Value {
        let x = self.shared(x);
        activation(act, x)
    }

    /// `x ^ p` for a constant exponent with an exact short form.
    fn pow(&mut self, args: &[Expr]) -> Result<Value, String> {
        let [base, Expr::Const(p)] = args else {
            return Err("Pow needs two inputs, the exponent a constant".into());
        };
        let x = self.expr(base)?;
        let x = self.shared(x);
        Ok(match *p {
            0.0 => Value::Const(1.0),
            0.5 => x.unary(Unary::Sqrt),
            -0.5 => x.unary(Unary::Rsqrt),
            1.0 => x,
            -1.0 => Value::Const(1.0) / x,
            2.0 => x.clone() * x,
            3.0 => x.clone() * x.clone() * x,
            other => {
                return Err(format!(
                    "Pow with exponent {other} has no elementwise kernel"
                ))
            }
        })
    }

    /// `Where(cond, then, otherwise)` with `cond` a comparison or IsNaN of f32 expressions
    /// (comparisons with NaN are false, as in the interpreter).
    fn select(&mut self, args: &[Expr]) -> Result<Value, String> {
        let [Expr::Op(cond, operands), then, otherwise] = args else {
            return Err("Where needs 3 inputs, its condition computed in the kernel".into());
        };
        let (then, otherwise) = (self.expr(then)?, self.expr(otherwise)?);
        let kind = cond.kind;
        if kind == OpKind::IsNaN {
            let x = self.args(kind, operands, 1)?.remove(0);
            let x = self.shared(x);
            // x == x fails only for NaN.
            return Ok(Value::select(Compare::Eq, x.clone(), x, otherwise, then));
        }
        let [x, y]: [Value; 2] = self.args(kind, operands, 2)?.try_into().expect("two");
        Ok(match kind {
            OpKind::Equal => Value::select(Compare::Eq, x, y, then, otherwise),
            OpKind::Less => Value::select(Compare::Lt, x, y, then, otherwise),
            OpKind::LessOrEqual => Value::select(Compare::Le, x, y, then, otherwise),
            OpKind::Greater => Value::select(Compare::Lt, y, x, then, otherwise),
            OpKind::GreaterOrEqual => Value::select(Compare::Le, y, x, then, otherwise),
            other => {
                return Err(format!(
                    "Where's condition {other} has no elementwise kernel"
                ))
            }
        })
    }

    /// Clamps input 0 to the optional bounds in inputs 1 and 2 (NaN passes through).
    fn clip(&mut self, args: &[Expr]) -> Result<Value, String> {
        let (x, bounds) = args.split_first().ok_or("Clip needs an input")?;
        if bounds.len() > 2 {
            return Err(format!("Clip takes at most 3 inputs, got {}", args.len()));
        }
        let mut y = self.expr(x)?;
        for (k, bound) in bounds.iter().enumerate() {
            let (y0, b) = (self.shared(y), self.expr(bound)?);
            let b = self.shared(b);
            y = match k {
                // y < lo ? lo : y
                0 => Value::select(Compare::Lt, y0.clone(), b.clone(), b, y0),
                // hi < y ? hi : y
                _ => Value::select(Compare::Lt, b.clone(), y0.clone(), b, y0),
            };
        }
        Ok(y)
    }
}

/// The product of `dims` (1 for none).
pub(crate) fn product(dims: &[Dim]) -> Dim {
    dims.iter().fold(Dim::known(1), |acc, d| &acc * d)
}

/// `a + b`, folding zeros.
pub(crate) fn add(a: Index, b: Index) -> Index {
    match (a, b) {
        (Index::Const(0), x) | (x, Index::Const(0)) => x,
        (Index::Const(x), Index::Const(y)) => Index::Const(x + y),
        (a, b) => a + b,
    }
}

/// `a - b`, folding zeros.
pub(crate) fn sub(a: Index, b: Index) -> Index {
    match (a, b) {
        (x, Index::Const(0)) => x,
        (Index::Const(x), Index::Const(y)) => Index::Const(x - y),
        (a, b) => a - b,
    }
}

/// `a * b`, folding ones and zeros.
pub(crate) fn mul(a: Index, b: Index) -> Index {
    match (a, b) {
        (Index::Const(0), _) | (_, Index::Const(0)) => Index::Const(0),
        (Index::Const(1), x) | (x, Index::Const(1)) => x,
        (Index::Const(x), Index::Const(y)) => Index::Const(x * y),
        (a, b) => a * b,
    }
}

/// The sum of `terms` (0 for none).
pub(crate) fn sum(terms: impl IntoIterator<Item = Index>) -> Index {
    terms.into_iter().fold(Index::Const(0), add)
}

/// The row-major offset of the row at `coords` (the outer axes of `dims`; the last axis of
/// `dims` is the row).
pub(crate) fn row_major_offset(sizes: &mut Sizes, dims: &[Dim], coords: &[Index]) -> Index {
    sum(coords
        .iter()
        .enumerate()
        .map(|(a, c)| mul(c.clone(), sizes.product(&dims[a + 1..]))))
}

/// The first outer axis at least this long (statically) is the parallel axis on its own; a
/// shorter or symbolic one is flattened with the next.
const PARALLEL_ROWS: i64 = 16;

/// Loops over the row-major `outer` axes, the first one or two non-unit axes flattened into
/// the parallel axis (size parameters 0 and 1 are its range; the others loop fully), around
/// `body(sizes, coords, depth)`: `coords[a]` is the index of axis `a` (0 for unit axes) and
/// `depth` the nesting depth of loops the body opens. Returns the statements and the
/// parallel extent. Coordinates of a flattened pair are decoded once per parallel iteration
/// (into single-iteration loops), so bodies see plain loop counters.
pub(crate) fn nest(
    sizes: &mut Sizes,
    outer: &[Dim],
    body: impl FnOnce(&mut Sizes, &[Index], usize) -> Result<Vec<Stmt>, String>,
) -> Result<(Vec<Stmt>, Dim), String> {
    let live: Vec<usize> = (0..outer.len()).filter(|&a| !outer[a].is(1)).collect();
    let grouped = match live.as_slice() {
        [] => 0,
        [first, _, ..] if outer[*first].as_known().is_none_or(|v| v < PARALLEL_ROWS) => 2,
        _ => 1,
    };
    let mut coords = vec![Index::Const(0); outer.len()];
    let mut frames = vec![(Index::Size(0), Index::Size(1))];
    if grouped == 1 {
        coords[live[0]] = Index::Loop(0);
    } else if grouped == 2 {
        let second = sizes.index(&outer[live[1]]);
        let first = Index::Loop(0) / second.clone();
        let rest = Index::Loop(0) - Index::Loop(1) * second;
        frames.push((first.clone(), first + 1.into()));
        frames.push((rest.clone(), rest + 1.into()));
        (coords[live[0]], coords[live[1]]) = (Index::Loop(1), Index::Loop(2));
    }
    for &a in &live[grouped..] {
        coords[a] = Index::Loop(frames.len());
        frames.push((Index::Const(0), sizes.index(&outer[a])));
    }
    let mut stmts = body(sizes, &coords, frames.len())?;
    for (start, end) in frames.into_iter().rev() {
        stmts = vec![Stmt::for_range(start, end, stmts)];
    }
    let parallel: Vec<Dim> = live[..grouped].iter().map(|&a| outer[a].clone()).collect();
    Ok((stmts, product(&parallel)))
}

/// A single-iteration loop at `depth` binding `value` to `Index::Loop(depth)` for `body`, so
/// that an expensive index (divisions, i64 loads) is computed once, not per use.
pub(crate) fn bind(value: Index, body: Vec<Stmt>) -> Stmt {
    Stmt::for_range(value.clone(), value + 1.into(), body)
}

/// Loops over positions `start..end` with loops at `depth`, vectorised as `run` says: blocks
/// of `unroll` vectors, then single vectors, then a scalar tail. `emit(j, lanes)` builds the
/// statements for positions `j..j + lanes`.
pub(crate) fn vector_run(
    depth: usize,
    start: &Index,
    end: &Index,
    run: Vectors,
    mut emit: impl FnMut(Index, u8) -> Result<Vec<Stmt>, String>,
) -> Result<Vec<Stmt>, String> {
    let lanes = i64::from(run.lanes);
    let mut stmts = vec![];
    // The first position the loops so far leave out.
    let mut done = start.clone();
    let mut step = |done: &mut Index, width: i64, vectors: i64| -> Result<(), String> {
        let count = sub(end.clone(), done.clone()) / Index::Const(width * vectors);
        let at = add(
            done.clone(),
            Index::Loop(depth) * Index::Const(width * vectors),
        );
        let mut body = vec![];
        for v in 0..vectors {
            body.extend(emit(add(at.clone(), Index::Const(v * width)), width as u8)?);
        }
        let next = add(done.clone(), count.clone() * Index::Const(width * vectors));
        stmts.push(Stmt::for_range(0.into(), count, body));
        *done = next;
        Ok(())
    };
    if lanes > 1 && run.unroll > 1 {
        step(&mut done, lanes, i64::from(run.unroll))?;
    }
    if lanes > 1 {
        step(&mut done, lanes, 1)?;
    }
    stmts.push(Stmt::for_range(
        done,
        end.clone(),
        emit(Index::Loop(depth), 1)?,
    ));
    Ok(stmts)
}

/// Copies `len` elements from `src` (buffer, first element) to `dst`, with loops at `depth`,
/// vectorised as `run` says.
pub(crate) fn copy_run(
    depth: usize,
    dst: (usize, &Index),
    src: (usize, &Index),
    len: &Index,
    run: Vectors,
) -> Result<Vec<Stmt>, String> {
    vector_run(depth, &Index::Const(0), len, run, |j, lanes| {
        let from = (src.0, add(src.1.clone(), j.clone()));
        Ok(vec![run.copy((dst.0, add(dst.1.clone(), j)), from, lanes)])
    })
}

/// The [`Built`] of a kernel body.
pub(crate) fn finish(
    name: &str,
    args: Vec<Arg>,
    vars: Vec<u8>,
    body: Vec<Stmt>,
    sizes: Sizes,
    parallel: Dim,
) -> Built {
    Built {
        kernel: Kernel {
            name: name.to_string(),
            buffers: args.len(),
            sizes: 2 + sizes.count(),
            vars,
            body,
        },
        args,
        sizes: sizes.into_dims(),
        parallel,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::templates::testing::{run, run_on_every_backend};
    use kiln_ir::interp::{eval_op, Bindings};
    use kiln_ir::{Attr, Attrs, Tensor};

    /// A small deterministic PRNG (xorshift64*).
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        /// A generator starting from exactly `state` (non-zero).
        pub(crate) fn from_state(state: u64) -> Rng {
            Rng(state)
        }

        /// Uniform in [-1, 1).
        pub(crate) fn uniform(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }

        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform in `0..n`.
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() >> 33) as usize % n
        }

        /// One of `items`.
        pub(crate) fn pick<T: Clone>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())].clone()
        }

        /// A random f32 tensor of `shape` with values in [-3, 3).
        pub(crate) fn tensor(&mut self, shape: &[usize]) -> Tensor {
            let n = shape.iter().product();
            let values = (0..n)
                .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 6.0 - 3.0)
                .collect();
            Tensor::from_vec(shape, values).unwrap()
        }
    }

    /// The dim sizes tests draw from.
    pub(crate) const DIMS: [usize; 5] = [1, 3, 4, 5, 17];

    /// Vectorisations tests build with: at most 4 lanes (Cranelift's), and with the LLVM
    /// backend, 8 and 16; each unrolled or not.
    pub(crate) fn vector_schedules() -> Vec<Schedule> {
        let mut all = vec![
            Schedule::default(),
            Schedule::default().with("lanes", 1),
            Schedule::default().with("unroll", 3),
        ];
        if cfg!(feature = "llvm") {
            all.push(Schedule::default().with("lanes", 16));
            all.push(Schedule::default().with("lanes", 8).with("unroll", 2));
        }
        all
    }

    /// `shape` with its symbols bound.
    pub(crate) fn concrete(shape: &[Dim], bindings: &Bindings) -> Vec<usize> {
        shape
            .iter()
            .map(|d| d.eval(bindings).unwrap() as usize)
            .collect()
    }

    /// A static shape as dims.
    pub(crate) fn dims(shape: &[usize]) -> Vec<Dim> {
        shape.iter().map(|&d| Dim::from(d)).collect()
    }

    /// Asserts `got` equals `want` within 1e-4 relative to max(1, |want|) (NaN equals NaN,
    /// an infinity only itself).
    pub(crate) fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
        assert_eq!(got.shape(), want.shape(), "{what}: shape");
        let (g, w) = (got.to_f32_array(), want.to_f32_array());
        for (i, (g, w)) in g.iter().zip(w.iter()).enumerate() {
            let same =
                (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-4 * w.abs().max(1.0);
            assert!(same, "{what}: element {i}: got {g}, want {w}");
        }
    }

    /// Runs `built` with chunks 1 and 3 and compares its single output with `want`.
    pub(crate) fn check(built: &Built, inputs: &[Tensor], want: &Tensor, b: &Bindings, what: &str) {
        for chunks in [1, 3] {
            let got = run(built, inputs, &[want.shape().to_vec()], b, chunks);
            assert_close(&got[0], want, &format!("{what}, chunks {chunks}"));
        }
    }

    /// The interpreter's result for `op` on `inputs` (output `k`).
    pub(crate) fn reference(op: &Op, inputs: &[&Tensor], k: usize) -> Tensor {
        let args: Vec<Option<&Tensor>> = inputs.iter().copied().map(Some).collect();
        eval_op(op, &args, &Bindings::new()).unwrap().remove(k)
    }

    /// The expression on the interpreter, op by op, broadcast to `shape`.
    fn interpret(expr: &Expr, inputs: &[Tensor], shape: &[usize]) -> Tensor {
        let value = eval_expr(expr, inputs);
        let target = shape.iter().map(|&d| d as i64).collect();
        let target = Tensor::from_vec(&[shape.len()], target).unwrap();
        reference(&Op::plain(OpKind::Expand), &[&value, &target], 0)
    }

    fn eval_expr(expr: &Expr, inputs: &[Tensor]) -> Tensor {
        match expr {
            Expr::Input(i) => inputs[*i].clone(),
            Expr::Const(c) => Tensor::scalar(*c),
            Expr::Op(op, args) => {
                let args: Vec<Tensor> = args.iter().map(|a| eval_expr(a, inputs)).collect();
                reference(op, &args.iter().collect::<Vec<_>>(), 0)
            }
        }
    }

    fn op(kind: OpKind, args: Vec<Expr>) -> Expr {
        Expr::op(kind, args)
    }

    fn gelu(approximate: &str, x: Expr) -> Expr {
        let attrs = Attrs::from_pairs(&[("approximate", Attr::Str(approximate.into()))]);
        Expr::Op(Op::new(OpKind::Gelu, attrs), vec![x])
    }

    /// Builds `expr` for `shapes` → `output` (symbolic), runs it on random inputs of the bound
    /// shapes and compares with the interpreter.
    fn check_expr(rng: &mut Rng, expr: &Expr, shapes: &[Vec<Dim>], output: &[Dim], b: &Bindings) {
        let schedule = rng.pick(&vector_schedules());
        let what = format!("{expr:?} on {shapes:?} -> {output:?} with {b:?}, {schedule:?}");
        let built = elementwise("k", expr, shapes, output, &schedule).expect(&what);
        let inputs: Vec<Tensor> = shapes.iter().map(|s| rng.tensor(&concrete(s, b))).collect();
        let want = interpret(expr, &inputs, &concrete(output, b));
        check(&built, &inputs, &want, b, &what);
    }

    /// Fused expressions of up to three inputs, and how many inputs each reads.
    fn expressions() -> Vec<(Expr, usize)> {
        use Expr::{Const, Input};
        let (a, b, c) = (Input(0), Input(1), Input(2));
        vec![
            (op(OpKind::Add, vec![a.clone(), b.clone()]), 2),
            (op(OpKind::Identity, vec![a.clone()]), 1),
            (
                op(
                    OpKind::Add,
                    vec![op(OpKind::Mul, vec![a.clone(), b.clone()]), c.clone()],
                ),
                3,
            ),
            (
                op(
                    OpKind::Div,
                    vec![
                        op(OpKind::Sub, vec![a.clone(), b.clone()]),
                        op(
                            OpKind::Add,
                            vec![op(OpKind::Abs, vec![c.clone()]), Const(1.0)],
                        ),
                    ],
                ),
                3,
            ),
            (
                op(
                    OpKind::Sub,
                    vec![
                        op(OpKind::Max, vec![a.clone(), b.clone()]),
                        op(OpKind::Min, vec![b.clone(), c.clone()]),
                    ],
                ),
                3,
            ),
            (op(OpKind::SwiGlu, vec![a.clone(), b.clone()]), 2),
            (gelu("tanh", op(OpKind::Add, vec![a.clone(), b.clone()])), 2),
            (
                op(
                    OpKind::Add,
                    vec![
                        op(OpKind::Sigmoid, vec![op(OpKind::Mul, vec![a.clone(), b])]),
                        op(OpKind::Tanh, vec![c]),
                    ],
                ),
                3,
            ),
            (
                op(OpKind::Mul, vec![op(OpKind::Relu, vec![a]), Const(0.5)]),
                1,
            ),
        ]
    }

    #[test]
    fn random_broadcasts_match_the_interpreter() {
        let mut rng = Rng::new(1);
        let exprs = expressions();
        for case in 0..60 {
            let rank = 1 + rng.below(4);
            let mut bindings = Bindings::new();
            let output: Vec<Dim> = (0..rank)
                .map(|a| {
                    let d = rng.pick(&DIMS);
                    if rng.below(3) == 0 {
                        let s = format!("s{a}");
                        bindings.insert(s.clone(), d as i64);
                        Dim::sym(&s)
                    } else {
                        Dim::from(d)
                    }
                })
                .collect();
            let (expr, n) = exprs[case % exprs.len()].clone();
            let shapes: Vec<Vec<Dim>> = (0..n)
                .map(|_| {
                    let r = rng.below(rank + 1);
                    output[rank - r..]
                        .iter()
                        .map(|d| {
                            if rng.below(3) == 0 {
                                Dim::known(1)
                            } else {
                                d.clone()
                            }
                        })
                        .collect()
                })
                .collect();
            check_expr(&mut rng, &expr, &shapes, &output, &bindings);
        }
    }

    #[test]
    fn named_broadcasts_match_the_interpreter() {
        let mut rng = Rng::new(2);
        let add = op(OpKind::Add, vec![Expr::Input(0), Expr::Input(1)]);
        let none = Bindings::new();
        for (m, n) in [(1, 1), (3, 5), (17, 4), (5, 17)] {
            // [1, N] + [M, 1], [rows, cols] + [cols], scalar + [M, N].
            let out = dims(&[m, n]);
            check_expr(&mut rng, &add, &[dims(&[1, n]), dims(&[m, 1])], &out, &none);
            check_expr(&mut rng, &add, &[dims(&[m, n]), dims(&[n])], &out, &none);
            check_expr(&mut rng, &add, &[vec![], dims(&[m, n])], &out, &none);
            // [C, 1, 1] * [C, H, W]
            let out = dims(&[m, n, 3]);
            let mul = op(OpKind::Mul, vec![Expr::Input(0), Expr::Input(1)]);
            check_expr(
                &mut rng,
                &mul,
                &[dims(&[m, 1, 1]), out.clone()],
                &out,
                &none,
            );
            // An expand: the output is larger than every input.
            let id = op(OpKind::Identity, vec![Expr::Input(0)]);
            check_expr(&mut rng, &id, &[dims(&[n])], &dims(&[m, 2, n]), &none);
        }
        // Symbolic sequence lengths, including 1, with a [s, 1] column and a [5] bias.
        let (s, t) = (Dim::sym("s"), Dim::sym("t"));
        for (sv, tv) in [(1, 1), (1, 7), (3, 5), (17, 2)] {
            let b = Bindings::from([("s".to_string(), sv), ("t".to_string(), tv)]);
            let out = vec![s.clone(), t.clone()];
            check_expr(
                &mut rng,
                &add,
                &[out.clone(), vec![s.clone(), Dim::known(1)]],
                &out,
                &b,
            );
            let out = vec![s.clone(), Dim::known(5)];
            check_expr(&mut rng, &add, &[out.clone(), dims(&[5])], &out, &b);
            let product = &s * &t;
            let out = vec![product.clone(), Dim::known(4)];
            check_expr(&mut rng, &add, &[out.clone(), out.clone()], &out, &b);
        }
        // No input at all: a constant fill.
        let fill = op(OpKind::Add, vec![Expr::Const(2.0), Expr::Const(0.5)]);
        check_expr(&mut rng, &fill, &[], &dims(&[3, 5]), &none);
    }

    #[test]
    fn every_op_matches_the_interpreter() {
        use Expr::{Const, Input};
        let mut rng = Rng::new(3);
        let (x, y) = (Input(0), Input(1));
        let mut exprs: Vec<Expr> = [
            OpKind::Identity,
            OpKind::Neg,
            OpKind::Abs,
            OpKind::Sqrt,
            OpKind::Reciprocal,
            OpKind::Exp,
            OpKind::Erf,
            OpKind::Tanh,
            OpKind::Sigmoid,
            OpKind::Relu,
            OpKind::Floor,
            OpKind::Ceil,
            OpKind::Silu,
        ]
        .into_iter()
        .map(|k| op(k, vec![x.clone()]))
        .collect();
        for k in [
            OpKind::Add,
            OpKind::Sub,
            OpKind::Mul,
            OpKind::Div,
            OpKind::Max,
            OpKind::Min,
            OpKind::SwiGlu,
        ] {
            exprs.push(op(k, vec![x.clone(), y.clone()]));
        }
        exprs.push(gelu("none", x.clone()));
        exprs.push(gelu("tanh", x.clone()));
        for p in [0.0, 0.5, -0.5, 1.0, -1.0, 2.0, 3.0] {
            exprs.push(op(OpKind::Pow, vec![x.clone(), Const(p)]));
        }
        exprs.push(op(OpKind::Clip, vec![x.clone()]));
        exprs.push(op(OpKind::Clip, vec![x.clone(), Const(-0.5)]));
        exprs.push(op(OpKind::Clip, vec![x.clone(), Const(-1.0), Const(2.0)]));
        exprs.push(op(
            OpKind::Clip,
            vec![x.clone(), Const(f32::NEG_INFINITY), Const(0.25)],
        ));
        // Where with conditions computed in the kernel; sqrt of the negative inputs is NaN.
        let root = op(OpKind::Sqrt, vec![x.clone()]);
        let is_nan = op(OpKind::IsNaN, vec![root.clone()]);
        exprs.push(op(OpKind::Where, vec![is_nan, Const(0.5), root.clone()]));
        for k in [
            OpKind::Equal,
            OpKind::Less,
            OpKind::LessOrEqual,
            OpKind::Greater,
            OpKind::GreaterOrEqual,
        ] {
            let negated = op(OpKind::Neg, vec![y.clone()]);
            let compared = op(k, vec![root.clone(), y.clone()]);
            exprs.push(op(OpKind::Where, vec![compared, x.clone(), negated]));
            let equal_often = op(k, vec![x.clone(), op(OpKind::Floor, vec![x.clone()])]);
            exprs.push(op(OpKind::Where, vec![equal_often, x.clone(), y.clone()]));
        }
        let shapes = [dims(&[3, 17]), dims(&[17])];
        for expr in &exprs {
            check_expr(&mut rng, expr, &shapes, &shapes[0], &Bindings::new());
        }
    }

    #[test]
    fn unsupported_expressions_and_shapes_are_errors() {
        use Expr::{Const, Input};
        let s = [dims(&[4])];
        let err = |e: &Expr, shapes: &[Vec<Dim>], out: &[Dim]| {
            elementwise("k", e, shapes, out, &Schedule::default()).unwrap_err()
        };
        assert!(err(&op(OpKind::Log, vec![Input(0)]), &s, &s[0]).contains("Log"));
        let is_nan = op(OpKind::IsNaN, vec![Input(0)]);
        assert!(err(&is_nan, &s, &s[0]).contains("IsNaN"));
        let outside = op(OpKind::Where, vec![Input(0), Input(0), Input(0)]);
        assert!(err(&outside, &s, &s[0]).contains("condition"));
        assert!(err(&Input(1), &s, &s[0]).contains("input 1"));
        let pow = op(OpKind::Pow, vec![Input(0), Const(2.5)]);
        assert!(err(&pow, &s, &s[0]).contains("2.5"));
        assert!(err(&op(OpKind::Pow, vec![Input(0), Input(0)]), &s, &s[0]).contains("Pow"));
        assert!(err(&op(OpKind::Add, vec![Input(0)]), &s, &s[0]).contains("Add"));
        assert!(err(&Input(0), &[dims(&[3])], &s[0]).contains("broadcast"));
        assert!(err(&Input(0), &[dims(&[1, 4])], &s[0]).contains("rank"));
        assert!(err(&Input(0), &[vec![Dim::unknown()]], &[Dim::unknown()]).contains("unknown"));
        let bad = Expr::Op(
            Op::new(
                OpKind::Gelu,
                Attrs::from_pairs(&[("approximate", Attr::Str("x".into()))]),
            ),
            vec![Input(0)],
        );
        assert!(err(&bad, &s, &s[0]).contains("GELU"));
        let wide = Schedule::default().with("unroll", 9);
        let e = elementwise("k", &Input(0), &s, &s[0], &wide).unwrap_err();
        assert!(e.contains("elementwise.unroll = 9"), "{e}");
    }

    #[test]
    fn rope_rotate_half_matches_the_interpreter() {
        let mut rng = Rng::new(4);
        let op = Op::plain(OpKind::RopeRotateHalf);
        let s = Dim::sym("s");
        for d in [2, 4, 6, 10, 34] {
            for sv in [1, 3, 5] {
                let b = Bindings::from([("s".to_string(), sv)]);
                let x = vec![
                    Dim::from(2usize),
                    Dim::from(3usize),
                    s.clone(),
                    Dim::known(d),
                ];
                let tables = [
                    vec![s.clone(), Dim::known(d)],
                    vec![Dim::from(2usize), Dim::known(1), s.clone(), Dim::known(d)],
                    vec![Dim::known(1), Dim::known(1), s.clone(), Dim::known(d)],
                    vec![s.clone(), Dim::known(1)],
                ];
                for table in &tables {
                    let schedule = rng.pick(&vector_schedules());
                    let what = format!("x {x:?}, tables {table:?}, s = {sv}, {schedule:?}");
                    let built = rope_rotate_half("rope", &x, table, table, &schedule).expect(&what);
                    let inputs = [
                        rng.tensor(&concrete(&x, &b)),
                        rng.tensor(&concrete(table, &b)),
                        rng.tensor(&concrete(table, &b)),
                    ];
                    let want = reference(&op, &inputs.iter().collect::<Vec<_>>(), 0);
                    check(&built, &inputs, &want, &b, &what);
                }
            }
        }
        let d = Schedule::default();
        assert!(rope_rotate_half("rope", &dims(&[3, 5]), &dims(&[5]), &dims(&[5]), &d).is_err());
        assert!(rope_rotate_half("rope", &[], &[], &[], &d).is_err());
    }

    /// A random tensor of `dtype` and `shape`: integers mostly small (both signs), some near
    /// the type's limits, so that wrapping and rounding show; bools at random.
    pub(crate) fn typed_tensor(rng: &mut Rng, dtype: DType, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let int = |rng: &mut Rng| -> i64 {
            match rng.below(8) {
                0 => i64::MAX - rng.below(3) as i64,
                1 => i64::MIN + rng.below(3) as i64,
                2 => (1i64 << 60) + (rng.next() >> 4) as i64,
                _ => rng.below(9) as i64 - 4,
            }
        };
        match dtype {
            DType::F32 => rng.tensor(shape),
            DType::Bool => {
                Tensor::from_vec(shape, (0..n).map(|_| rng.below(2) == 1).collect()).unwrap()
            }
            DType::I64 => Tensor::from_vec(shape, (0..n).map(|_| int(rng)).collect()).unwrap(),
            other => Tensor::from_vec(shape, (0..n).map(|_| int(rng)).collect::<Vec<i64>>())
                .unwrap()
                .cast(other),
        }
    }

    fn cast(to: &str, x: Expr) -> Expr {
        let attrs = Attrs::from_pairs(&[("to", Attr::Str(to.into()))]);
        Expr::Op(Op::new(OpKind::Cast, attrs), vec![x])
    }

    /// Input shapes, the output shape and the bindings of one test layout.
    type Layout3<'b> = (Vec<Vec<Dim>>, Vec<Dim>, &'b Bindings);

    #[test]
    fn integer_and_boolean_ops_match_the_interpreter() {
        use DType::{Bool, F32, I32, I64, I8, U8};
        use Expr::Input;
        let (a, b, c) = (Input(0), Input(1), Input(2));
        let mut cases: Vec<(Expr, Vec<DType>, DType)> = vec![];
        for k in [
            OpKind::Equal,
            OpKind::Less,
            OpKind::LessOrEqual,
            OpKind::Greater,
            OpKind::GreaterOrEqual,
        ] {
            for t in [I64, I32, U8, Bool] {
                cases.push((op(k, vec![a.clone(), b.clone()]), vec![t, t], Bool));
            }
        }
        for k in [OpKind::And, OpKind::Or, OpKind::Xor] {
            cases.push((op(k, vec![a.clone(), b.clone()]), vec![Bool, Bool], Bool));
        }
        cases.push((op(OpKind::Not, vec![a.clone()]), vec![Bool], Bool));
        for k in [
            OpKind::Add,
            OpKind::Sub,
            OpKind::Mul,
            OpKind::Max,
            OpKind::Min,
        ] {
            for t in [I64, I32, I8] {
                cases.push((op(k, vec![a.clone(), b.clone()]), vec![t, t], t));
            }
        }
        for k in [OpKind::Neg, OpKind::Abs, OpKind::Identity] {
            for t in [I64, I32, U8] {
                cases.push((op(k, vec![a.clone()]), vec![t], t));
            }
        }
        for (from, to) in [
            (I64, "bool"),
            (I64, "i32"),
            (I64, "i8"),
            (I64, "u8"),
            (I64, "f32"),
            (I32, "i64"),
            (I32, "f32"),
            (U8, "i8"),
            (Bool, "f32"),
            (Bool, "i64"),
            (F32, "f32"),
        ] {
            let to_dtype: DType = to.parse().unwrap();
            cases.push((cast(to, a.clone()), vec![from], to_dtype));
        }
        // A wrapped intermediate: a cast to i8 compared with an i8 input.
        let narrowed = cast("i8", a.clone());
        cases.push((
            op(OpKind::Less, vec![narrowed, b.clone()]),
            vec![I64, I8],
            Bool,
        ));
        for t in [I64, I32, Bool, F32] {
            cases.push((
                op(OpKind::Where, vec![a.clone(), b.clone(), c.clone()]),
                vec![Bool, t, t],
                t,
            ));
        }
        // The mask of a dynamo export: (j <= i) & padding, then 0 or -inf as f32.
        let causal = op(OpKind::LessOrEqual, vec![a.clone(), b.clone()]);
        let masked = op(OpKind::And, vec![causal, c.clone()]);
        let f = |v: f32| Expr::Const(v);
        let mask = op(OpKind::Where, vec![masked, f(0.0), f(f32::NEG_INFINITY)]);
        cases.push((mask.clone(), vec![I64, I64, Bool], F32));
        // f32 arithmetic over an integer cast and a bool-selected branch.
        let sum = op(
            OpKind::Add,
            vec![
                cast("f32", a.clone()),
                op(OpKind::Where, vec![c.clone(), b.clone(), f(1.5)]),
            ],
        );
        cases.push((sum, vec![I64, F32, Bool], F32));

        let mut rng = Rng::new(11);
        let (s, none) = (Dim::sym("s"), Bindings::new());
        let with_s = Bindings::from([("s".to_string(), 5)]);
        for (expr, dtypes, out_dtype) in &cases {
            // Same shapes; a column against a row (broadcast both ways); symbolic.
            let layouts: Vec<Layout3> = vec![
                (vec![dims(&[3, 4]); dtypes.len()], dims(&[3, 4]), &none),
                (
                    (0..dtypes.len())
                        .map(|i| if i == 0 { dims(&[4, 1]) } else { dims(&[5]) })
                        .collect(),
                    dims(&[4, 5]),
                    &none,
                ),
                (
                    (0..dtypes.len())
                        .map(|i| {
                            if i == 1 {
                                vec![s.clone(), Dim::known(1)]
                            } else {
                                vec![s.clone()]
                            }
                        })
                        .collect(),
                    vec![s.clone(), s.clone()],
                    &with_s,
                ),
            ];
            for (shapes, output, bindings) in layouts {
                let schedule = rng.pick(&vector_schedules());
                let what = format!("{expr:?} of {dtypes:?} on {shapes:?}, {schedule:?}");
                let built =
                    typed_elementwise("k", expr, &shapes, dtypes, &output, *out_dtype, &schedule)
                        .expect(&what);
                let inputs: Vec<Tensor> = shapes
                    .iter()
                    .zip(dtypes)
                    .map(|(s, &t)| typed_tensor(&mut rng, t, &concrete(s, bindings)))
                    .collect();
                let want = interpret(expr, &inputs, &concrete(&output, bindings));
                assert_eq!(want.dtype(), *out_dtype, "{what}");
                for chunks in [1, 3] {
                    let blank = Tensor::zeros(*out_dtype, want.shape());
                    let got = run_on_every_backend(&built, &inputs, vec![blank], bindings, chunks);
                    if *out_dtype == F32 {
                        assert_close(&got[0], &want, &what);
                    } else {
                        assert_eq!(got[0], want, "{what}, chunks {chunks}");
                    }
                }
            }
        }
    }

    #[test]
    fn typed_kernels_refuse_what_they_cannot_compute() {
        use DType::{Bool, F16, F32, I64};
        use Expr::Input;
        let (a, b) = (Input(0), Input(1));
        let shape = [dims(&[3]), dims(&[3])];
        let d = Schedule::default();
        let refused = |e: &Expr, t: &[DType], out: DType| {
            typed_elementwise("k", e, &shape[..t.len()], t, &dims(&[3]), out, &d).unwrap_err()
        };
        // A comparison of f32 values stored as bool, integer division, f16, f32 to int.
        let lt = op(OpKind::Less, vec![a.clone(), b.clone()]);
        assert!(refused(&lt, &[F32, F32], Bool).contains("stored as bool"));
        assert!(refused(
            &op(OpKind::Div, vec![a.clone(), b.clone()]),
            &[I64, I64],
            I64
        )
        .contains("Div"));
        assert!(refused(&op(OpKind::Neg, vec![a.clone()]), &[F16], F16).contains("f16"));
        assert!(refused(&cast("i64", a.clone()), &[F32], I64).contains("f32"));
        assert!(refused(
            &op(OpKind::And, vec![a.clone(), b.clone()]),
            &[I64, I64],
            Bool
        )
        .contains("And"));
    }
}

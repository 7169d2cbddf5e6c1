//! Row-reduction kernels: Softmax, LogSoftmax, LayerNormalization, RMSNormalization /
//! SimplifiedLayerNormalization, onnxruntime's SkipLayerNormalization /
//! SkipSimplifiedLayerNormalization and ReduceSum / ReduceMean / ReduceMax / ReduceMin.
//!
//! X is viewed as a row-major `rows x cols` matrix: `cols` is the product of the dims from
//! `axis` on (one row of the reduction), `rows` the product of the dims before it; both may be
//! symbolic. The rows are the parallel axis. Each row is processed by a few passes over its
//! elements, each pass vectorised on f32x4 with independent vector accumulators, a horizontal
//! [`Value::Reduce`] and a scalar tail:
//! - Softmax: max; `e = exp(x - max)` stored into Y while summing; `Y *= 1 / sum` (3 passes).
//! - LogSoftmax: max; sum of `exp(x - max)`; `Y = (x - max) - ln(sum)` (3 passes).
//! - LayerNorm: mean; sums of the deviations and of their squares (the corrected two-pass
//!   variance: accurate for rows with large offsets, where `E[x²] - mean²` cancels, whatever the
//!   rounding of the first mean); `Y` (3 passes).
//! - RMSNorm: mean of squares; `Y` (2 passes).
//! - Skip variants: the first pass forms `s = input + skip (+ bias)`, stores it into Y (and into
//!   the sum output when requested) and accumulates; the later passes read and rewrite Y.
//! - Reduce: one pass, one value per row. A reduction over a block of axes that the last
//!   `kept` dims follow (sentence-transformers' mean pooling sums over the sequence of
//!   `[batch, seq, hidden]`) views X as `rows x cols x inner` instead: per row, the `inner`
//!   outputs are computed `lanes` at a time, each a vector accumulator summing the `cols`
//!   contiguous vectors above it (then a scalar tail).
//!
//! Schedule parameters:
//! - `lanes` (default 4): 4, 8 or 16 runs the passes on vectors of that many lanes with a
//!   scalar tail; 1 is scalar.
//! - `unroll` (default 4, 1..=8): vectors per loop iteration, each with its own accumulators in a
//!   reducing pass; more hides the add latency and sums in more partial sums.

use super::{Arg, Built, ConstantData, Sizes};
use crate::kir::{Binary, Compare, Index, Kernel, Stmt, Unary, Value};
use crate::schedule::{lanes_or_scalar, range, Param, Space};
use crate::Schedule;
use kiln_ir::Dim;
use std::sync::Arc;

/// The reduction of a `Reduce*` op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    /// ReduceSum.
    Sum,
    /// ReduceMean (NaN for an empty row, like the interpreter).
    Mean,
    /// ReduceMax (NaN-propagating; -inf for an empty row).
    Max,
    /// ReduceMin (NaN-propagating; +inf for an empty row).
    Min,
}

/// The op of a row-reduction kernel, with its ONNX inputs (positions in [`RowSpec::inputs`]) and
/// the outputs it writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowOp {
    /// Softmax over the last axis: input X; output 0 Y.
    Softmax,
    /// LogSoftmax over the last axis: input X; output 0 Y.
    LogSoftmax,
    /// LayerNormalization: inputs X, scale, bias?; output 0 Y (no mean / inv-std outputs).
    LayerNorm {
        /// Added to the variance.
        epsilon: f32,
    },
    /// RMSNormalization / SimplifiedLayerNormalization: inputs X, scale; output 0 Y.
    RmsNorm {
        /// Added to the mean square.
        epsilon: f32,
    },
    /// onnxruntime's SkipLayerNormalization (inputs input, skip, gamma, beta?, bias?) or, with
    /// `rms`, SkipSimplifiedLayerNormalization (inputs input, skip, gamma, bias?): output 0 Y
    /// and, with [`RowSpec::sum_output`], output 3 `input + skip (+ bias)`.
    SkipLayerNorm {
        /// Added to the variance (or mean square).
        epsilon: f32,
        /// RMS normalisation (no centring, no beta).
        rms: bool,
    },
    /// ReduceSum / Mean / Max / Min over the axes `axis..rank - kept`: input X; output 0
    /// holds, per row, one value for each element of the last `kept` dims, row-major (its
    /// `keepdims` shape is the caller's concern).
    Reduce {
        /// Which reduction.
        kind: ReduceKind,
        /// The trailing dims after the reduced ones (0: the reduction is over the last dims).
        kept: usize,
    },
}

/// One input of the op: its shape, and its values when they are known at compile time (they
/// are then baked into the kernel as an [`Arg::Constant`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RowInput {
    /// The shape.
    pub shape: Vec<Dim>,
    /// The values (row-major), for a constant input.
    pub values: Option<Arc<[f32]>>,
}

impl RowInput {
    /// An input read at run time.
    pub fn new(shape: Vec<Dim>) -> RowInput {
        RowInput {
            shape,
            values: None,
        }
    }

    /// A constant input.
    pub fn constant(shape: Vec<Dim>, values: Arc<[f32]>) -> RowInput {
        RowInput {
            shape,
            values: Some(values),
        }
    }
}

/// What a row-reduction kernel computes.
///
/// Buffers are bound by ONNX position: [`Arg::Input`]`(i)` is the op's input `i` (absent
/// optional inputs are never bound, so the caller may pass anything there) and
/// [`Arg::Output`]`(i)` its output `i` (0 = Y, 3 = the skip sum).
#[derive(Clone, Debug, PartialEq)]
pub struct RowSpec {
    /// The op.
    pub op: RowOp,
    /// The op's inputs in ONNX order (`None` for an absent optional input); input 0 is X.
    pub inputs: Vec<Option<RowInput>>,
    /// The first reduced axis of X (normalised to `0..rank`): rows are the dims before it,
    /// `cols` the product of the dims from it on. Softmax needs every dim after it to be 1
    /// (ONNX opset 13 normalises one axis); the skip norms need the last axis.
    pub axis: usize,
    /// Whether a skip norm also writes `input + skip (+ bias)` as output 3.
    pub sum_output: bool,
}

/// Builds the kernel of `spec`. Errors name what is not supported (parameters that are not
/// exactly one value per column, skips that are not a trailing block of X, unknown dims, bad
/// axes or schedules), so the caller can fall back to the interpreter.
/// The template's parameters.
pub fn space() -> Space {
    Space {
        template: "rows",
        version: 1,
        params: vec![
            lanes_or_scalar(),
            Param {
                name: "unroll",
                doc: "vectors per iteration of the row loops (independent accumulators)",
                values: |_| range(1, 8),
                default: |_| 4,
            },
        ],
    }
}

pub fn rows(spec: &RowSpec, schedule: &Schedule) -> Result<Built, String> {
    let mut k = RowKernel::new(spec, schedule)?;
    let (name, body) = match spec.op {
        RowOp::Softmax => ("rows_softmax", k.softmax()?),
        RowOp::LogSoftmax => ("rows_log_softmax", k.log_softmax()?),
        RowOp::LayerNorm { epsilon } => {
            let scale = k.param(1, "scale")?;
            let bias = k.opt_param(2, "bias")?;
            let norm = Norm::new(true, epsilon, scale, bias);
            ("rows_layer_norm", k.normalize(&norm, None)?)
        }
        RowOp::RmsNorm { epsilon } => {
            let norm = Norm::new(false, epsilon, k.param(1, "scale")?, None);
            ("rows_rms_norm", k.normalize(&norm, None)?)
        }
        RowOp::SkipLayerNorm { epsilon, rms } => {
            if spec.axis + 1 != k.rank {
                return Err("skip layer norms normalise the last axis only".into());
            }
            let (beta, bias_at) = if rms {
                (None, 3)
            } else {
                (k.opt_param(3, "beta")?, 4)
            };
            let norm = Norm::new(!rms, epsilon, k.param(2, "gamma")?, beta);
            let skip = k.skip(bias_at)?;
            let name = if rms {
                "rows_skip_rms_norm"
            } else {
                "rows_skip_layer_norm"
            };
            (name, k.normalize(&norm, Some(&skip))?)
        }
        RowOp::Reduce { kind, kept: 0 } => ("rows_reduce", k.reduce(kind)?),
        RowOp::Reduce { kind, kept } => ("rows_reduce_columns", k.reduce_columns(kind, kept)?),
    };
    Ok(k.finish(name, body))
}

/// A kernel under construction: its buffers, size parameters and variables.
struct RowKernel<'a> {
    spec: &'a RowSpec,
    rank: usize,
    lanes: u8,
    unroll: i64,
    /// The row length as an index (a constant or a size parameter) and as a dim.
    cols: Index,
    cols_dim: Dim,
    /// The number of rows (the parallel extent).
    rows: Dim,
    args: Vec<Arg>,
    sizes: Sizes,
    vars: Vec<u8>,
    /// A scratch variable of each width (1, `lanes`) for a value used twice in a pass body.
    temps: [usize; 2],
}

/// The element a pass body works on.
struct At {
    /// Row-major element index in X (row * cols + col).
    elem: Index,
    /// Column in the row.
    col: Index,
    /// Elements at once: 1 or the kernel's `lanes`.
    lanes: u8,
    /// The scratch variable of this width.
    temp: usize,
    /// The pass's accumulators of this width, one per reduction.
    accs: Vec<usize>,
}

impl At {
    /// `acc = f(acc)` for accumulator `i` of the pass.
    fn update(&self, i: usize, f: impl FnOnce(Value) -> Value) -> Stmt {
        let a = self.accs[i];
        Stmt::set(a, f(Value::Var(a)))
    }
}

/// The accumulators of a reducing pass: one per unrolled vector and one for the scalar tail.
struct Fold {
    op: Binary,
    /// The lanes of the vector accumulators.
    lanes: u8,
    vectors: Vec<usize>,
    scalar: usize,
}

impl Fold {
    fn identity(&self) -> f32 {
        identity(self.op)
    }

    /// Every accumulator set to the identity of the reduction.
    fn init(&self) -> Vec<Stmt> {
        let id = Value::Const(self.identity());
        let all = self.vectors.iter().chain([&self.scalar]);
        all.map(|&v| Stmt::set(v, id.clone())).collect()
    }

    /// The reduction of the whole row (a scalar).
    fn total(&self) -> Value {
        let vector = self
            .vectors
            .iter()
            .map(|&v| Value::Var(v))
            .reduce(|a, b| a.binary(self.op, b));
        match vector {
            Some(v) => v
                .reduce(self.op, self.lanes)
                .binary(self.op, Value::Var(self.scalar)),
            None => Value::Var(self.scalar),
        }
    }
}

/// The normalisation of a norm op: centring, epsilon and the per-column scale and bias buffers.
struct Norm {
    center: bool,
    epsilon: f32,
    scale: usize,
    bias: Option<usize>,
}

impl Norm {
    fn new(center: bool, epsilon: f32, scale: usize, bias: Option<usize>) -> Norm {
        Norm {
            center,
            epsilon,
            scale,
            bias,
        }
    }
}

/// The residual sum of a skip norm: `input + skip (+ bias)`, with the skip row of each X row.
struct Skip {
    input: usize,
    skip: usize,
    skip_row: Index,
    bias: Option<usize>,
    sum: Option<usize>,
}

impl<'a> RowKernel<'a> {
    fn new(spec: &'a RowSpec, schedule: &Schedule) -> Result<RowKernel<'a>, String> {
        let schedule = space().resolve(schedule)?;
        let lanes = schedule.value("lanes") as u8;
        let unroll = schedule.value("unroll");
        let x = input_spec(spec, 0)?.ok_or("input X is missing")?;
        let (rank, axis) = (x.shape.len(), spec.axis);
        if axis >= rank {
            return Err(format!("axis {axis} is out of range for rank {rank}"));
        }
        let softmax = matches!(spec.op, RowOp::Softmax | RowOp::LogSoftmax);
        if softmax && !x.shape[axis + 1..].iter().all(|d| d.is(1)) {
            return Err(format!(
                "softmax along axis {axis} of {:?} is not over the trailing dims",
                x.shape
            ));
        }
        // The reduced dims, which trailing kept dims of a reduction may follow.
        let end = match spec.op {
            RowOp::Reduce { kept, .. } if axis + kept < rank => rank - kept,
            RowOp::Reduce { kept, .. } => {
                return Err(format!(
                    "{kept} kept dims after axis {axis} of a rank-{rank} input"
                ))
            }
            _ => rank,
        };
        let cols_dim = product(&x.shape[axis..end]);
        let mut k = RowKernel {
            spec,
            rank,
            lanes,
            unroll,
            cols: Index::Const(0),
            cols_dim: cols_dim.clone(),
            rows: product(&x.shape[..axis]),
            args: vec![],
            sizes: Sizes::default(),
            vars: vec![],
            temps: [0, 0],
        };
        k.cols = k.size(&cols_dim);
        k.temps = [k.var(1), k.var(lanes)];
        Ok(k)
    }

    /// The kernel with `row_body` run for every row of `[lo, hi)`.
    fn finish(self, name: &str, row_body: Vec<Stmt>) -> Built {
        let body = vec![Stmt::for_range(Index::Size(0), Index::Size(1), row_body)];
        Built {
            kernel: Kernel {
                name: name.to_string(),
                buffers: self.args.len(),
                sizes: 2 + self.sizes.count(),
                vars: self.vars,
                body,
            },
            args: self.args,
            sizes: self.sizes.into_dims(),
            parallel: self.rows,
        }
    }

    /// A constant index for a known dim, else a size parameter evaluated at run time.
    fn size(&mut self, d: &Dim) -> Index {
        self.sizes.index(d)
    }

    /// A new variable of `lanes` f32s.
    fn var(&mut self, lanes: u8) -> usize {
        self.vars.push(lanes);
        self.vars.len() - 1
    }

    /// `value` in a new scalar variable, as a value usable at either width.
    fn bind(&mut self, body: &mut Vec<Stmt>, value: Value) -> Value {
        let v = self.var(1);
        body.push(Stmt::set(v, value));
        Value::Var(v).splat()
    }

    /// The buffer index of `arg` (binding it on first use).
    fn buffer(&mut self, arg: Arg) -> usize {
        match self.args.iter().position(|a| *a == arg) {
            Some(i) => i,
            None => {
                self.args.push(arg);
                self.args.len() - 1
            }
        }
    }

    /// The buffer of output `i`.
    fn output(&mut self, i: usize) -> usize {
        self.buffer(Arg::Output(i))
    }

    /// The buffer of input `i` (a constant when its values are known), if present, checking
    /// that constant values match the shape.
    fn input(&mut self, i: usize) -> Result<Option<(usize, &'a RowInput)>, String> {
        let Some(input) = input_spec(self.spec, i)? else {
            return Ok(None);
        };
        let arg = match &input.values {
            Some(values) => {
                let n = product(&input.shape).as_known();
                if n != Some(values.len() as i64) {
                    return Err(format!(
                        "constant input {i} has {} values for shape {:?}",
                        values.len(),
                        input.shape
                    ));
                }
                Arg::Constant(ConstantData::dense_f32(values.clone()))
            }
            None => Arg::Input(i),
        };
        Ok(Some((self.buffer(arg), input)))
    }

    /// The buffer of input `i`, which must be present.
    fn required(&mut self, i: usize, what: &str) -> Result<(usize, &'a RowInput), String> {
        self.input(i)?
            .ok_or_else(|| format!("input {i} ({what}) is missing"))
    }

    /// The buffer of the per-column parameter `what` at input `i`, if present; its shape must
    /// be the reduced dims of X (up to leading 1s), one value per column.
    fn opt_param(&mut self, i: usize, what: &str) -> Result<Option<usize>, String> {
        let Some((buffer, input)) = self.input(i)? else {
            return Ok(None);
        };
        let x = &input_spec(self.spec, 0)?.ok_or("input X is missing")?.shape;
        if strip_ones(&input.shape) != strip_ones(&x[self.spec.axis..]) {
            return Err(format!(
                "{what} of shape {:?} is not one value per column of X {x:?} from axis {}",
                input.shape, self.spec.axis
            ));
        }
        Ok(Some(buffer))
    }

    /// The per-column parameter `what` at input `i`, which must be present.
    fn param(&mut self, i: usize, what: &str) -> Result<usize, String> {
        self.opt_param(i, what)?
            .ok_or_else(|| format!("input {i} ({what}) is missing"))
    }

    /// The residual sum of a skip norm whose bias is input `bias_at`. The skip must be X or a
    /// trailing block of X's dims (repeated over the leading ones).
    fn skip(&mut self, bias_at: usize) -> Result<Skip, String> {
        let (input, x) = self.required(0, "input")?;
        let (skip, s) = self.required(1, "skip")?;
        // Leading 1s broadcast; the last dim is the row's, even when it is 1.
        let kept = strip_ones(&s.shape).len().max(1).min(s.shape.len());
        let s_shape = &s.shape[s.shape.len() - kept..];
        let x_shape = &x.shape;
        if s_shape.is_empty() || s_shape.len() > x_shape.len() {
            return Err(format!(
                "skip {:?} does not match input {x_shape:?}",
                s.shape
            ));
        }
        if s_shape != &x_shape[x_shape.len() - s_shape.len()..] {
            return Err(format!(
                "skip {:?} is not a trailing block of input {x_shape:?}",
                s.shape
            ));
        }
        let skip_rows = product(&s_shape[..s_shape.len() - 1]);
        let skip_row = if skip_rows == self.rows {
            Index::Loop(0)
        } else if skip_rows.is(1) {
            Index::Const(0)
        } else {
            Index::Loop(0) % self.size(&skip_rows)
        };
        let bias = self.opt_param(bias_at, "bias")?;
        let sum = self.spec.sum_output.then(|| self.output(3));
        Ok(Skip {
            input,
            skip,
            skip_row,
            bias,
            sum,
        })
    }

    /// Accumulators for a pass reducing with `op`.
    fn fold(&mut self, op: Binary) -> Fold {
        let vectors = if self.lanes > 1 { self.unroll } else { 0 };
        let lanes = self.lanes;
        Fold {
            op,
            lanes,
            vectors: (0..vectors).map(|_| self.var(lanes)).collect(),
            scalar: self.var(1),
        }
    }

    /// A pass over the current row (loop 0): `body` for every element, `lanes` at a time (with
    /// `unroll` vectors per iteration, each with its own accumulators) and then one at a time.
    fn pass(&self, folds: &[Fold], body: impl Fn(&At) -> Vec<Stmt>) -> Vec<Stmt> {
        let cols = self.cols.clone();
        let row = Index::Loop(0) * cols.clone();
        let at = |col: Index, lanes: u8, acc: &dyn Fn(&Fold) -> usize| At {
            elem: row.clone() + col.clone(),
            col,
            lanes,
            temp: self.temps[usize::from(lanes > 1)],
            accs: folds.iter().map(acc).collect(),
        };
        let j = Index::Loop(1);
        let mut stmts = vec![];
        let mut tail = Index::Const(0);
        if self.lanes > 1 {
            let (lanes, width) = (self.lanes, i64::from(self.lanes));
            let block = Index::Const(width * self.unroll);
            let blocks = cols.clone() / block.clone();
            let main = (0..self.unroll as usize).flat_map(|k| {
                let col = j.clone() * block.clone() + Index::Const(width * k as i64);
                body(&at(col, lanes, &|f| f.vectors[k]))
            });
            stmts.push(Stmt::for_range(0.into(), blocks.clone(), main.collect()));
            let vectors = cols.clone() / Index::Const(width);
            if self.unroll > 1 {
                let first = blocks * Index::Const(self.unroll);
                let col = j.clone() * Index::Const(width);
                let rest = body(&at(col, lanes, &|f| f.vectors[0]));
                stmts.push(Stmt::for_range(first, vectors.clone(), rest));
            }
            tail = vectors * Index::Const(width);
        }
        let scalar = body(&at(j, 1, &|f| f.scalar));
        stmts.push(Stmt::for_range(tail, cols, scalar));
        stmts
    }

    /// A pass making reductions with `ops` (accumulator `i` of [`At`] reduces with `ops[i]`):
    /// its statements are appended to `body` and the row's totals returned (scalar values).
    fn reduce_pass<const N: usize>(
        &mut self,
        body: &mut Vec<Stmt>,
        ops: [Binary; N],
        element: impl Fn(&At) -> Vec<Stmt>,
    ) -> [Value; N] {
        let folds = ops.map(|op| self.fold(op));
        body.extend(folds.iter().flat_map(Fold::init));
        body.extend(self.pass(&folds, element));
        folds.each_ref().map(Fold::total)
    }

    /// The row length as an f32 value.
    fn cols_value(&self) -> Value {
        match self.cols_dim.as_known() {
            Some(n) => Value::Const(n as f32),
            None => Value::FromIndex(self.cols.clone()),
        }
    }

    /// The row maximum of buffer `x` for a softmax, appended to `body` (a value usable at
    /// either width). It skips NaNs like the interpreter's (which then has NaN sums): a compare
    /// and select is cheaper than Cranelift's NaN-propagating vector `fmax`.
    fn row_max(&mut self, body: &mut Vec<Stmt>, x: usize) -> Value {
        let [total] = self.reduce_pass(body, [Binary::Max], |a| {
            let v = Value::Var(a.temp);
            vec![
                Stmt::set(a.temp, Value::load(x, a.elem.clone())),
                a.update(0, |acc| {
                    Value::select(Compare::Lt, acc.clone(), v.clone(), v, acc)
                }),
            ]
        });
        self.bind(body, total)
    }

    fn softmax(&mut self) -> Result<Vec<Stmt>, String> {
        let (x, _) = self.required(0, "X")?;
        let y = self.output(0);
        let mut body = vec![];
        let max = self.row_max(&mut body, x);
        let [sum] = self.reduce_pass(&mut body, [Binary::Add], |a| {
            let e = (Value::load(x, a.elem.clone()) - max.clone()).unary(Unary::Exp);
            let t = Value::Var(a.temp);
            vec![
                Stmt::set(a.temp, e),
                Stmt::store(y, a.elem.clone(), t.clone(), a.lanes),
                a.update(0, |acc| acc + t),
            ]
        });
        let inv = self.bind(&mut body, Value::Const(1.0) / sum);
        body.extend(self.pass(&[], |a| {
            let v = Value::load(y, a.elem.clone()) * inv.clone();
            vec![Stmt::store(y, a.elem.clone(), v, a.lanes)]
        }));
        Ok(body)
    }

    fn log_softmax(&mut self) -> Result<Vec<Stmt>, String> {
        let (x, _) = self.required(0, "X")?;
        let y = self.output(0);
        let mut body = vec![];
        let max = self.row_max(&mut body, x);
        let [sum] = self.reduce_pass(&mut body, [Binary::Add], |a| {
            let e = (Value::load(x, a.elem.clone()) - max.clone()).unary(Unary::Exp);
            vec![a.update(0, |acc| acc + e)]
        });
        let sum = self.bind(&mut body, sum);
        let log_sum = self.ln(&mut body, sum);
        body.extend(self.pass(&[], |a| {
            let v = (Value::load(x, a.elem.clone()) - max.clone()) - log_sum.clone();
            vec![Stmt::store(y, a.elem.clone(), v, a.lanes)]
        }));
        Ok(body)
    }

    /// `ln(s)` for a scalar `s >= 1` (a softmax denominator, at most the row length), appended
    /// to `body`: six square roots bring `s` below 2 (for any `s < 2^64`), `ln` of that by the
    /// series `2 atanh(u) = 2 (u + u³/3 + ... + u⁹/9)` with `u = (t - 1) / (t + 1)`, scaled back
    /// by 64 and polished by one Newton step `y += s e^-y - 1` (error ≈ 4e-7 + ulp(y)).
    fn ln(&mut self, body: &mut Vec<Stmt>, s: Value) -> Value {
        let mut t = s.clone();
        for _ in 0..6 {
            t = self.bind(body, t.unary(Unary::Sqrt));
        }
        let one = Value::Const(1.0);
        let u = self.bind(body, (t.clone() - one.clone()) / (t + one.clone()));
        let u2 = self.bind(body, u.clone() * u.clone());
        let series = [1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0]
            .into_iter()
            .fold(Value::Const(1.0 / 9.0), |p, c| {
                p.fma(u2.clone(), Value::Const(c))
            });
        let y = self.bind(body, Value::Const(128.0) * u * series);
        let newton = (y.clone() - one) + s * y.clone().unary(Unary::Neg).unary(Unary::Exp);
        self.bind(body, newton)
    }

    /// A (skip) layer or RMS norm. Without `skip` the passes read X; with it the first pass
    /// forms the residual sum into Y and the later passes read Y.
    fn normalize(&mut self, norm: &Norm, skip: Option<&Skip>) -> Result<Vec<Stmt>, String> {
        let y = self.output(0);
        let x = match skip {
            Some(_) => y,
            None => self.required(0, "X")?.0,
        };
        let cols = self.cols.clone();
        let n = self.cols_value();
        let mut body = vec![];
        let [first] = self.reduce_pass(&mut body, [Binary::Add], |a| {
            let (mut stmts, v) = match skip {
                Some(skip) => residual(skip, &cols, y, a),
                None => (vec![], Value::load(x, a.elem.clone())),
            };
            stmts.push(a.update(0, |acc| match norm.center {
                true => acc + v,
                false => v.clone().fma(v, acc),
            }));
            stmts
        });
        let eps = Value::Const(norm.epsilon);
        let (mean, inv) = if norm.center {
            // The corrected two-pass variance: the deviations from the first mean also give
            // that mean's rounding error, which is removed from the mean and the variance.
            let rough = self.bind(&mut body, first / n.clone());
            let [sum, squares] = self.reduce_pass(&mut body, [Binary::Add; 2], |a| {
                let d = Value::load(x, a.elem.clone()) - rough.clone();
                vec![
                    a.update(0, |acc| acc + d.clone()),
                    a.update(1, |acc| d.clone().fma(d, acc)),
                ]
            });
            let shift = self.bind(&mut body, sum.clone() / n.clone());
            let var = (squares - sum * shift.clone()) / n;
            let var = var.binary(Binary::Max, Value::Const(0.0));
            let inv = self.bind(&mut body, (var + eps).unary(Unary::Rsqrt));
            (Some((rough, shift)), inv)
        } else {
            let inv = (first / n + eps).unary(Unary::Rsqrt);
            (None, self.bind(&mut body, inv))
        };
        body.extend(self.pass(&[], |a| {
            let v = Value::load(x, a.elem.clone());
            // x - (rough + shift) without rounding the mean to f32.
            let d = match &mean {
                Some((rough, shift)) => (v - rough.clone()) - shift.clone(),
                None => v,
            };
            let scale = Value::load(norm.scale, a.col.clone());
            let out = match norm.bias {
                Some(b) => (d * inv.clone()).fma(scale, Value::load(b, a.col.clone())),
                None => d * inv.clone() * scale,
            };
            vec![Stmt::store(y, a.elem.clone(), out, a.lanes)]
        }));
        Ok(body)
    }

    fn reduce(&mut self, kind: ReduceKind) -> Result<Vec<Stmt>, String> {
        let (x, _) = self.required(0, "X")?;
        let out = self.output(0);
        let op = reduce_op(kind);
        let mut body = vec![];
        let [total] = self.reduce_pass(&mut body, [op], |a| {
            let v = Value::load(x, a.elem.clone());
            vec![a.update(0, |acc| acc.binary(op, v))]
        });
        let value = match kind {
            ReduceKind::Mean => total / self.cols_value(),
            _ => total,
        };
        body.push(Stmt::store(out, Index::Loop(0), value, 1));
        Ok(body)
    }

    /// A reduction over the middle of X, `rows x cols x inner` (the module documentation
    /// says how), `inner` the product of the `kept` trailing dims.
    fn reduce_columns(&mut self, kind: ReduceKind, kept: usize) -> Result<Vec<Stmt>, String> {
        let (x, spec) = self.required(0, "X")?;
        let out = self.output(0);
        let op = reduce_op(kind);
        let inner = product(&spec.shape[self.rank - kept..]);
        let (cols, inner) = (self.cols.clone(), self.size(&inner));
        let row = Index::Loop(0);
        let mut body = vec![];
        let mut done = Index::Const(0);
        let widths = match self.lanes {
            1 => vec![1],
            lanes => vec![lanes, 1],
        };
        for lanes in widths {
            let acc = self.var(lanes);
            let width = Index::Const(i64::from(lanes));
            // Loop 1 walks the outputs `lanes` at a time, loop 2 the reduced elements.
            let at = done.clone() + Index::Loop(1) * width.clone();
            let elem = (row.clone() * cols.clone() + Index::Loop(2)) * inner.clone() + at.clone();
            let total = match kind {
                ReduceKind::Mean => Value::Var(acc) / self.cols_value(),
                _ => Value::Var(acc),
            };
            let count = (inner.clone() - done.clone()) / width.clone();
            let one_output = vec![
                Stmt::set(acc, Value::Const(identity(op))),
                Stmt::for_range(
                    0.into(),
                    cols.clone(),
                    vec![Stmt::set(
                        acc,
                        Value::Var(acc).binary(op, Value::load(x, elem)),
                    )],
                ),
                Stmt::store(out, row.clone() * inner.clone() + at, total, lanes),
            ];
            body.push(Stmt::for_range(0.into(), count.clone(), one_output));
            done = done + count * width;
        }
        Ok(body)
    }
}

/// The identity of a reduction folding with `op`.
fn identity(op: Binary) -> f32 {
    match op {
        Binary::Max => f32::NEG_INFINITY,
        Binary::Min => f32::INFINITY,
        _ => 0.0,
    }
}

/// The binary op a reduction folds with.
fn reduce_op(kind: ReduceKind) -> Binary {
    match kind {
        ReduceKind::Sum | ReduceKind::Mean => Binary::Add,
        ReduceKind::Max => Binary::Max,
        ReduceKind::Min => Binary::Min,
    }
}

/// The statements of the first pass of a skip norm at `a`: `s = input + skip (+ bias)` into
/// the scratch variable, stored into Y (buffer `y`) and the sum output; and `s` itself.
fn residual(skip: &Skip, cols: &Index, y: usize, a: &At) -> (Vec<Stmt>, Value) {
    let skip_at = skip.skip_row.clone() * cols.clone() + a.col.clone();
    let mut s = Value::load(skip.input, a.elem.clone()) + Value::load(skip.skip, skip_at);
    if let Some(b) = skip.bias {
        s = s + Value::load(b, a.col.clone());
    }
    let t = Value::Var(a.temp);
    let mut stmts = vec![
        Stmt::set(a.temp, s),
        Stmt::store(y, a.elem.clone(), t.clone(), a.lanes),
    ];
    if let Some(sum) = skip.sum {
        stmts.push(Stmt::store(sum, a.elem.clone(), t.clone(), a.lanes));
    }
    (stmts, t)
}

/// Input `i` of `spec`, `None` if absent.
fn input_spec(spec: &RowSpec, i: usize) -> Result<Option<&RowInput>, String> {
    let input = spec.inputs.get(i).and_then(Option::as_ref);
    match input {
        Some(x) if x.shape.iter().any(Dim::is_unknown) => Err(format!(
            "input {i} has shape {:?} with dims unknown until run time",
            x.shape
        )),
        other => Ok(other),
    }
}

/// The product of `dims`.
fn product(dims: &[Dim]) -> Dim {
    dims.iter().fold(Dim::known(1), |p, d| &p * d)
}

/// `shape` without its leading 1s.
fn strip_ones(shape: &[Dim]) -> &[Dim] {
    let lead = shape.iter().take_while(|d| d.is(1)).count();
    &shape[lead..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::testing::run;
    use kiln_ir::interp::{eval_op, Bindings};
    use kiln_ir::{Attr, Attrs, Op, OpKind, Tensor};

    /// A small deterministic PRNG (64-bit LCG).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }

        fn below(&mut self, n: usize) -> usize {
            self.next() as usize % n
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }

        fn uniform(&mut self) -> f64 {
            (self.next() as f64 + 0.5) / (1u64 << 31) as f64
        }

        /// `n` values ~ N(offset, 1) (Box–Muller).
        fn normal(&mut self, n: usize, offset: f32) -> Vec<f32> {
            (0..n)
                .map(|_| {
                    let (u, v) = (self.uniform(), self.uniform());
                    let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                    z as f32 + offset
                })
                .collect()
        }

        fn tensor(&mut self, shape: &[usize], offset: f32) -> Tensor {
            let n = shape.iter().product();
            Tensor::from_vec(shape, self.normal(n, offset)).unwrap()
        }
    }

    /// One test case: the op on concrete inputs (ONNX order) and how the template sees them.
    struct Case {
        op: RowOp,
        axis: usize,
        inputs: Vec<Option<Tensor>>,
        /// Which inputs are declared as constants.
        constant: Vec<usize>,
        /// The dims of X that are symbols (name by position), with their values.
        symbols: Vec<(usize, &'static str)>,
        sum_output: bool,
    }

    impl Case {
        fn new(op: RowOp, axis: usize, inputs: Vec<Option<Tensor>>) -> Case {
            Case {
                op,
                axis,
                inputs,
                constant: vec![],
                symbols: vec![],
                sum_output: false,
            }
        }

        fn x_shape(&self) -> &[usize] {
            self.inputs[0].as_ref().unwrap().shape()
        }

        /// The declared shape of an input: dims aligned (from the right) with a symbolic
        /// dim of X of the same value take that symbol.
        fn declared(&self, shape: &[usize]) -> Vec<Dim> {
            let x = self.x_shape();
            let shift = x.len() as i64 - shape.len() as i64;
            let sym = |p: usize| {
                let q = p as i64 + shift;
                let (_, name) = self.symbols.iter().find(|(i, _)| *i as i64 == q)?;
                (x[q as usize] == shape[p]).then(|| Dim::sym(name))
            };
            (0..shape.len())
                .map(|p| sym(p).unwrap_or(Dim::from(shape[p])))
                .collect()
        }

        fn spec(&self) -> RowSpec {
            let inputs = self.inputs.iter().enumerate().map(|(i, t)| {
                let t = t.as_ref()?;
                let shape = self.declared(t.shape());
                Some(match self.constant.contains(&i) {
                    true => RowInput::constant(shape, t.to_f32_array().iter().copied().collect()),
                    false => RowInput::new(shape),
                })
            });
            RowSpec {
                op: self.op,
                inputs: inputs.collect(),
                axis: self.axis,
                sum_output: self.sum_output,
            }
        }

        fn bindings(&self) -> Bindings {
            let x = self.x_shape();
            let b = self
                .symbols
                .iter()
                .map(|&(i, s)| (s.to_string(), x[i] as i64));
            b.collect()
        }

        /// The interpreter's op.
        fn onnx(&self) -> Op {
            let axis = ("axis", Attr::Int(self.axis as i64));
            let (kind, attrs) = match self.op {
                RowOp::Softmax => (OpKind::Softmax, vec![axis]),
                RowOp::LogSoftmax => (OpKind::LogSoftmax, vec![axis]),
                RowOp::LayerNorm { epsilon } => (
                    OpKind::LayerNormalization,
                    vec![axis, ("epsilon", Attr::Float(epsilon))],
                ),
                RowOp::RmsNorm { epsilon } => (
                    OpKind::RMSNormalization,
                    vec![axis, ("epsilon", Attr::Float(epsilon))],
                ),
                RowOp::SkipLayerNorm { epsilon, rms } => (
                    match rms {
                        true => OpKind::SkipSimplifiedLayerNormalization,
                        false => OpKind::SkipLayerNormalization,
                    },
                    vec![("epsilon", Attr::Float(epsilon))],
                ),
                RowOp::Reduce { kind, kept } => {
                    let end = self.x_shape().len() - kept;
                    let axes = (self.axis as i64..end as i64).collect();
                    let kind = match kind {
                        ReduceKind::Sum => OpKind::ReduceSum,
                        ReduceKind::Mean => OpKind::ReduceMean,
                        ReduceKind::Max => OpKind::ReduceMax,
                        ReduceKind::Min => OpKind::ReduceMin,
                    };
                    (
                        kind,
                        vec![("axes", Attr::Ints(axes)), ("keepdims", Attr::Int(0))],
                    )
                }
            };
            Op::new(kind, Attrs::from_pairs(&attrs))
        }

        /// Runs the template with `schedule` and `chunks` and compares every output it writes
        /// with the interpreter: equal non-finite values, else within `tol * max(1, |ref|)`.
        fn check(&self, schedule: &Schedule, chunks: usize, tol: f32) {
            let built = rows(&self.spec(), schedule).unwrap();
            let bindings = self.bindings();
            let refs: Vec<Option<&Tensor>> = self.inputs.iter().map(Option::as_ref).collect();
            let want = eval_op(&self.onnx(), &refs, &bindings).unwrap();
            let compared: &[usize] = if self.sum_output { &[0, 3] } else { &[0] };
            let shapes: Vec<Vec<usize>> = (0..=compared[compared.len() - 1])
                .map(|i| match compared.contains(&i) {
                    true => want[i].shape().to_vec(),
                    false => vec![0],
                })
                .collect();
            let empty = Tensor::from_vec(&[0], Vec::<f32>::new()).unwrap();
            let inputs: Vec<Tensor> = self
                .inputs
                .iter()
                .map(|t| t.clone().unwrap_or(empty.clone()))
                .collect();
            let got = run(&built, &inputs, &shapes, &bindings, chunks);
            for &o in compared {
                let (g, w) = (got[o].to_f32_array(), want[o].to_f32_array());
                for (i, (&g, &w)) in g.iter().zip(w.iter()).enumerate() {
                    let ok = match w.is_finite() {
                        true => (g - w).abs() <= tol * w.abs().max(1.0),
                        false => g == w || (g.is_nan() && w.is_nan()),
                    };
                    assert!(
                        ok,
                        "{:?} X {:?} axis {} output {o} [{i}]: {g} vs {w} ({schedule:?}, {chunks} chunks)",
                        self.op,
                        self.x_shape(),
                        self.axis
                    );
                }
            }
        }
    }

    const COLS: [usize; 7] = [1, 3, 4, 7, 64, 384, 769];

    /// A random case of `op`: rank 1..=4, a row of one of [`COLS`] (for the norms and
    /// reductions sometimes spread over two axes), symbolic leading dims (and sometimes a
    /// symbolic row length), scale and bias as inputs or constants, optional inputs present
    /// or absent.
    fn random_case(rng: &mut Rng, op: RowOp) -> Case {
        let rank = 1 + rng.below(4);
        let cols = rng.pick(&COLS);
        let mut shape: Vec<usize> = (0..rank).map(|_| 1 + rng.below(3)).collect();
        shape[rank - 1] = cols;
        let (softmax, skip) = (
            matches!(op, RowOp::Softmax | RowOp::LogSoftmax),
            matches!(op, RowOp::SkipLayerNorm { .. }),
        );
        let mut axis = rank - 1;
        if rank >= 2 && rng.below(3) == 0 {
            if softmax {
                shape[rank - 2] = cols;
                shape[rank - 1] = 1;
                axis = rank - 2;
            } else if !skip {
                axis = rank - 2;
            }
        }
        let offset = rng.pick(&[0.0, 3.0, -20.0]);
        let x = rng.tensor(&shape, offset);
        let row = &shape[axis..];
        let param = |rng: &mut Rng, lead: bool| {
            let lead = usize::from(lead && axis > 0);
            let s: Vec<usize> = [1].iter().take(lead).chain(row).copied().collect();
            Some(rng.tensor(&s, 0.5))
        };
        let mut inputs = vec![Some(x)];
        let mut params = vec![];
        match op {
            RowOp::LayerNorm { .. } => {
                let lead = rng.below(3) == 0;
                inputs.push(param(rng, lead));
                inputs.push(param(rng, false).filter(|_| rng.below(2) == 0));
                params = vec![1, 2];
            }
            RowOp::RmsNorm { .. } => {
                let lead = rng.below(3) == 0;
                inputs.push(param(rng, lead));
                params = vec![1];
            }
            RowOp::SkipLayerNorm { rms, .. } => {
                let tail = rng.below(rank);
                inputs.push(Some(rng.tensor(&shape[tail..], 0.0)));
                inputs.push(param(rng, false));
                if !rms {
                    inputs.push(param(rng, false).filter(|_| rng.below(2) == 0));
                }
                inputs.push(param(rng, false).filter(|_| rng.below(2) == 0));
                params = (2..inputs.len()).collect();
            }
            _ => {}
        }
        let mut case = Case::new(op, axis, inputs);
        case.sum_output = skip && rng.below(2) == 0;
        let names = ["b", "s", "h"];
        case.symbols = (0..axis)
            .filter(|_| rng.below(2) == 0)
            .map(|i| (i, names[i]))
            .collect();
        if rng.below(4) == 0 {
            let cols_at = if softmax { axis } else { rank - 1 };
            case.symbols.push((cols_at, "c"));
        } else {
            case.constant = params.into_iter().filter(|_| rng.below(2) == 0).collect();
        }
        case
    }

    /// Schedules of at most 4 lanes (Cranelift's), and with the LLVM backend, of 16 and 8.
    fn schedules() -> Vec<Schedule> {
        let mut all = vec![
            Schedule::default(),
            Schedule::default().with("lanes", 1),
            Schedule::default().with("unroll", 1),
            Schedule::default().with("unroll", 2),
        ];
        if cfg!(feature = "llvm") {
            all.push(Schedule::default().with("lanes", 16));
            all.push(Schedule::default().with("lanes", 8).with("unroll", 2));
        }
        all
    }

    #[test]
    fn every_row_op_matches_the_interpreter() {
        let ops = [
            RowOp::Softmax,
            RowOp::LogSoftmax,
            RowOp::LayerNorm { epsilon: 1e-5 },
            RowOp::RmsNorm { epsilon: 1e-6 },
            RowOp::SkipLayerNorm {
                epsilon: 1e-12,
                rms: false,
            },
            RowOp::SkipLayerNorm {
                epsilon: 1e-6,
                rms: true,
            },
            RowOp::Reduce {
                kind: ReduceKind::Sum,
                kept: 0,
            },
            RowOp::Reduce {
                kind: ReduceKind::Mean,
                kept: 0,
            },
            RowOp::Reduce {
                kind: ReduceKind::Max,
                kept: 0,
            },
            RowOp::Reduce {
                kind: ReduceKind::Min,
                kept: 0,
            },
        ];
        let mut rng = Rng(7);
        let schedules = schedules();
        for op in ops {
            for i in 0..12 {
                let case = random_case(&mut rng, op);
                let schedule = &schedules[i % schedules.len()];
                for chunks in [1, 3] {
                    case.check(schedule, chunks, 1e-4);
                }
            }
        }
    }

    #[test]
    fn masked_softmax_rows_match_the_interpreter() {
        let (inf, nan) = (f32::NEG_INFINITY, f32::NAN);
        let mut rng = Rng(11);
        for cols in [1, 3, 7, 64, 77] {
            let mut x = rng.normal(5 * cols, 2.0);
            // Row 0: every other element masked; row 1: all masked; row 2: all but the last;
            // row 3: one NaN (NaN row, as in the interpreter); row 4: unmasked.
            for c in 0..cols {
                if c % 2 == 1 {
                    x[c] = inf;
                }
                x[cols + c] = inf;
                if c + 1 < cols {
                    x[2 * cols + c] = inf;
                }
            }
            x[3 * cols + cols / 2] = nan;
            let x = Tensor::from_vec(&[5, cols], x).unwrap();
            for op in [RowOp::Softmax, RowOp::LogSoftmax] {
                let case = Case::new(op, 1, vec![Some(x.clone())]);
                for schedule in schedules() {
                    case.check(&schedule, 3, 1e-5);
                }
            }
        }
    }

    #[test]
    fn reductions_propagate_nan_and_handle_empty_rows() {
        let nan = f32::NAN;
        let x = Tensor::from_vec(
            &[3, 5],
            vec![
                1.0, 2.0, nan, 4.0, 5.0, -1.0, 0.0, 1.0, 2.0, 9.0, 7.0, 6.0, 5.0, 4.0, nan,
            ],
        )
        .unwrap();
        let empty = Tensor::from_vec(&[3, 0], Vec::<f32>::new()).unwrap();
        for kind in [
            ReduceKind::Sum,
            ReduceKind::Mean,
            ReduceKind::Max,
            ReduceKind::Min,
        ] {
            let op = RowOp::Reduce { kind, kept: 0 };
            Case::new(op, 1, vec![Some(x.clone())]).check(&Schedule::default(), 2, 1e-6);
            let mut case = Case::new(op, 1, vec![Some(empty.clone())]);
            case.symbols = vec![(1, "c")];
            case.check(&Schedule::default(), 1, 0.0);
        }
    }

    /// Reductions over a block of middle axes (mean pooling's sum over the sequence), with
    /// kept dims that no vector width divides, symbolic dims, NaN and empty blocks.
    #[test]
    fn reductions_over_middle_axes_match_the_interpreter() {
        let mut rng = Rng(11);
        let kinds = [
            ReduceKind::Sum,
            ReduceKind::Mean,
            ReduceKind::Max,
            ReduceKind::Min,
        ];
        // (shape, first reduced axis, kept trailing dims)
        let shapes: [(&[usize], usize, usize); 5] = [
            (&[2, 7, 37], 1, 1),
            (&[3, 5, 16], 1, 1),
            (&[1, 4, 3, 2, 19], 1, 2),
            (&[6, 2, 3], 0, 2),
            (&[2, 0, 5], 1, 1),
        ];
        for kind in kinds {
            for (shape, axis, kept) in shapes {
                let mut x = rng.tensor(shape, 0.5);
                if kind == ReduceKind::Max && shape[1] > 0 {
                    // A NaN in one column only: the kernel keeps it to that output.
                    let mut values = x.to_f32_array().iter().copied().collect::<Vec<_>>();
                    values[3] = f32::NAN;
                    x = Tensor::from_vec(shape, values).unwrap();
                }
                let op = RowOp::Reduce { kind, kept };
                let mut case = Case::new(op, axis, vec![Some(x)]);
                for schedule in schedules() {
                    case.check(&schedule, 2, 1e-5);
                }
                case.symbols = vec![(0, "b"), (axis + 1, "s")];
                case.check(&Schedule::default(), 3, 1e-5);
            }
        }
    }

    #[test]
    fn long_rows_with_offsets_stay_accurate() {
        let mut rng = Rng(3);
        let cols = 4096;
        for offset in [0.0, 30.0, -100.0] {
            let x = Some(rng.tensor(&[3, cols], offset));
            let gamma = Some(rng.tensor(&[cols], 1.0));
            let beta = Some(rng.tensor(&[cols], 0.0));
            let skip = Some(rng.tensor(&[3, cols], 0.0));
            let cases = [
                Case::new(RowOp::Softmax, 1, vec![x.clone()]),
                Case::new(RowOp::LogSoftmax, 1, vec![x.clone()]),
                Case::new(
                    RowOp::LayerNorm { epsilon: 1e-5 },
                    1,
                    vec![x.clone(), gamma.clone(), beta.clone()],
                ),
                Case::new(
                    RowOp::RmsNorm { epsilon: 1e-6 },
                    1,
                    vec![x.clone(), gamma.clone()],
                ),
                Case::new(
                    RowOp::SkipLayerNorm {
                        epsilon: 1e-12,
                        rms: false,
                    },
                    1,
                    vec![
                        x.clone(),
                        skip.clone(),
                        gamma.clone(),
                        beta.clone(),
                        beta.clone(),
                    ],
                ),
                Case::new(
                    RowOp::Reduce {
                        kind: ReduceKind::Mean,
                        kept: 0,
                    },
                    1,
                    vec![x.clone()],
                ),
                Case::new(
                    RowOp::Reduce {
                        kind: ReduceKind::Sum,
                        kept: 0,
                    },
                    1,
                    vec![x.clone()],
                ),
            ];
            for case in cases {
                for schedule in schedules() {
                    case.check(&schedule, 1, 1e-4);
                }
            }
        }
    }

    #[test]
    fn unsupported_specs_are_errors() {
        let dims = |v: &[i64]| v.iter().map(|&d| Dim::known(d)).collect::<Vec<_>>();
        let spec = |op, shapes: &[&[i64]], axis| RowSpec {
            op,
            inputs: shapes
                .iter()
                .map(|s| Some(RowInput::new(dims(s))))
                .collect(),
            axis,
            sum_output: false,
        };
        let ln = RowOp::LayerNorm { epsilon: 1e-5 };
        let skip = RowOp::SkipLayerNorm {
            epsilon: 1e-5,
            rms: false,
        };
        let d = Schedule::default();
        let err = |s: &RowSpec, schedule: &Schedule| rows(s, schedule).unwrap_err();
        assert!(err(&spec(ln, &[&[2, 8], &[16]], 1), &d).contains("scale"));
        assert!(err(&spec(ln, &[&[2, 8], &[1]], 1), &d).contains("scale"));
        assert!(err(&spec(ln, &[&[2, 8], &[8], &[2, 8]], 1), &d).contains("bias"));
        assert!(err(&spec(ln, &[&[2, 8]], 1), &d).contains("missing"));
        assert!(err(&spec(ln, &[&[2, 8], &[8]], 2), &d).contains("axis"));
        assert!(err(&spec(RowOp::Softmax, &[&[2, 8, 3]], 1), &d).contains("trailing"));
        assert!(err(&spec(skip, &[&[2, 3, 8], &[2, 1, 8], &[8]], 2), &d).contains("skip"));
        assert!(err(&spec(skip, &[&[2, 8], &[2, 8], &[2, 8]], 0), &d).contains("last axis"));
        assert!(err(
            &spec(RowOp::Softmax, &[&[2, 8]], 1),
            &d.clone().with("lanes", 2)
        )
        .contains("lanes"));
        assert!(err(
            &spec(RowOp::Softmax, &[&[2, 8]], 1),
            &d.clone().with("unroll", 0)
        )
        .contains("unroll"));
        let unknown = RowSpec {
            inputs: vec![Some(RowInput::new(vec![Dim::unknown(), Dim::known(8)]))],
            ..spec(RowOp::Softmax, &[], 1)
        };
        assert!(err(&unknown, &d).contains("unknown"));
        let short = RowSpec {
            inputs: vec![
                Some(RowInput::new(dims(&[2, 8]))),
                Some(RowInput::constant(dims(&[8]), vec![1.0; 7].into())),
            ],
            ..spec(ln, &[], 1)
        };
        assert!(err(&short, &d).contains("7 values"));
        let symbolic_constant = RowSpec {
            inputs: vec![
                Some(RowInput::new(vec![Dim::known(2), Dim::sym("c")])),
                Some(RowInput::constant(vec![Dim::sym("c")], vec![1.0; 8].into())),
            ],
            ..spec(ln, &[], 1)
        };
        assert!(err(&symbolic_constant, &d).contains("constant"));
    }
}

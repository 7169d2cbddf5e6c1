//! Flash-style fused attention, the kernel of [`kiln_ir::OpKind::FusedAttention`]:
//! `Y = softmax(Q Kᵀ · scale + mask, causal) V` on `[batch, heads, seq, head]` tensors, with
//! grouped-query heads (K and V may have fewer heads than Q).
//!
//! The kernel never materialises the `Sq × Skv` score matrix. Each parallel iteration takes a
//! tile of query rows of one (batch, head) and walks the keys tile by tile with an online
//! softmax: the scores of the current key tile go to a small scratch row per query, the
//! running maximum `m` and sum `l` are updated, and the output rows (used as the accumulator)
//! are rescaled by `e^(m_old - m_new)` before the tile's `P · V` is added. At the end each
//! row is divided by `l`.
//!
//! Semantics follow the reference interpreter (ONNX `Attention` on 4-D inputs):
//! - `scale` defaults to `1 / sqrt(head size)`;
//! - `causal` with `past` keys before the first query (a size, 0 for prefill, the cache
//!   length for a decode step): query `i` sees keys `j <= i + past`, as ONNX `Attention` with
//!   a KV cache does; key tiles entirely after the last query of a tile are skipped by the
//!   loop bounds;
//! - the additive f32 mask is right-aligned to `[B, Hq, Sq, Skv]`, a dim of 1 broadcasts;
//!   a last mask dim shorter than `Skv` masks the keys beyond it (the keys loop stops there);
//! - a row whose every key is masked gives NaN; `Skv = 0` gives zeros.
//!
//! Schedule parameters (defaults measured best on x86-64 for D = 64):
//! - `q_tile` (default 8, 1..=8): query rows per tile, processed together so that every key
//!   and value vector loaded is used by all of them; the last, partial tile of a sequence is
//!   processed row by row (so a decode step, `Sq = 1`, does no wasted work);
//! - `k_tile` (default 64, a multiple of 4 in 4..=1024): keys per online-softmax step (the
//!   scratch holds `k_tile + 3` floats per query row);
//! - `d_unroll` (default 2, 1..=4): f32x4 steps of the `q · k` dot products per loop
//!   iteration;
//! - `p_unroll` (default 1, 1..=4): keys per iteration of the `P V` loop;
//! - `pv_rows` (default 2, 1..=8) and `pv_cols` (default 4, 1..=4, `pv_rows * pv_cols <= 12`):
//!   the `P V` product accumulates a block of `pv_rows` rows times `pv_cols` f32x4 column
//!   blocks in registers; a group of fewer rows (the row-by-row remainder) takes more
//!   column blocks, up to 4, for the same number of accumulators.
//!
//! Kernel layout: buffers Q, K, V, mask?, Y, scratch; size parameters 2.. are `Sq`, `Skv`,
//! `past` (0 unless causal) and, with a mask, its last dim and its strides over batch, head
//! and query.

use super::{Arg, Built};
use crate::kir::{Binary, Compare, Index, Kernel, Stmt, Unary, Value};
use crate::Schedule;
use kiln_ir::Dim;

/// Shapes and attributes of one fused attention.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionSpec {
    /// Shape of Q: `[B, Hq, Sq, D]`.
    pub q: Vec<Dim>,
    /// Shape of K: `[B, Hkv, Skv, D]`, `Hq` a multiple of `Hkv`.
    pub k: Vec<Dim>,
    /// Shape of V: `[B, Hkv, Skv, Dv]`.
    pub v: Vec<Dim>,
    /// Shape of the additive f32 mask (rank 1 to 4, right-aligned to `[B, Hq, Sq, Skv]`), if
    /// there is one. Bool masks are not supported: convert them to 0 / -inf first.
    pub mask: Option<Vec<Dim>>,
    /// The factor applied to `Q Kᵀ`; `None` for `1 / sqrt(D)`.
    pub scale: Option<f32>,
    /// Causal masking: `Some(past)` lets query `i` see only keys `j <= i + past` (`past` = 0
    /// for self-attention without a cache, the cache length with one); `None` for none.
    pub causal: Option<Dim>,
}

const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;

const LO: usize = 0;
const HI: usize = 1;
const SQ: usize = 2;
const SKV: usize = 3;
const PAST: usize = 4;
const MASK_LEN: usize = 5;
const MASK_SB: usize = 6;
const MASK_SH: usize = 7;
const MASK_SQ: usize = 8;

/// Extra f32 slots after a query row's scores: running max, running sum, rescale factor.
const ROW_EXTRA: i64 = 3;

/// What the kernel builder needs to know, validated.
struct Plan {
    hq: i64,
    hkv: i64,
    d: i64,
    dv: i64,
    scale: f32,
    causal: bool,
    /// Buffer of the mask, if any.
    mask: Option<usize>,
    /// Buffer of the output.
    y: usize,
    /// Buffer of the scratch rows.
    scratch: usize,
    tq: i64,
    tk: i64,
    /// Steps of four elements of D per iteration of the dot-product loop.
    du: i64,
    /// Keys per iteration of the `P V` loop.
    pu: i64,
    /// Rows per group of the `P V` loop.
    pr: i64,
    /// Column blocks of four per group of the `P V` loop (for a group of `pr` rows).
    pc: i64,
}

/// The most column blocks of four a `P V` group accumulates at once.
const MAX_COLUMN_BLOCKS: i64 = 4;

impl Plan {
    /// Accumulators of a `P V` group.
    fn pv_acc(&self) -> i64 {
        self.pr * self.pc
    }

    /// Column blocks of four per `P V` group of `rows` rows: as many as the accumulators
    /// allow, at most [`MAX_COLUMN_BLOCKS`] and at most `Dv / 4`.
    fn column_blocks(&self, rows: i64) -> i64 {
        (self.pv_acc() / rows)
            .clamp(1, MAX_COLUMN_BLOCKS)
            .min((self.dv / 4).max(1))
    }

    /// f32 slots per query row in the scratch: `k_tile` scores, then m, l and alpha.
    fn row_len(&self) -> i64 {
        self.tk + ROW_EXTRA
    }
}

/// The kernel's variables.
struct Vars {
    lanes: Vec<u8>,
    /// Per row: the vector accumulator of the dot product over whole vectors of D.
    dot: Vec<usize>,
    /// Per row: the scalar accumulator of the dot product over the last `D % 4`.
    dot_tail: Vec<usize>,
    /// Per (row, column block) of a group: four output columns being accumulated.
    out: Vec<usize>,
    /// Per row: one output column being accumulated (the last `Dv % 4`).
    out_tail: Vec<usize>,
    /// Four elements of the current key.
    key: usize,
    /// One element of the current key or value.
    scalar: usize,
    /// Per column block of a group: four elements of the current value.
    values: Vec<usize>,
    /// One probability, broadcast.
    broadcast: usize,
    /// Lanewise maximum of a row of scores.
    max: usize,
    /// Lanewise sum of a row of probabilities.
    sum: usize,
    /// Four probabilities.
    prob: usize,
    /// The new running maximum of a row.
    new_max: usize,
    /// The running maximum with -inf replaced by 0 (nothing seen yet).
    safe_max: usize,
    /// `1 / l` of a row.
    inv: usize,
}

impl Vars {
    fn new(plan: &Plan) -> Vars {
        let mut lanes = vec![];
        let mut var = |l: u8| {
            lanes.push(l);
            lanes.len() - 1
        };
        let mut vars = |n: i64, l: u8| (0..n).map(|_| var(l)).collect::<Vec<_>>();
        let (dot, dot_tail) = (vars(plan.tq, 4), vars(plan.tq, 1));
        let (out, out_tail) = (vars(plan.pv_acc(), 4), vars(plan.tq, 1));
        let values = vars(MAX_COLUMN_BLOCKS, 4);
        Vars {
            dot,
            dot_tail,
            out,
            out_tail,
            values,
            broadcast: var(4),
            key: var(4),
            scalar: var(1),
            max: var(4),
            sum: var(4),
            prob: var(4),
            new_max: var(1),
            safe_max: var(1),
            inv: var(1),
            lanes,
        }
    }
}

/// Index values computed once and then used in inner loops. Each is bound as the counter of a
/// loop of one iteration, which the backend keeps in a register or a stack slot instead of
/// recomputing it (divisions included) in every inner iteration, and which keeps the inner
/// address arithmetic to `base + counter * stride + constant`.
struct Lets {
    depth: usize,
    values: Vec<Index>,
}

impl Lets {
    /// Bindings whose first loop is at nesting depth `depth`.
    fn at(depth: usize) -> Lets {
        Lets {
            depth,
            values: vec![],
        }
    }

    /// Binds `value` (which may use the earlier bindings); the result names it inside
    /// [`Lets::wrap`].
    fn bind(&mut self, value: Index) -> Index {
        self.values.push(value);
        self.depth += 1;
        Index::Loop(self.depth - 1)
    }

    /// `body`, built for loop depth `self.depth`, inside the bindings.
    fn wrap(self, body: Vec<Stmt>) -> Vec<Stmt> {
        self.values.into_iter().rev().fold(body, |body, value| {
            vec![Stmt::for_range(value.clone(), value + c(1), body)]
        })
    }
}

/// Values of one (batch, head).
struct Head {
    /// Row of K and V where its key/value head starts: `(b * Hkv + h / group) * Skv`.
    kv_row: Index,
    /// Offset of its mask rows, if there is a mask.
    mask: Option<Index>,
}

/// The query rows processed together.
struct Tile {
    /// How many.
    rows: usize,
    /// Position in the sequence of the first.
    first: Index,
    /// Offset of the first row in Q.
    q: Index,
    /// Offset of the first row in Y.
    y: Index,
    /// Offset of the scratch row of the first row.
    s: Index,
    /// Nesting depth of the loops directly inside the tile.
    depth: usize,
}

/// One tile of keys.
struct Keys {
    /// Position of the first key.
    j0: Index,
    /// How many keys (at most `k_tile`).
    n: Index,
    /// Offset of the first key in K.
    k: Index,
    /// Offset of the first value in V.
    v: Index,
    /// Offset of the mask value of the first row and the first key, if there is a mask.
    mask: Option<Index>,
    /// Nesting depth of the loops directly inside the key tile.
    depth: usize,
}

fn c(v: i64) -> Index {
    Index::Const(v)
}

/// Builds the flash attention kernel for `spec` (see the module doc for the schedule
/// parameters). Group inputs: Q, K, V, mask?; output 0: Y `[B, Hq, Sq, Dv]`. Errors name
/// the shape or parameter the template does not support.
pub fn attention(spec: &AttentionSpec, schedule: &Schedule) -> Result<Built, String> {
    let [b, hq, sq, d] = dims4(&spec.q, "Q")?;
    let [kb, hkv, skv, kd] = dims4(&spec.k, "K")?;
    let [vb, vh, vs, dv] = dims4(&spec.v, "V")?;
    if kb != b || vb != b {
        return Err(format!("batch sizes differ: Q {b}, K {kb}, V {vb}"));
    }
    if kd != d || vh != hkv || vs != skv {
        return Err(format!(
            "K {:?} and V {:?} do not match Q {:?}",
            spec.k, spec.v, spec.q
        ));
    }
    let known = |x: &Dim, what: &str| {
        x.as_known()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("{what} must be a known positive size, got {x}"))
    };
    let (hq_n, hkv_n) = (known(&hq, "Q heads")?, known(&hkv, "K/V heads")?);
    let (d_n, dv_n) = (known(&d, "head size")?, known(&dv, "V head size")?);
    if hq_n % hkv_n != 0 {
        return Err(format!("{hq_n} query heads are not a multiple of {hkv_n}"));
    }
    let scale = spec.scale.unwrap_or(1.0 / (d_n as f32).sqrt());
    if !(scale >= 0.0 && scale.is_finite()) {
        return Err(format!("scale {scale} must be finite and non-negative"));
    }
    let (tq, tk) = (schedule.get("q_tile", 8), schedule.get("k_tile", 64));
    if !(1..=8).contains(&tq) {
        return Err(format!("q_tile {tq} is not in 1..=8"));
    }
    if !(4..=1024).contains(&tk) || tk % 4 != 0 {
        return Err(format!("k_tile {tk} is not a multiple of 4 in 4..=1024"));
    }
    let (du, pu) = (schedule.get("d_unroll", 2), schedule.get("p_unroll", 1));
    if !(1..=4).contains(&du) || !(1..=4).contains(&pu) {
        return Err(format!("d_unroll {du} or p_unroll {pu} is not in 1..=4"));
    }
    let (pr, pc) = (schedule.get("pv_rows", 2), schedule.get("pv_cols", 4));
    if !(1..=8).contains(&pr) || !(1..=MAX_COLUMN_BLOCKS).contains(&pc) || pr * pc > 12 {
        return Err(format!(
            "pv_rows {pr} and pv_cols {pc} are not in 1..=8, 1..={MAX_COLUMN_BLOCKS} with a \
             product of at most 12"
        ));
    }
    let past = spec.causal.clone().unwrap_or(Dim::known(0));
    let mut sizes = vec![sq.clone(), skv.clone(), past];
    let mut args = vec![Arg::Input(0), Arg::Input(1), Arg::Input(2)];
    if let Some(m) = &spec.mask {
        sizes.extend(mask_sizes(m, [&b, &hq, &sq, &skv])?);
        args.push(Arg::Input(3));
    }
    let plan = Plan {
        hq: hq_n,
        hkv: hkv_n,
        d: d_n,
        dv: dv_n,
        scale,
        causal: spec.causal.is_some(),
        mask: spec.mask.as_ref().map(|_| 3),
        y: args.len(),
        scratch: args.len() + 1,
        tq,
        tk,
        du,
        pu,
        pr,
        pc,
    };
    let rows = &(&b * &hq) * &sq;
    args.push(Arg::Output(0));
    args.push(Arg::Scratch(&rows * &Dim::known(plan.row_len())));
    let vars = Vars::new(&plan);
    let name = format!(
        "attention_h{hq_n}x{hkv_n}_d{d_n}x{dv_n}_q{tq}_k{tk}_u{du}x{pu}_pv{pr}x{pc}{}{}",
        if spec.causal.is_some() { "_causal" } else { "" },
        if spec.mask.is_some() { "_mask" } else { "" }
    );
    Ok(Built {
        kernel: Kernel {
            name,
            buffers: args.len(),
            sizes: 2 + sizes.len(),
            body: vec![body(&plan, &vars)],
            vars: vars.lanes,
        },
        args,
        sizes,
        parallel: rows,
    })
}

/// The four dims of a rank-4 shape.
fn dims4(shape: &[Dim], what: &str) -> Result<[Dim; 4], String> {
    shape
        .to_vec()
        .try_into()
        .map_err(|_| format!("{what} has shape {shape:?}; expected rank 4"))
}

/// The size parameters of a mask of shape `mask` broadcast to `full` = `[B, Hq, Sq, Skv]`:
/// its last dim and its element strides over batch, head and query (0 where it broadcasts).
fn mask_sizes(mask: &[Dim], full: [&Dim; 4]) -> Result<[Dim; 4], String> {
    if mask.is_empty() || mask.len() > 4 {
        return Err(format!("mask has shape {mask:?}; expected rank 1 to 4"));
    }
    let mut dims = vec![Dim::known(1); 4 - mask.len()];
    dims.extend_from_slice(mask);
    for i in 0..3 {
        if !dims[i].is(1) && dims[i] != *full[i] {
            return Err(format!(
                "mask of shape {mask:?} does not broadcast to {full:?} (dim {i})"
            ));
        }
    }
    if let (Some(len), Some(keys)) = (dims[3].as_known(), full[3].as_known()) {
        if len > keys {
            return Err(format!("mask of shape {mask:?} is longer than {keys} keys"));
        }
    }
    let stride = |i: usize, inner: Dim| if dims[i].is(1) { Dim::known(0) } else { inner };
    let sq = stride(2, dims[3].clone());
    let sh = stride(1, &dims[2] * &dims[3]);
    let sb = stride(0, &(&dims[1] * &dims[2]) * &dims[3]);
    Ok([dims[3].clone(), sb, sh, sq])
}

/// The kernel body: the parallel loop over (b, h, query row); iterations at the start of a
/// query tile do the tile, the others nothing. A last tile shorter than `q_tile` is done
/// row by row.
fn body(plan: &Plan, vars: &Vars) -> Stmt {
    let p = Index::Loop(0);
    let mut lets = Lets::at(1);
    let bh = lets.bind(p.clone() / Index::Size(SQ));
    let (b, h) = (bh.clone() / c(plan.hq), bh.clone() % c(plan.hq));
    let group = plan.hq / plan.hkv;
    let kv_row = lets.bind((b.clone() * c(plan.hkv) + h.clone() / c(group)) * Index::Size(SKV));
    let mask = plan
        .mask
        .map(|_| lets.bind(b * Index::Size(MASK_SB) + h * Index::Size(MASK_SH)));
    let head = Head { kv_row, mask };
    let depth = lets.depth;
    let i0 = p.clone() - bh * Index::Size(SQ);
    let mut inner = tile(plan, vars, &head, plan.tq as usize, &i0, &p, depth);
    if plan.tq > 1 {
        let row = Index::Loop(depth);
        let flat = p + row.clone() - i0.clone();
        let single = tile(plan, vars, &head, 1, &row, &flat, depth + 1);
        inner = vec![Stmt::If {
            lhs: i0.clone() % c(plan.tq),
            cmp: Compare::Eq,
            rhs: c(0),
            then: vec![Stmt::If {
                lhs: i0.clone() + c(plan.tq),
                cmp: Compare::Le,
                rhs: Index::Size(SQ),
                then: inner,
                otherwise: vec![Stmt::for_range(i0, Index::Size(SQ), single)],
            }],
            otherwise: vec![],
        }];
    }
    Stmt::for_range(Index::Size(LO), Index::Size(HI), lets.wrap(inner))
}

/// One tile of `rows` query rows from position `first` (row `flat` of Q and Y), its loops
/// starting at `depth`: initialise, walk the key tiles, normalise.
fn tile(
    plan: &Plan,
    vars: &Vars,
    head: &Head,
    rows: usize,
    first: &Index,
    flat: &Index,
    depth: usize,
) -> Vec<Stmt> {
    let mut lets = Lets::at(depth);
    let t = Tile {
        rows,
        first: first.clone(),
        q: lets.bind(flat.clone() * c(plan.d)),
        y: lets.bind(flat.clone() * c(plan.dv)),
        s: lets.bind(flat.clone() * c(plan.row_len())),
        depth: lets.depth,
    };
    let mut end = Index::Size(SKV);
    if plan.mask.is_some() {
        end = end.min(Index::Size(MASK_LEN));
    }
    if plan.causal {
        end = end.min(first.clone() + c(rows as i64) + Index::Size(PAST));
    }
    let j0 = Index::Loop(t.depth) * c(plan.tk);
    let mut key_lets = Lets::at(t.depth + 1);
    let keys = Keys {
        n: c(plan.tk).min(end.clone() - j0.clone()),
        k: key_lets.bind((head.kv_row.clone() + j0.clone()) * c(plan.d)),
        v: key_lets.bind((head.kv_row.clone() + j0.clone()) * c(plan.dv)),
        mask: head
            .mask
            .as_ref()
            .map(|m| key_lets.bind(m.clone() + first.clone() * Index::Size(MASK_SQ) + j0.clone())),
        j0,
        depth: key_lets.depth,
    };
    let mut step = vec![scores(plan, vars, &t, &keys)];
    step.extend(pad(plan, &t, &keys));
    for r in 0..rows {
        step.extend(softmax_row(plan, vars, &t, &keys, r));
    }
    step.extend(accumulate(plan, vars, &t, &keys));
    let mut out = init(plan, &t);
    out.push(Stmt::for_range(
        c(0),
        (end + c(plan.tk - 1)) / c(plan.tk),
        key_lets.wrap(step),
    ));
    out.extend(finish(plan, vars, &t));
    lets.wrap(out)
}

/// Stores `value(index, lanes)` to `buffer[base + offset..][..len]`: whole vectors in a loop
/// at `depth`, then the scalar tail.
fn over_row(
    buffer: usize,
    (base, offset): (&Index, i64),
    len: i64,
    depth: usize,
    value: impl Fn(Index) -> Value,
) -> Vec<Stmt> {
    let at = base.clone() + Index::Loop(depth) * c(4) + c(offset);
    let mut out = vec![Stmt::for_range(
        c(0),
        c(len / 4),
        vec![Stmt::store(buffer, at.clone(), value(at), 4)],
    )];
    for e in len / 4 * 4..len {
        let at = base.clone() + c(offset + e);
        out.push(Stmt::store(buffer, at.clone(), value(at), 1));
    }
    out
}

/// Offset in the scratch of slot `k` after the scores of row `r` (0: running max, 1: running
/// sum, 2: rescale factor).
fn extra(plan: &Plan, t: &Tile, r: usize, k: i64) -> Index {
    t.s.clone() + c(r as i64 * plan.row_len() + plan.tk + k)
}

/// Running max -inf, sum 0, output rows 0.
fn init(plan: &Plan, t: &Tile) -> Vec<Stmt> {
    let mut out = vec![];
    for r in 0..t.rows {
        let neg_inf = Value::Const(f32::NEG_INFINITY);
        out.push(Stmt::store(plan.scratch, extra(plan, t, r, 0), neg_inf, 1));
        out.push(Stmt::store(
            plan.scratch,
            extra(plan, t, r, 1),
            Value::Const(0.0),
            1,
        ));
        let y = (&t.y, r as i64 * plan.dv);
        out.extend(over_row(plan.y, y, plan.dv, t.depth, |_| Value::Const(0.0)));
    }
    out
}

/// Output rows divided by their sums (NaN for a row with every key masked; zeros when there
/// are no keys at all).
fn finish(plan: &Plan, vars: &Vars, t: &Tile) -> Vec<Stmt> {
    let mut out = vec![];
    for r in 0..t.rows {
        let l = Value::load(plan.scratch, extra(plan, t, r, 1));
        out.push(Stmt::set(
            vars.inv,
            Value::select(
                Compare::Eq,
                Value::FromIndex(Index::Size(SKV)),
                Value::Const(0.0),
                Value::Const(0.0),
                Value::Const(1.0) / l,
            ),
        ));
        let y = (&t.y, r as i64 * plan.dv);
        out.extend(over_row(plan.y, y, plan.dv, t.depth, |at| {
            Value::load(plan.y, at) * Value::Var(vars.inv).splat()
        }));
    }
    out
}

/// The scores of the key tile for every row of the tile, scaled, masked, into the scratch
/// rows: dot products over D with one f32x4 accumulator per row (each key vector is loaded
/// once for all rows), then a horizontal sum.
fn scores(plan: &Plan, vars: &Vars, t: &Tile, keys: &Keys) -> Stmt {
    let jj = Index::Loop(keys.depth);
    let key = keys.k.clone() + jj.clone() * c(plan.d);
    let whole = plan.d / 4;
    // One step: the four elements at `at + off` of the key and of every query row.
    let step = |at: &Index, off: i64| {
        let k = Value::load(K, key.clone() + at.clone() + c(off));
        let mut out = vec![Stmt::set(vars.key, k)];
        out.extend((0..t.rows).map(|r| {
            let q = Value::load(Q, t.q.clone() + at.clone() + c(r as i64 * plan.d + off));
            let acc = vars.dot[r];
            Stmt::set(acc, q.fma(Value::Var(vars.key), Value::Var(acc)))
        }));
        out
    };
    let mut body: Vec<Stmt> = (0..t.rows)
        .map(|r| Stmt::set(vars.dot[r], Value::Const(0.0)))
        .collect();
    // Steps in a loop (depth + 1), `d_unroll` per iteration, then the leftover steps.
    let unroll = plan.du.min(whole.max(1));
    let at = Index::Loop(keys.depth + 1) * c(4 * unroll);
    body.push(Stmt::for_range(
        c(0),
        c(whole / unroll),
        (0..unroll).flat_map(|u| step(&at, 4 * u)).collect(),
    ));
    for rest in whole / unroll * unroll..whole {
        body.extend(step(&c(0), 4 * rest));
    }
    for e in whole * 4..plan.d {
        body.push(Stmt::set(vars.scalar, Value::load(K, key.clone() + c(e))));
        for r in 0..t.rows {
            let q = Value::load(Q, t.q.clone() + c(r as i64 * plan.d + e));
            let acc = vars.dot_tail[r];
            body.push(Stmt::set(
                acc,
                match e - whole * 4 {
                    0 => q * Value::Var(vars.scalar),
                    _ => q.fma(Value::Var(vars.scalar), Value::Var(acc)),
                },
            ));
        }
    }
    for r in 0..t.rows {
        let vector = Value::Var(vars.dot[r]).reduce(Binary::Add);
        let dot = match (whole > 0, plan.d % 4 > 0) {
            (true, true) => vector + Value::Var(vars.dot_tail[r]),
            (true, false) => vector,
            _ => Value::Var(vars.dot_tail[r]),
        };
        let mut s = match (plan.mask, &keys.mask) {
            (Some(m), Some(base)) => {
                let at = base.clone() + jj.clone() + Index::Size(MASK_SQ) * c(r as i64);
                dot.fma(Value::Const(plan.scale), Value::load(m, at))
            }
            _ => dot * Value::Const(plan.scale),
        };
        if plan.causal {
            s = Value::select(
                Compare::Lt,
                Value::FromIndex(t.first.clone() + c(r as i64) + Index::Size(PAST)),
                Value::FromIndex(keys.j0.clone() + jj.clone()),
                Value::Const(f32::NEG_INFINITY),
                s,
            );
        }
        let at = t.s.clone() + jj.clone() + c(r as i64 * plan.row_len());
        body.push(Stmt::store(plan.scratch, at, s, 1));
    }
    Stmt::for_range(c(0), keys.n.clone(), body)
}

/// Fills the scores after the `n` of the key tile up to a whole vector with -inf.
fn pad(plan: &Plan, t: &Tile, keys: &Keys) -> Vec<Stmt> {
    let jj = Index::Loop(keys.depth);
    let end = (keys.n.clone() + c(3)) / c(4) * c(4);
    (0..t.rows)
        .map(|r| {
            let at = t.s.clone() + jj.clone() + c(r as i64 * plan.row_len());
            Stmt::for_range(
                keys.n.clone(),
                end.clone(),
                vec![Stmt::store(
                    plan.scratch,
                    at,
                    Value::Const(f32::NEG_INFINITY),
                    1,
                )],
            )
        })
        .collect()
}

/// The online softmax step of row `r` over the scores of the key tile: the new running max,
/// the rescale factor `alpha = e^(m_old - m_new)`, the scores replaced by `e^(s - m_new)`,
/// and `l = l * alpha + sum`. A max of -inf (nothing seen yet) is taken as 0 so that masked
/// scores give 0, not NaN.
fn softmax_row(plan: &Plan, vars: &Vars, t: &Tile, keys: &Keys, r: usize) -> Vec<Stmt> {
    let (m, l, alpha) = (
        extra(plan, t, r, 0),
        extra(plan, t, r, 1),
        extra(plan, t, r, 2),
    );
    let vectors = (keys.n.clone() + c(3)) / c(4);
    let at = t.s.clone() + Index::Loop(keys.depth) * c(4) + c(r as i64 * plan.row_len());
    let scores = Value::load(plan.scratch, at.clone());
    let neg_inf = Value::Const(f32::NEG_INFINITY);
    vec![
        Stmt::set(vars.max, neg_inf.clone()),
        Stmt::for_range(
            c(0),
            vectors.clone(),
            vec![Stmt::set(
                vars.max,
                Value::Var(vars.max).binary(Binary::Max, scores.clone()),
            )],
        ),
        Stmt::set(
            vars.new_max,
            Value::load(plan.scratch, m.clone())
                .binary(Binary::Max, Value::Var(vars.max).reduce(Binary::Max)),
        ),
        Stmt::set(
            vars.safe_max,
            Value::select(
                Compare::Eq,
                Value::Var(vars.new_max),
                neg_inf,
                Value::Const(0.0),
                Value::Var(vars.new_max),
            ),
        ),
        Stmt::store(
            plan.scratch,
            alpha.clone(),
            (Value::load(plan.scratch, m.clone()) - Value::Var(vars.safe_max)).unary(Unary::Exp),
            1,
        ),
        Stmt::set(vars.sum, Value::Const(0.0)),
        Stmt::for_range(
            c(0),
            vectors,
            vec![
                Stmt::set(
                    vars.prob,
                    (scores - Value::Var(vars.safe_max).splat()).unary(Unary::Exp),
                ),
                Stmt::store(plan.scratch, at, Value::Var(vars.prob), 4),
                Stmt::set(vars.sum, Value::Var(vars.sum) + Value::Var(vars.prob)),
            ],
        ),
        Stmt::store(
            plan.scratch,
            l.clone(),
            Value::load(plan.scratch, l).fma(
                Value::load(plan.scratch, alpha),
                Value::Var(vars.sum).reduce(Binary::Add),
            ),
            1,
        ),
        Stmt::store(plan.scratch, m, Value::Var(vars.new_max), 1),
    ]
}

/// `Y = Y * alpha + P V` over the key tile for every row: groups of up to `pv_rows` rows
/// times a few blocks of four columns, each in an f32x4 accumulator (each value vector loaded
/// is used by every row of the group, each broadcast probability by every column block),
/// then the last `Dv % 4` columns one at a time.
fn accumulate(plan: &Plan, vars: &Vars, t: &Tile, keys: &Keys) -> Vec<Stmt> {
    let blocks = plan.dv / 4;
    let mut out = vec![];
    for first in (0..t.rows).step_by(plan.pr as usize) {
        let rows = first..t.rows.min(first + plan.pr as usize);
        let cb = plan.column_blocks(rows.len() as i64);
        let group = |col: &Index, cb: i64, depth: usize| {
            let g = Group {
                rows: rows.clone(),
                col: col.clone(),
                cb,
                depth,
            };
            column_group(plan, vars, t, keys, &g)
        };
        // Whole groups of `cb` blocks in a loop (depth), keys inside (depth + 1); then the
        // leftover blocks one at a time, keys at depth.
        let col = Index::Loop(keys.depth) * c(4 * cb);
        out.push(Stmt::for_range(
            c(0),
            c(blocks / cb),
            group(&col, cb, keys.depth + 1),
        ));
        for b in blocks / cb * cb..blocks {
            out.extend(group(&c(4 * b), 1, keys.depth));
        }
    }
    out.extend(last_columns(plan, vars, t, keys));
    out
}

/// Rows and output columns of the `P V` product accumulated in registers at once.
struct Group {
    /// Rows of the tile.
    rows: std::ops::Range<usize>,
    /// First column.
    col: Index,
    /// Blocks of four columns.
    cb: i64,
    /// Nesting depth of the key loop.
    depth: usize,
}

/// The probability of row `r` for key `jj` of the tile (a constant part of `jj` kept last,
/// where the backend folds it into the address).
fn prob(plan: &Plan, t: &Tile, r: usize, jj: &Index) -> Value {
    let (jj, k) = match jj {
        Index::Add(x, k) => match **k {
            Index::Const(k) => (&**x, k),
            _ => (jj, 0),
        },
        _ => (jj, 0),
    };
    let at = t.s.clone() + jj.clone() + c(r as i64 * plan.row_len() + k);
    Value::load(plan.scratch, at)
}

/// `Y = Y * alpha + P V` for one group of rows and column blocks over the key tile.
fn column_group(plan: &Plan, vars: &Vars, t: &Tile, keys: &Keys, g: &Group) -> Vec<Stmt> {
    let acc = |r: usize, b: i64| vars.out[(r - g.rows.start) * g.cb as usize + b as usize];
    let y = |r: usize, b: i64| t.y.clone() + g.col.clone() + c(r as i64 * plan.dv + 4 * b);
    let blocks = || (0..g.cb).flat_map(|b| g.rows.clone().map(move |r| (r, b)));
    let mut out: Vec<Stmt> = blocks()
        .map(|(r, b)| {
            let alpha = Value::load(plan.scratch, extra(plan, t, r, 2));
            Stmt::set(acc(r, b), Value::load(plan.y, y(r, b)) * alpha.splat())
        })
        .collect();
    // Keys `first + u` for u in 0..`p_unroll` per iteration, then the leftover keys.
    let step = |first: &Index, u: i64| {
        let row = keys.v.clone() + g.col.clone() + first.clone() * c(plan.dv);
        let mut out: Vec<Stmt> = (0..g.cb)
            .map(|b| {
                let at = row.clone() + c(u * plan.dv + 4 * b);
                Stmt::set(vars.values[b as usize], Value::load(V, at))
            })
            .collect();
        for r in g.rows.clone() {
            let p = prob(plan, t, r, &(first.clone() + c(u)));
            out.push(Stmt::set(vars.broadcast, p.splat()));
            out.extend((0..g.cb).map(|b| {
                let a = acc(r, b);
                let v = Value::Var(vars.values[b as usize]);
                Stmt::set(a, Value::Var(vars.broadcast).fma(v, Value::Var(a)))
            }));
        }
        out
    };
    let first = Index::Loop(g.depth) * c(plan.pu);
    let whole = keys.n.clone() / c(plan.pu) * c(plan.pu);
    out.push(Stmt::for_range(
        c(0),
        keys.n.clone() / c(plan.pu),
        (0..plan.pu).flat_map(|u| step(&first, u)).collect(),
    ));
    out.push(Stmt::for_range(
        whole,
        keys.n.clone(),
        step(&Index::Loop(g.depth), 0),
    ));
    out.extend(blocks().map(|(r, b)| Stmt::store(plan.y, y(r, b), Value::Var(acc(r, b)), 4)));
    out
}

/// `Y = Y * alpha + P V` for the last `Dv % 4` columns, one at a time, keys at depth.
fn last_columns(plan: &Plan, vars: &Vars, t: &Tile, keys: &Keys) -> Vec<Stmt> {
    let jj = Index::Loop(keys.depth);
    let mut out = vec![];
    for e in plan.dv / 4 * 4..plan.dv {
        let y = |r: usize| t.y.clone() + c(r as i64 * plan.dv + e);
        out.extend((0..t.rows).map(|r| {
            let alpha = Value::load(plan.scratch, extra(plan, t, r, 2));
            Stmt::set(vars.out_tail[r], Value::load(plan.y, y(r)) * alpha)
        }));
        let value = keys.v.clone() + jj.clone() * c(plan.dv) + c(e);
        let mut step = vec![Stmt::set(vars.scalar, Value::load(V, value))];
        step.extend((0..t.rows).map(|r| {
            let acc = vars.out_tail[r];
            let p = prob(plan, t, r, &jj);
            Stmt::set(acc, p.fma(Value::Var(vars.scalar), Value::Var(acc)))
        }));
        out.push(Stmt::for_range(c(0), keys.n.clone(), step));
        out.extend((0..t.rows).map(|r| Stmt::store(plan.y, y(r), Value::Var(vars.out_tail[r]), 1)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::elementwise::tests::Rng;
    use crate::templates::testing::run;
    use kiln_ir::interp::{eval_op, Bindings};
    use kiln_ir::{Attr, Attrs, Op, OpKind, Tensor};
    use ndarray::Axis;

    /// One attention problem. `mask` is a pattern over `b`, `h`, `q`, `k` and `1` giving the
    /// mask's shape (`"b11k"` is `[B, 1, 1, Skv]`); `mask_len` overrides the size of its `k`.
    #[derive(Clone, Debug)]
    struct Case {
        b: usize,
        hq: usize,
        hkv: usize,
        sq: usize,
        skv: usize,
        d: usize,
        dv: usize,
        causal: bool,
        /// Keys of the cache before the first query (with `causal`).
        past: usize,
        scale: Option<f32>,
        mask: Option<&'static str>,
        mask_len: Option<usize>,
        symbolic: bool,
        schedule: Schedule,
    }

    impl Case {
        fn new(b: usize, hq: usize, hkv: usize, sq: usize, skv: usize, d: usize) -> Case {
            Case {
                b,
                hq,
                hkv,
                sq,
                skv,
                d,
                dv: d,
                causal: false,
                past: 0,
                scale: None,
                mask: None,
                mask_len: None,
                symbolic: false,
                schedule: Schedule::default(),
            }
        }

        fn mask_shape(&self) -> Option<(Vec<usize>, Vec<Dim>)> {
            let (b, s, t) = if self.symbolic {
                (Dim::sym("b"), Dim::sym("s"), Dim::sym("t"))
            } else {
                (self.b.into(), self.sq.into(), self.skv.into())
            };
            let len = self.mask_len.unwrap_or(self.skv);
            let pattern = self.mask?;
            Some(
                pattern
                    .chars()
                    .map(|ch| match ch {
                        'b' => (self.b, b.clone()),
                        'h' => (self.hq, self.hq.into()),
                        'q' => (self.sq, s.clone()),
                        'k' if self.mask_len.is_some() => (len, len.into()),
                        'k' => (len, t.clone()),
                        _ => (1, 1usize.into()),
                    })
                    .unzip(),
            )
        }

        fn spec(&self) -> AttentionSpec {
            let (b, s, t) = if self.symbolic {
                (Dim::sym("b"), Dim::sym("s"), Dim::sym("t"))
            } else {
                (self.b.into(), self.sq.into(), self.skv.into())
            };
            AttentionSpec {
                q: vec![b.clone(), self.hq.into(), s, self.d.into()],
                k: vec![b.clone(), self.hkv.into(), t.clone(), self.d.into()],
                v: vec![b, self.hkv.into(), t, self.dv.into()],
                mask: self.mask_shape().map(|(_, dims)| dims),
                scale: self.scale,
                causal: self.causal.then(|| match self.symbolic {
                    true => Dim::sym("p"),
                    false => self.past.into(),
                }),
            }
        }

        fn bindings(&self) -> Bindings {
            [
                ("b", self.b),
                ("s", self.sq),
                ("t", self.skv),
                ("p", self.past),
            ]
            .iter()
            .map(|&(k, v)| (k.to_string(), v as i64))
            .collect()
        }

        /// Random Q, K, V and mask. Mask entries are 0, small, -10000 or -inf, but never
        /// large negatives at key 0, so no row is masked entirely (and the -10000 entries
        /// never set a row's maximum, where f32 and the interpreter's f64 would differ).
        fn inputs(&self, rng: &mut Rng) -> Vec<Tensor> {
            let mut random = |shape: &[usize], amplitude: f32| {
                let n = shape.iter().product();
                let data = (0..n).map(|_| rng.uniform() * amplitude).collect();
                Tensor::from_vec(shape, data).unwrap()
            };
            let mut out = vec![
                random(&[self.b, self.hq, self.sq, self.d], 1.5),
                random(&[self.b, self.hkv, self.skv, self.d], 1.5),
                random(&[self.b, self.hkv, self.skv, self.dv], 1.0),
            ];
            if let Some((shape, _)) = self.mask_shape() {
                let len = *shape.last().unwrap();
                let n: usize = shape.iter().product();
                let data = (0..n)
                    .map(|i| match (i % len.max(1), rng.below(8)) {
                        (_, 0..=3) => 0.0,
                        (_, 4) | (0, _) => rng.uniform() * 2.0,
                        (_, 5 | 6) => -10000.0,
                        _ => f32::NEG_INFINITY,
                    })
                    .collect();
                out.push(Tensor::from_vec(&shape, data).unwrap());
            }
            out
        }

        /// Checks the kernel against the interpreter on `inputs`, with 1 and 3 chunks.
        fn check_on(&self, inputs: &[Tensor]) {
            let built = attention(&self.spec(), &self.schedule).unwrap();
            let mut attrs = Attrs::default();
            attrs.set("is_causal", Attr::Int(self.causal as i64));
            if let Some(s) = self.scale {
                attrs.set("scale", Attr::Float(s));
            }
            let want = if self.past == 0 {
                let args: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
                let op = Op::new(OpKind::FusedAttention, attrs);
                eval_op(&op, &args, &Bindings::new()).unwrap().remove(0)
            } else {
                // ONNX Attention with a KV cache: the first `past` keys and values are the
                // cache, the rest the new ones.
                let split = |t: &Tensor, from: usize, to: usize| {
                    let a = t.to_f32_array();
                    Tensor::F32(a.slice_axis(Axis(2), (from..to).into()).to_owned())
                };
                let (k, v) = (&inputs[1], &inputs[2]);
                let cached = [(0, self.past), (self.past, self.skv)];
                let [(pk, pv), (nk, nv)] = cached.map(|(a, b)| (split(k, a, b), split(v, a, b)));
                let mask = inputs.get(3);
                let args = vec![
                    Some(&inputs[0]),
                    Some(&nk),
                    Some(&nv),
                    mask,
                    Some(&pk),
                    Some(&pv),
                ];
                let op = Op::new(OpKind::Attention, attrs);
                eval_op(&op, &args, &Bindings::new()).unwrap().remove(0)
            };
            let want = want.to_f32_array();
            let shape = vec![self.b, self.hq, self.sq, self.dv];
            for chunks in [1, 3] {
                let got = run(
                    &built,
                    inputs,
                    std::slice::from_ref(&shape),
                    &self.bindings(),
                    chunks,
                );
                let got = got[0].to_f32_array();
                for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                    let ok = if w.is_nan() {
                        g.is_nan()
                    } else {
                        (g - w).abs() <= 1e-4 * w.abs().max(1.0)
                    };
                    assert!(ok, "{self:?} chunks {chunks}: element {i}: {g} vs {w}");
                }
            }
        }

        fn check(&self, rng: &mut Rng) {
            self.check_on(&self.inputs(rng));
        }
    }

    #[test]
    fn random_shapes_match_the_interpreter() {
        let mut rng = Rng::from_state(0x9e37_79b9_7f4a_7c15);
        let seqs = [1, 2, 5, 17, 64, 100];
        for _ in 0..48 {
            let (hq, hkv) = rng.pick(&[(1, 1), (2, 2), (4, 2), (4, 1), (3, 3)]);
            let d = rng.pick(&[1, 3, 8, 64]);
            let mut case = Case::new(
                rng.pick(&[1, 2]),
                hq,
                hkv,
                rng.pick(&seqs),
                rng.pick(&seqs),
                d,
            );
            case.dv = if rng.below(3) == 0 {
                rng.pick(&[1, 3, 8, 64])
            } else {
                d
            };
            case.causal = rng.below(2) == 0;
            if case.causal && rng.below(2) == 0 {
                case.past = rng.below(case.skv + 1);
            }
            case.scale = rng.pick(&[None, Some(0.3), Some(1.0)]);
            case.mask = rng.pick(&[None, Some("b11k"), Some("qk"), Some("bhqk"), Some("k")]);
            case.symbolic = rng.below(2) == 0;
            let (pv_rows, pv_cols) = rng.pick(&[(8, 1), (4, 2), (1, 4), (3, 3)]);
            case.schedule = Schedule::default()
                .with("q_tile", rng.pick(&[1, 3, 4, 8]))
                .with("k_tile", rng.pick(&[4, 8, 64]))
                .with("d_unroll", rng.pick(&[1, 2, 3, 4]))
                .with("p_unroll", rng.pick(&[1, 2, 3]))
                .with("pv_rows", pv_rows)
                .with("pv_cols", pv_cols);
            case.check(&mut rng);
        }
    }

    #[test]
    fn decode_prefill_and_grouped_heads_match_the_interpreter() {
        let mut rng = Rng::from_state(7);
        for causal in [false, true] {
            for (sq, skv) in [(1, 100), (1, 1), (64, 64), (17, 5), (5, 17), (100, 100)] {
                let mut case = Case::new(2, 4, 2, sq, skv, 64);
                case.causal = causal;
                case.mask = Some("b11k");
                case.symbolic = true;
                case.check(&mut rng);
                case.mask = None;
                case.hkv = 4;
                case.check(&mut rng);
            }
        }
    }

    /// Decode steps and chunked prefill after a KV cache: causal with `past` cached keys.
    #[test]
    fn causal_attention_after_a_cache_matches_the_interpreter() {
        let mut rng = Rng::from_state(5);
        for (sq, skv, past) in [(1, 100, 99), (1, 1, 0), (5, 17, 12), (3, 3, 0), (8, 70, 62)] {
            let mut case = Case::new(2, 4, 2, sq, skv, 64);
            case.causal = true;
            case.past = past;
            case.symbolic = true;
            case.check(&mut rng);
            case.mask = Some("b11k");
            case.symbolic = false;
            case.check(&mut rng);
        }
    }

    #[test]
    fn fully_masked_rows_give_nan_like_the_interpreter() {
        let mut rng = Rng::from_state(11);
        for causal in [false, true] {
            let mut case = Case::new(2, 2, 1, 5, 17, 8);
            case.causal = causal;
            case.mask = Some("bhqk");
            case.schedule = Schedule::default().with("q_tile", 3).with("k_tile", 8);
            let mut inputs = case.inputs(&mut rng);
            let mut mask: Vec<f32> = inputs[3].to_f32_array().iter().copied().collect();
            // Row 2 of (b 0, h 1) and all of batch 1, head 0 see nothing.
            let row = |b: usize, h: usize, i: usize| ((b * 2 + h) * 5 + i) * 17;
            mask[row(0, 1, 2)..row(0, 1, 3)].fill(f32::NEG_INFINITY);
            mask[row(1, 0, 0)..row(1, 1, 0)].fill(f32::NEG_INFINITY);
            inputs[3] = Tensor::from_vec(&[2, 2, 5, 17], mask).unwrap();
            case.check_on(&inputs);
        }
    }

    #[test]
    fn masks_shorter_than_the_keys_mask_the_rest() {
        let mut rng = Rng::from_state(13);
        for (pattern, len) in [("qk", 3), ("k", 1), ("b11k", 16)] {
            for causal in [false, true] {
                let mut case = Case::new(2, 2, 2, 5, 17, 3);
                case.causal = causal;
                case.mask = Some(pattern);
                case.mask_len = Some(len);
                case.symbolic = true;
                case.schedule = Schedule::default().with("k_tile", 4);
                case.check(&mut rng);
            }
        }
    }

    #[test]
    fn one_kernel_serves_every_length() {
        let mut rng = Rng::from_state(17);
        let mut case = Case::new(1, 4, 2, 1, 1, 8);
        case.symbolic = true;
        case.causal = true;
        case.mask = Some("b11k");
        let built = attention(&case.spec(), &case.schedule).unwrap();
        for (b, sq, skv) in [(1, 1, 1), (2, 5, 17), (1, 17, 5), (1, 1, 100), (2, 9, 64)] {
            let case = Case {
                b,
                sq,
                skv,
                ..case.clone()
            };
            assert_eq!(attention(&case.spec(), &case.schedule).unwrap(), built);
            case.check(&mut rng);
        }
        // No keys at all: zeros, as in the interpreter.
        let empty = Case::new(1, 2, 2, 3, 0, 4);
        empty.check(&mut rng);
    }

    #[test]
    fn unsupported_shapes_and_schedules_are_errors() {
        let case = Case::new(1, 4, 2, 5, 7, 8);
        let schedule = Schedule::default();
        let err =
            |spec: AttentionSpec, schedule: &Schedule| attention(&spec, schedule).unwrap_err();
        let mut spec = case.spec();
        spec.k[1] = 3usize.into();
        spec.v[1] = 3usize.into();
        assert!(err(spec, &schedule).contains("multiple"));
        let mut spec = case.spec();
        spec.k[3] = 4usize.into();
        assert!(err(spec, &schedule).contains("do not match"));
        let mut spec = case.spec();
        spec.q[3] = Dim::sym("d");
        spec.k[3] = Dim::sym("d");
        assert!(err(spec, &schedule).contains("head size"));
        let mut spec = case.spec();
        spec.q.pop();
        assert!(err(spec, &schedule).contains("rank 4"));
        let mut spec = case.spec();
        spec.mask = Some(vec![2usize.into(), 7usize.into()]);
        assert!(err(spec, &schedule).contains("broadcast"));
        let mut spec = case.spec();
        spec.mask = Some(vec![8usize.into()]);
        assert!(err(spec, &schedule).contains("longer"));
        let mut spec = case.spec();
        spec.scale = Some(-1.0);
        assert!(err(spec, &schedule).contains("scale"));
        assert!(err(case.spec(), &schedule.clone().with("k_tile", 6)).contains("k_tile"));
        assert!(err(case.spec(), &schedule.with("q_tile", 9)).contains("q_tile"));
    }
}

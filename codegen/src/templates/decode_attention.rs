//! Attention for few queries (decoding), split over the keys: flash decoding. Two kernels,
//! run in turn, compute what [`super::attention`] does for the same [`AttentionSpec`]:
//!
//! 1. *Partial*: a parallel iteration is one (batch item, KV head, split). It takes the
//!    query heads that share the KV head (grouped-query attention) together, so each byte of
//!    the cache is read once per step whatever the group size, and walks the keys of its
//!    split — the `splits`-th part of the keys any query of the item sees — with an online
//!    softmax. It writes, per query row, the unnormalised output `Σ e^(s - m) V`, the maximum
//!    score `m` and the sum `l = Σ e^(s - m)` to the partials `[B, Hkv, splits, Sq, G, Dv + 2]`
//!    (`G = Hq / Hkv`).
//! 2. *Combine*: a parallel iteration is one (batch item, query head, query); it rescales the
//!    splits' partials to their common maximum, sums them and divides by the summed `l`.
//!
//! # Design
//!
//! The flash kernel puts queries in the vector lanes, which a decode step (one query per head)
//! fills to 1 / L; and its parallel iterations are (batch, query head) pairs, which read each
//! KV head's keys `G` times and leave a core idle when there are fewer heads than threads
//! allow to balance (SmolLM2: 3 KV heads on 2 cores). Here the head dimension is in the lanes
//! (`D / L` vectors per row, then narrower pieces where `L` does not divide it):
//! - `Q Kᵀ`: per key, the key's row is loaded once into `D / L` vectors, and each of the
//!   block's query rows (`rows` query heads of one query position, their `Q · scale` loaded
//!   into registers once per block) multiplies it and sums the products horizontally into one
//!   score, stored to the scratch (`[rows][k_tile]`); keys past the tile's end are stored as
//!   -inf. (Reloaded from the scratch for every key instead, the SmolLM2-shaped decode step at
//!   past 2048 spent about 6% more in attention at 1 thread: median of 10 paired runs 0.946;
//!   at 2 threads the difference was within the noise);
//! - the online softmax runs on whole vectors of `L` scores of a row: the tile's maximum, the
//!   rescale factor `e^(m_old - m_new)` of the row's accumulators, the probabilities (stored
//!   over the scores) and their sum;
//! - `P V`: per key, the value row is loaded once and each query row adds its probability
//!   times it to its `Dv / L` accumulators, which stay in registers over the whole split.
//!
//! The splits are of the keys the item's queries see (`[start, end)`: causal, window, mask
//! length and the item's filled length applied), cut in `splits` equal parts at run time; a
//! query position whose range misses a split (causal with several queries, a window) leaves
//! that split's partial empty (`m = -inf`, `l = 0`), which the combine weighs 0. With
//! `splits` = 4 and SmolLM2's 3 KV heads a step has 12 iterations, 6 per core. Several query
//! positions (`Sq` > 1: verification of drafted tokens) are taken one at a time, each reading
//! the split's keys again (from the caches, for a split of a few hundred keys).
//!
//! A row with no visible key gives zeros, as in the flash kernel; the mask is the flash
//! kernel's (additive f32, right-aligned to `[B, Hq, Sq, Skv]`, its last dim capping the
//! keys).
//!
//! Schedule parameters (name: default):
//! - `lanes`: 4 — the widest vector (the runtime sets the backend's);
//! - `splits`: 4 — parts the keys are split in (1..=32);
//! - `k_tile`: 64 — keys per online-softmax step, a multiple of `lanes` up to `16 lanes`;
//! - `rows`: 4 — query heads per block (1..=8): each holds `Dv / L` accumulators, so 4 rows
//!   of `Dv` = 64 at 16 lanes take 16 of AVX-512's 32 registers.
//!
//! Kernel layouts: the partial kernel's buffers are Q, K, V, mask?, lengths?, partials,
//! scratch, its size parameters those of the flash kernel (2.. are `Sq`, `Skv`, `past`, then
//! the mask's last dim and strides), its parallel range `B · Hkv · splits`; the combine's are
//! partials and Y, size parameter 2 is `Sq`, its range `B · Hq · Sq`.

use super::attention::{
    self, c, AttentionSpec, Checked, Lets, HI, K, LO, MASK_LEN, MASK_SB, MASK_SH, MASK_SQ, PAST, Q,
    SKV, SQ, V,
};
use super::{Arg, Built};
use crate::kir::{Binary, Compare, Index, Kernel, Stmt, Unary, Value};
use crate::schedule::{range, Param, Space};
use crate::Schedule;
use kiln_ir::Dim;

/// The two kernels of one decode attention and the intermediate between them.
#[derive(Clone, Debug)]
pub struct DecodeAttention {
    /// The partial attention of each split: group inputs Q, K, V, mask?, lengths?; output 0
    /// the partials.
    pub partial: Built,
    /// The combination of the splits: input 0 the partials; output 0 Y `[B, Hq, Sq, Dv]`.
    pub combine: Built,
    /// The shape of the partials, `[B, Hkv, splits, Sq, G, Dv + 2]`.
    pub partials: Vec<Dim>,
}

/// The template's parameters (the module documentation says what each does).
pub fn space() -> Space {
    Space {
        template: "attention_decode",
        version: 2,
        params: vec![
            Param {
                name: "lanes",
                doc: "elements of the head dimension per vector (the backend's widest vector)",
                values: |_| vec![4, 8, 16],
                default: |_| 4,
            },
            Param {
                name: "splits",
                doc: "parts the keys are split in, each a parallel iteration",
                values: |_| range(1, 32),
                default: |_| 4,
            },
            Param {
                name: "k_tile",
                doc: "keys per online-softmax step (a multiple of lanes)",
                values: |s| (1..=16).map(|i| i * s.value("lanes")).collect(),
                default: |_| 64,
            },
            Param {
                name: "rows",
                doc: "query heads per block, whose accumulators stay in registers",
                values: |_| range(1, 8),
                default: |_| 4,
            },
        ],
    }
}

/// Whether the decode kernels are the ones for an attention of `queries` queries per head
/// (Q's dim 2) that reads its keys `lengths` deep or not: when it reads a cache filled to a
/// length (a decode entry point, whatever its number of new tokens) or has at most 8 queries.
pub fn suits(queries: &Dim, lengths: bool) -> bool {
    lengths || queries.as_known().is_some_and(|s| s <= 8)
}

/// Consecutive pieces `(offset, lanes)` covering `n` elements: vectors of `lanes`, then
/// narrower ones (8, 4) and single elements for the rest.
fn pieces(n: i64, lanes: i64) -> Vec<(i64, u8)> {
    let mut out = vec![];
    let mut at = 0;
    for width in [lanes, 8, 4, 1] {
        if width > lanes {
            continue;
        }
        while n - at >= width {
            out.push((at, width as u8));
            at += width;
        }
    }
    out
}

/// The validated shapes and schedule.
struct Plan {
    shapes: Checked,
    /// Query heads per KV head.
    group: i64,
    lanes: i64,
    splits: i64,
    tk: i64,
    rows: i64,
    causal: bool,
    window: Option<i64>,
    /// Buffer of the mask, of the lengths, of the partials and of the scratch.
    mask: Option<usize>,
    lengths: Option<usize>,
    out: usize,
    scratch: usize,
}

impl Plan {
    /// f32 slots of one partial row: `Dv` sums, `m`, `l`.
    fn stride(&self) -> i64 {
        self.shapes.dv_n + 2
    }

    /// f32 slots of an iteration's scratch: the block's scores, `[rows][k_tile]`.
    fn region(&self) -> i64 {
        self.rows * self.tk
    }
}

/// The variables of the partial kernel: the key (or value) row, the rows' accumulators, their
/// running max and sum, and the softmax's temporaries.
struct Vars {
    lanes: Vec<u8>,
    /// The pieces of a key row.
    key: Vec<usize>,
    /// `query[r]`: the pieces of row `r`'s `Q · scale`, loaded once per block.
    query: Vec<Vec<usize>>,
    /// The pieces of a value row.
    value: Vec<usize>,
    /// `acc[r]`: the pieces of row `r`'s accumulator.
    acc: Vec<Vec<usize>>,
    max: Vec<usize>,
    sum: Vec<usize>,
    /// Vectors of `L` lanes: the tile's maximum, the probabilities' sum.
    tile_max: usize,
    tile_sum: usize,
    /// Scalars: the new maximum, it with -inf as 0, the rescale factor.
    new_max: usize,
    safe_max: usize,
    alpha: usize,
}

impl Vars {
    fn new(plan: &Plan) -> Vars {
        let mut lanes = vec![];
        let mut var = |l: u8| {
            lanes.push(l);
            lanes.len() - 1
        };
        let l = plan.lanes;
        let (d, dv) = (plan.shapes.d_n, plan.shapes.dv_n);
        // A row of `n` elements, as one variable per piece.
        let mut row = |n: i64| -> Vec<usize> { pieces(n, l).iter().map(|p| var(p.1)).collect() };
        let key = row(d);
        let value = row(dv);
        let rows = plan.rows.min(plan.group) as usize;
        let query = (0..rows).map(|_| row(d)).collect();
        let acc = (0..rows).map(|_| row(dv)).collect();
        let max = (0..rows).map(|_| var(1)).collect();
        let sum = (0..rows).map(|_| var(1)).collect();
        let (tile_max, tile_sum) = (var(l as u8), var(l as u8));
        let (new_max, safe_max, alpha) = (var(1), var(1), var(1));
        Vars {
            key,
            query,
            value,
            acc,
            max,
            sum,
            tile_max,
            tile_sum,
            new_max,
            safe_max,
            alpha,
            lanes,
        }
    }
}

/// Builds the two kernels for `spec` (see the module doc). Errors name the shape or
/// parameter the template does not support.
pub fn decode_attention(
    spec: &AttentionSpec,
    schedule: &Schedule,
) -> Result<DecodeAttention, String> {
    let shapes = attention::check(spec)?;
    let s = space().resolve(schedule)?;
    let past = spec.causal.clone().unwrap_or(Dim::known(0));
    let mut sizes = vec![shapes.sq.clone(), shapes.skv.clone(), past];
    let mut args = vec![Arg::Input(0), Arg::Input(1), Arg::Input(2)];
    if let Some(m) = &spec.mask {
        let full = [&shapes.b, &shapes.hq, &shapes.sq, &shapes.skv];
        sizes.extend(attention::mask_sizes(m, full)?);
        args.push(Arg::Input(3));
    }
    let lengths = spec.lengths.then(|| {
        args.push(Arg::Input(4));
        args.len() - 1
    });
    let plan = Plan {
        group: shapes.hq_n / shapes.hkv_n,
        lanes: s.value("lanes"),
        splits: s.value("splits"),
        tk: s.value("k_tile"),
        rows: s.value("rows"),
        causal: spec.causal.is_some(),
        window: attention::window(spec)?,
        mask: spec.mask.as_ref().map(|_| 3),
        lengths,
        out: args.len(),
        scratch: args.len() + 1,
        shapes,
    };
    let sh = &plan.shapes;
    let iterations = &(&sh.b * &sh.hkv) * &Dim::known(plan.splits);
    args.push(Arg::Output(0));
    args.push(Arg::Scratch(&iterations * &Dim::known(plan.region())));
    let vars = Vars::new(&plan);
    let flags = format!(
        "{}{}{}{}",
        if plan.causal { "_causal" } else { "" },
        plan.window.map(|w| format!("_w{w}")).unwrap_or_default(),
        if spec.mask.is_some() { "_mask" } else { "" },
        if spec.lengths { "_lengths" } else { "" },
    );
    let heads = format!("h{}x{}_d{}x{}", sh.hq_n, sh.hkv_n, sh.d_n, sh.dv_n);
    let partial = Built {
        kernel: Kernel {
            name: format!(
                "attention_decode_{heads}_l{}_s{}_k{}_r{}{flags}",
                plan.lanes, plan.splits, plan.tk, plan.rows
            ),
            buffers: args.len(),
            sizes: 2 + sizes.len(),
            body: vec![partial_body(&plan, &vars)],
            vars: vars.lanes.clone(),
        },
        args,
        sizes,
        parallel: iterations,
    };
    let partials = vec![
        sh.b.clone(),
        sh.hkv.clone(),
        Dim::known(plan.splits),
        sh.sq.clone(),
        Dim::known(plan.group),
        Dim::known(plan.stride()),
    ];
    Ok(DecodeAttention {
        combine: combine(&plan, &heads),
        partial,
        partials,
    })
}

/// `a · b` over the row pieces `parts` (offset, width), both operands held in variables
/// piece by piece: the full-width pieces summed lanewise and reduced once, the narrower ones
/// reduced each.
fn dot(a: &[usize], b: &[usize], parts: &[(i64, u8)]) -> Value {
    let mut total: Option<Value> = None;
    let mut add = |v: Value| {
        total = Some(match total.take() {
            Some(t) => t + v,
            None => v,
        })
    };
    let widest = parts.first().map_or(1, |p| p.1);
    let mut lanewise: Option<Value> = None;
    for ((&x, &y), &(_, width)) in a.iter().zip(b).zip(parts) {
        let (k, x) = (Value::Var(x), Value::Var(y));
        if width == widest && width > 1 {
            lanewise = Some(match lanewise.take() {
                Some(acc) => k.fma(x, acc),
                None => k * x,
            });
        } else if width > 1 {
            add((k * x).reduce(Binary::Add, width));
        } else {
            add(k * x);
        }
    }
    if let Some(v) = lanewise {
        add(v.reduce(Binary::Add, widest));
    }
    total.unwrap_or(Value::Const(0.0))
}

/// The partial kernel: the parallel loop over (batch item, KV head, split), each walking its
/// query positions and, per block of query heads, its keys.
fn partial_body(plan: &Plan, vars: &Vars) -> Stmt {
    let sh = &plan.shapes;
    let p = Index::Loop(0);
    let mut lets = Lets::at(1);
    let per_item = sh.hkv_n * plan.splits;
    let b = lets.bind(p.clone() / c(per_item));
    let kvh = lets.bind(p.clone() / c(plan.splits) % c(sh.hkv_n));
    let split = lets.bind(p.clone() % c(plan.splits));
    let kv_row = lets.bind((b.clone() * c(sh.hkv_n) + kvh.clone()) * Index::Size(SKV));
    let keys = match plan.lengths {
        Some(buffer) => lets.bind(Index::load(buffer, b.clone())),
        None => Index::Size(SKV),
    };
    let past = match plan.lengths {
        Some(_) => keys.clone() - Index::Size(SQ),
        None => Index::Size(PAST),
    };
    let past = lets.bind(past);
    let mut end = keys;
    if plan.mask.is_some() {
        end = end.min(Index::Size(MASK_LEN));
    }
    if plan.causal {
        end = end.min(past.clone() + Index::Size(SQ));
    }
    let end = lets.bind(end.max(c(0)));
    let start = match plan.window {
        Some(w) => (past.clone() - c(w)).max(c(0)).min(end.clone()),
        None => c(0),
    };
    let start = lets.bind(start);
    let chunk = lets.bind((end.clone() - start.clone() + c(plan.splits - 1)) / c(plan.splits));
    let lo = lets.bind(start + split * chunk.clone());
    let hi = lets.bind((lo.clone() + chunk).min(end));
    let scratch = lets.bind(p.clone() * c(plan.region()));
    let mask = plan.mask.map(|_| {
        lets.bind(
            b.clone() * Index::Size(MASK_SB) + kvh.clone() * c(plan.group) * Index::Size(MASK_SH),
        )
    });
    // Row of Q of the group's first head at query 0; row of the partials of query 0.
    let q_row = lets.bind((b * c(sh.hq_n) + kvh * c(plan.group)) * Index::Size(SQ));
    let out_row = lets.bind(p * Index::Size(SQ) * c(plan.group));
    let at = Item {
        kv_row,
        past,
        lo,
        hi,
        scratch,
        mask,
        q_row,
        out_row,
        depth: lets.depth,
    };
    let mut blocks = vec![];
    let mut first = 0;
    while first < plan.group {
        let rows = plan.rows.min(plan.group - first);
        blocks.extend(block(plan, vars, &at, first, rows));
        first += rows;
    }
    let queries = Stmt::for_range(c(0), Index::Size(SQ), blocks);
    Stmt::for_range(Index::Size(LO), Index::Size(HI), lets.wrap(vec![queries]))
}

/// Values of one parallel iteration of the partial kernel, bound before its query loop (at
/// loop depth `depth`, whose counter is the query).
struct Item {
    /// Row of K and V where the KV head's keys start.
    kv_row: Index,
    /// Keys before the first query.
    past: Index,
    /// The split's keys, `[lo, hi)`.
    lo: Index,
    hi: Index,
    /// Offset of the iteration's scratch.
    scratch: Index,
    /// Offset in the mask of the batch item and the group's first head.
    mask: Option<Index>,
    /// Row of Q of the group's first head at query 0.
    q_row: Index,
    /// Row of the partials of query 0 and the group's first head.
    out_row: Index,
    depth: usize,
}

/// One block of `rows` query heads from head `first` of the group at the query position
/// `Loop(at.depth)`: `Q · scale` into the scratch, the key tiles, the partial rows out.
fn block(plan: &Plan, vars: &Vars, at: &Item, first: i64, rows: i64) -> Vec<Stmt> {
    let sh = &plan.shapes;
    let (d, dv, tk, l) = (sh.d_n, sh.dv_n, plan.tk, plan.lanes);
    let query = Index::Loop(at.depth);
    let mut lets = Lets::at(at.depth + 1);
    // The keys this query sees within the split.
    let mut lo = at.lo.clone();
    if let Some(w) = plan.window {
        lo = lo.max(at.past.clone() + query.clone() - c(w));
    }
    let mut hi = at.hi.clone();
    if plan.causal {
        hi = hi.min(at.past.clone() + query.clone() + c(1));
    }
    let lo = lets.bind(lo);
    let hi = lets.bind(hi);
    let tiles = lets.bind(((hi.clone() - lo.clone()).max(c(0)) + c(tk - 1)) / c(tk));
    let mask = at.mask.as_ref().map(|m| {
        lets.bind(
            m.clone() + c(first) * Index::Size(MASK_SH) + query.clone() * Index::Size(MASK_SQ),
        )
    });
    let q_parts = pieces(d, l);
    let v_parts = pieces(dv, l);
    let rows_u = rows as usize;
    let score_at = |r: i64| at.scratch.clone() + c(r * tk);
    let mut out = vec![];
    for r in 0..rows {
        let row = at.q_row.clone() + c(first + r) * Index::Size(SQ) + query.clone();
        for (&var, &(offset, _)) in vars.query[r as usize].iter().zip(&q_parts) {
            let x = Value::load(Q, row.clone() * c(d) + c(offset)) * Value::Const(sh.scale);
            out.push(Stmt::set(var, x));
        }
    }
    for r in 0..rows_u {
        out.push(Stmt::set(vars.max[r], Value::Const(f32::NEG_INFINITY)));
        out.push(Stmt::set(vars.sum[r], Value::Const(0.0)));
        for &a in &vars.acc[r] {
            out.push(Stmt::set(a, Value::Const(0.0)));
        }
    }
    // The key tiles: loop at depth `tile`, the keys within a tile at `key`.
    let tile = lets.depth;
    let mut key_lets = Lets::at(tile + 1);
    let j0 = key_lets.bind(lo + Index::Loop(tile) * c(tk));
    let n = key_lets.bind(c(tk).min(hi - j0.clone()));
    let kv = key_lets.bind(at.kv_row.clone() + j0.clone());
    let mask_keys = mask.map(|m| key_lets.bind(m + j0));
    let key = Index::Loop(key_lets.depth);
    let mut scores = vec![];
    for (&var, &(offset, _)) in vars.key.iter().zip(&q_parts) {
        let k = Value::load(K, (kv.clone() + key.clone()) * c(d) + c(offset));
        scores.push(Stmt::set(var, k));
    }
    for r in 0..rows {
        let mut s = dot(&vars.key, &vars.query[r as usize], &q_parts);
        if let (Some(buffer), Some(m)) = (plan.mask, &mask_keys) {
            let head = c(r) * Index::Size(MASK_SH);
            s = s + Value::load(buffer, m.clone() + head + key.clone());
        }
        scores.push(Stmt::store(plan.scratch, score_at(r) + key.clone(), s, 1));
    }
    let mut step = vec![Stmt::for_range(c(0), n.clone(), scores)];
    let tail = (0..rows)
        .map(|r| {
            let x = Value::Const(f32::NEG_INFINITY);
            Stmt::store(plan.scratch, score_at(r) + key.clone(), x, 1)
        })
        .collect();
    step.push(Stmt::for_range(n.clone(), c(tk), tail));
    for r in 0..rows_u {
        step.extend(softmax(plan, vars, r, score_at(r as i64), &key));
    }
    let mut accumulate = vec![];
    for (&var, &(offset, _)) in vars.value.iter().zip(&v_parts) {
        let v = Value::load(V, (kv.clone() + key.clone()) * c(dv) + c(offset));
        accumulate.push(Stmt::set(var, v));
    }
    for r in 0..rows_u {
        let p = Value::load(plan.scratch, score_at(r as i64) + key.clone()).splat();
        for (&a, &v) in vars.acc[r].iter().zip(&vars.value) {
            let sum = p.clone().fma(Value::Var(v), Value::Var(a));
            accumulate.push(Stmt::set(a, sum));
        }
    }
    step.push(Stmt::for_range(c(0), n, accumulate));
    out.push(Stmt::for_range(c(0), tiles, key_lets.wrap(step)));
    for r in 0..rows_u {
        let row = (at.out_row.clone() + query.clone() * c(plan.group) + c(first + r as i64))
            * c(plan.stride());
        for (&a, &(offset, width)) in vars.acc[r].iter().zip(&v_parts) {
            out.push(Stmt::store(
                plan.out,
                row.clone() + c(offset),
                Value::Var(a),
                width,
            ));
        }
        let m = Value::Var(vars.max[r]);
        out.push(Stmt::store(plan.out, row.clone() + c(dv), m, 1));
        let s = Value::Var(vars.sum[r]);
        out.push(Stmt::store(plan.out, row + c(dv + 1), s, 1));
    }
    lets.wrap(out)
}

/// The online softmax of row `r` over the key tile whose scores are at `scores` in the
/// scratch (a loop counter at `key`'s depth walks its vectors): the new maximum, the rescale
/// of the row's sum and accumulators, the probabilities over the scores.
fn softmax(plan: &Plan, vars: &Vars, r: usize, scores: Index, key: &Index) -> Vec<Stmt> {
    let l = plan.lanes;
    let lanes = l as u8;
    let vector = || Value::load(plan.scratch, scores.clone() + key.clone() * c(l));
    let vectors = c(plan.tk / l);
    let (max, sum) = (vars.max[r], vars.sum[r]);
    let inf = Value::Const(f32::NEG_INFINITY);
    let mut out = vec![Stmt::set(vars.tile_max, inf.clone())];
    let running = Value::Var(vars.tile_max).binary(Binary::Max, vector());
    out.push(Stmt::for_range(
        c(0),
        vectors.clone(),
        vec![Stmt::set(vars.tile_max, running)],
    ));
    let tile_max = Value::Var(vars.tile_max).reduce(Binary::Max, lanes);
    out.push(Stmt::set(
        vars.new_max,
        Value::Var(max).binary(Binary::Max, tile_max),
    ));
    // Nothing seen yet (every score -inf): subtract 0, so that e^(-inf - m) is 0, not NaN.
    let safe = Value::select(
        Compare::Eq,
        Value::Var(vars.new_max),
        inf,
        Value::Const(0.0),
        Value::Var(vars.new_max),
    );
    out.push(Stmt::set(vars.safe_max, safe));
    let alpha = (Value::Var(max) - Value::Var(vars.safe_max)).unary(Unary::Exp);
    out.push(Stmt::set(vars.alpha, alpha));
    out.push(Stmt::set(vars.tile_sum, Value::Const(0.0)));
    let p = (vector() - Value::Var(vars.safe_max).splat()).unary(Unary::Exp);
    let at = scores.clone() + key.clone() * c(l);
    out.push(Stmt::for_range(
        c(0),
        vectors,
        vec![
            Stmt::store(plan.scratch, at.clone(), p, lanes),
            Stmt::set(
                vars.tile_sum,
                Value::Var(vars.tile_sum) + Value::load(plan.scratch, at),
            ),
        ],
    ));
    let tile_sum = Value::Var(vars.tile_sum).reduce(Binary::Add, lanes);
    out.push(Stmt::set(
        sum,
        Value::Var(sum).fma(Value::Var(vars.alpha), tile_sum),
    ));
    out.push(Stmt::set(max, Value::Var(vars.new_max)));
    for &a in &vars.acc[r] {
        out.push(Stmt::set(a, Value::Var(a) * Value::Var(vars.alpha).splat()));
    }
    out
}

/// The combine kernel: per (batch item, query head, query), the splits' partial rows rescaled
/// to their common maximum and summed, divided by their summed `l` (0 where it is 0).
fn combine(plan: &Plan, heads: &str) -> Built {
    let sh = &plan.shapes;
    let (dv, l, stride) = (sh.dv_n, plan.lanes, plan.stride());
    let mut lanes = vec![];
    let mut var = |l: u8| {
        lanes.push(l);
        lanes.len() - 1
    };
    let parts = pieces(dv, l);
    let acc: Vec<usize> = parts.iter().map(|p| var(p.1)).collect();
    let (max, safe, weight, total) = (var(1), var(1), var(1), var(1));
    const IN: usize = 0;
    const OUT: usize = 1;
    let p = Index::Loop(0);
    let mut lets = Lets::at(1);
    let item = lets.bind(p.clone() / (c(sh.hq_n) * Index::Size(SQ)));
    let head = lets.bind(p.clone() / Index::Size(SQ) % c(sh.hq_n));
    let query = p.clone() % Index::Size(SQ);
    let (kvh, g) = (head.clone() / c(plan.group), head % c(plan.group));
    // Row of the partials of split 0, and the rows between splits.
    let split_rows = lets.bind(Index::Size(SQ) * c(plan.group));
    let first = (item * c(sh.hkv_n) + kvh) * c(plan.splits) * split_rows.clone()
        + query * c(plan.group)
        + g;
    let first = lets.bind(first * c(stride));
    let split = Index::Loop(lets.depth);
    let row = first + split * split_rows * c(stride);
    let inf = Value::Const(f32::NEG_INFINITY);
    let mut body = vec![Stmt::set(max, inf.clone())];
    let m = Value::load(IN, row.clone() + c(dv));
    body.push(Stmt::for_range(
        c(0),
        c(plan.splits),
        vec![Stmt::set(
            max,
            Value::Var(max).binary(Binary::Max, m.clone()),
        )],
    ));
    body.push(Stmt::set(
        safe,
        Value::select(
            Compare::Eq,
            Value::Var(max),
            inf,
            Value::Const(0.0),
            Value::Var(max),
        ),
    ));
    body.push(Stmt::set(total, Value::Const(0.0)));
    for &a in &acc {
        body.push(Stmt::set(a, Value::Const(0.0)));
    }
    let mut each = vec![Stmt::set(weight, (m - Value::Var(safe)).unary(Unary::Exp))];
    let l_split = Value::load(IN, row.clone() + c(dv + 1));
    each.push(Stmt::set(
        total,
        Value::Var(weight).fma(l_split, Value::Var(total)),
    ));
    for (&a, &(offset, _)) in acc.iter().zip(&parts) {
        let x = Value::load(IN, row.clone() + c(offset));
        each.push(Stmt::set(
            a,
            Value::Var(weight).splat().fma(x, Value::Var(a)),
        ));
    }
    body.push(Stmt::for_range(c(0), c(plan.splits), each));
    let inverse = Value::select(
        Compare::Lt,
        Value::Const(0.0),
        Value::Var(total),
        Value::Const(1.0) / Value::Var(total),
        Value::Const(0.0),
    );
    body.push(Stmt::set(weight, inverse));
    for (&a, &(offset, width)) in acc.iter().zip(&parts) {
        let y = Value::Var(a) * Value::Var(weight).splat();
        body.push(Stmt::store(OUT, p.clone() * c(dv) + c(offset), y, width));
    }
    let loops = Stmt::for_range(Index::Size(LO), Index::Size(HI), lets.wrap(body));
    Built {
        kernel: Kernel {
            name: format!("attention_decode_combine_{heads}_l{l}_s{}", plan.splits),
            buffers: 2,
            sizes: 3,
            body: vec![loops],
            vars: lanes,
        },
        args: vec![Arg::Input(0), Arg::Output(0)],
        sizes: vec![sh.sq.clone()],
        parallel: &(&sh.b * &sh.hq) * &sh.sq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::attention::tests::{random_case, widths, Case};
    use crate::templates::elementwise::tests::Rng;

    /// A random schedule of the decode template at `lanes` lanes.
    fn random_schedule(rng: &mut Rng, lanes: i64) -> Schedule {
        Schedule::default()
            .with("lanes", lanes)
            .with("splits", rng.pick(&[1, 2, 3, 4, 7]))
            .with("k_tile", lanes * rng.pick(&[1, 2, 4]))
            .with("rows", rng.pick(&[1, 2, 3, 4, 8]))
    }

    /// `case` checked on the decode kernels with a random schedule.
    fn check(mut case: Case, rng: &mut Rng, lanes: i64) {
        case.decode = true;
        case.schedule = random_schedule(rng, lanes);
        case.check(rng);
    }

    #[test]
    fn random_few_query_shapes_match_the_interpreter() {
        let mut rng = Rng::from_state(0x5eed_dec0);
        for lanes in widths() {
            for _ in 0..if lanes == 4 { 40 } else { 24 } {
                let case = random_case(&mut rng, &[1, 2, 3, 5, 8, 17, 100], lanes);
                check(case, &mut rng, lanes);
            }
        }
    }

    #[test]
    fn caches_filled_to_lengths_are_read_only_that_far() {
        let mut rng = Rng::from_state(31);
        for lanes in widths() {
            for _ in 0..if lanes == 4 { 32 } else { 16 } {
                let mut case = random_case(&mut rng, &[1, 3, 8, 40, 100, 300], lanes);
                case.past = 0;
                case.sq = rng.pick(&[1, 1, 2, 5, 8]);
                case.mask = rng.pick(&[None, Some("b11k")]);
                case.mask_len = None;
                case.symbolic = false;
                let lengths = (0..case.b).map(|_| rng.below(case.skv + 1)).collect();
                case.lengths = Some(lengths);
                check(case, &mut rng, lanes);
            }
        }
    }

    #[test]
    fn grouped_heads_over_many_splits_match_the_interpreter() {
        let mut rng = Rng::from_state(37);
        for lanes in widths() {
            // SmolLM2's heads (9 over 3), a group larger than a block of rows, and one KV
            // head (multi-query), with more splits than keys in some.
            for (hq, hkv, skv) in [(9, 3, 300), (8, 1, 5), (6, 2, 1), (4, 4, 129)] {
                let mut case = Case::new(2, hq, hkv, 1, skv, 64);
                case.causal = true;
                case.past = skv - 1;
                check(case, &mut rng, lanes);
            }
            // A head size no vector width divides, and Dv unlike D.
            let mut case = Case::new(1, 4, 2, 2, 70, 36);
            case.dv = 5;
            case.mask = Some("bhqk");
            check(case, &mut rng, lanes);
        }
    }

    #[test]
    fn pieces_cover_the_head() {
        assert_eq!(pieces(64, 16), vec![(0, 16), (16, 16), (32, 16), (48, 16)]);
        assert_eq!(pieces(36, 16), vec![(0, 16), (16, 16), (32, 4)]);
        assert_eq!(pieces(13, 8), vec![(0, 8), (8, 4), (12, 1)]);
        assert_eq!(pieces(3, 4), vec![(0, 1), (1, 1), (2, 1)]);
    }

    #[test]
    fn suits_decode_steps_and_few_queries() {
        assert!(suits(&Dim::known(1), false));
        assert!(suits(&Dim::known(8), false));
        assert!(!suits(&Dim::known(9), false));
        assert!(!suits(&Dim::sym("s"), false));
        assert!(suits(&Dim::sym("s"), true));
    }
}

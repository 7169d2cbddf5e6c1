//! Flash-style fused attention, the kernel of [`kiln_ir::OpKind::FusedAttention`]:
//! `Y = softmax(Q Kᵀ · scale + mask, causal) V` on `[batch, heads, seq, head]` tensors, with
//! grouped-query heads (K and V may have fewer heads than Q).
//!
//! The kernel never materialises the `Sq × Skv` score matrix. Each parallel iteration is one
//! (batch, query head): it walks its query rows tile by tile, and for each tile the keys tile
//! by tile with an online softmax: the scores of the current key tile go to the scratch, the
//! running maximum `m` and sum `l` of each query are updated, and the output accumulators are
//! rescaled by `e^(m_old - m_new)` before the tile's `P · V` is added. At the end each
//! output row is divided by `l`.
//!
//! Layout: queries are in the vector lanes, L of them per vector, where L is the schedule's
//! `lanes` (4, 8 or 16: the backend's widest vector). A tile's queries form groups of L; the
//! scratch holds, per group, `Qᵀ · scale` as `[D][L]`, the scores and then probabilities of
//! the key tile as `[key][L]`, `m`, `l` and the rescale factor as one vector each, and the
//! output accumulator `Yᵀ` as `[Dv][L]`. Both products are then GEMM-shaped register tiles
//! with one vector per accumulator, the shape that suits Cranelift's FMA lowering (see
//! [`super::gemm`]): per element of D, `Q Kᵀ` loads one `Qᵀ` vector and broadcasts one
//! element of K per key of a block of `k_block` keys; per key, `P V` loads one vector of
//! probabilities and broadcasts one element of V per column of a block of `v_block` columns.
//! Every broadcast reads an input (K or V), which the backend folds into the instruction.
//! With `pair`, a register tile covers two groups: per element of D, `Q Kᵀ` loads both
//! groups' `Qᵀ` vectors and each broadcast of K feeds two FMAs (and likewise the broadcasts of
//! V in `P V`), which halves the broadcast loads per FMA, the bound of these loops on AVX-512
//! (two loads and two FMAs a cycle): seq 2048 went from 103–110 to 97–98 ms (best 103 to
//! 97), causal from 53–61 to 50–52 ms. A tile with an odd number of groups does its last group
//! alone.
//! The online softmax works on whole vectors of L queries, with no horizontal reductions; its
//! running max takes the even and the odd keys in two chains of `a < b ? b : a` (one `maxps`),
//! which made seq 2048 10% faster non-causal and 35% causal than one chain of the
//! NaN-propagating `Max`.
//! The last group of a head may be partial: its missing queries compute on zeros and are
//! never stored, and a decode step (`Sq = 1`) would process one group: L times the FMAs its
//! one query needs, and each KV head's keys once per query head. Lowering therefore gives
//! attentions of few queries to [`super::decode_attention`] (flash decoding) instead. With
//! L = 16 prefill is about 4× faster than with L = 4
//! (`attention_bench llvm`: LLVM on AVX-512, one thread, 12 heads of 64, Sq = Skv = 512: 6.8
//! against 25.5 ms for L = 4 with Cranelift, 118 against 32 GFLOP/s; seq 2048: 106 against
//! 397 ms, before `pair`; 97 ms with it).
//!
//! Semantics follow the reference interpreter (ONNX `Attention` on 4-D inputs):
//! - `scale` defaults to `1 / sqrt(head size)`;
//! - `causal` with `past` keys before the first query (a size, 0 for prefill, the cache
//!   length for a decode step): query `i` sees keys `j <= i + past`, as ONNX `Attention` with
//!   a KV cache does; key tiles entirely after the last query of a tile are skipped by the
//!   loop bounds;
//! - a sliding `window` (with `causal`; ONNX `left_window_size`) also hides the keys
//!   `j < i + past - window`: the key loop starts at the tile holding the first query's first
//!   key, so a query tile reads about `window + q_tile` keys, not all before it, and the keys
//!   of that first tile before each query's window are set to -inf;
//! - the additive f32 mask is right-aligned to `[B, Hq, Sq, Skv]`, a dim of 1 broadcasts;
//!   a last mask dim shorter than `Skv` masks the keys beyond it (the keys loop stops there);
//! - a row whose every key is masked gives zeros, as `Skv = 0` does (the ONNX reference's
//!   answer; `0 / 0` would be NaN).
//!
//! Schedule parameters (defaults measured best on x86-64 for D = 64 with L = 4; those that
//! depend on L are chosen for 16 lanes and AVX-512's 32 vector registers, where changing
//! any one parameter within its range moved the time by less than 5%):
//! - `lanes` (default 4; 4, 8 or 16): L, queries per vector;
//! - `q_tile` (default 2L with `pair`, else 8 for L = 4 and L for wider vectors; a multiple of
//!   L in L..=4L): queries per tile, which share each key and value tile while it is in L1;
//! - `k_tile` (default 64, 1..=1024): keys per online-softmax step;
//! - `k_block` (default 12, or 16 for L = 16; 1..=12 for L = 4, else 1..=24): keys per
//!   register tile of `Q Kᵀ` (then blocks of 4 and single keys for the rest of a key tile);
//!   the tile takes `k_block + 1` vector registers (`2 k_block + 2` with `pair`), and 16
//!   divides the default `k_tile`;
//! - `v_block` (default and range as `k_block`): columns per register tile of `P V` (then
//!   blocks of 4 and single columns for the rest of `Dv`);
//! - `d_unroll` (default 2, 1..=4): elements of D per iteration of the `Q Kᵀ` loop;
//! - `p_unroll` (default 2, 1..=4): keys per iteration of the `P V` loop;
//! - `pair` (default 1 for L = 16, else 0; 0 or 1): register tiles of two groups sharing each
//!   broadcast, of at most 12 keys or columns (`k_block` and `v_block` capped at 12: 24
//!   accumulators, two vector operands and a broadcast); 0 keeps one group per tile, as
//!   Cranelift's 16 vector registers need. `v_block` 8 (no block of 4 for `Dv` = 64) measured
//!   about 1% faster, within the noise.
//!
//! With `lengths` (ONNX `nonpad_kv_seqlen`: K and V are a cache of `Skv` rows of which each
//! batch item has filled the first `length[b]`), the key loop stops at the item's length and
//! the causal offset is `length[b] - Sq`, read once per (batch, head) from the i64 buffer; the
//! rows of the cache beyond the length are never read, so a decode step over a preallocated
//! cache costs what its filled part does.
//!
//! Kernel layout: buffers Q, K, V, mask?, lengths?, Y, scratch; size parameters 0 and 1 are the range
//! of (batch, query head) pairs `b * Hq + h`, 2.. are `Sq`, `Skv`, `past` (0 unless causal)
//! and, with a mask, its last dim and its strides over batch, head and query. The scratch
//! holds `q_tile * (D + k_tile + 3 + Dv)` floats per pair.

use super::{Arg, Built};
use crate::kir::{Compare, Index, Kernel, Stmt, Unary, Value};
use crate::schedule::{range, Param, Space};
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
    /// With `causal`, a sliding window (ONNX `left_window_size`, Mistral's window minus one):
    /// query `i` sees only keys `j >= i + past - window` too, and the key tiles before the
    /// window of a query tile are never visited.
    pub window: Option<usize>,
    /// Whether each batch item's number of keys comes from an i64 input `[B]` (ONNX
    /// `nonpad_kv_seqlen`, the filled length of a cache of `Skv` rows): keys from it on are
    /// never read, and a causal query `i` sees keys `j <= i + length - Sq` (`causal`'s
    /// `past` is then unused).
    pub lengths: bool,
}

// The buffers Q, K and V, and the size parameters (the parallel range, then `Sq`, `Skv`,
// `past`, the mask's last dim and its strides), of this kernel and of the decode template's
// partial kernel.
pub(super) const Q: usize = 0;
pub(super) const K: usize = 1;
pub(super) const V: usize = 2;

pub(super) const LO: usize = 0;
pub(super) const HI: usize = 1;
pub(super) const SQ: usize = 2;
pub(super) const SKV: usize = 3;
pub(super) const PAST: usize = 4;
pub(super) const MASK_LEN: usize = 5;
pub(super) const MASK_SB: usize = 6;
pub(super) const MASK_SH: usize = 7;
pub(super) const MASK_SQ: usize = 8;

/// The largest register tile of a pair of groups, in keys or columns: two accumulators per key
/// or column, two vector operands and a broadcast fit AVX-512's 32 vector registers.
const PAIR_BLOCK: i64 = 12;

/// Vectors per group after its scores: running max, running sum, rescale factor.
const EXTRA: i64 = 3;

/// What the kernel builder needs to know, validated.
struct Plan {
    hq: i64,
    hkv: i64,
    d: i64,
    dv: i64,
    scale: f32,
    causal: bool,
    /// The left window (with `causal`).
    window: Option<i64>,
    /// Buffer of the mask, if any.
    mask: Option<usize>,
    /// Whether the mask differs between queries (else it is read once per key for a group).
    mask_rows: bool,
    /// Buffer of the keys' lengths per batch item, if they are given.
    lengths: Option<usize>,
    /// Buffer of the output.
    y: usize,
    /// Buffer of the scratch.
    scratch: usize,
    /// The schedule.
    tiling: Tiling,
}

/// The schedule parameters (see the module doc).
struct Tiling {
    /// Queries per vector, L: 4, 8 or 16.
    lanes: i64,
    /// Queries per tile.
    tq: i64,
    /// Keys per key tile.
    tk: i64,
    /// Keys per register tile of `Q Kᵀ`.
    kb: i64,
    /// Columns per register tile of `P V`.
    vb: i64,
    /// Elements of D per iteration of the `Q Kᵀ` loop.
    du: i64,
    /// Keys per iteration of the `P V` loop.
    pu: i64,
    /// Whether register tiles cover pairs of groups, which share each broadcast.
    pair: bool,
}

impl Tiling {
    /// Keys of a register tile of `Q Kᵀ` for `n` groups (1 or 2).
    fn k_block(&self, n: usize) -> i64 {
        if n == 2 {
            self.kb.min(PAIR_BLOCK)
        } else {
            self.kb
        }
    }

    /// Columns of a register tile of `P V` for `n` groups (1 or 2).
    fn v_block(&self, n: usize) -> i64 {
        if n == 2 {
            self.vb.min(PAIR_BLOCK)
        } else {
            self.vb
        }
    }
}

impl Plan {
    /// The lanes of the vectors, L.
    fn lanes(&self) -> u8 {
        self.tiling.lanes as u8
    }

    /// Offset in a pair's scratch of the groups' `Qᵀ · scale`, `[group][D][L]`.
    fn qt(&self) -> i64 {
        0
    }

    /// Offset of the groups' scores, `[group][k_tile][L]`.
    fn st(&self) -> i64 {
        self.tiling.tq * self.d
    }

    /// Offset of the groups' running max, running sum and rescale factor, `[group][3][L]`.
    fn ex(&self) -> i64 {
        self.st() + self.tiling.tq * self.tiling.tk
    }

    /// Offset of the groups' output accumulators, `[group][Dv][L]`.
    fn yt(&self) -> i64 {
        self.ex() + self.tiling.tq * EXTRA
    }

    /// f32 slots of a pair's scratch.
    fn region(&self) -> i64 {
        self.yt() + self.tiling.tq * self.dv
    }
}

/// The kernel's variables.
struct Vars {
    lanes: Vec<u8>,
    /// The accumulators of a register tile.
    acc: Vec<usize>,
    /// The vector operands of a register tile (`Qᵀ` or probabilities), one per group (two with
    /// `pair`).
    vectors: Vec<usize>,
    /// The broadcast operand of a register tile (K or V).
    broadcast: usize,
    /// Lanewise maximum of the scores of a group.
    max: usize,
    /// Lanewise sum of the probabilities of a group.
    sum: usize,
    /// The probabilities of a group for one key.
    prob: usize,
    /// The new running maximum of a group.
    new_max: usize,
    /// The running maximum with -inf replaced by 0 (nothing seen yet).
    safe_max: usize,
    /// The rescale factors of the groups of a register tile (two with `pair`).
    alphas: Vec<usize>,
    /// `1 / l` of a query.
    inv: usize,
}

impl Vars {
    fn new(plan: &Plan) -> Vars {
        let mut lanes = vec![];
        let mut var = |l: u8| {
            lanes.push(l);
            lanes.len() - 1
        };
        let l = plan.lanes();
        let t = &plan.tiling;
        let mut blocks = t.kb.max(t.vb);
        if t.pair {
            blocks = blocks.max(2 * t.k_block(2)).max(2 * t.v_block(2));
        }
        let acc = (0..blocks).map(|_| var(l)).collect();
        let vector = var(l);
        let broadcast = var(l);
        let (max, sum, prob, new_max, safe_max, alpha) =
            (var(l), var(l), var(l), var(l), var(l), var(l));
        let inv = var(1);
        // The second group's operands come last, so that the variables without pairs are
        // those of the one-group kernel.
        let (mut vectors, mut alphas) = (vec![vector], vec![alpha]);
        if t.pair {
            vectors.push(var(l));
            alphas.push(var(l));
        }
        Vars {
            acc,
            vectors,
            broadcast,
            max,
            sum,
            prob,
            new_max,
            safe_max,
            alphas,
            inv,
            lanes,
        }
    }
}

/// Index values computed once and then used in inner loops. Each is bound as the counter of a
/// loop of one iteration, which the backend keeps in a register or a stack slot instead of
/// recomputing it (divisions included) in every inner iteration, and which keeps the inner
/// address arithmetic to `base + counter * stride + constant`.
pub(super) struct Lets {
    /// The nesting depth inside the bindings.
    pub(super) depth: usize,
    values: Vec<Index>,
}

impl Lets {
    /// Bindings whose first loop is at nesting depth `depth`.
    pub(super) fn at(depth: usize) -> Lets {
        Lets {
            depth,
            values: vec![],
        }
    }

    /// Binds `value` (which may use the earlier bindings); the result names it inside
    /// [`Lets::wrap`].
    pub(super) fn bind(&mut self, value: Index) -> Index {
        self.values.push(value);
        self.depth += 1;
        Index::Loop(self.depth - 1)
    }

    /// `body`, built for loop depth `self.depth`, inside the bindings.
    pub(super) fn wrap(self, body: Vec<Stmt>) -> Vec<Stmt> {
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
    /// Row of Q and Y of its first query.
    row: Index,
    /// Offset of its region of the scratch.
    s: Index,
    /// Keys before its first query: the `past` size, or the batch item's key length less `Sq`
    /// (negative when some queries come before every key).
    past: Index,
    /// The batch item's key length, when the kernel is given lengths.
    keys: Option<Index>,
}

/// The queries processed together.
struct Tile {
    /// Position in the sequence of the first.
    first: Index,
    /// How many (`q_tile` but for the last tile of a head).
    valid: Index,
    /// How many groups of L they make.
    groups: Index,
    /// Offset of the first row in Q.
    q: Index,
    /// Offset of the first row in Y.
    y: Index,
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
    /// Offset of the mask value of the first query and the first key, if there is a mask.
    mask: Option<Index>,
    /// Nesting depth of the loops directly inside the key tile.
    depth: usize,
}

pub(super) fn c(v: i64) -> Index {
    Index::Const(v)
}

/// Builds the flash attention kernel for `spec` (see the module doc for the schedule
/// parameters). Group inputs: Q, K, V, mask?; output 0: Y `[B, Hq, Sq, Dv]`. Errors name
/// the shape or parameter the template does not support.
pub fn attention(spec: &AttentionSpec, schedule: &Schedule) -> Result<Built, String> {
    let Checked {
        b,
        hq,
        sq,
        skv,
        hq_n,
        hkv_n,
        d_n,
        dv_n,
        scale,
        ..
    } = check(spec)?;
    let tiling = tiling(schedule)?;
    let past = spec.causal.clone().unwrap_or(Dim::known(0));
    let mut sizes = vec![sq.clone(), skv.clone(), past];
    let mut args = vec![Arg::Input(0), Arg::Input(1), Arg::Input(2)];
    let mut mask_rows = false;
    if let Some(m) = &spec.mask {
        let mask = mask_sizes(m, [&b, &hq, &sq, &skv])?;
        mask_rows = !mask[3].is(0);
        sizes.extend(mask);
        args.push(Arg::Input(3));
    }
    let lengths = spec.lengths.then(|| {
        args.push(Arg::Input(4));
        args.len() - 1
    });
    let plan = Plan {
        lengths,
        hq: hq_n,
        hkv: hkv_n,
        d: d_n,
        dv: dv_n,
        scale,
        causal: spec.causal.is_some(),
        window: window(spec)?,
        mask: spec.mask.as_ref().map(|_| 3),
        mask_rows,
        y: args.len(),
        scratch: args.len() + 1,
        tiling,
    };
    let heads = &b * &hq;
    args.push(Arg::Output(0));
    args.push(Arg::Scratch(&heads * &Dim::known(plan.region())));
    let vars = Vars::new(&plan);
    let t = &plan.tiling;
    let name = format!(
        "attention_h{hq_n}x{hkv_n}_d{d_n}x{dv_n}_l{}_q{}_k{}_b{}x{}_u{}x{}{}{}{}{}{}",
        t.lanes,
        t.tq,
        t.tk,
        t.kb,
        t.vb,
        t.du,
        t.pu,
        if t.pair { "_pair" } else { "" },
        if spec.causal.is_some() { "_causal" } else { "" },
        if spec.mask.is_some() { "_mask" } else { "" },
        if mask_rows { "_rows" } else { "" },
        if spec.lengths { "_lengths" } else { "" }
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
        parallel: heads,
    })
}

/// The shapes of an attention, checked: Q `[B, Hq, Sq, D]`, K `[B, Hkv, Skv, D]` and V
/// `[B, Hkv, Skv, Dv]` with known head counts and sizes, `Hq` a multiple of `Hkv`.
pub(super) struct Checked {
    /// `B`, `Hq`, `Sq`, `Hkv` and `Skv`.
    pub b: Dim,
    pub hq: Dim,
    pub sq: Dim,
    pub hkv: Dim,
    pub skv: Dim,
    /// `Hq`, `Hkv`, `D` and `Dv`, which are known.
    pub hq_n: i64,
    pub hkv_n: i64,
    pub d_n: i64,
    pub dv_n: i64,
    /// The factor of `Q Kᵀ` (the spec's, or `1 / sqrt(D)`).
    pub scale: f32,
}

/// Checks the shapes and scale of `spec`; errors name what the templates do not support.
pub(super) fn check(spec: &AttentionSpec) -> Result<Checked, String> {
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
    Ok(Checked {
        b,
        hq,
        sq,
        hkv,
        skv,
        hq_n,
        hkv_n,
        d_n,
        dv_n,
        scale,
    })
}

/// The left window of `spec`, which needs causal masking.
pub(super) fn window(spec: &AttentionSpec) -> Result<Option<i64>, String> {
    match (&spec.causal, spec.window) {
        (_, None) => Ok(None),
        (Some(_), Some(w)) => Ok(Some(w as i64)),
        (None, Some(_)) => Err("a sliding window needs causal attention".into()),
    }
}

/// The template's parameters (the module documentation says what each does and why the
/// defaults are what they are).
pub fn space() -> Space {
    Space {
        template: "attention",
        version: 1,
        params: vec![
            Param {
                name: "lanes",
                doc: "queries per vector (the backend's widest vector)",
                values: |_| vec![4, 8, 16],
                default: |_| 4,
            },
            Param {
                name: "pair",
                doc: "register tiles of two groups sharing each broadcast",
                values: |_| vec![0, 1],
                default: |s| (s.value("lanes") == 16) as i64,
            },
            Param {
                name: "q_tile",
                doc: "queries per tile",
                values: |s| (1..=4).map(|i| i * s.value("lanes")).collect(),
                default: |s| match (s.value("lanes"), s.value("pair")) {
                    (4, 0) => 8,
                    (lanes, 0) => lanes,
                    (lanes, _) => 2 * lanes,
                },
            },
            Param {
                name: "k_tile",
                doc: "keys per online-softmax step",
                values: |_| range(1, 1024),
                default: |_| 64,
            },
            Param {
                name: "k_block",
                doc: "keys per register tile of Q K^T",
                values: block_range,
                default: block_default,
            },
            Param {
                name: "v_block",
                doc: "columns per register tile of P V",
                values: block_range,
                default: block_default,
            },
            Param {
                name: "d_unroll",
                doc: "elements of D per iteration of the Q K^T loop",
                values: |_| range(1, 4),
                default: |_| 2,
            },
            Param {
                name: "p_unroll",
                doc: "keys per iteration of the P V loop",
                values: |_| range(1, 4),
                default: |_| 2,
            },
        ],
    }
}

/// The range of `k_block` and `v_block`: with a vector operand and a broadcast, 12
/// accumulators fill the 16 vector registers of x86-64 (SSE, AVX2), and 24 leave a few of
/// AVX-512's 32.
fn block_range(s: &Schedule) -> Vec<i64> {
    range(1, if s.value("lanes") == 4 { 12 } else { 24 })
}

/// The default of `k_block` and `v_block`: 16 for 16 lanes (it divides the default `k_tile`
/// and the usual head sizes), else 12.
fn block_default(s: &Schedule) -> i64 {
    if s.value("lanes") == 16 {
        16
    } else {
        12
    }
}

/// The schedule parameters, resolved.
fn tiling(schedule: &Schedule) -> Result<Tiling, String> {
    let s = space().resolve(schedule)?;
    Ok(Tiling {
        lanes: s.value("lanes"),
        tq: s.value("q_tile"),
        tk: s.value("k_tile"),
        kb: s.value("k_block"),
        vb: s.value("v_block"),
        du: s.value("d_unroll"),
        pu: s.value("p_unroll"),
        pair: s.value("pair") == 1,
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
pub(super) fn mask_sizes(mask: &[Dim], full: [&Dim; 4]) -> Result<[Dim; 4], String> {
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

/// The kernel body: the parallel loop over (batch, head) pairs, each walking its query
/// tiles.
fn body(plan: &Plan, vars: &Vars) -> Stmt {
    let bh = Index::Loop(0);
    let mut lets = Lets::at(1);
    let (b, h) = (bh.clone() / c(plan.hq), bh.clone() % c(plan.hq));
    let group = plan.hq / plan.hkv;
    let kv_row = lets.bind((b.clone() * c(plan.hkv) + h.clone() / c(group)) * Index::Size(SKV));
    let keys = plan
        .lengths
        .map(|buffer| lets.bind(Index::load(buffer, b.clone())));
    let past = match &keys {
        Some(n) => n.clone() - Index::Size(SQ),
        None => Index::Size(PAST),
    };
    let mask = plan
        .mask
        .map(|_| lets.bind(b * Index::Size(MASK_SB) + h * Index::Size(MASK_SH)));
    let row = lets.bind(bh.clone() * Index::Size(SQ));
    let s = lets.bind(bh * c(plan.region()));
    let head = Head {
        kv_row,
        mask,
        row,
        s,
        past,
        keys,
    };
    let tq = plan.tiling.tq;
    let tiles = (Index::Size(SQ) + c(tq - 1)) / c(tq);
    let inner = Stmt::for_range(c(0), tiles, tile(plan, vars, &head, lets.depth));
    Stmt::for_range(Index::Size(LO), Index::Size(HI), lets.wrap(vec![inner]))
}

/// The body of the loop over the query tiles of a head (at `depth`): `Qᵀ` into the scratch,
/// initialise, walk the key tiles, normalise.
fn tile(plan: &Plan, vars: &Vars, head: &Head, depth: usize) -> Vec<Stmt> {
    let tq = plan.tiling.tq;
    let mut lets = Lets::at(depth + 1);
    let first = lets.bind(Index::Loop(depth) * c(tq));
    let valid = lets.bind(c(tq).min(Index::Size(SQ) - first.clone()));
    let flat = head.row.clone() + first.clone();
    let t = Tile {
        groups: lets.bind((valid.clone() + c(plan.tiling.lanes - 1)) / c(plan.tiling.lanes)),
        q: lets.bind(flat.clone() * c(plan.d)),
        y: lets.bind(flat * c(plan.dv)),
        first,
        valid,
        depth: lets.depth,
    };
    let mut end = Index::Size(SKV);
    if plan.mask.is_some() {
        end = end.min(Index::Size(MASK_LEN));
    }
    if let Some(n) = &head.keys {
        end = end.min(n.clone());
    }
    if plan.causal {
        end = end.min(t.first.clone() + t.valid.clone() + head.past.clone());
    }
    let end = end.max(c(0));
    let tk = plan.tiling.tk;
    let j0 = Index::Loop(t.depth) * c(tk);
    let mut key_lets = Lets::at(t.depth + 1);
    let keys = Keys {
        n: key_lets.bind(c(tk).min(end.clone() - j0.clone())),
        k: key_lets.bind((head.kv_row.clone() + j0.clone()) * c(plan.d)),
        v: key_lets.bind((head.kv_row.clone() + j0.clone()) * c(plan.dv)),
        mask: head.mask.as_ref().map(|m| {
            key_lets.bind(m.clone() + t.first.clone() * Index::Size(MASK_SQ) + j0.clone())
        }),
        j0,
        depth: key_lets.depth,
    };
    let mut step = scores(plan, vars, head, &t, &keys);
    step.extend(add_mask(plan, head, &t, &keys));
    step.extend(causal_limit(plan, head, &t, &keys));
    step.extend(window_limit(plan, head, &t, &keys));
    step.push(softmax(plan, vars, head, &t, &keys));
    step.extend(accumulate(plan, vars, head, &t, &keys));
    // With a window, the key tiles wholly before the first query's window are skipped.
    let first_tile = match plan.window {
        Some(w) => (t.first.clone() + head.past.clone() - c(w)).max(c(0)) / c(tk),
        None => c(0),
    };
    let mut out = load_q(plan, head, &t);
    out.push(init(plan, head, &t));
    out.push(Stmt::for_range(
        first_tile,
        (end + c(tk - 1)) / c(tk),
        key_lets.wrap(step),
    ));
    out.push(finish(plan, vars, head, &t));
    lets.wrap(out)
}

/// The loop at `depth` over the groups of the tile, its body built by `body` from the offsets
/// of the group's data in the scratch (`Qᵀ`, scores, extras, `Yᵀ`) bound inside it, for loops
/// from `depth + 5`.
fn per_group(
    plan: &Plan,
    head: &Head,
    t: &Tile,
    depth: usize,
    body: impl FnOnce(&Group, usize) -> Vec<Stmt>,
) -> Stmt {
    group_loop(
        plan,
        head,
        (c(0), t.groups.clone()),
        1,
        depth,
        |groups, depth| body(&groups[0], depth),
    )
}

/// The loop at `depth` over the groups of the tile for register tiles: with `pair`, a loop over
/// pairs of groups, then one over the last group if their count is odd; else one over the
/// groups. `body` gets the groups of an iteration (2 or 1), as in [`per_group`].
fn per_tile_groups(
    plan: &Plan,
    head: &Head,
    t: &Tile,
    depth: usize,
    body: impl Fn(&[Group], usize) -> Vec<Stmt>,
) -> Vec<Stmt> {
    if !plan.tiling.pair {
        return vec![per_group(plan, head, t, depth, |group, depth| {
            body(std::slice::from_ref(group), depth)
        })];
    }
    let pairs = t.groups.clone() / c(2);
    vec![
        group_loop(plan, head, (c(0), pairs.clone()), 2, depth, &body),
        group_loop(
            plan,
            head,
            (pairs * c(2), t.groups.clone()),
            1,
            depth,
            &body,
        ),
    ]
}

/// The loop at `depth` over `from..to`, iteration `i` covering the `n` groups from `i * n`,
/// `body` built from their offsets in the scratch (bound inside it, for loops from
/// `depth + 5`).
fn group_loop(
    plan: &Plan,
    head: &Head,
    (from, to): (Index, Index),
    n: i64,
    depth: usize,
    body: impl FnOnce(&[Group], usize) -> Vec<Stmt>,
) -> Stmt {
    let g = match n {
        1 => Index::Loop(depth),
        _ => Index::Loop(depth) * c(n),
    };
    let mut lets = Lets::at(depth + 1);
    let l = plan.tiling.lanes;
    let at = |off: i64, len: i64| head.s.clone() + c(off) + g.clone() * c(l * len);
    let first = Group {
        qt: lets.bind(at(plan.qt(), plan.d)),
        st: lets.bind(at(plan.st(), plan.tiling.tk)),
        ex: lets.bind(at(plan.ex(), EXTRA)),
        yt: lets.bind(at(plan.yt(), plan.dv)),
    };
    // The next groups' data follows at constant offsets.
    let next: Vec<Group> = (1..n)
        .map(|i| Group {
            qt: first.qt.clone() + c(i * l * plan.d),
            st: first.st.clone() + c(i * l * plan.tiling.tk),
            ex: first.ex.clone() + c(i * l * EXTRA),
            yt: first.yt.clone() + c(i * l * plan.dv),
        })
        .collect();
    let mut groups = vec![first];
    groups.extend(next);
    let inner = body(&groups, lets.depth);
    Stmt::for_range(from, to, lets.wrap(inner))
}

/// Offsets in the scratch of one group's data.
struct Group {
    /// `Qᵀ · scale`, `[D][L]`.
    qt: Index,
    /// Scores or probabilities, `[k_tile][L]`.
    st: Index,
    /// Running max, running sum, rescale factor.
    ex: Index,
    /// Output accumulator, `[Dv][L]`.
    yt: Index,
}

/// The loop at `depth` over `count` queries of the tile from `from`, with `body` built from
/// the offset in the scratch of the query's lane in `[group][len][L]` data at `offset` (bound
/// inside it) for loops from `depth + 2`.
fn per_query(
    plan: &Plan,
    head: &Head,
    (from, count): (Index, Index),
    (offset, len): (i64, i64),
    depth: usize,
    body: impl FnOnce(&Index, usize) -> Vec<Stmt>,
) -> Stmt {
    let q = Index::Loop(depth);
    let mut lets = Lets::at(depth + 1);
    let l = plan.tiling.lanes;
    let lane =
        lets.bind(head.s.clone() + c(offset) + q.clone() / c(l) * c(l * len) + q.clone() % c(l));
    let inner = body(&lane, lets.depth);
    Stmt::for_range(from, count, lets.wrap(inner))
}

/// `Qᵀ · scale` of the tile's queries into the scratch; the lanes of the last group without a
/// query are zeroed.
fn load_q(plan: &Plan, head: &Head, t: &Tile) -> Vec<Stmt> {
    let element = |lane: &Index, depth: usize, value: &dyn Fn(&Index) -> Value| {
        let d = Index::Loop(depth);
        let at = lane.clone() + d.clone() * c(plan.tiling.lanes);
        let store = Stmt::store(plan.scratch, at, value(&d), 1);
        vec![Stmt::for_range(c(0), c(plan.d), vec![store])]
    };
    let q = Index::Loop(t.depth);
    let copy = per_query(
        plan,
        head,
        (c(0), t.valid.clone()),
        (plan.qt(), plan.d),
        t.depth,
        |lane, depth| {
            element(lane, depth, &|d| {
                let at = t.q.clone() + q.clone() * c(plan.d) + d.clone();
                Value::load(Q, at) * Value::Const(plan.scale)
            })
        },
    );
    let zero = per_query(
        plan,
        head,
        (t.valid.clone(), t.groups.clone() * c(plan.tiling.lanes)),
        (plan.qt(), plan.d),
        t.depth,
        |lane, depth| element(lane, depth, &|_| Value::Const(0.0)),
    );
    vec![copy, zero]
}

/// Running max -inf, sum 0, output accumulators 0.
fn init(plan: &Plan, head: &Head, t: &Tile) -> Stmt {
    let (l, lanes) = (plan.tiling.lanes, plan.lanes());
    per_group(plan, head, t, t.depth, |group, depth| {
        let neg_inf = Value::Const(f32::NEG_INFINITY);
        let zeros = Stmt::store(
            plan.scratch,
            group.yt.clone() + Index::Loop(depth) * c(l),
            Value::Const(0.0),
            lanes,
        );
        vec![
            Stmt::store(plan.scratch, group.ex.clone(), neg_inf, lanes),
            Stmt::store(
                plan.scratch,
                group.ex.clone() + c(l),
                Value::Const(0.0),
                lanes,
            ),
            Stmt::for_range(c(0), c(plan.dv), vec![zeros]),
        ]
    })
}

/// Output rows: the accumulators divided by the sums; zeros for a query with every key masked
/// or no keys at all.
fn finish(plan: &Plan, vars: &Vars, head: &Head, t: &Tile) -> Stmt {
    let q = Index::Loop(t.depth);
    let l = plan.tiling.lanes;
    per_query(
        plan,
        head,
        (c(0), t.valid.clone()),
        (plan.yt(), plan.dv),
        t.depth,
        |lane, depth| {
            let sum = head.s.clone()
                + c(plan.ex() + l)
                + q.clone() / c(l) * c(l * EXTRA)
                + q.clone() % c(l);
            // A query that saw no key (every key masked, or none at all) has l = 0 and
            // accumulators 0: its output is 0.
            let l_sum = Value::load(plan.scratch, sum);
            let inv = Value::select(
                Compare::Eq,
                l_sum.clone(),
                Value::Const(0.0),
                Value::Const(0.0),
                Value::Const(1.0) / l_sum,
            );
            let col = Index::Loop(depth);
            let y = t.y.clone() + q.clone() * c(plan.dv) + col.clone();
            let value = Value::load(plan.scratch, lane.clone() + col * c(l)) * Value::Var(vars.inv);
            vec![
                Stmt::set(vars.inv, inv),
                Stmt::for_range(c(0), c(plan.dv), vec![Stmt::store(plan.y, y, value, 1)]),
            ]
        },
    )
}

/// Loops at `depth` covering `0..count` in blocks: of `block`, then of 4 and of 1 for the
/// rest; `body(first, size, depth + 1)` builds the body for the block from `first`.
fn blocks(
    count: &Index,
    block: i64,
    depth: usize,
    body: impl Fn(&Index, i64, usize) -> Vec<Stmt>,
) -> Vec<Stmt> {
    let mut sizes = vec![block];
    sizes.extend([4, 1].into_iter().filter(|&w| w < block));
    let mut start = c(0);
    let mut out = vec![];
    for w in sizes {
        let n = (count.clone() - start.clone()) / c(w);
        let first = start.clone() + Index::Loop(depth) * c(w);
        out.push(Stmt::for_range(c(0), n.clone(), body(&first, w, depth + 1)));
        start = start + n * c(w);
    }
    out
}

/// `acc[g * w + i] = broadcast.fma(vectors[g], acc[g * w + i])` for `i` in `0..w` and each
/// vector operand `g` (one per group), the broadcast of `element(i)` shared by the groups,
/// after loading the vector operands.
fn fma_step(vars: &Vars, vectors: Vec<Value>, w: i64, element: impl Fn(i64) -> Value) -> Vec<Stmt> {
    let n = vectors.len();
    let mut out: Vec<Stmt> = (vectors.into_iter().enumerate())
        .map(|(g, vector)| Stmt::set(vars.vectors[g], vector))
        .collect();
    for i in 0..w {
        out.push(Stmt::set(vars.broadcast, element(i).splat()));
        for g in 0..n {
            let acc = vars.acc[g * w as usize + i as usize];
            out.push(Stmt::set(
                acc,
                Value::Var(vars.broadcast).fma(Value::Var(vars.vectors[g]), Value::Var(acc)),
            ));
        }
    }
    out
}

/// The scores of the key tile for every group, `Qᵀ K` by register tiles of `k_block` keys
/// (already scaled: `Qᵀ` is).
fn scores(plan: &Plan, vars: &Vars, head: &Head, t: &Tile, keys: &Keys) -> Vec<Stmt> {
    per_tile_groups(plan, head, t, keys.depth, |groups, depth| {
        let kb = plan.tiling.k_block(groups.len());
        blocks(&keys.n, kb, depth, |j, w, depth| {
            score_block(plan, vars, groups, keys, (j, w), depth)
        })
    })
}

/// The scores of keys `j..j + w` for one group or a pair, the loop over D at `depth`.
fn score_block(
    plan: &Plan,
    vars: &Vars,
    groups: &[Group],
    keys: &Keys,
    (j, w): (&Index, i64),
    depth: usize,
) -> Vec<Stmt> {
    let l = plan.tiling.lanes;
    let step = |at: &Index, u: i64| {
        let vectors = groups
            .iter()
            .map(|group| {
                let qt = group.qt.clone() + at.clone() * c(l) + c(l * u);
                Value::load(plan.scratch, qt)
            })
            .collect();
        fma_step(vars, vectors, w, |i| {
            let key = keys.k.clone() + j.clone() * c(plan.d) + at.clone();
            Value::load(K, key + c(i * plan.d + u))
        })
    };
    let mut out: Vec<Stmt> = (0..w as usize * groups.len())
        .map(|i| Stmt::set(vars.acc[i], Value::Const(0.0)))
        .collect();
    let unroll = plan.tiling.du.min(plan.d);
    let at = Index::Loop(depth) * c(unroll);
    out.push(Stmt::for_range(
        c(0),
        c(plan.d / unroll),
        (0..unroll).flat_map(|u| step(&at, u)).collect(),
    ));
    for rest in plan.d / unroll * unroll..plan.d {
        out.extend(step(&c(0), rest));
    }
    for (g, group) in groups.iter().enumerate() {
        out.extend((0..w).map(|i| {
            let at = group.st.clone() + j.clone() * c(l) + c(l * i);
            let acc = vars.acc[(g as i64 * w + i) as usize];
            Stmt::store(plan.scratch, at, Value::Var(acc), plan.lanes())
        }));
    }
    out
}

/// Adds the mask to the scores of the key tile: one value per key for a group when the mask
/// is the same for every query, else one per query and key.
fn add_mask(plan: &Plan, head: &Head, t: &Tile, keys: &Keys) -> Vec<Stmt> {
    let (Some(m), Some(base)) = (plan.mask, &keys.mask) else {
        return vec![];
    };
    let add = |at: Index, mask: Value, lanes: u8| {
        let sum = Value::load(plan.scratch, at.clone()) + mask;
        vec![Stmt::store(plan.scratch, at, sum, lanes)]
    };
    let l = plan.tiling.lanes;
    if !plan.mask_rows {
        return vec![per_group(plan, head, t, keys.depth, |group, depth| {
            let j = Index::Loop(depth);
            let mask = Value::load(m, base.clone() + j.clone()).splat();
            let body = add(group.st.clone() + j * c(l), mask, plan.lanes());
            vec![Stmt::for_range(c(0), keys.n.clone(), body)]
        })];
    }
    vec![per_score_row(plan, head, t, keys, |q, lane, depth| {
        let j = Index::Loop(depth);
        let at = base.clone() + q.clone() * Index::Size(MASK_SQ) + j.clone();
        let body = add(lane.clone() + j * c(l), Value::load(m, at), 1);
        vec![Stmt::for_range(c(0), keys.n.clone(), body)]
    })]
}

/// Sets the scores of the keys that a query may not see (`j > i + past`) to -inf.
fn causal_limit(plan: &Plan, head: &Head, t: &Tile, keys: &Keys) -> Vec<Stmt> {
    if !plan.causal {
        return vec![];
    }
    vec![per_score_row(plan, head, t, keys, |q, lane, depth| {
        let j = Index::Loop(depth);
        let seen = t.first.clone() + q.clone() + c(1) + head.past.clone() - keys.j0.clone();
        let neg_inf = Value::Const(f32::NEG_INFINITY);
        let body = vec![Stmt::store(
            plan.scratch,
            lane.clone() + j * c(plan.tiling.lanes),
            neg_inf,
            1,
        )];
        vec![Stmt::for_range(seen.max(c(0)), keys.n.clone(), body)]
    })]
}

/// Sets the scores of the keys before a query's window (`j < i + past - window`) to -inf.
fn window_limit(plan: &Plan, head: &Head, t: &Tile, keys: &Keys) -> Vec<Stmt> {
    let Some(w) = plan.window else {
        return vec![];
    };
    vec![per_score_row(plan, head, t, keys, |q, lane, depth| {
        let j = Index::Loop(depth);
        let before = t.first.clone() + q.clone() + head.past.clone() - c(w) - keys.j0.clone();
        let neg_inf = Value::Const(f32::NEG_INFINITY);
        let body = vec![Stmt::store(
            plan.scratch,
            lane.clone() + j * c(plan.tiling.lanes),
            neg_inf,
            1,
        )];
        vec![Stmt::for_range(
            c(0),
            before.max(c(0)).min(keys.n.clone()),
            body,
        )]
    })]
}

/// [`per_query`] over the score rows of the tile's valid queries, inside the key tile's loop:
/// `body(q, lane, depth)` gets the query's index in the tile, the scratch slot of its score
/// for key 0 (the scores of a group are interleaved, L apart) and the next loop depth.
fn per_score_row(
    plan: &Plan,
    head: &Head,
    t: &Tile,
    keys: &Keys,
    body: impl FnOnce(&Index, &Index, usize) -> Vec<Stmt>,
) -> Stmt {
    let q = Index::Loop(keys.depth);
    per_query(
        plan,
        head,
        (c(0), t.valid.clone()),
        (plan.st(), plan.tiling.tk),
        keys.depth,
        |lane, depth| body(&q, lane, depth),
    )
}

/// `a < b ? b : a`, lanewise: the larger of `a` and `b`, `a` where `b` is NaN (one `maxps` on
/// x86-64). A NaN score is left out of the running max, but its probability `e^(NaN - m)` is
/// NaN all the same, so it still reaches the output as NaN.
fn larger(a: Value, b: Value) -> Value {
    Value::select(Compare::Lt, a.clone(), b.clone(), b, a)
}

/// The online softmax step of every group over the scores of the key tile: the new running
/// max, the rescale factor `alpha = e^(m_old - m_new)`, the scores replaced by
/// `e^(s - m_new)`, and `l = l * alpha + sum`, L queries at a time. A max of -inf
/// (nothing seen yet) is taken as 0 so that masked scores give 0, not NaN.
fn softmax(plan: &Plan, vars: &Vars, head: &Head, t: &Tile, keys: &Keys) -> Stmt {
    let (width, lanes) = (plan.tiling.lanes, plan.lanes());
    per_group(plan, head, t, keys.depth, |group, depth| {
        let at = group.st.clone() + Index::Loop(depth) * c(width);
        let score = Value::load(plan.scratch, at.clone());
        let score_at = |key: Index| Value::load(plan.scratch, group.st.clone() + key * c(width));
        let (m, l, alpha) = (
            group.ex.clone(),
            group.ex.clone() + c(width),
            group.ex.clone() + c(2 * width),
        );
        let old_max = Value::load(plan.scratch, m.clone());
        let neg_inf = Value::Const(f32::NEG_INFINITY);
        let (max, prob) = (Value::Var(vars.max), Value::Var(vars.prob));
        let safe_max = Value::Var(vars.safe_max);
        // The lanewise max of the scores in two chains (even and odd keys; `new_max` holds the
        // odd one until it is combined), so that the max's latency is paid half as often.
        let pair = Index::Loop(depth) * c(2);
        let (even, odd) = (Value::Var(vars.max), Value::Var(vars.new_max));
        vec![
            Stmt::set(vars.max, neg_inf.clone()),
            Stmt::set(vars.new_max, neg_inf.clone()),
            Stmt::for_range(
                c(0),
                keys.n.clone() / c(2),
                vec![
                    Stmt::set(vars.max, larger(even.clone(), score_at(pair.clone()))),
                    Stmt::set(vars.new_max, larger(odd.clone(), score_at(pair + c(1)))),
                ],
            ),
            Stmt::If {
                lhs: keys.n.clone() % c(2),
                cmp: Compare::Eq,
                rhs: c(1),
                then: vec![Stmt::set(
                    vars.max,
                    larger(even.clone(), score_at(keys.n.clone() - c(1))),
                )],
                otherwise: vec![],
            },
            Stmt::set(vars.max, larger(even, odd)),
            Stmt::set(vars.new_max, larger(old_max.clone(), max)),
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
                (old_max - safe_max.clone()).unary(Unary::Exp),
                lanes,
            ),
            Stmt::set(vars.sum, Value::Const(0.0)),
            Stmt::for_range(
                c(0),
                keys.n.clone(),
                vec![
                    Stmt::set(vars.prob, (score - safe_max).unary(Unary::Exp)),
                    Stmt::store(plan.scratch, at, prob.clone(), lanes),
                    Stmt::set(vars.sum, Value::Var(vars.sum) + prob),
                ],
            ),
            Stmt::store(
                plan.scratch,
                l.clone(),
                Value::load(plan.scratch, l)
                    .fma(Value::load(plan.scratch, alpha), Value::Var(vars.sum)),
                lanes,
            ),
            Stmt::store(plan.scratch, m, Value::Var(vars.new_max), lanes),
        ]
    })
}

/// `Yᵀ = Yᵀ * alpha + V P` over the key tile for every group, by register tiles of `v_block`
/// columns.
fn accumulate(plan: &Plan, vars: &Vars, head: &Head, t: &Tile, keys: &Keys) -> Vec<Stmt> {
    per_tile_groups(plan, head, t, keys.depth, |groups, depth| {
        let mut out: Vec<Stmt> = (groups.iter().enumerate())
            .map(|(g, group)| {
                let alpha = group.ex.clone() + c(2 * plan.tiling.lanes);
                Stmt::set(vars.alphas[g], Value::load(plan.scratch, alpha))
            })
            .collect();
        out.extend(blocks(
            &c(plan.dv),
            plan.tiling.v_block(groups.len()),
            depth,
            |col, w, depth| value_block(plan, vars, groups, keys, (col, w), depth),
        ));
        out
    })
}

/// `Yᵀ = Yᵀ * alpha + V P` for columns `col..col + w` of one group or a pair, the key loop at
/// `depth`.
fn value_block(
    plan: &Plan,
    vars: &Vars,
    groups: &[Group],
    keys: &Keys,
    (col, w): (&Index, i64),
    depth: usize,
) -> Vec<Stmt> {
    let l = plan.tiling.lanes;
    let yt = |g: usize, i: i64| groups[g].yt.clone() + col.clone() * c(l) + c(l * i);
    let acc = |g: usize, i: i64| vars.acc[g * w as usize + i as usize];
    let mut out: Vec<Stmt> = (0..groups.len())
        .flat_map(|g| (0..w).map(move |i| (g, i)))
        .map(|(g, i)| {
            let rescaled = Value::load(plan.scratch, yt(g, i)) * Value::Var(vars.alphas[g]);
            Stmt::set(acc(g, i), rescaled)
        })
        .collect();
    let step = |first: &Index, u: i64| {
        let vectors = groups
            .iter()
            .map(|group| {
                let p = group.st.clone() + first.clone() * c(l) + c(l * u);
                Value::load(plan.scratch, p)
            })
            .collect();
        fma_step(vars, vectors, w, |i| {
            let value = keys.v.clone() + first.clone() * c(plan.dv) + col.clone();
            Value::load(V, value + c(u * plan.dv + i))
        })
    };
    let pu = plan.tiling.pu;
    let first = Index::Loop(depth) * c(pu);
    out.push(Stmt::for_range(
        c(0),
        keys.n.clone() / c(pu),
        (0..pu).flat_map(|u| step(&first, u)).collect(),
    ));
    if pu > 1 {
        out.push(Stmt::for_range(
            keys.n.clone() / c(pu) * c(pu),
            keys.n.clone(),
            step(&Index::Loop(depth), 0),
        ));
    }
    for g in 0..groups.len() {
        out.extend(
            (0..w)
                .map(|i| Stmt::store(plan.scratch, yt(g, i), Value::Var(acc(g, i)), plan.lanes())),
        );
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::templates::decode_attention::decode_attention;
    use crate::templates::elementwise::tests::Rng;
    use crate::templates::testing::run;
    use kiln_ir::interp::{eval_op, Bindings};
    use kiln_ir::{Attr, Attrs, Op, OpKind, Tensor};
    use ndarray::Axis;

    /// One attention problem. `mask` is a pattern over `b`, `h`, `q`, `k` and `1` giving the
    /// mask's shape (`"b11k"` is `[B, 1, 1, Skv]`); `mask_len` overrides the size of its `k`.
    #[derive(Clone, Debug)]
    pub(in crate::templates) struct Case {
        pub b: usize,
        pub hq: usize,
        pub hkv: usize,
        pub sq: usize,
        pub skv: usize,
        pub d: usize,
        pub dv: usize,
        pub causal: bool,
        /// Keys of the cache before the first query (with `causal`).
        pub past: usize,
        /// The left window (with `causal`).
        pub window: Option<usize>,
        pub scale: Option<f32>,
        pub mask: Option<&'static str>,
        pub mask_len: Option<usize>,
        /// Each batch item's filled keys (ONNX `nonpad_kv_seqlen`); the keys beyond are junk.
        pub lengths: Option<Vec<usize>>,
        pub symbolic: bool,
        pub schedule: Schedule,
        /// Whether the kernels checked are the decode template's ([`super::super::decode_attention`]).
        pub decode: bool,
    }

    impl Case {
        pub(in crate::templates) fn new(
            b: usize,
            hq: usize,
            hkv: usize,
            sq: usize,
            skv: usize,
            d: usize,
        ) -> Case {
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
                window: None,
                scale: None,
                mask: None,
                mask_len: None,
                lengths: None,
                symbolic: false,
                schedule: Schedule::default(),
                decode: false,
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
                window: self.window,
                lengths: self.lengths.is_some(),
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
        /// never set a row's maximum, where f32 and the interpreter's f64 would differ). A
        /// window may leave key 0 out of a row, so with one there are no -10000 entries
        /// (a row may then be masked entirely, which gives 0 on both sides).
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
                        (_, 5 | 6) if self.window.is_none() => -10000.0,
                        (_, 5 | 6) => 0.0,
                        _ => f32::NEG_INFINITY,
                    })
                    .collect();
                out.push(Tensor::from_vec(&shape, data).unwrap());
            }
            if let Some(lengths) = &self.lengths {
                // Keys and values beyond each item's length are large (finite: the reference
                // multiplies them by probabilities of 0): a kernel that read one would let it
                // dominate its row.
                for (t, junk) in out[1..3].iter_mut().zip([40.0, 1e6]) {
                    let Tensor::F32(a) = t else { unreachable!() };
                    for (b, &n) in lengths.iter().enumerate() {
                        a.index_axis_mut(Axis(0), b)
                            .slice_axis_mut(Axis(1), (n..).into())
                            .fill(junk);
                    }
                }
                if self.mask.is_none() {
                    out.push(Tensor::from_vec(&[1], vec![0f32]).unwrap());
                }
                let lengths = lengths.iter().map(|&n| n as i64).collect();
                out.push(Tensor::from_vec(&[self.b], lengths).unwrap());
            }
            out
        }

        /// Checks the kernel against the interpreter on `inputs`, with 1 and 3 chunks.
        pub(in crate::templates) fn check_on(&self, inputs: &[Tensor]) {
            let mut attrs = Attrs::default();
            attrs.set("is_causal", Attr::Int(self.causal as i64));
            if let Some(s) = self.scale {
                attrs.set("scale", Attr::Float(s));
            }
            if let Some(w) = self.window {
                attrs.set("left_window_size", Attr::Int(w as i64));
            }
            let want = if self.lengths.is_some() {
                // ONNX Attention on an external cache of `Skv` rows.
                let mask = self.mask.and(inputs.get(3));
                let args = vec![
                    Some(&inputs[0]),
                    Some(&inputs[1]),
                    Some(&inputs[2]),
                    mask,
                    None,
                    None,
                    inputs.last(),
                ];
                let op = Op::new(OpKind::Attention, attrs);
                eval_op(&op, &args, &Bindings::new()).unwrap().remove(0)
            } else if self.past == 0 && self.window.is_none() {
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
                let cache = self.past > 0;
                let args = vec![
                    Some(&inputs[0]),
                    Some(&nk),
                    Some(&nv),
                    mask,
                    cache.then_some(&pk),
                    cache.then_some(&pv),
                ];
                let op = Op::new(OpKind::Attention, attrs);
                eval_op(&op, &args, &Bindings::new()).unwrap().remove(0)
            };
            let want = want.to_f32_array();
            for chunks in [1, 3] {
                let got = self.run(inputs, chunks).to_f32_array();
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

        /// Y from the kernels under test on `chunks` chunks: the flash kernel, or the decode
        /// template's partial and combine kernels in turn.
        fn run(&self, inputs: &[Tensor], chunks: usize) -> Tensor {
            let y = vec![self.b, self.hq, self.sq, self.dv];
            let (spec, bindings) = (self.spec(), self.bindings());
            if !self.decode {
                let built = attention(&spec, &self.schedule).unwrap();
                return run(&built, inputs, &[y], &bindings, chunks).remove(0);
            }
            let kernels = decode_attention(&spec, &self.schedule).unwrap();
            let partials: Vec<usize> = kernels
                .partials
                .iter()
                .map(|d| d.eval(&bindings).unwrap() as usize)
                .collect();
            let partials = run(&kernels.partial, inputs, &[partials], &bindings, chunks);
            run(&kernels.combine, &partials, &[y], &bindings, chunks).remove(0)
        }

        pub(in crate::templates) fn check(&self, rng: &mut Rng) {
            self.check_on(&self.inputs(rng));
        }
    }

    /// The vector widths to test: 4 (Cranelift's), and with the LLVM backend 8 and 16.
    pub(in crate::templates) fn widths() -> Vec<i64> {
        if cfg!(feature = "llvm") {
            vec![4, 8, 16]
        } else {
            vec![4]
        }
    }

    /// A random schedule of `lanes` lanes.
    fn random_schedule(rng: &mut Rng, lanes: i64) -> Schedule {
        let (k_blocks, v_blocks): (&[i64], &[i64]) = match lanes {
            4 => (&[1, 3, 5, 12], &[1, 4, 6, 12]),
            _ => (&[1, 5, 12, 16, 24], &[1, 4, 6, 16, 24]),
        };
        Schedule::default()
            .with("lanes", lanes)
            .with("q_tile", lanes * rng.pick(&[1, 2, 3, 4]))
            .with("k_tile", rng.pick(&[1, 4, 7, 64]))
            .with("k_block", rng.pick(k_blocks))
            .with("v_block", rng.pick(v_blocks))
            .with("d_unroll", rng.pick(&[1, 2, 3, 4]))
            .with("p_unroll", rng.pick(&[1, 2, 3]))
            .with("pair", rng.pick(&[0, 1]))
    }

    #[test]
    fn random_shapes_match_the_interpreter() {
        let mut rng = Rng::from_state(0x9e37_79b9_7f4a_7c15);
        let seqs = [1, 2, 5, 17, 64, 100];
        for lanes in widths() {
            // Fewer wide cases: LLVM compiles much more slowly than Cranelift.
            for _ in 0..if lanes == 4 { 48 } else { 32 } {
                random_case(&mut rng, &seqs, lanes).check(&mut rng);
            }
        }
    }

    /// A random problem with a random schedule of `lanes` lanes.
    pub(in crate::templates) fn random_case(rng: &mut Rng, seqs: &[usize], lanes: i64) -> Case {
        let (hq, hkv) = rng.pick(&[(1, 1), (2, 2), (4, 2), (4, 1), (3, 3)]);
        let d = rng.pick(&[1, 3, 8, 64]);
        let mut case = Case::new(
            rng.pick(&[1, 2]),
            hq,
            hkv,
            rng.pick(seqs),
            rng.pick(seqs),
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
        if case.causal && rng.below(2) == 0 {
            case.window = Some(rng.pick(&[0, 1, 3, 16, 40]));
        }
        case.scale = rng.pick(&[None, Some(0.3), Some(1.0)]);
        case.mask = rng.pick(&[None, Some("b11k"), Some("qk"), Some("bhqk"), Some("k")]);
        case.symbolic = rng.below(2) == 0;
        case.schedule = random_schedule(rng, lanes);
        case
    }

    #[test]
    fn caches_filled_to_lengths_are_read_only_that_far() {
        let mut rng = Rng::from_state(29);
        for lanes in widths() {
            for _ in 0..if lanes == 4 { 32 } else { 12 } {
                let mut case = random_case(&mut rng, &[1, 3, 8, 40, 100], lanes);
                case.past = 0;
                case.sq = rng.pick(&[1, 2, 5, 8]);
                case.mask = rng.pick(&[None, Some("b11k")]);
                case.mask_len = None;
                case.symbolic = false;
                let lengths = (0..case.b).map(|_| rng.below(case.skv + 1)).collect();
                case.lengths = Some(lengths);
                case.check(&mut rng);
            }
        }
    }

    #[test]
    fn sliding_windows_match_the_interpreter() {
        let mut rng = Rng::from_state(23);
        for lanes in widths() {
            // Prefill over many key tiles, most of them before each query tile's window.
            let mut case = Case::new(1, 4, 2, 100, 100, 8);
            case.causal = true;
            case.window = Some(7);
            case.schedule = Schedule::default().with("lanes", lanes).with("k_tile", 8);
            case.check(&mut rng);
            // Decode after a cache, symbolic lengths, a mask: the window starts mid-tile.
            let mut case = Case::new(2, 4, 1, 1, 97, 8);
            case.causal = true;
            case.past = 96;
            case.window = Some(16);
            case.mask = Some("b11k");
            case.symbolic = true;
            case.schedule = Schedule::default().with("lanes", lanes).with("k_tile", 12);
            case.check(&mut rng);
        }
    }

    #[test]
    fn decode_prefill_and_grouped_heads_match_the_interpreter() {
        let mut rng = Rng::from_state(7);
        for (lanes, causal) in widths().into_iter().flat_map(|l| [(l, false), (l, true)]) {
            for (sq, skv) in [(1, 100), (1, 1), (64, 64), (17, 5), (5, 17), (100, 100)] {
                let mut case = Case::new(2, 4, 2, sq, skv, 64);
                case.schedule = Schedule::default().with("lanes", lanes);
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

    /// Partial quads and tiles of queries, partial blocks of keys and of columns, with masks
    /// that differ between queries or not.
    #[test]
    fn tile_and_block_remainders_match_the_interpreter() {
        let mut rng = Rng::from_state(19);
        let sizes = [(1, 29), (3, 13), (5, 11), (13, 1), (17, 30)];
        for (lanes, (sq, skv)) in widths().into_iter().flat_map(|l| sizes.map(|s| (l, s))) {
            for (mask, causal) in [(Some("bhqk"), true), (Some("b11k"), false), (None, true)] {
                let mut case = Case::new(2, 2, 1, sq, skv, 5);
                case.dv = 7;
                case.causal = causal;
                case.mask = mask;
                case.schedule = Schedule::default()
                    .with("lanes", lanes)
                    .with("q_tile", 3 * lanes)
                    .with("k_tile", 13)
                    .with("v_block", 5);
                case.check(&mut rng);
                // Pairs of groups, and an odd group (3 per tile) after them.
                case.schedule = case.schedule.with("pair", 1).with("k_block", 5);
                case.check(&mut rng);
            }
        }
    }

    #[test]
    fn fully_masked_rows_give_zeros_and_nan_scores_nan_like_the_interpreter() {
        let mut rng = Rng::from_state(11);
        for (lanes, causal) in widths().into_iter().flat_map(|l| [(l, false), (l, true)]) {
            let mut case = Case::new(2, 2, 1, 5, 17, 8);
            case.causal = causal;
            case.mask = Some("bhqk");
            case.schedule = Schedule::default()
                .with("lanes", lanes)
                .with("q_tile", lanes)
                .with("k_tile", 8);
            let mut inputs = case.inputs(&mut rng);
            let mut mask: Vec<f32> = inputs[3].to_f32_array().iter().copied().collect();
            // Row 2 of (b 0, h 1) and all of batch 1, head 0 see nothing.
            let row = |b: usize, h: usize, i: usize| ((b * 2 + h) * 5 + i) * 17;
            mask[row(0, 1, 2)..row(0, 1, 3)].fill(f32::NEG_INFINITY);
            mask[row(1, 0, 0)..row(1, 1, 0)].fill(f32::NEG_INFINITY);
            // A NaN score (left out of the running max) still makes its row NaN.
            mask[row(0, 0, 1) + 3] = f32::NAN;
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
        for lanes in widths() {
            let mut empty = Case::new(1, 2, 2, 3, 0, 4);
            empty.schedule = Schedule::default().with("lanes", lanes);
            empty.check(&mut rng);
        }
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
        assert!(err(case.spec(), &schedule.clone().with("k_tile", 0)).contains("k_tile"));
        assert!(err(case.spec(), &schedule.clone().with("k_block", 13)).contains("k_block"));
        assert!(err(case.spec(), &schedule.clone().with("p_unroll", 5)).contains("p_unroll"));
        assert!(err(case.spec(), &schedule.clone().with("q_tile", 6)).contains("q_tile"));
        assert!(err(case.spec(), &schedule.clone().with("lanes", 2)).contains("lanes"));
        assert!(err(case.spec(), &schedule.clone().with("pair", 2)).contains("pair"));
        let wide = schedule.with("lanes", 16);
        assert!(err(case.spec(), &wide.clone().with("q_tile", 8)).contains("q_tile"));
        assert!(err(case.spec(), &wide.clone().with("q_tile", 80)).contains("q_tile"));
        assert!(err(case.spec(), &wide.with("v_block", 25)).contains("v_block"));
    }
}

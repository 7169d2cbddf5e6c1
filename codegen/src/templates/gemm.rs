//! GEMM and batched GEMM with a fused epilogue: `Y = act(alpha * A@B + bias) + residual`.
//!
//! # Design
//!
//! *Register tiles.* An `mr`×`nr` block of Y accumulates in `mr * nr / L` vector variables of
//! `L` lanes (`L` = the schedule's `lanes`, the backend's widest vector: 4 for Cranelift, 16
//! for LLVM on AVX-512) over the K loop (unrolled `unroll` times): each K step loads the
//! `nr / L` vectors of B's row and, per row of the tile, broadcasts one element of A and
//! issues `nr / L` FMAs. The epilogue (scale, bias, activation, residual) is applied to the
//! accumulators before the one store of each output element.
//!
//! The default tile is 12×4 rather than the 6×8 of hand-written kernels because of how
//! Cranelift lowers `fma` on x86-64: the result register is tied to a multiplicand, never to
//! the addend. With one vector per row each broadcast of A has a single use, so it is loaded
//! straight into the register that receives the sum (`vbroadcastss m32` + `vfmadd213ps`, no
//! copies); with more vectors per row every FMA but the last pays a register copy. 12
//! accumulators, the 2 B vectors of an unrolled pair of K steps and a broadcast fit the 16
//! xmm registers. LLVM has no such copies: with 16 lanes the default tile is 12×32, 24 zmm
//! accumulators of AVX-512's 32 registers.
//!
//! *Edges.* Columns are covered by column stages: panels of `nr` columns, then panels of 32,
//! 16, 8 and 4 where narrower (each in the widest vectors up to `L` that divide it), then
//! single columns with scalar accumulators, so any N works without
//! masked stores. Rows are covered by row stages the same way: tiles of `mr` rows, then of 8,
//! 4, 2 and 1. Tiles with few accumulators (M = 1 decoding) keep one set of accumulators per
//! unrolled K step ([`CHAINS`] independent FMA chains in all, summed before the epilogue) so
//! that the FMA latency stays hidden.
//!
//! *B layout.* Each panel of width `w` whose first column is `c` is stored as `[K][w]` from
//! element `c * K` (panels contiguous, in column order). A constant B (a weight) is packed so
//! at build time ([`Arg::Constant`]). A B that is a group input is packed per call into an
//! [`Arg::Scratch`] buffer by the chunk that owns the panel (columns are the parallel axis,
//! so the regions are disjoint): read in place, the rows of a panel lie `4 N` bytes apart,
//! which is 3-4× slower at N = 1024 (cache-set conflicts) while packing costs one pass over B.
//! With fewer than [`PACK_MIN_ROWS`] rows per batch item (decoding; decided at run time when
//! M is symbolic) packing would cost as much as the product, so B is read in place by 2×16
//! tiles (a row of a panel is a whole cache line), 2× faster than 12×4 tiles there. B is read
//! in place too when rows are the parallel axis (the chunks would share panels).
//!
//! The kernel relies on the backend treating loads from buffers it never stores to as pure
//! (placed at their use, so the broadcast loads fold into `vbroadcastss`) and hoisting
//! loop-invariant index arithmetic; see the figures below.
//!
//! *Prefetch* (decoding). Tiles of at most [`PREFETCH_MAX_ROWS`] rows reading packed B
//! (constant or scratch) stream it from memory rather than reuse it from L1, so each unrolled
//! K iteration issues one software prefetch (`Stmt::Prefetch`, `prefetcht0` in LLVM, dropped
//! by Cranelift) per cache line it reads, `prefetch` bytes further on. A chunk's panels are
//! contiguous and read in order, so the prefetches run ahead across panel and page
//! boundaries, where the hardware prefetchers stop. Tiles of more rows (prefill) do not
//! prefetch.
//!
//! *Loop nest.* `[batch] > [packing of the chunk's panels] > blocks of mc rows > column
//! panels > row tiles > K`: one packed B panel (`K * nr * 4` bytes) stays in L1 while the row
//! tiles of a cache block of A pass over it.
//!
//! *Parallel axis* (kernel sizes 0 and 1): the N columns by default (a chunk owns the panels
//! whose first column lies in its range; this splits M = 1 decoding too), or the rows of each
//! batch item.
//!
//! Schedule parameters (name: default):
//! - `lanes`: 4 — the widest vector, 4, 8 or 16 (the runtime sets the backend's);
//! - `mr`: 12 — rows of the register tile, 1..=16;
//! - `nr`: 4 with 4 lanes, else `2 * lanes` — columns of the register tile, a multiple of 4
//!   in 4..=`4 * lanes`;
//! - `unroll`: 2 — K-loop unroll factor, 1..=16;
//! - `mc`: 96 — rows per cache block, rounded up to a multiple of `mr` (0 = no blocking);
//! - `parallel`: 0 — the parallel axis: 0 = columns, 1 = rows;
//! - `prefetch`: 512 — bytes ahead in packed B that tiles of few rows prefetch (0 = none).
//!
//! Batching: A may have any leading dims with a 2-D B (or a B whose leading dims are all 1),
//! which folds the batch into M; A and B with equal leading dims loop over the batch. Other
//! broadcasts, a batched constant B, and ranks below 2 are errors, as are a constant B or
//! constant bias whose length does not match its (known) shape.
//!
//! Measured (`cargo run --release -p kiln-codegen --example gemm_bench`; a 2-core Xeon VM
//! whose 128-bit FMA ceiling is ≈ 47 GFLOP/s per core, best medians of a few runs):
//! 512×768×768 with constant B 45.4 GFLOP/s on one thread, 89 on two; 128×384×1536 and
//! 128×1536×384 ≈ 45; 1024³ ≈ 42; input B (packed per call) 43.5 at 512×768×768. Without the
//! backend's pure loads the 512×768×768 figure is 26, without its loop-invariant hoisting 33.
//! With LLVM and 16 lanes (`--features llvm --example gemm_bench llvm`, AVX-512): 150–163
//! GFLOP/s at 128×384×1536 and 128×1536×384, 135 at 512×768×768, 100 at 1024³ (one thread).
//!
//! Decode GEMVs (`cargo run --release -p kiln-codegen --features llvm --example gemv_bench
//! llvm`; AMD EPYC Zen 5 VM, 2 cores, 32 MiB L3, shared with another developer's builds
//! throughout, so every 2-thread figure had a busy second core): the weights of each shape
//! are rotated over ≥ 256 MiB of copies so that every call reads them from DRAM. Memory
//! placement matters on this VM: the same kernel over two sets of copies differs by up to
//! 35%, so kernels are compared on the same weights in one process (`b.prefetch=N`, paired
//! passes, medians of the ratios). Prefetching 512 bytes ahead against none: +5 to +15% at
//! M = 1 (576→576 1.06, 576→192 1.08, 576→1536 1.12, 1536→576 1.05, lm head 576→49152
//! 1.03) and +11 to +25% at M = 8; 256 bytes is equal at M = 1 and 4% slower at M = 8;
//! 1024 is 10-16% slower than 512; 2048 and 4096 are 3-11% slower than none at M = 1
//! (presumably lines fetched into L1 that early are evicted before their use). One run (13:18, load average 3.4; probe = the faster of a 1 GiB AVX-512 sum
//! and this template's 1×4096×65536 GEMV, best runs, 25.0 / 25.6 GB/s at 1 / 2 threads
//! then), GB/s at 1 thread before → after (this version): M = 1 576→576 15.4 → 16.4,
//! 576→192 22.8 → 21.7, 576→1536 19.0 → 22.6, 1536→576 23.0 → 21.5, lm head 20.2 → 23.0
//! (92% of the probe); M = 8 576→1536 14.1 → 20.4, 1536→576 16.6 → 17.9. Separate runs of
//! the same binary vary by ±15% here; the paired ratios above are the reliable figures.
//! In a quieter moment (13:32, load average 1.2; probe 29.0 / 30.2 GB/s), M = 1 after, median
//! [best] % of the probe at 1 thread / 2 threads: 576→576 73 [89] / 71 [79], 576→192 59 [80]
//! / 92 [97], 576→1536 88 [91] / 58 [92], 1536→576 88 [91] / 92 [101], lm head 77 [86] / 74
//! [94]; the paired prefetch gain then was 1.05-1.10 at 1 and 2 threads, 1.00 on the lm head.
//! The best 2-thread runs reach the probe, the medians do not: another process had a core
//! most of the time, so whether the 2-thread split reaches 85% on a quiet machine is not
//! established here. Prefill is unchanged within the noise (`--example gemm_bench llvm
//! prefetch=0` vs the default, alternated twice: 128×384×1536, 128×1536×384, 512×768×768 at
//! 92-107 GFLOP/s either way). Two threads gained nothing measurable on the loaded machine,
//! before or after; the fixed cost of a kernel step (1×16×16) went from 0.10-0.14 / 0.28-0.69
//! µs to 0.07-0.12 / 0.12-0.18 µs at 1 / 2 threads (`runtime/src/launch.rs`: no allocation
//! per call, `rayon::join` instead of a scope).

use super::activation::activation;
use super::{f32_bytes, Arg, Built, ConstantBytes, ConstantData, Sizes};
use crate::kir::{Compare, Index, Kernel, Stmt, Value};
use crate::schedule::{range, Param, Space};
use crate::Schedule;
use bytes::Bytes;
use kiln_ir::DType;
use kiln_ir::{Activation, Dim};
use std::borrow::Cow;
use std::sync::Arc;

/// Where the bias (one value per output column) comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Bias {
    /// Constant values, `[N]`.
    Constant(Vec<f32>),
    /// Group input 2, `[N]`.
    Input,
}

/// What is applied to the accumulated products before they are stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Epilogue {
    /// Scale of the accumulated products.
    pub alpha: f32,
    /// Bias added after scaling.
    pub bias: Option<Bias>,
    /// Activation applied after the bias.
    pub activation: Activation,
    /// Whether a residual (the last group input, Y's shape) is added after the activation.
    pub residual: bool,
}

impl Default for Epilogue {
    /// The plain product: `alpha` 1, no bias, no activation, no residual.
    fn default() -> Epilogue {
        Epilogue {
            alpha: 1.0,
            bias: None,
            activation: Activation::None,
            residual: false,
        }
    }
}

/// A (batched) matrix product with its epilogue. Group inputs are `[A, B, bias (if
/// Bias::Input), residual (if residual)]`; output 0 is Y, `[..batch, M, N]`.
#[derive(Clone, Debug, PartialEq)]
pub struct MatMulSpec {
    /// Shape of A, `[..batch, M, K]`.
    pub a: Vec<Dim>,
    /// Shape of B, `[K, N]` or `[..batch, K, N]`.
    pub b: Vec<Dim>,
    /// B's values when it is a constant (a weight), as the graph stores them; input 1 is
    /// then not read.
    pub b_constant: Option<ConstantB>,
    /// The fused epilogue.
    pub epilogue: Epilogue,
}

/// A constant B as the graph stores it, packed from there into the kernel's panels when the
/// plan's weights are made (never copied in between).
#[derive(Clone, Debug, PartialEq)]
pub struct ConstantB {
    /// The f32 values, little-endian, row-major.
    pub bytes: Bytes,
    /// Whether they are stored `[N, K]` (a torch `Linear` weight, which the graph reads
    /// through a `Transpose`, or a `Gemm` with `transB`) rather than `[K, N]`.
    pub transposed: bool,
}

impl ConstantB {
    /// Row-major `[K, N]` values.
    ///
    /// ```
    /// use kiln_codegen::templates::gemm::ConstantB;
    /// let b = ConstantB::f32(&[1.0, 2.0]);
    /// assert_eq!((b.bytes.len(), b.transposed), (8, false));
    /// ```
    pub fn f32(values: &[f32]) -> ConstantB {
        ConstantB {
            bytes: Bytes::copy_from_slice(bytemuck::cast_slice(values)),
            transposed: false,
        }
    }

    /// The number of values.
    fn len(&self) -> usize {
        self.bytes.len() / 4
    }
}

/// Builds the kernel of `spec` with `schedule` (see the module doc for the parameters).
/// Errors name the unsupported shape or parameter, so the caller can fall back.
pub fn matmul(spec: &MatMulSpec, schedule: &Schedule) -> Result<Built, String> {
    let params = Params::new(schedule)?;
    let shape = Shape::new(spec)?;
    let columns = stage_widths(params.nr);
    let mut args = vec![Arg::Input(0), Arg::Input(1), Arg::Output(0)];
    let e = &spec.epilogue;
    let bias = epilogue_bias(e, &shape.n, &mut args)?;
    let residual = e.residual.then(|| {
        args.push(Arg::Input(2 + usize::from(e.bias == Some(Bias::Input))));
        args.len() - 1
    });
    let b = b_source(spec, &shape, &params, &columns, &mut args)?;
    let mut gen = Gen::default();
    let mut geo = Geo {
        k: gen.dim(&shape.k),
        n: gen.dim(&shape.n),
        rows: gen.dim(&shape.rows),
        unroll: params.unroll,
        lanes: params.lanes,
        columns,
        row_sizes: row_stages(params.mr),
        b,
        bias,
        residual,
        alpha: e.alpha,
        activation: e.activation,
        prefetch: params.prefetch,
    };
    if shape.few_rows() && spec.b_constant.is_none() {
        geo = geo.few_rows_in_place();
    }
    let batch = shape.batch.as_ref().map(|d| gen.dim(d));
    let body = gen.body(&geo, &params, batch);
    let parallel = if params.over_rows {
        shape.rows.clone()
    } else {
        shape.n.clone()
    };
    Ok(Built {
        kernel: Kernel {
            name: "matmul".into(),
            buffers: args.len(),
            sizes: 2 + gen.sizes.count(),
            vars: gen.vars,
            body,
        },
        args,
        sizes: gen.sizes.into_dims(),
        parallel,
    })
}

/// Independent accumulators a tile needs to hide the FMA latency (two FMA units, four
/// cycles each).
const CHAINS: usize = 8;

/// Rows (per batch item) from which an input B is packed before the product rather than read
/// in place.
const PACK_MIN_ROWS: i64 = 16;

/// The register tile (rows, columns) of products with fewer than [`PACK_MIN_ROWS`] rows and
/// an input B, read in place.
const FEW_ROWS_TILE: (usize, i64) = (2, 16);

/// The default prefetch distance in bytes (the `prefetch` parameter).
const PREFETCH: i64 = 512;

/// Tiles of at most this many rows prefetch packed B: they stream it from memory (decoding)
/// rather than reuse it from L1.
const PREFETCH_MAX_ROWS: usize = 8;

/// Kernel buffer of A.
const A: usize = 0;
/// Kernel buffer of B (the input, or the packed constant).
const B: usize = 1;
/// Kernel buffer of Y.
const Y: usize = 2;

/// The schedule parameters, validated.
struct Params {
    lanes: u8,
    mr: usize,
    nr: i64,
    unroll: i64,
    mc: i64,
    over_rows: bool,
    /// Prefetch distance in f32 elements (0: none).
    prefetch: i64,
}

/// The template's parameters (the module documentation says what each does).
pub fn space() -> Space {
    Space {
        template: "gemm",
        version: 2,
        params: vec![
            Param {
                name: "lanes",
                doc: "the widest vector in f32 lanes (the backend's)",
                values: |_| vec![4, 8, 16],
                default: |_| 4,
            },
            Param {
                name: "mr",
                doc: "rows of the register tile",
                values: |_| range(1, 16),
                default: |_| 12,
            },
            Param {
                name: "nr",
                doc: "columns of the register tile",
                values: |s| (1..=s.value("lanes")).map(|i| 4 * i).collect(),
                default: |s| match s.value("lanes") {
                    4 => 4,
                    lanes => 2 * lanes,
                },
            },
            Param {
                name: "unroll",
                doc: "K-loop unroll factor",
                values: |_| range(1, 16),
                default: |_| 2,
            },
            Param {
                name: "mc",
                doc: "rows per cache block, rounded up to whole register tiles (0: no blocking)",
                values: |_| vec![0, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512],
                default: |_| 96,
            },
            Param {
                name: "parallel",
                doc: "the parallel axis: 0 = columns, 1 = rows",
                values: |_| vec![0, 1],
                default: |_| 0,
            },
            Param {
                name: "prefetch",
                doc: "bytes ahead in packed B that tiles of few rows prefetch (0: none)",
                values: |_| vec![0, 256, 512, 1024, 2048, 4096, 8192],
                default: |_| PREFETCH,
            },
        ],
    }
}

impl Params {
    fn new(s: &Schedule) -> Result<Params, String> {
        let s = space().resolve(s)?;
        let mut p = Params {
            lanes: s.value("lanes") as u8,
            mr: s.value("mr") as usize,
            nr: s.value("nr"),
            unroll: s.value("unroll"),
            mc: s.value("mc"),
            over_rows: s.value("parallel") == 1,
            prefetch: s.value("prefetch") / 4,
        };
        // Cache blocks of whole register tiles.
        p.mc = (p.mc as usize).div_ceil(p.mr) as i64 * p.mr as i64;
        Ok(p)
    }
}

/// The product's shape once the batch is folded or looped.
struct Shape {
    /// Batch items looped over (A and B both batched), or none.
    batch: Option<Dim>,
    /// Rows of one batch item (M, times the folded batch).
    rows: Dim,
    k: Dim,
    n: Dim,
}

impl Shape {
    fn new(spec: &MatMulSpec) -> Result<Shape, String> {
        let (a, b) = (&spec.a, &spec.b);
        if a.len() < 2 || b.len() < 2 {
            return Err(format!(
                "MatMul needs A and B of rank >= 2, got {a:?} and {b:?}"
            ));
        }
        let (a_batch, a_mat) = a.split_at(a.len() - 2);
        let (b_batch, b_mat) = b.split_at(b.len() - 2);
        if a_mat[1] != b_mat[0] {
            return Err(format!(
                "MatMul inner dims differ: {} and {}",
                a_mat[1], b_mat[0]
            ));
        }
        let product = |dims: &[Dim]| dims.iter().fold(Dim::known(1), |p, d| &p * d);
        let (batch, rows) = if b_batch.iter().all(|d| d.is(1)) {
            (None, &product(a_batch) * &a_mat[0])
        } else if a_batch == b_batch {
            (Some(product(a_batch)), a_mat[0].clone())
        } else {
            return Err(format!(
                "MatMul batch dims {a_batch:?} and {b_batch:?} need broadcasting"
            ));
        };
        if batch.is_some() && spec.b_constant.is_some() {
            return Err("a constant B must be 2-D".into());
        }
        Ok(Shape {
            batch,
            rows,
            k: a_mat[1].clone(),
            n: b_mat[1].clone(),
        })
    }

    /// Whether each batch item is known to have fewer than [`PACK_MIN_ROWS`] rows.
    fn few_rows(&self) -> bool {
        matches!(self.rows.as_known(), Some(rows) if rows < PACK_MIN_ROWS)
    }

    /// K and N of a constant B with `len` values (they must be known and match).
    fn constant_b(&self, len: usize) -> Result<(usize, usize), String> {
        match (self.k.as_known(), self.n.as_known()) {
            (Some(k), Some(n)) if (k * n) as usize == len => Ok((k as usize, n as usize)),
            _ => Err(format!(
                "constant B has {len} values for a [{}, {}] matrix",
                self.k, self.n
            )),
        }
    }
}

/// Where the tiles read B from, setting or adding the argument that needs (the packed
/// constant, or the scratch space it is packed into per call).
fn b_source(
    spec: &MatMulSpec,
    shape: &Shape,
    params: &Params,
    columns: &[i64],
    args: &mut Vec<Arg>,
) -> Result<BSource, String> {
    if let Some(b) = &spec.b_constant {
        let (k, n) = shape.constant_b(b.len())?;
        let widths: Vec<String> = columns.iter().map(|w| w.to_string()).collect();
        let layout = format!("gemm.b_panels.{}", widths.join("-"));
        let recipe = format!("{layout} of [{k}, {n}] (transposed: {})", b.transposed);
        let (columns, transposed) = (columns.to_vec(), b.transposed);
        let bytes = ConstantBytes::made(b.bytes.clone(), &recipe, k * n * 4, move |from| {
            f32_bytes(pack(from, transposed, k, n, &columns))
        });
        args[B] = Arg::Constant(ConstantData {
            dtype: DType::F32,
            layout,
            shape: vec![k, n],
            bytes,
        });
        return Ok(BSource::Constant);
    }
    if params.over_rows || shape.few_rows() {
        return Ok(BSource::Direct);
    }
    args.push(Arg::Scratch(&shape.k * &shape.n));
    Ok(BSource::Scratch(args.len() - 1))
}

/// The kernel buffer of the bias, adding its argument.
fn epilogue_bias(e: &Epilogue, n: &Dim, args: &mut Vec<Arg>) -> Result<Option<usize>, String> {
    match &e.bias {
        None => return Ok(None),
        Some(Bias::Input) => args.push(Arg::Input(2)),
        Some(Bias::Constant(v)) if n.is(v.len() as i64) => args.push(Arg::Constant(
            ConstantData::dense_f32(Arc::from(v.as_slice())),
        )),
        Some(Bias::Constant(v)) => {
            return Err(format!("constant bias has {} values for N = {n}", v.len()))
        }
    }
    Ok(Some(args.len() - 1))
}

/// Widths of the column stages: `nr`, then 32, 16, 8 and 4 where narrower, then 1 (scalar
/// columns).
fn stage_widths(nr: i64) -> Vec<i64> {
    let mut widths = vec![nr];
    widths.extend([32, 16, 8, 4].into_iter().filter(|&w| w < nr));
    widths.push(1);
    widths
}

/// The lanes of the vectors that cover a panel `width` wide: the widest of 16, 8 and 4 that
/// divides it and is at most `max` (1 for single columns).
fn panel_lanes(width: i64, max: u8) -> u8 {
    [16u8, 8, 4]
        .into_iter()
        .find(|&l| l <= max && width % i64::from(l) == 0)
        .unwrap_or(1)
}

/// Sizes of the row stages: `mr`, then 8, 4, 2 and 1 where smaller.
fn row_stages(mr: usize) -> Vec<usize> {
    let mut sizes = vec![mr];
    sizes.extend([8, 4, 2, 1].into_iter().filter(|&s| s < mr));
    sizes
}

/// B's `[k, n]` values (little-endian f32 bytes, row-major, or `[n, k]` when `transposed`)
/// packed into the panels of the column stages: the panel of width `w` from column `c` is
/// `[k][w]` from element `c * k`.
fn pack(b: &[u8], transposed: bool, k: usize, n: usize, widths: &[i64]) -> Vec<f32> {
    let values: Cow<[f32]> = match bytemuck::try_cast_slice(b) {
        Ok(aligned) => Cow::Borrowed(aligned),
        Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(b)),
    };
    let mut data = Vec::with_capacity(k * n);
    let mut column = 0;
    for &w in widths {
        let w = w as usize;
        while n - column >= w {
            if transposed {
                for row in 0..k {
                    data.extend((column..column + w).map(|c| values[c * k + row]));
                }
            } else {
                for row in values.chunks(n).take(k) {
                    data.extend_from_slice(&row[column..column + w]);
                }
            }
            column += w;
        }
    }
    data
}

/// Splits `[end - len, end)` into stages of `sizes`: for each, its first index and how many
/// blocks of that size it has (each stage takes what the previous ones left over).
fn split(end: &Index, len: Index, sizes: &[i64]) -> Vec<(Index, Index)> {
    let mut left = len;
    sizes
        .iter()
        .map(|&s| {
            let stage = (end.clone() - left.clone(), left.clone() / Index::Const(s));
            left = left.clone() % Index::Const(s);
            stage
        })
        .collect()
}

/// `ceil(max(x, 0) / w)` clamped to `count`: the first block of width `w` whose start is at or
/// after `x`, for blocks counted from 0.
fn first_block(x: Index, w: i64, count: &Index) -> Index {
    let c = Index::Const;
    ((x.max(c(0)) + c(w - 1)) / c(w)).min(count.clone())
}

/// `start + (i + r) * stride + c`, written as a variable part plus a constant last addend
/// when the stride is known, so that the backend folds the constant into the address.
fn split_constant(start: Index, i: &Index, r: i64, stride: &Index, c: i64) -> Index {
    match stride {
        Index::Const(s) => (start + i.clone() * Index::Const(*s)) + Index::Const(r * s + c),
        _ => {
            let row = i.clone() + Index::Const(r);
            (start + row * stride.clone()) + Index::Const(c)
        }
    }
}

/// Where the tiles read B from.
#[derive(Clone)]
enum BSource {
    /// The packed constant (buffer [`B`]).
    Constant,
    /// This scratch buffer, packed from input B by each chunk for its panels.
    Scratch(usize),
    /// Input B in place.
    Direct,
}

/// What stays fixed across the kernel: the sizes, B's layout and the epilogue.
#[derive(Clone)]
struct Geo {
    k: Index,
    n: Index,
    /// Rows of one batch item.
    rows: Index,
    unroll: i64,
    /// The widest vector, in lanes.
    lanes: u8,
    /// Column stage widths.
    columns: Vec<i64>,
    /// Row stage sizes.
    row_sizes: Vec<usize>,
    b: BSource,
    bias: Option<usize>,
    residual: Option<usize>,
    alpha: f32,
    activation: Activation,
    /// Prefetch distance in f32 elements (0: none).
    prefetch: i64,
}

impl Geo {
    /// This product with B read in place by tiles of [`FEW_ROWS_TILE`]: with few rows the
    /// B traffic dominates, and a row of 16 columns reads whole cache lines.
    fn few_rows_in_place(&self) -> Geo {
        Geo {
            b: BSource::Direct,
            row_sizes: row_stages(FEW_ROWS_TILE.0),
            columns: stage_widths(FEW_ROWS_TILE.1),
            ..self.clone()
        }
    }
}

/// The batch item's offsets into A, input B and Y.
struct Item {
    a: Index,
    b: Index,
    y: Index,
}

/// A column panel: its width and first column.
#[derive(Clone)]
struct Panel {
    width: i64,
    c0: Index,
}

/// One register tile: `rows` rows from `r0` against a panel, its K loop at nesting depth
/// `depth`.
struct Tile {
    rows: usize,
    panel: Panel,
    r0: Index,
    depth: usize,
}

/// One step of a K loop: `k = counter * scale + u`.
struct KStep {
    counter: Index,
    scale: i64,
    u: i64,
}

impl KStep {
    /// The first K of the unrolled iteration, `counter * scale`.
    fn first(&self) -> Index {
        self.counter.clone() * Index::Const(self.scale)
    }
}

/// The kernel being built: its size parameters (2..) and variables.
#[derive(Default)]
struct Gen {
    sizes: Sizes,
    vars: Vec<u8>,
}

impl Gen {
    /// `d` as an index: a constant when known, else a size parameter.
    fn dim(&mut self, d: &Dim) -> Index {
        self.sizes.index(d)
    }

    /// A new variable of `lanes`.
    fn var(&mut self, lanes: u8) -> usize {
        self.vars.push(lanes);
        self.vars.len() - 1
    }

    /// The kernel body: the batch loop (if any) around one batch item's product.
    fn body(&mut self, geo: &Geo, p: &Params, batch: Option<Index>) -> Vec<Stmt> {
        let Some(batch) = batch else {
            let zero = Index::Const(0);
            let item = Item {
                a: zero.clone(),
                b: zero.clone(),
                y: zero,
            };
            return self.item(geo, p, &item, 0);
        };
        let i = Index::Loop(0);
        let item = Item {
            a: i.clone() * geo.rows.clone() * geo.k.clone(),
            b: i.clone() * geo.k.clone() * geo.n.clone(),
            y: i * geo.rows.clone() * geo.n.clone(),
        };
        let body = self.item(geo, p, &item, 1);
        vec![Stmt::for_range(0.into(), batch, body)]
    }

    /// One batch item (loops from `depth`): the cache blocks of rows, after packing B's panels
    /// when B is packed per call (with at least [`PACK_MIN_ROWS`] rows; fewer read B in
    /// place, as packing would cost as much as the product).
    fn item(&mut self, geo: &Geo, p: &Params, item: &Item, depth: usize) -> Vec<Stmt> {
        let BSource::Scratch(scratch) = geo.b else {
            return vec![self.blocks(geo, p, item, depth)];
        };
        let mut packed = self.panels(geo, p, depth, |_, panel| {
            pack_panel(geo, item, scratch, panel, depth + 1)
        });
        packed.push(self.blocks(geo, p, item, depth));
        if let Index::Const(_) = geo.rows {
            return packed;
        }
        let direct = geo.few_rows_in_place();
        vec![Stmt::If {
            lhs: geo.rows.clone(),
            cmp: Compare::Lt,
            rhs: Index::Const(PACK_MIN_ROWS),
            then: vec![self.blocks(&direct, p, item, depth)],
            otherwise: packed,
        }]
    }

    /// For each column stage, a loop at `depth` over the panels this chunk owns, with
    /// `body` for each panel.
    fn panels(
        &mut self,
        geo: &Geo,
        p: &Params,
        depth: usize,
        mut body: impl FnMut(&mut Self, &Panel) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let c = Index::Const;
        let stages = split(&geo.n, geo.n.clone(), &geo.columns);
        let mut loops = vec![];
        for ((start, count), &width) in stages.into_iter().zip(&geo.columns) {
            let (q_lo, q_hi) = if p.over_rows {
                (c(0), count)
            } else {
                let (lo, hi) = (Index::Size(0), Index::Size(1));
                (
                    first_block(lo - start.clone(), width, &count),
                    first_block(hi - start.clone(), width, &count),
                )
            };
            let panel = Panel {
                width,
                c0: start + Index::Loop(depth) * c(width),
            };
            loops.push(Stmt::for_range(q_lo, q_hi, body(self, &panel)));
        }
        loops
    }

    /// The loop over cache blocks of `mc` rows (at `depth`), each covered by column panels.
    fn blocks(&mut self, geo: &Geo, p: &Params, item: &Item, depth: usize) -> Stmt {
        let c = Index::Const;
        let (r_lo, r_hi) = if p.over_rows {
            (Index::Size(0), Index::Size(1))
        } else {
            (c(0), geo.rows.clone())
        };
        let (count, b0, b1) = if p.mc > 0 {
            let b0 = r_lo.clone() + Index::Loop(depth) * c(p.mc);
            let count = (r_hi.clone() - r_lo + c(p.mc - 1)) / c(p.mc);
            (count, b0.clone(), (b0 + c(p.mc)).min(r_hi))
        } else {
            (c(1), r_lo, r_hi)
        };
        let body = self.panels(geo, p, depth + 1, |gen, panel| {
            gen.row_tiles(geo, item, (&b0, &b1), panel, depth + 2)
        });
        Stmt::for_range(c(0), count, body)
    }

    /// The row tiles of rows `[b0, b1)` against one panel, by row stage (loops at `depth`).
    fn row_tiles(
        &mut self,
        geo: &Geo,
        item: &Item,
        (b0, b1): (&Index, &Index),
        panel: &Panel,
        depth: usize,
    ) -> Vec<Stmt> {
        let sizes: Vec<i64> = geo.row_sizes.iter().map(|&s| s as i64).collect();
        let stages = split(b1, b1.clone() - b0.clone(), &sizes);
        geo.row_sizes
            .iter()
            .zip(stages)
            .map(|(&rows, (start, count))| {
                let tile = Tile {
                    rows,
                    panel: panel.clone(),
                    r0: start + Index::Loop(depth) * Index::Const(rows as i64),
                    depth: depth + 1,
                };
                Stmt::for_range(0.into(), count, self.tile(geo, item, &tile))
            })
            .collect()
    }

    /// One register tile: zeroed accumulators, the unrolled K loop and its remainder, the
    /// epilogue and the stores. Tiles with fewer than [`CHAINS`] accumulators keep one set
    /// per unrolled K step, summed at the end.
    fn tile(&mut self, geo: &Geo, item: &Item, t: &Tile) -> Vec<Stmt> {
        let lanes = panel_lanes(t.panel.width, geo.lanes);
        let vectors = (t.panel.width / i64::from(lanes)) as usize;
        let sets = CHAINS.div_ceil(t.rows * vectors);
        let unroll = (geo.unroll as usize).div_ceil(sets) as i64 * sets as i64;
        let acc: Vec<Vec<Vec<usize>>> = (0..sets)
            .map(|_| {
                (0..t.rows)
                    .map(|_| (0..vectors).map(|_| self.var(lanes)).collect())
                    .collect()
            })
            .collect();
        let b: Vec<usize> = (0..vectors).map(|_| self.var(lanes)).collect();
        let a = self.var(lanes);
        let mut body: Vec<Stmt> = acc
            .iter()
            .flatten()
            .flatten()
            .map(|&v| Stmt::set(v, Value::Const(0.0)))
            .collect();
        let counter = Index::Loop(t.depth);
        let unrolled = geo.k.clone() / Index::Const(unroll);
        let mut steps: Vec<Stmt> = (0..unroll)
            .flat_map(|u| {
                let step = KStep {
                    counter: counter.clone(),
                    scale: unroll,
                    u,
                };
                let set = &acc[u as usize % sets];
                k_step(geo, item, t, &step, (set, &b, a))
            })
            .collect();
        let first = KStep {
            counter: counter.clone(),
            scale: unroll,
            u: 0,
        };
        steps.extend(prefetches(geo, t, &first, unroll));
        body.push(Stmt::for_range(0.into(), unrolled.clone(), steps));
        if !matches!(geo.k, Index::Const(k) if k % unroll == 0) {
            let step = KStep {
                counter,
                scale: 1,
                u: 0,
            };
            let rest = k_step(geo, item, t, &step, (&acc[0], &b, a));
            let start = unrolled * Index::Const(unroll);
            body.push(Stmt::for_range(start, geo.k.clone(), rest));
        }
        for set in &acc[1..] {
            for (&total, &part) in acc[0].iter().flatten().zip(set.iter().flatten()) {
                body.push(Stmt::set(total, Value::Var(total) + Value::Var(part)));
            }
        }
        body.extend(epilogue(geo, item, t, &acc[0], lanes));
        body
    }
}

/// Copies the panel from input B into `scratch` in the packed layout (K loop at `depth`).
fn pack_panel(geo: &Geo, item: &Item, scratch: usize, panel: &Panel, depth: usize) -> Vec<Stmt> {
    let c = Index::Const;
    let (k, w) = (Index::Loop(depth), panel.width);
    let lanes = panel_lanes(w, geo.lanes);
    let copies = (0..w / i64::from(lanes))
        .map(|v| {
            let j = v * i64::from(lanes);
            let to = (panel.c0.clone() * geo.k.clone() + k.clone() * c(w)) + c(j);
            let from = split_constant(item.b.clone() + panel.c0.clone(), &k, 0, &geo.n, j);
            Stmt::store(scratch, to, Value::load(B, from), lanes)
        })
        .collect();
    vec![Stmt::for_range(c(0), geo.k.clone(), copies)]
}

/// One K step of a tile: load B's vectors, then per row broadcast A and accumulate.
fn k_step(
    geo: &Geo,
    item: &Item,
    t: &Tile,
    k: &KStep,
    (acc, b, a): (&[Vec<usize>], &[usize], usize),
) -> Vec<Stmt> {
    let lanes = i64::from(panel_lanes(t.panel.width, geo.lanes));
    let mut stmts: Vec<Stmt> = b
        .iter()
        .enumerate()
        .map(|(v, &var)| Stmt::set(var, b_load(geo, item, &t.panel, k, v as i64 * lanes)))
        .collect();
    for (r, row) in acc.iter().enumerate() {
        let start = item.a.clone() + k.first();
        let index = split_constant(start, &t.r0, r as i64, &geo.k, k.u);
        stmts.push(Stmt::set(a, Value::load(A, index).splat()));
        for (&accumulator, &bv) in row.iter().zip(b) {
            let sum = Value::Var(a).fma(Value::Var(bv), Value::Var(accumulator));
            stmts.push(Stmt::set(accumulator, sum));
        }
    }
    stmts
}

/// The prefetches of one unrolled K iteration from `k` (`unroll` steps) of a tile of few
/// rows reading packed B: one per cache line of the `unroll * width` elements it reads,
/// [`Geo::prefetch`] elements further on. Packed panels follow one another in the order
/// the chunk reads them, so the prefetches run ahead across panel (and page) boundaries.
fn prefetches(geo: &Geo, t: &Tile, k: &KStep, unroll: i64) -> Vec<Stmt> {
    let buffer = match geo.b {
        BSource::Constant => B,
        BSource::Scratch(scratch) => scratch,
        BSource::Direct => return vec![],
    };
    if geo.prefetch == 0 || t.rows > PREFETCH_MAX_ROWS {
        return vec![];
    }
    let c = Index::Const;
    let w = t.panel.width;
    let row = t.panel.c0.clone() * geo.k.clone() + k.first() * c(w);
    // 16 f32 elements per 64-byte line.
    (0..(unroll * w + 15) / 16)
        .map(|line| Stmt::Prefetch {
            buffer,
            index: row.clone() + c(geo.prefetch + 16 * line),
        })
        .collect()
}

/// The element (or vector) of B at column `j` of `panel` in K step `k`.
fn b_load(geo: &Geo, item: &Item, panel: &Panel, k: &KStep, j: i64) -> Value {
    let c = Index::Const;
    let w = panel.width;
    let packed = |buffer| {
        let row = panel.c0.clone() * geo.k.clone() + k.first() * c(w);
        Value::load(buffer, row + c(k.u * w + j))
    };
    match geo.b {
        BSource::Constant => packed(B),
        BSource::Scratch(scratch) => packed(scratch),
        BSource::Direct => {
            let start = item.b.clone() + panel.c0.clone();
            Value::load(B, split_constant(start, &k.first(), k.u, &geo.n, j))
        }
    }
}

/// The stores of a tile: `act(alpha * acc + bias) + residual`.
fn epilogue(geo: &Geo, item: &Item, t: &Tile, acc: &[Vec<usize>], lanes: u8) -> Vec<Stmt> {
    let c = Index::Const;
    let mut stmts = vec![];
    for (r, row) in acc.iter().enumerate() {
        let start = item.y.clone() + t.panel.c0.clone();
        for (v, &var) in row.iter().enumerate() {
            let j = v as i64 * i64::from(lanes);
            let at = split_constant(start.clone(), &t.r0, r as i64, &geo.n, j);
            let mut x = Value::Var(var);
            if geo.alpha != 1.0 {
                x = x * Value::Const(geo.alpha);
            }
            if let Some(bias) = geo.bias {
                x = x + Value::load(bias, t.panel.c0.clone() + c(j));
            }
            if x != Value::Var(var) {
                stmts.push(Stmt::set(var, x));
            }
            let mut y = activation(geo.activation, Value::Var(var));
            if let Some(residual) = geo.residual {
                y = y + Value::load(residual, at.clone());
            }
            stmts.push(Stmt::store(Y, at, y, lanes));
        }
    }
    stmts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::testing::run;
    use kiln_ir::interp::{eval_op, Bindings};
    use kiln_ir::{Attrs, Op, OpKind, Tensor};

    /// A small deterministic generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn pick<T: Copy>(&mut self, from: &[T]) -> T {
            from[(self.next() % from.len() as u64) as usize]
        }

        fn tensor(&mut self, shape: &[usize]) -> Tensor {
            let n = shape.iter().product();
            let v = (0..n)
                .map(|_| (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
                .collect();
            Tensor::from_vec(shape, v).unwrap()
        }
    }

    fn interp(kind: OpKind, attrs: Attrs, args: &[&Tensor]) -> Tensor {
        eval(&Op::new(kind, attrs), args)
    }

    fn eval(op: &Op, args: &[&Tensor]) -> Tensor {
        let args: Vec<Option<&Tensor>> = args.iter().map(|t| Some(*t)).collect();
        eval_op(op, &args, &Bindings::default()).unwrap().remove(0)
    }

    /// `spec` on the interpreter: MatMul, scale, bias, activation, residual.
    fn reference(spec: &MatMulSpec, inputs: &[Tensor]) -> Tensor {
        let add = |x: &Tensor, y: &Tensor| interp(OpKind::Add, Attrs::default(), &[x, y]);
        let e = &spec.epilogue;
        let mut y = interp(OpKind::MatMul, Attrs::default(), &[&inputs[0], &inputs[1]]);
        if e.alpha != 1.0 {
            y = interp(
                OpKind::Mul,
                Attrs::default(),
                &[&y, &Tensor::scalar(e.alpha)],
            );
        }
        match &e.bias {
            Some(Bias::Constant(v)) => {
                y = add(&y, &Tensor::from_vec(&[v.len()], v.clone()).unwrap())
            }
            Some(Bias::Input) => y = add(&y, &inputs[2]),
            None => {}
        }
        y = eval(&e.activation.op(), &[&y]);
        if e.residual {
            y = add(&y, inputs.last().unwrap());
        }
        y
    }

    /// Builds `spec` with `schedule`, runs it on `inputs` with `chunks` and compares it with
    /// the interpreter to 1e-4 relative to max(1, |reference|).
    fn check(
        spec: &MatMulSpec,
        schedule: &Schedule,
        inputs: &[Tensor],
        b: &Bindings,
        chunks: usize,
    ) {
        let built = matmul(spec, schedule).unwrap();
        let want = reference(spec, inputs);
        let got = run(&built, inputs, &[want.shape().to_vec()], b, chunks).remove(0);
        let (got, want) = (got.to_f32_array(), want.to_f32_array());
        for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                "{spec:?} {schedule:?} chunks {chunks}: element {i} is {g}, want {w}"
            );
        }
    }

    /// The 2-D `b` as a constant B, stored as it is or (`transposed`) as `[N, K]`.
    fn constant_of(b: &Tensor, transposed: bool) -> ConstantB {
        let (k, n) = (b.shape()[0], b.shape()[1]);
        let values = b.to_f32_array();
        let values: Vec<f32> = match transposed {
            false => values.iter().copied().collect(),
            true => (0..n * k).map(|i| values[&[i % k, i / k][..]]).collect(),
        };
        ConstantB {
            transposed,
            ..ConstantB::f32(&values)
        }
    }

    fn known(shape: &[usize]) -> Vec<Dim> {
        shape.iter().map(|&d| Dim::from(d)).collect()
    }

    /// The inputs of `spec` for A and B of these shapes: [A, B, bias?, residual?].
    fn inputs(rng: &mut Rng, e: &Epilogue, a: &[usize], b: &[usize]) -> Vec<Tensor> {
        let (a_t, b_t) = (rng.tensor(a), rng.tensor(b));
        let n = b[b.len() - 1];
        let mut y = a[..a.len() - 1].to_vec();
        y.push(n);
        let mut v = vec![a_t, b_t];
        if e.bias == Some(Bias::Input) {
            v.push(rng.tensor(&[n]));
        }
        if e.residual {
            v.push(rng.tensor(&y));
        }
        v
    }

    /// Schedules of 4 lanes (Cranelift's), and with the LLVM backend, of 16 and 8.
    fn schedules() -> Vec<Schedule> {
        let mut all = vec![
            Schedule::default(),
            Schedule::default()
                .with("mr", 4)
                .with("nr", 12)
                .with("unroll", 3)
                .with("mc", 8)
                .with("parallel", 1),
            Schedule::default()
                .with("mr", 3)
                .with("nr", 16)
                .with("unroll", 1)
                .with("mc", 0),
        ];
        if cfg!(feature = "llvm") {
            let wide = Schedule::default().with("lanes", 16);
            all.push(wide.clone());
            all.push(wide.with("mr", 5).with("nr", 48).with("parallel", 1));
            let eight = Schedule::default().with("lanes", 8).with("nr", 28);
            all.push(eight.with("unroll", 3).with("mc", 16));
        }
        all
    }

    fn random_epilogue(rng: &mut Rng, n: usize, case: usize) -> Epilogue {
        let bias = match rng.next() % 3 {
            0 => None,
            1 => Some(Bias::Input),
            _ => Some(Bias::Constant(
                rng.tensor(&[n]).to_f32_array().iter().copied().collect(),
            )),
        };
        Epilogue {
            alpha: rng.pick(&[1.0, 0.125]),
            bias,
            activation: Activation::ALL[case % Activation::ALL.len()],
            residual: rng.next() & 1 == 0,
        }
    }

    #[test]
    fn random_products_match_the_interpreter() {
        const SIZES: [usize; 10] = [1, 3, 5, 7, 13, 17, 33, 8, 16, 24];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..42 {
            let (m, k, n) = (rng.pick(&SIZES), rng.pick(&SIZES), rng.pick(&SIZES));
            let constant = case % 2 == 0;
            let epilogue = random_epilogue(&mut rng, n, case);
            let ins = inputs(&mut rng, &epilogue, &[m, k], &[k, n]);
            let spec = MatMulSpec {
                a: known(&[m, k]),
                b: known(&[k, n]),
                b_constant: constant.then(|| constant_of(&ins[1], case % 4 == 0)),
                epilogue,
            };
            let all = schedules();
            let schedule = &all[case % all.len()];
            check(
                &spec,
                schedule,
                &ins,
                &Bindings::default(),
                1 + 2 * (case / 3 % 2),
            );
        }
    }

    #[test]
    fn several_cache_blocks_match_the_interpreter() {
        let mut rng = Rng(3);
        let (m, k, n) = (203, 70, 45);
        for (case, constant) in [(1, true), (4, false)] {
            let epilogue = random_epilogue(&mut rng, n, case);
            let ins = inputs(&mut rng, &epilogue, &[m, k], &[k, n]);
            let spec = MatMulSpec {
                a: known(&[m, k]),
                b: known(&[k, n]),
                b_constant: constant.then(|| constant_of(&ins[1], case == 1)),
                epilogue,
            };
            for schedule in schedules().iter().step_by(3) {
                check(&spec, schedule, &ins, &Bindings::default(), 3);
            }
        }
    }

    #[test]
    fn batches_fold_into_rows_or_loop() {
        let mut rng = Rng(7);
        for (case, schedule) in schedules().iter().enumerate() {
            let epilogue = random_epilogue(&mut rng, 13, case + 2);
            // A batched, B 2-D (constant) or [1, K, N] (input): folded into M.
            let ins = inputs(&mut rng, &epilogue, &[2, 5, 7], &[7, 13]);
            let spec = MatMulSpec {
                a: known(&[2, 5, 7]),
                b: known(&[7, 13]),
                b_constant: Some(constant_of(&ins[1], false)),
                epilogue: epilogue.clone(),
            };
            check(&spec, schedule, &ins, &Bindings::default(), 3);
            let mut ins = ins;
            ins[1] = ins[1].reshape(&[1, 7, 13]).unwrap();
            let spec = MatMulSpec {
                b: known(&[1, 7, 13]),
                b_constant: None,
                ..spec
            };
            check(&spec, schedule, &ins, &Bindings::default(), 1);
            // Both batched: a loop over the batch.
            let ins = inputs(&mut rng, &epilogue, &[2, 3, 9, 17], &[2, 3, 17, 13]);
            let spec = MatMulSpec {
                a: known(&[2, 3, 9, 17]),
                b: known(&[2, 3, 17, 13]),
                b_constant: None,
                epilogue,
            };
            for chunks in [1, 3] {
                check(&spec, schedule, &ins, &Bindings::default(), chunks);
            }
        }
    }

    #[test]
    fn symbolic_dims_are_runtime_sizes() {
        let mut rng = Rng(11);
        let s = Dim::sym("s");
        let (k, n) = (Dim::sym("k"), Dim::sym("n"));
        for (case, schedule) in schedules().iter().enumerate() {
            let epilogue = Epilogue {
                bias: Some(Bias::Input),
                ..random_epilogue(&mut rng, 1, case)
            };
            let weights = rng.tensor(&[33, 20]);
            let constant = MatMulSpec {
                a: vec![s.clone(), Dim::known(33)],
                b: known(&[33, 20]),
                b_constant: Some(constant_of(&weights, case % 2 == 1)),
                epilogue: epilogue.clone(),
            };
            let batched = MatMulSpec {
                a: vec![Dim::known(3), s.clone(), k.clone()],
                b: vec![Dim::known(3), k.clone(), n.clone()],
                b_constant: None,
                epilogue: epilogue.clone(),
            };
            for seq in [1, 6, 13, 20] {
                let mut ins = inputs(&mut rng, &epilogue, &[seq, 33], &[33, 20]);
                ins[1] = weights.clone();
                let b = Bindings::from([("s".to_string(), seq as i64)]);
                check(&constant, schedule, &ins, &b, 1 + 2 * (seq % 2));
                let (kv, nv) = (seq + 4, 2 * seq + 1);
                let ins = inputs(&mut rng, &epilogue, &[3, seq, kv], &[3, kv, nv]);
                let b = Bindings::from([
                    ("s".to_string(), seq as i64),
                    ("k".to_string(), kv as i64),
                    ("n".to_string(), nv as i64),
                ]);
                check(&batched, schedule, &ins, &b, 3);
            }
        }
    }

    #[test]
    fn unsupported_shapes_and_schedules_are_errors() {
        let spec = |a: &[usize], b: &[usize], constant: Option<usize>| MatMulSpec {
            a: known(a),
            b: known(b),
            b_constant: constant.map(|n| ConstantB::f32(&vec![0.0; n])),
            epilogue: Epilogue::default(),
        };
        let default = Schedule::default();
        assert!(matmul(&spec(&[4, 5], &[6, 7], None), &default).is_err());
        assert!(matmul(&spec(&[2, 4, 5], &[3, 5, 7], None), &default).is_err());
        assert!(matmul(&spec(&[4, 5], &[2, 5, 7], None), &default).is_err());
        assert!(matmul(&spec(&[5], &[5, 7], None), &default).is_err());
        assert!(matmul(&spec(&[4, 5], &[5, 7], Some(34)), &default).is_err());
        assert!(matmul(&spec(&[2, 4, 5], &[2, 5, 7], Some(70)), &default).is_err());
        let mut biased = spec(&[4, 5], &[5, 7], None);
        biased.epilogue.bias = Some(Bias::Constant(vec![0.0; 6]));
        assert!(matmul(&biased, &default).is_err());
        let ok = spec(&[4, 5], &[5, 7], Some(35));
        assert!(matmul(&ok, &default).is_ok());
        for (name, value) in [
            ("mr", 17),
            ("nr", 6),
            ("unroll", 0),
            ("mc", -1),
            ("parallel", 2),
        ] {
            let e = matmul(&ok, &Schedule::default().with(name, value)).unwrap_err();
            assert!(e.contains(name), "{e}");
        }
    }
}

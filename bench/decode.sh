#!/usr/bin/env bash
# LLM decode at the speed of memory (issue 14), in one run: two DRAM read-bandwidth probes
# at 1 and 2 threads, a sum over 1 GiB (`runtime/examples/read_bandwidth.rs`) and the GEMM
# template's 1x4096x65536 GEMV (1 GiB of weights, `codegen/examples/gemv_bench.rs`), the
# faster of which is the 100%; then kiln's
# decode step of the SmolLM2-135M-shaped f32 checkpoint (`bench/make_checkpoint.py`, LLVM
# artefacts, the KV cache lent in place) at past 128 and 2048, and its prefill of 128 tokens,
# each at 1 and 2 threads. Writes bench/results-decode.md: medians, tokens/s, the weights'
# and caches' read rate and its share of the probe's, and the rate at which attention reads
# the cache (the cache's bytes over the median time of the attention kernels, `--profile`),
# and the fixed cost of a step: the decode step of the same model at tiny widths (`--tiny`:
# the same kernel steps on 7 MB of weights, which stay in the cache).
# With BASELINE=COMMIT, kiln at that commit (built in a worktree under target/) times its
# prefill in the same run, alternated with this one's.
#
#   [BASELINE=COMMIT] bash bench/decode.sh [CHECKPOINT_DIR]   (default /tmp/kiln-smollm2-135m-random)
set -euo pipefail
cd "$(dirname "$0")/.."
ckpt=${1:-/tmp/kiln-smollm2-135m-random}
[ -f "$ckpt/model.safetensors" ] || python3 bench/make_checkpoint.py "$ckpt"
cargo build --release -q
cargo build --release -q -p kiln-rt --example read_bandwidth
cargo build --release -q -p kiln-codegen --features llvm --example gemv_bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
./target/release/kiln compile "$ckpt" --backend llvm -o "$work/aot" >/dev/null
python3 bench/make_checkpoint.py "$work/tiny" --tiny
./target/release/kiln compile "$work/tiny" --backend llvm -o "$work/tiny-aot" >/dev/null
steps=$(./target/release/kiln explain "$work/tiny-aot/decode" | sed -nE '1s/^kernels \([a-z]+\): ([0-9]+) kernels.*/\1/p')
if [ -n "${BASELINE:-}" ]; then
    base=target/bench-baseline
    [ -d "$base" ] || git worktree add --detach "$base" "$BASELINE" >/dev/null
    git -C "$base" checkout -q --detach "$BASELINE"
    (cd "$base" && CARGO_TARGET_DIR="$PWD/../bench-baseline-target" cargo build --release -q -p kiln)
    old=target/bench-baseline-target/release/kiln
    "$old" compile "$ckpt" --backend llvm -o "$work/baseline" >/dev/null
fi

declare -A sum gemv probe
while read -r _ threads rate _; do
    sum[${threads#threads=}]=${rate#gb_per_s=}
done < <(./target/release/examples/read_bandwidth)
line=$(./target/release/examples/gemv_bench llvm shapes=576x576 rows=1 | grep '^probe')
gemv[1]=$(sed -E 's/.*1 thread ([0-9.]+) GB.*/\1/' <<<"$line")
gemv[2]=$(sed -E 's/.*2 threads ([0-9.]+) GB.*/\1/' <<<"$line")
for t in 1 2; do
    probe[$t]=$(python3 -c "print(max(${sum[$t]}, ${gemv[$t]}))")
done

field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }
bench() { ./target/release/kiln bench "$@" --runs 30 | grep '^BENCH'; }

out=bench/results-decode.md
{
    echo "# Decode at the speed of memory"
    echo
    echo "\`bash bench/decode.sh\` at $(git rev-parse --short HEAD), $(date -u +%Y-%m-%d)."
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores."
    echo "Checkpoint: the SmolLM2-135M-shaped f32 one of \`bench/make_checkpoint.py\`, compiled"
    echo "with LLVM; each run lends the same KV cache (capacity past + 1), written in place."
    echo "Read rate: the bytes one step reads, over its median: the weights (538 MB here; not the"
    echo "embedding table, of which a step reads one row) and the cache."
    echo
    echo "Probes: sum over 1 GiB ${sum[1]} / ${sum[2]} GB/s, GEMV over 1 GiB ${gemv[1]} / ${gemv[2]} GB/s"
    echo "at 1 / 2 threads; the faster, ${probe[1]} / ${probe[2]} GB/s, is the 100% below."
    echo
    echo "| step | threads | median ms | tokens/s | weights GB/s | % of probe | attention ms | cache GB/s | % of probe |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for past in 128 2048; do
        for threads in 1 2; do
            line=$(bench "$work/aot/decode" --seq 1 --past "$past" --threads "$threads" --profile)
            ms=$(field "$line" median_ms)
            weights=$(field "$line" weight_bytes)
            gbs=$(python3 -c "print(f'{$weights / ($ms / 1e3) / 1e9:.1f}')")
            share=$(python3 -c "print(f'{100 * $gbs / ${probe[$threads]}:.0f}')")
            att=$(field "$line" attention_ms)
            cache=$(python3 -c "print(f'{$(field "$line" state_bytes) / ($att / 1e3) / 1e9:.1f}')")
            cshare=$(python3 -c "print(f'{100 * $cache / ${probe[$threads]}:.0f}')")
            echo "| decode, past $past | $threads | $ms | $(field "$line" tokens_per_s) | $gbs | $share% | $att | $cache | $cshare% |"
        done
    done
    for threads in 1 2; do
        line=$(bench "$work/tiny-aot/decode" --seq 1 --past 128 --threads "$threads")
        ms=$(field "$line" median_ms)
        per=$(python3 -c "print(f'{1e3 * $ms / $steps:.2f}')")
        echo "| fixed cost: decode of the tiny model, past 128 ($steps kernel steps, $per µs each) | $threads | $ms | $(field "$line" tokens_per_s) | | | | | |"
    done
    for threads in 1 2; do
        line=$(bench "$work/aot/prefill" --seq 128 --threads "$threads")
        echo "| prefill, 128 tokens | $threads | $(field "$line" median_ms) | $(field "$line" tokens_per_s) | | | | | |"
        if [ -n "${BASELINE:-}" ]; then
            line=$("$old" bench "$work/baseline/prefill" --seq 128 --threads "$threads" --runs 30 | grep '^BENCH')
            echo "| prefill, 128 tokens, kiln at $BASELINE | $threads | $(field "$line" median_ms) | $(field "$line" tokens_per_s) | | | | | |"
        fi
    done
} >"$out"
cat "$out"

#!/usr/bin/env bash
# What the plan-as-artefact buys on a checkpoint of SmolLM2-135M's shape (bench/make_checkpoint.py):
# `kiln compile` (LLVM) time and peak memory, loading its artefacts, `kiln generate` from them,
# and `kiln generate` from the checkpoint twice (the first compiles and fills the plan cache,
# the second loads from it). Memory is peak RSS from /usr/bin/time. Run by hand (not by CI);
# writes bench/results-plan.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p kiln -p kiln-capi
cargo build --profile dist --quiet -p kiln-capi
smol="${TMPDIR:-/tmp}/kiln-smollm2-135m-random"
[ -f "$smol/model.safetensors" ] || python3 bench/make_checkpoint.py "$smol"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export XDG_CACHE_HOME="$work/cache"
kiln=./target/release/kiln
timed() { /usr/bin/time -f "%e %M" "$@" 2> "$work/time" > "$work/out" || { cat "$work/time"; exit 1; }; tail -1 "$work/time"; }
mib() { python3 -c "print(f'{$1 / 1048576:.0f} MiB')"; }
ratio() { python3 -c "print(f'{$1 * 1024 / $2:.2f}x')"; }
st=$(stat -c %s "$smol/model.safetensors")
# Every figure is with the checkpoint in the page cache (a cold read from disk is the disk's time).
cat "$smol/model.safetensors" > /dev/null
read -r compile_s compile_kib < <(timed $kiln compile "$smol" -o "$work/aot" --backend llvm)
compile_out=$(sed "s|$work/||" "$work/out")
wb=$(stat -c %s "$work/aot/weights.bin")
ids=1,2,3,4,5,6,7,8
gen=(generate --prompt-ids "$ids" --max-new-tokens 16 --ignore-eos --backend llvm)
read -r aot_s aot_kib < <(timed $kiln "${gen[@]}" "$work/aot")
aot_load=$(sed -n 's/.* in \([0-9.]*\) s).*/\1/p' "$work/time" | head -1)
read -r first_s first_kib < <(timed $kiln "${gen[@]}" "$smol")
read -r second_s second_kib < <(timed $kiln "${gen[@]}" "$smol")
read -r nocache_s nocache_kib < <(timed $kiln "${gen[@]}" --no-cache "$smol")
first_token() { /usr/bin/time -f "%e" $kiln generate "$1" --prompt-ids $ids --max-new-tokens 1 --backend llvm 2>&1 >/dev/null | tail -1; }
ttft_cached=$(first_token "$smol")
ttft_aot=$(first_token "$work/aot")
lib=$(stat -c %s target/release/libkiln_runtime.so)
dist=$(stat -c %s target/dist/libkiln_runtime.so)
{
  echo "# The plan is the artefact: compile, load, generate"
  echo
  echo "\`bench/plan.sh\`, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores."
  echo "Checkpoint: \`bench/make_checkpoint.py\` (SmolLM2-135M's shape, f32), model.safetensors $(mib "$st"); LLVM backend, 1 thread, 8 prompt ids, 16 new tokens; the checkpoint in the page cache."
  echo
  echo "| what | wall | peak RSS | RSS / file |"
  echo "|---|---|---|---|"
  echo "| \`kiln compile --backend llvm\` (both entry points) | ${compile_s} s | $(mib $((compile_kib * 1024))) | $(ratio "$compile_kib" "$st") of model.safetensors |"
  echo "| \`kiln generate ARTEFACTS\` (load: ${aot_load} s) | ${aot_s} s | $(mib $((aot_kib * 1024))) | $(ratio "$aot_kib" "$wb") of weights.bin ($(mib "$wb")) |"
  echo "| \`kiln generate CHECKPOINT\`, first run (compiles, fills the plan cache) | ${first_s} s | $(mib $((first_kib * 1024))) | $(ratio "$first_kib" "$st") of model.safetensors |"
  echo "| \`kiln generate CHECKPOINT\`, second run (from the plan cache) | ${second_s} s | $(mib $((second_kib * 1024))) | $(ratio "$second_kib" "$st") of model.safetensors |"
  echo "| \`kiln generate CHECKPOINT --no-cache\` (compiles through a scratch artefact, mapped, then removed) | ${nocache_s} s | $(mib $((nocache_kib * 1024))) | $(ratio "$nocache_kib" "$st") of model.safetensors |"
  echo
  echo "\`kiln compile\` reports its phases (the two entry points share one \`kernels.so\`):"
  echo
  echo '```'
  echo "$compile_out"
  echo '```'
  echo
  echo "Process start to the first token (\`--max-new-tokens 1\`, wall): ${ttft_cached} s from the checkpoint with the plan cache filled, ${ttft_aot} s from the artefacts."
  echo
  echo "\`libkiln_runtime.so\`: $(python3 -c "print(f'{$lib / 1048576:.2f} MiB')") with \`--release\`, $(python3 -c "print(f'{$dist / 1048576:.2f} MiB')") with \`--profile dist\` (as shipped: LTO, size-optimised, stripped)."
} > bench/results-plan.md
cat bench/results-plan.md

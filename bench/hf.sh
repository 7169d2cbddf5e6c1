#!/usr/bin/env bash
# Prefill latency (128 prompt tokens) and decode tokens/s of `kiln generate` for the llama
# fixture and a random checkpoint of SmolLM2-135M's shape: JIT-compiled (Cranelift, LLVM) and from
# the artefacts of `kiln compile` (ahead of time) at 1 and 2 threads, and on the reference
# interpreter for comparison. Run by hand (not by CI); writes bench/results-hf.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
smol="${TMPDIR:-/tmp}/kiln-smollm2-135m-random"
[ -f "$smol/model.safetensors" ] || python3 bench/make_checkpoint.py "$smol"
ids() { python3 -c "print(','.join(str(7 + 13 * i % 900) for i in range($1)))"; }
{
  echo "# Hugging Face checkpoints: prefill and decode"
  echo
  echo "\`bench/hf.sh\`, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores."
  echo "One \`kiln generate\` run per row (greedy, 16 new tokens); decode is the mean over the 15 decode steps."
  echo
  echo "*compile*: JIT compilation of both entry points inside \`kiln generate\`, or, ahead of time, \`kiln compile\` (wall time) and then the artefacts' load time."
  echo
  echo "| model | prompt tokens | backend | threads | compile | prefill | decode |"
  echo "|---|---|---|---|---|---|---|"
  # The llama fixture has 128 positions: a 112-token prompt leaves room for 16 new tokens.
  for spec in "tests/models/llama 112" "$smol 128"; do
    set -- $spec
    model=$1 n=$2
    aot="${TMPDIR:-/tmp}/kiln-hf-bench-aot"
    rm -rf "$aot"
    start=$(date +%s.%N)
    ./target/release/kiln compile "$model" -o "$aot" > /dev/null
    aot_s=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
    for run in "cranelift 1 $model" "cranelift 2 $model" "llvm 1 $model" "llvm 2 $model" \
      "aot 1 $aot" "aot 2 $aot" "interp 1 $model"; do
      set -- $run
      backend=$1
      [ "$backend" = aot ] && backend=cranelift
      # The timings are on stderr; --ignore-eos keeps every run at 16 new tokens.
      out=$(./target/release/kiln generate "$3" --prompt-ids "$(ids "$n")" \
        --max-new-tokens 16 --ignore-eos --backend "$backend" --threads "$2" 2>&1)
      pre=$(echo "$out" | sed -n 's/^prefill: \([0-9.]*\) ms.*/\1 ms/p')
      comp=$(echo "$out" | sed -n 's/.* in \([0-9.]*\) s).*/\1 s/p')
      [ "$1" = aot ] && comp="$aot_s s + load $comp"
      dec=$(echo "$out" | sed -n 's/^decode: \([0-9.]*\) tokens\/s.*/\1 tokens\/s/p')
      label=$1
      [ "$1" = aot ] && label="ahead of time"
      echo "| $(basename "$model") | $n | $label | $2 | ${comp:--} | $pre | $dec |"
    done
    rm -rf "$aot"
  done
} > bench/results-hf.md
cat bench/results-hf.md

#!/usr/bin/env bash
# Prefill latency (128 prompt tokens) and decode tokens/s of `kiln generate` on the reference
# interpreter, for the llama fixture and a random checkpoint of SmolLM2-135M's shape. Run by
# hand (not by CI); writes bench/results-hf-interpreter.md. Compiled-path figures come with the
# codegen backends.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
smol="${TMPDIR:-/tmp}/kiln-smollm2-135m-random"
[ -f "$smol/model.safetensors" ] || python3 bench/make_checkpoint.py "$smol"
ids() { python3 -c "print(','.join(str(7 + 13 * i % 900) for i in range($1)))"; }
{
  echo "# Hugging Face checkpoints on the reference interpreter"
  echo
  echo "\`bench/hf_interpreter.sh\`, $(date -u +%Y-%m-%d), $(nproc) cores, one thread (the interpreter is single-threaded)."
  echo
  echo "| model | prompt tokens | prefill | decode (16 tokens) |"
  echo "|---|---|---|---|"
  # The llama fixture has 128 positions: a 112-token prompt leaves room for 16 new tokens.
  for spec in "tests/models/llama 112" "$smol 128"; do
    set -- $spec
    model=$1 n=$2
    out=$(./target/release/kiln generate "$model" --prompt-ids "$(ids "$n")" --max-new-tokens 16)
    pre=$(echo "$out" | sed -n 's/^prefill: \([0-9.]*\) ms.*/\1 ms/p')
    dec=$(echo "$out" | sed -n 's/^decode: \([0-9.]*\) tokens\/s.*/\1 tokens\/s/p')
    echo "| $(basename "$model") | $n | $pre | $dec |"
  done
} > bench/results-hf-interpreter.md
cat bench/results-hf-interpreter.md

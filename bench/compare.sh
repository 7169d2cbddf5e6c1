#!/usr/bin/env bash
# kiln against onnxruntime and numpy: fp32 GEMM, Softmax/LayerNorm, attention (fused and
# unfused), MiniLM int8 and the bert/gpt2/llama fixtures, at 1 and 2 threads. Run by hand (not by
# CI); writes bench/results.md (kiln's Cranelift backend) or, with `--backend llvm`,
# bench/results-llvm.md. The work is in bench/compare.py (`--help` lists its options).
#
#   bench/compare.sh                       # everything, 20 timed runs per figure (~10 min)
#   bench/compare.sh --quick               # 5 timed runs, attention up to seq 512 (~1 min)
#   bench/compare.sh --only gemm,attention # sections: gemm, rows, attention, minilm, exports, e2e
#   bench/compare.sh --backend llvm        # kiln's LLVM backend (AVX-512 vectors here)
#   bench/compare.sh --no-build ...        # use target/release/kiln as it is
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
args=()
for a in "$@"; do
  if [ "$a" = --no-build ]; then build=0; else args+=("$a"); fi
done

if ! python3 -c "import numpy, onnxruntime, onnx, threadpoolctl" 2>/dev/null; then
  python3 -m pip install -q numpy onnxruntime onnx==1.22.0 threadpoolctl
fi
if [ "$build" = 1 ]; then
  cargo build --release --quiet
fi

export KILN_BENCH_COMMAND="bench/compare.sh${*:+ $*}"
python3 bench/compare.py ${args[@]+"${args[@]}"}

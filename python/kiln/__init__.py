"""kiln: an ahead-of-time compiler and kernel autotuner for transformer graphs, from Python.

Compile an ONNX model or a Hugging Face checkpoint and run it on numpy arrays::

    import kiln, numpy as np
    model = kiln.compile("model.onnx", backend="llvm", threads=2)
    outputs = model.run({"input_ids": ids, "attention_mask": mask})

or swap it in for onnxruntime by changing one import::

    from kiln import InferenceSession   # was: from onnxruntime import InferenceSession
    session = InferenceSession("model.onnx")
    (hidden,) = session.run(None, {"input_ids": ids, "attention_mask": mask})

The rewrite passes are here too: :func:`optimize`, :func:`explain` and :func:`rules_check`
take rule files or rule text, for prototyping fusion rules in a notebook.
"""

from kiln._kiln import (
    BadInputError,
    BadModelError,
    KilnError,
    Model,
    Optimized,
    TensorInfo,
    UnsupportedOpError,
    __version__,
    compile,
    explain,
    load,
    optimize,
    rules_check,
)
from kiln._session import InferenceSession, NodeArg, SessionOptions

__all__ = [
    "BadInputError",
    "BadModelError",
    "InferenceSession",
    "KilnError",
    "Model",
    "NodeArg",
    "Optimized",
    "SessionOptions",
    "TensorInfo",
    "UnsupportedOpError",
    "__version__",
    "compile",
    "explain",
    "load",
    "optimize",
    "rules_check",
]

"""``kiln.InferenceSession``: onnxruntime's ``InferenceSession`` interface over a kiln model, so
that a script moves from onnxruntime to kiln by changing its import.

What real code uses is kept: ``get_inputs()`` / ``get_outputs()`` return objects with
``name``, ``type`` (``"tensor(float)"``) and ``shape`` (ints and symbol names), ``run(None,
feeds)`` returns every output as a list of numpy arrays in declaration order and
``run([names], feeds)`` those named; ``sess_options.intra_op_num_threads`` sets the threads.
The model may be a path or the bytes of an ONNX file. Execution providers are accepted and
ignored: kiln runs on the CPU with its own kernels.
"""

import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from kiln._kiln import BadInputError, Model, compile as _compile

# onnxruntime's names of the element types kiln's models declare.
_ONNX_TYPES = {
    "float32": "tensor(float)",
    "float16": "tensor(float16)",
    "bfloat16": "tensor(bfloat16)",
    "int8": "tensor(int8)",
    "uint8": "tensor(uint8)",
    "int32": "tensor(int32)",
    "int64": "tensor(int64)",
    "bool": "tensor(bool)",
}


class NodeArg:
    """An input or output as onnxruntime describes it: ``name``, ``type`` and ``shape``."""

    def __init__(self, info: Any):
        self.name = info.name
        self.type = _ONNX_TYPES[info.dtype]
        self.shape = list(info.shape)

    def __repr__(self) -> str:
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape!r})"


class SessionOptions:
    """The options kiln reads from onnxruntime's ``SessionOptions`` (an onnxruntime
    ``SessionOptions`` works as well): ``intra_op_num_threads`` (0: every core)."""

    def __init__(self) -> None:
        self.intra_op_num_threads = 0


class InferenceSession:
    """A model compiled by kiln behind onnxruntime's ``InferenceSession`` interface.

    ``path_or_bytes`` is an ONNX file (or its bytes) or a Hugging Face checkpoint
    directory; ``sess_options`` gives the threads; ``providers`` and ``provider_options`` are
    accepted for compatibility and ignored. ``backend`` chooses kiln's code generator
    (``"llvm"`` or ``"cranelift"``).
    """

    def __init__(self, path_or_bytes, sess_options=None, providers=None,
                 provider_options=None, backend="llvm", **kwargs):
        threads = getattr(sess_options, "intra_op_num_threads", 0) or 0
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            with tempfile.TemporaryDirectory(prefix="kiln-session-") as tmp:
                path = os.path.join(tmp, "model.onnx")
                with open(path, "wb") as f:
                    f.write(path_or_bytes)
                self._model = _compile(path, backend=backend, threads=threads)
        else:
            self._model = _compile(os.fspath(path_or_bytes), backend=backend, threads=threads)
        self._inputs = [NodeArg(i) for i in self._model.inputs]
        self._outputs = [NodeArg(o) for o in self._model.outputs]
        self._output_names = [o.name for o in self._outputs]

    @property
    def model(self) -> "Model":
        """The :class:`kiln.Model` this session runs."""
        return self._model

    def get_inputs(self) -> List[NodeArg]:
        """The model's inputs, in declaration order."""
        return list(self._inputs)

    def get_outputs(self) -> List[NodeArg]:
        """The model's outputs, in declaration order."""
        return list(self._outputs)

    def get_providers(self) -> List[str]:
        """The providers the session runs on (kiln's kernels run on the CPU)."""
        return ["CPUExecutionProvider"]

    def run(self, output_names: Optional[Sequence[str]], input_feed: Dict[str, np.ndarray],
            run_options: Any = None) -> List[np.ndarray]:
        """Runs the model on ``input_feed`` (``{name: numpy array}``) and returns the outputs
        named in ``output_names`` (None or empty: all of them) as a list of numpy arrays."""
        if not isinstance(input_feed, dict):
            raise BadInputError(f"input_feed: a dict of input name to array, not {type(input_feed).__name__}")
        names = list(output_names) if output_names else self._output_names
        results = self._model.run(input_feed, names)
        return [results[n] for n in names]

"""Type stubs of kiln's native module (``kiln._kiln``); everything here is re-exported by
``kiln``."""

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__version__: str

PathLike = Union[str, "os.PathLike[str]"]
RuleSource = Union[str, "os.PathLike[str]"]

class KilnError(Exception):
    """An error of kiln: its message is the one line the command line would print."""

class BadModelError(KilnError):
    """The model (ONNX file, checkpoint, artefact or rule file) cannot be read or is invalid."""

class UnsupportedOpError(KilnError):
    """The model uses an op, dtype or feature that kiln does not implement."""

class BadInputError(KilnError):
    """The arrays or names given to a call do not match the model."""

class TensorInfo:
    """The name, dtype and (possibly symbolic) shape of a model's input or output."""

    @property
    def name(self) -> str:
        """The name runs are fed or return it by."""
    @property
    def dtype(self) -> str:
        """Its numpy dtype name (``float32``, ``int64``, ...)."""
    @property
    def shape(self) -> Tuple[Union[int, str], ...]:
        """Each dim: an int when fixed, else its symbol (``batch``, ``seq``, ``past+1``)."""

class Model:
    """A compiled model: its kernels, plan and weights, ready to run on numpy arrays. Runs may
    come from several Python threads at once; kiln releases the GIL while its kernels run."""

    @property
    def inputs(self) -> List[TensorInfo]:
        """The model's inputs, in declaration order."""
    @property
    def outputs(self) -> List[TensorInfo]:
        """The model's outputs, in declaration order."""
    @property
    def backend(self) -> str:
        """The code generator that compiled the kernels (``llvm``, ``cranelift``)."""
    @property
    def stats(self) -> Dict[str, Union[int, float]]:
        """Kernels, distinct kernels, views, interpreted steps, folded ops, and the seconds
        it took to compile (or load)."""
    def run(
        self, feeds: Dict[str, np.ndarray], outputs: Optional[Sequence[str]] = None
    ) -> Dict[str, np.ndarray]:
        """Runs the model on ``feeds`` (input name to array of the declared dtype, any
        strides) and returns ``{output name: array}`` in declaration order, or only those
        named in ``outputs``. A state input (a KV cache) is read from ``feeds`` and its new
        value returned under its name."""
    def run_in_place(
        self,
        feeds: Dict[str, np.ndarray],
        states: Dict[str, np.ndarray],
        outputs: Optional[Sequence[str]] = None,
    ) -> Dict[str, np.ndarray]:
        """Runs the model with each state input (a KV cache) in a writable, C-contiguous
        array of ``states`` that the run overwrites with the state's new value, in place;
        returns the other outputs."""
    def compile_to(self, directory: PathLike) -> None:
        """Writes the model as an artefact directory that :func:`load` and the C API load
        without compiling."""

class Optimized:
    """What the passes made of a model."""

    @property
    def graph(self) -> str:
        """The optimised graph in the IR's text form."""
    @property
    def rules_fired(self) -> Dict[str, int]:
        """Each rule that fired, with how many times."""
    @property
    def ops_before(self) -> Dict[str, int]:
        """Each op kind with its count before the passes."""
    @property
    def ops_after(self) -> Dict[str, int]:
        """Each op kind with its count after the passes."""
    @property
    def cost_before(self) -> float:
        """The cost model's estimate of the graph before the passes, in seconds."""
    @property
    def cost_after(self) -> float:
        """The cost model's estimate of the optimised graph, in seconds."""

def compile(
    model: PathLike,
    backend: str = "llvm",
    threads: int = 0,
    db: Optional[PathLike] = None,
    quantize: Optional[str] = None,
    cache: bool = True,
    fuse: bool = True,
    entry: Optional[str] = None,
) -> Model:
    """Compiles an .onnx file or a Hugging Face checkpoint directory (its ``entry`` point:
    ``"prefill"``, the default, or ``"decode"``); an artefact directory is loaded. ``threads``
    0 uses every core. ``db`` and ``quantize`` raise NotImplementedError: kiln has no tuning
    database or quantized layouts yet."""

def load(artifact: PathLike, threads: int = 0) -> Model:
    """Loads an artefact directory written by ``kiln compile`` or :meth:`Model.compile_to`."""

def optimize(
    model: PathLike, rules: Sequence[RuleSource] = ..., builtin: bool = True
) -> Optimized:
    """Optimises the model with the built-in rules (unless ``builtin`` is false) and
    ``rules``: paths of rule files, or rule text."""

def explain(
    model: PathLike,
    rules: Sequence[RuleSource] = ...,
    builtin: bool = True,
    backend: str = "llvm",
) -> Dict[str, Any]:
    """What ``kiln explain`` prints, as a dict: ``rules_fired``, ``ops_before``,
    ``ops_after``, ``egraph``, ``cost_seconds`` and ``steps`` (each kernel with its
    ``symbol``, ``template``, ``schedule`` and ``schedule_source``, each interpreter fallback
    with its reason). For an artefact directory, ``steps`` only."""

def rules_check(
    rules: Optional[Sequence[RuleSource]] = None, trials: int = 5, seed: int = 0x5EED
) -> Dict[str, Any]:
    """Checks every exact rule (None: the built-in ones) on random instances evaluated by the
    reference interpreter: ``{"passed": [names], "unchecked": {name: reason}, "wrong":
    {name: counterexample}}``."""

"""The backend interface: what a wasi:nn backend provides to `nn.py`.

A backend turns model bytes into a `Graph`; a graph opens `Context`s; a context runs
inputs (already matched to the model's inputs and validated by `nn.py`) and returns
every output. Backends see numpy-backed `HostTensor`s, never wasmtime types.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Protocol, Sequence

from .._enums import ExecutionTarget, GraphEncoding, TensorType
from ..limits import product
from ..tensors import DTYPES, HostTensor, TYPE_NAMES, shown_dims


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One model input or output. `ty` is None where wasi:nn has no such type;
    `shape` is None for an unknown rank, and holds None for each dynamic axis."""
    name: str
    ty: TensorType | None
    type_name: str
    shape: tuple[int | None, ...] | None

    def describe(self) -> str:
        name = TYPE_NAMES[self.ty] if self.ty is not None else self.type_name
        if self.shape is None:
            return f"{name} [any rank]"
        return f"{name} [{shown_dims(self.shape)}]"  # a guest's model declares any rank

    def accepts_shape(self, dims: Sequence[int]) -> bool:
        if self.shape is None:
            return True
        return len(dims) == len(self.shape) and all(s is None or s == d for s, d in zip(self.shape, dims))

    def static_nbytes(self) -> int | None:
        """The bytes of a tensor of this spec, where the model fixes them (a guest's model
        may declare any shape: past 2^64 elements, more than any limit)."""
        if self.ty is None or self.shape is None or None in self.shape:
            return None
        return product(self.shape) * DTYPES[self.ty].itemsize


# Called by a backend with (name, bytes) of every output after a run and before it wraps
# any of them; raises (`too-large`) for outputs over a limit.
AcceptOutputs = Callable[[list[tuple[str, int]]], None]


def accept_all(sizes: list[tuple[str, int]]) -> None:
    pass


class Context(Protocol):
    def compute(self, inputs: list[HostTensor], deadline: float | None = None,
                accept_outputs: AcceptOutputs = accept_all,
                into: Sequence[memoryview] | None = None) -> list[tuple[str, HostTensor]]:
        """Runs one inference; `inputs` are in the order of `Graph.inputs`. A backend
        that can be stopped stops at `deadline` (time.monotonic()) with wasi:nn `timeout`.
        Before wrapping outputs it passes their sizes to `accept_outputs`. `into`, when
        given, holds one writable buffer per output, in the order of `Graph.outputs`, of
        the size its spec fixes (a worker's shared memory): a backend that can writes the
        outputs there and returns tensors over them; one that cannot ignores it."""
        ...


class Preparable(Protocol):
    """A Context that binds one layout of inputs once (onnxruntime's): for a caller that
    keeps the inputs' bytes in place and runs them again, as a backend worker does with
    the tensors in its shared memory."""

    def prepare(self, inputs: list[HostTensor]) -> Callable[[float | None], list] | None:
        """`run(deadline)`, which runs `inputs` as they are then and returns the outputs'
        arrays in the order of `Graph.outputs`; None where this graph cannot."""
        ...


class Graph(Protocol):
    backend: str
    target: ExecutionTarget
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # the model's bytes, counted against max-host-bytes (nn.py sets it when loading)
    model_bytes: int

    def init_execution_context(self, deadline: float | None = None) -> Context:
        ...


class Backend(Protocol):
    """Made with `max_memory`: max-backend-memory, what one graph's runs may allocate
    (see each backend for how near it can hold that)."""
    name: str
    encoding: GraphEncoding
    # Whether it has `load_file`, its own reader of an operator's model file (where the
    # file's neighbours, e.g. ONNX external data, resolve as the framework resolves them).
    loads_files: bool

    def load(self, builders: list[bytes], target: ExecutionTarget) -> Graph:
        """Raises `NnError` for bad bytes or an unavailable target. `builders` may be
        views of guest memory (nn.WasiNn.load_views), valid only during the call: a
        graph must keep copies, never them nor numpy arrays over them."""
        ...

    def recognizes(self, builders: list[bytes]) -> bool:
        """Whether the bytes look like this backend's encoding (for `autodetect`)."""
        ...

    def load_file(self, path, target: ExecutionTarget) -> Graph:
        """Only where `loads_files`: the operator's model file at `path`, read by the
        framework itself."""
        ...

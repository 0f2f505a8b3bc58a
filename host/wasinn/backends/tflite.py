"""LiteRT (TensorFlow Lite) backend: encoding `tensorflowlite`, target cpu.

LiteRT's interpreter keeps the tensors of one run inside itself, so each execution
context gets its own interpreter over the graph's model bytes.

LiteRT offers no bound on its allocations. The nearest: an interpreter whose tensors
(weights included: an upper bound of its arena) add up to more than max-backend-memory
is refused before it allocates them; after a resize for dynamic axes the sizes are
known only once allocated, so an interpreter over the bound is then dropped and the
run refused. Each context's interpreter is its own (`working_bytes`: its tensors, and
its records of them and of its nodes, ~2 KB a node), so the host counts it in the
instance's max-host-bytes (nn.count_working): 30 contexts of one graph held 30 arenas of
48 MiB under --max-host-bytes 128MiB before, and 12 contexts of a 100,000-node model
2.5 GB under 64 MiB. Making an interpreter holds the GIL for as long as its model is
large (0.4 s for those 100,000 nodes): a guest's contexts of an operator's model in
process cost that each (SECURITY.md).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from .._enums import ExecutionTarget, GraphEncoding, TensorType
from ..errors import NnError, invalid_argument, invalid_encoding, runtime_error, unsupported
from ..limits import backend_memory_error
from ..tensors import DTYPES, HostTensor, tensor_type_of
from .base import AcceptOutputs, TensorSpec, accept_all
from .formats import looks_like_tflite

# What LiteRT says when the model is well formed but uses an operator it lacks.
_UNSUPPORTED_MARKS = ("Registration failed", "Didn't find op", "unresolved custom op")


def _specs(details: list[dict]) -> list[TensorSpec]:
    specs = []
    for d in details:
        dtype = np.dtype(d["dtype"])
        specs.append(TensorSpec(d["name"], tensor_type_of(dtype), dtype.name,
                                tuple(None if s < 0 else int(s) for s in d["shape_signature"])))
    return specs


class TfLiteGraph:
    def __init__(self, model: bytes, threads: int, target: ExecutionTarget, max_memory: int):
        self.model = model
        self.threads = threads
        self.max_memory = max_memory
        self.backend = "tflite"
        self.target = target
        probe = self.interpreter()
        try:
            details = probe.get_input_details(), probe.get_output_details()
        except ValueError:
            # LiteRT describes a bfloat16 tensor with ml_dtypes' type, and fails unless
            # ml_dtypes is loaded (tensors.DTYPES loads it on first need: 0.3-0.9 s)
            DTYPES[TensorType.BF16]
            details = probe.get_input_details(), probe.get_output_details()
        self.inputs, self.outputs = _specs(details[0]), _specs(details[1])

    def interpreter(self) -> Interpreter:
        try:
            interp = Interpreter(model_content=self.model, num_threads=self.threads or None)
            self.check_memory(interp)
            interp.allocate_tensors()
        except ValueError as e:
            msg = str(e).strip()
            if any(mark in msg for mark in _UNSUPPORTED_MARKS):
                raise unsupported(f"LiteRT cannot run the model: {msg}") from e
            raise invalid_encoding(f"LiteRT could not read the tensorflowlite model: {msg}") from e
        return interp

    def check_memory(self, interp: Interpreter) -> int:
        """The bytes of `interp`'s tensors and of its own records of them and of its
        nodes, refused past max-backend-memory."""
        # in Python ints: LiteRT's shapes are int32 arrays, whose product wrapped (a
        # [32768, 32768] float32 tensor counted as 0 bytes and went on to fail bare)
        held = sum(math.prod(max(int(n), 0) for n in d["shape"]) * np.dtype(d["dtype"]).itemsize
                   for d in interp.get_tensor_details()) + _records(interp)
        if held > self.max_memory:
            raise backend_memory_error("LiteRT", self.max_memory, f"the interpreter's tensors and nodes come to "
                                       f"{held} bytes")
        return held

    def init_execution_context(self, deadline: float | None = None) -> "TfLiteContext":
        return TfLiteContext(self)


class TfLiteContext:
    def __init__(self, graph: TfLiteGraph):
        self.graph = graph
        self.interp = graph.interpreter()
        self.working_bytes = graph.check_memory(self.interp)  # what nn counts for it in max-host-bytes
        self.input_index = [d["index"] for d in self.interp.get_input_details()]
        self.output_index = [d["index"] for d in self.interp.get_output_details()]

    def compute(self, inputs: list[HostTensor], deadline: float | None = None,
                accept_outputs: AcceptOutputs = accept_all,
                into: Sequence[memoryview] | None = None) -> list[tuple[str, HostTensor]]:
        # LiteRT's Python interpreter cannot be stopped mid-run: past `deadline`, the
        # host's epoch deadline ends the guest's call instead.
        interp = self.interp
        try:
            # Dynamic axes (shape signature -1) take each call's sizes: resize, then re-plan.
            shapes = [tuple(int(s) for s in d["shape"]) for d in interp.get_input_details()]
            resized = False
            for index, shape, t in zip(self.input_index, shapes, inputs):
                if shape != t.dims:
                    interp.resize_tensor_input(index, list(t.dims), strict=True)
                    resized = True
            if resized:
                interp.allocate_tensors()
                try:
                    self.working_bytes = self.graph.check_memory(interp)
                except NnError:
                    self.interp = self.graph.interpreter()  # let the oversized one go
                    self.working_bytes = self.graph.check_memory(self.interp)
                    raise
            for index, t in zip(self.input_index, inputs):
                interp.set_tensor(index, t.array())
            interp.invoke()
        except ValueError as e:
            raise runtime_error(f"LiteRT failed to run the model: {str(e).strip()}") from e
        accept_outputs([(spec.name, math.prod(d["shape"]) * np.dtype(d["dtype"]).itemsize)
                        for spec, d in zip(self.graph.outputs, interp.get_output_details())])
        return [(spec.name, _output(spec, interp.get_tensor(index)))
                for spec, index in zip(self.graph.outputs, self.output_index)]


# What an interpreter holds per node and per tensor besides the tensors' bytes (measured:
# 1.4-2.7 KB a node of a chain of ADDs, one tensor each: a 100,000-node model's
# interpreter took 134-249 MiB, of which its tensors' bytes were 400 KB).
_NODE_BYTES = 2048
_TENSOR_BYTES = 1024


def _records(interp: Interpreter) -> int:
    wrapper = interp._interpreter  # LiteRT's own counts; its Python API lists every tensor otherwise
    tensors = sum(wrapper.NumTensors(i) for i in range(wrapper.NumSubgraphs()))
    return _NODE_BYTES * wrapper.NumNodes() + _TENSOR_BYTES * tensors


def _output(spec: TensorSpec, array: np.ndarray) -> HostTensor:
    if tensor_type_of(array.dtype) is None:
        raise unsupported(f"output {spec.name!r} is {array.dtype}, which no wasi:nn tensor type can carry "
                          f"(FP16, FP32, FP64, BF16, U8, I32, I64)")
    return HostTensor.from_array(array)  # get_tensor returns a copy: the interpreter keeps no hold on it


class TfLiteBackend:
    """Serves `tensorflowlite` through LiteRT's interpreter (XNNPACK on CPU)."""
    name = "tflite"
    encoding = GraphEncoding.TENSORFLOWLITE
    loads_files = False

    def __init__(self, threads: int = 0, max_memory: int = 2 << 30):
        self.threads = threads
        self.max_memory = max_memory

    def recognizes(self, builders: list[bytes]) -> bool:
        return looks_like_tflite(builders)

    def load(self, builders: list[bytes], target: ExecutionTarget) -> TfLiteGraph:
        if target != ExecutionTarget.CPU:
            raise unsupported(f"the tflite backend serves execution target cpu only, not {target.value} "
                              "(LiteRT's GPU delegates are not wired in); load the graph for target cpu")
        if len(builders) != 1:
            raise invalid_argument(f"a tensorflowlite graph takes exactly one builder (the .tflite bytes); "
                                   f"got {len(builders)}")
        if not builders[0]:
            raise invalid_encoding("the tensorflowlite model is empty (0 bytes)")
        return TfLiteGraph(bytes(builders[0]), self.threads, target, self.max_memory)


def make(encoding: GraphEncoding, threads: int, max_memory: int) -> TfLiteBackend:
    return TfLiteBackend(threads, max_memory)

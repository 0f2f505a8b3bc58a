"""OpenVINO backend: encoding `openvino` (an IR as two builders, the XML and the
weights, as wasmtime takes them) and `onnx` when the user picks it; targets cpu and
gpu (OpenVINO's GPU plugin: Intel GPUs through OpenCL).

Outputs keep the model's names, in model order (wasmtime's OpenVINO backend names
them "0", "1", ...; a portable guest reads outputs by position).

OpenVINO offers no bound on its allocations. The nearest: a model is refused before
it compiles when the tensors its operations produce, at the shapes the model fixes,
add up to more than max-backend-memory (an upper bound: the CPU plugin reuses
memory). Axes the model leaves dynamic cannot be bounded in-process.
"""
from __future__ import annotations

import contextlib
import ctypes.util
import functools
import io
import math
import pathlib
import re
import time
import typing

import numpy as np
import openvino as ov
from openvino import _pyopenvino

from .._enums import ErrorCode, ExecutionTarget, GraphEncoding, TensorType
from ..deadlines import stop_at
from ..errors import NnError, invalid_argument, invalid_encoding, runtime_error, unsupported
from ..limits import backend_memory_error
from ..tensors import HostTensor
from .base import AcceptOutputs, TensorSpec, accept_all
from .formats import RECOGNISERS, graph_values, onnx_file_values, reject_onnx_external_data
from .spill import spilled

_TYPES = {ov.Type.f16: TensorType.FP16, ov.Type.f32: TensorType.FP32, ov.Type.f64: TensorType.FP64,
          ov.Type.bf16: TensorType.BF16, ov.Type.u8: TensorType.U8, ov.Type.i32: TensorType.I32,
          ov.Type.i64: TensorType.I64}
_DEVICES = {ExecutionTarget.CPU: "CPU", ExecutionTarget.GPU: "GPU"}
_CANCEL_AGAIN = 0.001  # seconds between the watchdog's cancels of a run past its deadline
# The compile settings for each --inference-precision. f32 (ACCURACY) runs the model in
# its own precision. By default (auto) the CPU plugin runs float32 models in bfloat16
# wherever the CPU has it: ~1.8x faster on this machine, but EfficientNet-Lite0's logits
# move by 0.09 (a photo) to 0.25 (random input) from onnxruntime's, against 5e-6
# in ACCURACY.
_PRECISION_CONFIG = {"f32": {"EXECUTION_MODE_HINT": "ACCURACY"}, "auto": {},
                     "bf16": {"INFERENCE_PRECISION_HINT": "bf16"}, "f16": {"INFERENCE_PRECISION_HINT": "f16"}}
# What a compiled model reports as its INFERENCE_PRECISION_HINT for those asked by name.
_PRECISION_TYPES = {"bf16": ov.Type.bf16, "f16": ov.Type.f16}
# OpenVINO's CPU and GPU plugins compute int64 as int32 and float64 as float32; values
# outside those ranges would come back silently wrong, so they are refused instead.
_NARROWED = {TensorType.I64: (np.iinfo(np.int32), "int64", "int32"),
             TensorType.FP64: (np.finfo(np.float32), "float64", "float32")}


@functools.cache
def _core() -> ov.Core:
    return ov.Core()


# The binding's own infer(inputs, share_outputs, decode_strings): it sets the inputs and
# runs in one call. The public InferRequest.infer wraps it to copy every output into an
# OVDict, which compute does not read (it reads its bound tensors): ~15 us a call.
_infer = _pyopenvino.InferRequest.infer


# OpenVINO's messages start with lines naming C++ source locations:
# "Exception from src/inference/src/cpp/core.cpp:117:", "Check '...' failed at src/...:108:".
_LOCATION_LINE = re.compile(r"^(Exception from|Check '.*' failed at) \S+:\d+:$")


def _one_line(e: Exception) -> str:
    """The words of an OpenVINO message, without its source locations, on one line."""
    lines = [ln.strip() for ln in str(e).splitlines()]
    return " ".join(ln for ln in lines if ln and not _LOCATION_LINE.match(ln)) or type(e).__name__


def _specs(ports, model_names: list[str] | None) -> list[TensorSpec]:
    specs = []
    for i, port in enumerate(ports):
        if model_names and len(model_names) == len(ports):
            name = model_names[i]
        else:
            name = port.get_any_name() if port.get_names() else str(i)
        et, shape = port.get_element_type(), port.get_partial_shape()
        dims = None if shape.rank.is_dynamic else tuple(
            d.get_length() if d.is_static else None for d in shape)
        specs.append(TensorSpec(name, _TYPES.get(et), et.get_type_name(), dims))
    return specs


def _device(target: ExecutionTarget) -> str:
    if target not in _DEVICES:
        raise unsupported(f"openvino has no execution target {target.value}; it serves: "
                          + ", ".join(t.value for t in _DEVICES))
    device = _DEVICES[target]
    devices = _core().available_devices
    if not any(d.split(".")[0] == device for d in devices):
        if device == "GPU":
            why = ("its GPU plugin needs an OpenCL runtime (libOpenCL.so.1) and an Intel GPU driver "
                   "(Debian: ocl-icd-libopencl1 intel-opencl-icd)" if ctypes.util.find_library("OpenCL") is None
                   else "no Intel GPU answers through OpenCL (on NVIDIA GPUs use onnxruntime for target gpu)")
        else:
            why = "its CPU plugin did not load"
        raise unsupported(f"execution target {target.value} needs an OpenVINO {device} device, and OpenVINO "
                          f"{ov.__version__} sees only: {', '.join(devices) or 'none'}; {why}; or load the "
                          f"graph for target cpu")
    return device


def _onnx_names(model: bytes | pathlib.Path) -> tuple[list[str], list[str]]:
    """An ONNX graph's own input and output names (from its bytes or, without its
    weights, its spilled file). OpenVINO's reader may rename a port: an input wired
    straight to an output (Identity, Dropout) takes the output's name."""
    values = onnx_file_values(model) if isinstance(model, pathlib.Path) else graph_values(model)
    return ([name for name, _ in values.inputs if name not in values.initializers],
            [name for name, _ in values.outputs])


class OpenVinoGraph:
    def __init__(self, model: ov.Model, compiled: ov.CompiledModel, target: ExecutionTarget, device: str,
                 onnx_names: tuple[list[str], list[str]] | None):
        self.compiled = compiled
        self.backend = "openvino"
        self.target = target
        self.device = device
        # Ports of the model as read, not as compiled: compiling fuses layers and gives a
        # port the names of the tensors fused into it, and its "any name" may be one of those.
        self.inputs = _specs(model.inputs, onnx_names and onnx_names[0])
        self.outputs = _specs(model.outputs, onnx_names and onnx_names[1])

    def init_execution_context(self, deadline: float | None = None) -> "OpenVinoContext":
        return OpenVinoContext(self)


def _input(spec: TensorSpec, t: HostTensor) -> ov.Tensor:
    arr = t.array()
    if t.ty in _NARROWED and arr.size:
        info, wide, narrow = _NARROWED[t.ty]
        finite = arr[np.isfinite(arr)] if t.ty == TensorType.FP64 else arr
        if finite.size and (finite.min() < info.min or finite.max() > info.max):
            raise unsupported(f"input {spec.name!r}: OpenVINO computes {wide} as {narrow}, and this tensor "
                              f"holds values outside {narrow}'s range (min {finite.min()}, max {finite.max()}); "
                              f"run the model on onnxruntime (encoding onnx) instead")
    if t.ty == TensorType.BF16:
        # OpenVINO's numpy bridge knows no bfloat16: copy the bits into a tensor that owns
        # its memory (the (array, shape, type) constructor would borrow the array's
        # memory without keeping the array alive).
        tensor = ov.Tensor(ov.Type.bf16, list(t.dims))
        tensor.data.view(np.uint16)[...] = arr.view(np.uint16)
        return tensor
    arr = np.require(arr, requirements="C")
    return ov.Tensor(arr, shared_memory=arr.flags.writeable)  # guests' bytes are read-only: copied


def _output(spec: TensorSpec, tensor: ov.Tensor) -> HostTensor:
    ty = _TYPES.get(tensor.element_type)
    if ty is None:
        raise unsupported(f"output {spec.name!r} is {tensor.element_type.get_type_name()}, which no wasi:nn "
                          f"tensor type can carry (FP16, FP32, FP64, BF16, U8, I32, I64)")
    # The dims come from the numpy view: reading `tensor.shape` costs 14 us a call. The
    # request reuses its output memory on the next compute: copy out. Its numpy view of
    # bfloat16 is float16, so take the bytes rather than the values.
    data = tensor.data
    return HostTensor(data.shape, ty, data.reshape(-1).view(np.uint8).copy())


class _FixedOutput(typing.NamedTuple):
    """An output of a fixed shape and a wasi:nn type, written into a tensor bound to
    the request once."""
    name: str
    dims: tuple[int, ...]
    ty: TensorType
    tensor: ov.Tensor
    raw: np.ndarray  # the tensor's bytes, a view


def _fixed_outputs(request: ov.InferRequest, graph: OpenVinoGraph) -> list[_FixedOutput] | None:
    """Binds a tensor of its own to each of the request's outputs when every output
    has a fixed shape and a wasi:nn type (else None): a compute then reads them
    without asking the request for its output tensors (~15 us each, after a run)."""
    fixed = []
    for spec, port in zip(graph.outputs, graph.compiled.outputs):
        shape, ty = port.get_partial_shape(), _TYPES.get(port.get_element_type())
        if ty is None or not shape.is_static:
            return None
        tensor = ov.Tensor(port.get_element_type(), shape.to_shape())
        data = tensor.data  # bfloat16 shows as float16: the bytes are what counts
        fixed.append(_FixedOutput(spec.name, data.shape, ty, tensor, data.reshape(-1).view(np.uint8)))
    for i, out in enumerate(fixed):
        request.set_output_tensor(i, out.tensor)
    return fixed


class OpenVinoContext:
    """One infer request, reused by every compute, as wasmtime's OpenVINO backend does."""

    def __init__(self, graph: OpenVinoGraph):
        self.graph = graph
        self.request = graph.compiled.create_infer_request()
        self.fixed = _fixed_outputs(self.request, graph)
        self.fixed_sizes = self.fixed and [(out.name, out.raw.nbytes) for out in self.fixed]

    def compute(self, inputs: list[HostTensor], deadline: float | None = None,
                accept_outputs: AcceptOutputs = accept_all,
                into: typing.Sequence[memoryview] | None = None) -> list[tuple[str, HostTensor]]:
        request = self.request
        feeds = [_input(spec, t) for spec, t in zip(self.graph.inputs, inputs)]
        if deadline is not None and time.monotonic() >= deadline:
            raise NnError(ErrorCode.TIMEOUT, "OpenVINO was stopped at the call's deadline: it had passed "
                                             "before the run began")
        try:
            # A synchronous run, cancelled from the watchdog thread at the deadline:
            # start_async + wait_for cost ~20 us more a call (two thread hand-offs). A
            # cancel that comes before the run has begun is lost, so it comes again
            # every millisecond until the run is over.
            with stop_at(deadline, request.cancel, again=_CANCEL_AGAIN):
                _infer(request, feeds[0] if len(feeds) == 1 else dict(enumerate(feeds)), True, True)
        except RuntimeError as e:
            if deadline is not None and time.monotonic() >= deadline:
                raise NnError(ErrorCode.TIMEOUT, f"OpenVINO was stopped at the call's deadline: {_one_line(e)}") from e
            raise runtime_error(f"OpenVINO failed to run the model: {_one_line(e)}") from e
        if self.fixed is not None:
            accept_outputs(self.fixed_sizes)
            # the next compute writes into the same tensors: copy out
            return [(out.name, HostTensor(out.dims, out.ty, out.raw.copy())) for out in self.fixed]
        tensors = [request.get_output_tensor(i) for i in range(len(self.graph.outputs))]
        accept_outputs([(spec.name, t.byte_size) for spec, t in zip(self.graph.outputs, tensors)])
        return [(spec.name, _output(spec, t)) for spec, t in zip(self.graph.outputs, tensors)]


class OpenVinoBackend:
    """Serves `openvino` (IR) or `onnx` through OpenVINO's Python API."""
    name = "openvino"
    loads_files = False

    def __init__(self, encoding: GraphEncoding = GraphEncoding.OPENVINO, threads: int = 0,
                 max_memory: int = 2 << 30, precision: str = "f32"):
        self.max_memory = max_memory
        if encoding not in (GraphEncoding.OPENVINO, GraphEncoding.ONNX):
            raise ValueError(f"OpenVINO does not read {encoding.value} models")
        self.encoding = encoding
        self.precision = precision
        self.config = dict(_PRECISION_CONFIG[precision], **({"INFERENCE_NUM_THREADS": threads} if threads else {}))

    def recognizes(self, builders: list[bytes]) -> bool:
        return RECOGNISERS[self.encoding](builders)

    def read(self, builders: list[bytes], spilled_to: pathlib.Path | None = None) -> ov.Model:
        """The model; an ONNX one from `spilled_to` where its bytes were spilled there."""
        core = _core()
        try:
            if self.encoding == GraphEncoding.OPENVINO:
                if len(builders) != 2:
                    raise invalid_argument("an openvino graph takes two builders, the IR's XML and its weights "
                                           f"(which may be empty), as wasmtime does; got {len(builders)}")
                xml, weights = builders
                return core.read_model(bytes(xml), ov.Tensor(np.frombuffer(weights, np.uint8)))  # copies
            if len(builders) != 1:
                raise invalid_argument(f"an onnx graph takes exactly one builder (the model bytes); got {len(builders)}")
            reject_onnx_external_data(builders[0])
            return core.read_model(io.BytesIO(builders[0]) if spilled_to is None else str(spilled_to))
        except RuntimeError as e:
            raise invalid_encoding(f"OpenVINO could not read the {self.encoding.value} model: {_one_line(e)}") from e

    def load(self, builders: list[bytes], target: ExecutionTarget) -> OpenVinoGraph:
        device = _device(target)
        is_onnx = self.encoding == GraphEncoding.ONNX
        # A large ONNX model is read from a file whose weights OpenVINO maps (spill.py):
        # from bytes its reader holds 4x the model at peak, from the file 2x in all,
        # its compiled copy included. The files go once read: the mapping stays.
        with spilled(builders[0]) if is_onnx and len(builders) == 1 else contextlib.nullcontext() as path:
            model = self.read(builders, path)
            onnx_names = _onnx_names(builders[0] if path is None else path) if is_onnx else None
        produced = _produced_bytes(model)
        if produced > self.max_memory:
            raise backend_memory_error("OpenVINO", self.max_memory,
                                       f"the model's operations produce {produced} bytes of tensors")
        try:
            compiled = _core().compile_model(model, device, self.config)
        except RuntimeError as e:
            raise unsupported(f"OpenVINO's {device} plugin cannot compile the model: {_one_line(e)}") from e
        self._check_precision(compiled, device)
        return OpenVinoGraph(model, compiled, target, device, onnx_names)

    def _check_precision(self, compiled: ov.CompiledModel, device: str) -> None:
        """A plugin silently runs a precision its device lacks in another one (the CPU
        plugin: f16 as bf16 or f32): one asked for by name must be the one that runs."""
        want = _PRECISION_TYPES.get(self.precision)
        if want is None:
            return
        got = compiled.get_property("INFERENCE_PRECISION_HINT")
        if got != want:
            capabilities = ", ".join(_core().get_property(device, "OPTIMIZATION_CAPABILITIES"))
            raise unsupported(f"inference precision {self.precision}: OpenVINO's {device} plugin would run this "
                              f"model in {got.get_type_name()} on this machine (its capabilities: {capabilities}); "
                              f"use auto or f32")


def _produced_bytes(model: ov.Model) -> int:
    """Bytes of every tensor the model's operations make (constants and inputs aside),
    at the shapes the model fixes; dynamic ones count nothing."""
    total = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Constant", "Parameter"):
            continue
        for out in op.outputs():
            shape = out.get_partial_shape()
            if shape.is_static:
                total += math.prod(d.get_length() for d in shape) * out.get_element_type().size
    return total


def make(encoding: GraphEncoding, threads: int, max_memory: int, precision: str = "f32") -> OpenVinoBackend:
    return OpenVinoBackend(encoding, threads, max_memory, precision)

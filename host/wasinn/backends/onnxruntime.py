"""ONNX Runtime backend: encoding `onnx`, targets cpu and (with CUDA) gpu.

max-backend-memory holds per graph. onnxruntime's Python API bounds a CPU arena only
as an allocator registered in its process-wide environment, which sessions created
with `session.use_env_allocators` take at their creation. So each graph's session is
created right after registering a fresh arena whose `max_mem` is the limit: the arena
serves the graph's intermediate tensors and its outputs (not its weights, which
max-host-bytes counts); an allocation past it fails at once, before the memory is
touched, and the run is `too-large`. The arena stays as onnxruntime keeps it between
runs, at most max-backend-memory: runs that ended by shrinking it (what wasinn did where
max-backend-memory was set below its default) grew the process past it wherever a
graph's working set came near the bound, ~24 MiB more for each context run once (one
RunOptions each) and ~400 MiB for one context run 200 times, on a 64 MiB limit (probe
64; plain onnxruntime does the same). On gpu, the CUDA provider's `gpu_mem_limit` bounds
its arena the same way.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import math
import os
import pathlib
import re
import threading
import time
import weakref
from typing import Callable, Sequence

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from .._enums import ErrorCode, ExecutionTarget, GraphEncoding, TensorType
from ..deadlines import stop_at
from ..errors import NnError, invalid_argument, invalid_encoding, runtime_error, unsupported
from ..limits import backend_memory_error
from ..tensors import DTYPES, HostTensor
from .base import AcceptOutputs, TensorSpec, accept_all
from .formats import graph_values, looks_like_onnx, onnx_file_values, reject_onnx_external_data
from .spill import DIRECTORY_PREFIX, ModelFile, spilled

# ONNX element type names as onnxruntime reports them, and the ONNX enum values.
_ORT_TYPES = {
    "tensor(float16)": (TensorType.FP16, 10), "tensor(float)": (TensorType.FP32, 1),
    "tensor(double)": (TensorType.FP64, 11), "tensor(bfloat16)": (TensorType.BF16, 16),
    "tensor(uint8)": (TensorType.U8, 2), "tensor(int32)": (TensorType.I32, 6),
    "tensor(int64)": (TensorType.I64, 7),
}
_ONNX_ELEM_TYPE = {ty: elem for ty, elem in _ORT_TYPES.values()}
_PROVIDERS = {ExecutionTarget.CPU: "CPUExecutionProvider", ExecutionTarget.GPU: "CUDAExecutionProvider"}
_CPU_MEMORY = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
# Registering a graph's arena and creating its session must not interleave with another's.
_ARENA_LOCK = threading.Lock()
# What onnxruntime's arenas say when an allocation would pass their limit.
_ARENA_FULL = re.compile(r"(Available memory of \d+ is smaller than requested bytes of \d+|"
                         r"Failed to allocate memory for requested buffer of size \d+)")


def _specs(args, model: bytes | str) -> list[TensorSpec]:
    # onnxruntime reports both a scalar and an unknown rank as []; only the model
    # proto tells them apart, so read it only when that case comes up.
    unranked: set[str] = set()
    if any(not a.shape for a in args):
        values = graph_values(model) if isinstance(model, bytes) else onnx_file_values(model)
        unranked = {name for name, shaped in values.inputs + values.outputs if not shaped}
    specs = []
    for a in args:
        ty = _ORT_TYPES.get(a.type, (None, 0))[0]
        dims = None if a.name in unranked else tuple(d if isinstance(d, int) and d >= 0 else None for d in a.shape)
        specs.append(TensorSpec(a.name, ty, a.type.removeprefix("tensor(").removesuffix(")"), dims))
    return specs


# How onnxruntime names the file of a model that spill.py moved out of its bytes.
# the file a guest's bytes went through (spill.py's, or the worker's ModelFile)
_SPILLED_FILE = re.compile(r"Load model from (\S*/" + re.escape(DIRECTORY_PREFIX) + r"[\w-]+/model\.onnx"
                           r"|/proc/self/fd/\d+) failed: ?")
# What onnxruntime says (as FAIL or INVALID_GRAPH) when a well-formed model needs an
# operator, operator set, domain or IR version it does not have.
_UNSUPPORTED_MARKERS = ("No Op registered for", "is not a registered function/op", "No opset import for domain",
                        "Current official support for domain", "Unsupported model IR version", ": NOT_IMPLEMENTED :")


def _load_error(e: Exception) -> NnError:
    # A message quoting a model string that is not UTF-8 reaches Python as this decode
    # error, holding onnxruntime's message as bytes.
    text = e.object.decode("utf-8", "replace") if isinstance(e, UnicodeDecodeError) else str(e)
    text = _SPILLED_FILE.sub("", text)  # the guest sent bytes: the file they went through is no news to it
    msg = f"onnxruntime could not load the model: {text.strip()}"
    if isinstance(e, ort_errors.NotImplemented) or any(m in msg for m in _UNSUPPORTED_MARKERS):
        return unsupported(msg)
    if isinstance(e, (ort_errors.InvalidProtobuf, ort_errors.InvalidGraph, ort_errors.NoModel,
                      ort_errors.Fail, ort_errors.InvalidArgument, UnicodeDecodeError)):
        return invalid_encoding(msg)
    return runtime_error(msg)


def _run_error(e: Exception, max_memory: int, deadline: float | None) -> NnError:
    if deadline is not None and time.monotonic() >= deadline:
        return NnError(ErrorCode.TIMEOUT, f"onnxruntime was stopped at the call's deadline: {str(e).strip()}")
    full = _ARENA_FULL.search(str(e))
    if full:
        return backend_memory_error("onnxruntime", max_memory, full.group(0))
    msg = f"onnxruntime failed to run the model: {str(e).strip()}"
    if isinstance(e, ort_errors.InvalidArgument):
        return invalid_argument(msg)
    if isinstance(e, ort_errors.NotImplemented):
        return unsupported(msg)
    return runtime_error(msg)


@functools.cache
def _preload_cuda() -> str:
    """onnxruntime-gpu's CUDA provider finds the CUDA and cuDNN libraries that
    scripts/setup-gpu.sh installs from PyPI (site-packages/nvidia/...) only when they
    are loaded first. Returns what failed to load ("" when nothing did)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # it reports by print(), which must not reach stdout
        ort.preload_dlls(directory="")
    return "; ".join(ln for ln in printed.getvalue().splitlines() if ln.startswith("Failed to load"))


class OnnxRuntimeGraph:
    def __init__(self, session: ort.InferenceSession, target: ExecutionTarget, model: bytes, max_memory: int):
        self.session = session
        self.max_memory = max_memory
        self.backend = "onnxruntime"
        self.target = target
        self.inputs = _specs(session.get_inputs(), model)
        self.outputs = _specs(session.get_outputs(), model)
        self._output_names = [o.name for o in self.outputs]
        # onnxruntime's `run` takes and returns numpy arrays, which cannot hold BF16 (nor
        # the types wasi:nn has no tensor for, which `_to_host` reports). Where no input or
        # output is such, it serves the run: `run_with_ort_values` costs ~45 us more per
        # call in its Python checks of the values' ownership.
        self._plain = all(s.ty not in (None, TensorType.BF16) for s in [*self.inputs, *self.outputs])
        # What `InferenceSession.run` checks in Python before its C++ run (every input
        # fed, OrtValues' owners; no fallback: enable_fallback=0) wasinn has checked
        # (nn.bind_inputs) and feeds no OrtValues to: the C++ run is called directly,
        # ~15 us less per call after a large model's run has left the caches cold.
        self._run_plain = session._sess.run

    def init_execution_context(self, deadline: float | None = None) -> "OnnxRuntimeContext":
        return OnnxRuntimeContext(self)


class OnnxRuntimeContext:
    def __init__(self, graph: OnnxRuntimeGraph):
        self.graph = graph
        self._options: tuple[ort.RunOptions, Callable[[], None]] | None = None

    def _run_options(self) -> tuple[ort.RunOptions, Callable[[], None]]:
        """The options of a run and the hook that stops it, made once and kept until a
        run is stopped (`terminate` stays set): making both per run cost ~30 us after a
        large model's run, whose working set leaves the host's code cold in the caches."""
        if self._options is None:
            options = ort.RunOptions()
            context = weakref.ref(self)  # not `self`: the cycle kept the session and its threads until a gc

            def stop() -> None:  # from the deadline watchdog
                options.terminate = True
                if (alive := context()) is not None:
                    alive._options = None
            self._options = options, stop
        return self._options

    def compute(self, inputs: list[HostTensor], deadline: float | None = None,
                accept_outputs: AcceptOutputs = accept_all,
                into: Sequence[memoryview] | None = None) -> list[tuple[str, HostTensor]]:
        graph = self.graph
        if into is not None and graph._plain and graph.target == ExecutionTarget.CPU:
            return self._compute_into(inputs, deadline, accept_outputs, into)
        names = graph._output_names
        if graph._plain:
            results = self._run(graph._run_plain, {spec.name: t.array() for spec, t in zip(graph.inputs, inputs)},
                                deadline)
        else:
            results = self._run(graph.session.run_with_ort_values,
                                {spec.name: _ort_value(t) for spec, t in zip(graph.inputs, inputs)}, deadline)
        if graph._plain:
            accept_outputs([(name, a.nbytes) for name, a in zip(names, results)])
            # run's arrays are new, C-contiguous and of their output's declared type
            return [(spec.name, HostTensor(a.shape, spec.ty, a.reshape(-1).view(np.uint8)))
                    for spec, a in zip(graph.outputs, results)]
        accept_outputs([(name, _nbytes(v)) for name, v in zip(names, results)])
        return [(name, _to_host(name, v)) for name, v in zip(names, results)]


    def _run(self, run, feeds: dict, deadline: float | None) -> list:
        options, stop = self._run_options()
        try:
            with stop_at(deadline, stop):
                return run(self.graph._output_names, feeds, options)
        except Exception as e:
            raise _run_error(e, self.graph.max_memory, deadline) from e

    def prepare(self, inputs: list[HostTensor]) -> "Callable[[float | None], list[np.ndarray]] | None":
        """A run of these very inputs, made once, for a caller that keeps their bytes in
        place and runs them again (a backend worker: tensors in its shared memory); each
        call returns the outputs' arrays, in the order of `Graph.outputs`. None where the
        graph needs more than numpy arrays (BF16) or runs elsewhere than the CPU."""
        graph = self.graph
        if not graph._plain or graph.target != ExecutionTarget.CPU:
            return None
        feeds = {spec.name: t.array() for spec, t in zip(graph.inputs, inputs)}
        return lambda deadline: self._run(graph._run_plain, feeds, deadline)

    def _compute_into(self, inputs: list[HostTensor], deadline: float | None, accept_outputs: AcceptOutputs,
                      into: Sequence[memoryview]) -> list[tuple[str, HostTensor]]:
        """The run with its outputs bound to `into` (IOBinding): onnxruntime writes them
        there, which saves a copy of each (a 4 MB output: 74 vs 134 us)."""
        graph = self.graph
        options, stop = self._run_options()
        accept_outputs([(spec.name, len(buffer)) for spec, buffer in zip(graph.outputs, into)])
        binding = graph.session.io_binding()
        for spec, t in zip(graph.inputs, inputs):
            binding.bind_cpu_input(spec.name, t.array())
        outputs = []
        for spec, buffer in zip(graph.outputs, into):
            array = np.frombuffer(buffer, DTYPES[spec.ty]).reshape(spec.shape)
            binding.bind_output(spec.name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
            outputs.append((spec.name, HostTensor(spec.shape, spec.ty, array.reshape(-1).view(np.uint8))))
        try:
            with stop_at(deadline, stop):
                graph.session.run_with_iobinding(binding, options)
        except Exception as e:
            if deadline is not None and time.monotonic() >= deadline:
                raise _run_error(e, graph.max_memory, deadline) from e
            # a model whose outputs are not the shapes it declares (a guest's model may say
            # anything) fails a bound run, where an unbound one runs, as it does in process
            return self.compute(inputs, deadline, accept_outputs)
        return outputs


def _ort_value(t: HostTensor) -> ort.OrtValue:
    arr = np.require(t.array(), requirements="C")
    if t.ty == TensorType.BF16:  # onnxruntime takes no numpy bfloat16: hand it the bits
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(arr.view(np.uint16), _ONNX_ELEM_TYPE[TensorType.BF16])
    return ort.OrtValue.ortvalue_from_numpy(arr)


def _nbytes(value: ort.OrtValue) -> int:
    ty = _ORT_TYPES.get(value.data_type(), (None,))[0]
    return 0 if ty is None else math.prod(value.shape()) * DTYPES[ty].itemsize


def _to_host(name: str, value: ort.OrtValue) -> HostTensor:
    kind = value.data_type()
    if kind not in _ORT_TYPES:
        raise unsupported(f"output {name!r} is {kind}, which no wasi:nn tensor type can carry "
                          f"(FP16, FP32, FP64, BF16, U8, I32, I64)")
    ty = _ORT_TYPES[kind][0]
    shape = value.shape()
    if ty == TensorType.BF16:
        n = math.prod(shape) * DTYPES[ty].itemsize
        raw = np.frombuffer(ctypes.string_at(value.data_ptr(), n), np.uint8) if n else np.empty(0, np.uint8)
        return HostTensor(shape, ty, raw)
    return HostTensor.from_array(value.numpy())


class OnnxRuntimeBackend:
    """Serves `onnx` through onnxruntime's Python API."""
    name = "onnxruntime"
    encoding = GraphEncoding.ONNX
    loads_files = True

    def __init__(self, intra_op_threads: int = 0, inter_op_threads: int = 0, max_memory: int = 2 << 30):
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self.max_memory = max_memory

    def recognizes(self, builders: list[bytes]) -> bool:
        return looks_like_onnx(builders)

    def providers(self, target: ExecutionTarget) -> list[str]:
        available = ort.get_available_providers()
        if target not in _PROVIDERS:
            raise unsupported(f"onnxruntime has no execution target {target.value}; it serves: "
                              + ", ".join(t.value for t in _PROVIDERS))
        wanted = _PROVIDERS[target]
        if wanted not in available:
            raise unsupported(
                f"execution target {target.value} needs onnxruntime's {wanted}, and this onnxruntime "
                f"({ort.__version__}) offers only {', '.join(available)}; replace it with onnxruntime-gpu "
                f"{ort.__version__} on a machine with an NVIDIA GPU (scripts/setup-gpu.sh), or load the "
                f"graph for target cpu")
        if target == ExecutionTarget.GPU:
            _preload_cuda()
        return [wanted]

    def load(self, builders: list[bytes], target: ExecutionTarget) -> OnnxRuntimeGraph:
        if len(builders) != 1:
            raise invalid_argument(f"an onnx graph takes exactly one builder (the model bytes); got {len(builders)}")
        model = builders[0]
        reject_onnx_external_data(model)
        # A large model goes to onnxruntime as a file whose weights it maps (spill.py):
        # from bytes it would hold 2-3x the model at peak.
        with spilled(model) as path:
            if path is None and model[4:8] != b"ORTM":
                # in a file already (a backend worker's): read from there, not copied into
                # bytes that the binding copies again. (onnxruntime tells its own format by
                # a file's extension, but by the identifier in bytes: those stay bytes.)
                path = ModelFile.path_of(model)
            return self._load(bytes(model) if path is None else str(path), target)

    def load_file(self, path: pathlib.Path, target: ExecutionTarget) -> OnnxRuntimeGraph:
        """An operator's model file, read by onnxruntime itself: 20 MB less at peak for
        the bundled model than reading it into Python first, and external data files
        resolve beside the model, as onnxruntime does for files."""
        return self._load(str(path), target)

    def _load(self, model: bytes | str, target: ExecutionTarget) -> OnnxRuntimeGraph:
        providers = self.providers(target)
        opts = ort.SessionOptions()
        opts.log_severity_level = 4  # failures reach the guest as wasi:nn errors; keep stderr quiet
        opts.add_session_config_entry("session.use_env_allocators", "1")  # the graph's own arena (module doc)
        arena = {"max_mem": self.max_memory, "arena_extend_strategy": 1}  # 1: kSameAsRequested
        wanted = ([(providers[0], {"gpu_mem_limit": str(self.max_memory), "arena_extend_strategy": "kSameAsRequested"})]
                  if target == ExecutionTarget.GPU else providers)
        try:
            with _ARENA_LOCK:
                opts.use_per_session_threads = not _SHARED_POOLS
                if not _SHARED_POOLS:  # else onnxruntime warns on stderr that it ignores them
                    opts.intra_op_num_threads = self.intra_op_threads or default_intra_op_threads()
                    opts.inter_op_num_threads = self.inter_op_threads
                ort.create_and_register_allocator(_CPU_MEMORY, ort.OrtArenaCfg(arena))
                # Without enable_fallback=0, onnxruntime's Python layer answers some bad
                # models by printing to the host's stdout and loading them a second time.
                session = ort.InferenceSession(model, opts, providers=wanted, enable_fallback=0)
        except Exception as e:
            # The error outlives the call (as the guest's last error); its traceback would
            # keep the half-made session alive, and with it the model's copies or mappings.
            raise _load_error(e) from e.with_traceback(None)
        if session.get_providers()[0] != providers[0]:
            missing = _preload_cuda() if target == ExecutionTarget.GPU else ""
            raise unsupported(f"onnxruntime could not start {providers[0]} for target {target.value} "
                              f"(it would run on {session.get_providers()[0]} instead)"
                              + (f": {missing}" if missing else ""))
        try:
            return OnnxRuntimeGraph(session, target, model, self.max_memory)
        except UnicodeDecodeError as e:
            raise invalid_encoding(f"onnxruntime could not load the model: an input or output name is "
                                   f"not UTF-8: {e.object!r}") from e


_SHARED_POOLS = False  # set by share_thread_pools()


@functools.cache
def default_intra_op_threads() -> int:
    """The intra-op thread count onnxruntime picks by itself (one per physical core),
    counted over the cores this process may run on, for a session to ask for explicitly.
    Left to pick it, onnxruntime also pins each pool thread to a core, and not the thread
    that calls `run`: after an idle spell (past the pool's spinning, ~40 ms) the kernel
    could wake that thread on a pinned thread's core and leave it there, the two sharing
    one core for the whole run while the other stayed idle. Measured on 2 cores,
    EfficientNet-Lite0 after each 0.1 s pause: 12 ms in a backend worker and 6.0 ms in
    process with the pinning, 5.5 and 4.8 ms without it; back to back, 4.3 ms either way."""
    cpus = os.sched_getaffinity(0)
    cores = set()
    for cpu in cpus:
        topology = pathlib.Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:  # no topology to read: every CPU a core
            return len(cpus)
    return len(cores)


def share_thread_pools(intra: int, inter: int = 0) -> None:
    """Makes the graphs this process loads from now on run on one set of onnxruntime
    thread pools instead of pools per session. For processes that run several graphs in
    turn and no onnxruntime sessions of their own (a `wasinn serve` worker): a pool's
    threads spin after each run, on the cores the next session and the guests need
    (measured: wasinn serve, 1 worker, 2 threads on 2 cores, 38 photos/s on a pool per
    stage, 60 on shared pools; a native loop over the one composed session: 88). Once
    they exist, onnxruntime refuses any session with pools of its own in the process:
    call it before the first graph."""
    global _SHARED_POOLS
    with _ARENA_LOCK:
        if not _SHARED_POOLS:
            ort_errors.set_global_thread_pool_sizes(intra, inter)
            _SHARED_POOLS = True


def make(encoding: GraphEncoding, threads: int, max_memory: int) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(intra_op_threads=threads, max_memory=max_memory)

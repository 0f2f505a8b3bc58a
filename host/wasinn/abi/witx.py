"""wasi-nn for core modules: the `wasi_ephemeral_nn` ABI (WITX), and WAMR's `wasi_nn`.

The glue beside the component bindings, over the same `WasiNn` (nn.py): graphs and
contexts live in its table under the instance's session (so limits, teardown and
`live_resources` are the same), inputs are checked by `nn.check_input` and computed by
`nn.compute`, backends are the host's. What differs is only how values cross: a host
function gets the caller's memory and reads the tensor straight from it (one copy, into
the backend's input), and writes outputs straight into the guest's buffer.

Handles are numbered per instance and per kind from 0 (nn.Handles), as wasmtime's and
WasmEdge's WITX hosts number them; a handle is looked up only among its own instance's.

Every pointer and length a guest passes is checked against its memory before anything is
read or written; every failure is an errno (the ABI's only channel) and one `wasinn:`
line on stderr with the full message (`report=None` turns that off). Nothing raises into
wasmtime.

Enum tags that changed between releases (tables in wit/witx/wasi-nn.witx):
* tensor type 2 is u8 in the first WITX and f64 now, 3 is i32 then and u8 now: the data
  length against the dimensions decides, then the model input's own type;
* encoding 5 and 6 are autodetect and ggml (wasmtime, WasmEdge) or ggml and autodetect
  (WAMR): the model bytes decide (GGUF/GGML magic is ggml, anything else autodetect);
* execution target 3 (WasmEdge's `auto`) runs on the cpu.
"""
from __future__ import annotations

import struct
from typing import Callable

from ..lazy import numpy as np
import wasmtime

from . import _witx_tables as tables
from .memory import copy_into
from .streams import HostLines
from .._bindings import ErrorCode, ExecutionTarget, GraphEncoding, Resource, TensorType
from ..copies import copied
from ..embedding.memory import ExportedMemory
from ..embedding.patches import I32Host
from ..errors import NnError, invalid_argument, not_found, quoted, unsupported
from ..limits import product
from ..nn import (Session, WasiNn, check_input, check_outputs, check_working, compute_bound, count_working,
                  in_model_order, new_context, timeouts_seen, working_bytes)
from ..tensors import DTYPES, HostTensor

SERVED = tables.FUNCTIONS  # import module -> the functions defined for it
MODULES = tuple(SERVED)
_ERRNO = {name: tag for tag, name in enumerate(tables.ENUMS["nn_errno"])}
# wasi:nn error codes with no WITX errno of their own go to the nearest one.
_ERRNO_OF = {ErrorCode.INVALID_ARGUMENT: "invalid_argument", ErrorCode.INVALID_ENCODING: "invalid_encoding",
             ErrorCode.TIMEOUT: "busy", ErrorCode.RUNTIME_ERROR: "runtime_error",
             ErrorCode.UNSUPPORTED_OPERATION: "unsupported_operation", ErrorCode.TOO_LARGE: "too_large",
             ErrorCode.NOT_FOUND: "not_found", ErrorCode.SECURITY: "invalid_argument",
             ErrorCode.UNKNOWN: "runtime_error"}
_TYPES = {"f16": TensorType.FP16, "f32": TensorType.FP32, "f64": TensorType.FP64, "u8": TensorType.U8,
          "i32": TensorType.I32, "i64": TensorType.I64}
_TARGETS = {"cpu": ExecutionTarget.CPU, "gpu": ExecutionTarget.GPU, "tpu": ExecutionTarget.TPU,
            "auto": ExecutionTarget.CPU}
# GGUF, and the GGML formats before it
_GGML_MAGIC = (b"GGUF", b"lmgg", b"fmgg", b"tjgg", b"algg")
_WAMR_WORD = 4  # WAMR's legacy get_output counts the buffer in 4-byte words
_CONFIG_READ = 4096  # a longer load-time config is refused unread: only "" and "{}" are taken
_NAME_READ = 256  # a longer graph name than any registered one is refused unread
Report = Callable[[str], None]


# one line per failing call on the process's stderr, never waiting for it (streams.HostLines)
stderr_report = HostLines(2)


def _record(name: str, formats: dict[str, str]) -> struct.Struct:
    """The layout of WITX record `name` (fields in offset order, `formats` their struct
    codes), read with one `unpack_from`."""
    record = tables.RECORDS[name]
    fmt, at = "<", 0
    for field, offset in sorted(record["fields"].items(), key=lambda item: item[1]):
        fmt += "x" * (offset - at) + formats[field]
        at = offset + struct.calcsize("<" + formats[field])
    layout = struct.Struct(fmt + "x" * (record["size"] - at))
    assert layout.size == record["size"] and list(formats) == sorted(record["fields"], key=record["fields"].get)
    return layout


# tensor: dimensions (pointer, length), type (u8 enum), data (pointer, length)
_TENSOR = _record("tensor", {"dimensions": "II", "type": "B", "data": "II"})
# WAMR's: dimensions (pointer to a (pointer, length) record), type, data (pointer)
_TENSOR_WAMR = _record("tensor_wamr", {"dimensions": "I", "type": "B", "data": "I"})


class _Errno(Exception):
    """An ABI-level failure (bad pointer, missing memory): an errno and its message."""

    def __init__(self, errno: str, message: str):
        super().__init__(message)
        self.errno = errno
        self.message = message


def bad_argument(message: str) -> _Errno:
    return _Errno("invalid_argument", message)


class GuestMemory:
    """The caller's exported memory during one host call, every access bounds-checked.
    Views are numpy arrays on the memory itself (no copy); they are valid only until
    the guest runs again. `session` is the caller's."""

    def __init__(self, caller: wasmtime.Caller, session: Session):
        self.session = session
        self._caller = caller
        mapping = session.core_memory
        if mapping is None:
            memory = caller.get("memory")
            if not isinstance(memory, wasmtime.Memory):
                raise _Errno("missing_memory", "the module exports no memory named 'memory'")
            mapping = session.core_memory = ExportedMemory(memory, caller)
        self._mapping = mapping
        self.size, self.bytes, self.mv = mapping.size, mapping.bytes, mapping.mv

    def _past_end(self, ptr: int, length: int, what: str) -> None:
        """For a span past the memory as last seen: raises unless the memory has grown."""
        mapping = self._mapping
        mapping.refresh(self._caller)
        self.size, self.bytes, self.mv = mapping.size, mapping.bytes, mapping.mv
        # ptr and length are u32; their sum may pass 2^32, which no 32-bit memory reaches
        if ptr + length > self.size:
            raise bad_argument(f"{what} at {ptr:#x}+{length} lies outside the guest's memory "
                               f"({self.size} bytes)")

    def view(self, ptr: int, length: int, what: str) -> np.ndarray:
        if ptr + length > self.size:
            self._past_end(ptr, length, what)
        return self.bytes[ptr:ptr + length]

    def read(self, layout: struct.Struct, ptr: int, what: str) -> tuple:
        """The values of a struct at `ptr`, copied (the guest may change them later)."""
        if ptr + layout.size > self.size:
            self._past_end(ptr, layout.size, what)
        return layout.unpack_from(self.bytes, ptr)

    def u32s(self, ptr: int, count: int, what: str) -> tuple[int, ...]:
        """`count` little-endian u32s at `ptr`, copied."""
        if ptr + 4 * count > self.size:
            self._past_end(ptr, 4 * count, what)
        return struct.unpack_from(f"<{count}I", self.bytes, ptr)

    def slot(self, ptr: int, what: str) -> memoryview:
        """A u32 the host will write: checked before any work is done."""
        if ptr + 4 > self.size:
            self._past_end(ptr, 4, what)
        return self.mv[ptr:ptr + 4].cast("I")  # x86 and arm64 hosts are little-endian, as wasm is

    def write(self, ptr: int, data, what: str, deadline: float | None = None) -> None:
        """`data` (bytes or a uint8 array) copied to `ptr` (memory.copy_into: past a MiB,
        slices without the GIL, none begun past `deadline`)."""
        if ptr + len(data) > self.size:
            self._past_end(ptr, len(data), what)
        copy_into(self.bytes.ctypes.data + ptr, memoryview(data).cast("B"), deadline, what)


class Execution:
    """A core module's execution context: inputs set one by one, outputs of the last compute.
    Not nn.ExecutionContext, whose staged inputs and outputs are reps in the instance's
    table (tensor resources of the earlier wasi:nn releases, counted against its
    limits): a core module has no tensor handles, its inputs are copies of its memory."""

    def __init__(self, graph, context):
        self.graph = graph
        self.context = context
        self.inputs: dict[int, HostTensor] = {}
        self.outputs: list[HostTensor] | None = None
        # the bytes its inputs, outputs and backend context hold, in its instance's
        # max-host-bytes (`hold`; the context's: nn.count_working)
        self.held = self.working = working_bytes(context)

    def hold(self, session: Session, n: int) -> None:
        """`n` bytes more (or fewer) held, counted against the instance's max-host-bytes
        (nn._held_bytes reads `held` when the context goes): before, a core module's staged
        inputs and outputs were not counted, and 40 contexts of 16 MiB held 1.3 GB under
        --max-host-bytes 16MiB."""
        self.held += n
        session.host_bytes += n


def _tag(table: str, tag: int, what: str) -> str:
    cases = tables.ENUMS[table]
    if tag >= len(cases):
        raise bad_argument(f"unknown {what} tag {tag}; this ABI has: "
                           + ", ".join(f"{i} {c}" for i, c in enumerate(cases)))
    return cases[tag]


def _encoding(table: str, tag: int, builders: list[bytes]) -> GraphEncoding:
    name = _tag(table, tag, "graph encoding")
    if name in ("autodetect", "ggml"):  # the tables disagree on these two: the bytes decide
        is_ggml = bool(builders) and builders[0][:4] in _GGML_MAGIC
        return GraphEncoding.GGML if is_ggml else GraphEncoding.AUTODETECT
    return GraphEncoding(name)


def _type_candidates(tag: int) -> list[TensorType]:
    candidates = []
    for table in ("tensor_type", "tensor_type_v0"):
        cases = tables.ENUMS[table]
        if tag < len(cases) and _TYPES[cases[tag]] not in candidates:
            candidates.append(_TYPES[cases[tag]])
    return candidates


# tag -> the types it means in either table (u8 tags: every one is worked out once)
_TYPE_CANDIDATES = [_type_candidates(tag) for tag in range(256)]


def _tensor_type(tag: int, dims: tuple[int, ...], nbytes: int, spec) -> TensorType:
    """The element type a program meant by `tag`, from both tag tables (see the module docs)."""
    candidates = _TYPE_CANDIDATES[tag]
    if not candidates:
        _tag("tensor_type", tag, "tensor type")
    if len(candidates) > 1:
        elements = product(dims)
        fitting = [ty for ty in candidates if elements * DTYPES[ty].itemsize == nbytes]
        if len(fitting) == 1:
            return fitting[0]
        if spec.ty in candidates:
            return spec.ty
    return candidates[0]


class WitxHost:
    """Serves the modules in `MODULES` to core modules, on `nn`'s tables and backends."""

    def __init__(self, nn: WasiNn, report: Report | None = stderr_report):
        self.nn = nn
        self.report = report
        self._impls = {"wasi_ephemeral_nn": {
            "load": self.load, "load_by_name": self.load_by_name,
            "load_by_name_with_config": self.load_by_name_with_config,
            "init_execution_context": self.init_execution_context, "set_input": self.set_input,
            "compute": self.compute, "get_output": self.get_output, "unload": self.unload,
            "compute_single": self._streaming, "get_output_single": self._streaming,
            "fini_single": self._streaming,
        }, "wasi_nn": {
            "load": self.load_wamr, "load_by_name": self.load_by_name,
            "init_execution_context": self.init_execution_context, "set_input": self.set_input_wamr,
            "compute": self.compute, "get_output": self.get_output_wamr,
        }}

    def define(self, linker: wasmtime.Linker) -> None:
        i32 = wasmtime.ValType.i32()
        for module, funcs in tables.FUNCTIONS.items():
            for name, params in funcs.items():
                ty = wasmtime.FuncType([i32] * len(params), [i32])
                linker.define_func(module, name, ty, I32Host(self._serve(module, name, self._impls[module][name])),
                                   access_caller=True)

    def _serve(self, module: str, name: str, impl: Callable) -> Callable:
        nn = self.nn

        def host(caller, *args):  # args: u32s (embedding/patches.py's I32Host)
            try:
                impl(caller, GuestMemory(caller, nn.session(caller)), *args)
                return 0
            except _Errno as e:
                errno, message = e.errno, e.message
            except NnError as e:
                errno, message = _ERRNO_OF[e.code], e.message
            except Exception as e:  # a host or backend bug: still an errno, never a trap
                errno, message = "runtime_error", f"{type(e).__name__}: {e}"
            code = next((c for c, e in _ERRNO_OF.items() if e == errno), ErrorCode.INVALID_ARGUMENT)
            self.nn.session(caller).last_error = NnError(code, message)  # for `wasinn run`'s last word
            if self.report is not None:
                self.report(f"wasinn: {module}.{name}: {errno}: {message}")
            return _ERRNO[errno]
        return host

    # --- handles -----------------------------------------------------------------
    def _find(self, mem: GuestMemory, handle: int, kind: Resource, what: str):
        obj = self.nn.find_in(mem.session, handle, kind)
        if obj is None:
            raise bad_argument(f"unknown {what} handle {handle}")
        return obj

    def _new(self, caller, session: Session, kind: Resource, obj) -> int:
        return session.handles[kind].add(self.nn.add(caller, kind, obj, session=session))

    def _new_graph(self, caller, slot: np.ndarray, graph) -> None:
        slot[0] = self._new(caller, self.nn.session(caller), Resource.GRAPH, graph)

    # --- graphs --------------------------------------------------------------------
    def _builders(self, mem: GuestMemory, ptr: int, count: int) -> list[memoryview]:
        """The builders in place (no copy: nn.load_views releases them)."""
        self.nn.limits.check_builders(count)
        pairs = mem.u32s(ptr, 2 * count, "the graph builder array")
        return [memoryview(mem.view(p, n, f"graph builder {i}")).toreadonly()
                for i, (p, n) in enumerate(zip(pairs[0::2], pairs[1::2]))]

    def _load(self, caller, mem, table, builder_ptr, builder_len, encoding, target, result_ptr) -> None:
        slot = mem.slot(result_ptr, "the graph result slot")
        target = _TARGETS[_tag("execution_target", target, "execution target")]
        builders = self._builders(mem, builder_ptr, builder_len)
        graph = self.nn.load_views(builders, _encoding(table, encoding, builders), target, self.nn.session(caller))
        self._new_graph(caller, slot, graph)

    def load(self, caller, mem, builder_ptr, builder_len, encoding, target, result_ptr) -> None:
        self._load(caller, mem, "graph_encoding", builder_ptr, builder_len, encoding, target, result_ptr)

    def load_wamr(self, caller, mem, array_ptr, encoding, target, result_ptr) -> None:
        builder_ptr, builder_len = mem.u32s(array_ptr, 2, "the graph builder array record")
        self._load(caller, mem, "graph_encoding_wamr", builder_ptr, builder_len, encoding, target, result_ptr)

    def _name(self, mem: GuestMemory, ptr: int, length: int) -> str:
        view = mem.view(ptr, length, "the graph name")
        if length > max(self.nn.registry.longest_name(), _NAME_READ):  # no model has it: not copied
            raise self.nn.registry.unknown(f"{view[:80].tobytes()!r}... ({length} bytes)")
        raw = view.tobytes()
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise not_found(f"no graph named {quoted(raw)} (not UTF-8)") from None

    def load_by_name(self, caller, mem, name_ptr, name_len, result_ptr) -> None:
        slot = mem.slot(result_ptr, "the graph result slot")
        name = self._name(mem, name_ptr, name_len)
        self._new_graph(caller, slot, self.nn.graph_by_name(name, mem.session))

    def load_by_name_with_config(self, caller, mem, name_ptr, name_len, config_ptr, config_len, result_ptr) -> None:
        config = mem.view(config_ptr, config_len, "the graph config")
        if config_len > _CONFIG_READ or config.tobytes().strip() not in (b"", b"{}"):
            raise unsupported(f"wasinn's backends take no load-time configuration (got {config[:80].tobytes()!r}); "
                              "load_by_name_with_config accepts an empty config or {}")
        self.load_by_name(caller, mem, name_ptr, name_len, result_ptr)

    def unload(self, caller, mem, graph) -> None:
        self._find(mem, graph, Resource.GRAPH, "graph")
        self.nn.drop(mem.session.handles[Resource.GRAPH].reps.pop(graph))

    def init_execution_context(self, caller, mem, graph, result_ptr) -> None:
        slot = mem.slot(result_ptr, "the context result slot")
        g = self._find(mem, graph, Resource.GRAPH, "graph")
        execution = Execution(g, new_context(g, mem.session))
        slot[0] = self._new(caller, mem.session, Resource.GRAPH_EXECUTION_CONTEXT, execution)

    # --- inference -------------------------------------------------------------------
    def _input(self, session: Session, execution: Execution, index: int, dims: tuple[int, ...], ty: TensorType,
               data: np.ndarray) -> None:
        """Checks the tensor in place, then makes the one copy the backend will read."""
        t = HostTensor(dims, ty, data)
        check_input(execution.graph.inputs[index], t, self.nn.limits)
        old = execution.inputs.get(index)
        grows = t.nbytes - (old.nbytes if old is not None else 0)
        if grows > 0:
            self.nn.limits.check_host_bytes(session.host_bytes, grows, f"input {index} ({t.nbytes} bytes)")
        # set_input takes the bytes as they are now (the guest may reuse its buffer), copied
        # a slice at a time, none begun past the call's deadline
        t.data = copied(data, session.deadline, f"input {index}")
        execution.inputs[index] = t
        execution.hold(session, grows)

    def _input_spec(self, mem: GuestMemory, context: int, index: int):
        execution = self._find(mem, context, Resource.GRAPH_EXECUTION_CONTEXT, "execution context")
        specs = execution.graph.inputs
        if index >= len(specs):
            raise invalid_argument(f"input index {index} is out of range: the model has {len(specs)} input"
                                   + ("s" if len(specs) != 1 else ""))
        return execution, specs[index]

    def set_input(self, caller, mem, context, index, tensor_ptr) -> None:
        execution, spec = self._input_spec(mem, context, index)
        dims_ptr, dims_len, tag, data_ptr, data_len = mem.read(_TENSOR, tensor_ptr, "the tensor record")
        self.nn.limits.check_rank(dims_len, f"input {spec.name!r}")
        dims = mem.u32s(dims_ptr, dims_len, "the tensor dimensions")
        data = mem.view(data_ptr, data_len, "the tensor data")
        self._input(mem.session, execution, index, dims, _tensor_type(tag, dims, data_len, spec), data)

    def set_input_wamr(self, caller, mem, context, index, tensor_ptr) -> None:
        execution, spec = self._input_spec(mem, context, index)
        dims_record, tag, data_ptr = mem.read(_TENSOR_WAMR, tensor_ptr, "the tensor record")
        ty = _TYPES[_tag("tensor_type_v0", tag, "tensor type")]
        dims_ptr, dims_len = mem.u32s(dims_record, 2, "the tensor dimensions record")
        self.nn.limits.check_rank(dims_len, f"input {spec.name!r}")
        dims = mem.u32s(dims_ptr, dims_len, "the tensor dimensions")
        nbytes = self.nn.limits.check_tensor(f"input {spec.name!r}", dims, DTYPES[ty].itemsize)  # before touching the data
        self._input(mem.session, execution, index, dims, ty, mem.view(data_ptr, nbytes, "the tensor data"))

    def compute(self, caller, mem, context) -> None:
        execution = self._find(mem, context, Resource.GRAPH_EXECUTION_CONTEXT, "execution context")
        session = mem.session
        inputs = in_model_order(execution.graph.inputs, execution.inputs)  # each checked by set_input
        execution.hold(session, -sum(t.nbytes for t in execution.outputs or ()))
        execution.outputs = None
        check_working(self.nn.limits, session)
        with timeouts_seen(session):
            try:
                outputs = compute_bound(execution.graph, execution.context, inputs, self.nn.limits, session.deadline,
                                        lambda sizes: check_outputs(self.nn.limits, sizes, session.host_bytes))
            finally:
                count_working(session, execution)
        execution.outputs = [t for _, t in outputs]
        execution.hold(session, sum(t.nbytes for t in execution.outputs))

    def _output(self, mem: GuestMemory, context: int, index: int) -> np.ndarray:
        execution = self._find(mem, context, Resource.GRAPH_EXECUTION_CONTEXT, "execution context")
        if execution.outputs is None:
            raise invalid_argument("get_output before a successful compute on this context")
        if index >= len(execution.outputs):
            raise invalid_argument(f"output index {index} is out of range: the model has "
                                   f"{len(execution.outputs)} output" + ("s" if len(execution.outputs) != 1 else ""))
        data = execution.outputs[index].data
        return data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)

    def get_output(self, caller, mem, context, index, out_ptr, out_max, result_ptr) -> None:
        slot = mem.slot(result_ptr, "the bytes-written slot")
        mem.view(out_ptr, out_max, "the output buffer")  # a bad buffer is reported before a missing output
        data = self._output(mem, context, index)
        if len(data) > out_max:
            raise NnError(ErrorCode.TOO_LARGE, f"output {index} is {len(data)} bytes; the buffer holds {out_max}")
        # the one copy, straight into the guest's buffer
        mem.write(out_ptr, data, f"output {index}", mem.session.deadline)
        slot[0] = len(data)

    def get_output_wamr(self, caller, mem, context, index, out_ptr, size_ptr) -> None:
        slot = mem.slot(size_ptr, "the output size slot")
        size = slot[0] * _WAMR_WORD
        mem.view(out_ptr, size, "the output buffer")  # as in get_output: checked first
        data = self._output(mem, context, index)
        if len(data) > size:
            raise NnError(ErrorCode.TOO_LARGE, f"output {index} is {len(data)} bytes; the buffer holds "
                          f"{size} ({slot[0]} words)")
        mem.write(out_ptr, data, f"output {index}", mem.session.deadline)
        slot[0] = -(-len(data) // _WAMR_WORD)

    def _streaming(self, caller, mem, *args) -> None:
        raise unsupported("WasmEdge's token streaming (compute_single, get_output_single, fini_single) "
                          "serves its LLM backends; wasinn's compute whole outputs: use compute and get_output")

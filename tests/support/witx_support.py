"""Helpers for the core-module tests: the WAT probe guest (every WITX import re-exported),
records written into its memory, small ONNX models, the C classify example."""
from __future__ import annotations

import pathlib
import struct
import subprocess

import numpy as np
import wasmtime
from onnx import TensorProto, helper

from support.guest_builds import c_module
from support.repo import CACHE

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROBE = ROOT / "guest" / "witx-probe" / "probe.wat"
CLASSIFY_SOURCES = [ROOT / "guest" / "witx-classify" / "classify.c"]
MODEL = ROOT / "models" / "efficientnet-lite0"
# WITX tensor type tags (current table) and the numpy dtype each carries
TAGS = {"f16": (0, np.float16), "f32": (1, np.float32), "f64": (2, np.float64), "u8": (3, np.uint8),
        "i32": (4, np.int32), "i64": (5, np.int64)}
_ONNX = {np.float16: TensorProto.FLOAT16, np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE,
         np.uint8: TensorProto.UINT8, np.int32: TensorProto.INT32, np.int64: TensorProto.INT64}
ERRNO = {"success": 0, "invalid_argument": 1, "invalid_encoding": 2, "missing_memory": 3, "busy": 4,
         "runtime_error": 5, "unsupported_operation": 6, "too_large": 7, "not_found": 8}


def probe_wasm() -> bytes:
    return wasmtime.wat2wasm(PROBE.read_text())


def classify_wasm() -> pathlib.Path:
    return c_module(CLASSIFY_SOURCES, name="witx-classify")


def transpose_model(dtype) -> bytes:
    """y = transpose(x) for a rank-2 x of any size: defined for every element type."""
    elem = _ONNX[dtype]
    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])], "t",
                              [helper.make_tensor_value_info("x", elem, ["a", "b"])],
                              [helper.make_tensor_value_info("y", elem, ["b", "a"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


class Probe:
    """Calls into the probe guest, with a bump allocator over its memory."""

    def __init__(self, inst):
        self.inst = inst
        self.top = 0x1000

    def put(self, data: bytes, align: int = 8) -> int:
        self.top = -(-self.top // align) * align
        ptr = self.top
        need = ptr + len(data) - self.memory_size
        if need > 0:
            self.inst.memory.grow(self.inst._ensure(), -(-need // 65536))
        self.inst.write(ptr, data)
        self.top += max(len(data), 1)
        return ptr

    @property
    def memory_size(self) -> int:
        return self.inst.memory.data_len(self.inst._ensure())

    def u32(self, ptr: int) -> int:
        return struct.unpack("<I", self.inst.read(ptr, 4))[0]

    def call(self, name: str, *args: int) -> int:
        return self.inst.call(name, *[a - (1 << 32) if a >= 1 << 31 else a for a in args])

    def load(self, model: bytes, encoding: int = 1) -> tuple[int, int]:
        builder = self.put(model)
        array = self.put(struct.pack("<II", builder, len(model)))
        out = self.put(b"\0" * 4)
        return self.call("load", array, 1, encoding, 0, out), self.u32(out)

    def context(self, graph: int) -> tuple[int, int]:
        out = self.put(b"\0" * 4)
        return self.call("init_execution_context", graph, out), self.u32(out)

    def tensor(self, dims, tag: int, data: bytes) -> int:
        d = self.put(struct.pack(f"<{len(dims)}I", *dims))
        p = self.put(data)
        return self.put(struct.pack("<IIBxxxII", d, len(dims), tag, p, len(data)))

    def output(self, ctx: int, index: int, size: int) -> tuple[int, bytes]:
        buf, out = self.put(b"\0" * size), self.put(b"\0" * 4)
        errno = self.call("get_output", ctx, index, buf, size, out)
        return errno, self.inst.read(buf, self.u32(out)) if errno == 0 else b""


def wasinn_run(*args) -> subprocess.CompletedProcess:
    """`wasinn run` of this repository's venv, on the suite's cache."""
    return subprocess.run([str(ROOT / ".venv" / "bin" / "wasinn"), "run", "--cache-dir", str(CACHE), *args],
                          capture_output=True, text=True, timeout=300)

"""Faster `list<u8>` conversion for wasmtime-py 50's generic value path.

Stock wasmtime-py converts a `list<u8>` one Python object per byte (~1.4 us/byte).
The C API still wants one 32-byte `wasmtime_component_val_t` per element, but numpy
can fill or read that array with strided copies, ~15x faster. This stays exact for
every byte pattern (the hypothesis round-trips run through it). It is not the final
data path for large payloads -- the per-element value array costs 32 bytes of host
memory per payload byte -- only a cheaper floor for the standard path.

Installed once by `wasinn.runtime`; wasmtime is pinned to the exact version whose
layout this reads, and `install()` checks that layout before patching.
"""
from __future__ import annotations

import ctypes

import numpy as np
from wasmtime import _ffi as ffi
from wasmtime.component import _types

_VAL = ffi.wasmtime_component_val_t
_STRIDE = ctypes.sizeof(_VAL)
_PAYLOAD = _VAL.of.offset  # a u8 sits at the start of the union
_U8 = ffi.WASMTIME_COMPONENT_U8.value
_LIST = ffi.WASMTIME_COMPONENT_LIST
_stock_to_c = _types.ListType.convert_to_c
_stock_from_c = _types.ListType.convert_from_c


def _as_bytes_view(val) -> np.ndarray | None:
    if isinstance(val, np.ndarray):
        return np.ascontiguousarray(val).reshape(-1).view(np.uint8)
    if isinstance(val, (bytes, bytearray, memoryview)):
        return np.frombuffer(val, np.uint8)
    return None


def _to_c(self, store, val, ptr):
    if not self._is_bytes():
        return _stock_to_c(self, store, val, ptr)
    data = _as_bytes_view(val)
    if data is None:
        raise TypeError(f"expected bytes for list<u8>, got {type(val).__name__}")
    n = len(data)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        cells = np.ctypeslib.as_array(ctypes.cast(raw.data, ctypes.POINTER(ctypes.c_uint8)), (n * _STRIDE,))
        cells[0::_STRIDE] = _U8
        cells[_PAYLOAD::_STRIDE] = data
    ptr.contents.kind = _LIST
    ptr.contents.of.list = raw


def _from_c(self, c):
    if not self._is_bytes():
        return _stock_from_c(self, c)
    lst = c.of.list
    try:
        n = lst.size
        if not n:
            return b""
        cells = np.ctypeslib.as_array(ctypes.cast(lst.data, ctypes.POINTER(ctypes.c_uint8)), (n * _STRIDE,))
        return cells[_PAYLOAD::_STRIDE].tobytes()
    finally:
        ffi.wasmtime_component_vallist_delete(ctypes.byref(lst))


def install() -> None:
    if _STRIDE != 32 or _PAYLOAD != 8:
        raise RuntimeError(f"unexpected wasmtime value layout ({_STRIDE}, {_PAYLOAD}); "
                           "wasinn needs the exact wasmtime version it pins")
    _types.ListType.convert_to_c = _to_c
    _types.ListType.convert_from_c = _from_c

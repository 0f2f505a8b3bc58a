"""Guest memories through the C API: the host memory creator wasinn's engines allocate
every guest memory with (abi/memory.py decides where and how; this file speaks
wasmtime's structs and callbacks), and a core module's exported memory read in place
(abi/witx.py).

Callbacks run inside wasmtime and must never raise: failures go back as wasmtime
errors (`error`).
"""
from __future__ import annotations

import ctypes
from typing import Callable

from ..lazy import numpy as np
import wasmtime
from wasmtime import _ffi as ffi


def error(message: str) -> int:
    """A new wasmtime error saying `message`, as a memory-creator callback returns it."""
    return ctypes.cast(ffi.wasmtime_error_new(message.encode()), ctypes.c_void_p).value or 0


def memory_type_key(ty) -> tuple:
    """A memory type (a callback's `wasm_memorytype_t*`) as images.py keys it: minimum,
    maximum or None, 64-bit, shared, page size (log2)."""
    maximum = ctypes.c_uint64()
    has_maximum = ffi.wasmtime_memorytype_maximum(ty, ctypes.byref(maximum))
    return (ffi.wasmtime_memorytype_minimum(ty), maximum.value if has_maximum else None,
            ffi.wasmtime_memorytype_is64(ty), ffi.wasmtime_memorytype_isshared(ty),
            int(ffi.wasmtime_memorytype_page_size_log2(ty)))


def memory_type_is64(ty) -> bool:
    return bool(ffi.wasmtime_memorytype_is64(ty))


class MemoryCreator:
    """wasmtime's host memory creator over four Python functions:
    `new_memory(env, ty, minimum, maximum, reserved, guard, ret)` (0 or an `error`;
    on success it calls `hand_out(ret, key)`), `get_memory(key, size_out, capacity_out)`
    (the base address), `grow_memory(key, new_size)` (0 or an `error`) and
    `finalize(key)`; a memory is known to them by the integer key it was handed out as.
    The object must outlive the engine it is installed in and every store of it."""

    def __init__(self, new_memory: Callable, get_memory: Callable, grow_memory: Callable,
                 finalize: Callable[[int], None]):
        # ctypes callbacks must stay referenced for as long as wasmtime may call them
        self._callbacks = (ffi.wasmtime_new_memory_callback_t(new_memory),
                           ffi.wasmtime_memory_get_callback_t(get_memory),
                           ffi.wasmtime_memory_grow_callback_t(grow_memory),
                           ctypes.CFUNCTYPE(None, ctypes.c_void_p)(finalize),
                           ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda env: None))
        self._creator = ffi.wasmtime_memory_creator_t(None, self._callbacks[0], self._callbacks[4])

    def install(self, config: wasmtime.Config) -> None:
        """Makes `config`'s engine allocate guest memories here."""
        ffi.wasmtime_config_host_memory_creator_set(config.ptr(), ctypes.byref(self._creator))

    def hand_out(self, ret, key: int) -> None:
        """Fills `new_memory`'s out-parameter: the new memory is `key` to the callbacks."""
        out = ret.contents
        out.env = key
        out.get_memory, out.grow_memory, out.finalizer = self._callbacks[1:4]


class ExportedMemory:
    """Where an instance's exported memory lies in the host. The engine's memories never
    move (modules.py: memory_may_move off), so the base holds for the instance's life
    and only a grown size is asked of wasmtime again: after a large model's run, each
    call into wasmtime's C API costs a host call ~50 us of cache misses. `bytes` (numpy)
    and `mv` (a memoryview of it) are the memory's `size` bytes in place."""

    def __init__(self, memory: wasmtime.Memory, caller: wasmtime.Caller):
        self.memory = ctypes.byref(memory._memory)
        context = caller._context()
        self.base = ctypes.cast(ffi.wasmtime_memory_data(context, self.memory), ctypes.c_void_p).value
        self.size = 0
        self.bytes, self.mv = np.empty(0, np.uint8), memoryview(b"")
        self.refresh(caller)

    def refresh(self, caller: wasmtime.Caller) -> None:
        """Re-reads the size (the guest may have grown its memory)."""
        size = ffi.wasmtime_memory_data_size(caller._context(), self.memory)
        if size != self.size and size:
            self.bytes = np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(self.base))
            self.mv = memoryview(self.bytes)  # its slices and stores run less code than numpy's
        self.size = size

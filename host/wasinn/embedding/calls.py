"""Calling exports with their types looked up once, instead of stock `Func.__call__`,
which asks wasmtime for the function's type and makes type and value objects on every
call (a component export: the caller passes the types it read once; a core module's:
i32s in and out as ints)."""
from __future__ import annotations

import ctypes

from wasmtime import Trap, ValType, WasmtimeError
from wasmtime import _ffi as ffi
from wasmtime import _func
from wasmtime._extern import wrap_extern
from wasmtime.component._enter import enter_wasm

from . import lifting, lowering, patches
from .stores import store_key

_I32 = ffi.WASMTIME_I32.value


def call_export(func, param_types: list, result_type, store, params, deadline: float | None = None) -> object:
    """`Func.__call__` without asking wasmtime for the function's type on every call
    (the caller passes the types it looked up once), its arguments written into one
    buffer (lowering.py) where their types allow, by stock lowering elsewhere; writing
    them stops at `deadline` (`PastDeadline`)."""
    lowered = lowering.lower(store, param_types, params, deadline)
    if lowered is None:
        return _stock_call(func, param_types, result_type, store, params)
    args, arena = lowered
    try:
        return _call(func, result_type, store, args, len(params))
    finally:
        arena.release()


def _stock_call(func, param_types: list, result_type, store, params) -> object:
    param_capi = (ffi.wasmtime_component_val_t * len(params))()
    n = 0
    try:
        for ty, val in zip(param_types, params):
            ty.convert_to_c(store, val, ctypes.pointer(param_capi[n]))
            n += 1
        return _call(func, result_type, store, param_capi, n)
    finally:
        for i in range(n):
            ffi.wasmtime_component_val_delete(ctypes.byref(param_capi[i]))


def _call(func, result_type, store, args, n: int) -> object:
    result_space = ffi.wasmtime_component_val_t() if result_type is not None else None
    enter_wasm(lambda: ffi.wasmtime_component_func_call(
        ctypes.byref(func._func), store._context(), args, n,
        ctypes.byref(result_space) if result_space is not None else None, int(result_space is not None)))
    if result_type is None:
        return None
    read = lifting.reader(result_type)
    bounded = patches.bounded(store_key(store)) if patches.holds_bounded(result_type) else patches.UNBOUNDED
    with bounded:
        try:
            if read is None:
                return result_type.convert_from_c(result_space)
            return lifting.read(read, result_space, getattr(bounded, "lift", None))
        except BaseException:
            if read is None:
                ffi.wasmtime_component_val_delete(ctypes.byref(result_space))  # what a refusal left
            raise
        finally:
            if read is not None:
                ffi.wasmtime_component_val_delete(ctypes.byref(result_space))


class CoreExport:
    """A core module's exported function, its types asked of wasmtime once: called with
    ints where every parameter and result is an i32 (what wasi-nn programs export), it
    skips stock `Func.__call__`'s type objects and `Val`s per call (~4x its cost there);
    anything else takes the stock way."""

    __slots__ = ("func", "nparams", "nresults", "all_i32")

    def __init__(self, func, store):
        ty = func.type(store)
        params, results = ty.params, ty.results
        self.func = func
        self.nparams, self.nresults = len(params), len(results)
        self.all_i32 = all(t == ValType.i32() for t in [*params, *results])

    def __call__(self, store, *args):
        n = len(args)
        if not self.all_i32 or n != self.nparams or not all(type(a) is int for a in args):
            return self.func(store, *args)
        params = (ffi.wasmtime_val_t * n)()
        for i, a in enumerate(args):
            params[i].kind = _I32
            params[i].of.i32 = ffi.wasmtime_valunion_t(i32=a).i32  # wraps to 32 bits, as Val.i32 does
        results = (ffi.wasmtime_val_t * self.nresults)()
        trap = ctypes.POINTER(ffi.wasm_trap_t)()
        error = ffi.wasmtime_func_call(store._context(), ctypes.byref(self.func._func), params, n, results,
                                       self.nresults, ctypes.byref(trap))
        if error:  # as stock enter_wasm: a host function's own exception first
            _func.maybe_raise_last_exn()
            raise WasmtimeError._from_ptr(error)
        if trap:
            trap_obj = Trap._from_ptr(trap)
            _func.maybe_raise_last_exn()
            raise trap_obj
        if self.nresults == 1:
            return results[0].of.i32
        return None if not self.nresults else [r.of.i32 for r in results]


def core_export(store, instance, name: str):
    """A core instance's export `name`, or None: looked up by name. Stock
    `Instance.exports` lists every export first, each by index, which wasmtime finds by
    walking from the first (a module of 20,000 exports: 11 s before its first call)."""
    raw = name.encode()
    item = ffi.wasmtime_extern_t()
    found = ffi.wasmtime_instance_export_get(store._context(), ctypes.byref(instance._instance),
                                             ctypes.create_string_buffer(raw), len(raw), ctypes.byref(item))
    return wrap_extern(item) if found else None

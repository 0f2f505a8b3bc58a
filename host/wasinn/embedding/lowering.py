"""An export's arguments written as wasmtime's C API reads them, into one buffer a call.

Stock lowering (`convert_to_c`, even as patches.py speeds it up) allocates every record,
list, field name, case name and payload of an argument through a C call of its own, and
wasmtime then copies the whole tree into its own values and frees it: ~75 us of the
~100 us a data-flow message (a variant, four records, 18 names) took to lower.
`wasmtime_component_func_call` only reads its arguments (`Val::from(&arg)`: strings and
lists are copied, nothing is taken), so the tree can live in memory Python owns: one
buffer written with `struct.pack_into`, names pointing at bytes encoded once per type,
gone with the buffer. Resources are the exception: the C API holds one by a pointer to a
`resource_any` it owns, so they are consumed (own) or cloned (borrow) as stock does, and
deleted after the call as `wasmtime_component_val_delete` would have.

A writer is made once per type and kept on the type object; types this does not write
(future, stream, error-context: nothing wasinn passes) leave the call to stock lowering.
Values are what `abi/values.py` made of the caller's (checked against the type): a
writer relies on that for meaning, never for memory safety (`pack_into` and slice
assignment check every bound)."""
from __future__ import annotations

import ctypes
import time
from typing import Callable

from wasmtime import _ffi as ffi
from wasmtime.component import ResourceAny, ResourceHost, _types

from ..deadlines import PastDeadline
from ..lazy import numpy as np
from . import layout
from .layout import ENTRY, ENTRY_VAL, NAME, VAL
from .types import case_of, holds_bytes, once, variant_cases

_VEC = layout.whole(layout.VEC)
_VARIANT = layout.whole(layout.VARIANT_PAYLOAD)
_POINTER = layout.whole(layout.POINTER)
_RESULT = layout.whole(layout.RESULT_PAYLOAD)
_NAME_AT = layout.payload(layout.VEC)  # a record entry's name, a flag
_F32 = layout.whole(layout.SCALAR_CODES["F32"])
_CHAR = layout.whole(layout.SCALAR_CODES["CHAR"])
Writer = Callable[["Arena", object, bytearray, int], None]
# list elements written between looks at the call's deadline
_LOOK_EVERY = 256


class Arena:
    """The memory of one call's arguments: blocks that never move (each pinned by a
    ctypes view while it lives), the resource pointers to delete after the call, and the
    call's deadline (time.monotonic(); None: none), which a long list looks at as it is
    written (`PastDeadline`)."""

    __slots__ = ("store", "blocks", "block", "base", "used", "resources", "deadline")

    def __init__(self, store, size: int = 4096, deadline: float | None = None):
        self.store, self.deadline = store, deadline
        self.blocks: list = []
        self.resources: list = []
        self._grow(size)

    def _grow(self, size: int) -> None:
        self.block = bytearray(size)
        pinned = (ctypes.c_char * size).from_buffer(self.block)  # also keeps it from being resized
        self.blocks.append(pinned)
        self.base, self.used = ctypes.addressof(pinned), 0

    def take(self, n: int) -> tuple[bytearray, int, int]:
        """(block, offset, address) of `n` bytes, 8-aligned, the address never 0."""
        if self.used + n > len(self.block):
            self._grow(max(n, 2 * len(self.block)))
        at = self.used
        self.used = at + ((n + 7) & ~7)
        return self.block, at, self.base + at

    def release(self) -> None:
        for pointer in self.resources:
            ffi.wasmtime_component_resource_any_delete(pointer)
        self.resources.clear()


def lower(store, param_types: list, params: list, deadline: float | None = None):
    """The C array of `params` and the Arena it points into (keep it until the call
    returns, then `release` it), or None where a type is one this does not write.
    `PastDeadline` where the call's `deadline` comes first (500,000 values: ~0.4 s)."""
    writers = [writer(ty) for ty in param_types]
    if None in writers:
        return None
    arena = Arena(store, deadline=deadline)
    n = len(params)
    block, offset, _ = arena.take(n * VAL)
    try:
        for i, (write, value) in enumerate(zip(writers, params)):
            write(arena, value, block, offset + i * VAL)
    except BaseException:
        arena.release()
        raise
    return (ffi.wasmtime_component_val_t * n).from_buffer(block, offset), arena


def give(store, ty, value, result) -> bool:
    """A host function's `result` (the wasmtime_component_val_t wasmtime frees after the
    call) set to `value`: written here, then deep-copied into memory wasmtime owns with
    one `wasmtime_component_val_clone`. False where the type is one this does not write,
    or can hold list<u8>: its 32-byte value per byte, written twice, would cost twice
    stock lowering's one strided fill of wasmtime's own vector (4 MiB: 146 against 69 ms)."""
    write = writer(ty)
    if write is None or holds_bytes(ty):
        return False
    if type(ty) in layout.SCALAR_TYPES:  # nothing on the heap: written in place, no arena or clone (~6 us a call)
        write(None, value, (ctypes.c_char * VAL).from_address(ctypes.addressof(result.contents)), 0)
        return True
    arena = Arena(store)
    try:
        block, offset, address = arena.take(VAL)
        write(arena, value, block, offset)
        ffi.wasmtime_component_val_clone(ctypes.cast(address, ctypes.POINTER(ffi.wasmtime_component_val_t)), result)
    finally:
        arena.release()
    return True


def writer(ty) -> Writer | None:
    return once(ty, "_wasinn_writer", _make)


def _name(text: str) -> tuple[int, int, object]:
    """(size, address, owner) of a name's UTF-8 bytes, for as long as owner lives."""
    encoded = text.encode()
    owner = ctypes.create_string_buffer(encoded, max(1, len(encoded)))
    return len(encoded), ctypes.addressof(owner), owner


def _make(ty) -> Writer | None:
    kind = layout.kind_of(ty)
    if kind in ("F32", "CHAR"):
        return _f32 if kind == "F32" else _char
    if kind in layout.SCALAR_CODES:
        pack, k, boolean = layout.whole(layout.SCALAR_CODES[kind]).pack_into, getattr(layout, kind), kind == "BOOL"

        def scalar(arena, value, block, at):
            if boolean and not isinstance(value, bool):
                raise TypeError("expected bool for Bool type")
            pack(block, at, k, value)
        return scalar
    make = _MAKERS.get(kind)
    return None if make is None else make(ty)


def _f32(arena, value, block, at):
    try:
        _F32.pack_into(block, at, layout.F32, value)
    except OverflowError:  # as C's double-to-float conversion (stock's ctypes) rounds it: to infinity
        _F32.pack_into(block, at, layout.F32, float("inf") if value > 0 else float("-inf"))


def _char(arena, value, block, at):
    if not isinstance(value, str) or len(value) != 1:
        raise TypeError("expected a one-character str for Char type")
    code = ord(value)
    if 0xD800 <= code <= 0xDFFF:  # no Unicode scalar value: wasmtime would panic on it
        raise ValueError(f"{value!r} is a surrogate, not a Unicode scalar value a char can hold")
    _CHAR.pack_into(block, at, layout.CHAR, code)


def _string(arena, value, block, at):
    if not isinstance(value, str):
        raise TypeError("expected string type")
    data = value.encode()
    n = len(data)
    dest, offset, address = arena.take(n)
    dest[offset:offset + n] = data
    _VEC.pack_into(block, at, layout.STRING, n, address)


def _bytes(arena, value, block, at):
    data = layout.bytes_view(value)
    if data is None:
        raise TypeError(f"expected bytes for list<u8>, got {type(value).__name__}")
    n = len(data)
    dest, offset, address = arena.take(n * VAL)
    if n:
        layout.put_bytes(np.frombuffer(dest, np.uint8, n * VAL, offset), data)
    _VEC.pack_into(block, at, layout.LIST, n, address)


def _list(ty) -> Writer | None:
    element = writer(ty.element)
    if element is None:
        return None

    def listed(arena, value, block, at):
        if not isinstance(value, list):
            raise TypeError("expected list value")
        n = len(value)
        dest, offset, address = arena.take(n * VAL)
        deadline = arena.deadline
        for i, item in enumerate(value):
            if deadline is not None and i % _LOOK_EVERY == _LOOK_EVERY - 1 and time.monotonic() > deadline:
                raise PastDeadline
            element(arena, item, dest, offset + i * VAL)
        _VEC.pack_into(block, at, layout.LIST, n, address)
    return listed


def _tuple(ty) -> Writer | None:
    elements = [writer(t) for t in ty.elements]
    if None in elements:
        return None
    n = len(elements)

    def tupled(arena, value, block, at):
        if not isinstance(value, tuple):
            raise TypeError("expected tuple type")
        if len(value) != n:
            raise TypeError("tuple length mismatch")
        dest, offset, address = arena.take(n * VAL)
        for i, (write, item) in enumerate(zip(elements, value)):
            write(arena, item, dest, offset + i * VAL)
        _VEC.pack_into(block, at, layout.TUPLE, n, address)
    return tupled


def _record(ty) -> Writer | None:
    fields = []
    for name, t in ty.fields:
        write = writer(t)
        if write is None:
            return None
        fields.append((name, *_name(name), write))
    n = len(fields)

    def record(arena, value, block, at):
        dest, offset, address = arena.take(n * ENTRY)
        for name, size, name_at, _owner, write in fields:
            _NAME_AT.pack_into(dest, offset, size, name_at)
            write(arena, getattr(value, name), dest, offset + ENTRY_VAL)
            offset += ENTRY
        _VEC.pack_into(block, at, layout.RECORD, n, address)
    return record


def _variant_like(ty) -> Writer | None:
    cases = {}
    for name, t, _classes in variant_cases(ty)[1]:
        write = None if t is None else writer(t)
        if t is not None and write is None:
            return None
        cases[name] = (*_name(name), write)
    cls = type(ty)

    def variant_like(arena, value, block, at):
        name, _, payload = case_of(ty, value)
        size, name_at, _owner, write = cases[name]
        pointer = 0
        if write is not None:
            dest, offset, pointer = arena.take(VAL)
            write(arena, payload, dest, offset)
        if cls is _types.VariantType:
            _VARIANT.pack_into(block, at, layout.VARIANT, size, name_at, pointer)
        elif cls is _types.OptionType:
            _POINTER.pack_into(block, at, layout.OPTION, pointer)
        else:
            _RESULT.pack_into(block, at, layout.RESULT, name == "ok", pointer)
    return variant_like


def _named(ty) -> Writer:
    """An enum (one name) or flags (a set of names): the type's names encoded once, any
    other str (which wasmtime refuses in the call, as with stock lowering) encoded here."""
    known = {name: _name(name) for name in ty.names}
    flags = type(ty) is _types.FlagsType

    def located(arena, name):
        if not isinstance(name, str):
            raise TypeError("expected set of strings for Flags type" if flags else "expected str type")
        if name in known:
            return known[name][:2]
        data = name.encode()
        dest, offset, address = arena.take(len(data))
        dest[offset:offset + len(data)] = data
        return len(data), address

    def named(arena, value, block, at):
        if not flags:
            _VEC.pack_into(block, at, layout.ENUM, *located(arena, value))
            return
        if not isinstance(value, set):
            raise TypeError("expected set type for Flags type")
        dest, offset, address = arena.take(len(value) * NAME)
        for i, name in enumerate(value):
            _NAME_AT.pack_into(dest, offset + i * NAME, *located(arena, name))
        _VEC.pack_into(block, at, layout.FLAGS, len(value), address)
    return named


def _resource(own: bool) -> Writer:
    def resource(arena, value, block, at):
        if isinstance(value, ResourceAny):
            pointer = value._consume() if own else ffi.wasmtime_component_resource_any_clone(value.ptr())
        elif isinstance(value, ResourceHost):
            pointer = value.to_any(arena.store)._consume()
        else:
            raise TypeError("expected ResourceAny or ResourceHost for Own type")
        arena.resources.append(pointer)
        _POINTER.pack_into(block, at, layout.RESOURCE, ctypes.cast(pointer, ctypes.c_void_p).value)
    return resource


_MAKERS = {"STRING": lambda ty: _string, "BYTES": lambda ty: _bytes, "LIST": _list, "RECORD": _record,
           "TUPLE": _tuple, "VARIANT": _variant_like, "OPTION": _variant_like, "RESULT": _variant_like,
           "ENUM": _named, "FLAGS": _named, "RESOURCE": lambda ty: _resource(type(ty) is _types.OwnType)}

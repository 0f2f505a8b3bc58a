"""Values a guest hands the host (an export's result, a host function's arguments) read
out of wasmtime's C values, without freeing them piece by piece.

Stock lifting (`convert_from_c`, even as patches.py speeds it up) walks a value through
ctypes field by field, deleting each piece as it goes: ~60 us for a data-flow message
an operator returns. Here each array of the tree (a record's entries, a list's values,
a variant's payload, a string's bytes) is copied out with one `ctypes.string_at` and
unpacked with `struct`, and the tree is left whole for its owner to free at once: an
export's result with `wasmtime_component_val_delete` (calls.py), a host function's
arguments by wasmtime when the function returns (it drops what it passed). The Python
values are stock's: `Record`s with the type's fields, `Variant`s where the type is
tagged, bytes for list<u8>, `ResourceAny`s that own their handles (their slots in the
tree are marked bool once taken, as stock does, so the owner's free leaves them).

The bounds are stock's as patches.py bounds it (`bounded`, `budget` here): every list but
list<u8> takes its length from the call's budget and every string its bytes, before
either is copied, and the deadline is looked at as they are taken. A reader is made
once per type and kept on the type object; a type this does not read (future, stream,
error-context) is left to stock lifting."""
from __future__ import annotations

import ctypes
from typing import Callable

from wasmtime import _ffi as ffi
from wasmtime.component import ResourceAny, Variant, _types

from . import layout
from .layout import ENTRY, ENTRY_VAL, NAME, PAYLOAD, VAL
from .types import is_tagged, once

_VEC = layout.payload(layout.VEC)
_VARIANT = layout.payload(layout.VARIANT_PAYLOAD)
_POINTER = layout.payload(layout.POINTER)
_RESULT = layout.payload(layout.RESULT_PAYLOAD)
# list<u8> at least this long is read in place by numpy (a 32-byte value per byte: no copy of all of it)
_IN_PLACE = 4096

# reads the value at data[at:at + 32], whose own bytes sit at `address`, taking from
# `budget` (patches._Lift; None: unbounded)
Reader = Callable[[bytes, int, int, object], object]


def read(reader: Reader, value, budget) -> object:
    """The Python value of `value` (a wasmtime_component_val_t), by its type's reader."""
    address = ctypes.addressof(value)
    return reader(ctypes.string_at(address, VAL), 0, address, budget)


def reader(ty) -> Reader | None:
    return once(ty, "_wasinn_reader", _make)


def _make(ty) -> Reader | None:
    kind = layout.kind_of(ty)
    if kind in layout.SCALAR_CODES:
        unpack, char = layout.payload(layout.SCALAR_CODES[kind]).unpack_from, kind == "CHAR"

        def scalar(data, at, address, budget):
            value = unpack(data, at + PAYLOAD)[0]
            return chr(value) if char else value
        return scalar
    make = _MAKERS.get(kind)
    return None if make is None else make(ty)


def _text(ty) -> Reader:
    """A string (its bytes taken from the budget first) or an enum's case name."""
    budgeted = type(ty) is _types.String

    def text(data, at, address, budget):
        size, where = _VEC.unpack_from(data, at + PAYLOAD)
        if budgeted and budget is not None:
            budget.take_text(size)
        return ctypes.string_at(where, size).decode() if size else ""
    return text


def _bytes(data, at, address, budget):
    n, where = _VEC.unpack_from(data, at + PAYLOAD)
    if not n:
        return b""
    if n < _IN_PLACE:
        return ctypes.string_at(where, n * VAL)[PAYLOAD::VAL]
    return layout.bytes_of(layout.cells(where, n))


def _list(ty) -> Reader | None:
    element = reader(ty.element)
    if element is None:
        return None

    def listed(data, at, address, budget):
        n, where = _VEC.unpack_from(data, at + PAYLOAD)
        if budget is not None:
            budget.take(n)
        items = ctypes.string_at(where, n * VAL) if n else b""
        out = []
        for i in range(n):
            if budget is not None and i & 1023 == 1023:
                budget.in_time()
            out.append(element(items, i * VAL, where + i * VAL, budget))
        return out
    return listed


def _tuple(ty) -> Reader | None:
    elements = [reader(t) for t in ty.elements]
    if None in elements:
        return None

    def tupled(data, at, address, budget):
        n, where = _VEC.unpack_from(data, at + PAYLOAD)
        items = ctypes.string_at(where, n * VAL)
        return tuple(element(items, i * VAL, where + i * VAL, budget) for i, element in zip(range(n), elements))
    return tupled


def _record(ty) -> Reader | None:
    fields = [(name, reader(t)) for name, t in ty.fields]
    if any(field is None for _, field in fields):
        return None

    def record(data, at, address, budget):
        n, where = _VEC.unpack_from(data, at + PAYLOAD)
        entries = ctypes.string_at(where, n * ENTRY)
        out = _types.Record()
        for i, (name, field) in zip(range(n), fields):  # in the type's order, which is wasmtime's
            offset = i * ENTRY + ENTRY_VAL
            setattr(out, name, field(entries, offset, where + offset, budget))
        return out
    return record


def _variant_like(ty) -> Reader | None:
    tagged, readers = is_tagged(ty), {}
    for name, t in ty._cases():
        read = None if t is None else reader(t)
        if t is not None and read is None:
            return None
        readers[name] = read
    cls = type(ty)
    by_name = {name.encode(): name for name in readers}

    def variant_like(data, at, address, budget):
        if cls is _types.VariantType:
            size, where, pointer = _VARIANT.unpack_from(data, at + PAYLOAD)
            name = by_name.get(ctypes.string_at(where, size))
            if name is None:
                raise ValueError("a variant case not of its type")
        elif cls is _types.OptionType:
            pointer = _POINTER.unpack_from(data, at + PAYLOAD)[0]
            name = "some" if pointer else "none"
        else:
            ok, pointer = _RESULT.unpack_from(data, at + PAYLOAD)
            name = "ok" if ok else "err"
        read = readers[name]
        if read is None:
            return Variant(name) if tagged else None
        payload = read(ctypes.string_at(pointer, VAL), 0, pointer, budget)
        return Variant(name, payload) if tagged else payload
    return variant_like


def _flags(data, at, address, budget):
    n, where = _VEC.unpack_from(data, at + PAYLOAD)
    names = ctypes.string_at(where, n * NAME)
    return {ctypes.string_at(p, size).decode() for size, p in _VEC.iter_unpack(names)}


def _resource(data, at, address, budget):
    pointer = _POINTER.unpack_from(data, at + PAYLOAD)[0]
    ctypes.memset(address, layout.BOOL, 1)  # taken: the tree's delete leaves it to the ResourceAny
    return ResourceAny._from_ptr(ctypes.cast(pointer, ctypes.POINTER(ffi.wasmtime_component_resource_any_t)))


_MAKERS = {"STRING": _text, "ENUM": _text, "BYTES": lambda ty: _bytes, "LIST": _list, "RECORD": _record,
           "TUPLE": _tuple, "VARIANT": _variant_like, "OPTION": _variant_like, "RESULT": _variant_like,
           "FLAGS": lambda ty: _flags, "RESOURCE": lambda ty: _resource}

"""wasmtime's C component values as lowering.py writes them and lifting.py reads them:
a `wasmtime_component_val_t` is a kind byte, then its payload at PAYLOAD; a record's
entries are a name and a value; names and strings are (size, data) byte vectors.
tests/embedding/test_embedding.py pins each struct's layout and each kind's number."""
from __future__ import annotations

import ctypes
import struct

from wasmtime import _ffi as ffi
from wasmtime.component import _types

from ..lazy import numpy as np

VAL = ctypes.sizeof(ffi.wasmtime_component_val_t)
PAYLOAD = ffi.wasmtime_component_val_t.of.offset
ENTRY = ctypes.sizeof(ffi.wasmtime_component_valrecord_entry_t)
ENTRY_VAL = ffi.wasmtime_component_valrecord_entry_t.val.offset
NAME = ctypes.sizeof(ffi.wasm_byte_vec_t)

BOOL, S8, U8 = ffi.WASMTIME_COMPONENT_BOOL.value, ffi.WASMTIME_COMPONENT_S8.value, ffi.WASMTIME_COMPONENT_U8.value
S16, U16 = ffi.WASMTIME_COMPONENT_S16.value, ffi.WASMTIME_COMPONENT_U16.value
S32, U32 = ffi.WASMTIME_COMPONENT_S32.value, ffi.WASMTIME_COMPONENT_U32.value
S64, U64 = ffi.WASMTIME_COMPONENT_S64.value, ffi.WASMTIME_COMPONENT_U64.value
F32, F64 = ffi.WASMTIME_COMPONENT_F32.value, ffi.WASMTIME_COMPONENT_F64.value
CHAR, STRING = ffi.WASMTIME_COMPONENT_CHAR.value, ffi.WASMTIME_COMPONENT_STRING.value
LIST, RECORD = ffi.WASMTIME_COMPONENT_LIST.value, ffi.WASMTIME_COMPONENT_RECORD.value
TUPLE, VARIANT = ffi.WASMTIME_COMPONENT_TUPLE.value, ffi.WASMTIME_COMPONENT_VARIANT.value
ENUM, OPTION = ffi.WASMTIME_COMPONENT_ENUM.value, ffi.WASMTIME_COMPONENT_OPTION.value
RESULT, FLAGS = ffi.WASMTIME_COMPONENT_RESULT.value, ffi.WASMTIME_COMPONENT_FLAGS.value
RESOURCE = ffi.WASMTIME_COMPONENT_RESOURCE.value

# payloads, by struct format: a scalar's; a byte vector (a string, enum, list, record's
# entries, tuple, flags: size, data); a variant's (its case name's vector, its payload
# pointer or 0); an option's payload pointer or 0, a resource's pointer; a result's
# (is_ok, its payload pointer or 0)
SCALAR_CODES = {"BOOL": "?", "S8": "b", "U8": "B", "S16": "h", "U16": "H", "S32": "i", "U32": "I", "S64": "q",
                "U64": "Q", "F32": "f", "F64": "d", "CHAR": "I"}
VEC, VARIANT_PAYLOAD, POINTER, RESULT_PAYLOAD = "QQ", "QQQ", "Q", "?7xQ"
_KINDS = {_types.Bool: "BOOL", _types.S8: "S8", _types.U8: "U8", _types.S16: "S16", _types.U16: "U16",
          _types.S32: "S32", _types.U32: "U32", _types.S64: "S64", _types.U64: "U64", _types.F32: "F32",
          _types.F64: "F64", _types.Char: "CHAR", _types.String: "STRING", _types.ListType: "LIST",
          _types.RecordType: "RECORD", _types.TupleType: "TUPLE", _types.VariantType: "VARIANT",
          _types.EnumType: "ENUM", _types.OptionType: "OPTION", _types.ResultType: "RESULT",
          _types.FlagsType: "FLAGS", _types.OwnType: "RESOURCE", _types.BorrowType: "RESOURCE"}
SCALAR_TYPES = frozenset(t for t, k in _KINDS.items() if k in SCALAR_CODES)  # values with nothing on the heap


def kind_of(ty) -> str | None:
    """The kind a value of `ty` has in the C API ("BOOL" ... "RESOURCE", "BYTES" for
    list<u8>, whose values lowering.py and lifting.py move at once); None for what neither
    handles (future, stream, error-context)."""
    kind = _KINDS.get(type(ty))
    return "BYTES" if kind == "LIST" and ty._is_bytes() else kind


def whole(payload: str) -> struct.Struct:
    """A value: its kind (the first field), then `payload` at PAYLOAD."""
    return struct.Struct(f"<B{PAYLOAD - 1}x{payload}")


def payload(payload: str) -> struct.Struct:
    """A value's payload alone, read at PAYLOAD."""
    return struct.Struct(f"<{payload}")


def check() -> None:
    """What wasinn writes and reads assumes these; patches.install calls it first."""
    if (VAL, PAYLOAD, ENTRY, ENTRY_VAL, NAME) != (32, 8, 48, 16, 16):
        raise RuntimeError(f"unexpected wasmtime value layout ({VAL}, {PAYLOAD}, {ENTRY}, {ENTRY_VAL}, {NAME}); "
                           "wasinn needs the exact wasmtime version it pins")


def bytes_view(value):
    """A list<u8>'s value (bytes, bytearray, memoryview or a numpy array) as uint8, or None."""
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value).reshape(-1).view(np.uint8)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return np.frombuffer(value, np.uint8)
    return None


def cells(address: int, n: int):
    """The bytes of `n` values at `address`, as a numpy array over them (no copy)."""
    return np.ctypeslib.as_array(ctypes.cast(address, ctypes.POINTER(ctypes.c_uint8)), (n * VAL,))


def put_bytes(values, data) -> None:
    """Writes `data` (uint8) as list<u8>'s values into `values` (their bytes, numpy):
    one 32-byte value per byte, by two strided copies (~15x stock's one object per byte)."""
    values[0::VAL] = U8
    values[PAYLOAD::VAL] = data


def bytes_of(values) -> bytes:
    """The bytes a list<u8>'s values (their bytes, numpy) hold."""
    return values[PAYLOAD::VAL].tobytes()

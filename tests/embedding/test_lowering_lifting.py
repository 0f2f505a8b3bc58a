"""embedding/lowering.py and embedding/lifting.py: an export's arguments (and a host
function's result) written into one buffer, and an export's result (and a host
function's arguments) read out of wasmtime's C values.

Values of every WIT kind go through a real guest and back (guest/values echoes each),
drawn by hypothesis; the trees lowering.py writes read back as the values they came
from, and so do stock wasmtime-py's trees, read by lifting.py and by stock lifting
alike; the layout these write and read is the one wasmtime-py declares."""
from __future__ import annotations

import ctypes
import math

import pytest
from hypothesis import given, settings, strategies as st
from wasmtime import _ffi as ffi
from wasmtime.component import Record, Variant

import wasinn
from support.repo import CACHE, ROOT
from wasinn.embedding import layout, lifting, lowering

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")


@pytest.fixture(scope="module")
def values():
    from wasinn import build
    wasm = build.build_cached(build.guest_files(ROOT / "guest" / "values"), name="values",
                              world="example:values/values", wit="values.wit", cache_dir=CACHE, progress=print)
    host = wasinn.Host(cache_dir=CACHE)
    with host.instantiate(host.load_component(wasm)) as inst:
        yield inst


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_f32 = st.floats(width=32, allow_nan=False)
_point = st.builds(lambda x, y, label: {"x": x, "y": y, "label": label},
                   st.integers(-2**15, 2**15 - 1), st.integers(-2**15, 2**15 - 1), st.none() | _text)
KINDS = {
    "echo-bool": st.booleans(),
    "echo-s8": st.integers(-128, 127),
    "echo-u16": st.integers(0, 2**16 - 1),
    "echo-s64": st.integers(-2**63, 2**63 - 1),
    "echo-f32": _f32,
    "echo-f64": st.floats(allow_nan=False),
    "echo-char": st.characters(exclude_categories=["Cs"]),
    "echo-string": _text,
    "echo-bytes": st.binary(max_size=5000),
    "echo-color": st.sampled_from(["red", "green", "blue"]),
    "echo-perms": st.sets(st.sampled_from(["read", "write", "exec"])),
    "echo-shape": st.sampled_from([Variant("dot")]) | st.builds(Variant, st.just("circle"), _f32)
                  | st.builds(Variant, st.just("square"), st.integers(0, 2**32 - 1)),
    "echo-option": st.none() | st.integers(0, 2**32 - 1),
    "echo-result": st.builds(Variant, st.just("ok"), st.integers(0, 2**32 - 1))
                   | st.builds(Variant, st.just("err"), _text),
    "echo-points": st.lists(_point, max_size=20),
    "echo-pair": st.tuples(_text, st.integers(0, 255)),
}


def _same(a, b) -> bool:
    if isinstance(a, Record):
        return isinstance(b, Record) and vars(a).keys() == vars(b).keys() and all(
            _same(v, getattr(b, k)) for k, v in vars(a).items())
    if isinstance(a, Variant):
        return isinstance(b, Variant) and a.tag == b.tag and _same(a.payload, b.payload)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return isinstance(b, float) and (a == b or math.isnan(a) and math.isnan(b)) and \
            math.copysign(1, a) == math.copysign(1, b)
    return type(a) is type(b) and a == b


def _expected(export, value):
    if export == "echo-points":
        return [_record(p) for p in value]
    if export == "echo-f32":
        return float(ctypes.c_float(value).value)
    if export == "echo-shape" and value.tag == "circle":
        return Variant("circle", float(ctypes.c_float(value.payload).value))
    return value


def _record(fields: dict) -> Record:
    r = Record()
    for k, v in fields.items():
        setattr(r, k, v)
    return r


@pytest.mark.parametrize("export", sorted(KINDS))
def test_every_kind_goes_to_a_guest_and_back_unchanged(values, export):
    @settings(max_examples=40, deadline=None, database=None)
    @given(KINDS[export])
    def check(value):
        back = values.call(export, value)
        assert _same(back, _expected(export, value)), (value, back)
    check()


def _function(values, export):
    store = values._ensure()
    return values._func(store, export)[1], store


@pytest.mark.parametrize("export", sorted(KINDS))
def test_lowering_and_stock_lowering_write_trees_that_read_back_the_same(values, export):
    """lowering.py's tree, stock `convert_to_c`'s, each read by lifting.py, stock's read
    by stock `convert_from_c` too, and lowering.py's cloned into wasmtime's memory as a
    host function's result is: the same value four times."""
    ftype, store = _function(values, export)
    ty = ftype.param_types[0]
    read = lifting.reader(ty)

    @settings(max_examples=25, deadline=None, database=None)
    @given(KINDS[export])
    def check(value):
        from wasinn.abi import values as wasm_values
        value = wasm_values.to_wasm(ty, value, None, "v")
        args, arena = lowering.lower(store, [ty], [value])
        try:
            ours = lifting.read(read, args[0], None)
        finally:
            arena.release()
        stock = ffi.wasmtime_component_val_t()
        ty.convert_to_c(store, value, ctypes.pointer(stock))
        try:
            read_by_us = lifting.read(read, stock, None)
        finally:
            ffi.wasmtime_component_val_delete(ctypes.byref(stock))
        stock = ffi.wasmtime_component_val_t()
        ty.convert_to_c(store, value, ctypes.pointer(stock))
        read_by_stock = ty.convert_from_c(stock)
        given = ffi.wasmtime_component_val_t()  # as a host function's result: cloned into wasmtime's memory
        if lowering.give(store, ty, value, ctypes.pointer(given)):
            try:
                cloned = lifting.read(read, given, None)
            finally:
                ffi.wasmtime_component_val_delete(ctypes.byref(given))
        else:  # bytes: left to stock lowering (`give`)
            assert export == "echo-bytes"
            cloned = ours
        assert _same(ours, read_by_us) and _same(ours, read_by_stock) and _same(ours, cloned), (
            value, ours, read_by_us, read_by_stock, cloned)
    check()


def test_a_surrogate_char_is_refused_before_wasmtime_would_abort_on_it(values):
    ftype, store = _function(values, "echo-char")
    with pytest.raises(ValueError, match="surrogate"):
        lowering.lower(store, ftype.param_types, ["\ud800"])
    with pytest.raises(wasinn.BadValue, match="surrogate"):
        values.call("echo-char", "\udfff")
    assert values.call("echo-char", "é") == "é"


def test_the_layout_is_the_one_wasmtime_py_declares():
    val, union = ffi.wasmtime_component_val_t, ffi.wasmtime_component_valunion_t
    assert (layout.VAL, layout.PAYLOAD) == (ctypes.sizeof(val), val.of.offset)
    entry = ffi.wasmtime_component_valrecord_entry_t
    assert (layout.ENTRY, layout.ENTRY_VAL, layout.NAME) == (ctypes.sizeof(entry), entry.val.offset,
                                                           ctypes.sizeof(ffi.wasm_byte_vec_t))
    assert ctypes.sizeof(union) == layout.VAL - layout.PAYLOAD
    # each payload format against the union member it stands for
    vec = layout.payload(layout.VEC)
    for member in ("string", "list", "record", "tuple", "enumeration", "flags"):
        struct_type = dict((n, t) for n, t, *_ in union._fields_)[member]
        assert [f.offset for f in (getattr(struct_type, n) for n, *_ in struct_type._fields_)] == [0, 8]
        assert ctypes.sizeof(struct_type) == vec.size
    variant = ffi.wasmtime_component_valvariant_t
    assert (variant.discriminant.offset, variant.val.offset, ctypes.sizeof(variant)) == (
        0, 16, layout.payload(layout.VARIANT_PAYLOAD).size)
    result = ffi.wasmtime_component_valresult_t
    assert (result.is_ok.offset, result.val.offset, ctypes.sizeof(result)) == (
        0, 8, layout.payload(layout.RESULT_PAYLOAD).size)
    for member in ("option", "resource"):
        assert dict((n, t) for n, t, *_ in union._fields_)[member]._type_  # a pointer, 8 bytes
    for name, code in layout.SCALAR_CODES.items():
        member = {"BOOL": "boolean", "CHAR": "character"}.get(name, name.lower())
        assert ctypes.sizeof(dict((n, t) for n, t, *_ in union._fields_)[member]) == layout.payload(code).size


def test_writing_a_long_list_stops_at_the_calls_deadline(values):
    """An export's arguments are written under the call's deadline: half a million values
    took ~0.4 s to write, all of it past the deadline of a call whose arguments were
    still being made when it came."""
    import time

    from wasinn.deadlines import PastDeadline
    ftype, store = _function(values, "echo-points")
    points = [_record({"x": 1, "y": 2, "label": None})] * 1000
    with pytest.raises(PastDeadline):
        lowering.lower(store, ftype.param_types, [points], deadline=time.monotonic() - 1)
    args, arena = lowering.lower(store, ftype.param_types, [points], deadline=time.monotonic() + 60)
    arena.release()
    assert len(values.call("echo-points", [{"x": 1, "y": 2, "label": "a"}])) == 1

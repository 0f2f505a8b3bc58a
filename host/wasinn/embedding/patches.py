"""Speed-ups for wasmtime-py 50's generic component-value path, exact to the bit.

1. `list<u8>`: stock wasmtime-py converts one Python object per byte (~1.4 us/byte).
   The C API still wants one 32-byte `wasmtime_component_val_t` per element, but numpy
   can fill or read that array with strided copies, ~15x faster. (Large payloads take
   the bulk path of fastpath.py instead; this is the floor for the standard path.)
2. Types: wasmtime-py rebuilds Python type objects on every access (a list's element
   type, a record's fields, a host function's parameter types on every call): ~36 type
   objects per small host call. Types never change, so they are computed once, and so
   is what lowering a variant, option or result asks of them on every value: whether
   its cases need a tag, and the Python classes each case's payload can be (1.7 ->
   0.1 us per result a host function returns, timeit).
3. Lists and strings a guest hands the host (a host function's arguments, an export's
   result) are bounded before Python objects are made of them (`bound_lifts`): a list
   parameter with a check of its own (a tensor's dimensions, graph.load's builders) is
   lifted only once its length passes it; every list but list<u8> counts its elements
   against a budget per call, and every string its bytes against another, and the
   call's deadline is looked at as they are lifted (stock wasmtime-py made ~1 KB and
   ~15 us of Python objects of each of the 2.8 million values wasmtime's own cap lets
   through: 450,000 user properties held a call 7 s past a 1 s deadline; and copied
   and decoded a 128 MiB string holding the GIL: +400 MB at peak, another thread held 69 ms).
4. Records and variants: stock wasmtime-py encodes every field name and case name into
   a fresh C string through two ctypes copies, and decodes each one coming back (the
   field names only to assert them); here the names are encoded once per type, copied
   with one memmove, and the fields of a lifted record are taken in the type's order,
   which is the order wasmtime gives them in (a snapshot data-model and its result:
   ~30 names a call).
5. Core modules' host functions (wasi_ephemeral_nn): stock wasmtime-py wraps each i32
   parameter in a `Val` and each i32 result in a new `ValType` and `Val` on every call;
   here i32s are read and written in place, everything else takes the stock way.

Most values no longer take these paths: lowering.py writes an export's arguments and a
host function's result, lifting.py reads an export's result and a host function's
arguments. What is left to stock (a host function's result that can hold list<u8>, a
type neither handles) takes the replacements here, and every lift keeps point 3's budget.

Installed once by `wasinn.runtime`; wasmtime is pinned to the exact version whose
layout and internals this relies on, and `install()` checks the layout first. The stock
functions replaced or copied here are fingerprinted by tests/embedding/test_embedding.py.
"""
from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections.abc import Sequence
from typing import Callable, NamedTuple

from . import layout, lifting, lowering
from .types import case_of, holds, once, variant_cases
from wasmtime import StoreContext, Trap, Val, WasmtimeError
from wasmtime import _func, _linker as _core_linker
from wasmtime import _ffi as ffi
from wasmtime.component import _linker, _types
from wasmtime.component._enter import catch_exceptions

_LIST = ffi.WASMTIME_COMPONENT_LIST
_stock_to_c = _types.ListType.convert_to_c
_stock_from_c = _types.ListType.convert_from_c
_stock_string_from_c = _types.String.convert_from_c


def _to_c(self, store, val, ptr):
    if not self._is_bytes():
        return _stock_to_c(self, store, val, ptr)
    data = layout.bytes_view(val)
    if data is None:
        raise TypeError(f"expected bytes for list<u8>, got {type(val).__name__}")
    n = len(data)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, n)
    if n:
        layout.put_bytes(layout.cells(ctypes.cast(raw.data, ctypes.c_void_p).value, n), data)
    ptr.contents.kind = _LIST
    ptr.contents.of.list = raw


def _from_c(self, c):
    if not self._is_bytes():
        lift = getattr(_lifting, "lift", None)
        return _stock_from_c(self, c) if lift is None else _bounded_from_c(self, c, lift)
    try:
        return lifting.read(lifting.reader(self), c, None)
    finally:
        ffi.wasmtime_component_vallist_delete(ctypes.byref(c.of.list))


def _bounded_from_c(self, c, lift: "_Lift") -> list:
    """Stock `ListType.convert_from_c` of a list other than list<u8>, its length taken
    from the call's budget before any element is made, and the call's deadline looked
    at then and every 1,024 elements. A refusal frees the list's values; the vectors of
    those that already freed theirs are empty (wasmtime's deletes leave them so), so
    nothing is freed twice."""
    lst = c.of.list
    try:
        n = lst.size
        lift.take(n)
        element, data, out = self.element, lst.data, []
        for i in range(n):
            if i & 1023 == 1023:
                lift.in_time()
            raw = data[i]
            out.append(element.convert_from_c(raw))
            raw.kind = _BOOL
            raw.of.boolean = False
        return out
    finally:
        ffi.wasmtime_component_vallist_delete(ctypes.byref(lst))


def _string_from_c(self, c):
    """Stock `String.convert_from_c`, its bytes taken from the call's budget before
    they are copied and decoded; a refusal frees them (the vector is left empty)."""
    lift = getattr(_lifting, "lift", None)
    if lift is not None:
        try:
            lift.take_text(c.of.string.size)
        except WasmtimeError:
            ffi.wasm_byte_vec_delete(ctypes.byref(c.of.string))
            raise
    return _stock_string_from_c(self, c)


def _memoized(cls, name: str) -> None:
    compute = getattr(cls, name).fget

    def get(self):
        return once(self, name, compute)
    setattr(cls, name, property(get, doc=getattr(cls, name).__doc__))


def _tagged(self) -> bool:
    return variant_cases(self)[0]


def _lower(self, store, val):
    """Stock `VariantLikeType._lower` on the memoized cases."""
    name, ty, payload = case_of(self, val)
    if ty is None:
        return (name, None)
    raw = ffi.wasmtime_component_val_t()
    ty.convert_to_c(store, payload, ctypes.pointer(raw))
    return (name, ffi.wasmtime_component_val_new(ctypes.byref(raw)))


def _c_name(name: str):
    """A name's UTF-8 bytes as the C array `_name_vec` copies from."""
    encoded = name.encode()
    return len(encoded), (ctypes.c_ubyte * len(encoded)).from_buffer_copy(encoded)


def _name_vec(c_name):
    """A C string wasmtime takes ownership of (a record's field name, a variant's tag)."""
    vec = ffi.wasm_byte_vec_t()
    ffi.wasm_byte_vec_new(ctypes.byref(vec), *c_name)
    return vec


def _record_fields(self) -> list:
    """(name, its C form for `_name_vec`, type) of each field of a record type."""
    return once(self, "_wasinn_fields", lambda ty: [(name, _c_name(name), t) for name, t in ty.fields])


def _record_to_c(self, store, val, ptr):
    """Stock `RecordType.convert_to_c` with names encoded once."""
    fields = _record_fields(self)
    raw = ffi.wasmtime_component_valrecord_t()
    ffi.wasmtime_component_valrecord_new_uninit(raw, len(fields))
    i = 0
    cleanup = True
    try:
        for name, c_name, ty in fields:
            entry = raw.data[i]
            ty.convert_to_c(store, getattr(val, name), ctypes.pointer(entry.val))
            entry.name = _name_vec(c_name)
            i += 1
        ptr.contents.kind = _RECORD
        ptr.contents.of.record = raw
        cleanup = False
    finally:
        if cleanup:
            for j in range(i, len(fields)):
                raw.data[j].val.kind = _BOOL
                raw.data[j].val.of.boolean = False
            ffi.wasmtime_component_valrecord_delete(ctypes.byref(raw))


def _record_from_c(self, c):
    """Stock `RecordType.convert_from_c` without decoding each field's name."""
    assert c.kind == _RECORD.value
    record = c.of.record
    try:
        ret = _types.Record()
        data = record.data
        for i, (name, _, ty) in zip(range(record.size), _record_fields(self)):
            field = data[i].val
            setattr(ret, name, ty.convert_from_c(field))
            field.kind = _BOOL
            field.of.boolean = False
        return ret
    finally:
        ffi.wasmtime_component_valrecord_delete(record)


def _tags(self) -> dict:
    """A variant type's case names to their C form for `_name_vec`, and their UTF-8 bytes back."""
    def compute(ty) -> dict:
        names = [name for name, _ in ty.cases]
        return {**{n: _c_name(n) for n in names}, **{n.encode(): n for n in names}}
    return once(self, "_wasinn_tags", compute)


def _variant_to_c(self, store, val, ptr):
    name, raw = _lower(self, store, val)
    ptr.contents.kind = _VARIANT
    ptr.contents.of.variant.discriminant = _name_vec(_tags(self)[name])
    ptr.contents.of.variant.val = raw


def _variant_from_c(self, c):
    assert c.kind == _VARIANT.value
    vec = c.of.variant.discriminant
    tag = _tags(self).get(ctypes.string_at(vec.data, vec.size))
    ffi.wasm_byte_vec_delete(ctypes.byref(vec))
    if tag is None:
        raise ValueError("a variant case not of its type")
    return self._lift(tag, c.of.variant.val)


_RECORD = ffi.WASMTIME_COMPONENT_RECORD
_VARIANT = ffi.WASMTIME_COMPONENT_VARIANT
_BOOL = ffi.WASMTIME_COMPONENT_BOOL


# (host function, store) -> (parameter types, result type, (index, name) of each list
# parameter that is not bytes, whether any parameter can hold such a list or a string). A store
# holds one component, whose import types are fixed, so the pair identifies the types;
# entries of a store are dropped when it closes (`forget_store`), before its address
# can be reused.
_CALL_TYPES: dict[tuple[int, int], tuple[list, object, list, bool]] = {}
# store -> what bounds the lists and strings its guest hands the host (`bound_lifts`)
_LIFT_BOUNDS: dict[int, "LiftBounds"] = {}
# the lift under way in this thread: a host call's arguments or an export's result
_lifting = threading.local()


class LiftBounds(NamedTuple):
    """What bounds the lists and strings a store's guest hands the host in one call.

    checks: a host function's list parameter, by WIT name, gets its length checked
        first and is lifted only if the check passes; otherwise the function gets an
        `Unlifted` stand-in (wasmtime has made one value per element by then, its
        hostcall fuel capping that at 2,796,202).
    max_elements: the elements of all the lists but list<u8> that one call's arguments
        or result may hold together, taken before each list's are made.
    max_string_bytes: the same for the bytes of its strings, taken before each is copied.
    deadline: `deadline()`, time.monotonic() when the store's call under way must end
        (None: no deadline), looked at as the elements are made.
    too_many(count), too_much_text(count), past_deadline(): the one-line refusals,
        raised as a `WasmtimeError`: the guest's call traps with them."""
    checks: dict[str, Callable[[int], None]]
    max_elements: int
    max_string_bytes: int
    deadline: Callable[[], float | None]
    too_many: Callable[[int], str]
    too_much_text: Callable[[int], str]
    past_deadline: Callable[[], str]


class _Lift:
    """The budget of one lift."""
    __slots__ = ("bounds", "left", "text_left", "until")

    def __init__(self, bounds: LiftBounds):
        self.bounds, self.until = bounds, bounds.deadline()
        self.left, self.text_left = bounds.max_elements, bounds.max_string_bytes

    # The deadline is looked at before lifting only what costs (~1 ms and more): a
    # guest whose host call gave up at the deadline returns its small result just past it.
    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise WasmtimeError(self.bounds.too_many(self.bounds.max_elements - self.left))
        if n >= 1024:
            self.in_time()

    def take_text(self, n: int) -> None:
        self.text_left -= n
        if self.text_left < 0:
            raise WasmtimeError(self.bounds.too_much_text(self.bounds.max_string_bytes - self.text_left))
        if n >= 1 << 20:
            self.in_time()

    def in_time(self) -> None:
        if self.until is not None and time.monotonic() > self.until:
            raise WasmtimeError(self.bounds.past_deadline())


def bound_lifts(context_address: int, bounds: LiftBounds) -> None:
    """Bounds what the guest of this store hands the host (`LiftBounds`)."""
    _LIFT_BOUNDS[context_address] = bounds


def holds_bounded(ty) -> bool:
    """Whether a value of `ty` can hold a list other than list<u8>, or a string."""
    return holds(ty, "bounded", _bounded)


def _bounded(ty) -> bool:
    return isinstance(ty, _types.String) or isinstance(ty, _types.ListType) and not ty._is_bytes()


# where nothing lifted can hold a list or string to bound (`holds_bounded`): no budget to set up
UNBOUNDED = contextlib.nullcontext()


class bounded:
    """Lists and strings lifted inside this (in this thread) take from one call's
    budget, where the store has bounds."""
    __slots__ = ("lift", "before")

    def __init__(self, context_address: int):
        bounds = _LIFT_BOUNDS.get(context_address)
        self.lift = None if bounds is None else _Lift(bounds)

    def __enter__(self) -> None:
        self.before = getattr(_lifting, "lift", None)
        _lifting.lift = self.lift

    def __exit__(self, *exc) -> None:
        _lifting.lift = self.before


def forget_store(context_address: int) -> None:
    for key in [k for k in _CALL_TYPES if k[1] == context_address]:
        del _CALL_TYPES[key]
    _LIFT_BOUNDS.pop(context_address, None)


class Unlifted(Sequence):
    """A list argument over its bound, never lifted: it has a length, and reading an
    element raises the check's refusal."""

    def __init__(self, length: int, refusal: Exception):
        self.length, self.refusal = length, refusal

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i):
        raise self.refusal


def _lift(ty, c, check, budget):
    """A host function's argument (lifting.py; stock lifting where it has no reader),
    left for wasmtime to free when the function returns."""
    if check is not None:
        lst = c.of.list
        try:
            check(lst.size)
        except Exception as refusal:
            n = lst.size
            ffi.wasmtime_component_vallist_delete(ctypes.byref(lst))
            return Unlifted(n, refusal)
    read = lifting.reader(ty)
    return ty.convert_from_c(c) if read is None else lifting.read(read, c, budget)


@ffi.wasmtime_component_func_callback_t
def _func_impl(idx, context, ty_raw, args, nargs, results, nresults):
    def run(store: StoreContext) -> None:
        address = ctypes.cast(context, ctypes.c_void_p).value
        key = (idx or 0, address)
        types = _CALL_TYPES.get(key)
        if types is None:
            with _types.FuncType._from_ptr(ty_raw, owner=store) as fty:
                lists = [(i, name) for i, (name, ty) in enumerate(fty.params)
                         if isinstance(ty, _types.ListType) and not ty._is_bytes()]
                types = _CALL_TYPES[key] = ([ty for _, ty in fty.params], fty.result, lists,
                                            any(holds_bounded(ty) for _, ty in fty.params))
        param_tys, result_ty, lists, lifts = types
        assert len(param_tys) == nargs and nresults == (result_ty is not None)
        budget = bounded(address) if lifts else UNBOUNDED
        with budget:
            bounds = _LIFT_BOUNDS.get(address) if lists else None
            checks = {i: bounds.checks.get(name) for i, name in lists} if bounds is not None and bounds.checks else {}
            budget = getattr(budget, "lift", None)
            params = [_lift(ty, args[i], checks.get(i), budget) for i, ty in enumerate(param_tys)]
        result = _linker.FUNCTIONS.get(idx or 0)(store, *params)
        if result_ty is not None and not lowering.give(store, result_ty, result, results):
            result_ty.convert_to_c(store, result, results)
    return catch_exceptions(context, run)


_I32 = ffi.WASMTIME_I32.value
_VAL_WORDS = ctypes.sizeof(ffi.wasmtime_val_t) // 4  # a core value, in u32 words
_I32_WORD = ffi.wasmtime_val_t.of.offset // 4  # where an i32 sits in it


class I32Host:
    """A core host function of i32 parameters and one i32 result, called with the
    caller and the parameters as u32s: `_core_trampoline` reads them as one array and
    writes the result in place, with no per-value objects (wasi-nn's WITX functions:
    after a large model's run every object a host call touches is a cache miss)."""

    __slots__ = ("func",)

    def __init__(self, func):
        self.func = func

    def __call__(self, caller, *args):  # stock wasmtime's trampoline: signed i32s
        return self.func(caller, *(a & 0xFFFFFFFF for a in args))


@ffi.wasmtime_func_callback_t
def _core_trampoline(idx, caller, params, nparams, results, nresults):
    """Stock `wasmtime._func.trampoline`, with an `I32Host`'s i32s in place (wasinn
    defines no other core host function; any other takes the stock way)."""
    caller = _func.Caller(caller)
    try:
        func, result_tys, access_caller = _func.FUNCTIONS.get(idx or 0)
        if type(func) is I32Host:
            words = (ctypes.c_uint32 * (_VAL_WORDS * nparams)).from_address(ctypes.addressof(params.contents)) \
                if nparams else ()
            result = results[0]
            result.kind = _I32
            result.of.i32 = func.func(caller, *words[_I32_WORD::_VAL_WORDS])
            return 0
        pyparams = [caller] if access_caller else []
        for i in range(nparams):
            pyparams.append(Val._from_raw(caller, params[i], owned=False).value)
        pyresults = func(*pyparams)
        if nresults == 0:
            if pyresults is not None:
                raise WasmtimeError("callback produced results when it shouldn't")
            return 0
        if nresults == 1:
            pyresults = (pyresults,)
        elif len(pyresults) != nresults:
            raise WasmtimeError("callback produced wrong number of results")
        for i, result in enumerate(pyresults):
            results[i] = Val._convert_to_raw(caller, result_tys[i], result)
        return 0
    except BaseException as e:
        _func.LAST_EXCEPTION = e
        trap = Trap("python exception")._consume()
        return ctypes.cast(trap, ctypes.c_void_p).value
    finally:
        caller._invalidate()


def install() -> None:
    layout.check()
    if _types.ListType.convert_to_c is _to_c:
        return
    _types.ListType.convert_to_c = _to_c
    _types.ListType.convert_from_c = _from_c
    _types.String.convert_from_c = _string_from_c
    for cls, names in ((_types.ListType, ["element"]), (_types.RecordType, ["fields"]),
                       (_types.TupleType, ["elements"]), (_types.VariantType, ["cases"]),
                       (_types.OptionType, ["payload"]), (_types.ResultType, ["ok", "err"]),
                       (_types.EnumType, ["names"]), (_types.FlagsType, ["names"])):
        for name in names:
            _memoized(cls, name)
    _types.VariantLikeType._tagged = _tagged
    _types.VariantLikeType._lower = _lower
    _types.RecordType.convert_to_c, _types.RecordType.convert_from_c = _record_to_c, _record_from_c
    _types.VariantType.convert_to_c, _types.VariantType.convert_from_c = _variant_to_c, _variant_from_c
    _linker.func_impl = _func_impl  # used by LinkerInstance.add_func from now on
    _core_linker.trampoline = _core_trampoline  # used by Linker.define_func from now on

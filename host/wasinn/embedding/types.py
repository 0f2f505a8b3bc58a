"""What a wasmtime-py component type is, where its public API does not say."""
from __future__ import annotations

from wasmtime import Engine
from wasmtime import _ffi as ffi
from wasmtime.component import ComponentInstanceType, ComponentType, ListType, Variant, _types

from ..errors import WasinnError


def is_bytes(ty) -> bool:
    """A `list<u8>`: lifted as, and lowered from, `bytes` (any buffer, with patches.py)."""
    return isinstance(ty, ListType) and ty._is_bytes()


def once(ty, key: str, compute):
    """`compute(ty)`, kept on the type object under `key`: a type never changes, and
    wasinn keeps the type objects it looked up once (a function's, a record's fields)."""
    try:
        return ty.__dict__[key]
    except KeyError:
        value = ty.__dict__[key] = compute(ty)
        return value


def holds(ty, what: str, leaf) -> bool:
    """Whether a value of `ty` can hold one of a type for which `leaf(type)` is true,
    looking inside lists, records, tuples and cases (worked out once per type and `what`)."""
    def compute(ty) -> bool:
        if leaf(ty):
            return True
        if isinstance(ty, ListType):
            return holds(ty.element, what, leaf)
        if isinstance(ty, _types.RecordType):
            return any(holds(t, what, leaf) for _, t in ty.fields)
        if isinstance(ty, _types.TupleType):
            return any(holds(t, what, leaf) for t in ty.elements)
        if isinstance(ty, _types.VariantLikeType):
            return any(t is not None and holds(t, what, leaf) for _, t in ty._cases())
        return False
    return once(ty, "_wasinn_holds_" + what, compute)


def holds_bytes(ty) -> bool:
    """Whether a value of `ty` can hold a list<u8>."""
    return holds(ty, "bytes", is_bytes)


def is_tagged(ty) -> bool:
    """Whether values of this variant, option or result are `Variant(tag, payload)`
    (else a payload stands for its case: an option's value or None, a result's...)."""
    return ty._tagged()


# stock, before patches.py memoizes it through variant_cases
_stock_tagged = _types.VariantLikeType._tagged


def variant_cases(self) -> tuple[bool, list]:
    """Whether the variant-like type needs a `Variant`, and its cases as (name, payload
    type, the classes a payload of that case can be) as stock `_lower` works them out."""
    def compute(self) -> tuple[bool, list]:
        cases = []
        for name, ty in self._cases():
            classes: set = set()
            if ty is not None:
                ty.add_classes(classes)
            cases.append((name, ty, tuple(classes)))
        return _stock_tagged(self), cases
    return once(self, "_wasinn_cases", compute)


def case_of(self, val) -> tuple[str, object, object]:
    """The case of a variant-like type that stock `VariantLikeType._lower` picks for
    `val` (on the memoized cases): its name, its payload type and the payload it lowers
    (None and None for a case without one)."""
    tagged, cases = variant_cases(self)
    if tagged and not isinstance(val, Variant):
        raise TypeError("expected Variant type")
    for name, ty, classes in cases:
        if tagged:
            if name != val.tag:
                continue
        elif ty is None:
            if val is not None:
                continue
        elif not isinstance(val, classes):
            continue
        return name, ty, None if ty is None else val.payload if tagged else val
    raise ValueError("value not valid for this variant")


# Imports or exports one component or instance type may have. wasmtime's C API hands
# them out by index, each lookup walking from the first, so wasmtime-py's `imports` and
# `exports` are quadratic in their number (4,000: 0.17 s; a 1.2 MB component of 20,000
# exports: 4 s before its first call); real components have tens.
MAX_ITEMS = 1000
_COUNTS = {(ComponentType, "imports"): ffi.wasmtime_component_type_import_count,
           (ComponentType, "exports"): ffi.wasmtime_component_type_export_count,
           (ComponentInstanceType, "exports"): ffi.wasmtime_component_instance_type_export_count}


def items(ty: ComponentType | ComponentInstanceType, engine: Engine, which: str, label: str = "") -> dict:
    """`ty.imports(engine)` or `ty.exports(engine)`, counted first: past MAX_ITEMS, a
    WasinnError instead (`label`: what the message calls the component)."""
    count = _COUNTS[type(ty), which](ty.ptr(), engine.ptr())
    check_items(label or ("a component" if isinstance(ty, ComponentType) else "an instance type of a component"),
                count, which)
    return getattr(ty, which)(engine)


def check_items(what: str, count: int, which: str) -> None:
    """WasinnError past MAX_ITEMS imports or exports (`which`) of `what`."""
    if count > MAX_ITEMS:
        raise WasinnError(f"{what} has {count} {which}; wasinn takes at most {MAX_ITEMS} "
                          "(wasinn's limit: wasmtime lists them in quadratic time)")


# Parts of one function's types, written out: wasmtime-py makes an object of every use of
# a type (a type used twice is two trees), and wasinn's converters are made for each. A
# 349-byte component whose export took a list of 18 nested pairs (`tuple<t, t>` of the
# type before) had `wasinn run --invoke` build 794 MB of converters over 14 s before the
# call; wasmparser lets such a type grow to a million parts. Real signatures have a few
# hundred at most (Azure's accumulate, the largest here: 374).
MAX_TYPE_PARTS = 4096
_WIDTHS = {_types.RecordType: ffi.wasmtime_component_record_type_field_count,
           _types.TupleType: ffi.wasmtime_component_tuple_type_types_count,
           _types.VariantType: ffi.wasmtime_component_variant_type_case_count,
           _types.EnumType: ffi.wasmtime_component_enum_type_names_count,
           _types.FlagsType: ffi.wasmtime_component_flags_type_names_count}
# component-model async values, which wasmtime-py converts neither way (it raises
# NotImplementedError: `wasinn run --invoke` of an export taking a future printed its
# traceback); error-context, the third, is a feature this engine leaves off
_ASYNC = {_types.FutureType: "future", _types.StreamType: "stream"}


def check_signature(ftype, what: str) -> None:
    """Raises a one-line WasinnError unless wasinn can make and read the values of
    `ftype`'s parameters and result: written out, at most MAX_TYPE_PARTS parts (fields,
    cases, names and elements), each part's children counted (by wasmtime's C API)
    before they are read; and no future or stream."""
    left = MAX_TYPE_PARTS - ffi.wasmtime_component_func_type_param_count(ftype.ptr())
    stack = [] if left < 0 else [ty for _, ty in ftype.params]
    if left >= 0 and (result := ftype.result) is not None:
        stack.append(result)
    while left >= 0 and stack:
        ty = stack.pop()
        if type(ty) in _ASYNC:
            raise WasinnError(f"{what} takes or returns a {_ASYNC[type(ty)]} (component-model async), which "
                              "wasinn cannot pass or read (wasmtime-py converts none)")
        count = _WIDTHS.get(type(ty))
        left -= 1 + (count(ty.ptr()) if count else 0)
        if left < 0:
            break
        if isinstance(ty, ListType):
            stack.append(ty.element)
        elif isinstance(ty, _types.RecordType):
            stack.extend(t for _, t in ty.fields)
        elif isinstance(ty, _types.TupleType):
            stack.extend(ty.elements)
        elif isinstance(ty, _types.VariantLikeType):
            stack.extend(t for _, t in ty._cases() if t is not None)
    if left < 0:
        raise WasinnError(f"{what} has types of more than {MAX_TYPE_PARTS} parts written out (fields, cases, "
                          "elements); wasinn takes at most that many (wasinn's limit: it makes a converter of each)")

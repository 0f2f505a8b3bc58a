"""One shape for component values in wasinn's API, whatever wasmtime-py does.

wasmtime-py 50 writes a variant or result as a tagged `Variant` only when its cases'
Python classes overlap; otherwise the bare payload stands for it (`result<u32, string>`
comes back as 3 or as "oops"). `Instance.call` therefore converts by the function's
types: callers always pass and get `Variant(tag, payload)` for variants and results,
and numpy arrays / `HostTensor`s wherever a `tensor` handle goes.
"""
from __future__ import annotations

from typing import Any, Callable

from wasmtime.component import (BorrowType, EnumType, ListType, OptionType, OwnType, RecordType, ResultType,
                                TupleType, Variant, VariantType)

from ..errors import WasinnError

# (type, value) -> value, applied where a resource handle goes
Handles = Callable[[Any, Any], Any]


def _cases(ty) -> list[tuple[str, Any]]:
    return ty.cases if isinstance(ty, VariantType) else [("ok", ty.ok), ("err", ty.err)]


def _case_of(ty, value) -> str:
    """The case an untagged variant value belongs to, by the rule wasmtime-py uses."""
    for name, case_ty in _cases(ty):
        if case_ty is None:
            if value is None:
                return name
            continue
        classes: set[type] = set()
        case_ty.add_classes(classes)
        if isinstance(value, tuple(classes)):
            return name
    raise ValueError(f"value {value!r} fits no case of the variant")


def to_wasm(ty, value, handles: Handles) -> Any:
    """wasinn's shape → what wasmtime-py's lowering expects."""
    if isinstance(ty, (OwnType, BorrowType)):
        return handles(ty, value)
    if isinstance(ty, (VariantType, ResultType)):
        if not isinstance(value, Variant):
            raise TypeError(f"expected a Variant for a {'result' if isinstance(ty, ResultType) else 'variant'}, "
                            f"got {value!r}")
        case_ty = dict(_cases(ty))[value.tag]
        payload = None if case_ty is None else to_wasm(case_ty, value.payload, handles)
        return Variant(value.tag, payload) if ty._tagged() else payload
    if isinstance(ty, EnumType) and value not in ty.names:
        # checked here: wasmtime would refuse it only inside the call, as if the guest trapped
        raise WasinnError(f"{value!r} is not a case of the enum ({', '.join(ty.names)})")
    if isinstance(ty, OptionType):
        return None if value is None else to_wasm(ty.payload, value, handles)
    if isinstance(ty, ListType) and not ty._is_bytes():
        return [to_wasm(ty.element, v, handles) for v in value]
    if isinstance(ty, TupleType):
        return tuple(to_wasm(t, v, handles) for t, v in zip(ty.elements, value))
    if isinstance(ty, RecordType):
        for name, t in ty.fields:
            setattr(value, name, to_wasm(t, getattr(value, name), handles))
    return value


def from_wasm(ty, value, handles: Handles) -> Any:
    """What wasmtime-py's lifting gives → wasinn's shape."""
    if isinstance(ty, (OwnType, BorrowType)):
        return handles(ty, value)
    if isinstance(ty, (VariantType, ResultType)):
        # By the type, not the value: an untagged result's payload may itself be a Variant.
        tag, payload = (value.tag, value.payload) if ty._tagged() else (_case_of(ty, value), value)
        case_ty = dict(_cases(ty))[tag]
        return Variant(tag, None if case_ty is None else from_wasm(case_ty, payload, handles))
    if isinstance(ty, OptionType):
        return None if value is None else from_wasm(ty.payload, value, handles)
    if isinstance(ty, ListType) and not ty._is_bytes():
        return [from_wasm(ty.element, v, handles) for v in value]
    if isinstance(ty, TupleType):
        return tuple(from_wasm(t, v, handles) for t, v in zip(ty.elements, value))
    if isinstance(ty, RecordType):
        for name, t in ty.fields:
            setattr(value, name, from_wasm(t, getattr(value, name), handles))
    return value

"""One shape for component values in wasinn's API, whatever wasmtime-py does, checked.

wasmtime-py 50 writes a variant or result as a tagged `Variant` only when its cases'
Python classes overlap; otherwise the bare payload stands for it (`result<u32, string>`
comes back as 3 or as "oops"). `Instance.call` therefore converts by the function's
types: callers always pass and get `Variant(tag, payload)` for variants and results,
and numpy arrays / `HostTensor`s wherever a `tensor` handle goes.

Every value is checked against its WIT type before wasmtime-py sees it (which would
raise a bare TypeError, or trap the call for an enum): a mismatch is one line naming
where it is, the type and the value, e.g. `parameter 'inputs'[2].data: expected
list<u8>, got "abc"`. `--invoke` and `Instance.call` both go through here.
"""
from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Callable, NamedTuple

from ..lazy import numpy as np
from wasmtime.component import (S8, S16, S32, S64, U8, U16, U32, U64, Bool, BorrowType, Char, EnumType, F32, F64,
                                FlagsType, ListType, OptionType, OwnType, Record, RecordType, ResourceAny,
                                ResourceType, ResultType, String, TupleType, Variant, VariantType)

from .._bindings import RESOURCE_WIT_NAMES, Resource
from ..embedding.types import is_bytes, is_tagged
from ..deadlines import PastDeadline
from ..errors import BadValue
from ..tensors import HostTensor, dtype_refusal, fits, tensor_type_of, value_range

# (type, value) -> value: for tensors going in (a HostTensor), for every resource coming out
Handles = Callable[[Any, Any], Any]

TENSOR = ResourceType.host(Resource.TENSOR)
# WIT's number types and the numpy dtype (by its code, so that numpy is imported only
# when a value is checked: lazy.py) whose values they are
_NUMBERS = {S8: "i1", S16: "i2", S32: "i4", S64: "i8", U8: "u1", U16: "u2", U32: "u4", U64: "u8",
            F32: "f4", F64: "f8"}
# Integer types' ranges, for plain ints checked without numpy (np.iinfo costs microseconds)
_INT_RANGES = {ty: (-(1 << (8 * int(code[1]) - 1)), (1 << (8 * int(code[1]) - 1)) - 1) if code[0] == "i"
               else (0, (1 << (8 * int(code[1]))) - 1) for ty, code in _NUMBERS.items() if code[0] in "iu"}
_SIMPLE_NAMES = {Bool: "bool", Char: "char", String: "string",
                 **{ty: ty.__name__.lower() for ty in _NUMBERS}}
# Characters of a value a message shows
_SHOWN = 60


class Handle:
    """A resource handle a call returned, other than a tensor (a wasi:nn graph, execution
    context or error, or a resource of the guest's own), to pass to later calls.
    `resource`: wasmtime-py's handle; `what`: what it is, which its repr shows
    (`<wasi:nn error not-found: no graph named 'x'; registered: none>`)."""
    __slots__ = ("resource", "what")

    def __init__(self, resource: ResourceAny, what: str):
        self.resource, self.what = resource, what

    def __repr__(self) -> str:
        return f"<{self.what}>"


def host_resource(ty: ResourceType) -> Resource | None:
    """Which of wasi:nn's resources (served by the host) a resource type is, if any."""
    return next((kind for kind, host in _host_types() if ty == host), None)


_HOST_TYPES: list[tuple[Resource, ResourceType]] = []


def _host_types() -> list[tuple[Resource, ResourceType]]:
    if not _HOST_TYPES:  # made once: each is a C object
        _HOST_TYPES.extend((kind, ResourceType.host(kind)) for kind in Resource)
    return _HOST_TYPES


def type_name(ty) -> str:
    """A WIT type as WIT spells it (resources by role: `tensor`, `own<resource>`)."""
    if type(ty) in _SIMPLE_NAMES:
        return _SIMPLE_NAMES[type(ty)]
    if isinstance(ty, (OwnType, BorrowType)):
        kind = host_resource(ty.ty)
        if kind is None:
            return f"{'own' if isinstance(ty, OwnType) else 'borrow'}<resource>"
        return RESOURCE_WIT_NAMES[kind] if isinstance(ty, OwnType) else f"borrow<{RESOURCE_WIT_NAMES[kind]}>"
    if isinstance(ty, ListType):
        return f"list<{type_name(ty.element)}>"
    if isinstance(ty, OptionType):
        return f"option<{type_name(ty.payload)}>"
    if isinstance(ty, ResultType):
        return f"result<{type_name(ty.ok) if ty.ok else '_'}, {type_name(ty.err) if ty.err else '_'}>"
    if isinstance(ty, TupleType):
        return f"tuple<{', '.join(type_name(t) for t in ty.elements)}>"
    if isinstance(ty, RecordType):
        return "record {" + ", ".join(f"{n}: {type_name(t)}" for n, t in ty.fields) + "}"
    if isinstance(ty, VariantType):
        return "variant {" + ", ".join(n if t is None else f"{n}({type_name(t)})" for n, t in ty.cases) + "}"
    if isinstance(ty, EnumType):
        return "enum {" + ", ".join(ty.names) + "}"
    if isinstance(ty, FlagsType):
        return "flags {" + ", ".join(ty.names) + "}"
    return type(ty).__name__


def format_value(value, ty=None) -> str:
    """A value as WAVE writes it (what `wasmtime run --invoke` prints); tensors as
    `tensor(FP32, [1, 1000], [v0, v1, ...])`, elided past 8 values. `ty`, the value's
    WIT type where known, tells what the value alone cannot: an enum case or a char
    from a string, `some(x)` from `x`. (`value_pieces` writes the same text in pieces.)"""
    return "".join(value_pieces(value, ty))


# A string's or list<u8>'s text is written this many characters or bytes at a time: a
# guest's 16 MiB string of control characters, escaped in one piece and then character
# by character, held the host's GIL 1.1 s and 1 GB for `wasinn run --invoke` (probe 64).
_PIECE = 1 << 16


def value_pieces(value, ty=None) -> Iterator[str]:
    """`format_value`'s text in pieces of at most ~_PIECE characters each (a string or
    list<u8> a piece at a time), for a writer that need not hold all of it."""
    if ty is not None:
        typed = _typed_pieces(value, ty)
        if typed is not None:
            yield from typed
            return
    if isinstance(value, (bool, np.bool_)):
        yield "true" if value else "false"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        yield "["
        for at in range(0, len(value), _PIECE):
            yield (", " if at else "") + ", ".join(map(str, value[at:at + _PIECE]))
        yield "]"
    elif isinstance(value, str):
        yield from _quoted_pieces(value)
    elif isinstance(value, list):
        yield from _joined("[", (value_pieces(v) for v in value), "]")
    elif isinstance(value, tuple):
        yield from _joined("(", (value_pieces(v) for v in value), ")")
    elif isinstance(value, (set, frozenset)):
        yield "{" + ", ".join(sorted(map(str, value))) + "}"
    elif isinstance(value, Variant):
        if value.payload is None:
            yield value.tag
        else:
            yield from _joined(f"{value.tag}(", [value_pieces(value.payload)], ")")
    elif isinstance(value, Record):
        yield from _joined("{", (_field(k, value_pieces(v)) for k, v in vars(value).items()), "}")
    elif value is None:
        yield "none"
    elif isinstance(value, HostTensor):
        yield value.text()
    elif isinstance(value, np.ndarray):
        yield f"a numpy array of {value.dtype} {list(value.shape)}"
    elif isinstance(value, (int, float, np.number)):
        yield str(value)
    else:
        yield f"a {type(value).__name__}" if type(value).__repr__ is object.__repr__ else repr(value)


class Some(NamedTuple):
    """An option's payload (which may itself be None)."""
    value: Any


def _joined(start: str, items, end: str) -> Iterator[str]:
    yield start
    for i, pieces in enumerate(items):
        if i:
            yield ", "
        yield from pieces
    yield end


def _field(name: str, pieces) -> Iterator[str]:
    yield f"{name}: "
    yield from pieces


def _typed_pieces(value, ty):
    """`value_pieces` where the type decides; None where the value alone does."""
    if isinstance(ty, EnumType):
        return [value]
    if isinstance(ty, Char):
        return ["'" + _quoted(value)[1:-1].replace("'", "\\'") + "'"]
    if isinstance(ty, OptionType):
        if isinstance(value, Variant):  # tagged, as an option whose payload can itself be none comes
            value = None if value.tag == "none" else Some(value.payload)
        elif value is not None:
            value = Some(value)
        return ["none"] if value is None else _joined("some(", [value_pieces(value.value, ty.payload)], ")")
    if isinstance(ty, FlagsType):
        return ["{" + ", ".join(name for name in ty.names if name in value) + "}"]
    if isinstance(ty, ListType) and not is_bytes(ty):
        return _joined("[", (value_pieces(v, ty.element) for v in value), "]")
    if isinstance(ty, TupleType):
        return _joined("(", (value_pieces(v, t) for v, t in zip(value, ty.elements)), ")")
    if isinstance(ty, RecordType):
        return _joined("{", (_field(name, value_pieces(getattr(value, name), t)) for name, t in ty.fields), "}")
    if isinstance(ty, (VariantType, ResultType)):
        case_ty = dict(_cases(ty))[value.tag]
        return [value.tag] if case_ty is None else _joined(f"{value.tag}(", [value_pieces(value.payload, case_ty)], ")")
    return None


def shown(value) -> str:
    """A value as a message shows it: WAVE, cut short (no more of it written than that)."""
    text = ""
    for piece in value_pieces(value):
        text += piece
        if len(text) > _SHOWN:
            return text[:_SHOWN] + "..."
    return text


def _number(value):
    """A Python int or float for a number (numpy's included); None for anything else."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return None


def _cases(ty) -> list[tuple[str, Any]]:
    return ty.cases if isinstance(ty, VariantType) else [("ok", ty.ok), ("err", ty.err)]


def _case_finder(ty) -> Callable[[Any], str]:
    """Finds the case an untagged variant value belongs to, by the rule wasmtime-py
    uses; each case's Python classes are found once."""
    cases = []
    for name, case_ty in _cases(ty):
        classes: set[type] = set()
        if case_ty is not None:
            case_ty.add_classes(classes)
        cases.append((name, case_ty is None, tuple(classes)))

    def find(value) -> str:
        for name, empty, classes in cases:
            if (value is None) if empty else isinstance(value, classes):
                return name
        raise ValueError(f"value {value!r} fits no case of the variant")
    return find


def _tensor_hint(value) -> str:
    """What to write for a tensor: for a list of numbers, the tensor it was likely meant to be."""
    generic = "; a tensor is a numpy array or a HostTensor"
    try:
        array = np.asarray(value) if isinstance(value, (list, tuple)) else None
    except ValueError:  # ragged
        return generic
    dtype = None if array is None else {"f": np.float32, "i": np.int64}.get(array.dtype.kind)
    if dtype is None:
        return generic
    literal = HostTensor.from_array(array.astype(dtype)).text()
    return f"; pass np.asarray(value, np.{dtype.__name__}) (in --invoke: {literal})"


_conversion = threading.local()  # the deadline of the arguments made in this thread
# list elements made between looks at the deadline
_LOOK_EVERY = 256


@contextlib.contextmanager
def converting(deadline: float | None):
    """Arguments made inside count against `deadline` (time.monotonic(); None: none): a
    list looks at it every _LOOK_EVERY elements and raises `PastDeadline`. Inside a
    call's `collector.holding`, the collector waits meanwhile."""
    before = getattr(_conversion, "deadline", None)
    _conversion.deadline = deadline
    try:
        yield
    finally:
        _conversion.deadline = before


def in_time() -> None:
    deadline = getattr(_conversion, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise PastDeadline


def to_wasm(ty, value, handles: Handles, where: str) -> Any:
    """wasinn's shape → what wasmtime-py's lowering expects, checked against `ty` on
    the way: a mismatch raises `BadValue` naming `where` ("parameter 'x'"), then the
    path inside it ([2] an element, .name a field or case)."""
    try:
        return _lowering(ty)(value, handles)
    except _Mismatch as e:
        raise BadValue(f"{where}{''.join(reversed(e.path))}: expected {type_name(e.ty)}, got {shown(e.value)}{e.why}") \
            from None


def from_wasm(ty, value, handles: Handles) -> Any:
    """What wasmtime-py's lifting gives → wasinn's shape."""
    lift = _lifting(ty)
    return value if lift is None else lift(value, handles)


class _Mismatch(Exception):
    """A value that does not fit its type, on its way up to `to_wasm` collecting the
    path to it (innermost first)."""

    def __init__(self, ty, value, why: str = ""):
        self.ty, self.value, self.why, self.path = ty, value, why, []


def _inside(e: _Mismatch, step: str) -> _Mismatch:
    e.path.append(step)
    return e


# Each type's conversions are made once, as closures over what they ask of the type
# (its fields, cases, element), which wasmtime-py would otherwise rebuild per value: a
# data-flow operator's message, converted both ways per call, is ~30 values.
def _lowering(ty) -> Callable[[Any, Handles], Any]:
    try:
        return ty.__dict__["_wasinn_lower"]
    except KeyError:
        lower = ty.__dict__["_wasinn_lower"] = _make_lowering(ty)
        return lower


def _lifting(ty) -> Callable[[Any, Handles], Any] | None:
    """None where wasmtime-py's value is already wasinn's."""
    try:
        return ty.__dict__["_wasinn_lift"]
    except KeyError:
        lift = ty.__dict__["_wasinn_lift"] = _make_lifting(ty)
        return lift


def _make_lowering(ty) -> Callable[[Any, Handles], Any]:
    if type(ty) in _NUMBERS:
        code = _NUMBERS[type(ty)]
        bounds = _INT_RANGES.get(type(ty))

        def number(value, handles):
            if bounds is not None and type(value) is int and bounds[0] <= value <= bounds[1]:
                return value
            dtype, n = np.dtype(code), _number(value)
            if n is None or (dtype.kind in "iu" and not isinstance(n, int)):
                raise _Mismatch(ty, value)
            if not fits(dtype, n):
                raise _Mismatch(ty, value, f", out of its range ({value_range(dtype)})")
            return n if dtype.kind in "iu" else float(n)
        return number
    if isinstance(ty, Bool):
        def boolean(value, handles):
            if not isinstance(value, (bool, np.bool_)):
                raise _Mismatch(ty, value)
            return bool(value)
        return boolean
    if isinstance(ty, (Char, String)):
        char = isinstance(ty, Char)

        def text(value, handles):
            if not isinstance(value, str) or (char and len(value) != 1):
                raise _Mismatch(ty, value)
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:  # a lone surrogate: no UTF-8 (for a char, wasmtime would abort)
                    raise _Mismatch(ty, value, ": a surrogate, not a Unicode scalar value") from None
            return value
        return text
    if isinstance(ty, ListType):
        raw = is_bytes(ty)
        element = _lowering(ty.element)

        def listed(value, handles):
            if raw and isinstance(value, (bytes, bytearray, memoryview, np.ndarray)):
                return value  # as is: embedding/patches.py copies them in at once
            if not isinstance(value, (list, tuple, np.ndarray)):
                raise _Mismatch(ty, value)
            items = []
            for i, v in enumerate(value):
                if i % _LOOK_EVERY == _LOOK_EVERY - 1:
                    in_time()
                try:
                    items.append(element(v, handles))
                except _Mismatch as e:
                    raise _inside(e, f"[{i}]") from None
            return bytes(items) if raw else items
        return listed
    if isinstance(ty, TupleType):
        elements = [_lowering(t) for t in ty.elements]

        def tupled(value, handles):
            if not isinstance(value, (tuple, list)):
                raise _Mismatch(ty, value)
            if len(value) != len(elements):
                raise _Mismatch(ty, value, f" ({len(value)} elements, not {len(elements)})")
            out = []
            for i, (lower, v) in enumerate(zip(elements, value)):
                try:
                    out.append(lower(v, handles))
                except _Mismatch as e:
                    raise _inside(e, f".{i}") from None
            return tuple(out)
        return tupled
    if isinstance(ty, RecordType):
        fields = [(name, _lowering(t)) for name, t in ty.fields]
        names = {name for name, _ in fields}

        def record(value, handles):
            given = vars(value) if isinstance(value, Record) else dict(value) if isinstance(value, Mapping) else None
            if given is None:
                raise _Mismatch(ty, value)
            if len(given) != len(names) or not names.issuperset(given):
                missing, unknown = [n for n, _ in fields if n not in given], [k for k in given if k not in names]
                raise _Mismatch(ty, value, f" (no field {missing[0]})" if missing else f" (it has no field {unknown[0]})")
            out = Record()
            for name, lower in fields:
                try:
                    setattr(out, name, lower(given[name], handles))
                except _Mismatch as e:
                    raise _inside(e, f".{name}") from None
            return out
        return record
    if isinstance(ty, (VariantType, ResultType)):
        cases = {name: None if t is None else _lowering(t) for name, t in _cases(ty)}
        case_types = dict(_cases(ty))
        tagged = is_tagged(ty)

        def variant(value, handles):
            # a case without payload may be written by its name alone, as WAVE writes it
            tag, payload = (value.tag, value.payload) if isinstance(value, Variant) else (value, None)
            if not isinstance(tag, str) or tag not in cases:
                raise _Mismatch(ty, value)
            lower = cases[tag]
            if lower is None:
                if payload is not None:
                    raise _Mismatch(ty, value, f" (case {tag} has no payload)")
            elif not isinstance(value, Variant):
                raise _Mismatch(ty, value, f" (case {tag} needs a payload, {type_name(case_types[tag])})")
            else:
                try:
                    payload = lower(payload, handles)
                except _Mismatch as e:
                    raise _inside(e, f".{tag}") from None
            return Variant(tag, payload) if tagged else payload
        return variant
    if isinstance(ty, OptionType):
        inner = _lowering(ty.payload)

        def option(value, handles):
            if value is None:
                return None
            try:
                return inner(value, handles)
            except _Mismatch as e:
                raise _inside(e, ".some") from None
        return option
    if isinstance(ty, EnumType):
        names = list(ty.names)

        def enum(value, handles):
            # checked here: wasmtime would refuse it only inside the call, as if the guest trapped
            if value not in names:
                raise _Mismatch(ty, value)
            return value
        return enum
    if isinstance(ty, FlagsType):
        names = set(ty.names)

        def flags(value, handles):
            if not isinstance(value, (set, frozenset, list, tuple)) or not all(f in names for f in value):
                raise _Mismatch(ty, value)
            return set(value)
        return flags
    if isinstance(ty, (OwnType, BorrowType)) and ty.ty == TENSOR:
        def tensor(value, handles):
            if isinstance(value, np.ndarray):
                if tensor_type_of(value.dtype) is None:
                    raise _Mismatch(ty, value, f": {dtype_refusal(value.dtype)}")
                value = HostTensor.from_array(value)
            if not isinstance(value, HostTensor):
                raise _Mismatch(ty, value, _tensor_hint(value))
            return handles(ty, value)
        return tensor
    if isinstance(ty, (OwnType, BorrowType)):
        resource_type = ty.ty

        def resource(value, handles):
            held = value.resource if isinstance(value, Handle) else value
            if not isinstance(held, ResourceAny) or held.type != resource_type:
                raise _Mismatch(ty, value, "; only a handle of this type an earlier call returned fits")
            return held
        return resource
    return lambda value, handles: value


def _make_lifting(ty) -> Callable[[Any, Handles], Any] | None:
    if isinstance(ty, (OwnType, BorrowType)):
        return lambda value, handles: handles(ty, value)
    if isinstance(ty, (VariantType, ResultType)):
        # By the type, not the value: an untagged result's payload may itself be a Variant.
        cases = {name: (t is not None, None if t is None else _lifting(t)) for name, t in _cases(ty)}
        tagged = is_tagged(ty)
        case_of = None if tagged else _case_finder(ty)

        def variant(value, handles):
            tag, payload = (value.tag, value.payload) if tagged else (case_of(value), value)
            has_payload, lift = cases[tag]
            if not has_payload:
                return Variant(tag, None)
            return Variant(tag, payload if lift is None else lift(payload, handles))
        return variant
    if isinstance(ty, OptionType):
        inner = _lifting(ty.payload)
        return None if inner is None else lambda value, handles: None if value is None else inner(value, handles)
    if isinstance(ty, ListType) and not is_bytes(ty):
        inner = _lifting(ty.element)
        return None if inner is None else lambda value, handles: [inner(v, handles) for v in value]
    if isinstance(ty, TupleType):
        lifts = [_lifting(t) for t in ty.elements]
        if all(lift is None for lift in lifts):
            return None
        return lambda value, handles: tuple(v if lift is None else lift(v, handles) for lift, v in zip(lifts, value))
    if isinstance(ty, RecordType):
        fields = [(name, lift) for name, t in ty.fields if (lift := _lifting(t)) is not None]
        if not fields:
            return None

        def record(value, handles):
            for name, lift in fields:
                setattr(value, name, lift(getattr(value, name), handles))
            return value
        return record
    return None


def spans_for_bytes(ty, spans) -> bool:
    """Whether type `spans` is `ty` with each list<u8> a tuple<u32, u32> (wasinn:adapter-
    results' span): the same canonical ABI layout, so that lifting the same core function
    with it reads what the guest wrote. The rewrite names the guest's types; this checks
    they are Azure's, not others under the same names."""
    if is_bytes(ty):
        return isinstance(spans, TupleType) and len(spans.elements) == 2 and \
            all(isinstance(e, U32) for e in spans.elements)
    if type(ty) is not type(spans):
        return False
    if isinstance(ty, RecordType):
        return [n for n, _ in ty.fields] == [n for n, _ in spans.fields] and \
            all(spans_for_bytes(a, b) for (_, a), (_, b) in zip(ty.fields, spans.fields))
    if isinstance(ty, VariantType):
        return [n for n, _ in ty.cases] == [n for n, _ in spans.cases] and \
            all((a is None) == (b is None) and (a is None or spans_for_bytes(a, b))
                for (_, a), (_, b) in zip(ty.cases, spans.cases))
    if isinstance(ty, ResultType):
        return all((a is None) == (b is None) and (a is None or spans_for_bytes(a, b))
                   for a, b in ((ty.ok, spans.ok), (ty.err, spans.err)))
    if isinstance(ty, OptionType):
        return spans_for_bytes(ty.payload, spans.payload)
    if isinstance(ty, ListType):
        return spans_for_bytes(ty.element, spans.element)
    if isinstance(ty, TupleType):
        return len(ty.elements) == len(spans.elements) and \
            all(spans_for_bytes(a, b) for a, b in zip(ty.elements, spans.elements))
    return ty == spans


def _quoted(text: str) -> str:
    """`text` as a WAVE string literal (JSON's escapes)."""
    return "".join(_quoted_pieces(text))


def _quoted_pieces(text: str) -> Iterator[str]:
    """`_quoted`, _PIECE characters of `text` at a time. json is imported here: only
    --invoke prints values, and a run's start-up is mostly imports."""
    import json
    yield '"'
    for at in range(0, len(text), _PIECE):
        out = json.dumps(text[at:at + _PIECE], ensure_ascii=False)[1:-1]
        if not out.isascii():  # a lone surrogate is no character any output can carry: JSON's escape for it
            out = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", out)
        yield out
    yield '"'


_SURROGATE = re.compile("[\ud800-\udfff]")



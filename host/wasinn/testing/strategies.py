"""Hypothesis strategies for wasi:nn tensors and component values, in the style of
`hypothesis.extra.numpy`.

    from wasinn.testing import tensors, dims, inputs_for, values_for
    @given(tensors(dims=dims(max_rank=3)))
    def test_echo(inst, t): ...

Tensors are drawn to meet what marshalling code gets wrong: every wasi:nn type, rank 0
to 6, zero-sized axes, payloads just below, at and above the sizes where data paths
switch (256 B, 4 KiB, 64 KiB), and element bit patterns that conversions mangle (NaN
payloads, -0, infinities, subnormals, FP16/BF16 values that round badly, int64 beyond
2^53). Large payloads are a short pattern of elements repeated, with a few elements
set apart, so they cost few choices and shrink to zeros. Every strategy shrinks toward
small, plain tensors: FP32 before other types, low rank, zero bytes.

Each draw reports what it drew with `hypothesis.event` (`type FP32`, `rank 0`,
`zero-sized axis`, `near 65536 bytes`, `edge FP16 largest subnormal`), which pytest's
`--hypothesis-show-statistics` prints.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from hypothesis import event, reject, strategies as st
from hypothesis.errors import InvalidArgument
from wasmtime.component import (Bool, BorrowType, Char, EnumType, F32, F64, FlagsType, ListType, OptionType,
                                OwnType, Record, RecordType, ResourceType, ResultType, S8, S16, S32, S64, String,
                                TupleType, U8, U16, U32, U64, Variant, VariantType)

from ..abi.values import type_name
from .._bindings import Resource, TensorType
from ..embedding.types import is_bytes
from ..errors import WasinnError
from ..tensors import DTYPES, HostTensor

# The order shrinking goes: the plainest types first.
TYPES = (TensorType.FP32, TensorType.U8, TensorType.I32, TensorType.I64, TensorType.FP64,
         TensorType.FP16, TensorType.BF16)
# Payload sizes (bytes) where data paths change how they move bytes.
THRESHOLDS = (256, 4096, 65536)
# Elements of a tensor from the plain shape classes, so the standard path stays quick.
MAX_ELEMENTS = 4096


def _bits(value: float, dtype: str) -> int:
    return int(np.array([value], dtype).view(f"u{np.dtype(dtype).itemsize}")[0])


_I64 = {"zero": 0, "-1": -1, "1": 1, "min": -2**63, "max": 2**63 - 1, "2^53+1": 2**53 + 1,
        "-(2^53+1)": -(2**53 + 1), "2^31": 2**31, "-2^31-1": -2**31 - 1, "2^32": 2**32}
_I32 = {"zero": 0, "-1": -1, "1": 1, "min": -2**31, "max": 2**31 - 1, "2^24+1": 2**24 + 1,
        "-129": -129, "256": 256}
# Element bit patterns (as unsigned integers of the element's width) by type. The
# first of each is zero: where shrinking goes.
EDGES: dict[TensorType, dict[str, int]] = {
    TensorType.FP16: {"zero": 0, "-0": 0x8000, "inf": 0x7C00, "-inf": 0xFC00, "quiet NaN": 0x7E00,
                      "signalling NaN": 0x7C01, "negative NaN with payload": 0xFE01,
                      "smallest subnormal": 0x0001, "largest subnormal": 0x03FF, "smallest normal": 0x0400,
                      "max 65504": 0x7BFF, "one": 0x3C00, "one plus ulp": 0x3C01, "one third": 0x3555},
    TensorType.BF16: {"zero": 0, "-0": 0x8000, "inf": 0x7F80, "-inf": 0xFF80, "quiet NaN": 0x7FC0,
                      "signalling NaN": 0x7F81, "negative NaN with payload": 0xFFC1,
                      "smallest subnormal": 0x0001, "largest subnormal": 0x007F, "smallest normal": 0x0080,
                      "max": 0x7F7F, "one": 0x3F80, "one plus ulp": 0x3F81, "pi": 0x4049},
    TensorType.FP32: {"zero": 0, "-0": 0x80000000, "inf": 0x7F800000, "-inf": 0xFF800000,
                      "quiet NaN": 0x7FC00000, "signalling NaN": 0x7F800001,
                      "negative NaN with payload": 0xFFC00001, "smallest subnormal": 1,
                      "largest subnormal": 0x007FFFFF, "smallest normal": 0x00800000, "max": 0x7F7FFFFF,
                      "one": 0x3F800000, "FP16 overflow 65520": _bits(65520, "<f4"),
                      "BF16 tie 1.00390625": _bits(1.00390625, "<f4"), "FP16 smallest subnormal": 0x33800000},
    TensorType.FP64: {"zero": 0, "-0": 1 << 63, "inf": 0x7FF0 << 48, "-inf": 0xFFF0 << 48,
                      "quiet NaN": 0x7FF8 << 48, "signalling NaN": (0x7FF0 << 48) | 1,
                      "negative NaN with payload": (0xFFF8 << 48) | 1, "smallest subnormal": 1,
                      "largest subnormal": (1 << 52) - 1, "smallest normal": 1 << 52,
                      "max": 0x7FEFFFFFFFFFFFFF, "one": _bits(1.0, "<f8"), "one plus ulp": _bits(1.0, "<f8") + 1,
                      "2^53+2": _bits(2.0**53 + 2, "<f8"), "FP32 overflow": _bits(3.5e38, "<f8")},
    TensorType.U8: {"zero": 0, "255": 255, "1": 1, "127": 127, "128": 128},
    TensorType.I32: {name: v & 0xFFFFFFFF for name, v in _I32.items()},
    TensorType.I64: {name: v & (2**64 - 1) for name, v in _I64.items()},
}


def tensor_types() -> st.SearchStrategy[TensorType]:
    """Every wasi:nn tensor type, shrinking toward FP32."""
    return st.sampled_from(TYPES)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidArgument(message)


def _check_size(name: str, value, *, optional: bool = False) -> None:
    _check((optional and value is None) or (isinstance(value, int) and not isinstance(value, bool) and value >= 0),
           f"{name}={value!r}: want a non-negative int{' or None' if optional else ''}")


def _check_strategy(name: str, value, what: str) -> None:
    _check(value is None or isinstance(value, st.SearchStrategy),
           f"{name}={value!r}: want a hypothesis strategy of {what}")


def _check_thresholds(thresholds) -> None:
    _check(isinstance(thresholds, Sequence) and all(isinstance(t, int) and t > 0 for t in thresholds),
           f"thresholds={thresholds!r}: want a sequence of positive byte counts")


def dims(*, min_rank: int = 0, max_rank: int = 6, max_elements: int = MAX_ELEMENTS,
         max_side: int | None = None) -> st.SearchStrategy[list[int]]:
    """Dimensions of rank `min_rank`..`max_rank` (rank 0: a scalar) holding at most
    `max_elements` elements; axes of size zero come up often (past one, the others are
    still at most `max_side`, default `max_elements`).

    >>> dims().example()
    [3, 0, 17]
    >>> dims(min_rank=2, max_rank=2, max_side=4).example()
    [4, 1]
    """
    for name, value in (("min_rank", min_rank), ("max_rank", max_rank), ("max_elements", max_elements)):
        _check_size(name, value)
    _check_size("max_side", max_side, optional=True)
    _check(min_rank <= max_rank, f"min_rank={min_rank} is above max_rank={max_rank}")
    return _dims(min_rank, max_rank, max_elements, max_elements if max_side is None else max_side)


@st.composite
def _dims(draw, min_rank: int, max_rank: int, max_elements: int, side_cap: int) -> list[int]:
    rank = draw(st.integers(min_rank, max_rank))
    out: list[int] = []
    for _ in range(rank):
        room = math.prod(d for d in out if d) or 1
        out.append(draw(st.integers(0, max(0, min(side_cap, max_elements // room)))))
    event(f"rank {rank}")
    if 0 in out:
        event("zero-sized axis")
    return out


_any_dims = dims  # the parameters of tensors() and values_for() take these names


@st.composite
def _near_threshold(draw, ty: TensorType, thresholds: Sequence[int]) -> list[int]:
    """One axis whose payload is a few elements either side of a threshold."""
    threshold = draw(st.sampled_from(thresholds))
    delta = draw(st.integers(-2, 2))
    event(f"near {threshold} bytes")
    return [max(0, threshold // DTYPES[ty].itemsize + delta)]


def _element_bits(ty: TensorType) -> st.SearchStrategy[int]:
    edges = EDGES[ty]
    names = list(edges)

    def edge(name: str) -> int:
        event(f"edge {ty.name} {name}")
        return edges[name]
    return st.one_of(st.sampled_from(names).map(edge), st.integers(0, (1 << (8 * DTYPES[ty].itemsize)) - 1))


# `elements` values drawn one by one up to this many; past it, a pattern repeated.
_DRAWN_ONE_BY_ONE = 64


@st.composite
def _spread(draw, elements: st.SearchStrategy, count: int, one_by_one: int = 0) -> list:
    """`count` values of `elements`: one by one up to `one_by_one`, else a short pattern
    repeated with a few values set apart (hypothesis cannot draw 16,384 values one by one)."""
    if count <= one_by_one or count == 0:
        return draw(st.lists(elements, min_size=count, max_size=count))
    pattern = draw(st.lists(elements, min_size=1, max_size=8))
    values = [pattern[i % len(pattern)] for i in range(count)]
    for at, value in draw(st.lists(st.tuples(st.integers(0, count - 1), elements), max_size=4)):
        values[at] = value
    return values


@st.composite
def payload(draw, ty: TensorType, count: int) -> bytes:
    """`count` elements of `ty` as little-endian bytes: a short pattern repeated, with a
    few elements set apart; small payloads may be any bytes at all."""
    width = DTYPES[ty].itemsize
    if count * width <= 512 and draw(st.booleans()):
        return draw(st.binary(min_size=count * width, max_size=count * width))
    return np.array(draw(_spread(_element_bits(ty), count)), dtype=np.uint64).astype(f"<u{width}").tobytes()


def _cast(values: list, ty: TensorType, fixed: bool) -> bytes:
    """`values` as `ty`'s bytes, as numpy casts them (floats past a type's range become
    infinities). A value numpy cannot cast: with `ty` fixed, the caller's mistake;
    drawn, that type is not one for these elements."""
    try:
        with np.errstate(all="ignore"):
            return np.array(values, dtype=DTYPES[ty]).tobytes()
    except (OverflowError, ValueError, TypeError) as e:
        _check(not fixed, f"elements drew a value that {ty.name} cannot hold ({e}): draw values of ty={ty.name}")
        reject()


def tensors(ty: TensorType | st.SearchStrategy[TensorType] | None = None,
            dims: Sequence[int] | st.SearchStrategy[Sequence[int]] | None = None,
            elements: st.SearchStrategy[Any] | None = None,
            thresholds: Sequence[int] = THRESHOLDS) -> st.SearchStrategy[HostTensor]:
    """`HostTensor`s. `ty` and `dims` fix the type and shape or give strategies for them
    (default: every type; `dims()` or, one draw in four, one axis near a threshold of
    `thresholds` bytes). `elements` draws element values (numbers numpy casts to the
    type; with `ty` not fixed, a type that cannot hold a value drawn is passed over);
    by default bit patterns, edge cases among them. Any of them may be left out.

    >>> t = tensors(ty=TensorType.I32, dims=[2, 3], elements=st.integers(-5, 5)).example()
    >>> t.dims, t.array().min() >= -5
    ((2, 3), True)
    >>> tensors(ty=TensorType.FP32, elements=st.floats(-1, 1))  # any shape, threshold sizes too
    >>> tensors(elements=st.integers(0, 255))                   # any type that holds 0..255
    >>> tensors(dims=dims(max_rank=2), thresholds=())           # any type, no large payloads
    """
    _check(ty is None or isinstance(ty, (TensorType, st.SearchStrategy)),
           f"ty={ty!r}: want a TensorType or a strategy of them")
    if dims is not None and not isinstance(dims, st.SearchStrategy):
        _check(isinstance(dims, Sequence) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in dims),
               f"dims={dims!r}: want a sequence of non-negative ints or a strategy of them")
    _check_strategy("elements", elements, "element values")
    _check_thresholds(thresholds)
    return _tensors(ty, dims, elements, tuple(thresholds))


@st.composite
def _tensors(draw, ty, dims, elements, thresholds) -> HostTensor:
    fixed = isinstance(ty, TensorType)
    ty = draw(tensor_types() if ty is None else ty if isinstance(ty, st.SearchStrategy) else st.just(ty))
    event(f"type {ty.name}")
    if dims is None:
        shape = draw(_near_threshold(ty, thresholds)) if thresholds and draw(st.integers(0, 3)) == 3 \
            else draw(_any_dims())
    else:
        shape = list(draw(dims) if isinstance(dims, st.SearchStrategy) else dims)
    count = math.prod(shape)
    if elements is None:
        data = draw(payload(ty, count))
    else:
        data = _cast(draw(_spread(elements, count, _DRAWN_ONE_BY_ONE)), ty, fixed)
    return HostTensor(shape, ty, data)


_any_tensors = tensors


def inputs_for(graph, *, dynamic: st.SearchStrategy[int] = st.integers(1, 8),
               backends: Mapping[str, str] | None = None) -> st.SearchStrategy[list[tuple[str, HostTensor]]]:
    """Named tensors, as `compute` takes them, that match a model's inputs: their names,
    types and shapes, each dynamic axis drawn from `dynamic` (and an input of unknown rank
    from `dims()`). `graph` is a model file, a `kserve+http://` URL or a loaded backend
    graph (`wasinn.backends.Graph`); it is described as wasinn:introspect describes it.

    >>> [(name, t.ty.name, t.dims) for name, t in inputs_for("models/adder/model.onnx").example()]
    [('a', 'FP32', (3,)), ('b', 'FP32', (5,))]
    >>> inputs_for("model.onnx", dynamic=st.just(1))  # every dynamic axis 1
    """
    named = input_tensors(graph, dynamic=dynamic, backends=backends)
    return st.tuples(*[t.map(lambda t, n=name: (n, t)) for name, t in named.items()]).map(list)


def graph_of(graph, backends: Mapping[str, str] | None = None):
    """A loaded graph from a model file, a `kserve+http://` URL or a loaded graph."""
    if isinstance(graph, (str, os.PathLike)):
        from ..abi.introspect import open_graph
        return open_graph(os.fspath(graph), backends=backends)
    _check(hasattr(graph, "inputs"), f"graph={graph!r}: want a model file, a kserve+http:// URL or a loaded graph")
    return graph


def input_tensors(graph, *, dynamic: st.SearchStrategy[int] = st.integers(1, 8),
                  backends: Mapping[str, str] | None = None) -> dict[str, st.SearchStrategy[HostTensor]]:
    """A strategy of tensors for each of a model's inputs, by name (see `inputs_for`)."""
    _check_strategy("dynamic", dynamic, "axis sizes")
    _check(dynamic is not None, "dynamic=None: want a hypothesis strategy of axis sizes")
    out = {}
    for spec in graph_of(graph, backends).inputs:
        if spec.ty is None:
            raise WasinnError(f"input {spec.name!r} is {spec.type_name}, which no wasi:nn tensor type carries")
        shape = _any_dims() if spec.shape is None else \
            st.tuples(*[dynamic if d is None else st.just(d) for d in spec.shape]).map(list)
        out[spec.name] = tensors(ty=spec.ty, dims=shape, thresholds=())
    return out


_INTEGERS = {S8: (-2**7, 2**7 - 1), S16: (-2**15, 2**15 - 1), S32: (-2**31, 2**31 - 1), S64: (-2**63, 2**63 - 1),
             U8: (0, 2**8 - 1), U16: (0, 2**16 - 1), U32: (0, 2**32 - 1), U64: (0, 2**64 - 1)}
_TENSOR = ResourceType.host(Resource.TENSOR)


class Unsupported(WasinnError):
    """A WIT type whose values the host cannot make (a resource only the guest creates)."""


def is_tensor(ty) -> bool:
    return isinstance(ty, (OwnType, BorrowType)) and ty.ty == _TENSOR


def is_named_tensor(ty) -> bool:
    """`tuple<string, tensor>`: what `compute` takes a list of."""
    return isinstance(ty, TupleType) and len(ty.elements) == 2 and isinstance(ty.elements[0], String) \
        and is_tensor(ty.elements[1])


def _bytes(max_size: int, thresholds: Sequence[int]) -> st.SearchStrategy[bytes]:
    # the offset is drawn apart from the threshold, so shrinking moves each on its own
    near = st.tuples(st.sampled_from(thresholds), st.integers(-2, 2)).flatmap(
        lambda t: payload(TensorType.U8, max(0, t[0] + t[1])))
    return st.one_of(st.binary(max_size=max_size), near) if thresholds else st.binary(max_size=max_size)


def values_for(ty, *, tensors: st.SearchStrategy[HostTensor] | None = None,
               inputs: st.SearchStrategy[list[tuple[str, HostTensor]]] | None = None, max_list: int = 4,
               max_bytes: int = 512, thresholds: Sequence[int] = THRESHOLDS) -> st.SearchStrategy[Any]:
    """Values of a WIT type, as wasmtime-py's component types describe it (a parameter
    type from `Instance.signature`), in the shape `Instance.call` takes: records as
    `Record`s, variants and results as `Variant(tag, payload)`, options as None or the
    value, flags as sets of names, enums as names, `list<u8>` as bytes (sometimes near a
    size of `thresholds`), and `tensor` handles as `HostTensor`s from `tensors` (default
    `tensors()`). With `inputs` (`inputs_for(model)`), a `list<tuple<string, tensor>>`
    is drawn from it, and a `list<tensor>` is its tensors. Other lists hold at most
    `max_list` elements. A resource the guest defines cannot be made by the host:
    `Unsupported`.

    >>> [(name, ty)], _ = inst.signature("echo-many")       # func(ts: list<tensor>)
    >>> [t.dims for t in values_for(ty, max_list=2).example()]
    [(0, 7), ()]
    >>> values_for(ty, tensors=tensors(ty=TensorType.U8, dims=[224, 224, 3]))
    >>> values_for(ty, inputs=inputs_for("model.onnx"))     # the model's inputs, in order
    """
    _check_strategy("tensors", tensors, "HostTensors")
    _check_strategy("inputs", inputs, "lists of (name, HostTensor) pairs (inputs_for)")
    _check_size("max_list", max_list)
    _check_size("max_bytes", max_bytes)
    _check_thresholds(thresholds)
    return _values_for(ty, tensors, inputs, max_list, max_bytes, tuple(thresholds))


def _values_for(ty, tensors, inputs, max_list: int, max_bytes: int, thresholds: tuple[int, ...]):
    def of(t):
        return _values_for(t, tensors, inputs, max_list, max_bytes, thresholds)
    if type(ty) in _INTEGERS:
        return st.integers(*_INTEGERS[type(ty)])
    if isinstance(ty, Bool):
        return st.booleans()
    if isinstance(ty, F32):
        return st.floats(width=32)
    if isinstance(ty, F64):
        return st.floats()
    if isinstance(ty, Char):
        return st.characters()
    if isinstance(ty, String):
        return st.text(max_size=64)
    if isinstance(ty, ListType):
        if is_bytes(ty):
            return _bytes(max_bytes, thresholds)
        if inputs is not None and is_tensor(ty.element):
            return inputs.map(lambda named: [t for _, t in named])
        if inputs is not None and is_named_tensor(ty.element):
            return inputs
        return st.lists(of(ty.element), max_size=max_list)
    if isinstance(ty, TupleType):
        return st.tuples(*[of(t) for t in ty.elements])
    if isinstance(ty, RecordType):
        fields = ty.fields
        return st.tuples(*[of(t) for _, t in fields]).map(lambda vals: _record(fields, vals))
    if isinstance(ty, (VariantType, ResultType)):
        cases = ty.cases if isinstance(ty, VariantType) else [("ok", ty.ok), ("err", ty.err)]
        return st.one_of(*[st.just(Variant(name)) if t is None else of(t).map(lambda v, n=name: Variant(n, v))
                           for name, t in cases])
    if isinstance(ty, OptionType):
        return st.one_of(st.none(), of(ty.payload))
    if isinstance(ty, EnumType):
        return st.sampled_from(ty.names)
    if isinstance(ty, FlagsType):
        return st.sets(st.sampled_from(ty.names)) if ty.names else st.just(set())
    if is_tensor(ty):
        return _any_tensors() if tensors is None else tensors
    raise Unsupported(f"cannot make values of {type_name(ty)}: only the guest can create such a value")


def _record(fields, vals) -> Record:
    r = Record()
    for (name, _), v in zip(fields, vals):
        setattr(r, name, v)
    return r



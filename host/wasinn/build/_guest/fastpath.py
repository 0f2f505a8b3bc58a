"""Guest-side: routes large wasi:nn payloads through wasinn:fastpath/bulk.

`wasinn build` puts this module into the component and imports it before the app, so
the app's own `graph.load(...)`, `tensor.Tensor(...)` and `Tensor.data()` calls (the
standard wasi:nn API) move payloads by naming the guest's `bytes` object to the host,
which copies it in one go: model and tensor bytes always (componentize-py 0.25 never
frees the copy it makes of a `bytes` lowered as `list<u8>`, so the standard path
leaks guest memory on every call), `data()` from THRESHOLD bytes on (a result
`list<u8>` is freed; below that size one call beats two). Anything that is not a
plain `bytes` takes the standard path. This runs inside the guest's
Python (CPython on wasm32), whose object layout the host checks on every call.
"""
import sys

from componentize_py_types import Err
from wit_world.imports import bulk, graph, tensor

THRESHOLD = 64 * 1024
# bytes: 16-byte header + NUL on wasm32; the host relies on this layout
_LAYOUT_OK = sys.getsizeof(b"") == 17

_Tensor = tensor.Tensor
_standard_init = _Tensor.__init__
_standard_data = _Tensor.data
_standard_load = graph.load


def _span(b: bytes) -> bulk.Span:
    return bulk.Span(id(b), len(b))


def _bulky(data) -> bool:
    return _LAYOUT_OK and type(data) is bytes


def _new(cls, *args, **kwargs):
    dims, ty, data = (list(args) + [kwargs.get(k) for k in ("dimensions", "ty", "data")][len(args):])[:3]
    if _bulky(data):
        t = bulk.tensor_from_memory(list(dims), ty, _span(data))
        t._built_in_bulk = True
        return t
    return object.__new__(cls)


def _init(self, *args, **kwargs):
    if not self.__dict__.pop("_built_in_bulk", False):
        _standard_init(self, *args, **kwargs)


def _data(self) -> bytes:
    if not _LAYOUT_OK:
        return _standard_data(self)
    try:
        return bulk.small_data(self, THRESHOLD - 1)  # small: the bytes come back in this one call
    except Err as e:
        size = e.value
    out = bytes(size)  # a fresh object: the host fills its payload before anything reads it
    bulk.read_data(self, _span(out))
    return out


def _load(builders, encoding, target):
    if builders and all(_bulky(b) for b in builders):
        return bulk.load([_span(b) for b in builders], encoding, target)
    return _standard_load(builders, encoding, target)


_Tensor.__new__ = _new
_Tensor.__init__ = _init
_Tensor.data = _data
graph.load = _load

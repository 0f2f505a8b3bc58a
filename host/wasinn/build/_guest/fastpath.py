"""Guest-side: names the bytes of the app's tensors and models to the host in place.

`wasinn build` puts this module into the component and imports it before the app, so
the app's own `tensor.Tensor(...)` and `graph.load(...)` calls (the standard wasi:nn
API) pass a `bytes` object by address, which the host copies in one go:
componentize-py 0.25 never frees the copy it makes of a `bytes` lowered as a
`list<u8>` argument, so there the standard path would leak the payload in guest memory
on every call. Everything else, `Tensor.data()` included, takes the standard path
(wasinn serves it from guest memory). Anything that is not a plain `bytes` does too.
This runs inside the guest's Python (CPython on wasm32), whose object layout the host
checks on every call.
"""
import sys

from wit_world.imports import bulk, graph, tensor

# bytes: 16-byte header + NUL on wasm32; the host relies on this layout
_LAYOUT_OK = sys.getsizeof(b"") == 17

_Tensor = tensor.Tensor
_standard_init = _Tensor.__init__
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


def _load(builders, encoding, target):
    if builders and all(_bulky(b) for b in builders):
        return bulk.load([_span(b) for b in builders], encoding, target)
    return _standard_load(builders, encoding, target)


_Tensor.__new__ = _new
_Tensor.__init__ = _init
graph.load = _load

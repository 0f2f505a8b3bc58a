"""The host side of wasinn:fastpath/bulk: the bytes of a Python guest's tensors and
models copied straight out of its `bytes` objects (see memory.py for how the host owns
guest memory, and wit/deps/wasinn-fastpath for why Python guests need this).

A span names a CPython `bytes` object inside the guest (wasm32 layout: refcount, type,
size, hash, then the payload and a NUL). Before touching anything the host checks the
span lies inside the guest's memory and that the header there describes a live
`bytes` of that length; a bad span is an `invalid-argument` error, never a trap and
never an access outside the guest's memory.
"""
from __future__ import annotations

from .._bindings import ExecutionTarget, GraphEncoding, Resource, Span, TensorType
from ..errors import invalid_argument
from .memory import HostMemories, LinearMemory, OutOfBounds
from ..nn import WasiNn, returns_error, store_key

# PyBytesObject on wasm32: ob_refcnt@0, ob_type@4, ob_size@8, ob_shash@12, ob_sval@16
_HEADER = 16


def _payload(memory: LinearMemory, span: Span) -> int:
    """The guest address of the payload of the `bytes` object `span` names."""
    try:
        memory.check(span.addr, _HEADER + span.len + 1)
        refcount, size = memory.i32(span.addr), memory.i32(span.addr + 8)
        if refcount <= 0 or size != span.len or memory.byte(span.addr + _HEADER + span.len) != 0:
            raise invalid_argument(f"span {span.addr}+{span.len} does not name a live bytes object of that length")
    except OutOfBounds as e:
        raise invalid_argument(f"span {span.addr}+{span.len}: {e}") from None
    return span.addr + _HEADER


class Bulk:
    """Implements the generated `WasinnFastpathHost` on the shared wasi:nn tables."""

    def __init__(self, nn: WasiNn, memories: HostMemories):
        self.nn = nn
        self.memories = memories

    def _memory(self, store) -> LinearMemory:
        try:
            return self.memories.main_memory(store_key(store))
        except OutOfBounds as e:
            raise invalid_argument(str(e)) from None

    @returns_error
    def load(self, store, builders: list[Span], encoding: GraphEncoding, target: ExecutionTarget) -> int:
        self.nn.limits.check_builders(len(builders))
        memory = self._memory(store)
        views = [memory.view(_payload(memory, s), s.len) for s in builders]
        return self.nn.add(store, Resource.GRAPH, self.nn.load_views(views, encoding, target, self.nn.session(store)))

    def tensor_from_memory(self, store, dimensions: list[int], ty: TensorType, data: Span) -> int:
        """A bad span is an error; a tensor over a limit traps, as the constructor this
        stands in for does (nn.py)."""
        memory, payload = self._bytes(store, data)
        deadline = self.nn.call_deadline(store)  # as the constructor's copy: none of its slices begun past it
        return self.nn.tensor_from_guest(store, len(dimensions), lambda: dimensions, ty, data.len,
                                         lambda into: memory.read_array(payload, data.len, into, deadline,
                                                                        "the tensor's data"))

    @returns_error
    def _bytes(self, store, data: Span) -> tuple[LinearMemory, int]:
        memory = self._memory(store)
        return memory, _payload(memory, data)

"""The standard data path: wasi:nn's byte-carrying calls of any component, taken over
at the core level so that payloads cross as spans of guest memory.

wasmtime-py lifts a `list<u8>` that a guest passes to a host function into one 32-byte
value per byte (and caps that at 2,796,202 bytes per call), and lowers one the other
way byte by byte in Python. A second component in between does not help: wasmtime's
fused adapters copy lists between components element by element (~1 GB/s). What is
fast is a core module that shares the guest's memory and hands the host (address,
length) pairs: the host allocates every guest memory itself (memory.py), so it reads
and writes them with one memmove.

rewrite.py puts that core module into a component when it is compiled; `AdapterHost`
here is the host half it calls: the generated wasinn:adapter interfaces (the data-flow
operators' `buffer.read` half, wasinn:adapter-buffers, is pipeline/services/imports.py's
`BufferSpans`, on the same `SpanBinding`).
"""
from __future__ import annotations

import os

from .._bindings import ExecutionTarget, GraphEncoding, Resource, TensorType
from ..errors import invalid_argument
from ..nn import WasiNn, returns_error, store_key
from .memory import HostMemories, LinearMemory, OutOfBounds


class SpanBinding:
    """What every adapter interface starts with: `bind-nonce` and `bind`, which tell the
    host which of the caller's memories its spans point into."""

    def __init__(self, memories: HostMemories):
        self.memories = memories

    def _memory(self, store) -> LinearMemory:
        return self.memories.bound(store_key(store))

    def bind_nonce(self, store) -> int:
        nonce = int.from_bytes(os.urandom(8), "little")  # as secrets.randbits(64), whose import loads OpenSSL
        self.memories.expect_nonce(store_key(store), nonce)
        return nonce

    def bind(self, store, addr: int) -> None:
        self.memories.bind_by_nonce(store_key(store), addr)


class AdapterHost(SpanBinding):
    """Implements the generated wasinn:adapter interfaces on the shared wasi:nn tables.

    A tensor span outside the guest's memory raises, which traps the guest, as the
    canonical ABI traps on such a list (the constructor has no error to return), and so
    does a tensor over a limit (nn.py); a bad builder span is graph.load's
    `invalid-argument`.
    """

    def __init__(self, nn: WasiNn, memories: HostMemories):
        super().__init__(memories)
        self.nn = nn

    def new_tensor(self, store, dims: int, dims_len: int, ty: TensorType, data: int, data_len: int) -> int:
        memory = self._memory(store)
        if dims % 4:
            raise OutOfBounds(f"the tensor's dimensions at {dims} are not aligned to 4 bytes")
        memory.check(dims, 4 * dims_len)
        memory.check(data, data_len)
        deadline = self.nn.call_deadline(store)
        return self.nn.tensor_from_guest(store, dims_len, lambda: memory.read_array(dims, 4 * dims_len).view("<u4"),
                                         ty, data_len, lambda into: memory.read_array(data, data_len, into, deadline,
                                                                                      "the tensor's data"))

    def data_len(self, store, t: int) -> int:
        return self.nn.get(t, Resource.TENSOR).nbytes

    def read_data(self, store, t: int, dest: int, n: int) -> None:
        tensor = self.nn.get(t, Resource.TENSOR)
        if n != tensor.nbytes:
            raise OutOfBounds(f"read-data of {n} bytes for a tensor of {tensor.nbytes}")
        self._memory(store).write(dest, tensor.data, self.nn.call_deadline(store), "the tensor's data")

    @returns_error
    def load(self, store, builders: int, count: int, encoding: GraphEncoding, target: ExecutionTarget) -> int:
        memory = self._memory(store)
        self.nn.limits.check_builders(count)
        try:
            spans = memory.read_array(builders, 8 * count).view("<u4").reshape(count, 2)
            views = [memory.view(int(addr), int(n)) for addr, n in spans]
        except OutOfBounds as e:
            raise invalid_argument(f"graph.load: {e}") from None
        return self.nn.add(store, Resource.GRAPH, self.nn.load_views(views, encoding, target, self.nn.session(store)))

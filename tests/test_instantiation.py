"""Fresh instances on host-owned memories (abi/memory.py): a freed guest memory's mapping
is recycled for the next one, and nothing of one instance reaches the next.

Timings are not asserted here (scripts/bench.py measures them); these are behaviours.
"""
from __future__ import annotations

import numpy as np
import pytest
import wasmtime

from wasinn.abi import memory as hostmem
from wasinn.abi.memory import HostMemories

PAGE = 65536
# A core module on a memory of one page (at most 1000) with an initial image at 16.
WAT = """(module
  (memory (export "m") 1 1000)
  (data (i32.const 16) "init")
  (func (export "store") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"""
INIT = int.from_bytes(b"init", "little")
FAR = 40 << 20  # past the prefix a recycled mapping keeps resident (hostmem._KEEP_RESIDENT)


class Guest:
    """One instance of WAT in a store of its own, on `memories`."""

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module):
        self._store = wasmtime.Store(engine)
        self._exports = wasmtime.Instance(self._store, module, []).exports(self._store)

    def store(self, addr: int, value: int) -> None:
        self._exports["store"](self._store, addr, value)

    def load(self, addr: int) -> int:
        return self._exports["load"](self._store, addr)

    def grow(self, pages: int) -> int:
        return self._exports["grow"](self._store, pages)

    def pages(self) -> int:
        return self._exports["m"].size(self._store)

    def close(self) -> None:
        self._store.close()


@pytest.fixture
def memories():
    memories = HostMemories()
    config = wasmtime.Config()
    memories.install(config)
    engine = wasmtime.Engine(config)
    module = wasmtime.Module(engine, WAT)
    yield memories, lambda: Guest(engine, module)
    memories.release()


def test_a_freed_memory_is_recycled_with_none_of_its_bytes(memories):
    memories, guest = memories
    first = guest()
    assert first.grow(FAR // PAGE + 1) == 1
    for addr in (0, 16, 4096, PAGE, FAR):
        first.store(addr, 0x5EC2E7)
    base = memories._memories[max(memories._memories)].base
    first.close()
    assert memories.live() == 0 and len(memories._free) == 1

    second = guest()
    assert memories._memories[max(memories._memories)].base == base  # the same mapping
    assert second.pages() == 1
    assert second.load(16) == INIT  # its own initial image
    assert second.load(0) == 0 and second.load(4096) == 0
    with pytest.raises(wasmtime.Trap, match="out of bounds"):
        second.load(PAGE)  # closed again past the new memory's size
    assert second.grow(FAR // PAGE + 1) == 1
    assert second.load(PAGE) == 0 and second.load(FAR) == 0  # grown pages are zero too
    second.close()


def test_the_pool_is_bounded_and_release_empties_it(memories):
    memories, guest = memories
    guests = [guest() for _ in range(hostmem._POOL_SIZE + 2)]
    for g in guests:
        g.store(0, 7)
        g.close()
    assert memories.live() == 0 and len(memories._free) == hostmem._POOL_SIZE
    memories.release()
    assert memories._free == []
    again = guest()
    assert again.load(0) == 0 and again.load(16) == INIT
    again.close()


def test_instances_of_a_component_in_turn_each_start_clean(host, roundtrip_component):
    """A component's instances, one after another (each on the last one's memory): each
    echoes, and the store-to-memory bookkeeping ends where it began."""
    live = host.memories.live()
    for i in range(hostmem._POOL_SIZE + 2):
        with host.instantiate(roundtrip_component) as inst:
            out = inst.call("echo", np.full(5, i, np.float32))
            assert out.array().tolist() == [float(i)] * 5
            assert inst.instances_started == 1
    assert host.memories.live() == live
    assert len(host.memories._free) <= hostmem._POOL_SIZE

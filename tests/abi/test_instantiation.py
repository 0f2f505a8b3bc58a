"""Fresh instances on host-owned memories (abi/memory.py): a freed guest memory's mapping
is recycled for the next one, initial memory images are mapped copy-on-write
(abi/images.py), and nothing of one instance reaches the next.

Timings are not asserted here (benchmarks/bench.py measures them); these are behaviours.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
import wasmtime

from wasmtime.component import Component, Linker

from wasinn.abi import images
from wasinn.abi import memory as hostmem
from wasinn.abi.memory import HostMemories
from wasinn.embedding.records import record
from wasinn.nn import store_key

from support.internals import live_memories

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
    """One instance of WAT in a store of its own, on `memories` (with `image`, its
    memory image as the compile step strips it out)."""

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module, memories: HostMemories,
                 image: images.MemoryImages | None = None):
        self._store = wasmtime.Store(engine)
        with memories.instantiating(store_key(self._store), image):
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


def _engine(memories: HostMemories) -> wasmtime.Engine:
    config = wasmtime.Config()
    memories.install(config)
    return wasmtime.Engine(config)


@pytest.fixture(params=["copied", "mapped"])
def memories(request):
    """WAT's instances with the initial image copied in by wasmtime, or mapped from
    the image that images.py takes out of the module."""
    memories = HostMemories()
    engine = _engine(memories)
    if request.param == "copied":
        module, image = wasmtime.Module(engine, WAT), None
    else:
        stripped, *image = images._strip_module(wasmtime.wat2wasm(WAT))
        module, image = wasmtime.Module(engine, stripped), images.MemoryImages.load(images._blob([image]))
    yield memories, lambda: Guest(engine, module, memories, image)
    memories.release()


def test_a_freed_memory_is_recycled_with_none_of_its_bytes(memories):
    memories, guest = memories
    first = guest()
    assert first.grow(FAR // PAGE + 1) == 1
    for addr in (0, 16, 4096, PAGE, FAR):
        first.store(addr, 0x5EC2E7)
    base = memories._memories[max(memories._memories)].base
    first.close()
    assert live_memories(memories) == 0 and len(memories._free) == 1

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
    assert live_memories(memories) == 0 and len(memories._free) == hostmem._POOL_SIZE
    memories.release()
    assert memories._free == []
    again = guest()
    assert again.load(0) == 0 and again.load(16) == INIT
    again.close()


def test_instances_of_a_component_in_turn_each_start_clean(wasinn_host, roundtrip_component):
    """A component's instances, one after another (each on the last one's memory): each
    echoes, and the store-to-memory bookkeeping ends where it began."""
    live = live_memories(wasinn_host.memories)
    for i in range(hostmem._POOL_SIZE + 2):
        with wasinn_host.instantiate(roundtrip_component) as inst:
            out = inst.call("echo", np.full(5, i, np.float32))
            assert out.array().tolist() == [float(i)] * 5
            assert inst.instances_started == 1
    assert live_memories(wasinn_host.memories) == live
    assert len(wasinn_host.memories._free) <= hostmem._POOL_SIZE


def test_writes_to_a_mapped_image_stay_in_their_instance(memories):
    """Two live instances share the image's pages until one writes; then a recycled
    mapping (its written pages restored) and a new one both start from the image."""
    memories, guest = memories
    a, b = guest(), guest()
    a.store(16, 0x5EC2E7)
    a.store(PAGE - 4, 0x5EC2E7)
    assert b.load(16) == INIT and b.load(PAGE - 4) == 0
    b.close()
    assert a.load(16) == 0x5EC2E7
    a.close()
    for _ in range(hostmem._POOL_SIZE + 1):  # the recycled mappings, then a new one too
        c = guest()
        assert c.load(16) == INIT and c.load(PAGE - 4) == 0 and c.load(0) == 0
        c.store(16, 0x5EC2E7)
        if len(memories._free) == 0:
            d = guest()  # none left to recycle: a new mapping
            assert d.load(16) == INIT
            d.close()
        c.close()


def test_memory_grows_past_its_image(memories):
    memories, guest = memories
    g = guest()
    assert g.grow(FAR // PAGE + 1) == 1
    assert g.load(16) == INIT and g.load(PAGE) == 0 and g.load(FAR) == 0
    g.store(FAR, 7)
    g.store(PAGE, 8)
    assert g.load(FAR) == 7 and g.load(PAGE) == 8 and g.load(16) == INIT
    g.close()


TWO_MODULES = """(component
  (core module $a (memory (export "m") 1) (data (i32.const 8) "aaaa")
    (func (export "get") (result i32) (i32.load (i32.const 8))))
  (core module $b (memory (export "m") {b_pages}) (data (i32.const 8) "bbbb")
    (func (export "get") (result i32) (i32.load (i32.const 8))))
  (core instance $ia (instantiate $a))
  (core instance $ib (instantiate $b))
  (func (export "a") (result u32) (canon lift (core func $ia "get")))
  (func (export "b") (result u32) (canon lift (core func $ib "get"))))"""


@pytest.mark.parametrize("b_pages", [1, 2])
def test_each_memory_gets_its_own_modules_image_or_none(b_pages):
    """Modules whose memories have the same type cannot be told apart at creation:
    they keep their segments (wasmtime copies them); distinct types get their images."""
    memories = HostMemories()
    engine = _engine(memories)
    wasm = wasmtime.wat2wasm(TWO_MODULES.format(b_pages=b_pages))
    stripped, blob = images.strip(wasm)
    image = images.MemoryImages.load(blob)
    assert (stripped == wasm) == (b_pages == 1) and (image is None) == (b_pages == 1)
    component = Component(engine, stripped)
    linker = Linker(engine)
    for _ in range(hostmem._POOL_SIZE + 1):
        store = wasmtime.Store(engine)
        with memories.instantiating(store_key(store), image):
            instance = linker.instantiate(store, component)
        assert [instance.get_func(store, f)(store) for f in "ab"] == [int.from_bytes(x, "little")
                                                                       for x in (b"aaaa", b"bbbb")]
        store.close()
    memories.release()


def test_a_module_whose_segments_cannot_be_taken_keeps_them():
    """A segment at an offset known only at instantiation stays in the module."""
    wat = """(module (import "" "at" (global $at i32)) (memory (export "m") 1)
      (data (global.get $at) "init") (func (export "load") (param i32) (result i32) (i32.load (local.get 0))))"""
    assert images._strip_module(wasmtime.wat2wasm(wat)) is None
    memories = HostMemories()
    engine = _engine(memories)
    store = wasmtime.Store(engine)
    at = wasmtime.Global(store, wasmtime.GlobalType(wasmtime.ValType.i32(), False), wasmtime.Val.i32(32))
    with memories.instantiating(store_key(store), None):
        exports = wasmtime.Instance(store, wasmtime.Module(engine, wat), [at]).exports(store)
    assert exports["load"](store, 32) == INIT
    store.close()
    memories.release()


def test_component_instances_start_from_their_image(wasinn_host, roundtrip_component):
    """A componentize-py guest's memory starts as its image, whatever the instance
    before it (on the same mapping or beside it) wrote there."""
    memory_images = record(roundtrip_component).images
    assert memory_images is not None
    (runs, length), = memory_images.images.values()
    expected = np.zeros(length, np.uint8)  # zeros between its runs
    for at, offset, n in runs:
        image = memory_images.view + offset
        expected[at:at + n] = np.ctypeslib.as_array((ctypes.c_uint8 * n).from_address(image))
    scribbler = wasinn_host.instantiate(roundtrip_component)
    scribbler.call("echo", np.zeros(3, np.float32))
    memory = wasinn_host.memories.main_memory(store_key(scribbler._store))
    memory.write(0, np.full(length, 0xA5, np.uint8))
    for i in range(hostmem._POOL_SIZE + 1):
        with wasinn_host.instantiate(roundtrip_component) as inst:
            inst._ensure()
            fresh = wasinn_host.memories.main_memory(store_key(inst._store))
            assert np.array_equal(fresh.read_array(0, length), expected)
            assert inst.call("echo", np.full(4, i, np.float32)).array().tolist() == [float(i)] * 4
            fresh.write(0, np.full(length, 0x5A, np.uint8))
        if i == 0:
            scribbler.close()


SPARSE = """(module
  (memory (export "m") 4 4)
  (data (i32.const 16) "init")
  (data (i32.const 196624) "far!")
  (func (export "store") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0))))"""


def test_an_image_in_runs_is_restored_and_its_gaps_zeroed():
    """Segments far apart make an image of two runs with anonymous memory between them:
    a recycled mapping gets both runs back and the gap zeroed, whatever was written."""
    stripped, key, runs, data = images._strip_module(wasmtime.wat2wasm(SPARSE))
    assert [(at, n) for at, _, n in runs] == [(0, hostmem._PAGE), (3 * PAGE, hostmem._PAGE)]
    assert len(data) == 2 * hostmem._PAGE  # the bytes of the runs, not of the extent
    memories = HostMemories()
    engine = _engine(memories)
    module, image = wasmtime.Module(engine, stripped), images.MemoryImages.load(images._blob([(key, runs, data)]))
    far = 3 * PAGE + 16
    for _ in range(hostmem._POOL_SIZE + 2):
        g = Guest(engine, module, memories, image)
        assert g.load(16) == INIT and g.load(far) == int.from_bytes(b"far!", "little")
        assert g.load(PAGE) == 0 and g.load(2 * PAGE + 8) == 0 and g.load(far + 64) == 0
        for addr in (16, PAGE, 2 * PAGE + 8, far, far + 64):
            g.store(addr, 0x5EC2E7)
        g.close()
    memories.release()

"""Guest linear memories that the host allocates, so it can copy in and out of them.

wasmtime lets an embedder create every linear memory itself (the C API's host memory
creator). wasinn does, with mmap: it then knows where each guest memory lives and the
data path (adapter.py, and bulk.py for Python guests' shim) copies payloads with one
memmove instead of wasmtime-py's per-element value conversion.

Layout per memory: wasmtime asks for a reservation (4 GiB for 32-bit memories, so it
can drop bounds checks) plus a guard region; both are reserved PROT_NONE and only the
accessible prefix is made read-write, growing with mprotect. Pages are never moved.

wasmtime's copy-on-write memory images need its own memories; with host memories it
would copy a module's data segments into each fresh memory. So the compile step takes
those bytes out of the component (images.py) and a memory whose type has an image gets
its runs mapped MAP_PRIVATE|MAP_FIXED from a file nobody writes: pages are shared until
the guest writes them, and a write only ever lands in a private copy.

A freed memory's mapping is kept for the next one of the same reservation, since
faulting fresh pages in costs more than zeroing: its first `_KEEP_RESIDENT` bytes are
zeroed by memset, except the part its image was mapped over; the rest is replaced by
fresh pages, which the kernel zero-fills on the next touch; and everything past the new
memory's size is closed again. Below the image's end: the pages the instance wrote
(its private copies, which /proc/self/pagemap tells from the file's own pages) get the
image's bytes back, or zeros between its runs, so the next memory with that image
finds it in place and faulted in; a memory with another image or none gets fresh
pages there first, which drops them. No
byte of one instance is ever visible to the next.

Every memory wasinn's engines make comes from here, so the memory limit is a total:
wasmtime's store limit (`memory_size`) holds per memory, and a guest defining 16
memories would get 16 times it. A `MemoryBudget` counts one store's memories
together; a memory that would start or grow past it is refused, which wasmtime
reports as it does its own limit (a failed instantiation; memory.grow returns -1).

Callbacks run inside wasmtime and must never raise: failures go back as wasmtime
errors. The object must outlive the engine and every store (`Host` holds it).
"""
from __future__ import annotations

import bisect
import contextlib
import ctypes
import itertools
import mmap
import os
import threading
from typing import TYPE_CHECKING

from ..lazy import numpy as np
from .. import copies
from ..embedding.memory import MemoryCreator, error as _error, memory_type_is64, memory_type_key as _type_key

if TYPE_CHECKING:
    from .images import MemoryImages

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
_MAP_FIXED = 0x10

_PROT_NONE, _PROT_RW = 0, mmap.PROT_READ | mmap.PROT_WRITE
_MAP_FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000  # MAP_NORESERVE
_MAP_FAILED = ctypes.c_void_p(-1).value
# Instantiation still copies the data segments of a module images.py could not strip:
# huge pages make that copy ~3x faster. (A mapped image's pages are the file's, not huge.)
_MADV_HUGEPAGE = 14
_PAGE = mmap.PAGESIZE
_DEFAULT_RESERVE = 4 << 30
# A recycled mapping keeps this much resident (zeroed) for the next memory's image; past
# it the pages go back to the kernel. Covers the initial memory of every guest we ship
# (componentize-py: ~12 MiB, componentize-js: ~9 MiB, C: 256 KiB).
_KEEP_RESIDENT = 32 << 20
_POOL_SIZE = 2  # freed mappings kept, in all; each holds up to _KEEP_RESIDENT resident

# From this many bytes `copy_into` copies with ctypes' memmove, which releases the GIL: a
# slice assignment holds it for the whole copy (a 900 MiB tensor.data, or a core module's
# 1000 MiB get_output, held every other thread, another instance's calls among them,
# 230-400 ms).
_COPY_WITHOUT_THE_GIL = 1 << 20
_memory_view = ctypes.pythonapi.PyMemoryView_FromMemory
_memory_view.restype = ctypes.py_object
_memory_view.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
_PYBUF_READ = 0x100
_PYBUF_WRITE = 0x200


def _round_up(n: int) -> int:
    return (n + _PAGE - 1) // _PAGE * _PAGE


class OutOfBounds(ValueError):
    pass


class MemoryBudget:
    """The bytes one store's memories may hold together (limit 'memory'), and how far
    they could reach together: 4 GiB per 32-bit memory, unbounded with a 64-bit one."""

    __slots__ = ("limit", "used", "memories", "reach")

    def __init__(self, limit: int):
        self.limit, self.used, self.memories, self.reach = limit, 0, 0, 0

    def refusal(self, total: int) -> str:
        return (f"its memories would hold {total / 2**20:.1f} MiB together; the limit is "
                f"{self.limit / 2**20:g} MiB (limit 'memory', --memory)")


class LinearMemory:
    """One guest memory. Every access is checked against its current size."""

    __slots__ = ("base", "size", "reserve", "mapped", "committed", "images", "image", "imaged", "alive", "owner",
                 "budget")

    def __init__(self, base: int, size: int, reserve: int, mapped: int,
                 images: "MemoryImages | None" = None, image: tuple | None = None,
                 budget: MemoryBudget | None = None):
        self.base, self.size, self.reserve, self.mapped = base, size, reserve, mapped
        self.committed = _round_up(size)
        self.images = images  # held: `image` is read back from its view
        self.image = image  # (serial, runs) of the image mapped into it (images.py)
        self.imaged = image[1][-1][0] + image[1][-1][2] if image else 0  # where its last run ends
        self.alive = True
        self.owner: int | None = None
        self.budget = budget

    def check(self, addr: int, n: int) -> None:
        if not self.alive:
            raise OutOfBounds("the guest memory was already freed")
        if addr < 0 or n < 0 or addr + n > self.size:
            raise OutOfBounds(f"bytes {addr}..{addr + n} are outside the guest's memory of {self.size} bytes")

    def u32(self, addr: int) -> int:
        self.check(addr, 4)
        return ctypes.c_uint32.from_address(self.base + addr).value

    def i32(self, addr: int) -> int:
        self.check(addr, 4)
        return ctypes.c_int32.from_address(self.base + addr).value

    def byte(self, addr: int) -> int:
        self.check(addr, 1)
        return ctypes.c_uint8.from_address(self.base + addr).value

    def view(self, addr: int, n: int) -> memoryview:
        """The bytes in place, read-only, for the current host call only: once the guest
        runs again it may change them, and once the instance is gone they are unmapped."""
        self.check(addr, n)
        return _memory_view(self.base + addr, n, _PYBUF_READ)

    def read_array(self, addr: int, n: int, into: np.ndarray | None = None, deadline: float | None = None,
                   what: str = "the bytes") -> np.ndarray:
        """A copy of `n` bytes at `addr`, in `into` (a uint8 array of `n`) or a new array:
        copies.copy, without the GIL, none of its slices begun past `deadline`."""
        self.check(addr, n)
        out = np.empty(n, np.uint8) if into is None else into
        if n:
            copies.copy(out.ctypes.data, self.base + addr, n, deadline, what)
        return out

    def write(self, addr: int, data, deadline: float | None = None, what: str = "the bytes") -> None:
        # A memoryview slice assignment is one memcpy with ~10x less Python around it than
        # numpy's ctypes address and memmove: it runs on every data(), right after a model
        # run has pushed the interpreter out of the CPU's caches.
        try:
            src = memoryview(data).cast("B")
        except TypeError:  # not C-contiguous
            src = memoryview(np.ascontiguousarray(data)).cast("B")
        self.check(addr, src.nbytes)
        copy_into(self.base + addr, src, deadline, what)


def copy_into(address: int, src: memoryview, deadline: float | None = None, what: str = "the bytes") -> None:
    """The bytes of `src` to `address` (checked by the caller): one memcpy, and from
    _COPY_WITHOUT_THE_GIL bytes on, copies.copy: slices that let other threads run
    meanwhile (and through the page faults of guest memory touched the first time), none
    begun past `deadline`."""
    n = src.nbytes
    if n >= _COPY_WITHOUT_THE_GIL:
        copies.copy(address, copies.address_of(src), n, deadline, what)
    elif n:
        _memory_view(address, n, _PYBUF_WRITE)[:] = src


class HostMemories:
    """The memory creator for one engine, and which memories belong to which store."""

    def __init__(self):
        self._memories: dict[int, LinearMemory] = {}
        self._by_store: dict[int, list[LinearMemory]] = {}
        self._bound: dict[int, LinearMemory] = {}  # store -> the memory the adapter works in
        self._nonces: dict[int, int] = {}
        self._ids = itertools.count(1)
        # recycled mappings: (base, mapped, committed, dirty, holds): all zero past `dirty`;
        # `holds`, where not None, is the image (serial, runs) below it, untouched
        self._free: list[tuple[int, int, int, int, tuple | None]] = []
        # How many freed mappings are kept for later memories. Keeping one zeroes it, faulting
        # its pages in: a host that instantiates once (a CLI command) sets 0 and saves that peak.
        self.pool_size = _POOL_SIZE
        self._pagemap: tuple[int, int] | None = None  # (pid, fd)
        # Re-entrant: a store the garbage collector frees inside a locked section
        # calls `_finalize` from there.
        self._lock = threading.RLock()
        self._instantiating = threading.local()
        self._creator = MemoryCreator(self._new_memory, self._get_memory, self._grow_memory, self._finalize)

    def install(self, config) -> None:
        """Makes `config`'s engine allocate guest memories here. wasmtime's copy-on-write
        memory images need its own mmap-backed memories, so they are turned off."""
        self._creator.install(config)
        config.memory_init_cow = False

    # --- wasmtime callbacks ------------------------------------------------------------
    def _new_memory(self, env, ty, minimum, maximum, reserved, guard, ret):
        try:
            budget = getattr(self._instantiating, "budget", None)
            if budget is not None and budget.used + minimum > budget.limit:
                return _error(budget.refusal(budget.used + minimum))
            reserve = max(_round_up(reserved or min(_DEFAULT_RESERVE, maximum or _DEFAULT_RESERVE)),
                          _round_up(minimum))
            mapped = reserve + _round_up(guard)
            images = getattr(self._instantiating, "images", None)
            found = images.get(_type_key(ty)) if images is not None else None
            runs, imaged = found or ((), 0)
            if imaged > _round_up(minimum):
                return _error("wasinn: a memory image is larger than its memory")
            image = (images.serial, runs) if found else None
            base, in_place = self._recycled(mapped, _round_up(minimum), image)
            if base is None:
                base = _libc.mmap(None, mapped, _PROT_NONE, _MAP_FLAGS, -1, 0)
                if base in (None, _MAP_FAILED):
                    return _error(f"wasinn: cannot reserve {mapped} bytes for a guest memory (errno {ctypes.get_errno()})")
                _libc.madvise(base, reserve, _MADV_HUGEPAGE)
                if minimum and _libc.mprotect(base, _round_up(minimum), _PROT_RW) != 0:
                    _libc.munmap(base, mapped)
                    return _error(f"wasinn: cannot map a guest memory (errno {ctypes.get_errno()})")
            if not in_place and any(_libc.mmap(base + at, n, _PROT_RW, mmap.MAP_PRIVATE | _MAP_FIXED, images.fd, offset)
                                    != base + at for at, offset, n in runs):
                _libc.munmap(base, mapped)
                return _error(f"wasinn: cannot map a guest memory's image (errno {ctypes.get_errno()})")
            memory = LinearMemory(base, minimum, reserve, mapped, images if image else None, image, budget)
            key = next(self._ids)
            with self._lock:
                self._memories[key] = memory
                if budget is not None:
                    budget.used += minimum
                    budget.memories += 1
                    budget.reach += float("inf") if memory_type_is64(ty) else _DEFAULT_RESERVE
            pending = getattr(self._instantiating, "memories", None)
            if pending is not None:
                pending.append(memory)
            self._creator.hand_out(ret, key)
            return 0
        except BaseException as e:
            return _error(f"wasinn: guest memory creation failed: {e!r}")

    def _get_memory(self, env, size_out, capacity_out):
        memory = self._memories[env]
        size_out[0] = memory.size
        capacity_out[0] = memory.reserve
        return memory.base

    def _grow_memory(self, env, new_size):
        try:
            memory = self._memories[env]
            if new_size > memory.reserve:
                return _error(f"wasinn: a guest memory cannot grow past its {memory.reserve}-byte reservation")
            budget = memory.budget
            if budget is not None and budget.used + new_size - memory.size > budget.limit:
                return _error(budget.refusal(budget.used + new_size - memory.size))
            need = _round_up(new_size)
            if need > memory.committed:
                if _libc.mprotect(memory.base + memory.committed, need - memory.committed, _PROT_RW) != 0:
                    return _error(f"wasinn: cannot grow a guest memory (errno {ctypes.get_errno()})")
                memory.committed = need
            if budget is not None:
                with self._lock:  # the store's memories may be finalized on another thread
                    budget.used += new_size - memory.size
            memory.size = new_size
            return 0
        except BaseException as e:
            return _error(f"wasinn: growing a guest memory failed: {e!r}")

    def _finalize(self, env):
        with self._lock:
            memory = self._memories.pop(env, None)
            if memory is None:
                return
            memory.alive = False
            if memory.budget is not None:
                memory.budget.used -= memory.size
            owned = self._by_store.get(memory.owner)
            if owned is not None and memory in owned:
                owned.remove(memory)
                if not owned:
                    del self._by_store[memory.owner]
                    self._nonces.pop(memory.owner, None)
            if self._bound.get(memory.owner) is memory:
                del self._bound[memory.owner]
            keep = len(self._free) < self.pool_size
        kept = self._scrub(memory) if keep else None
        if kept is not None:
            with self._lock:
                if len(self._free) < self.pool_size:
                    self._free.append(kept)
                    return
        _libc.munmap(memory.base, memory.mapped)

    # --- recycled mappings -------------------------------------------------------------
    def _scrub(self, memory: LinearMemory) -> tuple[int, int, int, int, tuple | None] | None:
        """A freed memory made ready for reuse, as a pool entry: its image restored
        where it was written, its resident prefix zeroed by memset past that, and
        everything past the prefix replaced by fresh inaccessible pages (a file-backed
        page handed back would show the image again, not zeros)."""
        keep = min(memory.committed, _KEEP_RESIDENT)
        dirty = min(memory.imaged, keep)
        holds = memory.image if memory.imaged <= keep and self._restore_image(memory) else None
        if keep > dirty:
            _libc.memset(memory.base + dirty, 0, keep - dirty)
        rest = memory.committed - keep
        if rest:
            if _libc.mmap(memory.base + keep, rest, _PROT_NONE, _MAP_FLAGS | _MAP_FIXED, -1, 0) != memory.base + keep:
                return None
            _libc.madvise(memory.base + keep, rest, _MADV_HUGEPAGE)
        return memory.base, memory.mapped, keep, dirty, holds

    def _restore_image(self, memory: LinearMemory) -> bool:
        """Puts back every page below the image's end that the instance wrote: those
        are private copies, present or swapped out (pagemap bits 63 and 62) and not file
        pages (bit 61). A written page in a run gets the image's bytes back, one between
        runs zeros. Untouched pages still are the file's, or not mapped yet. False, and
        nothing done, when pagemap cannot be read."""
        pages = memory.imaged // _PAGE
        try:
            raw = os.pread(self._pagemap_fd(), 8 * pages, 8 * (memory.base // _PAGE))
        except OSError:
            return False
        if len(raw) != 8 * pages:
            return False
        flags = np.frombuffer(raw, "<u8") >> 61
        written = np.flatnonzero(((flags & 0b101) == 0b100) | ((flags & 0b010) != 0))
        if written.size:
            breaks = np.flatnonzero(np.diff(written) != 1)
            starts, ends = written[np.r_[0, breaks + 1]], written[np.r_[breaks, written.size - 1]] + 1
            runs = memory.image[1]
            firsts = [at for at, _, _ in runs]
            view = memory.images.view
            for start, end in zip((starts * _PAGE).tolist(), (ends * _PAGE).tolist()):
                i = max(bisect.bisect_right(firsts, start) - 1, 0)
                while start < end:  # across the runs and the gaps between them
                    at, offset, n = runs[i] if i < len(runs) else (end, 0, 0)
                    if start < at:
                        _libc.memset(memory.base + start, 0, min(at, end) - start)
                        start = min(at, end)
                    elif start < at + n:
                        stop = min(at + n, end)
                        ctypes.memmove(memory.base + start, view + offset + start - at, stop - start)
                        start = stop
                    else:
                        i += 1
        return True

    def _pagemap_fd(self) -> int:
        """This process's /proc/self/pagemap (opened again in a forked child: the
        parent's descriptor would describe the parent)."""
        pid = os.getpid()
        if self._pagemap is None or self._pagemap[0] != pid:
            self._pagemap = (pid, os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC))
        return self._pagemap[1]

    def _recycled(self, mapped: int, accessible: int, image: tuple | None) -> tuple[int | None, bool]:
        """A kept mapping of that size, read-write exactly up to `accessible`, and
        whether it holds `image` already (preferred); else it is all zeros and the
        caller maps the image's runs into it."""
        with self._lock:
            fits = [i for i, entry in enumerate(self._free) if entry[1] == mapped]
            if not fits:
                return None, False
            i = next((i for i in fits if image is not None and self._free[i][4] == image), fits[0])
            base, _, committed, dirty, holds = self._free.pop(i)
        in_place = image is not None and holds == image
        # the last memory's image pages: fresh zero pages (the new image is mapped over them)
        ok = in_place or not dirty or _libc.mmap(base, dirty, _PROT_RW, _MAP_FLAGS | _MAP_FIXED, -1, 0) == base
        if ok and accessible > committed:
            ok = _libc.mprotect(base + committed, accessible - committed, _PROT_RW) == 0
        elif ok and accessible < committed:  # zeroed already: only close what the new memory may not reach
            ok = _libc.mprotect(base + accessible, committed - accessible, _PROT_NONE) == 0
        if not ok:
            _libc.munmap(base, mapped)
            return None, False
        return base, in_place

    def release(self) -> None:
        """Unmaps the kept mappings (they are otherwise reused until the process ends)."""
        with self._lock:
            free, self._free = self._free, []
        for base, mapped, *_ in free:
            _libc.munmap(base, mapped)

    # --- which store owns what ---------------------------------------------------------
    @contextlib.contextmanager
    def instantiating(self, store_key: int, images: "MemoryImages | None", budget: MemoryBudget | None = None):
        """Attributes the memories created while instantiating into that store to it
        (instantiation is synchronous, so a per-thread list catches exactly those), counts
        them against `budget`, and gives those of a type in `images` (the component's,
        see images.py) their image."""
        self._instantiating.memories = pending = []
        self._instantiating.images = images
        self._instantiating.budget = budget
        try:
            yield
        finally:
            self._instantiating.memories = self._instantiating.images = self._instantiating.budget = None
            with self._lock:
                live = [m for m in pending if m.alive]
                for m in live:
                    m.owner = store_key
                if live:
                    self._by_store.setdefault(store_key, []).extend(live)

    def main_memory(self, store_key: int) -> LinearMemory:
        """The guest's memory (a componentize-py component has exactly one, beside the
        preview1 adapter's, which is smaller)."""
        memories = self._by_store.get(store_key)
        if not memories:
            raise OutOfBounds("this instance has no host-owned memory")
        return max(memories, key=lambda m: m.size)

    # --- the memory the data-path adapter works in (adapter.py) ------------------------
    def expect_nonce(self, store_key: int, nonce: int) -> None:
        with self._lock:
            self._nonces[store_key] = nonce

    def bind_by_nonce(self, store_key: int, addr: int) -> None:
        """Binds the store's memory that holds the expected nonce at `addr`. wasmtime
        gives a host function no handle on the caller's memory, and a component may
        have several; the adapter wrote a number only the host knew."""
        with self._lock:
            nonce = self._nonces.pop(store_key, None)
            candidates = [m for m in self._by_store.get(store_key, ())
                          if m.alive and addr + 8 <= m.size
                          and ctypes.c_uint64.from_address(m.base + addr).value == nonce]
            if nonce is None or len(candidates) != 1:
                raise OutOfBounds(f"cannot tell the adapter's memory ({len(candidates)} candidates)")
            self._bound[store_key] = candidates[0]

    def bound(self, store_key: int) -> LinearMemory:
        memory = self._bound.get(store_key)
        if memory is None or not memory.alive:
            raise OutOfBounds("the data-path adapter has not bound its memory")
        return memory

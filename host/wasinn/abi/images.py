"""Initial memory images that the host maps copy-on-write into host-owned memories.

wasmtime copies a module's data segments into every fresh memory the host creates
(its own copy-on-write images need its own memories): ~11 MB, about 1 ms, for a
componentize-py guest. `strip` moves those bytes out of the component once, when it
is compiled: each top-level core module that defines its memory and fills it only
with active segments at constant offsets gets its image built here, and those
segments keep their offsets but lose their bytes (indices stay, so `datacount`,
`memory.init` and `data.drop` mean what they meant; passive segments are untouched).
memory.py then maps the image MAP_PRIVATE over the new memory: shared until written,
faulted in on first touch, and a write never reaches the file.

An image is runs: the page-aligned spans its segments fill (close ones merged), not
everything below its last byte, so what the compile step does, holds and writes is
bounded by the segments' bytes, never by the offsets the guest declares (one byte at
the end of a 1 GiB memory is one page). Segments too sparse for that (see
`_DENSE_FLOOR`) stay in the module. Refusals that depend on the memory limit belong
to instantiation: compiled forms are cached across limits.

Which image a new memory gets is decided by its type (the memory creator sees nothing
else): a module is stripped only when no other memory anywhere in the component,
nested components included, has the same type. A component where that does not hold
keeps those segments and wasmtime copies them, as before.

The images travel as one blob (the compile cache keeps it beside the compiled
component): a JSON line naming each image's memory type and runs, then the runs'
bytes at page-aligned offsets so they can be mapped from the file itself.
"""
from __future__ import annotations

import bisect
import ctypes
import fcntl
import itertools
import mmap
import os
import pathlib

from .. import copies
from ..digests import sha256
from ..errors import WasinnError
from .binary import CORE_MODULE_SECTION, CORE_PREAMBLE, MAX_TOP_LEVEL_ITEMS, components, join, sections
from .binary import uleb as _uleb
from .memory import _PAGE, _round_up  # the images are mapped at memory.py's page granularity

_IMPORT, _MEMORY, _DATA = 2, 5, 11
_WASM_PAGE = 65536
_FORMAT = "wasinn-images-2"
# Segments closer than this share a run (one mapping instead of two; the zero pages
# between them are read from the file).
_MERGE_GAP = 64 << 10
# An image is taken only if its runs hold at most twice its data bytes, or 1 MiB (as
# wasmtime decides for its own images): what a module's offsets declare never costs
# more than its bytes do. Past these, its segments stay and wasmtime copies them.
_DENSE_FLOOR = 1 << 20
_MAX_RUNS = 64  # per image: each is one mmap per fresh memory
_MAX_IMAGES_RUNS = 1024  # per component: the blob's header stays small
_MAX_HEADER = 1 << 20  # ...under this
# What this reader walks of a module before wasmtime has validated it: memories (100 is
# wasmtime's own limit: 5 million declared, 10 MB, had made 477 MB of keys here) and
# imports; past these the module keeps its segments, and the compiler says what is wrong.
_MAX_MEMORIES = 100

MemoryKey = tuple  # (minimum pages, maximum pages or None, memory64, shared, page size log2)
Run = tuple  # (offset in the memory, offset in the image's bytes or file, length): page-aligned


def digest() -> str:
    """Part of the compile cache's key: a changed stripper never meets an old blob."""
    return sha256(pathlib.Path(__file__).read_bytes()).hexdigest()[:12]


class _Unsupported(Exception):
    """Something this reader does not model: the module keeps its segments."""


def _sleb32(data: bytes, pos: int) -> tuple[int, int]:
    value, end = _uleb(data, pos)
    bits = 7 * (end - pos)
    if data[end - 1] & 0x40:
        value -= 1 << bits
    return value, end


def _module_sections(module: bytes) -> list[tuple[int, memoryview]]:
    if bytes(module[:len(CORE_PREAMBLE)]) != CORE_PREAMBLE:
        raise _Unsupported
    return sections(module, CORE_PREAMBLE)


def _limits(data: bytes, pos: int) -> tuple[MemoryKey, int]:
    """A memory type (flags: 1 has a maximum, 2 shared, 4 memory64, 8 custom page size)."""
    flags = data[pos]
    if flags & ~0xF:
        raise _Unsupported
    minimum, pos = _uleb(data, pos + 1)
    maximum = None
    if flags & 1:
        maximum, pos = _uleb(data, pos)
    log2 = 16
    if flags & 8:
        log2, pos = _uleb(data, pos)
    return (minimum, maximum, bool(flags & 4), bool(flags & 2), log2), pos


def _skip_ref(data: bytes, pos: int) -> int:
    """A reference type: a one-byte shorthand, or 0x63/0x64 and a heap type (s33)."""
    if data[pos] in (0x63, 0x64):
        pos += 1
        while data[pos] & 0x80:
            pos += 1
    return pos + 1


def _imports_memory(payload: bytes) -> bool:
    count, pos = _uleb(payload, 0)
    if count > MAX_TOP_LEVEL_ITEMS:
        raise _Unsupported
    for _ in range(count):
        for _name in range(2):
            n, pos = _uleb(payload, pos)
            pos += n
        kind = payload[pos]
        pos += 1
        if kind == 0:  # func: type index
            _, pos = _uleb(payload, pos)
        elif kind == 1:  # table: reftype, limits
            pos = _skip_ref(payload, pos)
            flags = payload[pos]
            _, pos = _uleb(payload, pos + 1)
            if flags & 1:
                _, pos = _uleb(payload, pos)
        elif kind == 2:
            return True
        elif kind == 3:  # global: valtype, mutability
            pos = _skip_ref(payload, pos) + 1
        elif kind == 4:  # tag: attribute, type index
            _, pos = _uleb(payload, pos + 1)
        else:
            raise _Unsupported
    return False


def _memory_keys(component: bytes) -> list[MemoryKey]:
    """The type of every memory a core module defines, in this component and the
    components nested in it (what could reach the memory creator)."""
    keys = []
    for nested in components(component):
        for sid, payload in sections(nested):
            if sid == CORE_MODULE_SECTION:
                for msid, mpayload in _module_sections(payload):
                    if msid == _MEMORY:
                        count, pos = _uleb(mpayload, 0)
                        if count > _MAX_MEMORIES:
                            raise _Unsupported
                        for _ in range(count):
                            key, pos = _limits(mpayload, pos)
                            keys.append(key)
    return keys


def _segments(data: bytes, size: int) -> tuple[list, list[tuple[int, int, int]]] | None:
    """The data section with its active segments' bytes taken out, as parts to join, and
    those segments as (offset in memory, start in `data`, length), in order; None when
    one is not at a constant offset inside the memory's `size` bytes."""
    count, pos = _uleb(data, 0)
    out, taken = [data[:pos]], []
    for _ in range(count):
        start = pos
        kind, pos = _uleb(data, pos)
        if kind == 1:  # passive: kept as it is
            n, pos = _uleb(data, pos)
            pos += n
            out.append(data[start:pos])
            continue
        if kind == 2:
            memory, pos = _uleb(data, pos)
            if memory != 0:
                raise _Unsupported
        elif kind != 0:
            raise _Unsupported
        if data[pos] != 0x41:  # i32.const N, end: anything else is not known here
            return None
        offset, pos = _sleb32(data, pos + 1)
        if data[pos] != 0x0B:
            return None
        pos += 1
        head = data[start:pos]
        n, pos = _uleb(data, pos)
        offset &= 0xFFFFFFFF
        if offset + n > size or pos + n > len(data):  # it would trap at instantiation: let wasmtime say so
            return None
        taken.append((offset, pos, n))
        pos += n
        out.append(bytes(head) + b"\0")
    if pos != len(data):
        raise _Unsupported
    return out, taken


def _runs(taken: list[tuple[int, int, int]]) -> list[Run]:
    """The page-aligned spans of memory the segments fill, close ones merged, each with
    where its bytes start in the image."""
    spans = sorted((offset // _PAGE * _PAGE, _round_up(offset + n)) for offset, _, n in taken if n)
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1] + _MERGE_GAP:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    runs, at = [], 0
    for start, end in merged:
        runs.append((start, at, end - start))
        at += end - start
    return runs


def _strip_module(module: bytes) -> tuple[bytes, MemoryKey, list[Run], "mmap.mmap"] | None:
    """The module with its active segments emptied, its memory's type, and its initial
    image as runs and their bytes; None when the module has no such image to give.
    Work and memory are bounded by the segments' bytes, never by their offsets."""
    module_sections = _module_sections(module)
    ids = [sid for sid, _ in module_sections]
    memories = [p for sid, p in module_sections if sid == _MEMORY]
    if ids.count(_DATA) != 1 or len(memories) != 1:
        return None
    count, pos = _uleb(memories[0], 0)
    if count != 1 or any(_imports_memory(p) for sid, p in module_sections if sid == _IMPORT):
        return None
    key, _ = _limits(memories[0], pos)
    minimum, _, is64, shared, log2 = key
    if is64 or shared or log2 != 16:
        return None
    data = module_sections[ids.index(_DATA)][1]
    found = _segments(data, minimum * _WASM_PAGE)
    if found is None:
        return None
    stripped, taken = found
    runs = _runs(taken)
    filled = sum(n for _, _, n in taken)
    if not runs or len(runs) > _MAX_RUNS or sum(r[2] for r in runs) > max(_DENSE_FLOOR, 2 * filled):
        return None
    # the image and every copy into it go a slice at a time, the GIL free between (a
    # 400 MB segment: a bytearray, its copy, its zero count and bytes() had held every
    # other thread 0.3-0.6 s at a time)
    image = copies.zeroed(sum(r[2] for r in runs))
    starts = [r[0] for r in runs]
    for offset, at, n in taken:  # in order: a later segment overwrites an earlier one
        if n:
            mem, into, _ = runs[bisect.bisect_right(starts, offset) - 1]
            copies.put(image, into + offset - mem, data[at:at + n])
    if copies.all_zero(image):
        return None
    rebuilt = [(sid, copies.joined(stripped) if sid == _DATA else p) for sid, p in module_sections]
    return join(rebuilt, CORE_PREAMBLE), key, runs, image


def strip(component: bytes) -> tuple[bytes, bytes]:
    """The component with the images taken out of its top-level core modules where
    that is safe (see the module docs), and the blob holding them (with no image when
    none could be taken: the component is then returned as it was)."""
    try:
        keys = _memory_keys(component)
        top = sections(component)
    except (IndexError, WasinnError, _Unsupported):
        return component, _blob([])
    images, out, runs = [], [], 0
    for sid, payload in top:
        if sid == CORE_MODULE_SECTION and runs < _MAX_IMAGES_RUNS:
            try:
                taken = _strip_module(payload)
            except (IndexError, WasinnError, _Unsupported):
                taken = None
            if taken is not None and keys.count(taken[1]) == 1 and runs + len(taken[2]) <= _MAX_IMAGES_RUNS:
                payload = taken[0]
                images.append(taken[1:])
                runs += len(taken[2])
        out.append((sid, payload))
    return (join(out), _blob(images)) if images else (component, _blob([]))


def _blob(images: list[tuple[MemoryKey, list[Run], bytes]]) -> bytes:
    """The header line (each image's memory type and its runs, their bytes' offsets
    relative to the end of the header), then each image's bytes."""
    entries, offset = [], 0
    for key, runs, image in images:
        entries.append({"memory": list(key), "runs": [[mem, offset + at, n] for mem, at, n in runs]})
        offset += len(image)
    import json  # here and in _parse: a core module's run reads no images, and needs no json
    header = (json.dumps({"format": _FORMAT, "images": entries}) + "\n").encode()
    return copies.joined([header.ljust(_round_up(len(header)), b" "), *(image for _, _, image in images)])


class _PyBuffer(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


def _address(buffer) -> int:
    """The address of a buffer's first byte, read-only ones included (which ctypes'
    from_buffer refuses), without importing numpy for it (lazy.py)."""
    view = _PyBuffer()
    ctypes.pythonapi.PyObject_GetBuffer(ctypes.py_object(buffer), ctypes.byref(view), 0)
    try:
        return view.buf
    finally:
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))


class MemoryImages:
    """One compiled component's images, on a file descriptor that memory.py maps from:
    the compile cache's file itself, or a sealed memfd when there is no cache. `view`
    maps them read-only (what a reused mapping's written pages are restored from)."""

    _serials = itertools.count(1)

    def __init__(self, fd: int, images: dict[MemoryKey, tuple[int, int]]):
        self.images = images  # memory type -> (runs, offsets in the file; extent)
        self.serial = next(self._serials)  # tells this blob's images from any other's
        self._view = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        self.view = _address(self._view)
        self.fd = fd  # ours from here: a failed mmap (EMFILE) leaves it to `load`, which closes it once

    @classmethod
    def load(cls, source: bytes | pathlib.Path) -> MemoryImages | None:
        """The images of a blob (bytes) or blob file; None when it holds none.
        ValueError: not a whole blob of this format."""
        fd = None if isinstance(source, (bytes, bytearray)) else os.open(source, os.O_RDONLY | os.O_CLOEXEC)
        try:
            images, end = cls._parse(lambda n: bytes(source[:n]) if fd is None else os.pread(fd, n, 0))
            size = len(source) if fd is None else os.fstat(fd).st_size
            if size != end:
                raise ValueError(f"an image blob of {size} bytes, not {end}")
            if not images:
                return None
            if fd is None:
                fd = _sealed_memfd(bytes(source))
            loaded, fd = cls(fd, images), None
            return loaded
        finally:
            if fd is not None:
                os.close(fd)

    @staticmethod
    def _parse(read) -> tuple[dict[MemoryKey, tuple[tuple[Run, ...], int]], int]:
        """Each image's runs (offsets in the file) and extent, and where the blob ends;
        `read(n)` gives the blob's first n bytes."""
        head = read(_PAGE * 4)
        if b"\n" not in head:  # a header of many runs (strip bounds them)
            head = read(_MAX_HEADER)
        line = head.split(b"\n", 1)[0]
        import json
        try:
            header = json.loads(line)
            if header["format"] != _FORMAT:
                raise ValueError(f"image blob format {header['format']!r}")
            start = _round_up(len(line) + 1)
            images = {}
            for e in header["images"]:
                runs = tuple((mem, start + at, n) for mem, at, n in e["runs"])
                key = (*e["memory"][:2], *map(bool, e["memory"][2:4]), e["memory"][4])
                images[key] = runs, runs[-1][0] + runs[-1][2]  # and where the last run ends
        except (KeyError, TypeError, IndexError, ValueError) as e:  # JSONDecodeError is a ValueError
            raise ValueError(f"not an image blob: {e!r}") from None
        return images, start + sum(n for runs, _ in images.values() for _, _, n in runs)

    def get(self, key: MemoryKey) -> tuple[tuple[Run, ...], int] | None:
        """The image of a memory of that type: its runs, and the end of the last."""
        return self.images.get(key)

    def __del__(self, _close=os.close):  # bound now: embedding/records.py may free it as the interpreter ends
        if hasattr(self, "fd"):
            _close(self.fd)  # the view stays valid while anything still holds this object


def _sealed_memfd(blob: bytes) -> int:
    """A memfd holding `blob` that nobody can change any more (so a private mapping of
    it can only ever show these bytes)."""
    fd = os.memfd_create("wasinn-images", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with os.fdopen(os.dup(fd), "wb") as f:
            f.write(blob)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                    | fcntl.F_SEAL_SEAL)
    except BaseException:
        os.close(fd)
        raise
    return fd

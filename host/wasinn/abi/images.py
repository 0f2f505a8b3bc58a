"""Initial memory images that the host maps copy-on-write into host-owned memories.

wasmtime copies a module's data segments into every fresh memory the host creates
(its own copy-on-write images need its own memories): ~11 MB, about 1 ms, for a
componentize-py guest. `strip` moves those bytes out of the component once, when it
is compiled: each top-level core module that defines its memory and fills it only
with active segments at constant offsets gets its image built here, and those
segments keep their offsets but lose their bytes (indices stay, so `datacount`,
`memory.init` and `data.drop` mean what they meant; passive segments are untouched).
memory.py then maps the image MAP_PRIVATE over the new memory's first pages: shared
until written, faulted in on first touch, and a write never reaches the file.

Which image a new memory gets is decided by its type (the memory creator sees nothing
else): a module is stripped only when no other memory anywhere in the component,
nested components included, has the same type. A component where that does not hold
keeps those segments and wasmtime copies them, as before.

The images travel as one blob (the compile cache keeps it beside the compiled
component): a JSON line naming each image's memory type, offset and length, then the
images at page-aligned offsets so they can be mapped from the file itself.
"""
from __future__ import annotations

import fcntl
import itertools
import json
import mmap
import os
import pathlib

import numpy as np

from ..digests import sha256
from ..errors import WasinnError
from .adapter import _CORE_MODULE_SECTION, _join, _sections, _uleb
from .memory import _PAGE, _round_up  # the images are mapped at memory.py's page granularity

_CORE_PREAMBLE = b"\0asm\x01\0\0\0"
_COMPONENT_SECTION = 4
_IMPORT, _MEMORY, _DATA = 2, 5, 11
_WASM_PAGE = 65536
_FORMAT = "wasinn-images-1"

MemoryKey = tuple  # (minimum pages, maximum pages or None, memory64, shared, page size log2)


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


def _module_sections(module: bytes) -> list[tuple[int, bytes]]:
    if not module.startswith(_CORE_PREAMBLE):
        raise _Unsupported
    return _sections(module, _CORE_PREAMBLE)


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
    for sid, payload in _sections(component):
        if sid == _CORE_MODULE_SECTION:
            for msid, mpayload in _module_sections(payload):
                if msid == _MEMORY:
                    count, pos = _uleb(mpayload, 0)
                    for _ in range(count):
                        key, pos = _limits(mpayload, pos)
                        keys.append(key)
        elif sid == _COMPONENT_SECTION:
            keys += _memory_keys(payload)
    return keys


def _strip_module(module: bytes) -> tuple[bytes, MemoryKey, bytes] | None:
    """The module with its active segments emptied, its memory's type and initial
    image; None when the module has no such image to give."""
    sections = _module_sections(module)
    ids = [sid for sid, _ in sections]
    memories = [p for sid, p in sections if sid == _MEMORY]
    if ids.count(_DATA) != 1 or len(memories) != 1:
        return None
    count, pos = _uleb(memories[0], 0)
    if count != 1 or any(_imports_memory(p) for sid, p in sections if sid == _IMPORT):
        return None
    key, _ = _limits(memories[0], pos)
    minimum, _, is64, shared, log2 = key
    if is64 or shared or log2 != 16:
        return None
    size = minimum * _WASM_PAGE
    data = sections[ids.index(_DATA)][1]
    count, pos = _uleb(data, 0)
    image = bytearray()
    out = [data[:pos]]
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
        if offset + n > size:  # it would trap at instantiation: let wasmtime say so
            return None
        if offset + n > len(image):
            image.extend(bytes(offset + n - len(image)))
        image[offset:offset + n] = data[pos:pos + n]
        pos += n
        out.append(head + b"\0")
    if pos != len(data):
        raise _Unsupported
    if not image.strip(b"\0"):
        return None
    stripped = b"".join(out)
    rebuilt = [(sid, stripped if sid == _DATA else p) for sid, p in sections]
    return _join(rebuilt, _CORE_PREAMBLE), key, bytes(image)


def strip(component: bytes) -> tuple[bytes, bytes]:
    """The component with the images taken out of its top-level core modules where
    that is safe (see the module docs), and the blob holding them (with no image when
    none could be taken: the component is then returned as it was)."""
    try:
        keys = _memory_keys(component)
        sections = _sections(component)
    except (IndexError, WasinnError, _Unsupported):
        return component, _blob([])
    images, out = [], []
    for sid, payload in sections:
        if sid == _CORE_MODULE_SECTION:
            try:
                taken = _strip_module(payload)
            except (IndexError, WasinnError, _Unsupported):
                taken = None
            if taken is not None and keys.count(taken[1]) == 1:
                payload = taken[0]
                images.append(taken[1:])
        out.append((sid, payload))
    return (_join(out), _blob(images)) if images else (component, _blob([]))


def _blob(images: list[tuple[MemoryKey, bytes]]) -> bytes:
    entries, offset = [], 0
    for key, image in images:
        entries.append({"memory": list(key), "offset": offset, "length": _round_up(len(image))})
        offset += _round_up(len(image))
    header = (json.dumps({"format": _FORMAT, "images": entries}) + "\n").encode()
    parts = [header.ljust(_round_up(len(header)), b" ")]
    parts += [image.ljust(_round_up(len(image)), b"\0") for _, image in images]
    return b"".join(parts)


class MemoryImages:
    """One compiled component's images, on a file descriptor that memory.py maps from:
    the compile cache's file itself, or a sealed memfd when there is no cache. `view`
    maps them read-only (what a reused mapping's written pages are restored from)."""

    _serials = itertools.count(1)

    def __init__(self, fd: int, images: dict[MemoryKey, tuple[int, int]]):
        self.fd = fd
        self.images = images  # memory type -> (offset in the file, length)
        self.serial = next(self._serials)  # tells this blob's images from any other's
        self._view = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
        self.view = np.frombuffer(self._view, np.uint8).ctypes.data

    @classmethod
    def load(cls, source: bytes | pathlib.Path) -> MemoryImages | None:
        """The images of a blob (bytes) or blob file; None when it holds none.
        ValueError: not a whole blob of this format."""
        if isinstance(source, (bytes, bytearray)):
            head = bytes(source[:_PAGE * 4])
            fd = None
        else:
            fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            head = os.pread(fd, _PAGE * 4, 0)
        try:
            images, end = cls._parse(head)
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
    def _parse(head: bytes) -> tuple[dict[MemoryKey, tuple[int, int]], int]:
        line = head.split(b"\n", 1)[0]
        try:
            header = json.loads(line)
            if header["format"] != _FORMAT:
                raise ValueError(f"image blob format {header['format']!r}")
            start = _round_up(len(line) + 1)
            images = {(*e["memory"][:2], *map(bool, e["memory"][2:4]), e["memory"][4]):
                      (start + e["offset"], e["length"]) for e in header["images"]}
        except (KeyError, TypeError, IndexError, json.JSONDecodeError) as e:
            raise ValueError(f"not an image blob: {e!r}") from None
        return images, start + sum(length for _, length in images.values())

    def get(self, key: MemoryKey) -> tuple[int, int] | None:
        return self.images.get(key)

    def __del__(self):
        os.close(self.fd)  # the view stays valid while anything still holds this object


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

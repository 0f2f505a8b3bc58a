"""The WebAssembly binary format at the level wasinn's compile step reads it: sections
of components and core modules, and how deep components nest.

Every byte here is the guest's: readers raise WasinnError (one line) on anything
malformed, and nothing recurses on the guest's structure.
"""
from __future__ import annotations

from ..errors import WasinnError

COMPONENT_PREAMBLE = b"\0asm\x0d\x00\x01\x00"
CORE_PREAMBLE = b"\0asm\x01\0\0\0"
CORE_MODULE_SECTION = 1
COMPONENT_SECTION = 4
# Far above what any toolchain writes (wit-component: 1 level, wac compositions: a few);
# wasmtime's own limit is 1,000 modules and components in all.
MAX_NESTING = 100


def uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos
        if shift > 63:  # no count or size in the format takes more than 64 bits
            raise IndexError


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def sections(wasm: bytes, preamble: bytes = COMPONENT_PREAMBLE) -> list[tuple[int, bytes]]:
    """A component's sections (or, given a core module's preamble, a core module's);
    slices of a memoryview are views, not copies."""
    if bytes(wasm[:len(preamble)]) != preamble:
        raise WasinnError("not a component in the binary format wasinn reads (layer 1, version 0xd)"
                          if preamble == COMPONENT_PREAMBLE else "a core module that is not wasm version 1")
    out, pos = [], len(preamble)
    try:
        while pos < len(wasm):
            sid = wasm[pos]
            size, pos = uleb(wasm, pos + 1)
            if pos + size > len(wasm):
                raise IndexError
            out.append((sid, wasm[pos:pos + size]))
            pos += size
    except IndexError:
        raise WasinnError(f"a section at byte {pos} runs past the end of the file") from None
    return out


def join(parts: list[tuple[int, bytes]], preamble: bytes = COMPONENT_PREAMBLE) -> bytes:
    return preamble + b"".join(bytes([sid]) + leb(len(p)) + p for sid, p in parts)


def components(wasm: bytes) -> list[memoryview]:
    """The component and every component nested in it, outermost first.
    WasinnError: malformed, or nested deeper than MAX_NESTING."""
    out, pending = [], [(memoryview(wasm), 0)]  # views: a nested component is not copied per level
    while pending:
        component, depth = pending.pop()
        if depth > MAX_NESTING:
            raise WasinnError(f"components nested more than {MAX_NESTING} deep (wasinn's limit)")
        out.append(component)
        pending += [(p, depth + 1) for sid, p in sections(component) if sid == COMPONENT_SECTION]
    return out

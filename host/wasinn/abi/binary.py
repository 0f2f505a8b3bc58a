"""The WebAssembly binary format at the level wasinn's compile step reads it: sections
of components and core modules, and how deep components nest.

Every byte here is the guest's: readers raise WasinnError (one line) on anything
malformed, and nothing recurses on the guest's structure.
"""
from __future__ import annotations

import pathlib

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


def check_file(wasm: bytes, label: str) -> None:
    """WasinnError, one line that says so first, unless `wasm` is a component or a core
    module whose sections fit in it: run before any progress line, so that a README, a
    model or a truncated download is not first met as a component being adapted."""
    if wasm[:4] != b"\0asm":
        hint = _NOT_WASM_HINTS.get(pathlib.PurePath(label).suffix.lower(), _NOT_WASM_HINTS[""])
        if not wasm:
            raise WasinnError(f"{label} is empty, not a WebAssembly file; {hint}")
        raise WasinnError(f"{label} is not a WebAssembly file (it starts with {_first_bytes(wasm)}); {hint}")
    if len(wasm) < len(CORE_PREAMBLE):
        raise WasinnError(f"{label} is truncated: {len(wasm)} bytes, less than a WebAssembly header; "
                          "copy or build it again")
    preamble = bytes(wasm[:8])
    if preamble not in (COMPONENT_PREAMBLE, CORE_PREAMBLE):
        raise WasinnError(f"{label} is WebAssembly of a version wasinn does not read (header bytes 4-7: "
                          f"{preamble[4:].hex(' ')}); wasinn reads core modules (01 00 00 00) and "
                          "components (0d 00 01 00, as wasm-tools and componentize-py write them)")
    try:
        sections(wasm, preamble)
    except WasinnError as e:
        raise WasinnError(f"{label} is truncated ({len(wasm)} bytes): {e}; copy or build it again") from None


_NOT_WASM_HINTS = {
    "": "wasinn runs WebAssembly components and core modules (.wasm; `wasinn build` makes one from Python)",
    ".py": "build it into a component first: wasinn build APP.py -o APP.wasm",
    ".wat": "wasinn reads the binary format: wasm-tools parse FILE.wat -o FILE.wasm",
    **dict.fromkeys([".onnx", ".tflite", ".xml", ".pb"], "a model goes to --model NAME=PATH, the component "
                    "that loads it comes first (see `wasinn run --help`)"),
}


def _first_bytes(data: bytes) -> str:
    """A file's start as a user would recognise it: its text, else its bytes."""
    head = bytes(data[:16])
    text = head.split(b"\n")[0]
    if text and all(32 <= b < 127 for b in text):
        return repr(text.decode()) + ("..." if len(text) < len(data) else "")
    return f"bytes {head[:8].hex(' ')}" + ("..." if len(data) > 8 else "")


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

"""The WebAssembly binary format at the level wasinn's compile step reads it: sections
of components and core modules, and how deep components nest.

Every byte here is the guest's: readers raise WasinnError (one line) on anything
malformed, and nothing recurses on the guest's structure. And nothing walks a whole
component in one C call: sections are views, not copies, and what joins or searches
the bytes goes a slice at a time (`copies.joined`, `holds`), the GIL free between
slices (a 400 MB component's load had held every other thread up to 0.6 s at a time).
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
import re

from ..copies import SLICE, joined
from ..errors import WasinnError

MAGIC = b"\0asm"
COMPONENT_PREAMBLE = MAGIC + b"\x0d\x00\x01\x00"
CORE_PREAMBLE = MAGIC + b"\x01\0\0\0"
CORE_MODULE_SECTION = 1
COMPONENT_SECTION = 4
# Far above what any toolchain writes (wit-component: 1 level, wac compositions: a few);
# wasmtime's own limit is 1,000 modules and components in all.
MAX_NESTING = 100
# Data segments of all the core modules of one .wasm together. wasmtime compiles a module
# under epoch interruption in time quadratic in its data segments (20,000: 1.9 s; 40,000:
# 5.9 s; its own limit, 99,999: 29 s for a 1.6 MB component). wasm-ld writes a few;
# Wizer, which snapshots componentize-js's runtime, at most 10,000.
MAX_DATA_SEGMENTS = 20_000
DATA_SECTION = 11
_FUNCTION_SECTION, _ELEMENT_SECTION = 3, 9
# What wasmtime holds while it compiles a core module grows with its functions (~5 KB
# each: a million tiny ones, 4 MB, took it 25 s and 5.3 GB) and its table elements (~2 KB
# a byte: one passive segment of 5 million, 5 MB, took 122 s and 11 GB), far past what
# toolchains write (StarlingMonkey, componentize-js's runtime: ~20,000 functions and
# ~7,700 elements, ~20 KB of them). Bounded over a component's core modules together.
MAX_FUNCTIONS = 100_000
MAX_ELEMENT_BYTES = 128 << 10
# What the readers here walk one by one, in Python, before the compiler has validated
# anything: the sections of a .wasm's components, one or all together, and of its core
# modules, one or all together (a valid 15 MB component of 5 million empty custom sections
# took 116 s and 1.3 GB to load; componentize-py's guests have ~570 at their top level and
# 19 in each core module, whose kinds of section are a dozen and custom ones for names and
# debugging; at 20,000 of each, one walk of them all held the GIL 164 ms) ...
MAX_SECTIONS = 10_000
MAX_MODULE_SECTIONS = 1_000
MAX_ALL_MODULE_SECTIONS = 5_000
# ... the components nested in a .wasm, and its core modules (each: wasmtime's own limit);
MAX_BINARIES = 1_000
# ... and the definitions, imports and exports of a component's top level (read_layout,
# component_externs) or a core module's imports and exports (core_externs): 8 million
# empty core instances, 16 MB, took 49 s and 1.1 GB before wasmtime refused the 4,097th;
# wit-component writes under 2,000. 100,000 had held the GIL 140-180 ms; 20,000, 30 ms.
MAX_TOP_LEVEL_ITEMS = 20_000
# Bytes of component type definitions (type and core type sections of a .wasm's
# components): wasmtime holds up to ~160 times their size while it validates them (4 MB
# of one-case `flags` types, a valid component: 658 MB); toolchains write under 20 KB.
MAX_TYPE_BYTES = 256 << 10
_TYPE_SECTIONS = (3, 7)


class _Truncated(WasinnError):
    """A section that runs past the end of its binary."""


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


def sections(wasm: bytes, preamble: bytes = COMPONENT_PREAMBLE) -> list[tuple[int, memoryview]]:
    """A component's sections (or, given a core module's preamble, a core module's), as
    views of `wasm`, not copies (a 400 MB section sliced out of bytes: 0.28 s holding
    the GIL)."""
    wasm = wasm if isinstance(wasm, memoryview) else memoryview(wasm)
    if bytes(wasm[:len(preamble)]) != preamble:
        raise WasinnError("not a component in the binary format wasinn reads (layer 1, version 0xd)"
                          if preamble == COMPONENT_PREAMBLE else "a core module that is not wasm version 1")
    out, pos = [], len(preamble)
    try:
        while pos < len(wasm):
            if preamble == COMPONENT_PREAMBLE and len(out) == MAX_SECTIONS:
                raise _too_many(MAX_SECTIONS, "sections in one component")
            if preamble != COMPONENT_PREAMBLE and len(out) == MAX_MODULE_SECTIONS:
                raise _too_many(MAX_MODULE_SECTIONS, "sections in one core module")
            sid = wasm[pos]
            size, pos = uleb(wasm, pos + 1)
            if pos + size > len(wasm):
                raise IndexError
            out.append((sid, wasm[pos:pos + size]))
            pos += size
    except IndexError:
        raise _Truncated(f"a section at byte {pos} runs past the end of the file") from None
    return out


def _too_many(limit: int, what: str) -> WasinnError:
    return WasinnError(f"more than {limit:,} {what} (wasinn's limit: its compile step reads each in Python "
                       "before wasmtime validates anything)")


def check_file(wasm: bytes, label: str) -> None:
    """WasinnError, one line that says so first, unless `wasm` is a component or a core
    module whose sections fit in it: run before any progress line, so that a README, a
    model or a truncated download is not first met as a component being adapted."""
    if wasm[:4] != MAGIC:
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
    except _Truncated as e:
        raise WasinnError(f"{label} is truncated ({len(wasm)} bytes): {e}; copy or build it again") from None
    except WasinnError as e:
        raise WasinnError(f"{label} is not a program wasinn runs: {e}") from None


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
    return joined([preamble, *(piece for sid, p in parts for piece in (bytes([sid]) + leb(len(p)), p))])


def holds(data: bytes, *needles: bytes) -> bool:
    """Whether any of `needles` occurs in `data`, searched a slice at a time (one `in`
    over a 400 MB component had held every other thread 0.2 s)."""
    pattern, longest = _alternatives(needles)
    n = len(data)
    return any(pattern.search(data, at, min(n, at + SLICE + longest - 1)) for at in range(0, n, SLICE))


@functools.lru_cache(maxsize=16)
def _alternatives(needles: tuple[bytes, ...]) -> tuple[re.Pattern, int]:
    return re.compile(b"|".join(map(re.escape, needles))), max(map(len, needles))


def components(wasm: bytes) -> list[memoryview]:
    """The component and every component nested in it, outermost first.
    WasinnError: malformed, nested deeper than MAX_NESTING, or past the bounds above on
    components, their sections and their type definitions."""
    out, pending = [], [(memoryview(wasm), 0)]  # views: a nested component is not copied per level
    walked = types = 0
    while pending:
        component, depth = pending.pop()
        if depth > MAX_NESTING:
            raise WasinnError(f"components nested more than {MAX_NESTING} deep (wasinn's limit)")
        if len(out) > MAX_BINARIES:  # the outermost and as many nested in it
            raise _too_many(MAX_BINARIES, "components nested in it")
        out.append(component)
        parts = sections(component)
        walked += len(parts)
        if walked > MAX_SECTIONS:
            raise _too_many(MAX_SECTIONS, "sections in its components together")
        types += sum(len(p) for sid, p in parts if sid in _TYPE_SECTIONS)
        if types > MAX_TYPE_BYTES:
            raise WasinnError(f"more than {MAX_TYPE_BYTES >> 10} KiB of type definitions in its components (wasinn's "
                              "limit: wasmtime holds up to ~160 times their size while it validates them; toolchains "
                              "write under 20 KB)")
        pending += [(p, depth + 1) for sid, p in parts if sid == COMPONENT_SECTION]
    return out


def declared_externs(component: bytes) -> tuple[int, int]:
    """How many imports and exports a component's own sections declare (their counts
    only: nothing is read of them); a count that cannot be read counts as none, for the
    compiler to report."""
    counts = {10: 0, 11: 0}
    for sid, payload in sections(component):
        if sid in counts:
            try:
                counts[sid] += uleb(payload, 0)[0]
            except IndexError:
                pass
    return counts[10], counts[11]


def check_modules(wasm: bytes, label: str, tree: list[memoryview] | None = None) -> None:
    """WasinnError past what wasinn lets wasmtime compile of a component's core modules
    together (or of a core module): MAX_DATA_SEGMENTS, MAX_FUNCTIONS, MAX_ELEMENT_BYTES;
    run on a component after `components` has checked its structure (`tree`: what it
    returned, not walked again). A module malformed here is left to wasmtime's
    validation, which says where."""
    if bytes(wasm[:8]) == CORE_PREAMBLE:
        modules = [memoryview(wasm)]
    else:
        modules = [p for c in tree or components(wasm) for sid, p in sections(c) if sid == CORE_MODULE_SECTION]
    if len(modules) > MAX_BINARIES:
        raise WasinnError(f"{label} is not a program wasinn runs: {_too_many(MAX_BINARIES, 'core modules in it')}")
    counts = {DATA_SECTION: 0, _FUNCTION_SECTION: 0}
    element_bytes = walked = 0
    for module in modules:
        try:
            parts = sections(module, CORE_PREAMBLE)
            for sid, body in parts:
                if sid in counts:
                    counts[sid] += uleb(body, 0)[0]
                elif sid == _ELEMENT_SECTION:
                    element_bytes += len(body)
        except (_Truncated, IndexError):
            continue
        walked += len(parts)
        if walked > MAX_ALL_MODULE_SECTIONS:
            raise WasinnError(f"{label} is not a program wasinn runs: "
                              f"{_too_many(MAX_ALL_MODULE_SECTIONS, 'sections in its core modules together')}")
    if counts[DATA_SECTION] > MAX_DATA_SEGMENTS:
        raise WasinnError(f"{label} has {counts[DATA_SECTION]} data segments; wasinn takes at most "
                          f"{MAX_DATA_SEGMENTS} (wasinn's limit: wasmtime compiles them in quadratic time)")
    if counts[_FUNCTION_SECTION] > MAX_FUNCTIONS:
        raise WasinnError(f"{label} has {counts[_FUNCTION_SECTION]} functions; wasinn takes at most {MAX_FUNCTIONS} "
                          "(wasinn's limit: wasmtime's compiler holds ~5 KB of each)")
    if element_bytes > MAX_ELEMENT_BYTES:
        raise WasinnError(f"{label} has {element_bytes} bytes of table elements; wasinn takes at most "
                          f"{MAX_ELEMENT_BYTES} (wasinn's limit: wasmtime holds up to ~2 KB of each byte while it "
                          "compiles them)")


# --- a component's own definitions, by index space -----------------------------------
# Sorts as the binary writes them: a component sort is one byte; a core sort is 0x00 and
# a byte, kept here as CORE + that byte.
CORE = 0x100
CORE_FUNC, CORE_MEMORY, CORE_TYPE, CORE_MODULE, CORE_INSTANCE = CORE, CORE + 2, CORE + 0x10, CORE + 0x11, CORE + 0x12
FUNC, VALUE, TYPE, COMPONENT, INSTANCE = 1, 2, 3, 4, 5
_SECTION_SORTS = {1: CORE_MODULE, 4: COMPONENT}  # sections that define one item each
_COUNTED_SECTIONS = {3: CORE_TYPE, 7: TYPE}  # sections whose items are only counted here
# canonical options: those followed by an index, and those that are a byte alone
MEMORY_OPTION, REALLOC_OPTION, POST_RETURN_OPTION = 3, 4, 5
STRING_ENCODINGS = {0: "utf8", 1: "utf16", 2: "latin1+utf16"}  # the flag options that name one
_INDEX_OPTIONS = {MEMORY_OPTION, REALLOC_OPTION, 5, 7}  # memory, realloc, post-return, callback
_FLAG_OPTIONS = {0, 1, 2, 6}  # string encodings, async


@dataclasses.dataclass
class Layout:
    """What a component's top-level sections define that the adapter's rewriting needs,
    as indices in their index spaces (which WAT text may use as they are)."""
    imports: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)  # name -> (sort, index)
    # component func index -> (component instance index, export name), from `alias export`
    func_aliases: dict[int, tuple[int, str]] = dataclasses.field(default_factory=dict)
    # core func index -> (component func index, canonical options [(option, index or None)])
    lowerings: dict[int, tuple[int, list[tuple[int, int | None]]]] = dataclasses.field(default_factory=dict)
    # component func index -> (core func index, canonical options, type index), from `canon lift`
    lifts: dict[int, tuple[int, list[tuple[int, int | None]], int]] = dataclasses.field(default_factory=dict)
    # core instances made of exports: core instance index -> {name: (core sort, index)}
    export_instances: dict[int, dict[str, tuple[int, int]]] = dataclasses.field(default_factory=dict)
    # `alias core export`: (core sort, core instance index, name, index defined)
    core_aliases: list[tuple[int, int, str, int]] = dataclasses.field(default_factory=list)
    counts: dict[int, int] = dataclasses.field(default_factory=dict)  # items defined, by sort

    def define(self, sort: int) -> int:
        index = self.counts.get(sort, 0)
        self.counts[sort] = index + 1
        return index


class _Items:
    """Counts the items a binary's sections declare, as each section is reached,
    against MAX_TOP_LEVEL_ITEMS: a section's count comes before its items."""

    def __init__(self, what: str):
        self.left, self.what = MAX_TOP_LEVEL_ITEMS, what

    def declared(self, r: "_Reader") -> int:
        n = r.u32()
        self.left -= n
        if self.left < 0:
            raise _too_many(MAX_TOP_LEVEL_ITEMS, self.what)
        return n


class _Reader:
    """Reads one section's payload; IndexError past its end."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        value, self.pos = uleb(self.data, self.pos)
        return value

    def name(self) -> str:
        n = self.u32()
        if self.pos + n > len(self.data):
            raise IndexError
        text = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        try:
            return text.decode()
        except UnicodeDecodeError:
            raise WasinnError(f"a name at byte {self.pos - n} of a section is not UTF-8") from None

    def extern_name(self) -> str:
        """An import's or export's name (a 0x00 or 0x01 prefix, then the name)."""
        if self.byte() not in (0, 1):
            raise WasinnError("an import or export name of a kind wasinn does not read")
        return self.name()

    def sort(self) -> int:
        b = self.byte()
        return CORE + self.byte() if b == 0 else b

    def extern_desc(self) -> int:
        """An externdesc; its sort."""
        sort = self.sort()
        if sort == VALUE:
            if not 0x64 <= self.data[self.pos] <= 0x7F:  # a primitive value type is one byte
                self.u32()
            else:
                self.pos += 1
        elif sort == TYPE:
            if self.byte() == 0:  # (eq i); else (sub resource)
                self.u32()
        elif sort in (CORE_MODULE, FUNC, COMPONENT, INSTANCE):
            self.u32()
        else:
            raise WasinnError(f"an import of sort {sort:#x}, which wasinn does not read")
        return sort

    def options(self) -> list[tuple[int, int | None]]:
        out = []
        for _ in range(self.u32()):
            code = self.byte()
            if code in _INDEX_OPTIONS:
                out.append((code, self.u32()))
            elif code in _FLAG_OPTIONS:
                out.append((code, None))
            else:
                raise WasinnError(f"a canonical option {code:#x}, which wasinn does not read")
        return out


def read_layout(wasm: bytes) -> Layout:
    """The definitions of a component's top level (not of the components nested in it).
    WasinnError: malformed, or holding a definition this reader does not know (its
    index spaces would then be unknown past it)."""
    layout = Layout()
    items = _Items("definitions, imports and exports at its top level")
    for sid, payload in sections(wasm):
        r = _Reader(payload)
        try:
            if sid in _SECTION_SORTS:
                layout.define(_SECTION_SORTS[sid])
            elif sid in _COUNTED_SECTIONS:
                layout.counts[_COUNTED_SECTIONS[sid]] = layout.counts.get(_COUNTED_SECTIONS[sid], 0) + r.u32()
            elif sid in _ITEMS:
                for _ in range(items.declared(r)):
                    _ITEMS[sid](layout, r, items)
            elif sid not in (0, 9, 12):  # custom, start, values: no index this reader tracks
                raise WasinnError(f"a section of id {sid}, which wasinn does not read")
        except IndexError:
            raise WasinnError(f"a section of id {sid} ends in the middle of a definition") from None
    return layout


# An instance's arguments and exports count against the top level's items: a core
# instance "made of" 5 million exports (a 41 MiB file) had held 771 MiB of them before
# wasmtime's compiler refused it.
def _core_instance(layout: Layout, r: _Reader, items: _Items) -> None:
    if r.byte() == 0:  # (instantiate m (with name (instance i))*)
        r.u32()
        for _arg in range(items.declared(r)):
            r.name(), r.byte(), r.u32()
        layout.define(CORE_INSTANCE)
    else:  # made of exports
        exports = {r.name(): (CORE + r.byte(), r.u32()) for _export in range(items.declared(r))}
        layout.export_instances[layout.define(CORE_INSTANCE)] = exports


def _instance(layout: Layout, r: _Reader, items: _Items) -> None:
    if r.byte() == 0:  # (instantiate c (with name sortidx)*)
        r.u32()
        for _arg in range(items.declared(r)):
            r.name(), r.sort(), r.u32()
    else:  # made of exports
        for _export in range(items.declared(r)):
            r.extern_name(), r.sort(), r.u32()
    layout.define(INSTANCE)


def _alias(layout: Layout, r: _Reader, items: _Items) -> None:
    sort, target = r.sort(), r.byte()
    if target == 0:  # export of a component instance
        instance, name = r.u32(), r.name()
        index = layout.define(sort)
        if sort == FUNC:
            layout.func_aliases[index] = (instance, name)
    elif target == 1:  # export of a core instance
        instance, name = r.u32(), r.name()
        layout.core_aliases.append((sort, instance, name, layout.define(sort)))
    elif target == 2:  # outer
        r.u32(), r.u32()
        layout.define(sort)
    else:
        raise WasinnError(f"an alias of kind {target:#x}, which wasinn does not read")


def _canon(layout: Layout, r: _Reader, items: _Items) -> None:
    op = r.byte()
    if op == 0:  # lift
        r.byte()
        core, options, ty = r.u32(), r.options(), r.u32()
        layout.lifts[layout.define(FUNC)] = (core, options, ty)
    elif op == 1:  # lower
        r.byte()
        func, options = r.u32(), r.options()
        layout.lowerings[layout.define(CORE_FUNC)] = (func, options)
    elif op in (2, 3, 4):  # resource.new, resource.drop, resource.rep
        r.u32()
        layout.define(CORE_FUNC)
    else:
        raise WasinnError(f"a canonical definition {op:#x}, which wasinn does not read")


def _import(layout: Layout, r: _Reader, items: _Items) -> None:
    name = r.extern_name()
    sort = r.extern_desc()
    layout.imports[name] = (sort, layout.define(sort))


def _export(layout: Layout, r: _Reader, items: _Items) -> None:
    r.extern_name()
    sort = r.sort()
    r.u32()
    if r.byte() == 1:  # with its type given
        r.extern_desc()
    layout.define(sort)


# section id -> the reader of one of its items
_ITEMS = {2: _core_instance, 5: _instance, 6: _alias, 8: _canon, 10: _import, 11: _export}


# --- what a program imports and exports, as `wasinn inspect` lists it ------------------
def component_externs(wasm: bytes) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """A component's top-level imports and exports in binary order, as (name, sort);
    only their sections are read, so definitions this reader does not know elsewhere
    do not stop it. WasinnError: malformed."""
    imports, exports = [], []
    items = _Items("imports and exports at its top level")
    for sid, payload in sections(wasm):
        if sid not in (10, 11):
            continue
        r = _Reader(payload)
        try:
            for _ in range(items.declared(r)):
                if sid == 10:
                    name = r.extern_name()
                    imports.append((name, r.extern_desc()))
                else:
                    name, sort = r.extern_name(), r.sort()
                    r.u32()
                    if r.byte() == 1:  # with its type given
                        r.extern_desc()
                    exports.append((name, sort))
        except IndexError:
            raise WasinnError(f"a section of id {sid} ends in the middle of a definition") from None
    return imports, exports


_CORE_FUNC_KIND = 0


def core_externs(wasm: bytes) -> tuple[list[tuple[str, str]], list[str]]:
    """A core module's imports as (module, name) and the names of the functions it
    exports, in binary order. WasinnError: malformed, or an import of a kind this
    reader does not know."""
    imports, exports = [], []
    items = _Items("imports and exports in one core module")
    for sid, payload in sections(wasm, CORE_PREAMBLE):
        if sid not in (2, 7):
            continue
        r = _Reader(payload)
        try:
            for _ in range(items.declared(r)):
                if sid == 2:
                    imports.append((r.name(), r.name()))
                    _core_import_desc(r)
                else:
                    name, kind = r.name(), r.byte()
                    r.u32()
                    if kind == _CORE_FUNC_KIND:
                        exports.append(name)
        except IndexError:
            raise WasinnError(f"a section of id {sid} ends in the middle of a definition") from None
    return imports, exports


def core_import_count(wasm: bytes) -> int:
    """How many imports a core module declares (its import section's count), none read;
    0 where that section is malformed, which the compiler then reports."""
    try:
        return sum(uleb(payload, 0)[0] for sid, payload in sections(wasm, CORE_PREAMBLE) if sid == 2)
    except IndexError:
        return 0


def _core_import_desc(r: _Reader) -> None:
    kind = r.byte()
    if kind in (0, 4):  # func: a type index; tag: an attribute byte, then one
        if kind == 4:
            r.byte()
        r.u32()
    elif kind == 1:  # table: a reference type, then limits
        if r.byte() in (0x63, 0x64):  # (ref null? heaptype): an s33 heap type
            r.u32()
        _core_limits(r)
    elif kind == 2:  # memory
        _core_limits(r)
    elif kind == 3:  # global: a value type, then mutability
        if r.byte() in (0x63, 0x64):
            r.u32()
        r.byte()
    else:
        raise WasinnError(f"a core import of kind {kind:#x}, which wasinn does not read")


def _core_limits(r: _Reader) -> None:
    flags = r.byte()
    r.u32()
    if flags & 1:  # a maximum
        r.u32()
    if flags & 8:  # a custom page size (its log2)
        r.u32()

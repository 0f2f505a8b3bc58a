"""The compile-time half of the standard data path: rewriting a component so that
its byte-carrying imports (wasi:nn's, and the data-flow operators' buffer.read)
reach the host as spans (adapter.py is the host half, and says why), and so do the
bytes its map and accumulate operators return: their core `process` lifted a second
time with wasinn:adapter-results' span types (adapter.wat's `;; @@result` lines and
results block), same memory, realloc and string encoding, exported as
`wasinn-spans-KIND-process`, with a post-return of the adapter's that holds the
guest's own until the host has copied the bytes (`_results_text`).

Components from wit-component (wit-bindgen C/Rust, componentize-js, componentize-py,
the wasi-nn crate) reach their imports through a "shim" table that a "fixup" core
instance fills with the lowered host functions. `rewrite` appends to the component,
without touching any of its own index spaces: an import of wasinn:adapter's
interfaces (wasinn:adapter-buffers' for buffer.read), core modules (adapter.wat,
generated from wit/) that implement the tensor constructor, `tensor.data`,
`graph.load` and `buffer.read` with the flat signatures the guest expects,
instantiated over the guest's memory and realloc, and a last core instance whose
element segment points the shim table's slots for those imports at them. Everything
else the guest imports keeps its own lowering.

Where the adapter goes in is read from the binary (binary.read_layout: the component's
imports, aliases, canonical definitions and core instances, by index space), and the
text above names those places by index. wasm-tools does the encoding: the component is
printed as text with each core module replaced by a small placeholder (fast, and every
other section round-trips), the text above is added, the result is parsed, and the
original core modules go back in place of the placeholders. `Host.load_component` does this once per component; the compile
cache keeps the result (keyed on the original bytes and this module's version).
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
import re

from .._bindings import WASM_GRAPH_PROCESSOR_TYPES
from ..digests import sha256
from ..errors import WasinnError
from .binary import (CORE_FUNC, CORE_MODULE_SECTION, CORE_PREAMBLE, INSTANCE, MEMORY_OPTION, POST_RETURN_OPTION,
                     REALLOC_OPTION, STRING_ENCODINGS, Layout, holds, join, leb, read_layout, sections)
from .nn_versions import TENSOR_INTERFACES
from .wasm_tools import wasm_tools_output

TEMPLATE = pathlib.Path(__file__).resolve().parent / "adapter.wat"


@dataclasses.dataclass(frozen=True)
class _Target:
    """A guest import the adapter takes over (adapter.wat's `;; @@target` lines)."""
    interface: str
    function: str
    core_func: str  # the adapter's function that stands in for it
    signature: str  # the flat core signature the guest imports it with (the shim checks it)


@functools.cache
def _targets() -> dict[tuple[str, str], _Target]:
    lines = [ln.split(" ", 5)[2:] for ln in TEMPLATE.read_text().splitlines() if ln.startswith(";; @@target ")]
    return {(i, f): _Target(i, f, c, s) for i, f, c, s in lines}


@dataclasses.dataclass(frozen=True)
class _ResultTarget:
    """An operator export lifted again with its result's bytes as spans (adapter.wat's
    `;; @@result` lines): the export's core function, wasinn's export, its type."""
    core_export: str
    export: str
    func_type: str


@functools.cache
def _result_targets() -> dict[str, _ResultTarget]:
    lines = [ln.split(" ")[2:] for ln in TEMPLATE.read_text().splitlines() if ln.startswith(";; @@result ")]
    return {c: _ResultTarget(c, e, t) for c, e, t in lines}


# an operator export to lift again: its target, core function, canonical options but
# post-return (as text) and post-return function (None: the guest has none)
_SpanLift = tuple[_ResultTarget, int, str, "int | None"]

_PLACEHOLDER = b"wasinn-placeholder-"


# the host half of the adapter (wasinn:adapter/, wasinn:adapter-buffers/): no component may import it
_OWN = "wasinn:adapter"
BUFFER_INTERFACE = WASM_GRAPH_PROCESSOR_TYPES  # whose buffer.read the adapter takes over
OWN_EXPORTS = "wasinn-span"  # what the adapter exports (the operators' span results): not the guest's
SPANS_RELEASE = "wasinn-spans-release"  # the export that runs a span result's post-return, where the guest has one


def needs_adapter(wasm: bytes) -> bool:
    """Whether the component goes through `rewrite`: it imports wasi:nn/tensor (any
    version served) or wasm-graph:processor's types, or may import wasinn:adapter
    itself (refused there). Import names stand in the binary as they are: a substring
    test decides."""
    return holds(wasm, *(name.encode() for name in (*TENSOR_INTERFACES, BUFFER_INTERFACE, _OWN)))


@functools.cache
def adapter_digest() -> str:
    """Part of the compile cache's key: a changed adapter never meets an old rewrite."""
    h = sha256(TEMPLATE.read_bytes())
    h.update(pathlib.Path(__file__).read_bytes())
    return h.hexdigest()[:12]


def _placeholder(i: int) -> bytes:
    name = _PLACEHOLDER + str(i).encode()
    custom = leb(len(name)) + name
    return CORE_PREAMBLE + b"\0" + leb(len(custom)) + custom


def _placeholder_index(module: memoryview) -> int | None:
    head = bytes(module[:128])  # a placeholder's name and index lie well inside
    at = head.find(_PLACEHOLDER, 0, 64)
    if not head.startswith(CORE_PREAMBLE) or at < 0:
        return None
    return int(re.match(rb"\d+", head[at + len(_PLACEHOLDER):]).group())  # wasm-tools may add a name section


@dataclasses.dataclass
class _Plan:
    """Where the adapter goes in: indices in the component's own index spaces."""
    tensor_instance: int | None
    graph_instance: int | None
    graph_interface: str | None  # the wasi:nn/graph of the version the component imports
    buffer_instance: int | None  # its wasm-graph:processor/types
    memory: int
    realloc: int | None
    shim: int  # the core instance whose "$imports" table the guest's imports go through
    slots: dict[str, list[int]]  # function taken over -> the shim table slots it fills
    # operator exports lifted again with spans
    results: list[_SpanLift] = dataclasses.field(default_factory=list)
    results_note: str | None = None  # why an operator export's results keep the standard lift


class _Refused(WasinnError):
    """A component wasinn will not run at all (not merely not rewrite)."""


def _plan(layout: Layout, label: str) -> _Plan | str:
    """Where the adapter goes in, or why it cannot (a sentence).
    _Refused: the component imports wasinn:adapter itself. Its functions are the host
    half of the module wasinn adds (they bind the memory its spans point into); left to
    a guest they would be an interface nobody reviewed as a guest's, and keeping the
    per-value lowering would not take them away (one linker serves every component)."""
    for name in layout.imports:
        if name.startswith(_OWN):
            raise _Refused(f"{label} imports {name}, wasinn's host-internal interface; a component may not import it")
    instances = {name: index for name, (sort, index) in layout.imports.items() if sort == INSTANCE}
    tensor = [name for name in TENSOR_INTERFACES if name in instances]
    if len(tensor) > 1:
        return f"it imports {len(tensor)} versions of wasi:nn's tensor interface; the adapter serves one"
    if not tensor and BUFFER_INTERFACE not in instances:
        return "it imports neither wasi:nn's tensor interface nor wasm-graph:processor's types"
    tensor_interface = tensor[0] if tensor else None
    graph_interface = tensor[0].replace("/tensor@", "/graph@", 1) if tensor else None
    by_instance = {v: k for k, v in instances.items() if k in (tensor_interface, graph_interface, BUFFER_INTERFACE)}
    targets = {func: name for func, (instance, name) in layout.func_aliases.items()
               if (by_instance.get(instance), name) in _targets()}  # component func -> target function
    lowered = {core: (targets[func], options) for core, (func, options) in layout.lowerings.items()
               if func in targets}  # core func -> (target, its canonical options)
    if not lowered:
        return "it lowers none of the byte-carrying functions the adapter serves (wasi:nn's, buffer.read)"
    slots: dict[str, list[int]] = {}
    options = []
    for exports in layout.export_instances.values():  # the fixup's arguments: slot number -> lowered function
        for name, (sort, index) in exports.items():
            # a slot's name is its number (a 5000-digit one was past int()'s limit: a traceback)
            if sort == CORE_FUNC and index in lowered and name.isascii() and name.isdigit() and len(name) <= 9:
                target, opts = lowered[index]
                slots.setdefault(target, []).append(int(name))
                options.append(opts)
    if not slots:
        return "its byte-carrying lowerings do not go through a shim table (not a wit-component layout)"
    wanted = {str(s) for ss in slots.values() for s in ss}
    shims = {instance for sort, instance, name, _ in layout.core_aliases if sort == CORE_FUNC and name in wanted}
    if len(shims) != 1:
        return "its byte-carrying lowerings do not go through one shim table (not a wit-component layout)"
    memories = {v for opts in options for code, v in opts if code == MEMORY_OPTION}
    if len(memories) != 1:
        return f"its byte-carrying lowerings use {len(memories)} memories; the adapter serves one"
    # the realloc of the functions that return a list the adapter allocates
    reallocs = {v for opts in options for code, v in opts if code == REALLOC_OPTION}
    if len(reallocs) > 1:
        return f"its byte-carrying lowerings use {len(reallocs)} reallocs; the adapter serves one"
    graph = instances.get(graph_interface) if graph_interface else None
    if graph is None:
        for t in _targets().values():
            if t.interface == graph_interface:
                slots.pop(t.function, None)
    memory = memories.pop()
    plan = _Plan(instances.get(tensor_interface), graph, graph_interface, instances.get(BUFFER_INTERFACE),
                 memory, reallocs.pop() if reallocs else None, shims.pop(), slots)
    if any(t.interface == BUFFER_INTERFACE and t.function in slots for t in _targets().values()):
        # they read in the memory the buffers block binds
        plan.results, plan.results_note = _span_results(layout, memory)
    return plan


_LIFT_OPTIONS = {MEMORY_OPTION: "(memory {})", REALLOC_OPTION: "(realloc {})"}


def _span_results(layout: Layout, memory: int) -> tuple[list[_SpanLift], str | None]:
    """The operator exports whose results carry list<u8>, to lift again with spans: those
    whose lift uses the adapter's memory and only options a lift can repeat as they are;
    and why any other keeps the standard lift."""
    names = {index: name for sort, _, name, index in layout.core_aliases if sort == CORE_FUNC}
    out, kept = [], None
    for core, options, _type in layout.lifts.values():
        target = _result_targets().get(names.get(core, ""))
        if target is None:
            continue
        if (MEMORY_OPTION, memory) not in options:
            kept = f"{target.core_export}'s lift uses another memory than its imports"
            continue
        words, post_return = [], None
        for code, index in options:
            if code == POST_RETURN_OPTION:
                post_return = index
            elif code in STRING_ENCODINGS:
                words.append(f"string-encoding={STRING_ENCODINGS[code]}")
            elif code in _LIFT_OPTIONS:
                words.append(_LIFT_OPTIONS[code].format(index))
            else:  # async, a callback: not a lift this text repeats
                kept = f"{target.core_export}'s lift has a canonical option {code:#x} the adapter does not repeat"
                break
        else:
            out.append((target, core, " ".join(words), post_return))
    return out, None if kept is None else f"its operator results keep the standard lift (per-value, capped): {kept}"


def _block(template: str, name: str) -> str:
    return template.split(f";; @@begin {name}\n", 1)[1].split(f";; @@end {name}\n", 1)[0]


def _adapter_text(plan: _Plan) -> str:
    template = TEMPLATE.read_text()
    text = _block(template, "no-realloc") if plan.realloc is None else ""
    if plan.tensor_instance is not None:
        text += _block(template, "tensors")
    if any(t.interface == plan.graph_interface and t.function in plan.slots for t in _targets().values()):
        text += _block(template, "graphs")
    if any(t.interface == BUFFER_INTERFACE and t.function in plan.slots for t in _targets().values()):
        text += _block(template, "buffers")
    if plan.results:
        text += _block(template, "results") + _results_text(plan.results)
    imports, exports, elems = [], [], []
    targets = {t.function: t for t in _targets().values()}
    for i, (target, slots) in enumerate(sorted(plan.slots.items())):
        imports.append(f'    (import "" "f{i}" (func $f{i} {targets[target].signature}))')
        exports.append(f'(export "f{i}" (func {targets[target].core_func}))')
        elems += [f"    (elem (table 0) (i32.const {slot}) func $f{i})" for slot in slots]
    text += "\n".join([
        "  ;; Points the guest's shim table at the adapter's functions (after its own fixup ran).",
        "  (core module $wasinn:Refix",
        '    (import "" "$imports" (table 0 funcref))', *imports, *elems, "  )",
        f'  (alias core export {plan.shim} "$imports" (core table $wasinn:shim-table))',
        f'  (core instance $wasinn:refix-args (export "$imports" (table $wasinn:shim-table)) {" ".join(exports)})',
        '  (core instance $wasinn:refix (instantiate $wasinn:Refix (with "" (instance $wasinn:refix-args))))', ""])
    return (text.replace("@@TENSOR_INSTANCE@@", str(plan.tensor_instance))
                .replace("@@BUFFER_INSTANCE@@", str(plan.buffer_instance))
                .replace("@@GRAPH_INSTANCE@@", "" if plan.graph_instance is None else str(plan.graph_instance))
                .replace("@@MEMORY@@", str(plan.memory))
                .replace("@@REALLOC@@", "$wasinn:no-realloc" if plan.realloc is None else str(plan.realloc)))


def _results_text(results: list[_SpanLift]) -> str:
    """The operator exports lifted again with spans. wasmtime (since 42) runs a lift's
    post-return inside the call, right after lifting, so the guest would free the bytes
    before the host sees the spans: their post-return is this module's, which keeps the
    return area's address, and the guest's own runs when the host calls
    `wasinn-spans-release` after copying the bytes. A second result before a release
    traps: its post-return would see the return area the next call rewrote. Where no
    result has a post-return of the guest's (a guest that frees nothing after a call, as
    guest/snapshot-c), there is nothing to hold and no `wasinn-spans-release`: the host
    makes one call per message, not two (~20 us a frame)."""
    imports, funcs, release, args, lifts = [], [], [], [], []
    for i, (target, core, options, post_return) in enumerate(results):
        if post_return is None:
            funcs.append(f'    (func (export "post-{i}") (param i32))')
        else:
            funcs.append(f'    (func (export "post-{i}") (param i32)\n'
                         "      (if (global.get $which) (then (unreachable)))\n"
                         f"      (global.set $pending (local.get 0)) (global.set $which (i32.const {i + 1})))")
            imports.append(f'    (import "guest" "post-{i}" (func $post-{i} (param i32)))')
            release.append(f"      (if (i32.eq (local.get $w) (i32.const {i + 1})) "
                           f"(then (call $post-{i} (global.get $pending))))")
            args.append(f'(export "post-{i}" (func {post_return}))')
        name = target.export.removeprefix("wasinn-")
        lifts += [f'  (alias core export $wasinn:results-core "post-{i}" (core func $wasinn:results-post-{i}))',
                  f"  (func $wasinn:{name} (type {target.func_type}) (canon lift (core func {core}) {options} "
                  f"(post-return $wasinn:results-post-{i})))",
                  f'  (export "{target.export}" (func $wasinn:{name}))']
    return "\n".join([
        "  ;; Holds the guest's post-return of a span result until the host has read its bytes.",
        "  (core module $wasinn:Results", *imports,
        "    (global $pending (mut i32) (i32.const 0))",
        "    (global $which (mut i32) (i32.const 0))", *funcs,
        '    (func (export "release") (local $w i32)',
        "      (local.set $w (global.get $which)) (global.set $which (i32.const 0))", *release, "    ))",
        f'  (core instance $wasinn:results-guest {" ".join(args)})',
        '  (core instance $wasinn:results-core (instantiate $wasinn:Results (with "guest" (instance '
        '$wasinn:results-guest))))',
        *lifts,
        *(['  (alias core export $wasinn:results-core "release" (core func $wasinn:results-release))',
           "  (func $wasinn:spans-release (canon lift (core func $wasinn:results-release)))",
           f'  (export "{SPANS_RELEASE}" (func $wasinn:spans-release))'] if release else []), ""])


# What wit-component writes outside its core modules is types, aliases and instances:
# ~140-165 KB for a componentize-py guest, printed as ~350 KB of text. A component past
# these bounds is no such layout, and wasm-tools is not left to print without end: the
# rewrite of a 15 MB one of types alone (under the 16 MiB this bound was) took 4.6 s,
# this process to 194 MB and wasm-tools to 221 MB.
_MAX_STUB = 2 << 20
_MAX_STUB_TEXT = 8 << 20


def rewrite(wasm: bytes, label: str, results: bool = True) -> tuple[bytes, str | None]:
    """The component with its byte-carrying imports served through spans, and
    None (or a note when its operator results alone keep the standard lift); or the
    component unchanged and why it keeps the standard lowering (a broken file is then
    reported by the compiler, as any other). `results` False: no span lifts of operator
    results (what the caller retries with when the rewrite with them does not validate:
    they name the guest's types, which wasm-tools' parse does not check).
    WasinnError: the component may not run at all (it imports wasinn:adapter)."""
    try:
        return _rewrite(wasm, label, results)
    except _Refused:
        raise
    except WasinnError as e:
        if holds(wasm, _OWN.encode()):  # its imports went unread: it may be importing wasinn:adapter
            raise _Refused(f"{label} names {_OWN} and its imports cannot be read: {e}") from None
        return wasm, str(e)


def _rewrite(wasm: bytes, label: str, results: bool) -> tuple[bytes, str | None]:
    plan = _plan(read_layout(wasm), label)
    if isinstance(plan, str):
        return wasm, plan
    if not results:
        plan.results, plan.results_note = [], None
    top = sections(wasm)
    modules = [p for sid, p in top if sid == CORE_MODULE_SECTION]
    stub, i = [], 0
    for sid, payload in top:
        if sid == CORE_MODULE_SECTION:
            payload, i = _placeholder(i), i + 1
        stub.append((sid, payload))
    outside = sum(len(payload) for _, payload in stub)  # measured before any of it is copied
    if outside > _MAX_STUB:
        raise WasinnError(f"{outside >> 20} MiB lie outside its top-level core modules (not a wit-component layout)")
    stub = join(stub)
    text = wasm_tools_output(["print", "-"], stub, f"cannot read {label}", _MAX_STUB_TEXT).decode(errors="replace")
    end = text.rstrip().rindex(")")
    note = plan.results_note
    try:
        out = wasm_tools_output(["parse", "-"], (text[:end] + _adapter_text(plan) + ")\n").encode(),
                                f"cannot add wasinn's data-path adapter to {label}")
    except WasinnError as e:
        if not plan.results:
            raise
        # the span lifts alone failed: the rest of the data path goes in without them
        note = f"its operator results keep the standard lift (per-value, capped): {e}"
        plan.results = []
        out = wasm_tools_output(["parse", "-"], (text[:end] + _adapter_text(plan) + ")\n").encode(),
                                f"cannot add wasinn's data-path adapter to {label}")
    merged = []
    for sid, payload in sections(out):
        if sid == CORE_MODULE_SECTION and (k := _placeholder_index(payload)) is not None:
            payload = modules[k]
        merged.append((sid, payload))
    return join(merged), note

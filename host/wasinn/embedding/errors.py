"""What a wasmtime error says. wasmtime-py raises `WasmtimeError` and `Trap` carrying
the text of wasmtime's error chain and no kind, so this is the one place that reads
that text: which limit stopped a guest (`classify`), which import a linker lacks
(`missing_import`), and the cause a person needs (`one_line`). A wasmtime upgrade that
rewords a message fails tests/embedding/test_embedding.py's checks of these on real errors."""
from __future__ import annotations

import re
from typing import NamedTuple

# How wasmtime's linker names an import it has no definition for.
_MISSING_IMPORT = re.compile(r"component imports (instance|function) `([^`]+)`, but a matching implementation "
                             r"was not found in the linker")
_MEMORY_MINIMUM = re.compile(r"memory minimum size of (\d+) pages exceeds memory limits")
_TABLE_MINIMUM = re.compile(r"table minimum size of (\d+) elements exceeds table limits")
# What wasmtime counts per store ("resource limit exceeded: instance count too high at 257").
COUNTED = ("instance", "memory", "table")
# A refusal of wasinn's own from inside a wasmtime callback (abi/memory.py's), which
# names its limit: "... (limit 'memory', --memory)", maybe after a cause's number.
_OWN_LIMIT = re.compile(r"^(?:\s*\d+:)?\s*(.*\(limit '[a-z-]+', --[a-z-]+\))\s*$", re.M)
# Traps whose cause is a limit of the runtime, and what to do about each.
_KNOWN_LIMITS = {
    "fuel allocated for hostcalls has been exhausted":
        "a guest passed the host more than wasmtime's per-call limit for list and string values "
        "(2,796,202 bytes of list<u8>, 128 MiB of strings) in a call wasinn's data path does not serve (it serves "
        "wasi:nn's tensor constructor, tensor.data and graph.load, buffer.read, and the bytes map and "
        "accumulate operators return, of wit-component layouts; elsewhere hand a large payload back "
        "as its input's buffer)",
}


class Cause(NamedTuple):
    """kind: "deadline" (an epoch interrupt), "fuel", "memory-minimum" (value: pages),
    "table-minimum" (value: elements), "count" (value: one of COUNTED), "own-limit"
    (value: wasinn's refusal, one line), "missing-import" (value: (kind, name))."""
    kind: str
    value: object = None


def missing_import(e: Exception | str) -> tuple[str, str] | None:
    """("instance" or "function", its name) when a linker lacks an import."""
    found = _MISSING_IMPORT.match(str(e))
    return (found.group(1), found.group(2)) if found else None


def _chain(text: str) -> str:
    """What wasmtime says of an error: its first line and its chain of causes, after the
    last "Caused by:" line, where there is one. A backtrace between the two names the
    guest's functions as its name section spells them, "Caused by:" and forged causes
    included (a core module made its trap's line begin with text of its own)."""
    at = text.rfind("\nCaused by:\n")
    return text if at < 0 else text.split("\n", 1)[0] + text[at:]


def classify(e: Exception | str) -> Cause | None:
    """The limit or missing definition a wasmtime error reports; None for anything else."""
    text = _chain(str(e))
    if "wasm trap: interrupt" in text:
        return Cause("deadline")
    if "all fuel consumed" in text:
        return Cause("fuel")
    pages = _MEMORY_MINIMUM.search(text)
    if pages:
        return Cause("memory-minimum", int(pages.group(1)))
    elements = _TABLE_MINIMUM.search(text)
    if elements:
        return Cause("table-minimum", int(elements.group(1)))
    for kind in COUNTED:
        if f"{kind} count too high" in text:
            return Cause("count", kind)
    own = _OWN_LIMIT.search(text)
    if own:
        return Cause("own-limit", own.group(1))
    missing = missing_import(text)
    if missing:
        return Cause("missing-import", missing)
    return None


def one_line(e: Exception) -> str:
    """wasmtime errors carry a backtrace and a chain of causes; people need the cause."""
    text = _chain(str(e))
    for marker, explanation in _KNOWN_LIMITS.items():
        if marker in text:
            return explanation
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Caused by:" in lines:
        causes = lines[lines.index("Caused by:") + 1:]
        causes = [c.split(":", 1)[1].strip() if c[:1].isdigit() and ":" in c else c for c in causes]
        return "; ".join(causes) or lines[0]
    return lines[0] if lines else type(e).__name__

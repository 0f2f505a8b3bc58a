"""WAVE-style values for `wasinn run --invoke 'fn(args)'`, as wasmtime writes them.

Parses the call text into wasmtime-py values and formats results back. Covered:
numbers, "strings", 'c' chars, true/false, [lists], (tuples), {records: 1},
enum/flag case names, some(x)/none, ok(x)/err(x), and other variant cases name(x).
"""
from __future__ import annotations

import json
import re

from wasmtime.component import Record, Variant

from ..errors import WasinnError

_TOKEN = re.compile(r"""\s*(?:
    (?P<num>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|-?inf|nan)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<chr>'(?:[^'\\]|\\.)+')
  | (?P<name>%?[A-Za-z][A-Za-z0-9-]*)
  | (?P<punct>[()\[\]{},:])
)""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise WasinnError(f"--invoke: cannot read {text[pos:pos + 20]!r}")
        out.append((m.lastgroup, m.group(m.lastgroup)))
        pos = m.end()
    return out


def parse_call(text: str) -> tuple[str, list]:
    """`name(arg, ...)` → (name, [values])."""
    toks = _tokens(text)
    if len(toks) < 3 or toks[0][0] != "name" or toks[1] != ("punct", "(") or toks[-1] != ("punct", ")"):
        raise WasinnError(f"--invoke wants NAME(ARGS...), e.g. 'add(1, 2)'; got {text!r}")
    parser = _Parser(toks[2:-1])
    args = parser.items(end=None)
    return toks[0][1].lstrip("%"), args


class _Parser:
    def __init__(self, toks):
        self.toks, self.i = toks, 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self):
        tok = self.peek()
        if tok[0] is None:
            raise WasinnError("--invoke: the arguments end too early")
        self.i += 1
        return tok

    def items(self, end):
        out = []
        while self.peek()[1] != end:
            out.append(self.value())
            if self.peek()[1] == ",":
                self.take()
            elif self.peek()[1] != end:
                raise WasinnError(f"--invoke: expected ',' or {end or 'the end'}, got {self.peek()[1]!r}")
        if end is not None:
            self.take()
        return out

    def value(self):
        kind, text = self.take()
        if kind == "num":
            return float(text) if any(c in text for c in ".eEn") else int(text)
        if kind == "str":
            return json.loads(text)
        if kind == "chr":
            return json.loads('"' + text[1:-1].replace('"', '\\"') + '"')
        if text == "[":
            return self.items("]")
        if text == "(":
            return tuple(self.items(")"))
        if text == "{":
            rec = Record()
            while self.peek()[1] != "}":
                field = self.take()[1].lstrip("%")
                if self.take()[1] != ":":
                    raise WasinnError(f"--invoke: expected ':' after record field {field}")
                setattr(rec, field, self.value())
                if self.peek()[1] == ",":
                    self.take()
            self.take()
            return rec
        if kind == "name":
            name = text.lstrip("%")
            if name in ("true", "false"):
                return name == "true"
            if name == "none":
                return None
            if self.peek()[1] == "(":
                self.take()
                payload = self.items(")")
                value = payload[0] if payload else None
                return value if name == "some" else Variant(name, value)
            return name
        raise WasinnError(f"--invoke: unexpected {text!r}")


def format_value(value) -> str:
    """A result as wasmtime prints it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray)):
        return "[" + ", ".join(str(b) for b in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    if isinstance(value, Variant):
        return value.tag if value.payload is None else f"{value.tag}({format_value(value.payload)})"
    if isinstance(value, Record):
        return "{" + ", ".join(f"{k}: {format_value(v)}" for k, v in vars(value).items()) + "}"
    if value is None:
        return "none"
    if hasattr(value, "dims") and hasattr(value, "ty"):  # a HostTensor
        return f"tensor<{value.ty.value} {list(value.dims)}>"
    return str(value)

"""WAVE-style values for `wasinn run --invoke 'fn(args)'`, as wasmtime writes them.

Parses the call text into the values `Instance.call` takes, which checks them against
the export's WIT types (abi/values.py, which also writes results back). Covered:
numbers (nan, inf, -inf), "strings", 'c' chars, true/false, [lists], (tuples),
{records: 1}, {flags, ...}, enum cases, some(x)/none, ok(x)/err(x), other variant
cases name(x), and tensors, which WAVE lacks: `tensor(FP32, [2, 2], [1.0, 2.0, 3.0,
4.0])`, or `tensor("x.npy")` for an array numpy saved.
"""
from __future__ import annotations

import math
import re
from typing import Callable, Sequence

from wasmtime.component import Record, Variant

from ..errors import BadValue
from ..tensors import load_npy, tensor_from_values, tensor_type_named

_TOKEN = re.compile(r"""\s*(?:
    (?P<num>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|-?inf|nan)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<chr>'(?:[^'\\]|\\.)+')
  | (?P<name>%?[A-Za-z][A-Za-z0-9-]*)
  | (?P<punct>[()\[\]{},:])
)""", re.VERBOSE)
# WAVE's escapes in strings and chars: \\ \" \' \t \n \r and \u{hex}
_ESCAPE = re.compile(r"\\(?:u\{([0-9A-Fa-f]{1,6})\}|(.))", re.DOTALL)
_ESCAPED = {"\\": "\\", '"': '"', "'": "'", "t": "\t", "n": "\n", "r": "\r"}
# Characters of a tensor literal an error shows
_SHOWN = 40


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise BadValue(f"--invoke: cannot read {text[pos:].lstrip()[:20]!r}")
        out.append((m.lastgroup, m.group(m.lastgroup), m.start(m.lastgroup)))
        pos = m.end()
    return out


# How deep --invoke's values may nest (lists, tuples, records, variants): deeper than any
# component's types may (wasmtime refuses types nested 100 deep).
MAX_NESTING = 200


def parse_call(text: str, param_names: Callable[[str], Sequence[str]]) -> tuple[str, list]:
    """`name(arg, ...)` → (name, [values]). `param_names(name)` names the export's
    parameters, for messages about a value that does not read."""
    toks = _tokens(text)
    if len(toks) < 3 or toks[0][0] != "name" or toks[1][1] != "(" or toks[-1][1] != ")":
        raise BadValue(f"--invoke wants NAME(ARGS...), e.g. 'add(1, 2)'; got {text!r}")
    name = toks[0][1].lstrip("%")
    names = param_names(name)
    parser = _Parser(text, toks[2:-1])
    args = parser.items(None, lambda i: f"parameter {names[i]!r}" if i < len(names) else f"argument {i + 1}")
    return name, args


class _Parser:
    def __init__(self, text: str, toks):
        self.text, self.toks, self.i = text, toks, 0
        self.depth = 0  # values being read, one inside the other

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None, len(self.text))

    def take(self):
        tok = self.peek()
        if tok[0] is None:
            raise BadValue("--invoke: the arguments end too early")
        self.i += 1
        return tok

    def expect(self, punct: str) -> None:
        got = self.take()[1]
        if got != punct:
            raise BadValue(f"--invoke: expected {punct!r}, got {got!r}")

    def items(self, end, where: Callable[[int], str]) -> list:
        out = []
        while self.peek()[1] != end:
            out.append(self.value(where(len(out))))
            if self.peek()[1] == ",":
                self.take()
            elif self.peek()[1] != end:
                raise BadValue(f"--invoke: expected ',' or {end or 'the end'}, got {self.peek()[1]!r}")
        if end is not None:
            self.take()
        return out

    def value(self, where: str):
        self.depth += 1
        if self.depth > MAX_NESTING:  # before Python's own recursion limit meets it
            raise BadValue(f"--invoke: the arguments nest more than {MAX_NESTING} deep")
        try:
            return self._value(where)
        finally:
            self.depth -= 1

    def _value(self, where: str):
        kind, text, _ = self.take()
        if kind == "num":
            if not any(c in text for c in ".eEn"):
                return int(text)
            if math.isinf(float(text)) and "inf" not in text:
                raise BadValue(f"{where}: {text} is past every float type's range; write inf for infinity")
            return float(text)
        if kind in ("str", "chr"):
            return _unescaped(text[1:-1], where)
        if text == "[":
            return self.items("]", lambda i: f"{where}[{i}]")
        if text == "(":
            return tuple(self.items(")", lambda i: f"{where}.{i}"))
        if text == "{":
            return self.braces(where)
        if kind == "name":
            name = text.lstrip("%")
            if name in ("true", "false"):
                return name == "true"
            if name == "none":
                return None
            if self.peek()[1] != "(":
                return name
            if name == "tensor":
                return self.tensor(where)
            self.take()
            payload = self.items(")", lambda i: f"{where}.{name}")
            if len(payload) != 1:
                raise BadValue(f"{where}: {name}(...) takes one payload, got {len(payload)}")
            return payload[0] if name == "some" else Variant(name, payload[0])
        raise BadValue(f"--invoke: unexpected {text!r}")

    def braces(self, where: str):
        """{field: value, ...}, a record; {a, b}, flags."""
        if self.peek()[1] == "}":
            self.take()
            return set()
        if self.i + 1 < len(self.toks) and self.toks[self.i + 1][1] == ":":
            rec = Record()
            while True:
                field = self.take()[1].lstrip("%")
                self.expect(":")
                setattr(rec, field, self.value(f"{where}.{field}"))
                if self.take()[1] == "}":
                    return rec
        flags = set()
        while True:
            kind, flag, _ = self.take()
            if kind != "name":
                raise BadValue(f"--invoke: expected a flag's name, got {flag!r}")
            flags.add(flag.lstrip("%"))
            if self.take()[1] == "}":
                return flags

    def tensor(self, where: str):
        """tensor(TYPE, [dims], [values]) or tensor("file.npy"), after `tensor`."""
        start = self.peek()[2]
        self.expect("(")
        depth, end = 1, self.i
        while depth and end < len(self.toks):
            depth += {"(": 1, ")": -1}.get(self.toks[end][1], 0)
            end += 1
        literal = "tensor" + self.text[start:self.toks[end - 1][2] + 1]
        literal = literal if len(literal) <= _SHOWN else literal[:_SHOWN] + "..."
        try:
            if self.peek()[0] == "str":
                path = self.value(where)
                self.expect(")")
                return load_npy(path)
            kind, ty, _ = self.take()
            if kind != "name":
                raise BadValue(f"expected a tensor type (FP32, ...) first, got {ty}")
            ty = tensor_type_named(ty)
            self.expect(",")
            dims = self.value(where)
            self.expect(",")
            values = self.value(where)
            self.expect(")")
            return tensor_from_values(ty, dims, values)
        except BadValue as e:
            raise BadValue(f"{where}: {literal}: {str(e).removeprefix('--invoke: ')}") from None


def _unescaped(body: str, where: str) -> str:
    """A string's or char's text between its quotes, its escapes read as WAVE reads them."""
    def one(m: re.Match) -> str:
        if m.group(1) is not None:
            code = int(m.group(1), 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise BadValue(f"{where}: \\u{{{m.group(1)}}} is not a Unicode scalar value")
            return chr(code)
        if m.group(2) in _ESCAPED:
            return _ESCAPED[m.group(2)]
        raise BadValue(f"{where}: \\{m.group(2)} is not an escape WAVE has; it has "
                       "\\\\ \\\" \\' \\t \\n \\r and \\u{hex}")
    return _ESCAPE.sub(one, body)


"""A reader for the WIT subset that wit/ uses: packages, interfaces, `use`, type
aliases, enums, records, variants, flags, resources and functions.

It exists so that scripts/gen_bindings.py can turn wit/ into host bindings without a
Rust toolchain: wasmtime-py 50 ships no bindgen. Worlds are read only for their
names; the host serves interfaces, not worlds.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<doc>///[^\n]*)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<arrow>->)
  | (?P<version>(?<=@)\d+\.\d+\.\d+(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?)
  | (?P<ident>%?[A-Za-z][A-Za-z0-9-]*)
  | (?P<punct>[{}()<>,;:=./@*_])
""", re.VERBOSE | re.DOTALL)


class WitError(Exception):
    pass


@dataclasses.dataclass
class Type:
    """A WIT type: kind is a primitive name, 'list', 'tuple', 'option', 'result',
    'own', 'borrow' or 'named' (a reference to a type defined by name)."""
    kind: str
    args: tuple = ()
    name: str | None = None
    iface: "Interface | None" = None


@dataclasses.dataclass
class Func:
    name: str
    params: list[tuple[str, Type]]
    result: Type | None
    kind: str = "freestanding"  # or constructor, method, static
    resource: str | None = None
    doc: str = ""


@dataclasses.dataclass
class TypeDef:
    name: str
    kind: str  # alias, enum, record, variant, flags, resource
    doc: str = ""
    alias: Type | None = None
    cases: list = dataclasses.field(default_factory=list)   # enum/flags: names; variant: (name, Type|None)
    fields: list = dataclasses.field(default_factory=list)  # record: (name, Type)
    funcs: list[Func] = dataclasses.field(default_factory=list)  # resource


@dataclasses.dataclass
class Interface:
    name: str
    package: "Package"
    doc: str = ""
    types: dict[str, TypeDef] = dataclasses.field(default_factory=dict)
    funcs: list[Func] = dataclasses.field(default_factory=list)
    uses: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # local -> (iface path, name)

    @property
    def qualified(self) -> str:
        """The name a component imports this interface under."""
        p = self.package
        return f"{p.namespace}:{p.name}/{self.name}" + (f"@{p.version}" if p.version else "")


@dataclasses.dataclass
class Package:
    namespace: str
    name: str
    version: str | None
    interfaces: dict[str, Interface] = dataclasses.field(default_factory=dict)
    worlds: list[str] = dataclasses.field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.namespace}:{self.name}" + (f"@{self.version}" if self.version else "")


class _Parser:
    def __init__(self, text: str, path: str):
        self.path = path
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        line = 1
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise WitError(f"{path}:{line}: cannot read {text[pos:pos + 20]!r}")
            kind = m.lastgroup
            val = m.group()
            if kind not in ("ws", "comment"):
                if kind == "ident" and val.startswith("%"):
                    val = val[1:]
                self.toks.append((kind, val, line))
            line += val.count("\n")
            pos = m.end()
        self.i = 0

    def peek(self, off: int = 0) -> tuple[str, str, int]:
        j = self.i + off
        return self.toks[j] if j < len(self.toks) else ("eof", "", -1)

    def docs(self) -> str:
        lines = []
        while self.peek()[0] == "doc":
            lines.append(self.toks[self.i][1][3:].strip())
            self.i += 1
        return "\n".join(lines)

    def next(self) -> str:
        while self.peek()[0] == "doc":  # docs in places we do not keep them
            self.i += 1
        kind, val, line = self.peek()
        if kind == "eof":
            raise WitError(f"{self.path}: unexpected end of file")
        self.i += 1
        return val

    def expect(self, val: str) -> None:
        got = self.next()
        if got != val:
            raise WitError(f"{self.path}:{self.toks[self.i - 1][2]}: expected {val!r}, got {got!r}")

    def accept(self, val: str) -> bool:
        if self.peek()[1] == val and self.peek()[0] != "doc":
            self.i += 1
            return True
        return False

    def ident(self) -> str:
        while self.peek()[0] == "doc":
            self.i += 1
        kind, val, line = self.peek()
        if kind != "ident":
            raise WitError(f"{self.path}:{line}: expected a name, got {val!r}")
        self.i += 1
        return val

    # --- grammar -------------------------------------------------------------
    def package_header(self) -> tuple[str, str, str | None]:
        self.docs()
        self.expect("package")
        ns = self.ident()
        self.expect(":")
        name = self.ident()
        version = None
        if self.accept("@"):
            version = self.next()
        self.expect(";")
        return ns, name, version

    def file(self, pkg: Package) -> None:
        while self.peek()[0] != "eof":
            doc = self.docs()
            if self.peek()[0] == "eof":
                break
            word = self.ident()
            if word == "interface":
                iface = Interface(self.ident(), pkg, doc)
                self.interface_body(iface)
                pkg.interfaces[iface.name] = iface
            elif word == "world":
                pkg.worlds.append(self.ident())
                self.skip_braces()
            else:
                raise WitError(f"{self.path}: unsupported top-level item {word!r}")

    def skip_braces(self) -> None:
        self.expect("{")
        depth = 1
        while depth:
            v = self.next()
            depth += v == "{"
            depth -= v == "}"

    def use_path(self) -> str:
        # `iface`, or `ns:pkg/iface@version`
        first = self.ident()
        if not self.accept(":"):
            return first
        pkg = self.ident()
        self.expect("/")
        iface = self.ident()
        path = f"{first}:{pkg}/{iface}"
        if self.accept("@"):
            path += "@" + self.next()
        return path

    def interface_body(self, iface: Interface) -> None:
        self.expect("{")
        while True:
            doc = self.docs()
            if self.accept("}"):
                return
            word = self.ident()
            if word == "use":
                path = self.use_path()
                self.expect(".")
                self.expect("{")
                while not self.accept("}"):
                    name = self.ident()
                    local = self.ident() if self.accept("as") else name
                    iface.uses[local] = (path, name)
                    self.accept(",")
                self.expect(";")
            elif word == "type":
                name = self.ident()
                self.expect("=")
                iface.types[name] = TypeDef(name, "alias", doc, alias=self.type())
                self.expect(";")
            elif word in ("enum", "flags"):
                td = TypeDef(self.ident(), word, doc)
                self.expect("{")
                while not self.accept("}"):
                    self.docs()
                    if self.accept("}"):
                        break
                    td.cases.append(self.ident())
                    self.accept(",")
                iface.types[td.name] = td
            elif word == "record":
                td = TypeDef(self.ident(), "record", doc)
                self.expect("{")
                while not self.accept("}"):
                    self.docs()
                    if self.accept("}"):
                        break
                    fname = self.ident()
                    self.expect(":")
                    td.fields.append((fname, self.type()))
                    self.accept(",")
                iface.types[td.name] = td
            elif word == "variant":
                td = TypeDef(self.ident(), "variant", doc)
                self.expect("{")
                while not self.accept("}"):
                    self.docs()
                    if self.accept("}"):
                        break
                    cname = self.ident()
                    payload = None
                    if self.accept("("):
                        payload = self.type()
                        self.expect(")")
                    td.cases.append((cname, payload))
                    self.accept(",")
                iface.types[td.name] = td
            elif word == "resource":
                td = TypeDef(self.ident(), "resource", doc)
                iface.types[td.name] = td
                if self.accept(";"):
                    continue
                self.expect("{")
                while True:
                    fdoc = self.docs()
                    if self.accept("}"):
                        break
                    fname = self.ident()
                    if fname == "constructor":
                        params = self.params()
                        result = self.type() if self.accept("->") else None
                        td.funcs.append(Func(fname, params, result, "constructor", td.name, fdoc))
                    else:
                        self.expect(":")
                        static = self.accept("static")
                        self.expect("func")
                        params = self.params()
                        result = self.type() if self.accept("->") else None
                        td.funcs.append(Func(fname, params, result, "static" if static else "method",
                                             td.name, fdoc))
                    self.expect(";")
            else:
                self.expect(":")
                self.expect("func")
                params = self.params()
                result = self.type() if self.accept("->") else None
                self.expect(";")
                iface.funcs.append(Func(word, params, result, doc=doc))

    def params(self) -> list[tuple[str, Type]]:
        self.expect("(")
        out = []
        while not self.accept(")"):
            name = self.ident()
            self.expect(":")
            out.append((name, self.type()))
            self.accept(",")
        return out

    def type(self) -> Type:
        name = self.ident()
        if name in ("list", "option", "own", "borrow"):
            self.expect("<")
            inner = self.type()
            self.expect(">")
            return Type(name, (inner,))
        if name == "tuple":
            self.expect("<")
            items = [self.type()]
            while self.accept(","):
                items.append(self.type())
            self.expect(">")
            return Type("tuple", tuple(items))
        if name == "result":
            ok = err = None
            if self.accept("<"):
                if self.accept("_"):
                    ok = None
                else:
                    ok = self.type()
                if self.accept(","):
                    err = self.type()
                self.expect(">")
            return Type("result", (ok, err))
        if name in PRIMITIVES:
            return Type(name)
        return Type("named", name=name)


PRIMITIVES = {"bool", "u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64",
              "f32", "f64", "char", "string"}


def _read_dir(directory: pathlib.Path) -> Package:
    pkg = None
    files = sorted(directory.glob("*.wit"))
    for f in files:
        p = _Parser(f.read_text(), str(f))
        j = 0
        while p.peek(j)[0] == "doc":
            j += 1
        if p.peek(j)[1] == "package":
            header = Package(*p.package_header())
            if pkg is None:
                pkg = header
            elif pkg.id != header.id:
                raise WitError(f"{f}: package {header.id} differs from {pkg.id}")
        if pkg is None:
            raise WitError(f"{f}: no package header")
        p.file(pkg)
    if pkg is None:
        raise WitError(f"{directory}: no .wit files")
    return pkg


def load(wit_dir: str | pathlib.Path) -> dict[str, Package]:
    """Reads wit/ (its own package plus every package under deps/) and resolves every
    named type reference to the interface that defines it. Returns packages by id."""
    root = pathlib.Path(wit_dir)
    pkgs = [_read_dir(root)]
    deps = root / "deps"
    if deps.is_dir():
        pkgs += [_read_dir(d) for d in sorted(deps.iterdir()) if d.is_dir()]
    by_id = {p.id: p for p in pkgs}
    for p in pkgs:
        for iface in p.interfaces.values():
            _resolve(iface, by_id)
    return by_id


def find_interface(pkgs: dict[str, Package], path: str, home: Package) -> Interface:
    if ":" not in path:
        try:
            return home.interfaces[path]
        except KeyError:
            raise WitError(f"{home.id}: no interface {path!r}") from None
    m = re.fullmatch(r"([^:]+):([^/]+)/([^@]+)(?:@(.+))?", path)
    if not m:
        raise WitError(f"bad interface path {path!r}")
    ns, name, iface, version = m.groups()
    pid = f"{ns}:{name}" + (f"@{version}" if version else "")
    if pid not in pkgs or iface not in pkgs[pid].interfaces:
        raise WitError(f"no interface {path!r} in wit/")
    return pkgs[pid].interfaces[iface]


def _resolve(iface: Interface, pkgs: dict[str, Package]) -> None:
    def lookup(name: str) -> tuple[Interface, TypeDef]:
        where = iface
        while name not in where.types:  # a `use` may name a type its interface itself uses
            if name not in where.uses:
                raise WitError(f"{where.qualified}: unknown type {name!r}")
            path, name = where.uses[name]
            where = find_interface(pkgs, path, where.package)
        return where, where.types[name]

    def fix(t: Type | None) -> None:
        if t is None:
            return
        if t.kind == "named" and t.iface is None:
            owner, td = lookup(t.name)
            t.iface, t.name = owner, td.name
        for a in t.args:
            fix(a)

    for td in iface.types.values():
        fix(td.alias)
        for _, ft in td.fields:
            fix(ft)
        for case in td.cases:
            if isinstance(case, tuple):
                fix(case[1])
        for f in td.funcs:
            for _, pt in f.params:
                fix(pt)
            fix(f.result)
    for f in iface.funcs:
        for _, pt in f.params:
            fix(pt)
        fix(f.result)


def deref(t: Type) -> tuple[Type, TypeDef | None]:
    """Follows aliases; returns the underlying type and, for a named type, its definition."""
    while t.kind == "named":
        td = t.iface.types[t.name]
        if td.kind != "alias":
            return t, td
        t = td.alias
    return t, None

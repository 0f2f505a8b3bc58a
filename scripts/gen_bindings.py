#!/usr/bin/env python3
"""Generates host/wasinn/_bindings.py and _enums.py from wit/.

    python scripts/gen_bindings.py          # rewrite the committed file
    python scripts/gen_bindings.py --check  # exit 1 and show a diff if it drifted

The generated module holds, for every interface the host serves: typed enums and
records, resource type ids, a Protocol the implementation fills in (plain Python
values, resources as integer reps), and `add_*_to_linker`, which wires that
implementation into a wasmtime-py component linker under the canonical names
(`[constructor]tensor`, `[method]graph.init-execution-context`, ...). It also names
every interface in wit/ as a constant, so host code never spells a WIT name. The enums
are in a module of their own, `_enums.py` (`_bindings` names them too): a backend
worker's fork server imports them and nothing else of the bindings, whose classes took
~20 ms of its start-up, on the way to a guest's first isolated graph.load.

A package wit/ holds in several versions (wasi:nn's releases) gets one set of names per
version: the newest keeps the plain ones (`WASI_NN_TENSOR`, `WasiNnHost`,
`add_wasi_nn_to_linker`), each older one adds its version (`WASI_NN_TENSOR_0_2_0_RC_2024_08_19`,
`WasiNnHost_0_2_0_rc_2024_08_19`, `add_wasi_nn_0_2_0_rc_2024_08_19_to_linker`). Types
and resources of the same name are one: the versions share the enums (checked equal
here) and the resource type ids, so the host serves them all from one table.
"""
from __future__ import annotations

import argparse
import keyword
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import wit  # noqa: E402
from generated import write_or_check  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "host" / "wasinn" / "_bindings.py"
ENUMS_OUT = ROOT / "host" / "wasinn" / "_enums.py"
# Packages whose interfaces the host implements (namespace:name, any version), and for
# a package whose guests also export some of its interfaces, the ones the host serves.
SERVED = {"wasi:nn": None, "wasinn:fastpath": None, "wasinn:adapter": None, "wasinn:adapter-buffers": None,
          "wasinn:introspect": None,
          "wasm-graph:processor": ("types", "hybrid-logical-clock", "logger", "metrics",
                                   "state-store-types", "state-store", "schema-types", "schema-registry",
                                   "rpc-types", "command-invoker")}


def snake(name: str) -> str:
    return name.replace("-", "_").lower()


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("-"))


def upper(name: str) -> str:
    return name.replace("-", "_").replace(":", "_").replace("/", "_").upper()


def version_key(version: str | None) -> tuple:
    """Orders versions as semver does for the ones wit/ holds (numbers, then pre-release text)."""
    core, _, pre = (version or "").partition("-")
    return tuple(int(n) for n in core.split(".") if n.isdigit()), pre == "", pre


def newest(pkgs) -> dict[str, str | None]:
    """namespace:name -> the newest version wit/ holds of it."""
    out: dict[str, str | None] = {}
    for p in pkgs:
        key = f"{p.namespace}:{p.name}"
        if key not in out or version_key(p.version) > version_key(out[key]):
            out[key] = p.version
    return out


NEWEST: dict[str, str | None] = {}  # filled in by Emitter


def tag(p: wit.Package) -> str:
    """'' for the newest version of a package, else '_' and its version as a name."""
    if NEWEST.get(f"{p.namespace}:{p.name}") == p.version:
        return ""
    return "_" + re.sub(r"[^0-9A-Za-z]+", "_", p.version or "")


def const_name(iface: wit.Interface) -> str:
    p = iface.package
    return upper(f"{p.namespace}-{p.name}-{iface.name}") + tag(p).upper()


class Emitter:
    def __init__(self, pkgs: dict[str, wit.Package]):
        self.pkgs = pkgs
        NEWEST.clear()
        NEWEST.update(newest(pkgs.values()))
        # the newest version of each package first: its docs name the shared types
        self.served = sorted((p for p in pkgs.values() if f"{p.namespace}:{p.name}" in SERVED),
                             key=lambda p: (tag(p) != "", p.namespace, p.name, version_key(p.version)))
        self.helpers: dict[str, tuple[str, list[str]]] = {}
        self.resources: list[tuple[wit.Interface, wit.TypeDef]] = []
        # One implementation serves a whole package, so where two of its interfaces declare
        # the same function (`get` in state-store and schema-registry) every function's
        # method is named after its interface.
        self.prefixed = set()
        for p in self.served:
            names = [f.name for i in self.interfaces(p) for f in i.funcs]
            if len(names) != len(set(names)):
                self.prefixed.add(p.id)
        for p in self.served:
            for iface in self.interfaces(p):
                for td in iface.types.values():
                    if td.kind == "resource" and td.name not in {r.name for _, r in self.resources}:
                        self.resources.append((iface, td))

    @staticmethod
    def interfaces(p: wit.Package) -> list[wit.Interface]:
        only = SERVED[f"{p.namespace}:{p.name}"]
        return [i for i in p.interfaces.values() if only is None or i.name in only]

    # --- type helpers ----------------------------------------------------------
    def resource_const(self, t: wit.Type) -> str:
        _, td = wit.deref(t)
        return f"Resource.{upper(td.name)}"

    def pytype(self, t: wit.Type | None) -> str:
        if t is None:
            return "None"
        t, td = wit.deref(t)
        k = t.kind
        if k == "named":
            if td.kind == "resource":
                return "int"
            if td.kind == "variant":
                return "Variant"
            return camel(td.name)
        if k in ("u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64"):
            return "int"
        if k in ("f32", "f64"):
            return "float"
        if k in ("string", "char"):
            return "str"
        if k == "bool":
            return "bool"
        if k == "list":
            inner, _ = wit.deref(t.args[0])
            return "bytes" if inner.kind == "u8" else f"list[{self.pytype(t.args[0])}]"
        if k == "tuple":
            return "tuple[" + ", ".join(self.pytype(a) for a in t.args) + "]"
        if k == "option":
            return f"{self.pytype(t.args[0])} | None"
        if k in ("own", "borrow"):
            return "int"
        if k == "result":
            return self.pytype(t.args[0])
        raise wit.WitError(f"no Python type for {k}")

    def classes(self, t: wit.Type | None) -> set[str]:
        """The Python classes wasmtime-py 50 uses for a value of this type; they decide
        whether it represents a variant-like value as a tagged `Variant`."""
        if t is None:
            return {"object"}
        t, td = wit.deref(t)
        k = t.kind
        if k == "named":
            if td.kind == "variant":
                cases = [c[1] for c in td.cases]
                return {"Variant"} if self.tagged(cases) else set().union(*map(self.classes, cases))
            return {"enum": {"str"}, "record": {"Record"}, "flags": {"set"},
                    "resource": {"ResourceAny", "ResourceHost"}}[td.kind]
        if k in ("own", "borrow"):
            return {"ResourceAny", "ResourceHost"}
        if k == "list":
            return {"bytes"} if wit.deref(t.args[0])[0].kind == "u8" else {"list"}
        if k in ("option", "result"):
            cases = [None, t.args[0]] if k == "option" else list(t.args)
            return {"Variant"} if self.tagged(cases) else set().union(*(self.classes(c) for c in cases))
        return {"bool": {"bool"}, "f32": {"float"}, "f64": {"float"}, "string": {"str"},
                "char": {"str"}, "tuple": {"tuple"}}.get(k, {"int"})

    def tagged(self, cases: list) -> bool:
        seen: set[str] = set()
        for c in cases:
            cs = self.classes(c)
            if cs & seen:
                return True
            seen |= cs
        return False

    def helper(self, key: str, build) -> str:
        if key not in self.helpers:
            name = f"_conv{len(self.helpers)}"
            self.helpers[key] = (name, [])  # reserve the name before building nested helpers
            self.helpers[key] = (name, build(name))
        return self.helpers[key][0]

    def lift(self, t: wit.Type, expr: str) -> str:
        """Expression converting a wasmtime-py value to the implementation's value."""
        t, td = wit.deref(t)
        k = t.kind
        if k == "named":
            if td.kind == "enum":
                return f"{camel(td.name)}({expr})"
            if td.kind == "resource":  # a bare resource name means own<resource>
                return f"_rep(store, {expr}, {self.resource_const(t)})"
            if td.kind == "record":
                fields = ", ".join(f"{snake(f)}={self.lift(ft, f'getattr(v, {f!r})')}"
                                   for f, ft in td.fields)
                fn = self.helper(f"lift:{td.name}", lambda n: [
                    f"def {n}(store, v):", f"    return {camel(td.name)}({fields})"])
                return f"{fn}(store, {expr})"
            if td.kind == "variant":
                fn = self.helper(f"lift:{td.name}", lambda n: self.lift_variant(n, td))
                return f"{fn}(store, {expr})"
            raise wit.WitError(f"cannot take a {td.kind} from a guest yet")
        if k in ("own", "borrow"):
            return f"_rep(store, {expr}, {self.resource_const(t.args[0])})"
        if k == "list":
            if self.lift(t.args[0], "x") == "x":  # bytes, or a list of plain values
                return expr
            fn = self.helper(f"lift:{self.sig(t)}", lambda n: [
                f"def {n}(store, v):", f"    return [{self.lift(t.args[0], 'x')} for x in v]"])
            return f"{fn}(store, {expr})"
        if k == "tuple":
            items = ", ".join(self.lift(a, f"v[{i}]") for i, a in enumerate(t.args))
            fn = self.helper(f"lift:{self.sig(t)}", lambda n: [
                f"def {n}(store, v):", f"    return ({items},)"])
            return f"{fn}(store, {expr})"
        if k == "option":
            fn = self.helper(f"lift:{self.sig(t)}", lambda n: [
                f"def {n}(store, v):", f"    return None if v is None else {self.lift(t.args[0], 'v')}"])
            return f"{fn}(store, {expr})"
        return expr

    def lower(self, t: wit.Type, expr: str) -> str:
        """Expression converting an implementation value to a wasmtime-py value."""
        t, td = wit.deref(t)
        k = t.kind
        if k == "named":
            if td.kind == "enum":
                return f"{expr}.value"
            if td.kind == "resource":
                return f"ResourceHost.own({expr}, {self.resource_const(t)})"
            if td.kind == "record":
                sets = [f"    setattr(r, {f!r}, {self.lower(ft, f'v.{snake(f)}')})" for f, ft in td.fields]
                fn = self.helper(f"lower:{td.name}", lambda n: [
                    f"def {n}(store, v):", "    r = Record()", *sets, "    return r"])
                return f"{fn}(store, {expr})"
            if td.kind == "variant":
                fn = self.helper(f"lower:{td.name}", lambda n: self.lower_variant(n, td))
                return f"{fn}(store, {expr})"
            raise wit.WitError(f"cannot hand a {td.kind} to a guest yet")
        if k == "own":
            return f"ResourceHost.own({expr}, {self.resource_const(t.args[0])})"
        if k == "list":
            if self.lower(t.args[0], "x") == "x":
                return expr
            fn = self.helper(f"lower:{self.sig(t)}", lambda n: [
                f"def {n}(store, v):", f"    return [{self.lower(t.args[0], 'x')} for x in v]"])
            return f"{fn}(store, {expr})"
        if k == "tuple":
            items = ", ".join(self.lower(a, f"v[{i}]") for i, a in enumerate(t.args))
            fn = self.helper(f"lower:{self.sig(t)}", lambda n: [
                f"def {n}(store, v):", f"    return ({items},)"])
            return f"{fn}(store, {expr})"
        if k == "option":
            fn = self.helper(f"lower:{self.sig(t)}", lambda n: [
                f"def {n}(store, v):", f"    return None if v is None else {self.lower(t.args[0], 'v')}"])
            return f"{fn}(store, {expr})"
        if k == "borrow":
            raise wit.WitError("a host function cannot return a borrow")
        return expr

    def lift_variant(self, name: str, td: wit.TypeDef) -> list[str]:
        """A variant always reaches the implementation as `Variant(case, value)`; wasmtime-py
        tags it only when the cases' Python classes overlap, else passes the bare payload."""
        lines = [f"def {name}(store, v):"]
        if self.tagged([c for _, c in td.cases]):
            for case, ct in td.cases:
                value = "None" if ct is None else self.lift(ct, "v.payload")
                lines.append(f"    if v.tag == {case!r}:")
                lines.append(f"        return Variant({case!r}, {value})")
        else:
            for case, ct in sorted(td.cases, key=lambda c: c[1] is not None):  # the bare None case first
                if ct is None:
                    lines.append("    if v is None:")
                    lines.append(f"        return Variant({case!r})")
                    continue
                classes = ", ".join(sorted(self.classes(ct)))
                lines.append(f"    if isinstance(v, ({classes},)):")
                lines.append(f"        return Variant({case!r}, {self.lift(ct, 'v')})")
        lines.append(f"    raise ValueError(f'not a {td.name}: {{v!r}}')")
        return lines

    def lower_variant(self, name: str, td: wit.TypeDef) -> list[str]:
        tagged = self.tagged([c for _, c in td.cases])
        lines = [f"def {name}(store, v):"]
        for case, ct in td.cases:
            value = "None" if ct is None else self.lower(ct, "v.payload")
            lines.append(f"    if v.tag == {case!r}:")
            lines.append(f"        return {f'Variant({case!r}, {value})' if tagged else value}")
        lines.append(f"    raise ValueError(f'not a {td.name}: {{v!r}}')")
        return lines

    def sig(self, t: wit.Type | None) -> str:
        if t is None:
            return "_"
        t, td = wit.deref(t)
        if t.kind == "named":
            return td.name
        return f"{t.kind}<" + ",".join(self.sig(a) for a in t.args) + ">"

    # --- functions -------------------------------------------------------------
    def method_name(self, f: wit.Func, iface: wit.Interface) -> str:
        if f.resource is None:
            if iface.package.id in self.prefixed:
                return f"{snake(iface.name)}_{snake(f.name)}"
            return snake(f.name) + ("_" if keyword.iskeyword(snake(f.name)) else "")
        if f.kind == "constructor":
            return f"{snake(f.resource)}_new"
        return f"{snake(f.resource)}_{snake(f.name)}"

    @staticmethod
    def canonical(f: wit.Func) -> str:
        return {"freestanding": f.name, "constructor": f"[constructor]{f.resource}",
                "method": f"[method]{f.resource}.{f.name}",
                "static": f"[static]{f.resource}.{f.name}"}[f.kind]

    def proto_method(self, f: wit.Func, iface: wit.Interface) -> list[str]:
        args = []
        for name, t in f.params:
            args.append(f"{snake(name)}: {self.pytype(t)}")
        if f.kind == "method":
            args.insert(0, "self_: int")
        result = f.result
        if f.kind == "constructor":
            ret = "int"
        elif result is not None and wit.deref(result)[0].kind == "result":
            ret = self.pytype(wit.deref(result)[0].args[0])
        else:
            ret = self.pytype(result)
        doc = (f.doc or "").replace("\n", " ").strip()
        raises = ""
        if result is not None and wit.deref(result)[0].kind == "result":
            raises = f" Raise `Err(...)` for its `err` case."
        lines = [f"    def {self.method_name(f, iface)}(self, store: StoreContext{''.join(', ' + a for a in args)}) -> {ret}:"]
        text = (doc + raises).strip() or f"`{self.canonical(f)}` of {iface.qualified}."
        lines.append(f'        """{text}"""')
        lines.append("        ...")
        return lines

    def wiring(self, f: wit.Func, iface: wit.Interface) -> list[str]:
        ps = f.params
        names = [snake(n) + "_" for n, _ in ps]
        if f.kind == "method":
            names.insert(0, "self_")
        call_args = []
        if f.kind == "method":
            call_args.append(f"_rep(store, self_, Resource.{upper(f.resource)})")
        for (n, t), v in zip(ps, names[1:] if f.kind == "method" else names):
            call_args.append(self.lift(t, v))
        fname = f"_{snake(iface.name)}__{self.method_name(f, iface)}"
        call = f"impl.{self.method_name(f, iface)}(store{''.join(', ' + a for a in call_args)})"
        lines = [f"    def {fname}(store{''.join(', ' + n for n in names)}):"]
        result = f.result
        if f.kind == "constructor":
            lines.append(f"        return ResourceHost.own({call}, Resource.{upper(f.resource)})")
        elif result is None:
            lines.append(f"        {call}")
        elif wit.deref(result)[0].kind == "result":
            rt = wit.deref(result)[0]
            ok, err = rt.args
            tagged = self.tagged([ok, err])
            wrap_ok = self.lower(ok, "value") if ok is not None else "None"
            wrap_err = self.lower(err, "e.value") if err is not None else "None"
            if tagged:
                wrap_ok, wrap_err = f"Variant('ok', {wrap_ok})", f"Variant('err', {wrap_err})"
            lines += ["        try:", f"            value = {call}", "        except Err as e:",
                      f"            return {wrap_err}", f"        return {wrap_ok}"]
        else:
            lines.append(f"        return {self.lower(result, call)}")
        lines.append(f"    li.add_func({self.canonical(f)!r}, {fname})")
        return lines

    @staticmethod
    def record(cls: str, doc: str, fields: list[tuple[str, str]]) -> list[str]:
        """A dataclass whose __init__, __repr__ and __eq__ are written out as dataclass()
        would make them: dataclass() makes each by compiling source text at import, ~0.1 ms
        a record, 2.6 ms of every process's start-up over wit/'s records (0.4 ms written out)."""
        names = [n for n, _ in fields]
        fields_repr = ", ".join(f"{n}={{self.{n}!r}}" for n in names)
        mine, theirs = (f"({', '.join(f'{o}.{n}' for n in names)}{',' if len(names) == 1 else ''})"
                        for o in ("self", "other"))
        return ["", "@dataclasses.dataclass(init=False, repr=False, eq=False)", f"class {cls}:", f'    """{doc}"""',
                *[f"    {n}: {t}" for n, t in fields],
                "", f"    def __init__(self{''.join(', ' + n for n in names)}):",
                *([f"        self.{n} = {n}" for n in names] or ["        pass"]),
                "", "    def __repr__(self):",
                f"        return f'{{self.__class__.__qualname__}}({fields_repr})'",
                "", "    def __eq__(self, other):",
                "        if other.__class__ is self.__class__:",
                f"            return {mine} == {theirs}",
                "        return NotImplemented", ""]

    # --- module ----------------------------------------------------------------
    def emit(self) -> tuple[str, str]:
        """The text of _bindings.py and of _enums.py."""
        out = [
            '"""Host bindings for the interfaces in wit/.',
            "",
            "GENERATED by scripts/gen_bindings.py from wit/ -- do not edit by hand;",
            "run `python scripts/gen_bindings.py` after changing wit/.",
            '"""',
            "from __future__ import annotations",
            "",
            "import dataclasses",
            "import enum",
            "from typing import TYPE_CHECKING, Protocol",
            "",
            "from ._enums import @@ENUMS@@  # noqa: F401 (named here too)",
            "",
            "if TYPE_CHECKING:",
            "    from wasmtime import StoreContext",
            "    from wasmtime.component import LinkerInstance, Record, ResourceAny, ResourceHost, ResourceType, Variant",
            "",
            "# Every interface in wit/, by the name components import or export it under.",
        ]
        enums: list[str] = []  # _enums.py's classes
        for p in sorted(self.pkgs.values(), key=lambda p: p.id):
            for iface in p.interfaces.values():
                out.append(f"{const_name(iface)} = {iface.qualified!r}")
        out += ["", "# The versions wit/ holds of each package the host serves, newest first."]
        versions: dict[str, list[str]] = {}
        for p in self.served:
            versions.setdefault(f"{p.namespace}:{p.name}", []).append(p.version)
        out.append("SERVED_VERSIONS = {")
        for name, vs in versions.items():
            out.append(f"    {name!r}: {sorted(vs, key=version_key, reverse=True)!r},")
        out.append("}")
        out += ["", "# Every world in wit/, as componentize-py's -w takes it."]
        for p in sorted(self.pkgs.values(), key=lambda p: p.id):
            for world in p.worlds:
                versioned = f"@{p.version}" if tag(p) else ""  # as -w takes an older version's world
                out.append(f"{upper(f'{p.namespace}-{p.name}-{world}')}{tag(p).upper()}_WORLD = "
                           f"{f'{p.namespace}:{p.name}/{world}{versioned}'!r}")
        out += ["", "",
                "class Resource(enum.IntEnum):",
                '    """Type ids of the host-defined resources (the `ty` of each ResourceHost)."""']
        for i, (_, td) in enumerate(self.resources, 1):
            out.append(f"    {upper(td.name)} = {i}")
        out += ["", "", "RESOURCE_WIT_NAMES = {"]
        for iface, td in self.resources:
            out.append(f"    Resource.{upper(td.name)}: {td.name!r},")
        out += ["}", "", "",
                "class Err(Exception):",
                '    """Raised by an implementation to return the `err` case of a WIT `result`."""',
                "",
                "    def __init__(self, value: object):",
                "        super().__init__(value)",
                "        self.value = value",
                ""]
        # enums and records (one class per name: the versions of a package must agree on it)
        emitted: dict[str, tuple] = {}
        for p in self.served:
            for iface in self.interfaces(p):
                for td in iface.types.values():
                    if td.kind not in ("enum", "record"):
                        continue
                    shape = (td.kind, tuple(td.cases), tuple((f, self.sig(ft)) for f, ft in td.fields))
                    if td.name in emitted:
                        if emitted[td.name] != shape:
                            raise wit.WitError(f"{iface.qualified}: {td.name} differs from another version's")
                        continue
                    emitted[td.name] = shape
                    doc = (td.doc or f"`{td.name}` of {iface.qualified}.").replace("\n", " ")
                    if td.kind == "enum":
                        enums += ["", "", f"class {camel(td.name)}(enum.Enum):", f'    """{doc}"""']
                        enums += [f"    {upper(c)} = {c!r}" for c in td.cases]
                    elif td.kind == "record":
                        out += self.record(camel(td.name), doc, [(snake(f), self.pytype(ft)) for f, ft in td.fields])
        # protocols
        for p in self.served:
            iface_protos = []
            for iface in self.interfaces(p):
                cls = f"{camel(iface.name)}Host{tag(p)}"
                iface_protos.append(cls)
                out += ["", f"class {cls}(Protocol):",
                        f'    """What the host implements for {iface.qualified}."""']
                funcs = [*iface.funcs]
                for td in iface.types.values():
                    funcs += td.funcs
                for f in funcs:
                    out += [""] + self.proto_method(f, iface)
                for td in iface.types.values():
                    if td.kind == "resource":
                        out += ["", f"    def {snake(td.name)}_drop(self, store: StoreContext, rep: int) -> None:",
                                f'        """The guest dropped its last handle to a `{td.name}`; must not raise."""',
                                "        ..."]
                out.append("")
            pkg_cls = f"{camel(p.namespace)}{camel(p.name)}Host{tag(p)}"
            out += ["", f"class {pkg_cls}({', '.join(iface_protos)}, Protocol):",
                    f'    """Everything the host implements for {p.id}."""', ""]
        # wiring
        wiring = []
        for p in self.served:
            pkg_cls = f"{camel(p.namespace)}{camel(p.name)}Host{tag(p)}"
            fn = f"add_{snake(p.namespace)}_{snake(p.name)}{tag(p).lower()}_to_linker"
            wiring += ["", "", f"def {fn}(root: LinkerInstance, impl: {pkg_cls}) -> None:",
                       f'    """Defines every function and resource of {p.id} in `root`, served by `impl`."""',
                       "    _bind_wasmtime()"]
            for iface in self.interfaces(p):
                wiring += ["", f"    li = root.add_instance({const_name(iface)})"]
                for td in iface.types.values():
                    if td.kind == "resource":
                        wiring.append(f"    li.add_resource({td.name!r}, ResourceType.host(Resource.{upper(td.name)}), "
                                      f"impl.{snake(td.name)}_drop)")
                funcs = [*iface.funcs]
                for td in iface.types.values():
                    funcs += td.funcs
                for f in funcs:
                    wiring += self.wiring(f, iface)
                wiring.append("    li.close()")
        out += ["", "def _bind_wasmtime() -> None:",
                '    """Binds the wasmtime-py classes the converters below use, when a linker is first',
                '    wired: they run only in calls that linker serves, and importing this module need',
                '    not import wasmtime."""',
                "    global Record, ResourceAny, ResourceHost, ResourceType, Variant",
                "    from wasmtime.component import Record, ResourceAny, ResourceHost, ResourceType, Variant",
                "",
                "", "def _rep(store, handle, ty: Resource) -> int:",
                '    """Takes a guest\'s resource handle; for a borrow this also releases it, which the',
                '    canonical ABI requires before the call returns."""',
                "    host = handle.to_host(store)",
                "    if host.type != ty:",
                "        raise TypeError(f'expected a {RESOURCE_WIT_NAMES[ty]} handle, got resource type {host.type}')",
                "    return host.rep", ""]
        for name, lines in self.helpers.values():
            out += ["", *lines, ""]
        out += wiring
        names = [line.split("(")[0].removeprefix("class ") for line in enums if line.startswith("class ")]
        bindings = "\n".join(out).rstrip().replace("@@ENUMS@@", f"({', '.join(names)})") + "\n"
        return bindings, "\n".join([
            '"""The enums of the interfaces in wit/ (`_bindings` names them too).',
            "",
            "GENERATED by scripts/gen_bindings.py from wit/ -- do not edit by hand;",
            "run `python scripts/gen_bindings.py` after changing wit/.",
            '"""',
            "import enum", *enums]).rstrip() + "\n"


def generate() -> tuple[str, str]:
    return Emitter(wit.load(ROOT / "wit")).emit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the committed file differs")
    args = ap.parse_args()
    bindings, enums = generate()
    return max(write_or_check(out, text, check=args.check, script="gen_bindings.py")
               for out, text in ((OUT, bindings), (ENUMS_OUT, enums)))


if __name__ == "__main__":
    sys.exit(main())

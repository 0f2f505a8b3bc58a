#!/usr/bin/env python3
"""Generates host/wasinn/abi/adapter.wat, the text wasinn adds to standard components, from wit/.

    python scripts/gen_adapter.py          # rewrite the committed file
    python scripts/gen_adapter.py --check  # exit 1 if it drifted from wit/ or this script

abi/rewrite.py appends this text, with the @@NAME@@ markers filled in, to a component
that imports wasi:nn (see there for why and how). It holds, per interface of the
wasinn:adapter package: the import of that interface (its instance type encoded here
from wit/: enum cases, function signatures, resources as the guest's own wasi:nn
types), the canonical lowering of its functions, and the core module that stands in
for the guest's byte-carrying wasi:nn imports, written against the canonical ABI's
flat signatures of those imports. Each block lies between `;; @@begin NAME` and
`;; @@end NAME` lines so that rewrite.py takes only the blocks a component needs.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import wit  # noqa: E402
from generated import write_or_check  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "host" / "wasinn" / "abi" / "adapter.wat"

PRIMITIVES = {"u32": "u32", "u64": "u64"}


class InstanceType:
    """The instance type of one wasinn:adapter interface, in component text format."""

    def __init__(self, iface: wit.Interface, outer: dict[str, str]):
        self.iface, self.outer = iface, outer
        self.lines: list[str] = []
        self.index = 0  # the instance type's own type index space
        self.named: dict[str, int] = {}
        self.resources: set[str] = set()

    def _type(self, text: str) -> int:
        self.lines.append(f"(type (;{self.index};) {text})")
        self.index += 1
        return self.index - 1

    def _export_type(self, name: str, bound: str) -> int:
        self.lines.append(f'(export (;{self.index};) "{name}" (type {bound}))')
        self.index += 1
        return self.index - 1

    def use(self, local: str, td: wit.TypeDef) -> None:
        if td.kind == "resource":
            self.lines.append(f"(alias outer 1 {self.outer[td.name]} (type (;{self.index};)))")
            self.index += 1
            self.named[local] = self._export_type(local, f"(eq {self.index - 1})")
            self.resources.add(local)
        elif td.kind == "enum":
            cases = " ".join(f'"{c}"' for c in td.cases)
            self.named[local] = self._export_type(local, f"(eq {self._type(f'(enum {cases})')})")
        else:
            sys.exit(f"gen_adapter: {self.iface.qualified} uses {local}, a {td.kind}; only enums and resources")

    def valtype(self, t: wit.Type) -> str:
        if t.kind in PRIMITIVES:
            return PRIMITIVES[t.kind]
        if t.kind == "named" and t.name in self.resources:  # a bare resource type means own<T>
            return str(self._type(f"(own {self.named[t.name]})"))
        if t.kind == "named":
            return str(self.named[t.name])
        if t.kind in ("own", "borrow"):
            return str(self._type(f"({t.kind} {self.named[t.args[0].name]})"))
        if t.kind == "result":
            ok, err = (self.valtype(a) for a in t.args)
            return str(self._type(f"(result {ok} (error {err}))"))
        sys.exit(f"gen_adapter: {self.iface.qualified}: no encoding for a {t.kind} here")

    def text(self) -> str:
        for local, (other, orig) in self.iface.uses.items():
            self.use(local, other.types[orig])
        for f in self.iface.funcs:
            params = " ".join(f'(param "{n}" {self.valtype(t)})' for n, t in f.params)
            result = f" (result {self.valtype(f.result)})" if f.result else ""
            ty = self._type(f"(func {params}{result})".replace("(func  ", "(func "))
            self.lines.append(f'(export "{f.name}" (func (type {ty})))')
        return "\n      ".join(self.lines)


# The guest's resource types (wasi:nn's, wasm-graph's buffer), aliased at the top level under these names.
OUTER = {"tensor": "$wasinn:tensor", "graph": "$wasinn:graph", "error": "$wasinn:error", "buffer": "$wasinn:buffer"}
# The guest's wasi:nn imports the adapter takes over: (interface, function) -> the adapter's core function.
TARGETS = {("tensor", "[constructor]tensor"): "$wasinn:core-tensor-new",
           ("tensor", "[method]tensor.data"): "$wasinn:core-tensor-data",
           ("graph", "load"): "$wasinn:core-load"}
# ... and its data-flow imports (wasm-graph:processor).
BUFFER_TARGETS = {("types", "[method]buffer.read"): "$wasinn:core-buffer-read"}
MAX_FLAT_PARAMS, MAX_FLAT_RESULTS = 16, 1


def flat(t: wit.Type) -> list[str]:
    """The canonical ABI's core types for one value of `t` (the subset wasi:nn uses)."""
    t, td = wit.deref(t)
    if t.kind in ("list", "string"):
        return ["i32", "i32"]
    if t.kind in ("own", "borrow", "u32", "u8") or (td is not None and td.kind in ("enum", "resource")):
        return ["i32"]
    if t.kind == "result":
        return ["i32", *max((flat(a) for a in t.args if a is not None), key=len, default=[])]
    sys.exit(f"gen_adapter: no flat form for a {t.kind} here")


def core_signature(f: wit.Func) -> str:
    """The flat signature a guest's core code imports `f` with (the shim checks it)."""
    params = [c for _, pt in f.params for c in flat(pt)]
    results = flat(f.result) if f.result else []
    if len(results) > MAX_FLAT_RESULTS:  # returned through a pointer the caller passes
        params, results = params + ["i32"], []
    assert len(params) <= MAX_FLAT_PARAMS
    return " ".join([*(["(param " + " ".join(params) + ")"] if params else []),
                     *(["(result " + " ".join(results) + ")"] if results else [])])


def target_lines(pkg: wit.Package, targets: dict[tuple[str, str], str]) -> list[str]:
    out = []
    for (iface_name, canonical), core in targets.items():
        iface = pkg.interfaces[iface_name]
        if canonical.startswith("[constructor]"):
            func = next(f for f in iface.types[canonical.split("]")[1]].funcs if f.kind == "constructor")
            func = wit.Func(func.name, func.params, wit.Type("own"), func.kind)
        elif canonical.startswith("[method]"):
            res, name = canonical.split("]")[1].split(".")
            func = next(f for f in iface.types[res].funcs if f.name == name)
            func = wit.Func(func.name, [("self", wit.Type("borrow")), *func.params], func.result, func.kind)
        else:
            func = next(f for f in iface.funcs if f.name == canonical)
        out.append(f";; @@target {iface.qualified} {canonical} {core} {core_signature(func)}")
    return out


def ensure_bound(export: str) -> str:
    """A shim module's `$ensure_bound` (the tensors and buffers blocks each have one)."""
    return f"""    (func $ensure_bound{export}
      (local $saved i64)
      (if (global.get $bound) (then (return)))
      (local.set $saved (i64.load (i32.const 0)))
      (i64.store (i32.const 0) (call $bind_nonce))
      (call $bind (i32.const 0))
      (i64.store (i32.const 0) (local.get $saved))
      (global.set $bound (i32.const 1)))"""


def returned_list(export: str, param: str, length: str, read: str) -> str:
    """A stand-in for a guest import that returns a list<u8>: the host's `length` of it,
    then its bytes written by `read` straight into what the guest's realloc gave."""
    return f"""    ;; As the canonical ABI lowers a returned list: realloc(0, 0, align, size) in the
    ;; guest, then (pointer, length) at the return area.
    (func (export "{export}") (param {param} i32) (param $ret i32)
      (local $n i32) (local $p i32)
      (call $ensure_bound)
      (local.set $n (call {length} (local.get {param})))
      (local.set $p (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $n)))
      (call {read} (local.get {param}) (local.get $p) (local.get $n))
      (i32.store (local.get $ret) (local.get $p))
      (i32.store offset=4 (local.get $ret) (local.get $n)))"""


class ResultTypes:
    """wasinn:adapter-results' span types as top-level component types: the types they
    use aliased from the guest's wasm-graph:processor/types instance, each record and
    variant defined and exported (a lifted function may be exported only when every type
    it names is exported or imported), then each function's type."""

    def __init__(self, iface: wit.Interface):
        self.iface = iface
        self.lines: list[str] = []

    def valtype(self, t: wit.Type) -> str:
        if t.kind in ("u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "bool", "string", "f32", "f64"):
            return t.kind
        if t.kind == "named":
            if t.name in self.iface.uses and self.iface.uses[t.name][0].types[self.iface.uses[t.name][1]].kind == \
                    "resource":
                return f"(own $wasinn:r-{t.name})"  # a bare resource type means own<T>
            td = self.iface.types.get(t.name)
            if td is not None and td.kind == "alias":
                return self.valtype(td.alias)
            return f"$wasinn:r-{t.name}"
        if t.kind in ("list", "option"):
            return f"({t.kind} {self.valtype(t.args[0])})"
        if t.kind == "tuple":
            return "(tuple " + " ".join(self.valtype(a) for a in t.args) + ")"
        if t.kind == "result":
            ok, err = t.args
            return ("(result" + (f" {self.valtype(ok)}" if ok else "")
                    + (f" (error {self.valtype(err)})" if err else "") + ")")
        sys.exit(f"gen_adapter: {self.iface.qualified}: no encoding for a {t.kind} here")

    def text(self) -> str:
        for local, (other, orig) in self.iface.uses.items():
            self.lines.append(f'  (alias export @@BUFFER_INSTANCE@@ "{orig}" (type $wasinn:r-{local}))')
        for name, td in self.iface.types.items():
            if td.kind == "record":
                body = " ".join(f'(field "{f}" {self.valtype(ft)})' for f, ft in td.fields)
                self.lines.append(f"  (type $wasinn:r-def-{name} (record {body}))")
            elif td.kind == "variant":
                body = " ".join(f'(case "{c}"' + (f" {self.valtype(ct)})" if ct else ")") for c, ct in td.cases)
                self.lines.append(f"  (type $wasinn:r-def-{name} (variant {body}))")
            elif td.kind == "alias":
                continue  # spelled out where it is used
            else:
                sys.exit(f"gen_adapter: {self.iface.qualified} defines {name}, a {td.kind}; not here")
            self.lines.append(f'  (export $wasinn:r-{name} "wasinn-{name}" (type $wasinn:r-def-{name}))')
        for f in self.iface.funcs:
            params = " ".join(f'(param "{n}" {self.valtype(pt)})' for n, pt in f.params)
            self.lines.append(f"  (type $wasinn:r-func-{f.name} (func {params} (result {self.valtype(f.result)})))")
        return "\n".join(self.lines)


def result_lines(iface: wit.Interface, graph_processor: wit.Package) -> list[str]:
    """Per function of wasinn:adapter-results/spans (`KIND-process`): the operator export
    whose core function it lifts again, the name wasinn exports it under, its type."""
    out = []
    for f in iface.funcs:
        kind, func = f.name.rsplit("-", 1)
        original = f"{graph_processor.interfaces[kind].qualified}#{func}"
        out.append(f";; @@result {original} wasinn-spans-{f.name} $wasinn:r-func-{f.name}")
    return out


def generate() -> str:
    adapter = next(p for p in PKGS.values() if (p.namespace, p.name) == ("wasinn", "adapter"))
    # every version of wasi:nn: their byte-carrying functions have the same flat signatures
    versions = sorted((p for p in PKGS.values() if (p.namespace, p.name) == ("wasi", "nn")),
                      key=lambda p: p.version, reverse=True)
    graph_processor = next(p for p in PKGS.values() if (p.namespace, p.name) == ("wasm-graph", "processor"))
    targets = "\n".join([*(line for nn in versions for line in target_lines(nn, TARGETS)),
                         *target_lines(graph_processor, BUFFER_TARGETS)])
    tensors, graphs = adapter.interfaces["tensors"], adapter.interfaces["graphs"]
    buffers = next(p for p in PKGS.values()
                   if (p.namespace, p.name) == ("wasinn", "adapter-buffers")).interfaces["buffers"]
    spans = next(p for p in PKGS.values()
                 if (p.namespace, p.name) == ("wasinn", "adapter-results")).interfaces["spans"]
    results = "\n".join(result_lines(spans, graph_processor))
    return f''';; GENERATED by scripts/gen_adapter.py from wit/ -- do not edit by hand.
;; What wasinn appends to a component that imports wasi:nn or wasm-graph:processor's types
;; (see host/wasinn/abi/rewrite.py). @@NAME@@ markers are filled in per component with
;; indices in its own index spaces: its wasi:nn and wasm-graph types instances, the core
;; memory and realloc the lowerings taken over use, and
;; the shim instance whose table its fixup fills.
;; The imports taken over: interface, function, the adapter's core function standing in
;; for it, and the flat signature the guest imports it with.
{targets}
;; The operator exports lifted again with their result's bytes as spans: the export's
;; core function, the name wasinn exports it under, and its type in the results block.
{results}

;; @@begin no-realloc
  ;; Where no function taken over returns a list, nothing is allocated.
  (core module $wasinn:NoRealloc
    (func (export "realloc") (param i32 i32 i32 i32) (result i32) (unreachable)))
  (core instance $wasinn:no-realloc (instantiate $wasinn:NoRealloc))
  (alias core export $wasinn:no-realloc "realloc" (core func $wasinn:no-realloc))
;; @@end no-realloc

;; @@begin tensors
  (alias export @@TENSOR_INSTANCE@@ "tensor" (type $wasinn:tensor))
  (type $wasinn:tensors-type (instance
      {InstanceType(tensors, OUTER).text()}))
  (import "{tensors.qualified}" (instance $wasinn:tensors (type $wasinn:tensors-type)))
  (alias export $wasinn:tensors "bind-nonce" (func $wasinn:bind-nonce))
  (alias export $wasinn:tensors "bind" (func $wasinn:bind))
  (alias export $wasinn:tensors "new-tensor" (func $wasinn:new-tensor))
  (alias export $wasinn:tensors "data-len" (func $wasinn:data-len))
  (alias export $wasinn:tensors "read-data" (func $wasinn:read-data))
  (core func $wasinn:lowered-bind-nonce (canon lower (func $wasinn:bind-nonce)))
  (core func $wasinn:lowered-bind (canon lower (func $wasinn:bind)))
  (core func $wasinn:lowered-new-tensor (canon lower (func $wasinn:new-tensor)))
  (core func $wasinn:lowered-data-len (canon lower (func $wasinn:data-len)))
  (core func $wasinn:lowered-read-data (canon lower (func $wasinn:read-data)))
  ;; Stands in for the guest's tensor imports, with their flat signatures, in its memory.
  (core module $wasinn:Tensors
    (import "env" "memory" (memory 0))
    (import "env" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "host" "bind-nonce" (func $bind_nonce (result i64)))
    (import "host" "bind" (func $bind (param i32)))
    (import "host" "new-tensor" (func $new_tensor (param i32 i32 i32 i32 i32) (result i32)))
    (import "host" "data-len" (func $data_len (param i32) (result i32)))
    (import "host" "read-data" (func $read_data (param i32 i32 i32)))
    (global $bound (mut i32) (i32.const 0))
    ;; The host tells this memory from the instance's others by a number written here
    ;; once; the eight bytes it borrows are put back at once.
{ensure_bound(' (export "bind")')}
    (func (export "[constructor]tensor") (param i32 i32 i32 i32 i32) (result i32)
      (call $ensure_bound)
      (call $new_tensor (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
{returned_list("[method]tensor.data", "$t", "$data_len", "$read_data")})
  (core instance $wasinn:tensors-env (export "memory" (memory @@MEMORY@@)) (export "realloc" (func @@REALLOC@@)))
  (core instance $wasinn:tensors-host
    (export "bind-nonce" (func $wasinn:lowered-bind-nonce))
    (export "bind" (func $wasinn:lowered-bind))
    (export "new-tensor" (func $wasinn:lowered-new-tensor))
    (export "data-len" (func $wasinn:lowered-data-len))
    (export "read-data" (func $wasinn:lowered-read-data)))
  (core instance $wasinn:tensors-core (instantiate $wasinn:Tensors
    (with "env" (instance $wasinn:tensors-env)) (with "host" (instance $wasinn:tensors-host))))
  (alias core export $wasinn:tensors-core "bind" (core func $wasinn:core-bind))
  (alias core export $wasinn:tensors-core "[constructor]tensor" (core func $wasinn:core-tensor-new))
  (alias core export $wasinn:tensors-core "[method]tensor.data" (core func $wasinn:core-tensor-data))
;; @@end tensors

;; @@begin graphs
  (alias export @@GRAPH_INSTANCE@@ "graph" (type $wasinn:graph))
  (alias export @@GRAPH_INSTANCE@@ "error" (type $wasinn:error))
  (type $wasinn:graphs-type (instance
      {InstanceType(graphs, OUTER).text()}))
  (import "{graphs.qualified}" (instance $wasinn:graphs (type $wasinn:graphs-type)))
  (alias export $wasinn:graphs "load" (func $wasinn:load))
  (core func $wasinn:lowered-load (canon lower (func $wasinn:load) (memory @@MEMORY@@)))
  (core module $wasinn:Graphs
    (import "host" "load" (func $load (param i32 i32 i32 i32 i32)))
    (import "tensors" "bind" (func $ensure_bound))
    (func (export "load") (param i32 i32 i32 i32 i32)
      (call $ensure_bound)
      (call $load (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4))))
  (core instance $wasinn:graphs-host (export "load" (func $wasinn:lowered-load)))
  (core instance $wasinn:graphs-tensors (export "bind" (func $wasinn:core-bind)))
  (core instance $wasinn:graphs-core (instantiate $wasinn:Graphs
    (with "host" (instance $wasinn:graphs-host)) (with "tensors" (instance $wasinn:graphs-tensors))))
  (alias core export $wasinn:graphs-core "load" (core func $wasinn:core-load))
;; @@end graphs

;; @@begin buffers
  (alias export @@BUFFER_INSTANCE@@ "buffer" (type $wasinn:buffer))
  (type $wasinn:buffers-type (instance
      {InstanceType(buffers, OUTER).text()}))
  (import "{buffers.qualified}" (instance $wasinn:buffers (type $wasinn:buffers-type)))
  (alias export $wasinn:buffers "bind-nonce" (func $wasinn:buffers-bind-nonce))
  (alias export $wasinn:buffers "bind" (func $wasinn:buffers-bind))
  (alias export $wasinn:buffers "buffer-len" (func $wasinn:buffer-len))
  (alias export $wasinn:buffers "read-buffer" (func $wasinn:read-buffer))
  (core func $wasinn:lowered-buffers-bind-nonce (canon lower (func $wasinn:buffers-bind-nonce)))
  (core func $wasinn:lowered-buffers-bind (canon lower (func $wasinn:buffers-bind)))
  (core func $wasinn:lowered-buffer-len (canon lower (func $wasinn:buffer-len)))
  (core func $wasinn:lowered-read-buffer (canon lower (func $wasinn:read-buffer)))
  ;; Stands in for the guest's `[method]buffer.read`, with its flat signature, in its memory.
  (core module $wasinn:Buffers
    (import "env" "memory" (memory 0))
    (import "env" "realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "host" "bind-nonce" (func $bind_nonce (result i64)))
    (import "host" "bind" (func $bind (param i32)))
    (import "host" "buffer-len" (func $buffer_len (param i32) (result i32)))
    (import "host" "read-buffer" (func $read_buffer (param i32 i32 i32)))
    (global $bound (mut i32) (i32.const 0))
    ;; As the tensors block's: the host tells this memory by a number written here once
    ;; (exported: an operator's results are read in it too, see the results block).
{ensure_bound(' (export "bind")')}
{returned_list("[method]buffer.read", "$b", "$buffer_len", "$read_buffer")})
  (core instance $wasinn:buffers-env (export "memory" (memory @@MEMORY@@)) (export "realloc" (func @@REALLOC@@)))
  (core instance $wasinn:buffers-host
    (export "bind-nonce" (func $wasinn:lowered-buffers-bind-nonce))
    (export "bind" (func $wasinn:lowered-buffers-bind))
    (export "buffer-len" (func $wasinn:lowered-buffer-len))
    (export "read-buffer" (func $wasinn:lowered-read-buffer)))
  (core instance $wasinn:buffers-core (instantiate $wasinn:Buffers
    (with "env" (instance $wasinn:buffers-env)) (with "host" (instance $wasinn:buffers-host))))
  (alias core export $wasinn:buffers-core "[method]buffer.read" (core func $wasinn:core-buffer-read))
;; @@end buffers

;; @@begin results
  ;; wasinn:adapter-results' span types (the operators' exports lifted again with them
  ;; follow this block, per component), and the buffers block's `bind` lifted, so that the
  ;; host can tell the memory the spans point into before the first call.
{ResultTypes(spans).text()}
  (alias core export $wasinn:buffers-core "bind" (core func $wasinn:core-buffers-bind))
  (func $wasinn:spans-bind (canon lift (core func $wasinn:core-buffers-bind)))
  (export "wasinn-spans-bind" (func $wasinn:spans-bind))
;; @@end results
'''


PKGS = wit.load(ROOT / "wit")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if the committed file differs from wit/")
    args = ap.parse_args()
    return write_or_check(OUT, generate(), check=args.check, script="gen_adapter.py")


if __name__ == "__main__":
    sys.exit(main())

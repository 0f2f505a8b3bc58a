"""`wasinn model check`: does an ONNX model fit the edge, before it ships?

    report = check("model.onnx", budget=50_000_000)
    print(report.text()); sys.exit(0 if report.ok else 1)

Checks the file against a size budget; loads it exactly as the host serves it to a
guest (onnxruntime, CPU), which is the final word on whether it runs; lists its inputs
and outputs as wasi:nn sees them (each must have a wasi:nn tensor type) and says
whether it has the single float32/uint8 input and single output most edge apps expect;
reports its opsets; and checks every operator, node by node, against onnxruntime's CPU
kernel registry for that operator's version and the node's element types, so a
failure names every offending node rather than the first one onnxruntime trips on.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import os
import pathlib

import onnx
import onnx.defs
from onnx import TensorProto

from ..errors import WasinnError
from ..abi.introspect import as_json as description_json
from ..abi.introspect import describe, open_graph
from . import DEFAULT_BUDGET, megabytes

# The input types of the single-input models most edge apps expect (images, features).
SIMPLE_INPUT_TYPES = ("FP32", "U8")
# Domains onnx.defs knows (with function bodies); others come from onnxruntime's registry.
_ONNX_DOMAINS = ("", "ai.onnx.ml")
# How onnxruntime can run an operator: a kernel; a float kernel with casts it inserts
# around float16 nodes; expanding its ONNX function; or (for Constant) turning it
# into an initializer when it builds the graph.
RUNNABLE = ("kernel", "float32 casts", "function", "folded")


@dataclasses.dataclass
class Finding:
    """One line of the report. `ok` None means for information only."""
    topic: str
    ok: bool | None
    detail: str


@dataclasses.dataclass
class OperatorUse:
    domain: str
    op_type: str
    since_version: int | None
    nodes: int
    how: str  # one of RUNNABLE, or why onnxruntime cannot run it


@dataclasses.dataclass
class CheckReport:
    path: str
    size: int
    budget: int
    findings: list[Finding]
    operators: list[OperatorUse]
    description: dict | None

    @property
    def ok(self) -> bool:
        return all(f.ok is not False for f in self.findings)

    def text(self) -> str:
        width = max(len(f.topic) for f in self.findings)
        mark = {True: "ok  ", False: "FAIL", None: "    "}
        lines = [self.path]
        lines += [f"  {mark[f.ok]}  {f.topic:<{width}}  {f.detail}" for f in self.findings]
        bad = [o for o in self.operators if o.how not in RUNNABLE]
        for o in bad:
            lines.append(f"          {_op_name(o)}: {o.how}")
        lines.append("ready for the edge" if self.ok else "NOT ready: see FAIL above")
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {"path": self.path, "ok": self.ok, "size": self.size, "budget": self.budget,
                "findings": [dataclasses.asdict(f) for f in self.findings],
                "operators": [dataclasses.asdict(o) for o in self.operators],
                "description": self.description}


def check(path: str | os.PathLike, *, budget: int = DEFAULT_BUDGET) -> CheckReport:
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        model = onnx.load(str(path), load_external_data=False)
    except OSError as e:
        raise WasinnError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # protobuf's DecodeError and friends
        raise WasinnError(f"{path} is not an ONNX model: {e}") from None
    findings = [Finding("size", size <= budget, f"{megabytes(size)} of a {budget / 1e6:g} MB budget")]
    operators = operator_uses(model)
    used = {o.domain for o in operators} | {""}
    findings.append(Finding("opset", None, ", ".join(
        f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import if _domain(o.domain) in used)
        + f" (IR version {model.ir_version})"))

    description = None
    try:
        description = description_json(describe(open_graph(str(path))))
        findings.append(Finding("loads", True, "onnxruntime CPU, as wasinn serves it to guests"))
    except WasinnError as e:
        findings.append(Finding("loads", False, str(e)))
    if description:
        findings += _io_findings(description)

    bad = [o for o in operators if o.how not in RUNNABLE]
    nodes = sum(o.nodes for o in operators)
    findings.append(Finding("operators", not bad, f"{_count(len(operators), 'operator')} in {_count(nodes, 'node')}; " + (
        f"{len(bad)} without an onnxruntime CPU implementation:" if bad else
        "onnxruntime's CPU provider runs every one" + _notes(operators))))
    return CheckReport(str(path), size, budget, findings, operators, description)


def _notes(operators: list[OperatorUse]) -> str:
    casts = [o.op_type for o in operators if o.how == "float32 casts"]
    return f" ({', '.join(casts)} in float32: onnxruntime has no float16 CPU kernel)" if casts else ""


def _io_findings(description: dict) -> list[Finding]:
    inputs, outputs = description["inputs"], description["outputs"]

    def show(t: dict) -> str:
        shape = "any rank" if t["shape"] is None else "[" + ", ".join(map(str, t["shape"])) + "]"
        return f"{t['name']} {t['type'] or t['type_name']} {shape}"

    findings = [Finding("inputs", None, "; ".join(map(show, inputs)) or "none"),
                Finding("outputs", None, "; ".join(map(show, outputs)) or "none")]
    uncarried = [t["name"] for t in [*inputs, *outputs] if t["type"] is None]
    findings.append(Finding("wasi:nn types", not uncarried, "every input and output has one" if not uncarried else
                            "no wasi:nn tensor type for " + ", ".join(map(repr, uncarried))))
    simple = len(inputs) == 1 and inputs[0]["type"] in SIMPLE_INPUT_TYPES and len(outputs) == 1
    findings.append(Finding("single input/output", None, "yes: one float32 or uint8 input, one output" if simple else
                            f"no: {len(inputs)} input(s) ({', '.join(str(t['type']) for t in inputs)}), "
                            f"{len(outputs)} output(s)"))
    return findings


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _op_name(o: OperatorUse) -> str:
    version = f"-{o.since_version}" if o.since_version else ""
    return f"{o.domain + '.' if o.domain else ''}{o.op_type}{version} ({_count(o.nodes, 'node')})"


# --- operators against onnxruntime's kernel registry ---------------------------------

@functools.cache
def _kernels() -> dict[tuple[str, str], list]:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c
    table = collections.defaultdict(list)
    for k in ort_c.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            table[(_domain(k.domain), k.op_name)].append(k)
    return table


@functools.cache
def _ort_schemas() -> dict[tuple[str, str], list]:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_c
    table = collections.defaultdict(list)
    for s in ort_c.get_all_operator_schema():
        table[(_domain(s.domain), s.name)].append(s)
    return table


def _domain(d: str) -> str:
    return "" if d == "ai.onnx" else d


def _schema(domain: str, op_type: str, opset: int):
    """The schema in force at `opset`, from onnx for its own domains, else onnxruntime's."""
    if domain in _ONNX_DOMAINS:
        try:
            return onnx.defs.get_schema(op_type, opset, domain)
        except onnx.defs.SchemaError:
            return None
    versions = [s for s in _ort_schemas().get((domain, op_type), []) if s.since_version <= opset]
    return max(versions, key=lambda s: s.since_version) if versions else None


def _elem_name(elem_type: int) -> str:
    return f"tensor({TensorProto.DataType.Name(elem_type).lower()})"


def _formal_types(params, names: list[str], types: dict[str, int]) -> dict[str, str]:
    """Type parameter -> the element type the node gives it (where inference knows it)."""
    bound = {}
    for i, name in enumerate(names):
        if not name or name not in types or not params:
            continue
        param = params[min(i, len(params) - 1)]  # a variadic last parameter repeats
        bound.setdefault(param.type_str, _elem_name(types[name]))
    return bound


def _how(node: onnx.NodeProto, schema, types: dict[str, int]) -> str:
    if (_domain(node.domain), node.op_type) == ("", "Constant"):
        return "folded"
    kernels = [k for k in _kernels().get((_domain(node.domain), node.op_type), [])
               if k.version_range[0] <= schema.since_version <= k.version_range[1]]
    bound = _formal_types(schema.inputs, list(node.input), types)
    bound.update(_formal_types(schema.outputs, list(node.output), types))
    def fits(bound: dict[str, str]) -> bool:
        return any(all(ty in k.type_constraints[p] for p, ty in bound.items() if p in k.type_constraints)
                   for k in kernels)

    if fits(bound):
        return "kernel"
    if fits({p: "tensor(float)" if ty == "tensor(float16)" else ty for p, ty in bound.items()}):
        return "float32 casts"
    if getattr(schema, "has_function", False) or getattr(schema, "has_context_dependent_function", False):
        return "function"
    if kernels:
        wanted = ", ".join(f"{p}={t.removeprefix('tensor(').removesuffix(')')}" for p, t in sorted(bound.items()))
        return f"no onnxruntime CPU kernel for these element types ({wanted})"
    return "no onnxruntime CPU kernel for this operator version"


def operator_uses(model: onnx.ModelProto) -> list[OperatorUse]:
    """Every operator the model runs (subgraphs and local functions included), each with
    how onnxruntime's CPU provider would run it."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # inference is only for element types; the node walk works without it
        inferred = model
    types = _value_types(inferred.graph)
    opsets = {_domain(o.domain): o.version for o in model.opset_import}
    functions = {(f.domain, f.name): f for f in model.functions}
    uses: dict[tuple[str, str, int | None], list] = {}

    def visit(graph_nodes, opsets: dict[str, int]) -> None:
        for node in graph_nodes:
            fn = functions.get((node.domain, node.op_type))
            if fn is not None:  # a model-local function: what runs is its body
                visit(fn.node, {_domain(o.domain): o.version for o in fn.opset_import})
                continue
            domain = _domain(node.domain)
            opset = opsets.get(domain)
            schema = _schema(domain, node.op_type, opset) if opset is not None else None
            if schema is None:
                how = (f"the model imports no opset for domain {domain!r}" if opset is None else
                       f"no operator {node.op_type} in {domain or 'ai.onnx'} opset {opset}")
                key = (domain, node.op_type, None)
            else:
                how = _how(node, schema, types)
                key = (domain, node.op_type, schema.since_version)
            entry = uses.setdefault(key, [0, how])
            entry[0] += 1
            if entry[1] in RUNNABLE:
                entry[1] = how  # keep the worst verdict among nodes of one kind
            for attr in node.attribute:
                for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    visit(g.node, opsets)

    visit(inferred.graph.node, opsets)
    return [OperatorUse(d, op, v, n, how) for (d, op, v), (n, how) in sorted(uses.items(), key=lambda kv: kv[0][:2])]


def _value_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {t.name: t.data_type for t in graph.initializer}
    for v in [*graph.input, *graph.output, *graph.value_info]:
        if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type:
            types[v.name] = v.type.tensor_type.elem_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
        for attr in node.attribute:
            for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                types.update(_value_types(g))
    return types

"""Azure IoT Operations data-flow graph files: a graph definition as published, or a
`DataflowGraph` deployment, checked into one model the engine runs (`Dataflow`).

Which file is which is told by its keys (`served_kind`):

    graph definition   metadata, moduleRequirements, moduleConfigurations, operations, connections
    deployment         apiVersion connectivity.iotoperations.azure.com/..., kind DataflowGraph
                       (or only its `spec`: nodes, nodeConnections); DataflowEndpoint and
                       RegistryEndpoint documents in the same file resolve its refs
    wasinn pipeline    modules + mqtt (schema.py)

Parameters: `moduleConfigurations[].parameters` is a map whose key (what `--param` and a
deployment's `configuration` name) may differ from the parameter's `name` (what the
operator's `init` receives). A value comes from `--param` over the deployment's
configuration over the parameter's `default`; a parameter with none is left out.

Every problem is reported as `FILE:LINE: FIELD: what is wrong`, as for pipeline files.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

from ..errors import BadValue, WasinnError
from .schema import (DEFAULT_BROKER, SUPPORTED_API_VERSIONS, SUPPORTED_RUNTIME_VERSIONS, Mqtt, MqttServed,
                     PipelineError, Tls, _Doc, _kind, parse_broker)

OPERATION_TYPES = ("source", "map", "filter", "branch", "accumulate", "delay", "concatenate", "sink")
# The operation types that run an operator (the others are the engine's own).
OPERATOR_TYPES = ("map", "filter", "branch", "accumulate", "delay")
API_GROUP = "connectivity.iotoperations.azure.com"
ARMS = {"True": True, "False": False}

_GRAPH_KEYS = ("metadata", "moduleRequirements", "moduleConfigurations", "operations", "connections", "schemas")
_DEPLOYMENT_KEYS = ("apiVersion", "kind", "metadata", "spec")
_SPEC_KEYS = ("profileRef", "mode", "requestDiskPersistence", "nodes", "nodeConnections")


@dataclasses.dataclass(frozen=True)
class Parameter:
    key: str                      # the map key: what --param and a deployment's configuration name
    name: str                     # what the operator's init receives
    default: str | None = None


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    kind: str                     # one of OPERATION_TYPES
    module: str | None            # an artifact reference (OCI, or a bare name); operator types only
    parameters: tuple[Parameter, ...] = ()
    line: int = 0


@dataclasses.dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    arm: bool | None = None       # a branch's edge: the arm it takes
    schema: tuple[str, str] | None = None  # `from.schemaName`: the graph's schema (name, content) its messages carry


@dataclasses.dataclass(frozen=True)
class GraphDefinition:
    path: pathlib.Path
    name: str
    nodes: dict[str, Node]
    edges: tuple[Edge, ...]
    features: tuple[str, ...] = ()

    @property
    def modules(self) -> list[str]:
        return sorted({n.module for n in self.nodes.values() if n.module})


@dataclasses.dataclass(frozen=True)
class Deployment:
    path: pathlib.Path
    name: str
    artifact: str                 # the graph definition, NAME:VERSION
    registry: str | None          # from a RegistryEndpoint document: a URL
    configuration: dict[str, str]
    sources: tuple[str, ...]
    sink: str
    mqtt_host: str | None         # from a DataflowEndpoint document
    tls: bool = False
    line: int = 0
    # `nodeConnections[].from.schema.schemaRef` (aio-sr://NAMESPACE/NAME:VERSION): of what
    # enters the graph, and of what leaves it
    input_schema: str | None = None
    output_schema: str | None = None


@dataclasses.dataclass(frozen=True)
class Dataflow(MqttServed):
    """A graph ready to serve: every module a local component, every node's init properties."""
    path: pathlib.Path            # the file served
    name: str
    graph: GraphDefinition
    components: dict[str, pathlib.Path]   # module reference -> .wasm
    properties: dict[str, tuple[tuple[str, str], ...]]  # node -> what its init receives
    sources: tuple[str, ...]
    sink: str
    mqtt: Mqtt
    state_store: str | None = None  # redis://HOST:PORT/DB; None: the embedded store of this host's workers
    schemas: pathlib.Path | None = None  # the schema-registry file (--schemas)
    module_schemas: tuple[tuple[str, str, str], ...] = ()  # every operator's init gets these (name, type, content)
    input_schema: str | None = None  # the registry reference messages from the source carry (a deployment's)

    def to_json(self) -> str:
        """What the supervisor hands its workers (they resolve nothing again)."""
        g = self.graph
        return json.dumps({
            "path": str(self.path), "name": self.name,
            "graph": {"path": str(g.path), "name": g.name, "features": list(g.features),
                      "nodes": [dataclasses.asdict(n) for n in g.nodes.values()],
                      "edges": [dataclasses.asdict(e) for e in g.edges]},
            "components": {k: str(v) for k, v in self.components.items()},
            "properties": {k: [list(p) for p in v] for k, v in self.properties.items()},
            "sources": list(self.sources), "sink": self.sink, "state_store": self.state_store,
            "schemas": str(self.schemas) if self.schemas else None,
            "module_schemas": [list(s) for s in self.module_schemas], "input_schema": self.input_schema,
            "mqtt": dataclasses.asdict(self.mqtt, dict_factory=lambda kv: {k: str(v) if isinstance(v, pathlib.Path)
                                                                            else v for k, v in kv})})

    @classmethod
    def from_json(cls, text: str) -> "Dataflow":
        d = json.loads(text)
        g = d["graph"]
        nodes = {n["name"]: Node(**{**n, "parameters": tuple(Parameter(**p) for p in n["parameters"])})
                 for n in g["nodes"]}
        edges = tuple(Edge(**{**e, "schema": tuple(e["schema"]) if e["schema"] else None}) for e in g["edges"])
        graph = GraphDefinition(pathlib.Path(g["path"]), g["name"], nodes, edges, tuple(g["features"]))
        m = d["mqtt"]
        tls = m.pop("tls")
        if tls is not None:
            tls = Tls(*(pathlib.Path(tls[k]) if tls[k] else None for k in ("ca", "cert", "key")))
        if m.get("password_file"):
            m["password_file"] = pathlib.Path(m["password_file"])
        return cls(pathlib.Path(d["path"]), d["name"], graph, {k: pathlib.Path(v) for k, v in d["components"].items()},
                   {k: tuple(tuple(p) for p in v) for k, v in d["properties"].items()}, tuple(d["sources"]),
                   d["sink"], Mqtt(**m, tls=tls), d["state_store"],
                   pathlib.Path(d["schemas"]) if d["schemas"] else None, tuple(tuple(s) for s in d["module_schemas"]),
                   d["input_schema"])

    def inputs_of(self, name: str) -> list[Edge]:
        return [e for e in self.graph.edges if e.dst == name]

    def outputs_of(self, name: str) -> list[Edge]:
        return [e for e in self.graph.edges if e.src == name]


# --- which file ----------------------------------------------------------------------
def served_kind(path: str | os.PathLike) -> str:
    """`pipeline`, `graph` or `deployment`, by the file's keys; raises `PipelineError` for
    a file that is none of them (or not YAML)."""
    path = pathlib.Path(path)
    docs = _read(path)
    roots = [d.root for d in docs if isinstance(d.root, dict)]
    if any(r.get("kind") == "DataflowGraph" or "nodes" in r or "nodeConnections" in r for r in roots):
        return "deployment"
    if roots and ("modules" in roots[0] or "mqtt" in roots[0]):
        return "pipeline"
    if roots and "operations" in roots[0]:
        return "graph"
    raise PipelineError(path, [f"{path}:1: (file): not a wasinn pipeline (modules, mqtt), an Azure graph definition "
                               "(operations, connections) or a DataflowGraph deployment (kind: DataflowGraph, or "
                               "spec.nodes)"])


def _read(path: pathlib.Path) -> list[_Doc]:
    try:
        text = path.read_text()
    except OSError as e:
        raise WasinnError(f"cannot read {path}: {e.strerror}") from None
    return [d for d in _Doc.every(path, text) if d.root != {}] or [_Doc(path, "{}")]


# --- graph definitions ----------------------------------------------------------------
def load_graph(path: str | os.PathLike, *, text: str | None = None) -> GraphDefinition:
    """Reads and checks a graph definition (`text`: its content, pulled from a registry)."""
    path = pathlib.Path(path)
    if text is None:
        (doc, *_) = _read(path)
    else:
        doc = _Doc(path, text)
    root = doc.mapping(doc.root, (), _GRAPH_KEYS, required=("operations", "connections"))
    schemas = _schemas(doc, root.get("schemas"))
    features = _requirements(doc, root.get("moduleRequirements"))
    configs, lines = _configurations(doc, root.get("moduleConfigurations"))
    nodes = _nodes(doc, root.get("operations"), configs)
    for name, line in lines.items():
        if name not in nodes:
            doc.lines[("moduleConfigurations", name)] = line
            doc.fail(("moduleConfigurations", name), f"no operation named {name!r}; the operations are: "
                                                     + ", ".join(nodes))
    edges = _edges(doc, root.get("connections"), nodes, schemas)
    if not doc.problems:
        _check_topology(doc, nodes, edges)
    if doc.problems:
        raise PipelineError(path, doc.problems)
    meta = root.get("metadata") if isinstance(root.get("metadata"), dict) else {}
    return GraphDefinition(path.resolve(), str(meta.get("name") or path.stem), nodes, tuple(edges), features)


def _schemas(doc: _Doc, value: Any) -> dict[str, tuple[str, str]]:
    """The graph's own schemas (`schemas: [{name, format, schema}]`), by name: (name,
    content). Connections name them (`from.schemaName`); the messages on such a
    connection carry the schema inline (`message.schema`), for the operators after it."""
    from .services.schemas import FORMATS
    out: dict[str, tuple[str, str]] = {}
    if value is None:
        return out
    for at, item in doc.entries(value, "schemas", "schemas"):
        s = doc.mapping(item, at, ("name", "format", "schema"), required=("name", "format", "schema"))
        name = doc.string(s.get("name"), (*at, "name"))
        fmt = s.get("format")
        if fmt is not None and str(fmt).lower() not in FORMATS:
            doc.fail((*at, "format"), f"format is one of {', '.join(FORMATS)}, got {fmt!r}")
        content = s.get("schema")
        if isinstance(content, (dict, list)):  # a schema written as YAML: the same JSON
            content = json.dumps(content)
        elif content is not None and not isinstance(content, str):
            doc.fail((*at, "schema"), f"expected the schema's text, got {_kind(content)}")
            continue
        if name is None or content is None:
            continue
        if name in out:
            doc.fail((*at, "name"), f"a second schema named {name!r}")
        out[name] = (name, content)
    return out


def _requirements(doc: _Doc, value: Any) -> tuple[str, ...]:
    at = ("moduleRequirements",)
    if value is None:
        return ()
    req = doc.mapping(value, at, ("apiVersion", "runtimeVersion", "features"), required=("apiVersion", "runtimeVersion"))
    for key, supported in (("apiVersion", SUPPORTED_API_VERSIONS), ("runtimeVersion", SUPPORTED_RUNTIME_VERSIONS)):
        if key in req and str(req[key]) not in supported:
            doc.fail((*at, key), f"{key} {req[key]!r} is not supported; wasinn runs {' and '.join(supported)}")
    features = req.get("features") or []
    if not isinstance(features, list):
        doc.fail((*at, "features"), f"expected a list of features, got {_kind(features)}")
        return ()
    names = []
    for i, feature in enumerate(features):
        name = feature.get("name") if isinstance(feature, dict) else feature
        if name != "wasi-nn":
            doc.fail((*at, "features", i), f"unknown feature {name!r}; wasinn provides: wasi-nn")
        names.append(name)
    return tuple(names)


def _configurations(doc: _Doc, value: Any) -> tuple[dict[str, tuple[Parameter, ...]], dict[str, int]]:
    """(operation name -> its parameters, operation name -> the line it is configured at)."""
    out: dict[str, tuple[Parameter, ...]] = {}
    lines: dict[str, int] = {}
    if value is None:
        return out, lines
    if not isinstance(value, list):
        doc.fail(("moduleConfigurations",), f"expected a list, got {_kind(value)}")
        return out, lines
    for i, item in enumerate(value):
        at = ("moduleConfigurations", i)
        c = doc.mapping(item, at, ("name", "parameters"), required=("name",))
        name = doc.string(c["name"], (*at, "name")) if "name" in c else None
        if name is None:
            continue
        if name in out:
            doc.fail((*at, "name"), f"{name!r} is configured twice")
            continue
        params = []
        raw = c.get("parameters") or {}
        if not isinstance(raw, dict):
            doc.fail((*at, "parameters"), f"expected a mapping KEY: {{name, description, default}}, got {_kind(raw)}")
            raw = {}
        for key, p in raw.items():
            pat = (*at, "parameters", key)
            p = doc.mapping(p if p is not None else {}, pat, ("name", "description", "default", "required"))
            pname = doc.string(p["name"], (*pat, "name")) if "name" in p else str(key)
            default = p.get("default")
            if isinstance(default, (dict, list)):
                doc.fail((*pat, "default"), "a default is a string, number or true/false")
                default = None
            elif isinstance(default, bool):
                default = str(default).lower()
            params.append(Parameter(str(key), pname or str(key), None if default is None else str(default)))
        out[name] = tuple(params)
        lines[name] = doc.line(at)
    return out, lines


def _nodes(doc: _Doc, value: Any, configs: dict) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    for at, item in doc.entries(value, "operations", "operations"):
        op = doc.mapping(item, at, ("operationType", "name", "module"), required=("operationType", "name"))
        kind = op.get("operationType")
        if "operationType" in op and kind not in OPERATION_TYPES:
            doc.fail((*at, "operationType"), f"operationType must be one of {', '.join(OPERATION_TYPES)}, got {kind!r}")
            continue
        name = doc.string(op["name"], (*at, "name")) if "name" in op else None
        if name is None or kind is None:
            continue
        if name in nodes:
            doc.fail((*at, "name"), f"an operation named {name!r} is already defined at line {nodes[name].line}")
            continue
        module = op.get("module")
        if kind in OPERATOR_TYPES:
            module = doc.string(module, (*at, "module")) if "module" in op else None
            if module is None and "module" not in op:
                doc.fail(at, f"a {kind} operation runs a module: add `module: REGISTRY/NAME:VERSION`")
        elif module not in (None, ""):
            doc.fail((*at, "module"), f"a {kind} operation runs no module")
            module = None
        else:
            module = None
        nodes[name] = Node(name, kind, module, configs.get(name, ()), doc.line(at))
        doc.lines[("operations", name)] = doc.line(at)
    if not isinstance(value, list) or not value:  # said already (entries, or the file's missing key)
        return nodes
    for kind in ("source", "sink"):
        count = sum(n.kind == kind for n in nodes.values())
        if count != 1:
            doc.fail(("operations",), f"a graph has exactly one {kind} operation, this one has {count}")
    return nodes


def _edges(doc: _Doc, value: Any, nodes: dict[str, Node], schemas: dict[str, tuple[str, str]]) -> list[Edge]:
    edges: list[Edge] = []
    for at, item in doc.entries(value, "connections", "connections"):
        c = doc.mapping(item, at, ("from", "to"), required=("from", "to"))
        if "from" not in c or "to" not in c:
            continue
        f = doc.mapping(c["from"], (*at, "from"), ("name", "arm", "schemaName"), required=("name",))
        t = doc.mapping(c["to"], (*at, "to"), ("name",), required=("name",))
        schema = None
        if f.get("schemaName") is not None:
            schema = schemas.get(str(f["schemaName"]))
            if schema is None:
                doc.fail((*at, "from", "schemaName"), f"no schema named {f['schemaName']!r} in the graph's schemas"
                                                      + (f" ({', '.join(schemas)})" if schemas else ""))
                continue
        ends = []
        for end, e in (("from", f), ("to", t)):
            name = e.get("name")
            if name is not None and name not in nodes:
                doc.fail((*at, end, "name"), f"unknown operation {name!r}; the operations are: " + ", ".join(nodes))
            ends.append(name if name in nodes else None)
        if None in ends:
            continue
        a, b = ends
        arm = None
        if "arm" in f:
            arm = ARMS.get(str(f["arm"]) if not isinstance(f["arm"], bool) else str(f["arm"]))
            if arm is None:
                doc.fail((*at, "from", "arm"), f"arm is \"True\" or \"False\", got {f['arm']!r}")
                continue
            if nodes[a].kind != "branch":
                doc.fail((*at, "from", "arm"), f"{a!r} is a {nodes[a].kind}: only a branch's edges have an arm")
                continue
        elif nodes[a].kind == "branch":
            doc.fail((*at, "from"), f"{a!r} is a branch: its edges say which arm they take (arm: \"True\" or "
                                    "\"False\")")
            continue
        if nodes[a].kind == "sink":
            doc.fail((*at, "from"), f"{a!r} is the sink: nothing can come out of it")
        elif nodes[b].kind == "source":
            doc.fail((*at, "to"), f"{b!r} is the source: nothing can go into it")
        elif any(e.src == a and e.dst == b and e.arm == arm for e in edges):
            doc.fail(at, f"{a!r} -> {b!r} is listed twice")
        else:
            edges.append(Edge(a, b, arm, schema))
            doc.lines[("edge", a, b)] = doc.line(at)
    return edges


def _check_topology(doc: _Doc, nodes: dict[str, Node], edges: list[Edge]) -> None:
    """No cycles; every operation on a path from the source to the sink; a concatenate
    merges, everything else takes one input."""
    after = {n: [e.dst for e in edges if e.src == n] for n in nodes}
    before = {n: [e.src for e in edges if e.dst == n] for n in nodes}
    state: dict[str, int] = {}

    def cycle_from(n: str, path: list[str]) -> list[str] | None:
        state[n] = 1
        for m in after[n]:
            if state.get(m) == 1:
                return path[path.index(m):] + [n, m] if m in path else [n, m]
            if m not in state and (found := cycle_from(m, path + [n])):
                return found
        state[n] = 2
        return None

    for n in nodes:
        if n not in state and (cycle := cycle_from(n, [])):
            doc.fail(("connections",), f"the connections form a cycle: {' -> '.join(cycle)}")
            return

    def closure(start: str, step: dict[str, list[str]]) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for m in step[todo.pop()]:
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    source = next(n for n, x in nodes.items() if x.kind == "source")
    sink = next(n for n, x in nodes.items() if x.kind == "sink")
    reached, leads = closure(source, after), closure(sink, before)
    for n, node in nodes.items():
        if n not in reached:
            doc.fail(("operations", n), f"operation {n!r} gets no input: no connection leads to it from {source!r}")
        elif n not in leads:
            doc.fail(("operations", n), f"operation {n!r} leads nowhere: no connection takes its output to {sink!r}")
        elif len(before[n]) > 1 and node.kind not in ("concatenate", "sink"):
            doc.fail(("operations", n), f"{n!r} takes {len(before[n])} inputs ({', '.join(before[n])}); merge "
                                        "streams with a concatenate operation")


# --- deployments -----------------------------------------------------------------------
def load_deployment(path: str | os.PathLike) -> Deployment:
    """Reads and checks a DataflowGraph deployment (with the endpoint documents beside it)."""
    path = pathlib.Path(path)
    docs = _read(path)
    endpoints: dict[str, tuple[_Doc, dict]] = {}
    registries: dict[str, tuple[_Doc, dict]] = {}
    graph: tuple[_Doc, dict, tuple] | None = None
    for doc in docs:
        r = doc.root if isinstance(doc.root, dict) else {}
        kind = r.get("kind")
        if kind in ("DataflowEndpoint", "RegistryEndpoint"):
            name = (r.get("metadata") or {}).get("name") if isinstance(r.get("metadata"), dict) else None
            if not name:
                doc.fail(("metadata",), f"a {kind} needs metadata.name, which endpointRefs name")
                continue
            (endpoints if kind == "DataflowEndpoint" else registries)[name] = (doc, r.get("spec") or {})
        elif kind == "DataflowGraph" or "nodes" in r or "nodeConnections" in r:
            if graph is not None:
                doc.fail(("kind",), "one DataflowGraph per file: serve each with its own `wasinn serve`")
                continue
            if kind is not None or "spec" in r:
                doc.mapping(r, (), _DEPLOYMENT_KEYS, required=("spec",))
                api = str(r.get("apiVersion", ""))
                if "apiVersion" in r and api.partition("/")[0] != API_GROUP:
                    doc.fail(("apiVersion",), f"expected {API_GROUP}/VERSION, got {api!r}")
                graph = (doc, r.get("spec") if isinstance(r.get("spec"), dict) else {}, ("spec",))
            else:
                graph = (doc, r, ())
        elif kind is not None:
            doc.fail(("kind",), f"wasinn serves a DataflowGraph with DataflowEndpoint and RegistryEndpoint documents "
                                f"beside it, not a {kind}")
    problems = [p for d in docs for p in d.problems]
    if graph is None or problems:
        raise PipelineError(path, problems or [f"{path}:1: (file): no DataflowGraph in this file"])
    doc, spec, at = graph
    meta = doc.root.get("metadata") if isinstance(doc.root.get("metadata"), dict) else {}
    deployment = _deployment(doc, spec, at, str(meta.get("name") or path.stem), endpoints, registries)
    problems = [p for d in docs for p in d.problems]
    if problems:
        raise PipelineError(path, problems)
    return deployment


def _deployment(doc: _Doc, spec: dict, at: tuple, name: str, endpoints: dict, registries: dict) -> Deployment | None:
    doc.mapping(spec, at, _SPEC_KEYS, required=("nodes", "nodeConnections"))
    nodes = spec.get("nodes")
    if not isinstance(nodes, list):
        doc.fail((*at, "nodes"), f"expected a list of nodes, got {_kind(nodes)}")
        return None
    by_type: dict[str, list[tuple[tuple, dict]]] = {"Source": [], "Graph": [], "Destination": []}
    for i, node in enumerate(nodes):
        nat = (*at, "nodes", i)
        n = doc.mapping(node, nat, ("nodeType", "name", "sourceSettings", "graphSettings", "destinationSettings"),
                        required=("nodeType", "name"))
        if n.get("nodeType") not in by_type:
            doc.fail((*nat, "nodeType"), f"nodeType is Source, Graph or Destination, got {n.get('nodeType')!r}")
            continue
        by_type[n["nodeType"]].append((nat, n))
    for kind, found in by_type.items():
        if len(found) != 1:
            doc.fail((*at, "nodes"), f"wasinn serves a DataflowGraph with one {kind} node; this one has {len(found)}")
    if doc.problems:
        return None
    (sat, s), (gat, g), (dat, d) = by_type["Source"][0], by_type["Graph"][0], by_type["Destination"][0]
    refs = _connections(doc, spec.get("nodeConnections"), (*at, "nodeConnections"), s["name"], g["name"], d["name"])
    ss = doc.mapping(s.get("sourceSettings"), (*sat, "sourceSettings"), ("endpointRef", "dataSources", "assetRef"),
                     required=("endpointRef", "dataSources"))
    gs = doc.mapping(g.get("graphSettings"), (*gat, "graphSettings"), ("registryEndpointRef", "artifact",
                                                                      "configuration"), required=("artifact",))
    ds = doc.mapping(d.get("destinationSettings"), (*dat, "destinationSettings"), ("endpointRef", "dataDestination",
                                                                                 "headers"),
                     required=("endpointRef", "dataDestination"))
    if ds.get("headers"):
        doc.fail((*dat, "destinationSettings", "headers"), "header actions are not supported by wasinn serve; set "
                                                          "user properties in an operator instead")
    sources = ss.get("dataSources")
    if not isinstance(sources, list) or not sources or not all(isinstance(t, str) and t for t in sources):
        doc.fail((*sat, "sourceSettings", "dataSources"), f"expected a list of MQTT topics, got {_kind(sources)}")
        sources = []
    sink = doc.string(ds.get("dataDestination"), (*dat, "destinationSettings", "dataDestination")) or ""
    host, tls = None, False
    for ref_at, ref in (((*sat, "sourceSettings", "endpointRef"), ss.get("endpointRef")),
                        ((*dat, "destinationSettings", "endpointRef"), ds.get("endpointRef"))):
        if ref in endpoints:
            host, tls = _mqtt_endpoint(doc, ref_at, ref, *endpoints[ref])
    registry = None
    ref = gs.get("registryEndpointRef")
    if ref in registries:
        registry = _registry_endpoint(doc, (*gat, "graphSettings", "registryEndpointRef"), ref, *registries[ref])
    configuration = {}
    for i, kv in enumerate(gs.get("configuration") or []):
        cat = (*gat, "graphSettings", "configuration", i)
        kv = doc.mapping(kv, cat, ("key", "value"), required=("key", "value"))
        if "key" in kv and "value" in kv:
            value = kv["value"]
            configuration[str(kv["key"])] = str(value).lower() if isinstance(value, bool) else str(value)
    artifact = doc.string(gs.get("artifact"), (*gat, "graphSettings", "artifact")) or ""
    if artifact and ":" not in artifact.rpartition("/")[2] and "@" not in artifact:
        doc.fail((*gat, "graphSettings", "artifact"), f"an artifact is NAME:VERSION, got {artifact!r}")
    return Deployment(doc.path.resolve(), name, artifact, registry, configuration, tuple(sources), sink, host, tls,
                      doc.line(gat), refs["input"], refs["output"])


def _connections(doc: _Doc, value: Any, at: tuple, source: str, graph: str, destination: str
                 ) -> dict[str, str | None]:
    """Checks Source -> Graph -> Destination; returns the schema references on their
    `from` sides: {"input": ..., "output": ...}."""
    refs: dict[str, str | None] = {"input": None, "output": None}
    if not isinstance(value, list):
        doc.fail(at, f"expected a list of connections, got {_kind(value)}")
        return refs
    wanted, seen = {(source, graph), (graph, destination)}, set()
    for i, item in enumerate(value):
        c = doc.mapping(item, (*at, i), ("from", "to"), required=("from", "to"))
        f = doc.mapping(c.get("from"), (*at, i, "from"), ("name", "schema"), required=("name",))
        t = doc.mapping(c.get("to"), (*at, i, "to"), ("name",), required=("name",))
        if "schema" in f:
            ref = _schema_settings(doc, f["schema"], (*at, i, "from", "schema"))
            refs["input" if f.get("name") == source else "output"] = ref
        pair = (f.get("name"), t.get("name"))
        if pair not in wanted:
            doc.fail((*at, i), f"wasinn serves Source -> Graph -> Destination ({source} -> {graph} -> {destination}); "
                               f"got {pair[0]!r} -> {pair[1]!r}")
        seen.add(pair)
    for a, b in wanted - seen:
        doc.fail(at, f"missing the connection {a} -> {b}")
    return refs


def _schema_settings(doc: _Doc, value: Any, at: tuple) -> str | None:
    """A connection's `schema: {schemaRef, serializationFormat}`: the reference, checked
    for its form (what it names is looked up in --schemas when the graph is resolved).
    MQTT carries JSON as it is: `Json` is the one format (as in Azure's graphs)."""
    from .services.schemas import parse_reference
    s = doc.mapping(value, at, ("schemaRef", "serializationFormat"), required=("schemaRef",))
    fmt = s.get("serializationFormat", "Json")
    if str(fmt) != "Json":
        doc.fail((*at, "serializationFormat"), f"wasinn serve publishes to MQTT, whose data flow graphs carry Json; "
                                               f"got {fmt!r}")
    ref = doc.string(s.get("schemaRef"), (*at, "schemaRef"))
    if ref is not None and parse_reference(ref) is None:
        doc.fail((*at, "schemaRef"), f"a schema reference is aio-sr://NAMESPACE/NAME:VERSION, got {ref!r}")
        return None
    return ref


def _mqtt_endpoint(doc: _Doc, at: tuple, ref: str, edoc: _Doc, spec: Any) -> tuple[str | None, bool]:
    spec = spec if isinstance(spec, dict) else {}
    kind = spec.get("endpointType")
    if kind != "Mqtt":
        doc.fail(at, f"endpoint {ref!r} is {kind!r}: wasinn serve speaks MQTT only (endpointType: Mqtt)")
        return None, False
    m = spec.get("mqttSettings") if isinstance(spec.get("mqttSettings"), dict) else {}
    host = m.get("host")
    tls = isinstance(m.get("tls"), dict) and m["tls"].get("mode") == "Enabled"
    if host is not None:
        try:
            parse_broker(host)
        except WasinnError as e:
            edoc.fail(("spec", "mqttSettings", "host"), str(e))
    return host, tls


def _registry_endpoint(doc: _Doc, at: tuple, ref: str, rdoc: _Doc, spec: Any) -> str | None:
    spec = spec if isinstance(spec, dict) else {}
    host = spec.get("host")
    if not isinstance(host, str) or not host:
        rdoc.fail(("spec", "host"), "a RegistryEndpoint needs spec.host (HOST[:PORT][/PATH])")
        return None
    if "://" in host:
        return host
    name = host.split("/")[0].rpartition(":")[0] or host.split("/")[0]
    loopback = name in ("localhost", "127.0.0.1", "[::1]", "::1")
    return ("http://" if loopback else "https://") + host


# --- resolving into a Dataflow -----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ServeFlags:
    """What `wasinn serve` adds to a graph file."""
    modules: dict[str, pathlib.Path] = dataclasses.field(default_factory=dict)  # --module REF=PATH
    registry: str | None = None
    sources: tuple[str, ...] = ()
    sink: str | None = None
    params: tuple[tuple[str | None, str, str], ...] = ()   # --param [NODE.]KEY=VALUE
    dead_letter: str | None = None
    group: str | None = None
    broker: str | None = None
    state_store: str | None = None
    schemas: pathlib.Path | None = None
    module_schemas: tuple[pathlib.Path, ...] = ()   # --module-schema FILE


def parse_param(text: str) -> tuple[str | None, str, str]:
    """`[NODE.]KEY=VALUE`: NODE is split off at the last `.` before the `=`."""
    target, sep, value = text.partition("=")
    if not sep or not target:
        raise BadValue(f"--param wants [NODE.]KEY=VALUE, got {text!r}")
    node, dot, key = target.rpartition(".")
    if not key:
        raise BadValue(f"--param wants [NODE.]KEY=VALUE, got {text!r}")
    return (node if dot else None), key, value


def parse_module(text: str) -> tuple[str, pathlib.Path]:
    ref, sep, path = text.rpartition("=")
    if not sep or not ref or not path:
        raise BadValue(f"--module wants REF=PATH (e.g. azure-samples/explore-iot-operations/temperature:1.0.0="
                       f"temperature.wasm), got {text!r}")
    return ref, pathlib.Path(path)


def ref_names(ref: str) -> list[str]:
    """The names a reference answers to, most specific first: the reference itself,
    NAME:TAG and NAME (its last path part), so `--module temperature=...` covers
    `azure-samples/explore-iot-operations/temperature:1.0.0`."""
    last = ref.rpartition("/")[2]
    return list(dict.fromkeys([ref, last, last.partition("@")[0].partition(":")[0]]))


def local_module(ref: str, modules: dict[str, pathlib.Path]) -> pathlib.Path | None:
    for name in ref_names(ref):
        if name in modules:
            return modules[name]
    return None


def node_properties(graph: GraphDefinition, configuration: dict[str, str],
                    params: tuple[tuple[str | None, str, str], ...]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each operator node's init properties: --param over the deployment's configuration
    over the parameter's default; a parameter with none of them is left out. Raises
    `BadValue` for a --param that names no node or no parameter (did you mean...)."""
    import difflib
    for node, key, _ in params:
        if node is not None and node not in graph.nodes:
            close = difflib.get_close_matches(node, list(graph.nodes), n=1)
            raise BadValue(f"--param {node}.{key}: no operation {node!r}" +
                           (f"; did you mean {close[0]}?" if close else f"; the operations are: {', '.join(graph.nodes)}"))
        declared = [p.key for n in graph.nodes.values() if node in (None, n.name) for p in n.parameters]
        if key not in declared:
            close = difflib.get_close_matches(key, declared, n=1)
            what = f"operation {node!r} declares no parameter" if node else "no operation declares the parameter"
            raise BadValue(f"--param {(node + '.') if node else ''}{key}: {what} {key!r}" +
                           (f"; did you mean {close[0]}?" if close else
                            f"; declared: {', '.join(sorted(set(declared))) or '(none)'}"))
    out = {}
    for n in graph.nodes.values():
        props = []
        for p in n.parameters:
            value = p.default
            value = configuration.get(p.key, value)
            for node, key, v in params:
                if key == p.key and node in (None, n.name):
                    value = v
            if value is not None:
                props.append((p.name, value))
        out[n.name] = tuple(props)
    return out


def _mqtt(broker: str, group: str, dead_letter: str, sink: str, tls: bool) -> Mqtt:
    host, port = parse_broker(broker)
    if dead_letter == sink:
        raise BadValue(f"--dead-letter must differ from the sink topic {sink!r}")
    if any(c in group for c in "/+#"):
        raise BadValue(f"--group cannot hold / + or #, got {group!r}")
    return Mqtt(host, port, group, dead_letter, tls=Tls(None) if tls else None)


def _group(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-") or "graph"


def resolve(path: str | os.PathLike, flags: ServeFlags, fetch=None) -> Dataflow:
    """A graph definition or a deployment, with the flags, into a `Dataflow`. `fetch(ref,
    registry, kind)` brings an artifact not given by --module (artifacts.py) and returns
    a local path; kind is "module" or "graph"."""
    path = pathlib.Path(path)
    kind = served_kind(path)
    configuration: dict[str, str] = {}
    tls = False
    broker = flags.broker
    registry = flags.registry
    if kind == "deployment":
        d = load_deployment(path)
        registry = registry or d.registry
        graph_file = local_module(d.artifact, flags.modules)
        if graph_file is None:
            if fetch is None or registry is None:
                raise WasinnError(f"{path}:{d.line}: the graph artifact {d.artifact!r} is neither given by --module "
                                  f"{d.artifact}=FILE nor pullable: add --registry DIR|URL or a RegistryEndpoint")
            graph_file = fetch(d.artifact, registry, "graph")
        graph = load_graph(graph_file)
        configuration, sources, sink = d.configuration, flags.sources or d.sources, flags.sink or d.sink
        broker = broker or d.mqtt_host
        tls = d.tls
        name = d.name
        input_schema = d.input_schema
        _check_references(d, flags.schemas)
    elif kind == "graph":
        graph = load_graph(path)
        if not flags.sources or not flags.sink:
            raise BadValue(f"{path} is a graph definition: give its endpoints with --source TOPIC (repeatable) and "
                           "--sink TOPIC")
        sources, sink, name = flags.sources, flags.sink, graph.name
        input_schema = None
    else:
        raise WasinnError(f"{path} is a wasinn pipeline file, not a graph")
    for t in sources:
        if t.startswith("$"):
            raise BadValue(f"source topic {t!r}: topics starting with $ are the broker's")
    if "+" in sink or "#" in sink:
        raise BadValue(f"sink topic {sink!r}: a topic published to cannot hold the wildcards + or #")
    components = {}
    for ref in graph.modules:
        local = local_module(ref, flags.modules)
        if local is None:
            if fetch is None or registry is None:
                raise BadValue(f"module {ref!r} (operation "
                               f"{next(n.name for n in graph.nodes.values() if n.module == ref)!r}): give it with "
                               f"--module {ref}=FILE.wasm, or a --registry DIR|URL to pull it from")
            local = fetch(ref, registry, "module")
        local = pathlib.Path(local).resolve()
        if not local.is_file():
            raise BadValue(f"--module {ref}: no such file: {local}")
        components[ref] = local
    properties = node_properties(graph, configuration, flags.params)
    group = flags.group or _group(name)
    mqtt = _mqtt(broker or DEFAULT_BROKER, group, flags.dead_letter or f"{sink}/dead-letter", sink, tls)
    if flags.state_store is not None and not flags.state_store.startswith(("redis://", "rediss://")):
        raise BadValue(f"--state-store wants redis://HOST:PORT/DB (Redis or Valkey), got {flags.state_store!r}")
    module_schemas = []
    for file in flags.module_schemas:
        try:
            module_schemas.append((pathlib.Path(file).stem, "application/json", pathlib.Path(file).read_text()))
        except (OSError, UnicodeDecodeError) as e:
            raise BadValue(f"--module-schema {file}: {getattr(e, 'strerror', None) or e}") from None
    if flags.schemas is not None and not pathlib.Path(flags.schemas).is_file():
        raise BadValue(f"--schemas {flags.schemas}: no such file")
    return Dataflow(path.resolve(), name, graph, components, properties, tuple(sources), sink, mqtt,
                    flags.state_store, pathlib.Path(flags.schemas).resolve() if flags.schemas else None,
                    tuple(module_schemas), input_schema)


def _check_references(d: Deployment, schemas: pathlib.Path | None) -> None:
    """A deployment's schema references name schemas of the registry --schemas gives."""
    refs = [r for r in (d.input_schema, d.output_schema) if r is not None]
    if not refs:
        return
    if schemas is None:
        raise BadValue(f"{d.path}:{d.line}: the schema reference {refs[0]!r} needs a schema registry: give one with "
                       "--schemas FILE")
    from .services.schemas import SchemaRegistry
    registry = SchemaRegistry.from_file(schemas)
    for ref in refs:
        if registry.resolve(ref) is None:
            raise BadValue(f"{d.path}:{d.line}: the schema reference {ref!r} names no schema in --schemas {schemas} "
                           f"(it has: {', '.join(registry.references()) or 'none'})")


__all__ = ["Dataflow", "Deployment", "Edge", "GraphDefinition", "Node", "OPERATION_TYPES", "Parameter",
           "ServeFlags", "load_deployment", "load_graph", "node_properties", "parse_module", "parse_param",
           "resolve", "served_kind"]

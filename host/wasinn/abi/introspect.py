"""The host side of wasinn:introspect/describe: what a loaded graph expects and produces.

Backends already know each graph's inputs and outputs (`Graph.inputs`/`outputs`, read
when the graph loads), so describing one is a lookup; `wasinn inspect` prints the same
description from the command line.
"""
from __future__ import annotations

import os
from typing import Mapping

from .._bindings import GraphDescription, Resource, TensorDescription
from ..backends import Graph, TensorSpec, default_backends
from ..errors import NnError, WasinnError
from ..nn import WasiNn
from ..registry import ModelRegistry

# The WIT shape's marker for a dynamic axis.
DYNAMIC = -1


def open_graph(source: str, *, backends: Mapping[str, str] | None = None) -> Graph:
    """The graph a model file (or a `kserve+http://` URL) gives, loaded exactly as the
    host serves it to a guest's `load-by-name`; `backends` as `Host` takes them."""
    from ..backends.kserve import is_remote  # its HTTP stack only where a model may be remote
    if not is_remote(source) and not os.path.isfile(source):
        raise WasinnError(f"no such model file: {source}")
    registry = ModelRegistry()
    name = registry.register_spec(f"model={source}").name
    nn = WasiNn(default_backends(0, backends), registry)
    try:
        return registry.graph(name, nn.load_graph, nn.load_file)
    except NnError as e:
        raise WasinnError(f"cannot load {source}: {e}") from None


def tensor_description(spec: TensorSpec) -> TensorDescription:
    shape = None if spec.shape is None else [DYNAMIC if d is None else d for d in spec.shape]
    return TensorDescription(name=spec.name, ty=spec.ty, type_name=spec.type_name, shape=shape)


def describe(graph: Graph) -> GraphDescription:
    return GraphDescription(inputs=[tensor_description(s) for s in graph.inputs],
                            outputs=[tensor_description(s) for s in graph.outputs],
                            backend=graph.backend, target=graph.target)


def as_json(description: GraphDescription) -> dict:
    """Plain values (enums by their WIT names), for `wasinn inspect --json`."""
    def tensor(t: TensorDescription) -> dict:
        return {"name": t.name, "type": t.ty.value if t.ty else None, "type_name": t.type_name, "shape": t.shape}
    return {"backend": description.backend, "target": description.target.value,
            "inputs": [tensor(t) for t in description.inputs],
            "outputs": [tensor(t) for t in description.outputs]}


def as_table(description: GraphDescription) -> str:
    rows = [(kind, t.name, t.ty.value if t.ty else f"({t.type_name})",
             "any rank" if t.shape is None else "[" + ", ".join(map(str, t.shape)) + "]")
            for kind, ts in (("input", description.inputs), ("output", description.outputs)) for t in ts]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(3)]
    lines = [f"backend {description.backend}, target {description.target.value}"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
    return "\n".join(lines)


class Introspect:
    """Implements the generated `WasinnIntrospectHost` on the shared wasi:nn tables."""

    def __init__(self, nn: WasiNn):
        self.nn = nn

    def describe_graph(self, store, g: int) -> GraphDescription:
        return describe(self.nn.get(g, Resource.GRAPH))

"""Named graphs for `load-by-name`.

The operator registers names on the host side (CLI `--model NAME=PATH`, or wasmtime's
`-S nn-graph=ENCODING::DIR`). A guest's string is only ever a key into this table,
never a path. Each name is loaded once, on first use, and the loaded graph (one
onnxruntime session) is shared by every instance in the process.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import threading
from typing import Callable

from ._bindings import ExecutionTarget, GraphEncoding
from .backends import Graph
from .errors import WasinnError, not_found

# The file wasmtime expects inside an `-S nn-graph=ENCODING::DIR` directory.
GRAPH_DIR_FILES = {GraphEncoding.ONNX: ("model.onnx",),
                   GraphEncoding.OPENVINO: ("model.xml", "model.bin")}


@dataclasses.dataclass
class ModelEntry:
    name: str
    paths: tuple[pathlib.Path, ...]
    encoding: GraphEncoding
    target: ExecutionTarget
    graph: Graph | None = None


class ModelRegistry:
    def __init__(self):
        self._entries: dict[str, ModelEntry] = {}
        self._lock = threading.Lock()

    def register(self, name: str, paths, encoding: GraphEncoding = GraphEncoding.AUTODETECT,
                 target: ExecutionTarget = ExecutionTarget.CPU) -> ModelEntry:
        """Registers model file(s) under `name`; checks they exist now, loads on first use."""
        if not name:
            raise WasinnError("a model name cannot be empty")
        paths = tuple(pathlib.Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths))
        for p in paths:
            if not p.is_file():
                raise WasinnError(f"model {name!r}: no such file {p}")
        entry = ModelEntry(name, paths, encoding, target)
        self._entries[name] = entry
        return entry

    def register_spec(self, spec: str) -> ModelEntry:
        """`NAME=PATH` (encoding recognised from the bytes)."""
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise WasinnError(f"--model wants NAME=PATH, got {spec!r}")
        return self.register(name, path)

    def register_graph_dir(self, spec: str) -> ModelEntry:
        """wasmtime's `ENCODING::DIR`: named by the directory's base name."""
        enc, sep, directory = spec.partition("::")
        if not sep or not directory:
            raise WasinnError(f"nn-graph wants ENCODING::DIR, got {spec!r}")
        try:
            encoding = GraphEncoding(enc)
        except ValueError:
            raise WasinnError(f"nn-graph: unknown encoding {enc!r}; wasi:nn has: "
                              + ", ".join(e.value for e in GraphEncoding)) from None
        if encoding not in GRAPH_DIR_FILES:
            raise WasinnError(f"nn-graph: wasinn has no directory layout for encoding {enc!r}")
        d = pathlib.Path(directory)
        if not d.is_dir():
            raise WasinnError(f"nn-graph: no such directory {d}")
        return self.register(d.resolve().name, [d / f for f in GRAPH_DIR_FILES[encoding]], encoding)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def graph(self, name: str, load: Callable[[list[bytes], GraphEncoding, ExecutionTarget], Graph]) -> Graph:
        """The loaded graph for `name` (loading it the first time), or `not-found`."""
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(repr(n) for n in self.names()) or "none"
            raise not_found(f"no graph named {name!r}; registered: {known}")
        with self._lock:
            if entry.graph is None:
                try:
                    builders = [p.read_bytes() for p in entry.paths]
                except OSError as e:
                    raise not_found(f"graph {name!r}: cannot read its model file: {e}") from e
                entry.graph = load(builders, entry.encoding, entry.target)
        return entry.graph

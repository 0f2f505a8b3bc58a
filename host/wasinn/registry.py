"""Named graphs for `load-by-name`.

The operator registers names on the host side (CLI `--model NAME=PATH`, or wasmtime's
`-S nn-graph=ENCODING::DIR`, or `--model NAME=kserve+http://...` for a model on an
inference server). A guest's string is only ever a key into this table, never a path.
Each name is loaded once, on first use, and the loaded graph (one onnxruntime session,
or one remote model's metadata and connections) is shared by every instance in the process.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import threading
from typing import TYPE_CHECKING, Callable

from ._bindings import ExecutionTarget, GraphEncoding
from .backends import Graph
from .errors import NnError, WasinnError, not_found, quoted

if TYPE_CHECKING:
    from .backends.kserve import Endpoint

# The file wasmtime expects inside an `-S nn-graph=ENCODING::DIR` directory.
GRAPH_DIR_FILES = {GraphEncoding.ONNX: ("model.onnx",),
                   GraphEncoding.OPENVINO: ("model.xml", "model.bin"),
                   GraphEncoding.TENSORFLOWLITE: ("model.tflite",)}


def _model_files(path: str) -> list[pathlib.Path]:
    """An OpenVINO IR is two files: `--model NAME=m.xml` takes m.bin beside it too."""
    p = pathlib.Path(path)
    return [p, p.with_suffix(".bin")] if p.suffix == ".xml" else [p]


@dataclasses.dataclass
class ModelEntry:
    name: str
    paths: tuple[pathlib.Path, ...]
    encoding: GraphEncoding
    target: ExecutionTarget
    graph: Graph | None = None
    # A model on an inference server instead of files (then `paths` is empty).
    remote: Endpoint | None = None


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

    def register_remote(self, name: str, url: str, target: ExecutionTarget = ExecutionTarget.CPU) -> ModelEntry:
        """Registers a model served over the Open Inference Protocol (`kserve+http://...`,
        see backends/kserve.py); checks the URL now, connects on first use."""
        if not name:
            raise WasinnError("a model name cannot be empty")
        from .backends.kserve import Endpoint  # its HTTP stack (~7 ms) only for a remote model
        try:
            endpoint = Endpoint(url)
        except NnError as e:
            raise WasinnError(f"model {name!r}: {e.message}") from None
        entry = ModelEntry(name, (), GraphEncoding.AUTODETECT, target, remote=endpoint)
        self._entries[name] = entry
        return entry

    def register_spec(self, spec: str) -> ModelEntry:
        """`NAME=PATH` (encoding recognised from the bytes) or `NAME=kserve+http://...`."""
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise WasinnError(f"--model wants NAME=PATH, got {spec!r} (or NAME=kserve+http://HOST:PORT/v2/models/M "
                              "for a model on an inference server)")
        from .backends.kserve import is_remote  # see register_remote
        return self.register_remote(name, path) if is_remote(path) else self.register(name, _model_files(path))

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

    def longest_name(self) -> int:
        """The UTF-8 length of the longest registered name: a longer one need not be read."""
        return max((len(n.encode()) for n in self._entries), default=0)

    def unknown(self, shown: str) -> NnError:
        """`not-found` for a name (as a message shows it) that no model has."""
        return not_found(f"no graph named {shown}; registered: {', '.join(repr(n) for n in self.names()) or 'none'}")

    def graph(self, name: str, load: Callable[[list[bytes], GraphEncoding, ExecutionTarget], Graph],
              load_file: Callable[[pathlib.Path, GraphEncoding, ExecutionTarget], Graph | None] | None = None
              ) -> Graph:
        """The loaded graph for `name` (loading it the first time), or `not-found`."""
        entry = self._entries.get(name)
        if entry is None:
            raise self.unknown(quoted(name))
        with self._lock:
            if getattr(entry.graph, "gone", False):  # its backend worker died (isolate = "all"): load it anew
                entry.graph = None
            if entry.graph is None and entry.remote is not None:
                from .backends.kserve import KServeGraph  # see register_remote
                entry.graph = KServeGraph(entry.remote, entry.target)
            elif entry.graph is None:
                try:
                    if load_file and len(entry.paths) == 1:  # a backend reading files itself: no copy here
                        entry.graph = load_file(entry.paths[0], entry.encoding, entry.target)
                    if entry.graph is None:
                        entry.graph = load([p.read_bytes() for p in entry.paths], entry.encoding, entry.target)
                except OSError as e:
                    raise not_found(f"graph {name!r}: cannot read its model file: {e}") from e
        return entry.graph

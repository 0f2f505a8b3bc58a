"""Named graphs for `load-by-name`.

The operator registers names on the host side (CLI `--model NAME=PATH`, or wasmtime's
`-S nn-graph=ENCODING::DIR`, or `--model NAME=kserve+http://...` for a model on an
inference server). A guest's string is a key into this table, never a path, unless the
operator allows WAMR's convention (`allow_paths`, `--load-by-path DIR`): then a name no
model has is a file path, confined to that one directory, and its model counts as the
guest's own (loaded like `graph.load`'s bytes: isolated by default).
Each name is loaded once (at start-up, `preload`, or on first use), and the loaded graph
(one onnxruntime session, or one remote model's metadata and connections) is shared by
every instance in the process.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import stat
import threading
import weakref
from typing import TYPE_CHECKING, Callable

from ._enums import ExecutionTarget, GraphEncoding
from .copies import read_file
from .backends import Graph
from .errors import NnError, WasinnError, not_found, quoted, too_large

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
    # Held while it loads: a guest asking for it waits for a preload under way, not for others.
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)
    # Under `--isolate all`, its graph in each instance's own backend worker, by the instance
    # (nn.Session): one worker shared by all had let one instance's overlong compute hold
    # every other's calls to their deadlines, and its kill fail their contexts.
    owned: weakref.WeakKeyDictionary = dataclasses.field(default_factory=weakref.WeakKeyDictionary, repr=False,
                                                         compare=False)


class ModelRegistry:
    def __init__(self):
        self._entries: dict[str, ModelEntry] = {}
        self.path_root: pathlib.Path | None = None  # see allow_paths

    def allow_paths(self, root: str | os.PathLike) -> None:
        """WAMR's `load_by_name`, whose name is a host file path: a name no model has is
        read as a path, relative to `root` or absolute, and served only if the file it
        resolves to (symbolic links followed) lies inside `root`. Such a model is the
        guest's choice, so it loads as guest bytes do (`guest=` of the loader)."""
        path = pathlib.Path(root)
        if not path.is_dir():
            raise WasinnError(f"--load-by-path: no such directory {path}")
        self.path_root = path.resolve()

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

    def files(self) -> list[tuple[str, pathlib.Path, bool]]:
        """(name, path, loaded) of every registered model's files; `loaded`: its graph is
        loaded in process (a worker's may go, and be loaded anew from the files)."""
        return [(name, path, entry.graph is not None and not getattr(entry.graph, "gone", False))
                for name, entry in self._entries.items() for path in entry.paths]

    def unload(self) -> None:
        """Lets go of the models loaded for no instance (`preload`'s): loaded again on use."""
        for entry in self._entries.values():
            with entry.lock:
                if entry.remote is None:
                    entry.graph = None

    def longest_name(self) -> int:
        """The UTF-8 length of the longest registered name: a longer one need not be read."""
        longest = max((len(n.encode()) for n in self._entries), default=0)
        return max(longest, _PATH_MAX) if self.path_root is not None else longest

    def unknown(self, shown: str) -> NnError:
        """`not-found` for a name (as a message shows it) that no model has."""
        return not_found(f"no graph named {shown}; registered: {', '.join(repr(n) for n in self.names()) or 'none'}")

    def preload(self, load: Callable, load_file: Callable | None = None) -> Callable[[], None]:
        """Starts loading every model on files now, each on a thread of its own (remote
        ones connect on first use); returns a `wait()` that raises the first failure as
        one line. A guest asking for a model meanwhile waits for that model only."""
        failures: dict[str, NnError] = {}

        def one(name: str) -> None:
            try:
                self.graph(name, load, load_file)
            except NnError as e:
                failures[name] = e
        threads = [threading.Thread(target=one, args=(e.name,), name=f"wasinn-preload-{e.name}", daemon=True)
                   for e in self._entries.values() if e.remote is None and e.graph is None]
        for t in threads:
            t.start()

        def wait() -> None:
            for t in threads:
                t.join()
            for name, e in failures.items():
                raise WasinnError(f"model {name!r}: {e.message}")
        return wait

    def graph(self, name: str, load: Callable[..., Graph],
              load_file: Callable[[pathlib.Path, GraphEncoding, ExecutionTarget], Graph | None] | None = None,
              *, guest=None, max_bytes: int | None = None, owner=None,
              admit: Callable[[int], None] | None = None, deadline: float | None = None) -> Graph:
        """The loaded graph for `name` (loading it the first time), or `not-found`.
        `load(builders, encoding, target[, guest][, owner=])`; `guest` and `max_bytes` serve
        a name read as a path (`allow_paths`): the instance asking, and the most bytes it
        may read. `owner`: the instance whose own graph of a model on files this is (see
        ModelEntry.owned), loaded for it the first time it asks: `admit(bytes)` first
        refuses what it may not hold (an instance refused a 600 MB model had read it and
        had its worker load it first: 2.3 GB for four), and the files are read within
        `deadline` (copies.read_file)."""
        entry = self._entries.get(name)
        if entry is None:
            if self.path_root is None:
                raise self.unknown(quoted(name))
            return load(self._read_confined(name, max_bytes), GraphEncoding.AUTODETECT, ExecutionTarget.CPU, guest)
        if owner is not None and entry.remote is None:  # (an instance calls from one thread at a time)
            graph = entry.owned.get(owner)
            if graph is None or getattr(graph, "gone", False):
                try:
                    if admit is not None:
                        admit(sum(p.stat().st_size for p in entry.paths))
                    builders = [read_file(p, deadline, f"the model file of graph {name!r}") for p in entry.paths]
                    graph = entry.owned[owner] = load(builders, entry.encoding, entry.target, owner=owner)
                except OSError as e:
                    raise not_found(f"graph {name!r}: cannot read its model file: {e}") from e
            return graph
        with entry.lock:
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

    def _read_confined(self, name: str, max_bytes: int | None) -> list[bytes]:
        """The model file(s) at guest path `name`, read only from inside `path_root`."""
        root = self.path_root
        shown = quoted(name)
        if "\0" in name:
            raise not_found(f"no graph named {shown} (a path cannot hold NUL)")
        files = _model_files(os.path.realpath(root / name))  # absolute names stay as they are
        builders = []
        for path in files:
            if not path.is_relative_to(root):  # (the guest is not told where the host's files are)
                raise not_found(f"no graph named {shown}: the path leads outside the one directory "
                                "load_by_name may read (--load-by-path)")
            builders.append(_read_inside(path, root, shown, max_bytes))
        return builders


# Longest path a name may be, read as one (Linux's PATH_MAX).
_PATH_MAX = 4096


def _read_inside(path: pathlib.Path, root: pathlib.Path, shown: str, max_bytes: int | None) -> bytes:
    """Reads a regular file that is inside `root` once opened: the descriptor's own path
    is checked, so a link swapped in after the check above cannot lead out."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise not_found(f"no graph named {shown}: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        real = pathlib.Path(os.readlink(f"/proc/self/fd/{fd}")) if os.path.isdir("/proc/self/fd") else path
        if not stat.S_ISREG(info.st_mode) or not real.is_relative_to(root):
            raise not_found(f"no graph named {shown}: not a regular file inside the directory load_by_name "
                            "may read (--load-by-path)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)  # (it may have grown since)
        if max_bytes is not None and len(data) > max_bytes:
            raise too_large(f"model {shown} is over {max_bytes} bytes, the limit (max-model-bytes, --max-model-bytes)")
        return data
    finally:
        os.close(fd)

"""The wasi:nn semantics, once: resource tables, input matching, validation, and the
mapping of every failure to a wasi:nn `error`.

`WasiNn` implements the generated `WasiNnHost` protocol. Resources are integer reps
into one table shared by all instances of a `Host`; each instance (store) has a
`Session` that remembers its reps so that tearing the instance down frees them.
"""
from __future__ import annotations

import collections
import ctypes
import functools
import hashlib
import itertools
import threading
from typing import Callable

from ._bindings import Err, ErrorCode, ExecutionTarget, GraphEncoding, Resource, TensorType
from .backends import Backend, Context, Graph
from .errors import NnError, invalid_argument, invalid_encoding, not_found
from .registry import ModelRegistry
from .tensors import HostTensor, describe


# Graphs loaded from bytes that stay loaded after their guests drop them (for reuse).
RECENT_GRAPHS = 4


def store_key(store) -> int:
    """Identifies a store from a `Store` or the `StoreContext` host calls receive."""
    return ctypes.addressof(store._context().contents)


class Session:
    """The host-side state of one component instance."""

    def __init__(self, key: int):
        self.key = key
        self.reps: set[int] = set()


def returns_error(fn: Callable) -> Callable:
    """For methods whose WIT result has an `error` case (on objects whose `nn` is the
    `WasiNn`): any failure becomes an error resource. Nothing raises into wasmtime,
    which would poison the instance."""
    @functools.wraps(fn)
    def wrapper(self, store, *args):
        try:
            return fn(self, store, *args)
        except NnError as e:
            err = e
        except Exception as e:  # a backend or host bug: still an error, never a trap
            err = NnError(ErrorCode.RUNTIME_ERROR, f"{type(e).__name__}: {e}")
        raise Err(self.nn.add(store, Resource.ERROR, err))
    return wrapper


class WasiNn:
    """Serves wasi:nn for every instance of one `Host`."""

    def __init__(self, backends: dict[GraphEncoding, Backend], registry: ModelRegistry):
        self.backends = backends
        self.registry = registry
        self._objects: dict[int, tuple[Resource, object, Session]] = {}
        self._sessions: dict[int, Session] = {}
        self._reps = itertools.count(1)
        self._lock = threading.Lock()
        self._recent_graphs: collections.OrderedDict[tuple, Graph] = collections.OrderedDict()

    @property
    def nn(self) -> "WasiNn":
        return self

    # --- sessions and the resource table -----------------------------------------
    def open_session(self, store) -> Session:
        session = Session(store_key(store))
        self._sessions[session.key] = session
        return session

    def close_session(self, session: Session) -> None:
        """Frees everything the instance still holds (it may have trapped mid-call)."""
        with self._lock:
            for rep in session.reps:
                self._objects.pop(rep, None)
            session.reps.clear()
            self._sessions.pop(session.key, None)

    def add(self, store, kind: Resource, obj: object) -> int:
        session = self._sessions[store_key(store)]
        with self._lock:
            rep = next(self._reps) & 0xFFFFFFFF
            while rep == 0 or rep in self._objects:  # reps are u32; skip live ones on wrap
                rep = next(self._reps) & 0xFFFFFFFF
            self._objects[rep] = (kind, obj, session)
            session.reps.add(rep)
        return rep

    def get(self, rep: int, kind: Resource):
        entry = self._objects.get(rep)
        if entry is None or entry[0] != kind:
            # The canonical ABI only hands us reps we created for this type, so this
            # means the host's table and wasmtime's disagree: a host bug.
            raise RuntimeError(f"no live {kind.name.lower()} with rep {rep}")
        return entry[1]

    def take(self, rep: int, kind: Resource):
        """Removes an entry whose handle the guest gave up (moved to the host)."""
        obj = self.get(rep, kind)
        with self._lock:
            _, _, session = self._objects.pop(rep)
            session.reps.discard(rep)
        return obj

    def live(self, session: Session) -> dict[str, int]:
        """Counts of live resources held by one instance, by kind."""
        counts = {k.name.lower(): 0 for k in Resource}
        for rep in list(session.reps):
            entry = self._objects.get(rep)
            if entry:
                counts[entry[0].name.lower()] += 1
        return counts

    def drop(self, rep: int) -> None:
        with self._lock:
            entry = self._objects.pop(rep, None)
            if entry:
                entry[2].reps.discard(rep)

    # --- wasi:nn/tensor -------------------------------------------------------------
    def tensor_new(self, store, dimensions: list[int], ty: TensorType, data: bytes) -> int:
        return self.add(store, Resource.TENSOR, HostTensor(dimensions, ty, data))

    def tensor_dimensions(self, store, self_: int) -> list[int]:
        return list(self.get(self_, Resource.TENSOR).dims)

    def tensor_ty(self, store, self_: int) -> TensorType:
        return self.get(self_, Resource.TENSOR).ty

    def tensor_data(self, store, self_: int):
        return self.get(self_, Resource.TENSOR).data

    def tensor_drop(self, store, rep: int) -> None:
        self.drop(rep)

    # --- wasi:nn/graph --------------------------------------------------------------
    @returns_error
    def load(self, store, builder: list[bytes], encoding: GraphEncoding, target: ExecutionTarget) -> int:
        return self.add(store, Resource.GRAPH, self.load_graph(builder, encoding, target))

    def load_graph(self, builders: list[bytes], encoding: GraphEncoding, target: ExecutionTarget) -> Graph:
        """Picks the backend for `encoding` (or recognises the bytes) and loads. The same
        bytes loaded again, by any instance, get the same graph: a graph is immutable,
        and creating an onnxruntime session costs 10x more than hashing its bytes."""
        if not builders:
            raise invalid_argument("load needs at least one graph builder (the model bytes); got none")
        key = (encoding, target, tuple(hashlib.sha256(b).digest() for b in builders))
        with self._lock:
            graph = self._recent_graphs.get(key)
            if graph is not None:
                self._recent_graphs.move_to_end(key)
                return graph
        graph = self._load_uncached(builders, encoding, target)
        with self._lock:
            self._recent_graphs[key] = graph
            while len(self._recent_graphs) > RECENT_GRAPHS:
                self._recent_graphs.popitem(last=False)
        return graph

    def _load_uncached(self, builders: list[bytes], encoding: GraphEncoding, target: ExecutionTarget) -> Graph:
        if encoding == GraphEncoding.AUTODETECT:
            for backend in self.backends.values():
                if backend.recognizes(builders):
                    return backend.load(builders, target)
            raise invalid_encoding("autodetect did not recognise the model bytes as any encoding this "
                                   f"host serves ({self.served()})")
        backend = self.backends.get(encoding)
        if backend is None:
            raise invalid_encoding(f"no backend serves encoding {encoding.value}; this host serves: {self.served()}")
        return backend.load(builders, target)

    def served(self) -> str:
        return ", ".join(f"{e.value} ({b.name})" for e, b in self.backends.items())

    @returns_error
    def load_by_name(self, store, name: str) -> int:
        return self.add(store, Resource.GRAPH, self.registry.graph(name, self.load_graph))

    @returns_error
    def graph_init_execution_context(self, store, self_: int) -> int:
        graph: Graph = self.get(self_, Resource.GRAPH)
        return self.add(store, Resource.GRAPH_EXECUTION_CONTEXT, (graph, graph.init_execution_context()))

    def graph_drop(self, store, rep: int) -> None:
        self.drop(rep)

    # --- wasi:nn/inference ----------------------------------------------------------
    def graph_execution_context_compute(self, store, self_: int, inputs: list[tuple[str, int]]):
        # The input handles were moved to us: free them whatever happens next.
        tensors = [(name, self.take(rep, Resource.TENSOR)) for name, rep in inputs]
        return self._compute(store, self_, tensors)

    @returns_error
    def _compute(self, store, ctx_rep: int, tensors: list[tuple[str, HostTensor]]):
        graph, context = self.get(ctx_rep, Resource.GRAPH_EXECUTION_CONTEXT)
        outputs = compute(graph, context, tensors)
        return [(name, self.add(store, Resource.TENSOR, t)) for name, t in outputs]

    def graph_execution_context_drop(self, store, rep: int) -> None:
        self.drop(rep)

    # --- wasi:nn/errors -------------------------------------------------------------
    def error_code(self, store, self_: int) -> ErrorCode:
        return self.get(self_, Resource.ERROR).code

    def error_data(self, store, self_: int) -> str:
        return self.get(self_, Resource.ERROR).message

    def error_drop(self, store, rep: int) -> None:
        self.drop(rep)


def bind_inputs(graph: Graph, tensors: list[tuple[str, HostTensor]]) -> list[HostTensor]:
    """Matches named tensors to the model's inputs (by name, then by decimal index, as
    wasmtime does), checks each against its input, and returns them in model order."""
    specs = graph.inputs
    by_name = {s.name: i for i, s in enumerate(specs)}
    bound: dict[int, HostTensor] = {}
    for name, t in tensors:
        i = by_name.get(name)
        if i is None and name.isdecimal() and int(name) < len(specs):
            i = int(name)
        if i is None:
            raise invalid_argument(f"unknown input {name!r}; the model's inputs are: "
                                   + ", ".join(f"{s.name!r} {s.describe()}" for s in specs))
        spec = specs[i]
        if i in bound:
            raise invalid_argument(f"input {spec.name!r} given twice")
        label = f"input {spec.name!r}"
        if spec.ty is None:
            raise invalid_argument(f"{label}: the model wants {spec.type_name}, which wasi:nn cannot carry")
        if t.ty != spec.ty or not spec.accepts_shape(t.dims):
            raise invalid_argument(f"{label}: expected {spec.describe()}, got {describe(t.ty, t.dims)}")
        t.validate(label)
        bound[i] = t
    missing = [s for i, s in enumerate(specs) if i not in bound]
    if missing:
        raise invalid_argument("missing input" + ("s " if len(missing) > 1 else " ")
                               + ", ".join(f"{s.name!r} {s.describe()}" for s in missing))
    return [bound[i] for i in range(len(specs))]


def compute(graph: Graph, context: Context, tensors: list[tuple[str, HostTensor]]) -> list[tuple[str, HostTensor]]:
    """One inference with wasi:nn's rules, for guests and for host-side callers alike."""
    return context.compute(bind_inputs(graph, tensors))

"""The wasi:nn semantics, once: resource tables, input matching, validation, and the
mapping of every failure to a wasi:nn `error`.

`WasiNn` implements the generated `WasiNnHost` protocol (today's wasi:nn, the newest in wit/).
Resources are integer reps into one table shared by all instances of a `Host`; each
instance (store) has a `Session` that remembers its reps so that tearing the instance
down frees them. `Staged` serves the two earlier releases (set-input, compute(),
get-output) on top of it: one semantics, every version.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import mmap
import os
import sys
import threading
import time
import weakref
from typing import Callable, NamedTuple

from ._bindings import Err, ErrorCode, ExecutionTarget, GraphEncoding, Resource, TensorType
from .backends import Backend, Context, Graph
from .backends.formats import inline_onnx_external_data, looks_like_onnx
from .backends.isolation import Isolation
from .embedding import stores
from .embedding.stores import store_key
from .deadlines import EpochTicker
from .errors import NnError, invalid_argument, invalid_encoding, quoted, too_large
from .limits import Limits
from .registry import ModelRegistry
from .tensors import DTYPES, HostTensor, describe


# How long a guest may run on, past its call's deadline and past the backend's `timeout`
# reaching it, to see that error before the epoch deadline ends the call: given at the
# call's first timeout only (20 ticks at every timeout had let a guest that loaded again
# and again, each load a `timeout` past the deadline, run on for good). A timeout comes
# at the deadline, or 50 ms after it where a backend worker had to be killed; the guest
# gets 50-100 ms from then (the epoch's ticks are 50 ms apart).
TIMEOUT_GRACE = 0.1
# Model inputs a message that names them lists, at most
_LISTED_INPUTS = 20
_LIMIT_NAMES = {"graph": "graphs", "graph_execution_context": "contexts", "tensor": "tensors", "error": "errors"}
# The resources wasi:nn defines (the bindings' `Resource` also numbers other packages' host
# resources, the data-flow services' among them, which this table never holds)
NN_RESOURCES = (Resource.TENSOR, Resource.GRAPH, Resource.GRAPH_EXECUTION_CONTEXT, Resource.ERROR)
_KIND_NAMES = {k: k.name.lower() for k in NN_RESOURCES}  # (an enum's .name runs Python code each time)


class ExecutionContext:
    """A graph-execution-context: its graph and backend context, and what the earlier
    releases' calls keep on it (`Staged`): the inputs set (input index -> (name, tensor
    rep)) and the outputs of the last compute (name -> tensor rep). Those reps stay in
    the instance's table, counted against its limits, until replaced or the context
    goes."""
    __slots__ = ("graph", "context", "inputs", "outputs", "held", "working")

    def __init__(self, graph: Graph, context: Context):
        self.graph = graph
        self.context = context
        self.inputs: dict[int, tuple[str, int]] = {}
        self.outputs: dict[str, int] = {}
        # the backend's working memory of this context, counted in max-host-bytes (`count_working`)
        self.held = self.working = working_bytes(context)

    def staged(self) -> list[int]:
        return [rep for _, rep in self.inputs.values()] + list(self.outputs.values())


class Entry(NamedTuple):
    """A row of the host's resource table: what a rep names, and whose it is."""
    kind: Resource
    obj: object
    session: Session


# One is made per resource a guest creates: tuple.__new__ directly costs a quarter of
# NamedTuple's own __new__ (a Python function).
_new_entry = tuple.__new__


class Handles:
    """A core module instance's handles of one kind (abi/witx.py): numbered from 0 in
    the order made and never reused, as wasmtime's WITX tables and WasmEdge number
    them, so a program that counts on graph 0 and context 0 runs. Each maps to a rep of
    the host's table; living in the instance's session, a handle can only ever name
    that instance's own objects."""
    __slots__ = ("reps", "next")

    def __init__(self):
        self.reps: dict[int, int] = {}
        self.next = 0

    def add(self, rep: int) -> int:
        handle = self.next
        while handle in self.reps:  # handles are u32: past 2^32 made, skip the live ones
            handle = (handle + 1) & 0xFFFFFFFF
        self.next = (handle + 1) & 0xFFFFFFFF
        self.reps[handle] = rep
        return handle

    def __contains__(self, handle: int) -> bool:
        return handle in self.reps


class Session:
    """The host-side state of one component instance."""

    def __init__(self, key: int, store_context):
        self.key = key
        self.store_context = store_context
        self.reps: set[int] = set()
        self.counts = collections.Counter()  # live resources by kind
        self.host_bytes = 0  # what its live tensors and graphs hold on the host (max-host-bytes)
        self.deadline: float | None = None  # time.monotonic() when the current call must end
        self.graced = False  # whether the current call was given its TIMEOUT_GRACE (`timeouts_seen`)
        self.last_error: NnError | None = None  # the last wasi:nn error the guest received
        self.core_memory = None  # a core module's exported memory, found on its first wasi-nn call (abi/witx.py)
        self.handles: dict[Resource, Handles] = collections.defaultdict(Handles)  # a core module's, by kind
        self.worker = None  # the backend worker running the graphs it loaded from its own bytes (isolated.py)
        # graphs the guest dropped that a live context still runs (`WasiNn.drop`): rep by id(graph)
        self.lingering: dict[int, int] = {}
        # by id(graph): its live contexts, and its entries (a registered model's graph is one
        # object under every handle load-by-name gives); counted, so that a drop looks at
        # no other entry (scanning them all, 63 drops of 65,000 tensors' instance held
        # nn's lock, which every instance shares, 1-2 s each)
        self.contexts_of: collections.Counter = collections.Counter()
        self.entries_of: collections.Counter = collections.Counter()
        self.clock_helper: dict = {}  # its WASI clock's functions, held to its deadlines (abi/clocks.py)

    def broken(self) -> str | None:
        """Why the instance must start afresh: its backend worker was killed or died, and
        with it the graphs it had loaded from its own bytes."""
        return self.worker.dead if self.worker is not None else None


def _tally(session: Session, kind: Resource, obj, n: int) -> None:
    """Counts an entry made (n 1) or gone (-1) in `session`'s per-graph counts."""
    if kind == Resource.GRAPH:
        counts, key = session.entries_of, id(obj)
    elif kind == Resource.GRAPH_EXECUTION_CONTEXT:
        counts, key = session.contexts_of, id(obj.graph)
    else:
        return
    counts[key] += n
    if not counts[key]:
        del counts[key]


def _filled(into, data):
    memoryview(into)[:] = memoryview(data).cast("B")
    return into


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
        # A new error is kept as the resource, without the raised one's frames (their locals
        # kept what they held alive: a graph the host refused, in its worker), its text cut
        # (a missing input's name lists every input the model has).
        message = err.message
        if len(message) > MAX_ERROR_TEXT:
            message = f"{message[:MAX_ERROR_TEXT]}... ({len(message)} characters in all)"
        err = NnError(err.code, message)
        session = self.nn.session(store)
        session.last_error = err
        # Past max-errors the call traps. Its bytes are counted in max-host-bytes, never
        # refused there: the error may be the one that says max-host-bytes is reached.
        self.nn._admit(session, "error", 0)
        raise Err(self.nn.add(store, Resource.ERROR, err, limited=False, session=session))
    return wrapper


class WasiNn:
    """Serves wasi:nn for every instance of one `Host`."""

    def __init__(self, backends: dict[GraphEncoding, Backend], registry: ModelRegistry,
                 limits: Limits | None = None):
        self.backends = backends
        self.registry = registry
        self.limits = limits or Limits()
        self._objects: dict[int, Entry] = {}
        self._sessions: dict[int, Session] = {}
        self._reps = itertools.count(1)
        # Re-entrant: an instance dropped without close() is closed by a finalizer,
        # which the garbage collector may run inside any locked section.
        self._lock = threading.RLock()
        # graphs loaded in process from bytes, shared by whoever loads the same bytes while
        # an instance holds them: kept after the last one went (four of them), they held
        # ~460 MB that no instance's max-host-bytes counted (probe 64)
        self._shared_graphs: weakref.WeakValueDictionary[tuple, Graph] = weakref.WeakValueDictionary()
        self.isolation = Isolation(self.limits)

    @property
    def nn(self) -> "WasiNn":
        return self

    # --- sessions and the resource table -----------------------------------------
    def open_session(self, store) -> Session:
        session = Session(store_key(store), stores.context(store))
        self._sessions[session.key] = session
        return session

    def close_session(self, session: Session) -> None:
        """Frees everything the instance still holds (it may have trapped mid-call)."""
        with self._lock:
            for rep in session.reps:
                self._objects.pop(rep, None)
            session.reps.clear()
            session.lingering.clear()
            session.contexts_of.clear()
            session.entries_of.clear()
            session.counts.clear()
            session.host_bytes = 0
            worker, session.worker = session.worker, None
            # A store freed without close() may already have a successor at its address.
            if self._sessions.get(session.key) is session:
                del self._sessions[session.key]
        if worker is not None:  # outside the lock: unmapping 4 GiB of its shared memory took ~0.2 s,
            worker.close()      # every other instance's wasi:nn calls waiting on the lock meanwhile

    def list_bounds(self) -> dict[str, Callable[[int], None]]:
        """Checks of the counts a guest passes as list parameters, by WIT parameter name
        (the tensor constructor's and tensor-from-memory's `dimensions`, load's
        `builder`, bulk load's `builders`): the bindings lift a list only after its
        check passes (embedding/patches.py), so a flood costs no Python object per element."""
        limits = self.limits
        return {"dimensions": lambda n: limits.check_rank(n, "the tensor"),
                "builder": limits.check_builders, "builders": limits.check_builders}

    def session(self, store) -> Session:
        return self._sessions[store_key(store)]

    def call_deadline(self, store) -> float | None:
        """time.monotonic() when the store's call in progress must end; None without a
        deadline, or for a store whose instance has closed (its streams' last writes)."""
        return self.deadline_at(store_key(store))

    def deadline_at(self, key: int) -> float | None:
        """`call_deadline` of the store whose key (`store_key`) is `key`."""
        if self.limits.deadline <= 0:
            return None
        session = self._sessions.get(key)
        return session.deadline if session is not None else None

    def add(self, store, kind: Resource, obj: object, *, limited: bool = True, session: Session | None = None) -> int:
        """Registers `obj`; over the instance's live limit for its kind raises
        `too-large` (unless `limited` is False: the tensor constructor admits its tensor
        before reading it, compute its outputs together, the host its callers' tensors).
        `session`: the store's, where the caller has it already."""
        session = session or self.session(store)
        name = _KIND_NAMES[kind]
        held = _held_bytes(kind, obj)
        if limited:
            self._admit(session, name, held)
        with self._lock:
            rep = next(self._reps) & 0xFFFFFFFF
            while rep == 0 or rep in self._objects:  # reps are u32; skip live ones on wrap
                rep = next(self._reps) & 0xFFFFFFFF
            self._objects[rep] = _new_entry(Entry, (kind, obj, session))
            session.reps.add(rep)
            session.counts[name] += 1
            session.host_bytes += held
            _tally(session, kind, obj, 1)
        return rep

    def _admit(self, session: Session, name: str, held: int) -> None:
        """Raises `too-large` unless the instance may hold one more `name` of `held` bytes."""
        cap = self.limits.live_limit(name)
        if cap and session.counts[name] >= cap:
            raise too_large(f"the instance holds {session.counts[name]} live {name.replace('_', ' ')}s; "
                            f"the limit is {cap} (max-{_LIMIT_NAMES[name]}, --max-{_LIMIT_NAMES[name]})")
        if held:
            self.limits.check_host_bytes(session.host_bytes, held, f"this {name} ({held} bytes)")

    def get(self, rep: int, kind: Resource):
        entry = self._objects.get(rep)
        if entry is None or entry.kind != kind:
            # The canonical ABI only hands us reps we created for this type, so this
            # means the host's table and wasmtime's disagree: a host bug.
            raise RuntimeError(f"no live {_KIND_NAMES[kind]} with rep {rep}")
        return entry.obj

    def find(self, store, handle: int, kind: Resource):
        """The object behind a handle a core module named itself (a plain number,
        `Handles`): None unless it is a live `kind` of this very instance."""
        return self.find_in(self._sessions.get(store_key(store)), handle, kind)

    def find_in(self, session: Session | None, handle: int, kind: Resource):
        """`find` for a caller whose session is known."""
        rep = None if session is None else session.handles[kind].reps.get(handle)
        entry = None if rep is None else self._objects.get(rep)
        if entry is None or entry.kind != kind or entry.session is not session:
            return None
        return entry.obj

    def take(self, rep: int, kind: Resource):
        """Removes an entry whose handle the guest gave up (moved to the host)."""
        obj = self.get(rep, kind)
        with self._lock:
            entry = self._objects.pop(rep)
            self._forget(rep, entry)
        return obj

    def live(self, session: Session) -> dict[str, int]:
        """Counts of live resources held by one instance, by kind."""
        return {name: session.counts[name] for name in _KIND_NAMES.values()}

    def drop(self, rep: int) -> None:
        with self._lock:
            entry = self._objects.pop(rep, None)
            if entry is None:
                return
            session = entry.session
            if entry.kind == Resource.GRAPH and session.contexts_of[id(entry.obj)] \
                    and session.entries_of[id(entry.obj)] == 1:
                # a live context still runs it, and no other handle names it: it stays in
                # the table, counted against max-graphs and max-host-bytes, until no
                # context runs it (a guest that dropped each graph and kept its context
                # had 19 graphs live under max-graphs 2)
                self._objects[rep] = entry
                session.lingering[id(entry.obj)] = rep
                return
            self._forget(rep, entry)
            if entry.kind == Resource.GRAPH_EXECUTION_CONTEXT:
                if isinstance(entry.obj, ExecutionContext):
                    for staged in entry.obj.staged():
                        self.drop(staged)
                graph = id(entry.obj.graph)
                if not session.contexts_of[graph] and graph in session.lingering:
                    self.drop(session.lingering.pop(graph))

    @staticmethod
    def _forget(rep: int, entry: Entry) -> None:
        session = entry.session
        session.reps.discard(rep)
        session.counts[_KIND_NAMES[entry.kind]] -= 1
        session.host_bytes -= _held_bytes(entry.kind, entry.obj)
        _tally(session, entry.kind, entry.obj, -1)

    # --- wasi:nn/tensor -------------------------------------------------------------
    def tensor_new(self, store, dimensions: list[int], ty: TensorType, data: bytes) -> int:
        return self.tensor_from_guest(store, len(dimensions), lambda: dimensions, ty, len(data),
                                      lambda into: data if into is None else _filled(into, data))

    def tensor_from_guest(self, store, rank: int, read_dims: Callable[[], object], ty: TensorType, nbytes: int,
                          read: Callable[[object], object]) -> int:
        """Registers a tensor a guest made, by any data path: `rank` dimensions that
        `read_dims()` reads, `nbytes` bytes that `read(into)` copies into `into` (a uint8
        array of `nbytes`) and returns, or with `into` None makes. Both are called only
        once the tensor fits max-tensor-rank, max-tensors and max-host-bytes; over one,
        `too-large` is raised, which traps the guest (the constructor has no error to
        return) with that limit's line. An instance with a backend worker gets large
        tensors in the worker's shared memory, where it reads its inputs without a copy."""
        session = self.session(store)
        self.limits.check_rank(rank, "the tensor")
        self._admit(session, "tensor", nbytes + _dims_bytes(rank))
        into = session.worker.tensor(nbytes) if session.worker is not None else None
        return self.add(store, Resource.TENSOR, HostTensor(read_dims(), ty, read(into)), limited=False,
                        session=session)

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
        self.limits.check_builders(len(builder))
        return self.add(store, Resource.GRAPH, self.load_graph(builder, encoding, target, self.session(store)))

    def load_views(self, views: list[memoryview], encoding: GraphEncoding, target: ExecutionTarget,
                   guest: Session | None = None) -> Graph:
        """`load_graph` on views of a guest's memory (`guest`: its session), so that no copy
        of the model is made here (backends copy what they keep; onnxruntime maps a file
        written from the views; an isolated load copies them once, into the worker's
        shared memory). Each view is released on return: nothing can read through it
        once the guest runs again."""
        try:
            return self.load_graph(views, encoding, target, guest)
        finally:
            for view in views:
                view.release()

    def load_graph(self, builders: list[bytes], encoding: GraphEncoding, target: ExecutionTarget,
                   guest: Session | None = None, owner: Session | None = None) -> Graph:
        """Picks the backend for `encoding` (or recognises the bytes) and loads;
        `builders` are any buffers, read only during the call. `guest`: the instance
        whose own bytes these are (None: the operator's model), for the isolation policy:
        an isolated graph runs in a worker process (backends/isolated.py), one per
        instance; `owner`: the instance an operator's model isolated too (`all`) is
        loaded for (None: the host's own worker for those). The same bytes loaded again
        in process, by any instance, while an instance holds their graph, get the same
        graph: a graph is immutable, and creating an onnxruntime session costs 10x more
        than hashing its bytes."""
        if not builders:
            raise invalid_argument("load needs at least one graph builder (the model bytes); got none")
        self.limits.check_model(sum(len(b) for b in builders))
        isolated = self.isolation.applies(guest is not None)
        key = graph = None
        if not isolated:
            import hashlib  # OpenSSL's sha256, fast on megabytes; its libcrypto (3.3 MB) only once a guest loads bytes
            key = (encoding, target, tuple(hashlib.sha256(b).digest() for b in builders))
            with self._lock:
                graph = self._shared_graphs.get(key)
        if graph is None:
            builders = self._inline(builders, encoding, guest)  # counted with the weights it read in
            size = sum(len(b) for b in builders)
            self.limits.check_model(size)
        else:
            size = graph.model_bytes
        if guest is not None:
            # the instance's live graphs and host bytes, before a backend makes a session
            # (its threads and memory) that `add` would then refuse
            self._admit(guest, "graph", size)
        if graph is not None:
            return graph
        if isolated:
            graph = self._load_isolated(builders, encoding, target, guest or owner)
            graph.model_bytes = size
            return graph
        graph = self._backend_for(builders, encoding).load(builders, target)
        graph.model_bytes = size  # counted against max-host-bytes
        with self._lock:
            self._shared_graphs[key] = graph
        return graph

    def _load_isolated(self, builders: list[bytes], encoding: GraphEncoding, target: ExecutionTarget,
                       guest: Session | None) -> Graph:
        """In `guest`'s worker (None: the host's worker for the operator's models)."""
        backend = self._backend_for(builders, encoding)
        if not backend.kind.installed():
            backend.backend()  # raises, naming the extra to install
        with timeouts_seen(guest):
            return self.isolation.load(guest, backend.kind.name, backend.encoding, backend.threads,
                                       backend.precision, builders, target,
                                       guest.deadline if guest is not None else None)

    def _inline(self, builders: list[bytes], encoding: GraphEncoding, guest: Session | None) -> list[bytes]:
        if encoding in (GraphEncoding.ONNX, GraphEncoding.AUTODETECT) and looks_like_onnx(builders):
            with timeouts_seen(guest):  # the walk of a guest's bytes stops at its call's deadline
                return [inline_onnx_external_data(builders[0], self.limits.external_data_dir,
                                                  guest.deadline if guest is not None else None,
                                                  self.limits.max_model_bytes)]
        return builders

    def _backend_for(self, builders: list[bytes], encoding: GraphEncoding) -> Backend:
        if encoding == GraphEncoding.AUTODETECT:
            for backend in self.backends.values():
                if backend.recognizes(builders):
                    return backend
            raise invalid_encoding("autodetect did not recognise the model bytes as any encoding this "
                                   f"host serves ({self.served()})")
        backend = self.backends.get(encoding)
        if backend is None:
            raise invalid_encoding(f"no backend serves encoding {encoding.value}; this host serves: {self.served()}"
                                   + _CONVERT.get(encoding, ""))
        return backend

    def served(self) -> str:
        return ", ".join(f"{e.value} ({b.name})" for e, b in self.backends.items())

    @returns_error
    def load_by_name(self, store, name: str) -> int:
        return self.add(store, Resource.GRAPH, self.graph_by_name(name, self.session(store)))

    def graph_by_name(self, name: str, session: Session) -> Graph:
        """The registered graph `name`, for the instance of `session` (whose own model it
        is where the registry reads names as paths: registry.allow_paths)."""
        owned = self.isolation.applies(guest=False)
        with timeouts_seen(session):
            return self.registry.graph(name, self.load_graph, self.load_file, guest=session,
                                       max_bytes=self.limits.max_model_bytes, owner=session if owned else None,
                                       admit=lambda size: self._admit(session, "graph", size),
                                       deadline=session.deadline)

    def load_file(self, path, encoding: GraphEncoding, target: ExecutionTarget) -> Graph | None:
        """An operator's model file, loaded by a backend that reads files itself; None
        when the encoding's backend does not, or the policy isolates operators' models
        too (then the caller loads the bytes)."""
        if self.isolation.applies(guest=False):
            return None
        if encoding == GraphEncoding.AUTODETECT:
            with open(path, "rb") as f:
                head = f.read(1 << 16)
            encoding = next((e for e, b in self.backends.items() if b.recognizes([head])), encoding)
        backend = self.backends.get(encoding)
        if backend is None:
            return None
        size = os.path.getsize(path)
        self.limits.check_model(size)
        graph = backend.load_file(path, target)
        if graph is not None:
            graph.model_bytes = size  # counted against max-host-bytes
        return graph

    @returns_error
    def graph_init_execution_context(self, store, self_: int) -> int:
        graph: Graph = self.get(self_, Resource.GRAPH)
        context = ExecutionContext(graph, new_context(graph, self.session(store)))
        return self.add(store, Resource.GRAPH_EXECUTION_CONTEXT, context)

    def graph_drop(self, store, rep: int) -> None:
        self.drop(rep)

    # --- wasi:nn/inference ----------------------------------------------------------
    def graph_execution_context_compute(self, store, self_: int, inputs: list[tuple[str, int]]):
        # The input handles were moved to us: free them whatever happens next.
        tensors = [(name, self.take(rep, Resource.TENSOR)) for name, rep in inputs]
        return self.compute_named(store, self_, tensors)

    @returns_error
    def compute_named(self, store, ctx_rep: int, tensors: list[tuple[str, HostTensor]]) -> list[tuple[str, int]]:
        """One inference on the context `ctx_rep` of the calling instance: the outputs,
        registered in its table as (name, tensor rep)."""
        ctx: ExecutionContext = self.get(ctx_rep, Resource.GRAPH_EXECUTION_CONTEXT)
        session = self.session(store)
        check_working(self.limits, session)
        with timeouts_seen(session):
            try:
                outputs = compute(ctx.graph, ctx.context, tensors, self.limits, session.deadline,
                                  lambda sizes: check_outputs(self.limits, sizes, session.host_bytes))
            finally:
                count_working(session, ctx)
        live = session.counts["tensor"] + len(outputs)
        if live > self.limits.max_tensors:
            raise too_large(f"the outputs would make {live} live tensors in the instance; the limit is "
                            f"{self.limits.max_tensors} (max-tensors, --max-tensors)")
        return [(name, self.add(store, Resource.TENSOR, t, limited=False, session=session)) for name, t in outputs]

    def graph_execution_context_drop(self, store, rep: int) -> None:
        self.drop(rep)

    # --- wasi:nn/errors -------------------------------------------------------------
    def error_code(self, store, self_: int) -> ErrorCode:
        return self.get(self_, Resource.ERROR).code

    def error_data(self, store, self_: int) -> str:
        return self.get(self_, Resource.ERROR).message

    def error_drop(self, store, rep: int) -> None:
        self.drop(rep)


# How a model in an encoding no backend here serves becomes one that is served.
_CONVERT = {GraphEncoding.PYTORCH: " (convert a PyTorch model to ONNX with torch.onnx.export)",
            GraphEncoding.TENSORFLOW: " (convert a TensorFlow model to ONNX with tf2onnx, or to TFLite with "
                                      "tf.lite.TFLiteConverter)"}


def bind_inputs(graph: Graph, tensors: list[tuple[str, HostTensor]], limits: Limits) -> list[HostTensor]:
    """Matches named tensors to the model's inputs (by name, then by decimal index, as
    wasmtime does), checks each against its input, and returns them in model order."""
    specs = graph.inputs
    by_name = input_names(specs)
    bound: dict[int, HostTensor] = {}
    for name, t in tensors:
        i = input_index(specs, name, by_name)
        if i in bound:
            raise invalid_argument(f"input {specs[i].name!r} given twice")
        check_input(specs[i], t, limits)
        bound[i] = t
    return in_model_order(specs, bound)


class Staged:
    """wasi:nn@0.2.0-rc-2024-06-25 and @0.2.0-rc-2024-08-19 (wasmtime 25-34 served the
    latter): inputs set one by one on the context, `compute()`, outputs fetched one by
    one. A thin shim over today's named-tensor compute (`WasiNn.compute_named`): set
    inputs are kept on the context, compute runs on them (they stay set, as the releases
    kept them), and its outputs are kept for get-output. Everything else is `WasiNn`'s
    own: the interfaces that did not change, the table, the limits, the errors, the
    data path."""

    def __init__(self, nn: WasiNn):
        self.nn = nn

    def __getattr__(self, name: str):  # tensor, graph and errors: unchanged since
        return getattr(self.nn, name)

    @returns_error
    def graph_execution_context_set_input(self, store, self_: int, name: str, tensor: int) -> None:
        # the tensor was moved to the host: it stays in the table (counted) while it is set
        ctx: ExecutionContext = self.nn.get(self_, Resource.GRAPH_EXECUTION_CONTEXT)
        try:
            index = input_index(ctx.graph.inputs, name)
        except NnError:
            self.nn.drop(tensor)
            raise
        if index in ctx.inputs:
            self.nn.drop(ctx.inputs[index][1])
        ctx.inputs[index] = (name, tensor)

    def graph_execution_context_compute(self, store, self_: int) -> None:
        ctx: ExecutionContext = self.nn.get(self_, Resource.GRAPH_EXECUTION_CONTEXT)
        for rep in ctx.outputs.values():
            self.nn.drop(rep)
        ctx.outputs = {}
        inputs = [(name, self.nn.get(rep, Resource.TENSOR)) for name, rep in ctx.inputs.values()]
        ctx.outputs = dict(self.nn.compute_named(store, self_, inputs))

    @returns_error
    def graph_execution_context_get_output(self, store, self_: int, name: str) -> int:
        ctx: ExecutionContext = self.nn.get(self_, Resource.GRAPH_EXECUTION_CONTEXT)
        rep = ctx.outputs.get(name)
        index = decimal_index(name, len(ctx.outputs))
        if rep is None and index is not None:
            rep = list(ctx.outputs.values())[index]
        if rep is None:
            if not ctx.outputs:
                raise invalid_argument(f"get-output {quoted(name)} before a successful compute on this context")
            raise invalid_argument(f"unknown output {quoted(name)}; the model's outputs are: "
                                   + ", ".join(map(repr, ctx.outputs)))
        return self.nn.add(store, Resource.TENSOR, self.nn.get(rep, Resource.TENSOR))  # a handle of its own

    def error_new(self, store, code: ErrorCode, data: str) -> int:
        """0.2.0-rc-2024-06-25's error constructor. Errors a guest makes count as the
        host's do, against max-errors and (their text) max-host-bytes; over either the
        constructor traps (it has no error to return), as the tensor constructor does."""
        return self.nn.add(store, Resource.ERROR, NnError(code, data))


def decimal_index(name: str, n: int) -> int | None:
    """The index below `n` that a name of ASCII digits stands for, as wasmtime reads one
    (`usize::from_str`), or None. (Python's `int` refuses past 4,300 digits with a
    ValueError: a guest's name of 4,301 had escaped as `runtime-error`, the tensor it set
    never freed.)"""
    if not (name.isascii() and name.isdigit()):
        return None
    digits = name.lstrip("0") or "0"
    if len(digits) > 20:  # past any usize
        return None
    index = int(digits)
    return index if index < n else None


def input_names(specs) -> dict[str, int]:
    """Each model input's index by its name (the first of a name given twice)."""
    names: dict[str, int] = {}
    for i, s in enumerate(specs):
        names.setdefault(s.name, i)
    return names


def input_index(specs, name: str, by_name: dict[str, int] | None = None) -> int:
    """The model input `name` means: by name, then by decimal index, as wasmtime does.
    `by_name`: `input_names(specs)`, for a caller that matches many (one lookup each: a
    model's 6,000 inputs matched by a walk each had taken 0.7 s)."""
    i = (by_name if by_name is not None else input_names(specs)).get(name)
    if i is not None:
        return i
    index = decimal_index(name, len(specs))
    if index is not None:
        return index
    listed = ", ".join(f"{s.name!r} {s.describe()}" for s in specs[:_LISTED_INPUTS])
    raise invalid_argument(f"unknown input {quoted(name)}; the model's inputs are: {listed}"
                           + (f", ... ({len(specs)} inputs)" if len(specs) > _LISTED_INPUTS else ""))


def in_model_order(specs, bound: dict[int, HostTensor]) -> list[HostTensor]:
    """Tensors bound by input index, as a list in model order; raises for missing ones."""
    if len(bound) != len(specs):
        missing = [s for i, s in enumerate(specs) if i not in bound]
        raise invalid_argument("missing input" + ("s " if len(missing) > 1 else " ")
                               + ", ".join(f"{s.name!r} {s.describe()}" for s in missing))
    return [bound[i] for i in range(len(specs))]


def check_input(spec, t: HostTensor, limits: Limits) -> None:
    """Raises unless `t` fits the model input `spec` (type, shape, bytes, limits)."""
    label = f"input {spec.name!r}"
    if spec.ty is None:
        raise invalid_argument(f"{label}: the model wants {spec.type_name}, which wasi:nn cannot carry")
    if t.ty != spec.ty or not spec.accepts_shape(t.dims):
        raise invalid_argument(f"{label}: expected {spec.describe()}, got {describe(t.ty, t.dims)}")
    t.validate(label)  # bytes that do not fit the dims are wrong, whatever the size
    limits.check_tensor(label, t.dims, DTYPES[t.ty].itemsize)



@contextlib.contextmanager
def timeouts_seen(session: Session | None):
    """A backend's `timeout` (the call's deadline met while it worked) reaches the guest as
    its error before the epoch deadline ends the call: TIMEOUT_GRACE to see it, given at
    the call's first timeout only."""
    try:
        yield
    except NnError as e:
        if e.code == ErrorCode.TIMEOUT and session is not None and not session.graced:
            session.graced = True
            end = max(session.deadline or 0.0, time.monotonic()) + TIMEOUT_GRACE
            stores.set_epoch_deadline(session.store_context, max(1, EpochTicker.ticks_by(end)))
        raise


def working_bytes(context: Context) -> int:
    """What a backend context holds of its own in the host (a LiteRT interpreter's
    tensors; 0 where contexts share their graph's memory, or where it lies in a worker)."""
    return getattr(context, "working_bytes", 0)


def count_working(session: Session, execution) -> None:
    """Counts in the instance's max-host-bytes what the backend context of `execution`
    (an ExecutionContext, or a core module's abi/witx.Execution) holds beyond what was
    counted: a LiteRT interpreter resized to a compute's dynamic axes, up to
    max-backend-memory. Past max-host-bytes, the instance's next allocations are refused
    (compute among them: `check_working`). Each context is counted when made (nn.add)."""
    grown = working_bytes(execution.context) - execution.working
    if grown:
        execution.working += grown
        execution.held += grown
        session.host_bytes += grown


def check_working(limits: Limits, session: Session) -> None:
    """Refuses a compute while contexts' grown working memory (`count_working`) holds
    the instance past max-host-bytes: one more resize could take it one interpreter
    further."""
    if session.host_bytes > limits.max_host_bytes:
        raise too_large(f"the instance holds {session.host_bytes} bytes on the host, its execution contexts' "
                        f"working memory grown with their inputs' shapes; the limit is {limits.max_host_bytes} "
                        "(max-host-bytes, --max-host-bytes): drop a context or tensors first")


def new_context(graph: Graph, session: Session) -> Context:
    """`graph`'s new context, made within the call's deadline (an isolated graph's worker
    is stopped at it: a backend may build a whole interpreter for each context)."""
    with timeouts_seen(session):
        return graph.init_execution_context(session.deadline)

def compute(graph: Graph, context: Context, tensors: list[tuple[str, HostTensor]], limits: Limits,
            deadline: float | None = None, accept_outputs: Callable[[list[tuple[str, int]]], None] | None = None
            ) -> list[tuple[str, HostTensor]]:
    """One inference with wasi:nn's rules, for guests and for host-side callers alike.
    `deadline` (time.monotonic()) stops a backend that runs too long: wasi:nn `timeout`.
    `accept_outputs` gets (name, bytes) of outputs and raises for those over a limit:
    before the run for the outputs whose size the model fixes, after it (before the
    backend wraps anything) for all."""
    inputs = bind_inputs(graph, tensors, limits)
    if deadline is not None and time.monotonic() > deadline:  # nothing sent to a backend past it
        raise NnError(ErrorCode.TIMEOUT, f"the call's deadline came while its {len(tensors)} inputs were matched to "
                                         "the model's; nothing was run")
    return compute_bound(graph, context, inputs, limits, deadline, accept_outputs)


def compute_bound(graph: Graph, context: Context, inputs: list[HostTensor], limits: Limits,
                  deadline: float | None = None, accept_outputs: Callable[[list[tuple[str, int]]], None] | None = None
                  ) -> list[tuple[str, HostTensor]]:
    """`compute` on inputs already bound: in model order, each checked by `check_input`."""
    accept = accept_outputs or (lambda sizes: check_outputs(limits, sizes))
    accept([(s.name, n) for s in graph.outputs if (n := s.static_nbytes()) is not None])
    if not getattr(context, "in_worker", False):
        # a backend in the host must not read bytes that a worker (the one process a
        # hostile model may have taken over) can change under it: a tensor that lies in a
        # worker's shared memory (backends/isolated.py) is copied first
        inputs = [HostTensor(t.dims, t.ty, t.data.copy()) if _in_shared_memory(t.data) else t for t in inputs]
    return context.compute(inputs, deadline=deadline, accept_outputs=accept)


def _in_shared_memory(data) -> bool:
    base = getattr(data, "base", None)
    return type(base) is memoryview and type(base.obj) is mmap.mmap


def check_outputs(limits: Limits, sizes: list[tuple[str, int]], held: int | None = None) -> None:
    """Outputs (name, bytes) against max-output-bytes and, for an instance holding
    `held` bytes, max-host-bytes."""
    for name, nbytes in sizes:
        limits.check_output(name, nbytes)
    total = sum(n for _, n in sizes)
    if held is not None:
        limits.check_host_bytes(held, total, f"outputs of {total} bytes")


# The text of a wasi:nn error the host makes, at most (the rest is cut), and what each
# live error is counted as besides it (its objects): a guest that never dropped the
# errors of failing calls had the host at 1.8 GB after 10,000 of 177 KB each.
MAX_ERROR_TEXT = 16 << 10
_ERROR_OVERHEAD = 512


# A tensor's dimensions past this many are counted in max-host-bytes, each as the Python
# int and tuple slot it takes (up to 40 bytes): 65,536 one-byte tensors of 64 dimensions
# near 2^32 were counted as 64 KiB and held 190 MB (probe 64). The first few, with the
# tensor's own objects (~0.5 KB), are the per-tensor overhead max-tensors bounds.
_FREE_DIMS = 8
_DIM_BYTES = 40


def _dims_bytes(rank: int) -> int:
    return _DIM_BYTES * max(0, rank - _FREE_DIMS)


def _held_bytes(kind: Resource, obj) -> int:
    """Host bytes a table entry holds: a tensor's data (and its many dimensions), a
    graph's model bytes."""
    if kind == Resource.TENSOR:
        return obj.nbytes + _dims_bytes(len(obj.dims))
    if kind == Resource.GRAPH:
        return getattr(obj, "model_bytes", 0)
    if kind == Resource.ERROR:  # an error's text, the host's or one a guest made (Staged.error_new)
        # as Python holds it: up to 4 bytes a character (len() counted 16 MB of emoji as 4 MB)
        return sys.getsizeof(obj.message) + _ERROR_OVERHEAD
    if kind == Resource.GRAPH_EXECUTION_CONTEXT:
        return getattr(obj, "held", 0)  # a core module's staged inputs and outputs (abi/witx.Execution)
    return 0

"""Graphs a guest loads from its own bytes run in a backend worker process, not here.

Model bytes from a guest are hostile input to native parsers (onnxruntime, LiteRT,
OpenVINO) that were never hardened against it: a crafted model can crash the process
that parses it, hold it past any deadline, or grow it past any memory limit. So under
the default policy (`isolate = "guest-models"`) such graphs are parsed, initialized and
run in a worker that the host supervises (worker.py): confined (confine.py: no files
but the interpreter's, no privileges, no new processes, no sockets), its address space
capped at its baseline + max-host-bytes + max-backend-memory per live graph, killed at
the call's deadline (after the backend's own cooperative stop has had its chance), and
whatever happens to it is a wasi:nn error for that instance's graphs and nothing else.

One worker per instance, forked on its first isolated load from a fork server (the
zygote, one per process) that has imported the backends already: a worker costs a fork,
not an interpreter start. The worker goes when its instance closes. Tensors cross in a
shared memory file the host creates and seals against shrinking; requests and replies
are small JSON messages on a Unix socket, and the host checks every reply as it would a
guest's arguments.

`isolate = "all"` also runs the operator's registered models in a worker (one shared by
every instance of the host, since the operator chose them); `"none"` runs everything in
process, as before.
"""
from __future__ import annotations

import atexit
import fcntl
import mmap
import os
import signal
import socket
import sys
import threading
import time
import weakref
from typing import Sequence

from ..lazy import numpy as np

from .._bindings import ErrorCode, ExecutionTarget, TensorType
from ..deadlines import stop_at_exit
from ..errors import NnError, runtime_error
from ..limits import product
from ..tensors import DTYPES, HostTensor
from .base import AcceptOutputs, TensorSpec, accept_all
from .worker import Waiting, receive, send

# How long past a call's deadline a worker has to answer (its backend's own stop comes
# at the deadline) before it is killed.
DEADLINE_GRACE = 0.05
_START_TIMEOUT = 60.0
_ALIGN = 64
_MIN_SHM = 1 << 20
_MAX_RANK = 64  # numpy's: a worker's reply with more axes is not a tensor


class Zygote:
    """The fork server (worker.py's `zygote`), started once per process."""

    def __init__(self):
        import subprocess  # only where a worker is ever needed (wasinn classify never does)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ, MALLOC_ARENA_MAX="2", OPENBLAS_NUM_THREADS="1")
        quiet = os.environ.get("WASINN_WORKER_STDERR") != "1"  # backends' own complaints about hostile models
        self.process = subprocess.Popen([sys.executable, "-P", "-m", "wasinn.backends.worker", str(theirs.fileno())],
                                        pass_fds=(theirs.fileno(),), cwd="/", env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if quiet else None)
        theirs.close()
        self.sock = ours
        self.owner = os.getpid()
        self.lock = threading.Lock()
        self.imported = {"onnxruntime"}
        try:
            message, _ = receive(self.sock, timeout=_START_TIMEOUT)
        except (OSError, ValueError) as e:
            self.process.kill()
            raise runtime_error(f"the backend worker server did not start: {e}") from None
        if message is None:
            raise runtime_error(f"the backend worker server did not start (it ended: {self.process.wait()})")

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.process.poll() is None

    def fork(self, settings: dict, memory: "SharedMemory | None" = None) -> "Worker":
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with self.lock:
            send(self.sock, {"op": "fork", **settings}, (theirs.fileno(),))
            theirs.close()
            message, fds = receive(self.sock, max_fds=1)
        if message is None or not fds:
            raise runtime_error("the backend worker server ended; the next load starts another")
        return Worker(self, ours, int(message["pid"]), fds[0], memory)

    def preload(self, backend: str) -> None:
        """Imports a backend's package in the zygote, for the workers it forks from now on."""
        if backend in self.imported:
            return
        with self.lock:
            send(self.sock, {"op": "import", "backend": backend})
            message, _ = receive(self.sock)
        self.imported.add(backend)  # where it failed, each worker fails to import it and says why

    def ended(self, pid: int) -> dict:
        """How a worker ended ("exit 0", "SIGSEGV", ... as `status`) and its peak RSS in
        bytes (`peak_rss`), as the zygote saw when it reaped it; {} if it has not yet."""
        for _ in range(20):
            with self.lock:
                send(self.sock, {"op": "status", "pid": pid})
                message, _ = receive(self.sock)
            if message:
                return message
            time.sleep(0.005)
        return {}

    def close(self) -> None:
        self.sock.close()
        self.process.kill()
        self.process.wait()


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()
_prewarmed = False


def zygote() -> Zygote:
    global _zygote
    with _zygote_lock:
        if _zygote is None or not _zygote.alive():
            _zygote = Zygote()
        return _zygote


@atexit.register  # registered first, so it runs after the prewarming thread's join (atexit is LIFO)
def _close_zygote() -> None:
    if _zygote is not None and _zygote.owner == os.getpid():
        _zygote.close()


def prewarm() -> None:
    """Starts the zygote on a thread, so that a guest's first load finds it up; once. The
    thread is joined at exit: a daemon thread that wakes (its zygote's first message)
    while the interpreter finalizes can crash a process whose work is done."""
    global _prewarmed
    with _zygote_lock:
        if _prewarmed:
            return
        _prewarmed = True
    thread = threading.Thread(target=_start_quietly, name="wasinn-zygote", daemon=True)
    thread.start()
    stop_at_exit(lambda: None, thread)


def _start_quietly() -> None:
    try:
        zygote()
    except Exception:  # noqa: BLE001 - the load that needs it starts one itself and says why it cannot
        pass


class Worker:
    """One backend worker process: its socket, its shared memory, and whether it lives."""

    def __init__(self, server: Zygote, sock: socket.socket, pid: int, pidfd: int,
                 memory: "SharedMemory | None" = None):
        self.server, self.sock, self.pid, self.pidfd = server, sock, pid, pidfd
        self.lock = threading.RLock()
        self.dead: str | None = None  # why it is gone
        self.memory = memory
        self.mapped = 0  # how much of it the worker has mapped; 0: it has not the file yet
        self.dropped: list[tuple[str, int]] = []  # graphs and contexts the host let go of
        self.waiting: dict[str, Waiting] = {}  # per kind of request: how long its replies take

    # --- shared memory ------------------------------------------------------------------
    @property
    def shm(self) -> mmap.mmap:
        return self.memory.map

    @property
    def size(self) -> int:
        return self.memory.size if self.memory is not None else 0

    def ensure(self, size: int) -> mmap.mmap:
        """Shared memory of at least `size` bytes, mapped on both sides (the caller holds the lock)."""
        if self.memory is None:
            self.memory = SharedMemory(size)
        elif size > self.memory.size:
            self.memory.grow(size)
        if self.mapped != self.memory.size:
            fds = () if self.mapped else (self.memory.fd,)
            self._exchange({"op": "shm", "size": self.memory.size}, None, fds)
            self.mapped = self.memory.size
        return self.memory.map

    # --- requests -------------------------------------------------------------------------
    def request(self, message: dict, deadline: float | None) -> dict:
        with self.lock:
            if self.dead:
                raise runtime_error(self.dead)
            if self.dropped:
                for kind, ident in self.dropped:
                    self._exchange({"op": "drop", kind: ident}, None)
                self.dropped.clear()
            return self._exchange(message, deadline)

    def _exchange(self, message: dict, deadline: float | None, fds: tuple[int, ...] = ()) -> dict:
        try:
            send(self.sock, message, fds)
            waiting = self.waiting.get(message["op"]) or self.waiting.setdefault(message["op"], Waiting())
            reply, _ = waiting.receive(self.sock, timeout=None if deadline is None
                                       else max(0.0, deadline - time.monotonic()) + DEADLINE_GRACE)
        except socket.timeout:
            self.kill("the backend worker was stopped at the call's deadline; the graphs this instance "
                      "loaded from its own bytes are gone (load them again)")
            raise NnError(ErrorCode.TIMEOUT, f"the backend did not finish by the call's deadline; {self.dead}") from None
        except (OSError, ValueError):
            reply = None
        if reply is None:
            self.kill(f"the backend worker ended ({self.server.ended(self.pid).get('status', 'killed')}) while "
                      f"{_DOING.get(message.get('op'), 'working')}; the graphs this instance loaded from its own "
                      "bytes are gone")
            raise runtime_error(self.dead)
        if not isinstance(reply, dict):
            self.kill("the backend worker sent a malformed reply")
            raise runtime_error(self.dead)
        if "error" in reply:
            raise _reported_error(reply)
        return reply

    def forget(self, kind: str, ident: int) -> None:
        """From a finalizer (any thread, any moment): dropped at the next request."""
        if not self.dead:
            self.dropped.append((kind, ident))

    def kill(self, reason: str) -> None:
        if self.dead:
            return
        self.dead = reason
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except OSError:
            pass  # already gone
        self.sock.close()

    def close(self) -> None:
        """Once, from whoever owns it (a session closing, or the finalizer of its store)."""
        self.kill("the instance that owned the backend worker has closed")
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.memory is not None:
            self.memory.close()


class SharedMemory:
    """The file tensors and model bytes cross in: a memfd the host made, sealed so that the
    worker can grow it (harmless) but never shrink it under the host's mapping."""

    def __init__(self, size: int):
        self.fd = os.memfd_create("wasinn-tensors", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self.size = _pages(max(size, _MIN_SHM))
        os.ftruncate(self.fd, self.size)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        self.map = mmap.mmap(self.fd, self.size)

    def grow(self, size: int) -> None:
        self.size = _pages(max(size, 2 * self.size))
        os.ftruncate(self.fd, self.size)
        old, self.map = self.map, mmap.mmap(self.fd, self.size)
        try:
            old.close()
        except BufferError:
            pass  # a view still holds it; it goes with that view

    def write(self, offset: int, chunks: list) -> None:
        """`chunks` one after another from `offset`: through the file, which fills fresh
        pages at twice the speed of faulting them in through the mapping (18.6 MB: 6.7 vs
        11-14 ms)."""
        for chunk in chunks:
            view = memoryview(chunk).cast("B")
            while view:
                n = os.pwrite(self.fd, view, offset)
                view, offset = view[n:], offset + n

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:
            pass
        os.close(self.fd)


def _pages(n: int) -> int:
    return (n + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE


_DOING = {"load": "loading the model", "compute": "computing", "init": "making an execution context",
          "fetch": "handing over the outputs"}


def _reported_error(reply: dict) -> NnError:
    try:
        code = ErrorCode(reply["error"])
    except (ValueError, KeyError, TypeError):
        code = ErrorCode.RUNTIME_ERROR
    message = reply.get("message")
    return NnError(code, message if isinstance(message, str) else "the backend worker failed")


class IsolatedGraph:
    """A graph living in a worker; what the Graph protocol asks, checked on arrival."""

    def __init__(self, worker: Worker, reply: dict, target: ExecutionTarget):
        self.worker = worker
        self.ident = _count(reply.get("graph"))
        self.backend = f"{_text(reply.get('backend'))} (isolated)"
        self.target = target
        self.inputs = _specs(reply.get("inputs"))
        self.outputs = _specs(reply.get("outputs"))
        self.model_bytes = 0
        self._finalizer = weakref.finalize(self, worker.forget, "graph", self.ident)

    @property
    def gone(self) -> bool:
        return self.worker.dead is not None

    def init_execution_context(self) -> "IsolatedContext":
        reply = self.worker.request({"op": "init", "graph": self.ident}, None)
        return IsolatedContext(self, _count(reply.get("context")))


class IsolatedContext:
    def __init__(self, graph: IsolatedGraph, ident: int):
        self.graph = graph
        self.ident = ident
        # room for the outputs whose size the model fixes, so that they come back at once
        self.room = sum(n + _ALIGN for s in graph.outputs if (n := s.static_nbytes()) is not None)
        weakref.finalize(self, graph.worker.forget, "context", ident)

    def compute(self, inputs: list[HostTensor], deadline: float | None = None,
                accept_outputs: AcceptOutputs = accept_all,
                into: Sequence[memoryview] | None = None) -> list[tuple[str, HostTensor]]:
        worker = self.graph.worker
        with worker.lock:
            if worker.dead:
                raise runtime_error(worker.dead)
            layout, end = [], 0
            for t in inputs:
                end = _aligned(end)
                layout.append([end, t.nbytes, t.ty.value, list(t.dims)])
                end += t.nbytes
            out = _aligned(end)
            shm = worker.ensure(out + self.room)
            for (offset, n, _, _), t in zip(layout, inputs):
                shm[offset:offset + n] = memoryview(t.data).cast("B")
            reply = worker.request({"op": "compute", "context": self.ident, "deadline": deadline,
                                    "inputs": layout, "out": out}, deadline)
            if "need" in reply:
                accept_outputs(_sizes(reply.get("sizes")))
                worker.ensure(_count(reply.get("need")))
                reply = worker.request({"op": "fetch", "out": out}, deadline)
            outputs = self._outputs(reply.get("outputs"), worker.size)
            accept_outputs([(name, n) for name, _, _, _, n in outputs])
            return [(name, HostTensor(dims, ty, np.frombuffer(worker.shm, np.uint8, n, offset).copy()))
                    for name, ty, dims, offset, n in outputs]

    def _outputs(self, outputs, size: int) -> list:
        """The worker's account of its outputs, held to what the host can trust."""
        checked = []
        try:
            for name, ty, dims, offset, n in outputs:
                ty = TensorType(ty)
                dims = [_count(d) for d in dims]
                if not isinstance(name, str) or len(dims) > _MAX_RANK or not 0 <= offset <= offset + n <= size:
                    raise ValueError
                if product(dims) * DTYPES[ty].itemsize != n:
                    raise ValueError
                checked.append((name, ty, dims, _count(offset), _count(n)))
        except (TypeError, ValueError):
            self.graph.worker.kill("the backend worker described its outputs wrongly")
            raise runtime_error(self.graph.worker.dead) from None
        return checked


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _count(value) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value


def _text(value) -> str:
    return value if isinstance(value, str) else "?"


def _sizes(sizes) -> list[tuple[str, int]]:
    try:
        return [(_text(name), _count(n)) for name, n in sizes]
    except (TypeError, ValueError):
        raise runtime_error("the backend worker described its outputs wrongly") from None


def _specs(specs) -> list[TensorSpec]:
    try:
        out = []
        for name, ty, type_name, shape in specs:
            if not isinstance(name, str) or not isinstance(type_name, str):
                raise ValueError
            if shape is not None:
                if len(shape) > _MAX_RANK:
                    raise ValueError
                shape = tuple(None if d is None else _count(d) for d in shape)
            out.append(TensorSpec(name, None if ty is None else TensorType(ty), type_name, shape))
        return out
    except (TypeError, ValueError):
        raise runtime_error("the backend worker described the model's inputs or outputs wrongly") from None


__all__ = ["IsolatedGraph", "SharedMemory", "Worker", "prewarm", "zygote"]

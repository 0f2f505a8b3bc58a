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
are small JSON messages on a Unix socket (a compute and its outputs packed), and the
host checks every reply as it would a guest's arguments.

`isolate = "all"` also runs the operator's registered models in a worker (one shared by
every instance of the host, since the operator chose them); `"none"` runs everything in
process, as before.
"""
from __future__ import annotations

import atexit
import bisect
import collections
import fcntl
import functools
import mmap
import os
import signal
import socket
import threading
import time
import weakref
from typing import Sequence

from ..lazy import numpy as np

from .._enums import ErrorCode, ExecutionTarget, TensorType
from ..copies import put, slices
from ..deadlines import seconds_left
from ..errors import NnError, runtime_error, too_large
from ..limits import product
from ..tensors import DTYPES, HostTensor
from .base import AcceptOutputs, TensorSpec, accept_all
from .worker import MessageTooLarge, Waiting, pack_compute, receive, send, unpack_outputs

# How long past a call's deadline a worker has to answer (its backend's own stop comes
# at the deadline) before it is killed.
DEADLINE_GRACE = 0.05
_START_TIMEOUT = 60.0
_ALIGN = 64
_MIN_SHM = 1 << 20
# A tensor an instance with a worker makes is placed in the worker's shared memory from
# this size on (SharedMemory.tensor).
IN_PLACE_FROM = 64 << 10
_MAX_RANK = 64  # numpy's: a worker's reply with more axes is not a tensor
# How many of this process's calls wait on a worker now: a wait (and the worker's for its
# next request) polls only when it is the one (worker.Waiting)
_waiting = [0]
_waiting_lock = threading.Lock()


class Zygote:
    """The fork server (worker.py's `zygote`), started once per process."""

    def __init__(self):
        from .. import forkserver
        try:
            self.process, self.sock, self.directory = forkserver.adopt() or forkserver.spawn()
        except OSError as e:
            raise runtime_error(f"the backend worker server did not start: {e}") from None
        self.owner = os.getpid()
        self.gone = False  # its socket failed: it ended, or ends
        self.lock = threading.Lock()
        self.imported = {"onnxruntime"}
        # replies to requests whose callers stopped waiting at their deadline (the server
        # answers in order): read and dropped before the next request's
        self.owed = 0
        try:
            message, _ = receive(self.sock, timeout=_START_TIMEOUT)
        except (OSError, ValueError) as e:
            self.close()
            raise runtime_error(f"the backend worker server did not start: {e}") from None
        if message is None:
            status = self.process.wait()
            self.close()
            raise runtime_error(f"the backend worker server did not start (it ended: {status})")

    def alive(self) -> bool:
        return self.owner == os.getpid() and not self.gone and self.process.poll() is None

    def _ask(self, message: dict, fds: tuple[int, ...] = (), max_fds: int = 0,
             deadline: float | None = None) -> tuple[dict | None, list[int]]:
        """The fork server's answer; (None, []) once it has gone, however it went (its
        socket closed at once or a reply cut short): the next `zygote()` starts another.
        Past `deadline` (time.monotonic()), `timeout`: the server still works at an earlier
        request (a guest's first load of OpenVINO imports it here: ~1 s, which had held
        that call and another instance's worker start 0.25 s past their deadlines)."""
        if not self.lock.acquire(timeout=seconds_left(deadline)):
            raise _server_busy()
        try:
            while self.owed:
                _, passed = receive(self.sock, max_fds=1, timeout=seconds_left(deadline, None))
                for fd in passed:  # a worker forked for a caller gone: it ends with its closed socket
                    os.close(fd)
                self.owed -= 1
            send(self.sock, message, fds)
            try:
                reply, passed = receive(self.sock, max_fds=max_fds, timeout=seconds_left(deadline, None))
            except socket.timeout:
                self.owed += 1
                raise
        except socket.timeout:
            raise _server_busy() from None
        except (OSError, ValueError):
            reply, passed = None, []
        finally:
            self.lock.release()
        if not isinstance(reply, dict):
            self.gone = True
            for fd in passed:
                os.close(fd)
            return None, []
        return reply, passed

    def fork(self, settings: dict, deadline: float | None = None) -> "Worker":
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            try:
                message, fds = self._ask({"op": "fork", **settings}, (theirs.fileno(),), max_fds=1,
                                         deadline=deadline)
            except NnError:
                ours.close()
                raise
        if message is None:
            ours.close()
            raise runtime_error("the backend worker server ended; the next load starts another")
        if "error" in message or not fds:
            ours.close()
            raise runtime_error(f"the backend worker server could not start a worker: {message.get('error')}")
        return Worker(self, ours, int(message["pid"]), fds[0], settings["host_bytes"])

    def preload(self, backend: str, deadline: float | None = None) -> None:
        """Imports a backend's package in the zygote, for the workers it forks from now on
        (by `deadline`, else `timeout`; it goes on there)."""
        if backend in self.imported:
            return
        self.imported.add(backend)  # asked at most once; where it failed, each worker fails to import it and says why
        self._ask({"op": "import", "backend": backend}, deadline=deadline)

    def ended(self, pid: int) -> dict:
        """How a worker ended ("exit 0", "SIGSEGV", ... as `status`) and its peak RSS in
        bytes (`peak_rss`), as the zygote saw when it reaped it; {} if it has not yet, or
        if the zygote has gone too."""
        deadline = time.monotonic() + 0.2  # (said in an error: not worth a guest's wait for the server)
        for _ in range(20):
            try:
                message, _ = self._ask({"op": "status", "pid": pid}, deadline=deadline)
            except NnError:
                return {}
            if message is None:
                return {}
            if message:
                return message
            time.sleep(0.005)
        return {}

    def close(self) -> None:
        """Ends the fork server, its workers with it, and removes their directories (which
        a killed fork server leaves)."""
        import shutil
        self.sock.close()
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _server_busy() -> NnError:
    return NnError(ErrorCode.TIMEOUT, "the backend worker server was still busy at the call's deadline "
                   "(importing a backend, once per process)")


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()


def zygote() -> Zygote:
    global _zygote
    with _zygote_lock:
        if _zygote is None or not _zygote.alive():
            if _zygote is not None and _zygote.owner == os.getpid():
                _zygote.close()  # dead: what it left behind
            _zygote = Zygote()
        return _zygote


@atexit.register
def _close_zygote() -> None:
    if _zygote is not None and _zygote.owner == os.getpid():
        _zygote.close()


class Worker:
    """One backend worker process: its socket, its shared memory, and whether it lives."""

    def __init__(self, server: Zygote, sock: socket.socket, pid: int, pidfd: int, tensor_bytes: int):
        self.server, self.sock, self.pid, self.pidfd = server, sock, pid, pidfd
        self.tensor_bytes = tensor_bytes  # how far into the file the instance's tensors may go (max-host-bytes)
        # how far a compute's extents may go: its inputs copied in (tensors on the heap, made
        # before the worker) and its outputs' room, each bounded by max-host-bytes; unbounded,
        # one 255 MiB input fed back took the file (resident, never shrunk) to 574 MiB
        self.file_bytes = 2 * tensor_bytes + _MIN_SHM
        self.lock = threading.RLock()
        self.dead: str | None = None  # why it is gone
        self.memory = SharedMemory(0)
        self.mapped = 0  # how much of it the worker has mapped; 0: it has not the file yet
        self.dropped: list[tuple[str, int]] = []  # graphs and contexts the host let go of
        self.waiting: dict[str, Waiting] = {}  # per kind of request: how long its replies take

    # --- shared memory ------------------------------------------------------------------
    def sync(self) -> None:
        """The worker maps the whole file, as grown so far (the caller holds the lock)."""
        if self.mapped != self.memory.size:
            fds = () if self.mapped else (self.memory.fd,)
            self._exchange({"op": "shm", "size": self.memory.size}, None, fds)
            self.mapped = self.memory.size

    def tensor(self, n: int) -> np.ndarray | None:
        """Room for a tensor of `n` bytes that the instance makes, in the file its inputs
        cross in, or None (a small tensor: a copy at compute costs less than its extent)."""
        if n < IN_PLACE_FROM or self.dead:
            return None
        return self.memory.tensor(n, self.tensor_bytes)

    # --- requests -------------------------------------------------------------------------
    def request(self, message: dict | bytes, deadline: float | None, op: str | None = None,
                fds: tuple[int, ...] = ()) -> dict | bytes:
        with self.lock:
            if self.dead:
                raise runtime_error(self.dead)
            return self.held_request(message, deadline, op, fds)

    def held_request(self, message: dict | bytes, deadline: float | None, op: str | None = None,
                     fds: tuple[int, ...] = ()) -> dict | bytes:
        """`request` for a caller that holds the lock and has found the worker alive."""
        if self.dropped:
            # swapped, not cleared after: a finalizer's append between the two was lost,
            # and the worker kept that graph (and the address space it is allowed) for good
            dropped, self.dropped = self.dropped, []
            for kind, ident in dropped:
                self._exchange({"op": "drop", kind: ident}, None)
        return self._exchange(message, deadline, fds, op)

    def _exchange(self, message: dict | bytes, deadline: float | None, fds: tuple[int, ...] = (),
                  op: str | None = None) -> dict | bytes:
        """The worker's answer to `message` (a JSON request, or a packed one of kind `op`):
        a dict, or the packed bytes of outputs, which the caller checks."""
        op = op or message["op"]
        try:
            with _waiting_lock:
                alone = not _waiting[0]
                _waiting[0] += 1
            try:
                send(self.sock, message, fds)
                waiting = self.waiting.get(op) or self.waiting.setdefault(op, Waiting())
                reply, _ = waiting.receive(self.sock, timeout=None if deadline is None
                                           else seconds_left(deadline) + DEADLINE_GRACE, alone=alone)
            finally:
                with _waiting_lock:
                    _waiting[0] -= 1
        except MessageTooLarge as e:  # never sent: the worker lives on
            raise too_large(f"the request to the backend worker ({_DOING.get(op, op)}) would take {e}") from None
        except socket.timeout:
            self.kill("the backend worker was stopped at the call's deadline; the graphs it ran for this "
                      "instance are gone (load them again)")
            raise NnError(ErrorCode.TIMEOUT, f"the backend did not finish by the call's deadline; {self.dead}") from None
        except (OSError, ValueError):
            reply = None
        if reply is None:
            self.kill(f"the backend worker ended ({self.server.ended(self.pid).get('status', 'killed')}) while "
                      f"{_DOING.get(op, 'working')}; the graphs it ran for this instance are gone")
            raise runtime_error(self.dead)
        if type(reply) is bytes and op in _OUTPUTS_REPLIES:
            return reply
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
        self.memory.close()


class SharedMemory:
    """The file tensors cross in: a memfd the host made, sealed so that the worker can
    grow it (harmless) but never shrink it under the host's mapping (models cross in
    files of their own: `model_file`).

    An arena: every compute's bytes (inputs copied in, room for outputs) and
    the instance's own large tensors (`tensor`) take extents of it, so a tensor the guest
    made goes to the worker without a second copy (602 KB at each EfficientNet-Lite0
    compute: ~10 us while it is still in cache, more for larger inputs). Extents are 64-byte aligned. The file only grows: a mapping the host
    replaced stays valid for the arrays made on it (the same file pages)."""

    def __init__(self, size: int):
        self.fd = os.memfd_create("wasinn-tensors", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self.size = _pages(max(size, _MIN_SHM))
        os.ftruncate(self.fd, self.size)
        fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        self.map = mmap.mmap(self.fd, self.size)
        self.free: list[tuple[int, int]] = [(0, self.size)]  # (offset, size), in order of offset
        self.lock = threading.Lock()
        self.arrays: dict[int, tuple[weakref.ref, int]] = {}  # id of a `tensor` array -> it, its offset
        # extents whose arrays died: finalizers run on any thread, at any allocation (the
        # garbage collector), so they only queue here and the next taker frees them
        self.released: collections.deque[tuple[int, int]] = collections.deque()

    def take(self, n: int, within: int | None = None) -> int | None:
        """The offset of a new extent of `n` bytes; the file grows when none is free, but
        not for an extent that would end past `within` (then None)."""
        n = _aligned(max(n, 1))
        with self.lock:
            self._free_released()
            for i, (start, size) in enumerate(self.free):
                if size >= n:
                    if within is not None and start + n > within:
                        return None
                    self.free[i:i + 1] = [(start + n, size - n)] if size > n else []
                    return start
            last = self.free[-1] if self.free and sum(self.free[-1]) == self.size else None
            start = last[0] if last else self.size
            if within is not None and start + n > within:
                return None
            # a quarter more (growth is a new mapping on both sides), but not past `within`: the
            # file, pages resident once written, had gone a quarter past its bound
            more = start + n + self.size // 4
            self._grow(more if within is None else min(more, within))
            if last:
                self.free.pop()
            if self.size > start + n:
                self.free.append((start + n, self.size - start - n))
            return start

    def give_back(self, offset: int, n: int) -> None:
        with self.lock:
            self._free(offset, _aligned(max(n, 1)))

    def _free(self, offset: int, n: int) -> None:
        i = bisect.bisect(self.free, (offset,))
        if i < len(self.free) and self.free[i][0] == offset + n:  # joins the next
            n += self.free.pop(i)[1]
        if i and sum(self.free[i - 1]) == offset:  # and the one before
            offset, n = self.free[i - 1][0], self.free[i - 1][1] + n
            i -= 1
            self.free.pop(i)
        self.free.insert(i, (offset, n))

    def _free_released(self) -> None:
        while self.released:
            self._free(*self.released.popleft())

    def tensor(self, n: int, within: int) -> np.ndarray | None:
        """A uint8 array of `n` bytes in this file, for a tensor of the instance: the worker
        reads it in place (`offset_of`) where it is an input. Its extent is freed when the
        array and every view of it are gone. None where it would end past `within`: the
        instance's tensors are bounded by max-host-bytes, but a first-fit arena can
        fragment, so the file they take is bounded too."""
        offset = self.take(n, within)
        if offset is None:
            return None
        array = np.frombuffer(self.map, np.uint8, n, offset)
        key = id(array)
        self.arrays[key] = (weakref.ref(array, functools.partial(_forget, self.arrays, self.released, key,
                                                                  offset, _aligned(max(n, 1)))), offset)
        return array

    def offset_of(self, data) -> int | None:
        """Where `data` lies in this file, if it is an array `tensor` made."""
        entry = self.arrays.get(id(data))
        return entry[1] if entry is not None and entry[0]() is data else None

    def _grow(self, size: int) -> None:
        self.size = _pages(size)
        os.ftruncate(self.fd, self.size)
        old, self.map = self.map, mmap.mmap(self.fd, self.size)
        try:
            old.close()
        except BufferError:
            pass  # arrays still use it; it goes with them

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:
            pass
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def model_file(builders: list, deadline: float | None = None) -> int:
    """A memfd of `builders` one after another, nothing else: a model crosses to its
    worker in a file of its own, which the worker maps, and which a backend that reads
    model files loads by its path (spill.ModelFile: onnxruntime, EfficientNet-Lite0 ~10 ms
    sooner than from bytes, which its binding copies twice). Written a slice at a time,
    none begun past `deadline` (copies.slices: a 1 GB model loaded just before its
    deadline had run 0.36 s past it)."""
    offset, fd = 0, None
    try:
        fd = os.memfd_create("wasinn-model", os.MFD_CLOEXEC)
        # through the file, which fills fresh pages at twice the speed of faulting them in
        # through a mapping (18.6 MB: 6.7 vs 11-14 ms)
        for chunk in builders:
            view = memoryview(chunk).cast("B")
            for at, size in slices(view.nbytes, deadline, "the model's bytes to the backend worker"):
                part = view[at:at + size]
                while part:
                    n = os.pwrite(fd, part, offset)
                    part, offset = part[n:], offset + n
    except BaseException as e:  # the deadline's `timeout` among them: the file goes either way
        if fd is not None:
            os.close(fd)
        if isinstance(e, OSError):
            raise too_large(f"no room for the model's bytes on their way to the backend worker: {e}") from None
        raise
    return fd


def _forget(arrays: dict, released: collections.deque, key: int, offset: int, n: int, _ref=None) -> None:
    """A `SharedMemory.tensor` array died: its extent is freed by the next taker (a
    weakref's callback runs on any thread, at any allocation: it only queues). Not a
    method: the weakref, kept in `arrays`, would hold the SharedMemory in a cycle."""
    arrays.pop(key, None)
    released.append((offset, n))


def _pages(n: int) -> int:
    return (n + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE


_OUTPUTS_REPLIES = ("compute", "fetch")  # the requests answered by packed outputs
_DOING = {"load": "loading the model", "compute": "computing", "init": "making an execution context",
          "fetch": "handing over the outputs", "shm": "computing"}  # (a compute maps the tensors' file first)


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
        # before the checks below: a graph refused for what the worker says of it is
        # dropped there too (kept, nine of them took a worker's memory to its cap)
        self._finalizer = weakref.finalize(self, worker.forget, "graph", self.ident)
        self.backend = f"{_text(reply.get('backend'))} (isolated)"
        self.target = target
        self.inputs = _specs(reply.get("inputs"))
        self.outputs = _specs(reply.get("outputs"))
        self.model_bytes = 0

    @property
    def gone(self) -> bool:
        return self.worker.dead is not None

    def init_execution_context(self, deadline: float | None = None) -> "IsolatedContext":
        reply = self.worker.request({"op": "init", "graph": self.ident}, deadline)
        return IsolatedContext(self, _count(reply.get("context")))


class IsolatedContext:
    in_worker = True  # its inputs are read by the worker (nn.compute_bound)

    def __init__(self, graph: IsolatedGraph, ident: int):
        self.graph = graph
        self.ident = ident
        # room for the outputs whose size the model fixes, so that they come back at once
        self.room = sum(n + _ALIGN for s in graph.outputs if (n := s.static_nbytes()) is not None)
        # the last outputs the worker described, checked, and the room they were checked against
        self._last_reply, self._last_room, self._last_outputs = None, None, []
        weakref.finalize(self, graph.worker.forget, "context", ident)

    def compute(self, inputs: list[HostTensor], deadline: float | None = None,
                accept_outputs: AcceptOutputs = accept_all,
                into: Sequence[memoryview] | None = None) -> list[tuple[str, HostTensor]]:
        worker = self.graph.worker
        with worker.lock:
            if worker.dead:
                raise runtime_error(worker.dead)
            memory = worker.memory
            taken = []  # extents of this call: inputs copied in, room for outputs

            def take(n: int, what: str) -> int:
                offset = memory.take(n, worker.file_bytes)
                if offset is None:
                    raise too_large(f"{what} ({n} bytes) would take the shared memory the backend worker reads "
                                    f"past {worker.file_bytes} bytes (twice max-host-bytes, --max-host-bytes)")
                taken.append((offset, n))
                return offset
            try:
                # one extent for the inputs' copies and the outputs' room: an extent per input
                # cost a trivial model's round trip ~10 us of the arena's bookkeeping
                placed = [memory.offset_of(t.data) for t in inputs]
                copies = sum(_aligned(t.nbytes) for t, offset in zip(inputs, placed) if offset is None)
                at = take(copies + self.room, "the inputs' copies and the room for the outputs")
                layout = []
                for t, offset in zip(inputs, placed):
                    if offset is None:
                        offset, at = at, at + _aligned(t.nbytes)
                        put(memory.map, offset, t.data, deadline, "an input into the backend worker's shared memory")
                    layout.append((offset, t.nbytes, t.ty, t.dims))
                out, room = at, self.room
                worker.sync()
                reply = worker.held_request(pack_compute(self.ident, deadline, out, room, layout, not _waiting[0]),
                                            deadline, "compute")
                if type(reply) is dict:  # the outputs need more room than their declared sizes
                    if "need" not in reply:
                        worker.kill("the backend worker sent a malformed reply")
                        raise runtime_error(worker.dead)
                    sizes = _sizes(reply.get("sizes"))
                    accept_outputs(sizes)
                    room = sum(_aligned(n) for _, n in sizes)
                    out = take(room, "the room for the outputs")
                    worker.sync()
                    reply = worker.held_request({"op": "fetch", "out": out, "room": room}, deadline)
                if reply == self._last_reply and self._last_room == (out, room):  # a plan's answer
                    outputs = self._last_outputs  # (worker.Worker.compute), checked before
                else:
                    outputs = self._outputs(reply, out, room)
                    self._last_reply, self._last_room, self._last_outputs = reply, (out, room), outputs
                accept_outputs([(name, n) for name, _, _, _, n in outputs])
                return [(name, HostTensor(dims, ty, np.frombuffer(memory.map, np.uint8, n, offset).copy()))
                        for name, ty, dims, offset, n in outputs]
            finally:
                for offset, n in taken:
                    memory.give_back(offset, n)

    def _outputs(self, reply, out: int, room: int) -> list:
        """The worker's account of its outputs, held to what the host can trust: each
        within the room this call took for them (past it lie the instance's other tensors)."""
        try:
            if type(reply) is not bytes:
                raise ValueError("not outputs")
            outputs = unpack_outputs(reply, _MAX_RANK)
            for _, ty, dims, offset, n in outputs:
                if not out <= offset <= offset + n <= out + room or product(dims) * DTYPES[ty].itemsize != n:
                    raise ValueError
        except ValueError:
            self.graph.worker.kill("the backend worker described its outputs wrongly")
            raise runtime_error(self.graph.worker.dead) from None
        return outputs


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


__all__ = ["IsolatedGraph", "SharedMemory", "Worker", "zygote"]

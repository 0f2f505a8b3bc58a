"""The other side of isolated.py: a fork server and the backend workers it forks.

`python -m wasinn.backends.worker FD` is the fork server (the "zygote"): it imports
numpy and onnxruntime once (0.1-0.5 s that no worker pays again), then waits on the
socket FD for the host's requests. Each `fork` request brings a socket for a new
worker; the child confines itself (confine.py) in a fresh private directory and serves
that socket until the host closes it or kills it; the zygote reaps it, removes its
directory and keeps its exit status for the host to ask about.

A worker holds the graphs one instance loaded from its own bytes (or, under `--isolate
all`, the operator's graphs) and runs them. Requests and replies are JSON, but for a
compute and the outputs that answer it, which are packed (`pack_compute`); model bytes
and tensors cross in a shared memory file the host made and sealed against shrinking
(so nothing here can make the host's mapping fault). Replies carry only plain values:
the host trusts nothing a worker says beyond checking it.
"""
from __future__ import annotations

import array
import json
import mmap
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import traceback
from typing import Sequence

from ..lazy import numpy as np

from .._enums import ExecutionTarget, GraphEncoding, TensorType
from ..errors import NnError, too_large
from ..tensors import HostTensor

# The largest request or reply (bigger payloads go through shared memory): under the
# socket send buffer every Linux gives by default (net.core.wmem_default, 208 KiB), which
# a message on a SOCK_SEQPACKET socket must fit in. What a model declares can describe
# itself past it (20 outputs with names of 100 KB): `send` refuses that with
# MessageTooLarge, which each side answers with a one-line error.
MAX_MESSAGE = 192 << 10
# How long a worker polls for the host's next request, and the host for a worker's reply,
# before sleeping (see `receive`): at least SPIN_SECONDS, twice as long as the last wait
# took, and not at all past SPIN_UP_TO (see `Waiting`).
SPIN_SECONDS = 100e-6
SPIN_UP_TO = 1e-3
# A worker caps its address space at its baseline plus its budget plus this, for the
# thread stacks and allocator arenas a backend maps when it starts its threads.
ADDRESS_SPACE_SLACK = 512 << 20
# A backend's failure with the worker's peak address space this close to its cap is
# reported as the cap's.
NEAR_CAP = 64 << 20
# Outputs are bound into shared memory for the backend to write there (IOBinding) when a
# graph's fixed outputs come to this much: binding costs ~33 us a call in Python (a
# trivial model's round trip went from 38 to 72 us), a copy saved ~15 us a MiB.
BIND_OUTPUTS_FROM = 2 << 20


class MessageTooLarge(ValueError):
    def __init__(self, n: int):
        super().__init__(f"{n} bytes; the limit is {MAX_MESSAGE}")
        self.n = n


def send(sock: socket.socket, message: dict | bytes, fds: tuple[int, ...] = ()) -> None:
    data = message if isinstance(message, bytes) else json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise MessageTooLarge(len(data))
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


# A compute request and the outputs that answer it, one exchange per inference, cross
# packed rather than as JSON: after a model's run has left both processes' caches cold,
# encoding and decoding them as JSON took ~90 us of EfficientNet-Lite0's round trip.
_COMPUTE = struct.Struct("<cdIQQI")  # b"C", deadline (NaN: none), context, room for outputs (offset, bytes), inputs
_INPUT = struct.Struct("<QQBB")      # offset in shared memory, bytes, type, rank; the dims follow
_OUTPUTS = struct.Struct("<cI")      # b"O", outputs
_OUTPUT = struct.Struct("<QQBBI")    # offset, bytes, type, rank, the name's UTF-8 bytes; name, dims follow
_TYPES = tuple(TensorType)
_TYPE_CODES = {ty: code for code, ty in enumerate(_TYPES)}
_NONE = float("nan")


def pack_compute(context: int, deadline: float | None, out: int, room: int,
                 inputs: list[tuple[int, int, TensorType, Sequence[int]]], alone: bool = True) -> bytes:
    """`alone`: no other call of the host waits on a worker, so this one's worker may poll
    for the next request (see `Waiting`); tagged b"C", else b"c"."""
    parts = [_COMPUTE.pack(b"C" if alone else b"c", _NONE if deadline is None else deadline, context, out, room,
                           len(inputs))]
    for offset, n, ty, dims in inputs:
        parts.append(_INPUT.pack(offset, n, _TYPE_CODES[ty], len(dims)))
        parts.append(struct.pack(f"<{len(dims)}Q", *dims))
    return b"".join(parts)


# Where a compute request's bytes go on past its tag and deadline: the rest is what it
# asks, a worker's key to the plan of a layout it has run before (Worker.compute)
_LAYOUT_FROM = struct.calcsize("<cd")


def compute_header(data: bytes) -> tuple[int, float | None]:
    """A compute request's context and deadline, its inputs unread."""
    _, deadline, context, _, _, _ = _COMPUTE.unpack_from(data)
    return context, None if deadline != deadline else deadline


def unpack_compute(data: bytes) -> tuple[int, float | None, int, int, list[tuple[int, int, TensorType, tuple]]]:
    _, deadline, context, out, room, count = _COMPUTE.unpack_from(data)
    at, inputs = _COMPUTE.size, []
    for _ in range(count):
        offset, n, ty, rank = _INPUT.unpack_from(data, at)
        at += _INPUT.size
        inputs.append((offset, n, _TYPES[ty], struct.unpack_from(f"<{rank}Q", data, at)))
        at += 8 * rank
    return context, None if deadline != deadline else deadline, out, room, inputs


def pack_outputs(outputs: list[tuple[str, TensorType, Sequence[int], int, int]]) -> bytes:
    parts = [_OUTPUTS.pack(b"O", len(outputs))]
    for name, ty, dims, offset, n in outputs:
        encoded = name.encode()
        parts.append(_OUTPUT.pack(offset, n, _TYPE_CODES[ty], len(dims), len(encoded)))
        parts.append(encoded)
        parts.append(struct.pack(f"<{len(dims)}Q", *dims))
    return b"".join(parts)


def unpack_outputs(data: bytes, max_rank: int) -> list[tuple[str, TensorType, tuple, int, int]]:
    """A worker's outputs as it describes them; ValueError where the bytes are not such
    a description (the caller checks what they say)."""
    try:
        tag, count = _OUTPUTS.unpack_from(data)
        if tag != b"O":
            raise ValueError("not outputs")
        at, outputs = _OUTPUTS.size, []
        for _ in range(count):
            offset, n, ty, rank, length = _OUTPUT.unpack_from(data, at)
            if rank > max_rank:
                raise ValueError(f"an output of rank {rank}")
            at += _OUTPUT.size
            name = data[at:at + length].decode()
            at += length
            outputs.append((name, _TYPES[ty], struct.unpack_from(f"<{rank}Q", data, at), offset, n))
            at += 8 * rank
        if at != len(data):
            raise ValueError("bytes after the outputs")
        return outputs
    except (struct.error, IndexError, UnicodeDecodeError) as e:
        raise ValueError(str(e)) from None


def receive(sock: socket.socket, max_fds: int = 0, spin: float = 0.0,
            timeout: float | None = None) -> tuple[dict | None, list[int]]:
    """The next message and the descriptors that came with it; (None, []) at EOF;
    `socket.timeout` past `timeout` seconds (None: none). The socket stays blocking.

    With `spin` (seconds), it polls that long before it sleeps: a process woken from sleep
    on this kind of machine takes ~20 us to run again, most of an idle round trip (a bare
    socket echo between two processes: ~40 us idle, ~9 us busy), so each side of a
    call-and-reply spins for about as long as the other side takes to answer. Into a
    buffer kept per thread, not a fresh one per message."""
    buffer = _buffer()
    ancillary_size = socket.CMSG_SPACE(4 * max_fds) if max_fds else 0
    received = None
    if spin:
        until = time.perf_counter() + spin
        while received is None and time.perf_counter() < until:
            try:
                received = sock.recvmsg_into([buffer], ancillary_size, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
        if timeout is not None:
            timeout = max(0.0, timeout - spin)
    if received is None:
        if timeout is not None and not select.select([sock], [], [], timeout)[0]:
            raise socket.timeout("no message in time")
        received = sock.recvmsg_into([buffer], ancillary_size)
    return _unpack(received)


def _buffer():
    buffer = getattr(_local, "buffer", None)
    if buffer is None:
        buffer = _local.buffer = bytearray(MAX_MESSAGE)
    return buffer


def _unpack(received):
    buffer = _local.buffer
    n, ancillary, flags, _ = received
    fds = [fd for level, kind, data in ancillary if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS
           for fd in array.array("i", data[:len(data) - len(data) % 4])]
    if not n or flags & socket.MSG_TRUNC:  # the end, or a message no side sends: the other side is broken
        for fd in fds:
            os.close(fd)
        if n:
            raise ValueError(f"a message over {MAX_MESSAGE} bytes")
        return None, []
    if buffer[0] == _JSON:
        try:
            return json.loads(buffer[:n]), fds
        except (ValueError, RecursionError):  # a broken worker's (RecursionError: nested past Python's stack)
            pass
    # a packed compute request or outputs (`pack_compute`, `pack_outputs`), or bytes that
    # are no message, which the receiver finds malformed
    return bytes(buffer[:n]), fds


_JSON = ord("{")


_local = threading.local()


class Waiting:
    """Polls for the other side's next message as long as the last one took (twice that,
    from SPIN_SECONDS up to SPIN_UP_TO), and not while it computes for longer: polling
    then takes a core from its backend's threads (on 2 cores, a 100 us poll at the start
    of each EfficientNet-Lite0 compute cost the host more than the wake-up it saved).
    Polling only while the last wait was under 200 us had two steady states: once one
    wait passed it, both sides slept, each one's wait took the other's wake-up too
    (40-110 us on a VM) and stayed past it: a trivial model's round trip 175-297 us
    instead of 101-127. Only while one call of the host waits on a worker (`alone`):
    four instances computing it in four threads, their workers polling up to 1 ms
    each, did 4,642 computes a second together instead of 7,682. One per kind of wait."""

    def __init__(self):
        self.last = 0.0  # how long the last wait took

    def receive(self, sock: socket.socket, max_fds: int = 0, timeout: float | None = None,
                alone: bool = True) -> tuple[dict | bytes | None, list[int]]:
        start = time.perf_counter()
        spin = min(max(2 * self.last, SPIN_SECONDS), SPIN_UP_TO) if alone and self.last < SPIN_UP_TO else 0.0
        try:
            return receive(sock, max_fds, spin, timeout)
        finally:
            self.last = time.perf_counter() - start


# --- the fork server ------------------------------------------------------------------
_children: dict[int, str] = {}      # live worker pid -> its private directory
_statuses: dict[int, dict] = {}     # ended worker pid -> how it ended ("exit 0", "SIGSEGV") and its peak RSS


def _reap(*_) -> None:
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        directory = _children.pop(pid, None)
        if directory:
            shutil.rmtree(directory, ignore_errors=True)
        how = (f"exit {os.WEXITSTATUS(status)}" if os.WIFEXITED(status)
               else _signal_name(os.WTERMSIG(status)) if os.WIFSIGNALED(status) else "ended")
        _statuses[pid] = {"status": how, "peak_rss": usage.ru_maxrss << 10}
        while len(_statuses) > 1024:
            _statuses.pop(next(iter(_statuses)))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal, which the enum names only at its ends
        return f"signal {number}"


def zygote(sock: socket.socket, workers: str) -> None:
    # what every worker needs, imported once here; its sessions' threads spin after a run,
    # for the next one, as they do in process (EfficientNet-Lite0 isolated: ~0.07 ms a
    # call closer to in process than with them stopped at once)
    from . import onnxruntime
    onnxruntime.default_intra_op_threads()  # read once here, for every worker
    # No parent-death signal here: it follows the thread that started this process, not
    # the process. The host's end closes the socket instead, and this loop ends; its
    # workers' own signal follows this process. Every worker's private directory lies in
    # `workers`, which the host made and removes after this process (killed at the host's
    # exit, or dead), as this process does when the host goes first: none is left behind
    # in TMPDIR, however either side ends.
    signal.signal(signal.SIGCHLD, _reap)
    try:
        send(sock, {"ready": os.getpid()})
        _serve_forks(sock, workers)
    finally:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for pid in list(_children):
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        shutil.rmtree(workers, ignore_errors=True)


def _serve_forks(sock: socket.socket, workers: str) -> None:
    while True:
        try:
            message, fds = receive(sock, max_fds=1)
        except InterruptedError:
            continue
        if message is None:
            return
        op = message["op"]
        if op == "fork":
            try:
                _fork(sock, workers, message, fds[0])
            except OSError as e:  # no room for its directory, no processes left...: this load fails, not the next
                send(sock, {"error": f"{type(e).__name__}: {e}"})
            finally:
                os.close(fds[0])
        elif op == "status":
            _reap()
            send(sock, _statuses.get(message["pid"]) or {})
        elif op == "import":  # a backend's package, so that the workers forked later have it
            try:
                from . import KINDS
                __import__(f"{__package__}.{message['backend']}")
                send(sock, {"imported": KINDS[message["backend"]].package})
            except Exception as e:
                send(sock, {"error": f"{type(e).__name__}: {e}"})


def _fork(sock: socket.socket, workers: str, settings: dict, fd: int) -> None:
    directory = tempfile.mkdtemp(prefix="worker-", dir=workers)
    try:
        pid = os.fork()
    except OSError:
        os.rmdir(directory)
        raise
    if pid == 0:
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _run_worker(socket.socket(fileno=fd), directory, settings)
    _children[pid] = directory
    # a worker that died at once may be reaped before this (ProcessLookupError): the
    # load fails, and its status says why
    pidfd = os.pidfd_open(pid)
    try:
        send(sock, {"pid": pid}, (pidfd,))
    finally:
        os.close(pidfd)


def _run_worker(sock: socket.socket, directory: str, settings: dict) -> None:
    code = 0
    try:
        Worker(sock, directory, settings).serve()
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)


# --- a worker ---------------------------------------------------------------------------
class Worker:
    def __init__(self, sock: socket.socket, directory: str, settings: dict):
        from . import confine
        self.sock = sock
        self.settings = settings
        os.chdir(directory)
        # spill.py writes large models to TMPDIR; packages that keep files in HOME (OpenVINO's
        # telemetry id) find it here too, the one place the worker may write
        os.environ["TMPDIR"] = os.environ["HOME"] = tempfile.tempdir = directory
        self.baseline = _address_space()
        self.peak = _address_space("VmPeak")  # as of the last failure (_near_cap)
        self.budget = settings["host_bytes"]
        self.per_graph = settings["backend_memory"]
        confine.limit_resources(self._cap(1), self._cap(settings["max_graphs"]), settings["file_size"])
        confine.drop_capabilities()
        confine.die_with_parent()
        confine.landlock(confine.readable_paths(), [directory, *confine.gpu_devices()])
        confine.seccomp()
        self.shm: mmap.mmap | None = None
        self.shm_fd: int | None = None
        self.graphs: dict[int, object] = {}
        self.contexts: dict[int, object] = {}
        self.output_sizes: dict[int, list[int]] = {}  # per context whose outputs are bound (BIND_OUTPUTS_FROM)
        self.bound = False  # whether the pending outputs were bound into shared memory
        self.pending: list | None = None  # outputs computed, waiting for room in shared memory
        self.plans: dict[int, dict[bytes, _Plan]] = {}  # per context: layouts run before (compute)
        self.fixed: set[int] = set()  # contexts whose outputs' sizes the model fixes (and not bound)
        self.backends: dict[tuple, object] = {}
        self.next_id = 1

    def _cap(self, graphs: int) -> int:
        return self.baseline + ADDRESS_SPACE_SLACK + self.budget + self.per_graph * graphs

    def serve(self) -> None:
        waiting, alone = Waiting(), True
        while True:
            message, fds = waiting.receive(self.sock, max_fds=1, alone=alone)
            if message is None:
                return
            alone = type(message) is not bytes or message[:1] != b"c"
            try:
                reply = (self.compute(message) if type(message) is bytes
                         else getattr(self, "op_" + message["op"])(message, fds))
            except MemoryError:
                from . import confine
                reply = _error("too-large", f"the backend worker ran out of its memory cap "
                               f"({(confine.address_space_cap() or 0) >> 20} MiB of address space)")
            except Exception as e:
                reply = _failure(e)
                if reply["error"] == "runtime-error":
                    reply["message"] += self._near_cap()
            try:
                send(self.sock, reply)
            except MessageTooLarge as e:
                if type(reply) is dict:  # a graph the host will never hear of
                    self.graphs.pop(reply.get("graph"), None)
                send(self.sock, _error("too-large", f"the backend worker's answer would take {e}: the model "
                                       "describes its inputs and outputs (their names and shapes) at that length"))

    def _near_cap(self) -> str:
        """What a backend's bare failure ("failed to invoke") leaves unsaid when its
        malloc met the address-space cap: said when the worker's peak rose since the last
        failure (read only on failures: no cost to a compute) to within NEAR_CAP of the
        cap; a failed allocation leaves no other trace. (Loading OpenVINO's or LiteRT's
        libraries and threads alone takes a worker hundreds of MiB towards its cap.)"""
        from . import confine
        before, self.peak = self.peak, _address_space("VmPeak")
        cap = confine.address_space_cap()
        if cap is None or self.peak <= before or self.peak < cap - NEAR_CAP:
            return ""
        # (its peak may lie above a cap that came down as graphs went: it reached that cap)
        return (f" (the backend worker's address space reached {min(self.peak, cap) >> 20} MiB of its "
                f"{cap >> 20} MiB cap: max-backend-memory per graph, --max-backend-memory, and max-host-bytes)")

    def op_shm(self, message: dict, fds: list[int]) -> dict:
        if fds:
            if self.shm_fd is not None:
                os.close(self.shm_fd)
            self.shm_fd = fds[0]
        self.plans.clear()  # their feeds are views of the mapping that goes
        if self.shm is not None:
            try:
                self.shm.close()
            except BufferError:
                pass  # outputs written in place and still pending hold it; it goes with them
        self.shm = mmap.mmap(self.shm_fd, message["size"])
        return {}

    def op_load(self, message: dict, fds: list[int]) -> dict:
        from . import KINDS, Deferred, spill
        sizes = message["sizes"]
        # the model's bytes in a file of their own (isolated.model_file); an empty one maps nothing
        model = spill.ModelFile(fds[0], sum(sizes)) if sum(sizes) else os.close(fds[0])
        try:
            key = (message["kind"], message["encoding"], message["threads"], message["precision"])
            backend = self.backends.get(key)
            if backend is None:
                backend = self.backends[key] = Deferred(KINDS[message["kind"]], GraphEncoding(message["encoding"]),
                                                        message["threads"], self.per_graph, message["precision"])
            self._recap(1)
            graph = backend.load(model.builders(sizes) if model else [b""] * len(sizes),
                                 ExecutionTarget(message["target"]))
            gid = self._new_id()
            self.graphs[gid] = graph
        finally:
            if model:
                model.close()
            self._recap()
        return {"graph": gid, "backend": graph.backend, "inputs": [_spec(s) for s in graph.inputs],
                "outputs": [_spec(s) for s in graph.outputs]}

    def op_init(self, message: dict, fds: list[int]) -> dict:
        cid = self._new_id()
        graph = self.graphs[message["graph"]]
        self.contexts[cid] = graph.init_execution_context()
        sizes = [spec.static_nbytes() for spec in graph.outputs]
        if all(sizes) and sum(sizes) >= BIND_OUTPUTS_FROM:  # none dynamic, none empty, large
            self.output_sizes[cid] = sizes
        elif None not in sizes:
            self.fixed.add(cid)
        return {"context": cid}

    def _recap(self, loading: int = 0) -> None:
        """The address-space cap of the live graphs (and one `loading`), at least one's:
        a cap left raised after its graphs went gave the one graph left that of 64."""
        from . import confine
        confine.set_address_space(self._cap(max(1, len(self.graphs) + loading)))

    def op_drop(self, message: dict, fds: list[int]) -> dict:
        if self.graphs.pop(message.get("graph"), None) is not None:
            self._recap()
        self.contexts.pop(message.get("context"), None)
        self.output_sizes.pop(message.get("context"), None)
        self.fixed.discard(message.get("context"))
        self.plans.pop(message.get("context"), None)
        return {}

    def compute(self, request: bytes) -> dict | bytes:
        """A packed compute request. The first run of a layout (where the inputs lie, their
        types and dims, where the outputs go) goes the general way; where the backend can
        prepare a run (onnxruntime) and the outputs' sizes are fixed, it leaves a plan that
        runs the same layout again with the feeds bound and the answer packed already:
        ~60 us less of Python, running from caches the model's last run emptied."""
        context, deadline = compute_header(request)
        plans = self.plans.get(context)
        plan = plans.get(request[_LAYOUT_FROM:]) if plans else None
        if plan is not None:
            results = plan.run(deadline)
            if all(type(r) is np.ndarray and r.nbytes == n and r.flags.c_contiguous for r, n in zip(results, plan.sizes)):
                for r, offset, n in zip(results, plan.offsets, plan.sizes):
                    self.shm[offset:offset + n] = memoryview(r).cast("B")
                return plan.reply
            # outputs not of the sizes they had (a guest's model may say anything): this
            # context goes the general way from now on, as in process
            self.plans.pop(context)
            self.fixed.discard(context)
        _, _, out, room, layout = unpack_compute(request)
        inputs = [HostTensor(dims, ty, np.frombuffer(self.shm, np.uint8, n, offset)) for offset, n, ty, dims in layout]
        reply = self._compute(context, deadline, out, room, inputs)
        if type(reply) is bytes and context in self.fixed:
            self._plan(context, request[_LAYOUT_FROM:], inputs, reply)
        return reply

    def _plan(self, context: int, key: bytes, inputs: list[HostTensor], reply: bytes) -> None:
        prepare = getattr(self.contexts[context], "prepare", None)
        run = prepare(inputs) if prepare is not None else None
        if run is None:  # a backend or graph that cannot: not asked again
            self.fixed.discard(context)
            return
        outputs = unpack_outputs(reply, 64)
        plans = self.plans.setdefault(context, {})
        if len(plans) >= _PLANS:  # a guest whose layouts keep changing: the newest only
            plans.clear()
        plans[key] = _Plan(run, [offset for _, _, _, offset, _ in outputs], [n for *_, n in outputs], reply)

    def _compute(self, context: int, deadline: float | None, out: int, room: int,
                 inputs: list[HostTensor]) -> dict | bytes:
        self.pending = None
        limit = self.settings["output_bytes"]

        def accept(sizes: list[tuple[str, int]]) -> None:
            for name, n in sizes:
                if n > limit:
                    raise too_large(f"output {name!r} is {n} bytes; the limit is {limit} "
                                    "(max-output-bytes, --max-output-bytes)")
        into = self._room(context, out, room)
        self.bound = into is not None
        try:
            self.pending = self.contexts[context].compute(inputs, deadline=deadline, accept_outputs=accept, into=into)
        finally:
            del into  # no view of the shared memory may outlive the request (op_shm remaps it)
        return self.op_fetch({"out": out, "room": room}, [])

    def _room(self, context: int, out: int, room: int) -> list[memoryview] | None:
        """Where the outputs of a graph that fixes their sizes go in shared memory (the
        places op_fetch puts them), for the backend to write them there."""
        sizes = self.output_sizes.get(context)
        if sizes is None:
            return None
        offsets = _layout(out, sizes)
        if offsets[-1] + sizes[-1] > min(out + room, len(self.shm)):
            return None
        view = memoryview(self.shm)
        return [view[offset:offset + n] for offset, n in zip(offsets, sizes)]

    def op_fetch(self, message: dict, fds: list[int]) -> dict | bytes:
        """The pending outputs into the room the host took for them (`room` bytes from
        `out` on), each 64-byte aligned, or how much room they need: past it lie the
        instance's other tensors. Outputs the backend wrote there already stay."""
        out, room = message["out"], message["room"]
        offsets = _layout(out, [t.nbytes for _, t in self.pending])
        if offsets and offsets[-1] + self.pending[-1][1].nbytes > min(out + room, len(self.shm)):
            return {"need": offsets[-1] + self.pending[-1][1].nbytes,
                    "sizes": [[name, t.nbytes] for name, t in self.pending]}
        base = np.frombuffer(self.shm, np.uint8).ctypes.data if self.bound else None
        outputs = []
        for (name, t), offset in zip(self.pending, offsets):
            if base is None or not (isinstance(t.data, np.ndarray) and t.data.ctypes.data == base + offset):
                self.shm[offset:offset + t.nbytes] = memoryview(t.data).cast("B")
            outputs.append((name, t.ty, t.dims, offset, t.nbytes))
        self.pending = None
        return pack_outputs(outputs)

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


# Plans kept per context: a guest's tensors usually lie where the last ones lay
_PLANS = 4


class _Plan:
    """A layout's run with its feeds bound (`Preparable.prepare`), where its outputs go in
    shared memory, their sizes, and the packed answer that describes them."""

    __slots__ = ("run", "offsets", "sizes", "reply")

    def __init__(self, run, offsets: list[int], sizes: list[int], reply: bytes):
        self.run, self.offsets, self.sizes, self.reply = run, offsets, sizes, reply


def _layout(start: int, sizes: list[int]) -> list[int]:
    """Offsets of tensors of `sizes` placed one after another from `start`, each 64-byte aligned."""
    offsets, end = [], start
    for n in sizes:
        end = (end + 63) & ~63
        offsets.append(end)
        end += n
    return offsets


def _spec(spec) -> list:
    return [spec.name, None if spec.ty is None else spec.ty.value, spec.type_name,
            None if spec.shape is None else list(spec.shape)]


def _error(code: str, message: str) -> dict:
    # a guest gets one line: LiteRT's and OpenVINO's messages run over several
    message = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    return {"error": code, "message": message[:65536]}


def _failure(e: Exception) -> dict:
    if isinstance(e, NnError):
        return _error(e.code.value, e.message)
    return _error("runtime-error", f"{type(e).__name__}: {e}")


def _address_space(field: str = "VmSize") -> int:
    with open("/proc/self/status") as f:
        return next((int(line.split()[1]) << 10 for line in f if line.startswith(field + ":")), 0)


if __name__ == "__main__":
    zygote(socket.socket(fileno=int(sys.argv[1])), sys.argv[2])

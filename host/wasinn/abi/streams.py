"""A guest's stdout and stderr, written to this process's own within its call's deadline.

wasmtime's inherited streams write in native code: a write the reader does not take (a
pipe nobody drains, a terminal scrolled back) blocks there, out of reach of the epoch
interrupt, and held the call until the reader drained it or, under `wasinn run`, until
the deadline watchdog ended the process 1 s past the deadline (measured: a guest writing
10 MB to a pipe nobody read, `--deadline 1s`: 2.16 s, the process gone). Here the
guest's streams are wasmtime's custom ones: each write waits for the descriptor to take
bytes (poll) no longer than what is left of the call, then writes at most PIPE_BUF
bytes at a time, which a pipe that polls writable takes without blocking; past the
deadline the guest's write fails (ETIMEDOUT), and its next step meets the deadline's
trap. Where the reader keeps up, the bytes are the same, in the same order, as an
inherited stream's.

wasmtime calls a custom stream from its own threads, the last time as it drops the
stream, a moment after its store closes: a stream still alive as the interpreter
finalizes would call into a Python half torn down (a Rust panic at exit). So at exit
(`atexit`), while Python is whole, every store with these streams is closed and the
exit waits for wasmtime to drop the streams of every closed store, whenever it closed;
except a store whose call still runs in a thread the interpreter does not wait for, as
closing it would free what wasmtime is using: that call's next write waits for the
process's end instead, and the exit gives it a moment (_PARK_WAIT) to come in. Only a
write that comes later, as the interpreter finalizes, can still meet the panic, as a
call into any host function there does.
"""
from __future__ import annotations

import atexit
import errno
import functools
import os
import select
import threading
import time
import weakref
from typing import Callable

from wasmtime import Store, WasiConfig

_CHUNK = select.PIPE_BUF
# every store whose WASI has these streams -> (weak) its two writers
_stores: "weakref.WeakKeyDictionary[Store, tuple]" = weakref.WeakKeyDictionary()
# every writer wasmtime has not dropped yet, its store's closed or not
_writers: "weakref.WeakSet[Callable]" = weakref.WeakSet()
# How long the exit waits for wasmtime to drop the streams of closed stores: it drops
# them on its own threads, a moment after the close (~0.3 ms idle; later where other
# threads hold the cores), and one dropped as the interpreter finalized called into it
# (a Rust panic or SIGSEGV at exit: 1 of ~15 runs of a script that left instances open
# with onnxruntime's threads spinning; 2 of 40 `wasinn run`s by `main(argv)`, whose
# store had closed just before the exit).
_DROP_WAIT = 1.0
# How long the exit waits for a call still running to bring its next write in (`_close_stores`)
_PARK_WAIT = 0.25


def bound_to_deadline(wasi: WasiConfig, store: Store, call_deadline: Callable[[Store], float | None]) -> None:
    """Gives `wasi`, `store`'s WASI, this process's stdout and stderr, each write held
    to `call_deadline(store)` (its call's, as time.monotonic(); None for none); the
    store is closed at exit."""
    # the writers hold the store weakly: wasmtime-py keeps a stream's callback, and all
    # it holds, as long as the stream
    deadline = functools.partial(_deadline, weakref.ref(store), call_deadline)
    writers = _writer(1, deadline), _writer(2, deadline)
    wasi.stdout_custom, wasi.stderr_custom = writers
    _writers.update(writers)
    if not _registered:
        _registered.append(atexit.register(_close_stores))
    _stores[store] = tuple(weakref.ref(w) for w in writers)


def _deadline(store: "weakref.ref[Store]", call_deadline: Callable[[Store], float | None]) -> float | None:
    alive = store()
    return None if alive is None else call_deadline(alive)


# registered with the first store, not at import: the CLI's fast exit (cli.main) holds
# only where no handler came before its own
_registered: list = []


_busy: set[int] = set()  # id() of each store with a call in progress


class in_call:
    """Marks a store's call in progress: one running at exit, in a thread the interpreter
    does not wait for, keeps its store (closing a store under a running call would free
    what wasmtime is using)."""
    __slots__ = ("key",)

    def __init__(self, store: Store):
        self.key = id(store)

    def __enter__(self) -> None:
        _busy.add(self.key)

    def __exit__(self, *exc) -> None:
        _busy.discard(self.key)


def running(store: Store) -> bool:
    """Whether a call of `store`'s instance is in progress (`in_call`)."""
    return id(store) in _busy


def _close_stores() -> None:
    # What a call still running writes from now on waits for the process's end where it
    # is, in Python still whole, rather than calling into Python as it finalizes; and a
    # write under way is let finish first: one whose thread (wasmtime's) came back for the
    # GIL as the interpreter finalized was ended there, through Rust frames that cannot
    # unwind (a panic at exit, once in a loaded CI run).
    _exiting.set()
    until = time.monotonic() + _DROP_WAIT
    while _writing[0] and time.monotonic() < until:
        time.sleep(0.001)
    if _busy:
        # a call still writing has its next write on its way into Python (a wasmtime
        # thread waiting for the GIL): let it come in and wait here, not as the
        # interpreter finalizes (the same panic, once more in a loaded CI run)
        until = time.monotonic() + _PARK_WAIT
        while not _parked.is_set() and time.monotonic() < until:
            time.sleep(0.001)
    running = set()  # the writers of stores whose call still runs: those stay
    for store, writers in list(_stores.items()):
        if id(store) in _busy:
            running.update(id(w()) for w in writers)
        else:
            store.close()
    until = time.monotonic() + _DROP_WAIT
    while any(id(w) not in running for w in list(_writers)) and time.monotonic() < until:
        time.sleep(0.001)


_exiting = threading.Event()
_never = threading.Event()
_parked = threading.Event()  # a write came after `_exiting`, and waits for the process's end
_writing = [0]  # writes under way
_writing_lock = threading.Lock()


def _writer(fd: int, deadline: Callable[[], float | None]) -> Callable[[bytes], int]:
    """Returns bytes written, or a negative errno for the guest, as wasmtime-py's custom
    streams want: a Python exception there would be printed to stdout."""
    def write(data: bytes) -> int:
        with _writing_lock:
            _writing[0] += 1
        try:
            return written(data)
        finally:
            with _writing_lock:
                _writing[0] -= 1

    def written(data: bytes) -> int:
        if _exiting.is_set():
            with _writing_lock:
                _writing[0] -= 1  # (waiting for ever: not under way)
            _parked.set()
            _never.wait()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        view = memoryview(data)
        while view:
            until = deadline()
            wait = -1 if until is None else max(0, int((until - time.monotonic()) * 1000) + 1)
            try:
                if not poller.poll(wait):
                    return -errno.ETIMEDOUT
                view = view[os.write(fd, view[:_CHUNK]):]
            except (InterruptedError, BlockingIOError):  # (a descriptor another process made non-blocking)
                continue
            except OSError as e:
                return -(e.errno or errno.EIO)
        return len(data)
    return write


class HostLines:
    """The host's own lines about a guest (a core module's failing wasi-nn calls, one line
    each) on a descriptor, never waiting for it: a write to a pipe nobody drains blocks in
    the kernel, and 700 failing calls' lines had the host wedged there, past every
    deadline. A line the descriptor cannot take at once is left out, as is any past
    `rate` in a second (300,000 failing calls had written 28.5 MB in 3 s); the next line
    written says how many were. Each is one write of at most PIPE_BUF bytes, which a pipe
    that polls writable takes whole."""

    def __init__(self, fd: int = 2, rate: int = 100):
        self.fd, self.rate = fd, rate
        self.lock = threading.Lock()
        self.second, self.written, self.left_out = 0.0, 0, 0

    def __call__(self, line: str) -> None:
        with self.lock:
            now = time.monotonic()
            if now - self.second >= 1:
                self.second, self.written = now, 0
            if self.written == self.rate:  # said once a second, when it happens
                self.written += self._writes(f"wasinn: more than {self.rate} such lines in a second; the rest of "
                                             "this second's are left out")
            if self.written >= self.rate or not self._writes(line):
                self.left_out += 1
                return
            self.written += 1
            self.left_out = 0

    def _writes(self, line: str) -> bool:
        if self.left_out:
            line += f" ({self.left_out} earlier line{'s' if self.left_out > 1 else ''} left out)"
        data = line.encode(errors="replace")
        if len(data) >= _CHUNK:
            data = data[:_CHUNK - 4] + b"..."
        try:
            poller = select.poll()
            poller.register(self.fd, select.POLLOUT)
            if not poller.poll(0):
                return False
            os.write(self.fd, data + b"\n")
        except OSError:
            return False
        return True


def write_now(line: str, fd: int = 2) -> None:
    """One line, if the descriptor takes it at once (`HostLines`, without the rate)."""
    HostLines(fd)(line)

"""The threads behind deadlines: one that stops backends at theirs, one that advances
the wasmtime engines' epochs (a guest's deadline is counted in epochs).

A timer thread per inference cost ~90 us per compute (thread start and join); arming
this shared watchdog costs a lock and a heap push.

The host's threads end at exit, before the interpreter finalizes: a daemon thread
that wakes (from a sleep, a wait or a call into wasmtime, all of which let go of the
GIL) while CPython tears down its thread states can crash a process whose work is
done, after it printed its results.
"""
from __future__ import annotations

import atexit
import heapq
import itertools
import threading
import time
import weakref
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import wasmtime

_mutex = threading.Lock()  # taken directly where nothing waits: cheaper than the Condition's methods
_lock = threading.Condition(_mutex)
_pending: list[tuple[float, int, Callable[[], None], float | None]] = []  # (when, key, stop, again)
_cancelled: set[int] = set()  # in _pending, but their block has ended
_live: set[int] = set()  # in _pending
_ids = itertools.count()
_thread: threading.Thread | None = None
_sleeping_until = float("inf")  # when the watchdog wakes next on its own
_stopping = False
# Epochs advance this often; a call's deadline is checked at this granularity.
EPOCH_SECONDS = 0.05
# The most periods one late tick makes up for (a process stopped for an hour: its calls'
# deadlines are past, and ~1 us an increment keeps this one tick short).
MAX_CATCH_UP = 1 << 16
# How long past its call's deadline a host function that waits (a guest's WASI sleep, a
# command's response) waits: the epoch interrupt, counted in ticks from the call's start,
# has passed the deadline too by then, so the guest's next step ends the call with the
# deadline's trap (woken at the deadline itself, it could return as if it had waited)
PAST_THE_TICK = 1.2 * EPOCH_SECONDS


class PastDeadline(Exception):
    """A call's deadline came while the host was making its arguments (`abi/values.py`,
    `embedding/lowering.py`): the call is over before its guest ran."""


def seconds_left(deadline: float | None, none: float | None = -1) -> float | None:
    """Seconds to `deadline` (time.monotonic()) for a wait, at least 0; `none` without one
    (-1: Lock.acquire's "for ever")."""
    return none if deadline is None else max(0.0, deadline - time.monotonic())


def stop_at_exit(stop: Callable[[], None], thread: threading.Thread) -> None:
    """At interpreter exit (atexit: after the program's own threads are joined, before
    finalization), calls `stop()` and waits for `thread` to end."""
    def end() -> None:
        stop()
        thread.join(timeout=5)
    atexit.register(end)


def _stop_watchdog() -> None:
    global _stopping
    with _lock:
        _stopping = True
        _lock.notify()


def _drop_finished() -> None:
    while _pending and _pending[0][1] in _cancelled:
        key = heapq.heappop(_pending)[1]
        _cancelled.discard(key)
        _live.discard(key)


def _watch() -> None:
    global _sleeping_until
    with _lock:
        while not _stopping:
            _drop_finished()
            _sleeping_until = _pending[0][0] if _pending else float("inf")
            wait = _sleeping_until - time.monotonic()
            if wait > 0:
                _lock.wait(None if wait == float("inf") else wait)
                continue
            _, key, stop, again = heapq.heappop(_pending)
            if again is None:
                _live.discard(key)
            else:  # until the block ends (its __exit__ marks it cancelled); from now, so that a
                # late watchdog does not call it back to back to catch up
                heapq.heappush(_pending, (time.monotonic() + again, key, stop, again))
            try:
                stop()
            except Exception:  # a backend's stop hook must not end the watchdog
                pass


def start_watchdog() -> None:
    """Starts the watchdog now rather than at the first deadline: a thread start waits
    for a free core, and once a backend's thread pool spins (onnxruntime's, from its
    first session) that took 1-3 ms of a two-core machine's first inference."""
    with _mutex:
        _start_watchdog()


def _start_watchdog() -> None:
    global _thread
    if _thread is None:
        _thread = threading.Thread(target=_watch, name="wasinn-deadlines", daemon=True)
        _thread.start()
        stop_at_exit(_stop_watchdog, _thread)


class stop_at:
    """Calls `stop()` from the watchdog thread if the block is still running at
    `deadline` (time.monotonic()); nothing when `deadline` is None. With `again`
    (seconds), calls it again that often until the block ends: for a stop that is lost
    when it comes before the work it stops has begun (OpenVINO's cancel). A class, not
    a generator: it is armed once per inference (a generator-based one cost 2x)."""

    __slots__ = ("deadline", "stop", "again", "key")

    def __init__(self, deadline: float | None, stop: Callable[[], None], again: float | None = None):
        self.deadline = deadline
        self.stop = stop
        self.again = again
        self.key = None

    def __enter__(self) -> None:
        if self.deadline is None:
            return
        with _mutex:
            _start_watchdog()
            _drop_finished()  # usually every earlier call has finished
            self.key = key = next(_ids)
            heapq.heappush(_pending, (self.deadline, key, self.stop, self.again))
            _live.add(key)
            if self.deadline < _sleeping_until:  # wake the watchdog only for an earlier deadline
                _lock.notify()

    def __exit__(self, *exc) -> None:
        if self.key is not None:
            with _mutex:
                if self.key in _live:
                    _cancelled.add(self.key)


class EpochTicker:
    """One thread advancing the epoch of every live engine, so deadlines fire. It ends
    at exit, before the interpreter finalizes (see stop_at_exit)."""
    _engines: "weakref.WeakSet[wasmtime.Engine]" = weakref.WeakSet()
    _thread: threading.Thread | None = None
    _lock = threading.Lock()
    _stop = threading.Event()
    due = float("inf")  # time.monotonic() of the next tick

    @classmethod
    def ticks_by(cls, end: float) -> int:
        """How many ticks come by `end` (time.monotonic()), as scheduled: an epoch deadline
        of that many ticks from now ends a call by then, if no tick comes late."""
        due = cls.due
        return 0 if end < due else 1 + int((end - due) / EPOCH_SECONDS)

    @classmethod
    def watch(cls, engine: wasmtime.Engine) -> None:
        with cls._lock:
            cls._engines.add(engine)
            if cls._thread is None:
                cls._thread = threading.Thread(target=cls._run, name="wasinn-epochs", daemon=True)
                cls._thread.start()
                stop_at_exit(cls._stop.set, cls._thread)

    @classmethod
    def _run(cls) -> None:
        # A tick that comes late (this thread waits for the GIL like any other: with 8
        # threads busy in host calls, up to ~0.14 s) advances the epoch by every period
        # that passed, so that a deadline, a count of ticks, stays one of time: late ticks
        # each counted once had added up, to 0.6 s past a 1 s deadline.
        due = cls.due = time.monotonic() + EPOCH_SECONDS
        while not cls._stop.wait(max(0.0, due - time.monotonic())):
            periods = 1 + int((time.monotonic() - due) / EPOCH_SECONDS)
            due = cls.due = due + periods * EPOCH_SECONDS
            cls._tick(min(periods, MAX_CATCH_UP))

    @classmethod
    def _tick(cls, periods: int = 1) -> None:
        # In a function of its own so that no engine stays referenced between ticks: a
        # loop variable left holding the last engine kept it (and its host memory creator)
        # alive past its Host, to be freed on this thread during interpreter teardown,
        # after the creator's callbacks (SIGSEGV after a run had printed its results).
        # The copy under the lock: a Host made on another thread adds its engine meanwhile,
        # and a WeakSet that grows while it is iterated raises, which ended this thread and
        # with it every deadline in the process (a spinning guest then ran forever).
        with cls._lock:
            engines = list(cls._engines)
        for engine in engines:
            try:
                for _ in range(periods):
                    engine.increment_epoch()
            except Exception:  # noqa: BLE001 - one engine's failure must not stop the others' deadlines
                pass

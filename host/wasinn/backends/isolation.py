"""Which graphs run in a backend worker process (isolated.py), by the operator's policy,
and the workers a host has started. A host that isolates nothing, or has not yet, does
not import the workers' machinery (sockets, signals, shared memory: ~4 ms of start-up).
"""
from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from .._enums import ErrorCode
from ..deadlines import seconds_left
from ..errors import NnError, too_large
from ..limits import check_policy

if TYPE_CHECKING:
    from . import isolated


class Isolation:
    """Where the graphs of one host run: the policy, and the workers it has started."""

    def __init__(self, limits):
        self.policy = check_policy(limits.isolate)
        self.max_workers = limits.max_workers
        # what bounds a worker (worker.py): its memory cap grows with its graphs
        self.settings = {"host_bytes": limits.max_host_bytes, "backend_memory": limits.max_backend_memory,
                         "max_graphs": limits.max_graphs, "output_bytes": limits.output_bytes,
                         "file_size": 2 * limits.max_model_bytes + (64 << 20)}
        self.live: weakref.WeakSet[isolated.Worker] = weakref.WeakSet()
        self._shared: isolated.Worker | None = None
        self._lock = threading.Lock()

    def applies(self, guest: bool) -> bool:
        """Whether a graph from a guest's bytes (or the operator's, `guest` False) is isolated."""
        return self.policy == "all" or (guest and self.policy == "guest-models")

    def current(self, owner) -> isolated.Worker | None:
        worker = self._shared if owner is None else owner.worker
        return worker if worker is not None and not worker.dead else None

    def worker(self, owner, deadline: float | None = None) -> isolated.Worker:
        """`owner`'s worker (a session, which keeps it in `worker`), or the shared one for
        the operator's models (owner None), started on first use (by `deadline`, else
        `timeout`: another instance may be starting one)."""
        current = self.current(owner)
        if current is not None:
            return current
        from . import isolated
        if not self._lock.acquire(timeout=seconds_left(deadline)):
            raise NnError(ErrorCode.TIMEOUT, "another instance's backend worker was still starting at the call's "
                          "deadline")
        try:
            current = self.current(owner)  # another thread started it meanwhile
            if current is not None:
                return current
            alive = [w for w in self.live if not w.dead]
            if len(alive) >= self.max_workers:
                raise too_large(f"the host runs {len(alive)} backend workers; the limit is {self.max_workers} "
                                "(max-workers, --max-workers)")
            worker = isolated.zygote().fork(self.settings, deadline)
            self.live.add(worker)
            if owner is None:
                gone, self._shared = self._shared, worker
            else:
                gone, owner.worker = owner.worker, worker
            if gone is not None:  # dead: its file and pidfd go now, not when its owner closes
                gone.close()  # (a guest that crashed its worker again and again in one call held them all)
        finally:
            self._lock.release()
        return worker

    def close_shared(self) -> None:
        """Ends the host's own worker for the operator's models (owner None)."""
        with self._lock:
            worker, self._shared = self._shared, None
        if worker is not None:
            worker.close()

    def load(self, owner, kind: str, encoding, threads: int, precision: str, builders: list, target,
             deadline: float | None) -> isolated.IsolatedGraph:
        from . import isolated
        # the bytes go into a file of their own first: a first load waits below for the
        # fork server still starting (forkserver.py), and this copy need not wait with it
        model = isolated.model_file(builders, deadline)
        try:
            worker = self.worker(owner, deadline)
            isolated.zygote().preload(kind, deadline)
            reply = worker.request({"op": "load", "kind": kind, "encoding": encoding.value, "target": target.value,
                                    "threads": threads, "precision": precision, "sizes": [len(b) for b in builders]},
                                   deadline, fds=(model,))
        finally:
            os.close(model)
        return isolated.IsolatedGraph(worker, reply, target)

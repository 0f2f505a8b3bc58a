"""Which graphs run in a backend worker process (isolated.py), by the operator's policy,
and the workers a host has started. A host that isolates nothing, or has not yet, does
not import the workers' machinery (sockets, signals, shared memory: ~4 ms of start-up).
"""
from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from ..errors import too_large
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

    def worker(self, owner, memory: isolated.SharedMemory) -> isolated.Worker:
        """`owner`'s worker (a session, which keeps it in `worker`), or the shared one for
        the operator's models (owner None), started on first use with `memory`."""
        current = self.current(owner)
        if current is not None:
            return current
        from . import isolated
        with self._lock:
            alive = [w for w in self.live if not w.dead]
            if len(alive) >= self.max_workers:
                raise too_large(f"the host runs {len(alive)} backend workers; the limit is {self.max_workers} "
                                "(max-workers, --max-workers)")
            worker = isolated.zygote().fork(self.settings, memory)
            self.live.add(worker)
        if owner is None:
            self._shared = worker
        else:
            owner.worker = worker
        return worker

    def load(self, owner, kind: str, encoding, threads: int, precision: str, builders: list, target,
             deadline: float | None) -> isolated.IsolatedGraph:
        from . import isolated
        sizes = [len(b) for b in builders]
        worker = self.current(owner)
        if worker is None:
            # the bytes go into shared memory first: a first load waits here for the fork
            # server still starting (prewarm), and this copy need not wait with it
            memory = isolated.SharedMemory(sum(sizes))
            at = memory.take(sum(sizes))
            memory.write(at, builders)
            try:
                worker = self.worker(owner, memory)
            except BaseException:
                memory.close()
                raise
            if worker.memory is not memory:  # another thread started this owner's worker meanwhile
                memory.close()
                at = None
        else:
            at = None
        isolated.zygote().preload(kind)
        with worker.lock:
            if at is None:
                at = worker.memory.take(sum(sizes))
                worker.memory.write(at, builders)
            try:
                worker.sync()
                reply = worker.request({"op": "load", "kind": kind, "encoding": encoding.value, "target": target.value,
                                        "threads": threads, "precision": precision, "sizes": sizes, "at": at},
                                       deadline)
            finally:
                worker.memory.give_back(at, sum(sizes))
        return isolated.IsolatedGraph(worker, reply, target)

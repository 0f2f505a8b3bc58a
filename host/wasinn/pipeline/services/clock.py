"""Hybrid logical clocks (Kulkarni et al., 2014), as data-flow operators see them.

A timestamp is (wall time, counter, node id). Each clock keeps the largest timestamp it
has issued or seen: a local event takes max(that, now) and bumps the counter when the
wall time did not move; receiving a timestamp merges it in, so that everything issued
after a message was received orders after that message, across hosts whose clocks
disagree. Timestamps order by (wall time, counter, node id).
"""
from __future__ import annotations

import dataclasses
import threading
import time

NANOS = 1_000_000_000
# A received timestamp further ahead of this host's clock than this is not adopted: one
# bad clock (or a hostile message) must not drag every later timestamp into the future.
MAX_DRIFT_NANOS = 60 * NANOS


@dataclasses.dataclass(frozen=True, order=True)
class Timestamp:
    """An HLC timestamp: `secs`/`nanos` of wall time (Unix epoch), `counter`, `node_id`."""
    secs: int
    nanos: int
    counter: int = 0
    node_id: str = ""

    @property
    def wall(self) -> int:
        return self.secs * NANOS + self.nanos

    @classmethod
    def of(cls, wall: int, counter: int, node_id: str) -> "Timestamp":
        return cls(wall // NANOS, wall % NANOS, counter, node_id)


class HybridClock:
    """One node's clock; thread-safe. `now()` for a local event, `receive(ts)` for a
    timestamp that came with a message (returns the merged timestamp)."""

    def __init__(self, node_id: str, wall_clock=time.time_ns):
        self.node_id = node_id
        self._wall_clock = wall_clock
        self._wall = 0
        self._counter = 0
        self._lock = threading.Lock()

    def now(self) -> Timestamp:
        with self._lock:
            physical = self._wall_clock()
            if physical > self._wall:
                self._wall, self._counter = physical, 0
            else:
                self._counter += 1
            return Timestamp.of(self._wall, self._counter, self.node_id)

    def receive(self, remote: Timestamp) -> Timestamp:
        with self._lock:
            physical = self._wall_clock()
            theirs = remote.wall if remote.wall - physical <= MAX_DRIFT_NANOS else physical
            wall = max(self._wall, theirs, physical)
            if wall == self._wall and wall == theirs:
                counter = max(self._counter, remote.counter) + 1
            elif wall == self._wall:
                counter = self._counter + 1
            elif wall == theirs:
                counter = remote.counter + 1
            else:
                counter = 0
            self._wall, self._counter = wall, counter
            return Timestamp.of(wall, counter, self.node_id)

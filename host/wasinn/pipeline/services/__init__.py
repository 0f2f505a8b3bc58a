"""The host services data-flow operators import (`wasm-graph:processor@1.1.0`): one
module each, all behind `Services`, which an `Operator` (pipeline/operator.py) binds to
one operator node.

    services = Services.embedded(log=EventLog(), limits=Limits())            # one host
    services = Services(state_store=RedisStore("redis://10.0.0.5:6379/0"))  # across hosts

- logger.py: `logger` into the JSON log; metrics.py: `metrics` into Prometheus;
  clock.py: hybrid logical clocks; state_store.py / redis_store.py: `state-store`;
  schemas.py: `schema-registry`; invoker.py: `command-invoker`;
- imports.py: the WIT imports for one operator, over these, within its limits.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

from ...limits import Limits
from ..jsonlog import EventLog
from .clock import HybridClock, Timestamp
from .invoker import CommandInvoker
from .metrics import MetricFamilies
from .redis_store import RedisStore
from .schemas import SchemaRegistry
from .state_store import EmbeddedStore, StateStore

__all__ = ["Services", "EmbeddedStore", "RedisStore", "StateStore", "SchemaRegistry", "CommandInvoker",
           "HybridClock", "Timestamp", "MetricFamilies"]

_FAMILIES: MetricFamilies | None = None


def default_families() -> MetricFamilies:
    """The process's operator metrics, in prometheus-client's default registry (what a
    worker's multiprocess files and `/metrics` show)."""
    global _FAMILIES
    if _FAMILIES is None:
        _FAMILIES = MetricFamilies()
    return _FAMILIES


@dataclasses.dataclass
class Services:
    """What the operators of one process share. `limits`: None takes the Host's."""
    state_store: StateStore
    log: EventLog = dataclasses.field(default_factory=EventLog)
    limits: Limits | None = None
    metrics: MetricFamilies = dataclasses.field(default_factory=default_families)
    clock: HybridClock = dataclasses.field(
        default_factory=lambda: HybridClock(f"{os.uname().nodename}-{os.getpid()}"))
    schemas: SchemaRegistry = dataclasses.field(default_factory=SchemaRegistry)
    invoker: CommandInvoker = dataclasses.field(default_factory=CommandInvoker)
    # per operator node: what bounds its log lines and metric series, kept across its
    # instances (a trapped one's successor had started both afresh: each trap, another
    # max-metric-series series, held for ever)
    _bounds: dict = dataclasses.field(default_factory=dict, init=False, repr=False)

    def operator_bounds(self, name: str, make: Callable[[], tuple]) -> tuple:
        """`make()` the first time operator node `name` asks, the same after."""
        bounds = self._bounds.get(name)
        if bounds is None:
            bounds = self._bounds[name] = make()
        return bounds

    @classmethod
    def embedded(cls, *, log: EventLog | None = None, limits: Limits | None = None,
                 state_path: str | os.PathLike | None = None, **more) -> "Services":
        """Services with the embedded state store: a SQLite file at `state_path` that
        every process opening the same path shares (a private temporary one without)."""
        return cls(state_store=EmbeddedStore(state_path), log=log or EventLog(), limits=limits, **more)

    def close(self) -> None:
        self.state_store.close()

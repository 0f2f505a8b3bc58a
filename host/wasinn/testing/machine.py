"""A hypothesis state machine over a component's exports, for users to subclass.

    class EchoMachine(ComponentMachine):
        component = "app.wasm"            # a path, or a loaded Component
        exports = ["echo"]                # default: every export whose parameters can be drawn

        @rule(t=tensors())
        def echo_returns_its_input(self, t):
            out = self.call("echo", t)
            assert out.to_bytes() == t.to_bytes()

    TestEcho = EchoMachine.TestCase

Its own rule calls one of `exports` with parameters drawn from their WIT types
(`values_for`); after every step its invariants check that no call failed in the host
(a trap is the guest's business, unless `allow_traps = False`) and that the instance's
wasi:nn tables hold what `expected_live()` says (by default: nothing, since every
handle the host was given back has been taken out of them).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from wasmtime.component import ComponentInstanceType, FuncType

from ..embedding.types import items
from ..errors import GuestTrap, WasinnError
from ..runtime import Host, Instance
from .strategies import Unsupported, values_for


def export_names(inst: Instance) -> list[str]:
    """Every exported function: `func` at the root, `interface#func` in an interface."""
    engine = inst.host.engine_of(inst.component)
    names = []
    for name, item in items(inst.component.type, engine, "exports").items():
        ty = item.ty
        if isinstance(ty, FuncType):
            names.append(name)
        elif isinstance(ty, ComponentInstanceType):
            names += [f"{name}#{f}" for f, sub in items(ty, engine, "exports").items() if isinstance(sub.ty, FuncType)]
    return sorted(names)


class ComponentMachine(RuleBasedStateMachine):
    """Calls a component's exports; see the module docs. Class attributes to set:
    `component` (required), `exports` (default: all that can be drawn), `allow_traps`."""

    component: Any = None
    exports: Sequence[str] | None = None
    allow_traps = True
    _hosts: dict[type, tuple[Host, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.host, component = self._host_and_component()
        self.instance = self.host.instantiate(component)
        self.traps = 0
        names = export_names(self.instance) if self.exports is None else list(self.exports)
        self.drawable = {}
        for name in names:
            params, _ = self.instance.signature(name)
            try:
                self.drawable[name] = st.tuples(*[values_for(t) for _, t in params])
            except Unsupported:
                continue  # takes something only the guest can make: for the subclass's own rules
        self.instance.close()

    @classmethod
    def make_host(cls) -> Host:
        """The Host every instance runs on (override for limits or models)."""
        return Host()

    @classmethod
    def _host_and_component(cls):
        if cls not in ComponentMachine._hosts:  # compiled once per class, not per run
            if cls.component is None:
                raise WasinnError(f"{cls.__name__}.component is not set")
            host = cls.make_host()
            component = cls.component
            if isinstance(component, (str, os.PathLike)):
                component = host.load_component(component)
            ComponentMachine._hosts[cls] = host, component
        return ComponentMachine._hosts[cls]

    def call(self, name: str, *args) -> Any:
        """Calls an export; a trap is counted (and fails unless `allow_traps`), and the
        next call runs on a fresh instance."""
        try:
            return self.instance.call(name, *args)
        except GuestTrap:
            self.traps += 1
            if not self.allow_traps:
                raise
            return None

    def expected_live(self) -> dict[str, int]:
        """What the instance's wasi:nn tables should hold between steps."""
        return {kind: 0 for kind in self.instance.live_resources()}

    @rule(data=st.data())
    def call_an_export(self, data) -> None:
        if not self.drawable:
            return
        name = data.draw(st.sampled_from(sorted(self.drawable)), label="export")
        self.call(name, *data.draw(self.drawable[name], label=f"{name} arguments"))

    @invariant()
    def tables_back_to_baseline(self) -> None:
        live = self.instance.live_resources()
        assert live == self.expected_live(), f"live wasi:nn resources {live}, expected {self.expected_live()}"

    def teardown(self) -> None:
        self.instance.close()

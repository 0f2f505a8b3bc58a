"""A component's WASI sleeps held to its call's deadline.

wasmtime runs `wasi:io/poll` in native code: a guest blocked there (a sleep, a `poll` on
a clock) is out of reach of the epoch interrupt that ends its call at the deadline, and
stayed blocked as long as it asked (20 s under `--deadline 1s`, measured). Every sleep
waits on a pollable that `wasi:clocks/monotonic-clock`'s `subscribe-duration` or
`subscribe-instant` made, so those are the host's: each calls wasmtime's own with the
time cut to what is left of the call, and the sleep ends at the deadline, where the
epoch interrupt ends the call within its tick. A host function cannot call wasmtime's
own functions directly; a helper component (`_HELPER`), instantiated in the guest's
store on its first subscription, imports them natively and exports them again, and its
pollables are the guest's to wait on (one resource type).

wasmtime's linker lets a definition shadow wasmtime's own only at the very version the
guest imports (0.2.9 from componentize-py, 0.2.12 from wasi-libc's and componentize-js'
adapters), so `cover` shadows each version a loaded component imports as it is seen.
Core modules' `poll_oneoff` has no such seam: the Host's `overdue` (runtime.py) ends them.
"""
from __future__ import annotations

import time
from typing import Callable

from wasmtime import Engine
from wasmtime.component import Component, Linker

MONOTONIC_CLOCK = "wasi:clocks/monotonic-clock@0.2."
_HELPER = r"""
(component
  (import "wasi:io/poll@0.2.0" (instance $poll (export "pollable" (type (sub resource)))))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (export "now" (func (result u64)))
    (export "resolution" (func (result u64)))
    (export "subscribe-instant" (func (param "when" u64) (result (own $pollable))))
    (export "subscribe-duration" (func (param "when" u64) (result (own $pollable))))))
  (core func $now (canon lower (func $clock "now")))
  (core func $resolution (canon lower (func $clock "resolution")))
  (core func $instant (canon lower (func $clock "subscribe-instant")))
  (core func $duration (canon lower (func $clock "subscribe-duration")))
  (core module $m
    (import "c" "now" (func $now (result i64)))
    (import "c" "resolution" (func $resolution (result i64)))
    (import "c" "instant" (func $instant (param i64) (result i32)))
    (import "c" "duration" (func $duration (param i64) (result i32)))
    (func (export "now") (result i64) (call $now))
    (func (export "resolution") (result i64) (call $resolution))
    (func (export "instant") (param i64) (result i32) (call $instant (local.get 0)))
    (func (export "duration") (param i64) (result i32) (call $duration (local.get 0))))
  (core instance $c (export "now" (func $now)) (export "resolution" (func $resolution))
    (export "instant" (func $instant)) (export "duration" (func $duration)))
  (core instance $i (instantiate $m (with "c" (instance $c))))
  (func (export "now") (result u64) (canon lift (core func $i "now")))
  (func (export "resolution") (result u64) (canon lift (core func $i "resolution")))
  (func (export "subscribe-instant") (param "when" u64) (result (own $pollable)) (canon lift (core func $i "instant")))
  (func (export "subscribe-duration") (param "when" u64) (result (own $pollable))
    (canon lift (core func $i "duration"))))
"""
_NAMES = ("now", "resolution", "subscribe-instant", "subscribe-duration")


class DeadlineClocks:
    """The monotonic clock of one engine's components, its subscriptions held to the
    call's deadline: `deadline_of(store)` is time.monotonic() when the store's call in
    progress must end, or None. `helper_of(store)` keeps each store's helper instance's
    functions where the store's own state is kept (None: not made yet)."""

    def __init__(self, engine: Engine, linker: Linker, deadline_of: Callable[[object], float | None],
                 helpers: Callable[[object], dict]):
        self.engine, self.linker, self.deadline_of, self.helpers = engine, linker, deadline_of, helpers
        self.native = Linker(engine)  # wasmtime's own clock, for the helper
        self.native.add_wasip2()
        self._helper: Component | None = None
        self.covered: set[str] = set()

    def cover(self, component: Component) -> None:
        """Shadows the monotonic clock at each version `component` imports it."""
        for name in component.type.imports(self.engine):
            if name.startswith(MONOTONIC_CLOCK) and name not in self.covered:
                self.linker.allow_shadowing = True
                try:
                    with self.linker.root() as root, root.add_instance(name) as clock:
                        clock.add_func("now", lambda store: self._call(store, "now"))
                        clock.add_func("resolution", lambda store: self._call(store, "resolution"))
                        clock.add_func("subscribe-instant", self._subscribe_instant)
                        clock.add_func("subscribe-duration", self._subscribe_duration)
                finally:
                    self.linker.allow_shadowing = False
                self.covered.add(name)

    def _subscribe_duration(self, store, when: int):
        left = self._left(store)
        return self._call(store, "subscribe-duration", when if left is None else min(when, left))

    def _subscribe_instant(self, store, when: int):
        left = self._left(store)
        if left is not None:
            when = min(when, self._call(store, "now") + left)
        return self._call(store, "subscribe-instant", when)

    def _left(self, store) -> int | None:
        """Nanoseconds until the call's deadline (0 past it), or None without one."""
        deadline = self.deadline_of(store)
        return None if deadline is None else max(0, int((deadline - time.monotonic()) * 1e9))

    def _call(self, store, name: str, *args):
        funcs = self.helpers(store)
        if not funcs:
            if self._helper is None:
                self._helper = Component(self.engine, _HELPER)
            instance = self.native.instantiate(store, self._helper)
            funcs.update((n, instance.get_func(store, n)) for n in _NAMES)
        func = funcs[name]
        result = func(store, *args)
        func.post_return(store)
        return result


__all__ = ["DeadlineClocks", "MONOTONIC_CLOCK"]

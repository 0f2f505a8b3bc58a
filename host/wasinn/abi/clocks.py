"""WASI sleeps held to their call's deadline: a component's, and a core module's.

wasmtime runs WASI's poll in native code: a guest blocked there (a sleep, a `poll` on
a clock) is out of reach of the epoch interrupt that ends its call at the deadline, and
stayed blocked as long as it asked (20 s under `--deadline 1s`, measured). Every sleep
waits on a pollable that the monotonic clock's `subscribe-duration` or
`subscribe-instant` made, so those are the host's: each calls wasmtime's own with the
time cut to what is left of the call, and the sleep ends at the deadline, where the
epoch interrupt ends the call within its tick. A host function cannot call wasmtime's
own functions directly; a helper component (`_HELPER`), instantiated in the guest's
store on its first subscription, imports them natively and exports them again, and its
pollables are the guest's to wait on (one resource type).

wasmtime's linker lets a definition shadow wasmtime's own only at the very version the
guest imports (0.2.9 from componentize-py, 0.2.12 from wasi-libc's and componentize-js'
adapters), so `cover` shadows each version a loaded component imports as it is seen.

A core module sleeps in preview1's `poll_oneoff` (`DeadlinePoll`): the host's runs
wasmtime's own through a helper module that imports the guest's memory and exports it
again as its own (wasmtime's preview1 functions work on their caller's "memory"), with
each clock subscription's timeout cut, in the guest's memory and for that call only, to
what is left of the call.
"""
from __future__ import annotations

import time
from typing import Callable

import struct

import wasmtime
from wasmtime import Engine
from wasmtime.component import Component, Linker

from .._bindings import WASI_CLOCKS_MONOTONIC_CLOCK, WASI_IO_POLL

# every 0.2.x version of the interface (wit/ holds 0.2.0's, all the helper needs)
MONOTONIC_CLOCK = WASI_CLOCKS_MONOTONIC_CLOCK.rsplit(".", 1)[0] + "."
_HELPER = f"""
(component
  (import "{WASI_IO_POLL}" (instance $poll (export "pollable" (type (sub resource)))))
  (alias export $poll "pollable" (type $pollable))
  (import "{WASI_CLOCKS_MONOTONIC_CLOCK}" (instance $clock
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


_P1 = "wasi_snapshot_preview1"
_P1_HELPER = f"""
(module
  (import "{_P1}" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "{_P1}" "clock_time_get" (func $time (param i32 i64 i32) (result i32)))
  (import "guest" "memory" (memory 0))
  (export "memory" (memory 0))
  (func (export "poll") (param i32 i32 i32 i32) (result i32)
    (call $poll (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "time") (param i32 i32) (result i32) (call $time (local.get 0) (i64.const 1) (local.get 1))))
"""
# preview1's subscription (48 bytes): userdata, tag (0: a clock), then for a clock its
# id, timeout, precision and flags; and an event's size
_SUBSCRIPTION = struct.Struct("<QB7xI4xQQH6x")
_TIMEOUT_AT = 24
_EVENT_BYTES = 32
_ABSTIME = 1
# Subscriptions one poll_oneoff may hold (wasmtime sets none): read once and cut by the
# host, bounded; past it the call is refused with EINVAL. A program polls a few.
MAX_SUBSCRIPTIONS = 4096
_EINVAL = 28


class DeadlinePoll:
    """Preview1's `poll_oneoff` for one engine's core modules, its clock subscriptions
    held to the call's deadline (`deadline_of`, `helpers` as DeadlineClocks')."""

    def __init__(self, engine: Engine, deadline_of: Callable[[object], float | None],
                 helpers: Callable[[object], dict], past_deadline: Callable[[], str]):
        """`past_deadline()`: the line that ends a call whose sleep was cut at its deadline
        (Limits.past_deadline): a module that returns from its poll without running a loop
        again would otherwise end the call as if it had slept."""
        self.engine, self.deadline_of, self.helpers, self.past_deadline = engine, deadline_of, helpers, past_deadline
        self.native = wasmtime.Linker(engine)  # wasmtime's own preview1, for the helper
        self.native.define_wasi()
        self._helper: wasmtime.Module | None = None

    def install(self, linker: wasmtime.Linker) -> None:
        i32 = wasmtime.ValType.i32()
        linker.allow_shadowing = True
        try:
            linker.define_func(_P1, "poll_oneoff", wasmtime.FuncType([i32] * 4, [i32]), self.poll_oneoff,
                               access_caller=True)
        finally:
            linker.allow_shadowing = False

    def poll_oneoff(self, caller, subscriptions: int, events: int, n: int, n_events: int) -> int:
        helper = self._helper_of(caller)
        deadline = self.deadline_of(caller)
        memory = helper["memory"]
        size = memory.data_len(caller)
        if n > MAX_SUBSCRIPTIONS:
            return _EINVAL
        if (deadline is None or subscriptions + n * _SUBSCRIPTION.size > size
                or events + n * _EVENT_BYTES > size):  # nothing to cut, or what wasmtime's own refuses
            return helper["poll"](caller, subscriptions, events, n, n_events)
        original = memory.read(caller, subscriptions, subscriptions + n * _SUBSCRIPTION.size)
        left = max(0, int((deadline - time.monotonic()) * 1e9))
        now: dict[int, int | None] = {}  # per clock of an absolute subscription
        cut = bytearray(original)
        for i, (_, tag, clock, timeout, _, flags) in enumerate(_SUBSCRIPTION.iter_unpack(original)):
            if tag != 0:
                continue
            limit = left
            if flags & _ABSTIME:
                if clock not in now:  # the events' room takes the time; the poll writes them after
                    now[clock] = (int.from_bytes(memory.read(caller, events, events + 8), "little")
                                  if helper["time"](caller, clock, events) == 0 else None)
                if now[clock] is None:
                    continue  # a clock wasmtime's own refuses: its poll says so
                limit = min(now[clock] + left, 2**64 - 1)
            if timeout > limit:
                struct.pack_into("<Q", cut, i * _SUBSCRIPTION.size + _TIMEOUT_AT, limit)
        if cut == original:
            return helper["poll"](caller, subscriptions, events, n, n_events)
        memory.write(caller, bytes(cut), subscriptions)
        try:
            errno = helper["poll"](caller, subscriptions, events, n, n_events)
        finally:
            memory.write(caller, original, subscriptions)  # the guest's own, as it wrote them
        if time.monotonic() >= deadline:
            raise wasmtime.Trap(self.past_deadline())
        return errno

    def _helper_of(self, caller) -> dict:
        funcs = self.helpers(caller)
        if not funcs:
            memory = caller.get("memory")
            if not isinstance(memory, wasmtime.Memory):
                raise wasmtime.WasmtimeError("poll_oneoff: the module exports no memory named \"memory\"")
            if self._helper is None:
                self._helper = wasmtime.Module(self.engine, _P1_HELPER)
            instance = wasmtime.Instance(caller, self._helper, [self.native.get(caller, _P1, "poll_oneoff"),
                                                                 self.native.get(caller, _P1, "clock_time_get"), memory])
            exports = instance.exports(caller)
            funcs.update(poll=exports["poll"], time=exports["time"], memory=memory)
        return funcs


__all__ = ["DeadlineClocks", "DeadlinePoll", "MAX_SUBSCRIPTIONS", "MONOTONIC_CLOCK"]

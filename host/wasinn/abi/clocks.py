"""WASI sleeps held to their call's deadline: a component's, and a core module's.

wasmtime runs WASI's poll in native code: a guest blocked there (a sleep, a `poll` on
a clock) is out of reach of the epoch interrupt that ends its call at the deadline, and
stayed blocked as long as it asked (20 s under `--deadline 1s`, measured). Every sleep
waits on a pollable that the monotonic clock's `subscribe-duration` or
`subscribe-instant` made, so those are the host's: each calls wasmtime's own with the
time cut to what is left of the call (and one epoch tick), and the sleep ends there,
where the epoch interrupt ends the call. A host function cannot call wasmtime's
own functions directly; a helper component (`_HELPER`), instantiated in the guest's
store on its first subscription, imports wasmtime's `subscribe-duration` and exports it
again, and its pollables are the guest's to wait on (one resource type).

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
from ..deadlines import PAST_THE_TICK
from ..embedding.types import items

# every 0.2.x version of the interface (wit/ holds 0.2.0's, all the helper needs)
MONOTONIC_CLOCK = WASI_CLOCKS_MONOTONIC_CLOCK.rsplit(".", 1)[0] + "."
_HELPER = f"""
(component
  (import "{WASI_IO_POLL}" (instance $poll (export "pollable" (type (sub resource)))))
  (alias export $poll "pollable" (type $pollable))
  (import "{WASI_CLOCKS_MONOTONIC_CLOCK}" (instance $clock
    (export "subscribe-duration" (func (param "when" u64) (result (own $pollable))))))
  (core func $duration (canon lower (func $clock "subscribe-duration")))
  (core module $m
    (import "c" "duration" (func $duration (param i64) (result i32)))
    (func (export "duration") (param i64) (result i32) (call $duration (local.get 0))))
  (core instance $c (export "duration" (func $duration)))
  (core instance $i (instantiate $m (with "c" (instance $c))))
  (func (export "subscribe-duration") (param "when" u64) (result (own $pollable))
    (canon lift (core func $i "duration"))))
"""


class DeadlineClocks:
    """The monotonic clock of one engine's components, its subscriptions held to the
    call's deadline. The clock itself is the host's too (a shadowing definition replaces
    the whole interface at its version, and wasmtime's clock cannot be read from here):
    `now` is this process's CLOCK_MONOTONIC in nanoseconds, its resolution 1 ns, and
    `subscribe-instant` a subscription for the duration until the instant.
    `deadline_of(store)` is time.monotonic() when the store's call in progress must end,
    or None; `helpers(store)` is a dict kept with the store's own state, for its helper
    instance's function (empty: not made yet)."""

    def __init__(self, engine: Engine, linker: Linker, deadline_of: Callable[[object], float | None],
                 helpers: Callable[[object], dict]):
        self.engine, self.linker, self.deadline_of, self.helpers = engine, linker, deadline_of, helpers
        self.native = Linker(engine)  # wasmtime's own clock, for the helper
        self.native.add_wasip2()
        self._helper: Component | None = None
        self.covered: set[str] = set()

    def cover(self, component: Component) -> None:
        """Shadows the monotonic clock at each version `component` imports it."""
        for name in items(component.type, self.engine, "imports"):
            if name.startswith(MONOTONIC_CLOCK) and name not in self.covered:
                self.linker.allow_shadowing = True
                try:
                    with self.linker.root() as root, root.add_instance(name) as clock:
                        clock.add_func("now", lambda store: time.monotonic_ns())
                        clock.add_func("resolution", lambda store: 1)
                        clock.add_func("subscribe-instant", lambda store, when: self._subscribe_duration(
                            store, max(0, when - time.monotonic_ns())))
                        clock.add_func("subscribe-duration", self._subscribe_duration)
                finally:
                    self.linker.allow_shadowing = False
                self.covered.add(name)

    def _subscribe_duration(self, store, when: int):
        deadline = self.deadline_of(store)
        if deadline is not None:  # what is left of the call, and the epoch's tick past it
            when = min(when, max(0, int((deadline + PAST_THE_TICK - time.monotonic()) * 1e9)))
        funcs = self.helpers(store)
        if not funcs:
            if self._helper is None:
                self._helper = Component(self.engine, _HELPER)
            funcs["subscribe-duration"] = self.native.instantiate(store, self._helper).get_func(
                store, "subscribe-duration")
        func = funcs["subscribe-duration"]
        pollable = func(store, when)
        func.post_return(store)
        return pollable


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
_U32 = 0xFFFFFFFF


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
        # wasmtime hands i32s over signed; preview1's pointers and sizes are unsigned
        subscriptions, events, n = subscriptions & _U32, events & _U32, n & _U32
        helper = self._helper_of(caller)
        deadline = self.deadline_of(caller)
        memory = helper["memory"]
        size = memory.data_len(caller)
        if n > MAX_SUBSCRIPTIONS:
            return _EINVAL
        if deadline is None or subscriptions + n * _SUBSCRIPTION.size > size:
            return helper["poll"](caller, subscriptions, events, n, n_events)  # nothing to cut, or refused at once
        if events + n * _EVENT_BYTES > size:
            # wasmtime's own would wait first and find the events' room missing after: the
            # whole timeout, past any deadline
            raise wasmtime.Trap(f"poll_oneoff: the room for its {n} event{'' if n == 1 else 's'} (at {events}) "
                                f"lies past the end of memory ({size} bytes)")
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

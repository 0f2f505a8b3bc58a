"""abi/clocks.py: a guest's WASI sleep (wasmtime's native poll, where the epoch
interrupt does not reach) ends at its call's deadline, whichever clock subscription it
waits on; without a deadline it sleeps as asked. guest/c-sleeper (a component, built from
C), and core modules in WAT calling poll_oneoff with what a hostile one passes."""
from __future__ import annotations

import time

import pytest
import wasmtime

import wasinn
from wasinn.errors import GuestTrap
from wasinn.limits import Limits

from support.guest_builds import ToolchainMissing, c_component, skip_without
from support.repo import ROOT


def ends_at_the_deadline(call):
    """`call()` either traps with the 1 s deadline's line or returns (see above)."""
    try:
        call()
    except GuestTrap as e:
        assert "the call ran past its deadline of 1 s (limit 'deadline', --deadline)" in str(e)


@pytest.fixture(scope="module")
def sleeper():
    try:
        return c_component([ROOT / "guest" / "c-sleeper" / "sleeper.c"], name="sleeper", world="wasinn:guest/ml-command")
    except ToolchainMissing as e:
        skip_without(e)


@pytest.mark.parametrize("how", ["for", "until"])
def test_a_sleep_of_an_hour_ends_at_the_calls_deadline(sleeper, how):
    """Cut to the deadline and an epoch tick: the guest's next step usually meets the
    deadline's trap; where the epoch ticker ran late (a loaded machine) the guest may
    return first, woken early. Either way the call ends at its deadline."""
    host = wasinn.Host(limits=Limits(deadline=1.0))
    instance = host.instantiate(host.load_component(sleeper), env={"SLEEP": how})
    started = time.monotonic()
    ends_at_the_deadline(instance.run)
    assert 0.9 < time.monotonic() - started < 1.5  # the deadline and an epoch tick, not the hour
    again = host.instantiate(host.load_component(sleeper), env={"SLEEP": "short"})
    assert again.run() == 0  # a sleep within the deadline is as asked


def test_without_a_deadline_a_sleep_lasts_as_asked(sleeper):
    host = wasinn.Host(limits=Limits(deadline=0))
    instance = host.instantiate(host.load_component(sleeper), env={"SLEEP": "short"})
    started = time.monotonic()
    assert instance.run() == 0
    assert time.monotonic() - started >= 0.2


def poller(subscriptions: int, n: int, events: int = 64) -> bytes:
    """A core module whose _start exits with poll_oneoff's errno: `n` subscriptions at
    `subscriptions` (a 20 s monotonic sleep lies at 0), room for the events at `events`."""
    return wasmtime.wat2wasm(f"""
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "\\01\\00\\00\\00")
  (data (i32.const 24) "\\00\\c8\\17\\a8\\04\\00\\00\\00")
  (func (export "_start")
    (call $exit (call $poll (i32.const {subscriptions}) (i32.const {events}) (i32.const {n}) (i32.const 128)))))""")


@pytest.mark.parametrize("subscriptions, n, events, outcome", [
    (0, 1, 64, "the call ran past its deadline of 1 s"),        # the 20 s sleep, cut
    (0, 0, 64, 28), (0, -1, 64, 28), (0, 4097, 64, 28),         # EINVAL: none, 2^32 - 1, past MAX_SUBSCRIPTIONS
    (-16, 1, 64, "Pointer out of bounds"),                      # wasmtime's own answer, as without the host's
    (65530, 2, 64, "Pointer out of bounds"),
    # no room for the events: wasmtime's own would sleep the 20 s first, then find that out
    (0, 1, 65520, "the room for its 1 event \\(at 65520\\) lies past the end of memory \\(65536 bytes\\)"),
    (0, 1, -32, "the room for its 1 event"),
])
def test_a_core_modules_poll_oneoff_is_cut_at_the_deadline_and_checked(subscriptions, n, events, outcome):
    host = wasinn.Host(limits=Limits(deadline=1.0))
    instance = host.instantiate(host.load_component(poller(subscriptions, n, events)))
    started = time.monotonic()
    if isinstance(outcome, int):
        assert instance.run() == outcome
    else:
        with pytest.raises(GuestTrap, match=outcome):
            instance.run()
    assert time.monotonic() - started < 1.5


# Start functions run while the instance is made, a call like any other: held to its
# deadline wherever a call is (before, nothing was: a 20 s sleep in a start function slept
# 20 s under a 1 s deadline, one of 2^63 ns never returned).
START_SLEEPING_MODULE = """
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "\\01\\00\\00\\00")
  (data (i32.const 24) "\\ff\\ff\\ff\\ff\\ff\\ff\\ff\\7f")
  (func $sleep (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))))
  (start $sleep)
  (func (export "run") (result i32) (i32.const 7)))"""

START_SLEEPING_COMPONENT = """
(component
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type $p (sub resource)))
    (export "[method]pollable.block" (func (param "self" (borrow $p))))))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (export "subscribe-duration" (func (param "when" u64) (result (own $pollable))))))
  (core func $duration (canon lower (func $clock "subscribe-duration")))
  (core func $block (canon lower (func $poll "[method]pollable.block")))
  (core module $m
    (import "c" "duration" (func $duration (param i64) (result i32)))
    (import "c" "block" (func $block (param i32)))
    (func $sleep (call $block (call $duration (i64.const 0x7fffffffffffffff))))
    (start $sleep)
    (func (export "run") (result i32) (i32.const 7)))
  (core instance $c (export "duration" (func $duration)) (export "block" (func $block)))
  (core instance $i (instantiate $m (with "c" (instance $c))))
  (func (export "run") (result u32) (canon lift (core func $i "run"))))"""


@pytest.mark.parametrize("wat", [START_SLEEPING_MODULE, START_SLEEPING_COMPONENT], ids=["module", "component"])
def test_a_sleep_in_a_start_function_ends_at_the_deadline(wat):
    """The module's sleep meets the poll's deadline check; the component's ends at the
    deadline and an epoch tick, where its start function then returns (or meets the
    deadline's trap on a late tick): either way the instance is made or refused within
    the deadline, and the next call runs."""
    host = wasinn.Host(limits=Limits(deadline=1.0))
    component = host.load_component(wasmtime.wat2wasm(wat))
    for _ in range(2):
        instance = host.instantiate(component)
        started = time.monotonic()
        try:
            assert instance.call("run") == 7
        except wasinn.WasinnError as e:
            assert "the call ran past its deadline of 1 s (limit 'deadline', --deadline)" in str(e)
        assert time.monotonic() - started < 1.5

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


def poller(subscriptions: int, n: int) -> bytes:
    """A core module whose _start exits with poll_oneoff's errno: `n` subscriptions at
    `subscriptions` (a 20 s monotonic sleep lies at 0), events at 64."""
    return wasmtime.wat2wasm(f"""
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "\\01\\00\\00\\00")
  (data (i32.const 24) "\\00\\c8\\17\\a8\\04\\00\\00\\00")
  (func (export "_start")
    (call $exit (call $poll (i32.const {subscriptions}) (i32.const 64) (i32.const {n}) (i32.const 128)))))""")


@pytest.mark.parametrize("subscriptions, n, outcome", [
    (0, 1, "the call ran past its deadline of 1 s"),        # the 20 s sleep, cut
    (0, 0, 28), (0, -1, 28), (0, 4097, 28),                 # EINVAL: none, 2^32 - 1, past MAX_SUBSCRIPTIONS
    (-16, 1, "Pointer out of bounds"),                      # wasmtime's own answer, as without the host's
    (65530, 2, "Pointer out of bounds"),
])
def test_a_core_modules_poll_oneoff_is_cut_at_the_deadline_and_checked(subscriptions, n, outcome):
    host = wasinn.Host(limits=Limits(deadline=1.0))
    instance = host.instantiate(host.load_component(poller(subscriptions, n)))
    started = time.monotonic()
    if isinstance(outcome, int):
        assert instance.run() == outcome
    else:
        with pytest.raises(GuestTrap, match=outcome):
            instance.run()
    assert time.monotonic() - started < 1.5

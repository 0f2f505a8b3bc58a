"""abi/clocks.py: a component's WASI sleep (wasmtime's native poll, where the epoch
interrupt does not reach) ends at its call's deadline, whichever clock subscription it
waits on; without a deadline it sleeps as asked. guest/c-sleeper, built from C."""
from __future__ import annotations

import time

import pytest

import wasinn
from wasinn.errors import GuestTrap
from wasinn.limits import Limits

from support.guest_builds import ToolchainMissing, c_component, skip_without
from support.repo import ROOT


@pytest.fixture(scope="module")
def sleeper():
    try:
        return c_component([ROOT / "guest" / "c-sleeper" / "sleeper.c"], name="sleeper", world="wasinn:guest/ml-command")
    except ToolchainMissing as e:
        skip_without(e)


@pytest.mark.parametrize("how", ["for", "until"])
def test_a_sleep_of_an_hour_ends_at_the_calls_deadline(sleeper, how):
    host = wasinn.Host(limits=Limits(deadline=1.0))
    instance = host.instantiate(host.load_component(sleeper), env={"SLEEP": how})
    started = time.monotonic()
    with pytest.raises(GuestTrap, match=r"the call ran past its deadline of 1 s \(limit 'deadline', --deadline\)"):
        instance.run()
    assert 0.9 < time.monotonic() - started < 1.5  # the deadline and an epoch tick, not the hour
    again = host.instantiate(host.load_component(sleeper), env={"SLEEP": "short"})
    assert again.run() == 0  # a sleep within the deadline is as asked


def test_without_a_deadline_a_sleep_lasts_as_asked(sleeper):
    host = wasinn.Host(limits=Limits(deadline=0))
    instance = host.instantiate(host.load_component(sleeper), env={"SLEEP": "short"})
    started = time.monotonic()
    assert instance.run() == 0
    assert time.monotonic() - started >= 0.2

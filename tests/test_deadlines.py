"""The shared deadline watchdog: fires at the deadline, never after a block ended,
keeps nothing for finished blocks."""
from __future__ import annotations

import sys
import threading
import time

import pytest

from wasinn import deadlines


def test_fires_at_the_deadline_and_in_order():
    fired = []
    done = threading.Event()
    start = time.monotonic()
    with deadlines.stop_at(start + 0.2, lambda: (fired.append(("late", time.monotonic() - start)), done.set())):
        with deadlines.stop_at(start + 0.05, lambda: fired.append(("early", time.monotonic() - start))):
            done.wait(2)
    assert [name for name, _ in fired] == ["early", "late"]
    assert 0.04 <= fired[0][1] < 0.5 and 0.19 <= fired[1][1] < 1.0


def test_a_finished_block_is_never_stopped_and_leaves_nothing_behind():
    fired = []
    for _ in range(1000):
        with deadlines.stop_at(time.monotonic() + 0.05, lambda: fired.append(1)):
            pass
    time.sleep(0.15)
    with deadlines.stop_at(time.monotonic() + 60, lambda: fired.append(1)):
        pass
    assert fired == []
    assert len(deadlines._pending) <= 1 and len(deadlines._cancelled) <= 1


def test_no_deadline_means_no_watchdog_entry():
    before = list(deadlines._pending)
    with deadlines.stop_at(None, lambda: None):
        assert deadlines._pending == before


def test_again_repeats_the_stop_until_the_block_ends():
    """A stop that the work ignores at first (OpenVINO's cancel before its run begins)
    comes again every `again` seconds, and no more once the block has ended."""
    calls = []
    third = threading.Event()

    def stop():
        calls.append(time.monotonic())
        if len(calls) == 3:
            third.set()
    with deadlines.stop_at(time.monotonic() + 0.01, stop, again=0.005):
        assert third.wait(5), f"the stop came {len(calls)} times"
    ended = len(calls)
    time.sleep(0.05)
    assert len(calls) == ended
    assert all(b - a >= 0.004 for a, b in zip(calls, calls[1:]))


def test_the_epoch_ticker_outlives_engines_made_while_it_ticks():
    # a WeakSet that grows while another thread iterates it raises: that once ended the
    # ticker, and every guest deadline in the process with it
    import wasmtime

    def engine() -> wasmtime.Engine:
        config = wasmtime.Config()
        config.epoch_interruption = True
        return wasmtime.Engine(config)
    engines = [engine() for _ in range(3000)]  # a long set to copy: the ticker is often mid-copy
    for e in engines:
        deadlines.EpochTicker.watch(e)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch as often as they can
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            engines.append(engine())
            deadlines.EpochTicker.watch(engines[-1])
    finally:
        sys.setswitchinterval(interval)
    assert deadlines.EpochTicker._thread.is_alive()
    last = engines[-1]
    store = wasmtime.Store(last)
    store.set_epoch_deadline(2)
    spin = wasmtime.Module(last, '(module (func (export "spin") (loop (br 0))))')
    with pytest.raises(wasmtime.Trap):
        wasmtime.Instance(store, spin, []).exports(store)["spin"](store)

"""The shared deadline watchdog: fires at the deadline, never after a block ended,
keeps nothing for finished blocks."""
from __future__ import annotations

import threading
import time

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

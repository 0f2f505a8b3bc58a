"""collector.py: the cyclic collector off a call's arguments. While they are made it
waits; once made, many of them are frozen (no collection walks them) and it runs again;
when the call ends everything frozen returns to the collector, which is left as it was."""
from __future__ import annotations

import gc
import threading

import pytest

from wasinn import collector


@pytest.fixture(autouse=True)
def running_collector():
    was = gc.isenabled()
    gc.enable()
    yield
    gc.unfreeze()
    gc.enable() if was else gc.disable()


def test_many_arguments_are_frozen_for_the_call_and_returned_after():
    collected = []
    gc.callbacks.append(lambda phase, info: collected.append(phase))
    try:
        for _ in range(10):
            collected.clear()
            with collector.holding():
                assert not gc.isenabled()
                arguments = [{"n": i} for i in range(collector.FREEZE_FROM)]  # tracked: dicts with a
                arguments.append([arguments])                                # container inside
                collector.made()
                if collected:  # another thread's collection reset the young count: again
                    continue
                assert gc.isenabled() and gc.get_freeze_count() >= collector.FREEZE_FROM
                gc.collect()  # walks only what came after
            break
        else:
            pytest.fail("another thread collected during each of 10 tries")
    finally:
        gc.callbacks.pop()
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    del arguments


def test_few_arguments_are_not_frozen():
    with collector.holding():
        arguments = [[i] for i in range(100)]
        collector.made()
        assert gc.isenabled() and gc.get_freeze_count() == 0
    assert gc.isenabled()
    del arguments


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    with collector.holding():
        collector.made()
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_holds_in_threads_end_with_the_last():
    inside, leave = threading.Event(), threading.Event()

    def other():
        with collector.holding():
            inside.set()
            leave.wait(10)
    thread = threading.Thread(target=other)
    thread.start()
    inside.wait(10)
    with collector.holding():
        collector.made()
    assert gc.isenabled()  # made: the collector runs again while the other call holds
    leave.set()
    thread.join(10)
    assert gc.isenabled() and gc.get_freeze_count() == 0

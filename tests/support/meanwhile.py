"""Another instance calling on a thread of its own while a test's guest does its worst."""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator


@contextlib.contextmanager
def calls_meanwhile(call: Callable[[], object]) -> Iterator[list]:
    """Calls `call()` over and over on a thread of its own for the length of the block;
    yields the list of what it returned, filled in as it goes (a raise ends the thread:
    the list stops there)."""
    results: list = []
    done = threading.Event()

    def run() -> None:
        while not done.is_set():
            results.append(call())
    thread = threading.Thread(target=run)
    thread.start()
    try:
        yield results
    finally:
        done.set()
        thread.join()

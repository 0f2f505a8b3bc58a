"""Python's cyclic garbage collector kept off a call's arguments.

One call's arguments can be half a million small objects (an accumulate fold of a full
window: 10,000 messages, 65,536 user properties), alive for the call and then freed by
reference counting. Made with the collector running, they were walked again and again as
they were promoted, and once made, the next full collection walked them all: each pass
holds the GIL, 100-150 ms of it, where 100 ms is the most a guest may cause.

So, for a call (`holding`): the collector waits while its arguments are made; once they
are (`made`), if they are many, every object alive is frozen (`gc.freeze`: moved to a
generation no collection walks, in constant time), and the collector runs again, walking
only what is made after; when the call ends the frozen objects return to the oldest
generation (`gc.unfreeze`, constant time too) and the arguments die with their last
reference. Calls in several threads at once share one hold: the last one to end
releases it."""
from __future__ import annotations

import contextlib
import gc
import threading

_lock = threading.Lock()
_holds = 0
_frozen = False
_resume = False  # whether the collector ran when the hold began
# objects made while the collector waited (its youngest generation's count) from which
# `made` freezes them: a fold of 10,000 bare messages makes ~300,000
FREEZE_FROM = 50_000


@contextlib.contextmanager
def holding():
    """Holds the collector for a call: off until `made`, then off what existed by then."""
    global _holds, _resume, _frozen
    with _lock:
        if not _holds:
            _resume = gc.isenabled()
            gc.disable()
        _holds += 1
    try:
        yield
    finally:
        with _lock:
            _holds -= 1
            if not _holds:
                if _frozen:
                    gc.unfreeze()
                    _frozen = False
                elif _resume:
                    gc.enable()


def made() -> None:
    """The arguments of the call under way are made. Where they are many objects, freeze
    them (and everything else alive); either way the collector runs again. (Freezing
    every call would move every young object alive at each call to the oldest
    generation, where cyclic garbage waits for the rare full collection.)"""
    global _frozen
    with _lock:
        if not _holds or _frozen:
            return
        if gc.get_count()[0] >= FREEZE_FROM:
            gc.freeze()
            _frozen = True
        if _resume:
            gc.enable()

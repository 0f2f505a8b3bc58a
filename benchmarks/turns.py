"""Rows that compare ways of doing the same work (isolated, in process, native) time each
way in turns, not call by call: onnxruntime's pool threads spin for ~30 ms after a run
(in process as in a backend worker), so call by call every run met another way's
spinning threads, and the order of the ways decided much of the figures. Each turn
starts after a pause that outlasts the spinning: each way is timed as it runs in a
deployment, alone on the machine, its own threads spinning between its own calls."""
from __future__ import annotations

import time

TURN = 10      # calls per turn
PAUSE = 0.1    # seconds before each turn


def in_turns(ways: dict, n: int) -> dict[str, list[float]]:
    """n timings (seconds) of each of `ways` (name -> a call), TURN calls of one way
    after a PAUSE, then of the next; which way goes first rotates turn by turn."""
    names = list(ways)
    times: dict[str, list[float]] = {name: [] for name in names}
    for turn, done in enumerate(range(0, n, TURN)):
        first = turn % len(names)
        for name in names[first:] + names[:first]:
            time.sleep(PAUSE)
            call = ways[name]
            for _ in range(min(TURN, n - done)):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return times

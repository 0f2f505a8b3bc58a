"""Run by tests/abi/test_hostile_args.py in a fresh process, so that its peak memory is one
hostile call's alone: the guest is set up and warmed (onnxruntime loaded, a first call
made), the peak is reset (/proc/self/clear_refs), then the hostile call runs while a
thread measures the longest time it could not run (the GIL held, or the CPU taken).

    python tests/support/hostile_probe.py '{"wasm": PATH, "limits": {...}, "model": PATH or null, "attack": [KIND, ...]}'

Kinds: ["run", ARGV...] runs a command component with ARGV (after a warm-up run of
"warm"'s ARGV); ["call", NAME, ARGS...] calls an export; ["set_input", DIMS_LEN], ["load", COUNT] and
["load_by_name", LENGTH] call the WITX probe (guest/witx-probe) with that many
dimensions, builders or name bytes, in memory grown for them and never touched. Prints one JSON line last.
"""
from __future__ import annotations

import json
import pathlib
import struct
import sys
import threading
import time

import wasinn
from wasinn.limits import Limits

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/: the support package


def status(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class Stalls:
    """The longest gap between the ticks of a thread that wakes every millisecond."""

    def __enter__(self):
        self.worst, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._tick)
        self._thread.start()
        return self

    def _tick(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(0.001):
            now = time.perf_counter()
            self.worst, last = max(self.worst, now - last), now

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# bytes of guest memory per dimension, builder or name byte
_WIDTH = {"set_input": 4, "load": 8, "load_by_name": 1}


def witx(inst, kind: str, count: int):
    """One WITX call with `count` dimensions or builders, set up with the probe."""
    from support.witx_support import Probe, transpose_model
    import numpy as np
    p = Probe(inst)
    errno, graph = p.load(transpose_model(np.float32))
    assert errno == 0, errno
    _, ctx = p.context(graph)
    out = p.put(b"\0" * 4)
    record = p.tensor([1], 1, b"\0" * 4)  # its dims are pointed at the untouched pages below
    untouched = p.memory_size
    inst.memory.grow(inst._ensure(), count * _WIDTH[kind] // 65536 + 1)
    if kind == "set_input":
        inst.write(record, struct.pack("<II", untouched, count))
        return lambda: p.call("set_input", ctx, 0, record)
    if kind == "load_by_name":
        return lambda: p.call("load_by_name", untouched, count, out)
    return lambda: p.call("load", untouched, count, 1, 0, out)


def main(spec: dict) -> dict:
    host = wasinn.Host(cache_dir=spec["cache"], limits=Limits().updated(spec["limits"]))
    if spec.get("model"):
        host.models.register("model", spec["model"])
    component = host.load_component(spec["wasm"])
    kind, *args = spec["attack"]
    if kind == "run":
        host.instantiate(component, args=spec["warm"]).run()
        inst = host.instantiate(component, args=args)
        attack = inst.run
    elif kind == "call":
        inst = host.instantiate(component)
        inst.call(args[0], 1)  # warm
        attack = lambda: inst.call(*args)  # noqa: E731
    else:
        host.core_modules.errors_to_stderr = False
        inst = host.instantiate(component)
        attack = witx(inst, kind, args[0])
    before = status("VmRSS")
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here
    with Stalls() as stalls:
        start = time.perf_counter()
        try:
            got = ["returned", attack()]
        except wasinn.GuestTrap as e:
            got = ["trapped", str(e)]
        seconds = time.perf_counter() - start
    error = inst.last_nn_error
    return {"outcome": got, "last_error": str(error) if error else None, "seconds": seconds,
            "stall": stalls.worst, "rss_before": before, "peak": status("VmHWM")}


if __name__ == "__main__":
    sys.stdout.flush()
    print("\n" + json.dumps(main(json.loads(sys.argv[1]))))

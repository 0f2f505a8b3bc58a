"""Runs one hostile model through a real guest in this (child) process and prints what
happened as one JSON line: each call's result and time, the host's and the worker's
peak RSS, and whether the same instance then loads and computes a trivial model.

A child of the test, so that a host that dies of a model kills only this process:
`python hostile_run.py '{"case": ..., "limits": {...}, "abi": "component"|"witx",
"victim": false}'`.
"""
from __future__ import annotations

import json
import statistics
import struct
import sys
import threading
import time

import numpy as np

import wasinn
from wasinn.limits import Limits

from support import hostile_models
from support import models
from support.repo import CACHE, guest_component
from support.witx_support import Probe, probe_wasm, transpose_model

WITX_ENCODING = {"openvino": 0, "onnx": 1, "tensorflowlite": 4}


def vm(pid, field: str = "VmHWM") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) << 10
    return 0


class Component:
    """The roundtrip guest: load, init-context, compute-tensors."""

    def __init__(self, host):
        self.inst = host.instantiate(host.load_component(guest_component("roundtrip")))

    def run(self, builders, encoding, shape, calls: list) -> None:
        x = np.ones(shape, np.float32)
        steps = [("load", lambda: (builders, encoding, "cpu")), ("init-context", lambda: (self.last,)),
                 ("compute-tensors", lambda: (self.last, [("x", x)]))]
        for name, args in steps:
            start = time.monotonic()
            try:
                result = self.inst.call(name, *args())
            except wasinn.GuestTrap as e:
                calls.append({"call": name, "seconds": time.monotonic() - start, "trap": str(e)})
                return
            entry = {"call": name, "seconds": time.monotonic() - start}
            calls.append(entry)
            if result.tag == "err":
                entry.update(code=result.payload.code, message=result.payload.data)
                return
            self.last = result.payload

    def trivial(self) -> bool:
        g = self.inst.call("load", [models.identity(wasinn.TensorType.FP32, (2, 3))], "onnx", "cpu")
        ctx = self.inst.call("init-context", g.payload)
        out = self.inst.call("compute-tensors", ctx.payload, [("x", np.arange(6, dtype=np.float32).reshape(2, 3))])
        return out.tag == "ok" and out.payload[0][1].array().tolist() == [[0, 1, 2], [3, 4, 5]]

    @property
    def session(self):
        return self.inst._session


class Witx:
    """The WITX probe core module: load, init_execution_context, set_input, compute."""

    def __init__(self, host):
        host.core_modules.errors_to_stderr = False
        self.inst = host.instantiate(host.load_component(probe_wasm()))
        self.probe = Probe(self.inst)

    def run(self, builders, encoding, shape, calls: list) -> None:
        p = self.probe
        x = np.ones(shape, np.float32)
        steps = [("load", lambda: self.load(builders, WITX_ENCODING[encoding])),
                 ("init_execution_context", lambda: p.context(self.last)),
                 ("set_input", lambda: (p.call("set_input", self.last, 0, p.tensor(list(shape), 1, x.tobytes())),
                                        self.last)),
                 ("compute", lambda: (p.call("compute", self.last), self.last))]
        for name, step in steps:
            start = time.monotonic()
            errno, value = step()
            entry = {"call": name, "seconds": time.monotonic() - start}
            calls.append(entry)
            if errno:
                error = self.inst.last_nn_error
                entry.update(errno=errno, code=error.code.value, message=error.message)
                return
            self.last = value

    def load(self, builders: list[bytes], encoding: int) -> tuple[int, int]:
        """Probe.load of several builders (an OpenVINO IR's XML and weights)."""
        p = self.probe
        pairs = b"".join(struct.pack("<II", p.put(b), len(b)) for b in builders)
        out = p.put(b"\0" * 4)
        errno = p.call("load", p.put(pairs), len(builders), encoding, 0, out)
        # reading guest memory after a worker's death would recycle the instance now,
        # and with it the error and the worker this report is about
        return errno, p.u32(out) if errno == 0 else 0

    def trivial(self) -> bool:
        p = self.probe
        errno, g = p.load(transpose_model(np.float32))
        _, ctx = p.context(g)
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        p.call("set_input", ctx, 0, p.tensor([2, 3], 1, x.tobytes()))
        return errno == 0 and p.call("compute", ctx) == 0 and p.output(ctx, 0, 24) == (0, x.T.tobytes())

    @property
    def session(self):
        return self.inst._session


def victim(host, stop: threading.Event, solo: list, during: list, ready: threading.Event) -> None:
    """Another instance computing a small model: its latencies alone, then while `stop`
    is not set (the hostile call runs)."""
    other = Component(host)
    g = other.inst.call("load", [models.add_mul()], "onnx", "cpu").payload
    ctx = other.inst.call("init-context", g).payload
    a = np.ones((2, 3), np.float32)

    def once() -> float:
        start = time.monotonic()
        assert other.inst.call("compute-tensors", ctx, [("a", a), ("b", a)]).tag == "ok"
        return time.monotonic() - start
    for _ in range(10):
        once()
    solo.extend(once() for _ in range(50))
    ready.set()
    while not stop.is_set():
        during.append(once())


def main(spec: dict) -> dict:
    host = wasinn.Host(cache_dir=CACHE, limits=Limits().updated(spec.get("limits", {})))
    guest = (Witx if spec.get("abi") == "witx" else Component)(host)
    builders, encoding, shape = hostile_models.CASES[spec["case"]]
    builders = builders()
    assert guest.trivial()  # the worker is up, holding one graph: the baseline
    worker = guest.session.worker
    report = {"host_base": vm("self"), "worker_base": vm(worker.pid) if worker else 0,
              "worker_base_vmsize": vm(worker.pid, "VmSize") if worker else 0, "calls": []}
    solo, during, stop, ready = [], [], threading.Event(), threading.Event()
    thread = None
    if spec.get("victim"):
        thread = threading.Thread(target=victim, args=(host, stop, solo, during, ready))
        thread.start()
        ready.wait()
    try:
        guest.run(builders, encoding, shape, report["calls"])
    finally:
        stop.set()
        if thread:
            thread.join()
    worker = guest.session.worker if guest.session is not None else None  # None: the guest trapped
    if worker is not None:
        report["worker_pid"] = worker.pid
        # the fork server that forked it: whether it still runs, for a failure's message
        # (a victim's worker would have died with it: that case asserts it)
        report["fork_server"] = worker.server.process.poll()
        if worker.dead:
            ended = worker.server.ended(worker.pid)
            report.update(worker_status=ended.get("status"), worker_peak=ended.get("peak_rss", 0))
        else:
            report.update(worker_status="alive", worker_peak=vm(worker.pid))
    report["host_peak"] = vm("self")
    start = time.monotonic()
    report["next_ok"] = guest.trivial()
    report["next_seconds"] = time.monotonic() - start
    if thread:
        report.update(victim_solo=statistics.median(solo), victim_during=statistics.median(during),
                      victim_during_p90=statistics.quantiles(during, n=10)[-1] if len(during) > 1 else 0,
                      victim_calls=len(during))
    return report


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)

"""Run by tests/test_host_memory.py in a fresh process, so that its peak memory
(VmHWM) is this scenario's alone: instances of the roundtrip guest compute one model
and the process reports what each got and its memory.

    python tests/support/host_memory_probe.py '{"limits": {...}, "model": PATH, "inputs": [[NAME, TYPE, DIMS, HEX]],
                                        "threads": 1, "then": PATH}'

`then`: a second model each instance runs afterwards (it must still serve).
`contexts`: how many contexts each instance makes and runs once, all kept (default 1).
"""
from __future__ import annotations

import json
import pathlib
import sys
import threading

from wasmtime.component import Record

import wasinn
from wasinn import TensorType
from wasinn.limits import Limits


def status(field: str) -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def value(ty: str, dims: list[int], data: bytes) -> Record:
    r = Record()
    r.dimensions, r.ty, r.data = list(dims), TensorType[ty].value, data
    return r


def outcome(result) -> list:
    if result.tag == "ok":
        return ["ok", [[name, bytes(v.data[:16]).hex(), len(v.data)] for name, v in result.payload]]
    return [result.payload.code, result.payload.data]


def main(spec: dict) -> dict:
    host = wasinn.Host(cache_dir=spec["cache"], limits=Limits().updated(spec["limits"]))
    host.models.register("model", spec["model"])
    if spec.get("then"):
        host.models.register("then", spec["then"])
    component = host.load_component(spec["component"])
    inputs = [(name, value(ty, dims, bytes.fromhex(data))) for name, ty, dims, data in spec["inputs"]]
    instances = [host.instantiate(component) for _ in range(spec.get("threads", 1))]
    contexts, graphs = [], []
    for inst in instances:
        graphs.append(inst.call("load-by-name", "model").payload)
        contexts.append(inst.call("init-context", graphs[-1]).payload)
    live_before = [inst.live_resources() for inst in instances]
    baseline = status("VmRSS")
    results: list = [None] * len(instances)
    barrier = threading.Barrier(len(instances))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = outcome(instances[i].call("compute", contexts[i], inputs))
        for _ in range(spec.get("contexts", 1) - 1):
            more = instances[i].call("init-context", graphs[i]).payload
            got = outcome(instances[i].call("compute", more, inputs))
            if got[0] != "ok":
                results[i] = got

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(instances))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    live_computed = [inst.live_resources() for inst in instances]
    after = []
    for inst in instances:
        if spec.get("then"):
            ctx = inst.call("init-context", inst.call("load-by-name", "then").payload).payload
            after.append(outcome(inst.call("compute", ctx, inputs)))
    live = [inst.live_resources() for inst in instances]
    return {"results": results, "after": after, "live_before": live_before, "live_computed": live_computed, "live": live, "baseline_rss": baseline,
            "rss": status("VmRSS"), "peak": status("VmHWM"), "started": [i.instances_started for i in instances]}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))

"""The isolation section of benchmarks/bench.py: what running guest-supplied graphs in a
backend worker process (backends/isolated.py) costs, next to the same work in process
and to native onnxruntime, in one run.

Rows: the C component's tensor + compute + data on EfficientNet-Lite0 (the model loaded
from guest bytes by graph.load) isolated, in process and native, in turns (turns.py); a trivial
model's compute round trip, isolated and in process (the backend's own call, median of
many); the first graph.load of the 18.6 MB model in a fresh process, both ways, beside
the in-process figure when its graph cache already holds it; the first load of a trivial
model in a new instance (the worker's fork and the session included, the fork server
already up); and one worker's memory.
"""
from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

import wasinn
from wasinn.limits import Limits

from turns import TURN, in_turns

CHILD_COLD_LOAD = """
import sys, time, numpy as np, wasinn
from wasinn.limits import Limits
host = wasinn.Host(cache_dir=sys.argv[1], limits=Limits(isolate=sys.argv[3]))
inst = host.instantiate(host.load_component(sys.argv[2]))
model = np.fromfile(sys.argv[4], np.uint8)
t = time.perf_counter()
assert inst.call("load-model", model).tag == "ok"
first = time.perf_counter() - t
with host.instantiate(host.load_component(sys.argv[2])) as again:
    t = time.perf_counter()
    assert again.call("load-model", model).tag == "ok"
    print(first, time.perf_counter() - t)
"""


def rows(row, progress, child, c_guest, root, cache, threads: int, quick: bool) -> None:
    model = root / "models" / "efficientnet-lite0" / "model.onnx"
    wasm = c_guest()
    hosts = {policy: wasinn.Host(cache_dir=cache, ort_threads=threads, limits=Limits(isolate=policy))
             for policy in ("guest-models", "none")}
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    native = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    insts = {}
    for policy, host in hosts.items():
        inst = insts[policy] = host.instantiate(host.load_component(wasm))
        assert inst.call("load-model", np.frombuffer(model.read_bytes(), np.uint8)).tag == "ok"
        inst.call("set-input", "input", x)
    runs = {"isolated": lambda: insts["guest-models"].call("infer"), "in process": lambda: insts["none"].call("infer"),
            "native": lambda: native.run(None, {"input": x})}
    for fn in runs.values():
        for _ in range(5):
            fn()
    n = 30 if quick else 200
    progress(f"isolation: C component on EfficientNet-Lite0, {n} inferences each way, in turns of {TURN}")
    times = in_turns(runs, n)
    med = {name: 1e3 * statistics.median(ts) for name, ts in times.items()}
    row("isolation", "C: tensor + compute + data, isolated", med["isolated"], med["native"], "ms", "<= 1.15x",
        note="reference: InferenceSession.run")
    row("isolation", "C: tensor + compute + data, in process", med["in process"], med["native"], "ms",
        note="the same run with --isolate none")
    row("isolation", "C: isolated minus in process", med["isolated"] - med["in process"], None, "ms", "<= 0.1 ms")
    for inst in insts.values():
        inst.close()

    progress("isolation: a trivial model's compute round trip, backend call, isolated and in process")
    sys.path.insert(0, str(root / "tests"))
    from support import models
    from wasinn import HostTensor
    from wasinn._bindings import ExecutionTarget, GraphEncoding
    from wasinn.backends import default_backends
    from wasinn.backends.isolation import Isolation

    class Owner:  # what Isolation keeps per instance
        worker = None
    isolation, owner = Isolation(Limits()), Owner()
    graphs = {"isolated": isolation.load(owner, "onnxruntime", GraphEncoding.ONNX, threads, "f32",
                                         [models.add_mul()], ExecutionTarget.CPU, None),
              "in process": default_backends(threads)[GraphEncoding.ONNX].load([models.add_mul()], ExecutionTarget.CPU)}
    contexts = {name: g.init_execution_context() for name, g in graphs.items()}
    inputs = [HostTensor.from_array(np.ones((2, 3), np.float32))] * 2
    calls = 1000 if quick else 5000
    round_trip = {name: [] for name in contexts}
    for _ in range(5):  # alternating blocks: the two share the machine's state alike
        for name, ctx in contexts.items():
            for _ in range(100):
                ctx.compute(inputs)
            for _ in range(calls // 5):
                t = time.perf_counter()
                ctx.compute(inputs)
                round_trip[name].append(time.perf_counter() - t)
    rt = {name: 1e6 * statistics.median(ts) for name, ts in round_trip.items()}
    row("isolation", f"trivial model compute, isolated (median of {calls})", rt["isolated"], rt["in process"], "us",
        note="reference: in process")
    row("isolation", "trivial model compute, isolated minus in process", rt["isolated"] - rt["in process"], None,
        "us", "<= 50 us")
    pid = owner.worker.pid
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
    rollup = dict(line.split(":", 1) for line in open(f"/proc/{pid}/smaps_rollup") if ":" in line)
    row("isolation", "one worker's memory: RSS (PSS)", int(status["VmRSS"].split()[0]) / 1024,
        None, "MiB", note=f"PSS {int(rollup['Pss'].split()[0]) / 1024:.1f} MiB: its pages shared with the fork "
                          "server count once; a trivial graph loaded")
    owner.worker.close()

    progress("isolation: the first load of a trivial model in a new instance, the worker's start included")
    host = hosts["guest-models"]
    comp = host.load_component(wasm)
    trivial = np.frombuffer(models.identity(wasinn.TensorType.FP32, (1, 4)), np.uint8)
    firsts = []
    for _ in range(5 if quick else 20):
        with host.instantiate(comp) as inst:
            inst.call("echo", np.zeros(4, np.uint8))  # the instance exists; its worker does not yet
            t = time.perf_counter()
            assert inst.call("load-model", trivial).tag == "ok"
            firsts.append(time.perf_counter() - t)
    row("isolation", "first graph.load of a trivial model in an instance", 1e3 * statistics.median(firsts), None,
        "ms", "<= 50 ms", note="fork + confinement + session + context; the fork server already running")

    progress("isolation: the first graph.load of the 18.6 MB model in a fresh process, both ways")
    # the two ways in turns, each child after a pause: one after another, each way met the
    # machine's other moods and the last child's processes still exiting (0.09-0.12 s in
    # process within minutes, 0.94-1.57x over three runs of three children each)
    outs = {"guest-models": [], "none": []}
    for _ in range(3 if quick else 7):
        for policy, out in outs.items():
            time.sleep(0.3)
            out.append(child(CHILD_COLD_LOAD, str(cache), str(wasm), policy, str(model)).split())
    cold = {policy: (statistics.median(float(o[0]) for o in out), statistics.median(float(o[1]) for o in out))
            for policy, out in outs.items()}
    row("isolation", "cold first graph.load of 18.6 MB, isolated", cold["guest-models"][0], cold["none"][0], "s",
        "<= 1.2x", note="fresh process each; isolated: the fork server started at wasinn.Host's lookup "
                        "(imports onnxruntime there); in process: onnxruntime imported here")
    row("isolation", "the same, a second instance of the same process", cold["guest-models"][1], cold["none"][1], "s",
        note="isolated: a new worker parses it again; in process: the graph cache already holds it")

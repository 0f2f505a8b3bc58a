"""The operators section of benchmarks/bench.py: an Azure data-flow JSON map operator's
export called in a loop through `Operator.map` (pipeline/operator.py: the message to a
data-model with its payload as a host buffer, the call, the result back), next to the
same conversion done by native Python on the same payload, interleaved.

Rows: guest/temperature's map (componentize-py) and guest/js-operator's map
(componentize-js) per message; the raw export call with the data-model already built and
its payload inline (what `Operator.map` adds is the difference); the snapshot map in C
(guest/snapshot-c) and in Python (guest/snapshot, componentize-py) per 224x224 frame
(buffer.read of 150,528 bytes, wasi:nn on the embedded EfficientNet-Lite0, top-5 JSON)
vs native onnxruntime on the same model and frame plus the same JSON, each under the
default isolation and `--isolate none`; their throughput per worker (frames/s, one after
another) next to the native loop's, the two loops taking turns (turns.py). The MQTT
side: a worker (pipeline/worker.py, in this process, on a mosquitto the row starts; its
publisher and subscriber in a process of their own, mqtt_driver.py) serving a graph of
the temperature map, from its client's on-message callback to the return of the publish
call for the result (the client's work included, the broker's excluded; messages one at
a time), next to the same export called in a loop on the message the worker's operator
gets (target: at most 0.3 ms more).
"""
from __future__ import annotations

import io
import json
import pathlib
import statistics
import sys

from wasmtime.component import Variant

import wasinn
from wasinn.limits import Limits
from wasinn.pipeline.jsonlog import EventLog
from wasinn.pipeline.operator import Message, Operator, Services, Timestamp
from wasinn.pipeline.services.imports import active

from turns import in_turns

PAYLOAD = b'{"temperature": {"value": 1209, "unit": "F"}}'


def _native(payload: bytes) -> bytes:
    data = json.loads(payload)
    t = data["temperature"]
    if t["unit"] == "F":
        t["value"], t["unit"] = (float(t["value"]) - 32.0) * 5.0 / 9.0, "C"
    return json.dumps(data, separators=(",", ":")).encode()


def rows(row, progress, interleaved, p99, root, cache, host, threads: int, quick: bool) -> None:
    sys.path.insert(0, str(root / "tests"))
    from support import operator_guests
    n = 100 if quick else 1000
    services = Services.embedded(log=EventLog(stream=io.StringIO()))
    message = Message(PAYLOAD, topic="sensors/temperature", timestamp=Timestamp(1_700_000_000, 0, 0, "bench"))
    guests = {"temperature map (componentize-py)": operator_guests.operator_wasm("temperature")}
    try:
        guests["JS map (componentize-js)"] = operator_guests.js_operator_wasm()
    except Exception as e:  # the JavaScript toolchain is optional here
        progress(f"no JavaScript operator: {e}")
    for label, wasm in guests.items():
        progress(f"operators: {label}")
        op = Operator.open(host, wasm, kind="map", name="bench", services=services)
        op.init()
        for _ in range(20):
            op.map(message)
        ops, native = interleaved(lambda: op.map(message), lambda: _native(PAYLOAD), n)
        row("operators", f"{label}: Operator.map", statistics.median(ops) * 1e3,
            statistics.median(native) * 1e3, "ms", note="vs the conversion in native Python")
        if label.startswith("temperature"):
            # the export alone, its data-model built once with the payload inline
            model = op._give(message, [])
            model.payload["payload"] = Variant("bytes", PAYLOAD)
            func = f"{op._iface}#process"

            def raw():
                with active(op.imports):
                    return op.instance.call(func, model)
            raws, maps = interleaved(raw, lambda: op.map(message), n)
            row("operators", f"{label}: the export alone", statistics.median(raws) * 1e3,
                statistics.median(maps) * 1e3, "ms", note="vs Operator.map (buffer, conversions)")
        op.close()
    _buffer_read(row, progress, interleaved, host, services, 20 if quick else 100)
    _span_results(row, progress, interleaved, host, services, 20 if quick else 100)
    try:
        _mqtt_map(row, progress, p99, root, cache, host, services, 50 if quick else 300)
    except Exception as e:  # mosquitto is optional here (scripts/setup-mqtt.sh)
        progress(f"no MQTT row: {type(e).__name__}: {e}")
    _snapshot(row, progress, p99, root, cache, host, threads, services, 10 if quick else 60)
    services.close()


def _snapshot(row, progress, p99, root, cache, host, threads, services, n: int) -> None:
    from support import operator_guests
    import numpy as np
    import onnxruntime as ort
    from PIL import Image
    from wasinn.apps.classify import composed_model
    from wasinn.pipeline.operator import Snapshot
    progress("operators: snapshot (EfficientNet-Lite0 built in)")
    with Image.open(root / "images" / "chelsea.png") as im:
        frame = im.convert("RGB").resize((224, 224), Image.BILINEAR).tobytes()
    labels = (root / "models" / "efficientnet-lite0" / "labels.txt").read_text().splitlines()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(composed_model(cache, progress)), options, providers=["CPUExecutionProvider"])
    snap = Snapshot(frame, 224, 224, "rgb24", Timestamp(1, 0, 0, "bench"))

    def native():
        ranked = session.run(["ranked"], {"image": np.frombuffer(frame, np.uint8).reshape(224, 224, 3)})[0]
        top = [{"label": labels[int(i)], "index": int(i), "score": round(float(v), 6)}
               for v, i in zip(ranked[0, :5], ranked[1, :5])]
        return json.dumps({"object": {"result": top[0]["label"], "top5": top}}, separators=(",", ":"))
    # the operator's model comes from its own bytes: isolated by default (a backend worker)
    hosts = {"default isolation": host,
             "--isolate none": wasinn.Host(cache_dir=cache, ort_threads=threads, limits=Limits(isolate="none"))}
    operators = {}
    try:
        operators["C"] = operator_guests.snapshot_c_wasm()
    except Exception as e:  # the C toolchain is optional here (scripts/setup-guest-toolchains.sh)
        progress(f"no C snapshot operator: {e}")
    operators["componentize-py"] = operator_guests.snapshot_wasm()
    for label, h in hosts.items():
        for kind, wasm in operators.items():
            op = Operator.open(h, wasm, kind="map", name="snapshot", services=services)
            op.init()
            for _ in range(3):
                op.map(snap)
                native()
            times = in_turns({"operator": lambda: op.map(snap), "native": native}, n)
            ops, nat = times["operator"], times["native"]
            row("operators", f"snapshot map ({kind}) per frame, {label}", statistics.median(ops) * 1e3,
                statistics.median(nat) * 1e3, "ms", note="vs native onnxruntime + top-5 JSON")
            row("operators", f"snapshot map ({kind}) p99, {label}", p99(ops) * 1e3, p99(nat) * 1e3, "ms")
            # the target is the compiled operator's, as Azure's own is (Rust); the
            # interpreter's rows say what Python in the guest costs
            row("operators", f"image graph frames/s per worker ({kind}), {label}", len(ops) / sum(ops),
                len(nat) / sum(nat), "1/s", target=">= 0.9x" if kind == "C" else "", lower_is_better=False,
                note="vs native preprocessing + onnxruntime + top-5 (this machine is shared)")
            op.close()


_GRAPH = """
metadata: {name: bench-map, version: "1.0.0"}
moduleRequirements: {apiVersion: "1.1.0", runtimeVersion: "1.1.0"}
operations:
  - {operationType: source, name: source}
  - {operationType: map, name: module-temperature/map, module: temperature}
  - {operationType: sink, name: sink}
connections:
  - {from: {name: source}, to: {name: module-temperature/map}}
  - {from: {name: module-temperature/map}, to: {name: sink}}
"""


def _mqtt_map(row, progress, p99, root, cache, host, services, n: int) -> None:
    """on-message -> publish return in a worker of the temperature graph, vs the export in a loop."""
    import subprocess
    import tempfile
    import threading
    import time

    from support import operator_guests
    from support.pipeline_service import Broker
    from wasinn.pipeline.engine import open_runner
    from wasinn.pipeline.graphdef import ServeFlags, resolve
    from wasinn.pipeline.metrics import WorkerMetrics
    from wasinn.pipeline.supervisor import prepare
    from wasinn.pipeline.worker import Worker
    progress("operators: JSON map over MQTT (a worker in this process, mosquitto)")
    wasm = operator_guests.operator_wasm("temperature")
    log = EventLog(stream=io.StringIO())
    with tempfile.TemporaryDirectory(prefix="wasinn-bench-") as tmp, Broker() as broker:
        graph = pathlib.Path(tmp) / "graph.yaml"
        graph.write_text(_GRAPH)
        flow = resolve(graph, ServeFlags(modules={"temperature": wasm}, sources=("bench/in",), sink="bench/out",
                                         broker=broker.address))
        served, runner = open_runner(prepare(flow, cache, log), host, log, "bench-worker")
        worker = Worker(served, runner, "bench-worker", log, WorkerMetrics("bench-worker"))
        received: list[float] = []
        published: list[float] = []
        on_message, link_publish = worker._on_message, worker.link.publish

        def timed_on_message(c, userdata, msg):
            received.append(time.perf_counter())
            on_message(c, userdata, msg)

        def timed_publish(*args):
            link_publish(*args)
            published.append(time.perf_counter())
        worker.client.on_message, worker.link.publish = timed_on_message, timed_publish
        runner.warm_up(log)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        # the publisher and the subscriber in a process of their own (mqtt_driver.py)
        driver = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).with_name("mqtt_driver.py")),
                                   str(broker.port), str(n + 20), PAYLOAD.decode()],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            if driver.stdout.readline().strip() != "ready":
                raise RuntimeError(f"mqtt_driver.py did not start (exit status {driver.wait()})")
            if not worker.connected.wait(30):
                raise RuntimeError("the worker did not connect")
            time.sleep(0.5)  # its subscription is in place
            driver.stdin.write("go\n")
            driver.stdin.flush()
            if driver.stdout.readline().strip() != "done":
                raise RuntimeError(f"mqtt_driver.py stopped (exit status {driver.wait()})")
        finally:
            driver.kill()
            driver.wait()
        worker.stop()
        thread.join(30)
    spans = [b - a for a, b in zip(received, published)][20:]
    op = Operator.open(host, wasm, kind="map", name="bench-loop", services=services)
    op.init()
    # the message the worker's operator gets: its `id` user property (the publisher's) goes
    # into the operator and comes back with its result (~30 us of the export's time)
    message = Message(PAYLOAD, topic="bench/in", user_properties=[("id", f"m{n}")],
                      timestamp=Timestamp(1_700_000_000, 0, 0, "bench"))
    for _ in range(20):
        op.map(message)
    loop = []
    for _ in range(n):
        t = time.perf_counter()
        op.map(message)
        loop.append(time.perf_counter() - t)
    op.close()
    row("operators", "JSON map: on-message to publish return (worker)", statistics.median(spans) * 1e3,
        statistics.median(loop) * 1e3, "ms", target="<= +0.3 ms",
        note="vs Operator.map in a loop (broker excluded; this machine is shared)")
    row("operators", "JSON map: on-message to publish return p99", p99(spans) * 1e3, p99(loop) * 1e3, "ms")


def _buffer_read(row, progress, interleaved, host, services, n: int) -> None:
    """guest/operator-probe's filter reads its payload with buffer.read (the data path's
    buffers block): a 150,528-byte frame and 4 MiB, next to a 4-byte payload."""
    from support import operator_guests
    progress("operators: buffer.read (componentize-py)")
    op = Operator.open(host, operator_guests.operator_wasm("operator-probe"), kind="filter", name="bench-read",
                       services=services)
    op.init()
    small = Message(b"pass", topic="t")
    for size in (150_528, 4 << 20):
        big = Message(bytes(size), topic="t")
        op.filter(big)
        reads, smalls = interleaved(lambda: op.filter(big), lambda: op.filter(small), n)
        row("operators", f"filter reading a {size:,}-byte payload", statistics.median(reads) * 1e3,
            statistics.median(smalls) * 1e3, "ms", note="vs a 4-byte payload (buffer.read on the data path)")
    op.close()


def _span_results(row, progress, interleaved, host, services, n: int) -> None:
    """guest/operator-probe's accumulate hands a 150,528-byte frame back as `bytes`: its
    process lifted again with spans (the data path's results block, read with one copy)
    next to the standard lift of the same export (wasmtime-py, one value per byte)."""
    from support import operator_guests
    progress("operators: result bytes (componentize-py)")
    op = Operator.open(host, operator_guests.operator_wasm("operator-probe"), kind="accumulate", name="bench-results",
                       services=services)
    op.init()
    frame, spans = bytes(150_528), op._spans

    def through(export):
        def run():
            op._spans = export
            return op.accumulate(frame, [])
        return run
    through(spans)(), through(None)()
    fast, standard = interleaved(through(spans), through(None), n)
    op._spans = spans
    row("operators", "accumulate returning 150,528 bytes: span results", statistics.median(fast) * 1e3,
        statistics.median(standard) * 1e3, "ms", note="vs the standard lift of the same export (per value)")
    op.close()

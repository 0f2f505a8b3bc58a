"""The operators section of benchmarks/bench.py: an Azure data-flow JSON map operator's
export called in a loop through `Operator.map` (pipeline/operator.py: the message to a
data-model with its payload as a host buffer, the call, the result back), next to the
same conversion done by native Python on the same payload, interleaved.

Rows: guest/temperature's map (componentize-py) and guest/js-operator's map
(componentize-js) per message; the raw export call with the data-model already built
and its payload inline (what `Operator.map` adds is the difference); guest/snapshot's
map per 224x224 frame (buffer.read of 150,528 bytes, wasi:nn on the embedded
EfficientNet-Lite0, top-5 JSON) vs native onnxruntime on the same model and frame plus
the same JSON. The MQTT side (on-message to publish) is measured by the engine's rows
against these.
"""
from __future__ import annotations

import io
import json
import statistics
import sys

from wasmtime.component import Variant

import wasinn
from wasinn.limits import Limits
from wasinn.pipeline.jsonlog import EventLog
from wasinn.pipeline.operator import Message, Operator, Services, Timestamp
from wasinn.pipeline.services.imports import active

PAYLOAD = b'{"temperature": {"value": 1209, "unit": "F"}}'


def _native(payload: bytes) -> bytes:
    data = json.loads(payload)
    t = data["temperature"]
    if t["unit"] == "F":
        t["value"], t["unit"] = (float(t["value"]) - 32.0) * 5.0 / 9.0, "C"
    return json.dumps(data, separators=(",", ":")).encode()


def rows(row, progress, interleaved, p99, root, cache, host, threads: int, quick: bool) -> None:
    sys.path.insert(0, str(root / "tests"))
    import operator_guests
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
    _snapshot(row, progress, interleaved, p99, root, cache, host, threads, services, 10 if quick else 60)
    services.close()


def _snapshot(row, progress, interleaved, p99, root, cache, host, threads, services, n: int) -> None:
    import operator_guests
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
    for label, h in hosts.items():
        op = Operator.open(h, operator_guests.snapshot_wasm(), kind="map", name="snapshot", services=services)
        op.init()
        for _ in range(3):
            op.map(snap)
            native()
        ops, nat = interleaved(lambda: op.map(snap), native, n)
        row("operators", f"snapshot map per frame, {label}", statistics.median(ops) * 1e3,
            statistics.median(nat) * 1e3, "ms", note="vs native onnxruntime + top-5 JSON")
        row("operators", f"snapshot map p99, {label}", p99(ops) * 1e3, p99(nat) * 1e3, "ms")
        op.close()

"""The operators section of scripts/bench.py: an Azure data-flow JSON map operator's
export called in a loop through `Operator.map` (pipeline/operator.py: the message to a
data-model with its payload as a host buffer, the call, the result back), next to the
same conversion done by native Python on the same payload, interleaved.

Rows: guest/temperature's map (componentize-py) and guest/js-operator's map
(componentize-js) per message; the raw export call with the data-model already built
(what `Operator.map` adds is the difference); and the temperature map with the
operator's buffer replaced by inline bytes in the data-model. The MQTT side (on-message
to publish) is measured by the engine's rows against these.
"""
from __future__ import annotations

import io
import json
import statistics
import sys

from wasmtime.component import Variant

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


def rows(row, progress, interleaved, root, cache, host, quick: bool) -> None:
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
    services.close()

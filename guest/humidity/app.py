"""Azure IoT Operations' humidity module (samples/wasm/operators/humidity), in Python: an
accumulate operator folding a window's humidity readings into the staged summary
`{"humidity":{"count":N,"max":..,"min":..,"average":..,"last":..}}` (numbers as Rust's
`{}` writes f64), taking the topic and timestamp of the latest reading, as Azure's does.
Built with guest/azure-measurements/measurements.py beside it.
"""
from componentize_py_types import Err

import measurements
from wit_world import exports
from wit_world.imports import metrics, types

CONTEXT = "module-humidity/accumulate"


def _bytes(value):
    return value.value.read() if isinstance(value, types.BufferOrBytes_Buffer) else value.value


class Accumulate(exports.Accumulate):
    def init(self, configuration):
        return True

    def process(self, staged, message):
        try:
            metrics.add_to_counter("requests", metrics.CounterValue_U64(1), [metrics.Label("module", CONTEXT)])
        except Err:
            pass  # a metric the host refuses must not fail the window
        if not isinstance(staged, types.DataModel_Message):
            raise Err(types.Error("Unexpected input type."))
        result = staged.value
        count, total, high, low, last = 0, 0.0, measurements.F64_MIN, measurements.F64_MAX, 0.0
        payload = _bytes(result.payload)
        if payload:
            try:
                kind, h = measurements.loads(payload)
            except measurements.Invalid:
                kind = None
            if kind == "humidity":
                count, total = h["count"], h["average"] * h["count"]
                high, low, last = h["max"], h["min"], h["last"]
        last_ts, topic = (0, 0), types.BufferOrBytes_Bytes(b"")
        for item in message:
            if not isinstance(item, types.DataModel_Message):
                raise Err(types.Error("Unexpected input type."))
            m = item.value
            try:
                kind, h = measurements.loads(_bytes(m.payload))
            except measurements.Invalid as e:
                raise Err(types.Error(f"Failed to parse payload: {e}"))
            if kind != "humidity" or h["value"] is None:
                raise Err(types.Error("Unexpected measurement type."))
            value = h["value"]
            total += value
            count += 1
            high, low = max(high, value), min(low, value)
            ts = (m.timestamp.timestamp.secs, m.timestamp.timestamp.nanos)
            if ts >= last_ts:
                last, last_ts = value, ts
            topic = m.topic
        average = total / count if count else float("nan")
        d = measurements.display
        result.payload = types.BufferOrBytes_Bytes(
            f'{{"humidity":{{"count":{count},"max":{d(high)},"min":{d(low)},"average":{d(average)},'
            f'"last":{d(last)}}}}}'.encode())
        result.timestamp.timestamp.secs, result.timestamp.timestamp.nanos = last_ts
        result.topic = topic
        return types.DataModel_Message(result)

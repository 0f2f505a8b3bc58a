"""Azure IoT Operations' collection module (samples/wasm/operators/collection), in Python: an
accumulate operator gathering a window's temperature, humidity and object measurements
(messages' payloads, snapshots' frames) into the staged `{"sensor_data": {"temperature":
[...], "humidity": [...], "object": [...]}}`, written as serde_json writes Azure's
structs. Built with guest/azure-measurements/measurements.py beside it.
"""
from componentize_py_types import Err

import measurements
from wit_world import exports
from wit_world.imports import metrics, types

CONTEXT = "module-collection/accumulate"


def _bytes(value):
    return value.value.read() if isinstance(value, types.BufferOrBytes_Buffer) else value.value


def _error(text):
    return Err(types.Error(text))


class Accumulate(exports.Accumulate):
    def init(self, configuration):
        return True

    def process(self, staged, message):
        try:
            metrics.add_to_counter("requests", metrics.CounterValue_U64(1), [metrics.Label("module", CONTEXT)])
        except Err:
            pass  # a metric the host refuses must not fail the window
        if not isinstance(staged, types.DataModel_Message):
            raise _error("Unexpected input type.")
        result = staged.value
        payload = _bytes(result.payload)
        data = {"temperature": [], "humidity": [], "object": []}
        if payload:
            try:
                kind, data = measurements.loads(payload)
            except measurements.Invalid as e:
                raise _error(f"Failed to parse the staged payload: {e}")
            if kind != "sensor_data":
                raise _error("Unexpected type for result.")
        for item in message:
            if isinstance(item, types.DataModel_Message):
                raw = _bytes(item.value.payload)
            elif isinstance(item, types.DataModel_Snapshot):
                raw = _bytes(item.value.frame)
            else:
                raise _error("Unexpected input type.")
            try:
                kind, fields = measurements.loads(raw)
            except measurements.Invalid as e:
                raise _error(f"Failed to parse payload: {e}")
            if kind == "sensor_data":
                raise _error("Unexpected measurement type.")
            data[kind].append(fields)
        result.payload = types.BufferOrBytes_Bytes(
            ('{"sensor_data":' + measurements.dump_sensor_data(data) + "}").encode())
        return types.DataModel_Message(result)

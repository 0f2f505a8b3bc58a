"""Azure IoT Operations' enrichment module (samples/wasm/operators/enrichment), in Python: a
map operator over a `sensor_data` measurement. A temperature summary whose max is over
100 C is marked `overtemp` and the state store's `overtemp` key set to "true" (its
`overtemp_count` key counted up); one whose min is below 0 sets it to "false"; others
take `overtemp` from the key. A humidity max over 80 is stored under `wet_flag`, a min
below 80 deletes it. Readings' `value`s are dropped, the topic becomes "sensors", and the
payload is the bare `{"temperature": [...], "humidity": [...], "object": [...]}`, written
as serde_json writes Azure's structs. (Azure's module counts under a state-store lock;
this one reads and writes the count without one.) Built with
guest/azure-measurements/measurements.py beside it.
"""
from componentize_py_types import Err

import measurements
from wit_world import exports
from wit_world.imports import logger, metrics, state_store, state_store_types, types

CONTEXT = "module-enrichment/map"
_SET = state_store_types.SetOptions(state_store_types.SetConditions.UNCONDITIONAL, None)


def _bytes(value):
    return value.value.read() if isinstance(value, types.BufferOrBytes_Buffer) else value.value


def _store(call, *args):
    try:
        return call(*args)
    except Err as e:
        logger.log(logger.Level.ERROR, CONTEXT, f"state store: {e.value}")
        return None


def _count_overtemp():
    got = _store(state_store.get, b"overtemp_count", None)
    if got is not None:
        count = int(got.response or b"0") + 1
        _store(state_store.set, b"overtemp_count", str(count).encode(), None, None, _SET)


class Map(exports.Map):
    def init(self, configuration):
        return True

    def process(self, message):
        try:
            metrics.add_to_counter("requests", metrics.CounterValue_U64(1), [metrics.Label("module", CONTEXT)])
        except Err:
            pass  # a metric the host refuses must not fail the message
        if not isinstance(message, types.DataModel_Message):
            raise Err(types.Error("Unexpected input type."))
        result = message.value
        try:
            kind, data = measurements.loads(_bytes(result.payload))
        except measurements.Invalid as e:
            raise Err(types.Error(f"Failed to parse payload: {e}"))
        if kind != "sensor_data":
            raise Err(types.Error("Unexpected type for result."))
        for t in data["temperature"]:
            if t["max"] > 100.0:
                t["overtemp"] = True
                _store(state_store.set, b"overtemp", b"true", None, None, _SET)
                _count_overtemp()
            elif t["min"] < 0.0:
                t["overtemp"] = False
                _store(state_store.set, b"overtemp", b"false", None, None, _SET)
            else:
                got = _store(state_store.get, b"overtemp", None)
                if got is not None and got.response == b"true":
                    t["overtemp"] = True
            t["value"] = None
        for h in data["humidity"]:
            if h["max"] > 80.0:
                _store(state_store.set, b"wet_flag", measurements.display(h["max"]).encode(), None, None, _SET)
            elif h["min"] < 80.0:
                _store(state_store.del_, b"wet_flag", None, None)
        result.topic = types.BufferOrBytes_Bytes(b"sensors")
        result.content_type = None
        result.schema = None
        result.payload = types.BufferOrBytes_Bytes(measurements.dump_sensor_data(data).encode())
        return types.DataModel_Message(result)

"""Azure IoT Operations' snapshot module (samples/wasm/operators/snapshot) as one component
with its three operators, as Azure's graphs use it: the map is guest/snapshot's (built in
beside this file as snapshot_map.py: EfficientNet-Lite0 through wasi:nn, Azure's
`{"object": {"result": ...}}`); the branch sends snapshots, and messages on the topic
its `snapshot_topic` parameter names, to its True arm; the accumulate joins a window's
distinct detected objects with "; " into one object measurement, as Azure's does.
Classes are named as Azure's module names them, by its synset.txt (beside this file,
copied unchanged from samples/wasm/operators/snapshot/src/fixture/labels/ at commit
4a107ee9f169ff90916f423037464ae607960875, MIT License, Copyright (c) Microsoft
Corporation; the ImageNet classes in EfficientNet-Lite0's order), built in as labels.txt.
Configuration is kept at module level (componentize-py 0.25 makes a new export object
for each call).
"""
import json

from componentize_py_types import Err

from snapshot_map import Map  # noqa: F401 (the map operator this component exports)
from wit_world import exports
from wit_world.imports import types


class _Config:
    topic = None


def _bytes(value):
    return value.value.read() if isinstance(value, types.BufferOrBytes_Buffer) else value.value


def _result(payload):
    try:
        data = json.loads(payload)
    except ValueError:
        raise Err(types.Error("Unexpected input type.")) from None
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict) or \
            not isinstance(data["object"].get("result"), str):
        raise Err(types.Error("Unexpected input type."))
    return data["object"]["result"]


class Branch(exports.Branch):
    def init(self, configuration):
        for key, value in configuration.properties:
            if key == "snapshot_topic":
                _Config.topic = value.encode()
        return True

    def process(self, timestamp, message):
        if isinstance(message, types.DataModel_Snapshot):
            return True
        if isinstance(message, types.DataModel_Message):
            return _Config.topic is not None and _bytes(message.value.topic) == _Config.topic
        raise Err(types.Error("Unexpected input type."))


class Accumulate(exports.Accumulate):
    def init(self, configuration):
        return True

    def process(self, staged, message):
        if not isinstance(staged, types.DataModel_Message):
            raise Err(types.Error("Unexpected input type."))
        result = staged.value
        objects = []
        payload = _bytes(result.payload)
        if payload:
            objects.append(_result(payload))
        for item in message:
            if isinstance(item, types.DataModel_Message):
                found = _result(_bytes(item.value.payload))
            elif isinstance(item, types.DataModel_Snapshot):
                found = _result(_bytes(item.value.frame))
            else:
                raise Err(types.Error("Unexpected input type."))
            if found not in objects:
                objects.append(found)
        result.payload = types.BufferOrBytes_Bytes(
            json.dumps({"object": {"result": "; ".join(objects)}}, separators=(",", ":")).encode())
        return types.DataModel_Message(result)

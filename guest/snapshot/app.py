"""Azure's snapshot module in Python (world wasinn:guest/snapshot-operator): one
component exporting a map, a branch and an accumulate, as Azure's does.

map: a raw 224x224 RGB frame in Azure's `.raw` layout (150,528 bytes, interleaved, row
by row), as a snapshot's frame or a message's payload, classified through wasi:nn by
EfficientNet-Lite0 built into the operator (`graph.load` of the embedded ONNX model,
once, at init) into JSON that replaces the frame (or payload), as Azure's snapshot
operator does, with the top five classes:

    {"object": {"result": "laptop", "top5": [{"label": "laptop", "index": 620,
                                               "score": 0.83}, ...]}}

`{"object": {"result": ...}}` is Azure's `Measurement::Object`, so Azure's downstream
operators read it as they read theirs. The model (models/efficientnet-lite0 with
wasinn's preprocessing front: uint8 HWC in, softmax ranked in its graph) does the
per-pixel and per-class work, which in this interpreter compiled to wasm would dominate.

branch: true for snapshots, and for messages on the topic that init's `snapshot_topic`
names; false for other messages.
accumulate: the distinct `object` results of the staged message and the window's
snapshots, in order, joined by "; " into the staged message's payload
(`{"object":{"result":"laptop; tripod"}}`).
"""
import json
import os
import struct

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import graph, logger, metrics, tensor, types

_HERE = os.path.dirname(__file__)
# Read at build time: componentize-py snapshots module state into the component.
def _label(line):
    """A class's name: the line, or what follows the WordNet id of an ImageNet synset line
    (`n02133161 American black bear, black bear, ...`, the form of Azure's snapshot module's
    synset.txt, which names its classes so)."""
    wnid, _, name = line.partition(" ")
    return name if name and len(wnid) == 9 and wnid[0] == "n" and wnid[1:].isdigit() else line


with open(os.path.join(_HERE, "labels.txt")) as f:
    LABELS = [_label(line) for line in f.read().splitlines()]
with open(os.path.join(_HERE, "model.onnx"), "rb") as f:
    MODEL = f.read()
SIDE = 224
FRAME_BYTES = SIDE * SIDE * 3
TOP = 5


_SCORES = struct.Struct(f"<{TOP}f")
# what each operator counts per message, made once
_ONE = metrics.CounterValue_U64(1)
_LABELS = {op: [metrics.Label("module", f"module-snapshot/{op}")] for op in ("map", "branch", "accumulate")}


class _Loaded:
    context = None
    snapshot_topic = None


def _count(op):
    try:
        metrics.add_to_counter("requests", _ONE, _LABELS[op])
    except Err:
        pass  # a metric the host refuses must not fail the message


def _error(text):
    return Err(types.Error(text))


def _nn_error(what, e):
    with e.value as error:
        return _error(f"{what}: {error.code().name.lower().replace('_', '-')}: {error.data()}")


def _bytes(value):
    return value.value.read() if isinstance(value, types.BufferOrBytes_Buffer) else value.value


class Map(exports.Map):
    def init(self, configuration):
        try:
            g = graph.load([MODEL], graph.GraphEncoding.ONNX, graph.ExecutionTarget.CPU)
            _Loaded.context = g.init_execution_context()
        except Err as e:
            with e.value as error:
                logger.log(logger.Level.ERROR, "module-snapshot/map", f"cannot load the model: {error.data()}")
            return False
        logger.log(logger.Level.INFO, "module-snapshot/map", "model loaded")
        return True

    def process(self, message):
        _count("map")
        if isinstance(message, types.DataModel_Snapshot):
            frame = _bytes(message.value.frame)
        elif isinstance(message, types.DataModel_Message):
            frame = _bytes(message.value.payload)
        else:
            raise _error("Unexpected input type.")
        if len(frame) != FRAME_BYTES:
            raise _error(f"a frame is {SIDE}x{SIDE} RGB, {FRAME_BYTES} bytes; got {len(frame)}")
        image = tensor.Tensor([SIDE, SIDE, 3], tensor.TensorType.U8, frame)
        try:
            outputs = _Loaded.context.compute([("image", image)])
        except Err as e:
            raise _nn_error("inference failed", e)
        ranked = next(t for name, t in outputs if name == "ranked")
        data = ranked.data()
        for _, t in outputs:
            t.__exit__(None, None, None)
        n = len(data) // 8
        scores = _SCORES.unpack_from(data)
        indices = _SCORES.unpack_from(data, 4 * n)
        top = [{"label": LABELS[int(i)], "index": int(i), "score": round(s, 6)} for s, i in zip(scores, indices)]
        result = json.dumps({"object": {"result": top[0]["label"], "top5": top}}, separators=(",", ":")).encode()
        if isinstance(message, types.DataModel_Snapshot):
            message.value.frame = types.BufferOrBytes_Bytes(result)
        else:
            message.value.payload = types.BufferOrBytes_Bytes(result)
        return message


class Branch(exports.Branch):
    def init(self, configuration):
        logger.log(logger.Level.INFO, "module-snapshot/branch", "Initialization function invoked")
        for key, value in configuration.properties:
            if key == "snapshot_topic":
                _Loaded.snapshot_topic = value.encode()
        return True

    def process(self, timestamp, message):
        _count("branch")
        if isinstance(message, types.DataModel_Snapshot):
            return True
        if not isinstance(message, types.DataModel_Message):
            raise _error("Unexpected input type.")
        return _Loaded.snapshot_topic is not None and _bytes(message.value.topic) == _Loaded.snapshot_topic


def _object(payload):
    try:
        data = json.loads(payload)
    except ValueError:
        raise _error("Unexpected input type.") from None
    if not isinstance(data, dict) or len(data) != 1 or not isinstance(data.get("object"), dict) \
            or not isinstance(data["object"].get("result"), str):
        return None
    return data["object"]["result"]


class Accumulate(exports.Accumulate):
    def init(self, configuration):
        return True

    def process(self, staged, message):
        _count("accumulate")
        if not isinstance(staged, types.DataModel_Message):
            raise _error("Unexpected input type.")
        result = staged.value
        objects = []
        staged_payload = _bytes(result.payload)
        if staged_payload:
            found = _object(staged_payload)
            if found is not None:
                objects.append(found)
        for item in message:
            if not isinstance(item, types.DataModel_Snapshot):
                raise _error("Unexpected input type.")
            found = _object(_bytes(item.value.frame))
            if found is None:
                raise _error("Unexpected input type.")
            if found not in objects:
                objects.append(found)
        payload = json.dumps({"object": {"result": "; ".join(objects)}}, separators=(",", ":"), ensure_ascii=False)
        result.payload = types.BufferOrBytes_Bytes(payload.encode())
        return types.DataModel_Message(result)

"""Image snapshot operator (a map, world wasinn:guest/snapshot-operator): a raw
224x224 RGB frame in Azure's `.raw` layout (150,528 bytes, interleaved, row by row), as
a snapshot's frame or a message's payload, classified through wasi:nn by
EfficientNet-Lite0 built into the operator (`graph.load` of the embedded ONNX model,
once, at init) into JSON that replaces the frame (or payload), as Azure's snapshot
operator does, with the top five classes:

    {"object": {"result": "laptop", "top5": [{"label": "laptop", "index": 620,
                                               "score": 0.83}, ...]}}

`{"object": {"result": ...}}` is Azure's `Measurement::Object`, so Azure's downstream
operators read it as they read theirs. The model (models/efficientnet-lite0 with
wasinn's preprocessing front: uint8 HWC in, softmax ranked in its graph) does the
per-pixel and per-class work, which in this interpreter compiled to wasm would dominate.
"""
import json
import os
import struct

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import graph, logger, tensor, types

_HERE = os.path.dirname(__file__)
# Read at build time: componentize-py snapshots module state into the component.
with open(os.path.join(_HERE, "labels.txt")) as f:
    LABELS = f.read().splitlines()
with open(os.path.join(_HERE, "model.onnx"), "rb") as f:
    MODEL = f.read()
SIDE = 224
FRAME_BYTES = SIDE * SIDE * 3
TOP = 5


class _Loaded:
    context = None


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
        scores = struct.unpack_from(f"<{TOP}f", data)
        indices = struct.unpack_from(f"<{TOP}f", data, 4 * n)
        top = [{"label": LABELS[int(i)], "index": int(i), "score": round(s, 6)} for s, i in zip(scores, indices)]
        result = json.dumps({"object": {"result": top[0]["label"], "top5": top}}, separators=(",", ":")).encode()
        if isinstance(message, types.DataModel_Snapshot):
            message.value.frame = types.BufferOrBytes_Bytes(result)
        else:
            message.value.payload = types.BufferOrBytes_Bytes(result)
        return message

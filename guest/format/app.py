"""Azure IoT Operations' format module (samples/wasm/operators/format), in Python: a map
operator that makes a 224x224 `rgb24` snapshot of a message's payload or a snapshot's
frame, for the snapshot operator after it. A snapshot already in that shape passes
unchanged; a payload or frame of 150,528 bytes (a raw frame in Azure's `.raw` layout)
becomes one. Azure's module also decodes and resizes encoded images (PNG, JPEG) with the
`image` crate; this one has no image decoder in the guest and refuses them, with Azure's
error "Unexpected image format or size.".
"""
from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import types

SIDE, FORMAT = 224, "rgb24"
FRAME_BYTES = SIDE * SIDE * 3


def _bytes(value):
    return value.value.read() if isinstance(value, types.BufferOrBytes_Buffer) else value.value


def _text(value):
    return value.value if isinstance(value, types.BufferOrString_String) else value.value.read().decode("utf-8",
                                                                                                       "replace")


class Map(exports.Map):
    def init(self, configuration):
        return True

    def process(self, message):
        if isinstance(message, types.DataModel_Message):
            payload, timestamp = _bytes(message.value.payload), message.value.timestamp
        elif isinstance(message, types.DataModel_Snapshot):
            s = message.value
            if _text(s.format) == FORMAT and s.width == SIDE and s.height == SIDE:
                return message
            payload, timestamp = _bytes(s.frame), s.timestamp
        else:
            raise Err(types.Error("Unexpected input type."))
        if len(payload) != FRAME_BYTES:
            raise Err(types.Error("Unexpected image format or size."))
        return types.DataModel_Snapshot(types.Snapshot(timestamp, types.BufferOrString_String(FORMAT), SIDE, SIDE,
                                                       types.BufferOrBytes_Bytes(payload)))

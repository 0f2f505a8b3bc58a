"""What model bytes are, without the backends' own packages: the recognisers behind
`autodetect` (so bytes are recognised even when their backend is not installed, and
the error can name the extra to install) and checks shared by backends of one format.
Model bytes may be any buffer (a view of guest memory, for one), so nothing here uses
`bytes` methods on them."""
from __future__ import annotations

import pathlib
import re

from .._bindings import ErrorCode, GraphEncoding
from ..errors import NnError

# ModelProto's top-level field numbers (onnx.proto).
_ONNX_MODEL_FIELDS = {1, 2, 3, 4, 5, 6, 7, 8, 14, 20, 25}
# How far into an IR file its root element may start (after the XML declaration and comments).
_IR_HEAD = 4096
# Every ONNX external-data reference carries this key (`in` would compare a memoryview's
# bytes one by one with it, never finding it).
_LOCATION = re.compile(b"location")


def looks_like_onnx(builders: list[bytes]) -> bool:
    """True when the first protobuf fields are ModelProto fields with the right wire
    types, starting with ir_version; cheap and never parses the whole model."""
    if len(builders) != 1:
        return False
    data, pos, seen = builders[0], 0, 0
    while pos < len(data) and seen < 4:
        key, pos = read_varint(data, pos)
        if key is None:
            return False
        field, wire = key >> 3, key & 7
        if field not in _ONNX_MODEL_FIELDS or (seen == 0 and field != 1):
            return False
        if wire == 0:
            _, pos = read_varint(data, pos)
        elif wire == 2:
            length, pos = read_varint(data, pos)
            if length is None:
                return False
            pos += length
        else:
            return False
        if pos > len(data):  # a field runs past the bytes: fine for a file's head, judged by what came before
            break
        seen += 1
    return seen > 0


def looks_like_openvino_ir(builders: list[bytes]) -> bool:
    """An IR is two builders, as wasmtime takes them: the XML (root element `<net`)
    and the weights (any bytes, possibly none)."""
    if len(builders) != 2:
        return False
    head = bytes(builders[0][:_IR_HEAD]).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<") and b"<net " in head


def looks_like_tflite(builders: list[bytes]) -> bool:
    """A TFLite flatbuffer carries the file identifier "TFL3" at offset 4."""
    return len(builders) == 1 and builders[0][4:8] == b"TFL3"


RECOGNISERS = {GraphEncoding.ONNX: looks_like_onnx, GraphEncoding.OPENVINO: looks_like_openvino_ir,
               GraphEncoding.TENSORFLOWLITE: looks_like_tflite}


def reject_onnx_external_data(model: bytes) -> None:
    """Raises `security` when an ONNX model points at weight files beside it. A model
    loaded from bytes must carry all its weights: a guest must never make the host read files."""
    # Only parse when the bytes could hold a reference (parsing costs ~1 ms per MB).
    if not _LOCATION.search(model):
        return
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data
    try:
        proto = onnx.ModelProto.FromString(model)
    except Exception:
        return  # not parseable: the backend will reject it with its own message
    if any(uses_external_data(t) for t in _get_all_tensors(proto)):
        raise NnError(ErrorCode.SECURITY, "the model references external data files; a model loaded "
                      "from bytes must carry all its weights")


def read_varint(data: bytes, pos: int) -> tuple[int | None, int]:
    """The protobuf varint at `pos` and the position after it (None: it runs off the end)."""
    value = shift = 0
    while pos < len(data) and shift < 64:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    return None, pos


def inline_onnx_external_data(model: bytes, allowed_dir) -> bytes:
    """An ONNX model with every external weight file read into it, or the model itself
    when it has none. Weights may only come from files inside `allowed_dir` (the
    operator's choice; None allows none): any other location, `..` and symlinks that
    leave the directory included, is refused with `security`, so no model can make the
    host read an arbitrary file."""
    if not _LOCATION.search(model):
        return model
    import onnx
    from onnx.external_data_helper import (ExternalDataInfo, _get_all_tensors, load_external_data_for_tensor,
                                           uses_external_data)
    try:
        proto = onnx.ModelProto.FromString(model)
    except Exception:
        return model  # not parseable: the backend rejects it with its own message
    external = [t for t in _get_all_tensors(proto) if uses_external_data(t)]
    if not external:
        return model
    if allowed_dir is None:
        raise NnError(ErrorCode.SECURITY, "the model references external data files; a model loaded "
                      "from bytes must carry all its weights (the operator can allow a directory: "
                      "limit 'external-data-dir')")
    root = pathlib.Path(allowed_dir).resolve()
    for tensor in external:
        location = ExternalDataInfo(tensor).location
        target = (root / location).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            raise NnError(ErrorCode.SECURITY, f"tensor {tensor.name!r}: external data {location!r} is not a file "
                          f"inside the allowed directory {root}")
        load_external_data_for_tensor(tensor, str(root))
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
    return proto.SerializeToString()

"""An ONNX model's weights moved out of its bytes into a file, so that onnxruntime maps
them instead of holding copies of them.

Handed bytes, onnxruntime's Python binding copies them into a std::string, parses that
into a ModelProto (a copy of every weight) and turns the initializers into tensors (one
more while the proto lives): 2-3x the model at peak, on top of the caller's copy.
Handed a model file whose initializers are external data, it maps the weights file
(pages the kernel reads in only when a kernel touches them, and may drop again) and
parses only the rest. `spill` writes that pair straight from the caller's buffer; the
caller loads the model file and deletes both (a mapping outlives its file's name).

It works on the protobuf wire format, ModelProto.graph -> GraphProto.initializer ->
TensorProto.raw_data: parsing with `onnx` would itself copy every weight. Weights held
elsewhere (float_data, Constant nodes, subgraphs) stay in the model.
"""
from __future__ import annotations

import contextlib
import pathlib
import shutil
import tempfile

from .formats import read_varint

# A model smaller than this loads from its bytes: the copies cost less than the files.
_SPILL_FROM = 16 << 20
# Smaller payloads stay in the model: onnxruntime maps each external tensor on its own.
_MIN_PAYLOAD = 1 << 16
# Each payload starts on a page, where onnxruntime's mapping of it begins.
_ALIGN = 4096
_MODEL, _WEIGHTS = "model.onnx", "weights"
_GRAPH, _INITIALIZER = 7, 5  # ModelProto.graph, GraphProto.initializer
_RAW_DATA, _EXTERNAL_DATA, _DATA_LOCATION = 9, 13, 14  # TensorProto fields
_LENGTH_DELIMITED = 2


class _Unreadable(Exception):
    pass


@contextlib.contextmanager
def spilled(model):
    """The model file `spill` wrote for `model` in a fresh directory under TMPDIR, or None
    where it declines or the disk refuses (no room, no writable TMPDIR: the bytes then
    load as before). The directory goes on leaving, whether or not the load worked."""
    if len(model) < _SPILL_FROM:
        yield None
        return
    try:
        directory = tempfile.mkdtemp(prefix="wasinn-onnx-")
    except OSError:
        yield None
        return
    try:
        try:
            path = spill(model, pathlib.Path(directory))
        except OSError:
            path = None
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def spill(model, directory: pathlib.Path) -> pathlib.Path | None:
    """Writes `model` (bytes or a buffer) into `directory` as a model file whose large
    raw_data payloads are external data in a weights file beside it; returns the model
    file's path. None when nothing is worth moving or the bytes are not a protobuf this
    can follow (onnxruntime then judges the bytes themselves)."""
    view = memoryview(model)
    if len(view) < _SPILL_FROM:
        return None
    payloads: list[tuple[int, memoryview]] = []  # (offset in the weights file, bytes)
    try:
        pieces = _rewritten(view, 0, len(view), {_GRAPH: lambda s, e: _graph(view, s, e, payloads)})
    except _Unreadable:
        return None
    if not payloads:
        return None
    with open(directory / _WEIGHTS, "wb") as f:
        for offset, payload in payloads:
            f.seek(offset)
            f.write(payload)
    path = directory / _MODEL
    with open(path, "wb") as f:
        f.writelines(pieces)
    return path


def _rewritten(view: memoryview, start: int, end: int, rewrite) -> list:
    """The message at view[start:end] as pieces, each length-delimited field whose number
    `rewrite` maps re-encoded by its function (which returns pieces, or None to keep it)."""
    pieces = []
    for field, wire, head, value, pos in _fields(view, start, end):
        new = rewrite[field](value, pos) if wire == _LENGTH_DELIMITED and field in rewrite else None
        if new is None:
            pieces.append(view[head:pos])
        else:
            pieces += [_varint_bytes(field << 3 | _LENGTH_DELIMITED), _varint_bytes(sum(map(len, new))), *new]
    return pieces


def _graph(view: memoryview, start: int, end: int, payloads: list) -> list:
    return _rewritten(view, start, end, {_INITIALIZER: lambda s, e: _tensor(view, s, e, payloads)})


def _tensor(view: memoryview, start: int, end: int, payloads: list) -> list | None:
    """The TensorProto with its raw_data as external data, or None to keep it as it is."""
    fields = list(_fields(view, start, end))
    raw = [f for f in fields if f[0] == _RAW_DATA and f[1] == _LENGTH_DELIMITED]
    if (len(raw) != 1 or raw[0][4] - raw[0][3] < _MIN_PAYLOAD
            or any(f[0] in (_EXTERNAL_DATA, _DATA_LOCATION) for f in fields)):
        return None
    _, _, _, value, pos = raw[0]
    offset = 0
    if payloads:
        last_offset, last = payloads[-1]
        offset = -(-(last_offset + len(last)) // _ALIGN) * _ALIGN
    payloads.append((offset, view[value:pos]))
    kept = [view[head:p] for field, _, head, _, p in fields if field != _RAW_DATA]
    entries = [_entry(b"location", _WEIGHTS.encode()), _entry(b"offset", b"%d" % offset),
               _entry(b"length", b"%d" % (pos - value))]
    return [*kept, *entries, _varint_bytes(_DATA_LOCATION << 3), b"\x01"]  # data_location = EXTERNAL


def _entry(key: bytes, value: bytes) -> bytes:
    """A TensorProto.external_data StringStringEntryProto (key = 1, value = 2)."""
    body = _string(1, key) + _string(2, value)
    return _string(_EXTERNAL_DATA, body)


def _string(field: int, data: bytes) -> bytes:
    return _varint_bytes(field << 3 | _LENGTH_DELIMITED) + _varint_bytes(len(data)) + data


def _fields(view: memoryview, pos: int, end: int):
    """(number, wire type, start of field, start of value, end) of each field in view[pos:end]."""
    while pos < end:
        head = pos
        key, pos = read_varint(view, pos)
        if key is None:
            raise _Unreadable
        wire = key & 7
        if wire == 0:
            value, pos = read_varint(view, pos)
            if value is None:
                raise _Unreadable
            start = pos
        elif wire == _LENGTH_DELIMITED:
            length, start = read_varint(view, pos)
            if length is None:
                raise _Unreadable
            pos = start + length
        elif wire in (1, 5):  # fixed64, fixed32
            start, pos = pos, pos + (8 if wire == 1 else 4)
        else:
            raise _Unreadable
        if pos > end:
            raise _Unreadable
        yield key >> 3, wire, head, start, pos


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)

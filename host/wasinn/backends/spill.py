"""An ONNX model's weights moved out of its bytes into a file, so that onnxruntime (and
OpenVINO's ONNX reader, see openvino.py) maps them instead of holding copies of them.

Measured on a 256 MB model (onnxruntime 1.32, peak RSS growth): handed bytes,
onnxruntime's Python binding copies them into a std::string and parses that into a
ModelProto, a copy of every weight: 2x the model on top of the caller's bytes. Handed
a plain model file, it still parses every weight into the proto and turns them into
tensors while the proto lives: 2x. Handed a model file whose initializers are external
data, it maps the weights file (pages read in only when a kernel touches them, which the
kernel may drop again) and parses only the rest: 0x at load. `spilled` writes that pair
straight from the caller's buffer; the caller loads the model file, and the directory
goes once the session is made (a mapping outlives its file's name).

A directory outlives its process only when the process dies mid-load (SIGKILL, a
crash, power loss): each spill removes those of dead processes once they are an hour
old. The age matters because TMPDIR may be shared with processes of another pid
namespace, whose pids mean nothing here; no load takes an hour.

It works on the protobuf wire format, ModelProto.graph -> GraphProto.initializer ->
TensorProto.raw_data: parsing with `onnx` would itself copy every weight. Weights held
elsewhere (float_data, Constant nodes, subgraphs) stay in the model.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import pathlib
import re
import shutil
import time

from .formats import read_varint

# A model smaller than this loads from its bytes, as before: its copies cost less than
# the files (the bundled 18.6 MB EfficientNet-Lite0 among them).
_SPILL_FROM = 32 << 20
# Smaller payloads stay in the model: onnxruntime maps each external tensor on its own.
_MIN_PAYLOAD = 1 << 16
# Each payload starts on a page, where onnxruntime's mapping of it begins.
_ALIGN = 4096
# Past this many fields walked the model is left to onnxruntime as bytes: a walk in
# Python must not take longer than the load (this many take ~0.5 s; a graph has a
# field per node and per initializer).
_MAX_FIELDS = 1 << 20
DIRECTORY_PREFIX = "wasinn-onnx-"  # then the owner's pid, a dash and mkdtemp's letters
_OWNED = re.compile(re.escape(DIRECTORY_PREFIX) + r"(\d+)-\w+")
_STALE_SECONDS = 3600
_MODEL, _WEIGHTS = "model.onnx", "weights"
_GRAPH, _INITIALIZER = 7, 5  # ModelProto.graph, GraphProto.initializer
_RAW_DATA, _EXTERNAL_DATA, _DATA_LOCATION = 9, 13, 14  # TensorProto fields
_LENGTH_DELIMITED = 2


class ModelFile(mmap.mmap):
    """Model bytes that came in a file of their own (a backend worker's model, see
    isolated.model_file), mapped read-only. Its builders are views of it; `path_of` names
    the file of one that is the whole file, for a backend that loads model files
    (onnxruntime), while it is open."""

    def __new__(cls, fd: int, size: int):
        model = super().__new__(cls, fd, size, prot=mmap.PROT_READ)
        model.fd, model.path = fd, f"/proc/self/fd/{fd}"
        return model

    def builders(self, sizes: list[int]) -> list[memoryview]:
        """The builders that lie in it one after another, `sizes` long."""
        views, offset = [], 0
        for n in sizes:
            views.append(memoryview(self)[offset:offset + n])
            offset += n
        return views

    @staticmethod
    def path_of(builder) -> str | None:
        whole = type(builder) is memoryview and isinstance(builder.obj, ModelFile) and len(builder) == len(builder.obj)
        return builder.obj.path if whole else None

    def close(self) -> None:
        try:
            super().close()
        except BufferError:
            pass  # a backend keeps a view of it: the mapping goes with the view
        os.close(self.fd)


class _Unreadable(Exception):
    pass


@contextlib.contextmanager
def spilled(model):
    """The model file `_spill` wrote for `model` in a fresh directory under TMPDIR, or None
    where it declines or the disk refuses (no room, no writable TMPDIR: the bytes then
    load as before). The directory goes on leaving, whether or not the load worked."""
    if len(model) < _SPILL_FROM:
        yield None
        return
    import tempfile  # here: loading a model file (a run's start-up) spills nothing
    try:
        directory = tempfile.mkdtemp(prefix=f"{DIRECTORY_PREFIX}{os.getpid()}-")
    except OSError:
        yield None
        return
    _sweep(pathlib.Path(directory).parent)
    try:
        try:
            path = _spill(model, pathlib.Path(directory))
        except OSError:
            path = None
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _sweep(tmp: pathlib.Path) -> None:
    """Removes the spill directories under `tmp` that dead processes of this user left,
    an hour old or more."""
    cutoff = time.time() - _STALE_SECONDS
    try:
        with os.scandir(tmp) as entries:
            stale = [e.path for e in entries
                     if (m := _OWNED.fullmatch(e.name)) and _abandoned(e, cutoff, int(m[1]))]
    except OSError:
        return
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def _abandoned(entry: os.DirEntry, cutoff: float, pid: int) -> bool:
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return False
    if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.getuid() or st.st_mtime > cutoff:
        return False
    try:
        os.kill(pid, 0)  # PermissionError: alive, another user's
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


def _spill(model, directory: pathlib.Path) -> pathlib.Path | None:
    """Writes `model` (bytes or a buffer) into `directory` as a model file whose large
    raw_data payloads are external data in a weights file beside it; returns the model
    file's path. None when nothing is worth moving or the bytes are not a protobuf this
    can follow (onnxruntime then judges the bytes themselves)."""
    walk = _Walk(memoryview(model))
    try:
        pieces = walk.message(0, len(walk.view), {_GRAPH: walk.graph})
    except _Unreadable:
        return None
    if not walk.payloads:
        return None
    with open(directory / _WEIGHTS, "wb") as f:
        for offset, payload in walk.payloads:
            f.seek(offset)
            f.write(payload)
    path = directory / _MODEL
    with open(path, "wb") as f:
        f.writelines(pieces)
    return path


class _Walk:
    """One model's rewrite: the pieces of the new model are slices of `view` (no copies)
    and short new encodings; `payloads` what goes to the weights file, at which offset."""

    def __init__(self, view: memoryview):
        self.view = view
        self.payloads: list[tuple[int, memoryview]] = []
        self.fields_left = _MAX_FIELDS

    def message(self, start: int, end: int, rewrite) -> list:
        """view[start:end] as pieces, each length-delimited field whose number `rewrite`
        maps re-encoded by its function (which returns pieces, or None to keep it); the
        fields kept between two rewritten ones are one slice."""
        pieces, kept_from = [], start
        for field, wire, head, value, pos in self.fields(start, end):
            if wire != _LENGTH_DELIMITED or field not in rewrite:
                continue
            new = rewrite[field](value, pos)
            if new is not None:
                pieces += [self.view[kept_from:head], _varint_bytes(field << 3 | _LENGTH_DELIMITED),
                           _varint_bytes(sum(map(len, new))), *new]
                kept_from = pos
        pieces.append(self.view[kept_from:end])
        return pieces

    def graph(self, start: int, end: int) -> list:
        return self.message(start, end, {_INITIALIZER: self.tensor})

    def tensor(self, start: int, end: int) -> list | None:
        """The TensorProto with its raw_data as external data, or None to keep it as it is."""
        fields = list(self.fields(start, end))
        raw = [f for f in fields if f[0] == _RAW_DATA and f[1] == _LENGTH_DELIMITED]
        if (len(raw) != 1 or raw[0][4] - raw[0][3] < _MIN_PAYLOAD
                or any(f[0] in (_EXTERNAL_DATA, _DATA_LOCATION) for f in fields)):
            return None
        _, _, _, value, pos = raw[0]
        offset = 0
        if self.payloads:
            last_offset, last = self.payloads[-1]
            offset = -(-(last_offset + len(last)) // _ALIGN) * _ALIGN
        self.payloads.append((offset, self.view[value:pos]))
        kept = [self.view[head:p] for field, _, head, _, p in fields if field != _RAW_DATA]
        entries = [_entry(b"location", _WEIGHTS.encode()), _entry(b"offset", b"%d" % offset),
                   _entry(b"length", b"%d" % (pos - value))]
        return [*kept, *entries, _varint_bytes(_DATA_LOCATION << 3), b"\x01"]  # data_location = EXTERNAL

    def fields(self, pos: int, end: int):
        """(number, wire type, start of field, start of value, end) of each field in view[pos:end]."""
        view = self.view
        while pos < end:
            self.fields_left -= 1
            if self.fields_left < 0:
                raise _Unreadable
            head = pos
            key = view[pos]
            key, pos = (key, pos + 1) if key < 0x80 else read_varint(view, pos)
            wire = key & 7 if key is not None else -1
            if wire == _LENGTH_DELIMITED:
                length = view[pos] if pos < end else 0x80
                length, start = (length, pos + 1) if length < 0x80 else read_varint(view, pos)
                if length is None:
                    raise _Unreadable
                pos = start + length
            elif wire == 0:
                value, pos = read_varint(view, pos)
                if value is None:
                    raise _Unreadable
                start = pos
            elif wire in (1, 5):  # fixed64, fixed32
                start, pos = pos, pos + (8 if wire == 1 else 4)
            else:
                raise _Unreadable
            if pos > end:
                raise _Unreadable
            yield key >> 3, wire, head, start, pos


def _entry(key: bytes, value: bytes) -> bytes:
    """A TensorProto.external_data StringStringEntryProto (key = 1, value = 2)."""
    body = _string(1, key) + _string(2, value)
    return _string(_EXTERNAL_DATA, body)


def _string(field: int, data: bytes) -> bytes:
    return _varint_bytes(field << 3 | _LENGTH_DELIMITED) + _varint_bytes(len(data)) + data


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)

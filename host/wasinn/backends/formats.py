"""What model bytes are, without the backends' own packages: the recognisers behind
`autodetect` (so bytes are recognised even when their backend is not installed, and
the error can name the extra to install) and checks shared by backends of one format.
Model bytes may be any buffer (a view of guest memory, for one), so nothing here uses
`bytes` methods on them."""
from __future__ import annotations

import mmap
import os
import pathlib
import stat
import time
from typing import NamedTuple

from .._enums import ErrorCode, GraphEncoding
from ..errors import NnError, invalid_encoding, too_large

# ModelProto's top-level field numbers (onnx.proto).
_ONNX_MODEL_FIELDS = {1, 2, 3, 4, 5, 6, 7, 8, 14, 20, 25}
# How far into an IR file its root element may start (after the XML declaration and comments).
_IR_HEAD = 4096


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


# The messages of onnx.proto (onnx 1.23) that hold a TensorProto or a GraphProto, wherever
# they nest; every other message a ModelProto reaches (ValueInfoProto, TypeProto, ...)
# holds neither and is skipped whole (onnx-data.proto's tensor holders are no part of a
# model). Per field: the wire types protobuf reads it with (a repeated number packed or
# not) and the message it holds, if walked.
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _FUNCTION, _TRAINING, _SPARSE, _TENSOR, _GROUP = range(9)
_NAMES = ("ModelProto", "GraphProto", "NodeProto", "AttributeProto", "FunctionProto", "TrainingInfoProto",
          "SparseTensorProto", "TensorProto", "group")
_EXTERNAL_DATA = -1  # TensorProto.external_data: any entry is a reference, whatever its keys
_VARINT, _I64, _LEN, _I32 = 1 << 0, 1 << 1, 1 << 2, 1 << 5  # masks of wire types 0, 1, 2, 5
_RESERVED = _VARINT | _I64 | _LEN | _I32  # numbers onnx never reuses, so no parser reads a tensor there


def _fields(leaves: dict[int, int], children: dict[int, int]) -> dict[int, tuple[int, int | None]]:
    return {**{f: (mask, None) for f, mask in leaves.items()}, **{f: (_LEN, kind) for f, kind in children.items()}}


_SCHEMA = (
    _fields({1: _VARINT, 2: _LEN, 3: _LEN, 4: _LEN, 5: _VARINT, 6: _LEN, 8: _LEN, 14: _LEN, 26: _LEN},  # Model
            {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION}),
    _fields({2: _LEN, 10: _LEN, 11: _LEN, 12: _LEN, 13: _LEN, 14: _LEN, 16: _LEN,  # Graph
             **dict.fromkeys((3, 4, 6, 7, 8, 9), _RESERVED)},
            {1: _NODE, 5: _TENSOR, 15: _SPARSE}),
    _fields({1: _LEN, 2: _LEN, 3: _LEN, 4: _LEN, 6: _LEN, 7: _LEN, 8: _LEN, 9: _LEN, 10: _LEN},  # Node
            {5: _ATTRIBUTE}),
    _fields({1: _LEN, 2: _I32, 3: _VARINT, 4: _LEN, 7: _I32 | _LEN, 8: _VARINT | _LEN, 9: _LEN, 13: _LEN,  # Attribute
             14: _LEN, 15: _LEN, 20: _VARINT, 21: _LEN, **dict.fromkeys((12, 16, 17, 18, 19), _RESERVED)},
            {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE}),
    _fields({1: _LEN, 4: _LEN, 5: _LEN, 6: _LEN, 8: _LEN, 9: _LEN, 10: _LEN, 12: _LEN, 13: _LEN, 14: _LEN,  # Function
             2: _RESERVED, 3: _RESERVED},
            {7: _NODE, 11: _ATTRIBUTE}),
    _fields({3: _LEN, 4: _LEN}, {1: _GRAPH, 2: _GRAPH}),  # TrainingInfo
    _fields({3: _VARINT | _LEN}, {1: _TENSOR, 2: _TENSOR}),  # SparseTensor
    _fields({1: _VARINT | _LEN, 2: _VARINT, 3: _LEN, 4: _I32 | _LEN, 5: _VARINT | _LEN, 6: _LEN,  # Tensor
             7: _VARINT | _LEN, 8: _LEN, 9: _LEN, 10: _I64 | _LEN, 11: _VARINT | _LEN, 12: _LEN, 14: _VARINT,
             16: _LEN},
            {13: _EXTERNAL_DATA}),
    {},  # a group's fields, up to its end-group key: onnx.proto has no groups
)
_DATA_LOCATION = 14  # TensorProto: any value but DEFAULT (0) is a reference
_MAX_DEPTH = 100  # protobuf's own default recursion limit
_MAX_KEY = 1 << 32  # protobuf reads a key into 32 bits: wider ones it truncates or refuses
# Every field costs the walk ~0.25 us; a graph has a few per node and per tensor, a hostile
# model of 1 GiB half a billion. Past this many a model is refused rather than walked for minutes.
_MAX_FIELDS = 1 << 24


def _doubt(why: str) -> NnError:
    return invalid_encoding(f"wasinn cannot vouch that the ONNX model refers to no external data: {why}")


def refers_to_external_data(model, deadline: float | None = None) -> bool:
    """True when a TensorProto anywhere in ONNX `model` (a buffer) refers to external
    data: any place onnx.proto allows a tensor, subgraphs and functions at any depth.
    False when none does, or when the bytes are no protobuf at all (a length or varint
    past its message's end, wire type 6 or 7, field 0, an unmatched end-group): every
    protobuf parser refuses those whole, the backend with its own message. What a
    parser would read but this walk cannot judge (fields onnx.proto does not define,
    wire types it does not give them, groups, keys over 32 bits, which protobuf
    truncates) raises `invalid-encoding`, as does nesting past protobuf's limit.
    Pure Python and iterative: no native parser sees the bytes, and the work is linear
    in them; past `deadline` (time.monotonic()) it stops with `timeout` (16M fields of a
    hostile model took ~4.7 s)."""
    n = len(model)
    parents: list[tuple[int, int, int]] = []  # (end, kind, group's field number) of each enclosing message
    pos, end, kind, group, fields = 0, n, _MODEL, 0, 0
    # A doubt is raised only at the end: a model no parser reads gets the backend's message.
    # Until then the walk reads past it as protobuf does (an unknown field), so where it
    # finds bytes no parser reads, every parser's reading of them is the same as its own.
    doubt = None
    while True:
        if pos == end:
            if kind == _GROUP:  # no end-group key before its message ends
                return False
            if not parents:
                if doubt:
                    raise _doubt(doubt)
                return False
            end, kind, group = parents.pop()
            continue
        fields += 1
        if fields > _MAX_FIELDS:
            raise _doubt(f"it has over {_MAX_FIELDS} protobuf fields")
        if not fields & 0xFFFF and deadline is not None and time.monotonic() > deadline:
            raise NnError(ErrorCode.TIMEOUT, f"the check of the model's {n} bytes for references to "
                                             "external data did not finish by the call's deadline")
        key = model[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = read_varint(model, pos)
            if key is None or pos > end:
                return False
            if key >= _MAX_KEY:
                doubt = doubt or f"a {_NAMES[kind]} field key is wider than 32 bits"
        number, wire = key >> 3, key & 7
        if number == 0:
            return False
        if wire == 3 or wire == 4:
            if wire == 4:
                if kind != _GROUP or number != group:
                    return False
                end, kind, group = parents.pop()
                continue
            doubt = doubt or f"a group (field {number}) in a {_NAMES[kind]}"
            if len(parents) == _MAX_DEPTH:
                raise _doubt(f"its messages nest deeper than {_MAX_DEPTH}")
            parents.append((end, kind, group))
            kind, group = _GROUP, number
            continue
        if wire == 2:
            length = model[pos] if pos < end else 0x80
            if length < 0x80:
                pos += 1
            else:
                length, pos = read_varint(model, pos)
                if length is None:
                    return False
            value_end = pos + length
        elif wire == 0:
            value = model[pos] if pos < end else 0x80
            if value < 0x80:
                pos += 1
            else:
                value, pos = read_varint(model, pos)
                if value is None:
                    return False
            value_end = pos
        elif wire == 1 or wire == 5:
            value_end = pos + (8 if wire == 1 else 4)
        else:
            return False
        if value_end > end:
            return False
        spec = _SCHEMA[kind].get(number)
        if spec is None:
            if wire == 2:  # a message of some newer onnx.proto may be here
                doubt = doubt or f"field {number} of a {_NAMES[kind]} is not in onnx.proto"
        elif not spec[0] >> wire & 1:
            doubt = doubt or f"field {number} of a {_NAMES[kind]} has wire type {wire}"
        elif spec[1] is not None:
            if spec[1] == _EXTERNAL_DATA:
                return True
            if len(parents) == _MAX_DEPTH:
                raise _doubt(f"its messages nest deeper than {_MAX_DEPTH}")
            parents.append((end, kind, group))
            end, kind, group = value_end, spec[1], 0
            continue
        elif kind == _TENSOR and number == _DATA_LOCATION and value:
            return True
        pos = value_end


def _fields_of(data, start: int, end: int):
    """(field number, wire type, value's start, value's end) of each field of the message
    in data[start:end] but groups (which protobuf skips as unknown fields, and so does
    this), up to the first bytes that are no protobuf (where every parser stops)."""
    pos, groups = start, []
    while pos < end:
        key, pos = read_varint(data, pos)
        if not key or key >> 3 == 0:
            return
        wire = key & 7
        if wire == 0:
            value, value_end = read_varint(data, pos)
            if value is None:
                return
        elif wire == 2:
            length, pos = read_varint(data, pos)
            value_end = end + 1 if length is None else pos + length
        elif wire == 1 or wire == 5:
            value_end = pos + (8 if wire == 1 else 4)
        elif wire == 3 and len(groups) < _MAX_DEPTH:
            groups.append(key >> 3)
            continue
        elif wire == 4 and groups and groups[-1] == key >> 3:
            groups.pop()
            continue
        else:
            return
        if value_end > end:
            return
        if not groups:
            yield key >> 3, wire, pos, value_end
        pos = value_end


# ModelProto.graph; GraphProto.input, .output (ValueInfoProto) and .initializer
# (TensorProto, its name); ValueInfoProto.name and .type (TypeProto); TypeProto.tensor_type
# (TypeProto.Tensor), its other kinds (one of them at a time); TypeProto.Tensor.shape
_MODEL_GRAPH, _GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_INITIALIZER, _TENSOR_NAME = 7, 11, 12, 5, 8
_VALUE_NAME, _VALUE_TYPE, _TENSOR_TYPE, _OTHER_TYPES, _SHAPE = 1, 2, 1, (4, 5, 8, 9), 2


class GraphValues(NamedTuple):
    inputs: list[tuple[str, bool]]   # (name, whether its type is a tensor type with a shape)
    outputs: list[tuple[str, bool]]
    initializers: set[str]


def graph_values(model) -> GraphValues:
    """An ONNX model's graph inputs, outputs and initializers' names, read from its bytes
    (a buffer) as onnx's parser reads them, without it: importing onnx cost every backend
    worker ~0.9 s (its ml_dtypes' native library), most of a guest's first graph.load,
    and parsing the model whole a copy of its weights. Of the graph, only its inputs,
    outputs and initializers are walked into (each field read once; weights skipped by
    their length); a message that appears twice is merged, as protobuf does."""
    values = GraphValues([], [], set())
    for number, wire, start, end in _fields_of(model, 0, len(model)):
        if number != _MODEL_GRAPH or wire != 2:
            continue
        for number, wire, start, end in _fields_of(model, start, end):
            if wire != 2:
                continue
            if number == _GRAPH_INITIALIZER:
                values.initializers.add(_name(model, start, end, _TENSOR_NAME))
            elif number in (_GRAPH_INPUT, _GRAPH_OUTPUT):
                (values.inputs if number == _GRAPH_INPUT else values.outputs).append(_value_info(model, start, end))
    return values


def _name(model, start: int, end: int, field: int) -> str:
    name = b""
    for number, wire, a, b in _fields_of(model, start, end):
        if number == field and wire == 2:  # a string given twice: the last one counts
            name = model[a:b]
    return bytes(name).decode("utf-8", "replace")


def _value_info(model, start: int, end: int) -> tuple[str, bool]:
    shaped = None  # None: its type is no tensor type (as far as read)
    for number, wire, a, b in _fields_of(model, start, end):
        if number != _VALUE_TYPE or wire != 2:
            continue
        for kind, wire, c, d in _fields_of(model, a, b):
            if kind in _OTHER_TYPES and wire == 2:
                shaped = None
            elif kind == _TENSOR_TYPE and wire == 2:
                shaped = bool(shaped) or any(number == _SHAPE and wire == 2
                                             for number, wire, _, _ in _fields_of(model, c, d))
    return _name(model, start, end, _VALUE_NAME), bool(shaped)


def onnx_file_values(path) -> GraphValues:
    """`graph_values` of a model file, mapped: only the pages the walk reads are read."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return graph_values(mapped)


def reject_onnx_external_data(model) -> None:
    """Raises `security` when an ONNX model points at weight files beside it. A model
    loaded from bytes must carry all its weights: a guest must never make the host read files."""
    if refers_to_external_data(model):
        raise NnError(ErrorCode.SECURITY, "the model references external data files; a model loaded "
                      "from bytes must carry all its weights")


def inline_onnx_external_data(model, allowed_dir, deadline: float | None = None,
                              max_bytes: int | None = None) -> bytes:
    """An ONNX model with every external weight file read into it, or the model itself
    when it has none. Weights may only come from files inside `allowed_dir` (the
    operator's choice; None allows none): any other location, `..` and symlinks that
    leave the directory included, is refused with `security`, so no model can make the
    host read an arbitrary file. The model with its weights may take `max_bytes`
    (`too-large` past it, before any is read: a 1.7 KB model naming one 64 MiB file 24
    times had the host read 1.5 GB). `deadline`: `refers_to_external_data`'s, and
    checked between files."""
    if not refers_to_external_data(model, deadline):
        return model
    if allowed_dir is None:
        raise NnError(ErrorCode.SECURITY, "the model references external data files; a model loaded "
                      "from bytes must carry all its weights (the operator can allow a directory: "
                      "limit 'external-data-dir')")
    import onnx
    try:
        proto = onnx.ModelProto.FromString(model)
    except Exception:
        raise invalid_encoding("the model references external data files and is not an ONNX protobuf") from None
    root = pathlib.Path(allowed_dir).resolve()
    spans = [(tensor, _external_span(tensor, root)) for tensor in _tensors(proto)
             if tensor.data_location or tensor.external_data]
    total = len(model) + sum(length for _, (_, _, length) in spans)
    if max_bytes is not None and total > max_bytes:
        raise too_large(f"the model with the external data it names ({len(spans)} tensors) is {total} bytes; "
                        f"the limit is {max_bytes} (limit 'max-model-bytes', --max-model-bytes)")
    for tensor, (target, offset, length) in spans:
        if deadline is not None and time.monotonic() > deadline:
            raise NnError(ErrorCode.TIMEOUT, "the model's external data was not read by the call's deadline")
        tensor.raw_data = _read_span(tensor, target, offset, length, root)
        del tensor.external_data[:]
        tensor.ClearField("data_location")
    inlined = proto.SerializeToString()
    # What onnx's parser kept but could not name (a data_location it does not know) is
    # still there for onnxruntime: the walk that found the references has the last word.
    if refers_to_external_data(inlined):
        raise NnError(ErrorCode.SECURITY, "the model references external data that wasinn cannot read into it")
    return inlined


def _tensors(model):
    """Every TensorProto of a parsed ModelProto, in the places `refers_to_external_data` walks."""
    graphs = [model.graph, *(g for t in model.training_info for g in (t.initialization, t.algorithm))]
    nodes = [n for f in model.functions for n in f.node]
    attributes = [a for f in model.functions for a in f.attribute_proto]
    while graphs or nodes or attributes:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield from (sparse.values, sparse.indices)
            nodes += graph.node
        elif nodes:
            attributes += nodes.pop().attribute
        else:
            a = attributes.pop()
            yield from (a.t, *a.tensors)
            for sparse in (a.sparse_tensor, *a.sparse_tensors):
                yield from (sparse.values, sparse.indices)
            graphs += (a.g, *a.graphs)


def _refused(tensor, root: pathlib.Path) -> NnError:
    """The one refusal of a tensor's external data: it reads the same whatever lies
    outside `root`, so a guest learns nothing of the host's files."""
    location = {e.key: e.value for e in tensor.external_data}.get("location", "")
    return NnError(ErrorCode.SECURITY, f"tensor {tensor.name!r}: external data {location!r} is not a "
                   "file inside the allowed directory (limit 'external-data-dir')")


def _external_span(tensor, root: pathlib.Path) -> tuple[pathlib.Path, int, int]:
    """The file inside `root`, offset and length a tensor's external data names."""
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    try:
        offset = int(info.get("offset", "0"))
        target = (root / location).resolve()
        if not location or offset < 0 or not target.is_relative_to(root):
            raise _refused(tensor, root)
        with _open_regular(target) as f:
            size = os.fstat(f.fileno()).st_size
        length = int(info.get("length", size - offset))
        if length < 0 or offset + length > size:
            raise _refused(tensor, root)
        return target, offset, length
    except (OSError, ValueError):
        raise _refused(tensor, root) from None


def _read_span(tensor, target: pathlib.Path, offset: int, length: int, root: pathlib.Path) -> bytes:
    try:
        with _open_regular(target) as f:
            if os.fstat(f.fileno()).st_size < offset + length:  # it shrank since it was measured
                raise _refused(tensor, root)
            f.seek(offset)
            return f.read(length)
    except OSError:
        raise _refused(tensor, root) from None


def _open_regular(target: pathlib.Path):
    """`target` open for reading; OSError unless it is a regular file. Non-blocking: a
    FIFO there must not hang the load before fstat refuses it."""
    f = open(os.open(target, os.O_RDONLY | os.O_NONBLOCK), "rb")
    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        f.close()
        raise OSError("not a regular file")
    return f

"""backends/formats.py's reading of ONNX bytes without onnx: what `graph_values` says
is what onnx's own parser reads, and no bytes make it fail. (The external-data
walk has its tests in test_external_data.py.)"""
from __future__ import annotations

import pathlib

import onnx
import pytest
from hypothesis import given, strategies as st
from onnx import TensorProto, helper

from support import models
from wasinn import TensorType
from wasinn.backends.formats import graph_values, onnx_file_values

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _onnx_reads(data: bytes) -> tuple:
    graph = onnx.ModelProto.FromString(data).graph

    def value(v):
        return v.name, v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
    return [value(v) for v in graph.input], [value(v) for v in graph.output], {t.name for t in graph.initializer}


def _model(inputs, outputs) -> bytes:
    nodes = [helper.make_node("Identity", [i.name], [o.name]) for i, o in zip(inputs, outputs)]
    return helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                             opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _sequence(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_sequence_value_info(name, TensorProto.FLOAT, None)


def _graph_again(*inputs: onnx.ValueInfoProto) -> bytes:
    """ModelProto.graph once more, with these inputs: a parser merges it into the first
    (input is repeated: they come after the first graph's)."""
    tail = onnx.ModelProto()
    tail.graph.input.extend(inputs)
    return tail.SerializeToString()


def _retyped_input() -> bytes:
    """One input whose ValueInfoProto is given twice, a shaped tensor type and then a
    sequence: protobuf merges the two, and the later kind replaces the tensor type."""
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, (2,)).SerializeToString()
    value += onnx.ValueInfoProto(type=_sequence("x").type).SerializeToString()
    graph = _field(11, value)
    return _field(7, graph)


def _field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


CASES = {
    "unknown rank": models.identity(TensorType.FP32, None),
    "scalar": models.identity(TensorType.FP32, ()),
    "shaped": models.identity(TensorType.U8, (1, 4)),
    "dynamic dims": _model([helper.make_tensor_value_info("x", TensorProto.BOOL, ["n", 2])],
                           [helper.make_tensor_value_info("y", TensorProto.BOOL, ["n", 2])]),
    "sequences": _model([_sequence("x")], [_sequence("y")]),
    "no name": _model([helper.make_tensor_value_info("", TensorProto.FLOAT, None)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1,))]),
    "add-mul": models.add_mul(),
    "two graphs merged": models.identity(TensorType.FP32, ()) + _graph_again(
        helper.make_tensor_value_info("z", TensorProto.FLOAT, None)),
    "a second input of the same name": models.identity(TensorType.FP32, (2,)) + _graph_again(
        helper.make_tensor_value_info("x", TensorProto.FLOAT, None)),
    "a type given twice": _retyped_input(),
    # a group (wire types 3 and 4) before the graph: protobuf skips it as an unknown field
    "a group": bytes([0x1B, 0x08, 0x01, 0x1C]) + models.identity(TensorType.FP32, None),
}


@pytest.mark.parametrize("case", CASES)
def test_the_graphs_values_are_what_onnx_reads(case):
    assert tuple(graph_values(CASES[case])) == _onnx_reads(CASES[case])


def test_the_cases_cover_both_answers():
    assert _onnx_reads(CASES["a type given twice"])[0] == [("x", False)]
    assert _onnx_reads(CASES["scalar"])[0] == [("x", True)]


def test_the_bundled_model_and_its_file():
    path = ROOT / "models" / "efficientnet-lite0" / "model.onnx"
    values = graph_values(path.read_bytes())
    assert tuple(values) == _onnx_reads(path.read_bytes()) == tuple(onnx_file_values(path))
    assert len(values.initializers) == 100 and values.inputs == [("input", True)]


@given(case=st.sampled_from(sorted(CASES)), changes=st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)),
                                                               max_size=8), cut=st.integers(0, 300))
def test_no_bytes_make_it_fail(case, changes, cut):
    data = bytearray(CASES[case])
    for at, value in changes:
        if at < len(data):
            data[at] = value
    values = graph_values(bytes(data[:max(0, len(data) - cut)]))
    assert all(isinstance(name, str) for name, _ in values.inputs + values.outputs)

"""wasinn.testing's strategies draw every type, shape class and edge value, and shrink
toward small, plain tensors."""
from __future__ import annotations

import collections
import math

import numpy as np
import onnx
from hypothesis import find, given, settings, strategies as st
from onnx import TensorProto, helper

from wasinn import TensorType
from wasinn.tensors import DTYPES
from wasinn.testing import EDGES, THRESHOLDS, dims, inputs_for, tensors


def test_tensors_cover_every_type_rank_shape_class_and_edge_value():
    seen: collections.Counter = collections.Counter()

    @settings(max_examples=1500, database=None, derandomize=True)
    @given(tensors())
    def draw(t):
        assert t.nbytes == t.expected_nbytes() and 0 <= len(t.dims) <= 6
        seen[t.ty] += 1
        seen[f"rank {len(t.dims)}"] += 1
        seen["zero-sized"] += 0 in t.dims
        for threshold in THRESHOLDS:
            seen[f"near {threshold}"] += abs(t.nbytes - threshold) <= 2 * DTYPES[t.ty].itemsize
        width = DTYPES[t.ty].itemsize
        elements = set(np.frombuffer(t.to_bytes(), f"<u{width}").tolist())
        for name, bits in EDGES[t.ty].items():
            seen[(t.ty, name)] += bits in elements
    draw()
    missing = [key for key in [*TensorType, *(f"rank {r}" for r in range(7)), "zero-sized",
                               *(f"near {t}" for t in THRESHOLDS),
                               *((ty, name) for ty in TensorType for name in EDGES[ty])] if not seen[key]]
    assert missing == []


def test_shrinking_goes_to_small_plain_tensors():
    t = find(tensors(), lambda t: True)
    assert (t.ty, t.dims, t.to_bytes()) == (TensorType.FP32, (), bytes(4))
    big = find(tensors(), lambda t: t.nbytes >= 65536)
    assert (big.ty, big.dims, set(big.to_bytes())) == (TensorType.FP32, (16384,), {0})


@given(dims(max_rank=3, max_elements=100))
def test_dims_respect_their_bounds(d):
    assert len(d) <= 3 and math.prod(d) <= 100


@given(tensors(ty=TensorType.I32, dims=[2, 3], elements=st.integers(-5, 5)))
def test_fixed_type_shape_and_elements(t):
    assert t.ty == TensorType.I32 and t.dims == (2, 3)
    assert np.all(np.abs(t.array()) <= 5)


def test_inputs_for_a_model_draws_its_names_types_and_dynamic_axes(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [None])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["ids"], ["z"])],
                              "g", [x, ids], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
                                              helper.make_tensor_value_info("z", TensorProto.INT64, [None])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    seen = set()

    @settings(max_examples=40, database=None)
    @given(inputs_for(path))
    def draw(named):
        [(n1, a), (n2, b)] = named
        assert (n1, a.ty, a.dims[1], n2, b.ty, len(b.dims)) == ("x", TensorType.FP32, 3, "ids", TensorType.I64, 1)
        assert 1 <= a.dims[0] <= 8 and a.nbytes == a.expected_nbytes()
        seen.add(a.dims[0])
    draw()
    assert len(seen) > 1

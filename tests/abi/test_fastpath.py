"""The bulk shim (wasinn build's default for Python guests) is exact at every size, goes
past the old per-call cap, keeps a Python guest from leaking what it passes, and
refuses spans that do not name the guest's own bytes."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from wasmtime.component import Record

import wasinn
from wasinn import HostTensor, TensorType
from wasinn.tensors import DTYPES

from support import models
from support.repo import guest_component

THRESHOLD = 64 * 1024  # where the bulk shim once switched paths: an edge worth keeping
EDGES = [0, 1, 7, THRESHOLD - 1, THRESHOLD, THRESHOLD + 1, 3 * THRESHOLD + 5, (1 << 20) + 3]


def value(ty: TensorType, dims, data: bytes) -> Record:
    r = Record()
    r.dimensions, r.ty, r.data = list(dims), ty.value, data
    return r


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("nbytes", EDGES)
def test_sizes_around_the_threshold_are_exact(roundtrip, nbytes):
    data = random_bytes(nbytes, nbytes)
    out = roundtrip.call("echo", HostTensor([nbytes], TensorType.U8, data))  # guest reads, then builds
    assert out.to_bytes() == data
    seen = roundtrip.call("inspect", HostTensor([nbytes], TensorType.U8, data))
    assert seen.data == data


@given(st.sampled_from(list(TensorType)), st.sampled_from([THRESHOLD - 2, THRESHOLD, THRESHOLD + 8, 200_003]),
       st.integers(0, 2**32 - 1))
def test_every_type_through_the_bulk_path_and_compute(roundtrip, ty, approx_bytes, seed):
    n = max(approx_bytes // DTYPES[ty].itemsize, 1)
    data = random_bytes(n * DTYPES[ty].itemsize, seed)
    model = models.identity(ty)
    g = roundtrip.call("load", [model], "onnx", "cpu").payload
    ctx = roundtrip.call("init-context", g).payload
    got = roundtrip.call("compute-tensors", ctx, [("x", HostTensor([n], ty, data))])
    assert got.tag == "ok", vars(got.payload)
    assert got.payload[0][1].to_bytes() == data
    out = roundtrip.call("echo", HostTensor([n], ty, data))
    assert (out.dims, out.ty, out.to_bytes()) == ((n,), ty, data)
    roundtrip.call("drop-context", ctx)
    roundtrip.call("drop-graph", g)


def test_mismatched_lengths_are_still_reported_by_compute(roundtrip):
    """tensor-from-memory keeps the constructor's rule: accept now, report in compute."""
    data = random_bytes(THRESHOLD + 1)
    g = roundtrip.call("load", [models.identity(TensorType.FP32)], "onnx", "cpu").payload
    ctx = roundtrip.call("init-context", g).payload
    got = roundtrip.call("compute", ctx, [("x", value(TensorType.FP32, [THRESHOLD // 4], data))])
    assert got.tag == "err" and got.payload.code == "invalid-argument"
    assert f"needs {THRESHOLD} bytes" in got.payload.data and f"got {THRESHOLD + 1}" in got.payload.data


def test_64_mib_tensor_round_trips(roundtrip):
    a = np.random.default_rng(1).integers(0, 256, 64 << 20, dtype=np.uint8)
    out = roundtrip.call("echo", a)
    assert np.array_equal(out.array(), a)
    g = roundtrip.call("load", [models.identity(TensorType.U8)], "onnx", "cpu").payload
    ctx = roundtrip.call("init-context", g).payload
    got = roundtrip.call("compute-tensors", ctx, [("x", a)])
    assert np.array_equal(got.payload[0][1].array(), a)


def test_large_model_loads_from_guest_memory(roundtrip, tmp_path):
    """A model over the standard path's 2.7 MB cap, read into guest memory and handed
    to graph.load (here 12 MB of unused initializer)."""
    from onnx import TensorProto, helper, numpy_helper
    pad = numpy_helper.from_array(np.zeros(3 << 20, np.float32), "pad")
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], [pad])
    (tmp_path / "big.onnx").write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    inst = roundtrip.host.instantiate(roundtrip.component, dirs=[(str(tmp_path), "/m")])
    g = inst.call("load-file", "/m/big.onnx", "onnx", "cpu")
    assert g.tag == "ok", vars(g.payload)
    ctx = inst.call("init-context", g.payload).payload
    x = np.array([1.5, -2], np.float32)
    np.testing.assert_array_equal(inst.call("compute-tensors", ctx, [("x", x)]).payload[0][1].array(), x)


@pytest.mark.parametrize("op, addr, length", [
    ("load", 0xFFFF_FFF0, 64), ("load", 8, 0xFFFF_FFFF), ("load", 0, 100),
    ("tensor", 0xFFFF_0000, 1 << 20), ("tensor", 1024, 70_000), ("tensor", 0xFFFF_FFFF, 4),
])
def test_bad_spans_are_errors_and_the_instance_keeps_serving(roundtrip, op, addr, length):
    got = roundtrip.call("bulk-span", op, addr, length)
    assert got.tag == "err" and got.payload.code == "invalid-argument", got
    assert "span" in got.payload.data
    out = roundtrip.call("echo", np.arange(5, dtype=np.int64))
    np.testing.assert_array_equal(out.array(), np.arange(5))
    assert roundtrip.instances_started == 1


@given(st.sampled_from(["load", "tensor"]), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_random_spans_never_crash_the_host(roundtrip, op, addr, length):
    got = roundtrip.call("bulk-span", op, addr, length)
    assert got.tag in ("ok", "err")
    assert roundtrip.instances_started == 1


@pytest.fixture(scope="module")
def standard_component(wasinn_host):
    return wasinn_host.load_component(guest_component("roundtrip", fastpath=False))


def test_the_shim_keeps_a_python_guest_from_leaking_the_tensors_it_builds(wasinn_host, roundtrip, standard_component):
    """componentize-py 0.25 never frees a `bytes` it lowers as a list<u8> argument: on
    the standard path each tensor a Python guest builds stays in its memory."""
    from wasinn.nn import store_key
    data = value(TensorType.U8, [1 << 20], bytes(1 << 20))
    grown = {}
    for label, inst in (("bulk", roundtrip), ("standard", wasinn_host.instantiate(standard_component))):
        inst.call("make", data)
        memory = wasinn_host.memories.main_memory(store_key(inst._store))
        before = memory.size
        for _ in range(10):
            inst.call("make", data)
        grown[label] = (memory.size - before) >> 20
    assert grown["bulk"] <= 1 and grown["standard"] >= 9, grown


def test_standard_guests_go_past_the_old_cap(wasinn_host, standard_component):
    """A portable build (no bulk path) takes the standard path, which wasinn's adapter
    serves from guest memory: 2,796,202 bytes per call was wasmtime-py's cap."""
    with wasinn_host.instantiate(standard_component) as inst:
        data = random_bytes(3_000_000, 3)
        out = inst.call("make", value(TensorType.U8, [3_000_000], data))
        assert out.to_bytes() == data
        assert inst.call("echo", HostTensor([len(data)], TensorType.U8, data)).to_bytes() == data
        assert inst.instances_started == 1


def test_standard_guests_are_exact_below_the_cap(wasinn_host, standard_component):
    with wasinn_host.instantiate(standard_component) as inst:
        for n in (0, 1, THRESHOLD + 1, 1 << 20):
            data = random_bytes(n, n)
            assert inst.call("echo", HostTensor([n], TensorType.U8, data)).to_bytes() == data

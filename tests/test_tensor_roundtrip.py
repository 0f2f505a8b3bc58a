"""The tensor path is exact: every type, shape and byte pattern, both ways and through compute."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st
from wasmtime.component import Record

from wasinn import HostTensor, TensorType, testing

from support import models
from support.repo import guest_component


@pytest.fixture(scope="module", params=["bulk", "standard"])
def roundtrip_component(request, wasinn_host):
    """Every test here runs on both data paths: the bulk path of `wasinn build` and the
    standard path a portable build (like any other toolchain's component) takes."""
    return wasinn_host.load_component(guest_component("roundtrip", fastpath=request.param == "bulk"))


TYPES = list(TensorType)


def tensors(**kwargs):
    """wasinn.testing's tensors (every type and shape class, edge values, sizes around
    64 KiB) as the (type, dims, bytes) these tests take."""
    return testing.tensors(**kwargs).map(lambda t: (t.ty, list(t.dims), t.to_bytes()))


def value(ty, dims, data) -> Record:
    r = Record()
    r.dimensions, r.ty, r.data = list(dims), ty.value, data
    return r


@given(tensors())
def test_host_to_guest_to_host_is_identical(roundtrip, t):
    ty, dims, data = t
    out = roundtrip.call("echo", HostTensor(dims, ty, data))
    assert (out.dims, out.ty, out.to_bytes()) == (tuple(dims), ty, data)


@given(tensors())
def test_guest_reads_exact_values(roundtrip, t):
    ty, dims, data = t
    seen = roundtrip.call("inspect", HostTensor(dims, ty, data))
    assert (seen.dimensions, seen.ty, seen.data) == (list(dims), ty.value, data)


@given(tensors())
def test_guest_built_tensor_reaches_host_exactly(roundtrip, t):
    ty, dims, data = t
    out = roundtrip.call("make", value(ty, dims, data))
    assert (out.dims, out.ty, out.to_bytes()) == (tuple(dims), ty, data)


@given(st.sampled_from(TYPES), st.lists(st.integers(0, 2**32 - 1), max_size=6), st.binary(max_size=64))
def test_constructor_accepts_any_combination(roundtrip, ty, dims, data):
    """The WIT constructor cannot fail, so mismatched bytes and huge dims are kept as
    given; `compute` is what reports them (see test_errors)."""
    out = roundtrip.call("make", value(ty, dims, data))
    assert (list(out.dims), out.ty, out.to_bytes()) == (dims, ty, data)


def test_numpy_arrays_cross_as_tensors(roundtrip):
    for dtype in ["<f2", "<f4", "<f8", "u1", "<i4", "<i8"]:
        a = (np.arange(24) * 3 - 7).astype(dtype).reshape(2, 3, 4)
        out = roundtrip.call("echo", a)
        np.testing.assert_array_equal(out.array(), a)


class Contexts:
    """One guest context per model, loaded on first use (a guest load per example
    would measure onnxruntime's session start, not the data path)."""

    def __init__(self, inst):
        self.inst, self.ids = inst, {}

    def __call__(self, model: bytes) -> int:
        if model not in self.ids:
            g = self.inst.call("load", [model], "onnx", "cpu")
            assert g.tag == "ok", vars(g.payload)
            self.ids[model] = self.inst.call("init-context", g.payload).payload
        return self.ids[model]


@pytest.fixture
def contexts(roundtrip):
    return Contexts(roundtrip)


@given(tensors())
def test_identity_through_compute_matches_native(roundtrip, contexts, t):
    ty, dims, data = t
    model = models.identity(ty)
    ctx = contexts(model)
    got = roundtrip.call("compute", ctx, [("x", value(ty, dims, data))])
    assert got.tag == "ok", vars(got.payload)
    [(name, out)] = got.payload
    [(_, want)] = models.native(model, {"x": (ty, tuple(dims), data)})
    assert (name, out.dimensions, out.ty, out.data) == ("y", list(dims), ty.value, want)
    assert want == data


@given(testing.tensor_types(), tensors())
def test_cast_through_compute_matches_native(roundtrip, contexts, dst, t):
    ty, dims, data = t
    model = models.cast(ty, dst)
    got = roundtrip.call("compute-tensors", contexts(model), [("x", HostTensor(dims, ty, data))])
    assert got.tag == "ok", vars(got.payload)
    [(name, out)] = got.payload
    [(_, want)] = models.native(model, {"x": (ty, tuple(dims), data)})
    assert (name, out.dims, out.ty, out.to_bytes()) == ("y", tuple(dims), dst, want)


def test_outputs_come_in_model_order_under_model_names(roundtrip, contexts):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 2, np.float32)
    ctx = contexts(models.add_mul())
    for inputs in ([("a", a), ("b", b)], [("b", b), ("a", a)], [("0", a), ("1", b)], [("1", b), ("a", a)]):
        got = roundtrip.call("compute-tensors", ctx, inputs)
        assert got.tag == "ok", vars(got.payload)
        assert [n for n, _ in got.payload] == ["sum", "product"]
        np.testing.assert_array_equal(got.payload[0][1].array(), a + b)
        np.testing.assert_array_equal(got.payload[1][1].array(), a * b)

"""Leak-free: churning wasi:nn resources inside one instance leaves the host's tables
where they started, and an instance that traps or is dropped frees everything it held.
(benchmarks/bench_leaks.py reports the process RSS for the same loops.)"""
from __future__ import annotations

import gc

import numpy as np
import pytest

import wasinn
from wasinn import TensorType

from support import models
from support.repo import CACHE, guest_component
from support.internals import tables

ZERO = {"tensor": 0, "graph": 0, "graph_execution_context": 0, "error": 0}
# Distinct models, so that loads in the churn create (and later free) real onnxruntime
# sessions: the host shares a graph only while an instance holds it.
DISTINCT_MODELS = [models.identity(ty, (n,)) for ty in TensorType for n in (1, 2)]


@pytest.fixture(scope="module")
def host():
    """One intra-op thread per graph: onnxruntime joins a graph's own thread pool when
    the graph is freed (~40 ms each here), which would dominate the 1k-graph churn."""
    return wasinn.Host(cache_dir=CACHE, ort_threads=1)


@pytest.fixture(scope="module")
def adversary_component(host):
    return host.load_component(guest_component("adversary"))


@pytest.fixture(scope="module")
def churn(host, adversary_component):
    """One instance for all the churns, as the issue asks; every test checks its own
    loop left nothing behind."""
    with host.instantiate(adversary_component) as inst:
        inst.call("counts")  # instantiate before the baseline is taken
        yield inst


def test_100k_tensors(host, churn):
    before = tables(host)
    assert churn.call("churn-tensors", 100_000, 16) == 0
    assert churn.live_resources() == ZERO
    assert tables(host) == before


def test_10k_contexts(host, churn):
    g = churn.call("load", [models.identity(TensorType.U8)], "onnx", "cpu").payload
    before = tables(host)
    assert churn.call("churn-contexts", g, 10_000) == 0
    assert tables(host) == before
    churn.call("drop", g)
    assert churn.live_resources() == ZERO


def test_10k_computes(host, churn):
    """Each compute moves an input in and brings an output back: 20k tensors."""
    ctx = churn.call("init-context", churn.call("load", [models.identity(TensorType.FP32)], "onnx", "cpu").payload)
    before = tables(host)
    assert churn.call("churn-computes", ctx.payload, "x", [2, 2], "FP32", 16, 10_000) == 0
    assert tables(host) == before
    churn.call("reset")
    assert churn.live_resources() == ZERO


def test_1k_graphs(host, churn):
    before = tables(host)
    assert churn.call("churn-graphs", DISTINCT_MODELS, 1_000) == 0
    assert churn.live_resources() == ZERO
    assert tables(host) == before
    assert len(host.nn._shared_graphs) == 0  # none kept once no instance holds it


def guest_memory(host: wasinn.Host, inst) -> int:
    return host.memories.main_memory(wasinn.nn.store_key(inst._store)).size


@pytest.mark.parametrize("nbytes", [16, 1024, 16 * 1024, 256 * 1024])
def test_guest_memory_stays_flat(host, churn, nbytes):
    """componentize-py 0.25 never frees its copy of a `bytes` lowered as `list<u8>`
    (every tensor constructor and load on the standard path leaked its payload in
    guest memory); wasinn's guest shim sends them by the bulk path instead."""
    ctx = churn.call("init-context", churn.call("load", [models.identity(TensorType.U8)], "onnx", "cpu").payload)
    churn.call("churn-computes", ctx.payload, "x", [nbytes], "U8", nbytes, 10)  # warm up
    before = guest_memory(host, churn)
    assert churn.call("churn-tensors", 2_000, nbytes) == 0
    assert churn.call("churn-computes", ctx.payload, "x", [nbytes], "U8", nbytes, 500) == 0
    assert churn.call("churn-graphs", [models.identity(TensorType.U8)], 500) == 0
    assert guest_memory(host, churn) == before
    churn.call("reset")


def test_failures_leave_nothing_behind(host, churn):
    """Failed computes and loads create error resources; the guest drops them."""
    before = tables(host)
    ctx = churn.call("init-context", churn.call("load", [models.identity(TensorType.U8)], "onnx", "cpu").payload)
    assert churn.call("churn-computes", ctx.payload, "x", [3], "FP32", 12, 1_000) == 1_000  # wrong type
    assert churn.call("churn-graphs", [b"\x08\x07junk"], 100) == 100
    churn.call("reset")
    assert churn.live_resources() == ZERO
    assert tables(host) == before


def _hold_some(inst) -> None:
    g = inst.call("load", [models.add_mul()], "onnx", "cpu").payload
    ctx = inst.call("init-context", g).payload
    a = inst.call("make-filled", [2, 3], "FP32", 24, 0)
    b = inst.call("adopt", np.ones((2, 3), np.float32))
    assert inst.call("compute", ctx, [("a", a), ("b", b)]).tag == "ok"
    inst.call("make-filled", [1 << 20], "U8", 1 << 20, 7)  # 1 MiB: crosses by the bulk path
    assert inst.live_resources()["tensor"] == 3


def test_a_trapped_instance_frees_all_its_host_resources(host, adversary_component):
    before = tables(host)
    with host.instantiate(adversary_component) as inst:
        _hold_some(inst)
        dead = inst.call("make-tensor", [1], "U8", b"x")
        inst.call("drop", dead)
        with pytest.raises(wasinn.GuestTrap):
            inst.call("touch", dead)
        assert inst.live_resources() == ZERO
        assert tables(host) == before  # wasi:nn objects, session and guest memory all gone
        assert inst.call("counts").tensors == 0  # and the next call runs on a fresh instance
        assert inst.instances_started == 2
    assert tables(host) == before


def test_an_instance_dropped_without_close_frees_its_host_resources(host, adversary_component):
    before = tables(host)
    inst = host.instantiate(adversary_component)
    _hold_some(inst)
    del inst
    gc.collect()
    assert tables(host) == before


def test_100_trapping_instances(host, adversary_component):
    """Traps over and over: every torn-down instance frees what it held."""
    before = tables(host)
    with host.instantiate(adversary_component) as inst:
        for _ in range(100):
            t = inst.call("make-tensor", [2], "U8", b"ab")
            inst.call("drop", t)
            with pytest.raises(wasinn.GuestTrap):
                inst.call("drop", t)
        assert inst.instances_started == 100
    assert tables(host) == before

"""Payload bytes through `buffer.read` at memory speed (the data path's buffers block,
abi/adapter.wat; pipeline/services/imports.py's BufferSpans): exact bytes for every size
through the Python and JavaScript operators, and a C guest whose realloc lies about
where the bytes may go traps with one line, not a write outside its memory.

And the bytes operators return (the results block: `process` lifted again with spans,
read before the guest's post-return): exact bytes from Python, JavaScript and C
operators up to 4 MiB (past wasmtime-py's 2,796,202-byte cap on the standard lift), and
a span outside the guest's memory traps with one line."""
from __future__ import annotations

import hashlib
import json

import pytest
from wasmtime.component import ResourceHost

import wasinn
from wasinn._bindings import Resource
from wasinn.abi import rewrite
from wasinn.abi.binary import read_layout
from wasinn.pipeline.operator import Message, Operator, OperatorError
from wasinn.pipeline.services.imports import free_resources, new_resource, serve

from support import guest_builds, internals
from support.operator_guests import ROOT, js_operator_wasm, operator_wasm, snapshot_wasm

SIZES = [0, 1, 150_528, 4 << 20]  # 150,528: a 224x224 RGB frame


def _js_wasm():
    try:
        return js_operator_wasm()
    except guest_builds.ToolchainMissing as e:
        guest_builds.skip_without(e)


@pytest.fixture(scope="module", params=["py", "js"])
def operator(request, wasinn_host, services):
    wasm = operator_wasm("operator-probe") if request.param == "py" else _js_wasm()
    with Operator.open(wasinn_host, wasm, kind="map", name=f"payloads-{request.param}", services=services) as op:
        yield wasm, op


def payload(n: int) -> bytes:
    return bytes((i * 7 + (i >> 8)) & 0xFF for i in range(min(n, 1 << 16))) * (n >> 16) + \
        bytes((i * 7 + (i >> 8)) & 0xFF for i in range(n & 0xFFFF))


def test_the_operators_read_buffers_through_the_adapter(operator):
    out, why_not = rewrite.rewrite(operator[0].read_bytes(), "operator")
    assert why_not is None
    assert "wasinn:adapter-buffers/buffers@0.1.0" in read_layout(out).imports


def test_an_operator_that_infers_gets_both_halves():
    """guest/snapshot reads its frame with buffer.read and loads its model with graph.load
    (test_operator_guests checks what it answers)."""
    out, why_not = rewrite.rewrite(snapshot_wasm().read_bytes(), "snapshot")
    assert why_not is None
    assert {"wasinn:adapter-buffers/buffers@0.1.0", "wasinn:adapter/tensors@0.1.0",
            "wasinn:adapter/graphs@0.1.0"} <= set(read_layout(out).imports)


@pytest.mark.parametrize("n", SIZES)
def test_buffer_read_hands_over_exact_bytes(operator, n):
    data = payload(n)
    out = json.loads(operator[1].map(Message(data, topic="t", content_type="application/octet-stream")).payload)
    expected = hashlib.sha256(data).hexdigest() if "sha256" in out else _fnv1a(data)
    assert (out["n"], out.get("sha256", out.get("fnv1a"))) == (n, expected)


@pytest.fixture(scope="module")
def reader(wasinn_host):
    try:
        wasm = guest_builds.c_component([ROOT / "guest" / "c-buffer-reader" / "reader.c"], name="c-buffer-reader",
                                        world="wasinn:guest/buffer-reader")
    except guest_builds.ToolchainMissing as e:
        guest_builds.skip_without(e)
    serve(wasinn_host)
    with wasinn_host.instantiate(wasinn_host.load_component(wasm)) as inst:
        yield inst


def _read(inst, data: bytes, mode: int) -> int:
    rep = new_resource(data)
    try:
        return inst.call("read", ResourceHost.own(rep, Resource.BUFFER).to_any(inst.store), mode)
    finally:
        free_resources([rep])


def _fnv1a(data: bytes) -> int:
    h = 2166136261
    for b in data:
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def _fnv(data: bytes) -> int:  # what the C reader returns
    return _fnv1a(data) ^ len(data)


def test_a_c_guest_reads_exact_bytes(reader):
    for n in (0, 1, 150_528):
        data = payload(n)
        assert _read(reader, data, 0) == _fnv(data)


@pytest.mark.parametrize("mode", [1, 2, 3], ids=["realloc-past-end", "realloc-span-past-end", "return-area-past-end"])
def test_spans_outside_the_guest_memory_trap_with_one_line(reader, mode):
    with pytest.raises(wasinn.GuestTrap) as trap:
        _read(reader, payload(4096), mode)
    assert "\n" not in str(trap.value) and "torn down" in str(trap.value)
    data = payload(300)
    assert _read(reader, data, 0) == _fnv(data)  # a fresh instance serves the next call


# --- results ------------------------------------------------------------------------------
def _c_result_wasm():
    try:
        return guest_builds.c_component([ROOT / "guest" / "c-span-result" / "result.c"], name="c-span-result",
                                        world="wasinn:guest/span-result")
    except guest_builds.ToolchainMissing as e:
        guest_builds.skip_without(e)


@pytest.fixture(scope="module", params=["py", "js", "c"])
def returner(request, wasinn_host, services):
    """An operator that hands bytes back as `bytes`, and how to make it: the Python probe's
    accumulate joins the staged payload with none; the JavaScript map echoes an
    application/x-echo payload; the C map echoes a bare buffer."""
    if request.param == "py":
        with Operator.open(wasinn_host, operator_wasm("operator-probe"), kind="accumulate", name="results-py",
                           services=services) as op:
            yield op, lambda data: op.accumulate(data, [])
    elif request.param == "js":
        with Operator.open(wasinn_host, _js_wasm(), kind="map", name="results-js", services=services) as op:
            yield op, lambda data: op.map(Message(data, topic="t", content_type="application/x-echo")).payload
    else:
        with Operator.open(wasinn_host, _c_result_wasm(), kind="map", name="results-c", services=services) as op:
            yield op, op.map


def test_the_operators_results_get_a_span_export(returner):
    op, _ = returner
    exports = op.component.type.exports(wasinn.Host.engine_of(op.component))
    assert f"wasinn-spans-{op.kind}-process" in exports


@pytest.mark.parametrize("n", SIZES)
def test_results_hand_back_exact_bytes(returner, n):
    data = payload(n)
    assert returner[1](data) == data


@pytest.fixture(scope="module")
def c_result(wasinn_host, services):
    with Operator.open(wasinn_host, _c_result_wasm(), kind="map", name="span-liar", services=services) as op:
        yield op


@pytest.mark.parametrize("marker", [b"span:out", b"span:end"], ids=["past-its-memory", "past-its-end"])
def test_a_result_span_outside_the_guest_memory_traps_with_one_line(c_result, marker):
    with pytest.raises(OperatorError) as e:
        c_result.map(marker + payload(100))
    assert e.value.kind == "trap" and "\n" not in str(e.value)
    assert "outside the guest's memory" in str(e.value) and "map@1.1.0#process" in str(e.value)
    data = payload(300)
    assert c_result.map(data) == data  # a fresh instance serves the next message


def test_the_guest_post_return_runs_once_the_bytes_are_copied(c_result, wasinn_host):
    """The C operator's post-return overwrites the bytes it frees: exact bytes say they
    were copied before it ran, a memory that does not grow over 4 MiB results says it ran."""
    data = payload(4 << 20)
    assert c_result.map(data) == data
    size = internals.adapter_memory_size(wasinn_host, c_result.instance.store)
    for _ in range(8):
        assert c_result.map(data) == data
    assert internals.adapter_memory_size(wasinn_host, c_result.instance.store) == size

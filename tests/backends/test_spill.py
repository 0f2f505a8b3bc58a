"""A large ONNX model reaches onnxruntime as a temporary model file whose weights it
maps (backends/spill.py): the files are gone once the load returns, whether it worked or
not, and the model computes what it computed from bytes. In process here (`--isolate
none`, and the operator's models under the default policy); a model from a guest's bytes
spills the same way in its backend worker, in the worker's private directory."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import wasinn
from wasinn import ExecutionTarget, GraphEncoding
from wasinn.backends import KINDS
from wasinn.limits import Limits

from support.repo import CACHE, guest_component

N = 9 << 19  # floats per weight: two of them make a 36 MiB model, past spill's 32 MiB


def big_model(seed: int, op: str = "Mul") -> tuple[bytes, dict[str, np.ndarray]]:
    """y = (x + w1) op w2 + c: two large initializers (moved out) and a small one (kept)."""
    rng = np.random.default_rng(seed)
    weights = {"w1": rng.standard_normal(N, np.float32), "w2": rng.standard_normal(N, np.float32),
               "c": rng.standard_normal(1, np.float32)}
    nodes = [helper.make_node("Add", ["x", "w1"], ["s"]), helper.make_node(op, ["s", "w2"], ["p"]),
             helper.make_node("Add", ["p", "c"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N])],
                              [numpy_helper.from_array(w, name) for name, w in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString(), weights


@pytest.fixture(scope="module")
def host() -> wasinn.Host:
    return wasinn.Host(cache_dir=CACHE, limits=Limits(isolate="none"))


@pytest.fixture
def roundtrip(host):
    with host.instantiate(host.load_component(guest_component("roundtrip"))) as inst:
        yield inst


@pytest.fixture
def spill_dir(tmp_path, monkeypatch):
    """TMPDIR for this test, so that what the load leaves there can be seen."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def mapped_deleted_weights(directory) -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if str(directory) in line and line.rstrip().endswith("/weights (deleted)")]


def load_mapped_and_compute(inst, spill_dir, seed: int, x: np.ndarray):
    """Loads a big model through the guest, checks its weights file is mapped and gone,
    and computes on `x`: (model bytes, weights, the [(name, tensor)] outputs)."""
    model, w = big_model(seed=seed)
    g = inst.call("load", [model], "onnx", "cpu")
    assert g.tag == "ok", vars(g.payload)
    assert list(spill_dir.iterdir()) == []
    assert mapped_deleted_weights(spill_dir), "the backend should map the weights file, now deleted"
    got = inst.call("compute-tensors", inst.call("init-context", g.payload).payload, [("x", x)])
    assert got.tag == "ok", vars(got.payload)
    return model, w, got.payload


def test_a_large_model_from_a_guest_maps_its_weights_and_leaves_no_file(roundtrip, spill_dir):
    x = np.random.default_rng(2).standard_normal(N, np.float32)
    model, w, outputs = load_mapped_and_compute(roundtrip, spill_dir, 1, x)
    native = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(outputs[0][1].array(), native)
    np.testing.assert_allclose(native, (x + w["w1"]) * w["w2"] + w["c"], rtol=1e-6)


def _shortened(seed: int) -> bytes:
    """A big model with w2's raw_data one float short of its shape."""
    from onnx import ModelProto
    proto = ModelProto.FromString(big_model(seed)[0])
    w2 = next(t for t in proto.graph.initializer if t.name == "w2")
    w2.raw_data = w2.raw_data[:-4]
    return proto.SerializeToString()


@pytest.mark.parametrize("model, code, fragment", [
    (lambda: big_model(seed=3, op="NoSuchOp")[0], "unsupported-operation", "No Op registered for NoSuchOp"),
    (lambda: _shortened(seed=4), "invalid-encoding", "onnxruntime could not load the model"),
], ids=["unknown-operator", "weight-short-of-its-shape"])
def test_a_failed_load_leaves_no_file_and_one_line(roundtrip, spill_dir, model, code, fragment):
    g = roundtrip.call("load", [model()], "onnx", "cpu")
    assert g.tag == "err"
    assert (g.payload.code, fragment in g.payload.data, "\n" in g.payload.data) == (code, True, False), \
        g.payload.data
    assert "wasinn-onnx-" not in g.payload.data  # the guest sent bytes: no file of ours is named
    assert list(spill_dir.iterdir()) == []
    assert not mapped_deleted_weights(spill_dir)


def test_a_model_too_long_to_walk_loads_from_its_bytes(roundtrip, spill_dir):
    """Past a million protobuf fields the walk gives up (it must not take longer than
    the load): the model loads as bytes, as before, and still computes."""
    model, w = big_model(seed=6)
    model += b"\x32\x00" * ((1 << 20) + 1)  # ModelProto.doc_string = "", again and again
    g = roundtrip.call("load", [model], "onnx", "cpu")
    assert g.tag == "ok", vars(g.payload)
    assert not mapped_deleted_weights(spill_dir) and list(spill_dir.iterdir()) == []
    ctx = roundtrip.call("init-context", g.payload).payload
    got = roundtrip.call("compute-tensors", ctx, [("x", np.zeros(N, np.float32))])
    np.testing.assert_allclose(got.payload[0][1].array(), w["w1"] * w["w2"] + w["c"], rtol=1e-6)


@pytest.mark.skipif(not KINDS["openvino"].installed(), reason="the openvino backend is not installed")
def test_openvino_reads_a_large_onnx_model_from_the_mapped_file_too(spill_dir):
    ov_host = wasinn.Host(cache_dir=CACHE, backends={"onnx": "openvino"}, limits=Limits(isolate="none"))
    with ov_host.instantiate(ov_host.load_component(guest_component("roundtrip"))) as inst:
        x = np.random.default_rng(3).standard_normal(N, np.float32)
        _, w, outputs = load_mapped_and_compute(inst, spill_dir, 10, x)
        assert outputs[0][0] == "y"
        np.testing.assert_allclose(outputs[0][1].array(), (x + w["w1"]) * w["w2"] + w["c"], rtol=1e-5, atol=1e-6)


def test_the_bytes_still_load_where_tmpdir_refuses(host, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    model, w = big_model(seed=5)
    graph = host.nn.load_graph([model], GraphEncoding.ONNX, ExecutionTarget.CPU)
    assert not mapped_deleted_weights(tmp_path)
    out = graph.session.run(None, {"x": np.zeros(N, np.float32)})[0]
    np.testing.assert_allclose(out, w["w1"] * w["w2"] + w["c"], rtol=1e-6)


def test_views_of_the_builders_are_released_even_when_the_load_fails(host):
    views = [memoryview(b"\x08\x07junk")]
    with pytest.raises(Exception):
        host.nn.load_views(views, GraphEncoding.ONNX, ExecutionTarget.CPU)
    with pytest.raises(ValueError, match="released"):
        views[0].tobytes()


def test_a_spill_removes_what_dead_processes_left_an_hour_ago(roundtrip, spill_dir):
    """A process killed mid-load leaves its directory; the next spill removes it once it
    is an hour old, and keeps those of live processes and recent ones (TMPDIR may be
    shared across pid namespaces)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    left = {name: spill_dir / name for name in (f"wasinn-onnx-{dead}-old", f"wasinn-onnx-{dead}-recent",
                                                 f"wasinn-onnx-{os.getpid()}-live", "wasinn-onnx-unrelated")}
    for path in left.values():
        path.mkdir()
        (path / "weights").write_bytes(b"x" * 100)
    two_hours_ago = time.time() - 7200
    for name in (f"wasinn-onnx-{dead}-old", f"wasinn-onnx-{os.getpid()}-live", "wasinn-onnx-unrelated"):
        os.utime(left[name], (two_hours_ago, two_hours_ago))
    g = roundtrip.call("load", [big_model(seed=12)[0]], "onnx", "cpu")  # a seed of its own: a model loaded before is cached, not spilled
    assert g.tag == "ok", vars(g.payload)
    assert sorted(p.name for p in spill_dir.iterdir()) == sorted(n for n in left if not n.endswith("-old"))


def test_a_large_model_from_a_guest_spills_in_its_worker():
    """Under the default policy the worker maps the weights file from its own directory,
    which goes with the worker."""
    host = wasinn.Host(cache_dir=CACHE)
    with host.instantiate(host.load_component(guest_component("roundtrip"))) as inst:
        model, w = big_model(seed=13)
        g = inst.call("load", [model], "onnx", "cpu")
        assert g.tag == "ok", vars(g.payload)
        worker = inst._session.worker
        directory = os.readlink(f"/proc/{worker.pid}/cwd")
        with open(f"/proc/{worker.pid}/maps") as f:
            assert any(f" {directory}/" in line and line.rstrip().endswith("/weights (deleted)") for line in f), \
                "the worker should map the weights file, now deleted"
        got = inst.call("compute-tensors", inst.call("init-context", g.payload).payload, [("x", np.zeros(N, np.float32))])
        np.testing.assert_allclose(got.payload[0][1].array(), w["w1"] * w["w2"] + w["c"], rtol=1e-6)

"""The remote backend against a real KServe model server on loopback (started and
stopped here): guests load models by name and see plain wasi:nn, while the graphs run
on the server; timeouts, server errors and unreachable servers become wasi:nn errors."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

from support import models
from support.repo import CACHE, ROOT
from support.kserve_support import SERVER_PYTHON, KServeServer, free_port
from wasinn.apps.classify import ImageClassifier, composed_model, load_image
from wasinn.errors import WasinnError
from wasinn.registry import ModelRegistry

BUNDLED = ROOT / "models" / "efficientnet-lite0" / "model.onnx"
A = np.arange(6, dtype=np.float32).reshape(2, 3)
B = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
# Loop iterations of a 256x256 MatMul in the slow model: ~1.5 s on one idle core, far
# longer than the timeout the test gives it.
SLOW_ITERATIONS = 10_000
SLOW_TIMEOUT = 0.3


def reshape_model() -> bytes:
    """Reshapes x [n] to [7]: the server accepts any n, and onnxruntime on the server
    fails for n != 7."""
    shape = helper.make_tensor("s", TensorProto.INT64, [1], [7])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7])], [shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not SERVER_PYTHON.exists():
        message = f"{SERVER_PYTHON} is missing: run scripts/setup-kserve.sh (scripts/setup.sh does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    d = tmp_path_factory.mktemp("kserve")
    files = {"adder": models.add_mul(), "reshape": reshape_model(), "slow": models.slow_loop(SLOW_ITERATIONS)}
    for name, data in files.items():
        (d / f"{name}.onnx").write_bytes(data)
    served = {name: d / f"{name}.onnx" for name in files}
    served["classifier"] = composed_model(CACHE, print)
    with KServeServer(served, d / "server.log") as s:
        yield s


def register(host, name: str, url: str) -> str:
    host.models.register_spec(f"{name}={url}")
    return name


def failure(result) -> tuple[str, str]:
    assert result.tag == "err", result
    return result.payload.code, result.payload.data


def compute(roundtrip, name: str, inputs):
    g = roundtrip.call("load-by-name", name)
    if g.tag == "err":
        return g
    ctx = roundtrip.call("init-context", g.payload)
    assert ctx.tag == "ok", ctx
    return roundtrip.call("compute-tensors", ctx.payload, inputs)


@pytest.mark.parametrize("data", ["binary", "json"])
def test_guest_computes_on_the_server_and_matches_native(wasinn_host, roundtrip, server, data):
    name = register(wasinn_host, f"remote-adder-{data}", server.url("adder", data=data))
    got = compute(roundtrip, name, [("a", A), ("b", B)])
    assert got.tag == "ok", (got.payload.code, got.payload.data) if got.tag == "err" else got
    want = dict(models.native(models.add_mul(), {"a": (models.TensorType.FP32, (2, 3), A.tobytes()),
                                                 "b": (models.TensorType.FP32, (2, 3), B.tobytes())}))
    assert [n for n, _ in got.payload] == ["sum", "product"]
    for n, t in got.payload:
        assert t.to_bytes() == want[n]


def test_classifier_component_on_a_remote_model_matches_the_embedded_one(wasinn_host, server):
    """The bundled classifier guest, unchanged, loads the composed model by name from the server."""
    images = [load_image(ROOT / "images" / f) for f in ("chelsea.png", "coffee.png")]
    local = ImageClassifier(wasinn_host).classify(images, top=3)
    remote = ImageClassifier(wasinn_host, model=register(wasinn_host, "remote-classifier", server.url("classifier")))
    got = remote.classify(images, top=3)
    assert [[p.index for p in preds] for preds in got] == [[p.index for p in preds] for preds in local]
    np.testing.assert_allclose([[p.score for p in preds] for preds in got],
                               [[p.score for p in preds] for preds in local], rtol=1e-5, atol=1e-6)


def test_cli_run_and_inspect_take_a_remote_model(nn_cli_wasm, server, tmp_path):
    A.tofile(tmp_path / "a.bin")
    B.tofile(tmp_path / "b.bin")
    proc = subprocess.run(
        [sys.executable, "-m", "wasinn", "run", "--cache-dir", str(CACHE), "--model", f"adder={server.url('adder')}",
         "--dir", f"{tmp_path}::/data", str(nn_cli_wasm), "--name", "adder",
         "a=FP32:2,3:/data/a.bin", "b=FP32:2,3:/data/b.bin"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[:3] for line in proc.stdout.splitlines()] == [
        ["sum", "FP32", "[2, 3]"], ["product", "FP32", "[2, 3]"]]

    proc = subprocess.run([sys.executable, "-m", "wasinn", "inspect", server.url("classifier"), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    described = json.loads(proc.stdout)
    assert described["backend"] == "kserve"
    assert described["inputs"] == [{"name": "image", "type": "U8", "type_name": "UINT8", "shape": [-1, -1, 3]}]
    assert [t["name"] for t in described["outputs"]] == ["probabilities", "ranked"]


def test_server_errors_are_runtime_errors_with_the_servers_message(wasinn_host, roundtrip, server):
    name = register(wasinn_host, "remote-reshape", server.url("reshape"))
    code, message = failure(compute(roundtrip, name, [("x", np.ones(4, np.float32))]))
    assert code == "runtime-error"
    assert server.url("reshape").removeprefix("kserve+") in message and "answered 500" in message
    assert "cannot be reshaped to the requested shape" in message  # onnxruntime's words, on the server


def test_inputs_are_checked_against_the_servers_metadata_before_sending(wasinn_host, roundtrip, server):
    name = register(wasinn_host, "remote-adder-checked", server.url("adder"))
    code, message = failure(compute(roundtrip, name, [("a", A), ("b", np.ones((3, 2), np.float32))]))
    assert code == "invalid-argument" and "expected float32 [2,3], got float32 [3,2]" in message


def test_a_model_the_server_lacks_is_not_found(wasinn_host, roundtrip, server):
    name = register(wasinn_host, "remote-missing", server.url("nope"))
    code, message = failure(roundtrip.call("load-by-name", name))
    assert code == "not-found" and "does not exist" in message  # the server's message


def test_a_slow_inference_is_a_timeout(wasinn_host, roundtrip, server):
    name = register(wasinn_host, "remote-slow", server.url("slow", timeout=SLOW_TIMEOUT))
    code, message = failure(compute(roundtrip, name, [("x", np.ones((256, 256), np.float32))]))
    assert code == "timeout" and f"within {SLOW_TIMEOUT:g} s" in message
    adder = register(wasinn_host, "remote-adder-after-timeout", server.url("adder"))
    assert compute(roundtrip, adder, [("a", A), ("b", B)]).tag == "ok"  # the guest goes on


def test_a_server_that_never_answers_is_a_timeout_not_a_hang(wasinn_host, roundtrip):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"kserve+http://127.0.0.1:{silent.getsockname()[1]}/v2/models/m?timeout=0.5"
        code, message = failure(roundtrip.call("load-by-name", register(wasinn_host, "remote-silent", url)))
    assert code == "timeout" and "did not answer GET /v2/models/m within 0.5 s" in message


def test_an_unreachable_server_is_a_clear_error(wasinn_host, roundtrip):
    port = free_port()  # nothing listens there now
    name = register(wasinn_host, "remote-down", f"kserve+http://127.0.0.1:{port}/v2/models/m")
    code, message = failure(roundtrip.call("load-by-name", name))
    assert code == "runtime-error"
    assert message == f"cannot reach the inference server at http://127.0.0.1:{port}/v2/models/m: Connection refused"
    assert roundtrip.call("load-by-name", name).tag == "err"  # not cached: a later load tries again


@pytest.mark.parametrize("url, message", [
    ("kserve+https://h:1/v2/models/m", "over kserve+http://HOST:PORT"),
    ("kserve+http://h:1/v1/models/m:predict", "the path must be /v2/models/NAME"),
    ("kserve+http://h:1/v2/models/m?timeout=soon", "timeout must be a number of seconds"),
    ("kserve+http://h:1/v2/models/m?retries=3", "unknown option(s) retries"),
    ("kserve+http://h:1/v2/models/m?data=xml", "data must be binary or json"),
])
def test_bad_urls_are_refused_when_registered(url, message):
    with pytest.raises(WasinnError, match="model 'm': .*" + re.escape(message)):
        ModelRegistry().register_spec(f"m={url}")

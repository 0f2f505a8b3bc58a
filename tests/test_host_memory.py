"""No guest can make the host hold more than its budgets: outputs (max-output-bytes),
a backend's working memory (max-backend-memory) and what an instance holds on the host
(max-host-bytes). Peaks are measured in a fresh process per scenario (VmHWM), with
generous margins: the machine is shared."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import wasinn
from wasinn import TensorType
from wasinn.limits import Limits

from support.repo import CACHE, ROOT, guest_component

MIB = 1 << 20
PROBE = ROOT / "tests" / "support" / "host_memory_probe.py"
ONE = ["x", "FP32", [1], np.ones(1, np.float32).tobytes().hex()]


def _model(nodes, inputs, outputs, initializers=()) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def expand(n: int, *, reduce: bool = False, static: bool = True) -> bytes:
    """x float32 [1] expanded to [n]; with `reduce`, summed to a scalar. `static`: the
    shape is a constant, so the model fixes the output's size; otherwise the shape
    comes from the data (Expand of x to the shape of Range(0, n*x))."""
    nodes = []
    if static:
        shape = "s"
        inits = [numpy_helper.from_array(np.array([n], np.int64), "s")]
    else:
        inits = [numpy_helper.from_array(np.array(float(n), np.float32), "n"),
                 numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                 numpy_helper.from_array(np.array(1.0, np.float32), "step")]
        nodes += [helper.make_node("Squeeze", ["x"], ["xs"]), helper.make_node("Mul", ["n", "xs"], ["limit"]),
                  helper.make_node("Range", ["zero", "limit", "step"], ["r"]), helper.make_node("Shape", ["r"], ["shape"])]
        shape = "shape"
    nodes.append(helper.make_node("Expand", ["x", shape], ["e" if reduce else "y"]))
    if reduce:
        nodes.append(helper.make_node("ReduceSum", ["e"], ["y"], keepdims=0))
    out = [] if reduce else ([n] if static else None)
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)


def doubled_sum(n: int) -> bytes:
    """x float32 [1] expanded to [n], added to itself, summed: two [n] tensors at once."""
    nodes = [helper.make_node("Expand", ["x", "s"], ["e"]), helper.make_node("Add", ["e", "e"], ["a"]),
             helper.make_node("ReduceSum", ["a"], ["y"], keepdims=0)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                  [numpy_helper.from_array(np.array([n], np.int64), "s")])


def small() -> bytes:
    return _model([helper.make_node("Identity", ["x"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])


@pytest.fixture(scope="module")
def roundtrip_wasm() -> pathlib.Path:
    path = guest_component("roundtrip")
    wasinn.Host(cache_dir=CACHE).load_component(path)  # compiled here, so no probe's peak is a compile's
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, pathlib.Path]:
    d = tmp_path_factory.mktemp("models")
    made = {"small": small(), "out20": expand(5 * MIB), "out20-dynamic": expand(5 * MIB, static=False),
            "expand2g": expand(512 * MIB, reduce=True), "near64m": doubled_sum(6_250_000)}
    for name, model in made.items():
        (d / f"{name}.onnx").write_bytes(model)
    return {name: d / f"{name}.onnx" for name in made}


def probe(wasm, model, *, limits=None, threads=1, then=None, inputs=(ONE,), contexts=1) -> dict:
    spec = {"cache": str(CACHE), "component": str(wasm), "model": str(model), "limits": limits or {},
            "threads": threads, "then": then and str(then), "inputs": list(inputs), "contexts": contexts}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "host"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(PROBE), json.dumps(spec)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def baseline(roundtrip_wasm, models) -> dict:
    got = probe(roundtrip_wasm, models["small"])
    assert got["results"] == [["ok", [["y", ONE[3], 4]]]]
    return got


def test_an_output_over_max_output_bytes_is_refused_before_the_run(roundtrip_wasm, models, baseline):
    got = probe(roundtrip_wasm, models["out20"], limits={"max-output-bytes": "8MiB"})
    [(code, message)] = got["results"]
    assert code == "too-large"
    assert message == ("output 'y' is 20971520 bytes; the limit is 8388608 (max-output-bytes, --max-output-bytes)")
    print(f"peak {got['peak'] / MIB:.0f} MiB, baseline run {baseline['peak'] / MIB:.0f} MiB")
    assert got["peak"] <= baseline["peak"] * 1.10


def test_an_output_whose_size_only_the_run_tells_is_refused_before_it_is_wrapped(roundtrip_wasm, models, baseline):
    got = probe(roundtrip_wasm, models["out20-dynamic"], limits={"max-output-bytes": "8MiB"}, then=models["small"])
    [(code, message)] = got["results"]
    assert code == "too-large" and "(max-output-bytes, --max-output-bytes)" in message
    assert "output 'y' is 20971520 bytes" in message
    print(f"peak {got['peak'] / MIB:.0f} MiB, baseline run {baseline['peak'] / MIB:.0f} MiB")
    # the backend made the 20 MiB output (and its Range); nothing was copied out of it
    assert got["peak"] <= baseline["peak"] + 80 * MIB
    assert got["after"][0][0] == "ok"


def test_a_graph_that_expands_to_2_gib_is_refused_at_max_backend_memory(roundtrip_wasm, models, baseline):
    got = probe(roundtrip_wasm, models["expand2g"], limits={"max-backend-memory": "512MiB"}, then=models["small"])
    [(code, message)] = got["results"]
    assert code == "too-large", message
    assert "the limit is 536870912 (max-backend-memory, --max-backend-memory)" in message
    assert "2147483648" in message  # what the graph asked for
    print(f"peak {got['peak'] / MIB:.0f} MiB, baseline run {baseline['peak'] / MIB:.0f} MiB")
    assert got["peak"] <= baseline["peak"] + 600 * MIB
    assert got["after"] == [["ok", [["y", ONE[3], 4]]]]  # the same instance serves the next call
    assert got["started"] == [1]


def test_contexts_of_a_graph_near_max_backend_memory_hold_no_more_than_one(roundtrip_wasm, models, baseline):
    # runs that shrank onnxruntime's arena at their end (wasinn's, below the default
    # max-backend-memory) grew the process ~24 MiB for each context run once on a graph
    # near its bound: 120 contexts held 2.9 GB under 64 MiB (probe 64)
    got = probe(roundtrip_wasm, models["near64m"], limits={"max-backend-memory": "64MiB"}, contexts=30)
    [(code, _)] = got["results"]
    assert code == "ok", got["results"]
    print(f"peak {got['peak'] / MIB:.0f} MiB, baseline run {baseline['peak'] / MIB:.0f} MiB")
    assert got["peak"] <= baseline["peak"] + 200 * MIB


def test_four_instances_at_once_are_all_refused_and_memory_returns(roundtrip_wasm, models, baseline):
    got = probe(roundtrip_wasm, models["expand2g"], limits={"max-backend-memory": "512MiB"}, threads=4,
                then=models["small"])
    assert [code for code, _ in got["results"]] == ["too-large"] * 4, got["results"]
    assert all("(max-backend-memory, --max-backend-memory)" in message for _, message in got["results"])
    assert got["live_computed"] == got["live_before"]
    assert [code for code, _ in got["after"]] == ["ok"] * 4 and got["started"] == [1] * 4
    print(f"peak {got['peak'] / MIB:.0f} MiB, rss after {got['rss'] / MIB:.0f} MiB, "
          f"before the calls {got['baseline_rss'] / MIB:.0f} MiB")
    assert got["peak"] <= baseline["peak"] + 600 * MIB
    assert got["rss"] <= got["baseline_rss"] + 64 * MIB


# --- in-process: refusals and their messages ---------------------------------------------
def make_host(**limits) -> wasinn.Host:
    return wasinn.Host(cache_dir=CACHE, limits=Limits().updated(limits))


def failure(result) -> tuple[str, str]:
    assert result.tag == "err", result
    return result.payload.code, result.payload.data


def instance(host, roundtrip_wasm):
    return host.instantiate(host.load_component(roundtrip_wasm))


def test_max_host_bytes_counts_tensors_outputs_and_models(roundtrip_wasm):
    model = _model([helper.make_node("Identity", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.UINT8, [None])],
                   [helper.make_tensor_value_info("y", TensorProto.UINT8, [None])])
    budget = len(model) + 1500
    inst = instance(make_host(max_host_bytes=budget), roundtrip_wasm)
    g = inst.call("load", [model], "onnx", "cpu").payload  # held: the model's bytes
    ctx = inst.call("init-context", g).payload
    assert inst.call("compute-tensors", ctx, [("x", np.zeros(1000, np.uint8))]).tag == "ok"
    code, message = failure(inst.call("compute-tensors", ctx, [("x", np.zeros(2000, np.uint8))]))
    assert code == "too-large" and message == (
        f"outputs of 2000 bytes would make the instance hold {len(model) + 2000} bytes on the host "
        f"({len(model)} already); the limit is {budget} (max-host-bytes, --max-host-bytes)")
    # a model over what is left
    weights = numpy_helper.from_array(np.zeros(500, np.float32), "w")
    heavy = _model([helper.make_node("Add", ["x", "w"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [500])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [500])], [weights])
    code, message = failure(inst.call("load", [heavy], "onnx", "cpu"))
    assert code == "too-large" and message.startswith(f"this graph ({len(heavy)} bytes) would make")
    assert inst.call("compute-tensors", ctx, [("x", np.zeros(1000, np.uint8))]).tag == "ok"
    assert inst.live_resources()["tensor"] == 0
    assert inst.instances_started == 1
    # a tensor the guest makes over the budget: the constructor traps before it copies a byte
    with pytest.raises(wasinn.GuestTrap, match=rf"too-large: this tensor \(4000 bytes\) would make the instance hold "
                       rf"{len(model) + 4000} bytes on the host \({len(model)} already\); the limit is {budget} "
                       r"\(max-host-bytes, --max-host-bytes\)"):
        inst.call("compute", ctx, [("x", value_record(np.zeros(4000, np.uint8)))])


def value_record(array: np.ndarray):
    from wasmtime.component import Record
    r = Record()
    r.dimensions, r.ty, r.data = list(array.shape), wasinn.HostTensor.from_array(array).ty.value, array.tobytes()
    return r


@pytest.mark.parametrize("limit, flag", [("max_model_bytes", "--max-model-bytes"),
                                         ("max_tensor_bytes", "--max-tensor-bytes"),
                                         ("max_tensor_elements", "--max-tensor-elements"),
                                         ("max_output_bytes", "--max-output-bytes"),
                                         ("max_host_bytes", "--max-host-bytes"),
                                         ("max_graphs", "--max-graphs"), ("max_tensors", "--max-tensors")])
def test_every_limit_names_its_flag(roundtrip_wasm, limit, flag):
    values = {"max_model_bytes": 10, "max_tensor_bytes": 2, "max_tensor_elements": 0, "max_output_bytes": 2,
              "max_host_bytes": 10, "max_graphs": 1, "max_tensors": 0}
    inst = instance(make_host(**{limit: values[limit]}), roundtrip_wasm)
    if limit == "max_graphs":
        inst.call("load", [small()], "onnx", "cpu")
    got = inst.call("load", [small()], "onnx", "cpu")
    if got.tag == "ok":
        ctx = inst.call("init-context", got.payload).payload
        got = inst.call("compute", ctx, [("x", value_record(np.ones(1, np.float32)))])
    code, message = failure(got)
    assert code == "too-large" and f"({limit.replace('_', '-')}, {flag})" in message, message


def test_openvino_refuses_a_graph_past_max_backend_memory_before_compiling(roundtrip_wasm):
    pytest.importorskip("openvino")
    host = wasinn.Host(cache_dir=CACHE, limits=Limits(max_backend_memory=512 * MIB), backends={"onnx": "openvino"})
    inst = instance(host, roundtrip_wasm)
    code, message = failure(inst.call("load", [expand(512 * MIB, reduce=True)], "onnx", "cpu"))
    assert code == "too-large" and "OpenVINO" in message
    assert "the limit is 536870912 (max-backend-memory, --max-backend-memory)" in message
    assert inst.call("load", [small()], "onnx", "cpu").tag == "ok"


def test_limits_from_a_config_file(tmp_path):
    cfg = tmp_path / "wasinn.toml"
    cfg.write_text('[limits]\nmax-output-bytes = "8MiB"\nmax-backend-memory = "512MiB"\nmax-host-bytes = "1GiB"\n')
    limits = Limits.from_file(cfg)
    assert (limits.output_bytes, limits.max_backend_memory, limits.max_host_bytes) == (8 * MIB, 512 * MIB, 1 << 30)
    assert Limits(max_tensor_bytes=100).output_bytes == 100  # unset: max-tensor-bytes's


def test_tflite_refuses_interpreters_past_max_backend_memory(roundtrip_wasm):
    pytest.importorskip("ai_edge_litert")
    from support import tflite_models
    inst = instance(make_host(max_backend_memory=MIB), roundtrip_wasm)
    code, message = failure(inst.call("load", [tflite_models.identity(TensorType.FP32, (MIB // 4,))],
                                      "tensorflowlite", "cpu"))  # x and y: 2 MiB
    assert code == "too-large" and "LiteRT" in message
    assert "the limit is 1048576 (max-backend-memory, --max-backend-memory)" in message
    # a dynamic axis is known at compute: resized past the bound, refused; the context still serves
    ctx = inst.call("init-context", inst.call("load", [tflite_models.dynamic_double()], "tensorflowlite",
                                              "cpu").payload).payload
    code, message = failure(inst.call("compute-tensors", ctx, [("x", np.ones((MIB // 12 + 1, 3), np.float32))]))
    assert code == "too-large" and "(max-backend-memory, --max-backend-memory)" in message
    ok = inst.call("compute-tensors", ctx, [("x", np.ones((2, 3), np.float32))])
    np.testing.assert_array_equal(ok.payload[0][1].array(), np.full((2, 3), 2, np.float32))


def test_thirty_start_stop_cycles_of_classify_and_run_exit_cleanly():
    """tests/support/stress_cycles.py: every `wasinn classify` and `wasinn run` exits 0 (300 by hand)."""
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "stress_cycles.py"), "--cycles", "30"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "30 cycles of classify and run: 0 crashes, 0 failures" in done.stdout

"""Limits per run: every limit ends the call it is meant to end, names itself, and the
host keeps serving; no wasi:nn call lets a guest read a host file."""
from __future__ import annotations

import time

import numpy as np
import pytest
from onnx import TensorProto, helper

import wasinn
from wasinn import TensorType
from wasinn.limits import Limits, parse_bytes, parse_seconds

from support import models, tflite_models
from support.repo import CACHE, guest_component


def make_host(**limits) -> wasinn.Host:
    return wasinn.Host(cache_dir=CACHE, limits=Limits().updated(limits))


def instance(host: wasinn.Host, **kwargs) -> wasinn.Instance:
    return host.instantiate(host.load_component(guest_component("roundtrip")), **kwargs)


def failure(result) -> tuple[str, str]:
    assert result.tag == "err", result
    return result.payload.code, result.payload.data


def test_a_guest_past_its_deadline_is_ended_and_the_next_call_runs():
    inst = instance(make_host(deadline="0.3s"))
    start = time.monotonic()
    with pytest.raises(wasinn.GuestTrap, match=r"ran past its deadline of 0.3 s \(limit 'deadline', --deadline\)"):
        inst.call("spin", 30.0)
    assert time.monotonic() - start < 5
    assert inst.call("spin", 0.01) > 0 and inst.instances_started == 2


def test_a_backend_past_the_deadline_gives_the_guest_timeout(tmp_path):
    host = make_host(deadline="1s")
    (tmp_path / "slow.onnx").write_bytes(models.slow_loop(1_000_000))  # minutes; stopped at 1 s
    host.models.register("slow", tmp_path / "slow.onnx")
    inst = instance(host)
    g = inst.call("load-by-name", "slow").payload
    ctx = inst.call("init-context", g).payload
    start = time.monotonic()
    got = inst.call("compute-tensors", ctx, [("x", np.ones((256, 256), np.float32))])
    code, message = failure(got)
    assert code == "timeout" and "deadline" in message
    assert time.monotonic() - start < 2.5
    assert inst.instances_started == 1  # the guest saw the error; nothing trapped


def test_fuel_ends_a_spinning_guest():
    inst = instance(make_host(fuel=5_000_000))
    with pytest.raises(wasinn.GuestTrap, match=r"used up its fuel \(5000000; limit 'fuel', --fuel\)"):
        inst.call("spin", 30.0)
    assert inst.call("spin", 0.0) >= 0


def test_guest_memory_limit():
    inst = instance(make_host(memory="48MiB"))
    assert inst.call("allocate", 1 << 20) == 1 << 20
    with pytest.raises(wasinn.GuestTrap):
        inst.call("allocate", 64 << 20)
    assert inst.call("allocate", 1 << 20) == 1 << 20


def test_model_and_tensor_size_limits_are_too_large_naming_the_limit():
    inst = instance(make_host(max_model_bytes=100))
    code, msg = failure(inst.call("load", [models.add_mul()], "onnx", "cpu"))
    assert code == "too-large" and "the limit is 100 (max-model-bytes, --max-model-bytes)" in msg
    inst2 = instance(make_host(max_tensor_bytes="512B", max_tensor_elements=100))
    g = inst2.call("load", [models.identity(TensorType.U8)], "onnx", "cpu").payload
    ctx = inst2.call("init-context", g).payload
    code, msg = failure(inst2.call("compute-tensors", ctx, [("x", np.zeros(101, np.uint8))]))
    assert code == "too-large" and "has 101 elements; the limit is 100 (max-tensor-elements, --max-tensor-elements)" in msg
    g = inst2.call("load", [models.identity(TensorType.FP64)], "onnx", "cpu").payload
    ctx = inst2.call("init-context", g).payload
    code, msg = failure(inst2.call("compute-tensors", ctx, [("x", np.zeros(80, np.float64))]))
    assert code == "too-large" and "is 640 bytes; the limit is 512 (max-tensor-bytes, --max-tensor-bytes)" in msg
    ok = inst2.call("compute-tensors", ctx, [("x", np.zeros(64, np.float64))])
    assert ok.tag == "ok"


def test_live_resource_limits():
    inst = instance(make_host(max_graphs=2, max_contexts=1))
    g1 = inst.call("load", [models.add_mul()], "onnx", "cpu").payload
    inst.call("load", [models.add_mul()], "onnx", "cpu")
    code, msg = failure(inst.call("load", [models.add_mul()], "onnx", "cpu"))
    assert code == "too-large" and "holds 2 live graphs; the limit is 2 (max-graphs, --max-graphs)" in msg
    inst.call("drop-graph", g1)
    assert inst.call("load", [models.add_mul()], "onnx", "cpu").tag == "ok"
    g = inst.call("load-by-name", "x")  # not-found still wins over nothing
    assert failure(g)[0] == "not-found"



def test_each_litert_context_counts_its_interpreter_in_max_host_bytes(tmp_path):
    # each context of a LiteRT graph is an interpreter with tensors of its own: 30
    # contexts of one registered model held 30 of 48 MiB in process under
    # --max-host-bytes 128MiB (probe 64)
    host = make_host(max_host_bytes="20MiB")
    (tmp_path / "wide.tflite").write_bytes(tflite_models.wide_sum(1 << 20))  # 8 MiB a context
    host.models.register("wide", tmp_path / "wide.tflite")
    inst = instance(host)
    graph = inst.call("load-by-name", "wide").payload
    contexts = [inst.call("init-context", graph).payload for _ in range(2)]
    code, message = failure(inst.call("init-context", graph))
    assert code == "too-large" and "(max-host-bytes, --max-host-bytes)" in message, message
    inst.call("drop-context", contexts.pop())
    again = inst.call("init-context", graph)  # its bytes were given back
    assert again.tag == "ok"
    result = inst.call("compute-tensors", again.payload, [("x", np.ones(1, np.float32))])
    assert result.tag == "ok", result.payload
    assert inst.live_resources()["graph_execution_context"] == 2


def test_a_litert_interpreter_counts_its_nodes_too(tmp_path):
    # an interpreter's records of its nodes and tensors, ~2 KB a node, outweigh the
    # tensors of a long model: 12 contexts of 100,000 ADDs (400 KB of tensors each) held
    # 2.5 GB under --max-host-bytes 64MiB (probe 64)
    host = make_host(max_backend_memory="16MiB")
    (tmp_path / "chain.tflite").write_bytes(tflite_models.add_chain(20_000))
    host.models.register("chain", tmp_path / "chain.tflite")
    code, message = failure(instance(host).call("load-by-name", "chain"))
    assert code == "too-large" and "tensors and nodes come to" in message, message
    assert "(max-backend-memory, --max-backend-memory)" in message

def test_too_many_live_tensors_are_reported_by_compute():
    inst = instance(make_host(max_tensors=1))
    g = inst.call("load", [models.add_mul()], "onnx", "cpu").payload
    ctx = inst.call("init-context", g).payload
    a = np.ones((2, 3), np.float32)
    code, msg = failure(inst.call("compute-tensors", ctx, [("a", a), ("b", a)]))  # two outputs
    assert code == "too-large" and "would make 2 live tensors in the instance; the limit is 1 (max-tensors, --max-tensors)" in msg
    assert inst.live_resources()["tensor"] == 0


def test_the_tensor_constructor_traps_past_max_tensors_and_max_host_bytes():
    """It has no error to return: past a limit it traps with the limit's line, and the
    next call gets a fresh instance."""
    from wasmtime.component import Record
    for limits, flag in (({"max_tensors": 1}, "max-tensors, --max-tensors"),
                         ({"max_host_bytes": 1000}, "max-host-bytes, --max-host-bytes")):
        inst = instance(make_host(**limits))
        ctx = inst.call("init-context", inst.call("load", [models.add_mul()], "onnx", "cpu").payload).payload
        x = Record()
        x.dimensions, x.ty, x.data = [2, 3], TensorType.FP32.value, bytes(24 * 30)  # a tensor of 720 bytes
        with pytest.raises(wasinn.GuestTrap, match=rf"too-large: .*\({flag}\)"):
            inst.call("compute", ctx, [("a", x), ("b", x)])  # the guest makes two tensors
        assert inst.call("load", [models.add_mul()], "onnx", "cpu").tag == "ok"
        assert inst.instances_started == 2


def external_model(location: str) -> bytes:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("float_data")
    entry = w.external_data.add()
    entry.key, entry.value = "location", location
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("location", ["/etc/passwd", "../../../../etc/passwd", "weights.bin", "link.bin"])
def test_external_data_is_refused_unless_inside_the_allowed_directory(tmp_path, location):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    np.array([1, 2, 3, 4], np.float32).tofile(allowed / "weights.bin")
    (allowed / "link.bin").symlink_to("/etc/passwd")
    for limits in ({}, {"external_data_dir": str(allowed)}):
        inst = instance(make_host(**limits))
        got = inst.call("load", [external_model(location)], "onnx", "cpu")
        if limits and location == "weights.bin":
            ctx = inst.call("init-context", got.payload).payload
            out = inst.call("compute-tensors", ctx, [("x", np.zeros(4, np.float32))]).payload[0][1]
            np.testing.assert_array_equal(out.array(), [1, 2, 3, 4])
        else:
            code, msg = failure(got)
            assert code == "security" and "root:" not in msg


def test_no_wasi_nn_call_reads_a_host_file(tmp_path):
    """By name, by bytes, by autodetect, by external data: /etc/passwd stays unread."""
    inst = instance(make_host())
    for result in (inst.call("load-by-name", "/etc/passwd"), inst.call("load-by-name", "../../etc/passwd"),
                   inst.call("load", [b"/etc/passwd"], "onnx", "cpu"),
                   inst.call("load", [b"/etc/passwd"], "autodetect", "cpu"),
                   inst.call("load", [external_model("/etc/passwd")], "autodetect", "cpu")):
        code, msg = failure(result)
        assert "root:" not in msg and "/bin/" not in msg


def test_parsing_and_config_files(tmp_path):
    assert parse_bytes("512MiB") == 512 << 20 and parse_bytes("2GB") == 2_000_000_000 and parse_bytes(10) == 10
    assert parse_seconds("500ms") == 0.5 and parse_seconds("2m") == 120
    cfg = tmp_path / "wasinn.toml"
    cfg.write_text('[limits]\nmemory = "1GiB"\ndeadline = "5s"\nmax-graphs = 3\n')
    limits = Limits.from_file(cfg)
    assert (limits.memory, limits.deadline, limits.max_graphs) == (1 << 30, 5.0, 3)
    cfg.write_text('[limits]\nmemroy = "1GiB"\n')
    with pytest.raises(wasinn.WasinnError, match="unknown limit 'memroy'"):
        Limits.from_file(cfg)
    with pytest.raises(wasinn.WasinnError, match="cannot read '12 parsecs' as a size"):
        parse_bytes("12 parsecs")

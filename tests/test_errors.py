"""Every bad input gets the right wasi:nn error code and a full message, and the same
instance keeps serving; misuse that traps inside the guest ends only that instance."""
from __future__ import annotations

import math
import weakref

import numpy as np
import pytest
from hypothesis import given, strategies as st
from wasmtime.component import Record

import wasinn
from wasinn import HostTensor, TensorType

from support import models

ADD_MUL = models.add_mul()
F32_2x3 = np.ones((2, 3), np.float32)


def value(ty: TensorType, dims, data: bytes) -> Record:
    r = Record()
    r.dimensions, r.ty, r.data = list(dims), ty.value, data
    return r


_contexts: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def context(inst, model: bytes = ADD_MUL) -> int:
    """A context for `model` in the current instance, loaded once (hypothesis runs many
    examples on one instance, which may hold only so many graphs: limit max-graphs)."""
    cache = _contexts.setdefault(inst, {})
    key = (inst.instances_started, model)
    if key not in cache:
        g = inst.call("load", [model], "onnx", "cpu")
        assert g.tag == "ok", vars(g.payload)
        cache[key] = inst.call("init-context", g.payload).payload
    return cache[key]


def failure(result) -> tuple[str, str]:
    assert result.tag == "err", f"expected an error, got {result}"
    return result.payload.code, result.payload.data


def still_serves(inst, started: int = 1) -> None:
    """The instance answers a good call, and it is still the same instance."""
    got = inst.call("compute-tensors", context(inst), [("a", F32_2x3), ("b", F32_2x3)])
    assert got.tag == "ok"
    np.testing.assert_array_equal(got.payload[0][1].array(), F32_2x3 * 2)
    assert inst.instances_started == started


@given(st.sampled_from(list(TensorType)), st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(-7, 7))
def test_wrong_data_length_is_invalid_argument(roundtrip, ty, dims, delta):
    model = models.identity(ty)
    size = math.prod(dims) * wasinn.tensors.DTYPES[ty].itemsize
    data = b"\x01" * max(size + delta, 0)
    got = roundtrip.call("compute", context(roundtrip, model), [("x", value(ty, dims, data))])
    if len(data) == size:
        assert got.tag == "ok"
    else:
        code, msg = failure(got)
        assert code == "invalid-argument"
        assert f"needs {size} bytes" in msg and f"got {len(data)}" in msg
    still_serves(roundtrip)


def test_overflowing_dims_are_invalid_argument(roundtrip):
    huge = [2**32 - 1] * 6
    got = roundtrip.call("compute", context(roundtrip, models.identity(TensorType.U8)),
                         [("x", value(TensorType.U8, huge, b"\x00" * 8))])
    code, msg = failure(got)  # the product stops at 2^64: no tensor has more elements
    assert code == "invalid-argument" and f"needs more than {2**64} bytes (more than {2**64} elements x 1), got 8" in msg
    still_serves(roundtrip)


def test_type_and_shape_mismatch_say_expected_and_got(roundtrip):
    ctx = context(roundtrip)
    code, msg = failure(roundtrip.call("compute-tensors", ctx, [("a", np.ones((2, 3), np.uint8)), ("b", F32_2x3)]))
    assert code == "invalid-argument"
    assert msg == "input 'a': expected float32 [2,3], got uint8 [2,3]"
    code, msg = failure(roundtrip.call("compute-tensors", ctx, [("a", np.ones((3, 2), np.float32)), ("b", F32_2x3)]))
    assert msg == "input 'a': expected float32 [2,3], got float32 [3,2]"
    still_serves(roundtrip)


@pytest.mark.parametrize("names, fragment", [
    (["a", "b", "c"], "unknown input 'c'"),
    (["a", "zzz"], "unknown input 'zzz'"),
    (["a", "7"], "unknown input '7'"),
    (["a"], "missing input 'b' float32 [2,3]"),
    ([], "missing inputs 'a' float32 [2,3], 'b' float32 [2,3]"),
    (["a", "0"], "input 'a' given twice"),
])
def test_bad_input_sets_are_invalid_argument(roundtrip, names, fragment):
    got = roundtrip.call("compute-tensors", context(roundtrip), [(n, F32_2x3) for n in names])
    code, msg = failure(got)
    assert code == "invalid-argument" and fragment in msg
    still_serves(roundtrip)
    assert roundtrip.live_resources()["tensor"] == 0  # the moved inputs were freed


def test_thousands_of_inputs_are_matched_by_name_and_an_unknown_one_lists_twenty(roundtrip):
    """A model's inputs are matched through one index per compute (each name had been
    looked for by a walk over the inputs: 6,000 of them took 0.7 s, all past a deadline
    when it came meanwhile), and the refusal of a name lists 20 of them, not 6,000."""
    from onnx import TensorProto, helper
    n = 3000
    graph = helper.make_graph([helper.make_node("Sum", [f"x{i}" for i in range(n)], ["y"])], "sum",
                              [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [1]) for i in range(n)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    ctx = context(roundtrip, model)
    inputs = [(f"x{i}", np.full(1, i, np.float32)) for i in reversed(range(n))]
    (name, y), = roundtrip.call("compute-tensors", ctx, inputs).payload
    assert name == "y" and y.array()[0] == n * (n - 1) / 2
    code, msg = failure(roundtrip.call("compute-tensors", ctx, [*inputs[1:], ("nope", F32_2x3)]))
    assert code == "invalid-argument" and msg.startswith("unknown input 'nope'; the model's inputs are: 'x0' "
                                                         "float32 [1], 'x1' float32 [1], ")
    assert msg.endswith("'x19' float32 [1], ... (3000 inputs)") and msg.count("float32") == 20
    still_serves(roundtrip)


@given(st.binary(max_size=512))
def test_garbage_model_bytes_are_invalid_encoding(roundtrip, junk):
    code, msg = failure(roundtrip.call("load", [b"\x08\x07" + junk + b"\xff\xff"], "onnx", "cpu"))
    # onnxruntime's refusal, or wasinn's own where its external-data walk cannot read the bytes
    assert code == "invalid-encoding" and ("onnxruntime could not load the model" in msg
                                           or "wasinn cannot vouch that the ONNX model" in msg), msg
    still_serves(roundtrip)


@given(st.integers(1, len(ADD_MUL) - 1))
def test_truncated_model_is_invalid_encoding(roundtrip, cut):
    code, _ = failure(roundtrip.call("load", [ADD_MUL[:cut]], "onnx", "cpu"))
    assert code == "invalid-encoding"
    still_serves(roundtrip)


@given(st.binary(max_size=256))
def test_autodetect_on_garbage_is_invalid_encoding(roundtrip, junk):
    code, msg = failure(roundtrip.call("load", [b"\xff" + junk], "autodetect", "cpu"))
    assert code == "invalid-encoding" and "autodetect did not recognise" in msg
    still_serves(roundtrip)


def test_autodetect_recognises_onnx(roundtrip):
    assert roundtrip.call("load", [ADD_MUL], "autodetect", "cpu").tag == "ok"


@pytest.mark.parametrize("builders, encoding, target, code, fragment", [
    ([], "onnx", "cpu", "invalid-argument", "at least one graph builder"),
    ([ADD_MUL, ADD_MUL], "onnx", "cpu", "invalid-argument", "exactly one builder"),
    ([ADD_MUL], "openvino", "cpu", "invalid-argument", "an openvino graph takes two builders"),
    ([ADD_MUL], "tensorflow", "cpu", "invalid-encoding", "no backend serves encoding tensorflow; this host "
     "serves: onnx (onnxruntime), openvino (openvino), tensorflowlite (tflite)"),
    ([ADD_MUL], "pytorch", "cpu", "invalid-encoding", "no backend serves encoding pytorch"),
    ([ADD_MUL], "tensorflowlite", "cpu", "invalid-encoding", "LiteRT could not read the tensorflowlite model"),
    ([ADD_MUL], "ggml", "cpu", "invalid-encoding", "no backend serves encoding ggml"),
    ([ADD_MUL], "onnx", "tpu", "unsupported-operation", "no execution target tpu"),
])
def test_load_errors(roundtrip, builders, encoding, target, code, fragment):
    got_code, msg = failure(roundtrip.call("load", builders, encoding, target))
    assert (got_code, fragment in msg) == (code, True), msg
    still_serves(roundtrip)


def test_gpu_target_without_cuda_is_unsupported_never_a_fallback(roundtrip):
    import onnxruntime
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the gpu target is served")
    code, msg = failure(roundtrip.call("load", [ADD_MUL], "onnx", "gpu"))
    assert code == "unsupported-operation" and "CUDAExecutionProvider" in msg
    still_serves(roundtrip)


@pytest.mark.parametrize("name", ["nope", "/etc/passwd", "../../etc/passwd", "", "add_mul.onnx"])
def test_unknown_names_are_not_found_and_never_paths(wasinn_host, roundtrip, name):
    code, msg = failure(roundtrip.call("load-by-name", name))
    assert code == "not-found" and "root:" not in msg
    still_serves(roundtrip)


def test_load_by_name_uses_the_registry(wasinn_host, roundtrip, tmp_path):
    (tmp_path / "m.onnx").write_bytes(ADD_MUL)
    wasinn_host.models.register("adder", tmp_path / "m.onnx")
    g = roundtrip.call("load-by-name", "adder")
    assert g.tag == "ok"
    ctx = roundtrip.call("init-context", g.payload).payload
    got = roundtrip.call("compute-tensors", ctx, [("a", F32_2x3), ("b", F32_2x3)])
    np.testing.assert_array_equal(got.payload[1][1].array(), F32_2x3)


def test_external_data_models_are_refused(roundtrip):
    from onnx import TensorProto, helper
    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("float_data")
    entry = w.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    code, msg = failure(roundtrip.call("load", [model], "onnx", "cpu"))
    assert code == "security" and "external data" in msg
    still_serves(roundtrip)


def test_runtime_failures_are_errors_not_traps(roundtrip):
    """A model that fails while running (Reshape to an impossible shape) reports
    onnxruntime's own message."""
    from onnx import TensorProto, helper
    shape = helper.make_tensor("s", TensorProto.INT64, [1], [7])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    code, msg = failure(roundtrip.call("compute-tensors", context(roundtrip, model),
                                       [("x", np.ones(4, np.float32))]))
    assert code == "runtime-error" and "cannot be reshaped to the requested shape" in msg
    still_serves(roundtrip)


@pytest.mark.parametrize("kind", ["use-after-drop", "reuse-moved"])
def test_guest_misuse_traps_cleanly_and_next_call_gets_a_fresh_instance(wasinn_host, roundtrip, kind):
    ctx = context(roundtrip)
    roundtrip.call("compute-tensors", ctx, [("a", F32_2x3), ("b", F32_2x3)])  # leaves outputs in the guest
    assert sum(roundtrip.live_resources().values()) > 0
    session_reps = set(roundtrip._session.reps)
    with pytest.raises(wasinn.GuestTrap, match="guest trapped in misuse: .*torn down"):
        roundtrip.call("misuse", kind, ctx)
    assert not session_reps & set(wasinn_host.nn._objects)  # everything the dead instance held is freed
    assert sum(roundtrip.live_resources().values()) == 0
    still_serves(roundtrip, started=2)


def test_a_bad_argument_from_the_host_is_not_a_guest_trap(roundtrip):
    with pytest.raises(wasinn.BadValue, match=r'^parameter .target.: expected enum \{cpu, gpu, tpu\}, got "gpu2"$'):
        roundtrip.call("load", [ADD_MUL], "onnx", "gpu2")
    still_serves(roundtrip)

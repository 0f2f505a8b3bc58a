"""Bad models, loaded by a guest: bit-flipped, truncated and spliced bytes of a real
model (hypothesis; wasinn's own check for external data may refuse them first), and
well-formed models that onnxruntime refuses (a missing initializer, unknown operators,
operator sets and IR versions it does not have). Each gets the right wasi:nn error code
with onnxruntime's whole message, and the instance keeps serving.
(tests/support/fuzz_models.py hunts for bytes that crash onnxruntime itself.)"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, strategies as st
from onnx import TensorProto, helper

from wasinn import TensorType

from support import models

CNN = models.small_cnn()
LOAD_CODES = {"invalid-encoding", "unsupported-operation", "runtime-error"}
# formats.py's walk for external data refuses what protobuf would read but it cannot judge
WALK_REFUSALS = ("wasinn cannot vouch that the ONNX model refers to no external data: ",
                 "the model references external data files")
IMAGE = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 1, 8, 8)


def native_load_error(model: bytes) -> str:
    """onnxruntime's own message for `model` (what the guest must read, in full)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    with pytest.raises(Exception) as e:
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"], enable_fallback=0)
        [a.name for a in [*session.get_inputs(), *session.get_outputs()]]  # names are decoded here
    return str(e.value).strip()


def load(inst, model: bytes):
    return inst.call("load", [model], "onnx", "cpu")


def still_serves(inst) -> None:
    ctx = inst.call("init-context", load(inst, CNN).payload).payload
    x = inst.call("adopt", IMAGE)
    out = inst.call("compute", ctx, [("image", x)])
    assert out.tag == "ok", vars(out.payload)
    probs = inst.call("read", out.payload[0][1])
    assert abs(sum(np.frombuffer(probs.data, np.float32)) - 1) < 1e-5
    inst.call("reset")
    assert inst.instances_started == 1


def check_mutant(inst, model: bytes) -> None:
    """Loads or fails with a load error code; a model that loads computes or fails with
    a typed error; the instance keeps serving either way."""
    got = load(inst, model)
    if got.tag == "err" and got.payload.data.startswith(WALK_REFUSALS):  # before onnxruntime sees it
        assert got.payload.code in {"invalid-encoding", "security"}, vars(got.payload)
    elif got.tag == "err":
        assert got.payload.code in LOAD_CODES, vars(got.payload)
        assert got.payload.data.startswith("onnxruntime could not load the model: ")
    else:
        ctx = inst.call("init-context", got.payload)
        if ctx.tag == "ok":
            out = inst.call("compute", ctx.payload, [("image", inst.call("adopt", IMAGE))])
            assert out.tag == "ok" or out.payload.code in {"invalid-argument", "runtime-error",
                                                           "unsupported-operation"}, vars(out.payload)
        inst.call("reset")
    still_serves(inst)


@given(st.lists(st.tuples(st.integers(0, len(CNN) - 1), st.integers(0, 7)), min_size=1, max_size=8))
def test_bit_flipped_models(adversary, flips):
    model = bytearray(CNN)
    for at, bit in flips:
        model[at] ^= 1 << bit
    check_mutant(adversary, bytes(model))


@given(st.integers(0, len(CNN) - 1), st.binary(min_size=1, max_size=64), st.booleans())
def test_truncated_and_spliced_models(adversary, at, chunk, truncate):
    check_mutant(adversary, CNN[:at] if truncate else CNN[:at] + chunk + CNN[at:])


@given(st.binary(max_size=2048))
def test_random_bytes(adversary, junk):
    got = load(adversary, junk)
    assert got.tag == "err" and got.payload.code in LOAD_CODES, got
    still_serves(adversary)


def _model(nodes, *, initializers=(), opset=17, ir_version=None, inputs=None) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)] if opset else [])
    if not opset:
        del model.opset_import[:]
    if ir_version:
        model.ir_version = ir_version
    return model.SerializeToString()


BAD = {
    "missing initializer": (_model([helper.make_node("Add", ["x", "w"], ["y"])]), "invalid-encoding",
                            "Node input 'w' is not a graph input, initializer, or output of a previous node"),
    "unknown operator": (_model([helper.make_node("Frobnicate", ["x"], ["y"])]), "unsupported-operation",
                         "No Op registered for Frobnicate"),
    "operator of another domain": (
        _model([helper.make_node("Foo", ["x"], ["y"], domain="com.example")]), "unsupported-operation",
        "No opset import for domain 'com.example'"),
    "operator newer than the model's opset": (_model([helper.make_node("Gelu", ["x"], ["y"])], opset=1),
                                              "unsupported-operation", "No Op registered for Gelu"),
    "opset newer than onnxruntime": (_model([helper.make_node("Relu", ["x"], ["y"])], opset=99),
                                     "unsupported-operation", "Opset 99 is under development"),
    "IR version newer than onnxruntime": (_model([helper.make_node("Relu", ["x"], ["y"])], ir_version=99),
                                          "unsupported-operation", "Unsupported model IR version: 99"),
    "no opset": (_model([helper.make_node("Relu", ["x"], ["y"])], opset=0), "invalid-encoding",
                 "Missing opset in the model"),
    "types that do not match": (
        _model([helper.make_node("Add", ["x", "w"], ["y"])],
               initializers=[helper.make_tensor("w", TensorProto.INT64, [2], [1, 2])]),
        "invalid-encoding", "Type parameter (T) of Optype (Add) bound to different types"),
    "a cycle": (_model([helper.make_node("Add", ["x", "y"], ["y"])]), "invalid-encoding", "not acyclic"),
    "an attribute out of range": (_model([helper.make_node("Softmax", ["x"], ["y"], axis=5)]), "invalid-encoding",
                                  "'axis' must be in [-1 , 0]. Its actual value is: 5"),
}
NOT_UTF8 = {  # onnxruntime's Python layer fails to decode these: wasinn says what it could
    "an input name": (CNN.replace(b"image", b"im\xffge"), "invalid-encoding",
                      "onnxruntime could not load the model: an input or output name is not UTF-8: b'im\\xffge'"),
    "an operator name": (models.identity(TensorType.I64).replace(b"Identity", b"Ide\x80tity"), "unsupported-operation",
                         "onnxruntime could not load the model: [ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an "
                         'invalid model. In Node, ("", Ide\ufffdtity, "", -1)'),
}


@pytest.mark.parametrize("case", BAD)
def test_refused_models_get_the_right_code_and_onnxruntimes_whole_message(adversary, case):
    model, code, fragment = BAD[case]
    got = load(adversary, model)
    assert got.tag == "err"
    assert (got.payload.code, fragment in got.payload.data) == (code, True), got.payload.data
    assert got.payload.data == f"onnxruntime could not load the model: {native_load_error(model)}"
    still_serves(adversary)


@pytest.mark.parametrize("case", NOT_UTF8)
def test_strings_that_are_not_utf8(adversary, capfd, case):
    """Nothing reaches the host's stdout: left to itself, onnxruntime's Python layer
    prints "EP Error ... Falling back" there and loads such a model a second time."""
    model, code, start = NOT_UTF8[case]
    got = load(adversary, model)
    assert got.tag == "err" and got.payload.code == code and got.payload.data.startswith(start), got.payload.data
    assert capfd.readouterr().out == ""
    still_serves(adversary)


def test_a_model_that_fails_while_running_is_a_runtime_error(adversary):
    shape = helper.make_tensor("s", TensorProto.INT64, [1], [7])
    model = _model([helper.make_node("Reshape", ["x", "s"], ["y"])], initializers=[shape],
                   inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])])
    ctx = adversary.call("init-context", load(adversary, model).payload).payload
    got = adversary.call("compute", ctx, [("x", adversary.call("adopt", np.ones(4, np.float32)))])
    assert got.tag == "err" and got.payload.code == "runtime-error"
    assert got.payload.data.startswith("onnxruntime failed to run the model: ")
    assert "cannot be reshaped to the requested shape" in got.payload.data
    adversary.call("reset")
    still_serves(adversary)

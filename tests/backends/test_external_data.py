"""No ONNX model from a guest makes the host read a file: a TensorProto naming external
data is refused wherever onnx.proto lets it sit (initializers, sparse initializers,
attributes, subgraphs at any depth, model-local functions, training_info), by a guest
component, a core module and each backend, large (spilled) models included; refusals
say nothing of the file. With the operator's external-data-dir every such tensor is
read in, or the model refused. The walk that decides is pure Python: mutated models
only ever get NnError, in time linear in their bytes, and never pass a reference that
onnx's own parser finds. An OpenVINO IR's DTD (an entity naming a file, a billion laughs)
is not read at all."""
from __future__ import annotations

import math
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import _get_all_tensors

import wasinn
from wasinn import ExecutionTarget, GraphEncoding, HostTensor, TensorType
from wasinn.backends import formats, spill
from wasinn.backends.formats import inline_onnx_external_data, refers_to_external_data, reject_onnx_external_data
from wasinn.errors import NnError
from wasinn.limits import Limits

from support import models
from support.repo import CACHE, guest_component
from support.witx_support import ERRNO, Probe, probe_wasm

SECRET_NAME = "secret.bin"
SECRET = (b"wasinn-secret:" * 300)[:4099]  # an odd length, to find it in a message
OPSET = [helper.make_opsetid("", 17)]
F = TensorProto.FLOAT
COND = [helper.make_tensor_value_info("c", TensorProto.BOOL, [])]


def ext(name: str, dims=(4,), dtype=F, *, location: str = SECRET_NAME, flag: bool = True,
        entries: bool = True) -> TensorProto:
    """A tensor whose data is `location` (relative: onnxruntime resolves it against its cwd)."""
    t = TensorProto(name=name, data_type=dtype, dims=dims)
    if flag:
        t.data_location = TensorProto.EXTERNAL
    if entries:
        size = math.prod(dims) * (8 if dtype == TensorProto.INT64 else 4)
        for key, value in (("location", location), ("offset", "0"), ("length", str(size))):
            t.external_data.add(key=key, value=value)
    return t


def io(*names, dims=(4,)):
    return [helper.make_tensor_value_info(n, F, dims) for n in names]


def model(nodes, initializers=(), *, inputs=("x",), sparse=(), functions=(), training=()) -> bytes:
    """A model of `nodes` over float [4] `inputs` (and "c", the boolean If wants) to float [4] y."""
    value_infos = [*io(*inputs), *COND] if any(n.op_type == "If" for n in nodes) else io(*inputs)
    graph = helper.make_graph(nodes, "g", value_infos, io("y"), list(initializers), sparse_initializer=list(sparse))
    opsets = OPSET + ([helper.make_opsetid("local", 1)] if functions else [])
    m = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    for init, algo in training:
        info = m.training_info.add()
        info.initialization.CopyFrom(init)
        info.algorithm.CopyFrom(algo)
    return m.SerializeToString()


def branch(*, initializers=(), nodes=None) -> onnx.GraphProto:
    """A subgraph (If branch, Loop or Scan body) whose output is its external tensor."""
    return helper.make_graph(nodes or [helper.make_node("Identity", ["w"], ["out"])], "b", [], io("out"),
                             list(initializers))


def if_node(then_branch, else_branch, inputs=("c",), outputs=("y",)):
    return helper.make_node("If", list(inputs), list(outputs), then_branch=then_branch, else_branch=else_branch)


def sparse(values=None, indices=None):
    return helper.make_sparse_tensor(values or helper.make_tensor("v", F, [2], [1.0, 2.0]),
                                     indices or helper.make_tensor("i", TensorProto.INT64, [2], [0, 3]), [4])


def loop_body(initializer):
    inputs = [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
              helper.make_tensor_value_info("cond", TensorProto.BOOL, []), *io("acc")]
    nodes = [helper.make_node("Identity", ["cond"], ["cond_out"]), helper.make_node("Add", ["acc", "w"], ["acc_out"])]
    return helper.make_graph(nodes, "body", inputs, [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                                                     *io("acc_out")], [initializer])


def function(nodes, attribute_protos=()):
    return helper.make_function("local", "F", ["a"], ["b"], nodes, OPSET, attribute_protos=list(attribute_protos))


CALL_F = helper.make_node("F", ["x"], ["y"], domain="local")
IDENTITY = branch(initializers=[helper.make_tensor("w", F, [4], [0.0] * 4)])
ADD_W = [helper.make_node("Add", ["x", "w"], ["y"])]
CONSTANT = [helper.make_node("Constant", [], ["w"], value=ext("c")), *ADD_W]

PLACES = {
    "initializer": model(ADD_W, [ext("w")]),
    "initializer, data_location only": model(ADD_W, [ext("w", entries=False)]),
    "initializer, external_data only": model(ADD_W, [ext("w", flag=False)]),
    "sparse initializer values": model(ADD_W, sparse=[sparse(values=ext("w", (2,)))]),
    "sparse initializer indices": model(ADD_W, sparse=[sparse(indices=ext("w_i", (2,), TensorProto.INT64))]),
    "Constant value": model(CONSTANT),
    "Constant sparse_value": model([helper.make_node("Constant", [], ["w"], sparse_value=sparse(ext("v", (2,)))),
                                    *ADD_W]),
    "tensors attribute": model([helper.make_node("Identity", ["x"], ["y"], extra=[ext("t")])]),
    "sparse_tensors attribute": model([helper.make_node("Identity", ["x"], ["y"], extra=[sparse(ext("v", (2,)))])]),
    "If then branch": model([if_node(branch(initializers=[ext("w")]), IDENTITY)]),
    "If else branch": model([if_node(IDENTITY, branch(initializers=[ext("w")]))]),
    "Loop body": model([helper.make_node("Loop", ["n", "c", "x"], ["y"], body=loop_body(ext("w")))]),
    "Scan body": model([helper.make_node("Scan", ["x"], ["y"], num_scan_inputs=1,
                                         body=branch(nodes=[helper.make_node("Constant", [], ["out"],
                                                                             value=ext("c"))]))]),
    "function node attribute": model([CALL_F], functions=[function(
        [helper.make_node("Constant", [], ["w"], value=ext("c")), helper.make_node("Add", ["a", "w"], ["b"])])]),
    "function node subgraph": model([CALL_F], functions=[function(
        [if_node(branch(initializers=[ext("w")]), IDENTITY, outputs=("b",))])]),
    "function attribute default": model([CALL_F], functions=[function(
        [helper.make_node("Identity", ["a"], ["b"])], [helper.make_attribute("w", ext("d"))])]),
    "training_info initialization": model(ADD_W, [helper.make_tensor("w", F, [4], [0.0] * 4)],
                                          training=[(branch(initializers=[ext("w")]), IDENTITY)]),
    "training_info algorithm": model(ADD_W, [helper.make_tensor("w", F, [4], [0.0] * 4)],
                                     training=[(IDENTITY, branch(initializers=[ext("w")]))]),
    "If in Loop in a function": model([CALL_F], functions=[function([helper.make_node(
        "Loop", ["n", "c", "a"], ["b"], body=helper.make_graph(
            [if_node(branch(initializers=[ext("w")]), IDENTITY, inputs=("cond",), outputs=("acc_out",)),
             helper.make_node("Identity", ["cond"], ["cond_out"])], "body",
            loop_body(ext("unused")).input, loop_body(ext("unused")).output))])]),
}


@pytest.fixture
def secret_cwd(tmp_path, monkeypatch):
    """A working directory holding the file a hostile model names."""
    (tmp_path / SECRET_NAME).write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def assert_tells_nothing(message: str) -> None:
    assert "wasinn-secret" not in message and str(len(SECRET)) not in message, message
    assert "\n" not in message


@pytest.mark.parametrize("place", PLACES)
def test_every_place_is_found(place):
    assert refers_to_external_data(PLACES[place])
    # onnx's own helper misses some of them: the walk must not be narrower than it
    proto = onnx.ModelProto.FromString(PLACES[place])
    assert any(t.data_location or t.external_data for t in formats._tensors(proto))


@pytest.mark.parametrize("place", PLACES)
def test_a_guest_cannot_load_any_of_them(roundtrip, secret_cwd, place):
    for encoding in ("onnx", "autodetect"):
        got = roundtrip.call("load", [PLACES[place]], encoding, "cpu")
        assert got.tag == "err" and got.payload.code == "security", got
        assert_tells_nothing(got.payload.data)


def reordered(model_bytes: bytes) -> bytes:
    """The same ModelProto with its graph field first: protobuf parsers take fields in
    any order, but `looks_like_onnx` (so nn.py's inlining) wants ir_version first."""
    proto = onnx.ModelProto.FromString(model_bytes)
    graph = proto.graph.SerializeToString()
    proto.ClearField("graph")
    return bytes([7 << 3 | 2]) + spill._varint_bytes(len(graph)) + graph + proto.SerializeToString()


def test_a_model_not_starting_with_ir_version_is_refused_by_the_backends_too(roundtrip, secret_cwd):
    hostile = reordered(PLACES["sparse initializer values"])
    assert not formats.looks_like_onnx([hostile]) and refers_to_external_data(hostile)
    got = roundtrip.call("load", [hostile], "onnx", "cpu")
    assert got.tag == "err" and got.payload.code == "security", got
    assert_tells_nothing(got.payload.data)


def _ir_with_dtd(element_type: str) -> bytes:
    """An OpenVINO IR (one Parameter, its Result) whose DTD declares an external entity
    naming the secret and a billion laughs (10^9 "lol"s in 1 KB), its Parameter's
    element_type set to `element_type`."""
    laughs = '<!ENTITY a0 "lollollollollollollollollollol">' + "".join(
        f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
    return f"""<?xml version="1.0"?>
<!DOCTYPE net [ <!ENTITY secret SYSTEM "{SECRET_NAME}"> {laughs} ]>
<net name="dtd" version="11"><layers>
  <layer id="0" name="x" type="Parameter" version="opset1"><data shape="1" element_type="{element_type}"/>
    <output><port id="0" precision="FP32" names="x"><dim>1</dim></port></output></layer>
  <layer id="1" name="y" type="Result" version="opset1"><input><port id="0" precision="FP32"><dim>1</dim></port>
    </input></layer>
</layers><edges><edge from-layer="0" from-port="0" to-layer="1" to-port="0"/></edges></net>""".encode()


@pytest.mark.parametrize("isolate", ["guest-models", "none"])
def test_an_ir_whose_dtd_names_a_file_or_laughs_a_billion_times_is_read_without_it(secret_cwd, isolate):
    """OpenVINO reads IR with pugixml, which expands no DTD entity: a reference to one
    stays the text it is. Its error message would carry whatever an entity expanded to
    (the secret, or a billion laughs), back to the guest: it carries `&secret;`, in either
    policy, and the same IR with a real type loads and computes."""
    host = wasinn.Host(cache_dir=CACHE, limits=Limits(isolate=isolate))
    with host.instantiate(host.load_component(guest_component("roundtrip"))) as inst:
        for entity in ("secret", "a9"):
            got = inst.call("load", [_ir_with_dtd(f"&{entity};"), b""], "openvino", "cpu")
            assert got.tag == "err" and got.payload.code == "invalid-encoding", got
            assert f'"&{entity};" is not a member of enum element::Type_t' in got.payload.data, got.payload.data
            assert_tells_nothing(got.payload.data)
        graph = inst.call("load", [_ir_with_dtd("f32"), b""], "openvino", "cpu")
        assert graph.tag == "ok", vars(graph.payload)
        ctx = inst.call("init-context", graph.payload).payload
        got = inst.call("compute-tensors", ctx, [("x", HostTensor([1], TensorType.FP32, np.float32([7.0]).tobytes()))])
        assert got.tag == "ok", vars(got.payload)
        assert got.payload[0][1].to_bytes() == np.float32([7.0]).tobytes()


def test_a_core_module_cannot_load_them(secret_cwd, capfd):
    host = wasinn.Host(cache_dir=CACHE)
    module = host.load_component(probe_wasm())
    for place in ("sparse initializer indices", "If else branch", "function node subgraph"):
        with host.instantiate(module) as inst:
            errno, _ = Probe(inst).load(PLACES[place])
        assert errno == ERRNO["invalid_argument"]  # WITX has no `security`
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 3 and all("external data" in line for line in lines), lines
    for line in lines:
        assert_tells_nothing(line)


def _backends():
    from wasinn.backends.onnxruntime import OnnxRuntimeBackend
    from wasinn.backends.openvino import OpenVinoBackend
    return {"onnxruntime": OnnxRuntimeBackend, "openvino": lambda: OpenVinoBackend(GraphEncoding.ONNX)}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_each_backend_refuses_them_itself_spilled_or_not(secret_cwd, backend):
    """A spilled model loads from a file in TMPDIR: a reference to a name beside it (the
    spill's own weights file, or another process's) is refused before any backend reads."""
    big = numpy_helper.from_array(np.zeros(spill._SPILL_FROM // 4 + 1, np.float32), "big")
    large = model([helper.make_node("Add", ["x", "w"], ["y"])], [ext("w", location="weights"), big], inputs=("x",))
    assert len(large) >= spill._SPILL_FROM
    load = _backends()[backend]().load
    with mock.patch("onnxruntime.InferenceSession", side_effect=AssertionError("read")), \
            mock.patch("openvino.Core.read_model", side_effect=AssertionError("read")):
        for hostile in (PLACES["Loop body"], large, reordered(large)):
            with pytest.raises(NnError) as e:
                load([hostile], ExecutionTarget.CPU)
            assert e.value.code.value == "security"
            assert_tells_nothing(str(e.value))


@pytest.mark.parametrize("place", PLACES)
def test_the_operators_directory_inlines_every_place(tmp_path, place):
    (tmp_path / SECRET_NAME).write_bytes(SECRET)
    if place == "initializer, data_location only":  # external, but no file named: nothing to read in
        with pytest.raises(NnError) as e:
            inline_onnx_external_data(PLACES[place], tmp_path)
        assert e.value.code.value == "security"
        return
    inlined = inline_onnx_external_data(PLACES[place], tmp_path)
    assert not refers_to_external_data(inlined)
    assert SECRET[:8] in inlined
    proto = onnx.ModelProto.FromString(inlined)
    assert not any(t.data_location or t.external_data for t in _get_all_tensors(proto))


def test_inlined_weights_load_and_compute(tmp_path):
    weights = np.array([1, 2, 3, 4], np.float32)
    weights.tofile(tmp_path / SECRET_NAME)
    host = wasinn.Host(cache_dir=CACHE, limits=Limits(external_data_dir=tmp_path))
    for place in ("Constant value", "If then branch", "function node attribute"):
        assert host.nn.load_graph([PLACES[place]], GraphEncoding.ONNX, ExecutionTarget.CPU)
    out = models.native(inline_onnx_external_data(PLACES["Constant value"], tmp_path),
                        {"x": (wasinn.TensorType.FP32, (4,), np.zeros(4, np.float32).tobytes())})
    np.testing.assert_array_equal(np.frombuffer(out[0][1], np.float32), weights)


def test_a_small_model_naming_one_file_many_times_is_refused_before_it_is_read(tmp_path):
    """24 initializers of a 1.7 KB model, each the whole of one 64 MiB weights file in the
    operator's directory, had the host read 1.5 GB (past a 2 s deadline, the GIL held
    2.75 s at a time): the lengths are added up first, the model with them held to
    max-model-bytes, and what is read is counted in max-host-bytes as the model's."""
    (tmp_path / "w.bin").write_bytes(bytes(1 << 20))
    n = (1 << 20) // 4
    hostile = model([helper.make_node("Sum", [f"w{i}" for i in range(24)], ["s"]),
                     helper.make_node("ReduceSum", ["s"], ["r"], keepdims=1),
                     helper.make_node("Add", ["x", "r"], ["y"])],
                    [ext(f"w{i}", (n,), location="w.bin") for i in range(24)])
    with pytest.raises(NnError) as e:
        inline_onnx_external_data(hostile, tmp_path, max_bytes=8 << 20)
    assert e.value.code.value == "too-large"
    assert str(e.value).endswith(f"(24 tensors) is {len(hostile) + 24 * (1 << 20)} bytes; the limit is "
                                 f"{8 << 20} (limit 'max-model-bytes', --max-model-bytes)")
    host = wasinn.Host(cache_dir=CACHE, limits=Limits(external_data_dir=tmp_path, max_model_bytes=32 << 20,
                                                      isolate="none"))
    graph = host.nn.load_graph([hostile], GraphEncoding.ONNX, ExecutionTarget.CPU)
    assert graph.model_bytes > 24 << 20  # the weights read in, as max-host-bytes counts them


def test_refusals_read_the_same_whether_or_not_the_file_exists(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "short.bin").write_bytes(b"\0" * 4)
    (allowed / "link.bin").symlink_to(tmp_path / SECRET_NAME)
    (tmp_path / SECRET_NAME).write_bytes(SECRET)
    messages = set()
    for location in (f"../{SECRET_NAME}", "../missing.bin", "link.bin", str(tmp_path / SECRET_NAME),
                     "/nonexistent/x", "short.bin", "missing.bin", "sub/../../secret.bin", "a\0b", ""):
        hostile = model(ADD_W, [ext("w", location=location)])
        for allowed_dir in (allowed, None):
            with pytest.raises(NnError) as e:
                inline_onnx_external_data(hostile, allowed_dir)
            assert e.value.code.value == "security"
            assert_tells_nothing(str(e.value))
            messages.add((allowed_dir, str(e.value).replace(repr(location), "LOCATION")))
        with pytest.raises(NnError) as e:
            reject_onnx_external_data(hostile)
        messages.add(("reject", str(e.value)))
    assert len(messages) == 3, messages


def _key(field: int, wire: int) -> bytes:
    return spill._varint_bytes(field << 3 | wire)


def _msg(field: int, body: bytes) -> bytes:
    return _key(field, 2) + spill._varint_bytes(len(body)) + body


def _in_tensor(tensor_body: bytes) -> bytes:
    """A ModelProto whose graph's one initializer is `tensor_body`."""
    return _key(1, 0) + b"\x08" + _msg(7, _msg(5, tensor_body))


def _wide_key(field: int, wire: int) -> bytes:
    """The key with bit 32 set, which onnxruntime's protobuf drops (it reads keys into 32 bits)."""
    return spill._varint_bytes(1 << 32 | field << 3 | wire)


TENSOR = _key(2, 0) + b"\x01" + _msg(8, b"w")
DOUBTFUL = {
    "a group": _in_tensor(TENSOR + _key(20, 3) + _key(20, 4)),
    "a field onnx.proto does not define, length-delimited": _in_tensor(TENSOR + _msg(99, b"")),
    "data_location with another wire type": _in_tensor(TENSOR + _msg(14, b"\x01")),
    "a message field with another wire type": _key(1, 0) + b"\x08" + _key(7, 0) + b"\x01",
    "a wide key, data_location = EXTERNAL to onnxruntime": _in_tensor(TENSOR + _wide_key(14, 0) + b"\x01"),
}


@pytest.mark.parametrize("case", DOUBTFUL)
def test_what_protobuf_reads_but_the_walk_cannot_judge_is_refused(case):
    with pytest.raises(NnError) as e:
        refers_to_external_data(DOUBTFUL[case])
    assert e.value.code.value == "invalid-encoding" and "\n" not in str(e.value)


def test_onnxruntime_truncates_keys_to_32_bits():
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    with pytest.raises(Exception, match="Unsupported model IR version: 99"):
        ort.InferenceSession(models.add_mul() + _wide_key(1, 0) + b"\x63", opts)


def test_what_no_protobuf_parser_reads_is_left_to_the_backend():
    clean = models.small_cnn()
    for broken in (clean[:-3], clean + _key(7, 2) + b"\x05ab", clean + _key(1, 7), clean + b"\x80",
                   clean + _key(0, 0) + b"\x01", clean + _key(20, 4), clean + _key(20, 3) + _key(21, 4),
                   # however much was in doubt before
                   DOUBTFUL["a group"] + b"\xff", _in_tensor(TENSOR + _msg(99, b"") + _key(3, 2) + b"\x09"),
                   DOUBTFUL["a wide key, data_location = EXTERNAL to onnxruntime"][:-1]):
        with pytest.raises(Exception):
            onnx.ModelProto.FromString(broken)
        assert refers_to_external_data(broken) is False, broken


def _nested(levels: int, tensor: bytes) -> bytes:
    """A model whose tensor sits in `levels` nested If branches (three messages each)."""
    graph = _msg(5, tensor)
    for _ in range(levels):
        graph = _msg(1, _msg(5, _msg(6, graph)))  # node -> attribute -> g
    return _key(1, 0) + b"\x08" + _msg(7, graph)


def test_nesting_past_protobufs_limit_is_refused():
    external = TENSOR + _key(14, 0) + b"\x01"
    assert refers_to_external_data(_nested(32, external))  # 98 messages deep
    assert not refers_to_external_data(_nested(32, TENSOR))
    with pytest.raises(NnError) as e:
        refers_to_external_data(_nested(34, TENSOR))
    assert e.value.code.value == "invalid-encoding"


def onnx_finds_a_reference(data: bytes) -> bool | None:
    """Whether onnx's parser finds a reference (in its helper's places or the walk's);
    None where it cannot parse the bytes."""
    try:
        proto = onnx.ModelProto.FromString(data)
    except Exception:
        return None
    return any(t.data_location or t.external_data for t in [*_get_all_tensors(proto), *formats._tensors(proto)])


BASES = [models.small_cnn(), PLACES["If else branch"], PLACES["function node attribute"],
         PLACES["sparse initializer indices"], PLACES["initializer, data_location only"]]


@given(st.sampled_from(BASES), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 7)), max_size=8),
       st.integers(0, 1 << 20), st.booleans())
def test_mutated_models_get_nnerror_in_linear_time_and_no_reference_slips_through(base, flips, cut, truncate):
    data = bytearray(base)
    for at, bit in flips:
        data[at % len(data)] ^= 1 << bit
    data = bytes(data[:cut % (len(data) + 1)] if truncate else data)
    # each field but a cut-off last one takes two bytes or more: more fields would not be linear
    with mock.patch.object(formats, "_MAX_FIELDS", len(data) // 2 + 1):
        try:
            found = refers_to_external_data(data)
        except NnError as e:
            assert "protobuf fields" not in str(e)
            return
    assert not (onnx_finds_a_reference(data) and not found)


def test_the_walk_stops_at_the_calls_deadline():
    """16M fields (32 MiB of a guest's bytes that look like ONNX) took the walk ~4.7 s, 3.7 s
    past a 1 s deadline: it looks at the deadline every 65,536 fields."""
    import time
    model = b"\x08\x00" * (1 << 17)  # ir_version fields, 131,072 of them
    assert refers_to_external_data(model, deadline=time.monotonic() + 60) is False
    with pytest.raises(NnError) as refused:
        inline_onnx_external_data(model, None, deadline=time.monotonic() - 1)
    assert refused.value.code == wasinn.ErrorCode.TIMEOUT
    assert refused.value.message == ("the check of the model's 262144 bytes for references to external data did not "
                                     "finish by the call's deadline")

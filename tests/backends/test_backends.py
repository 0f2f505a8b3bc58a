"""Every backend behind one interface: selection, autodetect, the seven tensor types,
the same validation and errors, GPU selection, and agreement between backends and with
each backend's own native run."""
from __future__ import annotations

import functools
import io
import json
import pathlib
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, strategies as st

import wasinn
from wasinn import ExecutionTarget, GraphEncoding, HostTensor, TensorType, cli
from wasinn.backends import KINDS, default_backends, parse_choices
from wasinn.backends.formats import RECOGNISERS
from wasinn.errors import WasinnError
from wasinn.nn import bind_inputs, compute, compute_bound
from wasinn.tensors import DTYPES

from support import models
from support.repo import CACHE, ROOT, guest_component

for _kind in ("openvino", "tflite"):
    if not KINDS[_kind].installed():
        pytest.skip(f"the {_kind} backend is not installed ({KINDS[_kind].install_hint()}; scripts/setup.sh "
                    f"installs it)", allow_module_level=True)

import openvino as ov  # noqa: E402  (after the check above)
from support import tflite_models  # noqa: E402

TYPES = list(TensorType)
WAYS = ["onnxruntime", "openvino-ir", "openvino-onnx", "tflite"]
SHAPE = (2, 3)


@functools.cache
def ir(onnx_model: bytes) -> tuple[bytes, bytes]:
    """The OpenVINO IR of an ONNX model: XML and weights, as `load` takes them."""
    model = ov.Core().read_model(io.BytesIO(onnx_model))
    with tempfile.TemporaryDirectory() as d:
        xml = pathlib.Path(d) / "model.xml"
        ov.save_model(model, xml, compress_to_fp16=False)
        return xml.read_bytes(), xml.with_suffix(".bin").read_bytes()


def builders(way: str, onnx_model: bytes, tflite_model: bytes) -> tuple[list[bytes], str]:
    if way == "openvino-ir":
        return list(ir(onnx_model)), "openvino"
    if way == "tflite":
        return [tflite_model], "tensorflowlite"
    return [onnx_model], "onnx"


@pytest.fixture(scope="module")
def ov_host() -> wasinn.Host:
    """A host whose onnx encoding runs on OpenVINO (`--backend onnx=openvino`)."""
    return wasinn.Host(cache_dir=CACHE, backends={"onnx": "openvino"})


@pytest.fixture(scope="module")
def ov_roundtrip_component(ov_host):
    return ov_host.load_component(guest_component("roundtrip"))


@pytest.fixture
def guests(wasinn_host, roundtrip_component, ov_host, ov_roundtrip_component):
    """A roundtrip instance per way of running a model."""
    with wasinn_host.instantiate(roundtrip_component) as default, ov_host.instantiate(ov_roundtrip_component) as on_ov:
        yield {w: on_ov if w == "openvino-onnx" else default for w in WAYS}


def failure(result) -> tuple[str, str]:
    assert result.tag == "err", f"expected an error, got {result}"
    return result.payload.code, result.payload.data


def context(inst, model_builders: list[bytes], encoding: str, target: str = "cpu") -> int:
    g = inst.call("load", model_builders, encoding, target)
    assert g.tag == "ok", vars(g.payload)
    ctx = inst.call("init-context", g.payload).payload
    inst.call("drop-graph", g.payload)  # the context keeps what it needs; instances hold few graphs
    return ctx


def run(inst, ctx: int, inputs) -> list[tuple[str, HostTensor]]:
    got = inst.call("compute-tensors", ctx, inputs)
    assert got.tag == "ok", vars(got.payload)
    return got.payload


def sample(ty: TensorType, shape=SHAPE, seed: int = 0) -> np.ndarray:
    """Values every backend must carry exactly: random bits, except that int64 and
    float64 stay inside int32's and float32's range (OpenVINO computes them narrowed)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if ty == TensorType.I64:
        return rng.integers(-2**31, 2**31, n, dtype=np.int64).reshape(shape)
    if ty == TensorType.FP64:
        return rng.normal(0, 1e6, n).reshape(shape)
    return rng.integers(0, 256, n * DTYPES[ty].itemsize, dtype=np.uint8).view(DTYPES[ty]).reshape(shape)


# --- selection ---------------------------------------------------------------------

@pytest.mark.parametrize("specs, want", [
    (["onnx=openvino"], {"onnx": "openvino"}),
    (["openvino"], {"openvino": "openvino", "onnx": "openvino"}),
    (["openvino", "onnx=onnxruntime"], {"openvino": "openvino", "onnx": "onnxruntime"}),
    (["tflite"], {"tensorflowlite": "tflite"}),
])
def test_backend_flags_pick_a_backend_per_encoding(specs, want):
    assert parse_choices(specs) == want
    served = {e.value: b.name for e, b in default_backends(0, want).items()}
    assert {e: served[e] for e in want} == want


@pytest.mark.parametrize("choice, message", [
    ({"onnx": "tflite"}, "backend choice onnx=tflite: tflite does not serve onnx; onnx can run on: onnxruntime, openvino"),
    ({"onnx": "tensorrt"}, "no backend named 'tensorrt'"),
    ({"keras": "openvino"}, "no encoding 'keras'; wasi:nn has: openvino, onnx, tensorflow"),
    ({"ggml": "openvino"}, "openvino does not serve ggml; ggml can run on: none"),
])
def test_bad_backend_choices_are_one_clear_line(choice, message):
    with pytest.raises(WasinnError) as e:
        default_backends(0, choice)
    assert message in str(e.value)


def test_cli_backend_flag(capsys):
    assert cli.main(["classify", str(ROOT / "images" / "chelsea.png"), "--backend", "tensorrt"]) == 1
    assert capsys.readouterr().err.strip() == ("wasinn: error: --backend tensorrt: no backend named 'tensorrt'; "
                                                "wasinn has: onnxruntime, openvino, tflite")


@pytest.mark.parametrize("encoding, kind, modules", [
    ("tensorflowlite", "tflite", ["ai_edge_litert", "wasinn.backends.tflite"]),
    ("openvino", "openvino", ["openvino", "wasinn.backends.openvino"]),
])
@pytest.mark.parametrize("as_encoding", [True, False], ids=["named", "autodetect"])
def test_a_missing_backend_is_invalid_encoding_naming_its_extra(monkeypatch, encoding, kind, modules, as_encoding):
    """With the package gone (None in sys.modules makes its import fail, as when it was
    never installed), loading through it names the extra to install, also when the
    bytes were recognised by autodetect."""
    # the IR is made with openvino itself, so before the package is hidden
    model = {"tflite": [tflite_models.add_mul()], "openvino": list(ir(models.add_mul()))}[kind]
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)
    host = wasinn.Host(cache_dir=CACHE)
    with host.instantiate(host.load_component(guest_component("roundtrip"))) as inst:
        code, msg = failure(inst.call("load", model, encoding if as_encoding else "autodetect", "cpu"))
        assert code == "invalid-encoding"
        assert msg.startswith(f"encoding {encoding} needs the {kind} backend: pip install 'wasinn[{kind}]'")
        assert f"{encoding} ({kind}, not installed)" in host.nn.served()
        with pytest.raises(WasinnError, match=rf"the {kind} backend is not installed: pip install 'wasinn\[{kind}\]'"):
            wasinn.Host(cache_dir=CACHE, backends={encoding: kind})


# --- autodetect ---------------------------------------------------------------------

def test_each_format_is_recognised_by_its_own_recogniser_only():
    formats = {"onnx": [models.add_mul()], "openvino": list(ir(models.add_mul())),
               "tensorflowlite": [tflite_models.add_mul()]}
    for encoding, recognise in RECOGNISERS.items():
        assert {name for name, b in formats.items() if recognise(b)} == {encoding.value}


@pytest.mark.parametrize("way", ["onnxruntime", "openvino-ir", "tflite"])
def test_autodetect_runs_each_format_on_its_backend(guests, way):
    inst = guests[way]
    model, _ = builders(way, models.add_mul(), tflite_models.add_mul())
    a, b = np.arange(6, dtype=np.float32).reshape(SHAPE), np.full(SHAPE, 2, np.float32)
    out = run(inst, context(inst, model, "autodetect"), [("a", a), ("b", b)])
    assert [n for n, _ in out] == ["sum", "product"]
    np.testing.assert_array_equal(out[0][1].array(), a + b)
    np.testing.assert_array_equal(out[1][1].array(), a * b)


# --- tensor types and validation ----------------------------------------------------

@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("ty", TYPES, ids=[t.name for t in TYPES])
def test_every_type_round_trips_exactly(guests, way, ty):
    inst = guests[way]
    ctx = context(inst, *builders(way, models.identity(ty, SHAPE), tflite_models.identity(ty, SHAPE)))
    x = sample(ty)
    [(name, y)] = run(inst, ctx, [("x", HostTensor.from_array(x))])
    assert (name, y.dims, y.ty, y.to_bytes()) == ("y", SHAPE, ty, x.tobytes())


@functools.cache
def _concat_bf16(n: int) -> bytes:
    from onnx import TensorProto, helper
    names = [f"x{i}" for i in range(n)]
    graph = helper.make_graph([helper.make_node("Concat", names, ["y"], axis=0)], "g",
                              [helper.make_tensor_value_info(x, TensorProto.BFLOAT16, [2, 3]) for x in names],
                              [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2 * n, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("way", ["onnxruntime", "openvino-ir", "openvino-onnx"])
def test_several_bfloat16_inputs_arrive_intact(guests, way):
    """Each input is converted before the run: a backend that kept a pointer into a
    temporary copy would see the next input's bytes in its place."""
    inst = guests[way]
    ctx = context(inst, *builders(way, _concat_bf16(4), b""))
    xs = [sample(TensorType.BF16, seed=i) for i in range(4)]
    [(_, y)] = run(inst, ctx, [(f"x{i}", HostTensor.from_array(x)) for i, x in enumerate(xs)])
    assert y.to_bytes() == b"".join(x.tobytes() for x in xs)


@pytest.mark.parametrize("way", ["openvino-onnx", "tflite"])
def test_casts_agree_with_onnxruntime_for_every_type_pair(guests, way):
    """Small non-negative integers, which every type holds exactly, cast between every
    pair of types: each backend gives onnxruntime's bytes."""
    inst = guests[way]
    x = np.arange(6).reshape(SHAPE)
    for src in TYPES:
        for dst in TYPES:
            ctx = context(inst, *builders(way, models.cast(src, dst, SHAPE), tflite_models.cast(src, dst, SHAPE)))
            xt = HostTensor.from_array(x.astype(DTYPES[src]))
            [(_, y)] = run(inst, ctx, [("x", xt)])
            [(_, want)] = models.native(models.cast(src, dst, SHAPE), {"x": (src, SHAPE, xt.to_bytes())})
            inst.call("drop-context", ctx)
            assert (y.ty, y.to_bytes()) == (dst, want), (src, dst)


@pytest.mark.parametrize("way", WAYS)
def test_outputs_in_model_order_under_model_names_inputs_by_name_or_index(guests, way):
    inst = guests[way]
    ctx = context(inst, *builders(way, models.add_mul(), tflite_models.add_mul()))
    a, b = np.arange(6, dtype=np.float32).reshape(SHAPE), np.full(SHAPE, 3, np.float32)
    for inputs in ([("a", a), ("b", b)], [("b", b), ("a", a)], [("0", a), ("1", b)], [("1", b), ("a", a)]):
        out = run(inst, ctx, inputs)
        assert [n for n, _ in out] == ["sum", "product"]
        np.testing.assert_array_equal(out[0][1].array(), a + b)
        np.testing.assert_array_equal(out[1][1].array(), a * b)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("inputs, message", [
    ([("a", np.ones(SHAPE, np.uint8)), ("b", np.ones(SHAPE, np.float32))], "input 'a': expected float32 [2,3], got uint8 [2,3]"),
    ([("a", np.ones((3, 2), np.float32)), ("b", np.ones(SHAPE, np.float32))], "input 'a': expected float32 [2,3], got float32 [3,2]"),
    ([("a", np.ones(SHAPE, np.float32))], "missing input 'b' float32 [2,3]"),
    ([("a", np.ones(SHAPE, np.float32)), ("c", np.ones(SHAPE, np.float32))], "unknown input 'c'"),
    ([("a", HostTensor(SHAPE, TensorType.FP32, b"\0" * 20)), ("b", np.ones(SHAPE, np.float32))], "needs 24 bytes"),
])
def test_validation_is_the_same_on_every_backend(guests, way, inputs, message):
    inst = guests[way]
    ctx = context(inst, *builders(way, models.add_mul(), tflite_models.add_mul()))
    code, msg = failure(inst.call("compute-tensors", ctx, inputs))
    assert code == "invalid-argument" and message in msg


def test_dynamic_axes_take_each_calls_sizes(guests):
    inst = guests["tflite"]
    ctx = context(inst, [tflite_models.dynamic_double()], "tensorflowlite")
    for rows in (1, 4, 0, 2):
        x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
        [(_, y)] = run(inst, ctx, [("x", x)])
        np.testing.assert_array_equal(y.array(), x + x)
    inst = guests["openvino-onnx"]
    ctx = context(inst, [models.identity(TensorType.FP32, (None, 3))], "onnx")
    for rows in (1, 4, 2):
        x = np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)
        [(_, y)] = run(inst, ctx, [("x", x)])
        np.testing.assert_array_equal(y.array(), x)


# --- backend errors ------------------------------------------------------------------

@pytest.mark.parametrize("way, model, encoding, code, fragment", [
    ("openvino-ir", [b"<net "], "openvino", "invalid-argument", "takes two builders, the IR's XML and its weights"),
    ("openvino-ir", [b"<?xml version='1.0'?><net name='x'>", b""], "openvino", "invalid-encoding",
     "OpenVINO could not read the openvino model: Unable to read the model"),
    ("openvino-onnx", [models.identity(TensorType.FP32)], "onnx", "unsupported-operation",
     "OpenVINO's CPU plugin cannot compile the model: Unexpected: CPU plug-in doesn't support Parameter "
     "operation with dynamic rank. Operation name: x"),
    ("openvino-onnx", [b"\x08\x07junk"], "onnx", "invalid-encoding", "OpenVINO could not read the onnx model"),
    ("tflite", [b"\0\0\0\0TFL3" + b"\0" * 8], "tensorflowlite", "invalid-encoding", "LiteRT could not read"),
    ("tflite", [b""], "tensorflowlite", "invalid-encoding", "the tensorflowlite model is empty"),
    ("tflite", [tflite_models.unknown_operator()], "tensorflowlite", "unsupported-operation",
     "LiteRT cannot run the model: Op builtin_code out of range: 250"),
    ("tflite", [tflite_models.add_mul()] * 2, "tensorflowlite", "invalid-argument", "exactly one builder"),
])
def test_load_errors_are_one_line_with_the_right_code(guests, way, model, encoding, code, fragment):
    got_code, msg = failure(guests[way].call("load", model, encoding, "cpu"))
    assert (got_code, fragment in msg, "\n" in msg) == (code, True, False), msg


@pytest.mark.parametrize("ty, values, narrowing", [
    (TensorType.I64, [2**40 + 1, 5], "int64 as int32"), (TensorType.FP64, [1e300, 1.0], "float64 as float32")])
def test_openvino_refuses_values_it_would_narrow(guests, ty, values, narrowing):
    """OpenVINO computes int64 as int32 and float64 as float32: 2**40 + 1 would come
    back as 1, so such inputs are refused rather than silently changed."""
    inst = guests["openvino-onnx"]
    ctx = context(inst, [models.identity(ty, (2,))], "onnx")
    code, msg = failure(inst.call("compute-tensors", ctx, [("x", np.array(values, DTYPES[ty]))]))
    assert code == "unsupported-operation" and f"OpenVINO computes {narrowing}" in msg
    edge = np.array([np.iinfo(np.int32).min, np.iinfo(np.int32).max] if ty == TensorType.I64 else [np.inf, -3.4e38],
                    DTYPES[ty])
    [(_, y)] = run(inst, ctx, [("x", edge)])
    np.testing.assert_array_equal(y.array(), edge)


@given(st.sampled_from([TensorType.I64, TensorType.FP64]), st.binary(min_size=32, max_size=32))
def test_openvino_never_changes_int64_or_float64_silently(guests, ty, data):
    """Any bits: either they come back unchanged, or compute says why it refuses them."""
    inst = guests["openvino-onnx"]
    ctx = context(inst, [models.identity(ty, (4,))], "onnx")
    got = inst.call("compute-tensors", ctx, [("x", HostTensor((4,), ty, data))])
    inst.call("drop-context", ctx)
    if got.tag == "ok":
        assert got.payload[0][1].to_bytes() == data
    else:
        code, msg = failure(got)
        assert code == "unsupported-operation" and "OpenVINO computes" in msg


# --- execution targets -----------------------------------------------------------------

def _ov_gpu() -> bool:
    return any(d.startswith("GPU") for d in ov.Core().available_devices)


def _cuda() -> bool:
    return "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.parametrize("way, present, fragments", [
    ("onnxruntime", _cuda, ["needs onnxruntime's CUDAExecutionProvider", "onnxruntime-gpu", "scripts/setup-gpu.sh"]),
    ("openvino-ir", _ov_gpu, ["needs an OpenVINO GPU device", "sees only: CPU", "OpenCL"]),
    ("openvino-onnx", _ov_gpu, ["needs an OpenVINO GPU device"]),
    ("tflite", lambda: False, ["serves execution target cpu only"]),
])
def test_gpu_target_without_a_gpu_is_unsupported_naming_what_is_missing(guests, way, present, fragments):
    if present():
        pytest.skip("this machine has the GPU device: see test_gpu_target_runs_on_the_gpu")
    code, msg = failure(guests[way].call("load", *builders(way, models.add_mul(), tflite_models.add_mul()), "gpu"))
    assert code == "unsupported-operation" and all(f in msg for f in fragments), msg


@pytest.mark.parametrize("way", WAYS)
def test_tpu_target_is_unsupported(guests, way):
    code, msg = failure(guests[way].call("load", *builders(way, models.add_mul(), tflite_models.add_mul()), "tpu"))
    assert code == "unsupported-operation" and "tpu" in msg


@pytest.mark.parametrize("way, present, why", [
    ("onnxruntime", _cuda, "no CUDAExecutionProvider: onnxruntime-gpu is not installed (scripts/setup-gpu.sh) or no NVIDIA GPU"),
    ("openvino-ir", _ov_gpu, "OpenVINO sees no GPU device (needs an Intel GPU and its OpenCL driver)"),
])
def test_gpu_target_runs_on_the_gpu(guests, way, present, why):
    if not present():
        pytest.skip(why)
    inst = guests[way]
    a = np.arange(6, dtype=np.float32).reshape(SHAPE)
    out = run(inst, context(inst, *builders(way, models.add_mul(), tflite_models.add_mul()), "gpu"), [("a", a), ("b", a)])
    np.testing.assert_allclose(out[1][1].array(), a * a)


# --- agreement -------------------------------------------------------------------------

def test_tflite_model_agrees_with_its_native_litert_run(guests):
    inst = guests["tflite"]
    model = tflite_models.tiny_classifier()
    ctx = context(inst, [model], "tensorflowlite")
    for seed in range(3):
        image = np.random.default_rng(seed).random((1, 16, 16, 3), dtype=np.float32)
        got = run(inst, ctx, [("image", image)])
        want = tflite_models.native(model, [image])
        assert [n for n, _ in got] == [n for n, _ in want] == ["probabilities", "logits"]
        for (_, g), (_, w) in zip(got, want):
            assert g.to_bytes() == w.tobytes()


IMAGES = sorted((ROOT / "images").glob("*.png"))
# Measured: the base network's softmax scores differ by at most ~1e-6 between the two
# backends (logits by 5e-6); the composed classifier's by up to 0.018 (camera.png), as
# OpenVINO's antialiased uint8 Resize rounds differently from onnxruntime's.
BASE_TOLERANCE = 1e-4
COMPOSED_TOLERANCE = 0.03


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _scores(host: wasinn.Host, model: bytes, feed: str, images: list[np.ndarray]) -> list[np.ndarray]:
    graph = host.nn.load_graph([model], GraphEncoding.ONNX, ExecutionTarget.CPU)
    ctx = graph.init_execution_context()
    return [compute(graph, ctx, [(feed, HostTensor.from_array(x))], host.nn.limits)[0][1].array().reshape(-1)
            for x in images]


def test_efficientnet_agrees_on_onnxruntime_and_openvino(wasinn_host, ov_host):
    from wasinn.apps.classifier_model import reference_preprocess
    from wasinn.apps.classify import load_image
    model = (ROOT / "models" / "efficientnet-lite0" / "model.onnx").read_bytes()
    images = [reference_preprocess(load_image(p)) for p in IMAGES]
    for path, a, b in zip(IMAGES, _scores(wasinn_host, model, "input", images), _scores(ov_host, model, "input", images)):
        a, b = _softmax(a), _softmax(b)
        assert np.argmax(a) == np.argmax(b), path.name
        assert set(np.argsort(-a)[:5]) == set(np.argsort(-b)[:5]), path.name
        assert np.abs(a - b).max() < BASE_TOLERANCE, path.name


def test_composed_classifier_agrees_on_onnxruntime_and_openvino(wasinn_host, ov_host):
    """The model `wasinn classify` runs (preprocessing inside the graph)."""
    from wasinn.apps.classify import composed_model, load_image
    model = composed_model(CACHE, lambda _: None).read_bytes()
    images = [load_image(p) for p in IMAGES]
    for path, a, b in zip(IMAGES, _scores(wasinn_host, model, "image", images), _scores(ov_host, model, "image", images)):
        assert np.argmax(a) == np.argmax(b), path.name
        assert len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) >= 4, path.name
        assert np.abs(a - b).max() < COMPOSED_TOLERANCE, path.name


def test_classify_command_on_openvino(capsys):
    """`wasinn classify --backend openvino`: the bundled component, its embedded ONNX
    model run by OpenVINO."""
    argv = ["classify", *map(str, IMAGES), "--top", "1", "--json", "--cache-dir", str(CACHE)]
    assert cli.main([*argv, "--backend", "openvino"]) == 0
    on_openvino = capsys.readouterr().out
    assert cli.main(argv) == 0
    on_onnxruntime = capsys.readouterr().out
    top = lambda out: [r["predictions"][0]["label"] for r in json.loads(out)]  # noqa: E731
    assert top(on_openvino) == top(on_onnxruntime) == ["tripod", "Egyptian cat", "espresso"]


def test_openvino_stops_at_the_deadline_and_serves_the_next_call(ov_host):
    from wasinn.errors import NnError
    model = (ROOT / "models" / "efficientnet-lite0" / "model.onnx").read_bytes()
    graph = ov_host.nn.load_graph([model], GraphEncoding.ONNX, ExecutionTarget.CPU)
    ctx = graph.init_execution_context()
    x = [("input", HostTensor.from_array(np.zeros((1, 3, 224, 224), np.float32)))]
    with pytest.raises(NnError) as e:  # the run itself at its deadline (`compute` sends none past it)
        limits = ov_host.nn.limits
        compute_bound(graph, ctx, bind_inputs(graph, x, limits), limits, deadline=time.monotonic())
    assert e.value.code == wasinn.ErrorCode.TIMEOUT and "OpenVINO was stopped at the call's deadline" in e.value.message
    with pytest.raises(NnError, match="^timeout: the call's deadline came while its 1 inputs were matched to the "
                                      "model's; nothing was run$"):
        compute(graph, ctx, x, ov_host.nn.limits, deadline=time.monotonic())
    [(name, out)] = compute(graph, ctx, x, ov_host.nn.limits)
    assert (name, out.dims) == ("logits", (1, 1000))


def test_named_models_in_every_format(wasinn_host, roundtrip, tmp_path):
    """`--model NAME=m.xml` takes m.bin beside it; `-S nn-graph=tensorflowlite::DIR` reads DIR/model.tflite."""
    (tmp_path / "ir").mkdir()
    (tmp_path / "tfl").mkdir()
    xml, weights = ir(models.add_mul())
    (tmp_path / "ir" / "m.xml").write_bytes(xml)
    (tmp_path / "ir" / "m.bin").write_bytes(weights)
    (tmp_path / "tfl" / "model.tflite").write_bytes(tflite_models.add_mul())
    wasinn_host.models.register_spec(f"adder-ir={tmp_path / 'ir' / 'm.xml'}")
    wasinn_host.models.register_graph_dir(f"tensorflowlite::{tmp_path / 'tfl'}")
    a = np.arange(6, dtype=np.float32).reshape(SHAPE)
    for name in ("adder-ir", "tfl"):
        g = roundtrip.call("load-by-name", name)
        assert g.tag == "ok", vars(g.payload)
        out = run(roundtrip, roundtrip.call("init-context", g.payload).payload, [("a", a), ("b", a)])
        assert [n for n, _ in out] == ["sum", "product"]
        np.testing.assert_array_equal(out[0][1].array(), a + a)


# --- ONNX conformance through OpenVINO ----------------------------------------------------

@functools.cache
def _conformance_cases() -> list:
    from onnx.backend.test.case.node import collect_testcases
    return collect_testcases(None)


def _native_ov_tensor(x: np.ndarray) -> ov.Tensor:
    if x.dtype == DTYPES[TensorType.BF16]:  # OpenVINO's numpy bridge knows no bfloat16: give it the bits
        tensor = ov.Tensor(ov.Type.bf16, list(x.shape))
        tensor.data.view(np.uint16)[...] = x.view(np.uint16)
        return tensor
    return ov.Tensor(np.ascontiguousarray(x))


def _native_run(compiled: ov.CompiledModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    request = compiled.create_infer_request()
    request.infer([_native_ov_tensor(x) for x in inputs])
    return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]


def _conformance(ov_host: wasinn.Host, stride: int) -> dict[str, int]:
    """The ONNX wheel's operator cases that native OpenVINO compiles and runs, through
    wasinn (onnx=openvino): every output must equal native OpenVINO's, byte for byte;
    wasinn refuses only what it says it refuses (narrowed int64/float64 inputs, outputs
    of types wasi:nn lacks). Returns counts, including agreement with ONNX's expected
    outputs, which is OpenVINO's own business."""
    from wasinn.errors import NnError
    from wasinn.tensors import tensor_type_of
    core = ov.Core()
    counts = dict(cases=0, data_sets=0, native_varies=0, refused=0, as_onnx_expects=0)
    for case in _conformance_cases()[::stride]:
        model = case.model.SerializeToString()
        initialized = {i.name for i in case.model.graph.initializer}
        names = [i.name for i in case.model.graph.input if i.name not in initialized]
        try:
            native = core.compile_model(core.read_model(io.BytesIO(model)), "CPU", {"EXECUTION_MODE_HINT": "ACCURACY"})
        except RuntimeError:
            continue  # OpenVINO does not support the case
        counts["cases"] += 1
        graph = ov_host.nn.load_graph([model], GraphEncoding.ONNX, ExecutionTarget.CPU)
        for inputs, expected in case.data_sets:
            if len(inputs) != len(names) or not all(isinstance(x, np.ndarray) and tensor_type_of(x.dtype) for x in inputs):
                continue  # sequences, optionals, or types wasi:nn cannot carry
            try:
                want, again = (_native_run(native, inputs) for _ in range(2))
            except RuntimeError:
                continue
            if [w.tobytes() for w in want] != [a.tobytes() for a in again]:
                counts["native_varies"] += 1  # random operators, or (test_tile) uninitialized memory
                continue
            counts["data_sets"] += 1
            try:
                got = compute(graph, graph.init_execution_context(),
                              [(n, HostTensor.from_array(x)) for n, x in zip(names, inputs)], ov_host.nn.limits)
            except NnError as e:
                assert "OpenVINO computes" in e.message or "no wasi:nn tensor type" in e.message, (case.name, e)
                counts["refused"] += 1
                continue
            assert [t.to_bytes() for _, t in got] == [w.tobytes() for w in want], case.name
            counts["as_onnx_expects"] += all(
                isinstance(e, np.ndarray) and t.dims == e.shape and t.array().dtype == e.dtype
                and np.allclose(t.array(), e, rtol=case.rtol, atol=case.atol, equal_nan=True)
                for (_, t), e in zip(got, expected))
    return counts


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the ONNX wheel computes its expected infs and NaNs
def test_onnx_conformance_sample_through_openvino_matches_native(ov_host):
    counts = _conformance(ov_host, stride=23)
    print(counts)
    assert counts["data_sets"] >= 40


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_onnx_conformance_through_openvino_matches_native(ov_host):
    print(_conformance(ov_host, stride=1))

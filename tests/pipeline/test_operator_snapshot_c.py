"""guest/snapshot-c, the snapshot map in C (Azure's map-impl world and wasi:nn, the
composed EfficientNet-Lite0 built in), against guest/snapshot's map (Python,
componentize-py) and native onnxruntime: byte for byte the same JSON, the same errors,
the same `requests` counter, under the default isolation (the embedded model runs in a
backend worker) and `--isolate none`."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import wasinn
from wasinn.limits import Limits
from wasinn.pipeline.jsonlog import EventLog
from wasinn.pipeline.services.metrics import MetricFamilies
from wasinn.pipeline.operator import Message, Operator, OperatorError, Services, Snapshot, Timestamp

from support import guest_builds, internals
from support.operator_guests import CACHE, ROOT, snapshot_c_wasm, snapshot_wasm

LABELS = (ROOT / "models" / "efficientnet-lite0" / "labels.txt").read_text().splitlines()


def frame_of(name: str) -> bytes:
    """A 224x224 RGB frame in Azure's .raw layout from one of the repo's images, resized
    as benchmarks/bench_operators.py does."""
    from PIL import Image
    with Image.open(ROOT / "images" / name) as im:
        return im.convert("RGB").resize((224, 224), Image.BILINEAR).tobytes()


def c_operator(model=None):
    try:
        return snapshot_c_wasm(model)
    except guest_builds.ToolchainMissing as e:
        guest_builds.skip_without(e)


def top5_json(ranked: np.ndarray) -> bytes:
    """What guest/snapshot writes for a `ranked` output (its code, in native Python)."""
    top = [{"label": LABELS[int(i)], "index": int(i), "score": round(float(s), 6)}
           for s, i in zip(ranked[0, :5], ranked[1, :5])]
    return json.dumps({"object": {"result": top[0]["label"], "top5": top}}, separators=(",", ":")).encode()


@pytest.fixture(scope="module", params=["default", "none"])
def host(request):
    """A host under the default isolation policy and one under `--isolate none`."""
    if request.param == "default":
        return wasinn.Host(cache_dir=CACHE)
    return wasinn.Host(cache_dir=CACHE, limits=Limits(isolate="none"))


def test_c_snapshot_map_writes_the_python_operators_bytes(host):
    import onnxruntime as ort
    from wasinn.apps.classify import composed_model
    session = ort.InferenceSession(str(composed_model(CACHE, print)), providers=["CPUExecutionProvider"])
    registry = CollectorRegistry()
    services = Services.embedded(log=EventLog(stream=io.StringIO()), metrics=MetricFamilies(registry))
    stamp = Timestamp(1, 2, 3, "cam")
    with Operator.open(host, c_operator(), kind="map", name="c", services=services) as c, \
            Operator.open(host, snapshot_wasm(), kind="map", name="py", services=services) as py:
        for name in ("camera.png", "chelsea.png", "coffee.png"):
            frame = frame_of(name)
            out = c.map(Snapshot(frame, 224, 224, "rgb24", stamp))
            assert out == py.map(Snapshot(frame, 224, 224, "rgb24", stamp))
            assert (out.width, out.height, out.format, out.timestamp) == (224, 224, "rgb24", stamp)
            ranked = session.run(["ranked"], {"image": np.frombuffer(frame, np.uint8).reshape(224, 224, 3)})[0]
            # the same backend on the same bytes: the same top five and the same rounding
            assert out.frame == top5_json(ranked)
            # a message's payload the same way, the rest of the message passed on
            message = Message(frame, topic="cams/1", content_type="application/octet-stream",
                              user_properties=[("id", name)], timestamp=stamp, schema=("s", "{}"))
            answer = c.map(message)
            assert answer == py.map(message)
            assert answer == Message(out.frame, "cams/1", "application/octet-stream", [("id", name)], stamp, ("s", "{}"))
        for bad, error in ((Snapshot(b"abc", 1, 1), "a frame is 224x224 RGB, 150528 bytes; got 3"),
                           (Message(bytes(150_529)), "a frame is 224x224 RGB, 150528 bytes; got 150529"),
                           (b"raw", "Unexpected input type.")):
            for op in (c, py):
                with pytest.raises(OperatorError) as got:
                    op.map(bad)
                assert (got.value.kind, got.value.message) == ("error", error)
        # nothing a frame leaves behind: the memory after 30 more frames is what it was
        # (guest/snapshot's grows ~147 KB a frame, docs/operators.md)
        size = internals.adapter_memory_size(host, c.instance.store)
        frame = frame_of("chelsea.png")
        for _ in range(30):
            assert c.map(Snapshot(frame, 224, 224)).frame.startswith(b'{"object":{"result":"Egyptian cat"')
        assert internals.adapter_memory_size(host, c.instance.store) == size
    for op in ("c", "py"):  # every call counted, failed ones too
        assert registry.get_sample_value("wasinn_operator_requests_total",
                                         {"operator": op, "module": "module-snapshot/map"}) == 3 * 2 + 3 + 30 * (op == "c")
    services.close()


def _scores_model(path) -> None:
    """A stand-in for the classifier with the same input and a `ranked` output whose five
    scores come from the frame: pixel (0, k)'s red * 256 + green, times SCALES[k], and
    whose indices are their blue values, so frames choose the scores."""
    import onnx
    from onnx import TensorProto, helper
    scales = np.array([[2.0 ** -16], [1e-9], [1e-6], [1 / 3], [3e4]], np.float32)
    nodes = [
        helper.make_node("Slice", ["image", "starts", "ends", "axes"], ["row"]),
        helper.make_node("Cast", ["row"], ["rowf"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["rowf", "shape"], ["pixels"]),
        helper.make_node("MatMul", ["pixels", "to_value"], ["values"]),
        helper.make_node("Mul", ["values", "scales"], ["scores"]),
        helper.make_node("MatMul", ["pixels", "to_index"], ["indices"]),
        helper.make_node("Concat", ["scores", "indices"], ["pairs"], axis=1),
        helper.make_node("Transpose", ["pairs"], ["ranked"], perm=[1, 0]),
    ]
    consts = [helper.make_tensor(n, TensorProto.INT64, [len(v)], v)
              for n, v in (("starts", [0, 0]), ("ends", [1, 5]), ("axes", [0, 1]), ("shape", [5, 3]))]
    consts += [helper.make_tensor("to_value", TensorProto.FLOAT, [3, 1], [256, 1, 0]),
               helper.make_tensor("to_index", TensorProto.FLOAT, [3, 1], [0, 0, 1]),
               helper.make_tensor("scales", TensorProto.FLOAT, [5, 1], scales.reshape(-1).tolist())]
    graph = helper.make_graph(nodes, "scores", [helper.make_tensor_value_info("image", TensorProto.UINT8, [224, 224, 3])],
                              [helper.make_tensor_value_info("ranked", TensorProto.FLOAT, [2, 5])], consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def test_scores_are_written_as_pythons_json_of_round(tmp_path):
    """Scores across the ways json.dumps(round(s, 6)) writes them: ties at the 7th place
    (to even), below 1e-4 (1.2e-05), whole numbers (3000000.0), past 1e9 (the double's shortest
    digits), each checked against that formula on onnxruntime's own output."""
    import onnxruntime as ort
    model = tmp_path / "scores.onnx"
    _scores_model(model)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (224, 224, 3), np.uint8) for _ in range(60)]
    for value in (512, 1536, 2560, 3584, 0, 1, 65535, 100, 33333):  # 512 * 2**-16 = 0.0078125, a tie
        f = np.zeros((224, 224, 3), np.uint8)
        f[0, :5, 0], f[0, :5, 1], f[0, :5, 2] = value >> 8, value & 255, [3, 1, 4, 1, 5]
        frames.append(f)
    host = wasinn.Host(cache_dir=CACHE, limits=Limits(isolate="none"))
    written = set()
    with Operator.open(host, c_operator(model), kind="map", name="scores",
                       services=Services.embedded(log=EventLog(stream=io.StringIO()))) as op:
        for f in frames:
            ranked = session.run(["ranked"], {"image": f})[0]
            got = op.map(Message(f.tobytes())).payload
            assert got == top5_json(ranked)
            written |= {json.dumps(round(float(s), 6)) for s in ranked[0]}
    assert {"0.007812", "0.0", "3000000.0"} <= written and any("e-0" in s for s in written) and \
        any(float(s) >= 1e9 for s in written)

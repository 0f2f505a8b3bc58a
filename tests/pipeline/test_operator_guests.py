"""Operators from other toolchains and operators that infer: the JavaScript map
(componentize-js, Azure's own map-impl world), Azure's format module in C (images
decoded in the guest, resized as the `image` crate resizes) and the image snapshot
operator (Python, EfficientNet-Lite0 built in, wasi:nn) against native onnxruntime on
the same frames."""
from __future__ import annotations

import json

import numpy as np
import pytest

from wasinn.pipeline.operator import Message, Operator, OperatorError, Snapshot, Timestamp

from support import guest_builds
from support.operator_guests import CACHE, ROOT, js_operator_wasm, snapshot_wasm


def test_javascript_map_operator(wasinn_host, services):
    try:
        wasm = js_operator_wasm()
    except guest_builds.ToolchainMissing as e:
        guest_builds.skip_without(e)
    with Operator.open(wasinn_host, wasm, kind="map", name="js", configuration={"context": "js-ctx"}, services=services) as op:
        for f in range(-40, 400, 7):
            stamp = Timestamp(50, f + 40, 0, "n")
            out = op.map(Message(json.dumps({"temperature": {"value": f, "unit": "F"}, "id": f}).encode(),
                                 topic="s", user_properties=[("k", "v")], timestamp=stamp))
            c = (f - 32) * 5 / 9
            expected = round(c)  # Python's round: half to even, as the operator does
            assert out == Message(json.dumps({"temperature": {"value": expected, "unit": "C"}, "id": f},
                                             separators=(",", ":")).encode(), "s", None, [("k", "v")], stamp)
        same = b'{"temperature": {"value": 21.5, "unit": "F"}}'
        assert op.map(Message(same)).payload == same  # not an integer: passed on unchanged
        with pytest.raises(OperatorError, match=r"^operator 'js' failed \(error\): payload is not JSON$"):
            op.map(Message(b"\xff"))


def frame_of(name: str) -> bytes:
    """A 224x224 RGB frame in Azure's .raw layout from one of the repo's images."""
    from PIL import Image
    with Image.open(ROOT / "images" / name) as im:
        return im.convert("RGB").resize((224, 224), Image.BILINEAR).tobytes()


def test_snapshot_operator_top5_matches_native_onnxruntime(wasinn_host, services):
    import onnxruntime as ort
    from wasinn.apps.classify import composed_model
    session = ort.InferenceSession(str(composed_model(CACHE, print)), providers=["CPUExecutionProvider"])
    labels = (ROOT / "models" / "efficientnet-lite0" / "labels.txt").read_text().splitlines()
    with Operator.open(wasinn_host, snapshot_wasm(), kind="map", name="snapshot", services=services) as op:
        for name in ("camera.png", "chelsea.png", "coffee.png"):
            frame = frame_of(name)
            assert len(frame) == 150_528
            ranked = session.run(["ranked"], {"image": np.frombuffer(frame, np.uint8).reshape(224, 224, 3)})[0]
            out = op.map(Snapshot(frame, 224, 224, "rgb24", Timestamp(1, 2, 3, "cam")))
            assert (out.width, out.height, out.format, out.timestamp) == (224, 224, "rgb24", Timestamp(1, 2, 3, "cam"))
            result = json.loads(out.frame)["object"]
            top = result["top5"]
            assert [t["index"] for t in top] == [int(i) for i in ranked[1, :5]]
            assert [t["label"] for t in top] == [labels[int(i)] for i in ranked[1, :5]]
            assert result["result"] == top[0]["label"]
            # the same backend on the same bytes; the operator writes scores to 6 places
            assert [t["score"] for t in top] == pytest.approx([float(s) for s in ranked[0, :5]], abs=5e-7)
            # a message's payload works the same way
            assert json.loads(op.map(Message(frame)).payload)["object"]["top5"] == top
        with pytest.raises(OperatorError, match=r"a frame is 224x224 RGB, 150528 bytes; got 3$"):
            op.map(Snapshot(b"abc", 1, 1))


def test_snapshot_module_branch_and_accumulate_as_azure_does(wasinn_host, services):
    wasm = snapshot_wasm()
    assert Operator.kinds(wasinn_host.load_component(wasm)) == {"map", "branch", "accumulate"}
    ts = Timestamp(1, 0, 0, "n")
    with Operator.open(wasinn_host, wasm, kind="branch", name="module-snapshot/branch",
                       configuration={"snapshot_topic": "cameras/1"}, services=services) as op:
        assert [op.branch(ts, m) for m in (Message(b"{}", topic="cameras/1"), Message(b"{}", topic="sensors"),
                                           Snapshot(b"frame", 1, 1))] == [True, False, True]
        with pytest.raises(OperatorError, match=r"\(error\): Unexpected input type\.$"):
            op.branch(ts, b"raw")
    with Operator.open(wasinn_host, wasm, kind="accumulate", name="module-snapshot/accumulate", services=services) as op:
        frames = [Snapshot(json.dumps({"object": {"result": r, "top5": []}}).encode(), 224, 224)
                  for r in ("laptop", "tripod", "laptop")]
        staged = op.accumulate(Message(b"", topic="cams"), frames)
        assert (staged.payload, staged.topic) == (b'{"object":{"result":"laptop; tripod"}}', "cams")
        more = op.accumulate(staged, [Snapshot(b'{"object":{"result":"broom"}}', 1, 1)])
        assert more.payload == b'{"object":{"result":"laptop; tripod; broom"}}'


def _lanczos3(rgb: np.ndarray, side: int = 224) -> np.ndarray:
    """The `image` crate's resize with FilterType::Lanczos3 (image 0.24, imageops/sample.rs:
    rows then columns, each output sample the normalised Lanczos3 taps around its centre,
    widened by the ratio when shrinking), in float64."""
    def taps(src: int) -> np.ndarray:
        ratio = src / side
        scale = max(ratio, 1.0)
        weights = np.zeros((side, src))
        for out in range(side):
            centre = (out + 0.5) * ratio
            left = min(max(int(np.floor(centre - 3 * scale)), 0), src - 1)
            right = min(max(int(np.ceil(centre + 3 * scale)), left + 1), src)
            x = (np.arange(left, right) - (centre - 0.5)) / scale
            w = np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)
            weights[out, left:right] = w / w.sum()
        return weights
    tall = np.einsum("oy,yxc->oxc", taps(rgb.shape[0]), rgb.astype(np.float64))
    wide = np.einsum("ox,yxc->yoc", taps(rgb.shape[1]), tall)
    return np.floor(np.clip(wide, 0, 255) + 0.5).astype(np.uint8)


def _encoded(image, fmt: str) -> bytes:
    import io
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def test_format_operator_decodes_and_resizes_as_azure_does(wasinn_host, services):
    """guest/format (C, stb_image in the guest): encoded images become 224x224 rgb24
    snapshots resized as the `image` crate resizes; raw frames and ready snapshots pass;
    anything else is refused with Azure's error, and the next message runs."""
    from PIL import Image
    from support.operator_guests import format_wasm
    try:
        wasm = format_wasm()
    except guest_builds.ToolchainMissing as e:
        guest_builds.skip_without(e)
    stamp = Timestamp(7, 8, 9, "cam")
    with Operator.open(wasinn_host, wasm, kind="map", name="format", services=services) as op:
        for name in ("camera.png", "chelsea.png", "coffee.png"):  # gray 512x512, 451x300, 600x400
            with Image.open(ROOT / "images" / name) as im:
                rgb = np.asarray(im.convert("RGB"))
                out = op.map(Message(_encoded(im, "PNG"), topic="cams", timestamp=stamp))
            assert (out.width, out.height, out.format, out.timestamp) == (224, 224, "rgb24", stamp)
            got = np.frombuffer(out.frame, np.uint8).reshape(224, 224, 3).astype(int)
            # float32 sums against float64 ones: apart by far less than 0.5, so a sample
            # can round the other way only where it lies that close to a half
            assert np.abs(got - _lanczos3(rgb)).max() <= 1
        for fmt in ("PNG", "BMP", "GIF", "PPM", "JPEG"):  # one colour stays that colour
            flat = Image.new("RGB", (640, 480), (200, 30, 90) if fmt != "JPEG" else (128, 128, 128))
            out = op.map(Snapshot(_encoded(flat, fmt), 640, 480, fmt.lower(), stamp))
            assert set(zip(*[iter(out.frame)] * 3)) == {flat.getpixel((0, 0))}, fmt
        square = np.asarray(Image.open(ROOT / "images" / "camera.png").convert("RGB").crop((0, 0, 224, 224)))
        assert op.map(Message(_encoded(Image.fromarray(square), "PNG"))).frame == square.tobytes()
        raw = bytes(range(256)) * 588  # 150,528 bytes that are no image: a raw frame
        assert op.map(Message(raw, timestamp=stamp)) == Snapshot(raw, 224, 224, "rgb24", stamp)
        ready = Snapshot(b"\x01" * 150_528, 224, 224, "rgb24", stamp)
        assert op.map(ready) == ready
        header = _encoded(Image.new("RGB", (64, 64)), "JPEG")[:200]  # a JPEG cut inside its tables
        for bad in (b"abc", header, b"\x89PNG\r\n\x1a\n" + bytes(100)):
            with pytest.raises(OperatorError, match=r"\(error\): Unexpected image format or size\.$"):
                op.map(Message(bad))
        with pytest.raises(OperatorError, match=r"\(error\): Unexpected input type\.$"):
            op.map(b"bare bytes")
        assert op.map(Message(raw)).frame == raw

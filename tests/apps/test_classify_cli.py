"""classify-cli, the portable command component, on wasinn with wasmtime's own flags
(`-S nn -S nn-graph=onnx::DIR`): it decodes the photos itself and says what
`wasinn classify` says about them, with the same scores."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from support.classify_cli_support import IMAGES, TOP1, component, onnx_dir, predictions, wasinn
from support.repo import CACHE
from wasinn.apps.classify import load_image


def run(*args: str, images=IMAGES):
    return wasinn("run", "--cache-dir", str(CACHE), "-S", "nn", "-S", f"nn-graph=onnx::{onnx_dir()}",
                  "--dir", f"{images}::/images", str(component()), *args)


def test_photos_get_the_classes_and_scores_of_the_model_on_the_host():
    proc = run("--top", "3", *(f"/images/{name}" for name in TOP1))
    assert proc.returncode == 0, proc.stderr
    got = predictions(proc.stdout)
    session = ort.InferenceSession(str(onnx_dir() / "model.onnx"))
    for name, label in TOP1.items():
        preds = got[f"/images/{name}"]
        assert preds[0][0] == label
        probabilities = session.run(None, {"image": load_image(IMAGES / name)})[0][0]
        want = np.argsort(-probabilities)[:3]
        assert [index for _, _, index in preds] == list(want)
        np.testing.assert_allclose([score for _, score, _ in preds], 100 * probabilities[want], atol=0.006)


def test_ppm_pgm_and_png_of_one_photo_agree(tmp_path):
    with Image.open(IMAGES / "chelsea.png") as img:
        img.save(tmp_path / "chelsea.ppm")
        img.convert("P").save(tmp_path / "chelsea-palette.png")
    with Image.open(IMAGES / "camera.png") as img:
        img.save(tmp_path / "camera.pgm")
        img.save(tmp_path / "camera.png")
        img.convert("RGB").save(tmp_path / "camera-rgb.ppm")
    proc = run("/images/chelsea.ppm", "/images/camera.pgm", "/images/camera.png", "/images/camera-rgb.ppm",
               images=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = predictions(proc.stdout)
    assert got["/images/chelsea.ppm"][0][0] == TOP1["chelsea.png"]
    assert got["/images/camera.pgm"] == got["/images/camera.png"] == got["/images/camera-rgb.ppm"]


@pytest.mark.parametrize("args, message", [
    (["--model", "no-such-model", "/images/coffee.png"], "cannot load model 'no-such-model': wasi:nn error not-found"),
    (["/images/missing.png"], "/images/missing.png: [Errno 44] No such file or directory"),
    (["/images/README.md"], "/images/README.md: not a PNG, PGM or PPM file"),
    (["--top", "many", "/images/coffee.png"], "--top wants a number, got 'many'"),
    ([], "give at least one image"),
])
def test_failures_exit_1_with_one_line_saying_why(args, message):
    proc = run(*args)
    assert proc.returncode == 1
    assert f"classify-cli: {message}" in proc.stderr


def test_a_photo_over_the_old_per_call_cap_classifies(tmp_path):
    """1280x960 RGB is 3.7 MB of pixels, over the 2,796,202 bytes wasmtime-py once let a
    guest pass per call; the portable build's pixels take the standard path."""
    with Image.open(IMAGES / "coffee.png") as img:
        big = img.convert("RGB").resize((1280, 960), Image.BILINEAR)
    big.save(tmp_path / "coffee-big.ppm")
    assert big.width * big.height * 3 > 2_796_202
    proc = run("/images/coffee-big.ppm", images=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert predictions(proc.stdout)["/images/coffee-big.ppm"][0][0] == TOP1["coffee.png"]

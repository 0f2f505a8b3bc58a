"""The C classify example (guest/witx-classify, a core module) and its input, for
test_witx.py and test_witx_wasmtime.py; the hostile C guest (guest/c-hostile), for
test_hostile_args.py and test_streams.py."""
from __future__ import annotations

import onnxruntime as ort
import pytest

from support.guest_builds import ToolchainMissing, c_component, skip_without
from support.repo import ROOT
from support.witx_support import MODEL, classify_wasm


@pytest.fixture(scope="module")
def classify():
    try:
        return classify_wasm()
    except ToolchainMissing as e:
        skip_without(e)


@pytest.fixture(scope="module")
def chelsea(tmp_path_factory):
    from wasinn.apps.classifier_model import reference_preprocess
    from wasinn.apps.classify import load_image
    x = reference_preprocess(load_image(ROOT / "images" / "chelsea.png"))
    d = tmp_path_factory.mktemp("input")
    x.tofile(d / "chelsea.f32")
    logits = ort.InferenceSession(str(MODEL / "model.onnx")).run(None, {"input": x})[0][0]
    return d, logits


@pytest.fixture(scope="module")
def hostile():
    try:
        return c_component([ROOT / "guest" / "c-hostile" / "hostile.c"], name="c-hostile",
                           world="wasinn:guest/ml-command", includes=(ROOT / "guest" / "c-nn",))
    except ToolchainMissing as e:
        skip_without(e)

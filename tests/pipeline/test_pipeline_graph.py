"""The pipeline's stages in one process (no broker): real components on real onnxruntime."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import onnxruntime as ort
import pytest

import wasinn
from wasinn.apps.classify import composed_model, load_image
from wasinn.errors import WasinnError
from wasinn.limits import Limits
from wasinn.pipeline import GraphRunner, StageFailure, load_pipeline
from wasinn.pipeline.graph import SOURCE_TENSOR

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "tests" / "pipeline"  # shared with test_pipeline_serve: each stage built once
PIPELINE = ROOT / "pipelines" / "image-classification.yaml"
IMAGES = sorted((ROOT / "images").glob("*.png"))
_PROCESS = f"{wasinn._bindings.WASINN_GUEST_STAGE}#process"


@pytest.fixture(scope="module")
def pipeline_host() -> wasinn.Host:
    return wasinn.Host(cache_dir=CACHE, ort_threads=1, progress=print)


@pytest.fixture(scope="module")
def runner(pipeline_host) -> GraphRunner:
    r = GraphRunner(load_pipeline(PIPELINE), pipeline_host)
    yield r
    r.close()


@pytest.mark.parametrize("image", IMAGES, ids=lambda p: p.name)
def test_three_stages_give_what_the_composed_classifier_gives(runner, pipeline_host, image):
    """preprocess (the front cut out of the classifier) -> the network -> softmax/top-k in a
    guest equals the single composed classifier model run natively."""
    pixels = load_image(image)
    outcome = runner.run(pixels)
    got = json.loads(outcome.result)["predictions"]
    session = ort.InferenceSession(str(composed_model(CACHE, print)), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"image": pixels})[0][0]
    want = np.argsort(-probabilities)[:5]
    assert [p["index"] for p in got] == list(want)
    np.testing.assert_allclose([p["score"] for p in got], probabilities[want], atol=2e-5)
    labels = (ROOT / "models/efficientnet-lite0/labels.txt").read_text().splitlines()
    assert [p["label"] for p in got] == [labels[i] for i in want]
    assert set(outcome.seconds) == {"preprocess", "inference", "postprocess"}


def test_stages_hand_on_the_backends_tensors_not_copies(runner):
    """The preprocess stage returns the handle of the tensor onnxruntime produced: the host
    gets the backend's own array back (a guest that read and rebuilt it would give bytes)."""
    stage = runner.stages["preprocess"]
    result = stage.instance.call(_PROCESS, [(SOURCE_TENSOR, load_image(IMAGES[0]))])
    assert result.tag == "ok" and result.payload.tag == "tensors"
    [(name, tensor)] = result.payload.payload
    assert tensor.dims == (1, 3, 224, 224)
    assert isinstance(tensor.data, np.ndarray)
    assert stage.instance.live_resources()["tensor"] == 0


def test_a_wrong_shape_fails_in_the_first_stage_with_wasi_nn_s_message(runner):
    with pytest.raises(StageFailure) as info:
        runner.run(np.zeros((32, 32), np.uint8))
    f = info.value
    assert (f.stage, f.kind) == ("preprocess", "invalid-input")
    assert "input 'image': expected uint8 [?,?,3], got uint8 [32,32]" in f.message
    # and the runner goes on with the next message
    assert json.loads(runner.run(load_image(IMAGES[0])).result)["predictions"]


def test_a_stage_fed_the_wrong_tensor_says_so(pipeline_host, tmp_path):
    """Postprocess connected straight to the source gets pixels, not class scores."""
    text = PIPELINE.read_text().replace("{from: {name: camera}, to: {name: preprocess}}",
                                        "{from: {name: camera}, to: {name: postprocess}}")
    text = text.replace("  - {from: {name: preprocess}, to: {name: inference}}\n", "")
    text = text.replace("  - {from: {name: inference}, to: {name: postprocess}}\n", "")
    for name in ("preprocess", "inference"):
        text = text.replace(f"  - operationType: map\n    name: {name}\n    module: {name}\n", "")
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("../", f"{ROOT}/").replace("models/efficientnet-lite0-preprocess",
                                                            f"{ROOT}/pipelines/models/efficientnet-lite0-preprocess"))
    r = GraphRunner(load_pipeline(path), pipeline_host)
    with pytest.raises(StageFailure) as info:
        r.run(load_image(IMAGES[0]))
    assert (info.value.stage, info.value.kind) == ("postprocess", "invalid-input")
    assert "expected float32 class scores [N] or [1,N], got U8 [" in info.value.message
    r.close()


def test_a_module_that_rejects_its_config_stops_the_start(pipeline_host, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.read_text().replace("      top: 5\n", "      top: 5\n      colour: blue\n")
                    .replace("../", f"{ROOT}/").replace("models/efficientnet-lite0-preprocess",
                                                        f"{ROOT}/pipelines/models/efficientnet-lite0-preprocess"))
    with pytest.raises(WasinnError, match=r"module 'postprocess' \(line \d+\) rejected its config: unknown "
                                          r"config key\(s\) colour; this stage takes: labels, softmax, top"):
        GraphRunner(load_pipeline(path), pipeline_host)


def test_a_result_over_max_result_bytes_is_the_stages_contract_failure(tmp_path):
    """The host parses a stage's JSON result in one piece, holding the GIL (22 MB of small
    objects held every other thread 1.8 s): past max-result-bytes it is not parsed. The
    top 1000 predictions are ~60 KB; under a 4 KiB limit the top 5 still go through."""
    host = wasinn.Host(cache_dir=CACHE, ort_threads=1, limits=Limits(max_result_bytes=4096))
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.read_text().replace("../", f"{ROOT}/").replace(
        "models/efficientnet-lite0-preprocess", f"{ROOT}/pipelines/models/efficientnet-lite0-preprocess"))
    wide = tmp_path / "wide.yaml"
    wide.write_text(path.read_text().replace("      top: 5\n", "      top: 1000\n"))
    for pipeline, fits in ((path, True), (wide, False)):
        r = GraphRunner(load_pipeline(pipeline), host)
        try:
            if fits:
                assert len(r.run(load_image(IMAGES[0])).value["predictions"]) == 5
                continue
            with pytest.raises(StageFailure) as info:
                r.run(load_image(IMAGES[0]))
            assert (info.value.stage, info.value.kind) == ("postprocess", "contract")
            assert info.value.message == ("its JSON result is over 4096 bytes of UTF-8 "
                                          "(limit 'max-result-bytes', --max-result-bytes)")
        finally:
            r.close()

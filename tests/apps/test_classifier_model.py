"""The composed classifier (preprocessing in the graph) against the Pillow reference recipe."""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument
from PIL import Image

from wasinn.apps.classifier_model import compose, compose_file, reference_preprocess

ROOT = pathlib.Path(__file__).parents[2]
MODEL_DIR = ROOT / "models" / "efficientnet-lite0"
IMAGES = ROOT / "images"
LABELS = (MODEL_DIR / "labels.txt").read_text().splitlines()

# Published top-1 of each photo under the reference recipe (models/efficientnet-lite0/README.md).
EXPECTED = {"chelsea": ("Egyptian cat", 0.396), "coffee": ("espresso", 0.944), "camera": ("tripod", 0.941)}
SCORE_TOLERANCE = 0.01


def _session(model: bytes | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGES / f"{name}.png").convert("RGB"))


@pytest.fixture(scope="module")
def composed() -> bytes:
    return compose((MODEL_DIR / "model.onnx").read_bytes())


@pytest.fixture(scope="module")
def classifier(composed) -> ort.InferenceSession:
    return _session(composed)


@pytest.fixture(scope="module")
def reference():
    session = _session(str(MODEL_DIR / "model.onnx"))
    return lambda rgb: _softmax(session.run(None, {"input": reference_preprocess(rgb)})[0])


def _classify(classifier, rgb: np.ndarray) -> np.ndarray:
    probabilities, ranked = classifier.run(None, {"image": rgb})
    assert probabilities.shape == (1, 1000) and ranked.shape == (2, 1000)
    _assert_ranks(probabilities[0], ranked)
    return probabilities


def _assert_ranks(probabilities: np.ndarray, ranked: np.ndarray) -> None:
    """`ranked` is every class once, by probability, largest first, ties by class index."""
    order = ranked[1].astype(np.int64)
    assert np.array_equal(ranked[1], order) and sorted(order) == list(range(len(probabilities)))
    np.testing.assert_array_equal(ranked[0], probabilities[order])
    np.testing.assert_array_equal(order, np.lexsort((np.arange(len(probabilities)), -probabilities)))


def _assert_close_to_reference(scores: np.ndarray, ref: np.ndarray, what: str) -> None:
    diff = float(np.abs(scores - ref).max())
    print(f"{what}: max |score - reference| = {diff:.2e}, top-1 {LABELS[scores.argmax()]!r} {scores.max():.4f}")
    assert scores.argmax() == ref.argmax()
    assert set(np.argsort(-scores[0])[:5]) == set(np.argsort(-ref[0])[:5])
    assert diff < SCORE_TOLERANCE


def test_interface(composed):
    model = onnx.load_model_from_string(composed)
    (image,) = model.graph.input
    assert image.name == "image"
    assert image.type.tensor_type.elem_type == TensorProto.UINT8
    assert [d.dim_value or d.dim_param for d in image.type.tensor_type.shape.dim] == ["height", "width", 3]
    assert [o.name for o in model.graph.output] == ["probabilities", "ranked"]
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    assert len(LABELS) == 1000


@pytest.mark.parametrize("name", list(EXPECTED))
def test_photo_matches_pillow_reference(classifier, reference, name):
    rgb = _rgb(name)
    scores = _classify(classifier, rgb)
    _assert_close_to_reference(scores, reference(rgb), name)
    label, score = EXPECTED[name]
    assert LABELS[scores.argmax()] == label
    assert scores.max() == pytest.approx(score, abs=0.002)


def test_grayscale_photo_replicated_to_rgb(classifier):
    gray = np.asarray(Image.open(IMAGES / "camera.png"))
    assert gray.ndim == 2
    scores = _classify(classifier, np.repeat(gray[:, :, np.newaxis], 3, axis=2))
    assert scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert LABELS[scores.argmax()] == "tripod"


@pytest.mark.parametrize("height, width", [(37, 91), (91, 37), (1, 5), (224, 224)])
def test_odd_sizes_upscale_and_identity(classifier, reference, height, width):
    rgba = np.random.default_rng(height * 1000 + width).integers(0, 256, (height, width, 4), dtype=np.uint8)
    # Pillow's RGBA -> RGB conversion drops alpha; a guest does the same before calling compute.
    rgb = np.asarray(Image.fromarray(rgba, "RGBA").convert("RGB"))
    scores = _classify(classifier, rgb)
    assert scores.sum() == pytest.approx(1.0, abs=1e-5)
    _assert_close_to_reference(scores, reference(rgb), f"{height}x{width}")


def test_four_channels_are_rejected(classifier):
    with pytest.raises(InvalidArgument, match="dimensions"):
        classifier.run(None, {"image": np.zeros((8, 8, 4), np.uint8)})


def _tiny_classifier(side: int, classes: int) -> bytes:
    """A stand-in network: per-channel mean, then a fixed linear layer to `classes` scores."""
    weights = np.arange(3 * classes, dtype=np.float32).reshape(3, classes) / 10
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["scores"])],
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, side, side])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, classes])],
        initializer=[numpy_helper.from_array(weights, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def test_compose_any_square_classifier(tmp_path):
    base = tmp_path / "tiny.onnx"
    base.write_bytes(_tiny_classifier(side=16, classes=4))
    out = tmp_path / "classifier.onnx"
    compose_file(base, out, labels_count=4)
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    probabilities, ranked = _session(str(out)).run(None, {"image": rgb})
    expected = _session(str(base)).run(None, {"pixels": reference_preprocess(rgb, size=16)})[0]
    np.testing.assert_allclose(probabilities, _softmax(expected), atol=1e-6)
    _assert_ranks(probabilities[0], ranked)


def test_ranked_ties_keep_class_order(tmp_path):
    # A network whose four scores are all equal: TopK must keep the classes in index order.
    model = onnx.load_model_from_string(_tiny_classifier(side=16, classes=4))
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((3, 4), np.float32), "w"))
    out = tmp_path / "ties.onnx"
    out.write_bytes(compose(model.SerializeToString(), labels_count=4))
    probabilities, ranked = _session(str(out)).run(None, {"image": np.full((8, 8, 3), 7, np.uint8)})
    assert ranked.tolist() == [[0.25] * 4, [0.0, 1.0, 2.0, 3.0]]


def test_compose_rejects_another_label_count():
    with pytest.raises(ValueError, match=r"output must be float32 \[1, 1000\]"):
        compose(_tiny_classifier(side=16, classes=4))


def test_compose_rejects_a_non_square_input():
    model = onnx.load_model_from_string(_tiny_classifier(side=16, classes=4))
    model.graph.input[0].type.tensor_type.shape.dim[3].dim_value = 15
    with pytest.raises(ValueError, match=r"input must be float32 \[1, 3, S, S\]"):
        compose(model.SerializeToString(), labels_count=4)

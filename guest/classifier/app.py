"""ImageClassifier: load → init context → compute → top-k, through wasi:nn.

The image arrives as a wasi:nn tensor handle (uint8 RGB, [height, width, 3]); the
model's own graph crops, resizes and normalises it, so no pixel loop runs here.
The graph and its execution context are kept across calls.
"""
import heapq
import os
import struct

from componentize_py_types import Err

from wit_world import exports
from wit_world.exports.classifier import (
    ClassifyError_BackendError, ClassifyError_ModelLoadFailed, ClassifyError_TensorShapeMismatch,
    ClassifyError_UnsupportedOperator, ModelSource_Embedded, ModelSource_Named, Prediction, ShapeMismatch)
from wit_world.imports import graph, tensor
from wit_world.imports.errors import ErrorCode

_HERE = os.path.dirname(__file__)
# Read at build time: componentize-py snapshots module state into the component, so the
# labels (and the model, when the build put one beside this file) live inside the wasm.
with open(os.path.join(_HERE, "labels.txt")) as f:
    LABELS = f.read().splitlines()
try:
    with open(os.path.join(_HERE, "model.onnx"), "rb") as f:
        EMBEDDED_MODEL = f.read()
except FileNotFoundError:
    EMBEDDED_MODEL = None

INPUT = "image"
EXPECTED = "uint8 [height,width,3]"
_TYPE_NAMES = {"FP16": "float16", "FP32": "float32", "FP64": "float64", "BF16": "bfloat16",
               "U8": "uint8", "I32": "int32", "I64": "int64"}


def _describe(t: tensor.Tensor) -> str:
    return f"{_TYPE_NAMES[t.ty().name]} [{','.join(map(str, t.dimensions()))}]"


def _load_failure(e: Err) -> Err:
    with e.value as error:
        code, data = error.code(), error.data()
    if code == ErrorCode.UNSUPPORTED_OPERATION:
        return Err(ClassifyError_UnsupportedOperator(data))
    return Err(ClassifyError_ModelLoadFailed(f"{code.name.lower().replace('_', '-')}: {data}"))


def _compute_failure(e: Err, got: str) -> Err:
    with e.value as error:
        code, data = error.code(), error.data()
    if code == ErrorCode.INVALID_ARGUMENT:
        return Err(ClassifyError_TensorShapeMismatch(ShapeMismatch(EXPECTED, got, data)))
    if code == ErrorCode.UNSUPPORTED_OPERATION:
        return Err(ClassifyError_UnsupportedOperator(data))
    return Err(ClassifyError_BackendError(f"{code.name.lower().replace('_', '-')}: {data}"))


class _Loaded:
    """The graph and context kept across calls (module state: componentize-py may make
    a new `Classifier` object for each call)."""
    graph = None
    context = None


class Classifier(exports.Classifier):
    def use_model(self, source) -> None:
        try:
            if isinstance(source, ModelSource_Named):
                g = graph.load_by_name(source.value)
            elif EMBEDDED_MODEL is None:
                raise Err(ClassifyError_ModelLoadFailed(
                    "this component was built without an embedded model; use a named one"))
            else:
                g = graph.load([EMBEDDED_MODEL], graph.GraphEncoding.ONNX, graph.ExecutionTarget.CPU)
            context = g.init_execution_context()
        except Err as e:
            if isinstance(e.value, ClassifyError_ModelLoadFailed):
                raise
            raise _load_failure(e)
        _Loaded.graph, _Loaded.context = g, context

    def classify(self, image, top_k):
        if _Loaded.context is None:
            self.use_model(ModelSource_Embedded())
        got = _describe(image)
        dims = image.dimensions()
        if image.ty() != tensor.TensorType.U8 or len(dims) != 3 or dims[2] != 3:
            image.__exit__(None, None, None)
            raise Err(ClassifyError_TensorShapeMismatch(ShapeMismatch(
                EXPECTED, got, f"an image is uint8 RGB pixels {EXPECTED}, got {got}")))
        try:
            outputs = _Loaded.context.compute([(INPUT, image)])  # moves the image to the host
        except Err as e:
            raise _compute_failure(e, got)
        # Outputs come in model order; the first is the softmax over the classes.
        probabilities = outputs[0][1]
        data = probabilities.data()
        for _, t in outputs:
            t.__exit__(None, None, None)
        scores = struct.unpack(f"<{len(data) // 4}f", data)
        best = heapq.nlargest(top_k, range(len(scores)), key=scores.__getitem__)
        return [Prediction(LABELS[i] if i < len(LABELS) else str(i), i, scores[i]) for i in best]

    def classify_batch(self, images, top_k):
        return [self.classify(image, top_k) for image in images]

"""ImageClassifier: load → init context → compute → top-k, through wasi:nn.

The image arrives as a wasi:nn tensor handle (uint8 RGB, [height, width, 3]); the
model's own graph crops, resizes and normalises it, and ranks the classes, so neither
a pixel loop nor a sort over the classes runs here. The graph and its execution
context are kept across calls.
"""
import os
import struct

from componentize_py_types import Err

from wit_world import exports
from wit_world.exports.classifier import (
    ClassifyError_BackendError, ClassifyError_ModelLoadFailed, ClassifyError_TensorShapeMismatch,
    ClassifyError_UnsupportedOperator, ModelSource_Embedded, ModelSource_Named, Prediction, ShapeMismatch)
from wit_world.imports import graph
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
RANKED = "ranked"
EXPECTED = "uint8 [height,width,3]"


def _load_failure(e: Err) -> Err:
    with e.value as error:
        code, data = error.code(), error.data()
    if code == ErrorCode.UNSUPPORTED_OPERATION:
        return Err(ClassifyError_UnsupportedOperator(data))
    return Err(ClassifyError_ModelLoadFailed(f"{code.name.lower().replace('_', '-')}: {data}"))


def _compute_failure(e: Err) -> Err:
    with e.value as error:
        code, data = error.code(), error.data()
    if code == ErrorCode.INVALID_ARGUMENT:
        # wasinn says "...: expected <type> [dims], got <type> [dims]"; other hosts may not
        got = data.rsplit("got ", 1)[1] if "got " in data else "see the message"
        return Err(ClassifyError_TensorShapeMismatch(ShapeMismatch(EXPECTED, got, data)))
    if code == ErrorCode.UNSUPPORTED_OPERATION:
        return Err(ClassifyError_UnsupportedOperator(data))
    return Err(ClassifyError_BackendError(f"{code.name.lower().replace('_', '-')}: {data}"))


def _top(scores: tuple, k: int) -> list:
    """The indices of the k largest scores, largest first, ties by index. The k values
    come from a C-level sort and each one's index from a C-level scan: a Python loop
    over the classes costs more than both here, in an interpreter compiled to wasm."""
    top = sorted(scores, reverse=True)[:k]
    if any(s != s for s in top):  # NaN: index() cannot find it, and the sort is undefined
        cutoff = top[-1] if top else float("inf")
        return sorted((i for i, s in enumerate(scores) if s >= cutoff), key=scores.__getitem__, reverse=True)[:k]
    best, last = [], {}
    for s in top:
        i = last[s] = scores.index(s, last.get(s, -1) + 1)
        best.append(i)
    return best


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
        try:
            outputs = _Loaded.context.compute([(INPUT, image)])  # moves the image to the host
        except Err as e:
            raise _compute_failure(e)
        # The bundled model ranks the classes in its graph (output `ranked`, float32
        # [2, N]: the probabilities largest first, then their class indices); for any
        # other model the first output is the softmax over the classes, ranked here.
        ranked = next((t for name, t in outputs if name == RANKED), None)
        data = (outputs[0][1] if ranked is None else ranked).data()
        for _, t in outputs:
            t.__exit__(None, None, None)
        if ranked is not None:
            n = len(data) // 8
            k = min(top_k, n)
            best = zip(map(int, struct.unpack_from(f"<{k}f", data, 4 * n)), struct.unpack_from(f"<{k}f", data))
        else:
            scores = struct.unpack(f"<{len(data) // 4}f", data)
            best = ((i, scores[i]) for i in _top(scores, top_k))
        return [Prediction(LABELS[i] if i < len(LABELS) else str(i), i, s) for i, s in best]

    def classify_batch(self, images, top_k):
        return [self.classify(image, top_k) for image in images]

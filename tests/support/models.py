"""Small ONNX models built in code for the tests, and native onnxruntime to compare with."""
from __future__ import annotations

import ctypes
import functools
import math

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from wasinn import TensorType
from wasinn.tensors import DTYPES

ONNX_TYPES = {TensorType.FP16: TensorProto.FLOAT16, TensorType.FP32: TensorProto.FLOAT,
              TensorType.FP64: TensorProto.DOUBLE, TensorType.BF16: TensorProto.BFLOAT16,
              TensorType.U8: TensorProto.UINT8, TensorType.I32: TensorProto.INT32,
              TensorType.I64: TensorProto.INT64}


def _model(nodes, inputs, outputs, opset=17) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


@functools.cache
def identity(ty: TensorType, shape: tuple | None = None) -> bytes:
    """y = x for any shape (shape None: unknown rank)."""
    t = ONNX_TYPES[ty]
    return _model([helper.make_node("Identity", ["x"], ["y"])],
                  [helper.make_tensor_value_info("x", t, shape)], [helper.make_tensor_value_info("y", t, shape)])


@functools.cache
def cast(src: TensorType, dst: TensorType, shape: tuple | None = None) -> bytes:
    return _model([helper.make_node("Cast", ["x"], ["y"], to=ONNX_TYPES[dst])],
                  [helper.make_tensor_value_info("x", ONNX_TYPES[src], shape)],
                  [helper.make_tensor_value_info("y", ONNX_TYPES[dst], shape)])



@functools.cache
def filled(value: float = 1.5) -> bytes:
    """y: float32 of the shape the int64 input `shape` holds, every element `value`
    (ConstantOfShape): an output whose size the model does not fix, the input's values do."""
    return _model([helper.make_node("ConstantOfShape", ["shape"], ["y"],
                                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [value]))],
                  [helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])

def slow_loop(trips: int, n: int = 256) -> bytes:
    """y = tanh(... tanh(x @ w) @ w ...), `trips` times in one Loop node, on a float32
    [n, n] input `x`: seconds of compute in a session made at once (onnxruntime stops
    a Loop between iterations when a run is terminated)."""
    f = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("MatMul", ["y_in", "w"], ["p"]), helper.make_node("Tanh", ["p"], ["y_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), helper.make_tensor_value_info("y_in", f, [n, n])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("y_out", f, [n, n])])
    init = [numpy_helper.from_array((np.random.default_rng(0).standard_normal((n, n)) / 16).astype(np.float32), "w"),
            numpy_helper.from_array(np.array(trips, np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "cond")]
    graph = helper.make_graph([helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)], "slow",
                              [helper.make_tensor_value_info("x", f, [n, n])],
                              [helper.make_tensor_value_info("y", f, [n, n])], init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@functools.cache
def add_mul() -> bytes:
    """Two float32 [2,3] inputs a, b; outputs sum = a + b and product = a * b."""
    f = TensorProto.FLOAT
    return _model([helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["product"])],
                  [helper.make_tensor_value_info("a", f, [2, 3]), helper.make_tensor_value_info("b", f, [2, 3])],
                  [helper.make_tensor_value_info("sum", f, [2, 3]), helper.make_tensor_value_info("product", f, [2, 3])])


@functools.cache
def _session(model: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def native(model: bytes, feeds: dict[str, tuple[TensorType, tuple, bytes]]) -> list[tuple[str, bytes]]:
    """Runs `model` in onnxruntime directly; returns each output's raw bytes."""
    sess = _session(model)
    values = {}
    for name, (ty, dims, data) in feeds.items():
        arr = np.frombuffer(data, DTYPES[ty]).reshape(dims) if data else np.zeros(dims, DTYPES[ty])
        if ty == TensorType.BF16:
            values[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(arr.view(np.uint16), ONNX_TYPES[ty])
        else:
            values[name] = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(arr))
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run_with_ort_values(names, values)
    result = []
    for name, v in zip(names, outs):
        if v.data_type() == "tensor(bfloat16)":  # numpy cannot hold it: read the raw buffer
            n = math.prod(v.shape()) * 2
            result.append((name, ctypes.string_at(v.data_ptr(), n) if n else b""))
        else:
            result.append((name, v.numpy().tobytes()))
    return result


@functools.cache
def small_cnn() -> bytes:
    """A real model in miniature, weights and all: float32 image [1,1,8,8] -> Conv,
    BatchNormalization, Relu, MaxPool, Flatten, Gemm, Softmax -> probabilities [1,3]."""
    from onnx import numpy_helper
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((4, 1, 3, 3)), "b": rng.standard_normal(4),
               "scale": np.ones(4), "bias": np.zeros(4), "mean": np.zeros(4), "var": np.ones(4),
               "fc": rng.standard_normal((3, 36)), "fc_b": np.zeros(3)}
    nodes = [helper.make_node("Conv", ["image", "w", "b"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fc_b"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

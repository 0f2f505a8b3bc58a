"""Small TFLite models built in code (no TensorFlow): LiteRT's own flatbuffer schema
classes pack them, and LiteRT's interpreter runs them natively for comparison."""
from __future__ import annotations

import functools

import numpy as np
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools.flatbuffer_utils import convert_object_to_bytearray

from wasinn import TensorType

TFLITE_TYPES = {TensorType.FP16: fb.TensorType.FLOAT16, TensorType.FP32: fb.TensorType.FLOAT32,
                TensorType.FP64: fb.TensorType.FLOAT64, TensorType.BF16: fb.TensorType.BFLOAT16,
                TensorType.U8: fb.TensorType.UINT8, TensorType.I32: fb.TensorType.INT32,
                TensorType.I64: fb.TensorType.INT64}
Op = fb.BuiltinOperator


class Builder:
    """One subgraph: tensors by index, constants in buffers, operators in order."""

    def __init__(self):
        self.model = fb.ModelT()
        self.model.version = 3
        self.model.operatorCodes, self.model.buffers = [], [fb.BufferT()]  # buffer 0: "no data"
        self.graph = fb.SubGraphT()
        self.graph.tensors, self.graph.operators = [], []
        self._codes: dict[int, int] = {}

    def tensor(self, name: str, ty: int, shape, data: np.ndarray | None = None) -> int:
        t = fb.TensorT()
        t.name, t.type, t.shape, t.buffer = name, ty, list(shape), 0
        if data is not None:
            buf = fb.BufferT()
            buf.data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            self.model.buffers.append(buf)
            t.buffer = len(self.model.buffers) - 1
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def const(self, name: str, array: np.ndarray) -> int:
        ty = {np.dtype("float32"): fb.TensorType.FLOAT32, np.dtype("int32"): fb.TensorType.INT32}[array.dtype]
        return self.tensor(name, ty, array.shape, array)

    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int = 0, options=None) -> None:
        if code not in self._codes:
            oc = fb.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            self.model.operatorCodes.append(oc)
            self._codes[code] = len(self.model.operatorCodes) - 1
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self._codes[code], inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.graph.operators.append(o)

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        self.graph.inputs, self.graph.outputs = inputs, outputs
        self.model.subgraphs = [self.graph]
        return bytes(convert_object_to_bytearray(self.model))


@functools.cache
def identity(ty: TensorType, shape: tuple[int, ...] = (2, 3)) -> bytes:
    """y = x (a RESHAPE to the same shape: TFLite has no identity operator)."""
    b = Builder()
    x = b.tensor("x", TFLITE_TYPES[ty], shape)
    y = b.tensor("y", TFLITE_TYPES[ty], shape)
    b.op(Op.RESHAPE, [x, b.const("shape", np.array(shape, np.int32))], [y])
    return b.finish([x], [y])


@functools.cache
def cast(src: TensorType, dst: TensorType, shape: tuple[int, ...] = (2, 3)) -> bytes:
    b = Builder()
    x = b.tensor("x", TFLITE_TYPES[src], shape)
    y = b.tensor("y", TFLITE_TYPES[dst], shape)
    b.op(Op.CAST, [x], [y])
    return b.finish([x], [y])


@functools.cache
def add_mul() -> bytes:
    """Two float32 [2,3] inputs a, b; outputs sum = a + b and product = a * b."""
    b = Builder()
    f = fb.TensorType.FLOAT32
    a, c = b.tensor("a", f, (2, 3)), b.tensor("b", f, (2, 3))
    s, p = b.tensor("sum", f, (2, 3)), b.tensor("product", f, (2, 3))
    b.op(Op.ADD, [a, c], [s], fb.BuiltinOptions.AddOptions, fb.AddOptionsT())
    b.op(Op.MUL, [a, c], [p], fb.BuiltinOptions.MulOptions, fb.MulOptionsT())
    return b.finish([a, c], [s, p])


@functools.cache
def dynamic_double() -> bytes:
    """float32 [?, 3] (a dynamic first axis) -> y = x + x."""
    b = Builder()
    f = fb.TensorType.FLOAT32
    x, y = b.tensor("x", f, (1, 3)), b.tensor("y", f, (1, 3))
    for t in (x, y):
        b.graph.tensors[t].shapeSignature = [-1, 3]
    b.op(Op.ADD, [x, x], [y], fb.BuiltinOptions.AddOptions, fb.AddOptionsT())
    return b.finish([x], [y])



def wide_sum(n: int) -> bytes:
    """float32 [1] tiled to [n], added to itself and summed: y = 2 * n * x, through two
    [n] float32 tensors of the interpreter's own (8n bytes of working memory per context)."""
    b = Builder()
    f = fb.TensorType.FLOAT32
    x, t1, t2, y = b.tensor("x", f, (1,)), b.tensor("t1", f, (n,)), b.tensor("t2", f, (n,)), b.tensor("y", f, (1,))
    b.op(Op.TILE, [x, b.const("multiples", np.array([n], np.int32))], [t1])
    b.op(Op.ADD, [t1, t1], [t2], fb.BuiltinOptions.AddOptions, fb.AddOptionsT())
    keep = fb.ReducerOptionsT()
    keep.keepDims = True
    b.op(Op.SUM, [t2, b.const("axis", np.array([0], np.int32))], [y], fb.BuiltinOptions.ReducerOptions, keep)
    return b.finish([x], [y])

@functools.cache
def unknown_operator() -> bytes:
    """A well-formed model whose one operator has a builtin code LiteRT does not know."""
    b = Builder()
    x, y = b.tensor("x", fb.TensorType.FLOAT32, (2,)), b.tensor("y", fb.TensorType.FLOAT32, (2,))
    b.op(250, [x], [y])
    return b.finish([x], [y])


@functools.cache
def tiny_classifier(side: int = 16, channels: int = 8, classes: int = 10, seed: int = 0) -> bytes:
    """float32 [1, side, side, 3] NHWC -> CONV_2D (3x3, stride 2, RELU6) -> DEPTHWISE_CONV_2D
    (3x3) -> MEAN over H, W -> FULLY_CONNECTED -> SOFTMAX: the layer kinds of
    EfficientNet-Lite, with fixed random weights."""
    rng = np.random.default_rng(seed)
    b = Builder()
    f = fb.TensorType.FLOAT32
    half = side // 2
    x = b.tensor("image", f, (1, side, side, 3))
    conv = b.tensor("conv", f, (1, half, half, channels))
    opts = fb.Conv2DOptionsT()
    opts.padding, opts.strideW, opts.strideH = fb.Padding.SAME, 2, 2
    opts.fusedActivationFunction = fb.ActivationFunctionType.RELU6
    b.op(Op.CONV_2D, [x, b.const("conv/w", rng.normal(0, 0.5, (channels, 3, 3, 3)).astype(np.float32)),
                      b.const("conv/b", rng.normal(0, 0.1, channels).astype(np.float32))],
         [conv], fb.BuiltinOptions.Conv2DOptions, opts)
    dw = b.tensor("depthwise", f, (1, half, half, channels))
    dopts = fb.DepthwiseConv2DOptionsT()
    dopts.padding, dopts.strideW, dopts.strideH, dopts.depthMultiplier = fb.Padding.SAME, 1, 1, 1
    dopts.fusedActivationFunction = fb.ActivationFunctionType.RELU6
    b.op(Op.DEPTHWISE_CONV_2D, [conv, b.const("dw/w", rng.normal(0, 0.5, (1, 3, 3, channels)).astype(np.float32)),
                                b.const("dw/b", rng.normal(0, 0.1, channels).astype(np.float32))],
         [dw], fb.BuiltinOptions.DepthwiseConv2DOptions, dopts)
    pooled = b.tensor("pooled", f, (1, channels))
    b.op(Op.MEAN, [dw, b.const("axes", np.array([1, 2], np.int32))], [pooled],
         fb.BuiltinOptions.ReducerOptions, fb.ReducerOptionsT())
    logits = b.tensor("logits", f, (1, classes))
    b.op(Op.FULLY_CONNECTED, [pooled, b.const("fc/w", rng.normal(0, 0.5, (classes, channels)).astype(np.float32)),
                              b.const("fc/b", rng.normal(0, 0.1, classes).astype(np.float32))],
         [logits], fb.BuiltinOptions.FullyConnectedOptions, fb.FullyConnectedOptionsT())
    probs = b.tensor("probabilities", f, (1, classes))
    sopts = fb.SoftmaxOptionsT()
    sopts.beta = 1.0
    b.op(Op.SOFTMAX, [logits], [probs], fb.BuiltinOptions.SoftmaxOptions, sopts)
    return b.finish([x], [probs, logits])


def native(model: bytes, inputs: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """Runs `model` in LiteRT's interpreter directly; returns each output by name."""
    interp = Interpreter(model_content=model)
    interp.allocate_tensors()
    for detail, value in zip(interp.get_input_details(), inputs):
        interp.set_tensor(detail["index"], value)
    interp.invoke()
    return [(d["name"], interp.get_tensor(d["index"]).copy()) for d in interp.get_output_details()]


@functools.cache
def add_chain(n: int) -> bytes:
    """x + x, n times over, each ADD into a tensor of its own: a model LiteRT takes long
    to build an interpreter for (~0.35 s per 100,000 ADDs natively), and small to run."""
    b, f = Builder(), fb.TensorType.FLOAT32
    prev = x = b.tensor("x", f, (1,))
    for i in range(n):
        y = b.tensor(f"t{i}", f, (1,))
        b.op(Op.ADD, [prev, prev], [y], fb.BuiltinOptions.AddOptions, fb.AddOptionsT())
        prev = y
    return b.finish([x], [prev])

"""Hostile models: small inputs that native parsers and runtimes turn into a crash, an
unbounded wait or unbounded memory. Each generator says what its model does and what it
did to the host before graphs from guest bytes ran in a confined worker (isolated.py).

The models are well-formed enough to get past the parsers' first checks; what they ask
for is the harm. ONNX through the `onnx` helper API, TFLite through LiteRT's own
flatbuffer schema (tflite_models.Builder, here with several subgraphs for IF and WHILE),
OpenVINO IR as XML written out by hand (no weights: the bombs are in the shapes).
"""
from __future__ import annotations

import functools
import struct

import numpy as np
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools.flatbuffer_utils import convert_object_to_bytearray
from onnx import TensorProto, helper

from support.tflite_models import Builder, Op

F = TensorProto.FLOAT


def _onnx(nodes, inputs, outputs, opset: int = 17, initializers=()) -> bytes:
    graph = helper.make_graph(nodes, "hostile", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]).SerializeToString()


def _ints(name: str, values) -> TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], list(values))


def _x(shape=(1,)):
    return helper.make_tensor_value_info("x", F, list(shape))


def _y(shape=(1,)):
    return helper.make_tensor_value_info("y", F, list(shape))


# --- ONNX ---------------------------------------------------------------------------------
@functools.cache
def onnx_constant_fold_bomb(elements: int = 1 << 29) -> bytes:
    """y = x + sum(c + c), c = ConstantOfShape([elements]): every input of c is a
    constant, so with onnxruntime's default optimizations constant folding builds c
    (2 GiB of float32 by default) and c + c while it creates the session, before any
    compute or deadline applies (in the worker the arena cap refuses it at compute).
    In process (about 200 bytes of model) this took the host past 2.5 GB of RSS in 2 s
    under --max-backend-memory 16MiB, and kept 1.1 GB after the instance closed."""
    nodes = [helper.make_node("Constant", [], ["shape"], value=_ints("s", [elements])),
             helper.make_node("ConstantOfShape", ["shape"], ["c"], value=helper.make_tensor("one", F, [1], [1.0])),
             helper.make_node("Add", ["c", "c"], ["d"]),
             helper.make_node("ReduceSum", ["d"], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"])]
    return _onnx(nodes, [_x()], [_y()])


@functools.cache
def onnx_expand_bomb(elements: int = 1 << 29) -> bytes:
    """y = sum(Expand(x, [elements])): a 4-byte input broadcast to 2 GiB at compute,
    an allocation sized by the model, not by any tensor the guest passed."""
    nodes = [helper.make_node("Constant", [], ["shape"], value=_ints("s", [elements])),
             helper.make_node("Expand", ["x", "shape"], ["e"]),
             helper.make_node("ReduceSum", ["e"], ["y"], keepdims=1)]
    return _onnx(nodes, [_x()], [_y()])


@functools.cache
def onnx_tile_bomb(repeats: int = 1 << 15) -> bytes:
    """Tile twice by `repeats` on two axes: a [1,1] input becomes repeats² floats (4 GiB
    by default) in one kernel."""
    nodes = [helper.make_node("Constant", [], ["r"], value=_ints("r", [repeats, repeats])),
             helper.make_node("Tile", ["x", "r"], ["t"]),
             helper.make_node("ReduceSum", ["t"], ["y"], keepdims=1)]
    return _onnx(nodes, [_x((1, 1))], [_y((1, 1))])


@functools.cache
def onnx_reshape_huge() -> bytes:
    """Reshape a 1-element input to [2^31, 2^31, 2^31]: the element count overflows 64
    bits unless the runtime checks its arithmetic."""
    big = 1 << 31
    nodes = [helper.make_node("Constant", [], ["shape"], value=_ints("s", [big, big, big])),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    return _onnx(nodes, [_x()], [helper.make_tensor_value_info("y", F, None)])


@functools.cache
def onnx_loop_forever(trip_count: int = (1 << 63) - 1) -> bytes:
    """Loop with a trip count of 2^63-1 and a body that is one Identity: compute never
    ends on its own, and onnxruntime checks its terminate flag only between nodes of the
    outer graph, i.e. never during the Loop."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_in", F, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", F, [1])])
    trips = helper.make_tensor("m", TensorProto.INT64, [], [trip_count])
    nodes = [helper.make_node("Constant", [], ["m"], value=trips),
             helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
             helper.make_node("Loop", ["m", "c", "x"], ["y"], body=body)]
    return _onnx(nodes, [_x()], [_y()])


@functools.cache
def onnx_long_conv(channels: int = 128, side: int = 256, kernel: int = 31, as_snapshot: bool = False) -> bytes:
    """One Conv node of ~3e12 multiply-adds on a 4-byte input (Expand makes the image,
    ConstantOfShape the weights): tens of seconds inside a single kernel, where
    onnxruntime's terminate flag is never looked at. Before isolation: 25 s under
    --deadline 2s. `as_snapshot`: behind the snapshot operator's names (a uint8 HWC
    `image` in, its mean the 4-byte input; `ranked` out)."""
    nodes = [helper.make_node("Constant", [], ["shape"], value=_ints("s", [1, channels, side, side])),
             helper.make_node("Expand", ["x", "shape"], ["expanded"]),
             helper.make_node("Constant", [], ["wshape"], value=_ints("w", [channels, channels, kernel, kernel])),
             helper.make_node("ConstantOfShape", ["wshape"], ["w"], value=helper.make_tensor("v", F, [1], [0.001])),
             helper.make_node("Conv", ["expanded", "w"], ["conv"]),
             helper.make_node("ReduceSum", ["conv"], ["ranked" if as_snapshot else "y"], keepdims=0)]
    if not as_snapshot:
        return _onnx(nodes, [_x()], [helper.make_tensor_value_info("y", F, [])])
    nodes[:0] = [helper.make_node("Cast", ["image"], ["pixels"], to=F),
                 helper.make_node("ReduceMean", ["pixels"], ["x"], keepdims=0)]
    return _onnx(nodes, [helper.make_tensor_value_info("image", TensorProto.UINT8, [None, None, 3])],
                 [helper.make_tensor_value_info("ranked", F, [])])


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (the wire format, by hand: the Python
    protobuf runtime refuses to build messages nested past 100 levels)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


@functools.cache
def onnx_nested_if(depth: int = 1000) -> bytes:
    """If inside If inside If ... `depth` deep (about 40 bytes a level): parsers and graph
    resolvers that recurse per level meet more levels than they have stack for."""
    def leaf(out: str) -> bytes:
        return helper.make_graph([helper.make_node("Identity", ["x"], [out])], "leaf", [],
                                 [helper.make_tensor_value_info(out, F, [1])]).SerializeToString()

    def branch(name: str, graph: bytes) -> bytes:  # AttributeProto: name, g, type = GRAPH
        return _field(1, name.encode()) + _field(6, graph) + bytes([0xA0, 0x01, 5])

    def if_node(then: bytes) -> bytes:  # NodeProto: input, output, op_type, attributes
        return (_field(1, b"cond") + _field(2, b"y") + _field(4, b"If")
                + _field(5, branch("then_branch", then)) + _field(5, branch("else_branch", leaf("y"))))

    inner = leaf("y")
    output = _field(12, _y().SerializeToString())
    for _ in range(depth):  # only the then-branch nests: both would double the model per level
        inner = _field(1, if_node(inner)) + _field(2, b"g") + output  # GraphProto: node, name, output
    entry = helper.make_graph(
        [helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True]))],
        "hostile", [_x()], [_y()])
    model = helper.make_model(entry, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    # the model's graph (field 7) gains one more node: the outermost If
    graph = entry.SerializeToString()
    return model.replace(_field(7, graph), _field(7, graph + _field(1, if_node(inner))))


# --- TFLite -------------------------------------------------------------------------------
class Subgraphs(Builder):
    """A Builder of several subgraphs (the first is the model's entry), for IF and WHILE:
    `close` ends the current one and starts the next; tensor indices are per subgraph."""

    def __init__(self):
        super().__init__()
        self.closed: list = []

    def close(self, inputs: list[int], outputs: list[int]) -> None:
        self.graph.inputs, self.graph.outputs = inputs, outputs
        self.closed.append(self.graph)
        self.graph = fb.SubGraphT()
        self.graph.tensors, self.graph.operators = [], []

    def finish(self) -> bytes:  # every subgraph closed, the entry first
        self.model.subgraphs = self.closed
        return bytes(convert_object_to_bytearray(self.model))


def _if(b: Subgraphs, then: int, otherwise: int) -> None:
    """One subgraph: y = IF(true, x) with the given branches, for float32 [1] x, y."""
    f = fb.TensorType.FLOAT32
    x, y = b.tensor("x", f, (1,)), b.tensor("y", f, (1,))
    cond = b.tensor("cond", fb.TensorType.BOOL, (1,), np.array([True]))
    opts = fb.IfOptionsT()
    opts.thenSubgraphIndex, opts.elseSubgraphIndex = then, otherwise
    b.op(Op.IF, [cond, x], [y], fb.BuiltinOptions.IfOptions, opts)
    b.close([x], [y])


def _while(b: Subgraphs, cond: int, body: int) -> None:
    f = fb.TensorType.FLOAT32
    x, y = b.tensor("x", f, (1,)), b.tensor("y", f, (1,))
    opts = fb.WhileOptionsT()
    opts.condSubgraphIndex, opts.bodySubgraphIndex = cond, body
    b.op(Op.WHILE, [x], [y], fb.BuiltinOptions.WhileOptions, opts)
    b.close([x], [y])


def _below_two(b: Subgraphs) -> None:
    """A WHILE condition subgraph: x < 2."""
    x = b.tensor("x", fb.TensorType.FLOAT32, (1,))
    c = b.tensor("c", fb.TensorType.BOOL, (1,))
    b.op(Op.LESS, [x, b.const("two", np.array([2.0], np.float32))], [c])
    b.close([x], [c])


def _plus_zero(b: Subgraphs) -> None:
    """A WHILE body subgraph: x + 0 (x never changes)."""
    f = fb.TensorType.FLOAT32
    x, y = b.tensor("x", f, (1,)), b.tensor("y", f, (1,))
    b.op(Op.ADD, [x, b.const("zero", np.array([0.0], np.float32))], [y], fb.BuiltinOptions.AddOptions, fb.AddOptionsT())
    b.close([x], [y])


@functools.cache
def tflite_recursive(via: str = "if") -> bytes:
    """Subgraph 0 IFs into subgraph 1, whose IF (or WHILE body) leads back to 0: LiteRT
    prepares a control-flow op's subgraphs recursively as the interpreter is built, so
    the cycle recurses until the stack runs out. About 600 bytes; before isolation the
    host process died of SIGSEGV in `graph.load`."""
    b = Subgraphs()
    _if(b, 1, 1)
    if via == "if":
        _if(b, 0, 0)
    else:
        _while(b, 2, 0)
        _below_two(b)
    return b.finish()


@functools.cache
def tflite_while_forever() -> bytes:
    """WHILE x < 2: x = x + 0, for x = 1: LiteRT's interpreter has no way to stop an
    invoke from outside, so before isolation `compute` never returned (the guest's
    epoch deadline cannot interrupt native code)."""
    b = Subgraphs()
    _while(b, 1, 2)
    _below_two(b)
    _plus_zero(b)
    return b.finish()


@functools.cache
def tflite_doubling_while() -> bytes:
    """WHILE min(x) < 2: x = CONCATENATION(x, x): a dynamic tensor that doubles each turn,
    allocated by LiteRT with malloc as it resizes (no arena, no plan to check)."""
    b = Subgraphs()
    f = fb.TensorType.FLOAT32
    dynamic = [-1]

    def tensor(name: str, ty: int = f) -> int:
        t = b.tensor(name, ty, (1,))
        b.graph.tensors[t].shapeSignature = dynamic
        return t
    x, y = tensor("x"), tensor("y")
    opts = fb.WhileOptionsT()
    opts.condSubgraphIndex, opts.bodySubgraphIndex = 1, 2
    b.op(Op.WHILE, [x], [y], fb.BuiltinOptions.WhileOptions, opts)
    b.close([x], [y])
    x, c = tensor("x"), b.tensor("c", fb.TensorType.BOOL, ())
    b.op(Op.REDUCE_MIN, [x, b.const("axis", np.array([0], np.int32))], [b.tensor("m", f, ())],
         fb.BuiltinOptions.ReducerOptions, fb.ReducerOptionsT())
    b.op(Op.LESS, [len(b.graph.tensors) - 1, b.const("two", np.array(2.0, np.float32))], [c])
    b.close([x], [c])
    x, y = tensor("x"), tensor("y")
    copts = fb.ConcatenationOptionsT()
    copts.axis = 0
    b.op(Op.CONCATENATION, [x, x], [y], fb.BuiltinOptions.ConcatenationOptions, copts)
    b.close([x], [y])
    return b.finish()


def tflite_huge_shape(side: int = 1 << 15) -> bytes:
    """y = x + big, `big` a float32 [side, side] tensor (4 GiB): its element count
    overflows LiteRT's int32 shape arithmetic, where wasinn once multiplied it."""
    b = Builder()
    f = fb.TensorType.FLOAT32
    x, big, y = b.tensor("x", f, (1,)), b.tensor("big", f, (side, side)), b.tensor("y", f, (1,))
    b.op(Op.ADD, [x, big], [y], fb.BuiltinOptions.AddOptions, fb.AddOptionsT())
    return b.finish([x], [y])


# --- OpenVINO IR ---------------------------------------------------------------------------
def _ir(layers: str, edges: str, weights: bytes = b"") -> tuple[bytes, bytes]:
    xml = f"""<?xml version="1.0"?>
<net name="hostile" version="11">
<layers>{layers}</layers>
<edges>{edges}</edges>
</net>"""
    return xml.encode(), weights


def _parameter(lid: int, shape: str = "1") -> str:
    dims = "".join(f"<dim>{d}</dim>" for d in shape.split(","))
    return (f'<layer id="{lid}" name="x" type="Parameter" version="opset1"><data shape="{shape}" element_type="f32"/>'
            f'<output><port id="0" precision="FP32" names="x">{dims}</port></output></layer>')


def _result(lid: int, dims: str) -> str:
    return (f'<layer id="{lid}" name="y" type="Result" version="opset1"><input><port id="0" precision="FP32">'
            f'{dims}</port></input></layer>')


@functools.cache
def ir_broadcast_bomb(elements: int = 1 << 30) -> tuple[bytes, bytes]:
    """Broadcast(x, [elements]) then ReduceSum, the target shape a constant in 16 bytes
    of weights: OpenVINO sizes a 4 GiB tensor from them."""
    layers = (_parameter(0)
              + '<layer id="1" name="shape" type="Const" version="opset1"><data element_type="i64" shape="1" '
                'offset="0" size="8"/><output><port id="0" precision="I64"><dim>1</dim></port>'
                '</output></layer>'
              + f'<layer id="2" name="b" type="Broadcast" version="opset3"><data mode="numpy"/><input>'
                f'<port id="0" precision="FP32"><dim>1</dim></port><port id="1" precision="I64"><dim>1</dim></port>'
                f'</input><output><port id="2" precision="FP32"><dim>{elements}</dim></port></output></layer>'
              + '<layer id="3" name="axes" type="Const" version="opset1"><data element_type="i64" shape="1" '
                'offset="8" size="8"/><output><port id="0" precision="I64"><dim>1</dim></port></output></layer>'
              + f'<layer id="4" name="s" type="ReduceSum" version="opset1"><data keep_dims="true"/><input>'
                f'<port id="0" precision="FP32"><dim>{elements}</dim></port><port id="1" precision="I64"><dim>1</dim>'
                f'</port></input><output><port id="2" precision="FP32" names="y"><dim>1</dim></port></output></layer>'
              + _result(5, "<dim>1</dim>"))
    edges = ('<edge from-layer="0" from-port="0" to-layer="2" to-port="0"/>'
             '<edge from-layer="1" from-port="0" to-layer="2" to-port="1"/>'
             '<edge from-layer="2" from-port="2" to-layer="4" to-port="0"/>'
             '<edge from-layer="3" from-port="0" to-layer="4" to-port="1"/>'
             '<edge from-layer="4" from-port="2" to-layer="5" to-port="0"/>')
    return _ir(layers, edges, struct.pack("<qq", elements, 0))


@functools.cache
def ir_cycle() -> tuple[bytes, bytes]:
    """Two Relu layers feeding each other (and a Parameter feeding neither): a graph
    with a cycle, which a reader that walks producers recursively never leaves."""
    relu = ('<layer id="{i}" name="r{i}" type="Relu" version="opset1"><input><port id="0" precision="FP32">'
            '<dim>1</dim></port></input><output><port id="1" precision="FP32"><dim>1</dim></port></output></layer>')
    layers = _parameter(0) + relu.format(i=1) + relu.format(i=2) + _result(3, "<dim>1</dim>")
    edges = ('<edge from-layer="1" from-port="1" to-layer="2" to-port="0"/>'
             '<edge from-layer="2" from-port="1" to-layer="1" to-port="0"/>'
             '<edge from-layer="2" from-port="1" to-layer="3" to-port="0"/>')
    return _ir(layers, edges)


@functools.cache
def ir_enormous(layers: int = 20_000) -> tuple[bytes, bytes]:
    """A chain of `layers` Relus (about 5 MB of XML): every layer becomes a node object
    and a pass over it, so reading and compiling it costs memory and time out of all
    proportion to anything a guest computes."""
    relu = ('<layer id="{i}" name="r{i}" type="Relu" version="opset1"><input><port id="0" precision="FP32">'
            '<dim>1</dim></port></input><output><port id="1" precision="FP32"><dim>1</dim></port></output></layer>')
    body = _parameter(0) + "".join(relu.format(i=i) for i in range(1, layers + 1)) + _result(layers + 1, "<dim>1</dim>")
    edges = "".join(f'<edge from-layer="{i}" from-port="{0 if i == 0 else 1}" to-layer="{i + 1}" to-port="0"/>'
                    for i in range(layers + 1))
    return _ir(body, edges)


# --- the corpus -----------------------------------------------------------------------------
# name -> (the builders, the encoding a guest names, the input's shape)
CASES = {
    "tflite-recursive-if": (lambda: [tflite_recursive("if")], "tensorflowlite", (1,)),
    "tflite-recursive-while": (lambda: [tflite_recursive("while")], "tensorflowlite", (1,)),
    "tflite-while-forever": (lambda: [tflite_while_forever()], "tensorflowlite", (1,)),
    "tflite-doubling-while": (lambda: [tflite_doubling_while()], "tensorflowlite", (1,)),
    "tflite-huge-shape": (lambda: [tflite_huge_shape()], "tensorflowlite", (1,)),
    "onnx-constant-fold": (lambda: [onnx_constant_fold_bomb()], "onnx", (1,)),
    "onnx-expand": (lambda: [onnx_expand_bomb()], "onnx", (1,)),
    "onnx-tile": (lambda: [onnx_tile_bomb()], "onnx", (1, 1)),
    "onnx-reshape-huge": (lambda: [onnx_reshape_huge()], "onnx", (1,)),
    "onnx-loop-forever": (lambda: [onnx_loop_forever()], "onnx", (1,)),
    "onnx-long-conv": (lambda: [onnx_long_conv()], "onnx", (1,)),
    "onnx-nested-if": (lambda: [onnx_nested_if()], "onnx", (1,)),
    "ir-broadcast": (lambda: list(ir_broadcast_bomb()), "openvino", (1,)),
    "ir-cycle": (lambda: list(ir_cycle()), "openvino", (1,)),
    "ir-enormous": (lambda: list(ir_enormous()), "openvino", (1,)),
}


"""The bundled image classifier: image preprocessing, the network, softmax and ranking in one ONNX graph.

`compose` puts a front in front of a square-input classifier (models/efficientnet-lite0)
so that a guest passes the raw pixels of one photo and gets class probabilities back:

    image          uint8 [H, W, 3]  RGB, HWC, any H and W >= 1
    probabilities  float32 [1, N]   softmax of the network's logits (output 0)
    ranked         float32 [2, N]   row 0: the probabilities, largest first (ties: the
                                    lower class first); row 1: their class indices,
                                    exact as float32 below 2**24 (output 1)

Inside the graph the image is center-cropped to its largest square, resized to the
network's side with antialiased bilinear filtering, mapped by (x - 127) / 128, turned
into NCHW with a batch of one, classified, softmaxed and ranked. Doing this in the graph
keeps per-pixel and per-class work out of the guest, where Python runs in an
interpreter compiled to wasm: ranking 1,000 scores there cost ~0.3 ms a photo (unpack,
sort, index scans), TopK in onnxruntime ~0.02 ms. One [2, N] tensor rather than TopK's
two outputs saves the guest a handle and a `data()` call.

`reference_preprocess` is the same recipe done with Pillow, the one the published scores
of the bundled model come from; tests and benchmarks compare the graph against it.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

IMAGE = "image"
PROBABILITIES = "probabilities"
RANKED = "ranked"
PIXEL_OFFSET = 127.0
PIXEL_SCALE = 128.0

# Resize gains `antialias` (and `axes`) at opset 18.
_MIN_OPSET = 18
# Prefix for every name the front adds, so none can collide with the network's names.
_PREFIX = "preprocess/"


def compose(base_model: bytes, *, labels_count: int = 1000) -> bytes:
    """Return the serialized classifier built around `base_model`.

    `base_model` must be an ONNX classifier with one float32 input [1, 3, S, S] (NCHW
    RGB, already normalized by (x - 127) / 128) and one float32 output [1, labels_count]
    of logits. Raises ValueError when it is not.
    """
    if not 1 <= labels_count < 1 << 24:
        raise ValueError(f"labels_count must be 1 to 2**24 - 1 (class indices are float32 in {RANKED!r}), "
                         f"not {labels_count}")
    base = onnx.load_model_from_string(base_model)
    net_input, side = _check_base(base, labels_count)
    base = _at_least_opset(base, _MIN_OPSET)
    net_output = base.graph.output[0].name

    consts, front = _front(net_input, side)
    consts.append(numpy_helper.from_array(np.array([labels_count], np.int64), _PREFIX + "classes"))
    back = [helper.make_node("Softmax", [net_output], [PROBABILITIES], axis=-1, name=_PREFIX + "softmax"),
            helper.make_node("TopK", [PROBABILITIES, _PREFIX + "classes"],
                             [_PREFIX + "sorted", _PREFIX + "order"], axis=-1, largest=1, sorted=1,
                             name=_PREFIX + "rank"),
            helper.make_node("Cast", [_PREFIX + "order"], [_PREFIX + "order_f"], to=TensorProto.FLOAT,
                             name=_PREFIX + "order_f"),
            helper.make_node("Concat", [_PREFIX + "sorted", _PREFIX + "order_f"], [RANKED], axis=0,
                             name=_PREFIX + "ranked")]

    added = {IMAGE, *(t.name for t in consts), *(o for n in [*front, *back] for o in n.output)}
    clashes = added & (_names(base.graph) - {net_input})
    if clashes:
        raise ValueError(f"the base model already uses names the classifier adds: {sorted(clashes)}")

    graph = helper.make_graph(
        [*front, *base.graph.node, *back],
        "classifier",
        [helper.make_tensor_value_info(IMAGE, TensorProto.UINT8, ["height", "width", 3])],
        [helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, [1, labels_count]),
         helper.make_tensor_value_info(RANKED, TensorProto.FLOAT, [2, labels_count])],
        initializer=[*consts, *base.graph.initializer],
        value_info=[v for v in base.graph.value_info if v.name != net_output],
    )
    graph.sparse_initializer.extend(base.graph.sparse_initializer)
    opsets = list(base.opset_import)
    model = helper.make_model(
        graph, opset_imports=opsets,
        ir_version=max(base.ir_version, helper.find_min_ir_version_for(opsets)),
        producer_name="wasinn.apps.classifier_model",
        doc_string=(f"uint8 [H, W, 3] RGB image -> center crop, antialiased bilinear resize to "
                    f"{side}x{side}, (x - {PIXEL_OFFSET:g}) / {PIXEL_SCALE:g}, NCHW -> network -> "
                    f"softmax -> ranking. Outputs: {PROBABILITIES} [1, {labels_count}], {RANKED} [2, {labels_count}] "
                    f"(the probabilities largest first, then their class indices as float32)."),
    )
    model.functions.extend(base.functions)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def compose_file(base_path: str | os.PathLike, out_path: str | os.PathLike, *, labels_count: int = 1000) -> None:
    """`compose` from one file to another."""
    with open(base_path, "rb") as f:
        composed = compose(f.read(), labels_count=labels_count)
    with open(out_path, "wb") as f:
        f.write(composed)


def reference_preprocess(rgb_uint8_hwc: np.ndarray, *, size: int = 224) -> np.ndarray:
    """The Pillow recipe the graph's front reproduces: uint8 [H, W, 3] -> float32 [1, 3, size, size]."""
    from PIL import Image

    rgb = np.asarray(rgb_uint8_hwc)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] RGB array, got {rgb.dtype} {list(rgb.shape)}")
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(np.ascontiguousarray(rgb[top:top + side, left:left + side]))
    # Pillow's BILINEAR widens its filter when it downscales, i.e. it antialiases.
    resized = np.asarray(square.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.ascontiguousarray(((resized - PIXEL_OFFSET) / PIXEL_SCALE).transpose(2, 0, 1)[np.newaxis])


def _check_base(base: onnx.ModelProto, labels_count: int) -> tuple[str, int]:
    initialized = {t.name for t in base.graph.initializer}
    inputs = [v for v in base.graph.input if v.name not in initialized]
    outputs = list(base.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"the base model must have one input and one output, "
                         f"not {len(inputs)} and {len(outputs)}")
    (net_input,), (net_output,) = inputs, outputs
    in_dims = _dims(net_input)
    if (_elem_type(net_input) != TensorProto.FLOAT or len(in_dims) != 4 or in_dims[:2] != [1, 3]
            or not isinstance(in_dims[2], int) or in_dims[2] != in_dims[3]):
        raise ValueError(f"the base model's input must be float32 [1, 3, S, S], "
                         f"not {_describe(net_input)}")
    out_dims = _dims(net_output)
    if _elem_type(net_output) != TensorProto.FLOAT or len(out_dims) != 2 or out_dims[1] != labels_count:
        raise ValueError(f"the base model's output must be float32 [1, {labels_count}], "
                         f"not {_describe(net_output)}")
    return net_input.name, in_dims[2]


def _at_least_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= version:
        return model
    # The converter rewrites the few ops whose semantics moved between the two opsets
    # (for EfficientNet-Lite0, 17 -> 18 changes none: Pad-18 only adds an optional input).
    return version_converter.convert_version(model, version)


def _front(net_input: str, side: int) -> tuple[list[TensorProto], list[onnx.NodeProto]]:
    def const(name: str, value) -> str:
        consts.append(numpy_helper.from_array(np.asarray(value), _PREFIX + name))
        return _PREFIX + name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [_PREFIX + output], name=_PREFIX + output, **attrs))
        return _PREFIX + output

    consts: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    hw = node("Shape", [IMAGE], "hw", start=0, end=2)
    crop_side = node("ReduceMin", [hw], "side", keepdims=1)
    start = node("Div", [node("Sub", [hw, crop_side], "margins"), const("two", np.int64(2))], "start")
    end = node("Add", [start, crop_side], "end")
    square = node("Slice", [IMAGE, start, end, const("hw_axes", np.array([0, 1], np.int64))], "square")
    # Resizing the uint8 image (not a float copy) makes onnxruntime use Pillow's integer
    # two-pass scheme, rounding between the horizontal and vertical pass as Pillow does.
    # exclude_outside=1 drops the filter taps that fall off the edge and renormalizes the
    # rest, as Pillow does; the default (0) clamps them to the edge pixel instead, which
    # moves border pixels by up to 7 levels. half_pixel is Pillow's sampling grid;
    # pytorch_half_pixel and half_pixel_symmetric give identical pixels for these sizes.
    resized = node("Resize", [square, "", "", const("size", np.array([side, side], np.int64))], "resized",
                   mode="linear", antialias=1, exclude_outside=1, axes=[0, 1],
                   coordinate_transformation_mode="half_pixel")
    pixels = node("Cast", [resized], "pixels", to=TensorProto.FLOAT)
    centred = node("Sub", [pixels, const("offset", np.float32(PIXEL_OFFSET))], "centred")
    scaled = node("Div", [centred, const("scale", np.float32(PIXEL_SCALE))], "scaled")
    chw = node("Transpose", [scaled], "chw", perm=[2, 0, 1])
    nodes.append(helper.make_node("Unsqueeze", [chw, const("batch_axis", np.array([0], np.int64))], [net_input],
                                  name=_PREFIX + "batch"))
    return consts, nodes


def _names(graph: onnx.GraphProto) -> set[str]:
    names = {t.name for t in graph.initializer} | {v.name for v in graph.input}
    for n in graph.node:
        names.update(n.input)
        names.update(n.output)
    return names - {""}


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value.type.tensor_type.shape.dim]


def _elem_type(value: onnx.ValueInfoProto) -> int:
    return value.type.tensor_type.elem_type


def _describe(value: onnx.ValueInfoProto) -> str:
    return f"{TensorProto.DataType.Name(_elem_type(value)).lower()} {_dims(value)}"

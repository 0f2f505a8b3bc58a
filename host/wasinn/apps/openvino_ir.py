"""The classifier model as OpenVINO IR, for wasi:nn hosts that serve OpenVINO (the
wasmtime CLI's `-S nn-graph=openvino::DIR`). Needs the `openvino` package.

OpenVINO reads the composed ONNX model (wasinn.apps.classifier_model), but its CPU plugin
computes the front's Resize (linear, antialias=1) as a plain bilinear resize without
the antialiasing filter: on the three sample photos the 224x224 pixels end up to 71
grey levels away from Pillow's. The IR therefore replaces that Interpolate with
OpenVINO's own `bilinear_pillow` mode (Pillow's filter, always antialiased), applied
to a [1, H, W, 3] view because the mode computes garbage on a rank-3 tensor; that
lands within 1 grey level of Pillow, as onnxruntime does.
"""
from __future__ import annotations

import os
import pathlib

from ..errors import WasinnError


def _openvino():
    try:
        import openvino
    except ImportError:
        raise WasinnError("the OpenVINO IR needs the openvino package (pip install 'wasinn[openvino]')") from None
    return openvino


def convert(onnx_model: pathlib.Path):
    """The composed classifier (an ONNX file) as an `openvino.Model`, resize fixed."""
    ov = _openvino()
    from openvino import opset11

    model = ov.convert_model(str(onnx_model))
    resizes = [op for op in model.get_ordered_ops()
               if op.get_type_name() == "Interpolate" and op.get_attributes().get("antialias")]
    if len(resizes) != 1:
        raise WasinnError(f"{onnx_model}: expected one antialiased resize (the classifier's front), "
                          f"found {len(resizes)}")
    (resize,) = resizes
    image, sizes, *axes = (resize.input_value(i) for i in range(resize.get_input_size()))
    axes = axes[0].get_node() if axes else None
    if (resize.get_attributes()["mode"] != "linear_onnx" or image.get_partial_shape().rank.get_length() != 3
            or axes is None or axes.get_type_name() != "Constant" or list(axes.get_vector()) != [0, 1]):
        raise WasinnError(f"{onnx_model}: the antialiased resize is not the classifier front's "
                          f"(bilinear over the first two axes of [H, W, C])")
    batch_axis = opset11.constant([0], dtype=ov.Type.i64)
    pillow = opset11.interpolate(opset11.unsqueeze(image, batch_axis), sizes, mode="bilinear_pillow",
                                 shape_calculation_mode="sizes",
                                 axes=opset11.constant([1, 2], dtype=ov.Type.i64))
    resize.output(0).replace(opset11.squeeze(pillow, batch_axis).output(0))
    model.validate_nodes_and_infer_types()
    return model


def write_graph_dir(onnx_model: pathlib.Path, directory: pathlib.Path) -> pathlib.Path:
    """The composed classifier, resize fixed, in the layout `-S nn-graph=openvino::DIRECTORY`
    reads: DIRECTORY/model.xml + model.bin."""
    return _save(convert(onnx_model), directory)


def write_model_dir(onnx_model: pathlib.Path, directory: pathlib.Path) -> pathlib.Path:
    """Any ONNX model as OpenVINO converts it, in the same layout (for models whose
    operations OpenVINO computes as onnxruntime does)."""
    return _save(_openvino().convert_model(str(onnx_model)), directory)


def _save(model, directory: pathlib.Path) -> pathlib.Path:
    directory.mkdir(parents=True, exist_ok=True)
    # full-precision weights: save_model would otherwise store them as float16
    _openvino().save_model(model, str(directory / "model.xml"), compress_to_fp16=False)
    return directory


def library_path(directory: pathlib.Path) -> str:
    """LD_LIBRARY_PATH for wasmtime's OpenVINO backend. It opens `libopenvino_c.so`,
    while the openvino wheel ships only versioned files (libopenvino_c.so.2641): this
    puts unversioned links to them in `directory`, then the wheel's libs directory,
    where those libraries find their own dependencies and plugins."""
    libs = pathlib.Path(_openvino().__file__).parent / "libs"
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("libopenvino_c.so", "libopenvino.so"):
        versioned = sorted(libs.glob(f"{name}.*"))
        if not versioned:
            raise WasinnError(f"the openvino package has no {name}.* in {libs}")
        link = directory / name
        link.unlink(missing_ok=True)
        link.symlink_to(versioned[-1])
    return f"{directory}{os.pathsep}{libs}"

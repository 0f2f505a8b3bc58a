"""Writes model.onnx beside this file: the "adder" of the README's "Writing a guest".

One node, `sum = a + b`, over float32 vectors of any length (inputs `a` and `b`,
output `sum`). Made here with onnx's helper functions, not trained or downloaded.

    .venv/bin/python models/adder/make.py
"""
import pathlib

import onnx
from onnx import TensorProto, helper


def adder() -> onnx.ModelProto:
    vector = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n"])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"])], "adder",
                              [vector("a"), vector("b")], [vector("sum")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="wasinn")
    model.ir_version = 8  # what onnxruntime 1.20 and later read
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    out = pathlib.Path(__file__).resolve().parent / "model.onnx"
    out.write_bytes(adder().SerializeToString())
    print(f"wrote {out}")

"""`wasinn model check` and `wasinn model optimize` on the bundled model and on small
models built to trip each check."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from support import models
from support.repo import ROOT
from wasinn.modelprep.check import RUNNABLE, check
from wasinn.modelprep.optimize import optimize

BUNDLED = ROOT / "models" / "efficientnet-lite0" / "model.onnx"


def wasinn_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wasinn", *args], capture_output=True, text=True, timeout=300)


def save(tmp_path, name: str, nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


def test_check_passes_the_bundled_model():
    proc = wasinn_cli("model", "check", str(BUNDLED))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = lines(proc.stdout)
    assert "ok size 18.6 MB of a 50 MB budget" in out
    assert "opset ai.onnx 17 (IR version 8)" in out
    assert "inputs input FP32 [1, 3, 224, 224]" in out and "outputs logits FP32 [1, 1000]" in out
    assert "single input/output yes: one float32 or uint8 input, one output" in out
    assert "ok operators 13 operators in 450 nodes; onnxruntime's CPU provider runs every one" in out
    assert out[-1] == "ready for the edge"

    report = json.loads(wasinn_cli("model", "check", str(BUNDLED), "--json").stdout)
    assert report["ok"] and report["size"] == BUNDLED.stat().st_size
    assert {o["how"] for o in report["operators"]} <= set(RUNNABLE)
    assert report["description"]["inputs"][0]["shape"] == [1, 3, 224, 224]


def test_check_fails_a_model_over_budget():
    proc = wasinn_cli("model", "check", str(BUNDLED), "--budget", "10")
    assert proc.returncode == 1
    assert "FAIL size 18.6 MB of a 10 MB budget" in lines(proc.stdout)
    assert lines(proc.stdout)[-1] == "NOT ready: see FAIL above"


def test_check_names_operators_onnxruntime_cannot_run(tmp_path):
    path = save(tmp_path, "decoder.onnx", [helper.make_node("ImageDecoder", ["x"], ["y"])],
                [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n"])],
                [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], opset=20)
    proc = wasinn_cli("model", "check", str(path))
    assert proc.returncode == 1
    out = lines(proc.stdout)
    assert "FAIL operators 1 operator in 1 node; 1 without an onnxruntime CPU implementation:" in out
    assert "ImageDecoder-20 (1 node): no onnxruntime CPU kernel for this operator version" in out
    assert any(line.startswith("FAIL loads") and "Could not find an implementation for ImageDecoder" in line
               for line in out)


def test_check_follows_element_types_functions_and_subgraphs(tmp_path):
    """Conv has no float16 CPU kernel (onnxruntime computes it in float32), HardSwish
    runs as its ONNX function, and nodes inside an If branch are checked too."""
    w = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float16), "w")
    branch = helper.make_graph([helper.make_node("HardSwish", ["y"], ["z"])], "then", [],
                               [helper.make_tensor_value_info("z", TensorProto.FLOAT16, None)])
    path = save(tmp_path, "fp16.onnx",
                [helper.make_node("Conv", ["x", "w"], ["y"]),
                 helper.make_node("If", ["flag"], ["out"], then_branch=branch, else_branch=branch)],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 3, 8, 8]),
                 helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                [helper.make_tensor_value_info("out", TensorProto.FLOAT16, None)], [w])
    report = check(path)
    how = {o.op_type: o.how for o in report.operators}
    assert how == {"Conv": "float32 casts", "HardSwish": "function", "If": "kernel"}
    assert not report.ok  # `flag` is a bool, which wasi:nn cannot carry
    failed = [f for f in report.findings if f.ok is False]
    assert [(f.topic, f.detail) for f in failed] == [("wasi:nn types", "no wasi:nn tensor type for 'flag'")]


def test_check_refuses_what_is_not_a_model(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    proc = wasinn_cli("model", "check", str(tmp_path / "junk.onnx"))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("wasinn: error: ") and "is not an ONNX model" in proc.stderr


def test_optimize_the_bundled_model_keeps_its_answers(tmp_path):
    out = tmp_path / "opt.onnx"
    proc = wasinn_cli("model", "optimize", str(BUNDLED), "-o", str(out), "--runs", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = lines(proc.stdout)
    nodes = next(line for line in text if line.startswith("nodes ")).split()
    assert int(nodes[3]) < int(nodes[1]) == 450  # constant folding removes the pad arithmetic
    assert "top-1 3/3 unchanged: ok" in text and text[-1] == f"wrote {out}"
    assert wasinn_cli("model", "check", str(out)).returncode == 0


def test_quantizing_the_bundled_model_shrinks_it_and_keeps_top1(tmp_path):
    report = optimize(BUNDLED, tmp_path / "q.onnx", quantize="uint8", runs=2)
    assert report.ok and report.written and (tmp_path / "q.onnx").is_file()
    assert report.size.after < 0.3 * report.size.before
    assert report.tolerance is None and report.top1_same == report.top1_total == 3


def test_a_quantized_model_that_changes_answers_is_not_written(tmp_path):
    """Two classes 0.1% apart fall on one 8-bit weight level: quantized, they tie."""
    w = numpy_helper.from_array(np.array([[1.0, 1.001, -10.0]] * 4, np.float32), "w")
    path = save(tmp_path, "close.onnx", [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("MatMul", ["a", "w"], ["y"])],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [w])
    out = tmp_path / "close-q.onnx"
    proc = wasinn_cli("model", "optimize", str(path), "-o", str(out), "--quantize", "--runs", "2")
    assert proc.returncode == 1
    text = lines(proc.stdout)
    assert "top-1 0/3 unchanged: FAIL" in text and "3 seeded random inputs" in proc.stdout
    assert text[-1] == "NOT written: the optimized model does not match the original" and not out.exists()


def test_optimize_compares_other_models_on_random_inputs(tmp_path):
    (tmp_path / "m.onnx").write_bytes(models.add_mul())
    report = optimize(tmp_path / "m.onnx", tmp_path / "o.onnx", runs=2)
    assert report.samples == "3 seeded random inputs" and report.ok and report.max_diff == 0


@pytest.mark.parametrize("args, message", [
    (["--quantize", "int4"], "invalid choice: 'int4'"),
    (["--runs", "0"], "--runs must be at least 1"),
])
def test_optimize_option_errors(tmp_path, args, message):
    proc = wasinn_cli("model", "optimize", str(BUNDLED), "-o", str(tmp_path / "o.onnx"), *args)
    assert proc.returncode != 0 and message in proc.stderr

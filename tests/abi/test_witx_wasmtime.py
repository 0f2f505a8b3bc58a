"""The C classify example (a core module on wasi_ephemeral_nn) names the same class on the
wasmtime 49 CLI (its OpenVINO backend, the model loaded by name from `-S nn-graph`) as
on wasinn at the same precision, whatever the CPU: the wasmtime CLI leaves OpenVINO's CPU
plugin at its default (bfloat16 where the CPU has it), as wasinn's `--inference-precision
auto` does; wasinn's default, float32, names onnxruntime's class. Skips without the peers
and openvino extras."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from support.witx_support import MODEL, wasinn_run

pytestmark = pytest.mark.wasmtime


@pytest.fixture(scope="module")
def ir_dir(tmp_path_factory, openvino_ir):
    import openvino as ov
    d = tmp_path_factory.mktemp("ir") / "lite0"
    d.mkdir()
    ov.save_model(ov.convert_model(str(MODEL / "model.onnx")), str(d / "model.xml"), compress_to_fp16=False)
    return d


def test_same_module_same_top1_on_wasmtime_and_wasinn(wasmtime_cli, ir_dir, classify, chelsea):
    binary, env = wasmtime_cli
    d, logits = chelsea
    args = ["--dir", f"{d}::/in", str(classify), "--name", "lite0", "/in/chelsea.f32"]
    nn_graph = ["-S", "nn", "-S", f"nn-graph=openvino::{ir_dir}"]
    theirs = subprocess.run([str(binary), "run", *nn_graph, *args], capture_output=True, text=True, env=env,
                            timeout=300)
    ours_auto = wasinn_run("--inference-precision", "auto", *nn_graph, *args)
    ours = wasinn_run(*nn_graph, *args)
    for proc in (theirs, ours_auto, ours):
        assert proc.returncode == 0, proc.stderr
    assert _classes(theirs.stdout) == _classes(ours_auto.stdout)
    assert ours.stdout.splitlines()[0].endswith(f"(class {int(np.argmax(logits))})")


def _classes(stdout: str) -> list[str]:
    return [line.rsplit("(class ", 1)[1] for line in stdout.splitlines() if "(class " in line]

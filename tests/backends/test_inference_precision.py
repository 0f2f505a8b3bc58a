"""--inference-precision: f32 (the default) computes float32 models in float32 on every
backend; auto leaves it to OpenVINO (bfloat16 where the CPU has it); bf16 and f16 run
as asked or are refused, never silently run in a third precision."""
from __future__ import annotations

import numpy as np
import pytest

import wasinn
from wasinn import ExecutionTarget, GraphEncoding, HostTensor, cli
from wasinn.backends import KINDS, default_backends
from wasinn.errors import NnError, WasinnError

from support import models
from support.repo import ROOT

if not KINDS["openvino"].installed():
    pytest.skip(f"the openvino backend is not installed ({KINDS['openvino'].install_hint()})",
                allow_module_level=True)

import openvino as ov  # noqa: E402  (after the check above)

IMAGE = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)


def on_openvino(precision: str):
    backend = default_backends(0, {"onnx": "openvino"}, precision=precision)[GraphEncoding.ONNX]
    graph = backend.load([models.small_cnn()], ExecutionTarget.CPU)
    [(name, out)] = graph.init_execution_context().compute([HostTensor.from_array(IMAGE)])
    return graph, out.array()


def native() -> np.ndarray:
    [(_, raw)] = models.native(models.small_cnn(), {"image": (wasinn.TensorType.FP32, IMAGE.shape, IMAGE.tobytes())})
    return np.frombuffer(raw, np.float32).reshape(1, 3)


def cpu_runs(precision: str) -> bool:
    return precision.upper() in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_f32_is_the_default_and_matches_onnxruntime():
    graph, probs = on_openvino("f32")
    np.testing.assert_allclose(probs, native(), atol=1e-5)
    assert wasinn.Host(cache_dir=False).nn.backends[GraphEncoding.ONNX].precision == "f32"


@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_auto_and_bf16_run_bfloat16_where_the_cpu_has_it(precision):
    if precision == "bf16" and not cpu_runs("bf16"):
        with pytest.raises(NnError, match="inference precision bf16: OpenVINO's CPU plugin would run"):
            on_openvino(precision)
        return
    graph, probs = on_openvino(precision)
    ran = graph.compiled.get_property("INFERENCE_PRECISION_HINT")
    assert ran == (ov.Type.bf16 if cpu_runs("bf16") else ov.Type.f32)
    np.testing.assert_allclose(probs, native(), atol=0.05)  # bfloat16 keeps ~3 significant digits


def test_f16_runs_as_f16_or_is_refused():
    if cpu_runs("fp16"):
        graph, probs = on_openvino("f16")
        assert graph.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f16
        np.testing.assert_allclose(probs, native(), atol=0.01)
    else:
        with pytest.raises(NnError, match=r"inference precision f16: .* would run this model in \w+ on this "
                                          r"machine \(its capabilities: .*\); use auto or f32"):
            on_openvino("f16")


def test_an_unknown_precision_is_one_line():
    with pytest.raises(WasinnError, match="inference precision 'fp8': wasinn has f32, auto, bf16, f16"):
        wasinn.Host(cache_dir=False, inference_precision="fp8")


def test_the_flag_reaches_the_backend(capsys):
    argv = ["classify", str(ROOT / "images" / "chelsea.png"), "--backend", "onnx=openvino",
            "--inference-precision", "nope"]
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    args = cli.parser().parse_args(["run", "--inference-precision", "auto", "x.wasm"])
    assert cli.host_from_args(args).nn.backends[GraphEncoding.ONNX].precision == "auto"

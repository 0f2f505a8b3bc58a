"""A lean process: a command imports what it uses, when it uses it.

Each check runs a fresh interpreter with `-X importtime`, whose report names every
module the process imported, so a module pulled in by an import at the top of some
file shows up even if nothing calls it.
"""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "tests"
CHELSEA = ROOT / "images" / "chelsea.png"

# What `wasinn classify` (a cached component, the bundled model by name, onnxruntime)
# never uses: bfloat16 (ml_dtypes), model tools (onnx, modelprep's tools; its defaults are
# constants the parser shows), the other backends,
# the test kit, pipelines and their MQTT/YAML stack, the guest toolchain; the remote
# backend's HTTP stack, importlib.metadata (versions come from versions.py), TOML (--config),
# hashlib's OpenSSL (cache keys use digests.py; hashlib serves a guest's graph.load bytes),
# subprocess (componentize-py and wasm-tools run only to build or rewrite a component).
UNUSED_BY_CLASSIFY = ("importlib.metadata", "wasinn.backends.kserve", "http", "tomllib", "hashlib", "_hashlib",
                      "subprocess",
                      "ml_dtypes", "onnx", "hypothesis", "openvino", "ai_edge_litert", "tflite_runtime",
                      "yaml", "paho", "componentize_py", "wasinn.testing", "wasinn.pipeline",
                      "wasinn.modelprep.check", "wasinn.modelprep.optimize", "wasinn.apps.classifier_model", "wasinn.apps.openvino_ir",
                      "wasinn.backends.openvino", "wasinn.backends.tflite")


# What `wasinn run` never imports unless a run asks for it: the other commands' modules
# (build, doctor's tools, --invoke's WAVE and json, the "did you mean" of a typo), the
# backend workers' machinery (isolation.py imports it for the first isolated graph or
# the fork server's prewarm) and tempfile (a cache write, a spilled model). json too, where
# no component's memory images are read (a core module's run).
UNUSED_BY_RUN = ("wasinn.build", "wasinn.cli.wave", "difflib", "wasinn.backends.isolated",
                 "wasinn.backends.worker", "socket", "tempfile", "wasinn.apps", "wasinn.pipeline",
                 "wasinn.testing", "wasinn.modelprep.check", "wasinn.modelprep.optimize", "hypothesis", "yaml",
                 "subprocess", "importlib.metadata")


def imported_modules(code: str) -> set[str]:
    """Every module a fresh `python -X importtime -c CODE` imported."""
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", run.stderr, re.M))


def pulled_in(modules: set[str], names) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def classify_code() -> str:
    argv = ["classify", str(CHELSEA), "--top", "1", "--cache-dir", str(CACHE)]
    return f"import sys; from wasinn.cli import main; sys.exit(main({argv!r}))"


@pytest.fixture(scope="module")
def classify_modules() -> set[str]:
    # The first run may build the component and compose the model (which imports onnx):
    # the second is what every later run imports.
    imported_modules(classify_code())
    return imported_modules(classify_code())


def test_classify_imports_only_what_it_uses(classify_modules):
    assert "onnxruntime" in classify_modules and "PIL" in classify_modules  # it did classify
    assert pulled_in(classify_modules, UNUSED_BY_CLASSIFY) == []


def test_a_plain_run_imports_only_what_it_uses():
    """`wasinn run` of a command that loads no graph, and of a core module whose model
    the host loads at start-up (--nn-preload), as the start-up benchmark runs them
    (scripts/bench_start.py): each run's start-up is mostly its imports."""
    from support.guest_builds import ToolchainMissing, c_component, c_module, skip_without
    try:
        hello = c_component([ROOT / "guest" / "hello" / "hello.c"], name="hello", world="wasinn:guest/ml-command")
        peer = c_module([ROOT / "guest" / "peer-wasmedge" / "app.c"], name="peer-wasmedge")
    except ToolchainMissing as e:
        skip_without(e)
    adder = ROOT / "models" / "adder" / "model.onnx"
    for argv, unused in (
            (["run", "--cache-dir", str(CACHE), str(hello)], UNUSED_BY_RUN),
            (["run", "--cache-dir", str(CACHE), "--nn-preload", f"default:ONNX:AUTO:{adder}", str(peer), "default"],
             UNUSED_BY_RUN + ("json",))):
        code = f"import sys; from wasinn.cli import main; sys.exit(main({argv!r}))"
        imported_modules(code)  # the first run may compile: what every later one imports is the second's
        modules = imported_modules(code)
        assert "wasinn.runtime" in modules  # it did run
        assert pulled_in(modules, unused) == [], argv
    assert "onnxruntime" in modules  # the graph did load


def test_import_wasinn_leaves_bfloat16_and_backends_for_later():
    modules = imported_modules("import wasinn")
    assert pulled_in(modules, ("ml_dtypes", "onnxruntime", "onnx", "openvino", "PIL", "hypothesis",
                               "importlib.metadata", "wasinn.backends.kserve")) == []


def test_the_command_line_leaves_numpy_for_the_first_tensor():
    """numpy (~30 ms) is imported by its first use (wasinn.lazy); `wasinn run` of a guest
    that passes no tensor never uses it (tests/cli/test_peer_cli.py runs one)."""
    modules = imported_modules("import wasinn.cli; wasinn.cli.parser()")
    assert pulled_in(modules, ("numpy",)) == []
    modules = imported_modules("from wasinn.tensors import HostTensor, TensorType\n"
                               "assert HostTensor.from_array(__import__('numpy').zeros(2)).ty == TensorType.FP64")
    assert "numpy" in modules


def test_bfloat16_loads_ml_dtypes_when_first_used():
    modules = imported_modules(
        "import sys, numpy as np; from wasinn import HostTensor, TensorType\n"
        "assert 'ml_dtypes' not in sys.modules\n"
        "t = HostTensor((2,), TensorType.BF16, np.array([0x3f80, 0xc000], np.uint16).view(np.uint8))\n"
        "t.validate('x'); assert t.array().astype(np.float32).tolist() == [1.0, -2.0]\n"
        "assert HostTensor.from_array(t.array()).ty == TensorType.BF16")
    assert "ml_dtypes" in modules


def test_versions_are_what_importlib_metadata_says():
    import importlib.metadata

    from wasinn.versions import version
    for dist in ("wasmtime", "componentize-py", "onnxruntime", "numpy", "wasinn"):
        assert version(dist) == importlib.metadata.version(dist)

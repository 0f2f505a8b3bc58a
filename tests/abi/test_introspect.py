"""wasinn:introspect: a guest built from wit/ asks graphs what they expect, and
`wasinn inspect` prints the same from the command line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from onnx import TensorProto, helper

from support import models
from support.repo import CACHE, ROOT, guest_component
from wasinn import TensorType
from wasinn._bindings import WASINN_INTROSPECT_DESCRIBE
from wasinn.apps.classify import composed_model

BUNDLED = ROOT / "models" / "efficientnet-lite0" / "model.onnx"
BUNDLED_DESCRIPTION = {
    "backend": "onnxruntime", "target": "cpu",
    "inputs": [{"name": "input", "type": "FP32", "type_name": "float", "shape": [1, 3, 224, 224]}],
    # onnxruntime resolves the exported model's symbolic batch axis of the output to 1
    "outputs": [{"name": "logits", "type": "FP32", "type_name": "float", "shape": [1, 1000]}],
}


@pytest.fixture(scope="module")
def inspect_component(wasinn_host):
    return wasinn_host.load_component(guest_component("inspect"))


def run_guest(host, component, capfd, *args, dirs=()) -> tuple[int, str, str]:
    status = host.instantiate(component, args=list(args), dirs=list(dirs)).run()
    out, err = capfd.readouterr()
    return status, out, err


def wasinn_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wasinn", *args], capture_output=True, text=True, timeout=120)


def test_guest_describes_the_bundled_model_through_the_extension(wasinn_host, inspect_component, capfd):
    status, out, err = run_guest(wasinn_host, inspect_component, capfd, "--file", "/m/model.onnx", "--json",
                                 dirs=[(str(BUNDLED.parent), "/m")])
    assert status == 0, err
    # the guest loads the file's bytes itself: its graph runs in its backend worker
    assert json.loads(out) == {**BUNDLED_DESCRIPTION, "backend": "onnxruntime (isolated)"}

    status, out, _ = run_guest(wasinn_host, inspect_component, capfd, "--file", "/m/model.onnx",
                               dirs=[(str(BUNDLED.parent), "/m")])
    assert out.splitlines() == ["backend onnxruntime (isolated), target cpu", "input\tinput\tFP32\t[1, 3, 224, 224]",
                                "output\tlogits\tFP32\t[1, 1000]"]


def test_guest_describes_the_composed_classifier_loaded_by_name(wasinn_host, inspect_component, capfd):
    wasinn_host.models.register("classifier", composed_model(CACHE, lambda _: None))  # no progress line in the captured output
    status, out, err = run_guest(wasinn_host, inspect_component, capfd, "--name", "classifier", "--json")
    assert status == 0, err
    got = json.loads(out)
    assert got["inputs"] == [{"name": "image", "type": "U8", "type_name": "uint8", "shape": [-1, -1, 3]}]
    assert [(t["name"], t["type"], t["shape"]) for t in got["outputs"]] == [
        ("probabilities", "FP32", [1, 1000]), ("ranked", "FP32", [2, 1000])]


def test_unknown_rank_and_types_wasi_nn_cannot_carry(wasinn_host, inspect_component, capfd, tmp_path):
    """An unknown rank is no shape at all (not a scalar); a bool input has no wasi:nn
    type, so only the backend's type name describes it."""
    (tmp_path / "any.onnx").write_bytes(models.identity(TensorType.FP32, None))
    graph = helper.make_graph([helper.make_node("Not", ["flag"], ["y"])], "g",
                              [helper.make_tensor_value_info("flag", TensorProto.BOOL, ["n", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.BOOL, ["n", 2])])
    (tmp_path / "bool.onnx").write_bytes(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())

    status, out, err = run_guest(wasinn_host, inspect_component, capfd, "--file", "/d/any.onnx", "--json",
                                 dirs=[(str(tmp_path), "/d")])
    assert status == 0, err
    assert json.loads(out)["inputs"] == [{"name": "x", "type": "FP32", "type_name": "float", "shape": None}]

    status, out, err = run_guest(wasinn_host, inspect_component, capfd, "--file", "/d/bool.onnx",
                                 dirs=[(str(tmp_path), "/d")])
    assert status == 0, err
    assert "input\tflag\t(bool)\t[-1, 2]" in out.splitlines()


def test_a_failed_load_is_a_wasi_nn_error_in_the_guest(wasinn_host, inspect_component, capfd):
    status, _, err = run_guest(wasinn_host, inspect_component, capfd, "--name", "nope")
    assert status == 1 and "wasi:nn error NOT_FOUND: no graph named 'nope'" in err


def test_only_guests_that_import_the_extension_see_it(wasinn_host, inspect_component, nn_cli_wasm):
    assert WASINN_INTROSPECT_DESCRIBE in inspect_component.type.imports(wasinn_host.engine_of(inspect_component))
    assert WASINN_INTROSPECT_DESCRIBE not in (c := wasinn_host.load_component(nn_cli_wasm)).type.imports(wasinn_host.engine_of(c))


def test_cli_inspect_prints_what_the_guest_sees(wasinn_host, inspect_component, capfd):
    proc = wasinn_cli("inspect", str(BUNDLED), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == BUNDLED_DESCRIPTION

    proc = wasinn_cli("inspect", str(BUNDLED))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["backend onnxruntime, target cpu",
                                           "input   input   FP32  [1, 3, 224, 224]",
                                           "output  logits  FP32  [1, 1000]"]


@pytest.mark.parametrize("source, message", [
    ("/no/such/model.onnx", "no such model file: /no/such/model.onnx"),
    ("kserve+ftp://x/v2/models/m", "speaks the inference protocol over kserve+http://"),
])
def test_cli_inspect_errors_are_one_line(source, message):
    proc = wasinn_cli("inspect", source)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("wasinn: error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_library_describe_matches_the_backend_specs(tmp_path):
    from wasinn.abi.introspect import describe, open_graph
    path = tmp_path / "m.onnx"
    path.write_bytes(models.add_mul())
    d = describe(open_graph(str(path)))
    assert [(t.name, t.ty, t.shape) for t in d.inputs] == [("a", TensorType.FP32, [2, 3]), ("b", TensorType.FP32, [2, 3])]
    assert [t.name for t in d.outputs] == ["sum", "product"]

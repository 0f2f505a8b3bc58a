"""`wasinn run` and `wasinn build` as a user runs them: a command guest written
against wit/ loads models by bytes and by name, and its outputs equal native ones."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest

import models
from conftest import CACHE, ROOT

A = np.arange(6, dtype=np.float32).reshape(2, 3)
B = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)


def wasinn(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wasinn", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture
def data(tmp_path) -> pathlib.Path:
    (tmp_path / "model.onnx").write_bytes(models.add_mul())
    A.tofile(tmp_path / "a.bin")
    B.tofile(tmp_path / "b.bin")
    (tmp_path / "out").mkdir()
    return tmp_path


def native_outputs() -> dict[str, bytes]:
    feeds = {"a": (models.TensorType.FP32, (2, 3), A.tobytes()), "b": (models.TensorType.FP32, (2, 3), B.tobytes())}
    return dict(models.native(models.add_mul(), feeds))


INPUTS = ["a=FP32:2,3:/data/a.bin", "b=FP32:2,3:/data/b.bin"]


def test_command_guest_loads_by_bytes_and_matches_native(nn_cli_wasm, data):
    proc = wasinn("run", "--cache-dir", str(CACHE), "--dir", f"{data}::/data", str(nn_cli_wasm),
                  "--file", "/data/model.onnx", "--out", "/data/out", *INPUTS)
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == ["sum", "product"]
    for name, want in native_outputs().items():
        assert (data / "out" / f"{name}.bin").read_bytes() == want


@pytest.mark.parametrize("flag", ["--model", "-S"])
def test_command_guest_loads_by_name_and_matches_native(nn_cli_wasm, data, tmp_path, flag):
    if flag == "--model":
        registration, name = ["--model", f"adder={data / 'model.onnx'}"], "adder"
    else:  # wasmtime's form: DIR/model.onnx, named by DIR's base name
        graph_dir = tmp_path / "mygraph"
        graph_dir.mkdir()
        (graph_dir / "model.onnx").write_bytes(models.add_mul())
        registration, name = ["-S", "nn", "-S", f"nn-graph=onnx::{graph_dir}"], "mygraph"
    proc = wasinn("run", "--cache-dir", str(CACHE), *registration, "--dir", f"{data}::/data",
                  str(nn_cli_wasm), "--name", name, "--out", "/data/out", *INPUTS)
    assert proc.returncode == 0, proc.stderr
    for out_name, want in native_outputs().items():
        assert (data / "out" / f"{out_name}.bin").read_bytes() == want


def test_guest_errors_give_exit_status_1(nn_cli_wasm, data):
    proc = wasinn("run", "--cache-dir", str(CACHE), "--dir", f"{data}::/data", str(nn_cli_wasm),
                  "--name", "missing", *INPUTS)
    assert proc.returncode == 1
    assert "wasi:nn error NOT_FOUND: no graph named 'missing'" in proc.stderr


def test_invoke_calls_an_export(host, data):
    from conftest import guest_component
    proc = wasinn("run", "--cache-dir", str(CACHE), "--model", f"adder={data / 'model.onnx'}",
                  "--invoke", 'load-by-name("adder")', str(guest_component("roundtrip")))
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok(1)"), proc.stderr
    proc = wasinn("run", "--cache-dir", str(CACHE), "--invoke", 'load-by-name("nope")',
                  str(guest_component("roundtrip")))
    assert proc.stdout.strip() == "err({code: \"not-found\", data: \"no graph named 'nope'; registered: none\"})"


@pytest.mark.parametrize("args, message", [
    (["run", "missing.wasm"], "wasinn: error: cannot read component missing.wasm"),
    (["run", "--model", "x", "a.wasm"], "wasinn: error: --model wants NAME=PATH, got 'x'"),
    (["run", "--model", "x=/nonexistent.onnx", "a.wasm"], "wasinn: error: model 'x': no such file /nonexistent.onnx"),
    (["run", "-S", "nn-graph=onnx::/nonexistent", "a.wasm"], "wasinn: error: nn-graph: no such directory /nonexistent"),
    (["run", "-S", "nn-graph=weird::/tmp", "a.wasm"], "wasinn: error: nn-graph: unknown encoding 'weird'"),
    (["run", "-S", "threads", "a.wasm"], "wasinn: error: -S threads: wasinn understands -S nn"),
    (["build", "nothere.py", "-o", "x.wasm"], "wasinn: error: wasinn build wants a Python file"),
])
def test_bad_cli_input_is_one_clear_line(tmp_path, args, message):
    (tmp_path / "a.wasm").write_bytes(b"\0asm")
    proc = wasinn(*args, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("wasm, message", [
    (b"\0asm\x01\0\0\0", "a.wasm is a core WebAssembly module, not a component"),
    (b"\0asm\x0d\0\x01\0junk", "a.wasm is not a valid WebAssembly component"),
])
def test_not_a_component_is_one_clear_line(tmp_path, wasm, message):
    (tmp_path / "a.wasm").write_bytes(wasm)
    proc = wasinn("run", "--cache-dir", str(tmp_path / "c"), "a.wasm", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.splitlines()[-1].startswith(f"wasinn: error: {message}")


def test_build_reports_guest_syntax_errors(tmp_path):
    (tmp_path / "app.py").write_text("def broken(:\n")
    proc = wasinn("build", str(tmp_path / "app.py"), "-o", str(tmp_path / "app.wasm"))
    assert proc.returncode == 1 and "componentize-py failed" in proc.stderr

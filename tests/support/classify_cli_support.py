"""Shared by the classify-cli tests: the component, the model directory wasmtime's
`-S nn-graph=onnx::DIR` reads, running `wasinn`, and reading the command's output."""
from __future__ import annotations

import functools
import pathlib
import re
import subprocess
import sys

from support.repo import CACHE, ROOT
from wasinn.apps.classify_cli import classify_cli_component, onnx_graph_dir

IMAGES = ROOT / "images"
# What the bundled model says about each sample photo (models/efficientnet-lite0/README.md)
TOP1 = {"chelsea.png": "Egyptian cat", "coffee.png": "espresso", "camera.png": "tripod"}
_LINE = re.compile(r"^  (\d+)\. (.+?) +([\d.]+)%  \(class (\d+)\)$")


@functools.cache
def component() -> pathlib.Path:
    return classify_cli_component(CACHE, print)


@functools.cache
def onnx_dir() -> pathlib.Path:
    return onnx_graph_dir(CACHE / "graphs" / "onnx", CACHE, print)


def wasinn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wasinn", *args], capture_output=True, text=True, timeout=300)


def predictions(stdout: str) -> dict[str, list[tuple[str, float, int]]]:
    """classify-cli's output: image path -> [(label, score in %, class index)] by rank."""
    out: dict[str, list[tuple[str, float, int]]] = {}
    for line in stdout.splitlines():
        m = _LINE.match(line)
        if m:
            out[path].append((m[2], float(m[3]), int(m[4])))
        else:
            path = line
            out[path] = []
    return out

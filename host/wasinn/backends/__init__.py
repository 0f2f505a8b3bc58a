"""Backends by graph encoding. A new backend is one module (with a `make(encoding,
threads, max_memory)` function) plus one entry in KINDS.

Every backend but onnxruntime is an optional extra (`pip install 'wasinn[openvino]'`).
Backends are imported on first load: importing openvino alone takes ~0.4 s, which a
host that only runs ONNX on onnxruntime should not pay. A backend whose package is
missing still recognises its bytes, and loading through it fails with
`invalid-encoding` naming the extra to install.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import threading
from typing import Mapping

from .._enums import ExecutionTarget, GraphEncoding
from ..errors import WasinnError, invalid_encoding
from ..limits import Limits
from .base import Backend, Context, Graph, TensorSpec
from .formats import RECOGNISERS


@dataclasses.dataclass(frozen=True)
class BackendKind:
    name: str
    encodings: tuple[GraphEncoding, ...]
    package: str                      # the import name of the package it runs on
    extra: str | None = None          # the pip extra that installs it (None: always installed)
    precisions: bool = False          # whether it can compute in another precision than the model's

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def install_hint(self) -> str:
        return f"pip install 'wasinn[{self.extra}]'" if self.extra else "pip install --force-reinstall wasinn"


KINDS = {k.name: k for k in (
    BackendKind("onnxruntime", (GraphEncoding.ONNX,), "onnxruntime"),
    BackendKind("openvino", (GraphEncoding.OPENVINO, GraphEncoding.ONNX), "openvino", "openvino", precisions=True),
    BackendKind("tflite", (GraphEncoding.TENSORFLOWLITE,), "ai_edge_litert", "tflite"),
)}
# The backend serving each encoding unless the user picks another (`--backend onnx=openvino`).
DEFAULTS = {GraphEncoding.ONNX: "onnxruntime", GraphEncoding.OPENVINO: "openvino",
            GraphEncoding.TENSORFLOWLITE: "tflite"}
# --inference-precision: f32 computes float32 models in float32; auto leaves it to the
# backend (OpenVINO's CPU plugin: bfloat16 where the CPU has it); bf16 and f16 ask for those.
# Backends without a choice (onnxruntime, LiteRT) run every model in its own precision.
PRECISIONS = ("f32", "auto", "bf16", "f16")


class Deferred:
    """One backend for one encoding, imported when a graph first loads through it."""

    def __init__(self, kind: BackendKind, encoding: GraphEncoding, threads: int, max_memory: int,
                 precision: str = "f32"):
        self.kind, self.encoding, self.threads, self.max_memory = kind, encoding, threads, max_memory
        self.precision = precision
        self.name = kind.name if kind.installed() else f"{kind.name}, not installed"
        self._backend: Backend | None = None
        self._lock = threading.Lock()

    def recognizes(self, builders: list[bytes]) -> bool:
        return RECOGNISERS[self.encoding](builders)

    def load(self, builders: list[bytes], target: ExecutionTarget) -> Graph:
        return self.backend().load(builders, target)

    def load_file(self, path, target: ExecutionTarget) -> Graph | None:
        """The backend's own file loader where it has one (see nn.WasiNn.load_file)."""
        backend = self.backend()
        return backend.load_file(path, target) if backend.loads_files else None

    def backend(self) -> Backend:
        with self._lock:
            if self._backend is None:
                try:
                    module = importlib.import_module(f".{self.kind.name}", __name__)
                except ImportError as e:
                    raise invalid_encoding(
                        f"encoding {self.encoding.value} needs the {self.kind.name} backend: "
                        f"{self.kind.install_hint()} ({e})") from e
                options = {"precision": self.precision} if self.kind.precisions else {}
                self._backend = module.make(self.encoding, self.threads, self.max_memory, **options)
        return self._backend


def parse_choices(specs: list[str]) -> dict[str, str]:
    """CLI `--backend` values: `ENCODING=BACKEND`, or `BACKEND` alone for every encoding
    it serves (`--backend openvino` runs ONNX models on OpenVINO too)."""
    choices: dict[str, str] = {}
    for spec in specs:
        encoding, sep, name = spec.rpartition("=")
        if sep:
            choices[encoding] = name
        elif name in KINDS:
            choices.update({e.value: name for e in KINDS[name].encodings})
        else:
            raise WasinnError(f"--backend {spec}: no backend named {name!r}; wasinn has: {', '.join(KINDS)}")
    return choices


def default_backends(threads: int = 0, choices: Mapping[str, str] | None = None,
                     max_memory: int = Limits.max_backend_memory,
                     precision: str = "f32") -> dict[GraphEncoding, Backend]:
    """A backend for every encoding wasinn knows, keyed by encoding. `choices` maps
    encoding names to backend names where the user wants other than DEFAULTS;
    `threads` is each backend's intra-op thread count (0: the backend's choice);
    `max_memory` what one graph's runs may allocate (max-backend-memory);
    `precision` one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise WasinnError(f"inference precision {precision!r}: wasinn has {', '.join(PRECISIONS)}")
    names = dict(DEFAULTS)
    for enc_name, name in (choices or {}).items():
        try:
            encoding = GraphEncoding(enc_name)
        except ValueError:
            raise WasinnError(f"backend choice {enc_name}={name}: no encoding {enc_name!r}; wasi:nn has: "
                              + ", ".join(e.value for e in GraphEncoding if e != GraphEncoding.AUTODETECT)) from None
        kind = KINDS.get(name)
        if kind is None or encoding not in kind.encodings:
            able = [k for k in KINDS.values() if encoding in k.encodings]
            raise WasinnError(f"backend choice {enc_name}={name}: " + (
                f"no backend named {name!r}" if kind is None else f"{name} does not serve {enc_name}")
                + f"; {enc_name} can run on: {', '.join(k.name for k in able) or 'none'}")
        if not kind.installed():
            raise WasinnError(f"backend choice {enc_name}={name}: the {name} backend is not installed: "
                              f"{kind.install_hint()}")
        names[encoding] = name
    return {e: Deferred(KINDS[n], e, threads, max_memory, precision) for e, n in names.items()}


__all__ = ["Backend", "BackendKind", "Context", "Graph", "KINDS", "PRECISIONS", "TensorSpec", "default_backends",
           "parse_choices"]

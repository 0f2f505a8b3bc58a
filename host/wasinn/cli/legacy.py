"""`wasinn run` options for legacy wasi-nn programs (core modules, modules.py), in
WasmEdge's spelling where WasmEdge has one."""
from __future__ import annotations

import argparse

from .._enums import ExecutionTarget, GraphEncoding
from ..errors import WasinnError
from ..registry import _model_files

# WasmEdge's names for encodings and targets (`--nn-preload default:GGML:AUTO:model.gguf`)
_ENCODINGS = {e.value: e for e in GraphEncoding}
_TARGETS = {t.value: t for t in ExecutionTarget} | {"auto": ExecutionTarget.CPU}


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nn-preload", action="append", default=[], metavar="NAME:ENCODING:TARGET:PATH",
                   help="WasmEdge's form of --model: register PATH under NAME for load_by_name, e.g. "
                        "default:ONNX:CPU:model.onnx (repeatable; target AUTO runs on the cpu)")
    p.add_argument("--no-nn-errors", action="store_true",
                   help="core modules: do not print the message behind each wasi-nn errno to stderr")


def configure(args, host) -> None:
    for spec in args.nn_preload:
        parts = spec.split(":", 3)
        if len(parts) != 4 or not all(parts):
            raise WasinnError(f"--nn-preload wants NAME:ENCODING:TARGET:PATH, got {spec!r}")
        name, encoding, target, path = parts
        if encoding.lower() not in _ENCODINGS:
            raise WasinnError(f"--nn-preload: unknown encoding {encoding!r}; wasi-nn has: "
                              + ", ".join(_ENCODINGS))
        if target.lower() not in _TARGETS:
            raise WasinnError(f"--nn-preload: unknown target {target!r}; use one of: " + ", ".join(_TARGETS))
        host.models.register(name, _model_files(path), _ENCODINGS[encoding.lower()], _TARGETS[target.lower()])
    host.core_modules.errors_to_stderr = not args.no_nn_errors

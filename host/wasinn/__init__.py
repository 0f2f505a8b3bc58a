"""wasinn: run WebAssembly components that do ML inference through wasi:nn.

The library is the product; the `wasinn` CLI is a thin layer over it.
"""
import os as _os
import sys as _sys

# onnxruntime (1.2x on) records each process in a SQLite file under ~/.cache/Microsoft and
# a `.ses` file in TMPDIR, with fsyncs (~5 ms of every import), and queues telemetry to
# send: nothing a sandboxing host should do unasked. Off unless the user says otherwise.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from ._enums import ErrorCode, ExecutionTarget, GraphEncoding, TensorType
from .errors import BadValue, GuestTrap, NnError, WasinnError
from .tensors import HostTensor

__all__ = ["Host", "Instance", "HostTensor", "build", "NnError", "WasinnError", "BadValue", "GuestTrap",
           "ErrorCode", "ExecutionTarget", "GraphEncoding", "TensorType"]
# Imported on first use: a backend worker's fork server (backends/worker.py) imports this
# package but runs no wasm, and wasmtime with the runtime costs it ~0.1-0.2 s of start-up.
_LAZY = {"Host": "runtime", "Instance": "runtime", "build": None}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'wasinn' has no attribute {name!r}")
    import importlib
    if name == "Host" and f"{__name__}.runtime" not in _sys.modules:
        # a program about to make a Host: under the default policy its guests' models
        # load in workers, whose fork server starts now, beside wasmtime's import, rather
        # than at its first instance (see forkserver.py)
        from . import forkserver
        forkserver.start(speculative=True)
    module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value

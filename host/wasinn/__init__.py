"""wasinn: run WebAssembly components that do ML inference through wasi:nn.

The library is the product; the `wasinn` CLI is a thin layer over it.
"""
from ._bindings import ErrorCode, ExecutionTarget, GraphEncoding, TensorType
from . import build
from .errors import GuestTrap, NnError, WasinnError
from .runtime import Host, Instance
from .tensors import HostTensor

__all__ = ["Host", "Instance", "HostTensor", "build", "NnError", "WasinnError", "GuestTrap",
           "ErrorCode", "ExecutionTarget", "GraphEncoding", "TensorType"]

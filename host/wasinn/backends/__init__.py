"""Backends by graph encoding. A new backend is one module plus one line here."""
from __future__ import annotations

from .._bindings import GraphEncoding
from .base import Backend, Context, Graph, TensorSpec
from .onnxruntime import OnnxRuntimeBackend


def default_backends(intra_op_threads: int = 0) -> dict[GraphEncoding, Backend]:
    """The backends this installation can serve, keyed by the encoding they serve."""
    backends = [OnnxRuntimeBackend(intra_op_threads=intra_op_threads)]
    return {b.encoding: b for b in backends}


__all__ = ["Backend", "Context", "Graph", "TensorSpec", "OnnxRuntimeBackend", "default_backends"]

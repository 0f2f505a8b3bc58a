"""Model preparation, the steps before deploying a model to the edge (export -> optimize
-> check): `check.py` (`wasinn model check`) and `optimize.py` (`wasinn model optimize`).

The defaults live here so that the command line can show them without importing onnx
and onnxruntime, which the two modules need and which take ~0.3 s to import.
"""
DEFAULT_BUDGET = 50_000_000  # bytes: 50 MB
DEFAULT_TOLERANCE = 1e-3     # largest output difference, relative to the largest output value
DEFAULT_RUNS = 20            # timed inferences per model
QUANT_TYPES = ("uint8", "int8")  # weight types for dynamic quantization; the first is the default


def megabytes(size: float) -> str:
    """A file size for people: MB, or kB for small test models."""
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size / 1e3:.1f} kB"

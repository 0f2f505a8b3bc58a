"""`wasinn model optimize`: a smaller, faster model for the edge, verified against the
original before it is written.

    report = optimize("model.onnx", "out.onnx", quantize="uint8")
    print(report.text())

Passes:
  1. onnxruntime's basic graph optimizations, run offline and saved
     (`SessionOptions.optimized_model_filepath`): constant folding, redundant-node
     elimination and conv/batch-norm/pad fusions. The result is standard ONNX (the
     basic level adds no onnxruntime-only operators), so any runtime can load it. On the
     bundled EfficientNet-Lite0 this folds 450 nodes to 94, which the onnxoptimizer
     (230) and onnxsim (96) passes do not beat, so wasinn needs neither.
  2. Optionally, onnxruntime's dynamic int8 quantization (`quantize_dynamic`): weights
     stored as 8-bit integers (~4x smaller), activations quantized at run time.

Verification runs both models on the same inputs: the sample photos for an image
classifier (`reference_preprocess` for a float NCHW input, raw pixels for a uint8
[H, W, 3] one), else seeded random inputs. The optimized model passes when its outputs
stay within `tolerance` of the original's (max |diff| <= tolerance x max |original|)
and the top-1 class of every photo is unchanged; a quantized model moves its outputs
by far more than float rounding, so for it only the top-1 criterion applies.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import shutil
import statistics
import tempfile
import time
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

from .. import resources
from ..errors import WasinnError
from . import DEFAULT_RUNS, DEFAULT_TOLERANCE, QUANT_TYPES, megabytes
_RANDOM_SAMPLES = 3
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
                "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


@dataclasses.dataclass
class Measure:
    before: float
    after: float

    def ratio(self) -> str:
        return f"{self.after / self.before:.2f}x" if self.before else "n/a"


@dataclasses.dataclass
class OptimizeReport:
    source: str
    output: str
    passes: list[str]
    nodes: Measure
    size: Measure          # bytes
    load_ms: Measure       # creating an onnxruntime session
    latency_ms: Measure    # median of `runs` inferences
    runs: int
    samples: str           # what the models were compared on
    max_diff: float
    max_value: float
    tolerance: float | None  # None when only top-1 is checked (quantized)
    top1_same: int | None    # of `top1_total`; None when the output is not class scores
    top1_total: int
    written: bool

    @property
    def within_tolerance(self) -> bool:
        return self.tolerance is None or self.max_diff <= self.tolerance * max(self.max_value, 1e-12)

    @property
    def ok(self) -> bool:
        return self.within_tolerance and (self.top1_same is None or self.top1_same == self.top1_total)

    def text(self) -> str:
        def ms(m: Measure) -> str:
            return f"{m.before:.3g} ms -> {m.after:.3g} ms ({m.ratio()})"
        diff = f"max |diff| {self.max_diff:.3g} of max |value| {self.max_value:.3g}"
        lines = [f"optimized {self.source} -> {self.output}",
                 f"  passes   {'; '.join(self.passes)}",
                 f"  nodes    {self.nodes.before:.0f} -> {self.nodes.after:.0f}",
                 f"  size     {megabytes(self.size.before)} -> {megabytes(self.size.after)} ({self.size.ratio()})",
                 f"  load     {ms(self.load_ms)}, creating an onnxruntime session (median of 3)",
                 f"  latency  {ms(self.latency_ms)}, median of {self.runs} interleaved runs on onnxruntime CPU",
                 f"  outputs  {diff} on {self.samples}" + (
                     f" (tolerance {self.tolerance:g} x max |value|): {'ok' if self.within_tolerance else 'FAIL'}"
                     if self.tolerance is not None else " (quantized: checked by top-1 only)")]
        if self.top1_same is not None:
            verdict = "ok" if self.top1_same == self.top1_total else "FAIL"
            lines.append(f"  top-1    {self.top1_same}/{self.top1_total} unchanged: {verdict}")
        lines.append(f"wrote {self.output}" if self.written else
                     "NOT written: the optimized model does not match the original")
        return "\n".join(lines)


def optimize(source: str | os.PathLike, output: str | os.PathLike, *, quantize: str | None = None,
             images: list[str | os.PathLike] | None = None, tolerance: float = DEFAULT_TOLERANCE,
             runs: int = DEFAULT_RUNS, progress: Callable[[str], None] = lambda message: None) -> OptimizeReport:
    """Optimizes `source` into `output` (written only when verification passes).
    `quantize`: None, "uint8" or "int8" (the weights' type); `images`: photos to compare
    on (default: the sample photos, when the model is an image classifier)."""
    source, output = pathlib.Path(source), pathlib.Path(output)
    if quantize is not None and quantize not in QUANT_TYPES:
        raise WasinnError(f"--quantize takes {' or '.join(QUANT_TYPES)}, got {quantize!r}")
    if runs < 1:
        raise WasinnError(f"--runs must be at least 1, got {runs}")
    if tolerance < 0:
        raise WasinnError(f"--tolerance cannot be negative, got {tolerance:g}")
    if not source.is_file():
        raise WasinnError(f"no such model: {source}")
    original = _session(source)
    with tempfile.TemporaryDirectory() as tmp:
        progress("running onnxruntime's basic graph optimizations...")
        basic = pathlib.Path(tmp, "basic.onnx")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = str(basic)
        _session(source, opts)
        passes = ["onnxruntime basic graph optimizations (constant folding, fusions)"]
        result = basic
        if quantize:
            progress(f"quantizing to 8-bit integer weights ({quantize})...")
            result = pathlib.Path(tmp, "quantized.onnx")
            _quantize(basic, result, quantize)
            passes.append(f"dynamic int8 quantization ({quantize} weights)")
        try:
            onnx.checker.check_model(str(result))
        except onnx.checker.ValidationError as e:
            raise WasinnError(f"the optimized model is not valid ONNX: {e}") from None

        progress("comparing outputs and timing both models...")
        optimized = _session(result)
        samples, label = _samples(original, images)
        top1 = _is_class_scores(original)
        max_diff = max_value = 0.0
        same = 0
        for feeds in samples:
            want = original.run(None, feeds)
            got = optimized.run(None, feeds)
            for w, g in zip(want, got):
                max_diff = max(max_diff, float(np.max(np.abs(w.astype(np.float64) - g))))
                max_value = max(max_value, float(np.max(np.abs(w))))
            if top1:
                same += int(np.argmax(want[0]) == np.argmax(got[0]))
        report = OptimizeReport(
            str(source), str(output), passes,
            Measure(len(onnx.load(str(source), load_external_data=False).graph.node),
                    len(onnx.load(str(result)).graph.node)),
            Measure(source.stat().st_size, result.stat().st_size),
            Measure(*_interleaved_ms([lambda: _session(source), lambda: _session(result)], runs=3, warmup=1)),
            Measure(*_interleaved_ms([lambda: original.run(None, samples[0]), lambda: optimized.run(None, samples[0])],
                                     runs=runs, warmup=3)),
            runs, label, max_diff, max_value, None if quantize else tolerance,
            same if top1 else None, len(samples), written=False)
        if report.ok:
            output.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(result, output)
            report.written = True
    return report


def _session(path: pathlib.Path, opts: ort.SessionOptions | None = None) -> ort.InferenceSession:
    opts = opts or ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise WasinnError(f"onnxruntime cannot load {path}: {str(e).strip()}") from None


@contextlib.contextmanager
def _quiet_quantizer():
    # quantize_dynamic logs advice (pre-processing, ...) to the root logger; the report says what matters.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _quantize(source: pathlib.Path, output: pathlib.Path, weights: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    weight_type = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[weights]
    with _quiet_quantizer():
        try:
            quantize_dynamic(str(source), str(output), weight_type=weight_type)
        except Exception as e:
            raise WasinnError(f"onnxruntime's quantizer failed: {type(e).__name__}: {e}") from None


def _interleaved_ms(fns: list[Callable[[], object]], *, runs: int, warmup: int) -> list[float]:
    """Median milliseconds of each function. Calls alternate (before, after, before, ...)
    so that a busy machine slows both alike; the first calls allocate and tune, untimed."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, ts in zip(fns, times):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) * 1e3 for ts in times]


def _is_class_scores(session: ort.InferenceSession) -> bool:
    out = session.get_outputs()[0]
    return out.type in ("tensor(float)", "tensor(float16)", "tensor(double)") and len(out.shape) == 2


def _image_layout(session: ort.InferenceSession) -> str | None:
    """"nchw" for one float [1, 3, S, S] input, "hwc" for one uint8 [H, W, 3], else None."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        return None
    shape, ty = inputs[0].shape, inputs[0].type
    if ty == "tensor(float)" and len(shape) == 4 and shape[:2] == [1, 3] and isinstance(shape[2], int) \
            and shape[2] == shape[3]:
        return "nchw"
    if ty == "tensor(uint8)" and len(shape) == 3 and shape[2] == 3:
        return "hwc"
    return None


def sample_photos() -> list[pathlib.Path]:
    return sorted(resources.path("images").glob("*.png"))


def _samples(session: ort.InferenceSession, images) -> tuple[list[dict], str]:
    layout = _image_layout(session)
    paths = [pathlib.Path(p) for p in images] if images else (sample_photos() if layout else [])
    if paths:
        if layout is None:
            raise WasinnError("--images needs a model with one float32 [1, 3, S, S] or uint8 [H, W, 3] input")
        from ..apps.classifier_model import reference_preprocess
        from ..apps.classify import load_image
        name = session.get_inputs()[0].name
        side = session.get_inputs()[0].shape[2]
        pixels = [load_image(p) for p in paths]
        feeds = [{name: reference_preprocess(px, size=side) if layout == "nchw" else px} for px in pixels]
        return feeds, f"{len(paths)} photo{'s' if len(paths) > 1 else ''} ({', '.join(p.name for p in paths)})"
    rng = np.random.default_rng(0)
    feeds = []
    for _ in range(_RANDOM_SAMPLES):
        sample = {}
        for i in session.get_inputs():
            if i.type not in _NUMPY_TYPES:
                raise WasinnError(f"cannot make sample inputs for {i.name!r} of type {i.type}")
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
            dtype = np.dtype(_NUMPY_TYPES[i.type])
            sample[i.name] = (rng.standard_normal(shape) if dtype.kind == "f" else rng.integers(0, 8, shape)).astype(dtype)
        feeds.append(sample)
    return feeds, f"{_RANDOM_SAMPLES} seeded random inputs"

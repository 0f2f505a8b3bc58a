#!/usr/bin/env python3
"""EfficientNet-Lite0 latency per backend, wasinn next to the native runtimes, in one run.

    .venv/bin/python benchmarks/bench_backends.py [-n 200] [--threads N]

Rows (one inference of the bundled network on one preprocessed photo, float32
[1,3,224,224]; median and p90 in ms, and the ratio to native onnxruntime):
  native onnxruntime          InferenceSession.run
  native OpenVINO (f32)       compiled in ACCURACY mode, the model's own precision:
                              what wasinn's openvino backend runs
  native OpenVINO (default)   the CPU plugin's defaults: bfloat16 where the CPU has it
                              (what wasmtime's OpenVINO backend gets), for reference
  wasinn <backend>            a guest (guest/roundtrip) calls compute on a context of
                              the graph it loaded by name, the image passed as a
                              tensor handle: the whole wasi:nn path, guest included

Runs are interleaved (one of each row per round) so that load on a shared machine
hits every row alike. Needs the openvino extra (pip install 'wasinn[openvino]').
"""
from __future__ import annotations

import argparse
import io
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host"))

import onnxruntime as ort  # noqa: E402
import openvino as ov  # noqa: E402

import wasinn  # noqa: E402
from wasinn import HostTensor, build  # noqa: E402
from wasinn._bindings import WASINN_GUEST_ROUNDTRIP_GUEST_WORLD  # noqa: E402
from wasinn.apps.classifier_model import reference_preprocess  # noqa: E402
from wasinn.apps.classify import load_image  # noqa: E402

MODEL = ROOT / "models" / "efficientnet-lite0" / "model.onnx"
CACHE = ROOT / ".cache" / "bench"


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def native_rows(model: bytes, x: np.ndarray, threads: int) -> dict:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    core = ov.Core()
    extra = {"INFERENCE_NUM_THREADS": threads} if threads else {}
    exact = core.compile_model(core.read_model(io.BytesIO(model)), "CPU",
                               {"EXECUTION_MODE_HINT": "ACCURACY", **extra}).create_infer_request()
    default = core.compile_model(core.read_model(io.BytesIO(model)), "CPU", extra)
    hint = default.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    default_req = default.create_infer_request()
    return {"native onnxruntime": lambda: session.run(None, {"input": x}),
            "native OpenVINO (f32)": lambda: exact.infer([x]),
            f"native OpenVINO (default: {hint})": lambda: default_req.infer([x])}


def ir_files(model: bytes, directory: pathlib.Path) -> list[pathlib.Path]:
    xml = directory / "model.xml"
    ov.save_model(ov.Core().read_model(io.BytesIO(model)), xml, compress_to_fp16=False)
    return [xml, xml.with_suffix(".bin")]


def wasinn_rows(x: np.ndarray, threads: int, tmp: pathlib.Path) -> dict:
    wasm = build.build_cached(build.guest_files(ROOT / "guest" / "roundtrip"), name="roundtrip",
                                     world=WASINN_GUEST_ROUNDTRIP_GUEST_WORLD, cache_dir=CACHE, progress=progress)
    ir = ir_files(MODEL.read_bytes(), tmp)
    ways = {"wasinn onnxruntime": ({}, [MODEL], wasinn.GraphEncoding.ONNX),
            "wasinn openvino (onnx)": ({"onnx": "openvino"}, [MODEL], wasinn.GraphEncoding.ONNX),
            "wasinn openvino (IR)": ({}, ir, wasinn.GraphEncoding.OPENVINO)}
    rows = {}
    for label, (choice, paths, encoding) in ways.items():
        host = wasinn.Host(cache_dir=CACHE, ort_threads=threads, backends=choice, progress=progress)
        host.models.register("effnet", paths, encoding)
        inst = host.instantiate(host.load_component(wasm))
        g = inst.call("load-by-name", "effnet")
        if g.tag != "ok":
            raise SystemExit(f"{label}: {g.payload.code}: {g.payload.data}")
        ctx = inst.call("init-context", g.payload).payload
        rows[label] = lambda inst=inst, ctx=ctx: _compute(inst, ctx, x)
    return rows


def _compute(inst, ctx: int, x: np.ndarray) -> None:
    got = inst.call("compute-tensors", ctx, [("input", HostTensor.from_array(x))])
    if got.tag != "ok":
        raise SystemExit(f"compute failed: {got.payload.code}: {got.payload.data}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="timed rounds (default 200)")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads everywhere (default: each runtime's choice)")
    args = ap.parse_args()

    x = reference_preprocess(load_image(ROOT / "images" / "chelsea.png"))
    progress("loading the model into every runtime")
    with tempfile.TemporaryDirectory() as tmp:
        rows = {**native_rows(MODEL.read_bytes(), x, args.threads), **wasinn_rows(x, args.threads, pathlib.Path(tmp))}
    for fn in rows.values():  # warm-up: first-run allocations and kernel selection
        for _ in range(5):
            fn()
    progress(f"{args.n} rounds, one inference per row per round")
    times: dict[str, list[float]] = {k: [] for k in rows}
    for i in range(args.n):
        for label, fn in rows.items():
            t = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t)
        if (i + 1) % 50 == 0:
            progress(f"{i + 1}/{args.n}")

    base = statistics.median(times["native onnxruntime"])
    print(f"EfficientNet-Lite0, one image, {args.n} interleaved rounds, threads: {args.threads or 'default'}; "
          f"onnxruntime {ort.__version__}, OpenVINO {ov.__version__.split('-')[0]}")
    print(f"{'path':<36} {'median ms':>10} {'p90 ms':>8} {'vs native onnxruntime':>22}")
    for label, ts in times.items():
        med = statistics.median(ts)
        print(f"{label:<36} {1e3 * med:10.2f} {1e3 * float(np.percentile(ts, 90)):8.2f} {med / base:21.2f}x")


if __name__ == "__main__":
    main()

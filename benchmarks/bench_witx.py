#!/usr/bin/env python3
"""The cost of the WITX zero-copy path: a core module's set_input + compute + get_output on
EfficientNet-Lite0, next to native onnxruntime's InferenceSession.run in the same process
with the same intra-op threads, interleaved, medians.

    .venv/bin/python benchmarks/bench_witx.py [--threads N] [-n ITERATIONS]

The guest is guest/witx-probe: the model and the input tensor are written into its memory
once, then each iteration calls its `infer_timed` export: set_input, compute, get_output
between two reads of WASI's monotonic clock, as a C or Rust program's loop would time them
(the guest's own work is nil). `witx_ms` is what the guest measures; `export_call_ms` is
the host's whole call of the export instead (`infer`, perf_counter around
`ModuleInstance.call`), which adds the host's entry into the guest and return, a cost a
program that loops inside wasm does not pay per inference. `ratio` is against native
onnxruntime on the same session; `default_session` is against one with onnxruntime's
default options. The machine is shared: run it more than once.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import struct
import time

import numpy as np
import onnxruntime as ort
import wasmtime

import wasinn
from wasinn._bindings import Resource
from wasinn.limits import Limits

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "efficientnet-lite0" / "model.onnx"
PROBE = ROOT / "guest" / "witx-probe" / "probe.wat"
OUTPUT_BYTES = 1000 * 4


def _interleaved(a, b, n: int) -> tuple[list[float], list[float]]:
    """Each of `a` and `b` runs once and returns the seconds it measured, `n` times in turn."""
    ta, tb = [], []
    for _ in range(n):
        ta.append(a())
        tb.append(b())
    return ta, tb


def _timed(f):
    def run() -> float:
        start = time.perf_counter()
        f()
        return time.perf_counter() - start
    return run


def measure_witx(threads: int, n: int = 200) -> dict:
    """Medians in ms of the WITX path and of native onnxruntime, and their ratio."""
    model = MODEL.read_bytes()
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    # in process (--isolate none): the rows compare the path with onnxruntime on the very
    # session the guest's graph runs on (the isolation section has the worker's cost)
    host = wasinn.Host(cache_dir=False, ort_threads=threads, limits=Limits(isolate="none"))
    inst = host.instantiate(host.load_component(wasmtime.wat2wasm(PROBE.read_text())))
    store = inst._ensure()
    memory = inst.memory
    align = lambda offset: -(-offset // 64) * 64  # noqa: E731  (as a program's allocator would place them)
    layout = {"model": 0x10000}
    layout["input"] = align(layout["model"] + len(model))
    layout["output"] = align(layout["input"] + x.nbytes)
    layout["records"] = align(layout["output"] + OUTPUT_BYTES)
    memory.grow(store, (layout["records"] + 0x1000) // 65536 + 1 - memory.size(store))
    inst.write(layout["model"], model)
    inst.write(layout["input"], x.tobytes())
    r = layout["records"]
    dims, array, tensor, slot, clock = r, r + 16, r + 32, r + 64, r + 128
    inst.write(dims, struct.pack("<4I", *x.shape))
    inst.write(array, struct.pack("<II", layout["model"], len(model)))
    inst.write(tensor, struct.pack("<IIBxxxII", dims, 4, 1, layout["input"], x.nbytes))
    read_slot = lambda: struct.unpack("<I", inst.read(slot, 4))[0]  # noqa: E731
    assert inst.call("load", array, 1, 1, 0, slot) == 0
    graph = read_slot()
    assert inst.call("init_execution_context", graph, slot) == 0
    ctx = read_slot()

    witx = lambda: inst.call("infer", ctx, tensor, layout["output"], OUTPUT_BYTES, slot)  # noqa: E731

    def guest_timed() -> float:
        assert inst.call("infer_timed", ctx, tensor, layout["output"], OUTPUT_BYTES, slot, clock) == 0
        start, end = struct.unpack("<QQ", inst.read(clock, 16))
        return (end - start) / 1e9
    # Native onnxruntime twice: on the very session the guest's graph runs on (the path's
    # own cost), and on a session with onnxruntime's default options (what an application
    # would make; wasinn's backend turns the CPU arena off, see backends/onnxruntime.py).
    same = host.nn.find(store, graph, Resource.GRAPH).session
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    default = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])
    runs = {"same_session": lambda: same.run(None, {"input": x}),
            "default_session": lambda: default.run(None, {"input": x})}
    for _ in range(5):  # warm-up all
        assert witx() == 0
        for run in runs.values():
            run()
    got = np.frombuffer(inst.read(layout["output"], OUTPUT_BYTES), np.float32)
    assert np.allclose(got, runs["default_session"]()[0].ravel(), atol=1e-4)
    result = {"threads": threads, "iterations": n}
    for name, run in runs.items():
        tw, tn = _interleaved(guest_timed, _timed(run), n)
        w, nat = 1e3 * statistics.median(tw), 1e3 * statistics.median(tn)
        result[name] = {"witx_ms": round(w, 3), "native_ms": round(nat, 3), "ratio": round(w / nat, 3)}
    tc, tn = _interleaved(_timed(witx), _timed(runs["same_session"]), n)
    c, nat = 1e3 * statistics.median(tc), 1e3 * statistics.median(tn)
    result["same_session"].update(export_call_ms=round(c, 3), export_call_native_ms=round(nat, 3),
                                  export_call_ratio=round(c / nat, 3))
    inst.close()
    result["ratio"] = result["same_session"]["ratio"]
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads on both sides (default 1)")
    ap.add_argument("-n", type=int, default=200, help="iterations of each (default 200)")
    args = ap.parse_args()
    print(json.dumps(measure_witx(args.threads, args.n)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

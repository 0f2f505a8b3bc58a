"""`wasinn run` and `wasinn build` as a user runs them: a command guest written
against wit/ loads models by bytes and by name, and its outputs equal native ones."""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import wasmtime

from support import models
from support.repo import CACHE, ROOT

A = np.arange(6, dtype=np.float32).reshape(2, 3)
B = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)


def wasinn(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wasinn", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture
def data(tmp_path) -> pathlib.Path:
    (tmp_path / "model.onnx").write_bytes(models.add_mul())
    A.tofile(tmp_path / "a.bin")
    B.tofile(tmp_path / "b.bin")
    (tmp_path / "out").mkdir()
    return tmp_path


def native_outputs() -> dict[str, bytes]:
    feeds = {"a": (models.TensorType.FP32, (2, 3), A.tobytes()), "b": (models.TensorType.FP32, (2, 3), B.tobytes())}
    return dict(models.native(models.add_mul(), feeds))


INPUTS = ["a=FP32:2,3:/data/a.bin", "b=FP32:2,3:/data/b.bin"]


def test_command_guest_loads_by_bytes_and_matches_native(nn_cli_wasm, data):
    proc = wasinn("run", "--cache-dir", str(CACHE), "--dir", f"{data}::/data", str(nn_cli_wasm),
                  "--file", "/data/model.onnx", "--out", "/data/out", *INPUTS)
    assert proc.returncode == 0, proc.stderr
    assert [line.split("\t")[0] for line in proc.stdout.splitlines()] == ["sum", "product"]
    for name, want in native_outputs().items():
        assert (data / "out" / f"{name}.bin").read_bytes() == want


@pytest.mark.parametrize("flag", ["--model", "-S"])
def test_command_guest_loads_by_name_and_matches_native(nn_cli_wasm, data, tmp_path, flag):
    if flag == "--model":
        registration, name = ["--model", f"adder={data / 'model.onnx'}"], "adder"
    else:  # wasmtime's form: DIR/model.onnx, named by DIR's base name
        graph_dir = tmp_path / "mygraph"
        graph_dir.mkdir()
        (graph_dir / "model.onnx").write_bytes(models.add_mul())
        registration, name = ["-S", "nn", "-S", f"nn-graph=onnx::{graph_dir}"], "mygraph"
    proc = wasinn("run", "--cache-dir", str(CACHE), *registration, "--dir", f"{data}::/data",
                  str(nn_cli_wasm), "--name", name, "--out", "/data/out", *INPUTS)
    assert proc.returncode == 0, proc.stderr
    for out_name, want in native_outputs().items():
        assert (data / "out" / f"{out_name}.bin").read_bytes() == want


def test_guest_errors_give_exit_status_1(nn_cli_wasm, data):
    proc = wasinn("run", "--cache-dir", str(CACHE), "--dir", f"{data}::/data", str(nn_cli_wasm),
                  "--name", "missing", *INPUTS)
    assert proc.returncode == 1
    assert "wasi:nn error NOT_FOUND: no graph named 'missing'" in proc.stderr


# a core module that sleeps 20 s in one WASI poll_oneoff (a relative monotonic clock)
SLEEPER = """
(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "\\01\\00\\00\\00")
  (data (i32.const 24) "\\00\\c8\\17\\a8\\04\\00\\00\\00")
  (func (export "_start") (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))
"""


def test_a_core_module_asleep_for_20_s_ends_at_its_deadline(tmp_path):
    """wasmtime runs preview1's poll_oneoff natively, where no epoch interrupt reaches: the
    host's cuts its clock subscriptions at the call's deadline (abi/clocks.py)."""
    import time
    import wasmtime
    wasm = tmp_path / "sleeper.wasm"
    wasm.write_bytes(wasmtime.wat2wasm(SLEEPER))
    started = time.monotonic()
    r = wasinn("run", "--deadline", "1s", str(wasm))
    # 20 s is what it takes where the sleep is not cut (the same trap, met after it); a
    # loaded machine's start and compile only add seconds to the deadline's one
    assert time.monotonic() - started < 15 and r.returncode == 1
    assert r.stderr.splitlines()[-1] == (
        "wasinn: guest trapped in _start: the call ran past its deadline of 1 s (limit 'deadline', --deadline); "
        "the instance was torn down and its resources freed, the next call gets a fresh one")


def test_a_call_held_in_one_long_node_past_its_deadline_ends_the_process_in_one_line(nn_cli_wasm, data):
    """In process (--isolate none), onnxruntime looks at its terminate flag only between
    nodes: nothing ends the call inside one Conv of seconds (the deadline leaves the load
    its time: the Conv starts before it). A second past the deadline the command ends the
    process, with one line."""
    import time
    from support import hostile_models
    (data / "long.onnx").write_bytes(hostile_models.onnx_long_conv())
    np.ones(1, np.float32).tofile(data / "x.bin")
    started = time.monotonic()
    r = wasinn("run", "--cache-dir", str(CACHE), "--isolate", "none", "--deadline", "3s", "--dir", f"{data}::/data",
               str(nn_cli_wasm), "--file", "/data/long.onnx", "x=FP32:1:/data/x.bin")
    assert time.monotonic() - started < 30 and r.returncode == 1, r.stderr
    assert r.stderr.splitlines()[-1].startswith(
        "wasinn: the call of wasi:cli/run@0.2.0#run is still running 1 s past its deadline of 3 s (limit 'deadline', "
        "--deadline), blocked in a host function no deadline interrupts") and r.stderr.endswith("; the process ends\n")


def test_invoke_calls_an_export(wasinn_host, data):
    from support.repo import guest_component
    proc = wasinn("run", "--cache-dir", str(CACHE), "--model", f"adder={data / 'model.onnx'}",
                  "--invoke", 'load-by-name("adder")', str(guest_component("roundtrip")))
    assert (proc.returncode, proc.stdout.strip()) == (0, "ok(1)"), proc.stderr
    proc = wasinn("run", "--cache-dir", str(CACHE), "--invoke", 'load-by-name("nope")',
                  str(guest_component("roundtrip")))
    assert proc.stdout.strip() == "err({code: not-found, data: \"no graph named 'nope'; registered: none\"})"


@pytest.mark.parametrize("args, message", [
    (["run", "missing.wasm"], "wasinn: error: cannot read component missing.wasm"),
    (["run", "--model", "x", "a.wasm"], "wasinn: error: --model wants NAME=PATH, got 'x'"),
    (["run", "--model", "x=/nonexistent.onnx", "a.wasm"], "wasinn: error: model 'x': no such file /nonexistent.onnx"),
    (["run", "-S", "nn-graph=onnx::/nonexistent", "a.wasm"], "wasinn: error: nn-graph: no such directory /nonexistent"),
    (["run", "-S", "nn-graph=weird::/tmp", "a.wasm"], "wasinn: error: nn-graph: unknown encoding 'weird'"),
    (["run", "-S", "threads", "a.wasm"], "wasinn: error: -S threads: wasinn understands -S nn"),
    (["build", "nothere.py", "-o", "x.wasm"], "wasinn: error: wasinn build wants a Python file"),
])
def test_bad_cli_input_is_one_clear_line(tmp_path, args, message):
    (tmp_path / "a.wasm").write_bytes(b"\0asm")
    proc = wasinn(*args, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith(message), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("wasm, message", [
    # core modules run (WITX): one with no entry, one whose `_start` is a global
    (b"\0asm\x01\0\0\0", "the module exports no function '_start'; the functions it exports: (none)"),
    (wasmtime.wat2wasm('(module (global (export "_start") i32 (i32.const 0)) (func (export "main")))'),
     "the module exports no function '_start'; the functions it exports: main"),
    (b"\0asm\x0d\0\x01\0junk", "a.wasm is truncated (12 bytes): a section at byte 10 runs past the end"),
    (b"\0asm\x02\0\0\0", "a.wasm is WebAssembly of a version wasinn does not read"),
])
def test_not_a_component_is_one_clear_line(tmp_path, wasm, message):
    (tmp_path / "a.wasm").write_bytes(wasm)
    proc = wasinn("run", "--cache-dir", str(tmp_path / "c"), "a.wasm", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.splitlines()[-1].startswith(f"wasinn: error: {message}")


@pytest.mark.parametrize("name, content, message", [
    ("README.md", (ROOT / "README.md").read_bytes(), "README.md is not a WebAssembly file (it starts with "
                                                     "'# wasinn'...); wasinn runs WebAssembly components"),
    ("model.onnx", models.add_mul(), "model.onnx is not a WebAssembly file (it starts with bytes 08 "),
    ("app.py", b"import sys\n", "app.py is not a WebAssembly file (it starts with 'import sys'...); "
                                "build it into a component first: wasinn build"),
    ("a.wasm", b"", "a.wasm is empty, not a WebAssembly file"),
    ("a.wasm", b"\0as", "a.wasm is not a WebAssembly file (it starts with bytes 00 61 73)"),
])
@pytest.mark.parametrize("command", ["run", "compile"])
def test_a_file_that_is_not_wasm_says_so_first(tmp_path, name, content, message, command):
    (tmp_path / name).write_bytes(content)
    proc = wasinn(command, "--cache-dir", str(tmp_path / "c"), name, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.startswith(f"wasinn: error: {message}"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_truncated_wasm_is_one_line_before_any_progress(adder_wasm, tmp_path):
    data = adder_wasm.read_bytes()
    (tmp_path / "cut.wasm").write_bytes(data[:len(data) // 2])
    (tmp_path / "core.wasm").write_bytes(b"\0asm\x01\0\0\0\x01\x05\x01")  # a type section cut short
    for name, size in [("cut.wasm", len(data) // 2), ("core.wasm", 11)]:
        proc = wasinn("run", "--cache-dir", str(tmp_path / "c"), name, cwd=tmp_path)
        assert proc.returncode == 1 and proc.stderr.startswith(f"wasinn: error: {name} is truncated ({size} bytes): "
                                                               "a section at byte "), proc.stderr
        assert proc.stderr.rstrip().endswith("copy or build it again") and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("args, usage, hint", [
    (["run", "--memroy", "1GiB", "a.wasm"], "usage: wasinn run ", "wasinn run: error: unrecognized arguments: "
                                                                  "--memroy; did you mean --memory?"),
    (["build", "app.py", "-o", "a.wasm", "--wolrd", "w"], "usage: wasinn build ",
     "wasinn build: error: unrecognized arguments: --wolrd w; did you mean --world?"),
    (["serve", "--wrokers=2", "p.yaml"], "usage: wasinn serve ",
     "wasinn serve: error: unrecognized arguments: --wrokers=2; did you mean --workers?"),
    (["compile", "a.wasm", "--cache-dri", "c"], "usage: wasinn compile ",
     "wasinn compile: error: unrecognized arguments: --cache-dri c; did you mean --cache-dir?"),
])
def test_an_option_typo_is_a_usage_error_of_its_subcommand(tmp_path, args, usage, hint):
    proc = wasinn(*args, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith(usage), proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == hint


@pytest.mark.parametrize("before", [False, True])
def test_a_process_ends_with_mains_status_and_its_output_once_atexit_ran(tmp_path, before):
    """`wasinn` ends its process by os._exit after the atexit handlers (cli.main): the exit
    status is main's and what was printed is flushed; with a handler registered before
    main (which would run after that exit, e.g. a coverage tool's) it ends as Python does,
    the handler included."""
    code = ("import atexit, sys\n"
            + ("atexit.register(lambda: print(' and the earlier handler', end=''))\n" if before else "")
            + "from wasinn.cli import main\n"
            f"sys.argv = ['wasinn', 'run', {str(tmp_path / 'missing.wasm')!r}]\n"
            "print('printed', end='')\n"  # still in the buffer at exit: stdout is a pipe
            "sys.exit(main())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stdout) == (1, "printed and the earlier handler" if before else "printed"), proc.stderr
    assert proc.stderr.startswith("wasinn: error: cannot read component "), proc.stderr


def _last_line(proc: subprocess.CompletedProcess) -> str:
    """The one error line a failure prints (after any progress lines), checked to be the last."""
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("wasinn: error: ") and not any("Traceback" in line for line in lines), proc.stderr
    return lines[-1]


def test_build_reports_guest_errors_at_the_users_file_and_line(tmp_path):
    (tmp_path / "app.py").write_text("x = 1\ndef broken(:\n")
    proc = wasinn("build", "app.py", "-o", "app.wasm", cwd=tmp_path)
    assert _last_line(proc).startswith("wasinn: error: app.py:2: SyntaxError: invalid syntax")
    (tmp_path / "app.py").write_text("import nothere\n")
    proc = wasinn("build", "app.py", "-o", "app.wasm", cwd=tmp_path)
    assert _last_line(proc) == "wasinn: error: app.py:1: ModuleNotFoundError: No module named 'nothere'"
    (tmp_path / "app.py").write_text("x = 1\n")  # no `class Run`: the default world's export
    proc = wasinn("build", "app.py", "-o", "app.wasm", cwd=tmp_path)
    assert _last_line(proc).startswith("wasinn: error: app.py defines no class Run, which world "
                                       "wasinn:guest/ml-command exports")


ADDER_WIT = (ROOT / "guest" / "adder-lib" / "adder.wit").read_text()


@pytest.fixture
def two_worlds(tmp_path) -> pathlib.Path:
    (tmp_path / "app.py").write_text((ROOT / "guest" / "adder-lib" / "app.py").read_text())
    (tmp_path / "adder.wit").write_text(ADDER_WIT + "\nworld other {\n    include wasinn:guest/ml@0.1.0;\n}\n")
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["--world", "example:adder/addr"], "no world example:adder/addr to build; did you mean example:adder/adder? "
                                        "adder.wit declares: example:adder/adder, example:adder/other"),
    (["--world", "nope"], "no world nope to build; adder.wit declares: example:adder/adder, example:adder/other"),
    ([], "adder.wit declares 2 worlds, pick one with --world: example:adder/adder (adder.wit:3), "
         "example:adder/other (adder.wit:8)"),
])
def test_build_world_errors_list_the_worlds_the_users_wit_declares(two_worlds, args, message):
    proc = wasinn("build", "app.py", "-o", "app.wasm", "--wit", "adder.wit", *args, cwd=two_worlds)
    assert _last_line(proc) == f"wasinn: error: {message}"
    assert len(proc.stderr.strip().splitlines()) == 1  # refused before the build's progress line


def test_build_without_wit_names_wasinns_worlds(tmp_path):
    (tmp_path / "app.py").write_text("x = 1\n")
    proc = wasinn("build", "app.py", "-o", "app.wasm", "--world", "ml-comand", cwd=tmp_path)
    assert _last_line(proc).startswith("wasinn: error: no world ml-comand to build; did you mean "
                                       "wasinn:guest/ml-command? wasinn's wit/ declares: ")


def test_build_says_what_a_guest_of_its_own_world_is_missing(tmp_path):
    (tmp_path / "app.py").write_text((ROOT / "guest" / "adder-lib" / "app.py").read_text())
    proc = wasinn("build", "app.py", "-o", "app.wasm", cwd=tmp_path)
    assert _last_line(proc) == ("wasinn: error: app.py defines class WitWorld, for a world of its own: pass its "
                                "WIT with --wit (without --wit, wasinn builds wasinn:guest/ml-command, which "
                                "wants class Run)")
    takes_tensor = ADDER_WIT.replace("a: list<f32>", "a: tensor")
    (tmp_path / "adder.wit").write_text(takes_tensor)
    proc = wasinn("build", "app.py", "-o", "app.wasm", "--wit", "adder.wit", cwd=tmp_path)
    assert _last_line(proc) == ("wasinn: error: adder.wit:5:25: name `tensor` is not defined; for wasi:nn's, add "
                                "`use wasi:nn/tensor@0.2.0-rc-2024-10-28.{tensor};` to the world")
    unversioned = takes_tensor.replace("world adder {", "world adder {\n    use wasi:nn/tensor.{tensor};")
    (tmp_path / "adder.wit").write_text(unversioned)
    proc = wasinn("build", "app.py", "-o", "app.wasm", "--wit", "adder.wit", cwd=tmp_path)
    assert _last_line(proc).startswith("wasinn: error: adder.wit:4:9: package 'wasi:nn' not found. known packages: "
                                       "wasi:nn@0.2.0-rc-2024-10-28, ")


def test_build_locates_a_wit_syntax_error_in_the_users_file(two_worlds):
    (two_worlds / "adder.wit").write_text(ADDER_WIT.replace("export add:", "export add::"))
    proc = wasinn("build", "app.py", "-o", "app.wasm", "--wit", "adder.wit", cwd=two_worlds)
    assert _last_line(proc) == "wasinn: error: adder.wit:5:16: expected an identifier or string, found ':'"
    wit_dir = two_worlds / "wit"  # a directory of the user's .wit files
    wit_dir.mkdir()
    (two_worlds / "adder.wit").rename(wit_dir / "adder.wit")
    proc = wasinn("build", "app.py", "-o", "app.wasm", "--wit", "wit", cwd=two_worlds)
    assert _last_line(proc) == "wasinn: error: wit/adder.wit:5:16: expected an identifier or string, found ':'"


def test_build_with_wit_and_no_world_builds_its_one_world(tmp_path):
    (tmp_path / "app.py").write_text((ROOT / "guest" / "adder-lib" / "app.py").read_text())
    (tmp_path / "adder.wit").write_text(ADDER_WIT)
    proc = wasinn("build", "app.py", "-o", "lib.wasm", "--wit", "adder.wit", cwd=tmp_path)
    assert proc.returncode == 0 and "(world example:adder/adder, fast path)" in proc.stderr, proc.stderr
    proc = wasinn("run", "--cache-dir", str(tmp_path / "c"), "--invoke", "add([1.0], [2.0])",
                  "--model", f"adder={ROOT / 'models' / 'adder' / 'model.onnx'}", "lib.wasm", cwd=tmp_path)
    assert proc.stdout.strip() == "ok([3.0])", proc.stderr


# --- the README's example guests (guest/adder, guest/adder-lib) and what a user meets ----
ADDER = ROOT / "models" / "adder" / "model.onnx"


@pytest.fixture(scope="module")
def adder_wasm() -> pathlib.Path:
    from wasinn import build
    return build.build_cached(build.guest_files(ROOT / "guest" / "adder"), name="adder",
                              world="wasinn:guest/ml-command", cache_dir=CACHE, progress=print)


@pytest.fixture(scope="module")
def adder_lib_wasm() -> pathlib.Path:
    from wasinn import build
    return build.build_cached(build.guest_files(ROOT / "guest" / "adder-lib"), name="adder-lib",
                              world="example:adder/adder", wit="adder.wit", cache_dir=CACHE, progress=print)


def test_the_example_guest_adds(adder_wasm):
    proc = wasinn("run", "--cache-dir", str(CACHE), "--model", f"adder={ADDER}", str(adder_wasm))
    assert (proc.returncode, proc.stdout) == (0, "sum [3] (11.0, 22.0, 33.0)\n"), proc.stderr


@pytest.mark.parametrize("model, registered", [(None, "none"), ("other", "'other'")])
def test_a_failed_run_says_its_last_wasi_nn_error(adder_wasm, model, registered):
    """The guest lets the wasi:nn Err escape: it prints nothing; wasinn says why."""
    proc = wasinn("run", "--cache-dir", str(CACHE), *(["--model", f"{model}={ADDER}"] if model else []),
                  str(adder_wasm))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (f"wasinn: {adder_wasm}: run failed; its last wasi:nn error was "
                                            f"not-found: no graph named 'adder'; registered: {registered}")


def test_a_guest_failing_on_its_own_is_reported_too(nn_cli_wasm):
    proc = wasinn("run", "--cache-dir", str(CACHE), str(nn_cli_wasm), "--bogus")
    assert proc.returncode == 1
    # after the compile's progress line where the cache is cold
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("wasinn: compiling ")]
    assert lines[0] == "nn-cli: unexpected argument '--bogus'"
    assert lines[-1] == (f"wasinn: {nn_cli_wasm}: run failed; no wasi:nn call failed, so "
                         "the cause is the guest's own")


def test_wasinn_flags_after_the_component_are_the_guests_and_warned_of(adder_wasm):
    proc = wasinn("run", "--cache-dir", str(CACHE), str(adder_wasm), "--model", f"adder={ADDER}", "-S", "nn")
    assert proc.stderr.startswith(f"wasinn: warning: --model -S after {adder_wasm} go to the guest")
    assert proc.returncode == 1  # the guest got the model flag: no model registered
    quiet = wasinn("run", "--cache-dir", str(CACHE), str(adder_wasm), "--", "--model", f"adder={ADDER}")
    assert "warning" not in quiet.stderr


def test_invoke_exit_status_follows_the_result(adder_lib_wasm):
    ok = wasinn("run", "--cache-dir", str(CACHE), "--invoke", "add([1.0, 2.0], [10.0, 20.0])",
                "--model", f"adder={ADDER}", str(adder_lib_wasm))
    assert (ok.returncode, ok.stdout) == (0, "ok([11.0, 22.0])\n"), ok.stderr
    err = wasinn("run", "--cache-dir", str(CACHE), "--invoke", "add([1.0], [2.0])", str(adder_lib_wasm))
    assert (err.returncode, err.stdout) == (1, "err(\"NOT_FOUND: no graph named 'adder'; registered: none\")\n")


def test_the_example_library_survives_wasinn_fuzz(adder_lib_wasm):
    # it trapped on lists of unequal length: the README taught a crash
    proc = wasinn("fuzz", "--cache-dir", str(CACHE), str(adder_lib_wasm), "--export", "add",
                  "--model", f"adder={ADDER}", "--examples", "100")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    odd = wasinn("run", "--cache-dir", str(CACHE), "--invoke", "add([1.0], [])", str(adder_lib_wasm))
    assert (odd.returncode, odd.stdout) == (1, 'err("add takes two lists of one length, got 1 and 0 values")\n')


def test_running_a_library_component_names_its_exports(adder_lib_wasm):
    proc = wasinn("run", "--cache-dir", str(CACHE), str(adder_lib_wasm))
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == ("wasinn: error: the component is not a command (it exports no "
                                            "wasi:cli/run@0.2.0); call one of its exports instead (--invoke): add")


def test_a_memory_limit_below_the_start_says_what_is_needed(adder_wasm):
    proc = wasinn("run", "--cache-dir", str(CACHE), "--memory", "1MiB", str(adder_wasm))
    assert proc.returncode == 1
    assert re.fullmatch(r"wasinn: error: cannot instantiate the component: its memory starts at \d+\.\d MiB; "
                        r"the limit is 1 MiB \(limit 'memory', --memory\)", proc.stderr.strip()), proc.stderr


@pytest.fixture
def tiny_wasm(tmp_path) -> pathlib.Path:
    from support.tiny_component import tiny_component
    (path := tmp_path / "tiny.wasm").write_bytes(tiny_component())
    return path


def test_compile_says_when_it_found_the_component_compiled(tiny_wasm, tmp_path):
    cache = tmp_path / "cache"
    first = wasinn("compile", "--cache-dir", str(cache), str(tiny_wasm))
    assert re.fullmatch(rf"{re.escape(str(tiny_wasm))}: compiled in \d+\.\d s and cached in .*", first.stdout.strip())
    again = wasinn("compile", "--cache-dir", str(cache), str(tiny_wasm))
    assert again.stdout.strip() == f"{tiny_wasm}: already compiled, found in {cache / 'compiled'}"


def test_compile_says_when_another_process_compiled_it_meanwhile(tiny_wasm, tmp_path):
    import shutil

    from wasinn import Host
    from wasinn.files import making

    from support.internals import compiled_entry
    cache = tmp_path / "cache"
    entry = compiled_entry(Host(cache_dir=cache)._engine.cache, tiny_wasm.read_bytes())
    with making(entry):  # the other process
        waiter = subprocess.Popen([sys.executable, "-m", "wasinn", "compile", "--cache-dir", str(cache),
                                   str(tiny_wasm)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert waiter.stderr.readline().startswith("wasinn: waiting for another process compiling ")
        Host(cache_dir=tmp_path / "other").load_component(tiny_wasm)
        for part in (tmp_path / "other" / "compiled").glob(entry.name.removesuffix(".cwasm") + ".*"):
            shutil.copy(part, entry.parent / part.name)
    out, _ = waiter.communicate(timeout=300)
    assert re.fullmatch(rf"{re.escape(str(tiny_wasm))}: compiled by another process meanwhile, found after "
                        rf"\d+\.\d s in {re.escape(str(cache / 'compiled'))}", out.strip()), out


def test_help_texts():
    compile_help = wasinn("compile", "--help").stdout
    assert "--fuel" in compile_help and "--max-graphs" not in compile_help and "--deadline" not in compile_help
    run_help = wasinn("run", "--help").stdout
    assert "(None)" not in run_help and "(2GiB)" in run_help


def test_doctor_reports_versions_cache_and_optional_parts(tmp_path):
    (tmp_path / "compiled").mkdir()
    (tmp_path / "compiled" / "x.cwasm").write_bytes(b"x" * 2_000_000)
    proc = wasinn("doctor", "--cache-dir", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["runtime"]["wasmtime-py"] == "wasmtime 50.0.1"
    assert report["runtime"]["componentize-py"] == "componentize-py 0.25.1"
    assert set(report["backends"]) >= {"onnxruntime", "openvino", "tflite", "onnxruntime providers"}
    assert report["cache"]["compiled"] == "1 file, 2.0 MB"
    assert set(report["optional parts"]) == {"wasmtime CLI", "serve", "test tools", "mosquitto"}


def test_wasinns_own_lines_show_control_characters_as_escapes():
    """A guest's words reach wasinn's one-line errors (a backend naming a custom op of the
    guest's model): an escape sequence there had retitled the terminal and cleared it."""
    from wasinn.cli import shown
    assert shown("op Evil\x1b]0;PWNED\x07\x1b[2J; caf\u00e9\t\x9b") == \
        "op Evil\\x1b]0;PWNED\\x07\\x1b[2J; caf\u00e9\\x09\\x9b"

"""abi/streams.py: a guest's stdout and stderr are this process's, each write held to
its call's deadline: a guest writing to a pipe nobody reads meets the deadline's trap
(before, the watchdog ended the process a second later); where the reader keeps up,
the bytes are all there; and instances left open at exit leave nothing on stderr but
what their guests wrote (before: a Rust panic from wasmtime's stream threads, and a
finalizer's traceback). guest/c-hostile's `print N` writes N bytes in 64-byte lines; a
core module in WAT writes through preview1's fd_write for ever."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import wasmtime

from support.repo import CACHE, ROOT

ENV = dict(os.environ, PYTHONPATH=str(ROOT / "host"))


def wasinn(*args: str, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wasinn", *args], stdout=stdout, stderr=subprocess.PIPE,
                            env=ENV)


def unread(*args: str) -> tuple[subprocess.Popen, bytes, bytes]:
    """`wasinn run --deadline 1s ARGS`, its stdout read by nobody until it ends: the
    process, its stdout and its stderr. Which of the two ends it met is in its stderr:
    the deadline's trap names the deadline, the watchdog's end of the process (a blocked
    write that never returned to wasmtime) says the call is "still running"; how long the
    process took is no witness on a shared machine (its start and compile count too)."""
    start = time.monotonic()
    proc = wasinn("run", "--deadline", "1s", *args)
    while proc.poll() is None and time.monotonic() - start < 30:
        time.sleep(0.01)
    return proc, *proc.communicate(timeout=30)


def test_a_guest_writing_to_a_pipe_nobody_reads_is_ended_at_its_deadline(hostile):
    wasinn("run", str(hostile), "print", "1000").communicate(timeout=120)  # compiled, and cached
    proc, out, err = unread(str(hostile), "print", "10000000")
    message = err.decode().strip().splitlines()[-1]
    assert proc.returncode == 1, err.decode()[-2000:]
    assert "the call ran past its deadline of 1 s (limit 'deadline', --deadline)" in message, message
    assert "still running" not in err.decode()  # not the watchdog's end of the process
    assert 0 < len(out) < 10_000_000


# A core module (preview1's fd_write, not a component's output-stream) writing 64 KiB to
# stdout again and again, whatever each write returns.
FLOOD = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 65536))
    (memory.fill (i32.const 64) (i32.const 120) (i32.const 65536))
    (loop $again
      (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
      (br $again))))
"""


def test_a_core_module_writing_for_ever_to_a_pipe_nobody_reads_is_ended_at_its_deadline(tmp_path):
    module = tmp_path / "flood.wasm"
    module.write_bytes(wasmtime.wat2wasm(FLOOD))
    proc, _, err = unread(str(module))
    message = err.decode().strip().splitlines()[-1]
    assert proc.returncode == 1 and "guest trapped in _start: the call ran past its deadline of 1 s" in message, \
        err.decode()[-2000:]
    assert "still running" not in err.decode()  # not the watchdog's end of the process


# A core module whose wasi-nn call fails again and again (an execution context it never
# made): the host says so on stderr, one line a failing call.
FAILING = """
(module
  (import "wasi_ephemeral_nn" "get_output" (func $get_output (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $again
      (drop (call $get_output (i32.const 12345) (i32.const 0) (i32.const 64) (i32.const 16) (i32.const 0)))
      (br $again))))
"""


def test_the_hosts_lines_about_failing_calls_never_wait_for_a_pipe_nobody_reads(tmp_path):
    """Each failing call of a core module had its line written to stderr, waiting for the
    pipe: ~700 of them filled one nobody drained and the host blocked in write() for good,
    the watchdog's own last line too. Now a line the pipe cannot take at once is left out,
    and at most 100 a second are written; the call ends at its deadline."""
    module = tmp_path / "failing.wasm"
    module.write_bytes(wasmtime.wat2wasm(FAILING))
    proc, _, err = unread(str(module))
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1 and "guest trapped in _start: the call ran past its deadline of 1 s" in lines[-1], \
        err.decode()[-2000:]
    lines = lines[[i for i, line in enumerate(lines) if "wasi_ephemeral_nn" in line][0]:]  # (a compile's line first)
    assert lines[0] == ("wasinn: wasi_ephemeral_nn.get_output: invalid_argument: unknown execution context "
                        "handle 12345")
    assert 2 < len(lines) < 400 and lines[100] == ("wasinn: more than 100 such lines in a second; the rest of this "
                                                  "second's are left out"), lines[98:102]


def test_a_reader_that_keeps_up_gets_every_byte(hostile):
    out, err = wasinn("run", "--deadline", "30s", str(hostile), "print", "1000000").communicate(timeout=120)
    assert out == (b"x" * 63 + b"\n") * 15625
    assert err.decode().splitlines()[-1] == "printed, 0 writes failed"


def test_instances_left_open_at_exit_leave_nothing_on_stderr(hostile):
    script = textwrap.dedent(f"""
        import wasinn
        host = wasinn.Host(cache_dir={str(CACHE)!r})
        component = host.load_component({str(hostile)!r})
        left = [host.instantiate(component, args=["print", "1000"]) for _ in range(3)]
        for inst in left:
            inst.run()
        print("exiting", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.splitlines() == ["printed, 0 writes failed"] * 3, done.stderr[-3000:]
    assert done.stdout == ("x" * 63 + "\n") * 16 * 3 + "exiting\n"


def test_a_call_still_writing_in_a_daemon_thread_at_exit_leaves_nothing_on_stderr(hostile):
    """Its store stays open (closing it would free what the call uses); its next write
    waits for the process's end instead of calling into Python as it finalizes."""
    script = textwrap.dedent(f"""
        import sys, threading, time, wasinn
        host = wasinn.Host(cache_dir={str(CACHE)!r})
        inst = host.instantiate(host.load_component({str(hostile)!r}), args=["print", "100000000"])
        threading.Thread(target=inst.run, daemon=True).start()
        time.sleep(0.5)
        print("exiting", file=sys.stderr, flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=ENV, timeout=120)
    assert (done.returncode, done.stderr) == (0, "exiting\n"), done.stderr[-3000:]


def test_commands_whose_instance_closed_just_before_the_interpreters_exit_end_cleanly():
    """wasmtime drops a closed store's streams on its own threads a moment later; the exit
    waits for those of stores closed before it too. `wasinn run` of a core module that
    prints what a model preloaded in process computes, called as `main(argv)` (so the
    interpreter's whole exit runs, onnxruntime's threads still spinning): before, 2 of 40
    such processes died of SIGSEGV or a Rust panic as they exited. 30 in a row here."""
    from support.guest_builds import ToolchainMissing, c_module, skip_without
    try:
        peer = c_module([ROOT / "guest" / "peer-wasmedge" / "app.c"], name="peer-wasmedge")
    except ToolchainMissing as e:
        skip_without(e)
    argv = ["run", "--cache-dir", str(CACHE), "--nn-preload",
            f"default:ONNX:AUTO:{ROOT / 'models' / 'adder' / 'model.onnx'}", str(peer), "default"]
    code = f"import sys; from wasinn.cli import main; sys.exit(main({argv!r}))"
    for _ in range(30):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
        assert done.returncode == 0 and "panicked" not in done.stderr, (done.returncode, done.stderr[-3000:])
        assert done.stdout.split() == ["1.5", "2.5", "3.5", "4.5", "5.5", "6.5"], done.stdout

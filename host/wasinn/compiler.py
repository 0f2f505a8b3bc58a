"""Guests' binaries compiled in a confined helper process, so that what wasmtime's
compiler does with hostile bytes costs the host neither its memory nor its life.

Cranelift's memory and time grow with a function's shape, not its size: one function of
2.5 million empty blocks (a 7.5 MB module) took it to 2.1 GB, 1,000 functions of 50,000
locals each (8 KB) 2.5 s, and a compiler panic aborts the process it runs in. No bound on
the binary that a real guest passes can rule those out (real guests' compiles peak at
0.4-1 GB of address space), so the compile runs where its cost has a cap instead: a
helper interpreter (`python -P -m wasinn.compiler`) that confines itself as a backend
worker does (backends/confine.py: nothing to write, nothing to read but the interpreter's
files, no processes, no network) and compiles each binary it is sent, under an
address-space cap of `max-compile-memory`, for an engine configured as the host's
(`config`); it sends back the compiled form, which the host deserializes. Past
`compile-timeout` it is killed. Each failure is one line: wasmtime's own refusal of an
invalid binary (`Invalid`, which the callers phrase), the cap, the timeout, or the
helper's death; the next compile starts a fresh helper.

A process compiles one binary at a time, so that `max-compile-memory` bounds all its
compiles together. The helper is kept for the next (its start, ~0.15 s of imports, would
otherwise be paid by every small module: a test suite's, a fuzzer's; a warm one compiles
a small module in ~1 ms, as in process), but not after a binary over `_REUSE_BELOW` (the
memory its compile took stays with it) nor past `_IDLE_SECONDS` without work, when it
ends itself: an idle one holds ~30 MiB.

What this does not contain: the compiled form is native code that the host runs, so a
compiler bug that let a guest choose the code it emits would reach the host as it would
in any wasmtime host (SECURITY.md).
"""
from __future__ import annotations

import atexit
import os
import re
import select
import signal
import struct
import sys
import threading
import time
from typing import TYPE_CHECKING

from .copies import joined
from .errors import WasinnError

if TYPE_CHECKING:
    import subprocess

_REQUEST = struct.Struct("<????QQ")  # module, fuel, memory_may_move, keep (after it), max_memory, length
_REPLY = struct.Struct("<BQ")  # status, length
_OK, _INVALID, _NO_MEMORY = 0, 1, 2
_IDLE_EXIT = 3  # a helper's exit status when it ended itself, idle
_IDLE_SECONDS = 30.0
_REUSE_BELOW = 1 << 20

# what Rust says as it aborts on an allocation the cap refused: its allocator's words,
# and Cranelift's where it checks
_RAN_OUT = re.compile(r"^memory allocation of \d+ bytes failed|out of memory", re.M)

# One compile at a time in a process, so that max-compile-memory bounds them all (wasmtime
# compiles a binary's functions on every core anyway); the helper kept for the next one.
_compiling = threading.Lock()
_kept: subprocess.Popen | None = None


class Invalid(WasinnError):
    """wasmtime refused the binary as invalid: its message."""


def config(*, fuel: bool, memory_may_move: bool = True):
    """The wasmtime settings that shape compiled code, the host's engines' and the
    helper's alike (a compiled form is only deserialized by an engine of the same)."""
    import wasmtime
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.consume_fuel = fuel
    config.memory_may_move = memory_may_move
    # as HostMemories.install (abi/memory.py) sets it for the host's engines: a compiled
    # form records it, and the helper's engine has no host memories to install
    config.memory_init_cow = False
    return config


def compile_confined(engine, wasm: bytes, *, module: bool, fuel: bool, memory_may_move: bool = True,
                     max_memory: int, timeout: float, label: str):
    """`wasm` compiled for `engine` (configured by `config` with the same arguments) in
    a helper: a `wasmtime.Module` if `module`, else a component."""
    global _kept
    keep = len(wasm) < _REUSE_BELOW
    request = _REQUEST.pack(module, fuel, memory_may_move, keep, max_memory, len(wasm))
    with _compiling:
        while True:
            helper, _kept = _kept, None
            fresh = helper is None or helper.poll() is not None
            if fresh:
                if helper is not None:
                    _end(helper)
                helper = _start()
            try:
                status, payload = _exchange(helper, request, wasm, time.monotonic() + timeout if timeout else None)
            except _Gone:
                said = _end(helper)
                if not fresh and helper.returncode == _IDLE_EXIT:
                    continue  # it ended itself, idle, as the request went out: a fresh one takes it
                raise WasinnError(_death(helper.returncode, said, label, max_memory)) from None
            except TimeoutError:
                _end(helper)
                raise WasinnError(f"compiling {label} took longer than {timeout:g} s; the limit is {timeout:g} s "
                                  "(compile-timeout, --compile-timeout)") from None
            except BaseException:
                _end(helper)
                raise
            break
        if keep and status != _NO_MEMORY:
            _kept = helper
        else:
            _end(helper)
    if status == _INVALID:
        raise Invalid(payload.decode(errors="replace"))
    if status == _NO_MEMORY:
        raise WasinnError(_out_of_memory(label, max_memory))
    import wasmtime
    from wasmtime.component import Component
    return (wasmtime.Module if module else Component).deserialize(engine, payload)


def _death(status: int, said: str, label: str, max_memory: int) -> str:
    if _RAN_OUT.search(said):
        return _out_of_memory(label, max_memory)
    how = f"died of {signal.Signals(-status).name}" if status < 0 else f"exited with status {status}"
    lines = [line for line in said.splitlines() if not line.startswith("note: run with `RUST_BACKTRACE")]
    last = f": {lines[-1]}" if lines else ""
    return f"wasmtime's compile of {label} {how}{last} (in wasinn's compile helper: the host is unharmed)"


def _out_of_memory(label: str, max_memory: int) -> str:
    return (f"compiling {label} needs more memory than wasmtime's compiler may take; the limit is "
            f"{max_memory >> 20} MiB (max-compile-memory, --max-compile-memory)")


class _Gone(Exception):
    """The helper ended before it replied."""


def _start() -> subprocess.Popen:
    import subprocess  # only once a compile needs it (`wasinn run` of a cached component never does)
    from .forkserver import worker_environment
    env = dict(worker_environment(os.environ), MALLOC_ARENA_MAX="2")  # glibc's arenas are address space too
    # the host's wasmtime, wherever it found it: a compiled form is only that version's
    wasmtime_root = os.path.dirname(os.path.dirname(sys.modules["wasmtime"].__file__))
    env["PYTHONPATH"] = os.pathsep.join((env["PYTHONPATH"], wasmtime_root))
    try:
        return subprocess.Popen([sys.executable, "-P", "-m", "wasinn.compiler"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/", env=env,
                                start_new_session=True)  # a terminal's Ctrl-C is the host's to handle
    except OSError as e:
        raise WasinnError(f"cannot start wasinn's compile helper: {e.strerror or e}") from None


@atexit.register
def end_kept() -> None:
    """Ends the helper kept for the next compile, if there is one (at exit: it would see
    its stdin close anyway, but its Popen would be reported as still running)."""
    global _kept
    if not _compiling.acquire(blocking=False):
        return  # a compile holds it: it ends with this process (`_end_with`)
    try:
        helper, _kept = _kept, None
    finally:
        _compiling.release()
    if helper is not None:
        _end(helper)


def _end(helper: subprocess.Popen) -> str:
    """Ends `helper` (if it has not ended) and says what it wrote to stderr."""
    if helper.poll() is None and not helper.stdin.closed:
        helper.stdin.close()  # an idle one's cue to end: it may be the only one it gets
    import subprocess
    try:
        helper.wait(timeout=0 if helper.returncode is None else None)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()
    said = helper.stderr.read().decode(errors="replace").strip()
    for pipe in (helper.stdin, helper.stdout, helper.stderr):
        pipe.close()
    return said


def _exchange(helper: subprocess.Popen, request: bytes, wasm: bytes, deadline: float | None) -> tuple[int, bytes]:
    try:
        helper.stdin.write(request)
        helper.stdin.write(wasm)
        helper.stdin.flush()
    except (BrokenPipeError, ConnectionResetError):
        raise _Gone from None
    status, length = _REPLY.unpack(_read(helper.stdout, _REPLY.size, deadline))
    return status, _read(helper.stdout, length, deadline)


def _read(pipe, n: int, deadline: float | None) -> bytes:
    chunks, left = [], n
    while left:
        wait = None if deadline is None else deadline - time.monotonic()
        if wait is not None and (wait <= 0 or not select.select([pipe], [], [], wait)[0]):
            raise TimeoutError
        chunk = os.read(pipe.fileno(), min(left, 1 << 20))
        if not chunk:
            raise _Gone
        chunks.append(chunk)
        left -= len(chunk)
    return joined(chunks)  # a slice at a time, the GIL free between (a large one held it 0.1 s and more)


# --- the helper --------------------------------------------------------------------------
def _serve() -> int:
    import resource
    import wasmtime  # before the lock-down: it may live where the host's path found it
    from wasmtime.component import Component
    from .backends import confine
    confine.limit_resources(None, None, 0)
    confine.drop_capabilities()
    # not confine.die_with_parent(): the signal comes when the thread that started it
    # ends, and a helper serves whichever thread compiles next
    threading.Thread(target=_end_with, args=(os.getppid(),), daemon=True).start()
    confine.landlock(confine.readable_paths(), [])
    confine.seccomp()
    requests, replies = sys.stdin.fileno(), sys.stdout.fileno()
    engines = {}
    while True:
        if not select.select([requests], [], [], _IDLE_SECONDS)[0]:
            return _IDLE_EXIT
        header = _read_all(requests, _REQUEST.size)
        if header is None:
            return 0  # the host closed its end
        module, fuel, memory_may_move, keep, max_memory, length = _REQUEST.unpack(header)
        # what Rust's allocator and Python cannot get past the cap ends the compile, not the machine
        resource.setrlimit(resource.RLIMIT_AS, (max_memory, resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            wasm = _read_all(requests, length)
            if wasm is None:
                return 0
            settings = (fuel, memory_may_move)
            if settings not in engines:
                engines[settings] = wasmtime.Engine(config(fuel=fuel, memory_may_move=memory_may_move))
            try:
                compiled = (wasmtime.Module if module else Component)(engines[settings], wasm)
            except wasmtime.WasmtimeError as e:
                status, payload = _INVALID, str(e).encode()
            else:
                status, payload = _OK, compiled.serialize()
            del wasm
        except MemoryError:
            status, payload = _NO_MEMORY, b""
        _write_all(replies, _REPLY.pack(status, len(payload)))
        _write_all(replies, payload)
        if not keep or status == _NO_MEMORY:
            return 0


def _end_with(parent: int) -> None:
    """Ends this helper once the host has ended, whatever it is compiling."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _read_all(fd: int, n: int) -> bytes | None:
    data = bytearray()
    while len(data) < n:
        chunk = os.read(fd, min(n - len(data), 1 << 20))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


if __name__ == "__main__":
    sys.exit(_serve())

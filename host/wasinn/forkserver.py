"""The backend workers' fork server as a process: started as soon as a program shows it
will need one, adopted by the first isolated load (isolated.Zygote), which then waits for
its ready message.

Its start is ~0.15-0.2 s of imports (numpy, onnxruntime, the backends), which run on
another CPU while the host goes on. Started at the first lookup of `wasinn.Host`, before
wasmtime's import (speculatively: the first Host's policy settles it), rather than as the
first instance that imports wasi:nn is made (still the start where a program never looks
`wasinn.Host` up, like the CLI), a guest's first `graph.load` of the 18.6 MB EfficientNet
in a fresh process went from 1.45-1.49x the in-process load to 1.11-1.24x (bench section
`isolation`). Nothing waits here: no thread, and a process that ends before its fork
server is up kills it rather than waiting for it.
"""
from __future__ import annotations

import atexit
import os
import sys
import threading

_lock = threading.Lock()
_started = None  # spawn()'s (process, socket, directory), not yet adopted
_starter = 0  # the pid that started it: a forked child starts its own
_speculative = False
_spent = False  # one start per process: after an adoption, isolated.zygote() starts its own


def start(speculative: bool = False) -> None:
    """Starts the fork server, unless one has been started here already."""
    global _started, _starter, _speculative, _spent
    with _lock:
        if _starter == os.getpid() and (_spent or _started is not None):
            return
        try:
            started = spawn()
        except OSError:  # no TMPDIR, no processes left...: the load that needs it tries again and says why
            return
        _started, _starter, _speculative, _spent = started, os.getpid(), speculative, False


def adopt():
    """What `start` left (as `spawn`), or None; whoever adopts it ends it."""
    global _started, _starter, _spent
    with _lock:
        started = _started if _starter == os.getpid() else None
        _started, _starter, _spent = None, os.getpid(), True
        return started


def settle(isolates_guest_models: bool) -> None:
    """The first Host's word on a speculative start: kept where its policy isolates
    guest models, ended where not, if no load has adopted it yet (an instance that
    imports wasi:nn under a later Host's isolating policy starts one again)."""
    global _speculative, _spent
    with _lock:
        speculative, _speculative = _speculative, False
    if speculative and not isolates_guest_models and _abandon():
        with _lock:
            _spent = False


def spawn():
    """A fork server's process, the host's end of its socket, and the directory its
    workers' own lie in (made here, so that whoever ends the process removes it, however
    far its start had gone)."""
    import socket
    import subprocess  # only where a worker is ever needed (wasinn classify never does)
    import tempfile
    directory = tempfile.mkdtemp(prefix="wasinn-workers-")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = dict(worker_environment(os.environ), MALLOC_ARENA_MAX="2", OPENBLAS_NUM_THREADS="1")
    quiet = os.environ.get("WASINN_WORKER_STDERR") != "1"  # backends' own complaints about hostile models
    try:
        with theirs:
            process = subprocess.Popen(
                [sys.executable, "-P", "-m", "wasinn.backends.worker", str(theirs.fileno()), directory],
                pass_fds=(theirs.fileno(),), cwd="/", env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL if quiet else None)
    except BaseException:
        ours.close()
        os.rmdir(directory)
        raise
    return process, ours, directory


# What a worker's interpreter and backends read from the environment: the rest (the
# operator's credentials, tokens, whatever the host was started with) stays out of the
# process that parses a guest's model, which could hand it back to the guest.
_WORKER_NAMES = {"PATH", "LANG", "LANGUAGE", "TZ", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "TMPDIR"}
_WORKER_PREFIXES = ("LC_", "PYTHON", "WASINN_", "ORT_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "OV_", "OPENVINO_",
                    "TF_", "CUDA_", "NVIDIA_")


def worker_environment(environ) -> dict[str, str]:
    """The part of `environ` a backend worker (or the compile helper) gets, with this
    wasinn first on its path: its `python -m wasinn...` must run the host's own code (the
    host may have found it on a path of its own making, or beside another installed)."""
    env = {k: v for k, v in environ.items() if k in _WORKER_NAMES or k.startswith(_WORKER_PREFIXES)}
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


@atexit.register
def _abandon() -> bool:
    """Ends a fork server that no load adopted; whether there was one."""
    started = adopt()
    if started is None:
        return False
    import shutil
    process, sock, directory = started
    sock.close()
    process.kill()
    process.wait()
    shutil.rmtree(directory, ignore_errors=True)
    return True

"""Starts and stops a real KServe model server (kserve_server.py, in .venv-kserve) on
loopback, for the remote-backend tests and benchmarks/bench_remote.py."""
from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
SERVER_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"
SERVER_SCRIPT = pathlib.Path(__file__).resolve().parent / "kserve_server.py"
START_TIMEOUT = 120.0  # importing kserve and loading the models: ~5 s idle, far more on a busy machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KServeServer:
    """`with KServeServer({"name": path, ...}, log) as server:` serves each model as
    /v2/models/NAME until the block ends."""

    def __init__(self, models: dict[str, os.PathLike], log: pathlib.Path, progress=print):
        self.models = models
        self.log = log
        self.progress = progress
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, name: str, **options) -> str:
        query = f"?{urllib.parse.urlencode(options)}" if options else ""
        return f"kserve+http://127.0.0.1:{self.port}/v2/models/{name}{query}"

    def __enter__(self) -> "KServeServer":
        if not SERVER_PYTHON.exists():
            raise RuntimeError(f"{SERVER_PYTHON} is missing: run scripts/setup-kserve.sh")
        self.progress(f"starting a KServe model server on 127.0.0.1:{self.port} ({', '.join(self.models)})...")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [str(SERVER_PYTHON), str(SERVER_SCRIPT), str(self.port),
                 *(f"{name}={path}" for name, path in self.models.items())],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        ready = f"http://127.0.0.1:{self.port}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the KServe server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(ready, timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the KServe server was not ready within {START_TIMEOUT:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

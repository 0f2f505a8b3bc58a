"""A real OCI registry for the artifact tests: Debian's docker-registry (the CNCF
distribution registry) on a free loopback port, its storage a temp directory; artifacts
pushed with the `oras` SDK, as Azure's docs push operators and graphs.

    with Registry() as reg:
        reg.push_module("azure-samples/explore-iot-operations/temperature:1.0.0", wasm_path)
        reg.url   # http://127.0.0.1:PORT
"""
from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

WASM_LAYER = "application/vnd.wasm.content.layer.v1+wasm"
GRAPH_CONFIG = "application/vnd.microsoft.aio.graph.v1+yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def registry_binary() -> str:
    found = shutil.which("docker-registry") or shutil.which("registry")
    if not found:
        raise RuntimeError("docker-registry is not installed: run scripts/setup.sh (it runs scripts/setup-mqtt.sh)")
    return found


class Registry:
    def __init__(self):
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._dir = tempfile.TemporaryDirectory(prefix="wasinn-registry-")
        self.root = pathlib.Path(self._dir.name)
        (self.root / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.root / 'data'}\nhttp:\n  addr: {self.host}\n")
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Registry":
        self.proc = subprocess.Popen([registry_binary(), "serve", str(self.root / "config.yml")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/v2/", timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"docker-registry exited: {self.proc.stderr.read().decode()[-500:]}")
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not answer within 20 s")

    def __exit__(self, *exc) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc.stderr.close()
        self._dir.cleanup()

    def _push(self, ref: str, path: pathlib.Path, media_type: str, config_type: str | None = None) -> None:
        import oras.client
        client = oras.client.OrasClient(hostname=self.host, insecure=True)
        work = pathlib.Path(tempfile.mkdtemp(dir=self.root))
        shutil.copy(path, work / path.name)
        config = None
        if config_type:
            (work / "config.json").write_text("{}")
            config = f"{work / 'config.json'}:{config_type}"
        response = client.push(target=f"{self.host}/{ref}", files=[f"{work / path.name}:{media_type}"],
                               manifest_config=config, disable_path_validation=True, quiet=True)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"oras push {ref}: {response.status_code} {response.text[:200]}")

    def push_module(self, ref: str, wasm: pathlib.Path) -> None:
        self._push(ref, pathlib.Path(wasm), WASM_LAYER)

    def push_graph(self, ref: str, yaml_file: pathlib.Path) -> None:
        self._push(ref, pathlib.Path(yaml_file), "application/yaml", GRAPH_CONFIG)

"""A real redis-server on a free port, private to the test.

Plain: on loopback, no persistence. `persistence`: every write appended and fsynced
(appendonly yes, appendfsync always), as an operator configures a store that must
survive a restart (`restart()` keeps the data). `netns`: the server runs in that network
namespace, listening on `host`; the test, outside it, comes in through a Unix socket
(`socket_url`; the file system is shared between namespaces)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time


def redis_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
    if found is None:
        raise FileNotFoundError("redis-server is not installed: run scripts/setup-mqtt.sh")
    return found


class RedisServer:
    def __init__(self, *, persistence: bool = False, host: str = "127.0.0.1", netns: str | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.host, self.netns, self.persistence = host, netns, persistence
        self.url = f"redis://{host}:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="wasinn-redis-")
        self.socket_path = f"{self._dir.name}/redis.sock"
        self.socket_url = f"unix://{self.socket_path}?db=0"
        self.start()

    def url_from(self, address: str) -> str:
        """The URL for a client that reaches this server at `address` (another namespace)."""
        return f"redis://{address}:{self.port}/0"

    def start(self) -> None:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        durable = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistence else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [*prefix, redis_binary(), "--port", str(self.port), "--bind", self.host, "--protected-mode", "no",
             "--save", "", *durable, "--unixsocket", self.socket_path, "--dir", self._dir.name,
             "--daemonize", "no", "--loglevel", "warning"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as c:
                    c.settimeout(0.5)
                    c.connect(self.socket_path)
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.proc.stderr.read().decode(errors='replace')}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: redis-server finishes its append-only file, if on, and exits."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

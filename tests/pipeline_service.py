"""A real mosquitto and a real `wasinn serve` for the pipeline tests and the benchmark.

    with Broker() as broker, Service(broker, workers=2) as service, Results(broker) as results:
        publish(broker, "images/in", png_bytes, "msg-1")
        results.wait_for({"msg-1"}, timeout=30)

Everything listens on 127.0.0.1 only, on free ports; the broker's config is a temp file.
"""
from __future__ import annotations

import collections
import http.client
import json
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = pathlib.Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipelines" / "image-classification.yaml"
CACHE = ROOT / ".cache" / "tests" / "pipeline"
SOURCE, SINK, DEAD_LETTER = "images/in", "images/predictions", "images/dead-letter"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise RuntimeError("mosquitto is not installed: run scripts/setup.sh (it runs scripts/setup-mqtt.sh)")
    return found


class Broker:
    """mosquitto on a free loopback port, with MQTT 5 and unlimited per-session queues."""

    def __init__(self):
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="wasinn-mosquitto-")
        conf = pathlib.Path(self._dir.name) / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 0\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n")
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {self.proc.stderr.read().decode()}")
                time.sleep(0.02)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def client(broker: Broker, client_id: str = "") -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    return c


def publish(c: mqtt.Client, payload: bytes, ident: str, topic: str = SOURCE) -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("id", ident)]
    c.publish(topic, payload, qos=1, properties=props).wait_for_publish(timeout=10)


class Results:
    """Every message on the sink and dead-letter topics, by id (duplicates kept)."""

    def __init__(self, broker: Broker):
        self.by_id: dict[str, list[dict]] = collections.defaultdict(list)
        self.dead: dict[str, list[dict]] = collections.defaultdict(list)
        self.arrived: dict[str, float] = {}
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe([(SINK, 1), (DEAD_LETTER, 1)])
        if not subscribed.wait(10):
            raise RuntimeError("the results client could not subscribe")

    def _on_message(self, c, userdata, msg) -> None:
        body = json.loads(msg.payload)
        with self._cond:
            (self.dead if msg.topic == DEAD_LETTER else self.by_id)[body["id"]].append(body)
            self.arrived.setdefault(body["id"], time.perf_counter())
            self._cond.notify_all()

    def wait_for(self, ids, timeout: float) -> None:
        ids = set(ids)
        with self._cond:
            if not self._cond.wait_for(lambda: ids <= set(self.by_id) | set(self.dead), timeout):
                missing = sorted(ids - set(self.by_id) - set(self.dead))
                raise AssertionError(f"no result after {timeout} s for {len(missing)} of {len(ids)} "
                                     f"messages: {missing[:10]}")

    def count(self) -> int:
        with self._cond:
            return len(self.by_id)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Service:
    """`wasinn serve` as a subprocess; its JSON log lines are collected in `events`.

    `on_event(event)` (optional) is called from the reader thread for each line."""

    def __init__(self, broker: Broker, *, workers: int = 2, node: str = "test", pipeline: pathlib.Path = PIPELINE,
                 log_level: str = "debug", on_event=None, extra: tuple[str, ...] = ()):
        self.events: list[dict] = []
        self.on_event = on_event
        self._lock = threading.Lock()
        cmd = [sys.executable, "-m", "wasinn", "serve", str(pipeline), "--broker", broker.address,
               "--workers", str(workers), "--node", node, "--ort-threads", "1", "--metrics-port", "0",
               "--log-level", log_level, "--cache-dir", str(CACHE), *extra]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "text", "line": line.rstrip()}
            with self._lock:
                self.events.append(event)
            if self.on_event:
                self.on_event(event)

    def find(self, event: str, **fields) -> list[dict]:
        with self._lock:
            return [e for e in self.events if e.get("event") == event
                    and all(e.get(k) == v for k, v in fields.items())]

    def wait_event(self, event: str, timeout: float, **fields) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(event, **fields)
            if found:
                return found[-1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event} {fields} within {timeout} s; log tail:\n" + self.log_tail())

    def log_tail(self, n: int = 15) -> str:
        with self._lock:
            return "\n".join(json.dumps(e)[:300] for e in self.events[-n:])

    @property
    def health_url(self) -> str:
        return self.wait_event("metrics", 120)["health"]

    def health(self) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(self.health_url, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.health_url.replace("/healthz", "/metrics"), timeout=5) as r:
            return r.read().decode()

    def wait_ready(self, timeout: float = 180) -> dict:
        """Until /healthz says every worker is subscribed (the first run builds the stages)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"wasinn serve exited with {self.proc.returncode}:\n" + self.log_tail())
            if self.find("metrics"):
                try:
                    status, body = self.health()
                except (OSError, http.client.HTTPException):  # the endpoint may be mid-start
                    status = None
                if status == 200:
                    return body
            time.sleep(0.1)
        raise AssertionError("wasinn serve did not become ready:\n" + self.log_tail())

    def worker_pids(self) -> dict[str, int]:
        """Client id -> pid of the newest process running it."""
        return {e["worker"]: e["pid"] for e in self.find("worker-started")}

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            try:
                self.stop(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

"""A real mosquitto and a real `wasinn serve` for the pipeline tests and the benchmark.

    with Broker() as broker, Service(broker, workers=2) as service, Results(broker) as results:
        publish(broker, "images/in", png_bytes, "msg-1")
        results.wait_for({"msg-1"}, timeout=30)

Everything listens on 127.0.0.1 only (or inside network namespaces the test made), on
free ports; the broker's config is a temp file.
"""
from __future__ import annotations

import collections
import http.client
import json
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from support.pipeline_certs import give_to_mosquitto, password_file
from support.repo import CACHE

ROOT = pathlib.Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipelines" / "image-classification.yaml"
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
    """mosquitto with MQTT 5 and unlimited per-session queues, configured by the test.

    Plain: anonymous on a free loopback port. `certs` (pipeline_certs.Certificates): a
    TLS listener only; `users` (name -> password): a password file, no anonymous access
    (the test's own clients log in as the first user); `persistence`: sessions and
    queued messages survive `restart()`; `settings`: more of mosquitto.conf (e.g.
    max_packet_size, which its CONNACK gives). `netns`: the broker runs in that network
    namespace, listening on `host`; the test's clients, outside it, come in through a
    Unix socket (the file system is shared between namespaces) with the same login."""

    def __init__(self, *, certs=None, users: dict[str, str] | None = None, persistence: bool = False,
                 host: str = "127.0.0.1", netns: str | None = None, client_certs: bool = False,
                 settings: dict[str, object] | None = None):
        self.host, self.port, self.netns, self.certs = host, _free_port(), netns, certs
        self.address = f"{host}:{self.port}"
        self.user = next(iter(users.items())) if users else None
        self._dir = tempfile.TemporaryDirectory(prefix="wasinn-mosquitto-")
        root = pathlib.Path(self._dir.name)
        root.chmod(0o755)  # mosquitto, once it dropped to its own user, reads and writes in here
        data = root / "data"
        data.mkdir()
        give_to_mosquitto(data)
        self.socket_path = str(data / "mqtt.sock") if netns else None
        lines = ["per_listener_settings false", f"allow_anonymous {'false' if users else 'true'}",
                 f"persistence {'true' if persistence else 'false'}", f"persistence_location {data}/",
                 "max_queued_messages 0", "set_tcp_nodelay true", "log_dest stderr", "log_type error",
                 "log_type warning", f"listener {self.port} {host}"]
        lines[:0] = [f"{key} {value}" for key, value in (settings or {}).items()]
        if users:
            lines.insert(2, f"password_file {password_file(root / 'passwd', users)}")
        if certs:
            # copies in here: the test's own temporary directories are closed to other users
            for key, path in (("cafile", certs.ca), ("certfile", certs.server_cert), ("keyfile", certs.server_key)):
                shutil.copy(path, root / path.name)
                give_to_mosquitto(root / path.name)
                lines.append(f"{key} {root / path.name}")
            if client_certs:
                lines += ["require_certificate true"]
        if self.socket_path:
            lines += [f"listener 0 {self.socket_path}"]
        self.conf = root / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log_path = root / "mosquitto.log"
        self.proc = None
        self.start()

    def start(self) -> None:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([*prefix, mosquitto_binary(), "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.socket_path:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(self.socket_path)
                else:
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {self.log_path.read_text()}")
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file, if on, and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def connect(self, c: mqtt.Client, **kwargs) -> None:
        """Logs the test's client `c` in (TLS and password as configured) and connects it."""
        if self.user:
            c.username_pw_set(*self.user)
        if self.socket_path:
            c.connect(self.socket_path, **kwargs)
            return
        if self.certs:
            c.tls_set_context(ssl.create_default_context(cafile=str(self.certs.ca)))
        c.connect("127.0.0.1", self.port, **kwargs)

    def new_client(self, client_id: str = "", **kwargs) -> mqtt.Client:
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                           transport="unix" if self.socket_path else "tcp", **kwargs)

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def client(broker: Broker, client_id: str = "") -> mqtt.Client:
    c = broker.new_client(client_id)
    broker.connect(c)
    c.loop_start()
    return c


def connected_client(broker: Broker, client_id: str, dropped: list | None = None) -> mqtt.Client:
    """`client`, once the broker has accepted it; `dropped` collects why the broker
    dropped it, if it does."""
    c = broker.new_client(client_id)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    if dropped is not None:
        c.on_disconnect = lambda client, userdata, flags, reason, properties: dropped.append(str(reason))
    broker.connect(c)
    c.loop_start()
    assert connected.wait(10), f"the broker did not accept {client_id}"
    return c


def command_responder(broker: Broker, topic: str, answer) -> mqtt.Client:
    """A client that answers each MQTT 5 request on `topic` on its response topic, with
    its correlation data: `answer(request)` gives the payload and the user properties."""
    def respond(client, userdata, request):
        payload, user = answer(request)
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = request.properties.CorrelationData
        if user:
            props.UserProperty = user
        client.publish(request.properties.ResponseTopic, payload, qos=1, properties=props)
    c = connected_client(broker, f"responder-{topic.replace('/', '-')}")
    c.on_message = respond
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    c.subscribe(topic, qos=1)
    assert subscribed.wait(10), f"the responder did not subscribe to {topic}"
    return c


def echo_with_seen_k(request) -> tuple[bytes, list[tuple[str, str]]]:
    """The probe's commands answered: `re:` and the payload, the request's user property
    `k` as `seen`."""
    return b"re:" + request.payload, [("seen", dict(request.properties.UserProperty)["k"])]


def publish(c: mqtt.Client, payload: bytes, ident: str, topic: str = SOURCE) -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("id", ident)]
    c.publish(topic, payload, qos=1, properties=props).wait_for_publish(timeout=10)


def subscriber(broker: Broker, topics: list[str], on_message, persistent_id: str | None = None) -> mqtt.Client:
    """A started client subscribed to `topics` at QoS 1, its messages to `on_message`;
    with `persistent_id`, a session the broker keeps under that id, reconnecting by
    itself (for broker restarts)."""
    subscribed = threading.Event()
    client = broker.new_client(persistent_id or "")
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    client.reconnect_delay_set(0.1, 1)
    props = None
    if persistent_id:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 600
    broker.connect(client, clean_start=not persistent_id, properties=props)
    client.loop_start()
    client.subscribe([(t, 1) for t in topics])
    if not subscribed.wait(10):
        raise RuntimeError(f"a client could not subscribe to {topics}")
    return client


class Results:
    """Every message on the sink and dead-letter topics, by id (duplicates kept).
    `persistent`: a persistent session that reconnects by itself (for broker restarts)."""

    def __init__(self, broker: Broker, *, persistent: bool = False):
        self.by_id: dict[str, list[dict]] = collections.defaultdict(list)
        self.dead: dict[str, list[dict]] = collections.defaultdict(list)
        self.arrived: dict[str, float] = {}
        self._cond = threading.Condition()
        self.client = subscriber(broker, [SINK, DEAD_LETTER], self._on_message, "results" if persistent else None)

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
                 log_level: str = "debug", on_event=None, extra: tuple[str, ...] = (), netns: str | None = None,
                 address: str | None = None, env: dict | None = None, ort_threads: int = 1):
        """`netns`: run in that network namespace, reaching the broker at `address`.
        `ort_threads` 0: `wasinn serve`'s default (cores / workers)."""
        self.events: list[dict] = []
        self.on_event = on_event
        self._lock = threading.Lock()
        prefix = ["ip", "netns", "exec", netns] if netns else []
        cmd = [*prefix, sys.executable, "-m", "wasinn", "serve", str(pipeline), "--broker", address or broker.address,
               "--workers", str(workers), "--node", node, "--ort-threads", str(ort_threads), "--metrics-port", "0",
               "--log-level", log_level, "--cache-dir", str(CACHE), *extra]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env)
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

    def wait_subscribed(self, workers: int, timeout: float = 180) -> None:
        """Until `workers` workers have subscribed (for services whose /healthz is out of reach)."""
        deadline = time.monotonic() + timeout
        while len({e["worker"] for e in self.find("subscribed")}) < workers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{workers} workers did not subscribe:\n" + self.log_tail())
            time.sleep(0.05)

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


def pipeline_with(directory: pathlib.Path, **mqtt_settings) -> pathlib.Path:
    """The shipped pipeline file with `mqtt_settings` added to its mqtt block, written to
    `directory` (its module paths made absolute, so that they still resolve there)."""
    doc = yaml.safe_load(PIPELINE.read_text())
    base = PIPELINE.parent
    for module in doc["modules"]:
        module["path"] = str((base / module["path"]).resolve())
        for key in ("model", "labels"):
            if key in module.get("config", {}):
                module["config"][key] = str((base / module["config"][key]).resolve())
    doc["mqtt"].update(mqtt_settings)
    path = pathlib.Path(directory) / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# The sample photos as a stream of messages (ids -> photo names) and what each must be classified as.
IMAGES = {p.stem: p.read_bytes() for p in sorted((ROOT / "images").glob("*.png"))}
TOP1 = {"chelsea": "Egyptian cat", "coffee": "espresso", "camera": "tripod"}


def stream(n: int, prefix: str) -> dict[str, str]:
    """n message ids -> the sample photo each one carries."""
    names = sorted(IMAGES)
    return {f"{prefix}-{i:03d}": names[i % len(names)] for i in range(n)}


def send(broker: Broker, messages: dict[str, str]) -> None:
    c = client(broker)
    for ident, name in messages.items():
        publish(c, IMAGES[name], ident)
    c.disconnect()
    c.loop_stop()


def check_predictions(results: Results, messages: dict[str, str]) -> None:
    for ident, name in messages.items():
        for body in results.by_id[ident]:  # duplicates, if any, say the same
            assert body["result"]["predictions"][0]["label"] == TOP1[name], body

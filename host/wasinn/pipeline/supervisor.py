"""`wasinn serve`: builds the pipeline's (or data-flow graph's) components once, then runs and
supervises N workers.

Each worker is a process (`python -m wasinn.pipeline.worker`) with its own MQTT client
id, `GROUP-NODE-INDEX`. A worker that dies is started again under the same client id,
so it resumes its persistent session and the broker hands it the messages it had not
acknowledged. This matters with Debian's mosquitto 2.0.11, which does not give a dead
shared-subscription member's unacknowledged messages to the other members (upstream
issue 2662): without the restart they would wait for the session to expire.

SIGTERM or SIGINT: every worker finishes the messages it holds, then the supervisor
exits. Workers still busy after `drain_timeout` seconds are killed; what they held was
never acknowledged, so the broker keeps it for their next start. The sessions stay, so
messages published while the service is down wait for it.

The same broker behaviour means a slot that never comes back keeps receiving its share
of new messages, which then wait in its session. So the supervisor remembers how many
slots this node last ran (a small file in the cache directory, per broker, group and
node); started with fewer, it first retires the extra slots: a worker resumes each
one's session, finishes what it holds, and ends it.

Several machines: a worker whose machine is lost (power, network) is not restarted
by anyone, and its session keeps receiving its share. Every worker keeps a retained
presence (worker.py: up, stopped, or lost, the last as its will); each supervisor
follows all of its group's, and when a worker of another node has been lost for
`keepalive` seconds, the first node (by name) that has a worker up runs a retiring
worker for that client id: it finishes what waits in the session and ends it, and the
broker hands the lost worker no more messages. If the lost worker comes back first, it
takes its session over and the rescuer leaves. The grace matters: mosquitto publishes
every will at once when it is itself stopped cleanly, and the workers say `up` again
within seconds of its restart.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

from prometheus_client import multiprocess

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..errors import WasinnError
from ..limits import Limits
from ..runtime import Host
from . import connection
from .components import component_path
from .jsonlog import EventLog
from .metrics import MetricsServer, workers_directory
from .schema import Pipeline
from .worker import EXIT_CONFIG, presence_state, presence_topic

# How long the start waits for the broker to accept the supervisor's own connection,
# which tells a refused password at once; a broker that is down is waited for by retrying.
_FIRST_CONNECT_SECONDS = 10.0

# A worker that dies sooner than this after starting is restarted after a growing delay.
_STABLE_SECONDS = 10.0
_FIRST_DELAY, _MAX_DELAY = 0.5, 15.0


@dataclasses.dataclass
class _Slot:
    id: str
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    delay: float = _FIRST_DELAY
    restart_at: float = 0.0
    retiring: bool = False
    rescue: bool = False  # another node's lost worker, whose session this node drains
    done: bool = False  # a retiring slot whose session has ended


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    cache_dir: pathlib.Path       # built components, and the slot count of each node
    workers: int = 1
    node: str = "node"
    ort_threads: int = 1
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    log_level: str = "info"
    drain_timeout: float = 30.0
    limits: Limits = dataclasses.field(default_factory=Limits)  # each worker's instances'


def prepare(served, cache_dir: pathlib.Path, log: EventLog, state_seed: str | None = None) -> pathlib.Path:
    """Builds and compiles every module's component into the cache, so that workers
    only load compiled code (milliseconds) and never race to build. Returns the file
    the workers load: the pipeline file, or the resolved data-flow graph as JSON (whose
    state store gets the keys of `state_seed` first)."""
    host = Host(cache_dir=cache_dir, progress=lambda message: log.info("progress", message=message))
    if isinstance(served, Pipeline):
        for module in served.modules.values():
            host.load_component(component_path(module, cache_dir, host.progress))
        return served.path
    from .engine import check_kinds
    check_kinds(served, {ref: host.load_component(path) for ref, path in served.components.items()})
    if served.state_store:
        from .services import RedisStore
        store = RedisStore(served.state_store, timeout=2.0)
        try:
            warning = store.persistence_warning()
        finally:
            store.close()
        if warning:
            log.warning("state-store-not-durable", message=warning)
    if state_seed:
        from .engine import state_store
        from .services.state_store import seed
        store = state_store(served, cache_dir)
        try:
            log.info("state-seeded", keys=seed(store, state_seed), file=str(state_seed))
        finally:
            store.close()
    resolved = cache_dir / "serve" / f"{served.mqtt.group}-{hashlib.sha256(served.to_json().encode()).hexdigest()[:16]}.json"
    resolved.parent.mkdir(parents=True, exist_ok=True)
    if not resolved.is_file():
        tmp = resolved.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(served.to_json())
        os.replace(tmp, resolved)
    return resolved


class Supervisor:
    def __init__(self, pipeline, overrides: dict[str, str | None], options: ServeOptions, log: EventLog,
                 worker_file: pathlib.Path | None = None):
        """`pipeline`: what is served (a `Pipeline` or a `Dataflow`); `overrides`: the serve
        flags over the file (broker, tls_ca, username, password_file); `worker_file`: what
        the workers load (default: the pipeline's file)."""
        self.pipeline, self.overrides, self.options, self.log = pipeline, overrides, options, log
        self.worker_file = worker_file or pipeline.path
        m = pipeline.mqtt
        self.state_file = options.cache_dir / "serve" / f"{m.host}_{m.port}-{m.group}-{options.node}.json"
        previous = self._last_slots()
        self.slots = [_Slot(f"{m.group}-{options.node}-{i}", retiring=i >= options.workers)
                      for i in range(max(options.workers, previous))]
        self.stopping = threading.Event()
        self.failed: str | None = None
        self.metrics_dir: str | None = None
        self.server = None
        # client id -> (state, since): every worker of the group, as their presence says
        self.presence: dict[str, tuple[str, float]] = {}
        self.watcher = connection.Link(m, f"{m.group}-{options.node}-supervisor", log, on_up=self._watch)
        self.watcher.client.on_message = self._on_presence

    def _watch(self, client, session_present: bool) -> None:
        client.subscribe(presence_topic(self.pipeline.mqtt.group, "+"), options=SubscribeOptions(qos=1))

    def _on_presence(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        state = presence_state(msg.payload)
        if state is None:
            return
        self.presence[msg.topic.rpartition("/")[2]] = (state, time.monotonic())

    def _node_of(self, client_id: str) -> str:
        return client_id[len(self.pipeline.mqtt.group) + 1:].rpartition("-")[0]

    def _to_rescue(self) -> list[str]:
        """Other nodes' workers lost for longer than the grace, if this node is the one to
        rescue them: the first by name of the nodes with a worker up."""
        now, grace = time.monotonic(), self.pipeline.mqtt.keepalive
        states = dict(self.presence)
        up = sorted({self._node_of(w) for w, (state, _) in states.items() if state == "up"})
        if not up or up[0] != self.options.node:
            return []
        busy = {s.id for s in self.slots if not s.done}
        return [w for w, (state, since) in states.items()
                if state == "lost" and now - since > grace and self._node_of(w) != self.options.node
                and w not in busy]

    def _last_slots(self) -> int:
        try:
            return int(json.loads(self.state_file.read_text())["slots"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def _remember_slots(self, count: int) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"slots": count}))
        os.replace(tmp, self.state_file)

    def workers(self) -> list[dict]:
        return [{"id": s.id, "pid": s.proc.pid if s.proc else None, "alive": bool(s.proc and s.proc.poll() is None),
                 "restarts": s.restarts, "retiring": s.retiring} for s in self.slots if not s.done]

    def _spawn(self, slot: _Slot) -> None:
        o = self.options
        cmd = [sys.executable, "-m", "wasinn.pipeline.worker", "--pipeline", str(self.worker_file),
               "--client-id", slot.id, "--ort-threads", str(o.ort_threads), "--cache-dir", str(o.cache_dir),
               "--log-level", o.log_level, "--limits", json.dumps(o.limits.changes())]
        for key, value in self.overrides.items():
            if value:
                cmd += ["--" + key.replace("_", "-"), value]
        if slot.retiring:
            cmd.append("--retire")
        env = dict(os.environ)
        if self.metrics_dir:
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        slot.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        slot.started = time.monotonic()
        self.log.info("worker-started", worker=slot.id, pid=slot.proc.pid, restarts=slot.restarts,
                      retiring=slot.retiring)

    def _reap(self, slot: _Slot) -> None:
        code, pid = slot.proc.returncode, slot.proc.pid
        slot.proc = None
        if self.metrics_dir:
            multiprocess.mark_process_dead(pid, self.metrics_dir)
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        if self.stopping.is_set():
            self.log.info("worker-stopped", worker=slot.id, pid=pid, status=how)
            return
        if slot.retiring and code == 0:
            slot.done = True
            self.log.info("slot-rescued" if slot.rescue else "slot-retired", worker=slot.id, pid=pid)
            if not slot.rescue and all(s.done for s in self.slots if s.retiring and not s.rescue):
                self._remember_slots(self.options.workers)
            return
        if code == EXIT_CONFIG:
            self.failed = (f"worker {slot.id} could not start the pipeline or was refused by the broker "
                           "(see its cannot-start or not-authorised log line)")
            self.log.error("worker-failed", worker=slot.id, pid=pid, status=how)
            self.stopping.set()
            return
        lived = time.monotonic() - slot.started
        slot.delay = _FIRST_DELAY if lived > _STABLE_SECONDS else min(slot.delay * 2, _MAX_DELAY)
        slot.restart_at = time.monotonic() + (slot.delay if lived <= _STABLE_SECONDS else 0)
        self.log.warning("worker-died", worker=slot.id, pid=pid, status=how, lived_s=round(lived, 1),
                         restart_in_s=round(max(0.0, slot.restart_at - time.monotonic()), 1))

    def run(self) -> int:
        o = self.options
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _: self._request_stop(signum))
        if o.metrics_port is not None:
            self.metrics_dir = workers_directory()
            try:
                self.server = MetricsServer(o.metrics_host, o.metrics_port, self.metrics_dir, self.workers)
            except OSError as e:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
                raise WasinnError(f"--metrics-port {o.metrics_port}: cannot listen on {o.metrics_host}: "
                                  f"{e.strerror}") from None
            self.server.start()
            self.log.info("metrics", url=f"http://{o.metrics_host}:{self.server.port}/metrics",
                          health=f"http://{o.metrics_host}:{self.server.port}/healthz")
        try:
            self._connect_watcher()
            self._remember_slots(len(self.slots))  # until the retiring ones are gone
            for slot in self.slots:
                self._spawn(slot)
            while not self.stopping.wait(0.2):
                if self.watcher.fatal:
                    self.failed = self.watcher.fatal
                    break
                for lost in self._to_rescue():
                    self.log.warning("worker-lost", worker=lost, message="lost and not back; draining its "
                                     "session here")
                    self.presence[lost] = ("rescued", time.monotonic())
                    self.slots.append(_Slot(lost, retiring=True, rescue=True))
                    self._spawn(self.slots[-1])
                for slot in self.slots:
                    if slot.proc is not None and slot.proc.poll() is not None:
                        self._reap(slot)
                    if (slot.proc is None and not slot.done and not self.stopping.is_set()
                            and time.monotonic() >= slot.restart_at):
                        slot.restarts += 1
                        self._spawn(slot)
            self._drain()
        finally:
            self.watcher.close()
            if self.server:
                self.server.close()
            if self.metrics_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        if self.failed:
            raise WasinnError(self.failed)
        return 0

    def _connect_watcher(self) -> None:
        """The supervisor's own connection comes first: refused credentials or a broker
        certificate that fails verification stop the start here, in one line."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0  # not a member while away: wills go to the supervisors that are there
        self.watcher.start(clean_start=True, properties=props)
        deadline = time.monotonic() + _FIRST_CONNECT_SECONDS
        while time.monotonic() < deadline and not self.watcher.connected.is_set() and not self.watcher.ended.is_set():
            time.sleep(0.02)
        if self.watcher.fatal:
            raise WasinnError(self.watcher.fatal)

    def _request_stop(self, signum: int) -> None:
        if not self.stopping.is_set():
            self.log.info("stopping", signal=signal.Signals(signum).name,
                          drain_timeout_s=self.options.drain_timeout)
        if self.server:
            self.server.stopping = True
        self.stopping.set()

    def _drain(self) -> None:
        """SIGTERM to every worker, then wait for them to finish what they hold."""
        running = [s for s in self.slots if s.proc is not None and s.proc.poll() is None]
        for slot in running:
            slot.proc.terminate()
        deadline = time.monotonic() + self.options.drain_timeout
        for slot in running:
            try:
                slot.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log.error("worker-killed", worker=slot.id, pid=slot.proc.pid,
                               reason=f"still busy after {self.options.drain_timeout} s")
                slot.proc.kill()
                slot.proc.wait()
        for slot in self.slots:
            if slot.proc is not None:
                self._reap(slot)


def serve(pipeline, *, broker: str | None = None, tls_ca: str | None = None, username: str | None = None,
          password_file: str | None = None, options: ServeOptions, state_seed: str | None = None) -> int:
    """Runs the pipeline (a `Pipeline`, or a data-flow graph's `Dataflow`) until
    SIGTERM/SIGINT (see module docs). The MQTT arguments override the file's (`--broker`
    only the address: TLS and credentials stay)."""
    if options.workers < 1:
        raise WasinnError(f"--workers must be at least 1, got {options.workers}")
    # The workers run in this directory too: relative paths mean the same to them.
    overrides = {"broker": broker, "tls_ca": tls_ca, "username": username, "password_file": password_file}
    pipeline = pipeline.with_overrides(**overrides)  # checks HOST:PORT before anything starts
    connection.check(pipeline.mqtt)  # and the TLS and password files
    log = EventLog(level=options.log_level, role="supervisor")
    worker_file = prepare(pipeline, options.cache_dir, log, state_seed)
    m = pipeline.mqtt
    if isinstance(pipeline, Pipeline):
        topics, sink = [pipeline.source.topic], pipeline.sink.topic
    else:
        topics, sink = list(pipeline.sources), pipeline.sink
    subscriptions = [f"$share/{m.group}/{t}" for t in topics]
    log.info("serving", pipeline=str(pipeline.path), workers=options.workers, ort_threads=options.ort_threads,
             broker=m.address, tls=bool(m.tls), username=m.username,
             subscription=subscriptions[0] if len(subscriptions) == 1 else subscriptions,
             sink=sink, dead_letter=m.dead_letter_topic)
    return Supervisor(pipeline, overrides, options, log, worker_file).run()

"""Prometheus metrics and the health endpoint of `wasinn serve`.

Workers are separate processes, so they count with prometheus-client's multiprocess
mode: the supervisor gives each worker PROMETHEUS_MULTIPROC_DIR, the workers' counters
live in files there, and the supervisor's HTTP server adds them up on each scrape:

    GET /metrics   every worker's counters and histograms, plus the supervisor's own
    GET /healthz   200 when every worker is running and subscribed, else 503 (JSON body)
"""
from __future__ import annotations

import glob
import http.server
import json
import os
import shutil
import stat
import tempfile
import threading
from typing import Callable

# Importing creates no metric: the supervisor imports this too, and only workers count.
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

# Seconds: from a fast stage (~1 ms) to a slow message on a loaded machine.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
READY = "wasinn_pipeline_worker_ready"
_DIRECTORY_PREFIX = "wasinn-metrics-"
_KINDS = ("counter", "gauge", "histogram", "summary")  # prometheus-client's file name prefixes


class WorkerMetrics:
    """What one worker counts (created in the worker process only)."""

    def __init__(self, worker: str):
        labels = {"worker": worker}
        self.received = Counter("wasinn_pipeline_messages_received", "Messages taken from the source topic",
                                ["worker"]).labels(**labels)
        self.published = Counter("wasinn_pipeline_messages_published", "Results published to the sink topic",
                                 ["worker"]).labels(**labels)
        self._failed = Counter("wasinn_pipeline_messages_failed",
                               "Messages sent to the dead-letter topic, by the stage and kind of failure",
                               ["worker", "stage", "kind"])
        self.stage_seconds = Histogram("wasinn_pipeline_stage_seconds", "Time spent in each stage per message "
                                       "(source: decoding the image)", ["stage"], buckets=LATENCY_BUCKETS)
        self.message_seconds = Histogram("wasinn_pipeline_message_seconds", "From receiving a message to the "
                                         "broker acknowledging its result", buckets=LATENCY_BUCKETS)
        self.queued = Gauge("wasinn_pipeline_queued_messages", "Messages the worker holds and has not "
                            "finished (QoS 1: mqtt.receiveMaximum, where the broker keeps to it; QoS 0: at most "
                            "1,000)", ["worker"], multiprocess_mode="livesum").labels(**labels)
        self.dropped = Counter("wasinn_pipeline_messages_dropped", "QoS 0 messages dropped on arrival: the worker "
                               "held its most of them waiting", ["worker"]).labels(**labels)
        self.ready = Gauge(READY, "1 while the worker is connected and subscribed", ["worker"],
                           multiprocess_mode="livemax").labels(**labels)
        self._worker = worker
        self._stages: dict[str, object] = {}

    def stage(self, name: str):
        """`stage_seconds`' series for stage `name`, looked up once (prometheus-client's
        `labels` builds the key and takes a lock each time, ~1 us per stage and message)."""
        series = self._stages.get(name)
        if series is None:
            series = self._stages[name] = self.stage_seconds.labels(stage=name)
        return series

    def failed(self, stage: str, kind: str) -> None:
        self._failed.labels(worker=self._worker, stage=stage, kind=kind).inc()


class _SupervisorCollector:
    """The supervisor's own view: which workers run, and how often each was restarted."""

    def __init__(self, workers: Callable[[], list[dict]]):
        self._workers = workers

    def collect(self):
        up = GaugeMetricFamily("wasinn_pipeline_worker_up", "1 while the worker process runs", labels=["worker"])
        restarts = CounterMetricFamily("wasinn_pipeline_worker_restarts", "Times the supervisor restarted "
                                       "the worker after it died", labels=["worker"])
        for w in self._workers():
            up.add_metric([w["id"]], 1.0 if w["alive"] else 0.0)  # retiring slots too, while they drain
            restarts.add_metric([w["id"]], w["restarts"])
        yield up
        yield restarts


class _WorkersFiles(MultiProcessCollector):
    """The workers' metric files, but for one a worker has only just created: empty until
    it sizes it, it holds nothing yet (read as a file, it failed a scrape, and /healthz,
    with a 500 while a worker started)."""

    def __init__(self, registry: CollectorRegistry, path: str):
        super().__init__(registry, path=path)
        self.path = path

    def collect(self):
        """The files merged a kind at a time, each name in one kind: a name that one
        worker's operator made a counter and another's a histogram (each worker keeps a
        name to one kind, but its operators need not agree) had been merged into one
        family of both kinds' samples, which Prometheus refuses to parse. The first kind
        in KINDS keeps the name."""
        by_kind: dict[str, list[str]] = {}
        for path in glob.glob(os.path.join(self.path, "*.db")):
            if _sized(path):
                by_kind.setdefault(os.path.basename(path).split("_")[0], []).append(path)
        named = set()
        for kind in sorted(by_kind, key=lambda k: _KINDS.index(k) if k in _KINDS else len(_KINDS)):
            for family in self.merge(by_kind[kind], accumulate=True):
                if family.name not in named:
                    named.add(family.name)
                    yield family


def workers_directory() -> str:
    """A new directory for the workers' metric files, named for this process, after
    removing those of supervisors that died without removing theirs (SIGKILL, the OOM
    killer): each stayed in the temporary directory for good, a quarter MiB a worker."""
    remove_orphaned_directories(tempfile.gettempdir())
    return tempfile.mkdtemp(prefix=f"{_DIRECTORY_PREFIX}{os.getpid()}-")


def remove_orphaned_directories(root: str) -> list[str]:
    """Removes this user's workers' directories under `root` whose supervisor no longer
    runs; returns them. A directory whose process id now belongs to another process is
    kept (the id was reused: it goes once that process ends)."""
    removed = []
    for path in glob.glob(os.path.join(glob.escape(root), _DIRECTORY_PREFIX + "*-*")):
        pid = os.path.basename(path)[len(_DIRECTORY_PREFIX):].split("-", 1)[0]
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if not pid.isdigit() or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or _running(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def _sized(path: str) -> bool:
    try:
        return os.path.getsize(path) >= 8  # its count of bytes used, at least
    except OSError:  # gone since the glob
        return False


class MetricsServer:
    """Serves /metrics and /healthz on HOST:PORT from a background thread.

    `workers()` returns one dict per worker: id, pid, alive, restarts.
    """

    def __init__(self, host: str, port: int, multiproc_dir: str, workers: Callable[[], list[dict]]):
        self.registry = CollectorRegistry()
        self._files = _WorkersFiles(self.registry, multiproc_dir)
        self.registry.register(_SupervisorCollector(workers))
        self._workers = workers
        self.stopping = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                try:
                    if self.path == "/metrics":
                        self._send(200, CONTENT_TYPE_LATEST, generate_latest(server.registry))
                    elif self.path == "/healthz":
                        status, body = server.health()
                        self._send(status, "application/json", json.dumps(body).encode())
                    else:
                        self._send(404, "text/plain", b"wasinn serve: GET /metrics or /healthz\n")
                # the workers' files unreadable: one line, not a traceback and a dropped connection
                except Exception as e:
                    self._send(500, "text/plain", f"wasinn serve: cannot read the workers' metrics: "
                                                  f"{type(e).__name__}: {e}\n".encode())

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes are not worth a log line each
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def health(self) -> tuple[int, dict]:
        ready = {}
        for metric in self._files.collect():
            if metric.name == READY:
                ready.update({s.labels["worker"]: s.value == 1 for s in metric.samples})
        workers = [{**w, "ready": w["alive"] and ready.get(w["id"], False)} for w in self._workers()]
        healthy = not self.stopping and all(w["ready"] or w["retiring"] for w in workers)
        status = "ok" if healthy else "stopping" if self.stopping else "degraded"
        return (200 if healthy else 503), {"status": status, "workers": workers}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

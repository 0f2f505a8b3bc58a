#!/usr/bin/env python3
"""The scaling section of benchmarks/bench.py: Azure data-flow graphs under a flood, with
1 vs 2 workers and 1 vs 2 hosts.

    .venv/bin/python benchmarks/bench_scaling.py [--graph temperature|image|both] [--rounds 3] [--quick]

A publisher floods the graph's source topic (QoS 1, as fast as the broker takes them);
throughput is the messages through the whole graph per second, measured at the sink:
from the first publish until the last result arrives. For pipelines/temperature-graph.yaml
every reading ends in an accumulate window (`window_ms` 250): the messages counted are the
`count`s of the window summaries that reach the sink, and the accounting is checked (every
reading in exactly one summary, no window emitted twice). For pipelines/image-graph.yaml
each raw 224x224 frame gives one top-5 result.

Workers: one `wasinn serve` with --workers 1, then 2, on loopback. Hosts: one `wasinn serve`
(one worker) in each of one, then two network namespaces, joined to the broker's and Redis'
namespace by veth pairs (as tests/test_pipeline_hosts.py; needs root), the hosts sharing one
shared-subscription group and one Redis state store (`--state-store`). The worker rows
share a Redis store too, so that the two rows differ only in where the workers run. All
of it on this machine's cores: two hosts are two processes on the same CPUs.
Configurations run interleaved, --rounds times; each number is the median of its rounds.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import threading
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "host"))

from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

WINDOW_MS = 250
GRAPHS = {"temperature": ROOT / "pipelines" / "temperature-graph.yaml",
          "image": ROOT / "pipelines" / "image-graph.yaml"}
TEMPERATURE = "azure-samples/explore-iot-operations/temperature:1.0.0"
WINDOW = "azure-samples/explore-iot-operations/window:1.0.0"
SNAPSHOT = "azure-samples/explore-iot-operations/snapshot:1.0.0"


def modules(graph: str) -> tuple[str, ...]:
    from support import dataflow_support
    from support import operator_guests
    if graph == "temperature":
        return ("--module", f"{TEMPERATURE}={dataflow_support.operator_wasm('temperature')}",
                "--module", f"{WINDOW}={dataflow_support.operator_wasm('window')}", "--param", f"window_ms={WINDOW_MS}")
    return ("--module", f"{SNAPSHOT}={operator_guests.snapshot_c_wasm()}",)  # the image graph's operator (pipelines/README.md)


def payloads(graph: str, n: int) -> list[bytes]:
    if graph == "temperature":
        return [json.dumps({"temperature": {"value": 32 + i % 180, "unit": "F"}}).encode() for i in range(n)]
    from PIL import Image
    frames = [Image.open(p).convert("RGB").resize((224, 224)).tobytes()
              for p in sorted((ROOT / "images").glob("*.png"))]
    return [frames[i % len(frames)] for i in range(n)]


class Sink:
    """What reaches the sink topic and its dead-letter topic: (arrival, id, topic, payload)."""

    def __init__(self, broker, topic: str):
        self.got: list[tuple[float, str, str, bytes]] = []
        self.cond = threading.Condition()
        ready = threading.Event()
        self.client = broker.new_client()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: ready.set()
        broker.connect(self.client)
        self.client.loop_start()
        self.client.subscribe([(topic, 1), (topic + "/dead-letter", 1)])
        if not ready.wait(10):
            raise RuntimeError("the sink client could not subscribe")

    def _on_message(self, c, userdata, msg) -> None:
        ident = dict(getattr(msg.properties, "UserProperty", None) or []).get("id", "")
        with self.cond:
            self.got.append((time.perf_counter(), ident, msg.topic, msg.payload))
            self.cond.notify_all()

    def wait(self, done, timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: done(self.got), timeout):
                raise RuntimeError(f"the sink has not had everything after {timeout} s ({len(self.got)} messages)")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _counted(got) -> int:
    return sum(json.loads(p)["temperature"]["count"] for _, i, t, p in got if i.startswith("window:")
               and not t.endswith("/dead-letter"))


def flood(broker, graph: str, items: list[bytes], tag: str, timeout: float = 300) -> float:
    """Publishes `items` to the graph's source as fast as the broker takes them; messages/s
    from the first publish to the last result at the sink (checked: each accounted once)."""
    source, sink_topic = f"scale/{tag}/in", f"scale/{tag}/out"
    sink = Sink(broker, sink_topic)
    pub = broker.new_client()
    pub.max_inflight_messages_set(200)
    broker.connect(pub)
    pub.loop_start()
    try:
        content = "application/json" if graph == "temperature" else "application/octet-stream"
        infos = []
        start = time.perf_counter()
        for i, payload in enumerate(items):
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("id", f"{tag}-{i}")]
            props.ContentType = content
            infos.append(pub.publish(source, payload, qos=1, properties=props))
        for info in infos:
            info.wait_for_publish(timeout)
        n = len(items)
        if graph == "temperature":
            sink.wait(lambda g: _counted(g) >= n, timeout)
            time.sleep(2 * WINDOW_MS / 1000)  # a window more: nothing comes twice
            with sink.cond:
                got = list(sink.got)
            windows = [(i, p) for _, i, t, p in got if i.startswith("window:")]
            dead = [t for _, _, t, _ in got if t.endswith("/dead-letter")]
            if dead or len({i for i, _ in windows}) != len(windows) or _counted(got) != n:
                raise RuntimeError(f"{tag}: {_counted(got)} readings in {len(windows)} summaries "
                                   f"({len({i for i, _ in windows})} windows) for {n} sent, {len(dead)} dead letters")
            last = max(t for t, i, _, _ in got if i.startswith("window:"))
        else:
            sink.wait(lambda g: len({i for _, i, _, _ in g}) >= n, timeout)
            with sink.cond:
                got = list(sink.got)
            if any(t.endswith("/dead-letter") for _, _, t, _ in got):
                raise RuntimeError(f"{tag}: dead letters")
            last = max(t for t, _, _, _ in got)
        return n / (last - start)
    finally:
        pub.disconnect()
        pub.loop_stop()
        sink.close()


def _serve(broker, graph: str, tag: str, redis_url: str, *, workers: int, node: str, netns=None, address=None):
    from support.pipeline_service import Service
    return Service(broker, workers=workers, node=node, pipeline=GRAPHS[graph], log_level="info",
                   netns=netns, address=address, ort_threads=1,
                   extra=(*modules(graph), "--source", f"scale/{tag}/in", "--sink", f"scale/{tag}/out",
                          "--group", tag, "--state-store", redis_url))


def _run(broker, graph: str, items, warm, services) -> float:
    tag = services[0][1]
    started = [_serve(broker, graph, tag, url, workers=w, node=node, netns=ns, address=addr)
               for (w, _, url, node, ns, addr) in services]
    try:
        for s, (w, *_) in zip(started, services):
            s.wait_subscribed(w)
        flood(broker, graph, warm, tag)  # first calls, connections, the windows' keys
        return flood(broker, graph, items, tag)
    finally:
        for s in started:
            s.__exit__(None, None, None)


def measure(graph: str, n: int, rounds: int, progress, hosts: bool = True) -> dict[str, list[float]]:
    """msgs/s per configuration and round: workers-1, workers-2 and (as root) hosts-1, hosts-2."""
    from support.pipeline_netns import Namespaces, Unavailable
    from support.pipeline_service import Broker
    from support.redis_server import RedisServer
    items, warm = payloads(graph, n), payloads(graph, 20 if graph == "temperature" else 6)
    rates: dict[str, list[float]] = {}
    net = None
    if hosts:
        try:
            net = Namespaces(["host1", "host2"])
        except Unavailable as e:
            progress(f"scaling: no host rows: {e}")
    try:
        hub = net.hub if net else None
        bind = "0.0.0.0" if net else "127.0.0.1"
        with Broker(host=bind, netns=hub) as broker, RedisServer(host=bind, netns=hub) as redis:
            local = f"redis://127.0.0.1:{redis.port}/0"
            for r in range(rounds):
                configs = [("workers", 1), ("workers", 2)] + ([("hosts", 1), ("hosts", 2)] if net else [])
                for kind, count in configs:
                    tag = f"{graph}-{kind}{count}-{r}-{uuid.uuid4().hex[:6]}"
                    progress(f"scaling: {graph} graph, round {r + 1}/{rounds}: {count} {kind[:-1]}"
                             f"{'s' if count > 1 else ''}, {n} messages")
                    if kind == "workers":
                        if net:  # the workers' host in the first namespace, as the hosts'
                            name = "host1"
                            spec = [(count, tag, redis.url_from(net.hub_address(name)), "w", net.spokes[name],
                                     f"{net.hub_address(name)}:{broker.port}")]
                        else:
                            spec = [(count, tag, local, "w", None, None)]
                    else:
                        spec = [(1, tag, redis.url_from(net.hub_address(name)), name, net.spokes[name],
                                 f"{net.hub_address(name)}:{broker.port}") for name in list(net.spokes)[:count]]
                    rates.setdefault(f"{kind}-{count}", []).append(_run(broker, graph, items, warm, spec))
    finally:
        if net:
            net.close()
    return rates


def rows(row, progress, quick: bool) -> None:
    """benchmarks/bench.py's `scaling` section."""
    rounds = 1 if quick else 3
    for graph, n in (("temperature", 600 if quick else 2000), ("image", 30 if quick else 120)):
        rates = measure(graph, n, rounds, progress)
        med = {k: statistics.median(v) for k, v in rates.items()}
        target = ">= 1.30x" if graph == "temperature" else ""
        note = f"{n} messages flooded, msgs/s at the sink, median of {rounds}; a shared 2-core machine"
        row("scaling", f"{graph} graph: 2 workers vs 1", med["workers-2"], med["workers-1"], "1/s", target,
            lower_is_better=False, note=note)
        if "hosts-2" in med:
            row("scaling", f"{graph} graph: 2 hosts vs 1 (netns, Redis)", med["hosts-2"], med["hosts-1"], "1/s",
                target, lower_is_better=False, note=note + ("; windows checked across hosts"
                                                            if graph == "temperature" else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", choices=("temperature", "image", "both"), default="both")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, help="messages per flood (default: 2000 readings, 120 frames)")
    ap.add_argument("--no-hosts", action="store_true", help="only the worker rows")
    args = ap.parse_args()
    for graph in (("temperature", "image") if args.graph == "both" else (args.graph,)):
        n = args.messages or (2000 if graph == "temperature" else 120)
        rates = measure(graph, n, args.rounds, lambda m: print(f"  .. {m}", file=sys.stderr, flush=True),
                        hosts=not args.no_hosts)
        print(f"\n{graph} graph: {n} messages per flood, msgs/s at the sink, median of {args.rounds} rounds")
        for k, v in rates.items():
            print(f"  {k:10} {statistics.median(v):9.1f}   (rounds: {', '.join(f'{x:.1f}' for x in v)})")
        for kind in ("workers", "hosts"):
            if f"{kind}-2" in rates:
                one, two = statistics.median(rates[f"{kind}-1"]), statistics.median(rates[f"{kind}-2"])
                print(f"  {kind} 1 -> 2: {two / one:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the data-flow tests share: the operators built from source (once per content), and a
client that collects what reaches the sink and dead-letter topics."""
from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import threading
import uuid

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from support import operator_guests
from support.pipeline_service import subscriber
from wasinn import build

ROOT = pathlib.Path(__file__).resolve().parents[2]
AZURE = ROOT / "tests" / "data" / "azure"
CACHE = ROOT / ".cache" / "tests"
TEMPERATURE = "azure-samples/explore-iot-operations/temperature:1.0.0"
PROBE = "wasinn-tests/operator-probe:1.0.0"
WINDOW = "azure-samples/explore-iot-operations/window:1.0.0"
OPC_UA = "azure-samples/explore-iot-operations/opc-ua:1.0.0"
# guest name -> (world, its own .wit beside app.py), beside operator_guests' own
OPERATORS = {"window": ("wasinn:window-operator/window", "window.wit"),
             "opc-ua": ("wasinn:opc-ua-operator/opc-ua", "opc-ua.wit"),
             "otel-enrich": ("wasinn:otel-enrich-operator/otel-enrich", "otel-enrich.wit"),
             "schema-filter": ("wasinn:schema-filter-operator/schema-filter", "schema-filter.wit"),
             "humidity": ("wasinn:humidity-operator/humidity", "humidity.wit"),
             "collection": ("wasinn:collection-operator/collection", "collection.wit"),
             "enrichment": ("wasinn:enrichment-operator/enrichment", "enrichment.wit")}
# Azure's Measurement JSON, built into the operators that read and write it
MEASUREMENTS = ("humidity", "collection", "enrichment")


def operator_wasm(name: str) -> pathlib.Path:
    """guest/<name> as a standard component (no wasinn-only imports, as Azure's are)."""
    if name in operator_guests.WORLDS:
        return operator_guests.operator_wasm(name)
    if name == "snapshot-set":
        return snapshot_set_wasm()
    if name == "format":
        from support import guest_builds
        try:
            return operator_guests.format_wasm()
        except guest_builds.ToolchainMissing as e:
            guest_builds.skip_without(e)
    world, wit = OPERATORS[name]
    files = build.guest_files(ROOT / "guest" / name)
    if name in MEASUREMENTS:
        files["measurements.py"] = ROOT / "guest" / "azure-measurements" / "measurements.py"
    return build.build_cached(files, name=name, world=world, cache_dir=CACHE, fastpath=False, wit=wit,
                              progress=print)


def snapshot_set_wasm() -> pathlib.Path:
    """Azure's snapshot module: guest/snapshot's map (its model and labels built in) with
    guest/snapshot-set's branch and accumulate, in one component."""
    from wasinn.apps.classify import composed_model
    files = build.guest_files(ROOT / "guest" / "snapshot-set")
    files.update({"snapshot_map.py": ROOT / "guest" / "snapshot" / "app.py", "labels.txt": files.pop("synset.txt"),
                  "model.onnx": composed_model(CACHE, print)})
    return build.build_cached(files, name="snapshot-set", world="wasinn:snapshot-set-operator/snapshot-set",
                              cache_dir=CACHE, fastpath=False, wit="snapshot-set.wit", progress=print)


@dataclasses.dataclass
class Received:
    topic: str
    payload: bytes
    content_type: str | None
    user_properties: list[tuple[str, str]]

    @property
    def id(self) -> str | None:
        return dict(self.user_properties).get("id")

    def json(self):
        return json.loads(self.payload)


class Collector:
    """Everything published to `topics`, in arrival order."""

    def __init__(self, broker, topics: list[str], *, persistent: bool = False):
        """`persistent`: a session the broker keeps, reconnecting by itself (broker restarts)."""
        self.got: list[Received] = []
        self._cond = threading.Condition()
        self.client = subscriber(broker, topics, self._on_message,
                                 f"collector-{uuid.uuid4().hex[:8]}" if persistent else None)

    def _on_message(self, c, userdata, msg) -> None:
        props = msg.properties
        with self._cond:
            self.got.append(Received(msg.topic, msg.payload, getattr(props, "ContentType", None),
                                     list(getattr(props, "UserProperty", None) or [])))
            self._cond.notify_all()

    def wait(self, predicate, timeout: float) -> list[Received]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.got), timeout):
                raise AssertionError(f"not there after {timeout} s; got: {self.got}")
            return list(self.got)

    def on(self, topic: str) -> list[Received]:
        with self._cond:
            return [r for r in self.got if r.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def send(c, topic: str, payload: bytes, ident: str, user: list[tuple[str, str]] = (),
         content_type: str = "application/json") -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("id", ident), *user]
    props.ContentType = content_type
    c.publish(topic, payload, qos=1, properties=props).wait_for_publish(timeout=10)


def by_count(items) -> collections.Counter:
    return collections.Counter(items)

"""Azure's own test cases (samples/wasm/tests/tNN-*/: a graph, its inputs, expected.json and
the fields compared) run through `wasinn serve` and a real mosquitto, with operators
written here against Azure's WIT where Azure's are Rust (they need a private crate
registry to build): guest/window, opc-ua, schema-filter, otel-enrich, humidity,
collection, enrichment and snapshot-set in Python, format in C (it decodes t03's JPEG),
with azure-ops' temperature and snapshot. One service per graph; the inputs of a case
are published as Azure's runner publishes them (a `.json` file's JSON, compact, to the
source topic; a `.raw` file's bytes to `snapshot_simulation`, which the graph's
snapshot branch routes to the image path) and, once the worker says each is done, what
reached the sink is compared on the case's `select` fields. What Azure's runner sets up
is given by serve's flags: --module-schema (t08-t10) and --state-seed (t11). (~15 s
after the operators' first build; t02 and t03 are marked slow: more operators to build,
EfficientNet-Lite0 inference in t03, and Azure's 10 s windows.)"""
from __future__ import annotations

import json
import pathlib
import time

import pytest
import yaml

from support.dataflow_support import AZURE, OPC_UA, TEMPERATURE, WINDOW, Collector, operator_wasm, send
from support.pipeline_service import Service, client

CASES = sorted((AZURE / "tests").glob("t*/*.test.yaml"))
SCHEMA_SCENARIO = AZURE / "schema-registry-scenario"
STATE_SCENARIO = AZURE / "statestore-scenario"
# graph file -> (the operators it needs: reference -> guest, more serve flags, the sink
# topic). What Azure's runner sets up (a module schema, a seeded state store, the
# snapshot topic) is given with the flags that do it here.
SAMPLES = "azure-samples/explore-iot-operations/"
COMPLEX = {WINDOW: "window", TEMPERATURE: "temperature", **{f"{SAMPLES}{m}:1.0.0": g for m, g in (
    ("format", "format"), ("snapshot", "snapshot-set"), ("humidity", "humidity"), ("collection", "collection"),
    ("enrichment", "enrichment"))}}
# the topic Azure's runner publishes `.raw` inputs to: the snapshot branch's default
SNAPSHOT_TOPIC = "snapshot_simulation"
GRAPHS = {
    "graph-simple.yaml": ({TEMPERATURE: "temperature"}, (), "cases/simple/out"),
    "graph-complex.yaml": (COMPLEX, (), "cases/complex/out"),
    # its metadata.name is graph-complex.yaml's, the default group: a group of its own
    # keeps the two services' windows apart in the state store they share
    "graph.dataflow.yaml": (COMPLEX, ("--source", SNAPSHOT_TOPIC, "--group", "full-graph"), "cases/full/out"),
    "graph-opc-ua.yaml": ({OPC_UA: "opc-ua"}, (), "cases/opc-ua/out"),
    "schema-registry-scenario/graph.dataflow.yaml": (
        {"filter": "schema-filter"}, ("--module-schema", str(SCHEMA_SCENARIO / "tk_schema_config.json")), "sensors"),
    "statestore-scenario/graph.dataflow.yaml": (
        {"otel-enrich": "otel-enrich"}, ("--state-seed", str(STATE_SCENARIO / "statestore.json")), "cases/state/out"),
}
def _case(path: pathlib.Path) -> dict:
    spec = yaml.safe_load(path.read_text())
    graph = (path.parent / spec["graph"]).resolve().relative_to(AZURE.resolve())
    inputs = sorted(p for p in (path.parent / spec["input"]).iterdir() if p.is_file())
    expected = json.loads((path.parent / spec["expected"]).read_text())
    return {"name": path.parent.name, "graph": str(graph), "inputs": inputs, "select": spec["select"],
            "ignores": spec.get("ignores", []), "expected": expected if isinstance(expected, list) else [expected]}


def _selected(received, select: list[str], ignores: list[str]) -> dict:
    """The case's fields of what was received; `payload.KEY` ignores leave KEY out of the
    payload's JSON (written again as it came: compact, in its order)."""
    out: dict = {}
    for field in select:
        if field == "payload":
            out["payload"] = received.payload.decode()
            dropped = [i.removeprefix("payload.") for i in ignores if i.startswith("payload.")]
            if dropped:
                payload = {k: v for k, v in json.loads(received.payload).items() if k not in dropped}
                out["payload"] = json.dumps(payload, separators=(",", ":"))
        elif field == "topic":
            out["topic"] = received.topic
        elif field.startswith("properties.user-properties."):
            key = field.removeprefix("properties.user-properties.")
            props = dict(received.user_properties)
            out.setdefault("properties", {}).setdefault("user-properties", {})[key] = props.get(key)
    return out


@pytest.fixture(scope="module")
def services(broker):
    """graph -> its running service (started on first use)."""
    running: dict[str, Service] = {}
    yield lambda graph: running.get(graph) or running.setdefault(graph, _start(broker, graph))
    for service in running.values():
        service.stop()


def _start(broker, graph: str) -> Service:
    operators, extra, sink = GRAPHS[graph]
    modules = [a for ref, guest in operators.items() for a in ("--module", f"{ref}={operator_wasm(guest)}")]
    service = Service(broker, workers=1, pipeline=AZURE / graph, log_level="debug",
                      extra=(*modules, *extra, "--source", f"{sink}/in", "--sink", sink,
                             "--dead-letter", f"{sink}/dead-letter"))
    service.wait_subscribed(1)
    return service


# t02's graph builds five more operators (~100 s on a clean cache) and waits for a 10 s
# window; t03's also builds the snapshot operator with its model and infers
SLOW = {"t02-complex-temp-pipeline", "t03-complex-full-pipeline"}
WINDOW_S = 10


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.parent.name in SLOW else p
                                  for p in CASES], ids=lambda p: p.parent.name)
def test_azure_case(path, broker, services):
    case = _case(path)
    service = services(case["graph"])
    sink = GRAPHS[case["graph"]][2]
    with Collector(broker, [sink, f"{sink}/dead-letter"]) as got:
        c = client(broker)
        into = time.time() % WINDOW_S
        if len(case["inputs"]) > 1 and into > WINDOW_S - 2:
            # so that they share a window, as Azure's near-simultaneous publishing assumes
            time.sleep(WINDOW_S - into + 0.1)
        for i, p in enumerate(case["inputs"]):
            if p.suffix == ".raw":
                send(c, SNAPSHOT_TOPIC, p.read_bytes(), f"{case['name']}-{i}",
                     content_type="application/octet-stream")
            else:  # a .json file's JSON, compact
                payload = json.dumps(json.loads(p.read_bytes()), separators=(",", ":")).encode()
                send(c, f"{sink}/in", payload, f"{case['name']}-{i}")
        for i in range(len(case["inputs"])):  # each one answered (t09: by nothing at all)
            service.wait_event("done", 60, id=f"{case['name']}-{i}")
        want = len(case["expected"])
        got.wait(lambda g: len(g) >= want, 30)  # (graph-complex: its 10 s windows close first)
        time.sleep(0.2)  # and nothing more
        received = sorted(got.on(sink), key=lambda r: r.id)
        assert not got.on(f"{sink}/dead-letter")
        assert [_selected(r, case["select"], case["ignores"]) for r in received] == case["expected"]
        c.disconnect()

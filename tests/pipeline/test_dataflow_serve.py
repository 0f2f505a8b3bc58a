"""Azure data-flow graphs on `wasinn serve` against a real mosquitto: Azure's own graph
definition with operators built from source (`--module REF=PATH --source T --sink U`),
wasinn's temperature graph (delay, branch, map, filter, windowed accumulate,
concatenate) on two workers, dead letters, traps, the image graph (wasi:nn inside an
operator), a JavaScript operator, and a DataflowGraph deployment whose graph and operator
are pulled from a local registry. (~25 s; the operators' first builds, ~20 s each, more.)"""
from __future__ import annotations

import json
import textwrap
import time
import uuid

import pytest

from support.dataflow_support import AZURE, PROBE, ROOT, TEMPERATURE, WINDOW, Collector, operator_wasm, send
from support.pipeline_service import Service, client, command_responder, echo_with_seen_k

T01 = AZURE / "tests" / "t01-simple-temp-conversion"


@pytest.fixture(scope="module")
def temperature():
    return operator_wasm("temperature")


@pytest.fixture(scope="module")
def window():
    return operator_wasm("window")


def test_azures_simple_graph_with_a_module_built_elsewhere(broker, temperature):
    """t01 through the broker: graph-simple.yaml as published, its module given by reference."""
    expected = json.loads((T01 / "expected" / "expected.json").read_text())
    with Collector(broker, ["t01/out", "t01/out/dead-letter"]) as got, \
            Service(broker, workers=1, pipeline=AZURE / "graph-simple.yaml", log_level="info",
                    extra=("--module", f"{TEMPERATURE}={temperature}", "--source", "t01/in",
                           "--sink", "t01/out")) as service:
        service.wait_subscribed(1)
        c = client(broker)
        send(c, "t01/in", (T01 / "input" / "temperature_payload.json").read_bytes(), "m-1",
             user=[("test_property_key", "old"), ("site", "plant-7")])
        send(c, "t01/in", b"not json", "m-2")
        (result,) = [r for r in got.wait(lambda g: len(g) >= 2, 60) if r.topic == "t01/out"]
        assert result.payload.decode() == expected["payload"]
        assert result.content_type == "application/json"
        # the operator's user properties reach the sink (Azure's map rewrites test_property_key)
        assert dict(result.user_properties) == {"id": "m-1", "test_property_key": "new_value", "site": "plant-7"}
        (dead,) = got.on("t01/out/dead-letter")
        body = dead.json()
        assert body["id"] == "m-2" and body["error"]["stage"] == "module-temperature/map"
        assert "Failed to parse payload as JSON" in body["error"]["message"]
        c.disconnect()


def test_the_temperature_graph_windows_on_two_workers(broker, temperature, window):
    readings = [50, 68, 86, 104, 10000]  # F; 10000 F is past the filter's upper bound
    with Collector(broker, ["temps/summary", "temps/summary/dead-letter"]) as got, \
            Service(broker, workers=2, pipeline=ROOT / "pipelines" / "temperature-graph.yaml", log_level="info",
                    extra=("--module", f"temperature={temperature}", "--module", f"{WINDOW}={window}",
                           "--source", "temps/in", "--sink", "temps/summary", "--param", "window_ms=3000",
                           "--param", "module-temperature/filter.temperature_lower_bound=-20",
                           # windows outlive the service in the state store: a fresh group per run
                           "--group", f"temps-{uuid.uuid4().hex[:8]}")) as service:
        service.wait_subscribed(2)
        c = client(broker)
        start = time.time()
        for i, f in enumerate(readings):
            send(c, "temps/in", json.dumps({"temperature": {"value": f, "unit": "F"}}).encode(), f"t-{i}")
        send(c, "temps/in", b'{"humidity": {"value": 40}}', "h-1")

        def summaries(g):
            rows = [json.loads(r.payload)["temperature"] for r in g if r.topic == "temps/summary"
                    and b"temperature" in r.payload]
            return sum(row["count"] for row in rows) >= 4
        g = got.wait(summaries, 30)
        time.sleep(1.5)  # nothing more comes: each window once
        g = got.on("temps/summary")
        humidity = [r for r in g if r.id == "h-1"]
        assert [r.payload for r in humidity] == [b'{"humidity": {"value": 40}}']
        windows = [r for r in g if r.id and r.id.startswith("window:")]
        assert len({r.id for r in windows}) == len(windows), "a window was emitted twice"
        rows = [r.json()["temperature"] for r in windows]
        assert sum(row["count"] for row in rows) == 4  # 10000 F was dropped by the filter
        assert min(row["min"] for row in rows) == 10 and max(row["max"] for row in rows) == 40
        assert time.time() - start < 3 + 10
        assert not got.on("temps/summary/dead-letter")
        c.disconnect()


def test_a_deployment_pulls_its_graph_and_operator_from_a_registry(broker, temperature, tmp_path):
    from support.oci_registry import Registry
    expected = json.loads((T01 / "expected" / "expected.json").read_text())
    with Registry() as registry:
        registry.push_module(TEMPERATURE, temperature)
        registry.push_graph("graph-simple:1.0.0", AZURE / "graph-simple.yaml")
        deployment = tmp_path / "deployment.yaml"
        deployment.write_text(textwrap.dedent(f"""\
            apiVersion: connectivity.iotoperations.azure.com/v1
            kind: RegistryEndpoint
            metadata: {{name: local-registry}}
            spec: {{host: "{registry.host}", authentication: {{method: Anonymous}}}}
            ---
            apiVersion: connectivity.iotoperations.azure.com/v1
            kind: DataflowGraph
            metadata: {{name: thermostats}}
            spec:
              profileRef: default
              nodes:
                - nodeType: Source
                  name: sensors
                  sourceSettings: {{endpointRef: default, dataSources: [thermostats/temperature]}}
                - nodeType: Graph
                  name: convert
                  graphSettings:
                    registryEndpointRef: local-registry
                    artifact: graph-simple:1.0.0
                    configuration: [{{key: key1, value: anything}}]
                - nodeType: Destination
                  name: out
                  destinationSettings: {{endpointRef: default, dataDestination: thermostats/celsius}}
              nodeConnections:
                - {{from: {{name: sensors}}, to: {{name: convert}}}}
                - {{from: {{name: convert}}, to: {{name: out}}}}
            """))
        with Collector(broker, ["thermostats/celsius"]) as got, \
                Service(broker, workers=1, pipeline=deployment, log_level="info") as service:
            service.wait_subscribed(1)
            c = client(broker)
            send(c, "thermostats/temperature", (T01 / "input" / "temperature_payload.json").read_bytes(), "d-1")
            (result,) = got.wait(lambda g: len(g) >= 1, 60)
            assert result.payload.decode() == expected["payload"]
            assert service.find("subscribed", group="thermostats")
            c.disconnect()


PROBE_GRAPH = """\
moduleConfigurations:
  - name: probe
    parameters:
      start: {name: start, default: "7"}
operations:
  - {operationType: source, name: source}
  - {operationType: map, name: probe, module: "%s"}
  - {operationType: sink, name: sink}
connections:
  - {from: {name: source}, to: {name: probe}}
  - {from: {name: probe}, to: {name: sink}}
""" % PROBE


def test_an_operator_that_traps_is_reinitialised_and_the_next_message_runs(broker, tmp_path):
    graph = tmp_path / "probe.yaml"
    graph.write_text(PROBE_GRAPH)
    with Collector(broker, ["probe/out", "probe/out/dead-letter"]) as got, \
            Service(broker, workers=1, pipeline=graph, log_level="info",
                    extra=("--module", f"{PROBE}={operator_wasm('operator-probe')}", "--source", "probe/in",
                           "--sink", "probe/out", "--param", "start=42")) as service:
        service.wait_subscribed(1)
        c = client(broker)
        for i, command in enumerate([{"do": "count"}, {"do": "count"}, {"do": "trap"}, {"do": "count"},
                                     {"do": "fail", "message": "bad reading"}, {"do": "count"}]):
            send(c, "probe/in", json.dumps(command).encode(), f"p-{i}")
        got.wait(lambda g: len(g) >= 6, 60)
        out = {r.id: r for r in got.on("probe/out")}
        assert [out[f"p-{i}"].json() for i in (0, 1, 3, 5)] == [
            {"count": 1, "start": 42}, {"count": 2, "start": 42},
            {"count": 1, "start": 42},  # a fresh instance, initialised again with --param start=42
            {"count": 2, "start": 42}]
        dead = {r.json()["id"]: r.json()["error"] for r in got.on("probe/out/dead-letter")}
        assert dead["p-2"]["stage"] == "probe" and dead["p-2"]["kind"] == "trap"
        assert dead["p-4"] == {"stage": "probe", "kind": "operator-error", "message": "bad reading"}
        assert service.proc.poll() is None
        c.disconnect()


def test_operators_invoke_commands_over_the_workers_own_connection(broker, tmp_path):
    """command-invoker in `wasinn serve`: the request goes out on the worker's connection
    and the response comes back to the operator; a response topic on the graph's source
    is refused, and the source still flows."""
    graph = tmp_path / "probe.yaml"
    graph.write_text(PROBE_GRAPH)
    responder = command_responder(broker, "cmd/probe", echo_with_seen_k)
    with Collector(broker, ["probe/out", "probe/out/dead-letter"]) as got, \
            Service(broker, workers=1, pipeline=graph, log_level="info",
                    extra=("--module", f"{PROBE}={operator_wasm('operator-probe')}", "--source", "probe/in",
                           "--sink", "probe/out")) as service:
        service.wait_subscribed(1)
        c = client(broker)
        for i, command in enumerate([{"do": "invoke", "topic": "cmd/{commandName}", "payload": "ping"},
                                     {"do": "invoke", "topic": "cmd/x", "response": "probe/in", "payload": "x"},
                                     {"do": "count"}]):
            send(c, "probe/in", json.dumps(command).encode(), f"c-{i}")
        got.wait(lambda g: len(g) >= 3, 60)
        out = {r.id: r.json() for r in got.on("probe/out")}
        assert out == {"c-0": {"payload": "re:ping", "user": [["seen", "v"]]},
                       "c-1": {"error": "RpcError_ConfigurationInvalid"}, "c-2": {"count": 1, "start": 7}}
        assert not service.find("operator-service-unavailable", service="command-invoker")
        assert len(service.find("subscribed")) == 1  # the response topic's subscription is the invoker's
        # the worker's log line can reach this process after its result did (a fresh-clone CI read none yet)
        refused = service.wait_event("operator-command-failed", 30)
        assert len(service.find("operator-command-failed")) == 1
        assert "'probe/in': the graph's source topic 'probe/in' takes it" in refused["error"]
        c.disconnect()
    responder.disconnect()


@pytest.mark.parametrize("operator", ["C", "Python"])
def test_the_image_graph_classifies_raw_frames(broker, operator):
    """pipelines/image-graph.yaml: a raw 224x224 RGB frame in, the snapshot operator's top
    five out, with the operator in C (guest/snapshot-c) and in Python (guest/snapshot)."""
    from support import guest_builds, operator_guests
    from PIL import Image
    try:
        wasm = operator_guests.snapshot_c_wasm() if operator == "C" else operator_guests.snapshot_wasm()
    except guest_builds.ToolchainMissing as e:
        guest_builds.skip_without(e)
    frame = Image.open(ROOT / "images" / "chelsea.png").convert("RGB").resize((224, 224)).tobytes()
    with Collector(broker, ["frames/top5", "frames/top5/dead-letter"]) as got, \
            Service(broker, workers=1, pipeline=ROOT / "pipelines" / "image-graph.yaml", log_level="info",
                    extra=("--module", f"snapshot={wasm}", "--source", "frames/raw",
                           "--sink", "frames/top5")) as service:
        service.wait_subscribed(1)
        c = client(broker)
        send(c, "frames/raw", frame, "f-1", content_type="application/octet-stream")
        send(c, "frames/raw", frame[:1000], "f-2", content_type="application/octet-stream")
        got.wait(lambda g: len(g) >= 2, 60)
        (result,) = got.on("frames/top5")
        top5 = result.json()["object"]["top5"]
        assert result.json()["object"]["result"] == top5[0]["label"] == "Egyptian cat" and len(top5) == 5
        (dead,) = got.on("frames/top5/dead-letter")
        assert dead.json()["id"] == "f-2" and dead.json()["error"]["stage"] == "module-snapshot/map"
        c.disconnect()


def test_a_javascript_operator_in_azures_simple_graph(broker):
    """An operator built with componentize-js against Azure's map-impl world, run by
    Azure's graph-simple.yaml unchanged (its module reference pointed at it)."""
    from support import operator_guests
    with Collector(broker, ["js/out"]) as got, \
            Service(broker, workers=1, pipeline=AZURE / "graph-simple.yaml", log_level="info",
                    extra=("--module", f"{TEMPERATURE}={operator_guests.js_operator_wasm()}", "--source", "js/in",
                           "--sink", "js/out")) as service:
        service.wait_subscribed(1)
        c = client(broker)
        send(c, "js/in", b'{"temperature": {"value": 212, "unit": "F"}}', "j-1")
        (result,) = got.wait(lambda g: len(g) >= 1, 60)
        assert result.json() == {"temperature": {"value": 100, "unit": "C"}}
        c.disconnect()


def test_a_worker_whose_supervisor_was_killed_stops(broker, temperature):
    """`wasinn serve` killed (SIGKILL: no time to stop its workers) leaves its workers
    orphans: each sees itself reparented and stops, its session kept for the next
    supervisor's (one had outlived its supervisor by 15 minutes, reconnecting)."""
    with Service(broker, workers=1, pipeline=AZURE / "graph-simple.yaml", log_level="info",
                 extra=("--module", f"{TEMPERATURE}={temperature}", "--source", "orphan/in",
                        "--sink", "orphan/out")) as service:
        service.wait_subscribed(1)
        (pid,) = service.worker_pids().values()
        service.proc.kill()
        service.proc.wait()
        deadline = time.monotonic() + 30

        def running() -> bool:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] != "Z"
            except FileNotFoundError:
                return False
        while running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(), "the orphaned worker still runs"

"""The host services data-flow operators import, each against a real instance: the
state store embedded (SQLite, shared between processes) and on a real redis-server,
the JSON log, Prometheus metrics, HLC rules, the schema registry and the command
invoker over a real mosquitto; every bound a guest could push is held with one line."""
from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time

import pytest
from prometheus_client import CollectorRegistry

import wasinn
from wasinn.limits import Limits
from wasinn.pipeline.jsonlog import EventLog
from wasinn.pipeline.operator import Message, Operator, OperatorError, Services
from wasinn.pipeline.services import CommandInvoker, EmbeddedStore, MetricFamilies, RedisStore, SchemaRegistry
from wasinn.pipeline.services.clock import HybridClock, Timestamp
from wasinn.pipeline.services.state_store import StateError

from support.operator_guests import operator_wasm
from support.pipeline_service import command_responder, connected_client, echo_with_seen_k
from support.redis_server import RedisServer


@pytest.fixture(scope="module")
def probe(wasinn_host):
    return wasinn_host.load_component(operator_wasm("operator-probe"))


@pytest.fixture(scope="module")
def redis_server():
    try:
        server = RedisServer()
    except FileNotFoundError as e:  # no redis-server: CI installs it (scripts/setup-mqtt.sh)
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{e}; run scripts/setup-mqtt.sh")
    yield server
    server.close()


@pytest.fixture(params=["embedded", "redis"])
def store(request, tmp_path):
    if request.param == "embedded":
        s = EmbeddedStore(tmp_path / "state.sqlite")
    else:
        server = request.getfixturevalue("redis_server")
        s = RedisStore(server.url, prefix=f"t{time.monotonic_ns()}:")
    yield s
    s.close()


def run(op: Operator, command: dict):
    return json.loads(op.map(Message(json.dumps(command).encode(), topic="t")).payload)


# --- hybrid logical clock ------------------------------------------------------------------
def test_hlc_counts_within_a_tick_merges_on_receive_and_ignores_far_future():
    wall = [1_000]
    clock = HybridClock("a", wall_clock=lambda: wall[0])
    assert [clock.now() for _ in range(3)] == [Timestamp.of(1_000, 0, "a"), Timestamp.of(1_000, 1, "a"),
                                               Timestamp.of(1_000, 2, "a")]
    wall[0] = 999  # the wall clock went back: still monotonic
    assert clock.now() == Timestamp.of(1_000, 3, "a")
    # a message from a node ahead: adopt its time, count past its counter
    assert clock.receive(Timestamp.of(5_000, 7, "b")) == Timestamp.of(5_000, 8, "a")
    assert clock.now() == Timestamp.of(5_000, 9, "a")
    wall[0] = 6_000
    assert clock.receive(Timestamp.of(5_500, 50, "b")) == Timestamp.of(6_000, 0, "a")
    far = Timestamp.of(6_000 + 3600 * 10**9, 0, "evil")
    assert clock.receive(far).wall == 6_000  # an hour ahead is not adopted
    assert sorted([Timestamp.of(2, 0, "b"), Timestamp.of(1, 5, "z"), Timestamp.of(2, 0, "a")]) == \
        [Timestamp.of(1, 5, "z"), Timestamp.of(2, 0, "a"), Timestamp.of(2, 0, "b")]


# --- state store, both implementations ---------------------------------------------------
def test_state_store_semantics(store):
    assert store.get(b"k") == (None, None)
    ok, v1 = store.set("op", b"k", b"1")
    assert ok and store.get(b"k") == (b"1", v1)
    ok, v2 = store.set("op", b"k", b"2")
    assert ok and v2 > v1 and store.get(b"k")[0] == b"2"
    assert store.set("op", b"k", b"3", condition="only-if-does-not-exist") == (False, None)
    assert store.set("op", b"k", b"3", condition="only-if-equal-or-does-not-exist") == (False, None)
    assert store.set("op", b"k", b"2", condition="only-if-equal-or-does-not-exist")[0] is True
    assert store.set("op", b"new", b"x", condition="only-if-does-not-exist")[0] is True
    assert store.delete(b"new", value=b"y") == (-1, None)
    assert store.delete(b"new", value=b"x")[0] == 1
    assert store.delete(b"new") == (0, None)
    # expiry
    assert store.set("op", b"ttl", b"x", expires=0.15)[0]
    assert store.get(b"ttl")[0] == b"x"
    time.sleep(0.3)
    assert store.get(b"ttl") == (None, None)


def test_state_store_fencing_tokens(store):
    t1, t2 = Timestamp(100, 0, 0, "lease"), Timestamp(100, 0, 1, "lease")
    assert store.set("op", b"f", b"a", fencing=t2)[0]
    with pytest.raises(StateError, match="fencing token is older than the key's"):
        store.set("op", b"f", b"b", fencing=t1)
    with pytest.raises(StateError, match="protected by a fencing token; the request carries none"):
        store.set("op", b"f", b"b")
    with pytest.raises(StateError, match="older"):
        store.delete(b"f", fencing=t1)
    assert store.get(b"f")[0] == b"a"
    assert store.set("op", b"f", b"c", fencing=Timestamp(101, 0, 0, "lease"))[0]
    assert store.delete(b"f", fencing=Timestamp(101, 0, 0, "lease"))[0] == 1


def test_state_store_counts_live_keys_per_operator(store):
    for i in range(3):
        assert store.set("a", b"key%d" % i, b"x", max_keys=3)[0]
    with pytest.raises(StateError, match=r"operator 'a' holds 3 live state-store keys; the limit is 3 "
                                         r"\(limit 'max-state-keys', --max-state-keys\)"):
        store.set("a", b"key3", b"x", max_keys=3)
    assert store.set("a", b"key0", b"overwrite", max_keys=3)[0]  # not a new key
    assert store.set("b", b"other", b"x", max_keys=3)[0]          # another operator's count
    store.delete(b"key0")
    assert store.set("a", b"key3", b"x", max_keys=3)[0]


def test_state_store_counts_the_bytes_of_each_operators_values(store):
    """max-state-bytes: 10,000 keys of the ~2.8 MB a call can pass were 28 GB of one
    operator's in the store. Counted against the key's creator, freed by deletes,
    overwrites and expiry; the host's own writes carry no quota."""
    with pytest.raises(StateError, match=r"^operator 'a' keeps 0 bytes of values in the state store; 101 more would "
                                         r"pass the limit of 100 \(limit 'max-state-bytes', --max-state-bytes\)$"):
        store.set("a", b"big", b"x" * 101, max_bytes=100)
    assert store.set("a", b"k1", b"x" * 60, max_bytes=100)[0]
    with pytest.raises(StateError, match=r"^operator 'a' keeps 60 bytes of values in the state store; 50 more"):
        store.set("a", b"k2", b"x" * 50, max_bytes=100)
    assert store.set("a", b"k1", b"x" * 10, max_bytes=100)[0]     # an overwrite frees what it shrank
    assert store.set("a", b"k2", b"x" * 90, max_bytes=100)[0]
    assert store.set("b", b"k3", b"x" * 100, max_bytes=100)[0]    # another operator's own count
    with pytest.raises(StateError, match=r"^operator 'a' keeps 100 bytes"):
        store.set("b", b"k1", b"x" * 11, max_bytes=100)            # a's key: a's count
    store.delete(b"k2")
    assert store.set("a", b"k4", b"x" * 50, expires=0.05, max_bytes=100)[0]
    time.sleep(0.1)
    assert store.set("a", b"k5", b"x" * 90, max_bytes=100)[0]      # what expired is no longer counted
    assert store.set("host", b"k6", b"x" * 1000)[0]
    # a key named as the count's own field in Redis (`#`) is counted as any other (it had
    # set the count: 189,001 bytes kept under a 10,000-byte limit)
    assert store.set("c", b"k7", b"x" * 90, max_bytes=100)[0]
    assert store.set("c", b"#", b"x", max_bytes=100)[0]
    with pytest.raises(StateError, match=r"^operator 'c' keeps 91 bytes"):
        store.set("c", b"k8", b"x" * 10, max_bytes=100)


def test_embedded_store_is_shared_between_processes(tmp_path):
    path = tmp_path / "shared.sqlite"
    mine = EmbeddedStore(path)
    code = ("import sys; from wasinn.pipeline.services import EmbeddedStore; "
            "s = EmbeddedStore(sys.argv[1]); print(s.set('worker-2', b'from-2', b'hello')[0]); "
            "print(s.get(b'from-1')[0].decode())")
    mine.set("worker-1", b"from-1", b"hi")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "hi"]
    assert mine.get(b"from-2")[0] == b"hello"
    mine.close()


# --- through an operator ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["embedded", "redis"])
def test_operator_uses_the_state_store(wasinn_host, probe, kind, request, tmp_path):
    if kind == "embedded":
        services = Services.embedded(log=EventLog(stream=io.StringIO()), state_path=tmp_path / "s.sqlite")
    else:
        url = request.getfixturevalue("redis_server").url
        services = Services(state_store=RedisStore(url, prefix=f"op{time.monotonic_ns()}:"),
                            log=EventLog(stream=io.StringIO()))
    with Operator.open(wasinn_host, probe, kind="map", name="stateful", services=services) as op:
        token = [200, 0, 0, "lease"]
        out = run(op, {"do": "state", "ops": [
            ["set", "a", "1", "unconditional", None, None], ["get", "a"], ["get", "missing"],
            ["set", "a", "2", "only-if-does-not-exist", None, None],
            ["set", "f", "x", "unconditional", None, token], ["set", "f", "y", "unconditional", None, None],
            ["vdel", "a", "nope", None], ["vdel", "a", "1", None], ["del", "a", None],
            ["set", "k" * 2000, "v", "unconditional", None, None],
            # a time to live of 2^64 - 1 s (u64's most): it had overflowed the embedded store's
            # 64-bit expiry (the guest got `internal`, the host logged an OverflowError)
            ["set", "t", "v", "unconditional", (2**64 - 1) * 1000, None],
            ["set", "t", "v", "unconditional", 3_600_000, None], ["get", "t"],
            # a fencing token is kept with its key: its node id had no bound (nor a place in
            # max-state-bytes), and a time past 20 digits sorted wrong as text
            ["set", "n", "v", "unconditional", None, [200, 0, 0, "n" * 2000]],
            ["set", "n", "v", "unconditional", None, [2**64 - 1, 0, 0, "late"]], ["get", "n"]]})
    assert out[0]["set"] is True and out[0]["version"][3] == services.state_store.clock.node_id
    assert out[1] == {"value": "1", "version": out[0]["version"]}
    assert out[2] == {"value": None, "version": None}
    assert out[3] == {"set": False, "version": None}
    assert out[4]["set"] is True
    assert out[5] == {"error": "StateStoreError_RequestError:the key is protected by a fencing token; "
                               "the request carries none"}
    assert [o["deleted"] for o in out[6:9]] == [-1, 1, 0]
    assert out[9] == {"error": "StateStoreError_RequestError:a state-store key has 1 to 1024 bytes, got 2000 "
                               "(limit 'max-state-key-bytes', --max-state-key-bytes)"}
    assert out[10] == {"error": "StateStoreError_RequestError:a state-store key lives at most 3153600000 s (100 "
                                f"years); this one was to live {2**64 - 1} s"}
    assert out[11]["set"] is True and out[12]["value"] == "v"
    assert out[13] == {"error": "StateStoreError_RequestError:a fencing token's node id has at most 1024 bytes, as a "
                                "key (limit 'max-state-key-bytes', --max-state-key-bytes); got 2000"}
    assert out[14] == {"error": f"StateStoreError_RequestError:a fencing token's time ({2**64 - 1} s) is past the "
                                "year 5138"}
    assert out[15] == {"value": None, "version": None}
    services.close()


def test_a_guest_flooding_keys_metrics_and_logs_is_bounded(wasinn_host, probe, tmp_path):
    log = io.StringIO()
    registry = CollectorRegistry()
    limits = Limits().updated({"max_state_keys": 50, "max_metric_series": 20, "max_log_lines": 30})
    services = Services.embedded(log=EventLog(stream=log), limits=limits, metrics=MetricFamilies(registry))
    with Operator.open(wasinn_host, probe, kind="map", name="hostile", services=services) as op:
        keys = run(op, {"do": "flood-keys", "n": 2000})
        series = run(op, {"do": "flood-metrics", "n": 2000})
        lines = run(op, {"do": "flood-logs", "n": 2000})
        # one series of 10,000 labels of 400 bytes: 4 MB held, and written on every scrape
        wide = run(op, {"do": "metric", "name": "wide", "value": 1,
                        "labels": [[f"k{i}", "v" * 200] for i in range(10_000)]})
        assert run(op, {"do": "count"})["count"] == 1  # the instance still works
    assert keys == {"ok": 50, "error": "StateStoreError_RequestError:operator 'hostile' holds 50 live state-store "
                                       "keys; the limit is 50 (limit 'max-state-keys', --max-state-keys)"}
    assert series == {"ok": 20, "error": "MetricsError_IncompatibleType:operator 'hostile' reports more than 20 "
                                         "metric series (limit 'max-metric-series', --max-metric-series)"}
    assert lines == {"ok": 2000, "error": None}  # a log line is never the guest's error: extra lines are dropped
    assert wide == {"error": "MetricsError_IncompatibleType:metric 'wide': 10000 labels; a series has at most 32"}
    written = [json.loads(line) for line in log.getvalue().splitlines()]
    flood = [r for r in written if r["event"] == "operator-log" and r["context"] == "flood"]
    assert 30 <= len(flood) <= 60  # at most 30 per second; the run may straddle a second
    (held,) = services.state_store._db.execute("SELECT COUNT(*) FROM kv").fetchone()
    assert held == 50
    samples = [s for m in registry.collect() for s in m.samples if s.name == "wasinn_operator_flood_total"]
    assert len(samples) == 20
    # the node's next instance (after a trap, the engine opens one) counts on: each trap
    # had let another max-metric-series series in
    with Operator.open(wasinn_host, probe, kind="map", name="hostile", services=services) as op:
        assert run(op, {"do": "metric", "name": "after", "value": 1}) == {
            "error": "MetricsError_IncompatibleType:operator 'hostile' reports more than 20 metric series "
                     "(limit 'max-metric-series', --max-metric-series)"}
    services.close()


def test_label_sets_of_new_keys_are_series_counted_against_the_limit():
    """A series is its name, label keys and values: counted by name and values alone, a
    guest making one counter with new label keys and empty values each call had made
    20,000 series (each a metric of its own, held for good: +200 MB, and a 250 MB scrape
    that held every other thread 1 s) under a limit of 256."""
    from wasinn.pipeline.services.metrics import MetricError, OperatorMetrics
    registry = CollectorRegistry()
    metrics = OperatorMetrics(MetricFamilies(registry), "hostile", 20)
    for i in range(20):
        metrics.add("keys", 1, [(f"k{i}", "")])
    with pytest.raises(MetricError, match="reports more than 20 metric series"):
        metrics.add("keys", 1, [("k20", "")])
    metrics.add("keys", 1, [("k3", "")])  # a series it has still counts
    samples = [s for m in registry.collect() for s in m.samples if s.name == "wasinn_operator_keys_total"]
    assert len(samples) == 20 and sum(s.value for s in samples) == 21


def test_a_histograms_scrape_is_bounded_by_its_label_text_and_it_records_no_nan():
    """Each histogram series is ~17 lines of every scrape, each with all its labels: 256
    series of 32 labels of 200 characters made a 60 MB scrape. A series' labels have at
    most MAX_LABEL_TEXT characters together; a NaN (in no bucket, the sum NaN for good)
    is refused."""
    from wasinn.pipeline.services.metrics import MAX_LABEL_TEXT, MetricError, OperatorMetrics
    registry = CollectorRegistry()
    metrics = OperatorMetrics(MetricFamilies(registry), "hostile", 256)
    wide = [(f"k{i}", "v" * 196) for i in range(5)]  # 5 x 198 characters: within
    metrics.record("latency", 1.5, wide)
    with pytest.raises(MetricError, match=rf"^metric 'latency': its label keys and values have more than "
                                          rf"{MAX_LABEL_TEXT} characters together$"):
        metrics.record("latency", 1.5, [*wide, ("k5", "v" * 40)])
    with pytest.raises(MetricError, match=r"^metric 'latency': a histogram records numbers; NaN is none$"):
        metrics.record("latency", float("nan"), wide)
    metrics.record("latency", float("inf"), wide)  # +Inf is a number, in the last bucket
    count = [s.value for m in registry.collect() for s in m.samples if s.name == "wasinn_operator_latency_count"]
    assert count == [2.0]


def test_logger_writes_json_lines_with_the_operator_and_context(wasinn_host, probe):
    log = io.StringIO()
    services = Services.embedded(log=EventLog(stream=log, level="debug"))
    temperature = wasinn_host.load_component(operator_wasm("temperature"))
    with Operator.open(wasinn_host, temperature, kind="map", name="to-celsius", configuration={"key2": "v"},
                       services=services) as op:
        op.init()
    first = json.loads(log.getvalue().splitlines()[0])
    assert {k: first[k] for k in ("level", "event", "operator", "context", "message", "guest_level")} == {
        "level": "info", "event": "operator-log", "operator": "to-celsius", "context": "module-temperature/map",
        "message": "Initialization function invoked", "guest_level": "info"}
    services.close()


def test_metrics_reach_prometheus_with_their_labels(wasinn_host, probe):
    registry = CollectorRegistry()
    services = Services.embedded(log=EventLog(stream=io.StringIO()), metrics=MetricFamilies(registry))
    with Operator.open(wasinn_host, probe, kind="map", name="counting", services=services) as op:
        for _ in range(3):
            assert run(op, {"do": "metric", "name": "requests", "value": 2, "labels": [["unit", "C"]]}) == {"ok": True}
        assert run(op, {"do": "histogram", "name": "latency", "value": 0.25}) == {"ok": True}
        assert run(op, {"do": "histogram", "name": "requests", "value": 1.0}) == {
            "error": "MetricsError_IncompatibleType:metric 'requests' is a counter, not a histogram"}
        # another key set under the same name is another series of the family
        assert run(op, {"do": "metric", "name": "requests", "value": 1, "labels": [["other", "x"]]}) == {"ok": True}
        assert run(op, {"do": "metric", "name": "requests", "value": 4}) == {"ok": True}
        # a counter's name is its family's without _total, as Prometheus has it (a counter
        # foo_total beside a histogram foo, labelled le, had broken every scrape)
        assert run(op, {"do": "metric", "name": "requests_total", "value": 1}) == {"ok": True}
        assert run(op, {"do": "metric", "name": "latency_total", "value": 1, "labels": [["x", "1"]]}) == {
            "error": "MetricsError_IncompatibleType:metric 'latency' is a histogram, not a counter"}
        for key in ("le", "quantile", "operator"):
            assert run(op, {"do": "metric", "name": "other", "value": 1, "labels": [[key, "not-a-number"]]}) == {
                "error": f"MetricsError_IncompatibleType:metric 'other': label key '{key}' is reserved, repeated "
                         "or invalid"}
    assert registry.get_sample_value("wasinn_operator_requests_total", {"operator": "counting", "unit": "C"}) == 6
    assert registry.get_sample_value("wasinn_operator_requests_total", {"operator": "counting", "other": "x"}) == 1
    assert registry.get_sample_value("wasinn_operator_requests_total", {"operator": "counting"}) == 5
    from prometheus_client import generate_latest
    text = generate_latest(registry).decode()
    assert text.count("# TYPE wasinn_operator_requests_total counter") == 1
    assert registry.get_sample_value("wasinn_operator_latency_sum", {"operator": "counting"}) == 0.25
    services.close()


def test_schema_registry_from_a_file_or_not_available(wasinn_host, probe, tmp_path):
    log = io.StringIO()
    services = Services.embedded(log=EventLog(stream=log))
    with Operator.open(wasinn_host, probe, kind="map", name="no-schemas", services=services) as op:
        assert run(op, {"do": "schema", "id": "temp", "version": "1"}) == {"error": "SchemaError_NotAvailable"}
    warning = [json.loads(line) for line in log.getvalue().splitlines() if "schema-registry" in line][0]
    assert warning["event"] == "operator-service-unavailable" and warning["operator"] == "no-schemas"
    path = tmp_path / "schemas.json"
    path.write_text(json.dumps([{"name": "temp", "version": "2", "content": {"type": "object"}}]))
    services.schemas = SchemaRegistry.from_file(path)
    with Operator.open(wasinn_host, probe, kind="map", name="schemas", services=services) as op:
        assert run(op, {"do": "schema", "id": "temp", "version": "2"}) == {
            "name": "temp", "version": "2", "content": '{"type": "object"}', "format": "SchemaFormat_Json"}
        assert run(op, {"do": "schema", "id": "temp", "version": "1"}) == {"error": "SchemaError_NotFound"}
    services.close()


@contextlib.contextmanager
def _probe_graph(host, tmp_path, schema_name: str | None = None, input_schema: str | None = None,
                 schemas=None):
    """A DataflowRunner (the engine as a worker runs it) of a graph definition whose one
    operation is guest/operator-probe's map, and a function that answers a payload with it."""
    import dataclasses

    import paho.mqtt.client as mqtt
    import yaml
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from wasinn.pipeline import graphdef
    from wasinn.pipeline.engine import DataflowRunner
    graph = {"moduleRequirements": {"apiVersion": "1.1.0", "runtimeVersion": "1.1.0"},
             "operations": [{"operationType": "source", "name": "s"},
                            {"operationType": "map", "name": "m", "module": "probe:1"},
                            {"operationType": "sink", "name": "k"}],
             "schemas": [{"name": "reading", "format": "json", "schema": '{"type": "object"}'}],
             "connections": [{"from": {"name": "s", **({"schemaName": schema_name} if schema_name else {})},
                              "to": {"name": "m"}}, {"from": {"name": "m"}, "to": {"name": "k"}}]}
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(graph))
    flow = graphdef.resolve(path, graphdef.ServeFlags(modules={"probe": operator_wasm("operator-probe")},
                                                      sources=("in",), sink="out"))
    flow = dataclasses.replace(flow, input_schema=input_schema)  # a deployment's (test_dataflow_files)
    services = Services.embedded(log=EventLog(stream=io.StringIO()))
    if schemas is not None:
        services.schemas = schemas
    runner = DataflowRunner(flow, host, EventLog(stream=io.StringIO()), services=services)

    def answer(payload: bytes):
        msg = mqtt.MQTTMessage(topic=b"in")
        msg.payload = payload
        msg.properties = Properties(PacketTypes.PUBLISH)
        return runner.answer("1", msg, None, 0.0, "w")
    try:
        yield answer
    finally:
        runner.close()


def _through_graph(host, tmp_path, schema_name: str | None, input_schema: str | None, schemas) -> dict:
    """What the probe's map, the one operation of a graph definition, says of the schema
    of a message from the source."""
    with _probe_graph(host, tmp_path, schema_name, input_schema, schemas) as answer:
        (pub,), _ = answer(b'{"do": "message-schema"}')
        return json.loads(pub.payload)


def test_an_operators_error_text_is_cut_before_it_reaches_a_log_line_or_dead_letter(wasinn_host, tmp_path):
    from wasinn.pipeline.graph import MAX_FAILURE_TEXT, StageFailure
    with _probe_graph(wasinn_host, tmp_path) as answer:
        with pytest.raises(StageFailure) as e:
            answer(json.dumps({"do": "fail", "message": "x" * 1_000_000}).encode())
    assert e.value.kind == "operator-error"
    assert e.value.message == "x" * MAX_FAILURE_TEXT + "... (cut: 1000000 characters)"


def test_schema_references_reach_operators_on_their_connections(wasinn_host, tmp_path):
    """A graph's `from.schemaName` hands its schema inline; a deployment's `schemaRef` hands
    the reference, which the operator resolves through `schema-registry` (--schemas)."""
    from wasinn.pipeline.services.schemas import Schema
    registry = SchemaRegistry([Schema("reading", "factory", "2", "json", '{"required": ["t"]}')])
    assert _through_graph(wasinn_host, tmp_path, "reading", None, registry) == {"inline": ["reading", '{"type": "object"}']}
    assert _through_graph(wasinn_host, tmp_path, None, "aio-sr://factory/reading:2", registry) == {
        "reference": "aio-sr://factory/reading:2", "got": '{"required": ["t"]}'}
    # the connection's own schema is what its messages carry
    assert "inline" in _through_graph(wasinn_host, tmp_path, "reading", "aio-sr://factory/reading:2", registry)
    assert _through_graph(wasinn_host, tmp_path, None, None, registry) is None


def test_command_invoker_over_mqtt5_or_client_error(wasinn_host, probe):
    from support.pipeline_service import Broker
    services = Services.embedded(log=EventLog(stream=io.StringIO()))
    with Operator.open(wasinn_host, probe, kind="map", name="rpc", services=services) as op:
        assert run(op, {"do": "invoke", "topic": "cmd/probe", "payload": "x"}) == {"error": "RpcError_ClientError"}
    with Broker() as broker:
        responder = command_responder(broker, "cmd/probe", echo_with_seen_k)
        invoker_client = connected_client(broker, "invoker")
        services.invoker = CommandInvoker(invoker_client, client_id="invoker")
        with Operator.open(wasinn_host, probe, kind="map", name="rpc", services=services) as op:
            assert run(op, {"do": "invoke", "topic": "cmd/{commandName}", "payload": "ping"}) == {
                "payload": "re:ping", "user": [["seen", "v"]]}
            assert run(op, {"do": "invoke", "topic": "cmd/nobody", "payload": "ping", "timeout": 1}) == {
                "error": "RpcError_Timeout"}
        for c in (responder, invoker_client):
            c.loop_stop()
            c.disconnect()
    services.close()


def test_command_topics_and_user_data_are_held_to_what_the_shared_connection_bears(wasinn_host, probe):
    """The operator chooses a command's topics and user data, but the connection is the
    graph's: text MQTT forbids (the broker would drop the connection), wildcards (a
    response topic `#` subscribes to the whole broker), the graph's source topics (a
    response topic there would take its input), the host's own topics (a request on a
    worker's presence topic says it is lost), the broker's (`$share/G/T` subscribes to T)
    and an endless number of response topics
    are refused with rpc-error cases, as is a response over max-payload-bytes (anyone on
    the broker may answer); the connection stays up and keeps its subscriptions."""
    from support.pipeline_service import Broker
    from wasinn.pipeline.services.invoker import MAX_RESPONSE_TOPICS
    stream = io.StringIO()
    services = Services.embedded(log=EventLog(stream=stream), limits=Limits(max_payload_bytes=100_000))
    with Broker() as broker:
        dropped = []
        invoker_client = connected_client(broker, "invoker", dropped)
        responder = command_responder(broker, "cmd/big", lambda request: (b"x" * 100_001, []))
        services.invoker = CommandInvoker(invoker_client, client_id="invoker", reserved=("plant/+/in",))
        invalid = {"error": "RpcError_ConfigurationInvalid"}
        with Operator.open(wasinn_host, probe, kind="map", name="rpc", services=services) as op:
            for cmd in [{"topic": "cmd/+"}, {"topic": "cmd/#"}, {"topic": "cmd/a\nb"}, {"topic": "cmd/\u0000"},
                        {"topic": "x" * 70000}, {"topic": "cmd/x", "response": "replies/#"},
                        {"topic": "cmd/x", "response": "plant/7/in"}, {"topic": "plant/7/in"},
                        {"topic": "wasinn/g/workers/g-0", "payload": '{"worker": "g-0", "state": "lost"}'},
                        {"topic": "cmd/x", "response": "wasinn/g/workers/g-0"},
                        {"topic": "cmd/x", "response": "$share/g/plant/7/in"}, {"topic": "$SYS/x"}]:
                assert run(op, {"do": "invoke", "payload": "x", "timeout": 0, **cmd}) == invalid, cmd
            assert run(op, {"do": "invoke", "topic": "cmd/x", "payload": "x", "timeout": 0,
                            "user": [["k", "line\nbreak"]]}) == {"error": "RpcError_HeaderInvalid"}
            assert run(op, {"do": "invoke", "topic": "cmd/big", "response": "replies/0", "payload": "x"}) == {
                "error": "RpcError_PayloadInvalid"}
            for i in range(MAX_RESPONSE_TOPICS):  # each subscribed, each request unanswered at once
                assert run(op, {"do": "invoke", "topic": "cmd/x", "response": f"replies/{i}", "payload": "x",
                                "timeout": 0}) == {"error": "RpcError_Timeout"}
            assert run(op, {"do": "invoke", "topic": "cmd/x", "response": "replies/one-more", "payload": "x",
                            "timeout": 0}) == {"error": "RpcError_ClientError"}
            assert run(op, {"do": "invoke", "topic": "cmd/x", "response": "replies/0", "payload": "x",
                            "timeout": 0}) == {"error": "RpcError_Timeout"}  # one it has still serves
        # a command waits for its response no longer than the operator's call may run
        host = wasinn.Host(limits=Limits(deadline=1.0))
        with Operator.open(host, host.load_component(operator_wasm("operator-probe")), kind="map", name="slow",
                           services=services) as op:
            started = time.monotonic()
            try:  # the deadline's trap, or (the epoch ticker late on a loaded machine) the command's timeout
                assert run(op, {"do": "invoke", "topic": "cmd/nobody", "response": "replies/0", "payload": "x",
                                "timeout": 300}) == {"error": "RpcError_Timeout"}
            except OperatorError as e:
                assert "ran past its deadline of 1 s" in str(e)
            # its own timeout (300 s) is what it would wait otherwise; a loaded machine only
            # adds seconds to the deadline's one
            assert time.monotonic() - started < 60
        log = stream.getvalue()
        assert "the response topic 'plant/7/in': the graph's source topic 'plant/+/in' takes it" in log
        assert ("the request topic 'wasinn/g/workers/g-0': topics under wasinn/ are the host's own (where its "
                "workers announce their presence)") in log
        assert ("the response topic '$share/g/plant/7/in': topics starting with '$' are the broker's ($SYS, "
                "$share/GROUP/ subscriptions)") in log
        assert f"subscribed to {MAX_RESPONSE_TOPICS} response topics for commands already" in log
        time.sleep(0.3)
        assert "the response is 100001 bytes; the limit is 100000" in log
        assert dropped == [] and invoker_client.is_connected()
        for c in (invoker_client, responder):
            c.loop_stop()
            c.disconnect()
    services.close()


def test_operators_cannot_reach_the_hosts_own_state_keys(wasinn_host, probe):
    """The graph's windows (their lock, index and staged messages) share the store with the
    operators: an operator that could use their keys read the messages staged in another
    graph's window, or took the windows' lock with a fencing token from the far future
    and no window staged again."""
    from wasinn.pipeline.services.clock import Timestamp
    from wasinn.pipeline.windows import Windows
    services = Services.embedded(log=EventLog(stream=io.StringIO()))
    windows = Windows(services.state_store, "wasinn/g", "w0")
    at = Timestamp(2_000_000_000, 0)
    windows.stage("acc", at, Message(b"another graph's reading", "t"))
    refused = {"error": "StateStoreError_RequestError:state-store keys starting with 'wasinn/' are the host's "
                        "(its accumulate windows); an operator's keys may not"}
    window = "wasinn/g/window/acc/%020d.%020d" % (at.wall, 0)
    with Operator.open(wasinn_host, probe, kind="map", name="m", services=services) as op:
        assert run(op, {"do": "state", "ops": [
            ["get", "wasinn/g/index"], ["get", window], ["del", window, None], ["vdel", "wasinn/g/index", "[]", None],
            ["set", "wasinn/g/lock", "mine", "unconditional", None, [9_999_999_999, 0, 0, "z"]]]}) == [refused] * 5
        assert run(op, {"do": "state", "ops": [["set", "wasinn-own", "1", "unconditional", None, None]]})[0]["set"]
    windows.stage("acc", at, Message(b"next", "t"))
    (_, _, messages, _, _), = windows.due(Timestamp(2_000_000_001, 0))
    assert [m.payload for m in messages] == [b"another graph's reading", b"next"]
    services.close()


def test_state_seed_file_as_azure_writes_it(store, tmp_path):
    from wasinn.pipeline.services.state_store import seed
    path = tmp_path / "statestore.json"
    path.write_text(json.dumps([{"factoryId": "factoryA"}, {"machineId": "machineA", "limits": {"max": 3}}]))
    assert seed(store, path) == 3
    assert [store.get(k)[0] for k in (b"factoryId", b"machineId", b"limits")] == [b"factoryA", b"machineA",
                                                                                   b'{"max": 3}']
    path.write_text("[1, 2]")
    with pytest.raises(wasinn.WasinnError, match=r"statestore.json: expected an object of keys to values"):
        seed(store, path)


def test_redis_restart_is_a_timeout_then_the_store_serves_again(wasinn_host, probe):
    server = RedisServer()  # its own: this one is stopped
    try:
        services = Services(state_store=RedisStore(server.url, timeout=1.0), log=EventLog(stream=io.StringIO()))
        with Operator.open(wasinn_host, probe, kind="map", name="through-restart", services=services) as op:
            put = ["set", "k", "v", "unconditional", None, None]
            assert run(op, {"do": "state", "ops": [put]})[0]["set"] is True
            server.stop()
            assert run(op, {"do": "state", "ops": [["get", "k"]]}) == [{"error": "StateStoreError_Timeout"}]
            server.start()  # no persistence: the key is gone, the store serves again
            assert run(op, {"do": "state", "ops": [["get", "k"], put]})[1]["set"] is True
        services.close()
    finally:
        server.close()


def test_embedded_store_conditions_are_atomic_across_processes(tmp_path):
    """Two workers racing only-if-does-not-exist on the same keys: each key has one winner."""
    path = tmp_path / "race.sqlite"
    EmbeddedStore(path).close()
    code = ("import sys; from wasinn.pipeline.services import EmbeddedStore; s = EmbeddedStore(sys.argv[1]); "
            "print(sum(s.set(sys.argv[2], b'k%d' % i, sys.argv[2].encode(), condition='only-if-does-not-exist')[0] "
            "for i in range(300)))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"w{n}"], stdout=subprocess.PIPE, text=True)
             for n in range(2)]
    wins = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(wins) == 300
    store = EmbeddedStore(path)
    owners = {store.get(b"k%d" % i)[0] for i in range(300)}
    assert owners <= {b"w0", b"w1"}
    store.close()

def test_a_mass_expiry_is_dropped_a_batch_per_write_and_counts_nowhere_meanwhile(tmp_path):
    """An operator's keys expiring together were all dropped by the next write of any
    operator, under the store's lock (10,000 keys of 6 KB: 78 ms). Each write now drops
    a batch; the rest are absent to every request and to their creator's quotas."""
    import sqlite3

    from wasinn.pipeline.services.state_store import PURGE_BATCH
    path = tmp_path / "expiry.sqlite"
    store = EmbeddedStore(path)
    n = 3 * PURGE_BATCH
    for i in range(n):
        assert store.set("a", b"a%d" % i, b"x" * 100, expires=0.05, max_keys=n, max_bytes=100 * n)[0]
    time.sleep(0.1)

    def rows() -> int:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return db.execute("SELECT COUNT(*) FROM kv").fetchone()[0]
    assert store.set("b", b"other", b"y")[0]
    assert rows() == n - PURGE_BATCH + 1
    # what is still there expired: absent to get, del, vdel and conditions alike
    assert store.get(b"a%d" % (n - 1)) == (None, None)
    assert store.delete(b"a%d" % (n - 2)) == (0, None)
    assert store.delete(b"a%d" % (n - 3), value=b"x" * 100) == (0, None)
    assert store.set("b", b"a%d" % (n - 4), b"z", condition="only-if-does-not-exist")[0]
    assert store.get(b"a%d" % (n - 4))[0] == b"z"
    # and to its creator's quotas: all of them anew, keys and bytes
    for i in range(n):
        assert store.set("a", b"again%d" % i, b"x" * 100, max_keys=n, max_bytes=100 * n)[0]
    with pytest.raises(StateError, match=rf"^operator 'a' holds {n} live state-store keys"):
        store.set("a", b"one-more", b"x", max_keys=n)
    with pytest.raises(StateError, match=rf"^operator 'a' keeps {100 * n} bytes of values"):
        store.set("a", b"again0", b"x" * 101, max_keys=n, max_bytes=100 * n)
    assert rows() == n + 2  # the expired ones went, a batch at a time
    store.close()



def test_large_expired_values_are_dropped_a_mebibyte_per_write_and_found_without_reading_them(tmp_path):
    """33 values of 2 MB expiring together (one operator's 64 MiB) were dropped in one
    write, and found by a query that read each whole value to reach the columns stored
    after it: the next write of any operator held the store 0.23 s (three such operators:
    0.46 s, and a 0.1 s deadline ended 0.41 s late). A write now drops one such key (past
    PURGE_BYTES, no more than the first), found by an index that holds what the drop counts."""
    import sqlite3

    from wasinn.pipeline.services.state_store import PURGE_BYTES
    path = tmp_path / "big.sqlite"
    store = EmbeddedStore(path)
    size, n = 2_000_000, 8
    for i in range(n):
        # all to expire once every one is written (a key expired meanwhile is dropped by the next)
        assert store.set("a", b"big%d" % i, b"x" * size, expires=2.0, max_keys=n, max_bytes=size * n)[0]
    time.sleep(2.1)

    def rows() -> int:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return db.execute("SELECT COUNT(*) FROM kv").fetchone()[0]
    assert size > PURGE_BYTES
    for written in range(1, n + 1):
        assert store.set("b", b"small", b"y")[0]
        assert rows() == n - written + 1  # one big key gone a write, and "small" kept
    with contextlib.closing(sqlite3.connect(path)) as db:
        plan = " ".join(r[-1] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT rowid, owner, length(value) FROM kv WHERE expires IS NOT NULL AND "
            "expires <= 1 ORDER BY expires LIMIT 64"))
        (index,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'kv_expiry'").fetchone()
    assert "INDEX kv_expiry" in plan and "(expires, owner, length(value))" in index, (plan, index)
    store.close()


def test_operator_limits_come_from_the_toml_file_and_flags(tmp_path):
    from wasinn.cli import limits_from_args, parser
    path = tmp_path / "wasinn.toml"
    path.write_text('[limits]\nmax-state-key-bytes = "2KiB"\nmax-state-keys = 5\nmax-metric-series = 7\n'
                    'max-log-lines = 9\nmax-payload-bytes = "1MiB"\nmax-delay = "10m"\nmax-open-windows = 11\n'
                    'max-state-bytes = "3MiB"\nmax-window-messages = 12\nmax-window-bytes = "5MiB"\n')
    limits = Limits.from_file(path)
    assert (limits.max_state_key_bytes, limits.max_state_keys, limits.max_metric_series, limits.max_log_lines,
            limits.max_payload_bytes, limits.max_delay, limits.max_open_windows, limits.max_state_bytes,
            limits.max_window_messages, limits.max_window_bytes) == (2048, 5, 7, 9, 1 << 20, 600, 11, 3 << 20, 12, 5 << 20)
    args = parser().parse_args(["run", "--config", str(path), "--max-state-keys", "6", "--max-delay", "30s",
                                "--max-window-messages", "13", "x.wasm"])
    assert (limits_from_args(args).max_state_keys, limits_from_args(args).max_delay,
            limits_from_args(args).max_window_messages) == (6, 30, 13)
    with pytest.raises(wasinn.WasinnError, match=r"^limit max-log-lines: 'x' is not a number|^limit max-log-lines"):
        Limits().updated({"max-log-lines": "x"})


def test_operator_log_rate_and_dropped_count():
    from wasinn.pipeline.services.logger import OperatorLog
    out, now = io.StringIO(), [100.0]
    log = OperatorLog(EventLog(stream=out), "op", lines_per_second=2, clock=lambda: now[0])
    for i in range(5):
        log.write("info", "ctx", f"line {i}")
    log.write("trace", "ctx", "below the log's level")  # neither written nor counted
    now[0] = 101.0
    log.write("critical", "ctx", "next second")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["level"], r["message"], r.get("dropped_lines")) for r in lines] == [
        ("info", "line 0", None), ("info", "line 1", None), ("error", "next second", 3)]


def test_versions_grow_across_writers_whose_clocks_disagree(store):
    """A writer whose clock is an hour behind still gets a later version than the last one
    the store issued: a lease taken after another expired fences out the old holder."""
    ok, first = store.set("a", b"lease", b"holder-1", expires=0.05)
    time.sleep(0.1)
    store.clock = HybridClock("behind", wall_clock=lambda: time.time_ns() - 3600 * 10**9)
    ok, second = store.set("b", b"lease", b"holder-2", condition="only-if-does-not-exist")
    assert ok and second > first and second.node_id == "behind"
    assert store.set("b", b"guarded", b"x", fencing=second)[0]
    with pytest.raises(StateError, match="older"):
        store.set("a", b"guarded", b"y", fencing=first)
    count, third = store.delete(b"lease")
    assert count == 1 and third > second


def test_temperature_module_counts_requests_as_azure_does(wasinn_host):
    registry = CollectorRegistry()
    services = Services.embedded(log=EventLog(stream=io.StringIO()), metrics=MetricFamilies(registry))
    temperature = wasinn_host.load_component(operator_wasm("temperature"))
    with Operator.open(wasinn_host, temperature, kind="map", name="to-celsius", services=services) as op:
        for unit in "FFC":
            op.map(Message(json.dumps({"temperature": {"value": 50, "unit": unit}}).encode()))
    module = {"operator": "to-celsius", "module": "module-temperature/map"}
    assert registry.get_sample_value("wasinn_operator_requests_total", module) == 3
    assert registry.get_sample_value("wasinn_operator_requests_total", {**module, "unit": "Fahrenheit"}) == 2
    assert registry.get_sample_value("wasinn_operator_requests_total", {**module, "unit": "Celsius"}) == 1
    services.close()

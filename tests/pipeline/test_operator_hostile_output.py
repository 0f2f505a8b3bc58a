"""A hostile operator (guest/c-hostile-operator) costs only its own message, which goes to
the dead-letter topic with the reason, and the next message runs:

- its result is guest input too: the content type and user properties it gives a message
  go onto the wire, to a broker that drops a client for text MQTT forbids (and the
  client, resending that publish on every reconnect, never got past it: one result
  stopped the worker for good);
- a WASI sleep holds its call in wasmtime's native code, where no deadline reaches: the
  worker gives the message up and restarts. (~15 s)"""
from __future__ import annotations

import time

import pytest

from support.dataflow_support import Collector, send
from support.operator_guests import hostile_operator_wasm
from support.pipeline_service import Service, client

REF = "wasinn-tests/hostile-operator:1.0.0"
GRAPH = """
moduleRequirements: {apiVersion: "1.1.0", runtimeVersion: "1.1.0"}
operations:
  - {operationType: source, name: source}
  - {operationType: map, name: hostile, module: "%s"}
  - {operationType: sink, name: sink}
connections:
  - {from: {name: source}, to: {name: hostile}}
  - {from: {name: hostile}, to: {name: sink}}
""" % REF


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile-output") / "graph.yaml"
    path.write_text(GRAPH)
    return path


@pytest.mark.parametrize("command, kind, reason", [
    ("ctrl", "operator-contract", r"a user property's value 'a\nb': it holds U+000A at index 1 "
                                  "(MQTT strings hold no control characters)"),
    ("nul", "operator-contract", r"a user property's value 'a\x00b': it holds U+0000 at index 1"),
    ("long", "operator-contract", "a user property's key 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'...: it is "
                                  "70000 bytes of UTF-8; an MQTT string holds at most 65535"),
    ("ctype", "operator-contract", r"its content type 'text/plain\r\nX: y': it holds U+000D at index 10"),
    # 4,000 keys of 64 KiB from 64 KiB of guest memory: wasmtime's per-call bound on lists
    ("bigprops", "trap", "more than wasmtime's per-call limit for list values"),
])
def test_a_result_mqtt_cannot_carry_goes_to_dead_letters_and_the_next_message_runs(broker, graph, command, kind,
                                                                                    reason):
    with Collector(broker, ["h/out", "h/out/dead-letter"]) as got, \
            Service(broker, workers=1, pipeline=graph, log_level="info",
                    extra=("--module", f"{REF}={hostile_operator_wasm()}", "--source", "h/in",
                           "--sink", "h/out")) as service:
        service.wait_subscribed(1)
        c = client(broker)
        send(c, "h/in", command.encode(), "m-1")
        send(c, "h/in", b"fine", "m-2")
        (out,) = [r for r in got.wait(lambda g: len(g) >= 2, 30) if r.topic == "h/out"]
        assert out.id == "m-2" and out.payload == b"out"
        (dead,) = got.on("h/out/dead-letter")
        error = dead.json()["error"]
        assert dead.id == "m-1" and error["kind"] == kind and reason in error["message"], error
        assert not service.find("reconnecting")  # the broker never dropped the worker
        c.disconnect()


def test_an_operator_asleep_past_its_deadline_costs_its_message_and_a_worker_restart(broker, graph):
    with Collector(broker, ["h/out", "h/out/dead-letter"]) as got, \
            Service(broker, workers=1, pipeline=graph, log_level="info",
                    extra=("--module", f"{REF}={hostile_operator_wasm()}", "--source", "h/in", "--sink", "h/out",
                           "--deadline", "1s")) as service:
        service.wait_subscribed(1)
        c = client(broker)
        started = time.monotonic()
        send(c, "h/in", b"sleep", "m-1")
        send(c, "h/in", b"fine", "m-2")
        (dead,) = [r for r in got.wait(lambda g: any(r.topic == "h/out/dead-letter" for r in g), 30)
                   if r.topic == "h/out/dead-letter"]
        assert time.monotonic() - started < 10  # not the hour it asked for
        error = dead.json()["error"]
        assert dead.id == "m-1" and error["kind"] == "overdue", error
        assert "still running 1 s past its deadline of 1 s" in error["message"]
        (out,) = [r for r in got.wait(lambda g: any(r.topic == "h/out" for r in g), 60) if r.topic == "h/out"]
        assert out.id == "m-2"  # on the worker started in its place
        assert service.find("worker-died", status="exit status 75")
        time.sleep(1)
        assert [r.id for r in got.on("h/out/dead-letter")] == ["m-1"]  # given up once, not run again
        c.disconnect()

"""Each operator kind of Azure's data-flow graphs, called in a loop on real components
with exact expected outputs: the temperature module (one component: map, filter,
branch, accumulate; Azure's JSON to the byte) and the suite's probe (every kind, all
six services imported); errors, traps and re-initialisation."""
from __future__ import annotations

import io
import json
import time

import pytest

import wasinn
from wasinn.errors import WasinnError
from wasinn.limits import Limits
from wasinn.pipeline.jsonlog import EventLog
from wasinn.pipeline.operator import Message, Operator, OperatorError, Services, Snapshot, Timestamp

from support.operator_guests import operator_wasm

# Azure's t01 (samples/wasm/tests/t01-simple-temp-conversion): input and expected payload
T01_IN = b'{\n    "temperature": {\n        "value": 1209,\n        "unit": "F"\n    }\n}\n'
T01_OUT = (b'{"temperature":{"value":653.8888888888889,"count":0,"max":0.0,"min":0.0,"average":0.0,'
           b'"last":0.0,"unit":"C","overtemp":false}}')


@pytest.fixture(scope="module")
def temperature(wasinn_host):
    return wasinn_host.load_component(operator_wasm("temperature"))


@pytest.fixture(scope="module")
def probe(wasinn_host):
    return wasinn_host.load_component(operator_wasm("operator-probe"))


def temp(value, unit="C"):
    return json.dumps({"temperature": {"value": value, "unit": unit}}).encode()


def test_one_module_exports_four_operators(temperature, probe):
    assert Operator.kinds(temperature) == {"map", "filter", "branch", "accumulate"}
    assert Operator.kinds(probe) == {"map", "filter", "branch", "accumulate", "delay"}


def test_kind_the_module_does_not_export_is_refused_in_one_line(wasinn_host, temperature, services):
    with pytest.raises(WasinnError, match=r"^operator 'd': the module exports no delay operator "
                                          r"\(wasm-graph:processor/delay@1.1.0\); it exports: accumulate, branch, "
                                          r"filter, map$"):
        Operator.open(wasinn_host, temperature, kind="delay", name="d", services=services)


def test_temperature_map_converts_fahrenheit_as_azure_does(wasinn_host, temperature, services):
    with Operator.open(wasinn_host, temperature, kind="map", name="module-temperature/map", services=services) as op:
        for i in range(20):
            stamp = Timestamp(1_700_000_000 + i, 5, i, "node-a")
            out = op.map(Message(T01_IN, topic="sensors/temp", content_type="application/json",
                                 user_properties=[("test_property_key", "old"), ("i", str(i))], timestamp=stamp))
            assert out == Message(T01_OUT, topic="sensors/temp", content_type="application/json",
                                  user_properties=[("test_property_key", "new_value"), ("i", str(i))], timestamp=stamp)
        celsius = temp(21.5)
        assert op.map(Message(celsius)).payload == celsius  # passed on as it came (its buffer, handed back)
        with pytest.raises(OperatorError, match=r"^operator 'module-temperature/map' failed \(error\): Failed to "
                                                r"parse payload as JSON$") as e:
            op.map(Message(b"{not json"))
        assert (e.value.kind, e.value.message) == ("error", "Failed to parse payload as JSON")
        with pytest.raises(OperatorError, match=r"\(error\): Unexpected input type$"):
            op.map(b"raw bytes")


def test_temperature_filter_keeps_the_configured_range(wasinn_host, temperature, services):
    config = {"temperature_lower_bound": "0", "temperature_upper_bound": "100"}
    with Operator.open(wasinn_host, temperature, kind="filter", name="range", configuration=config, services=services) as op:
        values = [-5, 0, 0.5, 42, 99.9, 100, 150]
        assert [op.filter(Message(temp(v))) for v in values] == [False, False, True, True, True, False, False]
        assert op.filter(Message(temp(50, "F"))) is False  # Azure's filter passes Celsius only
        assert op.filter(Message(b'{"humidity": {"value": 3}}')) is False


def test_temperature_branch_by_measurement_kind(wasinn_host, temperature, services):
    with Operator.open(wasinn_host, temperature, kind="branch", name="kind", services=services) as op:
        ts = Timestamp(1, 0, 0, "n")
        assert [op.branch(ts, Message(p)) for p in (temp(1), b'{"humidity": {"value": 3}}',
                                                     b'{"object": {"result": "cat"}}', temp(2, "F"))] == \
            [True, False, False, True]


def test_temperature_accumulate_folds_a_window(wasinn_host, temperature, services):
    with Operator.open(wasinn_host, temperature, kind="accumulate", name="window", services=services) as op:
        window = [Message(temp(v), topic=f"t{i}", timestamp=Timestamp(100 + i, 7, 0, "n"))
                  for i, v in enumerate([20, 30.5, 25])]
        staged = op.accumulate(Message(b"", topic="", timestamp=Timestamp(0, 0, 0, "n")), window)
        assert staged.payload == (b'{"temperature":{"count":3,"max":30.5,"min":20,"average":25.166666666666668,'
                                  b'"last":25,"unit":"C"}}')
        assert (staged.topic, staged.timestamp.secs, staged.timestamp.nanos) == ("t2", 102, 7)
        # the staged result of one call is where the next starts
        more = op.accumulate(staged, [Message(temp(-10), topic="t3", timestamp=Timestamp(200, 0, 0, "n"))])
        assert more.payload == (b'{"temperature":{"count":4,"max":30.5,"min":-10,"average":16.375,"last":-10,'
                                b'"unit":"C"}}')


def test_probe_filter_branch_accumulate_and_delay_in_a_loop(wasinn_host, probe, services):
    ops = {k: Operator.open(wasinn_host, probe, kind=k, name=k, configuration={"delay": "5"}, services=services)
           for k in ("filter", "branch", "accumulate", "delay")}
    for i in range(25):
        ts = Timestamp(1_000 + i, 999, i, "n")
        assert ops["filter"].filter(Message(b"pass" if i % 2 else b"drop")) is bool(i % 2)
        assert ops["branch"].branch(ts, Message(b"true" if i % 3 else b"false")) is bool(i % 3)
        assert ops["accumulate"].accumulate(b"s", [Message(b"a%d" % i), b"b", Snapshot(b"f", 1, 1)]) == \
            b"s|a%d|b|f" % i
        assert ops["delay"].delay(Message(b"x"), ts) == Timestamp(1_005 + i, 999, i, "n")
    for op in ops.values():
        op.close()


def test_a_delay_past_max_delay_is_the_operators_contract_error(wasinn_host, probe, services):
    """A window opens for every timestamp and is emitted once the clock reaches it: a delay
    a year ahead would stage its messages, acknowledged, for a year."""
    import time
    now = Timestamp(time.time_ns() // 10**9, 0, 0, "n")
    with Operator.open(wasinn_host, probe, kind="delay", name="late", configuration={"delay": "7200"},
                       services=services) as op:
        with pytest.raises(OperatorError, match=r"^operator 'late' failed \(contract\): the delay moved the "
                                                r"message's timestamp 7(19\d|200) s past the host's clock; the limit is "
                                                r"3600 s \(limit 'max-delay', --max-delay\)$"):
            op.delay(Message(b"x"), now)
        assert op.delay(Message(b"x"), Timestamp(now.secs - 7000, 0, 0, "n")).secs == now.secs + 200
        # the node id it returns is kept with the window it keys: at most an MQTT string
        with pytest.raises(OperatorError, match=r"\(contract\): the operator returned a timestamp's node id of 70000 "
                                                r"bytes; the limit is 65535$"):
            op.delay(Message(b"x"), Timestamp(now.secs - 7000, 0, 0, "n" * 70000))


def test_a_python_operator_asleep_for_an_hour_wakes_at_its_calls_deadline(services):
    """componentize-py's time.sleep waits in wasmtime's native poll (its WASI at 0.2.9,
    the C and JavaScript adapters' at 0.2.12: abi/clocks.py shadows each)."""
    import time
    host = wasinn.Host(limits=Limits(deadline=1.0))
    with Operator.open(host, host.load_component(operator_wasm("operator-probe")), kind="map", name="sleepy",
                       services=services) as op:
        started = time.monotonic()
        try:  # the deadline's trap, or (the epoch ticker late on a loaded machine) woken early
            assert json.loads(op.map(Message(json.dumps({"do": "sleep", "seconds": 3600}).encode())).payload) == {
                "slept": 3600}
        except OperatorError as e:
            assert "the call ran past its deadline of 1 s" in str(e)
        # the hour it asked for is what it would take otherwise; a loaded machine's start
        # and epoch ticker only add seconds to the deadline's one
        assert time.monotonic() - started < 60
        assert json.loads(op.map(Message(json.dumps({"do": "sleep", "seconds": 0.1}).encode())).payload) == {
            "slept": 0.1}


def test_snapshot_and_raw_bytes_round_trip(wasinn_host, probe, services):
    with Operator.open(wasinn_host, probe, kind="map", name="echo", services=services) as op:
        frame = bytes(range(256)) * 588  # 150,528 bytes: Azure's 224x224 RGB .raw frame
        snap = Snapshot(frame, 224, 224, "rgb24", Timestamp(3, 4, 5, "cam"))
        msg = json.dumps({"do": "echo"}).encode()
        assert op.map(Snapshot(msg, 1, len(msg), "raw", Timestamp(3, 4, 5, "cam"))) == \
            Snapshot(msg, 1, len(msg), "raw", Timestamp(3, 4, 5, "cam"))
        assert op.map(msg) == msg
        echoed = op.map(Message(msg, topic="a/b", content_type="application/json", user_properties=[("k", "v")],
                                timestamp=Timestamp(9, 8, 7, "n"), schema=("inline-name", "{}")))
        assert echoed == Message(msg, "a/b", "application/json", [("k", "v")], Timestamp(9, 8, 7, "n"),
                                 ("inline-name", "{}"))
        assert snap.frame == frame


def test_operator_error_and_trap_then_reinitialised(wasinn_host, probe, services):
    with Operator.open(wasinn_host, probe, kind="map", name="flaky", configuration={"start": "7"}, services=services) as op:
        count = lambda: json.loads(op.map(Message(b'{"do": "count"}')).payload)  # noqa: E731
        assert count() == {"count": 1, "start": 7}
        assert count() == {"count": 2, "start": 7}
        with pytest.raises(OperatorError, match=r"^operator 'flaky' failed \(error\): bad reading$"):
            op.map(Message(b'{"do": "fail", "message": "bad reading"}'))
        assert count() == {"count": 3, "start": 7}  # an error keeps the instance
        for _ in range(2):
            with pytest.raises(OperatorError, match=r"^operator 'flaky' failed \(trap\): guest trapped in "
                                                    r"wasm-graph:processor/map@1.1.0#process") as e:
                op.map(Message(b'{"do": "trap"}'))
            assert e.value.kind == "trap"
            # a fresh instance, initialised again with the same configuration
            assert count() == {"count": 1, "start": 7}
        assert op.instance.instances_started == 3
        op.reopen()
        assert count() == {"count": 1, "start": 7}


def test_an_operator_whose_memory_grows_is_renewed_before_it_traps_and_no_message_is_lost(probe):
    # componentize-py 0.25 keeps the bytes of each tensor an operator constructs; here the
    # probe keeps 2 MiB a message, under a 96 MiB memory limit: without the renewal the
    # ~40th message would trap at the limit (and go to the dead letters in a graph)
    import wasinn
    from support.repo import CACHE
    host = wasinn.Host(cache_dir=CACHE, limits=Limits(memory=96 << 20))
    log = io.StringIO()
    services = Services.embedded(log=EventLog(stream=log))
    with Operator.open(host, host.load_component(operator_wasm("operator-probe")), kind="map", name="hoarder",
                       configuration={"start": "3"}, services=services) as op:
        kept = [json.loads(op.map(Message(b'{"do": "hoard", "kib": 2048}')).payload)["kib"] for _ in range(120)]
        renewed = [json.loads(line) for line in log.getvalue().splitlines() if '"operator-renewed"' in line]
        assert len(renewed) >= 2 and op.instance.instances_started == len(renewed) + 1
        assert all(r["operator"] == "hoarder" and r["limit"] == 96 << 20 and r["memory"] <= 96 << 20 for r in renewed)
        assert kept.count(2048) == len(renewed) + 1  # each fresh instance hoards from nothing
        assert json.loads(op.map(Message(b'{"do": "count"}')).payload)["start"] == 3  # initialised again, configured


def test_an_operator_whose_memory_does_not_grow_is_never_renewed(wasinn_host, probe, services):
    with Operator.open(wasinn_host, probe, kind="map", name="steady", services=services) as op:
        for i in range(300):
            assert json.loads(op.map(Message(b'{"do": "count"}')).payload)["count"] == i + 1
        assert op.instance.instances_started == 1


def test_init_returning_false_is_an_error(wasinn_host, probe, services):
    op = Operator.open(wasinn_host, probe, kind="filter", name="picky", configuration={"fail-init": "1"}, services=services)
    with pytest.raises(OperatorError, match=r"^operator 'picky' failed \(init\): init returned false$"):
        op.init()
    with pytest.raises(OperatorError, match=r"\(init\)"):
        op.filter(Message(b"pass"))  # never processes uninitialised
    op.close()


def test_payload_over_the_limit_is_refused_before_the_guest(wasinn_host, probe):
    services = Services.embedded(log=EventLog(stream=io.StringIO()), limits=Limits().updated({"max_payload_bytes": 1000}))
    with Operator.open(wasinn_host, probe, kind="filter", name="small", services=services) as op:
        with pytest.raises(OperatorError, match=r"the payload is 1001 bytes; the limit is 1000 "
                                                r"\(limit 'max-payload-bytes', --max-payload-bytes\)"):
            op.filter(Message(b"x" * 1001))
        assert op.filter(Message(b"pass")) is True
    services.close()


def test_command_resources_past_their_bound_end_the_call_not_the_host(wasinn_host, probe, services):
    """Past 256 live command resources, or max-payload-bytes of what they hold, the call
    traps; the resources die with the instance (they had outlived it: the operator could
    make none again, and their payloads stayed held)."""
    with Operator.open(wasinn_host, probe, kind="map", name="hoarder", configuration={"start": "1"}, services=services) as op:
        assert json.loads(op.map(Message(b'{"do": "hoard-builders", "n": 100}')).payload) == {"ok": 100}
        with pytest.raises(OperatorError, match=r"^operator 'hoarder' failed \(trap\): operator 'hoarder' holds 256 "
                                                r"live command-invoker resources; drop some before making more$"):
            op.map(Message(b'{"do": "hoard-builders", "n": 300}'))
        assert op.imports.commands == {} and op.imports.command_bytes == 0
        assert json.loads(op.map(Message(b'{"do": "count"}')).payload) == {"count": 1, "start": 1}
        assert json.loads(op.map(Message(b'{"do": "hoard-builders", "n": 200}')).payload) == {"ok": 200}


def test_what_command_resources_hold_is_bounded_by_max_payload_bytes(wasinn_host, probe):
    """Each request builder may hold a payload up to max-payload-bytes; 256 live ones had
    held 256 times that (16 GiB by default). What the live ones hold together is bounded
    by it; a builder's next step shares its payload, which counts once."""
    services = Services.embedded(log=EventLog(stream=io.StringIO()), limits=Limits(max_payload_bytes=1 << 20))
    with Operator.open(wasinn_host, probe, kind="map", name="hoarder", services=services) as op:
        with pytest.raises(OperatorError, match=r"^operator 'hoarder' failed \(trap\): operator 'hoarder' holds "
                                                r"1048576 bytes in live command-invoker resources \(payloads, user "
                                                r"data, topics\); this one would add 65536, past 1048576 \(limit "
                                                r"'max-payload-bytes', --max-payload-bytes\); drop some before"):
            op.map(Message(b'{"do": "hoard-requests", "n": 20, "kib": 64}'))
        assert op.imports.command_bytes == 0
        assert json.loads(op.map(Message(b'{"do": "hoard-requests", "n": 15, "kib": 64}')).payload) == {"ok": 15}
        assert json.loads(op.map(Message(b'{"do": "hoard-requests", "n": 1, "kib": 1024}')).payload) == {"ok": 1}
    services.close()


def test_an_operator_opened_without_services_has_its_own(wasinn_host, probe):
    op = Operator.open(wasinn_host, operator_wasm("operator-probe"), kind="filter")
    assert op.name.startswith("operator-probe") and op.filter(Message(b"pass")) is True  # named after its file
    path = op.services.state_store.path
    op.close()
    import os
    assert not os.path.exists(path)


def test_a_folds_arguments_are_made_within_its_calls_deadline(services):
    """An accumulate fold of a full window (10,000 messages, 60,000 user properties: what
    an operator upstream can stage) took ~1 s to make its arguments before its deadline
    began, and its objects' collections held the GIL 100-150 ms. The deadline now covers
    making them: past it, the call ends as one past its deadline, the guest not entered,
    and the next call runs."""
    from support.repo import CACHE
    host = wasinn.Host(cache_dir=CACHE, limits=Limits(deadline=0.1))
    window = [Message(b"m", topic="t", timestamp=Timestamp(1, 0, 0, "n"),
                      user_properties=[(f"key{j}", "value") for j in range(6)]) for _ in range(10_000)]
    with Operator.open(host, operator_wasm("operator-probe"), kind="accumulate", name="fold",
                       services=services) as op:
        with pytest.raises(OperatorError, match=r"^operator 'fold' failed \(trap\): .*the call ran past its deadline "
                                                r"of 0.1 s \(limit 'deadline', --deadline\).*making its arguments took "
                                                r"that long"):
            op.accumulate(b"s", window)
        assert op.accumulate(b"s", window[:3]) == b"s|m|m|m"
        # reading the window counts too (the engine says when it began: a 64 MB window took
        # 0.26 s to read before the call's own clock started)
        with pytest.raises(OperatorError, match=r"the call ran past its deadline of 0.1 s"):
            op.accumulate(b"s", window[:3], started=time.monotonic() - 0.2)
        assert op.accumulate(b"s", window[:3], started=time.monotonic()) == b"s|m|m|m"

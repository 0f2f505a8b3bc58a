"""pipeline/connection.py's PublishProperties: the bytes paho's own Properties packs for
the same content type, correlation data and user properties, read back by paho alike.
And pipeline/worker.py's small pieces: presence messages, dead letters' JSON."""
from __future__ import annotations

import base64
import hashlib
import json

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from paho.mqtt.client import MQTTMessage
from paho.mqtt.properties import MalformedPacket

from wasinn.pipeline.connection import (MAX_RECEIVED_USER_PROPERTIES, PAHO_UNPACK, PROTOCOL_MAX_PACKET,
                                        PublishProperties, publish_packet_size, received_properties)
from wasinn.pipeline.worker import envelope, in_base64, message_id, presence, presence_state

CASES = [
    (None, None, []),
    ("application/json", None, [("id", "m-1")]),
    (None, b"\x00\x01corr", None),
    ("text/plain; charset=utf-8", bytes(range(256)), [("id", "x"), ("site", "plant-7"), ("site", "übel"), ("", "")]),
    ("", b"", [("k" * 1000, "v" * 70)]),
]


def _paho(content_type, correlation, user) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    if user:
        props.UserProperty = list(user)
    if content_type:
        props.ContentType = content_type
    if correlation:
        props.CorrelationData = correlation
    return props


@pytest.mark.parametrize("case", CASES)
def test_the_same_bytes_as_paho(case):
    ours, paho = PublishProperties(*case), _paho(*case)
    assert ours.pack() == paho.pack()
    assert str(ours) == str(paho) and ours.json() == paho.json() and ours.isEmpty() == paho.isEmpty()
    back = Properties(PacketTypes.PUBLISH)
    back.unpack(ours.pack())
    assert back.json() == paho.json()


@pytest.mark.parametrize("n", [0, 100, 16_000, 2_100_000, 268_435_000, 300 << 20])
def test_a_publish_packets_size_is_counted_past_what_mqtt_carries(n):
    # paho's encoder of the length raised past MQTT's largest packet (268,435,455 bytes
    # after the header), and a 205 MB message's dead letter raised out of the worker at
    # every resend; counted here, such a packet is only too large (a mapping: no pages)
    import mmap
    from paho.mqtt.properties import VariableByteIntegers
    props = PublishProperties(None, None, [("id", "m")])
    size = publish_packet_size("t/x", mmap.mmap(-1, n) if n else b"", props)
    remaining = 2 + 3 + 2 + len(props.pack()) + n
    if remaining <= 268_435_455:  # what paho's encoder takes: the same count
        assert size == 1 + len(VariableByteIntegers.encode(remaining)) + remaining
    assert (size > PROTOCOL_MAX_PACKET) == (remaining > 268_435_455)


def test_a_property_set_later_is_packed_too():
    ours, paho = PublishProperties("a/b", None, [("id", "1")]), _paho("a/b", None, [("id", "1")])
    ours.MessageExpiryInterval = paho.MessageExpiryInterval = 30
    assert ours.pack() == paho.pack()


@pytest.mark.parametrize("payload, state", [
    (presence("w-1", "up"), "up"),
    (b'{"state": ' + b"[" * 100_000, None),  # raised out of the supervisor's network callback
    (b'{"state": 5}', None),
    (b"not json", None),
    (b"[]", None),
])
def test_a_presence_message_says_a_state_or_none(payload, state):
    """Anyone the broker lets publish on a presence topic can send anything there."""
    assert presence_state(payload) == state


@pytest.mark.parametrize("n", [0, 1, 2, 3, (3 << 18) - 1, 3 << 18, (3 << 18) + 1, 5_000_000])
def test_a_dead_letters_payload_is_the_same_json_as_json_dumps_writes(n):
    """in_base64's steps meet on 3-byte boundaries; envelope puts the base64 in as is."""
    payload = bytes(i * 7 % 251 for i in range(n))
    body = {"id": "m-1", "error": {"stage": "s", "kind": "trap", "message": "\u00e9 \"quoted\""},
            "payload_bytes": n, "payload_base64": in_base64(payload)}
    expected = dict(body, payload_base64=base64.b64encode(payload).decode())
    assert json.loads(envelope(body)) == expected
    assert json.loads(envelope({"payload_base64": in_base64(payload)})) == {"payload_base64": expected["payload_base64"]}
    assert envelope(dict(body, payload_base64=None)) == json.dumps(dict(body, payload_base64=None)).encode()



def _received(packed: bytes, read) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    assert read(props, packed)[1] == len(packed)
    return props


@pytest.mark.parametrize("case", CASES)
def test_received_properties_reads_what_pahos_unpack_reads(case):
    """received_properties replaces paho's Properties.unpack (quadratic in the number of
    properties: a 1.8 MB PUBLISH of 150,000 user properties held a worker minutes): held
    here to paho's own, so that a paho that reads properties differently fails this."""
    full = _paho(*case)
    full.MessageExpiryInterval, full.PayloadFormatIndicator, full.ResponseTopic = 30, 1, "r/t"
    full.SubscriptionIdentifier, full.TopicAlias = 7, 3
    full.SubscriptionIdentifier = 200_000
    for props in (_paho(*case), full):
        packed = props.pack()
        ours, paho = _received(packed, received_properties), _received(packed, PAHO_UNPACK)
        assert ours.json() == paho.json() and str(ours) == str(paho)
        assert getattr(ours, "UserProperty", None) == getattr(paho, "UserProperty", None)


@pytest.mark.parametrize("packed", [
    b"\x05\x26\x00\x01a",                  # cut short
    b"\x07\x03\x00\x03a\x00b",             # U+0000 in a string
    b"\x06\x03\x00\x03\xff\xfe\x41",      # not UTF-8
    b"\x06\x03\x00\x03\xed\xa0\x80",      # a surrogate's bytes
    b"\x02\x7f\x00",                       # no such property
    b"\x04\x01\x01\x01\x01",               # a one-only property twice
    b"\x09",                                 # properties past the packet
])
def test_received_properties_refuse_what_mqtt_does_not_allow(packed):
    with pytest.raises(MalformedPacket):
        received_properties(Properties(PacketTypes.PUBLISH), packed)


def test_user_properties_past_the_cap_are_counted_not_kept():
    n = MAX_RECEIVED_USER_PROPERTIES + 10
    packed = PublishProperties(None, None, [("k", str(i)) for i in range(n)]).pack()
    props = _received(packed, received_properties)
    assert len(props.UserProperty) == MAX_RECEIVED_USER_PROPERTIES and props.dropped_user_properties == 10
    assert props.UserProperty[-1] == ("k", str(MAX_RECEIVED_USER_PROPERTIES - 1))


@pytest.mark.parametrize("correlation, ident", [
    (b"req-7", "req-7"),
    (b"caf\xc3\xa9", "caf\u00e9"),
    (b"\xff\x01", "sha256:"),            # a control character (U+0001) in its text
    (b"a\nb", "sha256:"), (b"a\x00b", "sha256:"),  # the broker drops a connection for either
    (b"\xff" * 30_000, "sha256:"),         # its text past MAX_ID
])
def test_a_messages_id_is_text_mqtt_carries_back(correlation, ident):
    """A result's `id` user property comes from the message's correlation data: held to
    MQTT's strings, or its digest stands for it (a line break in it had the broker drop
    the worker's connection at every resend of the result)."""
    msg = MQTTMessage(topic=b"t")
    msg.properties = Properties(PacketTypes.PUBLISH)
    msg.properties.CorrelationData = correlation
    got = message_id(msg)
    assert got.startswith(ident) if ident == "sha256:" else got == ident


@pytest.mark.parametrize("ident, back", [("m-1", "m-1"), ("a\x07b", "sha256:"), ("x" * 2000, "sha256:")])
def test_a_messages_own_id_goes_back_only_as_mqtt_text(ident, back):
    """Its `id` user property too: mosquitto drops a client that sends a control character
    (it dropped this test's own publisher), but another broker may pass one on, and the
    worker would send it back with every result; an id over 1 KiB goes as its digest."""
    msg = MQTTMessage(topic=b"t")
    msg.properties = Properties(PacketTypes.PUBLISH)
    msg.properties.UserProperty = [("id", ident)]
    got = message_id(msg)
    assert got == ident if back == ident else got == "sha256:" + hashlib.sha256(ident.encode()).hexdigest()[:16]


def test_a_workers_metrics_file_it_has_only_just_created_holds_nothing_yet(tmp_path):
    # empty until the worker sizes it: read as a file, it failed /healthz (and scrapes)
    # with a 500 while a worker started (a node retiring a slot met it)
    from wasinn.pipeline.metrics import MetricsServer
    (tmp_path / "gauge_all_4242.db").write_bytes(b"")
    server = MetricsServer("127.0.0.1", 0, str(tmp_path), lambda: [])
    try:
        assert server.health() == (200, {"status": "ok", "workers": []})
    finally:
        server.httpd.server_close()



def test_a_metric_name_two_workers_made_of_two_kinds_keeps_one_kind(tmp_path):
    """Each worker keeps a name to one kind, but one worker's operator may make `x` a
    counter and another's a histogram: merged as one family, a scrape had carried both
    kinds' samples under one TYPE line, which Prometheus refuses to parse."""
    import subprocess
    import sys
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client import generate_latest
    from wasinn.pipeline.metrics import MetricsServer
    for kind, use in (("Counter", "m.inc(2)"), ("Histogram", "m.observe(0.5)")):
        code = f"import prometheus_client as p; m = p.{kind}('x', 'doc', ['operator']).labels('op'); {use}"
        subprocess.run([sys.executable, "-c", code], env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, check=True)
    server = MetricsServer("127.0.0.1", 0, str(tmp_path), lambda: [])
    try:
        families = {f.name: f for f in text_string_to_metric_families(generate_latest(server.registry).decode())}
    finally:
        server.httpd.server_close()
    assert families["x"].type == "counter"
    assert [(s.name, s.value) for s in families["x"].samples] == [("x_total", 2.0)]

def test_a_killed_supervisors_metrics_directory_goes_at_the_next_start(tmp_path):
    # a supervisor killed with SIGKILL cannot remove its workers' directory: the suite's
    # own kills had left 21 in /tmp in a day
    import os
    import subprocess
    from wasinn.pipeline.metrics import remove_orphaned_directories
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead = tmp_path / f"wasinn-metrics-{ended.pid}-abc"
    (dead / "sub").mkdir(parents=True)
    (dead / "counter_1.db").write_bytes(b"x" * 64)
    live = tmp_path / f"wasinn-metrics-{os.getpid()}-def"
    live.mkdir()
    unnamed = tmp_path / "wasinn-metrics-xyz"  # not named for a process: not ours to judge
    unnamed.mkdir()
    assert remove_orphaned_directories(str(tmp_path)) == [str(dead)]
    assert not dead.exists() and live.is_dir() and unnamed.is_dir()

"""pipeline/connection.py's PublishProperties: the bytes paho's own Properties packs for
the same content type, correlation data and user properties, read back by paho alike.
And pipeline/worker.py's small pieces: presence messages, dead letters' JSON."""
from __future__ import annotations

import base64
import json

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wasinn.pipeline.connection import PublishProperties
from wasinn.pipeline.worker import envelope, in_base64, presence, presence_state

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


"""The `command-invoker` interface: MQTT 5 request/response (Azure IoT Operations'
RPC pattern) over a connected paho-mqtt client, or none (every invoker is refused with
`client-error`). `wasinn serve`'s workers serve it over their own broker connection.

A request is published to the request topic with a response topic and correlation data;
the response is the first message on the response topic carrying that correlation data,
within the request's timeout (at most the call deadline). Topic patterns take
`{commandName}`, `{invokerClientId}` and the tokens of the options' token map and of the
request (`{name}` or `{ex:name}`).

The operator chooses the topics and the user data, so they are held to what cannot hurt
the connection they share with the graph: topics and user data MQTT can carry (a broker
drops a client that sends anything else, mqtt_text.py), no wildcard in a topic (a
response topic is subscribed to: `#` would bring the whole broker's traffic), no topic a
`reserved` filter matches (the graph's source topics: a response topic there would take
the graph's input messages, a request topic there would feed the graph its own
requests), none of the host's own (`wasinn/...`, where workers announce their presence:
a request there, sent with a worker's own rights, would say another worker is lost and
have its session taken over) and none of the broker's (`$...`: `$share/G/TOPIC` as a
response topic is a shared subscription to TOPIC, a source among them), and at most
MAX_RESPONSE_TOPICS response topics subscribed per connection.
"""
from __future__ import annotations

import dataclasses
import re
import threading
import uuid

from ..mqtt_text import MAX_STRING_BYTES, filters_pattern, string_problem, topic_problem

_TOKEN = re.compile(r"\{(?:ex:)?([A-Za-z0-9_-]+)\}")
# The first topic level of the host's own topics (worker.py's presences): no command's
HOST_TOPICS = "wasinn"
# Response topics one connection subscribes to for its operators' commands: each is a
# subscription the broker keeps for the session. Operators use one or a few.
MAX_RESPONSE_TOPICS = 64


class RpcError(Exception):
    """The `rpc-error` case (its name) and what happened."""

    def __init__(self, case: str, detail: str = ""):
        super().__init__(f"{case}: {detail}" if detail else case)
        self.case = case


@dataclasses.dataclass
class Options:
    request_topic_pattern: str = ""
    response_topic_pattern: str = ""
    command_name: str = ""
    topic_namespace: str = ""
    topic_token_map: tuple[tuple[str, str], ...] = ()
    response_topic_prefix: str = ""
    response_topic_suffix: str = ""


@dataclasses.dataclass
class Request:
    payload: bytes = b""
    custom_user_data: tuple[tuple[str, str], ...] = ()
    topic_tokens: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0


@dataclasses.dataclass
class Response:
    payload: bytes
    custom_user_data: list[tuple[str, str]]


def _fill(which: str, pattern: str, tokens: dict[str, str]) -> str:
    """`pattern` with its tokens' values, refused as soon as it would pass the longest
    MQTT string: a topic is one, so no longer pattern or topic can be sent, and building
    it first had let a guest's 300 KB pattern of 100,000 tokens, each a 10 KB value, make
    a 1 GB topic (7.3 s under a 2 s deadline, every other thread held 3.1 s, +2.9 GB)
    before the length was looked at. Characters count as bytes here (at most as many);
    `_check_topic` counts the bytes of what is left."""
    if len(pattern) > MAX_STRING_BYTES:
        raise RpcError("configuration-invalid", f"the {which} topic pattern is {len(pattern)} characters long; "
                                                f"a topic holds at most {MAX_STRING_BYTES} bytes")
    parts, size, at = [], 0, 0
    for m in _TOKEN.finditer(pattern):
        value = tokens.get(m.group(1))
        if value is None:
            raise RpcError("configuration-invalid", f"topic token {m.group(0)} has no value")
        parts += [pattern[at:m.start()], value]
        size += m.start() - at + len(value)
        if size > MAX_STRING_BYTES:
            raise RpcError("configuration-invalid", f"the {which} topic would be over {MAX_STRING_BYTES} bytes "
                                                    f"once its tokens are filled in ({m.group(0)} and those before it)")
        at = m.end()
    parts.append(pattern[at:])
    return "".join(parts)


class CommandInvoker:
    """Invokes commands over `client` (a connected paho-mqtt 2 client speaking MQTT 5,
    its network loop running), or refuses every invoker without one. `reserved`: topic
    filters the client already serves (see the module's docstring)."""

    def __init__(self, client=None, client_id: str = "", reserved: tuple[str, ...] = ()):
        self.client = client
        self.client_id = client_id or f"wasinn-{uuid.uuid4().hex[:8]}"
        self.reserved, self._reserved = reserved, filters_pattern(reserved)
        self.served = client is not None  # whether commands are served at all (`available`)
        self._waiting: dict[bytes, tuple[threading.Event, list]] = {}
        self._subscribed: set[str] = set()
        self._lock = threading.Lock()
        self._too_large = None

    @classmethod
    def awaiting(cls, client_id: str) -> "CommandInvoker":
        """An invoker whose client comes later (`attach`), with the connection of the
        worker that serves it: commands are served; refused with client-error until then."""
        invoker = cls(client_id=client_id)
        invoker.served = True
        return invoker

    def attach(self, client, reserved: tuple[str, ...], too_large=None) -> None:
        """`too_large(topic, payload, properties)`: why the broker would not take a
        request (connection.Link.too_large), or None."""
        self.client, self.reserved, self._reserved = client, reserved, filters_pattern(reserved)
        self._too_large = too_large

    def session_lost(self) -> None:
        """The broker forgot the connection's session, and its subscriptions with it."""
        with self._lock:
            self._subscribed.clear()

    @property
    def available(self) -> bool:
        return self.served

    def check(self, options: Options) -> None:
        if self.client is None:
            raise RpcError("client-error", "this host has no MQTT connection for commands")
        if not options.request_topic_pattern or not options.command_name:
            raise RpcError("configuration-invalid", "a command needs a request topic pattern and a command name")

    def invoke(self, options: Options, request: Request, max_wait: float) -> Response:
        self.check(options)
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes
        tokens = {"commandName": options.command_name, "invokerClientId": self.client_id,
                  **dict(options.topic_token_map), **dict(request.topic_tokens)}
        topic = _fill("request", options.request_topic_pattern, tokens)
        if options.topic_namespace:
            topic = f"{options.topic_namespace}/{topic}"
        if options.response_topic_pattern:
            response_topic = _fill("response", options.response_topic_pattern, tokens)
        elif options.response_topic_prefix or options.response_topic_suffix:
            response_topic = "/".join(p for p in (options.response_topic_prefix, topic,
                                                  options.response_topic_suffix) if p)
        else:
            response_topic = f"clients/{self.client_id}/{topic}"
        self._check_topic("request", topic)
        self._check_topic("response", response_topic)
        for key, value in request.custom_user_data:
            for what, text in (("key", key), ("value", value)):
                if (problem := string_problem(text)) is not None:
                    raise RpcError("header-invalid", f"a custom user data {what} {text[:40]!r}: {problem}")
        correlation = uuid.uuid4().bytes
        done, box = threading.Event(), []
        with self._lock:
            self._waiting[correlation] = (done, box)
            if response_topic not in self._subscribed:
                if len(self._subscribed) >= MAX_RESPONSE_TOPICS:
                    self._waiting.pop(correlation)
                    raise RpcError("client-error", f"this connection has subscribed to {MAX_RESPONSE_TOPICS} "
                                   f"response topics for commands already; {response_topic!r} would be one more")
                self.client.message_callback_add(response_topic, self._on_response)
                # QoS 0: a worker's connection takes at most its receive maximum of QoS 1
                # messages unacknowledged, and the message whose operator waits for this
                # response is one of them: at QoS 1 the response could wait for that
                # message's acknowledgement, which waits for the response
                result, _ = self.client.subscribe(response_topic, qos=0)
                if result != 0:
                    self._waiting.pop(correlation)
                    raise RpcError("client-error", f"cannot subscribe to {response_topic} (code {result})")
                self._subscribed.add(response_topic)
        try:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
            props.CorrelationData = correlation
            if request.custom_user_data:
                props.UserProperty = list(request.custom_user_data)
            if self._too_large is not None and (why := self._too_large(topic, request.payload, props)):
                raise RpcError("payload-invalid", f"the request to {topic[:80]}: {why}")
            info = self.client.publish(topic, request.payload, qos=1, properties=props)
            if info.rc != 0:
                raise RpcError("client-error", f"publish to {topic} failed (code {info.rc})")
            if not done.wait(min(request.timeout, max_wait)):
                raise RpcError("timeout", f"no response on {response_topic} within {min(request.timeout, max_wait):g} s")
            return box[0]
        finally:
            with self._lock:
                self._waiting.pop(correlation, None)

    def _check_topic(self, which: str, topic: str) -> None:
        problem = topic_problem(topic)
        if problem is None and topic.partition("/")[0] == HOST_TOPICS:
            problem = f"topics under {HOST_TOPICS}/ are the host's own (where its workers announce their presence)"
        elif problem is None and topic.startswith("$"):
            problem = "topics starting with '$' are the broker's ($SYS, $share/GROUP/ subscriptions)"
        elif problem is None and self._reserved.fullmatch(topic):
            taken = next(f for f in self.reserved if filters_pattern([f]).fullmatch(topic))
            problem = f"the graph's source topic {taken!r} takes it"
        if problem is not None:
            raise RpcError("configuration-invalid", f"the {which} topic {topic[:80]!r}: {problem}")

    def _on_response(self, client, userdata, message) -> None:
        props = getattr(message, "properties", None)
        correlation = getattr(props, "CorrelationData", None)
        with self._lock:
            waiting = self._waiting.get(bytes(correlation)) if correlation else None
        if waiting is not None:
            user = [(str(k), str(v)) for k, v in getattr(props, "UserProperty", [])]
            waiting[1].append(Response(bytes(message.payload), user))
            waiting[0].set()

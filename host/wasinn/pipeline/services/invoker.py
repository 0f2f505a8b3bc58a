"""The `command-invoker` interface: MQTT 5 request/response (Azure IoT Operations'
RPC pattern) over a connected paho-mqtt client, or none (every invoker is refused with
`client-error`).

A request is published to the request topic with a response topic and correlation data;
the response is the first message on the response topic carrying that correlation data,
within the request's timeout (at most the call deadline). Topic patterns take
`{commandName}`, `{invokerClientId}` and the tokens of the options' token map and of the
request (`{name}` or `{ex:name}`).
"""
from __future__ import annotations

import dataclasses
import re
import threading
import uuid

_TOKEN = re.compile(r"\{(?:ex:)?([A-Za-z0-9_-]+)\}")


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


def _fill(pattern: str, tokens: dict[str, str]) -> str:
    def one(m):
        if m.group(1) not in tokens:
            raise RpcError("configuration-invalid", f"topic token {m.group(0)} has no value")
        return tokens[m.group(1)]
    return _TOKEN.sub(one, pattern)


class CommandInvoker:
    """Invokes commands over `client` (a connected paho-mqtt 2 client speaking MQTT 5,
    its network loop running), or refuses every invoker without one."""

    def __init__(self, client=None, client_id: str = ""):
        self.client = client
        self.client_id = client_id or f"wasinn-{uuid.uuid4().hex[:8]}"
        self._waiting: dict[bytes, tuple[threading.Event, list]] = {}
        self._subscribed: set[str] = set()
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.client is not None

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
        topic = _fill(options.request_topic_pattern, tokens)
        if options.topic_namespace:
            topic = f"{options.topic_namespace}/{topic}"
        if options.response_topic_pattern:
            response_topic = _fill(options.response_topic_pattern, tokens)
        elif options.response_topic_prefix or options.response_topic_suffix:
            response_topic = "/".join(p for p in (options.response_topic_prefix, topic,
                                                  options.response_topic_suffix) if p)
        else:
            response_topic = f"clients/{self.client_id}/{topic}"
        correlation = uuid.uuid4().bytes
        done, box = threading.Event(), []
        with self._lock:
            self._waiting[correlation] = (done, box)
            if response_topic not in self._subscribed:
                self.client.message_callback_add(response_topic, self._on_response)
                result, _ = self.client.subscribe(response_topic, qos=1)
                if result != 0:
                    raise RpcError("client-error", f"cannot subscribe to {response_topic} (code {result})")
                self._subscribed.add(response_topic)
        try:
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = response_topic
            props.CorrelationData = correlation
            if request.custom_user_data:
                props.UserProperty = list(request.custom_user_data)
            info = self.client.publish(topic, request.payload, qos=1, properties=props)
            if info.rc != 0:
                raise RpcError("client-error", f"publish to {topic} failed (code {info.rc})")
            if not done.wait(min(request.timeout, max_wait)):
                raise RpcError("timeout", f"no response on {response_topic} within {min(request.timeout, max_wait):g} s")
            return box[0]
        finally:
            with self._lock:
                self._waiting.pop(correlation, None)

    def _on_response(self, client, userdata, message) -> None:
        props = getattr(message, "properties", None)
        correlation = getattr(props, "CorrelationData", None)
        with self._lock:
            waiting = self._waiting.get(bytes(correlation)) if correlation else None
        if waiting is not None:
            user = [(str(k), str(v)) for k, v in getattr(props, "UserProperty", [])]
            waiting[1].append(Response(bytes(message.payload), user))
            waiting[0].set()

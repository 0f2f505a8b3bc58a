"""The test suite's data-flow operator (world wasinn:guest/operator-probe): every operator
kind, importing all six host services, driven by its messages.

map: the payload is a JSON command, the result a message whose payload is JSON:
  {"do": "echo"}                      the input message, its buffers handed back
  {"do": "count"}                     {"count": calls since init, "start": init's `start`}
  {"do": "state", "ops": [...]}       state-store calls, each ["get", key] | ["set", key,
                                      value, condition, ttl_ms|null, token|null] | ["del",
                                      key, token|null] | ["vdel", key, value, token|null];
                                      a token is [secs, nanos, counter, node]; results in order
  {"do": "flood-keys"|"flood-metrics"|"flood-logs", "n": N}
                                      N new keys / metric label sets / log lines; returns
                                      how many succeeded and the first error
  {"do": "metric", "name": .., "labels": [[k, v]], "value": ..}   one counter add
  {"do": "histogram", "name": .., "value": ..}
  {"do": "schema", "id": .., "version": ..}
  {"do": "message-schema"}            the message's schema: {"inline": [name, content]}, or
                                      {"reference": ref, "got": the schema-registry's answer for
                                      an aio-sr://NAMESPACE/NAME:VERSION ref}, or null
  {"do": "invoke", "topic": .., "payload": .., "timeout": secs, "response": .., "user": [[k, v]]}
                                      a command: request topic pattern, payload, and optionally
                                      its timeout (default 5), response topic pattern and custom
                                      user data (default [["k", "v"]])
  {"do": "hoard-builders", "n": N}    N live command-request builders
  {"do": "hoard-requests", "n": N, "kib": K}   N live command-request builders, each with
                                      a payload of K KiB of its own
  {"do": "hoard", "kib": N}           N KiB more kept until the instance goes (its memory grows)
  {"do": "trap"}                      an uncaught exception: the guest traps
  {"do": "sleep", "seconds": N}       time.sleep(N), then {"slept": N}
  {"do": "fail", "message": ..}       the operator's error
  a message of content type application/octet-stream is no command: its payload is read
  with buffer.read and the result's payload is {"n": its length, "sha256": its hex digest}.
filter: passes payloads equal to b"pass"; branch: true when the payload starts with "t";
accumulate: the staged payload and each message's, joined by "|"; delay: the timestamp
plus `delay` seconds (init's configuration, default 1).
"""
import hashlib
import json
import time

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import (command_invoker, hybrid_logical_clock, logger, metrics, rpc_types, schema_registry,
                               schema_types, state_store, state_store_types, types)


class _State:
    calls = 0
    start = 0
    hoard = []
    delay = 1


def _payload(data_model):
    if isinstance(data_model, types.DataModel_BufferOrBytes):
        value = data_model.value
    elif isinstance(data_model, types.DataModel_Message):
        value = data_model.value.payload
    else:
        value = data_model.value.frame
    return value.value.read() if isinstance(value, types.BufferOrBytes_Buffer) else value.value


def _init(configuration):
    _State.calls = 0
    for key, value in configuration.properties:
        if key == "start":
            _State.start = int(value)
        if key == "delay":
            _State.delay = int(value)
        if key == "fail-init":
            return False
    return True


def _string(value):
    return value.value if isinstance(value, types.BufferOrString_String) else value.value.read().decode()


def _message_schema(message):
    schema = message.value.schema if isinstance(message, types.DataModel_Message) else None
    if schema is None:
        return None
    if isinstance(schema, types.MessageSchema_Inline):
        return {"inline": [_string(schema.value.name), _string(schema.value.content)]}
    ref = _string(schema.value)
    path, _, version = ref.removeprefix("aio-sr://").rpartition(":")
    try:
        got = schema_registry.get(path, version, (1, 0)).schema_content
    except Err as e:
        got = {"error": _error_text(e)}
    return {"reference": ref, "got": got}


def _error_text(e):
    value = e.value
    return type(value).__name__ + (":" + value.value if isinstance(getattr(value, "value", None), str) else "")


def _token(t):
    if t is None:
        return None
    return hybrid_logical_clock.HybridLogicalClock(hybrid_logical_clock.Timespec(t[0], t[1]), t[2], t[3])


def _version(v):
    return None if v is None else [v.timestamp.secs, v.timestamp.nanos, v.counter, v.node_id]


def _state_op(op):
    kind, key = op[0], op[1].encode()
    try:
        if kind == "get":
            r = state_store.get(key, None)
            return {"value": None if r.response is None else r.response.decode(), "version": _version(r.version)}
        if kind == "set":
            value, condition, ttl, token = op[2], op[3], op[4], op[5]
            expires = None if ttl is None else state_store_types.Duration(ttl // 1000, (ttl % 1000) * 1_000_000)
            options = state_store_types.SetOptions(state_store_types.SetConditions[condition.upper().replace("-", "_")],
                                                   expires)
            r = state_store.set(key, value.encode(), None, _token(token), options)
            return {"set": r.response, "version": _version(r.version)}
        if kind == "del":
            r = state_store.del_(key, _token(op[2]), None)
        else:
            r = state_store.vdel(key, op[2].encode(), _token(op[3]), None)
        return {"deleted": r.response, "version": _version(r.version)}
    except Err as e:
        return {"error": _error_text(e)}


def _flood(kind, n):
    ok, first = 0, None
    for i in range(n):
        try:
            if kind == "flood-keys":
                state_store.set(b"flood-%d" % i, b"x", None, None,
                                state_store_types.SetOptions(state_store_types.SetConditions.UNCONDITIONAL, None))
            elif kind == "flood-metrics":
                metrics.add_to_counter("flood", metrics.CounterValue_U64(1), [metrics.Label("i", str(i))])
            else:
                logger.log(logger.Level.INFO, "flood", "line %d" % i)
            ok += 1
        except Err as e:
            first = first or _error_text(e)
    return {"ok": ok, "error": first}


def _command(cmd):
    do = cmd["do"]
    if do == "count":
        _State.calls += 1
        return {"count": _State.calls, "start": _State.start}
    if do == "state":
        return [_state_op(op) for op in cmd["ops"]]
    if do.startswith("flood-"):
        return _flood(do, cmd["n"])
    if do == "metric":
        try:
            metrics.add_to_counter(cmd["name"], metrics.CounterValue_U64(cmd["value"]),
                                   [metrics.Label(k, v) for k, v in cmd.get("labels", [])])
            return {"ok": True}
        except Err as e:
            return {"error": _error_text(e)}
    if do == "histogram":
        try:
            metrics.record_to_histogram(cmd["name"], metrics.HistogramValue_F64(cmd["value"]), None)
            return {"ok": True}
        except Err as e:
            return {"error": _error_text(e)}
    if do == "schema":
        try:
            s = schema_registry.get(cmd["id"], cmd["version"], (1, 0))
            return {"name": s.name, "version": s.version, "content": s.schema_content,
                    "format": type(s.format).__name__}
        except Err as e:
            return {"error": _error_text(e)}
    if do == "invoke":
        try:
            options = command_invoker.CommandInvokerOptionsBuilder().request_topic_pattern(cmd["topic"])
            if "response" in cmd:
                options = options.response_topic_pattern(cmd["response"])
            invoker = command_invoker.new_invoker(options.command_name("probe").build())
            user = [tuple(pair) for pair in cmd.get("user", [["k", "v"]])]
            request = (command_invoker.CommandRequestBuilder().payload(cmd["payload"].encode())
                       .custom_user_data(user).timeout(cmd.get("timeout", 5), 0).build())
            response = invoker.invoke(request)
            return {"payload": response.payload.decode(), "user": response.custom_user_data}
        except Err as e:
            return {"error": _error_text(e)}
    if do == "hoard-builders":  # command builders kept alive: their constructor has no error to return
        kept = [command_invoker.CommandRequestBuilder() for _ in range(cmd["n"])]
        return {"ok": len(kept)}
    if do == "hoard-requests":
        kept = [command_invoker.CommandRequestBuilder().payload(bytes(cmd["kib"] << 10)) for _ in range(cmd["n"])]
        return {"ok": len(kept)}
    if do == "hoard":
        _State.hoard.append(bytearray(cmd["kib"] << 10))
        return {"kib": sum(len(b) for b in _State.hoard) >> 10}
    if do == "trap":
        raise RuntimeError("the probe was told to trap")
    if do == "sleep":
        time.sleep(cmd["seconds"])
        return {"slept": cmd["seconds"]}
    if do == "fail":
        raise Err(types.Error(cmd["message"]))
    raise Err(types.Error("unknown command " + do))


def _is_octets(content_type) -> bool:
    return isinstance(content_type, types.BufferOrString_String) and content_type.value == "application/octet-stream"


class Map(exports.Map):
    def init(self, configuration):
        return _init(configuration)

    def process(self, message):
        if isinstance(message, types.DataModel_Message) and _is_octets(message.value.content_type):
            data = _payload(message)
            digest = {"n": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            message.value.payload = types.BufferOrBytes_Bytes(json.dumps(digest).encode())
            return message
        cmd = json.loads(_payload(message))
        if cmd["do"] == "echo":
            return message
        out = json.dumps(_message_schema(message) if cmd["do"] == "message-schema" else _command(cmd)).encode()
        if isinstance(message, types.DataModel_Message):
            message.value.payload = types.BufferOrBytes_Bytes(out)
            return message
        return types.DataModel_BufferOrBytes(types.BufferOrBytes_Bytes(out))


class Filter(exports.Filter):
    def init(self, configuration):
        return _init(configuration)

    def process(self, message):
        return _payload(message) == b"pass"


class Branch(exports.Branch):
    def init(self, configuration):
        return _init(configuration)

    def process(self, timestamp, message):
        return _payload(message).startswith(b"t")


class Accumulate(exports.Accumulate):
    def init(self, configuration):
        return _init(configuration)

    def process(self, staged, message):
        parts = [_payload(staged)] + [_payload(m) for m in message]
        return types.DataModel_BufferOrBytes(types.BufferOrBytes_Bytes(b"|".join(parts)))


class Delay(exports.Delay):
    def init(self, configuration):
        return _init(configuration)

    def process(self, data, timestamp):
        timestamp.timestamp.secs += _State.delay
        return timestamp

"""One Azure IoT Operations data-flow operator (`wasm-graph:processor@1.1.0`: map, filter,
branch, accumulate, delay) running in wasinn, with the host services it imports.

    services = Services.embedded(log=EventLog(), limits=Limits())
    op = Operator.open(host, "temperature.wasm", kind="map", name="to-celsius",
                       configuration={"unit": "C"}, services=services)
    op.init()                                        # init(module-configuration)
    out = op.map(Message(b'{"temperature": {"value": 68, "unit": "F"}}', topic="sensors"))
    op.close()

Messages are plain dataclasses; the host holds their payloads (and snapshot frames) as
`buffer` resources, as Azure's host does, which the operator reads with `buffer.read`;
a buffer lives as long as the call it was handed to. An operator's `process` error
raises `OperatorError` with the operator's message (`kind` "error"); a trap raises
`OperatorError` with `kind` "trap": the instance is torn down, and the next call runs
on a fresh instance that is first initialised again with the same configuration
(`reopen()` does that at once). Operators run under the Host's limits and isolation
policy like any guest; the services bound what a guest can make them hold (limits.py).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import time

from wasmtime.component import Component, ResourceHost, Variant

from .._bindings import (WASM_GRAPH_PROCESSOR_ACCUMULATE, WASM_GRAPH_PROCESSOR_BRANCH,
                         WASM_GRAPH_PROCESSOR_COMMAND_INVOKER, WASM_GRAPH_PROCESSOR_DELAY,
                         WASM_GRAPH_PROCESSOR_FILTER, WASM_GRAPH_PROCESSOR_MAP, WASM_GRAPH_PROCESSOR_SCHEMA_REGISTRY,
                         Resource)
from .. import collector
from ..abi.memory import OutOfBounds
from ..abi.rewrite import SPANS_RELEASE
from ..abi.values import Handle, converting, in_time, spans_for_bytes
from ..embedding.types import check_signature, items
from ..deadlines import PastDeadline
from ..errors import BadValue, GuestTrap, WasinnError
from ..nn import store_key
from ..runtime import Host
from .mqtt_text import MAX_STRING_BYTES, string_problem
from .services import Services
from .services.clock import Timestamp
from .services.imports import OperatorImports, active, free_resources, new_resource, resource, serve

__all__ = ["Operator", "OperatorError", "Message", "Snapshot", "Timestamp", "Services", "KINDS"]

# Each operation type, by the interface its operators export.
KINDS = {"map": WASM_GRAPH_PROCESSOR_MAP, "filter": WASM_GRAPH_PROCESSOR_FILTER,
         "branch": WASM_GRAPH_PROCESSOR_BRANCH, "accumulate": WASM_GRAPH_PROCESSOR_ACCUMULATE,
         "delay": WASM_GRAPH_PROCESSOR_DELAY}
# The text of an inline schema a result carries (JSON Schema or Avro: kilobytes); its
# name and reference, and a timestamp's node id, are at most an MQTT string.
MAX_SCHEMA_BYTES = 1 << 20


class OperatorError(WasinnError):
    """An operator failed on one message (`kind` "error": its `process` returned an
    error, whose text is `message`; "trap": it trapped; "contract": it returned what its
    kind may not) or at start ("init"). The engine sends the message to the dead-letter
    topic with it."""

    def __init__(self, operator: str, kind: str, message: str):
        super().__init__(f"operator {operator!r} failed ({kind}): {message}")
        self.operator, self.kind, self.message = operator, kind, message


@dataclasses.dataclass
class Message:
    """An MQTT message (WIT `message`). `timestamp` None: the host's clock stamps it.
    `schema`: a registry reference (str) or an inline schema (name, content)."""
    payload: bytes
    topic: str = ""
    content_type: str | None = None
    user_properties: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    timestamp: Timestamp | None = None
    schema: str | tuple[str, str] | None = None


@dataclasses.dataclass
class Snapshot:
    """A video frame (WIT `snapshot`): `frame` bytes of `format` (e.g. "rgb24"), width × height."""
    frame: bytes
    width: int
    height: int
    format: str = "rgb24"
    timestamp: Timestamp | None = None

    # what a sink publishes a frame as: its format under image/
    CONTENT_TYPE = "image/"

    @property
    def content_type(self) -> str:
        return self.CONTENT_TYPE + self.format


# What operators take and return (WIT `data-model`): bytes is the bare buffer-or-bytes case.
DataModel = Message | Snapshot | bytes


class Operator:
    """One operator node: an instance of a component exporting `kind`'s interface."""

    def __init__(self, host: Host, component: Component, kind: str, name: str,
                 configuration: dict[str, str], services: Services,
                 module_schemas: list[tuple[str, str, str]] = ()):
        if kind not in KINDS:
            raise WasinnError(f"unknown operation type {kind!r}; operators are: {', '.join(KINDS)}")
        kinds = self.kinds(component)
        if kind not in kinds:
            raise WasinnError(f"operator {name!r}: the module exports no {kind} operator "
                              f"({KINDS[kind]}); it exports: {', '.join(sorted(kinds)) or 'no operator'}")
        serve(host)
        self.host, self.component, self.kind, self.name = host, component, kind, name
        self.configuration = dict(configuration)
        self.module_schemas = list(module_schemas)
        self.services = services
        self.limits = services.limits or host.limits
        self.imports = OperatorImports(services, name, self.limits)
        self.imports.call_deadline = lambda: self.instance.deadline
        self.instance = host.instantiate(component)
        self._iface = KINDS[kind]
        # `process` lifted again with its result's bytes as spans (abi/rewrite.py), where
        # the data path added it: read with one copy each, and past wasmtime-py's cap
        self._spans = self._span_export(component, kind)
        # the guest's post-return of it, held until the host has copied the bytes; none
        # where the guest has none (abi/rewrite.py)
        self._release = (self._spans is not None
                         and SPANS_RELEASE in items(component.type, Host.engine_of(component), "exports"))
        self._initialised = False
        self._renew_at = 0  # the memory past which the instance is made afresh (_renew_if_growing)
        self._owns_services = False  # open() without services made them: close() closes them
        self._warn_unserved()

    @classmethod
    def open(cls, host: Host, component: Component | str | os.PathLike, *, kind: str, name: str | None = None,
             configuration: dict[str, str] | None = None, services: Services | None = None,
             module_schemas: list[tuple[str, str, str]] = ()) -> "Operator":
        """`component`: a compiled component or a `.wasm` path. `configuration`: the
        node's parameters (init's `properties`); `module_schemas`: (name, content type,
        content) triples for init's `module-schemas`. Without `services`, embedded ones of
        its own (a private state store), closed with the operator."""
        if name is None:
            name = kind if isinstance(component, Component) else pathlib.Path(component).stem
        if not isinstance(component, Component):
            component = host.load_component(component)
        op = cls(host, component, kind, name, configuration or {}, services or Services.embedded(), module_schemas)
        op._owns_services = services is None
        return op

    @staticmethod
    def _span_export(component: Component, kind: str) -> str | None:
        """`process` lifted again with its result's bytes as spans (abi/rewrite.py), where
        the data path added it and its result is the export's with spans for bytes."""
        engine = Host.engine_of(component)
        exports = items(component.type, engine, "exports")
        name = f"wasinn-spans-{kind}-process"
        if name not in exports:
            return None
        original, spans = items(exports[KINDS[kind]].ty, engine, "exports")["process"].ty, exports[name].ty
        check_signature(original, f"{KINDS[kind]}#process")  # walked below, before any call looks at it
        same_params = [t for _, t in original.params] == [t for _, t in spans.params]
        return name if same_params and spans_for_bytes(original.result, spans.result) else None

    @staticmethod
    def kinds(component: Component) -> set[str]:
        """The operator interfaces `component` exports (one module may export several)."""
        exports = items(component.type, Host.engine_of(component), "exports")
        return {kind for kind, iface in KINDS.items() if iface in exports}

    def _warn_unserved(self) -> None:
        imports = items(self.component.type, Host.engine_of(self.component), "imports")
        log = self.imports.log
        if WASM_GRAPH_PROCESSOR_SCHEMA_REGISTRY in imports and not self.services.schemas.available:
            log.warning("operator-service-unavailable", service="schema-registry",
                        detail="no schemas were given (--schemas FILE); its calls return not-available")
        if WASM_GRAPH_PROCESSOR_COMMAND_INVOKER in imports and not self.services.invoker.available:
            log.warning("operator-service-unavailable", service="command-invoker",
                        detail="no MQTT connection for commands; new-invoker returns client-error")

    # --- lifecycle ----------------------------------------------------------------------
    def init(self) -> None:
        """Calls the operator's `init` with its configuration; OperatorError ("init") when
        it returns false or traps."""
        config = {"properties": sorted(self.configuration.items()),
                  "module-schemas": [{"name": n, "content-type": t, "content": c} for n, t, c in self.module_schemas]}
        try:
            ok = self._call(f"{self._iface}#init", config)
        except OperatorError as e:
            raise OperatorError(self.name, "init", e.message) from None
        if ok is not True:
            raise OperatorError(self.name, "init", "init returned false")
        self._initialised = True
        after = self.instance.memory_bytes
        self._renew_at = after + (self.host.limits.memory - after) // 2 if self.host.limits.memory else 0

    def reopen(self) -> None:
        """A fresh instance, initialised with the same configuration."""
        self.instance.close()
        self.imports.forget_commands()
        self._initialised = False
        self.init()

    def close(self) -> None:
        self.instance.close()
        self.imports.forget_commands()
        if self._owns_services:
            self.services.close()

    def __enter__(self) -> "Operator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the operations -----------------------------------------------------------------
    def map(self, message: DataModel) -> DataModel:
        return self._process("map", [message], self._data_model)

    def filter(self, message: DataModel) -> bool:
        return self._process("filter", [message], self._bool)

    def branch(self, timestamp: Timestamp, message: DataModel) -> bool:
        """False: the first arm ("False" edges); True: the second ("True" edges)."""
        return self._process("branch", [_Hlc(timestamp), message], self._bool)

    def accumulate(self, staged: DataModel, messages: list[DataModel], started: float | None = None) -> DataModel:
        """`started`: when the caller began to read the window (time.monotonic()), which
        the call's deadline then covers too (a full window of 64 MB took 0.26 s to read)."""
        return self._process("accumulate", [staged, messages], self._data_model, started)

    def delay(self, message: DataModel, timestamp: Timestamp) -> Timestamp:
        return self._process("delay", [message, _Hlc(timestamp)], self._returned_hlc)

    # --- calls --------------------------------------------------------------------------
    def _process(self, kind: str, args: list, take, started: float | None = None):
        if kind != self.kind:
            raise WasinnError(f"operator {self.name!r} is a {self.kind} operator, not a {kind}")
        if self._renew_at and self._initialised:
            self._renew_if_growing()
        if not self._initialised:
            self.init()  # first use, or the instance trapped: a fresh one starts from init
            started = None  # init was a call of its own, under a deadline of its own
        # the call's deadline covers making its arguments: an accumulate fold of a full
        # window (10,000 messages, 65,536 user properties) took ~1 s to make them before
        started = time.monotonic() if started is None else started
        with collector.holding():
            return self._process_held(args, take, started)

    def _process_held(self, args: list, take, started: float):
        limits = self.host.limits
        buffers: list[int] = []
        try:
            try:
                with converting(limits.deadline_from(started)):
                    values = [self._give(a, buffers) for a in args]
            except PastDeadline:
                raise OperatorError(self.name, "trap", f"{limits.past_deadline()}: making its arguments took that "
                                    f"long, and the operator was not called") from None
            if self._spans is None:
                return self._result(self._call(f"{self._iface}#process", *values, started=started), take)
            self._bind_spans()
            result = self._call(self._spans, *values, started=started)
            try:
                out = self._result(result, take)
            except OutOfBounds as e:  # a span the guest's memory does not hold: as the canonical ABI, a trap
                self.instance.close()
                self._initialised = False
                raise OperatorError(self.name, "trap", f"guest trapped in {self._iface}#process: {e}; the "
                                    "instance was torn down and its resources freed, the next call gets a fresh one"
                                    ) from None
            except BaseException:
                if self._release:
                    self._call(SPANS_RELEASE)
                raise
            if self._release:
                self._call(SPANS_RELEASE)  # the guest's post-return, now that the bytes are copied
            return out
        finally:
            free_resources(buffers)

    def _renew_if_growing(self) -> None:
        """An operator whose memory grows with every message (componentize-py 0.25 keeps
        the bytes of each tensor it constructs: ~147 KB a frame for guest/snapshot) would
        trap at the memory limit with a message in hand, which would go to the dead
        letters. Once it has taken half the headroom it had after its init, it is made
        afresh instead, before the next message (init again, with its configuration):
        an operator that does not grow is never renewed."""
        used = self.instance.memory_bytes
        if used > self._renew_at:
            self.imports.log.info("operator-renewed", memory=used, limit=self.host.limits.memory,
                                  detail="its memory grew past half the headroom it had after init; a fresh "
                                         "instance, initialised again, takes the next message")
            self.instance.close()
            self._initialised = False

    def _result(self, result, take):
        if not isinstance(result, Variant) or result.tag not in ("ok", "err"):
            raise OperatorError(self.name, "contract", f"process returned {result!r}")
        if result.tag == "err":
            raise OperatorError(self.name, "error", str(getattr(result.payload, "message", result.payload)))
        return take(result.payload)

    def _call(self, name: str, *args, started: float | None = None):
        try:
            with active(self.imports):
                return self.instance.call(name, *args, started=started)
        except GuestTrap as e:
            self._initialised = False
            self.imports.forget_commands()  # their handles went with the instance
            text = str(e)
            if self._spans is not None:  # said as the operator's export, which these stand in for
                text = text.replace(self._spans, f"{self._iface}#process", 1).replace(
                    SPANS_RELEASE, f"the post-return of {self._iface}#process", 1)
            raise OperatorError(self.name, "trap", text) from None
        except BadValue:
            raise
        except WasinnError as e:  # a host function refused what has no error case: the instance is gone
            self._initialised = False
            self.imports.forget_commands()
            raise OperatorError(self.name, "trap", str(e)) from None

    # --- values to the guest --------------------------------------------------------------
    def _give(self, value, buffers: list[int]):
        """A Python value as Instance.call takes it (records as dicts by WIT field name,
        every variant tagged, host buffers as handles in the instance's store)."""
        if isinstance(value, _Hlc):
            return _hlc(value.timestamp or self.services.clock.now())
        if isinstance(value, list):
            given = []
            for v in value:
                in_time()
                given.append(self._give(v, buffers))
            return given
        if isinstance(value, (bytes, bytearray, memoryview)):
            return Variant("buffer-or-bytes", self._buffer(bytes(value), buffers, "the payload"))
        ts = value.timestamp or self.services.clock.now()
        if isinstance(value, Message):
            schema = None
            if isinstance(value.schema, str):
                schema = Variant("registry-reference", _string(value.schema))
            elif value.schema is not None:
                schema = Variant("inline", {"name": _string(value.schema[0]), "content": _string(value.schema[1])})
            return Variant("message", {
                "timestamp": _timestamp(ts),
                "topic": Variant("bytes", value.topic.encode()),
                "content-type": None if value.content_type is None else _string(value.content_type),
                "payload": self._buffer(bytes(value.payload), buffers, "the payload"),
                "properties": {"user-properties": [(_string(k), _string(v)) for k, v in value.user_properties]},
                "schema": schema,
            })
        if isinstance(value, Snapshot):
            return Variant("snapshot", {
                "timestamp": _timestamp(ts), "format": _string(value.format), "width": value.width,
                "height": value.height, "frame": self._buffer(bytes(value.frame), buffers, "the frame")})
        raise WasinnError(f"an operator takes a Message, a Snapshot or bytes, not {type(value).__name__}")

    def _buffer(self, data: bytes, buffers: list[int], what: str) -> Variant:
        if len(data) > self.limits.max_payload_bytes:
            raise OperatorError(self.name, "error", f"{what} is {len(data)} bytes; the limit is "
                                f"{self.limits.max_payload_bytes} (limit 'max-payload-bytes', --max-payload-bytes)")
        rep = new_resource(data)
        buffers.append(rep)
        return Variant("buffer", ResourceHost.own(rep, Resource.BUFFER).to_any(self.instance.store))

    # --- values from the guest ------------------------------------------------------------
    def _bind_spans(self) -> None:
        """Has the data path's adapter tell the host its memory (once per instance; its
        buffer.read does the same on first use), which the result spans point into."""
        try:
            self.host.memories.bound(store_key(self.instance.store))
        except OutOfBounds:
            self._call("wasinn-spans-bind")

    def _bool(self, value) -> bool:
        if not isinstance(value, bool):
            raise OperatorError(self.name, "contract", f"process returned {value!r}, not a bool")
        return value

    def _returned_hlc(self, value) -> Timestamp:
        """A delay's timestamp, which the message's window is keyed on: held to max-delay
        past the host's clock, since a window opens for every timestamp and is emitted
        only once the clock reaches it (a year ahead: its messages staged, acknowledged
        and never seen again)."""
        ts, node = value.timestamp, getattr(value, "node-id")
        self._within(node, "a timestamp's node id", MAX_STRING_BYTES)
        at = Timestamp(ts.secs, ts.nanos, value.counter, node)
        ahead = (at.wall - time.time_ns()) / 1e9
        if ahead > self.limits.max_delay:
            raise OperatorError(self.name, "contract", f"the delay moved the message's timestamp {ahead:.0f} s past "
                                f"the host's clock; the limit is {self.limits.max_delay:g} s "
                                "(limit 'max-delay', --max-delay)")
        return at

    def _data_model(self, value: Variant) -> DataModel:
        if value.tag == "buffer-or-bytes":
            return self._bytes(value.payload)
        if value.tag == "message":
            m = value.payload
            schema = getattr(m, "schema")
            if schema is not None:
                schema = (self._text(schema.payload, "a schema reference", MAX_STRING_BYTES)
                          if schema.tag == "registry-reference" else
                          (self._text(schema.payload.name, "a schema's name", MAX_STRING_BYTES),
                           self._text(schema.payload.content, "a schema", MAX_SCHEMA_BYTES)))
            ctype = getattr(m, "content-type")
            return Message(
                payload=self._bytes(m.payload),
                topic=self._bytes(m.topic, topic=True).decode("utf-8", "replace"),
                content_type=None if ctype is None else self._wire_text(ctype, "its content type"),
                user_properties=[(self._wire_text(k, "a user property's key"),
                                  self._wire_text(v, "a user property's value"))
                                 for k, v in getattr(m.properties, "user-properties")],
                timestamp=self._stamp(m.timestamp), schema=schema)
        s = value.payload
        return Snapshot(frame=self._bytes(s.frame), width=s.width, height=s.height,
                        # published as a content type under image/ (65,530 bytes of format made one
                        # MQTT cannot carry: paho raised, and the worker died on it at every redelivery)
                        format=self._wire_text(s.format, "its format", Snapshot.CONTENT_TYPE),
                        timestamp=self._stamp(s.timestamp))

    def _wire_text(self, value: Variant, what: str, published_under: str = "") -> str:
        """Text of a result that a sink publishes (a content type, a user property; a
        snapshot's format `published_under` a prefix): what MQTT cannot carry is the
        operator's fault, not the broker connection's (mqtt_text)."""
        text = self._text(value)
        problem = string_problem(published_under + text)
        if problem is not None:
            raise OperatorError(self.name, "contract", f"the operator returned a message MQTT cannot carry: "
                                f"{what} {text[:40]!r}{'...' if len(text) > 40 else ''}: {problem}")
        return text

    def _stamp(self, ts) -> Timestamp:
        return Timestamp(ts.timestamp.secs, ts.timestamp.nanos, ts.counter,
                         self._text(getattr(ts, "node-id"), "a timestamp's node id", MAX_STRING_BYTES))

    def _bytes(self, value: Variant, topic: bool = False) -> bytes:
        """A payload, frame or (`topic`) topic of a result: a topic MQTT can carry, as the
        next operator gets it as a list of bytes (a 64 MiB one had cost its lowering ~5 GB)."""
        if value.tag == "bytes":
            data = value.payload
        else:
            data = self._held(value.payload)
        n = data[1] if isinstance(data, tuple) else len(data)  # a span: (address, length)
        if topic and n > MAX_STRING_BYTES:
            raise OperatorError(self.name, "contract", f"the operator returned a message MQTT cannot carry: its "
                                f"topic is {n} bytes; an MQTT topic holds at most {MAX_STRING_BYTES}")
        if n > self.limits.max_payload_bytes:
            raise OperatorError(self.name, "contract", f"the operator returned {n} bytes; the limit is "
                                f"{self.limits.max_payload_bytes} (limit 'max-payload-bytes', --max-payload-bytes)")
        if isinstance(data, tuple):  # bounded first, then one copy (OutOfBounds: outside its memory)
            return bytes(self.host.memories.bound(store_key(self.instance.store)).view(data[0], n))
        return bytes(data)

    def _text(self, value: Variant, what: str = "", most: int | None = None) -> str:
        """Text of a result; with `most`, `_within` it."""
        text = value.payload if value.tag == "string" else self._held(value.payload)
        if most is not None:
            self._within(text, what, most)
        return text if isinstance(text, str) else text.decode("utf-8", "replace")

    def _within(self, text: str | bytes, what: str, most: int) -> None:
        """The operator's contract error naming `what` past `most` bytes (a 64 MiB node
        id or schema, its input's buffer handed back, had been kept, staged and handed on)."""
        short = isinstance(text, str) and len(text) <= most // 4  # 4 bytes a code point at most
        n = len(text) if short or isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
        if n > most:
            raise OperatorError(self.name, "contract", f"the operator returned {what} of {n} bytes; the limit is {most}")

    def _held(self, handle: Handle) -> bytes:
        """The bytes of a host buffer the operator handed back (its input's, passed on)."""
        rep = handle.resource.to_host(self.instance.store).rep
        data = resource(rep)
        free_resources([rep])  # the guest gave its handle up
        if not isinstance(data, bytes):
            raise OperatorError(self.name, "contract", "the operator returned a buffer of an earlier message")
        return data


@dataclasses.dataclass
class _Hlc:
    """An argument of WIT type hybrid-logical-clock (not a data-model)."""
    timestamp: Timestamp | None


def _string(text: str) -> Variant:
    return Variant("string", text)


def _timespec(ts: Timestamp) -> dict:
    return {"secs": ts.secs, "nanos": ts.nanos}


def _timestamp(ts: Timestamp) -> dict:
    return {"timestamp": _timespec(ts), "counter": ts.counter, "node-id": _string(ts.node_id)}


def _hlc(ts: Timestamp) -> dict:
    return {"timestamp": _timespec(ts), "counter": ts.counter, "node-id": ts.node_id}

"""The WIT imports of `wasm-graph:processor@1.1.0`, served for one operator node.

The linker is the Host's, shared by every instance; `serve(host)` wires one dispatcher
into it, which forwards each call to the `OperatorImports` of the operator whose export
is running (`active`, a context variable set around every call into an operator). Host
resources (`buffer`, the command invoker's builders) live in one process-wide table,
so that a guest's drop needs no operator.

Nothing here raises into wasmtime (that would trap the guest and poison its instance):
every failure becomes the interface's own error case, and unexpected ones are logged
with the operator's name. The exceptions are the two calls with no error to return —
a constructor past `MAX_LIVE_COMMANDS` — which trap with one line.
"""
from __future__ import annotations

import contextvars
import dataclasses
import functools
import itertools
import time
from typing import Callable

from wasmtime.component import Variant

from ..._bindings import (WASINN_ADAPTER_BUFFERS_BUFFERS, WASM_GRAPH_PROCESSOR_TYPES, CommandResponse, Err, HybridLogicalClock, Level, Schema,
                          StateStoreDelResponse, StateStoreGetResponse, StateStoreSetResponse, Timespec,
                          add_wasinn_adapter_buffers_to_linker, add_wasm_graph_processor_to_linker)
from ...abi.adapter import SpanBinding
from ...abi.memory import OutOfBounds
from ...deadlines import PAST_THE_TICK
from ...errors import WasinnError
from ...limits import Limits
from .clock import Timestamp
from .invoker import Options, Request, RpcError
from .logger import OperatorLog
from .metrics import MetricError, OperatorMetrics
from .state_store import HOST_KEYS, MAX_EXPIRY_SECONDS, StateError, StateUnavailable

# Live command-invoker resources (builders, options, requests, invokers) per operator:
# their constructors have no error case, so past this the guest traps. What they hold
# together (payloads, user data, topics) is bounded by max-payload-bytes the same way.
MAX_LIVE_COMMANDS = 256

_active: contextvars.ContextVar["OperatorImports | None"] = contextvars.ContextVar("wasinn_operator", default=None)
_table: dict[int, object] = {}
_reps = itertools.count(1)


def new_resource(value: object) -> int:
    rep = next(_reps)
    _table[rep] = value
    return rep


def free_resources(reps) -> None:
    for rep in reps:
        _table.pop(rep, None)


def resource(rep: int) -> object | None:
    return _table.get(rep)


class active:
    """`with active(imports):` around a call into an operator. (A class: contextlib's
    generator-based manager costs ~1 us more, twice per message.)"""
    __slots__ = ("imports", "token")

    def __init__(self, imports: "OperatorImports"):
        self.imports = imports

    def __enter__(self) -> None:
        self.token = _active.set(self.imports)

    def __exit__(self, *exc) -> None:
        _active.reset(self.token)


def to_hlc(ts: Timestamp | None) -> HybridLogicalClock | None:
    return None if ts is None else HybridLogicalClock(Timespec(ts.secs, ts.nanos), ts.counter, ts.node_id)


def from_hlc(hlc: HybridLogicalClock | None) -> Timestamp | None:
    return None if hlc is None else Timestamp(hlc.timestamp.secs, hlc.timestamp.nanos, hlc.counter, hlc.node_id)


def _guarded(internal):
    """Turns an unexpected failure of a service into the interface's error case
    (`internal(text)` builds it) after logging it; `Err` passes through."""
    def wrap(method):
        @functools.wraps(method)
        def call(self, store, *args):
            try:
                return method(self, store, *args)
            except Err:
                raise
            except Exception as e:  # a bug or an outage of the service: the guest gets an error, never a trap
                self.log.error("operator-service-failed", call=method.__name__, error=f"{type(e).__name__}: {e}")
                raise Err(internal(f"{type(e).__name__}: {e}")) from None
        return call
    return wrap


class OperatorImports:
    """The imports of one operator node (`name`), over `services`, within `limits`."""

    def __init__(self, services, name: str, limits: Limits):
        self.services = services
        self.name = name
        self.limits = limits
        self.log = services.log.bind(operator=name)
        self.guest_log, self.metrics = services.operator_bounds(name, lambda: (
            OperatorLog(services.log, name, limits.max_log_lines),
            OperatorMetrics(services.metrics, name, limits.max_metric_series)))
        # when the operator's call in progress must end (time.monotonic(), or None): set by
        # its Operator; a command waits for its response no longer
        self.call_deadline: Callable[[], float | None] = lambda: None
        # live command-invoker resources: rep -> the ids of the values it holds (`_held`),
        # which a builder's next step shares; those values, their bytes and users; their total
        self.commands: dict[int, tuple[int, ...]] = {}
        self._held: dict[int, list] = {}
        self.command_bytes = 0

    # --- types: buffer ---------------------------------------------------------------
    def buffer_read(self, store, rep: int) -> bytes:
        return _held_bytes(rep)

    def buffer_drop(self, store, rep: int) -> None:
        _table.pop(rep, None)

    # --- logger -----------------------------------------------------------------------
    def logger_log(self, store, level: Level, context: str, message: str) -> None:
        try:
            self.guest_log.write(level.value, context, message)
        except Exception as e:  # a closed stream must not trap the guest
            self.log.error("operator-service-failed", call="log", error=f"{type(e).__name__}: {e}")

    # --- metrics ----------------------------------------------------------------------
    @_guarded(lambda text: Variant("lock-error", text))
    def metrics_add_to_counter(self, store, name: str, value: Variant, labels) -> None:
        try:
            self.metrics.add(name, value.payload, _pairs(labels))
        except MetricError as e:
            raise Err(Variant("incompatible-type", str(e))) from None

    @_guarded(lambda text: Variant("lock-error", text))
    def metrics_record_to_histogram(self, store, name: str, value: Variant, labels) -> None:
        try:
            self.metrics.record(name, float(value.payload), _pairs(labels))
        except MetricError as e:
            raise Err(Variant("incompatible-type", str(e))) from None

    # --- state-store ------------------------------------------------------------------
    def _check_key(self, key: bytes, value: bytes | None = None) -> None:
        if not key or len(key) > self.limits.max_state_key_bytes:
            raise Err(Variant("request-error", f"a state-store key has 1 to {self.limits.max_state_key_bytes} "
                              f"bytes, got {len(key)} (limit 'max-state-key-bytes', --max-state-key-bytes)"))
        if key.startswith(HOST_KEYS):
            raise Err(Variant("request-error", f"state-store keys starting with {HOST_KEYS.decode()!r} are the "
                              "host's (its accumulate windows); an operator's keys may not"))
        if value is not None and len(value) > self.limits.max_tensor_bytes:
            raise Err(Variant("request-error", f"a state-store value is {len(value)} bytes; the limit is "
                              f"{self.limits.max_tensor_bytes} (limit 'max-tensor-bytes', --max-tensor-bytes)"))

    def _fencing(self, token: HybridLogicalClock | None) -> Timestamp | None:
        """A guest's fencing token, which a set keeps with the key as text that sorts as
        its time (state_store.encode_version): its node id no longer than a key (it had
        been unbounded, and outside max-state-bytes), its time within that text's 20 digits."""
        fencing, most = from_hlc(token), self.limits.max_state_key_bytes
        if fencing is not None and len(fencing.node_id.encode()) > most:
            raise Err(Variant("request-error", f"a fencing token's node id has at most {most} bytes, as a key "
                              f"(limit 'max-state-key-bytes', --max-state-key-bytes); got {len(fencing.node_id.encode())}"))
        if fencing is not None and fencing.wall >= 10**20:
            raise Err(Variant("request-error", f"a fencing token's time ({fencing.secs} s) is past the year 5138"))
        return fencing

    def _store(self, call):
        try:
            return call()
        except StateError as e:
            raise Err(Variant("request-error", str(e))) from None
        except StateUnavailable as e:
            self.log.warning("state-store-unavailable", error=str(e))
            raise Err(Variant("timeout")) from None

    @_guarded(lambda text: Variant("internal"))
    def state_store_get(self, store, key: bytes, timeout) -> StateStoreGetResponse:
        self._check_key(key)
        value, version = self._store(lambda: self.services.state_store.get(key))
        return StateStoreGetResponse(value, to_hlc(version))

    @_guarded(lambda text: Variant("internal"))
    def state_store_set(self, store, key: bytes, value: bytes, timeout, fencing_token, options) -> StateStoreSetResponse:
        self._check_key(key, value)
        expires = None if options.expires is None else options.expires.seconds + options.expires.nanos / 1e9
        if expires is not None and expires > MAX_EXPIRY_SECONDS:
            raise Err(Variant("request-error", f"a state-store key lives at most {MAX_EXPIRY_SECONDS} s (100 "
                              f"years); this one was to live {options.expires.seconds} s"))
        ok, version = self._store(lambda: self.services.state_store.set(
            self.name, key, value, condition=options.conditions.value, expires=expires,
            fencing=self._fencing(fencing_token), max_keys=self.limits.max_state_keys,
            max_bytes=self.limits.max_state_bytes))
        return StateStoreSetResponse(ok, to_hlc(version))

    @_guarded(lambda text: Variant("internal"))
    def state_store_del(self, store, key: bytes, fencing_token, timeout) -> StateStoreDelResponse:
        self._check_key(key)
        count, version = self._store(lambda: self.services.state_store.delete(
            key, fencing=self._fencing(fencing_token)))
        return StateStoreDelResponse(count, to_hlc(version))

    @_guarded(lambda text: Variant("internal"))
    def state_store_vdel(self, store, key: bytes, value: bytes, fencing_token, timeout) -> StateStoreDelResponse:
        self._check_key(key, value)
        count, version = self._store(lambda: self.services.state_store.delete(
            key, value=value, fencing=self._fencing(fencing_token)))
        return StateStoreDelResponse(count, to_hlc(version))

    # --- schema-registry --------------------------------------------------------------
    @_guarded(lambda text: Variant("internal", text))
    def schema_registry_get(self, store, schema_id: str, version: str, timeout) -> Schema:
        registry = self.services.schemas
        if not registry.available:
            raise Err(Variant("not-available"))
        found = registry.get(schema_id, version)
        if found is None:
            raise Err(Variant("not-found"))
        return Schema(description=found.description, display_name=found.display_name,
                      format=Variant(found.format), hash=found.hash, name=found.name, namespace=found.namespace,
                      schema_content=found.content, schema_type=Variant("message-schema"),
                      tags=list(found.tags), version=found.version)

    # --- command-invoker --------------------------------------------------------------
    def _command(self, value: Request | Options) -> int:
        if len(self.commands) >= MAX_LIVE_COMMANDS:
            raise WasinnError(f"operator {self.name!r} holds {MAX_LIVE_COMMANDS} live command-invoker "
                              "resources; drop some before making more")
        held = [v for f in dataclasses.fields(value) if isinstance(v := getattr(value, f.name), (bytes, str, tuple))]
        new = sum(_nbytes(v) for v in {id(v): v for v in held if id(v) not in self._held}.values())
        if self.command_bytes + new > self.limits.max_payload_bytes:
            raise WasinnError(f"operator {self.name!r} holds {self.command_bytes} bytes in live command-invoker "
                              f"resources (payloads, user data, topics); this one would add {new}, past "
                              f"{self.limits.max_payload_bytes} (limit 'max-payload-bytes', --max-payload-bytes); "
                              "drop some before making more")
        rep = new_resource(value)
        for v in held:
            self._held.setdefault(id(v), [v, _nbytes(v), 0])[2] += 1
        self.command_bytes += new
        self.commands[rep] = tuple(id(v) for v in held)
        return rep

    def forget_command(self, rep: int) -> object | None:
        """A command-invoker resource out of the table and its values out of the account."""
        for key in self.commands.pop(rep, ()):
            entry = self._held[key]
            entry[2] -= 1
            if not entry[2]:
                del self._held[key]
                self.command_bytes -= entry[1]
        return _table.pop(rep, None)

    def forget_commands(self) -> None:
        """Every command-invoker resource: the instance that held them is gone."""
        for rep in list(self.commands):
            self.forget_command(rep)

    def _builder(self, rep: int, kind, **changes) -> int:
        current = _table.get(rep)
        if not isinstance(current, kind):
            raise Err(Variant("state-invalid"))
        return self._command(dataclasses.replace(current, **changes))

    def command_request_builder_new(self, store) -> int:
        return self._command(Request())

    def command_request_builder_payload(self, store, rep: int, payload: bytes) -> int:
        if len(payload) > self.limits.max_payload_bytes:
            raise Err(Variant("payload-invalid"))
        return self._builder(rep, Request, payload=payload)

    def command_request_builder_custom_user_data(self, store, rep: int, data) -> int:
        return self._builder(rep, Request, custom_user_data=tuple(data))

    def command_request_builder_topic_tokens(self, store, rep: int, tokens) -> int:
        return self._builder(rep, Request, topic_tokens=tuple(tokens))

    def command_request_builder_timeout(self, store, rep: int, secs: int, nanos: int) -> int:
        return self._builder(rep, Request, timeout=secs + nanos / 1e9)

    def command_request_builder_build(self, store, rep: int) -> int:
        return self._builder(rep, Request)

    def command_invoker_options_builder_new(self, store) -> int:
        return self._command(Options())

    def command_invoker_options_builder_request_topic_pattern(self, store, rep: int, value: str) -> int:
        return self._builder(rep, Options, request_topic_pattern=value)

    def command_invoker_options_builder_response_topic_pattern(self, store, rep: int, value: str) -> int:
        return self._builder(rep, Options, response_topic_pattern=value)

    def command_invoker_options_builder_command_name(self, store, rep: int, value: str) -> int:
        return self._builder(rep, Options, command_name=value)

    def command_invoker_options_builder_topic_namespace(self, store, rep: int, value: str) -> int:
        return self._builder(rep, Options, topic_namespace=value)

    def command_invoker_options_builder_topic_token_map(self, store, rep: int, value) -> int:
        return self._builder(rep, Options, topic_token_map=tuple(value))

    def command_invoker_options_builder_response_topic_prefix(self, store, rep: int, value: str) -> int:
        return self._builder(rep, Options, response_topic_prefix=value)

    def command_invoker_options_builder_response_topic_suffix(self, store, rep: int, value: str) -> int:
        return self._builder(rep, Options, response_topic_suffix=value)

    def command_invoker_options_builder_build(self, store, rep: int) -> int:
        return self._builder(rep, Options)

    @_guarded(lambda text: Variant("internal-logic-error"))
    def command_invoker_new_invoker(self, store, options_rep: int) -> int:
        options = self.forget_command(options_rep)  # `own`: the guest handed it over
        if not isinstance(options, Options):
            raise Err(Variant("state-invalid"))
        try:
            self.services.invoker.check(options)
        except RpcError as e:
            raise Err(Variant(e.case)) from None
        return self._command(options)

    @_guarded(lambda text: Variant("internal-logic-error"))
    def command_invoker_invoke(self, store, rep: int, request_rep: int) -> CommandResponse:
        options, request = _table.get(rep), self.forget_command(request_rep)
        if not isinstance(options, Options) or not isinstance(request, Request):
            raise Err(Variant("state-invalid"))
        try:
            deadline = self.call_deadline()
            response = self.services.invoker.invoke(options, request, max_wait=60.0 if deadline is None else
                                                    max(0.0, deadline + PAST_THE_TICK - time.monotonic()))
        except RpcError as e:
            self.log.warning("operator-command-failed", error=str(e))
            raise Err(Variant(e.case)) from None
        if len(response.payload) > self.limits.max_payload_bytes:  # the responder is anyone on the broker
            self.log.warning("operator-command-failed", error=f"payload-invalid: the response is "
                             f"{len(response.payload)} bytes; the limit is {self.limits.max_payload_bytes} "
                             "(limit 'max-payload-bytes', --max-payload-bytes)")
            raise Err(Variant("payload-invalid"))
        return CommandResponse(response.payload, response.custom_user_data, None)


def _nbytes(value: bytes | str | tuple) -> int:
    """What a command resource's value holds: bytes, text, or (key, value) pairs of text."""
    if isinstance(value, tuple):
        return sum(len(k) + len(v) for k, v in value)
    return len(value)


def _pairs(labels) -> list[tuple[str, str]] | None:
    return None if labels is None else [(label.key, label.value) for label in labels]


class _Dispatch:
    """What the linker calls: the active operator's imports; drops need none."""

    def __getattr__(self, name: str):
        imports = _active.get()
        if imports is None:  # an operator export is the only way in; this is a wasinn bug
            raise WasinnError(f"a data-flow operator import ({name}) was called outside an operator call")
        return getattr(imports, name)

    def _drop(self, store, rep: int) -> None:
        imports = _active.get()
        if imports is not None:
            imports.forget_command(rep)
        else:
            _table.pop(rep, None)

    buffer_drop = command_request_drop = command_request_builder_drop = command_invoker_options_drop = \
        command_invoker_options_builder_drop = command_invoker_drop = _drop


_DISPATCH = _Dispatch()


def _held_bytes(rep: int) -> bytes:
    data = _table.get(rep)
    if isinstance(data, bytes):
        return data
    imports = _active.get()
    if imports is not None:
        imports.log.warning("operator-stale-buffer", detail="read of a buffer whose message is done; returned no bytes")
    return b""


class BufferSpans(SpanBinding):
    """`[method]buffer.read` at memory speed (wasinn:adapter-buffers, abi/adapter.wat's
    buffers block): the adapter in the guest asks the length, allocates with the guest's
    realloc and has the bytes written at that span with one copy. The bytes were bounded
    by max-payload-bytes when the host made the buffer; a span outside the guest's
    memory, or a length other than the buffer's, traps the guest with one line, as the
    canonical ABI traps on a bad realloc result."""

    def buffer_len(self, store, rep: int) -> int:
        return len(_held_bytes(rep))

    def read_buffer(self, store, rep: int, dest: int, n: int) -> None:
        data = _held_bytes(rep)
        if n != len(data):
            raise OutOfBounds(f"buffer.read of {n} bytes for a buffer of {len(data)}")
        self._memory(store).write(dest, data)


def serve(host) -> None:
    """Serves these imports to every instance of `host` (once per host), and the data
    path's half of `buffer.read` (components that load with the adapter call it)."""
    host.serve(WASM_GRAPH_PROCESSOR_TYPES, lambda root: add_wasm_graph_processor_to_linker(root, _DISPATCH))
    host.serve(WASINN_ADAPTER_BUFFERS_BUFFERS,
               lambda root: add_wasinn_adapter_buffers_to_linker(root, BufferSpans(host.memories)))

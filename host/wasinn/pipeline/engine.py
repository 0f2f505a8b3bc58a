"""The engine a worker runs: what answers each message taken from the source topics.

A worker (worker.py) owns the MQTT session, the order of acknowledgements and the
dead-letter records; it asks its `Runner`:

    runner.topics                       the source topics it subscribes to
    runner.prepare(msg)                 no side effects; on the decoder thread if
                                        runner.prepares_ahead (decoding images), else inline
    runner.answer(id, msg, prepared, prepare_seconds, worker) -> (publications, seconds)
    runner.due()                        publications held back until now (closed windows), a window's at a time
    runner.warm_up(log); runner.close()

Two kinds of graph run on it:

- a wasinn pipeline file (`StagesRunner`): its stages (graph.py) as one operator whose
  tensors cross stages as handles, answered with the JSON result envelope as ever;
- an Azure IoT Operations data-flow graph (`DataflowRunner`): every operation node its
  own operator instance (operator.py), initialised once with its node's properties,
  with Azure's semantics: map replaces the message, filter drops it, branch routes it by
  arm, delay moves the timestamp windows are keyed on, accumulate stages messages until
  their window closes and folds them, concatenate merges streams, the sink publishes the
  payload (or a snapshot's frame) with its content type and user properties.

An operator whose `process` fails sends the message to the dead-letter topic; one that
traps is closed, opened again and initialised with its configuration, so the next
message runs on a fresh instance.
"""
from __future__ import annotations

import dataclasses
import io
import json
import pathlib
import time
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from ..errors import GuestTrap, WasinnError
from .graph import GraphRunner, StageFailure
from .jsonlog import EventLog

# How often the open windows are looked at (a read of the state store each time).
_DUE_EVERY_SECONDS = 0.05


@dataclasses.dataclass(eq=False)
class Publication:
    """One message for the broker. `body`: a JSON envelope the worker serialises (its
    timing completed); else `payload` is sent as it is."""
    topic: str
    payload: bytes = b""
    body: dict | None = None
    content_type: str | None = "application/json"
    user_properties: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    error: dict | None = None            # a dead letter: stage, kind, message
    id: str | None = None                # the user property `id` (the source message's)
    correlation: bytes | None = None
    on_published: Callable[[], None] | None = None  # for `due()`'s: runs on the network thread


class Runner(Protocol):
    topics: list[str]
    names: list[str]
    prepares_ahead: bool

    def prepare(self, msg) -> object: ...

    def answer(self, ident: str, msg, prepared, prepare_seconds: float, worker: str
               ) -> tuple[list[Publication], dict[str, float]]: ...

    def due(self) -> Iterable[list[Publication]]: ...

    def warm_up(self, log: EventLog) -> None: ...

    def close(self) -> None: ...


def open_runner(path: pathlib.Path, host, log: EventLog, owner: str, invoker=None):
    """(what is served, its runner): a pipeline file, or a data-flow graph the supervisor
    resolved (`Dataflow.to_json`, a .json file). `owner`: the worker's client id;
    `invoker`: the command invoker a graph's operators use (services.CommandInvoker)."""
    if path.suffix == ".json":
        from .graphdef import Dataflow
        try:
            flow = Dataflow.from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise WasinnError(f"cannot read the resolved graph {path}: {e}") from None
        return flow, DataflowRunner(flow, host, log, owner=owner, invoker=invoker)
    from .schema import load_pipeline
    pipeline = load_pipeline(path)
    return pipeline, StagesRunner(pipeline, GraphRunner(pipeline, host))


# --- wasinn pipelines ------------------------------------------------------------------
# Each scan of a JPEG is one more pass over all its pixels (a 259 KB JPEG of 36 Mpx and
# 2,000 scans held a worker 27 s): past this many it is refused before it is decoded.
# (A scan's marker, 0xFF 0xDA, cannot occur inside the entropy-coded data, where every
# 0xFF is followed by 0x00 or a restart marker.)
MAX_JPEG_SCANS = 64
# What a source decodes: the formats cameras and people send, not all of Pillow's 40-odd
# decoders (PSD, JPEG 2000, AVIF, FITS, EPS, which hands the bytes to Ghostscript where
# it is installed, ...): each is native code run on network input.
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")


def decode_image(payload: bytes, max_pixels: int, source: str) -> np.ndarray:
    """PNG/JPEG/... bytes to uint8 RGB [H, W, 3]; the size is checked from the header,
    before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError
    if payload[:2] == b"\xff\xd8" and (scans := payload.count(b"\xff\xda")) > MAX_JPEG_SCANS:
        raise StageFailure(source, "invalid-input", f"a JPEG of {scans} scans; the source takes at most "
                                                    f"{MAX_JPEG_SCANS} (a progressive JPEG has about 10)")
    try:
        with Image.open(io.BytesIO(payload), formats=IMAGE_FORMATS) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise StageFailure(source, "invalid-input", f"the image is {w}x{h} ({w * h} pixels); the source "
                                                            f"takes at most {max_pixels} (maxPixels)")
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except UnidentifiedImageError:  # whose message names the BytesIO object, not the payload
        raise StageFailure(source, "invalid-input", f"cannot decode the payload ({len(payload)} bytes) as an image: "
                           "cannot identify image file: not a PNG, JPEG, GIF, BMP, TIFF or WebP image (the formats "
                           f"a source decodes; {f'first bytes 0x{payload[:8].hex()}' if payload else 'it is empty'})"
                           ) from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise StageFailure(source, "invalid-input",
                           f"cannot decode the payload ({len(payload)} bytes) as an image: {e}") from None


class StagesRunner:
    """A wasinn pipeline: images in, its stages' JSON result in an envelope out."""
    prepares_ahead = True  # Pillow decodes with the GIL released, beside the stages

    def __init__(self, pipeline, runner: GraphRunner):
        self.pipeline, self.runner = pipeline, runner
        self.topics = [pipeline.source.topic]
        self.names = list(runner.stages)

    def prepare(self, msg) -> np.ndarray:
        source = self.pipeline.source
        return decode_image(msg.payload, source.max_pixels, source.name)

    def answer(self, ident, msg, image, prepare_seconds, worker):
        outcome = self.runner.run(image)
        seconds = {self.pipeline.source.name: prepare_seconds, **outcome.seconds}
        body = {"id": ident, "result": outcome.value,
                "timing_ms": {k: round(v * 1000, 3) for k, v in seconds.items()}, "worker": worker}
        return [Publication(self.pipeline.sink.topic, body=body)], seconds

    def due(self) -> Iterable[list[Publication]]:
        return ()

    def warm_up(self, log: EventLog) -> None:
        """Pillow's first decode (plugin loading) and each stage's first run are several
        times slower than the next ones: take them now, not on the first message."""
        from PIL import Image
        png = io.BytesIO()
        Image.new("RGB", (224, 224), (127, 127, 127)).save(png, "PNG")
        source = self.pipeline.source
        try:
            self.runner.run(decode_image(png.getvalue(), source.max_pixels, source.name))
        except StageFailure as e:  # a pipeline that wants other images: it still warmed up what ran
            log.debug("warm-up", message=str(e))

    def close(self) -> None:
        self.runner.close()


# --- Azure data-flow graphs --------------------------------------------------------------
def check_kinds(flow, components: dict) -> None:
    """Every operation's module exports the operator interface its operationType names."""
    from .operator import Operator
    g = flow.graph
    for n in g.nodes.values():
        if n.module is None:
            continue
        kinds = Operator.kinds(components[n.module])
        if n.kind not in kinds:
            raise WasinnError(f"{g.path}:{n.line}: operation {n.name!r} is a {n.kind}, but its module {n.module} "
                              f"exports {', '.join(sorted(kinds)) or 'no operator interface'}")


def state_store(flow, cache_dir: pathlib.Path | None):
    """The state store a graph's workers share: Redis (`--state-store`, across hosts), else
    an embedded store in the cache directory that this host's workers open together."""
    from .services import EmbeddedStore, RedisStore
    if flow.state_store:
        return RedisStore(flow.state_store)
    if cache_dir is None:
        return EmbeddedStore()
    path = cache_dir / "serve" / f"{flow.mqtt.group}.state.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    return EmbeddedStore(path)


class _Node:
    """One operation node's operator instance; one that trapped is closed and a fresh one
    opened (and initialised with the node's configuration) for the next message."""

    def __init__(self, runner: "DataflowRunner", name: str, kind: str, component, configuration: dict[str, str]):
        self.runner, self.name, self.kind = runner, name, kind
        self.component, self.configuration = component, configuration
        self.op = None

    def open(self) -> None:
        from .operator import Operator
        op = Operator.open(self.runner.host, self.component, kind=self.kind, name=self.name,
                           configuration=self.configuration, services=self.runner.services,
                           module_schemas=list(self.runner.flow.module_schemas))
        try:
            op.init()
        except BaseException:
            op.close()
            raise
        self.op = op

    def call(self, method: str, *args, **kwargs):
        from .operator import OperatorError
        try:
            if self.op is None:
                self.open()
                kwargs.pop("started", None)  # opening ran init, a call under a deadline of its own
            return getattr(self.op, method)(*args, **kwargs)
        except OperatorError as e:
            if e.kind in ("trap", "init"):
                self.close()
            raise StageFailure(self.name, "trap" if e.kind == "trap" else f"operator-{e.kind}", e.message) from None
        except GuestTrap as e:
            self.close()
            raise StageFailure(self.name, "trap", str(e)) from None

    def close(self) -> None:
        if self.op is not None:
            op, self.op = self.op, None
            op.close()


class DataflowRunner:
    """An Azure data-flow graph (graphdef.Dataflow) on the operators of its modules."""
    prepares_ahead = False  # its messages go to the operators as they came

    def __init__(self, flow, host, log: EventLog, *, services=None, owner: str = "wasinn", invoker=None):
        import collections

        from .operator import Services
        from .services.state_store import HOST_KEYS
        from .windows import Windows
        self.flow, self.host, self.log = flow, host, log
        if services is None:
            from .services import CommandInvoker, SchemaRegistry
            schemas = SchemaRegistry.from_file(flow.schemas) if flow.schemas else SchemaRegistry()
            services = Services(state_store=state_store(flow, host.cache_dir), log=log, limits=host.limits,
                                schemas=schemas, invoker=invoker or CommandInvoker())
        self.services = services
        limits = services.limits or host.limits
        self.clock = services.clock
        self.windows = Windows(services.state_store, f"{HOST_KEYS.decode()}{flow.mqtt.group}", owner, log=log,
                               max_open=limits.max_open_windows, max_messages=limits.max_window_messages,
                               max_bytes=limits.max_window_bytes)
        self._emitted = collections.deque()  # (node, at, upto): published windows, from the network thread
        self._store_away = False  # the last look at the windows found the state store unavailable
        self._next_due = 0.0
        self.topics = list(flow.sources)
        g = flow.graph
        self.source = next(n for n in g.nodes.values() if n.kind == "source").name
        # only accumulate nodes stage windows: without one there is nothing to look for in the store
        self._windowed = any(n.kind == "accumulate" for n in g.nodes.values())
        self.names = list(g.nodes)
        components = {ref: host.load_component(path) for ref, path in flow.components.items()}
        check_kinds(flow, components)
        self.nodes: dict[str, _Node] = {}
        for n in g.nodes.values():
            if n.module is not None:
                self.nodes[n.name] = _Node(self, n.name, n.kind, components[n.module],
                                           dict(flow.properties.get(n.name, ())))
        for node in self.nodes.values():  # init once, at start: a refused configuration stops the start
            try:
                node.open()
            except (WasinnError, GuestTrap) as e:
                raise WasinnError(f"{g.path}:{g.nodes[node.name].line}: operation {node.name!r}: {e}") from None
        self._outputs = {name: flow.outputs_of(name) for name in g.nodes}

    # what the worker calls
    def prepare(self, msg):
        return None

    def answer(self, ident, msg, prepared, prepare_seconds, worker):
        from .operator import Message
        ts = self.clock.now()
        props = msg.properties
        message = Message(payload=msg.payload, topic=msg.topic, content_type=getattr(props, "ContentType", None),
                          user_properties=[(k, v) for k, v in (getattr(props, "UserProperty", None) or [])],
                          timestamp=ts, schema=self.flow.input_schema)
        seconds: dict[str, float] = {}
        out: list[Publication] = []
        self._flow(self.source, message, ts, out, seconds)
        return out, seconds

    def due(self) -> Iterator[list[Publication]]:
        """Folds the windows whose time has come (and whose emit lease this worker took),
        one at a time: each window's publications are handed over before the next window
        is read and folded (the worker publishes them first), so a worker holds one
        window's result, not those of every window due (64 windows due together, each
        folded into 16 MiB, had held 2 GB)."""
        if not self._windowed or time.monotonic() < self._next_due:
            return  # (before anything else: asked before every message)
        from .windows import WindowError, WindowUnavailable
        self._next_due = time.monotonic() + _DUE_EVERY_SECONDS
        try:
            while self._emitted:
                self.windows.emitted(*self._emitted[0])
                self._emitted.popleft()
            windows = self.windows.due(self.clock.now())  # read one at a time
            while True:
                started = time.monotonic()  # the fold's deadline covers reading its window
                window = next(windows, None)
                if window is None:
                    break
                yield self._fold(*window, started=started)
        except WindowUnavailable as e:  # the windows wait for the store (and their leases): said once
            if not self._store_away:
                self.log.warning("windows", message=f"{e}; the windows that are due wait for it")
            self._store_away = True
            return
        except WindowError as e:
            self.log.warning("windows", message=str(e))
            return
        self._store_away = False

    def _fold(self, node: str, at, messages: list, window_id: str, upto: int,
              started: float | None = None) -> list[Publication]:
        """The publications of one window's fold (its result, or its dead letter);
        `started`: when reading the window began."""
        from .operator import Message
        first = next((m for m in messages if isinstance(m, Message)), None)
        staged = Message(b"", topic=first.topic if first else "", timestamp=at)
        pubs: list[Publication] = []
        try:
            result = self.nodes[node].call("accumulate", staged, messages, started=started)
            self._flow(node, result, at, pubs, {})
        except StageFailure as f:
            error = {"stage": f.stage, "kind": f.kind, "message": f.message}
            pubs = [Publication(self.flow.mqtt.dead_letter_topic, body={
                "id": window_id, "error": error, "window": {"operation": node, "messages": len(messages)}},
                error=error)]
            pubs[0].payload = json.dumps(pubs[0].body).encode()
        for pub in pubs:
            pub.id = window_id
        if pubs:
            pubs[-1].on_published = lambda n=node, at=at, upto=upto: self._emitted.append((n, at, upto))
        else:
            self._emitted.append((node, at, upto))
        return pubs

    def warm_up(self, log: EventLog) -> None:
        pass

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()
        self.services.close()

    # the graph
    def _flow(self, name: str, data, ts, out: list[Publication], seconds: dict[str, float]) -> None:
        """`data` leaves node `name` at timestamp `ts`."""
        for edge in self._outputs[name]:
            self._visit(edge.dst, _along(edge, data), ts, out, seconds)

    def _visit(self, name: str, data, ts, out: list[Publication], seconds: dict[str, float]) -> None:
        kind = self.flow.graph.nodes[name].kind
        if kind == "sink":
            out.append(self._publication(data))
            return
        if kind == "concatenate":
            return self._flow(name, data, ts, out, seconds)
        started = time.perf_counter()
        try:
            if kind == "map":
                data = self.nodes[name].call("map", data)
            elif kind == "filter":
                if not self.nodes[name].call("filter", data):
                    return
            elif kind == "delay":
                ts = self.nodes[name].call("delay", data, ts)
            elif kind == "branch":
                arm = self.nodes[name].call("branch", ts, data)
                for edge in self._outputs[name]:
                    if edge.arm == arm:
                        self._visit(edge.dst, _along(edge, data), ts, out, seconds)
                return
            elif kind == "accumulate":
                from .windows import WindowError, WindowLimit
                try:
                    self.windows.stage(name, ts, data)
                except WindowLimit as e:
                    raise StageFailure(name, "limit", str(e)) from None
                except WindowError as e:
                    raise StageFailure(name, "state-store", str(e)) from None
                return
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        self._flow(name, data, ts, out, seconds)

    def _publication(self, data) -> Publication:
        from .operator import Message, Snapshot
        if isinstance(data, Message):
            return Publication(self.flow.sink, payload=bytes(data.payload), content_type=data.content_type,
                               user_properties=[(str(k), str(v)) for k, v in data.user_properties])
        if isinstance(data, Snapshot):
            return Publication(self.flow.sink, payload=bytes(data.frame), content_type=data.content_type)
        return Publication(self.flow.sink, payload=bytes(data), content_type=None)


def _along(edge, data):
    """`data` on `edge`: a message on a connection with a schema (the graph's
    `from.schemaName`) carries that schema, inline, to the operators after it."""
    if edge.schema is None:
        return data
    from .operator import Message
    return dataclasses.replace(data, schema=edge.schema) if isinstance(data, Message) else data

"""The pipeline file: YAML in, a checked `Pipeline` out, or errors that name the line.

The format (documented in full in pipelines/README.md) follows the graph definitions
of Azure IoT Operations data-flow graphs (metadata, moduleRequirements, operations,
connections), with the modules and their config inline and the MQTT endpoints named
in the file:

    moduleRequirements: {apiVersion: "1.1.0", runtimeVersion: "1.1.0", features: [{name: wasi-nn}]}
    modules:
      - {name: inference, type: wasm, path: ../guest/stage-model, config: {model: net.onnx}}
    operations:
      - {operationType: source, name: camera, topic: images/in}
      - {operationType: map, name: infer, module: inference}
      - {operationType: sink, name: results, topic: images/out}
    connections:
      - {from: {name: camera}, to: {name: infer}}
      - {from: {name: infer}, to: {name: results}}
    mqtt: {broker: "127.0.0.1:1883", group: cams, deadLetterTopic: images/dead-letter,
           tls: {ca: ca.crt}, username: cam-7, passwordFile: /run/secrets/mqtt}

Every error is reported (not only the first), each as `FILE:LINE: FIELD: what is wrong`.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Iterator, NoReturn

import yaml

from ..errors import WasinnError

SUPPORTED_API_VERSIONS = ("1.1.0",)
SUPPORTED_RUNTIME_VERSIONS = ("1.1.0",)
# Features a module may require, and which the host provides.
PROVIDED_FEATURES = ("wasi-nn",)
OPERATION_TYPES = ("source", "map", "sink")
# Config keys whose value is a file (relative to the pipeline file) that the host resolves.
FILE_KEYS = ("model", "labels")
DEFAULT_BROKER = "127.0.0.1:1883"
DEFAULT_MAX_PIXELS = 40_000_000

_TOP_KEYS = ("metadata", "moduleRequirements", "modules", "operations", "connections", "mqtt")
_OPERATION_KEYS = {"source": ("operationType", "name", "topic", "maxPixels"),
                   "map": ("operationType", "name", "module"),
                   "sink": ("operationType", "name", "topic")}
_MQTT_KEYS = ("broker", "group", "deadLetterTopic", "receiveMaximum", "sessionExpiry", "keepalive", "tls",
              "username", "passwordFile")
_TLS_KEYS = ("ca", "cert", "key")
# mqtt.tls.ca: the system's trust store instead of a CA file.
SYSTEM_CA = "system"


class PipelineError(WasinnError):
    """The pipeline file is wrong; `problems` lists every `FILE:LINE: FIELD: message`."""

    def __init__(self, path: pathlib.Path, problems: list[str]):
        self.problems = problems
        head = f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''} in the pipeline file"
        super().__init__(problems[0] if len(problems) == 1 else head + ":\n  " + "\n  ".join(problems))


@dataclasses.dataclass(frozen=True)
class Module:
    name: str
    path: pathlib.Path            # a .wasm component, or a guest directory holding app.py
    config: dict[str, str]        # as written (file values are absolute paths)
    line: int

    @property
    def files(self) -> dict[str, pathlib.Path]:
        return {k: pathlib.Path(v) for k, v in self.config.items() if k in FILE_KEYS}


@dataclasses.dataclass(frozen=True)
class Operation:
    name: str
    kind: str                     # source | map | sink
    module: str | None = None     # map
    topic: str | None = None      # source, sink
    max_pixels: int = DEFAULT_MAX_PIXELS  # source: larger images are refused before decoding
    line: int = 0


@dataclasses.dataclass(frozen=True)
class Tls:
    ca: pathlib.Path | None       # the CA file the broker's certificate must chain to; None: the system's store
    cert: pathlib.Path | None = None  # a client certificate (with `key`), for brokers that ask for one
    key: pathlib.Path | None = None


@dataclasses.dataclass(frozen=True)
class Mqtt:
    host: str
    port: int
    group: str                    # the shared subscription: $share/GROUP/SOURCE-TOPIC
    dead_letter_topic: str
    receive_maximum: int = 2      # unacknowledged messages the broker may send a worker at once
    session_expiry: int = 3600    # seconds the broker keeps a worker's session (and messages) after it dies
    keepalive: int = 30
    tls: Tls | None = None        # None: plain TCP
    username: str | None = None
    password_file: pathlib.Path | None = None  # None: $WASINN_MQTT_PASSWORD, if set

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class MqttServed:
    """What `wasinn serve`'s MQTT flags change, for any served file whose dataclass has `mqtt`."""
    mqtt: Mqtt

    def with_broker(self, broker: str):
        """The same, pointed at another broker (HOST:PORT); TLS and credentials stay."""
        host, port = parse_broker(broker)
        return dataclasses.replace(self, mqtt=dataclasses.replace(self.mqtt, host=host, port=port))

    def with_overrides(self, *, broker: str | None = None, tls_ca: str | None = None, username: str | None = None,
                       password_file: str | None = None):
        """`wasinn serve`'s --broker, --tls-ca, --username and --password-file over the file's
        settings (paths relative to the current directory, as on any command line)."""
        p = self.with_broker(broker) if broker else self
        changes: dict[str, Any] = {}
        if tls_ca:
            ca = None if tls_ca == SYSTEM_CA else pathlib.Path(tls_ca).resolve()
            changes["tls"] = dataclasses.replace(p.mqtt.tls, ca=ca) if p.mqtt.tls else Tls(ca)
        if username:
            changes["username"] = username
        if password_file:
            changes["password_file"] = pathlib.Path(password_file).resolve()
        return dataclasses.replace(p, mqtt=dataclasses.replace(p.mqtt, **changes)) if changes else p


@dataclasses.dataclass(frozen=True)
class Pipeline(MqttServed):
    path: pathlib.Path
    name: str
    modules: dict[str, Module]
    operations: dict[str, Operation]
    connections: list[tuple[str, str]]
    mqtt: Mqtt

    @property
    def source(self) -> Operation:
        return next(op for op in self.operations.values() if op.kind == "source")

    @property
    def sink(self) -> Operation:
        return next(op for op in self.operations.values() if op.kind == "sink")

    def inputs_of(self, name: str) -> list[str]:
        """The operations connected into `name`, in the order the file lists them."""
        return [a for a, b in self.connections if b == name]

    def outputs_of(self, name: str) -> list[str]:
        return [b for a, b in self.connections if a == name]

    def map_order(self) -> list[str]:
        """The map operations, each after every operation it takes input from."""
        done, order = {self.source.name}, []
        pending = [n for n, op in self.operations.items() if op.kind == "map"]
        while pending:
            ready = [n for n in pending if all(i in done for i in self.inputs_of(n))]
            order += ready
            done.update(ready)
            pending = [n for n in pending if n not in done]
        return order


def parse_broker(text: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise WasinnError(f"a broker is HOST:PORT, e.g. {DEFAULT_BROKER}; got {text!r}")
    return host.strip("[]"), int(port)


# --- YAML with line numbers ---------------------------------------------------------
# The most values a file (each of its documents) may hold, aliases counted each time they
# are used: a real graph holds hundreds; 647 bytes of nested aliases stood for billions
# (a graph artifact pulled from a registry held `wasinn serve`'s start at 2.4 GB and growing).
MAX_VALUES = 100_000
# And what no graph needs, which a graph artifact from a registry brought: lists nested
# 5,000 deep (a RecursionError traceback), values of megabytes, integers of thousands of
# digits (a ValueError traceback; and PyYAML reads a base-60 one, 1:2:3, in quadratic
# time: 1.2 MB held `wasinn serve`'s start past a minute), lists or mappings as keys.
MAX_DEPTH = 64
MAX_VALUE_CHARS = 1 << 16
MAX_INTEGER_CHARS = 64
_INTEGER = "tag:yaml.org,2002:int"


class _Doc:
    """The parsed file as plain values, plus the line of every value by its path."""

    def __init__(self, path: pathlib.Path, text: str | None, *, _loader=None, _node=None):
        self.path = path
        self.lines: dict[tuple, int] = {}
        self.problems: list[str] = []
        self._values = 0
        if _loader is not None:  # one document of `every`
            self.root = {} if _node is None else self._plain(_loader, _node, ())
            return
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            self.root = {} if node is None else self._plain(loader, node, ())
        except yaml.MarkedYAMLError as e:
            raise _invalid(path, e) from None
        except RecursionError:
            raise _too_deep(path) from None
        finally:
            loader.dispose()

    @classmethod
    def every(cls, path: pathlib.Path, text: str) -> list["_Doc"]:
        """Each document of a file of several (`---` between them), lines counted in the file."""
        loader = yaml.SafeLoader(text)
        docs = []
        try:
            while loader.check_node():
                docs.append(cls(path, None, _loader=loader, _node=loader.get_node()))
        except yaml.MarkedYAMLError as e:
            raise _invalid(path, e) from None
        except RecursionError:
            raise _too_deep(path) from None
        finally:
            loader.dispose()
        return docs

    def _plain(self, loader, node, at: tuple, line: int | None = None) -> Any:
        # A value is reported at its key's line: `features:` rather than its first item.
        self.lines[at] = line or node.start_mark.line + 1
        self._values += 1
        if self._values > MAX_VALUES:
            self._refuse(at, f"the file holds more than {MAX_VALUES} values (its aliases counted each time they "
                             "are used)")
        if len(at) > MAX_DEPTH:
            self._refuse(at, f"values nested more than {MAX_DEPTH} deep")
        if isinstance(node, yaml.MappingNode):
            out = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.lines[(*at, "?")] = key_node.start_mark.line + 1
                    self._refuse((*at, "?"), "a key is a list or a mapping; keys are plain values")
                key = self._scalar(loader, key_node, at)
                if key in out:
                    self.lines[(*at, key)] = key_node.start_mark.line + 1
                    self.fail((*at, key), "this key appears twice")
                    continue
                out[key] = self._plain(loader, value_node, (*at, key), key_node.start_mark.line + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._plain(loader, item, (*at, i)) for i, item in enumerate(node.value)]
        return self._scalar(loader, node, at)

    def _scalar(self, loader, node, at: tuple) -> Any:
        if len(node.value) > MAX_VALUE_CHARS:
            self._refuse(at, f"a value of {len(node.value)} characters; at most {MAX_VALUE_CHARS} are read")
        if node.tag == _INTEGER and len(node.value) > MAX_INTEGER_CHARS:
            self._refuse(at, f"an integer of {len(node.value)} characters; at most {MAX_INTEGER_CHARS} are read")
        try:
            return loader.construct_object(node, deep=True)
        except (ValueError, TypeError) as e:  # (what PyYAML's constructors raise besides its own errors)
            self._refuse(at, f"cannot read this value: {e}")

    def _refuse(self, at: tuple, message: str) -> NoReturn:
        """Ends the reading of the file: what follows would cost more than a graph may."""
        raise PipelineError(self.path, [f"{self.path}:{self.line(at)}: {message}"])

    def line(self, at: tuple) -> int:
        while at not in self.lines and at:
            at = at[:-1]
        return self.lines.get(at, 1)

    def fail(self, at: tuple, message: str) -> None:
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in at).lstrip(".") or "(file)"
        self.problems.append(f"{self.path}:{self.line(at)}: {field}: {message}")

    def entries(self, value: Any, key: str, what: str) -> Iterator[tuple[tuple, Any]]:
        """(where, item) of each item of the top-level list `key` (absent: none); anything
        but a non-empty list is said once."""
        if value is None:
            return
        if not isinstance(value, list) or not value:
            self.fail((key,), f"expected a list of {what}, got {_kind(value)}")
            return
        for i, item in enumerate(value):
            yield (key, i), item

    def mapping(self, value: Any, at: tuple, keys: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.fail(at, f"expected a mapping with {', '.join(keys)}, got {_kind(value)}")
            return {}
        for key in value:
            if key not in keys:
                self.fail((*at, key), f"unknown key {key!r}; expected one of: {', '.join(keys)}")
        for key in required:
            if key not in value:
                self.fail(at, f"missing {key!r}")
        return value

    def string(self, value: Any, at: tuple) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        self.fail(at, f"expected a non-empty string, got {_kind(value)}")
        return None

    def integer(self, value: Any, at: tuple, minimum: int) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return value
        self.fail(at, f"expected a whole number >= {minimum}, got {value!r}")
        return None


def _too_deep(path: pathlib.Path) -> PipelineError:
    return PipelineError(path, [f"{path}: not valid YAML here: lists or mappings nested past what Python's stack "
                                "holds"])


def _invalid(path: pathlib.Path, e: yaml.MarkedYAMLError) -> PipelineError:
    mark = e.problem_mark or e.context_mark
    where = f"{path}:{mark.line + 1}" if mark else str(path)
    return PipelineError(path, [f"{where}: not valid YAML: {e.problem or e}"])


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"the string {value!r}"}.get(type(value), repr(value))


# --- checks ---------------------------------------------------------------------------
def load_pipeline(path: str | os.PathLike) -> Pipeline:
    """Reads and checks a pipeline file; raises `PipelineError` listing every problem."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise WasinnError(f"cannot read pipeline file {path}: {e.strerror}") from None
    doc = _Doc(path, text)
    root = doc.mapping(doc.root, (), _TOP_KEYS, required=("moduleRequirements", "modules", "operations",
                                                           "connections", "mqtt"))
    _requirements(doc, root.get("moduleRequirements"))
    modules = _modules(doc, root.get("modules"), path.parent)
    operations = _operations(doc, root.get("operations"), modules)
    connections = _connections(doc, root.get("connections"), operations)
    if not doc.problems:
        _topology(doc, operations, connections)
    mqtt = _mqtt(doc, root.get("mqtt"), operations)
    if doc.problems:
        raise PipelineError(path, doc.problems)
    metadata = root.get("metadata") if isinstance(root.get("metadata"), dict) else {}
    return Pipeline(path.resolve(), str(metadata.get("name") or path.stem), modules, operations, connections, mqtt)


def _requirements(doc: _Doc, value: Any) -> None:
    at = ("moduleRequirements",)
    if value is None:
        return
    req = doc.mapping(value, at, ("apiVersion", "runtimeVersion", "features"),
                      required=("apiVersion", "runtimeVersion", "features"))
    for key, supported in (("apiVersion", SUPPORTED_API_VERSIONS), ("runtimeVersion", SUPPORTED_RUNTIME_VERSIONS)):
        if key in req and str(req[key]) not in supported:
            doc.fail((*at, key), f"{key} {req[key]!r} is not supported; wasinn runs {' and '.join(supported)}")
    if "features" not in req:
        return
    features = req["features"]
    if not isinstance(features, list):
        doc.fail((*at, "features"), f"expected a list of features, got {_kind(features)}")
        return
    names = []
    for i, feature in enumerate(features):
        name = feature.get("name") if isinstance(feature, dict) else feature
        if not isinstance(name, str):
            doc.fail((*at, "features", i), "a feature is a name (`- wasi-nn`) or `- name: wasi-nn`")
        elif name not in PROVIDED_FEATURES:
            doc.fail((*at, "features", i), f"unknown feature {name!r}; wasinn provides: {', '.join(PROVIDED_FEATURES)}")
        names.append(name)
    if "wasi-nn" not in names:
        doc.fail((*at, "features"), "the features must include wasi-nn: pipeline modules run their models "
                                    "through wasi:nn")


def _modules(doc: _Doc, value: Any, base: pathlib.Path) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for at, item in doc.entries(value, "modules", "modules"):
        m = doc.mapping(item, at, ("name", "type", "path", "config"), required=("name", "type", "path"))
        name = doc.string(m["name"], (*at, "name")) if "name" in m else None
        if name in modules:
            doc.fail((*at, "name"), f"a module named {name!r} is already defined at line {modules[name].line}")
            continue
        if "type" in m and m["type"] != "wasm":
            doc.fail((*at, "type"), f"module type must be wasm, got {m['type']!r}")
        path = None
        if "path" in m and doc.string(m["path"], (*at, "path")):
            path = (base / m["path"]).resolve()
            if not (path.suffix == ".wasm" and path.is_file()) and not (path / "app.py").is_file():
                doc.fail((*at, "path"), f"no component at {path}: expected a .wasm file or a guest "
                                        "directory with app.py")
        config = _config(doc, m.get("config", {}), (*at, "config"), base)
        if name and path:
            modules[name] = Module(name, path, config, doc.line(at))
    return modules


def _config(doc: _Doc, value: Any, at: tuple, base: pathlib.Path) -> dict[str, str]:
    if not isinstance(value, dict):
        doc.fail(at, f"expected a mapping of settings, got {_kind(value)}")
        return {}
    config = {}
    for key, v in value.items():
        if not isinstance(key, str) or isinstance(v, (dict, list)) or v is None:
            doc.fail((*at, key), "a setting is `name: value` with a string, number or true/false value")
            continue
        text = str(v).lower() if isinstance(v, bool) else str(v)
        if key in FILE_KEYS:
            file = (base / text).resolve()
            if not file.is_file():
                doc.fail((*at, key), f"no such {key} file: {file}")
            text = str(file)
        config[key] = text
    return config


def _operations(doc: _Doc, value: Any, modules: dict[str, Module]) -> dict[str, Operation]:
    ops: dict[str, Operation] = {}
    for at, item in doc.entries(value, "operations", "operations"):
        if not isinstance(item, dict):
            doc.fail(at, f"expected an operation mapping, got {_kind(item)}")
            continue
        kind = item.get("operationType")
        if kind not in OPERATION_TYPES:
            doc.fail((*at, "operationType"), f"operationType must be one of {', '.join(OPERATION_TYPES)}, "
                                             f"got {kind!r}")
            continue
        op = doc.mapping(item, at, _OPERATION_KEYS[kind], required=_OPERATION_KEYS[kind][:-1] if kind == "source"
                         else _OPERATION_KEYS[kind])
        name = doc.string(op["name"], (*at, "name")) if "name" in op else None
        if name in ops:
            doc.fail((*at, "name"), f"an operation named {name!r} is already defined at line {ops[name].line}")
            continue
        fields: dict[str, Any] = {}
        if kind == "map" and "module" in op:
            module = doc.string(op["module"], (*at, "module"))
            if module is not None and module not in modules:
                doc.fail((*at, "module"), f"unknown module {module!r}; the modules are: "
                                          + (", ".join(modules) or "(none)"))
            fields["module"] = module
        if kind in ("source", "sink") and "topic" in op:
            fields["topic"] = _topic(doc, op["topic"], (*at, "topic"), wildcards=kind == "source")
        if "maxPixels" in op:
            fields["max_pixels"] = doc.integer(op["maxPixels"], (*at, "maxPixels"), 1)
        if name:
            ops[name] = Operation(name, kind, line=doc.line(at), **fields)
    if not isinstance(value, list) or not value:  # said already (entries, or the file's missing key)
        return ops
    for kind in ("source", "sink"):
        count = sum(op.kind == kind for op in ops.values())
        if count != 1:
            doc.fail(("operations",), f"a pipeline has exactly one {kind} operation, this one has {count}")
    return ops


def _topic(doc: _Doc, value: Any, at: tuple, *, wildcards: bool) -> str | None:
    topic = doc.string(value, at)
    if topic is None:
        return None
    if topic.startswith("$"):
        doc.fail(at, f"topic {topic!r}: topics starting with $ are the broker's ($share/GROUP/ is added "
                     "from mqtt.group)")
    elif not wildcards and ("+" in topic or "#" in topic):
        doc.fail(at, f"topic {topic!r}: a topic published to cannot hold the wildcards + or #")
    return topic


def _connections(doc: _Doc, value: Any, ops: dict[str, Operation]) -> list[tuple[str, str]]:
    edges: list[tuple[str, str]] = []
    for at, item in doc.entries(value, "connections", "connections"):
        c = doc.mapping(item, at, ("from", "to"), required=("from", "to"))
        ends = []
        for end in ("from", "to"):
            if end not in c:
                continue
            e = doc.mapping(c[end], (*at, end), ("name",), required=("name",))
            name = e.get("name")
            if name is not None and name not in ops:
                doc.fail((*at, end, "name"), f"unknown operation {name!r}; the operations are: " + ", ".join(ops))
            ends.append(name if name in ops else None)
        if len(ends) != 2 or None in ends:
            continue
        a, b = ends
        if ops[a].kind == "sink":
            doc.fail((*at, "from"), f"{a!r} is the sink: nothing can come out of it")
        elif ops[b].kind == "source":
            doc.fail((*at, "to"), f"{b!r} is the source: nothing can go into it")
        elif (a, b) in edges:
            doc.fail(at, f"{a!r} -> {b!r} is listed twice")
        else:
            edges.append((a, b))
            doc.lines[("edge", a, b)] = doc.line(at)
    return edges


def _topology(doc: _Doc, ops: dict[str, Operation], edges: list[tuple[str, str]]) -> None:
    """No cycles; every operation on a path from the source to the sink; one input to the sink."""
    after: dict[str, list[str]] = {n: [] for n in ops}
    for a, b in edges:
        after[a].append(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(n: str, path: list[str]) -> bool:
        state[n] = 1
        for m in after[n]:
            if state.get(m) == 1:
                cycle = path[path.index(m):] + [n, m] if m in path else [n, m]
                doc.fail(("connections",), f"the connections form a cycle: {' -> '.join(cycle)} "
                                           f"(closed at line {doc.lines[('edge', n, m)]})")
                return True
            if m not in state and visit(m, path + [n]):
                return True
        state[n] = 2
        return False

    for n in ops:
        if n not in state and visit(n, []):
            return
    source = next(n for n, op in ops.items() if op.kind == "source")
    sink = next(n for n, op in ops.items() if op.kind == "sink")
    reached, todo = {source}, [source]
    while todo:
        for m in after[todo.pop()]:
            if m not in reached:
                reached.add(m)
                todo.append(m)
    before = {n: [a for a, b in edges if b == n] for n in ops}
    leads, todo = {sink}, [sink]
    while todo:
        for m in before[todo.pop()]:
            if m not in leads:
                leads.add(m)
                todo.append(m)
    for n, op in ops.items():
        if n not in reached:
            doc.fail(("operations", n), f"operation {n!r} (line {op.line}) gets no input: no connection "
                                        f"leads to it from the source {source!r}")
        elif n not in leads:
            doc.fail(("operations", n), f"operation {n!r} (line {op.line}) leads nowhere: no connection "
                                        f"takes its output to the sink {sink!r}")
    if len(before[sink]) > 1:
        doc.fail(("connections",), f"the sink {sink!r} takes one result; {len(before[sink])} operations "
                                   f"connect to it: {', '.join(before[sink])}")


def _mqtt(doc: _Doc, value: Any, ops: dict[str, Operation]) -> Mqtt | None:
    at = ("mqtt",)
    if value is None:
        return None
    m = doc.mapping(value, at, _MQTT_KEYS, required=("group", "deadLetterTopic"))
    try:
        host, port = parse_broker(m.get("broker", DEFAULT_BROKER))
    except WasinnError as e:
        doc.fail((*at, "broker"), str(e))
        host, port = "", 0
    group = doc.string(m["group"], (*at, "group")) if "group" in m else None
    if group and any(c in group for c in "/+#"):
        doc.fail((*at, "group"), f"a shared-subscription group cannot hold / + or #, got {group!r}")
    dead = _topic(doc, m["deadLetterTopic"], (*at, "deadLetterTopic"), wildcards=False) \
        if "deadLetterTopic" in m else None
    sink = next((op.topic for op in ops.values() if op.kind == "sink"), None)
    if dead is not None and dead == sink:
        doc.fail((*at, "deadLetterTopic"), f"the dead-letter topic must differ from the sink's topic {sink!r}")
    numbers = {}
    for key, field, minimum in (("receiveMaximum", "receive_maximum", 1), ("sessionExpiry", "session_expiry", 0),
                                ("keepalive", "keepalive", 5)):
        if key in m:
            numbers[field] = doc.integer(m[key], (*at, key), minimum)
    tls = _tls(doc, m["tls"], (*at, "tls")) if "tls" in m else None
    username = doc.string(m["username"], (*at, "username")) if "username" in m else None
    password_file = _file(doc, m["passwordFile"], (*at, "passwordFile")) if "passwordFile" in m else None
    if "passwordFile" in m and "username" not in m:
        doc.fail((*at, "passwordFile"), "a password goes with a username: add mqtt.username")
    if not group or not dead or not host or None in numbers.values() or tls is False or password_file is False:
        return None
    return Mqtt(host, port, group, dead, **numbers, tls=tls, username=username, password_file=password_file)


def _file(doc: _Doc, value: Any, at: tuple) -> pathlib.Path | bool:
    """A file named relative to the pipeline file; False (reported) if it is not there.
    Only its existence is checked here: what is in it is checked when it is used."""
    text = doc.string(value, at)
    if text is None:
        return False
    path = (doc.path.parent / text).resolve()
    if not path.is_file():
        doc.fail(at, f"no such file: {path}")
        return False
    return path


def _tls(doc: _Doc, value: Any, at: tuple) -> Tls | bool:
    t = doc.mapping(value, at, _TLS_KEYS, required=("ca",))
    if not t:
        return False
    ca = None if t.get("ca") == SYSTEM_CA else _file(doc, t["ca"], (*at, "ca")) if "ca" in t else False
    cert = _file(doc, t["cert"], (*at, "cert")) if "cert" in t else None
    key = _file(doc, t["key"], (*at, "key")) if "key" in t else None
    if ("cert" in t) != ("key" in t):
        doc.fail(at, "a client certificate needs both cert and key")
        return False
    if False in (ca, cert, key):
        return False
    return Tls(ca, cert, key)

"""What one instance may use: memory, time, model and tensor sizes, live resources.

Set per run with CLI flags or a TOML file (`--config wasinn.toml`):

    [limits]
    memory = "2GiB"            # all of an instance's linear memories together
    max-memories = 16          # linear memories per instance
    max-tables = 16            # tables per instance
    max-table-elements = 1048576  # elements of any one table
    max-instances = 256        # core instances per instance (a component holds many)
    deadline = "60s"           # per call; "0" turns it off
    fuel = 0                   # wasm instructions per call (roughly); 0 = not counted
    max-model-bytes = "1GiB"   # one graph.load
    max-tensor-bytes = "1GiB"  # one compute input
    max-tensor-elements = 268435456
    max-tensor-rank = 64       # dimensions of one tensor (numpy's own maximum)
    max-output-bytes = "1GiB"  # one compute output; unset: max-tensor-bytes's value
    max-backend-memory = "2GiB"  # a backend's working memory and live outputs, per graph
    max-host-bytes = "4GiB"    # what an instance holds: tensors, outputs, models, errors, LiteRT contexts
    max-graphs = 64            # live, per instance
    max-contexts = 256
    max-tensors = 4096
    max-errors = 1024          # live wasi:nn errors per instance (those it never dropped)
    max-builders = 16          # builders of one graph.load
    max-list-elements = 65536  # list elements (bytes aside) one call hands the host: arguments, a result
    max-string-bytes = "16MiB" # bytes of the strings one call hands the host, together
    max-result-bytes = "1MiB"  # a wasinn pipeline's JSON result (parsed in one piece, holding the GIL)
    external-data-dir = ""     # a directory ONNX external data may come from; "" = none
    isolate = "guest-models"   # which graphs run in a confined worker process: guest-models, all, none
    max-workers = 64           # live backend worker processes (one per instance with isolated graphs)
    # what the host services of a data-flow operator hold for it (pipeline/services)
    max-state-key-bytes = 1024 # one state-store key (values: max-tensor-bytes)
    max-state-keys = 10000     # live state-store keys one operator created
    max-state-bytes = "64MiB"  # bytes of the values of the keys one operator created
    max-metric-series = 256    # metric names x label sets one operator reports
    max-log-lines = 100        # log lines per second per operator; the rest are counted, not written
    max-payload-bytes = "64MiB"  # one message payload or snapshot frame (what buffer.read hands over)
    max-delay = "1h"           # how far past the host's clock a delay operator may move a timestamp
    max-open-windows = 1024    # windows one accumulate node holds open (staged, not yet emitted)
    max-window-messages = 10000  # messages one window stages (its fold hands them to one call)
    max-window-bytes = "64MiB" # bytes one window stages (as stored: payloads in base64)
    # what compiling a guest's .wasm may take (in a helper process: compiler.py)
    max-compile-memory = "2GiB"  # the helper's address space; real guests peak at 0.4-1 GiB
    compile-timeout = "10min"  # "0" turns it off

Over a limit, the first call that can return an error (`load`, `compute`, ...) returns
wasi:nn `too-large` naming the limit, its value and its flag. The tensor constructor has
no error to return: over max-tensor-rank, max-tensors or max-host-bytes it traps with that
line, before it reads the tensor's dimensions or bytes. A call over its deadline or fuel
ends the call (the instance is torn down, as for any trap); when onnxruntime is what runs
long, it is stopped and the guest gets wasi:nn `timeout` instead. The store limits
(memory, max-memories, max-tables, max-table-elements, max-instances) fail an
instantiation past them with one line naming the limit; past them later, memory.grow and
table.grow return -1, as wasm does. A memory above what the instance's memories can reach
together (4 GiB per 32-bit memory) is refused: it would bound nothing.

Every count a guest declares (dimensions, builders) is checked before anything is done
per element, and guest dimensions are multiplied only up to a bound (`product`), so no
call on hostile arguments costs the host more than its limits allow.
"""
from __future__ import annotations

import dataclasses
import math
import pathlib
import re

from .errors import NnError, WasinnError, too_large

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1 << 10, "m": 1e6, "mb": 1e6, "mib": 1 << 20,
          "g": 1e9, "gb": 1e9, "gib": 1 << 30, "t": 1e12, "tb": 1e12, "tib": 1 << 40}
_SECONDS = {"": 1, "s": 1, "ms": 1e-3, "m": 60, "min": 60, "h": 3600}


def parse_bytes(text: str | int) -> int:
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise WasinnError(f"cannot read {text!r} as a size (e.g. 512MiB, 2GB, 1048576)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


# Where graphs run (backends/isolation.py applies it).
POLICIES = ("guest-models", "all", "none")


def check_policy(value: str) -> str:
    value = str(value)
    if value not in POLICIES:
        raise WasinnError(f"isolate {value!r}: wasinn has {', '.join(POLICIES)} (guest-models: graphs from guest "
                          "bytes run in a confined worker process; all: every graph does; none: all in process)")
    return value


def parse_seconds(text: str | float) -> float:
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SECONDS:
        raise WasinnError(f"cannot read {text!r} as a duration (e.g. 30s, 500ms, 2m)")
    return float(m.group(1)) * _SECONDS[m.group(2).lower()]


@dataclasses.dataclass
class Limits:
    memory: int = 2 << 30
    deadline: float = 60.0
    fuel: int = 0
    max_model_bytes: int = 1 << 30
    max_tensor_bytes: int = 1 << 30
    max_tensor_elements: int = 1 << 28
    max_tensor_rank: int = 64  # numpy's NPY_MAXDIMS: every host tensor is a numpy array
    max_output_bytes: int | None = None  # None: max_tensor_bytes
    max_backend_memory: int = 2 << 30
    max_host_bytes: int = 4 << 30
    max_graphs: int = 64
    max_contexts: int = 256
    max_tensors: int = 4096  # live, per instance: each one walked by the collector (SECURITY.md)
    max_errors: int = 1024
    max_memories: int = 16
    max_tables: int = 16
    max_table_elements: int = 1 << 20
    max_instances: int = 256
    max_builders: int = 16  # ONNX and TFLite take 1 builder, OpenVINO IR 2
    max_list_elements: int = 65536
    max_string_bytes: int = 16 << 20  # copied and decoded holding the GIL: ~10 ms
    max_result_bytes: int = 1 << 20  # json.loads holds the GIL: 1 MiB of small objects, ~0.1 s
    external_data_dir: pathlib.Path | None = None
    isolate: str = "guest-models"
    max_workers: int = 64
    max_state_key_bytes: int = 1024
    max_state_keys: int = 10000
    max_state_bytes: int = 64 << 20
    max_metric_series: int = 256
    max_log_lines: int = 100
    max_payload_bytes: int = 64 << 20
    max_delay: float = 3600.0  # seconds
    max_open_windows: int = 1024
    max_window_messages: int = 10_000
    max_window_bytes: int = 64 << 20
    max_compile_memory: int = 2 << 30  # the compile helper's address space (compiler.py)
    compile_timeout: float = 600.0

    # how each field is read from text, and its name in files and flags
    _PARSERS = {"memory": parse_bytes, "deadline": parse_seconds, "fuel": int,
                "max_model_bytes": parse_bytes, "max_tensor_bytes": parse_bytes,
                "max_tensor_elements": int, "max_tensor_rank": int, "max_output_bytes": parse_bytes,
                "max_backend_memory": parse_bytes, "max_host_bytes": parse_bytes, "max_graphs": int,
                "max_contexts": int, "max_tensors": int, "max_errors": int, "max_builders": int,
                "max_list_elements": int,
                "max_string_bytes": parse_bytes, "max_result_bytes": parse_bytes,
                "max_memories": int, "max_tables": int, "max_table_elements": int, "max_instances": int,
                "external_data_dir": lambda v: pathlib.Path(v).resolve() if v else None,
                "isolate": check_policy, "max_workers": int,
                "max_state_key_bytes": parse_bytes, "max_state_keys": int, "max_state_bytes": parse_bytes,
                "max_metric_series": int,
                "max_log_lines": int, "max_payload_bytes": parse_bytes, "max_delay": parse_seconds,
                "max_open_windows": int, "max_window_messages": int, "max_window_bytes": parse_bytes,
                "max_compile_memory": parse_bytes, "compile_timeout": parse_seconds}

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def updated(self, values: dict) -> "Limits":
        """A copy with `values` (field or kebab-case names, text or numbers) applied."""
        changes = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in self._PARSERS:
                raise WasinnError(f"unknown limit {key!r}; the limits are: "
                                  + ", ".join(n.replace("_", "-") for n in self.names()))
            shown = name.replace("_", "-")  # as files and flags write it
            try:
                changes[name] = self._PARSERS[name](value)
            except (TypeError, ValueError) as e:
                raise WasinnError(f"limit {shown}: {e}") from None
            # wasmtime reads a negative store limit as "none"; no instance runs without one
            least = 1 if name == "max_instances" else 0
            if isinstance(changes[name], (int, float)) and not least <= changes[name] < math.inf:
                raise WasinnError(f"limit {shown}: {value!r} is not a number of at least {least}")
        return dataclasses.replace(self, **changes)

    def changes(self) -> dict[str, str]:
        """The limits that differ from the defaults, as text `updated` reads back (for a
        process that hands its limits to another: `wasinn serve` to its workers)."""
        defaults = Limits()
        return {name: str(getattr(self, name)) for name in self.names()
                if getattr(self, name) != getattr(defaults, name) and getattr(self, name) is not None}

    @classmethod
    def from_file(cls, path: str | pathlib.Path) -> "Limits":
        import tomllib  # only for a --config file
        try:
            data = tomllib.loads(pathlib.Path(path).read_text())
        except OSError as e:
            raise WasinnError(f"cannot read config {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise WasinnError(f"config {path}: {e}") from None
        unknown = set(data) - {"limits"}
        if unknown:
            raise WasinnError(f"config {path}: unknown section(s) {', '.join(sorted(unknown))}; expected [limits]")
        return cls().updated(data.get("limits", {}))

    def check_reach(self, memories: int, reach: float) -> None:
        """Refuses a memory limit that `memories` memories reaching `reach` bytes
        together (4 GiB per 32-bit memory) could never meet: it would bound nothing."""
        if memories and self.memory > reach:
            raise WasinnError(f"the limit is {_gib(self.memory)}, more than its {memories} linear "
                              f"memor{'y' if memories == 1 else 'ies'} can reach together ({_gib(reach)}: "
                              "4 GiB each, 32-bit), so it would bound nothing (limit 'memory', --memory)")

    # --- checks used by nn.py --------------------------------------------------------
    def check_model(self, nbytes: int) -> None:
        if nbytes > self.max_model_bytes:
            raise too_large(f"the model is {nbytes} bytes; the limit is {self.max_model_bytes} "
                            "(max-model-bytes, --max-model-bytes)")

    def deadline_from(self, started: float) -> float | None:
        """When a call begun at `started` (time.monotonic()) must end; None: no deadline."""
        return started + self.deadline if self.deadline > 0 else None

    def past_deadline(self) -> str:
        """What ends a call at its deadline, in one line."""
        return f"the call ran past its deadline of {self.deadline:g} s (limit 'deadline', --deadline)"

    def check_rank(self, rank: int, label: str) -> None:
        """A guest's count of dimensions, before any of them is read."""
        if rank > self.max_tensor_rank:
            raise too_large(f"{label} has {rank} dimensions; the limit is {self.max_tensor_rank} "
                            "(max-tensor-rank, --max-tensor-rank)")

    def check_builders(self, count: int) -> None:
        """graph.load's count of builders, before any of them is looked at."""
        if count > self.max_builders:
            raise too_large(f"graph.load got {count} graph builders; the limit is {self.max_builders} "
                            "(max-builders, --max-builders)")

    def too_many_list_elements(self, count: int) -> str:
        """Why a call that handed the host `count` list elements or more is refused."""
        return (f"the guest handed the host at least {count} list elements in one call (a host function's "
                f"arguments or an export's result, its lists but those of bytes together); the limit is "
                f"{self.max_list_elements} (limit 'max-list-elements', --max-list-elements)")

    def too_much_text(self, count: int) -> str:
        """Why a call that handed the host `count` bytes of strings or more is refused."""
        return (f"the guest handed the host at least {count} bytes of strings in one call (a host function's "
                f"arguments or an export's result, its strings together); the limit is "
                f"{self.max_string_bytes} (limit 'max-string-bytes', --max-string-bytes)")

    def check_tensor(self, label: str, dims, itemsize: int) -> int:
        """The bytes of a tensor of `dims`; `too-large` past max-tensor-elements or
        max-tensor-bytes."""
        elements = product(dims)
        if elements > self.max_tensor_elements:
            raise too_large(f"{label} has {counted(elements)} elements; the limit is "
                            f"{self.max_tensor_elements} (max-tensor-elements, --max-tensor-elements)")
        nbytes = elements * itemsize
        if nbytes > self.max_tensor_bytes:
            raise too_large(f"{label} is {nbytes} bytes; the limit is "
                            f"{self.max_tensor_bytes} (max-tensor-bytes, --max-tensor-bytes)")
        return nbytes

    @property
    def output_bytes(self) -> int:
        return self.max_tensor_bytes if self.max_output_bytes is None else self.max_output_bytes

    def check_output(self, name: str, nbytes: int) -> None:
        if nbytes > self.output_bytes:
            raise too_large(f"output {name!r} is {nbytes} bytes; the limit is {self.output_bytes} "
                            "(max-output-bytes, --max-output-bytes)")

    def check_host_bytes(self, held: int, more: int, what: str) -> None:
        """`what` (`more` bytes) on top of the `held` bytes an instance holds."""
        if held + more > self.max_host_bytes:
            raise too_large(f"{what} would make the instance hold {held + more} bytes on the host "
                            f"({held} already); the limit is {self.max_host_bytes} (max-host-bytes, --max-host-bytes)")

    def live_limit(self, kind: str) -> int:
        return {"graph": self.max_graphs, "graph_execution_context": self.max_contexts,
                "tensor": self.max_tensors, "error": self.max_errors}.get(kind, 0)


def _gib(n: float) -> str:
    return f"{n / 2**30:g} GiB"


# Past this, a product of dimensions is not worked out further: no tensor has 2^64 elements.
PRODUCT_CAP = 1 << 64


def product(dims) -> int:
    """The product of `dims`, or PRODUCT_CAP + 1 as soon as it passes PRODUCT_CAP (a
    zero among them still makes it 0): a guest's dimensions never become a product of
    big ints, however many there are."""
    if 0 in dims:
        return 0
    n = 1
    for d in dims:
        n *= d
        if n > PRODUCT_CAP:
            return PRODUCT_CAP + 1
    return n


def counted(n: int) -> str:
    """A product of dimensions, as a message says it."""
    return f"more than {PRODUCT_CAP}" if n > PRODUCT_CAP else str(n)


def backend_memory_error(backend: str, limit: int, detail: str) -> NnError:
    """What a backend says when a graph's run would need more than max-backend-memory."""
    return too_large(f"{backend} would need more working memory than a graph may use ({detail}); "
                     f"the limit is {limit} (max-backend-memory, --max-backend-memory)")

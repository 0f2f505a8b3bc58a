"""Remote graphs: models served by an inference server that speaks the Open Inference
Protocol (KServe v2) over HTTP, as KServe, Triton and MLServer do.

The operator names the model by URL (`--model NAME=kserve+http://HOST:PORT/v2/models/M`);
the guest loads it by name and sees plain wasi:nn. Loading fetches the model's metadata
(so `nn.py` checks inputs before anything crosses the network, and introspection works);
each `compute` is one POST to `.../infer`. A remote graph comes from a URL in the
registry, not from model bytes, so this module is not one of the encoding backends in
`backends.KINDS`.

Options go in the URL's query:
  timeout=SECONDS   for each request after connecting (default 30), or less when the
                    guest's call has a sooner deadline; past it, `timeout`
  data=binary|json  tensor bytes as the protocol's binary extension (default), or as
                    JSON numbers for servers without it (2-3x slower for an image)

Failures map to wasi:nn codes: a request that outlives its timeout is `timeout`; an
unreachable server is `runtime-error` naming the address and the cause (connecting
gives up after CONNECT_TIMEOUT); an error status is `runtime-error` (`not-found` for
404) carrying the server's own message.
"""
from __future__ import annotations

import http.client
import json
import math
import re
import socket
import threading
import time
import urllib.parse
from typing import Sequence

import numpy as np

from .._enums import ErrorCode, ExecutionTarget, TensorType
from ..errors import NnError, invalid_argument, not_found, runtime_error, unsupported
from ..tensors import DTYPES, HostTensor
from .base import AcceptOutputs, TensorSpec, accept_all

SCHEME = "kserve+"
DEFAULT_TIMEOUT = 30.0
CONNECT_TIMEOUT = 5.0
# The protocol's datatypes that wasi:nn has a tensor type for.
_DATATYPES = {"FP16": TensorType.FP16, "FP32": TensorType.FP32, "FP64": TensorType.FP64,
              "BF16": TensorType.BF16, "UINT8": TensorType.U8, "INT32": TensorType.I32,
              "INT64": TensorType.I64}
_NAMES = {ty: name for name, ty in _DATATYPES.items()}
# The binary extension's header: the length of the JSON part that precedes the tensor bytes.
_JSON_LENGTH = "Inference-Header-Content-Length"
_MODEL_PATH = re.compile(r"/v2/models/[^/]+(/versions/[^/]+)?/?")
# Failures of a kept-alive connection that the server closed meanwhile: worth one retry.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def is_remote(spec: str) -> bool:
    return spec.startswith(SCHEME)


class Endpoint:
    """One model's URL on one server, with a pool of kept-alive connections (a context
    takes one per request, so instances on several threads never share one)."""

    def __init__(self, url: str):
        if not is_remote(url):
            raise invalid_argument(f"a remote model's URL starts with {SCHEME}http://, got {url!r}")
        parsed = urllib.parse.urlsplit(url[len(SCHEME):])
        if parsed.scheme != "http" or not parsed.hostname:
            raise invalid_argument(f"{url!r}: wasinn speaks the inference protocol over {SCHEME}http://HOST:PORT/...")
        if not _MODEL_PATH.fullmatch(parsed.path):
            raise invalid_argument(f"{url!r}: the path must be /v2/models/NAME[/versions/VERSION]")
        try:
            port = parsed.port or 80
        except ValueError as e:
            raise invalid_argument(f"{url!r}: {e}") from None
        options = dict(urllib.parse.parse_qsl(parsed.query, strict_parsing=bool(parsed.query)))
        unknown = set(options) - {"timeout", "data"}
        if unknown:
            raise invalid_argument(f"{url!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                                   "known: timeout=SECONDS, data=binary|json")
        try:
            self.timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
        except ValueError:
            raise invalid_argument(f"{url!r}: timeout must be a number of seconds") from None
        if not self.timeout > 0:
            raise invalid_argument(f"{url!r}: timeout must be positive")
        if options.get("data", "binary") not in ("binary", "json"):
            raise invalid_argument(f"{url!r}: data must be binary or json")
        self.binary = options.get("data", "binary") == "binary"
        self.host, self.port = parsed.hostname, port
        self.path = parsed.path.rstrip("/")
        self.url = f"http://{parsed.netloc}{self.path}"
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connect(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=min(CONNECT_TIMEOUT, self.timeout))
        try:
            conn.connect()
        except TimeoutError:
            raise runtime_error(f"cannot reach the inference server at {self.url}: no answer to "
                                f"connecting within {conn.timeout:g} s") from None
        except OSError as e:
            raise runtime_error(f"cannot reach the inference server at {self.url}: "
                                f"{e.strerror or e}") from None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def request(self, method: str, suffix: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                deadline: float | None = None) -> tuple[http.client.HTTPResponse, bytes]:
        """One request; returns the response (status checked) and its body. It gives up
        after the endpoint's timeout, or at `deadline` (time.monotonic()) if sooner."""
        timeout, limit = self.timeout, f"within {self.timeout:g} s"
        if deadline is not None and deadline - time.monotonic() < timeout:
            timeout, limit = max(deadline - time.monotonic(), 0.001), "before the call's deadline"
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        for attempt in (0, 1):
            reused = conn is not None
            conn = conn or self._connect()
            conn.sock.settimeout(timeout)
            try:
                conn.request(method, self.path + suffix, body=body, headers=headers or {})
                response = conn.getresponse()
                data = response.read()
                break
            except _STALE:
                conn.close()
                conn = None
                if not reused or attempt:
                    raise runtime_error(f"the inference server at {self.url} closed the connection "
                                        "without answering") from None
            except TimeoutError:
                conn.close()
                raise NnError(ErrorCode.TIMEOUT, f"the inference server at {self.url} did not answer "
                              f"{method} {self.path + suffix} {limit}") from None
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                raise runtime_error(f"talking to the inference server at {self.url}: "
                                    f"{type(e).__name__}: {e}") from None
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append(conn)
        if response.status != 200:
            message = _server_message(data) or response.reason
            make = not_found if response.status == 404 else runtime_error
            raise make(f"the inference server at {self.url} answered {response.status}: {message}")
        return response, data


def _server_message(body: bytes) -> str:
    """The server's error text: `{"error": ...}` in every implementation of the protocol."""
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return body[:500].decode("utf-8", "replace").strip()


def _spec(meta: dict) -> TensorSpec:
    datatype = str(meta["datatype"])
    shape = tuple(None if int(d) < 0 else int(d) for d in meta["shape"])
    return TensorSpec(str(meta["name"]), _DATATYPES.get(datatype), datatype, shape)


class KServeGraph:
    """A model on an inference server; loading it fetched its metadata."""
    backend = "kserve"

    def __init__(self, endpoint: Endpoint, target: ExecutionTarget = ExecutionTarget.CPU):
        self.endpoint = endpoint
        # The server picks its own device; the target is only what the operator asked for.
        self.target = target
        _, body = self.endpoint.request("GET", "")
        try:
            meta = json.loads(body)
            self.inputs = [_spec(m) for m in meta["inputs"]]
            self.outputs = [_spec(m) for m in meta["outputs"]]
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise runtime_error(f"the inference server at {self.endpoint.url} sent model metadata "
                                f"wasinn cannot read ({type(e).__name__}: {e}): {body[:200]!r}") from None
        self.name = str(meta.get("name", ""))

    def init_execution_context(self, deadline: float | None = None) -> "KServeContext":
        return KServeContext(self)


class KServeContext:
    def __init__(self, graph: KServeGraph):
        self.graph = graph

    def compute(self, inputs: list[HostTensor], deadline: float | None = None,
                accept_outputs: AcceptOutputs = accept_all,
                into: Sequence[memoryview] | None = None) -> list[tuple[str, HostTensor]]:
        g = self.graph
        binary = g.endpoint.binary
        request_inputs, payloads = [], []
        for spec, t in zip(g.inputs, inputs):
            entry = {"name": spec.name, "shape": list(t.dims), "datatype": _NAMES[t.ty]}
            if binary:
                entry["parameters"] = {"binary_data_size": t.nbytes}
                payloads.append(t.data)
            elif t.ty in (TensorType.FP16, TensorType.BF16):
                raise unsupported(f"input {spec.name!r}: {t.ty.value} cannot travel as JSON numbers; "
                                  f"use data=binary in the model's URL")
            else:
                entry["data"] = t.array().ravel().tolist()
            request_inputs.append(entry)
        header = {"inputs": request_inputs,
                  "outputs": [{"name": o.name, "parameters": {"binary_data": binary}} for o in g.outputs]}
        head = json.dumps(header, separators=(",", ":")).encode()
        if binary:
            body = b"".join([head, *payloads])
            headers = {"Content-Type": "application/octet-stream", _JSON_LENGTH: str(len(head))}
        else:
            body, headers = head, {"Content-Type": "application/json"}
        response, data = g.endpoint.request("POST", "/infer", body, headers, deadline)
        try:
            outputs = _read_outputs(response, data, accept_outputs)
        except (ValueError, KeyError, TypeError) as e:
            raise runtime_error(f"the inference server at {g.endpoint.url} sent an inference response "
                                f"wasinn cannot read: {type(e).__name__}: {e}") from None
        order = {o.name: i for i, o in enumerate(g.outputs)}
        return sorted(outputs, key=lambda item: order.get(item[0], len(order)))


def _read_outputs(response: http.client.HTTPResponse, data: bytes,
                  accept_outputs: AcceptOutputs) -> list[tuple[str, HostTensor]]:
    json_length = response.getheader(_JSON_LENGTH)
    head_len = int(json_length) if json_length is not None else len(data)
    header = json.loads(data[:head_len])
    accept_outputs([(str(out["name"]), math.prod(int(d) for d in out["shape"]) * DTYPES[_DATATYPES[out["datatype"]]].itemsize)
                    for out in header["outputs"] if out.get("datatype") in _DATATYPES])
    offset = head_len
    outputs = []
    for out in header["outputs"]:
        name, datatype, shape = str(out["name"]), str(out["datatype"]), [int(d) for d in out["shape"]]
        ty = _DATATYPES.get(datatype)
        if ty is None:
            raise unsupported(f"output {name!r} is {datatype}, which no wasi:nn tensor type can carry "
                              f"({', '.join(_DATATYPES)})")
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            tensor = HostTensor(shape, ty, np.frombuffer(data, np.uint8, count=int(size), offset=offset))
            offset += int(size)
            if tensor.expected_nbytes() != tensor.nbytes:
                raise ValueError(f"output {name!r}: {size} bytes for {datatype} {shape}")
        else:
            if ty in (TensorType.FP16, TensorType.BF16):
                raise unsupported(f"output {name!r}: {ty.value} cannot travel as JSON numbers")
            tensor = HostTensor.from_array(np.asarray(out["data"], DTYPES[ty]).reshape(shape))
        outputs.append((name, tensor))
    return outputs

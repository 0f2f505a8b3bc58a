"""Operators and graph definitions pulled by reference, as Azure IoT Operations publishes them:
OCI artifacts in a registry (the distribution API, anonymous) or in an OCI image layout
directory (`oci-layout`, `index.json`, `blobs/sha256/...`).

    store = ArtifactStore(cache_dir, progress=print)
    path = store.fetch("azure-samples/explore-iot-operations/temperature:1.0.0",
                       "http://127.0.0.1:5000", "module")      # a .wasm in the cache

A module is the manifest's layer of media type `application/vnd.wasm.content.layer.v1+wasm`;
a graph the `application/yaml` layer of a manifest whose config is
`application/vnd.microsoft.aio.graph.v1+yaml`. Every blob is checked against its digest
while it streams in, and bounded (the manifest by MAX_MANIFEST_BYTES, a layer by the size
the manifest gives and by `max_bytes`) before anything is kept; blobs are cached by digest,
so a reference pulled once runs offline as long as its registry still names the same digest
(or, with the registry unreachable, from the last digest it named). Plain HTTP only to
loopback.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import ipaddress
import json
import os
import pathlib
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable

from ..errors import WasinnError

WASM_LAYER = "application/vnd.wasm.content.layer.v1+wasm"
GRAPH_CONFIG = "application/vnd.microsoft.aio.graph.v1+yaml"
GRAPH_LAYER = "application/yaml"
_MANIFESTS = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
MAX_MANIFEST_BYTES = 4 << 20
MAX_ARTIFACT_BYTES = 512 << 20
_CHUNK = 1 << 20
_PROGRESS_EVERY = 16 << 20
_TIMEOUT = 30.0
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REF = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})?$")


class ArtifactError(WasinnError):
    pass


def split_ref(ref: str) -> tuple[str, str]:
    """`REPO:TAG` or `REPO@sha256:...` -> (repo, tag or digest); a bare REPO means `latest`."""
    if not _REF.match(ref):
        raise ArtifactError(f"{ref!r} is not an artifact reference (REPOSITORY:TAG, e.g. "
                            "azure-samples/explore-iot-operations/temperature:1.0.0)")
    if "@" in ref:
        repo, _, digest = ref.partition("@")
        return repo, digest
    repo, _, tag = ref.rpartition(":") if ":" in ref.rpartition("/")[2] else (ref, "", "latest")
    return repo, tag


def _loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ArtifactStore:
    def __init__(self, cache_dir: pathlib.Path, *, progress: Callable[[str], None] | None = None,
                 max_bytes: int = MAX_ARTIFACT_BYTES):
        self.root = pathlib.Path(cache_dir) / "artifacts"
        self.progress = progress or (lambda message: None)
        self.max_bytes = max_bytes

    def fetch(self, ref: str, registry: str, kind: str) -> pathlib.Path:
        """The local file of `ref` (kind "module": .wasm, "graph": .yaml) from `registry`
        (a URL or an OCI layout directory); raises `ArtifactError` in one line."""
        repo, tag = split_ref(ref)
        source = _Layout(pathlib.Path(registry)) if "://" not in registry else _Registry(registry)
        where = f"{ref} from {registry}"
        remembered = self.root / "refs" / hashlib.sha256(f"{registry}\0{ref}".encode()).hexdigest()
        try:
            manifest = source.manifest(repo, tag, where)
            remembered.parent.mkdir(parents=True, exist_ok=True)
            _write_atomic(remembered, json.dumps(manifest).encode())
        except ArtifactError as e:
            if not isinstance(e.__cause__, OSError) or not remembered.is_file():
                raise
            manifest = json.loads(remembered.read_text())
            self.progress(f"{registry} unreachable; using the {ref} pulled before")
        layer = _layer(manifest, kind, where)
        digest, size = layer["digest"], layer.get("size")
        if type(size) is not int or not 0 <= size <= self.max_bytes:  # (a bool is an int to isinstance)
            raise ArtifactError(f"{where}: the {kind} layer is {size!r} bytes; at most {self.max_bytes} are taken")
        path = self.root / "blobs" / (digest.partition(":")[2] + (".wasm" if kind == "module" else ".yaml"))
        if path.is_file() and path.stat().st_size == size:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pull-")
        try:
            with os.fdopen(fd, "wb") as out:
                h, got = hashlib.sha256(), 0
                for chunk in source.blob(repo, digest, where):
                    got += len(chunk)
                    if got > size:
                        raise ArtifactError(f"{where}: blob {digest} is larger than the {size} bytes its manifest "
                                            "says; refusing it")
                    h.update(chunk)
                    out.write(chunk)
                    if size >= _PROGRESS_EVERY and got % _PROGRESS_EVERY < len(chunk):
                        self.progress(f"pulling {ref}: {got >> 20} of {size >> 20} MiB")
                if got != size or "sha256:" + h.hexdigest() != digest:
                    raise ArtifactError(f"{where}: the blob served for {digest} does not match its digest "
                                        f"(sha256:{h.hexdigest()[:16]}..., {got} bytes); refusing it")
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        return path


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _layer(manifest: dict, kind: str, where: str) -> dict:
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list):
        raise ArtifactError(f"{where}: the manifest lists no layers")
    if kind == "graph":
        config = _field(manifest, "config").get("mediaType")
        wanted = GRAPH_LAYER
        if config != GRAPH_CONFIG:
            raise ArtifactError(f"{where}: not a graph artifact (config {config!r}, expected {GRAPH_CONFIG})")
    else:
        wanted = WASM_LAYER
    found = [x for x in layers if isinstance(x, dict) and x.get("mediaType") == wanted]
    if len(found) != 1:
        raise ArtifactError(f"{where}: expected one {wanted} layer, the manifest has {len(found)}")
    if not isinstance(found[0].get("digest"), str) or not _DIGEST.match(found[0]["digest"]):
        raise ArtifactError(f"{where}: the layer's digest {found[0].get('digest')!r} is not sha256:HEX")
    return found[0]


def _object(value) -> dict:
    """`value` where it is a JSON object, else an empty one: an artifact's JSON is anyone's."""
    return value if isinstance(value, dict) else {}


def _field(document: dict, key: str) -> dict:
    return _object(document.get(key))


def _parse_manifest(data: bytes, where: str) -> dict:
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError) as e:  # RecursionError: nested past Python's stack
        raise ArtifactError(f"{where}: the manifest is not JSON: {e}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{where}: the manifest is not a JSON object")
    return manifest


class _Registry:
    """The OCI distribution API, anonymous pulls."""

    def __init__(self, url: str):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ArtifactError(f"--registry {url}: expected http(s)://HOST[:PORT] or a directory")
        if u.scheme == "http" and not _loopback(u.hostname):
            raise ArtifactError(f"--registry {url}: plain HTTP is only for loopback registries; use https://")
        self.base = f"{u.scheme}://{u.netloc}"
        self.prefix = u.path.strip("/")

    def _open(self, path: str, accept: str, where: str):
        repo_path = f"{self.prefix}/{path}" if self.prefix else path
        request = urllib.request.Request(f"{self.base}/v2/{repo_path}", headers={"Accept": accept})
        try:
            return urllib.request.urlopen(request, timeout=_TIMEOUT)
        except urllib.error.HTTPError as e:
            hint = {401: "the registry wants credentials (wasinn pulls anonymously)", 404: "not found"}.get(e.code, "")
            raise ArtifactError(f"{where}: the registry answered {e.code} {e.reason}" + (f": {hint}" if hint else "")) \
                from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ArtifactError(f"{where}: cannot reach the registry: {reason}") from OSError(str(reason))

    def manifest(self, repo: str, tag: str, where: str) -> dict:
        with self._open(f"{repo}/manifests/{tag}", ", ".join(_MANIFESTS), where) as r, _reading(where, "manifest"):
            data = r.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise ArtifactError(f"{where}: the manifest is over {MAX_MANIFEST_BYTES} bytes; refusing it")
        if tag.startswith("sha256:") and "sha256:" + hashlib.sha256(data).hexdigest() != tag:
            raise ArtifactError(f"{where}: the manifest served does not match its digest; refusing it")
        return _parse_manifest(data, where)

    def blob(self, repo: str, digest: str, where: str):
        with self._open(f"{repo}/blobs/{digest}", "*/*", where) as r, _reading(where, digest):
            while chunk := r.read(_CHUNK):
                yield chunk


@contextlib.contextmanager
def _reading(where: str, what: str):
    """A registry that breaks off what it sends (a reset, a stall past the timeout, a
    chunked body cut short) is a one-line refusal, not the read's traceback."""
    try:
        yield
    except (OSError, http.client.HTTPException) as e:
        raise ArtifactError(f"{where}: the registry broke off sending the {what}: "
                            f"{type(e).__name__}: {e}") from OSError(str(e))


class _Layout:
    """An OCI image layout directory: index.json names manifests by the annotation
    org.opencontainers.image.ref.name (the tag, or REPO:TAG)."""

    def __init__(self, root: pathlib.Path):
        if not (root / "index.json").is_file():
            raise ArtifactError(f"--registry {root}: not an OCI image layout (no index.json) nor an http(s) URL")
        self.root = root

    def _read(self, path: pathlib.Path, limit: int, where: str) -> bytes:
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except OSError as e:
            raise ArtifactError(f"{where}: cannot read {path}: {e.strerror}") from None
        if len(data) > limit:
            raise ArtifactError(f"{where}: {path} is over {limit} bytes; refusing it")
        return data

    def manifest(self, repo: str, tag: str, where: str) -> dict:
        index = _parse_manifest(self._read(self.root / "index.json", MAX_MANIFEST_BYTES, where), where)
        digest = tag if tag.startswith("sha256:") else None
        manifests = index.get("manifests")
        for m in map(_object, manifests if isinstance(manifests, list) else ()):
            name = _field(m, "annotations").get("org.opencontainers.image.ref.name")
            if digest is None and name in (tag, f"{repo}:{tag}"):
                digest = m.get("digest")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ArtifactError(f"{where}: the layout's index.json names no manifest {tag!r}")
        data = self._read(self._blob_path(digest), MAX_MANIFEST_BYTES, where)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactError(f"{where}: manifest {digest} does not match its digest; refusing it")
        return _parse_manifest(data, where)

    def _blob_path(self, digest: str) -> pathlib.Path:
        return self.root / "blobs" / "sha256" / digest.partition(":")[2]

    def blob(self, repo: str, digest: str, where: str):
        try:
            with open(self._blob_path(digest), "rb") as f:
                while chunk := f.read(_CHUNK):
                    yield chunk
        except OSError as e:
            raise ArtifactError(f"{where}: cannot read blob {digest}: {e.strerror}") from None

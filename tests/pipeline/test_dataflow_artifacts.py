"""Operators and graphs pulled by reference: from a real registry (Debian's docker-registry on
loopback, artifacts pushed with the oras SDK) and from an OCI image layout directory; digests
checked; cached. (~3 s.)"""
from __future__ import annotations

import hashlib
import json
import pathlib

import pytest

from support.oci_registry import GRAPH_CONFIG, WASM_LAYER, Registry
from wasinn.pipeline import graphdef
from wasinn.pipeline.artifacts import ArtifactError, ArtifactStore, split_ref

ROOT = pathlib.Path(__file__).resolve().parents[2]
AZURE = ROOT / "tests" / "data" / "azure"
TEMPERATURE = "azure-samples/explore-iot-operations/temperature:1.0.0"


@pytest.fixture(scope="module")
def registry():
    with Registry() as reg:
        yield reg


def test_refs():
    assert split_ref(TEMPERATURE) == ("azure-samples/explore-iot-operations/temperature", "1.0.0")
    assert split_ref("otel-enrich") == ("otel-enrich", "latest")
    with pytest.raises(ArtifactError, match="not an artifact reference"):
        split_ref("Bad Ref")


def test_pull_a_module_and_a_graph_from_a_registry(registry, tmp_path):
    wasm = tmp_path / "temperature.wasm"
    wasm.write_bytes(b"\0asm\x0d\0\x01\0" + bytes(range(256)) * 64)
    registry.push_module(TEMPERATURE, wasm)
    registry.push_graph("graph-simple:1.0.0", AZURE / "graph-simple.yaml")
    seen = []
    store = ArtifactStore(tmp_path / "cache", progress=seen.append)
    got = store.fetch(TEMPERATURE, registry.url, "module")
    assert got.read_bytes() == wasm.read_bytes() and got.suffix == ".wasm"
    graph = store.fetch("graph-simple:1.0.0", registry.url, "graph")
    assert graphdef.load_graph(graph).modules == [TEMPERATURE]
    # a graph reference is not a module, nor the other way round
    with pytest.raises(ArtifactError, match="not a graph artifact"):
        store.fetch(TEMPERATURE, registry.url, "graph")
    with pytest.raises(ArtifactError, match="expected one application/vnd.wasm.content.layer.v1\\+wasm layer"):
        store.fetch("graph-simple:1.0.0", registry.url, "module")
    with pytest.raises(ArtifactError, match="404"):
        store.fetch("nothing-here:1.0.0", registry.url, "module")


def test_a_blob_that_does_not_match_its_digest_is_refused(registry, tmp_path):
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(b"\0asm-original-bytes" * 100)
    registry.push_module("tampered:1.0.0", wasm)
    digest = hashlib.sha256(wasm.read_bytes()).hexdigest()
    (stored,) = (registry.root / "data").rglob(f"blobs/sha256/{digest[:2]}/{digest}/data")
    stored.write_bytes(b"\0asm-tampered!-bytes" * 95)  # what the registry now serves under that digest
    store = ArtifactStore(tmp_path / "cache")
    with pytest.raises(ArtifactError, match="does not match its digest .*; refusing it") as e:
        store.fetch("tampered:1.0.0", registry.url, "module")
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "cache" / "artifacts" / "blobs").glob("*.wasm"))


def test_a_layer_over_the_size_limit_is_refused_before_it_is_pulled(registry, tmp_path):
    wasm = tmp_path / "big.wasm"
    wasm.write_bytes(b"\0" * 5000)
    registry.push_module("big:1.0.0", wasm)
    with pytest.raises(ArtifactError, match="at most 4096 are taken"):
        ArtifactStore(tmp_path / "cache", max_bytes=4096).fetch("big:1.0.0", registry.url, "module")


def test_plain_http_only_to_loopback(tmp_path):
    with pytest.raises(ArtifactError, match="plain HTTP is only for loopback"):
        ArtifactStore(tmp_path).fetch(TEMPERATURE, "http://registry.example.com", "module")


def _layout(root: pathlib.Path, ref_name: str, blob: bytes, media_type: str, config_type: str) -> None:
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict:
        d = hashlib.sha256(data).hexdigest()
        (blobs / d).write_bytes(data)
        return {"digest": f"sha256:{d}", "size": len(data)}

    config = put(b"{}")
    layer = put(blob)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {**config, "mediaType": config_type},
                           "layers": [{**layer, "mediaType": media_type}]}).encode()
    m = put(manifest)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {**m, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "annotations": {"org.opencontainers.image.ref.name": ref_name}}]}))


def test_pull_from_an_oci_layout_directory(tmp_path):
    layout = tmp_path / "layout"
    _layout(layout, "1.0.0", b"\0asm-module", WASM_LAYER, "application/vnd.oci.empty.v1+json")
    store = ArtifactStore(tmp_path / "cache")
    assert store.fetch(TEMPERATURE, str(layout), "module").read_bytes() == b"\0asm-module"
    # tampered on disk: refused
    (blob,) = [p for p in (layout / "blobs" / "sha256").iterdir() if p.read_bytes() == b"\0asm-module"]
    blob.write_bytes(b"\0asm-modulX")
    with pytest.raises(ArtifactError, match="does not match its digest"):
        ArtifactStore(tmp_path / "cache2").fetch(TEMPERATURE, str(layout), "module")
    with pytest.raises(ArtifactError, match="names no manifest '2.0.0'"):
        store.fetch("temperature:2.0.0", str(layout), "module")


def test_a_graph_from_a_layout(tmp_path):
    layout = tmp_path / "layout"
    _layout(layout, "graph-simple:1.0.0", (AZURE / "graph-simple.yaml").read_bytes(), "application/yaml",
            GRAPH_CONFIG)
    path = ArtifactStore(tmp_path / "cache").fetch("graph-simple:1.0.0", str(layout), "graph")
    assert graphdef.load_graph(path).name == "Simple graph"


def test_a_manifest_nested_past_pythons_stack_is_not_json(tmp_path):
    """A registry (or a layout) is network input: JSON nested 100,000 deep raised
    RecursionError out of `wasinn serve`'s start."""
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text('{"manifests": ' + "[" * 100_000)
    with pytest.raises(ArtifactError, match="the manifest is not JSON"):
        ArtifactStore(tmp_path / "cache").fetch(TEMPERATURE, str(layout), "module")


@pytest.mark.parametrize("index, manifest", [
    ({"manifests": ["graph:1.0.0"]}, None),  # an entry that is not an object
    ({"manifests": {"graph:1.0.0": 1}}, None),
    ({"manifests": [{"annotations": "graph:1.0.0"}]}, None),
    (None, {"schemaVersion": 2, "config": "x", "layers": []}),  # a config that is not an object
])
def test_artifact_json_of_other_shapes_is_refused_in_one_line(tmp_path, index, manifest):
    """An artifact's JSON is anyone's: shapes other than OCI's raised AttributeError out
    of `wasinn serve`'s start, a traceback instead of one line."""
    layout = tmp_path / "layout"
    if index is None:
        _layout(layout, "graph:1.0.0", b"x", "application/yaml", GRAPH_CONFIG)
        data = json.dumps(manifest).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest.partition(":")[2]).write_bytes(data)
        index = {"manifests": [{"digest": digest, "annotations": {"org.opencontainers.image.ref.name": "graph:1.0.0"}}]}
    else:
        layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(ArtifactError):
        ArtifactStore(tmp_path / "cache").fetch("graph:1.0.0", str(layout), "graph")


@pytest.mark.parametrize("how", ["cut-chunked", "reset"])
def test_a_registry_that_breaks_off_a_blob_is_refused_in_one_line(tmp_path, how):
    """A hostile registry (a loopback one: plain HTTP) that cuts a blob short: the read's
    error was a traceback out of `wasinn serve` (IncompleteRead, ConnectionResetError);
    now one line, and nothing of the blob is left in the cache."""
    import http.server
    import socket
    import threading

    blob = b"\0asm\x01\0\0\0" + b"x" * (1 << 20)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest, "size": 2},
                           "layers": [{"mediaType": WASM_LAYER, "digest": digest, "size": len(blob)}]}).encode()

    class Hostile(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            if "/manifests/" in self.path:
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                self.send_header("Content-Length", str(len(manifest)))
                self.end_headers()
                self.wfile.write(manifest)
                return
            self.send_response(200)
            if how == "cut-chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n" % 100 + blob[:50])
            else:
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob[:1 << 19])
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            self.wfile.flush()
            self.connection.close()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ArtifactError, match=f"the registry broke off sending the {digest}: ") as e:
            ArtifactStore(tmp_path / "cache").fetch("evil:1.0.0", f"http://127.0.0.1:{server.server_address[1]}",
                                                    "module")
        assert "\n" not in str(e.value)
        assert not list((tmp_path / "cache" / "artifacts" / "blobs").glob("*"))
    finally:
        server.shutdown()

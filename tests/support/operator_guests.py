"""The data-flow operators the suite builds from source (guest/), once per content."""
from __future__ import annotations

import io
import pathlib

import pytest

import wasinn
from wasinn import build
from wasinn.pipeline.jsonlog import EventLog
from wasinn.pipeline.operator import Services

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "tests"
# guest name -> the world it is built against
WORLDS = {"temperature": "wasinn:guest/operator-set", "operator-probe": "wasinn:guest/operator-probe"}


@pytest.fixture(scope="module")
def host():
    """The operator tests' host (a test module imports this fixture by name)."""
    return wasinn.Host(cache_dir=CACHE)


@pytest.fixture(scope="module")
def services():
    """Embedded services for a test module's operators, their log kept off the output."""
    s = Services.embedded(log=EventLog(stream=io.StringIO()))
    yield s
    s.close()


def operator_wasm(name: str) -> pathlib.Path:
    """guest/<name>, built as a standard component (no wasinn-only imports), cached."""
    return build.build_cached(build.guest_files(ROOT / "guest" / name), name=name, world=WORLDS[name],
                              cache_dir=CACHE, fastpath=False, progress=print)


def snapshot_wasm() -> pathlib.Path:
    """guest/snapshot with the labels and the composed EfficientNet-Lite0 built in."""
    from wasinn.apps.classify import composed_model
    files = {**build.guest_files(ROOT / "guest" / "snapshot"),
             "labels.txt": ROOT / "models" / "efficientnet-lite0" / "labels.txt",
             "model.onnx": composed_model(CACHE, print)}
    return build.build_cached(files, name="snapshot", world="wasinn:guest/snapshot-operator", cache_dir=CACHE,
                              fastpath=False, progress=print)


def js_operator_wasm() -> pathlib.Path:
    """guest/js-operator, built with componentize-js against Azure's map-impl world."""
    from support import guest_builds
    return guest_builds.js_component(ROOT / "guest" / "js-operator" / "app.js", name="js-operator",
                                     world="wasm-graph:processor/map-impl")

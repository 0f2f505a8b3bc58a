"""Compiled components come back from the disk cache, never stale."""
from __future__ import annotations

import shutil

import wasinn

from conftest import guest_component


def compiles(host: wasinn.Host, path) -> int:
    """How many compilations loading `path` took (0: from the cache)."""
    seen = []
    host.progress = lambda message: seen.append(message)
    host.load_component(path)
    return sum(m.startswith("compiling") for m in seen)


def test_second_load_comes_from_the_cache_and_a_changed_file_is_recompiled(tmp_path):
    app = tmp_path / "app.wasm"
    shutil.copy(guest_component("nn-cli"), app)
    host = wasinn.Host(cache_dir=tmp_path / "cache")
    assert compiles(host, app) == 1
    assert compiles(wasinn.Host(cache_dir=tmp_path / "cache"), app) == 0  # a new process, in effect
    shutil.copy(guest_component("roundtrip"), app)  # same path, other component
    fresh = wasinn.Host(cache_dir=tmp_path / "cache")
    component = fresh.load_component(app)
    assert any("roundtrip" in name for name in component.type.exports(fresh.engine_of(component)))
    shutil.copy(guest_component("nn-cli"), app)  # back: its entry is still there, by content
    assert compiles(wasinn.Host(cache_dir=tmp_path / "cache"), app) == 0


def test_a_corrupt_entry_is_rebuilt(tmp_path):
    app = tmp_path / "app.wasm"
    shutil.copy(guest_component("nn-cli"), app)
    wasinn.Host(cache_dir=tmp_path / "cache").load_component(app)
    for entry in (tmp_path / "cache" / "compiled").glob("*.cwasm"):
        entry.write_bytes(b"not a compiled component")
    assert compiles(wasinn.Host(cache_dir=tmp_path / "cache"), app) == 1
    assert compiles(wasinn.Host(cache_dir=tmp_path / "cache"), app) == 0


def test_an_entry_left_on_the_other_engine_is_not_taken(tmp_path):
    """A component whose imports choose host memories never comes back from the
    copy-on-write engine's cache, even with an entry there for its bytes (as an older
    wasinn, which chose differently, would have left)."""
    from wasmtime.component import Component  # the other engine compiles it, as a stray entry was
    app = tmp_path / "app.wasm"
    shutil.copy(guest_component("nn-cli"), app)
    chosen = wasinn.Host(cache_dir=tmp_path / "cache").load_component(app).wasinn_engine
    assert chosen.bulk
    host = wasinn.Host(cache_dir=tmp_path / "cache")
    [other] = [e for e in host._engines if not e.bulk]
    other.cache.load(app.read_bytes(), lambda wasm: Component(other.engine, wasm))
    assert host.load_component(app).wasinn_engine.bulk
    assert wasinn.Host(cache_dir=tmp_path / "cache").load_component(app).wasinn_engine.bulk

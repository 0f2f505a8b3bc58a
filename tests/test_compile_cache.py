"""Compiled components come back from the disk cache, never stale. The cache's own
behaviour is tried on a tiny component in WAT (support/tiny_component.py)."""
from __future__ import annotations

import pathlib
import shutil

import pytest

import wasinn
from wasinn.embedding.records import record
from wasinn.limits import Limits

from support.internals import compiled_entry
from support.tiny_component import FIRST_BYTE, tiny_component

ADDER = pathlib.Path(__file__).resolve().parent.parent / "models" / "adder" / "model.onnx"


def compiles(host: wasinn.Host, path) -> int:
    """How many compilations loading `path` took (0: from the cache)."""
    seen = []
    host.progress = lambda message: seen.append(message)
    host.load_component(path)
    return sum(m.startswith("compiling") for m in seen)


def test_second_load_comes_from_the_cache_and_a_changed_file_is_recompiled(tmp_path):
    app = tmp_path / "app.wasm"
    app.write_bytes(tiny_component("first"))
    host = wasinn.Host(cache_dir=tmp_path / "cache")
    assert compiles(host, app) == 1
    assert compiles(wasinn.Host(cache_dir=tmp_path / "cache"), app) == 0  # a new process, in effect
    app.write_bytes(tiny_component("second"))  # same path, other component
    fresh = wasinn.Host(cache_dir=tmp_path / "cache")
    assert compiles(fresh, app) == 1
    with fresh.instantiate(fresh.load_component(app)) as inst:
        assert inst.call("second") == FIRST_BYTE
    app.write_bytes(tiny_component("first"))  # back: its entry is still there, by content
    assert compiles(wasinn.Host(cache_dir=tmp_path / "cache"), app) == 0


def test_a_corrupt_entry_is_rebuilt(tmp_path):
    app = tmp_path / "app.wasm"
    app.write_bytes(tiny_component("first"))
    wasinn.Host(cache_dir=tmp_path / "cache").load_component(app)
    for entry in (tmp_path / "cache" / "compiled").glob("*.cwasm"):
        entry.write_bytes(b"not a compiled component")
    host = wasinn.Host(cache_dir=tmp_path / "cache")
    assert compiles(host, app) == 1
    with host.instantiate(host.load_component(app)) as inst:
        assert inst.call("first") == FIRST_BYTE
    assert compiles(wasinn.Host(cache_dir=tmp_path / "cache"), app) == 0


def test_no_entry_is_written_without_its_memory_images(tmp_path):
    """A component on host memories cannot run from an entry whose image file is missing:
    where the image file cannot be written, neither is the entry (a disk's worth of
    entries that are never taken), and the component still runs."""
    app = tmp_path / "app.wasm"
    app.write_bytes(tiny_component("first"))
    host = wasinn.Host(cache_dir=tmp_path / "cache")
    engine = host._engine
    compiled = tmp_path / "cache" / "compiled"
    compiled.mkdir(parents=True)
    entry = compiled_entry(engine.cache, app.read_bytes())
    entry.with_suffix(".images").mkdir()  # a directory where the image file goes: the write fails
    component = host.load_component(app)
    assert record(component).images is not None
    assert not entry.exists()
    with host.instantiate(component) as inst:
        assert inst.call("first") == FIRST_BYTE


def test_a_load_that_finds_the_same_component_being_compiled_waits_for_its_entry(tmp_path):
    """Two processes (here two hosts in two threads: the lock is the kernel's, per open
    file) loading a new component at once compile it once: the second says it waits,
    then takes the first one's entry. Two test processes had each compiled every guest."""
    import threading
    import time

    from wasinn.files import making

    from support.operator_guests import hostile_operator_wasm
    app = tmp_path / "app.wasm"
    shutil.copy(hostile_operator_wasm(), app)
    waiter = wasinn.Host(cache_dir=tmp_path / "cache")
    entry = compiled_entry(waiter._engine.cache, app.read_bytes())
    seen: list[str] = []
    waiter.progress = seen.append
    with making(entry):  # the first process, compiling
        loading = threading.Thread(target=waiter.load_component, args=(app,))
        loading.start()
        deadline = time.monotonic() + 60
        while not any(m.startswith("waiting for another process compiling app.wasm") for m in seen):
            assert time.monotonic() < deadline and loading.is_alive(), seen
            time.sleep(0.01)
        # what the first process writes: the same engine's entry, made under another cache
        wasinn.Host(cache_dir=tmp_path / "elsewhere").load_component(app)
        made = compiled_entry(waiter._engine.cache, app.read_bytes()).name
        for part in (tmp_path / "elsewhere" / "compiled").glob(made.removesuffix(".cwasm") + ".*"):
            shutil.copy(part, entry.parent / part.name)
    loading.join(60)
    assert not loading.is_alive()
    assert not any(m.startswith("compiling") for m in seen), seen



def test_a_load_waits_for_another_process_no_longer_than_its_own_compile_timeout(tmp_path):
    """A process stopped mid-compile (Ctrl-Z) or hung keeps its lock: a load waits for it
    no longer than it would let its own compile take (compile-timeout), then compiles."""
    import time

    from wasinn.files import making
    from wasinn.limits import Limits

    from support.operator_guests import hostile_operator_wasm
    app = tmp_path / "app.wasm"
    shutil.copy(hostile_operator_wasm(), app)
    host = wasinn.Host(cache_dir=tmp_path / "cache", limits=Limits(compile_timeout=3))
    seen: list[str] = []
    host.progress = seen.append
    with making(compiled_entry(host._engine.cache, app.read_bytes())):  # held, never finished
        started = time.monotonic()
        host.load_component(app)
        waited = time.monotonic() - started
    assert any(m.startswith("waiting for another process compiling app.wasm (at most 3 s)...") for m in seen), seen
    assert any(m.startswith("compiling app.wasm") for m in seen) and waited >= 3


def test_a_guest_may_not_be_given_the_cache_to_write_to(tmp_path):
    """The host runs the native code of the cache's entries (wasmtime trusts what it
    deserializes): a guest given a directory holding the cache, to write to, had planted
    its own code in another component's entry, which that component's next run ran, and
    had killed the host by truncating an entry it had mapped (SIGBUS). Such a directory,
    or one inside the cache, is refused; read-only, or apart from the cache, it is given."""
    app = tmp_path / "app.wasm"
    app.write_bytes(tiny_component("first"))
    (tmp_path / "cache" / "compiled").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    host = wasinn.Host(cache_dir=tmp_path / "cache")
    component = host.load_component(app)
    (tmp_path / "data" / "link").symlink_to(tmp_path / "cache")  # a link to it leads there too
    for given in (tmp_path, tmp_path / "cache", tmp_path / "cache" / "compiled", tmp_path / "data" / "link"):
        with pytest.raises(wasinn.WasinnError, match=rf"^--dir {given}: the guest could write to the compile cache "
                                                     rf"\({tmp_path / 'cache'}\), whose compiled code the host runs"):
            host.instantiate(component, dirs=[(str(given), "/c")]).call("first")
    for dirs in ([(str(tmp_path), "/c", True)], [(str(tmp_path / "data"), "/c")]):
        with host.instantiate(component, dirs=dirs) as inst:
            assert inst.call("first") == FIRST_BYTE


def test_a_guest_may_not_be_given_a_registered_models_file_the_host_reads_later(tmp_path):
    """A registered model is the operator's, and loaded as such (in process by default).
    Where the host reads its file after the guest starts (`--lazy-models`, `--isolate
    all`, a library Host that did not preload it), a guest given its directory to write
    to had replaced it with a TFLite model that crashes LiteRT (the host died, SIGSEGV),
    or with a link out of its directory, to /dev/zero (the host read until it ran out of
    memory) or to another model on the host (loaded and computed). Such a directory,
    holding the model's file, the link it is registered through or that link's target, is
    refused; read-only, apart from it, or once the model is loaded at start (what peers'
    `--dir .:.` command lines beside a preloaded model need), it is given. So is one that
    holds the external-data directory."""
    app = tmp_path / "app.wasm"
    app.write_bytes(tiny_component("first"))
    models, elsewhere, data = tmp_path / "models", tmp_path / "elsewhere", tmp_path / "data"
    for d in (models, elsewhere, data):
        d.mkdir()
    (models / "model.onnx").write_bytes(ADDER.read_bytes())
    (elsewhere / "real.onnx").write_bytes(ADDER.read_bytes())
    (data / "linked.onnx").symlink_to(elsewhere / "real.onnx")
    host = wasinn.Host(cache_dir=False)
    host.models.register("m", models / "model.onnx")
    host.models.register("linked", data / "linked.onnx")
    component = host.load_component(app)
    for given, name, path in ((models, "m", models / "model.onnx"), (tmp_path, "m", models / "model.onnx"),
                              (data, "linked", data / "linked.onnx"), (elsewhere, "linked", data / "linked.onnx")):
        with pytest.raises(wasinn.WasinnError, match=rf"^--dir {given}: the guest could replace the file of the "
                                                     rf"registered model '{name}' \({path}\), which the host reads "
                                                     "after the guest starts"):
            host.instantiate(component, dirs=[(str(given), "/m")]).call("first")
    (tmp_path / "apart").mkdir()
    for dirs in ([(str(models), "/m", True), (str(data), "/d", True)], [(str(tmp_path / "apart"), "/a")]):
        with host.instantiate(component, dirs=dirs) as inst:
            assert inst.call("first") == FIRST_BYTE
    host.preload_models()()  # loaded at start, in process: never read again
    with host.instantiate(component, dirs=[(str(tmp_path), "/t")]) as inst:
        assert inst.call("first") == FIRST_BYTE
    isolated = wasinn.Host(cache_dir=False, limits=Limits(isolate="all"))
    isolated.models.register("m", models / "model.onnx")
    isolated.preload_models()()  # checked at start; each instance loads it in its own worker, later
    with pytest.raises(wasinn.WasinnError, match=rf"^--dir {models}: the guest could replace the file"):
        isolated.instantiate(isolated.load_component(app), dirs=[(str(models), "/m")]).call("first")
    external = wasinn.Host(cache_dir=False, limits=Limits(external_data_dir=data.resolve()))
    with pytest.raises(wasinn.WasinnError, match=rf"^--dir {tmp_path}: the guest could write to the external-data "
                                                 rf"directory \({data}\), whose files the host's ONNX parser reads"):
        external.instantiate(external.load_component(app), dirs=[(str(tmp_path), "/t")]).call("first")

"""The component host: engine, linker with WASI and wasi:nn, compile cache, instances.

    from wasinn import Host
    host = Host()
    host.models.register("mobilenet", "model.onnx")
    inst = host.instantiate(host.load_component("app.wasm"))
    out = inst.call("classify", image)      # numpy arrays become tensor handles

An `Instance` that traps is torn down (its store dropped, its wasi:nn resources
freed) and the call raises `GuestTrap`; the next call runs on a fresh instance.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import pathlib
import sys
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Mapping, Sequence

import wasmtime
from wasmtime import Engine, ExitTrap, Store, WasiConfig, WasmtimeError
from wasmtime.component import BorrowType, Component, Linker, ResourceAny, ResourceHost, ResourceType, Variant

from .abi import values
from ._bindings import (RESOURCE_WIT_NAMES, WASI_CLI_RUN, Resource, add_wasinn_adapter_to_linker,
                        add_wasinn_fastpath_to_linker, add_wasinn_introspect_to_linker)
from .backends import default_backends
from . import collector, compiler
from .compile_cache import WASMTIME_VERSION, CompileCache, waiting_for
from .deadlines import EPOCH_SECONDS, EpochTicker, PastDeadline, start_watchdog, stop_at
from .embedding import calls, patches, types
from .embedding import errors as wasmtime_errors
from .embedding.calls import CoreExport
from .embedding.errors import one_line
from .embedding.records import record
from .errors import BadValue, GuestTrap, NnError, WasinnError
from .abi import adapter, binary, clocks, images, nn_versions, rewrite, streams
from .modules import CoreModules
from .abi.bulk import Bulk
from .abi.witx import MODULES as WITX_MODULES
from .abi.memory import HostMemories, MemoryBudget, OutOfBounds
from .limits import Limits
from .abi.introspect import Introspect
from .nn import NN_RESOURCES, WasiNn, store_key
from .registry import ModelRegistry
from .tensors import HostTensor

# Fuel for instantiating a component when fuel is counted (its deadline still applies).
_INSTANTIATION_FUEL = 1 << 40
Progress = Callable[[str], None]


def default_cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "wasinn"


def stderr_progress(message: str) -> None:
    print(f"wasinn: {message}", file=sys.stderr, flush=True)


# Imports and exports of a .wasm's components together (each component: types.MAX_ITEMS
# of each): wasmtime holds ~1.4 KB of each while it validates them, before any limit.
_MAX_ALL_EXTERNS = 4 * types.MAX_ITEMS


class _Engine:
    """The wasmtime engine for components, with its linker and compile cache.

    Every guest memory is one the host allocates (abi/memory.py): the data path copies
    in and out of it, and the memory limit counts all of an instance's memories
    together, which wasmtime's own limit (per memory) cannot. That rules out wasmtime's
    copy-on-write memory images; the compile step takes the images out of the component
    (abi/images.py) and the host maps them copy-on-write itself.
    """

    def __init__(self, host: "Host"):
        config = compiler.config(fuel=host.limits.fuel > 0)
        host.memories.install(config)
        self.engine = Engine(config)
        EpochTicker.watch(self.engine)
        self.linker = Linker(self.engine)
        self.linker.add_wasip2()
        with self.linker.root() as root:
            nn_versions.add_to_linker(root, host.nn)
            add_wasinn_fastpath_to_linker(root, Bulk(host.nn, host.memories))
            add_wasinn_adapter_to_linker(root, adapter.AdapterHost(host.nn, host.memories))
            add_wasinn_introspect_to_linker(root, Introspect(host.nn))
        # a guest's WASI sleeps end at its call's deadline (abi/clocks.py)
        self.clocks = clocks.DeadlineClocks(self.engine, self.linker, host.nn.call_deadline,
                                            lambda store: host.nn.session(store).clock_helper)
        settings = (f"hostmem-images{images.digest()}-adapter{rewrite.adapter_digest()}"
                    f"-epoch{'-fuel' if host.limits.fuel else ''}")
        self.cache = None if host.cache_dir is None else CompileCache(
            host.cache_dir / "compiled", self.engine, f"wasmtime{WASMTIME_VERSION}-{settings}", sidecar=".images")


class Host:
    """wasmtime engines and linkers serving WASI and wasi:nn, plus the named models.

    Args:
        cache_dir: where compiled components are kept (None: `$XDG_CACHE_HOME/wasinn`;
            False: no disk cache).
        limits: what each instance may use (see limits.py); `Limits()` by default.
        ort_threads: intra-op threads per graph, in every backend (0: the backend's choice).
        inference_precision: "f32" (float32 models computed in float32), "auto" (the
            backend's choice: OpenVINO's CPU plugin runs bfloat16 where the CPU has it),
            "bf16" or "f16"; backends without a choice run each model in its own precision.
        backends: which backend serves an encoding, where not the default, e.g.
            `{"onnx": "openvino"}` (see `wasinn.backends.KINDS`; extras must be installed).
        progress: called with a line of text during long work (compiling).
        overdue: called (from the deadline watchdog thread, with a line saying which call)
            when a call is still running OVERDUE_GRACE seconds past its deadline: it is
            blocked in native code that no deadline interrupts (one long node of a model
            run in process; a WASI read of an inherited terminal), and nothing in this
            process can end it (WASI sleeps end at the deadline: abi/clocks.py). A process that serves guests it does not trust ends
            itself there (`wasinn run` and the other commands, `wasinn serve`'s workers);
            None: the call returns when the host function does, its deadline trap then.
        unknown_imports: what stands in for a guest's imports that nothing here defines
            (WASI and wasi:nn stay served): None, refused (default); "trap", a function
            that traps when called (wasmtime's `-W unknown-imports-trap=y`); "default", for
            core modules only, one that returns zeros (`-W unknown-imports-default=y`).
    """

    def __init__(self, *, cache_dir: str | os.PathLike | None | bool = None,
                 limits: Limits | None = None, ort_threads: int = 0, inference_precision: str = "f32",
                 backends: Mapping[str, str] | None = None, progress: Progress | None = None,
                 unknown_imports: str | None = None, overdue: Callable[[str], None] | None = None):
        if unknown_imports not in UNKNOWN_IMPORTS:
            raise BadValue(f"unknown_imports: {unknown_imports!r} is none of {', '.join(map(repr, UNKNOWN_IMPORTS))}")
        self.unknown_imports = unknown_imports
        self.overdue = overdue
        patches.install()
        self.limits = limits or Limits()
        self.progress = progress or (lambda message: None)
        self.cache_dir = None if cache_dir is False else pathlib.Path(cache_dir or default_cache_dir())
        self.memories = HostMemories()  # must outlive the engines: it serves their callbacks
        self.models = ModelRegistry()
        self.nn = WasiNn(default_backends(ort_threads, backends, self.limits.max_backend_memory,
                                          inference_precision),
                         self.models, self.limits)
        if (forkserver := sys.modules.get(f"{__package__}.forkserver")) is not None:
            forkserver.settle(self.nn.isolation.applies(guest=True))  # a start at `wasinn.Host`'s lookup
        self._engine = _Engine(self)
        self._tensor_type = ResourceType.host(Resource.TENSOR)
        self.core_modules = CoreModules(self)
        self._served: set[str] = set()
        self._serve_lock = threading.Lock()
        self._fork_server_started = False  # see _start_fork_server

    def serve(self, key: str, define: Callable[[Any], None]) -> None:
        """Adds host interfaces beyond WASI and wasi:nn (pipeline/services: the data-flow
        operators' imports) to the linker of every instance of this host: `define(root)`
        runs once per `key`."""
        with self._serve_lock:
            if key not in self._served:
                with self._engine.linker.root() as root:
                    define(root)
                self._served.add(key)

    def preload_models(self) -> Callable[[], None]:
        """Starts loading the registered models now, in the background (see
        ModelRegistry.preload); call what it returns to wait for them. Under `--isolate
        all` that only checks them: each instance loads them in its own worker."""
        if self.models.names() and self.limits.deadline:  # their first inference arms one: see start_watchdog
            start_watchdog()
        wait = self.models.preload(self.nn.load_graph, self.nn.load_file)
        if not self.nn.isolation.applies(guest=False):
            return wait

        def checked() -> None:
            # under `--isolate all` each instance loads them in its own worker: these loads
            # only check them at start, and they and their worker go
            try:
                wait()
            finally:
                self.models.unload()
                self.nn.isolation.close_shared()
        return checked

    @staticmethod
    def engine_of(component: Component) -> Engine:
        """The engine `component` was compiled for (for wasmtime-py's type queries)."""
        return record(component).engine.engine

    # --- components --------------------------------------------------------------
    def load_component(self, source: str | os.PathLike | bytes) -> Component:
        """Compiles a component, or loads its compiled form from the disk cache
        (see compile_cache.py: never stale, a stat when the file is known)."""
        path = None if isinstance(source, (bytes, bytearray)) else pathlib.Path(source)
        engine = self._engine
        if path is not None:
            component = engine.cache.lookup(path) if engine.cache else None
            if component is not None and self._open_images(engine, component):
                engine.clocks.cover(component)
                return component
        if path is None:
            wasm, label = bytes(source), "component"
        else:
            try:
                wasm = path.read_bytes()
            except OSError as e:
                raise WasinnError(f"cannot read component {path}: {e.strerror}") from None
            label = path.name
        binary.check_file(wasm, label)
        if wasm[:8] == binary.CORE_PREAMBLE:  # a preview1 program on wasi-nn's WITX ABI
            return self.core_modules.load(wasm, path, label)
        compile_ = lambda data: self._compile(engine, data, label)  # noqa: E731
        waiting, patience = waiting_for(label, self.limits.compile_timeout, self.progress)
        component = engine.cache.load(wasm, compile_, path, waiting, patience) if engine.cache else compile_(wasm)
        if not self._open_images(engine, component):  # its images were unreadable, and are gone now
            component = engine.cache.load(wasm, compile_, path, waiting, patience)
            self._open_images(engine, component)
        engine.clocks.cover(component)
        return component

    @staticmethod
    def _open_images(engine: "_Engine", component: Component) -> bool:
        """Gives a loaded component its engine and its memory images (abi/images.py);
        False, with the cache's image file removed, if that file is unreadable (the
        component, stripped of them, cannot run without)."""
        compiled = record(component)
        compiled.engine = engine
        compiled.funcs = {}  # Instance._func's
        try:
            compiled.images = images.MemoryImages.load(compiled.sidecar)
        except (OSError, ValueError):
            pathlib.Path(compiled.sidecar).unlink(missing_ok=True)
            return False
        return True

    def _compile(self, engine: _Engine, wasm: bytes, label: str) -> Component:
        start = time.perf_counter()
        try:
            tree = binary.components(wasm)  # every walk below may then trust its structure and depth
        except WasinnError as e:
            raise WasinnError(f"{label} is not a valid WebAssembly component: {e}") from None
        # before wasmtime validates them: 500,000 declared imports (5.4 MB) took it 9 s and 709 MB
        declared = [binary.declared_externs(nested) for nested in tree]
        for i, counts in enumerate(declared):
            for count, which in zip(counts, ("imports", "exports")):
                types.check_items(label if i == 0 else f"a component nested in {label}", count, which)
        if (total := sum(map(sum, declared))) > _MAX_ALL_EXTERNS:
            raise WasinnError(f"{label} declares {total} imports and exports in its components together; wasinn "
                              f"takes at most {_MAX_ALL_EXTERNS} (wasinn's limit: wasmtime holds ~1.4 KB of each while "
                              "it validates them)")
        binary.check_modules(wasm, label, tree)
        component = note = None
        if rewrite.needs_adapter(wasm):
            self.progress(f"adding wasinn's data-path adapter to {label}, once per component...")
            rewritten, why_not = rewrite.rewrite(wasm, label)
            if why_not and rewritten is wasm:
                self.progress(f"{label} keeps the standard lowering (per-byte, capped): {why_not}")
            else:
                if why_not:
                    self.progress(f"{label}: {why_not}")
                try:
                    component = self._compile_as_is(engine, rewritten, label)
                except compiler.Invalid as e:  # said once the original compiles: else its own error says it all
                    note = (f"{label} keeps the standard lowering (per-byte, capped): "
                            f"the rewritten component does not validate: {one_line(e)}")
                    if binary.holds(rewritten, rewrite.OWN_EXPORTS.encode()):  # its span results may not fit
                        component = self._without_span_results(engine, wasm, label, e)
        if component is None:
            try:
                component = self._compile_as_is(engine, wasm, label)
            except compiler.Invalid as e:
                raise WasinnError(f"{label} is not a valid WebAssembly component: {one_line(e)}") from None
            if note:
                self.progress(note)
        types.items(component.type, engine.engine, "exports", label)
        nn_versions.check_imports(types.items(component.type, engine.engine, "imports", label), label)
        self.progress(f"compiled {label} in {time.perf_counter() - start:.1f} s")
        return component

    def _without_span_results(self, engine, wasm: bytes, label: str, e: Exception) -> Component | None:
        """The rewrite without the operators' span results, which name the guest's types
        as Azure's WIT has them (one line says why), or None where that does not compile either."""
        rewritten, _ = rewrite.rewrite(wasm, label, results=False)
        try:
            component = self._compile_as_is(engine, rewritten, label)
        except compiler.Invalid:
            return None
        self.progress(f"{label}: its operator results keep the standard lift (per-value, capped): "
                      f"the span lift does not validate: {one_line(e)}")
        return component

    def _compile_as_is(self, engine: _Engine, wasm: bytes, label: str) -> Component:
        wasm, sidecar = images.strip(wasm)  # mapped, not copied, at instantiation
        self.progress(f"compiling {label} ({len(wasm) / 1e6:.1f} MB), once per component...")
        component = compiler.compile_confined(
            engine.engine, wasm, module=False, fuel=self.limits.fuel > 0, max_memory=self.limits.max_compile_memory,
            timeout=self.limits.compile_timeout, label=label)
        record(component).sidecar = sidecar
        return component

    def instantiate(self, component: Component, *, args: Sequence[str] = (),
                    dirs: Iterable[tuple[str, str]] = (), env: dict[str, str] | None = None,
                    program_name: str = "app") -> "Instance":
        """An instance of `component`. `args` and `env` are what the guest sees through
        WASI; `dirs` are (host path, guest path[, read-only]) preopens. Instantiation is
        lazy: the first call creates the store."""
        self._start_fork_server(component)
        if isinstance(component, wasmtime.Module):
            return ModuleInstance(self, component, [program_name, *args], list(dirs), dict(env or {}))
        if self.unknown_imports == "default":  # wasmtime's refusal, for wasmtime's reason
            raise WasinnError("unknown-imports-default cannot be used with components, as in wasmtime (a "
                              "component's functions return typed values, resources, lists: no zero stands in); "
                              "use -W unknown-imports-trap=y")
        return Instance(self, component, [program_name, *args], list(dirs), dict(env or {}))

    def _start_fork_server(self, component) -> None:
        """Starts the backend workers' fork server (forkserver.py), so that it is
        up by the time the guest loads its model, where a guest is likely to load one from
        its own bytes: it imports wasi:nn, the policy isolates guest models, and the
        operator registered no models (whose guests load by name, in process)."""
        if self._fork_server_started or not self.nn.isolation.applies(guest=True) or self.models.names():
            return
        if isinstance(component, wasmtime.Module):
            nn = any(i.module in WITX_MODULES for i in component.imports)
        else:
            imports = types.items(component.type, self.engine_of(component), "imports")
            nn = not set(nn_versions.GRAPH_INTERFACES).isdisjoint(imports)
        if nn:
            from . import forkserver  # only here: see backends/isolation.py
            forkserver.start()
            self._fork_server_started = True


class Instance:
    """A component instance that survives its own traps (see module docs)."""

    def __init__(self, host: Host, component: Component, argv: list[str],
                 dirs: list[tuple[str, str]], env: dict[str, str]):
        self.host = host
        self.component = component
        self.argv = argv
        self.dirs = dirs
        self.env = env
        self.instances_started = 0
        self._store: Store | None = None
        self._instance = None
        self._session = None
        self._memories: MemoryBudget | None = None
        self._funcs: dict[str, Any] = {}
        self._last_nn_error = None  # of an instance already torn down

    # --- lifecycle -----------------------------------------------------------------
    def _ensure(self) -> Store:
        if self._store is not None:
            if self._session.broken() is None:
                return self._store
            self.close()  # its backend worker is gone, and with it its graphs: start afresh
        self._instance, self._store, self._session, self._memories = self._instantiate(*self._how_to_instantiate())
        return self._store

    @property
    def deadline(self) -> float | None:
        """time.monotonic() when the call in progress must end (a host function that waits
        waits no longer; between calls, the last call's); None without a deadline."""
        return self.host.nn.call_deadline(self._store) if self._store is not None else None

    @property
    def memory_bytes(self) -> int:
        """What the live instance's memories hold together, in bytes (what the limit
        'memory' bounds); 0 while none is live."""
        return self._memories.used if self._store is not None else 0

    def _how_to_instantiate(self) -> tuple[Engine, Any, Callable[[Store], Any], str]:
        """The engine, the memory images, the linking step and what to call it in errors."""
        compiled = record(self.component)
        return compiled.engine.engine, compiled.images, self._link, "component"

    def _link(self, store: Store):
        """The linker's instance of the component; under unknown-imports-trap, each import
        the linker reports missing (and only those: WASI a guest imports at a newer 0.2.x
        is served by semver, which wasmtime's `define_unknown_imports_as_traps` shadows)
        is defined as traps, in the linker every component of this host shares."""
        linker = record(self.component).engine.linker
        while True:
            try:
                return linker.instantiate(store, self.component)
            except WasmtimeError as e:
                missing = wasmtime_errors.missing_import(e)
                if self.host.unknown_imports != "trap" or missing is None or not _stand_in(
                        linker, self.component, *missing):
                    raise

    def _instantiate(self, engine: Engine, memory_images, instantiate: Callable, what: str):
        """A fresh store and session, and `instantiate(store)`'s instance in them, its
        memories counted together against the memory limit (abi/memory.py)."""
        store = self._new_store(engine)
        session = self.host.nn.open_session(store)
        limits = self.host.limits
        # instantiating runs the guest's start functions: a call like any other, held to
        # its deadline everywhere a call is (a WASI sleep, a write, a wasi:nn compute)
        self._budget(store, session)
        if limits.fuel:
            store.set_fuel(_INSTANTIATION_FUEL)  # the fuel limit is per call; start-up is not one
        budget = MemoryBudget(limits.memory)
        patches.bound_lifts(session.key, patches.LiftBounds(
            self.host.nn.list_bounds(), limits.max_list_elements, limits.max_string_bytes,
            functools.partial(self.host.nn.deadline_at, session.key),
            limits.too_many_list_elements, limits.too_much_text, limits.past_deadline))
        try:
            with self.host.memories.instantiating(store_key(store), memory_images, budget), \
                    self._watched(f"the {what}'s start functions", session.deadline), streams.in_call(store):
                instance = instantiate(store)
            limits.check_reach(budget.memories, budget.reach)
        except ExitTrap:  # a module's start function exited
            self.host.nn.close_session(session)
            patches.forget_store(session.key)
            raise
        except (WasmtimeError, wasmtime.Trap, WasinnError) as e:
            self.host.nn.close_session(session)
            patches.forget_store(session.key)
            store.close()
            reason = e if isinstance(e, WasinnError) else self._explain(e)
            raise WasinnError(f"cannot instantiate the {what}: {reason}") from None
        # An Instance dropped without close() must still free its host resources.
        weakref.finalize(store, self.host.nn.close_session, session)
        self.instances_started += 1
        return instance, store, session, budget

    def _apart_from_the_host(self, host_path: str) -> None:
        """A directory a guest may write to holds nothing the host itself reads and trusts,
        nor lies in it:
        - no part of the compile cache: the host runs the native code of its entries
          (wasmtime trusts what it deserializes) and maps them. A guest given the cache's
          directory (`--dir ~::/home`, the default cache being in ~/.cache) had planted its
          own code in another component's entry, which the next run of that component
          ran; one that truncated its own entry killed the host (SIGBUS);
        - no registered model's file (nor, for one reached through a link, its target) that
          the host reads after the guest starts (`--lazy-models`, `--isolate all`, a library
          Host that did not preload it): the host loads those as the operator's, in process
          by default. A guest had replaced one with a TFLite model that crashes LiteRT
          (SIGSEGV), or with a link out of its directory, to /dev/zero (the host read until
          it ran out of memory) or to another model on the host (loaded and computed). One
          loaded at start, in process, is not read again: peers' command lines give the
          guest `--dir .:.` beside the model they preload;
        - not the directory ONNX external data is read from (`external-data-dir`), whose
          files onnx's parser reads in the host."""
        def named(path) -> set[pathlib.Path]:  # as written, and where its links lead
            return {pathlib.Path(os.path.abspath(path)), pathlib.Path(path).resolve()}
        given = named(host_path)

        def reaches(path) -> bool:
            return any(p.is_relative_to(d) or d.is_relative_to(p) for p in named(path) for d in given)
        readonly = "or give the directory read-only (GUEST:HOST:readonly)"
        cache = self.host.cache_dir
        if cache is not None and reaches(cache):
            raise WasinnError(f"--dir {host_path}: the guest could write to the compile cache ({cache}), whose "
                              "compiled code the host runs; give it a directory apart from the cache, keep the "
                              f"cache elsewhere (--cache-dir), {readonly}")
        in_worker = self.host.nn.isolation.applies(guest=False)
        for name, path, loaded in self.host.models.files():
            if loaded and not in_worker:
                continue
            for p in named(path):
                if any(p.is_relative_to(d) for d in given):
                    raise WasinnError(f"--dir {host_path}: the guest could replace the file of the registered model "
                                      f"{name!r} ({path}), which the host reads after the guest starts (--lazy-models, "
                                      "--isolate all) as the operator's; load it at start, keep it outside the "
                                      f"directories the guest may write to, {readonly}")
        external = self.host.limits.external_data_dir
        if external is not None and reaches(external):
            raise WasinnError(f"--dir {host_path}: the guest could write to the external-data directory ({external}), "
                              f"whose files the host's ONNX parser reads; keep them apart, {readonly}")

    def _new_store(self, engine: Engine) -> Store:
        """A store with the instance's WASI (argv, env, preopens, stdio) and limits."""
        wasi = WasiConfig()
        wasi.argv = self.argv
        wasi.env = list(self.env.items())
        for host_path, guest_path, *read_only in self.dirs:
            if not os.path.isdir(host_path):
                raise WasinnError(f"--dir: no such directory {host_path}")
            mutable = not (read_only and read_only[0])
            if mutable:
                self._apart_from_the_host(host_path)
            wasi.preopen_dir(host_path, guest_path, fs_mutable=mutable)
        store = Store(engine)
        streams.bound_to_deadline(wasi, store, self.host.nn.call_deadline)  # held to the call's deadline
        limits = self.host.limits
        # memory_size is per memory: the total is the memory creator's (abi/memory.py)
        store.set_limits(memory_size=limits.memory, table_elements=limits.max_table_elements,
                         instances=limits.max_instances, tables=limits.max_tables, memories=limits.max_memories)
        store.set_wasi(wasi)
        return store

    def close(self) -> None:
        """Drops the store and frees every wasi:nn resource the instance still held. Not
        while one of its calls runs (in another thread): closing the store under wasmtime
        aborted the process (a Rust panic, or SIGSEGV in wasmtime_store_delete)."""
        if self._store is not None and streams.running(self._store):
            raise WasinnError("cannot close the instance while a call of it runs (in another thread): the call "
                              "ends at its deadline (a Host's `overdue` callback hears of one that does not); "
                              "close the instance after it returns")
        if self._session is not None:
            self._last_nn_error = self._session.last_error
            self.host.nn.close_session(self._session)
            patches.forget_store(self._session.key)
        if self._store is not None:
            # Now, not when the last reference goes: a traceback that still holds the
            # store (a caught GuestTrap) would keep the guest's memory mapped.
            self._store.close()
        self._store = self._instance = self._session = self._memories = None
        self._funcs.clear()

    def __enter__(self) -> "Instance":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def store(self) -> Store:
        """The live instance's store (instantiating it if needed): for handing a host
        resource to `call` (`ResourceHost.own(rep, ty).to_any(instance.store)`) and taking
        one back (`handle.resource.to_host(instance.store)`)."""
        return self._ensure()

    def live_resources(self) -> dict[str, int]:
        """Live wasi:nn resources (tensor, graph, ...) the current instance holds."""
        return self.host.nn.live(self._session) if self._session else {k.name.lower(): 0 for k in NN_RESOURCES}

    # --- calls ---------------------------------------------------------------------
    def _func(self, store: Store, name: str):
        if name in self._funcs:
            return self._funcs[name]
        # where the export is and its types hold for every instance of the component:
        # found once (~0.1 ms of a fresh instance's first call)
        funcs = record(self.component).funcs
        found = funcs.get(name)
        if found is None:
            func, index = self._find(store, name)
            ftype = func.type(store)
            types.check_signature(ftype, f"export {name!r}")
            found = funcs[name] = index, _FuncTypes(ftype)
        else:
            func = self._instance.get_func(store, found[0])
        self._funcs[name] = func, found[1]
        return self._funcs[name]

    def _find(self, store: Store, name: str):
        if "#" in name:
            iface, fname = name.split("#", 1)
            places = [iface]
        else:
            fname, places = name, [None, *self.exported_interfaces()]
        for iface in places:
            parent = None if iface is None else self.component.get_export_index(iface)
            if iface is not None and parent is None:
                continue
            index = self.component.get_export_index(fname, parent)
            func = self._instance.get_func(store, index) if index is not None else None
            if func is not None:
                return func, index
        raise WasinnError(f"the component exports no function {name!r}; it exports: "
                          + self._exports_listed())

    def signature(self, name: str) -> tuple[list[tuple[str, Any]], Any]:
        """An export's (parameter name, type) pairs and result type (None: no result), as
        wasmtime-py's component types; what wasinn.testing draws values for."""
        _, ftype = self._func(self._ensure(), name)
        return ftype.params, ftype.result

    def _exports_listed(self, shown: int = 20) -> str:
        """The exports for a message: the first `shown`, and how many there are."""
        names = self.exported_interfaces()
        more = f", ... ({len(names)} in all)" if len(names) > shown else ""
        return (", ".join(names[:shown]) or "(none)") + more

    def exported_interfaces(self) -> list[str]:
        names = types.items(self.component.type, record(self.component).engine.engine, "exports")
        return sorted(n for n in names if n not in _TOOLCHAIN_EXPORTS and not n.startswith(rewrite.OWN_EXPORTS))

    @property
    def last_nn_error(self):
        """The last wasi:nn error (an `NnError`) the guest received, or None; an exit or
        a trap keeps it, for saying why a run failed."""
        return self._session.last_error if self._session is not None else self._last_nn_error

    def call(self, name: str, *args: Any, started: float | None = None) -> Any:
        """Calls an export: `func`, or `interface#func` for one in an exported interface.
        numpy arrays and `HostTensor`s go where the function takes a `tensor` (handed
        over as handles: no bytes cross); tensors in the result come back as
        `HostTensor`s. Variants and results are `Variant(tag, payload)` both ways.
        Arguments are checked against the WIT types first: a mismatch raises `BadValue`
        (one line: the parameter, the path inside it, the type, the value).
        The call's deadline counts from `started` (time.monotonic() when the caller
        began making its arguments; default: once the instance exists) and covers
        making them."""
        store = self._ensure()
        if started is None:
            started = time.monotonic()
        func, ftype = self._func(store, name)
        if len(args) != len(ftype.params):
            raise BadValue(f"{name} takes {len(ftype.params)} argument{'' if len(ftype.params) == 1 else 's'} "
                           f"({', '.join(n for n, _ in ftype.params)}), got {len(args)}")
        limits = self.host.limits
        with collector.holding():
            return self._call(store, name, func, ftype, args, started, limits)

    def _call(self, store: Store, name: str, func, ftype, args: tuple, started: float, limits: Limits) -> Any:
        lent: list[int] = []  # tensors made only to lend (borrow<tensor>) die after the call
        given: list[int] = []  # and all of them when a later argument does not fit

        def give(ty, tensor: HostTensor):
            rep = self.host.nn.add(store, Resource.TENSOR, tensor, limited=False)
            (lent if isinstance(ty, BorrowType) else given).append(rep)
            return ResourceHost.own(rep, Resource.TENSOR)

        def take(ty, handle: ResourceAny):
            if handle.type == self.host._tensor_type:
                return self.host.nn.take(handle.to_host(store).rep, Resource.TENSOR)
            return self._handle(store, handle)

        deadline = limits.deadline_from(started)
        try:
            try:
                with values.converting(deadline):
                    params = [values.to_wasm(ty, arg, give, f"parameter {param!r}")
                              for (param, ty), arg in zip(ftype.params, args)]
                collector.made()
            except (BadValue, PastDeadline) as e:
                lent.extend(given)
                if isinstance(e, PastDeadline):
                    raise self._past_deadline(name) from None
                raise
            self._budget(store, self._session, started)
            try:
                with self._watched(name, deadline), streams.in_call(store):
                    result = calls.call_export(func, ftype.param_types, ftype.result, store, params, deadline)
                func.post_return(store)
            except (ExitTrap, WasmtimeError, wasmtime.Trap, OutOfBounds, NnError):
                raise
            except PastDeadline:
                raise self._past_deadline(name) from None
            except BaseException:
                self.close()  # a host function raised: wasmtime has poisoned the instance
                raise
            return None if ftype.result is None else values.from_wasm(ftype.result, result, take)
        except ExitTrap:
            raise
        except (WasmtimeError, wasmtime.Trap, OutOfBounds, NnError) as e:
            # raised in a host function that has no error to return: OutOfBounds, spans the
            # guest gave the data path that lie about its memory (the canonical ABI traps
            # on such lists too); NnError, a tensor constructor over a limit (it has no error case)
            raise self._trapped(name, e) from None
        finally:
            for rep in lent:
                self.host.nn.drop(rep)

    def _past_deadline(self, name: str) -> GuestTrap:
        """A call whose deadline came while the host made its arguments ends as one whose
        guest ran past it: its instance goes."""
        self.close()
        return GuestTrap(f"the call of {name} ran past its deadline before the guest was entered: "
                         f"{self.host.limits.past_deadline()}, and making its arguments took that long; the "
                         "instance was torn down, the next call gets a fresh one")

    def _handle(self, store: Store, handle: ResourceAny) -> values.Handle:
        """A resource of a result, saying what it is. A wasi:nn one is looked up by its
        rep: `to_host` takes the handle out of the store's table, `to_any` puts it back."""
        kind = values.host_resource(handle.type)
        if kind is None:
            return values.Handle(handle, "a resource of the guest")
        host = handle.to_host(store)
        what = f"wasi:nn {RESOURCE_WIT_NAMES[kind]}"
        if kind == Resource.ERROR:
            what += f" {self.host.nn.get(host.rep, kind)}"
        return values.Handle(host.to_any(store), what)

    def _watched(self, name: str, deadline: float | None) -> stop_at:
        """Tells the Host's `overdue` of a call still running OVERDUE_GRACE past its
        `deadline` (which counts from when its arguments began to be made)."""
        limits, overdue = self.host.limits, self.host.overdue
        if overdue is None or deadline is None:
            return stop_at(None, None)
        return stop_at(deadline + OVERDUE_GRACE, lambda: overdue(
            f"the call of {name} is still running {OVERDUE_GRACE:g} s past its deadline of {limits.deadline:g} s "
            "(limit 'deadline', --deadline), blocked in a host function no deadline interrupts (one long node of "
            "a model run in process, a WASI read that waits)"))

    def _budget(self, store: Store, session, started: float | None = None) -> None:
        """Arms the limits of one call begun at `started` (default: now): its deadline
        (epoch ticks for wasm, a time for the host functions that wait: the backend, WASI
        clocks and writes) and its fuel."""
        limits = self.host.limits
        session.graced = False
        if limits.deadline > 0:
            session.deadline = limits.deadline_from(time.monotonic() if started is None else started)
            store.set_epoch_deadline(max(1, math.ceil((session.deadline - time.monotonic()) / EPOCH_SECONDS)))
        else:
            store.set_epoch_deadline(1 << 62)
        if limits.fuel:
            store.set_fuel(limits.fuel)

    def _trapped(self, name: str, e: Exception) -> GuestTrap:
        """Tears the instance down after a trap in export `name`; the error to raise."""
        self.close()
        return GuestTrap(f"guest trapped in {name}: {self._explain(e)}; the instance was torn down and "
                         "its resources freed, the next call gets a fresh one")

    def _explain(self, e: Exception) -> str:
        limits = self.host.limits
        kind, value = wasmtime_errors.classify(e) or (None, None)
        if kind == "deadline":
            return limits.past_deadline()
        if kind == "fuel":
            return f"the call used up its fuel ({limits.fuel}; limit 'fuel', --fuel)"
        if kind == "memory-minimum":
            return (f"its memory starts at {value * 65536 / 2**20:.1f} MiB; the limit is "
                    f"{limits.memory / 2**20:g} MiB (limit 'memory', --memory)")
        if kind == "table-minimum":
            return (f"a table starts at {value} elements; the limit is {limits.max_table_elements} "
                    "(limit 'max-table-elements', --max-table-elements)")
        if kind == "count":
            name, what = _COUNTED[value]
            flag = name.replace("_", "-")
            return f"it makes more {what} than {getattr(limits, name)} (limit '{flag}', --{flag})"
        if kind == "own-limit":  # the memory creator's refusals (abi/memory.py) say which limit themselves
            return value
        if kind == "missing-import" and self.host.unknown_imports is None \
                and not value[1].startswith(("wasi:", "wasinn:")):
            return (f"it imports {value[0]} {value[1]}, which nothing here defines (run it anyway "
                    "with -W unknown-imports-trap=y: its functions trap when called)")
        return one_line(e)

    def run(self) -> int:
        """Runs a command component (`wasi:cli/run`); returns its exit status."""
        if WASI_CLI_RUN not in self.exported_interfaces():
            raise WasinnError(f"the component is not a command (it exports no {WASI_CLI_RUN}); call one of "
                              "its exports instead (--invoke): " + self._exports_listed())
        try:
            result = self.call(f"{WASI_CLI_RUN}#run")
        except ExitTrap as e:
            self.close()
            return e.code
        return 0 if isinstance(result, Variant) and result.tag == "ok" else 1


UNKNOWN_IMPORTS = (None, "trap", "default")
# How long past its deadline a call may still be running before the Host's `overdue`
# hears of it: well past the epoch interrupt's 50 ms ticks and a backend's stop.
OVERDUE_GRACE = 1.0
_stand_in_resources = itertools.count(1 << 20)  # host resource types of stand-ins, apart from wasi:nn's


def _stand_in(linker: Linker, component: Component, kind: str, name: str) -> bool:
    """Defines import `name` (an instance or a function) of `component` as traps; False
    if the linker has that name already (then its types differ: the refusal stands)."""
    engine = record(component).engine.engine
    extern = types.items(component.type, engine, "imports").get(name)
    if extern is None:
        return False

    def trap(func: str):
        def called(*_):
            raise wasmtime.Trap(f"{func} is an import wasinn does not define; under -W unknown-imports-trap=y "
                                "it traps when called")
        return called
    # a stand-in lifts its arguments before it traps: their types are held to the limit
    # an export's are (a list of 18 nested pairs took a guest's call of one 28 s, 518 MB),
    # all of them before any is defined
    if kind == "function":
        types.check_signature(extern.ty, f"its import {name}")
    else:
        items = types.items(extern.ty, engine, "exports", f"its import {name}")
        for item, ext in items.items():
            if isinstance(ext.ty, wasmtime.component.FuncType):
                types.check_signature(ext.ty, f"its import {name}#{item}")
    try:
        with linker.root() as root:
            if kind == "function":
                root.add_func(name, trap(name))
                return True
            with root.add_instance(name) as instance:
                for item, ext in items.items():
                    if isinstance(ext.ty, ResourceType):
                        instance.add_resource(item, ResourceType.host(next(_stand_in_resources)), lambda *_: None)
                    else:
                        instance.add_func(item, trap(f"{name}#{item}"))
    except WasmtimeError:
        return False
    return True


# Exports a toolchain adds for itself: componentize-py's pre-initialization hook (`init`).
_TOOLCHAIN_EXPORTS = {"exports"}
# What wasmtime counts per store (embedding/errors.py's COUNTED), each with its limit
# and what it counts.
_COUNTED = {"instance": ("max_instances", "core instances"), "memory": ("max_memories", "linear memories"),
            "table": ("max_tables", "tables")}


class _FuncTypes:
    """An export's parameter and result types, read once."""

    def __init__(self, ftype):
        self.params = ftype.params
        self.param_types = [ty for _, ty in self.params]
        self.result = ftype.result


class ModuleInstance(Instance):
    """A core module instance that survives its own traps (see runtime.Instance)."""

    def _how_to_instantiate(self) -> tuple[Engine, Any, Callable[[Store], Any], str]:
        modules = self.host.core_modules
        return modules.engine, None, lambda store: modules.linker.instantiate(store, self.component), "module"

    def exported_interfaces(self) -> list[str]:
        return sorted(e.name for e in self.component.exports if isinstance(e.type, wasmtime.FuncType))

    def _func(self, store: Store, name: str) -> CoreExport:
        func = self._funcs.get(name)
        if func is None:
            func = calls.core_export(store, self._instance, name)
            if not isinstance(func, wasmtime.Func):
                raise WasinnError(f"the module exports no function {name!r}; the functions it exports: "
                                  + self._exports_listed())
            func = self._funcs[name] = CoreExport(func, store)
        return func

    def call(self, name: str, *args: Any, before_post_return: Callable[[Store, Any], None] | None = None) -> Any:
        """Calls an exported function with numbers; returns its result (a tuple for several)."""
        store = self._ensure()
        func = self._func(store, name)
        try:
            self._budget(store, self._session)
            with self._watched(name, self._session.deadline), streams.in_call(store):
                return func(store, *args)
        except ExitTrap:
            raise
        except (WasmtimeError, wasmtime.Trap) as e:
            raise self._trapped(name, e) from None

    @property
    def memory(self) -> wasmtime.Memory:
        store = self._ensure()
        memory = calls.core_export(store, self._instance, "memory")
        if not isinstance(memory, wasmtime.Memory):
            raise WasinnError("the module exports no memory")
        return memory

    def write(self, ptr: int, data: bytes) -> None:
        """Writes into the guest's memory (for hosts that drive a module's exports)."""
        self.memory.write(self._ensure(), data, ptr)

    def read(self, ptr: int, length: int) -> bytes:
        return bytes(self.memory.read(self._ensure(), ptr, ptr + length))

    def run(self) -> int:
        """Runs the program's `_start` on a fresh instance; returns its exit status."""
        self.close()
        try:
            self.call("_start")
            return 0
        except ExitTrap as e:
            return e.code
        finally:
            self.close()

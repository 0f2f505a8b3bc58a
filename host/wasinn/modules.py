"""Core WebAssembly modules: wasm32-wasi (preview1) programs on wasi-nn's WITX ABI.

Most wasi-nn programs in the wild are core modules importing `wasi_ephemeral_nn` (the
wasi-nn Rust crate up to 0.6, wasmtime's and WasmEdge's examples, C written to WAMR's
wasi_nn.h) or WAMR's own `wasi_nn`. `Host.load_component` hands them here; they get
their own engine (same settings: epochs for deadlines, fuel when counted), a linker
with WASI preview1 and abi/witx.py, and the compile cache. A `ModuleInstance` is an
`Instance` (same limits, teardown on trap, live-resource counts) whose store holds a
core instance:

    inst = host.instantiate(host.load_component("classify.wasm"), args=["m.onnx"],
                            dirs=[("models", "/models")])
    status = inst.run()                       # _start; proc_exit's code, 0 if it returns
    inst.call("some_export", 1, 2)            # or call an exported function by name
"""
from __future__ import annotations

import pathlib
from typing import Any

import wasmtime
from wasmtime import Engine, ExitTrap, Linker, Module, Store, WasmtimeError

from .abi.speedups import CoreExport
from .abi.witx import MODULES, SERVED, WitxHost, stderr_report
from .compile_cache import CompileCache
from .errors import GuestTrap, WasinnError
from .runtime import WASMTIME_VERSION, Instance, _EpochTicker, _one_line

CORE_MODULE_HEADER = b"\0asm\x01\0\0\0"
_WASI = "wasi_snapshot_preview1"
# What an unknown function returns under unknown-imports-default, by result type.
_ZERO = {"i32": 0, "i64": 0, "f32": 0.0, "f64": 0.0, "funcref": None, "anyref": None}


class _ModuleCache(CompileCache):
    """The compile cache, for modules instead of components."""

    def _deserialize(self, entry: pathlib.Path) -> Module | None:
        try:
            return Module.deserialize_file(self.engine, str(entry))
        except WasmtimeError:
            entry.unlink(missing_ok=True)
            return None


class CoreModules:
    """One `Host`'s engine, linker and cache for core modules, made on first use."""

    def __init__(self, host):
        self.host = host
        self.witx = WitxHost(host.nn)
        self._ready = False
        self._stand_ins: dict[tuple[str, str], tuple[list[str], list[str]]] = {}  # see _stand_in

    @property
    def errors_to_stderr(self) -> bool:
        """Whether each wasi-nn errno's message is printed as a `wasinn:` line (default)."""
        return self.witx.report is not None

    @errors_to_stderr.setter
    def errors_to_stderr(self, on: bool) -> None:
        self.witx.report = stderr_report if on else None

    def _setup(self) -> None:
        if self._ready:
            return
        config = wasmtime.Config()
        # Host memories, as components have (runtime._Engine), so the memory limit is a
        # total here too; a module has no image taken out: wasmtime copies its data
        # segments (a C program's are kilobytes). They never move when they grow (a 32-bit
        # memory's 4 GiB are reserved at once), so abi/witx.py finds one once per instance.
        self.host.memories.install(config)
        config.epoch_interruption = True
        config.consume_fuel = self.host.limits.fuel > 0
        config.memory_may_move = False
        self.engine = Engine(config)
        _EpochTicker.watch(self.engine)
        self.linker = Linker(self.engine)
        self.linker.define_wasi()
        self.witx.define(self.linker)
        settings = f"module-hostmem-epoch{'-fuel' if self.host.limits.fuel else ''}"
        self.cache = None if self.host.cache_dir is None else _ModuleCache(
            self.host.cache_dir / "compiled", self.engine, f"wasmtime{WASMTIME_VERSION}-{settings}")
        self._ready = True

    def load(self, wasm: bytes, path: pathlib.Path | None, label: str) -> Module:
        self._setup()
        compile_ = lambda data: self._compile(data, label)  # noqa: E731
        module = self.cache.load(wasm, compile_, path) if self.cache else compile_(wasm)
        self._check_imports(module, label)
        return module

    def _compile(self, wasm: bytes, label: str) -> Module:
        self.host.progress(f"compiling {label} ({len(wasm) / 1e6:.1f} MB), once per module...")
        try:
            return Module(self.engine, wasm)
        except WasmtimeError as e:
            raise WasinnError(f"{label} is not a valid WebAssembly module: {_one_line(e)}") from None

    def _check_imports(self, module: Module, label: str) -> None:
        """Says which import no host here defines before instantiation would; under the
        host's `unknown_imports` mode, defines those that are functions instead."""
        mode = self.host.unknown_imports
        for imp in module.imports:
            if imp.module == _WASI or imp.name in SERVED.get(imp.module, ()):
                continue
            name = f"{imp.module}.{imp.name}"
            if mode is None:
                why = (f"; wasinn serves core modules WASI preview1 and {', '.join(MODULES)}" if imp.module not in SERVED
                       else f", which wasinn does not define; it defines: {', '.join(SERVED[imp.module])}")
                raise WasinnError(f"{label} imports {name}{why} (run it anyway with -W unknown-imports-trap=y: "
                                  "the import traps when called, or -W unknown-imports-default=y: it returns zeros)")
            if not isinstance(imp.type, wasmtime.FuncType):
                raise WasinnError(f"{label} imports {name}, which wasinn does not define and which is not a "
                                  f"function: unknown-imports-{mode} stands in for functions only")
            self._stand_in(imp.module, imp.name, imp.type, label)

    def _stand_in(self, module: str, name: str, ty: wasmtime.FuncType, label: str) -> None:
        """Defines an unknown function import as a trap, or as returning zeros (wasmtime's
        `define_unknown_imports_as_traps`/`_as_default_values`, whose default values are
        bound to one store: these serve every store). The linker serves every module of
        this host, so a name another module defined with other types is refused."""
        signature = ([str(t) for t in ty.params], [str(t) for t in ty.results])
        known = self._stand_ins.get((module, name))
        if known is not None:
            if known != signature:
                raise WasinnError(f"{label} imports {module}.{name} with other types than a module before it "
                                  "on this host; run it on a host of its own")
            return
        if self.host.unknown_imports == "trap":
            def impl(*_):
                raise wasmtime.Trap(f"{module}.{name} is an import wasinn does not define; "
                                    "under -W unknown-imports-trap=y it traps when called")
        else:
            zeros = [_ZERO[t] for t in signature[1]] if all(t in _ZERO for t in signature[1]) else None
            if zeros is None:
                raise WasinnError(f"{label} imports {module}.{name}, which returns {', '.join(signature[1])}: "
                                  "unknown-imports-default has no zero for that; use -W unknown-imports-trap=y")
            result = None if not zeros else zeros[0] if len(zeros) == 1 else zeros
            impl = lambda *_: result  # noqa: E731
        self.linker.define_func(module, name, ty, impl)
        self._stand_ins[(module, name)] = signature


class ModuleInstance(Instance):
    """A core module instance that survives its own traps (see runtime.Instance)."""

    def _ensure(self) -> Store:
        if self._store is not None:
            if self._session.broken() is None:
                return self._store
            self.close()  # its backend worker is gone, and with it its graphs: start afresh
        modules = self.host.core_modules
        self._instance, self._store, self._session = self._instantiate(
            modules.engine, None, lambda store: modules.linker.instantiate(store, self.component), "module")
        return self._store

    def exported_interfaces(self) -> list[str]:
        return sorted(e.name for e in self.component.exports if isinstance(e.type, wasmtime.FuncType))

    def _func(self, store: Store, name: str) -> CoreExport:
        func = self._funcs.get(name)
        if func is None:
            func = self._instance.exports(store).get(name)
            if not isinstance(func, wasmtime.Func):
                raise WasinnError(f"the module exports no function {name!r}; it exports: "
                                  + ", ".join(self.exported_interfaces() or ["(nothing)"]))
            func = self._funcs[name] = CoreExport(func, store)
        return func

    def call(self, name: str, *args: Any) -> Any:
        """Calls an exported function with numbers; returns its result (a tuple for several)."""
        store = self._ensure()
        func = self._func(store, name)
        try:
            self._budget(store)
            return func(store, *args)
        except ExitTrap:
            raise
        except (WasmtimeError, wasmtime.Trap) as e:
            self.close()
            raise GuestTrap(f"guest trapped in {name}: {self._explain(e)}; the instance was torn down and "
                            "its resources freed, the next call gets a fresh one") from None

    @property
    def memory(self) -> wasmtime.Memory:
        store = self._ensure()
        memory = self._instance.exports(store).get("memory")
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

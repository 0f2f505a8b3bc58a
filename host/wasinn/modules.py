"""Core WebAssembly modules: wasm32-wasi (preview1) programs on wasi-nn's WITX ABI.

Most wasi-nn programs in the wild are core modules importing `wasi_ephemeral_nn` (the
wasi-nn Rust crate up to 0.6, wasmtime's and WasmEdge's examples, C written to WAMR's
wasi_nn.h) or WAMR's own `wasi_nn`. `Host.load_component` hands them here; they get
their own engine (same settings: epochs for deadlines, fuel when counted), a linker
with WASI preview1 and abi/witx.py, and the compile cache. Their instances are
runtime.py's `ModuleInstance`, an `Instance` (same limits, teardown on trap,
live-resource counts) whose store holds a core instance:

    inst = host.instantiate(host.load_component("classify.wasm"), args=["m.onnx"],
                            dirs=[("models", "/models")])
    status = inst.run()                       # _start; proc_exit's code, 0 if it returns
    inst.call("some_export", 1, 2)            # or call an exported function by name
"""
from __future__ import annotations

import pathlib
import wasmtime
from wasmtime import Engine, Linker, Module, WasmtimeError

from . import compiler
from .abi import binary, clocks
from .abi.witx import MODULES, SERVED, WitxHost, stderr_report
from .compile_cache import WASMTIME_VERSION, CompileCache, waiting_for
from .deadlines import EpochTicker
from .embedding.errors import one_line
from .embedding.types import MAX_ITEMS
from .errors import WasinnError

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
        # Host memories, as components have (runtime._Engine), so the memory limit is a
        # total here too; a module has no image taken out: wasmtime copies its data
        # segments (a C program's are kilobytes). They never move when they grow (a 32-bit
        # memory's 4 GiB are reserved at once), so abi/witx.py finds one once per instance.
        config = compiler.config(fuel=self.host.limits.fuel > 0, memory_may_move=False)
        self.host.memories.install(config)
        self.engine = Engine(config)
        EpochTicker.watch(self.engine)
        self.linker = Linker(self.engine)
        self.linker.define_wasi()
        self.witx.define(self.linker)
        # a guest's WASI sleeps end at its call's deadline (abi/clocks.py)
        clocks.DeadlinePoll(self.engine, self.host.nn.call_deadline,
                            lambda caller: self.host.nn.session(caller).clock_helper,
                            self.host.limits.past_deadline).install(self.linker)
        settings = f"module-hostmem-epoch{'-fuel' if self.host.limits.fuel else ''}"
        self.cache = None if self.host.cache_dir is None else _ModuleCache(
            self.host.cache_dir / "compiled", self.engine, f"wasmtime{WASMTIME_VERSION}-{settings}")
        self._ready = True

    def load(self, wasm: bytes, path: pathlib.Path | None, label: str) -> Module:
        self._setup()
        compile_ = lambda data: self._compile(data, label)  # noqa: E731
        waiting, patience = waiting_for(label, self.host.limits.compile_timeout, self.host.progress)
        module = self.cache.load(wasm, compile_, path, waiting, patience) if self.cache else compile_(wasm)
        self._check_imports(module, label)
        return module

    def _compile(self, wasm: bytes, label: str) -> Module:
        binary.check_modules(wasm, label)
        # each is listed, checked and maybe stood in for at every load: 50,000 imports (a
        # 0.5 MB module) under -W unknown-imports-trap=y took 7 s to load; WASI programs have tens
        imports = binary.core_import_count(wasm)
        if imports > MAX_ITEMS:
            raise WasinnError(f"{label} has {imports} imports; wasinn takes at most {MAX_ITEMS} (wasinn's limit: it "
                              "checks each at every load and stands in for those it does not define)")
        self.host.progress(f"compiling {label} ({len(wasm) / 1e6:.1f} MB), once per module...")
        limits = self.host.limits
        try:
            return compiler.compile_confined(self.engine, wasm, module=True, fuel=limits.fuel > 0,
                                             memory_may_move=False, max_memory=limits.max_compile_memory,
                                             timeout=limits.compile_timeout, label=label)
        except compiler.Invalid as e:
            raise WasinnError(f"{label} is not a valid WebAssembly module: {one_line(e)}") from None

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

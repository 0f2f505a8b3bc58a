"""`wasinn build`: a Python guest app to a component, with componentize-py against wit/."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from . import resources
from ._bindings import WASINN_GUEST_ML_COMMAND_WORLD
from .errors import WasinnError

DEFAULT_WORLD = WASINN_GUEST_ML_COMMAND_WORLD


def build(app: str | os.PathLike, output: str | os.PathLike, *, world: str = DEFAULT_WORLD,
          wit: str | os.PathLike | None = None, progress=None) -> pathlib.Path:
    """Builds `app` (a .py file, or a directory whose app.py is the entry module) into
    a component at `output`. Other .py files beside the app are bundled with it."""
    app = pathlib.Path(app)
    if app.is_dir():
        app = app / "app.py"
    if not app.is_file() or app.suffix != ".py":
        raise WasinnError(f"wasinn build wants a Python file (or a directory with app.py), got {app}")
    exe = shutil.which("componentize-py", path=os.pathsep.join(
        [str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if exe is None:
        raise WasinnError("componentize-py is not installed (pip install componentize-py==0.25.1)")
    output = pathlib.Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "-d", str(wit or resources.path("wit")), "-w", world, "componentize",
           "-p", str(app.parent.resolve()), app.stem, "-o", str(output)]
    if progress:
        progress(f"building {output.name} from {app} (world {world}), ~10 s...")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:  # keep __pycache__ out of the source tree
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().split("\nStack backtrace:")[0]
        raise WasinnError(f"componentize-py failed for {app}:\n{detail}")
    if progress:
        progress(f"built {output} ({output.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - start:.1f} s")
    return output

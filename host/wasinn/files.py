"""Writing cache files so that a concurrent reader never sees half of one."""
from __future__ import annotations

import os
import pathlib


def write_atomic(path: pathlib.Path, data: bytes) -> None:
    import tempfile  # here: a run whose caches are warm writes nothing, and tempfile costs ~2 ms of start-up
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise

"""Writing cache files so that a concurrent reader never sees half of one, and so that
processes that need the same one at once make it once."""
from __future__ import annotations

import contextlib
import os
import pathlib
from typing import Callable, Iterator


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


@contextlib.contextmanager
def making(path: pathlib.Path, waiting: Callable[[], None] | None = None,
           patience: float | None = None) -> Iterator[None]:
    """Held while its caller looks for `path` again and makes it: a second process (or
    thread) making the same file waits here (`waiting` is called first, once), then finds
    it made. Two test processes had each built the same guest (tens of seconds of
    componentize-py) and compiled it. The lock is a file beside `path`, kept (removing it
    would let a third process lock a new file while the second holds the old); the
    kernel lets go of it when its holder dies. Past `patience` seconds the caller goes on
    without it: a holder stopped (Ctrl-Z) or hung mid-compile must not hold every later
    run of the same component. Where the lock file cannot be made (a cache that is not
    writable), nothing is held. Either way the work is at worst done twice."""
    import fcntl
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting()
            if patience is None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            else:
                import time
                give_up = time.monotonic() + patience
                while time.monotonic() < give_up:
                    time.sleep(min(0.05, patience))
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        pass
        yield
    finally:
        os.close(fd)


def made_once(path: pathlib.Path, make: Callable[[], bytes], waiting: Callable[[], None] | None = None) -> pathlib.Path:
    """`path`, written with what `make` returns unless it is there already (`making`)."""
    if not path.is_file():
        with making(path, waiting):
            if not path.is_file():
                write_atomic(path, make())
    return path

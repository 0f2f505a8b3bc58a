"""Copies of guest-sized bytes (up to GiBs): in slices, each one memmove that lets other
threads run (ctypes releases the GIL around a foreign call), and none begun past the
call's deadline. A 512 MiB input copied into a backend worker's shared memory in one
slice assignment had held every other thread 0.37-0.55 s (another instance's deadline
trap came 0.45 s late), and a 1 GiB set_input begun 0.15 s before a deadline had run
0.6-2.6 s past it."""
from __future__ import annotations

import ctypes
import mmap
import os
import time
from typing import Iterator

from .lazy import numpy as np

from ._enums import ErrorCode
from .errors import NnError

# Bytes a slice copies: ~1-4 ms of memcpy on the machines here, so a copy meets the
# deadline within that, and pays one clock read and one foreign call per 8 MiB.
SLICE = 8 << 20


def address_of(buffer) -> int:
    """Where a buffer's bytes start (bytes, a memoryview, a numpy array, an mmap...); the
    caller keeps the buffer alive while it uses the address."""
    return np.frombuffer(buffer, np.uint8).ctypes.data


def slices(n: int, deadline: float | None = None, what: str = "the bytes") -> Iterator[tuple[int, int]]:
    """(offset, size) of each slice of `n` bytes; past `deadline` (time.monotonic()),
    before the next slice, the call's `timeout`."""
    for at in range(0, n, SLICE):
        if deadline is not None and time.monotonic() > deadline:
            raise NnError(ErrorCode.TIMEOUT, f"the copy of {what} ({n} bytes) had not finished by the call's "
                                             f"deadline ({at} bytes copied)")
        yield at, min(SLICE, n - at)


def copy(dst: int, src: int, n: int, deadline: float | None = None, what: str = "the bytes") -> None:
    """`n` bytes from address `src` to address `dst`, a slice at a time (`slices`); up to
    a slice, one memmove and no look at the clock (a few microseconds on every tensor)."""
    if n <= SLICE:
        ctypes.memmove(dst, src, n)
        return
    for at, size in slices(n, deadline, what):
        ctypes.memmove(dst + at, src + at, size)


def put(dst, offset: int, src, deadline: float | None = None, what: str = "the bytes") -> None:
    """The bytes of buffer `src` into the writable buffer `dst` (an mmap, a uint8 array)
    at `offset`; up to a slice, one slice assignment (no foreign call: a trivial model's
    input is a few bytes, its round trip tens of microseconds)."""
    view = memoryview(src).cast("B")
    if view.nbytes <= SLICE:
        dst[offset:offset + view.nbytes] = view
    else:
        copy(address_of(dst) + offset, address_of(view), view.nbytes, deadline, what)


def copied(src, deadline: float | None = None, what: str = "the bytes") -> np.ndarray:
    """A new uint8 array holding the bytes of the buffer `src`, copied as `put` does."""
    view = memoryview(src).cast("B")
    out = np.empty(view.nbytes, np.uint8)
    put(out, 0, view, deadline, what)
    return out


def joined(parts) -> bytes:
    """`b"".join(parts)` for parts of any size (bytes, memoryviews): a whole that is more
    than a slice is copied a part at a time, each part in slices without the GIL, into
    a bytes object whose pages are untouched until the copy reaches them. A 400 MB
    component joined in one call had held every other thread 0.3 s (and a deadline
    that another instance's call was under with it)."""
    views = [memoryview(p).cast("B") for p in parts]
    n = sum(v.nbytes for v in views)
    if n <= SLICE:
        return b"".join(views)
    # bytes(n) is calloc'd (no memset); filled here before anything else can see it
    out = bytes(n)
    at = address_of(out)
    for view in views:
        if view.nbytes:
            copy(at, address_of(view), view.nbytes)
            at += view.nbytes
    return out


def zeroed(n: int):
    """A writable buffer of `n` zero bytes whose pages are untouched until written (an
    anonymous mapping): `bytearray(n)` writes every byte first, 0.5 s for 400 MB holding
    the GIL."""
    return mmap.mmap(-1, n) if n else bytearray()


def all_zero(buffer) -> bool:
    """Whether every byte of `buffer` is zero, looked at a slice at a time (the GIL is
    free between slices)."""
    array = np.frombuffer(memoryview(buffer).cast("B"), np.uint8)
    return not any(array[at:at + size].any() for at, size in slices(len(array)))


def read_file(path, deadline: float | None = None, what: str = "the file") -> memoryview:
    """A file's bytes, read a slice at a time (each read without the GIL) into memory not
    touched before (a zeroed 600 MB buffer had held the GIL 0.4 s), none begun past
    `deadline`: an operator's 600 MB model read whole for a guest's `load_by_name` (under
    `--isolate all`) had run 0.4 s past that call's deadline."""
    with open(path, "rb") as f:
        n = os.fstat(f.fileno()).st_size
        view = memoryview(np.empty(n, np.uint8)).cast("B")
        for at, size in slices(n, deadline, what):
            got = f.readinto(view[at:at + size])
            if got != size:  # the file shrank under us
                raise OSError(f"{path}: {at + (got or 0)} bytes where it had {n}")
        return view

"""copies.py: guest-sized bytes copied a slice at a time, none begun past the call's
deadline; what is copied is the bytes, whichever way (one slice assignment up to a slice,
memmoves past it)."""
from __future__ import annotations

import mmap
import time

import numpy as np
import pytest

from wasinn import copies
from wasinn._bindings import ErrorCode
from wasinn.errors import NnError

SIZES = [0, 1, copies.SLICE - 1, copies.SLICE, copies.SLICE + 1, 2 * copies.SLICE + 7]


@pytest.mark.parametrize("n", SIZES)
def test_copied_and_put_copy_the_bytes(n):
    src = np.random.default_rng(n).integers(0, 256, n, np.uint8)
    assert np.array_equal(copies.copied(src, time.monotonic() + 60), src)
    with mmap.mmap(-1, n + 64) as dst:
        copies.put(dst, 64, memoryview(src.tobytes()), None)
        assert dst[64:] == src.tobytes() and dst[:64] == bytes(64)


def test_a_copy_past_its_deadline_stops_before_its_next_slice():
    src = np.ones(3 * copies.SLICE, np.uint8)
    dst = np.zeros_like(src)
    with pytest.raises(NnError) as late:
        copies.copy(dst.ctypes.data, src.ctypes.data, src.nbytes, time.monotonic() - 1, "the test's bytes")
    assert (late.value.code, late.value.message) == (
        ErrorCode.TIMEOUT, f"the copy of the test's bytes ({3 * copies.SLICE} bytes) had not finished by the "
                           "call's deadline (0 bytes copied)")
    assert not dst.any()


def test_a_copy_of_one_slice_or_less_never_looks_at_the_clock():
    """What fits a slice takes ~a millisecond at most: the copy is made, whatever the
    deadline (every tensor of every call goes through here)."""
    src = np.ones(copies.SLICE, np.uint8)
    assert copies.copied(src, time.monotonic() - 1).all()


@pytest.mark.parametrize("sizes", [[], [0], [5, 0, 7], [copies.SLICE - 3, 3], [copies.SLICE, 1],
                                   [3, 2 * copies.SLICE + 1, 0, copies.SLICE - 1]])
def test_joined_is_the_join_of_its_parts(sizes):
    rng = np.random.default_rng(len(sizes))
    parts = [rng.integers(0, 256, n, np.uint8).tobytes() for n in sizes]
    # bytes and views of them alike, as the compile step hands them
    given = [p if i % 2 else memoryview(p)[:] for i, p in enumerate(parts)]
    out = copies.joined(given)
    assert type(out) is bytes and out == b"".join(parts)


@pytest.mark.parametrize("n", SIZES)
def test_zeroed_is_writable_zeros_and_all_zero_sees_one_byte_anywhere(n):
    buffer = copies.zeroed(n)
    assert len(buffer) == n and copies.all_zero(buffer)
    for at in sorted({0, n // 2, n - 1} if n else set()):
        buffer[at] = 1
        assert not copies.all_zero(buffer)
        buffer[at] = 0
    assert copies.all_zero(buffer)

"""Stores as wasinn tells them apart, and what it sets on one from inside a host call.

A host call receives a `StoreContext`, not the `Store`, so a store is known by the
address of its C context, which both have (and which the host-call patches key their
caches by, patches.py). The C context is also the only handle on a store a host
function can set a deadline through: wasmtime-py offers `set_epoch_deadline` on the
`Store` alone.
"""
from __future__ import annotations

import ctypes

from wasmtime import _ffi as ffi


def store_key(store) -> int:
    """Identifies a store from a `Store` or the `StoreContext` host calls receive."""
    return ctypes.addressof(store._context().contents)


def context(store):
    """The store's C context, for `set_epoch_deadline`; valid while the store lives."""
    return store._context()


def set_epoch_deadline(context, ticks: int) -> None:
    """`Store.set_epoch_deadline` on a store known by its C context (`context`)."""
    ffi.wasmtime_context_set_epoch_deadline(context, ticks)

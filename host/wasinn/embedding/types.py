"""What a wasmtime-py component type is, where its public API does not say."""
from __future__ import annotations

from wasmtime.component import ListType


def is_bytes(ty) -> bool:
    """A `list<u8>`: lifted as, and lowered from, `bytes` (any buffer, with patches.py)."""
    return isinstance(ty, ListType) and ty._is_bytes()


def is_tagged(ty) -> bool:
    """Whether values of this variant, option or result are `Variant(tag, payload)`
    (else a payload stands for its case: an option's value or None, a result's...)."""
    return ty._tagged()

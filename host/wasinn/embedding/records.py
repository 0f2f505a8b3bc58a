"""What wasinn keeps per compiled component, beside it rather than as attributes
stapled onto wasmtime-py's `Component`: a record per component, alive as long as the
component is (keyed weakly), made empty on first ask."""
from __future__ import annotations

import dataclasses
import os
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wasmtime.component import Component

    from ..abi.images import MemoryImages


@dataclasses.dataclass(eq=False)
class Compiled:
    """`sidecar`: the component's memory images (abi/images.py), as bytes once compiled
    and as the compile cache's file once it is there (compile_cache.py); `engine`: the
    host's engine and linker it was compiled for; `images`: those images, opened;
    `funcs`: each export's index and types, found once for every instance (runtime.py)."""
    sidecar: bytes | os.PathLike | None = None
    engine: Any = None
    images: "MemoryImages | None" = None
    funcs: dict = dataclasses.field(default_factory=dict)


_RECORDS: "weakref.WeakKeyDictionary[Component, Compiled]" = weakref.WeakKeyDictionary()


def record(component: "Component") -> Compiled:
    """`component`'s record."""
    found = _RECORDS.get(component)
    if found is None:
        found = _RECORDS[component] = Compiled()
    return found

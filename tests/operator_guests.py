"""The data-flow operators the suite builds from source (guest/), once per content."""
from __future__ import annotations

import pathlib

from wasinn import build

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "tests"
# guest name -> the world it is built against
WORLDS = {"temperature": "wasinn:guest/operator-set", "operator-probe": "wasinn:guest/operator-probe"}


def operator_wasm(name: str) -> pathlib.Path:
    """guest/<name>, built as a standard component (no wasinn-only imports), cached."""
    return build.build_cached(build.guest_files(ROOT / "guest" / name), name=name, world=WORLDS[name],
                              cache_dir=CACHE, fastpath=False, progress=print)

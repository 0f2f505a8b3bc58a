"""Installed packages' versions, for the keys of the caches (compiled components, built
guests), read without importing importlib.metadata: that import (its email parser and
zip support) cost ~18 ms of every `wasinn classify`, which needs two versions.
"""
from __future__ import annotations

import functools
import os
import re
import sys


@functools.cache
def version(dist: str) -> str:
    """The version of the installed distribution `dist`, as importlib.metadata gives it.
    An installer names a wheel's metadata directory NAME-VERSION.dist-info (the name
    normalized to underscores); the first sys.path entry holding the name wins, as it
    does for importlib.metadata, which is asked for every other layout (eggs, zips)."""
    prefix = re.sub(r"[-_.]+", "_", dist).lower() + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        found = [n for n in names if n.lower().startswith(prefix) and n.endswith((".dist-info", ".egg-info"))]
        if len(found) == 1 and found[0].endswith(".dist-info"):
            return found[0][len(prefix):-len(".dist-info")]
        if found:
            break
    import importlib.metadata
    return importlib.metadata.version(dist)

"""Files wasinn ships: wit/, the bundled guests and the bundled model.

From a checkout they are read where they live in the repo; an installed wasinn carries
copies under wasinn/_data (see setup.py), so `pip install .` works without the repo.
"""
from __future__ import annotations

import pathlib

_PACKAGE = pathlib.Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent.parent


def path(relative: str) -> pathlib.Path:
    """The shipped file or directory `relative` (a path under the repo root)."""
    source = _CHECKOUT / relative
    if (_CHECKOUT / "pyproject.toml").is_file() and source.exists():
        return source
    return _PACKAGE / "_data" / relative

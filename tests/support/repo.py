"""This repository as the suite sees it: its root, the suite's cache (the plugin's
`wasinn_cache_dir`, pyproject.toml) and its own guests (guest/), built once per content
where a fixture cannot reach: at module level and in the suite's child processes."""
from __future__ import annotations

import pathlib

from wasinn import build

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "tests"

# guest name -> the world it is built against
GUESTS = {"roundtrip": "wasinn:guest/roundtrip-guest", "nn-cli": "wasinn:guest/ml-command",
          "inspect": "wasinn:guest/ml-introspect"}
# the reliability tests' guest: primitive wasi:nn operations by ids (wit/adversary.wit)
GUESTS["adversary"] = "wasinn:guest/adversary-guest"
# what a guest can reach: the network, the environment (tests/cli/test_peer_cli.py)
GUESTS["net-probe"] = "wasinn:guest/ml-command"


def xdg_cache_home() -> pathlib.Path:
    """XDG_CACHE_HOME for the wasinn commands the suite runs as a user would (the READMEs'
    lines, the CLI tests): its wasinn/ is the suite's own cache, so that a guest built or
    compiled once serves them all (each had its own: the classifier was built three times
    and compiled as often in a run from a fresh clone)."""
    home = ROOT / ".cache" / "xdg"
    home.mkdir(parents=True, exist_ok=True)
    try:
        (home / "wasinn").symlink_to(pathlib.Path("..") / CACHE.name)
    except FileExistsError:
        pass
    return home


def guest_component(name: str, *, fastpath: bool = True):
    """guest/<name> built once per content (cached in .cache/tests/components)."""
    return build.build_cached(build.guest_files(ROOT / "guest" / name),
                                     name=name if fastpath else f"{name}-standard", world=GUESTS[name],
                                     cache_dir=CACHE, fastpath=fastpath, progress=print)

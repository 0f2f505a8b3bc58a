"""Shared fixtures: guest components built once per content hash, one Host per session."""
from __future__ import annotations

import hashlib
import os
import pathlib

import pytest
from hypothesis import HealthCheck, settings

import wasinn

ROOT = pathlib.Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "tests"

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=10_000, deadline=None,
                          suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# guest name -> the world it is built against
GUESTS = {"roundtrip": "wasinn:guest/roundtrip-guest", "nn-cli": "wasinn:guest/ml-command"}


def _digest(*paths: pathlib.Path) -> str:
    h = hashlib.sha256()
    for base in paths:
        for f in sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(str(f.relative_to(base)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def guest_component(name: str) -> pathlib.Path:
    """Builds guest/<name> once per content of the guest and wit/ (cached on disk)."""
    src = ROOT / "guest" / name
    out = CACHE / f"{name}-{_digest(src, ROOT / 'wit', ROOT / 'host' / 'wasinn' / '_guest')}.wasm"
    if not out.exists():
        wasinn.build(src / "app.py", out, world=GUESTS[name], progress=print)
    return out


@pytest.fixture(scope="session")
def host() -> wasinn.Host:
    return wasinn.Host(cache_dir=CACHE / "compiled")


@pytest.fixture(scope="session")
def roundtrip_component(host):
    return host.load_component(guest_component("roundtrip"))


@pytest.fixture
def roundtrip(host, roundtrip_component):
    with host.instantiate(roundtrip_component) as inst:
        yield inst


@pytest.fixture(scope="session")
def nn_cli_wasm() -> pathlib.Path:
    return guest_component("nn-cli")

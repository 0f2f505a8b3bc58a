"""wasinn's pytest plugin (the `pytest11` entry point `wasinn`; pytest loads it, nothing else).

Fixtures:
    wasinn_host       one `Host` for the session (compiled components cached on disk)
    wasinn_build      build(app, world=..., fastpath=True) -> path of the component built from
                      app.py (a file or its directory, with the files beside it), once per content
    wasinn_instance   instance(component) -> an `Instance` of a .wasm (or loaded Component),
                      torn down after the test

Options:
    --wasinn-profile NAME   the hypothesis settings profile: `ci` (60 examples), `dev` (25),
                            `long` (10,000); default: $HYPOTHESIS_PROFILE, else `ci` under CI=true,
                            else `dev`
    --wasinn-cache-dir DIR  where built and compiled components are kept (default: the
                            `wasinn_cache_dir` ini setting, else $XDG_CACHE_HOME/wasinn)
"""
from __future__ import annotations

import os
import pathlib

import pytest

PROFILES = ("ci", "dev", "long")


def pytest_addoption(parser) -> None:
    group = parser.getgroup("wasinn")
    group.addoption("--wasinn-profile", choices=PROFILES, default=None,
                    help="hypothesis settings profile: ci (60 examples), dev (25), long (10,000)")
    group.addoption("--wasinn-cache-dir", default=None, metavar="DIR",
                    help="where wasinn keeps built and compiled components (default: the wasinn_cache_dir "
                         "ini setting, else $XDG_CACHE_HOME/wasinn)")
    parser.addini("wasinn_cache_dir", "where wasinn keeps built and compiled components (relative to the rootdir)")


def register_profiles() -> None:
    from hypothesis import HealthCheck, settings
    quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=quiet)
    settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=quiet)
    settings.register_profile("long", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))


def pytest_configure(config) -> None:
    try:
        from hypothesis import settings
    except ModuleNotFoundError:
        return  # the fixtures still work; the profiles need 'wasinn[testing]'
    register_profiles()
    name = config.getoption("wasinn_profile") or os.environ.get("HYPOTHESIS_PROFILE") \
        or ("ci" if os.environ.get("CI") else "dev")
    if name in PROFILES or config.getoption("wasinn_profile"):
        settings.load_profile(name)


def _cache_dir(config) -> pathlib.Path:
    from ..runtime import default_cache_dir
    option = config.getoption("wasinn_cache_dir")
    if option:
        return pathlib.Path(option)
    ini = config.getini("wasinn_cache_dir")
    return config.rootpath / ini if ini else default_cache_dir()


@pytest.fixture(scope="session")
def wasinn_host(pytestconfig):
    from .. import Host
    return Host(cache_dir=_cache_dir(pytestconfig))


@pytest.fixture(scope="session")
def wasinn_build(pytestconfig):
    from .. import build

    def build_app(app, *, world: str = build.DEFAULT_WORLD, fastpath: bool = True) -> pathlib.Path:
        app = pathlib.Path(app)
        directory = app if app.is_dir() else app.parent
        files = build.guest_files(directory)
        if not app.is_dir() and app.name != "app.py":
            files = {("app.py" if name == app.name else name): path for name, path in files.items()
                     if name != "app.py"}
        return build.build_cached(files, name=directory.name, world=world, cache_dir=_cache_dir(pytestconfig),
                                  fastpath=fastpath)
    return build_app


@pytest.fixture
def wasinn_instance(wasinn_host):
    made = []

    def instance(component, **kwargs):
        if isinstance(component, (str, os.PathLike)):
            component = wasinn_host.load_component(component)
        made.append(wasinn_host.instantiate(component, **kwargs))
        return made[-1]
    yield instance
    for inst in made:
        inst.close()

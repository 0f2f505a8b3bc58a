"""wasinn's pytest plugin (the `pytest11` entry point `wasinn`; pytest loads it, nothing else).

Fixtures:
    wasinn_host       one `Host` for the session (compiled components cached on disk)
    wasinn_build      build(app, wit=None, world=None, fastpath=True) -> path of the component
                      built from app.py (a file or its directory, with the files beside it),
                      once per content; `wit` and `world` as `wasinn build --wit --world`
                      (without `world`, the one world `wit` declares)
    wasinn_instance   instance(component) -> an `Instance` of a .wasm (or loaded Component),
                      torn down after the test; a @given test may not take it (every
                      example's instance would live until the test ends): it fails at setup
    wasinn_instance_per_example
                      instance(component) -> an `Instance` torn down when the current @given
                      example ends (memory stays flat over 10,000 examples); only inside @given

    @given(t=tensors(ty=TensorType.FP32, dims=[4]))
    def test_echo(wasinn_instance_per_example, t):
        inst = wasinn_instance_per_example("app.wasm")
        assert inst.call("echo", t).to_bytes() == t.to_bytes()

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

from ..errors import WasinnError

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
    # Instantiating a component is slow for hypothesis's taste, and large tensors are the
    # point. function_scoped_fixture stays on: a function-scoped fixture under @given is
    # shared by every example, which is how instances piled up to 8 GiB.
    quiet = [HealthCheck.too_slow]
    settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=quiet)
    settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=quiet)
    settings.register_profile("long", max_examples=10_000, deadline=None, suppress_health_check=[
        check for check in HealthCheck if check is not HealthCheck.function_scoped_fixture])


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

    def build_app(app, *, wit: str | os.PathLike | None = None, world: str | None = None,
                  fastpath: bool = True) -> pathlib.Path:
        app = pathlib.Path(app)
        directory = app if app.is_dir() else app.parent
        files = build.guest_files(directory)
        if not app.is_dir() and app.name != "app.py":
            files = {("app.py" if name == app.name else name): path for name, path in files.items()
                     if name != "app.py"}
        if wit is not None:
            if not pathlib.Path(wit).exists():
                raise WasinnError(f"wasinn_build(wit={os.fspath(wit)!r}): no such file or directory; give the "
                                  ".wit file (or directory) that declares the world")
            user = pathlib.Path(wit).resolve()
            world = build.resolve_world(world, user)
            # a .wit file beside app.py is one of its files already: named, not hashed a second time
            wit = user.name if user.name in files and files[user.name].resolve() == user else str(user)
        return build.build_cached(files, name=directory.name, world=world or build.DEFAULT_WORLD,
                                  cache_dir=_cache_dir(pytestconfig), fastpath=fastpath, wit=wit)
    return build_app


@pytest.fixture(scope="session")
def _wasinn_instantiate(wasinn_host):
    # A .wasm is loaded once per content: each load is a new Component (its code and
    # memory images mapped anew, ~27 MiB for a componentize-py guest) that every
    # instance made from it keeps alive.
    loaded = {}

    def instantiate(component, kwargs):
        if isinstance(component, (str, os.PathLike)):
            try:
                stat = os.stat(component)
                key = (os.path.realpath(component), stat.st_mtime_ns, stat.st_size)
            except OSError:
                key = None  # load_component says what is wrong with the path
            if key not in loaded:
                loaded[key] = wasinn_host.load_component(component)
            component = loaded[key]
        return wasinn_host.instantiate(component, **kwargs)
    return instantiate


@pytest.fixture
def wasinn_instance(request, _wasinn_instantiate):
    if hasattr(request.function, "hypothesis"):  # a @given test
        pytest.fail(f"{request.node.nodeid}: wasinn_instance is torn down after the test, not after each @given "
                    "example, so every example's instance would stay alive: take wasinn_instance_per_example",
                    pytrace=False)
    made = []

    def instance(component, **kwargs):
        made.append(_wasinn_instantiate(component, kwargs))
        return made[-1]
    yield instance
    for inst in made:
        inst.close()


@pytest.fixture(scope="session")
def wasinn_instance_per_example(_wasinn_instantiate):
    from hypothesis.control import cleanup, currently_in_test_context

    def instance(component, **kwargs):
        if not currently_in_test_context():
            raise WasinnError("wasinn_instance_per_example makes instances for @given examples (each torn down "
                              "when its example ends); outside @given take wasinn_instance")
        inst = _wasinn_instantiate(component, kwargs)
        cleanup(inst.close)
        return inst
    return instance

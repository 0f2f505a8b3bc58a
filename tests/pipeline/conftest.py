"""The pipeline tests' own fixtures (their host is the plugin's `wasinn_host`)."""
from __future__ import annotations

import io

import pytest

from wasinn.pipeline.jsonlog import EventLog
from wasinn.pipeline.operator import Services

from support.pipeline_netns import Namespaces, Unavailable
from support.pipeline_service import Broker


@pytest.fixture(scope="module")
def services():
    """Embedded services for a test module's operators, their log kept off the output."""
    s = Services.embedded(log=EventLog(stream=io.StringIO()))
    yield s
    s.close()


@pytest.fixture(scope="module")
def net():
    """Two network namespaces, host1 and host2, as two machines (skipped where the kernel
    or the sandbox gives none)."""
    try:
        with Namespaces(["host1", "host2"]) as n:
            yield n
    except Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def broker():
    """A mosquitto of the module's own (test_pipeline_secure's has TLS and users: its own fixture)."""
    with Broker() as b:
        yield b

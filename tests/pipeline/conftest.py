"""The pipeline tests' own fixtures (their host is the plugin's `wasinn_host`)."""
from __future__ import annotations

import io

import pytest

from wasinn.pipeline.jsonlog import EventLog
from wasinn.pipeline.operator import Services


@pytest.fixture(scope="module")
def services():
    """Embedded services for a test module's operators, their log kept off the output."""
    s = Services.embedded(log=EventLog(stream=io.StringIO()))
    yield s
    s.close()

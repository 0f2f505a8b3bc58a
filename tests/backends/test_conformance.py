"""ONNX's backend node tests through a guest component (a quarter of them, and every
case with a 16-bit float; tests/support/run_conformance.py runs them all and prints the table):
every case native onnxruntime passes, and whose tensors wasi:nn's types can carry,
passes through wasinn with the same tolerance."""
from __future__ import annotations

import numpy as np
import pytest

import wasinn
from wasinn import TensorType
from wasinn.tensors import DTYPES

from support import conformance
from support.conformance import PASS
from support.repo import CACHE, guest_component

HALF = {np.dtype(np.float16), DTYPES[TensorType.BF16]}


def selected() -> list[conformance.Case]:
    return [c for i, c in enumerate(conformance.cases())
            if i % 4 == 0 or any(getattr(v, "dtype", None) in HALF for v in [*c.inputs, *c.expected])]


@pytest.fixture(scope="module")
def inst():
    host = wasinn.Host(cache_dir=CACHE, ort_threads=1)  # one thread: ~600 sessions created and freed
    with host.instantiate(host.load_component(guest_component("adversary"))) as inst:
        yield inst


def test_what_native_passes_passes_through_the_guest(inst):
    rows = conformance.run(inst, selected())
    print("\n" + conformance.table(rows))
    bad = [f"{r.case}: {r.wasinn.outcome}: {r.wasinn.detail}" for r in rows if r.violation]
    assert not bad, "\n".join(bad)
    assert inst.instances_started == 1  # no case trapped
    assert sum(r.wasinn.outcome == PASS for r in rows) > 0.6 * len(rows)

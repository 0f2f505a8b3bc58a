"""Many instances of one component served from parallel threads: each gets exactly
what a serial run gets, and no instance can see or touch another's handles."""
from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest

import wasinn
from wasinn import TensorType

from support import models

THREADS = 8
ROUNDS = 20
CNN, IDENTITY = models.small_cnn(), models.identity(TensorType.I64)


def workload(inst, worker: int) -> list[tuple]:
    """One worker's calls, with inputs that differ by worker and round: what it read back."""
    rng = np.random.default_rng(worker)
    cnn = inst.call("init-context", inst.call("load", [CNN], "onnx", "cpu").payload).payload
    echo = inst.call("init-context", inst.call("load", [IDENTITY], "onnx", "cpu").payload).payload
    seen = []
    for r in range(ROUNDS):
        image = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
        probs = inst.call("compute", cnn, [("image", inst.call("adopt", image))]).payload
        mark = np.full(worker + 1, worker * 1000 + r, np.int64)  # shape and values name the worker
        made = inst.call("make-tensor", [worker + 1], "I64", mark.tobytes())
        back = inst.call("compute", echo, [("x", made)]).payload
        seen.append((inst.call("read", probs[0][1]).data, bytes(inst.call("read", back[0][1]).data)))
        for _, key in probs + back:
            inst.call("drop", key)
        want = {"tensor": 0, "graph": 2, "graph_execution_context": 2, "error": 0}
        assert inst.live_resources() == want, inst.live_resources()
        assert inst.call("counts").tensors == 0
    inst.call("reset")
    return seen


def test_parallel_instances_match_the_serial_run(wasinn_host, adversary_component):
    with wasinn_host.instantiate(adversary_component) as inst:
        serial = [workload(inst, w) for w in range(THREADS)]
    instances = [wasinn_host.instantiate(adversary_component) for _ in range(THREADS)]
    start = threading.Barrier(THREADS)

    def run(w):
        start.wait()  # all at once
        return workload(instances[w], w)

    try:
        with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
            parallel = list(pool.map(run, range(THREADS)))
        assert parallel == serial
        for w, inst in enumerate(instances):
            assert inst.instances_started == 1
            marks = [np.frombuffer(b, np.int64) for _, b in parallel[w]]
            assert all((m == w * 1000 + r).all() and len(m) == w + 1 for r, m in enumerate(marks))
    finally:
        for inst in instances:
            inst.close()


def test_reps_belong_to_one_instance_each(wasinn_host, adversary_component):
    """The host's table tags every object with its instance; live counts add up."""
    instances = [wasinn_host.instantiate(adversary_component) for _ in range(4)]
    try:
        def hold(w):
            inst = instances[w]
            for _ in range(10 * (w + 1)):
                inst.call("make-filled", [4], "U8", 4, w)
            return set(inst._session.reps)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            reps = list(pool.map(hold, range(4)))
        for w, inst in enumerate(instances):
            assert len(reps[w]) == 10 * (w + 1) == inst.live_resources()["tensor"]
            assert all(wasinn_host.nn._objects[rep][2] is inst._session for rep in reps[w])
            assert not reps[w] & set().union(*(reps[:w] + reps[w + 1:]))
    finally:
        for inst in instances:
            inst.close()


@pytest.mark.parametrize("kind", ["tensor", "graph", "context"])
def test_forged_handles_never_reach_another_instance(wasinn_host, adversary_component, kind):
    """While other instances hold many objects, one that holds nothing forges every
    small handle number: each names nothing of its own, so each traps; it never gets
    another instance's object."""
    holders = [wasinn_host.instantiate(adversary_component) for _ in range(3)]
    forger = wasinn_host.instantiate(adversary_component)
    try:
        for inst in holders:
            ctx = inst.call("init-context", inst.call("load", [IDENTITY], "onnx", "cpu").payload)
            assert ctx.tag == "ok"
            for n in range(30):
                inst.call("make-tensor", [1], "I64", np.int64(n).tobytes())
        stop = threading.Event()

        def keep_busy(inst):
            while not stop.is_set():
                inst.call("drop", inst.call("make-tensor", [1], "U8", b"x"))

        with concurrent.futures.ThreadPoolExecutor(len(holders)) as pool:
            busy = [pool.submit(keep_busy, inst) for inst in holders]
            try:
                for handle in range(1, 48):
                    with pytest.raises(wasinn.GuestTrap, match="unknown handle index|wrong type"):
                        forger.call("forge", kind, handle)
            finally:
                stop.set()
            for f in busy:
                f.result()
        assert forger.instances_started == 47
        for inst in holders:
            assert inst.instances_started == 1
            assert inst.live_resources()["tensor"] == 30
    finally:
        for inst in [*holders, forger]:
            inst.close()


def test_an_instance_is_not_closed_under_a_call_of_it():
    """Closing an instance from another thread while a call of it ran freed the store
    under wasmtime: the process aborted (a Rust panic) or died of SIGSEGV. Now that is one
    line, the call ends as it would, and the instance closes after it."""
    import time

    from support.repo import guest_component
    from wasinn.limits import Limits
    host = wasinn.Host(limits=Limits(deadline=30))
    inst = host.instantiate(host.load_component(guest_component("roundtrip")))
    inst.call("spin", 0.01)
    started = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(lambda: (started.set(), inst.call("spin", 1.0))[1])
        started.wait()
        time.sleep(0.3)
        with pytest.raises(wasinn.WasinnError, match="cannot close the instance while a call of it runs"):
            inst.close()
        assert running.result() > 0
    inst.close()


def test_dropping_contexts_of_dropped_graphs_does_not_hold_up_other_instances():
    """A guest holding 10,000 tensors and 20 graphs it dropped while their contexts live
    drops the contexts: each drop looks only at its own graph (per-graph counts), not at
    every entry of the instance once per such graph (63 graphs beside 65,000 tensors held
    nn's lock, which every instance shares, 1-2 s a drop: another instance's tensor
    constructor ran past its own deadline). Another instance's calls meanwhile: medians,
    within 10x of alone (a noisy 2-core machine)."""
    import statistics
    import time

    from wasinn.limits import Limits

    from support.meanwhile import calls_meanwhile
    from support.repo import guest_component
    host = wasinn.Host(limits=Limits(isolate="none", max_tensors=65_536))  # an operator's, past the default 4,096
    component = host.load_component(guest_component("adversary"))
    with host.instantiate(component) as attacker, host.instantiate(component) as other:
        for _ in range(10_000):
            attacker.call("make-tensor", [1], "U8", b"\0")
        contexts = []
        for i in range(20):  # models of their own: one model's bytes load as one graph (the graph cache)
            graph = attacker.call("load", [models.identity(TensorType.U8, (i + 1,))], "onnx", "cpu").payload
            contexts.append(attacker.call("init-context", graph).payload)
            attacker.call("drop", graph)
        assert attacker.live_resources()["graph"] == 20  # lingering: their contexts run them

        def once() -> float:
            start = time.monotonic()
            other.call("drop", other.call("make-tensor", [1], "U8", b"\0"))
            return time.monotonic() - start
        alone = [once() for _ in range(200)]
        with calls_meanwhile(once) as during:
            for ctx in contexts:  # spread over 0.2 s, so that the other instance calls between and during them
                attacker.call("drop", ctx)
                time.sleep(0.01)
        assert attacker.live_resources()["graph"] == 0
        assert len(during) > 10 and statistics.median(during) < 10 * statistics.median(alone), \
            (statistics.median(during), statistics.median(alone), len(during))

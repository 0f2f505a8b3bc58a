"""Where graphs run (backends/isolated.py): a guest's own model bytes in a confined worker
process of its instance, the operator's models in process (or in one shared worker under
`isolate = "all"`), and what an instance sees when its worker is gone. The hostile
models themselves are tests/backends/test_hostile_models.py's."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import wasinn
from wasinn.backends import confine
from wasinn.limits import Limits

from support import models
from support.repo import CACHE, guest_component


def make_host(**limits) -> wasinn.Host:
    return wasinn.Host(cache_dir=CACHE, limits=Limits().updated(limits))


def roundtrip(host: wasinn.Host) -> wasinn.Instance:
    return host.instantiate(host.load_component(guest_component("roundtrip")))


def ok(result):
    assert result.tag == "ok", vars(result.payload)
    return result.payload


def add_mul_context(inst: wasinn.Instance) -> int:
    return ok(inst.call("init-context", ok(inst.call("load", [models.add_mul()], "onnx", "cpu"))))


def run_add_mul(inst: wasinn.Instance, ctx: int):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = dict(ok(inst.call("compute-tensors", ctx, [("a", a), ("b", a)])))
    np.testing.assert_array_equal(out["sum"].array(), a + a)
    np.testing.assert_array_equal(out["product"].array(), a * a)


def graph_backend(inst: wasinn.Instance) -> str:
    graphs = [obj for kind, obj, session in inst.host.nn._objects.values()
              if session is inst._session and kind.name == "GRAPH"]
    return graphs[-1].backend


def test_a_guests_own_model_runs_in_its_instances_worker_and_computes_the_same():
    host = make_host()
    with roundtrip(host) as a, roundtrip(host) as b:
        ctx_a, ctx_b = add_mul_context(a), add_mul_context(b)
        assert graph_backend(a) == "onnxruntime (isolated)"
        run_add_mul(a, ctx_a)
        run_add_mul(b, ctx_b)
        assert a._session.worker.pid != b._session.worker.pid  # one worker never serves two instances
        worker = a._session.worker
    assert worker.dead  # closing the instance ended its worker
    assert gone(f"/proc/{worker.pid}")


def test_isolated_outputs_of_fixed_and_dynamic_size_come_back_whole():
    # fixed sizes are written by onnxruntime into shared memory (the 4 MiB one past the
    # worker's first shared memory), a dynamic one is copied there after the run
    host = make_host()
    with roundtrip(host) as inst:
        for shape, x in [(None, np.arange(5, dtype=np.float32)),
                         ((1, 1 << 20), np.arange(1 << 20, dtype=np.float32).reshape(1, -1))]:
            model = models.identity(wasinn.TensorType.FP32, shape)
            ctx = ok(inst.call("init-context", ok(inst.call("load", [model], "onnx", "cpu"))))
            for _ in range(2):
                out = dict(ok(inst.call("compute-tensors", ctx, [("x", x)])))
                np.testing.assert_array_equal(out["y"].array(), x)
                x = x + 1



def test_outputs_of_a_size_the_model_does_not_fix_never_land_on_the_instances_other_tensors():
    """The worker writes outputs only into the room the host took for them, not as far as
    the file goes: before, a 1.6 MB output went from the 64 bytes the host had taken (in
    the hole a dropped tensor left) over a tensor the guest still held (551,488 of its
    1 MiB changed, with no error)."""
    import gc

    from wasmtime.component import Record

    def value(x: np.ndarray, ty: wasinn.TensorType) -> Record:
        r = Record()
        r.dimensions, r.ty, r.data = list(x.shape), ty.value, x.tobytes()
        return r

    with roundtrip(make_host()) as inst:
        ctx = ok(inst.call("init-context", ok(inst.call("load", [models.filled(1.5)], "onnx", "cpu"))))
        dropped = inst.call("make", value(np.ones((1, 1 << 18), np.float32), wasinn.TensorType.FP32))
        kept = inst.call("make", value(np.full((1, 1 << 18), 2, np.float32), wasinn.TensorType.FP32))
        del dropped
        gc.collect()
        for n in (400_000, 100, 600_000):
            out = dict(ok(inst.call("compute", ctx, [("shape", value(np.array([n], np.int64), wasinn.TensorType.I64))])))
            assert out["y"].data == np.full(n, 1.5, np.float32).tobytes()
            assert kept.to_bytes() == np.full(1 << 18, 2, np.float32).tobytes()


def test_workers_that_die_in_one_call_are_closed_as_they_are_replaced():
    """A guest that kills its worker (a model LiteRT's parser recurses on) and loads again,
    over and over within one call, gets a new worker each time; the dead one's shared
    memory and pidfd go as it is replaced, not when the instance closes (before, 40 such
    rounds left 1,248 MiB of shared memory and 39 memfds open, 700 took the process to its
    file descriptor limit)."""
    from support import hostile_models
    from wasinn._bindings import ExecutionTarget, GraphEncoding
    from wasinn.backends.isolation import Isolation
    from wasinn.errors import NnError

    class Owner:  # what Isolation keeps per instance (a session)
        worker = None
    isolation, owner = Isolation(Limits()), Owner()
    workers, fds = [], []
    for _ in range(6):
        workers.append(isolation.worker(owner))
        workers[-1].tensor(1 << 20)[:] = 1  # its shared memory in use
        with pytest.raises(NnError, match="ended \\(SIGSEGV\\) while loading the model"):
            isolation.load(owner, "tflite", GraphEncoding.TENSORFLOWLITE, 1, "f32",
                           [hostile_models.tflite_recursive("if")], ExecutionTarget.CPU, None)
        fds.append(len(os.listdir("/proc/self/fd")))
    assert all(w.dead and w.pidfd is None and w.memory.fd == -1 for w in workers[:-1])
    assert fds[-1] <= fds[1]  # none left behind by the workers replaced
    graph = isolation.load(owner, "onnxruntime", GraphEncoding.ONNX, 1, "f32", [models.add_mul()],
                           ExecutionTarget.CPU, None)
    assert graph.worker is owner.worker and not owner.worker.dead
    owner.worker.close()




def test_an_output_named_past_65535_bytes_comes_back_as_in_process():
    """An output's name crosses from the worker with its length in 32 bits (in 16, a
    100,000-byte name failed each compute with struct's 'ushort format requires ...')."""
    from onnx import TensorProto, helper
    name = "y" * 100_000
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], [name])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2])]),
        opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with roundtrip(make_host()) as inst:
        ctx = ok(inst.call("init-context", ok(inst.call("load", [model], "onnx", "cpu"))))
        x = np.array([1.5, -2], np.float32)
        assert [(n, t.array().tolist()) for n, t in ok(inst.call("compute-tensors", ctx, [("x", x)]))] == \
            [(name, [1.5, -2])]



def test_a_graph_dropped_while_its_context_lives_is_counted_until_the_context_goes():
    """A component's graph resource dropped with a context of it alive lives on in the
    context (and in the worker): it stays counted against max-graphs and max-host-bytes
    until the context goes (before, dropping each graph and keeping its context took a
    worker past max-graphs, up to its address-space cap)."""
    with roundtrip(make_host(max_graphs=2)) as inst:
        contexts = []
        for _ in range(2):
            graph = ok(inst.call("load", [models.add_mul()], "onnx", "cpu"))
            contexts.append(ok(inst.call("init-context", graph)))
            inst.call("drop-graph", graph)
        refused = inst.call("load", [models.add_mul()], "onnx", "cpu")
        assert refused.tag == "err" and "max-graphs" in refused.payload.data
        run_add_mul(inst, contexts[0])  # a dropped graph's context computes
        inst.call("drop-context", contexts[0])
        graph = ok(inst.call("load", [models.add_mul()], "onnx", "cpu"))  # its graph went with it
        run_add_mul(inst, ok(inst.call("init-context", graph)))


def test_making_an_execution_context_is_held_to_the_calls_deadline():
    """LiteRT builds a whole interpreter for each execution context; an isolated graph's
    worker is stopped at the call's deadline there too (before, the context was made with
    no deadline: 1.6 s past a 2 s one). The deadline is a tenth of what making one took
    just before: a tenth of the load's time had not stopped it on a busy machine, where
    the load took longer than the context."""
    from support import tflite_models
    from wasinn._bindings import ErrorCode, ExecutionTarget, GraphEncoding
    from wasinn.backends.isolation import Isolation
    from wasinn.errors import NnError

    class Owner:  # what Isolation keeps per instance (a session)
        worker = None
    isolation, owner = Isolation(Limits()), Owner()
    graph = isolation.load(owner, "tflite", GraphEncoding.TENSORFLOWLITE, 1, "f32",
                           [tflite_models.add_chain(60_000)], ExecutionTarget.CPU, None)
    started = time.monotonic()
    graph.init_execution_context(deadline=None)
    took = time.monotonic() - started
    started = time.monotonic()
    with pytest.raises(NnError) as refused:
        graph.init_execution_context(deadline=started + took / 10)
    assert refused.value.code == ErrorCode.TIMEOUT
    assert "the backend did not finish by the call's deadline" in refused.value.message
    assert time.monotonic() - started < took / 10 + 1 and owner.worker.dead  # back within deadline + 1 s
    owner.worker.close()


def test_an_input_is_copied_into_the_workers_memory_no_further_than_the_calls_deadline():
    """A tensor made before its instance had a worker (on the heap) is copied into the
    worker's shared memory at compute: a slice at a time, each without the GIL, none begun
    past the call's deadline (copies.py). Before, one slice assignment of 512 MiB held every
    other thread 0.37-0.55 s, and ran a compute begun just before its deadline past it.
    Here the deadline has passed before the copy: `timeout`, nothing copied, and the
    worker serves the next compute."""
    from wasinn._bindings import ErrorCode, ExecutionTarget, GraphEncoding, TensorType
    from wasinn.backends.isolation import Isolation
    from wasinn.copies import SLICE
    from wasinn.errors import NnError
    from wasinn.tensors import HostTensor

    class Owner:  # what Isolation keeps per instance (a session)
        worker = None
    isolation, owner = Isolation(Limits()), Owner()
    graph = isolation.load(owner, "onnxruntime", GraphEncoding.ONNX, 1, "f32", [models.identity(TensorType.FP32)],
                           ExecutionTarget.CPU, None)
    context = graph.init_execution_context(None)
    x = np.arange(3 * SLICE // 4, dtype=np.float32)
    tensor = HostTensor(x.shape, TensorType.FP32, x.view(np.uint8))
    with pytest.raises(NnError) as late:
        context.compute([tensor], deadline=time.monotonic() - 1)
    assert (late.value.code, late.value.message) == (
        ErrorCode.TIMEOUT, f"the copy of an input into the backend worker's shared memory ({3 * SLICE} bytes) had "
                           "not finished by the call's deadline (0 bytes copied)")
    (name, y), = context.compute([tensor], deadline=time.monotonic() + 60)
    assert name == "y" and np.array_equal(y.array(), x)
    owner.worker.close()


def test_a_large_tensor_an_instance_makes_is_read_by_its_worker_in_place_and_freed_with_it(tmp_path):
    # from 64 KiB a tensor the guest makes lies in its worker's shared memory, which the
    # worker reads without a copy; its extent goes back to the arena when the tensor goes,
    # and the file grows (a new mapping on both sides) when the live tensors need more
    import gc

    from wasmtime.component import Record

    from support.internals import worker_memory
    from wasinn import nn

    def value(x: np.ndarray) -> Record:
        r = Record()
        r.dimensions, r.ty, r.data = list(x.shape), wasinn.TensorType.FP32.value, x.tobytes()
        return r

    host = make_host()
    path = tmp_path / "registered.onnx"
    path.write_bytes(models.identity(wasinn.TensorType.FP32, (1, 1 << 18)))
    host.models.register("registered", path)
    with roundtrip(host) as inst:
        for n in (1 << 18, 5 << 17):  # 1 MiB (past the file's first size), then 2.5 MiB
            model = models.identity(wasinn.TensorType.FP32, (1, n))
            ctx = ok(inst.call("init-context", ok(inst.call("load", [model], "onnx", "cpu"))))
            memory = worker_memory(inst)
            kept = inst.call("make", value(np.ones((1, n), np.float32)))  # a tensor the guest made, alive
            assert len(memory.arrays) == 1 and memory.size >= n * 4
            for i in range(3):
                x = np.full((1, n), i, np.float32)
                out = dict(ok(inst.call("compute", ctx, [("x", value(x))])))
                assert out["y"].data == x.tobytes()
            assert kept.to_bytes() == np.ones(n, np.float32).tobytes()
            assert nn._in_shared_memory(kept.data)
            del kept
            gc.collect()
            assert not memory.arrays
            at = memory.take(1)  # the finalizers' extents are freed at the next take
            assert memory.free == [(64, memory.size - 64)]
            memory.give_back(at, 1)
        # the operator's model runs in process: it reads a copy of a tensor in the worker's file
        registered = ok(inst.call("init-context", ok(inst.call("load-by-name", "registered"))))
        x = np.arange(1 << 18, dtype=np.float32).reshape(1, -1)
        assert dict(ok(inst.call("compute", registered, [("x", value(x))])))["y"].data == x.tobytes()


def test_tensors_that_fragment_the_shared_memory_keep_it_within_max_host_bytes():
    # a hostile pattern for a first-fit arena: tensors of 17 sizes, some kept, some let go;
    # past max-host-bytes the instance's tensors go to ordinary memory instead
    from wasmtime.component import Record

    from support.internals import worker_memory

    def value(n: int) -> Record:
        r = Record()
        r.dimensions, r.ty, r.data = [n], wasinn.TensorType.U8.value, bytes(n)
        return r

    limit = 8 << 20
    with roundtrip(make_host(max_host_bytes=limit)) as inst:
        ok(inst.call("load", [models.identity(wasinn.TensorType.FP32, (1, 4))], "onnx", "cpu"))
        memory, kept, peak = worker_memory(inst), [], 0
        for i in range(120):
            kept.append(inst.call("make", value((64 << 10) * (1 + i % 17))))
            if len(kept) > 6:
                kept.pop(i % 5)
            peak = max(peak, memory.size)
        assert peak <= limit * 5 // 4, peak  # a quarter of headroom: growth maps the file anew on both sides


def test_a_compute_takes_the_shared_memory_no_further_than_twice_max_host_bytes():
    # a tensor made before the instance had a worker lies on the heap and crosses as a
    # copy, beside the room for the outputs: the file (resident once written, never
    # shrunk) holds at most the instance's tensors and one compute's copies and room,
    # twice max-host-bytes (a reply asking more is refused with too-large)
    from support.internals import worker_memory
    limit = 8 << 20
    n = limit * 9 // 10
    host = make_host(max_host_bytes=limit, max_output_bytes=limit)
    with host.instantiate(host.load_component(guest_component("adversary"))) as inst:
        t = inst.call("make-filled", [n], "U8", n, 7)  # no worker yet: on the heap
        graph = ok(inst.call("load", [models.identity(wasinn.TensorType.U8)], "onnx", "cpu"))
        ctx = ok(inst.call("init-context", graph))
        (name, y), = ok(inst.call("compute", ctx, [("x", t)]))
        assert name == "y" and inst._session.host_bytes >= n
        memory = worker_memory(inst)
        assert inst._session.worker.file_bytes == 2 * limit + (1 << 20)
        assert memory.size <= 2 * limit + (1 << 20), memory.size  # growth's extra quarter held to it too


def test_a_graph_the_host_refuses_for_its_description_is_dropped_in_the_worker_too():
    # a model whose input has rank 65: the worker loads it, the host refuses what it says
    # of it (ranks past 64) and the guest gets one line; the worker is told to drop it at
    # the next request (kept, nine such graphs took a worker's memory to its cap)
    import gc

    from onnx import TensorProto, helper
    rank65 = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1] * 65)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1] * 65)]),
        opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with roundtrip(make_host()) as inst:
        result = inst.call("load", [rank65], "onnx", "cpu")
        assert result.tag == "err" and "inputs or outputs wrongly" in result.payload.data, vars(result.payload)
        gc.collect()
        worker = inst._session.worker
        assert [kind for kind, _ in worker.dropped] == ["graph"]
        ok(inst.call("load", [models.identity(wasinn.TensorType.FP32, (1, 4))], "onnx", "cpu"))
        assert worker.dropped == [] and not worker.dead


def test_under_isolate_all_an_instances_overlong_compute_touches_no_other_instance(tmp_path):
    # the operator's models in a worker per instance, as a guest's own: in one worker
    # shared by all, A's compute of one long Conv node held B's calls on another model to
    # B's own deadline (a trap), and A's kill at its deadline failed B's context
    from support import hostile_models
    from support.meanwhile import calls_meanwhile
    (tmp_path / "long.onnx").write_bytes(hostile_models.onnx_long_conv())
    (tmp_path / "add.onnx").write_bytes(models.add_mul())
    host = make_host(isolate="all", deadline="5s")  # its loads too: a loaded machine took 2 s
    host.models.register("long", tmp_path / "long.onnx")
    host.models.register("add", tmp_path / "add.onnx")
    component = host.load_component(guest_component("adversary"))
    with host.instantiate(component) as a, host.instantiate(component) as b:
        long = ok(a.call("init-context", ok(a.call("load-by-name", "long"))))
        add = ok(b.call("init-context", ok(b.call("load-by-name", "add"))))

        def run_add() -> str:
            x = b.call("make-filled", [2, 3], "FP32", 24, 0)
            y = b.call("make-filled", [2, 3], "FP32", 24, 0)
            return b.call("compute", add, [("a", x), ("b", y)]).tag
        assert run_add() == "ok"
        with calls_meanwhile(run_add) as results:
            result = a.call("compute", long, [("x", a.call("make-filled", [1], "FP32", 4, 0))])
        assert (result.tag, result.payload.code) == ("err", "timeout")
        assert results and set(results) == {"ok"}  # none waited for A's worker, none trapped
        assert run_add() == "ok"  # B's context lives on: A's worker was not B's
        assert a._session.worker is not b._session.worker


def test_a_workers_memory_cap_follows_its_live_graphs_down():
    # raised to load each graph, and lowered as they go (it had stayed at its highest: 63
    # graphs loaded and 62 dropped gave the last one 63 graphs' cap, and a 1.5 GB
    # intermediate of a guest's model computed under a budget of 64 MiB a graph)
    import gc

    def soft_cap(pid: int) -> int:
        with open(f"/proc/{pid}/limits") as f:
            return int(next(line for line in f if line.startswith("Max address space")).split()[3])
    per_graph = 64 << 20
    with roundtrip(make_host(max_backend_memory=per_graph)) as inst:
        graphs = [ok(inst.call("load", [models.identity(wasinn.TensorType.FP32, (1, i + 1))], "onnx", "cpu"))
                  for i in range(4)]
        worker = inst._session.worker
        four = soft_cap(worker.pid)
        for g in graphs[1:]:
            inst.call("drop-graph", g)
        gc.collect()
        ok(inst.call("init-context", graphs[0]))  # the drops reach the worker with the next request
        assert soft_cap(worker.pid) == four - 3 * per_graph


def test_a_workers_first_load_of_a_model_with_an_unknown_rank_maps_no_onnx_package():
    # onnxruntime describes an unknown rank and a scalar alike; telling them apart by
    # importing onnx had every worker map its native libraries (~0.9 s of a guest's first
    # graph.load of such a model, ~30 ms otherwise): formats.graph_values reads the bytes
    with roundtrip(make_host()) as inst:
        graph = ok(inst.call("load", [models.identity(wasinn.TensorType.FP32, None)], "onnx", "cpu"))
        assert graph_backend(inst) == "onnxruntime (isolated)"
        with open(f"/proc/{inst._session.worker.pid}/maps") as maps:
            mapped = maps.read()
        assert "onnxruntime" in mapped and "/onnx/" not in mapped and "ml_dtypes" not in mapped
        ctx = ok(inst.call("init-context", graph))
        (name, y), = ok(inst.call("compute-tensors", ctx, [("x", np.array(2.5, np.float32))]))
        assert name == "y" and y.array() == np.float32(2.5)


def test_an_idle_worker_takes_no_cpu():
    # a worker's onnxruntime threads spin after a run as they do in process (the next run
    # starts sooner: EfficientNet-Lite0 isolated ~0.07 ms closer to in process), ~30 ms of
    # a core here; then they sleep, and so does the worker, until the host asks again
    import time

    from support.repo import ROOT
    model = (ROOT / "models" / "efficientnet-lite0" / "model.onnx").read_bytes()
    with roundtrip(make_host()) as inst:
        ctx = ok(inst.call("init-context", ok(inst.call("load", [model], "onnx", "cpu"))))
        stat = f"/proc/{inst._session.worker.pid}/stat"

        def cpu_ticks() -> int:
            fields = open(stat).read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime
        idle = []
        for _ in range(3):
            ok(inst.call("compute-tensors", ctx, [("input", np.zeros((1, 3, 224, 224), np.float32))]))
            time.sleep(0.3)  # onnxruntime's own spinning ends within it
            before = cpu_ticks()
            time.sleep(0.3)
            idle.append(cpu_ticks() - before)
        assert min(idle) == 0, idle


def test_a_model_lying_about_its_output_shape_computes_as_in_process():
    # it declares a fixed 4 MiB output (bound into shared memory) and computes 5 elements:
    # the bound run fails, and the worker runs it unbound, as the host runs it in process
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 20])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    x = np.arange(5, dtype=np.float32)
    for policy in ("guest-models", "none"):
        with roundtrip(make_host(isolate=policy)) as inst:
            ctx = ok(inst.call("init-context", ok(inst.call("load", [model], "onnx", "cpu"))))
            out = dict(ok(inst.call("compute-tensors", ctx, [("x", x)])))
            np.testing.assert_array_equal(out["y"].array(), x)
            big = np.arange(1 << 20, dtype=np.float32)  # and what it declares, next, bound
            np.testing.assert_array_equal(dict(ok(inst.call("compute-tensors", ctx, [("x", big)])))["y"].array(), big)


def test_a_model_whose_output_size_changes_under_the_same_inputs_computes_as_in_process():
    # NonZero, its output declared [1, 2]: the same input layout gives outputs of other sizes
    # from one run to the next, so a worker's plan of that layout (worker.Worker.compute)
    # meets outputs not of its sizes, and the context goes the general way, as in process
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("NonZero", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    xs = [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    got = {}
    for policy in ("guest-models", "none"):
        with roundtrip(make_host(isolate=policy)) as inst:
            ctx = ok(inst.call("init-context", ok(inst.call("load", [model], "onnx", "cpu"))))
            got[policy] = [dict(ok(inst.call("compute-tensors", ctx, [("x", np.array(x, np.float32))])))["y"]
                           .array().tolist() for x in xs]
    assert got["guest-models"] == got["none"] == [[list(np.flatnonzero(x))] for x in xs]


def test_onnxruntime_writes_outputs_of_fixed_size_into_the_buffers_it_is_given():
    from wasinn.backends import default_backends
    graph = default_backends(0)[wasinn.GraphEncoding.ONNX].load([models.add_mul()], wasinn.ExecutionTarget.CPU)
    a = wasinn.HostTensor.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))
    room = bytearray(48)
    out = dict(graph.init_execution_context().compute([a, a], into=[memoryview(room)[:24], memoryview(room)[24:]]))
    assert np.shares_memory(out["sum"].data, np.frombuffer(room, np.uint8))
    np.testing.assert_array_equal(np.frombuffer(room, np.float32), np.concatenate([2 * a.array(), a.array() ** 2], None))


def gone(path: str) -> bool:
    """Whether `path` is gone within 5 s (the fork server reaps a killed worker and removes
    its directory when SIGCHLD reaches it)."""
    deadline = time.monotonic() + 5
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return not os.path.exists(path)


def test_registered_models_stay_in_process_unless_isolate_is_all(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(models.add_mul())
    for policy, backend in (("guest-models", "onnxruntime"), ("all", "onnxruntime (isolated)")):
        host = make_host(isolate=policy)
        host.models.register("m", path)
        with roundtrip(host) as inst:
            ctx = ok(inst.call("init-context", ok(inst.call("load-by-name", "m"))))
            assert graph_backend(inst) == backend
            run_add_mul(inst, ctx)
            # under "all", in the instance's own worker (shared by all, one instance's overlong
            # compute had held the others' calls to their deadlines)
            assert (inst._session.worker is not None) == (policy == "all")


_LEAVES = """
import os, signal, sys, numpy as np, wasinn
host = wasinn.Host(cache_dir=sys.argv[1])
inst = host.instantiate(host.load_component(sys.argv[2]))
graph = inst.call("load", [open(sys.argv[3], "rb").read()], "onnx", "cpu")
assert graph.tag == "ok" and inst.call("init-context", graph.payload).tag == "ok"
(server,) = os.listdir(os.environ["TMPDIR"])
print(server, len(os.listdir(os.path.join(os.environ["TMPDIR"], server))), flush=True)
if sys.argv[4] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("end", ["exits", "killed"])
def test_a_host_leaves_no_worker_directories_behind_however_it_ends(tmp_path, end):
    """Each worker's private directory (its cwd, TMPDIR and HOME) goes with the fork server:
    removed by the host after killing it at exit, or by the fork server itself when a
    SIGKILLed host's socket closes."""
    model = tmp_path / "add_mul.onnx"
    model.write_bytes(models.add_mul())
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = subprocess.run([sys.executable, "-c", _LEAVES, str(CACHE), str(guest_component("roundtrip")), str(model), end],
                          env=dict(os.environ, TMPDIR=str(tmp)), capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[1:] == ["1"], done.stderr[-2000:]  # the worker's, in the fork server's
    assert done.stdout.startswith("wasinn-workers-")
    assert done.returncode == (-signal.SIGKILL if end == "killed" else 0), done.stderr[-2000:]
    deadline = time.monotonic() + 10
    while os.listdir(tmp) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(tmp) == []


_STARTS = """
import os, sys, wasinn

def servers():  # this process's children running the fork server
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat, cmd = open(f"/proc/{pid}/stat").read(), open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"wasinn.backends.worker" in cmd:
            found.append(int(pid))
    return found

wasinn.Host  # what a program about to make a Host looks up first
print(*servers(), flush=True)
if sys.argv[1] != "exits":
    from wasinn.limits import Limits
    host = wasinn.Host(cache_dir=sys.argv[2], limits=Limits(isolate=sys.argv[1]))
    print(*servers(), flush=True)
    with host.instantiate(host.load_component(sys.argv[3])) as inst:
        assert inst.call("load", [open(sys.argv[4], "rb").read()], "onnx", "cpu").tag == "ok"
        worker = inst._session.worker
        print(worker and int(open(f"/proc/{worker.pid}/stat").read().rsplit(")", 1)[1].split()[1]), flush=True)
"""


@pytest.mark.parametrize("then", ["guest-models", "none", "exits"])
def test_the_fork_server_starts_at_wasinn_hosts_lookup_and_the_first_hosts_policy_settles_it(tmp_path, then):
    """forkserver.py: looking up `wasinn.Host` starts the fork server (before wasmtime's
    import, which the lookup does); a first Host whose policy isolates guest models keeps it, and its first
    guest model's worker is that server's child; one whose policy does not ends it; a
    process done before it is up ends it, and nothing is left in TMPDIR either way."""
    model = tmp_path / "add_mul.onnx"
    model.write_bytes(models.add_mul())
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = subprocess.run([sys.executable, "-c", _STARTS, then, str(CACHE), str(guest_component("roundtrip")), str(model)],
                          env=dict(os.environ, TMPDIR=str(tmp)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    (server,) = lines[0].split()
    if then == "guest-models":
        assert lines[1:] == [server, server]  # kept, then the worker's parent
    elif then == "none":
        assert lines[1:] == ["", "None"]  # ended at once; the model ran in process
    deadline = time.monotonic() + 10
    while (os.listdir(tmp) or os.path.exists(f"/proc/{server}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.listdir(tmp) == [] and not os.path.exists(f"/proc/{server}")


_NO_TMP = """
import sys, tempfile, wasinn
from wasinn.limits import Limits
tempfile.tempdir = "/proc/no-such-directory"  # where no directory can be made, as with a TMPDIR gone
wasinn.Host  # the fork server's speculative start fails here, quietly
for policy in ("none", "guest-models"):
    host = wasinn.Host(cache_dir=sys.argv[1], limits=Limits(isolate=policy))
    with host.instantiate(host.load_component(sys.argv[2])) as inst:
        graph = inst.call("load", [open(sys.argv[3], "rb").read()], "onnx", "cpu")
        print(policy, graph.tag, graph.payload.data if graph.tag == "err" else "", flush=True)
"""


def test_a_fork_server_that_cannot_start_fails_only_isolated_loads_in_one_line(tmp_path):
    model = tmp_path / "add_mul.onnx"
    model.write_bytes(models.add_mul())
    done = subprocess.run([sys.executable, "-c", _NO_TMP, str(CACHE), str(guest_component("roundtrip")), str(model)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    in_process, isolated = done.stdout.splitlines()
    assert in_process == "none ok "
    assert isolated.startswith("guest-models err the backend worker server did not start: [Errno 2] No such file")


_ENVIRONMENT = """
import sys, wasinn
host = wasinn.Host(cache_dir=sys.argv[1])
with host.instantiate(host.load_component(sys.argv[2])) as inst:
    assert inst.call("load", [open(sys.argv[3], "rb").read()], "onnx", "cpu").tag == "ok"
    print(open(f"/proc/{inst._session.worker.pid}/environ", "rb").read().decode(errors="replace"))
"""


def test_a_worker_gets_none_of_the_hosts_environment_but_what_its_backends_read(tmp_path):
    """A worker parses hostile models and could hand what it holds back to the guest: the
    operator's credentials in the host's environment stay out of it (forkserver.py)."""
    model = tmp_path / "add_mul.onnx"
    model.write_bytes(models.add_mul())
    env = dict(os.environ, MQTT_PASSWORD="hunter2-secret", AWS_SECRET_ACCESS_KEY="key-secret", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _ENVIRONMENT, str(CACHE), str(guest_component("roundtrip")), str(model)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    names = {entry.split("=", 1)[0] for entry in done.stdout.strip().split("\0") if entry}
    assert "secret" not in done.stdout and not names & {"MQTT_PASSWORD", "AWS_SECRET_ACCESS_KEY"}
    assert {"OMP_NUM_THREADS", "PATH"} <= names


_AFFINITIES = """
import os, sys, wasinn
from wasinn.limits import Limits
def threads(pid):
    return {open(f"/proc/{pid}/task/{tid}/status").read().split("Cpus_allowed_list:")[1].split()[0]
            for tid in os.listdir(f"/proc/{pid}/task")}
model = open(sys.argv[3], "rb").read()
for policy in ("guest-models", "none"):
    host = wasinn.Host(cache_dir=sys.argv[1], limits=Limits(isolate=policy))
    inst = host.instantiate(host.load_component(sys.argv[2]))
    assert inst.call("load", [model], "onnx", "cpu").tag == "ok"
    pid = inst._session.worker.pid if policy == "guest-models" else os.getpid()
    print(policy, len(os.listdir(f"/proc/{pid}/task")), *sorted(threads(pid)))
"""


def test_onnxruntime_pins_no_thread_in_a_worker_or_in_process(tmp_path):
    """Left to choose its intra-op threads, onnxruntime pins each pool thread to a core,
    and the kernel, waking a worker's calling thread after an idle spell, could put it
    on that core for a whole run (EfficientNet-Lite0 after 0.1 s pauses: 12 ms isolated
    against 5.5 without pinning): every thread may run on every core the process may."""
    model = tmp_path / "add_mul.onnx"
    model.write_bytes(models.add_mul())
    done = subprocess.run([sys.executable, "-c", _AFFINITIES, str(CACHE), str(guest_component("roundtrip")), str(model)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    allowed = open("/proc/self/status").read().split("Cpus_allowed_list:")[1].split()[0]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert set(lines) == {"guest-models", "none"}
    for policy, line in lines.items():
        count, *affinities = line.split()
        assert affinities == [allowed], f"{policy}: threads pinned to {affinities}, the process may use {allowed}"
    if len(os.sched_getaffinity(0)) > 1:  # a pool exists to be pinned: the worker's thread and its own
        assert int(lines["guest-models"].split()[0]) >= 2


def test_a_guest_loading_its_model_again_and_again_makes_threads_only_up_to_max_graphs():
    """Each onnxruntime session has a pool of its own threads: a guest that loads its own
    bytes again and again makes threads in its worker, as many as its live graphs allow,
    none pinned; past max-graphs a load is refused in one line, and the instance goes on."""
    from wasinn.backends.onnxruntime import default_intra_op_threads
    host = make_host(max_graphs=8)
    with roundtrip(host) as inst:
        graphs = [ok(inst.call("load", [models.add_mul()], "onnx", "cpu")) for _ in range(8)]
        for _ in range(5):  # refused before the worker makes a session (whose threads would linger)
            refused = inst.call("load", [models.add_mul()], "onnx", "cpu")
            assert refused.tag == "err" and refused.payload.code == "too-large"
            assert refused.payload.data == ("the instance holds 8 live graphs; the limit is 8 "
                                            "(max-graphs, --max-graphs)")
        pid = inst._session.worker.pid
        tasks = os.listdir(f"/proc/{pid}/task")
        assert len(tasks) <= 1 + len(graphs) * (default_intra_op_threads() - 1)  # its own, and each pool's
        allowed = open(f"/proc/{pid}/status").read().split("Cpus_allowed_list:")[1].split()[0]
        for tid in tasks:
            assert open(f"/proc/{pid}/task/{tid}/status").read().split("Cpus_allowed_list:")[1].split()[0] == allowed
        inst.call("drop-graph", graphs.pop())
        run_add_mul(inst, ok(inst.call("init-context", graphs[0])))
        run_add_mul(inst, add_mul_context(inst))


def test_a_guests_model_in_onnxruntimes_own_format_loads_isolated_as_in_process(tmp_path):
    """A worker hands onnxruntime a model's file by path (spill.ModelFile), but onnxruntime
    tells its own (ORT, flatbuffer) format by a file's extension and by an identifier in
    bytes: such a model stays bytes, and loads as it does in process."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "add_mul.ort")
    options.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(models.add_mul(), options, providers=["CPUExecutionProvider"])
    model = (tmp_path / "add_mul.ort").read_bytes()
    assert model[4:8] == b"ORTM"
    for policy in ("guest-models", "none"):
        with roundtrip(make_host(isolate=policy)) as inst:
            run_add_mul(inst, ok(inst.call("init-context", ok(inst.call("load", [model], "onnx", "cpu")))))
            assert graph_backend(inst) == ("onnxruntime (isolated)" if policy == "guest-models" else "onnxruntime")


def test_isolate_none_runs_a_guests_model_in_process():
    with roundtrip(make_host(isolate="none")) as inst:
        run_add_mul(inst, add_mul_context(inst))
        assert graph_backend(inst) == "onnxruntime"


def test_a_worker_that_dies_fails_its_graphs_and_the_next_call_gets_a_fresh_instance():
    with roundtrip(make_host()) as inst:
        ctx = add_mul_context(inst)
        os.kill(inst._session.worker.pid, signal.SIGKILL)
        a = np.zeros((2, 3), np.float32)
        result = inst.call("compute-tensors", ctx, [("a", a), ("b", a)])
        assert result.tag == "err" and result.payload.code == "runtime-error"
        assert "the backend worker ended (SIGKILL) while computing" in result.payload.data
        started = inst.instances_started
        run_add_mul(inst, add_mul_context(inst))  # a fresh instance, a fresh worker
        assert inst.instances_started == started + 1



def test_when_the_fork_server_dies_its_workers_graphs_fail_with_errors_and_the_next_load_starts_another():
    """The workers die with their fork server (their parent-death signal): each instance
    gets runtime-error for its isolated graphs, never an exception out of the host (the
    fork server's socket is gone when the host asks how a worker ended), and the next
    load starts a fork server of its own."""
    from wasinn.backends import isolated
    with roundtrip(make_host()) as inst, roundtrip(make_host()) as other:
        contexts = [add_mul_context(inst), add_mul_context(other)]
        server = inst._session.worker.server
        server.process.kill()
        server.process.wait()
        a = np.zeros((2, 3), np.float32)
        for i, ctx in zip((inst, other), contexts):
            result = i.call("compute-tensors", ctx, [("a", a), ("b", a)])
            assert result.tag == "err" and result.payload.code == "runtime-error", result
            assert "the backend worker ended (killed) while computing" in result.payload.data
        run_add_mul(inst, add_mul_context(inst))
        assert inst._session.worker.server is not server and isolated.zygote() is inst._session.worker.server

def test_under_isolate_all_a_preload_checks_the_models_and_keeps_no_worker(tmp_path):
    # each instance loads the operator's models in its own worker: a preload (wasinn run's
    # default) only checks them, and its worker goes (kept, it had held a second copy)
    from wasinn.errors import WasinnError
    (tmp_path / "m.onnx").write_bytes(models.add_mul())
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    host = make_host(isolate="all")
    host.models.register("m", tmp_path / "m.onnx")
    host.preload_models()()
    assert host.nn.isolation.current(None) is None and not [w for w in host.nn.isolation.live if not w.dead]
    with roundtrip(host) as inst:
        run_add_mul(inst, ok(inst.call("init-context", ok(inst.call("load-by-name", "m")))))
    bad = make_host(isolate="all")
    bad.models.register("bad", tmp_path / "bad.onnx")
    with pytest.raises(WasinnError, match="^model 'bad': "):
        bad.preload_models()()


def test_under_isolate_all_a_model_the_instance_may_not_hold_is_refused_before_it_is_read(tmp_path):
    """Under "all", load-by-name loads the operator's model into the instance's own worker:
    one past the instance's max-host-bytes had been read whole into the host and loaded by
    its worker before the refusal (a 600 MB model: 2.3 GB for four instances); now it is
    refused first, and no worker starts. A model read past the call's deadline is a
    `timeout` between slices of the read (600 MB asked for 0.1 s before it: 0.4 s past)."""
    (tmp_path / "m.onnx").write_bytes(models.add_mul())
    host = make_host(isolate="all", max_host_bytes="64B")
    host.models.register("m", tmp_path / "m.onnx")
    with roundtrip(host) as inst:
        refused = inst.call("load-by-name", "m")
        assert (refused.tag, refused.payload.code) == ("err", "too-large"), refused
        assert "(max-host-bytes, --max-host-bytes)" in refused.payload.data
        assert inst._session.worker is None
    from wasinn.copies import read_file
    path = tmp_path / "m.onnx"
    assert bytes(read_file(path, time.monotonic() + 60)) == path.read_bytes()
    with pytest.raises(wasinn.errors.NnError, match=r"^timeout: the copy of the model file of graph 'm' \("
                                                    r"\d+ bytes\) had not finished by the call's deadline \(0 bytes "
                                                    r"copied\)$"):
        read_file(path, time.monotonic() - 1, "the model file of graph 'm'")


def test_under_isolate_all_a_guest_that_crashes_its_worker_loses_only_its_own_graphs(tmp_path):
    # the operator's model now shares the instance's worker with the guest's own models:
    # a guest model that kills that worker (LiteRT's recursion, SIGSEGV) is runtime-error
    # for that instance, which loads the operator's model again afresh; another instance's
    # graph of the same model, in its own worker, runs on
    from support import hostile_models
    (tmp_path / "m.onnx").write_bytes(models.add_mul())
    host = make_host(isolate="all")
    host.models.register("m", tmp_path / "m.onnx")
    with roundtrip(host) as guest, roundtrip(host) as other:
        ok(guest.call("init-context", ok(guest.call("load-by-name", "m"))))
        theirs = ok(other.call("init-context", ok(other.call("load-by-name", "m"))))
        crashed = guest.call("load", [hostile_models.tflite_recursive("while")], "autodetect", "cpu")
        assert (crashed.tag, crashed.payload.code) == ("err", "runtime-error")
        assert "(SIGSEGV)" in crashed.payload.data
        run_add_mul(guest, ok(guest.call("init-context", ok(guest.call("load-by-name", "m")))))
        run_add_mul(other, theirs)


def test_an_instances_worker_for_the_operators_models_is_replaced_when_it_dies(tmp_path):
    # under "all" the operator's models run in the instance's own worker: its death is a
    # runtime-error for that instance, which starts afresh and loads the model again
    path = tmp_path / "m.onnx"
    path.write_bytes(models.add_mul())
    host = make_host(isolate="all")
    host.models.register("m", path)
    with roundtrip(host) as inst, roundtrip(host) as other:
        ctx = ok(inst.call("init-context", ok(inst.call("load-by-name", "m"))))
        theirs = ok(other.call("init-context", ok(other.call("load-by-name", "m"))))
        os.kill(inst._session.worker.pid, signal.SIGKILL)
        a = np.zeros((2, 3), np.float32)
        assert inst.call("compute-tensors", ctx, [("a", a), ("b", a)]).payload.code == "runtime-error"
        run_add_mul(inst, ok(inst.call("init-context", ok(inst.call("load-by-name", "m")))))
        run_add_mul(other, theirs)  # the other instance's worker was its own


def test_max_workers_bounds_the_workers_a_host_runs():
    host = make_host(max_workers=1)
    with roundtrip(host) as a, roundtrip(host) as b:
        add_mul_context(a)
        result = b.call("load", [models.add_mul()], "onnx", "cpu")
        assert (result.payload.code, "the limit is 1 (max-workers, --max-workers)" in result.payload.data) == \
            ("too-large", True)
    with roundtrip(host) as c:  # the others' workers went with them
        run_add_mul(c, add_mul_context(c))


def test_a_worker_is_confined():
    with roundtrip(make_host()) as inst:
        add_mul_context(inst)
        pid = inst._session.worker.pid
        status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
        assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
        cwd = os.readlink(f"/proc/{pid}/cwd")
        assert os.path.basename(os.path.dirname(cwd)).startswith("wasinn-workers-") and os.listdir(cwd) == []
    assert gone(cwd)  # its private directory went with it


# What a worker can still do once confined, tried in a child confined the same way.
CONFINED = textwrap.dedent("""
    import errno, os, socket, subprocess, sys
    from wasinn.backends import confine
    private, secret = sys.argv[1], sys.argv[2]
    confine.drop_capabilities()
    confine.landlock(confine.readable_paths(), [private])
    confine.seccomp()
    def attempt(what, fn):
        try:
            fn()
            print(what, "allowed")
        except OSError as e:
            print(what, errno.errorcode[e.errno])
    attempt("read secret", lambda: open(secret).read())
    attempt("list cwd", lambda: os.listdir(os.path.dirname(secret)))
    attempt("write private", lambda: open(os.path.join(private, "f"), "w").write("x"))
    attempt("read python", lambda: open(os.__file__).read(1))
    attempt("exec", lambda: os.execv("/bin/true", ["true"]))
    attempt("fork", lambda: os._exit(0) if os.fork() == 0 else None)
    attempt("socket", lambda: socket.socket())
    attempt("kill parent", lambda: os.kill(os.getppid(), 0))
    attempt("kill self", lambda: os.kill(os.getpid(), 0))
""")


@pytest.mark.skipif(not confine.landlock_abi() or not confine.seccomp_available(),
                    reason="needs Landlock and seccomp (wasinn doctor says which this kernel has)")
def test_confinement_leaves_the_interpreter_and_the_private_directory(tmp_path):
    private = tmp_path / "private"
    private.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    proc = subprocess.run([sys.executable, "-c", CONFINED, str(private), str(secret)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = dict(line.rsplit(" ", 1) for line in proc.stdout.splitlines())
    assert got == {"read secret": "EACCES", "list cwd": "EACCES", "write private": "allowed",
                   "read python": "allowed", "exec": "EPERM", "fork": "EPERM", "socket": "EPERM",
                   "kill parent": "EPERM", "kill self": "allowed"}


def test_isolation_policy_is_a_limit_with_a_one_line_refusal():
    assert Limits().updated({"isolate": "all"}).isolate == "all"
    with pytest.raises(wasinn.WasinnError, match="isolate 'some': wasinn has guest-models, all, none"):
        Limits().updated({"isolate": "some"})
    proc = subprocess.run([sys.executable, "-m", "wasinn", "run", "--isolate", "nope", "x.wasm"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "isolate 'nope'" in proc.stderr


def test_a_model_autodetect_hands_a_crashing_parser_fails_its_load_and_the_next_call_runs():
    """autodetect picks the backend from the bytes in the host (no parser), then the
    worker parses them: LiteRT's recursion on an IF that leads back to itself kills the
    worker, not the host."""
    from support import hostile_models
    with roundtrip(make_host()) as inst:
        result = inst.call("load", [hostile_models.tflite_recursive("while")], "autodetect", "cpu")
        assert (result.tag, result.payload.code) == ("err", "runtime-error")
        assert result.payload.data == ("the backend worker ended (SIGSEGV) while loading the model; the graphs it "
                                       "ran for this instance are gone")
        started = inst.instances_started
        run_add_mul(inst, add_mul_context(inst))
        assert inst.instances_started == started + 1


_CRASH_FIRST = """
import os, sys, wasinn
host = wasinn.Host(cache_dir=sys.argv[1])  # its fork server started at this lookup, still importing
with host.instantiate(host.load_component(sys.argv[2])) as inst:
    crash = inst.call("load", [open(sys.argv[3], "rb").read()], "autodetect", "cpu")  # at once: it waits for the server
    print(crash.tag, crash.payload.code, crash.payload.data, sep="|")
    graph = inst.call("load", [open(sys.argv[4], "rb").read()], "onnx", "cpu")
    ctx = inst.call("init-context", graph.payload)
    worker = inst._session.worker
    parent = int(open(f"/proc/{worker.pid}/stat").read().rsplit(")", 1)[1].split()[1])
    print(graph.tag, ctx.tag, parent == worker.server.process.pid, sep="|")
"""


def test_a_guests_first_load_that_kills_its_worker_leaves_the_fork_server_started_at_lookup_serving():
    """A guest's first `graph.load`, made while the fork server started at `wasinn.Host`'s
    lookup is still importing, is a model that crashes its parser (LiteRT's recursion): the
    load waits for the server, its worker dies, the guest gets one line, and the same server
    forks the worker of the next load."""
    from support import hostile_models
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        crash, model = os.path.join(tmp, "recursive.tflite"), os.path.join(tmp, "add_mul.onnx")
        open(crash, "wb").write(hostile_models.tflite_recursive("if"))
        open(model, "wb").write(models.add_mul())
        done = subprocess.run([sys.executable, "-c", _CRASH_FIRST, str(CACHE), str(guest_component("roundtrip")),
                               crash, model], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "err|runtime-error|the backend worker ended (SIGSEGV) while loading the model; the graphs it ran for "
        "this instance are gone",
        "ok|ok|True"]


def test_a_model_that_describes_itself_past_the_message_cap_is_refused_in_one_line_and_the_worker_lives():
    # 20 outputs named with 100 KB each: the worker's answer to the load would not fit a
    # socket message (worker.MAX_MESSAGE); it used to end the worker (exit 70)
    from onnx import TensorProto, helper
    names = ["y" * 100_000 + str(i) for i in range(20)]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], [n]) for n in names], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in names])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with roundtrip(make_host()) as inst:
        refused = inst.call("load", [model], "onnx", "cpu")
        assert refused.tag == "err" and refused.payload.code == "too-large", vars(refused.payload)
        assert "\n" not in refused.payload.data and "limit is" in refused.payload.data
        pid = inst._session.worker.pid
        run_add_mul(inst, add_mul_context(inst))  # the same worker serves the next load
        assert inst._session.worker.pid == pid


# A worker a hostile model has taken over says what it likes: the host holds each packed
# description of outputs to what it can trust, kills the worker on the first lie, and
# answers the guest with one line. The worker here is a stand-in process answering every
# compute with the given bytes (and any other request with {}).
_LIAR = """
import socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
lie = bytes.fromhex(sys.argv[2])
while True:
    data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 1)
    if not data:
        break
    sock.send(lie if data[:1] == b"C" else b"{}")
"""


def _outputs(*outputs, tag=b"O", count=None, tail=b""):
    import struct
    parts = [tag + struct.pack("<I", len(outputs) if count is None else count)]
    for name, ty, dims, offset, n in outputs:
        parts += [struct.pack("<QQBBI", offset, n, ty, len(dims), len(name)), name,
                  struct.pack(f"<{len(dims)}Q", *dims)]
    return b"".join(parts) + tail


@pytest.mark.parametrize("lie", [
    pytest.param(_outputs((b"y", 1, [2], 0, 8))[:-3], id="cut-short"),
    pytest.param(_outputs((b"y", 1, [2], 0, 8), tail=b"\0"), id="bytes-after"),
    pytest.param(_outputs((b"y", 1, [1] * 65, 0, 4)), id="rank-65"),
    pytest.param(_outputs((b"y", 1, [2], (1 << 20) - 4, 8)), id="past-the-file"),
    pytest.param(_outputs((b"y", 1, [2], 1 << 19, 8)), id="past-its-room"),  # on the instance's other tensors
    pytest.param(_outputs((b"y", 1, [3], 0, 8)), id="dims-not-bytes"),
    pytest.param(_outputs((b"y", 99, [2], 0, 8)), id="no-such-type"),
    pytest.param(_outputs((b"\xff", 1, [2], 0, 8)), id="name-not-utf8"),
    pytest.param(_outputs(count=1 << 30), id="count-without-outputs"),
    pytest.param(_outputs((b"y", 1, [1 << 40, 1 << 40], 0, 8)), id="dims-overflow"),
    pytest.param(b"\x00", id="one-byte"),
    pytest.param(b'{"outputs": []}', id="json-instead"),
    pytest.param(b'{"outputs": ' + b"[" * 20_000, id="json-nested-past-the-stack"),
    pytest.param(b'{"outputs": [', id="json-cut-short"),
])
def test_a_worker_that_lies_about_its_outputs_is_killed_and_the_guest_told_in_one_line(lie):
    import socket

    from wasinn import HostTensor
    from wasinn._bindings import ExecutionTarget
    from wasinn.backends import isolated
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    liar = subprocess.Popen([sys.executable, "-c", _LIAR, str(theirs.fileno()), lie.hex()], pass_fds=(theirs.fileno(),))
    theirs.close()
    worker = isolated.Worker(isolated.zygote(), ours, liar.pid, os.pidfd_open(liar.pid), 1 << 20)
    spec = [["x", "FP32", "tensor(float)", [2]]]
    graph = isolated.IsolatedGraph(worker, {"graph": 1, "backend": "onnxruntime", "inputs": spec, "outputs": spec},
                                   ExecutionTarget.CPU)
    context = isolated.IsolatedContext(graph, 2)
    with pytest.raises(wasinn.NnError) as failed:
        context.compute([HostTensor.from_array(np.ones(2, np.float32))])
    assert failed.value.code == wasinn.ErrorCode.RUNTIME_ERROR
    assert "\n" not in failed.value.message
    assert "wrongly" in failed.value.message or "malformed" in failed.value.message, failed.value.message
    assert liar.wait(timeout=10) == -signal.SIGKILL
    with pytest.raises(wasinn.NnError, match="wrongly|malformed"):  # and the instance is told so from then on
        context.compute([HostTensor.from_array(np.ones(2, np.float32))])
    worker.close()


def test_a_model_with_thousands_of_unranked_inputs_is_described_and_the_next_call_runs():
    # a guest's model the worker reads without onnx (formats.graph_values): 3,000 inputs
    # of unknown rank, and the graph given a second time, for a parser to merge
    from onnx import TensorProto, helper
    inputs = [helper.make_tensor_value_info(f"u{i}", TensorProto.FLOAT, None) for i in range(3000)]
    graph = helper.make_graph([helper.make_node("Identity", ["u0"], ["y"])], "g", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    again = helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString()
    hostile = model + again
    with roundtrip(make_host()) as inst:
        result = inst.call("load", [hostile], "onnx", "cpu")
        assert result.tag == "ok", vars(result.payload)
        assert graph_backend(inst) == "onnxruntime (isolated)"
        run_add_mul(inst, add_mul_context(inst))

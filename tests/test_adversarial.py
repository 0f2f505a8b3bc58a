"""An adversarial guest: hypothesis drives random sequences of wasi:nn calls through
guest/adversary (objects named by ids), misuse included, and checks after every step
that the host agrees with the guest and with a model of what should be live.

The invariants: every call returns a value or a typed wasi:nn error, as predicted;
misuse that traps inside the guest (use-after-drop, a moved or duplicated tensor, a
forged handle) raises `GuestTrap`, frees everything the instance held, and the next
call runs on a fresh instance; when a sequence ends, the host's tables are back where
they started. Examples per profile: `dev` 25, `ci` 60, `long` 10,000
(HYPOTHESIS_PROFILE=long), each a sequence of up to STEPS calls.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys

import numpy as np
import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

import wasinn
from wasinn import TensorType
from wasinn.tensors import DTYPES

from support import models

STEPS = 50  # at most one graph per step: stays under the default max-graphs (64)
ERROR_CODES = {c.value for c in wasinn.ErrorCode}
TYPES = list(TensorType)
HUGE = [65_536, 2**31, 2**32 - 1]


@dataclasses.dataclass(frozen=True)
class Model:
    """A model the machine can load, and what it computes."""
    name: str
    data: bytes
    inputs: tuple  # (name, TensorType or None if wasi:nn cannot carry it, shape or None)
    load_error: str | None = None  # the error code loading it gives


def _int8_identity() -> bytes:
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.INT8, None)],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


MODELS = [Model(f"identity-{ty.value}", models.identity(ty), (("x", ty, None),)) for ty in TYPES] + [
    Model("add-mul", models.add_mul(), (("a", TensorType.FP32, (2, 3)), ("b", TensorType.FP32, (2, 3)))),
    Model("int8-identity", _int8_identity(), (("x", None, None),)),
    Model("truncated", models.add_mul()[:40], (), "invalid-encoding"),
    Model("garbage", b"\x08\x07" + bytes(range(256)), (), "invalid-encoding"),
]
COMPUTABLE = [m for m in MODELS if m.load_error is None and m.inputs[0][1] is not None]
BY_NAME = "adversary-add-mul"  # registered with the host for load-by-name


@dataclasses.dataclass
class Tensor:
    dims: tuple
    ty: TensorType
    data: bytes

    def fits(self, spec) -> bool:
        _, ty, shape = spec
        return (ty is not None and self.ty == ty
                and (shape is None or tuple(shape) == self.dims)
                and len(self.data) == math.prod(self.dims) * DTYPES[self.ty].itemsize)


def expected_outputs(model: Model, bound: list[Tensor]) -> list[tuple[str, Tensor]]:
    if model.name == "add-mul":
        a, b = (np.frombuffer(t.data, np.float32).reshape(t.dims) for t in bound)
        with np.errstate(all="ignore"):  # random bytes: overflows and NaNs are expected
                return [("sum", Tensor((2, 3), TensorType.FP32, (a + b).tobytes())),
                    ("product", Tensor((2, 3), TensorType.FP32, (a * b).tobytes()))]
    return [("y", bound[0])]


def bind(model: Model, named: list[tuple[str, Tensor]]) -> list[Tensor] | None:
    """The inputs in model order when wasi:nn accepts `named` for `model`, else None
    (nn.py's rules, restated: by name, then by decimal index; each input once; all given)."""
    names = [s[0] for s in model.inputs]
    bound: dict[int, Tensor] = {}
    for name, t in named:
        i = names.index(name) if name in names else (int(name) if name.isdecimal() and int(name) < len(names) else None)
        if i is None or i in bound or not t.fits(model.inputs[i]):
            return None
        bound[i] = t
    return [bound[i] for i in range(len(names))] if len(bound) == len(names) else None


def same_values(ty: TensorType, got: bytes, want: bytes) -> bool:
    """Byte-equal, except that float NaNs may come back with other payload bits."""
    if got == want:
        return True
    a, b = (np.frombuffer(x, DTYPES[ty]).astype(np.float64) for x in (got, want))
    return ty in (TensorType.FP16, TensorType.FP32, TensorType.FP64, TensorType.BF16) \
        and len(got) == len(want) and np.array_equal(a, b, equal_nan=True)


class Counters:
    sequences = calls = traps = errors = oks = 0


class WasiNnMachine(RuleBasedStateMachine):
    host: wasinn.Host
    component = None

    def __init__(self):
        super().__init__()
        Counters.sequences += 1
        if Counters.sequences % 1000 == 0:
            print(f"  .. adversarial: {Counters.sequences} sequences", file=sys.stderr, flush=True)
        self.baseline = set(self.host.nn._objects), len(self.host.nn._sessions)
        self.inst = self.host.instantiate(self.component)
        self.started = 0
        self.tensors: dict[int, Tensor] = {}
        self.graphs: dict[int, Model] = {}
        self.contexts: dict[int, Model] = {}
        self.graph_of: dict[int, object] = {}  # context -> its graph (`graph_object`; it may be dropped first)
        self.dead: dict[int, str] = {}
        self.by_name: set[int] = set()  # graph handles load-by-name gave

    # --- calling the guest ---------------------------------------------------------
    def call(self, name: str, *args):
        Counters.calls += 1
        self.started = max(self.started, 1)
        result = self.inst.call(name, *args)
        assert self.inst.instances_started == self.started, "the instance restarted without a trap"
        return result

    def expect_trap(self, name: str, *args) -> None:
        held = set(self.inst._session.reps) if self.inst._session else set()
        with pytest.raises(wasinn.GuestTrap):
            self.call(name, *args)
        self.after_trap(held)

    def maybe_trap(self, name: str, *args):
        """For calls whose outcome the model cannot predict (forged handles)."""
        held = set(self.inst._session.reps) if self.inst._session else set()
        try:
            return self.call(name, *args)
        except wasinn.GuestTrap:
            self.after_trap(held)
            return None

    def after_trap(self, held: set[int]) -> None:
        Counters.traps += 1
        assert not held & set(self.host.nn._objects), "a trapped instance left host objects behind"
        assert sum(self.inst.live_resources().values()) == 0
        for table in (self.tensors, self.graphs, self.contexts, self.graph_of, self.dead):
            table.clear()
        self.started += 1  # the next call instantiates afresh

    def outcome(self, result, error: str | set | None):
        """Checks a result<_, failure> against the prediction (None: ok)."""
        assert result.tag in ("ok", "err")
        if result.tag == "err":
            Counters.errors += 1
            assert result.payload.code in ERROR_CODES and result.payload.data, vars(result.payload)
            allowed = {error} if isinstance(error, str) else error
            assert allowed and result.payload.code in allowed, \
                f"unexpected {result.payload.code}: {result.payload.data}"
        else:
            Counters.oks += 1
            assert error is None, f"expected {error}, got ok"
        return result.payload

    def graph_object(self, key: int) -> object:
        """What the host holds for graph handle `key`: the registered model is one graph
        under every handle load-by-name gives; each load of the guest's bytes is its own."""
        return BY_NAME if self.graphs[key].name == "add-mul" and key in self.by_name else key

    def kill(self, key: int) -> None:
        for kind, table in (("tensor", self.tensors), ("graph", self.graphs), ("context", self.contexts)):
            if key in table:
                del table[key]
                self.dead[key] = kind

    # --- rules ---------------------------------------------------------------------
    @initialize()
    def start(self):
        assert self.call("counts").tensors == 0

    @rule(data=st.data(), ty=st.sampled_from(TYPES),
          dims=st.one_of(st.lists(st.integers(0, 5), max_size=4), st.lists(st.sampled_from(HUGE), min_size=1, max_size=3)),
          exact=st.booleans())
    def make_tensor(self, data, ty, dims, exact):
        size = math.prod(dims) * DTYPES[ty].itemsize
        n = size if exact and size <= 4096 else data.draw(st.integers(0, 64), label="length")
        payload = data.draw(st.binary(min_size=n, max_size=n), label="data")
        key = self.call("make-tensor", dims, ty.value, payload)
        self.tensors[key] = Tensor(tuple(dims), ty, payload)

    # Up to 2 MiB: `read` returns the bytes as a list<u8> result, which wasmtime caps at 2,796,202.
    @rule(ty=st.sampled_from([TensorType.U8, TensorType.FP32]), n=st.integers(1, 1 << 19), fill=st.integers(0, 255))
    def make_large_tensor(self, ty, n, fill):
        size = n * DTYPES[ty].itemsize
        key = self.call("make-filled", [n], ty.value, size, fill)
        self.tensors[key] = Tensor((n,), ty, bytes([fill]) * size)

    @rule(ty=st.sampled_from(TYPES), shape=st.lists(st.integers(0, 4), max_size=3), seed=st.integers(0, 2**32 - 1))
    def adopt_host_tensor(self, ty, shape, seed):
        raw = np.random.default_rng(seed).integers(0, 256, math.prod(shape) * DTYPES[ty].itemsize, np.uint8)
        t = wasinn.HostTensor(shape, ty, raw.tobytes())
        key = self.call("adopt", t)
        self.tensors[key] = Tensor(tuple(shape), ty, raw.tobytes())

    @precondition(lambda self: self.tensors)
    @rule(data=st.data())
    def read(self, data):
        key = data.draw(st.sampled_from(sorted(self.tensors)), label="tensor")
        want, got = self.tensors[key], self.call("read", key)
        assert (tuple(got.dimensions), got.ty) == (want.dims, want.ty.value)
        assert same_values(want.ty, got.data, want.data)

    @rule(model=st.sampled_from(MODELS))
    def load(self, model):
        got = self.outcome(self.call("load", [model.data], "onnx", "cpu"), model.load_error)
        if model.load_error is None:
            self.graphs[got] = model

    @rule(known=st.booleans())
    def load_by_name(self, known):
        got = self.outcome(self.call("load-by-name", BY_NAME if known else "/etc/passwd"),
                           None if known else "not-found")
        if known:
            self.graphs[got] = next(m for m in MODELS if m.name == "add-mul")
            self.by_name.add(got)

    @precondition(lambda self: self.graphs)
    @rule(data=st.data())
    def init_context(self, data):
        graph = data.draw(st.sampled_from(sorted(self.graphs)), label="graph")
        ctx = self.outcome(self.call("init-context", graph), None)
        self.contexts[ctx], self.graph_of[ctx] = self.graphs[graph], self.graph_object(graph)

    def _compute(self, ctx: int, named: list[tuple[str, int]]) -> None:
        model = self.contexts[ctx]
        given = [(name, self.tensors[key]) for name, key in named]
        bound = bind(model, given)
        oversized = any(math.prod(t.dims) > self.host.limits.max_tensor_elements
                        or len(t.data) > self.host.limits.max_tensor_bytes for _, t in given)
        error = None if bound is not None else ({"invalid-argument", "too-large"} if oversized else "invalid-argument")
        result = self.call("compute", ctx, named)
        for _, key in named:
            self.kill(key)  # moved into compute, whatever it returned
        outputs = self.outcome(result, error)
        if bound is not None:
            want = expected_outputs(model, bound)
            assert [n for n, _ in outputs] == [n for n, _ in want]
            for (_, key), (_, t) in zip(outputs, want):
                self.tensors[key] = t

    @precondition(lambda self: self.contexts)
    @rule(data=st.data())
    def compute_any(self, data):
        """Any live tensors under any names: mostly errors, every type against every model."""
        ctx = data.draw(st.sampled_from(sorted(self.contexts)), label="context")
        keys = data.draw(st.lists(st.sampled_from(sorted(self.tensors)), unique=True, max_size=3)
                         if self.tensors else st.just([]), label="tensors")
        specs = self.contexts[ctx].inputs
        names = st.sampled_from([s[0] for s in specs] + [str(i) for i in range(len(specs) + 1)] + ["nope"])
        self._compute(ctx, [(data.draw(names, label="name"), key) for key in keys])

    @rule(data=st.data())
    def compute_fitting(self, data):
        """Inputs built to fit: the ok path, checked against what the model computes
        (on a live context, or a graph and context loaded for the occasion)."""
        fitting = sorted(k for k, m in self.contexts.items() if m.inputs[0][1] is not None)
        if fitting and data.draw(st.booleans(), label="live context"):
            ctx = data.draw(st.sampled_from(fitting), label="context")
        else:
            model = data.draw(st.sampled_from(COMPUTABLE), label="model")
            graph = self.outcome(self.call("load", [model.data], "onnx", "cpu"), None)
            self.graphs[graph] = model
            ctx = self.outcome(self.call("init-context", graph), None)
            self.contexts[ctx], self.graph_of[ctx] = model, self.graph_object(graph)
        named = []
        for i, (name, ty, shape) in enumerate(self.contexts[ctx].inputs):
            dims = shape or tuple(data.draw(st.lists(st.integers(0, 4), max_size=3), label="dims"))
            payload = data.draw(st.binary(min_size=math.prod(dims) * DTYPES[ty].itemsize,
                                          max_size=math.prod(dims) * DTYPES[ty].itemsize), label="data")
            key = self.call("make-tensor", list(dims), ty.value, payload)
            self.tensors[key] = Tensor(tuple(dims), ty, payload)
            named.append((data.draw(st.sampled_from([name, str(i)]), label="name"), key))
        self._compute(ctx, named)

    @precondition(lambda self: self.tensors or self.graphs or self.contexts)
    @rule(data=st.data())
    def drop(self, data):
        """Graphs may go before their contexts, which keep working."""
        key = data.draw(st.sampled_from(sorted([*self.tensors, *self.graphs, *self.contexts])), label="object")
        assert self.call("drop", key) is None
        self.kill(key)

    @precondition(lambda self: self.tensors or self.graphs or self.contexts)
    @rule(data=st.data())
    def touch(self, data):
        key = data.draw(st.sampled_from(sorted([*self.tensors, *self.graphs, *self.contexts])), label="object")
        # a context's compute with no inputs: every model here has inputs
        self.outcome(self.call("touch", key), "invalid-argument" if key in self.contexts else None)

    @precondition(lambda self: self.tensors or self.graphs or self.contexts or self.dead)
    @rule(data=st.data())
    def misuse(self, data):
        """What the canonical ABI (or componentize-py's bindings) traps on in the guest:
        one rule, and only once there is state to lose, so that traps (which end the
        sequence's state) stay a minority of steps."""
        kinds = ["forge"] + (["use-after-drop", "drop-twice"] if self.dead else []) + \
                (["tensor-twice"] if self.tensors and self.contexts else []) + \
                (["moved-tensor"] if self.contexts and "tensor" in self.dead.values() else [])
        kind = data.draw(st.sampled_from(kinds), label="misuse")
        if kind == "forge":
            # A raw handle the guest's bindings never gave it: whatever it names in the
            # guest's own table (or nothing: a trap), never anything outside the instance.
            result = self.maybe_trap("forge", data.draw(st.sampled_from(["tensor", "graph", "context"]), label="kind"),
                                     data.draw(st.one_of(st.integers(0, 40), st.integers(0, 2**32 - 1)), label="handle"))
            if result is not None and result.tag == "err":  # ok too: it named a live object of that kind
                self.outcome(result, "invalid-argument")  # a context computing with no inputs
        elif kind in ("use-after-drop", "drop-twice"):
            key = data.draw(st.sampled_from(sorted(self.dead)), label="dead")
            self.expect_trap("touch" if kind == "use-after-drop" else "drop", key)
        elif kind == "tensor-twice":
            ctx = data.draw(st.sampled_from(sorted(self.contexts)), label="context")
            key = data.draw(st.sampled_from(sorted(self.tensors)), label="tensor")
            self.expect_trap("compute", ctx, [("0", key), ("1", key)])
        else:
            ctx = data.draw(st.sampled_from(sorted(self.contexts)), label="context")
            key = data.draw(st.sampled_from(sorted(k for k, v in self.dead.items() if v == "tensor")), label="moved")
            self.expect_trap("compute", ctx, [("0", key)])

    @rule(n=st.integers(0, 200), nbytes=st.sampled_from([0, 3, 4096, 70_000]))
    def churn(self, n, nbytes):
        assert self.call("churn-tensors", n, nbytes) == 0

    # --- after every step ------------------------------------------------------------
    @invariant()
    def host_and_guest_agree(self):
        counts = self.call("counts")
        assert (counts.tensors, counts.graphs, counts.contexts) == (len(self.tensors), len(self.graphs),
                                                                     len(self.contexts))
        # the host counts each graph handle, and a graph whose handles the guest dropped
        # while a context of it lives (max-graphs)
        lingering = {self.graph_of[c] for c in self.contexts} - {self.graph_object(g) for g in self.graphs}
        want = {"tensor": len(self.tensors), "graph": len(self.graphs) + len(lingering),
                "graph_execution_context": len(self.contexts), "error": 0}
        assert self.inst.live_resources() == want
        assert sum(1 for _, _, s in self.host.nn._objects.values() if s is self.inst._session) == sum(want.values())

    def teardown(self):
        try:
            if self.inst._store is not None:
                self.inst.call("reset")
                assert sum(self.inst.live_resources().values()) == 0
        finally:
            self.inst.close()
        assert (set(self.host.nn._objects), len(self.host.nn._sessions)) == self.baseline


@pytest.fixture(scope="module")
def by_name(wasinn_host, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "add_mul.onnx"
    path.write_bytes(models.add_mul())
    wasinn_host.models.register(BY_NAME, path)


def test_random_wasi_nn_call_sequences(wasinn_host, adversary_component, by_name):
    WasiNnMachine.host, WasiNnMachine.component = wasinn_host, adversary_component
    profile = settings()  # the loaded profile (conftest.py): its example count
    before = dict(vars(Counters))
    run_state_machine_as_test(WasiNnMachine, settings=settings(profile, stateful_step_count=STEPS))
    ran = {k: getattr(Counters, k) - before[k] for k in ("sequences", "calls", "traps", "errors", "oks")}
    print(f"\nadversarial: {ran} (profile max_examples={profile.max_examples})")
    if os.environ.get("WASINN_ADVERSARY_REPORT"):
        with open(os.environ["WASINN_ADVERSARY_REPORT"], "w") as f:
            f.write(repr(ran) + "\n")
    assert ran["sequences"] >= profile.max_examples

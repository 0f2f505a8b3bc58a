"""Hostile arguments from a real guest (the WAT probe): pointers at and past the end of
memory, lengths that wrap 32 bits, unknown and reused handles, unknown tags. Every call
returns an errno, the next valid call works, and the host's tables return to their
baseline when the instance goes."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

import wasinn
from support.witx_support import ERRNO, Probe, probe_wasm, transpose_model

MODEL = transpose_model(np.float32)
X = np.arange(6, dtype=np.float32).reshape(2, 3)
_host = wasinn.Host(cache_dir=False)
_host.core_modules.errors_to_stderr = False
_module = _host.load_component(probe_wasm())
U32 = st.integers(0, 2**32 - 1)
# lengths whose byte size (x4 for dims, x8 for builder pairs) wraps 32 bits, and plain huge ones
WRAPPING = st.sampled_from([0x40000000, 0x40000001, 0x20000000, 0x20000001, 0xFFFFFFFF, 0x80000000])


@st.composite
def hostile_ptr(draw, width: int = 4):
    """A pointer whose `width` bytes do not all lie in memory, relative to its size then."""
    return draw(st.one_of(st.tuples(st.just("end"), st.integers(-width + 1, 64)),
                          st.tuples(st.just("abs"), st.sampled_from([0xFFFFFFFF, 0xFFFFFFFC, 0x80000000]))))


class HostileGuest(RuleBasedStateMachine):
    graphs = Bundle("graphs")
    contexts = Bundle("contexts")

    def __init__(self):
        super().__init__()
        self.objects_before = len(_host.nn._objects)
        self.inst = _host.instantiate(_module)
        self.p = Probe(self.inst)
        self.ready: set[int] = set()
        self.computed: set[int] = set()
        self.calls = 0

    def at(self, ptr) -> int:
        kind, value = ptr
        return (self.p.memory_size + value) & 0xFFFFFFFF if kind == "end" else value

    def errno(self, name, *args) -> int:
        self.calls += 1
        result = self.p.call(name, *args)
        assert 0 <= result <= 8, (name, args, result)
        return result

    # --- valid calls --------------------------------------------------------------
    @rule(target=graphs)
    def load(self):
        errno, graph = self.p.load(MODEL)
        assert errno == 0
        return graph

    @rule(target=contexts, graph=graphs)
    def init(self, graph):
        errno, ctx = self.p.context(graph)
        assert errno == 0
        return ctx

    @rule(ctx=contexts)
    def set_input(self, ctx):
        assert self.errno("set_input", ctx, 0, self.p.tensor([2, 3], 1, X.tobytes())) == 0
        self.ready.add(ctx)

    @rule(ctx=contexts)
    def compute(self, ctx):
        expected = 0 if ctx in self.ready else ERRNO["invalid_argument"]
        assert self.errno("compute", ctx) == expected
        if expected == 0:
            self.computed.add(ctx)

    @rule(ctx=contexts)
    def get_output(self, ctx):
        errno, out = self.p.output(ctx, 0, 24)
        assert (errno, out) == ((0, X.T.tobytes()) if ctx in self.computed else (ERRNO["invalid_argument"], b""))

    @rule(graph=consumes(graphs))
    def unload(self, graph):
        assert self.errno("unload", graph) == 0
        assert self.errno("unload", graph) == ERRNO["invalid_argument"]  # reused handle

    # --- hostile calls ------------------------------------------------------------
    @rule(array=hostile_ptr(8), slot=st.booleans())
    def load_with_bad_array(self, array, slot):
        out = self.p.put(b"\0" * 4)
        assert self.errno("load", self.at(array), 1, 1, 0, out) == ERRNO["invalid_argument"]

    @rule(count=WRAPPING)
    def load_with_wrapping_count(self, count):
        array = self.p.put(struct.pack("<II", self.p.put(MODEL), len(MODEL)))
        # past max-builders: the count is refused before the array is looked at
        assert self.errno("load", array, count, 1, 0, self.p.put(b"\0" * 4)) == ERRNO["too_large"]

    @rule(builder=hostile_ptr(1), length=st.one_of(st.integers(1, 64), WRAPPING))
    def load_with_bad_builder(self, builder, length):
        array = self.p.put(struct.pack("<II", self.at(builder), length))
        assert self.errno("load", array, 1, 1, 0, self.p.put(b"\0" * 4)) in (ERRNO["invalid_argument"],
                                                                           ERRNO["too_large"])

    @rule(slot=hostile_ptr(4))
    def load_with_bad_result_slot(self, slot):
        array = self.p.put(struct.pack("<II", self.p.put(MODEL), len(MODEL)))
        live = self.inst.live_resources()["graph"]
        assert self.errno("load", array, 1, 1, 0, self.at(slot)) == ERRNO["invalid_argument"]
        assert self.inst.live_resources()["graph"] == live  # nothing loaded, nothing leaked

    @rule(encoding=st.integers(7, 2**32 - 1), device=st.integers(4, 2**32 - 1))
    def load_with_unknown_tags(self, encoding, device):
        array = self.p.put(struct.pack("<II", self.p.put(MODEL), len(MODEL)))
        out = self.p.put(b"\0" * 4)
        assert self.errno("load", array, 1, encoding, 0, out) == ERRNO["invalid_argument"]
        assert self.errno("load", array, 1, 1, device, out) == ERRNO["invalid_argument"]

    @rule(handle=U32)
    def unknown_handles(self, handle):
        session = self.inst._session
        if session is not None and any(handle in table for table in session.handles.values()):
            return  # a live handle of some kind (handles are numbered per kind from 0)
        out = self.p.put(b"\0" * 4)
        assert self.errno("init_execution_context", handle, out) == ERRNO["invalid_argument"]
        assert self.errno("compute", handle) == ERRNO["invalid_argument"]
        assert self.errno("set_input", handle, 0, self.p.tensor([2, 3], 1, X.tobytes())) == ERRNO["invalid_argument"]
        assert self.errno("unload", handle) == ERRNO["invalid_argument"]

    @rule(ctx=contexts, record=hostile_ptr(20))
    def set_input_with_bad_record(self, ctx, record):
        assert self.errno("set_input", ctx, 0, self.at(record)) == ERRNO["invalid_argument"]

    @rule(ctx=contexts, dims=hostile_ptr(8), dims_len=st.one_of(st.integers(2, 4), WRAPPING))
    def set_input_with_bad_dims(self, ctx, dims, dims_len):
        data = self.p.put(X.tobytes())
        record = self.p.put(struct.pack("<IIBxxxII", self.at(dims), dims_len, 1, data, 24))
        # past max-tensor-rank: the count is refused before the dimensions are looked at
        expected = ERRNO["too_large"] if dims_len > _host.limits.max_tensor_rank else ERRNO["invalid_argument"]
        assert self.errno("set_input", ctx, 0, record) == expected

    @rule(ctx=contexts, data=hostile_ptr(24), length=st.one_of(st.just(24), WRAPPING))
    def set_input_with_bad_data(self, ctx, data, length):
        dims = self.p.put(struct.pack("<II", 2, 3))
        record = self.p.put(struct.pack("<IIBxxxII", dims, 2, 1, self.at(data), length))
        assert self.errno("set_input", ctx, 0, record) == ERRNO["invalid_argument"]

    @rule(ctx=contexts, index=st.integers(1, 2**32 - 1), tag=st.integers(6, 255))
    def set_input_with_bad_index_or_tag(self, ctx, index, tag):
        good = self.p.tensor([2, 3], 1, X.tobytes())
        assert self.errno("set_input", ctx, index, good) == ERRNO["invalid_argument"]
        assert self.errno("set_input", ctx, 0, self.p.tensor([2, 3], tag, X.tobytes())) == ERRNO["invalid_argument"]

    @rule(ctx=contexts, buf=hostile_ptr(24), slot=hostile_ptr(4), which=st.sampled_from(["buf", "slot", "both"]))
    def get_output_with_bad_pointers(self, ctx, buf, slot, which):
        good_buf, good_slot = self.p.put(b"\0" * 24), self.p.put(b"\0" * 4)
        b = self.at(buf) if which in ("buf", "both") else good_buf
        s = self.at(slot) if which in ("slot", "both") else good_slot
        assert self.errno("get_output", ctx, 0, b, 24, s) == ERRNO["invalid_argument"]

    @rule(ctx=contexts, size=st.sampled_from([0, 1, 23, 0xFFFFFFFF]), index=st.integers(0, 3))
    def get_output_with_bad_size_or_index(self, ctx, size, index):
        buf, slot = self.p.put(b"\0" * 24), self.p.put(b"\0" * 4)
        got = self.errno("get_output", ctx, index, buf, size, slot)
        if ctx not in self.computed or index > 0 or size == 0xFFFFFFFF:
            assert got == ERRNO["invalid_argument"]
        else:
            assert got == ERRNO["too_large"]

    @invariant()
    def next_valid_call_works(self):
        out = self.p.put(b"\0" * 4)
        name = self.p.put(b"no-such-model")
        assert self.errno("load_by_name", name, 13, out) == ERRNO["not_found"]

    def teardown(self):
        errno, graph = self.p.load(MODEL)
        assert errno == 0
        self.inst.close()
        assert len(_host.nn._objects) == self.objects_before
        HostileGuest.total_calls += self.calls


HostileGuest.total_calls = 0
TestHostileGuest = HostileGuest.TestCase


@pytest.fixture(scope="module", autouse=True)
def report_calls():
    yield
    print(f"\nhostile guest: {HostileGuest.total_calls} calls")


def test_a_core_modules_inputs_and_outputs_count_against_max_host_bytes():
    """A core module's staged inputs and outputs are host copies: counted against
    max-host-bytes as a component's tensors are (before, 40 contexts of 16 MiB each held
    1.3 GB under --max-host-bytes 16MiB). A replaced input or output frees what it held."""
    from wasinn.limits import Limits
    host = wasinn.Host(cache_dir=False, limits=Limits(max_host_bytes=5 << 20))
    host.core_modules.errors_to_stderr = False
    with host.instantiate(host.load_component(probe_wasm())) as inst:
        p = Probe(inst)
        errno, graph = p.load(MODEL)
        assert errno == 0
        x = np.zeros((512, 1024), np.float32)  # 2 MiB
        t = p.tensor(x.shape, 1, x.tobytes())
        (_, first), (_, second) = p.context(graph), p.context(graph)
        assert p.call("set_input", first, 0, t) == 0        # 2 MiB held
        assert p.call("compute", first) == 0                 # and 2 MiB of output: 4 MiB
        assert p.call("set_input", second, 0, t) == ERRNO["too_large"]  # 6 MiB would pass 5
        for _ in range(3):  # the same again: what it replaces is freed
            assert p.call("set_input", first, 0, t) == 0 and p.call("compute", first) == 0
        assert p.output(first, 0, x.nbytes)[0] == 0
        session = inst._session
        assert session.host_bytes == len(MODEL) + 2 * x.nbytes
    assert session.host_bytes == 0


def test_a_graph_unloaded_while_its_context_lives_still_counts():
    """`unload` frees the guest's handle; the graph stays counted against max-graphs (and
    its bytes against max-host-bytes) while a context of it lives: before, a guest that
    unloaded each graph and kept its context had 19 graphs live under max-graphs 2."""
    from wasinn.limits import Limits
    host = wasinn.Host(cache_dir=False, limits=Limits(max_graphs=2))
    host.core_modules.errors_to_stderr = False
    with host.instantiate(host.load_component(probe_wasm())) as inst:
        p = Probe(inst)
        for _ in range(2):
            errno, graph = p.load(MODEL)
            assert errno == 0 and p.context(graph)[0] == 0
            assert p.call("unload", graph) == 0
        assert p.load(MODEL)[0] == ERRNO["too_large"]
        assert inst._session.counts["graph"] == 2 and inst._session.host_bytes == 2 * len(MODEL)


def test_a_core_modules_input_shrinking_and_a_failed_compute_leave_its_count_exact():
    """The guest's own pattern against the count above: a large input replaced by a small
    one frees the difference, a compute refused for its outputs keeps no outputs, and
    the next compute runs."""
    from wasinn.limits import Limits
    host = wasinn.Host(cache_dir=False, limits=Limits(max_host_bytes=3 << 20))
    host.core_modules.errors_to_stderr = False
    with host.instantiate(host.load_component(probe_wasm())) as inst:
        p = Probe(inst)
        _, graph = p.load(MODEL)
        _, ctx = p.context(graph)
        big, small = np.zeros((512, 1024), np.float32), np.ones((2, 3), np.float32)  # 2 MiB, 24 bytes
        assert p.call("set_input", ctx, 0, p.tensor(big.shape, 1, big.tobytes())) == 0
        assert p.call("compute", ctx) == ERRNO["too_large"]  # 2 MiB of outputs would pass 3 MiB
        assert inst._session.host_bytes == len(MODEL) + big.nbytes
        assert p.call("set_input", ctx, 0, p.tensor(small.shape, 1, small.tobytes())) == 0
        assert inst._session.host_bytes == len(MODEL) + small.nbytes
        assert p.call("compute", ctx) == 0 and p.output(ctx, 0, 24) == (0, small.T.tobytes())
        assert inst._session.host_bytes == len(MODEL) + 2 * small.nbytes

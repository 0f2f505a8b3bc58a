"""Hostile arguments, priced: every count a guest declares (dimensions, builders,
tensors, bytes) is bounded before the host pays per element. Each case runs in a fresh
process (tests/support/hostile_probe.py) and checks that the host survives, that the one line
names the limit and its flag, that the call ends within its deadline + 1 s, and that the
process's peak memory during the call stays within the budget plus OVERHEAD."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import wasmtime

from support import models
import wasinn
from support.repo import CACHE, ROOT
from wasinn import TensorType
from wasinn.abi.memory import _KEEP_RESIDENT
from support.witx_support import ERRNO, probe_wasm

PROBE = ROOT / "tests" / "support" / "hostile_probe.py"
MIB = 1 << 20
DEADLINE = 2.0
# The table's flags: a 1 MiB budget and 4 tensors.
LIMITS = {"max-host-bytes": "1MiB", "max-tensors": 4, "deadline": f"{DEADLINE}s"}
# What a refused call may add to the peak beside its budget: a first call's code paths,
# the trap's message, allocator slack (the same calls within budget add 1-3 MiB here;
# the floods, unbounded, added 330 MB to 2.5 GB), and the guest's own memory when a trap
# tears it down: wasinn's pool keeps a freed memory's first 32 MiB resident, zeroed, for
# the next instance (abi/memory.py), and these guests grew theirs past that.
OVERHEAD = 16 * MIB + _KEEP_RESIDENT
# Longest stall of another thread during one call: the GIL held in one piece (a product of
# big ints held it 27 s) or this shared machine's scheduler. Measured: under 50 ms.
STALL = 0.5

# A component laid out by hand, not by wit-component: wasinn cannot add its data-path
# adapter, so the constructor's `dimensions` are lifted by wasmtime-py value by value.
PER_VALUE = """
(component
  (type $tensor-iface (instance
    (export "tensor" (type $tensor (sub resource)))
    (type $tt (enum "FP16" "FP32" "FP64" "BF16" "U8" "I32" "I64"))
    (export "tensor-type" (type $tty (eq $tt)))
    (type $own (own $tensor))
    (export "[constructor]tensor" (func (param "dimensions" (list u32)) (param "ty" $tty) (param "data" (list u8))
                                        (result $own)))))
  (import "wasi:nn/tensor@0.2.0-rc-2024-10-28" (instance $t (type $tensor-iface)))
  (core module $Mem (memory (export "memory") 1))
  (core instance $mem (instantiate $Mem))
  (alias core export $mem "memory" (core memory $m))
  (alias export $t "[constructor]tensor" (func $ctor))
  (core func $ctor-lowered (canon lower (func $ctor) (memory $m)))
  (core module $Main
    (import "env" "memory" (memory 1))
    (import "env" "ctor" (func $ctor (param i32 i32 i32 i32 i32) (result i32)))
    ;; n dimensions in memory grown for them (never touched), one u8 of data at 0
    (func (export "rank") (param $n i32) (result i32)
      (local $at i32)
      (local.set $at (i32.mul (memory.grow (i32.add (i32.shr_u (local.get $n) (i32.const 14)) (i32.const 1)))
                              (i32.const 65536)))
      (call $ctor (local.get $at) (local.get $n) (i32.const 4) (i32.const 0) (i32.const 1))))
  (core instance $main (instantiate $Main
    (with "env" (instance (export "memory" (memory $m)) (export "ctor" (func $ctor-lowered))))))
  (func (export "rank") (param "n" u32) (result u32) (canon lift (core func $main "rank"))))
"""


def _zeros_returned(name: str, result: str, shift: int) -> str:
    """An export `name` whose result (WIT text `result`, a list or a string) has N items
    from memory grown for them (N >> `shift` pages and one more) and never written: the
    items are zeros, at address 0."""
    return f"""
(component
  (core module $Main
    (memory (export "memory") 1)
    (func (export "{name}") (param $n i32) (result i32)
      (i32.store (i32.const 0) (i32.mul (memory.grow (i32.add (i32.shr_u (local.get $n) (i32.const {shift}))
                                                            (i32.const 1)))
                                        (i32.const 65536)))
      (i32.store (i32.const 4) (local.get $n))
      (i32.const 0)))
  (core instance $main (instantiate $Main))
  (func (export "{name}") (param "n" u32) (result {result})
    (canon lift (core func $main "{name}") (memory (core memory $main "memory")))))
"""


# N pairs of empty strings (16 bytes each)
PAIRS = _zeros_returned("pairs", "(list (tuple string string))", 12)
# What wasmtime makes of one such pair before any host code sees the list (its value
# and the C API's; measured 364 bytes), up to its hostcall fuel (~1.2 million pairs)
PER_PAIR = 512


# A string of N bytes (N U+0000s)
TEXT = _zeros_returned("text", "string", 16)
# What wasmtime makes of a string's bytes before any host code sees it: its own copy
# and the C API's (measured: 100 MB of text peaked at +202 MB, refused)
PER_TEXT_BYTE = 2.2


def probe(wasm, attack: list, *, limits: dict | None = None, model=None, warm=("tensors", "1", "16")) -> dict:
    spec = {"wasm": str(wasm), "cache": str(CACHE), "limits": {**LIMITS, **(limits or {})},
            "model": str(model) if model else None, "attack": attack, "warm": list(warm)}
    done = subprocess.run([sys.executable, str(PROBE), json.dumps(spec)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT / "tests")
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["seconds"] < DEADLINE + 1, got
    assert got["stall"] < STALL, got
    return got


def grew(got: dict) -> int:
    return got["peak"] - got["rss_before"]


def trapped(got: dict) -> str:
    kind, message = got["outcome"]
    assert kind == "trapped", got
    return message


@pytest.fixture(scope="module", autouse=True)
def compiled(hostile):
    """Compiled once here, so that no probe's peak is a compile's."""
    host = wasinn.Host(cache_dir=CACHE)
    host.load_component(hostile)


def test_rank_flood_through_the_constructor(hostile):
    got = probe(hostile, ["run", "rank", "14000000"])
    assert ("too-large: the tensor has 14000000 dimensions; the limit is 64 (max-tensor-rank, --max-tensor-rank)"
            in trapped(got))
    assert grew(got) < OVERHEAD, got


def test_rank_flood_through_the_per_value_path(tmp_path):
    """Where wasinn cannot add its adapter, wasmtime lifts the whole list before any
    host code runs (a 48-byte Rust value and a 32-byte C value per element, up to its
    hostcall fuel's 2,796,202); the host then refuses the count without a Python object
    per element."""
    wasm = tmp_path / "per-value.wasm"
    wasm.write_bytes(wasmtime.wat2wasm(PER_VALUE))
    n = 1_000_000
    got = probe(wasm, ["call", "rank", n])
    assert f"too-large: the tensor has {n} dimensions; the limit is 64 (max-tensor-rank, --max-tensor-rank)" \
        in trapped(got)
    assert grew(got) < 96 * n + OVERHEAD, got


@pytest.fixture(scope="module")
def witx_probe(tmp_path_factory):
    path = tmp_path_factory.mktemp("witx") / "probe.wasm"
    path.write_bytes(probe_wasm())
    return path


def test_set_input_dims_flood(witx_probe):
    got = probe(witx_probe, ["set_input", 14_000_000])
    assert got["outcome"] == ["returned", ERRNO["too_large"]], got
    assert got["last_error"] == ("too-large: input 'x' has 14000000 dimensions; the limit is 64 "
                                 "(max-tensor-rank, --max-tensor-rank)")
    assert grew(got) < OVERHEAD, got


@pytest.mark.parametrize("abi", ["component", "core"])
def test_builder_flood(hostile, witx_probe, abi):
    if abi == "component":
        got = probe(hostile, ["run", "builders", "4000000"])
        assert got["outcome"] == ["returned", 0], got  # load returned its error; the guest printed it
    else:
        got = probe(witx_probe, ["load", 4_000_000])
        assert got["outcome"] == ["returned", ERRNO["too_large"]], got
    assert got["last_error"] == ("too-large: graph.load got 4000000 graph builders; the limit is 16 "
                                 "(max-builders, --max-builders)")
    assert grew(got) < OVERHEAD, got


def test_a_graph_name_longer_than_any_registered_is_not_copied(witx_probe):
    got = probe(witx_probe, ["load_by_name", 1 << 30], limits={"memory": "4GiB"})
    assert got["outcome"] == ["returned", ERRNO["not_found"]], got
    assert got["last_error"] == f"not-found: no graph named {bytes(80)!r}... ({1 << 30} bytes); registered: none"
    assert grew(got) < OVERHEAD, got


def test_compute_with_a_huge_rank_against_an_unknown_rank_input(hostile, tmp_path):
    """With max-tensor-rank raised past the flood, compute still costs no product of big
    ints: the product of the dimensions stops at 2^64, and messages show 16 of them."""
    model = tmp_path / "any-rank.onnx"
    model.write_bytes(models.identity(TensorType.FP32))
    got = probe(hostile, ["run", "compute", "200000", "model"], model=model, warm=("compute", "1", "model"),
                limits={"max-tensor-rank": 1 << 20, "max-host-bytes": "4GiB"})
    assert got["outcome"] == ["returned", 0], got
    assert got["last_error"].startswith("invalid-argument: input 'x': float32 [65535,65535,")
    assert got["last_error"].endswith(f",... (200000 dimensions)] needs more than {2**64} bytes "
                                      f"(more than {2**64} elements x 4), got 4")
    assert grew(got) < OVERHEAD, got


def test_a_huge_rank_is_refused_by_the_constructor_first(hostile):
    got = probe(hostile, ["run", "compute", "200000", "model"], model=ROOT / "models" / "efficientnet-lite0" / "model.onnx",
                warm=("tensors", "1", "16"), limits={"max-host-bytes": "4GiB"})
    assert "(max-tensor-rank, --max-tensor-rank)" in trapped(got)

def test_timeouts_past_the_deadline_give_the_guest_no_more_time(hostile, tmp_path):
    """A backend's `timeout` gave the guest 20 epoch ticks (1 s) more to see it, at every
    timeout: a guest that computed again and again past its deadline, each compute a
    `timeout` at once, ran on for good (600 s under a 2 s deadline through the library).
    Now the call's first timeout gives it 0.1 s from then, and later ones
    nothing (the probe holds the call to its deadline + 1 s)."""
    model = tmp_path / "slow.onnx"
    model.write_bytes(models.slow_loop(1_000_000))  # minutes of compute, stopped at the deadline
    got = probe(hostile, ["run", "timeouts", "256", "model"], model=model, warm=("compute", "1", "model"))
    assert "ran past its deadline of 2 s (limit 'deadline', --deadline)" in trapped(got)
    # computes after the first timeout: each one a timeout at once, nothing sent to the backend
    assert got["last_error"] == ("timeout: the call's deadline came while its 1 inputs were matched to the "
                                 "model's; nothing was run"), got



def test_tensor_count_flood_traps_at_the_constructor(hostile):
    got = probe(hostile, ["run", "tensors", "1000000", "1"])
    assert ("too-large: the instance holds 4 live tensors; the limit is 4 (max-tensors, --max-tensors)"
            in trapped(got))
    assert grew(got) < OVERHEAD, got


def test_host_bytes_flood_traps_at_the_constructor(hostile):
    got = probe(hostile, ["run", "tensors", "1000", str(300 << 10)], limits={"max-tensors": 65536})
    message = trapped(got)
    assert "too-large: this tensor (307200 bytes) would make the instance hold 1228800 bytes on the host " \
           "(921600 already); the limit is 1048576 (max-host-bytes, --max-host-bytes)" in message, message
    assert grew(got) < 1 * MIB + OVERHEAD, got



def test_a_flood_of_tensors_of_many_dimensions_counts_them_in_max_host_bytes(hostile):
    # 65,536 one-byte tensors of 64 dimensions were counted as 64 KiB and held 190 MB of
    # Python objects (probe 64): each dimension past the eighth counts 40 bytes
    got = probe(hostile, ["run", "tensors", "65536", "1", "64"], limits={"max-tensors": 65536})
    assert "too-large: this tensor (2241 bytes) would make the instance hold" in trapped(got), trapped(got)
    assert grew(got) < 1 * MIB + OVERHEAD, got

def test_an_error_flood_traps_at_max_errors(hostile):
    """The wasi:nn errors of failing calls that a guest never drops count against
    max-errors, and their text against max-host-bytes: before, they counted nowhere
    (10,000 of 177 KB took the host to 1.8 GB; a million short ones to 733 MiB, where
    wasmtime's handle limit stopped them)."""
    got = probe(hostile, ["run", "errors", "1000000", "missing"], limits={"max-errors": 100})
    assert "too-large: the instance holds 100 live errors; the limit is 100 (max-errors, --max-errors)" \
        in trapped(got)
    assert grew(got) < OVERHEAD, got


def test_python_guests_bulk_shim_is_bounded_too():
    """componentize-py guests reach the host through the bulk shim, whose `dimensions`
    and `builders` are lifted value by value: past a limit they are not lifted, and the
    call traps with the limit's line (bulk load's builders are converted before the host
    function could return an error)."""
    from support.repo import guest_component
    host = wasinn.Host(cache_dir=CACHE)
    inst = host.instantiate(host.load_component(guest_component("adversary")))
    model = models.identity(TensorType.U8)
    with pytest.raises(wasinn.GuestTrap, match=r"too-large: graph.load got 17 graph builders; the limit is 16 "
                                               r"\(max-builders, --max-builders\)"):
        inst.call("load", [model] * 17, "onnx", "cpu")
    with pytest.raises(wasinn.GuestTrap, match=r"too-large: the tensor has 65 dimensions; the limit is 64 "
                                               r"\(max-tensor-rank, --max-tensor-rank\)"):
        inst.call("make-tensor", [1] * 65, "U8", b"x")
    assert inst.call("load", [model], "onnx", "cpu").tag == "ok"


def _compiled(tmp_path_factory, name: str, wat: str):
    path = tmp_path_factory.mktemp(name) / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm(wat))
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return _compiled(tmp_path_factory, "pairs", PAIRS)


def test_a_result_flood_is_refused_before_python_objects_are_made_of_it(pairs):
    """400,000 pairs: refused at the list's length, before a Python object is made of any
    (stock wasmtime-py made them, then wasinn, for 2.8 s; 450,000 user properties of an
    operator took 7 s); the peak is wasmtime's own values of them."""
    n = 400_000
    got = probe(pairs, ["call", "pairs", n])
    assert (f"guest trapped in pairs: the guest handed the host at least {n} list elements in one call"
            in trapped(got)) and "(limit 'max-list-elements', --max-list-elements)" in trapped(got)
    assert grew(got) < PER_PAIR * n + OVERHEAD, got


def test_a_result_lifted_past_the_calls_deadline_traps_there(pairs):
    """60,000 pairs are within max-list-elements but take Python ~0.3 s to lift: under a
    50 ms deadline the lift stops at it, as a guest's own code would."""
    got = probe(pairs, ["call", "pairs", 60_000], limits={"deadline": "50ms"})
    assert "guest trapped in pairs: the call ran past its deadline of 0.05 s" in trapped(got)
    assert got["seconds"] < 0.05 + 1, got


def test_a_result_within_the_limits_is_lifted_whole(pairs):
    got = probe(pairs, ["call", "pairs", 1000])
    assert got["outcome"] == ["returned", [["", ""]] * 1000], got


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return _compiled(tmp_path_factory, "text", TEXT)


def test_a_string_over_max_string_bytes_is_refused_before_python_copies_it(text):
    """100 MB of text, within wasmtime's own cap (128 MiB): Python copied and decoded it
    holding the GIL (another thread stalled 42-128 ms, +300 MB); now its length is taken
    from the call's budget first. The peak is wasmtime's own copies."""
    n = 100_000_000
    got = probe(text, ["call", "text", n])
    assert (f"guest trapped in text: the guest handed the host at least {n} bytes of strings in one call"
            in trapped(got)) and "the limit is 16777216 (limit 'max-string-bytes', --max-string-bytes)" in trapped(got)
    assert grew(got) < PER_TEXT_BYTE * n + OVERHEAD, got


def test_a_string_within_max_string_bytes_is_lifted_whole(text):
    got = probe(text, ["call", "text", 1 << 20], limits={"max-string-bytes": "1MiB"})
    assert got["outcome"] == ["returned", "\0" * (1 << 20)], got


# An export whose result is N lists that all point at the same M u32s (from address 0):
# no one list is long, together they are N x M elements.
NESTED = """
(component
  (core module $Main
    (memory (export "memory") 1)
    (func (export "nested") (param $n i32) (param $m i32) (result i32) (local $i i32) (local $at i32)
      (local.set $at (i32.mul (memory.grow (i32.add (i32.shr_u (local.get $n) (i32.const 13)) (i32.const 1)))
                              (i32.const 65536)))
      (i32.store (i32.const 0) (local.get $at))
      (i32.store (i32.const 4) (local.get $n))
      (loop $l
        (i32.store offset=4 (i32.add (local.get $at) (i32.shl (local.get $i) (i32.const 3))) (local.get $m))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
      (i32.const 0)))
  (core instance $main (instantiate $Main))
  (func (export "nested") (param "n" u32) (param "m" u32) (result (list (list u32)))
    (canon lift (core func $main "nested") (memory (core memory $main "memory")))))
"""


def test_lists_of_short_lists_count_together_and_the_next_call_runs():
    """1,000 lists of 100 elements: none is long, together they pass max-list-elements
    (here 10,000). The call traps in one line; the next call gets a fresh instance."""
    host = wasinn.Host(cache_dir=False, limits=wasinn.limits.Limits(max_list_elements=10_000))
    with host.instantiate(host.load_component(wasmtime.wat2wasm(NESTED))) as inst:
        with pytest.raises(wasinn.GuestTrap) as e:
            inst.call("nested", 1000, 100)
        assert str(e.value) == (
            "guest trapped in nested: the guest handed the host at least 10100 list elements in one call (a host "
            "function's arguments or an export's result, its lists but those of bytes together); the limit is "
            "10000 (limit 'max-list-elements', --max-list-elements); the instance was torn down and its "
            "resources freed, the next call gets a fresh one")
        assert [len(inner) for inner in inst.call("nested", 99, 100)] == [100] * 99  # 9,999 elements: within it


# An export whose result is N handles of a resource type the guest defines itself, each
# made with resource.new (lifting.py takes each as a ResourceAny, marking its slot)
HANDLES = """
(component
  (type $R (resource (rep i32)))
  (export $r "r" (type $R))
  (core func $new (canon resource.new $R))
  (core module $Main
    (import "env" "new" (func $new (param i32) (result i32)))
    (memory (export "memory") 1)
    (func (export "handles") (param $n i32) (result i32) (local $i i32) (local $at i32)
      (local.set $at (i32.mul (memory.grow (i32.add (i32.shr_u (local.get $n) (i32.const 14)) (i32.const 1)))
                              (i32.const 65536)))
      (i32.store (i32.const 0) (local.get $at))
      (i32.store (i32.const 4) (local.get $n))
      (block $done (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (i32.store (i32.add (local.get $at) (i32.shl (local.get $i) (i32.const 2))) (call $new (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
      (i32.const 0)))
  (core instance $main (instantiate $Main (with "env" (instance (export "new" (func $new))))))
  (type $list (list (own $r)))
  (func (export "handles") (param "n" u32) (result $list)
    (canon lift (core func $main "handles") (memory (core memory $main "memory")))))
"""


def test_a_flood_of_the_guests_own_handles_is_counted_and_the_next_call_runs():
    """20,000 handles of the guest's own resource type, each a Python object once lifted:
    past max-list-elements (here 10,000) the call traps in one line before any is taken;
    60,000 within it (~0.7 s to lift) stop at a 0.1 s deadline; the next call gets a
    fresh instance, and a list within both comes back handle by handle."""
    component = wasmtime.wat2wasm(HANDLES)
    host = wasinn.Host(cache_dir=False, limits=wasinn.limits.Limits(max_list_elements=10_000))
    with host.instantiate(host.load_component(component)) as inst:
        with pytest.raises(wasinn.GuestTrap) as e:
            inst.call("handles", 20_000)
        assert str(e.value).startswith(
            "guest trapped in handles: the guest handed the host at least 20000 list elements in one call")
        assert "(limit 'max-list-elements', --max-list-elements)" in str(e.value)
        handles = inst.call("handles", 9_999)
        assert len(handles) == 9_999 and {repr(h) for h in handles} == {"<a resource of the guest>"}
    host = wasinn.Host(cache_dir=False, limits=wasinn.limits.Limits(deadline=0.1))
    with host.instantiate(host.load_component(component)) as inst:
        with pytest.raises(wasinn.GuestTrap, match=r"^guest trapped in handles: the call ran past its deadline of 0.1 s"):
            inst.call("handles", 60_000)
        assert len(inst.call("handles", 3)) == 3

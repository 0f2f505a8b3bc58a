"""Store limits hold for the whole store, whatever the guest's .wasm declares: --memory
is the total of all its linear memories, and the counts of memories, tables, table
elements and core instances are bounded; past a limit at instantiation the run fails
with one line naming it, past it later memory.grow and table.grow return -1."""
from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

import pytest
import wasmtime

import wasinn
from wasinn.cli import host_from_args, parser
from wasinn.limits import Limits

MIB = 1 << 20


def instance(wat: str, kind: str = "module", **limits) -> wasinn.Instance:
    """An instance of `wat` (a core module's text), as a core module or wrapped in a
    component that exports its function `f` as `f`."""
    if kind == "component":
        wat = f'(component (core module $m {wat[len("(module"):-1]}) (core instance $i (instantiate $m)) ' \
              '(func (export "f") (param "n" u32) (result s32) (canon lift (core func $i "f"))))'
    host = wasinn.Host(cache_dir=False, limits=Limits().updated(limits))
    return host.instantiate(host.load_component(wasmtime.wat2wasm(wat)))


def memories(n: int, pages: int) -> str:
    """`n` memories of `pages` each; `f(i)` grows memory i by one page."""
    grows = "".join(f"(if (i32.eq (local.get 0) (i32.const {i})) (then (return (memory.grow {i} (i32.const 1)))))"
                    for i in range(n))
    return (f'(module {" ".join(f"(memory {pages})" for _ in range(n))}'
            f' (func (export "f") (param i32) (result i32) {grows} (i32.const -2)))')


def refusal(inst: wasinn.Instance) -> str:
    with pytest.raises(wasinn.WasinnError) as e:
        inst.call("f", 0)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("kind", ["module", "component"])
def test_sixteen_memories_share_one_limit(kind):
    """16 memories of 64 MiB under --memory 64MiB: each alone fits wasmtime's limit
    (per memory), together they are refused before any is used."""
    message = refusal(instance(memories(16, 1024), kind, memory="64MiB"))
    assert message == (f"cannot instantiate the {kind}: its memories would hold 128.0 MiB together; "
                       "the limit is 64 MiB (limit 'memory', --memory)")
    inst = instance(memories(16, 64), kind, memory="64MiB")  # 16 x 4 MiB: exactly the limit
    assert [inst.call("f", i) for i in (0, 15)] == [-1, -1]


@pytest.mark.parametrize("kind", ["module", "component"])
def test_memory_grow_past_the_total_returns_minus_one(kind):
    inst = instance(memories(2, 1), kind, memory="256KiB")  # room for 2 more pages, in either memory
    assert [inst.call("f", i) for i in (0, 1, 0, 1)] == [1, 1, -1, -1]
    assert inst.instances_started == 1  # a refused grow is no trap


def test_a_memory_limit_its_memories_cannot_reach_is_refused():
    message = refusal(instance(memories(2, 1), memory="16GiB"))
    assert message == ("cannot instantiate the module: the limit is 16 GiB, more than its 2 linear memories "
                       "can reach together (8 GiB: 4 GiB each, 32-bit), so it would bound nothing "
                       "(limit 'memory', --memory)")
    assert instance(memories(2, 1), memory="8GiB").call("f", 0) == 1


TABLE_FLOOD = '(module (table 0 funcref) (func (export "f") (param i32) (result i32) ' \
              '(table.grow (ref.null func) (i32.const 134217728))))'


def test_a_table_grown_by_2_to_the_27_is_refused_and_the_host_stays_small():
    """table.grow by 2^27 elements (8 bytes each on the host: the process peaked at
    1.1 GB before the limit) returns -1. Measured in a fresh process, whose data limit
    of 1 GiB makes a regression fail there instead of swapping. Such a process peaks at
    ~50 MiB here; 200 MiB leaves room for other machines' libraries and stays far
    below the flood's 1 GiB."""
    code = textwrap.dedent(f"""
        import wasmtime, wasinn
        host = wasinn.Host(cache_dir=False)
        inst = host.instantiate(host.load_component(wasmtime.wat2wasm({TABLE_FLOOD!r})))
        print(inst.call("f", 0))
        print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30)))
    assert proc.returncode == 0, proc.stderr
    result, peak_kib = proc.stdout.split()
    assert result == "-1"
    assert int(peak_kib) < 200 * 1024, f"peak {int(peak_kib) >> 10} MiB"


# A component that takes a WASI resource (stdout's stream) n times and drops none.
HANDLE_FLOOD = """(component
  (type $ty-streams (instance (export "output-stream" (type (sub resource)))))
  (import "wasi:io/streams@0.2.0" (instance $streams (type $ty-streams)))
  (alias export $streams "output-stream" (type $output-stream))
  (type $ty-stdout (instance
    (alias outer 1 $output-stream (type (;0;)))
    (export (;1;) "output-stream" (type (eq 0)))
    (type (;2;) (own 1))
    (type (;3;) (func (result 2)))
    (export "get-stdout" (func (type 3)))))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout (type $ty-stdout)))
  (core func $get (canon lower (func $stdout "get-stdout")))
  (core module $m
    (import "c" "get" (func $get (result i32)))
    (func (export "f") (param $n i32) (result i32) (local $i i32)
      (block $done (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (drop (call $get))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
      (local.get $i)))
  (core instance $i (instantiate $m (with "c" (instance (export "get" (func $get))))))
  (func (export "f") (param "n" u32) (result u32) (canon lift (core func $i "f"))))"""


def test_wasi_resources_a_component_never_drops_are_bounded_by_wasmtimes_handle_limit():
    """WASI resources live in wasmtime's tables, not the host's counts: a component that
    takes stdout's stream a million times (dropping none) meets wasmtime's store handle
    limit first, a trap with the host ~10 MiB larger (measured in a fresh process with a
    1 GiB data limit, as above), and the next call runs on a fresh instance."""
    code = textwrap.dedent(f"""
        import wasmtime, wasinn
        host = wasinn.Host(cache_dir=False)
        inst = host.instantiate(host.load_component(wasmtime.wat2wasm({HANDLE_FLOOD!r})))
        try:
            inst.call("f", 1_000_000)
        except wasinn.GuestTrap as e:
            print("trap:", "store handle limit exceeded" in str(e))
        print(inst.call("f", 10))
        print(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM")))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30)))
    assert proc.returncode == 0, proc.stderr
    trapped, again, peak_kib = proc.stdout.split("\n")[:3]
    assert (trapped, again) == ("trap: True", "10")
    assert int(peak_kib) < 200 * 1024, f"peak {int(peak_kib) >> 10} MiB"


def test_table_grow_past_max_table_elements_returns_minus_one():
    wat = '(module (table 0 funcref) (func (export "f") (param i32) (result i32) ' \
          '(table.grow (ref.null func) (local.get 0))))'
    inst = instance(wat, max_table_elements=100)
    assert [inst.call("f", n) for n in (60, 50, 40)] == [0, -1, 60]


@pytest.mark.parametrize("wat, limits, message", [
    ("(module (memory 1) (memory 1) (func (export \"f\") (param i32) (result i32) (i32.const 0)))",
     {"max-memories": 1}, "it makes more linear memories than 1 (limit 'max-memories', --max-memories)"),
    ("(module (table 1 funcref) (table 1 funcref) (func (export \"f\") (param i32) (result i32) (i32.const 0)))",
     {"max-tables": 1}, "it makes more tables than 1 (limit 'max-tables', --max-tables)"),
    ("(module (table 10 funcref) (func (export \"f\") (param i32) (result i32) (i32.const 0)))",
     {"max-table-elements": 5},
     "a table starts at 10 elements; the limit is 5 (limit 'max-table-elements', --max-table-elements)"),
])
def test_counts_past_their_limits_are_refused_in_one_line(wat, limits, message):
    assert refusal(instance(wat, **limits)) == f"cannot instantiate the module: {message}"


def test_core_instances_past_max_instances_are_refused_in_one_line():
    wat = ('(component (core module $m (func (export "f") (param i32) (result i32) (i32.const 7))) '
           '(core instance $a (instantiate $m)) (core instance $b (instantiate $m)) '
           '(func (export "f") (param "n" u32) (result s32) (canon lift (core func $b "f"))))')
    host = wasinn.Host(cache_dir=False, limits=Limits(max_instances=1))
    component = host.load_component(wasmtime.wat2wasm(wat))
    assert refusal(host.instantiate(component)) == (
        "cannot instantiate the component: it makes more core instances than 1 (limit 'max-instances', --max-instances)")
    host.limits = Limits(max_instances=2)
    assert host.instantiate(component).call("f", 0) == 7


def test_the_config_file_and_the_flags_take_the_new_limits(tmp_path):
    cfg = tmp_path / "wasinn.toml"
    cfg.write_text('[limits]\nmax-memories = 2\nmax-tables = 3\nmax-table-elements = 4096\nmax-instances = 20\n')
    assert Limits.from_file(cfg) == Limits(max_memories=2, max_tables=3, max_table_elements=4096, max_instances=20)
    args = parser().parse_args(["run", "--config", str(cfg), "--max-tables", "5", "--max-instances", "30", "x.wasm"])
    limits = host_from_args(args).limits
    assert (limits.max_memories, limits.max_tables, limits.max_table_elements, limits.max_instances) == (2, 5, 4096, 30)


@pytest.mark.parametrize("key, value", [("memory", -1), ("max-tables", "-3"), ("max-instances", 0),
                                        ("deadline", -5), ("max-table-elements", "inf")])
def test_nonsense_is_refused_at_parse_time(key, value):
    """wasmtime reads a negative store limit as no limit at all."""
    with pytest.raises(wasinn.WasinnError, match=f"^limit {key}: "):
        Limits().updated({key: value})

"""Components whose bytes attack the compile step (the guest controls every byte of its
.wasm): work is bounded by the bytes, not by what they declare, and every refusal is
one line (a WasinnError), never a traceback.
"""
from __future__ import annotations

import random
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import wasmtime

import wasinn
from wasinn import compiler
from wasinn.abi import binary, images, rewrite, wasm_tools
from wasinn.abi.binary import (COMPONENT_PREAMBLE, CORE_PREAMBLE, MAX_ALL_MODULE_SECTIONS, MAX_BINARIES,
                               MAX_MODULE_SECTIONS, MAX_NESTING, MAX_SECTIONS, MAX_TOP_LEVEL_ITEMS, MAX_TYPE_BYTES,
                               leb, read_layout)
from wasinn.embedding.types import MAX_ITEMS, MAX_TYPE_PARTS
from wasinn.errors import GuestTrap, WasinnError
from wasinn.limits import Limits

NN_TENSOR = '(import "wasi:nn/tensor@0.2.0-rc-2024-10-28" (instance))'  # puts it on host memories
GIB_PAGES = 1 << 14


def _bomb(modules: int = 3) -> str:
    """Core modules of 1 GiB (and a page more each: distinct types, so each gets its
    image) with one data byte at their very end, each byte readable by an export."""
    parts = [f"(component {NN_TENSOR}"]
    for i in range(modules):
        last = (GIB_PAGES + i) * 65536 - 1
        parts += [f'(core module $m{i} (memory {GIB_PAGES + i}) (data (i32.const {last}) "x")',
                  f'  (func (export "last") (result i32) (i32.load8_u (i32.const {last}))))',
                  f"(core instance $i{i} (instantiate $m{i}))",
                  f'(func (export "last{i}") (result u32) (canon lift (core func $i{i} "last")))']
    return "\n".join(parts) + ")"


def _large(mib: int) -> bytes:
    """A component of one core module whose one active data segment holds `mib` MiB of
    non-zero bytes, and a custom section naming wasi:nn/tensor (so the rewrite reads it too)."""
    def section(sid: int, payload: bytes) -> bytes:
        return bytes([sid]) + leb(len(payload)) + payload
    n = mib << 20
    core = CORE_PREAMBLE + section(5, b"\x01\x00" + leb((n >> 16) + 1))
    core += section(11, b"\x01\x00\x41\x00\x0b" + leb(n) + b"\x07" * n)
    return (COMPONENT_PREAMBLE + section(1, core)
            + section(0, b"\x01x" + NN_TENSOR.split('"')[1].encode()))


def test_loading_a_large_component_leaves_other_threads_running(host):
    """A 400 MB component's load had held the GIL up to 0.6 s at a time (its sections
    sliced out of bytes, its names searched, its image built, zero-counted and joined each
    in one C call), which stopped every other thread and the epoch ticker with it (another
    instance's 1 s deadline ended +0.9 s late). Now each walk goes a slice at a time: the
    longest stop another thread sees loading 256 MiB stays far below those (~10 ms here;
    the bound leaves a noisy machine room, and would fail the old code, 0.2-0.4 s)."""
    wasm = _large(256)
    gaps, loading = [], threading.Event()

    def ticker():
        last = time.perf_counter()
        while loading.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
    loading.set()
    watcher = threading.Thread(target=ticker)
    watcher.start()
    try:
        component = host.load_component(wasm)
    finally:
        loading.clear()
        watcher.join()
    del wasm
    assert component is not None and max(gaps) < 0.15, f"another thread waited {max(gaps):.3f} s at once"


def _nested(depth: int) -> bytes:
    """`depth` components each nested in the last (the text format refuses this deep)."""
    inner = COMPONENT_PREAMBLE
    for _ in range(depth):
        inner = COMPONENT_PREAMBLE + b"\x04" + leb(len(inner)) + inner
    return inner


@pytest.fixture(scope="module")
def host():
    return wasinn.Host(cache_dir=False)


def test_a_memory_image_bomb_compiles_in_little_memory():
    """Three 1 GiB memories with one byte at their ends had made the compile step build
    3 GiB of images (> 2.5 GB peak). In a fresh process capped at 3 GiB of address space:
    the images hold one page each and the peak RSS (VmHWM: getrusage's maxrss would
    carry the forking test process's) stays under 300 MiB (a bare Host in such a process
    is ~50 MiB: the bound leaves room for allocators, not for one 1 GiB image)."""
    script = textwrap.dedent(f"""
        import resource, wasmtime, wasinn, wasinn.embedding.records
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        wasm = wasmtime.wat2wasm({_bomb()!r})
        component = wasinn.Host(cache_dir=False).load_component(wasm)
        runs = [runs for runs, _ in wasinn.embedding.records.record(component).images.images.values()]
        hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")).split()[1]
        print(len(runs), sum(n for r in runs for _, _, n in r), hwm)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    images_taken, image_bytes, peak_kib = map(int, out.stdout.split())
    assert images_taken == 3 and image_bytes == 3 * 4096
    assert peak_kib < 300 << 10, f"peak RSS {peak_kib >> 10} MiB"


def test_the_bomb_runs_or_is_refused_at_instantiation_by_the_memory_limit():
    """The memory limit (all memories together) is applied at instantiation, since
    compiled forms are cached across limits: the 1 GiB memories run under 4 GiB, their
    bytes where the segments put them, and are refused in one line under 512 MiB."""
    host = wasinn.Host(cache_dir=False, limits=Limits(memory=4 << 30))
    component = host.load_component(wasmtime.wat2wasm(_bomb()))
    with host.instantiate(component) as inst:
        assert [inst.call(f"last{i}") for i in range(3)] == [ord("x")] * 3
    host.memories.release()  # the freed 4 GiB reservations it keeps for a next instance
    small = wasinn.Host(cache_dir=False, limits=Limits(memory=512 << 20))
    with pytest.raises(WasinnError) as e:
        small.instantiate(small.load_component(wasmtime.wat2wasm(_bomb()))).call("last0")
    assert "\n" not in str(e.value)


def test_segments_too_sparse_for_an_image_stay_in_the_module():
    """One byte on each of 100 pages 1 MiB apart: past the runs an image may have, so
    wasmtime copies the 100 bytes, and no image of the 100 MiB they span is built."""
    data = " ".join(f'(data (i32.const {i << 20}) "y")' for i in range(100))
    assert images._strip_module(wasmtime.wat2wasm(f"(module (memory 1600) {data})")) is None


def test_a_dense_image_is_kept_in_runs_without_the_zeros_before_it():
    """A componentize-py module's data starts ~1 MiB in (the stack comes first): its
    image is one run, and the blob holds its bytes, not the megabyte before them."""
    wat = '(module (memory 32) (data (i32.const 0x100010) "a") (data (i32.const 0x100800) "b"))'
    _, _, runs, image = images._strip_module(wasmtime.wat2wasm(wat))
    assert [(at, n) for at, _, n in runs] == [(0x100000, 4096)] and len(image) == 4096
    assert image[0x10:0x11] == b"a" and image[0x800:0x801] == b"b"


@pytest.mark.parametrize("depth", [1_500, MAX_NESTING + 1])
def test_deep_nesting_is_refused_in_one_line(host, depth):
    wasm = _nested(depth)
    with pytest.raises(WasinnError, match=f"nested more than {MAX_NESTING} deep") as e:
        host.load_component(wasm)
    assert "\n" not in str(e.value)
    with pytest.raises(WasinnError, match=f"nested more than {MAX_NESTING} deep"):
        host.load_component(wasmtime.wat2wasm(f"(component {NN_TENSOR})") + wasm[len(COMPONENT_PREAMBLE):])


def test_nesting_up_to_the_limit_loads(host):
    host.load_component(_nested(MAX_NESTING))


def _exports(n: int) -> bytes:
    """A component exporting one function under `n` names."""
    names = " ".join(f'(export "f{i}" (func $f))' for i in range(n))
    return wasmtime.wat2wasm(f"""(component
      (core module $m (func (export "f") (result i32) (i32.const 7)))
      (core instance $i (instantiate $m))
      (func $f (result u32) (canon lift (core func $i "f"))) {names})""")


def test_more_exports_or_imports_than_wasinn_lists_are_refused_in_one_line(host):
    """wasmtime hands a component's imports and exports out by index, walking from the
    first each time: listing 20,000 exports took 4 s at a component's first call. Past
    MAX_ITEMS the component is refused when it loads; up to it, it runs."""
    with pytest.raises(WasinnError) as e:
        host.load_component(_exports(MAX_ITEMS + 1))
    assert str(e.value) == (f"component has {MAX_ITEMS + 1} exports; wasinn takes at most {MAX_ITEMS} (wasinn's "
                            "limit: wasmtime lists them in quadratic time)")
    imports = " ".join(f'(import "f{i}" (func))' for i in range(MAX_ITEMS + 1))
    with pytest.raises(WasinnError, match=rf"^component has {MAX_ITEMS + 1} imports; wasinn takes at most"):
        host.load_component(wasmtime.wat2wasm(f"(component {imports})"))
    assert host.instantiate(host.load_component(_exports(MAX_ITEMS))).call(f"f{MAX_ITEMS - 1}") == 7


def test_a_core_module_of_more_imports_than_wasinn_checks_is_refused_in_one_line():
    """Each import of a core module is listed and checked at every load, and under
    -W unknown-imports-trap=y stood in for: 50,000 (a 0.5 MB module) took 7 s to load."""
    def module(n: int) -> bytes:
        imports = " ".join(f'(import "m" "f{i}" (func))' for i in range(n))
        return wasmtime.wat2wasm(f'(module {imports} (memory (export "memory") 1) (func (export "_start")))')
    host = wasinn.Host(cache_dir=False, unknown_imports="trap")
    with pytest.raises(WasinnError) as e:
        host.load_component(module(MAX_ITEMS + 1))
    assert str(e.value) == (f"component has {MAX_ITEMS + 1} imports; wasinn takes at most {MAX_ITEMS} (wasinn's "
                            "limit: it checks each at every load and stands in for those it does not define)")
    host.instantiate(host.load_component(module(MAX_ITEMS))).call("_start")


def _imports(n: int) -> bytes:
    """A component's sections: a function type, and `n` imports of it."""
    funcs = b"".join(b"\x00" + leb(len(name)) + name + b"\x01\x00" for name in (f"f{i}".encode() for i in range(n)))
    return _section(7, leb(1) + b"\x40\x00\x01\x00") + _section(10, leb(n) + funcs)


@pytest.mark.parametrize("nested", [False, True])
def test_declared_imports_past_the_limit_are_refused_before_wasmtime_validates_them(host, nested):
    """wasmtime validated 500,000 declared imports (5.4 MB) for 9 s, to 709 MB, before the
    count was checked; the binary's own count now comes first, nested components' too,
    and their sum (four nested components of 1,000 and one more)."""
    inner = COMPONENT_PREAMBLE + _imports(MAX_ITEMS + 1)
    wasm = COMPONENT_PREAMBLE + _section(4, inner) if nested else inner
    with pytest.raises(WasinnError) as e:
        host.load_component(wasm)
    where = "a component nested in component" if nested else "component"
    assert str(e.value) == (f"{where} has {MAX_ITEMS + 1} imports; wasinn takes at most {MAX_ITEMS} (wasinn's "
                            "limit: wasmtime lists them in quadratic time)")
    many = COMPONENT_PREAMBLE + _section(4, COMPONENT_PREAMBLE + _imports(MAX_ITEMS)) * 4 + _imports(1)
    with pytest.raises(WasinnError, match=r"^component declares 4001 imports and exports in its components "
                                          r"together; wasinn takes at most 4000"):
        host.load_component(many)


def test_an_imported_instance_of_more_functions_than_wasinn_lists_is_refused_in_one_line():
    """Under -W unknown-imports-trap=y the host lists an unknown instance's functions to
    define each as a trap."""
    funcs = " ".join(f'(export "f{i}" (func))' for i in range(MAX_ITEMS + 1))
    wasm = wasmtime.wat2wasm(f'(component (import "x:y/z" (instance {funcs})))')
    host = wasinn.Host(cache_dir=False, unknown_imports="trap")
    with pytest.raises(WasinnError) as e:
        host.instantiate(host.load_component(wasm)).call("nothing")
    assert str(e.value) == (f"cannot instantiate the component: its import x:y/z has {MAX_ITEMS + 1} exports; "
                            f"wasinn takes at most {MAX_ITEMS} (wasinn's limit: wasmtime lists them in quadratic time)")


def test_a_module_of_many_exports_is_called_by_name():
    """A core module's export is looked up by name: stock wasmtime-py lists every export
    first, each found by walking from the first (20,000 exports: 11 s before the first
    call, past any deadline); a wrong name's message shows 20 of them."""
    n = 20_000
    wasm = wasmtime.wat2wasm('(module (memory (export "memory") 1) (func $f (result i32) (i32.const 7)) '
                             + " ".join(f'(export "f{i}" (func $f))' for i in range(n)) + ")")
    host = wasinn.Host(cache_dir=False, limits=Limits(deadline=1.0))
    inst = host.instantiate(host.load_component(wasm))
    start = time.monotonic()
    assert inst.call(f"f{n - 1}") == 7
    assert time.monotonic() - start < 1.0 + 1  # the corpus' bound: a call's deadline + 1 s
    with pytest.raises(WasinnError) as e:
        inst.call("nope")
    assert str(e.value).endswith(f", f10013, ... ({n} in all)")


@pytest.mark.parametrize("name", ["wasinn:adapter/tensors@0.1.0", "wasinn:adapter/graphs@0.1.1",
                                  "wasinn:adapter-buffers/buffers@0.1.0"])
@pytest.mark.parametrize("with_nn", [True, False])
def test_importing_the_host_internal_adapter_is_refused(host, name, with_nn):
    wat = f'(component {NN_TENSOR if with_nn else ""} (import "{name}" (instance)))'
    with pytest.raises(WasinnError, match="host-internal interface; a component may not import it") as e:
        host.load_component(wasmtime.wat2wasm(wat))
    assert "\n" not in str(e.value)


def test_naming_the_adapter_without_importing_it_loads(host):
    """The import is read from the component, not guessed from its bytes: a string that
    merely says wasinn:adapter is no import."""
    wat = f'(component {NN_TENSOR} (core module (@custom "x" "wasinn:adapter/tensors")))'
    host.load_component(wasmtime.wat2wasm(wat))


def test_a_rewrite_that_does_not_validate_falls_back_to_the_standard_lowering(monkeypatch):
    lines = []
    host = wasinn.Host(cache_dir=False, progress=lines.append)
    wasm = wasmtime.wat2wasm(f"(component {NN_TENSOR})")
    broken = wasmtime.wat2wasm('(component (core module $m) (core instance (instantiate $m (with "x" (instance 7)))))')
    monkeypatch.setattr(rewrite, "rewrite", lambda wasm, label: (broken, None))
    host.load_component(wasm)
    assert any("keeps the standard lowering (per-byte, capped): the rewritten component does not validate"
               in ln for ln in lines), lines



def test_an_export_named_by_a_number_past_any_slot_is_no_slot():
    """The rewrite reads the shim table's slot numbers from export names: one of 5,000
    digits (past int()'s limit) was a ValueError traceback out of load_component. It is
    no slot: the rest of the table is rewritten, and the component runs."""
    from support.guest_builds import ToolchainMissing, c_component, skip_without
    from support.repo import ROOT
    try:
        wasm = c_component([ROOT / "guest" / "c-nn" / "nn.c"], name="c-nn", world="wasinn:guest/std-command")
    except ToolchainMissing as e:
        skip_without(e)
    text = wasm_tools.wasm_tools_output(["print", "-"], wasm.read_bytes(), "printing").decode()
    anchor = "  (core instance $fixup"
    assert anchor in text
    lowered = next(re.search(r"\(;(\d+);\) \(canon lower", line).group(1) for line in text.splitlines()
                   if "(core func " in line and "canon lower" in line and "tensor.data" in line)
    evil = f'  (core instance $evil (export "{"1" * 5000}" (func {lowered})))\n'
    lines = []
    host = wasinn.Host(cache_dir=False, progress=lines.append)
    component = host.load_component(wasm_tools.wasm_tools_output(
        ["parse", "-"], text.replace(anchor, evil + anchor, 1).encode(), "parsing"))
    assert any("adding wasinn's data-path adapter" in line for line in lines), lines
    with host.instantiate(component) as instance:
        import numpy as np
        assert instance.call("echo", np.arange(4, dtype=np.uint8)).to_bytes() == bytes(range(4))


def test_wasm_tools_output_is_bounded():
    with pytest.raises(WasinnError, match="output passes"):
        wasm_tools.wasm_tools_output(["print", "-"], wasmtime.wat2wasm(f'(module (memory 1) (data (i32.const 0) "{"x" * 5000}"))'),
                                   "printing", limit=1000)


def _many_functions(n: int) -> bytes:
    return ("(module\n" + "".join(f"(func $f{i} (result i32) i32.const {i})\n" for i in range(n)) + ")").encode()


def test_wasm_tools_is_held_to_its_memory_and_time():
    """It parses the guest's bytes (rewrite.py): a parse that grew without end, or never
    ended, would have held the host's load with it. Past its address space or its time
    it is stopped, in one line; within them it runs (the defaults are far above what
    rewrite.py hands it: 2 MiB of binary, 8 MiB of text)."""
    text = _many_functions(50_000)  # 2 MB: ~0.1 s and ~30 MiB to parse
    assert wasm_tools.wasm_tools_output(["parse", "-"], text, "parsing").startswith(CORE_PREAMBLE)
    with pytest.raises(WasinnError, match=r"^parsing: wasm-tools needed more than 32 MiB and was stopped "
                                          r"\(wasinn's limit on it\)$"):
        wasm_tools.wasm_tools_output(["parse", "-"], text, "parsing", memory=32 << 20)
    with pytest.raises(WasinnError, match=r"^parsing: wasm-tools ran 0.005 s and was stopped \(wasinn's limit on "
                                          r"it\)$"):
        wasm_tools.wasm_tools_output(["parse", "-"], _many_functions(400_000), "parsing", timeout=0.005)


HOSTILE = [
    COMPONENT_PREAMBLE + b"\x04\xff\xff\xff\xff\x0f",  # a nested component past the end
    COMPONENT_PREAMBLE + b"\x01" + b"\xff" * 20,  # a size that never ends
    COMPONENT_PREAMBLE + b"\x01\x05\0asm\x01",  # a core module cut short
    COMPONENT_PREAMBLE + b"\x04\x08" + COMPONENT_PREAMBLE[:7],  # a nested preamble cut short
    b"\0asm\x0d\0\x01\0" + b"\x0a" + leb(3) + b"\x01\x00\xff",  # an import section of junk
]


@pytest.mark.parametrize("wasm", HOSTILE)
def test_malformed_bytes_fail_in_one_line(host, wasm):
    with pytest.raises(WasinnError) as e:
        host.load_component(wasm + NN_TENSOR_NAME)
    assert "\n" not in str(e.value)


NN_TENSOR_NAME = b"wasi:nn/tensor@0.2.0-rc-2024-10-28"  # trailing: sends them through the rewrite too


def test_mutated_components_load_or_fail_in_one_line(host):
    """Random bytes changed in a component with core modules, data and an import of
    wasi:nn: every outcome is a component or a WasinnError."""
    base = wasmtime.wat2wasm(f"""(component {NN_TENSOR}
      (core module $m (memory 2) (data (i32.const 70000) "data") (func (export "f") (result i32) i32.const 1))
      (core instance $i (instantiate $m))
      (component $c (core module (memory 1 2) (data (i32.const 8) "inner")))
      (func (export "f") (result u32) (canon lift (core func $i "f"))))""")
    rng = random.Random(7)
    for _ in range(60):
        wasm = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            wasm[rng.randrange(8, len(wasm))] = rng.choice([0, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        try:
            host.load_component(bytes(wasm))
        except WasinnError as e:
            assert "\n" not in str(e)


def _data_segments(n: int) -> bytes:
    """A component whose module has `n` one-byte data segments, two bytes apart."""
    segments = " ".join(f'(data (i32.const {2 * i}) "x")' for i in range(n))
    return wasmtime.wat2wasm(f"""(component
      (core module $m (memory 1) {segments} (func (export "f") (result i32) (i32.load8_u (i32.const 0))))
      (core instance $i (instantiate $m))
      (func (export "f") (result u32) (canon lift (core func $i "f"))))""")


def test_more_data_segments_than_wasinn_compiles_are_refused_before_compiling(host):
    """wasmtime compiles a module under epoch interruption in time quadratic in its data
    segments: 99,999 (its own limit) took 29 s for a 1.6 MB component. Past
    MAX_DATA_SEGMENTS (components and core modules alike) the refusal comes first."""
    from wasinn.abi.binary import MAX_DATA_SEGMENTS
    with pytest.raises(WasinnError) as e:
        host.load_component(_data_segments(MAX_DATA_SEGMENTS + 1))
    assert str(e.value) == (f"component has {MAX_DATA_SEGMENTS + 1} data segments; wasinn takes at most "
                            f"{MAX_DATA_SEGMENTS} (wasinn's limit: wasmtime compiles them in quadratic time)")
    segments = " ".join(f'(data (i32.const {2 * i}) "x")' for i in range(MAX_DATA_SEGMENTS + 1))
    with pytest.raises(WasinnError, match=rf"^component has {MAX_DATA_SEGMENTS + 1} data segments"):
        host.load_component(wasmtime.wat2wasm(f'(module (memory 1) {segments} (func (export "_start")))'))
    assert host.instantiate(host.load_component(_data_segments(1000))).call("f") == ord("x")


def _refused_in_a_fresh_process(setup: str, attempt: str) -> tuple[str, int]:
    """The one line a fresh Python process prints when `attempt` (after `setup`) raises
    WasinnError, and that process's peak RSS in MiB (VmHWM)."""
    script = "\n".join([
        "import wasmtime, wasinn", "from wasinn.abi.binary import COMPONENT_PREAMBLE, CORE_PREAMBLE, leb", setup,
        "try:", textwrap.indent(attempt, "    "), "except wasinn.WasinnError as e:", "    print(e)",
        'print(next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")).split()[1])'])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    message, peak_kib = out.stdout.splitlines()
    return message, int(peak_kib) >> 10


_CUSTOM = b"\x00\x01\x00"  # an empty custom section: three bytes, valid anywhere, in any number


def _section(sid: int, payload: bytes) -> bytes:
    return bytes([sid]) + leb(len(payload)) + payload


def _core(custom: int = 0) -> bytes:
    return _section(1, CORE_PREAMBLE + _CUSTOM * custom)


@pytest.mark.parametrize("wasm, message", [
    (COMPONENT_PREAMBLE + _CUSTOM * (MAX_SECTIONS + 1), f"more than {MAX_SECTIONS:,} sections in one component"),
    (CORE_PREAMBLE + _CUSTOM * (MAX_MODULE_SECTIONS + 1),
     f"more than {MAX_MODULE_SECTIONS:,} sections in one core module"),
    (COMPONENT_PREAMBLE + _section(4, COMPONENT_PREAMBLE + _CUSTOM * (MAX_SECTIONS // 2)) * 2,
     f"more than {MAX_SECTIONS:,} sections in its components together"),
    (COMPONENT_PREAMBLE + _core(MAX_MODULE_SECTIONS) * (MAX_ALL_MODULE_SECTIONS // MAX_MODULE_SECTIONS + 1),
     f"more than {MAX_ALL_MODULE_SECTIONS:,} sections in its core modules together"),
    (COMPONENT_PREAMBLE + _section(4, COMPONENT_PREAMBLE) * (MAX_BINARIES + 1),
     f"more than {MAX_BINARIES:,} components nested in it"),
    (COMPONENT_PREAMBLE + _core() * (MAX_BINARIES + 1), f"more than {MAX_BINARIES:,} core modules in it"),
], ids=["component", "core-module", "components-together", "core-modules-together", "components", "core-modules"])
def test_more_sections_or_binaries_than_the_compile_step_walks_are_refused_in_one_line(host, wasm, message):
    """Every section is walked in Python before the compiler validates anything: a
    valid 15 MB component of 5 million empty custom sections took 116 s and 1.3 GB to
    load. Past the limits (sections per binary, and of a .wasm's components or core
    modules together; nested components, core modules) the refusal comes first."""
    with pytest.raises(WasinnError) as e:
        host.load_component(wasm)
    assert message in str(e.value) and "(wasinn's limit" in str(e.value) and "\n" not in str(e.value)


def test_sections_up_to_the_limit_load():
    host = wasinn.Host(cache_dir=False)
    modules = MAX_ALL_MODULE_SECTIONS // MAX_MODULE_SECTIONS
    host.load_component(COMPONENT_PREAMBLE + _CUSTOM * (MAX_SECTIONS - modules) + _core(MAX_MODULE_SECTIONS) * modules)
    host.load_component(CORE_PREAMBLE + _CUSTOM * MAX_MODULE_SECTIONS)


def test_a_five_million_section_component_is_refused_in_a_fresh_process_within_its_memory():
    message, peak = _refused_in_a_fresh_process(
        "", 'wasinn.Host(cache_dir=False).load_component(COMPONENT_PREAMBLE + b"\\0\\x01\\0" * 5_000_000)')
    assert message.startswith(f"component is not a program wasinn runs: more than {MAX_SECTIONS:,} sections")
    assert peak < 200, f"peak RSS {peak} MiB (it was 1.3 GB)"


def test_a_module_declaring_millions_of_memories_is_left_to_the_compilers_refusal_in_little_memory():
    """The memory-image reader walked a module's declared memories before wasmtime
    validated it: 5 million (10 MB) made 477 MB of keys over 5 s. Past wasmtime's own
    limit of 100 it stops reading, and the compiler's refusal is the one line."""
    message, peak = _refused_in_a_fresh_process(
        'n = 5_000_000\ncore = CORE_PREAMBLE + b"\\x05" + leb(len(leb(n)) + 2 * n) + leb(n) + b"\\x00\\x01" * n',
        'wasinn.Host(cache_dir=False).load_component(COMPONENT_PREAMBLE + b"\\x01" + leb(len(core)) + core)')
    assert message.startswith("component is not a valid WebAssembly component: memories count exceeds limit of 100")
    assert peak < 200, f"peak RSS {peak} MiB (it was 477 MB)"


@pytest.mark.parametrize("nested", [False, True])
def test_more_type_definitions_than_toolchains_write_are_refused_before_wasmtime_validates_them(host, nested):
    """wasmtime holds up to ~160 times a component's type definitions while it validates
    them: a valid 4 MB component of a million one-case `flags` types took it to 658 MB.
    Past MAX_TYPE_BYTES (its components' together) the refusal comes first; up to it
    (~65,000 such types), the component loads."""
    def types(n: int) -> bytes:
        body = leb(n) + b"\x6e\x01\x01a" * n  # (type (flags "a"))
        return _section(7, body)
    over = MAX_TYPE_BYTES // 4  # with its count, a section a few bytes past the limit
    wasm = COMPONENT_PREAMBLE + (_section(4, COMPONENT_PREAMBLE + types(over)) if nested else types(over))
    with pytest.raises(WasinnError) as e:
        host.load_component(wasm)
    assert str(e.value) == (f"component is not a valid WebAssembly component: more than {MAX_TYPE_BYTES >> 10} KiB of "
                            "type definitions in its components (wasinn's limit: wasmtime holds up to ~160 times their "
                            "size while it validates them; toolchains write under 20 KB)")
    host.load_component(COMPONENT_PREAMBLE + types(over - 1))


def test_more_top_level_definitions_than_the_reader_walks_keep_the_standard_lowering(host):
    """8 million empty core instances (16 MB) took 49 s and 1.1 GB in the data path's
    reader before wasmtime refused the 4,097th; past MAX_TOP_LEVEL_ITEMS the reader
    stops at the section's count, the component keeps the standard lowering and
    wasmtime's own limit says why it does not load."""
    n = MAX_TOP_LEVEL_ITEMS + 1
    wasm = COMPONENT_PREAMBLE + _section(0, leb(len(NN_TENSOR_NAME)) + NN_TENSOR_NAME) + _section(
        2, leb(n) + b"\x01\x00" * n)
    with pytest.raises(WasinnError, match=f"more than {MAX_TOP_LEVEL_ITEMS:,} definitions, imports and exports"):
        read_layout(wasm)
    assert rewrite.rewrite(wasm, "guest")[0] is wasm
    with pytest.raises(WasinnError, match="^component is not a valid WebAssembly component: instances count"):
        host.load_component(wasm)


def test_an_instances_exports_count_against_the_top_levels_items(host):
    """One core instance "made of" 5 million exports (a 41 MiB file naming wasi:nn, so
    read for the data path) had the reader hold 771 MiB of them, for 8.8 s, before
    wasmtime's compiler refused it: an instance's exports and arguments count against
    MAX_TOP_LEVEL_ITEMS as the top level's own items do."""
    n = MAX_TOP_LEVEL_ITEMS + 1
    exports = b"".join(leb(len(name)) + name + b"\x00" + leb(0) for name in (b"e%d" % i for i in range(n)))
    wasm = COMPONENT_PREAMBLE + _section(0, leb(len(NN_TENSOR_NAME)) + NN_TENSOR_NAME) + _section(
        2, leb(1) + b"\x01" + leb(n) + exports)
    with pytest.raises(WasinnError, match=f"more than {MAX_TOP_LEVEL_ITEMS:,} definitions, imports and exports"):
        read_layout(wasm)
    assert rewrite.rewrite(wasm, "guest")[0] is wasm


def _functions(n: int) -> bytes:
    """A core module of `n` empty functions."""
    return (CORE_PREAMBLE + _section(1, b"\x01\x60\x00\x00") + _section(3, leb(n) + b"\x00" * n)
            + _section(10, leb(n) + b"\x02\x00\x0b" * n))


def _elements(n: int) -> bytes:
    """A core module of one function and one passive element segment of `n` references to it."""
    return (CORE_PREAMBLE + _section(1, b"\x01\x60\x00\x00") + _section(3, b"\x01\x00")
            + _section(9, b"\x01\x01\x00" + leb(n) + b"\x00" * n) + _section(10, b"\x01\x02\x00\x0b"))


@pytest.mark.parametrize("in_component", [False, True], ids=["core-module", "component"])
def test_more_functions_or_table_elements_than_wasinn_compiles_are_refused_first(host, in_component):
    """wasmtime holds ~5 KB of each function while it compiles (a million empty ones,
    4 MB: 25 s and 5.3 GB) and up to ~2 KB of each byte of table elements (one passive
    segment of 5 million, 5 MB: 122 s and 11 GB). Past MAX_FUNCTIONS and
    MAX_ELEMENT_BYTES the refusal comes first; at them the module passes the check."""
    def wrap(module: bytes) -> bytes:
        return COMPONENT_PREAMBLE + _section(1, module) if in_component else module
    with pytest.raises(WasinnError) as e:
        host.load_component(wrap(_functions(binary.MAX_FUNCTIONS + 1)))
    assert str(e.value) == (f"component has {binary.MAX_FUNCTIONS + 1} functions; wasinn takes at most "
                            f"{binary.MAX_FUNCTIONS} (wasinn's limit: wasmtime's compiler holds ~5 KB of each)")
    binary.check_modules(wrap(_functions(binary.MAX_FUNCTIONS)), "component")
    over = _elements(binary.MAX_ELEMENT_BYTES)  # its segment's header and count put it a few bytes past
    with pytest.raises(WasinnError, match=r"^component has \d+ bytes of table elements; wasinn takes at most "
                                          rf"{binary.MAX_ELEMENT_BYTES} \(wasinn's limit"):
        host.load_component(wrap(over))
    binary.check_modules(wrap(_elements(binary.MAX_ELEMENT_BYTES - 8)), "component")
    host.load_component(wrap(_elements(1000)))


def test_five_million_table_elements_are_refused_in_a_fresh_process_within_its_memory(tmp_path):
    wasm = tmp_path / "elements.wasm"
    wasm.write_bytes(_elements(5_000_000))
    message, peak = _refused_in_a_fresh_process("", f"wasinn.Host(cache_dir=False).load_component({str(wasm)!r})")
    assert message.startswith("elements.wasm has 5000007 bytes of table elements; wasinn takes at most"), message
    assert peak < 200, f"peak RSS {peak} MiB (it was 11 GB)"



def _blocks(n: int) -> bytes:
    """A core module of one function of `n` empty blocks: 3 bytes each, ~1 KB of
    Cranelift's memory each (500,000: 1.5 MB, 483 MB; 2.5 million: 7.5 MB, 2.1 GB)."""
    body = b"\x00" + b"\x02\x40\x0b" * n + b"\x0b"
    return (CORE_PREAMBLE + _section(1, b"\x01\x60\x00\x00") + _section(3, b"\x01\x00")
            + _section(10, b"\x01" + leb(len(body)) + body))


def _locals(functions: int, each: int) -> bytes:
    """A core module of `functions` empty functions declaring `each` locals: 8 bytes a
    function, and Cranelift's time grows with the locals (1,000 of 50,000: 2.5 s)."""
    body = leb(1) + leb(each) + b"\x7f\x0b"
    return (CORE_PREAMBLE + _section(1, b"\x01\x60\x00\x00") + _section(3, leb(functions) + b"\x00" * functions)
            + _section(10, leb(functions) + (leb(len(body)) + body) * functions))


@pytest.mark.parametrize("in_component", [False, True], ids=["core-module", "component"])
def test_a_compile_past_max_compile_memory_is_refused_and_the_host_goes_on(in_component):
    """wasmtime compiles in a confined helper process (wasinn/compiler.py) capped at
    max-compile-memory: one function of 500,000 empty blocks (1.5 MB; 483 MB to compile)
    under a 256 MiB cap is refused in one line, and the next compile, in a fresh helper,
    runs."""
    host = wasinn.Host(cache_dir=False, limits=Limits(max_compile_memory=256 << 20))
    wasm = _blocks(500_000)
    with pytest.raises(WasinnError) as e:
        host.load_component(COMPONENT_PREAMBLE + _section(1, wasm) if in_component else wasm)
    assert str(e.value) == ("compiling component needs more memory than wasmtime's compiler may take; the limit is "
                            "256 MiB (max-compile-memory, --max-compile-memory)")
    assert host.instantiate(host.load_component(_data_segments(3))).call("f") == ord("x")


def test_the_compile_of_a_function_of_millions_of_blocks_is_refused_in_a_fresh_process_within_its_memory(tmp_path):
    """At the default cap (2 GiB), 2.5 million empty blocks (7.5 MB) had taken the host
    to 2.1 GB; the helper takes that, the host's own peak stays that of a bare Host."""
    wasm = tmp_path / "blocks.wasm"
    wasm.write_bytes(_blocks(2_500_000))
    message, peak = _refused_in_a_fresh_process("", f"wasinn.Host(cache_dir=False).load_component({str(wasm)!r})")
    assert message == ("compiling blocks.wasm needs more memory than wasmtime's compiler may take; the limit is "
                       "2048 MiB (max-compile-memory, --max-compile-memory)"), message
    assert peak < 200, f"peak RSS {peak} MiB (it was 2.1 GB)"


def test_a_compile_past_compile_timeout_is_ended_at_it():
    """The helper is killed at compile-timeout: 1,000 functions of 50,000 locals (8 KB,
    2.5 s to compile) under 0.3 s come back in one line well within a second of it."""
    hurried = wasinn.Host(cache_dir=False, limits=Limits(compile_timeout=0.3))
    start = time.monotonic()
    with pytest.raises(WasinnError) as e:
        hurried.load_component(_locals(1000, 50_000))
    assert time.monotonic() - start < 1.3
    assert str(e.value) == ("compiling component took longer than 0.3 s; the limit is 0.3 s "
                            "(compile-timeout, --compile-timeout)")
    assert hurried.instantiate(hurried.load_component(_data_segments(3))).call("f") == ord("x")


def test_a_compile_helper_that_ended_while_idle_is_replaced(host):
    """A helper is kept for the next compile; one that has ended since (killed, or of
    its own accord after _IDLE_SECONDS) is replaced, not reported."""
    host.load_component(_data_segments(1))
    kept = compiler._kept
    kept.kill()
    kept.wait()
    assert host.instantiate(host.load_component(_data_segments(2))).call("f") == ord("x")
    assert compiler._kept not in (None, kept)


def test_compiles_from_threads_take_turns_and_outlive_the_thread_that_started_the_helper(host):
    """One compile at a time in a process (so max-compile-memory bounds them together),
    from any thread; the kept helper serves the next compile after the thread that
    started it has ended (a parent-death signal would have come with that thread)."""
    import threading
    results = []

    def load(n: int) -> None:
        results.append(host.instantiate(host.load_component(_data_segments(n))).call("f"))
    threads = [threading.Thread(target=load, args=(n,)) for n in range(4, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [ord("x")] * 4
    kept = compiler._kept
    assert kept is not None and kept.poll() is None
    load(8)
    assert compiler._kept is kept  # the same helper, though its thread has ended

def _pairs(depth: int) -> str:
    """A type of `depth` nested pairs, each `tuple<t, t>` of the one before: a few bytes
    a level, 2^depth leaves written out."""
    types = ["(type $t0 (tuple u8 u8))"] + [f"(type $t{i} (tuple $t{i - 1} $t{i - 1}))" for i in range(1, depth)]
    return " ".join(types) + f" (type $pairs (list $t{depth - 1}))"


_LIFTED = """(core module $m (memory (export "mem") 1) (func (export "f") (param i32 i32) (result i32) (i32.const 7))
               (func (export "g") (param i32)) (func (export "h") (result i32) (i32.const 64))
               (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 64)))
             (core instance $i (instantiate $m))"""
_OPTIONS = '(memory (core memory $i "mem")) (realloc (core func $i "realloc"))'


def test_an_export_whose_types_written_out_pass_the_limit_is_refused_before_anything_is_made_of_them():
    """A 349-byte component whose export takes a list of 18 nested pairs (262,144 leaves
    written out; wasmparser allows a million parts) had `wasinn run --invoke` make 794 MB
    of converters over 14 s before the call. In a fresh process: refused in one line at
    the call, and the peak RSS stays near a bare Host's (~50 MiB)."""
    wat = f"""(component {_pairs(18)} {_LIFTED}
      (func (export "f") (param "x" $pairs) (result u32) (canon lift (core func $i "f") {_OPTIONS})))"""
    message, peak = _refused_in_a_fresh_process(
        "host = wasinn.Host(cache_dir=False)",
        f'with host.instantiate(host.load_component(wasmtime.wat2wasm({wat!r}))) as inst:\n    inst.call("f", [])')
    assert message == (f"export 'f' has types of more than {MAX_TYPE_PARTS} parts written out (fields, cases, "
                       "elements); wasinn takes at most that many (wasinn's limit: it makes a converter of each)")
    assert peak < 200, f"peak RSS {peak} MiB"


@pytest.mark.parametrize("fields", [(MAX_TYPE_PARTS - 2) // 2, (MAX_TYPE_PARTS - 2) // 2 + 1])
def test_types_up_to_the_limit_are_called(host, fields):
    """The limit's count: the parameter, its record, each field's name and each field's
    type. A record of 2,047 fields (4,096 parts) is called; one more field is refused."""
    record = " ".join(f'(field "f{i}" u8)' for i in range(fields))
    wasm = wasmtime.wat2wasm(f"""(component (type $r (record {record})) (export $e "r" (type $r)) {_LIFTED}
      (func (export "f") (param "x" $e) (canon lift (core func $i "g") {_OPTIONS})))""")
    with host.instantiate(host.load_component(wasm)) as inst:
        value = {f"f{i}": i % 256 for i in range(fields)}
        if 2 * fields + 2 <= MAX_TYPE_PARTS:
            assert inst.call("f", value) is None
        else:
            with pytest.raises(WasinnError, match=f"more than {MAX_TYPE_PARTS} parts"):
                inst.call("f", value)


def test_an_operator_whose_process_types_pass_the_limit_is_refused_when_it_opens(host):
    """Opening an operator compares its `process` with the data path's span export of it
    (`Operator._span_export`), which walked the result's type written out: a result of 17
    nested pairs held `Operator.open` (a `wasinn serve` worker's start) 9.9 s and 264 MB
    before any call. Now refused in one line at open."""
    from wasinn.pipeline.operator import Operator
    wasm = wasmtime.wat2wasm(f"""(component {_pairs(17)} {_LIFTED}
      (func $p (result $pairs) (canon lift (core func $i "h") {_OPTIONS}))
      (instance $map (export "process" (func $p)))
      (export "wasm-graph:processor/map@1.1.0" (instance $map))
      (export "wasinn-spans-map-process" (func $p)))""")
    with pytest.raises(WasinnError) as e:
        Operator.open(host, host.load_component(wasm), kind="map")
    assert str(e.value) == (f"wasm-graph:processor/map@1.1.0#process has types of more than {MAX_TYPE_PARTS} parts "
                            "written out (fields, cases, elements); wasinn takes at most that many (wasinn's limit: "
                            "it makes a converter of each)")


@pytest.mark.parametrize("imported", ["function", "instance"])
def test_a_stand_in_for_an_unknown_import_is_held_to_the_limit_too(imported):
    """Under `-W unknown-imports-trap=y` an import nothing defines gets a stand-in that
    traps, after lifting its arguments: a guest's call of one taking 18 nested pairs took
    28 s and 518 MB. Such an import is now refused when the instance is made; within the
    limit, its call traps."""
    def component(depth: int) -> bytes:
        if imported == "function":
            declared = '(import "foo:bar/baz@1.0.0" (func $f (param "x" $pairs)))'
        else:
            declared = ('(import "foo:bar/baz@1.0.0" (instance $ib (export "f" (func (param "x" $pairs))) '
                        '(export "g" (func)))) (alias export $ib "f" (func $f))')
        return wasmtime.wat2wasm(f"""(component {_pairs(depth)} {declared}
          (core module $mem (memory (export "mem") 1)) (core instance $mi (instantiate $mem))
          (core func $fl (canon lower (func $f) (memory (core memory $mi "mem"))))
          (core module $m (import "" "f" (func $f (param i32 i32)))
            (func (export "run") (call $f (i32.const 0) (i32.const 0))))
          (core instance $i (instantiate $m (with "" (instance (export "f" (func $fl))))))
          (func (export "run") (canon lift (core func $i "run"))))""")
    host = wasinn.Host(cache_dir=False, unknown_imports="trap")
    name = "foo:bar/baz@1.0.0" + ("#f" if imported == "instance" else "")
    with pytest.raises(WasinnError, match=re.escape(f"its import {name} has types of more than {MAX_TYPE_PARTS} "
                                                     "parts written out")):
        with host.instantiate(host.load_component(component(18))) as inst:
            inst.call("run")  # (an instance is made at its first call)
    with host.instantiate(host.load_component(component(4))) as inst:
        with pytest.raises(GuestTrap, match=re.escape(f"{name} is an import wasinn does not define")):
            inst.call("run")


@pytest.mark.parametrize("signature, kind", [('(param "x" (future u8))', "future"),
                                             ('(result (stream u8))', "stream")])
def test_an_export_of_async_values_is_refused_in_one_line(tmp_path, signature, kind):
    """wasmtime-py converts no future or stream either way: `wasinn run
    --invoke` of an export taking a future printed NotImplementedError's traceback. Now the
    export is refused in one line, from the library and from the command line; the
    component's other exports run."""
    core = ("(param i32)" if "param" in signature else "(result i32) (i32.const 0)")
    wasm = wasmtime.wat2wasm(f"""(component
      (core module $m (func (export "f") {core}) (func (export "g") (result i32) (i32.const 7)))
      (core instance $i (instantiate $m))
      (func (export "f") {signature} (canon lift (core func $i "f")))
      (func (export "g") (result u32) (canon lift (core func $i "g"))))""")
    message = (f"export 'f' takes or returns a {kind} (component-model async), which wasinn cannot pass or read "
               "(wasmtime-py converts none)")
    host = wasinn.Host(cache_dir=False)
    with host.instantiate(host.load_component(wasm)) as inst:
        with pytest.raises(WasinnError) as e:
            inst.call("f", None)
        assert str(e.value) == message
        assert inst.call("g") == 7
    (tmp_path / "async.wasm").write_bytes(wasm)
    done = subprocess.run([sys.executable, "-m", "wasinn", "run", "--cache-dir", str(tmp_path), "--invoke", "f(none)",
                           str(tmp_path / "async.wasm")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == f"wasinn: error: {message}", done.stderr
    assert "Traceback" not in done.stderr


def test_a_compile_bomb_loaded_by_two_processes_at_once_is_refused_to_both(tmp_path):
    """Two processes sharing a cache load the same compile bomb at once: the one that
    waited on the other's compile (which failed, and wrote no entry) compiles it itself
    and is refused the same way; neither hangs, nothing is cached, the next compile into
    that cache runs."""
    (tmp_path / "blocks.wasm").write_bytes(_blocks(500_000))
    (tmp_path / "ok.wasm").write_bytes(_data_segments(3))
    command = [sys.executable, "-m", "wasinn", "compile", "--cache-dir", str(tmp_path / "cache"),
               "--max-compile-memory", "256MiB"]
    both = [subprocess.Popen([*command, "blocks.wasm"], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in both:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err
        assert err.strip().splitlines()[-1] == (
            "wasinn: error: compiling blocks.wasm needs more memory than wasmtime's compiler may take; the limit "
            "is 256 MiB (max-compile-memory, --max-compile-memory)"), err
        assert "Traceback" not in err
    assert not list((tmp_path / "cache" / "compiled").glob("*.cwasm"))
    after = subprocess.run([*command, "ok.wasm"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert after.returncode == 0 and "compiled in" in after.stdout, after.stderr

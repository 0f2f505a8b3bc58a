"""A component in WAT that compiles in milliseconds, for tests of what happens around a
compile (the cache, the CLI's words about it) rather than of a guest: an 18 MB
componentize-py guest takes 5-12 s a compile on the suite's machines."""
from __future__ import annotations

import wasmtime

# what its export returns: the first byte of its data segment
FIRST_BYTE = ord("k")


def tiny_component(export: str = "first") -> bytes:
    """A component exporting `export`, a function that reads its memory's data segment
    (so that its compiled entry has a memory image, as a real guest's has)."""
    return wasmtime.wat2wasm(f"""
    (component
      (core module $m
        (memory (export "memory") 1)
        (data (i32.const 64) "kept in the entry's memory image")
        (func (export "f") (result i32) (i32.load8_u (i32.const 64))))
      (core instance $i (instantiate $m))
      (func (export "{export}") (result u32) (canon lift (core func $i "f"))))""")

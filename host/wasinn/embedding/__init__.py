"""The seam between wasinn and wasmtime-py: the only package that imports
`wasmtime._*` or `wasmtime.component._*`, reads private members of wasmtime-py's
objects, or calls libwasmtime's C API through ctypes. The rest of wasinn calls the
small named operations here:

    patches.py   wasmtime-py 50's component-value and host-call paths, made fast (installed once)
    calls.py     calling an export with its types looked up once (components, core modules)
    lowering.py  an export's arguments written into one buffer, as the C API reads them
    lifting.py   an export's result and a host function's arguments read out of the C API's values
    layout.py    the C API's component values: sizes, offsets, kinds
    stores.py    a store's key and its C context; a deadline set from inside a host call
    memory.py    the C API's host memory creator; a core module's exported memory in place
    types.py     what a component type is (`is_bytes`, `is_tagged`)
    records.py   what wasinn keeps per compiled component
    errors.py    what a wasmtime error's text says (its cause, the limit it names)

wasmtime is pinned to the exact version these rely on; tests/embedding/test_embedding.py checks
every name reached here and fingerprints every wasmtime-py function copied or replaced,
so an upgrade fails there, naming what to re-check.
"""

"""The host bindings are generated from wit/ and nothing else spells WIT names."""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_bindings_match_wit():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_bindings.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generated_adapter_matches_wit():
    """host/wasinn/abi/adapter.wat, the text the standard data path adds to components."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_adapter.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_host_code_has_no_hand_typed_wit_names():
    # interface or world paths, canonical function names, package versions
    pattern = re.compile(r"\b(wasi|wasinn|wasm-graph):[a-z-]+/[a-z-]+|\[(method|constructor|static)\]|@\d+\.\d+\.\d+")
    offenders = []
    for f in (ROOT / "host" / "wasinn").rglob("*.py"):
        if f.name == "_bindings.py":
            continue
        for n, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and not code.strip().startswith(('"', "'")):
                offenders.append(f"{f.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_generator_reads_every_wasi_nn_function():
    sys.path.insert(0, str(ROOT / "scripts"))
    import wit
    pkgs = wit.load(ROOT / "wit")
    nn = pkgs["wasi:nn@0.2.0-rc-2024-10-28"]
    funcs = {f"{i.name}.{td.name}.{f.name}" for i in nn.interfaces.values()
             for td in i.types.values() for f in td.funcs}
    funcs |= {f"{i.name}.{f.name}" for i in nn.interfaces.values() for f in i.funcs}
    assert funcs == {
        "tensor.tensor.constructor", "tensor.tensor.dimensions", "tensor.tensor.ty", "tensor.tensor.data",
        "graph.graph.init-execution-context", "graph.load", "graph.load-by-name",
        "inference.graph-execution-context.compute", "errors.error.code", "errors.error.data",
    }

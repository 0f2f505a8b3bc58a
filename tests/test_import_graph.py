"""The package's import graph: no cycles, and no module importing a layer above its own.

The graph is read from the source with `ast` (nothing is imported): every `import` and
`from ... import` of a wasinn module counts, at module level or inside a function (a
function-level import is still a dependency, only a later one), except those under
`if TYPE_CHECKING:` (annotations only; they never run). `from . import x` counts as an
import of the submodule `x` when there is one, else of the package's `__init__`; a
submodule importing its own package's `__init__` counts like any other import.

The layers, top first, follow shared/DESIGN.md. A module may import its own layer and
the layers below it; within a layer the only rule is no cycle.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "host" / "wasinn"

# Each layer: the module names (dotted, below `wasinn`) or package prefixes ("pkg/")
# that belong to it, and why they stand there.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # argument parsing over the library; `__main__` runs the CLI.
    ("cli", ("cli/", "__main__")),
    # What users run. `testing` (the pytest plugin and fuzzers) drives Host like an app;
    # `build` makes components from Python (it runs a runtime to check them); `modelprep`
    # reads and rewrites models; `apps` are the example applications; `pipeline` is the
    # graph engine.
    ("apps", ("apps/", "pipeline/", "testing/", "modelprep/", "build/")),
    # Host and Instance, and core modules beside components. `compile_cache` keeps the
    # compiled components of runtime.py (it compiles through abi/adapter and abi/images);
    # `compiler` runs wasmtime's compile in a confined helper (it confines itself as
    # backends/confine.py does).
    ("runtime", ("runtime", "modules", "compile_cache", "compiler")),
    # How guests reach wasi:nn: component glue, WITX glue, the adapter, guest memory.
    ("abi", ("abi/",)),
    # The wasi:nn semantics once: tables, matching, checks, errors.
    ("nn", ("nn",)),
    # Named graphs (load-by-name).
    ("registry", ("registry",)),
    # One module per backend behind one protocol.
    ("backends", ("backends/",)),
    # The only place touching wasmtime-py privates and its C API.
    ("embedding", ("embedding/",)),
    # Generated bindings and small leaf modules every layer uses: tensors, limits,
    # errors, files, digests, deadlines (the epoch ticker and deadline types), copies
    # (guest-sized bytes in slices held to a deadline), collector (the cyclic collector
    # paused while a call's arguments are made), versions, resources (shipped
    # files), lazy (deferred heavy imports), forkserver (the backend workers' fork server
    # as a process, which the facade starts before wasmtime's import). `__init__` is
    # here: it re-exports names (lazily) and must itself import nothing above.
    ("basics", ("_bindings", "_enums", "tensors", "limits", "errors", "files", "digests", "deadlines",
                "copies", "collector", "versions", "resources", "lazy", "forkserver", "__init__")),
]


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = list(rel.parts)
    return "/".join(parts)


def _layer_of(module: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        for m in members:
            if (m.endswith("/") and module.startswith(m)) or module == m:
                return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST):
    """Every node below `node`, skipping the bodies of `if TYPE_CHECKING:` (their
    `else:` branches run, and count)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for sub in child.orelse:
                yield sub
                yield from _walk(sub)
            continue
        yield child
        yield from _walk(child)


def _resolve(name: str, modules: dict[str, pathlib.Path]) -> str | None:
    """The module a dotted name below `wasinn` is ("a.b" -> "a/b" or "a/b/__init__")."""
    path = name.replace(".", "/") if name else ""
    if path in modules:
        return path
    init = f"{path}/__init__" if path else "__init__"
    return init if init in modules else None


def _imports(module: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    package = module.split("/")[:-1]  # the package this module is in (an __init__'s is its own)
    out = set()
    for node in _walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name[len("wasinn."):] if a.name != "wasinn" else "" for a in node.names
                       if a.name == "wasinn" or a.name.startswith("wasinn.")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1] if node.level > 1 else package
                if node.level - 1 > len(package):
                    continue
                base_name = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "wasinn" or node.module.startswith("wasinn.")):
                base_name = node.module[len("wasinn."):] if node.module != "wasinn" else ""
            else:
                continue
            for alias in node.names:  # `from pkg import sub` imports the submodule
                sub = f"{base_name}.{alias.name}" if base_name else alias.name
                targets.append(sub if _resolve(sub, modules) is not None else base_name)
        for t in targets:
            resolved = _resolve(t, modules)
            if resolved is not None and resolved != module:
                out.add(resolved)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    scc = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        scc.append(m)
                        if m == node:
                            break
                    if len(scc) > 1:
                        out.append(sorted(scc))
    return out


def test_reader_sees_known_edges():
    """The reader itself: edges the package is known to have are found (a reader that
    found nothing would pass every other test here)."""
    graph = _graph()
    assert "nn" in graph["abi/witx"]
    assert "errors" in graph["nn"]
    assert "runtime" in graph["cli/__init__"]


def test_every_module_has_a_layer():
    for module in _modules():
        _layer_of(module)


def test_no_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_nothing_imports_upward():
    graph = _graph()
    upward = [f"{m} ({LAYERS[_layer_of(m)][0]}) imports {t} ({LAYERS[_layer_of(t)][0]})"
              for m, targets in sorted(graph.items()) for t in sorted(targets)
              if _layer_of(t) < _layer_of(m)]
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("source, expected", [
    ("from . import b\n", {"p/b"}),
    ("from .b import x\n", {"p/b"}),
    ("from .. import errors\n", {"errors"}),
    ("from . import x\n", {"p/__init__"}),  # a name of the package, not a submodule
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import x\n", set()),
    ("if TYPE_CHECKING:\n    pass\nelse:\n    from .b import x\n", {"p/b"}),
    ("def f():\n    from ..errors import E\n", {"errors"}),
    ("import wasinn.p.b\n", {"p/b"}),
])
def test_reader_cases(tmp_path, source, expected):
    modules = {"p/__init__": tmp_path / "i.py", "p/a": tmp_path / "a.py", "p/b": tmp_path / "b.py",
               "errors": tmp_path / "e.py", "__init__": tmp_path / "top.py"}
    modules["p/a"].write_text(source)
    assert _imports("p/a", modules["p/a"], modules) == expected

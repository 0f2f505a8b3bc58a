"""The peers' command lines, as their docs write them, with `wasinn` in place of the binary:
wasmtime's (`wasmtime app.wasm`, `--dir HOST::GUEST`, `-W KEY=VALUE`), WasmEdge's
(`--dir GUEST:HOST[:readonly]`, `--nn-preload`, in legacy.py) and WAMR's (`--dir=`,
`--map-dir=GUEST::HOST`, `--native-lib=`). README's table maps each flag."""
from __future__ import annotations

import argparse
import os
import sys

from ..errors import BadValue

# wasmtime's -W keys that are wasinn limits, and the limit each sets.
W_LIMITS = {"max-memory-size": "memory", "fuel": "fuel", "timeout": "deadline",
            "max-table-elements": "max_table_elements"}
W_SWITCHES = ("unknown-imports-trap", "unknown-imports-default")
_YES, _NO = ("", "y", "yes", "true"), ("n", "no", "false")


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-W", dest="wasm", action="append", default=[], metavar="KEY=VALUE",
                   help="wasmtime's wasm options: unknown-imports-trap=y (an import nothing here defines "
                        "traps when called), unknown-imports-default=y (core modules: it returns zeros), and "
                        + ", ".join(f"{k} (--{v.replace('_', '-')})" for k, v in W_LIMITS.items()) + " (repeatable)")
    p.add_argument("--map-dir", action="append", default=[], metavar="GUEST::HOST",
                   help="WAMR's spelling of a preopen: host directory HOST at GUEST (repeatable)")
    p.add_argument("--native-lib", action="append", default=[], metavar="LIB",
                   help="WAMR's wasi-nn backend library: accepted and ignored (wasinn serves wasi-nn itself)")


def apply_wasm_options(args) -> str | None:
    """Folds -W's limits into the limit flags (a flag given as well wins) and returns
    the unknown-imports mode: None, "trap" or "default"."""
    mode = None
    for opt in args.wasm:
        key, _, value = opt.partition("=")
        if key in W_SWITCHES:
            if value.lower() not in _YES + _NO:
                raise BadValue(f"-W {opt}: {key} takes y or n")
            if value.lower() in _YES:
                if mode is not None:
                    raise BadValue("-W unknown-imports-trap and unknown-imports-default exclude each other")
                mode = key.rpartition("-")[2]
        elif key in W_LIMITS and value:
            dest = f"limit_{W_LIMITS[key]}"
            if getattr(args, dest, None) is None:
                setattr(args, dest, value)
        else:
            raise BadValue(f"-W {opt}: wasinn understands -W " + ", ".join(f"{k}=y" for k in W_SWITCHES)
                           + ", " + ", ".join(f"{k}=VALUE" for k in W_LIMITS))
    return mode


def dirs(args) -> list[tuple[str, str, bool]]:
    """Preopens (host path, guest path, read-only) from --dir in each peer's spelling and
    WAMR's --map-dir: `HOST::GUEST` is wasmtime's, `GUEST:HOST[:readonly]` WasmEdge's,
    a bare `DIR` the same path on both sides."""
    out = []
    for spec in args.dir:
        if "::" in spec:
            host, _, guest = spec.partition("::")
            out.append((host, guest, False))
        elif ":" in spec:
            guest, _, host = spec.partition(":")
            host, read_only = (host[:-len(":readonly")], True) if host.endswith(":readonly") else (host, False)
            out.append((host, guest, read_only))
        else:
            out.append((spec, spec, False))
    for spec in args.map_dir:
        guest, sep, host = spec.partition("::")
        if not sep or not guest or not host:
            raise BadValue(f"--map-dir wants GUEST::HOST (WAMR's order), got {spec!r}")
        out.append((host, guest, False))
    for host, guest, _ in out:
        if not host or not guest:
            raise BadValue(f"--dir: an empty path in {args.dir + args.map_dir}; write HOST::GUEST, GUEST:HOST or DIR")
    return out


def env(specs: list[str], inherit: bool = False) -> dict[str, str]:
    """NAME=VALUE; a bare NAME passes the host's value on, as wasmtime's --env does;
    with `inherit` (wasmtime's -S inherit-env), the whole environment first."""
    out = dict(os.environ) if inherit else {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep:
            value = os.environ.get(name, "")
        out[name] = value
    return out


def note_ignored(args) -> None:
    for lib in args.native_lib:
        print(f"wasinn: note: --native-lib {lib} ignored: wasinn serves wasi-nn itself (see `wasinn doctor` for "
              "its backends)", file=sys.stderr)


def as_run(argv: list[str], commands) -> list[str]:
    """`wasinn app.wasm ...` and `wasinn --dir .:. app.wasm ...` (a peer's shape: options,
    then the program) run as `wasinn run ...`. Anything else parses as written, so a
    mistyped command still gets its "did you mean"."""
    if not argv or argv[0] in commands or argv[0] in ("-h", "--help"):
        return argv
    program = next((a for a in argv if not a.startswith("-") and a.endswith(".wasm")), None)
    if program is not None or os.path.isfile(argv[0]):
        return ["run", *argv]
    return argv

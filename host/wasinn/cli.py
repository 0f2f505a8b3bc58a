"""The `wasinn` command line: argument parsing in front of the library."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from . import componentize
from ._bindings import WASINN_GUEST_ML_WORLD
from .errors import GuestTrap, WasinnError
from .runtime import Host, stderr_progress
from .wave import format_value, parse_call


def _host(args) -> Host:
    host = Host(cache_dir=args.cache_dir, ort_threads=args.ort_threads, progress=stderr_progress)
    for spec in args.model:
        host.models.register_spec(spec)
    for opt in args.wasi:
        key, _, value = opt.partition("=")
        if key == "nn-graph":
            host.models.register_graph_dir(value)
        elif key in ("nn", "cli", "inherit-env", "inherit-network") and value in ("", "y", "yes", "true"):
            continue  # wasmtime's switches for what wasinn always provides
        else:
            raise WasinnError(f"-S {opt}: wasinn understands -S nn and -S nn-graph=ENCODING::DIR")
    return host


def _dirs(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        host_path, sep, guest_path = spec.partition("::")
        out.append((host_path, guest_path if sep else host_path))
    return out


def cmd_run(args) -> int:
    host = _host(args)
    env = dict(e.partition("=")[::2] for e in args.env)
    inst = host.instantiate(host.load_component(args.component), args=args.args,
                            dirs=_dirs(args.dir), env=env, program_name=args.component)
    if args.invoke:
        name, values = parse_call(args.invoke)
        print(format_value(inst.call(name, *values)))
        return 0
    return inst.run()


def cmd_build(args) -> int:
    componentize.build(args.app, args.output, world=args.world, fastpath=not args.portable,
                       progress=stderr_progress)
    return 0


def cmd_classify(args) -> int:
    from .classify import ImageClassifier, load_image
    host = Host(cache_dir=args.cache_dir, ort_threads=args.ort_threads, progress=stderr_progress)
    name = None
    if args.model:
        name = host.models.register_spec(args.model).name
    images = [load_image(p) for p in args.images]
    clf = ImageClassifier(host, component=args.component, model=name)
    results = clf.classify(images, top=args.top)
    if args.json:
        print(json.dumps([{"image": path, "predictions": [dataclasses.asdict(p) for p in preds]}
                          for path, preds in zip(args.images, results)], indent=2))
        return 0
    width = max(len(p.label) for preds in results for p in preds)
    for path, preds in zip(args.images, results):
        print(path)
        for rank, p in enumerate(preds, 1):
            print(f"  {rank}. {p.label:<{width}}  {p.score:7.2%}  (class {p.index})")
    return 0


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="register an ONNX model file for load-by-name (repeatable)")
    p.add_argument("-S", dest="wasi", action="append", default=[], metavar="OPT",
                   help="wasmtime-style switches: 'nn', and 'nn-graph=ENCODING::DIR' to register "
                        "DIR/model.onnx under DIR's base name (repeatable)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where compiled components are cached (default: $XDG_CACHE_HOME/wasinn)")
    p.add_argument("--ort-threads", type=int, default=0, metavar="N",
                   help="onnxruntime intra-op threads per model (default: onnxruntime's choice)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="wasinn", description="Run WebAssembly components that do "
                                 "ML inference through wasi:nn, on ONNX Runtime.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a command component, or call one export with --invoke",
                       description="Run a component. Without --invoke it must be a command "
                       "(wasi:cli/run); ARGS become its argv. With --invoke 'fn(1, \"a\")' one export "
                       "is called and its result printed, as `wasmtime run --invoke` does.")
    p.add_argument("component", help="the .wasm component")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the guest")
    p.add_argument("--dir", action="append", default=[], metavar="HOST[::GUEST]",
                   help="give the guest a host directory (repeatable)")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the guest (repeatable)")
    p.add_argument("--invoke", metavar="CALL", help="call an export, e.g. 'load-by-name(\"mobilenet\")'")
    _model_flags(p)
    _common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("build", help="build a Python guest into a component (componentize-py)",
                       description="Build APP.py (with the .py files beside it) into a component "
                       "against wasinn's wit/.")
    p.add_argument("app", help="the guest's entry module (or a directory holding app.py)")
    p.add_argument("-o", "--output", required=True, help="the .wasm to write")
    p.add_argument("--world", default=componentize.DEFAULT_WORLD,
                   help=f"the WIT world to target (default: {componentize.DEFAULT_WORLD}, a command "
                        f"that imports wasi:nn; {WASINN_GUEST_ML_WORLD} for a library component)")
    p.add_argument("--portable", action="store_true",
                   help="leave out wasinn's bulk data path, so any wasi:nn host (e.g. wasmtime) can "
                        "run the component; large models and tensors then hit the standard path's limits")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("classify", help="classify photos with the bundled image classifier",
                       description="Classify photos (PNG, JPEG, ...) with the classifier component "
                       "(guest/classifier) running EfficientNet-Lite0 through wasi:nn. The component is "
                       "built on first use (with the model embedded) and cached.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many classes per image (default 5)")
    p.add_argument("--component", metavar="WASM", help="a classifier component to run instead of the bundled one")
    p.add_argument("--model", metavar="NAME=PATH",
                   help="load this model by name instead of the embedded one; it must take `image` "
                        "uint8 [H,W,3] and give class probabilities first")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(p)
    p.set_defaults(func=cmd_classify)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except GuestTrap as e:
        print(f"wasinn: {e}", file=sys.stderr)
        return 1
    except WasinnError as e:
        print(f"wasinn: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

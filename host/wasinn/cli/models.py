"""The command line for models themselves: `wasinn inspect` and `wasinn model check|optimize`
(parsers added to `wasinn` by cli.py)."""
from __future__ import annotations

from ..backends import parse_choices
from ..modelprep import DEFAULT_BUDGET, DEFAULT_RUNS, DEFAULT_TOLERANCE, QUANT_TYPES
from ..runtime import stderr_progress


def cmd_inspect(args) -> int:
    if args.model.endswith(".wasm") or _is_wasm(args.model):
        return _inspect_program(args)
    from ..abi.introspect import as_json, as_table, describe, open_graph
    description = describe(open_graph(args.model, backends=parse_choices(args.backend)))
    print(_json(as_json(description)) if args.json else as_table(description))
    return 0


def _is_wasm(path: str) -> bool:
    from ..abi.binary import MAGIC
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def _inspect_program(args) -> int:
    from ..abi.nn_versions import inspect
    from ..errors import WasinnError
    try:
        with open(args.model, "rb") as f:
            wasm = f.read()
    except OSError as e:
        raise WasinnError(f"cannot read {args.model}: {e.strerror}") from None
    program = inspect(wasm, args.model)
    print(_json(program.as_json()) if args.json else program.text())
    return 0


def cmd_model_check(args) -> int:
    from ..modelprep.check import check
    report = check(args.model, budget=int(args.budget * 1e6))
    print(_json(report.as_json()) if args.json else report.text())
    return 0 if report.ok else 1


def cmd_model_optimize(args) -> int:
    from ..modelprep.optimize import optimize
    report = optimize(args.model, args.output, quantize=args.quantize, images=args.images,
                      tolerance=args.tolerance, runs=args.runs, progress=stderr_progress)
    print(report.text())
    return 0 if report.ok else 1


def _json(value) -> str:
    import json  # here: every command imports this module (for its parser), few print JSON
    return json.dumps(value, indent=2)


def add_inspect(sub, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text,
                       description="Load MODEL as wasinn serves it to guests and print what the "
                       "wasinn:introspect extension tells a guest: each input's and output's name, "
                       "wasi:nn type and shape (-1 for a dynamic axis), and the backend and target. "
                       "Given a program (FILE.wasm: a component or a core module), print the wasi:nn "
                       "it speaks (a component's version, a core module's WITX module) and whether "
                       "wasinn serves it, then its imports and exports.")
    p.add_argument("model", metavar="MODEL", help="a model file, kserve+http://HOST:PORT/v2/models/NAME, "
                   "or a program FILE.wasm")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--backend", action="append", default=[], metavar="[ENCODING=]BACKEND",
                   help="load it on this backend (as `wasinn run --backend`; repeatable)")
    p.set_defaults(func=cmd_inspect)


def add_model(sub, name: str, help_text: str) -> None:
    model = sub.add_parser(name, help=help_text,
                           description="Model preparation for the edge: export -> optimize -> check.")
    steps = model.add_subparsers(dest="step", required=True)
    p = steps.add_parser("check", help="size, inputs/outputs, opset and operators against onnxruntime",
                         description="Check an ONNX model before it ships: its size against a budget; "
                         "that onnxruntime loads it as wasinn serves it; its inputs and outputs (with "
                         "wasi:nn types) and whether it has a single float32/uint8 input and a single "
                         "output; its opsets; and every operator against onnxruntime's CPU kernels. "
                         "Exits 1 when a check fails.")
    p.add_argument("model", metavar="MODEL", help="the .onnx file")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET / 1e6, metavar="MB",
                   help=f"the size budget in MB (default {DEFAULT_BUDGET / 1e6:g})")
    p.add_argument("--json", action="store_true", help="print JSON instead of a report")
    p.set_defaults(func=cmd_model_check)

    p = steps.add_parser("optimize", help="optimize (and optionally quantize) a model, verified",
                         description="Run onnxruntime's basic graph optimizations offline (and with "
                         "--quantize its dynamic int8 quantization), print size and latency before "
                         "and after, and write OUT only when the outputs still match the original's "
                         "(within --tolerance, and the same top-1 class on every sample photo). "
                         "Exits 1 when they do not.")
    p.add_argument("model", metavar="MODEL", help="the .onnx file")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the optimized .onnx to write")
    p.add_argument("--quantize", nargs="?", const=QUANT_TYPES[0], choices=QUANT_TYPES, metavar="WEIGHTS",
                   help=f"also quantize: weights stored as {' or '.join(QUANT_TYPES)} (default "
                        f"{QUANT_TYPES[0]}, the faster of the two on x86 CPUs)")
    p.add_argument("--images", nargs="+", metavar="IMAGE",
                   help="photos to compare the models on (default: the sample photos, for an image "
                        "classifier; other models get seeded random inputs)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="T",
                   help=f"largest output difference allowed, relative to the largest output value "
                        f"(default {DEFAULT_TOLERANCE:g}; a quantized model is held to top-1 only)")
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, metavar="N",
                   help=f"timed inferences per model (default {DEFAULT_RUNS})")
    p.set_defaults(func=cmd_model_optimize)


"""`wasinn fuzz COMPONENT --export NAME [--roundtrip]` (parser added to `wasinn` by
cli/__init__.py; the work is wasinn.testing.fuzz)."""
from __future__ import annotations

import os
import shlex
import sys

from ..errors import NnError, WasinnError
from .options import common_flags, host_with_models, model_flags

# A call's deadline while fuzzing unless --deadline says otherwise: a guest that hangs
# should cost seconds per example, not the minute `wasinn run` allows.
DEFAULT_DEADLINE = "10s"
# Enough for each planted bug of tests/testing/test_fuzz.py, in seconds for a small component.
DEFAULT_EXAMPLES = 1000


def add_parser(sub, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text,
                       description="Draw every parameter of EXPORT from its WIT types (hypothesis) and call "
                       "it, each example on a fresh instance. Reports traps (the guest's own, a limit, the "
                       "deadline), wasi:nn errors by code and host errors, with counts, and each distinct "
                       "failure as its shrunk counterexample and a one-line reproducer. Exit status: 0 "
                       "nothing failed, 1 something did, 2 the fuzzing could not run. Needs "
                       "'wasinn[testing]'.")
    p.add_argument("component", help="the .wasm component")
    p.add_argument("--export", required=True, metavar="NAME", help="the export to call: func or interface#func")
    p.add_argument("--roundtrip", action="store_true",
                   help="the export returns what it takes (e.g. echo: func(t: tensor) -> tensor): check that "
                        "each value comes back unchanged (type, dims and bytes)")
    p.add_argument("--inputs-for", metavar="MODEL",
                   help="draw the export's tensors as MODEL takes them (its inputs' names, types and shapes, "
                        "dynamic axes drawn): a tensor parameter gets the input of its name, else any input; "
                        "list<tuple<string, tensor>> all inputs. MODEL: a --model name, a model file or URL")
    p.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES, metavar="N",
                   help=f"examples to draw (default {DEFAULT_EXAMPLES}; shrinking a failure adds calls)")
    p.add_argument("--seed", type=int, metavar="S", help="the random seed (default: a new one each run)")
    p.add_argument("--replay", metavar="BLOB", help="run only the example a reproducer line names")
    model_flags(p)
    common_flags(p)
    for action in p._actions:  # the shared limits flags tell run's default deadline
        if action.dest == "limit_deadline":
            action.help = f"time per call, e.g. 30s; 0: none ({DEFAULT_DEADLINE} while fuzzing)"
    p.set_defaults(func=cmd_fuzz)


def cmd_fuzz(args) -> int:
    try:
        from ..testing.fuzz import fuzz
    except ModuleNotFoundError as e:
        print(f"wasinn: error: wasinn fuzz needs the Python package {e.name}: pip install 'wasinn[testing]'",
              file=sys.stderr)
        return 2
    if args.limit_deadline is None:
        args.limit_deadline = DEFAULT_DEADLINE
    try:
        host = host_with_models(args, recycle_memories=True)  # an instance per example
        component = host.load_component(args.component)
        report = fuzz(host, component, args.export, roundtrip=args.roundtrip, examples=args.examples,
                      seed=args.seed, replay=args.replay, model=_model(host, args.inputs_for),
                      progress=_bar if sys.stderr.isatty() else None)
    except WasinnError as e:
        print(f"wasinn: error: {e}", file=sys.stderr)
        return 2
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")  # the progress bar's line
    print(report.summary())
    for finding in report.findings:
        print(finding.line)
        print(f"reproduce: {_reproducer(args, finding.blob or args.replay)}")
    return 0 if report.ok else 1


def _model(host, spec: str | None):
    """--inputs-for's model: one the host serves by that name, else a file or URL."""
    if spec is None:
        return None
    from ..backends.kserve import is_remote  # its HTTP stack only where --inputs-for is given
    if spec in host.models.names():
        try:
            return host.models.graph(spec, host.nn.load_graph, host.nn.load_file)
        except NnError as e:
            raise WasinnError(f"--inputs-for {spec}: cannot load it: {e}") from None
    if not is_remote(spec) and not os.path.isfile(spec):
        raise WasinnError(f"--inputs-for {spec}: no --model of that name and no such model file "
                         f"(registered: {', '.join(host.models.names()) or 'none'})")
    return spec


def _reproducer(args, blob: str | None) -> str:
    argv = ["wasinn", "fuzz", args.component, "--export", args.export]
    argv += ["--roundtrip"] if args.roundtrip else []
    argv += ["--inputs-for", args.inputs_for] if args.inputs_for else []
    for spec in args.model:
        argv += ["--model", spec]
    for opt in args.wasi:
        argv += ["-S", opt]
    if args.config:
        argv += ["--config", args.config]
    argv += [a for name, value in vars(args).items() if name.startswith("limit_") and value is not None
             and value != DEFAULT_DEADLINE for a in (f"--{name[6:].replace('_', '-')}", str(value))]
    argv += ["--replay", blob] if blob else (["--seed", str(args.seed)] if args.seed is not None else [])
    return shlex.join(argv)


def _bar(calls: int, budget: int) -> None:
    """A progress bar on stderr (a terminal only); past the budget, hypothesis is shrinking."""
    if calls % 5:
        return
    done = min(calls, budget) * 30 // max(budget, 1)
    state = f"{calls}/{budget} examples" if calls <= budget else f"shrinking ({calls} calls)"
    sys.stderr.write(f"\r[{'#' * done}{'.' * (30 - done)}] {state}  ")
    sys.stderr.flush()

"""The `wasinn` command line: argument parsing in front of the library."""
from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import os
import re
import sys
import time

# What only some commands use is imported by them (a run's start-up is the imports'):
# build, json, difflib, --invoke's WAVE and value printing.
from . import doctor, fuzz, legacy, models, peers
from ..errors import BadValue, GuestTrap, WasinnError
from ..runtime import stderr_progress
from .options import (common_flags, host_from_args, host_with_models, limit_flags, limits_from_args, model_flags,
                      switched_on)


def cmd_run(args) -> int:
    args.unknown_imports = peers.apply_wasm_options(args)  # -W's limits first: the host takes them
    with _collection_paused():
        host = host_with_models(args)
        legacy.configure(args, host)
        if args.load_by_path:
            host.models.allow_paths(args.load_by_path)
        peers.note_ignored(args)
        dirs, env = peers.dirs(args), peers.env(args.env, inherit=switched_on(args, "inherit-env"))
        _warn_flags_for_the_guest(args)
        # Registered models load while the component compiles (or comes from the cache), so
        # that the guest's load-by-name finds them ready, as wasmtime's -S nn-graph does.
        ready = None if args.lazy_models else host.preload_models()
        component = host.load_component(args.component)
        if ready is not None:
            ready()
    inst = host.instantiate(component, args=args.args, dirs=dirs, env=env, program_name=args.component)
    if args.invoke:
        from wasmtime.component import Variant

        from ..abi.values import value_pieces
        from .wave import parse_call
        name, values = parse_call(args.invoke, lambda name: [p for p, _ in inst.signature(name)[0]])
        result = inst.call(name, *values)
        for piece in value_pieces(result, inst.signature(name)[1]):  # never the whole text at once
            sys.stdout.write(piece)
        sys.stdout.write("\n")
        return 1 if isinstance(result, Variant) and result.tag == "err" else 0
    status = inst.run()
    if status:  # the guest may have said nothing: say what wasinn knows
        err = inst.last_nn_error
        print(f"wasinn: {args.component}: run failed{'' if status == 1 else f' (exit status {status})'}; "
              + (f"its last wasi:nn error was {shown(str(err))}" if err else "no wasi:nn call failed, so the cause "
                 "is the guest's own"), file=sys.stderr)
    return status


@contextlib.contextmanager
def _collection_paused():
    """Start-up allocates tens of thousands of objects (the imports of numpy and the
    backend, on the thread loading the models) and frees next to none: the collections
    they would set off only walk them, ~10 ms of a run's start-up. Paused until the
    models are loaded, and then those objects are frozen (left out of every collection
    from then on): else the first allocation after the pause sets off a collection that
    walks all of them at once (~12 ms, measured, as the guest starts). The guest runs with
    the collector as ever."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.freeze()
            gc.enable()


_OWN_FLAGS = ("--model", "--dir", "--invoke", "--env", "-S", "-W", "--map-dir", "--nn-preload")


def _warn_flags_for_the_guest(args) -> None:
    """Everything after the component goes to the guest, as in wasmtime; wasinn's own
    flags there are likely meant for wasinn (but a guest may take such flags too)."""
    misplaced = [a for a in args.args if a.split("=")[0] in _OWN_FLAGS]
    if misplaced and "--" not in args.argv:
        print(f"wasinn: warning: {' '.join(dict.fromkeys(misplaced))} after {args.component} go to the guest, "
              "as every argument after the component does; put wasinn's flags before the component "
              "(or `--` before the guest's arguments to silence this)", file=sys.stderr)


def cmd_build(args) -> int:
    from .. import build
    build.build(args.app, args.output, world=args.world, fastpath=not args.portable, wit=args.wit,
                       progress=stderr_progress)
    return 0


def cmd_compile(args) -> int:
    host = host_from_args(args)
    if host.cache_dir is None:
        raise WasinnError("wasinn compile needs a cache directory")
    said = []  # progress lines: only a compile, or a wait for another process's, has any
    host.progress = lambda message: (said.append(message), stderr_progress(message))
    for path in args.components:
        said.clear()
        start = time.perf_counter()
        host.load_component(path)
        took = time.perf_counter() - start
        done = (f"compiled in {took:.1f} s and cached" if any(m.startswith("compiling ") for m in said)
                else f"compiled by another process meanwhile, found after {took:.1f} s" if said
                else "already compiled, found")
        print(f"{path}: {done} in {host.cache_dir / 'compiled'}")
    return 0


def cmd_classify(args) -> int:
    import dataclasses
    import json

    from ..apps.classify import ImageClassifier, load_image
    host = host_from_args(args)
    name = None
    if args.model:
        name = host.models.register_spec(args.model).name
    images = [load_image(p) for p in args.images]
    clf = ImageClassifier(host, component=args.component, model=name, embedded=args.embedded)
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


def cmd_serve(args) -> int:
    import os
    import pathlib
    import socket

    from ..runtime import default_cache_dir
    try:
        from ..pipeline import graphdef, load_pipeline
        from ..pipeline.artifacts import ArtifactStore
        from ..pipeline.supervisor import ServeOptions, serve
    except ModuleNotFoundError as e:
        raise WasinnError(f"wasinn serve needs the Python package {e.name}: pip install 'wasinn[serve]'") from None
    cache_dir = pathlib.Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if graphdef.served_kind(args.pipeline) == "pipeline":
        graph_flags = [f for f, v in (("--module", args.module), ("--registry", args.registry),
                                      ("--source", args.source), ("--sink", args.sink), ("--param", args.param),
                                      ("--dead-letter", args.dead_letter), ("--group", args.group),
                                      ("--state-store", args.state_store), ("--state-seed", args.state_seed),
                                      ("--schemas", args.schemas), ("--module-schema", args.module_schema)) if v]
        if graph_flags:
            raise BadValue(f"{', '.join(graph_flags)}: for Azure graph files; a wasinn pipeline file names its "
                           "modules, topics and group itself")
        served = load_pipeline(args.pipeline)
    else:
        flags = graphdef.ServeFlags(
            modules=dict(graphdef.parse_module(m) for m in args.module), registry=args.registry,
            sources=tuple(args.source), sink=args.sink, params=tuple(graphdef.parse_param(p) for p in args.param),
            dead_letter=args.dead_letter, group=args.group, broker=args.broker, state_store=args.state_store,
            schemas=args.schemas, module_schemas=tuple(args.module_schema))
        store = ArtifactStore(cache_dir, progress=stderr_progress)
        served = graphdef.resolve(args.pipeline, flags, fetch=store.fetch)
    options = ServeOptions(
        workers=args.workers, node=args.node or socket.gethostname(),
        # onnxruntime's own choice is every core per session: N workers would fight over them
        ort_threads=args.ort_threads or max(1, (os.cpu_count() or 1) // max(1, args.workers)),
        cache_dir=cache_dir, metrics_host=args.metrics_host, metrics_port=args.metrics_port, log_level=args.log_level,
        drain_timeout=args.drain_timeout, limits=limits_from_args(args))
    return serve(served, broker=args.broker, tls_ca=args.tls_ca, username=args.username,
                 password_file=args.password_file, options=options, state_seed=args.state_seed)


class _Parser(argparse.ArgumentParser):
    """Arguments a subcommand does not take are refused by that subcommand, with its own
    usage and the option a typo likely meant (argparse leaves them to the top-level
    parser, whose usage lists only the subcommands). Subparsers are of this class too."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            import difflib
            options = [a.split("=")[0] for a in extras if a.startswith("-")]
            close = [m for o in options for m in difflib.get_close_matches(o, self._option_string_actions, n=1)]
            self.error(f"unrecognized arguments: {' '.join(extras)}"
                       + (f"; did you mean {' '.join(close)}?" if close else ""))
        return namespace, extras


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """`wasinn`'s parser. With one of COMMANDS, only that command's parser is built (a
    run's start-up need not build the others': ~2 ms of argparse); with anything else the
    others are listed, by name and help, all that `wasinn --help` and an invalid choice
    show of them."""
    ap = _Parser(prog="wasinn", description="Run WebAssembly components that do "
                                 "ML inference through wasi:nn, served by ONNX Runtime, OpenVINO, TFLite or a "
                                 "KServe v2 inference server.",
                 epilog="`wasinn [OPTIONS] FILE.wasm ARGS` is `wasinn run`, as `wasmtime FILE.wasm` is "
                        "`wasmtime run`: the wasmtime, WasmEdge and WAMR command lines of a program's README run "
                        "with wasinn in place of the binary (README: The peers' command lines).")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, (help_text, add) in COMMANDS.items():
        if command in (None, name):
            add(sub, name, help_text)
        elif command not in COMMANDS:
            sub.add_parser(name, help=help_text)
    return ap


def _add_run(sub, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text,
                       description="Run a component. Without --invoke it must be a command "
                       "(wasi:cli/run); ARGS become its argv. With --invoke 'fn(1, \"a\")' one export "
                       "is called and its result printed, as `wasmtime run --invoke` does. A core module "
                       "(a wasm32-wasi program importing wasi_ephemeral_nn, or WAMR's wasi_nn) runs its _start.")
    p.add_argument("component", help="the .wasm component or core module")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the guest")
    p.add_argument("--dir", action="append", default=[], metavar="HOST::GUEST|GUEST:HOST|DIR",
                   help="give the guest a host directory: wasmtime's HOST::GUEST, WasmEdge's "
                        "GUEST:HOST[:readonly], or DIR at the same path (repeatable); one the guest may "
                        "write to may not hold or lie in the compile cache or the external-data directory, nor "
                        "hold a registered model's file that the host reads after the guest starts "
                        "(--lazy-models, --isolate all)")
    p.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="an environment variable for the guest; NAME alone passes this process's value "
                        "(repeatable)")
    p.add_argument("--load-by-path", metavar="DIR",
                   help="WAMR's load_by_name: a name no registered model has is a host file path, read only "
                        "from inside DIR (relative names from DIR); such models count as the guest's own "
                        "(--isolate). Off by default")
    p.add_argument("--lazy-models", action="store_true",
                   help="load registered models (--model, -S nn-graph, --nn-preload) when the guest first asks, "
                        "not at start-up")
    peers.add_flags(p)
    p.add_argument("--invoke", metavar="CALL", help="call an export, e.g. 'load-by-name(\"mobilenet\")'; "
                   "arguments in WAVE, a tensor as tensor(FP32, [2, 2], [1.0, 2.0, 3.0, 4.0]) or tensor(\"x.npy\")")
    model_flags(p)
    legacy.add_flags(p)
    common_flags(p)
    p.set_defaults(func=cmd_run)


def _add_build(sub, name: str, help_text: str) -> None:
    from .. import build
    from .._bindings import WASINN_GUEST_CLASSIFIER, WASINN_GUEST_ML_WORLD
    p = sub.add_parser(name, help=help_text,
                       description="Build APP.py (with the .py files beside it) into a component "
                       "against wasinn's wit/.")
    p.add_argument("app", help="the guest's entry module (or a directory holding app.py)")
    p.add_argument("-o", "--output", required=True, help="the .wasm to write")
    p.add_argument("--world", help=f"the WIT world to target (default: the one world --wit declares, else "
                   f"{build.DEFAULT_WORLD}, a command that imports wasi:nn); a world of your own from --wit "
                   "declares your exports")
    p.add_argument("--wit", metavar="PATH", help="your own WIT (a .wit file or a directory of them) whose "
                   f"worlds --world may name; they may include wasinn's, e.g. `include {WASINN_GUEST_ML_WORLD}@{WASINN_GUEST_CLASSIFIER.rpartition('@')[2]};`")
    p.add_argument("--portable", action="store_true",
                   help="leave out wasinn's bulk shim, so any wasi:nn host (e.g. wasmtime) can run the "
                        "component; on wasinn it is as fast, but each tensor and model the guest passes to "
                        "wasi:nn then leaks its bytes in guest memory (componentize-py 0.25)")
    p.set_defaults(func=cmd_build)


def _add_compile(sub, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text,
                       description="Compile components into the compile cache, so that the first run "
                       "starts in milliseconds. Entries are keyed on each component's content, the "
                       "wasmtime version and wasinn's engine settings; a changed file is never served "
                       "from a stale entry.")
    p.add_argument("components", nargs="+", metavar="WASM")
    common_flags(p, runs=False)
    p.set_defaults(func=cmd_compile)


def _add_classify(sub, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text,
                       description="Classify photos (PNG, JPEG, ...) with the classifier component "
                       "(guest/classifier) running EfficientNet-Lite0 through wasi:nn, the model loaded by "
                       "name (--embedded: built into the component). The component is built on first use "
                       "and cached.")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=int, default=5, metavar="K", help="how many classes per image (default 5)")
    p.add_argument("--component", metavar="WASM", help="a classifier component to run instead of the bundled one")
    p.add_argument("--model", metavar="NAME=PATH|URL",
                   help="load this model (a file, or kserve+http://... on an inference server) by name "
                        "instead of the bundled one; it must take `image` "
                        "uint8 [H,W,3] and give class probabilities first")
    p.add_argument("--embedded", action="store_true",
                   help="use the component with the model built in (graph.load of 18.6 MB from the guest, "
                        "as an atomic deploy would) instead of the bundled model loaded by name")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common_flags(p)
    p.set_defaults(func=cmd_classify)


def _add_serve(sub, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text,
                       description="Subscribe to the pipeline's source topic, run each message (an image) "
                       "through its stages and publish the JSON result to its sink topic; failures go to its "
                       "dead-letter topic. FILE may also be an Azure IoT Operations graph definition (operations, "
                       "connections; give --source and --sink) or a DataflowGraph deployment, whose operators run "
                       "unchanged. Workers share the input through an MQTT 5 shared subscription; "
                       "run more on other machines against the same broker to scale out. Logs are JSON lines "
                       "on stderr. See pipelines/README.md.")
    p.add_argument("pipeline", metavar="FILE", help="a pipeline file (e.g. pipelines/image-classification.yaml), an "
                   "Azure graph definition or a DataflowGraph deployment")
    p.add_argument("--module", action="append", default=[], metavar="REF=PATH",
                   help="graph files: the .wasm of an artifact reference (the full reference, NAME:VERSION or NAME; "
                        "repeatable)")
    p.add_argument("--registry", metavar="DIR|URL", help="graph files: pull the artifacts no --module gives from this "
                   "OCI registry (http:// only on loopback) or OCI image layout directory")
    p.add_argument("--source", action="append", default=[], metavar="TOPIC",
                   help="graph files: a topic the source subscribes to (repeatable; a deployment names its own)")
    p.add_argument("--sink", metavar="TOPIC", help="graph files: the topic the sink publishes to")
    p.add_argument("--param", action="append", default=[], metavar="[NODE.]KEY=VALUE",
                   help="graph files: set a parameter of operation NODE (without NODE: of every operation that "
                        "declares KEY); over the deployment's configuration and the parameter's default")
    p.add_argument("--dead-letter", metavar="TOPIC", help="graph files: where failed messages go "
                   "(default SINK/dead-letter)")
    p.add_argument("--group", metavar="NAME", help="graph files: the shared-subscription group (default: the "
                   "graph's metadata.name)")
    p.add_argument("--state-store", metavar="redis://HOST:PORT/DB", help="graph files: the state store the "
                   "operators and accumulate windows use, shared by every host naming it (default: one embedded "
                   "store shared by this host's workers)")
    p.add_argument("--state-seed", metavar="FILE", help="graph files: keys to set in the state store before the "
                   "workers start (JSON: an object of key to value, or a list of them, as Azure's statestore.json)")
    p.add_argument("--schemas", metavar="FILE", help="graph files: the schemas the schema-registry interface serves "
                   "(JSON: a list of {name, content, version?, namespace?, ...}), and that a deployment's schemaRef "
                   "(aio-sr://NAMESPACE/NAME:VERSION) names; without it, its calls return not-available")
    p.add_argument("--module-schema", action="append", default=[], metavar="FILE",
                   help="graph files: a schema every operator's init receives in module-schemas (named by the "
                        "file's stem; repeatable), as Azure's TK_SCHEMA_CONFIG_PATH gives one")
    p.add_argument("--broker", metavar="HOST:PORT", help="the MQTT broker (default: the pipeline file's; "
                   "its TLS and credentials settings stay)")
    p.add_argument("--tls-ca", metavar="FILE|system", help="connect with TLS, verifying the broker against this "
                   "CA file or the system's store (default: the pipeline file's mqtt.tls.ca)")
    p.add_argument("--username", metavar="NAME", help="the MQTT user name (default: the file's mqtt.username)")
    p.add_argument("--password-file", metavar="FILE", help="a file holding the MQTT password (default: the file's "
                   "mqtt.passwordFile, else $WASINN_MQTT_PASSWORD)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    p.add_argument("--node", metavar="NAME", help="this machine's part of the workers' client ids "
                   "GROUP-NODE-INDEX; unique per machine (default: the host name)")
    p.add_argument("--ort-threads", type=int, default=0, metavar="N",
                   help="onnxruntime intra-op threads per worker (default: cores / workers)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus /metrics and /healthz on this port (0: any free port)")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="ADDR",
                   help="the address /metrics listens on (default 127.0.0.1)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--drain-timeout", type=float, default=30.0, metavar="S",
                   help="on SIGTERM, how long workers may take to finish their messages (default 30)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where built and compiled components are cached (default: $XDG_CACHE_HOME/wasinn)")
    limit_flags(p)
    p.set_defaults(func=cmd_serve)


# Every command: its help (what `wasinn --help` lists) and what adds its parser, in the
# order listed.
COMMANDS = {
    "run": ("run a command component, or call one export with --invoke", _add_run),
    "build": ("build a Python guest into a component (componentize-py)", _add_build),
    "compile": ("compile components ahead of time into the cache", _add_compile),
    "classify": ("classify photos with the bundled image classifier", _add_classify),
    "serve": ("run a data-flow pipeline or Azure data-flow graph (YAML) as an MQTT service", _add_serve),
    "inspect": ("print a model's inputs, outputs and backend, or a program's wasi:nn", models.add_inspect),
    "model": ("check or optimize an ONNX model before deploying it", models.add_model),
    "doctor": ("print versions, the cache and the installed optional parts", doctor.add_parser),
    "fuzz": ("call an export many times with values drawn from its WIT types", fuzz.add_parser),
}


def shown(text: str) -> str:
    """`text` for wasinn's own line on a terminal: control characters as escapes. A
    guest's words reach these lines (a backend's message naming an op in its model: an
    escape sequence there had cleared the screen under wasinn's name)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def main(argv: list[str] | None = None) -> int:
    """The `wasinn` command on `argv`; None: this process's own arguments, as the `wasinn`
    script and `python -m wasinn` run it, and the process ends when it returns."""
    process = argv is None
    if process:
        _end_fast_at_exit()
    argv = sys.argv[1:] if argv is None else argv
    argv = peers.as_run(argv, COMMANDS)
    args = parser(argv[0] if argv else None).parse_args(argv)
    args.argv = argv  # argparse drops the `--` that ends wasinn's flags
    args.own_process = process  # (a guest's overdue call may end it: options._end_overdue)
    try:
        status = args.func(args)
    except GuestTrap as e:
        print(f"wasinn: {shown(str(e))}", file=sys.stderr)
        status = 1
    except BadValue as e:  # a usage error, as argparse's own: status 2
        print(f"wasinn: error: {shown(str(e))}", file=sys.stderr)
        status = 2
    except WasinnError as e:
        print(f"wasinn: error: {shown(str(e))}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        status = 130
    finally:
        if process:
            # Where the fast end below does not apply: the interpreter's teardown
            # garbage-collects every object still alive, module by module (~40 ms for
            # `classify`'s engines, instances and imports); frozen objects are left out.
            gc.freeze()
    if process:
        _exit_status[0] = status or 0
    return status


# main's status once it returned (None: not yet, or it raised), and the process it runs in.
_exit_status: list = [None, None]


def _end_fast_at_exit() -> None:
    """Ends the process as soon as the interpreter's exit has run its atexit handlers
    (the host's threads stop there, a zygote closes, logs drain), by os._exit with main's
    status once stdout and stderr are flushed: the teardown it skips (every module's
    objects freed one by one, onnxruntime's and numpy's native destructors) costs a
    run ~20 ms and does nothing a process that ends needs; the OS frees its memory and
    closes its files (buffered Python files: wasinn closes each it writes). Registered
    first, it runs last; only where no handler came before it (one that would run after
    it, e.g. a coverage tool's, would be skipped), else the exit is the interpreter's."""
    count = getattr(atexit, "_ncallbacks", None)  # CPython's; elsewhere the exit stays the interpreter's
    if count is None or count():
        return
    _exit_status[1] = os.getpid()

    def end() -> None:
        status, pid = _exit_status
        if not isinstance(status, int) or pid != os.getpid():  # main raised, or this is a forked child
            return
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:  # None: started without that descriptor
                    stream.flush()
        except (OSError, ValueError):  # e.g. a closed pipe: the interpreter's exit reports it
            return
        os._exit(status & 0xFF)
    atexit.register(end)


if __name__ == "__main__":
    sys.exit(main())

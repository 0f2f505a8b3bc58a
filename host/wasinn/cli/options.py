"""What the commands that run guests share: the flags that make a Host (the shared
options, the limits, the models) and the Host they make."""
from __future__ import annotations

import argparse
import os
import sys

from ..abi.streams import write_now
from ..backends import PRECISIONS, parse_choices
from ..errors import WasinnError
from ..limits import Limits
from ..runtime import Host, stderr_progress


def host_from_args(args, *, recycle_memories: bool = False) -> Host:
    """A Host set up by the options every command shares (see `common_flags`).
    `recycle_memories`: for a command that makes instance after instance (fuzz)."""
    host = Host(cache_dir=args.cache_dir, ort_threads=getattr(args, "ort_threads", 0), limits=limits_from_args(args),
                inference_precision=getattr(args, "inference_precision", "f32"),
                backends=parse_choices(getattr(args, "backend", [])), progress=stderr_progress,
                unknown_imports=getattr(args, "unknown_imports", None),
                overdue=_end_overdue if getattr(args, "own_process", False) else None)
    if not recycle_memories:
        # A command's instance is its only one: recycling its memory when it ends (zeroing
        # it, which faults the pages in) only raised classify's peak RSS, by ~7 MB.
        host.memories.pool_size = 0
    return host


def _end_overdue(what: str) -> None:
    """A guest's call outlived its deadline in a host function nothing interrupts: a
    command in its own process ends there, with the trap's status (its line only if
    stderr takes it at once: a pipe nobody drained had kept the process from ending)."""
    write_now(f"wasinn: {what}; the process ends")
    os._exit(1)


def limits_from_args(args) -> Limits:
    """The limits a --config file and the limit flags give (flags win)."""
    limits = Limits.from_file(args.config) if args.config else Limits()
    return limits.updated({name: getattr(args, f"limit_{name}") for name in Limits.names()
                           if getattr(args, f"limit_{name}", None) is not None})


_YES = ("", "y", "yes", "true")


def switched_on(args, key: str) -> bool:
    """Whether `-S KEY` (or KEY=y, yes, true) is among the wasmtime-style switches."""
    return any(opt.partition("=")[0] == key and opt.partition("=")[2] in _YES for opt in args.wasi)


def host_with_models(args, *, recycle_memories: bool = False) -> Host:
    """`host_from_args`'s Host with the models --model and -S nn-graph register."""
    host = host_from_args(args, recycle_memories=recycle_memories)
    for spec in args.model:
        host.models.register_spec(spec)
    for opt in args.wasi:
        key, _, value = opt.partition("=")
        if key == "nn-graph":
            host.models.register_graph_dir(value)
        elif key in ("nn", "cli", "inherit-env") and value in _YES:
            continue  # wasmtime's switches for what wasinn always provides, or does (`switched_on`)
        elif key in ("inherit-network", "tcp", "udp", "allow-ip-name-lookup", "network"):
            if value not in ("n", "no", "false"):  # it had been taken silently: a guest's connect then failed
                print(f"wasinn: note: -S {opt} ignored: wasinn gives guests no network (wasi:sockets refuses "
                      "every address and name lookup)", file=sys.stderr)
        else:
            raise WasinnError(f"-S {opt}: wasinn understands -S nn and -S nn-graph=ENCODING::DIR")
    return host


def model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH|URL",
                   help="register a model file, or a model on an inference server "
                        "(kserve+http://HOST:PORT/v2/models/M), for load-by-name (repeatable)")
    p.add_argument("-S", dest="wasi", action="append", default=[], metavar="OPT",
                   help="wasmtime-style switches: 'nn', 'nn-graph=ENCODING::DIR' to register "
                        "DIR/model.onnx under DIR's base name, 'inherit-env' to give the guest this "
                        "environment (repeatable); guests get no network ('inherit-network' is ignored, with a note)")


_LIMIT_HELP = {
    "memory": "guest linear memory per instance, all its memories together, e.g. 512MiB; "
              "past it memory.grow returns -1; more than its memories can reach (4GiB each) is refused",
    "deadline": "time per call, e.g. 30s; 0: none",
    "fuel": "wasm fuel per call; 0: not counted",
    "max_model_bytes": "bytes of one model",
    "max_tensor_bytes": "bytes of one compute input",
    "max_tensor_elements": "elements of one compute input",
    "max_tensor_rank": "dimensions of one tensor",
    "max_output_bytes": "bytes of one compute output; None: as max-tensor-bytes",
    "max_backend_memory": "a backend's working memory and live outputs, per graph",
    "max_host_bytes": "host bytes of the live tensors, outputs, models, errors and LiteRT contexts an instance holds",
    "max_graphs": "live graphs per instance",
    "max_contexts": "live execution contexts per instance",
    "max_tensors": "live tensors per instance",
    "max_errors": "live wasi:nn errors per instance (those its guest never dropped); past it the call traps",
    "max_memories": "linear memories per instance",
    "max_tables": "tables per instance",
    "max_table_elements": "elements of any one table; past it table.grow returns -1",
    "max_instances": "core instances per instance (a component is several)",
    "max_builders": "graph builders of one graph.load",
    "max_list_elements": "list elements (lists of bytes aside) one call hands the host: a host function's "
                         "arguments, an export's result",
    "max_string_bytes": "bytes of the strings one call hands the host, together (copied and decoded "
                        "holding Python's GIL)",
    "max_result_bytes": "bytes of a wasinn pipeline's JSON result (parsed holding Python's GIL: 1MiB "
                        "of small objects takes ~0.1 s)",
    "external_data_dir": "the one directory ONNX external data may be read from",
    "isolate": "which graphs run in a confined backend worker process: guest-models (graphs a guest loads "
               "from its own bytes), all (the registered models too), none (all in this process)",
    "max_workers": "live backend worker processes of isolated graphs (one per instance that has them)",
    "max_state_key_bytes": "bytes of one state-store key a data-flow operator uses (values: max-tensor-bytes)",
    "max_state_keys": "live state-store keys one data-flow operator created",
    "max_state_bytes": "bytes of the values of the state-store keys one data-flow operator created",
    "max_metric_series": "metric names x label sets one data-flow operator reports",
    "max_log_lines": "log lines per second one data-flow operator writes (the rest are counted)",
    "max_payload_bytes": "bytes of one message payload or snapshot frame handed to a data-flow operator (a serve "
                         "worker takes no MQTT message over it + 1 MiB)",
    "max_delay": "how far ahead of the host's clock a data-flow delay operator may move a message's timestamp",
    "max_open_windows": "windows one data-flow accumulate node holds open (staged, not yet emitted)",
    "max_window_messages": "messages one data-flow accumulate window stages (its fold hands them to one call)",
    "max_window_bytes": "bytes one data-flow accumulate window stages (as stored: payloads as they are, "
                        "with their fields)",
    "max_compile_memory": "address space of the helper process that compiles a guest's .wasm (real guests take "
                          "0.4-1GiB; its compiled form is cached)",
    "compile_timeout": "time to compile a guest's .wasm, e.g. 20min; 0: none",
}


def common_flags(p: argparse.ArgumentParser, *, runs: bool = True) -> None:
    """The shared options; without `runs` (compile) only those that shape compiled code."""
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where compiled components are cached (default: $XDG_CACHE_HOME/wasinn)")
    if not runs:
        engine = p.add_argument_group("engine", "components are compiled for the engine these settings "
                                      "make; a run with other settings compiles again")
        engine.add_argument("--config", metavar="FILE", help="a TOML file with a [limits] table (its fuel)")
        engine.add_argument("--fuel", dest="limit_fuel", metavar="VALUE",
                            help="compile with fuel counting on, for runs with --fuel (default: off)")
        compiling = p.add_argument_group("compiling", "what compiling one component may take (in a helper "
                                         "process; a --config file's [limits] table sets them too)")
        _limit_flag(compiling, "max_compile_memory")
        _limit_flag(compiling, "compile_timeout")
        return
    p.add_argument("--ort-threads", type=int, default=0, metavar="N",
                   help="intra-op threads per model, in every backend (default: the backend's choice; onnxruntime's, one "
                        "per physical core, without the pinning of its threads to cores)")
    p.add_argument("--backend", action="append", default=[], metavar="[ENCODING=]BACKEND",
                   help="run ENCODING's models on BACKEND, e.g. onnx=openvino; BACKEND alone takes every "
                        "encoding it serves (backends: onnxruntime, openvino, tflite; repeatable)")
    p.add_argument("--inference-precision", choices=PRECISIONS, default="f32",
                   help="f32: float32 models compute in float32 (default); auto: the backend's choice "
                        "(OpenVINO's CPU plugin: bfloat16 where the CPU has it, faster, logits within ~0.1-0.25); "
                        "bf16, f16: those, refused where the device lacks them. onnxruntime and tflite run "
                        "every model in its own precision")
    limit_flags(p)


def limit_flags(p: argparse.ArgumentParser) -> None:
    limits = p.add_argument_group("limits", "what each instance may use; a --config file's [limits] "
                                  "table sets them too, flags win (defaults in parentheses)")
    limits.add_argument("--config", metavar="FILE", help="a TOML file with a [limits] table")
    for name in _LIMIT_HELP:
        _limit_flag(limits, name)


def _limit_flag(group, name: str) -> None:
    group.add_argument(f"--{name.replace('_', '-')}", dest=f"limit_{name}", metavar="VALUE",
                       help=f"{_LIMIT_HELP[name]} ({_shown(name, getattr(Limits(), name))})")


def _shown(name: str, default) -> str:
    """A limit's default as a user would write it: 2GiB, not 2147483648."""
    if default is None:
        return "none"
    sized = name == "memory" or "bytes" in name or "memory" in name
    if sized and default >= 1 << 20 and default % (1 << 20) == 0:
        return f"{default >> 30}GiB" if default % (1 << 30) == 0 else f"{default >> 20}MiB"
    return f"{default:g}" if isinstance(default, float) else str(default)

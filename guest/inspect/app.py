"""inspect: a command component that loads a graph and prints what it expects and
produces, asked through wasinn's introspection extension (wasinn:introspect).

    wasinn run --dir models::/m inspect.wasm --file /m/model.onnx [--json]
    wasinn run --model clf=classifier.onnx inspect.wasm --name clf [--json]

One line per input and output (name, wasi:nn type, shape with -1 for a dynamic axis),
or with --json the same fields as `wasinn inspect --json`.
"""
import json
import sys

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import describe, graph

USAGE = "usage: inspect (--file MODEL | --name NAME) [--json]"


def _parse(argv):
    """argparse needs `locale`, which the guest's Python lacks: parse by hand."""
    opts = {"file": None, "name": None, "json": False}
    it = iter(argv)
    for arg in it:
        if arg in ("--file", "--name"):
            opts[arg[2:]] = next(it, None)
        elif arg == "--json":
            opts["json"] = True
        else:
            raise ValueError(f"unexpected argument {arg!r}")
    if (opts["file"] is None) == (opts["name"] is None):
        raise ValueError("give exactly one of --file and --name")
    return opts


def _tensor(t: describe.TensorDescription) -> dict:
    return {"name": t.name, "type": t.ty.name if t.ty is not None else None,
            "type_name": t.type_name, "shape": t.shape}


def main(argv) -> int:
    try:
        opts = _parse(argv[1:])
    except ValueError as e:
        print(f"inspect: {e}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        if opts["file"]:
            with open(opts["file"], "rb") as f:
                g = graph.load([f.read()], graph.GraphEncoding.AUTODETECT, graph.ExecutionTarget.CPU)
        else:
            g = graph.load_by_name(opts["name"])
    except Err as e:
        print(f"inspect: wasi:nn error {e.value.code().name}: {e.value.data()}", file=sys.stderr)
        return 1
    d = describe.describe_graph(g)
    report = {"backend": d.backend, "target": d.target.name.lower(),
              "inputs": [_tensor(t) for t in d.inputs], "outputs": [_tensor(t) for t in d.outputs]}
    if opts["json"]:
        print(json.dumps(report))
        return 0
    print(f"backend {report['backend']}, target {report['target']}")
    for kind in ("inputs", "outputs"):
        for t in report[kind]:
            shape = "any rank" if t["shape"] is None else str(t["shape"])
            print(f"{kind[:-1]}\t{t['name']}\t{t['type'] or '(' + t['type_name'] + ')'}\t{shape}")
    return 0


class Run(exports.Run):
    def run(self) -> None:
        if main(sys.argv):
            raise Err(None)  # wasi:cli/run's error: exit status 1

"""nn-cli: a command component that runs any model through wasi:nn.

    wasinn run --dir data::/data nn-cli.wasm (--file /data/model.onnx | --name NAME)
        [--encoding onnx] [--target cpu] [--out /data/out] NAME=TYPE:D1,D2,..:/data/input.bin ...

Each input is raw little-endian bytes in a file; TYPE is a wasi:nn tensor type (FP32,
U8, ...). Prints one line per output (name, type, dims, first values); with --out it
also writes each output's raw bytes to OUT/<name>.bin.
"""
import struct
import sys

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import graph, tensor

_FORMATS = {"FP16": "e", "FP32": "f", "FP64": "d", "U8": "B", "I32": "i", "I64": "q"}


def _input(spec: str):
    name, _, rest = spec.partition("=")
    ty, dims, path = rest.split(":", 2)
    with open(path, "rb") as f:
        data = f.read()
    shape = [int(d) for d in dims.split(",")] if dims else []
    return name, tensor.Tensor(shape, tensor.TensorType[ty], data)


def _preview(ty: tensor.TensorType, data: bytes) -> str:
    fmt = _FORMATS.get(ty.name)
    if fmt is None:
        return data[:16].hex()
    size = struct.calcsize(fmt)
    count = min(len(data) // size, 5)
    return " ".join(f"{v:.6g}" if isinstance(v, float) else str(v)
                    for v in struct.unpack(f"<{count}{fmt}", data[:count * size]))


USAGE = ("usage: nn-cli (--file MODEL | --name NAME) [--encoding onnx] [--target cpu] [--out DIR] "
         "NAME=TYPE:DIMS:FILE ...")


def _parse(argv):
    """argparse needs `locale`, which the guest's Python lacks: parse by hand."""
    opts = {"file": None, "name": None, "encoding": "onnx", "target": "cpu", "out": None}
    inputs = []
    it = iter(argv)
    for arg in it:
        if arg.startswith("--") and arg[2:] in opts:
            opts[arg[2:]] = next(it, None)
        elif "=" in arg and not arg.startswith("-"):
            inputs.append(arg)
        else:
            raise ValueError(f"unexpected argument {arg!r}")
    if (opts["file"] is None) == (opts["name"] is None):
        raise ValueError("give exactly one of --file and --name")
    return opts, inputs


def main(argv) -> int:
    try:
        opts, specs = _parse(argv[1:])
    except ValueError as e:
        print(f"nn-cli: {e}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        if opts["file"]:
            with open(opts["file"], "rb") as f:
                g = graph.load([f.read()], graph.GraphEncoding[opts["encoding"].upper()],
                               graph.ExecutionTarget[opts["target"].upper()])
        else:
            g = graph.load_by_name(opts["name"])
        ctx = g.init_execution_context()
        outputs = ctx.compute([_input(s) for s in specs])
    except Err as e:
        print(f"nn-cli: wasi:nn error {e.value.code().name}: {e.value.data()}", file=sys.stderr)
        return 1
    for name, t in outputs:
        data = t.data()
        print(f"{name}\t{t.ty().name}\t{t.dimensions()}\t{_preview(t.ty(), data)}")
        if opts["out"]:
            with open(f"{opts['out']}/{name}.bin", "wb") as f:
                f.write(data)
    return 0


class Run(exports.Run):
    def run(self) -> None:
        if main(sys.argv):
            raise Err(None)  # wasi:cli/run's error: exit status 1

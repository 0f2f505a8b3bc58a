"""classify-cli: a command component that classifies photos through wasi:nn.

    classify-cli [--model NAME] [--top K] [--timings] IMAGE...

Built portable (`wasinn.apps.classify_cli`), it runs unchanged on any wasi:nn host:

    wasmtime run -S nn -S nn-graph=openvino::DIR --dir IMAGES::/images classify-cli.wasm /images/cat.png
    wasinn run -S nn -S nn-graph=onnx::DIR --dir IMAGES::/images classify-cli.wasm /images/cat.png

The images (PNG, binary PGM/PPM) are decoded here, in the guest. The model is loaded
by name (default: efficientnet-lite0, which `-S nn-graph=ENCODING::DIR` names after
DIR); it takes the uint8 RGB pixels [height, width, 3] as they are and crops, resizes
and normalises them itself (wasinn.apps.classifier_model), so no pixel loop runs here.
"""
import heapq
import os
import struct
import sys
import time

from componentize_py_types import Err

from decode import ImageError, read_image
from wit_world import exports
from wit_world.imports import graph, tensor

_HERE = os.path.dirname(__file__)
# Read at build time: componentize-py snapshots module state, so the labels live in the wasm.
try:
    with open(os.path.join(_HERE, "labels.txt")) as f:
        LABELS = f.read().splitlines()
except FileNotFoundError:
    raise RuntimeError("labels.txt must be beside app.py when building classify-cli "
                       "(python -m wasinn.apps.classify_cli builds it with the bundled model's labels)") from None

DEFAULT_MODEL = "efficientnet-lite0"
INPUT = "image"
USAGE = "usage: classify-cli [--model NAME] [--top K] [--timings] IMAGE..."


def _parse(argv):
    """argparse needs `locale`, which the guest's Python lacks: parse by hand."""
    opts = {"model": DEFAULT_MODEL, "top": 5, "timings": False}
    images = []
    it = iter(argv)
    for arg in it:
        if arg in ("--model", "--top"):
            value = next(it, None)
            if value is None:
                raise ValueError(f"{arg} needs a value")
            opts[arg[2:]] = value
        elif arg == "--timings":
            opts["timings"] = True
        elif arg.startswith("-"):
            raise ValueError(f"unknown option {arg!r}")
        else:
            images.append(arg)
    if not images:
        raise ValueError("give at least one image")
    try:
        opts["top"] = int(opts["top"])
    except ValueError:
        raise ValueError(f"--top wants a number, got {opts['top']!r}") from None
    if opts["top"] < 1:
        raise ValueError("--top must be at least 1")
    return opts, images


def _nn_error(e: Err) -> str:
    return f"wasi:nn error {e.value.code().name.lower().replace('_', '-')}: {e.value.data()}"


def _probabilities(outputs) -> tuple:
    # By position, not by name: wasmtime's OpenVINO backend names outputs "0", "1", ...
    if not outputs:
        raise ValueError("the model returned no outputs")
    first = outputs[0][1]
    data = first.data()
    ty = first.ty()
    for _, t in outputs:
        t.__exit__(None, None, None)
    if ty != tensor.TensorType.FP32:
        raise ValueError(f"the model's first output should be float32 class probabilities, got {ty.name}")
    return struct.unpack(f"<{len(data) // 4}f", data)


def _show(path, scores, top):
    best = heapq.nlargest(top, range(len(scores)), key=scores.__getitem__)
    labels = [LABELS[i] if i < len(LABELS) else str(i) for i in best]
    width = max(map(len, labels))
    print(path)
    for rank, (i, label) in enumerate(zip(best, labels), 1):
        print(f"  {rank}. {label:<{width}}  {scores[i]:7.2%}  (class {i})")


def main(argv) -> int:
    try:
        opts, images = _parse(argv[1:])
    except ValueError as e:
        print(f"classify-cli: {e}\n{USAGE}", file=sys.stderr)
        return 2

    def timing(what, since):
        if opts["timings"]:
            print(f"classify-cli: {what} {(time.perf_counter() - since) * 1e3:.1f} ms", file=sys.stderr)

    start = time.perf_counter()
    try:
        context = graph.load_by_name(opts["model"]).init_execution_context()
    except Err as e:
        print(f"classify-cli: cannot load model {opts['model']!r}: {_nn_error(e)}", file=sys.stderr)
        return 1
    timing(f"load {opts['model']}", start)
    failed = 0
    for path in images:
        start = time.perf_counter()
        try:
            width, height, rgb = read_image(path)
        except (OSError, ImageError) as e:
            print(f"classify-cli: {path}: {e}", file=sys.stderr)
            failed += 1
            continue
        timing(f"{path}: decode {width}x{height}", start)
        start = time.perf_counter()
        try:
            scores = _probabilities(context.compute(
                [(INPUT, tensor.Tensor([height, width, 3], tensor.TensorType.U8, rgb))]))
        except Err as e:
            print(f"classify-cli: {path}: {_nn_error(e)}", file=sys.stderr)
            failed += 1
            continue
        except ValueError as e:
            print(f"classify-cli: {path}: {e}", file=sys.stderr)
            return 1
        timing(f"{path}: compute", start)
        _show(path, scores, opts["top"])
    return 1 if failed else 0


class Run(exports.Run):
    def run(self) -> None:
        if main(sys.argv):
            raise Err(None)  # wasi:cli/run's error: exit status 1

#!/usr/bin/env python3
"""Can a malformed ONNX model crash onnxruntime (and so the whole host process)?

    .venv/bin/python tests/support/fuzz_models.py [--seconds 600] [--start N] [--hang 20] [--out fuzz-crashes]

Mutates small real models (tests/support/models.py): their bytes (bit flips, byte overwrites,
truncations, spliced chunks) and their parsed structure (initializer dims, types and
data; attributes; operators; declared shapes; wiring; opsets), and in a worker process has onnxruntime load each mutant and, when it
loads, run it on inputs that fit its declared inputs. A worker that dies of a signal
is a crash, one that takes longer than --hang seconds a hang: the mutant is saved to
--out and the worker restarted. Prints mutants tried, loaded, ran, rejected, crashed, hung.
Mutants are numbered; `--replay N` rebuilds mutant N and runs it in this process.
"""
from __future__ import annotations

import argparse
import pathlib
import queue
import random
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "tests"))

from support import models  # noqa: E402  (tests/support/models.py)
from wasinn import TensorType  # noqa: E402

_ANSWER = "@@fuzz"
BASES = [models.small_cnn(), models.add_mul(), models.cast(TensorType.FP32, TensorType.FP16, (2, 3)),
         models.identity(TensorType.I64)]


def mutant(n: int) -> bytes:
    """Mutant number `n`: deterministic, so a crash can be replayed from its number.
    Even numbers mutate the bytes (reaching the protobuf parser), odd ones the parsed
    model (reaching graph construction, shape inference and the kernels)."""
    rng = random.Random(n)
    base = BASES[(n // 2) % len(BASES)]
    return _mutate_model(base, rng) if n % 2 else _mutate_bytes(base, rng)


def _mutate_bytes(base: bytes, rng: random.Random) -> bytes:
    data = bytearray(base)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 8])):
        kind, at = rng.randrange(4), rng.randrange(len(data))
        if kind == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[at] = rng.choice([0, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif kind == 2:
            del data[rng.randrange(at, len(data) + 1):]
        else:
            other = BASES[rng.randrange(len(BASES))]
            start = rng.randrange(len(other))
            data[at:at] = other[start:start + rng.randrange(1, 32)]
        if not data:
            data = bytearray(b"\x08")
    return bytes(data)


# Numbers that break size arithmetic, and operators with shape-driven kernels.
_EDGES = [0, 1, -1, 2, 3, 7, 255, 65_535, 2**31 - 1, -(2**31), 2**32, 2**62, -(2**63)]
_OPS = ["Conv", "ConvTranspose", "MaxPool", "AveragePool", "Gather", "GatherElements", "GatherND", "Scatter",
        "ScatterND", "Reshape", "Slice", "Pad", "Resize", "TopK", "Expand", "Tile", "Split", "Concat", "MatMul",
        "Gemm", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "OneHot", "Range", "ReduceSum", "CumSum",
        "DepthToSpace", "SpaceToDepth", "Einsum", "NonZero", "Upsample", "LRN", "InstanceNormalization",
        "LayerNormalization", "Softmax", "ArgMax", "Compress", "Trilu", "GridSample", "RoiAlign", "Col2Im"]


def _mutate_model(base: bytes, rng: random.Random) -> bytes:
    import onnx
    model = onnx.ModelProto.FromString(base)
    graph = model.graph
    for _ in range(rng.choice([1, 1, 2, 3])):
        kind = rng.randrange(6)
        if kind == 0 and graph.initializer:  # an initializer's dims, type or data
            t = rng.choice(graph.initializer)
            what = rng.randrange(3)
            if what == 0 and t.dims:
                t.dims[rng.randrange(len(t.dims))] = rng.choice(_EDGES)
            elif what == 1:
                t.data_type = rng.randrange(1, 24)
            elif t.raw_data:
                t.raw_data = t.raw_data[:rng.randrange(len(t.raw_data) + 1)]
            else:
                del t.float_data[rng.randrange(len(t.float_data) + 1):]
        elif kind == 1:  # an integer attribute
            attrs = [a for node in graph.node for a in node.attribute if a.type in (2, 7)]
            if attrs:
                a = rng.choice(attrs)
                if a.type == 2:
                    a.i = rng.choice(_EDGES)
                elif a.ints:
                    a.ints[rng.randrange(len(a.ints))] = rng.choice(_EDGES)
        elif kind == 2:  # another operator on the same inputs
            rng.choice(graph.node).op_type = rng.choice(_OPS)
        elif kind == 3:  # a declared input or output shape
            value = rng.choice([*graph.input, *graph.output])
            dims = value.type.tensor_type.shape.dim
            if dims:
                dims[rng.randrange(len(dims))].dim_value = rng.choice([d for d in _EDGES if d >= 0])
        elif kind == 4:  # inputs rewired to other tensors, or one more input
            node = rng.choice(graph.node)
            names = [v.name for v in graph.input] + [t.name for t in graph.initializer] + \
                    [o for nd in graph.node for o in nd.output]
            if rng.random() < 0.5 and node.input:
                node.input[rng.randrange(len(node.input))] = rng.choice(names)
            else:
                node.input.append(rng.choice(names))
        else:  # the opset
            model.opset_import[0].version = rng.choice([1, 6, 7, 9, 11, 13, 17, 18, 21, 23])
    return model.SerializeToString()


def try_one(model: bytes) -> str:
    """Loads and, when it loads, runs one model; the outcome's name."""
    import numpy as np
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = 1, 4
    try:
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"], enable_fallback=0)
    except Exception:
        return "rejected"
    feeds = {}
    for i in session.get_inputs():
        dims = [d if isinstance(d, int) and 0 <= d <= 64 else 1 for d in i.shape]
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                 "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}.get(i.type)
        if dtype is None:
            return "loaded"
        feeds[i.name] = np.ones(dims, dtype)
    try:
        session.run(None, feeds)
    except Exception:
        return "loaded"
    return "ran"


def worker() -> None:
    """Reads mutant numbers on stdin, answers each with its outcome (a crash answers nothing)."""
    for line in sys.stdin:
        n = int(line)
        print(f"{_ANSWER} {n} {try_one(mutant(n))}", flush=True)


class Worker:
    """A worker process, and a thread that reads its answers (so a hang can time out)."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout] + [self.lines.put("")],
                         daemon=True).start()

    def ask(self, n: int, timeout: float, noise: dict[str, int]) -> str:
        """The outcome for mutant `n`: rejected, loaded, ran, crashed or hung."""
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                self.proc.kill()
                self.proc.wait()
                return "hung"
            if not line:
                self.proc.wait()
                return "crashed"
            if line.startswith(_ANSWER):
                return line.split()[2]
            noise[line.split(":")[0][:60]] = noise.get(line.split(":")[0][:60], 0) + 1  # onnxruntime's own prints

    def status(self) -> str:
        code = self.proc.returncode
        return "killed after the time limit" if code == -9 else f"exit status {code}"

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--start", type=int, default=0, help="first mutant number")
    parser.add_argument("--out", default="fuzz-crashes")
    parser.add_argument("--hang", type=float, default=20, help="seconds one mutant may take")
    parser.add_argument("--replay", type=int)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    if args.replay is not None:
        print(try_one(mutant(args.replay)))
        return

    counts = {"rejected": 0, "loaded": 0, "ran": 0, "crashed": 0, "hung": 0}
    noise: dict[str, int] = {}
    out = pathlib.Path(args.out)
    n, start, last_report = args.start, time.monotonic(), time.monotonic()
    worker_ = None
    while time.monotonic() - start < args.seconds:
        worker_ = worker_ or Worker()
        answer = worker_.ask(n, args.hang, noise)
        if answer in ("crashed", "hung"):
            counts[answer] += 1
            out.mkdir(exist_ok=True)
            (out / f"mutant-{n}.onnx").write_bytes(mutant(n))
            print(f"{answer.upper()} on mutant {n} ({worker_.status()}); saved to {out}/mutant-{n}.onnx", flush=True)
            worker_ = None
        else:
            counts[answer] += 1
        n += 1
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            print(f"  .. {n - args.start} mutants, {counts}", file=sys.stderr, flush=True)
    if worker_ is not None:
        worker_.stop()
    elapsed = time.monotonic() - start
    print(f"{n - args.start} mutants in {elapsed:.0f} s ({(n - args.start) / elapsed:.0f}/s): {counts}")
    if noise:
        print(f"lines onnxruntime printed on stdout, by start: {noise}")
    sys.exit(1 if counts["crashed"] or counts["hung"] else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The remote backend's cost: the same inference on a KServe model server over loopback
(Open Inference Protocol, binary and JSON tensors) next to local onnxruntime.

    .venv/bin/python benchmarks/bench_remote.py [--runs N]

Needs .venv-kserve (scripts/setup-kserve.sh). The server's onnxruntime and the local one
both get one intra-op thread, so the difference is the protocol and the process hop; a
third table sends the same 602 KB input to a model that only averages it, which is the
protocol's cost alone.
Runs are interleaved (local, remote, local, ...) so machine load hits both alike;
medians are reported, with each remote row's ratio to local.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "host"), str(ROOT / "tests")]

import wasinn  # noqa: E402
from support.kserve_support import KServeServer  # noqa: E402
from wasinn.apps.classify import ImageClassifier, composed_model, load_image  # noqa: E402
from wasinn.nn import compute  # noqa: E402

BUNDLED = ROOT / "models" / "efficientnet-lite0" / "model.onnx"
CACHE = ROOT / ".cache" / "bench"


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def interleaved(fns: dict, runs: int) -> dict[str, float]:
    """Median milliseconds of each function, called in turn `runs` times after a warm-up."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def mean_model(path: pathlib.Path) -> pathlib.Path:
    """The bundled model's input in, one float out: no compute to speak of."""
    graph = helper.make_graph([helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0)], "mean",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("mean", TensorProto.FLOAT, [])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def report(title: str, medians: dict[str, float]) -> None:
    local = medians["local"]
    print(f"\n{title}")
    for name, ms in medians.items():
        ratio = "" if name == "local" else f"{ms / local:6.2f}x local"
        print(f"  {name:<28} {ms:8.2f} ms  {ratio}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30, help="timed runs per row (default 30)")
    args = ap.parse_args()
    classifier = composed_model(CACHE, progress)
    with tempfile.TemporaryDirectory() as tmp, \
            KServeServer({"base": BUNDLED, "classifier": classifier, "mean": mean_model(pathlib.Path(tmp, "mean.onnx"))},
                         pathlib.Path(tmp, "server.log"), progress=progress) as server:
        host = wasinn.Host(cache_dir=CACHE, ort_threads=1, progress=progress)
        host.models.register("local", BUNDLED)
        host.models.register_spec(f"binary={server.url('base')}")
        host.models.register_spec(f"json={server.url('base', data='json')}")
        host.models.register("local-mean", mean_model(pathlib.Path(tmp, "mean.onnx")))
        host.models.register_spec(f"mean-binary={server.url('mean')}")
        host.models.register_spec(f"mean-json={server.url('mean', data='json')}")
        x = wasinn.HostTensor.from_array(np.random.default_rng(0).standard_normal((1, 3, 224, 224), np.float32))

        def runner(name: str):
            graph = host.models.graph(name, host.nn.load_graph)
            context = graph.init_execution_context()
            return lambda: compute(graph, context, [("input", x)], host.nn.limits)

        report("EfficientNet-Lite0, one float32 [1,3,224,224] input (host-side wasi:nn compute)",
               interleaved({"local": runner("local"), "kserve, binary tensors": runner("binary"),
                            "kserve, JSON tensors": runner("json")}, args.runs))

        report("the same input to a model that only averages it: the protocol's own cost",
               interleaved({"local": runner("local-mean"), "kserve, binary tensors": runner("mean-binary"),
                            "kserve, JSON tensors": runner("mean-json")}, args.runs))

        host.models.register_spec(f"remote-classifier={server.url('classifier')}")
        image = load_image(ROOT / "images" / "chelsea.png")
        local = ImageClassifier(host)
        remote = ImageClassifier(host, model="remote-classifier")
        report("classifier component, one 451x300 photo (the guest sees plain wasi:nn)",
               interleaved({"local": lambda: local.classify([image], top=3),
                            "kserve, binary tensors": lambda: remote.classify([image], top=3)}, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

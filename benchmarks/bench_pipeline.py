#!/usr/bin/env python3
"""`wasinn serve` over a real mosquitto vs native onnxruntime in a loop, same photos.

    .venv/bin/python benchmarks/bench_pipeline.py [--messages 150] [--latency-messages 40] [--rounds 3]
    .venv/bin/python benchmarks/bench_pipeline.py --hosts [--messages 150] [--rounds 3]    (as root)

benchmarks/bench.py's `serve` and `pipeline` sections are `serve_rows` and `stage_rows` here.

For 1 and 2 workers (processes, one onnxruntime thread each):
  msgs/s   a burst of --messages photos published at once, first publish to last result
  p50/p99  round trip of one photo at a time: publish -> result received (ms)
Native: the same photos decoded with Pillow and classified by the composed classifier
model (preprocessing inside the graph, as the pipeline's stages do it) with onnxruntime,
in 1 and 2 processes of one thread each; its latency is one decode + run + top-5.
Each configuration runs --rounds times, interleaved, and each number is the median of
its rounds (the machines here are shared and noisy). Starts its own mosquitto on a
free loopback port; nothing leaves the machine.

--hosts: worker hosts instead: one and two network namespaces with one worker each,
joined to a broker namespace by veth pairs, over TLS with a password (as
tests/pipeline/test_pipeline_hosts.py); msgs/s of a burst. Every namespace is deleted at the end.
"""
from __future__ import annotations

import argparse
import collections
import io
import json
import multiprocessing
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support.pipeline_service import CACHE, PIPELINE, Broker, Results, Service, client, pipeline_with, publish  # noqa: E402

IMAGES = [p.read_bytes() for p in sorted((ROOT / "images").glob("*.png"))]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# --- native -----------------------------------------------------------------------------
def _decode(png: bytes) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _native_loop(args) -> list[float]:
    """Seconds per photo of decode + the composed classifier + top 5. With `ahead`, the
    next photos are decoded on a thread meanwhile, as a `wasinn serve` worker does."""
    model, count, threads, ahead = args
    import concurrent.futures
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    seconds = []
    with concurrent.futures.ThreadPoolExecutor(1) as decoder:
        pending = collections.deque(decoder.submit(_decode, IMAGES[i % len(IMAGES)]) for i in range(ahead))
        for i in range(count + 5):
            start = time.perf_counter()
            if ahead:
                pixels = pending.popleft().result()
                pending.append(decoder.submit(_decode, IMAGES[(i + ahead) % len(IMAGES)]))
            else:
                pixels = _decode(IMAGES[i % len(IMAGES)])
            probabilities = session.run(None, {"image": pixels})[0][0]
            np.argsort(-probabilities)[:5]
            if i >= 5:  # the first runs warm onnxruntime up
                seconds.append(time.perf_counter() - start)
    return seconds


def native(processes: int, messages: int, threads: int = 1, ahead: int = 0) -> dict:
    from wasinn.apps.classify import composed_model
    model = str(composed_model(CACHE, lambda m: print(m, file=sys.stderr)))
    share = messages // processes
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(_native_loop, [(model, 1, threads, ahead)] * processes)  # start and import before timing
        start = time.perf_counter()
        per_process = pool.map(_native_loop, [(model, share, threads, ahead)] * processes)
        wall = time.perf_counter() - start
    latencies = [s for p in per_process for s in p]
    # each process also warmed up 5 runs inside the timed window: count them as throughput
    return {"rate": (share + 5) * processes / wall, "p50": percentile(latencies, 50) * 1e3,
            "p99": percentile(latencies, 99) * 1e3}


# --- wasinn serve ----------------------------------------------------------------------------
def served(broker: Broker, workers: int, messages: int, latency_messages: int, threads: int = 1) -> dict:
    with Service(broker, workers=workers, node="bench", log_level="info", ort_threads=threads) as service, \
            Results(broker) as results:
        service.wait_ready()
        c = client(broker)
        warm = [f"w{workers}-warm-{i}" for i in range(10)]
        for i, ident in enumerate(warm):
            publish(c, IMAGES[i % len(IMAGES)], ident)
        results.wait_for(warm, timeout=120)

        round_trips = []
        for i in range(latency_messages):
            ident = f"w{workers}-one-{i}"
            start = time.perf_counter()
            publish(c, IMAGES[i % len(IMAGES)], ident)
            results.wait_for([ident], timeout=60)
            round_trips.append(results.arrived[ident] - start)

        burst = [f"w{workers}-burst-{i}" for i in range(messages)]
        start = time.perf_counter()
        for i, ident in enumerate(burst):
            publish(c, IMAGES[i % len(IMAGES)], ident)
        results.wait_for(burst, timeout=600)
        wall = max(results.arrived[i] for i in burst) - start
        c.disconnect()
        c.loop_stop()
        per_worker = {}
        for ident in burst:
            w = results.by_id[ident][0]["worker"]
            per_worker[w] = per_worker.get(w, 0) + 1
    return {"rate": messages / wall, "p50": percentile(round_trips, 50) * 1e3,
            "p99": percentile(round_trips, 99) * 1e3, "split": sorted(per_worker.values())}


# --- benchmarks/bench.py's sections ----------------------------------------------------------
def serve_rows(row, progress, threads: int, quick: bool) -> None:
    """`wasinn serve` with one worker against the native loop (decode + the composed
    classifier + top 5, one process), interleaved rounds, the same onnxruntime threads;
    and against the same loop decoding two photos ahead on a thread, as the worker does."""
    rounds, messages, one_at_a_time = (2, 60, 10) if quick else (3, 150, 30)
    runs: dict[str, list[dict]] = {"wasinn": [], "native": [], "overlapped": []}
    with Broker() as broker:
        for r in range(rounds):
            progress(f"serve: round {r + 1}/{rounds}: wasinn serve (1 worker), then the native loops, "
                     f"{messages} photos each")
            runs["wasinn"].append(served(broker, 1, messages, one_at_a_time, threads))
            runs["native"].append(native(1, messages, threads))
            runs["overlapped"].append(native(1, messages, threads, ahead=2))
    w, n, o = ({k: statistics.median(run[k] for run in runs[side]) for k in ("rate", "p50")} for side in runs)
    row("serve", "wasinn serve, 1 worker: photos/s", w["rate"], n["rate"], "1/s", ">= 0.90x", lower_is_better=False,
        note=f"a burst of {messages} over mosquitto; reference: the native loop; median of {rounds} rounds")
    row("serve", "the same vs a native loop that also decodes ahead", w["rate"], o["rate"], "1/s",
        lower_is_better=False, note="reference: the loop with 2 photos decoded ahead on a thread, as the worker does")
    row("serve", "wasinn serve, 1 worker: one photo, median", w["p50"], n["p50"], "ms",
        note="wasinn: publish to result over the broker; native: the loop's own time")


def stage_rows(row, progress, threads: int, n: int) -> None:
    """The example pipeline's stages in one process (GraphRunner, no broker), each next to
    onnxruntime (or numpy) doing that stage's work on the same input, interleaved. In a
    process of their own, where both sides run on one set of onnxruntime pools, as a serve
    worker's stages do: pools per session would spin on each other's cores."""
    progress(f"pipeline: {n} photos through the stages and through onnxruntime, interleaved")
    proc = subprocess.run([sys.executable, __file__, "--stage-times", str(n), "--threads", str(threads)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "host")})
    if proc.returncode:
        raise RuntimeError(f"the stage measurement failed: {proc.stderr.strip()[-500:]}")
    ours, theirs = json.loads(proc.stdout.splitlines()[-1])
    for stage, label, target, note in (
            ("preprocess", "preprocess stage (the classifier's front)", "", "reference: its model's run()"),
            ("inference", "inference stage (EfficientNet-Lite0)", "<= 1.10x", "reference: the network's run() "
                                                                             "on the same [1,3,224,224] input"),
            ("postprocess", "postprocess stage (softmax, top 5, JSON)", "", "reference: numpy")):
        row("pipeline", f"{label}, median", 1e3 * statistics.median(s[stage] for s in ours),
            1e3 * statistics.median(s[stage] for s in theirs), "ms", target, note=note)
    row("pipeline", "all three stages, median", 1e3 * statistics.median(sum(s.values()) for s in ours),
        1e3 * statistics.median(sum(s.values()) for s in theirs), "ms", note="reference: the same three natively")


def stage_times(threads: int, n: int) -> tuple[list[dict], list[dict]]:
    """Seconds per stage for `n` photos: wasinn's stages and the same work natively."""
    import onnxruntime as ort

    import wasinn
    from wasinn.backends.onnxruntime import share_thread_pools
    from wasinn.pipeline import GraphRunner, load_pipeline
    from wasinn.pipeline.engine import decode_image
    share_thread_pools(threads)
    pipeline = load_pipeline(PIPELINE)
    runner = GraphRunner(pipeline, wasinn.Host(cache_dir=CACHE, ort_threads=threads,
                                               progress=lambda m: print(m, file=sys.stderr)))
    options = ort.SessionOptions()
    options.use_per_session_threads = False  # the same pools as wasinn's sessions
    front, network = (ort.InferenceSession(pipeline.modules[m].config["model"], options,
                                           providers=["CPUExecutionProvider"]) for m in ("preprocess", "inference"))
    front_in, network_in = front.get_inputs()[0].name, network.get_inputs()[0].name
    photos = [decode_image(p, pipeline.source.max_pixels, pipeline.source.name) for p in IMAGES]

    def native_stages(pixels) -> dict[str, float]:
        t0 = time.perf_counter()
        x = front.run(None, {front_in: pixels})[0]
        t1 = time.perf_counter()
        logits = network.run(None, {network_in: x})[0][0]
        t2 = time.perf_counter()
        e = np.exp(logits - logits.max())
        best, total = np.argsort(-e)[:5], e.sum()
        json.dumps([{"index": int(i), "score": float(e[i] / total)} for i in best])
        return {"preprocess": t1 - t0, "inference": t2 - t1, "postprocess": time.perf_counter() - t2}

    for i in range(5):  # warm-up both
        runner.run(photos[i % len(photos)])
        native_stages(photos[i % len(photos)])
    ours, theirs = [], []
    for i in range(n):
        ours.append(runner.run(photos[i % len(photos)]).seconds)
        theirs.append(native_stages(photos[i % len(photos)]))
    runner.close()
    return ours, theirs


def forget_session(broker: Broker, client_id: str) -> None:
    """Ends the broker's session of `client_id` (clean start, then gone on disconnect)."""
    c = broker.new_client(client_id)
    broker.connect(c, clean_start=True)
    c.loop_start()
    c.disconnect()
    c.loop_stop()


def hosts(messages: int, rounds: int) -> int:
    import tempfile

    from support.pipeline_certs import Certificates
    from support.pipeline_netns import Namespaces, Unavailable
    try:
        net = Namespaces(["host1", "host2"])
    except Unavailable as e:
        print(f"bench_pipeline: --hosts: {e}", file=sys.stderr)
        return 1
    rates: dict[int, list[float]] = {1: [], 2: []}
    with net, tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        certs = Certificates(d / "certs", addresses=net.hub_addresses())
        (d / "password").write_text("bench\n")
        pipeline = pipeline_with(d, tls={"ca": "certs/ca.crt"}, username="bench", passwordFile="password")
        with Broker(certs=certs, users={"bench": "bench"}, host="0.0.0.0", netns=net.hub) as broker:
            for r in range(rounds):
                for n in (1, 2):
                    print(f"round {r + 1}/{rounds}: {n} worker host(s)...", file=sys.stderr, flush=True)
                    names = list(net.spokes)[:n]
                    services = [Service(broker, workers=1, node=name, pipeline=pipeline, netns=net.spokes[name],
                                        address=f"{net.hub_address(name)}:{broker.port}", log_level="info")
                                for name in names]
                    try:
                        for s in services:
                            s.wait_subscribed(1)
                        with Results(broker) as results:
                            c = client(broker)
                            warm = [f"h{n}-{r}-warm-{i}" for i in range(10)]
                            for i, ident in enumerate(warm):
                                publish(c, IMAGES[i % len(IMAGES)], ident)
                            results.wait_for(warm, timeout=120)
                            burst = [f"h{n}-{r}-burst-{i}" for i in range(messages)]
                            start = time.perf_counter()
                            for i, ident in enumerate(burst):
                                publish(c, IMAGES[i % len(IMAGES)], ident)
                            results.wait_for(burst, timeout=600)
                            rates[n].append(messages / (max(results.arrived[i] for i in burst) - start))
                            c.disconnect()
                            c.loop_stop()
                    finally:
                        for s in services:
                            s.__exit__(None, None, None)
                        for name in names:  # a stopped member keeps its share of what comes (mosquitto 2.0.11)
                            forget_session(broker, f"image-classification-{name}-0")
    print(f"\n{messages} photos per burst over TLS with a password, median of {rounds} rounds; one worker per "
          "host (network namespace), onnxruntime 1 thread; the hosts share this machine's CPUs")
    for n in (1, 2):
        print(f"{n} worker host{'s' if n > 1 else ' '}  {statistics.median(rates[n]):8.1f} msgs/s   "
              f"(rounds: {', '.join(f'{x:.1f}' for x in rates[n])})")
    print(f"scaling 1 -> 2 hosts: {statistics.median(rates[2]) / statistics.median(rates[1]):.2f}x")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=150, help="photos in the throughput burst")
    ap.add_argument("--latency-messages", type=int, default=40, help="photos sent one at a time")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each configuration (medians are shown)")
    ap.add_argument("--hosts", action="store_true", help="one and two worker hosts (network namespaces; root)")
    ap.add_argument("--stage-times", type=int, metavar="N", help=argparse.SUPPRESS)  # stage_rows' child
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage_times:
        print(json.dumps(stage_times(args.threads, args.stage_times)))
        return 0
    if args.hosts:
        return hosts(args.messages, args.rounds)
    runs: dict[tuple, list[dict]] = {}
    with Broker() as broker:
        for r in range(args.rounds):
            for workers in (1, 2):
                print(f"round {r + 1}/{args.rounds}: wasinn serve, {workers} worker(s), then native onnxruntime, "
                      f"{workers} process(es)...", file=sys.stderr, flush=True)
                runs.setdefault(("wasinn", workers), []).append(
                    served(broker, workers, args.messages, args.latency_messages))
                runs.setdefault(("native", workers), []).append(native(workers, args.messages))
    rows = {key: {k: statistics.median(run[k] for run in results) for k in ("rate", "p50", "p99")}
            for key, results in runs.items()}
    for workers in (1, 2):
        rows[("wasinn", workers)]["split"] = runs[("wasinn", workers)][-1]["split"]

    print(f"\n{args.messages} photos per burst, {args.latency_messages} one at a time, median of {args.rounds} "
          f"rounds; images/*.png; onnxruntime 1 intra-op thread per worker/process")
    print(f"{'':30} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8}   {'vs native: msgs/s':>17} {'p50':>6}")
    for workers in (1, 2):
        n, w = rows[("native", workers)], rows[("wasinn", workers)]
        print(f"{f'native onnxruntime x{workers}':30} {n['rate']:8.1f} {n['p50']:8.2f} {n['p99']:8.2f}")
        label = f"wasinn serve, {workers} worker{'s' if workers > 1 else ''}"
        print(f"{label:30} {w['rate']:8.1f} {w['p50']:8.2f} {w['p99']:8.2f}   "
              f"{w['rate'] / n['rate']:16.2f}x {w['p50'] / n['p50']:5.2f}x")
    w1, w2 = rows[("wasinn", 1)], rows[("wasinn", 2)]
    n1, n2 = rows[("native", 1)], rows[("native", 2)]
    print(f"\nscaling 1 -> 2 workers: wasinn serve {w2['rate'] / w1['rate']:.2f}x "
          f"(burst split {w2['split']}), native {n2['rate'] / n1['rate']:.2f}x")
    print("wasinn's latency is a full MQTT round trip (publish, broker, worker, broker, subscriber); "
          "native's is the work alone.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

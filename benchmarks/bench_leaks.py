#!/usr/bin/env python3
"""Host memory under resource churn: is RSS flat?

    .venv/bin/python benchmarks/bench_leaks.py [--rounds 5] [--scale 1.0]

Runs, inside one instance of guest/adversary (the loops run in the guest), 100k
tensors, 10k contexts, 10k computes and 1k graphs (each a fresh onnxruntime session:
more distinct models than the host keeps for reuse) created and dropped, then 1k
instances that trap. Each churn is split into rounds; the process RSS is read after
every round. Flat means: after the first round (allocator and caches warming up),
RSS stops growing, and the host's handle tables are back where they started.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "tests"))

import wasinn  # noqa: E402
from wasinn import TensorType, build  # noqa: E402
from wasinn._bindings import WASINN_GUEST_ADVERSARY_GUEST_WORLD  # noqa: E402

from support import models  # noqa: E402  (tests/support/models.py: small ONNX models built in code)
from support.internals import tables  # noqa: E402  (tests/support/internals.py)

CACHE = ROOT / ".cache" / "bench"
MIB = 1 << 20


def rss() -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def trap_rounds(host, component, n: int) -> None:
    with host.instantiate(component) as inst:
        for _ in range(n):
            inst.call("make-filled", [1 << 20], "U8", 1 << 20, 1)  # 1 MiB each, freed by the trap
            try:
                inst.call("forge", "tensor", 1 << 20)  # a handle it never had: the canonical ABI traps
            except wasinn.GuestTrap:
                pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every count (0.1 for a quick look)")
    args = parser.parse_args()

    progress = lambda m: print(f"  .. {m}", file=sys.stderr, flush=True)  # noqa: E731
    wasm = build.build_cached(build.guest_files(ROOT / "guest" / "adversary"), name="adversary",
                                     world=WASINN_GUEST_ADVERSARY_GUEST_WORLD, cache_dir=CACHE, progress=progress)
    host = wasinn.Host(cache_dir=CACHE, ort_threads=1, progress=progress)
    component = host.load_component(wasm)
    inst = host.instantiate(component)
    graph = inst.call("load", [models.identity(TensorType.FP32)], "onnx", "cpu").payload
    context = inst.call("init-context", graph).payload
    distinct = [models.identity(ty, (n,)) for ty in TensorType for n in (1, 2)]
    base_tables = tables(host)

    churns = [  # name, total count, one round of `k`
        ("tensors (16 B)", 100_000, lambda k: inst.call("churn-tensors", k, 16)),
        ("tensors (1 MiB, bulk path)", 2_000, lambda k: inst.call("churn-tensors", k, MIB)),
        ("contexts", 10_000, lambda k: inst.call("churn-contexts", graph, k)),
        ("computes (in + out tensor)", 10_000,
         lambda k: inst.call("churn-computes", context, "x", [64, 64], "FP32", 64 * 64 * 4, k)),
        ("graphs (fresh sessions)", 1_000, lambda k: inst.call("churn-graphs", distinct, k)),
        ("trapping instances", 1_000, lambda k: trap_rounds(host, component, k)),
    ]
    print(f"{'churn':<28} {'count':>8}  {'RSS MiB after each round':<44} {'growth after round 1':>20}")
    for name, total, run in churns:
        per_round = max(1, int(total * args.scale) // args.rounds)
        start, after = rss(), []
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            failed = run(per_round)
            if failed:
                raise SystemExit(f"{name}: {failed} rounds failed")
            after.append(rss())
        elapsed = time.perf_counter() - t0
        growth = after[-1] - after[0]
        print(f"{name:<28} {per_round * args.rounds:>8}  "
              f"{' '.join(f'{r / MIB:7.1f}' for r in [start, *after]):<44} "
              f"{growth / MIB:+8.1f} MiB ({after[-1] / after[0]:.3f}x)  {elapsed:6.1f} s", flush=True)
    ok = tables(host) == base_tables
    print(f"host tables (objects, sessions, guest memories): {base_tables} before, {tables(host)} after"
          f" -> {'flat' if ok else 'LEAK'}")
    inst.close()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

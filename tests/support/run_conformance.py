#!/usr/bin/env python3
"""The ONNX backend node test suite (from the `onnx` wheel, ~1.9k cases) natively on
onnxruntime and through a guest component on wasinn; prints the outcome table.

    .venv/bin/python tests/support/run_conformance.py [-k SUBSTRING] [--list OUTCOME] [--json FILE]

Through wasinn each case goes the guest path (tests/support/conformance.py): the guest loads
the model bytes, builds each input from its bytes, computes and reads every output.
Outcomes: pass; fail (ran, results differ: onnx's tolerance, rtol 1e-3 atol 1e-7);
error (the run failed); unsupported (the model did not load); not expressible in
wasi:nn (a value that is not a tensor of FP16/FP32/FP64/BF16/U8/I32/I64). Exits 1
if a case native passes, and wasi:nn can express, does not pass through wasinn.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "tests"))

import wasinn  # noqa: E402
from wasinn import build  # noqa: E402
from wasinn._bindings import WASINN_GUEST_ADVERSARY_GUEST_WORLD  # noqa: E402

from support import conformance  # noqa: E402  (tests/support/conformance.py)

CACHE = ROOT / ".cache" / "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    parser.add_argument("--list", choices=conformance.OUTCOMES, help="also list the cases wasinn gave this outcome")
    parser.add_argument("--json", help="write every case's outcomes here")
    args = parser.parse_args()
    progress = lambda m: print(f"  .. {m}", file=sys.stderr, flush=True)  # noqa: E731

    wasm = build.build_cached(build.guest_files(ROOT / "guest" / "adversary"), name="adversary",
                                     world=WASINN_GUEST_ADVERSARY_GUEST_WORLD, cache_dir=CACHE, progress=progress)
    host = wasinn.Host(cache_dir=CACHE, ort_threads=1, progress=progress)
    progress("collecting the suite's cases")
    cases = [c for c in conformance.cases() if args.k in c.name]
    start = time.perf_counter()
    with host.instantiate(host.load_component(wasm)) as inst:
        rows = conformance.run(inst, cases, progress)
        traps = inst.instances_started - 1
    print(f"ONNX backend node tests (onnx {conformance.onnx.__version__}, onnxruntime "
          f"{conformance.ort.__version__}): {len(rows)} cases in {time.perf_counter() - start:.0f} s\n")
    print(conformance.table(rows))
    reasons = collections.Counter(r.wasinn.detail for r in rows if r.wasinn.outcome == conformance.NOT_EXPRESSIBLE)
    print("\nnot expressible in wasi:nn, why: " + ", ".join(f"{why} ({n})" for why, n in reasons.most_common()))
    if args.list:
        print(f"\nwasinn {args.list}:")
        for r in rows:
            if r.wasinn.outcome == args.list:
                print(f"  {r.case}: {r.wasinn.detail}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
    bad = [r for r in rows if r.violation]
    for r in bad:
        print(f"VIOLATION {r.case}: native passes, wasinn {r.wasinn.outcome}: {r.wasinn.detail}")
    print(f"\n{len(bad)} cases native passes and wasi:nn can express fail through wasinn; "
          f"{traps} guest traps")
    sys.exit(1 if bad or traps else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Start/stop cycles: does every `wasinn` process exit cleanly?

    .venv/bin/python tests/support/stress_cycles.py [--cycles 300] [--jobs 2]

Each cycle starts `wasinn classify images/chelsea.png` and `wasinn run` of the nn-cli
guest (a model loaded from a preopened directory, one compute, its output printed), and
checks each exits 0 with its output printed: a process killed by a signal at teardown
(SIGSEGV, SIGABRT), one that prints a Rust panic or one that hangs counts as a crash,
one that exits otherwise as a failure. Prints progress every 10 cycles and a summary; exits 1 unless every run was clean. CI runs 30 cycles (tests/test_host_memory.py).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "host"))

import numpy as np  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from wasinn import build  # noqa: E402

CACHE = ROOT / ".cache" / "tests"  # the suite's (tests/support/repo.py): its builds and compiles serve these runs
WASINN = [sys.executable, "-m", "wasinn"]


def prepare(work: pathlib.Path) -> dict[str, list[str]]:
    """The two command lines, and what each must print."""
    nn_cli = build.build_cached(build.guest_files(ROOT / "guest" / "nn-cli"), name="nn-cli",
                                world="wasinn:guest/ml-command", cache_dir=CACHE, progress=print)
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (work / "add.onnx").write_bytes(model.SerializeToString())
    np.arange(6, dtype=np.float32).tofile(work / "x.bin")
    cache = ["--cache-dir", str(CACHE)]
    return {
        "classify": [*WASINN, "classify", str(ROOT / "images" / "chelsea.png"), "--top", "1", *cache],
        "run": [*WASINN, "run", *cache, "--dir", f"{work}::/data", str(nn_cli), "--", "--file", "/data/add.onnx",
                "a=FP32:2,3:/data/x.bin", "b=FP32:2,3:/data/x.bin"],
    }


EXPECT = {"classify": "Egyptian cat", "run": "y\tFP32\t[2, 3]\t0 2 4 6 8"}


def once(kind: str, argv: list[str]) -> tuple[str, int, str]:
    """(kind, 0, "") for a clean run; else a negative code for a crash, positive for a failure."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "host"), PYTHONFAULTHANDLER="1")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return kind, -1, "hung for 120 s"
    if "panicked at" in done.stderr:  # a Rust thread's panic at exit may still end the process with 0
        return kind, -1, f"a panic, exit {done.returncode}: {done.stderr.strip()[-2000:]}"
    if done.returncode == 0 and EXPECT[kind] in done.stdout:
        return kind, 0, ""
    if done.returncode < 0:
        return kind, done.returncode, f"killed by {signal.Signals(-done.returncode).name}: {done.stderr.strip()[-2000:]}"
    why = f"exit {done.returncode}" + ("" if EXPECT[kind] in done.stdout else ", output missing")
    return kind, done.returncode or 1, f"{why}: {done.stderr.strip()[-2000:]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2, help="processes at once (default 2)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        commands = prepare(pathlib.Path(tmp))
        for kind, argv in commands.items():  # first runs build and compile; they are no cycle
            _, code, why = once(kind, argv)
            if code:
                print(f"{kind}: {why}", file=sys.stderr)
                return 1
        start = time.monotonic()
        crashes, failures = 0, 0
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            runs = [pool.submit(once, kind, argv) for _ in range(args.cycles) for kind, argv in commands.items()]
            for i, run in enumerate(runs, 1):
                kind, code, why = run.result()
                crashes += code < 0
                failures += code > 0
                if code:
                    print(f"cycle {(i + 1) // 2}: {kind}: {why}", file=sys.stderr, flush=True)
                if i % 20 == 0:
                    print(f"{i // 2}/{args.cycles} cycles, {crashes} crashes, {failures} failures, "
                          f"{time.monotonic() - start:.0f} s", flush=True)
    print(f"{args.cycles} cycles of {' and '.join(commands)}: {crashes} crashes, {failures} failures "
          f"({time.monotonic() - start:.0f} s, {args.jobs} at once)")
    return 1 if crashes or failures else 0


if __name__ == "__main__":
    sys.exit(main())

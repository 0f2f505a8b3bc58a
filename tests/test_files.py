"""Cache files made once across processes (wasinn/files.py)."""
from __future__ import annotations

import subprocess
import sys

from wasinn.files import making, write_atomic

from support.repo import ROOT

CHILD = """
import pathlib, sys
from wasinn.files import made_once
made_once(pathlib.Path(sys.argv[1]), lambda: b"made by the child", lambda: print("waiting", flush=True))
print("done", flush=True)
"""


def test_a_process_that_finds_the_file_being_made_waits_and_takes_it(tmp_path):
    """What `wasinn.build.build_cached` and the suite's C and JavaScript guests rest on: a
    second process waits for the first one's file instead of making it again."""
    out = tmp_path / "cache" / "guest.wasm"
    with making(out):  # this process is making it
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(out)], stdout=subprocess.PIPE, text=True,
                                 env={"PYTHONPATH": str(ROOT / "host")})
        assert child.stdout.readline() == "waiting\n"
        write_atomic(out, b"made by the first")
    assert child.stdout.readline() == "done\n" and child.wait(30) == 0
    assert out.read_bytes() == b"made by the first"


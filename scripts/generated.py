"""What every generator in scripts/ does with its output: write it, or with --check
show how the committed file drifted from its source and fail (tests run the checks)."""
from __future__ import annotations

import difflib
import pathlib
import sys


def write_or_check(out: pathlib.Path, text: str, *, check: bool, script: str) -> int:
    root = pathlib.Path(__file__).resolve().parent.parent
    if check:
        current = out.read_text() if out.is_file() else ""
        if current != text:
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                       str(out), "generated"))
            print(f"\n{out.relative_to(root)} is out of date: run python scripts/{script}", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    print(f"wrote {out.relative_to(root)}")
    return 0

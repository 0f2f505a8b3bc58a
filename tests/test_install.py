"""`pip install .` (not editable) gives a wasinn that works outside the repo: the bundled
classifier and the classify-cli component build from the package's own copies of wit/,
the guests and the model (scripts/check-install.sh, 30 s with a warm pip cache)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support.repo import ROOT


@pytest.mark.slow
def test_pip_install_then_classify_outside_the_repo():
    proc = subprocess.run([ROOT / "scripts" / "check-install.sh"], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check-install: ok" in proc.stdout

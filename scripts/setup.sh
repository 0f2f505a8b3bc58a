#!/usr/bin/env bash
# Creates .venv and installs wasinn (editable) with its test tools. Safe to run again:
# it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

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
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing wasinn and its dependencies into .venv (first time: a minute or two)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
    # That brought the CPU onnxruntime back beside an opted-in onnxruntime-gpu: swap again.
    if [ -f .venv/.wasinn-gpu ]; then scripts/setup-gpu.sh; fi
    echo "$want" > "$stamp"
fi
scripts/setup-mqtt.sh   # mosquitto for `wasinn serve` (tests, benchmark, README)
scripts/setup-kserve.sh # a KServe model server in .venv-kserve for the remote-backend tests (README)

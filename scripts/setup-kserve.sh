#!/usr/bin/env bash
# Creates .venv-kserve: a KServe model server (the `kserve` package with onnxruntime),
# which the remote-backend tests start on loopback. It lives in its own environment
# because it is a separate deployment, not part of wasinn, and its dependencies
# (kubernetes, grpcio, pandas, an older protobuf...) must not constrain wasinn's.
# Safe to run again: it reinstalls only when the pins below change.
set -euo pipefail
cd -P "$(dirname "$0")/.."  # the real checkout: .venv's scripts name its python by this path

pins="kserve==0.21.0 onnxruntime>=1.20 numpy>=1.26"
python=${PYTHON:-.venv/bin/python}
stamp=.venv-kserve/.installed
want=$(echo "$pins" | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
echo "setup: installing a KServe model server into .venv-kserve (for the remote-backend tests; a minute or two)"
[ -x .venv-kserve/bin/python ] || "$python" -m venv .venv-kserve
# shellcheck disable=SC2086
.venv-kserve/bin/python -m pip install --quiet --disable-pip-version-check $pins
echo "$want" > "$stamp"

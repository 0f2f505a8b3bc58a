#!/usr/bin/env bash
# Opt-in GPU set-up, after scripts/setup.sh: `execution-target gpu` for ONNX models on
# NVIDIA GPUs, through onnxruntime's CUDA provider.
#
# Replaces onnxruntime in .venv with onnxruntime-gpu of the same version (both wheels
# ship the module `onnxruntime`, so only one may be installed; when PyPI has no GPU wheel
# of that version yet, it says so and WASINN_ORT_VERSION=X picks one), with the CUDA
# and cuDNN libraries from PyPI (`onnxruntime-gpu[cuda,cudnn]`, a few GB). The machine
# needs an NVIDIA driver, nothing else. scripts/setup.sh keeps the swap when it
# reinstalls; `scripts/setup-gpu.sh --undo` goes back to the CPU wheel.
#
# OpenVINO's GPU plugin (Intel GPUs) needs no Python change, only the OpenCL driver:
#   apt-get install ocl-icd-libopencl1 intel-opencl-icd
set -euo pipefail
cd -P "$(dirname "$0")/.."  # the real checkout: .venv's scripts name its python by this path
[ -x .venv/bin/python ] || scripts/setup.sh

marker=.venv/.wasinn-gpu
pip() { .venv/bin/python -m pip --quiet --disable-pip-version-check "$@"; }
installed() {  # the installed version of a distribution, or fail
    .venv/bin/python -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null
}

if [ "${1:-}" = "--undo" ]; then
    rm -f "$marker"
    if version=$(installed onnxruntime-gpu); then
        pip uninstall -y onnxruntime-gpu
        pip install "onnxruntime==$version"
        echo "setup-gpu: back to onnxruntime $version (CPU only)"
    fi
    exit 0
fi

if cpu=$(installed onnxruntime); then
    # The GPU wheel may lag the CPU one; WASINN_ORT_VERSION picks a version it has, which
    # the marker remembers for setup.sh's reinstalls.
    version=${WASINN_ORT_VERSION:-$(cat "$marker" 2>/dev/null || echo "$cpu")}
    available=$(.venv/bin/python -m pip index versions onnxruntime-gpu 2>/dev/null | sed -n 's/^Available versions: //p')
    if ! tr -d ' ' <<<"$available" | tr ',' '\n' | grep -qx "$version"; then
        echo "setup-gpu: onnxruntime-gpu $version is not on PyPI (it has: ${available:-nothing reachable});" \
             "run WASINN_ORT_VERSION=${available%%,*} scripts/setup-gpu.sh to use that version" >&2
        exit 1
    fi
    echo "setup-gpu: replacing onnxruntime $cpu with onnxruntime-gpu $version and CUDA from PyPI (a few GB)"
    pip uninstall -y onnxruntime
    pip install "onnxruntime-gpu[cuda,cudnn]==$version"
    # Uninstalling onnxruntime also removed the files the two wheels share: put them back.
    pip install --force-reinstall --no-deps "onnxruntime-gpu==$version"
    echo "$version" > "$marker"
fi

.venv/bin/python - <<'PY'
import onnxruntime as ort
providers = ort.get_available_providers()
print(f"setup-gpu: onnxruntime {ort.__version__} providers: {', '.join(providers)}")
if "CUDAExecutionProvider" not in providers:
    raise SystemExit("setup-gpu: this onnxruntime has no CUDAExecutionProvider")
PY
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup-gpu: GPUs: $(nvidia-smi -L | tr '\n' ' ')"
else
    echo "setup-gpu: no NVIDIA GPU answers (nvidia-smi): loads for target gpu will fail with unsupported-operation"
fi

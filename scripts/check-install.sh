#!/usr/bin/env bash
# What a user gets from `pip install`: installs this checkout (not editable) into a fresh
# venv outside the repo, then, from a directory outside the repo, classifies the sample
# photos with `wasinn classify` and with the portable classify-cli component on
# `wasinn run`. Each must name the photos' known classes. Needs PyPI (or a pip
# configuration pointing at a mirror) for the dependencies.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "check-install: copying the checkout (pip would write build/ and *.egg-info into it)"
mkdir "$work/src"
tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./.cache --exclude=./build \
    --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$work/src" -xf -
echo "check-install: pip install (not editable) into a fresh venv"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$work/src"
rm -rf "$work/src"  # from here on, nothing may come from a source tree

mkdir "$work/photos"
cp "$repo"/images/*.png "$work/photos/"
cd "$work"
export XDG_CACHE_HOME="$work/cache"

expect() {  # expect OUTPUT PHOTO LABEL: LABEL is PHOTO's first prediction
    if ! grep -A1 -x "$2" <<<"$1" | grep -q "^  1\. $3 "; then
        echo "check-install: expected $2 -> $3, got:" >&2
        echo "$1" >&2
        exit 1
    fi
}

echo "check-install: wasinn classify"
out=$("$work/venv/bin/wasinn" classify --top 1 photos/chelsea.png photos/coffee.png photos/camera.png)
echo "$out"
expect "$out" photos/chelsea.png "Egyptian cat"
expect "$out" photos/coffee.png espresso
expect "$out" photos/camera.png tripod

echo "check-install: classify-cli on wasinn run -S nn-graph=onnx::DIR"
"$work/venv/bin/python" -m wasinn.apps.classify_cli "$work/cli" >/dev/null
out=$("$work/venv/bin/wasinn" run -S nn -S "nn-graph=onnx::$work/cli/onnx/efficientnet-lite0" \
      --dir photos::/images "$work/cli/classify-cli.wasm" --top 1 /images/chelsea.png /images/coffee.png /images/camera.png)
echo "$out"
expect "$out" /images/chelsea.png "Egyptian cat"
expect "$out" /images/coffee.png espresso
expect "$out" /images/camera.png tripod
echo "check-install: ok"

#!/usr/bin/env bash
# The foreign toolchains the test suite builds guests with, from source:
# - C: Debian's clang, lld, wasi-libc and the wasm32 compiler runtime (core modules and,
#   with wasm-tools and a preview1 adapter, components);
# - JavaScript: componentize-js, and jco for the preview1 adapters, from npm into
#   .cache/npm (pinned in scripts/guest-toolchains/package.json).
# Installs only what is missing; needs root or password-less sudo for apt (CI runs as root).
set -euo pipefail
cd -P "$(dirname "$0")/.."  # the real checkout: .venv's scripts name its python by this path

missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
[ -f /usr/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || missing+=(libclang-rt-14-dev-wasm32)
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup: the C guests need ${missing[*]}; install them with this system's package manager" >&2
        exit 1
    fi
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo -n true 2>/dev/null || { echo "setup: installing ${missing[*]} needs root: sudo apt-get install -y ${missing[*]}" >&2; exit 1; }
        as_root=(sudo -n)
    fi
    echo "setup: installing ${missing[*]} (Debian; the C test guests' toolchain)"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

npm_dir=.cache/npm
want=$(sha256sum scripts/guest-toolchains/package.json | cut -c1-16)
if [ "$(cat "$npm_dir/.installed" 2>/dev/null)" != "$want" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "setup: the JavaScript test guests need node and npm (Debian: apt-get install nodejs npm)" >&2
        exit 1
    fi
    echo "setup: installing componentize-js and jco from npm into $npm_dir (first time: about a minute)"
    mkdir -p "$npm_dir"
    cp scripts/guest-toolchains/package.json "$npm_dir/package.json"
    (cd "$npm_dir" && npm install --no-audit --no-fund --loglevel=error)
    echo "$want" > "$npm_dir/.installed"
fi

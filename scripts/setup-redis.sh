#!/usr/bin/env bash
# Debian's redis-server: the state store that data-flow operators share across hosts
# (pipeline/services/redis_store.py); its tests start a private server on loopback.
# Installs only what is missing; needs root or password-less sudo (CI runs as root,
# without stdin). The Python client (`redis`) is the `serve` extra in pyproject.toml,
# which scripts/setup.sh installs.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: the state-store tests need redis-server; install it with this system's package manager" >&2
    exit 1
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if ! sudo -n true 2>/dev/null; then
        echo "setup: installing redis-server needs root: sudo apt-get install -y redis-server" >&2
        exit 1
    fi
    as_root=(sudo -n)
fi
echo "setup: installing redis-server (Debian)"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends redis-server >/dev/null

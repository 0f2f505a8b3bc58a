#!/usr/bin/env bash
# Debian's mosquitto (the MQTT broker `wasinn serve`'s tests and benchmark start on
# loopback and in network namespaces) and mosquitto-clients (mosquitto_pub/mosquitto_sub,
# used in the README), openssl and iproute2; docker-registry, the OCI registry that the
# data-flow artifact tests push to and pull from on loopback; redis-server, the state store
# data-flow operators share across hosts (its tests start a private server on loopback).
# Installs only what is missing; needs root or password-less sudo (CI runs as root,
# without stdin). The Python side (paho-mqtt, PyYAML, prometheus-client) is the
# `serve` extra in pyproject.toml (redis's client too), which scripts/setup.sh installs.
set -euo pipefail

missing=()
# mosquitto also brings mosquitto_passwd (the tests' password files); openssl makes their
# certificates; iproute2's `ip netns` the network namespaces of the multi-host test.
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then missing+=(mosquitto); fi
if ! command -v mosquitto_pub >/dev/null 2>&1; then missing+=(mosquitto-clients); fi
if ! command -v openssl >/dev/null 2>&1; then missing+=(openssl); fi
if ! command -v ip >/dev/null 2>&1 && [ ! -x /usr/sbin/ip ] && [ ! -x /sbin/ip ]; then missing+=(iproute2); fi
if ! command -v docker-registry >/dev/null 2>&1; then missing+=(docker-registry); fi
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then missing+=(redis-server); fi
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: wasinn serve's tests need ${missing[*]}; install them with this system's package manager" >&2
    exit 1
fi
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if ! sudo -n true 2>/dev/null; then
        echo "setup: installing ${missing[*]} needs root: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    as_root=(sudo -n)
fi
echo "setup: installing ${missing[*]} (Debian)"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

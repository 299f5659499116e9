#!/usr/bin/env bash
# Bring a fresh clone to a working state: .venv with pinned packages, the etcd,
# Redis and InfluxDB server binaries, and generated protobuf stubs.
# Idempotent: every step checks before it acts, so a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMPS=.venv/.stamps

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

find_python() {
    for candidate in "${PYTHON:-}" python3.11 python3.12 python3.13 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

newer_than() {  # newer_than STAMP FILE... : true when any FILE is newer than STAMP (or STAMP absent)
    local stamp=$1; shift
    [ -e "$stamp" ] || return 0
    for f in "$@"; do [ "$f" -nt "$stamp" ] && return 0; done
    return 1
}

# 1. virtualenv and Python packages ------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    PY=$(find_python) || die "Python 3.11 or newer is required (install python3 >= 3.11)"
    say "creating $VENV with $PY"
    "$PY" -m venv "$VENV"
fi
mkdir -p "$STAMPS"
if newer_than "$STAMPS/packages" pyproject.toml constraints.txt; then
    say "installing Python packages (pinned by constraints.txt)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=25.1'
    # A stale egg-info beside the sources would shadow the fresh metadata (entry points of
    # newly added platforms and daemons) for anything that runs with the tree on sys.path.
    rm -rf ./*.egg-info
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -c constraints.txt --group dev -e ".[aws]"
    touch "$STAMPS/packages"
fi

# generated code lives in gen/; a .pth file puts it on the path for python, pytest and edge
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n' "$PWD/gen" > "$SITE/edge_cloud_gen.pth"

# 2. server binaries -----------------------------------------------------------------
missing_debs=()
have() { command -v "$1" >/dev/null 2>&1; }
etcd_ok() { "$VENV/bin/python" -c 'from edge_cloud.localservers import find_binary; find_binary("etcd")' >/dev/null 2>&1; }
etcd_ok || missing_debs+=(etcd-server)
{ [ -n "${EDGE_REDIS_BIN:-}" ] || have redis-server; } || missing_debs+=(redis-server)
{ [ -n "${EDGE_INFLUXD_BIN:-}" ] || have influxd; } || missing_debs+=(influxdb)
if [ ${#missing_debs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && have apt-get; then
        say "installing server packages: ${missing_debs[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        # policy-rc.d keeps Debian from starting system instances: we never use those
        had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
        [ $had_policy = 1 ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        [ $had_policy = 1 ] || chmod +x /usr/sbin/policy-rc.d
        apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
        [ $had_policy = 1 ] || rm -f /usr/sbin/policy-rc.d
    else
        printf 'setup: missing servers; ask an administrator to run:\n' >&2
        printf '  apt-get install %s\n' "${missing_debs[*]}" >&2
        printf '  (or point EDGE_ETCD_BIN / EDGE_REDIS_BIN / EDGE_INFLUXD_BIN at the binaries)\n' >&2
    fi
fi

# 3. generated protobuf code -----------------------------------------------------------
"$VENV/bin/python" scripts/gen_protos.py

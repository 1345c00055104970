#!/usr/bin/env bash
# Installs what Hoard's tests and benchmarks need beyond the Rust toolchain. Idempotent: run it
# as often as you like. Meant to run as root on Debian/Ubuntu (a CI image or a dev container).
#
#   * <repo>/.venv: a Python virtualenv with `moto[server]` (a local S3 the hoard-ufs S3 tests
#     start as `<repo>/.venv/bin/moto_server`) and boto3.
#   * what the build needs (scripts/setup-build-deps.sh: protoc and its well-known protos);
#   * etcd (etcd-server) and etcdctl (etcd-client), nginx (nginx-light), wrk: for the etcd
#     tests and the benchmarks. Installed with apt-get only when a command is missing.
#
# Environment:
#   PYTHON       the interpreter that creates the venv (default: python3)
#   SKIP_APT=1   never call apt-get (install the system packages yourself)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
python="${PYTHON:-python3}"

log() { printf '[setup-test-deps] %s\n' "$*"; }

# shellcheck source=scripts/apt.sh
source "$repo/scripts/apt.sh"
"$repo/scripts/setup-build-deps.sh"

# --- system packages (other crates' tests and the benchmarks) ---------------------------------
missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || missing+=(etcd-client)
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
else
    log "etcd, etcdctl, nginx and wrk already present"
fi

# --- Python venv with moto ---------------------------------------------------------------------
if ! command -v "$python" >/dev/null 2>&1 || ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    log "installing python3 and python3-venv"
    apt_install python3 python3-venv
    python=python3
fi

if [[ -x "$venv/bin/python" ]] && ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    log "$venv is broken (no working pip): recreating it"
    rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv"
    "$python" -m venv "$venv"
fi

if "$venv/bin/python" -c 'import moto.server, boto3, prometheus_client' >/dev/null 2>&1 && [[ -x "$venv/bin/moto_server" ]]; then
    log "moto, boto3 and prometheus-client already installed in $venv"
else
    log "installing moto[server], boto3 and prometheus-client into $venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet 'moto[server]' boto3 prometheus-client
fi

"$venv/bin/moto_server" --help >/dev/null
log "done: moto_server at $venv/bin/moto_server"

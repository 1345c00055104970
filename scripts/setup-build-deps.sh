#!/usr/bin/env bash
# Installs what building Hoard needs beyond the Rust toolchain: protoc and the protobuf
# well-known types (etcd-client compiles etcd's .proto files at build time). Idempotent; uses
# apt-get (as root, or through sudo) only when something is missing. SKIP_APT=1 never calls it.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[setup-build-deps] %s\n' "$*"; }
# shellcheck source=scripts/apt.sh
source "$repo/scripts/apt.sh"

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
[[ -f /usr/include/google/protobuf/descriptor.proto ]] || missing+=(libprotobuf-dev)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
else
    log "protoc and the protobuf well-known types already present"
fi

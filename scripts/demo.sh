#!/usr/bin/env bash
# Hoard's main job on its embedded defaults: builds the release binary, starts a 3-worker
# cluster on this machine over a generated sample dataset, reads it cold, warm and hot through the
# workers (checking every byte against the UFS), prints the figures, and stops the cluster.
# Needs the Rust toolchain; installs protoc for the build if it is missing (apt-get). Extra
# arguments go to `hoard local demo` (e.g. --keep).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-build-deps.sh
cargo run --release --locked -p hoard -- local demo --home "${HOARD_DEMO_HOME:-/tmp/hoard-demo}" "$@"

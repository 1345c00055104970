#!/usr/bin/env bash
# Runs every test from a clean checkout: installs what the tests need (moto in .venv, etcd,
# protoc, nginx, wrk), checks formatting and lints, then runs the whole workspace's tests.
# Tests start their own real processes (workers, moto_server) on loopback ports.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup-test-deps.sh
export HOARD_MOTO_SERVER="${HOARD_MOTO_SERVER:-$PWD/.venv/bin/moto_server}"

echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "[test] cargo test"
cargo test --workspace --all-targets --locked
echo "[test] doc tests"
cargo test --workspace --doc --locked

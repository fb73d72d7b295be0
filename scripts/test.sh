#!/usr/bin/env bash
# Runs the whole test suite on this machine: installs what the tests need (Debian packages, the
# ORAS Python SDK, helm, a kube-apiserver built once and cached), then `cargo test`. The tests
# start their own registries, HTTP servers and Kubernetes API servers on loopback.
#
#   scripts/test.sh [cargo test arguments...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-test-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${GA_CACHE_DIR:-$HOME/.cache/garden-artifacts}/target}"
exec cargo test --locked "$@"

#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration tests against real
# Dovecot servers (installed first when run as root). Sized for a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --test-threads "${MAILFERRY_TEST_THREADS:-2}"

#!/usr/bin/env bash
# A real migration end to end: two local Dovecot servers with sample mailboxes, a full pass,
# new mail, a delta pass, and the report. Installs Debian packages when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --release --bin mailferry --example demo
exec target/release/examples/demo "${1:-demo-out}"

#!/usr/bin/env bash
# The product's whole story with real servers on loopback: two OpenLDAP directories and two
# Dovecot servers whose users come from them; discover, match (automatic, manual, created),
# check, a full pass, new mail and a delta pass, a domain switch in the directories, Refresh
# email addresses, the final delta pass, status and the reports.
#
# usage: scripts/demo.sh [--ui] [DIR]
#   DIR   where the job, its state and the reports stay (default demo-out)
#   --ui  stop before Refresh email addresses and leave the web console (mailferry serve)
#         running on the demo job instead; Ctrl+C stops it and every server.
#
# As root it installs the Debian packages it needs (scripts/install-deps.sh).
set -euo pipefail

args=()
for arg in "$@"; do
  case "$arg" in
    -h | --help)
      sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    --ui) args+=("$arg") ;;
    -*)
      echo "demo.sh: unknown option $arg (see scripts/demo.sh --help)" >&2
      exit 2
      ;;
    # DIR is relative to where the script was started, not to the checkout it moves to.
    *) args+=("$(realpath -m -- "$arg")") ;;
  esac
done

cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --bin mailferry --example demo
exec target/release/examples/demo "${args[@]}"

#!/usr/bin/env bash
# The web console's benchmark (issue 7, "Performance"): a job of 10,000 entries with a ledger
# of 1,000,000 rows, `mailferry serve --release` on it, headless Chromium timing the Jobs tab
# (first load, filter, Ctrl+A), /api/entries and the event stream, and Refresh email
# addresses of all 10,000 against two real slapd. A benchmark, not a test: it prints figures.
#
#   bench/web.sh                  as any user; needs slapd, ldap-utils, chromium, chromium-driver
#
# Environment (all optional): ENTRIES (10000), LEDGER (1000000), LOADS (page loads, 3).
# What it measures and how to read it: bench/README.md, "The web console".
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
log() { printf '[web-bench] %s\n' "$*" >&2; }

busy_pct() {
  local a b
  a=$(head -1 /proc/stat)
  sleep 1
  b=$(head -1 /proc/stat)
  printf '%s\n%s\n' "$a" "$b" | awk '{t = 0; for (i = 2; i <= 9; i++) t += $i; idle = $5 + $6}
    NR == 1 {t0 = t; i0 = idle} NR == 2 {printf "%.0f", 100 * (1 - (idle - i0) / (t - t0))}'
}

# The figures are those of the code in the checkout: the binary is always built first.
cargo build --release --bin mailferry
cargo build --release -p mailferry --example web_bench
BUSY=$(busy_pct)
if ((BUSY > 10)); then
  log "WARNING: the CPUs were ${BUSY}% busy before starting: other work skews every figure"
fi
OUT=bench/results-web-$(date +%Y-%m-%d-%H%M).md
{
  printf '# Web console benchmark, %s\n\n' "$(date '+%Y-%m-%d %H:%M')"
  printf 'Machine: %s cores (%s), release build of %s; CPUs %s%% busy at the start, load %s.\n\n' \
    "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "$(git -C "$REPO" log -1 --format=%h 2>/dev/null || echo '?')" "$BUSY" "$(cut -d' ' -f1-3 /proc/loadavg)"
  target/release/examples/web_bench target/release/mailferry
} | tee "$OUT"
log "written to $OUT"

#!/usr/bin/env bash
# What a distant server costs a pass: the source Dovecot (or the target, FAR=target) behind
# bench/latency-proxy.py, which delays each direction by DELAY_MS (a round trip 2 x DELAY_MS
# longer; throughput not limited).
#
#   bench/latency.sh [DELAY_MS]          default 25 (a 50 ms round trip); as root, on Debian 12
#
# PASS=noop (the default): the lab's corpus copied once, straight, then passes with nothing
# new through the proxy; each must copy nothing. PASS=full: full passes through the proxy,
# each into an emptied target with a fresh state; each must copy the whole corpus.
# The lab's source must hold a corpus already (bench/run.sh fills it; medium by default).
# Environment: PASSES=N passes per build (default 3), alternated between builds;
# MAILFERRY_BASELINE=<binary> another build measured the same way, on the same state;
# FAR=source|target the side behind the proxy (default source); MAILFERRY_SHARED,
# MAILFERRY_LAB, BENCH_OUT as bench/run.sh. Every pass must exit 0. Writes
# bench/results-latency-DATE.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
DELAY_MS=${1:-25}
PASSES=${PASSES:-3}
FAR=${FAR:-source}
PASS=${PASS:-noop}
MF=$REPO/target/release/mailferry
PROXY_PORT=${PROXY_PORT:-11143}

log() { printf '[latency] %s\n' "$*" >&2; }
die() { printf '[latency] ERROR: %s\n' "$*" >&2; exit 1; }
[[ $DELAY_MS =~ ^[0-9]+$ ]] || { sed -n '2,16p' "$0" >&2; exit 2; }
[[ $FAR == source || $FAR == target ]] || die "FAR must be source or target"
[[ $PASS == noop || $PASS == full ]] || die "PASS must be noop or full"
[[ $(id -u) == 0 ]] || die "run as root (the lab starts Dovecot instances)"
SHARED=$(cd "${MAILFERRY_SHARED:-$REPO/../shared}" && pwd) || die "shared folder not found (set MAILFERRY_SHARED)"
LABSH=$SHARED/bench/lab.sh
export MAILFERRY_LAB=${MAILFERRY_LAB:-/tmp/mailferry-lab}
export LAB_LDAP=0
[[ -f $MAILFERRY_LAB/source/corpus.json ]] || die "the lab's source holds no corpus: run bench/run.sh first"

log "building the release binary (incremental)"
(cd "$REPO" && cargo build --release --bin mailferry) >&2
"$LABSH" up >&2
eval "$("$LABSH" env)"
LAB=$MAILFERRY_LAB
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
mapfile -t USERS < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["users"]))' "$LAB/source/corpus.json")

OUT=${BENCH_OUT:-$(mktemp -d /tmp/mailferry-bench-latency-XXXXXX)}
mkdir -p "$OUT"
NMSG=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total_messages"])' "$LAB/source/corpus.json")
FAR_PORT=$SRC_PORT
[[ $FAR == target ]] && FAR_PORT=$DST_PORT
python3 "$BENCH_DIR/latency-proxy.py" "$PROXY_PORT" "$FAR_PORT" "$DELAY_MS" &
PROXY=$!
trap 'kill $PROXY 2>/dev/null || true; wipe_trash' EXIT

# One job; its far side at the proxy (PORT), or at the server itself (PORT empty).
job() {
  local src=$SRC_PORT DST_PORT=$DST_PORT
  if [[ -n $1 && $FAR == source ]]; then src=$1; fi
  if [[ -n $1 && $FAR == target ]]; then DST_PORT=$1; fi
  cat <<EOF
# written by bench/latency.sh
name = "bench-latency"
$(lab_sides "$src")
[mailboxes]
csv = "mailboxes.csv"
[migration]
concurrency = 4
EOF
}
mailboxes_csv "$OUT/mailboxes.csv"
export BENCH_ADMIN_PW=$MASTER_PASS
JOB=$OUT/job.toml

# fresh_target BINARY: an emptied target and a fresh state, the mailboxes matched.
fresh_target() {
  set_aside_target
  "$LABSH" reset-target >&2
  rm -f "$OUT"/job.db*
  "$1" match "$JOB" >/dev/null
}
EXPECT=0
if [[ $PASS == noop ]]; then
  job "" >"$JOB"
  fresh_target "$MF"
  log "copying the corpus once, straight"
  "$MF" migrate "$JOB" --all --json >"$OUT/full.json" || die "the full pass failed: $OUT/full.json"
else
  EXPECT=$NMSG
fi
job "$PROXY_PORT" >"$JOB"

builds=("this:$MF")
[[ -n ${MAILFERRY_BASELINE:-} ]] && builds+=("baseline:$MAILFERRY_BASELINE")
: >"$OUT/passes.tsv"
for ((i = 1; i <= PASSES; i++)); do
  for b in "${builds[@]}"; do
    name=${b%%:*} bin=${b#*:}
    if [[ $PASS == full ]]; then fresh_target "$bin"; fi
    t0=$(date +%s.%N)
    "$bin" migrate "$JOB" --all --json >"$OUT/$name-$i.json" || die "$name pass $i failed: $OUT/$name-$i.json"
    t1=$(date +%s.%N)
    copied=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["copied"])' "$OUT/$name-$i.json")
    [[ $copied == "$EXPECT" ]] || die "$name pass $i copied $copied messages, not $EXPECT"
    awk -v n="$name" -v i="$i" -v a="$t0" -v b="$t1" 'BEGIN {printf "%s\t%s\t%.2f\n", n, i, b - a}' >>"$OUT/passes.tsv"
    log "$name pass $i: $(tail -1 "$OUT/passes.tsv" | cut -f3) s"
  done
done

RESULT=$BENCH_DIR/results-latency-$(date +%Y-%m-%d-%H%M).md
python3 - "$OUT/passes.tsv" "$DELAY_MS" "${#USERS[@]}" "$("$MF" --version)" "${MAILFERRY_BASELINE:-}" "$FAR" "$PASS" "$NMSG" >"$RESULT" <<'EOF'
import sys
from collections import defaultdict
tsv, delay, users, version, baseline, far, kind, nmsg = sys.argv[1:]
near = "target" if far == "source" else "source"
walls = defaultdict(list)
for line in open(tsv):
    name, _, wall = line.split()
    walls[name].append(float(wall))
what = "passes with nothing to do" if kind == "noop" else "full passes"
print(f"# mailferry: {what}, the {far} {2 * int(delay)} ms of round trip away\n")
print(f"- {users} mailboxes of the lab's corpus, 4 at a time; the {far} Dovecot behind "
      f"bench/latency-proxy.py ({delay} ms each way), the {near} on loopback")
print(f"- this build: {version}" + (f"; baseline: {baseline}" if baseline else ""))
if kind == "noop":
    print("- each pass exited 0 and copied nothing; passes alternated between builds\n")
else:
    print(f"- each pass into an emptied target with a fresh state; each exited 0 and copied all "
          f"{int(nmsg):,} messages; passes alternated between builds\n")
print("| build | passes | wall s, each | median s |")
print("| --- | ---: | --- | ---: |")
for name, w in walls.items():
    print(f"| {name} | {len(w)} | {', '.join(f'{x:.2f}' for x in w)} | {sorted(w)[len(w) // 2]:.2f} |")
EOF
log "table written to $RESULT"
cat "$RESULT"

#!/usr/bin/env bash
# mailferry benchmark: mailferry side by side with mbsync and Dovecot's dsync, in one run,
# on the same lab (two Dovecot instances on loopback), and one table at the end.
#
#   bench/run.sh [tiny|small|medium]        default medium; as root, on Debian 12
#
# Environment (all optional):
#   JOBS=N            mailboxes at once: mailferry's [migration] concurrency and the
#                     reference tools' users at a time (default 4)
#   MAILFERRY_SHARED  the shared folder holding bench/lab.sh & co (default <repo>/../shared)
#   MAILFERRY_LAB     the lab directory (default /tmp/mailferry-lab, as lab.sh)
#   BENCH_OUT         where job files, logs and raw results go (default: a new /tmp dir)
#   MAILFERRY_BASELINE another mailferry binary (an older build, say) measured the same way in
#                     the same run, as the row "mailferry-baseline", right after this one
#   ANCHORS=0         leave out mbsync and dsync (a quick side-by-side of two mailferry builds)
#   WATCHERS=N        also measure this build with the web console open in N headless Chromium
#                     windows during its passes (row "mailferry-watched"): `mailferry serve` on
#                     the job, each window on the Jobs tab with its event stream (needs
#                     chromium; issue 7 asks for 2 and at most 3 % slower). Into a target
#                     without fsync, as the rows it is compared with (mailferry-target-fsync-
#                     never before it, mailferry-again after it): the target's fsync on a
#                     virtual disk varies by more than the 3 % to be judged
#   STREAMS=N         the same with N event streams read by curl instead of browsers (row
#                     "mailferry-streamed"): what the console's viewers make `serve` do on the
#                     migration machine, their pages drawn elsewhere (an admin's own laptop)
#   SPLIT=0           leave out the second table, of passes with each server on a CPU of its
#                     own (as if on two machines; bench/README.md, "Two machines' worth")
#   PAIRS=N           after everything else, N more pairs of full passes without fsync, one
#                     right after the other: this build into the target set to mail_fsync =
#                     never, then dsync with -o mail_fsync=never, each verified; a table of
#                     the pairs and their medians (bench/README.md, "Pairs"). On a machine
#                     whose speed drifts, a pair's two passes see the same machine
#
# What it measures and how to read the table: bench/README.md.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PRESET=${1:-medium}
JOBS=${JOBS:-4}
MF=$REPO/target/release/mailferry

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

case $PRESET in
  tiny | small | medium) ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "JOBS must be a positive integer, not '$JOBS'"
[[ $(id -u) == 0 ]] || die "run as root: the lab starts Dovecot instances and apt-get installs what is missing"
# How busy the machine is before this script adds load of its own: the share of CPU time
# not idle over one second (the load average lags by minutes, so it is only recorded).
cpu_busy_pct() {
  local a b
  a=$(head -1 /proc/stat)
  sleep 1
  b=$(head -1 /proc/stat)
  printf '%s\n%s\n' "$a" "$b" | awk '{t = 0; for (i = 2; i <= 9; i++) t += $i; idle = $5 + $6}
    NR == 1 {t0 = t; i0 = idle} NR == 2 {printf "%.0f", 100 * (1 - (idle - i0) / (t - t0))}'
}
BUSY_START=$(cpu_busy_pct)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if ((BUSY_START > 10)); then
  log "WARNING: the CPUs were ${BUSY_START}% busy before starting: other work skews every figure"
fi

SHARED=$(cd "${MAILFERRY_SHARED:-$REPO/../shared}" && pwd) || die "shared folder not found (set MAILFERRY_SHARED)"
LABSH=$SHARED/bench/lab.sh
[[ -x $LABSH ]] || die "$LABSH not found or not executable (set MAILFERRY_SHARED)"
export MAILFERRY_LAB=${MAILFERRY_LAB:-/tmp/mailferry-lab}
export LAB_LDAP=0

# ------------------------------------------------------------------ prerequisites
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_OURS=0
cleanup() {
  if [[ $POLICY_RC_OURS == 1 ]]; then rm -f "$POLICY_RC"; fi
}
trap cleanup EXIT

install_missing() {
  local pkgs=()
  command -v dovecot >/dev/null || pkgs+=(dovecot-core)
  [[ -x /usr/lib/dovecot/imap ]] || pkgs+=(dovecot-imapd)
  command -v mbsync >/dev/null || pkgs+=(isync)
  [[ -x /usr/bin/time ]] || pkgs+=(time)
  command -v openssl >/dev/null || pkgs+=(openssl)
  command -v python3 >/dev/null || pkgs+=(python3)
  [[ ${#pkgs[@]} -gt 0 ]] || return 0
  log "installing ${pkgs[*]}"
  if [[ ! -e $POLICY_RC ]]; then
    # keeps apt from starting the system dovecot service on 143/993
    printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
    chmod 755 "$POLICY_RC"
    POLICY_RC_OURS=1
  fi
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >&2
  cleanup
  POLICY_RC_OURS=0
}

install_missing
# Always build: measuring a stale binary would report figures of other code.
log "building the release binary (incremental)"
(cd "$REPO" && cargo build --release --bin mailferry) >&2

# ------------------------------------------------------------------ lab and corpus
"$LABSH" up
LAB_ENV=$("$LABSH" env)
eval "$LAB_ENV" # SRC_CONF DST_CONF SRC_HOST SRC_PORT DST_HOST DST_PORT MASTER_USER MASTER_PASS ...
LAB=$MAILFERRY_LAB
MANIFEST=$LAB/source/corpus.json

# Each tool gets a target set aside, not deleted (bench/lib.sh says why).
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"

# The source holds the preset's corpus when its manifest names the preset and Dovecot sees
# every message it lists (a reset-source leaves the manifest behind).
corpus_ready() {
  python3 - "$SHARED/bench" "$MANIFEST" "$SRC_CONF" "$PRESET" <<'EOF'
import json, subprocess, sys
bench, manifest, conf, preset = sys.argv[1:]
sys.path.insert(0, bench)
import gen_corpus
try:
    m = json.load(open(manifest))
except (OSError, ValueError):
    sys.exit(1)
if m.get("params") != gen_corpus.PRESETS[preset] or m.get("seed") != 20261123:
    sys.exit(1)
for user, folders in m["users"].items():
    out = subprocess.run(["doveadm", "-c", conf, "mailbox", "status", "-u", user, "-t", "messages", "*"],
                         capture_output=True, text=True).stdout
    if out.strip() != f"messages={sum(f['messages'] for f in folders.values())}":
        sys.exit(1)
EOF
}

if corpus_ready; then
  log "source already holds the $PRESET corpus"
else
  log "generating the $PRESET corpus into the source"
  "$LABSH" reset-source
  python3 "$SHARED/bench/gen_corpus.py" --preset "$PRESET" >&2
  corpus_ready || die "the source does not hold the $PRESET corpus after gen_corpus.py"
fi
mapfile -t USERS < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["users"]))' "$MANIFEST")
read -r NMSG NBYTES < <(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["total_messages"], m["total_bytes"])' "$MANIFEST")

OUT=${BENCH_OUT:-$(mktemp -d "/tmp/mailferry-bench-$PRESET-XXXXXX")}
mkdir -p "$OUT"
RES=$OUT/results.tsv
log "corpus: ${#USERS[@]} users, $NMSG messages, $((NBYTES / 1000000)) MB; JOBS=$JOBS; output in $OUT"

# ------------------------------------------------------------------ measuring
# CPU of a Dovecot instance's children reaped so far (imap, imap-login, auth; lab.sh sets
# service_count = 1, so every imap process exits with its connection and is reaped).
master_ticks() {
  awk '{print $16 + $17}' "/proc/$(cat "$LAB/$1/run/master.pid")/stat"
}

printf 'tool\tphase\tmessages\tbytes\twall_s\tmsgs_per_s\tMB_per_s\tclient_cpu_s\tclient_maxrss_MB\tserver_cpu_s\trc\tverify\n' >"$RES"

# measure TOOL PHASE CMD...: runs CMD under /usr/bin/time -v (stdout in TOOL-PHASE.out), adds
# a row to $RES in bench_anchors.sh's format and sets RC to CMD's exit status.
RC=0
measure() {
  local tag=$1-$2 t0 t1 s0 s1 d0 d1
  s0=$(master_ticks source)
  d0=$(master_ticks target)
  t0=$(date +%s.%N)
  RC=0
  /usr/bin/time -v -o "$OUT/$tag.time" "${@:3}" >"$OUT/$tag.out" 2>"$OUT/$tag.err" || RC=$?
  t1=$(date +%s.%N)
  sleep 0.3 # let the masters reap their imap children
  s1=$(master_ticks source)
  d1=$(master_ticks target)
  # the two servers apart (source, target), for where the server CPU goes
  awk -v s=$((s1 - s0)) -v d=$((d1 - d0)) -v hz="$(getconf CLK_TCK)" \
    'BEGIN {printf "%.2f\t%.2f\n", s / hz, d / hz}' >"$OUT/$tag.servers"
  python3 - "$OUT/$tag.time" "$1" "$2" "$NMSG" "$NBYTES" "$t0" "$t1" "$((s1 - s0 + d1 - d0))" "$RC" >>"$RES" <<'EOF'
import os, re, sys
f, tool, phase, n, b, t0, t1, ticks, rc = sys.argv[1:]
txt = open(f).read()
g = lambda k: float(re.search(re.escape(k) + r":\s*([\d.]+)", txt).group(1))
wall = float(t1) - float(t0)
cpu = g("User time (seconds)") + g("System time (seconds)")
rss = g("Maximum resident set size (kbytes)") / 1024
server = int(ticks) / os.sysconf("SC_CLK_TCK")
n, b = int(n), int(b)
print(f"{tool}\t{phase}\t{n}\t{b}\t{wall:.2f}\t{n / wall:.1f}\t{b / 1e6 / wall:.2f}\t{cpu:.2f}\t{rss:.1f}\t{server:.2f}\t{rc}\t-")
EOF
  log "  $tag: exit $RC, $(tail -1 "$RES" | cut -f5) s"
}

# verify TOOL PHASE: compares source and target; stops the benchmark unless the verdict is OK.
verify() {
  python3 "$SHARED/bench/verify_migration.py" --users "${USERS[@]}" >"$OUT/$1-$2-verify.json" 2>"$OUT/$1-$2-verify.err"
  local verdict
  verdict=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["verdict"])' "$OUT/$1-$2-verify.json")
  log "  verify after the $2 pass: $verdict"
  [[ $verdict == OK ]] || die "verify_migration.py after $1's $2 pass: $(cat "$OUT/$1-$2-verify.json")"
}

# check_pass TOOL PHASE EXPECTED_COPIES: the pass exited 0, failed nothing and copied that many.
check_pass() {
  [[ $RC == 0 ]] || die "$1 migrate ($2 pass) exited $RC: $(tail -5 "$OUT/$1-$2.err")"
  python3 - "$OUT/$1-$2.out" "$3" <<'EOF' || die "$1's $2 pass did not do what was expected (see $OUT/$1-$2.out)"
import json, sys
r = json.load(open(sys.argv[1]))
if r["failed"] != 0 or r["copied"] != int(sys.argv[2]):
    sys.exit(f"copied {r['copied']} (expected {sys.argv[2]}), failed {r['failed']}")
EOF
}

# ------------------------------------------------------------------ mailferry
JOB=$OUT/job.toml
cat >"$JOB" <<EOF
# written by bench/run.sh
name = "bench-$PRESET"

$(lab_sides "$SRC_PORT" $((JOBS > 10 ? JOBS : 10)))

[mailboxes]
csv = "mailboxes.csv"

[migration]
concurrency = $JOBS
EOF
mailboxes_csv "$OUT/mailboxes.csv"
export BENCH_ADMIN_PW=$MASTER_PASS

# watch N [browsers|streams]: `mailferry serve` on the job and N headless Chromium windows on
# its Jobs tab, each with the console's event stream open (or N bare event streams read by
# curl, with the cookie the URL's token gives), until unwatch. The migrate passes run beside
# them, as an admin's terminal would while colleagues watch the console.
WATCH_PIDS=()
watch() {
  local n=$1 mode=${2:-browsers} url i
  "$MF" serve "$JOB" --listen 127.0.0.1:0 >"$OUT/serve.out" 2>"$OUT/serve.err" &
  WATCH_PIDS+=($!)
  for _ in $(seq 50); do
    url=$(sed -n 's/^Open //p' "$OUT/serve.out")
    [[ -n $url ]] && break
    sleep 0.1
  done
  [[ -n $url ]] || die "mailferry serve printed no URL: $(cat "$OUT/serve.err")"
  for i in $(seq "$n"); do
    if [[ $mode == streams ]]; then
      curl -s -c "$OUT/cookies-$i" -o /dev/null "$url" || die "serve refused the token URL"
      curl -s -N -b "$OUT/cookies-$i" -o /dev/null "${url%%/\?*}/api/events" &
      WATCH_PIDS+=($!)
      continue
    fi
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
      --disable-background-networking --disable-component-update --disable-sync \
      --user-data-dir="$OUT/chromium-$i" --remote-debugging-port=0 "$url" \
      >"$OUT/chromium-$i.log" 2>&1 &
    WATCH_PIDS+=($!)
  done
  sleep 3 # the pages loaded and their event streams open
  # What the browsers and serve spent starting and loading the page, taken off at unwatch:
  # the figure that matters is what watching costs while the passes run.
  WATCH_START_BROWSERS=$(browsers_cpu)
  WATCH_START_SERVE=$(pid_cpu "${WATCH_PIDS[0]}")
  local port streams
  port=$(sed -E 's#^http://[^/]*:([0-9]+)/.*#\1#' <<<"$url")
  streams=$(ss -tnH state established "( sport = :$port )" | wc -l)
  log "  watching: serve and $n $mode ($streams connections open to the console)"
}
# utime + stime of /proc/PID/stat (fields 14 and 15 after the command name), in seconds.
pid_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' \
    "/proc/$1/stat" 2>/dev/null || echo 0
}
# The same summed over every process of the watching browsers (browser, renderers, GPU and
# network services): those whose command line names one of this run's profiles.
browsers_cpu() {
  local d
  for d in /proc/[0-9]*; do
    if grep -qa -- "--user-data-dir=$OUT/chromium-" "$d/cmdline" 2>/dev/null; then
      cat "$d/stat" 2>/dev/null || true
    fi
  done | awk -v hz="$(getconf CLK_TCK)" '{sub(/^.*\) /, ""); t += $12 + $13} END {printf "%.2f", t / hz}'
}
unwatch() {
  ((${#WATCH_PIDS[@]})) || return 0
  # What watching cost while the passes ran: CPU seconds of serve and of the browsers, less
  # what they spent before the first pass began (starting, loading the page).
  local serve_s browsers_s
  serve_s=$(awk -v a="$(pid_cpu "${WATCH_PIDS[0]}")" -v b="$WATCH_START_SERVE" 'BEGIN {printf "%.2f", a - b}')
  browsers_s=$(awk -v a="$(browsers_cpu)" -v b="$WATCH_START_BROWSERS" 'BEGIN {printf "%.2f", a - b}')
  log "  watching cost during the passes: serve ${serve_s} s of CPU, the browsers ${browsers_s} s" \
    "(starting and loading the page before them: ${WATCH_START_BROWSERS} s)"
  printf 'serve_cpu_s\t%s\nbrowsers_cpu_s\t%s\nbrowsers_start_cpu_s\t%s\n' "$serve_s" "$browsers_s" \
    "$WATCH_START_BROWSERS" >"$OUT/watch-cost-$WATCH_TOOL.tsv"
  kill "${WATCH_PIDS[@]}" 2>/dev/null || true
  wait "${WATCH_PIDS[@]}" 2>/dev/null || true
  WATCH_PIDS=()
}
trap 'unwatch; wipe_trash; cleanup' EXIT

# pin_servers: every process of the source Dovecot on CPU 0 and of the target on CPU 1, the
# masters and the children they have now (those they fork later inherit the master's), as if
# each server had a machine of its own. `lab.sh restart` starts them unpinned again.
pin_servers() {
  local inst cpu m p
  for inst in source target; do
    cpu=0
    [[ $inst == target ]] && cpu=1
    m=$(cat "$LAB/$inst/run/master.pid")
    for p in $m $(pgrep -P "$m"); do
      taskset -a -p -c "$cpu" "$p" >/dev/null || die "could not pin $inst's process $p to CPU $cpu"
    done
  done
}

# run_mailferry TOOL BINARY [WATCHERS [TARGET_FSYNC [MODE [CPU]]]]: a full pass and a no-change
# pass of one mailferry build, each checked and verified, on an emptied target with a fresh
# state database. TARGET_FSYNC: the target Dovecot's mail_fsync for this run (default: its
# own). CPU: the servers pinned (pin_servers) and mailferry run on this CPU (0 = the source's).
run_mailferry() {
  local tool=$1 bin=$2 watchers=${3:-0} target_fsync=${4:-} mode=${5:-browsers} cpu=${6:-}
  local on=()
  WATCH_TOOL=$tool
  log "== $tool (concurrency $JOBS): $bin"
  set_aside_target
  "$LABSH" reset-target
  "$LABSH" restart # clears Dovecot's penalty for earlier failed logins (and rewrites the configs)
  if [[ -n $target_fsync ]]; then
    echo "mail_fsync = $target_fsync" >>"$LAB/target/etc/dovecot.conf"
    doveadm -c "$LAB/target/etc/dovecot.conf" reload
    sleep 1
    [[ $(doveconf -c "$LAB/target/etc/dovecot.conf" -h mail_fsync) == "$target_fsync" ]] ||
      die "the target did not take mail_fsync = $target_fsync"
  fi
  if [[ -n $cpu ]]; then
    pin_servers
    on=(taskset -c "$cpu")
  fi
  find "$LAB/source/mail" -type f -print0 | xargs -0 cat >/dev/null # warm the page cache
  rm -f "$OUT"/job.db* # a ledger left from an earlier pass would turn the full pass into a delta
  "$bin" match "$JOB" >"$OUT/$tool-match.log" 2>&1 || die "$tool match failed: $(cat "$OUT/$tool-match.log")"
  if ((watchers > 0)); then watch "$watchers" "$mode"; fi
  measure "$tool" full "${on[@]}" "$bin" migrate "$JOB" --all --json
  check_pass "$tool" full "$NMSG"
  verify "$tool" full
  measure "$tool" noop "${on[@]}" "$bin" migrate "$JOB" --all --json
  check_pass "$tool" noop 0
  verify "$tool" noop
  unwatch
}

# run_dsync TAG SCRIPT [CPU]: a full pass of dsync (`SCRIPT backup`, one of the dsync-all.sh
# command lines) on an emptied target, verified. CPU: the servers pinned (pin_servers) and
# dsync run on this CPU.
run_dsync() {
  local tag=$1 script=$2 cpu=${3:-}
  local on=()
  log "== $tag"
  set_aside_target
  "$LABSH" reset-target
  "$LABSH" restart
  if [[ -n $cpu ]]; then
    pin_servers
    on=(taskset -c "$cpu")
  fi
  find "$LAB/source/mail" -type f -print0 | xargs -0 cat >/dev/null # warm the page cache
  measure "$tag" full "${on[@]}" "$script" backup
  [[ $RC == 0 ]] || die "$tag exited $RC (see $OUT/$tag-full.err)"
  verify "$tag" full
}

if [[ ${WATCHERS:-0} != 0 ]]; then
  [[ $WATCHERS =~ ^[1-9][0-9]*$ ]] || die "WATCHERS must be a positive integer, not '$WATCHERS'"
  command -v chromium >/dev/null || die "WATCHERS needs chromium: apt-get install chromium"
fi
if [[ ${STREAMS:-0} != 0 ]]; then
  [[ $STREAMS =~ ^[1-9][0-9]*$ ]] || die "STREAMS must be a positive integer, not '$STREAMS'"
  command -v curl >/dev/null || die "STREAMS needs curl: apt-get install curl"
fi
run_mailferry mailferry "$MF"
# The same build into a target that does not fsync either: like for like with dsync's
# `-o mail_fsync=never` (row mailferry-target-fsync-never).
run_mailferry mailferry-target-fsync-never "$MF" 0 never
# Watched, and then unwatched once more so that drift of the machine shows beside the
# difference; all into the target without fsync, as the row before.
if [[ ${WATCHERS:-0} != 0 ]]; then run_mailferry mailferry-watched "$MF" "$WATCHERS" never; fi
if [[ ${STREAMS:-0} != 0 ]]; then run_mailferry mailferry-streamed "$MF" "$STREAMS" never streams; fi
if [[ ${WATCHERS:-0} != 0 || ${STREAMS:-0} != 0 ]]; then run_mailferry mailferry-again "$MF" 0 never; fi
"$LABSH" restart # the target's own configuration again
if [[ -n ${MAILFERRY_BASELINE:-} ]]; then
  [[ -x $MAILFERRY_BASELINE ]] || die "MAILFERRY_BASELINE=$MAILFERRY_BASELINE is not an executable"
  run_mailferry mailferry-baseline "$MAILFERRY_BASELINE"
fi

# ------------------------------------------------------------------ reference tools
# bench_anchors.sh empties the target and warms the cache before each tool itself.
ANCHOR_RES=$OUT/anchors/results.tsv
if [[ ${ANCHORS:-1} == 0 ]]; then
  log "== mbsync and dsync left out (ANCHORS=0)"
  mkdir -p "$OUT/anchors"
  head -1 "$RES" >"$ANCHOR_RES"
else
  # One bench_anchors.sh per tool, each on a target set aside (not deleted) before it.
  mkdir -p "$OUT/anchors"
  head -1 "$RES" >"$ANCHOR_RES"
  for tool in dsync mbsync; do
    log "== $tool (bench_anchors.sh, JOBS=$JOBS)"
    set_aside_target
    BENCH_OUT=$OUT/anchors-$tool JOBS=$JOBS "$SHARED/bench/bench_anchors.sh" "$PRESET" "$tool" \
      >"$OUT/anchors-$tool.out"
    [[ -s $OUT/anchors-$tool/results.tsv ]] || die "bench_anchors.sh $tool wrote no results (see $OUT)"
    tail -n +2 "$OUT/anchors-$tool/results.tsv" >>"$ANCHOR_RES"
  done
  # dsync once more with Dovecot's default fsync (mail_fsync = optimized, as the target
  # server itself runs): bench_anchors.sh's own command line without `-o mail_fsync=never`.
  DSYNC_DEFAULT=$OUT/dsync-default-fsync.sh
  sed 's/ -o mail_fsync=never//' "$OUT/anchors-dsync/dsync-all.sh" >"$DSYNC_DEFAULT"
  grep -q mail_fsync "$DSYNC_DEFAULT" && die "could not take mail_fsync=never out of $DSYNC_DEFAULT"
  chmod +x "$DSYNC_DEFAULT"
  tag=dsync-j$JOBS-default-fsync
  ((JOBS == 1)) && tag=dsync-default-fsync
  run_dsync "$tag" "$DSYNC_DEFAULT"
  measure "$tag" noop "$DSYNC_DEFAULT" sync
  verify "$tag" noop
fi

# ------------------------------------------------------------------ two machines' worth
# The same full passes with each server on a CPU of its own, as in a real migration where the
# old and the new server are two machines: dsync's imapc migration runs on the new server
# (Dovecot's documented way), so its process shares the target's CPU; mailferry runs on the
# old server's CPU, and once more on the new server's, beside the target. Rows "...-split",
# in a table of their own (bench/README.md, "Two machines' worth").
if [[ ${ANCHORS:-1} != 0 && ${SPLIT:-1} != 0 ]]; then
  run_mailferry mailferry-split "$MF" 0 "" browsers 0
  run_mailferry mailferry-target-fsync-never-split "$MF" 0 never browsers 0
  run_mailferry mailferry-on-target-cpu-target-fsync-never-split "$MF" 0 never browsers 1
  "$LABSH" restart # the target's own configuration again
  for variant in never default; do
    tag=dsync-j$JOBS-split
    script=$OUT/anchors-dsync/dsync-all.sh
    if [[ $variant == default ]]; then
      tag=dsync-j$JOBS-default-fsync-split
      script=$DSYNC_DEFAULT
    fi
    run_dsync "$tag" "$script" 1
  done
  "$LABSH" restart # unpinned
fi

# ------------------------------------------------------------------ alternated pairs
# mailferry and dsync without fsync, one right after the other, PAIRS times (rows
# "...-pairN"): the machine's drift between the runs above is larger than the difference
# the issue asks about, and within a pair both passes see the same machine.
PAIRS=${PAIRS:-0}
[[ $PAIRS =~ ^[0-9]+$ ]] || die "PAIRS must be a number, not '$PAIRS'"
if ((PAIRS > 0)); then
  [[ ${ANCHORS:-1} != 0 ]] || die "PAIRS needs dsync: leave ANCHORS unset"
  for ((i = 1; i <= PAIRS; i++)); do
    run_mailferry "mailferry-target-fsync-never-pair$i" "$MF" 0 never
    run_dsync "dsync-j$JOBS-pair$i" "$OUT/anchors-dsync/dsync-all.sh"
  done
  "$LABSH" restart # the target's own configuration again
fi

# ------------------------------------------------------------------ table
STAMP=$(date +%Y-%m-%d-%H%M)
REPORT=$BENCH_DIR/results-$PRESET-$STAMP.md
python3 - "$RES" "$ANCHOR_RES" "$OUT" "$PRESET" "$JOBS" "$BUSY_START% busy, load average $LOAD_START" "$STAMP" \
  "$("$MF" --version)" "$(dovecot --version)" "$(mbsync --version)" "${#USERS[@]}" >"$REPORT" <<'EOF'
import csv, json, os, platform, sys

res, anchors, out, preset, jobs, load, stamp, mf_ver, dc_ver, mb_ver, nusers = sys.argv[1:]
rows = []
for f in (res, anchors):
    with open(f) as fh:
        rows += list(csv.DictReader(fh, delimiter="\t"))
row = {(r["tool"], r["phase"]): r for r in rows}


def summary(path):  # a verify_migration.py JSON in a few words, as bench_anchors.sh shows it
    v = json.load(open(path))
    s = v["verdict"]
    if s != "OK":
        bad = [f"{k}={v[k]}" for k in ("folders_missing", "msgs_missing", "msgs_extra", "flag_mismatch",
                                        "date_mismatch", "size_mismatch", "body_mismatch") if v[k]]
        s = "DIFF " + " ".join(bad)
    s += f" ({v['msgs_dst']}/{v['msgs_src']} msgs, {v['folders_dst']}/{v['folders_src']} folders"
    if v["subscriptions_missing"]:
        s += f", {v['subscriptions_missing']} subscriptions not copied"
    return s + ")"


builds = [t for t in ("mailferry", "mailferry-target-fsync-never", "mailferry-watched", "mailferry-streamed",
                      "mailferry-again",
                      "mailferry-baseline") if (t, "full") in row]
for (t, phase), r in row.items():  # this script's rows (the anchors' come verified)
    if r["verify"] == "-" and os.path.exists(os.path.join(out, f"{t}-{phase}-verify.json")):
        r["verify"] = summary(os.path.join(out, f"{t}-{phase}-verify.json"))

placed = [t for t in dict.fromkeys(r["tool"] for r in rows) if t.endswith("-split")]  # in run order
paired = [t for t in dict.fromkeys(r["tool"] for r in rows) if "-pair" in t]
tools = builds + sorted({r["tool"] for r in rows if r["tool"] not in builds + placed + paired},
                        key=lambda t: not t.startswith("mbsync"))
r0 = row[("mailferry", "full")]
n, b = int(r0["messages"]), int(r0["bytes"])
print(f"# mailferry benchmark: {preset} preset, {stamp[:10]} {stamp[11:13]}:{stamp[13:]}\n")
print(f"- corpus: `gen_corpus.py --preset {preset}`: {nusers} users, {n:,} messages, {b / 1e6:,.1f} MB, Maildir")
print(f"- machine: {os.cpu_count()} cores, {platform.machine()}, kernel {platform.release()}; "
      f"when run.sh started: {load}")
print(f"- versions: {mf_ver}, Dovecot {dc_ver.split()[0]}, {mb_ver}")
print(f"- {jobs} mailboxes at once: mailferry `concurrency = {jobs}`; mbsync and dsync through `xargs -P {jobs}`")
print("- loopback, plain IMAP, warm page cache, target emptied before each tool (its files moved aside, not deleted)\n")
print("| tool | full wall s | msgs/s | MB/s | client CPU s | server CPU s | client max RSS MB | no-op wall s |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for t in tools:
    f = row[(t, "full")]
    noop = row[(t, "noop")]["wall_s"]
    if (t, "noop-backup") in row:
        noop = f"sync -1: {noop}; backup: {row[(t, 'noop-backup')]['wall_s']}"
    print(f"| {t} | {f['wall_s']} | {float(f['msgs_per_s']):,.0f} | {f['MB_per_s']} | {f['client_cpu_s']} | "
          f"{f['server_cpu_s']} | {float(f['client_maxrss_MB']):.0f} | {noop} |")

print("\nclient + server CPU s, full pass: " + "; ".join(
    f"{t} {float(row[(t, 'full')]['client_cpu_s']) + float(row[(t, 'full')]['server_cpu_s']):.2f}" for t in tools))
split = [(t, open(os.path.join(out, f"{t}-full.servers")).read().split()) for t in builds
         if os.path.exists(os.path.join(out, f"{t}-full.servers"))]
if split:
    print("server CPU s of the full pass, source + target: " + "; ".join(
        f"{t} {s} + {d}" for t, (s, d) in split))
mw = float(r0["wall_s"])
print("mailferry's full wall time relative to: " + "; ".join(
    f"{t} {mw / float(row[(t, 'full')]['wall_s']):.2f}x" for t in tools[1:]) + " (below 1 = mailferry faster)")

print("\nVerification (`verify_migration.py`), after the full pass / after the no-op pass:\n")
for t in tools:
    phases = [p for p in ("full", "noop", "noop-backup") if (t, p) in row]
    print(f"- {t}: " + " / ".join(row[(t, p)]["verify"] for p in phases))
    rcs = {row[(t, p)]["rc"] for p in phases}
    if rcs != {"0"}:
        print(f"  (exit statuses: {', '.join(row[(t, p)]['rc'] for p in phases)})")

for t in builds:
    for phase in ("full", "noop"):
        m = json.load(open(os.path.join(out, f"{t}-{phase}.out")))
        print(f"\n{t}'s own report, {phase} pass (`migrate --json`): copied {m['copied']:,}, "
              f"bytes {m['bytes']:,}, seconds {m['seconds']:.2f}, peak RSS {m['peak_rss_bytes'] / 2**20:.0f} MB", end="")
if placed:
    print("\n\n## Two machines' worth: each server on a CPU of its own\n")
    print("The source Dovecot pinned to CPU 0 and the target to CPU 1, as if each were a machine; "
          "dsync runs on the target's CPU (its imapc migration runs on the new server), mailferry on the "
          "source's unless the row says otherwise. Full passes only; mail_fsync as the row names it.\n")
    print("| tool | full wall s | msgs/s | CPU 0 s (source side) | CPU 1 s (target side) | verified |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for t in placed:
        f = row[(t, "full")]
        s_cpu, d_cpu = (float(x) for x in open(os.path.join(out, f"{t}-full.servers")).read().split())
        c = float(f["client_cpu_s"])
        on_target = t.startswith("dsync") or "on-target-cpu" in t
        cpu0, cpu1 = (s_cpu, d_cpu + c) if on_target else (s_cpu + c, d_cpu)
        print(f"| {t} | {f['wall_s']} | {float(f['msgs_per_s']):,.0f} | {cpu0:.2f} | {cpu1:.2f} | {f['verify']} |")
    pairs = [(a, d) for a, d in (("mailferry-target-fsync-never-split", f"dsync-j{jobs}-split"),
                                 ("mailferry-on-target-cpu-target-fsync-never-split", f"dsync-j{jobs}-split"),
                                 ("mailferry-split", f"dsync-j{jobs}-default-fsync-split"))
             if (a, "full") in row and (d, "full") in row]
    print("\n" + "; ".join(
        f"{a} against {d}: {float(row[(d, 'full')]['wall_s']) / float(row[(a, 'full')]['wall_s']):.2f}x "
        f"dsync's wall time" for a, d in pairs) + " (above 1 = mailferry faster)", end="")
npairs = sum(1 for t in paired if t.startswith("mailferry"))
if npairs:
    import statistics
    print("\n\n## Pairs: mailferry and dsync without fsync, one right after the other\n")
    print("Each pair: this build into the target set to `mail_fsync = never`, then dsync with "
          "`-o mail_fsync=never`, full passes on an emptied target, each verified. The first row is the "
          "main table's two passes, which other runs separate.\n")
    print("| pair | mailferry wall s | dsync wall s | dsync's wall ÷ mailferry's | mailferry CPU s in all "
          "| dsync CPU s in all | verified |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    cpu = lambda r: float(r["client_cpu_s"]) + float(r["server_cpu_s"])
    ratios, walls = [], ([], [])
    rows_of = [("main table", "mailferry-target-fsync-never", f"dsync-j{jobs}")] + [
        (str(i), f"mailferry-target-fsync-never-pair{i}", f"dsync-j{jobs}-pair{i}") for i in range(1, npairs + 1)]
    for name, a, d in rows_of:
        if (a, "full") not in row or (d, "full") not in row:
            continue
        fa, fd = row[(a, "full")], row[(d, "full")]
        ratio = float(fd["wall_s"]) / float(fa["wall_s"])
        if name != "main table":
            ratios.append(ratio)
            walls[0].append(float(fa["wall_s"]))
            walls[1].append(float(fd["wall_s"]))
        print(f"| {name} | {fa['wall_s']} | {fd['wall_s']} | {ratio:.2f} | {cpu(fa):.2f} | {cpu(fd):.2f} | "
              f"{fa['verify'].split(' (')[0]} / {fd['verify'].split(' (')[0]} |")
    of_pairs = "Medians of the {} pairs".format(len(ratios)) if len(ratios) > 1 else "The pair"
    print(f"\n{of_pairs}: mailferry {statistics.median(walls[0]):.2f} s, dsync "
          f"{statistics.median(walls[1]):.2f} s; dsync's wall ÷ mailferry's {statistics.median(ratios):.2f} "
          f"(from {min(ratios):.2f} to {max(ratios):.2f}; above 1 = mailferry faster)", end="")
for tool, who in (("mailferry-watched", "serve and the browsers"), ("mailferry-streamed", "serve and curl")):
    cost = os.path.join(out, f"watch-cost-{tool}.tsv")
    if not (os.path.exists(cost) and (tool, "full") in row):
        continue
    c = dict(line.rstrip("\n").split("\t") for line in open(cost))
    # Against the unwatched passes into the same target without fsync, before and after.
    w = float(row[(tool, "full")]["wall_s"])
    unwatched = [float(row[(t, "full")]["wall_s"]) for t in ("mailferry-target-fsync-never", "mailferry-again")
                 if (t, "full") in row]
    a = sum(unwatched) / len(unwatched)
    print(f"\n\n{tool} ({who} on this machine, during the full and no-op passes): "
          f"serve {c['serve_cpu_s']} s of CPU, the browsers {c['browsers_cpu_s']} s "
          f"(and {c['browsers_start_cpu_s']} s starting and loading the page before the passes); "
          f"the full pass {w:.2f} s against {a:.2f} s unwatched, the mean of "
          f"{' and '.join(f'{u:.2f} s' for u in unwatched)} ({100 * (w / a - 1):+.1f} %), all into the target "
          f"without fsync", end="")
print(f"\n\nRaw figures, logs, job files and configs: `{out}`")
EOF
echo
cat "$REPORT"
log "table written to $REPORT"

#!/usr/bin/env bash
# Issue 8's scaling benchmark: one job shared by several `mailferry migrate` processes, with
# the state in SQLite or in a real PostgreSQL 15, on the lab's two Dovecot servers.
#
#   bench/scale.sh [tiny|small|medium]        default medium; as root, on Debian 12
#
# Rows, each a full pass of the whole corpus onto an emptied target with a fresh state:
#   sqlite   1 process  concurrency 4 and 8   (one machine, the embedded default)
#   postgres 1 process  concurrency 4         (PostgreSQL's cost beside sqlite's 1 x 4)
#   postgres 1, 2 and 4 processes of concurrency 2 (the work shared through leases)
# The processes of a row start together with `migrate --all`; the wall time runs from the
# first start to the last exit. A row counts only if every process exited 0, the processes'
# `copied` add up to exactly the corpus (no message copied twice) and verify_migration.py
# finds the target identical. Then, from PostgreSQL: the ledger's rows and bytes (table and
# indexes, per row; a pass writes one row per message, so its msgs/s), and what one database
# sustains: `ledger_bench` (crates/cli/examples) writing intents and completions in groups of
# 128 through the store port, as passes do, from 1, 4 and 8 writers for 10 s each.
#
# PostgreSQL runs with its default durability (fsync, synchronous commit), in $OUT/pg, as
# the system user postgres, on 127.0.0.1:$PG_PORT (default 25432).
# Each row also records the CPU seconds PostgreSQL's processes used during it, and those of
# the whole machine (from /proc/stat), so a row shows what the database took from the cores.
# Environment: MAILFERRY_SHARED, MAILFERRY_LAB, BENCH_OUT, PG_PORT, as bench/run.sh;
# PG_STATS=1 loads pg_stat_statements and writes each PostgreSQL row's statements by time
# ($OUT/NAME-statements.tsv, with the transactions committed).
# ROWS="sqlite-1x4 postgres-1x4" runs only those rows (ledger_bench runs on the jobs of the
# rows sqlite-1x8 and postgres-4x2, each only when that row ran); a row named more than once
# runs that often, and the comparison of the two 1 x 4 rows takes the means.
# The target is emptied by moving its messages aside (bench/lib.sh: a deleted store slows the
# next pass on this machine's ext4), and a sync ends each row's writes before the next.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
PRESET=${1:-medium}
MF=$REPO/target/release/mailferry
PG_PORT=${PG_PORT:-25432}
PGBIN=/usr/lib/postgresql/15/bin

log() { printf '[scale] %s\n' "$*" >&2; }
die() { printf '[scale] ERROR: %s\n' "$*" >&2; exit 1; }
case $PRESET in tiny | small | medium) ;; *) sed -n '2,20p' "$0" >&2; exit 2 ;; esac
[[ $(id -u) == 0 ]] || die "run as root (the lab starts Dovecot instances)"
[[ -x $PGBIN/postgres ]] || die "PostgreSQL 15 is missing: scripts/install-deps.sh (apt-get install postgresql)"
id postgres >/dev/null 2>&1 || die "no system user postgres: apt-get install postgresql"
SHARED=$(cd "${MAILFERRY_SHARED:-$REPO/../shared}" && pwd) || die "shared folder not found (set MAILFERRY_SHARED)"
LABSH=$SHARED/bench/lab.sh
export MAILFERRY_LAB=${MAILFERRY_LAB:-/tmp/mailferry-lab}
export LAB_LDAP=0

busy=$(awk '{t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6}' <(head -1 /proc/stat); sleep 1
  awk '{t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6}' <(head -1 /proc/stat))
BUSY_START=$(awk 'NR == 1 {t0 = $1; i0 = $2} NR == 2 {printf "%.0f", 100 * (1 - ($2 - i0) / ($1 - t0))}' <<<"$busy")
((BUSY_START <= 10)) || log "WARNING: the CPUs were ${BUSY_START}% busy before starting: other work skews every figure"

log "building the release binary (incremental)"
(cd "$REPO" && cargo build --release --bin mailferry && cargo build --release -p mailferry --example ledger_bench) >&2
LEDGER_BENCH=$REPO/target/release/examples/ledger_bench
"$LABSH" up >&2
eval "$("$LABSH" env)"
LAB=$MAILFERRY_LAB
# Each row gets a target set aside, not deleted (bench/lib.sh says why).
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
MANIFEST=$MAILFERRY_LAB/source/corpus.json
if ! python3 -c 'import json,sys; sys.path.insert(0, sys.argv[1]); import gen_corpus
m = json.load(open(sys.argv[2])); sys.exit(m.get("params") != gen_corpus.PRESETS[sys.argv[3]])' \
  "$SHARED/bench" "$MANIFEST" "$PRESET" 2>/dev/null; then
  log "generating the $PRESET corpus into the source"
  "$LABSH" reset-source >&2
  python3 "$SHARED/bench/gen_corpus.py" --preset "$PRESET" >&2
fi
mapfile -t USERS < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["users"]))' "$MANIFEST")
read -r NMSG NBYTES < <(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(m["total_messages"], m["total_bytes"])' "$MANIFEST")

OUT=${BENCH_OUT:-$(mktemp -d "/tmp/mailferry-scale-$PRESET-XXXXXX")}
mkdir -p "$OUT"
chmod 755 "$OUT"
log "corpus: ${#USERS[@]} users, $NMSG messages, $((NBYTES / 1000000)) MB; output in $OUT"

# ------------------------------------------------------------------ PostgreSQL
PGDATA=$OUT/pg
PG_PASSWORD=scale-$RANDOM$RANDOM
pg() { runuser -u postgres -- "$@"; }
stop_pg() { [[ -f $PGDATA/postmaster.pid ]] && pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true; }
trap 'stop_pg; wipe_trash' EXIT
mkdir -p "$PGDATA" && chown postgres "$PGDATA"
printf '%s\n' "$PG_PASSWORD" >"$OUT/pgpw" && chown postgres "$OUT/pgpw" && chmod 600 "$OUT/pgpw"
pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=scram-sha-256 --pwfile="$OUT/pgpw" >"$OUT/initdb.log" 2>&1 ||
  die "initdb failed: $(tail -5 "$OUT/initdb.log")"
pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
  -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGDATA${PG_STATS:+ -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on}" start >/dev/null ||
  die "PostgreSQL did not start: $(tail -5 "$PGDATA/server.log")"
psql_do() { PGPASSWORD=$PG_PASSWORD "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -qAt "$@"; }
export MAILFERRY_SCALE_PG_PW=$PG_PASSWORD
log "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT (fsync and synchronous_commit: $(psql_do -d postgres -c 'show fsync') / $(psql_do -d postgres -c 'show synchronous_commit'))"

# ------------------------------------------------------------------ the job
# write_job NAME STATE CONCURRENCY
write_job() {
  local state_lines=$2
  cat >"$OUT/$1.toml" <<EOF
# written by bench/scale.sh
name = "scale-$1"
$state_lines

$(lab_sides "$SRC_PORT" 16)

[mailboxes]
csv = "mailboxes.csv"

[migration]
concurrency = $3
EOF
}
mailboxes_csv "$OUT/mailboxes.csv"
export BENCH_ADMIN_PW=$MASTER_PASS

RES=$OUT/results.tsv
printf 'store\tprocesses\tconcurrency\twall_s\tmsgs_per_s\tcopied\tledger_rows\tledger_bytes\tverify\tpg_cpu_s\tall_cpu_s\n' >"$RES"

# CPU seconds of PostgreSQL so far: the postmaster with its reaped children (each connection's
# backend ends with it), and its live children.
pg_cpu() {
  local pm own live
  pm=$(head -1 "$PGDATA/postmaster.pid")
  own=$(awk '{sub(/^.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$pm/stat")
  live=$(for c in $(pgrep -P "$pm"); do
    awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$c/stat" 2>/dev/null || true
  done | awk '{t += $1} END {print t + 0}')
  awk -v a="$own" -v b="$live" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (a + b) / hz}'
}
# CPU seconds the whole machine has spent busy (not idle, not waiting for I/O) since boot.
all_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '/^cpu / {printf "%.2f", ($2 + $3 + $4 + $7 + $8) / hz}' /proc/stat
}

# row STORE PROCESSES CONCURRENCY
row() {
  local store=$1 n=$2 c=$3 name="$1-$2x$3" state t0 t1 i rc=0 copied=0 pids=()
  log "== $store: $n process(es) of concurrency $c"
  set_aside_target
  "$LABSH" reset-target >&2
  "$LABSH" restart >&2
  find "$MAILFERRY_LAB/source/mail" -type f -print0 | xargs -0 cat >/dev/null
  if [[ $store == postgres ]]; then
    psql_do -d postgres -c "DROP DATABASE IF EXISTS scale" -c "CREATE DATABASE scale"
    if [[ -n ${PG_STATS:-} ]]; then
      psql_do -d scale -c "CREATE EXTENSION pg_stat_statements" -c "SELECT pg_stat_statements_reset()" >/dev/null
    fi
    state="state = \"postgres://postgres@127.0.0.1:$PG_PORT/scale?sslmode=disable\"
state_password = { env = \"MAILFERRY_SCALE_PG_PW\" }"
  else
    rm -f "$OUT/$name.db"*
    state="state = \"sqlite://$name.db\""
  fi
  write_job "$name" "$state" "$c"
  "$MF" match "$OUT/$name.toml" >"$OUT/$name-match.log" 2>&1 || die "match failed: $(cat "$OUT/$name-match.log")"
  local pg0 all0
  pg0=$(pg_cpu)
  all0=$(all_cpu)
  t0=$(date +%s.%N)
  for i in $(seq "$n"); do
    "$MF" migrate "$OUT/$name.toml" --all --json >"$OUT/$name-$i.out" 2>"$OUT/$name-$i.err" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || rc=$?; done
  t1=$(date +%s.%N)
  local pg_s all_s
  pg_s=$(awk -v a="$(pg_cpu)" -v b="$pg0" 'BEGIN {printf "%.2f", a - b}')
  all_s=$(awk -v a="$(all_cpu)" -v b="$all0" 'BEGIN {printf "%.2f", a - b}')
  ((rc == 0)) || die "a migrate of $name exited $rc: $(tail -3 "$OUT/$name"-*.err)"
  for i in $(seq "$n"); do
    copied=$((copied + $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["copied"])' "$OUT/$name-$i.out")))
  done
  ((copied == NMSG)) || die "$name: the processes copied $copied in all, the corpus holds $NMSG"
  python3 "$SHARED/bench/verify_migration.py" --users "${USERS[@]}" >"$OUT/$name-verify.json" 2>"$OUT/$name-verify.err"
  local verdict rows=- bytes=-
  verdict=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["verdict"])' "$OUT/$name-verify.json")
  [[ $verdict == OK ]] || die "$name: verify_migration.py: $(cat "$OUT/$name-verify.json")"
  if [[ $store == postgres ]]; then
    rows=$(psql_do -d scale -c "SELECT count(*) FROM ledger")
    if [[ -n ${PG_STATS:-} ]]; then
      # Where the database's time went in this row: its statements by total time, and the
      # transactions committed.
      {
        psql_do -d scale -F $'\t' -c "SELECT 'transactions committed', xact_commit FROM pg_stat_database WHERE datname = 'scale'"
        psql_do -d scale -F $'\t' -c "SELECT 'ledger updates, heap-only', n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'ledger'"
        psql_do -d scale -F $'\t' -c "SELECT calls, round(total_exec_time::numeric, 1) AS exec_ms,
            round(total_plan_time::numeric, 1) AS plan_ms, rows,
            left(regexp_replace(query, '\s+', ' ', 'g'), 160) FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'scale')
            ORDER BY total_exec_time + total_plan_time DESC LIMIT 25"
      } >"$OUT/$name-statements.tsv"
      log "  statements: $OUT/$name-statements.tsv"
    fi
    bytes=$(psql_do -d scale -c "SELECT pg_total_relation_size('ledger')")
  fi
  awk -v s="$store" -v n="$n" -v c="$c" -v t0="$t0" -v t1="$t1" -v m="$NMSG" -v cp="$copied" \
    -v r="$rows" -v b="$bytes" -v v="$verdict" -v pg="$pg_s" -v all="$all_s" \
    'BEGIN {w = t1 - t0; printf "%s\t%s\t%s\t%.2f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\n", s, n, c, w, m / w, cp, r, b, v, pg, all}' >>"$RES"
  log "  $name: $(tail -1 "$RES" | cut -f4) s, copied $copied, verify $verdict, PostgreSQL CPU $pg_s s of $all_s s"
}

ROWS=${ROWS:-sqlite-1x4 postgres-1x4 sqlite-1x8 postgres-1x2 postgres-2x2 postgres-4x2}
for r in $ROWS; do
  [[ $r =~ ^(sqlite|postgres)-([1-9][0-9]*)x([1-9][0-9]*)$ ]] || die "ROWS: '$r' is not STORE-NxC"
  row "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}"
done

# What one database sustains: the jobs' entries exist (each row matched them); the benchmark's
# rows go into a folder no pass has.
LEDGER_RES=$OUT/ledger-bench.tsv
printf 'store\twriters\trows_per_s\n' >"$LEDGER_RES"
for store_job in "sqlite:$OUT/sqlite-1x8.toml" "postgres:$OUT/postgres-4x2.toml"; do
  [[ -f ${store_job#*:} ]] || continue # a row left out by ROWS
  for w in 1 4 8; do
    ((w <= ${#USERS[@]})) || continue # one entry per writer
    line=$("$LEDGER_BENCH" "${store_job#*:}" "$w" 10 128) || die "ledger_bench failed on ${store_job%%:*}"
    rate=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rows_per_s"])' "$line")
    printf '%s\t%s\t%s\n' "${store_job%%:*}" "$w" "$rate" >>"$LEDGER_RES"
    log "  ledger_bench ${store_job%%:*}, $w writers: $rate rows/s"
  done
done

STAMP=$(date +%Y-%m-%d-%H%M)
REPORT=$BENCH_DIR/results-scale-$PRESET-$STAMP.md
python3 - "$RES" "$PRESET" "$STAMP" "$("$MF" --version)" "$(dovecot --version)" "$BUSY_START" "$NMSG" "$NBYTES" "$OUT" "$LEDGER_RES" >"$REPORT" <<'EOF'
import csv, os, platform, sys
res, preset, stamp, mf, dc, busy, n, b, out, ledger = sys.argv[1:]
rows = list(csv.DictReader(open(res), delimiter="\t"))
print(f"# mailferry scaling benchmark: {preset} preset, {stamp[:10]} {stamp[11:13]}:{stamp[13:]}\n")
print(f"- corpus: {int(n):,} messages, {int(b) / 1e6:,.1f} MB; {mf}; Dovecot {dc.split()[0]}; PostgreSQL 15 with its default durability")
print(f"- machine: {os.cpu_count()} cores, kernel {platform.release()}; CPUs {busy}% busy when it started\n")
print("| state | processes × concurrency | wall s | msgs/s | copied (all processes) | verify | PostgreSQL CPU s | machine CPU s |")
print("| --- | --- | ---: | ---: | ---: | --- | ---: | ---: |")
for r in rows:
    print(f"| {r['store']} | {r['processes']} × {r['concurrency']} | {r['wall_s']} | {r['msgs_per_s']} | {int(r['copied']):,} | {r['verify']} "
          f"| {r['pg_cpu_s']} | {r['all_cpu_s']} |")
by = {}
for r in rows:
    by.setdefault((r["store"], r["processes"], r["concurrency"]), []).append(r)
if ("sqlite", "1", "4") in by and ("postgres", "1", "4") in by:
    # A row named more than once in ROWS (alternated, so drift of the machine falls on both):
    # the means, and each run.
    def mean(k, col):
        return sum(float(r[col]) for r in by[k]) / len(by[k])
    s, p = mean(("sqlite", "1", "4"), "wall_s"), mean(("postgres", "1", "4"), "wall_s")
    each = lambda k: ", ".join(r["wall_s"] for r in by[k])
    print(f"\nPostgreSQL against SQLite, one process of concurrency 4: {p:.2f} s against {s:.2f} s ({100 * (p / s - 1):+.1f} %)"
          + (f"; the means of {len(by[('postgres', '1', '4')])} and {len(by[('sqlite', '1', '4')])} runs "
             f"(PostgreSQL {each(('postgres', '1', '4'))}; SQLite {each(('sqlite', '1', '4'))})"
             if len(by[("sqlite", "1", "4")]) > 1 or len(by[("postgres", "1", "4")]) > 1 else ""))
    pg_cpu = mean(("postgres", "1", "4"), "pg_cpu_s")
    all_cpu = mean(("postgres", "1", "4"), "all_cpu_s")
    print(f"\nPostgreSQL's own processes used {pg_cpu:.2f} s of CPU per pass, {100 * pg_cpu / all_cpu:.1f} % of the machine's {all_cpu:.2f} s")
pg = [r for r in rows if r["store"] == "postgres" and r["ledger_rows"] not in ("-", "")]
if pg:
    r = pg[-1]
    rows_, bytes_ = int(r["ledger_rows"]), int(r["ledger_bytes"])
    print(f"\nLedger in PostgreSQL after a full pass: {rows_:,} rows, {bytes_ / 1e6:.1f} MB with its indexes, "
          f"{bytes_ / rows_:.0f} bytes per row (one row per message: a pass writes as many rows per second "
          f"as its msgs/s above)")
print("\nLedger writes one database sustains (`ledger_bench`: groups of 128 intents, each group "
      "committed as intents and then as copies, every writer its own entry and lease):\n")
print("| state | writers | ledger rows/s |")
print("| --- | ---: | ---: |")
for r in csv.DictReader(open(ledger), delimiter="\t"):
    print(f"| {r['store']} | {r['writers']} | {float(r['rows_per_s']):,.0f} |")
print(f"\nRaw figures, logs and job files: `{out}`")
EOF
cat "$REPORT"
log "table written to $REPORT"

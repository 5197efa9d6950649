# Shared by bench/run.sh, bench/scale.sh and bench/latency.sh (sourced after the lab's env:
# LAB, SRC_HOST, DST_HOST, DST_PORT, MASTER_USER, log, die).
#
# Emptying the target between tools: its messages are moved aside, not deleted, until the end.
# This machine's root file system is ext4 without a journal, and there the inode allocator
# skips an inode freed within the last 60 s (360 s once its inode-table block is dirty again):
# `recently_deleted()` in fs/ext4/ialloc.c. After `rm -rf` of the 20,000 files of the tool
# before, every file the next tool creates on the target scans past those inodes first; perf
# showed that scan as 25-35 % of all the CPU of a pass, in the target's kernel time. A real
# migration's target has not just deleted 20,000 files, so each tool gets a target that has
# not either: renaming frees no inode. The moved-aside stores are deleted when the script
# ends, and the next run waits until that deletion is out of the window.
TRASH=$LAB/bench-trash
WIPED=$LAB/bench-trash.wiped
set_aside_target() {
  mkdir -p "$TRASH"
  local d
  d=$(mktemp -d "$TRASH/XXXXXX")
  find "$LAB/target/mail" -mindepth 1 -maxdepth 1 -exec mv -t "$d" {} +
  # The last run's writes on disk before the next one starts: into a target without fsync
  # they are still dirty in the page cache, and their writeback would land in that run.
  sync
}
wipe_trash() {
  [[ -d $TRASH ]] || return 0
  log "deleting the targets set aside ($(du -sh "$TRASH" | cut -f1))"
  rm -rf "$TRASH"
  sync
  date +%s >"$WIPED"
}
if [[ -f $WIPED ]]; then
  ago=$(($(date +%s) - $(cat "$WIPED")))
  if ((ago < 370)); then
    log "waiting $((370 - ago)) s: the last run's deleted files are still in ext4's recently-deleted window"
    sleep $((370 - ago))
  fi
fi


# The job file's [source] and [target] for the lab's two Dovecots, through their master user
# (password from BENCH_ADMIN_PW): lab_sides SOURCE_PORT [MAX_CONNECTIONS]
lab_sides() {
  lab_side source "$SRC_HOST" "$1" master-separator "${2:-}"
  echo
  lab_side target "$DST_HOST" "$DST_PORT" sasl-authzid "${2:-}"
}
# lab_side SIDE HOST PORT ADMIN_LOGIN [MAX_CONNECTIONS]
lab_side() {
  cat <<EOF
[$1]
kind = "imap"
host = "$2"
port = $3
security = "plain"
allow_plain = true
auth = "admin"
admin_user = "$MASTER_USER"
admin_password = { env = "BENCH_ADMIN_PW" }
admin_login = "$4"
EOF
  [[ -z ${5:-} ]] || echo "max_connections = $5"
}

# The mailboxes CSV of the users in USERS, each to the same address: mailboxes_csv FILE
mailboxes_csv() {
  {
    echo "Source ID,Source addresses,Target addresses"
    local u
    for u in "${USERS[@]}"; do echo "${u%@*},$u,$u"; done
  } >"$1"
}

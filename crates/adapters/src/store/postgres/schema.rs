//! The schema and its versions, kept in `mailferry_schema` (one row per version applied).
//!
//! Version 1 is the whole schema of the SQLite store's version 3 (entries, ledger,
//! checkpoints, runs, run lines, meta, refresh results, failures, leases with progress) in
//! PostgreSQL's types: unsigned values in `BIGINT` (the model's `u32`s fit; its `u64`s are
//! checked on the way in), flags as `BOOLEAN`, lease expiry as a `timestamptz` of the
//! database's clock. Version 2 adds the queue of passes for workers and the workers' table;
//! version 3 the run lines' dropped keywords and time waited on throttling; version 4 the
//! servers each lease's pass uses (for the caps across processes); version 5 the stores' write
//! stamps (`mailferry_writes`, for reconnecting: `conn.rs`); 6 orphans; 7 gone rows; 8 the
//! shared backoff of failed queued entries; 9 heap-only completions (`V9_HOT`).
//! Text that is listed in order is `COLLATE "C"` (byte order, as SQLite
//! compares). A migration never changes what an existing column means.
//!
//! Migrations run under a transaction-level advisory lock, so two processes opening a new
//! database at once do not both create it; PostgreSQL's DDL is transactional, so a version
//! is applied whole or not at all.

use postgres::Client;

use super::{Column, Db};
use mailferry_core::ports::store::{Result, StoreError, StoreErrorKind};

/// The advisory lock key that serialises migrations ("mailferr" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d61_696c_6665_7272;

const V1: &str = r#"
CREATE TABLE entries (
    id TEXT COLLATE "C" PRIMARY KEY,
    source_login TEXT NOT NULL,
    source_addresses TEXT NOT NULL DEFAULT '[]',
    target_login TEXT,
    target_addresses TEXT NOT NULL DEFAULT '[]',
    origin TEXT NOT NULL,
    stage BIGINT,
    state TEXT NOT NULL DEFAULT 'new',
    copied BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    last_pass TEXT,
    last_error TEXT,
    source_display_name TEXT,
    target_id TEXT,
    match_note TEXT,
    missing_source BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE ledger (
    entry_id TEXT COLLATE "C" NOT NULL,
    source_folder TEXT COLLATE "C" NOT NULL,
    uid_validity BIGINT NOT NULL,
    uid BIGINT NOT NULL,
    target_folder TEXT NOT NULL,
    target_uid BIGINT,
    target_uidnext BIGINT,
    fingerprint TEXT NOT NULL,
    size BIGINT NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    PRIMARY KEY (entry_id, source_folder, uid_validity, uid)
);
CREATE INDEX ledger_target ON ledger (entry_id, target_folder, target_uid);
CREATE INDEX ledger_fingerprint ON ledger (entry_id, fingerprint);
CREATE TABLE folder_checkpoints (
    entry_id TEXT NOT NULL,
    source_folder TEXT NOT NULL,
    uid_validity BIGINT NOT NULL,
    uid_next BIGINT NOT NULL,
    messages BIGINT NOT NULL,
    highest_modseq BIGINT,
    filter TEXT NOT NULL,
    PRIMARY KEY (entry_id, source_folder)
);
CREATE TABLE runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started TEXT NOT NULL,
    finished TEXT,
    kind TEXT NOT NULL
);
CREATE TABLE run_entries (
    run_id BIGINT NOT NULL,
    entry_id TEXT COLLATE "C" NOT NULL,
    state TEXT NOT NULL,
    copied BIGINT NOT NULL DEFAULT 0,
    skipped BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0,
    moved BIGINT NOT NULL DEFAULT 0,
    flags_updated BIGINT NOT NULL DEFAULT 0,
    seconds DOUBLE PRECISION NOT NULL DEFAULT 0,
    error TEXT,
    PRIMARY KEY (run_id, entry_id)
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE refresh_runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started TEXT NOT NULL,
    source_available BOOLEAN NOT NULL,
    source_reason TEXT,
    target_available BOOLEAN NOT NULL,
    target_reason TEXT
);
-- line_no keeps the lines in the order given (SQLite's rowid does this there).
CREATE TABLE refresh_results (
    run_id BIGINT NOT NULL,
    line_no BIGINT NOT NULL,
    side TEXT NOT NULL,
    result TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    mailbox_id TEXT,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    PRIMARY KEY (run_id, line_no)
);
CREATE TABLE failures (
    run_id BIGINT NOT NULL,
    entry_id TEXT COLLATE "C" NOT NULL,
    folder TEXT COLLATE "C" NOT NULL,
    uid BIGINT,
    size BIGINT,
    message_id TEXT,
    reason TEXT NOT NULL
);
CREATE INDEX failures_run ON failures (run_id, entry_id);
-- expires is the database's clock: every process compares it with the same now.
CREATE TABLE leases (
    entry_id TEXT COLLATE "C" PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    since TEXT NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    planned_messages BIGINT NOT NULL DEFAULT 0,
    planned_bytes BIGINT NOT NULL DEFAULT 0,
    copied BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0
);
"#;

/// Version 2: the queue of passes for `mailferry worker` (one row per queued entry; its
/// ticket, from the sequence `queue_tickets`, changes each time it is queued again), the
/// workers' registrations and heartbeats, and when each lease was last renewed — all by the
/// database's clock.
const V2: &str = r#"
ALTER TABLE leases ADD COLUMN renewed TIMESTAMPTZ NOT NULL DEFAULT '-infinity';
CREATE SEQUENCE queue_tickets;
CREATE TABLE queue (
    entry_id TEXT COLLATE "C" PRIMARY KEY,
    queued TEXT NOT NULL,
    first_ticket BIGINT NOT NULL,
    ticket BIGINT NOT NULL
);
CREATE INDEX queue_order ON queue (first_ticket);
CREATE TABLE workers (
    name TEXT COLLATE "C" PRIMARY KEY,
    started TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat TEXT NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL,
    stopped TEXT,
    passes BIGINT NOT NULL DEFAULT 0,
    messages BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0
);
"#;

/// Version 3: what each pass's run line adds to its counts: the custom keywords the target
/// dropped (a JSON list of `{"folder", "count"}`, as text) and the seconds it waited on
/// throttling.
const V3: &str = r#"
ALTER TABLE run_entries ADD COLUMN keywords_dropped TEXT NOT NULL DEFAULT '[]';
ALTER TABLE run_entries ADD COLUMN throttled_seconds DOUBLE PRECISION NOT NULL DEFAULT 0;
"#;

/// Version 4: the servers each lease's pass uses, and how many connections it may open on
/// each (one row per server and mailbox): the claims of every process count the rows of live
/// leases against the servers' caps.
const V4: &str = r#"
CREATE TABLE lease_uses (
    entry_id TEXT COLLATE "C" NOT NULL,
    server TEXT COLLATE "C" NOT NULL,
    mailbox TEXT COLLATE "C" NOT NULL,
    connections BIGINT NOT NULL
);
CREATE INDEX lease_uses_entry ON lease_uses (entry_id);
CREATE INDEX lease_uses_server ON lease_uses (server, mailbox);
"#;

/// Each store's stamp of its last write transaction begun, so that after a connection broke
/// during a COMMIT the store can tell whether that write committed (`conn.rs`).
const V5_WRITES: &str = r#"
CREATE TABLE mailferry_writes (
    writer TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    at TIMESTAMPTZ NOT NULL
);
"#;

/// Orphans, target copies an APPEND made after its process had lost the entry's lease (its
/// fenced ledger write was refused): the entry's next holder removes each one the ledger does
/// not name. Written without a fence, only ever added to and taken from.
const V6_ORPHANS: &str = r#"
CREATE TABLE orphans (
    entry_id TEXT COLLATE "C" NOT NULL,
    target_folder TEXT COLLATE "C" NOT NULL,
    target_uid_validity BIGINT NOT NULL,
    target_uid BIGINT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (entry_id, target_folder, target_uid_validity, target_uid)
);
"#;

/// Ledger rows whose source message was seen gone (expunged, or in a folder deleted there)
/// and matched by no new message yet: a later pass that finds the same bytes elsewhere moves
/// the copy instead of making a second one, even when that folder is no longer scanned.
const V7_GONE: &str = r#"
ALTER TABLE ledger ADD COLUMN gone BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX ledger_gone ON ledger (entry_id) WHERE gone;
"#;

/// A queued entry whose pass failed is passed again by no worker before `not_before` (by the
/// database's clock), and counts its failures in a row, so that every worker of the job keeps
/// one backoff.
const V8_DEFER: &str = r#"
ALTER TABLE queue ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue ADD COLUMN not_before TIMESTAMPTZ NOT NULL DEFAULT '-infinity';
"#;

/// A copy's completion (`state`, `target_uid`, `target_uidnext` of a row written as an
/// intent moments before) is a heap-only update: no column it sets is indexed, and half of
/// each new ledger page is left free for the row's second version. It used to put a new entry
/// into every index of the ledger for each message, the biggest part of the database's time
/// in a full pass (bench/scale.sh with PG_STATS=1). The one query by target folder needs no
/// UIDs in its index. Pages written before keep their layout.
const V9_HOT: &str = r#"
DROP INDEX ledger_target;
CREATE INDEX ledger_target_folder ON ledger (entry_id, target_folder);
ALTER TABLE ledger SET (fillfactor = 50);
"#;

/// The migrations, in order: index 0 brings a database to version 1.
const MIGRATIONS: [&str; 9] = [
    V1, V2, V3, V4, V5_WRITES, V6_ORPHANS, V7_GONE, V8_DEFER, V9_HOT,
];

/// The newest schema this build knows.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings a database up to [`VERSION`], one migration per version, each in its own
/// transaction; refuses a newer one, and a database with mailferry's table names that is not
/// a mailferry state.
pub fn migrate(client: &mut Client) -> Result<()> {
    loop {
        let mut tx = client.transaction().db()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .db()?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS mailferry_schema (
                 version BIGINT PRIMARY KEY,
                 applied TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .db()?;
        let version = tx
            .query_one(
                "SELECT coalesce(max(version), 0)::bigint FROM mailferry_schema",
                &[],
            )
            .db()?
            .int(0)?;
        if version > VERSION {
            return Err(StoreError::new(
                StoreErrorKind::Schema,
                format!(
                    "The state database was written by a newer mailferry (schema version \
                     {version}; this one knows up to {VERSION}): use that version or newer"
                ),
            ));
        }
        if version == VERSION {
            return tx.commit().db();
        }
        if version == 0 {
            let foreign = tx
                .query_one("SELECT to_regclass('entries') IS NOT NULL", &[])
                .db()?
                .flag(0)?;
            if foreign {
                return Err(StoreError::new(
                    StoreErrorKind::Schema,
                    "The database has a table named entries but no mailferry_schema: it is \
                     not a mailferry state (give mailferry a database of its own)",
                ));
            }
        }
        let Some(migration) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Err(StoreError::new(
                StoreErrorKind::Schema,
                format!("No migration from schema version {version}"),
            ));
        };
        tx.batch_execute(migration).db()?;
        tx.execute(
            "INSERT INTO mailferry_schema (version) VALUES ($1)",
            &[&(version + 1)],
        )
        .db()?;
        tx.commit().db()?;
    }
}

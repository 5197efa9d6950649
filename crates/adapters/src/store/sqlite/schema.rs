//! The schema and its versions (`PRAGMA user_version`).
//!
//! Version 1 is the schema as mailferry 0.1 left it (the tables below, created with
//! `IF NOT EXISTS`, plus the entry columns added since its first release); version 2 adds
//! leases, version 3 their progress, version 4 the queue of passes for workers, the
//! workers' registrations and the leases' last renewal, version 5 the run lines' dropped
//! keywords and time waited on throttling, version 6 the servers each lease's pass uses (for
//! the caps across processes), version 7 orphans, version 8 the ledger's gone marks. A
//! migration never changes what an existing column means.

use rusqlite::Connection;

use super::Db;
use mailferry_core::ports::store::{Result, StoreError, StoreErrorKind};

const V1: &str = r#"
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY NOT NULL,
    source_login TEXT NOT NULL,
    source_addresses TEXT NOT NULL DEFAULT '[]',
    target_login TEXT,
    target_addresses TEXT NOT NULL DEFAULT '[]',
    origin TEXT NOT NULL,
    stage INTEGER,
    state TEXT NOT NULL DEFAULT 'new',
    copied INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    last_pass TEXT,
    last_error TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS ledger (
    entry_id TEXT NOT NULL,
    source_folder TEXT NOT NULL,
    uid_validity INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    target_folder TEXT NOT NULL,
    target_uid INTEGER,
    target_uidnext INTEGER,
    fingerprint TEXT NOT NULL,
    size INTEGER NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    PRIMARY KEY (entry_id, source_folder, uid_validity, uid)
) STRICT;
CREATE INDEX IF NOT EXISTS ledger_target ON ledger (entry_id, target_folder, target_uid);
CREATE INDEX IF NOT EXISTS ledger_fingerprint ON ledger (entry_id, fingerprint);
CREATE TABLE IF NOT EXISTS folder_checkpoints (
    entry_id TEXT NOT NULL,
    source_folder TEXT NOT NULL,
    uid_validity INTEGER NOT NULL,
    uid_next INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    highest_modseq INTEGER,
    filter TEXT NOT NULL,
    PRIMARY KEY (entry_id, source_folder)
) STRICT;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started TEXT NOT NULL,
    finished TEXT,
    kind TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS run_entries (
    run_id INTEGER NOT NULL,
    entry_id TEXT NOT NULL,
    state TEXT NOT NULL,
    copied INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    moved INTEGER NOT NULL DEFAULT 0,
    flags_updated INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    error TEXT,
    PRIMARY KEY (run_id, entry_id)
) STRICT;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS refresh_runs (
    id INTEGER PRIMARY KEY,
    started TEXT NOT NULL,
    source_available INTEGER NOT NULL,
    source_reason TEXT,
    target_available INTEGER NOT NULL,
    target_reason TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS refresh_results (
    run_id INTEGER NOT NULL,
    side TEXT NOT NULL,
    result TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    mailbox_id TEXT,
    before TEXT NOT NULL,
    after TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS failures (
    run_id INTEGER NOT NULL,
    entry_id TEXT NOT NULL,
    folder TEXT NOT NULL,
    uid INTEGER,
    size INTEGER,
    message_id TEXT,
    reason TEXT NOT NULL
) STRICT;
"#;

/// Entry columns added after the first release: databases of that release lack them.
const V1_ENTRY_COLUMNS: [(&str, &str); 4] = [
    ("source_display_name", "TEXT"),
    ("target_id", "TEXT"),
    ("match_note", "TEXT"),
    ("missing_source", "INTEGER NOT NULL DEFAULT 0"),
];

const V2: &str = r#"
CREATE TABLE leases (
    entry_id TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    since TEXT NOT NULL,
    expires_ms INTEGER NOT NULL
) STRICT;
"#;

/// Version 3: how far each leased pass has got, reported by its process.
const V3: &str = r#"
ALTER TABLE leases ADD COLUMN planned_messages INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN planned_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN copied INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
"#;

/// Version 4: the queue of passes for `mailferry worker` (one row per queued entry; its
/// ticket changes each time it is queued again, from the one-row counter `queue_tickets`),
/// the workers' registrations and heartbeats, and when each lease was last renewed.
const V4: &str = r#"
ALTER TABLE leases ADD COLUMN renewed_ms INTEGER NOT NULL DEFAULT 0;
CREATE TABLE queue (
    entry_id TEXT PRIMARY KEY NOT NULL,
    queued TEXT NOT NULL,
    first_ticket INTEGER NOT NULL,
    ticket INTEGER NOT NULL
) STRICT;
CREATE INDEX queue_order ON queue (first_ticket);
CREATE TABLE queue_tickets (last INTEGER NOT NULL) STRICT;
INSERT INTO queue_tickets (last) VALUES (0);
CREATE TABLE workers (
    name TEXT PRIMARY KEY NOT NULL,
    started TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    heartbeat TEXT NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    stopped TEXT,
    passes INTEGER NOT NULL DEFAULT 0,
    messages INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0
) STRICT;
"#;

/// Version 5: what each pass's run line adds to its counts: the custom keywords the target
/// dropped (a JSON list of `{"folder", "count"}`) and the seconds it waited on throttling.
const V5: &str = r#"
ALTER TABLE run_entries ADD COLUMN keywords_dropped TEXT NOT NULL DEFAULT '[]';
ALTER TABLE run_entries ADD COLUMN throttled_seconds REAL NOT NULL DEFAULT 0;
"#;

/// Version 6: the servers each lease's pass uses, and how many connections it may open on
/// each (one row per server and mailbox): the claims of every process count the rows of live
/// leases against the servers' caps.
const V6: &str = r#"
CREATE TABLE lease_uses (
    entry_id TEXT NOT NULL,
    server TEXT NOT NULL,
    mailbox TEXT NOT NULL,
    connections INTEGER NOT NULL
) STRICT;
CREATE INDEX lease_uses_entry ON lease_uses (entry_id);
CREATE INDEX lease_uses_server ON lease_uses (server, mailbox);
"#;

/// Version 7: orphans, target copies an APPEND made after its process had lost the entry's
/// lease (its fenced ledger write was refused): the entry's next holder removes each one the
/// ledger does not name. Written without a fence, only ever added to and taken from.
const V7_ORPHANS: &str = r#"
CREATE TABLE orphans (
    entry_id TEXT NOT NULL,
    target_folder TEXT NOT NULL,
    target_uid_validity INTEGER NOT NULL,
    target_uid INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (entry_id, target_folder, target_uid_validity, target_uid)
) STRICT;
"#;

/// Version 8: ledger rows whose source message was seen gone (expunged, or in a folder
/// deleted there) and matched by no new message yet: a later pass that finds the same bytes
/// elsewhere moves the copy instead of making a second one, even when the folder the message
/// left is no longer scanned.
const V8_GONE: &str = r#"
ALTER TABLE ledger ADD COLUMN gone INTEGER NOT NULL DEFAULT 0;
CREATE INDEX ledger_gone ON ledger (entry_id) WHERE gone = 1;
"#;

/// Version 9: a queued entry whose pass failed is passed again by no worker before
/// `not_before_ms` (milliseconds since the epoch), and counts its failures in a row, so that
/// every worker of the job keeps one backoff.
const V9_DEFER: &str = r#"
ALTER TABLE queue ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue ADD COLUMN not_before_ms INTEGER NOT NULL DEFAULT 0;
"#;

/// The newest schema this build knows.
pub const VERSION: i64 = 9;

/// Brings a database up to [`VERSION`], one migration per version, each in its own
/// transaction; refuses a newer one.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let mut version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .db()?;
    if version > VERSION {
        return Err(StoreError::new(
            StoreErrorKind::Schema,
            format!(
                "The state database was written by a newer mailferry (schema version \
                 {version}; this one knows up to {VERSION}): use that version or newer"
            ),
        ));
    }
    while version < VERSION {
        let tx = conn.transaction().db()?;
        match version {
            0 => {
                tx.execute_batch(V1).db()?;
                let existing: Vec<String> = tx
                    .prepare("SELECT name FROM pragma_table_info('entries')")
                    .db()?
                    .query_map([], |r| r.get(0))
                    .db()?
                    .collect::<rusqlite::Result<_>>()
                    .db()?;
                for (name, definition) in V1_ENTRY_COLUMNS {
                    if !existing.iter().any(|c| c == name) {
                        tx.execute_batch(&format!(
                            "ALTER TABLE entries ADD COLUMN {name} {definition}"
                        ))
                        .db()?;
                    }
                }
            }
            1 => tx.execute_batch(V2).db()?,
            2 => tx.execute_batch(V3).db()?,
            3 => tx.execute_batch(V4).db()?,
            4 => tx.execute_batch(V5).db()?,
            5 => tx.execute_batch(V6).db()?,
            6 => tx.execute_batch(V7_ORPHANS).db()?,
            7 => tx.execute_batch(V8_GONE).db()?,
            8 => tx.execute_batch(V9_DEFER).db()?,
            _ => unreachable_version(version)?,
        }
        version += 1;
        tx.pragma_update(None, "user_version", version).db()?;
        tx.commit().db()?;
    }
    Ok(())
}

fn unreachable_version(v: i64) -> Result<()> {
    Err(StoreError::new(
        StoreErrorKind::Schema,
        format!("No migration from schema version {v}"),
    ))
}

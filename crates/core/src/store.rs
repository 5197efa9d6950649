//! The job's state: entries, the ledger, folder checkpoints, runs and failures, in SQLite.
//!
//! The ledger is the only truth about what was copied. Its crash-safety rule: a row is written
//! as `pending` (with the target folder's UIDNEXT seen before the APPEND) and committed
//! *before* the APPEND is sent, and becomes `copied` with the target UID once the server said
//! OK. A crash in between leaves a `pending` row, which the engine resolves on the next pass by
//! looking at the target messages at or above that UIDNEXT (see `engine::reconcile_pending`).
//! Secrets are never stored here.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

pub use rusqlite::Error as StoreError;

pub type Result<T> = std::result::Result<T, StoreError>;

const SCHEMA: &str = r#"
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

/// An entry as stored: one source mailbox and the target it goes to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    pub id: String,
    pub source_login: String,
    pub source_addresses: Vec<String>,
    pub target_login: Option<String>,
    pub target_addresses: Vec<String>,
    pub origin: String,
    pub stage: Option<u32>,
    pub state: String,
    pub copied: u64,
    pub failed: u64,
    pub last_pass: Option<String>,
    pub last_error: Option<String>,
    /// The source mailbox's display name (from the directory), for matching.
    pub source_display_name: Option<String>,
    /// The target mailbox's stable ID in the target directory, once known.
    pub target_id: Option<String>,
    /// Why automatic matching found nothing (or too much).
    pub match_note: Option<String>,
    /// The source directory no longer has this mailbox; removed at the next job edit or
    /// `migrate`.
    pub missing_source: bool,
}

/// Columns added after the first release, with their definitions: added to older databases
/// when they are opened.
const ENTRY_COLUMNS: [(&str, &str); 4] = [
    ("source_display_name", "TEXT"),
    ("target_id", "TEXT"),
    ("match_note", "TEXT"),
    ("missing_source", "INTEGER NOT NULL DEFAULT 0"),
];

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub source_folder: String,
    pub uid_validity: u32,
    pub uid: u32,
    pub target_folder: String,
    pub target_uid: Option<u32>,
    pub target_uidnext: Option<u32>,
    pub fingerprint: String,
    pub size: u64,
    pub flags: String,
    pub pending: bool,
}

/// One line of a refresh: one side of one entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefreshLine {
    pub side: String,
    pub result: String,
    pub entry: String,
    pub id: Option<String>,
    pub before: Vec<String>,
    pub after: Vec<String>,
}

/// A refresh run as stored: which sides could be refreshed, and every line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub started: String,
    pub source_available: bool,
    pub source_reason: Option<String>,
    pub target_available: bool,
    pub target_reason: Option<String>,
    pub lines: Vec<RefreshLine>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub uid_validity: u32,
    pub uid_next: u32,
    pub messages: u32,
    pub highest_modseq: Option<u64>,
    pub filter: String,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RunEntry {
    pub entry_id: String,
    pub state: String,
    pub copied: u64,
    pub skipped: u64,
    pub failed: u64,
    pub bytes: u64,
    pub moved: u64,
    pub flags_updated: u64,
    pub seconds: f64,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    pub entry_id: String,
    pub folder: String,
    pub uid: Option<u32>,
    pub size: Option<u64>,
    pub message_id: Option<String>,
    pub reason: String,
}

pub struct Store {
    conn: Connection,
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

fn parse_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    pub fn open_in_memory() -> Result<Store> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        // WAL + synchronous=FULL: a committed ledger row survives a crash of the process or
        // the machine, which is what lets a killed pass resume without duplicates.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(SCHEMA)?;
        let existing: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('entries')")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_>>()?;
        for (name, definition) in ENTRY_COLUMNS {
            if !existing.iter().any(|c| c == name) {
                conn.execute_batch(&format!(
                    "ALTER TABLE entries ADD COLUMN {name} {definition}"
                ))?;
            }
        }
        Ok(Store { conn })
    }

    // ---------------------------------------------------------------- entries

    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, source_login, source_addresses, target_login, target_addresses, origin,
                    stage, state, copied, failed, last_pass, last_error, source_display_name,
                    target_id, match_note, missing_source
             FROM entries ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Entry {
                id: r.get(0)?,
                source_login: r.get(1)?,
                source_addresses: parse_list(&r.get::<_, String>(2)?),
                target_login: r.get(3)?,
                target_addresses: parse_list(&r.get::<_, String>(4)?),
                origin: r.get(5)?,
                stage: r.get(6)?,
                state: r.get(7)?,
                copied: r.get(8)?,
                failed: r.get(9)?,
                last_pass: r.get(10)?,
                last_error: r.get(11)?,
                source_display_name: r.get(12)?,
                target_id: r.get(13)?,
                match_note: r.get(14)?,
                missing_source: r.get(15)?,
            })
        })?;
        rows.collect()
    }

    /// Inserts or updates entries by ID, keeping their ledger and migration state, in one
    /// transaction: either all are applied or none.
    pub fn upsert_entries(&mut self, entries: &[Entry]) -> Result<(usize, usize)> {
        let tx = self.conn.transaction()?;
        let (mut added, mut updated) = (0, 0);
        for e in entries {
            let exists: bool = tx
                .query_row("SELECT 1 FROM entries WHERE id = ?1", [&e.id], |_| Ok(()))
                .optional()?
                .is_some();
            if exists {
                tx.execute(
                    "UPDATE entries SET source_login = ?2, source_addresses = ?3, target_login = ?4,
                         target_addresses = ?5, origin = ?6, stage = ?7, source_display_name = ?8,
                         target_id = ?9, match_note = ?10, missing_source = ?11 WHERE id = ?1",
                    params![
                        e.id,
                        e.source_login,
                        json_list(&e.source_addresses),
                        e.target_login,
                        json_list(&e.target_addresses),
                        e.origin,
                        e.stage,
                        e.source_display_name,
                        e.target_id,
                        e.match_note,
                        e.missing_source
                    ],
                )?;
                updated += 1;
            } else {
                tx.execute(
                    "INSERT INTO entries (id, source_login, source_addresses, target_login,
                         target_addresses, origin, stage, state, source_display_name, target_id,
                         match_note, missing_source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'new', ?8, ?9, ?10, ?11)",
                    params![
                        e.id,
                        e.source_login,
                        json_list(&e.source_addresses),
                        e.target_login,
                        json_list(&e.target_addresses),
                        e.origin,
                        e.stage,
                        e.source_display_name,
                        e.target_id,
                        e.match_note,
                        e.missing_source
                    ],
                )?;
                added += 1;
            }
        }
        tx.commit()?;
        Ok((added, updated))
    }

    pub fn set_entry_result(
        &self,
        id: &str,
        state: &str,
        last_pass: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE entries SET state = ?2, last_pass = ?3, last_error = ?4,
                 copied = (SELECT count(*) FROM ledger WHERE entry_id = ?1 AND state = 'copied'),
                 failed = (SELECT count(*) FROM failures WHERE entry_id = ?1
                           AND run_id = (SELECT max(id) FROM runs))
             WHERE id = ?1",
            params![id, state, last_pass, error],
        )?;
        Ok(())
    }

    /// Entries whose source mailbox a refresh found missing (removed at the next job edit or
    /// `migrate`).
    pub fn missing_source_ids(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM entries WHERE missing_source = 1 ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect()
    }

    /// Removes entries and everything recorded for them (ledger, checkpoints), in one
    /// transaction.
    pub fn remove_entries(&mut self, ids: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for id in ids {
            for table in ["ledger", "folder_checkpoints"] {
                tx.execute(&format!("DELETE FROM {table} WHERE entry_id = ?1"), [id])?;
            }
            tx.execute("DELETE FROM entries WHERE id = ?1", [id])?;
        }
        tx.commit()
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        Ok(())
    }

    // ---------------------------------------------------------------- refresh

    /// Records one refresh run and its results; returns the run's ID.
    pub fn record_refresh(&mut self, r: &RefreshRecord) -> Result<i64> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO refresh_runs (started, source_available, source_reason, target_available,
                 target_reason) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                r.started,
                r.source_available,
                r.source_reason,
                r.target_available,
                r.target_reason
            ],
        )?;
        let run = tx.last_insert_rowid();
        {
            let mut stmt = tx.prepare(
                "INSERT INTO refresh_results (run_id, side, result, entry_id, mailbox_id, before,
                     after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for l in &r.lines {
                stmt.execute(params![
                    run,
                    l.side,
                    l.result,
                    l.entry,
                    l.id,
                    json_list(&l.before),
                    json_list(&l.after)
                ])?;
            }
        }
        tx.commit()?;
        Ok(run)
    }

    /// The latest refresh run, if any.
    pub fn last_refresh(&self) -> Result<Option<RefreshRecord>> {
        let Some((run, started, sa, sr, ta, tr)) = self
            .conn
            .query_row(
                "SELECT id, started, source_available, source_reason, target_available,
                        target_reason FROM refresh_runs ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .optional()?
        else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare(
            "SELECT side, result, entry_id, mailbox_id, before, after FROM refresh_results
             WHERE run_id = ?1 ORDER BY rowid",
        )?;
        let lines = stmt
            .query_map([run], |r| {
                Ok(RefreshLine {
                    side: r.get(0)?,
                    result: r.get(1)?,
                    entry: r.get(2)?,
                    id: r.get(3)?,
                    before: parse_list(&r.get::<_, String>(4)?),
                    after: parse_list(&r.get::<_, String>(5)?),
                })
            })?
            .collect::<Result<_>>()?;
        Ok(Some(RefreshRecord {
            started,
            source_available: sa,
            source_reason: sr,
            target_available: ta,
            target_reason: tr,
            lines,
        }))
    }

    // ---------------------------------------------------------------- ledger

    /// Ledger rows of one source folder (any UIDVALIDITY).
    pub fn ledger_folder(&self, entry: &str, folder: &str) -> Result<Vec<LedgerRow>> {
        self.ledger_query(
            "WHERE entry_id = ?1 AND source_folder = ?2",
            params![entry, folder],
        )
    }

    pub fn ledger_pending(&self, entry: &str) -> Result<Vec<LedgerRow>> {
        self.ledger_query("WHERE entry_id = ?1 AND state = 'pending'", params![entry])
    }

    pub fn ledger_all(&self, entry: &str) -> Result<Vec<LedgerRow>> {
        self.ledger_query("WHERE entry_id = ?1", params![entry])
    }

    /// Known target UIDs of a target folder: messages the ledger says are ours.
    pub fn target_uids(&self, entry: &str, target_folder: &str) -> Result<Vec<u32>> {
        let mut stmt = self.conn.prepare(
            "SELECT target_uid FROM ledger WHERE entry_id = ?1 AND target_folder = ?2
             AND target_uid IS NOT NULL",
        )?;
        let rows = stmt.query_map(params![entry, target_folder], |r| r.get(0))?;
        rows.collect()
    }

    fn ledger_query(&self, filter: &str, p: impl rusqlite::Params) -> Result<Vec<LedgerRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT source_folder, uid_validity, uid, target_folder, target_uid, target_uidnext,
                    fingerprint, size, flags, state FROM ledger {filter} ORDER BY uid"
        ))?;
        let rows = stmt.query_map(p, |r| {
            Ok(LedgerRow {
                source_folder: r.get(0)?,
                uid_validity: r.get(1)?,
                uid: r.get(2)?,
                target_folder: r.get(3)?,
                target_uid: r.get(4)?,
                target_uidnext: r.get(5)?,
                fingerprint: r.get(6)?,
                size: r.get(7)?,
                flags: r.get(8)?,
                pending: r.get::<_, String>(9)? == "pending",
            })
        })?;
        rows.collect()
    }

    /// Records intents to copy, committed before any of their APPENDs is sent.
    pub fn insert_pending(&mut self, entry: &str, rows: &[LedgerRow]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT OR REPLACE INTO ledger (entry_id, source_folder, uid_validity, uid,
                     target_folder, target_uid, target_uidnext, fingerprint, size, flags, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8, ?9, 'pending')",
            )?;
            for r in rows {
                stmt.execute(params![
                    entry,
                    r.source_folder,
                    r.uid_validity,
                    r.uid,
                    r.target_folder,
                    r.target_uidnext,
                    r.fingerprint,
                    r.size,
                    r.flags
                ])?;
            }
        }
        tx.commit()
    }

    /// Marks rows copied (with their target UID when known) and forgets the failed ones, in
    /// one transaction.
    pub fn complete(
        &mut self,
        entry: &str,
        copied: &[(&LedgerRow, Option<u32>)],
        failed: &[&LedgerRow],
    ) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut done = tx.prepare(
                "UPDATE ledger SET state = 'copied', target_uid = ?5, target_uidnext = NULL
                 WHERE entry_id = ?1 AND source_folder = ?2 AND uid_validity = ?3 AND uid = ?4",
            )?;
            for (r, uid) in copied {
                done.execute(params![entry, r.source_folder, r.uid_validity, r.uid, uid])?;
            }
            let mut del = tx.prepare(
                "DELETE FROM ledger
                 WHERE entry_id = ?1 AND source_folder = ?2 AND uid_validity = ?3 AND uid = ?4",
            )?;
            for r in failed {
                del.execute(params![entry, r.source_folder, r.uid_validity, r.uid])?;
            }
        }
        tx.commit()
    }

    pub fn set_flags(&mut self, entry: &str, updates: &[(&LedgerRow, String)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "UPDATE ledger SET flags = ?5
                 WHERE entry_id = ?1 AND source_folder = ?2 AND uid_validity = ?3 AND uid = ?4",
            )?;
            for (r, flags) in updates {
                stmt.execute(params![
                    entry,
                    r.source_folder,
                    r.uid_validity,
                    r.uid,
                    flags
                ])?;
            }
        }
        tx.commit()
    }

    /// Re-keys rows in one transaction: each source message now lives at the new row's
    /// folder / UIDVALIDITY / UID, and on the target at its target folder / UID (moves, or a
    /// UIDVALIDITY change).
    pub fn rekey(&mut self, entry: &str, pairs: &[(LedgerRow, LedgerRow)]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "UPDATE ledger SET source_folder = ?5, uid_validity = ?6, uid = ?7,
                     target_folder = ?8, target_uid = ?9
                 WHERE entry_id = ?1 AND source_folder = ?2 AND uid_validity = ?3 AND uid = ?4",
            )?;
            for (old, new) in pairs {
                stmt.execute(params![
                    entry,
                    old.source_folder,
                    old.uid_validity,
                    old.uid,
                    new.source_folder,
                    new.uid_validity,
                    new.uid,
                    new.target_folder,
                    new.target_uid
                ])?;
            }
        }
        tx.commit()
    }

    // ---------------------------------------------------------------- checkpoints

    pub fn checkpoint(&self, entry: &str, folder: &str) -> Result<Option<Checkpoint>> {
        self.conn
            .query_row(
                "SELECT uid_validity, uid_next, messages, highest_modseq, filter
                 FROM folder_checkpoints WHERE entry_id = ?1 AND source_folder = ?2",
                params![entry, folder],
                |r| {
                    Ok(Checkpoint {
                        uid_validity: r.get(0)?,
                        uid_next: r.get(1)?,
                        messages: r.get(2)?,
                        highest_modseq: r.get(3)?,
                        filter: r.get(4)?,
                    })
                },
            )
            .optional()
    }

    pub fn set_checkpoint(&self, entry: &str, folder: &str, c: &Checkpoint) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO folder_checkpoints
                 (entry_id, source_folder, uid_validity, uid_next, messages, highest_modseq, filter)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                entry,
                folder,
                c.uid_validity,
                c.uid_next,
                c.messages,
                c.highest_modseq,
                c.filter
            ],
        )?;
        Ok(())
    }

    // ---------------------------------------------------------------- runs

    pub fn start_run(&self, kind: &str) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO runs (started, kind) VALUES (?1, ?2)",
            params![now(), kind],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn finish_run(&self, run: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE runs SET finished = ?2 WHERE id = ?1",
            params![run, now()],
        )?;
        Ok(())
    }

    pub fn record_run_entry(&self, run: i64, r: &RunEntry) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO run_entries (run_id, entry_id, state, copied, skipped, failed,
                 bytes, moved, flags_updated, seconds, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                run,
                r.entry_id,
                r.state,
                r.copied,
                r.skipped,
                r.failed,
                r.bytes,
                r.moved,
                r.flags_updated,
                r.seconds,
                r.error
            ],
        )?;
        Ok(())
    }

    pub fn record_failure(&self, run: i64, f: &Failure) -> Result<()> {
        self.conn.execute(
            "INSERT INTO failures (run_id, entry_id, folder, uid, size, message_id, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                run,
                f.entry_id,
                f.folder,
                f.uid,
                f.size,
                f.message_id,
                f.reason
            ],
        )?;
        Ok(())
    }

    /// The latest `migrate` run, if any.
    pub fn last_run(&self) -> Result<Option<(i64, String, Option<String>)>> {
        self.conn
            .query_row(
                "SELECT id, started, finished FROM runs WHERE kind = 'migrate'
                 ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
    }

    pub fn run_entries(&self, run: i64) -> Result<Vec<RunEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT entry_id, state, copied, skipped, failed, bytes, moved, flags_updated,
                    seconds, error FROM run_entries WHERE run_id = ?1 ORDER BY entry_id",
        )?;
        let rows = stmt.query_map([run], |r| {
            Ok(RunEntry {
                entry_id: r.get(0)?,
                state: r.get(1)?,
                copied: r.get(2)?,
                skipped: r.get(3)?,
                failed: r.get(4)?,
                bytes: r.get(5)?,
                moved: r.get(6)?,
                flags_updated: r.get(7)?,
                seconds: r.get(8)?,
                error: r.get(9)?,
            })
        })?;
        rows.collect()
    }

    pub fn failures(&self, run: i64) -> Result<Vec<Failure>> {
        let mut stmt = self.conn.prepare(
            "SELECT entry_id, folder, uid, size, message_id, reason FROM failures
             WHERE run_id = ?1 ORDER BY entry_id, folder, uid",
        )?;
        let rows = stmt.query_map([run], |r| {
            Ok(Failure {
                entry_id: r.get(0)?,
                folder: r.get(1)?,
                uid: r.get(2)?,
                size: r.get(3)?,
                message_id: r.get(4)?,
                reason: r.get(5)?,
            })
        })?;
        rows.collect()
    }
}

/// The current time as RFC 3339 UTC, for run records.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(uid: u32) -> LedgerRow {
        LedgerRow {
            source_folder: "INBOX".into(),
            uid_validity: 7,
            uid,
            target_folder: "INBOX".into(),
            target_uid: None,
            target_uidnext: Some(1),
            fingerprint: format!("fp{uid}"),
            size: 10,
            flags: "\\Seen".into(),
            pending: true,
        }
    }

    #[test]
    fn pending_rows_become_copied_or_vanish() {
        let mut s = Store::open_in_memory().unwrap();
        s.insert_pending("e", &[row(1), row(2)]).unwrap();
        assert_eq!(s.ledger_pending("e").unwrap().len(), 2);
        let (a, b) = (row(1), row(2));
        s.complete("e", &[(&a, Some(41))], &[&b]).unwrap();
        let all = s.ledger_all("e").unwrap();
        assert_eq!(all.len(), 1);
        assert!(!all[0].pending);
        assert_eq!(all[0].target_uid, Some(41));
        assert_eq!(s.target_uids("e", "INBOX").unwrap(), vec![41]);
    }

    #[test]
    fn upsert_keeps_state_and_ledger() {
        let mut s = Store::open_in_memory().unwrap();
        let mut e = Entry {
            id: "1".into(),
            source_login: "a@old".into(),
            source_addresses: vec!["a@old".into()],
            target_login: Some("a@new".into()),
            target_addresses: vec!["a@new".into()],
            origin: "csv".into(),
            stage: None,
            state: "new".into(),
            copied: 0,
            failed: 0,
            last_pass: None,
            last_error: None,
            source_display_name: None,
            target_id: None,
            match_note: None,
            missing_source: false,
        };
        assert_eq!(s.upsert_entries(std::slice::from_ref(&e)).unwrap(), (1, 0));
        s.insert_pending("1", &[row(1)]).unwrap();
        e.source_addresses = vec!["a@newer".into()];
        assert_eq!(s.upsert_entries(&[e]).unwrap(), (0, 1));
        let stored = s.entries().unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].source_addresses, vec!["a@newer".to_string()]);
        assert_eq!(s.ledger_all("1").unwrap().len(), 1);
    }
}

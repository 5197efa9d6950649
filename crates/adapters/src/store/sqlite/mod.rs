//! The store port on SQLite: one database file per job, beside the job file by default.
//!
//! WAL with `synchronous=FULL`: a committed ledger row survives a crash of the process or the
//! machine, which is what lets a killed pass resume without duplicates (see the crash-safety
//! rule in `mailferry_core::ports::store`). The schema is versioned with SQLite's
//! `user_version`; each version's migration runs once, in order, and a database written by a
//! newer mailferry is refused rather than guessed at. Text values are the model's `as_str`
//! spellings, so the file stays readable with `sqlite3`.
//!
//! One file per part of the port, as Stalwart's store backends are laid out: `schema`,
//! `entries`, `ledger`, `runs` (runs, failures, refresh results, checkpoints, meta, leases),
//! `queue` (the queue of passes for workers, and the workers).

mod entries;
mod ledger;
mod queue;
mod runs;
mod schema;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

use mailferry_core::model::{
    Checkpoint, Entry, EntryId, EntryState, Failure, Flags, LedgerRow, RefreshRecord, RunEntry,
    RunId, RunKind, Uid, UidValidity,
};
use mailferry_core::ports::Store;
use mailferry_core::ports::store::{
    AfterPass, Lease, LivePass, MetaKey, Orphan, PassProgress, Queued, Refusal, Result, RunInfo,
    ServerUse, StoreError, StoreErrorKind, WorkerRecord, WorkerStats,
};

/// A job's state in one SQLite database.
pub struct SqliteStore {
    conn: Connection,
    /// The claims this store's writes of an entry are fenced by ([`Store::fence`]).
    fences: HashMap<EntryId, Lease>,
}

/// A write transaction; with a fence, `BEGIN IMMEDIATE` (the write lock first, so no other
/// process takes the claim between the check and the commit) and the claim checked.
pub(crate) fn write_tx<'c>(
    conn: &'c mut Connection,
    fence: Option<&Lease>,
) -> Result<Transaction<'c>> {
    let Some(lease) = fence else {
        return conn.transaction().map_err(store_error);
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)?;
    let held: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM leases WHERE entry_id = ?1 AND holder = ?2 AND epoch = ?3)",
            rusqlite::params![lease.entry.as_str(), lease.holder, lease.epoch],
            |r| r.get(0),
        )
        .map_err(store_error)?;
    if !held {
        return Err(StoreError::lease_lost(&lease.entry));
    }
    Ok(tx)
}

/// The store's words for a database error, classified.
pub(crate) fn store_error(e: rusqlite::Error) -> StoreError {
    let kind = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreErrorKind::Busy,
        Some(ErrorCode::DiskFull) => StoreErrorKind::Full,
        Some(ErrorCode::NotADatabase) => StoreErrorKind::Schema,
        _ => StoreErrorKind::Other,
    };
    StoreError::new(kind, e.to_string())
}

pub(crate) trait Db<T> {
    fn db(self) -> Result<T>;
}

impl<T> Db<T> for std::result::Result<T, rusqlite::Error> {
    fn db(self) -> Result<T> {
        self.map_err(store_error)
    }
}

pub(crate) fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn parse_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// A stored text value of one of the model's enums; an unknown one is a database another
/// program wrote, reported as such.
pub(crate) fn parse_text<T>(
    column: &'static str,
    text: &str,
    parse: fn(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    parse(text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown {column} {text:?} in the state database").into(),
        )
    })
}

/// A stored UID or UIDVALIDITY. Only non-zero ones are ever written (they come from servers,
/// RFC 3501 §2.3.1.1), so a 0 is reported as out of range, as a value too big for 32 bits is.
pub(crate) fn nz_column<T>(
    r: &rusqlite::Row<'_>,
    i: usize,
    new: fn(u32) -> Option<T>,
) -> rusqlite::Result<T> {
    new(r.get(i)?).ok_or(rusqlite::Error::IntegralValueOutOfRange(i, 0))
}

/// [`nz_column`] for a column that may be NULL.
pub(crate) fn opt_nz_column<T>(
    r: &rusqlite::Row<'_>,
    i: usize,
    new: fn(u32) -> Option<T>,
) -> rusqlite::Result<Option<T>> {
    r.get::<_, Option<u32>>(i)?
        .map(|v| new(v).ok_or(rusqlite::Error::IntegralValueOutOfRange(i, 0)))
        .transpose()
}

impl SqliteStore {
    /// Opens (creating on first use) a job's database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        Connection::open(path)
            .db()
            .and_then(Self::init)
            .map_err(|e| StoreError {
                message: format!(
                    "Unable to open the state database {}: {}",
                    path.display(),
                    e.message
                ),
                ..e
            })
    }

    pub fn open_in_memory() -> Result<SqliteStore> {
        Self::init(Connection::open_in_memory().db()?)
    }

    fn init(mut conn: Connection) -> Result<SqliteStore> {
        conn.busy_timeout(Duration::from_secs(30)).db()?;
        conn.pragma_update(None, "journal_mode", "WAL").db()?;
        conn.pragma_update(None, "synchronous", "FULL").db()?;
        schema::migrate(&mut conn)?;
        Ok(SqliteStore {
            conn,
            fences: HashMap::new(),
        })
    }
}

impl Store for SqliteStore {
    fn entries(&self) -> Result<Vec<Entry>> {
        entries::all(&self.conn)
    }
    fn upsert_entries(&mut self, entries: &[Entry]) -> Result<(usize, usize)> {
        entries::upsert(&mut self.conn, entries)
    }
    fn set_entry_result(
        &mut self,
        run: RunId,
        id: &EntryId,
        state: EntryState,
        last_pass: &str,
        error: Option<&str>,
    ) -> Result<()> {
        entries::set_result(&self.conn, run, id, state, last_pass, error)
    }
    fn missing_source_ids(&self) -> Result<Vec<EntryId>> {
        entries::missing_source_ids(&self.conn)
    }
    fn remove_entries(&mut self, ids: &[EntryId]) -> Result<()> {
        entries::remove(&mut self.conn, ids)
    }
    fn meta(&self, key: MetaKey) -> Result<Option<String>> {
        runs::meta(&self.conn, key)
    }
    fn set_meta(&mut self, key: MetaKey, value: &str) -> Result<()> {
        runs::set_meta(&self.conn, key, value)
    }
    fn record_refresh(&mut self, r: &RefreshRecord) -> Result<RunId> {
        runs::record_refresh(&mut self.conn, r)
    }
    fn last_refresh(&self) -> Result<Option<RefreshRecord>> {
        runs::last_refresh(&self.conn)
    }
    fn refreshes(&self) -> Result<Vec<RunInfo>> {
        runs::refreshes(&self.conn)
    }
    fn refresh_record(&self, run: RunId) -> Result<Option<RefreshRecord>> {
        runs::refresh(&self.conn, run)
    }
    fn ledger_folder(&self, entry: &EntryId, folder: &str) -> Result<Vec<LedgerRow>> {
        ledger::folder(&self.conn, entry, folder)
    }
    fn ledger_pending(&self, entry: &EntryId) -> Result<Vec<LedgerRow>> {
        ledger::pending(&self.conn, entry)
    }
    fn ledger_all(&self, entry: &EntryId) -> Result<Vec<LedgerRow>> {
        ledger::all(&self.conn, entry)
    }
    fn ledger_uids(
        &self,
        entry: &EntryId,
        folder: &str,
        uid_validity: UidValidity,
        ranges: &[(Uid, Uid)],
    ) -> Result<Vec<LedgerRow>> {
        ledger::uids(&self.conn, entry, folder, uid_validity, ranges)
    }
    fn ledger_folders(&self, entry: &EntryId) -> Result<Vec<String>> {
        ledger::folders(&self.conn, entry)
    }
    fn ledger_gone(&self, entry: &EntryId) -> Result<Vec<LedgerRow>> {
        ledger::gone(&self.conn, entry)
    }
    fn mark_gone(&mut self, entry: &EntryId, rows: &[LedgerRow]) -> Result<()> {
        ledger::mark_gone(&mut self.conn, self.fences.get(entry), entry, rows)
    }
    fn copied_bytes(&self) -> Result<Vec<(EntryId, u64)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT entry_id, SUM(size) FROM ledger WHERE state = 'copied'
                 GROUP BY entry_id ORDER BY entry_id",
            )
            .map_err(store_error)?;
        stmt.query_map([], |r| {
            Ok((
                EntryId::new(r.get::<_, String>(0)?),
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })
        .map_err(store_error)?
        .collect::<rusqlite::Result<_>>()
        .map_err(store_error)
    }
    fn target_uids(&self, entry: &EntryId, target_folder: &str) -> Result<Vec<Uid>> {
        ledger::target_uids(&self.conn, entry, target_folder)
    }
    fn insert_pending(&mut self, entry: &EntryId, rows: &[LedgerRow]) -> Result<()> {
        ledger::insert_pending(&mut self.conn, self.fences.get(entry), entry, rows)
    }
    fn complete(
        &mut self,
        entry: &EntryId,
        copied: &[(&LedgerRow, Option<Uid>)],
        failed: &[&LedgerRow],
    ) -> Result<()> {
        ledger::complete(
            &mut self.conn,
            self.fences.get(entry),
            entry,
            copied,
            failed,
        )
    }
    fn set_flags(&mut self, entry: &EntryId, updates: &[(&LedgerRow, Flags)]) -> Result<()> {
        ledger::set_flags(&mut self.conn, self.fences.get(entry), entry, updates)
    }
    fn rekey(&mut self, entry: &EntryId, pairs: &[(LedgerRow, LedgerRow)]) -> Result<()> {
        ledger::rekey(&mut self.conn, self.fences.get(entry), entry, pairs)
    }
    fn record_orphans(&mut self, entry: &EntryId, orphans: &[Orphan]) -> Result<()> {
        ledger::record_orphans(&mut self.conn, entry, orphans)
    }
    fn orphans(&self, entry: &EntryId) -> Result<Vec<Orphan>> {
        ledger::orphans(&self.conn, entry)
    }
    fn drop_orphan(&mut self, entry: &EntryId, orphan: &Orphan) -> Result<()> {
        ledger::drop_orphan(&self.conn, entry, orphan)
    }
    fn checkpoint(&self, entry: &EntryId, folder: &str) -> Result<Option<Checkpoint>> {
        runs::checkpoint(&self.conn, entry, folder)
    }
    fn set_checkpoint(&mut self, entry: &EntryId, folder: &str, c: &Checkpoint) -> Result<()> {
        let tx = write_tx(&mut self.conn, self.fences.get(entry))?;
        runs::set_checkpoint(&tx, entry, folder, c)?;
        tx.commit().map_err(store_error)
    }
    fn start_run(&mut self, kind: RunKind) -> Result<RunId> {
        runs::start(&self.conn, kind)
    }
    fn import_run(
        &mut self,
        kind: RunKind,
        started: &str,
        finished: Option<&str>,
    ) -> Result<RunId> {
        runs::import(&self.conn, kind, started, finished)
    }
    fn checkpoints(&self, entry: &EntryId) -> Result<Vec<(String, Checkpoint)>> {
        runs::checkpoints(&self.conn, entry)
    }
    fn finish_run(&mut self, run: RunId) -> Result<()> {
        runs::finish(&self.conn, run)
    }
    fn record_run_entry(&mut self, run: RunId, r: &RunEntry) -> Result<()> {
        runs::record_entry(&self.conn, run, r)
    }
    fn record_failure(&mut self, run: RunId, f: &Failure) -> Result<()> {
        runs::record_failure(&self.conn, run, f)
    }
    fn last_run(&self, kind: RunKind) -> Result<Option<RunInfo>> {
        runs::last(&self.conn, kind)
    }
    fn runs(&self, kind: RunKind) -> Result<Vec<RunInfo>> {
        runs::all(&self.conn, kind)
    }
    fn run_entries(&self, run: RunId) -> Result<Vec<RunEntry>> {
        runs::entries(&self.conn, run)
    }
    fn failures(&self, run: RunId) -> Result<Vec<Failure>> {
        runs::failures(&self.conn, run)
    }
    fn claim(
        &mut self,
        entry: &EntryId,
        holder: &str,
        ttl: Duration,
        from_epoch: Option<i64>,
        uses: &[ServerUse],
    ) -> Result<std::result::Result<Lease, Refusal>> {
        runs::lease(&mut self.conn, entry, holder, ttl, from_epoch, uses)
    }
    fn renew(&mut self, lease: &Lease, ttl: Duration) -> Result<()> {
        runs::renew(&self.conn, lease, ttl)
    }
    fn release(&mut self, lease: &Lease) -> Result<()> {
        runs::release(&self.conn, lease)
    }
    fn finish_pass(
        &mut self,
        run: RunId,
        result: &RunEntry,
        last_pass: &str,
        lease: &Lease,
        after: AfterPass,
    ) -> Result<()> {
        // One transaction, always checked: a pass whose claim was taken over must not record
        // its outcome, and no other process sees the claim given up with the entry still
        // queued.
        let tx = write_tx(&mut self.conn, Some(lease))?;
        runs::record_entry(&tx, run, result)?;
        entries::set_result(
            &tx,
            run,
            &result.entry_id,
            result.state,
            last_pass,
            result.error.as_deref(),
        )?;
        match after {
            AfterPass::Keep => {}
            AfterPass::Dequeue(ticket) => {
                queue::dequeue(&tx, &result.entry_id, ticket)?;
            }
            AfterPass::Defer(wait) => {
                queue::defer(&tx, &result.entry_id, wait)?;
            }
        }
        runs::release(&tx, lease)?;
        tx.commit().db()
    }
    fn fence(&mut self, lease: &Lease) {
        self.fences.insert(lease.entry.clone(), lease.clone());
    }
    fn unfence(&mut self, entry: &EntryId) {
        self.fences.remove(entry);
    }
    fn report_progress(&mut self, lease: &Lease, progress: &PassProgress) -> Result<()> {
        runs::report_progress(&self.conn, lease, progress)
    }
    fn live_passes(&self) -> Result<Vec<LivePass>> {
        runs::live_passes(&self.conn)
    }
    fn enqueue(&mut self, entries: &[EntryId]) -> Result<usize> {
        queue::enqueue(&mut self.conn, entries)
    }
    fn queued(&self) -> Result<Vec<Queued>> {
        queue::queued(&self.conn)
    }
    fn dequeue(&mut self, entry: &EntryId, ticket: i64) -> Result<bool> {
        queue::dequeue(&self.conn, entry, ticket)
    }
    fn defer(&mut self, entry: &EntryId, wait: Duration) -> Result<bool> {
        queue::defer(&self.conn, entry, wait)
    }
    fn register_worker(&mut self, name: &str) -> Result<()> {
        queue::register(&self.conn, name)
    }
    fn worker_heartbeat(&mut self, name: &str, stats: &WorkerStats) -> Result<()> {
        queue::heartbeat(&self.conn, name, stats, false)
    }
    fn deregister_worker(&mut self, name: &str, stats: &WorkerStats) -> Result<()> {
        queue::heartbeat(&self.conn, name, stats, true)
    }
    fn workers(&self) -> Result<Vec<WorkerRecord>> {
        queue::workers(&self.conn)
    }
}

#[cfg(test)]
mod tests;

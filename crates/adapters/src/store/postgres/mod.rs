//! The store port on PostgreSQL, for a job whose state several processes share
//! (`state = "postgres://USER@HOST:PORT/DB"`, SPEC §8).
//!
//! One connection per store, on the blocking `postgres` client. Every method that changes
//! several rows is one transaction, and the session forces `synchronous_commit = on`: a
//! committed intent survives a crash of the server, which is what lets a killed pass resume
//! without duplicates (the crash-safety rule of `mailferry_core::ports::store`), whatever
//! the server's default. Leases are decided under a row lock (`SELECT … FOR UPDATE`) and
//! expire by the database's clock, so processes on machines whose clocks disagree still
//! agree on who holds an entry. The schema is versioned in the table `mailferry_schema`; a
//! database written by a newer mailferry is refused. Text values are the model's `as_str`
//! spellings, as in SQLite, and text that is listed in order is compared in byte order
//! (`COLLATE "C"`), as SQLite does, whatever the database's default collation.
//!
//! The same parts as the SQLite store (`schema`, `entries`, `ledger`, `runs`, `queue`), plus
//! `connect` (the URL, the password, TLS).

mod conn;
pub mod connect;
mod entries;
mod ledger;
mod queue;
mod runs;
mod schema;

use std::collections::HashMap;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls, Row};

use mailferry_core::model::{
    Checkpoint, Entry, EntryId, EntryState, Failure, Flags, LedgerRow, RefreshRecord, RunEntry,
    RunId, RunKind, Uid, UidValidity,
};
use mailferry_core::ports::Store;
use mailferry_core::ports::store::{
    AfterPass, Lease, LivePass, MetaKey, Orphan, PassProgress, Queued, Refusal, Result, RunInfo,
    ServerUse, StoreError, StoreErrorKind, WorkerRecord, WorkerStats,
};

pub use connect::{Password, PostgresUrl, Tls};

/// How long a statement waits for a row another process has locked, like SQLite's busy
/// timeout; then it fails as `Busy`.
const LOCK_TIMEOUT: &str = "30s";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A job's state in one PostgreSQL database.
pub struct PostgresStore {
    /// The session, reopened when it breaks. The port's readers take `&self`; the client
    /// needs `&mut` for every query, so it is in a cell. A store is used by one thread at a
    /// time (`Store: Send`, not `Sync`), so the cell is never contended.
    conn: conn::Conn,
    /// The claims this store's writes of an entry are fenced by ([`Store::fence`]).
    fences: HashMap<EntryId, Lease>,
}

/// The store's words for a database error, classified. The server's own message is kept,
/// with its detail and hint; a client-side error keeps its whole chain of causes.
pub(crate) fn store_error(e: postgres::Error) -> StoreError {
    conn::note(&e);
    let Some(db) = e.as_db_error() else {
        // The client's own errors say what failed at the top and why in their sources
        // ("Error performing TLS handshake" ← "invalid peer certificate: UnknownIssuer").
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        let message = if text.contains("password missing") {
            format!(
                "The PostgreSQL server asks for a password: set {} or add the password to \
                 ~/.pgpass",
                connect::PASSWORD_ENV
            )
        } else {
            capitalise(&text)
        };
        return StoreError::new(StoreErrorKind::Other, message);
    };
    let code = db.code();
    let kind = if [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::CANNOT_CONNECT_NOW,
    ]
    .contains(code)
    {
        StoreErrorKind::Busy
    } else if *code == SqlState::DISK_FULL {
        StoreErrorKind::Full
    } else {
        StoreErrorKind::Other
    };
    // The server's words as it wrote them, after a capitalised name for who said them.
    let mut message = format!("PostgreSQL: {}", db.message());
    if let Some(detail) = db.detail() {
        message.push_str(": ");
        message.push_str(detail.trim_end_matches('.'));
    }
    if let Some(hint) = db.hint() {
        message.push_str(" (");
        message.push_str(hint.trim_end_matches('.'));
        message.push(')');
    }
    StoreError::new(kind, message)
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

pub(crate) trait Db<T> {
    fn db(self) -> Result<T>;
}

impl<T> Db<T> for std::result::Result<T, postgres::Error> {
    fn db(self) -> Result<T> {
        self.map_err(store_error)
    }
}

/// A value the port hands in that the database's signed 64-bit integers cannot hold.
pub(crate) fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| {
        StoreError::new(
            StoreErrorKind::Other,
            format!("The {what} {v} is too large for the state database"),
        )
    })
}

/// Typed reads of a row's columns, each stored value checked against the model's type: a
/// value out of range is a database another program wrote, reported as such.
pub(crate) trait Column {
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
    fn int(&self, i: usize) -> Result<i64>;
    fn u32(&self, i: usize) -> Result<u32>;
    fn opt_u32(&self, i: usize) -> Result<Option<u32>>;
    /// A UID or UIDVALIDITY: only non-zero ones are ever written (they come from servers,
    /// RFC 3501 §2.3.1.1), so a 0 is out of range, as a value too big for 32 bits is.
    fn nz<T>(&self, i: usize, new: fn(u32) -> Option<T>) -> Result<T>;
    fn opt_nz<T>(&self, i: usize, new: fn(u32) -> Option<T>) -> Result<Option<T>>;
    fn u64(&self, i: usize) -> Result<u64>;
    fn opt_u64(&self, i: usize) -> Result<Option<u64>>;
    fn flag(&self, i: usize) -> Result<bool>;
    fn float(&self, i: usize) -> Result<f64>;
    /// A stored text value of one of the model's enums.
    fn parsed<T>(&self, i: usize, parse: fn(&str) -> Option<T>) -> Result<T>;
}

fn out_of_range(row: &Row, i: usize, v: i64) -> StoreError {
    let column = row.columns().get(i).map_or("?", |c| c.name());
    StoreError::new(
        StoreErrorKind::Other,
        format!("{column} {v} is out of range in the state database"),
    )
}

impl Column for Row {
    fn text(&self, i: usize) -> Result<String> {
        self.try_get(i).db()
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        self.try_get(i).db()
    }
    fn int(&self, i: usize) -> Result<i64> {
        self.try_get(i).db()
    }
    fn u32(&self, i: usize) -> Result<u32> {
        let v = self.int(i)?;
        u32::try_from(v).map_err(|_| out_of_range(self, i, v))
    }
    fn opt_u32(&self, i: usize) -> Result<Option<u32>> {
        match self.try_get::<_, Option<i64>>(i).db()? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| out_of_range(self, i, v)),
        }
    }
    fn nz<T>(&self, i: usize, new: fn(u32) -> Option<T>) -> Result<T> {
        new(self.u32(i)?).ok_or_else(|| out_of_range(self, i, 0))
    }
    fn opt_nz<T>(&self, i: usize, new: fn(u32) -> Option<T>) -> Result<Option<T>> {
        self.opt_u32(i)?
            .map(|v| new(v).ok_or_else(|| out_of_range(self, i, 0)))
            .transpose()
    }
    fn u64(&self, i: usize) -> Result<u64> {
        let v = self.int(i)?;
        u64::try_from(v).map_err(|_| out_of_range(self, i, v))
    }
    fn opt_u64(&self, i: usize) -> Result<Option<u64>> {
        match self.try_get::<_, Option<i64>>(i).db()? {
            None => Ok(None),
            Some(v) => u64::try_from(v)
                .map(Some)
                .map_err(|_| out_of_range(self, i, v)),
        }
    }
    fn flag(&self, i: usize) -> Result<bool> {
        self.try_get(i).db()
    }
    fn float(&self, i: usize) -> Result<f64> {
        self.try_get(i).db()
    }
    fn parsed<T>(&self, i: usize, parse: fn(&str) -> Option<T>) -> Result<T> {
        let text: String = self.text(i)?;
        parse(&text).ok_or_else(|| {
            let column = self.columns().get(i).map_or("?", |c| c.name());
            StoreError::new(
                StoreErrorKind::Other,
                format!("Unknown {column} {text:?} in the state database"),
            )
        })
    }
}

pub(crate) fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn parse_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

impl PostgresStore {
    /// Connects to the job's database and brings its schema up to date (creating it on
    /// first use). Errors name the server by `url` (which has no password).
    pub fn open(url: &PostgresUrl, password: Option<&Password>) -> Result<PostgresStore> {
        Self::connect(url, password).map_err(|e| StoreError {
            message: format!("Unable to open the state database {url}: {}", e.message),
            ..e
        })
    }

    fn connect(url: &PostgresUrl, password: Option<&Password>) -> Result<PostgresStore> {
        let mut client = session(url, password, CONNECT_TIMEOUT)?;
        schema::migrate(&mut client)?;
        // The stamps of stores long closed (conn.rs) are of no use to anyone.
        client
            .execute(
                "DELETE FROM mailferry_writes WHERE at < now() - interval '1 day'",
                &[],
            )
            .db()?;
        let (url2, password2) = (url.clone(), password.cloned());
        let open: conn::Opener =
            Box::new(move |timeout| session(&url2, password2.as_ref(), timeout));
        Ok(PostgresStore {
            conn: conn::Conn::new(
                client,
                open,
                url.clone(),
                conn::writer_name(&crate::process::name()),
            ),
            fences: HashMap::new(),
        })
    }

    /// How long a broken connection is tried again before an operation fails (the job's
    /// `[migration] lease_seconds`; 30 s unless set).
    pub fn reconnecting_for(mut self, wait: Duration) -> PostgresStore {
        self.conn.reconnect_for = wait;
        self
    }
}

/// One session to the server, with what every session of the store sets.
fn session(url: &PostgresUrl, password: Option<&Password>, timeout: Duration) -> Result<Client> {
    let mut config = postgres::Config::new();
    config
        .user(&url.user)
        .host(&url.host)
        .port(url.port)
        .dbname(&url.dbname)
        .application_name("mailferry")
        .connect_timeout(timeout.min(CONNECT_TIMEOUT));
    if let Some(p) = password {
        config.password(p.expose());
    }
    let mut client = match &url.tls {
        Tls::Off => {
            config.ssl_mode(postgres::config::SslMode::Disable);
            config.connect(NoTls).db()?
        }
        Tls::Verified { root_cert } => {
            config.ssl_mode(postgres::config::SslMode::Require);
            let tls = mailferry_imap::tls::client_config_unpinned(root_cert.as_deref())
                .map_err(|e| tls_error(&e))?;
            config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .map_err(|e| certificate_hint(store_error(e), root_cert.is_some()))?
        }
    };
    client
        .batch_execute(&format!(
            "SET synchronous_commit = on; SET lock_timeout = '{LOCK_TIMEOUT}'"
        ))
        .db()?;
    Ok(client)
}

/// The certificate policy's errors, with the URL's parameter name in place of `tls_ca`.
fn tls_error(e: &mailferry_imap::tls::TlsError) -> StoreError {
    use mailferry_imap::tls::TlsError;
    let message = match e {
        TlsError::Setup(e) => format!("TLS set-up failed: {e}"),
        TlsError::ReadCa { path, source } => {
            format!("Cannot read sslrootcert {}: {source}", path.display())
        }
        TlsError::BadCertificate { path, source } => {
            format!(
                "Certificate in sslrootcert {} refused: {source}",
                path.display()
            )
        }
        TlsError::NoCertificate { path } => {
            format!("No PEM certificate in sslrootcert {}", path.display())
        }
    };
    StoreError::new(StoreErrorKind::Other, message)
}

/// A refused server certificate, with what to do about it.
fn certificate_hint(mut e: StoreError, has_root_cert: bool) -> StoreError {
    if e.message.contains("certificate") || e.message.contains("Certificate") {
        e.message.push_str(if has_root_cert {
            " (neither the system's trust anchors nor sslrootcert signed the server's \
             certificate, or it is not for this host name)"
        } else {
            " (for a server with a private CA, add sslrootcert=FILE with that CA's \
             certificate to the state URL)"
        });
    }
    e
}

/// Reads and idempotent writes go through [`conn::Conn::again`], the other writes through
/// [`conn::Conn::once`] (see `conn` for why each is safe to do again after a reconnect).
impl Store for PostgresStore {
    fn entries(&self) -> Result<Vec<Entry>> {
        self.conn.again(entries::all)
    }
    fn upsert_entries(&mut self, entries: &[Entry]) -> Result<(usize, usize)> {
        self.conn.once(|c| entries::upsert(c, entries))
    }
    fn set_entry_result(
        &mut self,
        run: RunId,
        id: &EntryId,
        state: EntryState,
        last_pass: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.conn
            .again(|c| entries::set_result(c, run, id, state, last_pass, error))
    }
    fn missing_source_ids(&self) -> Result<Vec<EntryId>> {
        self.conn.again(entries::missing_source_ids)
    }
    fn remove_entries(&mut self, ids: &[EntryId]) -> Result<()> {
        self.conn.again(|c| entries::remove(c, ids))
    }
    fn meta(&self, key: MetaKey) -> Result<Option<String>> {
        self.conn.again(|c| runs::meta(c, key))
    }
    fn set_meta(&mut self, key: MetaKey, value: &str) -> Result<()> {
        self.conn.again(|c| runs::set_meta(c, key, value))
    }
    fn record_refresh(&mut self, r: &RefreshRecord) -> Result<RunId> {
        self.conn.once(|c| runs::record_refresh(c, r))
    }
    fn last_refresh(&self) -> Result<Option<RefreshRecord>> {
        self.conn.again(runs::last_refresh)
    }
    fn refreshes(&self) -> Result<Vec<RunInfo>> {
        self.conn.again(runs::refreshes)
    }
    fn refresh_record(&self, run: RunId) -> Result<Option<RefreshRecord>> {
        self.conn.again(|c| runs::refresh(c, run))
    }
    fn ledger_folder(&self, entry: &EntryId, folder: &str) -> Result<Vec<LedgerRow>> {
        self.conn.again(|c| ledger::folder(c, entry, folder))
    }
    fn ledger_pending(&self, entry: &EntryId) -> Result<Vec<LedgerRow>> {
        self.conn.again(|c| ledger::pending(c, entry))
    }
    fn ledger_all(&self, entry: &EntryId) -> Result<Vec<LedgerRow>> {
        self.conn.again(|c| ledger::all(c, entry))
    }
    fn ledger_uids(
        &self,
        entry: &EntryId,
        folder: &str,
        uid_validity: UidValidity,
        ranges: &[(Uid, Uid)],
    ) -> Result<Vec<LedgerRow>> {
        self.conn
            .again(|c| ledger::uids(c, entry, folder, uid_validity, ranges))
    }
    fn ledger_folders(&self, entry: &EntryId) -> Result<Vec<String>> {
        self.conn.again(|c| ledger::folders(c, entry))
    }
    fn ledger_gone(&self, entry: &EntryId) -> Result<Vec<LedgerRow>> {
        self.conn.again(|c| ledger::gone(c, entry))
    }
    /// Idempotent: a row marked again stays marked.
    fn mark_gone(&mut self, entry: &EntryId, rows: &[LedgerRow]) -> Result<()> {
        let fence = self.fences.get(entry);
        self.conn
            .again(|c| ledger::mark_gone(c, fence, entry, rows))
    }
    fn copied_bytes(&self) -> Result<Vec<(EntryId, u64)>> {
        self.conn.again(|c| {
            c.query(
                "SELECT entry_id, SUM(size)::BIGINT FROM ledger WHERE state = 'copied'
                 GROUP BY entry_id ORDER BY entry_id COLLATE \"C\"",
                &[],
            )
            .db()?
            .iter()
            .map(|r| {
                Ok((
                    EntryId::new(r.text(0)?),
                    u64::try_from(r.int(1)?).unwrap_or(0),
                ))
            })
            .collect()
        })
    }
    fn target_uids(&self, entry: &EntryId, target_folder: &str) -> Result<Vec<Uid>> {
        self.conn
            .again(|c| ledger::target_uids(c, entry, target_folder))
    }
    /// Not idempotent: a second insert of a committed intent would be refused as a
    /// duplicate.
    fn insert_pending(&mut self, entry: &EntryId, rows: &[LedgerRow]) -> Result<()> {
        let fence = self.fences.get(entry);
        self.conn
            .once(|c| ledger::insert_pending(c, fence, entry, rows))
    }
    /// Idempotent: the rows get the same values again, the failed ones stay deleted.
    fn complete(
        &mut self,
        entry: &EntryId,
        copied: &[(&LedgerRow, Option<Uid>)],
        failed: &[&LedgerRow],
    ) -> Result<()> {
        let fence = self.fences.get(entry);
        self.conn
            .again(|c| ledger::complete(c, fence, entry, copied, failed))
    }
    fn set_flags(&mut self, entry: &EntryId, updates: &[(&LedgerRow, Flags)]) -> Result<()> {
        let fence = self.fences.get(entry);
        self.conn
            .again(|c| ledger::set_flags(c, fence, entry, updates))
    }
    /// Not idempotent: keys moved along a chain (A to B, B to C) would move again.
    fn rekey(&mut self, entry: &EntryId, pairs: &[(LedgerRow, LedgerRow)]) -> Result<()> {
        let fence = self.fences.get(entry);
        self.conn.once(|c| ledger::rekey(c, fence, entry, pairs))
    }
    /// Idempotent: an orphan recorded again is left as it is. Not fenced.
    fn record_orphans(&mut self, entry: &EntryId, orphans: &[Orphan]) -> Result<()> {
        self.conn
            .again(|c| ledger::record_orphans(c, entry, orphans))
    }
    fn orphans(&self, entry: &EntryId) -> Result<Vec<Orphan>> {
        self.conn.again(|c| ledger::orphans(c, entry))
    }
    /// Idempotent: a DELETE by key.
    fn drop_orphan(&mut self, entry: &EntryId, orphan: &Orphan) -> Result<()> {
        self.conn.again(|c| ledger::drop_orphan(c, entry, orphan))
    }
    fn checkpoint(&self, entry: &EntryId, folder: &str) -> Result<Option<Checkpoint>> {
        self.conn.again(|c| runs::checkpoint(c, entry, folder))
    }
    fn set_checkpoint(&mut self, entry: &EntryId, folder: &str, c: &Checkpoint) -> Result<()> {
        let fence = self.fences.get(entry);
        self.conn.again(|client| {
            let mut tx = client.transaction().db()?;
            runs::check_fence(&mut tx, fence)?;
            runs::set_checkpoint(&mut tx, entry, folder, c)?;
            tx.commit().db()
        })
    }
    fn start_run(&mut self, kind: RunKind) -> Result<RunId> {
        self.conn.once(|c| runs::start(c, kind))
    }
    fn import_run(
        &mut self,
        kind: RunKind,
        started: &str,
        finished: Option<&str>,
    ) -> Result<RunId> {
        self.conn.once(|c| runs::import(c, kind, started, finished))
    }
    fn checkpoints(&self, entry: &EntryId) -> Result<Vec<(String, Checkpoint)>> {
        self.conn.again(|c| runs::checkpoints(c, entry))
    }
    fn finish_run(&mut self, run: RunId) -> Result<()> {
        self.conn.again(|c| runs::finish(c, run))
    }
    fn record_run_entry(&mut self, run: RunId, r: &RunEntry) -> Result<()> {
        self.conn.again(|c| runs::record_entry(c, run, r))
    }
    fn record_failure(&mut self, run: RunId, f: &Failure) -> Result<()> {
        self.conn.once(|c| runs::record_failure(c, run, f))
    }
    fn last_run(&self, kind: RunKind) -> Result<Option<RunInfo>> {
        self.conn.again(|c| runs::last(c, kind))
    }
    fn runs(&self, kind: RunKind) -> Result<Vec<RunInfo>> {
        self.conn.again(|c| runs::all(c, kind))
    }
    fn run_entries(&self, run: RunId) -> Result<Vec<RunEntry>> {
        self.conn.again(|c| runs::entries(c, run))
    }
    fn failures(&self, run: RunId) -> Result<Vec<Failure>> {
        self.conn.again(|c| runs::failures(c, run))
    }
    /// Not idempotent: a claim that committed is this store's, and asking again would find
    /// it held (by this very process).
    fn claim(
        &mut self,
        entry: &EntryId,
        holder: &str,
        ttl: Duration,
        from_epoch: Option<i64>,
        uses: &[ServerUse],
    ) -> Result<std::result::Result<Lease, Refusal>> {
        self.conn
            .once(|c| runs::lease(c, entry, holder, ttl, from_epoch, uses))
    }
    fn renew(&mut self, lease: &Lease, ttl: Duration) -> Result<()> {
        self.conn.again(|c| runs::renew(c, lease, ttl))
    }
    fn release(&mut self, lease: &Lease) -> Result<()> {
        self.conn.again(|c| runs::release(c, lease))
    }
    fn fence(&mut self, lease: &Lease) {
        self.fences.insert(lease.entry.clone(), lease.clone());
    }
    fn unfence(&mut self, entry: &EntryId) {
        self.fences.remove(entry);
    }
    /// One transaction: the run line, the entry's result, its queue change and the claim
    /// given up, refused (changing nothing) when the claim was taken over. Not idempotent:
    /// once it committed, the claim is given up, and a second attempt would be refused as
    /// taken over.
    fn finish_pass(
        &mut self,
        run: RunId,
        result: &RunEntry,
        last_pass: &str,
        lease: &Lease,
        after: AfterPass,
    ) -> Result<()> {
        self.conn.once(|tx| {
            runs::check_fence(tx, Some(lease))?;
            runs::record_entry(tx, run, result)?;
            entries::set_result(
                tx,
                run,
                &result.entry_id,
                result.state,
                last_pass,
                result.error.as_deref(),
            )?;
            match after {
                AfterPass::Keep => {}
                AfterPass::Dequeue(ticket) => {
                    queue::dequeue(tx, &result.entry_id, ticket)?;
                }
                AfterPass::Defer(wait) => {
                    queue::defer(tx, &result.entry_id, wait)?;
                }
            }
            runs::release(tx, lease)
        })
    }
    fn report_progress(&mut self, lease: &Lease, progress: &PassProgress) -> Result<()> {
        self.conn
            .again(|c| runs::report_progress(c, lease, progress))
    }
    fn live_passes(&self) -> Result<Vec<LivePass>> {
        self.conn.again(runs::live_passes)
    }
    fn enqueue(&mut self, entries: &[EntryId]) -> Result<usize> {
        self.conn.once(|c| queue::enqueue(c, entries))
    }
    fn queued(&self) -> Result<Vec<Queued>> {
        self.conn.again(queue::queued)
    }
    fn dequeue(&mut self, entry: &EntryId, ticket: i64) -> Result<bool> {
        self.conn.once(|c| queue::dequeue(c, entry, ticket))
    }
    fn defer(&mut self, entry: &EntryId, wait: Duration) -> Result<bool> {
        self.conn.once(|c| queue::defer(c, entry, wait))
    }
    fn register_worker(&mut self, name: &str) -> Result<()> {
        self.conn.again(|c| queue::register(c, name))
    }
    fn worker_heartbeat(&mut self, name: &str, stats: &WorkerStats) -> Result<()> {
        self.conn.again(|c| queue::heartbeat(c, name, stats, false))
    }
    fn deregister_worker(&mut self, name: &str, stats: &WorkerStats) -> Result<()> {
        self.conn.again(|c| queue::heartbeat(c, name, stats, true))
    }
    fn workers(&self) -> Result<Vec<WorkerRecord>> {
        self.conn.again(queue::workers)
    }
}

#[cfg(test)]
mod tests;

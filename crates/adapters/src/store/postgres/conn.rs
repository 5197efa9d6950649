//! The store's one connection, kept up: a connection that breaks (the server restarted, the
//! network cut it) is opened again, and the operation it broke is done again where that is
//! safe, for up to a bounded time (`[migration] lease_seconds`); past it, the operation fails
//! as it always did.
//!
//! What "safe" means depends on the operation:
//! - a read is simply asked again;
//! - an idempotent write (an `UPDATE` to given values, an upsert, a `DELETE` by key: doing it
//!   twice is doing it once) is done again;
//! - any other write runs in a transaction that first stamps this store's row of
//!   `mailferry_writes` with the write's sequence number. A write whose connection broke
//!   before its `COMMIT` was sent did not commit (the server rolls an open transaction back
//!   when its connection ends), so it is done again. One whose `COMMIT` got no answer may have
//!   committed: after reconnecting, the stamp is read under `FOR SHARE`, which waits for the
//!   old session's transaction if the server is still finishing it, and tells whether it
//!   committed. If it did, its result stands and nothing is applied twice.
//!
//! Fencing holds across a reconnect: the fences live in the store, not in the session, and
//! every fenced write checks its claim again in the transaction that is retried.

use std::cell::{Cell, RefCell, RefMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postgres::{Client, GenericClient, Statement};

use super::connect::PostgresUrl;
use super::{Column, Db};
use mailferry_core::ports::store::{Result, StoreError, StoreErrorKind};

/// How long a broken connection is tried again when the job does not say
/// (`[migration] lease_seconds`' default).
pub const DEFAULT_RECONNECT_FOR: Duration = Duration::from_secs(30);
/// The first wait between two connection attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

thread_local! {
    /// Set by [`super::store_error`] when the error it classifies is a lost connection. A
    /// store is used by one thread at a time, and an operation's errors are classified on
    /// that thread, so the flag read after an operation is that operation's.
    static LOST: Cell<bool> = const { Cell::new(false) };
    /// The session the operation running on this thread uses (a [`Conn`]'s `session`), and
    /// the statements prepared on it: [`prepared`].
    static SESSION: Cell<u64> = const { Cell::new(0) };
    static STATEMENTS: RefCell<Vec<(u64, HashMap<&'static str, Statement>)>> =
        const { RefCell::new(Vec::new()) };
}

/// How many sessions' statements a thread keeps: enough for a thread that uses a few stores
/// in turn (`serve` beside a pass, a test with several) not to prepare them again at every
/// switch; the one used longest ago goes first.
const SESSIONS_KEPT: usize = 4;

#[cfg(test)]
thread_local! {
    /// How many statements [`prepared`] has had the server prepare on this thread.
    pub(crate) static PREPARES: Cell<u64> = const { Cell::new(0) };
}

/// Numbers sessions (connections) across the process: a statement prepared on one is never
/// used on another.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// The statement `sql` prepared on the session of the operation running on this thread, kept
/// for the next call: a statement given as text is parsed, planned and described by the
/// server at every call (a round trip of its own), which was a large part of the database's
/// work in a pass (bench/scale.sh, PG_STATS=1). Kept per session, for the last
/// [`SESSIONS_KEPT`] sessions this thread used: a reconnect's new session starts empty, and a
/// session gone is forgotten once others have taken its place.
pub(crate) fn prepared(c: &mut impl GenericClient, sql: &'static str) -> Result<Statement> {
    let session = SESSION.with(Cell::get);
    let cached = STATEMENTS.with(|s| {
        let mut s = s.borrow_mut();
        let i = s.iter().position(|(id, _)| *id == session)?;
        // The session used last goes to the end: the front is the one to forget.
        if i + 1 < s.len() {
            let kept = s.remove(i);
            s.push(kept);
        }
        s.last()
            .and_then(|(_, statements)| statements.get(sql).cloned())
    });
    if let Some(st) = cached {
        return Ok(st);
    }
    let st = c.prepare(sql).db()?;
    #[cfg(test)]
    PREPARES.with(|n| n.set(n.get() + 1));
    if session != 0 {
        STATEMENTS.with(|s| {
            let mut s = s.borrow_mut();
            match s.iter_mut().find(|(id, _)| *id == session) {
                Some((_, statements)) => {
                    statements.insert(sql, st.clone());
                }
                None => {
                    if s.len() >= SESSIONS_KEPT {
                        s.remove(0);
                    }
                    s.push((session, HashMap::from([(sql, st.clone())])));
                }
            }
        });
    }
    Ok(st)
}

/// Whether a client error means the connection is gone (rather than a statement refused).
pub(crate) fn is_lost(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // Class 08: connection exception; 57P01-57P03: the server shutting down, crashed,
        // or not accepting connections yet.
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    // The client's own timeout ("timeout waiting for server") while connecting.
    if e.to_string().starts_with("timeout") {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

pub(crate) fn note(e: &postgres::Error) {
    if is_lost(e) {
        LOST.with(|l| l.set(true));
    }
}

/// Opens a session: connects and sets what every session of the store needs.
pub(crate) type Opener = Box<dyn Fn(Duration) -> Result<Client> + Send>;

/// One session to the database, reopened when it breaks.
pub struct Conn {
    client: RefCell<Client>,
    /// This session's number (new at each reconnect), for [`prepared`].
    session: Cell<u64>,
    open: Opener,
    url: PostgresUrl,
    /// This store's row in `mailferry_writes`.
    writer: String,
    /// The sequence number of the last write begun.
    seq: i64,
    /// How long a broken connection is tried again.
    pub(crate) reconnect_for: Duration,
    /// Set when reconnecting failed for a whole `reconnect_for`: later operations try once
    /// more, without waiting, so a process whose database is gone fails its passes promptly.
    down: Cell<bool>,
}

/// How one attempt of a write went.
enum Attempt<T> {
    Done(T),
    Failed(StoreError),
    /// The connection broke before the `COMMIT` was sent: nothing committed.
    Lost,
    /// The `COMMIT` was sent and no answer came: the value if it committed.
    CommitLost(T),
}

impl Conn {
    pub(crate) fn new(client: Client, open: Opener, url: PostgresUrl, writer: String) -> Conn {
        Conn {
            client: RefCell::new(client),
            session: Cell::new(NEXT_SESSION.fetch_add(1, Ordering::Relaxed)),
            open,
            url,
            writer,
            seq: 0,
            reconnect_for: DEFAULT_RECONNECT_FOR,
            down: Cell::new(false),
        }
    }

    fn borrow(&self) -> Result<RefMut<'_, Client>> {
        SESSION.with(|s| s.set(self.session.get()));
        self.client.try_borrow_mut().map_err(|_| {
            StoreError::new(
                StoreErrorKind::Other,
                "The state database connection is in use by another call",
            )
        })
    }

    fn lost(&self, client: &Client) -> bool {
        LOST.with(Cell::take) || client.is_closed()
    }

    /// A read, or a write that is idempotent: asked again after a reconnect.
    pub fn again<T>(&self, mut f: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        let mut deadline = None;
        loop {
            LOST.with(|l| l.set(false));
            let (result, lost) = {
                let mut client = self.borrow()?;
                let result = f(&mut client);
                let lost = result.is_err() && self.lost(&client);
                (result, lost)
            };
            match result {
                Err(_) if lost => self.reconnect(&mut deadline)?,
                result => return result,
            }
        }
    }

    /// A write that must not be applied twice, in one transaction that `f` fills (it must
    /// not begin or commit one itself).
    pub fn once<T>(&mut self, mut f: impl FnMut(&mut Client) -> Result<T>) -> Result<T> {
        let mut deadline = None;
        loop {
            self.seq += 1;
            let seq = self.seq;
            match self.attempt(seq, &mut f) {
                Attempt::Done(v) => return Ok(v),
                Attempt::Failed(e) => return Err(e),
                Attempt::Lost => self.reconnect(&mut deadline)?,
                Attempt::CommitLost(v) => {
                    self.reconnect(&mut deadline)?;
                    if self.committed(seq, &mut deadline)? {
                        return Ok(v);
                    }
                }
            }
        }
    }

    fn attempt<T>(&mut self, seq: i64, f: &mut impl FnMut(&mut Client) -> Result<T>) -> Attempt<T> {
        LOST.with(|l| l.set(false));
        SESSION.with(|s| s.set(self.session.get()));
        let client = self.client.get_mut();
        // The writer's name is made of characters that need no quoting (see `writer_name`),
        // so the stamp can go with the BEGIN in one round trip.
        let begin = client
            .batch_execute(&format!(
                "BEGIN; INSERT INTO mailferry_writes (writer, seq, at) \
                 VALUES ('{}', {seq}, now()) \
                 ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq, at = excluded.at",
                self.writer
            ))
            .db();
        let value = match begin.and_then(|()| f(client)) {
            Ok(v) => v,
            Err(e) => {
                if LOST.with(Cell::take) || client.is_closed() {
                    return Attempt::Lost;
                }
                // A statement refused (or the fence): nothing of it stays.
                let _ = client.batch_execute("ROLLBACK");
                return Attempt::Failed(e);
            }
        };
        match client.batch_execute("COMMIT").db() {
            Ok(()) => Attempt::Done(value),
            Err(_) if LOST.with(Cell::take) || client.is_closed() => Attempt::CommitLost(value),
            Err(e) => Attempt::Failed(e),
        }
    }

    /// Whether the write stamped `seq` committed. `FOR SHARE` waits for the stamp's row if
    /// the old session's transaction still holds it (its server side finishing the COMMIT).
    fn committed(&self, seq: i64, deadline: &mut Option<Instant>) -> Result<bool> {
        loop {
            LOST.with(|l| l.set(false));
            let (result, lost) = {
                let mut client = self.borrow()?;
                let result = client
                    .query_opt(
                        "SELECT seq FROM mailferry_writes WHERE writer = $1 FOR SHARE",
                        &[&self.writer],
                    )
                    .db()
                    .and_then(|row| row.map(|r| r.int(0)).transpose());
                let lost = result.is_err() && self.lost(&client);
                (result, lost)
            };
            match result {
                Ok(stamp) => return Ok(stamp.is_some_and(|s| s >= seq)),
                Err(_) if lost => self.reconnect(deadline)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens a new session in place of the broken one, trying until `deadline` (set at the
    /// first loss of this operation); past it, the operation fails with the last attempt's
    /// words.
    fn reconnect(&self, deadline: &mut Option<Instant>) -> Result<()> {
        let started = Instant::now();
        let deadline = *deadline.get_or_insert_with(|| {
            if self.down.get() {
                started
            } else {
                started + self.reconnect_for
            }
        });
        let mut pause = FIRST_PAUSE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // A connection attempt gets what is left of the wait, and at least a second.
            LOST.with(|l| l.set(false));
            let last = match (self.open)(left.max(Duration::from_secs(1))) {
                Ok(client) => {
                    *self.borrow()? = client;
                    self.session
                        .set(NEXT_SESSION.fetch_add(1, Ordering::Relaxed));
                    self.down.set(false);
                    return Ok(());
                }
                Err(e) if !retryable(&e) => return Err(self.gave_up(&e.message)),
                Err(e) => e.message,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.down.set(true);
                return Err(self.gave_up(&last));
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    fn gave_up(&self, why: &str) -> StoreError {
        StoreError::new(
            StoreErrorKind::Other,
            format!(
                "Lost the connection to the state database {} and could not reconnect within \
                 {} s: {why}",
                self.url,
                self.reconnect_for.as_secs()
            ),
        )
    }
}

/// Whether a failed connection attempt is worth another: the server not there (yet), or
/// starting up, or full; not a refused password or a missing database.
fn retryable(e: &StoreError) -> bool {
    LOST.with(Cell::take) || e.kind == StoreErrorKind::Busy
}

/// A name for this store's row in `mailferry_writes`, unique across processes and machines:
/// the process's name (host, PID namespace and PID: `process::name`), and the time the store
/// was opened, in characters that need no quoting.
pub(crate) fn writer_name(process: &str) -> String {
    static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let process: String = process
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | ':'))
        .take(96)
        .collect();
    format!("{process}:{nanos:x}:{n}")
}

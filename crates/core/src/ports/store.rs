//! The store port: the job's state — entries, the ledger with its intents, folder
//! checkpoints, runs, failures, refresh results, meta values and leases.
//!
//! The ledger is the only truth about what was copied. Its crash-safety rule, which every
//! implementation must keep: [`Store::insert_pending`] commits intents durably *before* the
//! engine sends their APPENDs, and [`Store::complete`] records the outcome in one transaction.
//! A crash in between leaves `pending` rows, which the engine resolves on the next pass. Every
//! method that changes several rows does so atomically. Secrets are never stored.
//!
//! `crate::store_conformance` holds the tests every implementation must pass.

use std::time::Duration;

use crate::model::{
    Checkpoint, Entry, EntryId, EntryState, Failure, Fingerprint, Flags, LedgerRow, RefreshRecord,
    RunEntry, RunId, RunKind, Uid, UidValidity,
};

/// What went wrong with the state store, in words for the admin (the database's own words
/// included).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// Another process holds the database (locked past the busy timeout).
    Busy,
    /// The disk or the database is full.
    Full,
    /// The database was written by a newer mailferry, or is not a mailferry state at all.
    Schema,
    /// The job asks for a kind of store this build does not have.
    Unsupported,
    /// A write under a claim that another process has taken over since: refused, nothing
    /// changed (see [`Store::fence`]).
    LeaseLost,
    /// Anything else the database reported.
    Other,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> StoreError {
        StoreError {
            kind,
            message: message.into(),
        }
    }

    /// A claim on an entry that another process has taken over since (renewing it, or
    /// reporting under it, is refused).
    pub fn lease_lost(entry: &EntryId) -> StoreError {
        StoreError::new(
            StoreErrorKind::LeaseLost,
            format!("The lease on entry {entry} was taken over by another process"),
        )
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == StoreErrorKind::Busy
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Values the store keeps about the job itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// SHA-256 of the job file as last seen, to notice an edited job (SPEC §6 removals).
    JobFileSha256,
}

impl MetaKey {
    pub fn as_str(self) -> &'static str {
        match self {
            MetaKey::JobFileSha256 => "job_file_sha256",
        }
    }
}

/// A run as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub id: RunId,
    pub started: String,
    pub finished: Option<String>,
}

/// One process's claim on one entry: while it holds it, no other process passes that entry.
/// `epoch` grows with every new holder, so a holder that lost its claim can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub entry: EntryId,
    pub holder: String,
    pub epoch: i64,
}

/// What a pass will use on one server, recorded with its lease: until the lease ends or
/// expires, the claims of every process of the job count it against the server's caps
/// (`max_connections`, `max_connections_per_mailbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUse {
    /// The server, as every process of the job names it: `host:port` for IMAP.
    pub server: String,
    /// The mailbox on it (its login, lower-cased), for the per-mailbox cap.
    pub mailbox: String,
    /// The connections the pass may open on it, to this mailbox.
    pub connections: u32,
    /// The most connections the live passes of the job may have on this server together.
    pub max_connections: u32,
    /// The most they may have to this mailbox on this server together, when capped.
    pub max_per_mailbox: Option<u32>,
}

/// Why a claim was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another process holds the entry.
    Held(LeaseHolder),
    /// The live leases of other passes leave no room under a cap of a server the pass uses:
    /// nothing was claimed; the pass waits (or stays queued) until they end.
    Full(NoRoom),
}

/// The cap that left no room for a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoom {
    pub server: String,
    /// Set when the per-mailbox cap is the one that is full.
    pub mailbox: Option<String>,
    /// Connections the other live passes have there now.
    pub in_use: u32,
    pub cap: u32,
}

impl std::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mailbox {
            Some(m) => write!(
                f,
                "{} of {} connections to mailbox {m} on {} are in use by other passes",
                self.in_use, self.cap, self.server
            ),
            None => write!(
                f,
                "{} of {} connections to {} are in use by other passes",
                self.in_use, self.cap, self.server
            ),
        }
    }
}

/// Whether the live leases of other passes leave room for `uses`: `in_use(server, mailbox)`
/// tells how many connections they have on a server (`mailbox` `None`) or on one mailbox of
/// it. Each server's cap holds for the connections of both sides on it (a job whose source
/// and target are one server counts both); a pass whose own connections exceed a cap may
/// still run alone there, or it would wait forever. The one rule every store applies, in the
/// claim's own transaction.
pub fn check_room(
    uses: &[ServerUse],
    mut in_use: impl FnMut(&str, Option<&str>) -> Result<u32>,
) -> Result<Option<NoRoom>> {
    let mut servers: Vec<&str> = uses.iter().map(|u| u.server.as_str()).collect();
    servers.sort_unstable();
    servers.dedup();
    for server in servers {
        let on: Vec<&ServerUse> = uses.iter().filter(|u| u.server == server).collect();
        let mine: u32 = on.iter().map(|u| u.connections).sum();
        let cap = on
            .iter()
            .map(|u| u.max_connections)
            .min()
            .unwrap_or(u32::MAX);
        let others = in_use(server, None)?;
        if others > 0 && others.saturating_add(mine) > cap {
            return Ok(Some(NoRoom {
                server: server.to_string(),
                mailbox: None,
                in_use: others,
                cap,
            }));
        }
        let mut mailboxes: Vec<&str> = on.iter().map(|u| u.mailbox.as_str()).collect();
        mailboxes.sort_unstable();
        mailboxes.dedup();
        for mailbox in mailboxes {
            let of: Vec<&&ServerUse> = on.iter().filter(|u| u.mailbox == mailbox).collect();
            let Some(cap) = of.iter().filter_map(|u| u.max_per_mailbox).min() else {
                continue;
            };
            let mine: u32 = of.iter().map(|u| u.connections).sum();
            let others = in_use(server, Some(mailbox))?;
            if others > 0 && others.saturating_add(mine) > cap {
                return Ok(Some(NoRoom {
                    server: server.to_string(),
                    mailbox: Some(mailbox.to_string()),
                    in_use: others,
                    cap,
                }));
            }
        }
    }
    Ok(None)
}

/// How far a leased pass has got, as its process last said.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PassProgress {
    pub planned_messages: u64,
    pub planned_bytes: u64,
    pub copied: u64,
    pub bytes: u64,
}

/// A pass some process is running now: its live lease and the progress it reported, so any
/// process reading the store (the web console, `status`) can show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivePass {
    pub entry: EntryId,
    pub holder: String,
    pub since: String,
    /// How long ago its process last renewed the claim (or took it), by the store's clock.
    pub heartbeat_age: Duration,
    pub progress: PassProgress,
}

/// What becomes of an entry's place in the queue when its pass is recorded
/// ([`Store::finish_pass`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPass {
    /// Not queued, or left as it is.
    Keep,
    /// Taken off, if its ticket is still this one.
    Dequeue(i64),
    /// Left queued, with a failure more and no pass before this wait has gone by.
    Defer(Duration),
}

/// The queue change of [`Store::finish_pass`], by the store's own queue methods: for a store
/// whose calls are not one transaction each (the default, the memory store).
pub(crate) fn queue_after_pass<S: Store + ?Sized>(
    s: &mut S,
    entry: &EntryId,
    after: AfterPass,
) -> Result<()> {
    match after {
        AfterPass::Keep => {}
        AfterPass::Dequeue(ticket) => {
            s.dequeue(entry, ticket)?;
        }
        AfterPass::Defer(wait) => {
            s.defer(entry, wait)?;
        }
    }
    Ok(())
}

/// An entry queued for the workers ([`Store::enqueue`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub entry: EntryId,
    /// When it was queued (first: queuing it again while it waits keeps this time).
    pub queued: String,
    /// Changes every time the entry is queued, even while it waits: a pass that started with
    /// this ticket may take it off the queue only if it is still the entry's ticket
    /// ([`Store::dequeue`]).
    pub ticket: i64,
    /// Passes of it that failed in a row ([`Store::defer`]); a pass that finishes resets it.
    pub failures: u32,
    /// How long until a worker may pass it again after its last failure, by the store's clock
    /// (zero: it may be passed now).
    pub wait: Duration,
}

/// What a worker has done since it started, as it last said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WorkerStats {
    /// Passes finished (recorded), of any outcome.
    pub passes: u64,
    /// Messages copied by those passes.
    pub messages: u64,
    /// Bytes copied by those passes.
    pub bytes: u64,
}

/// A `mailferry worker` process as registered in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    /// The process: `host:pid`, as it holds leases.
    pub name: String,
    pub started: String,
    pub heartbeat: String,
    /// How long ago its last heartbeat was, by the store's clock.
    pub heartbeat_age: Duration,
    /// Set when it deregistered (a clean stop).
    pub stopped: Option<String>,
    pub stats: WorkerStats,
}

/// A copy on the target that an APPEND made after its process had lost the entry's lease:
/// the server stored it (and said where), but the fenced ledger write that would have named
/// it was refused. The entry's next holder removes it unless the ledger names it (a new
/// holder's reconciliation may have adopted it meanwhile).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Orphan {
    pub target_folder: String,
    /// The target folder's UIDVALIDITY when the copy was stored: under another one, the UID
    /// names some other message (or none).
    pub uid_validity: UidValidity,
    pub uid: Uid,
    pub fingerprint: Fingerprint,
}

/// Who holds an entry now, for a refusal that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub holder: String,
    pub since: String,
    pub epoch: i64,
}

pub trait Store: Send {
    // ---- entries
    /// Every entry, ordered by ID.
    fn entries(&self) -> Result<Vec<Entry>>;
    /// Inserts or updates entries by ID, keeping their ledger and migration state, all or
    /// none; returns (added, updated).
    fn upsert_entries(&mut self, entries: &[Entry]) -> Result<(usize, usize)>;
    /// Records the end of an entry's pass in `run`: its state, when, the error if any; the
    /// copied count from the ledger and the failed count of that run.
    fn set_entry_result(
        &mut self,
        run: RunId,
        id: &EntryId,
        state: EntryState,
        last_pass: &str,
        error: Option<&str>,
    ) -> Result<()>;
    /// Entries whose source mailbox a refresh found missing.
    fn missing_source_ids(&self) -> Result<Vec<EntryId>>;
    /// Removes entries and everything recorded for them (ledger, checkpoints, orphans, their
    /// place in the queue), all or none.
    fn remove_entries(&mut self, ids: &[EntryId]) -> Result<()>;
    fn meta(&self, key: MetaKey) -> Result<Option<String>>;
    fn set_meta(&mut self, key: MetaKey, value: &str) -> Result<()>;

    // ---- refresh
    /// Records one refresh run and its lines, all or none.
    fn record_refresh(&mut self, r: &RefreshRecord) -> Result<RunId>;
    fn last_refresh(&self) -> Result<Option<RefreshRecord>>;
    /// Every refresh recorded, newest first (a refresh is recorded once it has finished, and
    /// only when it started: `finished` is `None`).
    fn refreshes(&self) -> Result<Vec<RunInfo>>;
    /// One recorded refresh by the ID [`Store::record_refresh`] gave it.
    fn refresh_record(&self, run: RunId) -> Result<Option<RefreshRecord>>;

    // ---- ledger
    /// Ledger rows of one source folder (any UIDVALIDITY), by source UID.
    fn ledger_folder(&self, entry: &EntryId, folder: &str) -> Result<Vec<LedgerRow>>;
    /// Ledger rows of one source folder and UIDVALIDITY whose UID lies in one of these
    /// ranges (inclusive), by UID: what a delta scan names, without the folder's other rows.
    fn ledger_uids(
        &self,
        entry: &EntryId,
        folder: &str,
        uid_validity: UidValidity,
        ranges: &[(Uid, Uid)],
    ) -> Result<Vec<LedgerRow>>;
    fn ledger_pending(&self, entry: &EntryId) -> Result<Vec<LedgerRow>>;
    fn ledger_all(&self, entry: &EntryId) -> Result<Vec<LedgerRow>>;
    /// The source folders the entry's rows name, sorted: one the source no longer has was
    /// renamed or deleted there, and its rows may match messages now found elsewhere.
    fn ledger_folders(&self, entry: &EntryId) -> Result<Vec<String>>;
    /// Copied rows marked gone ([`Store::mark_gone`]), by UID: their source message was seen
    /// expunged and no new message with its bytes had turned up yet.
    fn ledger_gone(&self, entry: &EntryId) -> Result<Vec<LedgerRow>>;
    /// Marks copied rows gone from the source, in one transaction, so that a later pass that
    /// no longer scans their folder still matches a message refiled elsewhere to its copy.
    /// Marking a row again, a pending row or a row the ledger lacks changes nothing;
    /// [`Store::rekey`] clears the mark.
    fn mark_gone(&mut self, entry: &EntryId, rows: &[LedgerRow]) -> Result<()>;
    /// Per entry, the bytes of its copied messages: its mailbox's size on the target as far
    /// as the ledger knows (entries without a copy are left out).
    fn copied_bytes(&self) -> Result<Vec<(EntryId, u64)>>;
    /// Target UIDs the ledger says are ours in one target folder.
    fn target_uids(&self, entry: &EntryId, target_folder: &str) -> Result<Vec<Uid>>;
    /// Commits intents (rows in state `pending`), durably, before any of their APPENDs is
    /// sent. An intent for a source message the ledger already has is an error: the engine
    /// never plans a copy of a message it has.
    fn insert_pending(&mut self, entry: &EntryId, rows: &[LedgerRow]) -> Result<()>;
    /// Marks intents copied (with their target UID when known) and forgets the refused
    /// ones, in one transaction.
    fn complete(
        &mut self,
        entry: &EntryId,
        copied: &[(&LedgerRow, Option<Uid>)],
        failed: &[&LedgerRow],
    ) -> Result<()>;
    fn set_flags(&mut self, entry: &EntryId, updates: &[(&LedgerRow, Flags)]) -> Result<()>;
    /// Re-keys rows in one transaction: each source message now lives at the new row's
    /// folder / UIDVALIDITY / UID, on the target at its target folder / UID, with its flags;
    /// a re-keyed row is no longer marked gone.
    fn rekey(&mut self, entry: &EntryId, pairs: &[(LedgerRow, LedgerRow)]) -> Result<()>;
    /// Records target copies made by APPENDs whose ledger write was refused for a lost lease
    /// ([`Orphan`]), all or none. Never fenced: the process that lost its lease writes them.
    /// Recording one already recorded changes nothing.
    fn record_orphans(&mut self, entry: &EntryId, orphans: &[Orphan]) -> Result<()>;
    /// The entry's orphans, by target folder and UID.
    fn orphans(&self, entry: &EntryId) -> Result<Vec<Orphan>>;
    /// Forgets one orphan (removed from the target, or adopted by the ledger); forgetting one
    /// not recorded changes nothing.
    fn drop_orphan(&mut self, entry: &EntryId, orphan: &Orphan) -> Result<()>;

    // ---- checkpoints
    fn checkpoint(&self, entry: &EntryId, folder: &str) -> Result<Option<Checkpoint>>;
    fn set_checkpoint(&mut self, entry: &EntryId, folder: &str, c: &Checkpoint) -> Result<()>;
    /// Every checkpoint of one entry, by source folder.
    fn checkpoints(&self, entry: &EntryId) -> Result<Vec<(String, Checkpoint)>>;

    // ---- runs
    fn start_run(&mut self, kind: RunKind) -> Result<RunId>;
    /// Records a run with the times another store gave it (`state copy`), under a new ID.
    fn import_run(&mut self, kind: RunKind, started: &str, finished: Option<&str>)
    -> Result<RunId>;
    fn finish_run(&mut self, run: RunId) -> Result<()>;
    fn record_run_entry(&mut self, run: RunId, r: &RunEntry) -> Result<()>;
    fn record_failure(&mut self, run: RunId, f: &Failure) -> Result<()>;
    /// The latest run of a kind.
    fn last_run(&self, kind: RunKind) -> Result<Option<RunInfo>>;
    /// Every run of a kind, newest first.
    fn runs(&self, kind: RunKind) -> Result<Vec<RunInfo>>;
    fn run_entries(&self, run: RunId) -> Result<Vec<RunEntry>>;
    fn failures(&self, run: RunId) -> Result<Vec<Failure>>;

    // ---- leases
    /// Claims an entry for `holder` for `ttl`, recording the servers its pass will use
    /// (`uses`), in one transaction: refused with [`Refusal::Held`] when another holder's
    /// claim has not expired (with `from_epoch`, unless it is still the claim of that epoch:
    /// a take-over from a holder known to be gone), else with [`Refusal::Full`] when the
    /// other live leases leave no room under a cap of those servers ([`check_room`], counted
    /// under a lock that serialises such claims across processes). A claim whose holder
    /// stopped renewing it is taken over with a new epoch; the entry's own earlier lease
    /// never counts against its new claim.
    fn claim(
        &mut self,
        entry: &EntryId,
        holder: &str,
        ttl: Duration,
        from_epoch: Option<i64>,
        uses: &[ServerUse],
    ) -> Result<std::result::Result<Lease, Refusal>>;
    /// Claims an entry for `holder` for `ttl`, using no capped server; `Err(holder)` when
    /// another holder's claim has not expired. A claim whose holder stopped renewing it is
    /// taken over with a new epoch.
    fn lease(
        &mut self,
        entry: &EntryId,
        holder: &str,
        ttl: Duration,
    ) -> Result<std::result::Result<Lease, LeaseHolder>> {
        held_only(self.claim(entry, holder, ttl, None, &[])?)
    }
    /// Takes a claim over from a holder known to be gone, if it is still the claim of that
    /// epoch (another process may have taken it meanwhile: then `Err` with the new holder).
    fn take_over(
        &mut self,
        entry: &EntryId,
        holder: &str,
        ttl: Duration,
        from_epoch: i64,
    ) -> Result<std::result::Result<Lease, LeaseHolder>> {
        held_only(self.claim(entry, holder, ttl, Some(from_epoch), &[])?)
    }
    /// Extends a claim; an error of kind `Other` when the claim was lost to another holder.
    fn renew(&mut self, lease: &Lease, ttl: Duration) -> Result<()>;
    /// Gives a claim up.
    fn release(&mut self, lease: &Lease) -> Result<()>;
    /// Ends an entry's pass: its run line, its result on the entry, what becomes of its place
    /// in the queue (taken off by its ticket, as [`Store::dequeue`], or deferred, as
    /// [`Store::defer`]), and its claim given up. A store with transactions does all of it in
    /// one (one commit, one fsync, per entry: a pass over many unchanged mailboxes is mostly
    /// these), so that no other worker finds the entry queued and free in between and passes
    /// it once more.
    fn finish_pass(
        &mut self,
        run: RunId,
        result: &RunEntry,
        last_pass: &str,
        lease: &Lease,
        after: AfterPass,
    ) -> Result<()> {
        self.record_run_entry(run, result)?;
        self.set_entry_result(
            run,
            &result.entry_id,
            result.state,
            last_pass,
            result.error.as_deref(),
        )?;
        queue_after_pass(self, &result.entry_id, after)?;
        self.release(lease)
    }
    /// Fences this store's writes of one entry by a claim: from now on, every write of that
    /// entry's ledger and checkpoints, and its [`Store::finish_pass`], checks in its own
    /// transaction that the claim is still this holder's with this epoch, and fails with
    /// [`StoreErrorKind::LeaseLost`], changing nothing, once another process has taken the
    /// entry over. So a process that lost its claim (paused, partitioned) can never record
    /// an intent or a copy after the new holder started. Replaces an earlier fence of the
    /// entry.
    fn fence(&mut self, lease: &Lease);
    /// Ends the fence of one entry: its writes are no longer checked.
    fn unfence(&mut self, entry: &EntryId);
    /// Records how far the pass under a claim has got (a new claim starts from zero); an
    /// error of kind `Other` when the claim was lost.
    fn report_progress(&mut self, lease: &Lease, progress: &PassProgress) -> Result<()>;
    /// The claims not expired, with their progress, by entry.
    fn live_passes(&self) -> Result<Vec<LivePass>>;

    // ---- the queue of passes for workers
    /// Queues entries for the workers, all or none. An entry already queued stays queued
    /// once, keeping its place and its queued time, but gets a new ticket (so a pass that is
    /// running now does not take it off the queue). Returns how many were not queued before.
    fn enqueue(&mut self, entries: &[EntryId]) -> Result<usize>;
    /// The queued entries, oldest first (by when each was first queued).
    fn queued(&self) -> Result<Vec<Queued>>;
    /// Takes an entry off the queue after a pass that started when its ticket was `ticket`
    /// has finished: only if that is still its ticket (it was not queued again meanwhile).
    /// Returns whether it was taken off.
    fn dequeue(&mut self, entry: &EntryId, ticket: i64) -> Result<bool>;
    /// A pass of a queued entry failed: it stays queued, but no worker of any process passes
    /// it again before `wait` has gone by (by the store's clock, so that the machines' clocks
    /// do not matter), and its failure count grows by one. Queuing it again keeps both (a
    /// cron job that queues every few minutes must not cut a backoff short). Returns whether
    /// it was queued.
    fn defer(&mut self, entry: &EntryId, wait: Duration) -> Result<bool>;

    // ---- workers
    /// Registers a worker process (a name registered before, a reused PID, starts afresh).
    fn register_worker(&mut self, name: &str) -> Result<()>;
    /// Records a worker's heartbeat and what it has done so far.
    fn worker_heartbeat(&mut self, name: &str, stats: &WorkerStats) -> Result<()>;
    /// Records a worker's clean stop: its last figures, and the time it stopped.
    fn deregister_worker(&mut self, name: &str, stats: &WorkerStats) -> Result<()>;
    /// Every worker registered, in the order they started (then by name).
    fn workers(&self) -> Result<Vec<WorkerRecord>>;
}

/// A claim that used no capped server, which no store refuses for room (one that does says
/// so as an error rather than a holder it does not have).
fn held_only(
    claim: std::result::Result<Lease, Refusal>,
) -> Result<std::result::Result<Lease, LeaseHolder>> {
    match claim {
        Ok(lease) => Ok(Ok(lease)),
        Err(Refusal::Held(holder)) => Ok(Err(holder)),
        Err(Refusal::Full(full)) => Err(StoreError::new(
            StoreErrorKind::Other,
            format!("A claim on no server was refused for room: {full}"),
        )),
    }
}

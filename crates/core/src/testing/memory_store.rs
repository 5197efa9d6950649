//! The store port in memory, with the rules of the SQLite store: plain inserts that refuse an
//! existing key, every multi-row change all or none, epochs that only grow.
//!
//! All-or-none is kept by working on a copy of the state and putting it back only when every
//! row of the call went in, the way a rolled-back transaction leaves a database.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::model::{
    Checkpoint, Entry, EntryId, EntryState, Failure, Flags, LedgerRow, LedgerState, RefreshRecord,
    RunEntry, RunId, RunKind, Uid, UidValidity, now,
};
use crate::ports::store::{
    AfterPass, Lease, LeaseHolder, LivePass, MetaKey, Orphan, PassProgress, Queued, Refusal,
    Result, RunInfo, ServerUse, Store, StoreError, StoreErrorKind, WorkerRecord, WorkerStats,
    check_room,
};

/// A ledger row's key: entry, source folder, UIDVALIDITY, UID.
type LedgerKey = (EntryId, String, UidValidity, Uid);

fn ledger_key(entry: &EntryId, r: &LedgerRow) -> LedgerKey {
    (
        entry.clone(),
        r.source_folder.clone(),
        r.uid_validity,
        r.uid,
    )
}

#[derive(Debug, Clone)]
struct HeldLease {
    holder: String,
    epoch: i64,
    since: String,
    expires: Instant,
    renewed: Instant,
    progress: PassProgress,
    /// The servers its pass uses ([`Store::claim`]).
    uses: Vec<ServerUse>,
}

#[derive(Debug, Clone)]
struct QueueRow {
    queued: String,
    /// The order of first queuing.
    first: i64,
    ticket: i64,
    failures: u32,
    not_before: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Worker {
    started: String,
    /// The order of registration.
    order: i64,
    heartbeat: String,
    beat: Instant,
    stopped: Option<String>,
    stats: WorkerStats,
}

#[derive(Debug, Clone)]
struct Run {
    kind: RunKind,
    info: RunInfo,
}

#[derive(Debug, Clone, Default)]
struct State {
    entries: BTreeMap<EntryId, Entry>,
    ledger: BTreeMap<LedgerKey, LedgerRow>,
    /// Copied rows whose source message was seen gone ([`Store::mark_gone`]).
    gone: BTreeSet<LedgerKey>,
    checkpoints: BTreeMap<(EntryId, String), Checkpoint>,
    /// By entry, target folder, UIDVALIDITY and UID.
    orphans: BTreeMap<(EntryId, String, UidValidity, Uid), Orphan>,
    /// By ID: the ID is the index plus one.
    runs: Vec<Run>,
    run_entries: BTreeMap<(RunId, EntryId), RunEntry>,
    /// In the order recorded.
    failures: Vec<(RunId, Failure)>,
    /// By ID, as `runs`.
    refreshes: Vec<RefreshRecord>,
    meta: BTreeMap<&'static str, String>,
    leases: BTreeMap<EntryId, HeldLease>,
    queue: BTreeMap<EntryId, QueueRow>,
    /// The last ticket (and queue order) handed out.
    tickets: i64,
    workers: BTreeMap<String, Worker>,
}

/// A job's state in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: State,
    /// The claims this store's writes of an entry are fenced by ([`Store::fence`]).
    fences: BTreeMap<EntryId, Lease>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Runs `change` on a copy of the state and keeps it only if it succeeded.
    fn atomically<T>(&mut self, change: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut copy = self.state.clone();
        let out = change(&mut copy)?;
        self.state = copy;
        Ok(out)
    }

    fn ledger_where(&self, entry: &EntryId, keep: impl Fn(&LedgerRow) -> bool) -> Vec<LedgerRow> {
        let mut rows: Vec<LedgerRow> = self
            .state
            .ledger
            .iter()
            .filter(|((e, ..), r)| e == entry && keep(r))
            .map(|(_, r)| r.clone())
            .collect();
        // By UID, as the port says; ties in a stable order so tests can compare.
        rows.sort_by(|a, b| {
            (a.uid, &a.source_folder, a.uid_validity).cmp(&(
                b.uid,
                &b.source_folder,
                b.uid_validity,
            ))
        });
        rows
    }

    /// `Err` when the entry's writes are fenced by a claim another holder has taken over.
    fn check_fence(&mut self, entry: &EntryId) -> Result<()> {
        let Some(fence) = self.fences.get(entry).cloned() else {
            return Ok(());
        };
        match self.owned(&fence) {
            Some(_) => Ok(()),
            None => Err(StoreError::lease_lost(entry)),
        }
    }

    /// The lease row this claim still owns, if no other holder took it since.
    fn owned(&mut self, lease: &Lease) -> Option<&mut HeldLease> {
        self.state
            .leases
            .get_mut(&lease.entry)
            .filter(|l| l.holder == lease.holder && l.epoch == lease.epoch)
    }
}

fn expiry(from: Instant, ttl: Duration) -> Instant {
    // A TTL too long to add is "never", as far as any test can tell.
    from.checked_add(ttl)
        .unwrap_or_else(|| from + Duration::from_secs(100 * 365 * 24 * 3600))
}

fn run_id(index: usize) -> RunId {
    RunId(i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1))
}

impl Store for MemoryStore {
    fn entries(&self) -> Result<Vec<Entry>> {
        Ok(self.state.entries.values().cloned().collect())
    }

    fn upsert_entries(&mut self, entries: &[Entry]) -> Result<(usize, usize)> {
        self.atomically(|s| {
            let (mut added, mut updated) = (0, 0);
            for e in entries {
                match s.entries.get_mut(&e.id) {
                    Some(old) => {
                        // What a pass recorded stays: state, counts, last pass and error.
                        *old = Entry {
                            state: old.state,
                            copied: old.copied,
                            failed: old.failed,
                            last_pass: old.last_pass.take(),
                            last_error: old.last_error.take(),
                            ..e.clone()
                        };
                        updated += 1;
                    }
                    None => {
                        s.entries.insert(
                            e.id.clone(),
                            Entry {
                                state: EntryState::New,
                                copied: 0,
                                failed: 0,
                                last_pass: None,
                                last_error: None,
                                ..e.clone()
                            },
                        );
                        added += 1;
                    }
                }
            }
            Ok((added, updated))
        })
    }

    fn set_entry_result(
        &mut self,
        run: RunId,
        id: &EntryId,
        state: EntryState,
        last_pass: &str,
        error: Option<&str>,
    ) -> Result<()> {
        let copied = self
            .state
            .ledger
            .iter()
            .filter(|((e, ..), r)| e == id && r.state == LedgerState::Copied)
            .count() as u64;
        let failed = self
            .state
            .failures
            .iter()
            .filter(|(r, f)| *r == run && f.entry_id == *id)
            .count() as u64;
        if let Some(e) = self.state.entries.get_mut(id) {
            e.state = state;
            e.last_pass = Some(last_pass.to_string());
            e.last_error = error.map(str::to_string);
            e.copied = copied;
            e.failed = failed;
        }
        Ok(())
    }

    fn missing_source_ids(&self) -> Result<Vec<EntryId>> {
        Ok(self
            .state
            .entries
            .values()
            .filter(|e| e.missing_source)
            .map(|e| e.id.clone())
            .collect())
    }

    fn remove_entries(&mut self, ids: &[EntryId]) -> Result<()> {
        self.atomically(|s| {
            for id in ids {
                s.entries.remove(id);
                s.ledger.retain(|(e, ..), _| e != id);
                s.gone.retain(|(e, ..)| e != id);
                s.checkpoints.retain(|(e, _), _| e != id);
                s.orphans.retain(|(e, ..), _| e != id);
                s.leases.remove(id);
                s.queue.remove(id);
            }
            Ok(())
        })
    }

    fn meta(&self, key: MetaKey) -> Result<Option<String>> {
        Ok(self.state.meta.get(key.as_str()).cloned())
    }

    fn set_meta(&mut self, key: MetaKey, value: &str) -> Result<()> {
        self.state.meta.insert(key.as_str(), value.to_string());
        Ok(())
    }

    fn record_refresh(&mut self, r: &RefreshRecord) -> Result<RunId> {
        self.state.refreshes.push(r.clone());
        Ok(run_id(self.state.refreshes.len() - 1))
    }

    fn last_refresh(&self) -> Result<Option<RefreshRecord>> {
        Ok(self.state.refreshes.last().cloned())
    }

    fn refreshes(&self) -> Result<Vec<RunInfo>> {
        Ok(self
            .state
            .refreshes
            .iter()
            .enumerate()
            .rev()
            .map(|(i, r)| RunInfo {
                id: run_id(i),
                started: r.started.clone(),
                finished: None,
            })
            .collect())
    }

    fn refresh_record(&self, run: RunId) -> Result<Option<RefreshRecord>> {
        let i = usize::try_from(run.0 - 1).ok();
        Ok(i.and_then(|i| self.state.refreshes.get(i)).cloned())
    }

    fn ledger_folder(&self, entry: &EntryId, folder: &str) -> Result<Vec<LedgerRow>> {
        Ok(self.ledger_where(entry, |r| r.source_folder == folder))
    }

    fn ledger_uids(
        &self,
        entry: &EntryId,
        folder: &str,
        uid_validity: UidValidity,
        ranges: &[(Uid, Uid)],
    ) -> Result<Vec<LedgerRow>> {
        Ok(self.ledger_where(entry, |r| {
            r.source_folder == folder
                && r.uid_validity == uid_validity
                && ranges
                    .iter()
                    .any(|(low, high)| (*low..=*high).contains(&r.uid))
        }))
    }

    fn ledger_folders(&self, entry: &EntryId) -> Result<Vec<String>> {
        let folders: BTreeSet<String> = self
            .ledger_where(entry, |_| true)
            .into_iter()
            .map(|r| r.source_folder)
            .collect();
        Ok(folders.into_iter().collect())
    }

    fn ledger_gone(&self, entry: &EntryId) -> Result<Vec<LedgerRow>> {
        Ok(self.ledger_where(entry, |r| self.state.gone.contains(&ledger_key(entry, r))))
    }

    fn mark_gone(&mut self, entry: &EntryId, rows: &[LedgerRow]) -> Result<()> {
        self.check_fence(entry)?;
        for r in rows {
            let key = ledger_key(entry, r);
            if self
                .state
                .ledger
                .get(&key)
                .is_some_and(|row| !row.is_pending())
            {
                self.state.gone.insert(key);
            }
        }
        Ok(())
    }

    fn copied_bytes(&self) -> Result<Vec<(EntryId, u64)>> {
        let mut out: BTreeMap<EntryId, u64> = BTreeMap::new();
        for ((entry, ..), r) in &self.state.ledger {
            if r.state == LedgerState::Copied {
                *out.entry(entry.clone()).or_default() += r.size;
            }
        }
        Ok(out.into_iter().collect())
    }

    fn ledger_pending(&self, entry: &EntryId) -> Result<Vec<LedgerRow>> {
        Ok(self.ledger_where(entry, LedgerRow::is_pending))
    }

    fn ledger_all(&self, entry: &EntryId) -> Result<Vec<LedgerRow>> {
        Ok(self.ledger_where(entry, |_| true))
    }

    fn target_uids(&self, entry: &EntryId, target_folder: &str) -> Result<Vec<Uid>> {
        Ok(self
            .ledger_where(entry, |r| r.target_folder == target_folder)
            .into_iter()
            .filter_map(|r| r.target_uid)
            .collect())
    }

    fn insert_pending(&mut self, entry: &EntryId, rows: &[LedgerRow]) -> Result<()> {
        self.check_fence(entry)?;
        self.atomically(|s| {
            for r in rows {
                let key = ledger_key(entry, r);
                if s.ledger.contains_key(&key) {
                    return Err(StoreError::new(
                        StoreErrorKind::Other,
                        format!(
                            "UNIQUE constraint failed: the ledger already has {} {} UID {} of \
                             entry {entry}",
                            r.source_folder, r.uid_validity, r.uid
                        ),
                    ));
                }
                // An intent has no target UID yet, whatever the caller put there.
                let row = LedgerRow {
                    target_uid: None,
                    state: LedgerState::Pending,
                    ..r.clone()
                };
                s.ledger.insert(key, row);
            }
            Ok(())
        })
    }

    fn complete(
        &mut self,
        entry: &EntryId,
        copied: &[(&LedgerRow, Option<Uid>)],
        failed: &[&LedgerRow],
    ) -> Result<()> {
        self.check_fence(entry)?;
        for (r, uid) in copied {
            if let Some(row) = self.state.ledger.get_mut(&ledger_key(entry, r)) {
                row.state = LedgerState::Copied;
                row.target_uid = *uid;
                row.target_uidnext = None;
            }
        }
        for r in failed {
            let key = ledger_key(entry, r);
            self.state.gone.remove(&key);
            self.state.ledger.remove(&key);
        }
        Ok(())
    }

    fn set_flags(&mut self, entry: &EntryId, updates: &[(&LedgerRow, Flags)]) -> Result<()> {
        self.check_fence(entry)?;
        for (r, flags) in updates {
            if let Some(row) = self.state.ledger.get_mut(&ledger_key(entry, r)) {
                row.flags = flags.clone();
            }
        }
        Ok(())
    }

    fn rekey(&mut self, entry: &EntryId, pairs: &[(LedgerRow, LedgerRow)]) -> Result<()> {
        self.check_fence(entry)?;
        self.atomically(|s| {
            // One row after the other, as a sequence of UPDATEs would: a new key that another
            // row still holds is a conflict, and the whole call is undone.
            for (old, new) in pairs {
                let old_key = ledger_key(entry, old);
                s.gone.remove(&old_key);
                let Some(mut row) = s.ledger.remove(&old_key) else {
                    continue;
                };
                let key = ledger_key(entry, new);
                if s.ledger.contains_key(&key) {
                    return Err(StoreError::new(
                        StoreErrorKind::Other,
                        format!(
                            "UNIQUE constraint failed: the ledger already has {} {} UID {} of \
                             entry {entry}",
                            new.source_folder, new.uid_validity, new.uid
                        ),
                    ));
                }
                row.source_folder = new.source_folder.clone();
                row.uid_validity = new.uid_validity;
                row.uid = new.uid;
                row.target_folder = new.target_folder.clone();
                row.target_uid = new.target_uid;
                row.flags = new.flags.clone();
                s.ledger.insert(key, row);
            }
            Ok(())
        })
    }

    fn record_orphans(&mut self, entry: &EntryId, orphans: &[Orphan]) -> Result<()> {
        for o in orphans {
            self.state
                .orphans
                .entry((
                    entry.clone(),
                    o.target_folder.clone(),
                    o.uid_validity,
                    o.uid,
                ))
                .or_insert_with(|| o.clone());
        }
        Ok(())
    }

    fn orphans(&self, entry: &EntryId) -> Result<Vec<Orphan>> {
        Ok(self
            .state
            .orphans
            .iter()
            .filter(|((e, ..), _)| e == entry)
            .map(|(_, o)| o.clone())
            .collect())
    }

    fn drop_orphan(&mut self, entry: &EntryId, o: &Orphan) -> Result<()> {
        self.state.orphans.remove(&(
            entry.clone(),
            o.target_folder.clone(),
            o.uid_validity,
            o.uid,
        ));
        Ok(())
    }

    fn checkpoint(&self, entry: &EntryId, folder: &str) -> Result<Option<Checkpoint>> {
        Ok(self
            .state
            .checkpoints
            .get(&(entry.clone(), folder.to_string()))
            .cloned())
    }

    fn set_checkpoint(&mut self, entry: &EntryId, folder: &str, c: &Checkpoint) -> Result<()> {
        self.check_fence(entry)?;
        self.state
            .checkpoints
            .insert((entry.clone(), folder.to_string()), c.clone());
        Ok(())
    }

    fn import_run(
        &mut self,
        kind: RunKind,
        started: &str,
        finished: Option<&str>,
    ) -> Result<RunId> {
        let id = run_id(self.state.runs.len());
        self.state.runs.push(Run {
            kind,
            info: RunInfo {
                id,
                started: started.to_string(),
                finished: finished.map(str::to_string),
            },
        });
        Ok(id)
    }

    fn checkpoints(&self, entry: &EntryId) -> Result<Vec<(String, Checkpoint)>> {
        Ok(self
            .state
            .checkpoints
            .iter()
            .filter(|((e, _), _)| e == entry)
            .map(|((_, folder), c)| (folder.clone(), c.clone()))
            .collect())
    }

    fn start_run(&mut self, kind: RunKind) -> Result<RunId> {
        let id = run_id(self.state.runs.len());
        self.state.runs.push(Run {
            kind,
            info: RunInfo {
                id,
                started: now(),
                finished: None,
            },
        });
        Ok(id)
    }

    fn finish_run(&mut self, run: RunId) -> Result<()> {
        let index = usize::try_from(run.0 - 1).ok();
        if let Some(r) = index.and_then(|i| self.state.runs.get_mut(i)) {
            r.info.finished = Some(now());
        }
        Ok(())
    }

    fn record_run_entry(&mut self, run: RunId, r: &RunEntry) -> Result<()> {
        self.state
            .run_entries
            .insert((run, r.entry_id.clone()), r.clone());
        Ok(())
    }

    fn record_failure(&mut self, run: RunId, f: &Failure) -> Result<()> {
        self.state.failures.push((run, f.clone()));
        Ok(())
    }

    fn last_run(&self, kind: RunKind) -> Result<Option<RunInfo>> {
        Ok(self
            .state
            .runs
            .iter()
            .rev()
            .find(|r| r.kind == kind)
            .map(|r| r.info.clone()))
    }

    fn runs(&self, kind: RunKind) -> Result<Vec<RunInfo>> {
        Ok(self
            .state
            .runs
            .iter()
            .rev()
            .filter(|r| r.kind == kind)
            .map(|r| r.info.clone())
            .collect())
    }

    fn run_entries(&self, run: RunId) -> Result<Vec<RunEntry>> {
        Ok(self
            .state
            .run_entries
            .iter()
            .filter(|((r, _), _)| *r == run)
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn failures(&self, run: RunId) -> Result<Vec<Failure>> {
        let mut out: Vec<Failure> = self
            .state
            .failures
            .iter()
            .filter(|(r, _)| *r == run)
            .map(|(_, f)| f.clone())
            .collect();
        // The SQLite store's order: entry, folder, UID (none first); a stable sort keeps the
        // recording order within those.
        out.sort_by(|a, b| (&a.entry_id, &a.folder, a.uid).cmp(&(&b.entry_id, &b.folder, b.uid)));
        Ok(out)
    }

    fn claim(
        &mut self,
        entry: &EntryId,
        holder: &str,
        ttl: Duration,
        from_epoch: Option<i64>,
        uses: &[ServerUse],
    ) -> Result<std::result::Result<Lease, Refusal>> {
        let now_instant = Instant::now();
        let epoch = match self.state.leases.get(entry) {
            None => 1,
            Some(l) if l.expires <= now_instant || from_epoch == Some(l.epoch) => l.epoch + 1,
            Some(l) => {
                return Ok(Err(Refusal::Held(LeaseHolder {
                    holder: l.holder.clone(),
                    since: l.since.clone(),
                    epoch: l.epoch,
                })));
            }
        };
        let leases = &self.state.leases;
        let full = check_room(uses, |server, mailbox| {
            Ok(leases
                .iter()
                .filter(|(e, l)| *e != entry && l.expires > now_instant)
                .flat_map(|(_, l)| &l.uses)
                .filter(|u| u.server == server && mailbox.is_none_or(|m| u.mailbox == m))
                .map(|u| u.connections)
                .sum())
        })?;
        if let Some(full) = full {
            return Ok(Err(Refusal::Full(full)));
        }
        self.state.leases.insert(
            entry.clone(),
            HeldLease {
                holder: holder.to_string(),
                epoch,
                since: now(),
                expires: expiry(now_instant, ttl),
                renewed: now_instant,
                progress: PassProgress::default(),
                uses: uses.to_vec(),
            },
        );
        Ok(Ok(Lease {
            entry: entry.clone(),
            holder: holder.to_string(),
            epoch,
        }))
    }

    fn renew(&mut self, lease: &Lease, ttl: Duration) -> Result<()> {
        match self.owned(lease) {
            Some(l) => {
                let now_instant = Instant::now();
                l.expires = expiry(now_instant, ttl);
                l.renewed = now_instant;
                Ok(())
            }
            None => Err(StoreError::lease_lost(&lease.entry)),
        }
    }

    fn release(&mut self, lease: &Lease) -> Result<()> {
        // The row stays, expired, so the next holder's epoch is higher still.
        if let Some(l) = self.owned(lease) {
            l.expires = Instant::now();
        }
        Ok(())
    }

    fn fence(&mut self, lease: &Lease) {
        self.fences.insert(lease.entry.clone(), lease.clone());
    }

    fn unfence(&mut self, entry: &EntryId) {
        self.fences.remove(entry);
    }

    fn finish_pass(
        &mut self,
        run: RunId,
        result: &RunEntry,
        last_pass: &str,
        lease: &Lease,
        after: AfterPass,
    ) -> Result<()> {
        if self.owned(lease).is_none() {
            return Err(StoreError::lease_lost(&lease.entry));
        }
        self.record_run_entry(run, result)?;
        self.set_entry_result(
            run,
            &result.entry_id,
            result.state,
            last_pass,
            result.error.as_deref(),
        )?;
        crate::ports::store::queue_after_pass(self, &result.entry_id, after)?;
        self.release(lease)
    }

    fn report_progress(&mut self, lease: &Lease, progress: &PassProgress) -> Result<()> {
        match self.owned(lease) {
            Some(l) => {
                l.progress = progress.clone();
                Ok(())
            }
            None => Err(StoreError::lease_lost(&lease.entry)),
        }
    }

    fn live_passes(&self) -> Result<Vec<LivePass>> {
        let now_instant = Instant::now();
        Ok(self
            .state
            .leases
            .iter()
            .filter(|(_, l)| l.expires > now_instant)
            .map(|(entry, l)| LivePass {
                entry: entry.clone(),
                holder: l.holder.clone(),
                since: l.since.clone(),
                heartbeat_age: now_instant.saturating_duration_since(l.renewed),
                progress: l.progress.clone(),
            })
            .collect())
    }

    fn enqueue(&mut self, entries: &[EntryId]) -> Result<usize> {
        let mut added = 0;
        for id in entries {
            self.state.tickets += 1;
            let ticket = self.state.tickets;
            match self.state.queue.get_mut(id) {
                Some(row) => row.ticket = ticket,
                None => {
                    self.state.queue.insert(
                        id.clone(),
                        QueueRow {
                            queued: now(),
                            first: ticket,
                            ticket,
                            failures: 0,
                            not_before: None,
                        },
                    );
                    added += 1;
                }
            }
        }
        Ok(added)
    }

    fn queued(&self) -> Result<Vec<Queued>> {
        let mut rows: Vec<(&EntryId, &QueueRow)> = self.state.queue.iter().collect();
        rows.sort_by_key(|(_, r)| r.first);
        let now = Instant::now();
        Ok(rows
            .into_iter()
            .map(|(entry, r)| Queued {
                entry: entry.clone(),
                queued: r.queued.clone(),
                ticket: r.ticket,
                failures: r.failures,
                wait: r
                    .not_before
                    .map_or(Duration::ZERO, |at| at.saturating_duration_since(now)),
            })
            .collect())
    }

    fn dequeue(&mut self, entry: &EntryId, ticket: i64) -> Result<bool> {
        if self
            .state
            .queue
            .get(entry)
            .is_some_and(|r| r.ticket == ticket)
        {
            self.state.queue.remove(entry);
            return Ok(true);
        }
        Ok(false)
    }

    fn defer(&mut self, entry: &EntryId, wait: Duration) -> Result<bool> {
        let Some(row) = self.state.queue.get_mut(entry) else {
            return Ok(false);
        };
        row.failures = row.failures.saturating_add(1);
        row.not_before = Some(Instant::now() + wait);
        Ok(true)
    }

    fn register_worker(&mut self, name: &str) -> Result<()> {
        self.state.tickets += 1;
        let at = now();
        self.state.workers.insert(
            name.to_string(),
            Worker {
                started: at.clone(),
                order: self.state.tickets,
                heartbeat: at,
                beat: Instant::now(),
                stopped: None,
                stats: WorkerStats::default(),
            },
        );
        Ok(())
    }

    fn worker_heartbeat(&mut self, name: &str, stats: &WorkerStats) -> Result<()> {
        let w = self.worker(name)?;
        w.heartbeat = now();
        w.beat = Instant::now();
        w.stats = *stats;
        Ok(())
    }

    fn deregister_worker(&mut self, name: &str, stats: &WorkerStats) -> Result<()> {
        let w = self.worker(name)?;
        let at = now();
        w.heartbeat = at.clone();
        w.beat = Instant::now();
        w.stopped = Some(at);
        w.stats = *stats;
        Ok(())
    }

    fn workers(&self) -> Result<Vec<WorkerRecord>> {
        let now_instant = Instant::now();
        let mut all: Vec<(&String, &Worker)> = self.state.workers.iter().collect();
        all.sort_by_key(|(name, w)| (w.started.clone(), w.order, (*name).clone()));
        Ok(all
            .into_iter()
            .map(|(name, w)| WorkerRecord {
                name: name.clone(),
                started: w.started.clone(),
                heartbeat: w.heartbeat.clone(),
                heartbeat_age: now_instant.saturating_duration_since(w.beat),
                stopped: w.stopped.clone(),
                stats: w.stats,
            })
            .collect())
    }
}

impl MemoryStore {
    fn worker(&mut self, name: &str) -> Result<&mut Worker> {
        self.state.workers.get_mut(name).ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Other,
                format!("No worker {name} is registered"),
            )
        })
    }
}

//! `migrate`: one pass over the selected entries, `concurrency` of them at a time — a full pass
//! for new entries, a delta pass for the rest.
//!
//! Each entry's pass is leased in the store by this process first, and the lease is renewed
//! while the pass runs: a second `migrate` on the same job (a cron job and an admin, two
//! terminals) skips the entries this one is passing instead of copying them a second time.
//! A lease whose process is gone (killed) is taken over at once; one whose holder merely
//! stopped renewing it expires after `[migration] lease_seconds` (renewed every third of it).
//!
//! A lease also records the servers its pass uses and the connections it may open on each
//! ([`ServerUse`]): a claim succeeds only while the live leases of every process of the job
//! leave room under each server's `max_connections` (and `max_connections_per_mailbox`), so
//! the caps hold across processes and machines. A pass that finds no room waits
//! ([`ROOM_WAIT`]) and asks again; a worker leaves the entry queued meanwhile.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{App, AppError, Result, remove_missing, selected};
use crate::engine::{ByteBudget, PROCESS_BYTE_BUDGET, PassContext, PassSettings, migrate_entry};
use crate::entries::Selection;
use crate::folders::FolderRules;
use crate::job::Job;
use crate::model::{Entry, EntryId, Origin, RunEntry, RunKind, Side, now};
use crate::ports::store::{
    AfterPass, Lease, LeaseHolder, NoRoom, PassProgress, Refusal, ServerUse, StoreErrorKind,
    WorkerStats,
};
use crate::ports::{Connector, EntryPasswords, Observer, Store};
use crate::report::{KeywordsDropped, MigrationReport, Summary};

/// How often the progress of the passes in flight is written for other processes to show.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often a worker writes its heartbeat and figures.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// The connections one pass opens to each side's mailbox: one session, which its fetcher
/// thread shares (a reconnect replaces it). Its lease records this many.
pub const PASS_CONNECTIONS_PER_SIDE: u32 = 1;
/// How long a pass that found no room under a server's cap waits before it asks again.
pub const ROOM_WAIT: Duration = Duration::from_millis(500);

/// What `migrate` did.
#[derive(Debug)]
pub struct MigrateOutcome {
    /// Entries removed before the pass because their source mailbox is missing.
    pub removed: Vec<EntryId>,
    /// Selected entries that take no part in a pass (no target yet, skipped, waiting), with
    /// their origin.
    pub waiting: Vec<(EntryId, Origin)>,
    /// Selected entries another process is passing right now.
    pub busy: Vec<(EntryId, LeaseHolder)>,
    /// The pass; `None` when no selected entry could be passed.
    pub summary: Option<Summary>,
    /// Entries the pass did not start because `stop` was set: the next `migrate` passes them.
    pub not_started: Vec<EntryId>,
    /// Entries whose claim another process took over during this process's pass (it was
    /// paused or cut off past the claim's time): the fence refused this process's writes from
    /// then on, and the new holder's pass is the one that counts.
    pub taken_over: Vec<EntryId>,
}

impl MigrateOutcome {
    /// `migrate --json` (SPEC §4).
    pub fn report(&self) -> MigrationReportOrEmpty {
        match &self.summary {
            Some(s) => MigrationReportOrEmpty::Report(Box::new(MigrationReport::new(s))),
            None => MigrationReportOrEmpty::Empty {
                entries: Vec::new(),
                copied: 0,
                failed: 0,
                bytes: 0,
                seconds: 0.0,
            },
        }
    }

    /// Whether an entry failed or has messages that could not be copied (exit status 1).
    pub fn has_failures(&self) -> bool {
        self.summary.as_ref().is_some_and(Summary::has_failures)
    }
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum MigrationReportOrEmpty {
    Report(Box<MigrationReport>),
    Empty {
        entries: Vec<()>,
        copied: u64,
        failed: u64,
        bytes: u64,
        seconds: f64,
    },
}

/// The pass settings of a job.
pub fn pass_settings(job: &Job) -> PassSettings {
    let m = &job.migration;
    PassSettings {
        rules: FolderRules {
            include: m.include_folders.clone(),
            exclude: m.exclude_folders.clone(),
            folder_map: m.folder_map.clone(),
        },
        since: m.since,
        until: m.until,
        skip_deleted: m.skip_deleted,
    }
}

/// Runs one pass over the selected entries. Entries whose source mailbox is missing are
/// removed first (SPEC §6). `stop`, once set, lets the entries in progress finish their
/// attempt (a failed one is not tried again) and starts no more; the entries left are
/// [`MigrateOutcome::not_started`].
pub fn migrate(
    app: &App<'_>,
    selection: &Selection,
    observer: &dyn Observer,
    stop: &AtomicBool,
) -> Result<MigrateOutcome> {
    // Everything the job file and the CSV say is checked before the state changes.
    let passwords = app.passwords()?;
    let source = app
        .backends
        .connector(app.job, Side::Source)
        .map_err(AppError::Input)?;
    let target = app
        .backends
        .connector(app.job, Side::Target)
        .map_err(AppError::Input)?;
    let mut store = app.open_state()?;
    let removed = remove_missing(store.as_mut())?;
    app.removed_notice("Before this pass", &removed);
    let all = store.entries()?;
    let chosen = selected(&all, selection)?;
    let (runnable, waiting): (Vec<Entry>, Vec<Entry>) =
        chosen.into_iter().partition(Entry::is_migratable);
    let waiting = waiting.into_iter().map(|e| (e.id, e.origin)).collect();
    if runnable.is_empty() {
        return Ok(MigrateOutcome {
            removed,
            waiting,
            busy: Vec::new(),
            taken_over: Vec::new(),
            summary: None,
            not_started: Vec::new(),
        });
    }
    let settings = pass_settings(app.job);
    let run = store.start_run(RunKind::Migrate)?;
    let started = Instant::now();
    let store = Mutex::new(store);
    let work = FixedWork {
        queue: Mutex::new(runnable.into_iter().collect()),
        busy: Mutex::new(Vec::new()),
    };
    let passes = run_passes(
        app,
        &Setup {
            source: source.as_ref(),
            target: target.as_ref(),
            settings: &settings,
            store: &store,
            run,
            passwords: &passwords,
            worker: None,
        },
        observer,
        &work,
        stop,
    );
    let mut store = store.into_inner().unwrap_or_else(|e| e.into_inner());
    store.finish_run(run)?;
    if let Some(e) = passes.error {
        return Err(e);
    }
    let not_started = work
        .queue
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|e| e.id)
        .collect();
    let mut entries = passes.results;
    entries.sort_by(|a, b| a.entry_id.cmp(&b.entry_id));
    Ok(MigrateOutcome {
        removed,
        waiting,
        busy: work.busy.into_inner().unwrap_or_else(|e| e.into_inner()),
        taken_over: passes.taken_over,
        summary: Some(Summary {
            run,
            failures: store.failures(run)?,
            entries,
            seconds: started.elapsed().as_secs_f64(),
        }),
        not_started,
    })
}

/// One entry to pass, and the ticket of the queue it was taken from (a worker's) with the
/// passes of it that failed in a row before.
pub(crate) struct Item {
    pub entry: Entry,
    pub ticket: Option<i64>,
    pub failures: u32,
}

/// Where a runner's passes come from: the fixed list of one `migrate`, or the store's queue,
/// waited on, of a `worker`.
pub(crate) trait Work: Sync {
    /// The next entry to pass. A source that can wait for more work waits, asking `stop`
    /// at least every few tenths of a second; `None` when there is no more work for this
    /// process, or once `stop` says so.
    fn next(&self, stop: &dyn Fn() -> bool) -> Result<Option<Item>>;
    /// Another process holds the entry: this one does not pass it now.
    fn busy(&self, item: Item, holder: LeaseHolder);
    /// The other passes leave no room under a server's cap for the entry's pass: it is to be
    /// tried again later (the runner waits [`ROOM_WAIT`] before it asks for work again).
    fn no_room(&self, item: Item);
    /// What becomes of the entry's place in a queue once its pass is recorded: done in the
    /// record's own transaction ([`Store::finish_pass`]).
    fn after_pass(&self, _item: &Item, _result: &RunEntry) -> AfterPass {
        AfterPass::Keep
    }
    /// The entry's pass ended and was recorded.
    fn finished(&self, item: &Item, result: &RunEntry) -> Result<()>;
    /// The entry's pass did not end in a record: another process took the entry over during
    /// it, or the state database failed.
    fn dropped(&self, item: &Item);
}

/// `migrate`'s work: the selected entries, once each.
struct FixedWork {
    queue: Mutex<VecDeque<Entry>>,
    busy: Mutex<Vec<(EntryId, LeaseHolder)>>,
}

impl Work for FixedWork {
    fn next(&self, stop: &dyn Fn() -> bool) -> Result<Option<Item>> {
        if stop() {
            return Ok(None);
        }
        Ok(lock(&self.queue).pop_front().map(|entry| Item {
            entry,
            ticket: None,
            failures: 0,
        }))
    }
    fn busy(&self, item: Item, holder: LeaseHolder) {
        lock(&self.busy).push((item.entry.id, holder));
    }
    fn no_room(&self, item: Item) {
        // Behind the others: one whose mailbox has room may go first.
        lock(&self.queue).push_back(item.entry);
    }
    fn finished(&self, _: &Item, _: &RunEntry) -> Result<()> {
        Ok(())
    }
    fn dropped(&self, _: &Item) {}
}

/// What the passes of one process run with.
pub(crate) struct Setup<'a> {
    pub source: &'a dyn crate::ports::Connector,
    pub target: &'a dyn crate::ports::Connector,
    pub settings: &'a PassSettings,
    pub store: &'a Mutex<Box<dyn Store>>,
    /// The run the passes are recorded in.
    pub run: crate::model::RunId,
    pub passwords: &'a HashMap<EntryId, EntryPasswords>,
    /// A worker's figures, written to the store with its heartbeat by the lease renewer.
    pub worker: Option<&'a Mutex<WorkerStats>>,
}

/// What the passes did.
pub(crate) struct Passes {
    pub results: Vec<RunEntry>,
    pub taken_over: Vec<EntryId>,
    /// The first error that stopped the passes (the state database failing).
    pub error: Option<AppError>,
}

/// Runs the passes `work` hands out, `[migration] concurrency` at a time, each entry leased
/// first (a claim whose process is gone is taken over), its lease renewed and its progress
/// written while it runs, its outcome recorded in one commit with the lease given back. On
/// `stop` the passes in progress finish their attempt and no other starts; an error of the
/// state database stops every thread.
pub(crate) fn run_passes(
    app: &App<'_>,
    setup: &Setup<'_>,
    observer: &dyn Observer,
    work: &dyn Work,
    stop: &AtomicBool,
) -> Passes {
    let recorder = Recorder {
        inner: observer,
        progress: Mutex::new(HashMap::new()),
    };
    let budget = ByteBudget::new(PROCESS_BYTE_BUDGET);
    let ctx = PassContext {
        source: setup.source,
        target: setup.target,
        settings: setup.settings,
        store: setup.store,
        budget: &budget,
        run: setup.run,
        observer: &recorder,
        // `[migration]`'s retry settings (README, "Failures").
        retries: app.job.migration.network.retries_without_progress,
        retry_delay: app.job.migration.network.retry_first_delay,
        retry_max_delay: app.job.migration.network.retry_max_delay,
        stop,
    };
    let runner = Runner {
        app,
        store: setup.store,
        holder: app.backends.process_name(),
        noted: Mutex::new(HashSet::new()),
        held: Mutex::new(Vec::new()),
        done: (Mutex::new(false), Condvar::new()),
        recorder: &recorder,
        worker: setup.worker,
    };
    let run = setup.run;
    let results = Mutex::new(Vec::new());
    let taken_over = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::<AppError>::new());
    // Set when a thread fails: the others stop taking work too.
    let failed = AtomicBool::new(false);
    let should_stop = || stop.load(Ordering::SeqCst) || failed.load(Ordering::SeqCst);
    let fail = |e: AppError| {
        lock(&failures).push(e);
        failed.store(true, Ordering::SeqCst);
    };
    let threads = app.job.migration.concurrency.max(1);
    std::thread::scope(|scope| {
        scope.spawn(|| runner.renew_until_done());
        {
            // However the workers end (a panic included), the renewer is told to stop, or the
            // outer scope would wait for it forever.
            let _stop_renewer = StopRenewer(&runner);
            std::thread::scope(|inner| {
                for _ in 0..threads {
                    inner.spawn(|| {
                        loop {
                            let item = match work.next(&should_stop) {
                                Ok(Some(item)) => item,
                                Ok(None) => break,
                                Err(e) => {
                                    fail(e);
                                    break;
                                }
                            };
                            let uses = server_uses(setup, &item.entry);
                            let lease = match runner.lease(&item.entry.id, &uses) {
                                Ok(Ok(lease)) => lease,
                                Ok(Err(Refusal::Held(holder))) => {
                                    work.busy(item, holder);
                                    continue;
                                }
                                Ok(Err(Refusal::Full(full))) => {
                                    runner.waiting_for_room(&full);
                                    work.no_room(item);
                                    wait_for_room(&should_stop);
                                    continue;
                                }
                                Err(e) => {
                                    work.dropped(&item);
                                    fail(e);
                                    break;
                                }
                            };
                            let entry = &item.entry;
                            recorder.entry_started(&entry.id);
                            let pw: EntryPasswords =
                                setup.passwords.get(&entry.id).cloned().unwrap_or_default();
                            let before = Tallies::of(setup, entry);
                            let mut result = migrate_entry(&ctx, entry, &pw);
                            Tallies::of(setup, entry).since(&before, &mut result);
                            let after = work.after_pass(&item, &result);
                            match runner.record(run, &result, &lease, after) {
                                Ok(()) => {
                                    recorder.entry_finished(&result);
                                    let done = work.finished(&item, &result);
                                    lock(&results).push(result);
                                    if let Err(e) = done {
                                        fail(e);
                                        break;
                                    }
                                }
                                // Another process has the entry now: its pass is the one
                                // recorded; this one's writes were refused from the take-over.
                                Err(AppError::Store(e)) if e.kind == StoreErrorKind::LeaseLost => {
                                    lock(&recorder.progress).remove(&entry.id);
                                    work.dropped(&item);
                                    lock(&taken_over).push(entry.id.clone());
                                }
                                Err(e) => {
                                    recorder.entry_finished(&result);
                                    work.dropped(&item);
                                    lock(&results).push(result);
                                    fail(e);
                                    break;
                                }
                            }
                        }
                    });
                }
            });
        }
    });
    Passes {
        results: results.into_inner().unwrap_or_else(|e| e.into_inner()),
        taken_over: taken_over.into_inner().unwrap_or_else(|e| e.into_inner()),
        error: failures
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .next(),
    }
}

/// What the connectors have counted for one entry's logins so far: the custom keywords the
/// target dropped (per folder) and the time both sides waited on throttling. The connectors
/// count per login for as long as they live (a worker's, for many passes), so a pass's own
/// figures are the difference across it, its retries included.
struct Tallies {
    keywords: Vec<(String, u64)>,
    throttled: Duration,
}

impl Tallies {
    fn of(setup: &Setup<'_>, entry: &Entry) -> Tallies {
        let target = entry.login(Side::Target);
        Tallies {
            keywords: target
                .map(|l| setup.target.dropped_keywords(l))
                .unwrap_or_default(),
            throttled: setup.source.throttled_for(&entry.source_login)
                + target
                    .map(|l| setup.target.throttled_for(l))
                    .unwrap_or_default(),
        }
    }

    /// Writes what was counted after `before` into the pass's run line.
    fn since(self, before: &Tallies, result: &mut RunEntry) {
        result.keywords_dropped = self
            .keywords
            .into_iter()
            .filter_map(|(folder, n)| {
                let was = before
                    .keywords
                    .iter()
                    .find(|(f, _)| *f == folder)
                    .map_or(0, |(_, n)| *n);
                let count = n.saturating_sub(was);
                (count > 0).then_some(KeywordsDropped { folder, count })
            })
            .collect();
        result.throttled_seconds = self
            .throttled
            .saturating_sub(before.throttled)
            .as_secs_f64();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the pass of `entry` will use on each side's server, for its lease: its mailbox there,
/// the connections it opens ([`PASS_CONNECTIONS_PER_SIDE`], never more than
/// `max_connections_per_mailbox`), and the caps as this process knows them now (the job
/// file's `max_connections`, lowered by a recognised profile or a throttling server).
fn server_uses(setup: &Setup<'_>, entry: &Entry) -> Vec<ServerUse> {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    [(setup.source, Side::Source), (setup.target, Side::Target)]
        .into_iter()
        .filter_map(|(connector, side): (&dyn Connector, Side)| {
            let server = connector.server()?;
            let login = entry.login(side)?;
            let per_mailbox = connector.max_connections_per_mailbox().map(count);
            Some(ServerUse {
                server,
                mailbox: login.to_lowercase(),
                connections: per_mailbox.map_or(PASS_CONNECTIONS_PER_SIDE, |m| {
                    m.min(PASS_CONNECTIONS_PER_SIDE)
                }),
                max_connections: count(connector.limit().max()),
                max_per_mailbox: per_mailbox,
            })
        })
        .collect()
}

/// Sleeps [`ROOM_WAIT`], in short steps so that a stop is obeyed within a tenth of a second.
fn wait_for_room(stop: &dyn Fn() -> bool) {
    let until = Instant::now() + ROOM_WAIT;
    while !stop() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Passes the engine's reports on, and keeps each pass's counters for other processes: the
/// runner writes them to the store beside its leases once a second, so a web console or a
/// `status` of another process shows this pass live.
struct Recorder<'a> {
    inner: &'a dyn Observer,
    progress: Mutex<HashMap<EntryId, PassProgress>>,
}

impl Observer for Recorder<'_> {
    fn entry_started(&self, entry: &EntryId) {
        lock(&self.progress).insert(entry.clone(), PassProgress::default());
        self.inner.entry_started(entry);
    }
    fn planned(&self, entry: &EntryId, messages: u64, bytes: u64) {
        // A retried attempt plans again from the start.
        lock(&self.progress).insert(
            entry.clone(),
            PassProgress {
                planned_messages: messages,
                planned_bytes: bytes,
                ..PassProgress::default()
            },
        );
        self.inner.planned(entry, messages, bytes);
    }
    fn copied(&self, entry: &EntryId, messages: u64, bytes: u64) {
        if let Some(p) = lock(&self.progress).get_mut(entry) {
            p.copied += messages;
            p.bytes += bytes;
        }
        self.inner.copied(entry, messages, bytes);
    }
    fn entry_finished(&self, result: &RunEntry) {
        lock(&self.progress).remove(&result.entry_id);
        self.inner.entry_finished(result);
    }
}

/// Tells the renewer to stop when dropped: at once (a pass over unchanged mailboxes is over in
/// a fraction of a second; it must not wait out a sleep).
struct StopRenewer<'a, 'b, 'c>(&'a Runner<'b, 'c>);

impl Drop for StopRenewer<'_, '_, '_> {
    fn drop(&mut self) {
        *lock(&self.0.done.0) = true;
        self.0.done.1.notify_all();
    }
}

/// The leases of one `migrate` process, and the writes after each entry's pass.
struct Runner<'a, 'b> {
    app: &'a App<'b>,
    store: &'a Mutex<Box<dyn Store>>,
    holder: String,
    /// The caps this process has said it waits for (each said once).
    noted: Mutex<HashSet<(String, Option<String>)>>,
    held: Mutex<Vec<Lease>>,
    done: (Mutex<bool>, Condvar),
    recorder: &'a Recorder<'a>,
    /// A worker's figures, written with its heartbeat.
    worker: Option<&'a Mutex<WorkerStats>>,
}

impl Runner<'_, '_> {
    /// Claims an entry for a pass that uses `uses`, taking over a claim whose process is gone.
    fn lease(
        &self,
        entry: &EntryId,
        uses: &[ServerUse],
    ) -> Result<std::result::Result<Lease, Refusal>> {
        let ttl = self.app.job.migration.lease();
        let mut store = lock(self.store);
        let mut claim = store.claim(entry, &self.holder, ttl, None, uses)?;
        if let Err(Refusal::Held(other)) = &claim
            && self.app.backends.holder_gone(&other.holder)
        {
            claim = store.claim(entry, &self.holder, ttl, Some(other.epoch), uses)?;
        }
        if let Ok(lease) = &claim {
            lock(&self.held).push(lease.clone());
            // From here on every write of this entry's ledger checks the claim is still ours.
            store.fence(lease);
        }
        Ok(claim)
    }

    /// Says, once per cap, that passes wait for room under it.
    fn waiting_for_room(&self, full: &NoRoom) {
        if lock(&self.noted).insert((full.server.clone(), full.mailbox.clone())) {
            (self.app.notice)(&format!(
                "Waiting for room: {full} (max_connections{} across every process of the job)",
                if full.mailbox.is_some() {
                    "_per_mailbox"
                } else {
                    ""
                }
            ));
        }
    }

    /// Records an entry's pass: its run line, its state, and its lease given back, in one
    /// commit. An error here is the state database failing, which stops the run (the ledger
    /// itself is already exact; a lease not given back expires by itself).
    fn record(
        &self,
        run: crate::model::RunId,
        result: &RunEntry,
        lease: &Lease,
        after: AfterPass,
    ) -> Result<()> {
        lock(&self.held).retain(|l| l != lease);
        let mut store = lock(self.store);
        let done = store.finish_pass(run, result, &now(), lease, after);
        store.unfence(&lease.entry);
        done?;
        Ok(())
    }

    /// Renews the held leases, and writes their passes' progress, until the workers are
    /// done.
    fn renew_until_done(&self) {
        let mut renewed = Instant::now();
        let mut reported = Instant::now();
        let mut beat = Instant::now();
        let mut last: HashMap<EntryId, PassProgress> = HashMap::new();
        loop {
            let done = lock(&self.done.0);
            let (done, _) = self
                .done
                .1
                .wait_timeout_while(done, Duration::from_millis(200), |d| !*d)
                .unwrap_or_else(|e| e.into_inner());
            if *done {
                break;
            }
            drop(done);
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                let now = lock(&self.recorder.progress).clone();
                let held = lock(&self.held).clone();
                let changed: Vec<(&Lease, &PassProgress)> = held
                    .iter()
                    .filter_map(|l| now.get(&l.entry).map(|p| (l, p)))
                    .filter(|(l, p)| last.get(&l.entry) != Some(*p))
                    .collect();
                if !changed.is_empty() {
                    let mut store = lock(self.store);
                    for (lease, p) in changed {
                        // Progress is for show: a failed write is retried next second.
                        let _ = store.report_progress(lease, p);
                    }
                }
                last = now;
            }
            if let Some(stats) = self.worker
                && beat.elapsed() >= HEARTBEAT_EVERY
            {
                beat = Instant::now();
                let stats = *lock(stats);
                // A missed heartbeat is written next time; the worker is shown as gone only
                // after a lease's time without one.
                let _ = lock(self.store).worker_heartbeat(&self.holder, &stats);
            }
            if renewed.elapsed() >= self.app.job.migration.renew_every() {
                renewed = Instant::now();
                let held = lock(&self.held).clone();
                let mut store = lock(self.store);
                for lease in &held {
                    // A failed renewal is retried next time; the lease outlives several misses.
                    let _ = store.renew(lease, self.app.job.migration.lease());
                }
            }
        }
    }
}

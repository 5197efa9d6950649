//! The queue of passes and the workers that take them: `migrate --enqueue-only` queues
//! entries in the store, `worker` passes what is queued (with the runner of `migrate`:
//! leases, renewals, fencing, progress) and waits for more until it is told to stop, and
//! `workers` lists the worker processes from their registrations and heartbeats.
//!
//! An entry leaves the queue only when a pass of it that started after it was last queued
//! has finished (its queue ticket is unchanged): mail that arrives, and is queued, while a
//! pass runs is copied by the next one. A pass that failed leaves the entry queued, and no
//! worker of the job passes it again before a backoff has gone by (30 s, doubling with each
//! failure in a row up to 10 minutes), kept in the store so that ten workers do not try a
//! broken mailbox ten times as often (nor lock out its account with failed logins). An entry that
//! another live process holds is skipped until its lease ends; one whose process is gone is
//! taken over at once, as `migrate` does.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::migrate::{Item, ROOM_WAIT, Setup, Work, pass_settings, run_passes};
use super::{App, AppError, Result, remove_missing, selected};
use crate::entries::Selection;
use crate::model::{Entry, EntryId, EntryState, Origin, RunEntry, RunId, RunKind, Side};
use crate::ports::store::{AfterPass, LeaseHolder, WorkerStats};
use crate::ports::{Backends, Observer, Store};

/// How often an idle worker asks the store for queued passes.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How often a waiting worker checks whether it was told to stop.
const STOP_CHECK_EVERY: Duration = Duration::from_millis(100);
/// The first wait before a worker tries a failed entry again; it doubles with each failure in
/// a row, up to [`MAX_FAILED_BACKOFF`].
pub const FIRST_FAILED_BACKOFF: Duration = Duration::from_secs(30);
pub const MAX_FAILED_BACKOFF: Duration = Duration::from_secs(600);

/// The wait before a queued entry is passed again after its pass failed, the `failures`
/// passes before it having failed in a row.
pub fn failed_backoff(failures: u32) -> Duration {
    FIRST_FAILED_BACKOFF
        .saturating_mul(1 << failures.min(16))
        .min(MAX_FAILED_BACKOFF)
}

// ---------------------------------------------------------------- migrate --enqueue-only

/// What `migrate --enqueue-only` did.
#[derive(Debug, Serialize)]
pub struct EnqueueOutcome {
    /// Entries removed first because their source mailbox is missing.
    pub removed: Vec<EntryId>,
    /// Entries queued now that were not queued before.
    pub queued: Vec<EntryId>,
    /// Entries that were queued already: they keep their place (a pass running now is
    /// followed by another).
    pub already_queued: Vec<EntryId>,
    /// Selected entries that take no part in a pass (no target yet, skipped, waiting).
    pub waiting: Vec<(EntryId, Origin)>,
    /// Every entry in the queue now.
    pub in_queue: usize,
}

/// Queues the selected entries for the workers, without passing any.
pub fn enqueue(app: &App<'_>, selection: &Selection) -> Result<EnqueueOutcome> {
    let mut store = app.open_state()?;
    let removed = remove_missing(store.as_mut())?;
    app.removed_notice("Before queuing", &removed);
    let all = store.entries()?;
    let chosen = selected(&all, selection)?;
    let (runnable, waiting): (Vec<Entry>, Vec<Entry>) =
        chosen.into_iter().partition(Entry::is_migratable);
    let before: HashSet<EntryId> = store.queued()?.into_iter().map(|q| q.entry).collect();
    let ids: Vec<EntryId> = runnable.into_iter().map(|e| e.id).collect();
    store.enqueue(&ids)?;
    let (already_queued, queued) = ids.into_iter().partition(|id| before.contains(id));
    Ok(EnqueueOutcome {
        removed,
        queued,
        already_queued,
        waiting: waiting.into_iter().map(|e| (e.id, e.origin)).collect(),
        in_queue: store.queued()?.len(),
    })
}

// ---------------------------------------------------------------- worker

/// What a worker did before it stopped.
#[derive(Debug, Serialize)]
pub struct WorkerOutcome {
    /// This process, as it held leases and was listed by `workers`.
    pub name: String,
    /// The run its passes are recorded in (`report --run N`).
    pub run: RunId,
    #[serde(flatten)]
    pub stats: WorkerStats,
    /// Entries another process took over during this worker's pass of them.
    pub taken_over: Vec<EntryId>,
    pub seconds: f64,
}

/// Runs a worker: registers it, starts its run, passes queued entries `[migration]
/// concurrency` at a time and waits for more, until `stop` is set; then lets the passes in
/// progress finish their attempt, finishes the run and deregisters. Queued entries not
/// started stay queued for the next worker.
pub fn work(app: &App<'_>, observer: &dyn Observer, stop: &AtomicBool) -> Result<WorkerOutcome> {
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
    app.removed_notice("Before this worker started", &removed);
    let name = app.backends.process_name();
    store.register_worker(&name)?;
    let run = store.start_run(RunKind::Migrate)?;
    let started = Instant::now();
    let settings = pass_settings(app.job);
    let store = Mutex::new(store);
    let stats = Mutex::new(WorkerStats::default());
    let work = QueueWork {
        store: &store,
        backends: app.backends,
        notice: app.notice,
        stats: &stats,
        turn: Mutex::new(()),
        state: Mutex::new(QueueState::default()),
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
            worker: Some(&stats),
        },
        observer,
        &work,
        stop,
    );
    let mut store = store.into_inner().unwrap_or_else(|e| e.into_inner());
    let stats = *lock(&stats);
    // The run is finished and the worker deregistered even when the passes stopped on an
    // error; that error is the one reported.
    let finished = store.finish_run(run);
    let deregistered = store.deregister_worker(&name, &stats);
    if let Some(e) = passes.error {
        return Err(e);
    }
    finished?;
    deregistered?;
    Ok(WorkerOutcome {
        name,
        run,
        stats,
        taken_over: passes.taken_over,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct QueueState {
    /// Entries this process is passing now (or has just leased).
    in_flight: HashSet<EntryId>,
    /// Entries whose claim found no room under a server's cap: left queued, not asked for
    /// again before the instant (another entry, on a mailbox with room, may go first).
    no_room: HashMap<EntryId, Instant>,
}

/// A worker's work: the store's queue, polled about once a second while there is nothing to
/// take. One thread polls at a time (`turn`); the others wait for their turn.
struct QueueWork<'a> {
    store: &'a Mutex<Box<dyn Store>>,
    backends: &'a dyn Backends,
    notice: &'a (dyn Fn(&str) + Sync),
    stats: &'a Mutex<WorkerStats>,
    turn: Mutex<()>,
    state: Mutex<QueueState>,
}

impl QueueWork<'_> {
    /// The oldest queued entry this process may pass now, marked in flight; `None` when
    /// there is none.
    fn pick(&self) -> Result<Option<Item>> {
        let (queued, live) = {
            let store = lock(self.store);
            // The live passes before the queue: a pass recorded in between (its queue change
            // and the claim given up in one commit, `Store::finish_pass`) is then seen either
            // held, or off the queue; read the other way round, it could look queued and free.
            let live: HashMap<EntryId, String> = store
                .live_passes()?
                .into_iter()
                .map(|p| (p.entry, p.holder))
                .collect();
            let queued = store.queued()?;
            if queued.is_empty() {
                return Ok(None);
            }
            (queued, live)
        };
        let now = Instant::now();
        let mut entries: Option<HashMap<EntryId, Entry>> = None;
        for q in queued {
            {
                let state = lock(&self.state);
                if state.in_flight.contains(&q.entry)
                    || !q.wait.is_zero()
                    || state.no_room.get(&q.entry).is_some_and(|at| *at > now)
                {
                    continue;
                }
            }
            // Held by another process that is still there: skipped until its lease ends.
            if let Some(holder) = live.get(&q.entry)
                && !self.backends.holder_gone(holder)
            {
                continue;
            }
            if entries.is_none() {
                let all = lock(self.store).entries()?;
                entries = Some(all.into_iter().map(|e| (e.id.clone(), e)).collect());
            }
            let entry = entries.as_ref().and_then(|all| all.get(&q.entry)).cloned();
            match entry {
                Some(entry) if entry.is_migratable() => {
                    lock(&self.state).in_flight.insert(entry.id.clone());
                    return Ok(Some(Item {
                        entry,
                        ticket: Some(q.ticket),
                        failures: q.failures,
                    }));
                }
                // Removed, or no longer to be migrated (skipped, its target gone): nothing
                // for a worker to do until it is queued again.
                other => {
                    lock(self.store).dequeue(&q.entry, q.ticket)?;
                    let why = match other {
                        Some(e) => format!("not to be migrated ({})", e.origin),
                        None => "no longer an entry of the job".to_string(),
                    };
                    (self.notice)(&format!("{}: taken off the queue: {why}", q.entry));
                }
            }
        }
        Ok(None)
    }
}

impl Work for QueueWork<'_> {
    fn next(&self, stop: &dyn Fn() -> bool) -> Result<Option<Item>> {
        let _turn = lock(&self.turn);
        loop {
            if stop() {
                return Ok(None);
            }
            match self.pick() {
                Ok(Some(item)) => return Ok(Some(item)),
                Ok(None) => {}
                // A busy database is asked again at the next poll.
                Err(AppError::Store(e)) if e.is_transient() => {}
                Err(e) => return Err(e),
            }
            let waited = Instant::now();
            while waited.elapsed() < POLL_EVERY {
                if stop() {
                    return Ok(None);
                }
                std::thread::sleep(STOP_CHECK_EVERY);
            }
        }
    }

    fn busy(&self, item: Item, _: LeaseHolder) {
        // The next polls skip it while the other process's lease lives.
        lock(&self.state).in_flight.remove(&item.entry.id);
    }

    fn no_room(&self, item: Item) {
        // Stays queued; asked for again after a wait.
        let mut state = lock(&self.state);
        state.in_flight.remove(&item.entry.id);
        state
            .no_room
            .insert(item.entry.id, Instant::now() + ROOM_WAIT * 2);
    }

    /// A failed pass leaves its entry queued, and no worker tries it again before the backoff
    /// has gone by; any other takes it off the queue (if it was not queued again since).
    /// Recorded with the pass, in its transaction: apart, another worker polling in between
    /// would find the entry queued and free, and pass it once more.
    fn after_pass(&self, item: &Item, result: &RunEntry) -> AfterPass {
        match item.ticket {
            None => AfterPass::Keep,
            Some(_) if result.state == EntryState::Failed => {
                AfterPass::Defer(failed_backoff(item.failures))
            }
            Some(ticket) => AfterPass::Dequeue(ticket),
        }
    }

    fn finished(&self, item: &Item, result: &RunEntry) -> Result<()> {
        {
            let mut stats = lock(self.stats);
            stats.passes += 1;
            stats.messages += result.copied;
            stats.bytes += result.bytes;
        }
        let mut state = lock(&self.state);
        state.no_room.remove(&item.entry.id);
        state.in_flight.remove(&item.entry.id);
        Ok(())
    }

    fn dropped(&self, item: &Item) {
        lock(&self.state).in_flight.remove(&item.entry.id);
    }
}

// ---------------------------------------------------------------- workers

/// `workers --json`: every worker registered in the job's state.
#[derive(Debug, Serialize)]
pub struct WorkersOutcome {
    pub workers: Vec<WorkerStatus>,
    /// Entries queued for the workers now.
    pub queued: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Heartbeats are coming.
    Running,
    /// Deregistered: it stopped cleanly.
    Stopped,
    /// No heartbeat for longer than a lease lasts, or its process is known to be gone: it
    /// was killed or cut off; its leases are taken over.
    Gone,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Stopped => "stopped",
            WorkerState::Gone => "gone",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct WorkerStatus {
    /// `host:pid`, as it holds leases.
    pub name: String,
    pub host: String,
    pub pid: Option<u32>,
    pub state: WorkerState,
    pub started: String,
    pub heartbeat: String,
    pub heartbeat_age_seconds: f64,
    pub stopped: Option<String>,
    /// Passes finished.
    pub passes: u64,
    /// Messages and bytes those passes copied.
    pub messages: u64,
    pub bytes: u64,
    /// Messages copied per second, on average from its start to its last heartbeat.
    pub messages_per_second: f64,
}

/// The host and the PID a process's name gives, for people. The name is the backends'
/// (`Backends::process_name`): `HOST/SCOPE:PID`, where SCOPE tells PID namespaces apart, or
/// `HOST:PID` as older versions wrote it.
pub fn host_and_pid(name: &str) -> (&str, Option<u32>) {
    match name.rsplit_once(':') {
        Some((host, pid)) => (host.split('/').next().unwrap_or(host), pid.parse().ok()),
        None => (name, None),
    }
}

/// Every worker registered in the job's state, in the order they started.
pub fn workers(app: &App<'_>) -> Result<WorkersOutcome> {
    let store = app.read_state()?;
    let queued = store.queued()?.len();
    let workers = store
        .workers()?
        .into_iter()
        .map(|w| {
            let state = if w.stopped.is_some() {
                WorkerState::Stopped
            } else if w.heartbeat_age > app.job.migration.lease()
                || app.backends.holder_gone(&w.name)
            {
                WorkerState::Gone
            } else {
                WorkerState::Running
            };
            let (host, pid) = host_and_pid(&w.name);
            let host = host.to_string();
            let seconds = seconds_between(&w.started, &w.heartbeat).unwrap_or(0.0);
            WorkerStatus {
                host,
                pid,
                state,
                heartbeat_age_seconds: w.heartbeat_age.as_secs_f64(),
                messages_per_second: if seconds > 0.0 {
                    w.stats.messages as f64 / seconds
                } else {
                    0.0
                },
                passes: w.stats.passes,
                messages: w.stats.messages,
                bytes: w.stats.bytes,
                name: w.name,
                started: w.started,
                heartbeat: w.heartbeat,
                stopped: w.stopped,
            }
        })
        .collect();
    Ok(WorkersOutcome { workers, queued })
}

/// Seconds from one of the model's times to another.
fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let from = chrono::DateTime::parse_from_rfc3339(from).ok()?;
    let to = chrono::DateTime::parse_from_rfc3339(to).ok()?;
    Some((to - from).num_milliseconds() as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::host_and_pid;

    #[test]
    fn a_process_name_reads_as_host_and_pid_with_or_without_its_scope() {
        assert_eq!(host_and_pid("mail01/0a1b2c3d:42"), ("mail01", Some(42)));
        assert_eq!(host_and_pid("mail01:42"), ("mail01", Some(42)));
        assert_eq!(host_and_pid("mail01"), ("mail01", None));
        assert_eq!(host_and_pid("mail01/0a1b2c3d:x"), ("mail01", None));
    }
}

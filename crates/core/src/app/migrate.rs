//! `migrate`: one pass over the selected entries, `concurrency` of them at a time — a full pass
//! for new entries, a delta pass for the rest.
//!
//! Each entry's pass is leased in the store by this process first, and the lease is renewed
//! while the pass runs: a second `migrate` on the same job (a cron job and an admin, two
//! terminals) skips the entries this one is passing instead of copying them a second time.
//! A lease whose process is gone (killed) is taken over at once; one whose holder merely
//! stopped renewing it expires after [`LEASE_TTL`].

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{App, AppError, Result, remove_missing, selected};
use crate::engine::{PassContext, PassSettings, migrate_entry};
use crate::entries::Selection;
use crate::folders::FolderRules;
use crate::job::Job;
use crate::model::{Entry, EntryId, Origin, RunEntry, RunKind, Side, now};
use crate::ports::store::{Lease, LeaseHolder};
use crate::ports::{EntryPasswords, Observer, Store};
use crate::report::{MigrationReport, Summary};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(60);
/// How often held leases are renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);

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
/// removed first (SPEC §6). `stop`, once set, lets the entries in progress finish and starts
/// no more.
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
            summary: None,
        });
    }
    let settings = pass_settings(app.job);
    let run = store.start_run(RunKind::Migrate)?;
    let started = Instant::now();
    let store = Mutex::new(store);
    let ctx = PassContext {
        source: source.as_ref(),
        target: target.as_ref(),
        settings: &settings,
        store: &store,
        run,
        observer,
        retries: 4,
        retry_delay: Duration::from_secs(1),
    };
    let runner = Runner {
        app,
        store: &store,
        holder: app.backends.process_name(),
        held: Mutex::new(Vec::new()),
        done: AtomicBool::new(false),
    };
    let queue = Mutex::new(runnable.into_iter().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    let busy = Mutex::new(Vec::new());
    let failures = Mutex::new(Vec::<AppError>::new());
    let workers = app.job.migration.concurrency.max(1);
    std::thread::scope(|scope| {
        scope.spawn(|| runner.renew_until_done());
        {
            std::thread::scope(|inner| {
                for _ in 0..workers {
                    inner.spawn(|| {
                        loop {
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                            let next = lock(&queue).pop_front();
                            let Some(entry) = next else { break };
                            let lease = match runner.lease(&entry.id) {
                                Ok(Ok(lease)) => lease,
                                Ok(Err(holder)) => {
                                    lock(&busy).push((entry.id.clone(), holder));
                                    continue;
                                }
                                Err(e) => {
                                    lock(&failures).push(e);
                                    break;
                                }
                            };
                            observer.entry_started(&entry.id);
                            let pw: EntryPasswords =
                                passwords.get(&entry.id).cloned().unwrap_or_default();
                            let result = migrate_entry(&ctx, &entry, &pw);
                            let recorded = runner.record(run, &result);
                            runner.release(&lease);
                            observer.entry_finished(&result);
                            lock(&results).push(result);
                            if let Err(e) = recorded {
                                lock(&failures).push(e);
                                break;
                            }
                        }
                    });
                }
            });
        }
        // The workers are done: the renewer stops too.
        runner.done.store(true, Ordering::SeqCst);
    });
    let mut store = store.into_inner().unwrap_or_else(|e| e.into_inner());
    store.finish_run(run)?;
    if let Some(e) = failures
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .pop()
    {
        return Err(e);
    }
    let mut entries = results.into_inner().unwrap_or_else(|e| e.into_inner());
    entries.sort_by(|a, b| a.entry_id.cmp(&b.entry_id));
    Ok(MigrateOutcome {
        removed,
        waiting,
        busy: busy.into_inner().unwrap_or_else(|e| e.into_inner()),
        summary: Some(Summary {
            run,
            failures: store.failures(run)?,
            entries,
            seconds: started.elapsed().as_secs_f64(),
        }),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The leases of one `migrate` process, and the writes after each entry's pass.
struct Runner<'a, 'b> {
    app: &'a App<'b>,
    store: &'a Mutex<Box<dyn Store>>,
    holder: String,
    held: Mutex<Vec<Lease>>,
    done: AtomicBool,
}

impl Runner<'_, '_> {
    /// Claims an entry, taking over a claim whose process is gone.
    fn lease(&self, entry: &EntryId) -> Result<std::result::Result<Lease, LeaseHolder>> {
        let mut store = lock(self.store);
        let mut claim = store.lease(entry, &self.holder, LEASE_TTL)?;
        if let Err(other) = &claim
            && self.app.backends.holder_gone(&other.holder)
        {
            claim = store.take_over(entry, &self.holder, LEASE_TTL, other.epoch)?;
        }
        if let Ok(lease) = &claim {
            lock(&self.held).push(lease.clone());
        }
        Ok(claim)
    }

    fn release(&self, lease: &Lease) {
        lock(&self.held).retain(|l| l != lease);
        // A lease that cannot be given back expires by itself; nothing is lost.
        let _ = lock(self.store).release(lease);
    }

    /// Records an entry's pass: its run line and its state. An error here is the state
    /// database failing, which stops the run (the ledger itself is already exact).
    fn record(&self, run: crate::model::RunId, result: &RunEntry) -> Result<()> {
        let mut store = lock(self.store);
        store.record_run_entry(run, result)?;
        store.set_entry_result(
            run,
            &result.entry_id,
            result.state,
            &now(),
            result.error.as_deref(),
        )?;
        Ok(())
    }

    /// Renews the held leases until the workers are done.
    fn renew_until_done(&self) {
        let mut last = Instant::now();
        while !self.done.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
            if last.elapsed() < RENEW_EVERY {
                continue;
            }
            last = Instant::now();
            let held = lock(&self.held).clone();
            let mut store = lock(self.store);
            for lease in &held {
                // A failed renewal is retried next time; the lease outlives several misses.
                let _ = store.renew(lease, LEASE_TTL);
            }
        }
    }
}

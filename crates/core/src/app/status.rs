//! `status`: the entry list — the "Jobs tab" (SPEC §4 `status --json`).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::{App, Result};
use crate::model::{Entry, EntryId, EntryState, KeywordsDropped, Origin, RunEntry, RunKind};
use crate::ports::Store;
use crate::ports::store::{LivePass, PassProgress, Queued};

#[derive(Debug, Serialize)]
pub struct StatusOutcome {
    pub entries: Vec<EntryStatus>,
    /// Passes running now, in this process or another (SPEC §4 allows more keys).
    pub passes: Vec<PassStatus>,
}

/// A pass some `migrate`, `worker` (or `serve`) process is running now.
#[derive(Debug, Clone, Serialize)]
pub struct PassStatus {
    pub entry: EntryId,
    /// The process: `host:pid`.
    pub holder: String,
    /// Whether that process is a registered `mailferry worker` (not a `migrate` or `serve`).
    pub worker: bool,
    pub since: String,
    /// Seconds since its process last renewed the lease (every 10 s while it runs).
    pub heartbeat_age_seconds: f64,
    #[serde(flatten)]
    pub progress: PassProgress,
}

impl PassStatus {
    fn new(p: LivePass, workers: &HashSet<String>) -> PassStatus {
        PassStatus {
            worker: workers.contains(&p.holder),
            entry: p.entry,
            holder: p.holder,
            since: p.since,
            heartbeat_age_seconds: p.heartbeat_age.as_secs_f64(),
            progress: p.progress,
        }
    }
}

/// Who holds an entry now (`status --json`, per entry).
#[derive(Debug, Clone, Serialize)]
pub struct Holding {
    /// The process: `host:pid`.
    pub holder: String,
    pub worker: bool,
    pub since: String,
    pub heartbeat_age_seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct EntryStatus {
    pub id: EntryId,
    pub source: Mailbox,
    pub target: Option<Mailbox>,
    pub origin: Origin,
    pub stage: Option<u32>,
    pub state: EntryState,
    pub copied: u64,
    pub failed: u64,
    pub last_pass: Option<String>,
    pub error: Option<String>,
    pub match_note: Option<String>,
    pub missing_source: bool,
    /// Messages its last pass left out (`[migration]` filters, `\Deleted`), from that pass's
    /// line in its run.
    pub skipped: u64,
    /// Custom keywords its last pass dropped because the target cannot store them, per
    /// folder (from that pass's line).
    pub keywords_dropped: Vec<KeywordsDropped>,
    /// Seconds its last pass waited on throttling servers (from that pass's line).
    pub throttled_seconds: f64,
    /// The bytes of its copied messages (its size on the target, as the ledger knows it).
    pub size: u64,
    /// When it was queued for the workers, while it is (`migrate --enqueue-only`).
    pub queued: Option<String>,
    /// While queued: its passes that failed in a row, and the seconds until a worker may try
    /// it again (0: now).
    pub queue_failures: u32,
    pub queue_retry_in_seconds: u64,
    /// The process passing it now, if any.
    pub held_by: Option<Holding>,
}

#[derive(Debug, Serialize)]
pub struct Mailbox {
    pub login: String,
    pub addresses: Vec<String>,
}

impl From<Entry> for EntryStatus {
    fn from(e: Entry) -> EntryStatus {
        EntryStatus {
            target: e.target_login.map(|login| Mailbox {
                login,
                addresses: e.target_addresses,
            }),
            source: Mailbox {
                login: e.source_login,
                addresses: e.source_addresses,
            },
            id: e.id,
            origin: e.origin,
            stage: e.stage,
            state: e.state,
            copied: e.copied,
            failed: e.failed,
            last_pass: e.last_pass,
            error: e.last_error,
            match_note: e.match_note,
            missing_source: e.missing_source,
            skipped: 0,
            keywords_dropped: Vec::new(),
            throttled_seconds: 0.0,
            size: 0,
            queued: None,
            queue_failures: 0,
            queue_retry_in_seconds: 0,
            held_by: None,
        }
    }
}

pub fn status(app: &App<'_>) -> Result<StatusOutcome> {
    let store = app.read_state()?;
    let passes = live(store.as_ref())?;
    let queued: HashMap<EntryId, Queued> = store
        .queued()?
        .into_iter()
        .map(|q| (q.entry.clone(), q))
        .collect();
    let sizes: HashMap<EntryId, u64> = store.copied_bytes()?.into_iter().collect();
    let all = store.entries()?;
    let mut last = last_lines(store.as_ref(), &all)?;
    let entries = all
        .into_iter()
        .map(|e| {
            let mut s = EntryStatus::from(e);
            s.size = sizes.get(&s.id).copied().unwrap_or(0);
            if let Some(line) = last.remove(&s.id) {
                s.skipped = line.skipped;
                s.keywords_dropped = line.keywords_dropped;
                s.throttled_seconds = line.throttled_seconds;
            }
            if let Some(q) = queued.get(&s.id) {
                s.queued = Some(q.queued.clone());
                s.queue_failures = q.failures;
                // Rounded up: "0" only once it may be tried.
                s.queue_retry_in_seconds = q.wait.as_millis().div_ceil(1000) as u64;
            }
            s.held_by = passes.iter().find(|p| p.entry == s.id).map(|p| Holding {
                holder: p.holder.clone(),
                worker: p.worker,
                since: p.since.clone(),
                heartbeat_age_seconds: p.heartbeat_age_seconds,
            });
            s
        })
        .collect();
    Ok(StatusOutcome { entries, passes })
}

/// Each passed entry's line of its last pass: the runs are read newest first until every
/// entry that was ever passed is found (at most the last 50 runs).
fn last_lines(store: &dyn Store, entries: &[Entry]) -> Result<HashMap<EntryId, RunEntry>> {
    let mut wanted: HashSet<&EntryId> = entries
        .iter()
        .filter(|e| e.last_pass.is_some())
        .map(|e| &e.id)
        .collect();
    let mut out = HashMap::new();
    for run in store.runs(RunKind::Migrate)?.into_iter().take(50) {
        if wanted.is_empty() {
            break;
        }
        for line in store.run_entries(run.id)? {
            if wanted.remove(&line.entry_id) {
                out.insert(line.entry_id.clone(), line);
            }
        }
    }
    Ok(out)
}

/// The live passes, each marked with whether its holder is a registered worker.
fn live(store: &dyn Store) -> Result<Vec<PassStatus>> {
    let passes = store.live_passes()?;
    if passes.is_empty() {
        return Ok(Vec::new());
    }
    let workers: HashSet<String> = store
        .workers()?
        .into_iter()
        .filter(|w| w.stopped.is_none())
        .map(|w| w.name)
        .collect();
    Ok(passes
        .into_iter()
        .map(|p| PassStatus::new(p, &workers))
        .collect())
}

/// Only the passes running now: cheap enough to ask every second.
pub fn passes(app: &App<'_>) -> Result<Vec<PassStatus>> {
    live(app.read_state()?.as_ref())
}

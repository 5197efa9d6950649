//! `mailferry serve`: the web console (SPEC §7) for one job.
//!
//! `JobServices` implements the web crate's `Services` port on `mailferry_core::app`: every
//! button runs the same application service as the command of the same name, with the same
//! adapters, and answers with the same JSON as that command's `--json`. What lives here is
//! only what a long-running process adds: the job file reloaded when edited, a pass running in
//! the background with live counters (an `Observer`), and a cache for the event stream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use mailferry_adapters::Standard;
use mailferry_core::app::matching::MatchRequest;
use mailferry_core::app::reconfigure::{FieldValue, Section};
use mailferry_core::app::report::{ReportFormat, ReportKind};
use mailferry_core::app::{self, App, AppError};
use mailferry_core::entries::Selection;
use mailferry_core::job::{ConnectionKind, Job, StateLocation};
use mailferry_core::model::{EntryId, EntryState, RunEntry, RunId, Side};
use mailferry_core::ports::Observer;
use mailferry_core::report::migration::MessageError;
use mailferry_web::{DEFAULT_LISTEN, Entries, ServeConfig, ServiceError, ServiceResult, Services};

use crate::{Failed, Outcome};

/// Set by SIGINT / SIGTERM; a plain static because a signal handler may touch nothing else.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

pub fn run(job_path: &Path, listen: Option<SocketAddr>) -> Outcome {
    // Bad job files and unreadable state fail here, before anything listens.
    let job = crate::load(job_path)?;
    drop(App::new(&job, &Standard).open_state()?);
    let listen_addr = match listen {
        Some(a) => a,
        None => DEFAULT_LISTEN
            .parse()
            .context("The default listen address is malformed")?,
    };
    let services = Arc::new(JobServices::new(job));
    let shutdown = Arc::new(AtomicBool::new(false));
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    {
        let shutdown = Arc::clone(&shutdown);
        let services = Arc::clone(&services);
        std::thread::spawn(move || {
            while !SIGNALLED.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            // As SIGTERM stops `migrate`: the passes in progress finish, no new one starts.
            services.stop.store(true, Ordering::SeqCst);
            shutdown.store(true, Ordering::SeqCst);
        });
    }
    let cfg = ServeConfig {
        listen: listen_addr,
        explicit_listen: listen.is_some(),
    };
    mailferry_web::serve(cfg, services.clone(), shutdown).map_err(|e| Failed {
        code: 2,
        error: e.into(),
    })?;
    if services.tracker.lock().running {
        eprintln!(
            "mailferry: stopping: the mailboxes in progress finish their pass (the ledger keeps \
             every copy), the others are left for the next migrate"
        );
        while services.tracker.lock().running {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A service's error for the web: bad input is the admin's to fix (400), a server, directory
/// or the state that cannot be reached is unavailable (503).
fn web_error(e: AppError) -> ServiceError {
    match e {
        AppError::Fields { message, problems } => {
            ServiceError::bad_input(message).with_details(json!({ "problems": problems }))
        }
        e if e.exit_code() == 2 => ServiceError::bad_input(e.to_string()),
        e => ServiceError::unavailable(e.to_string()),
    }
}

fn to_json(v: &impl Serialize) -> ServiceResult {
    serde_json::to_value(v).map_err(|e| ServiceError::internal(format!("JSON: {e}")))
}

fn json_text(v: &impl Serialize) -> Result<String, ServiceError> {
    serde_json::to_string(v).map_err(|e| ServiceError::internal(format!("JSON: {e}")))
}

/// Live counters of the pass the console started, read by `progress()`.
#[derive(Default)]
struct Live {
    running: bool,
    started: Option<Instant>,
    seconds: Option<f64>,
    error: Option<String>,
    entries: BTreeMap<String, LiveEntry>,
}

#[derive(Default, Clone)]
struct LiveEntry {
    state: String,
    copied: u64,
    bytes: u64,
    planned_messages: u64,
    planned_bytes: u64,
    since: Option<Instant>,
}

struct Tracker(Mutex<Live>);

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Live> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Observer for Tracker {
    fn entry_started(&self, entry: &EntryId) {
        let mut live = self.lock();
        let e = live.entries.entry(entry.to_string()).or_default();
        e.state = "copying".into();
        e.since = Some(Instant::now());
    }

    fn planned(&self, entry: &EntryId, messages: u64, bytes: u64) {
        // A retried attempt plans again from the start: its counters start again too.
        let mut live = self.lock();
        let e = live.entries.entry(entry.to_string()).or_default();
        e.state = "copying".into();
        e.planned_messages = messages;
        e.planned_bytes = bytes;
        e.copied = 0;
        e.bytes = 0;
        e.since = Some(Instant::now());
    }

    fn copied(&self, entry: &EntryId, messages: u64, bytes: u64) {
        let mut live = self.lock();
        let e = live.entries.entry(entry.to_string()).or_default();
        e.copied += messages;
        e.bytes += bytes;
    }

    fn entry_finished(&self, result: &RunEntry) {
        let mut live = self.lock();
        let e = live.entries.entry(result.entry_id.to_string()).or_default();
        e.state = result.state.as_str().into();
        e.copied = result.copied;
        e.bytes = result.bytes;
    }
}

pub struct JobServices {
    path: PathBuf,
    /// The job as last loaded, with the job file's modification time: an edited file is
    /// loaded again, as a CLI command run now would.
    job: Mutex<(Option<SystemTime>, Job)>,
    tracker: Arc<Tracker>,
    /// Set by Stop (or a signal): the pass in progress starts no further mailbox.
    stop: Arc<AtomicBool>,
    /// This process as a lease holder, to tell its own passes from other processes'.
    process: String,
    /// `entries()` as last read, keyed by the state database's file stamps: the event stream
    /// asks every second, and reading 10,000 entries again when nothing was written would
    /// keep a core busy. Kept as JSON texts ([`Entries`]), shared by every request and event
    /// stream: a browser's first load sends the text as it is, and the streams compare
    /// entries by their texts.
    entries_cache: Mutex<Option<(DbStamp, Arc<Entries>)>>,
    /// Other processes' passes as last read, keyed the same way and when: every event
    /// stream's tick asks for them, and an idle tick then opens no database at all. Read
    /// again after [`PASSES_FRESH`] even when nothing was written, since a lease that is
    /// not renewed ends with time alone.
    passes_cache: Mutex<Option<(DbStamp, Instant, Vec<app::status::PassStatus>)>>,
    /// How often the state database was read for other processes' passes (for the tests).
    passes_reads: AtomicU64,
    /// The last Check connections of this console, and when it ran: the Dashboard shows it
    /// beside each connection until the next one.
    last_check: Mutex<Option<Value>>,
}

/// Modification times and sizes of the database and its write-ahead log: any committed
/// write changes one of them.
type DbStamp = [(Option<SystemTime>, u64); 2];

/// How long other processes' passes, as read, stand for the state when nothing was written.
const PASSES_FRESH: Duration = Duration::from_secs(5);

fn db_stamp(db: &Path) -> DbStamp {
    let stat = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [stat(db), stat(Path::new(&wal))]
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn connection_json(side: Side, job: &Job) -> Value {
    let conn = match side {
        Side::Source => &job.source,
        Side::Target => &job.target,
    };
    let directory = conn.directory.as_ref().map(|d| d.url().to_string());
    match &conn.kind {
        ConnectionKind::Imap(i) => {
            json!({"kind": "imap", "host": i.host, "port": i.port, "directory": directory})
        }
        ConnectionKind::Maildir { root } => {
            json!({"kind": "maildir", "host": root.display().to_string(), "port": null,
                   "directory": directory})
        }
    }
}

fn rate(bytes: u64, since: Option<Instant>) -> u64 {
    let secs = since.map_or(0.0, |s| s.elapsed().as_secs_f64());
    if secs > 0.5 {
        (bytes as f64 / secs) as u64
    } else {
        0
    }
}

fn ids_of(ids: &[String]) -> Selection {
    Selection::Ids(ids.to_vec())
}

/// The web's own notices (entries removed by the job-change rule) go to the server's log.
fn notice(text: &str) {
    eprintln!("{text}");
}

impl JobServices {
    /// The entries' JSON texts, from the cache while the state database has not changed
    /// (PostgreSQL states are read every time: there is no cheap stamp).
    fn entries_cached(&self) -> Result<Arc<Entries>, ServiceError> {
        let job = JobServices::job(self)?;
        let stamp = match &job.state {
            StateLocation::Sqlite(p) => Some(db_stamp(p)),
            StateLocation::Postgres(_) => None,
        };
        let mut cache = self.entries_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(s), Some((cached, entries))) = (&stamp, cache.as_ref())
            && s == cached
        {
            return Ok(entries.clone());
        }
        let status = self.with_app(app::status::status)?;
        let entries = Arc::new(Entries {
            text: json_text(&status)?.into(),
            each: status
                .entries
                .iter()
                .map(|e| Ok((e.id.as_str().into(), json_text(e)?.into())))
                .collect::<Result<_, ServiceError>>()?,
        });
        // Stamped before the read: a write during the read makes the next call read again.
        *cache = stamp.map(|s| (s, entries.clone()));
        Ok(entries)
    }

    pub fn new(job: Job) -> JobServices {
        JobServices {
            path: job.path.clone(),
            job: Mutex::new((modified(&job.path), job)),
            tracker: Arc::new(Tracker(Mutex::new(Live::default()))),
            stop: Arc::new(AtomicBool::new(false)),
            process: mailferry_core::ports::Backends::process_name(&Standard),
            entries_cache: Mutex::new(None),
            passes_cache: Mutex::new(None),
            passes_reads: AtomicU64::new(0),
            last_check: Mutex::new(None),
        }
    }

    fn job(&self) -> Result<Job, ServiceError> {
        let mut cached = self.job.lock().unwrap_or_else(|e| e.into_inner());
        let now = modified(&self.path);
        if now != cached.0 {
            let job = Job::load(&self.path).map_err(|e| ServiceError::bad_input(e.to_string()))?;
            *cached = (now, job);
        }
        Ok(cached.1.clone())
    }

    /// Drops the loaded job, so that the next call loads the job file again.
    fn forget_job(&self) {
        self.job.lock().unwrap_or_else(|e| e.into_inner()).0 = None;
    }

    /// Every ID names an entry (an ID is exact here, never an address or a login).
    fn known_ids(&self, ids: &[String]) -> Result<(), ServiceError> {
        let entries = self.with_app(|app| Ok(app.open_state()?.entries()?))?;
        mailferry_core::entries::select(&entries, &ids_of(ids))
            .map(drop)
            .map_err(ServiceError::bad_input)
    }

    /// The passes other processes are running now: read from the state database only when
    /// it was written since the last read, or that read is older than [`PASSES_FRESH`].
    fn other_passes(&self) -> Result<Vec<app::status::PassStatus>, ServiceError> {
        let stamp = match &JobServices::job(self)?.state {
            StateLocation::Sqlite(p) => Some(db_stamp(p)),
            StateLocation::Postgres(_) => None,
        };
        let mut cache = self.passes_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(now), Some((then, at, passes))) = (&stamp, cache.as_ref())
            && now == then
            && at.elapsed() < PASSES_FRESH
        {
            return Ok(passes.clone());
        }
        // The stamp is taken before the read: a write during it shows at the next tick.
        self.passes_reads.fetch_add(1, Ordering::Relaxed);
        let passes: Vec<_> = self
            .with_app(app::status::passes)?
            .into_iter()
            .filter(|p| p.holder != self.process)
            .collect();
        *cache = stamp.map(|s| (s, Instant::now(), passes.clone()));
        Ok(passes)
    }

    /// Runs one application service on the job as it is now.
    fn with_app<T>(
        &self,
        service: impl FnOnce(&App<'_>) -> Result<T, AppError>,
    ) -> Result<T, ServiceError> {
        let job = JobServices::job(self)?;
        let app = App::new(&job, &Standard).with_notices(&notice);
        service(&app).map_err(web_error)
    }
}

impl Services for JobServices {
    fn job(&self) -> ServiceResult {
        let job = JobServices::job(self)?;
        Ok(json!({
            "name": job.name,
            "path": job.path.display().to_string(),
            "connections": {
                "source": connection_json(Side::Source, &job),
                "target": connection_json(Side::Target, &job),
            },
            "last_check": *self.last_check.lock().unwrap_or_else(|e| e.into_inner()),
        }))
    }

    fn entries(&self) -> ServiceResult {
        serde_json::from_str(&self.entries_cached()?.text)
            .map_err(|e| ServiceError::internal(format!("JSON: {e}")))
    }

    fn entries_shared(&self) -> Result<Arc<Entries>, ServiceError> {
        self.entries_cached()
    }

    fn entries_version(&self) -> Option<String> {
        // The stamps that key the entries cache: any committed write changes them.
        match &JobServices::job(self).ok()?.state {
            StateLocation::Sqlite(p) => Some(format!("{:?}", db_stamp(p))),
            StateLocation::Postgres(_) => None,
        }
    }

    fn check(&self) -> ServiceResult {
        let v = to_json(&self.with_app(app::check::check)?)?;
        *self.last_check.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(json!({"at": mailferry_core::model::now(), "result": v.clone()}));
        Ok(v)
    }

    fn refresh(&self, ids: &[String]) -> ServiceResult {
        let outcome = self.with_app(|app| app::refresh::refresh(app, &ids_of(ids)))?;
        to_json(&outcome.report)
    }

    fn start_migration(&self, ids: &[String]) -> ServiceResult {
        let job = JobServices::job(self)?;
        // Held across the checks, so two clicks cannot start two passes.
        let mut live = self.tracker.lock();
        if live.running {
            return Err(ServiceError::bad_input(
                "A migration is already running: wait for it to finish, or Stop it",
            ));
        }
        // The selection is checked now, so a bad one is answered at once.
        let selection = ids_of(ids);
        let entries = self.with_app(|app| Ok(app.open_state()?.entries()?))?;
        let chosen: Vec<_> = mailferry_core::entries::select(&entries, &selection)
            .map_err(ServiceError::bad_input)?
            .into_iter()
            .filter(|e| e.is_migratable())
            .collect();
        if chosen.is_empty() {
            return Err(ServiceError::bad_input(
                "None of the selected mailboxes can be migrated: each needs a target mailbox \
                 and must not be skipped or waiting for creation",
            ));
        }
        *live = Live {
            running: true,
            started: Some(Instant::now()),
            entries: chosen
                .iter()
                .map(|e| {
                    (
                        e.id.to_string(),
                        LiveEntry {
                            state: "queued".into(),
                            ..LiveEntry::default()
                        },
                    )
                })
                .collect(),
            ..Live::default()
        };
        drop(live);
        self.stop.store(false, Ordering::SeqCst);
        let tracker = Arc::clone(&self.tracker);
        let stop = Arc::clone(&self.stop);
        let spawned = std::thread::Builder::new()
            .name("migrate".into())
            .spawn(move || {
                let app = App::new(&job, &Standard).with_notices(&notice);
                let result = app::migrate::migrate(&app, &selection, &*tracker, &stop);
                let mut live = tracker.lock();
                live.running = false;
                live.seconds = live.started.map(|s| s.elapsed().as_secs_f64());
                match result {
                    Ok(outcome) => {
                        for (id, origin) in outcome.waiting {
                            let e = live.entries.entry(id.to_string()).or_default();
                            e.state = format!("not migrated ({origin})");
                        }
                        for (id, holder) in outcome.busy {
                            let e = live.entries.entry(id.to_string()).or_default();
                            e.state = format!("busy in {}", holder.holder);
                        }
                        for id in outcome.taken_over {
                            let e = live.entries.entry(id.to_string()).or_default();
                            e.state = "taken over by another process".into();
                        }
                        // Entries that were queued when Stop came stay as they were.
                        for e in live.entries.values_mut() {
                            if e.state == "queued" {
                                e.state = EntryState::New.as_str().into();
                            }
                        }
                    }
                    Err(e) => live.error = Some(format!("The pass failed: {e}")),
                }
            });
        if let Err(e) = spawned {
            self.tracker.lock().running = false;
            return Err(ServiceError::internal(format!(
                "Unable to start the pass: {e}"
            )));
        }
        Ok(json!({
            "started": ids,
            "message": format!(
                "Migration started for {}",
                mailferry_core::text::counted(ids.len(), "mailbox", "mailboxes")
            ),
        }))
    }

    fn stop_migration(&self) -> ServiceResult {
        if !self.tracker.lock().running {
            return Err(ServiceError::bad_input("No migration is running"));
        }
        self.stop.store(true, Ordering::SeqCst);
        Ok(json!({
            "message": "Stopping: the mailboxes in progress finish their pass, the others are \
                        left for the next migration",
        }))
    }

    fn progress(&self) -> ServiceResult {
        // Passes of other processes (a `migrate` run from a terminal, a cron job) show from
        // the leases they hold in the state database and the progress they write there.
        let others = self.other_passes()?;
        let live = self.tracker.lock();
        let finished = |s: &str| !matches!(s, "queued" | "copying");
        let mut per = serde_json::Map::new();
        for (id, e) in &live.entries {
            per.insert(
                id.clone(),
                json!({
                    "state": e.state, "copied": e.copied, "bytes": e.bytes,
                    "planned_messages": e.planned_messages, "planned_bytes": e.planned_bytes,
                    "rate": if finished(&e.state) { 0 } else { rate(e.bytes, e.since) },
                }),
            );
        }
        let mut sums = [0u64; 4];
        for e in live.entries.values() {
            for (sum, v) in
                sums.iter_mut()
                    .zip([e.copied, e.bytes, e.planned_messages, e.planned_bytes])
            {
                *sum += v;
            }
        }
        for p in &others {
            let q = &p.progress;
            per.insert(
                p.entry.to_string(),
                json!({
                    "state": "copying", "copied": q.copied, "bytes": q.bytes,
                    "planned_messages": q.planned_messages, "planned_bytes": q.planned_bytes,
                    "rate": 0, "by": p.holder, "since": p.since,
                }),
            );
            for (sum, v) in
                sums.iter_mut()
                    .zip([q.copied, q.bytes, q.planned_messages, q.planned_bytes])
            {
                *sum += v;
            }
        }
        let [copied, bytes, planned_messages, planned_bytes] = sums;
        let done = live.entries.values().filter(|e| finished(&e.state)).count();
        Ok(json!({
            "running": live.running || !others.is_empty(),
            "stopping": live.running && self.stop.load(Ordering::SeqCst),
            "seconds": live.seconds,
            "error": live.error,
            "entries": per,
            "overall": {
                "mailboxes": live.entries.len() + others.len(),
                "done": done,
                "copied": copied,
                "bytes": bytes,
                "planned_messages": planned_messages,
                "planned_bytes": planned_bytes,
                "rate": if live.running { rate(bytes, live.started) } else { 0 },
            },
            "elsewhere": others.len(),
        }))
    }

    fn failures(&self, id: &str) -> ServiceResult {
        let entry = EntryId::from(id);
        let failures = self.with_app(|app| app::report::failures(app, &entry))?;
        // The same keys as an entry's `errors` in `migrate --json`.
        let errors: Vec<MessageError> = failures
            .into_iter()
            .map(|f| MessageError {
                folder: f.folder,
                uid: f.uid,
                size: f.size,
                message_id: f.message_id,
                reason: f.reason,
            })
            .collect();
        Ok(json!({ "id": id, "failures": to_json(&errors)? }))
    }

    fn match_auto(&self, ids: &[String]) -> ServiceResult {
        let req = MatchRequest {
            auto: true,
            auto_within: Some(ids_of(ids)),
            ..MatchRequest::default()
        };
        to_json(&self.with_app(|app| app::matching::match_entries(app, &req))?)
    }

    fn match_set(&self, id: &str, address: &str) -> ServiceResult {
        self.known_ids(&[id.to_string()])?;
        let req = MatchRequest {
            set: vec![format!("{id}={}", address.trim())],
            ..MatchRequest::default()
        };
        to_json(&self.with_app(|app| app::matching::match_entries(app, &req))?)
    }

    fn skip(&self, ids: &[String]) -> ServiceResult {
        self.known_ids(ids)?;
        let req = MatchRequest {
            skip: ids.to_vec(),
            ..MatchRequest::default()
        };
        to_json(&self.with_app(|app| app::matching::match_entries(app, &req))?)
    }

    fn match_create(&self, ids: &[String]) -> ServiceResult {
        self.known_ids(ids)?;
        let req = MatchRequest {
            create: ids.to_vec(),
            ..MatchRequest::default()
        };
        to_json(&self.with_app(|app| app::matching::match_entries(app, &req))?)
    }

    fn stage(&self, ids: &[String], stage: u32) -> ServiceResult {
        self.known_ids(ids)?;
        let req = MatchRequest {
            stage: Some(stage),
            mailboxes: ids.to_vec(),
            ..MatchRequest::default()
        };
        to_json(&self.with_app(|app| app::matching::match_entries(app, &req))?)
    }

    fn create(&self) -> ServiceResult {
        to_json(&self.with_app(app::create::create)?)
    }

    fn runs(&self) -> ServiceResult {
        let runs = self.with_app(app::report::runs)?;
        Ok(serde_json::json!({ "runs": runs }))
    }

    fn report(&self, kind: &str, format: &str, run: Option<i64>) -> Result<String, ServiceError> {
        let kind = match kind {
            "migration" => ReportKind::Migration,
            "refresh" => ReportKind::Refresh,
            other => {
                return Err(ServiceError::bad_input(format!(
                    "No report of kind {other:?}: migration or refresh"
                )));
            }
        };
        let format = match format {
            "json" => ReportFormat::Json,
            "csv" => ReportFormat::Csv,
            _ => ReportFormat::Html,
        };
        self.with_app(|app| app::report::report_of(app, kind, format, run.map(RunId)))
    }

    fn connections(&self) -> ServiceResult {
        to_json(&self.with_app(app::reconfigure::connections)?)
    }

    fn reconfigure(&self, section: &str, fields: &Value) -> ServiceResult {
        let section = Section::parse(section).ok_or_else(|| {
            ServiceError::bad_input(format!(
                "No form {section:?}: source, target, source.directory or target.directory"
            ))
        })?;
        let changes: BTreeMap<String, FieldValue> = serde_json::from_value(fields.clone())
            .map_err(|e| ServiceError::bad_input(format!("Unreadable form: {e}")))?;
        let outcome = self.with_app(|app| app::reconfigure::reconfigure(app, section, &changes))?;
        // The next call loads the file as written, even within the file system's timestamp
        // granularity.
        self.forget_job();
        to_json(&outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ticks of an idle console open no database: other processes' passes are read again
    /// only after a write, or once they are [`PASSES_FRESH`] old.
    #[test]
    fn an_idle_tick_reads_no_state_and_a_write_is_seen_at_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(
            dir.path().join("mailboxes.csv"),
            "Source ID,Source addresses,Target addresses\nann,ann@a.test,ann@b.test\n",
        )
        .unwrap();
        std::fs::write(
            &path,
            "name = \"idle\"\n[source]\nkind = \"maildir\"\npath = \"in\"\n\
             [target]\nkind = \"maildir\"\npath = \"out\"\n\
             [mailboxes]\ncsv = \"mailboxes.csv\"\n",
        )
        .unwrap();
        let services = JobServices::new(Job::load(&path).unwrap());
        let reads = || services.passes_reads.load(Ordering::Relaxed);
        // The first read creates the database (and records the job file's hash), so the
        // second tick sees it changed and reads once more; from then on it is idle.
        services.progress().unwrap();
        services.progress().unwrap();
        let settled = reads();
        assert!(settled <= 2, "{settled}");
        for _ in 0..5 {
            services.progress().unwrap();
        }
        assert_eq!(reads(), settled, "idle ticks read the state again");
        // A commit by another process is seen at the next tick.
        let state = match &Job::load(&path).unwrap().state {
            StateLocation::Sqlite(p) => p.clone(),
            StateLocation::Postgres(_) => unreachable!("a job without `state` keeps SQLite"),
        };
        std::thread::sleep(Duration::from_millis(20));
        let other = rusqlite::Connection::open(&state).unwrap();
        other
            .execute_batch("CREATE TABLE touched (x); INSERT INTO touched VALUES (1);")
            .unwrap();
        services.progress().unwrap();
        assert_eq!(
            reads(),
            settled + 1,
            "a write to {} was not seen",
            state.display()
        );
    }
}

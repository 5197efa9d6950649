//! `mailferry serve`: the web console (SPEC §7) for one job.
//!
//! This is the only file where the web UI meets the core: `JobServices` implements the web
//! crate's `Services` port on today's `mailferry_core`, building the same JSON objects the
//! CLI prints with `--json`. When the core grows one application service per command, this
//! implementation is replaced by one on those services, and nothing in `mailferry-web`
//! changes.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use mailferry_core::engine::{Backend, Progress};
use mailferry_core::identities::{self, IdentityError};
use mailferry_core::job::{ConnectionKind, Job, StateLocation};
use mailferry_core::migrate::{self, is_migratable, server_for};
use mailferry_core::report;
use mailferry_core::store::{Entry, Store};
use mailferry_web::{DEFAULT_LISTEN, ServeConfig, ServiceError, ServiceResult, Services};

/// Set by SIGINT / SIGTERM; a plain static because a signal handler may touch nothing else.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

pub fn run(job_path: &Path, listen: Option<SocketAddr>) -> Result<ExitCode> {
    // Bad job files and unreadable state fail here, before anything listens.
    let job = crate::load(job_path)?;
    crate::open_store(&job)?;
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
        std::thread::spawn(move || {
            while !SIGNALLED.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            shutdown.store(true, Ordering::SeqCst);
        });
    }
    let cfg = ServeConfig {
        listen: listen_addr,
        explicit_listen: listen.is_some(),
    };
    mailferry_web::serve(cfg, services.clone(), shutdown)
        .map_err(|e| crate::usage(e.to_string()))?;
    if services.live().running {
        eprintln!(
            "mailferry: stopped during a pass; its copies so far are in the ledger, and the next \
             migrate resumes without duplicates"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Live counters of the pass the console started, read by `progress()`.
#[derive(Default)]
struct Live {
    running: bool,
    /// When the pass started, as the store writes timestamps: entries whose last pass is at
    /// or after it have finished in this pass.
    started_stamp: Option<String>,
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

impl Progress for Tracker {
    fn planned(&self, entry: &str, messages: u64, bytes: u64) {
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

    fn copied(&self, entry: &str, messages: u64, bytes: u64) {
        let mut live = self.lock();
        let e = live.entries.entry(entry.to_string()).or_default();
        e.copied += messages;
        e.bytes += bytes;
    }
}

pub struct JobServices {
    path: PathBuf,
    /// The job as last loaded, with the job file's modification time: an edited file is
    /// loaded again, as a CLI command run now would.
    job: Mutex<(Option<SystemTime>, Job)>,
    tracker: Arc<Tracker>,
    /// `entries()` as last read, keyed by the state database's file stamps: the event stream
    /// asks every second, and reading 10,000 entries again when nothing was written would
    /// keep a core busy.
    entries_cache: Mutex<Option<(DbStamp, Value)>>,
}

/// Modification times and sizes of the database and its write-ahead log: any committed
/// write changes one of them.
type DbStamp = [(Option<SystemTime>, u64); 2];

fn db_stamp(db: &Path) -> DbStamp {
    let stat = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    [stat(db), stat(Path::new(&wal))]
}

fn fail(e: anyhow::Error) -> ServiceError {
    if e.downcast_ref::<crate::Usage>().is_some() {
        ServiceError::bad_input(format!("{e:#}"))
    } else {
        ServiceError::internal(format!("{e:#}"))
    }
}

fn identity_fail(e: IdentityError) -> ServiceError {
    match e {
        IdentityError::Input(m) => ServiceError::bad_input(m),
        e @ IdentityError::Directory { .. } => ServiceError::unavailable(e.to_string()),
        e => ServiceError::internal(e.to_string()),
    }
}

fn store_fail(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::internal(format!("State database: {e}"))
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The entries with exactly these IDs, in the order given; an unknown ID is bad input.
fn by_ids(entries: &[Entry], ids: &[String]) -> Result<Vec<Entry>, ServiceError> {
    if ids.is_empty() {
        return Err(ServiceError::bad_input("Select at least one mailbox"));
    }
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .map(|id| {
            entries
                .iter()
                .find(|e| &e.id == id)
                .cloned()
                .ok_or_else(|| ServiceError::bad_input(format!("No entry has the ID {id:?}")))
        })
        .collect()
}

/// One entry as `status --json` prints it (SPEC §4).
fn entry_json(e: &Entry) -> Value {
    json!({
        "id": e.id,
        "source": {"login": e.source_login, "addresses": e.source_addresses},
        "target": e.target_login.as_ref().map(|l| json!({"login": l, "addresses": e.target_addresses})),
        "origin": e.origin, "stage": e.stage, "state": e.state,
        "copied": e.copied, "failed": e.failed, "last_pass": e.last_pass,
        "error": e.last_error, "match_note": e.match_note,
        "missing_source": e.missing_source,
    })
}

fn connection_json(side: &str, job: &Job) -> Value {
    let conn = if side == "source" {
        &job.source
    } else {
        &job.target
    };
    let directory = conn.directory.as_ref().map(|d| d.url.clone());
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

impl JobServices {
    pub fn new(job: Job) -> JobServices {
        JobServices {
            path: job.path.clone(),
            job: Mutex::new((modified(&job.path), job)),
            tracker: Arc::new(Tracker(Mutex::new(Live::default()))),
            entries_cache: Mutex::new(None),
        }
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.tracker.lock()
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

    /// The store for a command that may change entries: as the CLI opens it, noticing an
    /// edited job file first (SPEC §6 removals).
    fn store(&self, job: &Job) -> Result<Store, ServiceError> {
        crate::open_store(job).map_err(fail)
    }

    /// The store for reading only: no job-file check, so the once-a-second event stream
    /// writes nothing.
    fn read_store(&self, job: &Job) -> Result<Store, ServiceError> {
        match &job.state {
            StateLocation::Sqlite(p) => Store::open(p).map_err(|e| {
                ServiceError::internal(format!(
                    "Unable to open the state database {}: {e}",
                    p.display()
                ))
            }),
            StateLocation::Postgres(_) => Err(ServiceError::bad_input(
                "postgres state is not supported yet",
            )),
        }
    }

    fn reports_dir(job: &Job) -> PathBuf {
        job.path.parent().unwrap_or(Path::new(".")).join("reports")
    }
}

impl Services for JobServices {
    fn job(&self) -> ServiceResult {
        let job = JobServices::job(self)?;
        Ok(json!({
            "name": job.name,
            "path": job.path.display().to_string(),
            "connections": {
                "source": connection_json("source", &job),
                "target": connection_json("target", &job),
            },
        }))
    }

    fn entries(&self) -> ServiceResult {
        let job = JobServices::job(self)?;
        let stamp = match &job.state {
            StateLocation::Sqlite(p) => Some(db_stamp(p)),
            StateLocation::Postgres(_) => None,
        };
        let mut cache = self.entries_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(s), Some((cached, v))) = (&stamp, cache.as_ref())
            && s == cached
        {
            return Ok(v.clone());
        }
        let entries = self.read_store(&job)?.entries().map_err(store_fail)?;
        let v = json!({"entries": entries.iter().map(entry_json).collect::<Vec<_>>()});
        // Stamped before the read: a write during the read makes the next call read again.
        *cache = stamp.map(|s| (s, v.clone()));
        Ok(v)
    }

    fn check(&self) -> ServiceResult {
        let job = JobServices::job(self)?;
        let sample = self
            .read_store(&job)?
            .entries()
            .map_err(store_fail)?
            .into_iter()
            .find(is_migratable);
        let passwords = crate::read_passwords(&job).map_err(fail)?;
        let check = |what: String, ok: bool, detail: String| json!({"check": what, "ok": ok, "detail": detail});
        let mut servers = Vec::new();
        let mut all_ok = true;
        for (side, conn) in [("source", &job.source), ("target", &job.target)] {
            let mut checks = Vec::new();
            match server_for(side, conn) {
                Err(e) => checks.push(check("configuration".into(), false, e)),
                Ok(server) => {
                    let reachable = match &server.backend {
                        Backend::Imap { endpoint: ep, .. } => {
                            match mailferry_imap::Client::connect(ep) {
                                Err(e) => {
                                    checks.push(check(
                                        format!("connect {}:{}", ep.host, ep.port),
                                        false,
                                        e.to_string(),
                                    ));
                                    false
                                }
                                Ok(c) => {
                                    let caps: Vec<&str> = c.capabilities().collect();
                                    checks.push(check(
                                        format!(
                                            "connect {}:{} ({:?})",
                                            ep.host, ep.port, ep.security
                                        ),
                                        true,
                                        format!("capabilities: {}", caps.join(" ")),
                                    ));
                                    c.logout();
                                    true
                                }
                            }
                        }
                        Backend::Maildir { root, create } => {
                            let (ok, detail) = match (root.is_dir(), create) {
                                (true, _) => (true, "found"),
                                (false, true) => (true, "will be created by the first pass"),
                                (false, false) => (false, "no such directory"),
                            };
                            checks.push(check(
                                format!("maildir {}", root.display()),
                                ok,
                                detail.into(),
                            ));
                            root.is_dir()
                        }
                    };
                    if reachable {
                        match &sample {
                            None => checks.push(check(
                                "login".into(),
                                false,
                                "no entries yet: import them with `mailferry match --csv`, then \
                                 check again"
                                    .into(),
                            )),
                            Some(entry) => {
                                let login = if side == "source" {
                                    entry.source_login.clone()
                                } else {
                                    entry.target_login.clone().unwrap_or_default()
                                };
                                let pw = passwords.get(&entry.id).cloned().unwrap_or_default();
                                let own = if side == "source" {
                                    pw.source
                                } else {
                                    pw.target
                                };
                                match server.connect(side, &login, own.as_deref()) {
                                    Ok(mut session) => {
                                        let detail = match session.tree() {
                                            Ok(t) => format!("{} folders", t.folders().count()),
                                            Err(e) => format!("LIST failed: {e}"),
                                        };
                                        checks.push(check(
                                            format!("login as {login}"),
                                            true,
                                            detail,
                                        ));
                                        session.logout();
                                    }
                                    Err(e) => checks.push(check(
                                        format!("login as {login}"),
                                        false,
                                        e.to_string(),
                                    )),
                                }
                            }
                        }
                    }
                }
            }
            if let Some(cfg) = &conn.directory {
                let what = format!("directory {}", cfg.url);
                checks.push(match identities::connect(side, conn) {
                    Ok(_) => check(what, true, format!("bound as {}", cfg.bind_dn)),
                    Err(e) => check(what, false, e.to_string()),
                });
            }
            all_ok &= checks.iter().all(|c| c["ok"] == true);
            servers.push(json!({"side": side, "checks": checks}));
        }
        Ok(json!({"ok": all_ok, "servers": servers}))
    }

    fn refresh(&self, ids: &[String]) -> ServiceResult {
        let job = JobServices::job(self)?;
        let mut store = self.store(&job)?;
        let selected = by_ids(&store.entries().map_err(store_fail)?, ids)?;
        // The connections are checked first: nothing changes if a directory cannot be reached.
        let mut source = identities::connect("source", &job.source).map_err(|e| {
            ServiceError::unavailable(format!(
                "Cannot refresh: the source directory is not reachable: {e}"
            ))
        })?;
        let mut target = identities::connect("target", &job.target).map_err(|e| {
            ServiceError::unavailable(format!(
                "Cannot refresh: the target directory is not reachable: {e}"
            ))
        })?;
        let record =
            identities::refresh_addresses(source.as_mut(), target.as_mut(), &mut store, &selected)
                .map_err(identity_fail)?;
        let removed_next = store.missing_source_ids().map_err(store_fail)?;
        // The same three files as `refresh-addresses` writes.
        let dir = JobServices::reports_dir(&job);
        let write = |name: &Path, text: String| {
            std::fs::write(name, text).map_err(|e| {
                ServiceError::internal(format!("Unable to write {}: {e}", name.display()))
            })
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            ServiceError::internal(format!("Unable to create {}: {e}", dir.display()))
        })?;
        let stem = format!(
            "refresh-{}",
            record
                .started
                .replace([':', '-'], "")
                .replace('T', "-")
                .trim_end_matches('Z')
        );
        let html = dir.join(format!("{stem}.html"));
        let html_str = std::path::absolute(&html)
            .unwrap_or(html.clone())
            .display()
            .to_string();
        write(
            &html,
            report::refresh::html(&job.name, &record, &removed_next),
        )?;
        write(
            &dir.join(format!("{stem}.csv")),
            report::refresh::csv(&record),
        )?;
        let v = report::refresh::json(&record, &removed_next, Some(&html_str));
        write(
            &dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(&v).unwrap_or_default(),
        )?;
        Ok(v)
    }

    fn start_migration(&self, ids: &[String]) -> ServiceResult {
        let job = JobServices::job(self)?;
        // Held across the checks, so two clicks cannot start two passes.
        let mut live = self.live();
        if live.running {
            return Err(ServiceError::bad_input(
                "A migration is already running: wait for it to finish",
            ));
        }
        let mut store = self.store(&job)?;
        crate::identity::remove_missing(&mut store, "Before this pass").map_err(fail)?;
        let chosen = by_ids(&store.entries().map_err(store_fail)?, ids)?;
        let (runnable, waiting): (Vec<Entry>, Vec<Entry>) =
            chosen.into_iter().partition(is_migratable);
        if runnable.is_empty() {
            return Err(ServiceError::bad_input(
                "None of the selected mailboxes can be migrated: each needs a target mailbox \
                 and must not be skipped or waiting for creation",
            ));
        }
        let passwords = crate::read_passwords(&job).map_err(fail)?;
        *live = Live {
            running: true,
            started_stamp: Some(mailferry_core::store::now()),
            started: Some(Instant::now()),
            entries: runnable
                .iter()
                .map(|e| {
                    (
                        e.id.clone(),
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
        let started: Vec<String> = runnable.iter().map(|e| e.id.clone()).collect();
        let tracker = Arc::clone(&self.tracker);
        let spawned = std::thread::Builder::new()
            .name("migrate".into())
            .spawn(move || {
                let result = migrate::run(&job, store, runnable, &passwords, &*tracker);
                let mut live = tracker.lock();
                live.running = false;
                live.seconds = live.started.map(|s| s.elapsed().as_secs_f64());
                match result {
                    Ok(summary) => {
                        for r in summary.entries {
                            let e = live.entries.entry(r.entry_id.clone()).or_default();
                            e.state = r.state;
                            e.copied = r.copied;
                            e.bytes = r.bytes;
                        }
                    }
                    Err(e) => live.error = Some(format!("The pass failed: {e}")),
                }
            });
        if let Err(e) = spawned {
            self.live().running = false;
            return Err(ServiceError::internal(format!(
                "Unable to start the pass: {e}"
            )));
        }
        Ok(json!({
            "started": started,
            "not_migrated": waiting.iter().map(|e| json!({"id": e.id, "origin": e.origin})).collect::<Vec<_>>(),
            "message": format!("Migration started for {} mailboxes", started.len()),
        }))
    }

    fn stop_migration(&self) -> ServiceResult {
        // The engine has no cancel signal yet; stopping the process (Ctrl+C) is safe: the
        // ledger lets the next pass resume without duplicates.
        Err(ServiceError::unavailable(
            "Stopping a running pass is not supported yet: stop mailferry serve (Ctrl+C) \
             instead; the next migrate resumes without duplicates",
        ))
    }

    fn progress(&self) -> ServiceResult {
        let mut snapshot = {
            let live = self.live();
            (
                live.running,
                live.started_stamp.clone(),
                live.seconds,
                live.error.clone(),
                live.entries.clone(),
            )
        };
        let (running, stamp, seconds, error, entries) = &mut snapshot;
        // Entries that finished in this pass show their recorded state at once, not only
        // when the whole pass is over.
        if *running && let Some(stamp) = stamp {
            let job = JobServices::job(self)?;
            for e in self.read_store(&job)?.entries().map_err(store_fail)? {
                if let Some(l) = entries.get_mut(&e.id)
                    && e.last_pass.as_deref().is_some_and(|p| p >= stamp.as_str())
                    && l.state == "copying"
                {
                    l.state = e.state.clone();
                }
            }
        }
        let finished = |s: &str| !matches!(s, "queued" | "copying");
        let mut per = serde_json::Map::new();
        for (id, e) in entries.iter() {
            per.insert(
                id.clone(),
                json!({
                    "state": e.state, "copied": e.copied, "bytes": e.bytes,
                    "planned_messages": e.planned_messages, "planned_bytes": e.planned_bytes,
                    "rate": if finished(&e.state) { 0 } else { rate(e.bytes, e.since) },
                }),
            );
        }
        let sum = |f: fn(&LiveEntry) -> u64| entries.values().map(f).sum::<u64>();
        let bytes = sum(|e| e.bytes);
        let started = self.live().started;
        Ok(json!({
            "running": running,
            "seconds": seconds,
            "error": error,
            "entries": per,
            "overall": {
                "mailboxes": entries.len(),
                "done": entries.values().filter(|e| finished(&e.state)).count(),
                "copied": sum(|e| e.copied),
                "bytes": bytes,
                "planned_messages": sum(|e| e.planned_messages),
                "planned_bytes": sum(|e| e.planned_bytes),
                "rate": if *running { rate(bytes, started) } else { 0 },
            },
        }))
    }

    fn match_auto(&self, ids: &[String]) -> ServiceResult {
        let job = JobServices::job(self)?;
        let mut store = self.store(&job)?;
        let chosen = by_ids(&store.entries().map_err(store_fail)?, ids)?;
        let mut dir = identities::connect("target", &job.target)
            .map_err(identity_fail)?
            .ok_or_else(|| {
                ServiceError::bad_input("match --auto needs [target.directory] in the job file")
            })?;
        let r =
            identities::auto_match_entries(&mut dir, &mut store, &chosen).map_err(identity_fail)?;
        Ok(json!({"auto": r}))
    }

    fn match_set(&self, id: &str, address: &str) -> ServiceResult {
        let address = address.trim();
        if !address.contains('@') {
            return Err(ServiceError::bad_input(format!(
                "{address:?} is not an address"
            )));
        }
        let job = JobServices::job(self)?;
        let mut store = self.store(&job)?;
        let [entry] = by_ids(&store.entries().map_err(store_fail)?, &[id.to_string()])?
            .try_into()
            .map_err(|_| ServiceError::bad_input("Select exactly one mailbox"))?;
        let mut dir = identities::connect("target", &job.target).map_err(identity_fail)?;
        let u = identities::set_manual(&mut store, &entry, address, dir.as_mut())
            .map_err(identity_fail)?;
        Ok(json!({"set": [{"id": u.id, "target": u.target_addresses}]}))
    }

    fn skip(&self, ids: &[String]) -> ServiceResult {
        let job = JobServices::job(self)?;
        let mut store = self.store(&job)?;
        let chosen = by_ids(&store.entries().map_err(store_fail)?, ids)?;
        for e in &chosen {
            identities::mark_skip(&mut store, e).map_err(identity_fail)?;
        }
        Ok(json!({"skipped": chosen.iter().map(|e| e.id.clone()).collect::<Vec<_>>()}))
    }

    fn create(&self) -> ServiceResult {
        let job = JobServices::job(self)?;
        let Some(create) = &job.target.create else {
            return Err(ServiceError::bad_input(
                "create needs [target.create] in the job file",
            ));
        };
        let mut dir = identities::connect("target", &job.target)
            .map_err(identity_fail)?
            .ok_or_else(|| {
                ServiceError::bad_input("create needs [target.directory] in the job file")
            })?;
        let password = match &create.initial_password {
            Some(s) => Some(s.reveal().map_err(|e| {
                ServiceError::bad_input(format!("target.create.initial_password: {e}"))
            })?),
            None => None,
        };
        let mut store = self.store(&job)?;
        let entries = store.entries().map_err(store_fail)?;
        let results = identities::create_pending(&mut dir, &mut store, create, password, &entries)
            .map_err(identity_fail)?;
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        let list: Vec<_> = results
            .iter()
            .map(|(id, r)| match r {
                Ok(a) => json!({"id": id, "created": a}),
                Err(e) => json!({"id": id, "error": e}),
            })
            .collect();
        Ok(json!({"entries": list, "created": results.len() - failed, "failed": failed}))
    }

    fn report(&self, kind: &str, format: &str) -> Result<String, ServiceError> {
        let job = JobServices::job(self)?;
        let store = self.read_store(&job)?;
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
        match kind {
            "migration" => {
                let summary = report::last_migration(&store)
                    .map_err(store_fail)?
                    .ok_or_else(|| {
                        ServiceError::bad_input("No migration has run yet for this job")
                    })?;
                Ok(match format {
                    "json" => pretty(&report::migration_json(&summary)),
                    "csv" => report::migration_csv(&summary),
                    _ => report::migration_html(&job.name, &summary),
                })
            }
            "refresh" => {
                let record = store.last_refresh().map_err(store_fail)?.ok_or_else(|| {
                    ServiceError::bad_input("No refresh has run yet for this job")
                })?;
                let removed_next = store.missing_source_ids().map_err(store_fail)?;
                Ok(match format {
                    "json" => pretty(&report::refresh::json(&record, &removed_next, None)),
                    "csv" => report::refresh::csv(&record),
                    _ => report::refresh::html(&job.name, &record, &removed_next),
                })
            }
            other => Err(ServiceError::bad_input(format!(
                "No report of kind {other:?}: migration or refresh"
            ))),
        }
    }
}

//! A `migrate` run: the job's servers, the selected entries, `concurrency` of them at a time.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mailferry_imap::{Endpoint, Security as ImapSecurity};

use crate::engine::{
    Access, Backend, ConnectionLimit, EngineError, EntryPasswords, PassContext, PassSettings,
    Progress, Server, migrate_entry,
};
use crate::folders::FolderRules;
use crate::job::{AdminLogin, Auth, Connection, ConnectionKind, Job, Security};
use crate::store::{Entry, Failure, RunEntry, Store};

/// How long to wait for a server before calling it unreachable.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A server of the job with its secrets read (from the environment or files, now).
pub fn server_for(side: &str, conn: &Connection) -> Result<Server, String> {
    let imap = match &conn.kind {
        ConnectionKind::Imap(imap) => imap,
        ConnectionKind::Maildir { root } => {
            return Ok(Server {
                backend: Backend::Maildir {
                    root: root.clone(),
                    create: side == "target",
                },
                limit: ConnectionLimit::new(usize::MAX),
            });
        }
    };
    let access = match &imap.auth {
        Auth::PerMailbox => Access::PerMailbox,
        Auth::Admin {
            user,
            password,
            login,
        } => {
            let password = password
                .reveal()
                .map_err(|e| format!("{side}.admin_password: {e}"))?;
            match login {
                AdminLogin::SaslAuthzid => Access::SaslAuthzid {
                    admin: user.clone(),
                    password,
                },
                AdminLogin::MasterSeparator(sep) => Access::MasterSeparator {
                    admin: user.clone(),
                    password,
                    separator: sep.clone(),
                },
            }
        }
    };
    Ok(Server {
        backend: Backend::Imap {
            endpoint: Endpoint {
                host: imap.host.clone(),
                port: imap.port,
                security: match imap.security {
                    Security::Tls => ImapSecurity::Tls,
                    Security::StartTls => ImapSecurity::StartTls,
                    Security::Plain => ImapSecurity::Plain,
                },
                ca_file: imap.tls_ca.clone(),
                verify_certificates: imap.tls_verify,
                timeout: TIMEOUT,
            },
            access,
        },
        limit: ConnectionLimit::new(imap.max_connections),
    })
}

pub fn pass_settings(job: &Job) -> PassSettings {
    let m = &job.migration;
    PassSettings {
        rules: FolderRules {
            include: m.include_folders.clone(),
            exclude: m.exclude_folders.clone(),
            folder_map: m.folder_map.clone(),
        },
        since: m.since.as_ref().map(|d| d.imap_format()),
        until: m.until.as_ref().map(|d| d.imap_format()),
        skip_deleted: m.skip_deleted,
    }
}

/// Whether an entry takes part in a pass: it has a target, and is not skipped or waiting.
pub fn is_migratable(e: &Entry) -> bool {
    e.target_login.is_some()
        && !matches!(e.origin.as_str(), "skip" | "pending-creation" | "unmatched")
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub run: i64,
    pub entries: Vec<RunEntry>,
    pub failures: Vec<Failure>,
    pub seconds: f64,
}

impl Summary {
    pub fn copied(&self) -> u64 {
        self.entries.iter().map(|e| e.copied).sum()
    }
    pub fn failed(&self) -> u64 {
        self.entries.iter().map(|e| e.failed).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }
    /// Whether any entry failed or has messages that could not be copied (exit status 1).
    pub fn has_failures(&self) -> bool {
        self.entries.iter().any(|e| e.state != "migrated")
    }
}

/// Runs one pass over the given entries, `job.migration.concurrency` at a time.
pub fn run(
    job: &Job,
    store: Store,
    entries: Vec<Entry>,
    passwords: &HashMap<String, EntryPasswords>,
    progress: &dyn Progress,
) -> Result<Summary, EngineError> {
    let started = Instant::now();
    let source = server_for("source", &job.source).map_err(EngineError::Config)?;
    let target = server_for("target", &job.target).map_err(EngineError::Config)?;
    let settings = pass_settings(job);
    let run = store.start_run("migrate")?;
    let store = Mutex::new(store);
    let ctx = PassContext {
        source: &source,
        target: &target,
        settings: &settings,
        store: &store,
        run,
        progress,
        retries: 4,
        retry_delay: Duration::from_secs(1),
    };
    let queue = Mutex::new(entries.into_iter().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    let workers = job.migration.concurrency.max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(entry) = next else { break };
                    let pw = passwords.get(&entry.id).cloned().unwrap_or_default();
                    let result = migrate_entry(&ctx, &entry, &pw);
                    let stamp = crate::store::now();
                    {
                        let s = store.lock().unwrap_or_else(|e| e.into_inner());
                        let _ = s.record_run_entry(run, &result);
                        let _ = s.set_entry_result(
                            &entry.id,
                            &result.state,
                            &stamp,
                            result.error.as_deref(),
                        );
                    }
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(result);
                }
            });
        }
    });
    let store = store.into_inner().unwrap_or_else(|e| e.into_inner());
    store.finish_run(run)?;
    let mut entries = results.into_inner().unwrap_or_else(|e| e.into_inner());
    entries.sort_by(|a, b| a.entry_id.cmp(&b.entry_id));
    Ok(Summary {
        run,
        failures: store.failures(run)?,
        entries,
        seconds: started.elapsed().as_secs_f64(),
    })
}

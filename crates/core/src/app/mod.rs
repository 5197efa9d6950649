//! The application services: one function per command, shared by the command line and the
//! web UI, each returning a typed outcome that serialises to the SPEC §4 JSON.
//!
//! A service opens what it needs through [`Backends`] (the store, directories, servers),
//! applies the domain's rules, and returns; printing and rendering are the caller's. Errors
//! say what went wrong in the admin's words and carry the exit status of SPEC §4
//! ([`AppError::exit_code`]): 2 for bad input with nothing changed, 1 when a server, a
//! directory or the state could not be reached.

pub mod check;
pub mod create;
pub mod discover;
pub mod matching;
pub mod migrate;
pub mod reconfigure;
pub mod refresh;
pub mod report;
pub mod state;
pub mod status;
pub mod verify;
pub mod worker;

use std::collections::HashMap;

use crate::csvfile::parse_mailboxes_csv;
use crate::entries::{Selection, select};
use crate::job::{Auth, Connection, ConnectionKind, DirectoryKind, Job};
use crate::model::{Entry, EntryId, Side};
use crate::ports::store::{MetaKey, StoreErrorKind};
use crate::ports::{
    Backends, Directory, DirectoryError, DirectorySettings, EntryPasswords, Store, StoreError,
};

/// What a service could not do.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Bad usage or input (a job setting, a CSV, a name): nothing changed.
    #[error("{0}")]
    Input(String),
    /// A directory could not be reached or refused.
    #[error("{side} directory: {source}")]
    Directory {
        side: Side,
        #[source]
        source: DirectoryError,
    },
    /// The state database could not be opened, read or written.
    #[error("State database: {0}")]
    Store(#[from] StoreError),
    /// Something the service needed could not be reached; the text says what and why.
    #[error("{0}")]
    Unavailable(String),
    /// A form's edit of the job file was refused, nothing changed: each problem names the
    /// form field it is about.
    #[error("{message}")]
    Fields {
        message: String,
        problems: Vec<reconfigure::FieldProblem>,
    },
}

impl AppError {
    /// The exit status of SPEC §4.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Input(_) | AppError::Fields { .. } => 2,
            // A state the job names that this build cannot use (not a database, a newer
            // schema, an unknown scheme) is bad input: nothing was changed.
            AppError::Store(e)
                if matches!(e.kind, StoreErrorKind::Unsupported | StoreErrorKind::Schema) =>
            {
                2
            }
            _ => 1,
        }
    }

    fn input(msg: impl Into<String>) -> AppError {
        AppError::Input(msg.into())
    }
}

pub type Result<T> = std::result::Result<T, AppError>;

/// One job and the adapters that reach its servers: what every service works on.
pub struct App<'a> {
    pub job: &'a Job,
    pub backends: &'a dyn Backends,
    /// Told what a service did on its own that the admin must hear of (entries removed by
    /// the job-change rule, say); the CLI prints it on standard error.
    pub notice: &'a (dyn Fn(&str) + Sync),
}

impl<'a> App<'a> {
    pub fn new(job: &'a Job, backends: &'a dyn Backends) -> App<'a> {
        App {
            job,
            backends,
            notice: &|_| {},
        }
    }

    /// Where the service's notices go.
    pub fn with_notices(mut self, notice: &'a (dyn Fn(&str) + Sync)) -> App<'a> {
        self.notice = notice;
        self
    }

    /// Tells the admin that entries were removed, and why.
    fn removed_notice(&self, why: &str, removed: &[EntryId]) {
        if !removed.is_empty() {
            let ids: Vec<&str> = removed.iter().map(|i| i.as_str()).collect();
            (self.notice)(&format!(
                "{why}: removed {} whose source mailbox is missing: {}",
                crate::text::counted(removed.len(), "entry", "entries"),
                ids.join(", ")
            ));
        }
    }

    pub fn connection(&self, side: Side) -> &'a Connection {
        match side {
            Side::Source => &self.job.source,
            Side::Target => &self.job.target,
        }
    }

    /// Opens the job's state and applies the job-change rule first (see [`job_changed`]).
    pub fn open_state(&self) -> Result<Box<dyn Store>> {
        self.after_job_change(self.backends.open_store(self.job)?)
    }

    /// Opens the job's state for a command that only reads it: as [`App::open_state`], but
    /// a state that does not exist yet is not created (it reads as empty).
    pub fn read_state(&self) -> Result<Box<dyn Store>> {
        self.after_job_change(self.backends.open_store_to_read(self.job)?)
    }

    /// The store once the job-change rule was applied to it, the admin told what it removed.
    fn after_job_change(&self, mut store: Box<dyn Store>) -> Result<Box<dyn Store>> {
        let removed = job_changed(self.job, store.as_mut())?;
        self.removed_notice("The job file changed", &removed);
        Ok(store)
    }

    /// The directory settings of a side with the bind password read; `None` without one.
    /// (A Graph directory's application credential is read when the directory is opened.)
    pub fn directory_settings(&self, side: Side) -> Result<Option<DirectorySettings>> {
        match &self.connection(side).directory {
            None => Ok(None),
            Some(DirectoryKind::Ldap(cfg)) => cfg
                .reveal()
                .map(|l| Some(DirectorySettings::Ldap(l)))
                .map_err(|e| AppError::input(format!("{side}.directory.bind_password: {e}"))),
            Some(DirectoryKind::Graph(g)) => Ok(Some(DirectorySettings::Graph((**g).clone()))),
        }
    }

    /// A side's directory, bound; `None` when the side has none.
    pub fn directory(&self, side: Side) -> Result<Option<Box<dyn Directory>>> {
        let Some(settings) = self.directory_settings(side)? else {
            return Ok(None);
        };
        self.backends
            .directory(&settings)
            .map(Some)
            .map_err(|source| AppError::Directory { side, source })
    }

    /// A side's directory, which `what` needs.
    fn need_directory(&self, side: Side, what: &str) -> Result<Box<dyn Directory>> {
        self.directory(side)?.ok_or_else(|| {
            AppError::input(format!("{what} needs [{side}.directory] in the job file"))
        })
    }

    /// Per-mailbox passwords, read from the CSV now (never stored); empty unless a side
    /// logs in with `auth = "per-mailbox"`.
    pub fn passwords(&self) -> Result<HashMap<EntryId, EntryPasswords>> {
        let per_mailbox = |c: &Connection| matches!(&c.kind, ConnectionKind::Imap(i) if matches!(i.auth, Auth::PerMailbox));
        if !per_mailbox(&self.job.source) && !per_mailbox(&self.job.target) {
            return Ok(HashMap::new());
        }
        let path = self.job.mailboxes_csv.as_ref().ok_or_else(|| {
            AppError::input("auth = \"per-mailbox\" needs [mailboxes] csv with the passwords")
        })?;
        let rows = parse_mailboxes_csv(path).map_err(|e| AppError::input(e.to_string()))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    EntryId::new(r.source_id),
                    EntryPasswords {
                        source: r.source_password,
                        target: r.target_password,
                    },
                )
            })
            .collect())
    }
}

/// The selected entries, or which names match no entry (or several).
fn selected(entries: &[Entry], selection: &Selection) -> Result<Vec<Entry>> {
    Ok(select(entries, selection)
        .map_err(AppError::Input)?
        .into_iter()
        .cloned()
        .collect())
}

/// SPEC §6: entries whose source mailbox a refresh found missing are removed the next time the
/// job file is edited or a `migrate` starts. Returns the IDs removed.
pub fn remove_missing(store: &mut dyn Store) -> Result<Vec<EntryId>> {
    let ids = store.missing_source_ids()?;
    if !ids.is_empty() {
        store.remove_entries(&ids)?;
    }
    Ok(ids)
}

/// The job-change rule: an edited job file (noticed by its SHA-256, kept in the store) removes
/// the entries whose source mailbox is missing. Returns what was removed.
pub fn job_changed(job: &Job, store: &mut dyn Store) -> Result<Vec<EntryId>> {
    let hash = job
        .file_sha256()
        .map_err(|e| AppError::input(format!("Unable to read {}: {e}", job.path.display())))?;
    let before = store.meta(MetaKey::JobFileSha256)?;
    if before.as_deref() == Some(hash.as_str()) {
        return Ok(Vec::new());
    }
    let removed = if before.is_some() {
        remove_missing(store)?
    } else {
        Vec::new()
    };
    store.set_meta(MetaKey::JobFileSha256, &hash)?;
    Ok(removed)
}

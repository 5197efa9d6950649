//! mailferry's adapters: the ports of `mailferry-core` implemented on real backends, one
//! folder per kind and one per backend, with the same shape in each:
//!
//! - `store/sqlite` and `store/postgres`: the job's state (entries, ledger, runs, leases) in
//!   SQLite, or in PostgreSQL when several processes share a job;
//! - `directory/ldap`: LDAP and Active Directory directories, and creating mailboxes there;
//! - `directory/graph`: Entra ID through Microsoft Graph, and creating licensed users there;
//! - `session/imap` and `session/maildir`: one mailbox's messages on an IMAP server or in a
//!   Maildir++ tree;
//! - `credentials`: how a session logs in (admin, master user, the mailbox's own password);
//! - [`Standard`]: the [`Backends`] that opens each of them from a job's configuration.
//!
//! Everything that talks to a socket, a database or the file system's mail lives here, never
//! in the domain.

pub mod credentials;
pub mod directory;
pub mod oauth2;
pub mod process;
pub mod session;
pub mod store;

use mailferry_core::job::{ConnectionKind, Job, StateLocation};
use mailferry_core::model::Side;
use mailferry_core::ports::{
    Backends, Connector, Directory, DirectoryError, DirectorySettings, Provisioner, Store,
    StoreError,
};

use mailferry_core::ports::store::StoreErrorKind;

pub use directory::graph::GraphDirectory;
pub use directory::ldap::LdapDirectory;
pub use session::imap::ImapConnector;
pub use session::maildir::MaildirConnector;
pub use store::postgres::{PostgresStore, PostgresUrl};
pub use store::sqlite::SqliteStore;

/// The adapters mailferry ships: SQLite, PostgreSQL, LDAP, IMAP and Maildir.
#[derive(Debug, Default, Clone, Copy)]
pub struct Standard;

impl Backends for Standard {
    fn open_store(&self, job: &Job) -> Result<Box<dyn Store>, StoreError> {
        match &job.state {
            StateLocation::Sqlite(p) => Ok(Box::new(SqliteStore::open(p)?)),
            StateLocation::Postgres(raw) => {
                let job_dir = job.path.parent().unwrap_or(std::path::Path::new("."));
                let url = PostgresUrl::parse(raw, job_dir)?;
                let password = match &job.state_password {
                    // The job's own reference first; the environment and ~/.pgpass otherwise.
                    Some(secret) => Some(store::postgres::connect::Password::new(
                        secret.reveal().map_err(|e| {
                            StoreError::new(
                                StoreErrorKind::Unsupported,
                                format!("state_password: {e}"),
                            )
                        })?,
                    )),
                    None => store::postgres::connect::state_password(&url)?,
                };
                Ok(Box::new(
                    PostgresStore::open(&url, password.as_ref())?
                        .reconnecting_for(job.migration.lease()),
                ))
            }
        }
    }

    fn open_store_to_read(&self, job: &Job) -> Result<Box<dyn Store>, StoreError> {
        match &job.state {
            // No file yet: an empty state in memory, so a look at a new job creates nothing.
            StateLocation::Sqlite(p) if !p.exists() => Ok(Box::new(SqliteStore::open_in_memory()?)),
            _ => self.open_store(job),
        }
    }

    fn directory(
        &self,
        settings: &DirectorySettings,
    ) -> Result<Box<dyn Directory>, DirectoryError> {
        Ok(match settings {
            DirectorySettings::Ldap(l) => Box::new(LdapDirectory::connect(l)?),
            DirectorySettings::Graph(g) => Box::new(GraphDirectory::connect(g)?),
        })
    }

    fn provisioner(
        &self,
        settings: &DirectorySettings,
    ) -> Result<Box<dyn Provisioner>, DirectoryError> {
        Ok(match settings {
            DirectorySettings::Ldap(l) => Box::new(LdapDirectory::connect(l)?),
            DirectorySettings::Graph(g) => Box::new(GraphDirectory::connect(g)?),
        })
    }

    fn connector(&self, job: &Job, side: Side) -> Result<Box<dyn Connector>, String> {
        let conn = match side {
            Side::Source => &job.source,
            Side::Target => &job.target,
        };
        match &conn.kind {
            ConnectionKind::Maildir { root } => Ok(Box::new(MaildirConnector::new(
                root.clone(),
                side == Side::Target,
            ))),
            ConnectionKind::Imap(imap) => Ok(Box::new(ImapConnector::with_timeout(
                side,
                imap,
                job.migration.network.io_timeout,
            )?)),
        }
    }

    fn process_name(&self) -> String {
        process::name()
    }

    fn holder_gone(&self, holder: &str) -> bool {
        process::is_gone(holder)
    }
}

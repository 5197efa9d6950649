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
        format!("{}:{}", host_name(), std::process::id())
    }

    fn holder_gone(&self, holder: &str) -> bool {
        let Some((host, pid)) = holder.rsplit_once(':') else {
            return false;
        };
        let Ok(pid) = pid.parse::<libc::pid_t>() else {
            return false;
        };
        if host != host_name() || pid <= 0 {
            return false;
        }
        // Signal 0 checks that the process exists without touching it (kill(2)); ESRCH means
        // it does not. EPERM means it exists under another user: not gone.
        // SAFETY: kill with signal 0 sends nothing and has no memory effects.
        let r = unsafe { libc::kill(pid, 0) };
        r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

/// This machine's host name, for lease holders.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

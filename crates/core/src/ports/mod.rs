//! The ports: what the domain asks of the world, as traits the domain owns.
//!
//! The engine and the application services speak only to these; the adapters
//! (`mailferry-adapters`: SQLite, LDAP, IMAP, Maildir) implement them. A new backend —
//! PostgreSQL, Microsoft Graph, OAuth2 credentials — is a new implementation of one port,
//! never a change to the engine.

pub mod connector;
pub mod directory;
pub mod observer;
pub mod session;
pub mod store;

pub use connector::{
    ConnectError, ConnectionLimit, Connector, Dropped, EntryPasswords, Permit, Probe,
};
pub use directory::{Directory, DirectoryError, DirectoryProbe, Listing, Provisioner};
pub use observer::{NoObserver, Observer};
pub use session::{
    AppendOutcome, AppendTicket, Created, FetchTicket, FetchedMessage, FolderStatus, MailSession,
    Outgoing, ScanTicket, ScannedMessage, SelectTicket, Selected, SessionError, SessionErrorKind,
    TreeChange, UidRanges,
};
pub use store::{RunInfo, Store, StoreError};

use crate::job::Job;
use crate::model::Side;

/// An LDAP directory's settings with the bind password read.
pub type LdapSettings = crate::job::DirectoryConfig<String>;

/// What opening a directory needs: an LDAP directory's settings with the bind password read,
/// or a Graph directory's (whose application credential is read by the adapter when it
/// gets a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectorySettings {
    Ldap(LdapSettings),
    Graph(crate::job::GraphConfig),
}

impl DirectorySettings {
    /// The directory's URL, for messages.
    pub fn url(&self) -> &str {
        match self {
            DirectorySettings::Ldap(l) => &l.url,
            DirectorySettings::Graph(g) => &g.graph_url,
        }
    }
}

/// Opens the adapters a job's configuration names. The binary (and the web UI) hand one of
/// these to the application services; tests can hand their own.
pub trait Backends: Send + Sync {
    /// The job's state store, opened (and created on first use).
    fn open_store(&self, job: &Job) -> Result<Box<dyn Store>, StoreError>;
    /// The job's state for a command that only reads it (`status`, `report`, `check`…):
    /// where none exists yet, an empty one that nothing is written to, so that reading a
    /// new job leaves no file behind. By default the same as [`Backends::open_store`].
    fn open_store_to_read(&self, job: &Job) -> Result<Box<dyn Store>, StoreError> {
        self.open_store(job)
    }
    /// A directory, bound.
    fn directory(&self, settings: &DirectorySettings)
    -> Result<Box<dyn Directory>, DirectoryError>;
    /// The provisioner that creates mailboxes in this (target) directory.
    fn provisioner(
        &self,
        settings: &DirectorySettings,
    ) -> Result<Box<dyn Provisioner>, DirectoryError>;
    /// The server of one side, ready to open sessions. An error is a configuration problem
    /// (an unset secret, say), in words for the admin.
    fn connector(&self, job: &Job, side: Side) -> Result<Box<dyn Connector>, String>;
    /// This process as a lease holder and worker: host and process ID, unique across
    /// machines and PID namespaces (read back by `app::worker::host_and_pid`).
    fn process_name(&self) -> String;
    /// Whether the process a lease holder names is known to be gone (in this PID namespace
    /// of this machine, no such process), so its lease can be taken over at once instead of
    /// after it expires.
    fn holder_gone(&self, holder: &str) -> bool;
}

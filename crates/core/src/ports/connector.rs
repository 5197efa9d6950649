//! The connector port: one server of the job, ready to open a session for a mailbox with the
//! right credentials: passwords (admin, master user, per mailbox) or OAuth2 tokens, behind
//! the same trait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use super::session::{MailSession, SessionError};

/// Why a session could not be opened: the settings, reaching the server, or logging in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Connect(SessionError),
    #[error("{0}")]
    Login(SessionError),
}

impl ConnectError {
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Config(_) => false,
            ConnectError::Connect(e) | ConnectError::Login(e) => e.is_transient(),
        }
    }
}

/// Passwords of one entry, when `auth = "per-mailbox"` (read from the CSV, never stored).
#[derive(Debug, Clone, Default)]
pub struct EntryPasswords {
    pub source: Option<String>,
    pub target: Option<String>,
}

/// What reaching a server without logging in found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// For the admin: `capabilities: IMAP4rev1 …`, `found`.
    pub detail: String,
    /// Whether a login can be tried now (a Maildir target that does not exist yet is made by
    /// the first pass, not by `check`).
    pub can_log_in: bool,
}

pub trait Connector: Send + Sync {
    /// What this connects to, for `check`: `connect mail.example:993 (Tls)`, `maildir /srv/m`.
    fn describe(&self) -> String;
    /// Reaches the server without logging in, and changes nothing: what it offers (its
    /// capabilities), or whether the folder exists.
    fn probe(&self) -> Result<Probe, SessionError>;
    /// Opens a session for one mailbox: `own_password` is the mailbox's own password for
    /// per-mailbox logins.
    fn open(
        &self,
        login: &str,
        own_password: Option<&str>,
    ) -> Result<Box<dyn MailSession>, ConnectError>;
    /// The cap on connections to this server, shared by every mailbox of the run.
    fn limit(&self) -> &ConnectionLimit;
    /// For `check`: gets what a login of `login` needs from elsewhere (an OAuth2 token from
    /// the identity provider) without logging in, and says what it got or why not, with the
    /// likely cause. `None` when logins need nothing from elsewhere (passwords).
    fn check_credentials(&self, _login: &str) -> Option<Result<String, String>> {
        None
    }
    /// The server profile in force (`exchange-online`, …), once known: named in the job file
    /// or recognised on the first connection. `None` for stores without profiles.
    fn profile(&self) -> Option<String> {
        None
    }
    /// (folder, count) of the custom keywords this target could not store and dropped from
    /// `login`'s messages so far (a profile without keywords): reported, never a failure.
    fn dropped_keywords(&self, _login: &str) -> Vec<(String, u64)> {
        Vec::new()
    }
}

/// Caps the connections to one server, shared by every mailbox of the run.
pub struct ConnectionLimit {
    max: AtomicUsize,
    used: Mutex<usize>,
    freed: Condvar,
}

/// One connection's place under a [`ConnectionLimit`], given back when dropped.
pub struct Permit<'a>(&'a ConnectionLimit);

impl ConnectionLimit {
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit {
            max: AtomicUsize::new(max.max(1)),
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    pub fn acquire(&self) -> Permit<'_> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= self.max() {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Permit(self)
    }

    /// The cap now.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// Lowers the cap to `max` (at least 1) when it is higher: connections already open stay
    /// until they end, new ones wait. A server profile's default, or a throttled server.
    pub fn lower_to(&self, max: usize) {
        self.max.fetch_min(max.max(1), Ordering::SeqCst);
    }

    /// Sets the cap (at least 1), waking whoever waits when it rises.
    pub fn set_max(&self, max: usize) {
        let _used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        self.max.store(max.max(1), Ordering::SeqCst);
        self.freed.notify_all();
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut used = self.0.used.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        self.0.freed.notify_one();
    }
}

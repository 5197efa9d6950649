//! Where mailbox identities come from: an LDAP directory (OpenLDAP, 389-DS, Active Directory).
//!
//! mailferry never identifies a mailbox by its email address, because addresses are exactly
//! what changes during a migration (a domain switch, a renamed user). Each mailbox is keyed by
//! the directory's stable ID instead — `entryUUID`, or Active Directory's binary `objectGUID`
//! written as a GUID string — and its login and addresses are read from the directory. This
//! module is the only place that speaks LDAP:
//!
//! - `discover` lists the source mailboxes with [`LdapDirectory::list`] /
//!   [`LdapDirectory::list_with_warnings`];
//! - matching finds target mailboxes with [`LdapDirectory::find_by_address`];
//! - creation adds an entry with [`LdapDirectory::add_mailbox`];
//! - Refresh email addresses looks each mailbox up again by its ID with [`LdapDirectory::lookup`].
//!
//! Every listing is paged (RFC 2696, [`PAGE_SIZE`] entries a page): directories cap what an
//! unpaged search returns (OpenLDAP's default `sizelimit` is 500, Active Directory's
//! `MaxPageSize` 1,000), and an organisation has more mailboxes than that.
//!
//! The connection is ldap3's blocking [`LdapConn`]. TLS (StartTLS or `ldaps://`) is rustls with
//! the *ring* provider, always verified, against the system's trust anchors plus the job's
//! `tls_ca`; the configuration is built here with an explicit provider, so no process-wide
//! default provider is needed or installed. Errors carry the directory URL and the server's own
//! words (result code name, number and diagnostic text), so `check` can show them as they are.

mod add;
pub(crate) mod entry;
mod error;
#[cfg(test)]
mod samba_tests;
mod search;
#[cfg(test)]
mod slapd_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConn, LdapConnSettings, LdapResult};
use mailferry_core::job::DirectorySecurity;
use mailferry_core::model::{DirectoryMailbox, MailboxId, NewMailbox};
use mailferry_core::ports::{
    Directory, DirectoryError, DirectoryProbe, LdapSettings, Listing, Provisioner,
};

pub use entry::{guid_filter_escape, guid_to_string, parse_proxy_addresses};

use error::{connect_error, op_error};

/// How long connecting (TCP, StartTLS and the TLS handshake together) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may stay silent during an operation (reset by every search entry).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// Entries per page of a paged search (RFC 2696 simple paged results).
pub const PAGE_SIZE: i32 = 500;
/// Entries `check` reads ([`LdapDirectory::probe`]).
pub const PROBE_SIZE: i32 = 20;

/// An open, bound connection to one directory.
pub struct LdapDirectory {
    conn: LdapConn,
    settings: LdapSettings,
}

impl fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("url", &self.settings.url)
            .field("base", &self.settings.base)
            .finish_non_exhaustive()
    }
}

impl LdapDirectory {
    /// Connects (within [`CONNECT_TIMEOUT`]), upgrades with StartTLS when asked, verifies the
    /// server certificate against the system's trust anchors plus `tls_ca`, and does a simple
    /// bind as `bind_dn`.
    pub fn connect(s: &LdapSettings) -> Result<LdapDirectory, DirectoryError> {
        let tls = uses_tls(s)?;
        let mut conn_settings = LdapConnSettings::new().set_conn_timeout(CONNECT_TIMEOUT);
        if tls {
            conn_settings = conn_settings
                .set_config(Arc::new(tls_config(s)?))
                .set_starttls(s.security == DirectorySecurity::StartTls);
        }
        let conn =
            LdapConn::with_settings(conn_settings, &s.url).map_err(|e| connect_error(s, e))?;
        let mut dir = LdapDirectory {
            conn,
            settings: s.clone(),
        };
        dir.bind()?;
        Ok(dir)
    }

    fn bind(&mut self) -> Result<(), DirectoryError> {
        let s = &self.settings;
        let operation = if s.bind_dn.is_empty() {
            "anonymous bind".to_string()
        } else {
            format!("bind as {}", s.bind_dn)
        };
        self.conn
            .with_timeout(REPLY_TIMEOUT)
            .simple_bind(&s.bind_dn, &s.bind_password)
            .and_then(LdapResult::success)
            .map_err(|e| op_error(s, &operation, e))?;
        Ok(())
    }

    fn entry_error(&self, dn: &str, reason: String) -> DirectoryError {
        DirectoryError::Entry {
            url: self.settings.url.clone(),
            dn: dn.to_string(),
            reason,
        }
    }
}

impl Directory for LdapDirectory {
    fn url(&self) -> &str {
        &self.settings.url
    }
    fn bound_as(&self) -> &str {
        &self.settings.bind_dn
    }
    fn list(&mut self) -> Result<Listing, DirectoryError> {
        let (mailboxes, skipped) = self.list_with_warnings()?;
        Ok(Listing { mailboxes, skipped })
    }
    fn lookup(&mut self, id: &MailboxId) -> Result<Option<DirectoryMailbox>, DirectoryError> {
        LdapDirectory::lookup(self, id.as_str())
    }
    fn find_by_address(&mut self, address: &str) -> Result<Vec<DirectoryMailbox>, DirectoryError> {
        LdapDirectory::find_by_address(self, address)
    }
    fn probe(&mut self) -> Result<DirectoryProbe, DirectoryError> {
        LdapDirectory::probe(self)
    }
}

impl Provisioner for LdapDirectory {
    fn create(&mut self, m: &NewMailbox) -> Result<DirectoryMailbox, DirectoryError> {
        self.add_mailbox(m)
    }
}

impl Drop for LdapDirectory {
    fn drop(&mut self) {
        // Polite goodbye; the socket closes either way.
        let _ = self.conn.unbind();
    }
}

/// Whether the connection uses TLS, checking that the URL and `security` agree.
fn uses_tls(s: &LdapSettings) -> Result<bool, DirectoryError> {
    let config = |reason: String| DirectoryError::Config {
        url: s.url.clone(),
        reason,
    };
    let scheme = s
        .url
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase())
        .unwrap_or_default();
    match (scheme.as_str(), &s.security) {
        ("ldaps", DirectorySecurity::Tls) => Ok(true),
        ("ldaps", _) => Err(config(
            "an ldaps:// URL is TLS from the start: set security = \"tls\" (or use ldap:// \
             for StartTLS or plain)"
                .into(),
        )),
        ("ldap", DirectorySecurity::Tls) => Err(config(
            "security = \"tls\" needs an ldaps:// URL (or use security = \"starttls\" with \
             ldap://)"
                .into(),
        )),
        ("ldap", DirectorySecurity::StartTls) => Ok(true),
        ("ldap", DirectorySecurity::Plain) => Ok(false),
        _ => Err(config(
            "not an LDAP URL: expected ldap://host[:port] or ldaps://host[:port]".into(),
        )),
    }
}

/// rustls client configuration: the one certificate policy of mailferry's connections
/// (`mailferry_imap::tls`), verification always on for directories.
fn tls_config(s: &LdapSettings) -> Result<rustls::ClientConfig, DirectoryError> {
    let pins: Vec<_> = s.tls_pin_sha256.iter().map(|p| p.0).collect();
    mailferry_imap::tls::client_config(s.tls_ca.as_deref(), true, &pins).map_err(|e| {
        DirectoryError::Config {
            url: s.url.clone(),
            reason: e.to_string(),
        }
    })
}

//! How a session logs in to an IMAP server for one mailbox: as an admin on the mailbox's
//! behalf (SASL authzid, or Dovecot's master-user separator), or with the mailbox's own
//! password from the CSV. The secrets are read from the job's `env` / `file` references when
//! the run starts and live only in memory.

use std::sync::Arc;

use mailferry_imap::Login;

use crate::oauth2::TokenProvider;

/// How mailferry logs in to one server for a mailbox.
#[derive(Clone)]
pub enum Access {
    /// `LOGIN user<sep>admin password` (Dovecot's master-user form).
    MasterSeparator {
        admin: String,
        password: String,
        separator: String,
    },
    /// `AUTHENTICATE PLAIN` with authzid = the mailbox, authcid = the admin.
    SaslAuthzid { admin: String, password: String },
    /// The mailbox's own password (from the CSV, at run time).
    PerMailbox,
    /// An OAuth2 access token (one per application or per mailbox), from the provider that
    /// every session of this side shares; see [`crate::session::imap::ImapConnector`].
    OAuth2(Arc<TokenProvider>),
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        match self {
            Access::MasterSeparator { admin, .. } => write!(f, "MasterSeparator({admin})"),
            Access::SaslAuthzid { admin, .. } => write!(f, "SaslAuthzid({admin})"),
            Access::PerMailbox => f.write_str("PerMailbox"),
            Access::OAuth2(provider) => write!(f, "OAuth2({})", provider.describe()),
        }
    }
}

impl Access {
    /// The password login for a mailbox; an error in words for the admin when its own
    /// password is needed and missing. (An OAuth2 login needs its token first: the connector
    /// builds it.)
    pub fn login(&self, mailbox_login: &str, own_password: Option<&str>) -> Result<Login, String> {
        Ok(match self {
            Access::MasterSeparator {
                admin,
                password,
                separator,
            } => Login::Plain {
                user: format!("{mailbox_login}{separator}{admin}"),
                password: password.clone(),
            },
            Access::SaslAuthzid { admin, password } => Login::SaslPlain {
                authzid: mailbox_login.to_string(),
                authcid: admin.clone(),
                password: password.clone(),
            },
            Access::PerMailbox => Login::Plain {
                user: mailbox_login.to_string(),
                password: own_password
                    .ok_or_else(|| {
                        format!(
                            "No password for {mailbox_login}: auth = \"per-mailbox\" needs its \
                             password in the mailboxes CSV"
                        )
                    })?
                    .to_string(),
            },
            Access::OAuth2(_) => {
                return Err("an OAuth2 login is built from a token by the connector".into());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_per_access() {
        let master = Access::MasterSeparator {
            admin: "admin".into(),
            password: "pw".into(),
            separator: "*".into(),
        };
        assert!(matches!(master.login("alice", None).unwrap(),
            Login::Plain { user, .. } if user == "alice*admin"));
        let sasl = Access::SaslAuthzid {
            admin: "admin".into(),
            password: "pw".into(),
        };
        assert!(matches!(sasl.login("alice", None).unwrap(),
            Login::SaslPlain { authzid, authcid, .. } if authzid == "alice" && authcid == "admin"));
        assert!(
            Access::PerMailbox
                .login("bob", None)
                .unwrap_err()
                .contains("needs its password in the mailboxes CSV")
        );
        assert!(!format!("{master:?}").contains("pw"));
    }
}

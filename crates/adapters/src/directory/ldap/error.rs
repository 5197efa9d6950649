//! ldap3's errors in the port's words ([`DirectoryError`]), with the server's own result.

use ldap3::{LdapError, LdapResult};
use mailferry_core::ports::directory::ldap_words;
use mailferry_core::ports::{DirectoryError, LdapSettings};

use super::{CONNECT_TIMEOUT, REPLY_TIMEOUT};

/// Adds what to do to a `sizeLimitExceeded (4)` of a paged search. OpenLDAP caps even the
/// total of a paged search (`size.prtotal` defaults to the size limit, 500) for every bind DN
/// but the rootdn, so a migration account usually needs a `limits` line.
pub(super) fn with_size_limit_hint(s: &LdapSettings, mut err: DirectoryError) -> DirectoryError {
    if let DirectoryError::Ldap {
        code: 4,
        hint: hint @ None,
        ..
    } = &mut err
    {
        let (who, selector) = if s.bind_dn.is_empty() {
            ("anonymous".to_string(), "anonymous".to_string())
        } else {
            (s.bind_dn.clone(), format!("dn.exact=\"{}\"", s.bind_dn))
        };
        *hint = Some(format!(
            "the server limits how many entries {who} may read, even page by page: raise that \
             limit for it, e.g. OpenLDAP `limits {selector} size=unlimited`"
        ));
    }
    err
}

/// Maps a failure of `LdapConn::with_settings` (TCP, StartTLS, TLS).
pub(super) fn connect_error(s: &LdapSettings, e: LdapError) -> DirectoryError {
    let reason = match e {
        LdapError::UrlParsing { .. } | LdapError::UnknownScheme(_) => {
            return DirectoryError::Config {
                url: s.url.clone(),
                reason: format!("bad URL: {e}"),
            };
        }
        LdapError::LdapResult { result } => format!(
            "StartTLS refused: {}",
            ldap_words(result.rc, &result_text(&result))
        ),
        LdapError::Timeout { .. } => {
            format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())
        }
        // A refused certificate in mailferry's words (why, its fingerprint, tls_pin_sha256).
        LdapError::Io { source } => mailferry_imap::tls::handshake_error_text(&source),
        other => other.to_string(),
    };
    let reason = if reason.contains("UnknownIssuer") {
        let hint = match &s.tls_ca {
            None => "no trusted CA signed the server's certificate: if it comes from a private \
                     CA, set tls_ca to that CA's certificate"
                .to_string(),
            Some(ca) => format!(
                "neither the system's trust anchors nor tls_ca {} signed the server's \
                 certificate",
                ca.display()
            ),
        };
        reason.replacen("UnknownIssuer", &format!("UnknownIssuer ({hint})"), 1)
    } else {
        reason
    };
    DirectoryError::Unreachable {
        url: s.url.clone(),
        reason,
    }
}

/// Maps a failure of an operation on an open connection.
pub(super) fn op_error(s: &LdapSettings, operation: &str, e: LdapError) -> DirectoryError {
    let url = s.url.clone();
    let operation = operation.to_string();
    match e {
        LdapError::LdapResult { result } => DirectoryError::Ldap {
            url,
            operation,
            code: result.rc,
            text: result_text(&result),
            hint: None,
        },
        LdapError::FilterParsing => DirectoryError::Config {
            url,
            reason: format!("{operation}: not a valid LDAP search filter"),
        },
        LdapError::Timeout { .. } => DirectoryError::Connection {
            url,
            operation,
            reason: format!("no answer within {} s", REPLY_TIMEOUT.as_secs()),
        },
        LdapError::Io { source } => DirectoryError::Connection {
            url,
            operation,
            reason: source.to_string(),
        },
        other => DirectoryError::Connection {
            url,
            operation,
            reason: other.to_string(),
        },
    }
}

/// The diagnostic text of a result, with the referral targets of a `referral (10)`.
fn result_text(r: &LdapResult) -> String {
    if r.refs.is_empty() {
        r.text.clone()
    } else if r.text.is_empty() {
        format!("referred to {}", r.refs.join(", "))
    } else {
        format!("{} (referred to {})", r.text, r.refs.join(", "))
    }
}

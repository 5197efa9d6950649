//! The mail session and connector ports' implementations: IMAP servers and Maildir++ trees.

pub mod imap;
pub mod maildir;

use mailferry_core::ports::{SessionError, SessionErrorKind};
use mailferry_imap::Error as ImapError;

/// An IMAP client error in the port's terms, with its words unchanged.
pub(crate) fn session_error(e: ImapError) -> SessionError {
    let kind = match &e {
        _ if e.is_transient() => SessionErrorKind::Transient,
        ImapError::No { code, .. } | ImapError::Bad { code, .. } => {
            SessionErrorKind::Refused { code: code.clone() }
        }
        ImapError::Unsupported(_) => SessionErrorKind::Unsupported,
        ImapError::Aborted(_) => SessionErrorKind::Aborted,
        _ => SessionErrorKind::Other,
    };
    SessionError::new(kind, e.to_string())
}

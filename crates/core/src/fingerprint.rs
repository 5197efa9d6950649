//! The content fingerprint stored in the ledger for every copied message.
//!
//! SHA-256 over the message bytes with every CR byte removed, as lowercase hex. Removing CR
//! makes the fingerprint survive the line-ending normalisations real servers apply on APPEND
//! (Dovecot turns bare LF into CRLF and `CR CR LF` into `CR LF`), so a message found on the
//! target after a crash, or in another folder after a move, is recognised as the same message.
//! Stable across versions and platforms: never Rust's `DefaultHasher`.

use sha2::{Digest, Sha256};

use crate::model::Fingerprint;

pub fn fingerprint(message: &[u8]) -> Fingerprint {
    let mut hasher = Sha256::new();
    for chunk in message.split(|&b| b == b'\r') {
        hasher.update(chunk);
    }
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    Fingerprint::new(hex)
}

/// The Message-ID header's value, for reports (the first one; unfolded; `None` if absent).
pub fn message_id(message: &[u8]) -> Option<String> {
    let header_end = find(message, b"\n\r\n")
        .or_else(|| find(message, b"\n\n"))
        .unwrap_or(message.len());
    let header = &message[..header_end];
    let mut start = 0;
    for (i, line) in header.split(|&b| b == b'\n').enumerate() {
        let _ = i;
        if line.len() >= 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
            let value = String::from_utf8_lossy(&line[11..]).trim().to_string();
            if !value.is_empty() {
                return Some(value);
            }
            // Folded onto the next line.
            let rest = &header[start + line.len() + 1..];
            let next = rest.split(|&b| b == b'\n').next().unwrap_or(b"");
            return Some(String::from_utf8_lossy(next).trim().to_string());
        }
        start += line.len() + 1;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_carriage_returns_only() {
        let lf = fingerprint(b"Subject: a\n\nbody\n");
        assert_eq!(lf, fingerprint(b"Subject: a\r\n\r\nbody\r\n"));
        assert_eq!(lf, fingerprint(b"Subject: a\r\r\n\r\nbody\r\n"));
        assert_ne!(lf, fingerprint(b"Subject: b\n\nbody\n"));
        // The documented value: SHA-256 of the empty string.
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn message_id_found_case_insensitively_and_folded() {
        assert_eq!(
            message_id(b"From: x\r\nMESSAGE-ID: <a@b>\r\n\r\nMessage-ID: <no>\r\n"),
            Some("<a@b>".into())
        );
        assert_eq!(
            message_id(b"Message-Id:\n <c@d>\n\nbody"),
            Some("<c@d>".into())
        );
        assert_eq!(message_id(b"Subject: none\n\nMessage-ID: <x>\n"), None);
    }
}

//! The content fingerprint stored in the ledger for every copied message.
//!
//! A hash of the message bytes with every CR byte removed, as lowercase hex. Removing CR
//! makes the fingerprint survive the line-ending normalisations real servers apply on APPEND
//! (Dovecot turns bare LF into CRLF and `CR CR LF` into `CR LF`), so a message found on the
//! target after a crash, or in another folder after a move, is recognised as the same message.
//! Stable across versions and platforms: never Rust's `DefaultHasher`.
//!
//! Two kinds exist. This version writes BLAKE3, as `blake3:` and 64 hex digits. Versions
//! before it wrote SHA-256, as 64 hex digits alone, and a ledger keeps such rows for good:
//! whatever compares a message with a row computes the kind the row holds ([`Kind::of`],
//! [`fingerprint_as`]). BLAKE3 because the fingerprint is the largest part of mailferry's own
//! CPU in a first pass: over the medium benchmark corpus (20,000 messages, 1 GB) SHA-256 took
//! 0.8 s with the CPU's SHA extensions, BLAKE3 0.33 s. Both are cryptographic: a sender cannot
//! craft a message that passes for another one already copied.

use sha2::{Digest, Sha256};

use crate::model::Fingerprint;

/// The hash a fingerprint was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Written by versions before BLAKE3: 64 hex digits, no prefix.
    Sha256,
    /// Written now: `blake3:` and 64 hex digits.
    Blake3,
}

const BLAKE3_PREFIX: &str = "blake3:";

impl Kind {
    /// The kind this version writes.
    pub const CURRENT: Kind = Kind::Blake3;

    /// The kind of a stored fingerprint: anything without the BLAKE3 prefix is SHA-256.
    pub fn of(fp: &Fingerprint) -> Kind {
        if fp.as_str().starts_with(BLAKE3_PREFIX) {
            Kind::Blake3
        } else {
            Kind::Sha256
        }
    }

    /// The distinct kinds of these fingerprints, the current one first when present.
    pub fn all_of<'a>(fps: impl IntoIterator<Item = &'a Fingerprint>) -> Vec<Kind> {
        let (mut sha, mut b3) = (false, false);
        for fp in fps {
            match Kind::of(fp) {
                Kind::Sha256 => sha = true,
                Kind::Blake3 => b3 = true,
            }
            if sha && b3 {
                break;
            }
        }
        [(b3, Kind::Blake3), (sha, Kind::Sha256)]
            .into_iter()
            .filter_map(|(has, k)| has.then_some(k))
            .collect()
    }
}

/// The fingerprint this version writes (BLAKE3).
pub fn fingerprint(message: &[u8]) -> Fingerprint {
    fingerprint_as(Kind::CURRENT, message)
}

/// The fingerprint of a message in the given kind: to compare a message with a ledger row,
/// compute the row's kind.
pub fn fingerprint_as(kind: Kind, message: &[u8]) -> Fingerprint {
    let (prefix, digest): (&str, [u8; 32]) = match kind {
        Kind::Sha256 => {
            let mut h = Sha256::new();
            without_cr(message, |b| h.update(b));
            ("", h.finalize().into())
        }
        Kind::Blake3 => {
            let mut h = blake3::Hasher::new();
            without_cr(message, |b| {
                h.update(b);
            });
            (BLAKE3_PREFIX, *h.finalize().as_bytes())
        }
    };
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(prefix.len() + 64);
    hex.push_str(prefix);
    for b in digest {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    Fingerprint::new(hex)
}

/// Hands `hash` the message's bytes without its CRs, in whole blocks of `BLOCK` (the last
/// one shorter).
fn without_cr(message: &[u8], mut hash: impl FnMut(&[u8])) {
    // The bytes between CRs (found with memchr) are gathered into blocks before hashing, not
    // handed to the hash line by line: a CRLF message has a CR every 70 bytes or so. Every
    // block is filled to the brim, a line split across two if need be: BLAKE3 hashes 16
    // chunks of 1 KiB at once (AVX-512) only from a chunk boundary, so blocks of 16 KiB keep
    // it there. Over the medium corpus sent as CRLF that took 0.45 s where blocks flushed
    // at the last whole line took 0.65 s.
    const BLOCK: usize = 16 << 10;
    let mut block = [0u8; BLOCK];
    let mut filled = 0;
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\r', message).chain(std::iter::once(message.len()));
    for end in ends {
        let mut piece = &message[start..end];
        start = end + 1;
        while !piece.is_empty() {
            if filled == 0 && piece.len() >= BLOCK {
                // Whole blocks straight from the message, without copying them.
                let whole = piece.len() / BLOCK * BLOCK;
                hash(&piece[..whole]);
                piece = &piece[whole..];
                continue;
            }
            let n = piece.len().min(BLOCK - filled);
            block[filled..filled + n].copy_from_slice(&piece[..n]);
            filled += n;
            piece = &piece[n..];
            if filled == BLOCK {
                hash(&block);
                filled = 0;
            }
        }
    }
    hash(&block[..filled]);
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
    memchr::memmem::find(hay, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_the_hash_of_the_bytes_without_cr_in_either_kind() {
        let naive = |kind: Kind, m: &[u8]| {
            let kept: Vec<u8> = m.iter().copied().filter(|&b| b != b'\r').collect();
            let (prefix, digest): (&str, Vec<u8>) = match kind {
                Kind::Sha256 => ("", Sha256::digest(&kept).to_vec()),
                Kind::Blake3 => ("blake3:", blake3::hash(&kept).as_bytes().to_vec()),
            };
            let mut hex = prefix.to_string();
            for b in digest {
                hex.push_str(&format!("{b:02x}"));
            }
            Fingerprint::new(hex)
        };
        let line = b"Line of a message with a CRLF ending.\r\n";
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\r".to_vec(),
            b"\r\r\r".to_vec(),
            b"no CR at all\n".to_vec(),
            b"\rstarts and ends with CR\r".to_vec(),
            vec![b'x'; 40_000],
            [vec![b'y'; 16 << 10], b"\r".to_vec(), vec![b'z'; 16 << 10]].concat(),
            [vec![b'a'; (16 << 10) - 1], b"\r\nb".to_vec()].concat(),
        ];
        cases.push(line.repeat(2_000));
        // Lines that straddle block ends, and a long run that starts mid-block.
        cases.push(b"0123456789abc\r\n".repeat(5_000));
        cases.push(
            [
                line.repeat(3),
                vec![b'r'; 3 * (16 << 10) + 5],
                line.repeat(3),
            ]
            .concat(),
        );
        cases.push([line.repeat(500), vec![b'q'; 50_000], line.repeat(500)].concat());
        for m in &cases {
            for kind in [Kind::Sha256, Kind::Blake3] {
                let fp = fingerprint_as(kind, m);
                assert_eq!(fp, naive(kind, m), "{kind:?}, {} bytes", m.len());
                assert_eq!(Kind::of(&fp), kind);
            }
            assert_eq!(fingerprint(m), naive(Kind::Blake3, m));
        }
    }

    #[test]
    fn fingerprint_known_answers() {
        // SHA-256 of "" and of "abc" (FIPS 180-2), lowercase hex: what earlier versions wrote.
        assert_eq!(
            fingerprint_as(Kind::Sha256, b"\r").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            fingerprint_as(Kind::Sha256, b"a\rb\rc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // BLAKE3 of "" and of "abc" (the BLAKE3 paper's test vectors), with the prefix.
        assert_eq!(
            fingerprint(b"\r").as_str(),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            fingerprint(b"a\rb\rc").as_str(),
            "blake3:6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }

    #[test]
    fn kinds_are_told_apart_by_the_prefix_alone() {
        let sha = fingerprint_as(Kind::Sha256, b"x");
        let b3 = fingerprint(b"x");
        assert_eq!(Kind::of(&sha), Kind::Sha256);
        assert_eq!(Kind::of(&b3), Kind::Blake3);
        // Whatever an old ledger or a test holds without the prefix is SHA-256.
        assert_eq!(Kind::of(&Fingerprint::from("fp-1")), Kind::Sha256);
        assert_eq!(
            Kind::all_of([&sha, &b3, &sha]),
            [Kind::Blake3, Kind::Sha256]
        );
        assert_eq!(Kind::all_of([&sha]), [Kind::Sha256]);
        assert_eq!(Kind::all_of([]), []);
    }

    #[test]
    fn fingerprint_ignores_carriage_returns_only() {
        let lf = fingerprint(b"Subject: a\n\nbody\n");
        assert_eq!(lf, fingerprint(b"Subject: a\r\n\r\nbody\r\n"));
        assert_eq!(lf, fingerprint(b"Subject: a\r\r\n\r\nbody\r\n"));
        assert_ne!(lf, fingerprint(b"Subject: b\n\nbody\n"));
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

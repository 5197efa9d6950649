//! IMAP's modified UTF-7 (RFC 3501 §5.1.3), the encoding of mailbox names on the wire.
//!
//! IMAP4rev1 mailbox names are 7-bit: a server lists `Junk/&ANw-berpr&APw-ft` where the user sees
//! `Junk/Überprüft`. mailferry matches, filters and reports folders by their Unicode names, and
//! must send the exact encoded form back when it creates a folder on the target, so it needs both
//! directions.
//!
//! [`encode`] always produces the canonical form. [`decode`] is strict: it accepts only what a
//! conforming encoder can produce, and reports anything else (raw UTF-8 from a server that
//! ignores the RFC, an unclosed `&`, bad base64, a null shift) as a [`Mutf7Error`]. It never
//! guesses; callers that list folders fall back to the raw name, which keeps such a folder
//! reachable under the exact name the server gave.

use std::fmt;

/// The modified BASE64 alphabet: RFC 2045's, with ',' in place of '/'.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Encodes a Unicode mailbox name into modified UTF-7.
///
/// Printable US-ASCII stands for itself, `&` becomes `&-`, and every run of other characters
/// becomes one `&…-` section of modified BASE64 over UTF-16BE, unpadded.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    for c in name.chars() {
        if is_direct(c) {
            flush_base64(&mut out, &mut pending);
            match c {
                '&' => out.push_str("&-"),
                _ => out.push(c),
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush_base64(&mut out, &mut pending);
    out
}

/// Decodes a modified UTF-7 mailbox name, rejecting anything that is not canonical.
pub fn decode(encoded: &str) -> Result<String, Mutf7Error> {
    let bytes = encoded.as_bytes();
    let mut out = String::with_capacity(encoded.len());
    // True right after a BASE64 section: "&…-&…-" is a null shift, which the RFC forbids.
    let mut after_base64 = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'&' => {
                let run_start = i + 1;
                let run_end = bytes[run_start..]
                    .iter()
                    .position(|&b| sextet(b).is_none())
                    .map_or(bytes.len(), |n| run_start + n);
                match bytes.get(run_end) {
                    None => return Err(Mutf7Error::new(i, Mutf7ErrorKind::UnterminatedShift)),
                    Some(b'-') => {}
                    // "& " or "R&D.": an '&' that was never meant as a shift.
                    Some(_) if run_end == run_start => {
                        return Err(Mutf7Error::new(i, Mutf7ErrorKind::UnterminatedShift));
                    }
                    Some(_) => return Err(Mutf7Error::new(run_end, Mutf7ErrorKind::InvalidBase64)),
                }
                if run_end == run_start {
                    out.push('&');
                    after_base64 = false;
                } else {
                    if after_base64 {
                        return Err(Mutf7Error::new(i, Mutf7ErrorKind::NullShift));
                    }
                    decode_base64(&bytes[run_start..run_end], run_start, &mut out)?;
                    after_base64 = true;
                }
                i = run_end + 1;
            }
            b @ 0x20..=0x7e => {
                out.push(char::from(b));
                after_base64 = false;
                i += 1;
            }
            _ => return Err(Mutf7Error::new(i, Mutf7ErrorKind::NotPrintableAscii)),
        }
    }
    Ok(out)
}

/// Why a name is not valid modified UTF-7, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mutf7Error {
    offset: usize,
    kind: Mutf7ErrorKind,
}

/// The ways a name can fail to be modified UTF-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mutf7ErrorKind {
    /// A byte outside printable US-ASCII, typically raw UTF-8 from a server that does not encode.
    NotPrintableAscii,
    /// An `&` whose BASE64 section never ends with `-`.
    UnterminatedShift,
    /// A character that is not in the modified BASE64 alphabet inside a BASE64 section.
    InvalidBase64,
    /// A BASE64 section whose length or trailing bits do not form whole UTF-16 code units.
    IncompleteBase64,
    /// A BASE64 section that decodes to an unpaired UTF-16 surrogate.
    InvalidUtf16,
    /// A BASE64 section that encodes printable US-ASCII, which must stand for itself.
    EncodedPrintableAscii,
    /// A BASE64 section right after another one (`-&`), which must have been a single section.
    NullShift,
}

impl Mutf7Error {
    fn new(offset: usize, kind: Mutf7ErrorKind) -> Self {
        Mutf7Error { offset, kind }
    }

    /// Byte offset in the input where the problem was found.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// What is wrong.
    pub fn kind(&self) -> Mutf7ErrorKind {
        self.kind
    }
}

impl fmt::Display for Mutf7Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            Mutf7ErrorKind::NotPrintableAscii => "a byte outside printable US-ASCII",
            Mutf7ErrorKind::UnterminatedShift => "an '&' section without a closing '-'",
            Mutf7ErrorKind::InvalidBase64 => "a character outside modified BASE64",
            Mutf7ErrorKind::IncompleteBase64 => "BASE64 that does not end on a UTF-16 unit",
            Mutf7ErrorKind::InvalidUtf16 => "an unpaired UTF-16 surrogate",
            Mutf7ErrorKind::EncodedPrintableAscii => "printable US-ASCII encoded in BASE64",
            Mutf7ErrorKind::NullShift => "a BASE64 section right after another one",
        };
        write!(f, "Invalid modified UTF-7 at byte {}: {what}", self.offset)
    }
}

impl std::error::Error for Mutf7Error {}

/// Printable US-ASCII (0x20–0x7e) is written as itself; everything else goes into BASE64.
fn is_direct(c: char) -> bool {
    (' '..='~').contains(&c)
}

fn sextet(b: u8) -> Option<u32> {
    let value = match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        b',' => 63,
        _ => return None,
    };
    Some(u32::from(value))
}

/// Writes `units` as one `&…-` section and empties it; writes nothing when it is empty.
fn flush_base64(out: &mut String, units: &mut Vec<u16>) {
    if units.is_empty() {
        return;
    }
    out.push('&');
    let mut bits: u32 = 0;
    let mut count = 0;
    for unit in units.drain(..) {
        bits = (bits << 16) | u32::from(unit);
        count += 16;
        while count >= 6 {
            count -= 6;
            out.push(char::from(ALPHABET[((bits >> count) & 0x3f) as usize]));
        }
        bits &= (1 << count) - 1;
    }
    if count > 0 {
        out.push(char::from(
            ALPHABET[((bits << (6 - count)) & 0x3f) as usize],
        ));
    }
    out.push('-');
}

/// Decodes the BASE64 between `&` and `-`; `offset` is where it starts in the whole name.
fn decode_base64(run: &[u8], offset: usize, out: &mut String) -> Result<(), Mutf7Error> {
    let mut units = Vec::with_capacity(run.len() * 6 / 16);
    let mut bits: u32 = 0;
    let mut count = 0;
    for &b in run {
        let value = sextet(b).ok_or(Mutf7Error::new(offset, Mutf7ErrorKind::InvalidBase64))?;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 16 {
            count -= 16;
            // The mask makes the truncation to 16 bits explicit.
            units.push(((bits >> count) & 0xffff) as u16);
            bits &= (1 << count) - 1;
        }
    }
    // Unpadded BASE64 may end with up to 4 zero bits; a whole unused sextet or a set bit means
    // the section was cut short or is not what an encoder writes.
    if count >= 6 || bits != 0 {
        return Err(Mutf7Error::new(offset, Mutf7ErrorKind::IncompleteBase64));
    }
    for c in char::decode_utf16(units) {
        let c = c.map_err(|_| Mutf7Error::new(offset, Mutf7ErrorKind::InvalidUtf16))?;
        if is_direct(c) {
            return Err(Mutf7Error::new(
                offset,
                Mutf7ErrorKind::EncodedPrintableAscii,
            ));
        }
        out.push(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs that must encode and decode into each other exactly.
    const PAIRS: &[(&str, &str)] = &[
        ("", ""),
        ("INBOX", "INBOX"),
        ("Junk/Überprüft", "Junk/&ANw-berpr&APw-ft"),
        ("&", "&-"),
        ("&&", "&-&-"),
        ("Notes & Ideas", "Notes &- Ideas"),
        ("日本語", "&ZeVnLIqe-"),
        ("Réunions", "R&AOk-unions"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("😀", "&2D3eAA-"),
        ("a😀b", "a&2D3eAA-b"),
        ("é&", "&AOk-&-"),
        ("&é", "&-&AOk-"),
        ("tab\there", "tab&AAk-here"),
        ("-", "-"),
        ("é-", "&AOk--"),
    ];

    #[test]
    fn encodes_the_known_names() {
        for (name, encoded) in PAIRS {
            assert_eq!(encode(name), *encoded, "encoding {name:?}");
        }
    }

    #[test]
    fn decodes_the_known_names() {
        for (name, encoded) in PAIRS {
            assert_eq!(
                decode(encoded).as_deref(),
                Ok(*name),
                "decoding {encoded:?}"
            );
        }
    }

    #[test]
    fn a_base64_section_holds_surrogate_pairs_and_mixed_scripts_together() {
        let name = "Rechnungen 📎 日本 Ü";
        let encoded = encode(name);
        assert_eq!(encoded, "Rechnungen &2D3czg- &ZeVnLA- &ANw-");
        assert_eq!(decode(&encoded).as_deref(), Ok(name));
        assert_eq!(encode("📎日本"), "&2D3czmXlZyw-");
    }

    fn kind_of(encoded: &str) -> Option<Mutf7ErrorKind> {
        decode(encoded).err().map(|e| e.kind())
    }

    #[test]
    fn rejects_raw_utf8_and_control_characters() {
        assert_eq!(
            kind_of("Überprüft"),
            Some(Mutf7ErrorKind::NotPrintableAscii)
        );
        assert_eq!(kind_of("a\tb"), Some(Mutf7ErrorKind::NotPrintableAscii));
        assert_eq!(kind_of("a\u{7f}"), Some(Mutf7ErrorKind::NotPrintableAscii));
    }

    #[test]
    fn rejects_an_unclosed_ampersand() {
        assert_eq!(kind_of("&"), Some(Mutf7ErrorKind::UnterminatedShift));
        assert_eq!(kind_of("R&D"), Some(Mutf7ErrorKind::UnterminatedShift));
        assert_eq!(kind_of("&AOk"), Some(Mutf7ErrorKind::UnterminatedShift));
        assert_eq!(
            kind_of("Notes & Ideas"),
            Some(Mutf7ErrorKind::UnterminatedShift)
        );
    }

    #[test]
    fn rejects_characters_outside_modified_base64() {
        // '/' belongs to RFC 2045 BASE64 but not to the modified alphabet.
        assert_eq!(kind_of("&AOk/-"), Some(Mutf7ErrorKind::InvalidBase64));
        assert_eq!(kind_of("&AOk=-"), Some(Mutf7ErrorKind::InvalidBase64));
    }

    #[test]
    fn rejects_base64_that_does_not_end_on_a_utf16_unit() {
        assert_eq!(kind_of("&AO-"), Some(Mutf7ErrorKind::IncompleteBase64));
        assert_eq!(kind_of("&A-"), Some(Mutf7ErrorKind::IncompleteBase64));
        assert_eq!(kind_of("&AOkA-"), Some(Mutf7ErrorKind::IncompleteBase64));
        // "AOl" carries the unit 0x00E9 and then the bits 01 where zero padding belongs.
        assert_eq!(kind_of("&AOl-"), Some(Mutf7ErrorKind::IncompleteBase64));
    }

    #[test]
    fn rejects_an_unpaired_surrogate() {
        assert_eq!(kind_of("&2D0-"), Some(Mutf7ErrorKind::InvalidUtf16));
        assert_eq!(kind_of("&3gA-"), Some(Mutf7ErrorKind::InvalidUtf16));
        // Both halves exist, but in two sections: each section must decode on its own.
        assert_eq!(kind_of("&2D0-x&3gA-"), Some(Mutf7ErrorKind::InvalidUtf16));
    }

    #[test]
    fn rejects_printable_ascii_inside_base64() {
        assert_eq!(
            kind_of("&AGE-"),
            Some(Mutf7ErrorKind::EncodedPrintableAscii)
        );
        assert_eq!(
            kind_of("&ACY-"),
            Some(Mutf7ErrorKind::EncodedPrintableAscii)
        );
    }

    #[test]
    fn rejects_a_null_shift() {
        assert_eq!(kind_of("&AOk-&AOk-"), Some(Mutf7ErrorKind::NullShift));
        assert_eq!(
            decode("&AOk-&AOk"),
            Err(Mutf7Error::new(5, Mutf7ErrorKind::UnterminatedShift))
        );
    }

    #[test]
    fn an_error_names_the_offset_and_the_problem() {
        let error = decode("Junk/&ANw").expect_err("unterminated");
        assert_eq!(error.offset(), 5);
        assert_eq!(
            error.to_string(),
            "Invalid modified UTF-7 at byte 5: an '&' section without a closing '-'"
        );
    }

    /// A small deterministic generator, so the property test needs no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_name(rng: &mut XorShift) -> String {
        let len = rng.below(12);
        (0..len)
            .map(|_| {
                let c = match rng.below(8) {
                    0 => Some('&'),
                    1 => Some('-'),
                    2 => char::from_u32(0x20 + rng.below(0x5f) as u32),
                    3 => char::from_u32(rng.below(0x20) as u32),
                    4 => char::from_u32(0x80 + rng.below(0x780) as u32),
                    5 => char::from_u32(0x3000 + rng.below(0x6000) as u32),
                    6 => char::from_u32(0x1_0000 + rng.below(0x1_0000) as u32),
                    _ => char::from_u32(0xe000 + rng.below(0x2000) as u32),
                };
                c.expect("every range above is outside the surrogates")
            })
            .collect()
    }

    #[test]
    fn every_name_round_trips_and_its_encoding_is_canonical() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let name = random_name(&mut rng);
            let encoded = encode(&name);
            assert!(encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            assert_eq!(decode(&encoded).as_deref(), Ok(name.as_str()), "{encoded}");
            assert_eq!(encode(&decode(&encoded).expect("decodes")), encoded);
        }
    }

    #[test]
    fn ascii_without_ampersand_is_its_own_encoding() {
        let printable: String = (' '..='~').filter(|&c| c != '&').collect();
        assert_eq!(encode(&printable), printable);
        assert_eq!(decode(&printable).as_deref(), Ok(printable.as_str()));
    }
}

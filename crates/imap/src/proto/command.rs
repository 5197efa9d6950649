//! Command encoding: quoting, astrings and literals, the APPEND message head, and UID sets,
//! compact and chunked to keep command lines short.

/// The longest UID set [`uid_sets`] builds by default. RFC 2683 §3.2.1.5 advises clients to
/// keep a command line to about 1,000 octets, literals aside; 900 for the set leaves room for
/// the tag, the verb and an ordinary mailbox name (`m123 UID MOVE <set> "Archive/2024"`).
pub const MAX_SET_CHARS: usize = 900;

/// A quoted string, escaping `"` and `\` (RFC 3501 §4.3). Mailbox names are modified UTF-7,
/// hence ASCII.
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// Appends an astring: quoted when it is safe 7-bit text, a literal otherwise (RFC 3501 §4.3
/// forbids CR, LF and 8-bit bytes in a quoted string). The literal is `{n+}` with LITERAL+
/// (RFC 7888) and a synchronising `{n}` without, which the driver must send in two steps
/// (see [`find_sync_literal`]).
pub fn push_astring(out: &mut Vec<u8>, s: &[u8], literal_plus: bool) {
    if s.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        out.push(b'"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        out.extend_from_slice(literal_head(s.len(), literal_plus).as_bytes());
        out.extend_from_slice(s);
    }
}

/// `{n}` or `{n+}` and CRLF: what announces a literal of `len` bytes.
fn literal_head(len: usize, literal_plus: bool) -> String {
    format!("{{{len}{}}}\r\n", if literal_plus { "+" } else { "" })
}

/// One message's part of an APPEND (RFC 3501 §6.3.11, repeated per message by RFC 3502
/// MULTIAPPEND): ` (flags) "date" {size+}` and CRLF, ready for the message's bytes.
pub fn message_head(
    flags: &[String],
    date: Option<&str>,
    size: usize,
    literal_plus: bool,
) -> String {
    let mut head = String::new();
    if !flags.is_empty() {
        head.push_str(&format!(" ({})", flags.join(" ")));
    }
    if let Some(d) = date {
        head.push(' ');
        head.push_str(&quote(d));
    }
    head.push(' ');
    head.push_str(&literal_head(size, literal_plus));
    head
}

/// Position just after the CRLF of the first `{n}\r\n` (a synchronising literal) in a command:
/// where the client has to stop and wait for the server's `+` (RFC 3501 §7.5).
pub fn find_sync_literal(line: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = line[i..].windows(3).position(|w| w == b"}\r\n") {
        let end = i + p;
        if let Some(open) = line[..end].iter().rposition(|&b| b == b'{') {
            let digits = &line[open + 1..end];
            if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
                return Some(end + 3);
            }
        }
        i = end + 3;
    }
    None
}

/// Runs of consecutive UIDs, rendered `a` or `a:b`, in input order.
fn runs(uids: impl IntoIterator<Item = u32>) -> impl Iterator<Item = String> {
    let mut uids = uids.into_iter().peekable();
    std::iter::from_fn(move || {
        let first = uids.next()?;
        let mut last = first;
        while let Some(&u) = uids.peek() {
            if last.checked_add(1) != Some(u) {
                break;
            }
            last = u;
            uids.next();
        }
        Some(if first == last {
            first.to_string()
        } else {
            format!("{first}:{last}")
        })
    })
}

/// A compact UID set (`1:5,9,12:14`) from ascending UIDs.
pub fn uid_set(uids: impl IntoIterator<Item = u32>) -> String {
    runs(uids).collect::<Vec<_>>().join(",")
}

/// Compact UID sets of at most `max_chars` characters each (use [`MAX_SET_CHARS`]), one per
/// command, so that thousands of scattered UIDs never make a command line longer than servers
/// accept (RFC 2683 §3.2.1.5). Expanding the sets in order gives back `uids`. Only a single
/// run longer than `max_chars` (at most 21 characters, `4294967294:4294967295`) would get a
/// set of its own that is longer.
pub fn uid_sets(uids: &[u32], max_chars: usize) -> Vec<String> {
    let mut sets = Vec::new();
    let mut current = String::new();
    for run in runs(uids.iter().copied()) {
        if !current.is_empty() && current.len() + 1 + run.len() > max_chars {
            sets.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&run);
    }
    if !current.is_empty() {
        sets.push(current);
    }
    sets
}

/// `5:7,9` → `[5, 6, 7, 9]`, in the order given (RFC 4315 lists APPENDUIDs in message order,
/// and a COPYUID's two sets pair up position by position).
pub fn expand_uid_set(set: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a <= b {
                    out.extend(a..=b);
                } else {
                    out.extend((b..=a).rev());
                }
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("Sent Items"), "\"Sent Items\"");
    }

    #[test]
    fn astrings_are_quoted_when_safe_and_literals_otherwise() {
        let cases: &[(&[u8], bool, &[u8])] = &[
            (b"bob", false, b"\"bob\""),
            (b"p\"w\\", true, b"\"p\\\"w\\\\\""),
            ("pässword".as_bytes(), true, "{9+}\r\npässword".as_bytes()),
            ("pässword".as_bytes(), false, "{9}\r\npässword".as_bytes()),
            (b"a\r\nb", false, b"{4}\r\na\r\nb"),
        ];
        for (input, plus, expected) in cases {
            let mut out = Vec::new();
            push_astring(&mut out, input, *plus);
            assert_eq!(out, *expected, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn message_head_with_and_without_flags_date_and_literal_plus() {
        let seen = vec!["\\Seen".to_string(), "$Label1".to_string()];
        assert_eq!(
            message_head(&seen, Some("01-Jan-2020 10:00:00 +0000"), 5, false),
            " (\\Seen $Label1) \"01-Jan-2020 10:00:00 +0000\" {5}\r\n"
        );
        assert_eq!(message_head(&[], None, 1234, true), " {1234+}\r\n");
    }

    #[test]
    fn sync_literal_found_after_crlf() {
        let line = b"a LOGIN {3}\r\nbob \"pw\"";
        assert_eq!(find_sync_literal(line), Some(13));
        assert_eq!(find_sync_literal(b"a LOGIN \"x\" \"y\""), None);
        assert_eq!(find_sync_literal(b"a LOGIN {3+}\r\nbob"), None);
    }

    #[test]
    fn uid_sets_are_compact() {
        assert_eq!(uid_set([1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_set([4]), "4");
        assert_eq!(uid_set([]), "");
        assert_eq!(uid_set([u32::MAX - 1, u32::MAX]), "4294967294:4294967295");
    }

    #[test]
    fn uid_sets_expand_in_order() {
        assert_eq!(expand_uid_set("5:7,9"), Some(vec![5, 6, 7, 9]));
        assert_eq!(expand_uid_set("12"), Some(vec![12]));
        assert_eq!(expand_uid_set("9:7"), Some(vec![9, 8, 7]));
        assert_eq!(expand_uid_set("x"), None);
        assert_eq!(expand_uid_set("1:"), None);
    }

    /// Every chunk stays within the bound and the chunks, expanded in order, are the input.
    #[test]
    fn chunked_uid_sets_stay_under_the_bound_and_keep_every_uid() {
        let scattered: Vec<u32> = (0..10_000).map(|i| 1_000_000 + 3 * i).collect();
        let dense: Vec<u32> = (1..=50_000).collect();
        let mixed: Vec<u32> = (1..=20_000).filter(|u| u % 7 != 0).collect();
        let cases: &[(&str, &[u32], usize, usize)] = &[
            // (what, uids, max_chars, number of sets expected)
            ("empty", &[], MAX_SET_CHARS, 0),
            ("one uid", &[42], MAX_SET_CHARS, 1),
            ("one long run", &dense, MAX_SET_CHARS, 1),
            ("10,000 scattered", &scattered, MAX_SET_CHARS, 90),
            ("runs of six", &mixed, MAX_SET_CHARS, 35),
            ("tiny bound", &[1, 3, 5, 7], 3, 2),
        ];
        for &(what, uids, max, count) in cases {
            let sets = uid_sets(uids, max);
            assert_eq!(sets.len(), count, "{what}");
            for set in &sets {
                assert!(set.len() <= max, "{what}: {} > {max}", set.len());
            }
            let back: Vec<u32> = sets
                .iter()
                .flat_map(|s| expand_uid_set(s).unwrap())
                .collect();
            assert_eq!(back, uids, "{what}");
        }
    }

    #[test]
    fn a_chunk_is_one_compact_set() {
        assert_eq!(uid_sets(&[1, 2, 3, 5, 7, 8], MAX_SET_CHARS), ["1:3,5,7:8"]);
        assert_eq!(uid_sets(&[1, 2, 3, 5, 7, 8], 5), ["1:3,5", "7:8"]);
    }
}

//! Message file names, `<unique>:2,<info>`: the info letters are the flags (`D` \Draft,
//! `F` \Flagged, `R` \Answered, `S` \Seen, `T` \Deleted) and, in lower case, the keywords,
//! in ASCII order. Letters this module does not know (`P`, passed) are kept.

use std::path::{Path, PathBuf};

use mailferry_core::model::Flags;
use mailferry_imap::Result;

use super::keywords::{Keywords, MAX_KEYWORDS};
use super::refused;

const SYSTEM_FLAGS: [(char, &str); 5] = [
    ('D', "\\Draft"),
    ('F', "\\Flagged"),
    ('R', "\\Answered"),
    ('S', "\\Seen"),
    ('T', "\\Deleted"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Message {
    pub(super) uid: u32,
    /// The file name in `cur/` or `new/`.
    pub(super) name: String,
    /// Length of the unique part, before the last ':' (Dovecot splits there too).
    pub(super) base_len: usize,
    pub(super) in_new: bool,
}

impl Message {
    pub(super) fn new(uid: u32, name: String, in_new: bool) -> Message {
        let base_len = name.rfind(':').unwrap_or(name.len());
        Message {
            uid,
            name,
            base_len,
            in_new,
        }
    }

    pub(super) fn base(&self) -> &str {
        &self.name[..self.base_len]
    }

    pub(super) fn path(&self, dir: &Path) -> PathBuf {
        dir.join(if self.in_new { "new" } else { "cur" })
            .join(&self.name)
    }

    /// Its name with exactly these flag and keyword letters. Other letters of a `2,` info are
    /// kept, as is a second flag set after a ','; an info of another version is replaced,
    /// as Dovecot does.
    pub(super) fn with_flags(&self, letters: &str) -> String {
        let info = self.name.get(self.base_len + 1..).unwrap_or("");
        let (old, rest) = match info.strip_prefix("2,") {
            Some(flags) => flags.split_at(flags.find(',').unwrap_or(flags.len())),
            None => ("", ""),
        };
        let mut all: Vec<char> = old.chars().filter(|&c| !is_known_letter(c)).collect();
        all.extend(letters.chars());
        all.sort_unstable();
        all.dedup();
        let all: String = all.into_iter().collect();
        format!("{}:2,{all}{rest}", self.base())
    }
}

fn is_known_letter(c: char) -> bool {
    c.is_ascii_lowercase() || SYSTEM_FLAGS.iter().any(|&(letter, _)| letter == c)
}

/// The info letters of a file name: those of a `:2,` info up to any second flag set.
fn info_letters(name: &str) -> &str {
    let Some(colon) = name.rfind(':') else {
        return "";
    };
    match name[colon + 1..].strip_prefix("2,") {
        Some(flags) => &flags[..flags.find(',').unwrap_or(flags.len())],
        None => "",
    }
}

/// The flags a file name stands for. A keyword letter without a name in `dovecot-keywords`
/// means nothing anyone can read, so it is left out.
pub(super) fn flags_of(name: &str, keywords: &Keywords) -> Flags {
    Flags::from_server(info_letters(name).chars().filter_map(|c| {
        SYSTEM_FLAGS
            .iter()
            .find(|&&(letter, _)| letter == c)
            .map(|&(_, flag)| flag)
            .or_else(|| keywords.name_of(c))
    }))
}

/// The Maildir letters for IMAP flags, sorted, allocating keyword letters in `keywords`.
///
/// `Flags` never holds \Recent (the server's own, RFC 3501 §2.3.2), so it is never stored.
pub(super) fn letters_for(flags: &Flags, keywords: &mut Keywords, command: &str) -> Result<String> {
    let mut letters = Vec::new();
    for flag in flags.iter() {
        if flag.starts_with('\\') {
            let letter = SYSTEM_FLAGS
                .iter()
                .find(|(_, name)| name.eq_ignore_ascii_case(flag))
                .map(|&(letter, _)| letter)
                .ok_or_else(|| refused(command, format!("Unknown system flag {flag}")))?;
            letters.push(letter);
            continue;
        }
        // The keywords file is line- and space-separated.
        if flag.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(refused(command, format!("Invalid keyword {flag:?}")));
        }
        let letter = keywords.letter(flag).ok_or_else(|| {
            refused(
                command,
                format!(
                    "Maildir holds at most {MAX_KEYWORDS} keywords per folder; no room for {flag}"
                ),
            )
        })?;
        letters.push(letter);
    }
    letters.sort_unstable();
    letters.dedup();
    Ok(letters.into_iter().collect())
}

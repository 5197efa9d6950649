//! `dovecot-keywords` in a folder: `<index> <keyword>` per line, index 0 being the letter `a`.
//! It is Dovecot's own file, so keywords survive in both directions; a folder holds at most 26.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use mailferry_imap::Result;

use super::fsutil::{io_err, write_atomic};

const KEYWORDS: &str = "dovecot-keywords";
/// Letters `a` to `z`.
pub(super) const MAX_KEYWORDS: usize = 26;

/// Dovecot's `dovecot-keywords`: keyword names by letter index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Keywords {
    names: Vec<Option<String>>,
}

impl Keywords {
    pub(super) fn read(dir: &Path) -> Result<Keywords> {
        let mut keywords = Keywords {
            names: vec![None; MAX_KEYWORDS],
        };
        let path = dir.join(KEYWORDS);
        let text = match fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(keywords),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        // Malformed lines are skipped, as Dovecot skips them.
        for line in text.lines() {
            let Some((index, name)) = line.split_once(' ') else {
                continue;
            };
            if let Ok(index) = index.parse::<usize>()
                && index < MAX_KEYWORDS
                && !name.is_empty()
            {
                keywords.names[index] = Some(name.to_owned());
            }
        }
        Ok(keywords)
    }

    pub(super) fn write(&self, dir: &Path) -> Result<()> {
        let text: String = self
            .names
            .iter()
            .enumerate()
            .filter_map(|(index, name)| Some(format!("{index} {}\n", name.as_ref()?)))
            .collect();
        let path = dir.join(KEYWORDS);
        write_atomic(&path, text.as_bytes()).map_err(io_err("write", &path))
    }

    pub(super) fn name_of(&self, letter: char) -> Option<&str> {
        let index = (letter as usize).checked_sub('a' as usize)?;
        self.names.get(index)?.as_deref()
    }

    /// The letter of a keyword, given the first free one if it has none. Keywords compare
    /// without case, as in Dovecot.
    pub(super) fn letter(&mut self, name: &str) -> Option<char> {
        let index = match self
            .names
            .iter()
            .position(|n| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        {
            Some(index) => index,
            None => {
                let free = self.names.iter().position(Option::is_none)?;
                self.names[free] = Some(name.to_owned());
                free
            }
        };
        Some(char::from(b'a' + u8::try_from(index).ok()?))
    }
}

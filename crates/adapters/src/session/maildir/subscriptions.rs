//! `subscriptions` in `root/<login>/`: one raw name per line, or Dovecot's version 2 format
//! (`V\t2` header, levels separated by tabs), which is kept when found.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use mailferry_imap::Result;

use super::fsutil::{io_err, write_atomic};
use super::{DELIMITER, INBOX};

const SUBSCRIPTIONS: &str = "subscriptions";
const SUBSCRIPTIONS_V2: &str = "V\t2\n\n";

/// The subscriptions file, in the version it was found in.
pub(super) struct Subscriptions {
    version2: bool,
    pub(super) names: Vec<String>,
}

impl Subscriptions {
    pub(super) fn read(home: &Path) -> Result<Subscriptions> {
        let path = home.join(SUBSCRIPTIONS);
        let text = match fs::read(&path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(Subscriptions {
                    version2: false,
                    names: Vec::new(),
                });
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let (version2, body) = match text.strip_prefix(SUBSCRIPTIONS_V2) {
            Some(body) => (true, body),
            None => (false, text.as_str()),
        };
        let names = body
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| {
                let name = if version2 {
                    let levels: Vec<String> = line.split('\t').map(tab_unescape).collect();
                    levels.join(&DELIMITER.to_string())
                } else {
                    line.to_owned()
                };
                if name.eq_ignore_ascii_case(INBOX) {
                    INBOX.to_owned()
                } else {
                    name
                }
            })
            .collect();
        Ok(Subscriptions { version2, names })
    }

    pub(super) fn write(&self, home: &Path) -> Result<()> {
        let mut text = String::new();
        if self.version2 {
            text.push_str(SUBSCRIPTIONS_V2);
        }
        for name in &self.names {
            if self.version2 {
                let levels: Vec<String> = name.split(DELIMITER).map(tab_escape).collect();
                text.push_str(&levels.join("\t"));
            } else {
                text.push_str(name);
            }
            text.push('\n');
        }
        let path = home.join(SUBSCRIPTIONS);
        write_atomic(&path, text.as_bytes()).map_err(io_err("write", &path))
    }
}

/// Dovecot's tab escaping (`str_append_tabescaped`): \001 is the escape character.
fn tab_escape(level: &str) -> String {
    let mut out = String::with_capacity(level.len());
    for c in level.chars() {
        match c {
            '\u{1}' => out.push_str("\u{1}1"),
            '\t' => out.push_str("\u{1}t"),
            '\r' => out.push_str("\u{1}r"),
            '\n' => out.push_str("\u{1}n"),
            c => out.push(c),
        }
    }
    out
}

fn tab_unescape(level: &str) -> String {
    let mut out = String::with_capacity(level.len());
    let mut chars = level.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('1') => out.push('\u{1}'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

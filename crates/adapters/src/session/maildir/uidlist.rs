//! `mailferry-uidlist` in a folder: Maildir has no UIDs, so they are kept here. The first line
//! is `V<uidvalidity> N<uidnext>`, then `<uid> <unique>` per message, ascending. UIDVALIDITY is
//! the time the list was made. Every scan brings it up to date: files the list lacks
//! (delivered by another program) get the next UIDs in order of mtime then name, and lines
//! whose file is gone are dropped; UIDs are never reused.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use mailferry_imap::Result;

use super::fsutil::{FolderLock, io_err, write_atomic};
use super::keywords::Keywords;
use super::names::Message;
use super::refused;

pub(super) const UIDLIST: &str = "mailferry-uidlist";

/// One folder's messages with their UIDs, as of its last scan.
pub(super) struct FolderState {
    pub(super) validity: u32,
    pub(super) next: u32,
    /// Ascending by UID.
    pub(super) messages: Vec<Message>,
    pub(super) keywords: Keywords,
    /// False when the uidlist could not be written (a read-only source): the UIDs are then
    /// derived from the files on every scan.
    pub(super) persisted: bool,
    /// The uidlist as this session last read or wrote it.
    pub(super) stamp: Option<Stamp>,
}

impl FolderState {
    pub(super) fn index_of(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    pub(super) fn get(&self, uid: u32) -> Option<&Message> {
        self.index_of(uid).map(|i| &self.messages[i])
    }

    pub(super) fn exists(&self) -> u32 {
        u32::try_from(self.messages.len()).unwrap_or(u32::MAX)
    }

    pub(super) fn take_uid(&mut self, command: &str) -> Result<u32> {
        let uid = self.next;
        self.next = uid
            .checked_add(1)
            .ok_or_else(|| refused(command, "The folder has used up its UIDs"))?;
        Ok(uid)
    }
}

/// A file found by a scan.
struct Found {
    name: String,
    in_new: bool,
}

/// The messages in `new/` and `cur/`, by unique name.
fn scan(dir: &Path) -> Result<HashMap<String, Found>> {
    let mut found: HashMap<String, Found> = HashMap::new();
    // `new/` before `cur/`: a file another program moves from one to the other meanwhile is
    // then seen at least once (Dovecot scans in this order for the same reason).
    for (sub, in_new) in [("new", true), ("cur", false)] {
        let path = dir.join(sub);
        let entries = match fs::read_dir(&path) {
            Ok(entries) => entries,
            // A source INBOX may lack `new/`; it just holds nothing there.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("read", &path))?;
            // Maildir readers skip dot files; a name that is not UTF-8 or holds a line break
            // could not be written to the uidlist (no Maildir writer makes one).
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || name.contains(['\n', '\r']) {
                continue;
            }
            if entry.file_type().map_err(io_err("read", &path))?.is_dir() {
                continue;
            }
            let base = name[..name.rfind(':').unwrap_or(name.len())].to_owned();
            let candidate = Found { name, in_new };
            // A file seen in both (another program moving it from `new/`) counts once, in
            // `cur/`; otherwise the smaller name wins, so repeated scans agree.
            match found.entry(base) {
                Entry::Vacant(v) => {
                    v.insert(candidate);
                }
                Entry::Occupied(mut o) => {
                    let kept = o.get();
                    if (candidate.in_new, &candidate.name) < (kept.in_new, &kept.name) {
                        o.insert(candidate);
                    }
                }
            }
        }
    }
    Ok(found)
}

/// The stored `mailferry-uidlist`.
struct StoredList {
    validity: u32,
    next: u32,
    entries: Vec<(u32, String)>,
    /// False when the file needs rewriting: a last line cut short.
    clean: bool,
}

fn read_uidlist(path: &Path) -> Result<Option<StoredList>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    let damaged = |why: &str| {
        refused(
            "SELECT",
            format!(
                "{} is damaged ({why}); move it away and the folder is renumbered under a new \
                 UIDVALIDITY",
                path.display()
            ),
        )
    };
    let text = String::from_utf8(bytes).map_err(|_| damaged("not UTF-8"))?;
    // A last line without its newline is an append cut short by a crash. Its UID was never
    // reported (the append is fsynced before the UID is returned), so it is dropped and the
    // file rewritten; the file itself gets a new UID.
    let (complete, clean) = match text.rfind('\n') {
        Some(end) => (&text[..=end], end + 1 == text.len()),
        None => ("", text.is_empty()),
    };
    let mut lines = complete.lines();
    let header = lines.next().ok_or_else(|| damaged("no header"))?;
    let (mut validity, mut next) = (None, None);
    for field in header.split_whitespace() {
        if let Some(v) = field.strip_prefix('V') {
            validity = v.parse::<u32>().ok();
        } else if let Some(n) = field.strip_prefix('N') {
            next = n.parse::<u32>().ok();
        }
    }
    let (Some(validity @ 1..), Some(mut next @ 1..)) = (validity, next) else {
        return Err(damaged("bad header"));
    };
    let mut entries: Vec<(u32, String)> = Vec::new();
    for line in lines {
        let (uid, base) = line.split_once(' ').ok_or_else(|| damaged("bad line"))?;
        let uid: u32 = uid.parse().map_err(|_| damaged("bad UID"))?;
        if uid == 0 || entries.last().is_some_and(|&(last, _)| last >= uid) {
            return Err(damaged("UIDs out of order"));
        }
        entries.push((uid, base.to_owned()));
    }
    // Appends add lines without touching the header, so the last line may be past N.
    if let Some(&(last, _)) = entries.last() {
        next = next.max(last.checked_add(1).ok_or_else(|| damaged("UIDs used up"))?);
    }
    Ok(Some(StoredList {
        validity,
        next,
        entries,
        clean,
    }))
}

/// Scans a folder and brings its uidlist up to date.
pub(super) fn sync(dir: &Path) -> Result<FolderState> {
    let _lock = FolderLock::acquire(dir)?;
    sync_locked(dir)
}

/// [`sync`] with the folder's lock already held.
pub(super) fn sync_locked(dir: &Path) -> Result<FolderState> {
    let stored = read_uidlist(&dir.join(UIDLIST))?;
    let mut found = scan(dir)?;
    // A file renamed while the directory was read (a flag change by another program) can be
    // missed; calling it gone would give it a new UID on the scan after, so a listed file is
    // only gone when a second look does not find it either.
    if stored
        .iter()
        .flat_map(|s| &s.entries)
        .any(|(_, base)| !found.contains_key(base))
    {
        for (base, f) in scan(dir)? {
            found.entry(base).or_insert(f);
        }
    }
    let keywords = Keywords::read(dir)?;
    let mut dirty = stored.as_ref().is_none_or(|s| !s.clean);
    let (validity, next) = stored
        .as_ref()
        .map_or((now_validity(), 1), |s| (s.validity, s.next));
    let mut state = FolderState {
        validity,
        next,
        messages: Vec::with_capacity(found.len()),
        keywords,
        persisted: true,
        stamp: None,
    };
    for (uid, base) in stored.iter().flat_map(|s| &s.entries) {
        match found.remove(base) {
            Some(f) => state.messages.push(Message::new(*uid, f.name, f.in_new)),
            // Gone (expunged or moved by another program), or a repeated line.
            None => dirty = true,
        }
    }
    let mut newcomers = Vec::with_capacity(found.len());
    for (base, f) in found {
        let path = dir.join(if f.in_new { "new" } else { "cur" }).join(&f.name);
        match fs::metadata(&path).and_then(|meta| meta.modified()) {
            Ok(mtime) => newcomers.push((mtime, base, f)),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("read", &path)(e)),
        }
    }
    // Arrival order, as far as the files tell it; the name settles ties the same way each time.
    newcomers.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    dirty |= !newcomers.is_empty();
    for (_, _, f) in &newcomers {
        let uid = state.take_uid("SELECT")?;
        state
            .messages
            .push(Message::new(uid, f.name.clone(), f.in_new));
    }
    if dirty && let Err(e) = write_uidlist(dir, &state) {
        if !matches!(
            e.kind(),
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
        ) {
            return Err(io_err("write", &dir.join(UIDLIST))(e));
        }
        // A read-only source: the numbering above depends only on the stored list and the
        // files, so it is the same on every scan of the same files. New files are numbered
        // from the same N whichever they are, so UIDVALIDITY must differ whenever they do.
        state.persisted = false;
        let previous = stored.as_ref().map(|s| s.validity);
        if previous.is_none() || !newcomers.is_empty() {
            state.validity = derived_validity(previous, &newcomers);
        }
    }
    state.stamp = Stamp::of(&dir.join(UIDLIST))?;
    Ok(state)
}

/// Identifies one version of a file: appends change its length, a rewrite (a rename over it)
/// its inode, and either its mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    pub(super) fn of(path: &Path) -> Result<Option<Stamp>> {
        match fs::metadata(path) {
            Ok(meta) => Ok(Some(Stamp {
                len: meta.len(),
                modified: meta.modified().ok(),
                inode: inode(&meta),
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", path)(e)),
        }
    }
}

#[cfg(unix)]
fn inode(meta: &fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &fs::Metadata) -> u64 {
    0
}

/// A UIDVALIDITY that identifies a stored list plus the files it lacks.
fn derived_validity(previous: Option<u32>, newcomers: &[(SystemTime, String, Found)]) -> u32 {
    let mut hash = fnv1a(FNV_OFFSET, &previous.unwrap_or(0).to_be_bytes());
    for (mtime, base, _) in newcomers {
        hash = fnv1a(hash, base.as_bytes());
        let nanos: i128 = match mtime.duration_since(UNIX_EPOCH) {
            Ok(after) => after.as_nanos() as i128,
            Err(before) => -(before.duration().as_nanos() as i128),
        };
        hash = fnv1a(hash, &nanos.to_be_bytes());
    }
    while hash == 0 || Some(hash) == previous {
        hash = hash.wrapping_add(1);
    }
    hash
}

const FNV_OFFSET: u32 = 0x811c_9dc5;

fn fnv1a(hash: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(hash, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// UIDVALIDITY for a new list: the time, as Dovecot does.
fn now_validity() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX).max(1)
}

pub(super) fn write_uidlist(dir: &Path, state: &FolderState) -> io::Result<()> {
    let mut text = format!("V{} N{}\n", state.validity, state.next);
    for message in &state.messages {
        text.push_str(&format!("{} {}\n", message.uid, message.base()));
    }
    write_atomic(&dir.join(UIDLIST), text.as_bytes())
}

/// Records new messages (already in `state`) in the uidlist. Lines are appended, not the file
/// rewritten, so storing a message costs the same in a folder of a hundred thousand.
pub(super) fn append_uidlist(dir: &Path, state: &FolderState, added: &[Message]) -> Result<()> {
    let path = dir.join(UIDLIST);
    let lines: String = added
        .iter()
        .map(|m| format!("{} {}\n", m.uid, m.base()))
        .collect();
    match OpenOptions::new().append(true).open(&path) {
        Ok(mut file) => file
            .write_all(lines.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(io_err("write", &path)),
        // Removed since the scan: the whole list is in `state`.
        Err(e) if e.kind() == ErrorKind::NotFound => {
            write_uidlist(dir, state).map_err(io_err("write", &path))
        }
        Err(e) => Err(io_err("write", &path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_source_derives_the_same_uidvalidity_from_the_same_files() {
        let at = |secs: u64| UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let found = |name: &str| Found {
            name: name.to_owned(),
            in_new: false,
        };
        let files = [(at(5), "a".to_owned(), found("a"))];
        let other = [(at(6), "a".to_owned(), found("a"))];
        let fresh = derived_validity(None, &files);
        assert_ne!(fresh, 0);
        assert_eq!(derived_validity(None, &files), fresh);
        assert_ne!(derived_validity(None, &other), fresh);
        assert_ne!(derived_validity(Some(7), &files), fresh);
        assert_ne!(derived_validity(Some(7), &[]), 7);
    }
}

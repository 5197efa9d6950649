//! A mailbox stored as a Maildir++ tree, behind the typed [`MailSession`] port.
//!
//! `kind = "maildir"` lets either side of a migration be a directory instead of a server: an
//! export to copy from, or a tree for Dovecot or Courier to serve later. The port's model is
//! IMAP's, so this module implements the IMAP behaviour the engine relies on: UIDs that stay
//! put across runs, UIDVALIDITY, flags and keywords, INTERNALDATE, the UID each stored message
//! got, MOVE, and an append that is durable once it is reported.
//!
//! # Layout
//!
//! The connection's directory `root` holds one tree per mailbox login. `root/<login>/` is INBOX
//! (`cur/`, `new/`, `tmp/`); every other folder is `root/<login>/.<name>/`, levels joined by '.'
//! and each level in modified UTF-7, as Dovecot and Courier lay out Maildir++:
//! `.Archive.2024`, `.Junk.&ANw-berpr&APw-ft`. The raw IMAP name of a folder is its directory
//! name without the leading dot, under the namespace `("", '.')`; a level that itself holds a
//! '.' cannot be stored, and [`FolderTree::raw_name_for`] already turns it into '_'.
//!
//! # Files
//!
//! - Messages (`names.rs`): one file each, named `<unique>:2,<info>`. The info letters are the
//!   flags (`D` \Draft, `F` \Flagged, `R` \Answered, `S` \Seen, `T` \Deleted) and, in lower
//!   case, the keywords, in ASCII order. Letters this module does not know (`P`, passed) are
//!   kept.
//! - `dovecot-keywords` in a folder (`keywords.rs`): `<index> <keyword>` per line, index 0 being
//!   the letter `a`; Dovecot's own file, so its keywords survive in both directions. A folder
//!   holds at most 26.
//! - `mailferry-uidlist` in a folder (`uidlist.rs`): Maildir has no UIDs, so they are kept here.
//!   The first line is `V<uidvalidity> N<uidnext>`, then `<uid> <unique>` per message,
//!   ascending. UIDVALIDITY is the time the list was made. On every select, status, search,
//!   scan and fetch the folder is rescanned: files the list lacks (delivered by another program)
//!   get the next UIDs in order of mtime then name, and lines whose file is gone are dropped;
//!   UIDs are never reused.
//! - `subscriptions` in `root/<login>/` (`subscriptions.rs`): one raw name per line, or
//!   Dovecot's version 2 format (`V\t2` header, levels separated by tabs), which is kept when
//!   found.
//!
//! Every write goes through `fsutil.rs`: delivery through `tmp/`, atomic replacement, and an
//! fsync of each directory whose entries changed.
//!
//! INTERNALDATE is the file's mtime: an append sets it from the date given, and a fetch reports
//! it in UTC (`+0000`). The instant survives to the second; the zone the source gave does not.
//!
//! # Line ends
//!
//! A fetch gives a message the way IMAP carries it, with CRLF line ends (RFC 3501 §2.2): a
//! Maildir file whose lines end in a bare LF (the Maildir convention of MTAs and of Dovecot's
//! own store) is read with a CR put before each LF that lacks one, as Dovecot does when it
//! serves the same file. That is the message's canonical form, and what a strict target (Cyrus
//! refuses bare LF with a `NO`) takes; nothing else changes (a lone CR stays). So the copy of
//! such a message is byte for byte what an IMAP server over this Maildir would return, and a
//! Maildir-to-Maildir copy of it writes the CRLF form. An append stores the bytes given, as they
//! are. A scan reports the file's length as the size without reading the file, so for a bare-LF
//! file it is short by one byte per line (the engine only uses it to size its fetches).
//!
//! # Limits
//!
//! Sessions on one tree (two entries merging into one target mailbox, or two processes) take
//! turns through `mailferry-uidlist.lock` in each folder, an advisory lock held for one
//! operation at a time; other Maildir programs do not take it and need not, as they never
//! write the uidlist. A source tree that cannot be written (a read-only snapshot) still works:
//! its UIDs are then derived from the files alone, the same on every run as long as the files
//! do not change, and UIDVALIDITY changes whenever a file the stored list does not know
//! appears.

mod fsutil;
mod keywords;
mod names;
mod subscriptions;
#[cfg(test)]
mod tests;
mod uidlist;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, Utc};
use mailferry_core::folders::{FolderTree, Namespace, ServerFolder};
use mailferry_core::job::Date;
use mailferry_core::model::{Flags, Uid, UidValidity};
use mailferry_core::ports::{
    AppendOutcome, AppendTicket, ConnectError, ConnectionLimit, Connector, Created, FetchedMessage,
    FolderStatus, MailSession, Outgoing, Probe, ScannedMessage, Selected, SessionError,
    SessionErrorKind,
};
use mailferry_imap::{Error, Result};

use super::session_error;
use fsutil::{FolderLock, deliver, io_err, make_maildir, sync_dir, unique_base};
use keywords::Keywords;
use names::{Message, flags_of, letters_for};
use subscriptions::Subscriptions;
use uidlist::{FolderState, Stamp, UIDLIST, append_uidlist, sync, sync_locked, write_uidlist};

const INBOX: &str = "INBOX";
const DELIMITER: char = '.';
/// Courier and Dovecot mark a Maildir++ subfolder with this empty file.
const SUBFOLDER_MARK: &str = "maildirfolder";
const INTERNALDATE_FORMAT: &str = "%d-%b-%Y %H:%M:%S %z";
/// What a fetch that the other side stopped ends with.
const STOPPED: &str = "the target side stopped";

/// The port's results. Inside this module errors are `mailferry_imap::Error`s, worded as a
/// server would word them, and become [`SessionError`]s (words unchanged) at the port.
type PortResult<T> = std::result::Result<T, SessionError>;

/// A directory holding one Maildir++ tree per mailbox login, as a [`Connector`].
pub struct MaildirConnector {
    root: PathBuf,
    /// A target's trees are made when missing; a source's must exist.
    create: bool,
    /// No server to spare: a tree takes as many sessions as the run opens.
    limit: ConnectionLimit,
}

impl MaildirConnector {
    pub fn new(root: PathBuf, create: bool) -> MaildirConnector {
        MaildirConnector {
            root,
            create,
            limit: ConnectionLimit::new(usize::MAX),
        }
    }
}

impl Connector for MaildirConnector {
    fn describe(&self) -> String {
        format!("maildir {}", self.root.display())
    }

    fn probe(&self) -> PortResult<Probe> {
        match (self.root.is_dir(), self.create) {
            (true, _) => Ok(Probe {
                detail: "found".into(),
                can_log_in: true,
            }),
            // A probe changes nothing, so a missing target is left to the first pass, and
            // there is no tree to open until then.
            (false, true) => Ok(Probe {
                detail: "will be created by the first pass".into(),
                can_log_in: false,
            }),
            (false, false) => Err(SessionError::new(
                SessionErrorKind::Other,
                "no such directory",
            )),
        }
    }

    fn open(
        &self,
        login: &str,
        // A tree is opened, not logged in to: no password guards it.
        _own_password: Option<&str>,
    ) -> std::result::Result<Box<dyn MailSession>, ConnectError> {
        let session = open(&self.root, login, self.create)
            .map_err(|e| ConnectError::Login(session_error(e)))?;
        Ok(Box::new(session))
    }

    fn limit(&self) -> &ConnectionLimit {
        &self.limit
    }
}

/// One login's Maildir++ tree, as a [`MailSession`].
pub struct MaildirSession {
    /// `root/<login>`: INBOX itself and the parent of every other folder.
    home: PathBuf,
    /// Folders scanned so far, by directory.
    folders: HashMap<PathBuf, FolderState>,
    selected: Option<SelectedFolder>,
    /// What each group of appends stored (its UIDs) or why it stored nothing, by the number in
    /// its ticket: a group is stored when sent, and its outcome read when finished.
    appends: HashMap<u64, Result<Vec<u32>>>,
    /// The number of the next ticket.
    next_ticket: u64,
}

struct SelectedFolder {
    dir: PathBuf,
    read_only: bool,
}

/// A refusal in the words a server would use (`<command> failed: <text>`).
fn refused(command: &str, text: impl Into<String>) -> Error {
    Error::No {
        command: command.to_owned(),
        code: None,
        text: text.into(),
    }
}

/// The UIDs as this store numbers them.
fn numbers(uids: &[Uid]) -> Vec<u32> {
    uids.iter().map(|u| u.get()).collect()
}

/// A UID of this store as the port takes it. No UID is 0 (RFC 3501 §2.3.1.1): the uidlist
/// refuses one when read and hands them out from N, which is at least 1.
fn typed(uid: u32) -> Option<Uid> {
    Uid::new(uid)
}

/// A folder's UIDVALIDITY as the port takes it: never 0, for the same reasons as [`typed`]
/// (a stored one is checked when read, a new one is at least 1).
fn validity(command: &str, state: &FolderState) -> Result<UidValidity> {
    UidValidity::new(state.validity)
        .ok_or_else(|| refused(command, "The folder's uidlist has UIDVALIDITY 0"))
}

/// Whether an error refused the command for good (as a server's NO or BAD does), rather than
/// breaking the session: the test the IMAP adapter applies to a refused MULTIAPPEND.
fn is_refusal(e: &Error) -> bool {
    matches!(e, Error::No { .. } | Error::Bad { .. }) && !e.is_transient()
}

/// Opens the tree of `login` under `root`. With `create` (a target) the tree is made when
/// missing; without it (a source) a missing tree is an error rather than an empty mailbox, so a
/// mistyped login is not migrated as "nothing to copy".
fn open(root: &Path, login: &str, create: bool) -> Result<MaildirSession> {
    if login.is_empty() || login == "." || login == ".." || login.contains(['/', '\0']) {
        return Err(refused(
            "LOGIN",
            format!("{login:?} cannot name a Maildir under {}", root.display()),
        ));
    }
    let home = root.join(login);
    if create {
        make_maildir(&home)?;
        // The login's directory is new in `root`; its entry must outlive a crash too.
        sync_dir(root)?;
    } else {
        match fs::metadata(&home) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(refused(
                    "LOGIN",
                    format!("{} is not a directory", home.display()),
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(refused(
                    "LOGIN",
                    format!("No Maildir for {login} under {}", root.display()),
                ));
            }
            Err(e) => return Err(io_err("read", &home)(e)),
        }
    }
    Ok(MaildirSession {
        home,
        folders: HashMap::new(),
        selected: None,
        appends: HashMap::new(),
        next_ticket: 0,
    })
}

impl MaildirSession {
    /// The directory of a raw folder name, which need not exist.
    fn folder_dir(&self, command: &str, raw: &str) -> Result<PathBuf> {
        if raw.eq_ignore_ascii_case(INBOX) {
            return Ok(self.home.clone());
        }
        // '/' would leave the tree; line breaks could not be written to the subscriptions.
        if raw.is_empty() || raw.contains(['/', '\0', '\n', '\r']) {
            return Err(refused(command, format!("Invalid mailbox name {raw:?}")));
        }
        Ok(self.home.join(format!(".{raw}")))
    }

    /// The directory of a folder that must exist.
    fn existing_folder(&self, command: &str, raw: &str) -> Result<PathBuf> {
        let dir = self.folder_dir(command, raw)?;
        if dir == self.home || dir.join("cur").is_dir() {
            return Ok(dir);
        }
        // TRYCREATE is what a server answers when creating the folder would help (RFC 3501).
        let code = if command == "APPEND" || command == "UID MOVE" {
            "TRYCREATE"
        } else {
            "NONEXISTENT"
        };
        Err(Error::No {
            command: command.to_owned(),
            code: Some(code.to_owned()),
            text: format!("Mailbox doesn't exist: {raw}"),
        })
    }

    fn selected_dir(&self, command: &str) -> Result<&SelectedFolder> {
        self.selected.as_ref().ok_or_else(|| Error::Bad {
            command: command.to_owned(),
            code: None,
            text: "No mailbox selected".to_owned(),
        })
    }

    fn writable_selected(&self, command: &str) -> Result<PathBuf> {
        let selected = self.selected_dir(command)?;
        if selected.read_only {
            return Err(refused(command, "Mailbox is open read-only"));
        }
        Ok(selected.dir.clone())
    }

    /// The folder as last scanned in this session, scanning it the first time.
    fn state(&mut self, dir: &Path) -> Result<&mut FolderState> {
        match self.folders.entry(dir.to_path_buf()) {
            Entry::Occupied(o) => Ok(o.into_mut()),
            Entry::Vacant(v) => Ok(v.insert(sync(dir)?)),
        }
    }

    /// The folder as it is on disk now.
    fn resync(&mut self, dir: &Path) -> Result<&mut FolderState> {
        let state = sync(dir)?;
        Ok(self.put(dir, state))
    }

    fn put(&mut self, dir: &Path, state: FolderState) -> &mut FolderState {
        match self.folders.entry(dir.to_path_buf()) {
            Entry::Occupied(mut o) => {
                o.insert(state);
                o.into_mut()
            }
            Entry::Vacant(v) => v.insert(state),
        }
    }

    /// The folder, for a change made under its lock: the cached state when the uidlist is
    /// still the one this session last read or wrote, rescanned when another session changed
    /// it. Files other programs delivered meanwhile are numbered by the next scan, after
    /// whatever this change adds. The keywords are always read again: they are small, and
    /// another session may have added one.
    fn current_locked(&mut self, dir: &Path) -> Result<&mut FolderState> {
        let stamp = Stamp::of(&dir.join(UIDLIST))?;
        let fresh = self
            .folders
            .get(dir)
            .is_some_and(|s| s.persisted && s.stamp.is_some() && s.stamp == stamp);
        let state = match (fresh, self.folders.entry(dir.to_path_buf())) {
            (true, Entry::Occupied(o)) => o.into_mut(),
            (_, Entry::Occupied(mut o)) => {
                o.insert(sync_locked(dir)?);
                o.into_mut()
            }
            (_, Entry::Vacant(v)) => v.insert(sync_locked(dir)?),
        };
        state.keywords = Keywords::read(dir)?;
        Ok(state)
    }

    /// Opens a message's file. Another program may have renamed it (a flag change) since the
    /// last scan, so a missing file is looked for once more after a rescan; `None` means it is
    /// gone, as an expunged message is.
    fn open_message(&mut self, dir: &Path, uid: u32) -> Result<Option<File>> {
        for attempt in 0..2 {
            let state = if attempt == 0 {
                self.state(dir)?
            } else {
                self.resync(dir)?
            };
            let Some(message) = state.get(uid) else {
                return Ok(None);
            };
            let path = message.path(dir);
            match File::open(&path) {
                Ok(file) => return Ok(Some(file)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("open", &path)(e)),
            }
        }
        Ok(None)
    }

    /// Opens a message's file and reads its flags; `None` if it is gone.
    fn open_flagged(&mut self, dir: &Path, uid: u32) -> Result<Option<(File, Flags, PathBuf)>> {
        let Some(file) = self.open_message(dir, uid)? else {
            return Ok(None);
        };
        let state = self.state(dir)?;
        let Some(message) = state.get(uid) else {
            return Ok(None);
        };
        let flags = flags_of(&message.name, &state.keywords);
        Ok(Some((file, flags, message.path(dir))))
    }

    fn scan_one(&mut self, dir: &Path, uid: u32) -> Result<Option<ScannedMessage>> {
        let Some((file, flags, path)) = self.open_flagged(dir, uid)? else {
            return Ok(None);
        };
        // The file holds exactly the message, so its length is the size: no body is read.
        let size = file.metadata().map_err(io_err("read", &path))?.len();
        Ok(typed(uid).map(|uid| ScannedMessage { uid, flags, size }))
    }

    fn fetch_one(&mut self, dir: &Path, number: u32) -> Result<Option<FetchedMessage>> {
        let Some(uid) = typed(number) else {
            return Ok(None);
        };
        let Some((mut file, flags, path)) = self.open_flagged(dir, number)? else {
            return Ok(None);
        };
        let meta = file.metadata().map_err(io_err("read", &path))?;
        let mtime = meta.modified().map_err(io_err("read", &path))?;
        // One message at a time: the engine's fetch batches bound what is held.
        let mut body = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut body).map_err(io_err("read", &path))?;
        Ok(Some(FetchedMessage {
            uid,
            flags,
            internal_date: Some(internal_date(mtime)),
            body: with_crlf(body),
        }))
    }

    /// Stores messages in one folder, all or none (MULTIAPPEND's promise, RFC 3502).
    ///
    /// Crash safety: the engine has committed its intents before calling, and records the
    /// UIDs returned as copied. So every file is fsynced, renamed into `cur/` and `cur/` fsynced
    /// before its UID is written (and fsynced) to the uidlist, and only then returned. A crash
    /// in between leaves a file that the next scan numbers anew, which the engine's
    /// reconciliation then finds by its fingerprint.
    fn store_messages(&mut self, mailbox: &str, messages: &[Outgoing<'_>]) -> Result<Vec<u32>> {
        const COMMAND: &str = "APPEND";
        let dir = self.existing_folder(COMMAND, mailbox)?;
        // Everything that can refuse a message is checked before the first byte is written.
        let mut dates = Vec::with_capacity(messages.len());
        for m in messages {
            let date = match m.internal_date {
                Some(text) => Some(
                    parse_internal_date(text)
                        .ok_or_else(|| refused(COMMAND, format!("Invalid date-time {text:?}")))?,
                ),
                None => None,
            };
            dates.push(date);
        }
        let _lock = FolderLock::acquire(&dir)?;
        let state = self.current_locked(&dir)?;
        let mut keywords = state.keywords.clone();
        let mut letters = Vec::with_capacity(messages.len());
        for m in messages {
            letters.push(letters_for(m.flags, &mut keywords, COMMAND)?);
        }
        // A keyword's name is durable before any file carries its letter.
        if keywords != state.keywords {
            keywords.write(&dir)?;
            state.keywords = keywords;
        }
        let mut names = Vec::with_capacity(messages.len());
        for ((m, date), letters) in messages.iter().zip(&dates).zip(&letters) {
            match deliver(&dir, m.body, letters, *date) {
                Ok(name) => names.push(name),
                Err(e) => {
                    for name in &names {
                        let _ = fs::remove_file(dir.join("cur").join(name));
                    }
                    return Err(e);
                }
            }
        }
        sync_dir(&dir.join("cur"))?;
        let mut added = Vec::with_capacity(names.len());
        for name in names {
            let uid = state.take_uid(COMMAND)?;
            added.push(Message::new(uid, name, false));
        }
        let uids: Vec<u32> = added.iter().map(|m| m.uid).collect();
        state.messages.extend(added.iter().cloned());
        append_uidlist(&dir, state, &added)?;
        state.stamp = Stamp::of(&dir.join(UIDLIST))?;
        Ok(uids)
    }

    /// A MOVE within one folder: the message gets the next UID, as on a server.
    fn renumber(&mut self, dir: &Path, uid: u32) -> Result<Option<u32>> {
        let _lock = FolderLock::acquire(dir)?;
        let state = self.current_locked(dir)?;
        let Some(index) = state.index_of(uid) else {
            return Ok(None);
        };
        let mut message = state.messages.remove(index);
        message.uid = state.take_uid("UID MOVE")?;
        let new_uid = message.uid;
        state.messages.push(message);
        write_uidlist(dir, state).map_err(io_err("write", &dir.join(UIDLIST)))?;
        state.stamp = Stamp::of(&dir.join(UIDLIST))?;
        Ok(Some(new_uid))
    }

    fn change_subscription(&mut self, raw: &str, subscribed: bool) -> Result<()> {
        let command = if subscribed {
            "SUBSCRIBE"
        } else {
            "UNSUBSCRIBE"
        };
        self.folder_dir(command, raw)?;
        let raw = if raw.eq_ignore_ascii_case(INBOX) {
            INBOX
        } else {
            raw
        };
        // INBOX's lock also guards the subscriptions file of the login.
        let _lock = FolderLock::acquire(&self.home)?;
        let mut subscriptions = Subscriptions::read(&self.home)?;
        let listed = subscriptions.names.iter().any(|name| name == raw);
        if listed == subscribed {
            return Ok(());
        }
        if subscribed {
            subscriptions.names.push(raw.to_owned());
        } else {
            subscriptions.names.retain(|name| name != raw);
        }
        subscriptions.write(&self.home)
    }

    /// Moves one message of the selected folder; its new UID, or `None` if it is gone.
    fn move_one(&mut self, uid: u32, to: &str) -> Result<Option<u32>> {
        const COMMAND: &str = "UID MOVE";
        let dir = self.writable_selected(COMMAND)?;
        let to_dir = self.existing_folder(COMMAND, to)?;
        if to_dir == dir {
            return self.renumber(&dir, uid);
        }
        for attempt in 0..2 {
            // The source is read without its lock, and the target locked alone below: one
            // lock at a time, so two sessions moving in opposite directions cannot deadlock.
            let source = if attempt == 0 {
                self.state(&dir)?
            } else {
                self.resync(&dir)?
            };
            let Some(message) = source.get(uid).cloned() else {
                return Ok(None);
            };
            let flags = flags_of(&message.name, &source.keywords);
            let new_uid = {
                // Held from before the file arrives until its line is written, so no scan
                // numbers it as a newcomer in between.
                let _lock = FolderLock::acquire(&to_dir)?;
                let target = self.current_locked(&to_dir)?;
                // Keyword letters index each folder's own dovecot-keywords, so they are
                // spelled anew for the target; a keyword it has no room for refuses the move.
                let mut keywords = target.keywords.clone();
                let letters = letters_for(&flags, &mut keywords, COMMAND)?;
                if keywords != target.keywords {
                    keywords.write(&to_dir)?;
                    target.keywords = keywords;
                }
                let mut name = message.with_flags(&letters);
                let from = message.path(&dir);
                // The same unique name in both folders (a copy made by another tool) would be
                // overwritten by the rename; the moved file takes a new one instead.
                if fs::symlink_metadata(to_dir.join("cur").join(&name)).is_ok() {
                    let size = fs::metadata(&from).map_or(0, |m| m.len());
                    name = format!("{}{}", unique_base(size), &name[message.base_len..]);
                }
                let dest = to_dir.join("cur").join(&name);
                match fs::rename(&from, &dest) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("rename", &from)(e)),
                }
                sync_dir(&to_dir.join("cur"))?;
                if let Some(parent) = from.parent() {
                    sync_dir(parent)?;
                }
                let moved = Message::new(target.take_uid(COMMAND)?, name, false);
                target.messages.push(moved.clone());
                append_uidlist(&to_dir, target, std::slice::from_ref(&moved))?;
                target.stamp = Stamp::of(&to_dir.join(UIDLIST))?;
                moved.uid
            };
            // The source list is rewritten, not left to the next scan: should the same file
            // come back to this folder, a stale line would hand it its old UID again.
            let _lock = FolderLock::acquire(&dir)?;
            let source = self.current_locked(&dir)?;
            if let Some(index) = source.index_of(uid) {
                source.messages.remove(index);
            }
            if source.persisted {
                write_uidlist(&dir, source).map_err(io_err("write", &dir.join(UIDLIST)))?;
                source.stamp = Stamp::of(&dir.join(UIDLIST))?;
            }
            return Ok(Some(new_uid));
        }
        Ok(None)
    }

    /// The folder tree: INBOX, then every `.<name>` directory with a `cur/`.
    fn tree(&mut self) -> Result<FolderTree> {
        let subscriptions = Subscriptions::read(&self.home)?;
        let subscribed: HashSet<&str> = subscriptions.names.iter().map(String::as_str).collect();
        let mut raws = Vec::new();
        let entries = fs::read_dir(&self.home).map_err(io_err("read", &self.home))?;
        for entry in entries {
            let entry = entry.map_err(io_err("read", &self.home))?;
            // A name that is not UTF-8 cannot be an IMAP name; Dovecot would not list it either.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some(raw) = name.strip_prefix('.') else {
                continue;
            };
            // `.` and `..`, and a `.INBOX` that would shadow INBOX. Dot files (our temporary
            // files) fail the `cur/` test below.
            if raw.is_empty() || raw == "." || raw.eq_ignore_ascii_case(INBOX) {
                continue;
            }
            if entry.path().join("cur").is_dir() {
                raws.push(raw.to_owned());
            }
        }
        raws.sort();
        let folders = std::iter::once(INBOX.to_owned())
            .chain(raws)
            .map(|raw| ServerFolder {
                subscribed: subscribed.contains(raw.as_str()),
                raw_name: raw,
                delimiter: Some(DELIMITER),
                attributes: Vec::new(),
            })
            .collect();
        let namespace = Namespace {
            prefix: String::new(),
            delimiter: Some(DELIMITER),
        };
        Ok(FolderTree::from_list(&namespace, folders))
    }

    fn create(&mut self, raw: &str) -> Result<Created> {
        let dir = self.folder_dir("CREATE", raw)?;
        if dir == self.home {
            // INBOX is the login's own directory, there since `open`; only a subdirectory
            // can be missing.
            make_maildir(&dir)?;
            return Ok(Created::Existed);
        }
        if dir.join("cur").is_dir() {
            // Made meanwhile by another pass, or by another session on the same tree.
            return Ok(Created::Existed);
        }
        make_maildir(&dir)?;
        let mark = dir.join(SUBFOLDER_MARK);
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&mark)
            .map_err(io_err("create", &mark))?;
        sync_dir(&dir)?;
        // The folder's own entry must be durable before messages stored in it are reported.
        sync_dir(&self.home)?;
        Ok(Created::New)
    }

    fn folder_status(&mut self, raw: &str) -> Result<FolderStatus> {
        let dir = self.existing_folder("STATUS", raw)?;
        let state = self.resync(&dir)?;
        Ok(FolderStatus {
            messages: state.exists(),
            uid_validity: validity("STATUS", state)?,
            uid_next: state.next,
            highest_modseq: None,
        })
    }

    fn select_folder(&mut self, raw: &str, write: bool) -> Result<Selected> {
        let command = if write { "SELECT" } else { "EXAMINE" };
        // A failed select leaves no folder selected, as on a server.
        self.selected = None;
        let dir = self.existing_folder(command, raw)?;
        let state = self.resync(&dir)?;
        let selected = Selected {
            exists: state.exists(),
            uid_validity: validity(command, state)?,
        };
        self.selected = Some(SelectedFolder {
            dir,
            read_only: !write,
        });
        Ok(selected)
    }

    fn search(&mut self, since: Option<&Date>, until: Option<&Date>) -> Result<Vec<u32>> {
        const COMMAND: &str = "UID SEARCH";
        let dir = self.selected_dir(COMMAND)?.dir.clone();
        let day = |date: &Date| {
            NaiveDate::from_ymd_opt(date.year, date.month, date.day).ok_or_else(|| Error::Bad {
                command: COMMAND.to_owned(),
                code: None,
                text: format!("Invalid date {:?}", date.to_string()),
            })
        };
        let since = since.map(day).transpose()?;
        let until = until.map(day).transpose()?;
        let uids: Vec<u32> = self.resync(&dir)?.messages.iter().map(|m| m.uid).collect();
        let mut found = Vec::new();
        for uid in uids {
            let Some(file) = self.open_message(&dir, uid)? else {
                continue;
            };
            let mtime = file
                .metadata()
                .and_then(|meta| meta.modified())
                .map_err(io_err("read", &dir))?;
            // SINCE and BEFORE compare dates only, in the server's zone (RFC 3501 §6.4.4),
            // which here is UTC like the INTERNALDATE reported.
            let day = DateTime::<Utc>::from(mtime).date_naive();
            if since.is_none_or(|s| day >= s) && until.is_none_or(|u| day < u) {
                found.push(uid);
            }
        }
        Ok(found)
    }

    fn scan_from(&mut self, from: u32, each: &mut dyn FnMut(ScannedMessage)) -> Result<()> {
        let dir = self.selected_dir("UID FETCH")?.dir.clone();
        let uids: Vec<u32> = self
            .resync(&dir)?
            .messages
            .iter()
            .map(|m| m.uid)
            .filter(|&uid| uid >= from)
            .collect();
        for uid in uids {
            if let Some(message) = self.scan_one(&dir, uid)? {
                each(message);
            }
        }
        Ok(())
    }

    /// Fetches in UID order, whatever the order asked, as a server answers; `Break` when
    /// `each` stopped it.
    fn fetch_uids(
        &mut self,
        uids: &[u32],
        each: &mut dyn FnMut(FetchedMessage) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>> {
        let dir = self.selected_dir("UID FETCH")?.dir.clone();
        let wanted: HashSet<u32> = uids.iter().copied().collect();
        let picked: Vec<u32> = self
            .resync(&dir)?
            .messages
            .iter()
            .map(|m| m.uid)
            .filter(|uid| wanted.contains(uid))
            .collect();
        for uid in picked {
            if let Some(message) = self.fetch_one(&dir, uid)?
                && each(message).is_break()
            {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Sets exactly these flags on these messages of the selected folder.
    fn store_flags(&mut self, uids: &[u32], flags: &Flags) -> Result<()> {
        const COMMAND: &str = "UID STORE";
        let dir = self.writable_selected(COMMAND)?;
        let letters = {
            let _lock = FolderLock::acquire(&dir)?;
            let state = self.current_locked(&dir)?;
            let mut keywords = state.keywords.clone();
            let letters = letters_for(flags, &mut keywords, COMMAND)?;
            if keywords != state.keywords {
                keywords.write(&dir)?;
                state.keywords = keywords;
            }
            letters
        };
        let (mut renamed, mut left_new) = (false, false);
        for &uid in uids {
            for attempt in 0..2 {
                // A file renamed by another program since the scan is found by a rescan.
                let state = if attempt == 0 {
                    self.state(&dir)?
                } else {
                    self.resync(&dir)?
                };
                let Some(index) = state.index_of(uid) else {
                    break;
                };
                let message = &mut state.messages[index];
                let name = message.with_flags(&letters);
                if !message.in_new && name == message.name {
                    break;
                }
                // Flags live only in `cur/` (the Maildir rule), so a flagged `new/` file moves.
                let from = message.path(&dir);
                let to = dir.join("cur").join(&name);
                match fs::rename(&from, &to) {
                    Ok(()) => {
                        renamed = true;
                        left_new |= message.in_new;
                        message.name = name;
                        message.in_new = false;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("rename", &from)(e)),
                }
            }
        }
        if renamed {
            sync_dir(&dir.join("cur"))?;
        }
        if left_new {
            sync_dir(&dir.join("new"))?;
        }
        Ok(())
    }

    fn move_all(&mut self, uids: &[u32], to: &str) -> Result<Vec<(u32, u32)>> {
        let mut moved = Vec::with_capacity(uids.len());
        for &uid in uids {
            if let Some(new) = self.move_one(uid, to)? {
                moved.push((uid, new));
            }
        }
        Ok(moved)
    }

    /// Stores messages one at a time, as one APPEND each would: an outcome per message,
    /// ending at the first that broke rather than was refused.
    fn store_each(&mut self, folder: &str, messages: &[Outgoing<'_>]) -> Vec<AppendOutcome> {
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            match self.store_messages(folder, std::slice::from_ref(m)) {
                Ok(uids) => out.push(AppendOutcome::Stored(uids.first().copied().and_then(typed))),
                Err(e) if is_refusal(&e) => out.push(AppendOutcome::Refused(e.to_string())),
                Err(e) => {
                    out.push(AppendOutcome::Lost(session_error(e)));
                    break;
                }
            }
        }
        out
    }
}

impl MailSession for MaildirSession {
    fn folders(&mut self) -> PortResult<FolderTree> {
        self.tree().map_err(session_error)
    }

    fn create_folder(&mut self, raw: &str) -> PortResult<Created> {
        self.create(raw).map_err(session_error)
    }

    fn set_subscribed(&mut self, raw: &str, subscribed: bool) -> PortResult<()> {
        self.change_subscription(raw, subscribed)
            .map_err(session_error)
    }

    fn status(&mut self, raw: &str) -> PortResult<FolderStatus> {
        self.folder_status(raw).map_err(session_error)
    }

    fn select(&mut self, raw: &str, write: bool) -> PortResult<Selected> {
        self.select_folder(raw, write).map_err(session_error)
    }

    fn search_dates(&mut self, since: Option<&Date>, until: Option<&Date>) -> PortResult<Vec<Uid>> {
        let uids = self.search(since, until).map_err(session_error)?;
        Ok(uids.into_iter().filter_map(typed).collect())
    }

    fn scan(&mut self, from: Uid, each: &mut dyn FnMut(ScannedMessage)) -> PortResult<()> {
        self.scan_from(from.get(), each).map_err(session_error)
    }

    fn fetch(
        &mut self,
        uids: &[Uid],
        each: &mut dyn FnMut(FetchedMessage) -> ControlFlow<()>,
    ) -> PortResult<()> {
        match self
            .fetch_uids(&numbers(uids), each)
            .map_err(session_error)?
        {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(()) => Err(SessionError::new(SessionErrorKind::Aborted, STOPPED)),
        }
    }

    fn set_flags(&mut self, uids: &[Uid], flags: &Flags) -> PortResult<()> {
        self.store_flags(&numbers(uids), flags)
            .map_err(session_error)
    }

    fn move_to(&mut self, uids: &[Uid], to: &str) -> PortResult<Vec<(Uid, Uid)>> {
        let pairs = self.move_all(&numbers(uids), to).map_err(session_error)?;
        Ok(pairs
            .into_iter()
            .filter_map(|(old, new)| Some((typed(old)?, typed(new)?)))
            .collect())
    }

    fn send_appends(
        &mut self,
        folder: &str,
        messages: &[Outgoing<'_>],
    ) -> PortResult<AppendTicket> {
        // Stored now, all or none; the outcome is reported by finish_appends, where a
        // server's answer would come.
        let stored = self.store_messages(folder, messages);
        let number = self.next_ticket;
        self.next_ticket = number.wrapping_add(1);
        self.appends.insert(number, stored);
        Ok(AppendTicket {
            folder: folder.to_owned(),
            count: messages.len(),
            handle: vec![number.to_string()],
            atomic: true,
        })
    }

    fn finish_appends(
        &mut self,
        ticket: AppendTicket,
        messages: &[Outgoing<'_>],
    ) -> PortResult<Vec<AppendOutcome>> {
        let stored = ticket
            .handle
            .first()
            .and_then(|number| number.parse::<u64>().ok())
            .and_then(|number| self.appends.remove(&number));
        let Some(stored) = stored else {
            return Err(session_error(Error::Bad {
                command: "APPEND".to_owned(),
                code: None,
                text: format!("Unknown append ticket {:?}", ticket.handle),
            }));
        };
        match stored {
            Ok(uids) => Ok(uids
                .into_iter()
                .map(|uid| AppendOutcome::Stored(typed(uid)))
                .collect()),
            // All or nothing, as MULTIAPPEND (RFC 3502): one refused message refused the
            // group, so they are stored one by one to find it and keep the others. Their
            // intents are still pending, so a crash meanwhile is reconciled as any other.
            Err(e) if is_refusal(&e) => Ok(self.store_each(&ticket.folder, messages)),
            Err(e) => Err(session_error(e)),
        }
    }

    /// Nothing to close: every change is on disk by the time it is reported.
    fn logout(self: Box<Self>) {}
}

/// The message with a CR before every LF that lacks one (see "Line ends" above); returned as
/// it is, without a copy, when it has none.
fn with_crlf(body: Vec<u8>) -> Vec<u8> {
    let bare = |i: usize, b: u8| b == b'\n' && (i == 0 || body[i - 1] != b'\r');
    let count = body
        .iter()
        .enumerate()
        .filter(|&(i, &b)| bare(i, b))
        .count();
    if count == 0 {
        return body;
    }
    let mut out = Vec::with_capacity(body.len() + count);
    for (i, &b) in body.iter().enumerate() {
        if bare(i, b) {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// An APPEND date-time (`17-Jul-1996 02:44:25 -0700`, the day possibly space-padded).
fn parse_internal_date(text: &str) -> Option<SystemTime> {
    DateTime::parse_from_str(text.trim(), INTERNALDATE_FORMAT)
        .ok()
        .map(SystemTime::from)
}

fn internal_date(time: SystemTime) -> String {
    DateTime::<Utc>::from(time)
        .format(INTERNALDATE_FORMAT)
        .to_string()
}

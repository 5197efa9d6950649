//! A mailbox stored as a Maildir++ tree, spoken to as if it were an IMAP server.
//!
//! `kind = "maildir"` lets either side of a migration be a directory instead of a server: an
//! export to copy from, or a tree for Dovecot or Courier to serve later. The engine only speaks
//! [`MailSession`], whose model is IMAP's, so this module emulates the IMAP behaviour the engine
//! relies on: UIDs that stay put across runs, UIDVALIDITY, flags and keywords, INTERNALDATE,
//! APPENDUID, MOVE, and an APPEND that is durable once it is reported.
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
//! - Messages: one file each, named `<unique>:2,<info>`. The info letters are the flags
//!   (`D` \Draft, `F` \Flagged, `R` \Answered, `S` \Seen, `T` \Deleted) and, in lower case, the
//!   keywords, in ASCII order. Letters this module does not know (`P`, passed) are kept.
//! - `dovecot-keywords` in a folder: `<index> <keyword>` per line, index 0 being the letter `a`;
//!   Dovecot's own file, so its keywords survive in both directions. A folder holds at most 26.
//! - `mailferry-uidlist` in a folder: Maildir has no UIDs, so they are kept here. The first line
//!   is `V<uidvalidity> N<uidnext>`, then `<uid> <unique>` per message, ascending. UIDVALIDITY is
//!   the time the list was made. On every SELECT, STATUS and FETCH the folder is rescanned:
//!   files the list lacks (delivered by another program) get the next UIDs in order of mtime
//!   then name, and lines whose file is gone are dropped; UIDs are never reused.
//! - `subscriptions` in `root/<login>/`: one raw name per line, or Dovecot's version 2 format
//!   (`V\t2` header, levels separated by tabs), which is kept when found.
//!
//! INTERNALDATE is the file's mtime: an APPEND sets it from the date given, and a FETCH reports
//! it in UTC (`+0000`). The instant survives to the second; the zone the source gave does not.
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

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, Utc};
use mailferry_imap::{AppendRequest, Error, Fetch, FolderStatus, Result, Selected, Value};

use crate::folders::{FolderTree, Namespace, ServerFolder};
use crate::session::{MailSession, refused};

const INBOX: &str = "INBOX";
const DELIMITER: char = '.';
const UIDLIST: &str = "mailferry-uidlist";
const UIDLIST_LOCK: &str = "mailferry-uidlist.lock";
const KEYWORDS: &str = "dovecot-keywords";
const SUBSCRIPTIONS: &str = "subscriptions";
/// Courier and Dovecot mark a Maildir++ subfolder with this empty file.
const SUBFOLDER_MARK: &str = "maildirfolder";
const SUBSCRIPTIONS_V2: &str = "V\t2\n\n";
/// Letters `a` to `z`.
const MAX_KEYWORDS: usize = 26;
const CAPABILITIES: [&str; 4] = ["MULTIAPPEND", "LITERAL+", "UIDPLUS", "MOVE"];
const SYSTEM_FLAGS: [(char, &str); 5] = [
    ('D', "\\Draft"),
    ('F', "\\Flagged"),
    ('R', "\\Answered"),
    ('S', "\\Seen"),
    ('T', "\\Deleted"),
];
const INTERNALDATE_FORMAT: &str = "%d-%b-%Y %H:%M:%S %z";

/// Makes every file name this process writes unique, across all its sessions.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// One login's Maildir++ tree, as a [`MailSession`].
pub struct MaildirSession {
    /// `root/<login>`: INBOX itself and the parent of every other folder.
    home: PathBuf,
    /// Folders scanned so far, by directory.
    folders: HashMap<PathBuf, FolderState>,
    selected: Option<SelectedFolder>,
    /// What each APPEND tag stored: UIDVALIDITY and UIDs, or why it stored nothing.
    appends: HashMap<String, Result<(u32, Vec<u32>)>>,
    next_tag: u64,
}

struct SelectedFolder {
    dir: PathBuf,
    read_only: bool,
}

/// Opens the tree of `login` under `root`. With `create` (a target) the tree is made when
/// missing; without it (a source) a missing tree is an error rather than an empty mailbox, so a
/// mistyped login is not migrated as "nothing to copy".
pub fn open(root: &Path, login: &str, create: bool) -> Result<MaildirSession> {
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
        next_tag: 0,
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

    fn fetch_one(&mut self, dir: &Path, seq: u32, uid: u32, want: &Items) -> Result<Option<Fetch>> {
        let file = if want.size || want.date || want.body {
            match self.open_message(dir, uid)? {
                Some(file) => Some(file),
                None => return Ok(None),
            }
        } else {
            None
        };
        let state = self.state(dir)?;
        let Some(message) = state.get(uid) else {
            return Ok(None);
        };
        let mut items = vec![("UID".to_owned(), Value::Atom(uid.to_string()))];
        if want.flags {
            items.push((
                "FLAGS".to_owned(),
                Value::List(flags_of(&message.name, &state.keywords)),
            ));
        }
        let Some(mut file) = file else {
            return Ok(Some(Fetch { seq, items }));
        };
        let path = message.path(dir);
        let meta = file.metadata().map_err(io_err("read", &path))?;
        let body = if want.body {
            // One message at a time: the engine's fetch batches bound what is held.
            let mut body = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
            file.read_to_end(&mut body).map_err(io_err("read", &path))?;
            Some(body)
        } else {
            None
        };
        if want.size {
            let size = body.as_ref().map_or(meta.len(), |b| b.len() as u64);
            items.push(("RFC822.SIZE".to_owned(), Value::Atom(size.to_string())));
        }
        if want.date {
            let mtime = meta.modified().map_err(io_err("read", &path))?;
            items.push((
                "INTERNALDATE".to_owned(),
                Value::String(internal_date(mtime).into_bytes()),
            ));
        }
        if let Some(body) = body {
            items.push(("BODY[]".to_owned(), Value::String(body)));
        }
        Ok(Some(Fetch { seq, items }))
    }

    /// Stores messages in one folder, all or none (MULTIAPPEND's promise, RFC 3502).
    ///
    /// Crash safety: the engine has committed its intents before calling, and records the
    /// UIDs returned as copied. So every file is fsynced, renamed into `cur/` and `cur/` fsynced
    /// before its UID is written (and fsynced) to the uidlist, and only then returned. A crash
    /// in between leaves a file that the next scan numbers anew, which the engine's
    /// reconciliation then finds by its fingerprint.
    fn store_messages(
        &mut self,
        mailbox: &str,
        reqs: &[AppendRequest<'_>],
    ) -> Result<(u32, Vec<u32>)> {
        const COMMAND: &str = "APPEND";
        let dir = self.existing_folder(COMMAND, mailbox)?;
        // Everything that can refuse a message is checked before the first byte is written.
        let mut dates = Vec::with_capacity(reqs.len());
        for req in reqs {
            let date = match req.date {
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
        let mut letters = Vec::with_capacity(reqs.len());
        for req in reqs {
            let flags: Vec<&str> = req.flags.iter().map(String::as_str).collect();
            letters.push(letters_for(&flags, &mut keywords, COMMAND)?);
        }
        // A keyword's name is durable before any file carries its letter.
        if keywords != state.keywords {
            keywords.write(&dir)?;
            state.keywords = keywords;
        }
        let mut names = Vec::with_capacity(reqs.len());
        for ((req, date), letters) in reqs.iter().zip(&dates).zip(&letters) {
            match deliver(&dir, req.message, letters, *date) {
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
        let uids = added.iter().map(|m| m.uid).collect();
        state.messages.extend(added.iter().cloned());
        append_uidlist(&dir, state, &added)?;
        state.stamp = Stamp::of(&dir.join(UIDLIST))?;
        Ok((state.validity, uids))
    }

    fn remember(&mut self, outcome: Result<(u32, Vec<u32>)>) -> String {
        self.next_tag += 1;
        let tag = format!("md{}", self.next_tag);
        self.appends.insert(tag.clone(), outcome);
        tag
    }

    fn outcome(&mut self, tag: &str) -> Result<(u32, Vec<u32>)> {
        self.appends.remove(tag).unwrap_or_else(|| {
            Err(Error::Bad {
                command: "APPEND".to_owned(),
                code: None,
                text: format!("Unknown tag {tag}"),
            })
        })
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

    fn set_subscribed(&mut self, raw: &str, subscribed: bool) -> Result<()> {
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
            let flags: Vec<String> = flags_of(&message.name, &source.keywords)
                .iter()
                .filter_map(Value::as_text)
                .collect();
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
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
}

impl MailSession for MaildirSession {
    fn has(&self, capability: &str) -> bool {
        CAPABILITIES
            .iter()
            .any(|c| c.eq_ignore_ascii_case(capability))
    }

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

    fn create(&mut self, raw: &str) -> Result<()> {
        let dir = self.folder_dir("CREATE", raw)?;
        if dir == self.home {
            return make_maildir(&dir);
        }
        if dir.join("cur").is_dir() {
            return Err(Error::No {
                command: "CREATE".to_owned(),
                code: Some("ALREADYEXISTS".to_owned()),
                text: format!("Mailbox already exists: {raw}"),
            });
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
        sync_dir(&self.home)
    }

    fn subscribe(&mut self, raw: &str) -> Result<()> {
        self.set_subscribed(raw, true)
    }

    fn unsubscribe(&mut self, raw: &str) -> Result<()> {
        self.set_subscribed(raw, false)
    }

    fn status(&mut self, raw: &str) -> Result<FolderStatus> {
        let dir = self.existing_folder("STATUS", raw)?;
        let state = self.resync(&dir)?;
        Ok(FolderStatus {
            messages: state.exists(),
            uid_validity: state.validity,
            uid_next: state.next,
            highest_modseq: None,
        })
    }

    fn select(&mut self, raw: &str, read_only: bool) -> Result<Selected> {
        let command = if read_only { "EXAMINE" } else { "SELECT" };
        // A failed SELECT leaves no folder selected, as on a server.
        self.selected = None;
        let dir = self.existing_folder(command, raw)?;
        let state = self.resync(&dir)?;
        let selected = Selected {
            name: raw.to_owned(),
            exists: state.exists(),
            uid_validity: state.validity,
            uid_next: Some(state.next),
            highest_modseq: None,
            read_only,
        };
        self.selected = Some(SelectedFolder { dir, read_only });
        Ok(selected)
    }

    fn uids_in_range(&mut self, since: Option<&str>, until: Option<&str>) -> Result<Vec<u32>> {
        const COMMAND: &str = "UID SEARCH";
        let dir = self.selected_dir(COMMAND)?.dir.clone();
        let since = since.map(|d| parse_search_date(d, COMMAND)).transpose()?;
        let until = until.map(|d| parse_search_date(d, COMMAND)).transpose()?;
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

    fn uid_fetch(
        &mut self,
        set: &str,
        items: &str,
        each: &mut dyn FnMut(Fetch) -> Result<()>,
    ) -> Result<()> {
        const COMMAND: &str = "UID FETCH";
        let dir = self.selected_dir(COMMAND)?.dir.clone();
        let ranges = parse_uid_set(set).ok_or_else(|| Error::Bad {
            command: COMMAND.to_owned(),
            code: None,
            text: format!("Invalid UID set {set:?}"),
        })?;
        let want = Items::parse(items);
        let state = self.resync(&dir)?;
        let highest = state.messages.last().map_or(0, |m| m.uid);
        let picked: Vec<(u32, u32)> = (1..)
            .zip(&state.messages)
            .filter(|(_, m)| ranges.contains(m.uid, highest))
            .map(|(seq, m)| (seq, m.uid))
            .collect();
        for (seq, uid) in picked {
            if let Some(fetch) = self.fetch_one(&dir, seq, uid, &want)? {
                each(fetch)?;
            }
        }
        Ok(())
    }

    fn store_flags(&mut self, uids: &[u32], flags: &str) -> Result<()> {
        const COMMAND: &str = "UID STORE";
        let dir = self.writable_selected(COMMAND)?;
        let flags: Vec<&str> = flags
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split_whitespace()
            .collect();
        let letters = {
            let _lock = FolderLock::acquire(&dir)?;
            let state = self.current_locked(&dir)?;
            let mut keywords = state.keywords.clone();
            let letters = letters_for(&flags, &mut keywords, COMMAND)?;
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

    fn uid_move(&mut self, uids: &[u32], to: &str) -> Result<Vec<(u32, u32)>> {
        let mut moved = Vec::with_capacity(uids.len());
        for &uid in uids {
            if let Some(new) = self.move_one(uid, to)? {
                moved.push((uid, new));
            }
        }
        Ok(moved)
    }

    fn append_send(&mut self, req: &AppendRequest<'_>) -> Result<String> {
        // Stored now; a refusal is reported by append_finish, where a server's NO would come.
        let outcome = self.store_messages(req.mailbox, std::slice::from_ref(req));
        Ok(self.remember(outcome))
    }

    fn append_finish(&mut self, tag: &str) -> Result<Option<(u32, u32)>> {
        let (validity, uids) = self.outcome(tag)?;
        Ok(uids.first().map(|&uid| (validity, uid)))
    }

    fn multiappend_send(&mut self, mailbox: &str, reqs: &[AppendRequest<'_>]) -> Result<String> {
        let outcome = self.store_messages(mailbox, reqs);
        Ok(self.remember(outcome))
    }

    fn multiappend_finish(&mut self, tag: &str, count: usize) -> Result<Option<Vec<u32>>> {
        let (_, uids) = self.outcome(tag)?;
        Ok((uids.len() == count).then_some(uids))
    }

    fn logout(self: Box<Self>) {}
}

/// One folder's messages with their UIDs, as of its last scan.
struct FolderState {
    validity: u32,
    next: u32,
    /// Ascending by UID.
    messages: Vec<Message>,
    keywords: Keywords,
    /// False when the uidlist could not be written (a read-only source): the UIDs are then
    /// derived from the files on every scan.
    persisted: bool,
    /// The uidlist as this session last read or wrote it.
    stamp: Option<Stamp>,
}

impl FolderState {
    fn index_of(&self, uid: u32) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    fn get(&self, uid: u32) -> Option<&Message> {
        self.index_of(uid).map(|i| &self.messages[i])
    }

    fn exists(&self) -> u32 {
        u32::try_from(self.messages.len()).unwrap_or(u32::MAX)
    }

    fn take_uid(&mut self, command: &str) -> Result<u32> {
        let uid = self.next;
        self.next = uid
            .checked_add(1)
            .ok_or_else(|| refused(command, "The folder has used up its UIDs"))?;
        Ok(uid)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    uid: u32,
    /// The file name in `cur/` or `new/`.
    name: String,
    /// Length of the unique part, before the last ':' (Dovecot splits there too).
    base_len: usize,
    in_new: bool,
}

impl Message {
    fn new(uid: u32, name: String, in_new: bool) -> Message {
        let base_len = name.rfind(':').unwrap_or(name.len());
        Message {
            uid,
            name,
            base_len,
            in_new,
        }
    }

    fn base(&self) -> &str {
        &self.name[..self.base_len]
    }

    fn path(&self, dir: &Path) -> PathBuf {
        dir.join(if self.in_new { "new" } else { "cur" })
            .join(&self.name)
    }

    /// Its name with exactly these flag and keyword letters. Other letters of a `2,` info are
    /// kept, as is a second flag set after a ','; an info of another version is replaced,
    /// as Dovecot does.
    fn with_flags(&self, letters: &str) -> String {
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

/// FETCH FLAGS of a file name. A keyword letter without a name in `dovecot-keywords` means
/// nothing anyone can read, so it is left out.
fn flags_of(name: &str, keywords: &Keywords) -> Vec<Value> {
    info_letters(name)
        .chars()
        .filter_map(|c| {
            SYSTEM_FLAGS
                .iter()
                .find(|&&(letter, _)| letter == c)
                .map(|&(_, flag)| flag.to_owned())
                .or_else(|| keywords.name_of(c).map(str::to_owned))
        })
        .map(Value::Atom)
        .collect()
}

/// The Maildir letters for IMAP flags, sorted, allocating keyword letters in `keywords`.
fn letters_for(flags: &[&str], keywords: &mut Keywords, command: &str) -> Result<String> {
    let mut letters = Vec::new();
    for &flag in flags {
        if flag.eq_ignore_ascii_case("\\Recent") {
            // The server's own, never stored (RFC 3501 §2.3.2).
            continue;
        }
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
        if flag.is_empty() || flag.chars().any(|c| c.is_whitespace() || c.is_control()) {
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

/// Dovecot's `dovecot-keywords`: keyword names by letter index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Keywords {
    names: Vec<Option<String>>,
}

impl Keywords {
    fn read(dir: &Path) -> Result<Keywords> {
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

    fn write(&self, dir: &Path) -> Result<()> {
        let text: String = self
            .names
            .iter()
            .enumerate()
            .filter_map(|(index, name)| Some(format!("{index} {}\n", name.as_ref()?)))
            .collect();
        let path = dir.join(KEYWORDS);
        write_atomic(&path, text.as_bytes()).map_err(io_err("write", &path))
    }

    fn name_of(&self, letter: char) -> Option<&str> {
        let index = (letter as usize).checked_sub('a' as usize)?;
        self.names.get(index)?.as_deref()
    }

    /// The letter of a keyword, given the first free one if it has none. Keywords compare
    /// without case, as in Dovecot.
    fn letter(&mut self, name: &str) -> Option<char> {
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

/// The subscriptions file, in the version it was found in.
struct Subscriptions {
    version2: bool,
    names: Vec<String>,
}

impl Subscriptions {
    fn read(home: &Path) -> Result<Subscriptions> {
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

    fn write(&self, home: &Path) -> Result<()> {
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

/// The `items` of a UID FETCH that this backend answers.
struct Items {
    flags: bool,
    size: bool,
    date: bool,
    body: bool,
}

impl Items {
    fn parse(items: &str) -> Items {
        let items = items.to_ascii_uppercase();
        Items {
            flags: items.contains("FLAGS"),
            size: items.contains("RFC822.SIZE"),
            date: items.contains("INTERNALDATE"),
            body: items.contains("BODY.PEEK[]") || items.contains("BODY[]"),
        }
    }
}

/// A parsed UID set: ranges whose ends are `None` for `*`.
#[derive(Debug, PartialEq, Eq)]
struct UidSet(Vec<(Option<u32>, Option<u32>)>);

impl UidSet {
    /// Whether `uid` is in the set when the highest UID in the folder is `highest`. `*` is the
    /// highest UID and a range is unordered (RFC 3501 §6.4.8), so `n:*` with n past the end
    /// still holds the last message, as a server answers.
    fn contains(&self, uid: u32, highest: u32) -> bool {
        self.0.iter().any(|&(a, b)| {
            let (a, b) = (a.unwrap_or(highest), b.unwrap_or(highest));
            a.min(b) <= uid && uid <= a.max(b)
        })
    }
}

fn parse_uid_set(set: &str) -> Option<UidSet> {
    let bound = |text: &str| -> Option<Option<u32>> {
        if text == "*" {
            return Some(None);
        }
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        match text.parse::<u32>().ok()? {
            0 => None,
            n => Some(Some(n)),
        }
    };
    let mut ranges = Vec::new();
    for part in set.trim().split(',') {
        let range = match part.split_once(':') {
            Some((a, b)) => (bound(a)?, bound(b)?),
            None => {
                let n = bound(part)?;
                (n, n)
            }
        };
        ranges.push(range);
    }
    Some(UidSet(ranges))
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

/// A SEARCH date (`1-Jan-2020`).
fn parse_search_date(text: &str, command: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(text.trim(), "%d-%b-%Y").map_err(|_| Error::Bad {
        command: command.to_owned(),
        code: None,
        text: format!("Invalid date {text:?}"),
    })
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
fn sync(dir: &Path) -> Result<FolderState> {
    let _lock = FolderLock::acquire(dir)?;
    sync_locked(dir)
}

/// [`sync`] with the folder's lock already held.
fn sync_locked(dir: &Path) -> Result<FolderState> {
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
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> Result<Option<Stamp>> {
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

/// A folder's advisory lock (`flock`), released when dropped.
struct FolderLock {
    _file: Option<File>,
}

impl FolderLock {
    fn acquire(dir: &Path) -> Result<FolderLock> {
        let path = dir.join(UIDLIST_LOCK);
        let file = match OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(file) => file,
            // A read-only source: no session can change it, so there is nothing to exclude.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                return Ok(FolderLock { _file: None });
            }
            Err(e) => return Err(io_err("lock", &path)(e)),
        };
        file.lock().map_err(io_err("lock", &path))?;
        Ok(FolderLock { _file: Some(file) })
    }
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

fn write_uidlist(dir: &Path, state: &FolderState) -> io::Result<()> {
    let mut text = format!("V{} N{}\n", state.validity, state.next);
    for message in &state.messages {
        text.push_str(&format!("{} {}\n", message.uid, message.base()));
    }
    write_atomic(&dir.join(UIDLIST), text.as_bytes())
}

/// Records new messages (already in `state`) in the uidlist. Lines are appended, not the file
/// rewritten, so storing a message costs the same in a folder of a hundred thousand.
fn append_uidlist(dir: &Path, state: &FolderState, added: &[Message]) -> Result<()> {
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

/// `<secs>.M<micros>P<pid>Q<counter>.mailferry,S=<size>`: the Maildir unique name, with the
/// size where Dovecot looks for it.
fn unique_base(size: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}.mailferry,S={size}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes one message into `tmp/`, makes it durable, and renames it into `cur/` (the Maildir
/// delivery protocol: no reader ever sees half a message). Returns its name in `cur/`.
fn deliver(dir: &Path, message: &[u8], letters: &str, date: Option<SystemTime>) -> Result<String> {
    let base = unique_base(message.len() as u64);
    let tmp = dir.join("tmp").join(&base);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    let written = file
        .write_all(message)
        // After the last write, which would move the mtime again.
        .and_then(|()| date.map_or(Ok(()), |t| file.set_modified(t)))
        .and_then(|()| file.sync_all());
    drop(file);
    let name = format!("{base}:2,{letters}");
    let dest = dir.join("cur").join(&name);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, &dest)) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("store", &dest)(e));
    }
    Ok(name)
}

/// Creates `cur/`, `new/` and `tmp/` as needed, durably.
fn make_maildir(dir: &Path) -> Result<()> {
    for sub in ["cur", "new", "tmp"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(io_err("create", &path))?;
    }
    sync_dir(dir)
}

/// Replaces a file's contents in one step: a reader sees the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot file, so neither a Maildir reader nor the folder listing takes it for anything.
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path))
        .and_then(|()| sync_dir_io(dir));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a directory's entries (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    sync_dir_io(dir).map_err(io_err("sync", dir))
}

fn sync_dir_io(dir: &Path) -> io::Result<()> {
    // Only Unix lets a directory be opened and fsynced.
    if cfg!(unix) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// An I/O error with what was being done to which path.
fn io_err(action: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let context = format!("Cannot {action} {}", path.display());
    move |e| Error::Io(io::Error::new(e.kind(), format!("{context}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::folders::{FolderPath, SpecialUse};

    fn target(root: &Path) -> MaildirSession {
        open(root, "alice", true).expect("open")
    }

    fn request<'a>(
        mailbox: &'a str,
        flags: &'a [String],
        date: Option<&'a str>,
        message: &'a [u8],
    ) -> AppendRequest<'a> {
        AppendRequest {
            mailbox,
            flags,
            date,
            message,
        }
    }

    fn strings(flags: &[&str]) -> Vec<String> {
        flags.iter().map(|f| (*f).to_owned()).collect()
    }

    /// APPENDs one message and returns its UID.
    fn append(s: &mut MaildirSession, mailbox: &str, flags: &[&str], message: &[u8]) -> u32 {
        append_dated(s, mailbox, flags, None, message)
    }

    fn append_dated(
        s: &mut MaildirSession,
        mailbox: &str,
        flags: &[&str],
        date: Option<&str>,
        message: &[u8],
    ) -> u32 {
        let flags = strings(flags);
        let tag = s
            .append_send(&request(mailbox, &flags, date, message))
            .expect("send");
        s.append_finish(&tag).expect("finish").expect("APPENDUID").1
    }

    fn fetch(s: &mut MaildirSession, set: &str, items: &str) -> Vec<Fetch> {
        let mut out = Vec::new();
        s.uid_fetch(set, items, &mut |f| {
            out.push(f);
            Ok(())
        })
        .expect("fetch");
        out
    }

    fn uids(fetches: &[Fetch]) -> Vec<u32> {
        fetches.iter().map(|f| f.uid().expect("UID")).collect()
    }

    fn body(f: &mut Fetch) -> Vec<u8> {
        f.take("BODY[]")
            .and_then(Value::into_bytes)
            .expect("BODY[]")
    }

    fn text(f: &Fetch, item: &str) -> String {
        f.get(item).and_then(Value::as_text).expect(item)
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        names
    }

    const MESSAGES: [&[u8]; 5] = [
        b"Subject: crlf\r\n\r\nBody\r\n",
        b"Subject: bare lf\n\nline one\nline two\n",
        b"Subject: bare cr\r\rold Mac\r",
        b"Subject: 8bit\r\n\r\n\xc3\xbc \xff\x00\x80 end",
        b"",
    ];

    #[test]
    fn appended_messages_come_back_byte_for_byte() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        let (first, rest) = MESSAGES.split_at(2);
        for m in first {
            append(&mut s, "INBOX", &[], m);
        }
        let flags = Vec::new();
        let reqs: Vec<AppendRequest<'_>> = rest
            .iter()
            .map(|m| request("INBOX", &flags, None, m))
            .collect();
        let tag = s.multiappend_send("INBOX", &reqs).expect("send");
        assert_eq!(
            s.multiappend_finish(&tag, 3).expect("finish"),
            Some(vec![3, 4, 5])
        );

        s.select("INBOX", true).expect("select");
        let mut fetched = fetch(
            &mut s,
            "1:*",
            "UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[]",
        );
        assert_eq!(uids(&fetched), [1, 2, 3, 4, 5]);
        for (f, m) in fetched.iter_mut().zip(MESSAGES) {
            assert_eq!(text(f, "RFC822.SIZE"), m.len().to_string());
            assert_eq!(body(f), m);
        }
        assert_eq!(
            fetched.iter().map(|f| f.seq).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn a_fetch_answers_only_the_items_asked_for() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        append(&mut s, "INBOX", &["\\Seen"], b"x");
        s.select("INBOX", true).expect("select");
        let names = |f: &Fetch| f.items.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        assert_eq!(names(&fetch(&mut s, "1:*", "UID")[0]), ["UID"]);
        assert_eq!(
            names(&fetch(&mut s, "1:*", "UID FLAGS RFC822.SIZE")[0]),
            ["UID", "FLAGS", "RFC822.SIZE"]
        );
        assert_eq!(
            names(&fetch(&mut s, "1", "UID FLAGS INTERNALDATE BODY.PEEK[]")[0]),
            ["UID", "FLAGS", "INTERNALDATE", "BODY[]"]
        );
    }

    #[test]
    fn flags_and_keywords_are_stored_as_dovecot_stores_them() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        let flags = ["\\Seen", "\\flagged", "$Label1", "NonJunk", "\\Recent"];
        let uid = append(&mut s, "INBOX", &flags, b"m");

        let cur = root.path().join("alice/cur");
        let names = files(&cur);
        assert_eq!(names.len(), 1);
        assert!(names[0].ends_with(":2,FSab"), "{}", names[0]);
        assert_eq!(
            fs::read_to_string(root.path().join("alice/dovecot-keywords")).expect("keywords"),
            "0 $Label1\n1 NonJunk\n"
        );

        s.select("INBOX", false).expect("select");
        let f = &fetch(&mut s, "1:*", "UID FLAGS")[0];
        assert_eq!(
            f.flags().expect("FLAGS"),
            ["\\Flagged", "\\Seen", "$Label1", "NonJunk"]
        );

        s.store_flags(&[uid], "\\Answered nonjunk $Forwarded")
            .expect("store");
        assert!(files(&cur)[0].ends_with(":2,Rbc"), "{:?}", files(&cur));
        let mut reopened = target(root.path());
        reopened.select("INBOX", true).expect("select");
        let f = &fetch(&mut reopened, "1:*", "UID FLAGS")[0];
        assert_eq!(
            f.flags().expect("FLAGS"),
            ["\\Answered", "NonJunk", "$Forwarded"]
        );
    }

    #[test]
    fn letters_this_module_does_not_know_survive_a_flag_change() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        let cur = root.path().join("alice/cur");
        fs::write(cur.join("1.M1P1.host:2,PS"), b"passed").expect("write");
        s.select("INBOX", false).expect("select");
        s.store_flags(&[1], "\\Flagged").expect("store");
        assert_eq!(files(&cur), ["1.M1P1.host:2,FP"]);
        let f = &fetch(&mut s, "1", "UID FLAGS")[0];
        assert_eq!(f.flags().expect("FLAGS"), ["\\Flagged"]);
    }

    #[test]
    fn a_twenty_seventh_keyword_is_refused_and_nothing_is_stored() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        let many: Vec<String> = (0..26).map(|i| format!("k{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        append(&mut s, "INBOX", &many, b"full");
        let flags = strings(&["one-too-many"]);
        let tag = s
            .append_send(&request("INBOX", &flags, None, b"refused"))
            .expect("send");
        let err = s.append_finish(&tag).expect_err("refused");
        assert!(matches!(err, Error::No { .. }), "{err}");
        assert!(err.to_string().contains("at most 26 keywords"), "{err}");
        assert_eq!(s.status("INBOX").expect("status").messages, 1);
    }

    #[test]
    fn internaldate_round_trips_to_the_second_in_utc() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        append_dated(
            &mut s,
            "INBOX",
            &[],
            Some("17-Jul-1996 02:44:25 -0700"),
            b"a",
        );
        append_dated(
            &mut s,
            "INBOX",
            &[],
            Some(" 2-Jan-2006 15:04:05 +0000"),
            b"b",
        );
        append_dated(
            &mut s,
            "INBOX",
            &[],
            Some("31-Dec-1969 23:59:59 +0000"),
            b"c",
        );
        s.select("INBOX", true).expect("select");
        let dates: Vec<String> = fetch(&mut s, "1:*", "UID INTERNALDATE")
            .iter()
            .map(|f| text(f, "INTERNALDATE"))
            .collect();
        assert_eq!(
            dates,
            [
                "17-Jul-1996 09:44:25 +0000",
                "02-Jan-2006 15:04:05 +0000",
                "31-Dec-1969 23:59:59 +0000"
            ]
        );
    }

    #[test]
    fn a_message_without_a_date_is_dated_now() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        append(&mut s, "INBOX", &[], b"now");
        s.select("INBOX", true).expect("select");
        let date = text(&fetch(&mut s, "1", "UID INTERNALDATE")[0], "INTERNALDATE");
        let parsed = parse_internal_date(&date).expect("date");
        let age = SystemTime::now()
            .duration_since(parsed)
            .expect("not in the future");
        assert!(age.as_secs() < 60, "{date}");
    }

    #[test]
    fn an_invalid_date_refuses_the_message() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        let tag = s
            .append_send(&request("INBOX", &[], Some("yesterday"), b"x"))
            .expect("send");
        let err = s.append_finish(&tag).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "APPEND failed: Invalid date-time \"yesterday\""
        );
        assert!(files(&root.path().join("alice/cur")).is_empty());
    }

    #[test]
    fn one_refused_message_refuses_the_whole_multiappend() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        let good = Vec::new();
        let bad = strings(&["\\Bogus"]);
        let reqs = [
            request("INBOX", &good, None, b"fine"),
            request("INBOX", &bad, None, b"not fine"),
        ];
        let tag = s.multiappend_send("INBOX", &reqs).expect("send");
        let err = s.multiappend_finish(&tag, 2).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "APPEND failed: Unknown system flag \\Bogus"
        );
        assert_eq!(s.status("INBOX").expect("status").messages, 0);
        assert!(files(&root.path().join("alice/cur")).is_empty());
    }

    #[test]
    fn uids_and_uidvalidity_survive_a_new_session() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        for m in [&b"one"[..], b"two", b"three"] {
            append(&mut s, "INBOX", &[], m);
        }
        let before = s.select("INBOX", true).expect("select");
        let bodies = |s: &mut MaildirSession| -> Vec<(u32, Vec<u8>)> {
            fetch(s, "1:*", "UID BODY.PEEK[]")
                .into_iter()
                .map(|mut f| (f.uid().expect("UID"), body(&mut f)))
                .collect()
        };
        let first = bodies(&mut s);
        drop(s);

        let mut again = open(root.path(), "alice", false).expect("open");
        let after = again.select("INBOX", true).expect("select");
        assert_eq!(after, before);
        assert_eq!(after.uid_next, Some(4));
        assert_eq!(bodies(&mut again), first);
    }

    #[test]
    fn a_file_delivered_by_another_program_gets_the_next_uid() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        append(&mut s, "INBOX", &[], b"ours");
        fs::write(
            root.path().join("alice/new/1700000000.M5P7.mx"),
            b"delivered",
        )
        .expect("deliver");

        let selected = s.select("INBOX", false).expect("select");
        assert_eq!((selected.exists, selected.uid_next), (2, Some(3)));
        let mut f = fetch(&mut s, "2", "UID FLAGS BODY.PEEK[]");
        assert_eq!(f[0].flags().expect("FLAGS"), Vec::<String>::new());
        assert_eq!(body(&mut f[0]), b"delivered");

        // Flagging moves it from new/ to cur/; it keeps its UID.
        s.store_flags(&[2], "\\Seen").expect("store");
        assert!(
            files(&root.path().join("alice/cur")).contains(&"1700000000.M5P7.mx:2,S".to_owned())
        );
        let mut again = target(root.path());
        again.select("INBOX", true).expect("select");
        let f = fetch(&mut again, "2", "UID FLAGS");
        assert_eq!(f[0].flags().expect("FLAGS"), ["\\Seen"]);
    }

    #[test]
    fn files_found_together_are_numbered_by_mtime_then_name() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        let new = root.path().join("alice/new");
        let at = |secs: u64| UNIX_EPOCH + std::time::Duration::from_secs(secs);
        for (name, secs) in [("c", 100), ("b", 200), ("a", 200)] {
            let file = File::create(new.join(name)).expect("create");
            file.set_modified(at(secs)).expect("mtime");
        }
        s.select("INBOX", true).expect("select");
        let f = fetch(&mut s, "1:*", "UID BODY.PEEK[]");
        let order: Vec<u32> = uids(&f);
        assert_eq!(order, [1, 2, 3]);
        let lines =
            fs::read_to_string(root.path().join("alice/mailferry-uidlist")).expect("uidlist");
        let bases: Vec<&str> = lines.lines().skip(1).collect();
        assert_eq!(bases, ["1 c", "2 a", "3 b"]);
    }

    #[test]
    fn a_vanished_file_disappears_and_its_uid_is_not_reused() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        for m in [&b"one"[..], b"two", b"three"] {
            append(&mut s, "INBOX", &[], m);
        }
        let cur = root.path().join("alice/cur");
        let victim = files(&cur)
            .into_iter()
            .find(|name| fs::read(cur.join(name)).expect("read") == b"three")
            .expect("three");
        fs::remove_file(cur.join(victim)).expect("remove");

        let selected = s.select("INBOX", false).expect("select");
        assert_eq!((selected.exists, selected.uid_next), (2, Some(4)));
        assert_eq!(uids(&fetch(&mut s, "1:*", "UID")), [1, 2]);
        assert_eq!(append(&mut s, "INBOX", &[], b"four"), 4);
        let mut again = target(root.path());
        again.select("INBOX", true).expect("select");
        assert_eq!(uids(&fetch(&mut again, "1:*", "UID")), [1, 2, 4]);
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_dropped_and_its_file_renumbered() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        append(&mut s, "INBOX", &[], b"one");
        append(&mut s, "INBOX", &[], b"two");
        let list = root.path().join("alice/mailferry-uidlist");
        let text = fs::read_to_string(&list).expect("uidlist");
        fs::write(&list, &text[..text.len() - 3]).expect("truncate");

        let mut again = target(root.path());
        let selected = again.select("INBOX", true).expect("select");
        assert_eq!((selected.exists, selected.uid_next), (2, Some(3)));
        let mut f = fetch(&mut again, "2", "UID BODY.PEEK[]");
        assert_eq!(body(&mut f[0]), b"two");
        assert!(fs::read_to_string(&list).expect("uidlist").ends_with('\n'));
    }

    #[test]
    fn a_damaged_uidlist_is_reported_with_its_path() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        let list = root.path().join("alice/mailferry-uidlist");
        fs::write(&list, "garbage\n").expect("write");
        let err = s.select("INBOX", true).expect_err("damaged");
        assert!(
            err.to_string().contains(&list.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn uid_sets_follow_imap_semantics() {
        let set = |s: &str| parse_uid_set(s).expect(s);
        let picked = |s: &str, highest: u32| -> Vec<u32> {
            (1..=highest)
                .filter(|&u| set(s).contains(u, highest))
                .collect()
        };
        assert_eq!(picked("1:*", 5), [1, 2, 3, 4, 5]);
        assert_eq!(picked("2:3,5", 9), [2, 3, 5]);
        assert_eq!(picked("4:2", 9), [2, 3, 4]);
        assert_eq!(picked("*", 7), [7]);
        assert_eq!(picked("*:6", 7), [6, 7]);
        // `n:*` past the end is `*:n`: it still holds the highest message.
        assert_eq!(picked("12:*", 7), [7]);
        assert_eq!(picked("1:*", 0), Vec::<u32>::new());
        for bad in ["", "0", "1:0", "a", "1,,2", "1:", "-1", "+1"] {
            assert_eq!(parse_uid_set(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_fetch_past_the_end_returns_the_highest_message() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        for m in [&b"one"[..], b"two"] {
            append(&mut s, "INBOX", &[], m);
        }
        s.select("INBOX", true).expect("select");
        assert_eq!(uids(&fetch(&mut s, "10:*", "UID")), [2]);
        assert_eq!(uids(&fetch(&mut s, "2:*", "UID")), [2]);
        assert_eq!(uids(&fetch(&mut s, "3:9", "UID")), Vec::<u32>::new());
        let err = s
            .uid_fetch("x", "UID", &mut |_| Ok(()))
            .expect_err("bad set");
        assert!(matches!(err, Error::Bad { .. }), "{err}");
    }

    #[test]
    fn a_move_renames_the_file_and_numbers_it_in_the_other_folder() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        s.create("Archive").expect("create");
        // `a` already means another keyword there: the moved message's `$Work` becomes `b`.
        append(&mut s, "Archive", &["$Other"], b"already there");
        append_dated(
            &mut s,
            "INBOX",
            &["\\Seen", "$Work"],
            Some("01-Feb-2020 10:00:00 +0100"),
            b"to move",
        );
        append(&mut s, "INBOX", &[], b"stays");

        s.select("INBOX", false).expect("select");
        assert_eq!(s.uid_move(&[1], "Archive").expect("move"), vec![(1, 2)]);
        assert_eq!(uids(&fetch(&mut s, "1:*", "UID")), [2]);
        assert_eq!(s.uid_move(&[1], "Archive").expect("gone"), vec![]);

        let mut again = target(root.path());
        again.select("Archive", true).expect("select");
        let mut f = fetch(&mut again, "2", "UID FLAGS INTERNALDATE BODY.PEEK[]");
        assert_eq!(f[0].flags().expect("FLAGS"), ["\\Seen", "$Work"]);
        assert_eq!(text(&f[0], "INTERNALDATE"), "01-Feb-2020 09:00:00 +0000");
        assert_eq!(body(&mut f[0]), b"to move");
        let archive = root.path().join("alice/.Archive");
        assert_eq!(
            fs::read_to_string(archive.join("dovecot-keywords")).expect("keywords"),
            "0 $Other\n1 $Work\n"
        );
        assert!(
            files(&archive.join("cur"))
                .iter()
                .any(|n| n.ends_with(":2,Sb"))
        );
        again.select("INBOX", true).expect("select");
        assert_eq!(uids(&fetch(&mut again, "1:*", "UID")), [2]);
    }

    #[test]
    fn a_move_to_a_missing_folder_asks_for_it_to_be_created() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        append(&mut s, "INBOX", &[], b"x");
        s.select("INBOX", false).expect("select");
        let err = s.uid_move(&[1], "Nowhere").expect_err("missing");
        assert_eq!(err.code(), Some("TRYCREATE"));
        let flags = Vec::new();
        let tag = s
            .append_send(&request("Nowhere", &flags, None, b"y"))
            .expect("send");
        let err = s.append_finish(&tag).expect_err("missing");
        assert_eq!(err.code(), Some("TRYCREATE"));
    }

    #[test]
    fn a_read_only_folder_refuses_changes() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        append(&mut s, "INBOX", &[], b"x");
        s.select("INBOX", true).expect("examine");
        assert!(s.store_flags(&[1], "\\Seen").is_err());
        assert!(s.uid_move(&[1], "INBOX").is_err());
    }

    #[test]
    fn subscriptions_are_kept_in_dovecots_file() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        s.create("Archive").expect("create");
        s.create("Sent").expect("create");
        s.subscribe("inbox").expect("subscribe");
        s.subscribe("Archive").expect("subscribe");
        s.subscribe("Archive").expect("subscribe twice");
        let subscribed = |s: &mut MaildirSession| -> Vec<String> {
            s.tree()
                .expect("tree")
                .folders()
                .filter(|f| f.subscribed)
                .map(|f| f.path.to_string())
                .collect()
        };
        assert_eq!(subscribed(&mut s), ["INBOX", "Archive"]);
        let file = root.path().join("alice/subscriptions");
        assert_eq!(fs::read_to_string(&file).expect("read"), "INBOX\nArchive\n");
        s.unsubscribe("Archive").expect("unsubscribe");
        assert_eq!(subscribed(&mut s), ["INBOX"]);
        assert_eq!(fs::read_to_string(&file).expect("read"), "INBOX\n");
    }

    #[test]
    fn a_version_2_subscriptions_file_is_read_and_kept() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        s.create("Archive").expect("create");
        s.create("Archive.2024").expect("create");
        let file = root.path().join("alice/subscriptions");
        fs::write(&file, "V\t2\n\nINBOX\nArchive\t2024\n").expect("write");
        let subscribed: Vec<String> = s
            .tree()
            .expect("tree")
            .folders()
            .filter(|f| f.subscribed)
            .map(|f| f.path.to_string())
            .collect();
        assert_eq!(subscribed, ["INBOX", "Archive/2024"]);
        s.subscribe("Archive").expect("subscribe");
        assert_eq!(
            fs::read_to_string(&file).expect("read"),
            "V\t2\n\nINBOX\nArchive\t2024\nArchive\n"
        );
    }

    #[test]
    fn the_tree_decodes_maildir_plus_plus_names() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        for raw in [
            "Archive",
            "Archive.2024",
            "Junk.&ANw-berpr&APw-ft",
            "Sent",
            "Deep.Er",
        ] {
            s.create(raw).expect(raw);
        }
        let home = root.path().join("alice");
        // Not folders: a directory without cur/, a dot file, a plain directory.
        fs::create_dir(home.join(".Half")).expect("mkdir");
        fs::write(home.join(".hidden"), b"").expect("write");
        fs::create_dir(home.join("plain")).expect("mkdir");

        let tree = s.tree().expect("tree");
        let paths: Vec<String> = tree.folders().map(|f| f.path.to_string()).collect();
        assert_eq!(
            paths,
            [
                "INBOX",
                "Archive",
                "Archive/2024",
                "Deep/Er",
                "Junk/Überprüft",
                "Sent"
            ]
        );
        assert_eq!(
            tree.by_special_use(SpecialUse::Sent)
                .map(|f| f.raw_name.as_str()),
            Some("Sent")
        );
        // New names are spelled the Maildir++ way, and the dot in a level cannot split it.
        let new = FolderPath::new(["Projects", "v1.2", "Überprüft"]);
        let raw = tree.raw_name_for(&new);
        assert_eq!(raw, "Projects.v1_2.&ANw-berpr&APw-ft");
        s.create(&raw).expect("create");
        assert!(home.join(".Projects.v1_2.&ANw-berpr&APw-ft/cur").is_dir());
        assert!(
            home.join(".Projects.v1_2.&ANw-berpr&APw-ft/maildirfolder")
                .is_file()
        );
    }

    #[test]
    fn creating_an_existing_folder_says_so() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        s.create("Archive").expect("create");
        let err = s.create("Archive").expect_err("exists");
        assert_eq!(err.code(), Some("ALREADYEXISTS"));
        s.create("INBOX").expect("INBOX always exists");
        assert!(s.create("a/b").is_err());
    }

    #[test]
    fn a_missing_source_mailbox_is_an_error_naming_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let err = open(root.path(), "bob@example.com", false)
            .err()
            .expect("missing");
        assert_eq!(
            err.to_string(),
            format!(
                "LOGIN failed: No Maildir for bob@example.com under {}",
                root.path().display()
            )
        );
        assert!(!root.path().join("bob@example.com").exists());
        for login in ["", ".", "..", "a/b"] {
            assert!(open(root.path(), login, true).is_err(), "{login:?}");
        }
    }

    #[test]
    fn a_target_mailbox_is_created_with_its_parents() {
        let root = tempfile::tempdir().expect("tempdir");
        let deep = root.path().join("srv/mail");
        open(&deep, "carol", true).expect("open");
        for sub in ["cur", "new", "tmp"] {
            assert!(deep.join("carol").join(sub).is_dir(), "{sub}");
        }
        open(&deep, "carol", false).expect("now it exists");
    }

    #[test]
    fn status_counts_messages_and_a_missing_folder_is_nonexistent() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        let empty = s.status("INBOX").expect("status");
        assert_eq!((empty.messages, empty.uid_next), (0, 1));
        assert_ne!(empty.uid_validity, 0);
        assert_eq!(empty.highest_modseq, None);
        append(&mut s, "INBOX", &[], b"x");
        let one = s.status("INBOX").expect("status");
        assert_eq!(
            (one.messages, one.uid_next, one.uid_validity),
            (1, 2, empty.uid_validity)
        );
        let err = s.status("Nope").expect_err("missing");
        assert_eq!(err.code(), Some("NONEXISTENT"));
    }

    #[test]
    fn search_dates_compare_utc_days() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut s = target(root.path());
        for date in [
            "31-Dec-2019 23:59:59 +0000",
            "01-Jan-2020 00:30:00 +0100",
            "01-Jan-2020 00:00:00 +0000",
            "15-Jun-2020 12:00:00 +0000",
        ] {
            append_dated(&mut s, "INBOX", &[], Some(date), b"x");
        }
        s.select("INBOX", true).expect("select");
        assert_eq!(
            s.uids_in_range(Some("1-Jan-2020"), None).expect("since"),
            [3, 4]
        );
        assert_eq!(
            s.uids_in_range(None, Some("1-Jan-2020")).expect("before"),
            [1, 2]
        );
        assert_eq!(
            s.uids_in_range(Some("1-Jan-2020"), Some("15-Jun-2020"))
                .expect("between"),
            [3]
        );
        assert!(s.uids_in_range(Some("soon"), None).is_err());
    }

    #[test]
    fn the_capabilities_are_those_the_engine_uses() {
        let root = tempfile::tempdir().expect("tempdir");
        let s = target(root.path());
        for cap in ["MULTIAPPEND", "LITERAL+", "UIDPLUS", "MOVE", "move"] {
            assert!(s.has(cap), "{cap}");
        }
        for cap in ["CONDSTORE", "IDLE", "NAMESPACE"] {
            assert!(!s.has(cap), "{cap}");
        }
    }

    #[test]
    fn two_sessions_on_one_folder_never_hand_out_the_same_uid() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut one = target(root.path());
        let mut two = target(root.path());
        // Both have scanned the folder before either stores anything.
        one.status("INBOX").expect("status");
        two.status("INBOX").expect("status");
        assert_eq!(append(&mut one, "INBOX", &["$A"], b"one"), 1);
        assert_eq!(append(&mut two, "INBOX", &["$B"], b"two"), 2);
        assert_eq!(append(&mut one, "INBOX", &["$B"], b"three"), 3);
        assert_eq!(
            fs::read_to_string(root.path().join("alice/dovecot-keywords")).expect("keywords"),
            "0 $A\n1 $B\n"
        );
        let mut three = target(root.path());
        three.select("INBOX", true).expect("select");
        let flags: Vec<Vec<String>> = fetch(&mut three, "1:*", "UID FLAGS")
            .iter()
            .map(|f| f.flags().expect("FLAGS"))
            .collect();
        assert_eq!(flags, [["$A"], ["$B"], ["$B"]]);
    }

    #[test]
    fn sessions_appending_at_once_get_distinct_uids() {
        let root = tempfile::tempdir().expect("tempdir");
        let appended: Vec<u32> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..3)
                .map(|worker| {
                    let root = root.path();
                    scope.spawn(move || {
                        let mut s = target(root);
                        (0..40)
                            .map(|i| {
                                let message = format!("worker {worker} message {i}");
                                append(&mut s, "INBOX", &[], message.as_bytes())
                            })
                            .collect::<Vec<u32>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("worker"))
                .collect()
        });
        let mut sorted = appended.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=120).collect::<Vec<u32>>());
        let mut s = target(root.path());
        let selected = s.select("INBOX", true).expect("select");
        assert_eq!((selected.exists, selected.uid_next), (120, Some(121)));
    }

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

//! An in-memory mail server behind the session and connector ports, faithful to what the
//! engine relies on from IMAP: UIDs that only grow within a UIDVALIDITY, UIDNEXT, STATUS with
//! or without CONDSTORE's HIGHESTMODSEQ, read-only and read-write SELECT, UID MOVE with the
//! UIDs it assigns (RFC 6851 COPYUID), APPENDUID (RFC 4315), and RFC 3502 MULTIAPPEND's
//! all-or-nothing groups.
//!
//! A [`FakeMailbox`] is one account; a [`FakeConnector`] serves several, keyed by login, from
//! an `Arc<Mutex<…>>` the test keeps a handle on, so it can change the source between passes
//! and compare both sides afterwards. Faults are switches on the mailbox: refused messages,
//! a crash between APPEND and its OK, a connection that breaks every few messages, one-shot
//! errors, a refused login. Every command is counted, so a test can pin what a pass costs.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, MutexGuard};

use super::uid;
use crate::folders::{FolderTree, Namespace, ServerFolder};
use crate::job::Date;
use crate::model::{Flags, Uid, UidValidity};
use crate::ports::{
    AppendOutcome, AppendTicket, ConnectError, ConnectionLimit, Connector, Created, FetchTicket,
    FetchedMessage, FolderStatus, MailSession, Outgoing, Probe, ScanTicket, ScannedMessage,
    SelectTicket, Selected, SessionError, SessionErrorKind, TreeChange, UidRanges,
};

type Result<T> = std::result::Result<T, SessionError>;

const INBOX: &str = "INBOX";
/// The INTERNALDATE a message appended without one gets (a server would use "now"; a fixed
/// instant keeps comparisons exact).
const DEFAULT_DATE: &str = "01-Jan-2025 00:00:00 +0000";

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeMessage {
    pub uid: Uid,
    pub flags: Flags,
    /// INTERNALDATE in IMAP's form, `17-Jul-1996 02:44:25 -0700`.
    pub internal_date: String,
    pub body: Vec<u8>,
    /// The folder's mod-sequence when the message arrived or its flags last changed.
    pub modseq: u64,
}

#[derive(Debug, Clone)]
struct FakeFolder {
    name: String,
    attributes: Vec<String>,
    uid_validity: UidValidity,
    uid_next: u32,
    /// Grows with every change to the folder, as CONDSTORE's HIGHESTMODSEQ does.
    modseq: u64,
    /// By UID.
    messages: Vec<FakeMessage>,
    /// The UIDs expunged and the folder's mod-sequence then, as QRESYNC's server keeps them.
    expunged: Vec<(Uid, u64)>,
}

impl FakeFolder {
    fn store(&mut self, flags: Flags, internal_date: Option<&str>, body: &[u8]) -> Uid {
        let uid = uid(self.uid_next);
        self.uid_next += 1;
        self.modseq += 1;
        self.messages.push(FakeMessage {
            uid,
            flags,
            internal_date: internal_date.unwrap_or(DEFAULT_DATE).to_string(),
            body: body.to_vec(),
            modseq: self.modseq,
        });
        uid
    }

    /// Removes the messages `gone` picks, noting their UIDs as expunged now.
    fn expunge_where(&mut self, gone: impl Fn(&FakeMessage) -> bool) -> Vec<FakeMessage> {
        self.modseq += 1;
        let (out, kept) = std::mem::take(&mut self.messages)
            .into_iter()
            .partition::<Vec<_>, _>(|m| gone(m));
        self.messages = kept;
        let modseq = self.modseq;
        self.expunged.extend(out.iter().map(|m| (m.uid, modseq)));
        out
    }
}

/// Commands a one-shot fault ([`FakeMailbox::fail_next`]) can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Login,
    Status,
    Select,
    Scan,
    /// A scan of the messages changed since a mod-sequence (`CHANGEDSINCE`).
    ScanChanged,
    /// The folder's UIDs (`UID SEARCH ALL`).
    Uids,
    Fetch,
    Append,
    Move,
    Store,
}

/// Commands a mailbox has received, for tests that pin what a pass costs. A MULTIAPPEND is one
/// append command, however many messages it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub logins: u32,
    pub lists: u32,
    pub creates: u32,
    /// Batches of tree changes ([`MailSession::change_tree`]): one round trip each.
    pub tree_batches: u32,
    pub statuses: u32,
    /// Calls of [`MailSession::status_many`] that asked for at least one folder: one round
    /// trip each (their folders count in `statuses`).
    pub status_batches: u32,
    pub selects: u32,
    pub scans: u32,
    /// Scans of the messages changed since a mod-sequence.
    pub changed_scans: u32,
    /// Reads of a folder's UIDs.
    pub uid_lists: u32,
    pub fetches: u32,
    /// Fetches sent while the answers of an earlier one were still unread
    /// ([`MailSession::send_fetch`]): the next batch on its way while one is read.
    pub fetches_ahead: u32,
    /// Fetches sent behind a SELECT whose answer was still unread
    /// ([`MailSession::send_select`]): both in one round trip.
    pub fetches_behind_select: u32,
    /// Calls of [`MailSession::flush`]: commands sent ahead, to travel while the caller
    /// works on.
    pub flushes: u32,
    /// Scans sent with their folder's SELECT ([`MailSession::send_select_and_scan`]).
    pub select_scans: u32,
    /// Of those, the ones sent while another was unread: the scans of several folders on
    /// their way at once.
    pub scans_ahead: u32,
    pub flag_stores: u32,
    pub moves: u32,
    pub appends: u32,
    /// MULTIAPPEND groups refused as a whole.
    pub refused_groups: u32,
}

/// A session that dies between APPEND and its OK: of the messages it sends from login on, the
/// server stores the first `stored` (they were on the wire), and the client reads the OKs of
/// only the first `acknowledged` of them before the connection breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash {
    pub stored: usize,
    pub acknowledged: usize,
}

/// What a mail client does to an account between two logins
/// ([`FakeMailbox::move_before_login`], [`FakeMailbox::deliver_before_login`]).
#[derive(Debug, Clone)]
enum ClientAction {
    Move(String, Uid, String),
    Deliver(String, Vec<u8>),
}

/// One account: its folders (delimiter '/', personal namespace "", INBOX always there), its
/// subscriptions, what its server supports, its faults and its command counts.
#[derive(Debug, Clone)]
pub struct FakeMailbox {
    folders: Vec<FakeFolder>,
    subscriptions: BTreeSet<String>,
    next_uid_validity: u32,
    condstore: bool,
    qresync: bool,
    multiappend: bool,
    /// The folders whose STATUS comes with the tree (as with LIST-STATUS), by name.
    list_status: Option<fn(&str) -> bool>,
    refuse: Option<(Vec<u8>, String)>,
    login_refusal: Option<String>,
    crash: Option<Crash>,
    /// Every session breaks after fetching this many messages (a flaky network).
    break_every: Option<usize>,
    /// Scanned messages (UID, flags and size) each session may read before it breaks.
    break_scans_every: Option<usize>,
    /// What a mail client does just before the login with this number (counting from 1).
    at_login: Vec<(u32, ClientAction)>,
    /// Every session breaks once the bodies it has sent to APPEND would pass this many bytes
    /// (a link that drops every few megabytes).
    cut_uploads: Option<usize>,
    /// One-shot faults: the command, how many more of it run before it fails, the error.
    faults: VecDeque<(Op, u32, SessionError)>,
    counts: Counts,
}

impl Default for FakeMailbox {
    fn default() -> Self {
        FakeMailbox::new()
    }
}

impl FakeMailbox {
    /// An account with an empty, subscribed INBOX, on a server with CONDSTORE and MULTIAPPEND
    /// (as Dovecot and Cyrus have).
    pub fn new() -> FakeMailbox {
        let mut m = FakeMailbox {
            folders: Vec::new(),
            subscriptions: BTreeSet::new(),
            next_uid_validity: 1000,
            condstore: true,
            qresync: false,
            multiappend: true,
            list_status: None,
            refuse: None,
            login_refusal: None,
            crash: None,
            break_every: None,
            break_scans_every: None,
            at_login: Vec::new(),
            cut_uploads: None,
            faults: VecDeque::new(),
            counts: Counts::default(),
        };
        m.add_folder(INBOX);
        m
    }

    /// Whether STATUS reports HIGHESTMODSEQ.
    pub fn with_condstore(mut self, on: bool) -> FakeMailbox {
        self.condstore = on;
        self
    }

    /// Whether a delta scan also tells the UIDs expunged since (QRESYNC's `VANISHED`).
    pub fn with_qresync(mut self, on: bool) -> FakeMailbox {
        self.qresync = on;
        self
    }

    /// The tree brings the STATUS of the folders `listed` picks (a server with LIST-STATUS,
    /// RFC 5819); the others are asked for with STATUS.
    pub fn with_list_status(mut self, listed: fn(&str) -> bool) -> FakeMailbox {
        self.list_status = Some(listed);
        self
    }

    /// Whether a group of messages goes out as one all-or-nothing MULTIAPPEND; without it,
    /// one APPEND each.
    pub fn with_multiappend(mut self, on: bool) -> FakeMailbox {
        self.multiappend = on;
        self
    }

    fn status_of(f: &FakeFolder, condstore: bool) -> FolderStatus {
        FolderStatus {
            messages: f.messages.len() as u32,
            uid_validity: f.uid_validity,
            uid_next: f.uid_next,
            highest_modseq: condstore.then_some(f.modseq),
        }
    }

    /// Adds a subscribed folder with no special use.
    pub fn add_folder(&mut self, name: &str) {
        self.add_folder_with(name, &[], true);
    }

    /// Adds a folder with LIST attributes (`\Sent`, …), subscribed or not; nothing if it
    /// exists.
    pub fn add_folder_with(&mut self, name: &str, attributes: &[&str], subscribed: bool) {
        if self.index(name).is_none() {
            let uid_validity = self.fresh_uid_validity();
            self.folders.push(FakeFolder {
                name: name.to_string(),
                attributes: attributes.iter().map(|a| (*a).to_string()).collect(),
                uid_validity,
                uid_next: 1,
                modseq: 1,
                messages: Vec::new(),
                expunged: Vec::new(),
            });
        }
        if subscribed {
            self.subscriptions.insert(name.to_string());
        }
    }

    /// Delivers a message (as the MTA would); returns its UID.
    pub fn deliver(&mut self, folder: &str, body: &[u8], flags: &[&str], date: &str) -> Uid {
        self.folder_mut(folder)
            .store(Flags::from_server(flags), Some(date), body)
    }

    /// Sets a message's flags, as a mail client would.
    pub fn set_message_flags(&mut self, folder: &str, uid: Uid, flags: &[&str]) {
        let f = self.folder_mut(folder);
        f.modseq += 1;
        let modseq = f.modseq;
        if let Some(m) = f.messages.iter_mut().find(|m| m.uid == uid) {
            m.flags = Flags::from_server(flags);
            m.modseq = modseq;
        }
    }

    /// Moves a message to another folder, as a mail client would; returns its new UID.
    pub fn move_message(&mut self, from: &str, uid: Uid, to: &str) -> Uid {
        let m = self
            .folder_mut(from)
            .expunge_where(|m| m.uid == uid)
            .pop()
            .unwrap_or_else(|| panic!("no UID {uid} in {from}"));
        self.folder_mut(to)
            .store(m.flags, Some(&m.internal_date), &m.body)
    }

    /// Expunges a message, as a mail client would.
    pub fn expunge(&mut self, folder: &str, uid: Uid) {
        self.folder_mut(folder).expunge_where(|m| m.uid == uid);
    }

    /// Renames a folder, as a mail client would: its messages, UIDs and UIDVALIDITY go with it
    /// (RFC 3501 §6.3.5), and so does its subscription.
    pub fn rename_folder(&mut self, from: &str, to: &str) {
        assert!(self.index(to).is_none(), "{to} exists");
        self.folder_mut(from).name = to.to_string();
        if self.subscriptions.remove(from) {
            self.subscriptions.insert(to.to_string());
        }
    }

    /// Gives a folder a new UIDVALIDITY and renumbers its messages from 1, as a server does
    /// when its index is rebuilt.
    pub fn renumber(&mut self, folder: &str, uid_validity: u32) {
        let f = self.folder_mut(folder);
        f.uid_validity = UidValidity::new(uid_validity).expect("UIDVALIDITY is never 0");
        f.modseq += 1;
        f.expunged.clear();
        for (m, n) in f.messages.iter_mut().zip(1..) {
            m.uid = uid(n);
        }
        f.uid_next = f.messages.len() as u32 + 1;
    }

    /// Refuses every appended message whose body contains `marker`, with the server's `words`
    /// (what follows `NO` in its answer).
    pub fn refuse_bodies_containing(&mut self, marker: &[u8], words: &str) {
        self.refuse = Some((marker.to_vec(), words.to_string()));
    }

    /// Refuses every login to this account, with the server's words.
    pub fn refuse_login(&mut self, words: &str) {
        self.login_refusal = Some(words.to_string());
    }

    /// The next session opened crashes as [`Crash`] says; later sessions are healthy.
    pub fn crash_after(&mut self, stored: usize, acknowledged: usize) {
        self.crash = Some(Crash {
            stored,
            acknowledged: acknowledged.min(stored),
        });
    }

    /// Every session opened from now on (a flaky network) breaks once it has fetched
    /// `messages` messages: the next FETCH response is cut off with the connection.
    pub fn break_every(&mut self, messages: usize) {
        self.break_every = Some(messages);
    }

    /// Every session opened from now on breaks once it has read `messages` lines of scans (a
    /// message's UID, flags and size each): the scan response is cut off with the connection.
    pub fn break_scans_every(&mut self, messages: usize) {
        self.break_scans_every = Some(messages);
    }

    /// A mail client moves message `uid` from folder `from` to `to` just before the `login`th
    /// login from now on (counting from 1), as between two attempts of a pass.
    pub fn move_before_login(&mut self, login: u32, from: &str, uid: Uid, to: &str) {
        let action = ClientAction::Move(from.into(), uid, to.into());
        self.at_login.push((self.counts.logins + login, action));
    }

    /// A message is delivered to `folder` just before the `login`th login from now on.
    pub fn deliver_before_login(&mut self, login: u32, folder: &str, body: &[u8]) {
        let action = ClientAction::Deliver(folder.into(), body.to_vec());
        self.at_login.push((self.counts.logins + login, action));
    }

    /// Every session opened from now on breaks when the message bodies it has sent to APPEND
    /// would pass `bytes`: the APPEND (or the whole MULTIAPPEND) that crosses the mark never
    /// reaches the server, as when a link drops every few megabytes.
    pub fn cut_uploads_after(&mut self, bytes: usize) {
        self.cut_uploads = Some(bytes);
    }

    /// The next `op` on this account fails with `error`; a transient error also breaks the
    /// session it happens in, as a dropped connection does.
    pub fn fail_next(&mut self, op: Op, error: SessionError) {
        self.fail_nth(op, 1, error);
    }

    /// The `nth` `op` from now on this account (counting from 1) fails with `error`, as
    /// [`FakeMailbox::fail_next`] does.
    pub fn fail_nth(&mut self, op: Op, nth: u32, error: SessionError) {
        self.faults.push_back((op, nth.saturating_sub(1), error));
    }

    /// The messages of a folder, by UID.
    pub fn messages(&self, folder: &str) -> &[FakeMessage] {
        self.index(folder)
            .map_or(&[], |i| self.folders[i].messages.as_slice())
    }

    /// The folder names, INBOX first, then in creation order.
    pub fn folder_names(&self) -> Vec<String> {
        self.folders.iter().map(|f| f.name.clone()).collect()
    }

    pub fn is_subscribed(&self, folder: &str) -> bool {
        self.subscriptions.contains(folder)
    }

    pub fn uid_validity(&self, folder: &str) -> UidValidity {
        let i = self
            .index(folder)
            .unwrap_or_else(|| panic!("no folder {folder}"));
        self.folders[i].uid_validity
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    pub fn reset_counts(&mut self) {
        self.counts = Counts::default();
    }

    // ---- the server side

    fn fresh_uid_validity(&mut self) -> UidValidity {
        self.next_uid_validity += 1;
        UidValidity::new(self.next_uid_validity).expect("UIDVALIDITY counts up from 1000")
    }

    fn index(&self, name: &str) -> Option<usize> {
        // INBOX is case-insensitive (RFC 3501 §5.1); every other name is exact.
        let inbox = name.eq_ignore_ascii_case(INBOX);
        self.folders
            .iter()
            .position(|f| f.name == name || (inbox && f.name == INBOX))
    }

    fn folder_mut(&mut self, name: &str) -> &mut FakeFolder {
        let i = self
            .index(name)
            .unwrap_or_else(|| panic!("the fake mailbox has no folder {name}"));
        &mut self.folders[i]
    }

    fn existing(&mut self, name: &str) -> Result<&mut FakeFolder> {
        match self.index(name) {
            Some(i) => Ok(&mut self.folders[i]),
            None => Err(SessionError::refused(
                Some("NONEXISTENT"),
                format!("[NONEXISTENT] Mailbox doesn't exist: {name}"),
            )),
        }
    }

    /// The one-shot fault for this command, if one is due.
    fn fault(&mut self, op: Op) -> Option<SessionError> {
        let i = self.faults.iter().position(|(o, ..)| *o == op)?;
        match &mut self.faults[i] {
            (_, before, _) if *before > 0 => {
                *before -= 1;
                None
            }
            _ => self.faults.remove(i).map(|(.., e)| e),
        }
    }

    /// The server's refusal of this body, if it refuses it.
    fn refusal(&self, body: &[u8]) -> Option<String> {
        let (marker, words) = self.refuse.as_ref()?;
        let found = !marker.is_empty() && body.windows(marker.len()).any(|w| w == marker);
        found.then(|| words.clone())
    }
}

/// What the server did with one message of an APPEND, for the answer the client reads later.
#[derive(Debug, Clone)]
enum Answer {
    Stored(Uid),
    Refused(String),
    /// The connection broke before the server got it.
    Dropped,
    /// Its MULTIAPPEND group was refused as a whole.
    GroupRefused,
}

type Accounts = Arc<Mutex<BTreeMap<String, FakeMailbox>>>;

fn lock(accounts: &Accounts) -> MutexGuard<'_, BTreeMap<String, FakeMailbox>> {
    accounts.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fake server: accounts by login, shared with the test.
pub struct FakeConnector {
    name: String,
    accounts: Accounts,
    limit: ConnectionLimit,
}

impl FakeConnector {
    pub fn new(name: &str) -> FakeConnector {
        FakeConnector {
            name: name.to_string(),
            accounts: Arc::default(),
            limit: ConnectionLimit::new(8),
        }
    }

    /// Adds (or replaces) an account.
    pub fn add(&self, login: &str, mailbox: FakeMailbox) {
        lock(&self.accounts).insert(login.to_string(), mailbox);
    }

    /// Runs `f` on an account, to change it or look at it.
    pub fn with<R>(&self, login: &str, f: impl FnOnce(&mut FakeMailbox) -> R) -> R {
        let mut accounts = lock(&self.accounts);
        let mailbox = accounts
            .get_mut(login)
            .unwrap_or_else(|| panic!("{}: no account {login}", self.name));
        f(mailbox)
    }

    /// A copy of an account as it is now.
    pub fn snapshot(&self, login: &str) -> FakeMailbox {
        self.with(login, |m| m.clone())
    }
}

impl Connector for FakeConnector {
    fn describe(&self) -> String {
        format!("fake server {}", self.name)
    }

    fn probe(&self) -> Result<Probe> {
        Ok(Probe {
            detail: "capabilities: IMAP4rev1 UIDPLUS MOVE CONDSTORE MULTIAPPEND LITERAL+".into(),
            can_log_in: true,
        })
    }

    fn open(
        &self,
        login: &str,
        _own_password: Option<&str>,
    ) -> std::result::Result<Box<dyn MailSession>, ConnectError> {
        let mut accounts = lock(&self.accounts);
        let failed = || {
            SessionError::refused(
                Some("AUTHENTICATIONFAILED"),
                "[AUTHENTICATIONFAILED] Authentication failed.",
            )
        };
        let Some(mailbox) = accounts.get_mut(login) else {
            return Err(ConnectError::Login(failed()));
        };
        mailbox.counts.logins += 1;
        let now = mailbox.counts.logins;
        let (due, later) = std::mem::take(&mut mailbox.at_login)
            .into_iter()
            .partition(|(at, _)| *at == now);
        mailbox.at_login = later;
        for (_, action) in due {
            match action {
                ClientAction::Move(from, uid, to) => {
                    mailbox.move_message(&from, uid, &to);
                }
                ClientAction::Deliver(folder, body) => {
                    mailbox.deliver(&folder, &body, &[], "01-Mar-2024 09:15:00 +0100");
                }
            }
        }
        if let Some(e) = mailbox.fault(Op::Login) {
            return Err(if e.is_refusal() {
                ConnectError::Login(e)
            } else {
                ConnectError::Connect(e)
            });
        }
        if let Some(words) = &mailbox.login_refusal {
            return Err(ConnectError::Login(SessionError::refused(
                Some("AUTHENTICATIONFAILED"),
                words.clone(),
            )));
        }
        Ok(Box::new(FakeSession {
            accounts: self.accounts.clone(),
            login: login.to_string(),
            selected: None,
            broken: None,
            crash: mailbox.crash.take(),
            fetch_left: mailbox.break_every,
            scan_left: mailbox.break_scans_every,
            upload_left: mailbox.cut_uploads,
            sent: 0,
            acknowledged: 0,
            next_tag: 0,
            in_flight: BTreeMap::new(),
            unread: VecDeque::new(),
        }))
    }

    fn limit(&self) -> &ConnectionLimit {
        &self.limit
    }
}

/// One logged-in account of a [`FakeConnector`].
pub struct FakeSession {
    accounts: Accounts,
    login: String,
    /// The selected folder and whether it is read-write.
    selected: Option<(String, bool)>,
    /// Set once the connection is gone: every later command fails with it.
    broken: Option<SessionError>,
    crash: Option<Crash>,
    /// Messages this session may still fetch before its connection breaks.
    fetch_left: Option<usize>,
    /// Scanned messages this session may still read before its connection breaks.
    scan_left: Option<usize>,
    /// Bytes of bodies this session may still send before its connection breaks.
    upload_left: Option<usize>,
    /// Messages this session sent to the server, and OKs it read (for [`Crash`]).
    sent: usize,
    acknowledged: usize,
    next_tag: u32,
    /// Answers not read yet, by tag.
    in_flight: BTreeMap<String, (String, Vec<Answer>)>,
    /// Commands sent and not yet read, in the order they were sent.
    unread: VecDeque<Unread>,
}

/// A command a [`FakeSession`] was sent and has not answered yet.
#[derive(Debug, PartialEq, Eq)]
enum Unread {
    Select(String, bool),
    Scan(String),
    Fetch(Vec<Uid>),
}

fn connection_lost() -> SessionError {
    SessionError::new(
        SessionErrorKind::Transient,
        "Connection lost: the server closed the connection",
    )
}

/// One more message read on a session that breaks after `left` of them (`None`: never).
fn spend_one(left: &mut Option<usize>, broken: &mut Option<SessionError>) -> Result<()> {
    match left {
        Some(0) => {
            *broken = Some(connection_lost());
            Err(connection_lost())
        }
        Some(n) => {
            *n -= 1;
            Ok(())
        }
        None => Ok(()),
    }
}

impl FakeSession {
    /// Runs one command on the account: the broken session and the one-shot faults first.
    fn command<R>(
        &mut self,
        op: Option<Op>,
        f: impl FnOnce(&mut FakeMailbox) -> Result<R>,
    ) -> Result<R> {
        if let Some(e) = &self.broken {
            return Err(e.clone());
        }
        let mut accounts = lock(&self.accounts);
        let Some(mailbox) = accounts.get_mut(&self.login) else {
            return Err(SessionError::new(
                SessionErrorKind::Other,
                "the account is gone",
            ));
        };
        if let Some(e) = op.and_then(|op| mailbox.fault(op)) {
            if e.is_transient() {
                self.broken = Some(e.clone());
            }
            return Err(e);
        }
        f(mailbox)
    }

    /// SELECT as a server answers it when it gets to it.
    fn select_now(&mut self, raw: &str, write: bool) -> Result<Selected> {
        // A failed SELECT leaves no folder selected (RFC 3501 §6.3.1).
        self.selected = None;
        let selected = self.command(Some(Op::Select), |mb| {
            mb.counts.selects += 1;
            let f = mb.existing(raw)?;
            Ok((
                f.name.clone(),
                Selected {
                    exists: f.messages.len() as u32,
                    uid_validity: f.uid_validity,
                },
            ))
        })?;
        self.selected = Some((selected.0, write));
        Ok(selected.1)
    }

    /// The scan as a server answers it when it gets to it.
    fn scan_now(&mut self, from: Uid, each: &mut dyn FnMut(ScannedMessage)) -> Result<()> {
        let folder = self.selected(false)?;
        // Copied out first: `each` runs without the server's lock.
        let scanned = self.command(Some(Op::Scan), |mb| {
            mb.counts.scans += 1;
            let f = mb.existing(&folder)?;
            Ok(f.messages
                .iter()
                .filter(|m| m.uid >= from)
                .map(|m| ScannedMessage {
                    uid: m.uid,
                    flags: m.flags.clone(),
                    size: m.body.len() as u64,
                })
                .collect::<Vec<_>>())
        })?;
        for m in scanned {
            spend_one(&mut self.scan_left, &mut self.broken)?;
            each(m);
        }
        Ok(())
    }

    /// [`FakeSession::selected`] for a command sent on its own: it fails the test if answers
    /// of commands sent before are unread (a server would answer it after them, and they
    /// would read whatever folder it leaves selected).
    fn selected_in_step(&self, write: bool, command: &str) -> Result<String> {
        assert!(
            self.unread.is_empty(),
            "{command} sent while the answers of {:?} are unread",
            self.unread
        );
        self.selected(write)
    }

    fn selected(&self, write: bool) -> Result<String> {
        match &self.selected {
            None => Err(SessionError::refused(None, "BAD No mailbox selected")),
            Some((_, false)) if write => Err(SessionError::refused(
                Some("READ-ONLY"),
                "[READ-ONLY] Mailbox is read-only",
            )),
            Some((name, _)) => Ok(name.clone()),
        }
    }

    /// Whether the crash (or the cut) lets `n` more messages of `bytes` bytes in all reach
    /// the server; once it does not, the connection is gone.
    fn reaches_server(&mut self, n: usize, bytes: usize) -> bool {
        if self.broken.is_some() {
            return false;
        }
        if let Some(left) = &mut self.upload_left {
            if bytes > *left {
                self.broken = Some(connection_lost());
                return false;
            }
            *left -= bytes;
        }
        match self.crash {
            Some(c) if self.sent + n > c.stored => {
                self.broken = Some(connection_lost());
                false
            }
            _ => {
                self.sent += n;
                true
            }
        }
    }

    /// Stores messages one APPEND each; the answers, in order.
    fn append_each(&mut self, folder: &str, messages: &[Outgoing<'_>]) -> Result<Vec<Answer>> {
        let mut answers = Vec::with_capacity(messages.len());
        for m in messages {
            if !self.reaches_server(1, m.body.len()) {
                answers.push(Answer::Dropped);
                continue;
            }
            let answer = self.command(None, |mb| {
                mb.counts.appends += 1;
                if let Some(words) = mb.refusal(m.body) {
                    return Ok(Answer::Refused(words));
                }
                match mb.existing(folder) {
                    Ok(f) => Ok(Answer::Stored(f.store(
                        m.flags.clone(),
                        m.internal_date,
                        m.body,
                    ))),
                    Err(_) => Ok(Answer::Refused(format!(
                        "[TRYCREATE] Mailbox doesn't exist: {folder}"
                    ))),
                }
            });
            // The crash may have broken the session meanwhile: what reached the server stays.
            answers.push(answer.unwrap_or(Answer::Dropped));
        }
        Ok(answers)
    }

    /// Stores messages as one MULTIAPPEND: all of them, or none if one is refused.
    fn append_group(&mut self, folder: &str, messages: &[Outgoing<'_>]) -> Result<Vec<Answer>> {
        let bytes = messages.iter().map(|m| m.body.len()).sum();
        if !self.reaches_server(messages.len(), bytes) {
            return Ok(vec![Answer::Dropped; messages.len()]);
        }
        self.command(None, |mb| {
            mb.counts.appends += 1;
            if messages.iter().any(|m| mb.refusal(m.body).is_some()) {
                mb.counts.refused_groups += 1;
                return Ok(vec![Answer::GroupRefused; messages.len()]);
            }
            let f = match mb.existing(folder) {
                Ok(f) => f,
                Err(_) => {
                    let words = format!("[TRYCREATE] Mailbox doesn't exist: {folder}");
                    return Ok(vec![Answer::Refused(words); messages.len()]);
                }
            };
            Ok(messages
                .iter()
                .map(|m| Answer::Stored(f.store(m.flags.clone(), m.internal_date, m.body)))
                .collect())
        })
    }

    /// Reads answers in order, as far as the connection lasts.
    fn read_answers(&mut self, answers: Vec<Answer>) -> Vec<AppendOutcome> {
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            let cut = self
                .crash
                .is_some_and(|c| self.acknowledged >= c.acknowledged);
            if cut {
                self.broken = Some(connection_lost());
            }
            match answer {
                _ if cut => {
                    out.push(AppendOutcome::Lost(connection_lost()));
                    break;
                }
                Answer::Dropped => {
                    out.push(AppendOutcome::Lost(connection_lost()));
                    break;
                }
                Answer::Stored(uid) => {
                    self.acknowledged += 1;
                    out.push(AppendOutcome::Stored(Some(uid)));
                }
                Answer::Refused(words) => {
                    self.acknowledged += 1;
                    out.push(AppendOutcome::Refused(words));
                }
                // Only ever the whole group, handled by the caller.
                Answer::GroupRefused => {}
            }
        }
        out
    }
}

/// The date part of an INTERNALDATE (`17-Jul-1996 02:44:25 -0700`; the day may be
/// space-padded), which is what SEARCH SINCE and BEFORE compare (RFC 3501 §6.4.4).
fn internal_day(internal_date: &str) -> Option<Date> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = internal_date.trim().splitn(3, '-');
    let day = parts.next()?.trim().parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))? as u32
        + 1;
    let year = parts.next()?.get(..4)?.parse().ok()?;
    Date::new(year, month, day).ok()
}

impl MailSession for FakeSession {
    fn folders(&mut self) -> Result<FolderTree> {
        let listed = self.command(None, |mb| {
            mb.counts.lists += 1;
            Ok(mb
                .folders
                .iter()
                .map(|f| ServerFolder {
                    raw_name: f.name.clone(),
                    delimiter: Some('/'),
                    attributes: f.attributes.clone(),
                    subscribed: mb.subscriptions.contains(&f.name),
                })
                .collect::<Vec<_>>())
        })?;
        let namespace = Namespace {
            prefix: String::new(),
            delimiter: Some('/'),
        };
        Ok(FolderTree::from_list(&namespace, listed))
    }

    fn folders_and_statuses(&mut self) -> Result<(FolderTree, HashMap<String, FolderStatus>)> {
        let tree = self.folders()?;
        let statuses = self.command(None, |mb| {
            let Some(listed) = mb.list_status else {
                return Ok(HashMap::new());
            };
            Ok(mb
                .folders
                .iter()
                .filter(|f| listed(&f.name))
                .map(|f| (f.name.clone(), FakeMailbox::status_of(f, mb.condstore)))
                .collect())
        })?;
        Ok((tree, statuses))
    }

    fn create_folder(&mut self, raw: &str) -> Result<Created> {
        self.command(None, |mb| {
            mb.counts.creates += 1;
            if mb.index(raw).is_some() {
                return Ok(Created::Existed);
            }
            // CREATE does not subscribe (RFC 3501 §6.3.3).
            mb.add_folder_with(raw, &[], false);
            Ok(Created::New)
        })
    }

    /// As the port's default (one change after the other), counted as one batch.
    fn change_tree(&mut self, changes: &[TreeChange<'_>]) -> Result<()> {
        self.command(None, |mb| {
            mb.counts.tree_batches += 1;
            Ok(())
        })?;
        changes.iter().try_for_each(|change| change.make(self))
    }

    fn set_subscribed(&mut self, raw: &str, subscribed: bool) -> Result<()> {
        self.command(None, |mb| {
            if subscribed {
                mb.subscriptions.insert(raw.to_string());
            } else {
                mb.subscriptions.remove(raw);
            }
            Ok(())
        })
    }

    fn status(&mut self, raw: &str) -> Result<FolderStatus> {
        self.command(Some(Op::Status), |mb| {
            mb.counts.statuses += 1;
            let condstore = mb.condstore;
            Ok(FakeMailbox::status_of(mb.existing(raw)?, condstore))
        })
    }

    fn status_many(&mut self, raws: &[&str]) -> Result<Vec<FolderStatus>> {
        if !raws.is_empty() {
            self.command(None, |mb| {
                mb.counts.status_batches += 1;
                Ok(())
            })?;
        }
        raws.iter().map(|raw| self.status(raw)).collect()
    }

    fn select(&mut self, raw: &str, write: bool) -> Result<Selected> {
        assert!(
            self.unread.is_empty(),
            "SELECT {raw} sent while the answers of {:?} are unread: it would be answered \
             after them, and they would read the wrong folder",
            self.unread
        );
        self.select_now(raw, write)
    }

    /// Sent, not answered: the folder is selected when the answer is read, so a fetch sent
    /// behind it reads that folder, as a server runs commands in order.
    fn send_select(&mut self, raw: &str, write: bool) -> Result<SelectTicket> {
        self.unread
            .push_back(Unread::Select(raw.to_string(), write));
        Ok(SelectTicket {
            raw: raw.to_string(),
            write,
            handle: String::new(),
            answered: None,
        })
    }

    fn flush(&mut self) -> Result<()> {
        self.command(None, |mb| {
            mb.counts.flushes += 1;
            Ok(())
        })
    }

    fn finish_select(&mut self, ticket: SelectTicket) -> Result<Selected> {
        let first = self.unread.pop_front();
        assert_eq!(
            first,
            Some(Unread::Select(ticket.raw.clone(), ticket.write)),
            "commands are finished in the order they were sent"
        );
        self.select_now(&ticket.raw, ticket.write)
    }

    fn send_select_and_scan(&mut self, raw: &str) -> Result<ScanTicket> {
        let ahead = self.unread.iter().any(|u| matches!(u, Unread::Scan(_)));
        self.command(None, |mb| {
            mb.counts.scans_ahead += u32::from(ahead);
            Ok(())
        })?;
        self.unread.push_back(Unread::Scan(raw.to_string()));
        Ok(ScanTicket {
            raw: raw.to_string(),
            handle: Vec::new(),
        })
    }

    /// Answered when read, as [`FakeSession::finish_select`]: the folder as it is then.
    fn finish_select_and_scan(
        &mut self,
        ticket: ScanTicket,
        each: &mut dyn FnMut(&Selected, ScannedMessage),
    ) -> Result<Selected> {
        let first = self.unread.pop_front();
        assert_eq!(
            first,
            Some(Unread::Scan(ticket.raw.clone())),
            "commands are finished in the order they were sent"
        );
        self.command(None, |mb| {
            mb.counts.select_scans += 1;
            Ok(())
        })?;
        let selected = self.select_now(&ticket.raw, false)?;
        if selected.exists > 0 {
            self.scan_now(Uid::FIRST, &mut |m| each(&selected, m))?;
        }
        Ok(selected)
    }

    fn search_dates(&mut self, since: Option<&Date>, until: Option<&Date>) -> Result<Vec<Uid>> {
        let folder = self.selected_in_step(false, "UID SEARCH")?;
        self.command(None, |mb| {
            let f = mb.existing(&folder)?;
            Ok(f.messages
                .iter()
                .filter(|m| {
                    let day = internal_day(&m.internal_date);
                    since.is_none_or(|s| day.is_some_and(|d| d >= *s))
                        && until.is_none_or(|u| day.is_some_and(|d| d < *u))
                })
                .map(|m| m.uid)
                .collect())
        })
    }

    fn scan(&mut self, from: Uid, each: &mut dyn FnMut(ScannedMessage)) -> Result<()> {
        self.selected_in_step(false, "UID FETCH (scan)")?;
        self.scan_now(from, each)
    }

    fn scan_changed(
        &mut self,
        from: Uid,
        modseq: u64,
        each: &mut dyn FnMut(ScannedMessage),
    ) -> Result<Option<UidRanges>> {
        let folder = self.selected_in_step(false, "UID FETCH or SEARCH")?;
        let (scanned, gone) = self.command(Some(Op::ScanChanged), |mb| {
            if !mb.condstore {
                return Err(SessionError::new(
                    SessionErrorKind::Unsupported,
                    "CHANGEDSINCE without CONDSTORE",
                ));
            }
            mb.counts.changed_scans += 1;
            let qresync = mb.qresync;
            let f = mb.existing(&folder)?;
            let gone = qresync.then(|| {
                f.expunged
                    .iter()
                    .filter(|(uid, at)| *at > modseq && *uid >= from)
                    .map(|(uid, _)| (*uid, *uid))
                    .collect::<UidRanges>()
            });
            let scanned = f
                .messages
                .iter()
                .filter(|m| m.modseq > modseq && m.uid >= from)
                .map(|m| ScannedMessage {
                    uid: m.uid,
                    flags: m.flags.clone(),
                    size: m.body.len() as u64,
                })
                .collect::<Vec<_>>();
            Ok((scanned, gone))
        })?;
        for m in scanned {
            spend_one(&mut self.scan_left, &mut self.broken)?;
            each(m);
        }
        Ok(gone)
    }

    fn uids(&mut self) -> Result<Vec<Uid>> {
        let folder = self.selected_in_step(false, "UID FETCH or SEARCH")?;
        self.command(Some(Op::Uids), |mb| {
            mb.counts.uid_lists += 1;
            let f = mb.existing(&folder)?;
            Ok(f.messages.iter().map(|m| m.uid).collect())
        })
    }

    fn fetch(
        &mut self,
        uids: &[Uid],
        each: &mut dyn FnMut(FetchedMessage) -> ControlFlow<()>,
    ) -> Result<()> {
        let folder = self.selected(false)?;
        // Copied out first: `each` may block on the engine's channel, and the appending side
        // may need this server's lock meanwhile.
        let fetched = self.command(Some(Op::Fetch), |mb| {
            mb.counts.fetches += 1;
            let f = mb.existing(&folder)?;
            Ok(f.messages
                .iter()
                .filter(|m| uids.contains(&m.uid))
                .map(|m| FetchedMessage {
                    uid: m.uid,
                    flags: m.flags.clone(),
                    internal_date: Some(m.internal_date.clone()),
                    body: m.body.clone(),
                })
                .collect::<Vec<_>>())
        })?;
        for m in fetched {
            spend_one(&mut self.fetch_left, &mut self.broken)?;
            if each(m).is_break() {
                // As the IMAP session reports a fetch its consumer stopped.
                return Err(SessionError::new(
                    SessionErrorKind::Aborted,
                    "the target side stopped",
                ));
            }
        }
        Ok(())
    }

    fn send_fetch(&mut self, uids: &[Uid]) -> Result<FetchTicket> {
        let ahead = self.unread.iter().any(|u| matches!(u, Unread::Fetch(_)));
        let behind_select = self.unread.iter().any(|u| matches!(u, Unread::Select(..)));
        self.command(None, |mb| {
            mb.counts.fetches_ahead += u32::from(ahead);
            mb.counts.fetches_behind_select += u32::from(behind_select);
            Ok(())
        })?;
        self.unread.push_back(Unread::Fetch(uids.to_vec()));
        Ok(FetchTicket {
            uids: uids.to_vec(),
            handle: Vec::new(),
        })
    }

    fn finish_fetch(
        &mut self,
        ticket: FetchTicket,
        spare: &mut Vec<Vec<u8>>,
        each: &mut dyn FnMut(FetchedMessage) -> ControlFlow<()>,
    ) -> Result<()> {
        // As a server answers: in the order the fetches were sent.
        let first = self.unread.pop_front();
        assert_eq!(
            first,
            Some(Unread::Fetch(ticket.uids.clone())),
            "commands are finished in the order they were sent"
        );
        self.fetch_into(&ticket.uids, spare, each)
    }

    fn set_flags(&mut self, uids: &[Uid], flags: &Flags) -> Result<()> {
        let folder = self.selected_in_step(true, "UID STORE, EXPUNGE or MOVE")?;
        self.command(Some(Op::Store), |mb| {
            mb.counts.flag_stores += 1;
            let f = mb.existing(&folder)?;
            f.modseq += 1;
            let modseq = f.modseq;
            for m in f.messages.iter_mut().filter(|m| uids.contains(&m.uid)) {
                m.flags = flags.clone();
                m.modseq = modseq;
            }
            Ok(())
        })
    }

    fn remove(&mut self, uids: &[Uid]) -> Result<()> {
        let folder = self.selected_in_step(true, "UID STORE, EXPUNGE or MOVE")?;
        self.command(Some(Op::Store), |mb| {
            mb.existing(&folder)?
                .expunge_where(|m| uids.contains(&m.uid));
            Ok(())
        })
    }

    fn move_to(&mut self, uids: &[Uid], to: &str) -> Result<Vec<(Uid, Uid)>> {
        let folder = self.selected_in_step(true, "UID STORE, EXPUNGE or MOVE")?;
        self.command(Some(Op::Move), |mb| {
            mb.counts.moves += 1;
            if mb.index(to).is_none() {
                return Err(SessionError::refused(
                    Some("TRYCREATE"),
                    format!("[TRYCREATE] Mailbox doesn't exist: {to}"),
                ));
            }
            let moving = mb
                .existing(&folder)?
                .expunge_where(|m| uids.contains(&m.uid));
            let dest = mb.existing(to)?;
            Ok(moving
                .into_iter()
                .map(|m| (m.uid, dest.store(m.flags, Some(&m.internal_date), &m.body)))
                .collect())
        })
    }

    fn send_appends(&mut self, folder: &str, messages: &[Outgoing<'_>]) -> Result<AppendTicket> {
        let (multiappend, fault) =
            self.command(None, |mb| Ok((mb.multiappend, mb.fault(Op::Append))))?;
        if let Some(e) = fault {
            if e.is_transient() {
                self.broken = Some(e.clone());
            }
            return Err(e);
        }
        // As the IMAP session: one MULTIAPPEND only for more than one message.
        let atomic = multiappend && messages.len() > 1;
        let answers = if atomic {
            self.append_group(folder, messages)?
        } else {
            self.append_each(folder, messages)?
        };
        self.next_tag += 1;
        let tag = format!("A{}", self.next_tag);
        self.in_flight
            .insert(tag.clone(), (folder.to_string(), answers));
        Ok(AppendTicket {
            folder: folder.to_string(),
            count: messages.len(),
            handle: vec![tag],
            atomic,
        })
    }

    fn finish_appends(
        &mut self,
        ticket: AppendTicket,
        messages: &[Outgoing<'_>],
    ) -> Result<Vec<AppendOutcome>> {
        let Some((folder, answers)) = ticket
            .handle
            .first()
            .and_then(|tag| self.in_flight.remove(tag))
        else {
            return Err(SessionError::new(
                SessionErrorKind::Other,
                "finish_appends: not a ticket of this session",
            ));
        };
        if matches!(answers.first(), Some(Answer::GroupRefused)) {
            // MULTIAPPEND stores all or nothing (RFC 3502): like the IMAP session, send the
            // messages again one by one so that only the refused ones fail.
            let again = self.append_each(&folder, messages)?;
            return Ok(self.read_answers(again));
        }
        Ok(self.read_answers(answers))
    }

    fn logout(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing<'a>(flags: &'a Flags, bodies: &'a [&'a [u8]]) -> Vec<Outgoing<'a>> {
        bodies
            .iter()
            .map(|b| Outgoing {
                flags,
                internal_date: Some("02-Feb-2020 10:00:00 +0100"),
                body: b,
            })
            .collect()
    }

    fn server(mailbox: FakeMailbox) -> FakeConnector {
        let c = FakeConnector::new("test");
        c.add("u", mailbox);
        c
    }

    #[test]
    fn a_refused_multiappend_group_is_resent_one_by_one() {
        let mut mb = FakeMailbox::new();
        mb.refuse_bodies_containing(b"VIRUS", "[LIMIT] Message rejected");
        let c = server(mb);
        let mut s = c.open("u", None).unwrap();
        let flags = Flags::from_server(["\\Seen"]);
        let bodies: [&[u8]; 3] = [b"one", b"two VIRUS", b"three"];
        let msgs = outgoing(&flags, &bodies);
        let ticket = s.send_appends("INBOX", &msgs).unwrap();
        assert!(ticket.atomic);
        let out = s.finish_appends(ticket, &msgs).unwrap();
        assert_eq!(
            out,
            [
                AppendOutcome::Stored(Some(uid(1))),
                AppendOutcome::Refused("[LIMIT] Message rejected".into()),
                AppendOutcome::Stored(Some(uid(2))),
            ]
        );
        let after = c.snapshot("u");
        assert_eq!(after.counts().refused_groups, 1);
        // One MULTIAPPEND, then one APPEND each.
        assert_eq!(after.counts().appends, 4);
        let stored: Vec<&[u8]> = after
            .messages("INBOX")
            .iter()
            .map(|m| &m.body[..])
            .collect();
        assert_eq!(stored, [&b"one"[..], b"three"]);
    }

    #[test]
    fn a_crash_stores_what_was_on_the_wire_and_loses_the_answers() {
        let mut mb = FakeMailbox::new().with_multiappend(false);
        mb.crash_after(2, 1);
        let c = server(mb);
        let mut s = c.open("u", None).unwrap();
        let flags = Flags::default();
        let bodies: [&[u8]; 3] = [b"a", b"b", b"c"];
        let msgs = outgoing(&flags, &bodies);
        let ticket = s.send_appends("INBOX", &msgs).unwrap();
        let out = s.finish_appends(ticket, &msgs).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], AppendOutcome::Stored(Some(uid(1))));
        assert!(matches!(&out[1], AppendOutcome::Lost(e) if e.is_transient()));
        assert!(s.status("INBOX").unwrap_err().is_transient());
        assert_eq!(c.snapshot("u").messages("INBOX").len(), 2);
        // The crash was that session's: the next one is healthy.
        assert!(c.open("u", None).unwrap().status("INBOX").is_ok());
    }

    #[test]
    fn scan_is_filtered_to_uids_at_or_above_from() {
        let mut mb = FakeMailbox::new();
        for body in [b"1", b"2", b"3"] {
            mb.deliver("INBOX", body, &[], DEFAULT_DATE);
        }
        let c = server(mb);
        let mut s = c.open("u", None).unwrap();
        s.select("inbox", false).unwrap();
        let mut uids = Vec::new();
        s.scan(uid(3), &mut |m| uids.push(m.uid)).unwrap();
        assert_eq!(uids, [uid(3)]);
        s.scan(uid(9), &mut |m| uids.push(m.uid)).unwrap();
        assert_eq!(uids, [uid(3)]);
        // Read-only: no flag changes.
        assert!(
            s.set_flags(&[uid(1)], &Flags::default())
                .unwrap_err()
                .is_refusal()
        );
    }

    #[test]
    fn move_returns_the_new_uids_and_renumber_starts_again_at_one() {
        let mut mb = FakeMailbox::new();
        mb.add_folder("Archive");
        mb.deliver("Archive", b"x", &[], DEFAULT_DATE);
        for body in [b"1", b"2", b"3"] {
            mb.deliver("INBOX", body, &[], DEFAULT_DATE);
        }
        let c = server(mb);
        let mut s = c.open("u", None).unwrap();
        s.select("INBOX", true).unwrap();
        assert_eq!(
            s.move_to(&[uid(1), uid(3)], "Archive").unwrap(),
            [(uid(1), uid(2)), (uid(3), uid(3))]
        );
        c.with("u", |m| m.renumber("Archive", 77));
        let after = c.snapshot("u");
        assert_eq!(after.uid_validity("Archive").get(), 77);
        let uids: Vec<u32> = after
            .messages("Archive")
            .iter()
            .map(|m| m.uid.get())
            .collect();
        assert_eq!(uids, [1, 2, 3]);
    }

    #[test]
    fn search_compares_the_day_of_the_internal_date() {
        assert_eq!(
            internal_day(" 7-Jul-1996 02:44:25 -0700"),
            Date::new(1996, 7, 7).ok()
        );
        assert_eq!(
            internal_day("31-Dec-2019 23:59:59 +0000"),
            Date::new(2019, 12, 31).ok()
        );
        assert_eq!(internal_day("no date"), None);
    }
}

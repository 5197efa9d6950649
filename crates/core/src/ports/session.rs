//! The mail session port: one logged-in mailbox on one side of a migration, whatever stores
//! it (an IMAP server, a Maildir++ tree).
//!
//! The operations are typed: no IMAP syntax (UID sets, fetch items, flag lists, tags) crosses
//! this line, so the engine builds no protocol strings and a non-IMAP backend parses none.
//! The model is IMAP's because IMAP is the richer one: UIDs, UIDVALIDITY, flags, INTERNALDATE,
//! and the UIDs a target assigns to what it stores (UIDPLUS).

use std::collections::HashMap;
use std::ops::ControlFlow;

use crate::folders::FolderTree;
use crate::job::Date;
use crate::model::{Flags, Uid, UidValidity};

/// What went wrong in a session, with the server's own words in `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SessionError {
    pub kind: SessionErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionErrorKind {
    /// The connection broke or the server said it is busy (`BYE`, `[UNAVAILABLE]`, …): a new
    /// connection later may succeed.
    Transient,
    /// The server refused this command (`NO`/`BAD`) for good; `code` is its response code.
    Refused { code: Option<String> },
    /// The session cannot do what was asked.
    Unsupported,
    /// This side gave up because the other side stopped (internal hand-over).
    Aborted,
    /// Anything else (TLS set-up, a broken local file, …).
    Other,
}

impl SessionError {
    pub fn new(kind: SessionErrorKind, message: impl Into<String>) -> SessionError {
        SessionError {
            kind,
            message: message.into(),
        }
    }

    pub fn refused(code: Option<&str>, message: impl Into<String>) -> SessionError {
        SessionError::new(
            SessionErrorKind::Refused {
                code: code.map(str::to_owned),
            },
            message,
        )
    }

    pub fn is_transient(&self) -> bool {
        self.kind == SessionErrorKind::Transient
    }

    /// A refusal of one message or command, as opposed to a broken session.
    pub fn is_refusal(&self) -> bool {
        matches!(self.kind, SessionErrorKind::Refused { .. })
    }
}

pub type Result<T> = std::result::Result<T, SessionError>;

/// STATUS of a folder, for the one-command "has anything changed" check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderStatus {
    pub messages: u32,
    pub uid_validity: UidValidity,
    /// A bound, not a UID: the one the next message would get, 0 when the server left it out.
    pub uid_next: u32,
    /// CONDSTORE's HIGHESTMODSEQ, when the store has one.
    pub highest_modseq: Option<u64>,
}

/// What selecting a folder said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub exists: u32,
    pub uid_validity: UidValidity,
}

/// Whether a folder had to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    /// It existed already (made meanwhile by another pass or by the server's autocreate).
    Existed,
}

/// A change to a target's folder tree ([`MailSession::change_tree`]), by raw name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeChange<'a> {
    /// Make the folder; one that exists already (made meanwhile) is fine.
    Create(&'a str),
    /// Subscribe to it (true) or unsubscribe from it (false).
    Subscribe(&'a str, bool),
}

impl TreeChange<'_> {
    /// Makes this one change on its own: [`MailSession::create_folder`] (a folder that
    /// exists is fine) or [`MailSession::set_subscribed`].
    pub fn make<S: MailSession + ?Sized>(&self, session: &mut S) -> Result<()> {
        match *self {
            TreeChange::Create(raw) => session.create_folder(raw).map(|_: Created| ()),
            TreeChange::Subscribe(raw, on) => session.set_subscribed(raw, on),
        }
    }
}

/// One message as a scan sees it: no body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedMessage {
    pub uid: Uid,
    pub flags: Flags,
    pub size: u64,
}

/// One message with its body, as fetched for copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMessage {
    pub uid: Uid,
    pub flags: Flags,
    /// INTERNALDATE in IMAP's date-time form, exactly as the store gave it, so the target is
    /// given the same instant and zone.
    pub internal_date: Option<String>,
    pub body: Vec<u8>,
}

/// One message to store on the target.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub flags: &'a Flags,
    pub internal_date: Option<&'a str>,
    pub body: &'a [u8],
}

/// Appends sent but not yet answered. The session decides how they went out (one atomic
/// MULTIAPPEND, or one APPEND each) and keeps what it needs to read the answers.
#[derive(Debug)]
pub struct AppendTicket {
    pub folder: String,
    pub count: usize,
    /// The session's own handle (IMAP tags, say); opaque to the engine.
    pub handle: Vec<String>,
    /// Whether the messages went out as one all-or-nothing transaction.
    pub atomic: bool,
}

/// A fetch sent and not yet read ([`MailSession::send_fetch`]).
#[derive(Debug)]
pub struct FetchTicket {
    pub uids: Vec<Uid>,
    /// The session's own handle (IMAP tags, say); opaque to the engine. Empty when the
    /// session sends nothing before [`MailSession::finish_fetch`].
    pub handle: Vec<String>,
}

/// A SELECT sent and not yet read ([`MailSession::send_select`]).
#[derive(Debug)]
pub struct SelectTicket {
    pub raw: String,
    pub write: bool,
    /// The session's own handle (an IMAP tag, say); opaque to the engine.
    pub handle: String,
    /// The answer, for a session that selects at once (the default).
    pub answered: Option<Selected>,
}

/// A folder's SELECT and scan sent and not yet read ([`MailSession::send_select_and_scan`]).
#[derive(Debug)]
pub struct ScanTicket {
    pub raw: String,
    /// The session's own handle (IMAP tags, say); opaque to the engine. Empty when the
    /// session sends nothing before [`MailSession::finish_select_and_scan`].
    pub handle: Vec<String>,
}

/// What became of one appended message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored; the UID it got, when the store says (UIDPLUS).
    Stored(Option<Uid>),
    /// Refused for good, with the server's words: recorded as a failure, never retried.
    Refused(String),
    /// The session broke before this answer: this message and every later one of the group
    /// are in doubt (their intents stay pending for reconciliation). Always the last outcome.
    Lost(SessionError),
}

/// UIDs as inclusive ranges (low, high), as a server sends a long uid-set.
pub type UidRanges = Vec<(Uid, Uid)>;

pub trait MailSession: Send {
    /// The folder tree: names, delimiters, special uses, subscriptions.
    fn folders(&mut self) -> Result<FolderTree>;
    /// [`MailSession::folders`], and the STATUS of the folders the session could read along
    /// with the tree at no extra cost (an IMAP server with LIST-STATUS, RFC 5819), by raw
    /// name, as they were when the tree was read. A folder not in the map is asked with
    /// [`MailSession::status_many`]. By default the tree alone.
    fn folders_and_statuses(&mut self) -> Result<(FolderTree, HashMap<String, FolderStatus>)> {
        Ok((self.folders()?, HashMap::new()))
    }
    fn create_folder(&mut self, raw: &str) -> Result<Created>;
    fn set_subscribed(&mut self, raw: &str, subscribed: bool) -> Result<()>;
    /// Makes these changes, in their order, as [`MailSession::create_folder`] and
    /// [`MailSession::set_subscribed`] would; the first that fails is the error. A session
    /// over a network sends many in one round trip where it can (the IMAP session, 64), so
    /// a first pass of a mailbox of 20 folders waits one round trip for its 38 changes, not
    /// 38. By default, one by one.
    fn change_tree(&mut self, changes: &[TreeChange<'_>]) -> Result<()> {
        changes.iter().try_for_each(|change| change.make(self))
    }
    fn status(&mut self, raw: &str) -> Result<FolderStatus>;
    /// The STATUS of several folders, in their order; an error if any fails. A session over
    /// a network asks for them all in one round trip where it can; by default, one by one.
    fn status_many(&mut self, raws: &[&str]) -> Result<Vec<FolderStatus>> {
        raws.iter().map(|raw| self.status(raw)).collect()
    }
    /// Selects a folder for the operations below; read-only unless `write`.
    fn select(&mut self, raw: &str, write: bool) -> Result<Selected>;
    /// Sends the [`MailSession::select`] of a folder without reading its answer:
    /// [`MailSession::finish_select`] reads it. A fetch sent after it, before it is finished,
    /// reads the folder it selects, so a distant server gets both in one round trip; tickets
    /// are finished in the order they were sent. If the SELECT fails, the answers of a fetch sent
    /// after it must be read and dropped (no folder, or another, may have been selected). By
    /// default the folder is selected at once.
    fn send_select(&mut self, raw: &str, write: bool) -> Result<SelectTicket> {
        let answered = self.select(raw, write)?;
        Ok(SelectTicket {
            raw: raw.to_string(),
            write,
            handle: String::new(),
            answered: Some(answered),
        })
    }
    /// Sends what the `send_` methods queued without reading any answer, so that it travels
    /// while the caller does other work. By default nothing is queued.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// Reads the answer of a [`MailSession::send_select`].
    fn finish_select(&mut self, ticket: SelectTicket) -> Result<Selected> {
        match ticket.answered {
            Some(selected) => Ok(selected),
            None => self.select(&ticket.raw, ticket.write),
        }
    }
    /// Sends the SELECT (read-only) of a folder and the scan of every message of it without
    /// reading the answers: [`MailSession::finish_select_and_scan`] reads them. A session
    /// over a network sends both at once (one round trip), and several may be sent before
    /// the first is finished (the scans of a mailbox's folders, one round trip for them
    /// all); tickets are finished in the order they were sent, and no other command is sent
    /// while one is unfinished. By default nothing goes out until it is finished.
    fn send_select_and_scan(&mut self, raw: &str) -> Result<ScanTicket> {
        Ok(ScanTicket {
            raw: raw.to_string(),
            handle: Vec::new(),
        })
    }
    /// Reads the answers of a [`MailSession::send_select_and_scan`]: as
    /// [`MailSession::select`], then [`MailSession::scan`] from the first UID when the folder
    /// holds any, `each` given the SELECT's answer with each message. Messages given to
    /// `each` before an error are the scan's first part, as for [`MailSession::scan`]. A
    /// SELECT refused with no later ticket unread is asked again on its own, and its error,
    /// if any, is the one returned; with later tickets unread it cannot be asked before them:
    /// it is the error (a throttling answer waited out first, and then a transient error:
    /// the scan is asked again by the next attempt).
    fn finish_select_and_scan(
        &mut self,
        ticket: ScanTicket,
        each: &mut dyn FnMut(&Selected, ScannedMessage),
    ) -> Result<Selected> {
        let selected = self.select(&ticket.raw, false)?;
        if selected.exists > 0 {
            self.scan(Uid::FIRST, &mut |m| each(&selected, m))?;
        }
        Ok(selected)
    }
    /// UIDs of the selected folder received on or after `since` and before `until`.
    fn search_dates(&mut self, since: Option<&Date>, until: Option<&Date>) -> Result<Vec<Uid>>;
    /// UID, flags and size of every message of the selected folder at or above `from`.
    fn scan(&mut self, from: Uid, each: &mut dyn FnMut(ScannedMessage)) -> Result<()>;
    /// UID, flags and size of the selected folder's messages at or above `from` whose
    /// mod-sequence is above `modseq` (CONDSTORE's `CHANGEDSINCE`): every message whose flags
    /// changed or that arrived since a STATUS that said HIGHESTMODSEQ `modseq`, in UID order.
    /// A store without mod-sequences gives every message, which is always right (a superset).
    ///
    /// Returns the UIDs at or above `from` expunged since then when the store can tell
    /// (QRESYNC's `VANISHED`, RFC 7162 §3.2.6), as inclusive ranges: they may include UIDs
    /// gone earlier, never miss one gone since. `None` when it cannot tell.
    fn scan_changed(
        &mut self,
        from: Uid,
        modseq: u64,
        each: &mut dyn FnMut(ScannedMessage),
    ) -> Result<Option<UidRanges>> {
        let _ = modseq;
        self.scan(from, each).map(|()| None)
    }
    /// Which of these UIDs the selected folder still holds, in any order.
    fn present(&mut self, uids: &[Uid]) -> Result<Vec<Uid>> {
        let wanted: std::collections::HashSet<Uid> = uids.iter().copied().collect();
        Ok(self
            .uids()?
            .into_iter()
            .filter(|u| wanted.contains(u))
            .collect())
    }
    /// Every UID of the selected folder (no flags, no sizes).
    fn uids(&mut self) -> Result<Vec<Uid>> {
        let mut uids = Vec::new();
        self.scan(Uid::FIRST, &mut |m| uids.push(m.uid))?;
        Ok(uids)
    }
    /// These messages of the selected folder with their bodies, in UID order; `each` may stop
    /// the fetch early. Messages that no longer exist are left out.
    fn fetch(
        &mut self,
        uids: &[Uid],
        each: &mut dyn FnMut(FetchedMessage) -> ControlFlow<()>,
    ) -> Result<()>;
    /// [`MailSession::fetch`], reading bodies into these spare buffers where one is large
    /// enough (the buffers of bodies already stored, kept by the byte budget): such a body
    /// needs no fresh memory. The buffers it did not use are left in `spare`. By default the
    /// spare buffers are not used.
    fn fetch_into(
        &mut self,
        uids: &[Uid],
        spare: &mut Vec<Vec<u8>>,
        each: &mut dyn FnMut(FetchedMessage) -> ControlFlow<()>,
    ) -> Result<()> {
        let _ = spare;
        self.fetch(uids, each)
    }
    /// Sends the fetch of these messages of the selected folder without reading its answers:
    /// [`MailSession::finish_fetch`] reads them. Tickets are finished in the order they were
    /// sent, and each before any other command. A session over a network sends the next
    /// batch's FETCH before the answers of the current one are read, so a distant server is
    /// never idle a round trip between two batches. By default nothing goes out until
    /// [`MailSession::finish_fetch`], which fetches.
    fn send_fetch(&mut self, uids: &[Uid]) -> Result<FetchTicket> {
        Ok(FetchTicket {
            uids: uids.to_vec(),
            handle: Vec::new(),
        })
    }
    /// Reads the answers of a [`MailSession::send_fetch`], as [`MailSession::fetch_into`]
    /// does. `each` stopping the fetch leaves the session unfit for the tickets sent after
    /// this one: their fetch is to be done again on another session.
    fn finish_fetch(
        &mut self,
        ticket: FetchTicket,
        spare: &mut Vec<Vec<u8>>,
        each: &mut dyn FnMut(FetchedMessage) -> ControlFlow<()>,
    ) -> Result<()> {
        self.fetch_into(&ticket.uids, spare, each)
    }
    /// Sets exactly these flags on these messages of the selected folder.
    fn set_flags(&mut self, uids: &[Uid], flags: &Flags) -> Result<()>;
    /// Moves messages of the selected folder to another folder; returns (old UID, new UID)
    /// for those whose new UID is known.
    fn move_to(&mut self, uids: &[Uid], to: &str) -> Result<Vec<(Uid, Uid)>>;
    /// Removes these messages of the selected folder (selected with `write`), and only these:
    /// no other message the user marked deleted goes with them. `Unsupported` when the store
    /// cannot (an IMAP server without UIDPLUS), changing nothing.
    fn remove(&mut self, uids: &[Uid]) -> Result<()> {
        let _ = uids;
        Err(SessionError::new(
            SessionErrorKind::Unsupported,
            "this store cannot remove single messages",
        ))
    }
    /// Sends messages to a folder without waiting for the answers (pipelined).
    fn send_appends(&mut self, folder: &str, messages: &[Outgoing<'_>]) -> Result<AppendTicket>;
    /// Reads the answers: one outcome per message, in order, ending early with
    /// [`AppendOutcome::Lost`] when the session broke midway. An `Err` means it broke before
    /// any answer was read. When an
    /// atomic group is refused, the session resends the messages one by one, so that only
    /// the refused ones fail: the caller needs `messages` again for that.
    fn finish_appends(
        &mut self,
        ticket: AppendTicket,
        messages: &[Outgoing<'_>],
    ) -> Result<Vec<AppendOutcome>>;
    fn logout(self: Box<Self>);
}

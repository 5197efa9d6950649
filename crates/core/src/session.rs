//! One logged-in mailbox on one side of a migration, whatever stores it.
//!
//! The engine speaks to this trait, not to IMAP directly, so that a source or target can also
//! be a local Maildir++ tree (`kind = "maildir"`). The operations and their types are IMAP's
//! because IMAP is the richer model: UIDs, UIDVALIDITY, flags, INTERNALDATE, APPENDUID.

use mailferry_imap::{AppendRequest, Client, Error, Fetch, FolderStatus, Result, Selected};

use crate::folders::FolderTree;

pub trait MailSession: Send {
    /// Whether the session offers an IMAP capability (`MULTIAPPEND`, `LITERAL+`, …).
    fn has(&self, capability: &str) -> bool;
    /// The folder tree: names, delimiters, special uses, subscriptions.
    fn tree(&mut self) -> Result<FolderTree>;
    fn create(&mut self, raw: &str) -> Result<()>;
    fn subscribe(&mut self, raw: &str) -> Result<()>;
    fn unsubscribe(&mut self, raw: &str) -> Result<()>;
    fn status(&mut self, raw: &str) -> Result<FolderStatus>;
    fn select(&mut self, raw: &str, read_only: bool) -> Result<Selected>;
    /// UIDs of the selected folder received on or after `since` and before `until` (IMAP
    /// search dates such as `1-Jan-2020`).
    fn uids_in_range(&mut self, since: Option<&str>, until: Option<&str>) -> Result<Vec<u32>>;
    /// `UID FETCH set (items)` on the selected folder; `items` is a subset of
    /// `UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[]`, and each FETCH carries those items
    /// under IMAP's names (`BODY.PEEK[]` comes back as `BODY[]`).
    fn uid_fetch(
        &mut self,
        set: &str,
        items: &str,
        each: &mut dyn FnMut(Fetch) -> Result<()>,
    ) -> Result<()>;
    /// Sets exactly `flags` (space-separated) on these messages of the selected folder.
    fn store_flags(&mut self, uids: &[u32], flags: &str) -> Result<()>;
    /// Moves messages of the selected folder in one operation; returns (old UID, new UID)
    /// for those whose new UID is known.
    fn uid_move(&mut self, uids: &[u32], to: &str) -> Result<Vec<(u32, u32)>>;
    fn append_send(&mut self, req: &AppendRequest<'_>) -> Result<String>;
    fn append_finish(&mut self, tag: &str) -> Result<Option<(u32, u32)>>;
    fn multiappend_send(&mut self, mailbox: &str, reqs: &[AppendRequest<'_>]) -> Result<String>;
    fn multiappend_finish(&mut self, tag: &str, count: usize) -> Result<Option<Vec<u32>>>;
    fn logout(self: Box<Self>);
}

impl MailSession for Client {
    fn has(&self, capability: &str) -> bool {
        Client::has(self, capability)
    }
    fn tree(&mut self) -> Result<FolderTree> {
        crate::engine::read_tree(self)
    }
    fn create(&mut self, raw: &str) -> Result<()> {
        Client::create(self, raw)
    }
    fn subscribe(&mut self, raw: &str) -> Result<()> {
        Client::subscribe(self, raw)
    }
    fn unsubscribe(&mut self, raw: &str) -> Result<()> {
        Client::unsubscribe(self, raw)
    }
    fn status(&mut self, raw: &str) -> Result<FolderStatus> {
        Client::status(self, raw)
    }
    fn select(&mut self, raw: &str, read_only: bool) -> Result<Selected> {
        Client::select(self, raw, read_only)
    }
    fn uids_in_range(&mut self, since: Option<&str>, until: Option<&str>) -> Result<Vec<u32>> {
        let mut q = String::new();
        if let Some(s) = since {
            q.push_str(&format!("SINCE {s} "));
        }
        if let Some(u) = until {
            q.push_str(&format!("BEFORE {u} "));
        }
        q.push_str("ALL");
        self.uid_search(&q)
    }
    fn uid_fetch(
        &mut self,
        set: &str,
        items: &str,
        each: &mut dyn FnMut(Fetch) -> Result<()>,
    ) -> Result<()> {
        Client::uid_fetch(self, set, items, each)
    }
    fn store_flags(&mut self, uids: &[u32], flags: &str) -> Result<()> {
        for chunk in uids.chunks(500) {
            let set = mailferry_imap::uid_set(chunk.iter().copied());
            self.run(&format!("UID STORE {set} FLAGS.SILENT ({flags})"))?;
        }
        Ok(())
    }
    fn uid_move(&mut self, uids: &[u32], to: &str) -> Result<Vec<(u32, u32)>> {
        Client::uid_move(self, uids, to)
    }
    fn append_send(&mut self, req: &AppendRequest<'_>) -> Result<String> {
        Client::append_send(self, req)
    }
    fn append_finish(&mut self, tag: &str) -> Result<Option<(u32, u32)>> {
        Client::append_finish(self, tag)
    }
    fn multiappend_send(&mut self, mailbox: &str, reqs: &[AppendRequest<'_>]) -> Result<String> {
        Client::multiappend_send(self, mailbox, reqs)
    }
    fn multiappend_finish(&mut self, tag: &str, count: usize) -> Result<Option<Vec<u32>>> {
        Client::multiappend_finish(self, tag, count)
    }
    fn logout(self: Box<Self>) {
        Client::logout(*self)
    }
}

/// A refusal in a session's own words, for backends that are not IMAP servers.
pub fn refused(command: &str, text: impl Into<String>) -> Error {
    Error::No {
        command: command.to_string(),
        code: None,
        text: text.into(),
    }
}

//! The mailbox commands of a [`Client`](super::Client): the folder tree, STATUS, SELECT,
//! FETCH, SEARCH, CREATE, subscriptions, MOVE and STORE, with long UID lists chunked.

use super::{Client, FolderStatus, Result, Selected};
use crate::proto::codes::CopyUid;
use crate::proto::command::{MAX_SET_CHARS, quote, uid_sets};
use crate::response::{Code, Fetch, ListItem, MAX_VANISHED_RANGES, ParseError, Untagged, Value};

/// The most UIDs an ESEARCH answer may expand to (64 MiB of them): a hostile `ALL
/// 1:4294967295` is 14 bytes on the wire, and a plain SEARCH answer bounded by the longest
/// line could not carry many more. No folder holds that many messages.
const MAX_SEARCH_UIDS: usize = 1 << 24;

/// The most commands [`Client::status_many`] and [`Client::run_each`] send before reading
/// their answers: the commands of one round trip stay a few kilobytes, whatever the number of
/// folders, and so do the answers the server writes meanwhile.
pub const STATUS_PIPELINE: usize = 64;

/// What [`Client::tree_lists`] read: LIST's folders, the first personal namespace (prefix
/// and delimiter) where the server has NAMESPACE, and LSUB's folders; and when asked for and
/// the server has LIST-STATUS, the STATUS of each selectable folder, by its name.
#[derive(Debug, Default)]
pub struct TreeLists {
    pub list: Vec<ListItem>,
    pub namespace: Option<(String, Option<char>)>,
    pub lsub: Vec<ListItem>,
    pub statuses: Vec<(String, FolderStatus)>,
}

/// Whether an untagged answer is `ENABLED` naming QRESYNC.
pub(super) fn enabled_qresync(values: &[Value]) -> bool {
    matches!(values, [Value::Atom(word), caps @ ..]
        if word.eq_ignore_ascii_case("ENABLED")
            && caps
                .iter()
                .any(|c| matches!(c, Value::Atom(a) if a.eq_ignore_ascii_case("QRESYNC"))))
}

/// Takes a STATUS answer's items into `st`.
fn fill_status(st: &mut FolderStatus, items: Vec<(String, u64)>) {
    for (k, v) in items {
        match k.as_str() {
            "MESSAGES" => st.messages = v as u32,
            "UIDNEXT" => st.uid_next = v as u32,
            "UIDVALIDITY" => st.uid_validity = v as u32,
            "HIGHESTMODSEQ" => st.highest_modseq = Some(v),
            _ => {}
        }
    }
}

impl Client {
    /// LIST, NAMESPACE (where the server has it) and LSUB in one round trip: what a folder
    /// tree is read from. With `statuses` and a server with LIST-STATUS (RFC 5819), the LIST
    /// also returns every selectable folder's STATUS (the items of [`Client::status_many`]),
    /// so a pass needs no round trip of STATUS commands after the tree.
    pub fn tree_lists(&mut self, statuses: bool) -> Result<TreeLists> {
        let list = if statuses && self.has("LIST-STATUS") {
            format!("LIST \"\" \"*\" RETURN (STATUS ({}))", self.status_items())
        } else {
            "LIST \"\" \"*\"".to_string()
        };
        let mut commands = vec![list];
        if self.has("NAMESPACE") {
            commands.push("NAMESPACE".to_string());
        }
        commands.push("LSUB \"\" \"*\"".to_string());
        let mut lists = TreeLists::default();
        self.pipeline(&commands, |i, u| match u {
            Untagged::List(l) => lists.list.push(l),
            Untagged::Lsub(l) => lists.lsub.push(l),
            Untagged::Namespace(ns) if lists.namespace.is_none() => {
                lists.namespace = ns.into_iter().next();
            }
            // Only the LIST's: a STATUS in another command's answer is not the tree's.
            Untagged::MailboxStatus { mailbox, items } if i == 0 => {
                let mut st = FolderStatus::default();
                fill_status(&mut st, items);
                lists.statuses.push((mailbox, st));
            }
            _ => {}
        })?;
        Ok(lists)
    }

    pub fn status(&mut self, mailbox: &str) -> Result<FolderStatus> {
        let mut one = self.status_many(&[mailbox])?;
        Ok(one.remove(0))
    }

    /// STATUS of several mailboxes, in their order, a round trip for up to
    /// [`STATUS_PIPELINE`] of them: their commands are all sent before the first answer is
    /// read (RFC 3501 §5.5 lets a client send commands without waiting). Over a link with a
    /// round trip of 50 ms, a delta pass of a mailbox of 40 folders waits 50 ms for them,
    /// not 2 s. An answer is taken as its mailbox's by the name it carries, else (a name the
    /// server spelt otherwise) by the command it came before. After a refusal the other
    /// answers are still read, so the connection stays in step, and the first refusal is the
    /// error.
    pub fn status_many(&mut self, mailboxes: &[&str]) -> Result<Vec<FolderStatus>> {
        let items = self.status_items();
        let mut out = vec![FolderStatus::default(); mailboxes.len()];
        let mut answered = vec![false; mailboxes.len()];
        for (part, at) in mailboxes
            .chunks(STATUS_PIPELINE)
            .zip((0..).step_by(STATUS_PIPELINE))
        {
            let commands: Vec<String> = part
                .iter()
                .map(|m| format!("STATUS {} ({items})", quote(m)))
                .collect();
            self.pipeline(&commands, |i, u| {
                if let Untagged::MailboxStatus { mailbox, items } = u {
                    let j = (0..part.len())
                        .find(|&j| part[j] == mailbox && !answered[at + j])
                        .unwrap_or(i);
                    answered[at + j] = true;
                    fill_status(&mut out[at + j], items);
                }
            })?;
        }
        Ok(out)
    }

    fn status_items(&self) -> &'static str {
        if self.has("CONDSTORE") {
            "MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ"
        } else {
            "MESSAGES UIDNEXT UIDVALIDITY"
        }
    }

    /// SELECT (or EXAMINE when `read_only`), with CONDSTORE where the server has it. Always
    /// sent, even for the folder already selected: callers need its fresh UIDVALIDITY.
    pub fn select(&mut self, mailbox: &str, read_only: bool) -> Result<Selected> {
        let tag = self.select_send(mailbox, read_only);
        self.select_finish(&tag, mailbox, read_only)
    }

    /// Queues the SELECT (EXAMINE when `read_only`) of [`Client::select`] without waiting:
    /// it goes out with the next command or read, so a FETCH queued after it travels with
    /// it. Returns the tag, for [`Client::select_finish`]. A server runs the commands in
    /// order, so a FETCH sent after it reads the folder it selects; if the SELECT fails, no
    /// folder is selected (RFC 3501 §6.3.1) and the FETCH's answers must be dropped.
    pub fn select_send(&mut self, mailbox: &str, read_only: bool) -> String {
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        let condstore = if self.has("CONDSTORE") {
            " (CONDSTORE)"
        } else {
            ""
        };
        self.queue(&format!("{verb} {}{condstore}", quote(mailbox)))
    }

    /// Reads the answer of a [`Client::select_send`] (the same `mailbox` and `read_only`).
    pub fn select_finish(&mut self, tag: &str, mailbox: &str, read_only: bool) -> Result<Selected> {
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        let mut sel = Selected {
            name: mailbox.to_string(),
            read_only,
            ..Selected::default()
        };
        let code = self.finish_with(tag, verb, |u| {
            match u {
                Untagged::Exists(n) => sel.exists = n,
                Untagged::Status {
                    code: Some(code), ..
                } => apply_select_code(&mut sel, &code),
                _ => {}
            }
            Ok(())
        })?;
        if let Some(code) = code
            && code.name == "READ-ONLY"
        {
            sel.read_only = true;
        }
        Ok(sel)
    }

    /// `UID FETCH set (items)`, handing each FETCH response to `each` as it arrives, so a
    /// folder is never held in memory.
    pub fn uid_fetch(
        &mut self,
        set: &str,
        items: &str,
        each: impl FnMut(Fetch) -> Result<()>,
    ) -> Result<()> {
        let tag = self.uid_fetch_queue(set, items);
        self.uid_fetch_finish(&[tag], each)
    }

    /// Queues one `UID FETCH set (items)` without waiting, as [`Client::uid_fetch_send`]
    /// does; returns its tag, for [`Client::uid_fetch_finish`].
    pub fn uid_fetch_queue(&mut self, set: &str, items: &str) -> String {
        self.queue(&format!("UID FETCH {set} ({items})"))
    }

    /// `UID FETCH set (items) (CHANGEDSINCE modseq)` (CONDSTORE, RFC 7162 §3.1.4): only the
    /// messages whose mod-sequence is above `modseq`, each handed to `each` as it arrives.
    ///
    /// With QRESYNC enabled the command also asks for `VANISHED` (RFC 7162 §3.2.6), and the
    /// result is the UIDs of `set` expunged since `modseq`, as the server's inclusive ranges
    /// (a server that no longer knows when a message went may list more, never fewer).
    /// Without QRESYNC the result is `None`.
    pub fn uid_fetch_changed_since(
        &mut self,
        set: &str,
        items: &str,
        modseq: u64,
        mut each: impl FnMut(Fetch) -> Result<()>,
    ) -> Result<Option<Vec<(u32, u32)>>> {
        let qresync = self.qresync;
        let modifier = if qresync { " VANISHED" } else { "" };
        let command = format!("UID FETCH {set} ({items}) (CHANGEDSINCE {modseq}{modifier})");
        let tag = self.queue(&command);
        let mut gone = Vec::new();
        self.finish_with(&tag, "UID FETCH", |u| match u {
            Untagged::Fetch(f) => each(f),
            // Only the answer to this command says EARLIER; a VANISHED without it is an
            // expunge happening now, which this folder's next pass sees.
            Untagged::Vanished {
                earlier: true,
                uids,
            } => {
                if gone.len() + uids.len() > MAX_VANISHED_RANGES {
                    return Err(super::Error::Aborted(format!(
                        "the server listed more than {MAX_VANISHED_RANGES} VANISHED ranges"
                    )));
                }
                gone.extend(uids);
                Ok(())
            }
            _ => Ok(()),
        })?;
        Ok(qresync.then_some(gone))
    }

    /// `ENABLE QRESYNC` (RFC 5161, RFC 7162 §3.2.3), valid only before the first SELECT of the
    /// connection; sends nothing when the capability is missing or forgotten. It has no round
    /// trip of its own: queued now, it goes out with the next command, and its answers are
    /// taken out of whatever responses are read next ([`Client::read_response`]; a server
    /// answers commands in order, so they come first). QRESYNC counts as on from the
    /// `ENABLED QRESYNC` answer, and a refusal leaves it off. With it on, the server reports
    /// expunges as `VANISHED` and [`Client::uid_fetch_changed_since`] may ask for the UIDs
    /// expunged since a mod-sequence: only ever after a SELECT, never by a connection's first
    /// command.
    pub fn enable_qresync_with_next(&mut self) {
        if !self.has("QRESYNC") || !self.has("ENABLE") || self.enabling.is_some() {
            return;
        }
        self.enabling = Some(self.queue("ENABLE QRESYNC"));
    }

    pub fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>> {
        // With ESEARCH (RFC 4731) the answer is ranges: `1:100000` rather than 600 kB of UIDs,
        // which matters on a link that drops every few hundred kilobytes.
        let command = if self.has("ESEARCH") {
            format!("UID SEARCH RETURN (ALL) {criteria}")
        } else {
            format!("UID SEARCH {criteria}")
        };
        let mut out = Vec::new();
        for u in self.run(&command)? {
            match u {
                Untagged::Search(uids) => out.extend(uids),
                Untagged::Esearch { all, .. } => {
                    for (low, high) in all {
                        let n = (high - low) as usize + 1;
                        if out.len() + n > MAX_SEARCH_UIDS {
                            return Err(super::Error::Parse(ParseError(format!(
                                "an ESEARCH answer of more than {MAX_SEARCH_UIDS} UIDs"
                            ))));
                        }
                        out.extend(low..=high);
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Which of these UIDs the selected folder holds (`UID SEARCH UID set`, one command per
    /// [`uid_sets`] chunk).
    pub fn uid_search_in(&mut self, uids: &[u32]) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        for set in uid_sets(uids, MAX_SET_CHARS) {
            out.extend(self.uid_search(&format!("UID {set}"))?);
        }
        Ok(out)
    }

    /// Runs commands without untagged data to keep (CREATE, SUBSCRIBE, UNSUBSCRIBE), a round
    /// trip for up to [`STATUS_PIPELINE`] of them, and says how each went: `Ok` or the
    /// server's refusal, in their order. A server runs a connection's commands in the order
    /// they came, so a folder's CREATE goes before its SUBSCRIBE and before its children's.
    /// Anything but a refusal (the connection lost) is the error.
    pub fn run_each(&mut self, commands: &[String]) -> Result<Vec<Result<()>>> {
        let mut outcomes = Vec::with_capacity(commands.len());
        for part in commands.chunks(STATUS_PIPELINE) {
            outcomes.extend(self.pipeline_each(part, |_, _| {})?);
        }
        Ok(outcomes)
    }

    pub fn create(&mut self, mailbox: &str) -> Result<()> {
        self.run(&format!("CREATE {}", quote(mailbox))).map(drop)
    }

    pub fn subscribe(&mut self, mailbox: &str) -> Result<()> {
        self.run(&format!("SUBSCRIBE {}", quote(mailbox))).map(drop)
    }

    pub fn unsubscribe(&mut self, mailbox: &str) -> Result<()> {
        self.run(&format!("UNSUBSCRIBE {}", quote(mailbox)))
            .map(drop)
    }

    /// Moves messages of the selected folder to another folder (MOVE, RFC 6851, or COPY +
    /// `\Deleted` + UID EXPUNGE), one command per [`uid_sets`] chunk so no command line grows
    /// past RFC 2683's advice. Returns (old UID, new UID) pairs from the chunks' COPYUIDs when
    /// the server reports them. Without MOVE and UIDPLUS the originals stay, flagged
    /// `\Deleted`: a plain EXPUNGE would also remove the user's other deleted messages. When a
    /// chunk fails, the chunks before it have moved.
    pub fn uid_move(&mut self, uids: &[u32], to: &str) -> Result<Vec<(u32, u32)>> {
        let mut pairs = Vec::new();
        for set in uid_sets(uids, MAX_SET_CHARS) {
            if let Some(copied) = self.uid_move_set(&set, to)? {
                pairs.extend(copied.pairs());
            }
        }
        Ok(pairs)
    }

    /// One chunk of [`Client::uid_move`], returning its COPYUID.
    fn uid_move_set(&mut self, set: &str, to: &str) -> Result<Option<CopyUid>> {
        self.trace(&format!("UID MOVE {set} {}", quote(to)));
        let code = if self.has("MOVE") {
            let tag = self.tag();
            self.out
                .extend_from_slice(format!("{tag} UID MOVE {set} {}\r\n", quote(to)).as_bytes());
            // RFC 6851 §4.3: MOVE reports COPYUID in an untagged OK before the tagged one.
            let mut copyuid = None;
            let code = self.finish_with(&tag, "UID MOVE", |u| {
                if let Untagged::Status { code: Some(c), .. } = u
                    && c.name == "COPYUID"
                {
                    copyuid = Some(c);
                }
                Ok(())
            })?;
            copyuid.or(code)
        } else {
            let tag = self.tag();
            self.out
                .extend_from_slice(format!("{tag} UID COPY {set} {}\r\n", quote(to)).as_bytes());
            let code = self.finish(&tag, "UID COPY")?;
            self.run(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))?;
            // UID EXPUNGE (RFC 4315 §2.1) removes only these messages.
            if self.has("UIDPLUS") {
                self.run(&format!("UID EXPUNGE {set}"))?;
            }
            code
        };
        Ok(code.as_ref().and_then(CopyUid::parse))
    }

    /// Sets exactly `flags` (system flags and keywords, as IMAP writes them) on the messages
    /// of the selected folder, replacing what they had: `UID STORE set FLAGS.SILENT (flags)`,
    /// one command per [`uid_sets`] chunk. SILENT spares the untagged FETCH per message (RFC
    /// 3501 §6.4.6).
    pub fn uid_store_flags(&mut self, uids: &[u32], flags: &[String]) -> Result<()> {
        let flags = flags.join(" ");
        for set in uid_sets(uids, MAX_SET_CHARS) {
            self.run(&format!("UID STORE {set} FLAGS.SILENT ({flags})"))?;
        }
        Ok(())
    }

    /// Adds flags to messages (`UID STORE … +FLAGS.SILENT`), leaving their other flags.
    pub fn uid_add_flags(&mut self, uids: &[u32], flags: &[String]) -> Result<()> {
        let flags = flags.join(" ");
        for set in uid_sets(uids, MAX_SET_CHARS) {
            self.run(&format!("UID STORE {set} +FLAGS.SILENT ({flags})"))?;
        }
        Ok(())
    }

    /// Removes these messages of the selected folder, and only these: `UID STORE set
    /// +FLAGS.SILENT (\Deleted)` then `UID EXPUNGE set` (UIDPLUS, RFC 4315 §2.1). Returns false,
    /// sending nothing, when the server lacks UIDPLUS: a plain EXPUNGE would also remove the
    /// user's other deleted messages.
    pub fn uid_expunge(&mut self, uids: &[u32]) -> Result<bool> {
        if !self.has("UIDPLUS") {
            return Ok(false);
        }
        for set in uid_sets(uids, MAX_SET_CHARS) {
            self.run(&format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"))?;
            self.run(&format!("UID EXPUNGE {set}"))?;
        }
        Ok(true)
    }

    /// [`Client::uid_fetch`] of the given UIDs, one command per [`uid_sets`] chunk.
    pub fn uid_fetch_uids(
        &mut self,
        uids: &[u32],
        items: &str,
        each: impl FnMut(Fetch) -> Result<()>,
    ) -> Result<()> {
        let tags = self.uid_fetch_send(uids, items);
        self.uid_fetch_finish(&tags, each)
    }

    /// Queues the `UID FETCH` of the given UIDs (one command per [`uid_sets`] chunk) without
    /// waiting for anything: they go out with the next command or read, so the FETCH of a
    /// next batch can be on its way while the answers of the one before are read. Returns
    /// the tags, for [`Client::uid_fetch_finish`]. A server answers commands in order, so
    /// the answers of fetches sent this way must be read in the order they were sent.
    pub fn uid_fetch_send(&mut self, uids: &[u32], items: &str) -> Vec<String> {
        uid_sets(uids, MAX_SET_CHARS)
            .into_iter()
            .map(|set| self.uid_fetch_queue(&set, items))
            .collect()
    }

    /// Reads the answers of a [`Client::uid_fetch_send`], handing each FETCH response to
    /// `each` as it arrives. Flushes first: a fetch queued after this one goes out now, and
    /// the server has it while it answers this one.
    pub fn uid_fetch_finish(
        &mut self,
        tags: &[String],
        mut each: impl FnMut(Fetch) -> Result<()>,
    ) -> Result<()> {
        self.flush()?;
        for tag in tags {
            self.finish_with(tag, "UID FETCH", |u| match u {
                Untagged::Fetch(f) => each(f),
                _ => Ok(()),
            })?;
        }
        Ok(())
    }
}

fn apply_select_code(sel: &mut Selected, code: &Code) {
    let arg = || code.args.first().and_then(|v| v.as_u64());
    match code.name.as_str() {
        "UIDVALIDITY" => sel.uid_validity = arg().unwrap_or(0) as u32,
        "UIDNEXT" => sel.uid_next = arg().map(|v| v as u32),
        "HIGHESTMODSEQ" => sel.highest_modseq = arg(),
        _ => {}
    }
}

//! Phase 3b: copying one folder's new messages. A fetcher thread reads bodies from the source
//! in batches and hands them over a channel bounded by a byte budget; this thread groups them
//! and stores them on the target ([`super::append`]).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::decide::Vanished;
use super::scan::FolderWork;
use super::{EngineError, Pass, Result, on};
use crate::folders::FolderTree;
use crate::model::{Flags, Side, Uid, UidValidity};
use crate::ports::{
    FetchTicket, FetchedMessage, MailSession, SelectTicket, SessionError, SessionErrorKind,
};

/// A FETCH asks for at most this many bytes of bodies (by the sizes the scan saw), unless one
/// message is larger by itself: the fetcher holds the budget for a whole batch before it asks,
/// so a batch is a small part of [`PROCESS_BYTE_BUDGET`], and four mailboxes at once each get
/// one batch on the wire while their earlier ones are stored.
const FETCH_BATCH_BYTES: u64 = 4 << 20;
const FETCH_BATCH_MESSAGES: usize = 500;
pub(super) const GROUP_MESSAGES: usize = 128;
pub(super) const GROUP_BYTES: usize = 8 << 20;
/// How long a group waits for more messages before it goes out as it is, when nothing else is
/// on the wire: the target would otherwise sit idle.
const GROUP_WAIT_IDLE: Duration = Duration::from_millis(3);
/// The same while another group is still being stored: the target is busy with that one, so
/// waiting costs nothing and a fuller group saves the target a transaction (and its fsync).
const GROUP_WAIT_BUSY: Duration = Duration::from_millis(30);

/// One source message on its way to the target.
pub(super) struct Message {
    pub uid: Uid,
    pub flags: Flags,
    pub date: Option<String>,
    pub body: Vec<u8>,
}

impl From<FetchedMessage> for Message {
    fn from(m: FetchedMessage) -> Message {
        Message {
            uid: m.uid,
            flags: m.flags,
            date: m.internal_date,
            body: m.body,
        }
    }
}

impl Pass<'_, '_> {
    pub(super) fn copy_folder(
        &mut self,
        src: &mut dyn MailSession,
        dst: &mut dyn MailSession,
        tree: &FolderTree,
        w: &FolderWork,
        order: CopyOrder<'_>,
        vanished: &mut Vanished,
    ) -> Result<Option<Presented>> {
        // The scan left another folder selected: the fetcher selects this one again (with its
        // first batch's FETCH; or the fetcher of the folder before sent them) and makes sure
        // its UIDs still mean what the scan saw. Once it has read the last batch, it sends the
        // next folder's SELECT and first FETCH, returned for that folder's copy.
        let next = order.next;
        let folder = Selecting {
            raw: &w.source.raw_name,
            path: w.source.path.as_str(),
            uid_validity: w.uid_validity,
        };
        let budget = self.ctx.budget.share();
        let (tx, rx) = sync_channel::<Message>(256);
        let fetch_budget = &budget;
        let mut moves = Vec::new();
        let fetch_src = &mut *src;
        let presented = std::thread::scope(|scope| {
            let fetcher =
                scope.spawn(move || fetch_messages(fetch_src, &folder, order, tx, fetch_budget));
            let appended = self.append_messages(dst, w, rx, &budget, vanished, &mut moves);
            budget.close();
            let fetched = fetcher.join().unwrap_or_else(|_| {
                Err(FetchEnd::Failed(SessionError::new(
                    SessionErrorKind::Other,
                    "the fetcher thread panicked",
                )))
            });
            appended?;
            match fetched {
                Ok(presented) => Ok(presented),
                // Stopped because the appending side did: its error is the one reported.
                Err(FetchEnd::Stopped) => Ok(None),
                Err(FetchEnd::Failed(e)) => Err(EngineError::Session {
                    side: Side::Source,
                    source: e,
                }),
            }
        })?;
        let again = self.apply_moves(dst, tree, &w.item.target_raw_name, moves)?;
        if again.is_empty() {
            return Ok(presented);
        }
        // Copies the target no longer holds: these messages are copied again, now (with no
        // vanished row to match, this second round has no moves), after what was sent for
        // the next folder is read and dropped.
        if let Some(p) = presented {
            drop_presented(src, p).map_err(on(Side::Source))?;
        }
        let order = CopyOrder {
            to_copy: &again,
            presented: None,
            next,
        };
        self.copy_folder(src, dst, tree, w, order, &mut Vanished::new())
    }
}

/// What [`next_group`] found.
pub(super) enum Next {
    Group(Vec<Message>),
    /// Nothing arrived while another group is on the wire: finish that one first, so that
    /// the budget it holds is not kept waiting on a fetcher that may itself wait for budget.
    Idle,
    /// The fetcher is done.
    Done,
}

/// The next group of messages: at least one, then whatever arrives without a gap longer than
/// the wait, until a count or `max_bytes` is reached (the message that reaches it is the
/// group's last). `busy`: another group is on the wire; then the first message is waited for only
/// as long as a gap.
pub(super) fn next_group(rx: &Receiver<Message>, busy: bool, max_bytes: usize) -> Next {
    let wait = if busy {
        GROUP_WAIT_BUSY
    } else {
        GROUP_WAIT_IDLE
    };
    let first = if busy {
        match rx.recv_timeout(wait) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => return Next::Idle,
            Err(RecvTimeoutError::Disconnected) => return Next::Done,
        }
    } else {
        match rx.recv() {
            Ok(m) => m,
            Err(_) => return Next::Done,
        }
    };
    let mut bytes = first.body.len();
    let mut group = vec![first];
    while group.len() < GROUP_MESSAGES && bytes < max_bytes {
        match rx.recv_timeout(wait) {
            Ok(m) => {
                bytes += m.body.len();
                group.push(m);
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Next::Group(group)
}

/// Bytes of message bodies held in memory between the fetchers and the appenders, for the
/// whole process: every mailbox's copy takes from the same budget, so memory stays bounded
/// whatever the concurrency. A message larger than the budget still passes, alone.
///
/// The budget also keeps the buffers of bodies already stored, to read the next bodies into
/// ([`BudgetShare::recycle`], [`BudgetShare::acquire_batch`]): a body read into fresh memory
/// costs the kernel a page fault and a zeroed page for every 4 KiB, which perf put at about a
/// third of mailferry's CPU in a full pass (on a virtual machine where new memory is slow).
/// Those spare buffers count against the cap like the bodies in flight, and are freed first
/// when a fetcher needs room, so they never add to the memory the budget allows.
pub struct ByteBudget {
    cap: usize,
    counts: Mutex<Counts>,
    freed: Condvar,
}

#[derive(Default)]
struct Counts {
    /// Bytes of bodies in flight plus the capacity of the spare buffers.
    used: usize,
    spare: Vec<Vec<u8>>,
}

impl Counts {
    /// The spare buffer to lend for a body of `size` bytes: the smallest that holds it and is
    /// not more than twice its size, else the largest smaller one, which the session grows
    /// (its pages are kept: only the rest is fresh memory).
    fn fit(&self, size: usize) -> Option<usize> {
        let capacity = |i: &usize| self.spare[*i].capacity();
        let all = 0..self.spare.len();
        all.clone()
            .filter(|i| (size..=2 * size).contains(&capacity(i)))
            .min_by_key(capacity)
            .or_else(|| all.filter(|i| capacity(i) < size).max_by_key(capacity))
    }

    /// Takes spare buffer `i` out of the count.
    fn take_spare(&mut self, i: usize) -> Vec<u8> {
        let buffer = self.spare.swap_remove(i);
        self.used -= buffer.capacity();
        buffer
    }

    /// Frees the largest spare buffer, if any; false when there was none.
    fn free_spare(&mut self) -> bool {
        let largest = (0..self.spare.len()).max_by_key(|&i| self.spare[i].capacity());
        largest.map(|i| self.take_spare(i)).is_some()
    }
}

/// The default budget of a process: a 30 MB message passes with room to spare, and four
/// mailboxes at once keep their pipelines full on a LAN (measured in the benchmark).
pub const PROCESS_BYTE_BUDGET: usize = 32 << 20;

/// Bodies read into buffers of their own (not copied out of the connection's read buffer):
/// the IMAP client takes literals of 64 KiB and more that way. Smaller buffers are not kept.
const SPARE_MIN: usize = 64 << 10;
/// A buffer larger than a quarter of the budget is freed, not kept: messages that large are
/// rare, and one would hold a large part of the budget for the next one that fits.
const SPARE_MAX_PART: usize = 4;

impl ByteBudget {
    pub fn new(cap: usize) -> ByteBudget {
        ByteBudget {
            cap,
            counts: Mutex::new(Counts::default()),
            freed: Condvar::new(),
        }
    }

    /// One folder copy's share: what it holds is given back when it is dropped, so a copy
    /// that fails midway never starves the others.
    pub(super) fn share(&self) -> BudgetShare<'_> {
        BudgetShare {
            budget: self,
            held: Mutex::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a buffer for a later body if it is worth keeping and fits under the cap.
    fn keep(&self, c: &mut Counts, mut buffer: Vec<u8>) {
        let size = buffer.capacity();
        if !(SPARE_MIN..=self.cap / SPARE_MAX_PART).contains(&size) || c.used + size > self.cap {
            return;
        }
        buffer.clear();
        c.used += size;
        c.spare.push(buffer);
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.counts().used
    }

    #[cfg(test)]
    fn spare_bytes(&self) -> usize {
        self.counts().spare.iter().map(Vec::capacity).sum()
    }
}

/// A fetcher's and its appender's part of the [`ByteBudget`].
pub(super) struct BudgetShare<'a> {
    budget: &'a ByteBudget,
    held: Mutex<usize>,
    /// Set when the appender is gone: the fetcher must stop waiting.
    closed: AtomicBool,
}

impl BudgetShare<'_> {
    /// Returns false when the consumer is gone. Spare buffers are freed before it waits.
    pub fn acquire(&self, n: usize) -> bool {
        self.hold(n, Vec::new(), true).is_some()
    }

    /// Holds the bytes of a batch whose bodies have these sizes, waiting for room as
    /// [`BudgetShare::acquire`] does, and lends it spare buffers to read them into: one for
    /// each body large enough ([`Counts::fit`]). A lent buffer leaves the spare count, since
    /// the batch's bytes stand for it; what the session does not use comes back with
    /// [`BudgetShare::give_back`]. Spare buffers the batch cannot use are freed before it
    /// waits. `None` when the consumer is gone.
    pub fn acquire_batch(&self, sizes: &[usize]) -> Option<Vec<Vec<u8>>> {
        let wanted = sizes.iter().copied().filter(|&s| s >= SPARE_MIN).collect();
        self.hold(sizes.iter().sum(), wanted, true)
    }

    /// [`BudgetShare::acquire_batch`] without waiting: `None` when there is no room now, even
    /// with the spare buffers freed (they are then kept), or the consumer is gone. For the batch
    /// after the one being read, which must never wait while that one is unread: its
    /// messages free the room the wait would be for.
    pub fn try_acquire_batch(&self, sizes: &[usize]) -> Option<Vec<Vec<u8>>> {
        let wanted = sizes.iter().copied().filter(|&s| s >= SPARE_MIN).collect();
        self.hold(sizes.iter().sum(), wanted, false)
    }

    /// Holds `n` bytes, lending a spare buffer for each body size `wanted`; waits for room
    /// only when `wait`.
    fn hold(&self, n: usize, mut wanted: Vec<usize>, wait: bool) -> Option<Vec<Vec<u8>>> {
        let b = self.budget;
        let mut lent = Vec::new();
        let mut c = b.counts();
        // `closed` is set before the notifying thread takes the lock, so a waiter that saw it
        // clear is already waiting when the notification comes.
        loop {
            if self.closed.load(Ordering::SeqCst) {
                drop(c);
                self.give_back(lent);
                return None;
            }
            wanted.retain(|&size| {
                let Some(i) = c.fit(size) else { return true };
                lent.push(c.take_spare(i));
                false
            });
            if c.used == 0 || c.used + n <= b.cap {
                break;
            }
            // Without waiting, spare buffers are freed only if that makes room: a batch
            // that cannot go ahead now leaves them for the next one.
            let in_flight = c.used - c.spare.iter().map(Vec::capacity).sum::<usize>();
            if !wait && in_flight > 0 && in_flight + n > b.cap {
                drop(c);
                self.give_back(lent);
                return None;
            }
            if !c.free_spare() {
                c = b.freed.wait(c).unwrap_or_else(|e| e.into_inner());
            }
        }
        c.used += n;
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) += n;
        Some(lent)
    }

    /// Takes `n` bytes without waiting, past the cap if need be: for a message that turned out
    /// larger than the size the scan saw and was already held for. Waiting here could leave
    /// two fetchers each holding a batch and waiting for the other's.
    pub fn take(&self, n: usize) {
        self.budget.counts().used += n;
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) += n;
    }

    pub fn release(&self, n: usize) {
        self.give(n, None);
    }

    /// A stored message's body: its bytes are given back, and its buffer is kept for a later
    /// body (see [`ByteBudget`]).
    pub fn recycle(&self, body: Vec<u8>) {
        self.give(body.capacity(), Some(body));
    }

    /// Gives back `n` bytes of this share's, keeping `buffer` as a spare one if it is worth it,
    /// in one step: a waiting fetcher sees both at once.
    fn give(&self, n: usize, buffer: Option<Vec<u8>>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = n.min(*held);
        *held -= n;
        drop(held);
        let mut c = self.budget.counts();
        c.used = c.used.saturating_sub(n);
        if let Some(buffer) = buffer {
            self.budget.keep(&mut c, buffer);
        }
        drop(c);
        self.budget.freed.notify_all();
    }

    /// Lent buffers the session did not read a body into.
    pub fn give_back(&self, unused: Vec<Vec<u8>>) {
        let mut c = self.budget.counts();
        for buffer in unused {
            self.budget.keep(&mut c, buffer);
        }
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _used = self.budget.counts();
        self.budget.freed.notify_all();
    }
}

impl Drop for BudgetShare<'_> {
    fn drop(&mut self) {
        let held = *self.held.lock().unwrap_or_else(|e| e.into_inner());
        self.release(held);
    }
}

/// Batches of UIDs to fetch together: up to a count, and up to a size unless one message is
/// larger by itself.
pub(super) fn fetch_batches(to_copy: &[(Uid, u64)]) -> Vec<&[(Uid, u64)]> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < to_copy.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < to_copy.len()
            && end - start < FETCH_BATCH_MESSAGES
            && (end == start || bytes + to_copy[end].1 <= FETCH_BATCH_BYTES)
        {
            bytes += to_copy[end].1;
            end += 1;
        }
        batches.push(&to_copy[start..end]);
        start = end;
    }
    batches
}

/// A batch whose budget is held and whose FETCH is sent.
struct Sent {
    ticket: FetchTicket,
    /// Each UID's size as the scan saw it: what is held for it.
    expected: HashMap<Uid, usize>,
    reserved: usize,
    spare: Vec<Vec<u8>>,
}

impl Sent {
    /// Holds the batch's budget (waiting for room only when `wait`) and sends its FETCH.
    /// `None` when there is no room without waiting, or the consumer is gone.
    fn hold_and_send(
        src: &mut dyn MailSession,
        batch: &[(Uid, u64)],
        budget: &BudgetShare<'_>,
        wait: bool,
    ) -> std::result::Result<Option<Sent>, SessionError> {
        let sizes: Vec<usize> = batch.iter().map(|&(_, size)| size as usize).collect();
        let reserved: usize = sizes.iter().sum();
        let spare = match wait {
            true => budget.acquire_batch(&sizes),
            false => budget.try_acquire_batch(&sizes),
        };
        let Some(spare) = spare else { return Ok(None) };
        let uids: Vec<Uid> = batch.iter().map(|(u, _)| *u).collect();
        let ticket = match src.send_fetch(&uids) {
            Ok(ticket) => ticket,
            Err(e) => {
                budget.release(reserved);
                budget.give_back(spare);
                return Err(e);
            }
        };
        Ok(Some(Sent::new(ticket, batch, reserved, spare)))
    }

    /// Holds the budget of a batch whose FETCH was sent before (by the fetcher of the folder
    /// before, [`Presented`]), waiting for room; `None` when the consumer is gone.
    fn hold_sent(
        ticket: FetchTicket,
        batch: &[(Uid, u64)],
        budget: &BudgetShare<'_>,
    ) -> Option<Sent> {
        let sizes: Vec<usize> = batch.iter().map(|&(_, size)| size as usize).collect();
        let spare = budget.acquire_batch(&sizes)?;
        Some(Sent::new(ticket, batch, sizes.iter().sum(), spare))
    }

    fn new(
        ticket: FetchTicket,
        batch: &[(Uid, u64)],
        reserved: usize,
        spare: Vec<Vec<u8>>,
    ) -> Sent {
        Sent {
            ticket,
            expected: batch.iter().map(|&(u, size)| (u, size as usize)).collect(),
            reserved,
            spare,
        }
    }

    /// Gives back what the batch still holds and was not used: its unsent bytes and the spare
    /// buffers no body was read into.
    fn give_back(self, budget: &BudgetShare<'_>) {
        budget.release(self.reserved);
        budget.give_back(self.spare);
    }

    /// Reads the batch's answers and drops them (a FETCH sent behind a SELECT that failed, or
    /// that selected a folder whose UIDs changed), then gives back what it holds. A refusal
    /// is what such a FETCH may get (no folder selected); only a broken session is an error.
    fn drop_answers(
        self,
        src: &mut dyn MailSession,
        budget: &BudgetShare<'_>,
    ) -> std::result::Result<(), SessionError> {
        let Sent {
            ticket,
            reserved,
            mut spare,
            ..
        } = self;
        let read = src.finish_fetch(ticket, &mut spare, &mut |_| ControlFlow::Continue(()));
        budget.release(reserved);
        budget.give_back(spare);
        match read {
            Err(e) if !e.is_refusal() => Err(e),
            _ => Ok(()),
        }
    }
}

/// Reads the bodies batch by batch. The budget for a batch is held, by the sizes the scan
/// saw, *before* its FETCH is sent: a message in the fetcher's hands has always been paid for,
/// so the bodies in memory between source and target stay within the budget (plus what a
/// server under-reported within a batch). Each message's part passes to the appender with it,
/// which gives it back once the message is stored; what the server did not send (a message
/// expunged meanwhile) is given back when the batch ends.
///
/// The next batch's FETCH goes out before the current one is read, when the budget has room
/// for it at once: a distant source then streams one batch after the other without a round
/// trip's pause between them. It never waits for that room while a batch is unread (the
/// room comes from that batch's messages being stored); without room, the next batch is
/// held and sent once the current one is read, as without this.
fn fetch_messages(
    src: &mut dyn MailSession,
    folder: &Selecting<'_>,
    order: CopyOrder<'_>,
    tx: SyncSender<Message>,
    budget: &BudgetShare<'_>,
) -> std::result::Result<Option<Presented>, FetchEnd> {
    let batches = fetch_batches(order.to_copy);
    let first = batches.first().copied();
    let mut ahead = match order.presented {
        Some(p) => take_presented(src, folder, p, first, budget)?,
        None => select_with(src, folder, first, budget)?,
    };
    for (i, batch) in batches.iter().enumerate() {
        let sent = match ahead.take() {
            Some(sent) => sent,
            None => match Sent::hold_and_send(src, batch, budget, true)? {
                Some(sent) => sent,
                None => return Err(FetchEnd::Stopped),
            },
        };
        if let Some(next) = batches.get(i + 1) {
            ahead = match Sent::hold_and_send(src, next, budget, false) {
                Ok(next) => next,
                Err(e) => {
                    sent.give_back(budget);
                    return Err(e.into());
                }
            };
        }
        // While the next batch's bytes are held, a message larger than the scan said takes
        // its room past the cap, never waits for it (see below). A batch ahead that holds
        // nothing (a server that reports no sizes) changes nothing: its messages still wait.
        let holding_ahead = ahead.as_ref().is_some_and(|a| a.reserved > 0);
        let mut gone = false;
        let Sent {
            ticket,
            mut expected,
            mut reserved,
            mut spare,
        } = sent;
        let fetched = src.finish_fetch(ticket, &mut spare, &mut |m| {
            let paid = expected.remove(&m.uid).unwrap_or(0);
            reserved -= paid;
            // A body is charged by the memory it holds: a lent buffer may be larger.
            let size = m.body.capacity();
            if size > paid && reserved == 0 && !holding_ahead {
                // Nothing more is held: wait for room, as for a batch. A server that reports
                // no sizes gets this order for every message: read, then wait.
                if !budget.acquire(size - paid) {
                    gone = true;
                    return ControlFlow::Break(());
                }
            } else if size > paid {
                budget.take(size - paid);
            } else {
                budget.release(paid - size);
            }
            if tx.send(Message::from(m)).is_err() {
                gone = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        budget.release(reserved);
        budget.give_back(spare);
        if gone || fetched.is_err() {
            if let Some(a) = ahead {
                a.give_back(budget);
            }
            return match fetched {
                Err(e) if !gone => Err(e.into()),
                _ => Err(FetchEnd::Stopped),
            };
        }
    }
    // Every batch read: the next folder's SELECT and first FETCH go out while this folder's
    // last messages are stored.
    match order.next {
        Some(next) => Ok(Some(present(src, next)?)),
        None => Ok(None),
    }
}

/// What a folder's copy is to do: its messages, what the copy before it sent for it (its
/// SELECT and first FETCH), and the folder after it, whose it sends once its own last batch
/// is read.
pub(super) struct CopyOrder<'a> {
    pub to_copy: &'a [(Uid, u64)],
    pub presented: Option<Presented>,
    pub next: Option<&'a NextCopy>,
}

impl CopyOrder<'_> {
    /// These messages, with nothing sent for them and nothing to send after.
    #[cfg(test)]
    fn alone(to_copy: &[(Uid, u64)]) -> CopyOrder<'_> {
        CopyOrder {
            to_copy,
            presented: None,
            next: None,
        }
    }
}

/// The folder a fetcher reads, and the UIDVALIDITY its scan saw.
struct Selecting<'a> {
    raw: &'a str,
    path: &'a str,
    uid_validity: UidValidity,
}

/// What stopped a fetcher before it read every batch.
#[derive(Debug)]
enum FetchEnd {
    /// The appending side stopped (its error is the one reported), or the budget closed.
    Stopped,
    /// The source failed, or the folder changed under the pass.
    Failed(SessionError),
}

impl From<SessionError> for FetchEnd {
    fn from(e: SessionError) -> FetchEnd {
        FetchEnd::Failed(e)
    }
}

/// Selects the folder, with the FETCH of its first batch sent right behind the SELECT (one
/// round trip for both, where the session sends ahead): returns that batch, sent, or `None`
/// when it is still to be sent. If the folder's UIDVALIDITY is no longer the scan's, the
/// batch's answers are read and dropped and the folder fails for this pass (its UIDs no
/// longer mean what the scan saw; the next pass reconciles it). If the SELECT fails, its
/// FETCH's answers are dropped the same way (no folder, or the one before, was selected)
/// and the folder is selected again on its own: a refusal is then the error, in the
/// server's words, and the batch is sent anew.
fn select_with(
    src: &mut dyn MailSession,
    folder: &Selecting<'_>,
    first: Option<&[(Uid, u64)]>,
    budget: &BudgetShare<'_>,
) -> std::result::Result<Option<Sent>, FetchEnd> {
    let ticket = src.send_select(folder.raw, false)?;
    let sent = match first {
        Some(batch) => match Sent::hold_and_send(src, batch, budget, true)? {
            Some(sent) => Some(sent),
            None => return Err(FetchEnd::Stopped),
        },
        None => None,
    };
    settle(src, folder, ticket, sent, budget)
}

/// Reads the answer of the folder's SELECT, sent with its first batch's FETCH behind it, as
/// [`select_with`] says.
fn settle(
    src: &mut dyn MailSession,
    folder: &Selecting<'_>,
    ticket: SelectTicket,
    sent: Option<Sent>,
    budget: &BudgetShare<'_>,
) -> std::result::Result<Option<Sent>, FetchEnd> {
    let changed = || {
        FetchEnd::Failed(SessionError::new(
            SessionErrorKind::Aborted,
            format!(
                "UIDVALIDITY of {} changed during the pass; it is reconciled on the next attempt",
                folder.path
            ),
        ))
    };
    let selected = src.finish_select(ticket);
    if let Ok(s) = &selected
        && s.uid_validity == folder.uid_validity
    {
        return Ok(sent);
    }
    if let Some(sent) = sent {
        sent.drop_answers(src, budget)?;
    }
    let selected = match selected {
        Ok(s) => s,
        Err(_) => src.select(folder.raw, false)?,
    };
    match selected.uid_validity == folder.uid_validity {
        true => Ok(None),
        false => Err(changed()),
    }
}

/// The folder to copy after this one: its SELECT and first batch's FETCH go out as soon as
/// this folder's last batch is read ([`Presented`]).
pub(super) struct NextCopy {
    pub raw: String,
    /// The UIDs of its first batch ([`fetch_batches`]).
    pub first: Vec<Uid>,
}

impl NextCopy {
    pub(super) fn of(raw: &str, to_copy: &[(Uid, u64)]) -> Option<NextCopy> {
        let first = fetch_batches(to_copy)
            .first()?
            .iter()
            .map(|m| m.0)
            .collect();
        Some(NextCopy {
            raw: raw.to_string(),
            first,
        })
    }
}

/// A folder's SELECT and its first batch's FETCH, sent by the fetcher of the folder before
/// it once that one's last batch was read: they travel while that folder is still being
/// stored, so the copy of the next folder does not begin with a round trip. The batch's
/// bytes are held only when its copy begins, before its answers are read; until then they
/// wait in the connection, not in memory.
#[derive(Debug)]
pub(super) struct Presented {
    raw: String,
    select: SelectTicket,
    first: FetchTicket,
}

/// Sends the next folder's SELECT and first FETCH ([`Presented`]).
fn present(
    src: &mut dyn MailSession,
    next: &NextCopy,
) -> std::result::Result<Presented, SessionError> {
    let select = src.send_select(&next.raw, false)?;
    let first = src.send_fetch(&next.first)?;
    src.flush()?;
    Ok(Presented {
        raw: next.raw.clone(),
        select,
        first,
    })
}

/// Begins a folder's copy with what the folder before it sent for it: holds the first
/// batch's bytes, then reads the SELECT's answer as [`select_with`] does. Sent for another
/// folder or batch (not as the engine plans them), it is read and dropped, and the folder
/// selected anew.
fn take_presented(
    src: &mut dyn MailSession,
    folder: &Selecting<'_>,
    presented: Presented,
    first: Option<&[(Uid, u64)]>,
    budget: &BudgetShare<'_>,
) -> std::result::Result<Option<Sent>, FetchEnd> {
    let batch = first.filter(|b| {
        presented.raw == folder.raw
            && b.iter()
                .map(|m| m.0)
                .eq(presented.first.uids.iter().copied())
    });
    let Some(batch) = batch else {
        drop_presented(src, presented)?;
        return select_with(src, folder, first, budget);
    };
    let Presented { select, first, .. } = presented;
    match Sent::hold_sent(first, batch, budget) {
        Some(sent) => settle(src, folder, select, Some(sent), budget),
        None => Err(FetchEnd::Stopped),
    }
}

/// Reads and drops what a fetcher sent for the next folder, when that folder's copy does not
/// begin with it (a folder copied again first): only a broken session is an error.
pub(super) fn drop_presented(
    src: &mut dyn MailSession,
    presented: Presented,
) -> std::result::Result<(), SessionError> {
    let selected = src.finish_select(presented.select);
    let read = src.finish_fetch(presented.first, &mut Vec::new(), &mut |_| {
        ControlFlow::Continue(())
    });
    for r in [selected.map(drop), read] {
        if let Err(e) = r
            && !e.is_refusal()
        {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::Connector;
    use crate::testing::{FakeConnector, FakeMailbox, Op, uid};

    /// A fake source whose INBOX holds these bodies, delivered in order: the server (for its
    /// counts), a session on it (nothing selected), the UIDs, and INBOX for the fetcher.
    fn inbox_of(
        bodies: &[Vec<u8>],
    ) -> (
        FakeConnector,
        Box<dyn MailSession>,
        Vec<Uid>,
        Selecting<'static>,
    ) {
        let mut mailbox = FakeMailbox::new();
        let uids = bodies
            .iter()
            .map(|b| mailbox.deliver("INBOX", b, &[], "01-Jan-2024 00:00:00 +0000"))
            .collect();
        let server = FakeConnector::new("old");
        server.add("alice", mailbox);
        let mut src = server.open("alice", None).ok().unwrap();
        let uid_validity = src.status("INBOX").unwrap().uid_validity;
        let inbox = Selecting {
            raw: "INBOX",
            path: "INBOX",
            uid_validity,
        };
        (server, src, uids, inbox)
    }

    /// The budget is held for a batch, by the scanned sizes, before its FETCH goes out (not
    /// once each body has been read); each message then carries its own size, corrected
    /// where the scan was wrong; what the server did not send is given back.
    #[test]
    fn the_budget_of_a_batch_is_held_before_its_fetch_and_follows_each_message() {
        let bodies: Vec<Vec<u8>> = (1..=3u8)
            .map(|i| vec![b'a' + i; 1000 * i as usize])
            .collect();
        let (_server, mut src, uids, inbox) = inbox_of(&bodies);
        // The third message is larger than the scan said; a fourth is gone from the server.
        let to_copy = [
            (uids[0], 1000),
            (uids[1], 2000),
            (uids[2], 2500),
            (uid(99), 700),
        ];
        let budget = ByteBudget::new(1 << 20);
        let share = budget.share();
        let used = || budget.used();
        // A channel without room: the fetcher waits at each message until it is taken.
        let (tx, rx) = sync_channel::<Message>(0);
        std::thread::scope(|s| {
            let fetcher = s.spawn(|| {
                fetch_messages(&mut *src, &inbox, CopyOrder::alone(&to_copy), tx, &share)
            });
            let first = rx.recv().unwrap();
            assert_eq!(first.body, bodies[0]);
            assert_eq!(
                used(),
                1000 + 2000 + 2500 + 700,
                "the whole batch was paid for when its first message came"
            );
            share.release(first.body.len());
            let rest: Vec<Message> = rx.iter().collect();
            fetcher.join().unwrap().unwrap();
            assert_eq!(rest.len(), 2);
            assert_eq!(
                used(),
                2000 + 3000,
                "the two messages not yet stored hold their real sizes, nothing else"
            );
            for m in rest {
                share.release(m.body.len());
            }
        });
        assert_eq!(used(), 0);
    }

    /// A server that reports no sizes: each message is paid for once read, and the fetcher
    /// waits for room before it reads on.
    #[test]
    fn without_scanned_sizes_each_message_waits_for_room_once_read() {
        let (_server, mut src, uids, inbox) = inbox_of(&vec![vec![b'x'; 600]; 3]);
        let to_copy: Vec<(Uid, u64)> = uids.iter().map(|&u| (u, 0)).collect();
        let budget = ByteBudget::new(1000);
        let share = budget.share();
        let (tx, rx) = sync_channel::<Message>(8);
        std::thread::scope(|s| {
            let fetcher = s.spawn(|| {
                fetch_messages(&mut *src, &inbox, CopyOrder::alone(&to_copy), tx, &share)
            });
            let first = rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                rx.try_recv().is_err(),
                "the second message waits: 600 + 600 bytes would pass the cap"
            );
            assert_eq!(budget.used(), 600);
            share.release(first.body.len());
            for m in rx.iter() {
                share.release(m.body.len());
            }
            fetcher.join().unwrap().unwrap();
        });
        assert_eq!(budget.used(), 0);
    }

    /// A server that reports no sizes, over more than one batch: a batch sent ahead holds
    /// nothing, so each message still waits for room once read and the cap holds.
    #[test]
    fn without_scanned_sizes_a_batch_sent_ahead_does_not_lift_the_cap() {
        let (_server, mut src, uids, inbox) =
            inbox_of(&vec![vec![b'x'; 600]; FETCH_BATCH_MESSAGES + 20]);
        let to_copy: Vec<(Uid, u64)> = uids.iter().map(|&u| (u, 0)).collect();
        assert_eq!(fetch_batches(&to_copy).len(), 2);
        let budget = ByteBudget::new(1000);
        let share = budget.share();
        let (tx, rx) = sync_channel::<Message>(8);
        std::thread::scope(|s| {
            let fetcher = s.spawn(|| {
                fetch_messages(&mut *src, &inbox, CopyOrder::alone(&to_copy), tx, &share)
            });
            let mut most = 0;
            for m in next_or_hang(rx, &share) {
                std::thread::sleep(Duration::from_micros(200));
                most = most.max(budget.used());
                share.release(m.body.len());
            }
            fetcher.join().unwrap().unwrap();
            assert!(most <= 1000, "{most} bytes held under a cap of 1000");
        });
        assert_eq!(budget.used(), 0);
    }

    /// A stored body's buffer is kept, counted against the cap, and lent to the next batch
    /// with a body it fits; a batch that needs room frees the spare buffers it cannot use
    /// instead of waiting; buffers too small or too large to be worth keeping are freed.
    #[test]
    fn stored_bodies_buffers_are_kept_within_the_cap_and_lent_to_the_next_batch() {
        let budget = ByteBudget::new(4 << 20);
        let share = budget.share();
        let body = |n: usize| {
            let mut b = Vec::with_capacity(n);
            b.resize(n, b'm');
            b
        };
        // Two bodies in flight, then stored.
        assert!(share.acquire_batch(&[300_000, 500_000]).unwrap().is_empty());
        let (a, b) = (body(300_000), body(500_000));
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        share.recycle(a);
        share.recycle(b);
        assert_eq!(budget.spare_bytes(), 800_000, "both buffers kept");
        assert_eq!(budget.used(), 800_000, "and counted against the cap");
        // A batch of 450 kB and 10 kB: the 500 kB buffer holds the first, and the second is
        // too small to take one; the 300 kB buffer stays spare.
        let lent = share.acquire_batch(&[450_000, 10_000]).unwrap();
        assert_eq!(lent.iter().map(|b| b.as_ptr()).collect::<Vec<_>>(), [pb]);
        assert!(lent[0].is_empty() && lent[0].capacity() == 500_000);
        assert_eq!(budget.used(), 300_000 + 460_000);
        share.give_back(lent);
        assert_eq!(
            budget.spare_bytes(),
            800_000,
            "the unused loan is spare again"
        );
        share.release(460_000);
        let lent = share.acquire_batch(&[250_000]).unwrap();
        assert_eq!(lent.iter().map(|b| b.as_ptr()).collect::<Vec<_>>(), [pa]);
        share.give_back(lent);
        share.release(250_000);
        assert_eq!(budget.used(), 800_000);
        // A buffer more than twice a body's size is not lent for it...
        assert!(share.acquire_batch(&[100_000]).unwrap().is_empty());
        share.release(100_000);
        // ...and a body larger than every spare buffer gets the largest, to grow.
        let lent = share.acquire_batch(&[1_200_000]).unwrap();
        assert_eq!(lent.iter().map(|b| b.as_ptr()).collect::<Vec<_>>(), [pb]);
        share.give_back(lent);
        share.release(1_200_000);
        // A batch that would pass the cap frees spare buffers rather than wait for room (here
        // bodies too small to take one), the largest first, as many as it takes.
        std::thread::scope(|s| {
            let waiting = s.spawn(|| share.acquire_batch(&[60_000; 64]));
            std::thread::sleep(Duration::from_millis(50));
            let finished = waiting.is_finished();
            if !finished {
                share.close(); // lets the waiter go, so that the test fails rather than hangs
            }
            assert!(finished, "no waiting while spare buffers could be freed");
            assert!(waiting.join().unwrap().unwrap().is_empty());
        });
        assert_eq!(
            budget.spare_bytes(),
            300_000,
            "the largest freed: room enough"
        );
        assert_eq!(budget.used(), 300_000 + 3_840_000);
        share.release(3_840_000);
        assert!(share.acquire(4_000_000), "the last spare buffer freed too");
        assert_eq!(budget.spare_bytes(), 0);
        share.release(4_000_000);
        // Too small (copied out of the read buffer anyway) or a quarter of the cap or more.
        share.give_back(vec![body(10_000), body(2 << 20)]);
        assert_eq!(budget.spare_bytes(), 0);
        // Never past the cap: with 4.1 MB in flight, a 200 kB buffer is freed.
        assert!(share.acquire(4_100_000));
        share.give_back(vec![body(200_000)]);
        assert_eq!(budget.spare_bytes(), 0);
        assert_eq!(budget.used(), 4_100_000);
        drop(share);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn byte_budget_lets_one_big_message_through() {
        let budget = ByteBudget::new(10);
        let b = budget.share();
        assert!(b.acquire(50));
        b.release(50);
        assert!(b.acquire(6));
        b.close();
        assert!(!b.acquire(6));
    }

    #[test]
    fn the_budget_is_shared_and_a_dropped_share_gives_back_what_it_held() {
        let budget = ByteBudget::new(10);
        let a = budget.share();
        assert!(a.acquire(8));
        std::thread::scope(|s| {
            let waiting = s.spawn(|| {
                let b = budget.share();
                // Waits until `a` is dropped: 8 + 5 would pass the cap.
                b.acquire(5)
            });
            std::thread::sleep(Duration::from_millis(50));
            assert!(!waiting.is_finished(), "the second share waited for room");
            drop(a);
            assert!(waiting.join().unwrap());
        });
        assert_eq!(budget.used(), 0, "every share gave its bytes back");
    }

    /// The messages as they come; if none comes for 5 s while the fetcher is still at work
    /// (it waits on the budget for bytes only the unread messages would free: the deadlock
    /// the no-wait rule prevents), the budget is closed and the channel dropped to let it go,
    /// and the test fails rather than hangs.
    fn next_or_hang<'a>(
        rx: Receiver<Message>,
        share: &'a BudgetShare<'_>,
    ) -> impl Iterator<Item = Message> + 'a {
        std::iter::from_fn(move || match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                share.close();
                panic!("no message for 5 s: the fetcher waits for room a batch unread holds");
            }
        })
    }

    /// Runs the fetcher over three messages the scan said were 3 MB each (one batch each),
    /// under a budget of `cap` bytes, taking every message as it comes; returns the bodies
    /// in the order they came and how many fetches went out while another was unread.
    fn fetch_three_batches(cap: usize) -> (Vec<Vec<u8>>, u32) {
        let bodies: Vec<Vec<u8>> = (1..=3u8).map(|i| vec![b'a' + i; 1000]).collect();
        let (server, mut src, uids, inbox) = inbox_of(&bodies);
        let to_copy: Vec<(Uid, u64)> = uids.iter().map(|&u| (u, 3 << 20)).collect();
        assert_eq!(fetch_batches(&to_copy).len(), 3);
        // A channel without room: the fetcher waits at each message until it is taken.
        let (ended, got) = fetch_all(&mut *src, &inbox, CopyOrder::alone(&to_copy), cap, 0);
        ended.unwrap();
        (got, server.with("alice", |m| m.counts().fetches_ahead))
    }

    /// Runs the fetcher under a budget of `cap` bytes, over a channel of `bound` messages,
    /// taking every message as it comes (its bytes given back at once); returns how it ended
    /// and the bodies in the order they came, once everything held was given back.
    fn fetch_all(
        src: &mut dyn MailSession,
        folder: &Selecting<'_>,
        order: CopyOrder<'_>,
        cap: usize,
        bound: usize,
    ) -> (
        std::result::Result<Option<Presented>, FetchEnd>,
        Vec<Vec<u8>>,
    ) {
        let budget = ByteBudget::new(cap);
        let share = budget.share();
        let (tx, rx) = sync_channel::<Message>(bound);
        let out = std::thread::scope(|s| {
            let fetcher = s.spawn(|| fetch_messages(src, folder, order, tx, &share));
            let got: Vec<Vec<u8>> = next_or_hang(rx, &share)
                .map(|m| {
                    share.release(m.body.capacity());
                    m.body
                })
                .collect();
            (fetcher.join().unwrap(), got)
        });
        assert_eq!(budget.used(), 0, "everything held was given back");
        out
    }

    /// With room in the budget, each next batch's FETCH is sent before the answers of the
    /// one before are read (a distant source streams on without a round trip's pause).
    #[test]
    fn the_next_batch_is_sent_ahead_when_the_budget_has_room_for_it() {
        let (got, ahead) = fetch_three_batches(32 << 20);
        assert_eq!(
            got,
            (1..=3u8).map(|i| vec![b'a' + i; 1000]).collect::<Vec<_>>()
        );
        assert_eq!(ahead, 2, "the second and third batches went out ahead");
    }

    /// Without room for two batches at once, the next one is not sent ahead, and the fetcher
    /// does not wait for that room while a batch is unread: every message still comes.
    #[test]
    fn without_room_for_the_next_batch_it_waits_until_the_current_one_is_read() {
        let (got, ahead) = fetch_three_batches(5 << 20);
        assert_eq!(got.len(), 3);
        assert_eq!(ahead, 0);
    }

    /// Runs the fetcher over these messages of `folder` (1 kB each by the scan) under a 32 MB
    /// budget; returns how it ended and the bodies that came, in order.
    fn fetch_folder(
        src: &mut dyn MailSession,
        folder: &Selecting<'_>,
        uids: &[Uid],
        presented: Option<Presented>,
        next: Option<&NextCopy>,
    ) -> (
        std::result::Result<Option<Presented>, FetchEnd>,
        Vec<Vec<u8>>,
    ) {
        let to_copy: Vec<(Uid, u64)> = uids.iter().map(|&u| (u, 1000)).collect();
        let order = CopyOrder {
            to_copy: &to_copy,
            presented,
            next,
        };
        fetch_all(src, folder, order, 32 << 20, 8)
    }

    fn fetch_inbox(
        src: &mut dyn MailSession,
        inbox: &Selecting<'_>,
        uids: &[Uid],
    ) -> (
        std::result::Result<Option<Presented>, FetchEnd>,
        Vec<Vec<u8>>,
    ) {
        fetch_folder(src, inbox, uids, None, None)
    }

    /// Once its last batch is read, a fetcher sends the next folder's SELECT and first FETCH
    /// (and flushes them, so they travel while this folder is stored); the next folder's
    /// copy begins with them: no SELECT or FETCH of its own, every message once.
    #[test]
    fn the_next_folders_select_and_first_fetch_go_out_once_the_last_batch_is_read() {
        let bodies: Vec<Vec<u8>> = (1..=2u8).map(|i| vec![b'a' + i; 1000]).collect();
        let (server, mut src, uids, inbox) = inbox_of(&bodies);
        let later_bodies: Vec<Vec<u8>> = (5..=7u8).map(|i| vec![b'a' + i; 1000]).collect();
        let later_uids: Vec<Uid> = server.with("alice", |m| {
            m.add_folder("Later");
            let at = "01-Jan-2024 00:00:00 +0000";
            later_bodies
                .iter()
                .map(|b| m.deliver("Later", b, &[], at))
                .collect()
        });
        let later = Selecting {
            raw: "Later",
            path: "Later",
            uid_validity: src.status("Later").unwrap().uid_validity,
        };
        let later_copy: Vec<(Uid, u64)> = later_uids.iter().map(|&u| (u, 1000)).collect();
        let next = NextCopy::of("Later", &later_copy).unwrap();
        let (ended, got) = fetch_folder(&mut *src, &inbox, &uids, None, Some(&next));
        assert_eq!(got, bodies);
        let presented = ended.unwrap().expect("the next folder's commands sent");
        let counts = server.with("alice", |m| m.counts().clone());
        assert_eq!(
            (counts.selects, counts.fetches, counts.flushes),
            (1, 1, 1),
            "Later's SELECT and FETCH sent and flushed, not yet answered"
        );
        let (ended, got) = fetch_folder(&mut *src, &later, &later_uids, Some(presented), None);
        assert!(ended.unwrap().is_none());
        assert_eq!(got, later_bodies);
        let counts = server.with("alice", |m| m.counts().clone());
        assert_eq!(
            (counts.selects, counts.fetches, counts.fetches_behind_select),
            (2, 2, 2),
            "one SELECT and one FETCH per folder, each FETCH behind its SELECT"
        );
    }

    /// The first batch's FETCH goes out behind the folder's SELECT. A SELECT refused (here
    /// a busy server, once) leaves that FETCH's answers dropped and the folder selected again
    /// on its own; then every message comes, once.
    #[test]
    fn the_first_fetch_goes_behind_the_select_and_a_refused_select_is_asked_again() {
        let bodies: Vec<Vec<u8>> = (1..=3u8).map(|i| vec![b'a' + i; 1000]).collect();
        let (server, mut src, uids, inbox) = inbox_of(&bodies);
        let (ended, got) = fetch_inbox(&mut *src, &inbox, &uids);
        ended.unwrap();
        assert_eq!(got, bodies);
        let counts = server.with("alice", |m| m.counts().clone());
        assert_eq!((counts.fetches_behind_select, counts.selects), (1, 1));

        server.with("alice", |m| {
            m.reset_counts();
            m.fail_next(
                Op::Select,
                SessionError::refused(Some("UNAVAILABLE"), "NO [UNAVAILABLE] Try again"),
            );
        });
        let (ended, got) = fetch_inbox(&mut *src, &inbox, &uids);
        ended.unwrap();
        assert_eq!(
            got, bodies,
            "each message once, none from the dropped answers"
        );
        let counts = server.with("alice", |m| m.counts().clone());
        assert_eq!(
            counts.selects, 1,
            "the SELECT asked again, alone, went through"
        );
        assert_eq!(
            (counts.fetches_behind_select, counts.fetches),
            (1, 1),
            "the FETCH behind the refused SELECT found no folder; the one sent anew read it"
        );

        // Refused for good: that refusal is the error, in the server's words.
        server.with("alice", |m| {
            for _ in 0..2 {
                m.fail_next(
                    Op::Select,
                    SessionError::refused(None, "NO Mailbox is gone"),
                );
            }
        });
        let (ended, got) = fetch_inbox(&mut *src, &inbox, &uids);
        assert!(got.is_empty());
        match ended {
            Err(FetchEnd::Failed(e)) => assert_eq!(e.message, "NO Mailbox is gone"),
            other => panic!("{other:?}"),
        }
    }

    /// A folder whose UIDVALIDITY is no longer the scan's: nothing of it reaches the
    /// appender (its UIDs name other messages now), the folder fails with a message that
    /// says so, and the session is left in step (the dropped FETCH's answers were read).
    #[test]
    fn a_folder_whose_uidvalidity_changed_since_the_scan_is_not_copied() {
        let bodies: Vec<Vec<u8>> = (1..=3u8).map(|i| vec![b'a' + i; 1000]).collect();
        let (server, mut src, uids, inbox) = inbox_of(&bodies);
        server.with("alice", |m| m.renumber("INBOX", 77));
        let (ended, got) = fetch_inbox(&mut *src, &inbox, &uids);
        assert!(got.is_empty());
        match ended {
            Err(FetchEnd::Failed(e)) => assert_eq!(
                e.message,
                "UIDVALIDITY of INBOX changed during the pass; it is reconciled on the next attempt"
            ),
            other => panic!("{other:?}"),
        }
        let ticket = src.send_fetch(&uids).unwrap();
        let mut n = 0;
        src.finish_fetch(ticket, &mut Vec::new(), &mut |_| {
            n += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(n, 3);
    }

    /// A batch that cannot be held without waiting frees no spare buffers: they stay for
    /// the batch that can.
    #[test]
    fn a_batch_held_without_waiting_frees_spare_buffers_only_to_make_room() {
        let budget = ByteBudget::new(4 << 20);
        let share = budget.share();
        assert!(share.acquire(3 << 20));
        share.recycle(Vec::with_capacity(512 << 10));
        assert_eq!(budget.spare_bytes(), 512 << 10);
        share.release(1 << 20);
        // 1.5 MB in flight, 0.5 MB spare: 3 MB more cannot fit, 2.5 MB can once the spare goes.
        assert_eq!(budget.used(), 2 << 20);
        assert!(share.try_acquire_batch(&[3 << 20]).is_none());
        assert_eq!(
            budget.spare_bytes(),
            512 << 10,
            "kept: freeing it would not make room"
        );
        assert_eq!(
            budget.used(),
            2 << 20,
            "nothing held for the batch that did not fit"
        );
        // Bodies too small for a spare buffer: it is freed, not lent.
        let lent = share.try_acquire_batch(&[32 << 10; 80]).unwrap();
        assert!(lent.is_empty());
        assert_eq!(budget.spare_bytes(), 0, "freed to make room");
        assert_eq!(budget.used(), 4 << 20);
    }

    #[test]
    fn fetch_batches_are_bounded_by_count_and_size() {
        let small: Vec<(Uid, u64)> = (1..=1200).map(|u| (uid(u), 1000)).collect();
        let sizes: Vec<usize> = fetch_batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [500, 500, 200]);
        let big = [
            (uid(1), 20 << 20),
            (uid(2), 1),
            (uid(3), 3 << 20),
            (uid(4), 2 << 20),
        ];
        let sizes: Vec<usize> = fetch_batches(&big).iter().map(|b| b.len()).collect();
        // A message over the batch size goes alone; the rest fill up to the size.
        assert_eq!(sizes, [1, 2, 1]);
    }
}

//! Phase 3b: copying one folder's new messages. A fetcher thread reads bodies from the source
//! in batches and hands them over a channel bounded by a byte budget; this thread groups them
//! and stores them on the target ([`super::append`]).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::decide::Vanished;
use super::scan::FolderWork;
use super::{EngineError, Pass, Result, on};
use crate::folders::FolderTree;
use crate::model::{Flags, Side, Uid};
use crate::ports::{FetchedMessage, MailSession, SessionError, SessionErrorKind};

const FETCH_BATCH_BYTES: u64 = 16 << 20;
const FETCH_BATCH_MESSAGES: usize = 500;
pub(super) const GROUP_MESSAGES: usize = 128;
const GROUP_BYTES: usize = 8 << 20;
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
        to_copy: &[(Uid, u64)],
        vanished: &mut Vanished,
    ) -> Result<()> {
        // The scan left another folder selected: select this one again, and make sure its
        // UIDs still mean what the scan saw.
        let selected = src
            .select(&w.source.raw_name, false)
            .map_err(on(Side::Source))?;
        if selected.uid_validity != w.uid_validity {
            return Err(EngineError::Session {
                side: Side::Source,
                source: SessionError::new(
                    SessionErrorKind::Aborted,
                    format!(
                        "UIDVALIDITY of {} changed during the pass; it is reconciled on the \
                         next attempt",
                        w.source.path
                    ),
                ),
            });
        }
        let budget = self.ctx.budget.share();
        let (tx, rx) = sync_channel::<Message>(256);
        let fetch_budget = &budget;
        let mut moves = Vec::new();
        std::thread::scope(|scope| {
            let fetcher = scope.spawn(move || fetch_messages(src, to_copy, tx, fetch_budget));
            let appended = self.append_messages(dst, w, rx, &budget, vanished, &mut moves);
            budget.close();
            let fetched = fetcher.join().unwrap_or_else(|_| {
                Err(SessionError::new(
                    SessionErrorKind::Aborted,
                    "the fetcher thread panicked",
                ))
            });
            appended?;
            match fetched {
                Ok(()) => Ok(()),
                // The fetcher stopped because the appending side did: its error is reported.
                Err(e) if e.kind == SessionErrorKind::Aborted => Ok(()),
                Err(e) => Err(EngineError::Session {
                    side: Side::Source,
                    source: e,
                }),
            }
        })?;
        self.apply_moves(dst, tree, &w.item.target_raw_name, moves)
    }
}

/// The next group of messages: at least one (`None` when the fetcher is done), then whatever
/// arrives without a gap longer than the wait, up to a count and a size. `busy`: another
/// group is on the wire.
pub(super) fn next_group(rx: &Receiver<Message>, busy: bool) -> Option<Vec<Message>> {
    let wait = if busy {
        GROUP_WAIT_BUSY
    } else {
        GROUP_WAIT_IDLE
    };
    let first = rx.recv().ok()?;
    let mut bytes = first.body.len();
    let mut group = vec![first];
    while group.len() < GROUP_MESSAGES && bytes < GROUP_BYTES {
        match rx.recv_timeout(wait) {
            Ok(m) => {
                bytes += m.body.len();
                group.push(m);
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(group)
}

/// Bytes of message bodies held in memory between the fetchers and the appenders, for the
/// whole process: every mailbox's copy takes from the same budget, so memory stays bounded
/// whatever the concurrency. A message larger than the budget still passes, alone.
pub struct ByteBudget {
    cap: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

/// The default budget of a process: a 30 MB message passes with room to spare, and four
/// mailboxes at once keep their pipelines full on a LAN (measured in the benchmark).
pub const PROCESS_BYTE_BUDGET: usize = 32 << 20;

impl ByteBudget {
    pub fn new(cap: usize) -> ByteBudget {
        ByteBudget {
            cap,
            used: Mutex::new(0),
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
}

/// A fetcher's and its appender's part of the [`ByteBudget`].
pub(super) struct BudgetShare<'a> {
    budget: &'a ByteBudget,
    held: Mutex<usize>,
    /// Set when the appender is gone: the fetcher must stop waiting.
    closed: AtomicBool,
}

impl BudgetShare<'_> {
    /// Returns false when the consumer is gone.
    pub fn acquire(&self, n: usize) -> bool {
        let b = self.budget;
        let mut used = b.used.lock().unwrap_or_else(|e| e.into_inner());
        // `closed` is set before the notifying thread takes the lock, so a waiter that saw it
        // clear is already waiting when the notification comes.
        while !self.closed.load(Ordering::SeqCst) && *used > 0 && *used + n > b.cap {
            used = b.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        if self.closed.load(Ordering::SeqCst) {
            return false;
        }
        *used += n;
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) += n;
        true
    }

    pub fn release(&self, n: usize) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = n.min(*held);
        *held -= n;
        drop(held);
        let mut used = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = used.saturating_sub(n);
        self.budget.freed.notify_all();
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _used = self.budget.used.lock().unwrap_or_else(|e| e.into_inner());
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

fn fetch_messages(
    src: &mut dyn MailSession,
    to_copy: &[(Uid, u64)],
    tx: SyncSender<Message>,
    budget: &BudgetShare<'_>,
) -> std::result::Result<(), SessionError> {
    let stopped = || SessionError::new(SessionErrorKind::Aborted, "the target side stopped");
    for batch in fetch_batches(to_copy) {
        let uids: Vec<Uid> = batch.iter().map(|(u, _)| *u).collect();
        let mut gone = false;
        src.fetch(&uids, &mut |m| {
            if !budget.acquire(m.body.len()) || tx.send(Message::from(m)).is_err() {
                gone = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        if gone {
            return Err(stopped());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::uid;

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
        assert_eq!(
            *budget.used.lock().unwrap(),
            0,
            "every share gave its bytes back"
        );
    }

    #[test]
    fn fetch_batches_are_bounded_by_count_and_size() {
        let small: Vec<(Uid, u64)> = (1..=1200).map(|u| (uid(u), 1000)).collect();
        let sizes: Vec<usize> = fetch_batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [500, 500, 200]);
        let big = [
            (uid(1), 20 << 20),
            (uid(2), 1),
            (uid(3), 10 << 20),
            (uid(4), 10 << 20),
        ];
        let sizes: Vec<usize> = fetch_batches(&big).iter().map(|b| b.len()).collect();
        // A message over the batch size goes alone; the rest fill up to the size.
        assert_eq!(sizes, [1, 2, 1]);
    }
}

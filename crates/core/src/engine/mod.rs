//! The copy engine: one pass over one entry (a source mailbox and its target mailbox).
//!
//! A pass, in order (one module per phase):
//! 1. log in to both servers, read both folder trees, plan the target tree, create missing
//!    folders and make the target's subscriptions for the job's folders equal the source's
//!    (this file);
//! 2. remove the copies a process that lost the entry's lease made after the take-over
//!    (orphans), then resolve `pending` ledger rows left by a killed pass ([`reconcile`]);
//! 3. per source folder: skip it after one STATUS if nothing changed since the last checkpoint;
//!    otherwise scan UIDs and flags ([`scan`]), copy what the ledger lacks ([`copy`], with
//!    [`append`] storing on the target), and set changed flags ([`moves`]);
//! 4. messages that vanished from one folder and appear in another (same fingerprint) are moved
//!    on the target, not copied again; a UIDVALIDITY change is resolved the same way
//!    ([`moves`]).
//!
//! The engine talks to the world only through the ports: [`MailSession`]s opened by the
//! [`Connector`]s, the [`Store`], and the [`Observer`]. Its decisions are pure functions in
//! [`decide`], unit-tested there; `tests` runs whole passes against a fake session.

mod append;
mod copy;
pub mod decide;
mod moves;
mod reconcile;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::folders::{FolderPlanItem, FolderRules, FolderTree};
use crate::job::Date;
use crate::model::{
    Checkpoint, Entry, EntryState, Failure, RunEntry, RunId, Side, Uid, UidValidity,
};
use crate::ports::{
    ConnectError, Connector, EntryPasswords, FolderStatus, MailSession, Observer, SessionError,
    Store, StoreError, TreeChange,
};
use scan::{FolderWork, SCANS_AHEAD, ScanWay, ScansAhead};

pub use copy::{ByteBudget, PROCESS_BYTE_BUDGET};
use copy::{CopyOrder, NextCopy};
use reconcile::reconcile_pending;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{side}: {source}")]
    Session {
        side: Side,
        #[source]
        source: SessionError,
    },
    #[error("{side} login: {source}")]
    Login {
        side: Side,
        #[source]
        source: SessionError,
    },
    #[error("State database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

impl EngineError {
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Session { source, .. } | EngineError::Login { source, .. } => {
                source.is_transient()
            }
            EngineError::Store(e) => e.is_transient(),
            EngineError::Config(_) => false,
        }
    }

    fn connect(side: Side, e: ConnectError) -> EngineError {
        match e {
            ConnectError::Config(m) => EngineError::Config(m),
            ConnectError::Connect(source) => EngineError::Session { side, source },
            ConnectError::Login(source) => EngineError::Login { side, source },
        }
    }
}

type Result<T> = std::result::Result<T, EngineError>;

fn on(side: Side) -> impl Fn(SessionError) -> EngineError {
    move |source| EngineError::Session { side, source }
}

/// What limits a pass: folder scope, dates, deleted messages.
#[derive(Debug, Clone)]
pub struct PassSettings {
    pub rules: FolderRules,
    /// Messages received on or after this day.
    pub since: Option<Date>,
    /// Messages received before this day.
    pub until: Option<Date>,
    pub skip_deleted: bool,
}

impl PassSettings {
    /// A text that changes whenever a message filter changes, so that checkpoints taken under
    /// another filter do not let a folder be skipped. Its form is the one earlier versions
    /// stored, so their checkpoints stay valid.
    pub fn filter_key(&self) -> String {
        format!(
            "since={:?};until={:?};skip_deleted={}",
            self.since.map(|d| d.imap_format()),
            self.until.map(|d| d.imap_format()),
            self.skip_deleted
        )
    }
}

/// Everything a pass needs besides the entry itself.
pub struct PassContext<'a> {
    pub source: &'a dyn Connector,
    pub target: &'a dyn Connector,
    pub settings: &'a PassSettings,
    pub store: &'a Mutex<Box<dyn Store>>,
    /// Bytes of message bodies in memory, shared by every pass of the process.
    pub budget: &'a ByteBudget,
    pub run: RunId,
    pub observer: &'a dyn Observer,
    /// How many times in a row a failed attempt that made no progress is tried again before
    /// the entry fails: an attempt that copied, moved or flag-updated a message, recorded a
    /// refusal or finished a folder resets the count (and the backoff).
    pub retries: u32,
    /// The first backoff; it doubles after each attempt without progress, up to
    /// `retry_max_delay`, with jitter.
    pub retry_delay: Duration,
    /// The longest wait between two attempts.
    pub retry_max_delay: Duration,
    /// Set by the runner to stop: the attempt in progress finishes, but a failed one is not
    /// tried again (the next `migrate` resumes from the ledger).
    pub stop: &'a AtomicBool,
}

/// What one pass of an entry learned that its retried attempts must not count again: an
/// attempt that breaks off is followed by another that scans the unfinished folders again.
#[derive(Default)]
struct Attempts {
    /// Messages left out by the filters, per source folder, as its latest scan found.
    skipped: BTreeMap<String, u64>,
    /// Messages the target refused (source folder, UIDVALIDITY, UID): recorded once.
    refused: HashSet<(String, UidValidity, Uid)>,
    /// Source folders whose work this pass finished (checkpointed or not). Kept as a set
    /// because without CONDSTORE a finished folder is scanned and finished again by every
    /// later attempt, which must not count as progress.
    finished: HashSet<String>,
    /// Messages an attempt stored whose answers the connection lost, found on the target by
    /// the next attempt's reconciliation: copied, though no attempt counted them.
    reconciled: u64,
    /// Orphans (copies a process that lost the entry's lease made) judged so far.
    orphans: reconcile::OrphanWork,
    /// Full scans of source folders not finished yet, kept for the next attempts
    /// ([`scan::KeptScan`]): an attempt cut off while scanning goes on from the last UID read.
    scans: HashMap<String, scan::KeptScan>,
    /// Messages read for the first time by those scans.
    scanned: u64,
    /// The largest group of APPENDs to send at once, once a connection was lost with groups
    /// unanswered (`None`: [`copy::GROUP_BYTES`]). A MULTIAPPEND stores all or nothing, so
    /// on a link that drops every few megabytes a group larger than the drop distance would
    /// never be stored; each loss cuts the cap to a quarter of the largest group lost, and
    /// each group stored lets it grow by an eighth again (see [`Attempts::group_lost`]).
    group_cap: Option<usize>,
}

impl Attempts {
    /// How much work the attempts so far have done; it only grows, and grows exactly when an
    /// attempt made progress. Copies, moves, flag updates, reconciled intents and settled
    /// orphans are counted once because each changes the ledger (or the orphans), so a later
    /// attempt does not do them again; that is also why retrying while this grows ends: a
    /// pass has only so much to do. Messages scanned count once too: a kept scan is never read
    /// again, only its end.
    fn progress(&self, stats: &RunEntry) -> u64 {
        stats.copied
            + stats.moved
            + stats.flags_updated
            + self.reconciled
            + self.orphans.settled
            + self.scanned
            + self.refused.len() as u64
            + self.finished.len() as u64
    }

    /// The most bytes the next group of APPENDs may carry (at least one message goes).
    fn group_bytes(&self) -> usize {
        self.group_cap.unwrap_or(copy::GROUP_BYTES)
    }

    /// A connection was lost while groups of up to `largest` bytes were unanswered: the
    /// groups from now on carry at most a quarter of that.
    fn group_lost(&mut self, largest: usize) {
        self.group_cap = Some(self.group_bytes().min(largest / 4).max(1));
    }

    /// A group was stored: the cap a loss set grows by an eighth, back to the default.
    fn group_stored(&mut self) {
        if let Some(cap) = self.group_cap {
            let grown = cap.saturating_add(cap / 8 + 1);
            self.group_cap = (grown < copy::GROUP_BYTES).then_some(grown);
        }
    }
}

/// Runs one pass for an entry, retrying transient failures for as long as the attempts make
/// progress; never panics on server trouble: the result says what happened, with the server's
/// words.
///
/// Every attempt resumes from the ledger, so retrying costs a login and a scan, never a
/// duplicate: a flaky network that drops the connection every few megabytes still lets the
/// pass finish. The entry fails only after `retries` retries in a row copied nothing (and
/// changed nothing), with the last error's words.
pub fn migrate_entry(ctx: &PassContext<'_>, entry: &Entry, pw: &EntryPasswords) -> RunEntry {
    let started = Instant::now();
    let mut stats = RunEntry::new(entry.id.clone());
    let mut attempts = Attempts::default();
    let mut backoff = Backoff::new(ctx.retry_delay, ctx.retry_max_delay, entry.id.as_str());
    let mut without_progress = 0;
    let outcome = loop {
        let before = attempts.progress(&stats);
        let mut pass = Pass {
            ctx,
            entry,
            stats: &mut stats,
            attempts: &mut attempts,
        };
        let ran = pass.run(pw);
        stats.skipped = attempts.skipped.values().sum();
        let e = match ran {
            Ok(()) => break Ok(()),
            Err(e) => e,
        };
        if attempts.progress(&stats) > before {
            without_progress = 0;
            backoff.reset();
        } else {
            without_progress += 1;
        }
        if !e.is_transient() || without_progress > ctx.retries || ctx.stop.load(Ordering::SeqCst) {
            break Err(e);
        }
        backoff.wait(ctx.stop);
    };
    stats.seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(()) if stats.failed == 0 => stats.state = EntryState::Migrated,
        Ok(()) => stats.state = EntryState::Partial,
        Err(e) => {
            stats.state = EntryState::Failed;
            stats.error = Some(e.to_string());
        }
    }
    stats
}

/// Exponential backoff with jitter: each wait is the current delay plus up to half of it
/// again, so that the passes a server restart broke at the same instant do not all come back
/// at the same instant.
struct Backoff {
    first: Duration,
    max: Duration,
    delay: Duration,
    /// xorshift64 state; seeded from the clock and the entry, since quality does not matter
    /// and core takes no crate for randomness.
    seed: u64,
}

impl Backoff {
    fn new(first: Duration, max: Duration, entry: &str) -> Backoff {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let salt = entry.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Backoff {
            first,
            max,
            delay: first,
            // xorshift must not start at zero.
            seed: (clock ^ salt) | 1,
        }
    }

    fn reset(&mut self) {
        self.delay = self.first;
    }

    /// The next wait: the delay plus a jitter of up to half of it, never over
    /// the longest wait; then the delay doubles.
    fn next(&mut self) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = self.delay.as_nanos() as u64 / 2;
        let jitter = Duration::from_nanos(if half == 0 { 0 } else { self.seed % half });
        let wait = (self.delay + jitter).min(self.max);
        self.delay = (self.delay * 2).min(self.max);
        wait
    }

    /// Sleeps the next wait, in short steps so that a stop is obeyed within a tenth of a
    /// second.
    fn wait(&mut self, stop: &AtomicBool) {
        let until = Instant::now() + self.next();
        while !stop.load(Ordering::SeqCst) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }
}

struct Pass<'a, 'b> {
    ctx: &'a PassContext<'b>,
    entry: &'a Entry,
    stats: &'a mut RunEntry,
    attempts: &'a mut Attempts,
}

impl Pass<'_, '_> {
    fn store(&self) -> MutexGuard<'_, Box<dyn Store>> {
        self.ctx.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a message that could not be copied, with the server's words, once per pass
    /// however many attempts it takes.
    fn fail(
        &mut self,
        folder: &str,
        uid_validity: UidValidity,
        uid: Uid,
        size: u64,
        message_id: Option<String>,
        reason: String,
    ) -> Result<()> {
        if !self
            .attempts
            .refused
            .insert((folder.to_string(), uid_validity, uid))
        {
            return Ok(());
        }
        self.stats.failed += 1;
        let f = Failure {
            entry_id: self.entry.id.clone(),
            folder: folder.to_string(),
            uid: Some(uid),
            size: Some(size),
            message_id,
            reason,
        };
        self.store().record_failure(self.ctx.run, &f)?;
        Ok(())
    }

    fn run(&mut self, pw: &EntryPasswords) -> Result<()> {
        let target_login = self.entry.target_login.clone().ok_or_else(|| {
            EngineError::Config(format!("Entry {} has no target mailbox", self.entry.id))
        })?;
        let _src_permit = self.ctx.source.limit().acquire();
        let mut src = self
            .ctx
            .source
            .open(&self.entry.source_login, pw.source.as_deref())
            .map_err(|e| EngineError::connect(Side::Source, e))?;
        let _dst_permit = self.ctx.target.limit().acquire();
        let mut dst = self
            .ctx
            .target
            .open(&target_login, pw.target.as_deref())
            .map_err(|e| EngineError::connect(Side::Target, e))?;

        // The source's folder statuses come with its tree where the server can give them so
        // (LIST-STATUS). Read before the scans, as STATUS would be: a change after them is
        // seen by the scan or, at the latest, by the next pass (the checkpoint keeps these).
        let (src_tree, listed) = src.folders_and_statuses().map_err(on(Side::Source))?;
        let dst_tree = dst.folders().map_err(on(Side::Target))?;
        let plan = crate::folders::plan_folders(&src_tree, &dst_tree, &self.ctx.settings.rules);
        prepare_target_tree(dst.as_mut(), &dst_tree, &plan)?;
        reconcile_pending(
            dst.as_mut(),
            &dst_tree,
            self.ctx.store,
            &self.entry.id,
            &mut self.attempts.reconciled,
            &mut self.attempts.orphans,
        )?;

        // Scan every folder that changed; collect the work and the vanished ledger rows.
        // Every folder's STATUS first: those the tree did not bring in one round trip where
        // the session can, so a delta pass over a distant server waits one round trip (none
        // with LIST-STATUS), not one per folder.
        let mut work = Vec::new();
        let mut vanished = decide::Vanished::new();
        let sources: Vec<(&FolderPlanItem, &crate::folders::Folder)> = plan
            .iter()
            .filter(|i| i.selectable)
            .filter_map(|i| i.source.as_ref().map(|f| (i, f)))
            .collect();
        let unlisted: Vec<&str> = sources
            .iter()
            .map(|(_, f)| f.raw_name.as_str())
            .filter(|raw| !listed.contains_key(*raw))
            .collect();
        let mut asked = src
            .status_many(&unlisted)
            .map_err(on(Side::Source))?
            .into_iter();
        let mut folders = Vec::with_capacity(sources.len());
        for (item, f) in sources {
            let status = match listed.get(&f.raw_name) {
                Some(s) => s.clone(),
                None => asked.next().expect("one STATUS per folder asked"),
            };
            let checkpoint = self.store().checkpoint(&self.entry.id, f.path.as_str())?;
            let way = self.scan_way(f.path.as_str(), &status, checkpoint.as_ref());
            folders.push((item, f.raw_name.as_str(), status, checkpoint, way));
        }
        // The scans of every message go out several folders at a time, with their SELECTs.
        let raws: Vec<&str> = folders.iter().map(|f| f.1).collect();
        let ways: Vec<ScanWay> = folders.iter().map(|f| f.4).collect();
        let dated = self.ctx.settings.since.is_some() || self.ctx.settings.until.is_some();
        let mut ahead = ScansAhead::new(if dated { 1 } else { SCANS_AHEAD });
        for (i, (item, _, status, checkpoint, way)) in folders.into_iter().enumerate() {
            let ticket = match way {
                ScanWay::Unchanged => continue,
                ScanWay::Whole => Some(
                    ahead
                        .take(src.as_mut(), &raws, &ways, i)
                        .map_err(on(Side::Source))?,
                ),
                ScanWay::Apart => None,
            };
            let scanned = self.scan_folder(
                src.as_mut(),
                item,
                status,
                checkpoint,
                ticket,
                &mut vanished,
            )?;
            work.extend(scanned);
        }
        let (messages, bytes) = work.iter().fold((0, 0), |(m, b), w| {
            (
                m + w.to_copy.len() as u64,
                b + w.to_copy.iter().map(|(_, s)| s).sum::<u64>(),
            )
        });
        self.ctx.observer.planned(&self.entry.id, messages, bytes);
        // Rows the scans could not see gone, but that a new message may match: those marked
        // gone by an earlier pass (its folder is not read again if nothing else changed),
        // and those of folders the source no longer has (renamed or deleted there).
        let marked = self.seed_vanished(&src_tree, messages > 0, &mut vanished)?;
        let target_statuses = target_statuses(dst.as_mut(), &work)?;

        // Each folder's copy is handed what the copy before it sent for it (its SELECT and
        // first FETCH) and the folder after it, for which it sends them.
        let copies: Vec<Option<NextCopy>> = work
            .iter()
            .map(|w| NextCopy::of(&w.source.raw_name, &w.to_copy))
            .collect();
        let mut presented = None;
        for (i, mut w) in work.into_iter().enumerate() {
            let failed_before = self.stats.failed;
            if !w.to_copy.is_empty() {
                let to_copy = std::mem::take(&mut w.to_copy);
                w.target_status = target_statuses.get(&w.item.target_raw_name).cloned();
                let order = CopyOrder {
                    to_copy: &to_copy,
                    presented: presented.take(),
                    next: copies[i + 1..].iter().flatten().next(),
                };
                presented = self.copy_folder(
                    src.as_mut(),
                    dst.as_mut(),
                    &dst_tree,
                    &w,
                    order,
                    &mut vanished,
                )?;
            }
            self.update_flags(dst.as_mut(), &dst_tree, &w)?;
            self.attempts.scans.remove(w.source.path.as_str());
            self.attempts
                .finished
                .insert(w.source.path.as_str().to_string());
            if self.stats.failed == failed_before {
                let c = Checkpoint {
                    uid_validity: w.uid_validity.get(),
                    uid_next: w.status.uid_next,
                    messages: w.status.messages,
                    highest_modseq: w.status.highest_modseq,
                    filter: self.ctx.settings.filter_key(),
                };
                self.store()
                    .set_checkpoint(&self.entry.id, w.source.path.as_str(), &c)?;
            }
        }
        debug_assert!(presented.is_none(), "the last copy has no folder after it");
        // What vanished and matched nothing is remembered, for a message refiled later.
        let gone = decide::newly_gone(&vanished, &marked);
        if !gone.is_empty() {
            self.store().mark_gone(&self.entry.id, &gone)?;
        }
        // Copies that a process which lost this entry's lease made while this pass ran.
        reconcile::remove_orphans(
            dst.as_mut(),
            &dst_tree,
            self.ctx.store,
            &self.entry.id,
            &mut self.attempts.orphans,
        )?;
        src.logout();
        dst.logout();
        Ok(())
    }
}

/// Creates the planned target folders and makes the target's subscriptions for the job's
/// folders equal the source's (INBOX is never unsubscribed), as one batch of changes: one
/// round trip on a server over a network.
fn prepare_target_tree(
    dst: &mut dyn MailSession,
    dst_tree: &FolderTree,
    plan: &[FolderPlanItem],
) -> Result<()> {
    let subscribed_now: HashSet<&str> = dst_tree
        .folders()
        .filter(|f| f.subscribed)
        .map(|f| f.path.as_str())
        .collect();
    let mut done = HashSet::new();
    let mut changes = Vec::new();
    for item in plan {
        let name = item.target_raw_name.as_str();
        if !done.insert(name) {
            continue;
        }
        if item.create {
            // Another pass (or the server's autocreate) may have made it meanwhile: the
            // session takes that as done.
            changes.push(TreeChange::Create(name));
        }
        if item.source.is_none() {
            continue;
        }
        let is_sub = subscribed_now.contains(item.target_path.as_str());
        if item.subscribe && !is_sub {
            changes.push(TreeChange::Subscribe(name, true));
        } else if !item.subscribe && is_sub && item.target_path.as_str() != "INBOX" {
            changes.push(TreeChange::Subscribe(name, false));
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    dst.change_tree(&changes).map_err(on(Side::Target))
}

/// The STATUS of every target folder that messages are to be copied into, in one round trip
/// on a server over a network (not one per folder, before its first APPEND). A refusal (one
/// folder the server will not give a STATUS of) leaves them all to be asked folder by folder,
/// so that folder's error is its own and the folders before it are still copied.
fn target_statuses(
    dst: &mut dyn MailSession,
    work: &[FolderWork],
) -> Result<HashMap<String, FolderStatus>> {
    let mut names: Vec<&str> = work
        .iter()
        .filter(|w| !w.to_copy.is_empty())
        .map(|w| w.item.target_raw_name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    match dst.status_many(&names) {
        Ok(statuses) => Ok(names.into_iter().map(String::from).zip(statuses).collect()),
        Err(e) if e.is_refusal() => Ok(HashMap::new()),
        Err(e) => Err(on(Side::Target)(e)),
    }
}

/// The target server's name for a target folder path of the ledger.
fn target_raw_name(tree: &FolderTree, path: &str) -> String {
    tree.raw_name_for(&crate::folders::FolderPath::parse(path))
}

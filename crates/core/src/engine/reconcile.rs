//! Phase 2: intents left in doubt by a killed pass.
//!
//! A pass killed between committing an intent and recording its APPEND's answer leaves a
//! `pending` row: the message may or may not be on the target. Candidates are the target
//! messages at or above the UIDNEXT recorded in the intent that the ledger does not already
//! own; a candidate with the same fingerprint is the copy (recorded as copied), and an intent
//! with no such candidate was never stored (forgotten, so this pass copies it again). The
//! verdict itself is [`decide::reconcile`], given the candidates a batch at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::decide;
use super::{Result, on};
use crate::fingerprint::{Kind, fingerprint_as};
use crate::folders::{FolderPath, FolderTree};
use crate::model::{EntryId, Fingerprint, LedgerRow, Side, Uid};
use crate::ports::store::Orphan;
use crate::ports::{MailSession, SessionErrorKind, Store};

/// How long a target folder must stay unchanged before in-doubt intents are judged.
const QUIET_PERIOD: Duration = Duration::from_secs(2);
const QUIET_LIMIT: Duration = Duration::from_secs(60);
/// Candidate bodies fetched at a time.
const CANDIDATE_BATCH: usize = 200;

/// Settles the entry's orphans first ([`remove_orphans`]), then resolves its pending rows; adds
/// to `arrived` how many were found on the target (and are now recorded as copied), also when
/// it fails midway.
///
/// The candidates are fetched in batches, in UID order, and what each batch matched is recorded
/// at once: on a link that breaks every few messages, an attempt cut off midway keeps what it
/// judged, and the next one goes on from there (the matched candidates are the ledger's now, so
/// they are not fetched again). Judging batch by batch pairs intents and candidates exactly as
/// judging them all at once would ([`decide::reconcile`] takes the lowest UID first). An intent
/// is forgotten only once every candidate has been seen.
pub(super) fn reconcile_pending(
    dst: &mut dyn MailSession,
    tree: &FolderTree,
    store: &Mutex<Box<dyn Store>>,
    entry: &EntryId,
    arrived: &mut u64,
    orphans: &mut OrphanWork,
) -> Result<()> {
    let lock = || store.lock().unwrap_or_else(|e| e.into_inner());
    remove_orphans(dst, tree, store, entry, orphans)?;
    let pending = lock().ledger_pending(entry)?;
    if pending.is_empty() {
        return Ok(());
    }
    let mut by_folder: BTreeMap<String, Vec<LedgerRow>> = BTreeMap::new();
    for row in pending {
        by_folder
            .entry(row.target_folder.clone())
            .or_default()
            .push(row);
    }
    for (folder, mut rows) in by_folder {
        let path = FolderPath::parse(&folder);
        if tree.get(&path).is_some() {
            let raw = tree.raw_name_for(&path);
            wait_until_quiet(dst, &raw)?;
            let selected = dst.select(&raw, false).map_err(on(Side::Target))?;
            let low = decide::lowest_uidnext(&rows);
            let mut known: HashSet<Uid> = lock().target_uids(entry, &folder)?.into_iter().collect();
            // A recorded orphan is never adopted: it is removed instead (a holder may be
            // removing it now), and an intent it would have matched is copied again.
            known.extend(
                lock()
                    .orphans(entry)?
                    .into_iter()
                    .filter(|o| {
                        o.target_folder == folder && o.uid_validity == selected.uid_validity
                    })
                    .map(|o| o.uid),
            );
            if selected.exists > 0 {
                let mut candidates = Vec::new();
                // UIDNEXT is 0 only when a server left it out of STATUS: no UID is below 1,
                // so scanning from the first UID then sees the same messages.
                let from = Uid::new(low).unwrap_or(Uid::FIRST);
                dst.scan(from, &mut |m| {
                    if m.uid.get() >= low && !known.contains(&m.uid) {
                        candidates.push(m.uid);
                    }
                })
                .map_err(on(Side::Target))?;
                candidates.sort_unstable();
                for batch in candidates.chunks(CANDIDATE_BATCH) {
                    if rows.is_empty() {
                        break;
                    }
                    // Each candidate in every kind the intents hold (an earlier version's
                    // intents hold SHA-256); `decide::reconcile` lets a UID settle one intent.
                    let kinds = Kind::all_of(rows.iter().map(|r| &r.fingerprint));
                    let mut found: HashMap<Fingerprint, Vec<Uid>> = HashMap::new();
                    let mut received = HashSet::new();
                    let fetched = dst.fetch(batch, &mut |m| {
                        received.insert(m.uid);
                        for &kind in &kinds {
                            found
                                .entry(fingerprint_as(kind, &m.body))
                                .or_default()
                                .push(m.uid);
                        }
                        ControlFlow::Continue(())
                    });
                    if fetched.is_err() {
                        // Only the batch's first candidates, up to the first one not
                        // received, are judged: a later one may pair with an intent that a
                        // lower candidate, unseen, is the copy of.
                        let seen = batch.iter().take_while(|u| received.contains(u)).count();
                        let judged: HashSet<&Uid> = batch[..seen].iter().collect();
                        found
                            .values_mut()
                            .for_each(|u| u.retain(|u| judged.contains(u)));
                    }
                    rows = record_copies(&lock, entry, rows, found, arrived)?;
                    fetched.map_err(on(Side::Target))?;
                }
            }
        }
        // Every candidate was seen: the intents still unmatched were never stored.
        if !rows.is_empty() {
            let forgotten: Vec<&LedgerRow> = rows.iter().collect();
            lock().complete(entry, &[], &forgotten)?;
        }
    }
    Ok(())
}

/// Records the intents that candidates `found` are the copies of; returns the others.
fn record_copies<'s>(
    lock: &impl Fn() -> MutexGuard<'s, Box<dyn Store>>,
    entry: &EntryId,
    rows: Vec<LedgerRow>,
    found: HashMap<Fingerprint, Vec<Uid>>,
    arrived: &mut u64,
) -> Result<Vec<LedgerRow>> {
    let verdict = decide::reconcile(&rows, found);
    if !verdict.copied.is_empty() {
        lock().complete(entry, &verdict.copied, &[])?;
        *arrived += verdict.copied.len() as u64;
    }
    Ok(verdict.forgotten.into_iter().cloned().collect())
}

/// What the attempts of a pass learned about the entry's orphans.
#[derive(Default)]
pub(super) struct OrphanWork {
    /// Orphans a FETCH confirmed (their UID holds the copy) but no removal reached the
    /// server yet, because the connection broke first: the next attempt removes them without
    /// fetching them again. A UID is never given to another message under the same
    /// UIDVALIDITY, so the confirmation stays true (at worst the UID holds nothing by then).
    confirmed: HashSet<Orphan>,
    /// Steps taken with orphans so far, the attempts' progress with them: an orphan counts
    /// once when a FETCH confirms it and once when it is forgotten (removed from the target
    /// first, or found adopted or stale), since each step is kept and never done again. A
    /// progress figure only, never shown as a number of orphans.
    pub(super) settled: u64,
}

/// Removes the entry's orphans ([`Orphan`]: copies that APPENDs of a process which had lost
/// the entry's lease made on the target), under this pass's lease: an orphan the ledger names
/// was adopted by a reconciliation and is only forgotten; one whose folder has another
/// UIDVALIDITY now, or whose UID holds nothing or another message, is forgotten too (one in a
/// folder the tree does not show is left for a later pass); the others are removed from the
/// target, then forgotten. A target that cannot remove single messages (no UIDPLUS) keeps
/// them, and so does the store, for a later pass.
///
/// Each orphan is judged by itself, a batch at a time, and what a FETCH cut off midway
/// received is judged too and kept in `work`: on a link that breaks every few messages, each
/// attempt judges some, and the next removes those and goes on with the rest.
pub(super) fn remove_orphans(
    dst: &mut dyn MailSession,
    tree: &FolderTree,
    store: &Mutex<Box<dyn Store>>,
    entry: &EntryId,
    work: &mut OrphanWork,
) -> Result<()> {
    let lock = || store.lock().unwrap_or_else(|e| e.into_inner());
    let orphans = lock().orphans(entry)?;
    if orphans.is_empty() {
        return Ok(());
    }
    let mut by_folder: BTreeMap<String, Vec<Orphan>> = BTreeMap::new();
    for o in orphans {
        by_folder
            .entry(o.target_folder.clone())
            .or_default()
            .push(o);
    }
    for (folder, orphans) in by_folder {
        let path = FolderPath::parse(&folder);
        if tree.get(&path).is_none() {
            continue;
        }
        let known: HashSet<Uid> = lock().target_uids(entry, &folder)?.into_iter().collect();
        let selected = dst
            .select(&tree.raw_name_for(&path), true)
            .map_err(on(Side::Target))?;
        // Orphans no FETCH can confirm are forgotten at once: adopted ones, and those of an
        // earlier UIDVALIDITY.
        let (to_check, stale): (Vec<Orphan>, Vec<Orphan>) = orphans
            .into_iter()
            .partition(|o| o.uid_validity == selected.uid_validity && !known.contains(&o.uid));
        forget_orphans(&lock, entry, &stale, work)?;
        let (confirmed, mut unknown): (Vec<Orphan>, Vec<Orphan>) = to_check
            .into_iter()
            .partition(|o| work.confirmed.contains(o));
        remove_confirmed(dst, &lock, entry, confirmed, work)?;
        unknown.sort_by_key(|o| o.uid);
        for batch in unknown.chunks(CANDIDATE_BATCH) {
            let uids: Vec<Uid> = batch.iter().map(|o| o.uid).collect();
            // Each orphan's message in the kind its row holds.
            let kinds: HashMap<Uid, Kind> = batch
                .iter()
                .map(|o| (o.uid, Kind::of(&o.fingerprint)))
                .collect();
            let mut there: HashMap<Uid, Fingerprint> = HashMap::new();
            let fetched = dst.fetch(&uids, &mut |m| {
                let kind = kinds.get(&m.uid).copied().unwrap_or(Kind::CURRENT);
                there.insert(m.uid, fingerprint_as(kind, &m.body));
                ControlFlow::Continue(())
            });
            // After a cut, only the orphans received are judged: one the server did not send
            // may hold its copy still (the link broke first), whatever order the server sent
            // the others in.
            let (doomed, forget): (Vec<Orphan>, Vec<Orphan>) = batch
                .iter()
                .filter(|o| fetched.is_ok() || there.contains_key(&o.uid))
                .cloned()
                .partition(|o| there.get(&o.uid) == Some(&o.fingerprint));
            forget_orphans(&lock, entry, &forget, work)?;
            for o in &doomed {
                if work.confirmed.insert(o.clone()) {
                    work.settled += 1;
                }
            }
            fetched.map_err(on(Side::Target))?;
            remove_confirmed(dst, &lock, entry, doomed, work)?;
        }
    }
    Ok(())
}

/// Removes confirmed orphans from the selected folder, then forgets them.
fn remove_confirmed<'s>(
    dst: &mut dyn MailSession,
    lock: &impl Fn() -> MutexGuard<'s, Box<dyn Store>>,
    entry: &EntryId,
    doomed: Vec<Orphan>,
    work: &mut OrphanWork,
) -> Result<()> {
    if doomed.is_empty() {
        return Ok(());
    }
    let uids: Vec<Uid> = doomed.iter().map(|o| o.uid).collect();
    match dst.remove(&uids) {
        Ok(()) => {
            for o in &doomed {
                work.confirmed.remove(o);
            }
            forget_orphans(lock, entry, &doomed, work)
        }
        Err(e) if e.kind == SessionErrorKind::Unsupported => Ok(()),
        Err(e) => Err(on(Side::Target)(e)),
    }
}

/// Drops orphans from the store, counting them as settled.
fn forget_orphans<'s>(
    lock: &impl Fn() -> MutexGuard<'s, Box<dyn Store>>,
    entry: &EntryId,
    orphans: &[Orphan],
    work: &mut OrphanWork,
) -> Result<()> {
    if orphans.is_empty() {
        return Ok(());
    }
    let mut s = lock();
    for o in orphans {
        s.drop_orphan(entry, o)?;
        work.settled += 1;
    }
    Ok(())
}

/// Waits until a target folder stops changing. A killed client's pipelined APPENDs may still
/// sit in the server's input buffer, and servers (Dovecot among them) go on storing them after
/// the client is gone: judging intents before that backlog is stored would copy those messages
/// a second time. Only runs when a previous pass left intents in doubt.
fn wait_until_quiet(dst: &mut dyn MailSession, raw: &str) -> Result<()> {
    let started = Instant::now();
    let mut last = dst.status(raw).map_err(on(Side::Target))?;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < QUIET_PERIOD && started.elapsed() < QUIET_LIMIT {
        std::thread::sleep(Duration::from_millis(250));
        let now = dst.status(raw).map_err(on(Side::Target))?;
        if now.uid_next != last.uid_next || now.messages != last.messages {
            last = now;
            quiet_since = Instant::now();
        }
    }
    Ok(())
}

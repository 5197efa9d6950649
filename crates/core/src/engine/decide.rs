//! The engine's decisions, as pure functions over what the store and the servers said.
//!
//! Everything here is free of I/O so that each rule that keeps a copy exact — skip a folder,
//! copy a message, update its flags, treat it as moved, judge an intent after a crash — is
//! unit-tested on its own; the phases around them only gather inputs and apply the result.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::model::{Checkpoint, Fingerprint, Flags, LedgerRow, Uid, UidValidity};
use crate::ports::session::{FolderStatus, ScannedMessage};

/// Whether a folder can be skipped after one STATUS: it is exactly as the last pass left it
/// under the same filter. Only with CONDSTORE's HIGHESTMODSEQ, since without it a flag change
/// leaves STATUS as it was.
pub fn folder_unchanged(
    checkpoint: Option<&Checkpoint>,
    status: &FolderStatus,
    filter: &str,
) -> bool {
    checkpoint.is_some_and(|c| {
        c.uid_validity == status.uid_validity.get()
            && c.uid_next == status.uid_next
            && c.messages == status.messages
            && c.filter == filter
            && status.highest_modseq.is_some()
            && c.highest_modseq == status.highest_modseq
    })
}

/// When a folder may be read as a delta since its checkpoint: the mod-sequence to ask
/// `CHANGEDSINCE` of, and the checkpoint. Only when the folder is the same one (UIDVALIDITY),
/// under the same filters, both the checkpoint and STATUS have a HIGHESTMODSEQ and it grew
/// (a reset or a NOMODSEQ folder means a full read), and the checkpoint knows UIDNEXT (to
/// tell new messages from old ones).
pub fn delta_from<'a>(
    checkpoint: Option<&'a Checkpoint>,
    status: &FolderStatus,
    filter: &str,
) -> Option<(u64, &'a Checkpoint)> {
    let c = checkpoint?;
    let then = c.highest_modseq.filter(|&m| m > 0)?;
    let now = status.highest_modseq?;
    (c.uid_validity == status.uid_validity.get()
        && c.filter == filter
        && c.uid_next > 0
        && now > then)
        .then_some((then, c))
}

/// What a folder's scan saw.
#[derive(Debug, Clone, Copy)]
pub enum ScanKind<'a> {
    /// Every message: a ledger row whose message the scan did not see has vanished.
    Full,
    /// Only the messages changed since the checkpoint (`CHANGEDSINCE`); `present` is every
    /// UID of the folder when messages were expunged since, `None` when none were (the
    /// folder's count says so), so rows the scan did not see are still there.
    Changed { present: Option<&'a HashSet<Uid>> },
    /// Only the messages changed since the checkpoint, and the UIDs expunged since
    /// (QRESYNC's `VANISHED`, [`merge_ranges`]d and checked by [`vanished_exact`]): a row the
    /// scan did not see has vanished when its UID is listed.
    Vanished { gone: &'a [(Uid, Uid)] },
}

/// UID ranges sorted and merged, so that no two overlap or touch.
pub fn merge_ranges(mut ranges: Vec<(Uid, Uid)>) -> Vec<(Uid, Uid)> {
    ranges.sort_unstable();
    let mut out: Vec<(Uid, Uid)> = Vec::with_capacity(ranges.len());
    for (low, high) in ranges {
        match out.last_mut() {
            Some(last) if u64::from(low.get()) <= u64::from(last.1.get()) + 1 => {
                last.1 = last.1.max(high);
            }
            _ => out.push((low, high)),
        }
    }
    out
}

/// Whether `uid` is in merged ranges.
fn in_ranges(ranges: &[(Uid, Uid)], uid: Uid) -> bool {
    let i = ranges.partition_point(|(low, _)| *low <= uid);
    i > 0 && ranges[i - 1].1 >= uid
}

/// Whether a delta scan's list of UIDs expunged since the checkpoint (merged) accounts for
/// the folder exactly: it holds the checkpoint's messages, less the listed ones older than
/// the checkpoint's UIDNEXT, plus the new ones the scan saw. A server that lists UIDs gone
/// before the checkpoint too (it may, when it no longer knows when they went) fails this,
/// and the folder's UIDs are read instead.
pub fn vanished_exact(
    c: &Checkpoint,
    exists: u32,
    changed: &[ScannedMessage],
    gone: &[(Uid, Uid)],
) -> bool {
    let below = u64::from(c.uid_next);
    let old_gone: u64 = gone
        .iter()
        .filter(|(low, _)| u64::from(low.get()) < below)
        .map(|(low, high)| u64::from(high.get()).min(below - 1) - u64::from(low.get()) + 1)
        .sum();
    u64::from(c.messages) + arrived(c, changed) == u64::from(exists) + old_gone
}

/// How many of a delta scan's messages arrived since the checkpoint (UIDs at or above its
/// UIDNEXT).
fn arrived(c: &Checkpoint, changed: &[ScannedMessage]) -> u64 {
    changed.iter().filter(|m| m.uid.get() >= c.uid_next).count() as u64
}

/// Whether a delta scan shows that no message older than the checkpoint was expunged: the
/// folder holds the checkpoint's messages plus the new ones the scan saw (UIDs at or above
/// the checkpoint's UIDNEXT), exactly.
pub fn nothing_expunged(c: &Checkpoint, exists: u32, changed: &[ScannedMessage]) -> bool {
    u64::from(exists) == u64::from(c.messages) + arrived(c, changed)
}

/// Ledger rows that vanished from their source folder (or whose UIDVALIDITY changed), by
/// fingerprint: a new source message with the same fingerprint is already on the target.
pub type Vanished = HashMap<Fingerprint, Vec<LedgerRow>>;

/// What a scan of one source folder decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanDecision {
    /// (UID, size) of messages to copy, by UID.
    pub to_copy: Vec<(Uid, u64)>,
    /// Copied messages whose source flags changed: the row and the new flags.
    pub flag_updates: Vec<(LedgerRow, Flags)>,
    /// Messages left out by the filters (`skip_deleted`, the date range).
    pub skipped: u64,
}

/// What filters a scan applies to messages the ledger does not have.
pub struct ScanFilter<'a> {
    /// UIDs inside the job's date range; `None` when the job has none.
    pub in_range: Option<&'a HashSet<Uid>>,
    pub skip_deleted: bool,
}

/// Classifies a source folder's messages against its ledger rows.
///
/// - a message with a copied row: its flags are brought up to date if they changed;
/// - a message with a pending row: left alone (reconciliation already judged it this pass, or
///   it is in flight);
/// - a message without a row: copied, unless a filter leaves it out;
/// - a row whose message is gone, or whose UIDVALIDITY is not the folder's: vanished, to be
///   matched by fingerprint against new messages (moves, renumbering).
pub fn classify_scan(
    ledger: Vec<LedgerRow>,
    uid_validity: UidValidity,
    scanned: &[ScannedMessage],
    kind: ScanKind<'_>,
    filter: &ScanFilter<'_>,
    vanished: &mut Vanished,
) -> ScanDecision {
    let mut by_uid: HashMap<Uid, LedgerRow> = HashMap::new();
    for row in ledger {
        if row.uid_validity == uid_validity {
            by_uid.insert(row.uid, row);
        } else {
            vanished
                .entry(row.fingerprint.clone())
                .or_default()
                .push(row);
        }
    }
    let mut d = ScanDecision::default();
    let mut seen = HashSet::with_capacity(scanned.len());
    for m in scanned {
        seen.insert(m.uid);
        match by_uid.get(&m.uid) {
            Some(row) if !row.is_pending() => {
                if row.flags != m.flags {
                    d.flag_updates.push((row.clone(), m.flags.clone()));
                }
            }
            Some(_) => {}
            None => {
                let wanted = filter.in_range.is_none_or(|r| r.contains(&m.uid));
                if (m.flags.is_deleted() && filter.skip_deleted) || !wanted {
                    d.skipped += 1;
                } else {
                    d.to_copy.push((m.uid, m.size));
                }
            }
        }
    }
    for (uid, row) in by_uid {
        let gone = !seen.contains(&uid)
            && match kind {
                ScanKind::Full => true,
                ScanKind::Changed { present: None } => false,
                ScanKind::Changed {
                    present: Some(present),
                } => !present.contains(&uid),
                ScanKind::Vanished { gone } => in_ranges(gone, uid),
            };
        if gone && !row.is_pending() {
            vanished
                .entry(row.fingerprint.clone())
                .or_default()
                .push(row);
        }
    }
    d.to_copy.sort_unstable();
    d
}

/// A ledger row's source key: folder, UIDVALIDITY, UID.
pub type RowKey = (String, UidValidity, Uid);

pub fn row_key(r: &LedgerRow) -> RowKey {
    (r.source_folder.clone(), r.uid_validity, r.uid)
}

/// Adds rows to the vanished ones, each once: a row already there (seen gone by this pass's
/// scans, say) is not added again, and pending rows are left out (reconciliation judges them).
pub fn add_vanished(vanished: &mut Vanished, rows: Vec<LedgerRow>) {
    let mut have: HashSet<RowKey> = vanished.values().flatten().map(row_key).collect();
    for r in rows {
        if !r.is_pending() && have.insert(row_key(&r)) {
            vanished.entry(r.fingerprint.clone()).or_default().push(r);
        }
    }
}

/// The vanished rows no new message matched, but for those already marked gone: the rows
/// to mark gone at the end of a pass.
pub fn newly_gone(vanished: &Vanished, marked: &HashSet<RowKey>) -> Vec<LedgerRow> {
    vanished
        .values()
        .flatten()
        .filter(|r| !marked.contains(&row_key(r)))
        .cloned()
        .collect()
}

/// Takes one vanished row with this fingerprint, if any (each matches one new message).
pub fn take_vanished(vanished: &mut Vanished, fp: &Fingerprint) -> Option<LedgerRow> {
    let rows = vanished.get_mut(fp)?;
    let row = rows.pop();
    if rows.is_empty() {
        vanished.remove(fp);
    }
    row
}

/// A message found moved: its old ledger row and its new one.
pub type Move = (LedgerRow, LedgerRow);

/// The target copies the moves would reuse, by target folder: the target UIDs to look for.
/// Copies whose target UID is unknown cannot be looked for.
pub fn known_copies(moves: &[(LedgerRow, LedgerRow)]) -> BTreeMap<&str, Vec<Uid>> {
    let mut out: BTreeMap<&str, Vec<Uid>> = BTreeMap::new();
    for (old, _) in moves {
        if let Some(u) = old.target_uid {
            out.entry(old.target_folder.as_str()).or_default().push(u);
        }
    }
    for uids in out.values_mut() {
        uids.sort_unstable();
    }
    out
}

/// Splits the moves into those whose copy the target still holds (`present`: target folder
/// and UID; a copy of unknown UID is taken to be there) and those whose copy is gone.
pub fn still_on_target(
    moves: Vec<Move>,
    present: &HashSet<(String, Uid)>,
) -> (Vec<Move>, Vec<Move>) {
    moves.into_iter().partition(|(old, _)| {
        old.target_uid
            .is_none_or(|u| present.contains(&(old.target_folder.clone(), u)))
    })
}

/// How the moves found while copying a folder are carried out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MovePlan {
    /// Rows re-keyed without touching the target: the copy is already in the right folder, or
    /// cannot be moved since its target UID is unknown (it then stays where it is).
    pub rekey_only: Vec<(LedgerRow, LedgerRow)>,
    /// Per target folder the copies sit in: the pairs to move from there with one UID MOVE.
    pub by_folder: BTreeMap<String, Vec<(LedgerRow, LedgerRow)>>,
}

pub fn plan_moves(moves: Vec<(LedgerRow, LedgerRow)>) -> MovePlan {
    let mut plan = MovePlan::default();
    for (old, mut new) in moves {
        if old.target_folder == new.target_folder {
            plan.rekey_only.push((old, new));
        } else if old.target_uid.is_none() {
            new.target_folder = old.target_folder.clone();
            plan.rekey_only.push((old, new));
        } else {
            plan.by_folder
                .entry(old.target_folder.clone())
                .or_default()
                .push((old, new));
        }
    }
    plan
}

/// Flag updates grouped by target folder and flag set, so each group is one UID STORE.
/// Rows without a target UID cannot be updated and are left out.
pub fn flag_groups(updates: &[(LedgerRow, Flags)]) -> BTreeMap<(&str, &Flags), Vec<&LedgerRow>> {
    let mut groups: BTreeMap<(&str, &Flags), Vec<&LedgerRow>> = BTreeMap::new();
    for (row, flags) in updates {
        if row.target_uid.is_some() {
            groups
                .entry((row.target_folder.as_str(), flags))
                .or_default()
                .push(row);
        }
    }
    groups
}

/// Moved copies whose source flags changed, by target folder and new flag set: the target
/// UIDs to set those flags on (one flag update each). Copies without a target UID cannot be
/// updated and are left out.
pub fn moved_flag_groups(rekeys: &[(LedgerRow, LedgerRow)]) -> BTreeMap<(&str, &Flags), Vec<Uid>> {
    let mut groups: BTreeMap<(&str, &Flags), Vec<Uid>> = BTreeMap::new();
    for (old, new) in rekeys {
        if let Some(uid) = new.target_uid
            && new.flags != old.flags
        {
            groups
                .entry((new.target_folder.as_str(), &new.flags))
                .or_default()
                .push(uid);
        }
    }
    for uids in groups.values_mut() {
        uids.sort_unstable();
    }
    groups
}

/// The verdict on intents left in doubt by a killed pass, for one target folder.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled<'a> {
    /// Intents whose message is on the target, with the UID it has there.
    pub copied: Vec<(&'a LedgerRow, Option<Uid>)>,
    /// Intents whose message never arrived: forgotten, so this pass copies them again.
    pub forgotten: Vec<&'a LedgerRow>,
}

/// Judges intents against the target messages no ledger row owns (`found`: fingerprint →
/// UIDs at or above the intents' UIDNEXT). Each target message settles at most one intent,
/// so two intents of identical messages need two copies on the target to both count as
/// copied: a duplicate source message is never left uncopied on a guess. A UID may be
/// found under several fingerprints (one per kind the intents hold); it still settles one.
pub fn reconcile<'a>(
    pending: &'a [LedgerRow],
    mut found: HashMap<Fingerprint, Vec<Uid>>,
) -> Reconciled<'a> {
    for uids in found.values_mut() {
        // Pop the lowest first: intents are judged in UID order, copies arrived in it.
        uids.sort_unstable_by(|a, b| b.cmp(a));
    }
    let mut used = HashSet::new();
    let mut r = Reconciled::default();
    for row in pending {
        let uids = found.get_mut(&row.fingerprint);
        let uid = uids.and_then(|u| std::iter::from_fn(|| u.pop()).find(|&u| used.insert(u)));
        match uid {
            Some(uid) => r.copied.push((row, Some(uid))),
            None => r.forgotten.push(row),
        }
    }
    r
}

/// The lowest UIDNEXT recorded by these intents: target messages below it existed before any
/// of them was sent, so they cannot be their copies.
pub fn lowest_uidnext(pending: &[LedgerRow]) -> u32 {
    pending
        .iter()
        .filter_map(|r| r.target_uidnext)
        .min()
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LedgerState;
    use crate::testing::{uid, validity};

    fn row(folder: &str, n: u32, fp: &str) -> LedgerRow {
        LedgerRow {
            source_folder: folder.into(),
            uid_validity: validity(7),
            uid: uid(n),
            target_folder: folder.into(),
            target_uid: Some(uid(n + 100)),
            target_uidnext: None,
            fingerprint: fp.into(),
            size: 10,
            flags: Flags::from_stored("\\Seen"),
            state: LedgerState::Copied,
        }
    }

    fn scanned(n: u32, flags: &str) -> ScannedMessage {
        ScannedMessage {
            uid: uid(n),
            flags: Flags::from_stored(flags),
            size: 10 * n as u64,
        }
    }

    fn status(modseq: Option<u64>) -> FolderStatus {
        FolderStatus {
            messages: 3,
            uid_validity: validity(7),
            uid_next: 4,
            highest_modseq: modseq,
        }
    }

    const ALL: ScanFilter<'static> = ScanFilter {
        in_range: None,
        skip_deleted: true,
    };

    #[test]
    fn vanished_rows_are_added_once_without_pending_ones_and_the_unmarked_are_newly_gone() {
        let mut vanished = Vanished::new();
        let a = row("INBOX", 1, "fa");
        let mut pending = row("INBOX", 2, "fb");
        pending.state = LedgerState::Pending;
        add_vanished(&mut vanished, vec![a.clone(), a.clone(), pending]);
        add_vanished(&mut vanished, vec![a.clone(), row("Old", 1, "fa")]);
        assert_eq!(vanished.len(), 1);
        assert_eq!(vanished[&Fingerprint::from("fa")].len(), 2);
        let marked: HashSet<RowKey> = [row_key(&a)].into();
        assert_eq!(newly_gone(&vanished, &marked), [row("Old", 1, "fa")]);
    }

    #[test]
    fn moves_whose_copy_the_target_lost_are_split_off() {
        let mut unknown = row("INBOX", 3, "fc");
        unknown.target_uid = None;
        let moves: Vec<(LedgerRow, LedgerRow)> =
            [row("INBOX", 1, "fa"), row("INBOX", 2, "fb"), unknown]
                .into_iter()
                .map(|r| (r.clone(), r))
                .collect();
        let known = known_copies(&moves);
        assert_eq!(
            known.into_iter().collect::<Vec<_>>(),
            [("INBOX", vec![uid(101), uid(102)])]
        );
        let present: HashSet<(String, Uid)> = [("INBOX".to_string(), uid(102))].into();
        let (kept, lost) = still_on_target(moves, &present);
        assert_eq!(
            kept.iter().map(|(o, _)| o.uid).collect::<Vec<_>>(),
            [uid(2), uid(3)]
        );
        assert_eq!(
            lost.iter().map(|(o, _)| o.uid).collect::<Vec<_>>(),
            [uid(1)]
        );
    }

    #[test]
    fn uid_ranges_merge_and_answer_membership() {
        let r = |a, b| (uid(a), uid(b));
        let merged = merge_ranges(vec![
            r(9, 12),
            r(1, 1),
            r(3, 5),
            r(2, 2),
            r(11, 20),
            r(30, 30),
        ]);
        assert_eq!(merged, vec![r(1, 5), r(9, 20), r(30, 30)]);
        for (n, inside) in [
            (1, true),
            (5, true),
            (6, false),
            (8, false),
            (9, true),
            (20, true),
        ] {
            assert_eq!(in_ranges(&merged, uid(n)), inside, "UID {n}");
        }
        assert!(!in_ranges(&merged, uid(31)));
        assert!(!in_ranges(&[], uid(1)));
        // The widest range does not overflow.
        assert_eq!(
            merge_ranges(vec![r(1, u32::MAX), r(u32::MAX, u32::MAX)]),
            vec![r(1, u32::MAX)]
        );
    }

    #[test]
    fn a_vanished_list_is_trusted_only_when_it_accounts_for_the_folder() {
        // The checkpoint: 10 messages, UIDNEXT 21.
        let c = Checkpoint {
            uid_validity: 7,
            uid_next: 21,
            messages: 10,
            highest_modseq: Some(40),
            filter: String::new(),
        };
        let new = |n: u32| ScannedMessage {
            uid: uid(n),
            flags: Flags::default(),
            size: 1,
        };
        let r = |a, b| (uid(a), uid(b));
        // Two old ones gone, one new arrived (UID 21), one arrived and went again (UID 22).
        assert!(vanished_exact(&c, 9, &[new(21)], &[r(3, 4), r(22, 22)]));
        // A flag change on an old message (UID 5) is no new message.
        assert!(vanished_exact(&c, 9, &[new(5), new(21)], &[r(3, 4)]));
        // The server also lists UIDs that went before the checkpoint: not trusted.
        assert!(!vanished_exact(&c, 9, &[new(21)], &[r(1, 4)]));
        // A range reaching past UIDNEXT counts only its old part; a hostile 1:4294967295
        // cannot add up.
        assert!(vanished_exact(&c, 9, &[new(21)], &[r(19, 30)]));
        assert!(!vanished_exact(&c, 9, &[new(21)], &[r(1, u32::MAX)]));
        // It lists fewer than went (a broken server): not trusted either.
        assert!(!vanished_exact(&c, 8, &[new(21)], &[r(3, 4)]));
    }

    #[test]
    fn unchanged_folder_is_skipped_only_with_highestmodseq() {
        let c = Checkpoint {
            uid_validity: 7,
            uid_next: 4,
            messages: 3,
            highest_modseq: Some(9),
            filter: "f".into(),
        };
        assert!(folder_unchanged(Some(&c), &status(Some(9)), "f"));
        assert!(!folder_unchanged(Some(&c), &status(Some(10)), "f"));
        assert!(!folder_unchanged(
            Some(&c),
            &status(Some(9)),
            "other filter"
        ));
        assert!(!folder_unchanged(None, &status(Some(9)), "f"));
        let without = Checkpoint {
            highest_modseq: None,
            ..c
        };
        assert!(!folder_unchanged(Some(&without), &status(None), "f"));
    }

    #[test]
    fn a_delta_is_read_only_for_the_same_folder_filter_and_a_grown_highestmodseq() {
        let c = Checkpoint {
            uid_validity: 7,
            uid_next: 4,
            messages: 3,
            highest_modseq: Some(9),
            filter: "f".into(),
        };
        assert_eq!(
            delta_from(Some(&c), &status(Some(12)), "f").map(|d| d.0),
            Some(9)
        );
        // Unchanged is the STATUS shortcut's business; a HIGHESTMODSEQ that went back (a
        // reset) or none (NOMODSEQ, no CONDSTORE) means a full read.
        assert!(delta_from(Some(&c), &status(Some(9)), "f").is_none());
        assert!(delta_from(Some(&c), &status(Some(3)), "f").is_none());
        assert!(delta_from(Some(&c), &status(None), "f").is_none());
        assert!(delta_from(Some(&c), &status(Some(12)), "other").is_none());
        assert!(delta_from(None, &status(Some(12)), "f").is_none());
        let other_folder = Checkpoint {
            uid_validity: 8,
            ..c.clone()
        };
        assert!(delta_from(Some(&other_folder), &status(Some(12)), "f").is_none());
        for spoiled in [
            Checkpoint {
                highest_modseq: None,
                ..c.clone()
            },
            Checkpoint {
                highest_modseq: Some(0),
                ..c.clone()
            },
            Checkpoint {
                uid_next: 0,
                ..c.clone()
            },
        ] {
            assert!(delta_from(Some(&spoiled), &status(Some(12)), "f").is_none());
        }
    }

    #[test]
    fn a_delta_counts_new_messages_to_tell_whether_any_was_expunged() {
        let c = Checkpoint {
            uid_validity: 7,
            uid_next: 4,
            messages: 3,
            highest_modseq: Some(9),
            filter: "f".into(),
        };
        // UID 2's flags changed, 4 and 5 are new: 3 + 2 messages means none went.
        let changed = [scanned(2, "\\Seen"), scanned(4, ""), scanned(5, "")];
        assert!(nothing_expunged(&c, 5, &changed));
        // One fewer: an old message was expunged (or a new one, as far as the count
        // knows): the UIDs must be read.
        assert!(!nothing_expunged(&c, 4, &changed));
        assert!(!nothing_expunged(&c, 6, &changed));
    }

    #[test]
    fn a_delta_scan_keeps_unseen_rows_unless_their_uid_is_gone() {
        let ledger = || {
            vec![
                row("INBOX", 1, "a"),
                row("INBOX", 2, "b"),
                row("INBOX", 3, "c"),
            ]
        };
        let changed = [scanned(2, "\\Flagged"), scanned(4, "")];
        let mut vanished = Vanished::new();
        let d = classify_scan(
            ledger(),
            validity(7),
            &changed,
            ScanKind::Changed { present: None },
            &ALL,
            &mut vanished,
        );
        assert_eq!(d.to_copy, vec![(uid(4), 40)]);
        assert_eq!(d.flag_updates.len(), 1);
        assert_eq!(d.flag_updates[0].0.uid, uid(2));
        assert!(vanished.is_empty());
        // UID 3 was expunged: the folder's UID list says so.
        let present: HashSet<Uid> = [uid(1), uid(2), uid(4)].into();
        let d = classify_scan(
            ledger(),
            validity(7),
            &changed,
            ScanKind::Changed {
                present: Some(&present),
            },
            &ALL,
            &mut vanished,
        );
        assert_eq!(d.to_copy, vec![(uid(4), 40)]);
        assert_eq!(vanished.len(), 1);
        assert_eq!(vanished[&Fingerprint::from("c")][0].uid, uid(3));
        // The same rows under a full scan that saw only these messages: 1 and 3 vanished.
        let mut vanished = Vanished::new();
        classify_scan(
            ledger(),
            validity(7),
            &changed,
            ScanKind::Full,
            &ALL,
            &mut vanished,
        );
        assert_eq!(vanished.len(), 2);
    }

    #[test]
    fn scan_copies_what_the_ledger_lacks_and_updates_changed_flags() {
        let ledger = vec![row("INBOX", 1, "a"), row("INBOX", 2, "b")];
        let mut vanished = Vanished::new();
        let d = classify_scan(
            ledger,
            validity(7),
            &[
                scanned(1, "\\Seen"),
                scanned(2, "\\Flagged \\Seen"),
                scanned(3, ""),
            ],
            ScanKind::Full,
            &ALL,
            &mut vanished,
        );
        assert_eq!(d.to_copy, vec![(uid(3), 30)]);
        assert_eq!(d.flag_updates.len(), 1);
        assert_eq!(d.flag_updates[0].0.uid, uid(2));
        assert_eq!(d.flag_updates[0].1.as_str(), "\\Flagged \\Seen");
        assert!(vanished.is_empty());
    }

    #[test]
    fn scan_leaves_pending_rows_alone() {
        let mut pending = row("INBOX", 1, "a");
        pending.state = LedgerState::Pending;
        let mut vanished = Vanished::new();
        let d = classify_scan(
            vec![pending],
            validity(7),
            &[scanned(1, "\\Answered")],
            ScanKind::Full,
            &ALL,
            &mut vanished,
        );
        assert_eq!(d, ScanDecision::default());
        // Nor is a pending row whose message is gone taken for a vanished copy.
        let mut pending = row("INBOX", 1, "a");
        pending.state = LedgerState::Pending;
        let d = classify_scan(
            vec![pending],
            validity(7),
            &[],
            ScanKind::Full,
            &ALL,
            &mut vanished,
        );
        assert_eq!(d, ScanDecision::default());
        assert!(vanished.is_empty());
    }

    #[test]
    fn scan_filters_deleted_and_out_of_range_messages() {
        let range: HashSet<Uid> = [uid(2)].into();
        let filter = ScanFilter {
            in_range: Some(&range),
            skip_deleted: true,
        };
        let d = classify_scan(
            Vec::new(),
            validity(7),
            &[scanned(1, ""), scanned(2, "\\Deleted"), scanned(3, "")],
            ScanKind::Full,
            &filter,
            &mut Vanished::new(),
        );
        assert_eq!(d.to_copy, Vec::<(Uid, u64)>::new());
        assert_eq!(d.skipped, 3);
        let keep_deleted = ScanFilter {
            in_range: Some(&range),
            skip_deleted: false,
        };
        let d = classify_scan(
            Vec::new(),
            validity(7),
            &[scanned(2, "\\Deleted")],
            ScanKind::Full,
            &keep_deleted,
            &mut Vanished::new(),
        );
        assert_eq!(d.to_copy, vec![(uid(2), 20)]);
    }

    #[test]
    fn uidvalidity_change_makes_every_row_vanished() {
        let mut vanished = Vanished::new();
        let d = classify_scan(
            vec![row("INBOX", 1, "a"), row("INBOX", 2, "b")],
            validity(8),
            &[scanned(1, "\\Seen"), scanned(2, "\\Seen")],
            ScanKind::Full,
            &ALL,
            &mut vanished,
        );
        // Renumbered messages look new, but each matches a vanished row by fingerprint, so
        // the copy phase moves (re-keys) instead of copying.
        assert_eq!(d.to_copy, vec![(uid(1), 10), (uid(2), 20)]);
        assert_eq!(vanished.len(), 2);
        assert!(take_vanished(&mut vanished, &"a".into()).is_some());
        assert!(take_vanished(&mut vanished, &"a".into()).is_none());
    }

    #[test]
    fn a_message_gone_from_its_folder_is_vanished() {
        let mut vanished = Vanished::new();
        classify_scan(
            vec![row("INBOX", 1, "a")],
            validity(7),
            &[],
            ScanKind::Full,
            &ALL,
            &mut vanished,
        );
        assert_eq!(vanished[&Fingerprint::from("a")][0].uid, uid(1));
    }

    #[test]
    fn duplicate_fingerprints_match_one_vanished_row_each() {
        let mut vanished = Vanished::new();
        classify_scan(
            vec![row("A", 1, "same"), row("A", 2, "same")],
            validity(7),
            &[],
            ScanKind::Full,
            &ALL,
            &mut vanished,
        );
        let fp = Fingerprint::from("same");
        assert!(take_vanished(&mut vanished, &fp).is_some());
        assert!(take_vanished(&mut vanished, &fp).is_some());
        assert!(take_vanished(&mut vanished, &fp).is_none());
        assert!(vanished.is_empty());
    }

    #[test]
    fn moves_across_folders_are_grouped_by_the_folder_the_copies_sit_in() {
        let moved = |from: &str, to: &str, n: u32, target_uid: Option<u32>| {
            let mut old = row(from, n, "x");
            old.target_uid = target_uid.map(uid);
            let mut new = old.clone();
            new.source_folder = to.into();
            new.target_folder = to.into();
            new.uid = uid(n + 50);
            (old, new)
        };
        let plan = plan_moves(vec![
            moved("A", "B", 1, Some(101)),
            moved("A", "B", 2, Some(102)),
            moved("C", "B", 3, Some(103)),
            moved("B", "B", 4, Some(104)),
            moved("D", "B", 5, None),
        ]);
        assert_eq!(plan.by_folder.keys().collect::<Vec<_>>(), ["A", "C"]);
        assert_eq!(plan.by_folder["A"].len(), 2);
        assert_eq!(plan.rekey_only.len(), 2);
        // Without its target UID a copy cannot be moved: its row keeps the old target folder.
        let stuck = plan
            .rekey_only
            .iter()
            .find(|(o, _)| o.uid == uid(5))
            .unwrap();
        assert_eq!(stuck.1.target_folder, "D");
        assert_eq!(stuck.1.source_folder, "B");
    }

    #[test]
    fn flag_updates_become_one_store_per_folder_and_flag_set() {
        let seen = Flags::from_stored("\\Seen");
        let flagged = Flags::from_stored("\\Flagged");
        let mut no_uid = row("A", 9, "z");
        no_uid.target_uid = None;
        let updates = vec![
            (row("A", 1, "a"), seen.clone()),
            (row("A", 2, "b"), seen.clone()),
            (row("A", 3, "c"), flagged.clone()),
            (row("B", 4, "d"), seen.clone()),
            (no_uid, seen.clone()),
        ];
        let groups = flag_groups(&updates);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[&("A", &seen)].len(), 2);
        assert_eq!(groups[&("A", &flagged)].len(), 1);
        assert_eq!(groups[&("B", &seen)].len(), 1);
    }

    #[test]
    fn a_target_message_found_under_two_kinds_settles_one_intent() {
        // The same message under its SHA-256 and its BLAKE3 fingerprint, and two intents of
        // it, one of each kind: one copy on the target settles one of them, not both.
        let pending = [row("INBOX", 1, "sha-of-m"), row("INBOX", 2, "blake3:of-m")];
        let found: HashMap<Fingerprint, Vec<Uid>> = [
            ("sha-of-m".into(), vec![uid(30)]),
            ("blake3:of-m".into(), vec![uid(30)]),
        ]
        .into();
        let r = reconcile(&pending, found);
        assert_eq!(r.copied.len(), 1);
        assert_eq!(r.copied[0].1, Some(uid(30)));
        assert_eq!(r.forgotten.len(), 1);
    }

    #[test]
    fn reconcile_settles_each_intent_with_one_target_message() {
        let mut a1 = row("INBOX", 1, "dup");
        let mut a2 = row("INBOX", 2, "dup");
        let mut b = row("INBOX", 3, "other");
        for r in [&mut a1, &mut a2, &mut b] {
            r.state = LedgerState::Pending;
            r.target_uid = None;
        }
        a1.target_uidnext = Some(20);
        a2.target_uidnext = Some(20);
        b.target_uidnext = Some(21);
        let pending = vec![a1, a2, b];
        assert_eq!(lowest_uidnext(&pending), 20);
        // Two identical messages were sent, one arrived: one intent is copied, the other
        // is forgotten and copied again. Never both taken for the one copy.
        let found: HashMap<Fingerprint, Vec<Uid>> = [("dup".into(), vec![uid(25)])].into();
        let r = reconcile(&pending, found);
        assert_eq!(r.copied.len(), 1);
        assert_eq!(r.copied[0].1, Some(uid(25)));
        assert_eq!(r.forgotten.len(), 2);
        // Both arrived: both copied, lowest UID to the first intent.
        let found: HashMap<Fingerprint, Vec<Uid>> = [
            ("dup".into(), vec![uid(26), uid(25)]),
            ("other".into(), vec![uid(27)]),
        ]
        .into();
        let r = reconcile(&pending, found);
        assert_eq!(
            r.copied
                .iter()
                .map(|(row, u)| (row.uid, *u))
                .collect::<Vec<_>>(),
            [
                (uid(1), Some(uid(25))),
                (uid(2), Some(uid(26))),
                (uid(3), Some(uid(27)))
            ]
        );
        assert!(r.forgotten.is_empty());
    }

    #[test]
    fn intents_without_uidnext_look_from_uid_one() {
        let mut r = row("INBOX", 1, "a");
        r.target_uidnext = None;
        assert_eq!(lowest_uidnext(&[r]), 1);
    }
}

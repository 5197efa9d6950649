//! Phase 3a: what a source folder needs — nothing (one STATUS), or a scan of its UIDs and flags
//! classified against the ledger ([`decide::classify_scan`]).

use std::collections::{HashMap, HashSet, VecDeque};

use super::decide::{self, ScanFilter, ScanKind, Vanished};
use super::{Pass, Result, on};
use crate::folders::{Folder, FolderPlanItem};
use crate::model::{Checkpoint, Flags, LedgerRow, Side, Uid, UidValidity};
use crate::ports::{
    FolderStatus, MailSession, ScanTicket, ScannedMessage, Selected, SessionError, UidRanges,
};

/// One source folder's messages that need work, found by the scan.
pub(super) struct FolderWork {
    pub item: FolderPlanItem,
    pub source: Folder,
    pub uid_validity: UidValidity,
    pub status: FolderStatus,
    pub to_copy: Vec<(Uid, u64)>,
    pub flag_updates: Vec<(LedgerRow, Flags)>,
    /// The STATUS of the target folder, read with the others' before the copies (one round
    /// trip for them all); `None`: asked before the folder's first APPEND.
    pub target_status: Option<FolderStatus>,
}

/// How a folder's scan is read, decided from its STATUS and checkpoint before the pass's
/// first SELECT ([`Pass::scan_way`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScanWay {
    /// STATUS shows nothing changed since the checkpoint: no SELECT.
    Unchanged,
    /// Every message, the FETCH sent with the SELECT; several folders' at once
    /// ([`ScansAhead`]).
    Whole,
    /// After its SELECT, on its own: a delta (CONDSTORE), or a scan going on from the part
    /// an earlier attempt kept. Its commands depend on the SELECT's answer.
    Apart,
}

/// How many folders' scans are on their way at once: one round trip for a mailbox's scans,
/// not one per folder. Their answers wait in the connection until read, in order.
pub(super) const SCANS_AHEAD: usize = 16;

/// The scan tickets of a mailbox's folders sent ahead, in folder order.
pub(super) struct ScansAhead {
    sent: VecDeque<(usize, ScanTicket)>,
    /// The first folder whose ticket is not sent.
    next: usize,
    window: usize,
}

impl ScansAhead {
    /// At most `window` tickets unread at once; 1 sends each folder's when it is read (a
    /// date filter's SEARCH must follow its folder's SELECT before the next one).
    pub(super) fn new(window: usize) -> ScansAhead {
        ScansAhead {
            sent: VecDeque::new(),
            next: 0,
            window: window.max(1),
        }
    }

    /// The ticket of folder `i` (a [`ScanWay::Whole`] one), sending first those of the
    /// folders after it, up to the window. It sends none past a folder scanned apart: that
    /// folder's commands must not come behind other folders' SELECTs.
    pub(super) fn take(
        &mut self,
        src: &mut dyn MailSession,
        raws: &[&str],
        ways: &[ScanWay],
        i: usize,
    ) -> std::result::Result<ScanTicket, SessionError> {
        self.next = self.next.max(i);
        while self.next < ways.len() && self.sent.len() < self.window {
            match ways[self.next] {
                ScanWay::Apart => break,
                ScanWay::Whole => {
                    let ticket = src.send_select_and_scan(raws[self.next])?;
                    self.sent.push_back((self.next, ticket));
                }
                _ => {}
            }
            self.next += 1;
        }
        let (j, ticket) = self.sent.pop_front().expect("folder i's ticket was sent");
        assert_eq!(j, i, "scan tickets are taken in folder order");
        Ok(ticket)
    }
}

/// A scan of one source folder (of every message, or a delta of those changed since a
/// mod-sequence), kept across the attempts of a pass until the folder is finished: on a link
/// that drops before a large folder's scan is read whole, each attempt reads on from the last
/// UID the one before it read, so the scan gets through a part at a time (and a scan read
/// whole is not read again by the attempt after a cut while copying).
pub(super) struct KeptScan {
    uid_validity: UidValidity,
    /// A delta's mod-sequence (the messages changed since it), `None` for every message.
    since: Option<u64>,
    /// The folder's STATUS before its first message was read: the folder checkpoint records
    /// this one, the oldest that the scan's messages may describe, so the next pass reads again
    /// whatever changed since (a flag changed in the part read by an earlier attempt).
    status: FolderStatus,
    /// In UID order: UID, flags (an index into `flag_sets`) and size, 16 bytes a message.
    messages: Vec<(Uid, u32, u64)>,
    /// Each set of flags the scan saw, once: most messages of a folder share a few.
    flag_sets: Vec<Flags>,
    flag_index: HashMap<Flags, u32>,
}

// What the README says a kept scan costs per message.
const _: () = assert!(std::mem::size_of::<(Uid, u32, u64)>() == 16);

impl KeptScan {
    fn new(uid_validity: UidValidity, since: Option<u64>, status: FolderStatus) -> KeptScan {
        KeptScan {
            uid_validity,
            since,
            status,
            messages: Vec::new(),
            flag_sets: Vec::new(),
            flag_index: HashMap::new(),
        }
    }

    fn last(&self) -> Option<Uid> {
        self.messages.last().map(|m| m.0)
    }

    fn push(&mut self, m: ScannedMessage) {
        let next = self.flag_sets.len() as u32;
        let i = *self.flag_index.entry(m.flags).or_insert_with_key(|f| {
            self.flag_sets.push(f.clone());
            next
        });
        self.messages.push((m.uid, i, m.size));
    }

    /// The scan as the session gave it.
    fn messages(&self) -> Vec<ScannedMessage> {
        let each = |&(uid, i, size): &(Uid, u32, u64)| ScannedMessage {
            uid,
            flags: self.flag_sets[i as usize].clone(),
            size,
        };
        self.messages.iter().map(each).collect()
    }
}

impl Pass<'_, '_> {
    /// Scans the selected folder, every message (`since` `None`) or those changed since a
    /// mod-sequence, going on from a scan an earlier attempt kept of the same kind (its
    /// messages no longer in the folder left out: moved or expunged meanwhile, so they are
    /// seen vanished). A scan cut off is kept for the next attempt. Returns the scan and a
    /// delta's list of UIDs expunged since (QRESYNC), only when read whole in this attempt: a
    /// delta gone on with lists only the UIDs it read past, so the folder's UIDs are read.
    ///
    /// Going on from a kept scan, the messages read for the first time count as progress, but
    /// only those the folder held when its scan began (below that STATUS's UIDNEXT): new mail
    /// arriving between attempts does not keep a failing pass retrying. A scan begun (or
    /// begun again, for a new UIDVALIDITY) is not progress, so the first attempt of a pass
    /// and a folder finished and read again are judged as before.
    fn scan_all(
        &mut self,
        src: &mut dyn MailSession,
        folder: &str,
        selected: &Selected,
        status: &FolderStatus,
        since: Option<u64>,
    ) -> Result<(KeptScan, Option<UidRanges>)> {
        let (mut kept, goes_on) = match self.attempts.scans.remove(folder) {
            Some(k) if k.uid_validity == selected.uid_validity && k.since == since => (k, true),
            _ => {
                let mut k = KeptScan::new(selected.uid_validity, since, status.clone());
                if since.is_none() {
                    k.messages.reserve(selected.exists as usize);
                }
                (k, false)
            }
        };
        let last = kept.last();
        let scanned = scan_on(src, &mut kept);
        if goes_on {
            let held = kept.status.uid_next;
            let read = kept.messages.iter().rev();
            let read = read.take_while(|m| last.is_none_or(|l| m.0 > l));
            self.attempts.scanned += read.filter(|m| m.0.get() < held).count() as u64;
        }
        match scanned {
            Ok(listed) => Ok((kept, listed.filter(|_| last.is_none()))),
            Err(e) => {
                self.attempts.scans.insert(folder.to_string(), kept);
                Err(on(Side::Source)(e))
            }
        }
    }

    /// Reads a folder's SELECT and the scan of every message sent with it
    /// ([`MailSession::send_select_and_scan`]). A scan cut off is kept for the next attempt,
    /// as [`Pass::scan_all`] keeps it.
    fn finish_select_and_scan(
        &mut self,
        src: &mut dyn MailSession,
        folder: &str,
        ticket: ScanTicket,
        status: &FolderStatus,
    ) -> Result<(Selected, KeptScan)> {
        let mut kept: Option<KeptScan> = None;
        let scanned = src.finish_select_and_scan(ticket, &mut |selected, m| {
            let k = match kept.take() {
                Some(k) if k.uid_validity == selected.uid_validity => k,
                _ => {
                    let mut k = KeptScan::new(selected.uid_validity, None, status.clone());
                    k.messages.reserve(selected.exists as usize);
                    k
                }
            };
            kept.insert(k).push(m)
        });
        match scanned {
            Ok(selected) => {
                let new = || KeptScan::new(selected.uid_validity, None, status.clone());
                let k = kept.unwrap_or_else(new);
                Ok((selected, k))
            }
            Err(e) => {
                if let Some(k) = kept {
                    self.attempts.scans.insert(folder.to_string(), k);
                }
                Err(on(Side::Source)(e))
            }
        }
    }

    /// How a folder's scan is read, from its `status` (read before the scans, with every
    /// other folder's) and its checkpoint.
    pub(super) fn scan_way(
        &self,
        folder: &str,
        status: &FolderStatus,
        checkpoint: Option<&Checkpoint>,
    ) -> ScanWay {
        let key = self.ctx.settings.filter_key();
        if decide::folder_unchanged(checkpoint, status, &key) {
            ScanWay::Unchanged
        } else if decide::delta_from(checkpoint, status, &key).is_some()
            || self.attempts.scans.contains_key(folder)
        {
            ScanWay::Apart
        } else {
            ScanWay::Whole
        }
    }

    /// Decides what a folder that STATUS shows changed needs: with `ticket` (its
    /// [`ScanWay::Whole`] scan, sent), every message; without, a delta or a scan going on
    /// from the part an earlier attempt kept, after its SELECT.
    pub(super) fn scan_folder(
        &mut self,
        src: &mut dyn MailSession,
        item: &FolderPlanItem,
        mut status: FolderStatus,
        checkpoint: Option<Checkpoint>,
        ticket: Option<ScanTicket>,
        vanished: &mut Vanished,
    ) -> Result<Option<FolderWork>> {
        let Some(source) = item.source.clone() else {
            return Ok(None);
        };
        let folder = source.path.as_str().to_string();
        let raw = source.raw_name.as_str();
        let settings = self.ctx.settings;
        let mut first = None;
        let selected = match ticket {
            Some(ticket) => {
                let (selected, k) = self.finish_select_and_scan(src, &folder, ticket, &status)?;
                first = Some(k);
                selected
            }
            None => src.select(raw, false).map_err(on(Side::Source))?,
        };
        let in_range: Option<HashSet<Uid>> = match (&settings.since, &settings.until) {
            (None, None) => None,
            (since, until) => Some(
                src.search_dates(since.as_ref(), until.as_ref())
                    .map_err(on(Side::Source))?
                    .into_iter()
                    .collect(),
            ),
        };
        // With CONDSTORE and a checkpoint of this same folder, only what changed since is
        // read (flags changed, messages new); the folder's count tells whether any older
        // message was expunged. If so, QRESYNC's list of the UIDs expunged since says which,
        // when it adds up; otherwise the folder's UIDs are read. So moves are still seen.
        let delta = decide::delta_from(checkpoint.as_ref(), &status, &settings.filter_key())
            .filter(|_| first.is_none() && selected.uid_validity == status.uid_validity);
        let mut scanned = Vec::new();
        let mut kept = None;
        let mut present = None;
        let mut gone = None;
        if let Some((modseq, c)) = delta {
            let (k, listed) = self.scan_all(src, &folder, &selected, &status, Some(modseq))?;
            (scanned, status) = (k.messages(), k.status.clone());
            kept = Some(k);
            let listed = listed.map(decide::merge_ranges);
            if !decide::nothing_expunged(c, selected.exists, &scanned) {
                gone = listed.filter(|l| decide::vanished_exact(c, selected.exists, &scanned, l));
                if gone.is_none() {
                    present = Some(
                        src.uids()
                            .map_err(on(Side::Source))?
                            .into_iter()
                            .collect::<HashSet<Uid>>(),
                    );
                }
            }
        } else if let Some(k) = first {
            (scanned, status) = (k.messages(), k.status.clone());
            kept = Some(k);
        } else if selected.exists > 0 {
            let (k, _) = self.scan_all(src, &folder, &selected, &status, None)?;
            (scanned, status) = (k.messages(), k.status.clone());
            kept = Some(k);
        }
        // A delta needs only the rows of the UIDs it names (changed, new, listed as expunged):
        // a flag change in a folder of 100,000 messages reads one row, not 100,000. Reading the
        // folder's UIDs, or all its flags, needs all of them.
        let ledger = if delta.is_some() && present.is_none() {
            let mut named: Vec<(Uid, Uid)> = scanned.iter().map(|m| (m.uid, m.uid)).collect();
            named.extend(gone.iter().flatten().copied());
            let named = decide::merge_ranges(named);
            self.store()
                .ledger_uids(&self.entry.id, &folder, selected.uid_validity, &named)?
        } else {
            self.store().ledger_folder(&self.entry.id, &folder)?
        };
        let kind = match (delta, &gone) {
            (Some(_), Some(gone)) => ScanKind::Vanished { gone },
            (Some(_), None) => ScanKind::Changed {
                present: present.as_ref(),
            },
            (None, _) => ScanKind::Full,
        };
        let filter = ScanFilter {
            in_range: in_range.as_ref(),
            skip_deleted: settings.skip_deleted,
        };
        let d = decide::classify_scan(
            ledger,
            selected.uid_validity,
            &scanned,
            kind,
            &filter,
            vanished,
        );
        self.attempts.skipped.insert(folder.clone(), d.skipped);
        if let Some(kept) = kept.filter(|k| !k.messages.is_empty()) {
            self.attempts.scans.insert(folder, kept);
        }
        Ok(Some(FolderWork {
            item: item.clone(),
            source,
            uid_validity: selected.uid_validity,
            status,
            to_copy: d.to_copy,
            flag_updates: d.flag_updates,
            target_status: None,
        }))
    }
}

/// Reads the folder's messages after the last UID `kept` has (all of them when it has none;
/// for a delta, those changed since its mod-sequence) onto it; first, when going on, leaves
/// out of it those no longer in the folder (one short SEARCH for the UIDs still there).
/// Returns what the delta's scan listed as expunged.
fn scan_on(
    src: &mut dyn MailSession,
    kept: &mut KeptScan,
) -> std::result::Result<Option<UidRanges>, SessionError> {
    let last = kept.last();
    let from = match last {
        None => Uid::FIRST,
        Some(last) => {
            let present: HashSet<Uid> = src.uids()?.into_iter().collect();
            kept.messages.retain(|m| present.contains(&m.0));
            match last.get().checked_add(1).and_then(Uid::new) {
                Some(next) => next,
                None => return Ok(None),
            }
        }
    };
    let since = kept.since;
    let mut each = |m: ScannedMessage| {
        if last.is_none_or(|l| m.uid > l) {
            kept.push(m);
        }
    };
    match since {
        None => src.scan(from, &mut each).map(|()| None),
        Some(modseq) => src.scan_changed(from, modseq, &mut each),
    }
}

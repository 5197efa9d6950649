//! Phase 3a: what a source folder needs — nothing (one STATUS), or a scan of its UIDs and flags
//! classified against the ledger ([`decide::classify_scan`]).

use std::collections::HashSet;

use super::decide::{self, ScanFilter, ScanKind, Vanished};
use super::{Pass, Result, on};
use crate::folders::{Folder, FolderPlanItem};
use crate::model::{Flags, LedgerRow, Side, Uid, UidValidity};
use crate::ports::{FolderStatus, MailSession};

/// One source folder's messages that need work, found by the scan.
pub(super) struct FolderWork {
    pub item: FolderPlanItem,
    pub source: Folder,
    pub uid_validity: UidValidity,
    pub status: FolderStatus,
    pub to_copy: Vec<(Uid, u64)>,
    pub flag_updates: Vec<(LedgerRow, Flags)>,
}

impl Pass<'_, '_> {
    /// Decides what a folder needs. Returns `None` when STATUS shows nothing changed.
    pub(super) fn scan_folder(
        &mut self,
        src: &mut dyn MailSession,
        item: &FolderPlanItem,
        vanished: &mut Vanished,
    ) -> Result<Option<FolderWork>> {
        let Some(source) = item.source.clone() else {
            return Ok(None);
        };
        let folder = source.path.as_str().to_string();
        let raw = source.raw_name.as_str();
        let status = src.status(raw).map_err(on(Side::Source))?;
        let checkpoint = self.store().checkpoint(&self.entry.id, &folder)?;
        let settings = self.ctx.settings;
        if decide::folder_unchanged(checkpoint.as_ref(), &status, &settings.filter_key()) {
            return Ok(None);
        }

        let selected = src.select(raw, false).map_err(on(Side::Source))?;
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
            .filter(|_| selected.uid_validity == status.uid_validity);
        let mut scanned = Vec::new();
        let mut present = None;
        let mut gone = None;
        if let Some((modseq, c)) = delta {
            let listed = src
                .scan_changed(modseq, &mut |m| scanned.push(m))
                .map_err(on(Side::Source))?
                .map(decide::merge_ranges);
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
        } else if selected.exists > 0 {
            scanned.reserve(selected.exists as usize);
            src.scan(Uid::FIRST, &mut |m| scanned.push(m))
                .map_err(on(Side::Source))?;
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
        self.attempts.skipped.insert(folder, d.skipped);
        Ok(Some(FolderWork {
            item: item.clone(),
            source,
            uid_validity: selected.uid_validity,
            status,
            to_copy: d.to_copy,
            flag_updates: d.flag_updates,
        }))
    }
}

//! Phase 3d and 4: flags brought up to date, and messages moved on the target instead of
//! copied again.

use std::collections::{HashMap, HashSet};

use super::decide::{self, MovePlan, RowKey, Vanished};
use super::scan::FolderWork;
use super::{Pass, Result, on, target_raw_name};
use crate::folders::FolderTree;
use crate::model::{LedgerRow, Side, Uid};
use crate::ports::MailSession;

impl Pass<'_, '_> {
    /// New source messages that are byte-for-byte messages the ledger saw vanish (moved
    /// between source folders, or renumbered by a UIDVALIDITY change) are already on the
    /// target: one UID MOVE per target folder they sit in, then the ledger re-keyed in one
    /// transaction. They are never copied again, unless their copy is no longer on the target
    /// (deleted there since, by a pilot user say): then the old row is forgotten, and the
    /// (source UID, size) of each such message returned, to be copied again.
    pub(super) fn apply_moves(
        &mut self,
        dst: &mut dyn MailSession,
        tree: &FolderTree,
        target_raw: &str,
        moves: Vec<(LedgerRow, LedgerRow)>,
    ) -> Result<Vec<(Uid, u64)>> {
        let mut present = HashSet::new();
        for (folder, uids) in decide::known_copies(&moves) {
            dst.select(&target_raw_name(tree, folder), true)
                .map_err(on(Side::Target))?;
            let found = dst.present(&uids).map_err(on(Side::Target))?;
            present.extend(found.into_iter().map(|u| (folder.to_string(), u)));
        }
        let (moves, lost) = decide::still_on_target(moves, &present);
        let MovePlan {
            mut rekey_only,
            by_folder,
        } = decide::plan_moves(moves);
        for (folder, pairs) in by_folder {
            dst.select(&target_raw_name(tree, &folder), true)
                .map_err(on(Side::Target))?;
            let mut uids: Vec<Uid> = pairs.iter().filter_map(|(o, _)| o.target_uid).collect();
            uids.sort_unstable();
            let moved: HashMap<Uid, Uid> = dst
                .move_to(&uids, target_raw)
                .map_err(on(Side::Target))?
                .into_iter()
                .collect();
            for (old, mut new) in pairs {
                new.target_uid = old.target_uid.and_then(|u| moved.get(&u).copied());
                rekey_only.push((old, new));
            }
        }
        // A moved message may have had its flags changed on the source too: the copy keeps
        // its old ones through the move, so they are set before the rows say otherwise.
        let mut selected = None;
        let mut fixed = 0;
        for ((folder, flags), rows) in decide::moved_flag_groups(&rekey_only) {
            if selected != Some(folder) {
                dst.select(&target_raw_name(tree, folder), true)
                    .map_err(on(Side::Target))?;
                selected = Some(folder);
            }
            dst.set_flags(&rows, flags).map_err(on(Side::Target))?;
            fixed += rows.len() as u64;
        }
        self.stats.flags_updated += fixed;
        self.stats.moved += rekey_only.len() as u64;
        self.store().rekey(&self.entry.id, &rekey_only)?;
        if lost.is_empty() {
            return Ok(Vec::new());
        }
        // Forgotten as a refused copy is (`complete` deletes the rows it is given as failed):
        // the row names a target message that is no more. Should the copy below not happen,
        // the folder gets no checkpoint this pass, and the next one copies the message.
        let forgotten: Vec<&LedgerRow> = lost.iter().map(|(old, _)| old).collect();
        self.store().complete(&self.entry.id, &[], &forgotten)?;
        Ok(lost.iter().map(|(_, new)| (new.uid, new.size)).collect())
    }

    /// Adds to `vanished` what this pass's scans cannot have seen gone: the rows an earlier
    /// pass marked gone and, when something is to be copied (`copying`), the rows of folders
    /// the source no longer has. Returns the keys of the rows already marked gone.
    pub(super) fn seed_vanished(
        &mut self,
        src_tree: &FolderTree,
        copying: bool,
        vanished: &mut Vanished,
    ) -> Result<HashSet<RowKey>> {
        let gone = self.store().ledger_gone(&self.entry.id)?;
        let marked = gone.iter().map(decide::row_key).collect();
        if copying {
            decide::add_vanished(vanished, gone);
            let present: HashSet<&str> = src_tree.folders().map(|f| f.path.as_str()).collect();
            let folders = self.store().ledger_folders(&self.entry.id)?;
            for folder in folders.iter().filter(|f| !present.contains(f.as_str())) {
                let rows = self.store().ledger_folder(&self.entry.id, folder)?;
                decide::add_vanished(vanished, rows);
            }
        }
        Ok(marked)
    }

    /// Brings flags up to date: one flag update per target folder and flag set.
    pub(super) fn update_flags(
        &mut self,
        dst: &mut dyn MailSession,
        tree: &FolderTree,
        w: &FolderWork,
    ) -> Result<()> {
        let mut selected = None;
        let mut updates = Vec::new();
        let mut stored = Ok(());
        for ((folder, flags), rows) in decide::flag_groups(&w.flag_updates) {
            if selected != Some(folder) {
                stored = dst.select(&target_raw_name(tree, folder), true).map(drop);
                if stored.is_err() {
                    break;
                }
                selected = Some(folder);
            }
            let mut uids: Vec<Uid> = rows.iter().filter_map(|r| r.target_uid).collect();
            uids.sort_unstable();
            stored = dst.set_flags(&uids, flags);
            if stored.is_err() {
                break;
            }
            updates.extend(rows.into_iter().map(|r| (r, flags.clone())));
        }
        // What was stored before a failure is recorded too: the next attempt does not store
        // it again, and it counts as that attempt's progress.
        if !updates.is_empty() {
            self.stats.flags_updated += updates.len() as u64;
            self.store().set_flags(&self.entry.id, &updates)?;
        }
        stored.map_err(on(Side::Target))
    }
}

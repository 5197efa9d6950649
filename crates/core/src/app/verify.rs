//! `verify`: the ledger compared with both servers, entry by entry, without copying anything.
//!
//! For every copied row it asks: is the source message still there (same folder, UIDVALIDITY
//! and UID), and is its copy on the target (the target folder holds that UID)? A copy the
//! ledger names but the target lacks is the one disagreement that matters: the next pass would
//! never copy that message again. `--repair` forgets those rows (and the checkpoints of their
//! folders, so the next pass scans them), and the next `migrate` copies exactly those messages
//! once more — never one that is on the target.
//!
//! A source message that is gone is reported, not repaired: deletions on the source are not
//! propagated (SPEC §3), and its copy stays where it is. Target messages no row names are
//! counted too; they are the user's own mail, or copies from another tool.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::{App, AppError, Result, selected};
use crate::engine::EngineError;
use crate::entries::Selection;
use crate::folders::FolderPath;
use crate::model::{Checkpoint, Entry, EntryId, LedgerRow, Side, Uid, UidValidity};
use crate::ports::{Connector, MailSession, Store};

#[derive(Debug, Serialize)]
pub struct VerifyOutcome {
    pub entries: Vec<EntryVerdict>,
    /// Whether every entry agreed with both servers (or was repaired).
    pub ok: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct EntryVerdict {
    pub id: EntryId,
    /// Copied rows whose source message and target copy are both there.
    pub agreed: u64,
    /// Rows whose copy the target lacks: (target folder, target UID).
    pub missing_on_target: Vec<(String, Uid)>,
    /// Rows whose source message is gone (deleted or moved away on the source).
    pub gone_from_source: u64,
    /// Rows still pending (judged by the next pass) or without a target UID (not checkable).
    pub unchecked: u64,
    /// Target messages in the job's target folders that no row names.
    pub unknown_on_target: u64,
    /// Rows forgotten by `--repair`; the next pass copies their messages again.
    pub repaired: u64,
    /// Why this entry could not be verified, with the server's words.
    pub error: Option<String>,
}

/// Verifies the selected entries; with `repair`, forgets the rows whose copy is missing.
pub fn verify(app: &App<'_>, selection: &Selection, repair: bool) -> Result<VerifyOutcome> {
    let source = app
        .backends
        .connector(app.job, Side::Source)
        .map_err(AppError::Input)?;
    let target = app
        .backends
        .connector(app.job, Side::Target)
        .map_err(AppError::Input)?;
    let passwords = app.passwords()?;
    let mut store = app.open_state()?;
    let entries = store.entries()?;
    let mut out = Vec::new();
    for e in selected(&entries, selection)?
        .into_iter()
        .filter(Entry::is_migratable)
    {
        let pw = passwords.get(&e.id).cloned().unwrap_or_default();
        let mut v = EntryVerdict {
            id: e.id.clone(),
            ..EntryVerdict::default()
        };
        let checked = check_entry(
            source.as_ref(),
            target.as_ref(),
            store.as_mut(),
            &e,
            (pw.source.as_deref(), pw.target.as_deref()),
            &mut v,
        );
        match checked {
            Ok(rows) if repair && !rows.is_empty() => {
                forget(store.as_mut(), &e.id, &rows)?;
                v.repaired = rows.len() as u64;
            }
            Ok(_) => {}
            Err(err) => v.error = Some(err.to_string()),
        }
        out.push(v);
    }
    let ok = out
        .iter()
        .all(|v| v.error.is_none() && v.missing_on_target.len() as u64 == v.repaired);
    Ok(VerifyOutcome { entries: out, ok })
}

/// Compares one entry's ledger with both servers; returns the rows whose copy is missing.
fn check_entry(
    source: &dyn Connector,
    target: &dyn Connector,
    store: &mut dyn Store,
    e: &Entry,
    (source_pw, target_pw): (Option<&str>, Option<&str>),
    v: &mut EntryVerdict,
) -> std::result::Result<Vec<LedgerRow>, EngineError> {
    let connect = |side: Side, c: &dyn Connector, login: &str, pw| {
        c.open(login, pw).map_err(|err| match err {
            crate::ports::ConnectError::Config(m) => EngineError::Config(m),
            crate::ports::ConnectError::Connect(source)
            | crate::ports::ConnectError::Login(source) => EngineError::Session { side, source },
        })
    };
    let on = |side| move |source| EngineError::Session { side, source };
    let target_login = e.target_login.clone().unwrap_or_default();
    let _src_permit = source.limit().acquire();
    let mut src = connect(Side::Source, source, &e.source_login, source_pw)?;
    let _dst_permit = target.limit().acquire();
    let mut dst = connect(Side::Target, target, &target_login, target_pw)?;
    let src_tree = src.folders().map_err(on(Side::Source))?;
    let dst_tree = dst.folders().map_err(on(Side::Target))?;
    let rows = store.ledger_all(&e.id)?;

    let mut by_source: BTreeMap<&str, Vec<&LedgerRow>> = BTreeMap::new();
    let mut by_target: BTreeMap<&str, Vec<&LedgerRow>> = BTreeMap::new();
    for r in &rows {
        if r.is_pending() || r.target_uid.is_none() {
            v.unchecked += 1;
            continue;
        }
        by_source.entry(&r.source_folder).or_default().push(r);
        by_target.entry(&r.target_folder).or_default().push(r);
    }
    let mut gone: HashSet<(&str, UidValidity, Uid)> = HashSet::new();
    for (folder, rows) in &by_source {
        let path = FolderPath::parse(folder);
        let there = match src_tree.get(&path) {
            Some(_) => {
                uids_of(src.as_mut(), &src_tree.raw_name_for(&path)).map_err(on(Side::Source))?
            }
            None => None,
        };
        for r in rows {
            let present = there.as_ref().is_some_and(|(validity, uids)| {
                *validity == r.uid_validity && uids.contains(&r.uid)
            });
            if !present {
                gone.insert((folder, r.uid_validity, r.uid));
            }
        }
    }
    v.gone_from_source = gone.len() as u64;
    let mut missing = Vec::new();
    for (folder, rows) in &by_target {
        let path = FolderPath::parse(folder);
        let uids = match dst_tree.get(&path) {
            Some(_) => uids_of(dst.as_mut(), &dst_tree.raw_name_for(&path))
                .map_err(on(Side::Target))?
                .map(|(_, uids)| uids)
                .unwrap_or_default(),
            None => Default::default(),
        };
        let named: HashSet<Uid> = rows.iter().filter_map(|r| r.target_uid).collect();
        v.unknown_on_target += uids.iter().filter(|u| !named.contains(u)).count() as u64;
        for r in rows {
            match r.target_uid {
                Some(u)
                    if uids.contains(&u)
                        && !gone.contains(&(r.source_folder.as_str(), r.uid_validity, r.uid)) =>
                {
                    v.agreed += 1;
                }
                Some(u) if uids.contains(&u) => {}
                Some(u) => {
                    v.missing_on_target.push((folder.to_string(), u));
                    missing.push((*r).clone());
                }
                None => {}
            }
        }
    }
    src.logout();
    dst.logout();
    Ok(missing)
}

/// The UIDVALIDITY and UIDs of a folder; `None` when it cannot be selected.
fn uids_of(
    s: &mut dyn MailSession,
    raw: &str,
) -> std::result::Result<Option<(UidValidity, HashSet<Uid>)>, crate::ports::SessionError> {
    let selected = match s.select(raw, false) {
        Ok(sel) => sel,
        Err(e) if e.is_refusal() => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut uids = HashSet::new();
    if selected.exists > 0 {
        s.scan(Uid::FIRST, &mut |m| {
            uids.insert(m.uid);
        })?;
    }
    Ok(Some((selected.uid_validity, uids)))
}

/// Forgets rows whose copy is missing, and spoils their folders' checkpoints (UIDVALIDITY 0,
/// which no server reports, hence `Checkpoint::uid_validity` is a plain number) so the next
/// pass scans those folders instead of skipping them after one STATUS.
fn forget(store: &mut dyn Store, entry: &EntryId, rows: &[LedgerRow]) -> Result<()> {
    let refs: Vec<&LedgerRow> = rows.iter().collect();
    store.complete(entry, &[], &refs)?;
    let folders: HashSet<&str> = rows.iter().map(|r| r.source_folder.as_str()).collect();
    for folder in folders {
        if let Some(c) = store.checkpoint(entry, folder)? {
            let spoiled = Checkpoint {
                uid_validity: 0,
                ..c
            };
            store.set_checkpoint(entry, folder, &spoiled)?;
        }
    }
    Ok(())
}

//! `match`: pairing source mailboxes with target mailboxes — from a CSV, by the automatic
//! rules ([`crate::matching`]), by the admin's hand, by creating them — plus skipping entries
//! and putting them in stages.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{App, AppError, Result};
use crate::csvfile::parse_mailboxes_csv;
use crate::entries::{Selection, entries_from_csv, select};
use crate::job::CreateConfig;
use crate::matching::{Decision, Rule, TargetIndex};
use crate::model::{
    DirectoryMailbox, EmailAddress, Entry, EntryId, MailboxId, Origin, Side, local_part,
    same_address,
};
use crate::ports::{Directory, Store};

#[derive(Debug, Serialize)]
pub struct ImportOutcome {
    pub file: PathBuf,
    pub added: usize,
    pub updated: usize,
}

/// Imports a mailboxes CSV (the job's `[mailboxes] csv` without `path`): entries are updated in
/// place by Source ID and keep their ledgers. A bad file changes nothing. With a target
/// directory, CSV targets then learn their mailbox IDs from it.
pub fn import_csv(app: &App<'_>, path: Option<&Path>) -> Result<ImportOutcome> {
    let path = path
        .map(Path::to_path_buf)
        .or_else(|| app.job.mailboxes_csv.clone())
        .ok_or_else(|| {
            AppError::input("No CSV: give --csv FILE or set [mailboxes] csv in the job file")
        })?;
    let rows = parse_mailboxes_csv(&path).map_err(|e| AppError::input(e.to_string()))?;
    // The directory is bound before anything is written, so an unreachable one changes
    // nothing.
    let target_dir = app.directory(Side::Target)?;
    let mut store = app.open_state()?;
    let existing = store.entries()?;
    let entries = entries_from_csv(&rows, &existing);
    let (added, updated) = store.upsert_entries(&entries)?;
    if let Some(mut dir) = target_dir {
        resolve_csv_targets(dir.as_mut(), store.as_mut())?;
    }
    Ok(ImportOutcome {
        file: path,
        added,
        updated,
    })
}

/// After a CSV import: learns each CSV target's mailbox ID from the target directory (one
/// listing), so that a later refresh can look it up. Returns how many were learned.
fn resolve_csv_targets(dir: &mut dyn Directory, store: &mut dyn Store) -> Result<usize> {
    let unresolved: Vec<Entry> = store
        .entries()?
        .into_iter()
        .filter(|e| {
            e.origin == Origin::Csv && e.target_id.is_none() && !e.target_addresses.is_empty()
        })
        .collect();
    if unresolved.is_empty() {
        return Ok(0);
    }
    let listing = dir.list().map_err(|source| AppError::Directory {
        side: Side::Target,
        source,
    })?;
    let mut by_address: HashMap<String, Vec<&DirectoryMailbox>> = HashMap::new();
    for d in &listing.mailboxes {
        for a in &d.addresses {
            by_address.entry(a.to_lowercase()).or_default().push(d);
        }
    }
    let mut updates = Vec::new();
    for mut e in unresolved {
        let address = e.target_addresses[0].to_lowercase();
        if let Some([d]) = by_address.get(&address).map(Vec::as_slice) {
            e.target_id = Some(d.id.clone());
            e.target_login = Some(d.login.clone());
            updates.push(e);
        }
    }
    store.upsert_entries(&updates)?;
    Ok(updates.len())
}

/// What `match` was asked to do besides importing a CSV.
#[derive(Debug, Clone, Default)]
pub struct MatchRequest {
    pub auto: bool,
    /// Limits `auto` to these entries (the web UI's selection); `None`: every unmatched one.
    pub auto_within: Option<Selection>,
    /// Manual matches, as the admin writes them: `M=TARGET_ADDRESS`.
    pub set: Vec<String>,
    pub create: Vec<String>,
    pub skip: Vec<String>,
    pub stage: Option<u32>,
    /// The entries for `stage`.
    pub mailboxes: Vec<String>,
}

impl MatchRequest {
    pub fn any(&self) -> bool {
        self.auto
            || !self.set.is_empty()
            || !self.create.is_empty()
            || !self.skip.is_empty()
            || self.stage.is_some()
    }
}

/// What `match` did, one list per kind of action (`--json`).
#[derive(Debug, Default, Serialize)]
pub struct MatchOutcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoMatched>,
    pub manual: Vec<Matched>,
    pub to_create: Vec<Matched>,
    pub skipped: Vec<EntryId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<Staged>,
}

#[derive(Debug, Default, Serialize)]
pub struct AutoMatched {
    /// (entry, target address, rule)
    pub matched: Vec<(EntryId, String, String)>,
    /// (entry, why not)
    pub unmatched: Vec<(EntryId, String)>,
}

#[derive(Debug, Serialize)]
pub struct Matched {
    pub id: EntryId,
    pub addresses: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Staged {
    pub stage: u32,
    pub entries: Vec<EntryId>,
}

fn one(entries: &[Entry], m: &str) -> Result<Entry> {
    select(entries, &Selection::Mailboxes(vec![m.to_string()]))
        .map_err(AppError::Input)?
        .into_iter()
        .next()
        .cloned()
        .ok_or_else(|| AppError::input(format!("No entry matches {m:?}")))
}

/// Applies the requested actions. Every name and address is checked before anything changes.
pub fn match_entries(app: &App<'_>, req: &MatchRequest) -> Result<MatchOutcome> {
    let mut store = app.open_state()?;
    let entries = store.entries()?;
    let mut sets = Vec::new();
    for s in &req.set {
        let (m, address) = s
            .split_once('=')
            .ok_or_else(|| AppError::input(format!("--set {s:?}: write M=TARGET_ADDRESS")))?;
        let address = EmailAddress::parse(address).map_err(|why| {
            AppError::input(format!(
                "--set {s:?}: {:?} is not an address: {why}",
                address.trim()
            ))
        })?;
        sets.push((one(&entries, m)?, address));
    }
    let creates: Vec<Entry> = req
        .create
        .iter()
        .map(|m| one(&entries, m))
        .collect::<Result<_>>()?;
    let skips: Vec<Entry> = req
        .skip
        .iter()
        .map(|m| one(&entries, m))
        .collect::<Result<_>>()?;
    if req.stage.is_some() && req.mailboxes.is_empty() {
        return Err(AppError::input(
            "--stage N needs the entries: --mailbox M (repeatable)",
        ));
    }
    let staged: Vec<Entry> = req
        .mailboxes
        .iter()
        .map(|m| one(&entries, m))
        .collect::<Result<_>>()?;
    if !creates.is_empty() && app.job.target.create.is_none() {
        return Err(AppError::input(
            "--create needs [target.create] in the job file",
        ));
    }

    let mut out = MatchOutcome::default();
    if req.auto {
        let mut dir = app.need_directory(Side::Target, "match --auto")?;
        let within = match &req.auto_within {
            Some(selection) => super::selected(&entries, selection)?,
            None => entries.clone(),
        };
        out.auto = Some(auto_match_entries(dir.as_mut(), store.as_mut(), &within)?);
    }
    if !sets.is_empty() {
        let mut target_dir = app.directory(Side::Target)?;
        for (e, address) in &sets {
            let u = set_manual(store.as_mut(), e, address, target_dir.as_deref_mut())?;
            out.manual.push(Matched {
                id: u.id,
                addresses: u.target_addresses,
            });
        }
    }
    if let Some(create) = &app.job.target.create {
        for e in &creates {
            let mut u = e.clone();
            u.target_login = None;
            u.target_addresses = vec![created_address(e, create)];
            u.target_id = None;
            u.origin = Origin::PendingCreation;
            u.match_note = None;
            store.upsert_entries(std::slice::from_ref(&u))?;
            out.to_create.push(Matched {
                id: u.id,
                addresses: u.target_addresses,
            });
        }
    }
    for e in &skips {
        let mut u = e.clone();
        u.origin = Origin::Skip;
        store.upsert_entries(std::slice::from_ref(&u))?;
        out.skipped.push(u.id);
    }
    if let Some(n) = req.stage {
        let updated: Vec<Entry> = staged
            .iter()
            .map(|e| Entry {
                stage: Some(n),
                ..e.clone()
            })
            .collect();
        store.upsert_entries(&updated)?;
        out.stage = Some(Staged {
            stage: n,
            entries: staged.into_iter().map(|e| e.id).collect(),
        });
    }
    Ok(out)
}

/// Applies the automatic rules to every unmatched entry among `entries`.
fn auto_match_entries(
    dir: &mut dyn Directory,
    store: &mut dyn Store,
    entries: &[Entry],
) -> Result<AutoMatched> {
    let targets = dir
        .list()
        .map_err(|source| AppError::Directory {
            side: Side::Target,
            source,
        })?
        .mailboxes;
    let mut taken: HashSet<MailboxId> = store
        .entries()?
        .into_iter()
        .filter_map(|e| e.target_id)
        .collect();
    let mut out = AutoMatched::default();
    let mut updates = Vec::new();
    let index = TargetIndex::new(&targets);
    for e in entries.iter().filter(|e| e.origin == Origin::Unmatched) {
        let decision = index.decide(
            &e.source_addresses,
            e.source_display_name.as_deref(),
            &taken,
        );
        let mut u = e.clone();
        match &decision {
            Decision::Match { target, rule } => {
                taken.insert(target.id.clone());
                set_target(&mut u, target, Origin::Auto);
                out.matched
                    .push((e.id.clone(), primary(target), rule_name(*rule).into()));
            }
            _ => {
                u.match_note = decision.note();
                out.unmatched
                    .push((e.id.clone(), u.match_note.clone().unwrap_or_default()));
            }
        }
        updates.push(u);
    }
    store.upsert_entries(&updates)?;
    Ok(out)
}

fn rule_name(r: Rule) -> &'static str {
    match r {
        Rule::PrimaryAddress => "primary address",
        Rule::Alias => "alias",
        Rule::LocalPart => "local part",
        Rule::DisplayName => "display name",
    }
}

fn primary(d: &DirectoryMailbox) -> String {
    d.addresses
        .first()
        .cloned()
        .unwrap_or_else(|| d.login.clone())
}

/// Points an entry at a directory mailbox.
pub(super) fn set_target(e: &mut Entry, d: &DirectoryMailbox, origin: Origin) {
    e.target_login = Some(d.login.clone());
    e.target_addresses = d.addresses.clone();
    e.target_id = Some(d.id.clone());
    e.origin = origin;
    e.match_note = None;
}

/// A manual match: the admin's address. With a target directory the mailbox must exist there
/// (its login and ID come from it); without one the address is the login.
fn set_manual(
    store: &mut dyn Store,
    entry: &Entry,
    address: &EmailAddress,
    dir: Option<&mut (dyn Directory + 'static)>,
) -> Result<Entry> {
    let address = address.as_str();
    let mut e = entry.clone();
    match dir {
        Some(dir) => {
            let found = dir
                .find_by_address(address)
                .map_err(|source| AppError::Directory {
                    side: Side::Target,
                    source,
                })?;
            match found.as_slice() {
                [d] => set_target(&mut e, d, Origin::Manual),
                [] => {
                    return Err(AppError::input(format!(
                        "No mailbox with the address {address} in the target directory"
                    )));
                }
                many => {
                    return Err(AppError::input(format!(
                        "{} target mailboxes have the address {address}",
                        many.len()
                    )));
                }
            }
        }
        None => {
            e.target_login = Some(address.to_string());
            e.target_addresses = vec![address.to_string()];
            e.target_id = None;
            e.origin = Origin::Manual;
            e.match_note = None;
        }
    }
    // A manual match keeps the admin's address first, whatever the directory lists first.
    e.target_addresses.retain(|a| !same_address(a, address));
    e.target_addresses.insert(0, address.to_string());
    store.upsert_entries(std::slice::from_ref(&e))?;
    Ok(e)
}

/// The address a created mailbox gets: the source's local part at the new domain.
pub fn created_address(e: &Entry, create: &CreateConfig) -> String {
    let primary = e
        .source_addresses
        .first()
        .map(String::as_str)
        .unwrap_or(&e.source_login);
    format!("{}@{}", local_part(primary), create.domain)
}

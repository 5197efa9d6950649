//! Who the mailboxes are: `discover` from the source directory, matching to target mailboxes,
//! creating missing ones, and Refresh email addresses (SPEC §6). The decisions live in
//! [`crate::matching`] and [`crate::refresh`]; this module does the directory and store work.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::directory::{DirEntry, Directory, DirectoryError, DirectorySettings, NewMailbox};
use crate::job::{Connection, CreateConfig, DirectoryConfig};
use crate::matching::{Decision as MatchDecision, Rule, auto_match};
use crate::refresh::{self, Outcome, Side, TargetStep};
use crate::store::{Entry, RefreshLine, RefreshRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{side} directory: {source}")]
    Directory {
        side: &'static str,
        #[source]
        source: DirectoryError,
    },
    #[error("State database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Input(String),
}

type Result<T> = std::result::Result<T, IdentityError>;

fn on(side: &'static str) -> impl Fn(DirectoryError) -> IdentityError {
    move |source| IdentityError::Directory { side, source }
}

/// The directory settings of one side, its secret read now.
pub fn settings(
    side: &str,
    cfg: &DirectoryConfig,
) -> std::result::Result<DirectorySettings, String> {
    cfg.reveal()
        .map_err(|e| format!("{side}.directory.bind_password: {e}"))
}

/// Connects to a side's directory; `Ok(None)` when the side has none.
pub fn connect(side: &'static str, conn: &Connection) -> Result<Option<Directory>> {
    let Some(cfg) = &conn.directory else {
        return Ok(None);
    };
    let s = settings(side, cfg).map_err(IdentityError::Input)?;
    Directory::connect(&s).map(Some).map_err(on(side))
}

fn entry_from(d: &DirEntry) -> Entry {
    Entry {
        id: d.id.clone(),
        source_login: d.login.clone(),
        source_addresses: d.addresses.clone(),
        target_login: None,
        target_addresses: Vec::new(),
        origin: "unmatched".into(),
        stage: None,
        state: "new".into(),
        copied: 0,
        failed: 0,
        last_pass: None,
        last_error: None,
        source_display_name: d.display_name.clone(),
        target_id: None,
        match_note: None,
        missing_source: false,
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Discovered {
    pub added: Vec<String>,
    pub known: usize,
    pub warnings: Vec<String>,
}

/// Loads the source mailboxes into entries, keyed by mailbox ID; known IDs are left alone.
pub fn discover(dir: &mut Directory, store: &mut Store) -> Result<Discovered> {
    let (found, warnings) = dir.list_with_warnings().map_err(on("source"))?;
    let existing: HashSet<String> = store.entries()?.into_iter().map(|e| e.id).collect();
    let new: Vec<Entry> = found
        .iter()
        .filter(|d| !existing.contains(&d.id))
        .map(entry_from)
        .collect();
    store.upsert_entries(&new)?;
    Ok(Discovered {
        added: new.into_iter().map(|e| e.id).collect(),
        known: found.iter().filter(|d| existing.contains(&d.id)).count(),
        warnings,
    })
}

#[derive(Debug, Default, serde::Serialize)]
pub struct AutoMatched {
    /// (entry, target address, rule)
    pub matched: Vec<(String, String, String)>,
    /// (entry, why not)
    pub unmatched: Vec<(String, String)>,
}

/// Applies the automatic rules to every unmatched entry among `entries`.
pub fn auto_match_entries(
    dir: &mut Directory,
    store: &mut Store,
    entries: &[Entry],
) -> Result<AutoMatched> {
    let targets = dir.list().map_err(on("target"))?;
    let all = store.entries()?;
    let mut taken: HashSet<String> = all.iter().filter_map(|e| e.target_id.clone()).collect();
    let mut out = AutoMatched::default();
    let mut updates = Vec::new();
    for e in entries.iter().filter(|e| e.origin == "unmatched") {
        let decision = auto_match(
            &e.source_addresses,
            e.source_display_name.as_deref(),
            &targets,
            &taken,
        );
        let mut u = e.clone();
        match &decision {
            MatchDecision::Match { target, rule } => {
                taken.insert(target.id.clone());
                set_target(&mut u, target, "auto");
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

fn primary(d: &DirEntry) -> String {
    d.addresses
        .first()
        .cloned()
        .unwrap_or_else(|| d.login.clone())
}

fn set_target(e: &mut Entry, d: &DirEntry, origin: &str) {
    e.target_login = Some(d.login.clone());
    e.target_addresses = d.addresses.clone();
    e.target_id = Some(d.id.clone());
    e.origin = origin.into();
    e.match_note = None;
}

/// A manual match: the admin's address. With a target directory the mailbox must exist there
/// (its login and ID come from it); without one the address is the login.
pub fn set_manual(
    store: &mut Store,
    entry: &Entry,
    address: &str,
    dir: Option<&mut Directory>,
) -> Result<Entry> {
    let mut e = entry.clone();
    match dir {
        Some(dir) => {
            let found = dir.find_by_address(address).map_err(on("target"))?;
            match found.as_slice() {
                [d] => set_target(&mut e, d, "manual"),
                [] => {
                    return Err(IdentityError::Input(format!(
                        "no mailbox with the address {address} in the target directory"
                    )));
                }
                many => {
                    return Err(IdentityError::Input(format!(
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
            e.origin = "manual".into();
            e.match_note = None;
        }
    }
    // A manual match keeps the admin's address first, whatever the directory lists first.
    e.target_addresses
        .retain(|a| !a.eq_ignore_ascii_case(address));
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
    let local = primary.rsplit_once('@').map_or(primary, |(l, _)| l);
    format!("{local}@{}", create.domain)
}

pub fn mark_for_creation(store: &mut Store, entry: &Entry, create: &CreateConfig) -> Result<Entry> {
    let mut e = entry.clone();
    e.target_login = None;
    e.target_addresses = vec![created_address(entry, create)];
    e.target_id = None;
    e.origin = "pending-creation".into();
    e.match_note = None;
    store.upsert_entries(std::slice::from_ref(&e))?;
    Ok(e)
}

pub fn mark_skip(store: &mut Store, entry: &Entry) -> Result<Entry> {
    let mut e = entry.clone();
    e.origin = "skip".into();
    store.upsert_entries(std::slice::from_ref(&e))?;
    Ok(e)
}

pub fn set_stage(store: &mut Store, entries: &[Entry], stage: u32) -> Result<()> {
    let updated: Vec<Entry> = entries
        .iter()
        .map(|e| Entry {
            stage: Some(stage),
            ..e.clone()
        })
        .collect();
    store.upsert_entries(&updated)?;
    Ok(())
}

/// Creates the target mailboxes of entries waiting for creation, one directory entry each.
/// Returns, per entry, the created address or the directory's refusal.
pub fn create_pending(
    dir: &mut Directory,
    store: &mut Store,
    create: &CreateConfig,
    password: Option<String>,
    entries: &[Entry],
) -> Result<Vec<(String, std::result::Result<String, String>)>> {
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.origin == "pending-creation") {
        let address = e
            .target_addresses
            .first()
            .cloned()
            .unwrap_or_else(|| created_address(e, create));
        let login = address
            .rsplit_once('@')
            .map_or(address.as_str(), |(l, _)| l)
            .to_string();
        let new = NewMailbox {
            base: create.base.clone(),
            login,
            address: address.clone(),
            display_name: e.source_display_name.clone(),
            object_classes: create.object_classes.clone(),
            password: password.clone(),
        };
        match dir.add_mailbox(&new) {
            Ok(d) => {
                let mut u = e.clone();
                set_target(&mut u, &d, "created");
                store.upsert_entries(std::slice::from_ref(&u))?;
                out.push((e.id.clone(), Ok(primary(&d))));
            }
            Err(err) => out.push((e.id.clone(), Err(err.to_string()))),
        }
    }
    Ok(out)
}

/// Why a side cannot be refreshed, and what to do instead (SPEC §6).
pub fn no_directory_reason(side: Side) -> String {
    match side {
        Side::Source => "the source has no directory, so its addresses cannot be looked up by \
                         mailbox ID: re-import the mailboxes CSV with the same Source IDs and the \
                         new addresses (mailferry match JOB --csv FILE)"
            .into(),
        Side::Target => "the target has no directory, so its addresses cannot be looked up by \
                         mailbox ID: for a target-only change, reconfigure the target in the job \
                         file and rematch the entries (mailferry match JOB --set M=ADDRESS, or a \
                         new CSV)"
            .into(),
    }
}

/// Above this many wanted entries, a directory is listed once (a paged search) rather than
/// searched once per entry.
const LIST_ABOVE: usize = 20;

/// Directory entries by stable ID: from one listing when many are wanted, otherwise one
/// search each. An ID the listing lacks is still looked up on its own: the listing skips
/// entries it cannot use (no login or address), and such an entry must not pass for a missing
/// mailbox, which refresh would remove.
struct ById {
    side: &'static str,
    listed: Option<HashMap<String, DirEntry>>,
}

impl ById {
    fn new(side: &'static str, dir: &mut Directory, wanted: usize) -> Result<ById> {
        let listed = if wanted > LIST_ABOVE {
            let entries = dir.list().map_err(on(side))?;
            Some(entries.into_iter().map(|e| (e.id.clone(), e)).collect())
        } else {
            None
        };
        Ok(ById { side, listed })
    }

    fn get(&mut self, dir: &mut Directory, id: &str) -> Result<Option<DirEntry>> {
        if let Some(found) = self.listed.as_mut().and_then(|m| m.remove(id)) {
            return Ok(Some(found));
        }
        dir.lookup(id).map_err(on(self.side))
    }
}

/// After a CSV import: learns each CSV target's mailbox ID from the target directory (one
/// listing), so that a later refresh can look it up. Returns how many were learned.
pub fn resolve_csv_targets(dir: &mut Directory, store: &mut Store) -> Result<usize> {
    let unresolved: Vec<Entry> = store
        .entries()?
        .into_iter()
        .filter(|e| e.origin == "csv" && e.target_id.is_none() && !e.target_addresses.is_empty())
        .collect();
    if unresolved.is_empty() {
        return Ok(0);
    }
    let mut by_address: HashMap<String, Vec<DirEntry>> = HashMap::new();
    for d in dir.list().map_err(on("target"))? {
        for a in &d.addresses {
            by_address
                .entry(a.to_ascii_lowercase())
                .or_default()
                .push(d.clone());
        }
    }
    let mut updates = Vec::new();
    for mut e in unresolved {
        let address = e.target_addresses[0].to_ascii_lowercase();
        if let Some([d]) = by_address.get(&address).map(Vec::as_slice) {
            e.target_id = Some(d.id.clone());
            e.target_login = Some(d.login.clone());
            updates.push(e);
        }
    }
    store.upsert_entries(&updates)?;
    Ok(updates.len())
}

/// Refreshes the selected entries from the directories that are there, updates the stored
/// addresses, marks entries whose source mailbox is missing, and records the run.
pub fn refresh_addresses(
    mut source: Option<&mut Directory>,
    mut target: Option<&mut Directory>,
    store: &mut Store,
    selected: &[Entry],
) -> Result<RefreshRecord> {
    let mut source_ids = match source.as_deref_mut() {
        Some(dir) => Some(ById::new("source", dir, selected.len())?),
        None => None,
    };
    let wanted_targets = selected.iter().filter(|e| e.target_id.is_some()).count();
    let mut target_ids = match target.as_deref_mut() {
        Some(dir) => Some(ById::new("target", dir, wanted_targets)?),
        None => None,
    };
    let mut lines = Vec::new();
    let mut updates: BTreeMap<String, Entry> = BTreeMap::new();
    for e in selected {
        let mut u = e.clone();
        if let (Some(dir), Some(ids)) = (source.as_deref_mut(), source_ids.as_mut()) {
            let found = ids.get(dir, &e.id)?;
            let d = refresh::source(e, found);
            if let Some(f) = &d.found {
                u.source_addresses = d.after.clone();
                u.source_login = f.login.clone();
                u.source_display_name = f.display_name.clone();
            }
            u.missing_source = d.outcome == Outcome::Missing;
            lines.push(line(Side::Source, e, Some(e.id.clone()), &d));
        }
        if let (Some(dir), Some(ids)) = (target.as_deref_mut(), target_ids.as_mut()) {
            let decision = match refresh::target_step(e) {
                TargetStep::NoResult => None,
                TargetStep::Decided(d) => Some(d),
                TargetStep::Lookup(None) => Some(refresh::target(e, None)),
                TargetStep::Lookup(Some(id)) => Some(refresh::target(e, ids.get(dir, &id)?)),
            };
            if let Some(d) = decision {
                if let Some(f) = &d.found {
                    u.target_addresses = d.after.clone();
                    u.target_login = Some(f.login.clone());
                }
                lines.push(line(Side::Target, e, e.target_id.clone(), &d));
            }
        }
        updates.insert(u.id.clone(), u);
    }
    let updates: Vec<Entry> = updates.into_values().collect();
    store.upsert_entries(&updates)?;
    let record = RefreshRecord {
        started: crate::store::now(),
        source_available: source.is_some(),
        source_reason: source.is_none().then(|| no_directory_reason(Side::Source)),
        target_available: target.is_some(),
        target_reason: target.is_none().then(|| no_directory_reason(Side::Target)),
        lines,
    };
    store.record_refresh(&record)?;
    Ok(record)
}

fn line(side: Side, e: &Entry, id: Option<String>, d: &refresh::Decision) -> RefreshLine {
    RefreshLine {
        side: side.as_str().into(),
        result: d.outcome.key().into(),
        entry: e.id.clone(),
        id,
        before: d.before.clone(),
        after: d.after.clone(),
    }
}

/// Removes the entries whose source mailbox a refresh found missing; returns their IDs.
pub fn remove_missing(store: &mut Store) -> Result<Vec<String>> {
    let ids: Vec<String> = store.missing_source_ids()?;
    if !ids.is_empty() {
        store.remove_entries(&ids)?;
    }
    Ok(ids)
}

//! Refresh email addresses (SPEC §6): every selected entry looked up again by mailbox ID in
//! both directories, its stored addresses updated, the run recorded, and the report written.
//! The decisions are [`crate::refresh`]'s; this service gathers and applies them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::{App, AppError, Result, selected};
use crate::entries::Selection;
use crate::model::{
    DirectoryMailbox, Entry, EntryId, MailboxId, RefreshLine, RefreshRecord, RefreshResult, Side,
    now,
};
use crate::ports::{Directory, Store};
use crate::refresh::{self, TargetStep};
use crate::report::RefreshReport;
use crate::report::refresh as render;

/// What a refresh did: the record (for the summary), and the report as SPEC §4's JSON.
#[derive(Debug)]
pub struct RefreshOutcome {
    pub record: RefreshRecord,
    pub report: RefreshReport,
    /// The report files written: HTML, CSV, JSON.
    pub files: Vec<PathBuf>,
}

impl RefreshOutcome {
    /// The terminal summary (SPEC §6).
    pub fn summary(&self) -> String {
        render::summary(&self.record, &self.report.removed_next)
    }
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

/// Refreshes the selected entries. The directories are reached first: if one cannot be,
/// nothing changes.
pub fn refresh(app: &App<'_>, selection: &Selection) -> Result<RefreshOutcome> {
    let unreachable = |side: Side| {
        move |e: AppError| match e {
            AppError::Directory { .. } => AppError::Unavailable(format!(
                "Cannot refresh: the {side} directory is not reachable: {e}"
            )),
            other => other,
        }
    };
    let mut store = app.open_state()?;
    let entries = store.entries()?;
    let chosen = selected(&entries, selection)?;
    let mut source = app
        .directory(Side::Source)
        .map_err(unreachable(Side::Source))?;
    let mut target = app
        .directory(Side::Target)
        .map_err(unreachable(Side::Target))?;
    let record = refresh_entries(
        source.as_deref_mut(),
        target.as_deref_mut(),
        store.as_mut(),
        &chosen,
    )?;
    let removed_next = store.missing_source_ids()?;
    write_reports(app, record, removed_next)
}

/// Writes `reports/refresh-<time>.{html,csv,json}` beside the job file.
fn write_reports(
    app: &App<'_>,
    record: RefreshRecord,
    removed_next: Vec<EntryId>,
) -> Result<RefreshOutcome> {
    let dir = app.job.reports_dir();
    let failed = |p: &std::path::Path, e: std::io::Error| {
        AppError::Unavailable(format!("Unable to write {}: {e}", p.display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| failed(&dir, e))?;
    let stem = format!(
        "refresh-{}",
        record
            .started
            .replace([':', '-'], "")
            .replace('T', "-")
            .trim_end_matches('Z')
    );
    let html = dir.join(format!("{stem}.html"));
    let html = std::path::absolute(&html).unwrap_or(html);
    let report = RefreshReport::new(&record, &removed_next, Some(html.display().to_string()));
    let csv = dir.join(format!("{stem}.csv"));
    let json = dir.join(format!("{stem}.json"));
    let json_text = serde_json::to_string_pretty(&report)
        .map_err(|e| AppError::Unavailable(format!("Unable to write {}: {e}", json.display())))?;
    for (path, text) in [
        (&html, render::html(&app.job.name, &record, &removed_next)),
        (&csv, render::csv(&record)),
        (&json, json_text),
    ] {
        std::fs::write(path, text).map_err(|e| failed(path, e))?;
    }
    Ok(RefreshOutcome {
        record,
        report,
        files: vec![html, csv, json],
    })
}

/// Above this many wanted entries, a directory is listed once (a paged search) rather than
/// searched once per entry.
const LIST_ABOVE: usize = 20;

/// Directory entries by stable ID: from one listing when many are wanted, otherwise one
/// search each. An ID the listing lacks is still looked up on its own: the listing skips
/// entries it cannot use (no login or address), and such an entry must not pass for a missing
/// mailbox, which refresh would remove.
struct ById {
    side: Side,
    listed: Option<HashMap<MailboxId, DirectoryMailbox>>,
}

impl ById {
    fn new(side: Side, dir: &mut dyn Directory, wanted: usize) -> Result<ById> {
        let listed = if wanted > LIST_ABOVE {
            let listing = dir
                .list()
                .map_err(|source| AppError::Directory { side, source })?;
            Some(
                listing
                    .mailboxes
                    .into_iter()
                    .map(|e| (e.id.clone(), e))
                    .collect(),
            )
        } else {
            None
        };
        Ok(ById { side, listed })
    }

    fn get(&mut self, dir: &mut dyn Directory, id: &MailboxId) -> Result<Option<DirectoryMailbox>> {
        if let Some(found) = self.listed.as_mut().and_then(|m| m.remove(id)) {
            return Ok(Some(found));
        }
        dir.lookup(id).map_err(|source| AppError::Directory {
            side: self.side,
            source,
        })
    }
}

/// Refreshes the selected entries from the directories that are there, updates the stored
/// addresses, marks entries whose source mailbox is missing, and records the run.
pub fn refresh_entries(
    mut source: Option<&mut (dyn Directory + 'static)>,
    mut target: Option<&mut (dyn Directory + 'static)>,
    store: &mut dyn Store,
    selected: &[Entry],
) -> Result<RefreshRecord> {
    let mut source_ids = match source.as_deref_mut() {
        Some(dir) => Some(ById::new(Side::Source, dir, selected.len())?),
        None => None,
    };
    let wanted_targets = selected.iter().filter(|e| e.target_id.is_some()).count();
    let mut target_ids = match target.as_deref_mut() {
        Some(dir) => Some(ById::new(Side::Target, dir, wanted_targets)?),
        None => None,
    };
    let mut lines = Vec::new();
    let mut updates: BTreeMap<EntryId, Entry> = BTreeMap::new();
    for e in selected {
        let mut u = e.clone();
        if let (Some(dir), Some(ids)) = (source.as_deref_mut(), source_ids.as_mut()) {
            let source_id = MailboxId::new(e.id.as_str());
            let d = refresh::source(e, ids.get(dir, &source_id)?);
            if let Some(f) = &d.found {
                u.source_addresses = d.after.clone();
                u.source_login = f.login.clone();
                u.source_display_name = f.display_name.clone();
            }
            u.missing_source = d.outcome == RefreshResult::Missing;
            lines.push(line(Side::Source, e, Some(source_id), &d));
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
        started: now(),
        source_available: source.is_some(),
        source_reason: source.is_none().then(|| no_directory_reason(Side::Source)),
        target_available: target.is_some(),
        target_reason: target.is_none().then(|| no_directory_reason(Side::Target)),
        lines,
    };
    store.record_refresh(&record)?;
    Ok(record)
}

fn line(side: Side, e: &Entry, id: Option<MailboxId>, d: &refresh::Decision) -> RefreshLine {
    RefreshLine {
        side,
        result: d.outcome,
        entry: e.id.clone(),
        id,
        before: d.before.clone(),
        after: d.after.clone(),
    }
}

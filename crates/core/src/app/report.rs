//! `report`: the latest migration or refresh report as HTML, CSV or JSON.

use super::{App, AppError, Result};
use serde::Serialize;

use crate::model::{EntryId, Failure, RunId, RunKind};
use crate::report::{MigrationReport, RefreshReport, migration, refresh};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    Migration,
    Refresh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Html,
    Csv,
    Json,
}

/// The text of the latest report of a kind; bad input (exit 2) when none has run yet.
pub fn report(app: &App<'_>, kind: ReportKind, format: ReportFormat) -> Result<String> {
    report_of(app, kind, format, None)
}

/// The text of the report of one run (`None`: the latest of its kind); bad input (exit 2)
/// when no such run is recorded.
pub fn report_of(
    app: &App<'_>,
    kind: ReportKind,
    format: ReportFormat,
    run: Option<RunId>,
) -> Result<String> {
    let store = app.read_state()?;
    let json = |v: serde_json::Result<String>| {
        v.map_err(|e| AppError::Unavailable(format!("Unable to write the report: {e}")))
    };
    let missing = |what: &str| match run {
        Some(r) => AppError::input(format!("No {what} run {} is recorded for this job", r.0)),
        None => AppError::input(format!("No {what} has run yet for this job")),
    };
    Ok(match kind {
        ReportKind::Migration => {
            let runs = store.runs(RunKind::Migrate)?;
            let Some(info) = runs.iter().find(|i| run.is_none_or(|r| r == i.id)) else {
                return Err(missing("migration"));
            };
            let summary = migration::summary_of(store.as_ref(), info)?;
            match format {
                ReportFormat::Json => json(serde_json::to_string_pretty(&MigrationReport::new(
                    &summary,
                )))?,
                ReportFormat::Csv => migration::csv(&summary),
                ReportFormat::Html => migration::html(&app.job.name, &summary),
            }
        }
        ReportKind::Refresh => {
            let latest = store.refreshes()?.first().map(|r| r.id);
            let Some(id) = run.or(latest) else {
                return Err(missing("refresh"));
            };
            let Some(record) = store.refresh_record(id)? else {
                return Err(missing("refresh"));
            };
            // Only the latest refresh decides what the next job edit or migrate removes.
            let removed_next = if Some(id) == latest {
                store.missing_source_ids()?
            } else {
                Vec::new()
            };
            match format {
                ReportFormat::Json => json(serde_json::to_string_pretty(&RefreshReport::new(
                    &record,
                    &removed_next,
                    None,
                )))?,
                ReportFormat::Csv => refresh::csv(&record),
                ReportFormat::Html => refresh::html(&app.job.name, &record, &removed_next),
            }
        }
    })
}

/// One recorded run, for the list of reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunListing {
    pub kind: &'static str,
    pub run: i64,
    pub started: String,
    pub finished: Option<String>,
    /// Migrations: mailboxes passed, messages copied and not copied. Refreshes: lines per
    /// result kind are in the report itself.
    pub entries: Option<usize>,
    pub copied: Option<u64>,
    pub failed: Option<u64>,
}

/// Every recorded run with a report, newest first: migrations and refreshes.
pub fn runs(app: &App<'_>) -> Result<Vec<RunListing>> {
    let store = app.read_state()?;
    let mut out = Vec::new();
    for info in store.runs(RunKind::Migrate)? {
        let entries = store.run_entries(info.id)?;
        out.push(RunListing {
            kind: "migration",
            run: info.id.0,
            started: info.started,
            finished: info.finished,
            entries: Some(entries.len()),
            copied: Some(entries.iter().map(|e| e.copied).sum()),
            failed: Some(entries.iter().map(|e| e.failed).sum()),
        });
    }
    for info in store.refreshes()? {
        out.push(RunListing {
            kind: "refresh",
            run: info.id.0,
            started: info.started,
            finished: info.finished,
            entries: None,
            copied: None,
            failed: None,
        });
    }
    out.sort_by(|a, b| b.started.cmp(&a.started).then(b.run.cmp(&a.run)));
    Ok(out)
}

/// Every message of one entry that the latest migration could not copy, with the server's
/// words: the drill-down behind an entry's failed count. Empty when that migration copied
/// everything of the entry, did not pass it, or none has run yet; bad input (exit 2) for an
/// ID that names no entry.
pub fn failures(app: &App<'_>, entry: &EntryId) -> Result<Vec<Failure>> {
    let store = app.read_state()?;
    if !store.entries()?.iter().any(|e| &e.id == entry) {
        return Err(AppError::input(format!(
            "No entry has the ID {:?}",
            entry.as_str()
        )));
    }
    let Some(run) = store.last_run(RunKind::Migrate)? else {
        return Ok(Vec::new());
    };
    let mut all = store.failures(run.id)?;
    all.retain(|f| &f.entry_id == entry);
    Ok(all)
}

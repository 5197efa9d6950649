//! `report`: the latest migration or refresh report as HTML, CSV or JSON.

use super::{App, AppError, Result};
use crate::model::{EntryId, Failure, RunKind};
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
    let store = app.open_state()?;
    let json = |v: serde_json::Result<String>| {
        v.map_err(|e| AppError::Unavailable(format!("Unable to write the report: {e}")))
    };
    Ok(match kind {
        ReportKind::Migration => {
            let Some(summary) = migration::last_migration(store.as_ref())? else {
                return Err(AppError::input("No migration has run yet for this job"));
            };
            match format {
                ReportFormat::Json => json(serde_json::to_string_pretty(&MigrationReport::new(
                    &summary,
                )))?,
                ReportFormat::Csv => migration::csv(&summary),
                ReportFormat::Html => migration::html(&app.job.name, &summary),
            }
        }
        ReportKind::Refresh => {
            let Some(record) = store.last_refresh()? else {
                return Err(AppError::input("No refresh has run yet for this job"));
            };
            let removed_next = store.missing_source_ids()?;
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

/// Every message of one entry that the latest migration could not copy, with the server's
/// words: the drill-down behind an entry's failed count. Empty when that migration copied
/// everything of the entry, did not pass it, or none has run yet; bad input (exit 2) for an
/// ID that names no entry.
pub fn failures(app: &App<'_>, entry: &EntryId) -> Result<Vec<Failure>> {
    let store = app.open_state()?;
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

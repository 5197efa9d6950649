//! `status`: the entry list — the "Jobs tab" (SPEC §4 `status --json`).

use serde::Serialize;

use super::{App, Result};
use crate::model::{Entry, EntryId, EntryState, Origin};
use crate::ports::store::{LivePass, PassProgress};

#[derive(Debug, Serialize)]
pub struct StatusOutcome {
    pub entries: Vec<EntryStatus>,
    /// Passes running now, in this process or another (SPEC §4 allows more keys).
    pub passes: Vec<PassStatus>,
}

/// A pass some `migrate` (or `serve`) process is running now.
#[derive(Debug, Clone, Serialize)]
pub struct PassStatus {
    pub entry: EntryId,
    /// The process: `host:pid`.
    pub holder: String,
    pub since: String,
    #[serde(flatten)]
    pub progress: PassProgress,
}

impl From<LivePass> for PassStatus {
    fn from(p: LivePass) -> PassStatus {
        PassStatus {
            entry: p.entry,
            holder: p.holder,
            since: p.since,
            progress: p.progress,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EntryStatus {
    pub id: EntryId,
    pub source: Mailbox,
    pub target: Option<Mailbox>,
    pub origin: Origin,
    pub stage: Option<u32>,
    pub state: EntryState,
    pub copied: u64,
    pub failed: u64,
    pub last_pass: Option<String>,
    pub error: Option<String>,
    pub match_note: Option<String>,
    pub missing_source: bool,
}

#[derive(Debug, Serialize)]
pub struct Mailbox {
    pub login: String,
    pub addresses: Vec<String>,
}

impl From<Entry> for EntryStatus {
    fn from(e: Entry) -> EntryStatus {
        EntryStatus {
            target: e.target_login.map(|login| Mailbox {
                login,
                addresses: e.target_addresses,
            }),
            source: Mailbox {
                login: e.source_login,
                addresses: e.source_addresses,
            },
            id: e.id,
            origin: e.origin,
            stage: e.stage,
            state: e.state,
            copied: e.copied,
            failed: e.failed,
            last_pass: e.last_pass,
            error: e.last_error,
            match_note: e.match_note,
            missing_source: e.missing_source,
        }
    }
}

pub fn status(app: &App<'_>) -> Result<StatusOutcome> {
    let store = app.open_state()?;
    Ok(StatusOutcome {
        entries: store
            .entries()?
            .into_iter()
            .map(EntryStatus::from)
            .collect(),
        passes: store
            .live_passes()?
            .into_iter()
            .map(PassStatus::from)
            .collect(),
    })
}

/// Only the passes running now: cheap enough to ask every second.
pub fn passes(app: &App<'_>) -> Result<Vec<PassStatus>> {
    Ok(app
        .open_state()?
        .live_passes()?
        .into_iter()
        .map(PassStatus::from)
        .collect())
}

//! `discover`: the source mailboxes from the source directory, as entries keyed by mailbox ID.

use std::collections::HashSet;

use serde::Serialize;

use super::{App, AppError, Result};
use crate::model::{DirectoryMailbox, Entry, EntryId, MailboxId, Origin, Side};

#[derive(Debug, Default, Serialize)]
pub struct DiscoverOutcome {
    pub added: Vec<EntryId>,
    pub known: usize,
    /// Directory entries that are not usable as mailboxes, and why.
    pub warnings: Vec<String>,
}

/// A new entry for a source mailbox: unmatched, nothing copied.
pub(super) fn entry_from(d: &DirectoryMailbox) -> Entry {
    let mut e = Entry::new(
        EntryId::new(d.id.as_str()),
        d.login.clone(),
        Origin::Unmatched,
    );
    e.source_addresses = d.addresses.clone();
    e.source_display_name = d.display_name.clone();
    e
}

/// Loads the source mailboxes into entries; known IDs are left alone.
pub fn discover(app: &App<'_>) -> Result<DiscoverOutcome> {
    let mut dir = app.need_directory(Side::Source, "discover")?;
    let mut store = app.open_state()?;
    let listing = dir.list().map_err(|source| AppError::Directory {
        side: Side::Source,
        source,
    })?;
    let existing: HashSet<MailboxId> = store
        .entries()?
        .into_iter()
        .map(|e| MailboxId::new(e.id.into_string()))
        .collect();
    let new: Vec<Entry> = listing
        .mailboxes
        .iter()
        .filter(|d| !existing.contains(&d.id))
        .map(entry_from)
        .collect();
    store.upsert_entries(&new)?;
    Ok(DiscoverOutcome {
        added: new.into_iter().map(|e| e.id).collect(),
        known: listing
            .mailboxes
            .iter()
            .filter(|d| existing.contains(&d.id))
            .count(),
        warnings: listing.skipped,
    })
}

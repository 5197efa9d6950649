//! `state copy`: a job's whole state moved into another store — SQLite to PostgreSQL when a
//! job grows onto several machines, or back — so that the next pass goes on where the last one
//! stopped and copies nothing twice.
//!
//! Everything the store port holds is copied through the port itself, entry by entry (so
//! memory stays bounded by one entry's ledger): the entries with their results, every ledger
//! row with its state and target UID (intents stay intents, for the next pass to resolve),
//! the checkpoints, every migration run with its lines and failures and its times, every
//! refresh with its lines, and the job file's fingerprint. Runs get new IDs in the copy, in
//! the same order. Leases are not copied: the copy is refused while a pass is running.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::{App, AppError, Result};
use crate::job::{Job, StateLocation};
use crate::model::{LedgerState, RunId, RunKind};
use crate::ports::Store;
use crate::ports::store::MetaKey;

/// What `state copy` copied.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StateCopyOutcome {
    /// The store copied into, as the job file would name it.
    pub to: String,
    pub entries: usize,
    pub ledger_rows: usize,
    pub checkpoints: usize,
    pub runs: usize,
    pub run_lines: usize,
    pub failures: usize,
    pub refreshes: usize,
    /// Entries queued for the workers, queued in the copy in the same order (with new
    /// queued times and tickets).
    pub queued: usize,
}

/// Where `--to` points: `postgres://…`, `sqlite://FILE` or a file; a relative file is beside
/// the job file, as the job file's own `state` key is read.
pub fn destination(text: &str, job_dir: &Path) -> Result<StateLocation> {
    let text = text.trim();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(StateLocation::Postgres(text.to_string()));
    }
    let file = match text.strip_prefix("sqlite://") {
        Some(f) => f,
        None if text.contains("://") => {
            return Err(AppError::input(format!(
                "--to {text}: use \"postgres://USER@HOST:PORT/DB\" or \"sqlite://FILE\""
            )));
        }
        None => text,
    };
    if file.is_empty() {
        return Err(AppError::input("--to: the SQLite file is missing"));
    }
    Ok(StateLocation::Sqlite(job_dir.join(file)))
}

/// Copies the job's state into the store at `to`, which must be empty. Refused while a pass
/// holds a lease (its rows would be copied half-written), and into a store that holds any
/// state already (nothing is ever merged or overwritten).
pub fn copy(app: &App<'_>, to: &StateLocation) -> Result<StateCopyOutcome> {
    if *to == app.job.state {
        return Err(AppError::input(
            "--to names the job's own state: nothing to copy",
        ));
    }
    let from = app.open_state()?;
    let live = from.live_passes()?;
    if let Some(p) = live.first() {
        return Err(AppError::input(format!(
            "A pass is running ({}, the first by {} since {}): stop it, then copy the state",
            crate::text::counted(live.len(), "entry", "entries"),
            p.holder,
            p.since
        )));
    }
    let mut dest_job: Job = app.job.clone();
    dest_job.state = to.clone();
    // The job's state_password belongs to the job's own state; the copy's comes from the
    // environment (MAILFERRY_STATE_PASSWORD) or ~/.pgpass.
    dest_job.state_password = None;
    let mut into = app.backends.open_store(&dest_job)?;
    if !into.entries()?.is_empty()
        || !into.runs(RunKind::Migrate)?.is_empty()
        || !into.refreshes()?.is_empty()
    {
        return Err(AppError::input(format!(
            "{} already holds a job's state: state copy only copies into an empty one",
            describe(to)
        )));
    }
    copy_between(from.as_ref(), into.as_mut(), describe(to))
}

fn describe(to: &StateLocation) -> String {
    match to {
        StateLocation::Sqlite(p) => format!("sqlite://{}", p.display()),
        StateLocation::Postgres(url) => url.clone(),
    }
}

/// The copy itself, from one open store into another (empty) one.
pub fn copy_between(
    from: &dyn Store,
    into: &mut dyn Store,
    to: String,
) -> Result<StateCopyOutcome> {
    let mut out = StateCopyOutcome {
        to,
        ..StateCopyOutcome::default()
    };
    let entries = from.entries()?;
    into.upsert_entries(&entries)?;
    out.entries = entries.len();

    // Runs oldest first, so the copy's IDs keep their order; old ID → new ID.
    let mut runs = from.runs(RunKind::Migrate)?;
    runs.reverse();
    let mut run_of: HashMap<RunId, RunId> = HashMap::new();
    // The newest run that passed each entry: its failed count comes from that run.
    let mut last_run_of = HashMap::new();
    for info in &runs {
        let id = into.import_run(RunKind::Migrate, &info.started, info.finished.as_deref())?;
        run_of.insert(info.id, id);
        for line in from.run_entries(info.id)? {
            last_run_of.insert(line.entry_id.clone(), id);
            into.record_run_entry(id, &line)?;
            out.run_lines += 1;
        }
        for f in from.failures(info.id)? {
            into.record_failure(id, &f)?;
            out.failures += 1;
        }
    }
    out.runs = runs.len();

    for e in &entries {
        let rows = from.ledger_all(&e.id)?;
        if !rows.is_empty() {
            // Intents first (their target UIDs are not known), then every copied row marked
            // copied with its target UID: the ledger as it was, row for row.
            into.insert_pending(&e.id, &rows)?;
            let copied: Vec<_> = rows
                .iter()
                .filter(|r| r.state == LedgerState::Copied)
                .map(|r| (r, r.target_uid))
                .collect();
            into.complete(&e.id, &copied, &[])?;
            into.mark_gone(&e.id, &from.ledger_gone(&e.id)?)?;
            out.ledger_rows += rows.len();
        }
        for (folder, c) in from.checkpoints(&e.id)? {
            into.set_checkpoint(&e.id, &folder, &c)?;
            out.checkpoints += 1;
        }
        // Late copies still to be removed from the target by the entry's next pass.
        into.record_orphans(&e.id, &from.orphans(&e.id)?)?;
        if let Some(last_pass) = &e.last_pass {
            // The entry's state, last pass and error; its copied and failed counts are
            // counted again from the ledger and from its last run's failures.
            let run = last_run_of.get(&e.id).copied().unwrap_or(RunId(0));
            into.set_entry_result(run, &e.id, e.state, last_pass, e.last_error.as_deref())?;
        }
    }

    let mut refreshes = from.refreshes()?;
    refreshes.reverse();
    for info in &refreshes {
        if let Some(record) = from.refresh_record(info.id)? {
            into.record_refresh(&record)?;
            out.refreshes += 1;
        }
    }
    if let Some(hash) = from.meta(MetaKey::JobFileSha256)? {
        into.set_meta(MetaKey::JobFileSha256, &hash)?;
    }
    // The queue, oldest first, so the workers on the copy take what was left in order; an
    // entry whose passes failed keeps its failures in a row and what is left of its backoff
    // (deferred once per failure, the last time for the wait still to run).
    let queued = from.queued()?;
    let ids: Vec<_> = queued.iter().map(|q| q.entry.clone()).collect();
    into.enqueue(&ids)?;
    for q in &queued {
        for _ in 0..q.failures {
            into.defer(&q.entry, q.wait)?;
        }
    }
    out.queued = queued.len();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Checkpoint, Entry, EntryId, EntryState, Failure, Fingerprint, Flags, LedgerRow, MailboxId,
        Origin, RefreshLine, RefreshRecord, RefreshResult, RunEntry, Side,
    };
    use crate::testing::{MemoryStore, uid, validity};
    use std::time::Duration;

    fn row(uid_n: u32, copied: Option<u32>) -> LedgerRow {
        LedgerRow {
            source_folder: "INBOX".into(),
            uid_validity: validity(7),
            uid: uid(uid_n),
            target_folder: "INBOX".into(),
            target_uid: None,
            target_uidnext: Some(50),
            fingerprint: Fingerprint::new(format!("fp{uid_n}")),
            size: 10,
            flags: Flags::from_server(["\\Seen"]),
            state: if copied.is_some() {
                LedgerState::Copied
            } else {
                LedgerState::Pending
            },
        }
        .with_target(copied)
    }

    trait WithTarget {
        fn with_target(self, t: Option<u32>) -> Self;
    }
    impl WithTarget for LedgerRow {
        fn with_target(mut self, t: Option<u32>) -> Self {
            if let Some(t) = t {
                self.target_uid = Some(uid(t));
                self.target_uidnext = None;
            }
            self
        }
    }

    /// A state as passes leave it: two runs, a failure, copied rows (one marked gone) and a
    /// pending row, a checkpoint, a refresh.
    fn filled() -> MemoryStore {
        let mut s = MemoryStore::new();
        let mut a = Entry::new("a".into(), "a@old".into(), Origin::Csv);
        a.source_addresses = vec!["a@old".into()];
        let b = Entry::new("b".into(), "b@old".into(), Origin::Auto);
        s.upsert_entries(&[a, b]).unwrap();
        let a_id = EntryId::from("a");
        let r1 = s.start_run(RunKind::Migrate).unwrap();
        s.insert_pending(&a_id, &[row(1, None), row(2, None), row(3, None)])
            .unwrap();
        s.complete(
            &a_id,
            &[
                (&row(1, None), Some(uid(11))),
                (&row(2, None), Some(uid(12))),
            ],
            &[],
        )
        .unwrap();
        // The second one's source message was seen expunged.
        s.mark_gone(&a_id, &[row(2, None)]).unwrap();
        s.set_checkpoint(
            &a_id,
            "INBOX",
            &Checkpoint {
                uid_validity: 7,
                uid_next: 4,
                messages: 3,
                highest_modseq: None,
                filter: "f".into(),
            },
        )
        .unwrap();
        let mut line = RunEntry::new(a_id.clone());
        line.state = EntryState::Partial;
        line.copied = 2;
        line.failed = 1;
        s.record_run_entry(r1, &line).unwrap();
        s.record_failure(
            r1,
            &Failure {
                entry_id: a_id.clone(),
                folder: "INBOX".into(),
                uid: Some(uid(3)),
                size: Some(10),
                message_id: Some("<m3@x>".into()),
                reason: "NO [LIMIT] too big".into(),
            },
        )
        .unwrap();
        s.set_entry_result(r1, &a_id, EntryState::Partial, "2026-03-01T10:00:00Z", None)
            .unwrap();
        s.record_orphans(
            &a_id,
            &[crate::ports::store::Orphan {
                target_folder: "INBOX".into(),
                uid_validity: crate::testing::validity(9),
                uid: uid(12),
                fingerprint: crate::model::Fingerprint::new("fp-late"),
            }],
        )
        .unwrap();
        s.finish_run(r1).unwrap();
        let r2 = s.start_run(RunKind::Migrate).unwrap();
        s.finish_run(r2).unwrap();
        s.record_refresh(&RefreshRecord {
            started: "2026-03-02T10:00:00Z".into(),
            source_available: true,
            source_reason: None,
            target_available: false,
            target_reason: Some("no directory".into()),
            lines: vec![RefreshLine {
                side: Side::Source,
                result: RefreshResult::NotChanged,
                entry: a_id.clone(),
                id: Some(MailboxId::new("id-a")),
                before: vec!["a@old".into()],
                after: vec!["a@old".into()],
            }],
        })
        .unwrap();
        s.set_meta(MetaKey::JobFileSha256, "abc").unwrap();
        s.enqueue(&["b".into(), "a".into()]).unwrap();
        // Two passes of `a` failed in a row; the next may start in an hour.
        s.defer(&"a".into(), Duration::from_secs(60)).unwrap();
        s.defer(&"a".into(), Duration::from_secs(3600)).unwrap();
        s
    }

    #[test]
    fn the_copy_holds_everything_the_store_held() {
        let from = filled();
        let mut into = MemoryStore::new();
        let out = copy_between(&from, &mut into, "x".into()).unwrap();
        assert_eq!(
            (
                out.entries,
                out.ledger_rows,
                out.checkpoints,
                out.runs,
                out.run_lines
            ),
            (2, 3, 1, 2, 1)
        );
        assert_eq!((out.failures, out.refreshes, out.queued), (1, 1, 2));
        let queue = |s: &MemoryStore| {
            s.queued()
                .unwrap()
                .into_iter()
                .map(|q| q.entry)
                .collect::<Vec<_>>()
        };
        assert_eq!(queue(&into), queue(&from), "the queue in its order");
        let backoff = |s: &MemoryStore| {
            s.queued()
                .unwrap()
                .into_iter()
                .map(|q| (q.failures, q.wait > Duration::from_secs(3500)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            backoff(&into),
            [(0, false), (2, true)],
            "failures and backoff"
        );
        assert_eq!(into.entries().unwrap(), from.entries().unwrap());
        for id in ["a", "b"] {
            let id = EntryId::from(id);
            assert_eq!(into.ledger_all(&id).unwrap(), from.ledger_all(&id).unwrap());
            assert_eq!(
                into.checkpoints(&id).unwrap(),
                from.checkpoints(&id).unwrap()
            );
            assert_eq!(into.orphans(&id).unwrap(), from.orphans(&id).unwrap());
            assert_eq!(
                into.ledger_gone(&id).unwrap(),
                from.ledger_gone(&id).unwrap()
            );
        }
        let runs = |s: &MemoryStore| {
            s.runs(RunKind::Migrate)
                .unwrap()
                .into_iter()
                .map(|r| (r.started, r.finished))
                .collect::<Vec<_>>()
        };
        assert_eq!(runs(&into), runs(&from));
        let last = |s: &MemoryStore| s.last_run(RunKind::Migrate).unwrap().unwrap().id;
        let first = |s: &MemoryStore| s.runs(RunKind::Migrate).unwrap().last().unwrap().id;
        assert_eq!(
            into.run_entries(first(&into)).unwrap(),
            from.run_entries(first(&from)).unwrap()
        );
        assert_eq!(
            into.failures(first(&into)).unwrap(),
            from.failures(first(&from)).unwrap()
        );
        assert!(into.run_entries(last(&into)).unwrap().is_empty());
        assert_eq!(into.last_refresh().unwrap(), from.last_refresh().unwrap());
        assert_eq!(
            into.meta(MetaKey::JobFileSha256).unwrap().as_deref(),
            Some("abc")
        );
    }
}

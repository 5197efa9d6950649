//! Runs and what they recorded — run lines, failures, refresh results — plus folder
//! checkpoints, meta values and leases.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Db, json_list, opt_nz_column, parse_list, parse_text};
use mailferry_core::model::{
    Checkpoint, EntryId, EntryState, Failure, KeywordsDropped, MailboxId, RefreshLine,
    RefreshRecord, RefreshResult, RunEntry, RunId, RunKind, Side, Uid, now,
};
use mailferry_core::ports::store::{
    Lease, LeaseHolder, LivePass, MetaKey, PassProgress, Refusal, Result, RunInfo, ServerUse,
    StoreError, check_room,
};

pub fn start(conn: &Connection, kind: RunKind) -> Result<RunId> {
    conn.execute(
        "INSERT INTO runs (started, kind) VALUES (?1, ?2)",
        params![now(), kind.as_str()],
    )
    .db()?;
    Ok(RunId(conn.last_insert_rowid()))
}

pub fn import(
    conn: &Connection,
    kind: RunKind,
    started: &str,
    finished: Option<&str>,
) -> Result<RunId> {
    conn.execute(
        "INSERT INTO runs (started, finished, kind) VALUES (?1, ?2, ?3)",
        params![started, finished, kind.as_str()],
    )
    .db()?;
    Ok(RunId(conn.last_insert_rowid()))
}

pub fn checkpoints(conn: &Connection, entry: &EntryId) -> Result<Vec<(String, Checkpoint)>> {
    let mut stmt = conn
        .prepare(
            "SELECT source_folder, uid_validity, uid_next, messages, highest_modseq, filter
             FROM folder_checkpoints WHERE entry_id = ?1 ORDER BY source_folder",
        )
        .db()?;
    stmt.query_map([entry.as_str()], |r| {
        Ok((
            r.get(0)?,
            Checkpoint {
                uid_validity: r.get(1)?,
                uid_next: r.get(2)?,
                messages: r.get(3)?,
                highest_modseq: r.get(4)?,
                filter: r.get(5)?,
            },
        ))
    })
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

pub fn finish(conn: &Connection, run: RunId) -> Result<()> {
    conn.execute(
        "UPDATE runs SET finished = ?2 WHERE id = ?1",
        params![run.0, now()],
    )
    .db()?;
    Ok(())
}

/// An entry's line of a run; an entry passed twice in one run keeps its last line.
pub fn record_entry(conn: &Connection, run: RunId, r: &RunEntry) -> Result<()> {
    conn.execute(
        "INSERT INTO run_entries (run_id, entry_id, state, copied, skipped, failed, bytes,
             moved, flags_updated, seconds, error, keywords_dropped, throttled_seconds)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (run_id, entry_id) DO UPDATE SET state = excluded.state,
             copied = excluded.copied, skipped = excluded.skipped, failed = excluded.failed,
             bytes = excluded.bytes, moved = excluded.moved,
             flags_updated = excluded.flags_updated, seconds = excluded.seconds,
             error = excluded.error, keywords_dropped = excluded.keywords_dropped,
             throttled_seconds = excluded.throttled_seconds",
        params![
            run.0,
            r.entry_id.as_str(),
            r.state.as_str(),
            r.copied,
            r.skipped,
            r.failed,
            r.bytes,
            r.moved,
            r.flags_updated,
            r.seconds,
            r.error,
            serde_json::to_string(&r.keywords_dropped).unwrap_or_else(|_| "[]".into()),
            r.throttled_seconds
        ],
    )
    .db()?;
    Ok(())
}

pub fn record_failure(conn: &Connection, run: RunId, f: &Failure) -> Result<()> {
    conn.execute(
        "INSERT INTO failures (run_id, entry_id, folder, uid, size, message_id, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            run.0,
            f.entry_id.as_str(),
            f.folder,
            f.uid.map(Uid::get),
            f.size,
            f.message_id,
            f.reason
        ],
    )
    .db()?;
    Ok(())
}

pub fn last(conn: &Connection, kind: RunKind) -> Result<Option<RunInfo>> {
    conn.query_row(
        "SELECT id, started, finished FROM runs WHERE kind = ?1 ORDER BY id DESC LIMIT 1",
        [kind.as_str()],
        |r| {
            Ok(RunInfo {
                id: RunId(r.get(0)?),
                started: r.get(1)?,
                finished: r.get(2)?,
            })
        },
    )
    .optional()
    .db()
}

pub fn all(conn: &Connection, kind: RunKind) -> Result<Vec<RunInfo>> {
    let mut stmt = conn
        .prepare("SELECT id, started, finished FROM runs WHERE kind = ?1 ORDER BY id DESC")
        .db()?;
    stmt.query_map([kind.as_str()], |r| {
        Ok(RunInfo {
            id: RunId(r.get(0)?),
            started: r.get(1)?,
            finished: r.get(2)?,
        })
    })
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

pub fn entries(conn: &Connection, run: RunId) -> Result<Vec<RunEntry>> {
    let mut stmt = conn
        .prepare(
            "SELECT entry_id, state, copied, skipped, failed, bytes, moved, flags_updated,
                    seconds, error, keywords_dropped, throttled_seconds
             FROM run_entries WHERE run_id = ?1 ORDER BY entry_id",
        )
        .db()?;
    let rows = stmt
        .query_map([run.0], |r| {
            Ok(RunEntry {
                entry_id: EntryId::new(r.get::<_, String>(0)?),
                state: parse_text("state", &r.get::<_, String>(1)?, EntryState::parse)?,
                copied: r.get(2)?,
                skipped: r.get(3)?,
                failed: r.get(4)?,
                bytes: r.get(5)?,
                moved: r.get(6)?,
                flags_updated: r.get(7)?,
                seconds: r.get(8)?,
                error: r.get(9)?,
                keywords_dropped: keywords_column(r, 10)?,
                throttled_seconds: r.get(11)?,
            })
        })
        .db()?;
    rows.collect::<rusqlite::Result<_>>().db()
}

/// A run line's stored keywords list; text that does not read as one is a database another
/// program wrote, reported as such.
fn keywords_column(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Vec<KeywordsDropped>> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("keywords_dropped {text:?} in the state database: {e}").into(),
        )
    })
}

pub fn failures(conn: &Connection, run: RunId) -> Result<Vec<Failure>> {
    let mut stmt = conn
        .prepare(
            "SELECT entry_id, folder, uid, size, message_id, reason FROM failures
             WHERE run_id = ?1 ORDER BY entry_id, folder, uid",
        )
        .db()?;
    let rows = stmt
        .query_map([run.0], |r| {
            Ok(Failure {
                entry_id: EntryId::new(r.get::<_, String>(0)?),
                folder: r.get(1)?,
                uid: opt_nz_column(r, 2, Uid::new)?,
                size: r.get(3)?,
                message_id: r.get(4)?,
                reason: r.get(5)?,
            })
        })
        .db()?;
    rows.collect::<rusqlite::Result<_>>().db()
}

// ---------------------------------------------------------------- refresh

/// Records one refresh run and its results; returns the run's ID.
pub fn record_refresh(conn: &mut Connection, r: &RefreshRecord) -> Result<RunId> {
    let tx = conn.transaction().db()?;
    tx.execute(
        "INSERT INTO refresh_runs (started, source_available, source_reason, target_available,
             target_reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            r.started,
            r.source_available,
            r.source_reason,
            r.target_available,
            r.target_reason
        ],
    )
    .db()?;
    let run = tx.last_insert_rowid();
    {
        let mut stmt = tx
            .prepare(
                "INSERT INTO refresh_results (run_id, side, result, entry_id, mailbox_id, before,
                     after) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .db()?;
        for l in &r.lines {
            stmt.execute(params![
                run,
                l.side.as_str(),
                l.result.as_str(),
                l.entry.as_str(),
                l.id.as_ref().map(|i| i.as_str()),
                json_list(&l.before),
                json_list(&l.after)
            ])
            .db()?;
        }
    }
    tx.commit().db()?;
    Ok(RunId(run))
}

/// The latest refresh run, if any.
pub fn last_refresh(conn: &Connection) -> Result<Option<RefreshRecord>> {
    let last: Option<i64> = conn
        .query_row("SELECT MAX(id) FROM refresh_runs", [], |r| r.get(0))
        .db()?;
    match last {
        Some(run) => refresh(conn, RunId(run)),
        None => Ok(None),
    }
}

pub fn refreshes(conn: &Connection) -> Result<Vec<RunInfo>> {
    let mut stmt = conn
        .prepare("SELECT id, started FROM refresh_runs ORDER BY id DESC")
        .db()?;
    stmt.query_map([], |r| {
        Ok(RunInfo {
            id: RunId(r.get(0)?),
            started: r.get(1)?,
            finished: None,
        })
    })
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

pub fn refresh(conn: &Connection, run: RunId) -> Result<Option<RefreshRecord>> {
    let Some((started, sa, sr, ta, tr)) = conn
        .query_row(
            "SELECT started, source_available, source_reason, target_available, target_reason
             FROM refresh_runs WHERE id = ?1",
            [run.0],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()
        .db()?
    else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare(
            "SELECT side, result, entry_id, mailbox_id, before, after FROM refresh_results
             WHERE run_id = ?1 ORDER BY rowid",
        )
        .db()?;
    let lines = stmt
        .query_map([run.0], |r| {
            Ok(RefreshLine {
                side: parse_text("side", &r.get::<_, String>(0)?, Side::parse)?,
                result: parse_text("result", &r.get::<_, String>(1)?, RefreshResult::parse)?,
                entry: EntryId::new(r.get::<_, String>(2)?),
                id: r.get::<_, Option<String>>(3)?.map(MailboxId::new),
                before: parse_list(&r.get::<_, String>(4)?),
                after: parse_list(&r.get::<_, String>(5)?),
            })
        })
        .db()?
        .collect::<rusqlite::Result<_>>()
        .db()?;
    Ok(Some(RefreshRecord {
        started,
        source_available: sa,
        source_reason: sr,
        target_available: ta,
        target_reason: tr,
        lines,
    }))
}

// ---------------------------------------------------------------- checkpoints and meta

pub fn checkpoint(conn: &Connection, entry: &EntryId, folder: &str) -> Result<Option<Checkpoint>> {
    conn.query_row(
        "SELECT uid_validity, uid_next, messages, highest_modseq, filter
         FROM folder_checkpoints WHERE entry_id = ?1 AND source_folder = ?2",
        params![entry.as_str(), folder],
        |r| {
            Ok(Checkpoint {
                uid_validity: r.get(0)?,
                uid_next: r.get(1)?,
                messages: r.get(2)?,
                highest_modseq: r.get(3)?,
                filter: r.get(4)?,
            })
        },
    )
    .optional()
    .db()
}

pub fn set_checkpoint(
    conn: &Connection,
    entry: &EntryId,
    folder: &str,
    c: &Checkpoint,
) -> Result<()> {
    conn.execute(
        "INSERT INTO folder_checkpoints
             (entry_id, source_folder, uid_validity, uid_next, messages, highest_modseq, filter)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (entry_id, source_folder) DO UPDATE SET uid_validity = excluded.uid_validity,
             uid_next = excluded.uid_next, messages = excluded.messages,
             highest_modseq = excluded.highest_modseq, filter = excluded.filter",
        params![
            entry.as_str(),
            folder,
            c.uid_validity,
            c.uid_next,
            c.messages,
            c.highest_modseq,
            c.filter
        ],
    )
    .db()?;
    Ok(())
}

pub fn meta(conn: &Connection, key: MetaKey) -> Result<Option<String>> {
    conn.query_row(
        "SELECT value FROM meta WHERE key = ?1",
        [key.as_str()],
        |r| r.get(0),
    )
    .optional()
    .db()
}

pub fn set_meta(conn: &Connection, key: MetaKey, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key.as_str(), value],
    )
    .db()?;
    Ok(())
}

// ---------------------------------------------------------------- leases

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Claims an entry (or, with `from_epoch`, takes over the claim of that epoch), recording
/// the servers its pass uses. One `BEGIN IMMEDIATE` transaction, so two processes cannot both
/// see the entry free, nor both see room under a server's cap. A released claim keeps its row
/// (expired), so epochs only grow.
pub fn lease(
    conn: &mut Connection,
    entry: &EntryId,
    holder: &str,
    ttl: Duration,
    from_epoch: Option<i64>,
    uses: &[ServerUse],
) -> Result<std::result::Result<Lease, Refusal>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .db()?;
    let current: Option<(String, i64, String, i64)> = tx
        .query_row(
            "SELECT holder, epoch, since, expires_ms FROM leases WHERE entry_id = ?1",
            [entry.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .db()?;
    let now_ms = now_ms();
    let epoch = match current {
        None => 1,
        Some((_, epoch, _, expires)) if expires <= now_ms || from_epoch == Some(epoch) => epoch + 1,
        Some((h, epoch, since, _)) => {
            return Ok(Err(Refusal::Held(LeaseHolder {
                holder: h,
                since,
                epoch,
            })));
        }
    };
    let full = check_room(uses, |server, mailbox| {
        tx.query_row(
            "SELECT COALESCE(SUM(u.connections), 0) FROM lease_uses u
             JOIN leases l ON l.entry_id = u.entry_id
             WHERE u.server = ?1 AND (?2 IS NULL OR u.mailbox = ?2) AND u.entry_id <> ?3
                 AND l.expires_ms > ?4",
            params![server, mailbox, entry.as_str(), now_ms],
            |r| r.get(0),
        )
        .db()
    })?;
    if let Some(full) = full {
        return Ok(Err(Refusal::Full(full)));
    }
    tx.execute(
        "INSERT INTO leases (entry_id, holder, epoch, since, expires_ms, renewed_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (entry_id) DO UPDATE SET holder = excluded.holder, epoch = excluded.epoch,
             since = excluded.since, expires_ms = excluded.expires_ms,
             renewed_ms = excluded.renewed_ms, planned_messages = 0, planned_bytes = 0,
             copied = 0, bytes = 0",
        params![
            entry.as_str(),
            holder,
            epoch,
            now(),
            now_ms + ttl_ms(ttl),
            now_ms
        ],
    )
    .db()?;
    tx.execute(
        "DELETE FROM lease_uses WHERE entry_id = ?1",
        [entry.as_str()],
    )
    .db()?;
    for u in uses {
        tx.execute(
            "INSERT INTO lease_uses (entry_id, server, mailbox, connections)
             VALUES (?1, ?2, ?3, ?4)",
            params![entry.as_str(), u.server, u.mailbox, u.connections],
        )
        .db()?;
    }
    tx.commit().db()?;
    Ok(Ok(Lease {
        entry: entry.clone(),
        holder: holder.to_string(),
        epoch,
    }))
}

pub fn renew(conn: &Connection, lease: &Lease, ttl: Duration) -> Result<()> {
    let now_ms = now_ms();
    let n = conn
        .execute(
            "UPDATE leases SET expires_ms = ?4, renewed_ms = ?5
             WHERE entry_id = ?1 AND holder = ?2 AND epoch = ?3",
            params![
                lease.entry.as_str(),
                lease.holder,
                lease.epoch,
                now_ms + ttl_ms(ttl),
                now_ms
            ],
        )
        .db()?;
    if n == 0 {
        return Err(StoreError::lease_lost(&lease.entry));
    }
    Ok(())
}

pub fn release(conn: &Connection, lease: &Lease) -> Result<()> {
    conn.execute(
        "UPDATE leases SET expires_ms = 0 WHERE entry_id = ?1 AND holder = ?2 AND epoch = ?3",
        params![lease.entry.as_str(), lease.holder, lease.epoch],
    )
    .db()?;
    Ok(())
}

pub fn report_progress(conn: &Connection, lease: &Lease, p: &PassProgress) -> Result<()> {
    let n = conn
        .execute(
            "UPDATE leases SET planned_messages = ?4, planned_bytes = ?5, copied = ?6, bytes = ?7
             WHERE entry_id = ?1 AND holder = ?2 AND epoch = ?3",
            params![
                lease.entry.as_str(),
                lease.holder,
                lease.epoch,
                p.planned_messages,
                p.planned_bytes,
                p.copied,
                p.bytes
            ],
        )
        .db()?;
    if n == 0 {
        return Err(StoreError::lease_lost(&lease.entry));
    }
    Ok(())
}

pub fn live_passes(conn: &Connection) -> Result<Vec<LivePass>> {
    let mut stmt = conn
        .prepare(
            "SELECT entry_id, holder, since, planned_messages, planned_bytes, copied, bytes,
                    renewed_ms
             FROM leases WHERE expires_ms > ?1 ORDER BY entry_id",
        )
        .db()?;
    let now_ms = now_ms();
    let rows = stmt
        .query_map([now_ms], |r| {
            Ok(LivePass {
                entry: EntryId::new(r.get::<_, String>(0)?),
                holder: r.get(1)?,
                since: r.get(2)?,
                heartbeat_age: age(now_ms, r.get(7)?),
                progress: PassProgress {
                    planned_messages: r.get(3)?,
                    planned_bytes: r.get(4)?,
                    copied: r.get(5)?,
                    bytes: r.get(6)?,
                },
            })
        })
        .db()?;
    rows.collect::<rusqlite::Result<_>>().db()
}

/// How long ago a time in milliseconds was (never negative: another process's clock may be a
/// little ahead).
pub(crate) fn age(now_ms: i64, then_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms.saturating_sub(then_ms)).unwrap_or(0))
}

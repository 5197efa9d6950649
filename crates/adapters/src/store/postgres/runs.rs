//! Runs and what they recorded — run lines, failures, refresh results — plus folder
//! checkpoints, meta values and leases.
//!
//! Times the store writes itself (a run's start and end, a lease's `since`) are the
//! database's clock, in the model's spelling (`2026-01-02T03:04:05Z`), so processes on
//! machines whose clocks disagree still write one consistent history.

use std::time::Duration;

use postgres::{Client, GenericClient};

use super::conn::prepared;
use super::{Column, Db, json_list, parse_list, to_i64};
use mailferry_core::model::{
    Checkpoint, EntryId, EntryState, Failure, KeywordsDropped, MailboxId, RefreshLine,
    RefreshRecord, RefreshResult, RunEntry, RunId, RunKind, Side, Uid,
};
use mailferry_core::ports::store::{
    Lease, LeaseHolder, LivePass, MetaKey, PassProgress, Refusal, Result, RunInfo, ServerUse,
    StoreError, check_room,
};

/// The advisory lock key that serialises the claims of passes on capped servers ("mfcaps" in
/// ASCII), so two processes cannot both count the same room under a server's cap.
const CAPS_LOCK: i64 = 0x6d66_6361_7073;

/// The database's time now, as the model spells times (`mailferry_core::model::now`).
pub(crate) const NOW_TEXT: &str =
    r#"to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"#;

pub fn start(client: &mut Client, kind: RunKind) -> Result<RunId> {
    let row = client
        .query_one(
            &format!("INSERT INTO runs (started, kind) VALUES ({NOW_TEXT}, $1) RETURNING id"),
            &[&kind.as_str()],
        )
        .db()?;
    Ok(RunId(row.int(0)?))
}

pub fn import(
    client: &mut Client,
    kind: RunKind,
    started: &str,
    finished: Option<&str>,
) -> Result<RunId> {
    let row = client
        .query_one(
            "INSERT INTO runs (started, finished, kind) VALUES ($1, $2, $3) RETURNING id",
            &[&started, &finished, &kind.as_str()],
        )
        .db()?;
    Ok(RunId(row.int(0)?))
}

pub fn checkpoints(client: &mut Client, entry: &EntryId) -> Result<Vec<(String, Checkpoint)>> {
    client
        .query(
            "SELECT source_folder, uid_validity, uid_next, messages, highest_modseq, filter
             FROM folder_checkpoints WHERE entry_id = $1 ORDER BY source_folder COLLATE \"C\"",
            &[&entry.as_str()],
        )
        .db()?
        .iter()
        .map(|r| {
            Ok((
                r.text(0)?,
                Checkpoint {
                    uid_validity: r.u32(1)?,
                    uid_next: r.u32(2)?,
                    messages: r.u32(3)?,
                    highest_modseq: r.opt_u64(4)?,
                    filter: r.text(5)?,
                },
            ))
        })
        .collect()
}

pub fn finish(client: &mut Client, run: RunId) -> Result<()> {
    client
        .execute(
            &format!("UPDATE runs SET finished = {NOW_TEXT} WHERE id = $1"),
            &[&run.0],
        )
        .db()?;
    Ok(())
}

/// An entry's line of a run; an entry passed twice in one run keeps its last line.
pub fn record_entry(client: &mut impl GenericClient, run: RunId, r: &RunEntry) -> Result<()> {
    client
        .execute(
            "INSERT INTO run_entries (run_id, entry_id, state, copied, skipped, failed, bytes,
                 moved, flags_updated, seconds, error, keywords_dropped, throttled_seconds)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (run_id, entry_id) DO UPDATE SET state = excluded.state,
                 copied = excluded.copied, skipped = excluded.skipped, failed = excluded.failed,
                 bytes = excluded.bytes, moved = excluded.moved,
                 flags_updated = excluded.flags_updated, seconds = excluded.seconds,
                 error = excluded.error, keywords_dropped = excluded.keywords_dropped,
                 throttled_seconds = excluded.throttled_seconds",
            &[
                &run.0,
                &r.entry_id.as_str(),
                &r.state.as_str(),
                &to_i64(r.copied, "copied count")?,
                &to_i64(r.skipped, "skipped count")?,
                &to_i64(r.failed, "failed count")?,
                &to_i64(r.bytes, "byte count")?,
                &to_i64(r.moved, "moved count")?,
                &to_i64(r.flags_updated, "flags-updated count")?,
                &r.seconds,
                &r.error,
                &keywords_text(&r.keywords_dropped)?,
                &r.throttled_seconds,
            ],
        )
        .db()?;
    Ok(())
}

pub fn record_failure(client: &mut Client, run: RunId, f: &Failure) -> Result<()> {
    let size = f.size.map(|s| to_i64(s, "message size")).transpose()?;
    client
        .execute(
            "INSERT INTO failures (run_id, entry_id, folder, uid, size, message_id, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &run.0,
                &f.entry_id.as_str(),
                &f.folder,
                &f.uid.map(|u| i64::from(u.get())),
                &size,
                &f.message_id,
                &f.reason,
            ],
        )
        .db()?;
    Ok(())
}

pub fn last(client: &mut Client, kind: RunKind) -> Result<Option<RunInfo>> {
    client
        .query_opt(
            "SELECT id, started, finished FROM runs WHERE kind = $1 ORDER BY id DESC LIMIT 1",
            &[&kind.as_str()],
        )
        .db()?
        .map(|r| {
            Ok(RunInfo {
                id: RunId(r.int(0)?),
                started: r.text(1)?,
                finished: r.opt_text(2)?,
            })
        })
        .transpose()
}

pub fn all(client: &mut Client, kind: RunKind) -> Result<Vec<RunInfo>> {
    client
        .query(
            "SELECT id, started, finished FROM runs WHERE kind = $1 ORDER BY id DESC",
            &[&kind.as_str()],
        )
        .db()?
        .iter()
        .map(|r| {
            Ok(RunInfo {
                id: RunId(r.int(0)?),
                started: r.text(1)?,
                finished: r.opt_text(2)?,
            })
        })
        .collect()
}

pub fn entries(client: &mut Client, run: RunId) -> Result<Vec<RunEntry>> {
    client
        .query(
            "SELECT entry_id, state, copied, skipped, failed, bytes, moved, flags_updated,
                    seconds, error, keywords_dropped, throttled_seconds
             FROM run_entries WHERE run_id = $1 ORDER BY entry_id",
            &[&run.0],
        )
        .db()?
        .iter()
        .map(|r| {
            Ok(RunEntry {
                entry_id: EntryId::new(r.text(0)?),
                state: r.parsed(1, EntryState::parse)?,
                copied: r.u64(2)?,
                skipped: r.u64(3)?,
                failed: r.u64(4)?,
                bytes: r.u64(5)?,
                moved: r.u64(6)?,
                flags_updated: r.u64(7)?,
                seconds: r.float(8)?,
                error: r.opt_text(9)?,
                keywords_dropped: parse_keywords(&r.text(10)?)?,
                throttled_seconds: r.float(11)?,
            })
        })
        .collect()
}

/// A run line's keywords list as stored: JSON text; a count too big for `BIGINT` is refused
/// as the other counts are.
fn keywords_text(list: &[KeywordsDropped]) -> Result<String> {
    for k in list {
        to_i64(k.count, "keywords-dropped count")?;
    }
    Ok(serde_json::to_string(list).unwrap_or_else(|_| "[]".into()))
}

/// A stored keywords list; text that does not read as one is a database another program
/// wrote, reported as such.
fn parse_keywords(text: &str) -> Result<Vec<KeywordsDropped>> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::new(
            mailferry_core::ports::store::StoreErrorKind::Other,
            format!("keywords_dropped {text:?} in the state database: {e}"),
        )
    })
}

/// A run's failures by entry, folder and UID, a failure without a UID first (as SQLite
/// orders NULL).
pub fn failures(client: &mut Client, run: RunId) -> Result<Vec<Failure>> {
    client
        .query(
            "SELECT entry_id, folder, uid, size, message_id, reason FROM failures
             WHERE run_id = $1 ORDER BY entry_id, folder, uid NULLS FIRST",
            &[&run.0],
        )
        .db()?
        .iter()
        .map(|r| {
            Ok(Failure {
                entry_id: EntryId::new(r.text(0)?),
                folder: r.text(1)?,
                uid: r.opt_nz(2, Uid::new)?,
                size: r.opt_u64(3)?,
                message_id: r.opt_text(4)?,
                reason: r.text(5)?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- refresh

/// Records one refresh run and its results; returns the run's ID.
pub fn record_refresh(client: &mut Client, r: &RefreshRecord) -> Result<RunId> {
    let tx = client;
    let run = tx
        .query_one(
            "INSERT INTO refresh_runs (started, source_available, source_reason,
                 target_available, target_reason) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[
                &r.started,
                &r.source_available,
                &r.source_reason,
                &r.target_available,
                &r.target_reason,
            ],
        )
        .db()?
        .int(0)?;
    let stmt = tx
        .prepare(
            "INSERT INTO refresh_results (run_id, line_no, side, result, entry_id, mailbox_id,
                 before, after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .db()?;
    for (line_no, l) in (0_i64..).zip(&r.lines) {
        let id = l.id.as_ref().map(|i| i.as_str());
        tx.execute(
            &stmt,
            &[
                &run,
                &line_no,
                &l.side.as_str(),
                &l.result.as_str(),
                &l.entry.as_str(),
                &id,
                &json_list(&l.before),
                &json_list(&l.after),
            ],
        )
        .db()?;
    }
    Ok(RunId(run))
}

/// The latest refresh run, if any, read in one transaction so its lines are its own.
pub fn last_refresh(client: &mut Client) -> Result<Option<RefreshRecord>> {
    let mut tx = client.transaction().db()?;
    let last: Option<i64> = tx
        .query_one("SELECT MAX(id) FROM refresh_runs", &[])
        .db()?
        .get(0);
    let record = match last {
        Some(run) => refresh_in(&mut tx, RunId(run))?,
        None => None,
    };
    tx.commit().db()?;
    Ok(record)
}

pub fn refreshes(client: &mut Client) -> Result<Vec<RunInfo>> {
    client
        .query("SELECT id, started FROM refresh_runs ORDER BY id DESC", &[])
        .db()?
        .iter()
        .map(|r| {
            Ok(RunInfo {
                id: RunId(r.int(0)?),
                started: r.text(1)?,
                finished: None,
            })
        })
        .collect()
}

pub fn refresh(client: &mut Client, run: RunId) -> Result<Option<RefreshRecord>> {
    let mut tx = client.transaction().db()?;
    let record = refresh_in(&mut tx, run)?;
    tx.commit().db()?;
    Ok(record)
}

/// One refresh, read in one transaction so that its head and lines agree.
fn refresh_in(tx: &mut postgres::Transaction<'_>, run: RunId) -> Result<Option<RefreshRecord>> {
    let Some(head) = tx
        .query_opt(
            "SELECT id, started, source_available, source_reason, target_available,
                    target_reason FROM refresh_runs WHERE id = $1",
            &[&run.0],
        )
        .db()?
    else {
        return Ok(None);
    };
    let lines = tx
        .query(
            "SELECT side, result, entry_id, mailbox_id, before, after FROM refresh_results
             WHERE run_id = $1 ORDER BY line_no",
            &[&run.0],
        )
        .db()?
        .iter()
        .map(|r| {
            Ok(RefreshLine {
                side: r.parsed(0, Side::parse)?,
                result: r.parsed(1, RefreshResult::parse)?,
                entry: EntryId::new(r.text(2)?),
                id: r.opt_text(3)?.map(MailboxId::new),
                before: parse_list(&r.text(4)?),
                after: parse_list(&r.text(5)?),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Some(RefreshRecord {
        started: head.text(1)?,
        source_available: head.flag(2)?,
        source_reason: head.opt_text(3)?,
        target_available: head.flag(4)?,
        target_reason: head.opt_text(5)?,
        lines,
    }))
}

// ---------------------------------------------------------------- checkpoints and meta

pub fn checkpoint(
    client: &mut Client,
    entry: &EntryId,
    folder: &str,
) -> Result<Option<Checkpoint>> {
    let st = prepared(
        client,
        "SELECT uid_validity, uid_next, messages, highest_modseq, filter
         FROM folder_checkpoints WHERE entry_id = $1 AND source_folder = $2",
    )?;
    client
        .query_opt(&st, &[&entry.as_str(), &folder])
        .db()?
        .map(|r| {
            Ok(Checkpoint {
                uid_validity: r.u32(0)?,
                uid_next: r.u32(1)?,
                messages: r.u32(2)?,
                highest_modseq: r.opt_u64(3)?,
                filter: r.text(4)?,
            })
        })
        .transpose()
}

pub fn set_checkpoint(
    client: &mut impl GenericClient,
    entry: &EntryId,
    folder: &str,
    c: &Checkpoint,
) -> Result<()> {
    // RFC 7162 mod-sequences are at most 2^63 - 1, so a real server's fits a BIGINT.
    let modseq = c
        .highest_modseq
        .map(|m| to_i64(m, "HIGHESTMODSEQ"))
        .transpose()?;
    let st = prepared(
        client,
        "INSERT INTO folder_checkpoints
             (entry_id, source_folder, uid_validity, uid_next, messages, highest_modseq, filter)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (entry_id, source_folder) DO UPDATE SET
             uid_validity = excluded.uid_validity, uid_next = excluded.uid_next,
             messages = excluded.messages, highest_modseq = excluded.highest_modseq,
             filter = excluded.filter",
    )?;
    client
        .execute(
            &st,
            &[
                &entry.as_str(),
                &folder,
                &i64::from(c.uid_validity),
                &i64::from(c.uid_next),
                &i64::from(c.messages),
                &modseq,
                &c.filter,
            ],
        )
        .db()?;
    Ok(())
}

pub fn meta(client: &mut Client, key: MetaKey) -> Result<Option<String>> {
    client
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&key.as_str()])
        .db()?
        .map(|r| r.text(0))
        .transpose()
}

pub fn set_meta(client: &mut Client, key: MetaKey, value: &str) -> Result<()> {
    client
        .execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key.as_str(), &value],
        )
        .db()?;
    Ok(())
}

// ---------------------------------------------------------------- leases

/// A claim's length in milliseconds, for `clock_timestamp() + $n * interval '1 ms'`.
/// Capped at ten years, which no pass needs and no interval overflows.
fn ttl_ms(ttl: Duration) -> i64 {
    const CAP_MS: i64 = 10 * 366 * 24 * 3600 * 1000;
    i64::try_from(ttl.as_millis()).map_or(CAP_MS, |ms| ms.min(CAP_MS))
}

/// Claims an entry (or, with `from_epoch`, takes over the claim of that epoch), in one
/// transaction. The entry's row is made to exist first (`ON CONFLICT DO NOTHING`: a second
/// process doing the same waits for the first's insert to commit), then locked with
/// `FOR UPDATE`, so of two processes claiming at once the second decides only after the
/// first committed, and sees its claim. A released claim keeps its row (expired), so epochs
/// only grow.
pub fn lease(
    client: &mut Client,
    entry: &EntryId,
    holder: &str,
    ttl: Duration,
    from_epoch: Option<i64>,
    uses: &[ServerUse],
) -> Result<std::result::Result<Lease, Refusal>> {
    let tx = client;
    if !uses.is_empty() {
        // Taken before any row lock, and only here: no deadlock with renewals or fences.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CAPS_LOCK])
            .db()?;
    }
    tx.execute(
        "INSERT INTO leases (entry_id, holder, epoch, since, expires)
         VALUES ($1, '', 0, '', '-infinity') ON CONFLICT (entry_id) DO NOTHING",
        &[&entry.as_str()],
    )
    .db()?;
    let current = tx
        .query_one(
            "SELECT holder, epoch, since, expires <= clock_timestamp() FROM leases
             WHERE entry_id = $1 FOR UPDATE",
            &[&entry.as_str()],
        )
        .db()?;
    let epoch = current.int(1)?;
    let expired = current.flag(3)?;
    if !expired && from_epoch != Some(epoch) {
        return Ok(Err(Refusal::Held(LeaseHolder {
            holder: current.text(0)?,
            since: current.text(2)?,
            epoch,
        })));
    }
    let full = check_room(uses, |server, mailbox| {
        let n = tx
            .query_one(
                "SELECT COALESCE(SUM(u.connections), 0)::bigint FROM lease_uses u
                 JOIN leases l ON l.entry_id = u.entry_id
                 WHERE u.server = $1 AND ($2::text IS NULL OR u.mailbox = $2)
                     AND u.entry_id <> $3 AND l.expires > clock_timestamp()",
                &[&server, &mailbox, &entry.as_str()],
            )
            .db()?
            .int(0)?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    })?;
    if let Some(full) = full {
        return Ok(Err(Refusal::Full(full)));
    }
    let epoch = epoch + 1;
    tx.execute(
        &format!(
            "UPDATE leases SET holder = $2, epoch = $3, since = {NOW_TEXT},
                 expires = clock_timestamp() + $4::bigint * interval '1 millisecond',
                 renewed = clock_timestamp(), planned_messages = 0, planned_bytes = 0, copied = 0, bytes = 0
             WHERE entry_id = $1"
        ),
        &[&entry.as_str(), &holder, &epoch, &ttl_ms(ttl)],
    )
    .db()?;
    tx.execute(
        "DELETE FROM lease_uses WHERE entry_id = $1",
        &[&entry.as_str()],
    )
    .db()?;
    for u in uses {
        tx.execute(
            "INSERT INTO lease_uses (entry_id, server, mailbox, connections)
             VALUES ($1, $2, $3, $4)",
            &[
                &entry.as_str(),
                &u.server,
                &u.mailbox,
                &i64::from(u.connections),
            ],
        )
        .db()?;
    }
    Ok(Ok(Lease {
        entry: entry.clone(),
        holder: holder.to_string(),
        epoch,
    }))
}

/// With a fence, checks that the claim is still this holder's with this epoch, and keeps its
/// row locked (`FOR SHARE`) until the transaction ends: a take-over waits for the commit, and
/// after it the next fenced write sees the new epoch and is refused.
pub fn check_fence(tx: &mut impl GenericClient, fence: Option<&Lease>) -> Result<()> {
    let Some(lease) = fence else { return Ok(()) };
    let st = prepared(
        tx,
        "SELECT 1 FROM leases WHERE entry_id = $1 AND holder = $2 AND epoch = $3 FOR SHARE",
    )?;
    let held = tx
        .query_opt(&st, &[&lease.entry.as_str(), &lease.holder, &lease.epoch])
        .db()?;
    match held {
        Some(_) => Ok(()),
        None => Err(StoreError::lease_lost(&lease.entry)),
    }
}

pub fn renew(client: &mut Client, lease: &Lease, ttl: Duration) -> Result<()> {
    let n = client
        .execute(
            "UPDATE leases SET expires = clock_timestamp() + $4::bigint * interval '1 millisecond',
                 renewed = clock_timestamp()
             WHERE entry_id = $1 AND holder = $2 AND epoch = $3",
            &[
                &lease.entry.as_str(),
                &lease.holder,
                &lease.epoch,
                &ttl_ms(ttl),
            ],
        )
        .db()?;
    if n == 0 {
        return Err(StoreError::lease_lost(&lease.entry));
    }
    Ok(())
}

pub fn release(client: &mut impl GenericClient, lease: &Lease) -> Result<()> {
    client
        .execute(
            "UPDATE leases SET expires = '-infinity'
             WHERE entry_id = $1 AND holder = $2 AND epoch = $3",
            &[&lease.entry.as_str(), &lease.holder, &lease.epoch],
        )
        .db()?;
    Ok(())
}

pub fn report_progress(client: &mut Client, lease: &Lease, p: &PassProgress) -> Result<()> {
    let st = prepared(
        client,
        "UPDATE leases SET planned_messages = $4, planned_bytes = $5, copied = $6, bytes = $7
         WHERE entry_id = $1 AND holder = $2 AND epoch = $3",
    )?;
    let n = client
        .execute(
            &st,
            &[
                &lease.entry.as_str(),
                &lease.holder,
                &lease.epoch,
                &to_i64(p.planned_messages, "planned message count")?,
                &to_i64(p.planned_bytes, "planned byte count")?,
                &to_i64(p.copied, "copied count")?,
                &to_i64(p.bytes, "byte count")?,
            ],
        )
        .db()?;
    if n == 0 {
        return Err(StoreError::lease_lost(&lease.entry));
    }
    Ok(())
}

pub fn live_passes(client: &mut Client) -> Result<Vec<LivePass>> {
    client
        .query(
            &format!(
                "SELECT entry_id, holder, since, planned_messages, planned_bytes, copied, bytes,
                        {AGE_MS}
                 FROM leases WHERE expires > clock_timestamp() ORDER BY entry_id",
                AGE_MS = age_ms("renewed")
            ),
            &[],
        )
        .db()?
        .iter()
        .map(|r| {
            Ok(LivePass {
                entry: EntryId::new(r.text(0)?),
                holder: r.text(1)?,
                since: r.text(2)?,
                heartbeat_age: std::time::Duration::from_millis(r.u64(7)?),
                progress: PassProgress {
                    planned_messages: r.u64(3)?,
                    planned_bytes: r.u64(4)?,
                    copied: r.u64(5)?,
                    bytes: r.u64(6)?,
                },
            })
        })
        .collect()
}

/// SQL for how many milliseconds ago a `timestamptz` column was, by the database's clock
/// (never negative; `-infinity`, a lease of before schema version 2, is a day ago).
pub(crate) fn age_ms(column: &str) -> String {
    format!(
        "CASE WHEN {column} = '-infinity' THEN 86400000::bigint ELSE \
         greatest(0, (extract(epoch FROM clock_timestamp() - {column}) * 1000))::bigint END"
    )
}

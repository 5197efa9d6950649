//! The queue of passes for workers, and the workers' registrations, by the database's clock.

use std::time::Duration;

use postgres::Client;

use super::runs::{NOW_TEXT, age_ms};
use super::{Column, Db, to_i64};
use mailferry_core::model::EntryId;
use mailferry_core::ports::store::{
    Queued, Result, StoreError, StoreErrorKind, WorkerRecord, WorkerStats,
};

/// Queues entries in one transaction. Each gets a new ticket from the sequence; a new entry
/// a place at the end. Two processes queuing one entry at once: the second's insert waits
/// for the first's to commit, then updates its ticket.
pub fn enqueue(client: &mut Client, entries: &[EntryId]) -> Result<usize> {
    let tx = client;
    let mut added = 0;
    for id in entries {
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO queue AS q (entry_id, queued, first_ticket, ticket)
                     SELECT $1, {NOW_TEXT}, n.t, n.t FROM nextval('queue_tickets') AS n(t)
                     ON CONFLICT (entry_id) DO UPDATE SET ticket = excluded.ticket
                     RETURNING q.first_ticket = q.ticket"
                ),
                &[&id.as_str()],
            )
            .db()?;
        if row.flag(0)? {
            added += 1;
        }
    }
    Ok(added)
}

pub fn queued(client: &mut Client) -> Result<Vec<Queued>> {
    client
        .query(
            "SELECT entry_id, queued, ticket, failures::bigint, CASE WHEN not_before = '-infinity' \
             THEN 0::bigint ELSE greatest(0, (extract(epoch FROM not_before - \
             clock_timestamp()) * 1000))::bigint END FROM queue ORDER BY first_ticket",
            &[],
        )
        .db()?
        .iter()
        .map(|r| {
            Ok(Queued {
                entry: EntryId::new(r.text(0)?),
                queued: r.text(1)?,
                ticket: r.int(2)?,
                failures: u32::try_from(r.int(3)?).unwrap_or(u32::MAX),
                wait: Duration::from_millis(r.u64(4)?),
            })
        })
        .collect()
}

pub fn defer(client: &mut Client, entry: &EntryId, wait: Duration) -> Result<bool> {
    let wait_ms = to_i64(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "wait")?;
    let n = client
        .execute(
            "UPDATE queue SET failures = failures + 1,
                 not_before = clock_timestamp() + $2::bigint * interval '1 millisecond'
             WHERE entry_id = $1",
            &[&entry.as_str(), &wait_ms],
        )
        .db()?;
    Ok(n > 0)
}

pub fn dequeue(client: &mut Client, entry: &EntryId, ticket: i64) -> Result<bool> {
    let n = client
        .execute(
            "DELETE FROM queue WHERE entry_id = $1 AND ticket = $2",
            &[&entry.as_str(), &ticket],
        )
        .db()?;
    Ok(n > 0)
}

pub fn register(client: &mut Client, name: &str) -> Result<()> {
    client
        .execute(
            &format!(
                "INSERT INTO workers (name, started, started_at, heartbeat, heartbeat_at)
                 SELECT $1, t, now, t, now
                 FROM (SELECT {NOW_TEXT} AS t, clock_timestamp() AS now) AS c
                 ON CONFLICT (name) DO UPDATE SET started = excluded.started,
                     started_at = excluded.started_at, heartbeat = excluded.heartbeat,
                     heartbeat_at = excluded.heartbeat_at, stopped = NULL, passes = 0,
                     messages = 0, bytes = 0"
            ),
            &[&name],
        )
        .db()?;
    Ok(())
}

/// A heartbeat, and with `stopped` the clean stop.
pub fn heartbeat(client: &mut Client, name: &str, s: &WorkerStats, stopped: bool) -> Result<()> {
    let n = client
        .execute(
            &format!(
                "UPDATE workers SET heartbeat = {NOW_TEXT}, heartbeat_at = clock_timestamp(),
                     passes = $2, messages = $3, bytes = $4,
                     stopped = CASE WHEN $5 THEN {NOW_TEXT} ELSE stopped END
                 WHERE name = $1"
            ),
            &[
                &name,
                &to_i64(s.passes, "pass count")?,
                &to_i64(s.messages, "message count")?,
                &to_i64(s.bytes, "byte count")?,
                &stopped,
            ],
        )
        .db()?;
    if n == 0 {
        return Err(StoreError::new(
            StoreErrorKind::Other,
            format!("No worker {name} is registered in the state database"),
        ));
    }
    Ok(())
}

pub fn workers(client: &mut Client) -> Result<Vec<WorkerRecord>> {
    client
        .query(
            &format!(
                "SELECT name, started, heartbeat, {}, stopped, passes, messages, bytes
                 FROM workers ORDER BY started_at, name",
                age_ms("heartbeat_at")
            ),
            &[],
        )
        .db()?
        .iter()
        .map(|r| {
            Ok(WorkerRecord {
                name: r.text(0)?,
                started: r.text(1)?,
                heartbeat: r.text(2)?,
                heartbeat_age: std::time::Duration::from_millis(r.u64(3)?),
                stopped: r.opt_text(4)?,
                stats: WorkerStats {
                    passes: r.u64(5)?,
                    messages: r.u64(6)?,
                    bytes: r.u64(7)?,
                },
            })
        })
        .collect()
}

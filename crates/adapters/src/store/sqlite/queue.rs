//! The queue of passes for workers, and the workers' registrations.

use std::time::Duration;

use rusqlite::{Connection, params};

use super::Db;
use super::runs::{age, now_ms};
use mailferry_core::model::{EntryId, now};
use mailferry_core::ports::store::{
    Queued, Result, StoreError, StoreErrorKind, WorkerRecord, WorkerStats,
};

/// Queues entries in one transaction; each gets a new ticket, a new entry a place at the end.
pub fn enqueue(conn: &mut Connection, entries: &[EntryId]) -> Result<usize> {
    let tx = conn.transaction().db()?;
    let at = now();
    let mut added = 0;
    for id in entries {
        tx.execute("UPDATE queue_tickets SET last = last + 1", [])
            .db()?;
        let ticket: i64 = tx
            .query_row("SELECT last FROM queue_tickets", [], |r| r.get(0))
            .db()?;
        let updated = tx
            .execute(
                "UPDATE queue SET ticket = ?2 WHERE entry_id = ?1",
                params![id.as_str(), ticket],
            )
            .db()?;
        if updated == 0 {
            tx.execute(
                "INSERT INTO queue (entry_id, queued, first_ticket, ticket) VALUES (?1, ?2, ?3, ?3)",
                params![id.as_str(), at, ticket],
            )
            .db()?;
            added += 1;
        }
    }
    tx.commit().db()?;
    Ok(added)
}

pub fn queued(conn: &Connection) -> Result<Vec<Queued>> {
    let mut stmt = conn
        .prepare(
            "SELECT entry_id, queued, ticket, failures, not_before_ms FROM queue
             ORDER BY first_ticket",
        )
        .db()?;
    let now = now_ms();
    stmt.query_map([], |r| {
        Ok(Queued {
            entry: EntryId::new(r.get::<_, String>(0)?),
            queued: r.get(1)?,
            ticket: r.get(2)?,
            failures: r.get(3)?,
            wait: age(r.get(4)?, now),
        })
    })
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

pub fn dequeue(conn: &Connection, entry: &EntryId, ticket: i64) -> Result<bool> {
    let n = conn
        .execute(
            "DELETE FROM queue WHERE entry_id = ?1 AND ticket = ?2",
            params![entry.as_str(), ticket],
        )
        .db()?;
    Ok(n > 0)
}

pub fn defer(conn: &Connection, entry: &EntryId, wait: Duration) -> Result<bool> {
    let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    let n = conn
        .execute(
            "UPDATE queue SET failures = failures + 1, not_before_ms = ?2 WHERE entry_id = ?1",
            params![entry.as_str(), now_ms().saturating_add(wait_ms)],
        )
        .db()?;
    Ok(n > 0)
}

pub fn register(conn: &Connection, name: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO workers (name, started, started_ms, heartbeat, heartbeat_ms)
         VALUES (?1, ?2, ?3, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET started = excluded.started,
             started_ms = excluded.started_ms, heartbeat = excluded.heartbeat,
             heartbeat_ms = excluded.heartbeat_ms, stopped = NULL, passes = 0, messages = 0,
             bytes = 0",
        params![name, now(), now_ms()],
    )
    .db()?;
    Ok(())
}

/// A heartbeat, and with `stopped` the clean stop.
pub fn heartbeat(conn: &Connection, name: &str, s: &WorkerStats, stopped: bool) -> Result<()> {
    let at = now();
    let n = conn
        .execute(
            "UPDATE workers SET heartbeat = ?2, heartbeat_ms = ?3, passes = ?4, messages = ?5,
                 bytes = ?6, stopped = CASE WHEN ?7 THEN ?2 ELSE stopped END
             WHERE name = ?1",
            params![name, at, now_ms(), s.passes, s.messages, s.bytes, stopped],
        )
        .db()?;
    if n == 0 {
        return Err(not_registered(name));
    }
    Ok(())
}

pub(crate) fn not_registered(name: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Other,
        format!("No worker {name} is registered in the state database"),
    )
}

pub fn workers(conn: &Connection) -> Result<Vec<WorkerRecord>> {
    let now_ms = now_ms();
    let mut stmt = conn
        .prepare(
            "SELECT name, started, heartbeat, heartbeat_ms, stopped, passes, messages, bytes
             FROM workers ORDER BY started_ms, name",
        )
        .db()?;
    stmt.query_map([], |r| {
        Ok(WorkerRecord {
            name: r.get(0)?,
            started: r.get(1)?,
            heartbeat: r.get(2)?,
            heartbeat_age: age(now_ms, r.get(3)?),
            stopped: r.get(4)?,
            stats: WorkerStats {
                passes: r.get(5)?,
                messages: r.get(6)?,
                bytes: r.get(7)?,
            },
        })
    })
    .db()?
    .collect::<rusqlite::Result<_>>()
    .db()
}

//! Entries: one source mailbox and the target it goes to, with the state of its last pass.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Db, json_list, parse_list, parse_text};
use mailferry_core::model::{Entry, EntryId, EntryState, MailboxId, Origin, RunId};
use mailferry_core::ports::store::Result;

pub fn all(conn: &Connection) -> Result<Vec<Entry>> {
    let mut stmt = conn
        .prepare(
            "SELECT id, source_login, source_addresses, target_login, target_addresses, origin,
                    stage, state, copied, failed, last_pass, last_error, source_display_name,
                    target_id, match_note, missing_source
             FROM entries ORDER BY id",
        )
        .db()?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Entry {
                id: EntryId::new(r.get::<_, String>(0)?),
                source_login: r.get(1)?,
                source_addresses: parse_list(&r.get::<_, String>(2)?),
                target_login: r.get(3)?,
                target_addresses: parse_list(&r.get::<_, String>(4)?),
                origin: parse_text("origin", &r.get::<_, String>(5)?, Origin::parse)?,
                stage: r.get(6)?,
                state: parse_text("state", &r.get::<_, String>(7)?, EntryState::parse)?,
                copied: r.get(8)?,
                failed: r.get(9)?,
                last_pass: r.get(10)?,
                last_error: r.get(11)?,
                source_display_name: r.get(12)?,
                target_id: r.get::<_, Option<String>>(13)?.map(MailboxId::new),
                match_note: r.get(14)?,
                missing_source: r.get(15)?,
            })
        })
        .db()?;
    rows.collect::<rusqlite::Result<_>>().db()
}

/// Inserts or updates entries by ID, keeping their ledger and migration state, in one
/// transaction: either all are applied or none.
pub fn upsert(conn: &mut Connection, entries: &[Entry]) -> Result<(usize, usize)> {
    let tx = conn.transaction().db()?;
    let (mut added, mut updated) = (0, 0);
    for e in entries {
        let exists = tx
            .query_row(
                "SELECT 1 FROM entries WHERE id = ?1",
                [e.id.as_str()],
                |_| Ok(()),
            )
            .optional()
            .db()?
            .is_some();
        let values = params![
            e.id.as_str(),
            e.source_login,
            json_list(&e.source_addresses),
            e.target_login,
            json_list(&e.target_addresses),
            e.origin.as_str(),
            e.stage,
            e.source_display_name,
            e.target_id.as_ref().map(|t| t.as_str()),
            e.match_note,
            e.missing_source
        ];
        if exists {
            tx.execute(
                "UPDATE entries SET source_login = ?2, source_addresses = ?3, target_login = ?4,
                     target_addresses = ?5, origin = ?6, stage = ?7, source_display_name = ?8,
                     target_id = ?9, match_note = ?10, missing_source = ?11 WHERE id = ?1",
                values,
            )
            .db()?;
            updated += 1;
        } else {
            tx.execute(
                "INSERT INTO entries (id, source_login, source_addresses, target_login,
                     target_addresses, origin, stage, state, source_display_name, target_id,
                     match_note, missing_source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'new', ?8, ?9, ?10, ?11)",
                values,
            )
            .db()?;
            added += 1;
        }
    }
    tx.commit().db()?;
    Ok((added, updated))
}

/// An entry's pass ended in `run`: its state; copied counted from the ledger, failed from
/// that run's failures (never from whichever run happens to be the newest).
pub fn set_result(
    conn: &Connection,
    run: RunId,
    id: &EntryId,
    state: EntryState,
    last_pass: &str,
    error: Option<&str>,
) -> Result<()> {
    conn.execute(
        "UPDATE entries SET state = ?2, last_pass = ?3, last_error = ?4,
             copied = (SELECT count(*) FROM ledger WHERE entry_id = ?1 AND state = 'copied'),
             failed = (SELECT count(*) FROM failures WHERE entry_id = ?1 AND run_id = ?5)
         WHERE id = ?1",
        params![id.as_str(), state.as_str(), last_pass, error, run.0],
    )
    .db()?;
    Ok(())
}

pub fn missing_source_ids(conn: &Connection) -> Result<Vec<EntryId>> {
    let mut stmt = conn
        .prepare("SELECT id FROM entries WHERE missing_source = 1 ORDER BY id")
        .db()?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0).map(EntryId::new))
        .db()?;
    rows.collect::<rusqlite::Result<_>>().db()
}

/// Removes entries and everything recorded for them (ledger, checkpoints, leases), in one
/// transaction.
pub fn remove(conn: &mut Connection, ids: &[EntryId]) -> Result<()> {
    let tx = conn.transaction().db()?;
    for id in ids {
        for table in [
            "ledger",
            "orphans",
            "folder_checkpoints",
            "leases",
            "lease_uses",
            "queue",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE entry_id = ?1"),
                [id.as_str()],
            )
            .db()?;
        }
        tx.execute("DELETE FROM entries WHERE id = ?1", [id.as_str()])
            .db()?;
    }
    tx.commit().db()
}

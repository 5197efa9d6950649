//! Entries: one source mailbox and the target it goes to, with the state of its last pass.

use postgres::{Client, GenericClient, Row};

use super::{Column, Db, json_list, parse_list};
use mailferry_core::model::{Entry, EntryId, EntryState, MailboxId, Origin, RunId};
use mailferry_core::ports::store::Result;

fn entry(r: &Row) -> Result<Entry> {
    Ok(Entry {
        id: EntryId::new(r.text(0)?),
        source_login: r.text(1)?,
        source_addresses: parse_list(&r.text(2)?),
        target_login: r.opt_text(3)?,
        target_addresses: parse_list(&r.text(4)?),
        origin: r.parsed(5, Origin::parse)?,
        stage: r.opt_u32(6)?,
        state: r.parsed(7, EntryState::parse)?,
        copied: r.u64(8)?,
        failed: r.u64(9)?,
        last_pass: r.opt_text(10)?,
        last_error: r.opt_text(11)?,
        source_display_name: r.opt_text(12)?,
        target_id: r.opt_text(13)?.map(MailboxId::new),
        match_note: r.opt_text(14)?,
        missing_source: r.flag(15)?,
    })
}

pub fn all(client: &mut Client) -> Result<Vec<Entry>> {
    client
        .query(
            "SELECT id, source_login, source_addresses, target_login, target_addresses, origin,
                    stage, state, copied, failed, last_pass, last_error, source_display_name,
                    target_id, match_note, missing_source
             FROM entries ORDER BY id",
            &[],
        )
        .db()?
        .iter()
        .map(entry)
        .collect()
}

/// Inserts or updates entries by ID, keeping their ledger and migration state, in one
/// transaction: either all are applied or none. `INSERT … ON CONFLICT` rather than a look
/// first, so two processes adding the same new entry at once do not collide.
pub fn upsert(client: &mut Client, entries: &[Entry]) -> Result<(usize, usize)> {
    let tx = client;
    let stmt = tx
        .prepare(
            "INSERT INTO entries (id, source_login, source_addresses, target_login,
                 target_addresses, origin, stage, state, source_display_name, target_id,
                 match_note, missing_source)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'new', $8, $9, $10, $11)
             ON CONFLICT (id) DO UPDATE SET source_login = excluded.source_login,
                 source_addresses = excluded.source_addresses,
                 target_login = excluded.target_login,
                 target_addresses = excluded.target_addresses, origin = excluded.origin,
                 stage = excluded.stage, source_display_name = excluded.source_display_name,
                 target_id = excluded.target_id, match_note = excluded.match_note,
                 missing_source = excluded.missing_source
             RETURNING (xmax = 0) AS inserted",
        )
        .db()?;
    let (mut added, mut updated) = (0, 0);
    for e in entries {
        let (sources, targets) = (
            json_list(&e.source_addresses),
            json_list(&e.target_addresses),
        );
        let stage = e.stage.map(i64::from);
        let target_id = e.target_id.as_ref().map(|t| t.as_str());
        let row = tx
            .query_one(
                &stmt,
                &[
                    &e.id.as_str(),
                    &e.source_login,
                    &sources,
                    &e.target_login,
                    &targets,
                    &e.origin.as_str(),
                    &stage,
                    &e.source_display_name,
                    &target_id,
                    &e.match_note,
                    &e.missing_source,
                ],
            )
            .db()?;
        // A row inserted by this statement has no deleting transaction yet (xmax = 0); one
        // the conflict updated has this transaction's ID there.
        if row.flag(0)? {
            added += 1;
        } else {
            updated += 1;
        }
    }
    Ok((added, updated))
}

/// An entry's pass ended in `run`: its state; copied counted from the ledger, failed from
/// that run's failures (never from whichever run happens to be the newest).
pub fn set_result(
    client: &mut impl GenericClient,
    run: RunId,
    id: &EntryId,
    state: EntryState,
    last_pass: &str,
    error: Option<&str>,
) -> Result<()> {
    client
        .execute(
            "UPDATE entries SET state = $2, last_pass = $3, last_error = $4,
                 copied = (SELECT count(*) FROM ledger WHERE entry_id = $1 AND state = 'copied'),
                 failed = (SELECT count(*) FROM failures WHERE entry_id = $1 AND run_id = $5)
             WHERE id = $1",
            &[&id.as_str(), &state.as_str(), &last_pass, &error, &run.0],
        )
        .db()?;
    Ok(())
}

pub fn missing_source_ids(client: &mut Client) -> Result<Vec<EntryId>> {
    client
        .query(
            "SELECT id FROM entries WHERE missing_source ORDER BY id",
            &[],
        )
        .db()?
        .iter()
        .map(|r| r.text(0).map(EntryId::new))
        .collect()
}

/// Removes entries and everything recorded for them (ledger, checkpoints, leases), in one
/// transaction.
pub fn remove(client: &mut Client, ids: &[EntryId]) -> Result<()> {
    let ids: Vec<&str> = ids.iter().map(EntryId::as_str).collect();
    let mut tx = client.transaction().db()?;
    for table in [
        "ledger",
        "orphans",
        "folder_checkpoints",
        "leases",
        "lease_uses",
        "queue",
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE entry_id = ANY($1)"),
            &[&ids],
        )
        .db()?;
    }
    tx.execute("DELETE FROM entries WHERE id = ANY($1)", &[&ids])
        .db()?;
    tx.commit().db()
}

//! The ledger: per entry, source folder + UIDVALIDITY + UID → target folder + UID +
//! fingerprint. The only truth about what was copied.

use rusqlite::{Connection, params};

use super::{Db, nz_column, opt_nz_column, parse_text};
use mailferry_core::model::{
    EntryId, Fingerprint, Flags, LedgerRow, LedgerState, Uid, UidValidity,
};
use mailferry_core::ports::store::{Lease, Orphan, Result};

fn query(conn: &Connection, filter: &str, p: impl rusqlite::Params) -> Result<Vec<LedgerRow>> {
    // Cached: a delta reads one folder's rows range by range with the same statement.
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT source_folder, uid_validity, uid, target_folder, target_uid, target_uidnext,
                    fingerprint, size, flags, state FROM ledger {filter} ORDER BY uid"
        ))
        .db()?;
    let rows = stmt
        .query_map(p, |r| {
            Ok(LedgerRow {
                source_folder: r.get(0)?,
                uid_validity: nz_column(r, 1, UidValidity::new)?,
                uid: nz_column(r, 2, Uid::new)?,
                target_folder: r.get(3)?,
                target_uid: opt_nz_column(r, 4, Uid::new)?,
                target_uidnext: r.get(5)?,
                fingerprint: Fingerprint::new(r.get::<_, String>(6)?),
                size: r.get(7)?,
                flags: Flags::from_stored(&r.get::<_, String>(8)?),
                state: parse_text("ledger state", &r.get::<_, String>(9)?, LedgerState::parse)?,
            })
        })
        .db()?;
    rows.collect::<rusqlite::Result<_>>().db()
}

/// Ledger rows of one source folder (any UIDVALIDITY).
pub fn folder(conn: &Connection, entry: &EntryId, folder: &str) -> Result<Vec<LedgerRow>> {
    query(
        conn,
        "WHERE entry_id = ?1 AND source_folder = ?2",
        params![entry.as_str(), folder],
    )
}

/// Rows of one folder and UIDVALIDITY in these UID ranges: one primary-key range read each.
pub fn uids(
    conn: &Connection,
    entry: &EntryId,
    folder: &str,
    uid_validity: UidValidity,
    ranges: &[(Uid, Uid)],
) -> Result<Vec<LedgerRow>> {
    let mut out = Vec::new();
    for (low, high) in ranges {
        out.extend(query(
            conn,
            "WHERE entry_id = ?1 AND source_folder = ?2 AND uid_validity = ?3
                 AND uid BETWEEN ?4 AND ?5",
            params![
                entry.as_str(),
                folder,
                uid_validity.get(),
                low.get(),
                high.get()
            ],
        )?);
    }
    out.sort_by_key(|r| r.uid);
    out.dedup_by_key(|r| r.uid);
    Ok(out)
}

pub fn pending(conn: &Connection, entry: &EntryId) -> Result<Vec<LedgerRow>> {
    query(
        conn,
        "WHERE entry_id = ?1 AND state = 'pending'",
        params![entry.as_str()],
    )
}

pub fn all(conn: &Connection, entry: &EntryId) -> Result<Vec<LedgerRow>> {
    query(conn, "WHERE entry_id = ?1", params![entry.as_str()])
}

/// The source folders the entry's rows name, sorted (from the primary key's index).
pub fn folders(conn: &Connection, entry: &EntryId) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT DISTINCT source_folder FROM ledger WHERE entry_id = ?1
             ORDER BY source_folder",
        )
        .db()?;
    let rows = stmt.query_map(params![entry.as_str()], |r| r.get(0)).db()?;
    rows.collect::<rusqlite::Result<_>>().db()
}

/// Copied rows whose source message was seen gone.
pub fn gone(conn: &Connection, entry: &EntryId) -> Result<Vec<LedgerRow>> {
    query(
        conn,
        "WHERE entry_id = ?1 AND gone = 1",
        params![entry.as_str()],
    )
}

/// Marks copied rows gone, in one transaction (pending rows and absent keys are left alone).
pub fn mark_gone(
    conn: &mut Connection,
    fence: Option<&Lease>,
    entry: &EntryId,
    rows: &[LedgerRow],
) -> Result<()> {
    let tx = super::write_tx(conn, fence)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "UPDATE ledger SET gone = 1
                 WHERE entry_id = ?1 AND source_folder = ?2 AND uid_validity = ?3 AND uid = ?4
                     AND state = 'copied'",
            )
            .db()?;
        for r in rows {
            stmt.execute(params![
                entry.as_str(),
                r.source_folder,
                r.uid_validity.get(),
                r.uid.get()
            ])
            .db()?;
        }
    }
    tx.commit().db()
}

/// Known target UIDs of a target folder: messages the ledger says are ours.
pub fn target_uids(conn: &Connection, entry: &EntryId, target_folder: &str) -> Result<Vec<Uid>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT target_uid FROM ledger WHERE entry_id = ?1 AND target_folder = ?2
             AND target_uid IS NOT NULL",
        )
        .db()?;
    let rows = stmt
        .query_map(params![entry.as_str(), target_folder], |r| {
            nz_column(r, 0, Uid::new)
        })
        .db()?;
    rows.collect::<rusqlite::Result<_>>().db()
}

/// Records intents to copy, committed before any of their APPENDs is sent. A plain INSERT:
/// an intent for a message the ledger already has is a bug to surface, never a row to
/// overwrite (that would lose the record of a copy).
pub fn insert_pending(
    conn: &mut Connection,
    fence: Option<&Lease>,
    entry: &EntryId,
    rows: &[LedgerRow],
) -> Result<()> {
    let tx = super::write_tx(conn, fence)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO ledger (entry_id, source_folder, uid_validity, uid, target_folder,
                     target_uid, target_uidnext, fingerprint, size, flags, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8, ?9, 'pending')",
            )
            .db()?;
        for r in rows {
            stmt.execute(params![
                entry.as_str(),
                r.source_folder,
                r.uid_validity.get(),
                r.uid.get(),
                r.target_folder,
                r.target_uidnext,
                r.fingerprint.as_str(),
                r.size,
                r.flags.as_str()
            ])
            .db()?;
        }
    }
    tx.commit().db()
}

/// Marks rows copied (with their target UID when known) and forgets the failed ones, in one
/// transaction.
pub fn complete(
    conn: &mut Connection,
    fence: Option<&Lease>,
    entry: &EntryId,
    copied: &[(&LedgerRow, Option<Uid>)],
    failed: &[&LedgerRow],
) -> Result<()> {
    let tx = super::write_tx(conn, fence)?;
    {
        let mut done = tx
            .prepare_cached(
                "UPDATE ledger SET state = 'copied', target_uid = ?5, target_uidnext = NULL
                 WHERE entry_id = ?1 AND source_folder = ?2 AND uid_validity = ?3 AND uid = ?4",
            )
            .db()?;
        for (r, uid) in copied {
            done.execute(params![
                entry.as_str(),
                r.source_folder,
                r.uid_validity.get(),
                r.uid.get(),
                uid.map(Uid::get)
            ])
            .db()?;
        }
        let mut del = tx
            .prepare_cached(
                "DELETE FROM ledger
                 WHERE entry_id = ?1 AND source_folder = ?2 AND uid_validity = ?3 AND uid = ?4",
            )
            .db()?;
        for r in failed {
            del.execute(params![
                entry.as_str(),
                r.source_folder,
                r.uid_validity.get(),
                r.uid.get()
            ])
            .db()?;
        }
    }
    tx.commit().db()
}

pub fn set_flags(
    conn: &mut Connection,
    fence: Option<&Lease>,
    entry: &EntryId,
    updates: &[(&LedgerRow, Flags)],
) -> Result<()> {
    let tx = super::write_tx(conn, fence)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "UPDATE ledger SET flags = ?5
                 WHERE entry_id = ?1 AND source_folder = ?2 AND uid_validity = ?3 AND uid = ?4",
            )
            .db()?;
        for (r, flags) in updates {
            stmt.execute(params![
                entry.as_str(),
                r.source_folder,
                r.uid_validity.get(),
                r.uid.get(),
                flags.as_str()
            ])
            .db()?;
        }
    }
    tx.commit().db()
}

/// Re-keys rows in one transaction: each source message now lives at the new row's folder /
/// UIDVALIDITY / UID, on the target at its target folder / UID, with its flags.
pub fn rekey(
    conn: &mut Connection,
    fence: Option<&Lease>,
    entry: &EntryId,
    pairs: &[(LedgerRow, LedgerRow)],
) -> Result<()> {
    let tx = super::write_tx(conn, fence)?;
    {
        let mut stmt = tx
            .prepare_cached(
                "UPDATE ledger SET source_folder = ?5, uid_validity = ?6, uid = ?7,
                     target_folder = ?8, target_uid = ?9, flags = ?10, gone = 0
                 WHERE entry_id = ?1 AND source_folder = ?2 AND uid_validity = ?3 AND uid = ?4",
            )
            .db()?;
        for (old, new) in pairs {
            stmt.execute(params![
                entry.as_str(),
                old.source_folder,
                old.uid_validity.get(),
                old.uid.get(),
                new.source_folder,
                new.uid_validity.get(),
                new.uid.get(),
                new.target_folder,
                new.target_uid.map(Uid::get),
                new.flags.as_str()
            ])
            .db()?;
        }
    }
    tx.commit().db()
}

/// Records orphans, all or none; one already recorded is left as it is.
pub fn record_orphans(conn: &mut Connection, entry: &EntryId, orphans: &[Orphan]) -> Result<()> {
    let tx = conn.transaction().db()?;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO orphans (entry_id, target_folder, target_uid_validity,
                     target_uid, fingerprint)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .db()?;
        for o in orphans {
            stmt.execute(params![
                entry.as_str(),
                o.target_folder,
                o.uid_validity.get(),
                o.uid.get(),
                o.fingerprint.as_str()
            ])
            .db()?;
        }
    }
    tx.commit().db()
}

pub fn orphans(conn: &Connection, entry: &EntryId) -> Result<Vec<Orphan>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT target_folder, target_uid_validity, target_uid, fingerprint FROM orphans
             WHERE entry_id = ?1 ORDER BY target_folder, target_uid_validity, target_uid",
        )
        .db()?;
    let rows = stmt
        .query_map(params![entry.as_str()], |r| {
            Ok(Orphan {
                target_folder: r.get(0)?,
                uid_validity: nz_column(r, 1, UidValidity::new)?,
                uid: nz_column(r, 2, Uid::new)?,
                fingerprint: Fingerprint::new(r.get::<_, String>(3)?),
            })
        })
        .db()?;
    rows.collect::<rusqlite::Result<_>>().db()
}

pub fn drop_orphan(conn: &Connection, entry: &EntryId, o: &Orphan) -> Result<()> {
    conn.execute(
        "DELETE FROM orphans WHERE entry_id = ?1 AND target_folder = ?2
         AND target_uid_validity = ?3 AND target_uid = ?4",
        params![
            entry.as_str(),
            o.target_folder,
            o.uid_validity.get(),
            o.uid.get()
        ],
    )
    .db()?;
    Ok(())
}

//! The ledger: per entry, source folder + UIDVALIDITY + UID → target folder + UID +
//! fingerprint. The only truth about what was copied.

use postgres::types::ToSql;
use postgres::{Client, Row};

use super::conn::prepared;
use super::{Column, Db, to_i64};
use mailferry_core::model::{
    EntryId, Fingerprint, Flags, LedgerRow, LedgerState, Uid, UidValidity,
};
use mailferry_core::ports::store::{Lease, Orphan, Result};

fn ledger_row(r: &Row) -> Result<LedgerRow> {
    Ok(LedgerRow {
        source_folder: r.text(0)?,
        uid_validity: r.nz(1, UidValidity::new)?,
        uid: r.nz(2, Uid::new)?,
        target_folder: r.text(3)?,
        target_uid: r.opt_nz(4, Uid::new)?,
        target_uidnext: r.opt_u32(5)?,
        fingerprint: Fingerprint::new(r.text(6)?),
        size: r.u64(7)?,
        flags: Flags::from_stored(&r.text(8)?),
        state: r.parsed(9, LedgerState::parse)?,
    })
}

fn query(client: &mut Client, filter: &str, p: &[&(dyn ToSql + Sync)]) -> Result<Vec<LedgerRow>> {
    // By UID, as the port promises; the rest of the key only makes the order the same on
    // every call.
    client
        .query(
            &format!(
                "SELECT source_folder, uid_validity, uid, target_folder, target_uid,
                        target_uidnext, fingerprint, size, flags, state
                 FROM ledger {filter} ORDER BY uid, source_folder, uid_validity"
            ),
            p,
        )
        .db()?
        .iter()
        .map(ledger_row)
        .collect()
}

/// Ledger rows of one source folder (any UIDVALIDITY).
pub fn folder(client: &mut Client, entry: &EntryId, folder: &str) -> Result<Vec<LedgerRow>> {
    // Read once per folder of every pass: prepared once per session (`query`'s text is not).
    let st = prepared(
        client,
        "SELECT source_folder, uid_validity, uid, target_folder, target_uid,
                target_uidnext, fingerprint, size, flags, state
         FROM ledger WHERE entry_id = $1 AND source_folder = $2
         ORDER BY uid, source_folder, uid_validity",
    )?;
    client
        .query(&st, &[&entry.as_str(), &folder])
        .db()?
        .iter()
        .map(ledger_row)
        .collect()
}

/// Rows of one folder and UIDVALIDITY in these UID ranges, in one statement.
pub fn uids(
    client: &mut Client,
    entry: &EntryId,
    folder: &str,
    uid_validity: UidValidity,
    ranges: &[(Uid, Uid)],
) -> Result<Vec<LedgerRow>> {
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    let lows: Vec<i64> = ranges.iter().map(|(l, _)| i64::from(l.get())).collect();
    let highs: Vec<i64> = ranges.iter().map(|(_, h)| i64::from(h.get())).collect();
    query(
        client,
        "WHERE entry_id = $1 AND source_folder = $2 AND uid_validity = $3
             AND EXISTS (SELECT 1 FROM unnest($4::bigint[], $5::bigint[]) AS r(lo, hi)
                         WHERE uid BETWEEN r.lo AND r.hi)",
        &[
            &entry.as_str(),
            &folder,
            &i64::from(uid_validity.get()),
            &lows,
            &highs,
        ],
    )
}

pub fn pending(client: &mut Client, entry: &EntryId) -> Result<Vec<LedgerRow>> {
    query(
        client,
        "WHERE entry_id = $1 AND state = 'pending'",
        &[&entry.as_str()],
    )
}

pub fn all(client: &mut Client, entry: &EntryId) -> Result<Vec<LedgerRow>> {
    query(client, "WHERE entry_id = $1", &[&entry.as_str()])
}

/// The source folders the entry's rows name, sorted.
pub fn folders(client: &mut Client, entry: &EntryId) -> Result<Vec<String>> {
    client
        .query(
            "SELECT DISTINCT source_folder COLLATE \"C\" FROM ledger WHERE entry_id = $1
             ORDER BY 1",
            &[&entry.as_str()],
        )
        .db()?
        .iter()
        .map(|r| r.text(0))
        .collect()
}

/// Copied rows whose source message was seen gone.
pub fn gone(client: &mut Client, entry: &EntryId) -> Result<Vec<LedgerRow>> {
    query(client, "WHERE entry_id = $1 AND gone", &[&entry.as_str()])
}

/// Marks copied rows gone, in one statement (pending rows and absent keys are left alone).
pub fn mark_gone(
    client: &mut Client,
    fence: Option<&Lease>,
    entry: &EntryId,
    rows: &[LedgerRow],
) -> Result<()> {
    let mut tx = client.transaction().db()?;
    super::runs::check_fence(&mut tx, fence)?;
    if !rows.is_empty() {
        let folders: Vec<&str> = rows.iter().map(|r| r.source_folder.as_str()).collect();
        let validities: Vec<i64> = rows
            .iter()
            .map(|r| i64::from(r.uid_validity.get()))
            .collect();
        let uids: Vec<i64> = rows.iter().map(|r| i64::from(r.uid.get())).collect();
        tx.execute(
            "UPDATE ledger AS l SET gone = true
             FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS x(f, v, u)
             WHERE l.entry_id = $1 AND l.source_folder = x.f COLLATE \"C\"
                 AND l.uid_validity = x.v AND l.uid = x.u AND l.state = 'copied'",
            &[&entry.as_str(), &folders, &validities, &uids],
        )
        .db()?;
    }
    tx.commit().db()
}

/// Known target UIDs of a target folder: messages the ledger says are ours.
pub fn target_uids(client: &mut Client, entry: &EntryId, target_folder: &str) -> Result<Vec<Uid>> {
    client
        .query(
            "SELECT target_uid FROM ledger WHERE entry_id = $1 AND target_folder = $2
             AND target_uid IS NOT NULL",
            &[&entry.as_str(), &target_folder],
        )
        .db()?
        .iter()
        .map(|r| r.nz(0, Uid::new))
        .collect()
}

/// Records intents to copy, committed before any of their APPENDs is sent. A plain INSERT:
/// an intent for a message the ledger already has is a bug to surface (a unique violation,
/// which rolls the whole batch back), never a row to overwrite (that would lose the record
/// of a copy).
pub fn insert_pending(
    client: &mut Client,
    fence: Option<&Lease>,
    entry: &EntryId,
    rows: &[LedgerRow],
) -> Result<()> {
    let tx = client;
    super::runs::check_fence(tx, fence)?;
    if rows.is_empty() {
        return Ok(());
    }
    // One statement for the whole group (arrays unnested), not one round trip per row.
    let mut folders = Vec::with_capacity(rows.len());
    let mut validities = Vec::with_capacity(rows.len());
    let mut uids = Vec::with_capacity(rows.len());
    let mut targets = Vec::with_capacity(rows.len());
    let mut uidnexts = Vec::with_capacity(rows.len());
    let mut fingerprints = Vec::with_capacity(rows.len());
    let mut sizes = Vec::with_capacity(rows.len());
    let mut flags = Vec::with_capacity(rows.len());
    for r in rows {
        folders.push(r.source_folder.as_str());
        validities.push(i64::from(r.uid_validity.get()));
        uids.push(i64::from(r.uid.get()));
        targets.push(r.target_folder.as_str());
        uidnexts.push(r.target_uidnext.map(i64::from));
        fingerprints.push(r.fingerprint.as_str());
        sizes.push(to_i64(r.size, "message size")?);
        flags.push(r.flags.as_str());
    }
    let st = prepared(
        tx,
        "INSERT INTO ledger (entry_id, source_folder, uid_validity, uid, target_folder,
             target_uid, target_uidnext, fingerprint, size, flags, state)
         SELECT $1, f, v, u, t, NULL, n, fp, s, fl, 'pending'
         FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[],
                     $7::text[], $8::bigint[], $9::text[]) AS x(f, v, u, t, n, fp, s, fl)",
    )?;
    tx.execute(
        &st,
        &[
            &entry.as_str(),
            &folders,
            &validities,
            &uids,
            &targets,
            &uidnexts,
            &fingerprints,
            &sizes,
            &flags,
        ],
    )
    .db()?;
    Ok(())
}

/// Marks rows copied (with their target UID when known) and forgets the failed ones, in one
/// transaction: one statement each (arrays unnested), whatever the group's size.
pub fn complete(
    client: &mut Client,
    fence: Option<&Lease>,
    entry: &EntryId,
    copied: &[(&LedgerRow, Option<Uid>)],
    failed: &[&LedgerRow],
) -> Result<()> {
    let mut tx = client.transaction().db()?;
    super::runs::check_fence(&mut tx, fence)?;
    if !copied.is_empty() {
        let folders: Vec<&str> = copied
            .iter()
            .map(|(r, _)| r.source_folder.as_str())
            .collect();
        let validities: Vec<i64> = copied
            .iter()
            .map(|(r, _)| i64::from(r.uid_validity.get()))
            .collect();
        let uids: Vec<i64> = copied.iter().map(|(r, _)| i64::from(r.uid.get())).collect();
        let targets: Vec<Option<i64>> = copied
            .iter()
            .map(|(_, uid)| uid.map(|u| i64::from(u.get())))
            .collect();
        let st = prepared(
            &mut tx,
            "UPDATE ledger AS l SET state = 'copied', target_uid = x.tu, target_uidnext = NULL
             FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[]) AS x(f, v, u, tu)
             WHERE l.entry_id = $1 AND l.source_folder = x.f COLLATE \"C\"
                 AND l.uid_validity = x.v AND l.uid = x.u",
        )?;
        tx.execute(
            &st,
            &[&entry.as_str(), &folders, &validities, &uids, &targets],
        )
        .db()?;
    }
    if !failed.is_empty() {
        let folders: Vec<&str> = failed.iter().map(|r| r.source_folder.as_str()).collect();
        let validities: Vec<i64> = failed
            .iter()
            .map(|r| i64::from(r.uid_validity.get()))
            .collect();
        let uids: Vec<i64> = failed.iter().map(|r| i64::from(r.uid.get())).collect();
        tx.execute(
            "DELETE FROM ledger AS l
             USING unnest($2::text[], $3::bigint[], $4::bigint[]) AS x(f, v, u)
             WHERE l.entry_id = $1 AND l.source_folder = x.f COLLATE \"C\"
                 AND l.uid_validity = x.v AND l.uid = x.u",
            &[&entry.as_str(), &folders, &validities, &uids],
        )
        .db()?;
    }
    tx.commit().db()
}

pub fn set_flags(
    client: &mut Client,
    fence: Option<&Lease>,
    entry: &EntryId,
    updates: &[(&LedgerRow, Flags)],
) -> Result<()> {
    let mut tx = client.transaction().db()?;
    super::runs::check_fence(&mut tx, fence)?;
    if !updates.is_empty() {
        // One statement for all of them, as `complete`: a delta pass may change many flags.
        let folders: Vec<&str> = updates
            .iter()
            .map(|(r, _)| r.source_folder.as_str())
            .collect();
        let validities: Vec<i64> = updates
            .iter()
            .map(|(r, _)| i64::from(r.uid_validity.get()))
            .collect();
        let uids: Vec<i64> = updates
            .iter()
            .map(|(r, _)| i64::from(r.uid.get()))
            .collect();
        let flags: Vec<&str> = updates.iter().map(|(_, f)| f.as_str()).collect();
        tx.execute(
            "UPDATE ledger AS l SET flags = x.fl
             FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[]) AS x(f, v, u, fl)
             WHERE l.entry_id = $1 AND l.source_folder = x.f COLLATE \"C\"
                 AND l.uid_validity = x.v AND l.uid = x.u",
            &[&entry.as_str(), &folders, &validities, &uids, &flags],
        )
        .db()?;
    }
    tx.commit().db()
}

/// Re-keys rows in one transaction: each source message now lives at the new row's folder /
/// UIDVALIDITY / UID, on the target at its target folder / UID, with its flags.
pub fn rekey(
    client: &mut Client,
    fence: Option<&Lease>,
    entry: &EntryId,
    pairs: &[(LedgerRow, LedgerRow)],
) -> Result<()> {
    let tx = client;
    super::runs::check_fence(tx, fence)?;
    if pairs.is_empty() {
        return Ok(());
    }
    // One statement for all of them, as `set_flags`: a folder renamed on the source re-keys
    // every row of it. Each row is matched by its old key against the rows as they were
    // before the statement; a new key another row holds is refused, and the whole call with it.
    fn key(r: &LedgerRow) -> (&str, i64, i64) {
        (
            r.source_folder.as_str(),
            i64::from(r.uid_validity.get()),
            i64::from(r.uid.get()),
        )
    }
    let (old_folders, old_validities, old_uids): (Vec<&str>, Vec<i64>, Vec<i64>) =
        pairs.iter().map(|(o, _)| key(o)).collect();
    let (folders, validities, uids): (Vec<&str>, Vec<i64>, Vec<i64>) =
        pairs.iter().map(|(_, n)| key(n)).collect();
    let target_folders: Vec<&str> = pairs
        .iter()
        .map(|(_, n)| n.target_folder.as_str())
        .collect();
    let target_uids: Vec<Option<i64>> = pairs
        .iter()
        .map(|(_, n)| n.target_uid.map(|u| i64::from(u.get())))
        .collect();
    let flags: Vec<&str> = pairs.iter().map(|(_, n)| n.flags.as_str()).collect();
    tx.execute(
        "UPDATE ledger AS l SET source_folder = x.nf, uid_validity = x.nv, uid = x.nu,
             target_folder = x.tf, target_uid = x.tu, flags = x.fl, gone = false
         FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[],
                     $7::bigint[], $8::text[], $9::bigint[], $10::text[])
             AS x(f, v, u, nf, nv, nu, tf, tu, fl)
         WHERE l.entry_id = $1 AND l.source_folder = x.f COLLATE \"C\"
             AND l.uid_validity = x.v AND l.uid = x.u",
        &[
            &entry.as_str(),
            &old_folders,
            &old_validities,
            &old_uids,
            &folders,
            &validities,
            &uids,
            &target_folders,
            &target_uids,
            &flags,
        ],
    )
    .db()?;
    Ok(())
}

/// Records orphans, all or none, in one statement; one already recorded is left as it is
/// (so doing it again is doing it once).
pub fn record_orphans(client: &mut Client, entry: &EntryId, orphans: &[Orphan]) -> Result<()> {
    if orphans.is_empty() {
        return Ok(());
    }
    let folders: Vec<&str> = orphans.iter().map(|o| o.target_folder.as_str()).collect();
    let validities: Vec<i64> = orphans
        .iter()
        .map(|o| i64::from(o.uid_validity.get()))
        .collect();
    let uids: Vec<i64> = orphans.iter().map(|o| i64::from(o.uid.get())).collect();
    let fingerprints: Vec<&str> = orphans.iter().map(|o| o.fingerprint.as_str()).collect();
    client
        .execute(
            "INSERT INTO orphans (entry_id, target_folder, target_uid_validity, target_uid,
                 fingerprint)
             SELECT $1, x.f, x.v, x.u, x.fp
             FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[]) AS x(f, v, u, fp)
             ON CONFLICT DO NOTHING",
            &[&entry.as_str(), &folders, &validities, &uids, &fingerprints],
        )
        .db()?;
    Ok(())
}

pub fn orphans(client: &mut Client, entry: &EntryId) -> Result<Vec<Orphan>> {
    client
        .query(
            "SELECT target_folder, target_uid_validity, target_uid, fingerprint FROM orphans
             WHERE entry_id = $1 ORDER BY target_folder, target_uid_validity, target_uid",
            &[&entry.as_str()],
        )
        .db()?
        .iter()
        .map(|r| {
            Ok(Orphan {
                target_folder: r.text(0)?,
                uid_validity: r.nz(1, UidValidity::new)?,
                uid: r.nz(2, Uid::new)?,
                fingerprint: Fingerprint::new(r.text(3)?),
            })
        })
        .collect()
}

pub fn drop_orphan(client: &mut Client, entry: &EntryId, o: &Orphan) -> Result<()> {
    client
        .execute(
            "DELETE FROM orphans WHERE entry_id = $1 AND target_folder = $2
             AND target_uid_validity = $3 AND target_uid = $4",
            &[
                &entry.as_str(),
                &o.target_folder,
                &i64::from(o.uid_validity.get()),
                &i64::from(o.uid.get()),
            ],
        )
        .db()?;
    Ok(())
}

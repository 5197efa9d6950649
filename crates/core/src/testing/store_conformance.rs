//! What every implementation of the [`Store`] port must do, as one test per behaviour.
//!
//! Each `pub fn` here takes a fresh, empty store and checks one rule of the port's contract;
//! [`store_conformance!`](crate::store_conformance) turns them into `#[test]`s for a store
//! constructor, so the SQLite store, the in-memory one and any later backend are held to the
//! same rules:
//!
//! ```ignore
//! mod conformance {
//!     mailferry_core::store_conformance!(Box::new(SqliteStore::open_in_memory().unwrap()));
//! }
//! ```
//!
//! Ledger rows of one query are compared after sorting where the port promises no order
//! beyond the UID.

use std::time::Duration;

use crate::model::{
    Checkpoint, Entry, EntryId, EntryState, Failure, Fingerprint, Flags, KeywordsDropped,
    LedgerRow, LedgerState, MailboxId, Origin, RefreshLine, RefreshRecord, RefreshResult, RunEntry,
    RunId, RunKind, Side, Uid,
};
use crate::ports::store::{
    AfterPass, Lease, LeaseHolder, MetaKey, NoRoom, Orphan, PassProgress, Refusal, Result,
    ServerUse, Store, StoreErrorKind, WorkerStats,
};

/// Expands to one `#[test]` per rule of the [`Store`](crate::ports::Store) port, each run on
/// the store `$make` makes (an expression of type `Box<dyn Store>`, evaluated once per test).
/// Invoke it in a module of its own: the tests take the rules' names.
#[macro_export]
macro_rules! store_conformance {
    ($make:expr) => {
        $crate::store_conformance!(@tests $make;
            upsert_adds_then_updates_keeping_ledger_and_state,
            upsert_applies_a_whole_batch,
            entries_are_listed_by_id,
            entry_text_values_round_trip,
            missing_source_ids_are_the_flagged_entries,
            insert_pending_records_intents,
            insert_pending_of_an_existing_key_is_an_error_and_changes_nothing,
            complete_marks_intents_copied_and_forgets_refused_ones,
            set_flags_changes_only_the_named_rows,
            rekey_moves_rows_to_their_new_keys,
            a_rekey_onto_a_held_key_is_refused_whole,
            gone_rows_are_marked_listed_and_cleared_by_a_rekey,
            ledger_folder_holds_every_uidvalidity_of_one_folder,
            ledger_uids_are_one_folder_and_uidvalidity_in_the_ranges,
            target_uids_are_the_known_uids_of_one_target_folder,
            ledgers_are_per_entry,
            checkpoints_overwrite,
            every_checkpoint_of_an_entry_is_listed_by_folder,
            copied_bytes_are_the_sizes_of_copied_rows_per_entry,
            an_imported_run_keeps_its_times,
            runs_start_finish_and_the_last_of_a_kind,
            every_run_is_listed_newest_first,
            a_second_line_for_an_entry_in_a_run_replaces_the_first,
            failures_are_kept_per_run,
            set_entry_result_counts_failed_from_that_run_only,
            refresh_records_round_trip_with_lines_in_order,
            every_refresh_is_listed_and_read_by_its_id,
            meta_values_overwrite,
            remove_entries_removes_ledger_and_checkpoints_too,
            a_second_holder_is_refused_with_the_first_holders_name_and_epoch,
            an_expired_lease_is_taken_with_a_higher_epoch,
            take_over_only_from_the_stated_epoch,
            renew_of_a_lost_lease_is_an_error,
            release_lets_another_holder_in_and_epochs_keep_growing,
            leases_are_per_entry,
            two_holders_cannot_exceed_a_servers_cap,
            the_per_mailbox_cap_counts_only_that_mailbox_on_that_server,
            both_sides_on_one_server_count_together_and_a_pass_too_big_runs_alone,
            a_claim_refused_for_room_records_nothing,
            an_entry_s_own_earlier_lease_does_not_count_against_its_new_claim,
            a_held_entry_is_refused_as_held_even_when_its_server_is_full,
            progress_is_shown_while_a_lease_lives,
            fenced_writes_are_refused_once_the_claim_is_taken_over,
            orphans_are_recorded_by_a_lost_holder_listed_and_dropped,
            a_live_pass_shows_how_long_ago_its_claim_was_renewed,
            an_entry_is_queued_once_keeping_its_place_and_first_time,
            dequeue_takes_an_entry_off_only_if_it_was_not_queued_again,
            removed_entries_leave_the_queue,
            a_deferred_entry_waits_for_every_worker_and_counts_its_failures,
            a_queued_pass_is_recorded_with_its_queue_change,
            workers_register_heartbeat_and_deregister,
        );
    };
    (@tests $make:expr; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() -> ::std::result::Result<(), $crate::ports::StoreError> {
                $crate::testing::store_conformance::$name($make)
            }
        )+
    };
}

const HOUR: Duration = Duration::from_secs(3600);

fn entry(id: &str) -> Entry {
    let mut e = Entry::new(id.into(), format!("{id}-login"), Origin::Csv);
    e.target_login = Some(format!("{id}@new.example"));
    e
}

fn row(folder: &str, uid_validity: u32, uid: u32) -> LedgerRow {
    LedgerRow {
        source_folder: folder.into(),
        uid_validity: super::validity(uid_validity),
        uid: super::uid(uid),
        target_folder: format!("T/{folder}"),
        target_uid: None,
        target_uidnext: Some(40),
        fingerprint: Fingerprint::new(format!("fp-{folder}-{uid_validity}-{uid}")),
        size: 100 + u64::from(uid),
        flags: Flags::from_server(["\\Seen"]),
        state: LedgerState::Pending,
    }
}

fn copied(mut r: LedgerRow, target_uid: u32) -> LedgerRow {
    r.state = LedgerState::Copied;
    r.target_uid = Some(super::uid(target_uid));
    r.target_uidnext = None;
    r
}

/// Inserts intents and completes them all, with target UIDs from `first_target_uid` up.
fn copy_rows(
    s: &mut dyn Store,
    id: &EntryId,
    rows: &[LedgerRow],
    first_target_uid: u32,
) -> Result<()> {
    s.insert_pending(id, rows)?;
    let done: Vec<(&LedgerRow, Option<Uid>)> = rows
        .iter()
        .zip(first_target_uid..)
        .map(|(r, u)| (r, Some(super::uid(u))))
        .collect();
    s.complete(id, &done, &[])
}

fn sorted(mut rows: Vec<LedgerRow>) -> Vec<LedgerRow> {
    rows.sort_by(|a, b| {
        (&a.source_folder, a.uid_validity, a.uid).cmp(&(&b.source_folder, b.uid_validity, b.uid))
    });
    rows
}

fn failure(entry: &str, folder: &str, uid: u32, reason: &str) -> Failure {
    Failure {
        entry_id: entry.into(),
        folder: folder.into(),
        uid: Some(super::uid(uid)),
        size: Some(2048),
        message_id: Some(format!("<{uid}@old.example>")),
        reason: reason.into(),
    }
}

fn expect_lease(got: std::result::Result<Lease, LeaseHolder>) -> Lease {
    match got {
        Ok(lease) => lease,
        Err(h) => panic!(
            "the lease was refused: {} holds it (epoch {})",
            h.holder, h.epoch
        ),
    }
}

fn expect_refusal(got: std::result::Result<Lease, LeaseHolder>) -> LeaseHolder {
    match got {
        Ok(lease) => panic!(
            "the lease was granted to {} (epoch {})",
            lease.holder, lease.epoch
        ),
        Err(h) => h,
    }
}

/// One side of a pass: one connection to `mailbox` on `server`, capped at `cap` connections
/// on the server and `per_mailbox` on the mailbox.
fn on(server: &str, mailbox: &str, cap: u32, per_mailbox: Option<u32>) -> ServerUse {
    ServerUse {
        server: server.into(),
        mailbox: mailbox.into(),
        connections: 1,
        max_connections: cap,
        max_per_mailbox: per_mailbox,
    }
}

fn expect_claim(got: std::result::Result<Lease, Refusal>) -> Lease {
    match got {
        Ok(lease) => lease,
        Err(r) => panic!("the claim was refused: {r:?}"),
    }
}

fn expect_full(got: std::result::Result<Lease, Refusal>) -> NoRoom {
    match got {
        Err(Refusal::Full(full)) => full,
        other => panic!("the claim was not refused for room: {other:?}"),
    }
}

// ---------------------------------------------------------------- entries

pub fn upsert_adds_then_updates_keeping_ledger_and_state(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    assert_eq!(s.upsert_entries(&[entry("u1")])?, (1, 0));
    copy_rows(s.as_mut(), &id, &[row("INBOX", 7, 1)], 10)?;
    let run = s.start_run(RunKind::Migrate)?;
    s.set_entry_result(
        run,
        &id,
        EntryState::Partial,
        "2026-01-02T03:04:05Z",
        Some("why"),
    )?;

    // An edited job: new login and addresses, and the values a pass records given as if new.
    let mut edited = entry("u1");
    edited.source_login = "renamed".into();
    edited.source_addresses = vec!["a@old.example".into()];
    edited.state = EntryState::New;
    edited.copied = 0;
    assert_eq!(s.upsert_entries(&[edited, entry("u2")])?, (1, 1));

    let entries = s.entries()?;
    let e = &entries[0];
    assert_eq!(e.source_login, "renamed");
    assert_eq!(e.source_addresses, ["a@old.example"]);
    assert_eq!(e.state, EntryState::Partial);
    assert_eq!(e.copied, 1);
    assert_eq!(e.last_pass.as_deref(), Some("2026-01-02T03:04:05Z"));
    assert_eq!(e.last_error.as_deref(), Some("why"));
    assert_eq!(s.ledger_all(&id)?, [copied(row("INBOX", 7, 1), 10)]);
    // A new entry starts as new, whatever state it was handed with.
    assert_eq!(entries[1].state, EntryState::New);
    Ok(())
}

/// All or none: no input through the port makes a store refuse one entry of a batch, so what a
/// conformance test can see is the all — every entry of the batch, counted once, the last
/// spelling of a repeated ID winning. A store's rollback on a database error is its own test's.
pub fn upsert_applies_a_whole_batch(mut s: Box<dyn Store>) -> Result<()> {
    let batch: Vec<Entry> = (1..=50).map(|i| entry(&format!("e{i:02}"))).collect();
    assert_eq!(s.upsert_entries(&batch)?, (50, 0));
    let mut again = entry("e07");
    again.source_login = "second spelling".into();
    assert_eq!(
        s.upsert_entries(&[entry("e07"), again, entry("e51")])?,
        (1, 2)
    );
    let entries = s.entries()?;
    assert_eq!(entries.len(), 51);
    assert_eq!(entries[6].source_login, "second spelling");
    assert_eq!(s.upsert_entries(&[])?, (0, 0));
    Ok(())
}

pub fn entries_are_listed_by_id(mut s: Box<dyn Store>) -> Result<()> {
    s.upsert_entries(&[entry("c"), entry("a"), entry("b")])?;
    let ids: Vec<String> = s
        .entries()?
        .into_iter()
        .map(|e| e.id.into_string())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    Ok(())
}

pub fn entry_text_values_round_trip(mut s: Box<dyn Store>) -> Result<()> {
    let mut all = Vec::new();
    for (i, origin) in Origin::ALL.iter().enumerate() {
        let mut e = Entry::new(
            EntryId::new(format!("{i}-2f1c9a3e-Ünïcødé")),
            format!("josé.müller{i}"),
            *origin,
        );
        e.source_addresses = vec![
            format!("José.Müller{i}@old.example"),
            "alias@old.example".into(),
        ];
        e.target_login = (i % 2 == 0).then(|| format!("jm{i}@new.example"));
        e.target_addresses = vec![format!("JM{i}@new.example")];
        e.stage = (i % 3 != 0).then_some(u32::try_from(i).unwrap_or(0) * 1000);
        e.source_display_name = Some("Müller, José \"JM\" 🐟".into());
        e.target_id = Some(MailboxId::new("{6F9619FF-8B86-D011-B42D-00C04FC964FF}"));
        e.match_note = Some("two target mailboxes have jm@new.example".into());
        e.missing_source = i % 2 == 1;
        all.push(e);
    }
    let mut plain = entry("z-plain");
    plain.target_login = None;
    all.push(plain);
    s.upsert_entries(&all)?;
    assert_eq!(s.entries()?, all);

    let run = s.start_run(RunKind::Migrate)?;
    for (state, id) in EntryState::ALL.iter().zip(&all) {
        s.set_entry_result(
            run,
            &id.id,
            *state,
            "2026-12-31T23:59:59Z",
            Some("Zugriff verweigert"),
        )?;
    }
    let stored = s.entries()?;
    for (state, e) in EntryState::ALL.iter().zip(&stored) {
        assert_eq!(e.state, *state);
        assert_eq!(e.last_error.as_deref(), Some("Zugriff verweigert"));
    }
    Ok(())
}

pub fn missing_source_ids_are_the_flagged_entries(mut s: Box<dyn Store>) -> Result<()> {
    let mut gone = entry("b");
    gone.missing_source = true;
    let mut gone_too = entry("a");
    gone_too.missing_source = true;
    s.upsert_entries(&[gone, entry("c"), gone_too])?;
    assert_eq!(
        s.missing_source_ids()?,
        [EntryId::from("a"), EntryId::from("b")]
    );
    Ok(())
}

// ---------------------------------------------------------------- ledger

pub fn insert_pending_records_intents(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    let mut with_uid = row("INBOX", 7, 2);
    // An intent has no target UID yet: one handed in is not kept.
    with_uid.target_uid = Some(super::uid(99));
    s.insert_pending(&id, &[row("INBOX", 7, 1), with_uid])?;
    let pending = s.ledger_pending(&id)?;
    assert_eq!(pending, [row("INBOX", 7, 1), row("INBOX", 7, 2)]);
    assert_eq!(pending[0].target_uidnext, Some(40));
    assert!(pending.iter().all(LedgerRow::is_pending));
    assert!(s.target_uids(&id, "T/INBOX")?.is_empty());
    Ok(())
}

pub fn insert_pending_of_an_existing_key_is_an_error_and_changes_nothing(
    mut s: Box<dyn Store>,
) -> Result<()> {
    let id = EntryId::from("u1");
    copy_rows(s.as_mut(), &id, &[row("INBOX", 7, 1)], 10)?;
    s.insert_pending(&id, &[row("INBOX", 7, 2)])?;
    let before = s.ledger_all(&id)?;

    // A new row first, then one the ledger has (copied), then one it has (pending).
    let mut dup = row("INBOX", 7, 1);
    dup.fingerprint = "another".into();
    assert!(s.insert_pending(&id, &[row("INBOX", 7, 3), dup]).is_err());
    assert!(
        s.insert_pending(&id, &[row("INBOX", 7, 4), row("INBOX", 7, 2)])
            .is_err()
    );
    assert_eq!(s.ledger_all(&id)?, before);
    // The same UID under another UIDVALIDITY or in another folder is another message.
    s.insert_pending(&id, &[row("INBOX", 8, 1), row("Sent", 7, 1)])?;
    assert_eq!(s.ledger_all(&id)?.len(), 4);
    Ok(())
}

pub fn complete_marks_intents_copied_and_forgets_refused_ones(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    let rows = [row("INBOX", 7, 1), row("INBOX", 7, 2), row("INBOX", 7, 3)];
    s.insert_pending(&id, &rows)?;
    // Stored with a UID, stored without one (no UIDPLUS), refused.
    s.complete(
        &id,
        &[(&rows[0], Some(super::uid(41))), (&rows[1], None)],
        &[&rows[2]],
    )?;
    let mut no_uid = copied(rows[1].clone(), 1);
    no_uid.target_uid = None;
    assert_eq!(s.ledger_all(&id)?, [copied(rows[0].clone(), 41), no_uid]);
    assert!(s.ledger_pending(&id)?.is_empty());
    // The refused one can be tried again.
    s.insert_pending(&id, &[rows[2].clone()])?;
    assert_eq!(s.ledger_pending(&id)?, [rows[2].clone()]);
    Ok(())
}

pub fn set_flags_changes_only_the_named_rows(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    let rows = [row("INBOX", 7, 1), row("INBOX", 7, 2)];
    copy_rows(s.as_mut(), &id, &rows, 10)?;
    let flagged = Flags::from_server(["\\Seen", "\\Flagged", "$Label1"]);
    s.set_flags(&id, &[(&rows[1], flagged.clone())])?;
    let all = s.ledger_all(&id)?;
    assert_eq!(all[0].flags, Flags::from_server(["\\Seen"]));
    assert_eq!(all[1].flags, flagged);
    s.set_flags(&id, &[(&rows[0], Flags::default())])?;
    assert!(s.ledger_all(&id)?[0].flags.is_empty());
    // Several rows at once, each with its own flags; another entry's rows are left alone.
    let other = EntryId::from("u2");
    copy_rows(s.as_mut(), &other, &rows, 10)?;
    let answered = Flags::from_server(["\\Answered"]);
    s.set_flags(
        &id,
        &[(&rows[0], answered.clone()), (&rows[1], Flags::default())],
    )?;
    let all = s.ledger_all(&id)?;
    assert_eq!(
        (&all[0].flags, &all[1].flags),
        (&answered, &Flags::default())
    );
    let theirs = s.ledger_all(&other)?;
    assert_eq!(theirs[0].flags, Flags::from_server(["\\Seen"]));
    assert_eq!(theirs[1].flags, Flags::from_server(["\\Seen"]));
    Ok(())
}

pub fn rekey_moves_rows_to_their_new_keys(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    let rows = [row("INBOX", 7, 1), row("INBOX", 7, 2), row("INBOX", 7, 3)];
    copy_rows(s.as_mut(), &id, &rows, 10)?;
    let old: Vec<LedgerRow> = s.ledger_all(&id)?;
    // One moved to another folder (and on the target), one renumbered in place.
    let mut moved = old[0].clone();
    moved.source_folder = "Archive".into();
    moved.uid = super::uid(5);
    moved.target_folder = "T/Archive".into();
    moved.target_uid = Some(super::uid(3));
    // Its flags changed on the source too: the new row's flags are kept.
    moved.flags = Flags::from_stored("\\Flagged \\Seen");
    let mut renumbered = old[1].clone();
    renumbered.uid_validity = super::validity(8);
    renumbered.uid = super::uid(1);
    s.rekey(
        &id,
        &[
            (old[0].clone(), moved.clone()),
            (old[1].clone(), renumbered.clone()),
        ],
    )?;

    assert_eq!(
        sorted(s.ledger_all(&id)?),
        sorted(vec![moved.clone(), renumbered, old[2].clone()])
    );
    assert_eq!(s.ledger_folder(&id, "Archive")?, [moved]);
    // Fingerprint, size and state travel with the row; the flags are the new row's.
    let a = &s.ledger_folder(&id, "Archive")?[0];
    assert_eq!(
        (&a.fingerprint, a.size, a.state),
        (&old[0].fingerprint, old[0].size, LedgerState::Copied)
    );
    let mut uids = s.target_uids(&id, "T/INBOX")?;
    uids.sort_unstable();
    assert_eq!(uids, [super::uid(11), super::uid(12)]);
    Ok(())
}

pub fn a_rekey_onto_a_held_key_is_refused_whole(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    let rows = [row("INBOX", 7, 1), row("INBOX", 7, 2), row("Archive", 7, 1)];
    copy_rows(s.as_mut(), &id, &rows, 10)?;
    let before = sorted(s.ledger_all(&id)?);
    // Sorted: Archive 1, INBOX 1, INBOX 2.
    let mut free = before[2].clone();
    free.uid = super::uid(9);
    // INBOX 2 onto a new key, then INBOX 1 onto Archive 1, which another row holds.
    let mut held = before[1].clone();
    held.source_folder = "Archive".into();
    held.uid = super::uid(1);
    let got = s.rekey(&id, &[(before[2].clone(), free), (before[1].clone(), held)]);
    assert!(got.is_err(), "{got:?}");
    assert_eq!(
        sorted(s.ledger_all(&id)?),
        before,
        "nothing of the call applied"
    );
    Ok(())
}

pub fn gone_rows_are_marked_listed_and_cleared_by_a_rekey(mut s: Box<dyn Store>) -> Result<()> {
    let (id, other) = (EntryId::from("u1"), EntryId::from("u2"));
    let rows = [row("INBOX", 7, 1), row("INBOX", 7, 2), row("Old", 3, 1)];
    copy_rows(s.as_mut(), &id, &rows, 10)?;
    copy_rows(s.as_mut(), &other, &rows, 10)?;
    s.insert_pending(&id, &[row("INBOX", 7, 3)])?;
    assert!(s.ledger_gone(&id)?.is_empty());
    assert_eq!(s.ledger_folders(&id)?, ["INBOX", "Old"]);

    let all = sorted(s.ledger_all(&id)?);
    let pending = s.ledger_pending(&id)?;
    // INBOX 1 and Old 1 marked; a pending row and a row the ledger lacks are left alone;
    // marking twice is once.
    let absent = copied(row("INBOX", 7, 9), 99);
    let marked = [all[0].clone(), all[3].clone(), pending[0].clone(), absent];
    s.mark_gone(&id, &marked)?;
    s.mark_gone(&id, &marked[..1])?;
    let want = vec![all[0].clone(), all[3].clone()];
    assert_eq!(sorted(s.ledger_gone(&id)?), want);
    assert!(s.ledger_gone(&other)?.is_empty(), "per entry");
    // Marked rows are still the ledger's: the copy is on the target.
    assert_eq!(s.ledger_all(&id)?.len(), 4);
    assert_eq!(s.ledger_folders(&id)?, ["INBOX", "Old"]);

    // Found again elsewhere: the re-keyed row is no longer gone.
    let mut refiled = want[0].clone();
    refiled.source_folder = "Archive".into();
    refiled.uid = super::uid(4);
    s.rekey(&id, &[(want[0].clone(), refiled)])?;
    assert_eq!(s.ledger_gone(&id)?, [want[1].clone()]);
    Ok(())
}

pub fn ledger_uids_are_one_folder_and_uidvalidity_in_the_ranges(
    mut s: Box<dyn Store>,
) -> Result<()> {
    let (id, other) = (EntryId::from("u1"), EntryId::from("u2"));
    let rows = [
        row("INBOX", 7, 1),
        row("INBOX", 7, 2),
        row("INBOX", 7, 5),
        row("INBOX", 7, 9),
        row("INBOX", 8, 2),
        row("Old", 7, 2),
    ];
    copy_rows(s.as_mut(), &id, &rows, 10)?;
    copy_rows(s.as_mut(), &other, &rows, 10)?;
    let r = |a, b| (super::uid(a), super::uid(b));
    let got = s.ledger_uids(
        &id,
        "INBOX",
        super::validity(7),
        &[r(2, 5), r(9, 9), r(20, 30)],
    )?;
    assert_eq!(
        got.iter()
            .map(|r| (r.source_folder.as_str(), r.uid_validity, r.uid))
            .collect::<Vec<_>>(),
        [2, 5, 9].map(|u| ("INBOX", super::validity(7), super::uid(u)))
    );
    // The whole row, as the folder's read gives it.
    let whole = s
        .ledger_folder(&id, "INBOX")?
        .into_iter()
        .find(|x| x.uid_validity == super::validity(7) && x.uid == super::uid(2));
    assert_eq!(Some(&got[0]), whole.as_ref());
    assert!(
        s.ledger_uids(&id, "INBOX", super::validity(7), &[])?
            .is_empty()
    );
    Ok(())
}

pub fn ledger_folder_holds_every_uidvalidity_of_one_folder(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    copy_rows(
        s.as_mut(),
        &id,
        &[
            row("INBOX", 7, 3),
            row("INBOX", 6, 1),
            row("Sent", 7, 2),
            row("INBOX", 7, 2),
        ],
        10,
    )?;
    let inbox = s.ledger_folder(&id, "INBOX")?;
    let keys: Vec<(u32, u32)> = inbox
        .iter()
        .map(|r| (r.uid_validity.get(), r.uid.get()))
        .collect();
    // By UID.
    assert_eq!(keys, [(6, 1), (7, 2), (7, 3)]);
    assert_eq!(s.ledger_folder(&id, "Sent")?.len(), 1);
    assert!(s.ledger_folder(&id, "Drafts")?.is_empty());
    Ok(())
}

pub fn target_uids_are_the_known_uids_of_one_target_folder(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    let rows = [row("INBOX", 7, 1), row("INBOX", 7, 2), row("Sent", 7, 3)];
    copy_rows(s.as_mut(), &id, &rows, 20)?;
    // A pending intent and a copy without a UID name no target message.
    s.insert_pending(&id, &[row("INBOX", 7, 4)])?;
    let no_uid = row("INBOX", 7, 5);
    s.insert_pending(&id, std::slice::from_ref(&no_uid))?;
    s.complete(&id, &[(&no_uid, None)], &[])?;
    let mut uids = s.target_uids(&id, "T/INBOX")?;
    uids.sort_unstable();
    assert_eq!(uids, [super::uid(20), super::uid(21)]);
    assert_eq!(s.target_uids(&id, "T/Sent")?, [super::uid(22)]);
    assert!(s.target_uids(&id, "INBOX")?.is_empty());
    Ok(())
}

pub fn ledgers_are_per_entry(mut s: Box<dyn Store>) -> Result<()> {
    let (a, b) = (EntryId::from("a"), EntryId::from("b"));
    copy_rows(s.as_mut(), &a, &[row("INBOX", 7, 1)], 10)?;
    // The same source key for another entry is another message.
    s.insert_pending(&b, &[row("INBOX", 7, 1)])?;
    assert_eq!(s.ledger_all(&a)?.len(), 1);
    assert_eq!(s.ledger_pending(&b)?.len(), 1);
    assert!(s.ledger_pending(&a)?.is_empty());
    assert!(s.target_uids(&b, "T/INBOX")?.is_empty());
    Ok(())
}

// ---------------------------------------------------------------- checkpoints

pub fn checkpoints_overwrite(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    assert_eq!(s.checkpoint(&id, "INBOX")?, None);
    let first = Checkpoint {
        uid_validity: 7,
        uid_next: 10,
        messages: 9,
        highest_modseq: Some(u64::from(u32::MAX) + 5),
        filter: "since=None;until=None;skip_deleted=true".into(),
    };
    s.set_checkpoint(&id, "INBOX", &first)?;
    assert_eq!(s.checkpoint(&id, "INBOX")?, Some(first.clone()));
    let second = Checkpoint {
        uid_next: 12,
        messages: 11,
        highest_modseq: None,
        ..first.clone()
    };
    s.set_checkpoint(&id, "INBOX", &second)?;
    assert_eq!(s.checkpoint(&id, "INBOX")?, Some(second));
    assert_eq!(s.checkpoint(&id, "Sent")?, None);
    assert_eq!(s.checkpoint(&"u2".into(), "INBOX")?, None);
    Ok(())
}

// ---------------------------------------------------------------- runs

pub fn runs_start_finish_and_the_last_of_a_kind(mut s: Box<dyn Store>) -> Result<()> {
    assert_eq!(s.last_run(RunKind::Migrate)?, None);
    let first = s.start_run(RunKind::Migrate)?;
    s.finish_run(first)?;
    let second = s.start_run(RunKind::Migrate)?;
    assert!(second > first);
    let last = s
        .last_run(RunKind::Migrate)?
        .unwrap_or_else(|| panic!("no last run"));
    assert_eq!(last.id, second);
    assert!(!last.started.is_empty());
    assert_eq!(last.finished, None);
    s.finish_run(second)?;
    let last = s
        .last_run(RunKind::Migrate)?
        .unwrap_or_else(|| panic!("no last run"));
    assert!(last.finished.is_some_and(|f| f >= last.started));
    Ok(())
}

pub fn every_run_is_listed_newest_first(mut s: Box<dyn Store>) -> Result<()> {
    assert_eq!(s.runs(RunKind::Migrate)?, Vec::new());
    let first = s.start_run(RunKind::Migrate)?;
    s.finish_run(first)?;
    let second = s.start_run(RunKind::Migrate)?;
    let runs = s.runs(RunKind::Migrate)?;
    let ids: Vec<RunId> = runs.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![second, first]);
    assert!(runs[1].finished.is_some());
    assert_eq!(runs[0].finished, None);
    assert_eq!(s.last_run(RunKind::Migrate)?.as_ref(), runs.first());
    Ok(())
}

pub fn a_second_line_for_an_entry_in_a_run_replaces_the_first(mut s: Box<dyn Store>) -> Result<()> {
    let run = s.start_run(RunKind::Migrate)?;
    let mut line = RunEntry::new("b".into());
    line.state = EntryState::Failed;
    line.error = Some("target: connection lost".into());
    line.keywords_dropped = vec![KeywordsDropped {
        folder: "Old".into(),
        count: 9,
    }];
    line.throttled_seconds = 99.0;
    s.record_run_entry(run, &line)?;
    let other = RunEntry {
        state: EntryState::Migrated,
        copied: 3,
        // What a pass adds to its counts is kept with them: the keywords the target dropped
        // per folder (names as the server gave them) and the time waited on throttling.
        keywords_dropped: vec![
            KeywordsDropped {
                folder: "INBOX".into(),
                count: 2,
            },
            KeywordsDropped {
                folder: "Büro/\"quoted\" [x]".into(),
                count: 1 << 40,
            },
        ],
        throttled_seconds: 12.5,
        ..RunEntry::new("a".into())
    };
    s.record_run_entry(run, &other)?;
    let again = RunEntry {
        state: EntryState::Partial,
        copied: 7,
        skipped: 2,
        failed: 1,
        bytes: 1 << 33,
        moved: 4,
        flags_updated: 5,
        seconds: 1.5,
        error: None,
        keywords_dropped: Vec::new(),
        throttled_seconds: 0.0,
        ..line
    };
    s.record_run_entry(run, &again)?;
    // By entry ID.
    assert_eq!(s.run_entries(run)?, [other, again]);
    let next = s.start_run(RunKind::Migrate)?;
    assert!(s.run_entries(next)?.is_empty());
    Ok(())
}

pub fn failures_are_kept_per_run(mut s: Box<dyn Store>) -> Result<()> {
    let first = s.start_run(RunKind::Migrate)?;
    let second = s.start_run(RunKind::Migrate)?;
    let words = "[LIMIT] Message too large (max 10 MB)";
    s.record_failure(first, &failure("b", "INBOX", 4, words))?;
    s.record_failure(
        first,
        &failure("a", "Sent", 9, "NO [OVERQUOTA] Quota exceeded"),
    )?;
    s.record_failure(first, &failure("a", "INBOX", 2, words))?;
    let no_uid = Failure {
        uid: None,
        size: None,
        message_id: None,
        ..failure("a", "INBOX", 1, "refused")
    };
    s.record_failure(first, &no_uid)?;
    s.record_failure(second, &failure("a", "INBOX", 3, words))?;
    // By entry, folder and UID (none first).
    assert_eq!(
        s.failures(first)?,
        [
            no_uid,
            failure("a", "INBOX", 2, words),
            failure("a", "Sent", 9, "NO [OVERQUOTA] Quota exceeded"),
            failure("b", "INBOX", 4, words),
        ]
    );
    assert_eq!(s.failures(second)?, [failure("a", "INBOX", 3, words)]);
    Ok(())
}

pub fn set_entry_result_counts_failed_from_that_run_only(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    s.upsert_entries(&[entry("u1"), entry("u2")])?;
    let rows = [row("INBOX", 7, 1), row("INBOX", 7, 2), row("INBOX", 7, 3)];
    copy_rows(s.as_mut(), &id, &rows[..2], 10)?;
    // A pending intent is not a copy.
    s.insert_pending(&id, &rows[2..])?;
    let first = s.start_run(RunKind::Migrate)?;
    s.record_failure(first, &failure("u1", "INBOX", 4, "refused"))?;
    s.record_failure(first, &failure("u1", "INBOX", 5, "refused"))?;
    s.record_failure(first, &failure("u2", "INBOX", 6, "refused"))?;
    // A newer run (another process's, or the next one) with its own failure.
    let second = s.start_run(RunKind::Migrate)?;
    s.record_failure(second, &failure("u1", "INBOX", 4, "refused"))?;

    s.set_entry_result(
        first,
        &id,
        EntryState::Partial,
        "2026-01-01T00:00:00Z",
        None,
    )?;
    let e = &s.entries()?[0];
    assert_eq!((e.state, e.copied, e.failed), (EntryState::Partial, 2, 2));
    assert_eq!(e.last_pass.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert_eq!(e.last_error, None);

    s.set_entry_result(
        second,
        &id,
        EntryState::Partial,
        "2026-01-02T00:00:00Z",
        None,
    )?;
    assert_eq!(s.entries()?[0].failed, 1);
    let third = s.start_run(RunKind::Migrate)?;
    s.set_entry_result(
        third,
        &id,
        EntryState::Failed,
        "2026-01-03T00:00:00Z",
        Some("gone"),
    )?;
    let e = &s.entries()?[0];
    assert_eq!((e.state, e.copied, e.failed), (EntryState::Failed, 2, 0));
    assert_eq!(e.last_error.as_deref(), Some("gone"));
    Ok(())
}

// ---------------------------------------------------------------- refresh and meta

pub fn refresh_records_round_trip_with_lines_in_order(mut s: Box<dyn Store>) -> Result<()> {
    assert_eq!(s.last_refresh()?, None);
    let line = |side, result, entry: &str, before: &[&str], after: &[&str]| RefreshLine {
        side,
        result,
        entry: entry.into(),
        id: (result != RefreshResult::Missing).then(|| MailboxId::new(format!("id-{entry}"))),
        before: before.iter().map(|a| (*a).to_string()).collect(),
        after: after.iter().map(|a| (*a).to_string()).collect(),
    };
    let first = RefreshRecord {
        started: "2026-03-01T10:00:00Z".into(),
        source_available: true,
        source_reason: None,
        target_available: false,
        target_reason: Some("ldaps://new.example: Invalid credentials".into()),
        lines: vec![line(
            Side::Source,
            RefreshResult::NotChanged,
            "a",
            &["a@o"],
            &["a@o"],
        )],
    };
    s.record_refresh(&first)?;
    assert_eq!(s.last_refresh()?, Some(first));
    let second = RefreshRecord {
        started: "2026-03-02T10:00:00Z".into(),
        source_available: true,
        source_reason: None,
        target_available: true,
        target_reason: None,
        // Not in any sorted order: the store keeps the order given.
        lines: vec![
            line(
                Side::Target,
                RefreshResult::Refreshed,
                "z",
                &["old@n"],
                &["new@n", "Alias@n"],
            ),
            line(Side::Source, RefreshResult::Missing, "m", &["m@o"], &[]),
            line(Side::Target, RefreshResult::NotCreated, "b", &[], &[]),
            line(
                Side::Source,
                RefreshResult::Refreshed,
                "a",
                &["a@o"],
                &["Ä@ö.example"],
            ),
            line(Side::Target, RefreshResult::Manual, "c", &["c@n"], &["c@n"]),
        ],
    };
    s.record_refresh(&second)?;
    assert_eq!(s.last_refresh()?, Some(second));
    Ok(())
}

pub fn every_refresh_is_listed_and_read_by_its_id(mut s: Box<dyn Store>) -> Result<()> {
    assert_eq!(s.refreshes()?, Vec::new());
    let record = |day: &str, entry: &str| RefreshRecord {
        started: format!("2026-03-0{day}T10:00:00Z"),
        source_available: true,
        source_reason: None,
        target_available: true,
        target_reason: None,
        lines: vec![RefreshLine {
            side: Side::Source,
            result: RefreshResult::NotChanged,
            entry: entry.into(),
            id: Some(MailboxId::new(format!("id-{entry}"))),
            before: vec![format!("{entry}@o")],
            after: vec![format!("{entry}@o")],
        }],
    };
    let (one, two) = (record("1", "a"), record("2", "b"));
    let first = s.record_refresh(&one)?;
    let second = s.record_refresh(&two)?;
    assert!(second > first);
    let listed = s.refreshes()?;
    let ids: Vec<RunId> = listed.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![second, first]);
    assert_eq!(listed[1].started, one.started);
    assert_eq!(s.refresh_record(first)?, Some(one));
    assert_eq!(s.refresh_record(second)?, Some(two.clone()));
    assert_eq!(s.last_refresh()?, Some(two));
    assert_eq!(s.refresh_record(RunId(second.0 + 100))?, None);
    Ok(())
}

pub fn meta_values_overwrite(mut s: Box<dyn Store>) -> Result<()> {
    assert_eq!(s.meta(MetaKey::JobFileSha256)?, None);
    s.set_meta(MetaKey::JobFileSha256, "abc")?;
    assert_eq!(s.meta(MetaKey::JobFileSha256)?.as_deref(), Some("abc"));
    s.set_meta(MetaKey::JobFileSha256, "def")?;
    assert_eq!(s.meta(MetaKey::JobFileSha256)?.as_deref(), Some("def"));
    Ok(())
}

pub fn remove_entries_removes_ledger_and_checkpoints_too(mut s: Box<dyn Store>) -> Result<()> {
    let (a, b, c) = (EntryId::from("a"), EntryId::from("b"), EntryId::from("c"));
    s.upsert_entries(&[entry("a"), entry("b"), entry("c")])?;
    let cp = Checkpoint {
        uid_validity: 7,
        uid_next: 3,
        messages: 2,
        highest_modseq: Some(9),
        filter: "f".into(),
    };
    for id in [&a, &b, &c] {
        copy_rows(s.as_mut(), id, &[row("INBOX", 7, 1)], 10)?;
        s.insert_pending(id, &[row("INBOX", 7, 2)])?;
        s.set_checkpoint(id, "INBOX", &cp)?;
    }
    s.remove_entries(&[a.clone(), c.clone()])?;
    assert_eq!(s.entries()?.len(), 1);
    assert_eq!(s.entries()?[0].id, b);
    for gone in [&a, &c] {
        assert!(s.ledger_all(gone)?.is_empty());
        assert_eq!(s.checkpoint(gone, "INBOX")?, None);
    }
    assert_eq!(s.ledger_all(&b)?.len(), 2);
    assert_eq!(s.checkpoint(&b, "INBOX")?, Some(cp));
    // Its history stays: a removed entry's ID re-added starts with an empty ledger.
    s.upsert_entries(&[entry("a")])?;
    assert!(s.ledger_all(&a)?.is_empty());
    assert_eq!(s.entries()?[0].copied, 0);
    Ok(())
}

// ---------------------------------------------------------------- leases

pub fn a_second_holder_is_refused_with_the_first_holders_name_and_epoch(
    mut s: Box<dyn Store>,
) -> Result<()> {
    let id = EntryId::from("u1");
    let first = expect_lease(s.lease(&id, "host-a:100", HOUR)?);
    assert_eq!(
        (first.entry.as_str(), first.holder.as_str()),
        ("u1", "host-a:100")
    );
    let refused = expect_refusal(s.lease(&id, "host-b:200", HOUR)?);
    assert_eq!(refused.holder, "host-a:100");
    assert_eq!(refused.epoch, first.epoch);
    assert!(!refused.since.is_empty());
    Ok(())
}

pub fn an_expired_lease_is_taken_with_a_higher_epoch(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    // A holder that stopped renewing: its claim lasted no time at all.
    let stale = expect_lease(s.lease(&id, "host-a:100", Duration::ZERO)?);
    std::thread::sleep(Duration::from_millis(5));
    let taken = expect_lease(s.lease(&id, "host-b:200", HOUR)?);
    assert_eq!(taken.holder, "host-b:200");
    assert!(taken.epoch > stale.epoch);
    // And the new claim holds.
    let refused = expect_refusal(s.lease(&id, "host-a:100", HOUR)?);
    assert_eq!(
        (refused.holder.as_str(), refused.epoch),
        ("host-b:200", taken.epoch)
    );
    Ok(())
}

pub fn take_over_only_from_the_stated_epoch(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    let gone = expect_lease(s.lease(&id, "host-a:100", HOUR)?);
    // Another process took it over first: a take-over from the old epoch is refused and
    // names the new holder.
    let first = expect_lease(s.take_over(&id, "host-b:200", HOUR, gone.epoch)?);
    assert!(first.epoch > gone.epoch);
    let late = expect_refusal(s.take_over(&id, "host-c:300", HOUR, gone.epoch)?);
    assert_eq!(
        (late.holder.as_str(), late.epoch),
        ("host-b:200", first.epoch)
    );
    // From the current epoch it succeeds, though that claim has not expired.
    let second = expect_lease(s.take_over(&id, "host-c:300", HOUR, first.epoch)?);
    assert!(second.epoch > first.epoch);
    assert_eq!(second.holder, "host-c:300");
    Ok(())
}

pub fn renew_of_a_lost_lease_is_an_error(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    let mine = expect_lease(s.lease(&id, "host-a:100", HOUR)?);
    s.renew(&mine, HOUR)?;
    let theirs = expect_lease(s.take_over(&id, "host-b:200", HOUR, mine.epoch)?);
    assert!(s.renew(&mine, HOUR).is_err());
    // The loser's failed renewal leaves the winner's claim as it was.
    s.renew(&theirs, HOUR)?;
    let refused = expect_refusal(s.lease(&id, "host-a:100", HOUR)?);
    assert_eq!(refused.epoch, theirs.epoch);
    Ok(())
}

pub fn release_lets_another_holder_in_and_epochs_keep_growing(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    let mut last = 0;
    for holder in ["host-a:1", "host-b:2", "host-a:3", "host-c:4"] {
        let lease = expect_lease(s.lease(&id, holder, HOUR)?);
        assert!(lease.epoch > last, "epoch {} after {last}", lease.epoch);
        last = lease.epoch;
        s.release(&lease)?;
    }
    // Releasing a claim already lost leaves the new holder's alone.
    let old = expect_lease(s.lease(&id, "host-a:5", Duration::ZERO)?);
    std::thread::sleep(Duration::from_millis(5));
    let new = expect_lease(s.lease(&id, "host-b:6", HOUR)?);
    s.release(&old)?;
    let refused = expect_refusal(s.lease(&id, "host-c:7", HOUR)?);
    assert_eq!(
        (refused.holder.as_str(), refused.epoch),
        ("host-b:6", new.epoch)
    );
    Ok(())
}

pub fn leases_are_per_entry(mut s: Box<dyn Store>) -> Result<()> {
    let a = expect_lease(s.lease(&"a".into(), "host-a:1", HOUR)?);
    let b = expect_lease(s.lease(&"b".into(), "host-b:2", HOUR)?);
    assert_eq!((a.entry.as_str(), b.entry.as_str()), ("a", "b"));
    s.release(&a)?;
    expect_refusal(s.lease(&"b".into(), "host-c:3", HOUR)?);
    Ok(())
}

/// Three processes (holders) claim passes that each open one connection on a target capped
/// at 2: the third waits until a live lease ends (released, or expired).
pub fn two_holders_cannot_exceed_a_servers_cap(mut s: Box<dyn Store>) -> Result<()> {
    let target = |mailbox: &str| {
        vec![
            on("old.example:993", mailbox, 10, None),
            on("new.example:993", mailbox, 2, None),
        ]
    };
    let a = expect_claim(s.claim(&"a".into(), "host-a:1", HOUR, None, &target("ana"))?);
    let b = expect_claim(s.claim(&"b".into(), "host-b:2", HOUR, None, &target("ben"))?);
    let full = expect_full(s.claim(&"c".into(), "host-c:3", HOUR, None, &target("cem"))?);
    assert_eq!(
        full,
        NoRoom {
            server: "new.example:993".into(),
            mailbox: None,
            in_use: 2,
            cap: 2,
        }
    );
    // Another holder is refused alike; the source, capped at 10, is not the one full.
    expect_full(s.claim(&"d".into(), "host-a:1", HOUR, None, &target("dan"))?);
    // A pass on other servers only is not held back.
    expect_claim(s.claim(
        &"e".into(),
        "host-c:3",
        HOUR,
        None,
        &[on("other.example:143", "eve", 1, None)],
    )?);
    // A released lease makes room for one.
    s.release(&a)?;
    let c = expect_claim(s.claim(&"c".into(), "host-c:3", HOUR, None, &target("cem"))?);
    expect_full(s.claim(&"d".into(), "host-a:1", HOUR, None, &target("dan"))?);
    // So does one that expired (its holder stopped renewing it).
    s.release(&b)?;
    s.release(&c)?;
    expect_claim(s.claim(
        &"f".into(),
        "host-a:1",
        Duration::ZERO,
        None,
        &target("fay"),
    )?);
    expect_claim(s.claim(&"g".into(), "host-b:2", HOUR, None, &target("gus"))?);
    std::thread::sleep(Duration::from_millis(5));
    expect_claim(s.claim(&"d".into(), "host-c:3", HOUR, None, &target("dan"))?);
    expect_full(s.claim(&"h".into(), "host-a:1", HOUR, None, &target("hal"))?);
    Ok(())
}

pub fn the_per_mailbox_cap_counts_only_that_mailbox_on_that_server(
    mut s: Box<dyn Store>,
) -> Result<()> {
    // Two source mailboxes merged into one target mailbox, at most one connection to it.
    let into = |from: &str, to: &str| {
        vec![
            on("old.example:993", from, 10, Some(1)),
            on("new.example:993", to, 10, Some(1)),
        ]
    };
    expect_claim(s.claim(&"a".into(), "host-a:1", HOUR, None, &into("ana", "team"))?);
    let full = expect_full(s.claim(&"b".into(), "host-b:2", HOUR, None, &into("ben", "team"))?);
    assert_eq!(
        full,
        NoRoom {
            server: "new.example:993".into(),
            mailbox: Some("team".into()),
            in_use: 1,
            cap: 1,
        }
    );
    // Another mailbox of that server has room; so has a mailbox of that name elsewhere.
    expect_claim(s.claim(&"c".into(), "host-b:2", HOUR, None, &into("cem", "cem"))?);
    expect_claim(s.claim(
        &"d".into(),
        "host-b:2",
        HOUR,
        None,
        &[on("third.example:993", "team", 10, Some(1))],
    )?);
    Ok(())
}

pub fn both_sides_on_one_server_count_together_and_a_pass_too_big_runs_alone(
    mut s: Box<dyn Store>,
) -> Result<()> {
    // Source and target are one server (a migration inside it): a pass opens two there.
    let within = |cap: u32, who: &str| {
        vec![
            on("mail.example:993", who, cap, None),
            on("mail.example:993", &format!("new-{who}"), cap, None),
        ]
    };
    let a = expect_claim(s.claim(&"a".into(), "host-a:1", HOUR, None, &within(3, "ana"))?);
    let full = expect_full(s.claim(&"b".into(), "host-b:2", HOUR, None, &within(3, "ben"))?);
    assert_eq!((full.in_use, full.cap), (2, 3));
    s.release(&a)?;
    // A cap smaller than one pass: the pass runs alone, or it would wait forever.
    let a = expect_claim(s.claim(&"a".into(), "host-a:1", HOUR, None, &within(1, "ana"))?);
    assert_eq!(
        expect_full(s.claim(&"b".into(), "host-b:2", HOUR, None, &within(1, "ben"))?).in_use,
        2
    );
    s.release(&a)?;
    expect_claim(s.claim(&"b".into(), "host-b:2", HOUR, None, &within(1, "ben"))?);
    Ok(())
}

pub fn a_claim_refused_for_room_records_nothing(mut s: Box<dyn Store>) -> Result<()> {
    let one = |who: &str| vec![on("new.example:993", who, 1, None)];
    expect_claim(s.claim(&"a".into(), "host-a:1", HOUR, None, &one("ana"))?);
    expect_full(s.claim(&"b".into(), "host-b:2", HOUR, None, &one("ben"))?);
    // No lease of b: it is not shown as passed, and anyone may claim it for another server.
    let live: Vec<String> = s
        .live_passes()?
        .into_iter()
        .map(|p| p.entry.as_str().to_string())
        .collect();
    assert_eq!(live, ["a"]);
    let b = expect_claim(s.claim(
        &"b".into(),
        "host-c:3",
        HOUR,
        None,
        &[on("other.example:993", "ben", 1, None)],
    )?);
    assert_eq!(b.epoch, 1);
    Ok(())
}

pub fn an_entry_s_own_earlier_lease_does_not_count_against_its_new_claim(
    mut s: Box<dyn Store>,
) -> Result<()> {
    let one = |who: &str| vec![on("new.example:993", who, 1, Some(1))];
    // A holder known to be gone (killed) held the only connection: the take-over replaces
    // its lease and its use.
    let gone = expect_claim(s.claim(&"a".into(), "host-dead:1", HOUR, None, &one("ana"))?);
    let taken =
        expect_claim(s.claim(&"a".into(), "host-b:2", HOUR, Some(gone.epoch), &one("ana"))?);
    assert!(taken.epoch > gone.epoch);
    expect_full(s.claim(&"b".into(), "host-c:3", HOUR, None, &one("ben"))?);
    // And the new lease's use is the one counted: once it is released there is room.
    s.release(&taken)?;
    expect_claim(s.claim(&"b".into(), "host-c:3", HOUR, None, &one("ben"))?);
    Ok(())
}

pub fn a_held_entry_is_refused_as_held_even_when_its_server_is_full(
    mut s: Box<dyn Store>,
) -> Result<()> {
    let one = |who: &str| vec![on("new.example:993", who, 1, None)];
    let a = expect_claim(s.claim(&"a".into(), "host-a:1", HOUR, None, &one("ana"))?);
    match s.claim(&"a".into(), "host-b:2", HOUR, None, &one("ana"))? {
        Err(Refusal::Held(h)) => assert_eq!((h.holder.as_str(), h.epoch), ("host-a:1", a.epoch)),
        other => panic!("not refused as held: {other:?}"),
    }
    Ok(())
}

pub fn progress_is_shown_while_a_lease_lives(mut s: Box<dyn Store>) -> Result<()> {
    let a = EntryId::from("a");
    let Ok(lease) = s.lease(&a, "host:1", HOUR)? else {
        panic!("a free entry is leased");
    };
    let live = s.live_passes()?;
    assert_eq!(live.len(), 1);
    assert_eq!(
        (&live[0].entry, live[0].holder.as_str(), &live[0].progress),
        (&a, "host:1", &PassProgress::default())
    );
    let p = PassProgress {
        planned_messages: 10,
        planned_bytes: 1000,
        copied: 4,
        bytes: 400,
    };
    s.report_progress(&lease, &p)?;
    assert_eq!(s.live_passes()?[0].progress, p);
    s.release(&lease)?;
    assert!(
        s.live_passes()?.is_empty(),
        "a released lease is no live pass"
    );
    assert!(
        s.report_progress(&lease, &p).is_ok() || s.live_passes()?.is_empty(),
        "progress on a released lease changes nothing visible"
    );
    // A new claim starts from zero.
    let Ok(next) = s.lease(&a, "host:2", HOUR)? else {
        panic!("a released entry is leased again");
    };
    assert_eq!(s.live_passes()?[0].progress, PassProgress::default());
    // A lost claim cannot report.
    assert!(
        s.report_progress(&lease, &p).is_err(),
        "an old epoch's progress is refused"
    );
    s.release(&next)?;
    Ok(())
}

pub fn fenced_writes_are_refused_once_the_claim_is_taken_over(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    s.upsert_entries(&[entry("u1"), entry("u2")])?;
    let mine = expect_lease(s.lease(&id, "host-a:100", HOUR)?);
    s.fence(&mine);
    // While the claim is this holder's, fenced writes go through.
    s.insert_pending(&id, &[row("INBOX", 7, 1)])?;
    s.complete(&id, &[(&row("INBOX", 7, 1), Some(super::uid(31)))], &[])?;
    let cp = Checkpoint {
        uid_validity: 7,
        uid_next: 2,
        messages: 1,
        highest_modseq: None,
        filter: "f".into(),
    };
    s.set_checkpoint(&id, "INBOX", &cp)?;
    let before = s.ledger_all(&id)?;
    // Another process takes the entry over (this one was paused past its claim, say).
    let theirs = expect_lease(s.take_over(&id, "host-b:200", HOUR, mine.epoch)?);
    let lost = |r: Result<()>, what: &str| match r {
        Err(e) if e.kind == StoreErrorKind::LeaseLost => {}
        other => panic!("{what} under a lost claim: {other:?}"),
    };
    lost(
        s.insert_pending(&id, &[row("INBOX", 7, 2)]),
        "insert_pending",
    );
    lost(
        s.complete(&id, &[(&row("INBOX", 7, 1), Some(super::uid(99)))], &[]),
        "complete",
    );
    lost(
        s.complete(&id, &[], &[&row("INBOX", 7, 1)]),
        "complete (refused)",
    );
    lost(
        s.set_flags(
            &id,
            &[(&row("INBOX", 7, 1), Flags::from_server(["\\Flagged"]))],
        ),
        "set_flags",
    );
    lost(
        s.rekey(&id, &[(row("INBOX", 7, 1), row("INBOX", 8, 1))]),
        "rekey",
    );
    let later = Checkpoint {
        uid_next: 9,
        ..cp.clone()
    };
    lost(s.set_checkpoint(&id, "INBOX", &later), "set_checkpoint");
    let run = s.start_run(RunKind::Migrate)?;
    let mut line = RunEntry::new(id.clone());
    line.state = EntryState::Migrated;
    lost(
        s.finish_pass(run, &line, "2026-03-01T10:00:00Z", &mine, AfterPass::Keep),
        "finish_pass",
    );
    // Nothing changed: the ledger, the checkpoint, the run's lines and the new claim.
    assert_eq!(s.ledger_all(&id)?, before);
    assert_eq!(s.checkpoint(&id, "INBOX")?, Some(cp));
    assert_eq!(s.run_entries(run)?, Vec::new());
    s.renew(&theirs, HOUR)?;
    // Another entry's writes are not fenced; nor are this one's once the fence is lifted.
    s.insert_pending(&"u2".into(), &[row("INBOX", 7, 1)])?;
    s.unfence(&id);
    s.insert_pending(&id, &[row("INBOX", 7, 2)])?;
    // The new holder fences its own writes and finishes the pass.
    s.fence(&theirs);
    s.complete(&id, &[(&row("INBOX", 7, 2), Some(super::uid(32)))], &[])?;
    s.finish_pass(run, &line, "2026-03-01T10:00:00Z", &theirs, AfterPass::Keep)?;
    assert_eq!(s.run_entries(run)?.len(), 1);
    Ok(())
}

fn orphan(folder: &str, uid_validity: u32, uid: u32) -> Orphan {
    Orphan {
        target_folder: folder.into(),
        uid_validity: super::validity(uid_validity),
        uid: super::uid(uid),
        fingerprint: Fingerprint::new(format!("fp-{folder}-{uid}")),
    }
}

/// A holder that lost its claim records the copies its late APPENDs made, though its ledger
/// writes are refused; recording one twice keeps one; they are listed per entry in order,
/// dropped one by one (dropping one not there changes nothing), and go with their entry.
pub fn orphans_are_recorded_by_a_lost_holder_listed_and_dropped(
    mut s: Box<dyn Store>,
) -> Result<()> {
    let id = EntryId::from("u1");
    let other = EntryId::from("u2");
    s.upsert_entries(&[entry("u1"), entry("u2")])?;
    let mine = expect_lease(s.lease(&id, "host-a:100", HOUR)?);
    s.fence(&mine);
    s.insert_pending(&id, &[row("INBOX", 7, 1)])?;
    let _theirs = expect_lease(s.take_over(&id, "host-b:200", HOUR, mine.epoch)?);
    match s.complete(&id, &[(&row("INBOX", 7, 1), Some(super::uid(41)))], &[]) {
        Err(e) if e.kind == StoreErrorKind::LeaseLost => {}
        other => panic!("complete under a lost claim: {other:?}"),
    }
    // Not fenced: the process that lost the claim is the one that knows.
    s.record_orphans(&id, &[orphan("T/INBOX", 9, 41), orphan("Archive", 3, 5)])?;
    s.record_orphans(&id, &[orphan("T/INBOX", 9, 41), orphan("T/INBOX", 9, 7)])?;
    s.record_orphans(&other, &[orphan("T/INBOX", 9, 41)])?;
    s.record_orphans(&id, &[])?;
    assert_eq!(
        s.orphans(&id)?,
        vec![
            orphan("Archive", 3, 5),
            orphan("T/INBOX", 9, 7),
            orphan("T/INBOX", 9, 41)
        ]
    );
    s.drop_orphan(&id, &orphan("T/INBOX", 9, 41))?;
    s.drop_orphan(&id, &orphan("T/INBOX", 9, 41))?;
    // Another UIDVALIDITY names another copy.
    s.drop_orphan(&id, &orphan("T/INBOX", 10, 7))?;
    assert_eq!(
        s.orphans(&id)?,
        vec![orphan("Archive", 3, 5), orphan("T/INBOX", 9, 7)]
    );
    assert_eq!(s.orphans(&other)?, vec![orphan("T/INBOX", 9, 41)]);
    s.remove_entries(std::slice::from_ref(&id))?;
    assert_eq!(s.orphans(&id)?, Vec::new());
    assert_eq!(s.orphans(&other)?.len(), 1);
    Ok(())
}

pub fn every_checkpoint_of_an_entry_is_listed_by_folder(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    assert_eq!(s.checkpoints(&id)?, Vec::new());
    let cp = |n: u32| Checkpoint {
        uid_validity: 7,
        uid_next: n,
        messages: n - 1,
        highest_modseq: Some(u64::from(n) + (1 << 40)),
        filter: format!("f{n}"),
    };
    s.set_checkpoint(&id, "Sent", &cp(3))?;
    s.set_checkpoint(&id, "INBOX", &cp(2))?;
    s.set_checkpoint(&id, "Archive/2024", &cp(4))?;
    s.set_checkpoint(&"u2".into(), "INBOX", &cp(9))?;
    assert_eq!(
        s.checkpoints(&id)?,
        vec![
            ("Archive/2024".to_string(), cp(4)),
            ("INBOX".to_string(), cp(2)),
            ("Sent".to_string(), cp(3)),
        ]
    );
    Ok(())
}

pub fn an_imported_run_keeps_its_times(mut s: Box<dyn Store>) -> Result<()> {
    let old = s.import_run(
        RunKind::Migrate,
        "2026-03-01T10:00:00Z",
        Some("2026-03-01T10:05:00Z"),
    )?;
    let open = s.import_run(RunKind::Migrate, "2026-03-02T10:00:00Z", None)?;
    let now = s.start_run(RunKind::Migrate)?;
    assert!(old < open && open < now);
    let runs = s.runs(RunKind::Migrate)?;
    assert_eq!(runs.len(), 3);
    assert_eq!(
        (
            runs[2].id,
            runs[2].started.as_str(),
            runs[2].finished.as_deref()
        ),
        (old, "2026-03-01T10:00:00Z", Some("2026-03-01T10:05:00Z"))
    );
    assert_eq!(
        (
            runs[1].id,
            runs[1].started.as_str(),
            runs[1].finished.as_deref()
        ),
        (open, "2026-03-02T10:00:00Z", None)
    );
    Ok(())
}

pub fn a_live_pass_shows_how_long_ago_its_claim_was_renewed(mut s: Box<dyn Store>) -> Result<()> {
    let id = EntryId::from("u1");
    let lease = expect_lease(s.lease(&id, "host-a:100", HOUR)?);
    assert!(s.live_passes()?[0].heartbeat_age < Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(120));
    let before = s.live_passes()?[0].heartbeat_age;
    assert!(
        before >= Duration::from_millis(80),
        "the claim was taken 120 ms ago, its heartbeat age is {before:?}"
    );
    s.renew(&lease, HOUR)?;
    let after = s.live_passes()?[0].heartbeat_age;
    assert!(after < before, "renewed: {after:?}, before {before:?}");
    Ok(())
}

// ---------------------------------------------------------------- the queue

pub fn an_entry_is_queued_once_keeping_its_place_and_first_time(
    mut s: Box<dyn Store>,
) -> Result<()> {
    assert_eq!(s.queued()?, Vec::new());
    assert_eq!(s.enqueue(&["b".into(), "a".into()])?, 2);
    let first = s.queued()?;
    let ids = |q: &[crate::ports::store::Queued]| -> Vec<String> {
        q.iter().map(|q| q.entry.as_str().to_string()).collect()
    };
    assert_eq!(ids(&first), ["b", "a"], "in the order queued");
    assert!(first.iter().all(|q| !q.queued.is_empty()));
    std::thread::sleep(Duration::from_millis(1100));
    // b again, and c for the first time: b keeps its place and its time.
    assert_eq!(s.enqueue(&["c".into(), "b".into()])?, 1);
    let second = s.queued()?;
    assert_eq!(ids(&second), ["b", "a", "c"], "oldest first");
    assert_eq!(second[0].queued, first[0].queued, "b's queued time is kept");
    assert_ne!(second[0].ticket, first[0].ticket, "b has a new ticket");
    assert_eq!(second[1], first[1], "a is untouched");
    assert!(second[2].queued >= first[0].queued);
    // Queuing nothing is nothing.
    assert_eq!(s.enqueue(&[])?, 0);
    assert_eq!(s.queued()?, second);
    Ok(())
}

pub fn dequeue_takes_an_entry_off_only_if_it_was_not_queued_again(
    mut s: Box<dyn Store>,
) -> Result<()> {
    let a = EntryId::from("a");
    s.enqueue(&[a.clone(), "b".into()])?;
    // A worker starts a pass of a with the ticket it saw.
    let seen = s.queued()?[0].ticket;
    // New mail: a is queued again while that pass runs.
    assert_eq!(s.enqueue(std::slice::from_ref(&a))?, 0);
    let again = s.queued()?[0].ticket;
    assert_ne!(seen, again);
    assert!(
        !s.dequeue(&a, seen)?,
        "a pass that started before the second queuing leaves the entry queued"
    );
    assert_eq!(s.queued()?[0].entry, a);
    // The next pass started after it: the entry leaves the queue.
    assert!(s.dequeue(&a, again)?);
    let left: Vec<EntryId> = s.queued()?.into_iter().map(|q| q.entry).collect();
    assert_eq!(left, vec![EntryId::from("b")]);
    assert!(
        !s.dequeue(&a, again)?,
        "an entry not queued is not taken off twice"
    );
    // Queued again after that: a new place, at the end, with a ticket never seen before.
    assert_eq!(s.enqueue(std::slice::from_ref(&a))?, 1);
    let q = s.queued()?;
    assert_eq!(q[1].entry, a);
    assert!(q[1].ticket != seen && q[1].ticket != again);
    Ok(())
}

pub fn removed_entries_leave_the_queue(mut s: Box<dyn Store>) -> Result<()> {
    s.upsert_entries(&[entry("a"), entry("b")])?;
    s.enqueue(&["a".into(), "b".into()])?;
    s.remove_entries(&["a".into()])?;
    let left: Vec<EntryId> = s.queued()?.into_iter().map(|q| q.entry).collect();
    assert_eq!(left, vec![EntryId::from("b")]);
    Ok(())
}

pub fn a_deferred_entry_waits_for_every_worker_and_counts_its_failures(
    mut s: Box<dyn Store>,
) -> Result<()> {
    let (a, b) = (EntryId::from("a"), EntryId::from("b"));
    s.enqueue(&[a.clone(), b.clone()])?;
    let fresh = s.queued()?;
    assert!(fresh.iter().all(|q| q.failures == 0 && q.wait.is_zero()));
    assert!(s.defer(&a, Duration::from_secs(60))?);
    let q = s.queued()?;
    assert_eq!((q[0].entry.clone(), q[0].failures), (a.clone(), 1));
    assert!(
        q[0].wait > Duration::from_secs(50) && q[0].wait <= Duration::from_secs(60),
        "{:?}",
        q[0].wait
    );
    assert_eq!(
        (q[1].failures, q[1].wait),
        (0, Duration::ZERO),
        "b is not deferred"
    );
    // Queued again (a cron job): the wait and the count stay, the place too.
    s.enqueue(std::slice::from_ref(&a))?;
    let q = s.queued()?;
    assert_eq!((q[0].entry.clone(), q[0].failures), (a.clone(), 1));
    assert!(q[0].wait > Duration::from_secs(50));
    // A second failure, with a wait already over: counted, and due now.
    assert!(s.defer(&a, Duration::ZERO)?);
    let q = s.queued()?;
    assert_eq!((q[0].failures, q[0].wait), (2, Duration::ZERO));
    // A pass that finishes takes it off; queued again, it starts with no failures.
    let ticket = q[0].ticket;
    assert!(s.dequeue(&a, ticket)?);
    assert!(
        !s.defer(&a, Duration::from_secs(60))?,
        "not queued: nothing to defer"
    );
    s.enqueue(std::slice::from_ref(&a))?;
    let q = s.queued()?;
    assert_eq!(
        (q[1].entry.clone(), q[1].failures, q[1].wait),
        (a, 0, Duration::ZERO)
    );
    Ok(())
}

/// `finish_pass` with a queue change: the pass recorded, its claim given up and its queue change made
/// (taken off by its ticket, deferred, or left); refused whole under a lost claim.
pub fn a_queued_pass_is_recorded_with_its_queue_change(mut s: Box<dyn Store>) -> Result<()> {
    let (a, b, c) = (EntryId::from("a"), EntryId::from("b"), EntryId::from("c"));
    s.upsert_entries(&[entry("a"), entry("b"), entry("c")])?;
    s.enqueue(&[a.clone(), b.clone(), c.clone()])?;
    let tickets: Vec<i64> = s.queued()?.iter().map(|q| q.ticket).collect();
    let run = s.start_run(RunKind::Migrate)?;
    let line = |id: &EntryId, state| {
        let mut l = RunEntry::new(id.clone());
        l.state = state;
        l
    };
    // a: migrated, taken off the queue; its claim is free for another holder at once.
    let la = expect_lease(s.lease(&a, "host-a:100", HOUR)?);
    s.fence(&la);
    s.finish_pass(
        run,
        &line(&a, EntryState::Migrated),
        "2026-03-01T10:00:00Z",
        &la,
        AfterPass::Dequeue(tickets[0]),
    )?;
    s.unfence(&a);
    let queued: Vec<EntryId> = s.queued()?.into_iter().map(|q| q.entry).collect();
    assert_eq!(queued, [b.clone(), c.clone()]);
    expect_lease(s.lease(&a, "host-b:200", HOUR)?);
    // b: failed, deferred (stays queued, one failure, a wait).
    let lb = expect_lease(s.lease(&b, "host-a:100", HOUR)?);
    s.finish_pass(
        run,
        &line(&b, EntryState::Failed),
        "2026-03-01T10:00:00Z",
        &lb,
        AfterPass::Defer(Duration::from_secs(60)),
    )?;
    let q = s.queued()?;
    assert_eq!((q[0].entry.clone(), q[0].failures), (b.clone(), 1));
    assert!(q[0].wait > Duration::from_secs(50), "{:?}", q[0].wait);
    // c: queued again during its pass (a newer ticket): the old ticket leaves it queued.
    let lc = expect_lease(s.lease(&c, "host-a:100", HOUR)?);
    s.dequeue(&c, tickets[2])?;
    s.enqueue(std::slice::from_ref(&c))?;
    s.finish_pass(
        run,
        &line(&c, EntryState::Migrated),
        "2026-03-01T10:00:00Z",
        &lc,
        AfterPass::Dequeue(tickets[2]),
    )?;
    assert!(s.queued()?.iter().any(|q| q.entry == c), "queued again");
    assert_eq!(s.run_entries(run)?.len(), 3);
    // Under a claim taken over: nothing recorded, the queue left as it was.
    let ld = expect_lease(s.lease(&c, "host-a:100", HOUR)?);
    let theirs = expect_lease(s.take_over(&c, "host-b:200", HOUR, ld.epoch)?);
    s.fence(&ld);
    let ticket = s.queued()?.iter().find(|q| q.entry == c).unwrap().ticket;
    let refused = s.finish_pass(
        run,
        &line(&c, EntryState::Migrated),
        "2026-03-01T11:00:00Z",
        &ld,
        AfterPass::Dequeue(ticket),
    );
    assert!(
        matches!(&refused, Err(e) if e.kind == StoreErrorKind::LeaseLost),
        "{refused:?}"
    );
    assert!(s.queued()?.iter().any(|q| q.entry == c));
    assert_eq!(s.run_entries(run)?.len(), 3);
    s.renew(&theirs, HOUR)?;
    Ok(())
}

// ---------------------------------------------------------------- workers

pub fn workers_register_heartbeat_and_deregister(mut s: Box<dyn Store>) -> Result<()> {
    assert_eq!(s.workers()?, Vec::new());
    s.register_worker("host-a:100")?;
    std::thread::sleep(Duration::from_millis(1100));
    s.register_worker("host-b:200")?;
    let w = s.workers()?;
    let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        ["host-a:100", "host-b:200"],
        "in the order they started"
    );
    assert!(w.iter().all(|w| w.stopped.is_none()));
    assert!(w.iter().all(|w| w.stats == WorkerStats::default()));
    assert!(w[0].started < w[1].started);
    assert!(
        w[0].heartbeat_age >= Duration::from_millis(900) && w[0].heartbeat_age < HOUR,
        "a's heartbeat was 1.1 s ago: {:?}",
        w[0].heartbeat_age
    );
    let stats = WorkerStats {
        passes: 3,
        messages: 120,
        bytes: 1 << 33,
    };
    s.worker_heartbeat("host-a:100", &stats)?;
    let w = s.workers()?;
    assert_eq!(w[0].stats, stats);
    assert!(w[0].heartbeat_age < Duration::from_millis(900));
    assert!(w[0].heartbeat >= w[0].started);
    assert!(
        s.worker_heartbeat("host-c:300", &stats).is_err(),
        "a heartbeat of a worker never registered is an error"
    );
    // A clean stop keeps the worker listed, stopped, with its last figures.
    let last = WorkerStats { passes: 4, ..stats };
    s.deregister_worker("host-b:200", &last)?;
    let w = s.workers()?;
    assert!(w[0].stopped.is_none());
    assert!(w[1].stopped.is_some());
    assert_eq!(w[1].stats, last);
    // The same name registered again (a PID reused) starts afresh.
    s.register_worker("host-b:200")?;
    let w = s.workers()?;
    let b = w.iter().find(|w| w.name == "host-b:200").expect("listed");
    assert_eq!(
        (b.stopped.as_deref(), b.stats),
        (None, WorkerStats::default())
    );
    assert_eq!(w.len(), 2);
    Ok(())
}

pub fn copied_bytes_are_the_sizes_of_copied_rows_per_entry(mut s: Box<dyn Store>) -> Result<()> {
    assert_eq!(s.copied_bytes()?, Vec::new());
    let (a, b) = (EntryId::from("a"), EntryId::from("b"));
    s.insert_pending(
        &a,
        &[row("INBOX", 7, 1), row("INBOX", 7, 2), row("Sent", 7, 3)],
    )?;
    s.insert_pending(&b, &[row("INBOX", 7, 1)])?;
    s.complete(
        &a,
        &[
            (&row("INBOX", 7, 1), Some(super::uid(1))),
            (&row("Sent", 7, 3), Some(super::uid(2))),
        ],
        &[],
    )?;
    // a: two copied rows (sizes 101 and 103), one pending; b: only pending.
    assert_eq!(s.copied_bytes()?, vec![(a, 204)]);
    Ok(())
}

//! Whole passes against the fake mail server and the in-memory store: one behaviour per test,
//! each comparing source and target message by message (bytes, flags, INTERNALDATE) and the
//! ledger row by row. The pure decisions these passes rely on are pinned in `decide`'s tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{Backoff, ByteBudget, PROCESS_BYTE_BUDGET, PassContext, PassSettings, migrate_entry};
use crate::fingerprint::{Kind, fingerprint, fingerprint_as};
use crate::folders::FolderRules;
use crate::job::Date;
use crate::model::{
    Entry, EntryState, Failure, Flags, LedgerRow, LedgerState, Origin, RunEntry, RunId, RunKind,
    Uid,
};
use crate::ports::{EntryPasswords, NoObserver, SessionError, SessionErrorKind, Store};
use crate::testing::{
    Counts, FakeConnector, FakeMailbox, FakeMessage, MemoryStore, Op, uid, validity,
};

const SOURCE: &str = "alice";
const TARGET: &str = "alice@new.example";
/// Every folder of [`source_mailbox`].
const FOLDERS: [&str; 5] = ["INBOX", "Sent", "Archive", "Archive/2020", "Lists"];
const LOST: &str = "target: Connection lost: the server closed the connection";

/// A message as a mail client would have it; `n` makes it unique.
fn mail(n: u32) -> Vec<u8> {
    format!(
        "Message-ID: <{n}@old.example>\r\nFrom: Bob <bob@old.example>\r\nTo: alice@old.example\r\n\
         Subject: message {n}, caf\u{e9}\r\n\r\nBody of message {n}.\r\n"
    )
    .into_bytes()
}

/// A source account with a folder tree: a marked sent folder, a parent with a child, an
/// unsubscribed folder; flags, keywords and INTERNALDATEs in several zones.
fn source_mailbox() -> FakeMailbox {
    let mut m = FakeMailbox::new();
    m.add_folder_with("Sent", &["\\Sent"], true);
    m.add_folder("Archive");
    m.add_folder("Archive/2020");
    m.add_folder_with("Lists", &[], false);
    m.deliver("INBOX", &mail(1), &["\\Seen"], "01-Mar-2024 09:15:00 +0100");
    m.deliver("INBOX", &mail(2), &[], "02-Mar-2024 10:00:00 +0000");
    m.deliver(
        "INBOX",
        &mail(3),
        &["\\Answered", "\\Seen", "$Label1"],
        "03-Mar-2024 23:59:59 -0800",
    );
    m.deliver("Sent", &mail(4), &["\\Seen"], "04-Mar-2024 08:00:00 +0100");
    m.deliver(
        "Archive/2020",
        &mail(5),
        &["\\Flagged"],
        " 7-Jul-2020 02:44:25 -0700",
    );
    m.deliver(
        "Archive/2020",
        &mail(6),
        &["\\Seen"],
        "31-Dec-2020 23:00:00 +0000",
    );
    m.deliver("Lists", &mail(7), &[], "15-Jan-2024 12:00:00 +0000");
    m
}

fn transient(words: &str) -> SessionError {
    SessionError::new(SessionErrorKind::Transient, words)
}

/// Two fake servers, a store, one entry, and the settings of its passes.
struct World {
    source: FakeConnector,
    target: FakeConnector,
    store: Mutex<Box<dyn Store>>,
    settings: PassSettings,
    entry: Entry,
    retries: u32,
    stop: AtomicBool,
    /// The process's byte budget for message bodies.
    budget: usize,
}

impl World {
    fn new(source: FakeMailbox, target: FakeMailbox) -> World {
        let src = FakeConnector::new("old");
        src.add(SOURCE, source);
        let dst = FakeConnector::new("new");
        dst.add(TARGET, target);
        let mut entry = Entry::new("u1".into(), SOURCE.into(), Origin::Csv);
        entry.target_login = Some(TARGET.into());
        World {
            source: src,
            target: dst,
            store: Mutex::new(Box::new(MemoryStore::new())),
            settings: PassSettings {
                rules: FolderRules::default(),
                since: None,
                until: None,
                skip_deleted: false,
            },
            entry,
            retries: 0,
            stop: AtomicBool::new(false),
            budget: PROCESS_BYTE_BUDGET,
        }
    }

    fn store(&self) -> MutexGuard<'_, Box<dyn Store>> {
        self.store.lock().unwrap()
    }

    /// One pass of the entry in a run of its own.
    fn pass(&self) -> (RunId, RunEntry) {
        let run = self.store().start_run(RunKind::Migrate).unwrap();
        let ctx = PassContext {
            source: &self.source,
            target: &self.target,
            settings: &self.settings,
            store: &self.store,
            budget: &ByteBudget::new(self.budget),
            run,
            observer: &NoObserver,
            retries: self.retries,
            retry_delay: Duration::from_millis(1),
            retry_max_delay: Duration::from_millis(8),
            stop: &self.stop,
        };
        (
            run,
            migrate_entry(&ctx, &self.entry, &EntryPasswords::default()),
        )
    }

    fn src(&self) -> FakeMailbox {
        self.source.snapshot(SOURCE)
    }

    fn dst(&self) -> FakeMailbox {
        self.target.snapshot(TARGET)
    }

    fn ledger(&self) -> Vec<LedgerRow> {
        self.store().ledger_all(&self.entry.id).unwrap()
    }

    fn failures(&self, run: RunId) -> Vec<Failure> {
        self.store().failures(run).unwrap()
    }

    fn reset_counts(&self) {
        self.source.with(SOURCE, FakeMailbox::reset_counts);
        self.target.with(TARGET, FakeMailbox::reset_counts);
    }
}

/// A folder's messages as (bytes, flags, INTERNALDATE), in a fixed order: what must be equal
/// on both sides, duplicates included. Bodies are text when they are UTF-8 (all of these
/// tests' are), so a failed comparison reads; the conversion loses nothing.
fn contents(m: &FakeMailbox, folder: &str) -> Vec<(String, Flags, String)> {
    contents_where(m, folder, |_| true)
}

fn contents_where(
    m: &FakeMailbox,
    folder: &str,
    keep: impl Fn(&FakeMessage) -> bool,
) -> Vec<(String, Flags, String)> {
    let text = |body: &[u8]| {
        String::from_utf8(body.to_vec()).unwrap_or_else(|e| format!("{:?}", e.into_bytes()))
    };
    let mut out: Vec<_> = m
        .messages(folder)
        .iter()
        .filter(|m| keep(m))
        .map(|m| (text(&m.body), m.flags.clone(), m.internal_date.clone()))
        .collect();
    out.sort();
    out
}

fn assert_same_messages(w: &World, folders: &[&str]) {
    let (src, dst) = (w.src(), w.dst());
    for folder in folders {
        assert_eq!(
            contents(&dst, folder),
            contents(&src, folder),
            "folder {folder}"
        );
    }
}

/// The ledger has one copied row per source message of these folders and nothing else, each
/// naming the target message with the same bytes, and no target message is named twice.
fn assert_ledger_matches(w: &World, folders: &[&str]) {
    let (src, dst, ledger) = (w.src(), w.dst(), w.ledger());
    let mut expected = 0;
    for folder in folders {
        let uid_validity = src.uid_validity(folder);
        for m in src.messages(folder) {
            expected += 1;
            let rows: Vec<&LedgerRow> = ledger
                .iter()
                .filter(|r| {
                    r.source_folder == *folder && r.uid_validity == uid_validity && r.uid == m.uid
                })
                .collect();
            assert_eq!(rows.len(), 1, "{folder} UID {}: {rows:?}", m.uid);
            let r = rows[0];
            assert_eq!(r.state, LedgerState::Copied, "{r:?}");
            // In the row's own kind: an earlier version's rows hold SHA-256.
            let kind = Kind::of(&r.fingerprint);
            assert_eq!(r.fingerprint, fingerprint_as(kind, &m.body));
            assert_eq!(r.size, m.body.len() as u64);
            assert_eq!(r.flags, m.flags, "{folder} UID {}", m.uid);
            assert_eq!(r.target_folder, *folder);
            let copy = dst
                .messages(folder)
                .iter()
                .find(|t| Some(t.uid) == r.target_uid)
                .unwrap_or_else(|| panic!("{r:?} names no message of the target"));
            assert_eq!(copy.body, m.body, "{r:?}");
        }
    }
    assert_eq!(
        ledger.len(),
        expected,
        "rows for no source message: {ledger:#?}"
    );
    let mut targets: Vec<_> = ledger
        .iter()
        .map(|r| (r.target_folder.clone(), r.target_uid))
        .collect();
    targets.sort();
    targets.dedup();
    assert_eq!(targets.len(), expected, "a target message named twice");
}

fn total_bytes(m: &FakeMailbox, folders: &[&str]) -> u64 {
    folders
        .iter()
        .flat_map(|f| m.messages(f))
        .map(|m| m.body.len() as u64)
        .sum()
}

#[test]
fn a_full_pass_copies_every_message_exactly() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    let (run, result) = w.pass();

    let src = w.src();
    assert_eq!(
        result,
        RunEntry {
            state: EntryState::Migrated,
            copied: 7,
            bytes: total_bytes(&src, &FOLDERS),
            seconds: result.seconds,
            ..RunEntry::new("u1".into())
        }
    );
    assert_same_messages(&w, &FOLDERS);
    assert_ledger_matches(&w, &FOLDERS);
    assert!(w.failures(run).is_empty());
    // The tree and the subscriptions are the source's, made in one batch of changes.
    let dst = w.dst();
    assert_eq!(
        (dst.counts().tree_batches, dst.counts().creates),
        (1, FOLDERS.len() as u32 - 1),
        "every folder but INBOX made, in one batch"
    );
    let mut names = dst.folder_names();
    names.sort();
    let mut expected = FOLDERS.map(String::from);
    expected.sort();
    assert_eq!(names, expected);
    for folder in FOLDERS {
        assert_eq!(
            dst.is_subscribed(folder),
            src.is_subscribed(folder),
            "{folder}"
        );
    }
    assert!(w.store().ledger_pending(&w.entry.id).unwrap().is_empty());
}

#[test]
fn a_second_pass_copies_nothing() {
    // Without CONDSTORE every folder is scanned again, and the ledger says it is all there.
    let w = World::new(
        source_mailbox().with_condstore(false),
        FakeMailbox::new().with_condstore(false),
    );
    w.pass();
    let (target_before, ledger_before) = (w.dst(), w.ledger());
    w.reset_counts();

    let (_, result) = w.pass();
    assert_eq!(
        result,
        RunEntry {
            state: EntryState::Migrated,
            seconds: result.seconds,
            ..RunEntry::new("u1".into())
        }
    );
    assert_eq!(w.src().counts().selects, 5);
    assert_eq!(w.dst().counts().appends, 0);
    for folder in FOLDERS {
        assert_eq!(contents(&w.dst(), folder), contents(&target_before, folder));
    }
    assert_eq!(w.ledger(), ledger_before);
}

#[test]
fn with_highestmodseq_an_unchanged_mailbox_costs_one_status_per_folder() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    w.pass();
    w.reset_counts();

    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 0));
    let session = Counts {
        logins: 1,
        lists: 1,
        ..Counts::default()
    };
    assert_eq!(
        *w.src().counts(),
        Counts {
            statuses: 5,
            status_batches: 1,
            ..session.clone()
        }
    );
    assert_eq!(*w.dst().counts(), session);
}

/// A first pass asks the target for the STATUS of every folder it copies into in one batch
/// (one round trip on a distant server), not one folder at a time before its APPENDs.
#[test]
fn a_first_pass_asks_the_targets_statuses_in_one_batch() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 7));
    let dst = w.dst();
    let folders_with_mail = FOLDERS
        .iter()
        .filter(|f| !w.src().messages(f).is_empty())
        .count() as u32;
    assert_eq!(
        (dst.counts().status_batches, dst.counts().statuses),
        (1, folders_with_mail)
    );
}

/// A first pass sends each source folder's scan with its SELECT, and each copied folder's
/// first FETCH behind its SELECT for the copy: a distant source answers each pair in one
/// round trip. A delta (a checkpoint with a mod-sequence) is asked after its SELECT, as the
/// SELECT's answer says whether it applies.
#[test]
fn a_first_pass_sends_each_scan_and_first_fetch_with_its_select() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 7));
    assert_same_messages(&w, &FOLDERS);
    let src = w.src();
    let folders_with_mail = FOLDERS
        .iter()
        .filter(|f| !src.messages(f).is_empty())
        .count() as u32;
    assert_eq!(src.counts().select_scans, FOLDERS.len() as u32);
    assert_eq!(
        src.counts().scans_ahead,
        FOLDERS.len() as u32 - 1,
        "every folder's scan on its way before the first is read"
    );
    assert_eq!(
        src.counts().scans,
        folders_with_mail,
        "an empty folder is not scanned"
    );
    assert_eq!(src.counts().fetches_behind_select, folders_with_mail);
    assert_eq!(
        src.counts().flushes,
        folders_with_mail - 1,
        "each copy but the last sent the next one's SELECT and FETCH"
    );
    assert_eq!(
        src.counts().selects,
        FOLDERS.len() as u32 + folders_with_mail,
        "one SELECT per scan and one per copy: none asked again"
    );
    drop(src);

    // A flag changed in one folder (a delta: asked after its SELECT, on its own) and
    // another renumbered (scanned whole, with its SELECT). The fake fails a SELECT sent
    // while earlier answers are unread, whatever order the plan gives the folders.
    w.source.with(SOURCE, |m| {
        let uid = m.messages("Lists")[0].uid;
        m.set_message_flags("Lists", uid, &["\\Flagged"]);
        m.renumber("INBOX", 4242);
    });
    w.reset_counts();
    let (run, result) = w.pass();
    assert_eq!(result.state, EntryState::Migrated);
    assert!(w.failures(run).is_empty());
    assert_same_messages(&w, &FOLDERS);
    let src = w.src();
    assert_eq!(
        (src.counts().select_scans, src.counts().changed_scans),
        (1, 1),
        "the renumbered folder scanned whole; the changed one's delta on its own"
    );
}

/// Scan tickets go out up to the window, past folders that need nothing, and never past a
/// folder scanned apart (its SELECT and delta must not come behind the others' SELECTs).
#[test]
fn scans_go_ahead_up_to_the_window_and_never_past_a_folder_scanned_apart() {
    use super::scan::{ScanWay, ScansAhead};
    use crate::ports::Connector;
    use ScanWay::{Apart, Unchanged, Whole};
    let raws = ["A", "B", "C", "D", "E", "F", "G"];
    let mut m = FakeMailbox::new();
    for f in raws {
        m.add_folder(f);
    }
    let server = FakeConnector::new("old");
    server.add(SOURCE, m);
    let mut src = server.open(SOURCE, None).ok().unwrap();
    let ways = [Whole, Whole, Apart, Whole, Unchanged, Whole, Whole];
    // Takes folder i's ticket and reads it; returns the scans sent ahead so far.
    let mut ahead = ScansAhead::new(3);
    let mut take = |i: usize, ahead: &mut ScansAhead| {
        let ticket = ahead.take(src.as_mut(), &raws, &ways, i).unwrap();
        assert_eq!(ticket.raw, raws[i]);
        src.finish_select_and_scan(ticket, &mut |_, _| {}).unwrap();
        server.with(SOURCE, |m| m.counts().scans_ahead)
    };
    assert_eq!(take(0, &mut ahead), 1, "A and B sent; not past C");
    assert_eq!(take(1, &mut ahead), 1);
    assert_eq!(take(3, &mut ahead), 3, "D, F and G sent (E needs nothing)");
    assert_eq!(take(5, &mut ahead), 3);
    assert_eq!(take(6, &mut ahead), 3);
    let mut one = ScansAhead::new(1);
    assert_eq!(take(5, &mut one), 3, "a window of one sends each alone");
    assert_eq!(take(6, &mut one), 3);
}

/// A target that refuses the STATUS of one of those folders (once) leaves them all to be
/// asked one at a time, before each folder's APPENDs, as without the batch: nothing fails.
#[test]
fn a_refused_status_in_the_targets_batch_leaves_each_folder_to_its_own() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    w.target.with(TARGET, |m| {
        m.fail_nth(
            Op::Status,
            2,
            SessionError::refused(None, "NO Permission denied"),
        );
    });
    let (run, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 7));
    assert!(w.failures(run).is_empty());
    assert_same_messages(&w, &FOLDERS);
    let dst = w.dst();
    assert_eq!(dst.counts().status_batches, 1);
}

#[test]
fn a_flag_change_on_the_source_is_set_on_the_target() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    w.pass();
    w.source.with(SOURCE, |m| {
        m.set_message_flags("INBOX", uid(2), &["\\Seen", "\\Flagged", "$Work"]);
    });
    w.reset_counts();

    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.flags_updated),
        (EntryState::Migrated, 0, 1)
    );
    assert_same_messages(&w, &FOLDERS);
    assert_ledger_matches(&w, &FOLDERS);
    let dst = w.dst();
    let copy = dst
        .messages("INBOX")
        .iter()
        .find(|m| m.body == mail(2))
        .unwrap();
    assert_eq!(copy.flags.as_str(), "$Work \\Flagged \\Seen");
    assert_eq!((dst.counts().flag_stores, dst.counts().appends), (1, 0));
}

#[test]
fn with_condstore_a_changed_folder_is_read_as_a_delta_since_its_checkpoint() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    w.pass();
    w.source.with(SOURCE, |m| {
        m.set_message_flags("INBOX", uid(2), &["\\Seen", "\\Flagged"]);
        m.deliver("INBOX", &mail(8), &[], "05-Mar-2024 10:00:00 +0000");
    });
    w.reset_counts();

    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.flags_updated),
        (EntryState::Migrated, 1, 1)
    );
    // INBOX is read as a delta; its count adds up (3 + 1 new), so its UIDs are not read;
    // every other folder costs its STATUS.
    let src = w.src().counts().clone();
    assert_eq!(
        (src.statuses, src.scans, src.changed_scans, src.uid_lists),
        (5, 0, 1, 0)
    );
    assert_same_messages(&w, &FOLDERS);
    assert_ledger_matches(&w, &FOLDERS);
}

/// After a first pass, one message filed from INBOX into Archive and another's flags
/// changed: a delta pass moves the one and updates the other, copying nothing. Returns the
/// source's command counts of that pass.
fn a_move_and_a_flag_change(w: &World) -> Counts {
    w.pass();
    w.source.with(SOURCE, |m| {
        m.move_message("INBOX", uid(1), "Archive");
        m.set_message_flags("INBOX", uid(3), &[]);
    });
    w.reset_counts();

    let (_, result) = w.pass();
    assert_eq!(
        (
            result.state,
            result.copied,
            result.moved,
            result.flags_updated
        ),
        (EntryState::Migrated, 0, 1, 1)
    );
    assert_eq!(w.dst().counts().appends, 0);
    assert_same_messages(w, &FOLDERS);
    assert_ledger_matches(w, &FOLDERS);
    w.src().counts().clone()
}

#[test]
fn a_delta_pass_still_sees_a_move_and_an_expunge_by_the_folder_count() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    let src = a_move_and_a_flag_change(&w);
    // INBOX lost a message: its UIDs are read; Archive only gained one.
    assert_eq!((src.scans, src.changed_scans, src.uid_lists), (0, 2, 1));

    // An expunge and an arrival in one folder: the count is short by one against the
    // checkpoint plus the new message, so the UIDs are read again.
    w.source.with(SOURCE, |m| {
        m.expunge("Archive/2020", uid(1));
        m.deliver("Archive/2020", &mail(9), &[], "06-Mar-2024 10:00:00 +0000");
    });
    w.reset_counts();
    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 1));
    let src = w.src().counts().clone();
    assert_eq!((src.scans, src.changed_scans, src.uid_lists), (0, 1, 1));
    assert_eq!(
        w.dst().messages("Archive/2020").len(),
        w.src().messages("Archive/2020").len() + 1,
        "the target keeps the copy of the expunged message"
    );
}

#[test]
fn with_qresync_a_delta_pass_sees_a_move_and_an_expunge_without_reading_the_uids() {
    let w = World::new(source_mailbox().with_qresync(true), FakeMailbox::new());
    let src = a_move_and_a_flag_change(&w);
    // INBOX lost a message: the server said which (VANISHED), so no UID list is read.
    assert_eq!((src.scans, src.changed_scans, src.uid_lists), (0, 2, 0));

    // An expunge and an arrival in one folder, then the expunged one filed again elsewhere:
    // still no UID list, and the refiled message is moved on the target, not copied.
    let body = w.src().messages("Archive/2020")[0].body.clone();
    w.source.with(SOURCE, |m| {
        m.move_message("Archive/2020", uid(1), "INBOX");
        m.deliver("Archive/2020", &mail(9), &[], "06-Mar-2024 10:00:00 +0000");
    });
    w.reset_counts();
    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.moved),
        (EntryState::Migrated, 1, 1)
    );
    let src = w.src().counts().clone();
    assert_eq!((src.scans, src.changed_scans, src.uid_lists), (0, 2, 0));
    assert_eq!(w.dst().counts().appends, 1);
    assert!(w.dst().messages("INBOX").iter().any(|m| m.body == body));
    assert_same_messages(&w, &FOLDERS);
    assert_ledger_matches(&w, &FOLDERS);
}

#[test]
fn without_condstore_a_changed_folder_is_read_in_full() {
    let w = World::new(source_mailbox().with_condstore(false), FakeMailbox::new());
    w.pass();
    w.source.with(SOURCE, |m| {
        m.set_message_flags("INBOX", uid(2), &["\\Seen"]);
    });
    w.reset_counts();
    let (_, result) = w.pass();
    assert_eq!((result.copied, result.flags_updated), (0, 1));
    let src = w.src().counts().clone();
    // Every folder but the empty Archive, which needs no scan.
    assert_eq!((src.scans, src.changed_scans, src.uid_lists), (4, 0, 0));
    assert_same_messages(&w, &FOLDERS);
}

#[test]
fn reconcile_after_a_crash_keeps_one_copy_of_each_of_two_identical_messages() {
    // Two identical messages (a message filed twice); the target stored the first, then the
    // connection died before any OK was read.
    let mut source = FakeMailbox::new();
    for _ in 0..2 {
        source.deliver("INBOX", &mail(1), &["\\Seen"], "01-Mar-2024 09:15:00 +0100");
    }
    let mut target = FakeMailbox::new().with_multiappend(false);
    target.crash_after(1, 0);
    let w = World::new(source, target);

    let (_, crashed) = w.pass();
    assert_eq!(crashed.state, EntryState::Failed);
    assert_eq!(crashed.error.as_deref(), Some(LOST));
    assert_eq!(w.dst().messages("INBOX").len(), 1);
    assert_eq!(w.store().ledger_pending(&w.entry.id).unwrap().len(), 2);

    // The one copy settles one intent; the other is copied again: two, never one or three.
    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 1));
    assert_eq!(w.dst().messages("INBOX").len(), 2);
    assert_same_messages(&w, &["INBOX"]);
    assert_ledger_matches(&w, &["INBOX"]);
}

#[test]
fn reconcile_after_a_crash_counts_both_identical_copies_when_both_arrived() {
    let mut source = FakeMailbox::new();
    for _ in 0..2 {
        source.deliver("INBOX", &mail(1), &["\\Seen"], "01-Mar-2024 09:15:00 +0100");
    }
    let mut target = FakeMailbox::new().with_multiappend(false);
    target.crash_after(2, 0);
    let w = World::new(source, target);

    assert_eq!(w.pass().1.state, EntryState::Failed);
    assert_eq!(w.dst().messages("INBOX").len(), 2);
    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 0));
    assert_eq!(w.dst().messages("INBOX").len(), 2);
    assert_same_messages(&w, &["INBOX"]);
    assert_ledger_matches(&w, &["INBOX"]);
}

#[test]
fn a_refused_multiappend_group_fails_only_the_refused_message() {
    let words = "[LIMIT] Message rejected: it contains a virus";
    let mut source = FakeMailbox::new();
    source.deliver("INBOX", &mail(1), &["\\Seen"], "01-Mar-2024 09:15:00 +0100");
    let mut bad = mail(2);
    bad.extend_from_slice(b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR\r\n");
    source.deliver("INBOX", &bad, &[], "02-Mar-2024 10:00:00 +0000");
    source.deliver(
        "INBOX",
        &mail(3),
        &["\\Flagged"],
        "03-Mar-2024 11:00:00 +0000",
    );
    let mut target = FakeMailbox::new();
    target.refuse_bodies_containing(b"EICAR", words);
    let w = World::new(source, target);

    let (run, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.failed),
        (EntryState::Partial, 2, 1)
    );
    assert_eq!(
        w.failures(run),
        [Failure {
            entry_id: "u1".into(),
            folder: "INBOX".into(),
            uid: Some(uid(2)),
            size: Some(bad.len() as u64),
            message_id: Some("<2@old.example>".into()),
            reason: words.into(),
        }]
    );
    let src = w.src();
    assert_eq!(
        contents(&w.dst(), "INBOX"),
        contents_where(&src, "INBOX", |m| m.uid != uid(2))
    );
    let ledger = w.ledger();
    assert_eq!(
        ledger.iter().map(|r| r.uid).collect::<Vec<_>>(),
        [uid(1), uid(3)]
    );
    assert!(ledger.iter().all(|r| r.state == LedgerState::Copied));
}

#[test]
fn a_message_moved_between_source_folders_is_moved_on_the_target() {
    a_moved_message_is_moved_on_the_target(Kind::Blake3);
}

/// A ledger an earlier version wrote (SHA-256 fingerprints) still recognises a moved message.
#[test]
fn a_move_is_recognised_by_a_row_an_earlier_version_wrote() {
    a_moved_message_is_moved_on_the_target(Kind::Sha256);
}

/// A message moved between source folders after a first pass whose ledger holds
/// fingerprints of `kind`: the next pass moves it on the target, and its row keeps its kind.
fn a_moved_message_is_moved_on_the_target(kind: Kind) {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    w.pass();
    if kind == Kind::Sha256 {
        as_written_before_blake3(&w);
    }
    let new_uid = w
        .source
        .with(SOURCE, |m| m.move_message("INBOX", uid(2), "Archive"));
    w.reset_counts();

    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.moved),
        (EntryState::Migrated, 0, 1)
    );
    // One UID MOVE, no APPEND: the copy on the target is the one made by the first pass.
    let dst = w.dst();
    assert_eq!((dst.counts().moves, dst.counts().appends), (1, 0));
    drop(dst);
    assert_same_messages(&w, &FOLDERS);
    assert_ledger_matches(&w, &FOLDERS);
    let row = w
        .ledger()
        .into_iter()
        .find(|r| r.fingerprint == fingerprint_as(kind, &mail(2)))
        .unwrap();
    assert_eq!(
        (
            row.source_folder.as_str(),
            row.uid,
            row.target_folder.as_str()
        ),
        ("Archive", new_uid, "Archive")
    );
}

#[test]
fn a_folder_renamed_on_the_source_is_moved_on_the_target_not_copied_again() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    w.pass();
    w.source
        .with(SOURCE, |m| m.rename_folder("Lists", "Newsletters"));
    w.reset_counts();

    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.moved),
        (EntryState::Migrated, 0, 1)
    );
    let dst = w.dst();
    assert_eq!((dst.counts().moves, dst.counts().appends), (1, 0));
    assert!(
        dst.messages("Lists").is_empty(),
        "the old folder's copy moved"
    );
    let renamed = ["INBOX", "Sent", "Archive", "Archive/2020", "Newsletters"];
    assert_same_messages(&w, &renamed);
    assert_ledger_matches(&w, &renamed);
    let (_, again) = w.pass();
    assert_eq!((again.copied, again.moved), (0, 0));
}

#[test]
fn a_message_expunged_in_one_pass_and_filed_again_in_a_later_one_is_moved_not_copied() {
    for qresync in [false, true] {
        let w = World::new(source_mailbox().with_qresync(qresync), FakeMailbox::new());
        w.pass();
        let body = w.src().messages("INBOX")[1].body.clone();
        w.source.with(SOURCE, |m| m.expunge("INBOX", uid(2)));
        let (_, result) = w.pass();
        assert_eq!((result.copied, result.moved), (0, 0), "qresync {qresync}");
        // Restored from a backup, or filed back by a client that copies before expunging:
        // the same bytes, in another folder, a pass later.
        w.source.with(SOURCE, |m| {
            m.deliver("Archive", &body, &["\\Seen"], "02-Mar-2024 10:00:00 +0000")
        });
        w.reset_counts();

        let (_, result) = w.pass();
        assert_eq!(
            (result.state, result.copied, result.moved),
            (EntryState::Migrated, 0, 1),
            "qresync {qresync}"
        );
        let dst = w.dst();
        assert_eq!((dst.counts().moves, dst.counts().appends), (1, 0));
        assert!(dst.messages("INBOX").iter().all(|m| m.body != body));
        assert_same_messages(&w, &FOLDERS);
        assert_ledger_matches(&w, &FOLDERS);
        let (_, again) = w.pass();
        assert_eq!((again.copied, again.moved), (0, 0), "qresync {qresync}");
    }
}

/// Deletes the target's copy (in its INBOX) of the message with these bytes, as a pilot user
/// would.
fn delete_inbox_copy(w: &World, body: &[u8]) {
    let copy = w
        .ledger()
        .into_iter()
        .find(|r| r.fingerprint == fingerprint(body))
        .and_then(|r| r.target_uid)
        .unwrap();
    w.target.with(TARGET, |m| m.expunge("INBOX", copy));
}

#[test]
fn a_moved_message_whose_copy_was_deleted_on_the_target_is_copied_again() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    w.pass();
    // A pilot user deleted the copy on the target; then the message is filed on the source.
    delete_inbox_copy(&w, &mail(2));
    w.source
        .with(SOURCE, |m| m.move_message("INBOX", uid(2), "Archive"));
    w.reset_counts();

    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.moved),
        (EntryState::Migrated, 1, 0)
    );
    let dst = w.dst();
    assert_eq!((dst.counts().moves, dst.counts().appends), (0, 1));
    assert_same_messages(&w, &FOLDERS);
    assert_ledger_matches(&w, &FOLDERS);
    let (_, again) = w.pass();
    assert_eq!((again.copied, again.moved), (0, 0));
}

/// The same with new mail in the folder after it: the copy had already sent that folder's
/// SELECT and first FETCH when it found a copy to make again; they are read and dropped
/// first (the fake fails a SELECT sent while answers are unread), then sent again.
#[test]
fn a_copy_made_again_first_drops_what_was_sent_for_the_next_folder() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    w.pass();
    delete_inbox_copy(&w, &mail(2));
    w.source.with(SOURCE, |m| {
        m.move_message("INBOX", uid(2), "Archive");
        m.deliver("Archive/2020", &mail(77), &[], "05-Mar-2024 08:00:00 +0000");
    });
    w.reset_counts();

    let (run, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.moved),
        (EntryState::Migrated, 2, 0)
    );
    assert!(w.failures(run).is_empty());
    assert_same_messages(&w, &FOLDERS);
    assert_ledger_matches(&w, &FOLDERS);
    let src = w.src();
    assert_eq!(
        src.counts().flushes,
        2,
        "Archive/2020's commands sent by Archive's copy, dropped, sent again by its second round"
    );
}

#[test]
fn a_message_moved_and_flagged_on_the_source_has_its_new_flags_on_the_target() {
    let w = World::new(source_mailbox(), FakeMailbox::new());
    w.pass();
    // What a mail client does when a message is read and filed away.
    w.source.with(SOURCE, |m| {
        m.set_message_flags("INBOX", uid(2), &["\\Seen"]);
        m.move_message("INBOX", uid(2), "Archive");
    });

    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.moved),
        (EntryState::Migrated, 0, 1)
    );
    assert_same_messages(&w, &FOLDERS);
    assert_ledger_matches(&w, &FOLDERS);
}

#[test]
fn a_uidvalidity_change_rekeys_the_ledger_and_copies_nothing() {
    let mut source = source_mailbox();
    // A gap, so that renumbering changes the UIDs too.
    source.move_message("INBOX", uid(1), "Archive");
    let w = World::new(source, FakeMailbox::new());
    w.pass();
    let target_before = w.dst();
    let old_uid_validity = w.src().uid_validity("INBOX");
    w.source.with(SOURCE, |m| m.renumber("INBOX", 4242));
    w.reset_counts();

    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.moved),
        (EntryState::Migrated, 0, 2)
    );
    let dst = w.dst();
    assert_eq!((dst.counts().appends, dst.counts().moves), (0, 0));
    for folder in FOLDERS {
        assert_eq!(contents(&dst, folder), contents(&target_before, folder));
    }
    assert_ledger_matches(&w, &FOLDERS);
    let inbox = w.store().ledger_folder(&w.entry.id, "INBOX").unwrap();
    assert_eq!(
        inbox
            .iter()
            .map(|r| (r.uid_validity, r.uid))
            .collect::<Vec<_>>(),
        [(validity(4242), uid(1)), (validity(4242), uid(2))]
    );
    assert!(
        w.ledger()
            .iter()
            .all(|r| r.uid_validity != old_uid_validity)
    );
}

#[test]
fn a_crash_between_intent_and_ok_is_reconciled_exactly_once() {
    a_crash_between_intent_and_ok(Kind::Blake3);
}

/// Intents in doubt that an earlier version left (SHA-256) are reconciled exactly too.
#[test]
fn intents_in_doubt_an_earlier_version_left_are_reconciled_exactly_once() {
    a_crash_between_intent_and_ok(Kind::Sha256);
}

/// A pass killed between intents and OKs, its ledger holding fingerprints of `kind`; the next
/// pass records the copies stored without an OK and copies the rest, once each.
fn a_crash_between_intent_and_ok(kind: Kind) {
    let mut source = FakeMailbox::new();
    for n in 1..=5 {
        source.deliver("INBOX", &mail(n), &["\\Seen"], "01-Mar-2024 09:15:00 +0100");
    }
    // Three APPENDs reached the server, the client read one OK, then the connection died.
    let mut target = FakeMailbox::new().with_multiappend(false);
    target.crash_after(3, 1);
    let w = World::new(source, target);
    // The first attempt made progress, so it would be retried at once: stopping the pass
    // leaves the ledger as a killed process would.
    w.stop.store(true, Ordering::SeqCst);

    let (_, crashed) = w.pass();
    w.stop.store(false, Ordering::SeqCst);
    assert_eq!(crashed.state, EntryState::Failed);
    assert_eq!(crashed.error.as_deref(), Some(LOST));
    assert_eq!(crashed.copied, 1);
    assert_eq!(w.dst().messages("INBOX").len(), 3);
    let states: Vec<(u32, LedgerState)> =
        w.ledger().iter().map(|r| (r.uid.get(), r.state)).collect();
    assert_eq!(
        states,
        [
            (1, LedgerState::Copied),
            (2, LedgerState::Pending),
            (3, LedgerState::Pending),
            (4, LedgerState::Pending),
            (5, LedgerState::Pending),
        ]
    );
    if kind == Kind::Sha256 {
        as_written_before_blake3(&w);
    }

    // Stored without an OK: recorded as copied; never stored: copied now.
    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 2));
    assert_eq!(w.dst().messages("INBOX").len(), 5);
    assert_same_messages(&w, &["INBOX"]);
    assert_ledger_matches(&w, &["INBOX"]);
    // Rows 1–3 keep the kind they were written with; 4 and 5 are this pass's copies.
    let kinds: Vec<(u32, Kind)> = w
        .ledger()
        .iter()
        .map(|r| (r.uid.get(), Kind::of(&r.fingerprint)))
        .collect();
    let b3 = Kind::Blake3;
    assert_eq!(kinds, [(1, kind), (2, kind), (3, kind), (4, b3), (5, b3)]);
}

/// Rewrites the entry's ledger as a version before BLAKE3 left it: each row's fingerprint
/// SHA-256 of its source message, its state and target UID as they were.
fn as_written_before_blake3(w: &World) {
    let rows = w.ledger();
    let src = w.src();
    let old: Vec<LedgerRow> = rows
        .iter()
        .map(|r| {
            let body = &src
                .messages(&r.source_folder)
                .iter()
                .find(|m| m.uid == r.uid)
                .expect("each row's message is still on the source")
                .body;
            LedgerRow {
                fingerprint: fingerprint_as(Kind::Sha256, body),
                state: LedgerState::Pending,
                ..r.clone()
            }
        })
        .collect();
    drop(src);
    let mut store = w.store();
    store
        .complete(&w.entry.id, &[], &rows.iter().collect::<Vec<_>>())
        .unwrap();
    store.insert_pending(&w.entry.id, &old).unwrap();
    let copied: Vec<(&LedgerRow, Option<Uid>)> = old
        .iter()
        .zip(&rows)
        .filter(|(_, r)| !r.is_pending())
        .map(|(o, r)| (o, r.target_uid))
        .collect();
    store.complete(&w.entry.id, &copied, &[]).unwrap();
    drop(store);
    assert!(
        w.ledger()
            .iter()
            .all(|r| Kind::of(&r.fingerprint) == Kind::Sha256)
    );
    assert_eq!(w.ledger().len(), rows.len());
}

/// Reconciliation fetches the target's candidates to judge the intents a killed pass left;
/// on a link that breaks every few messages that fetch never finishes in one attempt. What
/// each attempt matched is recorded before the break, so the next attempt goes on from there
/// (before, every attempt started over, made no progress, and the mailbox failed).
#[test]
fn a_reconciliation_cut_midway_keeps_what_it_matched_and_the_next_attempt_goes_on() {
    let source = inbox_of(10);
    // All ten APPENDs were stored, and the connection died before any OK was read.
    let mut target = FakeMailbox::new().with_multiappend(false);
    target.crash_after(10, 0);
    let mut w = World::new(source, target);
    w.stop.store(true, Ordering::SeqCst);
    let (_, crashed) = w.pass();
    w.stop.store(false, Ordering::SeqCst);
    assert_eq!((crashed.state, crashed.copied), (EntryState::Failed, 0));
    assert_eq!(w.dst().messages("INBOX").len(), 10);
    assert!(w.ledger().iter().all(|r| r.state == LedgerState::Pending));

    // Every target session from now on breaks after fetching four bodies.
    w.target.with(TARGET, |t| t.break_every(4));
    w.retries = 1;
    let (run, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.failed),
        (EntryState::Migrated, 0, 0),
        "{result:?}"
    );
    // Four, four and two candidates: three attempts, each with progress.
    assert!(w.dst().counts().logins >= 3, "{:?}", w.dst().counts());
    assert!(w.failures(run).is_empty());
    assert_eq!(w.dst().messages("INBOX").len(), 10);
    assert_same_messages(&w, &["INBOX"]);
    assert_ledger_matches(&w, &["INBOX"]);
}

#[test]
fn a_transient_failure_is_retried_and_the_pass_completes() {
    let mut source = source_mailbox();
    source.fail_next(Op::Fetch, transient("* BYE Server shutting down"));
    let mut w = World::new(source, FakeMailbox::new());
    w.retries = 2;

    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 7));
    assert_eq!(result.error, None);
    assert_eq!(w.src().counts().logins, 2);
    assert_same_messages(&w, &FOLDERS);
    assert_ledger_matches(&w, &FOLDERS);
}

#[test]
fn a_refused_login_fails_the_entry_with_the_servers_words_and_no_retry() {
    let mut target = FakeMailbox::new();
    target.refuse_login("[AUTHENTICATIONFAILED] Authentication failed.");
    let mut w = World::new(source_mailbox(), target);
    w.retries = 3;

    let (_, result) = w.pass();
    assert_eq!(result.state, EntryState::Failed);
    assert_eq!(
        result.error.as_deref(),
        Some("target login: [AUTHENTICATIONFAILED] Authentication failed.")
    );
    assert_eq!(w.dst().counts().logins, 1);
    assert!(w.ledger().is_empty());
}

#[test]
fn skip_deleted_leaves_deleted_messages_out_and_counts_them_skipped() {
    let mut source = source_mailbox();
    source.deliver(
        "INBOX",
        &mail(8),
        &["\\Deleted", "\\Seen"],
        "05-Mar-2024 08:00:00 +0000",
    );
    source.deliver(
        "Lists",
        &mail(9),
        &["\\Deleted"],
        "05-Mar-2024 08:00:00 +0000",
    );
    let mut w = World::new(source, FakeMailbox::new());
    w.settings.skip_deleted = true;

    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.skipped),
        (EntryState::Migrated, 7, 2)
    );
    let (src, dst) = (w.src(), w.dst());
    for folder in FOLDERS {
        let kept = contents_where(&src, folder, |m| !m.flags.is_deleted());
        assert_eq!(contents(&dst, folder), kept, "{folder}");
    }
    let ledgered: Vec<_> = w.ledger().into_iter().map(|r| r.fingerprint).collect();
    assert_eq!(ledgered.len(), 7);
    assert!(!ledgered.contains(&fingerprint(&mail(8))));
    assert!(!ledgered.contains(&fingerprint(&mail(9))));
}

#[test]
fn a_date_range_leaves_messages_outside_it_out_and_counts_them_skipped() {
    let mut source = FakeMailbox::new();
    // SINCE and BEFORE compare the day of INTERNALDATE, ignoring time and zone.
    source.deliver("INBOX", &mail(1), &[], "31-Dec-2019 23:59:59 -1200");
    source.deliver("INBOX", &mail(2), &[], "01-Jan-2020 00:00:00 +1400");
    source.deliver("INBOX", &mail(3), &["\\Seen"], "31-Dec-2020 23:59:59 +0000");
    source.deliver("INBOX", &mail(4), &[], " 1-Jan-2021 00:00:00 +0000");
    // A second folder: each folder's SEARCH must follow its own SELECT, so no scan goes
    // ahead of it (the fake fails a SEARCH sent while other answers are unread).
    source.add_folder("Archive");
    source.deliver("Archive", &mail(5), &[], "15-Jun-2020 12:00:00 +0000");
    let mut w = World::new(source, FakeMailbox::new());
    w.settings.since = Some(Date::new(2020, 1, 1).unwrap());
    w.settings.until = Some(Date::new(2021, 1, 1).unwrap());

    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.skipped),
        (EntryState::Migrated, 3, 2)
    );
    assert_eq!(
        contents(&w.dst(), "INBOX"),
        contents_where(&w.src(), "INBOX", |m| m.uid == uid(2) || m.uid == uid(3))
    );
    assert_eq!(contents(&w.dst(), "Archive"), contents(&w.src(), "Archive"));
    let mut uids: Vec<u32> = w.ledger().iter().map(|r| r.uid.get()).collect();
    uids.sort_unstable();
    assert_eq!(uids, [1, 2, 3]);
}

#[test]
fn a_retried_pass_counts_each_skipped_message_once() {
    let mut source = source_mailbox();
    source.deliver(
        "Lists",
        &mail(8),
        &["\\Deleted"],
        "05-Mar-2024 08:00:00 +0000",
    );
    source.fail_next(Op::Fetch, transient("* BYE Server shutting down"));
    let mut w = World::new(source, FakeMailbox::new());
    w.settings.skip_deleted = true;
    w.retries = 1;

    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 7));
    assert_eq!(result.skipped, 1, "{result:?}");
}

#[test]
fn a_retried_pass_records_a_refused_message_once() {
    let words = "[LIMIT] Message too large";
    let mut source = source_mailbox();
    let mut big = mail(8);
    big.extend_from_slice(b"TOO-LARGE\r\n");
    source.deliver("INBOX", &big, &[], "05-Mar-2024 08:00:00 +0000");
    // INBOX is fetched first; the fetch of the next folder breaks the connection.
    source.fail_nth(Op::Fetch, 2, transient("* BYE Server shutting down"));
    let mut target = FakeMailbox::new();
    target.refuse_bodies_containing(b"TOO-LARGE", words);
    let mut w = World::new(source, target);
    w.retries = 1;

    let (run, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Partial, 7));
    assert_eq!(result.failed, 1, "{result:?}");
    assert_eq!(w.failures(run).len(), 1, "{:#?}", w.failures(run));
}

/// A source whose only folder is INBOX, with `n` messages.
fn inbox_of(n: u32) -> FakeMailbox {
    let mut m = FakeMailbox::new();
    for i in 1..=n {
        m.deliver("INBOX", &mail(i), &["\\Seen"], "01-Mar-2024 09:15:00 +0100");
    }
    m
}

#[test]
fn a_connection_that_breaks_every_few_messages_completes_the_pass_exactly() {
    let mut source = inbox_of(30);
    source.break_every(3);
    let mut w = World::new(source, FakeMailbox::new());
    w.retries = 4;

    let (run, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.failed),
        (EntryState::Migrated, 30, 0),
        "{result:?}"
    );
    assert_eq!(result.error, None);
    // Ten attempts broke, far more than the four retries a pass without progress gets.
    assert!(w.src().counts().logins >= 10, "{:?}", w.src().counts());
    assert!(w.failures(run).is_empty());
    assert_same_messages(&w, &["INBOX"]);
    assert_ledger_matches(&w, &["INBOX"]);
}

/// A folder larger than a link carries between two drops: each attempt's scan is cut off, and
/// the next one reads on from the last UID read (before, each scan started over, no attempt
/// made progress, and the mailbox failed with nothing copied).
#[test]
fn a_scan_cut_every_few_messages_goes_on_from_the_last_uid_in_the_next_attempt() {
    let mut source = inbox_of(30).with_condstore(false);
    source.break_scans_every(8);
    let mut w = World::new(source, FakeMailbox::new());
    w.retries = 1;

    let (run, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.failed),
        (EntryState::Migrated, 30, 0),
        "{result:?}"
    );
    // 8, 8, 8 and 6 messages: four attempts; each after the first read the folder's UIDs
    // and then only the messages after the last one read.
    assert_eq!(w.src().counts().logins, 4, "{:?}", w.src().counts());
    assert_eq!(w.src().counts().scans, 4, "{:?}", w.src().counts());
    assert!(w.failures(run).is_empty());
    assert_same_messages(&w, &["INBOX"]);
    assert_ledger_matches(&w, &["INBOX"]);
}

/// The same for a delta (`CHANGEDSINCE`) too large for the link: every message's flags
/// changed, and each attempt reads on from the last UID the one before it read.
#[test]
fn a_delta_scan_cut_every_few_messages_goes_on_from_the_last_uid_in_the_next_attempt() {
    let mut w = World::new(inbox_of(30), FakeMailbox::new());
    let (_, first) = w.pass();
    assert_eq!((first.state, first.copied), (EntryState::Migrated, 30));
    w.source.with(SOURCE, |m| {
        for n in 1..=30 {
            m.set_message_flags("INBOX", uid(n), &["\\Seen", "\\Flagged"]);
        }
        m.reset_counts();
        m.break_scans_every(8);
    });
    w.retries = 1;

    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.flags_updated),
        (EntryState::Migrated, 30),
        "{result:?}"
    );
    // Four deltas of 8, 8, 8 and 6 messages, and never a scan of every message.
    let counts = w.src().counts().clone();
    assert_eq!((counts.changed_scans, counts.scans), (4, 0), "{counts:?}");
    assert_same_messages(&w, &["INBOX"]);
    assert_ledger_matches(&w, &["INBOX"]);
}

/// A message moved out of the part of a folder an earlier attempt scanned is seen gone when
/// the next attempt goes on, so it is moved on the target, not copied a second time.
#[test]
fn a_message_moved_between_two_attempts_of_a_cut_scan_is_moved_not_copied_again() {
    let mut source = inbox_of(20).with_condstore(false);
    source.add_folder("Archive");
    let mut w = World::new(source, FakeMailbox::new());
    let (_, first) = w.pass();
    assert_eq!((first.state, first.copied), (EntryState::Migrated, 20));

    w.source.with(SOURCE, |s| {
        s.break_scans_every(8);
        // Between the first attempt (UIDs 1-8 read, then cut) and the second.
        s.move_before_login(2, "INBOX", uid(3), "Archive");
    });
    w.retries = 1;
    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.moved),
        (EntryState::Migrated, 0, 1),
        "{result:?}"
    );
    assert_eq!(w.dst().messages("INBOX").len(), 19);
    assert_eq!(w.dst().messages("Archive").len(), 1);
    assert_same_messages(&w, &["INBOX", "Archive"]);
    assert_ledger_matches(&w, &["INBOX", "Archive"]);
}

/// Scanning counts as progress only for the messages a folder held when its scan began: new
/// mail read by each retried attempt does not keep a pass retrying that fails every time.
#[test]
fn new_mail_between_attempts_does_not_keep_a_failing_pass_retrying() {
    let mut source = inbox_of(5).with_condstore(false);
    for login in 2..=10 {
        source.deliver_before_login(login, "INBOX", &mail(100 + login));
    }
    for _ in 0..10 {
        source.fail_next(Op::Fetch, transient("* BYE Server shutting down"));
    }
    let mut w = World::new(source, FakeMailbox::new());
    w.retries = 2;

    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Failed, 0));
    // The first attempt and two retries: the messages the retries read on from the kept scan
    // all arrived after it began.
    assert_eq!(w.src().counts().logins, 3, "{:?}", w.src().counts());
}

/// Flag updates stored before the connection broke are recorded: the next attempt (or pass)
/// stores only the rest, and the attempt that stored them made progress.
#[test]
fn flag_updates_stored_before_a_break_are_recorded_and_not_stored_again() {
    let w = World::new(inbox_of(4), FakeMailbox::new());
    let (_, first) = w.pass();
    assert_eq!((first.state, first.copied), (EntryState::Migrated, 4));
    w.source.with(SOURCE, |m| {
        m.set_message_flags("INBOX", uid(1), &["\\Seen", "\\Flagged"]);
        m.set_message_flags("INBOX", uid(2), &["\\Seen", "\\Flagged"]);
        m.set_message_flags("INBOX", uid(3), &["$Work"]);
    });
    // Two flag sets, so two STOREs, `$Work` first: the second one breaks the connection.
    w.target.with(TARGET, |t| {
        t.reset_counts();
        t.fail_nth(Op::Store, 2, transient("* BYE Server shutting down"));
    });

    // The attempt made progress, so it would be retried at once: stopping the pass leaves
    // what the break left.
    w.stop.store(true, Ordering::SeqCst);
    let (_, cut) = w.pass();
    w.stop.store(false, Ordering::SeqCst);
    assert_eq!(
        (cut.state, cut.flags_updated),
        (EntryState::Failed, 1),
        "{cut:?}"
    );
    let recorded: Vec<(u32, String)> = w
        .ledger()
        .iter()
        .map(|r| (r.uid.get(), r.flags.to_string()))
        .collect();
    let source: Vec<(u32, String)> = w
        .src()
        .messages("INBOX")
        .iter()
        .map(|m| (m.uid.get(), m.flags.to_string()))
        .collect();
    // Message 3's update is recorded as stored; the \Flagged pair's is not.
    assert_eq!(recorded[2], source[2]);
    assert_ne!(recorded[..2], source[..2]);

    let (_, result) = w.pass();
    assert_eq!(
        (result.state, result.flags_updated),
        (EntryState::Migrated, 2)
    );
    // `$Work` once, and the \\Flagged pair once it got through (the STORE that broke never
    // reached the server).
    assert_eq!(w.dst().counts().flag_stores, 2, "{:?}", w.dst().counts());
    assert_same_messages(&w, &["INBOX"]);
    assert_ledger_matches(&w, &["INBOX"]);
}

/// A link that drops every 250 kB sent, with groups of APPENDs larger than that: a
/// MULTIAPPEND stores all or nothing, so the first groups are lost whole, and the attempts
/// after them send smaller groups until they fit. (Before, every attempt lost its first group
/// and the mailbox failed with nothing copied.) Each attempt waits out reconciliation's quiet
/// period (2 s), hence so few messages.
#[test]
fn groups_shrink_below_a_link_that_drops_every_few_hundred_kilobytes() {
    let mut source = FakeMailbox::new();
    for i in 1..=60 {
        let mut body = mail(i);
        body.resize(10_000, b'x');
        source.deliver("INBOX", &body, &["\\Seen"], "01-Mar-2024 09:15:00 +0100");
    }
    let mut target = FakeMailbox::new();
    target.cut_uploads_after(250_000);
    let mut w = World::new(source, target);
    w.retries = 4;

    let (run, result) = w.pass();
    assert_eq!(
        (result.state, result.copied, result.failed),
        (EntryState::Migrated, 60, 0),
        "{result:?}"
    );
    // 600 kB over connections that carry 250 kB each.
    assert!(w.dst().counts().logins >= 3, "{:?}", w.dst().counts());
    assert!(w.failures(run).is_empty());
    assert_same_messages(&w, &["INBOX"]);
    assert_ledger_matches(&w, &["INBOX"]);
}

/// The group on the wire holds budget that the next batch needs: the appender finishes that
/// group rather than wait for a message the fetcher cannot fetch before the group is done.
/// (Before, the pass waited for ever; the watchdog turns that into a failure.)
#[test]
fn a_batch_that_needs_the_budget_a_stored_group_holds_does_not_wait_for_ever() {
    let mut source = FakeMailbox::new();
    let bodies: Vec<Vec<u8>> = (1..=3u8)
        .map(|i| {
            let mut body = mail(u32::from(i));
            body.resize(3 << 20, b'a' + i);
            body
        })
        .collect();
    for body in &bodies {
        source.deliver("INBOX", body, &["\\Seen"], "01-Mar-2024 09:15:00 +0100");
    }
    let mut w = World::new(source, FakeMailbox::new());
    // Room for one 3 MB message at a time: each batch waits for the group before it.
    w.budget = 4 << 20;
    let (done, watchdog) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (_, result) = w.pass();
        done.send((w, result)).unwrap();
    });
    let (w, result) = watchdog
        .recv_timeout(Duration::from_secs(60))
        .expect("the pass finished (it waited for budget that nothing would give back)");
    assert_eq!(
        (result.state, result.copied, result.failed),
        (EntryState::Migrated, 3, 0),
        "{result:?}"
    );
    assert_same_messages(&w, &["INBOX"]);
    assert_ledger_matches(&w, &["INBOX"]);
}

#[test]
fn attempts_that_make_no_progress_fail_the_entry_after_the_budget_with_the_servers_words() {
    let mut source = inbox_of(5);
    for _ in 0..10 {
        source.fail_next(Op::Fetch, transient("* BYE Server shutting down"));
    }
    let mut w = World::new(source, FakeMailbox::new());
    w.retries = 4;

    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Failed, 0));
    assert_eq!(
        result.error.as_deref(),
        Some("source: * BYE Server shutting down")
    );
    // The first attempt and four retries.
    assert_eq!(w.src().counts().logins, 5);
    assert!(w.dst().messages("INBOX").is_empty());
    assert!(w.ledger().is_empty());
}

#[test]
fn a_stop_is_obeyed_between_attempts_and_the_failure_is_not_retried() {
    let mut source = inbox_of(5);
    source.fail_next(Op::Fetch, transient("* BYE Server shutting down"));
    let mut w = World::new(source, FakeMailbox::new());
    w.retries = 4;
    w.stop.store(true, Ordering::SeqCst);

    let (_, result) = w.pass();
    assert_eq!(result.state, EntryState::Failed);
    assert_eq!(
        result.error.as_deref(),
        Some("source: * BYE Server shutting down")
    );
    assert_eq!(w.src().counts().logins, 1);
}

#[test]
fn backoff_doubles_with_up_to_half_again_of_jitter_is_capped_and_restarts_after_progress() {
    let first = Duration::from_secs(1);
    let max = Duration::from_secs(60);
    let mut b = Backoff::new(first, max, "u1");
    for base in [1, 2, 4, 8, 16, 32] {
        let base = Duration::from_secs(base);
        let wait = b.next();
        assert!(
            wait >= base && wait <= base + base / 2,
            "{wait:?} for {base:?}"
        );
    }
    for _ in 0..3 {
        assert_eq!(b.next(), max);
    }
    b.reset();
    let wait = b.next();
    assert!(wait >= first && wait <= first + first / 2, "{wait:?}");
}

/// Copies made by APPENDs of a process that lost the lease (orphans): the next pass removes
/// the one the ledger does not name, keeps the one it names (adopted by a reconciliation),
/// and forgets one whose UID holds another message or whose folder was renumbered, without
/// touching the target for them.
#[test]
fn the_next_pass_removes_orphans_the_ledger_does_not_name() {
    use crate::ports::store::Orphan;
    let mut src = FakeMailbox::new();
    src.deliver("INBOX", &mail(1), &["\\Seen"], "01-Mar-2024 09:15:00 +0100");
    src.deliver("INBOX", &mail(2), &[], "02-Mar-2024 10:00:00 +0000");
    let w = World::new(src, FakeMailbox::new());
    assert_eq!(w.pass().1.state, EntryState::Migrated);
    // The late APPEND of a paused process: mail 1 once more, and an unrelated message.
    let late = w.target.with(TARGET, |m| {
        m.deliver("INBOX", &mail(1), &["\\Seen"], "01-Mar-2024 09:15:00 +0100")
    });
    let other = w.target.with(TARGET, |m| {
        m.deliver("INBOX", &mail(50), &[], "05-Mar-2024 10:00:00 +0000")
    });
    let validity_now = w.dst().uid_validity("INBOX");
    let adopted = w
        .ledger()
        .into_iter()
        .find(|r| r.fingerprint == fingerprint(&mail(2)))
        .and_then(|r| r.target_uid)
        .unwrap();
    let orphan = |uid, uid_validity, body: &[u8]| Orphan {
        target_folder: "INBOX".into(),
        uid_validity,
        uid,
        fingerprint: fingerprint(body),
    };
    let mut orphans = [
        orphan(late, validity_now, &mail(1)),
        orphan(adopted, validity_now, &mail(2)),
        orphan(other, validity_now, &mail(3)),
        orphan(other, validity(validity_now.get() + 1), &mail(50)),
    ];
    // The late copy's orphan as a version before BLAKE3 recorded it: still recognised.
    orphans[0].fingerprint = fingerprint_as(Kind::Sha256, &mail(1));
    w.store().record_orphans(&w.entry.id, &orphans).unwrap();
    let (_, result) = w.pass();
    assert_eq!(result.state, EntryState::Migrated, "{:?}", result.error);
    assert_eq!(result.copied, 0);
    assert!(w.store().orphans(&w.entry.id).unwrap().is_empty());
    let dst = w.dst();
    let uids: Vec<_> = dst.messages("INBOX").iter().map(|m| m.uid).collect();
    assert!(!uids.contains(&late), "the late copy is removed");
    assert!(uids.contains(&adopted), "the adopted copy stays");
    assert!(
        uids.contains(&other),
        "another message at a recorded UID stays"
    );
    assert_eq!(
        contents_where(&dst, "INBOX", |m| m.uid != other),
        contents(&w.src(), "INBOX")
    );
    assert_ledger_matches(&w, &["INBOX"]);
}

/// Orphans on a link that breaks every few messages: each attempt confirms the ones its cut
/// FETCH received before the link broke, the next removes them without fetching them again,
/// and both count as progress, so the pass gets through a dozen of them with one retry
/// allowed in a row without progress.
#[test]
fn orphans_are_removed_part_by_part_over_a_link_that_keeps_breaking() {
    use crate::ports::store::Orphan;
    let mut src = FakeMailbox::new();
    src.deliver("INBOX", &mail(1), &["\\Seen"], "01-Mar-2024 09:15:00 +0100");
    src.deliver("INBOX", &mail(2), &[], "02-Mar-2024 10:00:00 +0000");
    let mut w = World::new(src, FakeMailbox::new());
    assert_eq!(w.pass().1.state, EntryState::Migrated);
    let validity_now = w.dst().uid_validity("INBOX");
    let orphans: Vec<Orphan> = (100..112)
        .map(|n| {
            let uid = w.target.with(TARGET, |m| {
                m.deliver("INBOX", &mail(n), &[], "05-Mar-2024 10:00:00 +0000")
            });
            Orphan {
                target_folder: "INBOX".into(),
                uid_validity: validity_now,
                uid,
                fingerprint: fingerprint(&mail(n)),
            }
        })
        .collect();
    w.store().record_orphans(&w.entry.id, &orphans).unwrap();
    w.target.with(TARGET, |m| m.break_every(3));
    w.retries = 1;
    let (_, result) = w.pass();
    assert_eq!(result.state, EntryState::Migrated, "{:?}", result.error);
    assert!(w.store().orphans(&w.entry.id).unwrap().is_empty());
    let dst = w.dst();
    assert_eq!(contents(&dst, "INBOX"), contents(&w.src(), "INBOX"));
    assert_ledger_matches(&w, &["INBOX"]);
}

/// On a source whose tree brings some folders' STATUS (LIST-STATUS), those cost no STATUS
/// command; the others are asked for. Unchanged folders cost nothing more, and a change in a
/// listed folder and in an asked one is each found by the next pass.
#[test]
fn statuses_that_come_with_the_tree_are_not_asked_for_again() {
    // INBOX, Archive and Archive/2020 come with the tree; Sent and Lists are asked for.
    let listed: fn(&str) -> bool = |name| name.starts_with("INBOX") || name.starts_with("Archive");
    let w = World::new(
        source_mailbox().with_list_status(listed),
        FakeMailbox::new(),
    );
    w.pass();
    assert_same_messages(&w, &FOLDERS);
    w.reset_counts();

    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 0));
    let src = w.src().counts().clone();
    assert_eq!((src.statuses, src.selects, src.lists), (2, 0, 1));

    w.source.with(SOURCE, |m| {
        m.deliver("Archive", &mail(8), &[], "05-Mar-2024 10:00:00 +0000");
        m.deliver("Lists", &mail(9), &[], "06-Mar-2024 10:00:00 +0000");
    });
    w.reset_counts();
    let (_, result) = w.pass();
    assert_eq!((result.state, result.copied), (EntryState::Migrated, 2));
    assert_eq!(w.src().counts().statuses, 2);
    assert_same_messages(&w, &FOLDERS);
    assert_ledger_matches(&w, &FOLDERS);
}

use std::fs::{self, File};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use mailferry_core::folders::{FolderPath, SpecialUse};
use mailferry_core::testing::uid;

use super::*;

fn target(root: &Path) -> MaildirSession {
    open(root, "alice", true).expect("open")
}

fn flags(list: &[&str]) -> Flags {
    Flags::from_server(list)
}

fn outgoing<'a>(flags: &'a Flags, date: Option<&'a str>, body: &'a [u8]) -> Outgoing<'a> {
    Outgoing {
        flags,
        internal_date: date,
        body,
    }
}

/// Sends one group of appends and reads its outcomes.
fn append_all(
    s: &mut MaildirSession,
    folder: &str,
    messages: &[Outgoing<'_>],
) -> Vec<AppendOutcome> {
    let ticket = s.send_appends(folder, messages).expect("send");
    s.finish_appends(ticket, messages).expect("finish")
}

/// The outcome of appending one message.
fn append_one(
    s: &mut MaildirSession,
    folder: &str,
    list: &[&str],
    date: Option<&str>,
    body: &[u8],
) -> AppendOutcome {
    let flags = flags(list);
    let mut outcomes = append_all(s, folder, &[outgoing(&flags, date, body)]);
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    outcomes.remove(0)
}

/// Appends one message and returns its UID.
fn append(s: &mut MaildirSession, folder: &str, list: &[&str], body: &[u8]) -> u32 {
    append_dated(s, folder, list, None, body)
}

fn append_dated(
    s: &mut MaildirSession,
    folder: &str,
    list: &[&str],
    date: Option<&str>,
    body: &[u8],
) -> u32 {
    match append_one(s, folder, list, date, body) {
        AppendOutcome::Stored(Some(uid)) => uid.get(),
        other => panic!("not stored: {other:?}"),
    }
}

fn scan(s: &mut MaildirSession, from: u32) -> Vec<ScannedMessage> {
    let mut out = Vec::new();
    s.scan(uid(from), &mut |m| out.push(m)).expect("scan");
    out
}

fn all_uids(s: &mut MaildirSession) -> Vec<u32> {
    scan(s, 1).iter().map(|m| m.uid.get()).collect()
}

fn fetch(s: &mut MaildirSession, uids: &[u32]) -> Vec<FetchedMessage> {
    let mut out = Vec::new();
    let uids: Vec<Uid> = uids.iter().map(|&n| uid(n)).collect();
    s.fetch(&uids, &mut |m| {
        out.push(m);
        ControlFlow::Continue(())
    })
    .expect("fetch");
    out
}

/// Every message of the selected folder, with its body.
fn fetch_all(s: &mut MaildirSession) -> Vec<FetchedMessage> {
    let uids = all_uids(s);
    fetch(s, &uids)
}

fn uids(fetched: &[FetchedMessage]) -> Vec<u32> {
    fetched.iter().map(|m| m.uid.get()).collect()
}

fn date(f: &FetchedMessage) -> &str {
    f.internal_date.as_deref().expect("INTERNALDATE")
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    names
}

fn refused_with(code: &str) -> SessionErrorKind {
    SessionErrorKind::Refused {
        code: Some(code.to_owned()),
    }
}

const MESSAGES: [&[u8]; 5] = [
    b"Subject: crlf\r\n\r\nBody\r\n",
    b"Subject: bare lf\n\nline one\nline two\n",
    b"Subject: bare cr\r\rold Mac\r",
    b"Subject: 8bit\r\n\r\n\xc3\xbc \xff\x00\x80 end",
    b"",
];

/// What a fetch gives for each of [`MESSAGES`]: the bytes stored, with CRLF where a line
/// ended in a bare LF.
const FETCHED: [&[u8]; 5] = [
    b"Subject: crlf\r\n\r\nBody\r\n",
    b"Subject: bare lf\r\n\r\nline one\r\nline two\r\n",
    b"Subject: bare cr\r\rold Mac\r",
    b"Subject: 8bit\r\n\r\n\xc3\xbc \xff\x00\x80 end",
    b"",
];

#[test]
fn appended_messages_are_stored_byte_for_byte_and_fetched_with_crlf() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    let (first, rest) = MESSAGES.split_at(2);
    for m in first {
        append(&mut s, "INBOX", &[], m);
    }
    let none = Flags::default();
    let group: Vec<Outgoing<'_>> = rest.iter().map(|m| outgoing(&none, None, m)).collect();
    assert_eq!(
        append_all(&mut s, "INBOX", &group),
        [3, 4, 5].map(|n| AppendOutcome::Stored(Some(uid(n))))
    );

    s.select("INBOX", false).expect("select");
    let sizes: Vec<(u32, u64)> = scan(&mut s, 1)
        .iter()
        .map(|m| (m.uid.get(), m.size))
        .collect();
    let expected: Vec<(u32, u64)> = (1..).zip(MESSAGES.map(|m| m.len() as u64)).collect();
    assert_eq!(sizes, expected);
    let fetched = fetch(&mut s, &[1, 2, 3, 4, 5]);
    assert_eq!(uids(&fetched), [1, 2, 3, 4, 5]);
    for (f, m) in fetched.iter().zip(FETCHED) {
        assert_eq!(f.body, m);
    }
    // On disk, the bytes given.
    let mut on_disk: Vec<Vec<u8>> = fs::read_dir(root.path().join("alice/cur"))
        .expect("read cur")
        .map(|e| fs::read(e.expect("entry").path()).expect("read"))
        .collect();
    on_disk.sort();
    let mut given: Vec<Vec<u8>> = MESSAGES.iter().map(|m| m.to_vec()).collect();
    given.sort();
    assert_eq!(on_disk, given);
}

#[test]
fn a_delivered_file_with_bare_lf_is_read_with_crlf_and_nothing_else_changes() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    append(&mut s, "INBOX", &[], b"first");
    for (name, bytes) in [
        (
            "1700000001.M1P1.mx",
            &b"\nSubject: starts with LF\n\nx\n\n"[..],
        ),
        (
            "1700000002.M2P2.mx",
            b"Subject: mixed\r\n\nlone CR\r here\r\r\nend\n",
        ),
        ("1700000003.M3P3.mx", b"no line end at all"),
    ] {
        fs::write(root.path().join("alice/new").join(name), bytes).expect("deliver");
    }
    s.select("INBOX", false).expect("select");
    let bodies: Vec<Vec<u8>> = fetch(&mut s, &[2, 3, 4])
        .into_iter()
        .map(|f| f.body)
        .collect();
    assert_eq!(
        bodies,
        [
            &b"\r\nSubject: starts with LF\r\n\r\nx\r\n\r\n"[..],
            b"Subject: mixed\r\n\r\nlone CR\r here\r\r\nend\r\n",
            b"no line end at all",
        ]
    );
}

#[test]
fn a_scan_starts_at_its_uid_and_a_fetch_takes_what_exists_in_uid_order() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    append(&mut s, "INBOX", &["\\Seen"], b"one");
    append(&mut s, "INBOX", &[], b"two!");
    s.select("INBOX", false).expect("select");
    assert_eq!(
        scan(&mut s, 2),
        [ScannedMessage {
            uid: uid(2),
            flags: Flags::default(),
            size: 4
        }]
    );
    assert_eq!(scan(&mut s, 1)[0].flags, flags(&["\\Seen"]));
    // Unlike IMAP's `n:*`, a scan past the end holds nothing.
    assert_eq!(scan(&mut s, 3), []);
    assert_eq!(uids(&fetch(&mut s, &[2, 9, 1, 2])), [1, 2]);
    assert_eq!(uids(&fetch(&mut s, &[3, 9])), Vec::<u32>::new());
}

#[test]
fn a_fetch_stops_when_the_other_side_does() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    for m in [&b"one"[..], b"two", b"three"] {
        append(&mut s, "INBOX", &[], m);
    }
    s.select("INBOX", false).expect("select");
    let mut seen = Vec::new();
    let err = s
        .fetch(&[uid(1), uid(2), uid(3)], &mut |m| {
            seen.push(m.uid);
            ControlFlow::Break(())
        })
        .expect_err("stopped");
    assert_eq!(
        err,
        SessionError::new(SessionErrorKind::Aborted, "the target side stopped")
    );
    assert_eq!(seen, [uid(1)]);
}

#[test]
fn a_fetch_without_a_selected_folder_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    let err = s
        .fetch(&[uid(1)], &mut |_| ControlFlow::Continue(()))
        .expect_err("nothing selected");
    assert_eq!(
        err.to_string(),
        "UID FETCH rejected by the server: No mailbox selected"
    );
}

#[test]
fn flags_and_keywords_are_stored_as_dovecot_stores_them() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    let list = ["\\Seen", "\\flagged", "$Label1", "NonJunk", "\\Recent"];
    let uid = append(&mut s, "INBOX", &list, b"m");

    let cur = root.path().join("alice/cur");
    let names = files(&cur);
    assert_eq!(names.len(), 1);
    assert!(names[0].ends_with(":2,FSab"), "{}", names[0]);
    assert_eq!(
        fs::read_to_string(root.path().join("alice/dovecot-keywords")).expect("keywords"),
        "0 $Label1\n1 NonJunk\n"
    );

    s.select("INBOX", true).expect("select");
    assert_eq!(
        fetch(&mut s, &[uid])[0].flags,
        flags(&["\\Flagged", "\\Seen", "$Label1", "NonJunk"])
    );

    s.set_flags(
        &[mailferry_core::testing::uid(uid)],
        &flags(&["\\Answered", "nonjunk", "$Forwarded"]),
    )
    .expect("store");
    assert!(files(&cur)[0].ends_with(":2,Rbc"), "{:?}", files(&cur));
    let mut reopened = target(root.path());
    reopened.select("INBOX", false).expect("select");
    assert_eq!(
        scan(&mut reopened, 1)[0].flags,
        flags(&["\\Answered", "NonJunk", "$Forwarded"])
    );
}

#[test]
fn letters_this_module_does_not_know_survive_a_flag_change() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    let cur = root.path().join("alice/cur");
    fs::write(cur.join("1.M1P1.host:2,PS"), b"passed").expect("write");
    s.select("INBOX", true).expect("select");
    s.set_flags(&[uid(1)], &flags(&["\\Flagged"]))
        .expect("store");
    assert_eq!(files(&cur), ["1.M1P1.host:2,FP"]);
    assert_eq!(scan(&mut s, 1)[0].flags, flags(&["\\Flagged"]));
}

#[test]
fn a_twenty_seventh_keyword_is_refused_and_nothing_is_stored() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    let many: Vec<String> = (0..26).map(|i| format!("k{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    append(&mut s, "INBOX", &many, b"full");
    match append_one(&mut s, "INBOX", &["one-too-many"], None, b"refused") {
        AppendOutcome::Refused(words) => {
            assert!(words.starts_with("APPEND failed: "), "{words}");
            assert!(words.contains("at most 26 keywords"), "{words}");
        }
        other => panic!("not refused: {other:?}"),
    }
    assert_eq!(s.status("INBOX").expect("status").messages, 1);
}

#[test]
fn internaldate_round_trips_to_the_second_in_utc() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    for (given, body) in [
        ("17-Jul-1996 02:44:25 -0700", b"a"),
        (" 2-Jan-2006 15:04:05 +0000", b"b"),
        ("31-Dec-1969 23:59:59 +0000", b"c"),
    ] {
        append_dated(&mut s, "INBOX", &[], Some(given), body);
    }
    s.select("INBOX", false).expect("select");
    let dates: Vec<String> = fetch_all(&mut s)
        .iter()
        .map(|f| date(f).to_owned())
        .collect();
    assert_eq!(
        dates,
        [
            "17-Jul-1996 09:44:25 +0000",
            "02-Jan-2006 15:04:05 +0000",
            "31-Dec-1969 23:59:59 +0000"
        ]
    );
}

#[test]
fn a_message_without_a_date_is_dated_now() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    append(&mut s, "INBOX", &[], b"now");
    s.select("INBOX", false).expect("select");
    let fetched = fetch(&mut s, &[1]);
    let parsed = parse_internal_date(date(&fetched[0])).expect("date");
    let age = SystemTime::now()
        .duration_since(parsed)
        .expect("not in the future");
    assert!(age.as_secs() < 60, "{}", date(&fetched[0]));
}

#[test]
fn an_invalid_date_refuses_the_message() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    assert_eq!(
        append_one(&mut s, "INBOX", &[], Some("yesterday"), b"x"),
        AppendOutcome::Refused("APPEND failed: Invalid date-time \"yesterday\"".to_owned())
    );
    assert!(files(&root.path().join("alice/cur")).is_empty());
}

#[test]
fn one_refused_message_refuses_the_whole_group_store() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    let (good, bad) = (Flags::default(), flags(&["\\Bogus"]));
    let group = [
        outgoing(&good, None, b"fine"),
        outgoing(&bad, None, b"not fine"),
    ];
    let err = s.store_messages("INBOX", &group).expect_err("refused");
    assert_eq!(
        err.to_string(),
        "APPEND failed: Unknown system flag \\Bogus"
    );
    assert_eq!(s.status("INBOX").expect("status").messages, 0);
    assert!(files(&root.path().join("alice/cur")).is_empty());
}

#[test]
fn a_refused_group_keeps_its_good_messages_and_fails_only_the_bad_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    let none = Flags::default();
    let group = [
        outgoing(&none, Some("01-Feb-2020 10:00:00 +0000"), b"first"),
        outgoing(&none, Some("yesterday"), b"badly dated"),
        outgoing(&none, None, b"third"),
    ];
    let ticket = s.send_appends("INBOX", &group).expect("send");
    assert!(ticket.atomic);
    assert_eq!(ticket.count, 3);
    assert_eq!(
        s.finish_appends(ticket, &group).expect("finish"),
        [
            AppendOutcome::Stored(Some(uid(1))),
            AppendOutcome::Refused("APPEND failed: Invalid date-time \"yesterday\"".to_owned()),
            AppendOutcome::Stored(Some(uid(2))),
        ]
    );
    s.select("INBOX", false).expect("select");
    let fetched = fetch_all(&mut s);
    let bodies: Vec<&[u8]> = fetched.iter().map(|f| f.body.as_slice()).collect();
    assert_eq!(bodies, [&b"first"[..], b"third"]);
    assert_eq!(date(&fetched[0]), "01-Feb-2020 10:00:00 +0000");

    // A ticket is read once; one this session never gave out is an error.
    let unknown = AppendTicket {
        folder: "INBOX".to_owned(),
        count: 1,
        handle: vec!["0".to_owned()],
        atomic: true,
    };
    assert!(s.finish_appends(unknown, &group[..1]).is_err());
}

#[test]
fn uids_and_uidvalidity_survive_a_new_session() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    for m in [&b"one"[..], b"two", b"three"] {
        append(&mut s, "INBOX", &[], m);
    }
    let before = s.select("INBOX", false).expect("select");
    let bodies = |s: &mut MaildirSession| -> Vec<(u32, Vec<u8>)> {
        fetch_all(s)
            .into_iter()
            .map(|f| (f.uid.get(), f.body))
            .collect()
    };
    let first = bodies(&mut s);
    drop(s);

    let mut again = open(root.path(), "alice", false).expect("open");
    let after = again.select("INBOX", false).expect("select");
    assert_eq!(after, before);
    assert_eq!(again.status("INBOX").expect("status").uid_next, 4);
    assert_eq!(bodies(&mut again), first);
}

#[test]
fn a_file_delivered_by_another_program_gets_the_next_uid() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    append(&mut s, "INBOX", &[], b"ours");
    fs::write(
        root.path().join("alice/new/1700000000.M5P7.mx"),
        b"delivered",
    )
    .expect("deliver");

    assert_eq!(s.select("INBOX", true).expect("select").exists, 2);
    assert_eq!(s.status("INBOX").expect("status").uid_next, 3);
    let f = fetch(&mut s, &[2]);
    assert_eq!(f[0].flags, Flags::default());
    assert_eq!(f[0].body, b"delivered");

    // Flagging moves it from new/ to cur/; it keeps its UID.
    s.set_flags(&[uid(2)], &flags(&["\\Seen"])).expect("store");
    assert!(files(&root.path().join("alice/cur")).contains(&"1700000000.M5P7.mx:2,S".to_owned()));
    let mut again = target(root.path());
    again.select("INBOX", false).expect("select");
    assert_eq!(fetch(&mut again, &[2])[0].flags, flags(&["\\Seen"]));
}

#[test]
fn files_found_together_are_numbered_by_mtime_then_name() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    let new = root.path().join("alice/new");
    let at = |secs: u64| UNIX_EPOCH + std::time::Duration::from_secs(secs);
    for (name, secs) in [("c", 100), ("b", 200), ("a", 200)] {
        let file = File::create(new.join(name)).expect("create");
        file.set_modified(at(secs)).expect("mtime");
    }
    s.select("INBOX", false).expect("select");
    assert_eq!(uids(&fetch_all(&mut s)), [1, 2, 3]);
    let lines = fs::read_to_string(root.path().join("alice/mailferry-uidlist")).expect("uidlist");
    let bases: Vec<&str> = lines.lines().skip(1).collect();
    assert_eq!(bases, ["1 c", "2 a", "3 b"]);
}

#[test]
fn a_vanished_file_disappears_and_its_uid_is_not_reused() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    for m in [&b"one"[..], b"two", b"three"] {
        append(&mut s, "INBOX", &[], m);
    }
    let cur = root.path().join("alice/cur");
    let victim = files(&cur)
        .into_iter()
        .find(|name| fs::read(cur.join(name)).expect("read") == b"three")
        .expect("three");
    fs::remove_file(cur.join(victim)).expect("remove");

    assert_eq!(s.select("INBOX", true).expect("select").exists, 2);
    assert_eq!(s.status("INBOX").expect("status").uid_next, 4);
    assert_eq!(all_uids(&mut s), [1, 2]);
    assert_eq!(uids(&fetch(&mut s, &[1, 2, 3])), [1, 2]);
    assert_eq!(append(&mut s, "INBOX", &[], b"four"), 4);
    let mut again = target(root.path());
    again.select("INBOX", false).expect("select");
    assert_eq!(all_uids(&mut again), [1, 2, 4]);
}

#[test]
fn a_line_cut_short_by_a_crash_is_dropped_and_its_file_renumbered() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    append(&mut s, "INBOX", &[], b"one");
    append(&mut s, "INBOX", &[], b"two");
    let list = root.path().join("alice/mailferry-uidlist");
    let text = fs::read_to_string(&list).expect("uidlist");
    fs::write(&list, &text[..text.len() - 3]).expect("truncate");

    let mut again = target(root.path());
    assert_eq!(again.select("INBOX", false).expect("select").exists, 2);
    assert_eq!(again.status("INBOX").expect("status").uid_next, 3);
    assert_eq!(fetch(&mut again, &[2])[0].body, b"two");
    assert!(fs::read_to_string(&list).expect("uidlist").ends_with('\n'));
}

#[test]
fn a_damaged_uidlist_is_reported_with_its_path() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    let list = root.path().join("alice/mailferry-uidlist");
    fs::write(&list, "garbage\n").expect("write");
    let err = s.select("INBOX", false).expect_err("damaged");
    assert!(
        err.to_string().contains(&list.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("damaged"), "{err}");
}

#[test]
fn a_move_renames_the_file_and_numbers_it_in_the_other_folder() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    assert_eq!(s.create_folder("Archive").expect("create"), Created::New);
    // `a` already means another keyword there: the moved message's `$Work` becomes `b`.
    append(&mut s, "Archive", &["$Other"], b"already there");
    append_dated(
        &mut s,
        "INBOX",
        &["\\Seen", "$Work"],
        Some("01-Feb-2020 10:00:00 +0100"),
        b"to move",
    );
    append(&mut s, "INBOX", &[], b"stays");

    s.select("INBOX", true).expect("select");
    assert_eq!(
        s.move_to(&[uid(1)], "Archive").expect("move"),
        vec![(uid(1), uid(2))]
    );
    assert_eq!(all_uids(&mut s), [2]);
    assert_eq!(s.move_to(&[uid(1)], "Archive").expect("gone"), vec![]);

    let mut again = target(root.path());
    again.select("Archive", false).expect("select");
    let f = fetch(&mut again, &[2]);
    assert_eq!(f[0].flags, flags(&["\\Seen", "$Work"]));
    assert_eq!(date(&f[0]), "01-Feb-2020 09:00:00 +0000");
    assert_eq!(f[0].body, b"to move");
    let archive = root.path().join("alice/.Archive");
    assert_eq!(
        fs::read_to_string(archive.join("dovecot-keywords")).expect("keywords"),
        "0 $Other\n1 $Work\n"
    );
    assert!(
        files(&archive.join("cur"))
            .iter()
            .any(|n| n.ends_with(":2,Sb"))
    );
    again.select("INBOX", false).expect("select");
    assert_eq!(all_uids(&mut again), [2]);
}

#[test]
fn a_move_to_a_missing_folder_asks_for_it_to_be_created() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    append(&mut s, "INBOX", &[], b"x");
    s.select("INBOX", true).expect("select");
    let err = s.move_to(&[uid(1)], "Nowhere").expect_err("missing");
    assert_eq!(err.kind, refused_with("TRYCREATE"));
    assert_eq!(
        append_one(&mut s, "Nowhere", &[], None, b"y"),
        AppendOutcome::Refused(
            "APPEND failed: [TRYCREATE] Mailbox doesn't exist: Nowhere".to_owned()
        )
    );
}

#[test]
fn a_read_only_folder_refuses_changes() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    append(&mut s, "INBOX", &[], b"x");
    s.select("INBOX", false).expect("examine");
    let err = s
        .set_flags(&[uid(1)], &flags(&["\\Seen"]))
        .expect_err("read-only");
    assert!(err.is_refusal(), "{err}");
    assert_eq!(
        err.to_string(),
        "UID STORE failed: Mailbox is open read-only"
    );
    assert!(
        s.move_to(&[uid(1)], "INBOX")
            .expect_err("read-only")
            .is_refusal()
    );
}

#[test]
fn subscriptions_are_kept_in_dovecots_file() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    s.create_folder("Archive").expect("create");
    s.create_folder("Sent").expect("create");
    s.set_subscribed("inbox", true).expect("subscribe");
    s.set_subscribed("Archive", true).expect("subscribe");
    s.set_subscribed("Archive", true).expect("subscribe twice");
    let subscribed = |s: &mut MaildirSession| -> Vec<String> {
        s.folders()
            .expect("folders")
            .folders()
            .filter(|f| f.subscribed)
            .map(|f| f.path.to_string())
            .collect()
    };
    assert_eq!(subscribed(&mut s), ["INBOX", "Archive"]);
    let file = root.path().join("alice/subscriptions");
    assert_eq!(fs::read_to_string(&file).expect("read"), "INBOX\nArchive\n");
    s.set_subscribed("Archive", false).expect("unsubscribe");
    assert_eq!(subscribed(&mut s), ["INBOX"]);
    assert_eq!(fs::read_to_string(&file).expect("read"), "INBOX\n");
}

#[test]
fn a_version_2_subscriptions_file_is_read_and_kept() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    s.create_folder("Archive").expect("create");
    s.create_folder("Archive.2024").expect("create");
    let file = root.path().join("alice/subscriptions");
    fs::write(&file, "V\t2\n\nINBOX\nArchive\t2024\n").expect("write");
    let subscribed: Vec<String> = s
        .folders()
        .expect("folders")
        .folders()
        .filter(|f| f.subscribed)
        .map(|f| f.path.to_string())
        .collect();
    assert_eq!(subscribed, ["INBOX", "Archive/2024"]);
    s.set_subscribed("Archive", true).expect("subscribe");
    assert_eq!(
        fs::read_to_string(&file).expect("read"),
        "V\t2\n\nINBOX\nArchive\t2024\nArchive\n"
    );
}

#[test]
fn the_tree_decodes_maildir_plus_plus_names() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    for raw in [
        "Archive",
        "Archive.2024",
        "Junk.&ANw-berpr&APw-ft",
        "Sent",
        "Deep.Er",
    ] {
        s.create_folder(raw).expect(raw);
    }
    let home = root.path().join("alice");
    // Not folders: a directory without cur/, a dot file, a plain directory.
    fs::create_dir(home.join(".Half")).expect("mkdir");
    fs::write(home.join(".hidden"), b"").expect("write");
    fs::create_dir(home.join("plain")).expect("mkdir");

    let tree = s.folders().expect("folders");
    let paths: Vec<String> = tree.folders().map(|f| f.path.to_string()).collect();
    assert_eq!(
        paths,
        [
            "INBOX",
            "Archive",
            "Archive/2024",
            "Deep/Er",
            "Junk/Überprüft",
            "Sent"
        ]
    );
    assert_eq!(
        tree.by_special_use(SpecialUse::Sent)
            .map(|f| f.raw_name.as_str()),
        Some("Sent")
    );
    // New names are spelled the Maildir++ way, and the dot in a level cannot split it.
    let new = FolderPath::new(["Projects", "v1.2", "Überprüft"]);
    let raw = tree.raw_name_for(&new);
    assert_eq!(raw, "Projects.v1_2.&ANw-berpr&APw-ft");
    s.create_folder(&raw).expect("create");
    assert!(home.join(".Projects.v1_2.&ANw-berpr&APw-ft/cur").is_dir());
    assert!(
        home.join(".Projects.v1_2.&ANw-berpr&APw-ft/maildirfolder")
            .is_file()
    );
}

#[test]
fn creating_an_existing_folder_says_it_existed() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    assert_eq!(s.create_folder("Archive").expect("create"), Created::New);
    assert_eq!(s.create_folder("Archive").expect("again"), Created::Existed);
    assert_eq!(
        s.create_folder("INBOX").expect("INBOX always exists"),
        Created::Existed
    );
    assert!(s.create_folder("a/b").expect_err("invalid").is_refusal());
}

#[test]
fn a_missing_source_mailbox_is_an_error_naming_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let err = open(root.path(), "bob@example.com", false)
        .err()
        .expect("missing");
    assert_eq!(
        err.to_string(),
        format!(
            "LOGIN failed: No Maildir for bob@example.com under {}",
            root.path().display()
        )
    );
    assert!(!root.path().join("bob@example.com").exists());
    for login in ["", ".", "..", "a/b"] {
        assert!(open(root.path(), login, true).is_err(), "{login:?}");
    }
}

#[test]
fn a_target_mailbox_is_created_with_its_parents() {
    let root = tempfile::tempdir().expect("tempdir");
    let deep = root.path().join("srv/mail");
    open(&deep, "carol", true).expect("open");
    for sub in ["cur", "new", "tmp"] {
        assert!(deep.join("carol").join(sub).is_dir(), "{sub}");
    }
    open(&deep, "carol", false).expect("now it exists");
}

#[test]
fn the_connector_probes_and_opens_trees() {
    let root = tempfile::tempdir().expect("tempdir");
    let source = MaildirConnector::new(root.path().to_path_buf(), false);
    assert_eq!(
        source.describe(),
        format!("maildir {}", root.path().display())
    );
    assert_eq!(
        source.probe().expect("probe"),
        Probe {
            detail: "found".into(),
            can_log_in: true
        }
    );
    match source.open("bob", None) {
        Err(ConnectError::Login(e)) => {
            assert!(e.is_refusal(), "{e}");
            assert_eq!(
                e.to_string(),
                format!(
                    "LOGIN failed: No Maildir for bob under {}",
                    root.path().display()
                )
            );
        }
        Err(e) => panic!("not a login error: {e}"),
        Ok(_) => panic!("opened a missing tree"),
    }

    let missing = root.path().join("later");
    let err = MaildirConnector::new(missing.clone(), false)
        .probe()
        .expect_err("missing");
    assert_eq!(err.to_string(), "no such directory");
    let later = MaildirConnector::new(missing.clone(), true);
    assert_eq!(
        later.probe().expect("probe"),
        Probe {
            detail: "will be created by the first pass".into(),
            can_log_in: false
        }
    );
    assert!(!missing.exists(), "a probe changes nothing");
    let _one = later.limit().acquire();
    let _two = later.limit().acquire();
    let session = later.open("carol", None).map_err(|e| e.to_string());
    assert!(session.is_ok(), "{:?}", session.err());
    assert!(missing.join("carol/cur").is_dir());
}

#[test]
fn status_counts_messages_and_a_missing_folder_is_nonexistent() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    let empty = s.status("INBOX").expect("status");
    assert_eq!((empty.messages, empty.uid_next), (0, 1));
    assert_ne!(empty.uid_validity.get(), 0);
    assert_eq!(empty.highest_modseq, None);
    append(&mut s, "INBOX", &[], b"x");
    let one = s.status("INBOX").expect("status");
    assert_eq!(
        (one.messages, one.uid_next, one.uid_validity),
        (1, 2, empty.uid_validity)
    );
    let err = s.status("Nope").expect_err("missing");
    assert_eq!(err.kind, refused_with("NONEXISTENT"));
}

#[test]
fn search_dates_compare_utc_days() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut s = target(root.path());
    for given in [
        "31-Dec-2019 23:59:59 +0000",
        "01-Jan-2020 00:30:00 +0100",
        "01-Jan-2020 00:00:00 +0000",
        "15-Jun-2020 12:00:00 +0000",
    ] {
        append_dated(&mut s, "INBOX", &[], Some(given), b"x");
    }
    s.select("INBOX", false).expect("select");
    let ymd = |year, month, day| Date::new(year, month, day).expect("date");
    let new_year = ymd(2020, 1, 1);
    let june = ymd(2020, 6, 15);
    assert_eq!(
        s.search_dates(Some(&new_year), None).expect("since"),
        [uid(3), uid(4)]
    );
    assert_eq!(
        s.search_dates(None, Some(&new_year)).expect("before"),
        [uid(1), uid(2)]
    );
    assert_eq!(
        s.search_dates(Some(&new_year), Some(&june))
            .expect("between"),
        [uid(3)]
    );
    assert_eq!(
        s.search_dates(None, None).expect("all"),
        [1, 2, 3, 4].map(uid)
    );
    // The fields are public, so a day the calendar lacks can still arrive.
    let no_such_day = Date {
        year: 2020,
        month: 2,
        day: 30,
    };
    let err = s
        .search_dates(Some(&no_such_day), None)
        .expect_err("no such day");
    assert_eq!(
        err.to_string(),
        "UID SEARCH rejected by the server: Invalid date \"2020-02-30\""
    );
}

#[test]
fn two_sessions_on_one_folder_never_hand_out_the_same_uid() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut one = target(root.path());
    let mut two = target(root.path());
    // Both have scanned the folder before either stores anything.
    one.status("INBOX").expect("status");
    two.status("INBOX").expect("status");
    assert_eq!(append(&mut one, "INBOX", &["$A"], b"one"), 1);
    assert_eq!(append(&mut two, "INBOX", &["$B"], b"two"), 2);
    assert_eq!(append(&mut one, "INBOX", &["$B"], b"three"), 3);
    assert_eq!(
        fs::read_to_string(root.path().join("alice/dovecot-keywords")).expect("keywords"),
        "0 $A\n1 $B\n"
    );
    let mut three = target(root.path());
    three.select("INBOX", false).expect("select");
    let found: Vec<Flags> = scan(&mut three, 1).into_iter().map(|m| m.flags).collect();
    assert_eq!(found, [flags(&["$A"]), flags(&["$B"]), flags(&["$B"])]);
}

#[test]
fn sessions_appending_at_once_get_distinct_uids() {
    let root = tempfile::tempdir().expect("tempdir");
    let appended: Vec<u32> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|worker| {
                let root = root.path();
                scope.spawn(move || {
                    let mut s = target(root);
                    (0..40)
                        .map(|i| {
                            let message = format!("worker {worker} message {i}");
                            append(&mut s, "INBOX", &[], message.as_bytes())
                        })
                        .collect::<Vec<u32>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let mut sorted = appended.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=120).collect::<Vec<u32>>());
    let mut s = target(root.path());
    assert_eq!(s.select("INBOX", false).expect("select").exists, 120);
    assert_eq!(s.status("INBOX").expect("status").uid_next, 121);
}

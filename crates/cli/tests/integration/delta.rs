//! Delta passes with CONDSTORE and QRESYNC (RFC 7162): a folder that changed since the last
//! pass is read as `UID FETCH 1:* (…) (CHANGEDSINCE m VANISHED)`, not as every message's
//! flags; moves and expunges are seen from the UIDs the server says vanished, without a UID
//! list; a server without CONDSTORE gets the full read; a renamed folder and a message
//! refiled a pass after it was expunged are moved, not copied again. Real Dovecot servers,
//! every message compared (bytes, flags, INTERNALDATE).

use mailferry_testkit::{DovecotConfig, Profile};
use serde_json::Value;

use crate::lab::*;

/// The messages of the big folder.
const BIG: usize = 3000;

/// The source commands of a `migrate --all --json` run, read from its trace.
fn traced_migrate(lab: &Lab, name: &str) -> (Value, Vec<String>) {
    let trace = lab.dir.path().join(format!("{name}.log"));
    let out = lab
        .command(&["migrate", lab.job().to_str().unwrap(), "--all", "--json"])
        .env("MAILFERRY_TRACE", &trace)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    let log = std::fs::read_to_string(&trace).unwrap_or_default();
    let source = format!("{}:{} ", lab.source.host(), lab.source.port());
    let commands = log
        .lines()
        .filter_map(|l| l.strip_prefix(&source))
        .map(str::to_string)
        .collect();
    (v, commands)
}

fn count(commands: &[String], what: impl Fn(&str) -> bool) -> usize {
    commands.iter().filter(|c| what(c)).count()
}

/// A full read of a folder's flags: `UID FETCH 1:* (UID FLAGS RFC822.SIZE)` without
/// `CHANGEDSINCE`.
fn is_full_scan(c: &str) -> bool {
    c.starts_with("UID FETCH 1:* (UID FLAGS RFC822.SIZE)") && !c.contains("CHANGEDSINCE")
}

fn is_delta_scan(c: &str) -> bool {
    c.starts_with("UID FETCH 1:* (UID FLAGS RFC822.SIZE) (CHANGEDSINCE ")
}

/// A delta read that also asks which UIDs were expunged since (QRESYNC).
fn is_vanished_scan(c: &str) -> bool {
    is_delta_scan(c) && c.ends_with(" VANISHED)")
}

fn fill_big(lab: &Lab, user: &str) {
    fill(
        &lab.source,
        user,
        "INBOX",
        &(0..BIG).map(|i| generated(i, 700)).collect::<Vec<_>>(),
    );
    fill(
        &lab.source,
        user,
        "Archive",
        &(BIG..BIG + 40)
            .map(|i| generated(i, 700))
            .collect::<Vec<_>>(),
    );
}

/// Sets exactly these flags on these source messages.
fn set_flags(lab: &Lab, user: &str, folder: &str, uids: &[u32], flags: &[&str]) {
    let mut c = connect(&lab.source, user);
    c.select(folder, false).unwrap();
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    c.uid_store_flags(uids, &flags).unwrap();
    c.logout();
}

fn assert_exact(lab: &Lab, user: &str) {
    assert_same(
        &snapshot(&lab.source, user),
        &snapshot(&lab.target, user),
        str::to_string,
    );
}

#[test]
fn a_delta_pass_on_condstore_reads_only_what_changed_and_still_sees_moves() {
    let lab = Lab::new(&["ivy"]);
    fill_big(&lab, "ivy");
    let v = lab.migrate_ok();
    assert_eq!(v["copied"], (BIG + 40) as u64, "{v:#}");

    // Flags changed on a few messages of the big folder: three marked flagged and unread,
    // two given a keyword; two new messages; three moved to Archive (gone from INBOX).
    set_flags(&lab, "ivy", "INBOX", &[7, 1500, 2999], &["\\Flagged"]);
    set_flags(&lab, "ivy", "INBOX", &[100, 101], &["\\Seen", "$Important"]);
    fill(
        &lab.source,
        "ivy",
        "INBOX",
        &(9000..9002).map(|i| generated(i, 700)).collect::<Vec<_>>(),
    );
    let mut c = connect(&lab.source, "ivy");
    c.select("INBOX", false).unwrap();
    c.uid_move(&[10, 11, 12], "Archive").unwrap();
    c.logout();

    let (v, src) = traced_migrate(&lab, "moved");
    assert_eq!(v["copied"], 2, "{v:#}");
    assert_eq!(v["entries"][0]["moved"], 3, "{v:#}");
    assert_eq!(v["entries"][0]["flags_updated"], 5, "{v:#}");
    // Both changed folders are read as deltas, asking for the UIDs vanished since (QRESYNC,
    // enabled once per connection before any SELECT). INBOX lost three messages; Dovecot's
    // VANISHED (EARLIER) names them and the folder's count adds up, so no UID list is read.
    assert_eq!(count(&src, |c| c == "ENABLE QRESYNC"), 1, "{src:#?}");
    assert_eq!(count(&src, is_vanished_scan), 2, "{src:#?}");
    assert_eq!(count(&src, is_full_scan), 0, "{src:#?}");
    assert_eq!(count(&src, |c| c.starts_with("UID SEARCH")), 0, "{src:#?}");
    assert_exact(&lab, "ivy");

    // Flags only, in both folders: no UID list, no full read, exactly those flags.
    set_flags(
        &lab,
        "ivy",
        "INBOX",
        &[1, 2, 2000],
        &["\\Answered", "\\Seen"],
    );
    set_flags(&lab, "ivy", "INBOX", &[7], &[]);
    set_flags(&lab, "ivy", "Archive", &[3], &["\\Deleted"]);
    let (v, src) = traced_migrate(&lab, "flags");
    assert_eq!(v["copied"], 0, "{v:#}");
    assert_eq!(v["entries"][0]["flags_updated"], 5, "{v:#}");
    assert_eq!(count(&src, is_delta_scan), 2, "{src:#?}");
    assert_eq!(count(&src, is_full_scan), 0, "{src:#?}");
    assert_eq!(count(&src, |c| c.starts_with("UID SEARCH")), 0, "{src:#?}");
    assert_exact(&lab, "ivy");

    // A message expunged at the source: VANISHED says which, no UID list is read, and
    // nothing is copied or lost.
    let mut c = connect(&lab.source, "ivy");
    c.select("INBOX", false).unwrap();
    c.uid_store_flags(&[20], &["\\Deleted".to_string()])
        .unwrap();
    c.run("EXPUNGE").unwrap();
    c.logout();
    set_flags(&lab, "ivy", "INBOX", &[21], &["\\Flagged"]);
    let (v, src) = traced_migrate(&lab, "expunged");
    assert_eq!(v["copied"], 0, "{v:#}");
    assert_eq!(v["entries"][0]["flags_updated"], 1, "{v:#}");
    assert_eq!(count(&src, is_vanished_scan), 1, "{src:#?}");
    assert_eq!(count(&src, |c| c.starts_with("UID SEARCH")), 0, "{src:#?}");
    assert_eq!(count(&src, is_full_scan), 0, "{src:#?}");
    let s = snapshot(&lab.source, "ivy");
    let t = snapshot(&lab.target, "ivy");
    // The target keeps its copy of the expunged message (mailferry deletes nothing there);
    // everything else is exact.
    assert_eq!(t["INBOX"].len(), s["INBOX"].len() + 1);
    assert!(s["INBOX"].iter().all(|m| t["INBOX"].contains(m)));
    assert_eq!(s["Archive"], t["Archive"]);
}

/// A folder renamed on the source between passes is moved on the target, not copied again;
/// a message expunged in one pass and filed again a pass later (restored from a backup, say)
/// is moved there too, although the folder it left is not read again.
#[test]
fn a_renamed_folder_and_a_message_refiled_a_pass_later_are_moved_not_copied_again() {
    let lab = Lab::new(&["kim"]);
    let inbox: Vec<_> = (0..20).map(|i| generated(i, 900)).collect();
    fill(&lab.source, "kim", "INBOX", &inbox);
    fill(
        &lab.source,
        "kim",
        "Projects",
        &(20..30).map(|i| generated(i, 900)).collect::<Vec<_>>(),
    );
    let v = lab.migrate_ok();
    assert_eq!(v["copied"], 30, "{v:#}");

    let mut c = connect(&lab.source, "kim");
    c.run("RENAME Projects Clients").unwrap();
    c.select("INBOX", false).unwrap();
    c.uid_store_flags(&[5], &["\\Deleted".to_string()]).unwrap();
    c.run("EXPUNGE").unwrap();
    c.logout();
    let (v, _) = traced_migrate(&lab, "renamed");
    assert_eq!(v["copied"], 0, "{v:#}");
    assert_eq!(v["entries"][0]["moved"], 10, "{v:#}");

    // The expunged message, back in another folder a pass later.
    fill(&lab.source, "kim", "Clients", &inbox[4..5]);
    let (v, _) = traced_migrate(&lab, "refiled");
    assert_eq!(v["copied"], 0, "{v:#}");
    assert_eq!(v["entries"][0]["moved"], 1, "{v:#}");
    let t = snapshot(&lab.target, "kim");
    assert_eq!(t.get("Projects").map(Vec::len), Some(0), "{t:#?}");
    // One copy of every message, where the source has it: nothing on the target twice.
    assert_exact(&lab, "kim");
    let copies: usize = t.values().map(Vec::len).sum();
    assert_eq!(copies, 30);
    let (v, _) = traced_migrate(&lab, "again");
    assert_eq!(
        (v["copied"].as_u64(), v["entries"][0]["moved"].as_u64()),
        (Some(0), Some(0)),
        "{v:#}"
    );
}

/// A message filed on the source whose copy was deleted on the target meanwhile (a pilot user
/// tidying up) cannot be moved there: it is copied again, so the target is not left without
/// it.
#[test]
fn a_moved_message_whose_copy_was_deleted_on_the_target_is_copied_again() {
    let lab = Lab::new(&["lou"]);
    fill(
        &lab.source,
        "lou",
        "INBOX",
        &(0..5).map(|i| generated(i, 800)).collect::<Vec<_>>(),
    );
    let v = lab.migrate_ok();
    assert_eq!(v["copied"], 5, "{v:#}");
    let mut t = connect(&lab.target, "lou");
    t.select("INBOX", false).unwrap();
    t.uid_store_flags(&[2], &["\\Deleted".to_string()]).unwrap();
    t.run("EXPUNGE").unwrap();
    t.logout();
    let mut c = connect(&lab.source, "lou");
    let _ = c.create("Archive");
    c.select("INBOX", false).unwrap();
    c.uid_move(&[2], "Archive").unwrap();
    c.logout();

    let (v, _) = traced_migrate(&lab, "moved");
    assert_eq!(v["copied"], 1, "{v:#}");
    assert_eq!(v["entries"][0]["moved"], 0, "{v:#}");
    assert_exact(&lab, "lou");
    let (v, _) = traced_migrate(&lab, "again");
    assert_eq!(v["copied"], 0, "{v:#}");
}

/// Without CONDSTORE (a server that does not advertise it, as Exchange Online) a changed
/// folder is read in full, and the pass is as exact.
#[test]
fn without_condstore_a_delta_pass_reads_every_flag_and_is_exact() {
    let mut src = DovecotConfig::new(&["jo"]);
    src.profile = Profile::ExchangeLike;
    let lab = Lab::with(src, DovecotConfig::new(&["jo"]));
    fill(
        &lab.source,
        "jo",
        "INBOX",
        &(0..300).map(|i| generated(i, 700)).collect::<Vec<_>>(),
    );
    lab.migrate_ok();
    set_flags(&lab, "jo", "INBOX", &[5, 250], &["\\Flagged"]);
    let mut c = connect(&lab.source, "jo");
    let _ = c.create("Trash");
    c.select("INBOX", false).unwrap();
    c.uid_move(&[9], "Trash").unwrap();
    c.logout();
    let (v, src) = traced_migrate(&lab, "plain");
    assert_eq!(v["copied"], 0, "{v:#}");
    assert_eq!(v["entries"][0]["moved"], 1, "{v:#}");
    assert_eq!(v["entries"][0]["flags_updated"], 2, "{v:#}");
    assert!(count(&src, is_full_scan) >= 1, "{src:#?}");
    assert_eq!(count(&src, |c| c.contains("CHANGEDSINCE")), 0, "{src:#?}");
    assert_exact(&lab, "jo");
}

/// A measurement, run by hand (`cargo test -p mailferry --test integration -- --ignored
/// --nocapture measure_`): one delta pass after ten flag changes in a 100,000-message folder,
/// with CONDSTORE and with the full read (the source's profile set to `exchange-online`,
/// which does not use CONDSTORE), then one after ten expunges with QRESYNC. It prints the
/// passes' times and checks each exact.
#[test]
#[ignore = "a measurement of a few minutes, run by hand"]
fn measure_a_delta_pass_of_a_100k_message_folder() {
    const N: usize = 100_000;
    let lab = Lab::new(&["max"]);
    let started = std::time::Instant::now();
    // Written straight into the source's Maildir (100,000 APPENDs take Dovecot far longer);
    // Dovecot indexes them on the first SELECT.
    let mut c = connect(&lab.source, "max");
    c.select("INBOX", true).unwrap();
    c.logout();
    let maildir = lab.source.mail_dir("max").join("Maildir");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&maildir).unwrap());
    let group = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(&maildir).unwrap());
    for i in 0..N {
        let file = maildir
            .join("cur")
            .join(format!("17000{i:06}.M{i}P1.mf:2,S"));
        std::fs::write(&file, generated(i, 300).body).unwrap();
        std::os::unix::fs::chown(&file, Some(owner), Some(group)).unwrap();
    }
    eprintln!("filled {N} messages in {:?}", started.elapsed());
    let v = lab.migrate_ok();
    eprintln!("full pass: {} s", v["seconds"]);
    assert_eq!(v["copied"], N as u64);

    let change = |n: u32| {
        let uids: Vec<u32> = (0..10).map(|k| 1 + k * 9_973 + n).collect();
        set_flags(&lab, "max", "INBOX", &uids, &["\\Flagged", "$Measured"]);
    };
    // mailferry's own CPU: the children's rusage grows by each finished `migrate`.
    let children_cpu = || {
        // SAFETY: getrusage writes one rusage into the zeroed struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
        let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        s(u.ru_utime) + s(u.ru_stime)
    };
    let delta = |name: &str, n: u32, scan: fn(&str) -> bool| {
        change(n);
        let cpu = children_cpu();
        let (v, src) = traced_migrate(&lab, name);
        assert_eq!(v["entries"][0]["flags_updated"], 10, "{v:#}");
        assert_eq!(count(&src, scan), 1, "{src:#?}");
        eprintln!(
            "{name}: {:.2} s, mailferry CPU {:.2} s",
            v["seconds"].as_f64().unwrap(),
            children_cpu() - cpu
        );
        assert_exact(&lab, "max");
    };
    delta("delta pass with CHANGEDSINCE", 1, is_delta_scan);
    delta("delta pass with CHANGEDSINCE, again", 2, is_delta_scan);

    let text = std::fs::read_to_string(lab.job()).unwrap();
    std::fs::write(
        lab.job(),
        text.replace(
            "[source]\nkind = \"imap\"\n",
            "[source]\nkind = \"imap\"\nprofile = \"exchange-online\"\n",
        ),
    )
    .unwrap();
    delta("delta pass reading every flag", 3, is_full_scan);
    delta("delta pass reading every flag, again", 4, is_full_scan);

    // Ten messages expunged, with CONDSTORE and QRESYNC again: the server's VANISHED names
    // them, and no UID list of the 100,000 is read.
    std::fs::write(lab.job(), &text).unwrap();
    // The checkpoints written without CONDSTORE hold no HIGHESTMODSEQ: one pass (a full
    // read) writes them again with it.
    traced_migrate(&lab, "condstore again");
    let mut c = connect(&lab.source, "max");
    c.select("INBOX", false).unwrap();
    let gone: Vec<u32> = (0..10).map(|k| 5 + k * 9_973).collect();
    c.uid_store_flags(&gone, &["\\Deleted".to_string()])
        .unwrap();
    c.run("EXPUNGE").unwrap();
    c.logout();
    let cpu = children_cpu();
    let (v, src) = traced_migrate(&lab, "expunged");
    assert_eq!(v["copied"], 0, "{v:#}");
    assert_eq!(count(&src, is_vanished_scan), 1, "{src:#?}");
    assert_eq!(count(&src, |c| c.starts_with("UID SEARCH")), 0, "{src:#?}");
    eprintln!(
        "delta pass after 10 expunges (VANISHED): {:.2} s, mailferry CPU {:.2} s",
        v["seconds"].as_f64().unwrap(),
        children_cpu() - cpu
    );
    let t = snapshot(&lab.target, "max");
    assert_eq!(
        t["INBOX"].len(),
        N,
        "the target keeps the expunged messages' copies"
    );
}

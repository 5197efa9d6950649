//! A bad network between mailferry and real servers (issue 11): the test kit's fault-injecting
//! proxy cuts connections every few megabytes, stalls one without closing it; a server
//! restarts mid-pass; the pass is stopped by a signal. One `migrate` still finishes (or, when
//! stopped, the next one does) with the target holding every source message exactly once.

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mailferry_testkit::proxy::{Direction, Faults, Proxy, Stall};

use crate::lab::*;

/// Every user's mailbox: messages of 20–60 kB in three folders, and a few of 400 kB, about
/// `mb` megabytes in all.
fn fill_users(lab: &Lab, mb: usize) {
    for (u, user) in lab.users.iter().enumerate() {
        let base = u * 10_000;
        let mut inbox: Vec<Msg> = (0..4).map(|i| generated(base + i, 400_000)).collect();
        let small = (mb * 1_000_000 - 1_600_000) / 40_000;
        inbox.extend((4..small / 2).map(|i| generated(base + i, 20_000 + (i % 3) * 20_000)));
        fill(&lab.source, user, "INBOX", &inbox);
        fill(
            &lab.source,
            user,
            "Archive/2019",
            &(small / 2..small * 3 / 4)
                .map(|i| generated(base + i, 40_000))
                .collect::<Vec<_>>(),
        );
        fill(
            &lab.source,
            user,
            "Projects",
            &(small * 3 / 4..small)
                .map(|i| generated(base + i, 40_000))
                .collect::<Vec<_>>(),
        );
    }
}

/// Source and target hold the same messages, each once, for every user.
fn assert_exact(lab: &Lab) {
    for user in &lab.users {
        let src = snapshot(&lab.source, user);
        assert!(total(&src) > 0);
        assert_same(&src, &snapshot(&lab.target, user), str::to_string);
    }
}

/// A number in `low..high` that depends only on `n` and `salt` (xorshift).
fn spread(n: u64, salt: u64, low: u64, high: u64) -> u64 {
    let mut x = (n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    low + x % (high - low)
}

fn job(lab: &Lab) -> String {
    lab.job().to_str().expect("utf-8 path").to_string()
}

fn matched(lab: &Lab) {
    let out = lab.mailferry(&["match", &job(lab)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn connections_cut_every_few_megabytes_both_ways_still_complete_one_pass_exactly() {
    let lab = Lab::new(&["ada", "bea", "cyd"]);
    fill_users(&lab, 6);
    // Every connection to either server is cut after 1–3 MB in one direction or the other,
    // whichever comes first; a cut is a close or, one time in three, a reset.
    let cuts = |salt: u64| {
        move |n: u64| Faults {
            cut_up_after: Some(spread(n, salt, 1_000_000, 3_000_000)),
            cut_down_after: Some(spread(n, salt ^ 0xff, 1_000_000, 3_000_000)),
            reset: n % 3 == 2,
            ..Faults::default()
        }
    };
    let source = Proxy::before(&lab.source, cuts(1));
    let target = Proxy::before(&lab.target, cuts(2));
    lab.write_job_via(
        source.port(),
        target.port(),
        "[migration]\nconcurrency = 3\n",
    );
    matched(&lab);

    let (code, v) = lab.json(&["migrate", &job(&lab), "--all"]);
    let cut = source.stats().cuts + target.stats().cuts;
    assert_eq!(code, 0, "{cut} cuts: {v:#}");
    assert_eq!(v["failed"], 0, "{v:#}");
    // More than four cuts per mailbox: at least one mailbox was cut more often than the four
    // retries it used to get for the whole pass.
    assert!(cut > 3 * 4, "only {cut} cuts");
    assert_exact(&lab);
}

/// Turns every copied row into an intent in doubt: the ledger a pass leaves when it is killed
/// after its APPENDs were stored and before their answers were recorded (`crash::` kills real
/// passes at such instants; here every message of the mailbox is in doubt at once). Returns
/// how many rows it changed.
fn put_in_doubt(db: &Path) -> usize {
    let conn = rusqlite::Connection::open(db).expect("open the job's state");
    conn.execute(
        "UPDATE ledger SET state = 'pending', target_uid = NULL, target_uidnext = 1
         WHERE state = 'copied'",
        [],
    )
    .expect("put the ledger in doubt")
}

/// A proxy before the target that cuts every connection after a number of bytes in `cut`
/// from the server (which depends only on the connection and `salt`), once the flag it
/// returns is set; the job (one mailbox at a time, plus `migration`'s lines) goes through it,
/// and the mailboxes are matched.
fn target_cut_once_asked(
    lab: &Lab,
    salt: u64,
    cut: std::ops::Range<u64>,
    migration: &str,
) -> (Proxy, Arc<AtomicBool>) {
    let cutting = Arc::new(AtomicBool::new(false));
    let on = cutting.clone();
    let target = Proxy::before(&lab.target, move |n| Faults {
        cut_down_after: on
            .load(Ordering::SeqCst)
            .then(|| spread(n, salt, cut.start, cut.end)),
        ..Faults::default()
    });
    lab.write_job_via(
        lab.source.port(),
        target.port(),
        &format!("[migration]\nconcurrency = 1\n{migration}"),
    );
    matched(lab);
    (target, cutting)
}

/// Sets the target's cuts going and runs one pass that has only the state's doubts to settle:
/// it must copy nothing, fail nothing, go through more than five cuts (more attempts than the
/// retries a mailbox gets without progress) and end with the target exact.
fn settled_through_cuts(lab: &Lab, target: &Proxy, cutting: &AtomicBool) {
    cutting.store(true, Ordering::SeqCst);
    let (code, v) = lab.json(&["migrate", &job(lab), "--all"]);
    let cuts = target.stats().cuts;
    assert_eq!(code, 0, "{cuts} cuts: {v:#}");
    assert_eq!(
        (v["copied"].as_u64(), v["failed"].as_u64()),
        (Some(0), Some(0)),
        "{v:#}"
    );
    assert!(cuts > 5, "only {cuts} cuts");
    assert_exact(lab);
}

/// Reconciliation fetches the target's copies of the intents in doubt to match them; on a link
/// that drops every few hundred kilobytes no attempt fetches them all. Each attempt records
/// what it matched, so the next goes on from there and the pass finishes, copying nothing
/// twice. (Before, each attempt started reconciliation over, none made progress, and the
/// mailbox failed after its retries.)
#[test]
fn intents_in_doubt_are_reconciled_over_a_link_that_drops_every_few_hundred_kilobytes() {
    let lab = Lab::new(&["nia"]);
    fill_users(&lab, 3);
    let (target, cutting) = target_cut_once_asked(&lab, 3, 300_000..500_000, "");
    let (code, v) = lab.json(&["migrate", &job(&lab), "--all"]);
    assert_eq!(code, 0, "{v:#}");
    let copied = v["copied"].as_u64().expect("copied");
    assert_eq!(put_in_doubt(&lab.db()) as u64, copied);

    // About 3 MB of copies to fetch over connections that carry under 500 kB each: more
    // attempts than the four retries a mailbox gets without progress.
    settled_through_cuts(&lab, &target, &cutting);
    let conn = rusqlite::Connection::open(lab.db()).expect("open the job's state");
    let (copied_now, left): (u64, u64) = conn
        .query_row(
            "SELECT count(*) FILTER (WHERE state = 'copied' AND target_uid IS NOT NULL),
                    count(*) FILTER (WHERE state <> 'copied' OR target_uid IS NULL) FROM ledger",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("count the ledger");
    assert_eq!((copied_now, left), (copied, 0));
}

/// Orphans (late copies of a process that lost the entry's lease, recorded in the state) are
/// fetched to be confirmed before they are removed; on a link that drops every 100–160 kB no
/// attempt fetches them all. Each attempt removes the ones the attempt before it confirmed and
/// confirms more, so the pass finishes with every message once on the target and no orphan
/// left. (Before, each attempt fetched them all again and removed none, and the mailbox failed
/// after its retries.) The orphans are written into the state as the process that lost the
/// lease writes them (`orphans.rs` makes one the slow way, with a paused process).
#[test]
fn orphans_are_removed_over_a_link_that_drops_every_hundred_kilobytes() {
    let lab = Lab::new(&["oda"]);
    let msgs: Vec<Msg> = (0..20).map(|i| generated(i, 40_000)).collect();
    fill(&lab.source, "oda", "INBOX", &msgs);
    let (target, cutting) =
        target_cut_once_asked(&lab, 5, 100_000..160_000, "retry_first_delay_seconds = 1\n");
    let (code, v) = lab.json(&["migrate", &job(&lab), "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["copied"], 20, "{v:#}");

    // The late copies: every message once more, recorded as orphans.
    let before = connect(&lab.target, "oda").status("INBOX").expect("status");
    assert!(fill(&lab.target, "oda", "INBOX", &msgs).is_empty());
    let conn = rusqlite::Connection::open(lab.db()).expect("open the job's state");
    let entry: String = conn
        .query_row("SELECT id FROM entries", [], |r| r.get(0))
        .expect("the entry");
    for (i, m) in msgs.iter().enumerate() {
        conn.execute(
            "INSERT INTO orphans (entry_id, target_folder, target_uid_validity, target_uid,
                                  fingerprint) VALUES (?1, 'INBOX', ?2, ?3, ?4)",
            rusqlite::params![
                entry,
                before.uid_validity,
                before.uid_next + i as u32,
                mailferry_core::fingerprint::fingerprint(&m.body).as_str()
            ],
        )
        .expect("record an orphan");
    }
    drop(conn);
    assert_eq!(total(&snapshot(&lab.target, "oda")), 40);

    // 800 kB of orphans to fetch over connections that carry under 160 kB each: more attempts
    // than the four retries a mailbox gets without progress.
    settled_through_cuts(&lab, &target, &cutting);
    let conn = rusqlite::Connection::open(lab.db()).expect("open the job's state");
    let left: i64 = conn
        .query_row("SELECT count(*) FROM orphans", [], |r| r.get(0))
        .expect("count the orphans");
    assert_eq!(left, 0);
}

#[test]
fn a_target_that_stops_answering_costs_one_timeout_and_the_pass_completes_exactly() {
    let lab = Lab::new(&["dee"]);
    fill_users(&lab, 6);
    let source = Proxy::before(&lab.source, |_| Faults::default());
    // The first target connection goes silent after 2 MB of APPENDs, without closing, for
    // longer than the test: a hung server, or a NAT that forgot the flow.
    let target = Proxy::before(&lab.target, |n| Faults {
        stall: (n == 0).then_some(Stall {
            direction: Direction::Up,
            after: 2_000_000,
            duration: Duration::from_secs(3600),
        }),
        ..Faults::default()
    });
    lab.write_job_via(source.port(), target.port(), "");
    matched(&lab);

    let started = Instant::now();
    let out = lab
        .command(&["migrate", &job(&lab), "--all", "--json"])
        .env("MAILFERRY_IO_TIMEOUT_SECONDS", "3")
        .output()
        .expect("run mailferry");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(target.stats().stalls, 1);
    assert!(target.stats().connections >= 2, "{:?}", target.stats());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the stall cost {:?}",
        started.elapsed()
    );
    assert_exact(&lab);
}

#[test]
fn io_timeout_seconds_in_the_job_file_makes_a_stalled_target_cost_one_short_timeout() {
    let lab = Lab::new(&["dan"]);
    fill_users(&lab, 4);
    let source = Proxy::before(&lab.source, |_| Faults::default());
    // As above, but the timeout comes from the job file, with no environment variable: the
    // default (60 s) would make this pass last more than a minute.
    let target = Proxy::before(&lab.target, |n| Faults {
        stall: (n == 0).then_some(Stall {
            direction: Direction::Up,
            after: 1_000_000,
            duration: Duration::from_secs(3600),
        }),
        ..Faults::default()
    });
    lab.write_job_via(
        source.port(),
        target.port(),
        "[migration]\nio_timeout_seconds = 2\nretry_first_delay_seconds = 1\n\
         retry_max_delay_seconds = 2\n",
    );
    matched(&lab);

    let started = Instant::now();
    let out = lab
        .command(&["migrate", &job(&lab), "--all", "--json"])
        .env_remove("MAILFERRY_IO_TIMEOUT_SECONDS")
        .output()
        .expect("run mailferry");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(target.stats().stalls, 1);
    assert!(target.stats().connections >= 2, "{:?}", target.stats());
    // One 2 s timeout and a retry after 1–1.5 s; the copying itself takes a few seconds.
    assert!(took < Duration::from_secs(30), "the stall cost {took:?}");
    assert_exact(&lab);
}

#[test]
fn retries_without_progress_bounds_the_attempts_on_a_server_that_always_drops_the_login() {
    let lab = Lab::new(&["eve"]);
    fill(&lab.source, "eve", "INBOX", &[generated(1, 2_000)]);
    let source = Proxy::before(&lab.source, |_| Faults::default());
    // Every target connection is closed after the greeting: no attempt can make progress.
    let target = Proxy::before(&lab.target, |_| Faults {
        cut_up_after: Some(1),
        ..Faults::default()
    });
    lab.write_job_via(
        source.port(),
        target.port(),
        "[migration]\nretries_without_progress = 1\nretry_first_delay_seconds = 1\n\
         retry_max_delay_seconds = 1\n",
    );
    matched(&lab);

    let started = Instant::now();
    let (code, v) = lab.json(&["migrate", &job(&lab), "--all"]);
    let took = started.elapsed();
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["entries"][0]["state"], "failed", "{v:#}");
    assert!(
        v["entries"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("target login")),
        "{v:#}"
    );
    // The first attempt and exactly one retry, not the default five attempts (and 15 s).
    assert_eq!(target.stats().connections, 2, "{:?}", target.stats());
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_bad_io_timeout_is_bad_input_and_names_the_variable() {
    let lab = Lab::new(&["fox"]);
    matched(&lab);
    let out = lab
        .command(&["migrate", &job(&lab), "--all"])
        .env("MAILFERRY_IO_TIMEOUT_SECONDS", "soon")
        .output()
        .expect("run mailferry");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MAILFERRY_IO_TIMEOUT_SECONDS"),
        "{}",
        text(&out)
    );
}

/// Messages the ledger records as copied so far.
fn copied_rows(db: &Path) -> u64 {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    let _ = conn.busy_timeout(Duration::from_millis(200));
    conn.query_row(
        "SELECT count(*) FROM ledger WHERE state = 'copied'",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// Starts `migrate --all` and waits until the ledger shows copied messages.
fn migrate_until_copying(lab: &Lab) -> Child {
    let mut child = lab
        .command(&["migrate", &job(lab), "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailferry");
    let start = Instant::now();
    while copied_rows(&lab.db()) == 0 {
        assert!(
            child.try_wait().expect("wait").is_none(),
            "migrate ended before copying"
        );
        assert!(start.elapsed() < Duration::from_secs(60), "nothing copied");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
}

/// A target link of 2 MB/s, so that a pass lasts long enough to be interrupted; one mailbox
/// at a time.
fn slow_target(lab: &Lab) -> Proxy {
    let target = Proxy::before(&lab.target, |_| Faults {
        bytes_per_second: Some(2_000_000),
        ..Faults::default()
    });
    lab.write_job_via(
        lab.source.port(),
        target.port(),
        "[migration]\nconcurrency = 1\n",
    );
    target
}

#[test]
fn sigterm_mid_pass_finishes_the_mailbox_in_flight_exits_3_and_the_next_pass_completes() {
    let lab = Lab::new(&["gil", "hal", "ivy"]);
    fill_users(&lab, 4);
    let _target = slow_target(&lab);
    matched(&lab);

    let child = migrate_until_copying(&lab);
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "Stopped by a signal: 2 mailboxes not started; run migrate again to continue"
        ),
        "{}",
        text(&out)
    );
    // The mailbox in flight finished its pass and is in the summary.
    assert!(
        stdout.contains("1 of 1 mailbox fully migrated"),
        "{}",
        text(&out)
    );

    let (code, v) = lab.json(&["migrate", &job(&lab), "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_exact(&lab);
}

#[test]
fn a_second_signal_exits_at_once_and_the_next_pass_is_still_exact() {
    let lab = Lab::new(&["jon", "kay"]);
    fill_users(&lab, 4);
    let _target = slow_target(&lab);
    matched(&lab);

    let child = migrate_until_copying(&lab);
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    let second = Instant::now();
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(second.elapsed() < Duration::from_secs(2));

    let (code, v) = lab.json(&["migrate", &job(&lab), "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_exact(&lab);
}

#[test]
fn a_target_restarted_twice_mid_pass_is_retried_and_the_pass_completes_exactly() {
    let mut lab = Lab::new(&["lou", "max"]);
    fill_users(&lab, 6);
    // A slow link, so that the restarts fall mid-pass; the proxy refuses while the server is
    // down, as the server's port would.
    let target = Proxy::before(&lab.target, |_| Faults {
        bytes_per_second: Some(2_000_000),
        ..Faults::default()
    });
    lab.write_job_via(
        lab.source.port(),
        target.port(),
        "[migration]\nconcurrency = 2\n",
    );
    matched(&lab);
    let mut child = lab
        .command(&["migrate", &job(&lab), "--all", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailferry");
    for threshold in [20, 150] {
        let start = Instant::now();
        while copied_rows(&lab.db()) < threshold {
            assert!(start.elapsed() < Duration::from_secs(60), "no progress");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the pass ended before restart at {threshold} messages"
        );
        lab.target.restart();
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(copied_rows(&lab.db()) > 150);
    assert_exact(&lab);
}

/// A folder whose scan alone (UID, flags and size of every message: about 55 bytes each) is
/// more than the link carries between two drops: each attempt reads on from the last UID the
/// one before it read, and the pass finishes exactly; so does the next pass's delta after
/// every message's flags changed. (Before, every attempt scanned from the first UID again,
/// none got to copying, and the mailbox failed after its retries.)
#[test]
fn a_folder_too_large_to_scan_between_two_drops_is_scanned_a_part_per_attempt() {
    let lab = Lab::new(&["ola"]);
    fill(
        &lab.source,
        "ola",
        "INBOX",
        &(0..12_000).map(|i| generated(i, 300)).collect::<Vec<_>>(),
    );
    let source = Proxy::before(&lab.source, move |n| Faults {
        cut_down_after: Some(spread(n, 5, 300_000, 500_000)),
        ..Faults::default()
    });
    lab.write_job_via(
        source.port(),
        lab.target.port(),
        "[migration]\nconcurrency = 1\n",
    );
    matched(&lab);
    let (code, v) = lab.json(&["migrate", &job(&lab), "--all"]);
    let cuts = source.stats().cuts;
    assert_eq!(code, 0, "{cuts} cuts: {v:#}");
    assert_eq!(
        (v["copied"].as_u64(), v["failed"].as_u64()),
        (Some(12_000), Some(0)),
        "{v:#}"
    );
    assert!(cuts > 5, "only {cuts} cuts");
    assert_exact(&lab);

    // Every message flagged: the next pass's delta (`CHANGEDSINCE`, some 850 kB) is read a
    // part per attempt the same way.
    let mut c = connect(&lab.source, "ola");
    c.select("INBOX", false).unwrap();
    let flags = ["\\Seen".to_string(), "\\Flagged".to_string()];
    c.uid_store_flags(&(1..=12_000).collect::<Vec<u32>>(), &flags)
        .unwrap();
    c.logout();
    let (code, v) = lab.json(&["migrate", &job(&lab), "--all"]);
    let delta_cuts = source.stats().cuts - cuts;
    assert_eq!(code, 0, "{delta_cuts} cuts: {v:#}");
    // Those already \\Seen and \\Flagged and nothing else did not change.
    let changed = (0..12_000)
        .filter(|&i| {
            let mut f = generated(i, 300).flags;
            f.sort();
            f != ["\\Flagged", "\\Seen"]
        })
        .count() as u64;
    assert_eq!(
        v["entries"][0]["flags_updated"].as_u64(),
        Some(changed),
        "{v:#}"
    );
    assert!(delta_cuts > 1, "only {delta_cuts} cuts");
    assert_exact(&lab);
}

//! Killing `mailferry migrate` (SIGKILL) at any instant, then running it again, leaves every
//! message on the target exactly once.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::lab::*;

/// (pending rows, copied rows, largest pending message) as the ledger says right now.
fn ledger_state(db: &Path) -> Option<(u64, u64, u64)> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.busy_timeout(Duration::from_millis(200)).ok()?;
    conn.query_row(
        "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'copied'),
                coalesce(max(size) FILTER (WHERE state = 'pending'), 0) FROM ledger",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .ok()
}

enum KillAt {
    /// Milliseconds after start: while logging in, listing, creating folders.
    Time(u64),
    /// While APPENDs are on the wire (intents committed, answers not yet recorded), once at
    /// least this many messages are recorded as copied.
    MidAppend { after_copied: u64, min_size: u64 },
    /// Once at least this many messages are recorded as copied.
    Copied(u64),
}

/// Runs migrate and kills it when `at` happens; returns whether it was killed (false: it
/// finished first) and whether intents were pending at the kill.
fn run_and_kill(lab: &Lab, at: &KillAt) -> (bool, bool) {
    let job = lab.job();
    let mut child = lab
        .command(&["migrate", job.to_str().unwrap(), "--all"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mailferry");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return (false, false);
        }
        let fire = match at {
            KillAt::Time(ms) => start.elapsed() >= Duration::from_millis(*ms),
            KillAt::MidAppend {
                after_copied,
                min_size,
            } => ledger_state(&lab.db())
                .is_some_and(|(p, c, big)| p > 0 && c >= *after_copied && big >= *min_size),
            KillAt::Copied(n) => ledger_state(&lab.db()).is_some_and(|(_, c, _)| c >= *n),
        };
        if fire {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            let pending = ledger_state(&lab.db()).is_some_and(|(p, _, _)| p > 0);
            return (true, pending);
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "migrate did not reach the kill point"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn kill_at_any_instant_then_resume_leaves_every_message_exactly_once() {
    let lab = Lab::new(&["kim", "lee"]);
    for user in ["kim", "lee"] {
        let mut big: Vec<Msg> = (0..6).map(|i| generated(i, 2_500_000)).collect();
        big.extend((6..400).map(|i| generated(i, 4_000)));
        fill(&lab.source, user, "INBOX", &big);
        fill(
            &lab.source,
            user,
            "Archive/2019",
            &(400..900).map(|i| generated(i, 2_000)).collect::<Vec<_>>(),
        );
        fill(
            &lab.source,
            user,
            "Lists/&ANw-berpr&APw-ft",
            &(900..1200).map(|i| generated(i, 1_000)).collect::<Vec<_>>(),
        );
    }
    let out = lab.mailferry(&["match", lab.job().to_str().unwrap()]);
    assert!(out.status.success());
    lab.write_job("[migration]\nconcurrency = 2\n");

    let plan = [
        KillAt::Time(40),
        KillAt::MidAppend {
            after_copied: 0,
            min_size: 1_000_000,
        },
        KillAt::Copied(150),
        KillAt::MidAppend {
            after_copied: 300,
            min_size: 0,
        },
        KillAt::Time(250),
        KillAt::MidAppend {
            after_copied: 900,
            min_size: 0,
        },
        KillAt::Copied(1500),
        KillAt::MidAppend {
            after_copied: 1800,
            min_size: 0,
        },
    ];
    let mut kills = 0;
    let mut mid_append_kills = 0;
    for at in &plan {
        let (killed, pending) = run_and_kill(&lab, at);
        kills += killed as u32;
        mid_append_kills += pending as u32;
    }
    assert!(kills >= 5, "only {kills} of the kill points were reached");
    assert!(
        mid_append_kills >= 2,
        "only {mid_append_kills} kills happened mid-APPEND"
    );

    // Resume to the end.
    let (code, v) = lab.json(&["migrate", lab.job().to_str().unwrap(), "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(
        ledger_state(&lab.db()).map(|s| s.0),
        Some(0),
        "no intent left pending"
    );
    for user in ["kim", "lee"] {
        let src = snapshot(&lab.source, user);
        assert_eq!(total(&src), 1200);
        assert_same(&src, &snapshot(&lab.target, user), str::to_string);
    }
    // And a pass after that copies nothing.
    let (code, v) = lab.json(&["migrate", lab.job().to_str().unwrap(), "--all"]);
    assert_eq!((code, v["copied"].as_u64()), (0, Some(0)), "{v:#}");
}

//! Several `mailferry migrate` processes on one SQLite job at once (a cron job and an admin,
//! two terminals): each entry is passed by one process at a time, so the target gets every
//! message exactly once and the processes' `copied` figures add up to the source.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::lab::*;

const USERS: [&str; 4] = ["ana", "ben", "cem", "dan"];

fn filled_lab() -> Lab {
    let lab = Lab::new(&USERS);
    for (n, user) in USERS.iter().enumerate() {
        let base = n * 1000;
        fill(
            &lab.source,
            user,
            "INBOX",
            &(base..base + 250)
                .map(|i| generated(i, 3_000))
                .collect::<Vec<_>>(),
        );
        fill(
            &lab.source,
            user,
            "Archive",
            &(base + 250..base + 400)
                .map(|i| generated(i, 8_000))
                .collect::<Vec<_>>(),
        );
    }
    let out = lab.mailferry(&["match", lab.job().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    lab.write_job("[migration]\nconcurrency = 2\n");
    lab
}

fn spawn_migrate(lab: &Lab) -> Child {
    lab.command(&["migrate", lab.job().to_str().unwrap(), "--all", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailferry")
}

fn finish(child: Child) -> (i32, Value, String) {
    let out = child.wait_with_output().expect("wait");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_exactly_once(lab: &Lab) {
    for user in USERS {
        let src = snapshot(&lab.source, user);
        assert_eq!(total(&src), 400, "{user}");
        assert_same(&src, &snapshot(&lab.target, user), str::to_string);
        assert_eq!(
            total(&snapshot(&lab.target, user)),
            400,
            "{user} on the target"
        );
    }
}

#[test]
fn three_processes_on_one_job_copy_every_message_exactly_once() {
    let lab = filled_lab();
    let children: Vec<Child> = (0..3).map(|_| spawn_migrate(&lab)).collect();
    let results: Vec<(i32, Value, String)> = children.into_iter().map(finish).collect();
    let mut copied = 0;
    for (code, v, stderr) in &results {
        assert_eq!(*code, 0, "{v:#}\n{stderr}");
        assert_eq!(v["failed"], 0, "{v:#}");
        copied += v["copied"].as_u64().unwrap_or(0);
    }
    // No message was copied by two processes (an entry one process finished may be passed
    // again by another, as a delta pass that copies nothing).
    assert_eq!(copied, 1600, "the processes' copies add up to the source");
    assert!(
        results
            .iter()
            .any(|(_, _, e)| e.contains("another mailferry process")),
        "no process reported an entry as busy: {results:#?}"
    );
    assert_exactly_once(&lab);
    let (code, v) = lab.json(&["migrate", lab.job().to_str().unwrap(), "--all"]);
    assert_eq!((code, v["copied"].as_u64()), (0, Some(0)), "{v:#}");
}

#[test]
fn a_killed_processs_entries_are_taken_over_at_once_and_nothing_doubles() {
    let lab = filled_lab();
    let mut first = spawn_migrate(&lab);
    // Kill it once it is well into copying, with leases held.
    let start = Instant::now();
    loop {
        let copied: u64 = rusqlite::Connection::open(lab.db())
            .and_then(|c| {
                c.busy_timeout(Duration::from_millis(200))?;
                c.query_row(
                    "SELECT count(*) FROM ledger WHERE state = 'copied'",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap_or(0);
        if copied >= 300 {
            break;
        }
        assert!(
            first.try_wait().expect("wait").is_none(),
            "migrate finished before it could be killed"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    // Its leases have not expired, but its process is gone: the next runs take over.
    let results: Vec<(i32, Value, String)> = (0..2)
        .map(|_| spawn_migrate(&lab))
        .collect::<Vec<_>>()
        .into_iter()
        .map(finish)
        .collect();
    for (code, v, e) in &results {
        assert_eq!(*code, 0, "{v:#}\n{e}");
    }
    assert_exactly_once(&lab);
}

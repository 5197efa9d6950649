//! A process paused in the middle of an APPEND past its lease (issue 8, point 7), against real
//! Dovecots on one SQLite job: its APPEND lands after another process took the entry over and
//! copied the message again. The late copy is recorded as an orphan by the process that made
//! it (its ledger write is refused by the fence), and the entry's next holder removes it: the
//! target ends with every message exactly once, compared message by message.

use std::process::{Child, Stdio};
use std::time::Duration;

use mailferry_testkit::proxy::{Faults, Proxy};
use serde_json::Value;

use crate::lab::*;

fn spawn_migrate(lab: &Lab, job: &std::path::Path) -> Child {
    lab.command(&["migrate", job.to_str().unwrap(), "--all", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailferry")
}

fn finish(child: Child) -> (i32, Value, String) {
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}): {}\n{err}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), v, err)
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child, not reaped yet.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(r, 0, "kill {signal}");
}

fn count(lab: &Lab, sql: &str) -> i64 {
    let db = rusqlite::Connection::open(lab.db()).expect("open the state");
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.query_row(sql, [], |r| r.get(0)).expect(sql)
}

/// Process A reaches the target through a slow link (80 kB/s) and is stopped with SIGSTOP
/// while the 1 MB literal of its APPEND is on the wire, its intents committed. Past its lease,
/// process B takes the entry over, finds nothing of A's on the target, copies every message
/// and ends. A's APPEND lands; A is resumed: it reads the answer (Dovecot answers with APPENDUID), its ledger
/// write is refused, and it records the copies as orphans: the target holds them twice now.
/// The entry's next pass removes them (UID EXPUNGE): every message once, no orphan left.
#[test]
fn an_append_that_lands_after_a_take_over_is_removed_by_the_next_holder() {
    let lab = Lab::new(&["ana"]);
    let mut msgs: Vec<Msg> = (0..4).map(|i| generated(i, 2_000)).collect();
    msgs.insert(2, generated(4, 1_000_000));
    fill(&lab.source, "ana", "INBOX", &msgs);
    let extra = "[migration]\nconcurrency = 1\nlease_seconds = 5\n";
    let proxy = Proxy::before(&lab.target, |_| Faults {
        bytes_per_second: Some(80_000),
        ..Faults::default()
    });
    // A's job: the target through the slow proxy, the state of `job.toml`.
    lab.write_job_via(lab.source.port(), proxy.port(), extra);
    let slow = lab.dir.path().join("slow.toml");
    let text = std::fs::read_to_string(lab.job()).unwrap().replacen(
        "name = \"test\"\n",
        &format!(
            "name = \"test\"\nstate = \"sqlite://{}\"\n",
            lab.db().display()
        ),
        1,
    );
    std::fs::write(&slow, text).unwrap();
    lab.write_job(extra);
    let out = lab.mailferry(&["match", lab.job().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");

    let a = spawn_migrate(&lab, &slow);
    wait_for(Duration::from_secs(60), "A's intents committed", || {
        count(&lab, "SELECT count(*) FROM ledger WHERE state = 'pending'") > 0
    });
    // Its APPENDs are written (the socket buffers hold them) and on their way: 1 MB takes
    // 12.5 s through the proxy.
    std::thread::sleep(Duration::from_secs(1));
    signal(&a, libc::SIGSTOP);
    // The small messages before the large one may have gone in a group of their own.
    let copied_by_a = count(&lab, "SELECT count(*) FROM ledger WHERE state = 'copied'");
    assert!(
        copied_by_a < 5,
        "A was stopped with the large APPEND unanswered"
    );
    std::thread::sleep(Duration::from_secs(6));
    let (code, v, err) = finish(spawn_migrate(&lab, &lab.job()));
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_eq!(
        v["copied"],
        5 - copied_by_a,
        "B copied the rest again: {v:#}"
    );
    assert_eq!(total(&snapshot(&lab.target, "ana")), 5);

    // A's APPEND lands while A is still stopped: the target has a second copy.
    wait_for(Duration::from_secs(30), "A's APPEND stored", || {
        total(&snapshot(&lab.target, "ana")) > 5
    });
    signal(&a, libc::SIGCONT);
    let (code, v, err) = finish(a);
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert!(
        err.contains("taken over by another mailferry process"),
        "{err}"
    );
    // A's APPEND landed after all: the copies it made are on the target twice, recorded.
    let orphans = count(&lab, "SELECT count(*) FROM orphans");
    assert!(orphans >= 1, "A recorded the copies it made: {v:#}\n{err}");
    assert_eq!(
        total(&snapshot(&lab.target, "ana")) as i64,
        5 + orphans,
        "each orphan is a second copy on the target"
    );

    // The entry's next holder removes them.
    let (code, v, err) = finish(spawn_migrate(&lab, &lab.job()));
    assert_eq!(code, 0, "{v:#}\n{err}");
    assert_eq!(v["copied"], 0, "{v:#}");
    let src = snapshot(&lab.source, "ana");
    let dst = snapshot(&lab.target, "ana");
    assert_same(&src, &dst, str::to_string);
    assert_eq!(total(&dst), 5);
    assert_eq!(
        count(&lab, "SELECT count(*) FROM ledger WHERE state = 'copied'"),
        5
    );
    assert_eq!(count(&lab, "SELECT count(*) FROM orphans"), 0);
}

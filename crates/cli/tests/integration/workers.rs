//! `migrate --enqueue-only` and `mailferry worker`: long-running processes that take queued
//! passes from the job's state (SQLite or a real PostgreSQL), lease each entry as `migrate`
//! does, and wait for more until SIGTERM. The target must hold every message exactly once,
//! whichever worker passed it, and whichever was killed.

use std::fs::File;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use mailferry_testkit::postgres::{Postgres, PostgresDatabase};
use serde_json::Value;

use crate::lab::*;

const USERS: [&str; 4] = ["ana", "ben", "cem", "dan"];
const PER_USER: usize = 400;

/// A lab whose job keeps its state in SQLite (beside the job) or in a fresh PostgreSQL
/// database.
pub(crate) struct Shared {
    pub(crate) lab: Lab,
    pg: Option<PostgresDatabase>,
}

impl Shared {
    pub(crate) fn new(users: &[&str], postgres: bool, extra: &str) -> Shared {
        let lab = Lab::new(users);
        lab.write_job(extra);
        let pg = postgres.then(|| Postgres::shared().fresh_database());
        if let Some(db) = &pg {
            let jobp = lab.job();
            let text = std::fs::read_to_string(&jobp).unwrap().replacen(
                "name = \"test\"\n",
                &format!(
                    "name = \"test\"\nstate = \"{}\"\nstate_password = {{ env = \"MF_TEST_STATE_PW\" }}\n",
                    db.url()
                ),
                1,
            );
            std::fs::write(&jobp, text).unwrap();
        }
        Shared { lab, pg }
    }

    pub(crate) fn job(&self) -> String {
        self.lab.job().to_str().unwrap().to_string()
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = self.lab.command(args);
        if let Some(db) = &self.pg {
            c.env("MF_TEST_STATE_PW", db.password());
        }
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run mailferry")
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(out.status.success(), "mailferry {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: no JSON ({e}): {text}"))
    }

    pub(crate) fn status(&self) -> Value {
        self.json(&["status", &self.job()])
    }

    pub(crate) fn workers(&self) -> Vec<Value> {
        self.json(&["workers", &self.job()])["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A worker with its output in files of the job's folder (it runs for long: a pipe no
    /// one reads would fill up).
    pub(crate) fn spawn_worker(&self, n: usize) -> Worker {
        Worker::spawn(
            self.command(&["worker", &self.job()]),
            self.lab.dir.path(),
            &format!("worker-{n}"),
        )
    }

    /// Waits until `done` says so of `status --json`, failing after `limit`.
    pub(crate) fn wait_status(
        &self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let s = self.status();
            if done(&s) {
                return s;
            }
            assert!(
                start.elapsed() < limit,
                "{what}: not after {limit:?}: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_workers(&self, limit: Duration, what: &str, done: impl Fn(&[Value]) -> bool) {
        let start = Instant::now();
        loop {
            let w = self.workers();
            if done(&w) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "{what}: not after {limit:?}: {w:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

pub(crate) struct Worker {
    child: Child,
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Worker {
    /// Spawns `c` with its output in `<dir>/<name>.out` and `.err`.
    pub(crate) fn spawn(mut c: Command, dir: &std::path::Path, name: &str) -> Worker {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let child = c
            .stdout(Stdio::from(File::create(&out).unwrap()))
            .stderr(Stdio::from(File::create(&err).unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", c.get_program()));
        Worker { child, out, err }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn logs(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// SIGTERM, then the exit status (within a minute).
    pub(crate) fn terminate(mut self) -> (ExitStatus, String) {
        // SAFETY: kill(2) on our own child's PID, which it still is (not reaped yet).
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(r, 0, "SIGTERM");
        self.wait_stopped()
    }

    /// The exit status once the process has ended, and its output; fails after a minute.
    pub(crate) fn wait_stopped(&mut self) -> (ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, self.logs());
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the worker did not stop within a minute of SIGTERM: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Still running (not reaped).
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A test that failed leaves no worker behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn of_pid(w: &[Value], pid: u32) -> Option<Value> {
    w.iter()
        .find(|x| x["pid"].as_u64() == Some(u64::from(pid)))
        .cloned()
}

pub(crate) fn fill_users(lab: &Lab, users: &[&str], per_user: usize, size: usize) {
    for (n, user) in users.iter().enumerate() {
        let base = n * 10_000;
        let half = per_user / 2;
        fill(
            &lab.source,
            user,
            "INBOX",
            &(base..base + half)
                .map(|i| generated(i, size))
                .collect::<Vec<_>>(),
        );
        fill(
            &lab.source,
            user,
            "Archive",
            &(base + half..base + per_user)
                .map(|i| generated(i, size * 2))
                .collect::<Vec<_>>(),
        );
    }
}

pub(crate) fn assert_exactly_once(lab: &Lab, users: &[&str], per_user: usize) {
    for user in users {
        let src = snapshot(&lab.source, user);
        assert_eq!(total(&src), per_user, "{user} on the source");
        let dst = snapshot(&lab.target, user);
        assert_same(&src, &dst, str::to_string);
        assert_eq!(total(&dst), per_user, "{user} on the target");
    }
}

/// Every entry migrated, none queued, none held.
pub(crate) fn all_done(s: &Value) -> bool {
    s["entries"].as_array().is_some_and(|es| {
        es.iter()
            .all(|e| e["state"] == "migrated" && e["queued"].is_null() && e["held_by"].is_null())
    })
}

fn two_workers_finish_every_queued_entry(postgres: bool) {
    let kit = Shared::new(&USERS, postgres, "[migration]\nconcurrency = 2\n");
    fill_users(&kit.lab, &USERS, PER_USER, 3_000);
    let job = kit.job();
    kit.ok(&["match", &job]);

    // Queued, not passed.
    let q = kit.json(&["migrate", &job, "--enqueue-only", "--all"]);
    assert_eq!(q["queued"].as_array().map(Vec::len), Some(4), "{q:#}");
    assert_eq!(q["in_queue"], 4, "{q:#}");
    let s = kit.status();
    for e in s["entries"].as_array().unwrap() {
        assert_eq!(e["state"], "new", "nothing passed by --enqueue-only: {e:#}");
        assert!(e["queued"].is_string(), "{e:#}");
    }
    assert_eq!(
        kit.json(&["report", &job, "--list"])["runs"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "--enqueue-only starts no run"
    );
    // Queued again: each entry still once.
    let again = kit.json(&["migrate", &job, "--enqueue-only", "--all"]);
    assert_eq!(again["already_queued"].as_array().map(Vec::len), Some(4));
    assert_eq!(again["in_queue"], 4);

    let a = kit.spawn_worker(1);
    let b = kit.spawn_worker(2);
    let (pa, pb) = (a.pid(), b.pid());
    // Both are listed while they run, with their host and PID.
    kit.wait_workers(Duration::from_secs(30), "both workers listed", |w| {
        [pa, pb]
            .iter()
            .all(|p| of_pid(w, *p).is_some_and(|x| x["state"] == "running"))
    });
    // While they run, status names the worker holding each entry being passed.
    let saw_held = std::cell::Cell::new(false);
    let s = kit.wait_status(Duration::from_secs(240), "every entry migrated", |s| {
        for e in s["entries"].as_array().into_iter().flatten() {
            let h = &e["held_by"];
            if h.is_object() {
                let holder = h["holder"].as_str().unwrap_or_default();
                assert!(
                    holder.ends_with(&format!(":{pa}")) || holder.ends_with(&format!(":{pb}")),
                    "held by neither worker: {e:#}"
                );
                assert_eq!(h["worker"], true, "{e:#}");
                assert!(h["since"].is_string(), "{e:#}");
                let age = h["heartbeat_age_seconds"].as_f64().expect("heartbeat age");
                assert!((0.0..30.0).contains(&age), "{e:#}");
                saw_held.set(true);
            }
        }
        all_done(s)
    });
    assert!(saw_held.get(), "no entry was seen held by a worker");
    assert!(all_done(&s));
    assert_exactly_once(&kit.lab, &USERS, PER_USER);

    // Both stop cleanly on SIGTERM, and stay listed as stopped.
    let (sa, la) = a.terminate();
    let (sb, lb) = b.terminate();
    assert_eq!(sa.code(), Some(0), "{la}");
    assert_eq!(sb.code(), Some(0), "{lb}");
    assert!(la.contains("stopped:"), "{la}");
    let w = kit.workers();
    let (wa, wb) = (of_pid(&w, pa).unwrap(), of_pid(&w, pb).unwrap());
    assert_eq!(
        (wa["state"].as_str(), wb["state"].as_str()),
        (Some("stopped"), Some("stopped"))
    );
    let messages = wa["messages"].as_u64().unwrap() + wb["messages"].as_u64().unwrap();
    assert_eq!(
        messages,
        (USERS.len() * PER_USER) as u64,
        "each message copied by exactly one worker: {w:#?}"
    );
    let passes = wa["passes"].as_u64().unwrap() + wb["passes"].as_u64().unwrap();
    assert_eq!(passes, 4, "one pass per queued entry: {w:#?}");
    assert!(wa["host"].is_string() && wa["heartbeat"].is_string());
    // One run per worker, listed by report --list.
    let runs = kit.json(&["report", &job, "--list"]);
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(2), "{runs:#}");
    // Nothing is left to do: a delta pass copies nothing.
    let v = kit.json(&["migrate", &job, "--all"]);
    assert_eq!(v["copied"], 0, "{v:#}");
}

#[test]
fn two_workers_on_sqlite_pass_every_queued_entry_exactly_once_and_stop_on_sigterm() {
    two_workers_finish_every_queued_entry(false);
}

#[test]
fn two_workers_on_postgres_pass_every_queued_entry_exactly_once_and_stop_on_sigterm() {
    two_workers_finish_every_queued_entry(true);
}

/// The number of ledger rows copied, read from the SQLite state while workers write it.
fn copied_rows(lab: &Lab) -> u64 {
    rusqlite::Connection::open(lab.db())
        .and_then(|c| {
            c.busy_timeout(Duration::from_millis(200))?;
            c.query_row(
                "SELECT count(*) FROM ledger WHERE state = 'copied'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap_or(0)
}

#[test]
fn a_worker_killed_mid_pass_has_its_entries_taken_over_by_the_other_and_nothing_doubles() {
    // A long lease: the take-over must not wait for it.
    let kit = Shared::new(
        &USERS,
        false,
        "[migration]\nconcurrency = 2\nlease_seconds = 120\n",
    );
    fill_users(&kit.lab, &USERS, PER_USER, 4_000);
    let job = kit.job();
    kit.ok(&["match", &job]);
    kit.ok(&["migrate", &job, "--enqueue-only", "--all"]);
    let mut doomed = kit.spawn_worker(1);
    let pd = doomed.pid();
    // Kill it once it is well into copying, with leases held.
    let start = Instant::now();
    loop {
        let held = kit.status()["entries"].as_array().unwrap().iter().any(|e| {
            e["held_by"]["holder"]
                .as_str()
                .is_some_and(|h| h.ends_with(&format!(":{pd}")))
        });
        if held && copied_rows(&kit.lab) >= 200 {
            break;
        }
        assert!(
            doomed.child.try_wait().expect("wait").is_none(),
            "the worker died before it could be killed: {}",
            doomed.logs()
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    let other = kit.spawn_worker(2);
    doomed.child.kill().expect("SIGKILL");
    doomed.child.wait().expect("reap");
    let killed_at = Instant::now();
    // Its leases have not expired, but its process is gone: the other worker takes its
    // entries over at once (well before a lease's 120 s) and finishes the job.
    kit.wait_status(Duration::from_secs(240), "every entry migrated", all_done);
    assert!(
        killed_at.elapsed() < Duration::from_secs(55),
        "the killed worker's entries waited for their leases to expire"
    );
    assert_exactly_once(&kit.lab, &USERS, PER_USER);
    let w = kit.workers();
    assert_eq!(
        of_pid(&w, pd).map(|x| x["state"].clone()),
        Some(Value::from("gone")),
        "{w:#?}"
    );
    assert_eq!(
        of_pid(&w, other.pid()).map(|x| x["state"].clone()),
        Some(Value::from("running")),
        "{w:#?}"
    );
    let (code, logs) = other.terminate();
    assert_eq!(code.code(), Some(0), "{logs}");
}

#[test]
fn an_idle_worker_picks_up_a_queued_pass_within_seconds_and_new_mail_once() {
    let users = ["ivy", "jon"];
    let kit = Shared::new(&users, false, "[migration]\nconcurrency = 2\n");
    fill_users(&kit.lab, &users, 60, 2_000);
    let job = kit.job();
    kit.ok(&["match", &job]);
    let worker = kit.spawn_worker(1);
    let pid = worker.pid();
    kit.wait_workers(Duration::from_secs(30), "the worker listed", |w| {
        of_pid(w, pid).is_some_and(|x| x["state"] == "running")
    });
    // Idle for a while: it waits, and nothing is passed.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(total(&snapshot(&kit.lab.target, "ivy")), 0);

    let ivy_done = |s: &Value| {
        s["entries"].as_array().is_some_and(|es| {
            es.iter().any(|e| {
                e["source"]["login"] == "ivy"
                    && e["state"] == "migrated"
                    && e["queued"].is_null()
                    && e["held_by"].is_null()
            })
        })
    };
    let queued_at = Instant::now();
    kit.ok(&["migrate", &job, "--enqueue-only", "--mailbox", "ivy"]);
    kit.wait_status(Duration::from_secs(10), "ivy passed", ivy_done);
    assert!(
        queued_at.elapsed() < Duration::from_secs(6),
        "picked up and passed in {:?}",
        queued_at.elapsed()
    );
    let mut ivy_src = snapshot(&kit.lab.source, "ivy");
    assert_same(&ivy_src, &snapshot(&kit.lab.target, "ivy"), str::to_string);

    // New mail, queued again after the finished pass: copied once.
    fill(
        &kit.lab.source,
        "ivy",
        "INBOX",
        &(50_000..50_010)
            .map(|i| generated(i, 2_000))
            .collect::<Vec<_>>(),
    );
    kit.ok(&["migrate", &job, "--enqueue-only", "--mailbox", "ivy"]);
    // Off the queue once a pass that started after the queuing has finished, with the new
    // mail in the ledger.
    kit.wait_status(Duration::from_secs(10), "ivy's new mail passed", |s| {
        ivy_done(s)
            && s["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["source"]["login"] == "ivy" && e["copied"] == 70)
    });
    ivy_src = snapshot(&kit.lab.source, "ivy");
    assert_eq!(total(&ivy_src), 70);
    let ivy_dst = snapshot(&kit.lab.target, "ivy");
    assert_same(&ivy_src, &ivy_dst, str::to_string);
    assert_eq!(total(&ivy_dst), 70, "each message once");
    // jon was never queued: the worker left him alone.
    assert_eq!(total(&snapshot(&kit.lab.target, "jon")), 0);
    let (code, logs) = worker.terminate();
    assert_eq!(code.code(), Some(0), "{logs}");
    let w = of_pid(&kit.workers(), pid).unwrap();
    assert_eq!(w["state"], "stopped");
    assert_eq!(w["messages"], 70, "{w:#}");
}

/// A mailbox whose pass fails (its login is refused) stays queued, and no worker of the job
/// tries it again before the backoff has gone by: the backoff lives in the store, not in each
/// worker. (Before, each worker kept its own, so the second worker tried the mailbox again a
/// second after the first had failed it: with ten workers, ten failed logins, enough to lock
/// an account out in a directory with a lockout policy.)
#[test]
fn a_failing_mailbox_is_tried_once_per_backoff_by_all_workers_together() {
    let users = ["kim", "lou"];
    let kit = Shared::new(&users, false, "");
    fill_users(&kit.lab, &users, 10, 2_000);
    let job = kit.job();
    // lou's source login names no user of the source server: every login is refused.
    let csv = kit.lab.dir.path().join("mailboxes.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(
        &csv,
        text.replace("lou@old.example,lou,", "lou@old.example,lou-gone,"),
    )
    .unwrap();
    kit.ok(&["match", &job]);
    kit.ok(&["migrate", &job, "--enqueue-only", "--all"]);
    let workers = [kit.spawn_worker(1), kit.spawn_worker(2)];

    let lou = |s: &Value| -> Value {
        s["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == "id-lou")
            .cloned()
            .unwrap()
    };
    kit.wait_status(Duration::from_secs(30), "kim passed, lou failed", |s| {
        let kim_done = s["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["source"]["login"] == "kim" && e["state"] == "migrated");
        kim_done && lou(s)["queue_failures"].as_u64() >= Some(1)
    });
    // Both workers poll the queue every second meanwhile.
    std::thread::sleep(Duration::from_secs(5));
    let s = kit.status();
    let l = lou(&s);
    assert_eq!(l["state"], "failed", "{l:#}");
    assert!(
        l["queued"].is_string(),
        "a failed pass leaves it queued: {l:#}"
    );
    assert_eq!(
        l["queue_failures"], 1,
        "tried once by the two workers together: {l:#}"
    );
    let retry = l["queue_retry_in_seconds"].as_u64().unwrap();
    assert!(
        (15..=30).contains(&retry),
        "the first backoff is 30 s: {l:#}"
    );
    assert!(
        l["error"]
            .as_str()
            .unwrap_or("")
            .contains("[AUTHORIZATIONFAILED]"),
        "{l:#}"
    );
    let text = kit.ok(&["status", &job]);
    assert!(
        text.contains("its last pass failed; no worker tries it again for"),
        "{text}"
    );
    for w in workers {
        let (code, logs) = w.terminate();
        assert_eq!(code.code(), Some(0), "{logs}");
    }
    let kim_src = snapshot(&kit.lab.source, "kim");
    assert_same(&kim_src, &snapshot(&kit.lab.target, "kim"), str::to_string);
    assert_eq!(total(&snapshot(&kit.lab.target, "lou")), 0);
}

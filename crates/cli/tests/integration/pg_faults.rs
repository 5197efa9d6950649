//! Crash safety of a job shared through PostgreSQL (issue 8, point 7), against real Dovecots
//! and a real PostgreSQL 15: a `migrate` process paused past its lease and resumed, the
//! database restarted mid-pass, a process's connection to it cut mid-pass. Each time the
//! target holds every source message exactly once, compared message by message.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mailferry_testkit::postgres::{Postgres, PostgresConfig, PostgresDatabase};
use mailferry_testkit::proxy::{Direction, Faults, Proxy, Stall};
use serde_json::Value;

use crate::lab::*;

/// The job file `lab.job()` with its state in `db`, written to `path`, reaching the source
/// on `source_port`.
fn job_on(lab: &Lab, db: &PostgresDatabase, path: &Path, source_port: u16) {
    let text = std::fs::read_to_string(lab.job()).unwrap();
    let source_line = format!("port = {}\n", lab.source.port());
    assert!(text.contains(&source_line));
    let text = text
        .replacen(&source_line, &format!("port = {source_port}\n"), 1)
        .replacen(
            "name = \"test\"\n",
            &format!(
                "name = \"test\"\nstate = \"{}\"\nstate_password = {{ env = \"MF_TEST_STATE_PW\" }}\n",
                db.url()
            ),
            1,
        );
    std::fs::write(path, text).unwrap();
}

fn command(lab: &Lab, db: &PostgresDatabase, args: &[&str]) -> Command {
    let mut c = lab.command(args);
    c.env("MF_TEST_STATE_PW", db.password());
    c
}

/// A `migrate --all --json` process, its output in files (read when it is done).
struct Migrate {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Migrate {
    fn spawn(lab: &Lab, db: &PostgresDatabase, job: &Path, name: &str) -> Migrate {
        let out = lab.dir.path().join(format!("{name}.out"));
        let err = lab.dir.path().join(format!("{name}.err"));
        let child = command(
            lab,
            db,
            &["migrate", job.to_str().unwrap(), "--all", "--json"],
        )
        .stdout(Stdio::from(File::create(&out).unwrap()))
        .stderr(Stdio::from(File::create(&err).unwrap()))
        .spawn()
        .expect("spawn mailferry migrate");
        Migrate { child, out, err }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child, not reaped yet.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(r, 0, "kill {signal}");
    }

    /// Waits for the exit (within `limit`): its status, its JSON report and its stderr.
    fn finish(&mut self, limit: Duration) -> (ExitStatus, Value, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                start.elapsed() < limit,
                "migrate still running after {limit:?}: {}",
                std::fs::read_to_string(&self.err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        let v = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("no JSON ({e}) ({status}): {out}\nstderr: {err}"));
        (status, v, err)
    }
}

impl Drop for Migrate {
    fn drop(&mut self) {
        // A failed test leaves no process behind (a stopped one is continued to be killed).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            // SAFETY: as in `signal`.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
            let _ = self.child.wait();
        }
    }
}

fn fill_users(lab: &Lab, users: &[&str], per_user: usize, size: usize) {
    for (n, user) in users.iter().enumerate() {
        let base = n * 10_000;
        let half = per_user / 2;
        let msgs = |from: usize, to: usize, size: usize| {
            (from..to).map(|i| generated(i, size)).collect::<Vec<_>>()
        };
        fill(&lab.source, user, "INBOX", &msgs(base, base + half, size));
        fill(
            &lab.source,
            user,
            "Archive",
            &msgs(base + half, base + per_user, size * 2),
        );
    }
}

fn assert_exactly_once(lab: &Lab, users: &[&str], per_user: usize) {
    for user in users {
        let src = snapshot(&lab.source, user);
        assert_eq!(total(&src), per_user, "{user} on the source");
        let dst = snapshot(&lab.target, user);
        assert_same(&src, &dst, str::to_string);
        assert_eq!(total(&dst), per_user, "{user} on the target");
    }
}

/// One number from SQL run on the job's database.
fn count(server: &Postgres, db: &PostgresDatabase, sql: &str) -> u64 {
    let out = server.psql(&db.name, sql);
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}: {out:?}"))
}

fn holder_of(lab: &Lab, db: &PostgresDatabase, job: &Path, login: &str) -> Option<String> {
    let out = command(lab, db, &["status", job.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "status: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"]["login"] == login)
        .and_then(|e| e["held_by"]["holder"].as_str().map(str::to_string))
}

/// Three `migrate` processes on one job (`lease_seconds = 5`). The first is paused with
/// SIGSTOP while it holds an entry, past its lease; a second takes the entry over; the first
/// is resumed while the entry is the other's. It records nothing more of that entry (its
/// writes are fenced off), says it was taken over, and exits 0 like the others.
///
/// It is paused between messages, not in the middle of an APPEND (a late APPEND is
/// `orphans.rs`'s test): its source connection runs through a proxy that
/// stalls once it has sent 150 kB, so the process waits for the source with every APPEND it
/// started answered and recorded — the test checks that the ledger holds no intent then.
#[test]
fn a_process_paused_past_its_lease_is_taken_over_and_records_nothing_after() {
    let users = ["ana", "ben", "cem", "dan"];
    let per_user = 300;
    let lab = Lab::new(&users);
    fill_users(&lab, &users, per_user, 3_000);
    lab.write_job("[migration]\nconcurrency = 1\nlease_seconds = 5\n");
    let server = Postgres::shared();
    let db = server.fresh_database();
    let job = lab.dir.path().join("shared.toml");
    job_on(&lab, &db, &job, lab.source.port());
    let proxy = Proxy::before(&lab.source, |_| Faults {
        stall: Some(Stall {
            direction: Direction::Down,
            after: 150_000,
            duration: Duration::from_secs(3),
        }),
        ..Faults::default()
    });
    let job_a = lab.dir.path().join("paused.toml");
    job_on(&lab, &db, &job_a, proxy.port());
    let out = command(&lab, &db, &["match", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let mut a = Migrate::spawn(&lab, &db, &job_a, "a");
    wait_for(Duration::from_secs(60), "the first process stalled", || {
        proxy.stats().stalls >= 1
    });
    // Its appender drains what was fetched, then waits for the source.
    std::thread::sleep(Duration::from_millis(1500));
    let login = users
        .iter()
        .find(|u| {
            holder_of(&lab, &db, &job, u).is_some_and(|h| h.ends_with(&format!(":{}", a.pid())))
        })
        .expect("the first process holds an entry");
    let entry = format!("id-{login}");
    a.signal(libc::SIGSTOP);
    let copied_before = count(
        server,
        &db,
        &format!("SELECT count(*) FROM ledger WHERE entry_id = '{entry}' AND state = 'copied'"),
    );
    assert!(copied_before > 0, "paused after copying some of {login}");
    assert_eq!(
        count(
            server,
            &db,
            "SELECT count(*) FROM ledger WHERE state = 'pending'"
        ),
        0,
        "paused between messages, with no intent in flight"
    );
    // Past its lease: the others take the entry over (its process is alive, only paused).
    std::thread::sleep(Duration::from_secs(6));
    let mut b = Migrate::spawn(&lab, &db, &job, "b");
    let mut c = Migrate::spawn(&lab, &db, &job, "c");
    let (pb, pc) = (b.pid(), c.pid());
    wait_for(Duration::from_secs(60), "the entry taken over", || {
        holder_of(&lab, &db, &job, login)
            .is_some_and(|h| h.ends_with(&format!(":{pb}")) || h.ends_with(&format!(":{pc}")))
    });
    a.signal(libc::SIGCONT);

    let (sa, va, ea) = a.finish(Duration::from_secs(240));
    let (sb, vb, eb) = b.finish(Duration::from_secs(240));
    let (sc, vc, ec) = c.finish(Duration::from_secs(240));
    assert_eq!(sa.code(), Some(0), "{va:#}\n{ea}");
    assert_eq!(sb.code(), Some(0), "{vb:#}\n{eb}");
    assert_eq!(sc.code(), Some(0), "{vc:#}\n{ec}");
    assert!(
        ea.contains(&format!(
            "({entry}): taken over by another mailferry process"
        )),
        "{ea}"
    );
    // The paused process's pass of the entry is in no report and no run line: the new
    // holder's is the one recorded.
    let reported_by = |v: &Value| {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == entry.as_str())
    };
    assert!(!reported_by(&va), "{va:#}");
    assert!(reported_by(&vb) || reported_by(&vc), "{vb:#}\n{vc:#}");
    let run_a = va["run"].as_i64().expect("the first process's run");
    assert_eq!(
        count(
            server,
            &db,
            &format!(
                "SELECT count(*) FROM run_entries WHERE run_id = {run_a} AND entry_id = '{entry}'"
            )
        ),
        0
    );
    assert_eq!(
        count(
            server,
            &db,
            "SELECT count(*) FROM ledger WHERE state = 'copied'"
        ),
        (users.len() * per_user) as u64
    );
    assert_exactly_once(&lab, &users, per_user);
}

/// Copied ledger rows so far, 0 while the database cannot be asked.
fn copied_rows(server: &Postgres, db: &PostgresDatabase) -> u64 {
    count(
        server,
        db,
        "SELECT count(*) FROM ledger WHERE state = 'copied'",
    )
}

/// PostgreSQL restarts (a fast shutdown, 3 s with nothing listening, then up again with the
/// same data on the same port) in the middle of a pass: the pass finishes, exit 0, every
/// message once.
#[test]
fn a_postgres_restart_mid_pass_costs_nothing() {
    let users = ["eve", "fay", "gus"];
    let per_user = 400;
    let lab = Lab::new(&users);
    fill_users(&lab, &users, per_user, 3_000);
    lab.write_job("[migration]\nconcurrency = 2\n");
    let mut server = Postgres::start(PostgresConfig::default());
    let db = server.fresh_database();
    let job = lab.dir.path().join("restarted.toml");
    job_on(&lab, &db, &job, lab.source.port());
    let out = command(&lab, &db, &["match", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut m = Migrate::spawn(&lab, &db, &job, "m");
    wait_for(Duration::from_secs(60), "copying under way", || {
        copied_rows(&server, &db) >= 100
    });
    server.restart(Duration::from_secs(3));
    let during = copied_rows(&server, &db);
    assert!(
        during < (users.len() * per_user) as u64,
        "the pass was over before the restart"
    );
    let (status, v, err) = m.finish(Duration::from_secs(240));
    assert_eq!(status.code(), Some(0), "{v:#}\n{err}");
    assert_eq!(v["copied"], (users.len() * per_user) as u64, "{v:#}");
    assert_exactly_once(&lab, &users, per_user);
}

/// The process's connection to PostgreSQL is cut again and again mid-pass (through a proxy:
/// its first connection after 8 kB from the server, which is past the store's opening, then
/// connection n after 3 kB + 1 kB·n: with its statements prepared once per session, a pass
/// gets too few bytes from the server to reach the cuts of 20 kB and 4 kB + 2 kB·n this test
/// had before): the pass finishes, exit 0, every message once.
#[test]
fn a_cut_postgres_connection_mid_pass_costs_nothing() {
    let users = ["hal", "ida", "jay"];
    let per_user = 400;
    let lab = Lab::new(&users);
    fill_users(&lab, &users, per_user, 3_000);
    lab.write_job("[migration]\nconcurrency = 2\n");
    let server = Postgres::shared();
    let db = server.fresh_database();
    let upstream = format!("{}:{}", db.host, db.port).parse().unwrap();
    let proxy = Proxy::start(upstream, |n| Faults {
        cut_down_after: Some(if n == 0 { 8_000 } else { 3_000 + 1_000 * n }),
        ..Faults::default()
    });
    let cut = PostgresDatabase {
        port: proxy.port(),
        ..db.clone()
    };
    let direct = lab.dir.path().join("direct.toml");
    job_on(&lab, &db, &direct, lab.source.port());
    let out = command(&lab, &db, &["match", direct.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let job = lab.dir.path().join("cut.toml");
    job_on(&lab, &cut, &job, lab.source.port());
    let mut m = Migrate::spawn(&lab, &cut, &job, "m");
    let (status, v, err) = m.finish(Duration::from_secs(240));
    assert_eq!(status.code(), Some(0), "{v:#}\n{err}");
    let cuts = proxy.stats().cuts;
    assert!(cuts >= 2, "the connection was cut {cuts} times");
    assert_eq!(v["copied"], (users.len() * per_user) as u64, "{v:#}");
    assert_exactly_once(&lab, &users, per_user);
}

/// `orphans.rs`'s late APPEND on PostgreSQL: a process stopped while the 1 MB literal of its
/// APPEND crawls through a slow link to the target (80 kB/s) is taken over; the new holder
/// copies every message and ends; the late APPEND lands, and the resumed process records it
/// as an orphan (the target holds it twice). The next pass removes it: every message once.
#[test]
fn a_late_append_after_a_take_over_is_removed_by_the_next_holder() {
    let lab = Lab::new(&["ana"]);
    let mut msgs: Vec<Msg> = (0..4).map(|i| generated(i, 2_000)).collect();
    msgs.insert(2, generated(4, 1_000_000));
    fill(&lab.source, "ana", "INBOX", &msgs);
    let extra = "[migration]\nconcurrency = 1\nlease_seconds = 5\n";
    let server = Postgres::shared();
    let db = server.fresh_database();
    let proxy = Proxy::before(&lab.target, |_| Faults {
        bytes_per_second: Some(80_000),
        ..Faults::default()
    });
    lab.write_job_via(lab.source.port(), proxy.port(), extra);
    let slow = lab.dir.path().join("slow.toml");
    job_on(&lab, &db, &slow, lab.source.port());
    lab.write_job(extra);
    let job = lab.dir.path().join("shared.toml");
    job_on(&lab, &db, &job, lab.source.port());
    let out = command(&lab, &db, &["match", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let mut a = Migrate::spawn(&lab, &db, &slow, "a");
    wait_for(Duration::from_secs(60), "A's intents committed", || {
        count(
            server,
            &db,
            "SELECT count(*) FROM ledger WHERE state = 'pending'",
        ) > 0
    });
    std::thread::sleep(Duration::from_secs(1));
    a.signal(libc::SIGSTOP);
    let copied_by_a = count(
        server,
        &db,
        "SELECT count(*) FROM ledger WHERE state = 'copied'",
    );
    assert!(
        copied_by_a < 5,
        "A was stopped with the large APPEND unanswered"
    );
    std::thread::sleep(Duration::from_secs(6));
    let (sb, vb, eb) = Migrate::spawn(&lab, &db, &job, "b").finish(Duration::from_secs(120));
    assert_eq!(sb.code(), Some(0), "{vb:#}\n{eb}");
    assert_eq!(vb["copied"], 5 - copied_by_a, "{vb:#}");
    wait_for(Duration::from_secs(30), "A's APPEND stored", || {
        total(&snapshot(&lab.target, "ana")) > 5
    });
    a.signal(libc::SIGCONT);
    let (sa, va, ea) = a.finish(Duration::from_secs(120));
    assert_eq!(sa.code(), Some(0), "{va:#}\n{ea}");
    let orphans = count(server, &db, "SELECT count(*) FROM orphans");
    assert!(orphans >= 1, "A recorded the copies it made: {ea}");
    assert_eq!(
        total(&snapshot(&lab.target, "ana")) as u64,
        5 + orphans,
        "each orphan is a second copy"
    );
    let (sc, vc, ec) = Migrate::spawn(&lab, &db, &job, "c").finish(Duration::from_secs(120));
    assert_eq!(sc.code(), Some(0), "{vc:#}\n{ec}");
    assert_eq!(vc["copied"], 0, "{vc:#}");
    let src = snapshot(&lab.source, "ana");
    let dst = snapshot(&lab.target, "ana");
    assert_same(&src, &dst, str::to_string);
    assert_eq!(total(&dst), 5);
    assert_eq!(count(server, &db, "SELECT count(*) FROM orphans"), 0);
}

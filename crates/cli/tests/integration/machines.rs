//! Workers as they run on several machines and in containers: each `mailferry worker` in its
//! own PID namespace (its PIDs mean nothing to the others, and two of them are both PID 1),
//! one with a host name of its own (its own UTS namespace: another machine's name), the others
//! sharing this machine's name as containers run with `--network host` do. They share only the
//! PostgreSQL state and the IMAP servers. No worker may take a live worker's pass over, the
//! workers list must tell all four apart, and the target must hold every message once.
//!
//! Namespaces need root, or unprivileged user namespaces (then each worker runs as root of its
//! own user namespace); `unshare` is util-linux's.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::workers::{Shared, Worker, all_done, assert_exactly_once, fill_users};

const USERS: [&str; 8] = ["amy", "bob", "cai", "dov", "eli", "fay", "gus", "hal"];
const PER_USER: usize = 600;

/// One worker in its own PID namespace (and, with `hostname`, its own UTS namespace): a
/// [`Worker`] whose process is `unshare`, the namespace's PID 1 its child.
struct NsWorker(Worker);

impl NsWorker {
    /// `pid2`: mailferry runs as PID 2 of its namespace (a shell is PID 1), not as PID 1.
    fn spawn(kit: &Shared, n: usize, hostname: Option<&str>, pid2: bool) -> NsWorker {
        let inner = kit.command(&["worker", &kit.job()]);
        let mut c = Command::new("unshare");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            c.args(["--user", "--map-root-user"]);
        }
        c.args(["--pid", "--fork"]);
        if hostname.is_some() {
            c.arg("--uts");
        }
        // The shell sets the host name, then runs mailferry as PID 2 (a child) or PID 1 (exec).
        let script = format!(
            "{}{}",
            hostname.map_or(String::new(), |h| format!("hostname {h} || exit 97; ")),
            if pid2 {
                "\"$@\"; exit $?"
            } else {
                "exec \"$@\""
            }
        );
        c.args(["--", "sh", "-c", &script, "sh"]);
        c.arg(inner.get_program()).args(inner.get_args());
        for (k, v) in inner.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c.current_dir(inner.get_current_dir().expect("the lab's folder"));
        assert!(
            Command::new("unshare").arg("--version").output().is_ok(),
            "these tests need unshare: apt-get install util-linux"
        );
        NsWorker(Worker::spawn(
            c,
            kit.lab.dir.path(),
            &format!("ns-worker-{n}"),
        ))
    }

    /// The mailferry process inside, by its PID on this machine (a descendant of `unshare`).
    fn mailferry_pid(&self) -> Option<u32> {
        let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_mailferry")).ok()?;
        let mut frontier = vec![self.0.pid()];
        while let Some(p) = frontier.pop() {
            if std::fs::read_link(format!("/proc/{p}/exe")).ok().as_ref() == Some(&exe) {
                return Some(p);
            }
            frontier.extend(children(p));
        }
        None
    }

    /// SIGTERM to the worker, then the exit status of `unshare` (within a minute).
    fn terminate(mut self) -> (Option<i32>, String) {
        let pid = self.mailferry_pid().expect("the worker's process");
        // SAFETY: kill(2) on a process of ours; signal 15 reaches a namespace's PID 1 from
        // outside it because mailferry handles SIGTERM.
        let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(r, 0, "SIGTERM");
        let (status, logs) = self.0.wait_stopped();
        (status.code(), logs)
    }
}

impl Drop for NsWorker {
    fn drop(&mut self) {
        if self.0.running() {
            // Killing the namespace's PID 1 ends every process in it (`Worker`'s own drop then
            // kills and reaps `unshare`).
            for pid in children(self.0.pid()) {
                // SAFETY: kill(2) on a child of our child.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

/// The children of a process, from /proc.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn workers_in_their_own_pid_and_uts_namespaces_share_a_postgres_job_without_taking_over_each_other()
{
    let kit = Shared::new(
        &USERS,
        true,
        "[migration]\nconcurrency = 1\nlease_seconds = 120\n",
    );
    // Each entry's pass lasts long enough that the workers hold leases side by side.
    fill_users(&kit.lab, &USERS, PER_USER, 4_000);
    let job = kit.job();
    kit.ok(&["match", &job]);
    kit.ok(&["migrate", &job, "--enqueue-only", "--all"]);

    // This machine's name for three of them; PID 1 for three, PID 2 for one.
    let mut workers = vec![
        NsWorker::spawn(&kit, 1, None, false),
        NsWorker::spawn(&kit, 2, None, true),
        NsWorker::spawn(&kit, 3, None, false),
        NsWorker::spawn(&kit, 4, Some("mailferry-machine-b"), false),
    ];
    let names = |w: &[Value]| -> Vec<(String, u64, String)> {
        w.iter()
            .filter(|x| x["state"] == "running")
            .map(|x| {
                (
                    x["host"].as_str().unwrap_or_default().to_string(),
                    x["pid"].as_u64().unwrap_or(0),
                    x["name"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    let start = Instant::now();
    loop {
        let w = kit.workers();
        if names(&w).len() == 4 {
            break;
        }
        for x in &mut workers {
            assert!(
                x.0.running(),
                "a worker ended before it was listed: {}",
                x.0.logs()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "four running workers, told apart, not listed after 30 s: {w:#?}\n{}",
            workers
                .iter()
                .map(|x| x.0.logs())
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let listed = names(&kit.workers());
    let mut pids: Vec<u64> = listed.iter().map(|(_, p, _)| *p).collect();
    pids.sort_unstable();
    assert_eq!(
        pids,
        [1, 1, 1, 2],
        "PIDs as each namespace sees them: {listed:?}"
    );
    assert_eq!(
        listed
            .iter()
            .filter(|(h, _, _)| h == "mailferry-machine-b")
            .count(),
        1,
        "the other machine's name: {listed:?}"
    );

    let s = kit.wait_status(Duration::from_secs(300), "every entry migrated", all_done);
    assert!(all_done(&s));
    assert_exactly_once(&kit.lab, &USERS, PER_USER);

    let mut logs = String::new();
    for x in workers {
        let (code, l) = x.terminate();
        assert_eq!(code, Some(0), "{l}");
        assert!(
            !l.contains("taken over by another"),
            "a live worker's pass was taken over by a worker in another namespace: {l}"
        );
        logs.push_str(&l);
    }
    // Each stopped cleanly and wrote its figures, under its own name.
    let w = kit.workers();
    let stopped: Vec<&Value> = w
        .iter()
        .filter(|x| listed.iter().any(|(_, _, n)| x["name"] == n.as_str()))
        .collect();
    assert_eq!(stopped.len(), 4, "{w:#?}");
    assert!(stopped.iter().all(|x| x["state"] == "stopped"), "{w:#?}");
    let sum = |k: &str| stopped.iter().map(|x| x[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        sum("messages"),
        (USERS.len() * PER_USER) as u64,
        "each message copied by exactly one worker: {w:#?}\n{logs}"
    );
    assert_eq!(
        sum("passes"),
        USERS.len() as u64,
        "one pass per queued entry, none taken over or passed twice: {w:#?}\n{logs}"
    );
    // Nothing is left to do.
    let v = kit.json(&["migrate", &job, "--all"]);
    assert_eq!(v["copied"], 0, "{v:#}");
}

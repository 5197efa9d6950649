//! Caps across processes: `max_connections` of a server holds for all the processes sharing a
//! job (`migrate` processes and workers, on SQLite or PostgreSQL), not per process. The test
//! of record watches the target server's own connection count (its established sockets, in
//! the kernel's table) while three processes of concurrency 2 run against a target capped at
//! 2: six passes could run at once, two may.

use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::lab::*;
use crate::workers::{Shared, Worker, all_done, assert_exactly_once, fill_users};

const USERS: [&str; 6] = ["ana", "ben", "cem", "dan", "eve", "fay"];
const PER_USER: usize = 300;
const TARGET_CAP: usize = 2;
const PROCESSES: usize = 3;

/// A job of concurrency 2 whose target allows `TARGET_CAP` connections (the source 8), with
/// every mailbox filled and matched.
fn capped(postgres: bool) -> Shared {
    let kit = Shared::new(&USERS, postgres, "[migration]\nconcurrency = 2\n");
    let path = kit.lab.job();
    let text = std::fs::read_to_string(&path).unwrap();
    let (source, target) = text.split_at(text.find("[target]").expect("a [target] table"));
    let target = target.replacen(
        "max_connections = 8\n",
        &format!("max_connections = {TARGET_CAP}\n"),
        1,
    );
    assert!(target.contains(&format!("max_connections = {TARGET_CAP}\n")));
    std::fs::write(&path, format!("{source}{target}")).unwrap();
    fill_users(&kit.lab, &USERS, PER_USER, 4_000);
    kit.ok(&["match", &kit.job()]);
    kit
}

fn spawn_migrate(kit: &Shared) -> Child {
    kit.command(&["migrate", &kit.job(), "--all", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mailferry migrate")
}

/// Runs the passes as `run` does while the servers' connections are sampled; returns
/// the most connections seen on the source and on the target, and what the processes
/// printed on stderr.
fn sampled(kit: &Shared, run: impl FnOnce() -> Vec<String>) -> (usize, usize, Vec<String>) {
    let ports = [kit.lab.source.port(), kit.lab.target.port()];
    assert_eq!(established_on(&ports), [0, 0], "connections before the run");
    let peaks = ConnectionPeaks::start(&ports);
    let started = std::time::Instant::now();
    let logs = run();
    let (peak, samples) = peaks.stop();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "caps: most connections at once: source {}, target {}; {samples} samples in {seconds:.1} s",
        peak[0], peak[1]
    );
    // A pass lasts seconds: a sample every few tenths of a second at worst sees it.
    assert!(
        samples as f64 > seconds * 4.0,
        "only {samples} samples in {seconds:.1} s"
    );
    (peak[0], peak[1], logs)
}

fn the_cap_holds(kit: &Shared, target_peak: usize, source_peak: usize, logs: &[String]) {
    assert!(
        target_peak <= TARGET_CAP,
        "the target had {target_peak} connections at once (max_connections = {TARGET_CAP})"
    );
    // The cap is used, not just kept: passes ran side by side up to it.
    assert_eq!(target_peak, TARGET_CAP, "the cap was never reached");
    // Each pass opens one connection per side: the source follows the target's cap.
    assert!(source_peak <= TARGET_CAP, "source: {source_peak}");
    assert!(
        logs.iter().any(|l| l.contains("Waiting for room")),
        "no process waited for room: {logs:#?}"
    );
    assert_exactly_once(&kit.lab, &USERS, PER_USER);
}

fn three_migrate_processes_keep_the_target_under_its_cap(postgres: bool) {
    let kit = capped(postgres);
    let mut results: Vec<(i32, Value, String)> = Vec::new();
    let (source_peak, target_peak, logs) = sampled(&kit, || {
        let children: Vec<Child> = (0..PROCESSES).map(|_| spawn_migrate(&kit)).collect();
        for child in children {
            let out = child.wait_with_output().expect("wait");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "no JSON ({e}): {}\n{stderr}",
                    String::from_utf8_lossy(&out.stdout)
                )
            });
            results.push((out.status.code().unwrap_or(-1), v, stderr));
        }
        results.iter().map(|(_, _, e)| e.clone()).collect()
    });
    let mut copied = 0;
    for (code, v, stderr) in &results {
        assert_eq!(*code, 0, "{v:#}\n{stderr}");
        assert_eq!(v["failed"], 0, "{v:#}");
        copied += v["copied"].as_u64().unwrap_or(0);
    }
    assert_eq!(
        copied,
        (USERS.len() * PER_USER) as u64,
        "the processes' copies add up to the source"
    );
    the_cap_holds(&kit, target_peak, source_peak, &logs);
}

fn three_workers_keep_the_target_under_its_cap(postgres: bool) {
    let kit = capped(postgres);
    let job = kit.job();
    kit.ok(&["migrate", &job, "--enqueue-only", "--all"]);
    let mut messages = 0;
    let (source_peak, target_peak, logs) = sampled(&kit, || {
        let workers: Vec<Worker> = (1..=PROCESSES).map(|n| kit.spawn_worker(n)).collect();
        kit.wait_status(Duration::from_secs(240), "every entry migrated", all_done);
        workers
            .into_iter()
            .map(|w| {
                let (status, logs) = w.terminate();
                assert_eq!(status.code(), Some(0), "{logs}");
                logs
            })
            .collect()
    });
    for w in kit.json(&["workers", &job])["workers"].as_array().unwrap() {
        assert_eq!(w["state"], "stopped", "{w:#}");
        messages += w["messages"].as_u64().unwrap();
    }
    assert_eq!(
        messages,
        (USERS.len() * PER_USER) as u64,
        "each message copied by one worker"
    );
    the_cap_holds(&kit, target_peak, source_peak, &logs);
}

#[test]
fn three_migrate_processes_on_sqlite_never_open_more_target_connections_than_its_cap() {
    three_migrate_processes_keep_the_target_under_its_cap(false);
}

#[test]
fn three_migrate_processes_on_postgres_never_open_more_target_connections_than_its_cap() {
    three_migrate_processes_keep_the_target_under_its_cap(true);
}

#[test]
fn three_workers_on_sqlite_never_open_more_target_connections_than_its_cap() {
    three_workers_keep_the_target_under_its_cap(false);
}

#[test]
fn three_workers_on_postgres_never_open_more_target_connections_than_its_cap() {
    three_workers_keep_the_target_under_its_cap(true);
}

/// Two source mailboxes merged into one target mailbox capped at one connection, passed by
/// two `migrate` processes at once: the target never has two connections (the two passes to
/// that mailbox take turns), and it ends up with both mailboxes' messages, each once.
#[test]
fn two_processes_merging_two_mailboxes_into_one_keep_to_its_per_mailbox_cap() {
    let users = ["ana", "ben"];
    let kit = Shared::new(&users, false, "[migration]\nconcurrency = 2\n");
    let path = kit.lab.job();
    let text = std::fs::read_to_string(&path).unwrap();
    let at = text.find("[target]").expect("a [target] table");
    let (source, target) = text.split_at(at);
    let target = target.replacen(
        "max_connections = 8\n",
        "max_connections = 8\nmax_connections_per_mailbox = 1\n",
        1,
    );
    std::fs::write(&path, format!("{source}{target}")).unwrap();
    std::fs::write(
        kit.lab.dir.path().join("mailboxes.csv"),
        "Source ID,Source addresses,Source login,Target addresses,Target login\n\
         id-ana,ana@old.example,ana,ana@new.example,ana\n\
         id-ben,ben@old.example,ben,ana@new.example,ana\n",
    )
    .unwrap();
    fill_users(&kit.lab, &users, PER_USER, 4_000);
    kit.ok(&["match", &kit.job()]);
    let (_, target_peak, logs) = sampled(&kit, || {
        let children: Vec<Child> = (0..2).map(|_| spawn_migrate(&kit)).collect();
        children
            .into_iter()
            .map(|child| {
                let out = child.wait_with_output().expect("wait");
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                assert_eq!(out.status.code(), Some(0), "{stderr}");
                stderr
            })
            .collect()
    });
    assert_eq!(
        target_peak, 1,
        "the merged mailbox had {target_peak} connections at once"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("Waiting for room") && l.contains("mailbox ana")),
        "no process waited for the mailbox: {logs:#?}"
    );
    let mut merged = snapshot(&kit.lab.source, "ana");
    for (folder, msgs) in snapshot(&kit.lab.source, "ben") {
        let all = merged.entry(folder).or_default();
        all.extend(msgs);
        all.sort();
    }
    assert_eq!(total(&merged), 2 * PER_USER);
    let dst = snapshot(&kit.lab.target, "ana");
    assert_same(&merged, &dst, str::to_string);
    assert_eq!(total(&dst), 2 * PER_USER, "each message once");
}

//! A job whose state lives in a real PostgreSQL: the same passes, the same exactness, and
//! several processes sharing it as they share an SQLite job.

use std::process::Stdio;

use mailferry_testkit::postgres::Postgres;

use crate::lab::*;

#[test]
fn a_job_with_its_state_in_postgres_migrates_exactly_and_processes_share_it() {
    let lab = Lab::new(&["pam", "pat"]);
    for (n, user) in ["pam", "pat"].iter().enumerate() {
        fill(
            &lab.source,
            user,
            "INBOX",
            &(n * 1000..n * 1000 + 300)
                .map(|i| generated(i, 3_000))
                .collect::<Vec<_>>(),
        );
    }
    let db = Postgres::shared().fresh_database();
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
    let job = jobp.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut c = lab.command(args);
        c.env("MF_TEST_STATE_PW", db.password());
        c
    };
    let out = run(&["match", job]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!lab.db().exists(), "no SQLite file beside a postgres job");

    // Two processes at once share the job through PostgreSQL's leases.
    let children: Vec<_> = (0..2)
        .map(|_| {
            run(&["migrate", job, "--all", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut copied = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        copied += v["copied"].as_u64().unwrap();
    }
    assert_eq!(copied, 600, "each message copied by exactly one process");
    for user in ["pam", "pat"] {
        assert_same(
            &snapshot(&lab.source, user),
            &snapshot(&lab.target, user),
            str::to_string,
        );
    }
    let out = run(&["migrate", job, "--all", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["copied"], 0, "a delta pass copies nothing: {v:#}");
    // Without the password the state cannot be opened, and the error never shows one.
    let out = lab.command(&["status", job]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("state_password"), "{err}");
    assert!(!err.contains(db.password()), "{err}");
}

/// `state copy`: a job started on SQLite grows onto PostgreSQL mid-job and goes on where it
/// stopped; then back to a new SQLite file. No message is copied twice, new mail exactly once.
#[test]
fn state_copy_moves_a_job_to_postgres_and_back_and_the_next_pass_copies_only_new_mail() {
    let lab = Lab::new(&["sam", "sid"]);
    for (n, user) in ["sam", "sid"].iter().enumerate() {
        fill(
            &lab.source,
            user,
            "INBOX",
            &(n * 1000..n * 1000 + 200)
                .map(|i| generated(i, 2_000))
                .collect::<Vec<_>>(),
        );
    }
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    // Only sam migrates on SQLite: sid is left for after the move.
    let out = lab.mailferry(&["migrate", job, "--mailbox", "sam", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["copied"], 200);
    let status_before: serde_json::Value =
        serde_json::from_slice(&lab.mailferry(&["status", job, "--json"]).stdout).unwrap();

    let db = Postgres::shared().fresh_database();
    let with_pw = |args: &[&str]| {
        let mut c = lab.command(args);
        c.env("MAILFERRY_STATE_PASSWORD", db.password());
        c.output().unwrap()
    };
    let out = with_pw(&["state", "copy", job, "--to", &db.url(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let copied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(copied["entries"], 2, "{copied}");
    assert_eq!(copied["ledger_rows"], 200, "{copied}");
    assert_eq!(copied["runs"], 1, "{copied}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(db.password()));
    // A second copy into the same database is refused: nothing is ever merged.
    let out = with_pw(&["state", "copy", job, "--to", &db.url()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already holds a job's state"),
        "{out:?}"
    );

    // The job now points at PostgreSQL; new mail arrives for sam.
    let text = std::fs::read_to_string(&jobp).unwrap().replacen(
        "name = \"test\"\n",
        &format!(
            "name = \"test\"\nstate = \"{}\"\nstate_password = {{ env = \"MAILFERRY_STATE_PASSWORD\" }}\n",
            db.url()
        ),
        1,
    );
    std::fs::write(&jobp, text).unwrap();
    let status_pg: serde_json::Value =
        serde_json::from_slice(&with_pw(&["status", job, "--json"]).stdout).unwrap();
    assert_eq!(
        status_pg["entries"], status_before["entries"],
        "the entries as they were: states, counts, last passes"
    );
    let report = with_pw(&["report", job, "--list", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    fill(
        &lab.source,
        "sam",
        "INBOX",
        &(500..510).map(|i| generated(i, 2_000)).collect::<Vec<_>>(),
    );
    let out = with_pw(&["migrate", job, "--all", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["copied"], 210,
        "sam's 10 new messages and sid's 200: {v:#}"
    );
    for user in ["sam", "sid"] {
        assert_same(
            &snapshot(&lab.source, user),
            &snapshot(&lab.target, user),
            str::to_string,
        );
    }

    // And back to SQLite, beside the job file.
    let out = with_pw(&["state", "copy", job, "--to", "sqlite://back.db"]);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&jobp).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("state"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replacen(
            "name = \"test\"\n",
            "name = \"test\"\nstate = \"sqlite://back.db\"\n",
            1,
        );
    std::fs::write(&jobp, text).unwrap();
    let out = lab.mailferry(&["migrate", job, "--all", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["copied"], 0, "nothing twice after the way back: {v:#}");
    let runs: serde_json::Value =
        serde_json::from_slice(&lab.mailferry(&["report", job, "--list", "--json"]).stdout)
            .unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 3, "{runs}");
}

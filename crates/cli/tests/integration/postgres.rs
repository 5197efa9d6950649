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

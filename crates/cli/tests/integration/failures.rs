//! Failing mailboxes are reported with the server's own words and never stop the others;
//! a server restart mid-pass is survived; bad input is refused with a clear error and changes
//! nothing.

use std::process::Stdio;
use std::time::{Duration, Instant};

use mailferry_testkit::DovecotConfig;

use crate::lab::*;

#[test]
fn wrong_password_and_quota_are_reported_and_others_still_migrate() {
    let mut dst = DovecotConfig::new(&["ann", "ben", "cat"]);
    dst.quota_bytes = Some(60_000);
    let lab = Lab::with(DovecotConfig::new(&["ann", "ben", "cat"]), dst);
    for u in ["ann", "ben", "cat"] {
        fill(
            &lab.source,
            u,
            "INBOX",
            &(0..20).map(|i| generated(i, 5_000)).collect::<Vec<_>>(),
        );
    }
    // Per-mailbox logins on the source, with a wrong password for ben.
    let job = std::fs::read_to_string(lab.job()).unwrap();
    let source_end = job.find("[target]").unwrap();
    let (src, rest) = job.split_at(source_end);
    let src: String = src
        .lines()
        .filter(|l| !l.starts_with("admin_"))
        .map(|l| {
            if l.starts_with("auth") {
                "auth = \"per-mailbox\"\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(lab.job(), format!("{src}{rest}")).unwrap();
    std::fs::write(
        lab.dir.path().join("mailboxes.csv"),
        "Source ID,Source addresses,Source login,Source password,Target addresses,Target login\n\
         id-ann,ann@old.example,ann,pw-ann,ann@new.example,ann\n\
         id-ben,ben@old.example,ben,not-his-password,ben@new.example,ben\n\
         id-cat,cat@old.example,cat,pw-cat,cat@new.example,cat\n",
    )
    .unwrap();
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let (code, v) = lab.json(&["migrate", job, "--all"]);
    assert_eq!(code, 1, "{v:#}");
    let entry = |id: &str| {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .unwrap()
            .clone()
    };
    let ben = entry("id-ben");
    assert_eq!(ben["state"], "failed", "{v:#}");
    assert!(
        ben["error"]
            .as_str()
            .unwrap()
            .contains("AUTHENTICATIONFAILED"),
        "{ben:#}"
    );
    // 60 kB of quota: some of ann's 100 kB fit; the rest are refused with Dovecot's words.
    for id in ["id-ann", "id-cat"] {
        let e = entry(id);
        assert_eq!(e["state"], "partial", "{e:#}");
        assert!(e["copied"].as_u64().unwrap() > 0, "{e:#}");
        assert_eq!(
            e["copied"].as_u64().unwrap() + e["failed"].as_u64().unwrap(),
            20,
            "{e:#}"
        );
        let err = &e["errors"][0];
        assert_eq!(err["folder"], "INBOX");
        assert!(err["uid"].as_u64().is_some());
        assert!(
            err["message_id"].as_str().unwrap().starts_with("<gen-"),
            "{err:#}"
        );
        assert!(
            err["reason"].as_str().unwrap().contains("OVERQUOTA"),
            "{err:#}"
        );
    }
    // The report lists the same failures.
    let out = lab.mailferry(&["report", job, "--kind", "migration", "--format", "csv"]);
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(
        csv.lines()
            .any(|l| l.starts_with("message,id-ann,failed,") && l.contains("OVERQUOTA")),
        "{csv}"
    );
}

#[test]
fn target_restart_mid_pass_is_retried_and_nothing_is_duplicated() {
    let mut lab = Lab::new(&["dan"]);
    fill(
        &lab.source,
        "dan",
        "INBOX",
        &(0..3000).map(|i| generated(i, 3_000)).collect::<Vec<_>>(),
    );
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let child = lab
        .command(&["migrate", job, "--all", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Restart the target once some messages are in.
    let start = Instant::now();
    loop {
        let n = snapshot_count(&lab);
        if n >= 300 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.target.restart();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_same(
        &snapshot(&lab.source, "dan"),
        &snapshot(&lab.target, "dan"),
        str::to_string,
    );
}

fn snapshot_count(lab: &Lab) -> u32 {
    let mut c = connect(&lab.target, "dan");
    let n = c.status("INBOX").map(|s| s.messages).unwrap_or(0);
    c.logout();
    n
}

#[test]
fn a_bad_csv_is_rejected_whole_with_every_problem_and_changes_nothing() {
    let lab = Lab::new(&["eve"]);
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let before = lab.json(&["status", job]).1;
    let bad = lab.dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "Source ID,Source addresses,Target addresses,Colour\n\
         id-eve,eve@@old.example,eve@new.example,blue\n\
         id-eve,,x@new.example,red\n",
    )
    .unwrap();
    let out = lab.mailferry(&["match", job, "--csv", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.csv"), "{err}");
    assert!(err.contains("line 1, column Colour"), "{err}");
    assert!(err.contains("line 2, column Source addresses"), "{err}");
    assert!(err.contains("line 3, column Source ID"), "{err}");
    assert_eq!(lab.json(&["status", job]).1, before);
}

#[test]
fn a_bad_job_file_names_the_key_and_exits_2() {
    let lab = Lab::new(&["fay"]);
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();
    let text = std::fs::read_to_string(&jobp).unwrap().replacen(
        "security = \"plain\"",
        "security = \"maybe\"",
        1,
    );
    std::fs::write(&jobp, text).unwrap();
    let out = lab.mailferry(&["migrate", job, "--all"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("job.toml") && err.contains("source.security"),
        "{err}"
    );
    assert!(!lab.db().exists(), "a bad job file must not create state");

    let out = lab.mailferry(&["migrate", job]);
    assert_eq!(out.status.code(), Some(2));
}

/// A state file that is not a mailferry database is bad input: exit 2, the file named, and
/// not a byte of it changed, whatever the command.
#[test]
fn a_state_that_is_not_a_database_exits_2_names_it_and_changes_nothing() {
    let lab = Lab::new(&["hal"]);
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();
    let garbage =
        b"Not a database: an admin's notes, saved over the state by mistake.\n".repeat(80);
    std::fs::write(lab.db(), &garbage).unwrap();
    for args in [
        vec!["status", job],
        vec!["status", job, "--json"],
        vec!["migrate", job, "--all"],
        vec!["match", job],
        vec!["report", job],
    ] {
        let out = lab.mailferry(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("job.db") && err.contains("not a database"),
            "{args:?}: {err}"
        );
        assert_eq!(std::fs::read(lab.db()).unwrap(), garbage, "{args:?}");
    }
}

/// `status --json | head`: a reader that goes away ends the printing command quietly (by
/// SIGPIPE, as `cat` would), never with a panic.
#[test]
fn a_printing_command_whose_reader_goes_away_does_not_panic() {
    use std::os::unix::process::ExitStatusExt;
    let lab = Lab::new(&["ida"]);
    let job = lab.job();
    let job = job.to_str().unwrap();
    lab.migrate_ok();
    for args in [
        vec!["status", job, "--json"],
        vec!["report", job, "--format", "json"],
    ] {
        let mut child = lab
            .command(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader closes before the command prints.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

#[test]
fn init_writes_a_template_that_check_can_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["init", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(["init", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "init must not overwrite");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
            .args(args)
            .arg(&path)
            .env_remove("SOURCE_ADMIN_PASSWORD")
            .env_remove("TARGET_ADMIN_PASSWORD")
            .output()
            .unwrap()
    };
    let status = run(&["status"]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    // The template's secrets are unset: bad input, so exit 2, and each side says which.
    let check = run(&["check"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(2), "{said}");
    for var in ["SOURCE_ADMIN_PASSWORD", "TARGET_ADMIN_PASSWORD"] {
        assert!(said.contains(&format!("{var} is not set")), "{said}");
    }
    // In JSON the lines the job file caused say so; the others do not carry the field.
    let json: serde_json::Value =
        serde_json::from_slice(&run(&["check", "--json"]).stdout).unwrap();
    let lines: Vec<&serde_json::Value> = json["servers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["checks"].as_array().unwrap())
        .collect();
    for line in &lines {
        let secret = line["detail"].as_str().unwrap().contains("is not set");
        assert_eq!(line.get("bad_input").is_some(), secret, "{line}");
        if secret {
            assert_eq!(line["bad_input"], true, "{line}");
        }
    }
    assert!(lines.iter().any(|l| l.get("bad_input").is_some()), "{json}");
    // No run yet: bad input too.
    assert_eq!(run(&["report"]).status.code(), Some(2));
    // Looking at a new job leaves nothing behind: the state is created by the first command
    // that writes to it.
    for cmd in ["status", "check", "report", "workers"] {
        run(&[cmd]);
    }
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, [std::ffi::OsString::from("new.toml")]);
}

#[test]
fn a_tls_ca_that_cannot_be_read_exits_2_names_the_key_and_changes_nothing() {
    let lab = Lab::new(&["gus"]);
    fill(&lab.source, "gus", "INBOX", &[generated(1, 1_000)]);
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let state = || {
        let c = rusqlite::Connection::open(lab.db()).unwrap();
        let runs: i64 = c
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        let entry: String = c
            .query_row("SELECT state FROM entries", [], |r| r.get(0))
            .unwrap();
        let meta: Vec<String> = c
            .prepare("SELECT value FROM meta")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (runs, entry, meta)
    };
    let before = state();
    let text = std::fs::read_to_string(&jobp).unwrap().replacen(
        "security = \"plain\"\nallow_plain = true",
        "security = \"starttls\"\ntls_ca = \"missing-ca.pem\"",
        1,
    );
    std::fs::write(&jobp, text).unwrap();
    let out = lab.mailferry(&["migrate", job, "--all"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("source.tls_ca") && err.contains("missing-ca.pem"),
        "{err}"
    );
    assert_eq!(state(), before, "a bad tls_ca must change nothing");
    let out = lab.mailferry(&["check", job]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("missing-ca.pem"), "{said}");
    assert_eq!(state(), before, "check must change nothing");
    // In JSON the source's line says the job file caused it; the target's lines, checked
    // against its server, do not carry the field.
    let (code, v) = lab.json(&["check", job]);
    assert_eq!(code, 2, "{v:#}");
    for side in v["servers"].as_array().unwrap() {
        let source = side["side"] == "source";
        for line in side["checks"].as_array().unwrap() {
            let caused = line["detail"].as_str().unwrap().contains("missing-ca.pem");
            assert_eq!(caused, source, "{v:#}");
            assert_eq!(line.get("bad_input").is_some(), caused, "{v:#}");
        }
    }
}

/// The state's disk fills up mid-pass (SQLite answers SQLITE_FULL): the pass stops saying so,
/// the state stays consistent, and once there is room again the next pass finishes exactly —
/// every message once. The state lives on a small tmpfs mounted for the test (root only: the
/// suite runs as root in CI; as a normal user this test fails saying why).
#[test]
fn a_full_disk_under_the_state_stops_the_pass_cleanly_and_the_next_one_finishes_exactly() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test mounts a small tmpfs for the state database, which needs root: run the \
         suite as root (as CI does)"
    );
    let lab = Lab::new(&["fay"]);
    fill(
        &lab.source,
        "fay",
        "INBOX",
        &(0..3000).map(|i| generated(i, 600)).collect::<Vec<_>>(),
    );
    let mnt = tempfile::tempdir().unwrap();
    let mount = |opts: &str| {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(mnt.path())
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount -o {opts}: {out:?}");
    };
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    mount("size=320k");
    let _unmount = Unmount(mnt.path());
    let db = mnt.path().join("job.db");
    let text = std::fs::read_to_string(lab.job()).unwrap().replacen(
        "name = \"test\"\n",
        &format!("name = \"test\"\nstate = \"sqlite://{}\"\n", db.display()),
        1,
    );
    std::fs::write(lab.job(), text).unwrap();
    let job = lab.job();
    let job = job.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let out = lab.mailferry(&["migrate", job, "--all", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let said = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        said.contains("database or disk is full"),
        "the admin is told the state's disk is full: {said}"
    );
    // Room again: the next pass copies what is missing, and nothing twice.
    mount("remount,size=64m");
    let out = lab.mailferry(&["migrate", job, "--all", "--json"]);
    assert!(out.status.success(), "{out:?}");
    assert_same(
        &snapshot(&lab.source, "fay"),
        &snapshot(&lab.target, "fay"),
        str::to_string,
    );
    let (code, v) = lab.json(&["verify", job, "--all"]);
    assert_eq!(code, 0, "the ledger agrees with both servers: {v:#}");
}

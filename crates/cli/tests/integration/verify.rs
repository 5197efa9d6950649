//! `mailferry verify` compares the ledger with both servers; `--repair` makes the next pass
//! copy again exactly the copies the target lost, and nothing else.

use crate::lab::*;

/// Removes messages from a folder directly on a server (a user, an admin or a restore did).
fn expunge(d: &mailferry_testkit::Dovecot, user: &str, folder: &str, uids: &str) {
    let mut c = connect(d, user);
    c.select(folder, false).expect("select");
    c.run(&format!("UID STORE {uids} +FLAGS.SILENT (\\Deleted)"))
        .expect("store");
    c.run("EXPUNGE").expect("expunge");
    c.logout();
}

#[test]
fn verify_finds_lost_copies_and_repair_lets_the_next_pass_copy_exactly_those() {
    let lab = Lab::new(&["vic"]);
    fill(
        &lab.source,
        "vic",
        "INBOX",
        &(0..20).map(|i| generated(i, 2_000)).collect::<Vec<_>>(),
    );
    fill(
        &lab.source,
        "vic",
        "Archive",
        &(20..30).map(|i| generated(i, 2_000)).collect::<Vec<_>>(),
    );
    lab.migrate_ok();
    let jobp = lab.job();
    let job = jobp.to_str().unwrap();

    let (code, v) = lab.json(&["verify", job, "--all"]);
    assert_eq!(code, 0, "{v:#}");
    let e = &v["entries"][0];
    assert_eq!(
        (
            e["agreed"].as_u64(),
            e["missing_on_target"].as_array().map(Vec::len)
        ),
        (Some(30), Some(0)),
        "{v:#}"
    );

    // Two copies disappear from the target; one message from the source.
    expunge(&lab.target, "vic", "Archive", "1:2");
    expunge(&lab.source, "vic", "INBOX", "1");
    let (code, v) = lab.json(&["verify", job, "--all"]);
    assert_eq!(code, 1, "lost copies are a disagreement: {v:#}");
    let e = &v["entries"][0];
    assert_eq!(
        e["missing_on_target"].as_array().map(Vec::len),
        Some(2),
        "{v:#}"
    );
    assert_eq!(e["gone_from_source"], 1, "{v:#}");
    assert_eq!(e["agreed"], 27, "{v:#}");
    // Without --repair nothing changed: a pass copies nothing (the ledger still says copied).
    let (code, m) = lab.json(&["migrate", job, "--all"]);
    assert_eq!((code, m["copied"].as_u64()), (0, Some(0)), "{m:#}");

    let (code, v) = lab.json(&["verify", job, "--all", "--repair"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["entries"][0]["repaired"], 2, "{v:#}");
    // The next pass copies exactly the two lost messages, and the folders agree again.
    let (code, m) = lab.json(&["migrate", job, "--all"]);
    assert_eq!((code, m["copied"].as_u64()), (0, Some(2)), "{m:#}");
    let src = snapshot(&lab.source, "vic");
    let dst = snapshot(&lab.target, "vic");
    assert_eq!(src["Archive"], dst["Archive"]);
    // INBOX on the target keeps the copy of the message deleted on the source (deletions
    // are not propagated), and holds every other source message exactly once.
    assert_eq!(dst["INBOX"].len(), 20);
    assert!(src["INBOX"].iter().all(|m| dst["INBOX"].contains(m)));
    let (code, v) = lab.json(&["verify", job, "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["entries"][0]["agreed"], 29, "{v:#}");
}

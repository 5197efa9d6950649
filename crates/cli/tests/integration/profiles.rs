//! Server profiles against a real Dovecot: `profile = "exchange-online"` on a target that
//! advertises what Exchange Online does drives the fallback paths (keywords stripped and
//! counted, `\Flagged` set again after APPEND, an oversized message refused locally with the
//! reason while the rest of the mailbox migrates, no CONDSTORE used).

use mailferry_testkit::{DovecotConfig, Profile};

use crate::lab::*;

fn message(i: usize, size: usize, flags: &[&str]) -> Msg {
    let mut m = generated(i, size);
    m.flags = flags.iter().map(|f| f.to_string()).collect();
    m
}

#[test]
fn exchange_online_profile_strips_keywords_reflags_and_refuses_oversized_messages() {
    let src = DovecotConfig::new(&["erin"]);
    let mut dst = DovecotConfig::new(&["erin"]);
    dst.profile = Profile::ExchangeLike;
    let lab = Lab::with(src, dst);
    let job = std::fs::read_to_string(lab.job()).unwrap().replace(
        "[target]\n",
        "[target]\nprofile = \"exchange-online\"\nmax_message_size = 5000\n",
    );
    std::fs::write(lab.job(), job).unwrap();
    fill(
        &lab.source,
        "erin",
        "INBOX",
        &[
            message(0, 1500, &["\\Flagged", "$Custom", "\\Seen"]),
            message(1, 1500, &["Urgent"]),
            message(2, 9000, &["\\Seen"]),
            message(3, 1500, &["\\Flagged"]),
        ],
    );
    fill(&lab.source, "erin", "Files", &[message(4, 1500, &[])]);
    let path = lab.job();
    let job = path.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let trace = lab.dir.path().join("trace.log");
    let out = lab
        .command(&["migrate", job, "--all", "--json"])
        .env("MAILFERRY_TRACE", &trace)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    let e = &v["entries"][0];
    assert_eq!(e["state"], "partial", "{v:#}");
    assert_eq!(
        (e["copied"].as_u64(), e["failed"].as_u64()),
        (Some(4), Some(1)),
        "{v:#}"
    );
    // $Custom on message 0 and Urgent on message 1: counted per folder, not a failure.
    assert_eq!(
        e["keywords_dropped"],
        serde_json::json!([{ "folder": "INBOX", "count": 2 }]),
        "{v:#}"
    );
    let reason = e["errors"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("max_message_size of 5000 bytes"),
        "{reason}"
    );
    assert!(reason.contains("exchange-online"), "{reason}");

    let dst = snapshot(&lab.target, "erin");
    // Exchange Online reserves `Files`: it is stored under the documented name.
    assert_eq!(dst["Files (migrated)"].len(), 1, "{:?}", dst.keys());
    assert!(!dst.contains_key("Files"), "{:?}", dst.keys());
    let inbox = &dst["INBOX"];
    assert_eq!(
        inbox.len(),
        3,
        "{:?}",
        inbox.iter().map(|s| &s.flags).collect::<Vec<_>>()
    );
    let flags: Vec<&str> = inbox.iter().map(|s| s.flags.as_str()).collect();
    assert!(
        flags
            .iter()
            .all(|f| !f.contains("$Custom") && !f.contains("Urgent")),
        "{flags:?}"
    );
    assert_eq!(
        flags.iter().filter(|f| f.contains("\\Flagged")).count(),
        2,
        "{flags:?}"
    );

    let log = std::fs::read_to_string(&trace).unwrap();
    let target = format!("{}:{} ", lab.target.host(), lab.target.port());
    let source = format!("{}:{} ", lab.source.host(), lab.source.port());
    let to_target: Vec<&str> = log.lines().filter(|l| l.starts_with(&target)).collect();
    // The oversized message was never sent; \Flagged was set again on the two flagged ones.
    assert!(
        to_target
            .iter()
            .any(|l| l.contains("+FLAGS.SILENT (\\Flagged)")),
        "{log}"
    );
    assert!(!log.contains("Generated message 2\r"), "sent anyway");
    assert!(
        to_target
            .iter()
            .all(|l| !l.contains("CONDSTORE") && !l.contains("ENABLE")),
        "{log}"
    );
    assert!(
        to_target.iter().all(|l| !l.contains("HIGHESTMODSEQ")),
        "{log}"
    );
    // The source is a full Dovecot with CONDSTORE: its (recognised) profile uses it.
    assert!(
        log.lines()
            .any(|l| l.starts_with(&source) && l.contains("HIGHESTMODSEQ")),
        "{log}"
    );
}

#[test]
fn check_shows_the_recognised_profile() {
    let lab = Lab::new(&["finn"]);
    let out = lab.mailferry(&["check", lab.job().to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("profile: dovecot (recognised from the greeting and capabilities)"),
        "{text}"
    );
}

/// A target that does advertise CONDSTORE (a full Dovecot), with `profile =
/// "exchange-online"`: the profile's "no CONDSTORE" holds, the default profile's source uses it.
#[test]
fn exchange_online_profile_never_uses_condstore_even_when_advertised() {
    let lab = Lab::new(&["gus"]);
    let job = std::fs::read_to_string(lab.job())
        .unwrap()
        .replace("[target]\n", "[target]\nprofile = \"exchange-online\"\n");
    std::fs::write(lab.job(), job).unwrap();
    fill(
        &lab.source,
        "gus",
        "INBOX",
        &(0..3).map(|i| generated(i, 1200)).collect::<Vec<_>>(),
    );
    let path = lab.job();
    let job = path.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let trace = lab.dir.path().join("trace.log");
    for _ in 0..2 {
        let out = lab
            .command(&["migrate", job, "--all", "--json"])
            .env("MAILFERRY_TRACE", &trace)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let log = std::fs::read_to_string(&trace).unwrap();
    let target = format!("{}:{} ", lab.target.host(), lab.target.port());
    let source = format!("{}:{} ", lab.source.host(), lab.source.port());
    assert!(
        log.lines()
            .any(|l| l.starts_with(&target) && l.contains(" STATUS ")),
        "{log}"
    );
    assert!(
        log.lines()
            .filter(|l| l.starts_with(&target))
            .all(|l| !l.contains("HIGHESTMODSEQ") && !l.contains("CONDSTORE")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with(&source) && l.contains("HIGHESTMODSEQ")),
        "{log}"
    );
    // Same bodies; the custom keywords (`$Label1`, `ProjectX`, …) are the profile's to drop.
    let (src, dst) = (snapshot(&lab.source, "gus"), snapshot(&lab.target, "gus"));
    let bodies = |s: &std::collections::BTreeMap<String, Vec<Seen>>| {
        let mut b: Vec<Vec<u8>> = s["INBOX"].iter().map(|m| m.body.clone()).collect();
        b.sort();
        b
    };
    assert_eq!(bodies(&src), bodies(&dst));
    assert!(src["INBOX"].iter().any(|m| m.flags.contains("$Label1")));
    assert!(
        dst["INBOX"].iter().all(|m| m
            .flags
            .split(' ')
            .all(|f| f.is_empty() || f.starts_with('\\'))),
        "{:?}",
        dst["INBOX"].iter().map(|m| &m.flags).collect::<Vec<_>>()
    );
}

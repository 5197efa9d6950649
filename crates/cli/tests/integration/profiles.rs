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

    // The figures are kept in the state: the run's report and `status` show them after
    // the process is gone.
    let run = v["run"].as_i64().unwrap().to_string();
    let report = |run: &str, format: &str| {
        let out = lab.mailferry(&["report", job, "--run", run, "--format", format]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dropped = serde_json::json!([{ "folder": "INBOX", "count": 2 }]);
    let r: serde_json::Value = serde_json::from_str(&report(&run, "json")).unwrap();
    assert_eq!(r["entries"][0]["keywords_dropped"], dropped, "{r:#}");
    let (_, st) = lab.json(&["status", job]);
    assert_eq!(st["entries"][0]["keywords_dropped"], dropped, "{st:#}");
    assert!(report(&run, "html").contains("<td>2 (INBOX 2)</td>"));
    assert!(
        report(&run, "csv").contains("keywords,id-erin,,,,,,,2,,INBOX,"),
        "{}",
        report(&run, "csv")
    );
    let text = String::from_utf8(lab.mailferry(&["status", job]).stdout).unwrap();
    assert!(
        text.contains("last pass: 2 custom keywords dropped"),
        "{text}"
    );

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

    // A delta pass copies nothing and drops nothing; the first run's report still has its
    // figures, and `status` shows the last pass's.
    let (_, v2) = lab.json(&["migrate", job, "--all"]);
    assert_eq!(v2["copied"], 0, "{v2:#}");
    assert!(v2["entries"][0].get("keywords_dropped").is_none(), "{v2:#}");
    let r: serde_json::Value = serde_json::from_str(&report(&run, "json")).unwrap();
    assert_eq!(r["entries"][0]["keywords_dropped"], dropped, "{r:#}");
    let (_, st) = lab.json(&["status", job]);
    assert_eq!(
        st["entries"][0]["keywords_dropped"],
        serde_json::json!([]),
        "{st:#}"
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

/// Adaptive throttling on dropped connections: a target whose connections are cut every few
/// hundred kilobytes (through the test kit's proxy) is a server shedding load. The second drop
/// within 30 s lowers the connection cap (written to the trace), the pause it brings is
/// counted as time throttled and kept in the state (`report --run N`, `status --json`), and
/// the pass still ends once, with every message copied exactly once.
#[test]
fn dropped_connections_lower_the_cap_and_the_time_waited_is_kept() {
    use mailferry_testkit::proxy::{Faults, Proxy};

    let users = ["ada", "bea", "cyd"];
    let lab = Lab::new(&users);
    // Many small folders: the commands between them (STATUS, SELECT, CREATE) are where a
    // paused server is waited for.
    for (u, user) in users.iter().enumerate() {
        for f in 0..8 {
            let msgs: Vec<Msg> = (0..12)
                .map(|i| generated(u * 10_000 + f * 100 + i, 20_000))
                .collect();
            fill(&lab.source, user, &format!("Folder{f}"), &msgs);
        }
    }
    let target = Proxy::before(&lab.target, |n| Faults {
        cut_up_after: Some(400_000 + (n * 37_000) % 300_000),
        reset: n % 2 == 1,
        ..Faults::default()
    });
    lab.write_job_via(
        lab.source.port(),
        target.port(),
        "[migration]\nconcurrency = 3\n",
    );
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
    let cuts = target.stats().cuts;
    assert_eq!(out.status.code(), Some(0), "{cuts} cuts: {v:#}");
    assert_eq!(v["failed"], 0, "{v:#}");
    assert!(cuts >= 6, "only {cuts} cuts");

    // The cap went down, one step at a time, from the job file's 8.
    let log = std::fs::read_to_string(&trace).unwrap();
    let address = format!("{}:{} # ", lab.target.host(), target.port());
    let lowered: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with(&address) && l.contains("adaptive throttling"))
        .collect();
    assert!(
        lowered
            .first()
            .is_some_and(|l| l.contains("connection cap 8 -> 7")),
        "{cuts} cuts, no lowered cap in the trace: {lowered:?}"
    );
    // One drop alone does not: fewer lowerings than cuts.
    assert!((lowered.len() as u64) < cuts, "{lowered:?}");
    // The source was never cut, and never slowed down.
    assert!(
        !log.lines()
            .any(|l| l.contains(" # ") && !l.starts_with(&address))
    );

    // Each mailbox passed once in the run, every message copied exactly once.
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), users.len(), "{v:#}");
    for user in users {
        let src = snapshot(&lab.source, user);
        assert_eq!(total(&src), 8 * 12);
        assert_same(&src, &snapshot(&lab.target, user), str::to_string);
    }
    let rows: i64 = rusqlite::Connection::open(lab.db())
        .unwrap()
        .query_row(
            "SELECT count(*) FROM ledger WHERE state = 'copied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 3 * 8 * 12);

    // The time waited is kept: the run's report and `status` say what `migrate` said.
    let waited = |v: &serde_json::Value, id: &str| {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .and_then(|e| e["throttled_seconds"].as_f64())
            .unwrap_or(0.0)
    };
    let run = v["run"].as_i64().unwrap().to_string();
    let out = lab.mailferry(&["report", job, "--run", &run, "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, status) = lab.json(&["status", job]);
    let mut total_waited = 0.0;
    for user in users {
        let id = format!("id-{user}");
        let w = waited(&v, &id);
        assert_eq!(waited(&report, &id), w, "{report:#}");
        assert_eq!(waited(&status, &id), w, "{status:#}");
        total_waited += w;
    }
    eprintln!(
        "{cuts} cuts, {} cap lowerings, {total_waited:.1} s throttled",
        lowered.len()
    );
    assert!(total_waited > 0.0, "no time throttled: {v:#}");

    // A second pass copies nothing.
    let (code, v2) = lab.json(&["migrate", job, "--all"]);
    assert_eq!((code, &v2["copied"]), (0, &serde_json::json!(0)), "{v2:#}");
}

//! Exact copies and delta passes between real Dovecot servers.

use mailferry_testkit::{DovecotConfig, Layout, Profile};

use crate::lab::*;

fn fixture_msgs() -> Vec<Msg> {
    messages_in(&fixtures())
        .into_iter()
        .enumerate()
        .map(|(i, (_, body))| {
            let g = generated(i, 0);
            Msg {
                body,
                flags: g.flags,
                date: g.date,
            }
        })
        .collect()
}

#[test]
fn exact_copies_with_flags_keywords_dates_nested_and_non_ascii_folders() {
    let lab = Lab::new(&["alice"]);
    let refused = fill(&lab.source, "alice", "INBOX", &fixture_msgs());
    // The one 0-byte fixture is refused by Dovecot itself; everything else is stored.
    assert_eq!(refused.len(), 1, "{refused:?}");
    fill(
        &lab.source,
        "alice",
        "Archive/2019",
        &(0..40).map(|i| generated(i, 3000)).collect::<Vec<_>>(),
    );
    fill(
        &lab.source,
        "alice",
        "Junk/&ANw-berpr&APw-ft",
        &(40..60).map(|i| generated(i, 500)).collect::<Vec<_>>(),
    );
    fill(
        &lab.source,
        "alice",
        "Projects/A/Specs",
        &(60..70).map(|i| generated(i, 20_000)).collect::<Vec<_>>(),
    );
    fill(
        &lab.source,
        "alice",
        "Sent",
        &(70..80).map(|i| generated(i, 800)).collect::<Vec<_>>(),
    );
    let mut c = connect(&lab.source, "alice");
    c.create("Empty Parent/Child").unwrap();
    c.subscribe("Empty Parent/Child").unwrap();
    c.unsubscribe("Archive/2019").unwrap();
    c.logout();

    let v = lab.migrate_ok();
    let src = snapshot(&lab.source, "alice");
    let copied = total(&src) as u64;
    assert_eq!(v["copied"], copied, "{v:#}");
    assert_same(&src, &snapshot(&lab.target, "alice"), str::to_string);
    assert!(snapshot(&lab.target, "alice").contains_key("Junk/Überprüft"));
    assert!(snapshot(&lab.target, "alice").contains_key("Empty Parent"));
    let src_subs = subscriptions(&lab.source, "alice");
    let dst_subs = subscriptions(&lab.target, "alice");
    for s in &src_subs {
        assert!(
            dst_subs.contains(s),
            "{s} not subscribed on target: {dst_subs:?}"
        );
    }
    assert!(!dst_subs.contains(&"Archive/2019".to_string()));

    // A second pass with nothing new copies nothing.
    let (code, v) = lab.json(&["migrate", lab.job().to_str().unwrap(), "--all"]);
    assert_eq!((code, v["copied"].as_u64()), (0, Some(0)), "{v:#}");

    // New mail and changed flags: the delta pass copies exactly the new mail and sets the flags.
    fill(
        &lab.source,
        "alice",
        "INBOX",
        &(100..105).map(|i| generated(i, 1000)).collect::<Vec<_>>(),
    );
    let mut c = connect(&lab.source, "alice");
    c.select("Archive/2019", false).unwrap();
    c.run("UID STORE 1:3 FLAGS (\\Seen $Label9)").unwrap();
    c.run("UID STORE 4 -FLAGS (\\Seen)").unwrap();
    c.logout();
    let (code, v) = lab.json(&["migrate", lab.job().to_str().unwrap(), "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["copied"], 5, "{v:#}");
    assert!(
        v["entries"][0]["flags_updated"].as_u64().unwrap() >= 3,
        "{v:#}"
    );
    assert_same(
        &snapshot(&lab.source, "alice"),
        &snapshot(&lab.target, "alice"),
        str::to_string,
    );
}

/// Courier/Cyrus-style source (`.` separator, `INBOX.` prefix, Outlook names for special
/// folders) to a `/` server, and back: the tree, special-use folders and non-ASCII names map.
#[test]
fn separator_prefix_and_special_use_folders_map_both_ways() {
    let mut dotted = DovecotConfig::new(&["bob"]);
    dotted.layout = Layout::DotInboxPrefix;
    let lab = Lab::with(dotted.clone(), DovecotConfig::new(&["bob"]));
    fill(
        &lab.source,
        "bob",
        "INBOX.Sent Items",
        &(0..5).map(|i| generated(i, 900)).collect::<Vec<_>>(),
    );
    fill(
        &lab.source,
        "bob",
        "INBOX.Deleted Items",
        &(5..8).map(|i| generated(i, 900)).collect::<Vec<_>>(),
    );
    fill(
        &lab.source,
        "bob",
        "INBOX.Clients.Soci&AOk-t&AOk- G&AOk-n&AOk-rale",
        &(8..12).map(|i| generated(i, 900)).collect::<Vec<_>>(),
    );
    fill(
        &lab.source,
        "bob",
        "INBOX",
        &(12..15).map(|i| generated(i, 900)).collect::<Vec<_>>(),
    );
    lab.migrate_ok();
    let to_slash = |p: &str| match p {
        "Sent Items" => "Sent".to_string(),
        "Deleted Items" => "Trash".to_string(),
        "Junk E-mail" => "Junk".to_string(),
        other => other.to_string(),
    };
    let src = snapshot(&lab.source, "bob");
    let dst = snapshot(&lab.target, "bob");
    assert_same(&src, &dst, to_slash);
    assert!(!dst.contains_key("Sent Items"), "{:?}", dst.keys());
    assert!(
        dst.contains_key("Clients/Société Générale"),
        "{:?}",
        dst.keys()
    );

    // And back: a '/' source to a dotted target.
    let back = Lab::with(DovecotConfig::new(&["bob"]), dotted);
    fill(
        &back.source,
        "bob",
        "Sent",
        &(0..4).map(|i| generated(i, 700)).collect::<Vec<_>>(),
    );
    fill(
        &back.source,
        "bob",
        "Lists/usrp/2024",
        &(4..9).map(|i| generated(i, 700)).collect::<Vec<_>>(),
    );
    back.migrate_ok();
    let src = snapshot(&back.source, "bob");
    let dst = snapshot(&back.target, "bob");
    assert_same(&src, &dst, |p| match p {
        "Sent" => "Sent Items".to_string(),
        "Trash" => "Deleted Items".to_string(),
        "Junk" => "Junk E-mail".to_string(),
        other => other.to_string(),
    });
}

/// A server that advertises only what Exchange Online does (no CONDSTORE, MULTIAPPEND,
/// SPECIAL-USE): copies and flag updates still work through the fallbacks.
#[test]
fn exchange_like_servers_use_the_fallback_paths() {
    let mut src = DovecotConfig::new(&["carol"]);
    src.profile = Profile::ExchangeLike;
    let mut dst = DovecotConfig::new(&["carol"]);
    dst.profile = Profile::ExchangeLike;
    let lab = Lab::with(src, dst);
    fill(
        &lab.source,
        "carol",
        "INBOX",
        &(0..30).map(|i| generated(i, 2000)).collect::<Vec<_>>(),
    );
    fill(
        &lab.source,
        "carol",
        "Sent",
        &(30..40).map(|i| generated(i, 2000)).collect::<Vec<_>>(),
    );
    lab.migrate_ok();
    assert_same(
        &snapshot(&lab.source, "carol"),
        &snapshot(&lab.target, "carol"),
        str::to_string,
    );
    let mut c = connect(&lab.source, "carol");
    c.select("INBOX", false).unwrap();
    c.run("UID STORE 1:5 +FLAGS (\\Flagged Urgent)").unwrap();
    c.logout();
    let (code, v) = lab.json(&["migrate", lab.job().to_str().unwrap(), "--all"]);
    assert_eq!((code, v["copied"].as_u64()), (0, Some(0)), "{v:#}");
    assert_eq!(v["entries"][0]["flags_updated"], 5, "{v:#}");
    assert_same(
        &snapshot(&lab.source, "carol"),
        &snapshot(&lab.target, "carol"),
        str::to_string,
    );
}

/// A folder whose UIDVALIDITY changed is reconciled by fingerprint, and a message moved
/// between source folders is moved on the target: neither is copied again.
#[test]
fn uidvalidity_change_and_moves_are_not_copied_again() {
    let lab = Lab::new(&["dave"]);
    let msgs: Vec<Msg> = (0..12).map(|i| generated(i, 1500)).collect();
    fill(&lab.source, "dave", "Work", &msgs);
    fill(
        &lab.source,
        "dave",
        "Later",
        &(20..25).map(|i| generated(i, 1500)).collect::<Vec<_>>(),
    );
    lab.migrate_ok();

    // Recreate "Work" with the same messages: new UIDVALIDITY, new UIDs.
    let mut c = connect(&lab.source, "dave");
    c.run("DELETE \"Work\"").unwrap();
    c.logout();
    fill(&lab.source, "dave", "Work", &msgs);
    // Move three messages from Later to INBOX.
    let mut c = connect(&lab.source, "dave");
    c.select("Later", false).unwrap();
    c.uid_move(&[1, 2, 4], "INBOX").unwrap();
    c.logout();

    let trace = lab.dir.path().join("trace.log");
    let out = lab
        .command(&["migrate", lab.job().to_str().unwrap(), "--all", "--json"])
        .env("MAILFERRY_TRACE", &trace)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["copied"], 0, "{v:#}");
    assert_eq!(v["entries"][0]["moved"], 15, "{v:#}");
    // The renumbered folder costs nothing on the target; the three moves cost one command.
    let log = std::fs::read_to_string(&trace).unwrap();
    let target = format!("{}:{} ", lab.target.host(), lab.target.port());
    let moves: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with(&target) && l.contains(" UID MOVE "))
        .collect();
    assert_eq!(moves.len(), 1, "{log}");
    assert!(moves[0].contains("UID MOVE 1:2,4 \"INBOX\""), "{log}");
    assert_same(
        &snapshot(&lab.source, "dave"),
        &snapshot(&lab.target, "dave"),
        str::to_string,
    );
}

/// `since`, `until`, excluded folders and `skip_deleted` limit a pass; widening them later
/// copies what was left out, once.
#[test]
fn filters_limit_a_pass_and_widening_them_copies_the_rest() {
    let lab = Lab::new(&["erin"]);
    let mut msgs: Vec<Msg> = (0..24).map(|i| generated(i, 600)).collect();
    msgs[3].flags.push("\\Deleted".into());
    fill(&lab.source, "erin", "INBOX", &msgs);
    fill(
        &lab.source,
        "erin",
        "Junk",
        &(30..33).map(|i| generated(i, 600)).collect::<Vec<_>>(),
    );
    lab.write_job("[migration]\nsince = \"2020-01-01\"\nexclude_folders = [\"Junk\"]\n");
    let v = lab.migrate_ok();
    let in_range = msgs
        .iter()
        .enumerate()
        .filter(|(i, m)| {
            *i != 3
                && m.date.split(' ').next().unwrap()[7..]
                    .parse::<u32>()
                    .unwrap()
                    >= 2020
        })
        .count();
    assert_eq!(v["copied"], in_range as u64, "{v:#}");
    assert_eq!(snapshot(&lab.target, "erin")["Junk"].len(), 0);

    lab.write_job("[migration]\nskip_deleted = false\n");
    let (code, v) = lab.json(&["migrate", lab.job().to_str().unwrap(), "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["copied"], (24 + 3 - in_range) as u64, "{v:#}");
    assert_same(
        &snapshot(&lab.source, "erin"),
        &snapshot(&lab.target, "erin"),
        str::to_string,
    );
}

/// The command trace of a pass with nothing new, after a first pass, on a source with this
/// capability profile (four folders and their parents); and the number of its folders.
fn no_change_trace(profile: Profile) -> (String, String, usize) {
    let mut source = DovecotConfig::new(&["hal"]);
    source.profile = profile;
    let lab = Lab::with(source, DovecotConfig::new(&["hal"]));
    for (n, folder) in ["INBOX", "Archive/2020", "Projects/X", "Sent"]
        .iter()
        .enumerate()
    {
        fill(
            &lab.source,
            "hal",
            folder,
            &(n * 10..n * 10 + 10)
                .map(|i| generated(i, 900))
                .collect::<Vec<_>>(),
        );
    }
    lab.migrate_ok();
    let trace = lab.dir.path().join("trace.log");
    let out = lab
        .command(&["migrate", lab.job().to_str().unwrap(), "--all", "--json"])
        .env("MAILFERRY_TRACE", &trace)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["copied"], 0);
    let log = std::fs::read_to_string(&trace).unwrap();
    for costly in ["SELECT", "EXAMINE", "UID FETCH", "APPEND", "UID STORE"] {
        assert!(
            !log.lines().any(|l| l.contains(&format!(" {costly} "))),
            "{costly} in a no-change pass:\n{log}"
        );
    }
    let source = format!("{}:{} ", lab.source.host(), lab.source.port());
    let selectable = snapshot(&lab.source, "hal").len();
    (log, source, selectable)
}

/// The source's commands in a trace, by their verb (`UID FETCH` as two words).
fn verbs(log: &str, prefix: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|c| {
            c.split(' ')
                .take(if c.starts_with("UID ") { 2 } else { 1 })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// On a CONDSTORE server with LIST-STATUS (Dovecot's default list), a pass with no change
/// costs the tree and nothing per folder: every folder's STATUS comes with the LIST. No
/// SELECT, no FETCH, no APPEND on either server (read from the command trace).
#[test]
fn a_pass_with_no_change_costs_the_tree_alone_with_list_status() {
    let (log, source, _) = no_change_trace(Profile::Full);
    assert_eq!(
        verbs(&log, &source)
            .iter()
            .filter(|v| *v == "STATUS")
            .count(),
        0,
        "{log}"
    );
    let lists: Vec<&str> = log.lines().filter(|l| l.contains(" LIST ")).collect();
    assert_eq!(lists.len(), 2, "{log}");
    for l in lists {
        // The source's LIST asks for the statuses; the target's, which needs none, does not.
        assert_eq!(
            l.starts_with(&source),
            l.contains("RETURN (STATUS (MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ))"),
            "{log}"
        );
    }
}

/// The same without LIST-STATUS: one STATUS per folder (all in one round trip).
#[test]
fn a_pass_with_no_change_costs_one_status_per_folder_without_list_status() {
    let (log, source, selectable) = no_change_trace(Profile::NoListStatus);
    assert!(!log.contains("RETURN (STATUS"), "{log}");
    assert_eq!(
        verbs(&log, &source)
            .iter()
            .filter(|v| *v == "STATUS")
            .count(),
        selectable,
        "{log}"
    );
}

/// A pass ends each session with LOGOUT and closes without waiting for the answer (a round
/// trip saved per connection): both servers still log every session of the pass as logged
/// out, none as a connection closed or reset under it.
#[test]
fn every_session_of_a_pass_ends_logged_out_on_both_servers() {
    let lab = Lab::new(&["lou"]);
    let msgs: Vec<Msg> = (0..30).map(|i| generated(i, 4_000)).collect();
    fill(&lab.source, "lou", "INBOX", &msgs[..20]);
    fill(&lab.source, "lou", "Archive", &msgs[20..]);
    let marks = lab.log_marks();
    let v = lab.migrate_ok();
    assert_eq!(v["copied"], 30, "{v:#}");
    let (code, v) = lab.json(&["migrate", lab.job().to_str().unwrap(), "--all"]);
    assert_eq!((code, v["copied"].as_u64()), (0, Some(0)), "{v:#}");
    assert_sessions_logged_out(&lab, marks, 2);
}

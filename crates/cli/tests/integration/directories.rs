//! The domain-switch workflow end to end (issue 3's test of record): real source and target
//! directories (slapd), a target Dovecot that finds its users in its directory, discovery,
//! automatic, manual and created matches, a migration, a domain switch in both directories,
//! deleted mailboxes, Refresh email addresses twice, and the delta pass after it.

use std::collections::BTreeMap;

use mailferry_testkit::{Dovecot, DovecotConfig, LdapUsers, Slapd, SlapdConfig, person_ldif};
use serde_json::Value;

use crate::lab::*;

const SOURCE_USERS: [&str; 8] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "gus", "hank",
];

struct World {
    lab_dir: tempfile::TempDir,
    old_ldap: Slapd,
    new_ldap: Slapd,
    source: Dovecot,
    target: Dovecot,
}

impl World {
    fn job(&self) -> String {
        self.lab_dir.path().join("job.toml").display().to_string()
    }
}

impl Runs for World {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        run_in(
            self.lab_dir.path(),
            &[
                ("MF_TEST_ADMIN_PW", ADMIN_PW),
                ("MF_OLD_LDAP_PW", self.old_ldap.admin_password()),
                ("MF_NEW_LDAP_PW", self.new_ldap.admin_password()),
            ],
            args,
        )
    }
}

fn world() -> World {
    let mut old = SlapdConfig::new("dc=old,dc=example");
    let people = "ou=people,dc=old,dc=example";
    for u in SOURCE_USERS {
        old.seed.push_str(&person_ldif(
            people,
            u,
            &format!("{} Person", capitalise(u)),
            &format!("{u}@old.example"),
            &[&format!("{u}.alias@old.example")],
            &format!("pw-{u}"),
        ));
    }
    let mut new = SlapdConfig::new("dc=new,dc=example");
    let npeople = "ou=people,dc=new,dc=example";
    // alice: same local part; bob: an alias with his old address; esmith: erin's (manual);
    // frank: same local part. carol and dave will be created; gus waits; hank has no match.
    new.seed.push_str(&person_ldif(
        npeople,
        "alice",
        "Alice Person",
        "alice@new.example",
        &[],
        "x",
    ));
    new.seed.push_str(&person_ldif(
        npeople,
        "robert",
        "Robert P",
        "robert@new.example",
        &["bob@old.example"],
        "x",
    ));
    new.seed.push_str(&person_ldif(
        npeople,
        "esmith",
        "E Smith",
        "e.smith@new.example",
        &[],
        "x",
    ));
    new.seed.push_str(&person_ldif(
        npeople,
        "frank",
        "Frank Person",
        "frank@new.example",
        &[],
        "x",
    ));
    let old_ldap = Slapd::start(old);
    let new_ldap = Slapd::start(new);
    let source = Dovecot::start(DovecotConfig::new(&SOURCE_USERS));
    let mut tcfg = DovecotConfig::new(&[]);
    tcfg.ldap_users = Some(LdapUsers::from_slapd(&new_ldap));
    let target = Dovecot::start(tcfg);
    let lab_dir = tempfile::tempdir().unwrap();
    let directory = |side: &str, l: &Slapd, var: &str| {
        format!(
            "[{side}.directory]\nkind = \"ldap\"\nurl = \"{}\"\nsecurity = \"plain\"\n\
             bind_dn = \"{}\"\nbind_password = {{ env = \"{var}\" }}\nbase = \"{}\"\n\
             filter = \"(objectClass=inetOrgPerson)\"\nid_attribute = \"entryUUID\"\n\
             login_attribute = \"uid\"\nprimary_address_attribute = \"mail\"\n\
             alias_attribute = \"mailLocalAddress\"\ndisplay_name_attribute = \"cn\"\n\n",
            l.url(),
            l.admin_dn(),
            l.people()
        )
    };
    let imap = |side: &str, d: &Dovecot| {
        format!(
            "[{side}]\nkind = \"imap\"\nhost = \"{}\"\nport = {}\nsecurity = \"plain\"\nallow_plain = true\n\
             auth = \"admin\"\nadmin_user = \"admin\"\nadmin_password = {{ env = \"MF_TEST_ADMIN_PW\" }}\n\
             admin_login = \"master-separator\"\n\n",
            d.host(),
            d.port()
        )
    };
    let job = format!(
        "name = \"domain-switch\"\nmode = \"cutover\"\n\n{}{}{}{}\
         [target.create]\nbase = \"{}\"\ndomain = \"new.example\"\n\
         object_classes = [\"inetOrgPerson\"]\ninitial_password = {{ env = \"MF_NEW_LDAP_PW\" }}\n",
        imap("source", &source),
        directory("source", &old_ldap, "MF_OLD_LDAP_PW"),
        imap("target", &target),
        directory("target", &new_ldap, "MF_NEW_LDAP_PW"),
        new_ldap.people()
    );
    std::fs::write(lab_dir.path().join("job.toml"), job).unwrap();
    World {
        lab_dir,
        old_ldap,
        new_ldap,
        source,
        target,
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

pub(crate) fn counts(v: &Value, side: &str) -> BTreeMap<String, u64> {
    v[side]["counts"]
        .as_object()
        .unwrap_or_else(|| panic!("no {side} counts in {v:#}"))
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

pub(crate) fn expect(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    let mut m: BTreeMap<String, u64> = [
        "refreshed",
        "not_changed",
        "missing",
        "manual",
        "not_created",
    ]
    .iter()
    .map(|k| (k.to_string(), 0))
    .collect();
    for (k, n) in pairs {
        m.insert(k.to_string(), *n);
    }
    m
}

/// Entry (by source login) → result, for one side.
pub(crate) fn results(
    v: &Value,
    side: &str,
    id_of: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let login_of: BTreeMap<&String, &String> = id_of.iter().map(|(l, i)| (i, l)).collect();
    v["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["side"] == side)
        .map(|m| {
            let id = m["entry"].as_str().unwrap().to_string();
            (
                login_of[&id].clone(),
                m["result"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn switch_domain(l: &Slapd, uid: &str, from: &str, to: &str, aliases: &[&str]) {
    let mut ldif = format!(
        "dn: uid={uid},{}\nchangetype: modify\nreplace: mail\nmail: {}\n",
        l.people(),
        from.replace("@old.example", to).replace("@new.example", to)
    );
    if !aliases.is_empty() {
        ldif.push_str("-\nreplace: mailLocalAddress\n");
        for a in aliases {
            ldif.push_str(&format!(
                "mailLocalAddress: {}\n",
                a.replace("@old.example", to)
            ));
        }
    }
    l.modify(&ldif);
}

#[test]
fn domain_switch_refresh_of_record() {
    let w = world();
    let job = w.job();
    let job = job.as_str();

    // Discover the source directory; a second discover adds nothing.
    let v = w.json(&["discover", job]);
    assert_eq!(v["added"].as_array().unwrap().len(), 8, "{v:#}");
    assert_eq!(
        w.json(&["discover", job])["added"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let status = w.json(&["status", job]);
    let id_of: BTreeMap<String, String> = status["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"]["login"].as_str().unwrap().to_string(),
                e["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        id_of["alice"],
        w.old_ldap
            .entry_uuid(&format!("uid=alice,{}", w.old_ldap.people()))
    );

    // Match: manual first (so the automatic rules do not take esmith), then automatic,
    // then create carol and dave, and create gus later.
    w.ok(&[
        "match",
        job,
        "--set",
        "erin@old.example=e.smith@new.example",
    ]);
    let out = w.ok(&["match", job, "--auto"]);
    assert!(out.contains("Automatic matching: 3 matched"), "{out}");
    w.ok(&["match", job, "--create", "carol", "--create", "dave"]);
    w.ok(&["create", job]);
    w.ok(&["match", job, "--create", "gus"]);
    // check reaches both servers (as a matched mailbox) and both directories.
    let out = w.ok(&["check", job]);
    assert!(
        out.contains("OK   directory ldap://")
            && out.contains("bound as cn=admin,dc=new,dc=example"),
        "{out}"
    );
    let status = w.json(&["status", job]);
    let origin = |login: &str| -> String {
        status["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"]["login"] == login)
            .unwrap()["origin"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (login, o) in [
        ("alice", "auto"),
        ("bob", "auto"),
        ("frank", "auto"),
        ("erin", "manual"),
        ("carol", "created"),
        ("dave", "created"),
        ("gus", "pending-creation"),
        ("hank", "unmatched"),
    ] {
        assert_eq!(origin(login), o, "{login}: {status:#}");
    }

    // Mail, and the first pass.
    for u in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        fill(
            &w.source,
            u,
            "INBOX",
            &(0..5).map(|i| generated(i, 1_500)).collect::<Vec<_>>(),
        );
    }
    let (code, out, err) = w.run(&["migrate", job, "--all", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for u in ["alice", "carol"] {
        fill(
            &w.source,
            u,
            "INBOX",
            &(100..103).map(|i| generated(i, 900)).collect::<Vec<_>>(),
        );
    }

    // The domain switch, in both directories; one source and one target mailbox deleted.
    for u in SOURCE_USERS {
        let alias = format!("{u}.alias@old.example");
        switch_domain(
            &w.old_ldap,
            u,
            &format!("{u}@old.example"),
            "@legacy.example",
            &[&alias],
        );
    }
    for (uid, mail) in [
        ("alice", "alice@new.example"),
        ("esmith", "e.smith@new.example"),
        ("frank", "frank@new.example"),
        ("carol", "carol@new.example"),
        ("dave", "dave@new.example"),
    ] {
        switch_domain(&w.new_ldap, uid, mail, "@corp.example", &[]);
    }
    w.old_ldap.modify(&format!(
        "dn: uid=frank,{}\nchangetype: delete\n",
        w.old_ldap.people()
    ));
    w.new_ldap.modify(&format!(
        "dn: uid=robert,{}\nchangetype: delete\n",
        w.new_ldap.people()
    ));

    // Refresh: the exact count and entries of every result kind on both sides.
    let v = w.json(&["refresh-addresses", job, "--all"]);
    assert_eq!(
        counts(&v, "source"),
        expect(&[("refreshed", 7), ("missing", 1)]),
        "{v:#}"
    );
    assert_eq!(
        counts(&v, "target"),
        expect(&[
            ("refreshed", 4),
            ("missing", 1),
            ("manual", 1),
            ("not_created", 1)
        ]),
        "{v:#}"
    );
    let src = results(&v, "source", &id_of);
    assert_eq!(src["frank"], "missing");
    assert!(
        SOURCE_USERS
            .iter()
            .filter(|u| **u != "frank")
            .all(|u| src[*u] == "refreshed"),
        "{src:?}"
    );
    let dst = results(&v, "target", &id_of);
    let expected_target: BTreeMap<String, String> = [
        ("alice", "refreshed"),
        ("carol", "refreshed"),
        ("dave", "refreshed"),
        ("frank", "refreshed"),
        ("bob", "missing"),
        ("erin", "manual"),
        ("gus", "not_created"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(
        dst, expected_target,
        "hank is unmatched and gets no target result"
    );
    let alice = v["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["side"] == "source" && m["entry"] == id_of["alice"].as_str())
        .unwrap();
    assert_eq!(
        alice["before"],
        serde_json::json!(["alice@old.example", "alice.alias@old.example"])
    );
    assert_eq!(
        alice["after"],
        serde_json::json!(["alice@legacy.example", "alice.alias@legacy.example"])
    );
    assert_eq!(v["removed_next"], serde_json::json!([id_of["frank"]]));
    let report = v["report"].as_str().unwrap();
    assert!(
        std::path::Path::new(report).is_absolute() && std::path::Path::new(report).is_file(),
        "{report}"
    );

    // The terminal summary reads as SPEC §6.
    let (_, text, _) = w.run(&["report", job, "--kind", "refresh", "--format", "html"]);
    assert!(
        text.contains("Not refreshed - addresses entered manually"),
        "{text}"
    );

    // Again: only Not changed / Not refreshed.
    let v = w.json(&["refresh-addresses", job, "--all"]);
    assert_eq!(
        counts(&v, "source"),
        expect(&[("not_changed", 7), ("missing", 1)]),
        "{v:#}"
    );
    assert_eq!(
        counts(&v, "target"),
        expect(&[
            ("not_changed", 4),
            ("missing", 1),
            ("manual", 1),
            ("not_created", 1)
        ]),
        "{v:#}"
    );

    // What the admin reads on the terminal.
    let text = w.ok(&["refresh-addresses", job, "--all"]);
    eprintln!("{text}");
    for line in [
        "Source mailboxes:",
        "Target mailboxes:",
        "Not changed",
        "Not refreshed - missing mailboxes",
        "Not refreshed - addresses entered manually",
        "Not refreshed - mailboxes not created yet",
        "removed the next time the job file changes or `migrate` starts",
        "Report: /",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }

    // bob's target mailbox is gone: the admin skips him for now. Then the delta pass:
    // frank's entry is removed first, and the new mail arrives exactly once.
    w.ok(&["match", job, "--skip", "bob@legacy.example"]);
    let (code, out, err) = w.run(&["migrate", job, "--all", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("removed 1 entry whose source mailbox is missing")
            && err.contains(&id_of["frank"]),
        "{err}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["copied"], 6, "{v:#}");
    let status = w.json(&["status", job]);
    assert!(
        !status["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == id_of["frank"].as_str())
    );
    for u in ["alice", "carol", "dave", "erin"] {
        let target_login = match u {
            "erin" => "esmith",
            other => other,
        };
        let s = snapshot(&w.source, u);
        assert_same(
            &BTreeMap::from([("INBOX".to_string(), s["INBOX"].clone())]),
            &snapshot(&w.target, target_login),
            str::to_string,
        );
    }
}

#[test]
fn a_csv_job_reimported_with_new_addresses_duplicates_nothing() {
    let lab = Lab::new(&["jo", "kai"]);
    for u in ["jo", "kai"] {
        fill(
            &lab.source,
            u,
            "INBOX",
            &(0..8).map(|i| generated(i, 1_000)).collect::<Vec<_>>(),
        );
    }
    lab.migrate_ok();
    std::fs::write(
        lab.dir.path().join("mailboxes.csv"),
        "Source ID,Source addresses,Source login,Target addresses,Target login\n\
         id-jo,jo@legacy.example;jo@old.example,jo,jo@corp.example,jo\n\
         id-kai,kai@legacy.example,kai,kai@corp.example,kai\n",
    )
    .unwrap();
    fill(&lab.source, "jo", "INBOX", &[generated(50, 1_000)]);
    let v = lab.migrate_ok();
    assert_eq!(v["copied"], 1, "{v:#}");
    let (_, status) = lab.json(&["status", lab.job().to_str().unwrap()]);
    let entries = status["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{status:#}");
    assert_eq!(
        entries[0]["source"]["addresses"],
        serde_json::json!(["jo@legacy.example", "jo@old.example"])
    );
    for u in ["jo", "kai"] {
        assert_same(
            &snapshot(&lab.source, u),
            &snapshot(&lab.target, u),
            str::to_string,
        );
    }
    // Without directories, refresh says what to do instead and changes nothing.
    let (code, v) = lab.json(&["refresh-addresses", lab.job().to_str().unwrap(), "--all"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["source"]["available"], false);
    assert!(
        v["source"]["reason"]
            .as_str()
            .unwrap()
            .contains("re-import the mailboxes CSV"),
        "{v:#}"
    );
    assert!(
        v["target"]["reason"].as_str().unwrap().contains("rematch"),
        "{v:#}"
    );
    assert_eq!(v["mailboxes"], serde_json::json!([]));
}

#[test]
fn a_bad_directory_configuration_is_refused_with_its_key_and_changes_nothing() {
    let lab = Lab::new(&["lu"]);
    let job = lab.job();
    let mut text = std::fs::read_to_string(&job).unwrap();
    text.push_str("\n[source.directory]\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1:1\"\nsecurity = \"plain\"\nbind_dn = \"cn=x\"\nbind_password = { env = \"NOT_SET_ANYWHERE\" }\nbase = \"dc=x\"\n");
    std::fs::write(&job, &text).unwrap();
    let job = job.to_str().unwrap();
    let out = lab.mailferry(&["discover", job]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("source.directory.bind_password"));
    // Reachable configuration but nobody listening: a clear error, exit 1, nothing stored.
    let text = text.replace("NOT_SET_ANYWHERE", "MF_TEST_ADMIN_PW");
    std::fs::write(lab.job(), text).unwrap();
    let out = lab.mailferry(&["discover", job]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ldap://127.0.0.1:1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, status) = lab.json(&["status", job]);
    assert_eq!(status["entries"], serde_json::json!([]));
}

/// SPEC §6: an entry whose source mailbox is missing is removed the next time the job file
/// is edited, and the command says so.
#[test]
fn a_missing_source_entry_goes_when_the_job_file_is_edited() {
    let w = world();
    let job = w.job();
    let job = job.as_str();
    w.ok(&["discover", job]);
    w.old_ldap.modify(&format!(
        "dn: uid=hank,{}\nchangetype: delete\n",
        w.old_ldap.people()
    ));
    let v = w.json(&[
        "refresh-addresses",
        job,
        "--mailbox",
        "hank@old.example",
        "--mailbox",
        "gus",
    ]);
    assert_eq!(
        counts(&v, "source"),
        expect(&[("not_changed", 1), ("missing", 1)]),
        "{v:#}"
    );
    assert_eq!(v["removed_next"].as_array().unwrap().len(), 1);
    // Not edited yet: still there.
    assert_eq!(
        w.json(&["status", job])["entries"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    let mut text = std::fs::read_to_string(job).unwrap();
    text.push_str("\n# edited by the admin\n");
    std::fs::write(job, text).unwrap();
    let (code, out, err) = w.run(&["status", job, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("The job file changed: removed 1 entry whose source mailbox is missing"),
        "{err}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let logins: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"]["login"].as_str().unwrap())
        .collect();
    assert_eq!(logins.len(), 7);
    assert!(!logins.contains(&"hank"));
}

/// Staged jobs: stages from the CSV or `match --stage`, and `migrate --stage N` migrates only
/// that stage.
#[test]
fn a_staged_job_migrates_one_stage_at_a_time() {
    let lab = Lab::new(&["mo", "ned", "ola"]);
    for u in ["mo", "ned", "ola"] {
        fill(
            &lab.source,
            u,
            "INBOX",
            &(0..4).map(|i| generated(i, 800)).collect::<Vec<_>>(),
        );
    }
    std::fs::write(
        lab.dir.path().join("mailboxes.csv"),
        "Source ID,Source addresses,Source login,Target addresses,Target login,Stage\n\
         id-mo,mo@old.example,mo,mo@new.example,mo,1\n\
         id-ned,ned@old.example,ned,ned@new.example,ned,2\n\
         id-ola,ola@old.example,ola,ola@new.example,ola,2\n",
    )
    .unwrap();
    let job = lab.job();
    let job = job.to_str().unwrap();
    assert!(lab.mailferry(&["match", job]).status.success());
    let out = lab.mailferry(&["match", job, "--stage", "3", "--mailbox", "ola"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, status) = lab.json(&["status", job]);
    let stages: Vec<(String, u64)> = status["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["stage"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        vec![
            ("id-mo".into(), 1),
            ("id-ned".into(), 2),
            ("id-ola".into(), 3)
        ]
    );
    let (code, v) = lab.json(&["migrate", job, "--stage", "2"]);
    assert_eq!(code, 0, "{v:#}");
    let ids: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["id-ned"]);
    assert_eq!(v["copied"], 4);
    assert_eq!(
        total(&snapshot(&lab.target, "mo")),
        0,
        "stage 1 was not migrated"
    );
    assert_eq!(
        total(&snapshot(&lab.target, "ola")),
        0,
        "stage 3 was not migrated"
    );
}

/// With many entries, refresh reads each directory in one paged search rather than one search
/// per entry, and an entry the listing cannot use (its address removed) is looked up on its
/// own: it stops the refresh with the directory's words instead of passing for a missing
/// mailbox, which would remove it.
#[test]
fn refreshing_many_entries_lists_the_directory_once_and_never_mistakes_a_broken_entry() {
    let mut cfg = SlapdConfig::new("dc=old,dc=example");
    let people = "ou=people,dc=old,dc=example";
    let users: Vec<String> = (0..30).map(|i| format!("user{i:02}")).collect();
    for u in &users {
        cfg.seed.push_str(&person_ldif(
            people,
            u,
            u,
            &format!("{u}@old.example"),
            &[],
            "x",
        ));
    }
    let ldap = Slapd::start(cfg);
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"many\"\n\
             [source]\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = 1\nsecurity = \"plain\"\n\
             allow_plain = true\nauth = \"per-mailbox\"\n\
             [source.directory]\nkind = \"ldap\"\nurl = \"{}\"\nsecurity = \"plain\"\n\
             bind_dn = \"{}\"\nbind_password = {{ env = \"MF_LDAP_PW\" }}\nbase = \"{people}\"\n\
             filter = \"(objectClass=inetOrgPerson)\"\n\
             [target]\nkind = \"maildir\"\npath = \"out\"\n",
            ldap.url(),
            ldap.admin_dn()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| with_ldap_password(&ldap, args);
    let job = job.to_str().unwrap();
    assert!(run(&["discover", job]).status.success());
    for u in &users {
        ldap.modify(&format!(
            "dn: uid={u},{people}\nchangetype: modify\nreplace: mail\nmail: {u}@legacy.example\n"
        ));
    }
    ldap.modify(&format!("dn: uid=user07,{people}\nchangetype: delete\n"));
    let log = ldap.dir().join("slapd.log");
    let searches = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .matches(" SRCH base=")
            .count()
    };
    let before = searches();
    let out = run(&["refresh-addresses", job, "--all", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        counts(&v, "source"),
        expect(&[("refreshed", 29), ("missing", 1)]),
        "{v:#}"
    );
    // One paged search (one SRCH per page) plus one lookup for the entry it did not list.
    let used = searches() - before;
    assert!(used <= 2, "{used} searches for 30 entries");

    // An entry whose address is gone is not a missing mailbox.
    ldap.modify(&format!(
        "dn: uid=user12,{people}\nchangetype: modify\ndelete: mail\n"
    ));
    let out = run(&["refresh-addresses", job, "--all", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("uid=user12"), "{err}");
    let status: Value = serde_json::from_slice(&run(&["status", job, "--json"]).stdout).unwrap();
    let user12 = status["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"]["login"] == "user12")
        .unwrap()
        .clone();
    assert_eq!(user12["missing_source"], false, "{user12:#}");
}

/// A CSV match learns its target's mailbox ID from the target directory at import, so that
/// refresh can look the target up by ID (otherwise it could only report it missing).
#[test]
fn a_csv_target_is_looked_up_by_id_after_import() {
    let mut cfg = SlapdConfig::new("dc=new,dc=example");
    let people = "ou=people,dc=new,dc=example";
    cfg.seed.push_str(&person_ldif(
        people,
        "amy",
        "Amy",
        "amy@new.example",
        &[],
        "x",
    ));
    let ldap = Slapd::start(cfg);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mailboxes.csv"),
        "Source ID,Source addresses,Target addresses\nsrc-amy,amy@old.example,amy@new.example\n",
    )
    .unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            "name = \"csv\"\n[source]\nkind = \"maildir\"\npath = \"in\"\n\
             [target]\nkind = \"maildir\"\npath = \"out\"\n\
             [target.directory]\nkind = \"ldap\"\nurl = \"{}\"\nsecurity = \"plain\"\n\
             bind_dn = \"{}\"\nbind_password = {{ env = \"MF_LDAP_PW\" }}\nbase = \"{people}\"\n\
             [mailboxes]\ncsv = \"mailboxes.csv\"\n",
            ldap.url(),
            ldap.admin_dn()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| with_ldap_password(&ldap, args);
    let job = job.to_str().unwrap();
    assert!(run(&["match", job]).status.success());
    ldap.modify(&format!(
        "dn: uid=amy,{people}\nchangetype: modify\nreplace: mail\nmail: amy@corp.example\n"
    ));
    let v: Value =
        serde_json::from_slice(&run(&["refresh-addresses", job, "--all", "--json"]).stdout)
            .unwrap();
    assert_eq!(counts(&v, "target"), expect(&[("refreshed", 1)]), "{v:#}");
    let line = v["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["side"] == "target")
        .unwrap();
    assert_eq!(
        line["id"],
        ldap.entry_uuid(&format!("uid=amy,{people}")).as_str()
    );
    assert_eq!(line["after"], serde_json::json!(["amy@corp.example"]));
}

/// Runs mailferry with the directory's password in `MF_LDAP_PW`.
fn with_ldap_password(ldap: &Slapd, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_mailferry"))
        .args(args)
        .env("MF_LDAP_PW", ldap.admin_password())
        .output()
        .expect("run mailferry")
}

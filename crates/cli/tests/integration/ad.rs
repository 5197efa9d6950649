//! The domain-switch workflow end to end on Active Directory (issue 10's test of record): two
//! real Samba AD domain controllers (source `old.test`, target `new.test`, each on its own
//! loopback address; root only), a target Dovecot that authenticates the AD users over LDAPS,
//! discovery, automatic, manual and created matches (created in AD), a migration, the domain
//! switch as Exchange does it (`proxyAddresses` rewritten: the new domain `SMTP:`, the old
//! addresses kept as `smtp:` aliases), deleted accounts, Refresh email addresses twice, and the
//! delta pass. The source directory is configured with `schema = "active-directory"`, the
//! target with every attribute key written out. The same story as `directories.rs` tells with
//! OpenLDAP, with its helpers.

use std::collections::BTreeMap;

use mailferry_testkit::{AdUser, Dovecot, DovecotConfig, LdapUsers, SambaConfig, SambaDc};
use serde_json::Value;

use crate::directories::{counts, expect, results};
use crate::lab::*;

const SOURCE_USERS: [&str; 8] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "gus", "hank",
];
/// Enabled user accounts only: no disabled accounts, contacts or groups.
const AD_FILTER: &str = "(&(objectCategory=person)(objectClass=user)\
                         (!(userAccountControl:1.2.840.113556.1.4.803:=2)))";
const INITIAL_PW: &str = "Initial-Pw-2026!";

struct World {
    lab_dir: tempfile::TempDir,
    old_dc: SambaDc,
    old_ou: String,
    new_dc: SambaDc,
    new_ou: String,
    source: Dovecot,
    target: Dovecot,
}

impl World {
    fn job(&self) -> String {
        self.path("job.toml")
    }

    fn path(&self, name: &str) -> String {
        self.lab_dir.path().join(name).display().to_string()
    }

    fn source_dn(&self, user: &str) -> String {
        format!("CN={user},{}", self.old_ou)
    }
}

impl Runs for World {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        run_in(
            self.lab_dir.path(),
            &[
                ("MF_TEST_ADMIN_PW", ADMIN_PW),
                ("MF_OLD_AD_PW", self.old_dc.admin_password()),
                ("MF_NEW_AD_PW", self.new_dc.admin_password()),
                ("MF_INITIAL_PW", INITIAL_PW),
            ],
            args,
        )
    }
}

fn ad_user(name: &str, proxies: &[String]) -> AdUser {
    AdUser {
        name: name.into(),
        display_name: format!("{} Person", capitalise(name)),
        mail: proxies
            .iter()
            .find_map(|p| p.strip_prefix("SMTP:"))
            .map(str::to_string),
        proxy_addresses: proxies.to_vec(),
        password: Some(format!("Pw-{name}-2026!")),
        ..AdUser::default()
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// The `[side.directory]` section for a DC, over LDAPS verified through its CA: with
/// `schema = "active-directory"` (its defaults), or with every attribute key written out.
fn directory(side: &str, dc: &SambaDc, base: &str, var: &str, preset: bool) -> String {
    let keys = if preset {
        "schema = \"active-directory\"\n".to_string()
    } else {
        format!(
            "filter = \"{AD_FILTER}\"\nid_attribute = \"objectGUID\"\n\
             login_attribute = \"sAMAccountName\"\nprimary_address_attribute = \"mail\"\n\
             alias_attribute = \"proxyAddresses\"\ndisplay_name_attribute = \"displayName\"\n"
        )
    };
    format!(
        "[{side}.directory]\nkind = \"ldap\"\nurl = \"{}\"\ntls_ca = \"{}\"\n\
         bind_dn = \"{}\"\nbind_password = {{ env = \"{var}\" }}\nbase = \"{base}\"\n{keys}\n",
        dc.ldaps_url(),
        dc.ca_pem().display(),
        dc.admin_upn(),
    )
}

fn world() -> World {
    let old_dc = SambaDc::start(SambaConfig::new("old.test", "OLD"));
    let new_dc = SambaDc::start(SambaConfig::new("new.test", "NEW"));
    eprintln!(
        "two Samba DCs: {} (provisioned in {:.1} s) and {} ({:.1} s)",
        old_dc.host(),
        old_dc.provision_time.as_secs_f64(),
        new_dc.host(),
        new_dc.provision_time.as_secs_f64()
    );
    let old_ou = old_dc.add_ou("Staff");
    for u in SOURCE_USERS {
        old_dc.add_user(
            &old_ou,
            &ad_user(
                u,
                &[
                    format!("SMTP:{u}@old.test"),
                    format!("smtp:{u}.alias@old.test"),
                    format!("X500:/o=Old/ou=Exchange/cn=Recipients/cn={u}"),
                ],
            ),
        );
    }
    // Not mailboxes: the filter leaves them out of discovery.
    old_dc.add_contact(&old_ou, "partner", "partner@elsewhere.test");
    old_dc.add_group(&old_ou, "everyone", "everyone@old.test");
    old_dc.add_user(
        &old_ou,
        &AdUser {
            disabled: true,
            ..ad_user("ivan", &["SMTP:ivan@old.test".to_string()])
        },
    );

    let new_ou = new_dc.add_ou("Mail");
    // alice: same local part; bob: robert has his old address as an alias; esmith: erin's
    // (manual); frank: same local part. carol and dave are created; gus waits; hank has none.
    for (name, proxies) in [
        ("alice", vec!["SMTP:alice@new.test".to_string()]),
        (
            "robert",
            vec![
                "SMTP:robert@new.test".to_string(),
                "smtp:bob@old.test".to_string(),
            ],
        ),
        ("esmith", vec!["SMTP:e.smith@new.test".to_string()]),
        ("frank", vec!["SMTP:frank@new.test".to_string()]),
    ] {
        new_dc.add_user(&new_ou, &ad_user(name, &proxies));
    }

    let source = Dovecot::start(DovecotConfig::new(&SOURCE_USERS));
    let mut tcfg = DovecotConfig::new(&[]);
    tcfg.ldap_users = Some(LdapUsers::from_samba(&new_dc, &new_ou));
    let target = Dovecot::start(tcfg);
    let lab_dir = tempfile::tempdir().unwrap();
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
        "name = \"ad-domain-switch\"\nmode = \"cutover\"\n\n{}{}{}{}\
         [target.create]\nbase = \"{new_ou}\"\ndomain = \"new.test\"\n\
         object_classes = [\"top\", \"person\", \"organizationalPerson\", \"user\"]\n\
         initial_password = {{ env = \"MF_INITIAL_PW\" }}\n",
        imap("source", &source),
        directory("source", &old_dc, &old_ou, "MF_OLD_AD_PW", true),
        imap("target", &target),
        directory("target", &new_dc, &new_ou, "MF_NEW_AD_PW", false),
    );
    std::fs::write(lab_dir.path().join("job.toml"), job).unwrap();
    World {
        lab_dir,
        old_dc,
        old_ou,
        new_dc,
        new_ou,
        source,
        target,
    }
}

/// Bad directory settings give clear errors and change nothing: each variant of the job is
/// its own file (and state), checked and discovered.
fn bad_configurations_change_nothing(w: &World) {
    let good = std::fs::read_to_string(w.job()).unwrap();
    let old_section = directory("source", &w.old_dc, &w.old_ou, "MF_OLD_AD_PW", true);
    let before = w
        .old_dc
        .ldbsearch(&w.old_ou, "(objectClass=*)", &["dn", "proxyAddresses"]);
    for (name, section, expected) in [
        (
            "wrong-base",
            old_section.replace(
                &format!("base = \"{}\"", w.old_ou),
                &format!("base = \"OU=Nowhere,{}\"", w.old_dc.base_dn()),
            ),
            "noSuchObject (32)",
        ),
        (
            "wrong-attribute",
            old_section.replace(
                "schema = \"active-directory\"\n",
                "schema = \"active-directory\"\nid_attribute = \"objectGUIDs\"\n",
            ),
            "skipped: no objectGUIDs",
        ),
        (
            "unreachable",
            old_section.replace(&w.old_dc.ldaps_url(), "ldaps://127.0.0.1:1"),
            "Cannot connect to directory ldaps://127.0.0.1:1",
        ),
    ] {
        let job = w.path(&format!("{name}.toml"));
        std::fs::write(&job, good.replace(&old_section, &section)).unwrap();
        let (code, out, err) = w.run(&["check", &job]);
        assert_eq!(code, 1, "{name}: check:\n{out}\n{err}");
        let fail = out
            .lines()
            .find(|l| l.contains("directory") && l.contains("FAIL"))
            .unwrap_or_else(|| panic!("{name}: no failing directory line:\n{out}"));
        assert!(fail.contains(expected), "{name}: {fail}");
        let (code, out, err) = w.run(&["discover", &job, "--json"]);
        let added = serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v["added"].as_array().map(Vec::len))
            .unwrap_or(0);
        assert!(
            code != 0 || added == 0,
            "{name}: discover added {added}:\n{out}\n{err}"
        );
        assert_eq!(
            w.json(&["status", &job])["entries"],
            serde_json::json!([]),
            "{name}"
        );
    }
    let after = w
        .old_dc
        .ldbsearch(&w.old_ou, "(objectClass=*)", &["dn", "proxyAddresses"]);
    assert_eq!(before, after, "the directory is unchanged");
}

#[test]
fn ad_domain_switch_refresh_of_record() {
    let w = world();
    let job = w.job();
    let job = job.as_str();
    bad_configurations_change_nothing(&w);

    // Discover: the 8 enabled users, not the disabled one, the contact or the group.
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
    assert_eq!(id_of.len(), 8, "{status:#}");
    // The mailbox ID is the objectGUID as AD's tools print it.
    assert_eq!(id_of["alice"], w.old_dc.object_guid(&w.source_dn("alice")));

    // Match: manual first, then automatic, then create carol and dave in AD, gus later.
    w.ok(&["match", job, "--set", "erin@old.test=e.smith@new.test"]);
    let out = w.ok(&["match", job, "--auto"]);
    assert!(out.contains("Automatic matching: 3 matched"), "{out}");
    w.ok(&["match", job, "--create", "carol", "--create", "dave"]);
    w.ok(&["create", job]);
    w.ok(&["match", job, "--create", "gus"]);
    for u in ["carol", "dave"] {
        let text = w.new_dc.ldbsearch(
            &w.new_ou,
            &format!("(sAMAccountName={u})"),
            &["userAccountControl", "userPrincipalName", "proxyAddresses"],
        );
        for expected in [
            "userAccountControl: 512".to_string(),
            format!("userPrincipalName: {u}@new.test"),
            format!("proxyAddresses: SMTP:{u}@new.test"),
        ] {
            assert!(text.contains(&expected), "{expected} not in {text}");
        }
    }
    // check logs in on both servers (as a matched mailbox), binds to both DCs over LDAPS
    // and reads their mailboxes: 8 in the source, the 4 seeded and 2 created in the target.
    let out = w.ok(&["check", job]);
    for expected in [
        format!("OK   directory {}", w.old_dc.ldaps_url()),
        format!(
            "bound as Administrator@old.test; 8 entries under {}",
            w.old_ou
        ),
        format!("OK   directory {}", w.new_dc.ldaps_url()),
        format!(
            "bound as Administrator@new.test; 6 entries under {}",
            w.new_ou
        ),
    ] {
        assert!(out.contains(&expected), "{expected:?} not in:\n{out}");
    }
    // The created accounts log in to the target Dovecot with their AD password.
    let auth = w.target.doveadm(&["auth", "test", "carol", INITIAL_PW]);
    assert!(auth.status.success(), "{}", w.target.log_tail(20));

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

    // One source and one target account deleted; then the domain switch as Exchange's email
    // address policy does it, in both domains.
    w.old_dc.delete(&w.source_dn("frank"));
    w.new_dc.delete(&format!("CN=robert,{}", w.new_ou));
    // the 7 remaining users and the disabled ivan
    assert_eq!(
        w.old_dc.switch_domain(&w.old_ou, "old.test", "legacy.test"),
        8
    );
    // alice, esmith, frank, carol, dave (the created ones are named by display name)
    assert_eq!(
        w.new_dc.switch_domain(&w.new_ou, "new.test", "corp.test"),
        5
    );

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
    let expected_source: BTreeMap<String, String> = SOURCE_USERS
        .iter()
        .map(|u| {
            let r = if *u == "frank" {
                "missing"
            } else {
                "refreshed"
            };
            (u.to_string(), r.to_string())
        })
        .collect();
    assert_eq!(src, expected_source);
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
    let line = |side: &str, login: &str| {
        v["mailboxes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["side"] == side && m["entry"] == id_of[login].as_str())
            .unwrap()
            .clone()
    };
    let alice = line("source", "alice");
    assert_eq!(
        alice["before"],
        serde_json::json!(["alice@old.test", "alice.alias@old.test"])
    );
    // The new primary first, the old addresses kept as aliases; X500: is not an address.
    assert_eq!(
        alice["after"],
        serde_json::json!([
            "alice@legacy.test",
            "alice@old.test",
            "alice.alias@old.test"
        ])
    );
    let alice_target = line("target", "alice");
    assert_eq!(
        alice_target["after"],
        serde_json::json!(["alice@corp.test", "alice@new.test"])
    );
    assert_eq!(v["removed_next"], serde_json::json!([id_of["frank"]]));

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

    // bob's target account is gone: skipped for now. The delta pass: frank's entry goes
    // first, and the new mail arrives exactly once.
    w.ok(&["match", job, "--skip", "bob@legacy.test"]);
    let (code, out, err) = w.run(&["migrate", job, "--all", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("removed 1 entry whose source mailbox is missing")
            && err.contains(&id_of["frank"]),
        "{err}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["copied"], 6, "{v:#}");
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

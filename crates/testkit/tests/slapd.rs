//! Starts real OpenLDAP servers, alone and as the user directory of a real Dovecot.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mailferry_testkit::{Dovecot, DovecotConfig, LdapUsers, Slapd, SlapdConfig, person_ldif};

const PEOPLE: &str = "ou=people,dc=old,dc=example";

fn alice_and_bob() -> SlapdConfig {
    let mut cfg = SlapdConfig::new("dc=old,dc=example");
    cfg.seed = person_ldif(
        PEOPLE,
        "alice",
        "Alice Liddell",
        "alice@old.example",
        &["a.liddell@old.example", "wonderland@old.example"],
        "pw-alice",
    ) + &person_ldif(PEOPLE, "bob", "Bob", "bob@old.example", &[], "pw-bob");
    cfg
}

/// The values of `attr` in `ldapsearch -LLL` output.
fn values<'a>(ldif: &'a str, attr: &str) -> Vec<&'a str> {
    let prefix = format!("{attr}: ");
    ldif.lines()
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .collect()
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Runs an OpenLDAP client tool the way a developer would, with the given environment
/// (`LDAPTLS_CACERT` ...), ignoring `~/.ldaprc` and the like only where the test says so.
fn ldap_tool(tool: &str, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(tool);
    cmd.args(args).stdin(Stdio::null());
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn seeded_people_can_be_searched_with_their_entry_uuid() {
    let ldap = Slapd::start(alice_and_bob());
    assert!(
        ldap.url().starts_with("ldap://127.0.0.1:"),
        "{}",
        ldap.url()
    );
    assert_eq!(ldap.ldaps_url(), None);
    assert_eq!(ldap.ca_pem(), None);
    assert_eq!(ldap.suffix(), "dc=old,dc=example");
    assert_eq!(ldap.people(), PEOPLE);
    assert_eq!(ldap.admin_dn(), "cn=admin,dc=old,dc=example");
    assert_eq!(ldap.admin_password(), "ldappass");

    let out = ldap.search("(uid=alice)", &["mail", "mailLocalAddress", "cn", "sn"]);
    assert_eq!(values(&out, "dn"), [format!("uid=alice,{PEOPLE}")], "{out}");
    assert_eq!(values(&out, "mail"), ["alice@old.example"], "{out}");
    assert_eq!(
        values(&out, "mailLocalAddress"),
        ["a.liddell@old.example", "wonderland@old.example"],
        "{out}"
    );
    assert_eq!(values(&out, "cn"), ["Alice Liddell"], "{out}");
    assert_eq!(values(&out, "sn"), ["Alice Liddell"], "{out}");
    // Operational attributes only when asked for.
    assert!(values(&out, "entryUUID").is_empty(), "{out}");

    let people = ldap.search("(objectClass=inetOrgPerson)", &["uid"]);
    assert_eq!(values(&people, "uid"), ["alice", "bob"], "{people}");

    let alice = ldap.entry_uuid(&format!("uid=alice,{PEOPLE}"));
    let bob = ldap.entry_uuid(&format!("uid=bob,{PEOPLE}"));
    assert!(is_uuid(&alice), "{alice}");
    assert_ne!(alice, bob);
    let with_uuid = ldap.search("(uid=alice)", &["entryUUID"]);
    assert_eq!(
        values(&with_uuid, "entryUUID"),
        [alice.as_str()],
        "{with_uuid}"
    );
    let all_operational = ldap.search("(uid=alice)", &["+"]);
    assert_eq!(
        values(&all_operational, "entryUUID"),
        [alice.as_str()],
        "{all_operational}"
    );
    // The id can be searched for (it is indexed).
    let by_id = ldap.search(&format!("(entryUUID={alice})"), &["uid"]);
    assert_eq!(values(&by_id, "uid"), ["alice"], "{by_id}");
}

#[test]
fn entry_uuid_survives_modify_and_rename() {
    let ldap = Slapd::start(alice_and_bob());
    let dn = format!("uid=alice,{PEOPLE}");
    let id = ldap.entry_uuid(&dn);

    ldap.modify(&format!(
        "dn: {dn}\nchangetype: modify\nreplace: mail\nmail: alice@new.example\n-\n\
         add: mailLocalAddress\nmailLocalAddress: alice@old.example\n"
    ));
    let out = ldap.search("(uid=alice)", &["mail", "mailLocalAddress"]);
    assert_eq!(values(&out, "mail"), ["alice@new.example"], "{out}");
    assert!(
        values(&out, "mailLocalAddress").contains(&"alice@old.example"),
        "{out}"
    );
    assert_eq!(ldap.entry_uuid(&dn), id);

    ldap.modify(&format!(
        "dn: {dn}\nchangetype: modrdn\nnewrdn: uid=alice.l\ndeleteoldrdn: 1\n"
    ));
    assert_eq!(ldap.entry_uuid(&format!("uid=alice.l,{PEOPLE}")), id);
    let out = ldap.search("(uid=alice)", &["uid"]);
    assert!(values(&out, "dn").is_empty(), "{out}");

    ldap.modify(&format!("dn: uid=bob,{PEOPLE}\nchangetype: delete\n"));
    let out = ldap.search("(objectClass=inetOrgPerson)", &["uid"]);
    assert_eq!(values(&out, "uid"), ["alice.l"], "{out}");
}

#[test]
fn added_people_get_a_new_entry_uuid() {
    let ldap = Slapd::start(SlapdConfig::new("dc=new,dc=example"));
    let people = ldap.people();
    assert_eq!(
        values(&ldap.search("(objectClass=inetOrgPerson)", &["uid"]), "uid"),
        Vec::<&str>::new()
    );
    // Non-ASCII values travel base64-encoded in the LDIF.
    ldap.add(
        &(person_ldif(&people, "zoe", "Zoë Ünal", "zoe@new.example", &[], "pw-zoe")
            + &person_ldif(
                &people,
                "carol",
                "Carol",
                "carol@new.example",
                &["c@new.example"],
                "pw",
            )),
    );
    let zoe = ldap.entry_uuid(&format!("uid=zoe,{people}"));
    let carol = ldap.entry_uuid(&format!("uid=carol,{people}"));
    assert!(is_uuid(&zoe) && is_uuid(&carol) && zoe != carol);
    let out = ldap.search("(uid=zoe)", &["cn"]);
    // ldapsearch prints non-ASCII values base64-encoded as well.
    assert_eq!(out.lines().nth(1), Some("cn:: Wm/DqyDDnG5hbA=="), "{out}");
    let out = ldap.search("(mailLocalAddress=c@new.example)", &["uid"]);
    assert_eq!(values(&out, "uid"), ["carol"], "{out}");
}

#[test]
fn failed_changes_panic_with_the_tools_words() {
    let ldap = Slapd::start(alice_and_bob());
    let duplicate = person_ldif(PEOPLE, "alice", "Alice", "alice@old.example", &[], "x");
    let err = catch_unwind(AssertUnwindSafe(|| ldap.add(&duplicate))).expect_err("must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("Already exists"), "{msg}");

    let bad = format!(
        "dn: uid=alice,{PEOPLE}\nchangetype: modify\nreplace: noSuchAttribute\nnoSuchAttribute: x\n"
    );
    let err = catch_unwind(AssertUnwindSafe(|| ldap.modify(&bad))).expect_err("must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("ldapmodify failed"), "{msg}");
    assert!(msg.contains("noSuchAttribute"), "{msg}");
}

#[test]
fn tls_offers_ldaps_and_starttls_with_the_private_ca() {
    let mut cfg = alice_and_bob();
    cfg.tls = true;
    let ldap = Slapd::start(cfg);
    let ca = ldap.ca_pem().expect("ca_pem with tls");
    assert!(ca.is_file(), "{}", ca.display());
    let ldaps = ldap.ldaps_url().expect("ldaps_url with tls");
    assert!(ldaps.starts_with("ldaps://127.0.0.1:"), "{ldaps}");
    assert_ne!(ldaps.replace("ldaps", "ldap"), ldap.url());

    let search = ["-x", "-LLL", "-b", PEOPLE, "(uid=alice)", "uid"];
    let cacert = [("LDAPTLS_CACERT", ca.as_path())];

    let out = ldap_tool(
        "ldapsearch",
        &cacert,
        &[&["-H", &ldaps][..], &search].concat(),
    );
    assert!(
        out.status.success(),
        "ldaps: {}\n{}",
        text(&out),
        ldap.log_tail(20)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("uid: alice"));

    let url = ldap.url();
    let out = ldap_tool(
        "ldapsearch",
        &cacert,
        &[&["-ZZ", "-H", &url][..], &search].concat(),
    );
    assert!(
        out.status.success(),
        "StartTLS: {}\n{}",
        text(&out),
        ldap.log_tail(20)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("uid: alice"));
    assert!(
        ldap.log_tail(200)
            .contains("EXT oid=1.3.6.1.4.1.1466.20037"),
        "no StartTLS in the log:\n{}",
        ldap.log_tail(40)
    );

    // Plain LDAP still works (StartTLS is offered, not required).
    let out = ldap_tool("ldapsearch", &[], &[&["-H", &url][..], &search].concat());
    assert!(out.status.success(), "plain: {}", text(&out));

    // The certificate is not trusted without the private CA.
    let no_ca = tempfile::NamedTempFile::new().expect("temp file");
    let other_ca = [("LDAPTLS_CACERT", no_ca.path())];
    let out = ldap_tool(
        "ldapsearch",
        &other_ca,
        &[&["-H", &ldaps][..], &search].concat(),
    );
    assert!(
        !out.status.success(),
        "ldaps without the CA: {}",
        text(&out)
    );
}

#[test]
fn without_tls_starttls_is_refused() {
    let ldap = Slapd::start(alice_and_bob());
    let out = ldap_tool(
        "ldapsearch",
        &[],
        &["-x", "-ZZ", "-H", &ldap.url(), "-b", PEOPLE, "(uid=alice)"],
    );
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn suffix_may_be_an_organization() {
    let mut cfg = SlapdConfig::new("o=Example Corp");
    cfg.admin_password = "s3cret with spaces".to_owned();
    let ldap = Slapd::start(cfg);
    assert_eq!(ldap.people(), "ou=people,o=Example Corp");
    let out = ldap.search("(objectClass=organization)", &["o"]);
    assert_eq!(values(&out, "o"), ["Example Corp"], "{out}");
}

#[test]
fn unusable_seed_panics_with_slapadd_output() {
    let mut cfg = SlapdConfig::new("dc=old,dc=example");
    cfg.seed = format!("dn: uid=x,{PEOPLE}\nobjectClass: noSuchClass\nuid: x\n");
    let err = catch_unwind(|| Slapd::start(cfg)).expect_err("must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("slapadd could not load the seed"), "{msg}");
    assert!(msg.contains("noSuchClass"), "{msg}");
}

/// A tiny line-based IMAP client for these tests only.
struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_tag: u32,
}

impl Imap {
    fn connect(server: &Dovecot) -> Imap {
        let stream = TcpStream::connect((server.host(), server.port())).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut imap = Imap {
            reader: BufReader::new(stream),
            writer,
            next_tag: 1,
        };
        let greeting = imap.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        imap
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read line");
        assert!(!line.is_empty(), "server closed the connection");
        line
    }

    /// Sends `command` and returns the tagged completion line.
    fn cmd(&mut self, command: &str) -> String {
        let tag = format!("t{}", self.next_tag);
        self.next_tag += 1;
        self.writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .expect("write");
        loop {
            let line = self.line();
            if line.starts_with(&format!("{tag} ")) {
                return line;
            }
        }
    }

    /// The tagged response to `LOGIN`, on a fresh connection.
    fn login(server: &Dovecot, user: &str, pass: &str) -> String {
        let mut imap = Imap::connect(server);
        let done = imap.cmd(&format!("LOGIN \"{user}\" \"{pass}\""));
        if done.split_whitespace().nth(1) == Some("OK") {
            let selected = imap.cmd("SELECT INBOX");
            assert!(selected.contains("OK"), "SELECT as {user}: {selected}");
        }
        done
    }
}

fn assert_login(server: &Dovecot, ldap: &Slapd, user: &str, pass: &str, ok: bool) {
    let done = Imap::login(server, user, pass);
    let status = done
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        status,
        if ok { "OK" } else { "NO" },
        "LOGIN {user} {pass}: {done}\n{}\n{}",
        server.log_tail(30),
        ldap.log_tail(30)
    );
}

fn ldap_dovecot(ldap: &Slapd) -> Dovecot {
    let mut cfg = DovecotConfig::new(&[]);
    cfg.ldap_users = Some(LdapUsers::from_slapd(ldap));
    Dovecot::start(cfg)
}

#[test]
fn dovecot_users_come_from_ldap() {
    let ldap = Slapd::start(alice_and_bob());
    let server = ldap_dovecot(&ldap);

    assert_login(&server, &ldap, "alice", "pw-alice", true);
    assert_login(&server, &ldap, "alice", "wrong", false);
    assert_login(&server, &ldap, "alice*admin", "adminpass", true);
    assert_login(&server, &ldap, "bob*admin", "adminpass", true);
    assert_login(&server, &ldap, "alice*admin", "wrong", false);
    // Not in the directory: neither a normal nor a master login works.
    assert_login(&server, &ldap, "nobody", "pw-nobody", false);
    assert_login(&server, &ldap, "nobody*admin", "adminpass", false);
    assert!(server.mail_dir("alice").join("Maildir").is_dir());
    assert!(!server.mail_dir("nobody").exists());

    // userdb lookups (doveadm, LMTP) know exactly the directory's users.
    let out = server.doveadm(&["user", "alice"]);
    assert!(out.status.success(), "doveadm user alice: {}", text(&out));
    let home = server.mail_dir("alice");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("home\t{}", home.display())),
        "{}",
        text(&out)
    );
    let out = server.doveadm(&["user", "nobody"]);
    assert!(!out.status.success(), "doveadm user nobody: {}", text(&out));
    let out = server.doveadm(&["user", "*"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        ["alice", "bob"],
        "{}",
        text(&out)
    );
}

#[test]
fn dovecot_sees_ldap_changes_without_restart() {
    let ldap = Slapd::start(alice_and_bob());
    let server = ldap_dovecot(&ldap);
    assert_login(&server, &ldap, "newbie*admin", "adminpass", false);

    // This is how mailbox creation is tested: add the entry, then log in to it.
    ldap.add(&person_ldif(
        &ldap.people(),
        "newbie",
        "New Bie",
        "newbie@old.example",
        &[],
        "pw-newbie",
    ));
    assert_login(&server, &ldap, "newbie*admin", "adminpass", true);
    assert_login(&server, &ldap, "newbie", "pw-newbie", true);

    ldap.modify(&format!(
        "dn: uid=newbie,{}\nchangetype: modify\nreplace: userPassword\nuserPassword: changed\n",
        ldap.people()
    ));
    assert_login(&server, &ldap, "newbie", "pw-newbie", false);
    assert_login(&server, &ldap, "newbie", "changed", true);

    ldap.modify(&format!(
        "dn: uid=bob,{}\nchangetype: delete\n",
        ldap.people()
    ));
    assert_login(&server, &ldap, "bob*admin", "adminpass", false);
}

#[test]
fn ldap_users_and_passwd_file_users_are_exclusive() {
    let ldap = Slapd::start(SlapdConfig::new("dc=old,dc=example"));
    let mut cfg = DovecotConfig::new(&["alice"]);
    cfg.ldap_users = Some(LdapUsers::from_slapd(&ldap));
    let err = catch_unwind(|| Dovecot::start(cfg)).expect_err("must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("exclusive"), "{msg}");
}

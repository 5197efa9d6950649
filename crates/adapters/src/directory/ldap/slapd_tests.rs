//! Against a real OpenLDAP `slapd` from the test kit: the admin (rootdn) has no size limit,
//! everyone else slapd's default of 500 entries; `-d stats` logs every search result.

use std::collections::HashSet;

use super::*;
use mailferry_testkit::{Slapd, SlapdConfig, person_ldif};

const SUFFIX: &str = "dc=old,dc=example";
const PEOPLE: &str = "ou=people,dc=old,dc=example";
const READER_PASSWORD: &str = "reader-pw";

fn start(seed: String) -> Slapd {
    let mut cfg = SlapdConfig::new(SUFFIX);
    cfg.seed = seed;
    Slapd::start(cfg)
}

/// A directory with `user0000` … `user1199`, more than slapd's size limit of 500.
fn start_with_1200_users() -> Slapd {
    let seed = (0..1200)
        .map(|i| {
            let uid = format!("user{i:04}");
            let mail = format!("{uid}@Old.Example");
            person_ldif(PEOPLE, &uid, &format!("User {i}"), &mail, &[], "pw")
        })
        .collect();
    start(seed)
}

/// A bind DN that, unlike the admin, is subject to slapd's size limit.
fn add_reader(slapd: &Slapd) -> String {
    let dn = format!("cn=reader,{PEOPLE}");
    slapd.add(&format!(
        "dn: {dn}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\n\
         cn: reader\nuserPassword: {READER_PASSWORD}\n\n"
    ));
    dn
}

fn settings(slapd: &Slapd, bind_dn: &str, bind_password: &str) -> LdapSettings {
    LdapSettings {
        url: slapd.url(),
        security: DirectorySecurity::Plain,
        tls_ca: None,
        tls_pin_sha256: Vec::new(),
        bind_dn: bind_dn.into(),
        bind_password: bind_password.into(),
        base: slapd.people(),
        filter: "(objectClass=inetOrgPerson)".into(),
        id_attribute: "entryUUID".into(),
        login_attribute: "uid".into(),
        primary_address_attribute: "mail".into(),
        alias_attribute: Some("mailLocalAddress".into()),
        display_name_attribute: Some("cn".into()),
    }
}

fn admin_settings(slapd: &Slapd) -> LdapSettings {
    settings(slapd, &slapd.admin_dn(), slapd.admin_password())
}

fn connect_admin(slapd: &Slapd) -> LdapDirectory {
    LdapDirectory::connect(&admin_settings(slapd)).unwrap()
}

/// `nentries=` of every search result in slapd's log, in order.
fn logged_search_results(slapd: &Slapd) -> Vec<usize> {
    let log = std::fs::read_to_string(slapd.dir().join("slapd.log")).unwrap();
    log.lines()
        .filter(|l| l.contains("SEARCH RESULT"))
        .filter_map(|l| l.split("nentries=").nth(1))
        .map(|n| n.split_whitespace().next().unwrap().parse().unwrap())
        .collect()
}

fn jdoe() -> String {
    person_ldif(
        PEOPLE,
        "jdoe",
        "John Doe",
        "john.doe@old.example",
        &["jd@old.example", "John.Doe@old.example"],
        "pw",
    )
}

fn new_mailbox(login: &str) -> NewMailbox {
    NewMailbox {
        base: PEOPLE.into(),
        login: login.into(),
        address: "New.Person@NEW.example".into(),
        display_name: Some("New Person".into()),
        object_classes: vec!["inetOrgPerson".into()],
        password: Some("initial-pw".into()),
    }
}

#[test]
fn list_reads_all_entries_in_pages_of_500() {
    let slapd = start_with_1200_users();
    let mut dir = connect_admin(&slapd);
    let before = logged_search_results(&slapd).len();

    let entries = dir.list().unwrap();

    assert_eq!(entries.len(), 1200);
    // slapd may log a result just after sending it: give its log a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut results = logged_search_results(&slapd);
    while results.len() < before + 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        results = logged_search_results(&slapd);
    }
    assert_eq!(
        results[before..],
        [500, 500, 200],
        "one search operation per page; {}",
        slapd.log_tail(20)
    );
    let ids: HashSet<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 1200);
    let dn = format!("uid=user0777,{PEOPLE}");
    let e = entries.iter().find(|e| e.login == "user0777").unwrap();
    assert_eq!(
        *e,
        DirectoryMailbox {
            id: slapd.entry_uuid(&dn).into(),
            dn,
            login: "user0777".into(),
            addresses: vec!["user0777@old.example".into()],
            display_name: Some("User 777".into()),
        }
    );
}

#[test]
fn size_limit_on_the_paged_total_names_the_limit_to_raise() {
    let slapd = start_with_1200_users();
    let reader = add_reader(&slapd);
    let mut dir = LdapDirectory::connect(&settings(&slapd, &reader, READER_PASSWORD)).unwrap();

    let err = dir.list().unwrap_err();

    assert_eq!(err.result_code(), Some(4), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "Directory {}: paged search under {PEOPLE} for (objectClass=inetOrgPerson) \
             failed: sizeLimitExceeded (4) (the server limits how many entries {reader} \
             may read, even page by page: raise that limit for it, e.g. OpenLDAP \
             `limits dn.exact=\"{reader}\" size=unlimited`)",
            slapd.url()
        )
    );
}

#[test]
fn list_skips_entries_that_are_not_mailboxes_with_warnings() {
    let mut seed = jdoe();
    seed.push_str(&format!(
        "dn: cn=nomail,{PEOPLE}\nobjectClass: inetOrgPerson\ncn: nomail\nsn: x\nuid: nomail\n\n\
         dn: cn=nouid,{PEOPLE}\nobjectClass: inetOrgPerson\ncn: nouid\nsn: x\n\
         mail: nouid@old.example\n\n"
    ));
    let slapd = start(seed);
    let mut dir = connect_admin(&slapd);

    let (entries, mut warnings) = dir.list_with_warnings().unwrap();

    let logins: Vec<&str> = entries.iter().map(|e| e.login.as_str()).collect();
    assert_eq!(logins, ["jdoe"]);
    warnings.sort();
    assert_eq!(
        warnings,
        [
            format!("cn=nomail,{PEOPLE}: skipped: no mail"),
            format!("cn=nouid,{PEOPLE}: skipped: no uid"),
        ]
    );
}

#[test]
fn lookup_by_entry_uuid() {
    let slapd = start(jdoe());
    let dn = format!("uid=jdoe,{PEOPLE}");
    let uuid = slapd.entry_uuid(&dn);
    let mut dir = connect_admin(&slapd);

    let found = dir.lookup(&uuid).unwrap();

    let expected = DirectoryMailbox {
        id: uuid.into(),
        dn,
        login: "jdoe".into(),
        addresses: vec!["john.doe@old.example".into(), "jd@old.example".into()],
        display_name: Some("John Doe".into()),
    };
    assert_eq!(found, Some(expected));
}

#[test]
fn lookup_of_an_unknown_id_is_none() {
    let slapd = start(jdoe());
    let mut dir = connect_admin(&slapd);
    assert_eq!(
        dir.lookup("00000000-0000-0000-0000-000000000000").unwrap(),
        None
    );
}

#[test]
fn lookup_after_a_domain_switch_has_the_new_addresses() {
    let slapd = start(jdoe());
    let dn = format!("uid=jdoe,{PEOPLE}");
    let uuid = slapd.entry_uuid(&dn);
    slapd.modify(&format!(
        "dn: {dn}\nchangetype: modify\nreplace: mail\nmail: john.doe@new.example\n-\n\
         replace: mailLocalAddress\nmailLocalAddress: jd@new.example\n-\n\n"
    ));
    let mut dir = connect_admin(&slapd);

    let found = dir.lookup(&uuid).unwrap().unwrap();

    assert_eq!(found.addresses, ["john.doe@new.example", "jd@new.example"]);
}

#[test]
fn lookup_of_an_entry_without_address_is_an_error_not_missing() {
    let slapd = start(jdoe());
    let dn = format!("uid=jdoe,{PEOPLE}");
    let uuid = slapd.entry_uuid(&dn);
    slapd.modify(&format!(
        "dn: {dn}\nchangetype: modify\ndelete: mail\n-\n\n"
    ));
    let mut dir = connect_admin(&slapd);

    let err = dir.lookup(&uuid).unwrap_err();

    assert_eq!(
        err.to_string(),
        format!("Directory {}: {dn}: no mail", slapd.url())
    );
}

#[test]
fn find_by_address_matches_primary_or_alias_ignoring_case() {
    let mut seed = jdoe();
    seed.push_str(&person_ldif(
        PEOPLE,
        "mary",
        "Mary",
        "mary@old.example",
        &[],
        "pw",
    ));
    let slapd = start(seed);
    let mut dir = connect_admin(&slapd);

    for (address, login) in [
        ("JD@Old.Example", Some("jdoe")),
        ("john.doe@OLD.example", Some("jdoe")),
        ("mary@old.example", Some("mary")),
        ("nobody@old.example", None),
    ] {
        let found = dir.find_by_address(address).unwrap();
        let logins: Vec<&str> = found.iter().map(|e| e.login.as_str()).collect();
        assert_eq!(logins, Vec::from_iter(login), "{address}");
    }
}

#[test]
fn find_by_address_escapes_filter_metacharacters() {
    let slapd = start(jdoe());
    let mut dir = connect_admin(&slapd);
    assert_eq!(dir.find_by_address("*").unwrap(), []);
    assert_eq!(dir.find_by_address("*)(uid=*").unwrap(), []);
}

#[test]
fn add_mailbox_then_lookup() {
    let slapd = start(String::new());
    let mut dir = connect_admin(&slapd);

    let created = dir.add_mailbox(&new_mailbox("Doe, John+#1")).unwrap();

    // slapd hands the DN back in its own escaping ("uid=Doe\2C John\2B#1,…").
    assert!(
        created.dn.ends_with(&format!(",{PEOPLE}")),
        "{}",
        created.dn
    );
    assert_eq!(created.id, slapd.entry_uuid(&created.dn));
    assert_eq!(created.login, "Doe, John+#1");
    assert_eq!(created.addresses, ["New.Person@new.example"]);
    assert_eq!(created.display_name.as_deref(), Some("New Person"));
    assert_eq!(dir.lookup(&created.id).unwrap(), Some(created));
}

#[test]
fn added_mailbox_can_bind_with_its_initial_password() {
    let slapd = start(String::new());
    let created = connect_admin(&slapd)
        .add_mailbox(&new_mailbox("jdoe"))
        .unwrap();
    LdapDirectory::connect(&settings(&slapd, &created.dn, "initial-pw")).unwrap();
}

#[test]
fn adding_an_existing_mailbox_is_entry_already_exists() {
    let slapd = start(jdoe());
    let err = connect_admin(&slapd)
        .add_mailbox(&new_mailbox("jdoe"))
        .unwrap_err();
    assert_eq!(err.result_code(), Some(68));
    assert_eq!(
        err.to_string(),
        format!(
            "Directory {}: add uid=jdoe,{PEOPLE} failed: entryAlreadyExists (68)",
            slapd.url()
        )
    );
}

#[test]
fn adding_a_mailbox_outside_the_filter_says_it_was_created() {
    let slapd = start(String::new());
    let mut dir = LdapDirectory::connect(&LdapSettings {
        filter: "(objectClass=inetLocalMailRecipient)".into(),
        ..admin_settings(&slapd)
    })
    .unwrap();

    let err = dir.add_mailbox(&new_mailbox("jdoe")).unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "Directory {}: uid=jdoe,{PEOPLE}: was created but does not match the directory \
             filter (objectClass=inetLocalMailRecipient), so it would not be found again: \
             add the missing object classes",
            slapd.url()
        )
    );
}

#[test]
fn adding_without_write_access_gives_the_servers_words() {
    let slapd = start(String::new());
    let reader = add_reader(&slapd);
    let mut dir = LdapDirectory::connect(&settings(&slapd, &reader, READER_PASSWORD)).unwrap();

    let err = dir.add_mailbox(&new_mailbox("jdoe")).unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "Directory {}: add uid=jdoe,{PEOPLE} failed: insufficientAccessRights (50): no \
             write access to parent",
            slapd.url()
        )
    );
}

#[test]
fn adding_a_mailbox_with_a_malformed_address_adds_nothing() {
    let slapd = start(String::new());
    let mut dir = connect_admin(&slapd);

    let err = dir
        .add_mailbox(&NewMailbox {
            address: "New Person".into(),
            ..new_mailbox("jdoe")
        })
        .unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "Directory {}: cannot create jdoe: \"New Person\" is not an email address",
            slapd.url()
        )
    );
    assert_eq!(dir.list().unwrap(), []);
}

#[test]
fn wrong_bind_password_is_invalid_credentials() {
    let slapd = start(String::new());

    let err = LdapDirectory::connect(&settings(&slapd, &slapd.admin_dn(), "wrong")).unwrap_err();

    assert!(!err.is_unreachable());
    assert_eq!(err.result_code(), Some(49));
    assert_eq!(
        err.to_string(),
        format!(
            "Directory {}: bind as {} failed: invalidCredentials (49)",
            slapd.url(),
            slapd.admin_dn()
        )
    );
}

#[test]
fn nothing_listening_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ldap://127.0.0.1:{port}");
    let s = LdapSettings {
        url: url.clone(),
        security: DirectorySecurity::Plain,
        tls_ca: None,
        tls_pin_sha256: Vec::new(),
        bind_dn: String::new(),
        bind_password: String::new(),
        base: "dc=x".into(),
        filter: String::new(),
        id_attribute: "entryUUID".into(),
        login_attribute: "uid".into(),
        primary_address_attribute: "mail".into(),
        alias_attribute: None,
        display_name_attribute: None,
    };

    let err = LdapDirectory::connect(&s).unwrap_err();

    assert!(err.is_unreachable(), "{err}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("Cannot connect to directory {url}: ")),
        "{shown}"
    );
}

/// Against a slapd with TLS: connecting with its CA as `tls_ca` works, without it the
/// certificate is refused.
fn assert_verified(security: DirectorySecurity) {
    let mut cfg = SlapdConfig::new(SUFFIX);
    cfg.tls = true;
    cfg.seed = jdoe();
    let slapd = Slapd::start(cfg);
    let url = match security {
        DirectorySecurity::Tls => slapd.ldaps_url().unwrap(),
        _ => slapd.url(),
    };
    let s = LdapSettings {
        url: url.clone(),
        security,
        tls_ca: slapd.ca_pem(),
        ..admin_settings(&slapd)
    };

    let logins: Vec<String> = LdapDirectory::connect(&s)
        .unwrap()
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.login)
        .collect();
    assert_eq!(logins, ["jdoe"]);

    let err = LdapDirectory::connect(&LdapSettings { tls_ca: None, ..s }).unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    let fp = mailferry_testkit::openssl_fingerprint(&slapd.cert_pem().unwrap());
    assert_eq!(
        err.to_string(),
        format!(
            "Cannot connect to directory {url}: invalid peer certificate: UnknownIssuer (no \
             trusted CA signed the server's certificate: if it comes from a private CA, set \
             tls_ca to that CA's certificate); the certificate's SHA-256 fingerprint is {fp}; \
             if that is the server's certificate (compare with `openssl x509 -noout \
             -fingerprint -sha256 -in CERT` on the server), tls_pin_sha256 = \"{fp}\" accepts \
             exactly that certificate for this connection"
        )
    );
}

#[test]
fn ldaps_is_verified_against_tls_ca() {
    assert_verified(DirectorySecurity::Tls);
}

#[test]
fn starttls_is_verified_against_tls_ca() {
    assert_verified(DirectorySecurity::StartTls);
}

/// A slapd whose certificate names `localhost` only in its CN (no subjectAltName), as Samba's
/// does: refused with the reason, the fingerprint and the option, even with its CA as
/// `tls_ca`; accepted with the right pin; refused with a wrong one.
fn assert_common_name_only(security: DirectorySecurity) {
    let mut cfg = SlapdConfig::new(SUFFIX);
    cfg.tls = true;
    cfg.tls_cn_only = true;
    cfg.seed = jdoe();
    let slapd = Slapd::start(cfg);
    let url = match security {
        DirectorySecurity::Tls => slapd.ldaps_url().unwrap(),
        _ => slapd.url(),
    };
    let fp = mailferry_testkit::openssl_fingerprint(&slapd.cert_pem().unwrap());
    let s = LdapSettings {
        url: url.clone(),
        security,
        tls_ca: slapd.ca_pem(),
        ..admin_settings(&slapd)
    };
    let err = LdapDirectory::connect(&s).unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "Cannot connect to directory {url}: the certificate of 127.0.0.1 names the host only \
             in its CN (CN=localhost), with no subjectAltName: name verification reads only the \
             subjectAltName (RFC 6125), so the certificate is refused. Its SHA-256 fingerprint \
             is {fp}; if that is the server's certificate (compare with `openssl x509 -noout \
             -fingerprint -sha256 -in CERT` on the server), tls_pin_sha256 = \"{fp}\" accepts \
             exactly that certificate for this connection"
        )
    );

    let pin = mailferry_core::job::CertificatePin::parse(&fp.to_lowercase()).unwrap();
    let pinned = LdapSettings {
        tls_ca: None,
        tls_pin_sha256: vec![pin],
        ..s.clone()
    };
    let logins: Vec<String> = LdapDirectory::connect(&pinned)
        .unwrap()
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.login)
        .collect();
    assert_eq!(logins, ["jdoe"]);

    let mut wrong = pin;
    wrong.0[31] ^= 0xff;
    let err = LdapDirectory::connect(&LdapSettings {
        tls_pin_sha256: vec![wrong],
        ..pinned
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "Cannot connect to directory {url}: the certificate of 127.0.0.1 has the SHA-256 \
             fingerprint {fp}, not the one tls_pin_sha256 names"
        )
    );
}

#[test]
fn ldaps_refuses_a_common_name_only_certificate_helpfully_and_takes_a_pin() {
    assert_common_name_only(DirectorySecurity::Tls);
}

#[test]
fn starttls_refuses_a_common_name_only_certificate_helpfully_and_takes_a_pin() {
    assert_common_name_only(DirectorySecurity::StartTls);
}
